/* x86_avx2.c: the AVX2 + FMA + F16C kernel table and matmul micro-kernels.
 * Compiled with -mavx2 -mfma -mf16c; entered only after kernels.c checked
 * the CPU. Same contracts as ref.c; tests/test_kernels.c bounds the
 * difference with named tolerances (the row converters, quantize_row_q8_0
 * and rope are bit-exact with the reference).
 *
 * Matmul micro-kernels: rb = 4 weight rows x tb = 2 tokens, 8 ymm
 * accumulators (one per output), so every W vector load feeds two FMAs and
 * every X load four. Each accumulator sees the same operation sequence in
 * the 4x2 tile and in the 4x1 column kernel, so the tile shape never changes
 * a result (see matmul.h).
 *
 * Column kernels (a lone token, T = 1): the quantized ones walk their rows
 * one at a time, so the weights stream in one sequential pass the hardware
 * prefetcher follows (4 rows side by side, 4 short streams, measured up to
 * 3x slower). The F16/BF16 ones cannot: one row keeps one accumulator, a
 * chain of dependent FMAs (4-cycle latency per 16 weight bytes, 4 B/cycle,
 * the whole tg speed in the profile). They take the 4 rows side by side
 * (4 independent chains, X converted once) and issue the sequential stream
 * themselves: one software prefetch per 64 weight bytes consumed, two row
 * blocks ahead, into L2 (col_16). */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "kernels.h"
#include "iquants.h"
#include "kquants.h"
#include "matmul.h"
#include "quant_legacy.h"
#include "simd_x86.h"

/* an immediate operand: a macro so that -O0 builds compile too */
#define CS_RND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* ------------------------------------------------------------ helpers */

CS_INLINE double hsum4d(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

/* Lane mask for the first n (0..8) lanes of a maskload. */
CS_INLINE __m256i tail_mask(int64_t n) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - n));
}

CS_INLINE __m256 load_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* First n (< 8) 16-bit values, zero-padded. */
CS_INLINE __m128i load_u16_tail(const uint16_t *p, int64_t n) {
    uint16_t buf[8] = {0};
    memcpy(buf, p, (size_t)n * sizeof(uint16_t));
    return _mm_loadu_si128((const __m128i *)buf);
}

CS_INLINE float f16_scale(uint16_t h) {
    return _cvtsh_ss(h);
}

/* exp(x), Cody-Waite reduction + degree-6 polynomial (cephes expf
 * coefficients), about 2 ulp; inputs below -87.3 give 0 (so -inf gives 0),
 * inputs above 88 saturate at exp(88). */
