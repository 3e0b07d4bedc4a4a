/* model.c: cs_model_load for general.architecture "llama" (Llama 1-3,
 * Mistral, SmolLM) and "qwen2" (Qwen2 / Qwen2.5: Q/K/V biases, NEOX RoPE). Reads the
 * hyper-parameters, checks them against sanity caps, binds every tensor by
 * name with its exact expected shape and a supported type. Cost: O(keys +
 * tensors); no weight data is touched (it stays in the mapping). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cs_limits.h"
#include "kernels/kernels.h"
#include "kernels/matmul.h"
#include "types.h"

cs_model_params cs_model_default_params(void) {
    return (cs_model_params){.vocab_only = false, .use_mmap = true, .repack = true};
}

/* ------------------------------------------------------ hyper-parameters */

/* Read an integer key "<arch>.<suffix>" into *out, bounded to [lo, hi].
 * A missing key takes def when has_def, else it is an error. */
static cs_status read_int(const cs_model *m, const char *suffix, bool has_def, int64_t def,
                          int64_t lo, int64_t hi, int32_t *out) {
    const gguf_file *g = m->gguf;
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    int64_t v = def;
    if (gguf_find_key(g, key) >= 0 || !has_def) {
        cs_status st = gguf_get_int(g, key, &v);
        if (st != CS_OK) return st;
    }
    if (v < lo || v > hi)
        return error_fail(CS_ERR_FORMAT, "model: key '%s' = %lld is outside [%lld, %lld]", key,
                          (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return CS_OK;
}

static cs_status read_float(const cs_model *m, const char *suffix, bool has_def, double def,
                            float *out) {
    const gguf_file *g = m->gguf;
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    double v = def;
    if (gguf_find_key(g, key) >= 0 || !has_def) {
        cs_status st = gguf_get_float(g, key, &v);
        if (st != CS_OK) return st;
    }
    if (!isfinite(v) || v < 0 || v > 1e30)
        return error_fail(CS_ERR_FORMAT, "model: key '%s' = %g is not a finite non-negative number",
                          key, v);
    *out = (float)v;
    return CS_OK;
}

/* True when the file has key "<arch>.<suffix>". */
static bool has_key(const cs_model *m, const char *suffix) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    return gguf_find_key(m->gguf, key) >= 0;
}

static cs_status load_hparams(cs_model *m) {
    const gguf_file *g = m->gguf;
    model_hparams *hp = &m->hp;
    const char *a = m->arch_name;
    char key[128];
    cs_status st;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x)) != CS_OK) return st;                                                        \
    } while (0)
    /* Mixture-of-experts files (Mixtral, Qwen2-MoE) have per-expert FFN
     * tensors this forward pass does not compute: refuse them up front. */
    if (has_key(m, "expert_count")) {
        int32_t n_expert = 0;
        TRY(read_int(m, "expert_count", false, 0, 0, INT32_MAX, &n_expert));
        if (n_expert > 0)
            return error_fail(CS_ERR_UNSUPPORTED,
                              "model: %s.expert_count = %d: mixture-of-experts models are not "
                              "supported",
                              a, n_expert);
    }
    TRY(read_int(m, "context_length", false, 0, 1, INT32_MAX, &hp->n_ctx_train));
    TRY(read_int(m, "embedding_length", false, 0, 1, CS_MAX_EMBD, &hp->n_embd));
    TRY(read_int(m, "block_count", false, 0, 1, CS_MAX_LAYERS, &hp->n_layer));
    TRY(read_int(m, "feed_forward_length", false, 0, 1, CS_MAX_EMBD * 8, &hp->n_ff));
    TRY(read_int(m, "attention.head_count", false, 0, 1, CS_MAX_HEADS, &hp->n_head));
    TRY(read_int(m, "attention.head_count_kv", true, hp->n_head, 1, CS_MAX_HEADS, &hp->n_head_kv));
    /* Head size: attention.key_length / value_length when present (they
     * may differ from n_embd / n_head: Mistral Nemo), else n_embd / n_head
     * as llama.cpp defaults both. */
    const bool has_kl = has_key(m, "attention.key_length");
    const bool has_vl = has_key(m, "attention.value_length");
    if ((!has_kl || !has_vl) && hp->n_embd % hp->n_head != 0)
        return error_fail(CS_ERR_FORMAT,
                          "model: %s.embedding_length %d is not a multiple of "
                          "%s.attention.head_count %d",
                          a, hp->n_embd, a, hp->n_head);
    if (hp->n_head % hp->n_head_kv != 0)
        return error_fail(CS_ERR_FORMAT,
                          "model: %s.attention.head_count %d is not a multiple of "
                          "%s.attention.head_count_kv %d",
                          a, hp->n_head, a, hp->n_head_kv);
    const int32_t hd_def = hp->n_embd / hp->n_head;
    int32_t hd_k = 0, hd_v = 0;
    TRY(read_int(m, "attention.key_length", true, hd_def, 2, CS_MAX_EMBD / hp->n_head, &hd_k));
    TRY(read_int(m, "attention.value_length", true, hd_def, 1, CS_MAX_EMBD / hp->n_head, &hd_v));
    if (hd_k != hd_v)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "model: %s.attention.key_length %d differs from "
                          "%s.attention.value_length %d, which is not supported",
                          a, hd_k, a, hd_v);
    hp->head_dim = hd_k;
    hp->n_embd_q = hp->head_dim * hp->n_head;
    hp->n_embd_kv = hp->head_dim * hp->n_head_kv;
    TRY(read_int(m, "rope.dimension_count", true, hp->head_dim, 2, hp->head_dim, &hp->n_rot));
    if (hp->n_rot % 2 != 0)
        return error_fail(CS_ERR_FORMAT, "model: %s.rope.dimension_count %d is odd", a, hp->n_rot);
    TRY(read_float(m, "rope.freq_base", true, 10000.0, &hp->rope_freq_base));
    if (hp->rope_freq_base <= 1.0f)
        return error_fail(CS_ERR_FORMAT, "model: %s.rope.freq_base %g must be > 1", a,
                          (double)hp->rope_freq_base);
    /* Linear RoPE scaling: freq_scale = 1 / factor (llama.cpp). The
     * "llama3" scaling comes as the rope_freqs.weight tensor (load_tensors).
     * Other scaling types (yarn, longrope) are refused by name. */
    hp->rope_freq_scale = 1.0f;
    const char *stype = NULL;
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (gguf_find_key(g, key) >= 0) {
        TRY(gguf_get_str(g, key, &stype, NULL));
        if (strcmp(stype, "none") != 0 && strcmp(stype, "linear") != 0)
            return error_fail(CS_ERR_UNSUPPORTED,
                              "model: %s.rope.scaling.type '%s' is not supported (none, linear)", a,
                              stype);
    }
    float factor = 0.0f;
    if (has_key(m, "rope.scaling.factor"))
        TRY(read_float(m, "rope.scaling.factor", true, 0.0, &factor));
    else if (has_key(m, "rope.scale_linear"))
        TRY(read_float(m, "rope.scale_linear", true, 0.0, &factor));
    if (factor != 0.0f && (!stype || strcmp(stype, "none") != 0)) {
        if (factor < 1e-3f)
            return error_fail(CS_ERR_FORMAT, "model: rope scaling factor %g is too small",
                              (double)factor);
        hp->rope_freq_scale = 1.0f / factor;
    }
    TRY(read_float(m, "attention.layer_norm_rms_epsilon", false, 0.0, &hp->norm_eps));
    /* llama.cpp: LLM_ARCH_QWEN2 uses LLAMA_ROPE_TYPE_NEOX (pairs i, i + n_rot/2) */
    hp->rope_mode = m->arch == MODEL_ARCH_QWEN2 ? CS_ROPE_NEOX : CS_ROPE_NORM;
    hp->n_vocab = tokenizer_n_tokens(m->vocab);
    if (has_key(m, "vocab_size")) {
        int32_t nv = 0;
        TRY(read_int(m, "vocab_size", false, 0, 1, CS_MAX_VOCAB, &nv));
        if (nv != hp->n_vocab)
            return error_fail(CS_ERR_FORMAT,
                              "model: %s.vocab_size %d differs from the %d tokens of "
                              "tokenizer.ggml.tokens",
                              a, nv, hp->n_vocab);
    }
