/* x16_legacy_avx512.c: the x16 micro-kernels (repack.h) of the legacy
 * weight types Q5_0 and IQ4_NL (Q8_0 activations) and Q4_1 and Q5_1 (Q8_1
 * activations). Compiled with the flags of x86_avx512.c (F, BW, VL, DQ
 * plus AVX2/FMA/F16C); vpdpbusd goes through inline asm, taken only in
 * the VNNI variants, which x86_avx512.c registers only when cpuid reports
 * AVX512_VNNI. Both paths give the same exact int32 lane sums, so VNNI and
 * non-VNNI results are bit-identical, and so are repack_x16_dot_ref's
 * (the types' reference dots on the unpacked rows).
 *
 * All four follow the block-sum order of their references (one exact
 * integer per block and row, then sum += (d_w * d_x) * isum, a multiply
 * and an add; Q4_1 / Q5_1 add fma(m_w, s_x) chains at the end): Q8_0's x16
 * scheme with the weights unpacked from nibbles (and high bits) or looked
 * up (IQ4_NL). */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "iquants.h"
#include "matmul.h"
#include "quant_legacy.h"
#include "simd_x86.h"

/* acc + per-lane sum of 4 products of the u8 bytes of w and the 4 s8
 * bytes at p. Non-VNNI: maddubs pairs stay below 2^15 for |w| <= 127 (or
 * w <= 31 against a s8 of magnitude <= 127: Q8 activations never hold
 * -128), so the int32 is exact either way. */
CS_INLINE __m512i dp4(__m512i acc, __m512i w, const int8_t *p, const int vnni) {
    if (vnni) return dpbusd_bcast(acc, w, p);
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, _mm512_set1_epi32(v)),
                                                   _mm512_set1_epi16(1)));
}

/* ------------------------------------- Q5_0 / Q4_1 / Q5_1: block sums */

#define LG_TB 8 /* tokens per tile: 8 weight vectors + 8 (+ 8) accumulators */

/* The 8 weight vectors of one legacy x16 block (lane k: the nibbles of
 * slice k & 3, low for k < 4, with the Q5 high bits of its 4 elements at
 * 0x10 when has_h), shared by tile_legacy and tile_legacy_pair. */
CS_INLINE void lg_weights(const uint8_t *blk, size_t off_h, size_t off_q, const int has_h,
                          __m512i wq[8]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), b4 = _mm512_set1_epi8(0x10);
    const __m512i H = has_h ? x16_load(blk + off_h) : _mm512_setzero_si512();
    for (int k = 0; k < 8; k++) {
        const __m512i raw = x16_load(blk + off_q + 64 * (k & 3));
        __m512i q = _mm512_and_si512(k < 4 ? raw : _mm512_srli_epi16(raw, 4), m4);
        if (has_h) {
            const __m512i hs = k <= 4 ? _mm512_slli_epi32(H, 4 - k) : _mm512_srli_epi32(H, k - 4);
            q = _mm512_or_si512(q, _mm512_and_si512(hs, b4));
        }
        wq[k] = q;
    }
}

/* Token row xr's header of activation block b for a legacy tile: the
 * block's quants, d_x, and s_x (Q8_1 rows: has_m; start stays 0) or the
 * aux start value (Q8_0 rows, matmul.h; s stays 0). Shared by tile_legacy
 * and tile_legacy_pair. */
typedef struct lg_act {
    const int8_t *q;
    float d, s;
    __m512i start;
} lg_act;

CS_INLINE lg_act lg_token(const void *xr, int64_t b, size_t xb, size_t aux_off, const int has_m) {
    const uint8_t *xbk = (const uint8_t *)xr + (size_t)b * xb;
    lg_act r = {(const int8_t *)(xbk + (has_m ? 4 : 2)), 0.0f, 0.0f, _mm512_setzero_si512()};
    if (has_m) {
        uint16_t h[2];
        memcpy(h, xbk, 4);
        r.d = _cvtsh_ss(h[0]);
        r.s = _cvtsh_ss(h[1]);
    } else {
        const matmul_x16_aux *a = (const matmul_x16_aux *)((const uint8_t *)xr + aux_off) + b;
        r.d = a->d;
        r.start = _mm512_set1_epi32(a->corr);
    }
    return r;
}

