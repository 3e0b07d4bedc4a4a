/* x16_kquants_avx512.c: AVX-512 micro-kernels for x16-packed (repack.h)
 * IQ4_XS weights against Q8_K activations. Compiled with the AVX-512 flags
 * of x86_avx512.c; entered only through the AVX-512 tables, and the VNNI
 * variants only when cpuid reports AVX512_VNNI (x86_avx512.c's init).
 *
 * Numerics: each 32-element sub-block's integer sum is exact on every path
 * (VNNI on levels + 128 with the -128 * bsum correction, or maddubs on
 * |a| and sign-moved levels); times its scale ls - 32 it is added into
 * the super-block's exact int32 sum, which is scaled and accumulated in
 * the order of the reference dot, vec_dot_iq4_xs_q8_K_ref: sum = sum +
 * (d_w * d_a) * isum (multiply, then add), super-block after super-block.
 * So the result equals repack_x16_dot_ref and the reference table's
 * row-major dot bit for bit. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "iquants.h"
#include "kquants.h"
#include "repack.h"
#include "simd_x86.h"
#include "matmul.h"

/* acc += per-lane sum of 4 products of the weight bytes w and the 4 s8
 * activation bytes at p (broadcast). VNNI: w holds level + 128 as u8 (the
 * caller starts acc at the -128 * sum(a) correction). Otherwise w holds
 * the signed level: maddubs(|a|, sign(a) * w), |a| <= 128 and |w| <= 127,
 * so a pair sum stays below 2^15; exact int32 either way. */
CS_INLINE __m512i dp_iq4(__m512i acc, __m512i w, const int8_t *p, const int vnni) {
    if (vnni) return dpbusd_bcast(acc, w, p);
    const __m512i a = bcast4_512(p);
    const __mmask64 neg = _mm512_movepi8_mask(a);
    const __m512i sw = _mm512_mask_sub_epi8(w, neg, _mm512_setzero_si512(), w);
    return _mm512_add_epi32(
        acc, _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(a), sw), _mm512_set1_epi16(1)));
}

/* Sub-block j's scale ls - 32 of the 16 rows as int32 lanes: the low 4
 * bits from nibble j % 2 of plane j / 2 (blk + 64), the high 2 from bits
 * 2j of the row's word in sh (scales_h widened, blk + 32), moved to bits
 * 4-5 by one shift and a mask. 5 vector ops and a load-op widening. */
CS_INLINE __m512i iq4xs_scale(const uint8_t *blk, __m512i sh, const int j) {
    const __m512i pl = _mm512_cvtepu8_epi32(
        _mm_loadu_si128((const __m128i *)(const void *)(blk + 64 + 16 * (j / 2))));
    const __m512i hi = _mm512_and_si512(j <= 2 ? _mm512_slli_epi32(sh, 4 - 2 * j)
                                               : _mm512_srli_epi32(sh, 2 * j - 4),
                                        _mm512_set1_epi32(0x30));
    const __m512i lo =
        j % 2 ? _mm512_srli_epi32(pl, 4) : _mm512_and_si512(pl, _mm512_set1_epi32(0xF));
    return _mm512_sub_epi32(_mm512_or_si512(lo, hi), _mm512_set1_epi32(32));
}

/* Tokens per IQ4_XS tile call. */
#define X16_IQ4XS_TB 4

/* IQ4_XS x16 block (CS_X16_IQ4XS_BLOCK bytes): d[16] f16 at 0, scales_h[16]
 * at 32, scales_l planes [4][16] at 64, qs [32 slices][16 rows][4] at 128.
 * Per sub-block the levels of the 16 rows (4 slices, low and high nibbles)
 * are looked up once and shared by the TB tokens. */
CS_INLINE void tile_x16_iq4xs(int64_t K, const void *const *w, const void *const *x, float *out,
                              const int TB, const int vnni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m128i t = _mm_loadu_si128((const __m128i *)(const void *)iq4nl_values);
    if (vnni) t = _mm_xor_si128(t, _mm_set1_epi8((char)0x80)); /* level + 128 */
    const __m512i tbl = _mm512_broadcast_i32x4(t);
    __m512 acc[X16_IQ4XS_TB];
    for (int i = 0; i < TB; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_IQ4XS_BLOCK;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const __m512i sh =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 32)));
        const uint8_t *qs = blk + 128;
        __m512 d[X16_IQ4XS_TB];
        __m512i isum[X16_IQ4XS_TB]; /* the super-block's exact integer sums, as the reference */
        for (int i = 0; i < TB; i++) {
            d[i] = _mm512_mul_ps(dw, _mm512_set1_ps(((const block_q8_K *)x[i])[b].d));
            isum[i] = _mm512_setzero_si512();
        }
        for (int j = 0; j < 8; j++) {
            /* the block after next, 34 lines: 5 per sub-block */
            for (int k = 0; k < 5 && 5 * j + k < 34; k++)
                X16_PF_TILE(TB,
                            (const char *)(blk + 2 * CS_X16_IQ4XS_BLOCK + (size_t)(5 * j + k) * 64),
                            _MM_HINT_T0);
            const __m512i ls = iq4xs_scale(blk, sh, j);
            __m512i wl[4], wh[4];
            for (int s = 0; s < 4; s++) {
                const __m512i raw = x16_load((const void *)(qs + (size_t)(4 * j + s) * 64));
                wl[s] = _mm512_shuffle_epi8(tbl, _mm512_and_si512(raw, m4));
                wh[s] = _mm512_shuffle_epi8(tbl, _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4));
            }
            for (int i = 0; i < TB; i++) {
                const block_q8_K *ab = (const block_q8_K *)x[i] + b;
                const int8_t *a = ab->qs + 32 * j;
                /* two chains: dpbusd latency bounds T = 1 otherwise */
                __m512i s0 = vnni ? _mm512_set1_epi32(-128 * ((int32_t)ab->bsums[2 * j] +
                                                              (int32_t)ab->bsums[2 * j + 1]))
                                  : _mm512_setzero_si512();
                __m512i s1 = _mm512_setzero_si512();
                for (int s = 0; s < 4; s++) {
                    s0 = dp_iq4(s0, wl[s], a + 4 * s, vnni);
                    s1 = dp_iq4(s1, wh[s], a + 16 + 4 * s, vnni);
                }
                isum[i] =
                    _mm512_add_epi32(isum[i], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), ls));
            }
        }
        for (int i = 0; i < TB; i++)
            acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(d[i], _mm512_cvtepi32_ps(isum[i])));
    }
    for (int i = 0; i < TB; i++) _mm512_storeu_ps(out + 16 * i, acc[i]);
}

