/* bench_kernels.c: throughput of every kernel table this CPU supports
 * (ref vs SIMD), per kernel and size, and matmul tables (K = 768 with
 * N = 768 and N = 32000, the 110M model's attention and output matrices;
 * T = 1 and T = 512, every weight type, 1 and 2 threads).
 *
 *   bench_kernels            full run (a few seconds per table)
 *   bench_kernels --quick    tiny sizes, < 2 s (CI smoke: keeps it compiling and running)
 *   bench_kernels --peaks [--reps R]
 *                            the core's peaks (register-only loops of the FMA, int8
 *                            and BF16 dot instructions cpuid reports), then every
 *                            weight type's matmul as a fraction of its peak, as
 *                            markdown tables; the fastest burst / call over R
 *                            times 0.2 s / 0.1 s (default R = 3), ~30 s; then the
 *                            prompt attention kernels against the FMA peak
 *
 * Wall-clock numbers: compare tables within one run on a quiet machine. */
#include <cpuid.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common.h"
#include "kernels/kernels.h"
#include "kernels/matmul.h"
#include "kernels/repack.h"
#include "mem.h"
#include "threadpool.h"

static const char *const k_tables[] = {"ref",          "avx2",    "avx512",
                                       "avx512novnni", "avxvnni", "avxvnni_evex"};
#define N_TABLES 4

static bool g_quick;
/* --types: the efficiency table's types, comma-separated (NULL: all). */
static const char *g_types;

static bool type_selected(const char *name) {
    if (!g_types) return true;
    const size_t n = strlen(name);
    for (const char *p = g_types; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncasecmp(p, name, n) == 0) return true;
        p += len + (e != NULL);
    }
    return false;
}
static volatile float g_sink;

static uint64_t g_rng = 42;
static float rnd(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* Seconds per call of fn(arg), repeating until the budget is spent. */
typedef void (*bench_fn)(void *arg);
static double time_per_call(bench_fn fn, void *arg) {
    const double budget = g_quick ? 0.002 : 0.1;
    fn(arg); /* warm-up */
    int64_t iters = 1;
    for (;;) {
        int64_t t0 = common_time_us();
        for (int64_t i = 0; i < iters; i++) fn(arg);
        double dt = (double)(common_time_us() - t0) * 1e-6;
        if (dt >= budget || iters > (1 << 28)) return dt / (double)iters;
        iters *= dt > 0 ? (budget / dt > 10 ? 10 : 2) : 10;
    }
}

/* ------------------------------------------------------------ kernels */

typedef struct kargs {
    const kernels_table *k;
    int64_t n;
    float *x, *y, *w, *cs;
    uint16_t *xh, *yh;
    block_q8_0 *x8, *y8;
    block_q4_0 *x4;
} kargs;

static void b_dot_f32(void *p) {
    kargs *a = p;
    float s;
    a->k->vec_dot[CS_TYPE_F32](a->n, &s, a->x, a->y);
    g_sink = s;
}
static void b_dot_f16(void *p) {
    kargs *a = p;
    float s;
    a->k->vec_dot[CS_TYPE_F16](a->n, &s, a->xh, a->yh);
    g_sink = s;
}
static void b_dot_q8(void *p) {
    kargs *a = p;
    float s;
    a->k->vec_dot[CS_TYPE_Q8_0](a->n, &s, a->x8, a->y8);
    g_sink = s;
}
static void b_dot_q4(void *p) {
    kargs *a = p;
    float s;
    a->k->vec_dot[CS_TYPE_Q4_0](a->n, &s, a->x4, a->y8);
    g_sink = s;
}
static void b_quant(void *p) {
    kargs *a = p;
    a->k->from_float[CS_TYPE_Q8_0](a->x, a->y8, a->n);
}
static void b_rmsnorm(void *p) {
    kargs *a = p;
    a->k->rmsnorm(a->y, a->x, a->w, a->n, 1e-5f);
}
static void b_softmax(void *p) {
    kargs *a = p;
    memcpy(a->y, a->x, (size_t)a->n * sizeof(float));
    a->k->softmax(a->y, a->n);
}
static void b_swiglu(void *p) {
    kargs *a = p;
    a->k->swiglu(a->y, a->x, a->w, a->n);
}
static void b_rope(void *p) {
    kargs *a = p;
    a->k->rope(a->y, a->n / 128, 128, 128, CS_ROPE_NEOX, a->cs);
}
static void b_axpy(void *p) {
    kargs *a = p;
    a->k->axpy_f32(a->n, 0.5f, a->x, a->y);
}

typedef struct kernel_case {
    const char *name;
    bench_fn fn;
    double bytes_per_elem; /* memory touched per element, for GB/s */
} kernel_case;

static void bench_kernels_table(void) {
    static const kernel_case cases[] = {
        {"dot_f32", b_dot_f32, 8},
        {"dot_f16", b_dot_f16, 4},
        {"dot_q8_0", b_dot_q8, 2 * 34.0 / 32},
        {"dot_q4_0", b_dot_q4, (18.0 + 34.0) / 32},
        {"quant_q8_0", b_quant, 4 + 34.0 / 32},
        {"rmsnorm", b_rmsnorm, 16},
        {"softmax", b_softmax, 16},
        {"swiglu", b_swiglu, 12},
        {"rope_neox", b_rope, 12},
        {"axpy_f32", b_axpy, 12},
    };
    const int64_t sizes_full[] = {256, 4096, 65536};
    const int64_t sizes_quick[] = {256};
    const int64_t *sizes = g_quick ? sizes_quick : sizes_full;
    const size_t n_sizes = g_quick ? 1 : 3;
    const int64_t nmax = 65536;
    kargs a = {0};
    a.x = malloc(nmax * 4), a.y = malloc(nmax * 4), a.w = malloc(nmax * 4), a.cs = malloc(128 * 4);
    a.xh = malloc(nmax * 2), a.yh = malloc(nmax * 2);
    a.x8 = malloc(nmax / 32 * sizeof *a.x8), a.y8 = malloc(nmax / 32 * sizeof *a.y8);
    a.x4 = malloc(nmax / 32 * sizeof *a.x4);
    if (!a.x || !a.y || !a.w || !a.cs || !a.xh || !a.yh || !a.x8 || !a.y8 || !a.x4) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < nmax; i++) {
        a.x[i] = rnd() * 4, a.y[i] = rnd(), a.w[i] = rnd();
        a.xh[i] = fp32_to_fp16(a.x[i]), a.yh[i] = fp32_to_fp16(a.y[i]);
    }
    quantize_row(CS_TYPE_Q8_0, a.x, a.x8, nmax);
    quantize_row(CS_TYPE_Q4_0, a.x, a.x4, nmax);
    quantize_row_q8_0_ref(a.y, a.y8, nmax);
    kernels_rope_params rp = {.n_rot = 128,
                              .freq_base = 10000.0f,
                              .freq_scale = 1.0f,
                              .attn_factor = 1.0f,
                              .n_ctx_orig = 4096};
    kernels_rope_cache(a.cs, 123.0f, &rp);

    printf("kernel throughput, GB/s (speed-up vs ref)\n%-11s %7s", "kernel", "n");
    for (int t = 0; t < N_TABLES; t++)
        if (kernels_by_name(k_tables[t])) printf(" %16s", k_tables[t]);
    printf("\n");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t s = 0; s < n_sizes; s++) {
            a.n = sizes[s];
            printf("%-11s %7lld", cases[c].name, (long long)a.n);
            double ref_t = 0;
            for (int t = 0; t < N_TABLES; t++) {
                a.k = kernels_by_name(k_tables[t]);
                if (!a.k) continue;
                for (int64_t i = 0; i < a.n; i++) a.y[i] = rnd(); /* fresh y for rope/axpy */
                double dt = time_per_call(cases[c].fn, &a);
                if (t == 0) ref_t = dt;
                double gbs = cases[c].bytes_per_elem * (double)a.n / dt * 1e-9;
                printf(" %8.2f (%5.1fx)", gbs, ref_t / dt);
            }
            printf("\n");
        }
    }
    free(a.x), free(a.y), free(a.w), free(a.cs), free(a.xh), free(a.yh);
    free(a.x8), free(a.y8), free(a.x4);
}

