/* x16_kquants_avx2.c: the x16 micro-kernels (repack.h) of Q6_K, IQ4_XS,
 * Q3_K and Q2_K for the AVX2 table (CPUs without AVX-512, and without
 * AVX-VNNI), against Q8_K activations. Compiled with the flags of
 * x86_avx2.c (AVX2, FMA, F16C).
 *
 * As in x16_avx2.c, 16 rows are two ymm of 8 int32 lanes (rows 8r .. 8r+7
 * from bytes 32r .. 32r+31 of a 64-byte slice, "half" r). vpmaddubsw adds
 * the two u8 * s8 products of a pair into saturating int16, so each kernel
 * bounds its int16 sums below 2^15 (each kernel's comment); everything past
 * them is exact int32, so every kernel forms the same block integers as its
 * reference (repack_x16_dot_ref) and then scales and accumulates them with
 * the same float operations in the same order (the AVX-512 kernels', in
 * x86_avx512.c and x16_kquants_avx512.c): the results are bit-identical to
 * the reference table and to the AVX-512 tables. Q8_K activations are
 * taken as any s8 in [-128, 127]. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "iquants.h"
#include "kquants.h"
#include "matmul.h"
#include "simd_x86.h"

/* Tokens per tile call, as x16_avx2.c. */
#define X16K_AVX2_TB 4

/* The 4 bytes at p broadcast to the 8 int32 lanes. */
CS_INLINE __m256i bc4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* 8 bytes at p (rows 8r .. 8r+7 of a byte plane) widened to int32 lanes. */
CS_INLINE __m256i u8x8(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
}

/* The word s (the low 16 bits of each lane) in both words of the lane:
 * vpmaddwd against it gives s * (w0 + w1) per lane. */
CS_INLINE __m256i both_words(__m256i s) {
    return _mm256_or_si256(_mm256_and_si256(s, _mm256_set1_epi32(0xFFFF)),
                           _mm256_slli_epi32(s, 16));
}

/* ------------------------------------------------------------- Q6_K */

/* Q6_K x16 (repack.c's dot_row_q6_K order, as x86_avx512.c's
 * tile_x16_q6K): per super-block, token and half the exact integer
 * sumi = sum_s sc[s] * (q . a over sub-block s) - 32 * sum_s sc[s] *
 * bsums[s] (the reference's sum_s sc[s] * (q . a - 32 * bsums[s]): the same
 * integer, |sumi| <= 16 * 128 * (16 * 63 * 128 + 32 * 2048) < 2^31), then
 * acc = fma(sumi, d * d_a, acc).
 * Exact in int16: the 6-bit level (0..63, u8) times a ([-128, 127]) gives a
 * pair <= 2 * 63 * 128 = 16128, and two slices' pairs are added in int16
 * (<= 32256 < 2^15) before vpmaddwd against the sub-block's signed scale
 * in both words. The 4 slices of a sub-block are assembled once per half
 * for the TB tokens (the other half reads them again from L1); the
 * one-token kernel instead loads each slice triple (ql, ql + 32, qh) once
 * and assembles the 4 sub-blocks it holds: 3 loads and 17 vector ops per
 * triple where the per-sub-block path takes 8 loads and 21, work that at
 * T = 1 is not shared by other tokens.
 * Cost per token and 16 x 256 weights: 2 x 16 x (4 vpmaddubsw, 2 vpaddw,
 * 2 vpmaddwd, 2 vpaddd) and 2 x 8 vpmaddwd for the bsums. */
