/* quantize_rules.h: the per-tensor type rules of cs_model_quantize's mixes
 * (llama.cpp's file types), exposed for the unit tests. src/quantize.c has
 * the rules in words. */
#ifndef CS_QUANTIZE_RULES_H
#define CS_QUANTIZE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The prefix that names a mix: "llama:Q4_0" (bare "Q4_0" is the plain type). */
#define QZ_MIX_PREFIX "llama:"

/* attn_v.weight of layer i (llama.cpp's llama_tensor_get_type_impl). */
typedef enum qz_attn_v_rule {
    QZ_V_NONE,                  /* the default type */
    QZ_V_GQA4_Q4_K_ELSE_Q3_K,   /* Q2_K: q4_K when n_gqa >= 4, else q3_K */
    QZ_V_FIRST2_Q5_K_ELSE_Q4_K, /* Q3_K_M: q5_K for the first 2, else q4_K */
    QZ_V_Q5_K,                  /* Q3_K_L */
    QZ_V_GQA4_Q5_K,             /* IQ4_NL/XS: q5_K when n_gqa >= 4 */
    QZ_V_MORE_BITS_Q6_K,        /* Q4_K_M/Q5_K_M: q6_K where use_more_bits */
    QZ_V_FIRST4_Q5_K,           /* Q4_K_S: q5_K for the first 4 */
} qz_attn_v_rule;

/* ffn_down.weight of layer i of n (block_count). */
typedef enum qz_ffn_down_rule {
    QZ_D_NONE,
    QZ_D_Q3_K,           /* Q2_K */
    QZ_D_Q3_K_M,         /* q5_K for i < n/16, else q4_K */
    QZ_D_Q5_K,           /* Q3_K_L */
    QZ_D_MORE_BITS_Q6_K, /* Q4_K_M/Q5_K_M */
    QZ_D_EIGHTH_Q5_K,    /* Q4_K_S, IQ4_NL/XS: q5_K for i < n/8 */
} qz_ffn_down_rule;

/* One mix: a llama.cpp file type. */
typedef struct qz_mix {
    const char *name; /* llama-quantize's name: "Q4_K_M" */
    uint32_t ftype;   /* llama_ftype id, written as general.file_type */
    int32_t type;     /* default type (CS_TYPE_*) */
    qz_attn_v_rule attn_v;
    qz_ffn_down_rule ffn_down;
    int32_t attn_output; /* attn_output.weight's type, -1: the default */
} qz_mix;

/* What the rules read from the model's metadata and tensor list. */
typedef struct qz_model_info {
    bool has_output;   /* output.weight exists (else token_embd is tied) */
    bool is_70b;       /* llama.cpp's LLM_TYPE_70B: 80 layers (llama: and GQA) */
    int64_t n_layer;   /* <arch>.block_count */
    int64_t n_attn_v;  /* attn_v.weight tensors */
    int64_t n_head;    /* <arch>.attention.head_count */
    int64_t n_head_kv; /* <arch>.attention.head_count_kv (n_head when absent) */
} qz_model_info;

/* The mixes, in llama_ftype order; *n their count. Static storage. */
const qz_mix *qz_mixes(size_t *n);

/* The type the 2-D weight `name` (rows of ne0, of layer `layer`, -1 for
 * none) gets in mix m, the row-length fallback included. Only for tensors
 * that are quantized at all (not norms, not 1-D). O(strlen(name)). */
int32_t qz_rule_type(const qz_mix *m, const qz_model_info *mi, const char *name, int64_t ne0,
                     int64_t layer);

#endif