/* ------------------------------------------------------------- matmul */

typedef struct margs {
    const kernels_table *k;
    threadpool *tp;
    int32_t type;
    int32_t layout;
    const void *W;
    int64_t N, K, T;
    const float *X;
    float *Y;
    void *scratch;
} margs;

static void b_matmul(void *p) {
    margs *m = p;
    matmul(m->k, m->tp, m->type, m->layout, m->W, m->N, m->K, m->X, m->T, m->Y, m->scratch);
}

static void bench_matmul(int64_t N_full) {
    const int64_t K = g_quick ? 64 : 768, N = g_quick ? K : N_full;
    const int64_t Ts[2] = {1, g_quick ? 8 : 512};
    /* Q8_0 and Q4_0 twice: row-major, then packed x16 (repack.h) as the
     * model loader leaves them on AVX-512 */
    const int32_t types[] = {CS_TYPE_F32,  CS_TYPE_F16,  CS_TYPE_BF16, CS_TYPE_Q8_0,
                             CS_TYPE_Q4_0, CS_TYPE_Q8_0, CS_TYPE_Q4_0, CS_TYPE_Q4_K,
                             CS_TYPE_Q6_K, CS_TYPE_Q4_K, CS_TYPE_Q6_K};
    const int32_t layouts[] = {CS_LAYOUT_ROWS, CS_LAYOUT_ROWS, CS_LAYOUT_ROWS, CS_LAYOUT_ROWS,
                               CS_LAYOUT_ROWS, CS_LAYOUT_X16,  CS_LAYOUT_X16,  CS_LAYOUT_ROWS,
                               CS_LAYOUT_ROWS, CS_LAYOUT_X16,  CS_LAYOUT_X16};
    void *tmp = malloc((size_t)K * 4 * CS_X16_ROWS);
    threadpool *tp[2] = {NULL, NULL};
    if (threadpool_new(1, &tp[0]) != CS_OK || threadpool_new(2, &tp[1]) != CS_OK) {
        fprintf(stderr, "threadpool: %s\n", cs_last_error());
        exit(1);
    }
    float *wf = malloc((size_t)(N * K) * 4), *X = malloc((size_t)(Ts[1] * K) * 4);
    float *Y = malloc((size_t)(Ts[1] * N) * 4);
    void *W = malloc((size_t)(N * K) * 4);
    void *scratch = malloc(matmul_scratch_size(CS_TYPE_F16, K, Ts[1]) + 64);
    /* the ref table at N = 32000, T = 512 would take minutes */
    const bool skip_ref_big = N * Ts[1] > 768 * 512;
    if (!wf || !X || !Y || !W || !scratch) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < N * K; i++) wf[i] = rnd();
    for (int64_t i = 0; i < Ts[1] * K; i++) X[i] = rnd();
    printf("\nmatmul K=%lld N=%lld, GFLOP/s (2*N*K*T / time)\n%-7s %5s %3s", (long long)K,
           (long long)N, "type", "T", "thr");
    for (int t = 0; t < N_TABLES; t++)
        if (kernels_by_name(k_tables[t])) printf(" %9s", k_tables[t]);
    printf("\n");
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        uint64_t rb = 0;
        if ((types[ty] == CS_TYPE_Q4_K || types[ty] == CS_TYPE_Q6_K) && K % 256 != 0) continue;
        type_row_size(types[ty], K, &rb);
        for (int64_t n = 0; n < N; n++)
            quantize_row(types[ty], wf + n * K, (uint8_t *)W + (size_t)n * rb, K);
        if (layouts[ty] == CS_LAYOUT_X16) repack_x16_pack(types[ty], W, N, K, tmp);
        for (int ti = 0; ti < 2; ti++) {
            for (int th = 0; th < 2; th++) {
                printf("%-4s%-3s %5lld %3d", cs_type_name(types[ty]),
                       layouts[ty] == CS_LAYOUT_X16 ? "x16" : "", (long long)Ts[ti], th + 1);
                for (int t = 0; t < N_TABLES; t++) {
                    const kernels_table *k = kernels_by_name(k_tables[t]);
                    if (!k) continue;
                    if (t == 0 && ti == 1 && skip_ref_big) {
                        printf(" %9s", "-");
                        continue;
                    }
                    margs m = {k, tp[th], types[ty], layouts[ty], W, N, K, Ts[ti], X, Y, scratch};
                    double dt = time_per_call(b_matmul, &m);
                    printf(" %9.1f", 2.0 * (double)(N * K * Ts[ti]) / dt * 1e-9);
                }
                printf("\n");
            }
        }
    }
    threadpool_free(tp[0]);
    threadpool_free(tp[1]);
    free(wf), free(X), free(Y), free(W), free(scratch), free(tmp);
}