CS_INLINE __m256 exp8(__m256 x) {
    const __m256 zero_below = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_floor_ps(
        _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(zero_below, y);
}

/* --------------------------------------------------------------- dots */

static void avx2_vec_dot_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
    if (i < n) {
        __m256i m = tail_mask(n - i);
        a1 = _mm256_fmadd_ps(_mm256_maskload_ps(x + i, m), _mm256_maskload_ps(y + i, m), a1);
    }
    *s = hsum8_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

static void avx2_vec_dot_f16(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx, *y = vy;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(load_f16(x + i), load_f16(y + i), a0);
        a1 = _mm256_fmadd_ps(load_f16(x + i + 8), load_f16(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(load_f16(x + i + 16), load_f16(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(load_f16(x + i + 24), load_f16(y + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_f16(x + i), load_f16(y + i), a0);
    if (i < n)
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(load_u16_tail(x + i, n - i)),
                             _mm256_cvtph_ps(load_u16_tail(y + i, n - i)), a1);
    *s = hsum8_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

static void avx2_vec_dot_f16_f32(int64_t n, float *s, const uint16_t *x, const float *y) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(load_f16(x + i), _mm256_loadu_ps(y + i), a0);
        a1 = _mm256_fmadd_ps(load_f16(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(load_f16(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(load_f16(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_f16(x + i), _mm256_loadu_ps(y + i), a0);
    if (i < n)
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(load_u16_tail(x + i, n - i)),
                             _mm256_maskload_ps(y + i, tail_mask(n - i)), a1);
    *s = hsum8_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

/* ------------------------------------------------ matmul micro-kernels */

#define UK_RB 4
#define UK_TB 2

/* Generic RB x TB tile bodies; RB and TB are compile-time constants at
 * every call site, so the loops unroll and acc[][] lives in registers. */

CS_INLINE void tile_f32(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int RB, const int TB) {
    __m256 acc[4][2];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 xv[2];
        for (int t = 0; t < TB; t++) xv[t] = _mm256_loadu_ps((const float *)x[t] + k);
        for (int r = 0; r < RB; r++) {
            __m256 wv = _mm256_loadu_ps((const float *)w[r] + k);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    if (k < K) {
        __m256i m = tail_mask(K - k);
        __m256 xv[2];
        for (int t = 0; t < TB; t++) xv[t] = _mm256_maskload_ps((const float *)x[t] + k, m);
        for (int r = 0; r < RB; r++) {
            __m256 wv = _mm256_maskload_ps((const float *)w[r] + k, m);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = hsum8_ps(acc[r][t]);
}

/* f16 (is_bf16 = 0) and bf16 (1) weights against activations of the same
 * type, widened by simd_x86.h's widen8_16. */

CS_INLINE void tile_16(int64_t K, const void *const *w, const void *const *x, float *out,
                       const int RB, const int TB, const int is_bf16) {
    __m256 acc[4][2];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 xv[2];
        for (int t = 0; t < TB; t++)
            xv[t] =
                widen8_16(_mm_loadu_si128((const __m128i *)((const uint16_t *)x[t] + k)), is_bf16);
        for (int r = 0; r < RB; r++) {
            __m256 wv =
                widen8_16(_mm_loadu_si128((const __m128i *)((const uint16_t *)w[r] + k)), is_bf16);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    if (k < K) {
        __m256 xv[2];
        for (int t = 0; t < TB; t++)
            xv[t] = widen8_16(load_u16_tail((const uint16_t *)x[t] + k, K - k), is_bf16);
        for (int r = 0; r < RB; r++) {
            __m256 wv = widen8_16(load_u16_tail((const uint16_t *)w[r] + k, K - k), is_bf16);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = hsum8_ps(acc[r][t]);
}

/* The column kernel of F16/BF16 weights: nr rows side by side per pass (F16
 * 2 passes of 2 rows, BF16 one of UK_RB = 4), one accumulator each with
 * tile_16's operation sequence (bit-identical to the tile and to one row at
 * a time). Why 2 for F16: 110M F16 tg64, 7 alternating rounds, 1 / 2
 * threads: 87.7 -> 94.3 and 120 -> 131 t/s (4 earlier 1-thread sets +3 to
 * +8 %); BF16, whose widening costs 2 ops instead of 1, lost 7-10 % with 2
 * (half as many rows share each widened activation vector). The price:
 * from cache two rows are FMA-latency bound (2 x 16 bytes per 4 cycles;
 * bench_kernels f16 T = 1: 55 -> 34 GB/s), so a core that streams more
 * than ~30 GB/s from DRAM on one thread would lose; with several threads
 * per memory channel, as in practice, each thread gets far less. A single
 * row is bound at half that.
 * Prefetch: matmul's rows are contiguous (row n + 1 starts where row n
 * ends), so the pass after next starts 1 + nr rows past the end of
 * w[nr - 1]; each step of 8 elements consumes 16 * nr bytes of this pass
 * and prefetches as many of that one, a single sequential stream 2 passes
 * ahead, into L2 (T1: into L1 it would evict X and the current rows; no
 * prefetch at all ran at half speed). Past the matrix end (and for a short
 * last block, whose rows repeat) the prefetches are only hints: they never
 * fault and change no result.
 * Cost: K/8 steps of nr + 1 loads + conversions, nr FMAs, 1 prefetch. */
CS_INLINE void col_16_pass(int64_t K, const void *const *w, const uint16_t *x, float *out,
                           const int nr, const int is_bf16) {
    __m256 acc[UK_RB];
    for (int r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
    const char *pf = (const char *)((const uint16_t *)w[nr - 1] + (1 + nr) * K);
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        _mm_prefetch(pf + (size_t)k * 2 * nr, _MM_HINT_T1);
        const __m256 xv = widen8_16(_mm_loadu_si128((const __m128i *)(x + k)), is_bf16);
        for (int r = 0; r < nr; r++) {
            __m256 wv =
                widen8_16(_mm_loadu_si128((const __m128i *)((const uint16_t *)w[r] + k)), is_bf16);
            acc[r] = _mm256_fmadd_ps(wv, xv, acc[r]);
        }
    }
    if (k < K) {
        const __m256 xv = widen8_16(load_u16_tail(x + k, K - k), is_bf16);
        for (int r = 0; r < nr; r++) {
            __m256 wv = widen8_16(load_u16_tail((const uint16_t *)w[r] + k, K - k), is_bf16);
            acc[r] = _mm256_fmadd_ps(wv, xv, acc[r]);
        }
    }
    for (int r = 0; r < nr; r++) out[r] = hsum8_ps(acc[r]);
}
CS_INLINE void col_16(int64_t K, const void *const *w, const void *xp, float *out,
                      const int is_bf16) {
    const int nr = is_bf16 ? UK_RB : 2;
    for (int r = 0; r < UK_RB; r += nr) col_16_pass(K, w + r, xp, out + r, nr, is_bf16);
}

/* Signed 32-byte weight block (values in [-127, 127] or [-8, 7]) times a
 * Q8_0 activation block: 8 int32 partial sums (exact). */
CS_INLINE __m256i dot_i8(__m256i aw, __m256i wq, __m256i xq) {
    __m256i p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xq, wq));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

CS_INLINE __m256i unpack_q4(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    v = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
}

/* Exact sum of the 8 int32 lanes. */
CS_INLINE int32_t hsum_i32x8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

/* is_q4 = 0: Q8_0 weights; 1: Q4_0 weights. Activations are Q8_0.
 * Q4_0 accumulates per block like vec_dot_q4_0_q8_0_ref (and ggml's
 * repacked Q4_0 kernels): acc = fma(block int sum, d_w*d_x, acc), so the
 * result is bit-identical to the reference. */
CS_INLINE void tile_q(int64_t K, const void *const *w, const void *const *x, float *out,
                      const int RB, const int TB, const int is_q4) {
    __m256 acc[4][2];
    float accq[4][2];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm256_setzero_ps(), accq[r][t] = 0.0f;
    const int64_t nb = K / CS_QK8_0;
    for (int64_t b = 0; b < nb; b++) {
        __m256i xq[2];
        float dx[2];
        for (int t = 0; t < TB; t++) {
            const block_q8_0 *xb = (const block_q8_0 *)x[t] + b;
            xq[t] = _mm256_loadu_si256((const __m256i *)xb->qs);
            dx[t] = f16_scale(xb->d);
        }
        for (int r = 0; r < RB; r++) {
            __m256i wq;
            float dw;
            if (is_q4) {
                const block_q4_0 *wb = (const block_q4_0 *)w[r] + b;
                wq = unpack_q4(wb->qs);
                dw = f16_scale(wb->d);
            } else {
                const block_q8_0 *wb = (const block_q8_0 *)w[r] + b;
                wq = _mm256_loadu_si256((const __m256i *)wb->qs);
                dw = f16_scale(wb->d);
            }
            __m256i aw = _mm256_abs_epi8(wq);
            for (int t = 0; t < TB; t++) {
                if (is_q4) {
                    accq[r][t] =
                        fmaf((float)hsum_i32x8(dot_i8(aw, wq, xq[t])), dw * dx[t], accq[r][t]);
                    continue;
                }
                __m256 p = _mm256_cvtepi32_ps(dot_i8(aw, wq, xq[t]));
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[t]), p, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = is_q4 ? accq[r][t] : hsum8_ps(acc[r][t]);
}

static void uk_f32_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_f32(K, w, x, out, UK_RB, UK_TB);
}
static void uk_f32_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r++) tile_f32(K, w + r, &x, out + r, 1, 1);
}
static void uk_f16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_16(K, w, x, out, UK_RB, UK_TB, 0);
}
static void uk_f16_col(int64_t K, const void *const *w, const void *x, float *out) {
    col_16(K, w, x, out, 0);
}
static void uk_bf16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_16(K, w, x, out, UK_RB, UK_TB, 1);
}
static void uk_bf16_col(int64_t K, const void *const *w, const void *x, float *out) {
    col_16(K, w, x, out, 1);
}
static void uk_q8_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q(K, w, x, out, UK_RB, UK_TB, 0);
}
static void uk_q8_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r++) tile_q(K, w + r, &x, out + r, 1, 1, 0);
}
static void uk_q4_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q(K, w, x, out, UK_RB, UK_TB, 1);
}
static void uk_q4_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r++) tile_q(K, w + r, &x, out + r, 1, 1, 1);
}

/* Single dots of the table share the micro-kernel code (1 x 1 shape). */
static void avx2_vec_dot_bf16(int64_t n, float *s, const void *x, const void *y) {
    tile_16(n, &x, &y, s, 1, 1, 1);
}
static void avx2_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *x, const void *y) {
    tile_q(n, &x, &y, s, 1, 1, 0);
}
static void avx2_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *x, const void *y) {
    tile_q(n, &x, &y, s, 1, 1, 1);
}

/* ------------------------------------------- Q4_1, Q5_0, Q5_1 dots */
/* The order of quant_legacy.h: per block the exact integer sum of the 32
 * products (8 int32 lanes, then summed), then sum += (d_x * d_y) * isum;
 * Q4_1/Q5_1 add the offsets' float FMA chain at the end. Bit-identical to
 * the scalar references. These row dots run where no x16 micro-kernel
 * does (unpacked weights); the x16 tiles are the hot path. */

/* The 32 low nibbles of a block as bytes 0..15 (byte j = element j). */
CS_INLINE __m256i nibbles32(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Byte j = 0x10 where bit j of the block's qh is set, else 0. */
CS_INLINE __m256i high_bits32(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* Exact sum of the u8 x s8 products (u <= 31: maddubs pairs <= 7874). */
CS_INLINE int32_t isum_u8(__m256i u, __m256i y) {
    return hsum_i32x8(_mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1)));
}

static void avx2_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0.0f, summs = 0.0f;
    for (int64_t b = 0; b < n / CS_QK_LEGACY; b++) {
        summs = fmaf(f16_scale(x[b].m), f16_scale(y[b].s), summs);
        const int32_t i = isum_u8(nibbles32(x[b].qs), _mm256_loadu_si256((const __m256i *)y[b].qs));
        sum += (f16_scale(x[b].d) * f16_scale(y[b].d)) * (float)i;
    }
    *s = sum + summs;
}

static void avx2_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / CS_QK_LEGACY; b++) {
        __m256i q = _mm256_or_si256(nibbles32(x[b].qs), high_bits32(x[b].qh));
        q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        const __m256i yq = _mm256_loadu_si256((const __m256i *)y[b].qs);
        const int32_t i = hsum_i32x8(dot_i8(_mm256_abs_epi8(q), q, yq));
        sum += (f16_scale(x[b].d) * f16_scale(y[b].d)) * (float)i;
    }
    *s = sum;
}

static void avx2_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0.0f, summs = 0.0f;
    for (int64_t b = 0; b < n / CS_QK_LEGACY; b++) {
        summs = fmaf(f16_scale(x[b].m), f16_scale(y[b].s), summs);
        const __m256i q = _mm256_or_si256(nibbles32(x[b].qs), high_bits32(x[b].qh));
        const int32_t i = isum_u8(q, _mm256_loadu_si256((const __m256i *)y[b].qs));
        sum += (f16_scale(x[b].d) * f16_scale(y[b].d)) * (float)i;
    }
    *s = sum + summs;
}

