/* test_kernels.c: every kernel of every table this CPU supports against
 * the scalar reference table, and the reference against independent
 * double-precision formulas written here; the block codecs; f16/bf16
 * conversions; RoPE (float64 rotation, composition identity, untouched
 * tail); and matmul against a naive double reference, bit-identical for
 * 1, 2 and 3 threads. Fixed seeds everywhere. */
#include "test.h"

#include <math.h>

#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "kernels/matmul.h"
#include "threadpool.h"

#define PI_F64 3.14159265358979323846

/* Dots: |simd - ref| <= TOL * sum|x_i*y_i| (float accumulation over up to
 * 2048 products in different orders). */
#define TOL_F32_DOT  1e-5
#define TOL_F16_DOT  1e-5
#define TOL_BF16_DOT 1e-5
#define TOL_Q8_0_DOT 1e-5
#define TOL_Q4_0_DOT 1e-5
/* Reference dots against a double sum of the same (exactly representable)
 * products: only the final rounding (and float block sums for q8/q4). */
#define TOL_REF_DOT 1e-5
/* axpy: FMA vs separate multiply-add, relative to |y| + |a*x|. */
#define TOL_AXPY 1e-6
/* rmsnorm, softmax, swiglu vs double formulas (relative per element,
 * softmax absolute since outputs are <= 1). exp approximations of the SIMD
 * tables are within a few ulp. */
#define TOL_RMSNORM 2e-6
#define TOL_SOFTMAX 1e-6
#define TOL_SWIGLU  2e-6
/* RoPE: float angles advanced iteratively vs exact double angles, for
 * positions below 256 (error grows with pos * pair index). */
#define TOL_ROPE_F64 2e-3
/* rope(p) then rope(d) vs rope(p + d), relative to the vector's max |x|. */
#define TOL_ROPE_COMPOSE 2e-3
/* matmul vs a naive double-precision reference over the same converted
 * operands, relative to sum|w*x|. */
#define TOL_MATMUL 2e-5

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state;

static void rng_seed(uint64_t s) {
    rng_state = s;
}

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static float rng_f(void) {
    return (float)((double)(rng_next() >> 11) * 0x1.0p-52 - 1.0);
}

static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = rng_f() * scale;
}

/* avx512novnni: the AVX-512 table with the non-VNNI matmul micro-kernels
 * (on a VNNI CPU, "avx512" takes the vpdpbusd ones); avx512noext: without
 * the GFNI and VBMI decode columns (on a CPU with those, "avx512" takes
 * them) */
static const char *const k_simd_names[] = {"avx2",        "avx512",  "avx512novnni",
                                           "avx512noext", "avxvnni", "avxvnni_evex"};
static const char *const k_all_names[] = {"ref",         "avx2",    "avx512",      "avx512novnni",
                                          "avx512noext", "avxvnni", "avxvnni_evex"};
#define N_SIMD (sizeof k_simd_names / sizeof k_simd_names[0])
#define N_ALL  (sizeof k_all_names / sizeof k_all_names[0])

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static void check_rel(double got, double want, double scale, double tol, const char *what,
                      const char *table, int64_t n) {
    double err = fabs(got - want);
    if (!(err <= tol * scale)) {
        print_error("%s [%s] n=%lld: got %.9g want %.9g (scale %.3g, tol %.3g)\n", what, table,
                    (long long)n, got, want, scale, tol);
        fail();
    }
}

static const int64_t k_sizes[] = {1, 7, 31, 32, 33, 100, 1000};
static const int64_t k_qsizes[] = {32, 64, 96, 320, 1024, 2048};

/* ------------------------------------------------------------- tables */

static void test_kernels_tables(void **state) {
    (void)state;
    const kernels_table *ref = kernels_ref();
    assert_non_null(ref);
    assert_string_equal(ref->name, "ref");
    assert_ptr_equal(kernels_by_name("ref"), ref);
    assert_null(kernels_by_name("sse9"));
    assert_null(kernels_by_name(NULL));
    /* main() sets CS_KERNELS=ref before the first kernels_best() */
    const kernels_table *best = kernels_best();
    assert_ptr_equal(best, ref);
    assert_ptr_equal(best, kernels_best());
    for (size_t i = 0; i < N_ALL; i++) {
        const kernels_table *k = kernels_by_name(k_all_names[i]);
        if (!k) continue;
        assert_string_equal(k->name, k_all_names[i]);
        assert_non_null(k->vec_dot[CS_TYPE_F32]);
        assert_non_null(k->vec_dot[CS_TYPE_F16]);
        assert_non_null(k->vec_dot[CS_TYPE_BF16]);
        assert_non_null(k->vec_dot[CS_TYPE_Q8_0]);
        assert_non_null(k->vec_dot[CS_TYPE_Q4_0]);
        assert_non_null(k->vec_dot_f16_f32);
        assert_non_null(k->from_float[CS_TYPE_Q8_0]);
        assert_non_null(k->from_float[CS_TYPE_F16]);
        assert_non_null(k->fp16_to_fp32_row);
        assert_non_null(k->from_float[CS_TYPE_BF16]);
        assert_non_null(k->axpy_f32);
        assert_non_null(k->axpy_f16);
        assert_non_null(k->rmsnorm);
        assert_non_null(k->softmax);
        assert_non_null(k->swiglu);
        assert_non_null(k->rope);
    }
}

/* The type table and the per-type slots of every kernel table: each weight
 * type has its scalar entries, its activation type a converter, and every
 * table a dot and a converter for it; the KV cache slots are the per-type
 * ones. */
static void test_kernels_type_table(void **state) {
    (void)state;
    int32_t types[CS_TYPE_COUNT];
    const int32_t n = cs_weight_types(types, CS_TYPE_COUNT);
    int32_t n_rows = 0; /* the table's weight rows: the list is exactly those */
    for (int32_t t = 0; t < CS_TYPE_COUNT; t++) {
        const type_traits *tr = type_traits_get(t);
        n_rows += tr && tr->is_weight;
    }
    assert_int_equal(n, n_rows);
    /* f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_K..q6_K iq4_nl iq4_xs */
    assert_int_equal(n, 15);
    for (size_t i = 0; i < N_ALL; i++) {
        const kernels_table *k = kernels_by_name(k_all_names[i]);
        if (!k) continue;
        for (int32_t j = 0; j < n; j++) {
            const int32_t t = types[j];
            const type_traits *tr = type_traits_get(t);
            assert_non_null(tr);
            assert_true(tr->is_weight && tr->to_float && tr->from_float_ref && tr->vec_dot_ref);
            const type_traits *act = type_traits_get(tr->vec_dot_type);
            assert_non_null(act);
            assert_non_null(k->vec_dot[t]);
            if (tr->vec_dot_type == CS_TYPE_F32) continue;
            assert_non_null(act->act_from_float_ref);
            assert_non_null(k->from_float[tr->vec_dot_type]);
        }
        /* a type the engine does not compute with has no dot */
        assert_null(k->vec_dot[39]); /* mxfp4 */
    }
    /* the reference table is the type table's scalar entries */
    const kernels_table *ref = kernels_ref();
    for (int32_t j = 0; j < n; j++)
        assert_ptr_equal(ref->vec_dot[types[j]], type_traits_get(types[j])->vec_dot_ref);
    assert_ptr_equal(ref->from_float[CS_TYPE_Q8_K],
                     type_traits_get(CS_TYPE_Q8_K)->act_from_float_ref);
}

/* cs_weight_types lists the weight types in id order and honours cap;
 * cs_type_from_name takes exactly those names, in any case. */
static void test_kernels_weight_types_and_names(void **state) {
    (void)state;
    const int32_t want[] = {CS_TYPE_F32,    CS_TYPE_F16,    CS_TYPE_Q4_0, CS_TYPE_Q4_1,
                            CS_TYPE_Q5_0,   CS_TYPE_Q5_1,   CS_TYPE_Q8_0, CS_TYPE_Q2_K,
                            CS_TYPE_Q3_K,   CS_TYPE_Q4_K,   CS_TYPE_Q5_K, CS_TYPE_Q6_K,
                            CS_TYPE_IQ4_NL, CS_TYPE_IQ4_XS, CS_TYPE_BF16};
    const int32_t n_want = (int32_t)(sizeof want / sizeof want[0]);
    assert_int_equal(cs_weight_types(NULL, 0), n_want);
    int32_t got[CS_TYPE_COUNT + 1];
    for (int i = 0; i <= CS_TYPE_COUNT; i++) got[i] = -7;
    assert_int_equal(cs_weight_types(got, CS_TYPE_COUNT), n_want);
    assert_memory_equal(got, want, sizeof want);
    assert_int_equal(got[n_want], -7);
    for (int i = 0; i <= CS_TYPE_COUNT; i++) got[i] = -7;
    assert_int_equal(cs_weight_types(got, 3), n_want); /* only 3 written */
    assert_memory_equal(got, want, 3 * sizeof want[0]);
    assert_int_equal(got[3], -7);

    char upper[16];
    for (int32_t i = 0; i < n_want; i++) {
        const char *name = cs_type_name(want[i]);
        assert_true(type_is_weight(want[i]));
        assert_int_equal(cs_type_from_name(name), want[i]);
        size_t j = 0;
        for (; name[j] && j + 1 < sizeof upper; j++)
            upper[j] = (char)(name[j] >= 'a' && name[j] <= 'z' ? name[j] - 'a' + 'A' : name[j]);
        upper[j] = '\0';
        assert_int_equal(cs_type_from_name(upper), want[i]);
    }
    assert_int_equal(cs_type_from_name("q6_k"), CS_TYPE_Q6_K);
    /* ggml types the engine does not compute with, and non-names */
    assert_int_equal(cs_type_from_name("mxfp4"), -1);
    assert_int_equal(cs_type_from_name("q8_1"), -1);
    assert_int_equal(cs_type_from_name("q8_K"), -1);
    assert_int_equal(cs_type_from_name("iq2_xxs"), -1);
    assert_int_equal(cs_type_from_name("q4_K_M"), -1);
    assert_int_equal(cs_type_from_name("q4"), -1);
    assert_int_equal(cs_type_from_name(""), -1);
    assert_int_equal(cs_type_from_name(NULL), -1);
    assert_false(type_is_weight(CS_TYPE_Q8_K));
    assert_false(type_is_weight(CS_TYPE_Q8_1));
    assert_false(type_is_weight(-1));
    assert_false(type_is_weight(CS_TYPE_COUNT));

    /* the list for error texts, and its truncation */
    char buf[128];
    assert_string_equal(type_weight_names(buf, sizeof buf),
                        "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, "
                        "iq4_nl, iq4_xs, bf16");
    char small[10];
    assert_string_equal(type_weight_names(small, sizeof small), "f32, f16");
}