CS_INLINE void tile_x16_q6K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    __m256 acc[X16K_AVX2_TB][2];
    for (int t = 0; t < TB; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        /* 16 scale planes of 16 rows (s8) at x16_q6K_scale_off (repack.h) */
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q6K_BLOCK;
        for (int r = 0; r < 2; r++) {
            __m256i sumi[X16K_AVX2_TB];
            for (int t = 0; t < TB; t++) sumi[t] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++)
                for (int g = 0; g < 2; g++) {
                    if (r == 0) /* the block after next, 53 lines: 14 per (h, g) */
                        for (int k = 0; k < 14; k++)
                            X16_PF_TILE(TB,
                                        (const char *)(blk + 2 * CS_X16_Q6K_BLOCK +
                                                       (size_t)((2 * h + g) * 14 + k) * 64),
                                        _MM_HINT_T0);
                    if (TB == 1) {
                        /* one token: the 3 slices of each u are loaded once
                         * and give all 4 m; the same int16 pairs (two
                         * slices, <= 32256) and vpmaddwd as below */
                        const int8_t *a = ((const block_q8_K *)x[0])[b].qs + 128 * h + 16 * g;
                        const __m256i m30 = _mm256_set1_epi8(0x30);
                        for (int uu = 0; uu < 4; uu += 2) {
                            __m256i p[4];
                            for (int m = 0; m < 4; m++) p[m] = _mm256_setzero_si256();
                            for (int u = uu; u < uu + 2; u++) {
                                const uint8_t *c = blk + x16_q6K_quant_off(h, g, u) + 32 * r;
                                const __m256i A =
                                    _mm256_loadu_si256((const __m256i *)(const void *)c);
                                const __m256i B =
                                    _mm256_loadu_si256((const __m256i *)(const void *)(c + 64));
                                const __m256i H =
                                    _mm256_loadu_si256((const __m256i *)(const void *)(c + 128));
                                /* bits 2m, 2m+1 of H to bits 4, 5: the 16-bit
                                 * shifts move no other bit of a byte there */
                                const __m256i v[4] = {
                                    _mm256_or_si256(_mm256_and_si256(A, m4),
                                                    _mm256_and_si256(_mm256_slli_epi16(H, 4), m30)),
                                    _mm256_or_si256(_mm256_and_si256(B, m4),
                                                    _mm256_and_si256(_mm256_slli_epi16(H, 2), m30)),
                                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), m4),
                                                    _mm256_and_si256(H, m30)),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16(B, 4), m4),
                                        _mm256_and_si256(_mm256_srli_epi16(H, 2), m30))};
                                for (int m = 0; m < 4; m++)
                                    p[m] = _mm256_add_epi16(
                                        p[m], _mm256_maddubs_epi16(v[m], bc4(a + 32 * m + 4 * u)));
                            }
                            for (int m = 0; m < 4; m++) {
                                const __m256i sc2 = both_words(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                                    (const __m128i *)(const void *)(blk +
                                                                    x16_q6K_scale_off(8 * h +
                                                                                      2 * m + g) +
                                                                    8 * r))));
                                sumi[0] = _mm256_add_epi32(sumi[0], _mm256_madd_epi16(p[m], sc2));
                            }
                        }
                        continue;
                    }
                    for (int m = 0; m < 4; m++) {
                        const int sb = 8 * h + 2 * m + g;
                        const __m256i sc2 = both_words(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            (const __m128i *)(const void *)(blk + x16_q6K_scale_off(sb) + 8 * r))));
                        __m256i v[4];
                        for (int u = 0; u < 4; u++) {
                            /* repack.c's q6_K_slot: ql slice at l, at l + 32, qh at l */
                            const uint8_t *c = blk + x16_q6K_quant_off(h, g, u) + 32 * r;
                            const __m256i q = _mm256_loadu_si256(
                                (const __m256i *)(const void *)(c + 64 * (m & 1)));
                            const __m256i H =
                                _mm256_loadu_si256((const __m256i *)(const void *)(c + 128));
                            const __m256i lo =
                                _mm256_and_si256(m < 2 ? q : _mm256_srli_epi16(q, 4), m4);
                            const __m256i hi = _mm256_slli_epi16(
                                _mm256_and_si256(_mm256_srli_epi16(H, 2 * m), m3), 4);
                            v[u] = _mm256_or_si256(lo, hi);
                        }
                        for (int t = 0; t < TB; t++) {
                            const int8_t *a =
                                ((const block_q8_K *)x[t])[b].qs + 128 * h + 32 * m + 16 * g;
                            const __m256i p01 =
                                _mm256_add_epi16(_mm256_maddubs_epi16(v[0], bc4(a)),
                                                 _mm256_maddubs_epi16(v[1], bc4(a + 4)));
                            const __m256i p23 =
                                _mm256_add_epi16(_mm256_maddubs_epi16(v[2], bc4(a + 8)),
                                                 _mm256_maddubs_epi16(v[3], bc4(a + 12)));
                            sumi[t] = _mm256_add_epi32(
                                sumi[t], _mm256_add_epi32(_mm256_madd_epi16(p01, sc2),
                                                          _mm256_madd_epi16(p23, sc2)));
                        }
                    }
                }
            /* sum_s sc[s] * bsums[s]: scales of sub-blocks 2i, 2i+1 as the
             * word pair of a lane against the bsums pair */
            __m256i corr[X16K_AVX2_TB];
            for (int t = 0; t < TB; t++) corr[t] = _mm256_setzero_si256();
            for (int i = 0; i < 8; i++) {
                const __m256i s0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                    (const __m128i *)(const void *)(blk + x16_q6K_scale_off(2 * i) + 8 * r)));
                const __m256i s1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                    (const __m128i *)(const void *)(blk + x16_q6K_scale_off(2 * i + 1) + 8 * r)));
                const __m256i sp = _mm256_or_si256(_mm256_and_si256(s0, _mm256_set1_epi32(0xFFFF)),
                                                   _mm256_slli_epi32(s1, 16));
                for (int t = 0; t < TB; t++) {
                    int32_t bs;
                    memcpy(&bs, ((const block_q8_K *)x[t])[b].bsums + 2 * i, 4);
                    corr[t] =
                        _mm256_add_epi32(corr[t], _mm256_madd_epi16(sp, _mm256_set1_epi32(bs)));
                }
            }
            const __m256 dv = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + CS_X16_Q6K_D + 16 * r)));
            for (int t = 0; t < TB; t++) {
                const __m256i s = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(corr[t], 5));
                const __m256 dy = _mm256_set1_ps(((const block_q8_K *)x[t])[b].d);
                acc[t][r] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dv, dy), acc[t][r]);
            }
        }
    }
    for (int t = 0; t < TB; t++) {
        _mm256_storeu_ps(out + 16 * t, acc[t][0]);
        _mm256_storeu_ps(out + 16 * t + 8, acc[t][1]);
    }
}