/* ---------------------------------------------------- row conversions */

/* Bit-exact with quantize_row_q8_0_ref (and ggml's AVX2 quantizer); with
 * sum != NULL also the Q8_1 block sum s = f16(d * sum q) (quantize_row_q8_1_ref).
 * Q8_0 and Q8_1 blocks differ only by s after d: stride is the block size. */
CS_INLINE void quantize_row_q8_x(const float *x, uint8_t *y, int64_t n, const int with_sum) {
    const int64_t nb = n / CS_QK8_0;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const float *p = x + b * CS_QK8_0;
        __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
        __m256 v2 = _mm256_loadu_ps(p + 16), v3 = _mm256_loadu_ps(p + 24);
        __m256 m =
            _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                          _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const uint16_t dh = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        uint8_t *blk = y + b * (with_sum ? sizeof(block_q8_1) : sizeof(block_q8_0));
        memcpy(blk, &dh, 2);
        const __m256 mul = _mm256_set1_ps(id);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), CS_RND));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), CS_RND));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), CS_RND));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), CS_RND));
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        if (with_sum) {
            const int32_t sum =
                hsum_i32x8(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
            const uint16_t sh = (uint16_t)_cvtss_sh(d * (float)sum, _MM_FROUND_TO_NEAREST_INT);
            memcpy(blk + 2, &sh, 2);
        }
        _mm256_storeu_si256((__m256i *)(blk + (with_sum ? 4 : 2)), q);
    }
}

