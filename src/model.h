/* model.h: llama-family hyper-parameters from GGUF keys and named weight
 * tensors bound to the mapped file. Knows the families ("llama", "qwen2"),
 * not byte layouts (gguf.c). */
#ifndef CS_MODEL_H
#define CS_MODEL_H

#include "common.h"
#include "gguf.h"
#include "tokenizer.h"

/* A 2-D weight: ne0 elements per row (the input dimension), ne1 rows.
 * data points into the mapping and stays valid while the model lives.
 * layout: CS_LAYOUT_ROWS as in the file, or CS_LAYOUT_X16 when the loader
 * packed it for the AVX-512 kernels (kernels/repack.h). */
typedef struct model_weight {
    int32_t type;
    int32_t layout;
    int64_t ne0;
    int64_t ne1;
    const void *data;
} model_weight;

typedef struct model_layer {
    const float *attn_norm; /* (n_embd) */
    model_weight wq;        /* (n_embd) -> (n_embd_q) */
    model_weight wk;        /* (n_embd) -> (n_embd_kv) */
    model_weight wv;        /* (n_embd) -> (n_embd_kv) */
    model_weight wo;        /* (n_embd_q) -> (n_embd) */
    /* qwen2: F32 biases added to the Q, K, V projections (before RoPE);
     * NULL for llama */
    const float *bq;       /* (n_embd_q) */
    const float *bk;       /* (n_embd_kv) */
    const float *bv;       /* (n_embd_kv) */
    const float *ffn_norm; /* (n_embd) */
    model_weight w_gate;   /* (n_embd) -> (n_ff) */
    model_weight w_up;     /* (n_embd) -> (n_ff) */
    model_weight w_down;   /* (n_ff) -> (n_embd) */
} model_layer;

/* The architectures (general.architecture) this loader knows. */
typedef enum model_arch { MODEL_ARCH_LLAMA, MODEL_ARCH_QWEN2 } model_arch;

typedef struct model_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_ff;
    int32_t n_head;
    int32_t n_head_kv;
    /* <arch>.attention.key_length (= value_length; default n_embd / n_head):
     * the size of a query, key and value head (Mistral Nemo: 128 with
     * n_embd 5120 and 32 heads) */
    int32_t head_dim;
    int32_t n_embd_q;  /* n_head * head_dim: Q rows and the attention output */
    int32_t n_embd_kv; /* n_head_kv * head_dim */
    int32_t n_rot;     /* rotated dims per head, even, <= head_dim */
    int32_t rope_mode; /* CS_ROPE_NORM for llama, CS_ROPE_NEOX for qwen2 */
    float rope_freq_base;
    float rope_freq_scale;
    /* rope_freqs.weight: n_rot/2 F32 divisors of the angles (Llama 3.1's
     * "llama3" scaling), pointing into the mapping; NULL when absent */
    const float *rope_freq_factors;
    float norm_eps;
} model_hparams;

struct cs_model {
    gguf_file *gguf;
    model_arch arch;
    const char *arch_name; /* "llama" or "qwen2": the prefix of the hyper-parameter keys */
    tokenizer_vocab *vocab;
    bool vocab_only;
    model_hparams hp;
    const float *output_norm; /* (n_embd) */
    model_weight tok_embd;    /* (n_embd) x n_vocab rows */
    model_weight output;      /* (n_embd) -> (n_vocab); == tok_embd when tied */
    bool tied_embeddings;
    model_layer *layers; /* n_layer */
    uint64_t n_params;
    uint64_t n_bytes;
    int32_t ftype; /* most common weight type */
    /* Fingerprint of the weights that state files carry, taken at load
     * before any packing (so it does not depend on the CPU). */
    uint64_t weights_hash;
    int32_t n_packed;    /* weights packed to CS_LAYOUT_X16 at load */
    void *packed;        /* their arena (mem_huge_alloc), or NULL */
    size_t packed_bytes; /* its size */
    void *small;         /* the norms, biases and rope factors copied out of the file when
                            packing (model.c copy_small_vectors), or NULL */
};

/* state.c: FNV-1a over the ends of tok_embd and output (as the file holds
 * them) and their sizes. O(16 KiB). */
uint64_t state_weights_hash(const cs_model *m);

#endif /* CS_MODEL_H */
