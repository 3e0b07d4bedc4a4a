/* x16_avxvnni.c: the x16 prompt tiles (repack.h) of every int8 weight type
 * (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
 * IQ4_XS) with 256-bit vpdpbusd / vpdpwssd, for CPUs with AVX2 and AVX-VNNI
 * but without AVX-512 (Intel Alder Lake and later, Core Ultra): the
 * "avxvnni" table, which is the AVX2 table with these tiles replaced (the
 * decode columns stay the AVX2 ones: see kernels_x16_avxvnni; F16 / BF16
 * are FP32 FMA work and stay too).
 *
 * Compiled with the flags of x86_avx2.c. The two VNNI instructions are
 * inline asm with an explicit encoding: this file emits the VEX form
 * (AVX-VNNI); x16_avxvnni_evex.c includes it with CS_AVXVNNI_EVEX set and
 * emits the EVEX form of the same ymm instruction (AVX512_VNNI +
 * AVX512VL), everything else byte for byte the same source and flags. That
 * twin is the table "avxvnni_evex": never chosen automatically, it runs
 * these kernels on AVX-512 VNNI CPUs (the development machine, a Zen 4,
 * has no AVX-VNNI), so the tests and bench_kernels check them there.
 *
 * 16 rows are two ymm of 8 int32 lanes (rows 0-7 from the first 32 bytes
 * of a 64-byte slice, rows 8-15 from the second), as x16_avx2.c. Each
 * kernel is the AVX-512 VNNI kernel of its type (x86_avx512.c) on one row
 * half at a time: the same exact integer sums (vpdpbusd adds 4 u8 x s8
 * products into int32 without saturation), then the same float steps per
 * lane, so every output is bit-identical to the reference table.
 * Cost per token and 16 x 32 weights against the maddubs kernels: Q8_0 16
 * vpdpbusd instead of 16 x (vpsignb, vpmaddubsw, vpmaddwd, vpaddd); Q4_0
 * 16 vpdpbusd instead of 16 x (vpmaddubsw, vpaddw) + 2 vpmaddwd. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "iquants.h"
#include "kquants.h"
#include "matmul.h"
#include "quant_legacy.h"
#include "repack.h"
#include "simd_x86.h"

#ifndef CS_AVXVNNI_EVEX
#define CS_AVXVNNI_EVEX 0
#endif

#if CS_AVXVNNI_EVEX
#define VNNI_ENC      "%{evex%} "
#define VNNI_FN(name) name##_evex
#else
#define VNNI_ENC      "%{vex%} "
#define VNNI_FN(name) name
#endif

/* acc + per-lane sum of the 4 products of u8 bytes u and s8 bytes s. */
CS_INLINE __m256i vdpbusd(__m256i acc, __m256i u, __m256i s) {
    __asm__(VNNI_ENC "vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
    return acc;
}

/* acc + per-lane sum of the 2 signed word products of a and b. */
CS_INLINE __m256i vdpwssd(__m256i acc, __m256i a, __m256i b) {
    __asm__(VNNI_ENC "vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
    return acc;
}

/* The tiles' float sums live in out (TB tokens x 16 rows): start at 0. */
CS_INLINE void zero_out(float *out, int TB) {
    for (int t = 0; t < TB; t++) {
        _mm256_storeu_ps(out + 16 * t, _mm256_setzero_ps());
        _mm256_storeu_ps(out + 16 * t + 8, _mm256_setzero_ps());
    }
}

/* ------------------------------------------------------------ tokens */

/* Tokens per tile call; bench_kernels-shaped harness (N = K = 768, T =
 * 512, 1 thread, "avxvnni_evex" on Zen 4), GFLOP/s at TB = 2 / 4 / 6 / 8:
 * Q8_0 168 / 184 / 190 / 191, Q4_0 130 / 183 / 194 / 188, Q4_K 180 / 208
 * / 241 / 179, Q6_K 107 / 147 / 161 / 167; at 4 / 6 / 8 Q5_K 136-137 /
 * 145-153 / 159-164, IQ4_XS 191-194 / 205-212 / 199-201, Q3_K 129-130 /
 * 150-152 / 164-165, Q2_K 166-168 / 191-195 / 190-193. Left-over tokens
 * take the column (TB = 1). */
#define VNNI_TB     6 /* Q8_0, Q4_0, Q4_K, IQ4_XS, Q2_K */
#define VNNI_TB8    8 /* Q3_K, Q5_K, Q6_K */
#define VNNI_TB_MAX 8

/* ------------------------------------------------------- Q4_K, Q5_K */

/* The scales and mins of a super-block (x16_k4_scale_bytes) kept in
 * memory, sm[0][j] and sm[1][j] sub-block j's 16 rows: held in registers
 * across the row halves they cost the tiles' accumulators theirs (the
 * Q4_K tile read 124 against 241 GFLOP/s). */
CS_INLINE void k4_scales(const uint8_t *blk, uint8_t sm[2][8][16]) {
    __m128i sc[8], mn[8];
    x16_k4_scale_bytes(blk + 64, sc, mn);
    for (int j = 0; j < 8; j++) {
        _mm_storeu_si128((__m128i *)(void *)sm[0][j], sc[j]);
        _mm_storeu_si128((__m128i *)(void *)sm[1][j], mn[j]);
    }
}

/* Rows 8h .. 8h+7 of a byte plane row (16 bytes), one per int32 lane. */
CS_INLINE __m256i k4_lanes(const uint8_t *p, int h) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p + 8 * h)));
}

