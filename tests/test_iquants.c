/* test_iquants.c: the IQ4_NL (Q8_0 activations) and IQ4_XS (Q8_K
 * activations) weight formats: dequantization of hand-built blocks against
 * the documented layout, quantize -> dequantize error bounds, reference
 * dots against float64 sums, the AVX2 and AVX-512 dots against the
 * reference (and bit-identical to each other), and an end-to-end decode of
 * generated models against the float64 oracle. Fixed seeds. (Bytes and
 * floats equal to ggml's own: checked against libggml by hand and by the
 * peer test, not here.) */
#include "test.h"

#include <math.h>

#include "fixtures/e2e_logits.h"
#include "fixtures/ref_forward.h"
#include "kernels/iquants.h"
#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "types.h"

/* quantize -> dequantize RMS error relative to the data's RMS (uniform
 * [-1, 1) with 6x outliers every 97 elements; measured 0.090 (IQ4_NL) and
 * 0.091 (IQ4_XS), bounds leave about 1.2x margin). */
#define TOL_RT_IQ4_NL 0.11
#define TOL_RT_IQ4_XS 0.11
/* Reference dot vs float64 sum of the same dequantized products, relative
 * to sum |w_i * a_i| (the block scales and the float sum round). */
#define TOL_DOT_REL 1e-5
/* SIMD dot vs the reference dot (ggml's x86 order against its generic
 * order: the same exact block sums, rounded in a different order),
 * relative to sum |w_i * a_i|; measured floor 8.3e-8 over the cases below. */
#define TOL_SIMD_REL 1e-6
/* End to end: engine logits vs the float64 oracle (on Q8_0-rounded
 * activations for IQ4_NL, unrounded ones for IQ4_XS), relative to max
 * |logit| (as test_kquants); measured 0.021 / 0.020. */
#define TOL_E2E_REL 0.05

static uint64_t g_rng;

static void fill(float *x, int64_t n, uint64_t seed) {
    test_fill(x, n, seed, &g_rng);
}

static const int32_t k_types[2] = {CS_TYPE_IQ4_NL, CS_TYPE_IQ4_XS};

static size_t row_bytes(int32_t type, int64_t n) {
    uint64_t b = 0;
    assert_true(type_row_size(type, n, &b));
    return (size_t)b;
}

/* The activation row of a weight type: Q8_0 or Q8_K blocks. */
static void quantize_act(int32_t type, const float *x, void *a, int64_t n) {
    kernels_ref()->from_float[type_traits_get(type)->vec_dot_type](x, a, n);
}

static double act_value(int32_t type, const void *a, int64_t i) {
    if (type == CS_TYPE_IQ4_NL) {
        const block_q8_0 *q = a;
        return (double)fp16_to_fp32(q[i / 32].d) * q[i / 32].qs[i % 32];
    }
    const block_q8_K *q = a;
    return (double)q[i / 256].d * q[i / 256].qs[i % 256];
}

/* ------------------------------------------------- hand-made blocks */

static void test_iquants_dequantize_handmade(void **state) {
    (void)state;
    /* levels ascending, as ggml's table */
    for (int j = 1; j < 16; j++) assert_true(iq4nl_values[j - 1] < iq4nl_values[j]);
    assert_int_equal(iq4nl_values[0], -127);
    assert_int_equal(iq4nl_values[15], 113);

    block_iq4_nl nl[2];
    float y[256];
    for (int b = 0; b < 2; b++) {
        nl[b].d = fp32_to_fp16(b ? -0.25f : 0.5f);
        for (int j = 0; j < 16; j++) nl[b].qs[j] = (uint8_t)(j | ((15 - j) << 4));
    }
    dequantize_row_iq4_nl(nl, y, 64);
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 16; j++) {
            const float d = b ? -0.25f : 0.5f;
            assert_true(y[32 * b + j] == d * (float)iq4nl_values[j]);
            assert_true(y[32 * b + 16 + j] == d * (float)iq4nl_values[15 - j]);
        }

    block_iq4_xs xs;
    memset(&xs, 0, sizeof xs);
    xs.d = fp32_to_fp16(0.125f);
    const int ls[8] = {0, 63, 32, 31, 33, 16, 47, 5}; /* 6-bit scales, multiplier ls - 32 */
    for (int b = 0; b < 8; b++) {
        xs.scales_l[b / 2] |= (uint8_t)((ls[b] & 0xF) << (4 * (b % 2)));
        xs.scales_h |= (uint16_t)((ls[b] >> 4) << (2 * b));
    }
    for (int i = 0; i < 128; i++) xs.qs[i] = (uint8_t)((i * 7) & 0xFF);
    dequantize_row_iq4_xs(&xs, y, 256);
    for (int b = 0; b < 8; b++)
        for (int j = 0; j < 16; j++) {
            const float dl = 0.125f * (float)(ls[b] - 32);
            const uint8_t q = xs.qs[16 * b + j];
            assert_true(y[32 * b + j] == dl * (float)iq4nl_values[q & 0xF]);
            assert_true(y[32 * b + 16 + j] == dl * (float)iq4nl_values[q >> 4]);
        }
    /* dequantize_row goes through the type table */
    float y2[256];
    dequantize_row(CS_TYPE_IQ4_XS, &xs, y2, 256);
    assert_memory_equal(y, y2, sizeof y2);
}