/* --------------------------------------------------------------- dots */

static void test_kernels_dot_float_types(void **state) {
    (void)state;
    rng_seed(1);
    const kernels_table *ref = kernels_ref();
    for (size_t si = 0; si < sizeof k_sizes / sizeof k_sizes[0]; si++) {
        const int64_t n = k_sizes[si];
        float *x = xmalloc((size_t)n * 4), *y = xmalloc((size_t)n * 4);
        uint16_t *xh = xmalloc((size_t)n * 2), *yh = xmalloc((size_t)n * 2);
        uint16_t *xb = xmalloc((size_t)n * 2), *yb = xmalloc((size_t)n * 2);
        fill(x, n, 2.0f);
        fill(y, n, 3.0f);
        double w32 = 0, a32 = 0, w16 = 0, a16 = 0, wb = 0, ab = 0, wm = 0, am = 0;
        for (int64_t i = 0; i < n; i++) {
            xh[i] = fp32_to_fp16(x[i]), yh[i] = fp32_to_fp16(y[i]);
            xb[i] = fp32_to_bf16(x[i]), yb[i] = fp32_to_bf16(y[i]);
            double p = (double)x[i] * (double)y[i];
            w32 += p, a32 += fabs(p);
            p = (double)fp16_to_fp32(xh[i]) * (double)fp16_to_fp32(yh[i]);
            w16 += p, a16 += fabs(p);
            p = (double)bf16_to_fp32(xb[i]) * (double)bf16_to_fp32(yb[i]);
            wb += p, ab += fabs(p);
            p = (double)fp16_to_fp32(xh[i]) * (double)y[i];
            wm += p, am += fabs(p);
        }
        float r32, r16, rb, rm;
        ref->vec_dot[CS_TYPE_F32](n, &r32, x, y);
        ref->vec_dot[CS_TYPE_F16](n, &r16, xh, yh);
        ref->vec_dot[CS_TYPE_BF16](n, &rb, xb, yb);
        ref->vec_dot_f16_f32(n, &rm, xh, y);
        check_rel((double)r32, w32, a32, TOL_REF_DOT, "ref dot_f32", "ref", n);
        check_rel((double)r16, w16, a16, TOL_REF_DOT, "ref dot_f16", "ref", n);
        check_rel((double)rb, wb, ab, TOL_REF_DOT, "ref dot_bf16", "ref", n);
        check_rel((double)rm, wm, am, TOL_REF_DOT, "ref dot_f16_f32", "ref", n);
        for (size_t ti = 0; ti < N_SIMD; ti++) {
            const kernels_table *k = kernels_by_name(k_simd_names[ti]);
            if (!k) continue;
            float s;
            k->vec_dot[CS_TYPE_F32](n, &s, x, y);
            check_rel((double)s, (double)r32, a32, TOL_F32_DOT, "dot_f32", k->name, n);
            k->vec_dot[CS_TYPE_F16](n, &s, xh, yh);
            check_rel((double)s, (double)r16, a16, TOL_F16_DOT, "dot_f16", k->name, n);
            k->vec_dot[CS_TYPE_BF16](n, &s, xb, yb);
            check_rel((double)s, (double)rb, ab, TOL_BF16_DOT, "dot_bf16", k->name, n);
            k->vec_dot_f16_f32(n, &s, xh, y);
            check_rel((double)s, (double)rm, am, TOL_F16_DOT, "dot_f16_f32", k->name, n);
        }
        free(x), free(y), free(xh), free(yh), free(xb), free(yb);
    }
}

/* Dequantized double dot of two rows (the oracle of the quantized dots). */
static double qdot_f64(const float *a, const float *b, int64_t n, double *abs_sum) {
    double s = 0, as = 0;
    for (int64_t i = 0; i < n; i++) {
        double p = (double)a[i] * (double)b[i];
        s += p, as += fabs(p);
    }
    *abs_sum = as;
    return s;
}

static void test_kernels_dot_quantized(void **state) {
    (void)state;
    rng_seed(2);
    const kernels_table *ref = kernels_ref();
    for (size_t si = 0; si < sizeof k_qsizes / sizeof k_qsizes[0]; si++) {
        const int64_t n = k_qsizes[si], nb = n / 32;
        float *x = xmalloc((size_t)n * 4), *y = xmalloc((size_t)n * 4);
        float *dx8 = xmalloc((size_t)n * 4), *dx4 = xmalloc((size_t)n * 4);
        float *dy = xmalloc((size_t)n * 4);
        block_q8_0 *x8 = xmalloc((size_t)nb * sizeof *x8), *y8 = xmalloc((size_t)nb * sizeof *y8);
        block_q4_0 *x4 = xmalloc((size_t)nb * sizeof *x4);
        fill(x, n, 1.5f);
        fill(y, n, 4.0f);
        quantize_row(CS_TYPE_Q8_0, x, x8, n);
        quantize_row(CS_TYPE_Q4_0, x, x4, n);
        quantize_row_q8_0_ref(y, y8, n);
        dequantize_row(CS_TYPE_Q8_0, x8, dx8, n);
        dequantize_row(CS_TYPE_Q4_0, x4, dx4, n);
        dequantize_row_q8_0(y8, dy, n);
        double a8, a4;
        double w8 = qdot_f64(dx8, dy, n, &a8), w4 = qdot_f64(dx4, dy, n, &a4);
        float r8, r4;
        ref->vec_dot[CS_TYPE_Q8_0](n, &r8, x8, y8);
        ref->vec_dot[CS_TYPE_Q4_0](n, &r4, x4, y8);
        check_rel((double)r8, w8, a8, TOL_REF_DOT, "ref dot_q8_0", "ref", n);
        check_rel((double)r4, w4, a4, TOL_REF_DOT, "ref dot_q4_0", "ref", n);
        for (size_t ti = 0; ti < N_SIMD; ti++) {
            const kernels_table *k = kernels_by_name(k_simd_names[ti]);
            if (!k) continue;
            float s;
            k->vec_dot[CS_TYPE_Q8_0](n, &s, x8, y8);
            check_rel((double)s, (double)r8, a8, TOL_Q8_0_DOT, "dot_q8_0", k->name, n);
            k->vec_dot[CS_TYPE_Q4_0](n, &s, x4, y8);
            check_rel((double)s, (double)r4, a4, TOL_Q4_0_DOT, "dot_q4_0", k->name, n);
        }
        free(x), free(y), free(dx8), free(dx4), free(dy), free(x8), free(y8), free(x4);
    }
}

/* ----------------------------------------------------- block codecs */