static void uk_x16_iq4xs_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_iq4xs(K, w, x, out, X16_IQ4XS_TB, 0);
}
static void uk_x16_iq4xs_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_iq4xs(K, w, &x, out, 1, 0);
}
static void uk_x16_iq4xs_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                   float *out) {
    tile_x16_iq4xs(K, w, x, out, X16_IQ4XS_TB, 1);
}
/* The VNNI decode column: the tile's integers and float steps (so its
 * result bit for bit) with fewer instructions per weight line. With VBMI
 * each nibble's level + 128 is one vpermb: the 16-entry table repeated in
 * the 4 lanes is a 64-entry table indexed by bits 0-5, of which only 0-3
 * select, so neither the low nibble nor the 16-bit-shifted high one needs
 * a mask (3 ops per line instead of 5). The -128 * bsum start of a
 * sub-block's chain is one broadcast load from a vector formed once per
 * super-block (was three scalar ops). bench_kernels iq4_xs
 * T = 1 (1 thread, from cache): 160 -> 185 GFLOP/s with the vpermb alone. */
CS_INLINE void col_x16_iq4xs_vnni(int64_t K, const void *const *w, const void *x, float *out,
                                  const int vbmi) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i tbl = _mm512_broadcast_i32x4(_mm_xor_si128(
        _mm_loadu_si128((const __m128i *)(const void *)iq4nl_values), _mm_set1_epi8((char)0x80)));
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_IQ4XS_BLOCK;
        x16_pf_col(1, blk, CS_X16_IQ4XS_BLOCK);
        const block_q8_K *ab = (const block_q8_K *)x + b;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(ab->d));
        const __m512i sh =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 32)));
        /* -128 * (the sub-block's activation sum), sub-block j in corr[j] */
        int32_t corr[8];
        _mm256_storeu_si256(
            (__m256i *)(void *)corr,
            _mm256_sub_epi32(_mm256_setzero_si256(),
                             _mm256_slli_epi32(_mm256_cvtepi16_epi32(q8k_sums32(ab->bsums)), 7)));
        const uint8_t *qs = blk + 128;
        __m512i isum = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            const __m512i ls = iq4xs_scale(blk, sh, j);
            const int8_t *a = ab->qs + 32 * j;
            __m512i s0 = _mm512_set1_epi32(corr[j]), s1 = _mm512_setzero_si512();
            for (int s = 0; s < 4; s++) {
                const __m512i raw = x16_load((const void *)(qs + (size_t)(4 * j + s) * 64));
                const __m512i rh = _mm512_srli_epi16(raw, 4);
                const __m512i wl =
                    vbmi ? permb(raw, tbl) : _mm512_shuffle_epi8(tbl, _mm512_and_si512(raw, m4));
                const __m512i wh =
                    vbmi ? permb(rh, tbl) : _mm512_shuffle_epi8(tbl, _mm512_and_si512(rh, m4));
                s0 = dpbusd_bcast(s0, wl, a + 4 * s);
                s1 = dpbusd_bcast(s1, wh, a + 16 + 4 * s);
            }
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), ls));
        }
        acc = _mm512_add_ps(acc, _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum)));
    }
    _mm512_storeu_ps(out, acc);
}
static void uk_x16_iq4xs_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_iq4xs_vnni(K, w, x, out, 0);
}
static void uk_x16_iq4xs_col_vnni_vbmi(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_iq4xs_vnni(K, w, x, out, 1);
}

/* ------------------------------------------------------------- Q3_K */

/* The 16 scales s - 32 of a Q3_K x16 super-block's 16 rows: VNNI s &
 * 0xffff (one word, vpdpwssd), otherwise s in both words (vpmaddwd on a
 * word pair). */
CS_INLINE void q3k_scales(const uint8_t *blk, __m512i scw[16], const int vnni) {
    __m512i pl[12];
    for (int p = 0; p < 12; p++)
        pl[p] = _mm512_cvtepu8_epi32(
            _mm_loadu_si128((const __m128i *)(const void *)(blk + 32 + 16 * p)));
    const __m512i f = _mm512_set1_epi32(0xF), t3 = _mm512_set1_epi32(3);
    for (int j = 0; j < 16; j++) {
        const __m512i lo = j < 8 ? _mm512_and_si512(pl[j], f) : _mm512_srli_epi32(pl[j - 8], 4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(pl[8 + j % 4], 2 * (j / 4)), t3);
        __m512i s =
            _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), _mm512_set1_epi32(32));
        s = _mm512_and_si512(s, _mm512_set1_epi32(0xFFFF));
        scw[j] = vnni ? s : _mm512_or_si512(s, _mm512_slli_epi32(s, 16));
    }
}

/* The 16 unsigned 6-bit scales (0..63, before the -32) of a Q3_K x16
 * super-block from its 12 planes at pl on whole vectors: planes 0-3, 4-7
 * and 8-11 are 3 vectors; scale j's low 4 bits are the low (j < 8) or high
 * nibble of plane j % 8, its high 2 bits bits 2 * (j / 4) of plane 8 +
 * j % 4. sc[16 j + r]: row r's scale j. 13 vector ops; a 16-bit shift
 * moves bits across a byte boundary only into bits the select or the
 * final mask drops. */