/* The mins of sub-blocks 2u, 2u + 1 of row half h as the low and high
 * word of each row's lane. */
CS_INLINE void k4_min_pairs(const uint8_t mn[8][16], int h, __m256i mnw[4]) {
    for (int u = 0; u < 4; u++)
        mnw[u] = _mm256_or_si256(k4_lanes(mn[2 * u], h),
                                 _mm256_slli_epi32(k4_lanes(mn[2 * u + 1], h), 16));
}

/* One token's super-block into row half h of out (acc) and accm, in
 * dot_row_k4's order: summ = the mins against the token's 32-element sums
 * (|.| <= 32 * 128, words; vpdpwssd on the pairs), acc = fma(sumi, d *
 * d_a, acc), accm = fma(summ, dmin * d_a, accm). */
CS_INLINE void k4_accumulate(float *o, float *om, __m256i sumi, const block_q8_K *ab, __m256 dv,
                             __m256 mv, const __m256i mnw[4]) {
    /* the 8 sub-block sums as words, dword u = sub-blocks 2u, 2u + 1 (one
     * vphaddw and broadcasts from memory: forming the pairs in general
     * registers read 223 against 241 GFLOP/s in the Q4_K tile) */
    int32_t pairs[4];
    _mm_storeu_si128((__m128i *)(void *)pairs, q8k_sums32(ab->bsums));
    __m256i summ = _mm256_setzero_si256();
    for (int u = 0; u < 4; u++) summ = vdpwssd(summ, mnw[u], _mm256_set1_epi32(pairs[u]));
    const __m256 dy = _mm256_set1_ps(ab->d);
    _mm256_storeu_ps(
        o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dv, dy), _mm256_loadu_ps(o)));
    _mm256_storeu_ps(
        om, _mm256_fmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_mul_ps(mv, dy), _mm256_loadu_ps(om)));
}

/* out = acc - accm for the TB tokens. */
CS_INLINE void k4_finish(float *out, const float (*accm)[16], int TB) {
    for (int t = 0; t < TB; t++)
        for (int h = 0; h < 2; h++)
            _mm256_storeu_ps(out + 16 * t + 8 * h,
                             _mm256_sub_ps(_mm256_loadu_ps(out + 16 * t + 8 * h),
                                           _mm256_loadu_ps(accm[t] + 8 * h)));
}

/* ------------------------------------------------------------------ Q4_K */

/* Q4_K x16 (repack.c's dot_row_k4 order), x86_avx512.c's tile_x16_q4K with
 * VNNI per row half: per super-block, token and half the exact integers
 * sumi = sum over the 8 sub-blocks j of sc[j] * (q . a) (vpdpbusd on the
 * nibbles, two chains per nibble half, then vpmulld by the 6-bit scale)
 * and summ = sum of m[j] * (a's sub-block sums) (4 vpdpwssd on the mins
 * in word pairs); then acc = fma(sumi, d * d_a, acc) and accm = fma(summ,
 * dmin * d_a, accm), and the output acc - accm. */
CS_INLINE void tile_q4K(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    float accm[VNNI_TB_MAX][16];
    for (int t = 0; t < TB; t++)
        for (int r = 0; r < 16; r++) out[16 * t + r] = accm[t][r] = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q4K_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q4K_BLOCK);
        const uint8_t *qs = blk + 256; /* [32 slices][16 rows][4] */
        uint8_t sm[2][8][16];
        k4_scales(blk, sm);
        for (int h = 0; h < 2; h++) {
            const __m256 dv =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * h)));
            const __m256 dmv = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * h)));
            __m256i sc[8];
            for (int j = 0; j < 8; j++) sc[j] = k4_lanes(sm[0][j], h);
            __m256i sumi[VNNI_TB_MAX];
            for (int t = 0; t < TB; t++) sumi[t] = _mm256_setzero_si256();
            for (int j = 0; j < 4; j++) {
                __m256i al[VNNI_TB_MAX], ah[VNNI_TB_MAX];
                for (int t = 0; t < TB; t++) al[t] = ah[t] = _mm256_setzero_si256();
                for (int s = 0; s < 8; s++) {
                    const __m256i raw = _mm256_loadu_si256(
                        (const __m256i *)(const void *)(qs + (size_t)(8 * j + s) * 64 + 32 * h));
                    const __m256i lo = _mm256_and_si256(raw, m4);
                    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                    for (int t = 0; t < TB; t++) {
                        const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 64 * j;
                        al[t] = vdpbusd(al[t], lo, bcast4(a + 4 * s));
                        ah[t] = vdpbusd(ah[t], hi, bcast4(a + 32 + 4 * s));
                    }
                }
                for (int t = 0; t < TB; t++)
                    sumi[t] = _mm256_add_epi32(
                        sumi[t], _mm256_add_epi32(_mm256_mullo_epi32(al[t], sc[2 * j]),
                                                  _mm256_mullo_epi32(ah[t], sc[2 * j + 1])));
            }
            __m256i mnw[4];
            k4_min_pairs((const uint8_t(*)[16])sm[1], h, mnw);
            for (int t = 0; t < TB; t++)
                k4_accumulate(out + 16 * t + 8 * h, accm[t] + 8 * h, sumi[t],
                              (const block_q8_K *)x[t] + b, dv, dmv, mnw);
        }
    }
    k4_finish(out, (const float(*)[16])accm, TB);
}