#undef TRY
    return CS_OK;
}

/* ---------------------------------------------------------------- tensors */

static size_t type_align(int32_t type) {
    return type == CS_TYPE_F32 ? 4 : 2;
}

/* Find tensor `name` with shape [ne0, ne1] (ne1 = 0: a 1-D tensor) and a
 * supported type. optional: a missing tensor gives CS_OK with w->data NULL. */
static cs_status bind(cs_model *m, const char *name, int64_t ne0, int64_t ne1, bool optional,
                      model_weight *w) {
    memset(w, 0, sizeof *w);
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (optional) return CS_OK;
        return error_fail(CS_ERR_FORMAT, "model: missing tensor '%s'", name);
    }
    int32_t want_dims = ne1 ? 2 : 1;
    int64_t got1 = t->n_dims >= 2 ? t->ne[1] : 0;
    bool extra = t->ne[2] != 1 || t->ne[3] != 1;
    if (t->n_dims > want_dims && extra) got1 = -1;
    if (t->ne[0] != ne0 || got1 != ne1 || (t->n_dims < want_dims))
        return error_fail(CS_ERR_FORMAT,
                          "model: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, "
                          "%lld]",
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)t->ne[3], (long long)ne0, (long long)(ne1 ? ne1 : 1));
    if (!type_is_weight(t->type)) {
        char names[256];
        return error_fail(CS_ERR_UNSUPPORTED,
                          "model: tensor '%s' has type %s (%d), which is not supported (%s)", name,
                          cs_type_name(t->type), t->type, type_weight_names(names, sizeof names));
    }
    if (((uintptr_t)t->data) % type_align(t->type) != 0)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "model: tensor '%s': data is not aligned to %zu bytes", name,
                          type_align(t->type));
    w->type = t->type;
    w->ne0 = ne0;
    w->ne1 = ne1 ? ne1 : 1;
    w->data = t->data;
    m->n_params += (uint64_t)ne0 * (uint64_t)w->ne1;
    m->n_bytes += t->nbytes;
    return CS_OK;
}