/* ----------------------------------------------------------- IQ4_XS */

/* Tokens per IQ4_XS tile call: the 8 looked-up weight vectors of a
 * (sub-block, nibble) serve 16 tokens (the integer sums live in memory,
 * so more tokens cost no registers; a 768 x 768 matmul at T = 512 under
 * the avx2 table, 1 thread, 4 alternating runs: 114-122 GFLOP/s at 8,
 * 123-127 at 16). The 8 .. 15 tokens left after the full tiles (a decode
 * step of that many sequences) take one 8-token tile (tile2) instead of a
 * column pass over the weights each. */
#define IQ4XS_AVX2_TB  16
#define IQ4XS_AVX2_TB2 8

/* IQ4_XS x16 (the order of vec_dot_iq4_xs_q8_K_ref, as
 * x16_kquants_avx512.c): per super-block the exact integer isum = sum over
 * the sub-blocks j of (ls_j - 32) * (q . a), then acc = acc + (d_w * d_a) *
 * isum (multiply, then add).
 * Exact in int16: the levels (iq4nl_values, [-127, 113]) get a's sign
 * (vpsignb) and multiply |a| (u8, <= 128), so a pair is <= 2 * 128 * 127 =
 * 32512 < 2^15; vpmaddwd against the row's ls - 32 in both words of its
 * lane (|ls - 32| <= 32) widens and scales it at once: |isum| <= 8 * 8 *
 * 2 * 32512 * 32 < 2^31.
 * Work per (sub-block, nibble): the 8 level vectors (vpshufb) of both row
 * halves and their scales are formed once for the TB tokens; |a| is
 * formed once per super-block and token into aa (256 bytes, vpabsb on 8
 * vectors), so the inner step per token and 16 rows x 4 weights is 2
 * broadcast loads (a and |a|, shared by the two row halves: one
 * broadcast per half before cost 6 % of the tile: the same matmul, 3
 * alternating runs at 8 tokens, 114-115 -> 122 GFLOP/s),
 * then per half vpsignb, vpmaddubsw, vpmaddwd, vpaddd (the minimum for
 * signed levels and signed activations. The sign is a third of the
 * step's time: without it, giving wrong sums, the one-broadcast-per-half
 * tile read 160 against 110 GFLOP/s; vpxor + vpsubb from a precomputed
 * sign mask read 111, and int16 levels pre-scaled by ls - 32 for
 * vpmaddwd alone, exact as well, 92.) The int32 super-block sums live in
 * memory (one load, add and store per half, nibble, sub-block and token),
 * leaving the 16 ymm to the level vectors and the integer sums.
 * Cost per token and 16 x 256 weights: 64 x 2 broadcasts and 2 x 64 x
 * (vpsignb, vpmaddubsw, vpmaddwd, vpaddd), 8 vpabsb, 32 loads and stores
 * of the super-block sums, 2 conversions, 4 multiplies, 2 adds; per TB
 * tokens 128
 * vpshufb and 16 scale decodes. (Before the reference took one float step
 * per super-block, every sub-block's sum was converted, scaled and added
 * in float: 110M IQ4_XS pp512, 1 thread, was 8 % slower.) */