static void uk_q4K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q4K(K, w, x, out, VNNI_TB);
}

/* ------------------------------------------------------------------ Q6_K */

/* Q6_K x16 (repack.c's dot_row_q6_K order), x86_avx512.c's tile_x16_q6K
 * with VNNI per row half: per super-block and token the exact integer sum
 * over the 16 sub-blocks of scale * (sum of q * a - 32 * bsum), the chain
 * of a sub-block started at -32 * bsum (the 6-bit values enter as u8
 * 0..63), then one FMA with d * d_a. The four 6-bit vectors of a slice
 * are assembled from its ql and qh bytes as the AVX-512 kernel does
 * (13 ops for 4 vectors; sel takes the low nibble from its first operand,
 * bits 4-7 from the second). */
CS_INLINE __m256i q6_sel8(__m256i lo, __m256i hi, __m256i m4) {
    return _mm256_or_si256(_mm256_and_si256(lo, m4), _mm256_andnot_si256(m4, hi));
}

CS_INLINE void tile_q6K(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f), m63 = _mm256_set1_epi8(63);
    zero_out(out, TB);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q6K_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q6K_BLOCK);
        for (int hr = 0; hr < 2; hr++) { /* row half */
            __m256i sumi[VNNI_TB_MAX];
            for (int t = 0; t < TB; t++) sumi[t] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++)
                for (int g = 0; g < 2; g++)
                    for (int m = 0; m < 4; m++) {
                        __m256i v[4]; /* the 4 slices u of field m */
                        for (int u = 0; u < 4; u++) {
                            const uint8_t *c = blk + x16_q6K_quant_off(h, g, u) + 32 * hr;
                            const __m256i A = _mm256_loadu_si256((const __m256i *)(const void *)c);
                            const __m256i B =
                                _mm256_loadu_si256((const __m256i *)(const void *)(c + 64));
                            const __m256i H =
                                _mm256_loadu_si256((const __m256i *)(const void *)(c + 128));
                            __m256i f;
                            if (m == 0)
                                f = q6_sel8(A, _mm256_slli_epi16(H, 4), m4);
                            else if (m == 1)
                                f = q6_sel8(B, _mm256_slli_epi16(H, 2), m4);
                            else if (m == 2)
                                f = q6_sel8(_mm256_srli_epi16(A, 4), H, m4);
                            else
                                f = q6_sel8(_mm256_srli_epi16(B, 4), _mm256_srli_epi16(H, 2), m4);
                            v[u] = _mm256_and_si256(f, m63);
                        }
                        const int sb = 8 * h + 2 * m + g;
                        const __m256i scv = _mm256_cvtepi8_epi32(
                            half8(_mm_loadu_si128(
                                      (const __m128i *)(const void *)(blk + x16_q6K_scale_off(sb))),
                                  hr));
                        for (int t = 0; t < TB; t++) {
                            const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                            const int8_t *a = ab->qs + 128 * h + 32 * m + 16 * g;
                            __m256i ai = _mm256_set1_epi32(-32 * (int32_t)ab->bsums[sb]);
                            for (int u = 0; u < 4; u++) ai = vdpbusd(ai, v[u], bcast4(a + 4 * u));
                            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_mullo_epi32(ai, scv));
                        }
                    }
            const __m256 dv = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + CS_X16_Q6K_D + 16 * hr)));
            for (int t = 0; t < TB; t++) {
                const __m256 dy = _mm256_set1_ps(((const block_q8_K *)x[t])[b].d);
                float *o = out + 16 * t + 8 * hr;
                _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]),
                                                    _mm256_mul_ps(dv, dy), _mm256_loadu_ps(o)));
            }
        }
    }
}

static void uk_q6K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q6K(K, w, x, out, VNNI_TB8);
}

/* ------------------------------------------------------------------ Q5_K */

