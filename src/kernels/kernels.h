/* kernels.h: the kernel table. Every kernel has a scalar reference (the
 * executable specification, compiled forever): the per-type ones are the
 * type table's entries (types.c, implemented in quant.c, quant_legacy.c,
 * kquants.c, iquants.c), the others ref.c's. SIMD versions (x86_avx2.c,
 * x86_avx512.c, kquants_avx2.c, iquants_avx2.c, iquants_avx512.c) with the
 * same signatures fill the tables chosen once at start-up by cpuid
 * (kernels.c). Each SIMD kernel is tested against the reference with a
 * named tolerance (tests/test_kernels.c, test_kquants.c, test_iquants.c,
 * test_quants_legacy.c), and the references against ggml itself
 * (tests/test_ggml_peer.c).
 *
 * Numerics follow ggml's CPU backend so that logits agree with llama.cpp:
 * activations are converted to the weight type's vec_dot_type (types.h:
 * Q8_0 for Q8_0/Q4_0/Q5_0/IQ4_NL weights, Q8_1 for Q4_1/Q5_1, Q8_K for
 * K-quants and IQ4_XS, f16 for F16 weights, bf16 for BF16 weights);
 * reductions of norms and softmax sums use double accumulators. */
#ifndef CS_KERNELS_H
#define CS_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "../types.h"

/* RoPE pairing modes (ggml's mode bits). */
enum { CS_ROPE_NORM = 0, CS_ROPE_NEOX = 2 };

/* A register-tiled matmul micro-kernel for one weight type: out[t*rb + r]
 * = dot(w[r], x[t]) over K elements for r < rb and t < tb (tile) or t < 1
 * (col). w[] points at rb weight rows, x[] at tb (or 1) converted
 * activation rows; for the x16 layout w[0] points at the 16-row group's
 * packed blocks and is the only pointer read (matmul leaves the others
 * NULL). out: rb * tb (or rb) floats, the only memory written (a kernel
 * may use them as scratch before the results; matmul's column writes
 * straight into the output rows). Both functions run the identical
 * per-output operation sequence, so the shape never changes a result.
 * tile == NULL: none.
 * tile2 (optional, NULL: none): the same for tb2 < tb activation rows, for
 * the tokens left after the full tiles, so a batch of tb2 .. tb - 1 rows (a
 * decode step of several sequences) does not stream the weights once per
 * row through col.
 * tile_pair (optional, x16 only, NULL: none): two neighbouring 16-row
 * groups (w[0], w[1]) times tbp activation rows in one call, out[t * 32 +
 * r] with rows 16..31 from w[1]; each output again by the identical
 * sequence. Where the broadcast of an activation is the bound (the F16
 * FMA tile, the int8 K-quant tiles' vpdpbusd), one broadcast then feeds
 * two groups. tbp <= 16. */
typedef struct matmul_ukernel {
    int32_t rb; /* weight rows per call */
    int32_t tb; /* activation rows per tile call */
    void (*tile)(int64_t K, const void *const *w, const void *const *x, float *out);
    void (*col)(int64_t K, const void *const *w, const void *x, float *out);
    int32_t tb2; /* activation rows per tile2 call */
    void (*tile2)(int64_t K, const void *const *w, const void *const *x, float *out);
    int32_t tbp; /* activation rows per tile_pair call */
    void (*tile_pair)(int64_t K, const void *const *w, const void *const *x, float *out);
} matmul_ukernel;

/* The micro-kernel named by stem: stem##_tile / stem##_col, or their VNNI
 * variants stem##_tile_vnni / stem##_col_vnni when vnni (a table init's
 * registration line). MATMUL_UK2 adds tile2 = stem##_tile8(_vnni) of tb2
 * tokens. */