CS_INLINE void tile_x16_iq4xs(int64_t K, const void *const *w, const void *const *x, float *out,
                              const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i tbl =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)iq4nl_values));
    __m256 acc[IQ4XS_AVX2_TB][2];
    int32_t isum[IQ4XS_AVX2_TB][2][8] __attribute__((aligned(32)));
    int8_t aa[IQ4XS_AVX2_TB][CS_QK_K] __attribute__((aligned(32)));
    const int8_t *xa[IQ4XS_AVX2_TB];
    float da[IQ4XS_AVX2_TB];
    for (int t = 0; t < TB; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_IQ4XS_BLOCK;
        const uint8_t *qs = blk + 128;
        for (int k = 0; k < 34; k += 2) /* the block after next */
            X16_PF_TILE(TB, (const char *)(blk + 2 * CS_X16_IQ4XS_BLOCK + (size_t)k * 64),
                        _MM_HINT_T0);
        for (int t = 0; t < TB; t++) {
            const block_q8_K *xb = (const block_q8_K *)x[t] + b;
            xa[t] = xb->qs;
            da[t] = xb->d;
            for (int c = 0; c < CS_QK_K / 32; c++)
                _mm256_store_si256((__m256i *)(void *)(aa[t] + 32 * c),
                                   _mm256_abs_epi8(_mm256_loadu_si256(
                                       (const __m256i *)(const void *)(xa[t] + 32 * c))));
            for (int r = 0; r < 2; r++)
                _mm256_store_si256((__m256i *)(void *)isum[t][r], _mm256_setzero_si256());
        }
        __m256i sh[2]; /* the scales' high bits of rows 8r .. 8r+7 */
        for (int r = 0; r < 2; r++)
            sh[r] = _mm256_cvtepu16_epi32(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * r)));
        for (int j = 0; j < 8; j++) {
            __m256i ls2[2]; /* rows 8r .. 8r+7 */
            for (int r = 0; r < 2; r++) {
                const __m256i pl = u8x8(blk + 64 + 16 * (j / 2) + 8 * r);
                const __m256i lo =
                    _mm256_and_si256(_mm256_srli_epi32(pl, 4 * (j % 2)), _mm256_set1_epi32(0xF));
                const __m256i hi = _mm256_slli_epi32(
                    _mm256_and_si256(_mm256_srli_epi32(sh[r], 2 * j), _mm256_set1_epi32(3)), 4);
                ls2[r] =
                    both_words(_mm256_sub_epi32(_mm256_or_si256(lo, hi), _mm256_set1_epi32(32)));
            }
            for (int n = 0; n < 2; n++) {
                /* wv[r][s]: elements 16n + 4s .. 16n + 4s + 3 of the
                 * sub-block (nibble n of its qs slice s), rows 8r .. */
                __m256i wv[2][4];
                for (int r = 0; r < 2; r++)
                    for (int s = 0; s < 4; s++) {
                        const __m256i raw = _mm256_loadu_si256((
                            const __m256i *)(const void *)(qs + (size_t)(4 * j + s) * 64 + 32 * r));
                        wv[r][s] = _mm256_shuffle_epi8(
                            tbl, _mm256_and_si256(n ? _mm256_srli_epi16(raw, 4) : raw, m4));
                    }
                for (int t = 0; t < TB; t++) {
                    const int8_t *a = xa[t] + 32 * j + 16 * n, *u = aa[t] + 32 * j + 16 * n;
                    __m256i si[2];
                    for (int r = 0; r < 2; r++)
                        si[r] = _mm256_load_si256((const __m256i *)(const void *)isum[t][r]);
                    for (int s = 0; s < 4; s++) {
                        const __m256i ab = bc4(a + 4 * s), ub = bc4(u + 4 * s);
                        for (int r = 0; r < 2; r++)
                            si[r] = _mm256_add_epi32(
                                si[r], _mm256_madd_epi16(
                                           _mm256_maddubs_epi16(ub, _mm256_sign_epi8(wv[r][s], ab)),
                                           ls2[r]));
                    }
                    for (int r = 0; r < 2; r++)
                        _mm256_store_si256((__m256i *)(void *)isum[t][r], si[r]);
                }
            }
        }
        for (int r = 0; r < 2; r++) {
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * r)));
            for (int t = 0; t < TB; t++) {
                const __m256 d = _mm256_mul_ps(dw, _mm256_set1_ps(da[t]));
                const __m256 f = _mm256_cvtepi32_ps(
                    _mm256_load_si256((const __m256i *)(const void *)isum[t][r]));
                acc[t][r] = _mm256_add_ps(acc[t][r], _mm256_mul_ps(d, f));
            }
        }
    }
    for (int t = 0; t < TB; t++) {
        _mm256_storeu_ps(out + 16 * t, acc[t][0]);
        _mm256_storeu_ps(out + 16 * t + 8, acc[t][1]);
    }
}