static void avx2_quantize_row_q8_0(const float *x, void *y, int64_t n) {
    quantize_row_q8_x(x, y, n, 0);
}

static void avx2_quantize_row_q8_1(const float *x, void *y, int64_t n) {
    quantize_row_q8_x(x, y, n, 1);
}

/* Bit-exact with quantize_row_q8_K_ref, as x86_avx512.c's
 * avx512_quantize_row_q8_K: the scale from the first element of largest
 * magnitude (its sign included), values rounded to nearest even
 * (cvtps2dq in the default mode equals nearest_int below 2^22) and capped
 * at 127; a block holding a NaN goes to the reference. Every K-quant and
 * IQ4_XS matmul converts its activations with it (the scalar version took
 * ~3 % of a 110M IQ4_XS prompt). */
static void avx2_quantize_row_q8_K(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / CS_QK_K; i++) {
        const float *xb = x + i * CS_QK_K;
        __m256 vmax = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
        for (int k = 0; k < CS_QK_K / 8; k++) {
            const __m256 v = _mm256_loadu_ps(xb + 8 * k);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, v));
        }
        if (_mm256_movemask_ps(nan)) {
            quantize_row_q8_K_ref(xb, &y[i], CS_QK_K);
            continue;
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = 0.0f;
        for (int k = 0; k < CS_QK_K / 8; k++) {
            const int m = _mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8 * k)),
                              _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (m) {
                max = xb[8 * k + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        for (int k = 0; k < CS_QK_K / 16; k++) {
            const __m256i q0 = _mm256_min_epi32(
                _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(xb + 16 * k))), cap);
            const __m256i q1 = _mm256_min_epi32(
                _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(xb + 16 * k + 8))), cap);
            /* [-127, 127]: the saturating packs change nothing */
            const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
            _mm_storeu_si128(
                (__m128i *)(void *)(y[i].qs + 16 * k),
                _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1)));
            y[i].bsums[k] = (int16_t)hsum_i32x8(_mm256_add_epi32(q0, q1));
        }
        y[i].d = 1 / iscale;
    }
}

