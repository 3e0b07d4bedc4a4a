/* test_kquants.c: the K-quant formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
 * weights, Q8_K activations): dequantization of hand-built blocks against the documented
 * layout, quantize -> dequantize error bounds, reference dots against
 * float64 sums, AVX2 dots bit-identical to the reference, matmul against
 * a naive float64 product for 1 and 2 threads, and an end-to-end decode of
 * generated K-quant models against the float64 oracle. Fixed seeds. */
#include "test.h"

#include <math.h>

#include "fixtures/e2e_logits.h"
#include "fixtures/ref_forward.h"
#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "kernels/matmul.h"
#include "threadpool.h"
#include "types.h"

/* quantize -> dequantize RMS error relative to the data's RMS (uniform
 * random data in [-1, 1) with 6x outliers every 97 elements; measured
 * 0.073 / 0.037 / 0.020 / 0.014 (Q8_K: the outliers set the step), bounds
 * leave about 1.5x margin). */
#define TOL_RT_Q4_K 0.11
#define TOL_RT_Q5_K 0.055
#define TOL_RT_Q6_K 0.03
#define TOL_RT_Q8_K 0.021
/* Q2_K / Q3_K on the same data: measured 0.291 / 0.173, bounds leave
 * about 1.5x margin. */
#define TOL_RT_Q2_K 0.44
#define TOL_RT_Q3_K 0.26
/* Reference dot vs float64 sum of the same dequantized products, relative
 * to sum |w_i * a_i| (float lanes and the final sum round). */
#define TOL_DOT_REL 1e-5
/* matmul vs naive float64 product over the dequantized weights and the
 * dequantized Q8_K activations, relative to sum |w*a| per output. */
#define TOL_MATMUL_REL 1e-5
/* End to end: engine logits (Q8_K-rounded activations, float32) vs the
 * float64 oracle on unrounded activations, relative to max |logit|. */
#define TOL_E2E_REL 0.05

static uint64_t g_rng;

static void fill(float *x, int64_t n, uint64_t seed) {
    test_fill(x, n, seed, &g_rng);
}

static const int32_t k_types[3] = {CS_TYPE_Q4_K, CS_TYPE_Q5_K, CS_TYPE_Q6_K};
/* The 2- and 3-bit K-quants, tested by the *_low tests below. */
static const int32_t k_low_types[2] = {CS_TYPE_Q2_K, CS_TYPE_Q3_K};

static size_t block_bytes(int32_t type) {
    return (size_t)type_traits_get(type)->size;
}

/* ------------------------------------------------- hand-made blocks */

/* Pack 8 six-bit scales and mins as the layout documents: j < 4 in the low
 * 6 bits of bytes j (scale) and j+4 (min); j >= 4: low nibbles in byte
 * j+4, high 2 bits in the top bits of bytes j-4 (scale) and j (min). */