CS_INLINE void q3k_scale_bytes(const uint8_t *pl, uint8_t sc[256]) {
    const __m512i m15 = _mm512_set1_epi8(15), m63 = _mm512_set1_epi8(63);
    const __m512i z0 = x16_load(pl), z1 = x16_load(pl + 64), z2 = x16_load(pl + 128);
    /* 0xca: m15 ? a : b per bit (low nibble from a, bits 4-7 from b) */
#define Q3K_SEL(a, b) _mm512_and_si512(_mm512_ternarylogic_epi32(m15, (a), (b), 0xca), m63)
    _mm512_storeu_si512((void *)sc, Q3K_SEL(z0, _mm512_slli_epi16(z2, 4)));
    _mm512_storeu_si512((void *)(sc + 64), Q3K_SEL(z1, _mm512_slli_epi16(z2, 2)));
    _mm512_storeu_si512((void *)(sc + 128), Q3K_SEL(_mm512_srli_epi16(z0, 4), z2));
    _mm512_storeu_si512((void *)(sc + 192),
                        Q3K_SEL(_mm512_srli_epi16(z1, 4), _mm512_srli_epi16(z2, 2)));
#undef Q3K_SEL
}

/* The 64 weight bytes level + 4 (0..7) of group g of half h of one lane
 * (repack.h): the 2 low bits from the lane's qs slice of half h, shifted by
 * 2g, plus 4 where the hmask slice has bit 4h + g. Both columns use it; the
 * tile keeps its own copy of these three steps, which compiled through
 * this helper read 1-3 % slower there (bench_kernels q3_K T = 512: 256-266
 * against 263-265 GFLOP/s). */
CS_INLINE __m512i q3k_level4(__m512i hm, __m512i qs, const int h, const int g) {
    const __m512i q2 = _mm512_and_si512(g ? _mm512_srli_epi16(qs, 2 * g) : qs, _mm512_set1_epi8(3));
    const __mmask64 hb = _mm512_test_epi8_mask(hm, _mm512_set1_epi8((char)(1 << (4 * h + g))));
    return _mm512_mask_add_epi8(q2, hb, q2, _mm512_set1_epi8(4));
}

/* q3k_level4 where the CPU has GFNI (the VNNI column): the hmask bit 4h +
 * g moved to bit 2 with everything else cleared by one gf2p8affine, then
 * one vpternlogd takes bits 0-1 from the qs slice shifted by 2g (a 16-bit
 * shift only brings bits above bit 1) and ors it in: 2-3 vector ops and no
 * mask register, against 3-4 and a vptestmb. Zen 4 runs gf2p8affine on the
 * vpdpbusd pipes, so the tile, bound by those, keeps q3k_level4; the
 * column (bench_kernels q3_K T = 1, 1 thread, from cache) 134 -> 155
 * GFLOP/s. */
CS_INLINE __m512i q3k_level4_gfni(__m512i hm, __m512i qs, const int h, const int g) {
    /* output bit 2 (byte 7 - 2 of the matrix) = input bit 4h + g */
    const __m512i hb =
        gf2p8affine(hm, _mm512_set1_epi64((long long)((uint64_t)1 << (4 * h + g)) << 40));
    /* 0xec: (a & c) | b */
    return _mm512_ternarylogic_epi32(g ? _mm512_srli_epi16(qs, 2 * g) : qs, hb, _mm512_set1_epi8(3),
                                     0xec);
}

/* 16 tokens a call: the level vectors of a sub-block lane are built once
 * for twice the tokens (bench_kernels --peaks q3_K, 1 thread, 3
 * alternating runs: 232-234 -> 263-267 GFLOP/s at 8 -> 16); X16_KQ_TB2
 * (8) for the rest of a batch. */
#define X16_Q3K_TB 16

/* Q3_K x16 (repack.h) in the reference order, vec_dot_q3_K_q8_K_ref: per
 * super-block the exact integer isum = sum over the 16 sub-blocks j of
 * s_j * (q . a over the sub-block's 16 elements), s the signed 6-bit scale,
 * q the signed 3-bit level; then acc += (d_a * d_w) * isum, a multiply and
 * an add. A signed level times a signed scale reaches (-4) * (-32) = 128,
 * which no s8 holds, so the scale is applied to each sub-block's dot: the
 * dot is formed on level + 4 (u8, 0..7) with the -4 * sum(a) correction
 * (VNNI: 4 vpdpbusd from the int32 -4 * bsum, |dot| <= 16 * 4 * 127 =
 * 8128, a signed word; then one vpdpwssd on the scale in the low word;
 * without VNNI: 4 vpmaddubsw summed in int16 (<= 4 * 2 * 7 * 127 = 7112),
 * minus the word pair 4 * (a0 + a1), 4 * (a2 + a3) summed over the 4
 * groups, then vpmaddwd on the scale in both words). The sub-block's
 * elements are the 4 lanes k = 4 * half .. +3 of group (h, g) (repack.h:
 * element 128h + 32g + 4k + i); their level vectors are built once per
 * (h, g, k) and shared by the TB tokens.
 * Cost per token and 16 x 256 weights: 16 x (4 + 1) (VNNI) or 16 x (4 + 3
 * + 2) vector integer ops, 1 conversion, 2 multiplies and 1 add; before
 * (8 float lanes, each 4-element dot scaled) 64 x 2 or 64 x 4 and 8
 * conversions and FMAs. */