/* Q5_K x16 (repack.c's dot_row_k4 order), x16_q5k_avx512.c's tile with
 * VNNI per row half: sub-block s = 2j + hi at a time, the 8 level vectors
 * (one per lane k: the nibble of qs slice (j, k), plus 16 where bit s of
 * lane k's qh slice is set) built once for the TB tokens; per token 8
 * vpdpbusd (two chains; |dot| <= 32 * 31 * 128) and one vpmulld by the
 * sub-block's 6-bit scale into sumi. The mins as in x16_q5k_avx2.c (word
 * pairs against the token's 32-element sums). Then acc = fma(sumi, d *
 * d_a, acc), accm = fma(summ, dmin * d_a, accm), the output acc - accm. */
CS_INLINE void tile_q5K(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f), m16 = _mm256_set1_epi8(0x10);
    float accm[VNNI_TB_MAX][16];
    for (int t = 0; t < TB; t++)
        for (int r = 0; r < 16; r++) out[16 * t + r] = accm[t][r] = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q5K_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q5K_BLOCK);
        uint8_t sm[2][8][16];
        k4_scales(blk, sm);
        for (int h = 0; h < 2; h++) {
            const __m256 dv =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * h)));
            const __m256 mv = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * h)));
            __m256i sumi[VNNI_TB_MAX];
            for (int t = 0; t < TB; t++) sumi[t] = _mm256_setzero_si256();
            for (int j = 0; j < 4; j++)
                for (int hi = 0; hi < 2; hi++) {
                    const int sb = 2 * j + hi;
                    __m256i lv[8];
                    for (int k = 0; k < 8; k++) {
                        const uint8_t *q = blk + 256 + (size_t)k * 320 + 32 * h;
                        const __m256i H = _mm256_loadu_si256((const __m256i *)(const void *)q);
                        const __m256i Q =
                            _mm256_loadu_si256((const __m256i *)(const void *)(q + 64 + 64 * j));
                        /* bit sb of the qh byte to bit 4 (16-bit shifts of
                         * at most 4 bring no bit across a byte to bit 4) */
                        const __m256i hb =
                            sb <= 4 ? _mm256_slli_epi16(H, 4 - sb) : _mm256_srli_epi16(H, sb - 4);
                        lv[k] =
                            _mm256_or_si256(_mm256_and_si256(hi ? _mm256_srli_epi16(Q, 4) : Q, m4),
                                            _mm256_and_si256(hb, m16));
                    }
                    const __m256i sc = k4_lanes(sm[0][sb], h);
                    for (int t = 0; t < TB; t++) {
                        const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 64 * j + 32 * hi;
                        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
                        for (int k = 0; k < 8; k += 2) {
                            a0 = vdpbusd(a0, lv[k], bcast4(a + 4 * k));
                            a1 = vdpbusd(a1, lv[k + 1], bcast4(a + 4 * k + 4));
                        }
                        sumi[t] = _mm256_add_epi32(
                            sumi[t], _mm256_mullo_epi32(_mm256_add_epi32(a0, a1), sc));
                    }
                }
            __m256i mnw[4];
            k4_min_pairs((const uint8_t(*)[16])sm[1], h, mnw);
            for (int t = 0; t < TB; t++)
                k4_accumulate(out + 16 * t + 8 * h, accm[t] + 8 * h, sumi[t],
                              (const block_q8_K *)x[t] + b, dv, mv, mnw);
        }
    }
    k4_finish(out, (const float(*)[16])accm, TB);
}

static void uk_q5K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q5K(K, w, x, out, VNNI_TB8);
}

/* ---------------------------------------------------------------- IQ4_XS */

/* IQ4_XS x16 (d[16] f16 at 0, scales_h[16] at 32, scales_l planes [4][16]
 * at 64, qs [32 slices][16 rows][4] at 128), x16_kquants_avx512.c's tile
 * with VNNI per row half: per sub-block the levels + 128 (u8, one vpshufb
 * per nibble vector) of the 8 rows are looked up once for the TB tokens;
 * per token two vpdpbusd chains started at -128 * (the sub-block's
 * activation sum) end at its exact dot, times ls - 32 (vpmulld) into the
 * super-block's isum; then acc = acc + (d_w * d_a) * isum. */