static void pack_k4(const uint8_t *sc, const uint8_t *mn, uint8_t *out) {
    memset(out, 0, 12);
    for (int j = 0; j < 4; j++) {
        out[j] = sc[j];
        out[j + 4] = mn[j];
    }
    for (int j = 4; j < 8; j++) {
        out[j + 4] = (uint8_t)((sc[j] & 15) | ((mn[j] & 15) << 4));
        out[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
        out[j] |= (uint8_t)((mn[j] >> 4) << 6);
    }
}

static void test_kquants_dequantize_handmade(void **state) {
    (void)state;
    const float d = 0.5f, dmin = 0.25f; /* exact in f16 */
    uint8_t sc[8], mn[8], q[256];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(7 * j + 5); /* up to 54: uses the high bits */
        mn[j] = (uint8_t)(63 - 8 * j);
    }
    for (int i = 0; i < 256; i++) q[i] = (uint8_t)((i * 7 + 3) % 32);
    float out[256];

    /* Q4_K: element 64g + l is the low nibble of qs[32g + l], 64g+32+l the high */
    block_q4_K b4;
    b4.d = fp32_to_fp16(d);
    b4.dmin = fp32_to_fp16(dmin);
    pack_k4(sc, mn, b4.scales);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            b4.qs[32 * g + l] = (uint8_t)((q[64 * g + l] & 15) | ((q[64 * g + 32 + l] & 15) << 4));
    dequantize_row(CS_TYPE_Q4_K, &b4, out, 256);
    for (int i = 0; i < 256; i++) {
        double want = (double)d * sc[i / 32] * (q[i] & 15) - (double)dmin * mn[i / 32];
        assert_true(fabs((double)out[i] - want) <= 1e-6 * (1 + fabs(want)));
    }

    /* Q5_K: plus bit 2g (low half) / 2g+1 (high half) of qh[l] as 16 */
    block_q5_K b5;
    b5.d = b4.d;
    b5.dmin = b4.dmin;
    memcpy(b5.scales, b4.scales, 12);
    memset(b5.qh, 0, 32);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            b5.qs[32 * g + l] = (uint8_t)((q[64 * g + l] & 15) | ((q[64 * g + 32 + l] & 15) << 4));
            if (q[64 * g + l] & 16) b5.qh[l] |= (uint8_t)(1u << (2 * g));
            if (q[64 * g + 32 + l] & 16) b5.qh[l] |= (uint8_t)(2u << (2 * g));
        }
    dequantize_row(CS_TYPE_Q5_K, &b5, out, 256);
    for (int i = 0; i < 256; i++) {
        double want = (double)d * sc[i / 32] * q[i] - (double)dmin * mn[i / 32];
        assert_true(fabs((double)out[i] - want) <= 1e-6 * (1 + fabs(want)));
    }

    /* Q6_K: 6-bit values v = q6 - 32, 16 signed scales */
    uint8_t q6[256];
    int8_t s6[16];
    for (int i = 0; i < 256; i++) q6[i] = (uint8_t)((i * 11 + 5) % 64);
    for (int j = 0; j < 16; j++) s6[j] = (int8_t)(j * 13 - 100);
    block_q6_K b6;
    b6.d = fp32_to_fp16(d);
    memcpy(b6.scales, s6, 16);
    memset(b6.qh, 0, 64);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *v = q6 + 128 * h;
            b6.ql[64 * h + l] = (uint8_t)((v[l] & 15) | ((v[l + 64] & 15) << 4));
            b6.ql[64 * h + 32 + l] = (uint8_t)((v[l + 32] & 15) | ((v[l + 96] & 15) << 4));
            b6.qh[32 * h + l] = (uint8_t)((v[l] >> 4) | ((v[l + 32] >> 4) << 2) |
                                          ((v[l + 64] >> 4) << 4) | ((v[l + 96] >> 4) << 6));
        }
    dequantize_row(CS_TYPE_Q6_K, &b6, out, 256);
    for (int i = 0; i < 256; i++) {
        double want = (double)d * s6[i / 16] * (q6[i] - 32);
        assert_true(fabs((double)out[i] - want) <= 1e-6 * (1 + fabs(want)));
    }
}

/* ----------------------------------------------- quantization error */

static void test_kquants_roundtrip_error(void **state) {
    (void)state;
    enum { N = 256 * 16 };
    static float x[N], y[N];
    static uint8_t buf[N / 256 * 292];
    const double tol[3] = {TOL_RT_Q4_K, TOL_RT_Q5_K, TOL_RT_Q6_K};
    fill(x, N, 7);
    for (int t = 0; t < 3; t++) {
        quantize_row(k_types[t], x, buf, N);
        dequantize_row(k_types[t], buf, y, N);
        double e = test_rel_rms(x, y, N);
        assert_true(e <= tol[t]);
        assert_true(e > 0); /* really lossy: the test measures something */
    }
    /* Q8_K: d * qs */
    block_q8_K *q8 = (block_q8_K *)(void *)buf;
    quantize_row_q8_K_ref(x, q8, N);
    for (int64_t i = 0; i < N; i++) y[i] = q8[i / 256].d * (float)q8[i / 256].qs[i % 256];
    assert_true(test_rel_rms(x, y, N) <= TOL_RT_Q8_K);
    for (int b = 0; b < N / 256; b++)
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += q8[b].qs[16 * j + i];
            assert_int_equal(s, q8[b].bsums[j]);
        }
    /* all-zero input: zero blocks */
    memset(x, 0, 256 * sizeof(float));
    for (int t = 0; t < 3; t++) {
        quantize_row(k_types[t], x, buf, 256);
        dequantize_row(k_types[t], buf, y, 256);
        for (int i = 0; i < 256; i++) assert_true(y[i] == 0.0f);
    }
}