CS_INLINE void tile_x16_q3K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int vnni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m3 = _mm512_set1_epi8(3), c4 = _mm512_set1_epi8(4);
    __m512 acc[X16_Q3K_TB];
    for (int t = 0; t < TB; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q3K_BLOCK;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        __m512i scw[16];
        q3k_scales(blk, scw, vnni);
        /* per token and sub-block j: VNNI -4 * bsums[j]; otherwise the word
         * pair sums over the sub-block's 4 groups (each 128-bit lane of a
         * vpmaddubsw(4, a) result is one sub-block: two shuffles add its 4
         * dwords as word pairs) */
        int32_t corr[X16_Q3K_TB][16];
        __m512 d[X16_Q3K_TB];
        const int8_t *xa[X16_Q3K_TB];
        for (int t = 0; t < TB; t++) {
            const block_q8_K *ab = (const block_q8_K *)x[t] + b;
            xa[t] = ab->qs;
            d[t] = _mm512_mul_ps(_mm512_set1_ps(ab->d), dw);
            if (vnni) {
                for (int j = 0; j < 16; j++) corr[t][j] = -4 * (int32_t)ab->bsums[j];
                continue;
            }
            for (int c = 0; c < 4; c++) {
                const __m512i a = _mm512_loadu_si512((const void *)(ab->qs + 64 * c));
                __m512i p = _mm512_maddubs_epi16(c4, a);
                p = _mm512_add_epi16(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC));
                p = _mm512_add_epi16(p, _mm512_shuffle_epi32(p, _MM_PERM_CDAB));
                int32_t v[16];
                _mm512_storeu_si512((void *)v, p);
                for (int l = 0; l < 4; l++) corr[t][4 * c + l] = v[4 * l];
            }
        }
        __m512i isum[X16_Q3K_TB];
        for (int t = 0; t < TB; t++) isum[t] = _mm512_setzero_si512();
        if (b + 2 < nb) /* the block after next, 28 lines */
            for (int l = 0; l < 28; l++)
                X16_PF_TILE(TB, (const char *)(blk + 2 * CS_X16_Q3K_BLOCK + (size_t)l * 64),
                            _MM_HINT_T0);
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 4; g++)
                for (int half = 0; half < 2; half++) {
                    const int j = 8 * h + 2 * g + half;
                    __m512i wv[4];
                    for (int kk = 0; kk < 4; kk++) {
                        const uint8_t *q = blk + 224 + (size_t)(4 * half + kk) * 192;
                        const __m512i hm = x16_load((const void *)q);
                        const __m512i qs = x16_load((const void *)(q + 64 + 64 * h));
                        const __m512i q2 =
                            _mm512_and_si512(g ? _mm512_srli_epi16(qs, 2 * g) : qs, m3);
                        const __mmask64 hb =
                            _mm512_test_epi8_mask(hm, _mm512_set1_epi8((char)(1 << (4 * h + g))));
                        wv[kk] = _mm512_mask_add_epi8(q2, hb, q2, c4); /* level + 4 */
                    }
                    const __m512i sc = scw[j];
                    const int e0 = 32 * h + 8 * g + 4 * half; /* 4-element group of kk = 0 */
                    for (int t = 0; t < TB; t++) {
                        const int8_t *a = xa[t] + 4 * e0;
                        if (vnni) {
                            __m512i dd = _mm512_set1_epi32(corr[t][j]);
                            for (int kk = 0; kk < 4; kk++)
                                dd = dpbusd_bcast(dd, wv[kk], a + 4 * kk);
                            isum[t] = dpwssd(isum[t], dd, sc);
                        } else {
                            __m512i p = _mm512_setzero_si512();
                            for (int kk = 0; kk < 4; kk++) {
                                int32_t v;
                                memcpy(&v, a + 4 * kk, 4);
                                p = _mm512_add_epi16(
                                    p, _mm512_maddubs_epi16(wv[kk], _mm512_set1_epi32(v)));
                            }
                            p = _mm512_sub_epi16(p, _mm512_set1_epi32(corr[t][j]));
                            isum[t] = _mm512_add_epi32(isum[t], _mm512_madd_epi16(p, sc));
                        }
                    }
                }
        for (int t = 0; t < TB; t++)
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_cvtepi32_ps(isum[t]), d[t]));
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

/* Two groups (32 rows) x X16_Q3K_PAIR_TB tokens, VNNI only: per token
 * and sub-block one start value -4 * bsum and 4 register broadcasts serve
 * both groups' vpdpbusd (the 16-row tile: a broadcast load per vpdpbusd).
 * Per output the same exact integers and float steps as tile_x16_q3K:
 * the tile's result bit for bit. 8 tokens (the isums stay in registers):
 * bench_kernels q3_K, T = 512, Zen 5, 5 alternating runs, mean 471 -> 498
 * GFLOP/s at 1 thread (best 497 -> 528); with 16 tokens it was slower
 * than the 16-row tile (best 510 -> 487). */
