/* test_quants_legacy.c: the Q4_1, Q5_0, Q5_1 weight formats and the Q8_1
 * activations (quant_legacy.h): dequantization of hand-built blocks
 * against the documented layout, quantize -> dequantize error bounds, the
 * scalar dots against float64 sums, every SIMD table's dots and Q8_1
 * converter bit-identical to the scalar references, and generated tiny
 * models of each type loaded and decoded against the float64 oracle.
 * (Bit-exactness with ggml itself: test_ggml_peer.) Fixed seeds. */
#include "test.h"

#include <math.h>

#include "fixtures/ref_forward.h"
#include "kernels/kernels.h"
#include "kernels/quant_legacy.h"
#include "types.h"

/* quantize -> dequantize RMS error relative to the data's RMS (uniform
 * [-1, 1) with 6x outliers every 97 elements); measured [Q4_1 0.085,
 * Q5_0 0.063, Q5_1 0.042, Q8_1 0.0079]; bounds about 1.4x. Q5_0 is
 * symmetric around 0 (its step is |max|/16), so it is coarser than Q5_1
 * (range/31) for these blocks. */
#define TOL_RT_Q4_1 0.12
#define TOL_RT_Q5_0 0.09
#define TOL_RT_Q5_1 0.06
#define TOL_RT_Q8_1 0.015
/* Scalar dot vs float64 sum of the same dequantized products, relative to
 * sum |w_i * a_i| (float lanes, the FMA chain and the final sums round).
 * [measured 1.1e-7] */
#define TOL_DOT_REL 1e-6
/* End to end, engine logits vs the float64 oracle, relative to max |logit|:
 * exact oracle (activations unrounded): the Q8_0 / Q8_1 activation rounding
 * counts, as for Q4_0 in test_forward [Q4_1 2.3e-2, Q5_0 1.9e-2, Q5_1
 * 1.6e-2]. Rounding oracle (ref_forward_ex, the same activation values),
 * Q5_0 only: float32 arithmetic, or a whole Q8_0 step where a rounding tie
 * falls the other way (~1e-2, test_forward) [7.6e-8]. For Q4_1 and Q5_1 the
 * dot also takes the offsets through Q8_1's s = f16(d * sum q), whose f16
 * rounding the oracle (a plain w.x) does not model: it explains none of the
 * error there [2.1e-2, 1.8e-2], so only the exact bound is asserted. */
#define TOL_E2E_REL         7e-2
#define TOL_E2E_ROUNDED_REL 1e-2

#define N_LG 3
static const int32_t k_types[N_LG] = {CS_TYPE_Q4_1, CS_TYPE_Q5_0, CS_TYPE_Q5_1};
static const char *const k_simd[] = {"avx2",        "avx512",  "avx512novnni",
                                     "avx512noext", "avxvnni", "avxvnni_evex"};

static uint64_t g_rng;

static void fill(float *x, int64_t n, uint64_t seed) {
    test_fill(x, n, seed, &g_rng);
}

static size_t row_bytes(int32_t type, int64_t n) {
    uint64_t b;
    assert_true(type_row_size(type, n, &b));
    return (size_t)b;
}

/* ------------------------------------------------- hand-made blocks */

static void test_legacy_dequantize_handmade(void **state) {
    (void)state;
    const float d = 0.5f, m = -3.25f; /* exact in f16 */
    uint8_t q[32];
    for (int j = 0; j < 32; j++) q[j] = (uint8_t)((7 * j + 3) % 32);
    uint32_t qh = 0;
    block_q4_1 b41 = {.d = fp32_to_fp16(d), .m = fp32_to_fp16(m)};
    block_q5_0 b50 = {.d = fp32_to_fp16(d)};
    block_q5_1 b51 = {.d = fp32_to_fp16(d), .m = fp32_to_fp16(m)};
    for (int j = 0; j < 16; j++) {
        b41.qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
        b50.qs[j] = b51.qs[j] = b41.qs[j];
    }
    for (int j = 0; j < 32; j++) qh |= (uint32_t)(q[j] >> 4) << j;
    memcpy(b50.qh, &qh, 4);
    memcpy(b51.qh, &qh, 4);
    float y[32];
    dequantize_row(CS_TYPE_Q4_1, &b41, y, 32);
    for (int j = 0; j < 32; j++) assert_true(y[j] == d * (float)(q[j] & 15) + m);
    dequantize_row(CS_TYPE_Q5_0, &b50, y, 32);
    for (int j = 0; j < 32; j++) assert_true(y[j] == d * (float)(q[j] - 16));
    dequantize_row(CS_TYPE_Q5_1, &b51, y, 32);
    for (int j = 0; j < 32; j++) assert_true(y[j] == d * (float)q[j] + m);

    /* Q8_1: values d * q, s = f16(d * sum q) */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 10) / 21.0f;
    block_q8_1 a;
    quantize_row_q8_1_ref(x, &a, 32);
    const float da = fp16_to_fp32(a.d);
    int32_t sum = 0;
    for (int j = 0; j < 32; j++) {
        assert_true(fabsf(da * a.qs[j] - x[j]) <= da * 0.5f + 1e-7f);
        sum += a.qs[j];
    }
    assert_int_equal(a.qs[31], 127); /* the block's largest |x| */
    assert_int_equal(a.s, fp32_to_fp16((21.0f / 21.0f / 127.0f) * (float)sum));
}

