/* quant_legacy.h: ggml's older 32-element block formats Q4_1, Q5_0 and Q5_1
 * (weights, as in ggml-common.h) and the Q8_1 activation format that Q4_1
 * and Q5_1 meet in dot products (Q5_0 meets Q8_0).
 *
 * Numerics follow what llama.cpp runs on x86: activations are quantized as
 * ggml's x86 SIMD quantize_row_q8_0 / quantize_row_q8_1 do (id = 127/amax,
 * round half to even), and the dot products reproduce the accumulation
 * order of ggml's AVX2 kernels (ggml_vec_dot_q4_1_q8_1 and friends, and
 * llamafile's tinyBLAS for Q5_0): per block, the integer products go into
 * 8 int32 lanes (lane k holds elements 4k .. 4k+3), each lane is added to a
 * float accumulator with one FMA of the block's scale product, the lanes
 * are summed at the end in ggml's hsum_float_8 order, and for Q4_1/Q5_1 the
 * offsets (m * s per block, one float FMA each) are added last. The scalar
 * references here are the specification; the AVX2 and AVX-512 versions
 * (x86_avx2.c, x86_avx512.c) are bit-identical to them
 * (tests/test_quants_legacy.c). */
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

/* Scalar dots in the AVX2 order described above. */
void vec_dot_q4_1_q8_1_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q5_0_q8_0_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q5_1_q8_1_ref(int64_t n, float *s, const void *x, const void *y);

#endif /* CS_QUANT_LEGACY_H */