#define X16_Q3K_PAIR_TB 8
CS_INLINE void tile_x16_q3K_pair(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    const int64_t nb = K / CS_QK_K;
    const int TB = X16_Q3K_PAIR_TB;
    const __m512i m3 = _mm512_set1_epi8(3), c4 = _mm512_set1_epi8(4);
    __m512 acc[2][X16_Q3K_PAIR_TB];
    for (int t = 0; t < TB; t++) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[2] = {(const uint8_t *)w[0] + (size_t)b * CS_X16_Q3K_BLOCK,
                                 (const uint8_t *)w[1] + (size_t)b * CS_X16_Q3K_BLOCK};
        __m512i scw[2][16];
        q3k_scales(blk[0], scw[0], 1);
        q3k_scales(blk[1], scw[1], 1);
        __m512i isum[2][X16_Q3K_PAIR_TB];
        for (int t = 0; t < TB; t++) isum[0][t] = isum[1][t] = _mm512_setzero_si512();
        if (b + 2 < nb) /* the block after next, 28 lines */
            for (int gr = 0; gr < 2; gr++)
                for (int l = 0; l < 28; l++)
                    _mm_prefetch((const char *)(blk[gr] + 2 * CS_X16_Q3K_BLOCK + (size_t)l * 64),
                                 _MM_HINT_T0);
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 4; g++)
                for (int half = 0; half < 2; half++) {
                    const int j = 8 * h + 2 * g + half;
                    __m512i wv[2][4];
                    for (int gr = 0; gr < 2; gr++)
                        for (int kk = 0; kk < 4; kk++) {
                            const uint8_t *q = blk[gr] + 224 + (size_t)(4 * half + kk) * 192;
                            const __m512i hm = x16_load((const void *)q);
                            const __m512i qs = x16_load((const void *)(q + 64 + 64 * h));
                            const __m512i q2 =
                                _mm512_and_si512(g ? _mm512_srli_epi16(qs, 2 * g) : qs, m3);
                            const __mmask64 hb = _mm512_test_epi8_mask(
                                hm, _mm512_set1_epi8((char)(1 << (4 * h + g))));
                            wv[gr][kk] = _mm512_mask_add_epi8(q2, hb, q2, c4); /* level + 4 */
                        }
                    const int e0 = 32 * h + 8 * g + 4 * half; /* 4-element group of kk = 0 */
                    for (int t = 0; t < TB; t++) {
                        const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                        const int8_t *a = ab->qs + 4 * e0;
                        const __m512i corr = _mm512_set1_epi32(-4 * (int32_t)ab->bsums[j]);
                        __m512i d0 = corr, d1 = corr;
                        for (int kk = 0; kk < 4; kk++) {
                            const __m512i xb = bcast4_512(a + 4 * kk);
                            d0 = dpbusd_asm(d0, wv[0][kk], xb);
                            d1 = dpbusd_asm(d1, wv[1][kk], xb);
                        }
                        isum[0][t] = dpwssd(isum[0][t], d0, scw[0][j]);
                        isum[1][t] = dpwssd(isum[1][t], d1, scw[1][j]);
                    }
                }
        const __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk[0]));
        const __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk[1]));
        for (int t = 0; t < TB; t++) {
            const __m512 dy = _mm512_set1_ps(((const block_q8_K *)x[t])[b].d);
            acc[0][t] = _mm512_add_ps(
                acc[0][t], _mm512_mul_ps(_mm512_cvtepi32_ps(isum[0][t]), _mm512_mul_ps(dy, dw0)));
            acc[1][t] = _mm512_add_ps(
                acc[1][t], _mm512_mul_ps(_mm512_cvtepi32_ps(isum[1][t]), _mm512_mul_ps(dy, dw1)));
        }
    }
    for (int t = 0; t < TB; t++) {
        _mm512_storeu_ps(out + 32 * t, acc[0][t]);
        _mm512_storeu_ps(out + 32 * t + 16, acc[1][t]);
    }
}
static void uk_x16_q3K_pair_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q3K_pair(K, w, x, out);
}

/* The columns (one token, a decode step) go lane-major through the layout:
 * per lane k one load of its hmask and qs slices. Why: the tile's
 * sub-block order reloads each lane's slices once per (h, g), 8 times the
 * loads, which a single token cannot amortize (110M Q3_K_M generation ran
 * at 0.8x with it). The super-block's exact integer sum, without VNNI:
 * each 4-element dot scaled on its own (maddubs on level + 4 minus the
 * word pair 4 * (a0 + a1), 4 * (a2 + a3), then vpmaddwd on the scale in
 * both words), two chains (h = 0, 1). */
CS_INLINE __m512i q3k_col_isum(const uint8_t *blk, const block_q8_K *ab, const __m512i scw[16]) {
    int32_t corr[64]; /* per 4-element group e */
    for (int c = 0; c < 4; c++) {
        const __m512i a = _mm512_loadu_si512((const void *)(ab->qs + 64 * c));
        _mm512_storeu_si512((void *)(corr + 16 * c), _mm512_maddubs_epi16(_mm512_set1_epi8(4), a));
    }
    __m512i isum2[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int k = 0; k < 8; k++) {
        const uint8_t *q = blk + 224 + (size_t)k * 192;
        const __m512i hm = x16_load((const void *)q);
        const __m512i qs[2] = {x16_load((const void *)(q + 64)), x16_load((const void *)(q + 128))};
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 4; g++) {
                const __m512i wv = q3k_level4(hm, qs[h], h, g);
                const __m512i sc = scw[8 * h + 2 * g + (k >> 2)];
                const int e = 32 * h + 8 * g + k;
                int32_t v;
                memcpy(&v, ab->qs + 4 * e, 4);
                const __m512i p = _mm512_sub_epi16(_mm512_maddubs_epi16(wv, _mm512_set1_epi32(v)),
                                                   _mm512_set1_epi32(corr[e]));
                isum2[h] = _mm512_add_epi32(isum2[h], _mm512_madd_epi16(p, sc));
            }
    }
    return _mm512_add_epi32(isum2[0], isum2[1]);
}

/* With VNNI, summed per sub-block: the 8 sub-blocks of a half super-block
 * (lanes k = 4 * half .. +3) each get their own vpdpbusd chain, started
 * at -4 * bsums[j] (the levels enter as level + 4), so the chain ends at
 * the sub-block's exact sum dd of level * a, |dd| <= 16 * 4 * 128 = 8192,
 * a signed word. The 6-bit scales come from the planes on whole vectors
 * (q3k_scale_bytes) as s in 0..63, so s * dd is one vpdpwssd (s in the low
 * word, 0 in the high one); the -32 of every scale is applied once, as 32
 * times the sum of the dd. The starts come from one vector of the 16
 * -4 * bsums. The same exact integer as the tile's. Was: the scales
 * widened and offset plane by plane (about 120 vector ops per super-block
 * against 13 + 16 widenings) and each start from three scalar ops. */
