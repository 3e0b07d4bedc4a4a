/* matmul.h: the weight matmul of the forward pass, Y = X * W^T, and the
 * plumbing between the per-ISA kernel files of src/kernels (tables and
 * register-tiled micro-kernels), which only kernels.c and matmul.c use. */
#ifndef CS_MATMUL_H
#define CS_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "../threadpool.h"
#include "kernels.h"
#include "repack.h"

/* Bytes of scratch matmul needs for T activation rows of K elements
 * against weights of type wtype: T rows of the weight's vec_dot_type (the
 * type table, types.h: for F32 weights, used in place, only a minimum of 64
 * bytes, never 0, so a caller can allocate it unconditionally), each row
 * padded to 64 bytes. Q8_0 rows also reserve room for the x16 aux entries
 * (repack.h), so the size holds for either layout.
 * K must be a multiple of the weight type's block (32, or 256 for K-quants). */
size_t matmul_scratch_size(int32_t wtype, int64_t K, int64_t T);

/* Y[t*N + n] = dot(W row n, X row t) for t < T, n < N.
 *   W: (N, K) of a weight type (type_is_weight), rows
 *   contiguous; layout: CS_LAYOUT_ROWS, or CS_LAYOUT_X16 for a matrix
 *   packed by repack_x16_pack (then repack_x16_fits(wtype, N, K) must hold; tables
 *   without an x16 micro-kernel use repack_x16_dot_ref);
 *   X: (T, K) f32; Y: (T, N) f32; scratch: matmul_scratch_size bytes,
 *   64-byte aligned preferred. tp may be NULL (single thread).
 * X is first converted to the vec-dot type (rows split across threads),
 * then the rows of W are split across threads in blocks of the
 * micro-kernel height; each output is computed by one thread with the same
 * instruction sequence whatever the split, tile shape or T, so the result
 * is bit-identical for any thread count and a token gives the same output
 * alone or inside a batch.
 * Cost: 2*N*K*T flops; memory: W streamed once per chunk of tokens whose
 * converted rows fit in ~128 KiB (once for T = 1, a GEMV bound by memory
 * bandwidth), X chunk re-read from L2 per block of rows. */
void matmul(const kernels_table *k, threadpool *tp, int32_t wtype, int32_t layout, const void *W,
            int64_t N, int64_t K, const float *X, int64_t T, float *Y, void *scratch);

/* As matmul, but with X already converted in scratch by the previous
 * call with the same X, T, K and matmul_convert_kind_of (the Q, K and V
 * projections read one normed input; so do the FFN gate and up): the
 * conversion is skipped, the result is the same. */
void matmul_converted(const kernels_table *k, threadpool *tp, int32_t wtype, int32_t layout,
                      const void *W, int64_t N, int64_t K, const float *X, int64_t T, float *Y,
                      void *scratch);

/* What matmul leaves in scratch for weights of wtype in layout: equal
 * kinds mean equal scratch contents. For the row layout the kind is the
 * weight's vec_dot_type (type table, types.h), so weights that share an
 * activation type share the conversion with no list to update; F32 gives
 * MATMUL_CONVERT_NONE (X is used as it is). x16 layouts add aux entries
 * that depend on the weight type: MATMUL_CONVERT_X16 + wtype. */
typedef enum matmul_convert_kind {
    MATMUL_CONVERT_NONE = CS_TYPE_F32,
    MATMUL_CONVERT_X16 = CS_TYPE_COUNT,
} matmul_convert_kind;

int32_t matmul_convert_kind_of(int32_t wtype, int32_t layout);

/* True when table k has an x16 micro-kernel for wtype, i.e. packing such
 * weights pays off (the model loader asks this of kernels_best()). */
bool matmul_x16_native(const kernels_table *k, int32_t wtype);

/* ------------------------------------------ internal to src/kernels/ */

/* (The micro-kernel type, matmul_ukernel, is in kernels.h: the kernel
 * tables hold one per weight type and layout.) */

/* Tokens per tile2 call of the AVX-512 K-quant tiles that take 16 tokens a
 * call (Q3_K, Q4_K, Q5_K): batches of 8 .. 15 rows run one 8-token tile. */
#define X16_KQ_TB2 8

/* Per activation block, for x16 weights: the block's scale as a float and
 * the int32 accumulator's start value, -8 * sum(qs) for Q4_0 weights,
 * -16 * sum(qs) for Q5_0 or -128 * sum(qs) for Q8_0 and IQ4_NL weights (the
 * weight bytes are offset by 8 / 16 / 128). Q8_1 activations (Q4_1, Q5_1)
 * carry none. */
typedef struct matmul_x16_aux {
    float d;
    int32_t corr;
} matmul_x16_aux;

/* Converted activation rows for F16 and BF16 weights: the vec_dot_type row
 * (f16 / bf16 values), then at this byte offset the same values widened to
 * f32 (exact), for micro-kernels that multiply in FP32: each activation is
 * converted once per matmul instead of once per tile and k-step (the F16
 * tile then spends its conversions on the weights only). Filled only for a
 * row micro-kernel whose table's wide_x[type] is set, when T reaches its
 * tile, and for an x16 one whose wide_x16[type] is set. */
static inline size_t matmul_wide_offset(int64_t K) {
    return ((size_t)K * sizeof(uint16_t) + 63) & ~(size_t)63;
}

/* Byte offset of the aux entries in a converted activation row of K elements. */
static inline size_t matmul_x16_aux_offset(int64_t K) {
    return ((size_t)(K / CS_QK8_0) * sizeof(block_q8_0) + 7) & ~(size_t)7;
}

#if defined(__x86_64__) || defined(__i386__)
/* Per-ISA tables (x86_avx2.c, x86_avx512.c), set up on first use. Call
 * only after checking the CPU features (kernels.c does). */
