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

/* The extensions the SIMD tables use beyond their base set, read once
 * from cpuid (cached: cpuid traps in a VM), each only with its base set:
 * - AVX-VNNI (with AVX2): leaf 7 subleaf 1, EAX bit 4 (VEX-encoded
 *   vpdpbusd on ymm; Alder Lake and later Intel cores, Zen 5);
 * - with AVX-512: AVX512_VNNI, leaf 7 subleaf 0, ECX bit 11 (read
 *   directly: older compilers' __builtin_cpu_supports lacks the name);
 *   AVX512_BF16, leaf 7 subleaf 1, EAX bit 5; GFNI, leaf 7 subleaf 0, ECX
 *   bit 8 (its only user is the zmm form); AVX512_VBMI, leaf 7 subleaf 0,
 *   ECX bit 1 (vpermb): GFNI and VBMI on Ice Lake and later, Zen 4; not
 *   Skylake-X or Cascade Lake.
 * Leaf 7's subleaf count is EAX of subleaf 0. */
static struct { bool avxvnni, vnni, bf16, gfni, vbmi; } g_ext;
static pthread_once_t g_ext_once = PTHREAD_ONCE_INIT;

static void detect_extensions(void) {
    unsigned a, b, c, d, a1 = 0, b1, c1, d1;
    if (!cpu_has_avx2() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    if (a >= 1 && !__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) a1 = 0;
    g_ext.avxvnni = (a1 >> 4) & 1u;
    if (!cpu_has_avx512()) return;
    g_ext.vnni = (c >> 11) & 1u;
    g_ext.gfni = (c >> 8) & 1u;
    g_ext.vbmi = (c >> 1) & 1u;
    g_ext.bf16 = (a1 >> 5) & 1u;
}

bool kernels_cpu_has_avxvnni(void) {
    pthread_once(&g_ext_once, detect_extensions);
    return g_ext.avxvnni;
}

bool kernels_cpu_has_avx512vnni(void) {
    pthread_once(&g_ext_once, detect_extensions);
    return g_ext.vnni;
}

bool kernels_cpu_has_avx512bf16(void) {
    pthread_once(&g_ext_once, detect_extensions);
    return g_ext.bf16;
}

bool kernels_cpu_has_gfni(void) {
    pthread_once(&g_ext_once, detect_extensions);
    return g_ext.gfni;
}

bool kernels_cpu_has_avx512vbmi(void) {
    pthread_once(&g_ext_once, detect_extensions);
    return g_ext.vbmi;
}
#endif

bool kernels_col_prefetch;
static pthread_once_t g_colpf_once = PTHREAD_ONCE_INIT;

/* AMD family 1Ah (Zen 5): base family 0Fh plus extended family 0Bh in
 * cpuid leaf 1 EAX. */
static bool cpu_is_zen5(void) {
#if CS_HAVE_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    const bool amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; /* AuthenticAMD */
    if (!amd || !__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned fam = (a >> 8) & 0xfu, ext = (a >> 20) & 0xffu;
    return fam == 0xfu && fam + ext == 0x1au;
#else
    return false;
#endif
}

static void choose_col_prefetch(void) {
    const char *env = getenv("CS_COLUMN_PREFETCH");
    if (env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)) {
        kernels_col_prefetch = env[0] == '1';
        return;
    }
    if (env && *env)
        CS_LOG_WRN("kernels: CS_COLUMN_PREFETCH=%s is neither 0 nor 1; choosing by CPU", env);
    kernels_col_prefetch = cpu_is_zen5();
}

bool kernels_column_prefetch(void) {
    pthread_once(&g_colpf_once, choose_col_prefetch);
    return kernels_col_prefetch;
}

const kernels_table *kernels_by_name(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "ref") == 0) return kernels_ref();
    (void)kernels_column_prefetch(); /* before any SIMD column can run */
#if CS_HAVE_X86
    if (strcmp(name, "avx2") == 0) return cpu_has_avx2() ? kernels_avx2_table() : NULL;
    if (strcmp(name, "avx512") == 0) return cpu_has_avx512() ? kernels_avx512_table() : NULL;
    if (strcmp(name, "avx512novnni") == 0)
        return cpu_has_avx512() ? kernels_avx512_novnni_table() : NULL;
    if (strcmp(name, "avx512noext") == 0)
        return cpu_has_avx512() ? kernels_avx512_noext_table() : NULL;
    if (strcmp(name, "avxvnni") == 0)
        return kernels_cpu_has_avxvnni() ? kernels_avxvnni_table() : NULL;
    if (strcmp(name, "avxvnni_evex") == 0) /* AVX512_VNNI implies the AVX-512 set, VL included */
        return kernels_cpu_has_avx512vnni() ? kernels_avxvnni_evex_table() : NULL;
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
    static const char *const order[] = {"avx512", "avxvnni", "avx2", "ref"};
    for (size_t i = 0; i < sizeof order / sizeof order[0] && !g_best; i++)
        g_best = kernels_by_name(order[i]);
}

const kernels_table *kernels_best(void) {
    pthread_once(&g_best_once, choose_best);
    return g_best;
}
