/* test_sampler.c: the sampler chain (logit bias, penalties, top-k, top-p,
 * min-p, temperature, draw) through the public API. Expected distributions are
 * computed here from the definitions (softmax in double, hand-worked
 * nuclei), never taken from the sampler. Every run uses fixed seeds. */
#include "test.h"

#include <math.h>

#include "common.h" /* mem_fail_after */
#include "cs_limits.h"

/* Empirical frequencies over N_DRAWS draws: with p <= 0.5 the standard
 * deviation of a frequency is at most sqrt(0.25 / 20000) = 0.0035, so
 * 0.015 is more than four of them. */
#define N_DRAWS  20000
#define TOL_FREQ 0.015
/* Chi-square critical value for 4 degrees of freedom at alpha = 0.001. */
#define CHI2_CRIT_DF4   18.467
#define N_SEQ_DRAWS     1000
#define N_SUPPORT_DRAWS 4000

/* A tiny deterministic generator for test logits (not the sampler's). */
static uint64_t test_lcg_state;
static float test_rand_logit(void) {
    test_lcg_state = test_lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(test_lcg_state >> 40) / (double)(1u << 24)) * 8.0f - 4.0f;
}

static cs_sampler_params plain_params(uint64_t seed, float temp) {
    cs_sampler_params p = cs_sampler_default_params();
    p.seed = seed;
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 0;
    return p;
}

static cs_sampler *new_sampler(const cs_sampler_params *p, int32_t n_vocab) {
    cs_sampler *s = NULL;
    assert_int_equal(cs_sampler_new(p, n_vocab, &s), CS_OK);
    assert_non_null(s);
    return s;
}

/* counts[t] += 1 for each of n draws; every token must be in range. */
static void draw_counts(cs_sampler *s, const float *logits, int32_t n_vocab, int n, int *counts) {
    memset(counts, 0, sizeof(int) * (size_t)n_vocab);
    for (int i = 0; i < n; i++) {
        cs_token t = cs_sampler_sample(s, logits);
        assert_true(t >= 0 && t < n_vocab);
        counts[t]++;
    }
}

/* |got - want| <= tol, in double (cmocka's assert_float_equal is float). */
static void assert_near(double got, double want, double tol) {
    if (!(fabs(got - want) <= tol)) fail_msg("got %.6f, want %.6f +- %.6f", got, want, tol);
}

/* softmax(logits / temp) in double, the definition. */
static void softmax_ref(const float *logits, int n, double temp, double *probs) {
    double mx = -(double)INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++) mx = fmax(mx, (double)logits[i]);
    for (int i = 0; i < n; i++) sum += probs[i] = exp(((double)logits[i] - mx) / temp);
    for (int i = 0; i < n; i++) probs[i] /= sum;
}

/* ------------------------------------------------------------- params */

static void test_sampler_default_params_match_llama_cpp(void **state) {
    (void)state;
    cs_sampler_params p = cs_sampler_default_params();
    assert_true(p.temp == 0.8f);
    assert_int_equal(p.top_k, 40);
    assert_true(p.top_p == 0.95f);
    assert_true(p.min_p == 0.05f);
    assert_true(p.repeat_penalty == 1.0f);
    assert_int_equal(p.repeat_last_n, 64);
    assert_true(p.frequency_penalty == 0.0f);
    assert_true(p.presence_penalty == 0.0f);
    assert_true(p.seed == 0);
}

static void expect_invalid(const cs_sampler_params *p, int32_t n_vocab, const char *field) {
    cs_sampler *s = (cs_sampler *)(uintptr_t)1; /* must be reset to NULL */
    assert_int_equal(cs_sampler_new(p, n_vocab, &s), CS_ERR_INVALID_ARG);
    assert_null(s);
    if (strstr(cs_last_error(), field) == NULL) {
        fail_msg("error '%s' does not name '%s'", cs_last_error(), field);
    }
}