static void test_kernels_quantize_q8_0_ref_rounding(void **state) {
    (void)state;
    /* amax = 127 -> d = 1, id = 1: ties round half to even for the
     * activation quantizer and half away from zero for the weight one. */
    float x[32] = {0};
    x[0] = 127.0f, x[1] = 2.5f, x[2] = -3.5f, x[3] = 0.5f, x[4] = -0.5f, x[5] = 1.5f;
    block_q8_0 a, w;
    quantize_row_q8_0_ref(x, &a, 32);
    quantize_row(CS_TYPE_Q8_0, x, &w, 32);
    assert_int_equal(a.d, 0x3c00); /* 1.0 in f16 */
    assert_int_equal(w.d, 0x3c00);
    const int8_t want_a[6] = {127, 2, -4, 0, 0, 2};
    const int8_t want_w[6] = {127, 3, -4, 1, -1, 2};
    for (int j = 0; j < 6; j++) {
        assert_int_equal(a.qs[j], want_a[j]);
        assert_int_equal(w.qs[j], want_w[j]);
    }
    /* all-zero block: d = 0 and q = 0 */
    float z[32] = {0};
    quantize_row_q8_0_ref(z, &a, 32);
    assert_int_equal(a.d, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(a.qs[j], 0);
}

/* The AVX-VNNI kernels (x16_avxvnni.c) run in this binary's bit-exact
 * tests as "avxvnni" where the CPU has AVX-VNNI, else as "avxvnni_evex"
 * (the same source with EVEX-encoded vpdpbusd) where it has AVX512_VNNI;
 * this says which, and skips (cpu) where neither runs. Both tables are
 * the AVX2 table with the int8 types' x16 tiles replaced. */
static void test_kernels_avxvnni_tables(void **state) {
    (void)state;
    const kernels_table *vex = kernels_by_name("avxvnni");
    const kernels_table *evex = kernels_by_name("avxvnni_evex");
    const kernels_table *avx2 = kernels_by_name("avx2");
    const kernels_table *both[] = {vex, evex};
    for (int i = 0; i < 2; i++) {
        const kernels_table *k = both[i];
        if (!k) continue;
        assert_non_null(avx2);
        for (int32_t ty = 0; ty < CS_TYPE_COUNT; ty++) {
            /* every int8 type's tile is a VNNI one; F16 / BF16 stay */
            const bool vt = avx2->ukernel_x16[ty].tile && ty != CS_TYPE_F16 && ty != CS_TYPE_BF16;
            if (vt)
                assert_ptr_not_equal(k->ukernel_x16[ty].tile, avx2->ukernel_x16[ty].tile);
            else
                assert_ptr_equal(k->ukernel_x16[ty].tile, avx2->ukernel_x16[ty].tile);
            assert_ptr_equal(k->vec_dot[ty], avx2->vec_dot[ty]);
        }
    }
    /* the two encodings are different functions */
    if (vex && evex)
        assert_ptr_not_equal(vex->ukernel_x16[CS_TYPE_Q4_K].tile,
                             evex->ukernel_x16[CS_TYPE_Q4_K].tile);
    if (!vex && !evex)
        test_skip(CS_SKIP_CPU, "no AVX-VNNI and no AVX512_VNNI: the avxvnni kernels did not run");
    if (!vex)
        print_message("avxvnni: this CPU has no AVX-VNNI; its kernels ran as avxvnni_evex "
                      "(EVEX-encoded vpdpbusd, AVX512_VNNI)\n");
}

/* Q8_K activations: every table bit-exact with the reference, including
 * blocks whose largest magnitude appears with both signs (the first one
 * sets the sign of the scale), all zeros, a NaN, huge and tiny values. */
static void test_kernels_quantize_q8_K_bit_exact(void **state) {
    (void)state;
    rng_seed(33);
    const int64_t n = 256 * 12;
    float *x = xmalloc((size_t)n * 4);
    fill(x, n, 10.0f);
    for (int j = 0; j < 256; j++) x[j] = (float)((j % 7) - 3) * 0.5f; /* many ties */
    x[40] = -5.0f, x[41] = 5.0f;                                      /* -5 comes first */
    for (int j = 256; j < 512; j++) x[j] = 0.0f;
    x[512 + 100] = NAN;
    for (int j = 768; j < 1024; j++) x[j] *= 1e30f;
    for (int j = 1024; j < 1280; j++) x[j] *= 1e-30f;
    for (int j = 1280; j < 1536; j++) x[j] = (float)(j - 1408) + 0.5f; /* halves: round to even */
    const size_t bytes = (size_t)(n / 256) * sizeof(block_q8_K);
    uint8_t *r = xmalloc(bytes), *s = xmalloc(bytes);
    memset(r, 0, bytes);
    quantize_row_q8_K_ref(x, (block_q8_K *)(void *)r, n);
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k) continue;
        memset(s, 0, bytes);
        k->from_float[CS_TYPE_Q8_K](x, s, n);
        assert_memory_equal(r, s, bytes);
    }
    free(x), free(r), free(s);
}

static void test_kernels_quantize_q8_0_simd_bit_exact(void **state) {
    (void)state;
    rng_seed(3);
    const int64_t n = 32 * 200;
    float *x = xmalloc((size_t)n * 4);
    fill(x, n, 10.0f);
    /* blocks with exact ties, zeros, a single value, huge and tiny scales */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) + 0.5f;
    x[31] = 127.0f;
    for (int j = 32; j < 64; j++) x[j] = 0.0f;
    for (int j = 64; j < 96; j++) x[j] = j == 70 ? -3.0f : 0.0f;
    for (int j = 96; j < 128; j++) x[j] *= 1e30f;
    for (int j = 128; j < 160; j++) x[j] *= 1e-30f;
    block_q8_0 *r = xmalloc((size_t)n / 32 * sizeof *r), *s = xmalloc((size_t)n / 32 * sizeof *s);
    quantize_row_q8_0_ref(x, r, n);
    for (size_t ti = 0; ti < N_SIMD; ti++) {
        const kernels_table *k = kernels_by_name(k_simd_names[ti]);
        if (!k) continue;
        memset(s, 0xee, (size_t)n / 32 * sizeof *s);
        k->from_float[CS_TYPE_Q8_0](x, s, n);
        assert_memory_equal(r, s, (size_t)n / 32 * sizeof *s);
    }
    /* round trip within half a step of each block */
    float *d = xmalloc((size_t)n * 4);
    dequantize_row_q8_0(r, d, n);
    for (int64_t b = 0; b < n / 32; b++) {
        if (b == 3 || b == 4) continue; /* d overflows / underflows f16 by design */
        float step = fp16_to_fp32(r[b].d);
        for (int j = 0; j < 32; j++) {
            float v = x[b * 32 + j];
            assert_true(fabsf(d[b * 32 + j] - v) <= 0.5f * step + 0.01f * fabsf(v) + 1e-30f);
        }
    }
    free(x), free(r), free(s), free(d);
}

static void test_kernels_quantize_q4_0_ref(void **state) {
    (void)state;
    /* max with sign -8 -> d = 1: values are exact nibbles minus 8 */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)((j % 16) - 8);
    x[0] = -8.0f;
    block_q4_0 b;
    quantize_row_q4_0_ref(x, &b, 32);
    assert_int_equal(b.d, 0x3c00);
    for (int j = 0; j < 16; j++) {
        assert_int_equal(b.qs[j] & 0x0f, (j % 16));      /* element j */
        assert_int_equal(b.qs[j] >> 4, ((j + 16) % 16)); /* element j + 16 */
    }
    float y[32];
    dequantize_row_q4_0(&b, y, 32);
    for (int j = 0; j < 32; j++) assert_true(y[j] == x[j]);
    /* positive max: d = -max/8 < 0, 8.0 maps to 0 and x = -max clamps to 15 */
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    x[3] = 8.0f, x[20] = -8.0f, x[21] = 4.0f;
    quantize_row_q4_0_ref(x, &b, 32);
    assert_true(fp16_to_fp32(b.d) == -1.0f);
    dequantize_row_q4_0(&b, y, 32);
    assert_true(y[3] == 8.0f);
    assert_true(y[20] == -7.0f); /* clamped nibble 15 -> (15-8)*-1 */
    assert_true(y[21] == 4.0f);
    assert_true(y[0] == 0.0f);
    /* random round trip within half a step (plus the clamp at one end) */
    rng_seed(4);
    float r[320], o[320];
    block_q4_0 q[10];
    fill(r, 320, 3.0f);
    quantize_row(CS_TYPE_Q4_0, r, q, 320);
    dequantize_row(CS_TYPE_Q4_0, q, o, 320);
    for (int i = 0; i < 320; i++) {
        float step = fabsf(fp16_to_fp32(q[i / 32].d));
        assert_true(fabsf(o[i] - r[i]) <= step * 1.0f + 1e-3f * fabsf(r[i]));
    }
}

static void test_kernels_quantize_row_float_types(void **state) {
    (void)state;
    rng_seed(5);
    float x[100], y[100];
    uint16_t h[100];
    fill(x, 100, 100.0f);
    quantize_row(CS_TYPE_F32, x, y, 100);
    assert_memory_equal(x, y, sizeof x);
    quantize_row(CS_TYPE_F16, x, h, 100);
    dequantize_row(CS_TYPE_F16, h, y, 100);
    for (int i = 0; i < 100; i++) assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-11f);
    quantize_row(CS_TYPE_BF16, x, h, 100);
    dequantize_row(CS_TYPE_BF16, h, y, 100);
    for (int i = 0; i < 100; i++) assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f);
}

/* ------------------------------------------------- f16 / bf16 rows */

static bool f32_isnan_bits(uint32_t b) {
    return (b & 0x7fffffffu) > 0x7f800000u;
}

static void test_kernels_fp16_all_halfs(void **state) {
    (void)state;
    uint16_t *h = xmalloc(65536 * 2), *back = xmalloc(65536 * 2);
    float *f = xmalloc(65536 * 4);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k) continue;
        /* odd length leaves a scalar tail in every table */
        k->fp16_to_fp32_row(h, f, 65535);
        f[65535] = fp16_to_fp32(65535);
        k->from_float[CS_TYPE_F16](f, back, 65535);
        for (int i = 0; i < 65535; i++) {
            float want = fp16_to_fp32(h[i]);
            uint32_t gb, wb;
            memcpy(&gb, &f[i], 4);
            memcpy(&wb, &want, 4);
            bool nan = (i & 0x7c00) == 0x7c00 && (i & 0x3ff);
            if (nan) {
                assert_true(f32_isnan_bits(gb));
                assert_true((back[i] & 0x7c00) == 0x7c00 && (back[i] & 0x3ff));
            } else {
                assert_int_equal(gb, wb);
                assert_int_equal(back[i], h[i]); /* exact round trip */
            }
        }
    }
    /* f32 -> f16 rounding: random floats and exact midpoints between halfs */
    rng_seed(6);
    const int64_t n = 4099;
    float *x = xmalloc((size_t)n * 4);
    uint16_t *r = xmalloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        if (i % 3 == 0) {
            uint16_t a = (uint16_t)(rng_next() & 0x7bff); /* finite */
            float lo = fp16_to_fp32(a), hi = fp16_to_fp32((uint16_t)(a + 1));
            x[i] = (float)(((double)lo + (double)hi) / 2) * (i % 2 ? -1.0f : 1.0f);
        } else {
            x[i] = rng_f() * (float)ldexp(1.0, (int)(rng_next() % 40) - 26);
        }
    }
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k) continue;
        k->from_float[CS_TYPE_F16](x, r, n);
        for (int64_t i = 0; i < n; i++) assert_int_equal(r[i], fp32_to_fp16(x[i]));
    }
    free(h), free(back), free(f), free(x), free(r);
}

