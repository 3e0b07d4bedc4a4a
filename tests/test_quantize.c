/* test_quantize.c: cs_model_quantize (src/quantize.c): bytes against the
 * reference files written with ggml's quantizers, llama.cpp's per-tensor
 * type rules for the K mixes, fallbacks for rows that do not fit a block,
 * errors, and that the output loads and decodes. */
#include "test.h"

#include <math.h>

#include "gguf.h"
#include "quantize_rules.h"
#include "types.h"

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

/* The file at path loads (cs_model_load) and decodes 4 tokens to finite
 * logits. */
static void qz_load_decode(const char *out) {
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
}

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

    qz_load_decode(out);
    remove(src);
    remove(out);
}

/* ------------------------------------------------------ the rule table */

static const qz_mix *qz_mix_named(const char *name) {
    size_t n = 0;
    const qz_mix *m = qz_mixes(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].name, name) == 0) return &m[i];
    fail_msg("no mix %s", name);
    return NULL;
}

/* One rule: mix, model, tensor name, row length, layer -> type. */
typedef struct qz_rule_case {
    const char *mix;
    bool has_output;
    int64_t n_layer, n_head_kv; /* n_head 8; n_attn_v = n_layer */
    const char *name;
    int64_t ne0, layer;
    int32_t want;
} qz_rule_case;

/* Worked out from llama.cpp's llama_tensor_get_type (src/quantize.c has
 * the rules in words); n_head 8, so n_head_kv 2 is n_gqa 4. */
static const qz_rule_case k_rule_cases[] = {
    /* output / tied token_embd: q6_K, q8_0 when rows do not fit the
     * default type or the mix is Q8_0; untied token_embd: the default. */
    {"Q4_K_M", true, 8, 8, "output.weight", 512, -1, CS_TYPE_Q6_K},
    {"Q4_K_M", true, 8, 8, "output.weight", 576, -1, CS_TYPE_Q8_0},
    {"Q4_K_M", true, 8, 8, "token_embd.weight", 512, -1, CS_TYPE_Q4_K},
    {"Q4_K_M", false, 8, 8, "token_embd.weight", 512, -1, CS_TYPE_Q6_K},
    {"Q4_0", true, 8, 8, "output.weight", 512, -1, CS_TYPE_Q6_K},
    {"Q4_0", false, 8, 8, "token_embd.weight", 576, -1, CS_TYPE_Q8_0}, /* q6_K -> q8_0 */
    {"Q4_0", true, 8, 8, "output.weight", 200, -1, CS_TYPE_F16},       /* q8_0 -> f16 */
    {"Q8_0", true, 8, 8, "output.weight", 512, -1, CS_TYPE_Q8_0},
    {"IQ4_XS", true, 8, 8, "output.weight", 512, -1, CS_TYPE_Q6_K},
    {"IQ4_NL", false, 8, 8, "token_embd.weight", 576, -1, CS_TYPE_Q8_0}, /* q6_K -> q8_0 */
    /* use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2. */
    {"Q4_K_M", true, 8, 8, "blk.0.attn_v.weight", 512, 0, CS_TYPE_Q6_K},
    {"Q4_K_M", true, 8, 8, "blk.1.attn_v.weight", 512, 1, CS_TYPE_Q4_K},
    {"Q4_K_M", true, 8, 8, "blk.3.attn_v.weight", 512, 3, CS_TYPE_Q6_K},
    {"Q4_K_M", true, 8, 8, "blk.7.ffn_down.weight", 512, 7, CS_TYPE_Q6_K},
    {"Q5_K_M", true, 8, 8, "blk.2.ffn_down.weight", 512, 2, CS_TYPE_Q5_K},
    {"Q5_K_M", true, 8, 8, "blk.3.ffn_down.weight", 576, 3, CS_TYPE_Q8_0}, /* q6_K -> q8_0 */
    {"Q4_K_M", true, 8, 8, "blk.1.attn_q.weight", 576, 1, CS_TYPE_Q5_0},   /* q4_K -> q5_0 */
    /* Q2_K: attn_v q4_K with n_gqa >= 4, else q3_K; ffn_down and
     * attn_output q3_K; q2_K/q3_K rows of 576 fall back to q4_0. */
    {"Q2_K", true, 8, 2, "blk.0.attn_v.weight", 512, 0, CS_TYPE_Q4_K},
    {"Q2_K", true, 8, 4, "blk.0.attn_v.weight", 512, 0, CS_TYPE_Q3_K},
    {"Q2_K", true, 8, 8, "blk.5.ffn_down.weight", 512, 5, CS_TYPE_Q3_K},
    {"Q2_K", true, 8, 8, "blk.5.attn_output.weight", 512, 5, CS_TYPE_Q3_K},
    {"Q2_K", true, 8, 8, "blk.5.attn_k.weight", 512, 5, CS_TYPE_Q2_K},
    {"Q2_K", true, 8, 8, "blk.5.ffn_up.weight", 576, 5, CS_TYPE_Q4_0},
    {"Q3_K_S", true, 8, 8, "blk.5.attn_v.weight", 512, 5, CS_TYPE_Q3_K},
    /* Q3_K_M: attn_v q5_K for the first 2; ffn_down q5_K below n/16. */
    {"Q3_K_M", true, 32, 8, "blk.1.attn_v.weight", 512, 1, CS_TYPE_Q5_K},
    {"Q3_K_M", true, 32, 8, "blk.2.attn_v.weight", 512, 2, CS_TYPE_Q4_K},
    {"Q3_K_M", true, 32, 8, "blk.1.ffn_down.weight", 512, 1, CS_TYPE_Q5_K},
    {"Q3_K_M", true, 32, 8, "blk.2.ffn_down.weight", 512, 2, CS_TYPE_Q4_K},
    {"Q3_K_M", true, 32, 8, "blk.2.attn_output.weight", 512, 2, CS_TYPE_Q4_K},
    {"Q3_K_M", true, 32, 8, "blk.2.ffn_gate.weight", 512, 2, CS_TYPE_Q3_K},
    {"Q3_K_L", true, 8, 8, "blk.4.attn_v.weight", 512, 4, CS_TYPE_Q5_K},
    {"Q3_K_L", true, 8, 8, "blk.4.ffn_down.weight", 512, 4, CS_TYPE_Q5_K},
    {"Q3_K_L", true, 8, 8, "blk.4.attn_output.weight", 576, 4, CS_TYPE_Q5_1},
    /* Q4_K_S: attn_v q5_K for the first 4, ffn_down below n/8. */
    {"Q4_K_S", true, 16, 8, "blk.3.attn_v.weight", 512, 3, CS_TYPE_Q5_K},
    {"Q4_K_S", true, 16, 8, "blk.4.attn_v.weight", 512, 4, CS_TYPE_Q4_K},
    {"Q4_K_S", true, 16, 8, "blk.1.ffn_down.weight", 512, 1, CS_TYPE_Q5_K},
    {"Q4_K_S", true, 16, 8, "blk.2.ffn_down.weight", 512, 2, CS_TYPE_Q4_K},
    {"Q5_K_S", true, 8, 8, "blk.0.ffn_down.weight", 576, 0, CS_TYPE_Q5_1},
    {"Q6_K", true, 8, 8, "blk.0.attn_q.weight", 200, 0, CS_TYPE_F16},
    /* IQ4_NL / IQ4_XS: attn_v q5_K with n_gqa >= 4; ffn_down q5_K below
     * n/8; iq4_xs rows of 576 fall back to iq4_nl. */
    {"IQ4_XS", true, 8, 2, "blk.3.attn_v.weight", 512, 3, CS_TYPE_Q5_K},
    {"IQ4_XS", true, 8, 4, "blk.3.attn_v.weight", 576, 3, CS_TYPE_IQ4_NL},
    {"IQ4_NL", true, 8, 8, "blk.0.ffn_down.weight", 512, 0, CS_TYPE_Q5_K},
    {"IQ4_NL", true, 8, 8, "blk.1.ffn_down.weight", 512, 1, CS_TYPE_IQ4_NL},
    {"IQ4_XS", true, 8, 8, "blk.0.ffn_down.weight", 576, 0, CS_TYPE_Q5_1},
    {"Q5_1", true, 8, 8, "blk.0.ffn_down.weight", 200, 0, CS_TYPE_F16},
};

