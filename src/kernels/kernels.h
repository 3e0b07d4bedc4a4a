/* kernels.h: the kernel table. Every kernel has a scalar reference in
 * ref.c / quant.c (the executable specification, compiled forever) and
 * may have SIMD versions (x86_avx2.c, x86_avx512.c) with the same
 * signatures, chosen once at start-up by cpuid (kernels.c). Each SIMD
 * kernel is tested against the reference with a named tolerance
 * (tests/test_kernels.c).
 *
 * Numerics follow ggml's CPU backend so that logits agree with llama.cpp:
 * activations are quantized to Q8_0 for Q8_0/Q4_0 weights, rounded to f16
 * for F16 weights and to bf16 for BF16 weights; reductions of norms and
 * softmax sums use double accumulators. */
#ifndef CS_KERNELS_H
#define CS_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "../types.h"

/* RoPE pairing modes (ggml's mode bits). */
enum { CS_ROPE_NORM = 0, CS_ROPE_NEOX = 2 };

typedef struct cs_kernels {
    const char *name; /* "ref", "avx2", "avx512" */

    /* ---- dot products: *s = sum_i x[i]*y[i]; n elements (a multiple of
     * 32 for the quantized ones; x holds n/32 blocks) */
    void (*vec_dot_f32)(int64_t n, float *s, const float *x, const float *y);
    void (*vec_dot_f16)(int64_t n, float *s, const uint16_t *x, const uint16_t *y);
    void (*vec_dot_bf16)(int64_t n, float *s, const uint16_t *x, const uint16_t *y);
    void (*vec_dot_q8_0_q8_0)(int64_t n, float *s, const cs_block_q8_0 *x, const cs_block_q8_0 *y);
    void (*vec_dot_q4_0_q8_0)(int64_t n, float *s, const cs_block_q4_0 *x, const cs_block_q8_0 *y);
    /* dot of an f16 row x with an f32 vector y (attention over an F16 K cache
     * when the query is kept in f32) */
    void (*vec_dot_f16_f32)(int64_t n, float *s, const uint16_t *x, const float *y);

    /* ---- row conversions (n elements; n % 32 == 0 for q8_0) */
    void (*quantize_row_q8_0)(const float *x, cs_block_q8_0 *y, int64_t n);
    /* Q8_K activations for K-quant weights (y: n/256 cs_block_q8_K, see
     * kquants.h), bit-exact with cs_quantize_row_q8_K_ref */
    void (*quantize_row_q8_K)(const float *x, void *y, int64_t n);
    void (*fp32_to_fp16_row)(const float *x, uint16_t *y, int64_t n);
    void (*fp16_to_fp32_row)(const uint16_t *x, float *y, int64_t n);
    void (*fp32_to_bf16_row)(const float *x, uint16_t *y, int64_t n);

    /* ---- element-wise and reductions */
    /* y[i] += a * x[i] */
    void (*axpy_f32)(int64_t n, float a, const float *x, float *y);
    void (*axpy_f16)(int64_t n, float a, const uint16_t *x, float *y);
    /* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; out may alias x.
     * mean accumulated in double (ggml_rms_norm), scale computed in float. */
    void (*rmsnorm)(float *out, const float *x, const float *w, int64_t n, float eps);
    /* x[i] = exp(x[i] - max) / sum, sum in double; -INFINITY entries give 0.
     * At least one entry must be finite. */
    void (*softmax)(float *x, int64_t n);
    /* out[i] = silu(g[i]) * u[i], silu(v) = v / (1 + exp(-v)); out may alias g. */
    void (*swiglu)(float *out, const float *g, const float *u, int64_t n);
    /* Rotate n_head heads of head_dim floats each (x[h*head_dim + i]) in
     * place. Pairs: NORM (x[2k], x[2k+1]), NEOX (x[k], x[k + n_rot/2]),
     * k < n_rot/2; elements at n_rot and above are untouched. cs holds
     * n_rot/2 (cos, sin) pairs from cs_rope_cache:
     *   a' = a*cos - b*sin,  b' = a*sin + b*cos */
    void (*rope)(float *x, int64_t n_head, int64_t head_dim, int32_t n_rot, int32_t mode,
                 const float *cs);

    /* ---- attention over an F16 cache, gathered cells (optional: NULL in
     * tables without them; forward.c then loops over vec_dot_f16 and
     * axpy_f16). Row j of the cache is base + idx[j] * stride.
     * s[j] = scale * dot(row j, q) over hd elements, each dot computed
     * exactly as the table's vec_dot_f16 (q is f16, like the rows). */
    void (*attn_scores_f16)(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                            const int32_t *idx, const uint16_t *q, float scale, float *s);
    /* out[i] += f16(w[j]) * row j [i] for j = 0..n-1 in order, where f16()
     * rounds to the nearest f16 (ggml rounds the probabilities to f16
     * without flash attention): the same operations as n calls of
     * axpy_f16. */
    void (*attn_accum_f16)(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                           const int32_t *idx, const float *w, float *out);
} cs_kernels;

/* The scalar reference table (always available). */
const cs_kernels *cs_kernels_ref(void);
/* The best table for this CPU (AVX-512 > AVX2+FMA+F16C > ref), chosen once;
 * CS_KERNELS=ref|avx2|avx512 in the environment forces one (if supported). */
const cs_kernels *cs_kernels_best(void);
/* A table by name, or NULL when the CPU (or build) lacks it. */
const cs_kernels *cs_kernels_by_name(const char *name);

/* RoPE angle parameters (ggml's YaRN formulation, spec §3.1). With
 * ext_factor 0: theta_k = freq_scale * pos * base^(-2k/n_rot), magnitude
 * attn_factor. theta is advanced iteratively in float (theta *= base^(-2/n_rot))
 * exactly as ggml_rope_cache_init does. */
typedef struct cs_rope_params {
    int32_t n_rot;
    int32_t mode;
    float freq_base;
    float freq_scale;
    float ext_factor;
    float attn_factor;
    float beta_fast;
    float beta_slow;
    int32_t n_ctx_orig;
} cs_rope_params;

/* Fill cs[0, n_rot) with (cos, sin) pairs for position pos (a float so that
 * K-shift can rotate by any delta). Scalar; shared by forward and K-shift. */
void cs_rope_cache(float *cs, float pos, const cs_rope_params *p);

/* ---------------------------------------------- reference block codecs */
/* Bit-exact with ggml's x86 SIMD quantize_row_q8_0 (what llama.cpp uses for
 * activations): d = amax/127 stored as f16, q = round-half-even(x * 127/amax). */
void cs_quantize_row_q8_0_ref(const float *x, cs_block_q8_0 *y, int64_t n);
/* ggml's quantize_row_q4_0_ref (used to write Q4_0 weights). */
void cs_quantize_row_q4_0_ref(const float *x, cs_block_q4_0 *y, int64_t n);
void cs_dequantize_row_q8_0(const cs_block_q8_0 *x, float *y, int64_t n);
void cs_dequantize_row_q4_0(const cs_block_q4_0 *x, float *y, int64_t n);
/* Any supported weight type (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) to f32. */
void cs_dequantize_row(int32_t type, const void *x, float *y, int64_t n);
/* f32 to any supported weight type (Q8_0 via ggml's reference quantizer
 * quantize_row_q8_0_ref: roundf, id = 1/d; K-quants via kquants.c's ports
 * of ggml's reference quantizers), used by writers. */
void cs_quantize_row(int32_t type, const float *x, void *y, int64_t n);

#endif /* CS_KERNELS_H */