static void test_sampler_invalid_params_rejected(void **state) {
    (void)state;
    const cs_sampler_params good = cs_sampler_default_params();
    cs_sampler_params p;

    expect_invalid(&good, 0, "n_vocab");
    expect_invalid(&good, -5, "n_vocab");
    expect_invalid(&good, CS_MAX_VOCAB + 1, "n_vocab");
    p = good, p.temp = NAN;
    expect_invalid(&p, 10, "temp");
    p = good, p.temp = INFINITY;
    expect_invalid(&p, 10, "temp");
    p = good, p.top_p = 0.0f;
    expect_invalid(&p, 10, "top_p");
    p = good, p.top_p = 1.5f;
    expect_invalid(&p, 10, "top_p");
    p = good, p.top_p = NAN;
    expect_invalid(&p, 10, "top_p");
    p = good, p.min_p = NAN;
    expect_invalid(&p, 10, "min_p");
    p = good, p.min_p = 1.5f;
    expect_invalid(&p, 10, "min_p");
    p = good, p.repeat_penalty = -1.1f;
    expect_invalid(&p, 10, "repeat_penalty");
    p = good, p.repeat_penalty = 0.0f;
    expect_invalid(&p, 10, "repeat_penalty");
    p = good, p.repeat_penalty = NAN;
    expect_invalid(&p, 10, "repeat_penalty");
    p = good, p.repeat_last_n = -1;
    expect_invalid(&p, 10, "repeat_last_n");
    p = good, p.repeat_last_n = CS_MAX_CTX + 1;
    expect_invalid(&p, 10, "repeat_last_n");
    p = good, p.frequency_penalty = NAN;
    expect_invalid(&p, 10, "frequency_penalty = nan");
    p = good, p.frequency_penalty = 2.5f;
    expect_invalid(&p, 10, "frequency_penalty = 2.5");
    p = good, p.frequency_penalty = -INFINITY;
    expect_invalid(&p, 10, "frequency_penalty = -inf");
    p = good, p.presence_penalty = -2.01f;
    expect_invalid(&p, 10, "presence_penalty = -2.01");
    p = good, p.presence_penalty = INFINITY;
    expect_invalid(&p, 10, "presence_penalty = inf");

    cs_sampler *s = NULL;
    assert_int_equal(cs_sampler_new(NULL, 10, &s), CS_ERR_INVALID_ARG);
    assert_null(s);
    assert_int_equal(cs_sampler_new(&good, 10, NULL), CS_ERR_INVALID_ARG);

    /* Boundaries that are valid: top_p = 1 and min_p = 1, negative top_k
     * and min_p (off), temp 0 and negative (greedy). */
    p = good, p.top_p = 1.0f, p.min_p = 1.0f, p.top_k = -3;
    s = new_sampler(&p, 10);
    cs_sampler_free(s);
    p = good, p.temp = -1.0f, p.min_p = -0.5f;
    s = new_sampler(&p, 10);
    cs_sampler_free(s);
    p = good, p.frequency_penalty = 2.0f, p.presence_penalty = -2.0f;
    s = new_sampler(&p, 10);
    cs_sampler_free(s);
}

static void test_sampler_null_safe(void **state) {
    (void)state;
    cs_sampler_free(NULL);
    cs_sampler_accept(NULL, 3);
    cs_sampler_reset(NULL);
    const float logits[3] = {0.0f, 1.0f, 2.0f};
    assert_int_equal(cs_sampler_sample(NULL, logits), -1);
    cs_sampler_params p = cs_sampler_default_params();
    cs_sampler *s = new_sampler(&p, 3);
    assert_int_equal(cs_sampler_sample(s, NULL), -1);
    cs_sampler_accept(s, -1); /* out of range: ignored */
    cs_sampler_accept(s, 3);
    cs_sampler_free(s);
}

static void test_sampler_new_out_of_memory(void **state) {
    (void)state;
    cs_sampler_params p = cs_sampler_default_params();
    cs_sampler *s = (cs_sampler *)(uintptr_t)1;
    mem_fail_after(0);
    cs_status st = cs_sampler_new(&p, 100, &s);
    mem_fail_after(-1);
    assert_int_equal(st, CS_ERR_NOMEM);
    assert_null(s);
}

/* The contract: no allocation per sample. With every allocation failing,
 * sampling still works. */
static void test_sampler_sample_does_not_allocate(void **state) {
    (void)state;
    enum { N = 2000 };
    static float logits[N];
    test_lcg_state = 7;
    for (int i = 0; i < N; i++) logits[i] = test_rand_logit();
    cs_sampler_params p = cs_sampler_default_params();
    p.repeat_penalty = 1.3f;
    cs_sampler *s = new_sampler(&p, N);
    cs_token got[50];
    mem_fail_after(0);
    for (int i = 0; i < 50; i++) {
        got[i] = cs_sampler_sample(s, logits);
        cs_sampler_accept(s, got[i]);
    }
    mem_fail_after(-1); /* before any assert can jump out */
    for (int i = 0; i < 50; i++) assert_true(got[i] >= 0 && got[i] < N);
    cs_sampler_free(s);
}

/* ------------------------------------------------------------- greedy */

static void test_sampler_greedy_argmax_lowest_id_on_ties(void **state) {
    (void)state;
    const float logits[6] = {0.1f, 2.0f, -1.0f, 2.0f, 1.5f, 2.0f};
    cs_sampler_params p = cs_sampler_default_params();
    p.temp = 0.0f;
    cs_sampler *s = new_sampler(&p, 6);
    for (int i = 0; i < 3; i++) assert_int_equal(cs_sampler_sample(s, logits), 1);
    cs_sampler_free(s);

    p.temp = -1.0f; /* negative is greedy too */
    s = new_sampler(&p, 6);
    assert_int_equal(cs_sampler_sample(s, logits), 1);
    cs_sampler_free(s);
}

static void test_sampler_greedy_nan_and_inf(void **state) {
    (void)state;
    cs_sampler_params p = plain_params(1, 0.0f);
    cs_sampler *s = new_sampler(&p, 4);
    const float with_nan[4] = {NAN, -INFINITY, -3.0f, NAN};
    assert_int_equal(cs_sampler_sample(s, with_nan), 2);
    const float all_masked[4] = {-INFINITY, NAN, -INFINITY, -INFINITY};
    assert_int_equal(cs_sampler_sample(s, all_masked), 0);
    const float pos_inf[4] = {1.0f, INFINITY, 3.0f, INFINITY};
    assert_int_equal(cs_sampler_sample(s, pos_inf), 1);
    cs_sampler_free(s);
}

/* --------------------------------------------------------- RNG stream */