/* ---------------------------------------------------------- dots */

static double ref_dot64(int32_t type, const void *w, const block_q8_K *a, int64_t n, double *sabs) {
    float *wf = malloc((size_t)n * sizeof(float));
    assert_non_null(wf);
    dequantize_row(type, w, wf, n);
    double s = 0, sa = 0;
    for (int64_t i = 0; i < n; i++) {
        double p = (double)wf[i] * ((double)a[i / 256].d * a[i / 256].qs[i % 256]);
        s += p;
        sa += fabs(p);
    }
    free(wf);
    *sabs = sa;
    return s;
}

static type_vec_dot_fn ref_fn(int32_t type) {
    return kernels_ref()->vec_dot[type];
}

/* The reference dots of n types against the float64 dot of the same
 * blocks, on 8 rows of random data (seeds 100+rep / 200+rep). */
static void check_vec_dot_vs_double(const int32_t *types, int n) {
    enum { N = 256 * 8 };
    static float xw[N], xa[N];
    static uint8_t w[N / 256 * 210];
    static block_q8_K a[N / 256];
    for (int rep = 0; rep < 8; rep++) {
        fill(xw, N, 100 + (uint64_t)rep);
        fill(xa, N, 200 + (uint64_t)rep);
        quantize_row_q8_K_ref(xa, a, N);
        for (int t = 0; t < n; t++) {
            quantize_row(types[t], xw, w, N);
            float s = 0;
            ref_fn(types[t])(N, &s, w, a);
            double sa, want = ref_dot64(types[t], w, a, N, &sa);
            assert_true(fabs((double)s - want) <= TOL_DOT_REL * sa);
        }
    }
}

static void test_kquants_vec_dot_vs_double(void **state) {
    (void)state;
    check_vec_dot_vs_double(k_types, 3);
}

/* Byte offsets of the f16 super-block scales (d, and dmin where the type
 * has one, else -1) inside a block: random block bytes get finite scales
 * written there. */
static void scale_offsets(int32_t type, int *d_off, int *m_off) {
    const int bb = (int)block_bytes(type);
    switch (type) {
    case CS_TYPE_Q2_K: /* scales, qs, d, dmin */
        *d_off = bb - 4, *m_off = bb - 2;
        break;
    case CS_TYPE_Q3_K: /* hmask, qs, scales, d */
    case CS_TYPE_Q6_K: /* ql, qh, scales, d */
        *d_off = bb - 2, *m_off = -1;
        break;
    default: /* Q4_K, Q5_K: d, dmin first */
        *d_off = 0, *m_off = 2;
        break;
    }
}

/* The best table's dots of n types against the reference, bit for bit, on
 * 64 rows: quantized data (seeds seed_w+rep / seed_a+rep), saturated
 * activations, top-of-range weights and random block bytes with finite
 * scales. */