static void avx2_fp32_to_fp16_row(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = fp32_to_fp16(x[i]);
}

static void avx2_fp16_to_fp32_row(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_f16(x + i));
    for (; i < n; i++) y[i] = fp16_to_fp32(x[i]);
}

/* Round to nearest even; NaN -> quiet NaN (fp32_to_bf16's rule). */
CS_INLINE __m256i bf16_round8(__m256 v) {
    __m256i x = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(64));
    __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                        _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(r, nan, is_nan);
}

static void avx2_fp32_to_bf16_row(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = bf16_round8(_mm256_loadu_ps(x + i));
        __m256i b = bf16_round8(_mm256_loadu_ps(x + i + 8));
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(y + i), p);
    }
    for (; i < n; i++) y[i] = fp32_to_bf16(x[i]);
}

/* -------------------------------------------------------- element-wise */

static void avx2_axpy_f32(int64_t n, float a, const float *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void avx2_axpy_f16(int64_t n, float a, const uint16_t *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * fp16_to_fp32(x[i]);
}

/* ------------------------------------------------- gathered attention */

/* Gathered attention kernels (kernels.h) for nq <= KERNELS_ATTN_MQ queries
 * at once, the AVX2 counterparts of x86_avx512.c's: the queries of a
 * prompt's consecutive tokens (or a GQA group) read each cached row while
 * it is in L1, and each query is converted to f32 once per call instead of
 * once per cell. Per cell and query the float operations are those of
 * avx2_vec_dot_f16 / avx2_axpy_f16, so every result is bit-identical to
 * per-cell, per-query calls (tests/test_kernels.c checks it):
 * - scores: the 4 chained FMA accumulators over 32-element chunks,
 *   (a0 + a1) + (a2 + a3), then hsum8_ps's tree, evaluated for 8 cells
 *   together (reduce8_ps) and scaled and stored as one vector. Queries go
 *   in pairs (8 accumulators, the row converted once per pair).
 * - accumulation: per cell in order, out[g] += f16(w[g][j]) * row, 32
 *   elements of 2 queries in 8 accumulator registers at a time, the
 *   probabilities rounded to f16 8 at a time.
 * Head dims other than multiples of 32 up to 256 take the per-query loops.
 * Cost per cell and query for hd = 64 and 4 queries: 4 conversions, 8
 * FMAs, 3 adds and ~2 reduction instructions for the score; 4 conversions
 * and 8 FMAs for the accumulation (per-cell calls: 24 conversions, 16
 * FMAs, a horizontal sum, 8 loads and stores of out and a scalar f16
 * rounding). */
#define ATTN_MAX_HD 256

/* r[c] = hsum8_ps(v[c]) for c = 0..7 in one vector: hsum8_ps's pairs at
 * every level (lanes i + 4, then i + 2, then i + 1), so each lane is
 * bit-identical to hsum8_ps of its vector. */
CS_INLINE __m256 reduce8_ps(const __m256 *v) {
    __m256 a[4], b[2];
    /* level 1: [s4(v[2i]) | s4(v[2i + 1])] */
    for (int i = 0; i < 4; i++)
        a[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
    /* level 2: [s2(v[4i]), s2(v[4i + 2]) | s2(v[4i + 1]), s2(v[4i + 3])] */
    for (int i = 0; i < 2; i++)
        b[i] = _mm256_add_ps(_mm256_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44),
                             _mm256_shuffle_ps(a[2 * i], a[2 * i + 1], 0xEE));
    /* level 3: [v0, v2, v4, v6 | v1, v3, v5, v7] */
    const __m256 r =
        _mm256_add_ps(_mm256_shuffle_ps(b[0], b[1], 0x88), _mm256_shuffle_ps(b[0], b[1], 0xDD));
    return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The scores of nq queries (qf: f32 rows of ATTN_MAX_HD) over n cells, nv
 * (= hd / 8, a multiple of 4) and nq compile-time constants at every call. */
CS_INLINE void attn_scores_mq(const int nv, const int nq, int32_t n, const uint8_t *base,
                              size_t stride, const int32_t *idx, const float *qf, float scale,
                              float *const *s) {
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int32_t j0 = 0; j0 < n; j0 += 8) {
        const int m = n - j0 < 8 ? n - j0 : 8;
        __m256 part[KERNELS_ATTN_MQ][8];
        for (int u = 0; u < 8; u++) {
            if (u >= m) { /* padding cells of the last group: never stored */
                for (int g = 0; g < nq; g++) part[g][u] = _mm256_setzero_ps();
                continue;
            }
            const uint16_t *x =
                (const uint16_t *)(const void *)(base + (size_t)idx[j0 + u] * stride);
            if (j0 + u + 2 < n)
                _mm_prefetch((const char *)(base + (size_t)idx[j0 + u + 2] * stride), _MM_HINT_T0);
            for (int g0 = 0; g0 < nq; g0 += 2) {
                const int ng = nq - g0 < 2 ? nq - g0 : 2;
                __m256 a[2][4];
                for (int g = 0; g < ng; g++)
                    for (int c = 0; c < 4; c++) a[g][c] = _mm256_setzero_ps();
                for (int c = 0; c < nv; c++) {
                    const __m256 xv = load_f16(x + 8 * c);
                    for (int g = 0; g < ng; g++)
                        a[g][c & 3] = _mm256_fmadd_ps(
                            xv, _mm256_load_ps(qf + (size_t)(g0 + g) * ATTN_MAX_HD + 8 * c),
                            a[g][c & 3]);
                }
                for (int g = 0; g < ng; g++)
                    part[g0 + g][u] = _mm256_add_ps(_mm256_add_ps(a[g][0], a[g][1]),
                                                    _mm256_add_ps(a[g][2], a[g][3]));
            }
        }
        for (int g = 0; g < nq; g++)
            _mm256_maskstore_ps(s[g] + j0, tail_mask(m),
                                _mm256_mul_ps(reduce8_ps(part[g]), vscale));
    }
}

static void avx2_attn_scores_f16(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                                 const int32_t *idx, int32_t nq, const uint16_t *const *q,
                                 float scale, float *const *s) {
    if (hd % 32 != 0 || hd > ATTN_MAX_HD || nq < 1 || nq > KERNELS_ATTN_MQ) {
        kernels_attn_scores_each(avx2_vec_dot_f16, hd, n, base, stride, idx, nq, q, scale, s);
        return;
    }
    const int nv = (int)(hd / 8);
    float qf[KERNELS_ATTN_MQ * ATTN_MAX_HD] __attribute__((aligned(32)));
    for (int32_t g = 0; g < nq; g++)
        for (int v = 0; v < nv; v++)
            _mm256_store_ps(qf + (size_t)g * ATTN_MAX_HD + 8 * v, load_f16(q[g] + 8 * v));
#define ATTN_SCORES_CASE(NV, NQ)                                                                   \
    case (NV)*8 + (NQ):                                                                            \
        attn_scores_mq(NV, NQ, n, base, stride, idx, qf, scale, s);                                \
        return;
    switch (nv * 8 + nq) {
        KERNELS_ATTN_NQ_CASES(ATTN_SCORES_CASE, 4)
        KERNELS_ATTN_NQ_CASES(ATTN_SCORES_CASE, 8)
        KERNELS_ATTN_NQ_CASES(ATTN_SCORES_CASE, 16)
        KERNELS_ATTN_NQ_CASES(ATTN_SCORES_CASE, 32)
    default: /* hd = 96, 160, 192, 224: the same kernel, nv at run time */
        for (int32_t g0 = 0; g0 < nq; g0++)
            attn_scores_mq(nv, 1, n, base, stride, idx, qf + (size_t)g0 * ATTN_MAX_HD, scale,
                           s + g0);
    }
#undef ATTN_SCORES_CASE
}

/* out[g] += f16(w[g][j]) * row j, elements 8 * v0 .. 8 * (v0 + nb) - 1, for
 * ng (1 or 2) queries, nb (4 or 8) vectors: ng * nb <= 8 accumulators of
 * the 16 ymm registers. Each element's sum runs over j in order whatever
 * the split, so blocks change no bit. */
CS_INLINE void attn_accum_block(const int ng, const int nb, int v0, int32_t n, const uint8_t *base,
                                size_t stride, const int32_t *idx, const float *const *w,
                                float *const *out) {
    __m256 acc[2][8];
    for (int g = 0; g < ng; g++)
        for (int v = 0; v < nb; v++) acc[g][v] = _mm256_loadu_ps(out[g] + 8 * (v0 + v));
    for (int32_t j = 0; j < n; j += 8) {
        const int32_t m = n - j < 8 ? n - j : 8;
        float wr[2][8];
        for (int g = 0; g < ng; g++) /* round to nearest even, as fp32_to_fp16 */
            _mm256_storeu_ps(wr[g], _mm256_cvtph_ps(_mm256_cvtps_ph(
                                        _mm256_maskload_ps(w[g] + j, tail_mask(m)), CS_RND)));
        for (int32_t u = 0; u < m; u++) {
            const uint16_t *x =
                (const uint16_t *)(const void *)(base + (size_t)idx[j + u] * stride) + 8 * v0;
            __m256 wv[2];
            for (int g = 0; g < ng; g++) wv[g] = _mm256_set1_ps(wr[g][u]);
            for (int v = 0; v < nb; v++) {
                const __m256 xv = load_f16(x + 8 * v);
                for (int g = 0; g < ng; g++) acc[g][v] = _mm256_fmadd_ps(wv[g], xv, acc[g][v]);
            }
        }
    }
    for (int g = 0; g < ng; g++)
        for (int v = 0; v < nb; v++) _mm256_storeu_ps(out[g] + 8 * (v0 + v), acc[g][v]);
}

/* Queries in pairs, 32 elements a pass; a lone query 64 a pass, so a
 * 64-element head (a decode step without GQA) is read in one pass over
 * its cells, not two (110M F16 cache, 12 layers x 4096 cells: 10.4 -> 28.9 GB/s
 * of V, docs/BENCH.md "Attention over a deep cache"). */
static void avx2_attn_accum_f16(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                                const int32_t *idx, int32_t nq, const float *const *w,
                                float *const *out) {
    if (hd % 32 != 0 || nq < 1 || nq > KERNELS_ATTN_MQ) {
        kernels_attn_accum_each(avx2_axpy_f16, hd, n, base, stride, idx, nq, w, out);
        return;
    }
    const int nv = (int)(hd / 8);
    for (int32_t g0 = 0; g0 < nq; g0 += 2) {
        if (nq - g0 >= 2) {
            for (int v0 = 0; v0 < nv; v0 += 4)
                attn_accum_block(2, 4, v0, n, base, stride, idx, w + g0, out + g0);
            continue;
        }
        int v0 = 0;
        for (; v0 + 8 <= nv; v0 += 8)
            attn_accum_block(1, 8, v0, n, base, stride, idx, w + g0, out + g0);
        if (v0 < nv) attn_accum_block(1, 4, v0, n, base, stride, idx, w + g0, out + g0);
    }
}

static void avx2_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 sq = _mm256_mul_ps(v, v); /* rounded to float, as ggml does */
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    double sum = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    const __m256 vs = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
                                                _mm256_loadu_ps(w + i)));
    for (; i < n; i++) out[i] = x[i] * scale * w[i];
}

