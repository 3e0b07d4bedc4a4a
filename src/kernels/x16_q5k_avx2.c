/* x16_q5k_avx2.c: the x16 micro-kernel (repack.h) of Q5_K for the AVX2
 * table, for CPUs without AVX-512. Compiled with the flags of x86_avx2.c
 * (AVX2, FMA, F16C).
 *
 * Numerics as the AVX-512 kernels (x16_q5k_avx512.c), i.e. repack.c's
 * dot_row_k4 order: per super-block the exact integers sumi (sum over
 * the lanes k and sub-blocks of scale * (q . a)) and summ (the mins times
 * the activations' sub-block sums), then acc = fma(sumi, d_w * d_a, acc)
 * and accm = fma(summ, dmin_w * d_a, accm); the output is acc - accm. So
 * the result equals repack_x16_dot_ref bit for bit.
 * Exactness: vpmaddubsw of the 5-bit levels (u8, 0..31) and the Q8_K
 * activations gives word pairs of at most 2 * 31 * 128 = 7936 (no
 * saturation); vpmaddwd against the 6-bit scale in both words of the
 * row's lane then adds scale * pair0 + scale * pair1 in int32.
 * 16 rows are two ymm of 8 int32 lanes (rows 8h .. 8h+7 from bytes 32h ..
 * 32h+31 of a 64-byte slice); a half's levels of lane k are built once per
 * TB tokens. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "kquants.h"
#include "matmul.h"
#include "simd_x86.h"

#define X16_Q5K_AVX2_TB 4

/* One x16 Q5_K group (repack.h: d, dmin, scale planes, then per lane k
 * the qh slice and the 4 qs slices) against TB Q8_K rows. Cost per token,
 * half and 16 x 256 weights: 64 x (vpmaddubsw, vpmaddwd, vpaddd), 2
 * conversions and FMAs, 4 vpmaddwd for the mins. */
CS_INLINE void tile_x16_q5K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f), m16 = _mm256_set1_epi8(0x10);
    __m256 acc[X16_Q5K_AVX2_TB][2], accm[X16_Q5K_AVX2_TB][2];
    for (int t = 0; t < TB; t++)
        for (int h = 0; h < 2; h++) acc[t][h] = accm[t][h] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q5K_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q5K_BLOCK);
        __m128i scb[8], mnb[8];
        x16_k4_scale_bytes(blk + 64, scb, mnb);
        for (int h = 0; h < 2; h++) {
            const __m256 dv =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * h)));
            const __m256 mv = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * h)));
            /* the scales in both words of the row's lane; the mins of
             * sub-blocks 2u, 2u + 1 in the low and high word */
            __m256i scw[8], mnw[4];
            for (int s = 0; s < 8; s++) {
                const __m256i v = _mm256_cvtepu8_epi32(half8(scb[s], h));
                scw[s] = _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
            }
            for (int u = 0; u < 4; u++)
                mnw[u] = _mm256_or_si256(
                    _mm256_cvtepu8_epi32(half8(mnb[2 * u], h)),
                    _mm256_slli_epi32(_mm256_cvtepu8_epi32(half8(mnb[2 * u + 1], h)), 16));
            __m256i sumi[X16_Q5K_AVX2_TB];
            for (int t = 0; t < TB; t++) {
                const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                sumi[t] = _mm256_setzero_si256();
                __m256i isum = _mm256_setzero_si256();
                for (int u = 0; u < 4; u++) {
                    const int32_t s0 = (int32_t)ab->bsums[4 * u] + ab->bsums[4 * u + 1];
                    const int32_t s1 = (int32_t)ab->bsums[4 * u + 2] + ab->bsums[4 * u + 3];
                    const int32_t pair = (int32_t)(((uint32_t)s0 & 0xFFFFu) | ((uint32_t)s1 << 16));
                    isum =
                        _mm256_add_epi32(isum, _mm256_madd_epi16(mnw[u], _mm256_set1_epi32(pair)));
                }
                accm[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                             _mm256_mul_ps(mv, _mm256_set1_ps(ab->d)), accm[t][h]);
            }
            for (int k = 0; k < 8; k++) {
                const uint8_t *q = blk + 256 + (size_t)k * 320 + 32 * h;
                const __m256i H = _mm256_loadu_si256((const __m256i *)(const void *)q);
                __m256i lane[X16_Q5K_AVX2_TB];
                for (int t = 0; t < TB; t++) lane[t] = _mm256_setzero_si256();
                for (int j = 0; j < 4; j++) {
                    const __m256i Q =
                        _mm256_loadu_si256((const __m256i *)(const void *)(q + 64 + 64 * j));
                    /* bit 2j (2j + 1) of the qh byte to bit 4; 16-bit shifts
                     * of at most 4 bring no bit across a byte to bit 4 */
                    const __m256i hl = 2 * j <= 4 ? _mm256_slli_epi16(H, 4 - 2 * j)
                                                  : _mm256_srli_epi16(H, 2 * j - 4);
                    const __m256i hh = 2 * j + 1 <= 4 ? _mm256_slli_epi16(H, 3 - 2 * j)
                                                      : _mm256_srli_epi16(H, 2 * j - 3);
                    const __m256i lo =
                        _mm256_or_si256(_mm256_and_si256(Q, m4), _mm256_and_si256(hl, m16));
                    const __m256i hi = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(Q, 4), m4), _mm256_and_si256(hh, m16));
                    for (int t = 0; t < TB; t++) {
                        const int8_t *a = ((const block_q8_K *)x[t] + b)->qs + 64 * j + 4 * k;
                        int32_t v0, v1;
                        memcpy(&v0, a, 4);
                        memcpy(&v1, a + 32, 4);
                        const __m256i p0 = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(lo, _mm256_set1_epi32(v0)), scw[2 * j]);
                        const __m256i p1 = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(hi, _mm256_set1_epi32(v1)), scw[2 * j + 1]);
                        lane[t] = _mm256_add_epi32(lane[t], _mm256_add_epi32(p0, p1));
                    }
                }
                for (int t = 0; t < TB; t++) sumi[t] = _mm256_add_epi32(sumi[t], lane[t]);
            }
            for (int t = 0; t < TB; t++) {
                const __m256 dy = _mm256_set1_ps(((const block_q8_K *)x[t] + b)->d);
                acc[t][h] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_mul_ps(dv, dy), acc[t][h]);
            }
        }
    }
    for (int t = 0; t < TB; t++)
        for (int h = 0; h < 2; h++)
            _mm256_storeu_ps(out + 16 * t + 8 * h, _mm256_sub_ps(acc[t][h], accm[t][h]));
}

static void uk_x16_q5K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q5K(K, w, x, out, X16_Q5K_AVX2_TB);
}
static void uk_x16_q5K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q5K(K, w, &x, out, 1);
}

void kernels_x16_q5k_avx2(kernels_table *k) {
    k->ukernel_x16[CS_TYPE_Q5_K] = (matmul_ukernel){
        CS_X16_ROWS, X16_Q5K_AVX2_TB, uk_x16_q5K_tile, uk_x16_q5K_col, 0, NULL, 0, NULL};
}

#endif /* x86 */