CS_INLINE void tile_iq4xs(int64_t K, const void *const *w, const void *const *x, float *out,
                          const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m128i t16 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)iq4nl_values),
                                      _mm_set1_epi8((char)0x80)); /* level + 128 */
    const __m256i tbl = _mm256_broadcastsi128_si256(t16);
    zero_out(out, TB);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_IQ4XS_BLOCK;
        x16_pf_col(TB, blk, CS_X16_IQ4XS_BLOCK);
        const uint8_t *qs = blk + 128;
        for (int h = 0; h < 2; h++) {
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * h)));
            const __m256i sh = _mm256_cvtepu16_epi32(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * h)));
            __m256i isum[VNNI_TB_MAX];
            for (int t = 0; t < TB; t++) isum[t] = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++) {
                const __m256i pl = _mm256_cvtepu8_epi32(half8(
                    _mm_loadu_si128((const __m128i *)(const void *)(blk + 64 + 16 * (j / 2))), h));
                const __m256i lo =
                    _mm256_and_si256(_mm256_srli_epi32(pl, 4 * (j % 2)), _mm256_set1_epi32(0xF));
                const __m256i hi = _mm256_slli_epi32(
                    _mm256_and_si256(_mm256_srli_epi32(sh, 2 * j), _mm256_set1_epi32(3)), 4);
                const __m256i ls = _mm256_sub_epi32(_mm256_or_si256(lo, hi), _mm256_set1_epi32(32));
                __m256i wl[4], wh[4];
                for (int s = 0; s < 4; s++) {
                    const __m256i raw = _mm256_loadu_si256(
                        (const __m256i *)(const void *)(qs + (size_t)(4 * j + s) * 64 + 32 * h));
                    wl[s] = _mm256_shuffle_epi8(tbl, _mm256_and_si256(raw, m4));
                    wh[s] =
                        _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4));
                }
                for (int t = 0; t < TB; t++) {
                    const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                    const int8_t *a = ab->qs + 32 * j;
                    __m256i s0 = _mm256_set1_epi32(
                        -128 * ((int32_t)ab->bsums[2 * j] + (int32_t)ab->bsums[2 * j + 1]));
                    __m256i s1 = _mm256_setzero_si256();
                    for (int s = 0; s < 4; s++) {
                        s0 = vdpbusd(s0, wl[s], bcast4(a + 4 * s));
                        s1 = vdpbusd(s1, wh[s], bcast4(a + 16 + 4 * s));
                    }
                    isum[t] =
                        _mm256_add_epi32(isum[t], _mm256_mullo_epi32(_mm256_add_epi32(s0, s1), ls));
                }
            }
            for (int t = 0; t < TB; t++) {
                const __m256 d = _mm256_mul_ps(dw, _mm256_set1_ps(((const block_q8_K *)x[t])[b].d));
                float *o = out + 16 * t + 8 * h;
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o),
                                                  _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum[t]))));
            }
        }
    }
}

static void uk_iq4xs_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_iq4xs(K, w, x, out, VNNI_TB);
}

/* ------------------------------------------------------------------ Q3_K */

/* Q3_K x16 (repack.h: d[16] f16, 12 scale planes at 32, then per lane k at
 * 224 + 192 k the hmask slice and the qs slices of halves h = 0, 1),
 * x16_kquants_avx512.c's VNNI tile per row half: per sub-block j = 8h +
 * 2g + half the 4 weight vectors hold level + 4 (u8 0..7: the 2 low bits
 * from qs >> 2g, bit 2 from hmask bit 4h + g moved by one shift); per
 * token the sub-block's chain starts at -4 * bsums[j], so after 4
 * vpdpbusd it is the exact sum of level * a (|.| <= 16 * 4 * 128 = 8192, a
 * signed word), which one vpdpwssd scales by s - 32 (the low word of its
 * lane) into isum; then acc = acc + (d_a * d_w) * isum. */
CS_INLINE void tile_q3K(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m3 = _mm256_set1_epi8(3), c4 = _mm256_set1_epi8(4);
    const __m128i f = _mm_set1_epi8(0xF), t3 = _mm_set1_epi8(3);
    zero_out(out, TB);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q3K_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q3K_BLOCK);
        for (int hr = 0; hr < 2; hr++) {
            /* the 8 rows' scales s - 32 of sub-block j, in the low word */
            __m256i scw[16];
            for (int j = 0; j < 16; j++) {
                const __m128i p0 = half8(
                    _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * (j & 7))), hr);
                const __m128i p8 = half8(
                    _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * (8 + j % 4))),
                    hr);
                const __m128i lo = _mm_and_si128(j < 8 ? p0 : _mm_srli_epi16(p0, 4), f);
                const __m128i hi = _mm_and_si128(_mm_srli_epi16(p8, 2 * (j / 4)), t3);
                scw[j] = _mm256_and_si256(
                    _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_or_si128(lo, _mm_slli_epi16(hi, 4))),
                                     _mm256_set1_epi32(32)),
                    _mm256_set1_epi32(0xFFFF));
            }
            __m256i isum[VNNI_TB_MAX];
            for (int t = 0; t < TB; t++) isum[t] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++)
                for (int g = 0; g < 4; g++)
                    for (int half = 0; half < 2; half++) {
                        const int j = 8 * h + 2 * g + half, sh = 4 * h + g - 2;
                        __m256i wv[4];
                        for (int kk = 0; kk < 4; kk++) {
                            const uint8_t *q = blk + 224 + (size_t)(4 * half + kk) * 192 + 32 * hr;
                            const __m256i hm = _mm256_loadu_si256((const __m256i *)(const void *)q);
                            const __m256i qs = _mm256_loadu_si256(
                                (const __m256i *)(const void *)(q + 64 + 64 * h));
                            /* hmask bit 4h + g to bit 2: a 16-bit shift by at
                             * most 5 right or 2 left brings no other byte's
                             * bit there */
                            const __m256i hb =
                                sh >= 0 ? _mm256_srli_epi16(hm, sh) : _mm256_slli_epi16(hm, -sh);
                            wv[kk] = _mm256_or_si256(
                                _mm256_and_si256(g ? _mm256_srli_epi16(qs, 2 * g) : qs, m3),
                                _mm256_and_si256(hb, c4));
                        }
                        const int e0 = 32 * h + 8 * g + 4 * half; /* 4-element group of kk = 0 */
                        for (int t = 0; t < TB; t++) {
                            const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                            __m256i dd = _mm256_set1_epi32(-4 * (int32_t)ab->bsums[j]);
                            for (int kk = 0; kk < 4; kk++)
                                dd = vdpbusd(dd, wv[kk], bcast4(ab->qs + 4 * (e0 + kk)));
                            isum[t] = vdpwssd(isum[t], dd, scw[j]);
                        }
                    }
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * hr)));
            for (int t = 0; t < TB; t++) {
                const __m256 d = _mm256_mul_ps(_mm256_set1_ps(((const block_q8_K *)x[t])[b].d), dw);
                float *o = out + 16 * t + 8 * hr;
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o),
                                                  _mm256_mul_ps(_mm256_cvtepi32_ps(isum[t]), d)));
            }
        }
    }
}