CS_INLINE __m512i q3k_col_isum_vnni(const uint8_t *blk, const block_q8_K *ab, const int gfni) {
    uint8_t sc[256];
    int32_t corr[16];
    q3k_scale_bytes(blk + 32, sc);
    _mm512_storeu_si512(
        (void *)corr,
        _mm512_sub_epi32(_mm512_setzero_si512(),
                         _mm512_slli_epi32(_mm512_cvtepi16_epi32(_mm256_loadu_si256(
                                               (const __m256i *)(const void *)ab->bsums)),
                                           2)));
    __m512i isum[4], dsum = _mm512_setzero_si512();
    for (int i = 0; i < 4; i++) isum[i] = _mm512_setzero_si512();
    for (int half = 0; half < 2; half++) {
        __m512i dd[8]; /* sub-block j = 8h + 2g + half */
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 4; g++)
                dd[4 * h + g] = _mm512_set1_epi32(corr[8 * h + 2 * g + half]);
        for (int k = 4 * half; k < 4 * half + 4; k++) {
            const uint8_t *q = blk + 224 + (size_t)k * 192;
            const __m512i hm = x16_load((const void *)q);
            const __m512i qs[2] = {x16_load((const void *)(q + 64)),
                                   x16_load((const void *)(q + 128))};
            for (int h = 0; h < 2; h++)
                for (int g = 0; g < 4; g++)
                    dd[4 * h + g] = dpbusd_bcast(dd[4 * h + g],
                                                 gfni ? q3k_level4_gfni(hm, qs[h], h, g)
                                                      : q3k_level4(hm, qs[h], h, g),
                                                 ab->qs + 4 * (32 * h + 8 * g + k));
        }
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 4; g++) {
                const int j = 8 * h + 2 * g + half;
                isum[g] = dpwssd(isum[g], dd[4 * h + g],
                                 _mm512_cvtepu8_epi32(_mm_loadu_si128(
                                     (const __m128i *)(const void *)(sc + 16 * j))));
                dsum = _mm512_add_epi32(dsum, dd[4 * h + g]);
            }
    }
    const __m512i s =
        _mm512_add_epi32(_mm512_add_epi32(isum[0], isum[1]), _mm512_add_epi32(isum[2], isum[3]));
    return _mm512_sub_epi32(s, _mm512_slli_epi32(dsum, 5));
}

/* The column: either integer sum (exact in any order), then the tile's
 * float step, so the result is the tile's bit for bit. */
CS_INLINE void col_x16_q3K(int64_t K, const void *const *w, const void *x, float *out,
                           const int vnni, const int gfni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q3K_BLOCK;
        x16_pf_col(1, blk, CS_X16_Q3K_BLOCK);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const block_q8_K *ab = (const block_q8_K *)x + b;
        const __m512 d = _mm512_mul_ps(_mm512_set1_ps(ab->d), dw);
        __m512i isum;
        if (vnni) {
            isum = q3k_col_isum_vnni(blk, ab, gfni);
        } else {
            __m512i scw[16];
            q3k_scales(blk, scw, 0);
            isum = q3k_col_isum(blk, ab, scw);
        }
        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(isum), d));
    }
    _mm512_storeu_ps(out, acc);
}

static void uk_x16_q3K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q3K(K, w, x, out, X16_Q3K_TB, 0);
}
static void uk_x16_q3K_tile8(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q3K(K, w, x, out, X16_KQ_TB2, 0);
}
static void uk_x16_q3K_col(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_q3K(K, w, x, out, 0, 0);
}
static void uk_x16_q3K_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q3K(K, w, x, out, X16_Q3K_TB, 1);
}
static void uk_x16_q3K_tile8_vnni(int64_t K, const void *const *w, const void *const *x,
                                  float *out) {
    tile_x16_q3K(K, w, x, out, X16_KQ_TB2, 1);
}
static void uk_x16_q3K_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_q3K(K, w, x, out, 1, 0);
}
static void uk_x16_q3K_col_vnni_gfni(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_q3K(K, w, x, out, 1, 1);
}

/* ------------------------------------------------------------- Q2_K */

#define X16_Q2K_TB 8

/* Q2_K x16 (repack.h) in the reference order, vec_dot_q2_K_q8_K_ref: per
 * super-block the exact integers summs = sum of m_j * bsums_j (8 vpmaddwd
 * on the mins pairs of lane k) and isum = sum over the lanes k (elements
 * 4k .. 4k+3 of each of the 8 groups of 32), h and g of s * (sum of q *
 * a); then acc += (-d_a * dmin_w) * summs and acc += (d_a * d_w) * isum,
 * each a multiply and an add. Level (0..3) times scale (0..15) is at most
 * 45, so the weight bytes s * q are formed exactly, once per (h, g, k) for
 * the TB tokens: in a tile by one vpshufb from a table of s * level per
 * 128-bit lane (its 4 rows x 4 levels; a vpmullw takes a tenth of the
 * multiply pipes' work from the vpdpbusd: bench_kernels q2_K, T = 512, 1 /
 * 2 threads: 295 / 540 -> 308 / 593 GFLOP/s), in the column by one vpmullw
 * on words (no carry between their bytes), and one vpdpbusd (VNNI) or
 * maddubs + madd (pairs at most 2 * 45 * 127) per token adds them to isum.
 * Cost per token and 16 x 256 weights: 64 (VNNI) or 192 vector integer
 * ops, 8 madds for the mins, 2 conversions, 4 multiplies and adds (8 float
 * lanes per token before: 16 conversions and FMAs, and 4 tokens a tile). */
