/* gen_model.c: `ctxshift gen-model` backend: a random-weight llama GGUF in
 * the layout llama.cpp loads (names, shapes, keys), for tests and benches.
 *
 * Weights are a deterministic function of (seed, tensor index, element
 * index): splitmix64 streams and only exact IEEE operations (no libm), so
 * the same parameters give the same bytes on every machine.
 *
 * Memory: the 1.1B F32 model is 4.4 GB, so tensors are never held whole.
 * The metadata is built with gguf_writer (which copies the tokenizer keys)
 * and written by gguf_stream (gguf_stream.h) with the tensor infos, then
 * each tensor's data is appended row by row. Peak memory is the vocabulary
 * plus one row. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cs_limits.h"
#include "gguf.h"
#include "gguf_stream.h"
#include "kernels/kernels.h"
#include "types.h"

/* Norm weights are 1 + U(-GEN_NORM_SPREAD, GEN_NORM_SPREAD). */
#define GEN_NORM_SPREAD 0.1f
/* qwen2 biases are U(-GEN_BIAS_SPREAD, GEN_BIAS_SPREAD): large enough that
 * a bias added at the wrong place (after RoPE, or not at all) moves logits. */
#define GEN_BIAS_SPREAD 0.5f
/* The "llama3" RoPE scaling of the rope_freqs preset (Llama 3.2's
 * rope_scaling in config.json). */
#define GEN_LLAMA3_FACTOR   32.0
#define GEN_LLAMA3_LOW      1.0
#define GEN_LLAMA3_HIGH     4.0
#define GEN_LLAMA3_CTX_ORIG 8192.0
/* Largest FFN width accepted (TinyLlama 5632, Llama-3-405B 53248). */
#define GEN_MAX_FF (1 << 20)

/* ------------------------------------------------------------- presets */

typedef struct gen_preset {
    const char *name;
    int32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx_train;
    float rope_freq_base, norm_eps;
    const char *arch; /* NULL: llama */
    int32_t head_dim; /* 0: n_embd / n_head */
    bool tied, rope_freqs;
} gen_preset;

/* The family presets take the published shapes (config.json) of the models
 * named; nemo-small keeps only Nemo's head size 128 != n_embd / n_head. */
static const gen_preset k_presets[] = {
    {"tiny", 64, 2, 4, 2, 128, 512, 10000.0f, 1e-5f, NULL, 0, false, false},
    {"110m", 768, 12, 12, 12, 2048, 2048, 10000.0f, 1e-5f, NULL, 0, false, false},
    {"1.1b", 2048, 22, 32, 4, 5632, 2048, 10000.0f, 1e-5f, NULL, 0, false, false},
    {"llama3-1b", 2048, 16, 32, 8, 8192, 131072, 500000.0f, 1e-5f, NULL, 0, true, true},
    {"smollm2-135m", 576, 30, 9, 3, 1536, 8192, 100000.0f, 1e-5f, NULL, 0, true, false},
    {"qwen2.5-0.5b", 896, 24, 14, 2, 4864, 32768, 1000000.0f, 1e-6f, "qwen2", 0, true, false},
    {"nemo-small", 320, 2, 8, 2, 512, 4096, 1000000.0f, 1e-5f, NULL, 128, false, false},
};