static void uk_q3K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q3K(K, w, x, out, VNNI_TB8);
}

/* ------------------------------------------------------------------ Q2_K */

/* Q2_K x16 (repack.h: d[16], dmin[16] f16, 8 scale slices of 16 rows x 2
 * bytes at 64, then per lane k at 320 + 128 k the two qs slices of element
 * halves h), x16_kquants_avx512.c's tile per row half: the weight bytes s
 * * q (scale 0..15 times level 0..3, at most 45) come from one vpshufb
 * of a table of s_r * level per 128-bit lane (4 rows x 4 levels), built
 * per scale slice; one vpdpbusd per token adds them to isum. The mins:
 * vpdpwssd of the high nibbles of the scale bytes (words) against the
 * bsums pairs. Then acc = acc + (-d_a * dmin) * summs and acc = acc +
 * (d_a * d) * isum, each a multiply and an add. */
CS_INLINE void tile_q2K(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m3 = _mm256_set1_epi8(3), m15 = _mm256_set1_epi8(15);
    /* byte b of dword r: 4 (r mod 4), the row's offset in its table */
    const __m256i rowc = _mm256_set_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0, 0x0C0C0C0C,
                                          0x08080808, 0x04040404, 0);
    const __m256i odd = _mm256_set1_epi32((int)0xFF00FF00),
                  hi2 = _mm256_set1_epi32((int)0xFFFF0000);
    zero_out(out, TB);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q2K_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q2K_BLOCK);
        for (int hr = 0; hr < 2; hr++) {
            __m256i isum[VNNI_TB_MAX];
            for (int t = 0; t < TB; t++) isum[t] = _mm256_setzero_si256();
            /* lanes k < 4 take the low nibble of scale byte 0, k >= 4 of
             * byte 1; group (h, g) = slice 4h + g */
            for (int u = 0; u < 2; u++)
                for (int sl = 0; sl < 8; sl++) {
                    const int h = sl / 4, g = sl % 4;
                    const __m256i sv = _mm256_cvtepu16_epi32(_mm_loadu_si128(
                        (const __m128i *)(const void *)(blk + 64 + 32 * sl + 16 * hr)));
                    const __m256i sc = _mm256_and_si256(
                        _mm256_shuffle_epi8(sv, _mm256_add_epi8(rowc, _mm256_set1_epi8((char)u))),
                        m15);
                    /* level 1, 3: s; level 2, 3: + 2s */
                    const __m256i tbl = _mm256_add_epi8(
                        _mm256_and_si256(sc, odd), _mm256_and_si256(_mm256_add_epi8(sc, sc), hi2));
                    for (int k = 4 * u; k < 4 * u + 4; k++) {
                        const __m256i qv = _mm256_loadu_si256(
                            (const __m256i *)(const void *)(blk + 320 + (size_t)k * 128 + 64 * h +
                                                            32 * hr));
                        const __m256i qg = g ? _mm256_srli_epi16(qv, 2 * g) : qv;
                        const __m256i wv = _mm256_shuffle_epi8(
                            tbl, _mm256_or_si256(_mm256_and_si256(qg, m3), rowc));
                        const int e = 32 * h + 8 * g + k;
                        for (int t = 0; t < TB; t++)
                            isum[t] = vdpbusd(isum[t], wv,
                                              bcast4(((const block_q8_K *)x[t])[b].qs + 4 * e));
                    }
                }
            /* the mins: the high nibbles of scale slice k as words */
            __m256i mn[8];
            for (int k = 0; k < 8; k++)
                mn[k] = _mm256_srli_epi16(
                    _mm256_cvtepu8_epi16(_mm_loadu_si128(
                        (const __m128i *)(const void *)(blk + 64 + 32 * k + 16 * hr))),
                    4);
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * hr)));
            const __m256 mw = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * hr)));
            for (int t = 0; t < TB; t++) {
                const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                __m256i msum = _mm256_setzero_si256();
                for (int k = 0; k < 8; k++) {
                    int32_t bs;
                    memcpy(&bs, ab->bsums + 2 * k, 4);
                    msum = vdpwssd(msum, mn[k], _mm256_set1_epi32(bs));
                }
                const __m256 d = _mm256_mul_ps(_mm256_set1_ps(ab->d), dw);
                const __m256 dm = _mm256_mul_ps(_mm256_set1_ps(-ab->d), mw);
                float *o = out + 16 * t + 8 * hr;
                __m256 acc = _mm256_loadu_ps(o);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(msum), dm));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(isum[t]), d));
                _mm256_storeu_ps(o, acc);
            }
        }
    }
}