static void avx2_softmax(float *x, int64_t n) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(vmax, 1), _mm256_castps256_ps128(vmax));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float max = _mm_cvtss_f32(m4);
    for (; i < n; i++)
        if (x[i] > max) max = x[i];
    const __m256 vm = _mm256_set1_ps(max);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double sum = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) {
        float e = expf(x[i] - max);
        x[i] = e;
        sum += (double)e;
    }
    const float inv = (float)(1.0 / sum);
    const __m256 vi = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
    for (; i < n; i++) x[i] *= inv;
}

static void avx2_swiglu(float *out, const float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 e = exp8(_mm256_xor_ps(v, neg));
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        float v = g[i];
        out[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

/* Bit-exact with ref_rope: separate multiplies and one add/sub, no FMA. */
static void avx2_rope(float *x, int64_t n_head, int64_t head_dim, int32_t n_rot, int32_t mode,
                      const float *cs) {
    const int32_t half = n_rot / 2;
    const bool neox = (mode & CS_ROPE_NEOX) != 0;
    for (int64_t h = 0; h < n_head; h++) {
        float *r = x + h * head_dim;
        int32_t k = 0;
        if (!neox) {
            for (; k + 4 <= half; k += 4) {
                __m256 v = _mm256_loadu_ps(r + 2 * k);
                __m256 c = _mm256_loadu_ps(cs + 2 * k);
                __m256 p = _mm256_mul_ps(v, _mm256_moveldup_ps(c));
                __m256 q = _mm256_mul_ps(_mm256_permute_ps(v, 0xb1), _mm256_movehdup_ps(c));
                _mm256_storeu_ps(r + 2 * k, _mm256_addsub_ps(p, q));
            }
        } else {
            for (; k + 8 <= half; k += 8) {
                __m256 c0 = _mm256_loadu_ps(cs + 2 * k), c1 = _mm256_loadu_ps(cs + 2 * k + 8);
                __m256 vc = _mm256_castpd_ps(
                    _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(c0, c1, 0x88)), 0xd8));
                __m256 vs = _mm256_castpd_ps(
                    _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(c0, c1, 0xdd)), 0xd8));
                __m256 a = _mm256_loadu_ps(r + k), b = _mm256_loadu_ps(r + k + half);
                _mm256_storeu_ps(r + k, _mm256_sub_ps(_mm256_mul_ps(a, vc), _mm256_mul_ps(b, vs)));
                _mm256_storeu_ps(r + k + half,
                                 _mm256_add_ps(_mm256_mul_ps(a, vs), _mm256_mul_ps(b, vc)));
            }
        }
        for (; k < half; k++) {
            float *pa = neox ? &r[k] : &r[2 * k];
            float *pb = neox ? &r[k + half] : &r[2 * k + 1];
            const float c = cs[2 * k], s = cs[2 * k + 1];
            const float a = *pa, b = *pb;
            *pa = a * c - b * s;
            *pb = a * s + b * c;
        }
    }
}