/* ------------------------------------------------------------- peaks */

/* Register-only loops of one instruction each: 24 instructions per
 * iteration on 12 independent accumulators (6 for the 3-instruction AVX2 /
 * AVX-512BW int8 sequence), which covers the 4-5 cycle latency of these
 * instructions at 2 per cycle. Inline asm (the file is built without
 * -mavx512*; the assembler takes any instruction, and cpuid gates every
 * call), so the compiler can neither drop nor reorder the loop; the first
 * accumulator is stored to g_sink. Operands are small constants that never
 * reach denormals or overflow within ~1e10 steps. */
#define CS_R12(op, w, a, b)                                                                        \
    op " %%" w a ", %%" w b ", %%" w "0\n\t" op " %%" w a ", %%" w b ", %%" w "1\n\t" op " %%" w a \
       ", %%" w b ", %%" w "2\n\t" op " %%" w a ", %%" w b ", %%" w "3\n\t" op " %%" w a           \
       ", %%" w b ", %%" w "4\n\t" op " %%" w a ", %%" w b ", %%" w "5\n\t" op " %%" w a           \
       ", %%" w b ", %%" w "6\n\t" op " %%" w a ", %%" w b ", %%" w "7\n\t" op " %%" w a           \
       ", %%" w b ", %%" w "8\n\t" op " %%" w a ", %%" w b ", %%" w "9\n\t" op " %%" w a           \
       ", %%" w b ", %%" w "10\n\t" op " %%" w a ", %%" w b ", %%" w "11\n\t"
#define CS_ZERO12                                                                                  \
    "vpxor %%xmm0, %%xmm0, %%xmm0\n\tvpxor %%xmm1, %%xmm1, %%xmm1\n\t"                             \
    "vpxor %%xmm2, %%xmm2, %%xmm2\n\tvpxor %%xmm3, %%xmm3, %%xmm3\n\t"                             \
    "vpxor %%xmm4, %%xmm4, %%xmm4\n\tvpxor %%xmm5, %%xmm5, %%xmm5\n\t"                             \
    "vpxor %%xmm6, %%xmm6, %%xmm6\n\tvpxor %%xmm7, %%xmm7, %%xmm7\n\t"                             \
    "vpxor %%xmm8, %%xmm8, %%xmm8\n\tvpxor %%xmm9, %%xmm9, %%xmm9\n\t"                             \
    "vpxor %%xmm10, %%xmm10, %%xmm10\n\tvpxor %%xmm11, %%xmm11, %%xmm11\n\t"
