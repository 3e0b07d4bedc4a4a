/* x16_q5k_avx512.c: AVX-512 micro-kernels for x16-packed (repack.h) Q5_K
 * weights against Q8_K activations. Compiled with the AVX-512 flags of
 * x86_avx512.c; entered only through the AVX-512 tables, and the VNNI
 * variants only when cpuid reports AVX512_VNNI (x86_avx512.c's init).
 *
 * Numerics: repack.c's dot_row_k4 order (the x16 order of Q4_K with a
 * fifth bit; not the row-major reference's 8 float lanes): per super-block
 * the exact integers sumi = sum over the 8 sub-blocks s of scale[s] * (sum
 * of q * a) and summ = sum_s min[s] * (bsums[2s] + bsums[2s+1]), then
 * acc = fma(sumi, d_w * d_a, acc) and accm = fma(summ, dmin_w * d_a,
 * accm); the output is acc - accm. Every integer is exact on both paths,
 * so the result equals repack_x16_dot_ref bit for bit. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "kquants.h"
#include "matmul.h"
#include "repack.h"
#include "simd_x86.h"

/* lane += scale * (4-element dot of the 5-bit levels w, u8 0..31, with the
 * 4 s8 activations at p), without VNNI: maddubs gives the two word pair
 * sums (at most 2 * 31 * 128, no saturation) and vpmaddwd against the
 * scale in both words adds scale * pair0 + scale * pair1. Exact int32. */
CS_INLINE __m512i dp_q5k(__m512i lane, __m512i w, __m512i sc, const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_add_epi32(lane,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(w, _mm512_set1_epi32(v)), sc));
}

/* acc += per-lane dot of 4 u8 levels (0..31) and the 4 s8 activations at
 * p (vpdpbusd, or maddubs pairs <= 2 * 31 * 128 + vpmaddwd by 1). */
CS_INLINE __m512i dp_x16_q5k(__m512i acc, __m512i w, const int8_t *p, const int vnni) {
    if (vnni) return dpbusd_bcast(acc, w, p);
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, _mm512_set1_epi32(v)),
                                                   _mm512_set1_epi16(1)));
}

/* 16 tokens a call (bench_kernels --peaks q5_K, 1 thread, 3 alternating
 * runs: 49-50 -> 56-58 % of the vpdpbusd peak at 8 -> 16); X16_KQ_TB2 (8)
 * for the rest of a batch. */
#define X16_Q5K_TB 16

/* The 6-bit scales (sc: int32 per row; scw: in both words, for dp_q5k)
 * and the mins paired in words (mnw[u]: sub-blocks 2u, 2u + 1) of a
 * super-block's 16 rows (scale_min_k4 on byte planes). */
CS_INLINE void q5k_scales(const uint8_t *blk, __m512i sc[8], __m512i scw[8], __m512i mnw[4]) {
    const __m128i m63 = _mm_set1_epi8(63), m15 = _mm_set1_epi8(15), m3 = _mm_set1_epi8(3);
    const uint8_t *pl = blk + 64;
    __m512i mn[8];
    for (int j = 0; j < 4; j++) {
        const __m128i p0 = _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * j));
        const __m128i p4 = _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * (j + 4)));
        const __m128i p8 = _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * (j + 8)));
        sc[j] = _mm512_cvtepu8_epi32(_mm_and_si128(p0, m63));
        mn[j] = _mm512_cvtepu8_epi32(_mm_and_si128(p4, m63));
        sc[j + 4] = _mm512_cvtepu8_epi32(_mm_or_si128(
            _mm_and_si128(p8, m15), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p0, 6), m3), 4)));
        mn[j + 4] = _mm512_cvtepu8_epi32(
            _mm_or_si128(_mm_and_si128(_mm_srli_epi16(p8, 4), m15),
                         _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p4, 6), m3), 4)));
    }
    for (int s = 0; s < 8; s++) scw[s] = _mm512_or_si512(sc[s], _mm512_slli_epi32(sc[s], 16));
    for (int u = 0; u < 4; u++)
        mnw[u] = _mm512_or_si512(mn[2 * u], _mm512_slli_epi32(mn[2 * u + 1], 16));
}

/* The mins' exact integer of one token: the 32-element activation sums
 * (|S| <= 32 * 127, a word) paired as mnw, one vpmaddwd each. */