const kernels_table *kernels_avx2_table(void);
/* Its matmul uses vpdpbusd when kernels_cpu_has_avx512vnni() says the CPU
 * has AVX512_VNNI; results are bit-identical either way. */
const kernels_table *kernels_avx512_table(void);
/* The same table under the name "avx512novnni": its matmul never uses
 * AVX512-VNNI (tests the fallback on CPUs that have it). */
const kernels_table *kernels_avx512_novnni_table(void);
/* The same under the name "avx512noext": the "avx512" table (VNNI and
 * BF16 as the CPU has them) without the GFNI and VBMI kernels (the Q6_K
 * and Q3_K decode columns' gf2p8affine forms, the IQ4_XS column's vpermb
 * one), so a CPU with those also tests the VNNI kernels that CPUs without
 * them run (Skylake-X, Cascade Lake). */
const kernels_table *kernels_avx512_noext_table(void);
/* Sets table k's x16 micro-kernels of Q5_0, IQ4_NL, Q4_1 and Q5_1
 * (x16_legacy_avx512.c; the VNNI ones when vnni). Called by the AVX-512
 * tables' init. */
void kernels_x16_legacy_avx512(kernels_table *k, bool vnni);
/* The same for IQ4_XS, Q3_K and Q2_K (x16_kquants_avx512.c), beside Q4_K /
 * Q6_K's in x86_avx512.c; the maddubs kernels when !vnni, bit-identical
 * either way; with vnni, gfni (the CPU has GFNI): the Q3_K column's
 * gf2p8affine level build, vbmi (AVX512_VBMI): the IQ4_XS column's vpermb
 * lookups. */
void kernels_x16_kquants_avx512(kernels_table *k, bool vnni, bool gfni, bool vbmi);
/* The same for Q5_K (x16_q5k_avx512.c), in the reference dot's order. */
void kernels_x16_q5k_avx512(kernels_table *k, bool vnni);
/* Sets the AVX2 table's x16 micro-kernels of F16, BF16, Q8_0, Q4_0 and Q4_K
 * (x16_avx2.c, vpmaddubsw without VNNI; bit-identical to the reference). Called by the
 * AVX2 table's init, so CPUs without AVX-512 load those weights packed. */
void kernels_x16_avx2(kernels_table *k);
/* The AVX2 table's x16 micro-kernel of Q5_K (x16_q5k_avx2.c, the reference
 * dot's order, bit-identical). Called by the AVX2 table's init. */
void kernels_x16_q5k_avx2(kernels_table *k);
/* The same for IQ4_NL, Q5_0, Q4_1 and Q5_1 (x16_legacy_avx2.c), in their
 * reference dots' order, so bit-identical to it. Called after kernels_x16_avx2. */
void kernels_x16_legacy_avx2(kernels_table *k);
/* The same for Q6_K, IQ4_XS, Q3_K and Q2_K (x16_kquants_avx2.c), called
 * after kernels_x16_avx2 by the AVX2 table's init. */
void kernels_x16_kquants_avx2(kernels_table *k);
/* The AVX2 table with the x16 prompt tiles of every int8 weight type on
 * 256-bit vpdpbusd (x16_avxvnni.c), bit-identical to it: "avxvnni" (VEX, AVX-VNNI) for CPUs with
 * AVX2 and AVX-VNNI, and "avxvnni_evex" (the same kernels EVEX-encoded, AVX512_VNNI + AVX512VL) to
 * run them on AVX-512 VNNI CPUs. Call only after checking the CPU features. */
const kernels_table *kernels_avxvnni_table(void);
const kernels_table *kernels_avxvnni_evex_table(void);
/* Sets table k's x16 tiles of those types (x16_avxvnni.c,
 * x16_avxvnni_evex.c); called by the two tables' init. */
void kernels_x16_avxvnni(kernels_table *k);
void kernels_x16_avxvnni_evex(kernels_table *k);
/* cpuid's AVX-VNNI bit (leaf 7 subleaf 1, EAX bit 4, with AVX2), read
 * once (kernels.c). */
bool kernels_cpu_has_avxvnni(void);
/* cpuid's AVX512_VNNI bit (with the AVX-512 set), read once (kernels.c). */
bool kernels_cpu_has_avx512vnni(void);
/* cpuid's AVX512_BF16 bit (leaf 7 subleaf 1, EAX bit 5, with the AVX-512
 * set), read once (kernels.c). */
bool kernels_cpu_has_avx512bf16(void);
/* cpuid's GFNI bit (leaf 7 subleaf 0, ECX bit 8, with the AVX-512 set),
 * read once (kernels.c): the "avx512" table's Q6_K column uses
 * vgf2p8affineqb when it and VNNI are there, bit-identical either way. */
bool kernels_cpu_has_gfni(void);
/* cpuid's AVX512_VBMI bit (leaf 7 subleaf 0, ECX bit 1, with the AVX-512
 * set), read once (kernels.c): the "avx512" table's IQ4_XS column looks
 * its levels up with vpermb when it and VNNI are there, bit-identical
 * either way. */
bool kernels_cpu_has_avx512vbmi(void);
/* Sets table k's BF16 vec_dot, row and x16 micro-kernels to the vdpbf16ps
 * ones (bf16_avx512.c: a different arithmetic from the FP32 widening
 * kernels, bit-exact with vec_dot_bf16_dp_ref for rows and
 * repack_x16_dot_bf16dp_ref for x16). Call only when
 * kernels_cpu_has_avx512bf16(); the "avx512" table's init does. */
void kernels_bf16_avx512(kernels_table *k);
#endif

#endif /* CS_MATMUL_H */