static void check_simd_bit_identical(const int32_t *types, int n, uint64_t seed_w,
                                     uint64_t seed_a) {
#if defined(__x86_64__) || defined(__i386__)
    const kernels_table *best = kernels_best();
    if (best == kernels_ref()) test_skip(CS_SKIP_CPU, "no SIMD kernels for this CPU");
    enum { N = 256 * 4 };
    static float xw[N], xa[N];
    static uint8_t w[N / 256 * 210];
    static block_q8_K a[N / 256];
    for (int rep = 0; rep < 64; rep++) {
        fill(xw, N, seed_w + (uint64_t)rep);
        fill(xa, N, seed_a + (uint64_t)rep);
        if (rep % 8 == 1) /* saturated activations: every q8 at +-127 */
            for (int i = 0; i < N; i++) xa[i] = (i % 3) ? 1.0f : -1.0f;
        if (rep % 8 == 2) /* large weights: scales and levels at their top */
            for (int i = 0; i < N; i++) xw[i] = (i % 2) ? 100.0f : -100.0f;
        quantize_row_q8_K_ref(xa, a, N);
        for (int t = 0; t < n; t++) {
            const size_t bb = block_bytes(types[t]);
            quantize_row(types[t], xw, w, N);
            if (rep % 8 == 3) { /* random bytes: every level and scale bit pattern */
                for (size_t i = 0; i < (N / 256) * bb; i++) {
                    g_rng = g_rng * 6364136223846793005ULL + 1;
                    w[i] = (uint8_t)(g_rng >> 56);
                }
                int d_off, m_off; /* keep the f16 scales finite */
                scale_offsets(types[t], &d_off, &m_off);
                for (int b = 0; b < N / 256; b++) {
                    const uint16_t h = fp32_to_fp16(0.01f * (float)(b + 1));
                    memcpy(w + (size_t)b * bb + (size_t)d_off, &h, 2);
                    if (m_off >= 0) memcpy(w + (size_t)b * bb + (size_t)m_off, &h, 2);
                }
            }
            float s_ref = 0, s_simd = 0;
            ref_fn(types[t])(N, &s_ref, w, a);
            best->vec_dot[types[t]](N, &s_simd, w, a);
            assert_memory_equal(&s_ref, &s_simd, sizeof(float));
        }
    }
#else
    (void)types, (void)n, (void)seed_w, (void)seed_a;
    test_skip(CS_SKIP_CPU, "no x86 SIMD kernels on this architecture");
#endif
}

static void test_kquants_simd_bit_identical(void **state) {
    (void)state;
    check_simd_bit_identical(k_types, 3, 300, 400);
}

/* -------------------------------------------------- Q2_K and Q3_K */

/* Q2_K: value = d*(scales[j] & 15)*q - dmin*(scales[j] >> 4) with
 * j = e/16; Q3_K: value = d*(s[j] - 32)*(q - 4), both packed as kquants.h
 * documents. */
static void test_kquants_low_dequantize_handmade(void **state) {
    (void)state;
    const float d = 0.5f, dmin = 0.25f; /* exact in f16 */
    float out[256];

    uint8_t sc[16], mn[16], q2[256];
    for (int j = 0; j < 16; j++) {
        sc[j] = (uint8_t)((5 * j + 3) % 16);
        mn[j] = (uint8_t)(15 - j);
    }
    for (int e = 0; e < 256; e++) q2[e] = (uint8_t)((7 * e + 3) % 4);
    block_q2_K b2;
    b2.d = fp32_to_fp16(d);
    b2.dmin = fp32_to_fp16(dmin);
    for (int j = 0; j < 16; j++) b2.scales[j] = (uint8_t)(sc[j] | (mn[j] << 4));
    memset(b2.qs, 0, sizeof b2.qs);
    for (int e = 0; e < 256; e++) {
        const int h = e / 128, g = (e % 128) / 32, l = e % 32;
        b2.qs[32 * h + l] |= (uint8_t)(q2[e] << (2 * g));
    }
    dequantize_row(CS_TYPE_Q2_K, &b2, out, 256);
    for (int e = 0; e < 256; e++) {
        double want = (double)d * sc[e / 16] * q2[e] - (double)dmin * mn[e / 16];
        assert_true(fabs((double)out[e] - want) <= 1e-6 * (1 + fabs(want)));
    }

    uint8_t s3[16], q3[256];
    for (int j = 0; j < 16; j++) s3[j] = (uint8_t)((11 * j + 5) % 64);
    for (int e = 0; e < 256; e++) q3[e] = (uint8_t)((5 * e + 1) % 8);
    block_q3_K b3;
    b3.d = fp32_to_fp16(d);
    memset(b3.hmask, 0, sizeof b3.hmask);
    memset(b3.qs, 0, sizeof b3.qs);
    memset(b3.scales, 0, sizeof b3.scales);
    for (int e = 0; e < 256; e++) {
        const int h = e / 128, g = (e % 128) / 32, l = e % 32;
        b3.qs[32 * h + l] |= (uint8_t)((q3[e] & 3) << (2 * g));
        if (q3[e] & 4) b3.hmask[e % 32] |= (uint8_t)(1u << (e / 32));
    }
    for (int j = 0; j < 16; j++) {
        if (j < 8)
            b3.scales[j] |= (uint8_t)(s3[j] & 15);
        else
            b3.scales[j - 8] |= (uint8_t)((s3[j] & 15) << 4);
        b3.scales[8 + j % 4] |= (uint8_t)((s3[j] >> 4) << (2 * (j / 4)));
    }
    dequantize_row(CS_TYPE_Q3_K, &b3, out, 256);
    for (int e = 0; e < 256; e++) {
        double want = (double)d * (s3[e / 16] - 32) * (q3[e] - 4);
        assert_true(fabs((double)out[e] - want) <= 1e-6 * (1 + fabs(want)));
    }
}