CS_INLINE __m512i q5k_summ(const block_q8_K *ab, const __m512i mnw[4]) {
    __m512i isum = _mm512_setzero_si512();
    for (int u = 0; u < 4; u++) {
        const int32_t s0 = (int32_t)ab->bsums[4 * u] + ab->bsums[4 * u + 1];
        const int32_t s1 = (int32_t)ab->bsums[4 * u + 2] + ab->bsums[4 * u + 3];
        const int32_t pair = (int32_t)(((uint32_t)s0 & 0xFFFFu) | ((uint32_t)s1 << 16));
        isum = _mm512_add_epi32(isum, _mm512_madd_epi16(mnw[u], _mm512_set1_epi32(pair)));
    }
    return isum;
}

/* One token's super-block into the accumulators, in dot_row_k4's order:
 * acc = fma(sumi, d_w * d_a, acc), accm = fma(summ, dmin_w * d_a, accm). */
CS_INLINE void q5k_accumulate(__m512 *acc, __m512 *accm, __m512i sumi, const block_q8_K *ab,
                              __m512 dv, __m512 dmv, const __m512i mnw[4]) {
    const __m512 dy = _mm512_set1_ps(ab->d);
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dv, dy), *acc);
    *accm = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q5k_summ(ab, mnw)), _mm512_mul_ps(dmv, dy), *accm);
}

/* The 5-bit levels of lane k for sub-block s = 2j + hi (elements 32s + 4k
 * .. +3): the nibble of qs slice (j, k), plus 16 where bit s of the qh
 * slice k is set (vptestmb, a masked vpaddb): 3 vector ops for a low
 * nibble, 4 for a high one (were 4 and 5 with the qh slice shifted and
 * masked into bit 4: bench_kernels q5_K, T = 512, 1 thread, ~223 -> ~237
 * GFLOP/s). q5k_lv takes the loaded qh slice H and qs slice Q. */
CS_INLINE __m512i q5k_lv(__m512i H, __m512i Q, const int s, const int hi) {
    const __m512i nib = _mm512_and_si512(hi ? _mm512_srli_epi16(Q, 4) : Q, _mm512_set1_epi8(0x0f));
    const __mmask64 h = _mm512_test_epi8_mask(H, _mm512_set1_epi8((char)(1 << s)));
    return _mm512_mask_add_epi8(nib, h, nib, _mm512_set1_epi8(16));
}
CS_INLINE __m512i q5k_levels(const uint8_t *q, const int j, const int hi) {
    return q5k_lv(x16_load((const void *)q), x16_load((const void *)(q + 64 + 64 * j)), 2 * j + hi,
                  hi);
}

/* Q5_K x16 tile (repack.h: d, dmin, scale planes, then per lane k the qh
 * slice and the 4 qs slices), sub-block by sub-block: the 8 level vectors
 * of a sub-block (one per lane) are built once for the TB tokens; per
 * token the sub-block's dot is 8 vpdpbusd (or maddubs + madd + add; two
 * chains), then one vpmulld by the scale into sumi. Cost per token and
 * 16 x 256 weights: 64 dot steps + 8 multiplies (was 64 x 2: each
 * 4-element dot scaled with vpdpwssd), 2 conversions and FMAs (was 8),
 * 4 vpmaddwd for the mins. */
CS_INLINE void tile_x16_q5K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int vnni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    __m512 acc[X16_Q5K_TB], accm[X16_Q5K_TB];
    for (int t = 0; t < TB; t++) acc[t] = accm[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q5K_BLOCK;
        const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const __m512 dmv =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 32)));
        __m512i sc[8], scw[8], mnw[4];
        q5k_scales(blk, sc, scw, mnw);
        __m512i sumi[X16_Q5K_TB];
        for (int t = 0; t < TB; t++) sumi[t] = _mm512_setzero_si512();
        if (b + 2 < nb) /* the block after next, 44 lines */
            for (int l = 0; l < 44; l++)
                X16_PF_TILE(TB, (const char *)(blk + 2 * CS_X16_Q5K_BLOCK + (size_t)l * 64),
                            _MM_HINT_T0);
        for (int j = 0; j < 4; j++)
            for (int hi = 0; hi < 2; hi++) {
                __m512i lv[8];
                for (int k = 0; k < 8; k++) lv[k] = q5k_levels(blk + 256 + (size_t)k * 320, j, hi);
                for (int t = 0; t < TB; t++) {
                    const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 64 * j + 32 * hi;
                    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
                    for (int k = 0; k < 8; k += 2) {
                        a0 = dp_x16_q5k(a0, lv[k], a + 4 * k, vnni);
                        a1 = dp_x16_q5k(a1, lv[k + 1], a + 4 * k + 4, vnni);
                    }
                    sumi[t] = _mm512_add_epi32(
                        sumi[t], _mm512_mullo_epi32(_mm512_add_epi32(a0, a1), sc[2 * j + hi]));
                }
            }
        for (int t = 0; t < TB; t++)
            q5k_accumulate(&acc[t], &accm[t], sumi[t], (const block_q8_K *)x[t] + b, dv, dmv, mnw);
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, _mm512_sub_ps(acc[t], accm[t]));
}