#define MATMUL_UK(vnni, rb, tb, stem)                                                              \
    ((vnni) ? (matmul_ukernel){rb, tb, stem##_tile_vnni, stem##_col_vnni, 0, NULL, 0, NULL}        \
            : (matmul_ukernel){rb, tb, stem##_tile, stem##_col, 0, NULL, 0, NULL})
#define MATMUL_UK2(vnni, rb, tb, tb2, stem)                                                        \
    ((vnni) ? (matmul_ukernel){rb, tb, stem##_tile_vnni, stem##_col_vnni, tb2, stem##_tile8_vnni,  \
                               0, NULL}                                                            \
            : (matmul_ukernel){rb, tb, stem##_tile, stem##_col, tb2, stem##_tile8, 0, NULL})

/* The most queries one call of attn_scores_f16 / attn_accum_f16 takes:
 * the cells are read and converted once for all of them. forward.c sizes
 * its per-thread score and query buffers by it. */
#define KERNELS_ATTN_MQ 4

/* CASE(nv, nq) for nq = 1 .. KERNELS_ATTN_MQ: the switch cases by which
 * the SIMD attention kernels dispatch to an instantiation per (row
 * vectors, query count), each keeping its accumulators in registers. */
#define KERNELS_ATTN_NQ_CASES(CASE, NV) CASE(NV, 1) CASE(NV, 2) CASE(NV, 3) CASE(NV, 4)

typedef struct kernels_table {
    const char *name; /* "ref", "avx2", "avx512", "avx512novnni", ... */
    /* the arithmetic the table's kernels run, for tests and benchmarks that
     * must know it without going by the name: vnni512, the int8 matmuls
     * use 512-bit vpdpbusd; bf16dp, BF16 weights use vdpbf16ps
     * (bf16_avx512.c, a different rounding from the FP32 widening) */
    bool vnni512, bf16dp;

    /* ---- per element type, indexed by CS_TYPE_* (the type table,
     * types.h, says which types are weights and their vec_dot_type). Each
     * table starts from the type table's scalar entries (kernels_init_ref)
     * and its ISA file replaces those it has SIMD for; an entry is NULL
     * only for types the engine does not compute with. */
    /* [weight type]: dot of a weight row with a row of its vec_dot_type;
     * n a multiple of the type's block. */
    type_vec_dot_fn vec_dot[CS_TYPE_COUNT];
    /* [vec_dot type]: f32 activations to that type, bit-exact with the
     * type table's act_from_float_ref (F16, BF16, Q8_0, Q8_1, Q8_K). */
    type_from_float_fn from_float[CS_TYPE_COUNT];
    /* [weight type]: the matmul micro-kernels for the row layout and for
     * x16-packed weights (repack.h; rb = 16, w[0] is the group's first
     * byte, out[t*16 + r], activation rows are Q8_0 blocks followed by
     * matmul_x16_aux entries, or Q8_K blocks). tile NULL: none, matmul
     * then uses vec_dot (rows) or repack_x16_dot_ref (x16). */
    matmul_ukernel ukernel[CS_TYPE_COUNT];
    /* ukernel[t].tile reads the activations widened to f32
     * (matmul_wide_offset, F16 / BF16 rows): matmul fills that copy only
     * then, and only when a tile runs (T >= tb), so decode steps and the
     * other kernels skip it */
    bool wide_x[CS_TYPE_COUNT];
    matmul_ukernel ukernel_x16[CS_TYPE_COUNT];
    /* ukernel_x16[t]'s tile and col read the widened activations (F16 /
     * BF16 in FP32): matmul fills that copy at every T for them */
    bool wide_x16[CS_TYPE_COUNT];

    /* ---- the KV cache (types F32, F16, Q8_0) uses vec_dot[] and
     * from_float[] of its type directly (forward.c, kv_cache.c). */
    /* dot of an f16 row x with an f32 vector y (attention over an F16 K cache
     * when the query is kept in f32) */
    void (*vec_dot_f16_f32)(int64_t n, float *s, const uint16_t *x, const float *y);
    void (*fp16_to_fp32_row)(const uint16_t *x, float *y, int64_t n);

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
     * n_rot/2 (cos, sin) pairs from kernels_rope_cache:
     *   a' = a*cos - b*sin,  b' = a*sin + b*cos */
    void (*rope)(float *x, int64_t n_head, int64_t head_dim, int32_t n_rot, int32_t mode,
                 const float *cs);

    /* ---- attention over an F16 cache, gathered cells, for nq queries at
     * once (1 <= nq <= KERNELS_ATTN_MQ) over the same cells (optional: NULL
     * in tables without them; forward.c then loops over vec_dot_f16 and
     * axpy_f16). Row j of the cache is base + idx[j] * stride.
     * s[g][j] = scale * dot(row j, q[g]) over hd elements, each dot computed
     * exactly as the table's vec_dot_f16 (q[g] is f16, like the rows). */
    void (*attn_scores_f16)(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                            const int32_t *idx, int32_t nq, const uint16_t *const *q, float scale,
                            float *const *s);
    /* out[g][i] += f16(w[g][j]) * row j [i] for j = 0..n-1 in order, where
     * f16() rounds to the nearest f16 (ggml rounds the probabilities to f16
     * without flash attention): the same operations as n calls of axpy_f16
     * per query. */
    void (*attn_accum_f16)(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                           const int32_t *idx, int32_t nq, const float *const *w,
                           float *const *out);

    /* ---- the scores of a prompt's many queries over the same cells from
     * a transposed copy of the keys (optional, NULL: none; only for head
     * dims KERNELS_ATTN_KT_HD accepts). A per-cell dot ends in a 16-lane
     * sum per (cell, query); with keys along the lanes the same pairs are
     * added between vectors instead, so the transposition, done once per
     * head for all of a prompt's queries, buys about half the operations.
     * attn_kt_f16 writes the key blocks of cells idx[0..n): block b (cells
     * 16b .. 16b + 15, zeros past n) is hd vectors of 16 floats,
     * kt[(b * hd + i) * 16 + r] = element i of cell idx[16b + r].
     * attn_scores_kt_f16 computes s[g][j] for j in [j0, j1) from blocks
     * j0 / 16 .. of kt (64-byte aligned), bit-identical to attn_scores_f16
     * over the same cells. */
    void (*attn_kt_f16)(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                        const int32_t *idx, float *kt);
    void (*attn_scores_kt_f16)(int64_t hd, int32_t j0, int32_t j1, const float *kt, int32_t nq,
                               const uint16_t *const *q, float scale, float *const *s);
} kernels_table;

/* The head dims the transposed-key kernels take: multiples of 64 up to 256
 * (the per-cell kernels' four 16-lane chains, whose order they repeat). */
#define KERNELS_ATTN_KT_HD(hd) ((hd) % 64 == 0 && (hd) >= 64 && (hd) <= 256)

/* The gathered attention kernels' results one (query, cell) pair at a
 * time through a table's vec_dot_f16 (dot) / axpy_f16 (axpy): what a
 * table's attn_scores_f16 / attn_accum_f16 run for head dims their fast
 * paths do not take (ref.c). */
void kernels_attn_scores_each(type_vec_dot_fn dot, int64_t hd, int32_t n, const uint8_t *base,
                              size_t stride, const int32_t *idx, int32_t nq,
                              const uint16_t *const *q, float scale, float *const *s);
void kernels_attn_accum_each(void (*axpy)(int64_t n, float a, const uint16_t *x, float *y),
                             int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                             const int32_t *idx, int32_t nq, const float *const *w,
                             float *const *out);

/* The scalar reference table (always available): the type table's scalar
 * entries and ref.c's kernels. */
const kernels_table *kernels_ref(void);
/* The best table for this CPU (AVX-512 > AVX2+FMA+F16C > ref), chosen once;
 * CS_KERNELS=ref|avx2|avx512 in the environment forces one (if supported). */
const kernels_table *kernels_best(void);
/* A table by name, or NULL when the CPU (or build) lacks it. */
const kernels_table *kernels_by_name(const char *name);

/* Whether the x16 decode columns (a matmul at T = 1) issue software
 * prefetches of the weight stream, as the prompt tiles always do: a
 * property of the core's hardware prefetcher, not of the table, so every
 * SIMD table follows it. Set once, before kernels_by_name returns a SIMD
 * table: CS_COLUMN_PREFETCH=0|1 in the environment, else on for AMD
 * family 1Ah (Zen 5), off elsewhere. Measured (110M tg64, 1 thread,
 * paired read probe): Zen 5 without it streams the K-quant columns at
 * 38-60 % of the probe, with it 88-95 %; Zen 4 lost 10-30 % of tg with it
 * (docs/BENCH.md, "Decode columns without software prefetch" and
 * "Zen 5: decode columns need software prefetch"). Results never depend
 * on it (a prefetch is only a hint). */
extern bool kernels_col_prefetch;
/* The choice above, made now if not made yet (kernels_by_name calls it). */
bool kernels_column_prefetch(void);

/* For the per-ISA files' table set-up (run once, under pthread_once):
 * kernels_init_ref copies the reference table into *k (so every slot a
 * file does not replace keeps its scalar kernel) and names it. */
void kernels_init_ref(kernels_table *k, const char *name);

/* RoPE angle parameters (ggml's YaRN formulation, docs/KV_CACHE_SPEC.md §3.1). With
 * ext_factor 0: theta_k = freq_scale * pos * base^(-2k/n_rot), magnitude
 * attn_factor. theta is advanced iteratively in float (theta *= base^(-2/n_rot))
 * exactly as ggml_rope_cache_init does; with freq_factors, pair k's theta is
 * divided by freq_factors[k] first (ggml's theta / ff). */
typedef struct kernels_rope_params {
    int32_t n_rot;
    int32_t mode;
    float freq_base;
    float freq_scale;
    float ext_factor;
    float attn_factor;
    float beta_fast;
    float beta_slow;
    int32_t n_ctx_orig;
    /* n_rot/2 per-pair divisors of the angle (GGUF rope_freqs.weight, the
     * "llama3" scaling: theta_k / factor_k), or NULL for none. The same
     * factors serve forward and K-shift, so a shifted key equals a key
     * computed at its new position. */
    const float *freq_factors;
} kernels_rope_params;

/* Fill cs[0, n_rot) with (cos, sin) pairs for position pos (a float so that
 * K-shift can rotate by any delta). Scalar; shared by forward and K-shift. */
void kernels_rope_cache(float *cs, float pos, const kernels_rope_params *p);

/* ------------------------------------- reference row kernels (scalar) */
/* The type table's entries (types.c) for the types of quant.c and ref.c;
 * x, y: rows of n elements of the named types. */

/* Bit-exact with ggml's x86 SIMD quantize_row_q8_0 (what llama.cpp uses for
 * activations): d = amax/127 stored as f16, q = round-half-even(x * 127/amax). */
void quantize_row_q8_0_ref(const float *x, void *y, int64_t n);
/* ggml's quantize_row_q8_0_ref (writes Q8_0 weights): roundf, id = 1/d. */
void quantize_row_q8_0_weight_ref(const float *x, void *y, int64_t n);
/* ggml's quantize_row_q4_0_ref (used to write Q4_0 weights). */
void quantize_row_q4_0_ref(const float *x, void *y, int64_t n);
void dequantize_row_q8_0(const void *x, float *y, int64_t n);
void dequantize_row_q4_0(const void *x, float *y, int64_t n);
void f32_to_float_row(const void *x, float *y, int64_t n);   /* a copy */
void f32_from_float_row(const float *x, void *y, int64_t n); /* a copy */
void fp16_to_fp32_row_ref(const void *x, float *y, int64_t n);
void fp32_to_fp16_row_ref(const float *x, void *y, int64_t n);
void bf16_to_fp32_row_ref(const void *x, float *y, int64_t n);
void fp32_to_bf16_row_ref(const float *x, void *y, int64_t n);
/* Scalar dots (ref.c): float products summed in double for f32/f16/bf16
 * (ggml's generic path), exact per-block integer sums scaled in float for
 * the quantized ones. */
void vec_dot_f32_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_f16_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_bf16_ref(int64_t n, float *s, const void *x, const void *y);
/* The arithmetic of the AVX512_BF16 kernels (bf16_avx512.c), their
 * specification: 16 float lanes; per 32-element step (zeros past n) lane
 * j adds the exact product of elements 2j+1, then of 2j, each rounded to
 * nearest even, with inputs and results below FLT_MIN flushed to zero
 * (vdpbf16ps's DAZ/FTZ per Intel's SDM); then the lanes are summed
 * (i + i+8, i + i+4, (0+2) + (1+3)). Not bit-exact with vec_dot_bf16_ref
 * (double sum); NaN payloads are not specified. Cost: 2 fmaf per element. */
void vec_dot_bf16_dp_ref(int64_t n, float *s, const void *x, const void *y);
/* One fp32 lane of one vdpbf16ps step: acc + w[1] * x[1], then + w[0] *
 * x[0], each rounded to nearest even, with the instruction's DAZ / FTZ
 * (inputs and results below FLT_MIN count as signed zeros). */
float bf16_dp_lane_ref(float acc, const uint16_t w[2], const uint16_t x[2]);
void vec_dot_q8_0_q8_0_ref(int64_t n, float *s, const void *x, const void *y);
void vec_dot_q4_0_q8_0_ref(int64_t n, float *s, const void *x, const void *y);

/* Any weight type (cs_weight_types) to f32: the type table's to_float. */
void dequantize_row(int32_t type, const void *x, float *y, int64_t n);
/* f32 to any weight type through the type table's from_float_ref (ggml's
 * reference quantizers, as llama-quantize writes them), used by writers. */
void quantize_row(int32_t type, const float *x, void *y, int64_t n);

#endif /* CS_KERNELS_H */