static void test_iquants_roundtrip_error(void **state) {
    (void)state;
    enum { N = 256 * 16 };
    static float x[N], y[N];
    static uint8_t buf[N];
    const double tol[2] = {TOL_RT_IQ4_NL, TOL_RT_IQ4_XS};
    fill(x, N, 7);
    for (int t = 0; t < 2; t++) {
        quantize_row(k_types[t], x, buf, N);
        dequantize_row(k_types[t], buf, y, N);
        const double e = test_rel_rms(x, y, N);
        print_message("%s: relative rms error %.3g\n", cs_type_name(k_types[t]), e);
        assert_true(e <= tol[t]);
        /* all-zero input stays zero */
        memset(x, 0, sizeof(float) * 256);
        quantize_row(k_types[t], x, buf, 256);
        dequantize_row(k_types[t], buf, y, 256);
        for (int i = 0; i < 256; i++) assert_true(y[i] == 0.0f);
        fill(x, N, 7);
    }
}

/* ---------------------------------------------------------- dots */

static double ref_dot64(int32_t type, const void *w, const void *a, int64_t n, double *sabs) {
    float *wf = malloc((size_t)n * sizeof(float));
    assert_non_null(wf);
    dequantize_row(type, w, wf, n);
    double s = 0, sa = 0;
    for (int64_t i = 0; i < n; i++) {
        double p = (double)wf[i] * act_value(type, a, i);
        s += p;
        sa += fabs(p);
    }
    free(wf);
    *sabs = sa;
    return s;
}

static void test_iquants_vec_dot_vs_double(void **state) {
    (void)state;
    enum { N = 256 * 8 };
    static float xw[N], xa[N];
    static uint8_t w[N], a[N / 256 * sizeof(block_q8_K)];
    for (int rep = 0; rep < 8; rep++) {
        fill(xw, N, 100 + (uint64_t)rep);
        fill(xa, N, 200 + (uint64_t)rep);
        for (int t = 0; t < 2; t++) {
            quantize_row(k_types[t], xw, w, N);
            quantize_act(k_types[t], xa, a, N);
            float s = 0;
            type_traits_get(k_types[t])->vec_dot_ref(N, &s, w, a);
            assert_ptr_equal(kernels_ref()->vec_dot[k_types[t]],
                             type_traits_get(k_types[t])->vec_dot_ref);
            double sa, want = ref_dot64(k_types[t], w, a, N, &sa);
            assert_true(fabs((double)s - want) <= TOL_DOT_REL * sa);
        }
    }
}

/* Random weight bytes with finite f16 scales: every index and scale bit. */
static void random_blocks(int32_t type, uint8_t *w, int64_t n) {
    const size_t bs = (size_t)type_traits_get(type)->size;
    const size_t nb = row_bytes(type, n) / bs;
    for (size_t i = 0; i < nb * bs; i++) {
        g_rng = g_rng * 6364136223846793005ULL + 1;
        w[i] = (uint8_t)(g_rng >> 56);
    }
    for (size_t b = 0; b < nb; b++) {
        const uint16_t h = fp32_to_fp16(0.01f * (float)(b % 7 + 1));
        memcpy(w + b * bs, &h, 2);
    }
}