CS_INLINE void tile_x16_q2K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int vnni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const int lut = TB > 1;
    const __m512i m3 = _mm512_set1_epi8(3), m15 = _mm512_set1_epi8(15);
    /* byte b of dword r: 4 (r mod 4), the row's offset in its table */
    const __m512i rowc = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0);
    /* the float sums live in out (one load and store per token and
     * super-block): registers go to the TB integer sums and 8 scale tables */
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, _mm512_setzero_ps());
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q2K_BLOCK;
        __m512i isum[X16_Q2K_TB];
        const block_q8_K *ab[X16_Q2K_TB];
        for (int t = 0; t < TB; t++) {
            ab[t] = (const block_q8_K *)x[t] + b;
            isum[t] = _mm512_setzero_si512();
        }
        /* scale slice sl = row bytes 2sl, 2sl+1; lanes k < 4 use byte 0's
         * low nibble, k >= 4 byte 1's (group (h, g) = slice 4h + g).
         * A tile (lut): tbl[sl] holds, in 128-bit lane L (rows 4L ..
         * 4L+3), s_r * lev at byte 4 (r - 4L) + lev, which the level bytes
         * or'ed with 4 (r - 4L) index. The column: the scales as words in
         * both halves of each dword, for vpmullw (the 5 table ops per
         * slice are not shared by tokens there: 146 -> 121 GFLOP/s) */
        for (int u = 0; u < 2; u++) {
            __m512i tbl[8];
            for (int sl = 0; sl < 8; sl++) {
                const __m256i raw =
                    _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64 + 32 * sl));
                if (!lut) {
                    const __m512i sv = _mm512_cvtepu8_epi16(raw);
                    const __m512i sc = _mm512_and_si512(u ? _mm512_srli_epi32(sv, 16) : sv,
                                                        _mm512_set1_epi32(0xF));
                    tbl[sl] = _mm512_or_si512(sc, _mm512_slli_epi32(sc, 16));
                    continue;
                }
                /* dword r = row r's two bytes; byte 4rr + lev <- byte 4rr + u */
                const __m512i sv = _mm512_cvtepu16_epi32(raw);
                const __m512i sc = _mm512_and_si512(
                    _mm512_shuffle_epi8(sv, _mm512_add_epi8(rowc, _mm512_set1_epi8((char)u))), m15);
                /* lev 1, 3: s; lev 2, 3: + 2s */
                const __m512i odd = _mm512_maskz_mov_epi8(0xAAAAAAAAAAAAAAAAull, sc);
                tbl[sl] =
                    _mm512_mask_add_epi8(odd, 0xCCCCCCCCCCCCCCCCull, odd, _mm512_add_epi8(sc, sc));
            }
            for (int k = 4 * u; k < 4 * u + 4; k++) {
                const uint8_t *q = blk + 320 + (size_t)k * 128;
                /* the block after next: 21 lines, 3 per lane */
                for (int l = 3 * k; l < 3 * k + 3 && l < 21; l++)
                    X16_PF_TILE(TB, (const char *)(blk + 2 * CS_X16_Q2K_BLOCK + (size_t)l * 64),
                                _MM_HINT_T0);
                const __m512i qs[2] = {x16_load((const void *)q), x16_load((const void *)(q + 64))};
                for (int h = 0; h < 2; h++)
                    for (int g = 0; g < 4; g++) {
                        const __m512i qg = g ? _mm512_srli_epi16(qs[h], 2 * g) : qs[h];
                        /* lut: (q >> 2g) & 3 | 4 (r - 4L) in one vpternlogd */
                        const __m512i wv =
                            lut ? _mm512_shuffle_epi8(tbl[4 * h + g],
                                                      _mm512_ternarylogic_epi32(qg, m3, rowc, 0xEA))
                                : _mm512_mullo_epi16(_mm512_and_si512(qg, m3), tbl[4 * h + g]);
                        const int e = 32 * h + 8 * g + k;
                        for (int t = 0; t < TB; t++) {
                            const int8_t *a = ab[t]->qs + 4 * e;
                            if (vnni) { /* the VNNI column is col_x16_q2K_vnni */
                                isum[t] = dpbusd_bcast(isum[t], wv, a);
                            } else {
                                int32_t v;
                                memcpy(&v, a, 4);
                                isum[t] = _mm512_add_epi32(
                                    isum[t], _mm512_madd_epi16(
                                                 _mm512_maddubs_epi16(wv, _mm512_set1_epi32(v)),
                                                 _mm512_set1_epi16(1)));
                            }
                        }
                    }
            }
        }
        /* the mins term after the levels' pass, token by token: mins mn[sl]
         * = the high nibbles of scale slice sl (vpmaddwd / vpdpwssd against
         * the bsums pair of lane sl) */
        __m512i mn[8];
        for (int sl = 0; sl < 8; sl++)
            mn[sl] = _mm512_srli_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256(
                                           (const __m256i *)(const void *)(blk + 64 + 32 * sl))),
                                       4);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const __m512 mw =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 32)));
        for (int t = 0; t < TB; t++) {
            __m512i msum = _mm512_setzero_si512();
            for (int k = 0; k < 8; k++) {
                if (vnni) { /* one instruction: the words' products and the add */
                    msum = dpwssd_bcast(msum, mn[k], ab[t]->bsums + 2 * k);
                    continue;
                }
                int32_t bs;
                memcpy(&bs, ab[t]->bsums + 2 * k, 4);
                msum = _mm512_add_epi32(msum, _mm512_madd_epi16(mn[k], _mm512_set1_epi32(bs)));
            }
            const __m512 d = _mm512_mul_ps(_mm512_set1_ps(ab[t]->d), dw);
            const __m512 dm = _mm512_mul_ps(_mm512_set1_ps(-ab[t]->d), mw);
            __m512 acc = _mm512_loadu_ps(out + 16 * t);
            acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(msum), dm));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(isum[t]), d));
            _mm512_storeu_ps(out + 16 * t, acc);
        }
    }
}