static void test_kernels_bf16_rows(void **state) {
    (void)state;
    rng_seed(7);
    const int64_t n = 1001;
    float *x = xmalloc((size_t)n * 4);
    uint16_t *r = xmalloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)rng_next();
        if (i % 5 == 0) b = (b & 0xffff0000u) | 0x8000u;          /* exact tie */
        if (i % 7 == 0) b = 0x7f800000u | (b & 0x807fffffu) | 1u; /* NaN */
        if (i == 3) b = 0x7f800000u;                              /* inf */
        if (i == 4) b = 0x7f7fffffu;                              /* rounds to inf */
        memcpy(&x[i], &b, 4);
    }
    /* independent expectations for a few values */
    float one_tie;
    uint32_t tb = 0x3f808000u; /* 1.00390625: tie between 0x3f80 and 0x3f81 -> even 0x3f80 */
    memcpy(&one_tie, &tb, 4);
    assert_int_equal(fp32_to_bf16(one_tie), 0x3f80);
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k) continue;
        k->from_float[CS_TYPE_BF16](x, r, n);
        for (int64_t i = 0; i < n; i++) assert_int_equal(r[i], fp32_to_bf16(x[i]));
        assert_int_equal(r[3], 0x7f80);
        assert_int_equal(r[4], 0x7f80);
        k->from_float[CS_TYPE_BF16](&one_tie, r, 1);
        assert_int_equal(r[0], 0x3f80);
    }
    free(x), free(r);
}

/* ------------------------------------------------ gathered attention */

/* attn_scores_f16 / attn_accum_f16 for 1..KERNELS_ATTN_MQ queries over
 * gathered rows (a shuffled index, a row stride wider than the head) equal
 * the table's vec_dot_f16 + scale and the f16-rounded axpy_f16 loops bit for
 * bit, for head dims on the fast paths (64, 128, 256, 16, 96) and off them
 * (8, 40), cell counts around the 16-cell groups. forward.c groups the
 * queries of consecutive tokens through these kernels, so this is what
 * keeps the grouping from changing any logit. */
static void test_kernels_attn_gathered(void **state) {
    (void)state;
    rng_seed(21);
    const int64_t hds[] = {64, 128, 256, 16, 96, 8, 40};
    const int32_t ns[] = {1, 15, 16, 17, 40};
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k || !k->attn_scores_f16) continue;
        assert_non_null(k->attn_accum_f16);
        for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
            const int64_t hd = hds[hi];
            const int32_t n_rows = 48;
            const size_t stride = (size_t)(hd + 24) * 2; /* the head is inside a wider row */
            uint8_t *base = xmalloc(stride * (size_t)n_rows);
            for (int32_t r = 0; r < n_rows; r++)
                for (int64_t i = 0; i < hd + 24; i++)
                    ((uint16_t *)(void *)(base + stride * (size_t)r))[i] =
                        fp32_to_fp16(2.0f * rng_f() - 1.0f);
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int32_t n = ns[ni];
                int32_t idx[48];
                for (int32_t j = 0; j < n; j++) idx[j] = (j * 29 + 7) % n_rows;
                for (int32_t nq = 1; nq <= KERNELS_ATTN_MQ; nq++) {
                    uint16_t q[KERNELS_ATTN_MQ][256];
                    float s[KERNELS_ATTN_MQ][48], w[KERNELS_ATTN_MQ][48];
                    float out[KERNELS_ATTN_MQ][256], want[KERNELS_ATTN_MQ][256];
                    const uint16_t *qp[KERNELS_ATTN_MQ];
                    float *sp[KERNELS_ATTN_MQ], *op[KERNELS_ATTN_MQ];
                    const float *wp[KERNELS_ATTN_MQ];
                    for (int32_t g = 0; g < nq; g++) {
                        for (int64_t i = 0; i < hd; i++)
                            q[g][i] = fp32_to_fp16(4.0f * rng_f() - 2.0f);
                        for (int32_t j = 0; j < n; j++) w[g][j] = rng_f() / (float)n;
                        for (int64_t i = 0; i < hd; i++) out[g][i] = want[g][i] = rng_f();
                        qp[g] = q[g], sp[g] = s[g], op[g] = out[g], wp[g] = w[g];
                    }
                    const float scale = 0.125f;
                    k->attn_scores_f16(hd, n, base + 6, stride, idx, nq, qp, scale, sp);
                    k->attn_accum_f16(hd, n, base + 6, stride, idx, nq, wp, op);
                    for (int32_t g = 0; g < nq; g++) {
                        for (int32_t j = 0; j < n; j++) {
                            float d;
                            k->vec_dot[CS_TYPE_F16](
                                hd, &d,
                                (const uint16_t *)(const void *)(base + 6 +
                                                                 stride * (size_t)idx[j]),
                                q[g]);
                            const float e = d * scale;
                            if (memcmp(&e, &s[g][j], sizeof e) != 0)
                                fail_msg("%s attn_scores_f16 hd %lld n %d nq %d: query %d cell %d: "
                                         "%.9g, want %.9g",
                                         k->name, (long long)hd, n, nq, g, j, (double)s[g][j],
                                         (double)e);
                            k->axpy_f16(hd, fp16_to_fp32(fp32_to_fp16(w[g][j])),
                                        (const uint16_t *)(const void *)(base + 6 +
                                                                         stride * (size_t)idx[j]),
                                        want[g]);
                        }
                        assert_memory_equal(out[g], want[g], (size_t)hd * sizeof(float));
                    }
                }
            }
            free(base);
        }
    }
}

/* attn_kt_f16 + attn_scores_kt_f16 equal attn_scores_f16 over the same
 * gathered cells bit for bit, for every head dim they take, 1 ..
 * KERNELS_ATTN_MQ queries, and cell ranges [j0, j1) that start and end
 * inside blocks, at block edges and in the zero-padded last block. Rows
 * hold values of both signs, exact zeros and large magnitudes, so any
 * change of pairing or sign of zero shows. forward.c switches to these
 * kernels for prompts, so this keeps that switch from changing a logit. */
static void test_kernels_attn_kt(void **state) {
    (void)state;
    rng_seed(22);
    const int64_t hds[] = {64, 128, 192, 256};
    const int32_t ns[] = {1, 15, 16, 17, 40, 48};
    int checked = 0;
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k || !k->attn_kt_f16) continue;
        assert_non_null(k->attn_scores_kt_f16);
        assert_non_null(k->attn_scores_f16);
        for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
            const int64_t hd = hds[hi];
            assert_true(KERNELS_ATTN_KT_HD(hd));
            const int32_t n_rows = 48;
            const size_t stride = (size_t)(hd + 24) * 2;
            uint8_t *base = xmalloc(stride * (size_t)n_rows);
            for (int32_t r = 0; r < n_rows; r++)
                for (int64_t i = 0; i < hd + 24; i++) {
                    const float u = rng_f();
                    const float v = u < 0.05f  ? 0.0f
                                    : u < 0.1f ? 3000.0f * (rng_f() - 0.5f)
                                               : 2.0f * rng_f() - 1.0f;
                    ((uint16_t *)(void *)(base + stride * (size_t)r))[i] = fp32_to_fp16(v);
                }
            float *kt = mem_aligned_alloc((size_t)n_rows * (size_t)hd * sizeof(float));
            assert_non_null(kt);
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int32_t n = ns[ni];
                int32_t idx[48];
                for (int32_t j = 0; j < n; j++) idx[j] = (j * 29 + 7) % n_rows;
                k->attn_kt_f16(hd, n, base + 6, stride, idx, kt);
                /* the padding cells of the last block are zeros */
                for (int32_t j = n; j < (n + 15) / 16 * 16; j++)
                    for (int64_t i = 0; i < hd; i++)
                        assert_true(kt[((size_t)(j / 16) * hd + i) * 16 + j % 16] == 0.0f);
                const int32_t ranges[][2] = {{0, n}, {n / 3, n}, {n / 2, n / 2 + 1}, {n - 1, n}};
                for (int32_t nq = 1; nq <= KERNELS_ATTN_MQ; nq++) {
                    uint16_t q[KERNELS_ATTN_MQ][256];
                    float want[KERNELS_ATTN_MQ][48], got[KERNELS_ATTN_MQ][48];
                    const uint16_t *qp[KERNELS_ATTN_MQ];
                    float *wp[KERNELS_ATTN_MQ], *gp[KERNELS_ATTN_MQ];
                    for (int32_t g = 0; g < nq; g++) {
                        for (int64_t i = 0; i < hd; i++)
                            q[g][i] = fp32_to_fp16(i % 7 == 3 ? 0.0f : 4.0f * rng_f() - 2.0f);
                        qp[g] = q[g], wp[g] = want[g], gp[g] = got[g];
                    }
                    const float scale = 0.0883883476f;
                    k->attn_scores_f16(hd, n, base + 6, stride, idx, nq, qp, scale, wp);
                    for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
                        const int32_t j0 = ranges[ri][0], j1 = ranges[ri][1];
                        for (int32_t g = 0; g < nq; g++)
                            for (int32_t j = 0; j < 48; j++) got[g][j] = -7.0f; /* sentinel */
                        k->attn_scores_kt_f16(hd, j0, j1, kt, nq, qp, scale, gp);
                        for (int32_t g = 0; g < nq; g++)
                            for (int32_t j = 0; j < 48; j++) {
                                const bool in = j >= j0 && j < j1;
                                if (in ? memcmp(&got[g][j], &want[g][j], sizeof(float)) != 0
                                       : got[g][j] != -7.0f)
                                    fail_msg("%s attn_scores_kt_f16 hd %lld n %d [%d, %d) nq %d: "
                                             "query %d cell %d: %.9g, want %.9g",
                                             k->name, (long long)hd, n, j0, j1, nq, g, j,
                                             (double)got[g][j], in ? (double)want[g][j] : -7.0);
                                checked += in;
                            }
                    }
                }
            }
            mem_free(kt);
            free(base);
        }
    }
    /* a CPU without AVX-512 has no table with these kernels: say so */
    if (checked == 0) test_skip(CS_SKIP_CPU, "no kernel table with attn_kt_f16 (AVX-512)");
}

/* ------------------------------------------------------- element-wise */