bool cs_gen_model_preset(const char *name, cs_gen_model_params *params) {
    if (!name || !params) return false;
    for (size_t i = 0; i < sizeof k_presets / sizeof k_presets[0]; i++) {
        const gen_preset *p = &k_presets[i];
        if (strcmp(p->name, name) != 0) continue;
        /* vocab_path is left as it was: the caller names the vocabulary. */
        params->n_embd = p->n_embd;
        params->n_layer = p->n_layer;
        params->n_head = p->n_head;
        params->n_head_kv = p->n_head_kv;
        params->n_ff = p->n_ff;
        params->n_ctx_train = p->n_ctx_train;
        params->n_vocab = 0;
        params->type = CS_TYPE_F32;
        params->rope_freq_base = p->rope_freq_base;
        params->norm_eps = p->norm_eps;
        params->tied_embeddings = p->tied;
        params->seed = 0;
        params->arch = p->arch;
        params->head_dim = p->head_dim;
        params->rope_freqs = p->rope_freqs;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------ RNG */

static uint64_t gen_splitmix(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1): 24 random bits, exact in float. */
static float gen_uniform(uint64_t *state) {
    return (float)(int32_t)(gen_splitmix(state) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

/* ------------------------------------------------------------- tensors */

/* What a tensor's values are. */
typedef enum gen_kind {
    GEN_MATRIX,  /* U(-a, a), a = sqrt(3 / fan_in) */
    GEN_NORM,    /* 1 + U(-GEN_NORM_SPREAD, GEN_NORM_SPREAD) */
    GEN_BIAS,    /* U(-GEN_BIAS_SPREAD, GEN_BIAS_SPREAD) */
    GEN_FACTORS, /* rope_freqs: gen_rope_factor, not random */
} gen_kind;

typedef struct gen_tensor {
    char name[64];
    int32_t type;
    int32_t n_dims;
    int64_t ne[2];
    uint64_t nbytes;
    gen_kind kind;
} gen_tensor;

/* ne1 == 0: a 1-D F32 tensor of `kind` (norm, bias or factors). */
static void gen_add_kind(gen_tensor *t, int64_t *n, const char *name, int32_t type, int64_t ne0,
                         int64_t ne1, gen_kind kind) {
    gen_tensor *g = &t[(*n)++];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->kind = ne1 == 0 ? kind : GEN_MATRIX;
    g->n_dims = ne1 == 0 ? 1 : 2;
    g->ne[0] = ne0;
    g->ne[1] = ne1 == 0 ? 1 : ne1;
    /* Rows that do not fill whole blocks stay F32 (as llama-quantize does
     * for stories260K's ffn_down, rows of 172). */
    const type_traits *tr = type_traits_get(type);
    g->type = (ne1 == 0 || ne0 % tr->blck != 0) ? CS_TYPE_F32 : type;
}

static void gen_add(gen_tensor *t, int64_t *n, const char *name, int32_t type, int64_t ne0,
                    int64_t ne1) {
    gen_add_kind(t, n, name, type, ne0, ne1, GEN_NORM);
}

static void gen_add_layer(gen_tensor *t, int64_t *n, int32_t il, const char *what, int32_t type,
                          int64_t ne0, int64_t ne1) {
    char name[64];
    snprintf(name, sizeof name, "blk.%" PRId32 ".%s.weight", il, what);
    gen_add(t, n, name, type, ne0, ne1);
}

static void gen_add_bias(gen_tensor *t, int64_t *n, int32_t il, const char *what, int64_t ne0) {
    char name[64];
    snprintf(name, sizeof name, "blk.%" PRId32 ".%s.bias", il, what);
    gen_add_kind(t, n, name, CS_TYPE_F32, ne0, 0, GEN_BIAS);
}

static bool gen_is_qwen2(const cs_gen_model_params *p) {
    return p->arch && strcmp(p->arch, "qwen2") == 0;
}

static int32_t gen_head_dim(const cs_gen_model_params *p) {
    return p->head_dim ? p->head_dim : p->n_embd / p->n_head;
}

/* Factor i of rope_freqs.weight as llama.cpp's converter computes the
 * "llama3" scaling (convert_hf_to_gguf.py, LlamaModel): for the pair's
 * wavelength 2*pi / base^(-2i/head_dim), 1 below original_context / high,
 * `factor` above original_context / low, and a smooth blend between.
 * Uses pow (libm) in double, rounded once to float. */
static float gen_rope_factor(const cs_gen_model_params *p, int64_t i) {
    const double dim = (double)gen_head_dim(p);
    const double freq = 1.0 / pow((double)p->rope_freq_base, (double)(2 * i) / dim);
    const double wavelen = 2.0 * 3.14159265358979323846 / freq;
    const double lo_wavelen = GEN_LLAMA3_CTX_ORIG / GEN_LLAMA3_LOW;
    const double hi_wavelen = GEN_LLAMA3_CTX_ORIG / GEN_LLAMA3_HIGH;
    if (wavelen < hi_wavelen) return 1.0f;
    if (wavelen > lo_wavelen) return (float)GEN_LLAMA3_FACTOR;
    const double smooth =
        (GEN_LLAMA3_CTX_ORIG / wavelen - GEN_LLAMA3_LOW) / (GEN_LLAMA3_HIGH - GEN_LLAMA3_LOW);
    return (float)(1.0 / ((1.0 - smooth) / GEN_LLAMA3_FACTOR + smooth));
}

/* The llama tensor list, in llama.cpp's conversion order; ne0 is the input
 * dimension. Returns the count (t holds 4 + 12 * n_layer entries). */
static int64_t gen_tensor_list(const cs_gen_model_params *p, int64_t n_vocab, gen_tensor *t) {
    int64_t n = 0;
    const int64_t hd = gen_head_dim(p);
    const int64_t n_embd_q = hd * p->n_head, n_embd_kv = hd * p->n_head_kv;
    if (p->rope_freqs)
        gen_add_kind(t, &n, "rope_freqs.weight", CS_TYPE_F32, hd / 2, 0, GEN_FACTORS);
    gen_add(t, &n, "token_embd.weight", p->type, p->n_embd, n_vocab);
    gen_add(t, &n, "output_norm.weight", p->type, p->n_embd, 0);
    if (!p->tied_embeddings) gen_add(t, &n, "output.weight", p->type, p->n_embd, n_vocab);
    for (int32_t il = 0; il < p->n_layer; il++) {
        gen_add_layer(t, &n, il, "attn_norm", p->type, p->n_embd, 0);
        gen_add_layer(t, &n, il, "attn_q", p->type, p->n_embd, n_embd_q);
        gen_add_layer(t, &n, il, "attn_k", p->type, p->n_embd, n_embd_kv);
        gen_add_layer(t, &n, il, "attn_v", p->type, p->n_embd, n_embd_kv);
        if (gen_is_qwen2(p)) {
            gen_add_bias(t, &n, il, "attn_q", n_embd_q);
            gen_add_bias(t, &n, il, "attn_k", n_embd_kv);
            gen_add_bias(t, &n, il, "attn_v", n_embd_kv);
        }
        gen_add_layer(t, &n, il, "attn_output", p->type, n_embd_q, p->n_embd);
        gen_add_layer(t, &n, il, "ffn_norm", p->type, p->n_embd, 0);
        gen_add_layer(t, &n, il, "ffn_gate", p->type, p->n_embd, p->n_ff);
        gen_add_layer(t, &n, il, "ffn_up", p->type, p->n_embd, p->n_ff);
        gen_add_layer(t, &n, il, "ffn_down", p->type, p->n_ff, p->n_embd);
    }
    for (int64_t i = 0; i < n; i++) {
        uint64_t row = 0;
        type_row_size(t[i].type, t[i].ne[0], &row); /* block multiple by construction */
        t[i].nbytes = row * (uint64_t)t[i].ne[1];
    }
    return n;
}

/* ----------------------------------------------------------- validation */

static cs_status gen_check_params(const cs_gen_model_params *p) {
#define GEN_RANGE(field, lo, hi)                                                                   \
    if (p->field < (lo) || p->field > (hi))                                                        \
        return error_fail(CS_ERR_INVALID_ARG,                                                      \
                          "gen-model: " #field " %" PRId32 " is not in %d..%d", p->field,          \
                          (int)(lo), (int)(hi));
    GEN_RANGE(n_embd, 1, CS_MAX_EMBD)
    GEN_RANGE(n_layer, 1, CS_MAX_LAYERS)
    GEN_RANGE(n_head, 1, CS_MAX_HEADS)
    GEN_RANGE(n_head_kv, 1, p->n_head)
    GEN_RANGE(n_ff, 1, GEN_MAX_FF)
    GEN_RANGE(n_ctx_train, 1, CS_MAX_CTX)
    GEN_RANGE(n_vocab, 0, CS_MAX_VOCAB)
#undef GEN_RANGE
    if (p->arch && strcmp(p->arch, "llama") != 0 && strcmp(p->arch, "qwen2") != 0)
        return error_fail(CS_ERR_INVALID_ARG, "gen-model: arch '%s' is not one of llama, qwen2",
                          p->arch);
    if (p->head_dim != 0 &&
        (p->head_dim < 2 || p->head_dim % 2 != 0 || p->head_dim > CS_MAX_EMBD / p->n_head))
        return error_fail(CS_ERR_INVALID_ARG,
                          "gen-model: head_dim %" PRId32 " must be even and in 2..%d", p->head_dim,
                          CS_MAX_EMBD / p->n_head);
    if (p->head_dim == 0 && (p->n_embd % p->n_head != 0 || (p->n_embd / p->n_head) % 2 != 0))
        return error_fail(CS_ERR_INVALID_ARG,
                          "gen-model: n_embd %" PRId32 " / n_head %" PRId32
                          " must be a whole, even head size",
                          p->n_embd, p->n_head);
    if (p->n_head % p->n_head_kv != 0)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gen-model: n_head_kv %" PRId32 " does not divide n_head %" PRId32,
                          p->n_head_kv, p->n_head);
    if (!type_is_weight(p->type)) {
        char names[160];
        return error_fail(CS_ERR_INVALID_ARG, "gen-model: type %" PRId32 " (%s) is not one of %s",
                          p->type, cs_type_name(p->type), type_weight_names(names, sizeof names));
    }
    if (!(p->rope_freq_base > 0.0f) || isinf(p->rope_freq_base))
        return error_fail(CS_ERR_INVALID_ARG, "gen-model: rope_freq_base %g must be > 0",
                          (double)p->rope_freq_base);
    if (!(p->norm_eps > 0.0f) || isinf(p->norm_eps))
        return error_fail(CS_ERR_INVALID_ARG, "gen-model: norm_eps %g must be > 0",
                          (double)p->norm_eps);
    if (!p->vocab_path)
        return error_fail(CS_ERR_INVALID_ARG, "gen-model: vocab_path is required (a GGUF with "
                                              "tokenizer.* keys)");
    return CS_OK;
}

/* llama_ftype of a file whose 2-D weights are mostly `type` (the table's
 * general.file_type; the type was checked to be a weight type). */
static uint32_t gen_file_type(int32_t type) {
    return (uint32_t)type_traits_get(type)->ftype;
}

/* ------------------------------------------------------------ metadata */

/* Copy the tokenizer.* keys of vocab. With n_vocab below the vocabulary's
 * size only SentencePiece ("llama") vocabularies can be cut (BPE merges
 * would refer to dropped tokens): tokens, scores and token_type keep their
 * first n_vocab entries, and every special token id must stay inside. */
static cs_status gen_copy_vocab(gguf_writer *w, const gguf_file *vocab, int64_t n_vocab,
                                uint64_t vocab_size) {
    cs_status st = CS_OK;
    const char **strs = NULL;
    bool cut = (uint64_t)n_vocab < vocab_size;
    if (cut) {
        const char *model = NULL;
        if (gguf_get_str(vocab, "tokenizer.ggml.model", &model, NULL) != CS_OK ||
            strcmp(model, "llama") != 0)
            return error_fail(CS_ERR_UNSUPPORTED,
                              "gen-model: n_vocab %" PRId64 " < vocabulary size %" PRIu64
                              " is only supported for SentencePiece (\"llama\") vocabularies",
                              n_vocab, vocab_size);
    }
    for (int64_t i = 0; i < gguf_n_kv(vocab); i++) {
        const char *key = gguf_kv_key(vocab, i);
        if (strncmp(key, "tokenizer.", 10) != 0) continue;
        size_t klen = strlen(key);
        if (cut && klen > 9 && strcmp(key + klen - 9, "_token_id") == 0) {
            int64_t id = -1;
            if (gguf_get_int(vocab, key, &id) == CS_OK && id >= n_vocab && id != UINT32_MAX) {
                st = error_fail(CS_ERR_INVALID_ARG,
                                "gen-model: %s = %" PRId64 " is outside the first %" PRId64
                                " tokens",
                                key, id, n_vocab);
                goto done;
            }
        }
        bool per_token = strcmp(key, "tokenizer.ggml.tokens") == 0 ||
                         strcmp(key, "tokenizer.ggml.scores") == 0 ||
                         strcmp(key, "tokenizer.ggml.token_type") == 0;
        if (!cut || !per_token) {
            st = gguf_writer_copy_kv(w, vocab, i);
        } else if (gguf_kv_type(vocab, i) != GGUF_TYPE_ARRAY ||
                   gguf_kv_arr_n(vocab, i) != vocab_size) {
            st = error_fail(CS_ERR_FORMAT,
                            "gen-model: vocabulary key '%s' is not an array of %" PRIu64 " items",
                            key, vocab_size);
        } else if (gguf_kv_arr_type(vocab, i) == GGUF_TYPE_STRING) {
            strs = mem_malloc((size_t)n_vocab * sizeof *strs);
            if (!strs) {
                st = error_fail(CS_ERR_NOMEM, "gen-model: out of memory");
                goto done;
            }
            /* Token texts with NUL bytes would be cut at the NUL (SPM has none). */
            for (int64_t j = 0; j < n_vocab; j++)
                strs[j] = gguf_get_arr_str(vocab, i, (uint64_t)j, NULL);
            st = gguf_writer_set_arr_str(w, key, strs, (uint64_t)n_vocab);
            mem_free(strs);
            strs = NULL;
        } else {
            int32_t et;
            const void *data;
            st = gguf_get_arr(vocab, key, &et, NULL, &data);
            if (st == CS_OK) st = gguf_writer_set_arr(w, key, et, data, (uint64_t)n_vocab);
        }
        if (st != CS_OK) goto done;
    }
done:
    mem_free(strs);
    return st;
}

static cs_status gen_metadata(gguf_writer *w, const cs_gen_model_params *p, int64_t n_vocab) {
    cs_status st;
    int32_t head_dim = gen_head_dim(p);
    const char *a = gen_is_qwen2(p) ? "qwen2" : "llama";
    char key[96];
#define GEN_KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
#define GEN_TRY(call)                                                                              \
    if ((st = (call)) != CS_OK) return st;
    GEN_TRY(gguf_writer_set_str(w, "general.architecture", a))
    GEN_TRY(gguf_writer_set_str(
        w, "general.name", gen_is_qwen2(p) ? "ctxshift random qwen2" : "ctxshift random llama"))
    GEN_TRY(gguf_writer_set_u32(w, "general.file_type", gen_file_type(p->type)))
    GEN_TRY(gguf_writer_set_u32(w, "general.quantization_version", 2))
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("context_length"), (uint32_t)p->n_ctx_train))
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("embedding_length"), (uint32_t)p->n_embd))
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("block_count"), (uint32_t)p->n_layer))
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("feed_forward_length"), (uint32_t)p->n_ff))
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("attention.head_count"), (uint32_t)p->n_head))
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("attention.head_count_kv"), (uint32_t)p->n_head_kv))
    if (p->head_dim != 0) {
        GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("attention.key_length"), (uint32_t)head_dim))
        GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("attention.value_length"), (uint32_t)head_dim))
    }
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("rope.dimension_count"), (uint32_t)head_dim))
    GEN_TRY(gguf_writer_set_f32(w, GEN_KEY("rope.freq_base"), p->rope_freq_base))
    GEN_TRY(gguf_writer_set_f32(w, GEN_KEY("attention.layer_norm_rms_epsilon"), p->norm_eps))
    GEN_TRY(gguf_writer_set_u32(w, GEN_KEY("vocab_size"), (uint32_t)n_vocab))
