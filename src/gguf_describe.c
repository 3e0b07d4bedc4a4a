/* gguf_describe.c: `ctxshift info` backend: a GGUF file as text. */
#include <inttypes.h>
#include <stdio.h>

#include "cs_limits.h"
#include "gguf.h"
#include "kernels/kernels.h"
#include "model.h"
#include "types.h"

/* One metadata line's value: enough for any scalar and a summarized array;
 * longer values (chat templates) are cut and end with "...". */
#define DESCRIBE_VALUE_BYTES 4096

/* "tensor types: f32 13, q8_0 14": how many tensors of each type, in the
 * table's order. O(n_tensors + types). */
static void describe_type_counts(const gguf_file *g, cs_write_fn write, void *user) {
    int64_t counts[CS_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const int32_t t = gguf_tensor_at(g, i)->type; /* a known type: gguf_open checked it */
        if (t >= 0 && t < CS_TYPE_COUNT) counts[t]++;
    }
    char line[64];
    write("tensor types:", user);
    bool first = true;
    for (int32_t t = 0; t < CS_TYPE_COUNT; t++) {
        if (!counts[t]) continue;
        snprintf(line, sizeof line, "%s %s %" PRId64, first ? "" : ",", cs_type_name(t), counts[t]);
        write(line, user);
        first = false;
    }
    write(first ? " none\n" : "\n", user);
}

/* The model as the engine loads it (no packing): family, head sizes,
 * RoPE kind and scaling, output; or the loader's refusal. Cost: a model
 * load (mapping, key and tensor checks; no weight is read but the
 * rope_freqs factors). */
static void describe_model(const char *path, cs_write_fn write, void *user) {
    cs_model_params mp = cs_model_default_params();
    mp.repack = false;
    cs_model *m = NULL;
    char line[512];
    if (cs_model_load(path, &mp, &m) != CS_OK) {
        snprintf(line, sizeof line, "model: not loadable by ctxshift: %s\n", cs_last_error());
        write(line, user);
        return;
    }
    const model_hparams *hp = &m->hp;
    snprintf(line, sizeof line,
             "model: family %s, %d layers, n_embd %d, n_ff %d, %d heads, %d KV heads (GQA group "
             "%d), head size k %d v %d, n_vocab %d, context %d\n",
             m->arch_name, hp->n_layer, hp->n_embd, hp->n_ff, hp->n_head, hp->n_head_kv,
             hp->n_head / hp->n_head_kv, hp->head_dim, hp->head_dim, hp->n_vocab, hp->n_ctx_train);
    write(line, user);
    char scaling[160];
    if (hp->rope_freq_factors) {
        float lo = hp->rope_freq_factors[0], hi = lo;
        for (int32_t i = 1; i < hp->n_rot / 2; i++) {
            if (hp->rope_freq_factors[i] < lo) lo = hp->rope_freq_factors[i];
            if (hp->rope_freq_factors[i] > hi) hi = hp->rope_freq_factors[i];
        }
        snprintf(scaling, sizeof scaling, "llama3 (rope_freqs.weight: %d factors, %g to %g)",
                 hp->n_rot / 2, (double)lo, (double)hi);
    } else if (hp->rope_freq_scale != 1.0f) {
        snprintf(scaling, sizeof scaling, "linear (factor %g)", 1.0 / (double)hp->rope_freq_scale);
    } else {
        snprintf(scaling, sizeof scaling, "none");
    }
    snprintf(line, sizeof line, "  rope: %s, n_rot %d, freq_base %g, scaling %s\n",
             hp->rope_mode == CS_ROPE_NEOX ? "neox" : "norm", hp->n_rot, (double)hp->rope_freq_base,
             scaling);
    write(line, user);
    snprintf(line, sizeof line, "  attention biases: %s; output: %s\n",
             m->layers[0].bq ? "q, k, v" : "none",
             m->tied_embeddings ? "tied to token_embd.weight" : "output.weight");
    write(line, user);
    cs_model_free(m);
}

cs_status cs_gguf_describe(const char *path, int32_t max_array_items, cs_write_fn write,
                           void *user) {
    if (!path || !write)
        return error_fail(CS_ERR_INVALID_ARG, "gguf describe: path and write must not be NULL");
    gguf_file *g = NULL;
    cs_status st = gguf_open(path, &g); /* validates the whole file before any output */
    if (st != CS_OK) return st;

    char line[DESCRIBE_VALUE_BYTES + CS_MAX_NAME_BYTES + 256];
    char value[DESCRIBE_VALUE_BYTES];
    snprintf(line, sizeof line,
             "GGUF v%" PRIu32 ", %" PRId64 " metadata keys, %" PRId64
             " tensors, data at offset %" PRIu64 "\n",
             gguf_version(g), gguf_n_kv(g), gguf_n_tensors(g), gguf_data_offset(g));
    write(line, user);

    int32_t max_items = max_array_items < 0 ? 0 : max_array_items;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_kv_to_text(g, i, max_items, value, sizeof value);
        /* The key is at most CS_MAX_KEY_BYTES (64 KiB): write it separately
         * so a long key is never cut. */
        write("  ", user);
        write(gguf_kv_key(g, i), user);
        snprintf(line, sizeof line, " (%s) = %s\n", gguf_type_name(gguf_kv_type(g, i)), value);
        write(line, user);
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char shape[128];
        int n = snprintf(shape, sizeof shape, "[");
        for (int32_t d = 0; d < t->n_dims; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        snprintf(shape + n, sizeof shape - (size_t)n, "]");
        snprintf(line, sizeof line, "  %s  %s  %s  %" PRIu64 "\n", t->name, cs_type_name(t->type),
                 shape, t->offset);
        write(line, user);
    }
    gguf_close(g);
    return CS_OK;
}

/* Contract in ctxshift.h. */
cs_status cs_model_describe(const char *path, cs_write_fn write, void *user) {
    if (!path || !write)
        return error_fail(CS_ERR_INVALID_ARG, "model describe: path and write must not be NULL");
    gguf_file *g = NULL;
    cs_status st = gguf_open(path, &g);
    if (st != CS_OK) return st;
    const bool has_arch = gguf_find_key(g, "general.architecture") >= 0;
    describe_type_counts(g, write, user);
    gguf_close(g);
    /* a file with an architecture is also loaded as a model, to show what
     * the engine makes of it (or why it refuses it) */
    if (has_arch) describe_model(path, write, user);
    return CS_OK;
}