/* One x16 group against TB activation rows, in the reference order
 * (quant_legacy.c): per block and row the exact integer sum, then
 * acc += (d_w * d_x) * isum; Q4_1 / Q5_1 also summ = fma(m_w, s_x, summ),
 * added at the end. The block's 8 weight vectors (lane k: nibbles of
 * slice k & 3, low for k < 4, with the Q5 high bits of its 4 elements at
 * 0x10) are built once and shared by the TB tokens; a token's 8 dot steps
 * accumulate in one int32 vector. Q5_0's offset -16 is the aux start
 * value -16 * sum(x) (matmul.h): the weight bytes stay unsigned (u <= 31,
 * so non-VNNI maddubs pairs stay below 2 * 31 * 127). Cost per block and
 * token: 8 dot steps, 1 conversion, 2 multiplies and 1 add (Q4_1 / Q5_1:
 * one FMA more); before (ggml's 8-lane order) it was 8 conversions and 8
 * FMAs. */
CS_INLINE void tile_legacy(int64_t K, const void *const *w, const void *const *x, float *out,
                           const int TB, const int32_t type, const int vnni) {
    const int64_t nb = K / CS_QK_LEGACY;
    const x16_legacy_parts parts = repack_x16_legacy_parts(type);
    const int has_h = parts.has_h, has_m = parts.has_m;
    const size_t gb = parts.size, off_h = parts.high, off_q = parts.qs;
    const size_t xb = has_m ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t aux_off = matmul_x16_aux_offset(K);
    const uint8_t *grp = w[0];
    __m512 acc[LG_TB], summ[LG_TB];
    for (int t = 0; t < TB; t++) {
        acc[t] = _mm512_setzero_ps();
        summ[t] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * gb;
        x16_pf_col(TB, blk, gb);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512 mw =
            has_m ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 32))) : dw;
        __m512i wq[8];
        lg_weights(blk, off_h, off_q, has_h, wq);
        for (int t = 0; t < TB; t++) {
            const lg_act xa = lg_token(x[t], b, xb, aux_off, has_m);
            const int8_t *xq = xa.q;
            const float dx = xa.d;
            __m512i ai = xa.start;
            if (has_m) summ[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xa.s), summ[t]);
            __m512i ai2 = _mm512_setzero_si512(); /* a second chain: exact int32 */
            for (int k = 0; k < 8; k += 2) {
                ai = dp4(ai, wq[k], xq + 4 * k, vnni);
                ai2 = dp4(ai2, wq[k + 1], xq + 4 * k + 4, vnni);
            }
            ai = _mm512_add_epi32(ai, ai2);
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_cvtepi32_ps(ai), sc));
        }
    }
    for (int t = 0; t < TB; t++) {
        _mm512_storeu_ps(out + 16 * t, has_m ? _mm512_add_ps(acc[t], summ[t]) : acc[t]);
    }
}

/* Two groups (32 rows) x LG_PAIR_TB tokens, VNNI only: each 4-byte
 * activation slice is broadcast once into a register for the two groups'
 * vpdpbusd, and a token's block scale, sum and start value are read once
 * for both. Per output the same exact integers and float steps as
 * tile_legacy: its result bit for bit. bench_kernels T = 512, Zen 5, best
 * of 5 alternating runs at 1 thread: Q4_1 465 -> 515 GFLOP/s, Q5_0 498 ->
 * 546, Q5_1 424 -> 480. */