static void test_kquants_low_roundtrip_error(void **state) {
    (void)state;
    enum { N = 256 * 16 };
    static float x[N], y[N];
    static uint8_t buf[N / 256 * 110];
    const double tol[2] = {TOL_RT_Q2_K, TOL_RT_Q3_K};
    fill(x, N, 7);
    for (int t = 0; t < 2; t++) {
        quantize_row(k_low_types[t], x, buf, N);
        dequantize_row(k_low_types[t], buf, y, N);
        double e = test_rel_rms(x, y, N);
        print_message("%s: relative RMS error %.4f\n", cs_type_name(k_low_types[t]), e);
        assert_true(e <= tol[t]);
        assert_true(e > 0);
    }
    /* all-zero input: zero blocks */
    memset(x, 0, 256 * sizeof(float));
    for (int t = 0; t < 2; t++) {
        quantize_row(k_low_types[t], x, buf, 256);
        dequantize_row(k_low_types[t], buf, y, 256);
        for (int i = 0; i < 256; i++) assert_true(y[i] == 0.0f);
    }
}

static void test_kquants_low_vec_dot_vs_double(void **state) {
    (void)state;
    check_vec_dot_vs_double(k_low_types, 2);
}

/* The SIMD tables' Q2_K / Q3_K dots (AVX2; the AVX-512 tables use the same
 * functions) against the reference, bit for bit. */
static void test_kquants_low_simd_bit_identical(void **state) {
    (void)state;
    check_simd_bit_identical(k_low_types, 2, 500, 600);
}

/* --------------------------------------------------------- matmul */

static void check_matmul(const kernels_table *k, int32_t type, int64_t N, int64_t K, int64_t T) {
    const size_t row = (size_t)(K / 256) * block_bytes(type);
    float *xw = malloc((size_t)(N * K) * sizeof(float));
    float *X = malloc((size_t)(T * K) * sizeof(float));
    float *Y = malloc((size_t)(T * N) * sizeof(float));
    float *Y2 = malloc((size_t)(T * N) * sizeof(float));
    float *wf = malloc((size_t)K * sizeof(float));
    uint8_t *W = malloc(row * (size_t)N);
    block_q8_K *a = malloc((size_t)(K / 256) * sizeof(block_q8_K));
    void *scratch = malloc(matmul_scratch_size(type, K, T));
    assert_true(xw && X && Y && Y2 && wf && W && a && scratch);
    fill(xw, N * K, 11);
    fill(X, T * K, 12);
    for (int64_t n = 0; n < N; n++) quantize_row(type, xw + n * K, W + (size_t)n * row, K);
    matmul(k, NULL, type, CS_LAYOUT_ROWS, W, N, K, X, T, Y, scratch);
    threadpool *tp = NULL;
    assert_int_equal(threadpool_new(2, &tp), CS_OK);
    matmul(k, tp, type, CS_LAYOUT_ROWS, W, N, K, X, T, Y2, scratch);
    threadpool_free(tp);
    assert_memory_equal(Y, Y2, (size_t)(T * N) * sizeof(float)); /* thread count invariant */
    for (int64_t t = 0; t < T; t++) {
        quantize_row_q8_K_ref(X + t * K, a, K);
        for (int64_t n = 0; n < N; n++) {
            double sa, want = ref_dot64(type, W + (size_t)n * row, a, K, &sa);
            assert_true(fabs((double)Y[t * N + n] - want) <= TOL_MATMUL_REL * sa + 1e-30);
        }
    }
    free(xw), free(X), free(Y), free(Y2), free(wf), free(W), free(a), free(scratch);
}

