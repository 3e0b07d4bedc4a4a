/* test_quantize.c: cs_model_quantize (src/quantize.c): bytes against the
 * reference files written with ggml's quantizers, llama.cpp's per-tensor
 * type rules for the K mixes, fallbacks for rows that do not fit a block,
 * errors, and that the output loads and decodes. */
#include "test.h"

#include <math.h>

#include "gguf.h"

/* Greedy tokens generated after the prompt in the tests that decode. */
#define QZ_N_GEN 8
/* The ids llama.cpp gives stories260K for BOS + "Once upon a time" then the
 * next token "," (shared/models/README.md). */
#define QZ_TOKEN_COMMA 432

static const char *qz_tmp(const char *name, char *buf, size_t size) {
    test_tmp_path(name, buf, size);
    remove(buf);
    return buf;
}

/* Tensor `name` of g, which must exist. */
static const gguf_tensor *qz_tensor(const gguf_file *g, const char *name) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) fail_msg("tensor '%s' is missing", name);
    return t;
}

static int32_t qz_type_of(const gguf_file *g, const char *name) {
    return qz_tensor(g, name)->type;
}

/* Greedy generation from BOS + "Once upon a time"; returns the count. */
static int32_t qz_generate(const char *path, cs_token *out, int32_t n_gen) {
    cs_model *m = NULL;
    cs_context *ctx = NULL;
    cs_batch *b = NULL;
    cs_model_params mp = cs_model_default_params();
    assert_int_equal(cs_model_load(path, &mp, &m), CS_OK);
    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 1;
    assert_int_equal(cs_context_new(m, &cp, &ctx), CS_OK);
    assert_int_equal(cs_batch_new(64, 1, &b), CS_OK);
    cs_token toks[32];
    const char *prompt = "Once upon a time";
    int32_t n = cs_tokenize(m, prompt, strlen(prompt), toks, 32, true, false);
    assert_true(n > 1);
    cs_seq seq = 0;
    for (int32_t i = 0; i < n; i++)
        assert_int_equal(cs_batch_add(b, toks[i], i, &seq, 1, i == n - 1), CS_OK);
    int32_t n_vocab = cs_model_n_vocab(m);
    for (int32_t k = 0; k < n_gen; k++) {
        assert_int_equal(cs_decode(ctx, b), 0);
        const float *logits = cs_get_logits_ith(ctx, cs_batch_n_tokens(b) - 1);
        assert_non_null(logits);
        cs_token best = 0;
        for (cs_token t = 1; t < n_vocab; t++)
            if (logits[t] > logits[best]) best = t;
        out[k] = best;
        cs_batch_clear(b);
        assert_int_equal(cs_batch_add(b, best, n + k, &seq, 1, true), CS_OK);
    }
    cs_batch_free(b);
    cs_context_free(ctx);
    cs_model_free(m);
    return n_gen;
}

/* Every tensor of got and want: same name, type, shape and bytes. Returns
 * the number of tensors compared. */
static int64_t qz_compare_files(const char *got_path, const char *want_path) {
    gguf_file *got = NULL, *want = NULL;
    assert_int_equal(gguf_open(got_path, &got), CS_OK);
    assert_int_equal(gguf_open(want_path, &want), CS_OK);
    int64_t n = gguf_n_tensors(want);
    assert_int_equal(gguf_n_tensors(got), n);
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *w = gguf_tensor_at(want, i);
        const gguf_tensor *g = qz_tensor(got, w->name);
        if (g->type != w->type)
            fail_msg("%s: type %s, want %s", w->name, cs_type_name(g->type), cs_type_name(w->type));
        assert_int_equal(g->n_dims, w->n_dims);
        assert_memory_equal(g->ne, w->ne, sizeof g->ne);
        assert_int_equal(g->nbytes, w->nbytes);
        if (memcmp(g->data, w->data, (size_t)w->nbytes) != 0)
            fail_msg("%s (%s): bytes differ from the reference", w->name, cs_type_name(w->type));
    }
    gguf_close(got);
    gguf_close(want);
    return n;
}