static cs_status bind_norm(cs_model *m, const char *name, int64_t n, const float **out) {
    model_weight w;
    cs_status st = bind(m, name, n, 0, false, &w);
    if (st != CS_OK) return st;
    if (w.type != CS_TYPE_F32)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "model: norm tensor '%s' has type %s; only f32 norms "
                          "are supported",
                          name, cs_type_name(w.type));
    *out = w.data;
    return CS_OK;
}

/* The F32 attention bias `name` of n elements, required for qwen2. A
 * llama file binds none (one there is an unexpected tensor, load_tensors). */
static cs_status bind_bias(cs_model *m, const char *name, int64_t n, const float **out) {
    *out = NULL;
    if (m->arch != MODEL_ARCH_QWEN2) return CS_OK;
    model_weight w;
    cs_status st = bind(m, name, n, 0, false, &w);
    if (st != CS_OK) return st;
    if (w.type != CS_TYPE_F32)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "model: bias tensor '%s' has type %s; only f32 biases are supported",
                          name, cs_type_name(w.type));
    *out = w.data;
    return CS_OK;
}

/* rope_freqs.weight (optional): n_rot/2 F32 angle divisors, each finite
 * and > 0 (a zero would make every angle infinite). O(n_rot). */
static cs_status bind_rope_freqs(cs_model *m) {
    model_hparams *hp = &m->hp;
    const char *name = "rope_freqs.weight";
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) return CS_OK;
    const int64_t want = hp->n_rot / 2;
    if (t->ne[0] != want || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return error_fail(CS_ERR_FORMAT,
                          "model: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected %lld "
                          "factors (n_rot / 2, %s.rope.dimension_count %d)",
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)t->ne[3], (long long)want, m->arch_name, hp->n_rot);
    if (t->type != CS_TYPE_F32)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "model: tensor '%s' has type %s (%d); RoPE factors must be f32", name,
                          cs_type_name(t->type), t->type);
    if (((uintptr_t)t->data) % 4 != 0)
        return error_fail(CS_ERR_UNSUPPORTED, "model: tensor '%s': data is not aligned to 4 bytes",
                          name);
    const float *f = t->data;
    for (int64_t i = 0; i < want; i++)
        if (!(f[i] > 0.0f) || isinf(f[i]))
            return error_fail(CS_ERR_FORMAT,
                              "model: tensor '%s': factor %lld is %g, not a finite number > 0",
                              name, (long long)i, (double)f[i]);
    hp->rope_freq_factors = f;
    m->n_params += (uint64_t)want;
    m->n_bytes += t->nbytes;
    return CS_OK;
}

