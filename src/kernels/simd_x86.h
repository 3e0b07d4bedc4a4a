/* simd_x86.h: helpers shared by the x86 SIMD kernel files. Include it only
 * from files compiled with at least -mavx2 (x86_avx2.c, kquants_avx2.c,
 * iquants_avx2.c, iquants_avx512.c): the helpers use AVX instructions and
 * are always inlined into their callers. */
#ifndef CS_SIMD_X86_H
#define CS_SIMD_X86_H

#include <immintrin.h>

#define CS_INLINE static inline __attribute__((always_inline))

/* The 8 lanes summed in ggml's hsum_float_8 order: upper half onto the
 * lower, then (0+2, 1+3), then 0+1. The reference dots sum in the same
 * order (kquants.c hsum8), so SIMD and scalar results stay bit-identical. */
CS_INLINE float hsum8_ps(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

#endif /* CS_SIMD_X86_H */