#define CS_CLOBBER12                                                                               \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",       \
        "xmm11", "xmm12", "xmm13", "xmm14", "cc", "memory"

static const float k_peak_f = 1e-3f;
static const uint32_t k_peak_u8 = 0x03020301u;   /* small bytes: no int32 overflow */
static const uint32_t k_peak_bf16 = 0x3a833a83u; /* two bf16 ~1e-3 */
static const uint32_t k_peak_ones = 0x00010001u; /* the words of vpmaddwd's ones */

/* One 12-chain loop body, repeated twice per iteration. */
#define CS_PEAK_LOOP(name, bcast, w, op)                                                           \
    static void name(int64_t n) {                                                                  \
        uint32_t out;                                                                              \
        __asm__ __volatile__(                                                                      \
            CS_ZERO12 bcast " %[a], %%" w "12\n\t" bcast " %[b], %%" w "13\n\t"                    \
                            "1:\n\t" CS_R12(op, w, "12", "13")                                     \
                                CS_R12(op, w, "12", "13") "dec %[n]\n\tjnz 1b\n\t"                 \
                                                          "vmovd %%xmm0, %[out]\n\tvzeroupper\n\t" \
            : [n] "+r"(n), [out] "=m"(out)                                                         \
            : [a] "m"(k_peak_f), [b] "m"(k_peak_u8)                                                \
            : CS_CLOBBER12);                                                                       \
        g_sink = (float)out;                                                                       \
    }
CS_PEAK_LOOP(peak_fma_ymm, "vbroadcastss", "ymm", "vfmadd231ps")
CS_PEAK_LOOP(peak_fma_zmm, "vbroadcastss", "zmm", "vfmadd231ps")
CS_PEAK_LOOP(peak_dpbusd_zmm, "vpbroadcastd", "zmm", "vpdpbusd")
/* vpdpbusd on ymm: VEX-encoded (AVX-VNNI) where the CPU has it, else
 * EVEX-encoded (AVX512_VNNI + AVX512VL), as the "avxvnni" and
 * "avxvnni_evex" tables issue it */
CS_PEAK_LOOP(peak_dpbusd_ymm_vex, "vpbroadcastd", "ymm", "%{vex%} vpdpbusd")
CS_PEAK_LOOP(peak_dpbusd_ymm_evex, "vpbroadcastd", "ymm", "%{evex%} vpdpbusd")
static void peak_dpbusd_ymm(int64_t n) {
    if (kernels_cpu_has_avxvnni())
        peak_dpbusd_ymm_vex(n);
    else
        peak_dpbusd_ymm_evex(n);
}

static void peak_dpbf16_zmm(int64_t n) {
    uint32_t out;
    __asm__ __volatile__(CS_ZERO12
                         "vpbroadcastd %[a], %%zmm12\n\tvpbroadcastd %[a], %%zmm13\n\t"
                         "1:\n\t" CS_R12("vdpbf16ps", "zmm", "12", "13")
                             CS_R12("vdpbf16ps", "zmm", "12", "13") "dec %[n]\n\tjnz 1b\n\t"
                                                                    "vmovd %%xmm0, %[out]\n\t"
                                                                    "vzeroupper\n\t"
                         : [n] "+r"(n), [out] "=m"(out)
                         : [a] "m"(k_peak_bf16)
                         : CS_CLOBBER12);
    g_sink = (float)out;
}

/* vpdpbusd with a 4-byte memory operand broadcast to 16 lanes ({1to16}), the
 * form the x16 kernels issue (one activation word against 16 weight rows). */
#define CS_BC1(r) "vpdpbusd %[b]%{1to16%}, %%zmm12, %%zmm" r "\n\t"
#define CS_BC12                                                                                    \
    CS_BC1("0")                                                                                    \
    CS_BC1("1")                                                                                    \
    CS_BC1("2")                                                                                    \
    CS_BC1("3")                                                                                    \
    CS_BC1("4")                                                                                    \
    CS_BC1("5") CS_BC1("6") CS_BC1("7") CS_BC1("8") CS_BC1("9") CS_BC1("10") CS_BC1("11")
static void peak_dpbusd_bcast_zmm(int64_t n) {
    uint32_t out;
    __asm__ __volatile__(CS_ZERO12 "vpbroadcastd %[a], %%zmm12\n\t"
                                   "1:\n\t" CS_BC12 CS_BC12 "dec %[n]\n\tjnz 1b\n\t"
                                   "vmovd %%xmm0, %[out]\n\tvzeroupper\n\t"
                         : [n] "+r"(n), [out] "=m"(out)
                         : [a] "m"(k_peak_u8), [b] "m"(k_peak_u8)
                         : CS_CLOBBER12);
    g_sink = (float)out;
}

/* The int8 dot without VNNI: maddubs (u8 x s8 -> s16 pairs), madd with ones
 * (-> s32), add into the accumulator; 6 chains (acc 0-5, products 6-11),
 * each step 3 instructions for 32 (ymm) or 64 (zmm) byte pairs. */
#define CS_MB1(w, a, t)                                                                            \
    "vpmaddubsw %%" w "13, %%" w "12, %%" w t "\n\tvpmaddwd %%" w "14, %%" w t ", %%" w t          \
    "\n\tvpaddd %%" w t ", %%" w a ", %%" w a "\n\t"