#define LG_PAIR_TB 8
CS_INLINE void tile_legacy_pair(int64_t K, const void *const *w, const void *const *x, float *out,
                                const int32_t type) {
    const int64_t nb = K / CS_QK_LEGACY;
    const x16_legacy_parts parts = repack_x16_legacy_parts(type);
    const int has_h = parts.has_h, has_m = parts.has_m;
    const size_t gb = parts.size, off_h = parts.high, off_q = parts.qs;
    const size_t xb = has_m ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t aux_off = matmul_x16_aux_offset(K);
    __m512 acc[2][LG_PAIR_TB], summ[2][LG_PAIR_TB];
    for (int g = 0; g < 2; g++)
        for (int t = 0; t < LG_PAIR_TB; t++) acc[g][t] = summ[g][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512 dw[2], mw[2];
        __m512i wq[2][8];
        for (int g = 0; g < 2; g++) {
            const uint8_t *blk = (const uint8_t *)w[g] + (size_t)b * gb;
            dw[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
            mw[g] =
                has_m ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 32))) : dw[g];
            lg_weights(blk, off_h, off_q, has_h, wq[g]);
        }
        for (int t = 0; t < LG_PAIR_TB; t++) {
            const lg_act xa = lg_token(x[t], b, xb, aux_off, has_m);
            const int8_t *xq = xa.q;
            const float dx = xa.d;
            if (has_m) {
                const __m512 sx = _mm512_set1_ps(xa.s);
                summ[0][t] = _mm512_fmadd_ps(mw[0], sx, summ[0][t]);
                summ[1][t] = _mm512_fmadd_ps(mw[1], sx, summ[1][t]);
            }
            __m512i a0 = xa.start, a1 = xa.start;
            for (int k = 0; k < 8; k++) {
                const __m512i xv = bcast4_512(xq + 4 * k);
                a0 = dpbusd_asm(a0, wq[0][k], xv);
                a1 = dpbusd_asm(a1, wq[1][k], xv);
            }
            const __m512 dxv = _mm512_set1_ps(dx);
            acc[0][t] = _mm512_add_ps(
                acc[0][t], _mm512_mul_ps(_mm512_cvtepi32_ps(a0), _mm512_mul_ps(dw[0], dxv)));
            acc[1][t] = _mm512_add_ps(
                acc[1][t], _mm512_mul_ps(_mm512_cvtepi32_ps(a1), _mm512_mul_ps(dw[1], dxv)));
        }
    }
    for (int t = 0; t < LG_PAIR_TB; t++)
        for (int g = 0; g < 2; g++)
            _mm512_storeu_ps(out + 32 * t + 16 * g,
                             has_m ? _mm512_add_ps(acc[g][t], summ[g][t]) : acc[g][t]);
}

#define LEGACY_KERNELS(name, type)                                                                 \
    static void uk_x16_##name##_tile(int64_t K, const void *const *w, const void *const *x,        \
                                     float *out) {                                                 \
        tile_legacy(K, w, x, out, LG_TB, type, 0);                                                 \
    }                                                                                              \
    static void uk_x16_##name##_col(int64_t K, const void *const *w, const void *x, float *out) {  \
        tile_legacy(K, w, &x, out, 1, type, 0);                                                    \
    }                                                                                              \
    static void uk_x16_##name##_tile_vnni(int64_t K, const void *const *w, const void *const *x,   \
                                          float *out) {                                            \
        tile_legacy(K, w, x, out, LG_TB, type, 1);                                                 \
    }                                                                                              \
    static void uk_x16_##name##_col_vnni(int64_t K, const void *const *w, const void *x,           \
                                         float *out) {                                             \
        tile_legacy(K, w, &x, out, 1, type, 1);                                                    \
    }

LEGACY_KERNELS(q5_0, CS_TYPE_Q5_0)
LEGACY_KERNELS(q4_1, CS_TYPE_Q4_1)
LEGACY_KERNELS(q5_1, CS_TYPE_Q5_1)

static void uk_x16_q4_1_pair_vnni(int64_t K, const void *const *w, const void *const *x,
                                  float *out) {
    tile_legacy_pair(K, w, x, out, CS_TYPE_Q4_1);
}
static void uk_x16_q5_1_pair_vnni(int64_t K, const void *const *w, const void *const *x,
                                  float *out) {
    tile_legacy_pair(K, w, x, out, CS_TYPE_Q5_1);
}
static void uk_x16_q5_0_pair_vnni(int64_t K, const void *const *w, const void *const *x,
                                  float *out) {
    tile_legacy_pair(K, w, x, out, CS_TYPE_Q5_0);
}

/* ------------------------------------------------ IQ4_NL: block sums */

#define IQ4NL_TB 8

/* IQ4_NL x16 in the reference order (vec_dot_iq4_nl_q8_0_ref): per block
 * the exact integer sum, then sum += (d_w * d_x) * isum, a multiply and an
 * add. The nibbles index a vpshufb table: VNNI takes the levels + 128 as
 * the u8 operand and starts the int32 at the aux correction -128 * sum(q)
 * (matmul.h); non-VNNI takes |level| and moves the level's sign onto the
 * activation (maddubs pairs <= 2 * 127 * 127). Levels and signs are built
 * once per block for the TB tokens (8 weight vectors, 8 masks). */