/* ------------------------------------------------ round-trip error */

static double roundtrip_rel(int32_t type, const float *x, int64_t n, bool act) {
    uint8_t *q = malloc(row_bytes(type, n));
    float *y = malloc((size_t)n * sizeof *y);
    assert_true(q && y);
    if (act) {
        quantize_row_q8_1_ref(x, q, n);
        const block_q8_1 *b = (const block_q8_1 *)q;
        for (int64_t i = 0; i < n; i++) y[i] = fp16_to_fp32(b[i / 32].d) * b[i / 32].qs[i % 32];
    } else {
        quantize_row(type, x, q, n);
        dequantize_row(type, q, y, n);
    }
    double se = 0, sx = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = (double)y[i] - (double)x[i];
        se += e * e;
        sx += (double)x[i] * (double)x[i];
    }
    free(q), free(y);
    return sqrt(se / sx);
}

static void test_legacy_roundtrip_error(void **state) {
    (void)state;
    enum { N = 32 * 64 };
    static float x[N];
    fill(x, N, 11);
    const double tol[N_LG] = {TOL_RT_Q4_1, TOL_RT_Q5_0, TOL_RT_Q5_1};
    for (int t = 0; t < N_LG; t++) {
        const double e = roundtrip_rel(k_types[t], x, N, false);
        print_message("%s round trip: rms rel %.4f (tol %.3f)\n", cs_type_name(k_types[t]), e,
                      tol[t]);
        assert_true(e > 0 && e <= tol[t]);
    }
    const double e = roundtrip_rel(CS_TYPE_Q8_1, x, N, true);
    print_message("q8_1 round trip: rms rel %.4f (tol %.3f)\n", e, TOL_RT_Q8_1);
    assert_true(e > 0 && e <= TOL_RT_Q8_1);
    /* zeros stay zeros, and a constant block is exact in Q4_1/Q5_1 */
    static float z[64];
    float back[64];
    uint8_t q[64 / 32 * 24];
    for (int t = 0; t < N_LG; t++) {
        memset(z, 0, sizeof z);
        quantize_row(k_types[t], z, q, 64);
        dequantize_row(k_types[t], q, back, 64);
        for (int i = 0; i < 64; i++) assert_true(back[i] == 0.0f);
    }
    for (int i = 0; i < 64; i++) z[i] = 0.375f;
    quantize_row(CS_TYPE_Q4_1, z, q, 64);
    dequantize_row(CS_TYPE_Q4_1, q, back, 64);
    for (int i = 0; i < 64; i++) assert_true(back[i] == 0.375f);
    quantize_row(CS_TYPE_Q5_1, z, q, 64);
    dequantize_row(CS_TYPE_Q5_1, q, back, 64);
    for (int i = 0; i < 64; i++) assert_true(back[i] == 0.375f);
}

/* ------------------------------------------------------------- dots */

/* A weight row and its activation row (of the type's vec_dot_type). */
typedef struct {
    uint8_t *w, *a;
    float *wf, *af;
} dot_rows;

static dot_rows make_rows(int32_t type, int64_t n, uint64_t seed) {
    dot_rows r = {malloc(row_bytes(type, n)), malloc((size_t)n / 32 * 36),
                  malloc((size_t)n * sizeof(float)), malloc((size_t)n * sizeof(float))};
    assert_true(r.w && r.a && r.wf && r.af);
    fill(r.wf, n, seed);
    fill(r.af, n, seed + 1000);
    quantize_row(type, r.wf, r.w, n);
    dequantize_row(type, r.w, r.wf, n);
    const int32_t vdt = type_traits_get(type)->vec_dot_type;
    type_traits_get(vdt)->act_from_float_ref(r.af, r.a, n);
    for (int64_t i = 0; i < n; i++) { /* the activations' values, d * q */
        if (vdt == CS_TYPE_Q8_0) {
            const block_q8_0 *b = (const block_q8_0 *)r.a + i / 32;
            r.af[i] = fp16_to_fp32(b->d) * b->qs[i % 32];
        } else {
            const block_q8_1 *b = (const block_q8_1 *)r.a + i / 32;
            r.af[i] = fp16_to_fp32(b->d) * b->qs[i % 32];
        }
    }
    return r;
}

