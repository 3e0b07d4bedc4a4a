/* x16_q5k_avx512.c: AVX-512 micro-kernels for x16-packed (repack.h) Q5_K
 * weights against Q8_K activations. Compiled with the AVX-512 flags of
 * x86_avx512.c; entered only through the AVX-512 tables, and the VNNI
 * variants only when cpuid reports AVX512_VNNI (x86_avx512.c's init).
 *
 * Numerics: the order of the reference dot, vec_dot_q5_K_q8_K_ref (ggml's
 * Q5_K order): per super-block, lane k (elements 4k .. 4k+3 of each of
 * the 8 sub-blocks of 32) gets the exact integer lane = sum over the
 * sub-blocks s of scale[s] * (sum of q * a), then acc[k] = fma(d_a * d_w,
 * lane, acc[k]); the mins give one exact integer per super-block, isum =
 * sum_s min[s] * (bsums[2s] + bsums[2s+1]), and summs = summs + (-d_a *
 * dmin_w) * isum (multiply, then add); the output is hsum8(acc) + summs.
 * Every integer is exact on both paths, so the result equals
 * repack_x16_dot_ref and the reference table's row-major dot bit for bit. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "kquants.h"
#include "matmul.h"
#include "repack.h"
#include "simd_x86.h"

/* acc += per-lane sum of the 2 products of the signed words of a and b
 * (vpdpwssd, VNNI only, inline asm as dpbusd_bcast). */
CS_INLINE __m512i dpwssd_q5k(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* lane += scale * (4-element dot of the 5-bit levels w, u8 0..31, with the
 * 4 s8 activations at p). VNNI: vpdpbusd forms the dot, at most 4 * 31 *
 * 128 = 15872 in magnitude, so its int32 equals its sign-extended low word
 * and vpdpwssd against the scale in the low word (high word 0) multiplies
 * it exactly. Otherwise maddubs gives the two word pair sums (at most 2 *
 * 31 * 128, no saturation) and vpmaddwd against the scale in both words
 * adds scale * pair0 + scale * pair1. Exact int32 either way. */
CS_INLINE __m512i dp_q5k(__m512i lane, __m512i w, __m512i sc, const int8_t *p, const int vnni) {
    if (vnni) return dpwssd_q5k(lane, dpbusd_bcast(_mm512_setzero_si512(), w, p), sc);
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_add_epi32(lane,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(w, _mm512_set1_epi32(v)), sc));
}

#define X16_Q5K_TB 4

/* Q5_K x16 (repack.h: d, dmin, scale planes, then per lane k the qh slice
 * and the 4 qs slices). The 5-bit levels of lane k (8 vectors, one per
 * sub-block) are built once and shared by the TB tokens. Cost per token and
 * 16 x 256 weights: 64 x 2 vector integer ops (VNNI: vpdpbusd + vpdpwssd;
 * otherwise maddubs + vpmaddwd + add, 64 x 3), 8 conversions and FMAs, and
 * 4 vpmaddwd for the mins; per 16 x 256 weights ~40 x 8 ops of level
 * decoding, amortized over the TB tokens. */