/* ------------------------------------------------------------- Q3_K */

/* Q3_K x16 (the order of vec_dot_q3_K_q8_K_ref): per super-block the
 * exact integer isum = sum over the lanes k (elements 4k .. 4k+3 of each
 * group of 32), h and g of s * (q . a), s the signed 6-bit scale, q the
 * signed 3-bit level; then acc += (d_a * d_w) * isum, a multiply and an
 * add.
 * Exact in int16: vpmaddubsw on level + 4 (u8, 0..7) gives a pair <=
 * 2 * 7 * 128 = 1792; the word pair's correction 4 * (a0 + a1) (<= 1024 in
 * magnitude) is subtracted in int16, leaving the signed pair q . a; then
 * vpmaddwd against s in both words. The levels of the 16 rows are built
 * once per (half, h, g, k) for the TB tokens; the int32 sums (TB x 2)
 * live in memory, one load and store per lane and half.
 * Cost per token and 16 x 256 weights: 2 x 64 x (vpmaddubsw, vpsubw,
 * vpmaddwd, vpaddd), 2 conversions, multiplies and adds. */
CS_INLINE void tile_x16_q3K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m3 = _mm256_set1_epi8(3), c4 = _mm256_set1_epi8(4);
    __m256 acc[X16K_AVX2_TB][2];
    for (int t = 0; t < TB; t++)
        for (int r = 0; r < 2; r++) acc[t][r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q3K_BLOCK;
        __m256i isum[X16K_AVX2_TB][2];
        for (int t = 0; t < TB; t++)
            for (int r = 0; r < 2; r++) isum[t][r] = _mm256_setzero_si256();
        /* the 16 scales s - 32 of the rows of half r, in both words */
        __m256i scw[2][16];
        __m256 d[X16K_AVX2_TB][2];
        for (int r = 0; r < 2; r++) {
            __m256i pl[12];
            for (int p = 0; p < 12; p++) pl[p] = u8x8(blk + 32 + 16 * p + 8 * r);
            const __m256i f = _mm256_set1_epi32(0xF), t3 = _mm256_set1_epi32(3);
            for (int j = 0; j < 16; j++) {
                const __m256i lo =
                    j < 8 ? _mm256_and_si256(pl[j], f) : _mm256_srli_epi32(pl[j - 8], 4);
                const __m256i hi =
                    _mm256_and_si256(_mm256_srli_epi32(pl[8 + j % 4], 2 * (j / 4)), t3);
                scw[r][j] = both_words(_mm256_sub_epi32(
                    _mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32)));
            }
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * r)));
            for (int t = 0; t < TB; t++)
                d[t][r] = _mm256_mul_ps(_mm256_set1_ps(((const block_q8_K *)x[t])[b].d), dw);
        }
        /* per token and 4-element group e: the word pair 4 * (a0 + a1),
         * 4 * (a2 + a3) */
        int32_t corr[X16K_AVX2_TB][64];
        const int8_t *xa[X16K_AVX2_TB];
        for (int t = 0; t < TB; t++) {
            xa[t] = ((const block_q8_K *)x[t])[b].qs;
            for (int c = 0; c < 8; c++)
                _mm256_storeu_si256(
                    (__m256i *)(void *)(corr[t] + 8 * c),
                    _mm256_maddubs_epi16(
                        c4, _mm256_loadu_si256((const __m256i *)(const void *)(xa[t] + 32 * c))));
        }
        for (int k = 0; k < 8; k++) {
            const uint8_t *q = blk + 224 + (size_t)k * 192;
            for (int l = 4 * k; l < 4 * k + 4 && l < 28; l++) /* the block after next */
                X16_PF_TILE(TB, (const char *)(blk + 2 * CS_X16_Q3K_BLOCK + (size_t)l * 64),
                            _MM_HINT_T0);
            for (int r = 0; r < 2; r++) {
                const __m256i hm = _mm256_loadu_si256((const __m256i *)(const void *)(q + 32 * r));
                const __m256i qs[2] = {
                    _mm256_loadu_si256((const __m256i *)(const void *)(q + 64 + 32 * r)),
                    _mm256_loadu_si256((const __m256i *)(const void *)(q + 128 + 32 * r))};
                __m256i lane[X16K_AVX2_TB];
                for (int t = 0; t < TB; t++) lane[t] = _mm256_setzero_si256();
                for (int h = 0; h < 2; h++)
                    for (int g = 0; g < 4; g++) {
                        const __m256i q2 =
                            _mm256_and_si256(g ? _mm256_srli_epi16(qs[h], 2 * g) : qs[h], m3);
                        /* hmask bit n = 4h + g of each byte moved to bit 2
                         * (4 when set); the 16-bit shift carries no other
                         * bit of the byte's own word into bit 2 */
                        const int n = 4 * h + g;
                        const __m256i hb = _mm256_and_si256(n >= 2 ? _mm256_srli_epi16(hm, n - 2)
                                                                   : _mm256_slli_epi16(hm, 2 - n),
                                                            c4);
                        const __m256i wv = _mm256_or_si256(q2, hb); /* level + 4 */
                        const __m256i sc = scw[r][8 * h + 2 * g + (k >> 2)];
                        const int e = 32 * h + 8 * g + k;
                        for (int t = 0; t < TB; t++) {
                            const __m256i p =
                                _mm256_sub_epi16(_mm256_maddubs_epi16(wv, bc4(xa[t] + 4 * e)),
                                                 _mm256_set1_epi32(corr[t][e]));
                            lane[t] = _mm256_add_epi32(lane[t], _mm256_madd_epi16(p, sc));
                        }
                    }
                for (int t = 0; t < TB; t++) isum[t][r] = _mm256_add_epi32(isum[t][r], lane[t]);
            }
        }
        for (int t = 0; t < TB; t++)
            for (int r = 0; r < 2; r++)
                acc[t][r] = _mm256_add_ps(acc[t][r],
                                          _mm256_mul_ps(_mm256_cvtepi32_ps(isum[t][r]), d[t][r]));
    }
    for (int t = 0; t < TB; t++)
        for (int r = 0; r < 2; r++) _mm256_storeu_ps(out + 16 * t + 8 * r, acc[t][r]);
}