static void uk_q2K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q2K(K, w, x, out, VNNI_TB);
}

/* ------------------------------- blocks of 32: Q8_0, Q4_0, Q5_0, Q4_1, Q5_1, IQ4_NL */

enum { B32_Q8_0, B32_Q4_0, B32_Q5_0, B32_Q4_1, B32_Q5_1, B32_IQ4_NL };

/* The types of 32-element blocks, the VNNI tiles of x86_avx512.c
 * (tile_x16) and x16_legacy_avx512.c per row half, in their references'
 * order: per block and row the exact integer sum, then acc = acc + (d_w *
 * d_x) * isum (Q4_0: fma(isum, d_w * d_x, acc)); Q4_1 / Q5_1 also summ =
 * fma(m_w, s_x, summ), added at the end. The block's 8 weight vectors
 * (vector k: elements 4k .. 4k + 3 of the 16 rows) are built once for the
 * TB tokens: Q8_0's stored bytes w + 128, or the nibbles of slice k & 3
 * (low for k < 4) with Q5's high bit at 0x10, or IQ4_NL's levels + 128
 * (one vpshufb). All but Q4_1 / Q5_1 start at the aux correction
 * (matmul.h: -128, -8, -16 or -128 times sum(q)). */
CS_INLINE void tile_b32(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB, const int kind) {
    const int nib = kind != B32_Q8_0, nl = kind == B32_IQ4_NL;
    const int has_h = kind == B32_Q5_0 || kind == B32_Q5_1,
              has_m = kind == B32_Q4_1 || kind == B32_Q5_1;
    const int64_t nb = K / CS_QK_LEGACY;
    /* the x16 block: Q5_0 / Q4_1 / Q5_1's parts (repack.h), else d then the slices */
    const int lg = kind == B32_Q5_0 || has_m;
    const x16_legacy_parts lp = repack_x16_legacy_parts(kind == B32_Q5_0   ? CS_TYPE_Q5_0
                                                        : kind == B32_Q4_1 ? CS_TYPE_Q4_1
                                                                           : CS_TYPE_Q5_1);
    const size_t gb = lg ? lp.size : nib ? CS_X16_Q4_BLOCK : CS_X16_Q8_BLOCK;
    const size_t off_q = lg ? lp.qs : 32, off_h = lp.high;
    const size_t xb = has_m ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t aux_off = matmul_x16_aux_offset(K);
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f), b4 = _mm256_set1_epi8(0x10);
    const __m256i lut = _mm256_broadcastsi128_si256(
        _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)iq4nl_values),
                      _mm_set1_epi8((char)0x80))); /* level + 128 */
    float summ[VNNI_TB_MAX][16];
    zero_out(out, TB);
    if (has_m) zero_out(&summ[0][0], TB);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * gb;
        x16_pf_col(TB, blk, gb);
        for (int hr = 0; hr < 2; hr++) {
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * hr)));
            const __m256 mw = has_m ? _mm256_cvtph_ps(_mm_loadu_si128(
                                          (const __m128i *)(const void *)(blk + 32 + 16 * hr)))
                                    : dw;
            const __m256i H =
                has_h ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + off_h + 32 * hr))
                      : _mm256_setzero_si256();
            __m256i wq[8];
            for (int k = 0; k < 8; k++) {
                const uint8_t *sl = blk + off_q + 64 * (nib ? k & 3 : k) + 32 * hr;
                __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)sl);
                if (nib) q = _mm256_and_si256(k < 4 ? q : _mm256_srli_epi16(q, 4), m4);
                if (has_h) {
                    const __m256i hs =
                        k <= 4 ? _mm256_slli_epi32(H, 4 - k) : _mm256_srli_epi32(H, k - 4);
                    q = _mm256_or_si256(q, _mm256_and_si256(hs, b4));
                }
                wq[k] = nl ? _mm256_shuffle_epi8(lut, q) : q;
            }
            for (int t = 0; t < TB; t++) {
                const uint8_t *xbk = (const uint8_t *)x[t] + (size_t)b * xb;
                const int8_t *xq = (const int8_t *)(xbk + (has_m ? 4 : 2));
                __m256i ai = _mm256_setzero_si256();
                float dx;
                if (has_m) {
                    uint16_t hv[2];
                    memcpy(hv, xbk, 4);
                    dx = _cvtsh_ss(hv[0]);
                    float *sm = summ[t] + 8 * hr;
                    _mm256_storeu_ps(sm, _mm256_fmadd_ps(mw, _mm256_set1_ps(_cvtsh_ss(hv[1])),
                                                         _mm256_loadu_ps(sm)));
                } else {
                    const matmul_x16_aux *a =
                        (const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b;
                    dx = a->d;
                    ai = _mm256_set1_epi32(a->corr);
                }
                for (int k = 0; k < 8; k++) ai = vdpbusd(ai, wq[k], bcast4(xq + 4 * k));
                const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
                const __m256 f = _mm256_cvtepi32_ps(ai);
                float *o = out + 16 * t + 8 * hr;
                const __m256 acc = _mm256_loadu_ps(o);
                _mm256_storeu_ps(o, kind == B32_Q4_0 ? _mm256_fmadd_ps(f, sc, acc)
                                                     : _mm256_add_ps(acc, _mm256_mul_ps(f, sc)));
            }
        }
    }
    if (has_m)
        for (int t = 0; t < 2 * TB; t++)
            _mm256_storeu_ps(out + 8 * t, _mm256_add_ps(_mm256_loadu_ps(out + 8 * t),
                                                        _mm256_loadu_ps(&summ[0][0] + 8 * t)));
}