static void test_kernels_axpy(void **state) {
    (void)state;
    rng_seed(8);
    for (size_t si = 0; si < sizeof k_sizes / sizeof k_sizes[0]; si++) {
        const int64_t n = k_sizes[si];
        float *x = xmalloc((size_t)n * 4), *y0 = xmalloc((size_t)n * 4),
              *y = xmalloc((size_t)n * 4);
        uint16_t *xh = xmalloc((size_t)n * 2);
        fill(x, n, 2.0f);
        fill(y0, n, 2.0f);
        for (int64_t i = 0; i < n; i++) xh[i] = fp32_to_fp16(x[i]);
        const float a = 0.7f;
        for (size_t ti = 0; ti < N_ALL; ti++) {
            const kernels_table *k = kernels_by_name(k_all_names[ti]);
            if (!k) continue;
            memcpy(y, y0, (size_t)n * 4);
            k->axpy_f32(n, a, x, y);
            for (int64_t i = 0; i < n; i++) {
                double want = (double)y0[i] + (double)a * (double)x[i];
                check_rel((double)y[i], want, fabs((double)y0[i]) + fabs((double)a * (double)x[i]),
                          TOL_AXPY, "axpy_f32", k->name, n);
            }
            memcpy(y, y0, (size_t)n * 4);
            k->axpy_f16(n, a, xh, y);
            for (int64_t i = 0; i < n; i++) {
                double xv = (double)fp16_to_fp32(xh[i]);
                double want = (double)y0[i] + (double)a * xv;
                check_rel((double)y[i], want, fabs((double)y0[i]) + fabs((double)a * xv), TOL_AXPY,
                          "axpy_f16", k->name, n);
            }
        }
        free(x), free(y0), free(y), free(xh);
    }
}

static void test_kernels_rmsnorm(void **state) {
    (void)state;
    rng_seed(9);
    const float eps = 1e-5f;
    for (size_t si = 0; si < sizeof k_sizes / sizeof k_sizes[0]; si++) {
        const int64_t n = k_sizes[si];
        float *x = xmalloc((size_t)n * 4), *w = xmalloc((size_t)n * 4), *o = xmalloc((size_t)n * 4);
        float *r = xmalloc((size_t)n * 4);
        fill(x, n, 3.0f);
        fill(w, n, 1.5f);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
        const double scale = 1.0 / sqrt(ss / (double)n + (double)eps);
        kernels_ref()->rmsnorm(r, x, w, n, eps);
        for (size_t ti = 0; ti < N_ALL; ti++) {
            const kernels_table *k = kernels_by_name(k_all_names[ti]);
            if (!k) continue;
            k->rmsnorm(o, x, w, n, eps);
            for (int64_t i = 0; i < n; i++) {
                double want = (double)x[i] * scale * (double)w[i];
                check_rel((double)o[i], want, fabs(want), TOL_RMSNORM, "rmsnorm", k->name, n);
                /* same float scale, same two multiplies: equal to ref */
                check_rel((double)o[i], (double)r[i], fabs((double)r[i]), 1e-6, "rmsnorm vs ref",
                          k->name, n);
            }
            memcpy(o, x, (size_t)n * 4); /* in place */
            k->rmsnorm(o, o, w, n, eps);
            for (int64_t i = 0; i < n; i++)
                check_rel((double)o[i], (double)r[i], fabs((double)r[i]), 1e-6, "rmsnorm in place",
                          k->name, n);
        }
        free(x), free(w), free(o), free(r);
    }
}

static void test_kernels_softmax(void **state) {
    (void)state;
    rng_seed(10);
    for (size_t si = 0; si < sizeof k_sizes / sizeof k_sizes[0]; si++) {
        const int64_t n = k_sizes[si];
        float *x = xmalloc((size_t)n * 4), *o = xmalloc((size_t)n * 4);
        double *want = xmalloc((size_t)n * sizeof(double));
        fill(x, n, 20.0f);
        for (int64_t i = 0; i < n; i++)
            if (n > 1 && i % 3 == 1) x[i] = -INFINITY; /* masked */
        double max = (double)-INFINITY, sum = 0;
        for (int64_t i = 0; i < n; i++) max = (double)x[i] > max ? (double)x[i] : max;
        for (int64_t i = 0; i < n; i++) sum += want[i] = exp((double)x[i] - max);
        for (int64_t i = 0; i < n; i++) want[i] /= sum;
        for (size_t ti = 0; ti < N_ALL; ti++) {
            const kernels_table *k = kernels_by_name(k_all_names[ti]);
            if (!k) continue;
            memcpy(o, x, (size_t)n * 4);
            k->softmax(o, n);
            double total = 0;
            for (int64_t i = 0; i < n; i++) {
                if (isinf(x[i])) assert_true(o[i] == 0.0f);
                check_rel((double)o[i], want[i], 1.0, TOL_SOFTMAX, "softmax", k->name, n);
                total += (double)o[i];
            }
            check_rel(total, 1.0, 1.0, 1e-5, "softmax sum", k->name, n);
        }
        free(x), free(o), free(want);
    }
}

static void test_kernels_swiglu(void **state) {
    (void)state;
    rng_seed(11);
    for (size_t si = 0; si < sizeof k_sizes / sizeof k_sizes[0]; si++) {
        const int64_t n = k_sizes[si];
        float *g = xmalloc((size_t)n * 4), *u = xmalloc((size_t)n * 4), *o = xmalloc((size_t)n * 4);
        fill(g, n, 12.0f);
        fill(u, n, 2.0f);
        for (size_t ti = 0; ti < N_ALL; ti++) {
            const kernels_table *k = kernels_by_name(k_all_names[ti]);
            if (!k) continue;
            k->swiglu(o, g, u, n);
            for (int64_t i = 0; i < n; i++) {
                double v = (double)g[i];
                double want = v / (1.0 + exp(-v)) * (double)u[i];
                check_rel((double)o[i], want, fabs(want) + 1e-30, TOL_SWIGLU, "swiglu", k->name, n);
            }
            float *a = xmalloc((size_t)n * 4); /* out aliases g */
            memcpy(a, g, (size_t)n * 4);
            k->swiglu(a, a, u, n);
            assert_memory_equal(a, o, (size_t)n * 4);
            free(a);
        }
        free(g), free(u), free(o);
    }
}

/* --------------------------------------------------------------- rope */

static kernels_rope_params rope_params(int32_t n_rot, int32_t mode) {
    return (kernels_rope_params){.n_rot = n_rot,
                                 .mode = mode,
                                 .freq_base = 10000.0f,
                                 .freq_scale = 1.0f,
                                 .ext_factor = 0.0f,
                                 .attn_factor = 1.0f,
                                 .beta_fast = 32.0f,
                                 .beta_slow = 1.0f,
                                 .n_ctx_orig = 4096};
}

/* float64 rotation of one head by the exact angles pos * base^(-2k/n_rot). */
static void rope_f64(const float *in, double *out, int64_t head_dim, int32_t n_rot, int32_t mode,
                     double pos, double base) {
    for (int64_t i = 0; i < head_dim; i++) out[i] = (double)in[i];
    const int32_t half = n_rot / 2;
    for (int32_t k = 0; k < half; k++) {
        double th = pos * pow(base, -2.0 * k / n_rot);
        int64_t ia = mode == CS_ROPE_NEOX ? k : 2 * k,
                ib = mode == CS_ROPE_NEOX ? k + half : 2 * k + 1;
        double a = (double)in[ia], b = (double)in[ib];
        out[ia] = a * cos(th) - b * sin(th);
        out[ib] = a * sin(th) + b * cos(th);
    }
}

static void test_kernels_rope_vs_f64_and_ref(void **state) {
    (void)state;
    rng_seed(12);
    const int32_t modes[2] = {CS_ROPE_NORM, CS_ROPE_NEOX};
    const int64_t dims[3][2] = {{64, 64}, {128, 96}, {80, 34}}; /* head_dim, n_rot */
    const int64_t n_head = 3;
    for (int mi = 0; mi < 2; mi++) {
        for (int di = 0; di < 3; di++) {
            const int64_t hd = dims[di][0];
            const int32_t n_rot = (int32_t)dims[di][1];
            kernels_rope_params p = rope_params(n_rot, modes[mi]);
            float *x = xmalloc((size_t)(n_head * hd) * 4), *r = xmalloc((size_t)(n_head * hd) * 4);
            float *o = xmalloc((size_t)(n_head * hd) * 4), *cs = xmalloc((size_t)n_rot * 4);
            double *want = xmalloc((size_t)hd * sizeof(double));
            for (int pos = 0; pos < 256; pos += 37) {
                fill(x, n_head * hd, 1.0f);
                kernels_rope_cache(cs, (float)pos, &p);
                memcpy(r, x, (size_t)(n_head * hd) * 4);
                kernels_ref()->rope(r, n_head, hd, n_rot, modes[mi], cs);
                for (int64_t h = 0; h < n_head; h++) {
                    rope_f64(x + h * hd, want, hd, n_rot, modes[mi], pos, 10000.0);
                    for (int64_t i = 0; i < hd; i++) {
                        if (i >= n_rot) assert_true(r[h * hd + i] == x[h * hd + i]); /* untouched */
                        check_rel((double)r[h * hd + i], want[i], 1.0, TOL_ROPE_F64, "rope vs f64",
                                  "ref", n_rot);
                    }
                }
                for (size_t ti = 0; ti < N_SIMD; ti++) {
                    const kernels_table *k = kernels_by_name(k_simd_names[ti]);
                    if (!k) continue;
                    memcpy(o, x, (size_t)(n_head * hd) * 4);
                    k->rope(o, n_head, hd, n_rot, modes[mi], cs);
                    /* same multiplies and add/sub as ref: bit-exact */
                    assert_memory_equal(o, r, (size_t)(n_head * hd) * 4);
                }
            }
            free(x), free(r), free(o), free(cs), free(want);
        }
    }
}