/* --------------------------------------------------------------- table */

/* Starts from the reference table (kernels_init_ref): Q8_K activations stay
 * on the scalar converter (O(K) per token against O(N*K) for the dots).
 * One row per weight type (and per vec_dot_type for from_float). */
static kernels_table k_avx2;
static pthread_once_t k_avx2_once = PTHREAD_ONCE_INIT;

static void avx2_init(void) {
    kernels_table *k = &k_avx2;
    kernels_init_ref(k, "avx2");
    k->vec_dot[CS_TYPE_F32] = avx2_vec_dot_f32;
    k->vec_dot[CS_TYPE_F16] = avx2_vec_dot_f16;
    k->vec_dot[CS_TYPE_BF16] = avx2_vec_dot_bf16;
    k->vec_dot[CS_TYPE_Q8_0] = avx2_vec_dot_q8_0_q8_0;
    k->vec_dot[CS_TYPE_Q4_0] = avx2_vec_dot_q4_0_q8_0;
    k->vec_dot[CS_TYPE_Q2_K] = vec_dot_q2_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q3_K] = vec_dot_q3_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q4_1] = avx2_vec_dot_q4_1_q8_1;
    k->vec_dot[CS_TYPE_Q5_0] = avx2_vec_dot_q5_0_q8_0;
    k->vec_dot[CS_TYPE_Q5_1] = avx2_vec_dot_q5_1_q8_1;
    k->vec_dot[CS_TYPE_Q4_K] = vec_dot_q4_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q5_K] = vec_dot_q5_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q6_K] = vec_dot_q6_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_IQ4_NL] = vec_dot_iq4_nl_q8_0_avx2;
    k->vec_dot[CS_TYPE_IQ4_XS] = vec_dot_iq4_xs_q8_K_avx2;

    k->from_float[CS_TYPE_F16] = avx2_fp32_to_fp16_row;
    k->from_float[CS_TYPE_BF16] = avx2_fp32_to_bf16_row;
    k->from_float[CS_TYPE_Q8_0] = avx2_quantize_row_q8_0;
    k->from_float[CS_TYPE_Q8_1] = avx2_quantize_row_q8_1;
    k->from_float[CS_TYPE_Q8_K] = avx2_quantize_row_q8_K;

    k->ukernel[CS_TYPE_F32] =
        (matmul_ukernel){UK_RB, UK_TB, uk_f32_tile, uk_f32_col, 0, NULL, 0, NULL};
    k->ukernel[CS_TYPE_F16] =
        (matmul_ukernel){UK_RB, UK_TB, uk_f16_tile, uk_f16_col, 0, NULL, 0, NULL};
    k->ukernel[CS_TYPE_BF16] =
        (matmul_ukernel){UK_RB, UK_TB, uk_bf16_tile, uk_bf16_col, 0, NULL, 0, NULL};
    k->ukernel[CS_TYPE_Q8_0] =
        (matmul_ukernel){UK_RB, UK_TB, uk_q8_tile, uk_q8_col, 0, NULL, 0, NULL};
    k->ukernel[CS_TYPE_Q4_0] =
        (matmul_ukernel){UK_RB, UK_TB, uk_q4_tile, uk_q4_col, 0, NULL, 0, NULL};
    kernels_x16_avx2(k);
    kernels_x16_q5k_avx2(k);
    kernels_x16_legacy_avx2(k);
    kernels_x16_kquants_avx2(k);

    k->vec_dot_f16_f32 = avx2_vec_dot_f16_f32;
    k->fp16_to_fp32_row = avx2_fp16_to_fp32_row;
    k->axpy_f32 = avx2_axpy_f32;
    k->axpy_f16 = avx2_axpy_f16;
    k->rmsnorm = avx2_rmsnorm;
    k->softmax = avx2_softmax;
    k->swiglu = avx2_swiglu;
    k->rope = avx2_rope;
    k->attn_scores_f16 = avx2_attn_scores_f16;
    k->attn_accum_f16 = avx2_attn_accum_f16;
}

const kernels_table *kernels_avx2_table(void) {
    pthread_once(&k_avx2_once, avx2_init);
    return &k_avx2;
}

/* The AVX2 table with the VNNI x16 micro-kernels (x16_avxvnni.c). */
static kernels_table k_avxvnni, k_avxvnni_evex;
static pthread_once_t k_avxvnni_once = PTHREAD_ONCE_INIT;

static void avxvnni_init(void) {
    k_avxvnni = *kernels_avx2_table();
    k_avxvnni.name = "avxvnni";
    kernels_x16_avxvnni(&k_avxvnni);
    k_avxvnni_evex = *kernels_avx2_table();
    k_avxvnni_evex.name = "avxvnni_evex";
    kernels_x16_avxvnni_evex(&k_avxvnni_evex);
}

const kernels_table *kernels_avxvnni_table(void) {
    pthread_once(&k_avxvnni_once, avxvnni_init);
    return &k_avxvnni;
}

const kernels_table *kernels_avxvnni_evex_table(void) {
    pthread_once(&k_avxvnni_once, avxvnni_init);
    return &k_avxvnni_evex;
}

#endif /* x86 */
