/* kquants.h: the K-quant weight formats Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (256-element
 * super-blocks, as in ggml's ggml-common.h) and the Q8_K activation format
 * they meet in dot products.
 *
 * Numerics follow what llama.cpp (c392e509) runs on x86: activations are
 * quantized with ggml's quantize_row_q8_K_ref (amax with sign,
 * iscale = -127/max, round half to even, 16-element sums), and the dot
 * products reproduce the accumulation order of ggml's AVX2 kernels: the
 * integer products of a super-block go into 8 int32 lanes (lane k holds the
 * elements whose index mod 32 lies in [4k, 4k+4)), each lane is added to a
 * float accumulator with one FMA per super-block, and the 8 lanes are summed
 * at the end in ggml's hsum_float_8 order. Exceptions: Q3_K and Q2_K sum
 * the whole super-block exactly in integers (sum over its 16 sub-blocks of
 * scale * (q . a); Q2_K also the mins, sum of m * bsum) and add
 * (d_w * d_a) * isum once (Q2_K: first (-d_a * dmin_w) * summs), each a
 * multiply and an add: their x16 kernels then scale a 16-element
 * sub-block's dot once (Q3_K) or keep one int32 per token instead of 8
 * float lanes (Q2_K) (2026-12; ggml's AVX2 order differs from it by float
 * rounding only, tests/test_ggml_peer.c). The scalar references below are
 * the specification; the AVX2 versions (kquants_avx2.c) are bit-identical
 * to them (tests/test_kquants.c). */
#ifndef CS_KQUANTS_H
#define CS_KQUANTS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels.h"

/* CS_TYPE_Q2_K ... CS_TYPE_Q6_K: ggml type ids, in ctxshift.h */

#define CS_QK_K 256

/* 16 sub-blocks of 16: value = d*(scales[j] & 15)*q - dmin*(scales[j] >> 4),
 * q in 0..3. For each half h (128 elements), group g < 4 and l < 32: element
 * 128h + 32g + l is bits 2g..2g+1 of qs[32h + l]; its sub-block is
 * 8h + 2g + l/16. */
typedef struct {
    uint8_t scales[CS_QK_K / 16]; /* low nibble: scale, high nibble: min */
    uint8_t qs[CS_QK_K / 4];
    uint16_t d;    /* f16 super-block scale of the scales */
    uint16_t dmin; /* f16 super-block scale of the mins */
} block_q2_K;

/* 16 sub-blocks of 16: value = d*(s[j] - 32)*(q - 4), q in 0..7. The low 2
 * bits of q as in Q2_K's qs; the high bit of element e is bit e/32 of
 * hmask[e % 32]. The 6-bit s[j]: low nibble in scales[j] (j < 8) or
 * scales[j-8] >> 4, high 2 bits at bit 2*(j/4) of scales[8 + j%4]. */
typedef struct {
    uint8_t hmask[CS_QK_K / 8];
    uint8_t qs[CS_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} block_q3_K;

/* 8 sub-blocks of 32: value = d*sc[j]*q - dmin*m[j], q in 0..15. scales
 * packs 8 six-bit scales and 8 six-bit mins (get_scale_min_k4 layout);
 * qs: 4 groups of 32 bytes, group g holds element 64g+l (low nibble) and
 * 64g+32+l (high nibble). */
typedef struct {
    uint16_t d;    /* f16 super-block scale of the scales */
    uint16_t dmin; /* f16 super-block scale of the mins */
    uint8_t scales[12];
    uint8_t qs[CS_QK_K / 2];
} block_q4_K;

/* As Q4_K with a fifth bit: element 64g+l takes bit 2g of qh[l], element
 * 64g+32+l bit 2g+1; q in 0..31. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[CS_QK_K / 8];
    uint8_t qs[CS_QK_K / 2];
} block_q5_K;

/* 16 sub-blocks of 16: value = d * scales[j] * (q - 32), q in 0..63. For
 * each half h (128 elements) and l < 32: ql[64h+l] low/high nibble are the
 * low 4 bits of elements 128h+l / 128h+64+l, ql[64h+32+l] those of
 * 128h+32+l / 128h+96+l; qh[32h+l] bits 0-1, 2-3, 4-5, 6-7 are the high 2
 * bits of 128h+l, +32, +64, +96. */
typedef struct {
    uint8_t ql[CS_QK_K / 2];
    uint8_t qh[CS_QK_K / 4];
    int8_t scales[CS_QK_K / 16];
    uint16_t d;
} block_q6_K;

/* Activations: value = d * qs[i]; bsums[j] = sum of qs[16j .. 16j+15]. */
typedef struct {
    float d;
    int8_t qs[CS_QK_K];
    int16_t bsums[CS_QK_K / 16];
} block_q8_K;

_Static_assert(sizeof(block_q2_K) == 84, "q2_K block layout");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K block layout");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K block layout");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K block layout");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K block layout");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K block layout");

/* ---- codecs; n elements, a multiple of 256. O(n). */
/* ggml's quantize_row_q{2,3,4,5,6}_K_ref (what llama-quantize writes
 * without an importance matrix). Cost: about 16 (q2_K) / up to 6 (q3_K) /
 * 20 (q4_K) / 15 (q5_K) / 19 (q6_K) trial passes over each sub-block. */
void quantize_row_q2_K_ref(const float *x, void *y, int64_t n);
void quantize_row_q3_K_ref(const float *x, void *y, int64_t n);
void quantize_row_q4_K_ref(const float *x, void *y, int64_t n);
void quantize_row_q5_K_ref(const float *x, void *y, int64_t n);
void quantize_row_q6_K_ref(const float *x, void *y, int64_t n);
void dequantize_row_q2_K(const void *x, float *y, int64_t n);
void dequantize_row_q3_K(const void *x, float *y, int64_t n);
void dequantize_row_q4_K(const void *x, float *y, int64_t n);
void dequantize_row_q5_K(const void *x, float *y, int64_t n);
void dequantize_row_q6_K(const void *x, float *y, int64_t n);
/* ggml's quantize_row_q8_K_ref (llama.cpp uses it on x86 too). */
void quantize_row_q8_K_ref(const float *x, void *y, int64_t n);

/* ---- dots (type_vec_dot_fn): *s = sum_i w[i] * a[i] over n elements (n/256
 * blocks each), in the order described at the top (Q2_K: ggml adds its mins
 * term, lane k = m[2k]*bsums[2k] + m[2k+1]*bsums[2k+1] times -dmin, into the
 * same 8 float lanes with one FMA per super-block, before the scales term). x: weight blocks, y:
 * Q8_K blocks. The type table (types.c) holds the references; the AVX2 and
 * AVX-512 kernel tables (x86_avx2.c, x86_avx512.c) the AVX2 versions. */
void vec_dot_q2_K_q8_K_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q3_K_q8_K_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q4_K_q8_K_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q5_K_q8_K_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q6_K_q8_K_ref(int64_t n, float *s, const void *x, const void *y);

#if defined(__x86_64__) || defined(__i386__)
/* AVX2 + FMA versions (kquants_avx2.c); only in tables handed out after
 * the CPU check (kernels.c). */
void vec_dot_q2_K_q8_K_avx2(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q3_K_q8_K_avx2(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q4_K_q8_K_avx2(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q5_K_q8_K_avx2(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q6_K_q8_K_avx2(int64_t n, float *s, const void *x, const void *y);
#endif

#endif /* CS_KQUANTS_H */