/* The VNNI column (one token, a decode step): the levels (0..3) go into
 * vpdpbusd as they are, one accumulator per sub-block (8 independent
 * chains of 4 per half super-block instead of 2 chains of 32), and each
 * sub-block's sum, at most 16 * 3 * 128 = 6144 (a signed word), is scaled
 * once by a vpdpwssd on the scale in the low word of its lane. The tile's
 * way (weight bytes s * q formed first) costs a vpmullw per vpdpbusd that
 * a single token cannot share. Integer sums are exact, and the float steps
 * are the tile's (the tile keeps its own copy of them: through a shared
 * helper the Q2_K tile read 4 % slower, bench_kernels q2_K T = 512
 * 298-300 against 311-312 GFLOP/s), so the result is the tile's bit for
 * bit.
 * The levels of group g stay in place (bits 2g, 2g + 1): one vpandd
 * each, so vpdpbusd sums 4^g times the level products (at most 192 * 128
 * * 16 in magnitude) and one arithmetic shift by 2g per sub-block, exact,
 * takes the factor out before the scale (was a shift and an and per
 * level vector: bench_kernels q2_K T = 1, 1 thread, from cache, 215 ->
 * 243 GFLOP/s).
 * Cost per 16 x 256 weights: 64 vpdpbusd, 64 ands, 12 shifts, 24
 * vpdpwssd (16 scales, 8 mins), 8 scale unpacks; the tile's column did 64
 * more vpmullw and ran its vpdpbusd in two dependent chains. */
CS_INLINE void col_x16_q2K_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m15 = _mm512_set1_epi32(0xF);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q2K_BLOCK;
        x16_pf_col(1, blk, CS_X16_Q2K_BLOCK);
        const block_q8_K *ab = (const block_q8_K *)x + b;
        /* scale slice sl: dword r = row r's bytes 2sl, 2sl + 1 as words;
         * half u's scale is the low nibble of word u, the mins the high
         * nibbles (unpacked once for both halves and the mins) */
        __m512i sv[8];
        for (int sl = 0; sl < 8; sl++)
            sv[sl] = _mm512_cvtepu8_epi16(
                _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64 + 32 * sl)));
        __m512i isum[4];
        for (int i = 0; i < 4; i++) isum[i] = _mm512_setzero_si512();
        for (int u = 0; u < 2; u++) {
            __m512i dd[8]; /* sub-block (h, g) of this half: slice 4h + g */
            for (int i = 0; i < 8; i++) dd[i] = _mm512_setzero_si512();
            for (int k = 4 * u; k < 4 * u + 4; k++) {
                const uint8_t *q = blk + 320 + (size_t)k * 128;
                const __m512i qs[2] = {x16_load((const void *)q), x16_load((const void *)(q + 64))};
                for (int h = 0; h < 2; h++)
                    for (int g = 0; g < 4; g++)
                        dd[4 * h + g] = dpbusd_bcast(
                            dd[4 * h + g],
                            _mm512_and_si512(qs[h], _mm512_set1_epi8((char)(3 << 2 * g))),
                            ab->qs + 4 * (32 * h + 8 * g + k));
            }
            for (int sl = 0; sl < 8; sl++) {
                const __m512i sc =
                    _mm512_and_si512(u ? _mm512_srli_epi32(sv[sl], 16) : sv[sl], m15);
                /* group g's levels entered in place, 4^g times their value */
                const __m512i ds = sl % 4 ? _mm512_srai_epi32(dd[sl], 2 * (sl % 4)) : dd[sl];
                isum[sl & 3] = dpwssd(isum[sl & 3], ds, sc);
            }
        }
        __m512i msum = _mm512_setzero_si512();
        for (int sl = 0; sl < 8; sl++)
            msum = dpwssd_bcast(msum, _mm512_srli_epi16(sv[sl], 4), ab->bsums + 2 * sl);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)blk));
        const __m512 mw =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 32)));
        const __m512 d = _mm512_mul_ps(_mm512_set1_ps(ab->d), dw);
        const __m512 dm = _mm512_mul_ps(_mm512_set1_ps(-ab->d), mw);
        const __m512i is = _mm512_add_epi32(_mm512_add_epi32(isum[0], isum[1]),
                                            _mm512_add_epi32(isum[2], isum[3]));
        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(msum), dm));
        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(is), d));
    }
    _mm512_storeu_ps(out, acc);
}

static void uk_x16_q2K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q2K(K, w, x, out, X16_Q2K_TB, 0);
}
static void uk_x16_q2K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q2K(K, w, &x, out, 1, 0);
}
static void uk_x16_q2K_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q2K(K, w, x, out, X16_Q2K_TB, 1);
}
static void uk_x16_q2K_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    col_x16_q2K_vnni(K, w, x, out);
}

void kernels_x16_kquants_avx512(kernels_table *k, bool vnni, bool gfni, bool vbmi) {
    const int32_t r = CS_X16_ROWS;
    k->ukernel_x16[CS_TYPE_IQ4_XS] = MATMUL_UK(vnni, r, X16_IQ4XS_TB, uk_x16_iq4xs);
    if (vnni && vbmi) k->ukernel_x16[CS_TYPE_IQ4_XS].col = uk_x16_iq4xs_col_vnni_vbmi;
    k->ukernel_x16[CS_TYPE_Q3_K] = MATMUL_UK2(vnni, r, X16_Q3K_TB, X16_KQ_TB2, uk_x16_q3K);
    if (vnni && gfni) k->ukernel_x16[CS_TYPE_Q3_K].col = uk_x16_q3K_col_vnni_gfni;
    if (vnni) {
        k->ukernel_x16[CS_TYPE_Q3_K].tbp = X16_Q3K_PAIR_TB;
        k->ukernel_x16[CS_TYPE_Q3_K].tile_pair = uk_x16_q3K_pair_vnni;
    }
    k->ukernel_x16[CS_TYPE_Q2_K] = MATMUL_UK(vnni, r, X16_Q2K_TB, uk_x16_q2K);
}

#endif /* x86 */