static void qz_check_bundled(const char *type, const char *ref_name, int64_t want_file_type) {
    char ref[512], out[512];
    if (!test_shared_path(ref_name, ref, sizeof ref))
        test_skip(CS_SKIP_REFERENCE, "%s/%s not found", CS_SHARED_DIR, ref_name);
    qz_tmp(type, out, sizeof out);
    assert_int_equal(cs_model_quantize(test_bundled_model(), out, type), CS_OK);
    /* stories260K: 3 + 9 * 5 layers. */
    assert_int_equal(qz_compare_files(out, ref), 48);

    gguf_file *g = NULL;
    assert_int_equal(gguf_open(out, &g), CS_OK);
    int64_t ft = -1;
    assert_int_equal(gguf_get_int(g, "general.file_type", &ft), CS_OK);
    assert_int_equal(ft, want_file_type);
    /* Every key of the source is kept. */
    gguf_file *src = NULL;
    assert_int_equal(gguf_open(test_bundled_model(), &src), CS_OK);
    for (int64_t i = 0; i < gguf_n_kv(src); i++)
        assert_true(gguf_find_key(g, gguf_kv_key(src, i)) >= 0);
    gguf_close(src);
    gguf_close(g);

    cs_token a[QZ_N_GEN], b[QZ_N_GEN];
    qz_generate(out, a, QZ_N_GEN);
    qz_generate(ref, b, QZ_N_GEN);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(a[0], QZ_TOKEN_COMMA);
    remove(out);
}

static void test_quantize_q8_0_matches_reference(void **state) {
    (void)state;
    qz_check_bundled("q8_0", "models/stories260K-q8_0.gguf", 7);
}

static void test_quantize_q4_0_matches_reference(void **state) {
    (void)state;
    qz_check_bundled("q4_0", "models/stories260K-q4_0.gguf", 2);
}

/* Requantizing a Q8_0 file to q8_0 copies the bytes; to q4_0 it goes
 * through f32, which for Q8_0 input differs from quantizing the F32 file,
 * but the model must still load and give the same first token. */
static void test_quantize_from_quantized(void **state) {
    (void)state;
    char ref[512], out[512];
    if (!test_shared_path("models/stories260K-q8_0.gguf", ref, sizeof ref))
        test_skip(CS_SKIP_REFERENCE, "%s/models/stories260K-q8_0.gguf not found", CS_SHARED_DIR);
    qz_tmp("requant", out, sizeof out);
    assert_int_equal(cs_model_quantize(ref, out, "Q8_0"), CS_OK); /* case-insensitive */
    assert_int_equal(qz_compare_files(out, ref), 48);
    assert_int_equal(cs_model_quantize(ref, out, "q4_0"), CS_OK);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(out, &g), CS_OK);
    assert_int_equal(qz_type_of(g, "blk.0.attn_q.weight"), CS_TYPE_Q4_0);
    assert_int_equal(qz_type_of(g, "blk.0.ffn_down.weight"), CS_TYPE_F32);
    gguf_close(g);
    cs_token a[1];
    qz_generate(out, a, 1);
    assert_int_equal(a[0], QZ_TOKEN_COMMA);
    remove(out);
}

/* stories260K rows are 64 (and 172 for ffn_down): q6_K does not fit, so
 * the K fallback applies: q8_0 for rows of 64, f16 for rows of 172. */
static void test_quantize_k_fallback(void **state) {
    (void)state;
    char out[512];
    qz_tmp("q6k-fallback", out, sizeof out);
    assert_int_equal(cs_model_quantize(test_bundled_model(), out, "q6_K"), CS_OK);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(out, &g), CS_OK);
    assert_int_equal(qz_type_of(g, "token_embd.weight"), CS_TYPE_Q8_0);
    assert_int_equal(qz_type_of(g, "output.weight"), CS_TYPE_Q8_0);
    assert_int_equal(qz_type_of(g, "output_norm.weight"), CS_TYPE_F32);
    for (int il = 0; il < 5; il++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
        assert_int_equal(qz_type_of(g, name), CS_TYPE_Q8_0);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
        assert_int_equal(qz_type_of(g, name), CS_TYPE_F16);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", il);
        assert_int_equal(qz_type_of(g, name), CS_TYPE_F32);
    }
    gguf_close(g);
    cs_token a[1];
    qz_generate(out, a, 1);
    assert_int_equal(a[0], QZ_TOKEN_COMMA);
    remove(out);
}