/* Two groups (32 rows) x X16_Q5K_PAIR_TB tokens, VNNI only: each 4-byte
 * activation slice is broadcast once into a register and feeds the two
 * groups' vpdpbusd (the 16-row tile spends a broadcast load per vpdpbusd).
 * Per output the same exact integers and float steps as tile_x16_q5K, so
 * the result is the tile's bit for bit. bench_kernels q5_K, T = 512, Zen 5,
 * best of 6 alternating runs: 403 -> 500 GFLOP/s at 1 thread, 790 -> 978
 * at 2 (8 tokens: +4-6 %, the levels then serve half as many tokens). */
#define X16_Q5K_PAIR_TB 16
CS_INLINE void tile_x16_q5K_pair(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    const int64_t nb = K / CS_QK_K;
    const int TB = X16_Q5K_PAIR_TB;
    __m512 acc[2][X16_Q5K_PAIR_TB], accm[2][X16_Q5K_PAIR_TB];
    for (int g = 0; g < 2; g++)
        for (int t = 0; t < TB; t++) acc[g][t] = accm[g][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[2];
        __m512 dv[2], dmv[2];
        __m512i sc[2][8], scw[2][8], mnw[2][4];
        for (int g = 0; g < 2; g++) {
            blk[g] = (const uint8_t *)w[g] + (size_t)b * CS_X16_Q5K_BLOCK;
            dv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk[g]));
            dmv[g] =
                _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(blk[g] + 32)));
            q5k_scales(blk[g], sc[g], scw[g], mnw[g]);
            if (b + 2 < nb) /* the block after next, 44 lines */
                for (int l = 0; l < 44; l++)
                    _mm_prefetch((const char *)(blk[g] + 2 * CS_X16_Q5K_BLOCK + (size_t)l * 64),
                                 _MM_HINT_T0);
        }
        __m512i sumi[2][X16_Q5K_PAIR_TB];
        for (int j = 0; j < 4; j++)
            for (int hi = 0; hi < 2; hi++) {
                const int s = 2 * j + hi;
                __m512i lv0[8], lv1[8];
                for (int k = 0; k < 8; k++) {
                    lv0[k] = q5k_levels(blk[0] + 256 + (size_t)k * 320, j, hi);
                    lv1[k] = q5k_levels(blk[1] + 256 + (size_t)k * 320, j, hi);
                }
                for (int t = 0; t < TB; t++) {
                    const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 64 * j + 32 * hi;
                    __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();
                    for (int k = 0; k < 8; k++) {
                        const __m512i xb = bcast4_512(a + 4 * k);
                        c0 = dpbusd_asm(c0, lv0[k], xb);
                        c1 = dpbusd_asm(c1, lv1[k], xb);
                    }
                    const __m512i p0 = _mm512_mullo_epi32(c0, sc[0][s]);
                    const __m512i p1 = _mm512_mullo_epi32(c1, sc[1][s]);
                    sumi[0][t] = s ? _mm512_add_epi32(sumi[0][t], p0) : p0;
                    sumi[1][t] = s ? _mm512_add_epi32(sumi[1][t], p1) : p1;
                }
            }
        for (int t = 0; t < TB; t++)
            for (int g = 0; g < 2; g++)
                q5k_accumulate(&acc[g][t], &accm[g][t], sumi[g][t], (const block_q8_K *)x[t] + b,
                               dv[g], dmv[g], mnw[g]);
    }
    for (int t = 0; t < TB; t++)
        for (int g = 0; g < 2; g++)
            _mm512_storeu_ps(out + 32 * t + 16 * g, _mm512_sub_ps(acc[g][t], accm[g][t]));
}

