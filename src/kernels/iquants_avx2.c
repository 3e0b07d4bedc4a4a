/* iquants_avx2.c: AVX2 + FMA dots of IQ4_NL weights with Q8_0 activations
 * and IQ4_XS weights with Q8_K activations. Compiled with -mavx2 -mfma
 * -mf16c; entered only through the AVX2 and AVX-512 kernel tables, after a
 * CPU check.
 *
 * ggml's x86 order (what llama.cpp runs), not the references' generic
 * order: the 4-bit indices become levels with one pshufb on the 16-byte
 * table; the products are summed exactly into 8 int32 lanes (level and
 * activation magnitudes are at most 127, so a vpmaddubsw pair stays below
 * 2*127*127 < 32768: no saturation). IQ4_NL: blocks alternate between two
 * float accumulators (one FMA per block), joined at the end; IQ4_XS: the
 * lanes of a super-block, each sub-block's scaled by its integer scale,
 * take one FMA. The 8 lanes are summed in ggml's hsum_float_8 order.
 * Cost: about 10 vector instructions per 32 weights. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "iquants.h"
#include "simd_x86.h"

/* 16 bytes of index pairs -> 32 signed levels: elements 0-15 (low
 * nibbles) in the low half, 16-31 (high nibbles) in the high half. */
CS_INLINE __m256i levels32(const uint8_t *qs, __m128i table) {
    const __m128i m4 = _mm_set1_epi8(0xF);
    const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)qs);
    const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(b, m4));
    const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(b, 4), m4));
    return _mm256_setr_m128i(lo, hi);
}

/* Signed byte products summed in pairs (int16): |w| * sign(w)a. */
CS_INLINE __m256i mul_pairs(__m256i w, __m256i a) {
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

void vec_dot_iq4_nl_q8_0_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_nl *x = vx;
    const block_q8_0 *y = vy;
    const int64_t nb = n / CS_QK4_NL;
    const __m128i table = _mm_loadu_si128((const __m128i *)(const void *)iq4nl_values);
    const __m256i one = _mm256_set1_epi16(1);
    __m256 acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(const void *)y[b].qs);
        const __m256i a2 = _mm256_loadu_si256((const __m256i *)(const void *)y[b + 1].qs);
        const __m256i p1 = _mm256_madd_epi16(mul_pairs(levels32(x[b].qs, table), a1), one);
        const __m256i p2 = _mm256_madd_epi16(mul_pairs(levels32(x[b + 1].qs, table), a2), one);
        const float d1 = fp16_to_fp32(y[b].d) * fp16_to_fp32(x[b].d);
        const float d2 = fp16_to_fp32(y[b + 1].d) * fp16_to_fp32(x[b + 1].d);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), _mm256_cvtepi32_ps(p1), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d2), _mm256_cvtepi32_ps(p2), acc2);
    }
    float sum = hsum8_ps(_mm256_add_ps(acc1, acc2));
    for (; b < nb; ++b) { /* an odd last block, as ggml: scalar */
        sum += fp16_to_fp32(y[b].d) * fp16_to_fp32(x[b].d) *
               (float)iq4_nl_block_isum(x[b].qs, y[b].qs);
    }
    *s = sum;
}

/* The int16 products times the sub-block scale (|ls - 32| <= 32) summed in
 * int32 pairs: at most 8 * 2 * 127 * 127 * 32 per lane and super-block. */
void vec_dot_iq4_xs_q8_K_avx2(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    const __m128i table = _mm_loadu_si128((const __m128i *)(const void *)iq4nl_values);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *qs = x[i].qs;
        const int8_t *q8 = y[i].qs;
        uint16_t sh = x[i].scales_h;
        __m256i sum1 = _mm256_setzero_si256(), sum2 = _mm256_setzero_si256();
        for (int b = 0; b < CS_QK_K / 32; b += 2) {
            const __m256i a1 = _mm256_loadu_si256((const __m256i *)(const void *)q8);
            const __m256i a2 = _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 32));
            const __m256i p1 = mul_pairs(levels32(qs, table), a1);
            const __m256i p2 = mul_pairs(levels32(qs + 16, table), a2);
            const int16_t ls1 = (int16_t)(((x[i].scales_l[b / 2] & 0xF) | ((sh << 4) & 0x30)) - 32);
            const int16_t ls2 = (int16_t)(((x[i].scales_l[b / 2] >> 4) | ((sh << 2) & 0x30)) - 32);
            sh = (uint16_t)(sh >> 4);
            sum1 = _mm256_add_epi32(_mm256_madd_epi16(p1, _mm256_set1_epi16(ls1)), sum1);
            sum2 = _mm256_add_epi32(_mm256_madd_epi16(p2, _mm256_set1_epi16(ls2)), sum2);
            qs += 32;
            q8 += 64;
        }
        const float d = fp16_to_fp32(x[i].d) * y[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(sum1, sum2)),
                              acc);
    }
    *s = hsum8_ps(acc);
}

#else
/* ISO C forbids an empty translation unit. */
typedef int iquants_avx2_unused;
#endif
