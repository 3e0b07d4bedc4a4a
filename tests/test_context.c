/* test_context.c: the decode contract on the bundled stories260K model:
 * 0 / CS_NO_KV_SLOT / error with the cache unchanged, bad batches named,
 * identical results at 1 and 2 threads, multi-sequence batches equal to
 * single-sequence runs, rollback with seq_rm, allocation failures. */
#include "test.h"

#include <math.h>

/* Two routes to the same logical state differ only by summation order of
 * the matmul tiling (golden README: llama.cpp itself shows up to 6.7e-6). */
#define TOL_SAME_STATE 1e-4
/* F16 vs F32 KV cache on this model (golden README: f16 runs agree to 3e-2). */
#define TOL_F16_CACHE 3e-2

static cs_model *g_model;

static int setup(void **s) {
    (void)s;
    cs_model_params mp = cs_model_default_params();
    return cs_model_load(test_bundled_model(), &mp, &g_model) == CS_OK ? 0 : -1;
}
static int teardown(void **s) {
    (void)s;
    cs_model_free(g_model);
    return 0;
}

static cs_context *new_ctx(uint32_t n_ctx, uint32_t n_batch, uint32_t n_seq, int32_t threads,
                           int32_t type) {
    cs_context_params p = cs_context_default_params();
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_seq_max = n_seq;
    p.n_threads = threads;
    p.type_k = p.type_v = type;
    cs_context *c = NULL;
    assert_int_equal(cs_context_new(g_model, &p, &c), CS_OK);
    return c;
}

static const cs_token k_prompt[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298};
#define N_PROMPT ((int32_t)(sizeof k_prompt / sizeof k_prompt[0]))

/* Decode the prompt into seq `seq` starting at pos p0; logits for the last row. */
static int32_t decode_prompt(cs_context *c, cs_batch *b, cs_seq seq, cs_pos p0, int32_t n) {
    cs_batch_clear(b);
    for (int32_t i = 0; i < n; i++) cs_batch_add(b, k_prompt[i], p0 + i, &seq, 1, i == n - 1);
    return cs_decode(c, b);
}

static double max_diff(const float *a, const float *b, int32_t n) {
    double m = 0;
    for (int32_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m) m = d;
    }
    return m;
}

static void test_context_decode_logits_rows(void **s) {
    (void)s;
    cs_context *c = new_ctx(64, 32, 1, 1, CS_TYPE_F32);
    cs_batch *b;
    assert_int_equal(cs_batch_new(32, 1, &b), CS_OK);
    assert_int_equal(decode_prompt(c, b, 0, 0, N_PROMPT), 0);
    assert_null(cs_get_logits_ith(c, 0));
    assert_null(cs_get_logits_ith(c, N_PROMPT));
    assert_null(cs_get_logits_ith(c, -1));
    const float *l = cs_get_logits_ith(c, N_PROMPT - 1);
    assert_non_null(l);
    for (int32_t i = 0; i < cs_model_n_vocab(g_model); i++) assert_true(isfinite(l[i]));
    assert_int_equal(cs_kv_used_cells(c), N_PROMPT);
    assert_int_equal(cs_kv_seq_pos_max(c, 0), N_PROMPT - 1);
    assert_int_equal(cs_kv_seq_pos_min(c, 0), 0);
    cs_batch_free(b);
    cs_context_free(c);
}