#define CS_MB6(w)                                                                                  \
    CS_MB1(w, "0", "6")                                                                            \
    CS_MB1(w, "1", "7")                                                                            \
    CS_MB1(w, "2", "8") CS_MB1(w, "3", "9") CS_MB1(w, "4", "10") CS_MB1(w, "5", "11")
#define CS_PEAK_MADD(name, w)                                                                      \
    static void name(int64_t n) {                                                                  \
        uint32_t out;                                                                              \
        __asm__ __volatile__(CS_ZERO12 "vpbroadcastd %[a], %%" w "12\n\t"                          \
                                       "vpbroadcastd %[a], %%" w "13\n\t"                          \
                                       "vpbroadcastd %[o], %%" w "14\n\t"                          \
                                       "1:\n\t" CS_MB6(w)                                          \
                                           CS_MB6(w) "dec %[n]\n\tjnz 1b\n\t"                      \
                                                     "vmovd %%xmm0, %[out]\n\tvzeroupper\n\t"      \
                             : [n] "+r"(n), [out] "=m"(out)                                        \
                             : [a] "m"(k_peak_u8), [o] "m"(k_peak_ones)                            \
                             : CS_CLOBBER12);                                                      \
        g_sink = (float)out;                                                                       \
    }
CS_PEAK_MADD(peak_maddubs_ymm, "ymm")
CS_PEAK_MADD(peak_maddubs_zmm, "zmm")

static bool cpu_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static bool cpu_avx512bw(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
static bool cpu_vnni(void) {
    return cpu_avx512bw() && kernels_cpu_has_avx512vnni();
}
static bool cpu_vnni_ymm(void) {
    return kernels_cpu_has_avxvnni() || cpu_vnni();
}
/* AVX512_BF16: CPUID leaf 7 sub-leaf 1, EAX bit 5 (no __builtin_cpu_supports
 * name for it in gcc 12 / clang 14). */
static bool cpu_bf16(void) {
    unsigned a, b, c, d;
    return cpu_avx512bw() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1u);
}

enum {
    PK_FMA_YMM,
    PK_FMA_ZMM,
    PK_MADD_YMM,
    PK_MADD_ZMM,
    PK_DPBUSD_YMM,
    PK_DPBUSD,
    PK_DPBUSD_BC,
    PK_BF16,
    PK_N
};
typedef struct peak_case {
    const char *name, *isa;
    bool (*have)(void);
    void (*loop)(int64_t n);
    double ops_per_iter; /* 2 per FMA lane, per byte pair, per bf16 pair */
} peak_case;
static const peak_case k_peaks[PK_N] = {
    {"vfmadd231ps ymm", "FMA", cpu_avx2_fma, peak_fma_ymm, 24 * 8 * 2},
    {"vfmadd231ps zmm", "AVX512F", cpu_avx512bw, peak_fma_zmm, 24 * 16 * 2},
    {"vpmaddubsw+vpmaddwd+vpaddd ymm", "AVX2", cpu_avx2_fma, peak_maddubs_ymm, 12 * 32 * 2},
    {"vpmaddubsw+vpmaddwd+vpaddd zmm", "AVX512BW", cpu_avx512bw, peak_maddubs_zmm, 12 * 64 * 2},
    {"vpdpbusd ymm", "AVX-VNNI or AVX512_VNNI", cpu_vnni_ymm, peak_dpbusd_ymm, 24 * 32 * 2},
    {"vpdpbusd zmm", "AVX512_VNNI", cpu_vnni, peak_dpbusd_zmm, 24 * 64 * 2},
    {"vpdpbusd zmm, m32{1to16}", "AVX512_VNNI", cpu_vnni, peak_dpbusd_bcast_zmm, 24 * 64 * 2},
    {"vdpbf16ps zmm", "AVX512_BF16", cpu_bf16, peak_dpbf16_zmm, 24 * 32 * 2},
};
static double g_ghz = 1;       /* clock_ghz() */
static double g_peak[PK_N][2]; /* GOP/s, 1 and 2 threads; 0 = not on this CPU */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct peak_job {
    void (*loop)(int64_t n);
    int64_t n;
} peak_job;
static void peak_task(void *arg, int32_t ith, int32_t nth) {
    (void)ith, (void)nth;
    const peak_job *j = arg;
    j->loop(j->n);
}

/* The fastest of short bursts (~2 ms each) over reps * 0.2 s: the cores are
 * shared, and the scheduler's time slices are a few ms, so a burst that
 * fits in one slice runs the core undisturbed while a 0.2 s run would
 * average in the other processes. GOP/s over all threads. */