#undef GEN_KEY
#undef GEN_TRY
    return CS_OK;
}

/* ------------------------------------------------------------- writing */

/* One tensor's data, generated and converted row by row. row_f32 holds
 * ne0 floats, row_out one converted row. */
static cs_status gen_write_tensor(gguf_stream *s, const cs_gen_model_params *p, const gen_tensor *t,
                                  int64_t index, float *row_f32, void *row_out) {
    cs_status st;
    const uint64_t seed = p->seed;
    uint64_t state = seed ^ (0x5851f42d4c957f2dull * (uint64_t)(index + 1));
    gen_splitmix(&state); /* decorrelate nearby seeds */
    /* Uniform on [-a, a] has std a/sqrt(3); std 1/sqrt(fan_in) keeps
     * activations O(1) through the layers. fan_in is ne0. */
    float a = sqrtf(3.0f / (float)t->ne[0]);
    uint64_t row_bytes = t->nbytes / (uint64_t)t->ne[1];
    for (int64_t r = 0; r < t->ne[1]; r++) {
        for (int64_t j = 0; j < t->ne[0]; j++) {
            float u = gen_uniform(&state);
            switch (t->kind) {
            case GEN_MATRIX:
                row_f32[j] = a * u;
                break;
            case GEN_NORM:
                row_f32[j] = 1.0f + GEN_NORM_SPREAD * u;
                break;
            case GEN_BIAS:
                row_f32[j] = GEN_BIAS_SPREAD * u;
                break;
            case GEN_FACTORS:
                row_f32[j] = gen_rope_factor(p, j);
                break;
            }
        }
        const void *out = row_f32;
        if (t->type != CS_TYPE_F32) {
            quantize_row(t->type, row_f32, row_out, t->ne[0]);
            out = row_out;
        }
        if ((st = gguf_stream_write(s, out, (size_t)row_bytes)) != CS_OK) return st;
    }
    return gguf_stream_end_tensor(s);
}