static void test_context_bad_batch_leaves_cache(void **s) {
    (void)s;
    cs_context *c = new_ctx(64, 8, 2, 1, CS_TYPE_F32);
    cs_batch *b;
    assert_int_equal(cs_batch_new(16, 2, &b), CS_OK);
    assert_int_equal(decode_prompt(c, b, 0, 0, 4), 0);
    cs_seq s0 = 0, s_bad = 2, s_neg = -1;
    struct {
        cs_token tok;
        cs_pos pos;
        cs_seq *seq;
        int32_t n_seq;
        const char *needle;
    } cases[] = {
        {512, 4, &s0, 1, "vocabulary"},   {-1, 4, &s0, 1, "vocabulary"},
        {5, 4, &s_bad, 1, "sequence id"}, {5, 4, &s_neg, 1, "sequence id"},
        {5, 4, &s0, 0, "no sequence"},    {5, -3, &s0, 1, "negative"},
        {5, INT32_MAX, &s0, 1, "CS_POS_MAX"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cs_batch_clear(b);
        cs_batch_add(b, 5, 4, &s0, 1, true); /* a good row first */
        assert_int_equal(
            cs_batch_add(b, cases[i].tok, cases[i].pos, cases[i].seq, cases[i].n_seq, true), CS_OK);
        assert_true(cs_decode(c, b) < 0);
        assert_non_null(strstr(cs_last_error(), cases[i].needle));
        assert_int_equal(cs_kv_used_cells(c), 4);
        assert_int_equal(cs_kv_seq_pos_max(c, 0), 3);
        assert_null(cs_get_logits_ith(c, 0));
    }
    /* more tokens than n_batch (8) */
    cs_batch_clear(b);
    for (int32_t i = 0; i < 9; i++) cs_batch_add(b, 5, 4 + i, &s0, 1, false);
    assert_true(cs_decode(c, b) < 0);
    assert_non_null(strstr(cs_last_error(), "n_batch"));
    /* empty batch */
    cs_batch_clear(b);
    assert_true(cs_decode(c, b) < 0);
    assert_true(cs_decode(c, NULL) < 0);
    assert_int_equal(cs_kv_used_cells(c), 4);
    /* batch capacity */
    cs_batch *small;
    assert_int_equal(cs_batch_new(1, 1, &small), CS_OK);
    assert_int_equal(cs_batch_add(small, 1, 0, &s0, 1, true), CS_OK);
    assert_int_equal(cs_batch_add(small, 1, 1, &s0, 1, true), CS_ERR_INVALID_ARG);
    cs_batch_free(small);
    cs_batch_free(b);
    cs_context_free(c);
}

static void test_context_no_slot_leaves_cache(void **s) {
    (void)s;
    for (int contiguous = 0; contiguous < 2; contiguous++) {
        cs_context_params p = cs_context_default_params();
        p.n_ctx = 16;
        p.n_batch = 16;
        p.n_threads = 1;
        p.contiguous_slots = contiguous;
        cs_context *c;
        assert_int_equal(cs_context_new(g_model, &p, &c), CS_OK);
        cs_batch *b;
        assert_int_equal(cs_batch_new(16, 1, &b), CS_OK);
        assert_int_equal(decode_prompt(c, b, 0, 0, 11), 0);
        assert_int_equal(decode_prompt(c, b, 0, 11, 6), CS_NO_KV_SLOT);
        assert_int_equal(cs_kv_used_cells(c), 11);
        assert_int_equal(cs_kv_seq_pos_max(c, 0), 10);
        assert_int_equal(decode_prompt(c, b, 0, 11, 5), 0);
        assert_int_equal(cs_kv_used_cells(c), 16);
        cs_batch_free(b);
        cs_context_free(c);
    }
}

/* Logits of a prompt + 6 greedy steps, for comparisons. */
static void run_greedy(cs_context *c, float *out /* (7, n_vocab) */) {
    int32_t nv = cs_model_n_vocab(g_model);
    cs_batch *b;
    assert_int_equal(cs_batch_new(32, 1, &b), CS_OK);
    assert_int_equal(decode_prompt(c, b, 0, 0, N_PROMPT), 0);
    cs_seq s0 = 0;
    for (int32_t step = 0; step < 7; step++) {
        const float *l = cs_get_logits_ith(c, cs_batch_n_tokens(b) - 1);
        assert_non_null(l);
        memcpy(out + (size_t)step * (size_t)nv, l, (size_t)nv * sizeof(float));
        cs_token best = 0;
        for (int32_t i = 1; i < nv; i++)
            if (l[i] > l[best]) best = i;
        cs_batch_clear(b);
        cs_batch_add(b, best, N_PROMPT + step, &s0, 1, true);
        assert_int_equal(cs_decode(c, b), 0);
    }
    cs_batch_free(b);
}

static void test_context_threads_identical(void **s) {
    (void)s;
    int32_t nv = cs_model_n_vocab(g_model);
    float *a = malloc((size_t)7 * nv * sizeof(float)), *bb = malloc((size_t)7 * nv * sizeof(float));
    for (int type = 0; type < 2; type++) {
        int32_t t = type ? CS_TYPE_F16 : CS_TYPE_F32;
        cs_context *c1 = new_ctx(64, 32, 1, 1, t), *c2 = new_ctx(64, 32, 1, 2, t);
        run_greedy(c1, a);
        run_greedy(c2, bb);
        assert_memory_equal(a, bb, (size_t)7 * nv * sizeof(float));
        cs_context *c3 = new_ctx(64, 32, 1, 3, t);
        run_greedy(c3, bb);
        assert_memory_equal(a, bb, (size_t)7 * nv * sizeof(float));
        cs_context_free(c1);
        cs_context_free(c2);
        cs_context_free(c3);
    }
    /* F16 cache stays close to F32 */
    cs_context *c32 = new_ctx(64, 32, 1, 1, CS_TYPE_F32), *c16 = new_ctx(64, 32, 1, 1, CS_TYPE_F16);
    run_greedy(c32, a);
    run_greedy(c16, bb);
    assert_true(max_diff(a, bb, 7 * nv) < TOL_F16_CACHE);
    cs_context_free(c32);
    cs_context_free(c16);
    free(a);
    free(bb);
}

static void test_context_multi_seq_matches_single(void **s) {
    (void)s;
    int32_t nv = cs_model_n_vocab(g_model);
    /* reference: each sequence alone in its own context */
    float *ref = malloc((size_t)3 * nv * sizeof(float));
    int32_t lens[3] = {5, 11, 8};
    cs_batch *b;
    assert_int_equal(cs_batch_new(64, 1, &b), CS_OK);
    for (int s_ = 0; s_ < 3; s_++) {
        cs_context *c = new_ctx(64, 64, 1, 1, CS_TYPE_F32);
        assert_int_equal(decode_prompt(c, b, 0, 0, lens[s_]), 0);
        memcpy(ref + (size_t)s_ * nv, cs_get_logits_ith(c, lens[s_] - 1), (size_t)nv * 4);
        cs_context_free(c);
    }
    /* all three interleaved in one batch */
    cs_context *c = new_ctx(64, 64, 3, 2, CS_TYPE_F32);
    cs_batch_clear(b);
    int32_t row_last[3];
    for (int32_t i = 0; i < 11; i++)
        for (cs_seq q = 0; q < 3; q++)
            if (i < lens[q]) {
                if (i == lens[q] - 1) row_last[q] = cs_batch_n_tokens(b);
                cs_batch_add(b, k_prompt[i], i, &q, 1, i == lens[q] - 1);
            }
    assert_int_equal(cs_decode(c, b), 0);
    for (int q = 0; q < 3; q++)
        assert_true(max_diff(ref + (size_t)q * nv, cs_get_logits_ith(c, row_last[q]), nv) <
                    TOL_SAME_STATE);
    assert_int_equal(cs_kv_token_count(c), 24);
    assert_int_equal(cs_kv_seq_pos_max(c, 1), 10);
    /* remove seq 1 whole: the others are untouched */
    assert_int_equal(cs_kv_seq_rm(c, 1, -1, -1), CS_OK);
    assert_int_equal(cs_kv_seq_pos_max(c, 1), -1);
    assert_int_equal(cs_kv_used_cells(c), 13);
    assert_int_equal(cs_kv_seq_rm(c, 3, -1, -1), CS_ERR_INVALID_ARG);
    cs_batch_free(b);
    cs_context_free(c);
    free(ref);
}

static void test_context_shared_prefix_token(void **s) {
    (void)s;
    /* one cell in two sequences (a shared prefix): each sequence's next
     * token sees it, and token_count counts it twice */
    int32_t nv = cs_model_n_vocab(g_model);
    cs_context *c = new_ctx(64, 64, 2, 1, CS_TYPE_F32);
    cs_batch *b;
    assert_int_equal(cs_batch_new(64, 2, &b), CS_OK);
    cs_seq both[2] = {0, 1};
    for (int32_t i = 0; i < 5; i++) cs_batch_add(b, k_prompt[i], i, both, 2, false);
    assert_int_equal(cs_decode(c, b), 0);
    assert_int_equal(cs_kv_token_count(c), 10);
    assert_int_equal(cs_kv_used_cells(c), 5);
    cs_batch_clear(b);
    cs_seq s0 = 0, s1 = 1;
    cs_batch_add(b, k_prompt[5], 5, &s0, 1, true);
    cs_batch_add(b, k_prompt[5], 5, &s1, 1, true);
    assert_int_equal(cs_decode(c, b), 0);
    assert_true(max_diff(cs_get_logits_ith(c, 0), cs_get_logits_ith(c, 1), nv) < TOL_SAME_STATE);
    cs_batch_free(b);
    cs_context_free(c);
}

static void count_warn(int32_t level, const char *msg, void *user) {
    if (level == CS_LOG_WARN && strstr(msg, "shared")) ++*(int *)user;
}

/* docs/KV_CACHE_SPEC.md test A14: seq_add/seq_div on cells shared with another sequence move them
 * for both; the library says so in the log (and still does it). */
static void test_context_A14_shared_cell_warning(void **s) {
    (void)s;
    cs_context *c = new_ctx(64, 32, 2, 1, CS_TYPE_F32);
    cs_batch *b;
    assert_int_equal(cs_batch_new(32, 1, &b), CS_OK);
    assert_int_equal(decode_prompt(c, b, 0, 0, 6), 0);
    int warnings = 0;
    cs_log_set(count_warn, &warnings, CS_LOG_WARN);
    assert_int_equal(cs_kv_seq_add(c, 0, 0, -1, 3), CS_OK); /* nothing shared yet */
    assert_int_equal(warnings, 0);
    assert_int_equal(cs_kv_seq_cp(c, 0, 1, 3, 6), CS_OK);   /* positions 3..5 now shared */
    assert_int_equal(cs_kv_seq_add(c, 0, 6, -1, 2), CS_OK); /* 6..8 unshared: quiet */
    assert_int_equal(warnings, 0);
    assert_int_equal(cs_kv_seq_add(c, 0, 0, 6, 1), CS_OK); /* 3..5 shared */
    assert_int_equal(warnings, 1);
    assert_int_equal(cs_kv_seq_pos_max(c, 1), 6); /* moved for sequence 1 too */
    assert_int_equal(cs_kv_seq_div(c, 1, -1, -1, 2), CS_OK);
    assert_int_equal(warnings, 2);
    cs_log_set(NULL, NULL, CS_LOG_WARN);
    cs_batch_free(b);
    cs_context_free(c);
}

static void test_context_rollback_redecode(void **s) {
    (void)s;
    int32_t nv = cs_model_n_vocab(g_model);
    cs_context *c = new_ctx(64, 32, 1, 1, CS_TYPE_F32);
    cs_batch *b;
    assert_int_equal(cs_batch_new(32, 1, &b), CS_OK);
    assert_int_equal(decode_prompt(c, b, 0, 0, N_PROMPT), 0);
    float *first = malloc((size_t)nv * 4);
    memcpy(first, cs_get_logits_ith(c, N_PROMPT - 1), (size_t)nv * 4);
    assert_int_equal(cs_kv_seq_rm(c, 0, 6, -1), CS_OK);
    assert_int_equal(cs_kv_seq_pos_max(c, 0), 5);
    assert_int_equal(cs_kv_used_cells(c), 6);
    cs_batch_clear(b);
    cs_seq s0 = 0;
    for (int32_t i = 6; i < N_PROMPT; i++)
        cs_batch_add(b, k_prompt[i], i, &s0, 1, i == N_PROMPT - 1);
    assert_int_equal(cs_decode(c, b), 0);
    assert_true(max_diff(first, cs_get_logits_ith(c, N_PROMPT - 7), nv) < TOL_SAME_STATE);
    cs_kv_clear(c);
    assert_int_equal(cs_kv_used_cells(c), 0);
    assert_int_equal(cs_kv_seq_pos_max(c, 0), -1);
    free(first);
    cs_batch_free(b);
    cs_context_free(c);
}

static void test_context_bad_params(void **s) {
    (void)s;
    cs_context *c = (cs_context *)1;
    cs_context_params p = cs_context_default_params();
    p.n_ctx = 64;
    p.type_k = CS_TYPE_Q4_0;
    assert_int_equal(cs_context_new(g_model, &p, &c), CS_ERR_UNSUPPORTED);
    assert_null(c);
    p.type_k = CS_TYPE_F16;
    p.n_seq_max = 65;
    assert_int_equal(cs_context_new(g_model, &p, &c), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "n_seq_max"));
    p.n_seq_max = 1;
    p.n_ctx = (1 << 20) + 1;
    assert_int_equal(cs_context_new(g_model, &p, &c), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_context_new(NULL, &p, &c), CS_ERR_INVALID_ARG);
    cs_context_free(NULL);
    cs_batch_free(NULL);
    cs_model_free(NULL);
    assert_string_equal(cs_status_str(CS_ERR_FORMAT), "CS_ERR_FORMAT");
    assert_string_equal(cs_status_str((cs_status)77), "CS_STATUS_UNKNOWN");
}

