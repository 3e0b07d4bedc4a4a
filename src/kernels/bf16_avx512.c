/* bf16_avx512.c: BF16 weights times BF16 activations with vdpbf16ps
 * (AVX512_BF16), the arithmetic llama.cpp's ggml_vec_dot_bf16 uses on such
 * CPUs. Compiled with the AVX-512 flags plus -mavx512bf16; entered only
 * when kernels_cpu_has_avx512bf16() (kernels.c) says cpuid has the bit.
 *
 * Arithmetic (a different one from the FP32 path of x86_avx512.c, which
 * widens each bf16 and FMAs element by element): the activations are
 * already bf16 (BF16's vec_dot_type, rounded to nearest even by
 * from_float); 16 fp32 lanes, lane j of each 32-element step adds the
 * products of elements 2j+1 then 2j (exact in fp32) with the instruction's
 * DAZ / FTZ / round-to-nearest-even, a masked (zero) tail, then the lanes
 * are summed in the fixed tree of vec_dot_bf16_dp_ref (ref.c), the scalar
 * specification this file is tested against bit for bit
 * (tests/test_kernels.c). Per output the sequence is the same for the
 * tile, the column and vec_dot, so the shape never changes a result.
 * Cost: K/32 vdpbf16ps per output (2 flops per element, half the
 * instructions of widen + FMA). */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "matmul.h"
#include "simd_x86.h"

/* The lane sum of vec_dot_bf16_dp_ref: lane i + lane i+8, then i + i+4,
 * then (0+2, 1+3), then 0+1 (plain adds: MXCSR's default, no FTZ). */
CS_INLINE float bf16_hsum16(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CS_INLINE __m512bh ld_bh(const void *p, int64_t k) {
    return (__m512bh)_mm512_loadu_si512((const uint16_t *)p + k);
}
CS_INLINE __m512bh ld_bh_tail(const void *p, int64_t k, __mmask32 m) {
    return (__m512bh)_mm512_maskz_loadu_epi16(m, (const uint16_t *)p + k);
}

/* out[t*RB + r] = dot(w[r], x[t]); RB, TB <= 4 (16 accumulators + 4
 * activation registers + 1 weight register of the 32 zmm). */
CS_INLINE void tile_dp(int64_t K, const void *const *w, const void *const *x, float *out,
                       const int RB, const int TB) {
    __m512 acc[4][4];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512bh xv[4];
        for (int t = 0; t < TB; t++) xv[t] = ld_bh(x[t], k);
        for (int r = 0; r < RB; r++) {
            const __m512bh wv = ld_bh(w[r], k);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv, xv[t]);
        }
    }
    if (k < K) {
        const __mmask32 m = (__mmask32)((1ull << (K - k)) - 1u);
        __m512bh xv[4];
        for (int t = 0; t < TB; t++) xv[t] = ld_bh_tail(x[t], k, m);
        for (int r = 0; r < RB; r++) {
            const __m512bh wv = ld_bh_tail(w[r], k, m);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv, xv[t]);
        }
    }
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = bf16_hsum16(acc[r][t]);
}

#define DP_RB 4
#define DP_TB 4

static void uk_bf16dp_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_dp(K, w, x, out, DP_RB, DP_TB);
}
/* T = 1: one row after the other (one sequential weight stream: reading
 * the 4 rows interleaved halved tg128 of the 110M model, docs/BENCH.md);
 * the per-output sequence is the tile's. */
static void uk_bf16dp_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < DP_RB; r++) tile_dp(K, &w[r], &x, out + r, 1, 1);
}
static void vec_dot_bf16_dp(int64_t n, float *s, const void *x, const void *y) {
    tile_dp(n, &x, &y, s, 1, 1);
}

/* x16 BF16 (repack.h: element k of the 16 rows as 16 words side by side)
 * against the bf16 activations, the arithmetic of repack_x16_dot_bf16dp_ref:
 * one vpermw interleaves elements k and k+1 of each row into its dword
 * lane, and one vdpbf16ps per token adds that pair of products with the
 * token's pair broadcast; pairs alternate between two chains per row
 * (c0 / c1), so a decode step keeps two instructions in flight. No
 * horizontal sum and no widening: per 4 elements 2 loads and 2 permutes
 * serve 2 * TB vdpbf16ps. bench_kernels --peaks, 1 thread, N = K = 768:
 * tile 160 -> 183-206 GFLOP/s (rows -> x16; 86 % of the vdpbf16ps peak),
 * column 53 -> 75; TB = 12 measured the same as 8. */
#define X16_BF16DP_TB 8
CS_INLINE void tile_x16_dp(int64_t K, const void *const *w, const void *const *x, float *out,
                           const int TB) {
    const uint8_t *g = w[0];
    /* word 2r <- row r of element k (word r), word 2r + 1 <- element k + 1 (word 16 + r) */
    const __m512i il = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24,
                                        8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512 c0[X16_BF16DP_TB], c1[X16_BF16DP_TB];
    for (int t = 0; t < TB; t++) c0[t] = c1[t] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 4) {
        const __m512bh w0 = (__m512bh)_mm512_permutexvar_epi16(
            il, _mm512_loadu_si512((const void *)(g + (size_t)k * 32)));
        const __m512bh w1 = (__m512bh)_mm512_permutexvar_epi16(
            il, _mm512_loadu_si512((const void *)(g + (size_t)k * 32 + 64)));
        for (int t = 0; t < TB; t++) {
            int32_t v;
            memcpy(&v, (const uint16_t *)x[t] + k, 4);
            c0[t] = _mm512_dpbf16_ps(c0[t], w0, (__m512bh)_mm512_set1_epi32(v));
        }
        for (int t = 0; t < TB; t++) {
            int32_t v;
            memcpy(&v, (const uint16_t *)x[t] + k + 2, 4);
            c1[t] = _mm512_dpbf16_ps(c1[t], w1, (__m512bh)_mm512_set1_epi32(v));
        }
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, _mm512_add_ps(c0[t], c1[t]));
}

static void uk_x16_bf16dp_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_dp(K, w, x, out, X16_BF16DP_TB);
}
static void uk_x16_bf16dp_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_dp(K, w, &x, out, 1);
}

void kernels_bf16_avx512(kernels_table *k) {
    k->bf16dp = true;
    k->vec_dot[CS_TYPE_BF16] = vec_dot_bf16_dp;
    k->ukernel[CS_TYPE_BF16] =
        (matmul_ukernel){DP_RB, DP_TB, uk_bf16dp_tile, uk_bf16dp_col, 0, NULL, 0, NULL};
    k->wide_x[CS_TYPE_BF16] = false; /* bf16 activations, not the widened copy */
    k->ukernel_x16[CS_TYPE_BF16] = (matmul_ukernel){
        CS_X16_ROWS, X16_BF16DP_TB, uk_x16_bf16dp_tile, uk_x16_bf16dp_col, 0, NULL, 0, NULL};
    k->wide_x16[CS_TYPE_BF16] = false; /* it reads the bf16 pairs */
}

#endif /* x86 */