/* The column (one token) lane by lane, the layout's order: lane k's qh and
 * qs slices are loaded once (the tile's sub-block order would load every
 * qh slice 8 times, which one token cannot amortize), into the same exact
 * integers as the tile's and with its float steps, so the result is the
 * tile's bit for bit. With VNNI one vpdpbusd chain per sub-block (8
 * accumulators), each scaled once by vpmulld after the super-block, the
 * scales by x16_k4_scales_zmm and the mins by x16_k4_summ; it was each
 * 4-element dot scaled on its own (vpdpbusd + vpdpwssd): paired with the
 * read probe over 151 MB (K = 2048, 3 alternating runs, Zen 4, 1 thread)
 * 0.894-0.901 -> 0.910-0.920 of the probe, from L2 44 -> 54 GB/s. Without
 * VNNI each 4-element dot is scaled by dp_q5k, two chains. */
CS_INLINE void col_x16_q5K(int64_t K, const void *const *w, const void *x, float *out,
                           const int vnni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q5K_BLOCK;
        x16_pf_col(1, blk, CS_X16_Q5K_BLOCK);
        const block_q8_K *ab = (const block_q8_K *)x + b;
        const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const __m512 dmv =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 32)));
        uint8_t sc8[128];
        __m512i sc[8], scw[8], mnw[4], sb[8]; /* without VNNI: sb[0], sb[1] the two chains */
        if (vnni)
            x16_k4_scales_zmm(blk + 64, sc8, mnw);
        else
            q5k_scales(blk, sc, scw, mnw);
        for (int s = 0; s < 8; s++) sb[s] = _mm512_setzero_si512();
        for (int k = 0; k < 8; k++) {
            const uint8_t *q = blk + 256 + (size_t)k * 320;
            const __m512i H = x16_load((const void *)q);
            const int8_t *a = ab->qs + 4 * k;
            for (int j = 0; j < 4; j++) {
                const __m512i Q = x16_load((const void *)(q + 64 + 64 * j));
                const __m512i lo = q5k_lv(H, Q, 2 * j, 0), hv = q5k_lv(H, Q, 2 * j + 1, 1);
                if (vnni) {
                    sb[2 * j] = dpbusd_bcast(sb[2 * j], lo, a + 64 * j);
                    sb[2 * j + 1] = dpbusd_bcast(sb[2 * j + 1], hv, a + 64 * j + 32);
                } else {
                    sb[0] = dp_q5k(sb[0], lo, scw[2 * j], a + 64 * j);
                    sb[1] = dp_q5k(sb[1], hv, scw[2 * j + 1], a + 64 * j + 32);
                }
            }
        }
        __m512i sumi = _mm512_setzero_si512(); /* VNNI: each chain scaled once */
        for (int s = 0; s < 8 && vnni; s++)
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(sb[s], x16_k4_scale(sc8, s)));
        if (!vnni) sumi = _mm512_add_epi32(sb[0], sb[1]);
        const __m512 dy = _mm512_set1_ps(ab->d);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dv, dy), acc);
        accm = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(vnni ? x16_k4_summ(ab->bsums, mnw) : q5k_summ(ab, mnw)),
            _mm512_mul_ps(dmv, dy), accm);
    }
    _mm512_storeu_ps(out, _mm512_sub_ps(acc, accm));
}

static void uk_x16_q5K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q5K(K, w, x, out, X16_Q5K_TB, 0);
}
static void uk_x16_q5K_tile8(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q5K(K, w, x, out, X16_KQ_TB2, 0);
}
static void uk_x16_q5K_col(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_q5K(K, w, x, out, 0);
}
static void uk_x16_q5K_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q5K(K, w, x, out, X16_Q5K_TB, 1);
}
static void uk_x16_q5K_tile8_vnni(int64_t K, const void *const *w, const void *const *x,
                                  float *out) {
    tile_x16_q5K(K, w, x, out, X16_KQ_TB2, 1);
}
static void uk_x16_q5K_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_q5K(K, w, x, out, 1);
}

static void uk_x16_q5K_pair_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q5K_pair(K, w, x, out);
}

void kernels_x16_q5k_avx512(kernels_table *k, bool vnni) {
    const int32_t r = CS_X16_ROWS;
    k->ukernel_x16[CS_TYPE_Q5_K] = MATMUL_UK2(vnni, r, X16_Q5K_TB, X16_KQ_TB2, uk_x16_q5K);
    if (vnni) {
        k->ukernel_x16[CS_TYPE_Q5_K].tbp = X16_Q5K_PAIR_TB;
        k->ukernel_x16[CS_TYPE_Q5_K].tile_pair = uk_x16_q5K_pair_vnni;
    }
}

#endif /* x86 */
