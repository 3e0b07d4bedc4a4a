/* kquants_avx2.c: AVX2 + FMA dot products of Q2_K / Q3_K / Q4_K / Q5_K /
 * Q6_K weights
 * with Q8_K activations. Compiled with -mavx2 -mfma -mf16c; entered only
 * through the AVX2 and AVX-512 kernel tables, after a CPU check.
 *
 * Bit-identical to the scalar references in kquants.c: vpmaddubsw +
 * vpmaddwd leave in int32 lane k exactly the products of bytes 4k..4k+3 of
 * each 32-byte chunk times their sub-block scale (integer, exact: no int16
 * saturation is reachable, see the bounds below), which is the lane layout
 * the reference defines; the float steps (one FMA per lane per super-block,
 * the final horizontal sum) are the same operations in the same order.
 * Cost per super-block: about 40 vector instructions for 256 weights. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "kquants.h"
#include "simd_x86.h"

CS_INLINE void unpack_scales(const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 0xF) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

/* Integer lanes of one Q4_K/Q5_K super-block. Bounds: a byte pair in
 * vpmaddubsw is at most 2*31*128 < 32768, so it never saturates. */
CS_INLINE __m256i lanes_k4(const uint8_t *qs, const uint8_t *qh, const uint8_t *sc,
                           const int8_t *q8) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256i sumi = _mm256_setzero_si256();
    __m256i hb =
        qh ? _mm256_loadu_si256((const __m256i *)(const void *)qh) : _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * j));
        __m256i lo = _mm256_and_si256(bits, m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        if (qh) {
            /* bit 2j of qh[b] -> 16 for lo, bit 2j+1 -> 16 for hi */
            const __m256i one = _mm256_set1_epi8(1);
            const __m256i b0 = _mm256_and_si256(hb, one);
            const __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(hb, 1), one);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
            hb = _mm256_srli_epi16(hb, 2);
        }
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 64 * j));
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 64 * j + 32));
        __m256i p0 = _mm256_maddubs_epi16(lo, a0);
        __m256i p1 = _mm256_maddubs_epi16(hi, a1);
        p0 = _mm256_madd_epi16(_mm256_set1_epi16((short)sc[2 * j]), p0);
        p1 = _mm256_madd_epi16(_mm256_set1_epi16((short)sc[2 * j + 1]), p1);
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    return sumi;
}

/* q5: the masks keep only bit 0 of every byte after the shifts, so the
 * 16-bit shifts never leak bits between bytes into the result. */
CS_INLINE float dot_k4_avx2(int64_t n, const void *vx, size_t stride, bool q5,
                            const block_q8_K *y) {
    const int64_t nb = n / CS_QK_K;
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *blk = (const uint8_t *)vx + (size_t)i * stride;
        uint16_t hd, hdmin;
        memcpy(&hd, blk, 2);
        memcpy(&hdmin, blk + 2, 2);
        uint8_t sc[8], mn[8];
        unpack_scales(blk + 4, sc, mn);
        const float d = y[i].d * fp16_to_fp32(hd);
        const float dmin = -y[i].d * fp16_to_fp32(hdmin);
        /* mins: S[s] = bsums[2s] + bsums[2s+1]; prod[k] = m[2k]S[2k] + m[2k+1]S[2k+1] */
        const __m256i bs = _mm256_loadu_si256((const __m256i *)(const void *)y[i].bsums);
        const __m128i S =
            _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        __m128i m16;
        {
            uint64_t mm;
            memcpy(&mm, mn, 8);
            m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mm));
        }
        const __m128i prod = _mm_madd_epi16(m16, S);
        if (q5) {
            int32_t p[4];
            _mm_storeu_si128((__m128i *)(void *)p, prod);
            summs += dmin * (float)((p[0] + p[1]) + (p[2] + p[3]));
        } else {
            accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), accm);
        }
        const __m256i sumi = lanes_k4(q5 ? blk + 48 : blk + 16, q5 ? blk + 16 : NULL, sc, y[i].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    if (q5) return hsum8_ps(acc) + summs;
    accm = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
    accm = _mm_add_ss(accm, _mm_movehdup_ps(accm));
    return hsum8_ps(acc) + _mm_cvtss_f32(accm);
}

void vec_dot_q4_K_q8_K_avx2(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_k4_avx2(n, x, sizeof(block_q4_K), false, y);
}

void vec_dot_q5_K_q8_K_avx2(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_k4_avx2(n, x, sizeof(block_q5_K), true, y);
}