static void free_rows(dot_rows *r) {
    free(r->w), free(r->a), free(r->wf), free(r->af);
}

static void test_legacy_vec_dot_vs_double(void **state) {
    (void)state;
    const int64_t sizes[] = {32, 96, 512, 2080};
    double worst = 0;
    for (int t = 0; t < N_LG; t++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int64_t n = sizes[si];
            dot_rows r = make_rows(k_types[t], n, 50 + (uint64_t)si);
            double want = 0, sabs = 0;
            for (int64_t i = 0; i < n; i++) {
                /* Q4_1/Q5_1 offsets meet the activations through s, the
                 * f16-rounded d * sum q: use it as the dot does */
                want += (double)r.wf[i] * (double)r.af[i];
                sabs += fabs((double)r.wf[i] * (double)r.af[i]);
            }
            if (k_types[t] != CS_TYPE_Q5_0) {
                /* the exact dot uses m * sum(a); the kernel m * f16(d*sum q) */
                want = 0;
                for (int64_t b = 0; b < n / 32; b++) {
                    const uint16_t *hw =
                        (const uint16_t *)(r.w + (size_t)b * row_bytes(k_types[t], 32));
                    const block_q8_1 *ab = (const block_q8_1 *)r.a + b;
                    const double m = (double)fp16_to_fp32(hw[1]);
                    for (int j = 0; j < 32; j++)
                        want += ((double)r.wf[b * 32 + j] - m) * (double)r.af[b * 32 + j];
                    want += m * (double)fp16_to_fp32(ab->s);
                }
            }
            float got;
            type_traits_get(k_types[t])->vec_dot_ref(n, &got, r.w, r.a);
            const double rel = fabs((double)got - want) / sabs;
            worst = fmax(worst, rel);
            assert_true(rel <= TOL_DOT_REL);
            free_rows(&r);
        }
    print_message("scalar dots vs float64: worst rel %.2e (tol %.1e)\n", worst, TOL_DOT_REL);
}

/* Every SIMD table's dots and Q8_1 converter equal the scalar references
 * bit for bit, for odd and even block counts (the AVX-512 kernel pairs
 * blocks), saturated activations and random weight bytes. */
static void test_legacy_simd_bit_identical(void **state) {
    (void)state;
    int n_tables = 0;
    for (size_t ti = 0; ti < sizeof k_simd / sizeof k_simd[0]; ti++) {
        const kernels_table *k = kernels_by_name(k_simd[ti]);
        if (!k) continue;
        n_tables++;
        const int64_t sizes[] = {32, 64, 96, 32 * 33};
        for (int rep = 0; rep < 16; rep++)
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
                for (int t = 0; t < N_LG; t++) {
                    const int64_t n = sizes[si];
                    dot_rows r = make_rows(k_types[t], n, 700 + (uint64_t)(rep * 10 + si));
                    const int32_t vdt = type_traits_get(k_types[t])->vec_dot_type;
                    const size_t wb = row_bytes(k_types[t], n), ab = row_bytes(vdt, n);
                    if (rep % 4 == 1) /* saturated: every q8 at +-127 */
                        for (int64_t i = 0; i < n; i++) r.af[i] = (i % 3) ? 1.0f : -1.0f;
                    if (rep % 4 == 2) /* random bytes: every level and high bit */
                        for (size_t i = 0; i < wb; i++) {
                            g_rng = g_rng * 6364136223846793005ULL + 1;
                            r.w[i] = (uint8_t)(g_rng >> 56);
                        }
                    if (rep % 4 == 2) /* with finite f16 scales and offsets */
                        for (int64_t b = 0; b < n / 32; b++) {
                            uint16_t h = fp32_to_fp16(0.01f * (float)(b + 1));
                            uint8_t *blk = r.w + (size_t)b * (wb / (size_t)(n / 32));
                            memcpy(blk, &h, 2);
                            if (k_types[t] != CS_TYPE_Q5_0) memcpy(blk + 2, &h, 2);
                        }
                    uint8_t *a2 = malloc(ab);
                    assert_non_null(a2);
                    type_traits_get(vdt)->act_from_float_ref(r.af, r.a, n);
                    k->from_float[vdt](r.af, a2, n);
                    assert_memory_equal(r.a, a2, ab);
                    float s_ref, s_simd;
                    type_traits_get(k_types[t])->vec_dot_ref(n, &s_ref, r.w, r.a);
                    k->vec_dot[k_types[t]](n, &s_simd, r.w, r.a);
                    assert_memory_equal(&s_ref, &s_simd, sizeof(float));
                    free(a2);
                    free_rows(&r);
                }
    }
    if (n_tables == 0) test_skip(CS_SKIP_CPU, "no SIMD kernel table for this CPU");
}

