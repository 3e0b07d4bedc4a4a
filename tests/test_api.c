/* test_api.c: small public utilities: status names, type names, the UTF-8
 * streaming helper, the log callback, system info, NULL-safe destructors. */
#include "test.h"

static void test_api_status_and_types(void **s) {
    (void)s;
    assert_string_equal(cs_status_str(CS_OK), "CS_OK");
    assert_string_equal(cs_status_str(CS_NO_KV_SLOT), "CS_NO_KV_SLOT");
    assert_string_equal(cs_status_str(CS_ERR_NOMEM), "CS_ERR_NOMEM");
    assert_string_equal(cs_type_name(CS_TYPE_Q8_0), "q8_0");
    assert_string_equal(cs_type_name(12), "q4_K");
    assert_string_equal(cs_type_name(4), "unknown"); /* removed from ggml */
    assert_string_equal(cs_type_name(-1), "unknown");
    assert_string_equal(cs_type_name(1000), "unknown");
    assert_int_equal(cs_type_from_name("F16"), CS_TYPE_F16);
    assert_int_equal(cs_type_from_name("q4_0"), CS_TYPE_Q4_0);
    assert_int_equal(cs_type_from_name("bf16"), CS_TYPE_BF16);
    assert_int_equal(cs_type_from_name("q4_K"), CS_TYPE_Q4_K); /* every weight type */
    assert_int_equal(cs_type_from_name("mxfp4"), -1);          /* a ggml type, not computed */
    assert_int_equal(cs_type_from_name("f1"), -1);
    assert_int_equal(cs_type_from_name(""), -1);
    assert_int_equal(cs_type_from_name(NULL), -1);
    assert_non_null(strstr(cs_system_info(), "kernels = "));
}

static void test_api_utf8_complete_len(void **s) {
    (void)s;
    const char *e = "caf\xc3\xa9"; /* é: 2 bytes */
    assert_int_equal(cs_utf8_complete_len(e, 5), 5);
    assert_int_equal(cs_utf8_complete_len(e, 4), 3); /* lead byte alone is held back */
    const char *euro = "\xe2\x82\xac";               /* €: 3 bytes */
    assert_int_equal(cs_utf8_complete_len(euro, 1), 0);
    assert_int_equal(cs_utf8_complete_len(euro, 2), 0);
    assert_int_equal(cs_utf8_complete_len(euro, 3), 3);
    const char *emoji = "a\xf0\x9f\x98\x80"; /* 😀: 4 bytes */
    for (size_t n = 2; n < 5; n++) assert_int_equal(cs_utf8_complete_len(emoji, n), 1);
    assert_int_equal(cs_utf8_complete_len(emoji, 5), 5);
    assert_int_equal(cs_utf8_complete_len("", 0), 0);
    /* stray continuation bytes and invalid leads are passed through */
    assert_int_equal(cs_utf8_complete_len("\x80\x80", 2), 2);
    assert_int_equal(cs_utf8_complete_len("x\xff", 2), 2);
}

typedef struct {
    int n;
    char last[256];
} log_sink;

static void sink(int32_t level, const char *msg, void *user) {
    log_sink *ls = user;
    (void)level;
    ls->n++;
    snprintf(ls->last, sizeof ls->last, "%s", msg);
}

static void test_api_log_callback_and_last_error(void **s) {
    (void)s;
    log_sink ls = {0};
    cs_log_set(sink, &ls, CS_LOG_DEBUG);
    cs_model *m = NULL;
    assert_int_equal(cs_model_load("/nonexistent/dir/model.gguf", NULL, &m), CS_ERR_IO);
    assert_null(m);
    assert_true(ls.n >= 1);
    assert_non_null(strstr(ls.last, "/nonexistent/dir/model.gguf"));
    assert_non_null(strstr(cs_last_error(), "/nonexistent/dir/model.gguf"));
    cs_log_set(NULL, NULL, CS_LOG_WARN);
}

static void test_api_null_safe(void **s) {
    (void)s;
    cs_model_free(NULL);
    cs_context_free(NULL);
    cs_batch_free(NULL);
    cs_sampler_free(NULL);
    cs_batch_clear(NULL);
    assert_int_equal(cs_batch_n_tokens(NULL), 0);
    cs_batch *b = (cs_batch *)1;
    assert_int_equal(cs_batch_new(0, 1, &b), CS_ERR_INVALID_ARG);
    assert_null(b);
    assert_int_equal(cs_batch_new(4, 0, &b), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_batch_new(4, 65, &b), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_batch_new(4, 2, &b), CS_OK);
    cs_seq seqs[3] = {0, 1, 2};
    assert_int_equal(cs_batch_add(b, 1, 0, seqs, 3, true), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_batch_add(b, 1, 0, NULL, 1, true), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_batch_add(b, 1, 0, seqs, 2, true), CS_OK);
    assert_int_equal(cs_batch_n_tokens(b), 1);
    cs_batch_free(b);
}

static void test_api_tokenize_bad_args(void **s) {
    (void)s;
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = true;
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(test_bundled_model(), &mp, &m), CS_OK);
    cs_token t[8];
    assert_int_equal(cs_tokenize(m, NULL, 3, t, 8, true, false), INT32_MIN);
    assert_int_equal(cs_tokenize(m, "abc", 3, NULL, 8, true, false), INT32_MIN);
    assert_int_equal(cs_tokenize(m, "abc", 3, t, -1, true, false), INT32_MIN);
    /* measuring: n_max 0 returns minus the count needed */
    int32_t need = cs_tokenize(m, "Once upon a time", 16, NULL, 0, true, false);
    assert_int_equal(need, -5);
    char buf[4];
    assert_int_equal(cs_token_to_piece(m, 99999, buf, sizeof buf, false), INT32_MIN);
    assert_int_equal(cs_token_to_piece(m, -1, buf, sizeof buf, false), INT32_MIN);
    assert_int_equal(cs_detokenize(m, t, -1, buf, sizeof buf, false), INT32_MIN);
    cs_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_status_and_types),
        cmocka_unit_test(test_api_utf8_complete_len),
        cmocka_unit_test(test_api_log_callback_and_last_error),
        cmocka_unit_test(test_api_null_safe),
        cmocka_unit_test(test_api_tokenize_bad_args),
    };
    return test_run(tests, NULL, NULL);
}