static void test_quantize_rule_table(void **state) {
    (void)state;
    size_t n = 0;
    const qz_mix *mixes = qz_mixes(&n);
    assert_int_equal(n, 16);
    /* The public list is the table's. */
    for (size_t i = 0; i < n; i++)
        assert_string_equal(cs_quantize_mix_name((int32_t)i), mixes[i].name);
    assert_null(cs_quantize_mix_name(16));
    assert_null(cs_quantize_mix_name(-1));
    for (size_t i = 0; i < sizeof k_rule_cases / sizeof k_rule_cases[0]; i++) {
        const qz_rule_case *c = &k_rule_cases[i];
        qz_model_info mi = {c->has_output, false, c->n_layer, c->n_layer, 8, c->n_head_kv};
        const int32_t got = qz_rule_type(qz_mix_named(c->mix), &mi, c->name, c->ne0, c->layer);
        if (got != c->want)
            fail_msg("%s %s (ne0 %lld): %s, want %s", c->mix, c->name, (long long)c->ne0,
                     cs_type_name(got), cs_type_name(c->want));
    }
    /* A 70B model (llama.cpp's LLM_TYPE_70B): attn_v q3_K / q4_K -> q5_K
     * (Q4_K_M's layer 11 of 80 is not one of use_more_bits'). */
    qz_model_info big = {true, true, 80, 80, 64, 8};
    assert_int_equal(qz_rule_type(qz_mix_named("Q3_K_S"), &big, "blk.9.attn_v.weight", 8192, 9),
                     CS_TYPE_Q5_K);
    assert_int_equal(qz_rule_type(qz_mix_named("Q4_K_M"), &big, "blk.11.attn_v.weight", 8192, 11),
                     CS_TYPE_Q5_K);
    assert_int_equal(qz_rule_type(qz_mix_named("Q4_K_M"), &big, "blk.9.attn_q.weight", 8192, 9),
                     CS_TYPE_Q4_K);
}