/* A random model with K-friendly shapes: n_embd 256, n_ff 512, 4 layers. */
static void qz_gen_model(const char *path, bool tied) {
    cs_gen_model_params p;
    assert_true(cs_gen_model_preset("tiny", &p));
    p.n_embd = 256;
    p.n_ff = 512;
    p.n_layer = 4;
    p.n_head = 4;
    p.n_head_kv = 2;
    p.seed = 7;
    p.tied_embeddings = tied;
    p.vocab_path = test_bundled_model();
    assert_int_equal(cs_gen_model_write(&p, path), CS_OK);
}

/* llama.cpp's use_more_bits(i, n) for n = 4 layers, worked out by hand:
 * n/8 = 0, 7n/8 = 3, so layers 3 (last eighth) and 2 ((2 - 0) % 3 == 2). */
static const bool k_more_bits_4[4] = {false, false, true, true};

static void qz_check_mix(const char *mix, int32_t base, int64_t file_type, bool tied) {
    char src[512], out[512];
    qz_tmp(tied ? "mix-src-tied" : "mix-src", src, sizeof src);
    qz_tmp(mix, out, sizeof out);
    qz_gen_model(src, tied);
    assert_int_equal(cs_model_quantize(src, out, mix), CS_OK);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(out, &g), CS_OK);
    int64_t ft = -1;
    assert_int_equal(gguf_get_int(g, "general.file_type", &ft), CS_OK);
    assert_int_equal(ft, file_type);
    if (tied) {
        assert_null(gguf_find_tensor(g, "output.weight"));
        assert_int_equal(qz_type_of(g, "token_embd.weight"), CS_TYPE_Q6_K);
    } else {
        assert_int_equal(qz_type_of(g, "output.weight"), CS_TYPE_Q6_K);
        assert_int_equal(qz_type_of(g, "token_embd.weight"), base);
    }
    assert_int_equal(qz_type_of(g, "output_norm.weight"), CS_TYPE_F32);
    for (int il = 0; il < 4; il++) {
        static const char *const plain[] = {"attn_q", "attn_k", "attn_output", "ffn_gate",
                                            "ffn_up"};
        char name[64];
        for (size_t k = 0; k < sizeof plain / sizeof plain[0]; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, plain[k]);
            assert_int_equal(qz_type_of(g, name), base);
        }
        int32_t more = k_more_bits_4[il] ? CS_TYPE_Q6_K : base;
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
        assert_int_equal(qz_type_of(g, name), more);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
        assert_int_equal(qz_type_of(g, name), more);
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", il);
        assert_int_equal(qz_type_of(g, name), CS_TYPE_F32);
    }
    gguf_close(g);

    /* It loads and decodes to finite logits. */
    cs_model *m = NULL;
    cs_model_params mp = cs_model_default_params();
    assert_int_equal(cs_model_load(out, &mp, &m), CS_OK);
    cs_context *ctx = NULL;
    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = 16;
    cp.n_threads = 1;
    assert_int_equal(cs_context_new(m, &cp, &ctx), CS_OK);
    cs_batch *b = NULL;
    assert_int_equal(cs_batch_new(4, 1, &b), CS_OK);
    cs_seq seq = 0;
    for (int32_t i = 0; i < 4; i++)
        assert_int_equal(cs_batch_add(b, 1 + 7 * i, i, &seq, 1, i == 3), CS_OK);
    assert_int_equal(cs_decode(ctx, b), 0);
    const float *logits = cs_get_logits_ith(ctx, 3);
    assert_non_null(logits);
    for (int32_t t = 0; t < cs_model_n_vocab(m); t++) assert_true(isfinite(logits[t]));
    cs_batch_free(b);
    cs_context_free(ctx);
    cs_model_free(m);
    remove(src);
    remove(out);
}

static void test_quantize_q4_K_M_types(void **state) {
    (void)state;
    qz_check_mix("q4_K_M", CS_TYPE_Q4_K, 15, false);
}

static void test_quantize_q5_K_M_types(void **state) {
    (void)state;
    qz_check_mix("q5_K_M", CS_TYPE_Q5_K, 17, false);
}

static void test_quantize_q4_K_M_tied(void **state) {
    (void)state;
    qz_check_mix("q4_K_M", CS_TYPE_Q4_K, 15, true);
}

