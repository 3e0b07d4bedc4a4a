/* x16_legacy_avx2.c: the x16 micro-kernels (repack.h) of the legacy weight
 * types IQ4_NL and Q5_0 (Q8_0 activations) and Q4_1 and Q5_1 (Q8_1
 * activations) for the AVX2 table, for CPUs without AVX-512 (and without
 * AVX-VNNI). Compiled with the flags of x86_avx2.c (AVX2, FMA, F16C).
 *
 * Numerics: each type's reference dot (repack_x16_dot_ref), as the AVX-512
 * kernels of x16_legacy_avx512.c, so the result is bit-identical to the
 * reference table and to the AVX-512 tables:
 *   all four: per block the exact integer sum, then sum += (d_w * d_x) *
 *     isum, a multiply and an add (Q8_0's scheme in x16_avx2.c); Q4_1 /
 *     Q5_1 then + summ = fma(m_w, s_x, summ) over the blocks in order.
 *
 * Exactness of vpmaddubsw (u8 x s8, pairs added in saturating int16; the
 * Q8_0 / Q8_1 activations of the table's from_float are in [-127, 127],
 * round(x / d) with d = amax / 127):
 *   IQ4_NL: the u8 operand is |level| (<= 127, looked up with vpshufb), the
 *     level's sign is moved onto the activation (vpsignb; no level is 0):
 *     pairs <= 2 * 127 * 127 = 32258 < 2^15, widened per step (vpmaddwd).
 *   Q5_0 / Q4_1 / Q5_1: the unsigned 4- or 5-bit values q directly (Q5_0's
 *     offset -16 is the int32 start value -16 * sum(x), matmul.h's aux):
 *     pairs <= 2 * 31 * 127 = 7874.
 * So every int32 lane holds the exact block integer.
 *
 * Registers: a row group is 16 rows, two ymm of 8 rows (halves h); per
 * block and half the 8 weight vectors (4 slices x 2 nibbles) are decoded
 * once for the TB tokens and the float accumulators live in memory (one
 * load and store per block, half and token). Tile: TB = 8 tokens,
 * column: 1. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "iquants.h"
#include "matmul.h"
#include "quant_legacy.h"
#include "simd_x86.h"

/* f16 at p as a float. */
CS_INLINE float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* ------------------------------------- Q5_0 / Q4_1 / Q5_1: block sums */

#define LG_TB 8 /* tokens per tile call */

/* One x16 group against TB activation rows (Q8_0 or Q8_1 blocks); out[16t +
 * r] = row r's dot with token t, in the reference order (header). Per
 * block and half the 8 weight vectors (lane k: nibbles of slice k & 3, low
 * for k < 4, with the Q5 high bits of its 4 elements at 0x10) are decoded
 * once for the TB tokens; per token the 8 dot steps (vpbroadcastd,
 * vpmaddubsw, vpmaddwd, vpaddd) go into one int32 vector, then one
 * conversion, two multiplies and an add. The Q4_1 / Q5_1 offsets are a
 * second pass per token and half, one FMA per block. */