static cs_status load_tensors(cs_model *m) {
    const model_hparams *hp = &m->hp;
    cs_status st;
    char name[96];
    if ((st = bind(m, "token_embd.weight", hp->n_embd, hp->n_vocab, false, &m->tok_embd)))
        return st;
    if ((st = bind_norm(m, "output_norm.weight", hp->n_embd, &m->output_norm))) return st;
    if ((st = bind(m, "output.weight", hp->n_embd, hp->n_vocab, true, &m->output))) return st;
    if (!m->output.data) { /* tied embeddings */
        m->output = m->tok_embd;
        m->tied_embeddings = true;
    }
    if ((st = bind_rope_freqs(m))) return st;
    m->layers = mem_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return error_fail(CS_ERR_NOMEM, "model: out of memory for %d layers", hp->n_layer);
    int64_t n_biases = 0;
    for (int32_t il = 0; il < hp->n_layer; il++) {
        model_layer *L = &m->layers[il];
#define W(field, suffix, a, b)                                                                     \
    do {                                                                                           \
        snprintf(name, sizeof name, "blk.%d.%s.weight", (int)il, suffix);                          \
        if ((st = bind(m, name, a, b, false, &L->field))) return st;                               \
    } while (0)
#define N(field, suffix)                                                                           \
    do {                                                                                           \
        snprintf(name, sizeof name, "blk.%d.%s.weight", (int)il, suffix);                          \
        if ((st = bind_norm(m, name, hp->n_embd, &L->field))) return st;                           \
    } while (0)
#define B(field, suffix, n)                                                                        \
    do {                                                                                           \
        snprintf(name, sizeof name, "blk.%d.%s.bias", (int)il, suffix);                            \
        if ((st = bind_bias(m, name, n, &L->field))) return st;                                    \
        n_biases += L->field != NULL;                                                              \
    } while (0)
        N(attn_norm, "attn_norm");
        W(wq, "attn_q", hp->n_embd, hp->n_embd_q);
        W(wk, "attn_k", hp->n_embd, hp->n_embd_kv);
        W(wv, "attn_v", hp->n_embd, hp->n_embd_kv);
        B(bq, "attn_q", hp->n_embd_q);
        B(bk, "attn_k", hp->n_embd_kv);
        B(bv, "attn_v", hp->n_embd_kv);
        W(wo, "attn_output", hp->n_embd_q, hp->n_embd);
        N(ffn_norm, "ffn_norm");
        W(w_gate, "ffn_gate", hp->n_embd, hp->n_ff);
        W(w_up, "ffn_up", hp->n_embd, hp->n_ff);
        W(w_down, "ffn_down", hp->n_ff, hp->n_embd);
#undef W
#undef N
#undef B
    }
    /* Every tensor in the file must be one we bound: an unexpected tensor
     * means an architecture variant we would silently compute wrong. */
    int64_t n_expected = 2 + (m->tied_embeddings ? 0 : 1) + (hp->rope_freq_factors ? 1 : 0) +
                         9 * (int64_t)hp->n_layer + n_biases;
    if (gguf_n_tensors(m->gguf) != n_expected) {
        for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
            const char *tn = gguf_tensor_at(m->gguf, i)->name;
            int blk = -1;
            char rest[64] = "";
            bool known = !strcmp(tn, "token_embd.weight") || !strcmp(tn, "output_norm.weight") ||
                         !strcmp(tn, "output.weight") || !strcmp(tn, "rope_freqs.weight");
            if (!known && sscanf(tn, "blk.%d.%63s", &blk, rest) == 2 && blk >= 0 &&
                blk < hp->n_layer) {
                static const char *const parts[] = {
                    "attn_norm.weight",   "attn_q.weight",   "attn_k.weight",   "attn_v.weight",
                    "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight",
                    "ffn_down.weight",    "attn_q.bias",     "attn_k.bias",     "attn_v.bias"};
                /* the biases (the last 3) only in a qwen2 file */
                const size_t n_parts =
                    sizeof parts / sizeof parts[0] - (m->arch == MODEL_ARCH_QWEN2 ? 0 : 3);
                for (size_t j = 0; j < n_parts; j++)
                    if (!strcmp(rest, parts[j])) known = true;
            }
            if (!known)
                return error_fail(CS_ERR_UNSUPPORTED,
                                  "model: unexpected tensor '%s' for a %s model", tn, m->arch_name);
        }
        /* every name is known but some was not bound (e.g. "blk.01.") */
        return error_fail(CS_ERR_FORMAT, "model: %lld tensors in the file, expected %lld",
                          (long long)gguf_n_tensors(m->gguf), (long long)n_expected);
    }
    return CS_OK;
}