/* ------------------------------------------------------ end to end */

/* A generated tiny model of each type loads through the type table and its
 * logits agree with the float64 oracle on the same (exactly dequantized)
 * weights: the exact oracle within the activation rounding, for Q5_0 the
 * rounding oracle (Q8_0 activations as the engine rounds them) closer. */
static void test_legacy_model_end_to_end(void **state) {
    (void)state;
    for (int t = 0; t < N_LG; t++) {
        cs_gen_model_params p;
        memset(&p, 0, sizeof p);
        assert_true(cs_gen_model_preset("tiny", &p)); /* n_embd 64: 2 blocks of 32 */
        p.vocab_path = test_bundled_model();
        p.type = k_types[t];
        p.seed = 21 + (uint64_t)t;
        char path[4096];
        test_tmp_path("legacy.gguf", path, sizeof path);
        assert_int_equal(cs_gen_model_write(&p, path), CS_OK);

        cs_model_params mp = cs_model_default_params();
        cs_model *m = NULL;
        assert_int_equal(cs_model_load(path, &mp, &m), CS_OK);
        ref_model *rm = NULL;
        assert_int_equal(ref_model_load(path, &rm), CS_OK);
        const int32_t nv = cs_model_n_vocab(m);
        assert_int_equal(nv, ref_model_n_vocab(rm));

        enum { NT = 8 };
        cs_token toks[NT];
        cs_pos pos[NT];
        g_rng = 77;
        for (int i = 0; i < NT; i++) {
            g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
            toks[i] = (cs_token)((g_rng >> 33) % (uint64_t)nv);
            pos[i] = i;
        }
        double *ref = malloc((size_t)NT * (size_t)nv * sizeof(double));
        double *emu = malloc((size_t)NT * (size_t)nv * sizeof(double));
        assert_true(ref && emu);
        assert_int_equal(ref_forward(rm, toks, NT, ref), CS_OK);
        assert_int_equal(ref_forward_ex(rm, toks, pos, NT, true, emu), CS_OK);

        cs_context_params cp = cs_context_default_params();
        cp.n_ctx = 32;
        cp.n_batch = 16;
        cp.n_threads = 2;
        cp.type_k = cp.type_v = CS_TYPE_F32;
        cs_context *c = NULL;
        assert_int_equal(cs_context_new(m, &cp, &c), CS_OK);
        cs_batch *b = NULL;
        assert_int_equal(cs_batch_new(NT, 1, &b), CS_OK);
        cs_seq seq = 0;
        for (int i = 0; i < NT; i++)
            assert_int_equal(cs_batch_add(b, toks[i], pos[i], &seq, 1, true), CS_OK);
        assert_int_equal(cs_decode(c, b), 0);
        double d_ref = 0, d_emu = 0, max_ref = 0;
        for (int i = 0; i < NT; i++) {
            const float *lg = cs_get_logits_ith(c, i);
            assert_non_null(lg);
            for (int32_t v = 0; v < nv; v++) {
                const size_t k = (size_t)i * (size_t)nv + (size_t)v;
                assert_true(isfinite(lg[v]));
                d_ref = fmax(d_ref, fabs((double)lg[v] - ref[k]));
                d_emu = fmax(d_emu, fabs((double)lg[v] - emu[k]));
                max_ref = fmax(max_ref, fabs(ref[k]));
            }
        }
        const double scale = fmax(1.0, max_ref);
        print_message("%s: rel to exact oracle %.3g (tol %.0e), to rounding oracle %.3g (tol "
                      "%.0e)\n",
                      cs_type_name(k_types[t]), d_ref / scale, TOL_E2E_REL, d_emu / scale,
                      TOL_E2E_ROUNDED_REL);
        assert_true(max_ref > 0);
        assert_true(d_ref <= TOL_E2E_REL * scale);
        if (type_traits_get(k_types[t])->vec_dot_type == CS_TYPE_Q8_0)
            assert_true(d_emu <= TOL_E2E_ROUNDED_REL * scale);
        cs_batch_free(b);
        cs_context_free(c);
        free(ref), free(emu);
        ref_model_free(rm);
        cs_model_free(m);
        unlink(path);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legacy_dequantize_handmade),
        cmocka_unit_test(test_legacy_roundtrip_error),
        cmocka_unit_test(test_legacy_vec_dot_vs_double),
        cmocka_unit_test(test_legacy_simd_bit_identical),
        cmocka_unit_test(test_legacy_model_end_to_end),
    };
    return test_run(tests, NULL, NULL);
}