CS_INLINE void tile_legacy(int64_t K, const void *const *w, const void *const *x, float *out,
                           const int TB, const int32_t type) {
    const int64_t nb = K / CS_QK_LEGACY;
    const uint8_t *grp = w[0];
    const x16_legacy_parts parts = repack_x16_legacy_parts(type);
    const int has_h = parts.has_h, has_m = parts.has_m;
    const size_t gb = parts.size, off_h = parts.high, off_q = parts.qs;
    const size_t xb = has_m ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t aux_off = matmul_x16_aux_offset(K);
    const __m256i m4 = _mm256_set1_epi8(0x0f), b4 = _mm256_set1_epi8(0x10);
    const __m256i ones = _mm256_set1_epi16(1);
    float acc[LG_TB][16];
    memset(acc, 0, sizeof acc);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * gb;
        x16_pf_col(TB, blk, gb);
        const int8_t *xq[LG_TB];
        float dx[LG_TB];
        int32_t corr[LG_TB];
        for (int t = 0; t < TB; t++) {
            const uint8_t *xbk = (const uint8_t *)x[t] + (size_t)b * xb;
            xq[t] = (const int8_t *)(xbk + (has_m ? 4 : 2));
            if (has_m) {
                dx[t] = f16_at(xbk);
                corr[t] = 0;
            } else {
                const matmul_x16_aux *a =
                    (const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b;
                dx[t] = a->d;
                corr[t] = a->corr;
            }
        }
        for (int h = 0; h < 2; h++) {
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
            const __m256i H = has_h ? _mm256_loadu_si256((const __m256i *)(blk + off_h + 32 * h))
                                    : _mm256_setzero_si256();
            __m256i wq[8];
            for (int s = 0; s < 4; s++) {
                const __m256i raw =
                    _mm256_loadu_si256((const __m256i *)(blk + off_q + 64 * s + 32 * h));
                for (int hi = 0; hi < 2; hi++) {
                    const int k = s + 4 * hi;
                    __m256i q = _mm256_and_si256(hi ? _mm256_srli_epi16(raw, 4) : raw, m4);
                    if (has_h) {
                        /* lane k's high bits, bit 8j + k of the row's dword, to bit 4 of byte j */
                        const __m256i hs =
                            k <= 4 ? _mm256_slli_epi32(H, 4 - k) : _mm256_srli_epi32(H, k - 4);
                        q = _mm256_or_si256(q, _mm256_and_si256(hs, b4));
                    }
                    wq[k] = q;
                }
            }
            for (int t = 0; t < TB; t++) {
                __m256i si = _mm256_set1_epi32(corr[t]);
                for (int k = 0; k < 8; k++) {
                    const __m256i p = _mm256_maddubs_epi16(wq[k], bcast4(xq[t] + 4 * k));
                    si = _mm256_add_epi32(si, _mm256_madd_epi16(p, ones));
                }
                const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(dx[t]));
                float *o = acc[t] + 8 * h;
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o),
                                                  _mm256_mul_ps(_mm256_cvtepi32_ps(si), sc)));
            }
        }
    }
    for (int t = 0; t < TB; t++) {
        for (int h = 0; h < 2; h++) {
            __m256 r = _mm256_loadu_ps(acc[t] + 8 * h);
            if (has_m) {
                /* summ = fma(m_w, s_x, summ) over the blocks in order */
                __m256 summ = _mm256_setzero_ps();
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *blk = grp + (size_t)b * gb;
                    const __m256 mw =
                        _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32 + 16 * h)));
                    const uint8_t *xbk = (const uint8_t *)x[t] + (size_t)b * sizeof(block_q8_1);
                    summ = _mm256_fmadd_ps(mw, _mm256_set1_ps(f16_at(xbk + 2)), summ);
                }
                r = _mm256_add_ps(r, summ);
            }
            _mm256_storeu_ps(out + 16 * t + 8 * h, r);
        }
    }
}

#define LEGACY_KERNELS(name, type)                                                                 \
    static void uk_x16_##name##_tile(int64_t K, const void *const *w, const void *const *x,        \
                                     float *out) {                                                 \
        tile_legacy(K, w, x, out, LG_TB, type);                                                    \
    }                                                                                              \
    static void uk_x16_##name##_col(int64_t K, const void *const *w, const void *x, float *out) {  \
        tile_legacy(K, w, &x, out, 1, type);                                                       \
    }

LEGACY_KERNELS(q5_0, CS_TYPE_Q5_0)
LEGACY_KERNELS(q4_1, CS_TYPE_Q4_1)
LEGACY_KERNELS(q5_1, CS_TYPE_Q5_1)

/* ------------------------------------------------ IQ4_NL: block sums */

#define IQ4NL_TB 8 /* tokens per tile call */

/* IQ4_NL x16 in the reference order (vec_dot_iq4_nl_q8_0_ref): per block
 * and token the exact integer sum of each row, then acc += (d_w * d_x) *
 * isum, a multiply then an add. Per block and half the 8 |level| and 8 sign
 * vectors (4 slices x 2 nibbles, vpshufb) are looked up once for the TB
 * tokens (those that do not fit the 16 ymm are read back as vpsignb's
 * memory operand); the inner step per token and 8 rows x 4 weights is a
 * broadcast load, vpsignb, vpmaddubsw, vpmaddwd, vpaddd; the float
 * accumulators live in memory (one load and store per block, half and
 * token).
 * Cost per token and 16 x 32 weights: 2 x 8 x (vpsignb, vpmaddubsw,
 * vpmaddwd, vpaddd), 2 conversions, 4 multiplies, 2 adds; per TB tokens
 * 32 vpshufb. */