/* The weight type holding the most parameters, for the description. */
static int32_t model_ftype(const cs_model *m) {
    uint64_t bytes[CS_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
        if (t->n_dims >= 2 && t->type >= 0 && t->type < CS_TYPE_COUNT)
            bytes[t->type] += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    int32_t best = CS_TYPE_F32;
    for (int32_t i = 0; i < CS_TYPE_COUNT; i++)
        if (bytes[i] > bytes[best]) best = i;
    return best;
}

/* ---------------------------------------------------------------- packing */

/* True when w's bytes overlap no other tensor's: packing gives the file's
 * pages back (on the read() path, anonymous pages that would read as zeros
 * afterwards), so a (hostile) file whose tensors share bytes keeps those
 * tensors as they are. Two tensors with the same bytes (an alias) are not
 * private either: only the first exact match is w itself. O(n_tensors). */
static bool weight_bytes_private(const cs_model *m, const model_weight *w, uint64_t bytes) {
    const uint8_t *a0 = w->data, *a1 = a0 + bytes;
    int same = 0;
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
        const uint8_t *b0 = t->data, *b1 = b0 + t->nbytes;
        if (b0 == a0 && t->nbytes == bytes && same++ == 0) continue; /* w itself */
        if (b0 < a1 && a0 < b1 && t->nbytes > 0) return false;
    }
    return true;
}

/* Pack every quantized matmul weight the kernels of this CPU read in the
 * x16 layout (kernels/repack.h; kernels_best()'s matmul_x16_native) into
 * one arena of huge pages (mem_huge_alloc: a decode step streams them all),
 * giving the file's pages of each back once it is packed (gguf_release), so
 * the process holds one copy. The token embedding is read row by row
 * (get_rows) and stays in the file, so a tied output does too. Cost: one
 * read of those weights and one write (plus the kernel's zeroing of the
 * new pages) at load; memory: the packed bytes, as many as the file's. */
#define PACK_SLICE_BYTES ((size_t)4 << 20)
static cs_status pack_weights(cs_model *m) {
    const kernels_table *k = kernels_best();
    const model_hparams *hp = &m->hp;
    const int64_t n_w = (int64_t)hp->n_layer * 7 + 1;
    struct {
        model_weight *w;
        size_t bytes, off; /* its file bytes; its place in the arena */
    } *ws = mem_calloc((size_t)n_w, sizeof *ws);
    if (!ws) return error_fail(CS_ERR_NOMEM, "model: out of memory");
    int64_t n = 0;
    uint64_t total = 0;
    for (int64_t i = 0; i < n_w; i++) {
        model_weight *w;
        if (i == n_w - 1) {
            if (m->tied_embeddings) continue;
            w = &m->output;
        } else {
            model_layer *L = &m->layers[i / 7];
            model_weight *lw[7] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                   &L->w_gate, &L->w_up, &L->w_down};
            w = lw[i % 7];
        }
        uint64_t row = 0, bytes = 0;
        if (!repack_x16_fits(w->type, w->ne1, w->ne0) || !matmul_x16_native(k, w->type) ||
            !type_row_size(w->type, w->ne0, &row) ||
            !common_mul_u64(row, (uint64_t)w->ne1, &bytes) || !weight_bytes_private(m, w, bytes))
            continue;
        /* each weight 64-byte aligned; bytes <= the file size, no overflow */
        ws[n].w = w, ws[n].bytes = (size_t)bytes, ws[n++].off = (size_t)total;
        total += (bytes + 63) & ~(uint64_t)63;
    }
    cs_status st = CS_OK;
    if (n > 0) {
        /* the weights' bytes are already in memory: total <= file size */
        m->packed = mem_huge_alloc((size_t)total);
        if (!m->packed) {
            st = error_fail(CS_ERR_NOMEM, "model: out of memory for %llu bytes of packed weights",
                            (unsigned long long)total);
        } else {
            m->packed_bytes = (size_t)total;
            for (int64_t i = 0; i < n; i++) {
                model_weight *w = ws[i].w;
                uint8_t *dst = (uint8_t *)m->packed + ws[i].off;
                const uint8_t *src = w->data;
                /* in slices of about PACK_SLICE_BYTES, each slice's file
                 * pages given back as soon as it is packed: a whole tensor
                 * would be resident twice at once (file and arena), which
                 * for a 1.1B output matrix is 54 MB above the steady state,
                 * the peak RSS of the load. Groups of 16 rows are
                 * independent and keep their row-major offsets. The release
                 * starts at the tensor each time (mmap_release takes whole
                 * pages only, so a page cut by a slice boundary goes with the
                 * next slice; a page already given back costs a page-table
                 * look-up). */
                const size_t row = ws[i].bytes / (size_t)w->ne1;
                int64_t step = (int64_t)(PACK_SLICE_BYTES / row) / CS_X16_ROWS * CS_X16_ROWS;
                if (step < CS_X16_ROWS) step = CS_X16_ROWS;
                for (int64_t r0 = 0; r0 < w->ne1; r0 += step) {
                    const int64_t nr = w->ne1 - r0 < step ? w->ne1 - r0 : step;
                    repack_x16_pack_to(w->type, dst + (size_t)r0 * row, src + (size_t)r0 * row, nr,
                                       w->ne0);
                    gguf_release(m->gguf, src, (size_t)(r0 + nr) * row);
                }
                w->data = dst;
                w->layout = CS_LAYOUT_X16;
            }
            m->n_packed = (int32_t)n;
        }
    }
    mem_free(ws);
    return st;
}