static void test_kernels_rope_composition(void **state) {
    (void)state;
    rng_seed(13);
    const int64_t hd = 64;
    const int32_t n_rot = 64;
    const float pd[][2] = {{0, 5}, {17, 100}, {300, -120}, {1000, 24}, {4000, -3999}, {250, 0}};
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k) continue;
        for (int mi = 0; mi < 2; mi++) {
            const int32_t mode = mi ? CS_ROPE_NEOX : CS_ROPE_NORM;
            kernels_rope_params p = rope_params(n_rot, mode);
            for (size_t c = 0; c < sizeof pd / sizeof pd[0]; c++) {
                float x[64], a[64], b[64], cs[64];
                fill(x, hd, 1.0f);
                memcpy(a, x, sizeof x);
                memcpy(b, x, sizeof x);
                kernels_rope_cache(cs, pd[c][0], &p);
                k->rope(a, 1, hd, n_rot, mode, cs);
                kernels_rope_cache(cs, pd[c][1], &p);
                k->rope(a, 1, hd, n_rot, mode, cs);
                kernels_rope_cache(cs, pd[c][0] + pd[c][1], &p);
                k->rope(b, 1, hd, n_rot, mode, cs);
                for (int i = 0; i < hd; i++)
                    check_rel((double)a[i], (double)b[i], 1.0, TOL_ROPE_COMPOSE, "rope compose",
                              k->name, (int64_t)c);
            }
        }
    }
}

/* YaRN: the cache against a double transcription of ggml's formulas. */
static void test_kernels_rope_cache_yarn(void **state) {
    (void)state;
    kernels_rope_params p = rope_params(64, CS_ROPE_NEOX);
    p.freq_scale = 0.25f;
    p.ext_factor = 1.0f;
    p.attn_factor = 1.0f;
    p.n_ctx_orig = 2048;
    float cs[64];
    const float pos = 77.0f;
    kernels_rope_cache(cs, pos, &p);
    const double base = 10000.0, n = 64;
    double lo = floor(n * log(2048.0 / (32.0 * 2 * PI_F64)) / (2 * log(base)));
    double hi = ceil(n * log(2048.0 / (1.0 * 2 * PI_F64)) / (2 * log(base)));
    lo = lo < 0 ? 0 : lo;
    hi = hi > n - 1 ? n - 1 : hi;
    const double mscale = 1.0 + 0.1 * log(1.0 / 0.25);
    for (int k = 0; k < 32; k++) {
        double extrap = (double)pos * pow(base, -2.0 * k / n);
        double y = (k - lo) / (hi - lo > 0.001 ? hi - lo : 0.001);
        double ramp = 1.0 - (y < 0 ? 0 : y > 1 ? 1 : y);
        double th = 0.25 * extrap * (1 - ramp) + extrap * ramp;
        check_rel((double)cs[2 * k], cos(th) * mscale, 1.0, 1e-4, "yarn cos", "ref", k);
        check_rel((double)cs[2 * k + 1], sin(th) * mscale, 1.0, 1e-4, "yarn sin", "ref", k);
    }
    /* plain linear scaling: theta = freq_scale * pos * base^(-2k/n) */
    p.ext_factor = 0.0f;
    p.attn_factor = 2.0f;
    kernels_rope_cache(cs, pos, &p);
    for (int k = 0; k < 32; k++) {
        double th = 0.25 * (double)pos * pow(base, -2.0 * k / n);
        check_rel((double)cs[2 * k], 2 * cos(th), 2.0, 1e-4, "linear cos", "ref", k);
        check_rel((double)cs[2 * k + 1], 2 * sin(th), 2.0, 1e-4, "linear sin", "ref", k);
    }
}

/* ------------------------------------------------------------- matmul */

/* The activation rows as the kernels see them (after conversion). */
static void convert_x_f64(int32_t wtype, const float *x, int64_t K, double *out) {
    float *tmp = xmalloc((size_t)K * 4);
    if (wtype == CS_TYPE_F32) {
        memcpy(tmp, x, (size_t)K * 4);
    } else if (wtype == CS_TYPE_F16 || wtype == CS_TYPE_BF16) {
        uint16_t *h = xmalloc((size_t)K * 2);
        quantize_row(wtype, x, h, K);
        dequantize_row(wtype, h, tmp, K);
        free(h);
    } else {
        block_q8_0 *q = xmalloc((size_t)(K / 32) * sizeof *q);
        quantize_row_q8_0_ref(x, q, K);
        dequantize_row_q8_0(q, tmp, K);
        free(q);
    }
    for (int64_t i = 0; i < K; i++) out[i] = (double)tmp[i];
    free(tmp);
}

static void check_matmul_case(int32_t wtype, int64_t N, int64_t K, int64_t T,
                              threadpool *const tps[3]) {
    uint64_t rb = 0;
    assert_true(type_row_size(wtype, K, &rb));
    float *wf = xmalloc((size_t)(N * K) * 4), *x = xmalloc((size_t)(T * K) * 4);
    fill(wf, N * K, 1.0f);
    fill(x, T * K, 2.0f);
    uint8_t *W = xmalloc((size_t)rb * (size_t)N);
    for (int64_t n = 0; n < N; n++) quantize_row(wtype, wf + n * K, W + (size_t)n * rb, K);
    double *wd = xmalloc((size_t)(N * K) * sizeof(double)), *xd = xmalloc((size_t)(T * K) * 8);
    float *tmp = xmalloc((size_t)K * 4);
    for (int64_t n = 0; n < N; n++) {
        dequantize_row(wtype, W + (size_t)n * rb, tmp, K);
        for (int64_t i = 0; i < K; i++) wd[n * K + i] = (double)tmp[i];
    }
    for (int64_t t = 0; t < T; t++) convert_x_f64(wtype, x + t * K, K, xd + t * K);
    size_t ss = matmul_scratch_size(wtype, K, T);
    assert_true(ss >= 64);
    void *scratch = xmalloc(ss);
    float *y[3], *y1 = xmalloc((size_t)(N * T) * 4);
    for (int i = 0; i < 3; i++) y[i] = xmalloc((size_t)(N * T) * 4);
    for (size_t ti = 0; ti < N_ALL; ti++) {
        const kernels_table *k = kernels_by_name(k_all_names[ti]);
        if (!k) continue;
        for (int i = 0; i < 3; i++) {
            memset(y[i], 0xff, (size_t)(N * T) * 4);
            matmul(k, tps[i], wtype, CS_LAYOUT_ROWS, W, N, K, x, T, y[i], scratch);
        }
        for (int64_t t = 0; t < T; t++) {
            for (int64_t n = 0; n < N; n++) {
                double s = 0, a = 0;
                for (int64_t i = 0; i < K; i++) {
                    double p = wd[n * K + i] * xd[t * K + i];
                    s += p, a += fabs(p);
                }
                char what[64];
                snprintf(what, sizeof what, "matmul %s N=%lld T=%lld", cs_type_name(wtype),
                         (long long)N, (long long)T);
                check_rel((double)y[0][t * N + n], s, a, TOL_MATMUL, what, k->name, K);
            }
        }
        /* 1, 2, 3 threads: bit-identical */
        assert_memory_equal(y[0], y[1], (size_t)(N * T) * 4);
        assert_memory_equal(y[0], y[2], (size_t)(N * T) * 4);
        /* a token alone gives the same row as inside the batch */
        for (int64_t t = 0; t<T; t += T> 1 ? T - 1 : 1) {
            matmul(k, NULL, wtype, CS_LAYOUT_ROWS, W, N, K, x + t * K, 1, y1, scratch);
            assert_memory_equal(y1, y[0] + t * N, (size_t)N * 4);
        }
    }
    free(wf), free(x), free(W), free(wd), free(xd), free(tmp), free(scratch), free(y1);
    for (int i = 0; i < 3; i++) free(y[i]);
}

static void test_kernels_matmul(void **state) {
    (void)state;
    rng_seed(14);
    threadpool *tps[3] = {NULL, NULL, NULL};
    assert_int_equal(threadpool_new(1, &tps[0]), CS_OK);
    assert_int_equal(threadpool_new(2, &tps[1]), CS_OK);
    assert_int_equal(threadpool_new(3, &tps[2]), CS_OK);
    const int32_t types[] = {CS_TYPE_F32, CS_TYPE_F16, CS_TYPE_BF16, CS_TYPE_Q8_0, CS_TYPE_Q4_0};
    const int64_t Ks[] = {64, 96, 172, 768, 2048}; /* 96: odd block count */
    const int64_t Ts[] = {1, 5, 33};
    const int64_t Ns[] = {1, 3, 8, 13, 97};
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
            if (Ks[ki] % 32 && types[ty] != CS_TYPE_F32) continue;
            for (size_t tt = 0; tt < sizeof Ts / sizeof Ts[0]; tt++) {
                for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
                    /* keep the big K cases small in N*T so the test stays fast */
                    if (Ks[ki] == 2048 && Ns[ni] * Ts[tt] > 300) continue;
                    check_matmul_case(types[ty], Ns[ni], Ks[ki], Ts[tt], tps);
                }
            }
        }
    }
    for (int i = 0; i < 3; i++) threadpool_free(tps[i]);
}

/* Enough tokens that the conversion itself runs on the pool. */
static void test_kernels_matmul_threaded_conversion(void **state) {
    (void)state;
    rng_seed(15);
    threadpool *tps[3] = {NULL, NULL, NULL};
    assert_int_equal(threadpool_new(1, &tps[0]), CS_OK);
    assert_int_equal(threadpool_new(2, &tps[1]), CS_OK);
    assert_int_equal(threadpool_new(3, &tps[2]), CS_OK);
    check_matmul_case(CS_TYPE_Q4_0, 40, 256, 70, tps);
    check_matmul_case(CS_TYPE_F16, 21, 256, 70, tps);
    for (int i = 0; i < 3; i++) threadpool_free(tps[i]);
}