static void test_sampler_same_seed_same_sequence(void **state) {
    (void)state;
    enum { N = 50 };
    float logits[N];
    test_lcg_state = 11;
    for (int i = 0; i < N; i++) logits[i] = test_rand_logit() * 0.5f;
    cs_sampler_params p = plain_params(1234, 1.0f);
    cs_sampler *a = new_sampler(&p, N);
    cs_sampler *b = new_sampler(&p, N);
    p.seed = 1235;
    cs_sampler *c = new_sampler(&p, N);

    static cs_token seq_a[N_SEQ_DRAWS];
    int n_differ = 0, n_distinct = 0;
    int seen[N] = {0};
    for (int i = 0; i < N_SEQ_DRAWS; i++) {
        seq_a[i] = cs_sampler_sample(a, logits);
        assert_int_equal(cs_sampler_sample(b, logits), seq_a[i]);
        if (cs_sampler_sample(c, logits) != seq_a[i]) n_differ++;
        if (!seen[seq_a[i]]++) n_distinct++;
    }
    /* Two independent streams over ~50 tokens agree only by chance (a few
     * percent of the time); demand that most draws differ. */
    assert_true(n_differ > N_SEQ_DRAWS / 2);
    /* And the stream is not stuck on one token. */
    assert_true(n_distinct > 10);

    /* reset restarts the stream from the original seed. */
    cs_sampler_reset(a);
    for (int i = 0; i < N_SEQ_DRAWS; i++) assert_int_equal(cs_sampler_sample(a, logits), seq_a[i]);

    cs_sampler_free(a);
    cs_sampler_free(b);
    cs_sampler_free(c);
}

/* ------------------------------------------------------- distributions */

static void test_sampler_distribution_matches_softmax(void **state) {
    (void)state;
    const float logits[5] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
    double probs[5];
    softmax_ref(logits, 5, 1.0, probs);
    cs_sampler_params p = plain_params(42, 1.0f);
    cs_sampler *s = new_sampler(&p, 5);
    int counts[5];
    draw_counts(s, logits, 5, N_DRAWS, counts);
    double chi2 = 0.0;
    for (int i = 0; i < 5; i++) {
        double expect = probs[i] * N_DRAWS;
        chi2 += (counts[i] - expect) * (counts[i] - expect) / expect;
        assert_near((double)counts[i] / N_DRAWS, probs[i], TOL_FREQ);
    }
    assert_true(chi2 < CHI2_CRIT_DF4);
    cs_sampler_free(s);
}

static void test_sampler_temperature_sharpens(void **state) {
    (void)state;
    const float logits[5] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
    const float temps[3] = {2.0f, 1.0f, 0.5f};
    double top_freq[3];
    for (int k = 0; k < 3; k++) {
        cs_sampler_params p = plain_params(7, temps[k]);
        cs_sampler *s = new_sampler(&p, 5);
        int counts[5];
        double probs[5];
        draw_counts(s, logits, 5, N_DRAWS, counts);
        softmax_ref(logits, 5, (double)temps[k], probs);
        for (int i = 0; i < 5; i++) {
            assert_near((double)counts[i] / N_DRAWS, probs[i], TOL_FREQ);
        }
        top_freq[k] = (double)counts[4] / N_DRAWS;
        cs_sampler_free(s);
    }
    assert_true(top_freq[0] < top_freq[1]);
    assert_true(top_freq[1] < top_freq[2]);
}

static void test_sampler_positive_inf_shares_mass(void **state) {
    (void)state;
    const float logits[5] = {5.0f, INFINITY, NAN, INFINITY, -INFINITY};
    cs_sampler_params p = plain_params(3, 1.0f);
    cs_sampler *s = new_sampler(&p, 5);
    int counts[5];
    draw_counts(s, logits, 5, N_SUPPORT_DRAWS, counts);
    assert_int_equal(counts[0] + counts[2] + counts[4], 0);
    assert_near((double)counts[1] / N_SUPPORT_DRAWS, 0.5, 3 * TOL_FREQ);
    cs_sampler_free(s);

    /* All masked: token 0, documented. */
    const float masked[5] = {-INFINITY, NAN, -INFINITY, -INFINITY, NAN};
    p.top_k = 2;
    s = new_sampler(&p, 5);
    for (int i = 0; i < 10; i++) assert_int_equal(cs_sampler_sample(s, masked), 0);
    cs_sampler_free(s);
}

/* -------------------------------------------------------------- top-k */

static void test_sampler_top_k_one_equals_greedy(void **state) {
    (void)state;
    enum { N = 1000 };
    static float logits[N];
    cs_sampler_params pk = plain_params(5, 1.0f);
    pk.top_k = 1;
    cs_sampler_params pg = plain_params(5, 0.0f);
    cs_sampler *sk = new_sampler(&pk, N);
    cs_sampler *sg = new_sampler(&pg, N);
    test_lcg_state = 99;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < N; i++) logits[i] = test_rand_logit();
        /* Every few rounds plant a tie for the maximum. */
        if (round % 3 == 0) logits[N - 1 - round] = logits[round] = 10.0f;
        int best = 0;
        for (int i = 1; i < N; i++) {
            if (logits[i] > logits[best]) best = i;
        }
        assert_int_equal(cs_sampler_sample(sk, logits), best);
        assert_int_equal(cs_sampler_sample(sg, logits), best);
    }
    cs_sampler_free(sk);
    cs_sampler_free(sg);
}

