/* bench_kernels.c: throughput of every kernel table this CPU supports
 * (ref vs SIMD), per kernel and size, and matmul tables (K = 768 with
 * N = 768 and N = 32000, the 110M model's attention and output matrices;
 * T = 1 and T = 512, every weight type, 1 and 2 threads).
 *
 *   bench_kernels            full run (a few seconds per table)
 *   bench_kernels --quick    tiny sizes, < 2 s (CI smoke: keeps it compiling and running)
 *
 * Wall-clock numbers: compare tables within one run on a quiet machine. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels/kernels.h"
#include "kernels/matmul.h"
#include "threadpool.h"

static const char *const k_tables[] = {"ref", "avx2", "avx512", "avx512novnni"};
#define N_TABLES 4

static bool g_quick;
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

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            g_quick = true;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return 2;
        }
    }
    printf("best table: %s\n", kernels_best()->name);
    bench_kernels_table();
    bench_matmul(768);
    if (!g_quick) bench_matmul(32000);
    return 0;
}
