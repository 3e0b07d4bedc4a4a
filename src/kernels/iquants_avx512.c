/* iquants_avx512.c: AVX-512 (F + BW) dots of IQ4_NL / IQ4_XS weights,
 * bit-identical to the AVX2 versions (iquants_avx2.c): the same int32
 * lane totals (exact integers, however they are grouped) reach the same
 * float operations in the same order. A 512-bit register holds two
 * 32-element blocks: for IQ4_NL its halves are the AVX2 kernel's two
 * accumulators (even and odd blocks), for IQ4_XS two sub-blocks whose
 * halves are added before the super-block's FMA. Compiled with the
 * AVX-512 flags; entered only through the AVX-512 tables. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include "iquants.h"
#include "simd_x86.h"

/* Two blocks' 16 index bytes -> 64 levels: 256-bit half h holds block h
 * (low nibbles, then high nibbles), as levels32 of the AVX2 file. */
CS_INLINE __m512i levels64(const uint8_t *q0, const uint8_t *q1, __m512i table) {
    const __m512i m4 = _mm512_set1_epi8(0xF);
    const __m128i b0 = _mm_loadu_si128((const __m128i *)(const void *)q0);
    const __m128i b1 = _mm_loadu_si128((const __m128i *)(const void *)q1);
    /* 128-bit lanes: b0, b0 >> 4, b1, b1 >> 4 (nibbles masked below) */
    __m512i v = _mm512_castsi128_si512(b0);
    v = _mm512_inserti32x4(v, _mm_srli_epi16(b0, 4), 1);
    v = _mm512_inserti32x4(v, b1, 2);
    v = _mm512_inserti32x4(v, _mm_srli_epi16(b1, 4), 3);
    return _mm512_shuffle_epi8(table, _mm512_and_si512(v, m4));
}

/* Signed byte products summed in pairs (int16): |w| * sign(w)a. */
CS_INLINE __m512i mul_pairs(__m512i w, __m512i a) {
    const __mmask64 neg = _mm512_movepi8_mask(w);
    const __m512i sa = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
    return _mm512_maddubs_epi16(_mm512_abs_epi8(w), sa);
}

CS_INLINE __m512i load2x256(const int8_t *p0, const int8_t *p1) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)p0);
    const __m256i hi = _mm256_loadu_si256((const __m256i *)(const void *)p1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

void vec_dot_iq4_nl_q8_0_avx512(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_nl *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / CS_QK4_NL;
    const __m512i table =
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)iq4nl_values));
    const __m512i one = _mm512_set1_epi16(1);
    __m512 acc = _mm512_setzero_ps(); /* low half: even blocks, high half: odd */
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        const __m512i a = load2x256(y[b].qs, y[b + 1].qs);
        const __m512i p =
            _mm512_madd_epi16(mul_pairs(levels64(x[b].qs, x[b + 1].qs, table), a), one);
        const float d1 = fp16_to_fp32(y[b].d) * fp16_to_fp32(x[b].d);
        const float d2 = fp16_to_fp32(y[b + 1].d) * fp16_to_fp32(x[b + 1].d);
        const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(d1), _mm256_set1_ps(d2), 1);
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc);
    }
    float sum =
        hsum8_ps(_mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1)));
    for (; b < nb; ++b) { /* an odd last block: scalar, as the AVX2 kernel */
        sum += fp16_to_fp32(y[b].d) * fp16_to_fp32(x[b].d) *
               (float)iq4_nl_block_isum(x[b].qs, y[b].qs);
    }
    *s = sum;
}

void vec_dot_iq4_xs_q8_K_avx512(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    const __m512i table =
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)iq4nl_values));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *qs = x[i].qs;
        const int8_t *q8 = y[i].qs;
        uint16_t sh = x[i].scales_h;
        __m512i sum = _mm512_setzero_si512();
        for (int b = 0; b < CS_QK_K / 32; b += 2) {
            const __m512i a = _mm512_loadu_si512((const void *)q8);
            const __m512i p = mul_pairs(levels64(qs, qs + 16, table), a);
            const int16_t ls1 = (int16_t)(((x[i].scales_l[b / 2] & 0xF) | ((sh << 4) & 0x30)) - 32);
            const int16_t ls2 = (int16_t)(((x[i].scales_l[b / 2] >> 4) | ((sh << 2) & 0x30)) - 32);
            sh = (uint16_t)(sh >> 4);
            const __m512i ls =
                _mm512_inserti64x4(_mm512_set1_epi16(ls1), _mm256_set1_epi16(ls2), 1);
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(p, ls));
            qs += 32;
            q8 += 64;
        }
        const __m256i lanes =
            _mm256_add_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
        const float d = fp16_to_fp32(x[i].d) * y[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
    }
    *s = hsum8_ps(acc);
}

#else
/* ISO C forbids an empty translation unit. */
typedef int iquants_avx512_unused;
#endif