static void test_sampler_top_k_restricts_support(void **state) {
    (void)state;
    /* Token i has logit i / 4: the top 3 are ids 9, 8, 7. */
    enum { N = 10 };
    float logits[N];
    for (int i = 0; i < N; i++) logits[i] = (float)i / 4.0f;
    cs_sampler_params p = plain_params(17, 1.0f);
    p.top_k = 3;
    cs_sampler *s = new_sampler(&p, N);
    int counts[N];
    draw_counts(s, logits, N, N_SUPPORT_DRAWS, counts);
    for (int i = 0; i < N; i++) {
        if (i >= 7) {
            assert_true(counts[i] > 0);
        } else {
            assert_int_equal(counts[i], 0);
        }
    }
    /* Renormalized over the three: softmax of {1.75, 2.0, 2.25}. */
    double probs[3];
    softmax_ref(logits + 7, 3, 1.0, probs);
    for (int i = 0; i < 3; i++) {
        assert_near((double)counts[7 + i] / N_SUPPORT_DRAWS, probs[i], 2 * TOL_FREQ);
    }
    cs_sampler_free(s);
}

/* A 32000-token row and top_k 40: exactly the 40 highest ids can appear
 * (the oracle sorts all 32000 here). */
static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static void test_sampler_top_k_large_vocab(void **state) {
    (void)state;
    enum { N = 32000, K = 40 };
    static float logits[N], sorted[N];
    test_lcg_state = 2024;
    for (int i = 0; i < N; i++) logits[i] = test_rand_logit();
    memcpy(sorted, logits, sizeof(logits));
    qsort(sorted, N, sizeof(float), cmp_desc);
    const float kth = sorted[K - 1];
    assert_true(sorted[K] < kth); /* no tie at the cut for this seed */
    cs_sampler_params p = plain_params(8, 1.5f);
    p.top_k = K;
    cs_sampler *s = new_sampler(&p, N);
    int n_distinct = 0;
    static int seen[N];
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 2000; i++) {
        cs_token t = cs_sampler_sample(s, logits);
        assert_true(t >= 0 && t < N);
        assert_true(logits[t] >= kth);
        if (!seen[t]++) n_distinct++;
    }
    assert_true(n_distinct > K / 2);
    cs_sampler_free(s);
}

/* -------------------------------------------------------------- top-p */

static void test_sampler_top_p_nucleus(void **state) {
    (void)state;
    /* Probabilities by id: {0.10, 0.50, 0.15, 0.25}. Sorted: 0.50 (id 1),
     * 0.25 (id 3), 0.15 (id 2), 0.10 (id 0); cumulative 0.50, 0.75, 0.90, 1. */
    const float logits[4] = {logf(0.10f), logf(0.50f), logf(0.15f), logf(0.25f)};
    int counts[4];

    /* p = 0.4: 0.50 >= 0.4 already, only id 1. */
    cs_sampler_params p = plain_params(21, 1.0f);
    p.top_p = 0.4f;
    cs_sampler *s = new_sampler(&p, 4);
    draw_counts(s, logits, 4, 500, counts);
    assert_int_equal(counts[1], 500);
    cs_sampler_free(s);

    /* p = 0.7: {id 1, id 3}, renormalized to 2/3 and 1/3. */
    p.top_p = 0.7f;
    s = new_sampler(&p, 4);
    draw_counts(s, logits, 4, N_SUPPORT_DRAWS, counts);
    assert_int_equal(counts[0] + counts[2], 0);
    assert_near((double)counts[1] / N_SUPPORT_DRAWS, 2.0 / 3.0, 2 * TOL_FREQ);
    cs_sampler_free(s);

    /* p = 0.8: {1, 3, 2}; id 0 never. */
    p.top_p = 0.8f;
    s = new_sampler(&p, 4);
    draw_counts(s, logits, 4, N_SUPPORT_DRAWS, counts);
    assert_int_equal(counts[0], 0);
    assert_true(counts[1] > 0 && counts[2] > 0 && counts[3] > 0);
    cs_sampler_free(s);
}

/* 3000 tokens: 200 at logit 0 (ids 7j + 3), the other 2800 at logit -3.
 * z = 200 + 2800 e^-3 = 339.40, so p = 0.5 needs 0.5 z = 169.70 of the tied
 * tokens: 170 of them, and ties go to the lowest ids, j < 170. The nucleus
 * is past the first sorted chunks, so this exercises the growing prefix. */
static void test_sampler_top_p_large_nucleus_ties_by_id(void **state) {
    (void)state;
    enum { N = 3000, N_TOP = 200, N_KEEP = 170 };
    static float logits[N];
    for (int i = 0; i < N; i++) logits[i] = -3.0f;
    for (int j = 0; j < N_TOP; j++) logits[7 * j + 3] = 0.0f;
    cs_sampler_params p = plain_params(33, 1.0f);
    p.top_p = 0.5f;
    cs_sampler *s = new_sampler(&p, N);
    static int counts[N];
    draw_counts(s, logits, N, N_SUPPORT_DRAWS, counts);
    for (int i = 0; i < N; i++) {
        bool in_nucleus = i % 7 == 3 && (i - 3) / 7 < N_KEEP;
        if (in_nucleus) {
            assert_true(counts[i] > 0); /* about 23 expected each */
        } else if (counts[i] != 0) {
            fail_msg("token %d outside the nucleus drawn %d times", i, counts[i]);
        }
    }
    cs_sampler_free(s);
}

/* -------------------------------------------------------------- min-p */