/* The bytes do not depend on the number of threads. */
static void test_quantize_threads_deterministic(void **state) {
    (void)state;
    char src[512], a[512], b[512];
    qz_tmp("det-src", src, sizeof src);
    qz_tmp("det-a", a, sizeof a);
    qz_tmp("det-b", b, sizeof b);
    qz_gen_model(src, false);
    assert_int_equal(cs_model_quantize_threads(src, a, "q5_K_M", 1), CS_OK);
    assert_int_equal(cs_model_quantize_threads(src, b, "q5_K_M", 3), CS_OK);
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    long n = 0;
    int ca, cb;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        assert_int_equal(ca, cb);
        n++;
    } while (ca != EOF);
    assert_true(n > 1000);
    fclose(fa);
    fclose(fb);
    remove(src);
    remove(a);
    remove(b);
}

static void qz_write_marker(const char *path) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
}

static void qz_check_marker(const char *path) {
    char buf[16] = {0};
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    assert_int_equal(n, 4);
    assert_string_equal(buf, "keep");
}

static void test_quantize_unknown_type(void **state) {
    (void)state;
    char out[512];
    qz_tmp("unknown", out, sizeof out);
    assert_int_equal(cs_model_quantize(test_bundled_model(), out, "q3_K_XL"), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "q3_K_XL"));
    assert_int_equal(access(out, F_OK), -1);
    qz_write_marker(out);
    assert_int_equal(cs_model_quantize(test_bundled_model(), out, "mxfp4"), CS_ERR_INVALID_ARG);
    qz_check_marker(out);
    remove(out);
}

static void test_quantize_missing_input(void **state) {
    (void)state;
    char out[512], in[512];
    qz_tmp("missing-out", out, sizeof out);
    qz_tmp("missing-in.gguf", in, sizeof in);
    assert_int_equal(cs_model_quantize(in, out, "q8_0"), CS_ERR_IO);
    assert_int_equal(access(out, F_OK), -1);
    qz_write_marker(out);
    assert_int_equal(cs_model_quantize(in, out, "q8_0"), CS_ERR_IO);
    qz_check_marker(out);
    remove(out);
}

/* A weight whose type cannot be dequantized (MXFP4, id 39): CS_ERR_UNSUPPORTED
 * naming the tensor; the existing output and no temporary file remain. */
static void test_quantize_unsupported_source(void **state) {
    (void)state;
    char in[512], out[512], tmp[600];
    qz_tmp("unsup-in.gguf", in, sizeof in);
    qz_tmp("unsup-out", out, sizeof out);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), CS_OK);
    enum { MXFP4 = 39, MXFP4_BLOCK_BYTES = 17 };
    int64_t ne[2] = {32, 2};
    uint8_t data[2 * MXFP4_BLOCK_BYTES] = {0};
    assert_int_equal(
        gguf_writer_add_tensor(w, "blk.0.attn_q.weight", MXFP4, 2, ne, data, sizeof data), CS_OK);
    assert_int_equal(gguf_writer_write_file(w, in), CS_OK);
    gguf_writer_free(w);
    qz_write_marker(out);
    assert_int_equal(cs_model_quantize(in, out, "q8_0"), CS_ERR_UNSUPPORTED);
    assert_non_null(strstr(cs_last_error(), "blk.0.attn_q.weight"));
    qz_check_marker(out);
    assert_int_equal(access(tmp, F_OK), -1);
    /* Another architecture is refused. */
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "gpt2"), CS_OK);
    assert_int_equal(gguf_writer_write_file(w, in), CS_OK);
    gguf_writer_free(w);
    assert_int_equal(cs_model_quantize(in, out, "q8_0"), CS_ERR_UNSUPPORTED);
    assert_non_null(strstr(cs_last_error(), "gpt2"));
    qz_check_marker(out);
    remove(in);
    remove(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_q8_0_matches_reference),
        cmocka_unit_test(test_quantize_q4_0_matches_reference),
        cmocka_unit_test(test_quantize_from_quantized),
        cmocka_unit_test(test_quantize_k_fallback),
        cmocka_unit_test(test_quantize_q4_K_M_types),
        cmocka_unit_test(test_quantize_q5_K_M_types),
        cmocka_unit_test(test_quantize_q4_K_M_tied),
        cmocka_unit_test(test_quantize_threads_deterministic),
        cmocka_unit_test(test_quantize_unknown_type),
        cmocka_unit_test(test_quantize_missing_input),
        cmocka_unit_test(test_quantize_unsupported_source),
    };
    return test_run(tests, NULL, NULL);
}