CS_INLINE void tile_iq4nl(int64_t K, const void *const *w, const void *const *x, float *out,
                          const int TB) {
    const int64_t nb = K / CS_QK4_NL;
    const size_t aux_off = matmul_x16_aux_offset(K);
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const __m128i lv = _mm_loadu_si128((const __m128i *)(const void *)iq4nl_values);
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_abs_epi8(lv));
    const __m256i sgn = _mm256_broadcastsi128_si256(lv);
    float acc[IQ4NL_TB][16];
    memset(acc, 0, sizeof acc);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q4_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q4_BLOCK);
        const int8_t *xq[IQ4NL_TB];
        float dx[IQ4NL_TB];
        for (int t = 0; t < TB; t++) {
            xq[t] = ((const block_q8_0 *)x[t] + b)->qs;
            dx[t] = ((const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b)->d;
        }
        for (int h = 0; h < 2; h++) {
            const __m256 dw =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(blk + 16 * h)));
            /* e = 4 * hi + s: slice s (elements 4s .., 16 + 4s .. for the
             * high nibbles) of rows 8h .. 8h+7 */
            __m256i av[8], gv[8];
            for (int s = 0; s < 4; s++) {
                const __m256i raw =
                    _mm256_loadu_si256((const __m256i *)(const void *)(blk + 32 + 64 * s + 32 * h));
                const __m256i i0 = _mm256_and_si256(raw, m4);
                const __m256i i1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                av[s] = _mm256_shuffle_epi8(lut, i0), gv[s] = _mm256_shuffle_epi8(sgn, i0);
                av[4 + s] = _mm256_shuffle_epi8(lut, i1), gv[4 + s] = _mm256_shuffle_epi8(sgn, i1);
            }
            for (int t = 0; t < TB; t++) {
                __m256i si = _mm256_setzero_si256();
                for (int e = 0; e < 8; e++) {
                    const __m256i xv = bcast4(xq[t] + 16 * (e / 4) + 4 * (e % 4));
                    const __m256i p = _mm256_maddubs_epi16(av[e], _mm256_sign_epi8(xv, gv[e]));
                    si = _mm256_add_epi32(si, _mm256_madd_epi16(p, ones));
                }
                const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(dx[t]));
                float *o = acc[t] + 8 * h;
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o),
                                                  _mm256_mul_ps(_mm256_cvtepi32_ps(si), sc)));
            }
        }
    }
    memcpy(out, acc, sizeof(float) * 16 * (size_t)TB);
}

static void uk_x16_iq4nl_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_iq4nl(K, w, x, out, IQ4NL_TB);
}
static void uk_x16_iq4nl_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_iq4nl(K, w, &x, out, 1);
}

/* ------------------------------------------------------- registration */

void kernels_x16_legacy_avx2(kernels_table *k) {
    matmul_ukernel *x = k->ukernel_x16;
    const int32_t r = CS_X16_ROWS;
    x[CS_TYPE_IQ4_NL] =
        (matmul_ukernel){r, IQ4NL_TB, uk_x16_iq4nl_tile, uk_x16_iq4nl_col, 0, NULL, 0, NULL};
    x[CS_TYPE_Q5_0] =
        (matmul_ukernel){r, LG_TB, uk_x16_q5_0_tile, uk_x16_q5_0_col, 0, NULL, 0, NULL};
    x[CS_TYPE_Q4_1] =
        (matmul_ukernel){r, LG_TB, uk_x16_q4_1_tile, uk_x16_q4_1_col, 0, NULL, 0, NULL};
    x[CS_TYPE_Q5_1] =
        (matmul_ukernel){r, LG_TB, uk_x16_q5_1_tile, uk_x16_q5_1_col, 0, NULL, 0, NULL};
}

#endif /* x86 */