/* When packing, copy the small F32 vectors every token reads (the norms,
 * the qwen2 biases, the rope factors) out of the file mapping and give their
 * pages back with the 2 MiB span around them. Why: the kernel maps a file's
 * large page-cache folios whole, so each 8 KB norm between two packed
 * matrices kept up to 2 MiB of the file resident (a cold-cache 1.1B Q4_K_M
 * decode held 95 MB of the file, 82 MB of it PMD-mapped, and peaked 55 MiB
 * over file + KV + 64 MiB). Each vector's length is the one load_tensors
 * checked its tensor against. Cost: one copy of those vectors (a few
 * hundred KB), O(vectors). */
static cs_status copy_small_vectors(cs_model *m) {
    const model_hparams *hp = &m->hp;
    const int64_t n_v = (int64_t)hp->n_layer * 5 + 2;
    const float ***v = mem_calloc((size_t)n_v, sizeof *v);
    size_t *len = mem_calloc((size_t)n_v, sizeof *len); /* floats, 16-aligned slots */
    cs_status st = CS_OK;
    if (!v || !len) {
        st = error_fail(CS_ERR_NOMEM, "model: out of memory");
        goto done;
    }
    for (int64_t l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        v[5 * l] = &L->attn_norm, len[5 * l] = (size_t)hp->n_embd;
        v[5 * l + 1] = &L->ffn_norm, len[5 * l + 1] = (size_t)hp->n_embd;
        v[5 * l + 2] = &L->bq, len[5 * l + 2] = (size_t)hp->n_embd_q;
        v[5 * l + 3] = &L->bk, len[5 * l + 3] = (size_t)hp->n_embd_kv;
        v[5 * l + 4] = &L->bv, len[5 * l + 4] = (size_t)hp->n_embd_kv;
    }
    v[n_v - 2] = &m->output_norm, len[n_v - 2] = (size_t)hp->n_embd;
    v[n_v - 1] = &m->hp.rope_freq_factors, len[n_v - 1] = (size_t)(hp->n_rot / 2);
    size_t total = 0; /* floats */
    for (int64_t i = 0; i < n_v; i++) {
        if (!*v[i]) len[i] = 0; /* a bias or the factors the file does not have */
        total += (len[i] + 15) & ~(size_t)15;
    }
    if (total == 0) goto done;
    float *dst = mem_malloc(total * sizeof *dst);
    if (!dst) {
        st = error_fail(CS_ERR_NOMEM, "model: out of memory for %zu bytes of norms",
                        total * sizeof *dst);
        goto done;
    }
    m->small = dst;
    for (int64_t i = 0; i < n_v; i++) {
        if (len[i] == 0) continue;
        const float *old = *v[i];
        memcpy(dst, old, len[i] * sizeof *dst);
        *v[i] = dst;
        gguf_release_span(m->gguf, old, len[i] * sizeof *dst);
        dst += (len[i] + 15) & ~(size_t)15;
    }
done:
    mem_free(v);
    mem_free(len);
    return st;
}