static void test_iquants_simd_vs_ref(void **state) {
    (void)state;
#if defined(__x86_64__) || defined(__i386__)
    const char *names[6] = {"avx2",        "avx512",  "avx512novnni",
                            "avx512noext", "avxvnni", "avxvnni_evex"};
    const kernels_table *tabs[6];
    int n_tabs = 0;
    for (int i = 0; i < 6; i++)
        if ((tabs[n_tabs] = kernels_by_name(names[i])) != NULL) n_tabs++;
    if (n_tabs == 0) test_skip(CS_SKIP_CPU, "no SIMD kernels for this CPU");
    /* IQ4_NL lengths with an odd block count (the scalar tail) too */
    const int64_t lens[2][3] = {{32, 96, 256 * 4}, {256, 512, 256 * 4}};
    enum { NMAX = 256 * 4 };
    static float xw[NMAX], xa[NMAX];
    static uint8_t w[NMAX], a[NMAX / 256 * sizeof(block_q8_K) + 64];
    double worst = 0;
    for (int rep = 0; rep < 64; rep++) {
        fill(xw, NMAX, 300 + (uint64_t)rep);
        fill(xa, NMAX, 400 + (uint64_t)rep);
        if (rep % 8 == 1) /* saturated activations: every q8 at +-127 */
            for (int i = 0; i < NMAX; i++) xa[i] = (i % 3) ? 1.0f : -1.0f;
        if (rep % 8 == 2) /* extreme levels everywhere */
            for (int i = 0; i < NMAX; i++) xw[i] = (i % 2) ? 100.0f : -100.0f;
        for (int t = 0; t < 2; t++)
            for (int li = 0; li < 3; li++) {
                const int32_t type = k_types[t];
                const int64_t n = lens[t][li];
                quantize_row(type, xw, w, n);
                if (rep % 8 == 3) random_blocks(type, w, n);
                quantize_act(type, xa, a, n);
                float s_ref = 0, s_first = 0;
                type_traits_get(type)->vec_dot_ref(n, &s_ref, w, a);
                double sa;
                (void)ref_dot64(type, w, a, n, &sa);
                for (int k = 0; k < n_tabs; k++) {
                    float s = 0;
                    tabs[k]->vec_dot[type](n, &s, w, a);
                    const double err = fabs((double)s - (double)s_ref);
                    if (sa > 0) worst = fmax(worst, err / sa);
                    assert_true(err <= TOL_SIMD_REL * sa);
                    if (k == 0) s_first = s;
                    /* every SIMD table runs ggml's x86 order: identical */
                    assert_memory_equal(&s, &s_first, sizeof s);
                }
            }
    }
    print_message("simd vs ref: worst |diff| / sum|w*a| = %.3g\n", worst);
#else
    test_skip(CS_SKIP_CPU, "no x86 SIMD kernels on this architecture");
#endif
}

/* ------------------------------------------------------ end to end */

static void run_e2e(int32_t type, int32_t n_embd, int32_t n_ff, uint64_t seed) {
    cs_gen_model_params p;
    memset(&p, 0, sizeof p);
    assert_true(cs_gen_model_preset("tiny", &p));
    p.vocab_path = test_bundled_model();
    if (n_embd) {
        p.n_embd = n_embd;
        p.n_ff = n_ff;
        p.n_layer = 2;
        p.n_head = 4;
        p.n_head_kv = 2;
    }
    p.type = type;
    p.seed = seed;
    char path[4096];
    test_tmp_path("iq.gguf", path, sizeof path);
    assert_int_equal(cs_gen_model_write(&p, path), CS_OK);

    /* the same 6 tokens as before the helper existed (LCG from 99) */
    const double rel = fixture_e2e_logits_rel_err(path, 99, -1);
    print_message("%s: max |engine - oracle| / max |logit| = %.3g\n", cs_type_name(type), rel);
    assert_true(rel <= TOL_E2E_REL);
    unlink(path);
}

static void test_iquants_end_to_end(void **state) {
    (void)state;
    run_e2e(CS_TYPE_IQ4_NL, 0, 0, 5);     /* the tiny preset: rows of 64 */
    run_e2e(CS_TYPE_IQ4_XS, 256, 512, 6); /* rows a multiple of 256 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iquants_dequantize_handmade),
        cmocka_unit_test(test_iquants_roundtrip_error),
        cmocka_unit_test(test_iquants_vec_dot_vs_double),
        cmocka_unit_test(test_iquants_simd_vs_ref),
        cmocka_unit_test(test_iquants_end_to_end),
    };
    return test_run(tests, NULL, NULL);
}