/* Bounds: vpmaddubsw of q (0..63) with q8 (|.| <= 128) stays within
 * +-16128 and of 32 with q8 within +-8192, so their difference fits int16. */
void vec_dot_q6_K_q8_K_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i m32 = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            const int8_t *sc = x[i].scales + 8 * h;
            const int8_t *a = y[i].qs + 128 * h;
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)qh);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
            q[1] = _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
            q[2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
            q[3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
            for (int m = 0; m < 4; m++) {
                const __m256i av = _mm256_loadu_si256((const __m256i *)(const void *)(a + 32 * m));
                __m256i p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(q[m], av), _mm256_maddubs_epi16(m32, av));
                /* int16 lanes 0-7 (elements 0-15) use sc[2m], 8-15 sc[2m+1] */
                const __m256i scv =
                    _mm256_setr_m128i(_mm_set1_epi16(sc[2 * m]), _mm_set1_epi16(sc[2 * m + 1]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scv, p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum8_ps(acc);
}

/* Q2_K / Q3_K: the four 2-bit groups of each 32-byte qs chunk against 32
 * activations each; int16 lanes 0-7 (elements 0-15) take sub-block scale
 * sc[2m], 8-15 sc[2m+1]. Bounds: a vpmaddubsw pair is at most 2*3*128
 * (levels) or 2*4*128 (Q3_K's high-bit term), so no int16 saturation and
 * the difference fits int16; vpmaddwd with |scale| <= 32 stays far inside
 * int32. */
/* Exact sum of the 8 int32 lanes. */
CS_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 1));
    return _mm_cvtsi128_si32(h);
}

CS_INLINE __m256i scale_pair(const int *sc, int m) {
    return _mm256_setr_m128i(_mm_set1_epi16((short)sc[2 * m]),
                             _mm_set1_epi16((short)sc[2 * m + 1]));
}

/* hmask NULL for Q2_K. Q3_K: 4 is subtracted where the element's high bit
 * (bit 4h+g of hmask[b]) is clear; hb is shifted by one per group, and the
 * mask keeps bit 0 of each byte, so the 16-bit shifts never leak a bit from
 * the neighbouring byte into the result (at most 7 shifts). */
CS_INLINE __m256i lanes_k2(const uint8_t *qs, const uint8_t *hmask, const int *sc,
                           const int8_t *q8) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i one = _mm256_set1_epi8(1);
    __m256i hb =
        hmask ? _mm256_loadu_si256((const __m256i *)(const void *)hmask) : _mm256_setzero_si256();
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * h));
        for (int g = 0; g < 4; g++) {
            const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * g), m3);
            const __m256i a =
                _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 128 * h + 32 * g));
            __m256i p = _mm256_maddubs_epi16(q, a);
            if (hmask) {
                const __m256i clear = _mm256_andnot_si256(hb, one); /* 1 where the bit is 0 */
                p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_slli_epi16(clear, 2), a));
                hb = _mm256_srli_epi16(hb, 1);
            }
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale_pair(sc + 8 * h, g), p));
        }
    }
    return sumi;
}

void vec_dot_q2_K_q8_K_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q2_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    const __m128i m4 = _mm_set1_epi8(0xF);
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const float dmin = -y[i].d * fp16_to_fp32(x[i].dmin);
        /* the mins' integer: sum of m[j] * bsums[j] */
        const __m128i packed = _mm_loadu_si128((const __m128i *)(const void *)x[i].scales);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
        const __m256i bs = _mm256_loadu_si256((const __m256i *)(const void *)y[i].bsums);
        int sc[16];
        for (int j = 0; j < 16; j++) sc[j] = x[i].scales[j] & 0xF;
        const __m256i sumi = lanes_k2(x[i].qs, NULL, sc, y[i].qs);
        sum += dmin * (float)hsum_epi32(_mm256_madd_epi16(mins, bs));
        sum += d * (float)hsum_epi32(sumi);
    }
    *s = sum;
}

void vec_dot_q3_K_q8_K_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q3_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const uint8_t *p = x[i].scales;
        int sc[16];
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? p[j] & 0xF : p[j - 8] >> 4;
            sc[j] = (lo | (((p[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
        }
        const __m256i sumi = lanes_k2(x[i].qs, x[i].hmask, sc, y[i].qs);
        sum += d * (float)hsum_epi32(sumi); /* the super-block's exact integer (kquants.h) */
    }
    *s = sum;
}

#else
/* ISO C forbids an empty translation unit. */
typedef int kquants_avx2_unused;
#endif