/* ------------------------------------------------------------- Q2_K */

/* Q2_K x16 (the order of vec_dot_q2_K_q8_K_ref, as x16_kquants_avx512.c's
 * maddubs path): per super-block the exact integers summs = sum of m_j *
 * bsums_j and isum = sum over the lanes k, h and g of s * (q . a); then
 * acc += (-d_a * dmin_w) * summs and acc += (d_a * d_w) * isum.
 * Exact in int16: vpmullw on words forms the weight bytes s * q (level
 * 0..3 times scale 0..15, <= 45, so no carry between the bytes of a word)
 * once per (half, k, h, g) for the TB tokens; a vpmaddubsw pair is then
 * <= 2 * 45 * 128 = 11520, and two groups' pairs are added in int16
 * (<= 23040 < 2^15) before vpmaddwd by 1.
 * Cost per token and 16 x 256 weights: 2 x 64 x (vpmaddubsw) + 2 x 32 x
 * (vpaddw, vpmaddwd, vpaddd), 2 x 8 vpmaddwd for the mins, 4 conversions,
 * multiplies and adds. */
CS_INLINE void tile_x16_q2K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256 acc[X16K_AVX2_TB][2];
    for (int t = 0; t < TB; t++)
        for (int r = 0; r < 2; r++) acc[t][r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q2K_BLOCK;
        __m256i isum[X16K_AVX2_TB][2], msum[X16K_AVX2_TB][2];
        for (int t = 0; t < TB; t++)
            for (int r = 0; r < 2; r++) isum[t][r] = msum[t][r] = _mm256_setzero_si256();
        /* scale slice s = row bytes 2s, 2s+1 as a lane's two words: mins
         * mn = the high nibbles (vpmaddwd against the bsums pair), scw[2s + u]
         * = the low nibble of byte u in both words (vpmullw) */
        __m256i mn[2][8], scw[2][16];
        __m256 d[X16K_AVX2_TB][2], dm[X16K_AVX2_TB][2];
        for (int r = 0; r < 2; r++) {
            for (int sl = 0; sl < 8; sl++) {
                const __m256i sv = _mm256_cvtepu8_epi16(
                    _mm_loadu_si128((const __m128i *)(const void *)(blk + 64 + 32 * sl + 16 * r)));
                mn[r][sl] = _mm256_srli_epi16(sv, 4);
                const __m256i s0 = _mm256_and_si256(sv, _mm256_set1_epi32(0xF));
                const __m256i s1 =
                    _mm256_and_si256(_mm256_srli_epi32(sv, 16), _mm256_set1_epi32(0xF));
                scw[r][2 * sl] = _mm256_or_si256(s0, _mm256_slli_epi32(s0, 16));
                scw[r][2 * sl + 1] = _mm256_or_si256(s1, _mm256_slli_epi32(s1, 16));
            }
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * r)));
            const __m256 mw = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * r)));
            for (int t = 0; t < TB; t++) {
                const float da = ((const block_q8_K *)x[t])[b].d;
                d[t][r] = _mm256_mul_ps(_mm256_set1_ps(da), dw);
                dm[t][r] = _mm256_mul_ps(_mm256_set1_ps(-da), mw);
            }
        }
        for (int k = 0; k < 8; k++) {
            const uint8_t *q = blk + 320 + (size_t)k * 128;
            for (int l = 3 * k; l < 3 * k + 3 && l < 21; l++) /* the block after next */
                X16_PF_TILE(TB, (const char *)(blk + 2 * CS_X16_Q2K_BLOCK + (size_t)l * 64),
                            _MM_HINT_T0);
            for (int r = 0; r < 2; r++) {
                const __m256i qs[2] = {
                    _mm256_loadu_si256((const __m256i *)(const void *)(q + 32 * r)),
                    _mm256_loadu_si256((const __m256i *)(const void *)(q + 64 + 32 * r))};
                __m256i lane[X16K_AVX2_TB];
                for (int t = 0; t < TB; t++) {
                    int32_t bs;
                    memcpy(&bs, ((const block_q8_K *)x[t])[b].bsums + 2 * k, 4);
                    msum[t][r] = _mm256_add_epi32(
                        msum[t][r], _mm256_madd_epi16(mn[r][k], _mm256_set1_epi32(bs)));
                    lane[t] = _mm256_setzero_si256();
                }
                for (int h = 0; h < 2; h++)
                    for (int g = 0; g < 4; g += 2) {
                        __m256i wv[2];
                        for (int u = 0; u < 2; u++) {
                            const __m256i q2 = _mm256_and_si256(
                                g + u ? _mm256_srli_epi16(qs[h], 2 * (g + u)) : qs[h], m3);
                            wv[u] = _mm256_mullo_epi16(q2, scw[r][8 * h + 2 * (g + u) + (k >> 2)]);
                        }
                        const int e = 32 * h + 8 * g + k; /* e + 8: group g + 1 */
                        for (int t = 0; t < TB; t++) {
                            const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 4 * e;
                            const __m256i p =
                                _mm256_add_epi16(_mm256_maddubs_epi16(wv[0], bc4(a)),
                                                 _mm256_maddubs_epi16(wv[1], bc4(a + 32)));
                            lane[t] = _mm256_add_epi32(lane[t], _mm256_madd_epi16(p, ones));
                        }
                    }
                for (int t = 0; t < TB; t++) isum[t][r] = _mm256_add_epi32(isum[t][r], lane[t]);
            }
        }
        for (int t = 0; t < TB; t++)
            for (int r = 0; r < 2; r++) {
                acc[t][r] = _mm256_add_ps(acc[t][r],
                                          _mm256_mul_ps(_mm256_cvtepi32_ps(msum[t][r]), dm[t][r]));
                acc[t][r] = _mm256_add_ps(acc[t][r],
                                          _mm256_mul_ps(_mm256_cvtepi32_ps(isum[t][r]), d[t][r]));
            }
    }
    for (int t = 0; t < TB; t++)
        for (int r = 0; r < 2; r++) _mm256_storeu_ps(out + 16 * t + 8 * r, acc[t][r]);
}

