/* kernels.c: run-time choice of the kernel table. Compiled without SIMD
 * flags; the AVX2 and AVX-512 files are only entered after cpuid (through
 * __builtin_cpu_supports, which also checks that the OS saves the wide
 * registers) confirms every extension they were compiled for. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "kernels.h"
#include "matmul.h"

#if defined(__x86_64__) || defined(__i386__)
#define CS_HAVE_X86 1
#else
#define CS_HAVE_X86 0
#endif

#if CS_HAVE_X86
#include <cpuid.h>

/* F16C: CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports does
 * not know the name; AVX2 implies the OS saves YMM state, checked below). */
static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    return (c >> 29) & 1u;
}

static bool cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}

/* x86_avx512.c is compiled with -mavx512f/bw/vl/dq plus the AVX2 set. */
static bool cpu_has_avx512(void) {
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
}

/* AVX512_VNNI: CPUID leaf 7 subleaf 0, ECX bit 11 (read directly: older
 * compilers' __builtin_cpu_supports lacks the name). */
static bool g_vnni;
static pthread_once_t g_vnni_once = PTHREAD_ONCE_INIT;

static void detect_avx512vnni(void) {
    unsigned a, b, c, d;
    g_vnni = cpu_has_avx512() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((c >> 11) & 1u);
}

/* Cached: cpuid traps in a VM. */
bool kernels_cpu_has_avx512vnni(void) {
    pthread_once(&g_vnni_once, detect_avx512vnni);
    return g_vnni;
}

/* AVX512_BF16: CPUID leaf 7 subleaf 1, EAX bit 5 (leaf 7's subleaf count
 * is EAX of subleaf 0; zmm state is covered by cpu_has_avx512). */
static bool g_bf16;
static pthread_once_t g_bf16_once = PTHREAD_ONCE_INIT;

static void detect_avx512bf16(void) {
    unsigned a, b, c, d;
    g_bf16 = cpu_has_avx512() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && a >= 1 &&
             __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1u);
}

bool kernels_cpu_has_avx512bf16(void) {
    pthread_once(&g_bf16_once, detect_avx512bf16);
    return g_bf16;
}

/* GFNI: CPUID leaf 7 subleaf 0, ECX bit 8; with the AVX-512 set, as its
 * only user is the zmm form. Ice Lake and later, Zen 4; not Skylake-X or
 * Cascade Lake. */
static bool g_gfni;
static pthread_once_t g_gfni_once = PTHREAD_ONCE_INIT;

static void detect_gfni(void) {
    unsigned a, b, c, d;
    g_gfni = cpu_has_avx512() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((c >> 8) & 1u);
}

bool kernels_cpu_has_gfni(void) {
    pthread_once(&g_gfni_once, detect_gfni);
    return g_gfni;
}
#endif

const kernels_table *kernels_by_name(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "ref") == 0) return kernels_ref();
#if CS_HAVE_X86
    if (strcmp(name, "avx2") == 0) return cpu_has_avx2() ? kernels_avx2_table() : NULL;
    if (strcmp(name, "avx512") == 0) return cpu_has_avx512() ? kernels_avx512_table() : NULL;
    if (strcmp(name, "avx512novnni") == 0)
        return cpu_has_avx512() ? kernels_avx512_novnni_table() : NULL;
#endif
    return NULL;
}

static const kernels_table *g_best;
static pthread_once_t g_best_once = PTHREAD_ONCE_INIT;

static void choose_best(void) {
    const char *env = getenv("CS_KERNELS");
    if (env && *env) {
        g_best = kernels_by_name(env);
        if (g_best) return;
        CS_LOG_WRN("kernels: CS_KERNELS=%s is unknown or unsupported by this CPU; "
                   "choosing automatically",
                   env);
    }
    static const char *const order[] = {"avx512", "avx2", "ref"};
    for (size_t i = 0; i < sizeof order / sizeof order[0] && !g_best; i++)
        g_best = kernels_by_name(order[i]);
}

const kernels_table *kernels_best(void) {
    pthread_once(&g_best_once, choose_best);
    return g_best;
}