static void test_sampler_min_p_example(void **state) {
    (void)state;
    /* Probabilities by id {0.07, 0.40, 0.03, 0.20, 0.30}; min_p = 0.2 keeps
     * p >= 0.2 * 0.40 = 0.08: ids 1, 3, 4. Renormalized: 0.4 / 0.9 for id 1. */
    const float logits[5] = {logf(0.07f), logf(0.40f), logf(0.03f), logf(0.20f), logf(0.30f)};
    cs_sampler_params p = plain_params(55, 1.0f);
    p.min_p = 0.2f;
    cs_sampler *s = new_sampler(&p, 5);
    int counts[5];
    draw_counts(s, logits, 5, N_SUPPORT_DRAWS, counts);
    assert_int_equal(counts[0] + counts[2], 0);
    assert_true(counts[3] > 0 && counts[4] > 0);
    assert_near((double)counts[1] / N_SUPPORT_DRAWS, 0.4 / 0.9, 2 * TOL_FREQ);
    cs_sampler_free(s);

    /* min_p = 1 keeps only the maximum. */
    p.min_p = 1.0f;
    s = new_sampler(&p, 5);
    draw_counts(s, logits, 5, 200, counts);
    assert_int_equal(counts[1], 200);
    cs_sampler_free(s);
}

/* The full default chain (top-k 40, top-p 0.95, min-p 0.05, temp 0.8) on a
 * hand-made row: ids 0..3 carry probabilities {0.6, 0.3, 0.06, 0.04} among
 * a sea of tokens at 1e-9 each. top-p: 0.6, 0.9, 0.96 >= 0.95, so id 3 is
 * cut; min-p (0.05 * 0.6 = 0.03) would keep it but runs after top-p. */
static void test_sampler_default_chain(void **state) {
    (void)state;
    enum { N = 500 };
    float logits[N];
    for (int i = 0; i < N; i++) logits[i] = logf(1e-9f);
    logits[0] = logf(0.6f), logits[1] = logf(0.3f), logits[2] = logf(0.06f);
    logits[3] = logf(0.04f);
    cs_sampler_params p = cs_sampler_default_params();
    p.seed = 77;
    cs_sampler *s = new_sampler(&p, N);
    int counts[N];
    draw_counts(s, logits, N, N_SUPPORT_DRAWS, counts);
    assert_true(counts[0] > 0 && counts[1] > 0 && counts[2] > 0);
    assert_int_equal(counts[0] + counts[1] + counts[2], N_SUPPORT_DRAWS);
    cs_sampler_free(s);
}

/* ----------------------------------------------- the chain vs an oracle */

/* Naive oracle of the kept set: sort every id by (logit desc, id asc),
 * cut to top_k, then top-p on a double softmax of what is left, then min-p
 * on logits (max + logf(min_p)). Returns the kept count; order[] holds the
 * ranking. */