static double peak_measure(const peak_case *pc, threadpool *tp, int reps) {
    const double burst = 0.002, budget = g_quick ? 0.01 : 0.2 * reps;
    peak_job j = {pc->loop, 1 << 8};
    for (;;) { /* calibrate on one thread */
        double t0 = now_s();
        pc->loop(j.n);
        double dt = now_s() - t0;
        if (dt >= burst * 0.5) {
            j.n = (int64_t)((double)j.n * burst / dt) + 1;
            break;
        }
        j.n *= dt > 0 ? (burst / dt > 16 ? 16 : 2) : 16;
    }
    double best = 0;
    for (double start = now_s(); now_s() - start < budget;) {
        double t0 = now_s();
        threadpool_run(tp, peak_task, &j);
        double g =
            pc->ops_per_iter * (double)j.n * threadpool_n_threads(tp) / (now_s() - t0) * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

static void bench_peaks(int reps) {
    threadpool *tp[2] = {NULL, NULL};
    if (threadpool_new(1, &tp[0]) != CS_OK || threadpool_new(2, &tp[1]) != CS_OK) {
        fprintf(stderr, "threadpool: %s\n", cs_last_error());
        exit(1);
    }
    printf("## Peaks (register-only loops, fastest ~2 ms burst over %.1f s)\n\n", 0.2 * reps);
    printf("| instruction | ISA | GOP/s 1 thread | GOP/s 2 threads | ops/cycle at 1 thread |\n");
    printf("| --- | --- | ---: | ---: | ---: |\n");
    for (int p = 0; p < PK_N; p++) {
        if (!k_peaks[p].have()) {
            printf("| %s | %s | (not on this CPU: skipped) | | |\n", k_peaks[p].name,
                   k_peaks[p].isa);
            continue;
        }
        for (int th = 0; th < 2; th++) g_peak[p][th] = peak_measure(&k_peaks[p], tp[th], reps);
        printf("| %s | %s | %.1f | %.1f |", k_peaks[p].name, k_peaks[p].isa, g_peak[p][0],
               g_peak[p][1]);
        printf(" %.1f |\n", g_peak[p][0] / g_ghz);
    }
    threadpool_free(tp[0]);
    threadpool_free(tp[1]);
}

/* Cycles per second from a chain of dependent integer adds (1 cycle each on
 * every x86 core since the P6): only to express the peaks per cycle. The
 * fastest of 0.5 ms bursts over reps * 0.1 s (see peak_measure). */
static double clock_ghz(int reps) {
    const int64_t n = 1 << 16;
    double best = 0;
    for (double start = now_s(); now_s() - start < (g_quick ? 0.01 : 0.1 * reps);) {
        int64_t x = 0, i = n;
        double t0 = now_s();
        __asm__ __volatile__("1:\n\t"
                             "add $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\t"
                             "add $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\t"
                             "add $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\t"
                             "add $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\t"
                             "add $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\t"
                             "add $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\tadd $1, %[x]\n\t"
                             "dec %[i]\n\tjnz 1b\n\t"
                             : [x] "+r"(x), [i] "+r"(i)
                             :
                             : "cc");
        double g = 24.0 * (double)n / (now_s() - t0) * 1e-9;
        g_sink = (float)x;
        if (g > best) best = g;
    }
    return best;
}

/* The peak a weight type's kernels are bounded by in table k: the float
 * types convert to FP32 and FMA, except BF16 in a table with bf16dp
 * (vdpbf16ps, bf16_avx512.c); the quantized ones do int8 dots (vpdpbusd
 * in a table with vnni512, maddubs + madd otherwise). */
static int peak_of(const kernels_table *k, int32_t type) {
    const bool z = strncmp(k->name, "avx512", 6) == 0;
    if (type == CS_TYPE_BF16 && k->bf16dp) return PK_BF16;
    if (type == CS_TYPE_F32 || type == CS_TYPE_F16 || type == CS_TYPE_BF16)
        return z ? PK_FMA_ZMM : PK_FMA_YMM;
    if (k->vnni512) return PK_DPBUSD;
    /* the avxvnni tables: the types whose x16 kernel is not the AVX2 one */
    const kernels_table *avx2 = kernels_by_name("avx2");
    if (strncmp(k->name, "avxvnni", 7) == 0 && avx2 &&
        k->ukernel_x16[type].tile != avx2->ukernel_x16[type].tile)
        return PK_DPBUSD_YMM;
    return z ? PK_MADD_ZMM : PK_MADD_YMM;
}

/* GFLOP/s of the fastest single call over reps * 0.1 s of calls (as
 * peak_measure: the least disturbed call on shared cores; one call is
 * 10 us at T = 1 to ~10 ms at T = 512 for the slowest type). */
static double matmul_best(margs *m, int reps) {
    const double budget = g_quick ? 0.005 : 0.1 * reps;
    double best = 1e30;
    b_matmul(m); /* warm-up */
    for (double start = now_s(); now_s() - start < budget;) {
        double t0 = now_s();
        b_matmul(m);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return 2.0 * (double)(m->N * m->K * m->T) / best * 1e-9;
}

/* The per-type efficiency table: the best table's matmul at the 110M
 * model's attention shape (N = K = 768), T = 512 (prompt) and T = 1
 * (decode), every weight type in the layout the model loader gives it. */
static void bench_efficiency(int reps) {
    const kernels_table *k = kernels_best();
    const int64_t K = g_quick ? 256 : 768, N = K, Tp = g_quick ? 16 : 512;
    const int32_t types[] = {CS_TYPE_F32,    CS_TYPE_F16,  CS_TYPE_BF16,  CS_TYPE_Q8_0,
                             CS_TYPE_Q4_0,   CS_TYPE_Q4_1, CS_TYPE_Q5_0,  CS_TYPE_Q5_1,
                             CS_TYPE_IQ4_NL, CS_TYPE_Q2_K, CS_TYPE_Q3_K,  CS_TYPE_Q4_K,
                             CS_TYPE_Q5_K,   CS_TYPE_Q6_K, CS_TYPE_IQ4_XS};
    threadpool *tp[2] = {NULL, NULL};
    if (threadpool_new(1, &tp[0]) != CS_OK || threadpool_new(2, &tp[1]) != CS_OK) {
        fprintf(stderr, "threadpool: %s\n", cs_last_error());
        exit(1);
    }
    float *wf = malloc((size_t)(N * K) * 4), *X = malloc((size_t)(Tp * K) * 4);
    float *Y = malloc((size_t)(Tp * N) * 4);
    void *W = malloc((size_t)(N * K) * 4), *tmp = malloc((size_t)K * 4 * CS_X16_ROWS);
    void *scratch = malloc(matmul_scratch_size(CS_TYPE_F16, K, Tp) + 64);
    if (!wf || !X || !Y || !W || !tmp || !scratch) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < N * K; i++) wf[i] = rnd();
    for (int64_t i = 0; i < Tp * K; i++) X[i] = rnd();
    printf("\n## Kernel efficiency, table %s, N = K = %lld, fastest call over %.1f s\n\n", k->name,
           (long long)K, 0.1 * reps);
    printf("| type | layout | peak | T=%lld GFLOP/s 1 thr | %% of peak | T=%lld 2 thr | %% of "
           "2 x peak | T=1 GFLOP/s | %% of peak | T=1 weight GB/s |\n",
           (long long)Tp, (long long)Tp);
    printf("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        const int32_t type = types[ty];
        uint64_t rb = 0;
        if (!type_row_size(type, K, &rb) || !type_selected(cs_type_name(type))) continue;
        const int32_t layout = repack_x16_fits(type, N, K) && matmul_x16_native(k, type)
                                   ? CS_LAYOUT_X16
                                   : CS_LAYOUT_ROWS;
        for (int64_t n = 0; n < N; n++)
            quantize_row(type, wf + n * K, (uint8_t *)W + (size_t)n * rb, K);
        if (layout == CS_LAYOUT_X16) repack_x16_pack(type, W, N, K, tmp);
        const int pk = peak_of(k, type);
        margs m = {k, tp[0], type, layout, W, N, K, Tp, X, Y, scratch};
        const double gp1 = matmul_best(&m, reps);
        m.tp = tp[1];
        const double gp2 = matmul_best(&m, reps);
        m.tp = tp[0], m.T = 1;
        const double g1 = matmul_best(&m, reps);
        const double gbs = g1 / (2.0 * (double)K) * (double)rb; /* rows/s * bytes/row */
        printf("| %s | %s | %s | %.1f | %.0f %% | %.1f | %.0f %% | %.1f | %.1f %% | %.1f |\n",
               cs_type_name(type), layout == CS_LAYOUT_X16 ? "x16" : "rows", k_peaks[pk].name, gp1,
               100 * gp1 / g_peak[pk][0], gp2, 50 * gp2 / g_peak[pk][0], g1,
               100 * g1 / g_peak[pk][0], gbs);
        if (type == CS_TYPE_BF16 && g_peak[PK_BF16][0] > 0)
            printf("| (BF16 against vdpbf16ps) | | %s | | %.0f %% | | %.0f %% | | | |\n",
                   k_peaks[PK_BF16].name, 100 * gp1 / g_peak[PK_BF16][0],
                   50 * gp2 / g_peak[PK_BF16][0]);
    }
    threadpool_free(tp[0]);
    threadpool_free(tp[1]);
    free(wf), free(X), free(Y), free(W), free(tmp), free(scratch);
}

/* The attention kernels of a prompt at the 110M model's shape (12 heads of
 * 64 in a cache row; 128 as Llama 3's), 512 cached cells, 4 queries a
 * call as forward.c groups them, against the FP32 FMA peak: the per-cell
 * scores, the scores from the transposed keys (with the transposition's
 * rate), the weighted V sum, and softmax's time per element. Each is the
 * fastest call over reps * 0.1 s, from cache (a head's keys are 64-128 KB
 * at 512 cells). */
typedef struct attn_bench {
    const kernels_table *k;
    int64_t hd;
    int32_t n, nq;
    const uint8_t *base;
    size_t stride;
    const int32_t *idx;
    float *kt;
    const uint16_t *const *q;
    float *const *s;
    const float *const *w;
    float *const *out;
} attn_bench;

enum { AB_SCORES, AB_KT, AB_SCORES_KT, AB_ACCUM, AB_SOFTMAX };

static void attn_call(const attn_bench *a, int what) {
    const kernels_table *k = a->k;
    switch (what) {
    case AB_SCORES:
        k->attn_scores_f16(a->hd, a->n, a->base, a->stride, a->idx, a->nq, a->q, 0.125f, a->s);
        break;
    case AB_KT:
        k->attn_kt_f16(a->hd, a->n, a->base, a->stride, a->idx, a->kt);
        break;
    case AB_SCORES_KT:
        k->attn_scores_kt_f16(a->hd, 0, a->n, a->kt, a->nq, a->q, 0.125f, a->s);
        break;
    case AB_ACCUM:
        k->attn_accum_f16(a->hd, a->n, a->base, a->stride, a->idx, a->nq, a->w, a->out);
        break;
    default:
        k->softmax(a->s[0], a->n);
        break;
    }
}

static double attn_best_s(const attn_bench *a, int what, int reps) {
    double best = 1e30;
    for (double start = now_s(); now_s() - start < 0.1 * reps;) {
        const double t0 = now_s();
        attn_call(a, what);
        const double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

static void bench_attention(int reps) {
    const kernels_table *k = kernels_best();
    if (!k->attn_scores_f16 || !k->attn_accum_f16) return;
    const int pk = peak_of(k, CS_TYPE_F16);
    const int32_t n = 512, nq = KERNELS_ATTN_MQ;
    const size_t stride = 768 * 2 * 2; /* a cache row of 12 heads of 128 */
    uint8_t *base = malloc(stride * (size_t)n);
    int32_t *idx = malloc((size_t)n * sizeof *idx);
    float *kt = mem_aligned_alloc((size_t)n * 128 * sizeof(float));
    static uint16_t q[KERNELS_ATTN_MQ][128];
    static float s[KERNELS_ATTN_MQ][512], o[KERNELS_ATTN_MQ][128];
    if (!base || !idx || !kt) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < stride * (size_t)n / 2; i++)
        ((uint16_t *)(void *)base)[i] = fp32_to_fp16(rnd());
    for (int32_t j = 0; j < n; j++) idx[j] = j;
    const uint16_t *qp[KERNELS_ATTN_MQ];
    float *sp[KERNELS_ATTN_MQ], *op[KERNELS_ATTN_MQ];
    const float *wp[KERNELS_ATTN_MQ];
    for (int g = 0; g < nq; g++) {
        for (int i = 0; i < 128; i++) q[g][i] = fp32_to_fp16(rnd());
        for (int32_t j = 0; j < n; j++) s[g][j] = 1.0f / (float)n;
        qp[g] = q[g], sp[g] = s[g], op[g] = o[g], wp[g] = s[g];
    }
    printf("\n## Attention, table %s, %d cells, %d queries a call, fastest call over %.1f s\n\n",
           k->name, n, nq, 0.1 * reps);
    printf("| head dim | scores per cell GFLOP/s | %% of %s | scores from transposed keys | %% of "
           "peak | transposition, cells/us | V sum GFLOP/s | %% of peak | softmax ns/element |\n",
           k_peaks[pk].name);
    printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (int64_t hd = 64; hd <= 128; hd *= 2) {
        const attn_bench a = {k, hd, n, nq, base, stride, idx, kt, qp, sp, wp, op};
        const double flop = 2.0 * (double)hd * n * nq, peak = g_peak[pk][0];
        const double g_sc = flop / attn_best_s(&a, AB_SCORES, reps) * 1e-9;
        const double g_ac = flop / attn_best_s(&a, AB_ACCUM, reps) * 1e-9;
        printf("| %lld | %.1f | %.0f %% |", (long long)hd, g_sc, 100 * g_sc / peak);
        if (k->attn_kt_f16 && KERNELS_ATTN_KT_HD(hd)) {
            const double t_kt = attn_best_s(&a, AB_KT, reps);
            const double g_kt = flop / attn_best_s(&a, AB_SCORES_KT, reps) * 1e-9;
            printf(" %.1f | %.0f %% | %.0f |", g_kt, 100 * g_kt / peak, n / t_kt * 1e-6);
        } else {
            printf(" - | - | - |");
        }
        for (int g = 0; g < nq; g++)
            for (int32_t j = 0; j < n; j++) s[g][j] = 1.0f / (float)n;
        const double t_sm = attn_best_s(&a, AB_SOFTMAX, reps);
        printf(" %.1f | %.0f %% | %.2f |\n", g_ac, 100 * g_ac / peak, t_sm / n * 1e9);
    }
    g_sink = s[0][0] + o[0][0];
    free(base), free(idx), mem_free(kt);
}

int main(int argc, char **argv) {
    bool peaks = false;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            g_quick = true;
        } else if (strcmp(argv[i], "--peaks") == 0) {
            peaks = true;
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            reps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--types") == 0 && i + 1 < argc) {
            g_types = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--quick] [--peaks [--reps R] [--types LIST]]\n"
                    "  --types LIST  comma-separated type names (q5_K,q6_K): the kernel\n"
                    "                efficiency table has only these, no attention table\n",
                    argv[0]);
            return 2;
        }
    }
    if (peaks) {
        g_ghz = clock_ghz(reps);
        printf("clock: %.2f GHz (dependent integer adds)\n\n", g_ghz);
        bench_peaks(reps);
        bench_efficiency(reps);
        if (!g_types) bench_attention(reps);
        return 0;
    }
    printf("best table: %s\n", kernels_best()->name);
    bench_kernels_table();
    bench_matmul(768);
    if (!g_quick) bench_matmul(32000);
    return 0;
}
