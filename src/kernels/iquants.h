/* iquants.h: the non-linear 4-bit weight formats IQ4_NL (blocks of 32,
 * activations Q8_0) and IQ4_XS (super-blocks of 256 with 6-bit sub-block
 * scales, activations Q8_K), laid out as in ggml's ggml-common.h. A 4-bit
 * index selects one of 16 fixed levels (iq4nl_values), scaled per block.
 *
 * The codecs are ggml's, bit for bit: dequantize_row_iq4_{nl,xs} compute
 * the same float products, quantize_row_iq4_{nl,xs}_ref run ggml's
 * quantizer without importance matrix (the search over trial scales of
 * quantize_row_iq4_nl_impl), so the bytes match llama-quantize's.
 *
 * The scalar dots follow ggml's generic order (exact integer sums per
 * 32-element block, each scaled and added to one float sum). The AVX2
 * and AVX-512 versions (iquants_avx2.c, iquants_avx512.c) follow
 * ggml's x86 kernels instead, which llama.cpp runs: integer lanes scaled
 * into eight float accumulators; they differ from the references by float
 * rounding only (tests/test_iquants.c bounds it). */
#ifndef CS_IQUANTS_H
#define CS_IQUANTS_H

#include <stdint.h>

#include "kernels.h"
#include "kquants.h"

/* CS_TYPE_IQ4_NL, CS_TYPE_IQ4_XS: ggml type ids, in ctxshift.h */

#define CS_QK4_NL 32

/* The 16 levels, ascending (ggml's kvalues_iq4nl). */
extern const int8_t iq4nl_values[16];

/* Sum over the 32 elements of an IQ4_NL block of level(qs) * a, exact:
 * the reference dot's block sum, and the SIMD dots' odd last block. */
static inline int32_t iq4_nl_block_isum(const uint8_t *qs, const int8_t *a) {
    int32_t lo = 0, hi = 0;
    for (int j = 0; j < 16; ++j) {
        lo += a[j] * iq4nl_values[qs[j] & 0xF];
        hi += a[j + 16] * iq4nl_values[qs[j] >> 4];
    }
    return lo + hi;
}

/* value j = d * iq4nl_values[index j]; qs[j] low nibble is index j, high
 * nibble index j + 16. */
typedef struct {
    uint16_t d; /* f16 block scale */
    uint8_t qs[CS_QK4_NL / 2];
} block_iq4_nl;

/* 8 sub-blocks of 32: value = d * (ls[b] - 32) * iq4nl_values[index];
 * ls[b] (6 bits) = low nibble b%2 of scales_l[b/2] | bits 2b..2b+1 of
 * scales_h << 4; qs[16b .. 16b+15] hold sub-block b as in IQ4_NL. */
typedef struct {
    uint16_t d; /* f16 super-block scale */
    uint16_t scales_h;
    uint8_t scales_l[CS_QK_K / 64];
    uint8_t qs[CS_QK_K / 2];
} block_iq4_xs;

_Static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl block layout");
_Static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs block layout");

/* ---- codecs; n elements, a multiple of the block (32 / 256). O(n). */
void dequantize_row_iq4_nl(const void *x, float *y, int64_t n);
void dequantize_row_iq4_xs(const void *x, float *y, int64_t n);
/* ggml's quantize_row_iq4_nl_ref: one fit per block (no trial scales, as
 * ggml's reference). A block whose |x| stays below 1e-15 gets d = 0 and
 * the indices of the row's previous block (ggml leaves them stale too;
 * for a leading such block, ggml's are whatever its stack held, here 0):
 * every index decodes to 0 either way. Cost: 2 passes over each block. */
void quantize_row_iq4_nl_ref(const float *x, void *y, int64_t n);
/* ggml's quantize_iq4_nl without importance matrix, one row: what
 * llama-quantize writes for IQ4_NL (ggml's quantize_row_iq4_nl_ref
 * differs): per block the fit with 15 trial scales as IQ4_XS's, then every
 * index re-picked for the final scale; a block whose |x| stays below 1e-15
 * gets d = 0 and the index of the level nearest 0. Cost: about 17 passes
 * over each block. */
void quantize_iq4_nl(const float *x, void *y, int64_t n);
/* ggml's quantize_row_iq4_xs_ref: per sub-block 16 trial scales, then the
 * 6-bit scales and a final index pass. Cost: about 17 passes. */
void quantize_row_iq4_xs_ref(const float *x, void *y, int64_t n);

/* ---- dots (type_vec_dot_fn); x: weight blocks, y: Q8_0 (IQ4_NL) or
 * Q8_K (IQ4_XS) blocks. IQ4_NL in ggml's generic order, IQ4_XS one exact
 * integer sum per super-block (iquants.c). */
void vec_dot_iq4_nl_q8_0_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_iq4_xs_q8_K_ref(int64_t n, float *s, const void *x, const void *y);

#if defined(__x86_64__) || defined(__i386__)
/* AVX2 versions (iquants_avx2.c): ggml's x86 order, pshufb table look-up;
 * only in tables handed out after the CPU check (kernels.c). */
void vec_dot_iq4_nl_q8_0_avx2(int64_t n, float *s, const void *x, const void *y);
void vec_dot_iq4_xs_q8_K_avx2(int64_t n, float *s, const void *x, const void *y);
/* AVX-512 F+BW versions (iquants_avx512.c), bit-identical to the AVX2 ones;
 * only in the AVX-512 tables. */
void vec_dot_iq4_nl_q8_0_avx512(int64_t n, float *s, const void *x, const void *y);
void vec_dot_iq4_xs_q8_K_avx512(int64_t n, float *s, const void *x, const void *y);
#endif

#endif /* CS_IQUANTS_H */