cs_status cs_gen_model_write(const cs_gen_model_params *params, const char *path) {
    cs_status st;
    gguf_file *vocab = NULL;
    gguf_writer *w = NULL;
    gen_tensor *tensors = NULL;
    gguf_stream_tensor *infos = NULL;
    float *row_f32 = NULL;
    void *row_out = NULL;
    gguf_stream *s = NULL;
    char *tmp = NULL;

    if (!params || !path)
        return error_fail(CS_ERR_INVALID_ARG, "gen-model: params and path are required");
    if ((st = gen_check_params(params)) != CS_OK) return st;
    if ((st = gguf_open(params->vocab_path, &vocab)) != CS_OK) goto fail;

    int64_t tok = gguf_find_key(vocab, "tokenizer.ggml.tokens");
    if (tok < 0 || gguf_kv_arr_type(vocab, tok) != GGUF_TYPE_STRING) {
        st = error_fail(CS_ERR_FORMAT, "gen-model: '%s' has no tokenizer.ggml.tokens string array",
                        params->vocab_path);
        goto fail;
    }
    uint64_t vocab_size = gguf_kv_arr_n(vocab, tok);
    int64_t n_vocab = params->n_vocab ? params->n_vocab : (int64_t)vocab_size;
    if (n_vocab < 1 || (uint64_t)n_vocab > vocab_size || n_vocab > CS_MAX_VOCAB) {
        st = error_fail(CS_ERR_INVALID_ARG,
                        "gen-model: n_vocab %" PRId64 " is not in 1..%" PRIu64
                        " (the size of the vocabulary in '%s')",
                        n_vocab, vocab_size, params->vocab_path);
        goto fail;
    }

    /* Metadata (the writer copies the vocabulary). */
    if ((st = gguf_writer_new(&w)) != CS_OK) goto fail;
    if ((st = gen_metadata(w, params, n_vocab)) != CS_OK) goto fail;
    if ((st = gen_copy_vocab(w, vocab, n_vocab, vocab_size)) != CS_OK) goto fail;
    gguf_close(vocab);
    vocab = NULL;

    int64_t max_tensors = 4 + 12 * (int64_t)params->n_layer;
    tensors = mem_calloc((size_t)max_tensors, sizeof *tensors);
    infos = mem_calloc((size_t)max_tensors, sizeof *infos);
    if (!tensors || !infos) {
        st = error_fail(CS_ERR_NOMEM, "gen-model: out of memory");
        goto fail;
    }
    int64_t n_tensors = gen_tensor_list(params, n_vocab, tensors);
    for (int64_t i = 0; i < n_tensors; i++) {
        infos[i].name = tensors[i].name;
        infos[i].type = tensors[i].type;
        infos[i].n_dims = tensors[i].n_dims;
        infos[i].ne[0] = tensors[i].ne[0];
        infos[i].ne[1] = tensors[i].ne[1];
        infos[i].ne[2] = infos[i].ne[3] = 1;
        infos[i].nbytes = tensors[i].nbytes;
    }
    int64_t max_ne0 = params->n_embd > params->n_ff ? params->n_embd : params->n_ff;
    const int64_t n_embd_q = (int64_t)gen_head_dim(params) * params->n_head;
    if (n_embd_q > max_ne0) max_ne0 = n_embd_q;
    row_f32 = mem_malloc((size_t)max_ne0 * sizeof *row_f32);
    row_out = mem_malloc((size_t)max_ne0 * sizeof *row_f32); /* >= any converted row */
    if (!row_f32 || !row_out) {
        st = error_fail(CS_ERR_NOMEM, "gen-model: out of memory");
        goto fail;
    }

    /* Written to PATH.tmp and renamed, as quantize does: a failed write
     * (ENOSPC) removes the temporary and leaves a file at PATH as it was. */
    const size_t plen = strlen(path);
    if (!(tmp = mem_malloc(plen + 5))) {
        st = error_fail(CS_ERR_NOMEM, "gen-model: out of memory");
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    if ((st = gguf_stream_begin(tmp, w, infos, n_tensors, &s)) != CS_OK) goto fail;
    gguf_writer_free(w);
    w = NULL;
    for (int64_t i = 0; i < n_tensors; i++) {
        st = gen_write_tensor(s, params, &tensors[i], i, row_f32, row_out);
        if (st != CS_OK) goto fail;
    }
    st = gguf_stream_finish(s); /* removes tmp on failure */
    s = NULL;
    if (st == CS_OK && rename(tmp, path) != 0) {
        st = error_fail(CS_ERR_IO, "gen-model: cannot rename '%s' to '%s': %s", tmp, path,
                        strerror(errno));
        remove(tmp);
    }

fail:
    gguf_stream_abort(s);
    gguf_close(vocab);
    gguf_writer_free(w);
    mem_free(tensors);
    mem_free(infos);
    mem_free(row_f32);
    mem_free(row_out);
    mem_free(tmp);
    return st;
}
