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

void kernels_bf16_avx512(kernels_table *k) {
    k->vec_dot[CS_TYPE_BF16] = vec_dot_bf16_dp;
    k->ukernel[CS_TYPE_BF16] = (matmul_ukernel){DP_RB, DP_TB, uk_bf16dp_tile, uk_bf16dp_col};
    k->wide_x[CS_TYPE_BF16] = false; /* bf16 activations, not the widened copy */
    /* not packed: vdpbf16ps on rows outruns the x16 FP32 tile (162 against
     * ~105 GFLOP/s, bench_kernels --peaks, 1 thread, Zen 4) */
    k->ukernel_x16[CS_TYPE_BF16] = (matmul_ukernel){0};
}

#endif /* x86 */
