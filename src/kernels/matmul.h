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

/* Bytes of scratch cs_matmul needs for T activation rows of K elements
 * against weights of type wtype: T rows of the weight's vec-dot type (f32
 * for F32 weights: then only a minimum of 64 bytes, never 0, so a caller
 * can allocate it unconditionally; f16; bf16; Q8_0 blocks for Q8_0 and
 * Q4_0; Q8_K blocks for Q4_K, Q5_K and Q6_K), each row padded to 64 bytes.
 * Q8_0 rows also reserve room for the x16 aux entries (repack.h), so the
 * size holds for either layout.
 * K must be a multiple of the weight type's block (32, or 256 for K-quants). */
size_t cs_matmul_scratch_size(int32_t wtype, int64_t K, int64_t T);

/* Y[t*N + n] = dot(W row n, X row t) for t < T, n < N.
 *   W: (N, K) of wtype (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K),
 *   rows contiguous (K-quants: dotted row by row with kquants.h's kernels);
 *   layout: CS_LAYOUT_ROWS, or CS_LAYOUT_X16 for a Q4_0 / Q8_0 matrix
 *   packed by cs_x16_pack (then cs_x16_fits(wtype, N, K) must hold; tables
 *   without an x16 micro-kernel use cs_x16_dot_ref);
 *   X: (T, K) f32; Y: (T, N) f32; scratch: cs_matmul_scratch_size bytes,
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
void cs_matmul(const cs_kernels *k, cs_threadpool *tp, int32_t wtype, int32_t layout, const void *W,
               int64_t N, int64_t K, const float *X, int64_t T, float *Y, void *scratch);

/* As cs_matmul, but with X already converted in scratch by the previous
 * call with the same X, T, K and cs_matmul_convert_kind (the Q, K and V
 * projections read one normed input; so do the FFN gate and up): the
 * conversion is skipped, the result is the same. */
void cs_matmul_converted(const cs_kernels *k, cs_threadpool *tp, int32_t wtype, int32_t layout,
                         const void *W, int64_t N, int64_t K, const float *X, int64_t T, float *Y,
                         void *scratch);

/* What cs_matmul converts X to for weights of wtype in layout: equal kinds
 * mean equal scratch contents (0: nothing, X is used as it is). */
int32_t cs_matmul_convert_kind(int32_t wtype, int32_t layout);

/* True when table k has an x16 micro-kernel for wtype, i.e. packing such
 * weights pays off (the model loader asks this of cs_kernels_best()). */
bool cs_matmul_x16_native(const cs_kernels *k, int32_t wtype);

/* ------------------------------------------ internal to src/kernels/ */

/* A register-tiled micro-kernel for one weight type: out[t*rb + r] =
 * dot(w[r], x[t]) over K elements for r < rb and t < tb (tile) or t < 1
 * (col). w[] points at rb weight rows, x[] at tb (or 1) converted
 * activation rows. Both functions run the identical per-output operation
 * sequence, so the shape never changes a result. */
typedef struct cs_matmul_ukernel {
    int32_t rb; /* weight rows per call */
    int32_t tb; /* activation rows per tile call */
    void (*tile)(int64_t K, const void *const *w, const void *const *x, float *out);
    void (*col)(int64_t K, const void *const *w, const void *x, float *out);
} cs_matmul_ukernel;

/* The micro-kernel of table k for weight type wtype; false when the table
 * has none (the reference table: cs_matmul then uses k's vec_dot). */
bool cs_kernels_matmul_ukernel(const cs_kernels *k, int32_t wtype, cs_matmul_ukernel *uk);
/* The same for x16-packed weights: rb = 16 (one group; w[0] is the group's
 * first byte, the other w[] are unused), out[t*16 + r]. Activation rows are
 * Q8_0 blocks followed by cs_x16_aux entries at cs_x16_aux_offset(K). */
bool cs_kernels_matmul_ukernel_x16(const cs_kernels *k, int32_t wtype, cs_matmul_ukernel *uk);

/* Per activation block, for x16 weights: the block's scale as a float and
 * the int32 accumulator's start value, -8 * sum(qs) for Q4_0 weights or
 * -128 * sum(qs) for Q8_0 weights (the weight bytes are offset by 8 / 128). */
typedef struct cs_x16_aux {
    float d;
    int32_t corr;
} cs_x16_aux;

/* Byte offset of the aux entries in a converted activation row of K elements. */
static inline size_t cs_x16_aux_offset(int64_t K) {
    return ((size_t)(K / CS_QK8_0) * sizeof(cs_block_q8_0) + 7) & ~(size_t)7;
}

#if defined(__x86_64__) || defined(__i386__)
/* Per-ISA tables and micro-kernels (x86_avx2.c, x86_avx512.c). Call only
 * after checking the CPU features (kernels.c does). */
const cs_kernels *cs_kernels_avx2_table(void);
bool cs_avx2_matmul_ukernel(int32_t wtype, cs_matmul_ukernel *uk);
const cs_kernels *cs_kernels_avx512_table(void);
/* The same table under the name "avx512novnni": its matmul never uses
 * AVX512-VNNI (tests the fallback on CPUs that have it). */
const cs_kernels *cs_kernels_avx512_novnni_table(void);
/* vnni: use vpdpbusd (only when cpuid reports AVX512_VNNI); results are
 * bit-identical either way. */
bool cs_avx512_matmul_ukernel(int32_t wtype, bool vnni, cs_matmul_ukernel *uk);
bool cs_avx512_matmul_ukernel_x16(int32_t wtype, bool vnni, cs_matmul_ukernel *uk);
#endif

#endif /* CS_MATMUL_H */