CS_INLINE void tile_x16_q5K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int vnni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f), m16 = _mm512_set1_epi8(0x10);
    const __m128i m63 = _mm_set1_epi8(63), m15 = _mm_set1_epi8(15), m3 = _mm_set1_epi8(3);
    __m512 acc[X16_Q5K_TB][8], summs[X16_Q5K_TB];
    for (int t = 0; t < TB; t++) {
        summs[t] = _mm512_setzero_ps();
        for (int k = 0; k < 8; k++) acc[t][k] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q5K_BLOCK;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const __m512 mw =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 32)));
        /* the 6-bit scales and mins of the 16 rows (scale_min_k4 on byte
         * planes): scw[s] the scale of sub-block s in the low word (VNNI)
         * or in both words; mnw[u] the mins of sub-blocks 2u, 2u + 1 in the
         * low and high word */
        __m512i scw[8], mnw[4];
        {
            const uint8_t *pl = blk + 64;
            __m512i sc[8], mn[8];
            for (int j = 0; j < 4; j++) {
                const __m128i p0 = _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * j));
                const __m128i p4 =
                    _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * (j + 4)));
                const __m128i p8 =
                    _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * (j + 8)));
                sc[j] = _mm512_cvtepu8_epi32(_mm_and_si128(p0, m63));
                mn[j] = _mm512_cvtepu8_epi32(_mm_and_si128(p4, m63));
                sc[j + 4] = _mm512_cvtepu8_epi32(
                    _mm_or_si128(_mm_and_si128(p8, m15),
                                 _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p0, 6), m3), 4)));
                mn[j + 4] = _mm512_cvtepu8_epi32(
                    _mm_or_si128(_mm_and_si128(_mm_srli_epi16(p8, 4), m15),
                                 _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p4, 6), m3), 4)));
            }
            for (int s = 0; s < 8; s++)
                scw[s] = vnni ? sc[s] : _mm512_or_si512(sc[s], _mm512_slli_epi32(sc[s], 16));
            for (int u = 0; u < 4; u++)
                mnw[u] = _mm512_or_si512(mn[2 * u], _mm512_slli_epi32(mn[2 * u + 1], 16));
        }
        __m512 d[X16_Q5K_TB];
        const int8_t *xa[X16_Q5K_TB];
        for (int t = 0; t < TB; t++) {
            const block_q8_K *ab = (const block_q8_K *)x[t] + b;
            xa[t] = ab->qs;
            d[t] = _mm512_mul_ps(_mm512_set1_ps(ab->d), dw);
            /* the mins: sums of the 32-element activation sub-blocks
             * (|S| <= 32 * 127, a word) paired as mnw, one vpmaddwd each */
            __m512i isum = _mm512_setzero_si512();
            for (int u = 0; u < 4; u++) {
                const int32_t s0 = (int32_t)ab->bsums[4 * u] + ab->bsums[4 * u + 1];
                const int32_t s1 = (int32_t)ab->bsums[4 * u + 2] + ab->bsums[4 * u + 3];
                const int32_t pair = (int32_t)(((uint32_t)s0 & 0xFFFFu) | ((uint32_t)s1 << 16));
                isum = _mm512_add_epi32(isum, _mm512_madd_epi16(mnw[u], _mm512_set1_epi32(pair)));
            }
            const __m512 dm = _mm512_mul_ps(_mm512_set1_ps(-ab->d), mw);
            summs[t] = _mm512_add_ps(summs[t], _mm512_mul_ps(dm, _mm512_cvtepi32_ps(isum)));
        }
        for (int k = 0; k < 8; k++) {
            const uint8_t *q = blk + 256 + (size_t)k * 320;
            /* the block after next: 44 lines, 6 per lane */
            for (int l = 6 * k; l < 6 * k + 6 && l < 44; l++)
                _mm_prefetch((const char *)(blk + 2 * CS_X16_Q5K_BLOCK + (size_t)l * 64),
                             _MM_HINT_T0);
            const __m512i H = _mm512_loadu_si512((const void *)q);
            __m512i lv[8]; /* levels of sub-block s, elements 32s + 4k .. +3 */
            for (int j = 0; j < 4; j++) {
                const __m512i Q = _mm512_loadu_si512((const void *)(q + 64 + 64 * j));
                /* bit 2j (2j + 1) of the qh byte to bit 4; 16-bit shifts of
                 * at most 4 bring no bit across a byte to bit 4 */
                const __m512i hl =
                    2 * j <= 4 ? _mm512_slli_epi16(H, 4 - 2 * j) : _mm512_srli_epi16(H, 2 * j - 4);
                const __m512i hh = 2 * j + 1 <= 4 ? _mm512_slli_epi16(H, 3 - 2 * j)
                                                  : _mm512_srli_epi16(H, 2 * j - 3);
                lv[2 * j] = _mm512_or_si512(_mm512_and_si512(Q, m4), _mm512_and_si512(hl, m16));
                lv[2 * j + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(Q, 4), m4),
                                                _mm512_and_si512(hh, m16));
            }
            for (int t = 0; t < TB; t++) {
                const int8_t *a = xa[t] + 4 * k;
                /* two chains: vpdpwssd latency bounds T = 1 otherwise */
                __m512i l0 = _mm512_setzero_si512(), l1 = _mm512_setzero_si512();
                for (int j = 0; j < 4; j++) {
                    l0 = dp_q5k(l0, lv[2 * j], scw[2 * j], a + 64 * j, vnni);
                    l1 = dp_q5k(l1, lv[2 * j + 1], scw[2 * j + 1], a + 64 * j + 32, vnni);
                }
                acc[t][k] =
                    _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(_mm512_add_epi32(l0, l1)), acc[t][k]);
            }
        }
    }
    for (int t = 0; t < TB; t++) {
        const __m512 h = hsum8_x16_ps(acc[t][0], acc[t][1], acc[t][2], acc[t][3], acc[t][4],
                                      acc[t][5], acc[t][6], acc[t][7]);
        _mm512_storeu_ps(out + 16 * t, _mm512_add_ps(h, summs[t]));
    }
}

static void uk_x16_q5K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q5K(K, w, x, out, X16_Q5K_TB, 0);
}
static void uk_x16_q5K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q5K(K, w, &x, out, 1, 0);
}
static void uk_x16_q5K_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q5K(K, w, x, out, X16_Q5K_TB, 1);
}
static void uk_x16_q5K_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q5K(K, w, &x, out, 1, 1);
}

void kernels_x16_q5k_avx512(kernels_table *k, bool vnni) {
    const int32_t r = CS_X16_ROWS;
    k->ukernel_x16[CS_TYPE_Q5_K] =
        vnni ? (matmul_ukernel){r, X16_Q5K_TB, uk_x16_q5K_tile_vnni, uk_x16_q5K_col_vnni}
             : (matmul_ukernel){r, X16_Q5K_TB, uk_x16_q5K_tile, uk_x16_q5K_col};
}

#endif /* x86 */
