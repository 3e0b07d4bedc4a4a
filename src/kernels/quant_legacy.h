/* quant_legacy.h: ggml's older 32-element block formats Q4_1, Q5_0 and Q5_1
 * (weights, as in ggml-common.h) and the Q8_1 activation format that Q4_1
 * and Q5_1 meet in dot products (Q5_0 meets Q8_0).
 *
 * Numerics follow what llama.cpp runs on x86: activations are quantized as
 * ggml's x86 SIMD quantize_row_q8_0 / quantize_row_q8_1 do (id = 127/amax,
 * round half to even). The dot products follow ggml's generic scalar
 * order (ggml_vec_dot_q5_0_q8_0_generic and friends), as Q8_0, Q4_0 and
 * IQ4_NL do here: per block one exact integer sum of the 32 products, then
 * sum += (d_x * d_y) * isum, a multiply and an add; for Q4_1/Q5_1 the
 * offsets go into a second float chain, summs = fma(m, s, summs), added to
 * sum at the end. Why not ggml's AVX2 order (8 float lanes of 4 products
 * each, one FMA per lane and block, which these references kept until
 * 2026-12): it costs 8 conversions and 8 FMAs per block and output, which
 * held the x16 prompt kernels at 14-22 % of the int8 peak where Q4_0's
 * block-sum tiles reach 65 %; the result differs from ggml's AVX2 kernels
 * by float rounding only (tests/test_ggml_peer.c measures it). The scalar
 * references here are the specification; every SIMD version (x86_avx2.c,
 * x86_avx512.c, the x16 micro-kernels) is bit-identical to them
 * (tests/test_quants_legacy.c, tests/test_kernels.c). */
#ifndef CS_QUANT_LEGACY_H
#define CS_QUANT_LEGACY_H

#include <stdint.h>

#include "kernels.h"

#define CS_QK_LEGACY 32 /* elements per block of all four formats */

/* value = d * q + m, q in 0..15: qs[j] low nibble is element j, high
 * nibble element j + 16. */
typedef struct {
    uint16_t d; /* f16 scale */
    uint16_t m; /* f16 offset (the block's minimum) */
    uint8_t qs[CS_QK_LEGACY / 2];
} block_q4_1;

/* value = d * (q - 16), q in 0..31: the low 4 bits as in Q4_1, the fifth
 * bit of element j is bit j of qh (read as a little-endian uint32). */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[CS_QK_LEGACY / 2];
} block_q5_0;

/* value = d * q + m, q in 0..31, bits as in Q5_0. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[CS_QK_LEGACY / 2];
} block_q5_1;

/* Activations: value = d * qs[j]; s = f16(d * sum of qs), so that the
 * offset term of a Q4_1/Q5_1 dot is m * s. */
typedef struct {
    uint16_t d;
    uint16_t s;
    int8_t qs[CS_QK_LEGACY];
} block_q8_1;

_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block layout");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 block layout");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 block layout");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1 block layout");

/* Row codecs (n a multiple of 32). The quantizers are ggml's
 * quantize_row_*_ref byte for byte (what llama-quantize writes without an
 * importance matrix), for finite inputs whose block scale d (range / 15
 * or 31, max / -16) is 0 or a normal float (other inputs convert NaN or
 * infinity to int, which C leaves undefined, in ggml as here). */
void dequantize_row_q4_1(const void *x, float *y, int64_t n);
void dequantize_row_q5_0(const void *x, float *y, int64_t n);
void dequantize_row_q5_1(const void *x, float *y, int64_t n);
void quantize_row_q4_1_ref(const float *x, void *y, int64_t n);
void quantize_row_q5_0_ref(const float *x, void *y, int64_t n);
void quantize_row_q5_1_ref(const float *x, void *y, int64_t n);
/* Activations to Q8_1, bit-exact with ggml's x86 SIMD quantize_row_q8_1
 * (its CPU from_float): d = amax/127 as f16, q = round-half-even(x *
 * 127/amax), s = f16(d * sum q) with d the float before rounding. */
void quantize_row_q8_1_ref(const float *x, void *y, int64_t n);

/* Scalar dots in the block-sum order described above. */
void vec_dot_q4_1_q8_1_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q5_0_q8_0_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q5_1_q8_1_ref(int64_t n, float *s, const void *x, const void *y);

#endif /* CS_QUANT_LEGACY_H */