/* ------------------------------------------------------------ table */

static void uk_q6K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q6K(K, w, x, out, X16K_AVX2_TB);
}
static void uk_q6K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q6K(K, w, &x, out, 1);
}
static void uk_iq4xs_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_iq4xs(K, w, x, out, IQ4XS_AVX2_TB);
}
static void uk_iq4xs_tile8(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_iq4xs(K, w, x, out, IQ4XS_AVX2_TB2);
}
static void uk_iq4xs_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_iq4xs(K, w, &x, out, 1);
}
static void uk_q3K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q3K(K, w, x, out, X16K_AVX2_TB);
}
static void uk_q3K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q3K(K, w, &x, out, 1);
}
static void uk_q2K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q2K(K, w, x, out, X16K_AVX2_TB);
}
static void uk_q2K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q2K(K, w, &x, out, 1);
}

void kernels_x16_kquants_avx2(kernels_table *k) {
    const int32_t r = CS_X16_ROWS;
    k->ukernel_x16[CS_TYPE_Q6_K] =
        (matmul_ukernel){r, X16K_AVX2_TB, uk_q6K_tile, uk_q6K_col, 0, NULL, 0, NULL};
    k->ukernel_x16[CS_TYPE_IQ4_XS] = (matmul_ukernel){
        r, IQ4XS_AVX2_TB, uk_iq4xs_tile, uk_iq4xs_col, IQ4XS_AVX2_TB2, uk_iq4xs_tile8, 0, NULL};
    k->ukernel_x16[CS_TYPE_Q3_K] =
        (matmul_ukernel){r, X16K_AVX2_TB, uk_q3K_tile, uk_q3K_col, 0, NULL, 0, NULL};
    k->ukernel_x16[CS_TYPE_Q2_K] =
        (matmul_ukernel){r, X16K_AVX2_TB, uk_q2K_tile, uk_q2K_col, 0, NULL, 0, NULL};
}

#endif /* x86 */