/* ------------------------------------------------------------------- load */

cs_status cs_model_load(const char *path, const cs_model_params *params, cs_model **out) {
    if (out) *out = NULL;
    if (!path || !out)
        return error_fail(CS_ERR_INVALID_ARG, "cs_model_load: path and out must be set");
    cs_model_params p = params ? *params : cs_model_default_params();
    cs_model *m = mem_calloc(1, sizeof *m);
    if (!m) return error_fail(CS_ERR_NOMEM, "model: out of memory");
    m->arch = MODEL_ARCH_LLAMA;
    m->arch_name = "llama";
    cs_status st = gguf_open_ex(path, p.use_mmap, &m->gguf);
    if (st != CS_OK) goto fail;
    const char *arch = NULL;
    if (!p.vocab_only || gguf_find_key(m->gguf, "general.architecture") >= 0) {
        st = gguf_get_str(m->gguf, "general.architecture", &arch, NULL);
        if (st != CS_OK) goto fail;
        if (!strcmp(arch, "llama")) {
            m->arch = MODEL_ARCH_LLAMA;
        } else if (!strcmp(arch, "qwen2")) {
            m->arch = MODEL_ARCH_QWEN2;
            m->arch_name = "qwen2";
        } else if (!p.vocab_only) {
            st = error_fail(CS_ERR_UNSUPPORTED,
                            "model: general.architecture '%s' is not supported (supported: "
                            "llama, qwen2)",
                            arch);
            goto fail;
        }
    }
    st = tokenizer_load(m->gguf, &m->vocab);
    if (st != CS_OK) goto fail;
    m->vocab_only = p.vocab_only;
    if (!p.vocab_only) {
        if ((st = load_hparams(m)) != CS_OK) goto fail;
        if ((st = load_tensors(m)) != CS_OK) goto fail;
        m->ftype = model_ftype(m);
        m->weights_hash = state_weights_hash(m);
        if (p.repack && ((st = pack_weights(m)) != CS_OK || (st = copy_small_vectors(m)) != CS_OK))
            goto fail;
    }
    *out = m;
    return CS_OK;
fail:
    cs_model_free(m);
    return st;
}

void cs_model_free(cs_model *m) {
    if (!m) return;
    tokenizer_free(m->vocab);
    gguf_close(m->gguf);
    mem_huge_free(m->packed, m->packed_bytes);
    mem_free(m->small);
    mem_free(m->layers);
    mem_free(m);
}

int32_t cs_model_n_vocab(const cs_model *m) {
    return tokenizer_n_tokens(m->vocab);
}
int32_t cs_model_n_ctx_train(const cs_model *m) {
    return m->hp.n_ctx_train;
}
int32_t cs_model_n_embd(const cs_model *m) {
    return m->hp.n_embd;
}
int32_t cs_model_n_layer(const cs_model *m) {
    return m->hp.n_layer;
}
int32_t cs_model_n_head(const cs_model *m) {
    return m->hp.n_head;
}
int32_t cs_model_n_head_kv(const cs_model *m) {
    return m->hp.n_head_kv;
}
uint64_t cs_model_n_params(const cs_model *m) {
    return m->n_params;
}
uint64_t cs_model_size(const cs_model *m) {
    return m->n_bytes;
}

uint64_t cs_model_decode_bytes(const cs_model *m) {
    if (m->vocab_only) return 0;
    uint64_t row = 0;
    if (!type_row_size(m->tok_embd.type, m->tok_embd.ne0, &row)) return m->n_bytes;
    const uint64_t embd = row * (uint64_t)m->tok_embd.ne1;
    return m->tied_embeddings ? m->n_bytes + row : m->n_bytes - embd + row;
}

int32_t cs_model_desc(const cs_model *m, char *buf, size_t size) {
    if (m->vocab_only) return snprintf(buf, size, "vocab-only %d tokens", cs_model_n_vocab(m));
    double np = (double)m->n_params;
    const char *unit = np >= 1e9 ? "B" : np >= 1e6 ? "M" : "K";
    double scaled = np >= 1e9 ? np / 1e9 : np >= 1e6 ? np / 1e6 : np / 1e3;
    return snprintf(buf, size, "%s %.*f%s %s", m->arch_name, scaled < 10 ? 1 : 0, scaled, unit,
                    cs_type_name(m->ftype));
}