CS_INLINE void tile_iq4nl(int64_t K, const void *const *w, const void *const *x, float *out,
                          const int TB, const int vnni) {
    const int64_t nb = K / CS_QK4_NL;
    const size_t aux_off = matmul_x16_aux_offset(K);
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f), ones = _mm512_set1_epi16(1);
    const __m128i lv = _mm_loadu_si128((const __m128i *)(const void *)iq4nl_values);
    const __m512i lut = _mm512_broadcast_i32x4(vnni ? _mm_xor_si128(lv, _mm_set1_epi8((char)0x80))
                                                    : _mm_abs_epi8(lv));
    const __m512i sgn = _mm512_broadcast_i32x4(lv);
    __m512 acc[IQ4NL_TB];
    for (int t = 0; t < TB; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q4_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q4_BLOCK);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        __m512i wq[8];
        __mmask64 neg[8];
        for (int s = 0; s < 4; s++) {
            const __m512i raw = x16_load(blk + 32 + 64 * s);
            const __m512i lo = _mm512_and_si512(raw, m4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            wq[2 * s] = _mm512_shuffle_epi8(lut, lo);
            wq[2 * s + 1] = _mm512_shuffle_epi8(lut, hi);
            neg[2 * s] = vnni ? 0 : _mm512_movepi8_mask(_mm512_shuffle_epi8(sgn, lo));
            neg[2 * s + 1] = vnni ? 0 : _mm512_movepi8_mask(_mm512_shuffle_epi8(sgn, hi));
        }
        for (int t = 0; t < TB; t++) {
            const block_q8_0 *xb = (const block_q8_0 *)x[t] + b;
            const matmul_x16_aux *a = (const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b;
            __m512i ai = vnni ? _mm512_set1_epi32(a->corr) : _mm512_setzero_si512();
            for (int s = 0; s < 8; s++) {
                /* wq[2s'] low nibbles (elements 4s'..), wq[2s'+1] high (16+4s'..) */
                const int8_t *xp = xb->qs + (s & 1) * 16 + (s >> 1) * 4;
                if (vnni) {
                    ai = dpbusd_bcast(ai, wq[s], xp);
                } else {
                    int32_t v;
                    memcpy(&v, xp, 4);
                    __m512i xv = _mm512_set1_epi32(v);
                    xv = _mm512_mask_sub_epi8(xv, neg[s], _mm512_setzero_si512(), xv);
                    ai = _mm512_add_epi32(ai,
                                          _mm512_madd_epi16(_mm512_maddubs_epi16(wq[s], xv), ones));
                }
            }
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(a->d));
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_cvtepi32_ps(ai), sc));
        }
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

static void uk_x16_iq4nl_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_iq4nl(K, w, x, out, IQ4NL_TB, 0);
}
static void uk_x16_iq4nl_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_iq4nl(K, w, &x, out, 1, 0);
}
static void uk_x16_iq4nl_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                   float *out) {
    tile_iq4nl(K, w, x, out, IQ4NL_TB, 1);
}
static void uk_x16_iq4nl_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    tile_iq4nl(K, w, &x, out, 1, 1);
}

/* ------------------------------------------------------- registration */

void kernels_x16_legacy_avx512(kernels_table *k, bool vnni) {
    matmul_ukernel *x = k->ukernel_x16;
    const int32_t r = CS_X16_ROWS;
    x[CS_TYPE_Q5_0] = MATMUL_UK(vnni, r, LG_TB, uk_x16_q5_0);
    x[CS_TYPE_Q4_1] = MATMUL_UK(vnni, r, LG_TB, uk_x16_q4_1);
    x[CS_TYPE_Q5_1] = MATMUL_UK(vnni, r, LG_TB, uk_x16_q5_1);
    x[CS_TYPE_IQ4_NL] = MATMUL_UK(vnni, r, IQ4NL_TB, uk_x16_iq4nl);
    if (vnni) {
        x[CS_TYPE_Q5_0].tbp = x[CS_TYPE_Q4_1].tbp = x[CS_TYPE_Q5_1].tbp = LG_PAIR_TB;
        x[CS_TYPE_Q5_0].tile_pair = uk_x16_q5_0_pair_vnni;
        x[CS_TYPE_Q4_1].tile_pair = uk_x16_q4_1_pair_vnni;
        x[CS_TYPE_Q5_1].tile_pair = uk_x16_q5_1_pair_vnni;
    }
}

#endif /* x86 */