static const float *oracle_logits;
static int cmp_rank(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    float lx = oracle_logits[x], ly = oracle_logits[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return (x > y) - (x < y);
}

static int oracle_kept(const float *logits, int n, const cs_sampler_params *p, int *order) {
    for (int i = 0; i < n; i++) order[i] = i;
    oracle_logits = logits;
    qsort(order, (size_t)n, sizeof(int), cmp_rank);
    int kept = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    if (p->top_p < 1.0f) {
        double mx = (double)logits[order[0]], z = 0.0, cum = 0.0;
        for (int i = 0; i < kept; i++) z += exp((double)logits[order[i]] - mx);
        for (int i = 0; i < kept; i++) {
            cum += exp((double)logits[order[i]] - mx) / z;
            if (cum >= (double)p->top_p) {
                kept = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float min_logit = logits[order[0]] + logf(p->min_p);
        int i = 1;
        while (i < kept && logits[order[i]] >= min_logit) i++;
        kept = i;
    }
    return kept;
}

/* Random rows (half of them quantized to a few levels, so that ties straddle
 * every cut) under combinations of top-k, top-p and min-p. A token outside
 * the oracle's set must never be drawn; when the set is small, a hot
 * temperature (50: near-uniform, every p >= 0.85 / 20) must reach every
 * member of it (a miss has probability below e^-25 per member). */
static void test_sampler_filters_match_naive_oracle(void **state) {
    (void)state;
    enum { N = 5000, DRAWS = 600, SMALL_SET = 20 };
    static float logits[N];
    static int order[N], rank_of[N], hits[N];
    const int32_t top_ks[4] = {0, 7, 150, 1200};
    const float top_ps[3] = {1.0f, 0.61803f, 0.0917f};
    const float min_ps[3] = {0.0f, 0.0512f, 0.3013f};
    test_lcg_state = 4242;
    int n_cases = 0;
    for (int ik = 0; ik < 4; ik++) {
        for (int ip = 0; ip < 3; ip++) {
            for (int im = 0; im < 3; im++, n_cases++) {
                const bool quantized = n_cases % 2 == 0;
                for (int i = 0; i < N; i++) {
                    float l = test_rand_logit();
                    logits[i] = quantized ? floorf(l) * 0.5f : l;
                }
                cs_sampler_params p = plain_params((uint64_t)n_cases, 50.0f);
                p.top_k = top_ks[ik], p.top_p = top_ps[ip], p.min_p = min_ps[im];
                const int kept = oracle_kept(logits, N, &p, order);
                for (int i = 0; i < N; i++) rank_of[order[i]] = i;
                memset(hits, 0, sizeof(hits));
                cs_sampler *s = new_sampler(&p, N);
                for (int d = 0; d < DRAWS; d++) {
                    cs_token t = cs_sampler_sample(s, logits);
                    assert_true(t >= 0 && t < N);
                    if (rank_of[t] >= kept) {
                        fail_msg("case %d: token %d of rank %d drawn, oracle keeps %d", n_cases, t,
                                 rank_of[t], kept);
                    }
                    hits[t]++;
                }
                cs_sampler_free(s);
                if (kept <= SMALL_SET) {
                    for (int i = 0; i < kept; i++) {
                        if (hits[order[i]] == 0) {
                            fail_msg("case %d: rank %d of %d never drawn", n_cases, i, kept);
                        }
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------- repetition penalty */

static void test_sampler_repeat_penalty_changes_argmax(void **state) {
    (void)state;
    cs_sampler_params p = plain_params(0, 0.0f);
    p.repeat_penalty = 1.1f;
    p.repeat_last_n = 64;
    cs_sampler *s = new_sampler(&p, 3);

    /* Positive logits are divided: 2.0 / 1.1 = 1.82 < 1.9. */
    const float pos[3] = {2.0f, 1.9f, -1.0f};
    assert_int_equal(cs_sampler_sample(s, pos), 0);
    cs_sampler_accept(s, 0);
    assert_int_equal(cs_sampler_sample(s, pos), 1);

    /* Negative logits are multiplied: -1.0 * 1.1 = -1.1 < -1.05. */
    const float neg[3] = {-1.0f, -1.05f, -5.0f};
    assert_int_equal(cs_sampler_sample(s, neg), 1);

    /* Reset forgets the history. */
    cs_sampler_reset(s);
    assert_int_equal(cs_sampler_sample(s, pos), 0);
    assert_int_equal(cs_sampler_sample(s, neg), 0);
    cs_sampler_free(s);
}

static void test_sampler_repeat_penalty_once_per_token(void **state) {
    (void)state;
    /* llama.cpp penalizes a repeated token once, not once per occurrence:
     * 2.0 / 1.1 = 1.82 > 1.7 (still id 0), while 2.0 / 1.21 = 1.65 would not be. */
    cs_sampler_params p = plain_params(0, 0.0f);
    p.repeat_penalty = 1.1f;
    p.repeat_last_n = 8;
    cs_sampler *s = new_sampler(&p, 2);
    const float logits[2] = {2.0f, 1.7f};
    for (int i = 0; i < 5; i++) cs_sampler_accept(s, 0);
    assert_int_equal(cs_sampler_sample(s, logits), 0);
    cs_sampler_free(s);
}

static void test_sampler_repeat_penalty_window(void **state) {
    (void)state;
    cs_sampler_params p = plain_params(0, 0.0f);
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 2;
    cs_sampler *s = new_sampler(&p, 4);
    const float logits[4] = {2.0f, 1.9f, 1.8f, 0.0f};

    cs_sampler_accept(s, 0);
    cs_sampler_accept(s, 1);
    assert_int_equal(cs_sampler_sample(s, logits), 2); /* 0 and 1 penalized */
    cs_sampler_accept(s, 3);                           /* window: {1, 3}; 0 left */
    assert_int_equal(cs_sampler_sample(s, logits), 0);
    cs_sampler_accept(s, 3); /* window: {3, 3} */
    assert_int_equal(cs_sampler_sample(s, logits), 0);
    cs_sampler_accept(s, 0); /* window: {3, 0} */
    assert_int_equal(cs_sampler_sample(s, logits), 1);
    cs_sampler_free(s);

    /* repeat_last_n = 0 turns the penalty off. */
    p.repeat_last_n = 0;
    s = new_sampler(&p, 4);
    cs_sampler_accept(s, 0);
    assert_int_equal(cs_sampler_sample(s, logits), 0);
    cs_sampler_free(s);
}

/* ------------------------------------- frequency and presence penalties */

/* The chain's logits before the filters, computed here from the definitions
 * (llama.cpp's logit-bias then penalties samplers): bias added (-inf bans),
 * then for each token with count > 0 in the window: repetition, then
 * logit -= count * freq + presence, in float. */
static void adjusted_ref(const float *logits, const float *bias, int n, const cs_token *window,
                         int n_window, float repeat, float freq, float presence, float *out) {
    for (int t = 0; t < n; t++) {
        float l = logits[t];
        if (bias) l = bias[t] == -INFINITY ? -INFINITY : l + bias[t];
        int count = 0;
        for (int i = 0; i < n_window; i++) count += window[i] == t;
        if (count > 0) {
            l = l <= 0.0f ? l * repeat : l / repeat;
            l -= (float)count * freq + presence;
        }
        out[t] = l;
    }
}

static int argmax_ref(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

static void test_sampler_frequency_presence_exact(void **state) {
    (void)state;
    cs_sampler_params p = plain_params(0, 0.0f);
    p.repeat_last_n = 8;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    /* token 0 seen 3 times: 2.0 - (3 * 0.5 + 0.25) = 0.25, so 0.3 beats it
     * and 0.2 does not (exact in binary) */
    cs_sampler *s = new_sampler(&p, 2);
    for (int i = 0; i < 3; i++) cs_sampler_accept(s, 0);
    const float a[2] = {2.0f, 0.3f}, b[2] = {2.0f, 0.2f};
    assert_int_equal(cs_sampler_sample(s, a), 1);
    assert_int_equal(cs_sampler_sample(s, b), 0);
    cs_sampler_free(s);

    /* presence alone: once per token, not per occurrence: 1.0 - 0.5 = 0.5 */
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.5f;
    s = new_sampler(&p, 2);
    for (int i = 0; i < 5; i++) cs_sampler_accept(s, 0);
    const float c[2] = {1.0f, 0.4f}, d[2] = {1.0f, 0.6f};
    assert_int_equal(cs_sampler_sample(s, c), 0);
    assert_int_equal(cs_sampler_sample(s, d), 1);
    cs_sampler_free(s);

    /* negative values reward repetition: 0.0 + 2 * 0.5 = 1.0 > 0.9 */
    p.frequency_penalty = -0.5f;
    p.presence_penalty = 0.0f;
    s = new_sampler(&p, 2);
    cs_sampler_accept(s, 0);
    cs_sampler_accept(s, 0);
    const float e[2] = {0.0f, 0.9f};
    assert_int_equal(cs_sampler_sample(s, e), 0);
    cs_sampler_free(s);
}

/* Greedy and sampled choices over random logits and windows, against the
 * direct computation: greedy exactly, draws within TOL_FREQ of the softmax
 * of the directly adjusted logits. The window ring wraps (12 accepted, 6
 * kept), so only the last 6 tokens count. */
static void test_sampler_penalties_match_direct(void **state) {
    (void)state;
    enum { N = 12, ACCEPTED = 12, WINDOW = 6 };
    float logits[N], adj[N];
    double probs[N];
    int counts[N];
    int n_moved = 0; /* rounds where the penalties changed the arg-max */
    test_lcg_state = 31;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) logits[i] = test_rand_logit();
        cs_token acc[ACCEPTED];
        for (int i = 0; i < ACCEPTED; i++) /* ids 0..4: repeats are common */
            acc[i] = (cs_token)((int)((test_rand_logit() + 4.0f) * 8.0f) % 5);
        cs_sampler_params p = plain_params(5, 0.0f);
        p.repeat_last_n = WINDOW;
        p.repeat_penalty = round % 2 ? 1.0f : 1.2f;
        p.frequency_penalty = (float)(round % 5) * 0.3f - 0.6f;
        p.presence_penalty = (float)(round % 3) * 0.7f - 0.7f;
        cs_sampler *s = new_sampler(&p, N);
        for (int i = 0; i < ACCEPTED; i++) cs_sampler_accept(s, acc[i]);
        adjusted_ref(logits, NULL, N, acc + ACCEPTED - WINDOW, WINDOW, p.repeat_penalty,
                     p.frequency_penalty, p.presence_penalty, adj);
        assert_int_equal(cs_sampler_sample(s, logits), argmax_ref(adj, N));
        n_moved += argmax_ref(adj, N) != argmax_ref(logits, N);
        cs_sampler_free(s);
        if (round % 5 != 0) continue; /* draws: a few rounds suffice */
        p.temp = 1.0f;
        s = new_sampler(&p, N);
        for (int i = 0; i < ACCEPTED; i++) cs_sampler_accept(s, acc[i]);
        draw_counts(s, logits, N, N_DRAWS, counts);
        softmax_ref(adj, N, 1.0, probs);
        for (int t = 0; t < N; t++) assert_near((double)counts[t] / N_DRAWS, probs[t], TOL_FREQ);
        cs_sampler_free(s);
    }
    print_message("penalties changed the arg-max in %d of 20 rounds\n", n_moved);
    assert_true(n_moved > 0);
}

/* ------------------------------------------------------------ logit bias */

static void test_sampler_logit_bias(void **state) {
    (void)state;
    cs_sampler_params p = plain_params(0, 0.0f);
    cs_sampler *s = new_sampler(&p, 4);
    const float l[4] = {1.0f, 2.0f, 1.5f, INFINITY};
    assert_int_equal(cs_sampler_sample(s, l), 3);
    /* -inf bans even a +inf logit; a finite bias moves a logit */
    assert_int_equal(cs_sampler_set_logit_bias(s, 3, -INFINITY), CS_OK);
    assert_int_equal(cs_sampler_sample(s, l), 1);
    assert_int_equal(cs_sampler_set_logit_bias(s, 0, 1.25f), CS_OK); /* 2.25 */
    assert_int_equal(cs_sampler_sample(s, l), 0);
    assert_int_equal(cs_sampler_set_logit_bias(s, 0, 0.75f), CS_OK); /* replaced: 1.75 */
    assert_int_equal(cs_sampler_sample(s, l), 1);
    assert_int_equal(cs_sampler_set_logit_bias(s, 1, -1.0f), CS_OK); /* 1.0 */
    assert_int_equal(cs_sampler_sample(s, l), 0);
    assert_int_equal(cs_sampler_set_logit_bias(s, 0, 0.0f), CS_OK); /* removed */
    assert_int_equal(cs_sampler_sample(s, l), 2);
    /* reset keeps the biases; clear drops them */
    cs_sampler_reset(s);
    assert_int_equal(cs_sampler_sample(s, l), 2);
    cs_sampler_clear_logit_bias(s);
    assert_int_equal(cs_sampler_sample(s, l), 3);

    /* bad arguments name the token or value and change nothing */
    assert_int_equal(cs_sampler_set_logit_bias(s, 2, 5.0f), CS_OK);
    assert_int_equal(cs_sampler_set_logit_bias(s, 4, 1.0f), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "token 4"));
    assert_int_equal(cs_sampler_set_logit_bias(s, -1, 1.0f), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "token -1"));
    assert_int_equal(cs_sampler_set_logit_bias(s, 1, NAN), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "nan"));
    assert_int_equal(cs_sampler_set_logit_bias(s, 1, INFINITY), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "inf"));
    assert_int_equal(cs_sampler_set_logit_bias(NULL, 0, 1.0f), CS_ERR_INVALID_ARG);
    cs_sampler_clear_logit_bias(NULL);
    const float flat[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    assert_int_equal(cs_sampler_sample(s, flat), 2); /* only token 2's bias */
    cs_sampler_free(s);

    /* bias runs before the penalties, as in llama.cpp: token 0 at 1.0 with
     * bias +1 and repeat penalty 2 gives (1 + 1) / 2 = 1.0 < 1.25 (the other
     * order would give 1 / 2 + 1 = 1.5) */
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 4;
    s = new_sampler(&p, 2);
    cs_sampler_accept(s, 0);
    assert_int_equal(cs_sampler_set_logit_bias(s, 0, 1.0f), CS_OK);
    const float o[2] = {1.0f, 1.25f};
    assert_int_equal(cs_sampler_sample(s, o), 1);
    cs_sampler_free(s);
}

/* Every token biased, re-set, removed and set again: the list stays within
 * its n_vocab entries (ASan checks the bounds); the draws then follow the
 * softmax of logits + bias (computed here), with penalties on top; after a
 * clear the sampler draws exactly what a fresh one with the same seed does. */
static void test_sampler_logit_bias_distribution(void **state) {
    (void)state;
    enum { N = 10 };
    float logits[N], bias[N], adj[N];
    double probs[N];
    int counts[N];
    test_lcg_state = 41;
    for (int i = 0; i < N; i++) logits[i] = test_rand_logit();
    cs_sampler_params p = plain_params(9, 1.0f);
    p.repeat_last_n = 4;
    p.frequency_penalty = 0.4f;
    p.presence_penalty = 0.1f;
    cs_sampler *s = new_sampler(&p, N);
    for (int round = 0; round < 3; round++)
        for (int t = 0; t < N; t++) assert_int_equal(cs_sampler_set_logit_bias(s, t, 1.0f), CS_OK);
    for (int t = 0; t < N; t++) assert_int_equal(cs_sampler_set_logit_bias(s, t, 0.0f), CS_OK);
    for (int t = 0; t < N; t++) {
        bias[t] = t == 4 ? -INFINITY : (float)(t % 3) - 1.0f;
        assert_int_equal(cs_sampler_set_logit_bias(s, t, bias[t]), CS_OK);
    }
    const cs_token window[4] = {1, 1, 2, 7};
    for (int i = 0; i < 4; i++) cs_sampler_accept(s, window[i]);
    adjusted_ref(logits, bias, N, window, 4, 1.0f, p.frequency_penalty, p.presence_penalty, adj);
    draw_counts(s, logits, N, N_DRAWS, counts);
    softmax_ref(adj, N, 1.0, probs);
    assert_int_equal(counts[4], 0);
    for (int t = 0; t < N; t++) assert_near((double)counts[t] / N_DRAWS, probs[t], TOL_FREQ);

    cs_sampler_clear_logit_bias(s);
    cs_sampler_reset(s);
    cs_sampler *fresh = new_sampler(&p, N);
    for (int i = 0; i < 200; i++)
        assert_int_equal(cs_sampler_sample(s, logits), cs_sampler_sample(fresh, logits));
    cs_sampler_free(fresh);
    cs_sampler_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler_default_params_match_llama_cpp),
        cmocka_unit_test(test_sampler_invalid_params_rejected),
        cmocka_unit_test(test_sampler_null_safe),
        cmocka_unit_test(test_sampler_new_out_of_memory),
        cmocka_unit_test(test_sampler_sample_does_not_allocate),
        cmocka_unit_test(test_sampler_greedy_argmax_lowest_id_on_ties),
        cmocka_unit_test(test_sampler_greedy_nan_and_inf),
        cmocka_unit_test(test_sampler_same_seed_same_sequence),
        cmocka_unit_test(test_sampler_distribution_matches_softmax),
        cmocka_unit_test(test_sampler_temperature_sharpens),
        cmocka_unit_test(test_sampler_positive_inf_shares_mass),
        cmocka_unit_test(test_sampler_top_k_one_equals_greedy),
        cmocka_unit_test(test_sampler_top_k_restricts_support),
        cmocka_unit_test(test_sampler_top_k_large_vocab),
        cmocka_unit_test(test_sampler_top_p_nucleus),
        cmocka_unit_test(test_sampler_top_p_large_nucleus_ties_by_id),
        cmocka_unit_test(test_sampler_min_p_example),
        cmocka_unit_test(test_sampler_default_chain),
        cmocka_unit_test(test_sampler_filters_match_naive_oracle),
        cmocka_unit_test(test_sampler_repeat_penalty_changes_argmax),
        cmocka_unit_test(test_sampler_repeat_penalty_once_per_token),
        cmocka_unit_test(test_sampler_repeat_penalty_window),
        cmocka_unit_test(test_sampler_frequency_presence_exact),
        cmocka_unit_test(test_sampler_penalties_match_direct),
        cmocka_unit_test(test_sampler_logit_bias),
        cmocka_unit_test(test_sampler_logit_bias_distribution),
    };
    return test_run(tests, NULL, NULL);
}