/* The VNNI and non-VNNI AVX-512 micro-kernels produce the same int32 lane
 * sums, so their results must be bit-identical, tile and column paths. */
static void test_kernels_matmul_vnni_matches_fallback(void **state) {
    (void)state;
    const kernels_table *kv = kernels_by_name("avx512"), *kn = kernels_by_name("avx512novnni");
    if (!kv || !kn) {
        test_skip(CS_SKIP_CPU, "this CPU lacks AVX-512 (VNNI and non-VNNI kernels)");
        return;
    }
    rng_seed(16);
    const int32_t types[] = {CS_TYPE_Q8_0, CS_TYPE_Q4_0};
    const int64_t N = 37, K = 800, T = 9; /* 25 blocks: odd count */
    float *wf = xmalloc((size_t)(N * K) * 4), *x = xmalloc((size_t)(T * K) * 4);
    float *ya = xmalloc((size_t)(N * T) * 4), *yb = xmalloc((size_t)(N * T) * 4);
    uint8_t *W = xmalloc((size_t)(N * K) * 2);
    void *scratch = xmalloc(matmul_scratch_size(CS_TYPE_Q8_0, K, T));
    fill(wf, N * K, 1.0f);
    fill(x, T * K, 3.0f);
    for (size_t ty = 0; ty < 2; ty++) {
        uint64_t rb = 0;
        assert_true(type_row_size(types[ty], K, &rb));
        for (int64_t n = 0; n < N; n++) quantize_row(types[ty], wf + n * K, W + n * rb, K);
        for (int64_t t = 1; t <= T; t += T - 1) {
            matmul(kv, NULL, types[ty], CS_LAYOUT_ROWS, W, N, K, x, t, ya, scratch);
            matmul(kn, NULL, types[ty], CS_LAYOUT_ROWS, W, N, K, x, t, yb, scratch);
            assert_memory_equal(ya, yb, (size_t)(N * t) * 4);
        }
    }
    free(wf), free(x), free(ya), free(yb), free(W), free(scratch);
}

/* The AVX512_BF16 path (bf16_avx512.c): random bf16 rows in three
 * regimes, ordinary (|x| <= 4), a wide exponent range (2^-140 .. 2^50:
 * bf16 subnormals, products below FLT_MIN for DAZ/FTZ, big cancellations)
 * and signed zeros; the "avx512" table's vec_dot and its tile and column
 * micro-kernels through matmul must equal vec_dot_bf16_dp_ref (the
 * scalar emulation of vdpbf16ps) bit for bit. Measured on Zen 4: 0
 * mismatches in all regimes. The scalar emulation itself must agree with
 * the reference table's double-sum BF16 dot within float accumulation
 * (TOL_BF16_DOT of sum|x*y|, ordinary regime), on every CPU. */
static float bf16_wide(void) {
    const double m = (double)rng_f();
    const int e = (int)(rng_next() % 191) - 140; /* 2^-140 .. 2^50: no overflow */
    return (float)ldexp(m, e);
}

static void bf16_dp_rows(uint16_t *x, int64_t n, int regime) {
    for (int64_t i = 0; i < n; i++) {
        float v = regime == 0 ? rng_f() * 4.0f : bf16_wide();
        if (regime == 2 && rng_next() % 3 == 0) v = rng_next() % 2 ? 0.0f : -0.0f;
        x[i] = fp32_to_bf16(v);
    }
}

static void test_kernels_bf16_dp(void **state) {
    (void)state;
    rng_seed(18);
    const kernels_table *ref = kernels_ref(), *kb = kernels_by_name("avx512");
#if defined(__x86_64__) || defined(__i386__)
    const bool have = kb && kernels_cpu_has_avx512bf16();
#else
    const bool have = false;
#endif
    const int64_t sizes[] = {1, 2, 7, 31, 32, 33, 63, 100, 1000, 4096};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int64_t n = sizes[si];
        uint16_t *x = xmalloc((size_t)n * 2), *y = xmalloc((size_t)n * 2);
        for (int regime = 0; regime < 3; regime++) {
            for (int rep = 0; rep < 20; rep++) {
                bf16_dp_rows(x, n, regime);
                bf16_dp_rows(y, n, regime);
                float want, got, rd;
                vec_dot_bf16_dp_ref(n, &want, x, y);
                if (regime == 0) {
                    double a = 0;
                    for (int64_t i = 0; i < n; i++)
                        a += fabs((double)bf16_to_fp32(x[i]) * (double)bf16_to_fp32(y[i]));
                    ref->vec_dot[CS_TYPE_BF16](n, &rd, x, y);
                    check_rel((double)want, (double)rd, a, TOL_BF16_DOT, "dp_ref vs ref bf16",
                              "ref", n);
                }
                if (!have) continue;
                kb->vec_dot[CS_TYPE_BF16](n, &got, x, y);
                if (memcmp(&got, &want, 4) != 0) {
                    print_error("bf16 dp n=%lld regime %d: got %a want %a\n", (long long)n, regime,
                                (double)got, (double)want);
                    fail();
                }
            }
        }
        free(x), free(y);
    }
    if (!have) {
        test_skip(CS_SKIP_CPU, "this CPU lacks AVX512_BF16 (the scalar emulation was checked)");
        return;
    }
    /* matmul: tile (T = 9) and column (T = 1) micro-kernels, K with a tail */
    const int64_t N = 13, Ks[] = {800, 96, 48}, T = 9;
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        const int64_t K = Ks[ki];
        uint16_t *W = xmalloc((size_t)(N * K) * 2), *xb = xmalloc((size_t)(T * K) * 2);
        float *x = xmalloc((size_t)(T * K) * 4), *yv = xmalloc((size_t)(N * T) * 4);
        void *scratch = xmalloc(matmul_scratch_size(CS_TYPE_BF16, K, T));
        bf16_dp_rows(W, N * K, 0);
        fill(x, T * K, 3.0f);
        for (int64_t i = 0; i < T * K; i++) xb[i] = fp32_to_bf16(x[i]);
        for (int64_t t = 1; t <= T; t += T - 1) {
            matmul(kb, NULL, CS_TYPE_BF16, CS_LAYOUT_ROWS, W, N, K, x, t, yv, scratch);
            for (int64_t r = 0; r < t; r++) {
                for (int64_t n = 0; n < N; n++) {
                    float want;
                    vec_dot_bf16_dp_ref(K, &want, W + n * K, xb + r * K);
                    assert_memory_equal(&yv[r * N + n], &want, 4);
                }
            }
        }
        free(W), free(xb), free(x), free(yv), free(scratch);
    }
}

/* x16 packing (repack.h): pack then unpack restores the bytes; with every
 * table, at 1/2/3 threads, for T = 1 and batches, a packed matmul equals
 * the scalar x16 reference (repack_x16_dot_ref, the ref table's path) bit for
 * bit. For Q4_0 / Q8_0 / IQ4_XS that is also the reference table's
 * row-major result bit for bit (same per-block order), and so for Q5_0 /
 * IQ4_NL / Q4_1 / Q5_1 / Q3_K / Q2_K (the x16 kernels keep their reference
 * dot's order: block or super-block integer sums); for Q4_K / Q5_K / Q6_K
 * (their own integer order; the row-major references keep float lanes) and
 * F16 / BF16 (two float chains; the row-major references sum in double) it agrees
 * with the row-major reference within rounding. K = 800 gives an
 * odd block count. */