/* Every allocation of context creation and model load may fail: the
 * constructor returns CS_ERR_NOMEM, leaves *out NULL and leaks nothing
 * (the sanitizer build checks the leaks). */
void mem_fail_after(int64_t n); /* test hook from src/common.h */
static void test_context_alloc_failures(void **s) {
    (void)s;
    cs_context_params p = cs_context_default_params();
    p.n_ctx = 32;
    p.n_threads = 2;
    int failures = 0;
    for (int64_t n = 0; n < 200; n++) {
        cs_context *c = (cs_context *)1;
        mem_fail_after(n);
        cs_status st = cs_context_new(g_model, &p, &c);
        mem_fail_after(-1);
        if (st == CS_OK) {
            cs_context_free(c);
            break;
        }
        assert_int_equal(st, CS_ERR_NOMEM);
        assert_null(c);
        failures++;
    }
    assert_true(failures > 10);
    failures = 0;
    for (int64_t n = 0; n < 100000; n++) {
        cs_model *m = (cs_model *)1;
        mem_fail_after(n);
        cs_status st = cs_model_load(test_bundled_model(), NULL, &m);
        mem_fail_after(-1);
        if (st == CS_OK) {
            cs_model_free(m);
            break;
        }
        assert_int_equal(st, CS_ERR_NOMEM);
        assert_null(m);
        failures++;
    }
    assert_true(failures > 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_context_decode_logits_rows),
        cmocka_unit_test(test_context_bad_batch_leaves_cache),
        cmocka_unit_test(test_context_no_slot_leaves_cache),
        cmocka_unit_test(test_context_threads_identical),
        cmocka_unit_test(test_context_multi_seq_matches_single),
        cmocka_unit_test(test_context_shared_prefix_token),
        cmocka_unit_test(test_context_rollback_redecode),
        cmocka_unit_test(test_context_A14_shared_cell_warning),
        cmocka_unit_test(test_context_bad_params),
        cmocka_unit_test(test_context_alloc_failures),
    };
    return test_run(tests, setup, teardown);
}