/* Every mix writes a file that loads and decodes to finite logits, for a
 * llama of SmolLM2's width 576 (K rows fall back) and a tied qwen2; the
 * file type is the mix's. "llama:" names a mix in any case, a bare type
 * name stays the plain type, a bare mix name the mix. */
static void test_quantize_every_mix_loads(void **state) {
    (void)state;
    char src[512], out[512];
    qz_tmp("mixes-src", src, sizeof src);
    qz_tmp("mixes-out", out, sizeof out);
    size_t n_mixes = 0;
    const qz_mix *mixes = qz_mixes(&n_mixes);
    for (int arch = 0; arch < 2; arch++) {
        cs_gen_model_params p;
        assert_true(cs_gen_model_preset("tiny", &p));
        p.n_embd = arch ? 320 : 576;
        p.n_head = arch ? 5 : 9;
        p.n_head_kv = arch ? 1 : 3;
        p.n_ff = arch ? 544 : 512;
        p.n_layer = 2;
        p.arch = arch ? "qwen2" : NULL;
        p.tied_embeddings = arch == 1;
        p.seed = 5;
        p.vocab_path = test_bundled_model();
        assert_int_equal(cs_gen_model_write(&p, src), CS_OK);
        for (size_t i = 0; i < n_mixes; i++) {
            char target[64];
            snprintf(target, sizeof target, "%s%s", QZ_MIX_PREFIX, mixes[i].name);
            assert_int_equal(cs_model_quantize_threads(src, out, target, 2), CS_OK);
            gguf_file *g = NULL;
            assert_int_equal(gguf_open(out, &g), CS_OK);
            int64_t ft = -1;
            assert_int_equal(gguf_get_int(g, "general.file_type", &ft), CS_OK);
            assert_int_equal(ft, mixes[i].ftype);
            gguf_close(g);
            qz_load_decode(out);
        }
    }
    /* Names, on the qwen2 (tied token_embd of rows of 320): "LLAMA:q4_0" is
     * the mix (token_embd as output: q6_K, which does not fit: q8_0), bare
     * "Q4_0" the plain type, bare "q3_k_m" the mix. */
    gguf_file *g = NULL;
    assert_int_equal(cs_model_quantize_threads(src, out, "LLAMA:q4_0", 1), CS_OK);
    assert_int_equal(gguf_open(out, &g), CS_OK);
    assert_int_equal(qz_type_of(g, "token_embd.weight"), CS_TYPE_Q8_0);
    gguf_close(g);
    assert_int_equal(cs_model_quantize_threads(src, out, "Q4_0", 1), CS_OK);
    assert_int_equal(gguf_open(out, &g), CS_OK);
    assert_int_equal(qz_type_of(g, "token_embd.weight"), CS_TYPE_Q4_0);
    gguf_close(g);
    assert_int_equal(cs_model_quantize_threads(src, out, "q3_k_m", 1), CS_OK);
    assert_int_equal(gguf_open(out, &g), CS_OK);
    int64_t ft = -1;
    assert_int_equal(gguf_get_int(g, "general.file_type", &ft), CS_OK);
    assert_int_equal(ft, 12);
    gguf_close(g);
    remove(src);
    remove(out);
}

/* A mix refuses a file with experts (llama.cpp's MoE rules are not
 * implemented); a plain type does not look. */
static void test_quantize_mix_refuses_experts(void **state) {
    (void)state;
    char in[512], out[512];
    qz_tmp("experts-in.gguf", in, sizeof in);
    qz_tmp("experts-out", out, sizeof out);
    gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), CS_OK);
    assert_int_equal(gguf_writer_set_u32(w, "llama.block_count", 1), CS_OK);
    assert_int_equal(gguf_writer_set_u32(w, "llama.attention.head_count", 4), CS_OK);
    assert_int_equal(gguf_writer_set_u32(w, "llama.expert_count", 8), CS_OK);
    int64_t ne[2] = {256, 2};
    float data[512] = {0};
    assert_int_equal(
        gguf_writer_add_tensor(w, "blk.0.attn_q.weight", CS_TYPE_F32, 2, ne, data, sizeof data),
        CS_OK);
    assert_int_equal(gguf_writer_write_file(w, in), CS_OK);
    gguf_writer_free(w);
    assert_int_equal(cs_model_quantize(in, out, "Q4_K_M"), CS_ERR_UNSUPPORTED);
    assert_non_null(strstr(cs_last_error(), "experts"));
    assert_int_equal(access(out, F_OK), -1);
    assert_int_equal(cs_model_quantize(in, out, "q4_K"), CS_OK);
    remove(in);
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
        cmocka_unit_test(test_quantize_rule_table),
        cmocka_unit_test(test_quantize_every_mix_loads),
        cmocka_unit_test(test_quantize_mix_refuses_experts),
        cmocka_unit_test(test_quantize_threads_deterministic),
        cmocka_unit_test(test_quantize_unknown_type),
        cmocka_unit_test(test_quantize_missing_input),
        cmocka_unit_test(test_quantize_unsupported_source),
    };
    return test_run(tests, NULL, NULL);
}