#define B32_TILE(name, kind)                                                                       \
    static void uk_##name##_tile(int64_t K, const void *const *w, const void *const *x,            \
                                 float *out) {                                                     \
        tile_b32(K, w, x, out, VNNI_TB, kind);                                                     \
    }
B32_TILE(q8, B32_Q8_0)
B32_TILE(q4, B32_Q4_0)
B32_TILE(q5_0, B32_Q5_0)
B32_TILE(q4_1, B32_Q4_1)
B32_TILE(q5_1, B32_Q5_1)
B32_TILE(iq4nl, B32_IQ4_NL)

/* --------------------------------------------------------------- table */

/* Only the tiles: the decode columns (T = 1) stay the AVX2 table's, which
 * read faster at one token (110M tg64, 1 thread, "avxvnni_evex" with this
 * file's kernel at TB = 1 against the AVX2 column, 2 alternating runs:
 * Q8_0 187 / 178 against 203 / 197 t/s, Q6_K 191 / 179 against 218 /
 * 249); a token is bound by memory there, and either is exact. */
void VNNI_FN(kernels_x16_avxvnni)(kernels_table *k) {
    matmul_ukernel *u = k->ukernel_x16; /* the AVX2 table's, no tile2 */
    u[CS_TYPE_Q8_0] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB, uk_q8_tile, u[CS_TYPE_Q8_0].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q4_0] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB, uk_q4_tile, u[CS_TYPE_Q4_0].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q4_K] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB, uk_q4K_tile, u[CS_TYPE_Q4_K].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q6_K] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB8, uk_q6K_tile, u[CS_TYPE_Q6_K].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q5_K] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB8, uk_q5K_tile, u[CS_TYPE_Q5_K].col, 0, NULL, 0, NULL};
    u[CS_TYPE_IQ4_XS] = (matmul_ukernel){
        CS_X16_ROWS, VNNI_TB, uk_iq4xs_tile, u[CS_TYPE_IQ4_XS].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q3_K] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB8, uk_q3K_tile, u[CS_TYPE_Q3_K].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q2_K] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB, uk_q2K_tile, u[CS_TYPE_Q2_K].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q5_0] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB, uk_q5_0_tile, u[CS_TYPE_Q5_0].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q4_1] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB, uk_q4_1_tile, u[CS_TYPE_Q4_1].col, 0, NULL, 0, NULL};
    u[CS_TYPE_Q5_1] =
        (matmul_ukernel){CS_X16_ROWS, VNNI_TB, uk_q5_1_tile, u[CS_TYPE_Q5_1].col, 0, NULL, 0, NULL};
    u[CS_TYPE_IQ4_NL] = (matmul_ukernel){
        CS_X16_ROWS, VNNI_TB, uk_iq4nl_tile, u[CS_TYPE_IQ4_NL].col, 0, NULL, 0, NULL};
}

#endif /* x86 */