/* Both tables' matmul of n types against the naive float64 product. */
static void check_matmul_types(const int32_t *types, int n) {
    const kernels_table *tables[2] = {kernels_ref(), kernels_best()};
    for (int ti = 0; ti < 2; ti++)
        for (int t = 0; t < n; t++) {
            check_matmul(tables[ti], types[t], 37, 512, 1);
            check_matmul(tables[ti], types[t], 19, 256, 5);
        }
}

static void test_kquants_matmul_vs_naive(void **state) {
    (void)state;
    check_matmul_types(k_types, 3);
}

static void test_kquants_low_matmul_vs_naive(void **state) {
    (void)state;
    check_matmul_types(k_low_types, 2);
}

/* ------------------------------------------------------ end to end */

/* A generated model of weight type `type` (n_embd 256, so every 2-D
 * tensor has whole 256-element blocks) decoded by the engine against the
 * float64 oracle over the same dequantized weights: max |engine - oracle|
 * <= tol * max |logit|. */
static void check_end_to_end(int32_t type, uint64_t seed, double tol) {
    cs_gen_model_params p;
    memset(&p, 0, sizeof p);
    assert_true(cs_gen_model_preset("tiny", &p));
    p.vocab_path = test_bundled_model();
    p.n_embd = 256;
    p.n_ff = 512;
    p.n_layer = 2;
    p.n_head = 4;
    p.n_head_kv = 2;
    p.type = type;
    p.seed = seed;
    char path[4096];
    test_tmp_path("kq.gguf", path, sizeof path);
    assert_int_equal(cs_gen_model_write(&p, path), CS_OK);

    /* the same 6 tokens as before the helper existed (LCG from 99) */
    const double rel = fixture_e2e_logits_rel_err(path, 99, type);
    print_message("%s: max |engine - oracle| / max |logit| = %.3g\n", cs_type_name(type), rel);
    assert_true(rel <= tol);
    unlink(path);
}

static void test_kquants_end_to_end(void **state) {
    (void)state;
    for (int t = 0; t < 3; t++) check_end_to_end(k_types[t], 5 + (uint64_t)t, TOL_E2E_REL);
}

/* Q2_K / Q3_K files load (general.file_type, tensor sizes) and decode. */
static void test_kquants_low_end_to_end(void **state) {
    (void)state;
    for (int t = 0; t < 2; t++) check_end_to_end(k_low_types[t], 8 + (uint64_t)t, TOL_E2E_REL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kquants_dequantize_handmade),
        cmocka_unit_test(test_kquants_roundtrip_error),
        cmocka_unit_test(test_kquants_vec_dot_vs_double),
        cmocka_unit_test(test_kquants_simd_bit_identical),
        cmocka_unit_test(test_kquants_matmul_vs_naive),
        cmocka_unit_test(test_kquants_end_to_end),
        cmocka_unit_test(test_kquants_low_dequantize_handmade),
        cmocka_unit_test(test_kquants_low_roundtrip_error),
        cmocka_unit_test(test_kquants_low_vec_dot_vs_double),
        cmocka_unit_test(test_kquants_low_simd_bit_identical),
        cmocka_unit_test(test_kquants_low_matmul_vs_naive),
        cmocka_unit_test(test_kquants_low_end_to_end),
    };
    return test_run(tests, NULL, NULL);
}