static void test_kernels_matmul_x16(void **state) {
    (void)state;
    rng_seed(17);
    threadpool *tps[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) assert_int_equal(threadpool_new(i + 1, &tps[i]), CS_OK);
    const int32_t types[] = {CS_TYPE_Q8_0,   CS_TYPE_Q4_0, CS_TYPE_Q4_K,   CS_TYPE_Q6_K,
                             CS_TYPE_IQ4_XS, CS_TYPE_Q5_0, CS_TYPE_IQ4_NL, CS_TYPE_Q4_1,
                             CS_TYPE_Q5_1,   CS_TYPE_Q3_K, CS_TYPE_Q2_K,   CS_TYPE_Q5_K,
                             CS_TYPE_F16,    CS_TYPE_BF16};
    /* {208, 128, 14}: 13 groups, so each of a pool's ranges holds two or
     * more and the pair tiles run (kernels.h tile_pair), with a lone group
     * and 2 tokens left after the 6-token pair tiles; {208, 512, 37} the
     * same for the 16-token pair tiles of the super-block types (5 tokens
     * left); in the others every range holds one group */
    const int64_t shapes[][3] = {{16, 32, 1},  {48, 800, 9}, {32, 768, 33},  {64, 2048, 3},
                                 {16, 256, 5}, {48, 512, 9}, {208, 128, 14}, {208, 512, 37}};
    const kernels_table *ref = kernels_ref();
    assert_false(repack_x16_fits(CS_TYPE_F32, 16, 256));
    assert_false(repack_x16_fits(CS_TYPE_F16, 16, 40)); /* blocks of 16 elements */
    /* conversion kinds: equal exactly when the converted rows are equal */
    assert_int_equal(matmul_convert_kind_of(CS_TYPE_Q8_0, CS_LAYOUT_ROWS),
                     matmul_convert_kind_of(CS_TYPE_Q4_0, CS_LAYOUT_ROWS));
    assert_int_equal(matmul_convert_kind_of(CS_TYPE_Q4_K, CS_LAYOUT_X16),
                     matmul_convert_kind_of(CS_TYPE_Q6_K, CS_LAYOUT_ROWS));
    assert_int_not_equal(matmul_convert_kind_of(CS_TYPE_Q4_0, CS_LAYOUT_X16),
                         matmul_convert_kind_of(CS_TYPE_Q8_0, CS_LAYOUT_X16));
    assert_int_not_equal(matmul_convert_kind_of(CS_TYPE_Q8_0, CS_LAYOUT_X16),
                         matmul_convert_kind_of(CS_TYPE_Q8_0, CS_LAYOUT_ROWS));
    assert_int_not_equal(matmul_convert_kind_of(CS_TYPE_F16, CS_LAYOUT_ROWS),
                         matmul_convert_kind_of(CS_TYPE_BF16, CS_LAYOUT_ROWS));
    assert_true(repack_x16_fits(CS_TYPE_Q5_K, 16, 256));
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        /* x16 orders of their own (repack.c's dot_row_*): Q4_K, Q5_K, Q6_K */
        const bool kq =
            types[ty] == CS_TYPE_Q4_K || types[ty] == CS_TYPE_Q6_K || types[ty] == CS_TYPE_Q5_K;
        const bool q8k = kq || types[ty] == CS_TYPE_IQ4_XS || types[ty] == CS_TYPE_Q3_K ||
                         types[ty] == CS_TYPE_Q2_K; /* blocks of 256 */
        /* their own chains (repack.c's dot_row_16) */
        const bool f16 = types[ty] == CS_TYPE_F16 || types[ty] == CS_TYPE_BF16;
        assert_false(repack_x16_fits(types[ty], 15, 256));
        assert_false(repack_x16_fits(types[ty], 16, q8k ? 128 : f16 ? 24 : 48));
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int64_t N = shapes[si][0], K = shapes[si][1], T = shapes[si][2];
            if (!repack_x16_fits(types[ty], N, K)) continue;
            uint64_t rb = 0;
            assert_true(type_row_size(types[ty], K, &rb));
            const size_t wbytes = (size_t)rb * (size_t)N;
            float *wf = xmalloc((size_t)(N * K) * 4), *x = xmalloc((size_t)(T * K) * 4);
            fill(wf, N * K, 1.0f);
            fill(x, T * K, 2.0f);
            uint8_t *W = xmalloc(wbytes), *P = xmalloc(wbytes), *U = xmalloc(wbytes);
            uint8_t *tmp = xmalloc((size_t)rb * CS_X16_ROWS);
            for (int64_t n = 0; n < N; n++)
                quantize_row(types[ty], wf + n * K, W + (size_t)n * rb, K);
            memcpy(P, W, wbytes);
            repack_x16_pack(types[ty], P, N, K, tmp);
            assert_memory_not_equal(P, W, wbytes);
            repack_x16_unpack(types[ty], P, N, K, U);
            assert_memory_equal(U, W, wbytes);
            /* packing into another buffer (the loader's arena) writes the
             * same bytes */
            memset(U, 0xA5, wbytes);
            repack_x16_pack_to(types[ty], U, W, N, K);
            assert_memory_equal(U, P, wbytes);
            void *scratch = xmalloc(matmul_scratch_size(types[ty], K, T));
            float *want = xmalloc((size_t)(N * T) * 4), *rows = xmalloc((size_t)(N * T) * 4);
            float *got = xmalloc((size_t)(N * T) * 4);
            matmul(ref, NULL, types[ty], CS_LAYOUT_X16, P, N, K, x, T, want, scratch);
            matmul(ref, NULL, types[ty], CS_LAYOUT_ROWS, W, N, K, x, T, rows, scratch);
            if (kq || f16) {
                /* |packed - row| / (1 + |row|) measured on these shapes:
                 * Q4_K <= 2.0e-5, Q5_K <= 4.2e-6, Q6_K <= 2.5e-6,
                 * F16 <= 1.7e-5, BF16 <= 1.4e-5 (two float chains against the row's
                 * double sum) */
                for (int64_t i = 0; i < N * T; i++)
                    assert_true(fabsf(want[i] - rows[i]) <= 1e-4f * (1.0f + fabsf(rows[i])));
            } else {
                assert_memory_equal(want, rows, (size_t)(N * T) * 4);
            }
            /* BF16 in the vdpbf16ps arithmetic (bf16_avx512.c), the
             * tables' with bf16dp (the "avx512" ones where the CPU has
             * AVX512_BF16) */
            float *want_dp = NULL;
            if (types[ty] == CS_TYPE_BF16) {
                want_dp = xmalloc((size_t)(N * T) * 4);
                uint16_t *xb = xmalloc((size_t)K * 2);
                for (int64_t t = 0; t < T; t++) {
                    quantize_row(CS_TYPE_BF16, x + t * K, xb, K);
                    for (int64_t g = 0; g < N / CS_X16_ROWS; g++)
                        repack_x16_dot_bf16dp_ref(K, P + (size_t)g * CS_X16_ROWS * rb, xb,
                                                  want_dp + t * N + g * CS_X16_ROWS);
                }
                free(xb);
                /* the two arithmetics agree within rounding: measured
                 * |dp - fp32| / (1 + |fp32|) <= 8.2e-6 on these shapes */
                for (int64_t i = 0; i < N * T; i++)
                    assert_true(fabsf(want_dp[i] - want[i]) <= 1e-4f * (1.0f + fabsf(want[i])));
            }
            for (size_t ti = 0; ti < N_ALL; ti++) {
                const kernels_table *k = kernels_by_name(k_all_names[ti]);
                if (!k) continue;
                const bool dp = types[ty] == CS_TYPE_BF16 && k->bf16dp;
                const float *wk = dp ? want_dp : want;
                /* every packed type has its micro-kernel in the AVX-512 tables */
                if (strncmp(k_all_names[ti], "avx512", 6) == 0)
                    assert_true(matmul_x16_native(k, types[ty]));
                /* the AVX2 table has every x16 type's micro-kernel:
                 * x16_avx2.c (F16, BF16, Q8_0, Q4_0, Q4_K), x16_q5k_avx2.c,
                 * x16_legacy_avx2.c (IQ4_NL, Q5_0, Q4_1, Q5_1) and
                 * x16_kquants_avx2.c (Q6_K, IQ4_XS, Q3_K, Q2_K) */
                if (strcmp(k_all_names[ti], "avx2") == 0)
                    assert_true(matmul_x16_native(k, types[ty]));
                for (int i = 0; i < 3; i++) {
                    memset(got, 0xff, (size_t)(N * T) * 4);
                    matmul(k, tps[i], types[ty], CS_LAYOUT_X16, P, N, K, x, T, got, scratch);
                    assert_memory_equal(got, wk, (size_t)(N * T) * 4);
                }
                /* the decode columns with and without their software
                 * prefetch (kernels_col_prefetch): only a hint, the same
                 * outputs either way */
                const bool col_pf = kernels_column_prefetch();
                for (int pf = 0; pf < 2; pf++) {
                    kernels_col_prefetch = pf == 1;
                    for (int64_t t = 0; t < T; t++) {
                        matmul(k, NULL, types[ty], CS_LAYOUT_X16, P, N, K, x + t * K, 1, got,
                               scratch);
                        assert_memory_equal(got, wk + t * N, (size_t)N * 4);
                    }
                }
                kernels_col_prefetch = col_pf;
                /* the converted variant reads scratch, not X: spoil X after a
                 * full call and the result must not change */
                float *xs = xmalloc((size_t)(T * K) * 4);
                memcpy(xs, x, (size_t)(T * K) * 4);
                matmul(k, tps[1], types[ty], CS_LAYOUT_X16, P, N, K, xs, T, got, scratch);
                for (int64_t i = 0; i < T * K; i++) xs[i] = -xs[i] * 3.0f;
                memset(got, 0xff, (size_t)(N * T) * 4);
                matmul_converted(k, tps[1], types[ty], CS_LAYOUT_X16, P, N, K, xs, T, got, scratch);
                assert_memory_equal(got, wk, (size_t)(N * T) * 4);
                free(xs);
            }
            free(want_dp);
            free(wf), free(x), free(W), free(P), free(U), free(tmp), free(scratch), free(want),
                free(rows), free(got);
        }
    }
    for (int i = 0; i < 3; i++) threadpool_free(tps[i]);
}

int main(void) {
    /* the override must win; every test below names its tables itself */
    setenv("CS_KERNELS", "ref", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_tables),
        cmocka_unit_test(test_kernels_avxvnni_tables),
        cmocka_unit_test(test_kernels_type_table),
        cmocka_unit_test(test_kernels_weight_types_and_names),
        cmocka_unit_test(test_kernels_matmul_x16),
        cmocka_unit_test(test_kernels_dot_float_types),
        cmocka_unit_test(test_kernels_dot_quantized),
        cmocka_unit_test(test_kernels_quantize_q8_0_ref_rounding),
        cmocka_unit_test(test_kernels_quantize_q8_0_simd_bit_exact),
        cmocka_unit_test(test_kernels_quantize_q8_K_bit_exact),
        cmocka_unit_test(test_kernels_quantize_q4_0_ref),
        cmocka_unit_test(test_kernels_quantize_row_float_types),
        cmocka_unit_test(test_kernels_fp16_all_halfs),
        cmocka_unit_test(test_kernels_bf16_rows),
        cmocka_unit_test(test_kernels_bf16_dp),
        cmocka_unit_test(test_kernels_attn_gathered),
        cmocka_unit_test(test_kernels_attn_kt),
        cmocka_unit_test(test_kernels_axpy),
        cmocka_unit_test(test_kernels_rmsnorm),
        cmocka_unit_test(test_kernels_softmax),
        cmocka_unit_test(test_kernels_swiglu),
        cmocka_unit_test(test_kernels_rope_vs_f64_and_ref),
        cmocka_unit_test(test_kernels_rope_composition),
        cmocka_unit_test(test_kernels_rope_cache_yarn),
        cmocka_unit_test(test_kernels_matmul),
        cmocka_unit_test(test_kernels_matmul_threaded_conversion),
        cmocka_unit_test(test_kernels_matmul_vnni_matches_fallback),
    };
    return test_run(tests, NULL, NULL);
}
