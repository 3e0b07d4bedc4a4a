/* x86_avx512.c: the AVX-512 (F, BW, VL, DQ) kernel table and matmul
 * micro-kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
 * plus the AVX2/FMA/F16C set; entered only after kernels.c checked all of
 * them. The int8 dots use maddubs + madd (AVX512BW, every AVX-512 CPU), or
 * vpdpbusd (inline asm) in the VNNI micro-kernels, which kernels.c hands
 * out only when cpuid reports AVX512_VNNI; both give the same int32 lane
 * sums, hence bit-identical results. Q4_0 weights stay unsigned nibbles
 * (u8 operand) and the -8 offset is folded in as -8 * (sum of the lane's 4
 * activation bytes). Tails use masked loads, so every lane of every
 * accumulator runs the same operation sequence.
 *
 * Matmul micro-kernels: rb = 4 weight rows x tb = 4 tokens, 16 zmm
 * accumulators (one per output). The quantized kernels take two 32-element
 * blocks per zmm (lanes 0-7 block b, lanes 8-15 block b+1), an odd last
 * block pairs with zeros. Tile and column kernels share the per-output
 * operation sequence (see matmul.h). The column kernel (T = 1, a GEMV bound
 * by memory bandwidth) walks its rows one at a time so the weights stream
 * in one sequential pass the hardware prefetcher follows: 2 or 4 rows side
 * by side measured 2.5-3x slower on the 110M model's matrices. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "../common.h"
#include "iquants.h"
#include "kernels.h"
#include "kquants.h"
#include "matmul.h"
#include "quant_legacy.h"
#include "simd_x86.h"

/* ------------------------------------------------------------ helpers */

/* Fixed-order horizontal sum (deterministic). */
CS_INLINE float hsum16(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CS_INLINE double hsum8d(__m512d v) {
    __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

CS_INLINE __mmask16 mask16(int64_t n) {
    return (__mmask16)((1u << n) - 1u);
}

CS_INLINE __m512 load_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
CS_INLINE __m512 load_f16_tail(const uint16_t *p, int64_t n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask16(n), p));
}
CS_INLINE __m512 cvt_16(__m256i v, const int is_bf16) {
    if (is_bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
    return _mm512_cvtph_ps(v);
}

/* exp(x): same algorithm and constants as the AVX2 version (about 2 ulp;
 * below -87.3 gives 0, above 88 saturates). */
CS_INLINE __m512 exp16(__m512 x) {
    const __mmask16 zero_below = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(
        _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps((__mmask16)~zero_below, y);
}

/* --------------------------------------------------------------- dots */

static void avx512_vec_dot_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), a0);
    if (i < n) {
        __mmask16 m = mask16(n - i);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), a1);
    }
    *s = hsum16(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

static void avx512_vec_dot_f16(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx, *y = vy;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(load_f16(x + i), load_f16(y + i), a0);
        a1 = _mm512_fmadd_ps(load_f16(x + i + 16), load_f16(y + i + 16), a1);
        a2 = _mm512_fmadd_ps(load_f16(x + i + 32), load_f16(y + i + 32), a2);
        a3 = _mm512_fmadd_ps(load_f16(x + i + 48), load_f16(y + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(load_f16(x + i), load_f16(y + i), a0);
    if (i < n) a1 = _mm512_fmadd_ps(load_f16_tail(x + i, n - i), load_f16_tail(y + i, n - i), a1);
    *s = hsum16(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

static void avx512_axpy_f16(int64_t n, float a, const uint16_t *x, float *y);

/* Gathered attention kernels (kernels.h), for nq <= KERNELS_ATTN_MQ
 * queries at once: each cell's row is loaded and converted once for all of
 * them (the queries of a prompt's consecutive tokens, or a GQA group, see
 * the batch's one list of cells). The per-cell operations are those of
 * avx512_vec_dot_f16 / avx512_axpy_f16, so every result is bit-identical
 * to per-cell, per-query calls:
 * - scores: per cell and query the 4 chained FMA accumulators over 64-element
 *   chunks, (a0 + a1) + (a2 + a3), then hsum16's tree (lanes i + 8, i + 4,
 *   i + 2, i + 1). The trees of 16 cells are evaluated together
 *   (reduce16_ps: the same pairs added, as shuffles of 16 vectors, 46
 *   instructions instead of 16 x ~8 scalar-lane ones), and the 16 scores are
 *   scaled and stored as one vector.
 * - accumulation: per cell in order, out[g] += f16(w[g][j]) * row, the
 *   accumulators of 16 / (hd / 16) queries in registers.
 * Row dimensions other than multiples of 64 up to 256 (scores) or of 16 up
 * to 128 (accumulation) take the per-query loops. Cost per cell and query
 * for hd = 64 and 4 queries: 1 conversion, 4 FMAs, 3 adds, ~3 reduction
 * instructions for the score; 1 conversion, 4 FMAs for the accumulation. */
#define ATTN_MAX_HD 256

/* r[j] = hsum16(v[j]) for j = 0..15, in one vector: hsum16's pairs at
 * every level (i + 8, then i + 4, i + 2, i + 1), so each lane is
 * bit-identical to hsum16 of its vector. */
CS_INLINE __m512 reduce16_ps(const __m512 *v) {
    __m512 a[8], b[4], c[2];
    /* level 1: lanes i + i+8 of two vectors -> [s8(v0) | s8(v1)] */
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    /* level 2: quarters 0+1 and 2+3 -> [s4(v0) | s4(v1) | s4(v2) | s4(v3)] */
    for (int i = 0; i < 4; i++)
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xDD));
    /* level 3: in quarter q, elements 0+2 and 1+3 of vector q of b[2i] and
     * of b[2i+1] -> quarter q = [s2(v 4(2i)/.. ] (cells q and 4 + q of the
     * pair) */
    for (int i = 0; i < 2; i++)
        c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xEE));
    /* level 4: elements 0+1 -> quarter q = cells q, 4 + q, 8 + q, 12 + q */
    const __m512 r =
        _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xDD));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, r);
}

/* The nq queries widened to f32 rows of nv * 16, ATTN_MAX_HD apart (the
 * scores kernels' operands). */
CS_INLINE void attn_queries_f32(const int nv, int32_t nq, const uint16_t *const *q, float *qf) {
    for (int32_t g = 0; g < nq; g++)
        for (int v = 0; v < nv; v++)
            _mm512_store_ps(qf + (size_t)g * ATTN_MAX_HD + 16 * v, load_f16(q[g] + 16 * v));
}

/* The scores kernels' instantiations, CASE(nv, nq) for head dims 64, 128,
 * 192 and 256 and 1 .. KERNELS_ATTN_MQ queries. */
#define ATTN_SCORES_SWITCH(nv, nq, CASE)                                                           \
    switch ((nv)*8 + (nq)) {                                                                       \
        KERNELS_ATTN_NQ_CASES(CASE, 4)                                                             \
        KERNELS_ATTN_NQ_CASES(CASE, 8)                                                             \
        KERNELS_ATTN_NQ_CASES(CASE, 12)                                                            \
        KERNELS_ATTN_NQ_CASES(CASE, 16)                                                            \
    }

/* The scores of nq queries (q as f32 rows of nv * 16) over n cells, nv and
 * nq compile-time constants at every call so the row and the accumulators
 * stay in registers. */
CS_INLINE void attn_scores_mq(const int nv, const int nq, int32_t n, const uint8_t *base,
                              size_t stride, const int32_t *idx, const float *qf, float scale,
                              float *const *s) {
    __m512 part[KERNELS_ATTN_MQ][16];
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int32_t j0 = 0; j0 < n; j0 += 16) {
        const int m = n - j0 < 16 ? n - j0 : 16;
        for (int u = 0; u < 16; u++) {
            if (u >= m) { /* padding cells of the last group: never stored */
                for (int g = 0; g < nq; g++) part[g][u] = _mm512_setzero_ps();
                continue;
            }
            const uint16_t *x = (const uint16_t *)(base + (size_t)idx[j0 + u] * stride);
            if (j0 + u + 2 < n)
                _mm_prefetch((const char *)(base + (size_t)idx[j0 + u + 2] * stride), _MM_HINT_T0);
            __m512 xr[ATTN_MAX_HD / 16];
            for (int v = 0; v < nv; v++) xr[v] = load_f16(x + 16 * v);
            for (int g = 0; g < nq; g++) {
                const float *qg = qf + (size_t)g * ATTN_MAX_HD;
                __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (int c = 0; c < nv; c += 4) {
                    a0 = _mm512_fmadd_ps(xr[c], _mm512_load_ps(qg + 16 * c), a0);
                    a1 = _mm512_fmadd_ps(xr[c + 1], _mm512_load_ps(qg + 16 * (c + 1)), a1);
                    a2 = _mm512_fmadd_ps(xr[c + 2], _mm512_load_ps(qg + 16 * (c + 2)), a2);
                    a3 = _mm512_fmadd_ps(xr[c + 3], _mm512_load_ps(qg + 16 * (c + 3)), a3);
                }
                part[g][u] = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
            }
        }
        for (int g = 0; g < nq; g++)
            _mm512_mask_storeu_ps(s[g] + j0, mask16(m),
                                  _mm512_mul_ps(reduce16_ps(part[g]), vscale));
    }
}

static void avx512_attn_scores_f16(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                                   const int32_t *idx, int32_t nq, const uint16_t *const *q,
                                   float scale, float *const *s) {
    if (hd % 64 != 0 || hd > ATTN_MAX_HD || nq < 1 || nq > KERNELS_ATTN_MQ) {
        kernels_attn_scores_each(avx512_vec_dot_f16, hd, n, base, stride, idx, nq, q, scale, s);
        return;
    }
    const int nv = (int)(hd / 16);
    float qf[KERNELS_ATTN_MQ * ATTN_MAX_HD] __attribute__((aligned(64)));
    attn_queries_f32(nv, nq, q, qf);
#define ATTN_SCORES_CASE(NV, NQ)                                                                   \
    case (NV)*8 + (NQ):                                                                            \
        attn_scores_mq(NV, NQ, n, base, stride, idx, qf, scale, s);                                \
        return;
    ATTN_SCORES_SWITCH(nv, nq, ATTN_SCORES_CASE)
#undef ATTN_SCORES_CASE
}

/* r[i] <- element i of every r[u] (lane u): a 16 x 16 transpose in four
 * rounds of 16 shuffles (pairs, quads, 128-bit lanes twice). */
CS_INLINE void transpose16_ps(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4i + e], 128-bit lane k: element 4k + e of rows 4i .. 4i + 3 */
    __m512 u[16];
    for (int i = 0; i < 4; i++)
        for (int h = 0; h < 2; h++) {
            const __m512d a = _mm512_castps_pd(t[4 * i + h]),
                          b = _mm512_castps_pd(t[4 * i + 2 + h]);
            u[4 * i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[4 * i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    for (int e = 0; e < 4; e++) {
        const __m512 a = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88);
        const __m512 b = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xDD);
        const __m512 c = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88);
        const __m512 d = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xDD);
        r[e] = _mm512_shuffle_f32x4(a, c, 0x88);
        r[8 + e] = _mm512_shuffle_f32x4(a, c, 0xDD);
        r[4 + e] = _mm512_shuffle_f32x4(b, d, 0x88);
        r[12 + e] = _mm512_shuffle_f32x4(b, d, 0xDD);
    }
}

/* kernels.h's key blocks: 16 cells' rows converted, 16 elements at a time
 * transposed. Cost per cell: hd / 16 conversions, hd / 4 shuffles, hd / 16
 * stores, paid once per head for all of a prompt's queries. */
static void avx512_attn_kt_f16(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                               const int32_t *idx, float *kt) {
    for (int32_t j0 = 0; j0 < n; j0 += 16) {
        const int m = n - j0 < 16 ? n - j0 : 16;
        float *blk = kt + (size_t)(j0 / 16) * (size_t)hd * 16;
        for (int64_t c = 0; c < hd; c += 16) {
            __m512 r[16];
            for (int u = 0; u < 16; u++)
                r[u] = u < m
                           ? load_f16((const uint16_t *)(const void *)(base + (size_t)idx[j0 + u] *
                                                                                  stride) +
                                      c)
                           : _mm512_setzero_ps();
            transpose16_ps(r);
            for (int i = 0; i < 16; i++) _mm512_store_ps(blk + (size_t)(c + i) * 16, r[i]);
        }
    }
}

/* Lane l's value before hsum16's tree for query q over the 16 cells of a
 * key block, as attn_scores_mq forms it per cell: chain k (0..3) adds,
 * for c = 0, 4, .., element 16 (c + k) + l times the query's, then
 * (a0 + a1) + (a2 + a3). */
CS_INLINE __m512 kt_leaf(const float *blk, const float *q, const int nv, int l) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
    for (int c = 0; c < nv; c += 4)
        for (int k = 0; k < 4; k++) {
            const int i = 16 * (c + k) + l;
            a[k] =
                _mm512_fmadd_ps(_mm512_load_ps(blk + (size_t)i * 16), _mm512_set1_ps(q[i]), a[k]);
        }
    return _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
}

/* The scores of nq queries (f32 rows of nv * 16, ATTN_MAX_HD apart) for
 * cells [j0, j1) from the key blocks, nv and nq compile-time constants.
 * hsum16's tree (lanes l + 8, then + 4, + 2, + 1) is walked between
 * vectors, depth first: step u (0..7) forms the level-1 pair of leaves l
 * and l + 8 for l = bitrev3(u) (0, 4, 2, 6, 1, 5, 3, 7), then closes as
 * many pairs as u has trailing one bits, so at most 3 partial sums per
 * query wait on a small stack. Kept a loop: unrolled, the compiler
 * computes every leaf first and spills them. Per block and query: hd
 * FMAs and hd / 16 * 3 + 15 adds, where the per-cell kernel also spends
 * ~46 shuffles on the 16 lane trees. */
CS_INLINE void attn_scores_kt_mq(const int nv, const int nq, int32_t j0, int32_t j1,
                                 const float *kt, const float *qf, float scale, float *const *s) {
    static const uint8_t pair_lane[8] = {0, 4, 2, 6, 1, 5, 3, 7};
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int32_t b = j0 / 16; b * 16 < j1; b++) {
        const float *blk = kt + (size_t)b * (size_t)nv * 256;
        const int32_t lo = b * 16 < j0 ? j0 - b * 16 : 0;
        const int32_t hi = j1 - b * 16 < 16 ? j1 - b * 16 : 16;
        const __mmask16 m = (__mmask16)(mask16(hi) & ~mask16(lo));
        __m512 st[KERNELS_ATTN_MQ][3];
        int sp = 0;
#pragma GCC unroll 1
        for (int u = 0; u < 8; u++) {
            const int l = pair_lane[u];
            __m512 v[KERNELS_ATTN_MQ];
            for (int g = 0; g < nq; g++) {
                const float *q = qf + (size_t)g * ATTN_MAX_HD;
                v[g] = _mm512_add_ps(kt_leaf(blk, q, nv, l), kt_leaf(blk, q, nv, l + 8));
            }
            for (int t = u; t & 1; t >>= 1) {
                sp--;
                for (int g = 0; g < nq; g++) v[g] = _mm512_add_ps(st[g][sp], v[g]);
            }
            if (u == 7) {
                for (int g = 0; g < nq; g++)
                    _mm512_mask_storeu_ps(s[g] + (size_t)b * 16, m, _mm512_mul_ps(v[g], vscale));
                break;
            }
            for (int g = 0; g < nq; g++) st[g][sp] = v[g];
            sp++;
        }
    }
}

static void avx512_attn_scores_kt_f16(int64_t hd, int32_t j0, int32_t j1, const float *kt,
                                      int32_t nq, const uint16_t *const *q, float scale,
                                      float *const *s) {
    CS_ASSERT(KERNELS_ATTN_KT_HD(hd) && nq >= 1 && nq <= KERNELS_ATTN_MQ);
    const int nv = (int)(hd / 16);
    float qf[KERNELS_ATTN_MQ * ATTN_MAX_HD] __attribute__((aligned(64)));
    attn_queries_f32(nv, nq, q, qf);
#define ATTN_SCORES_KT_CASE(NV, NQ)                                                                \
    case (NV)*8 + (NQ):                                                                            \
        attn_scores_kt_mq(NV, NQ, j0, j1, kt, qf, scale, s);                                       \
        return;
    ATTN_SCORES_SWITCH(nv, nq, ATTN_SCORES_KT_CASE)
#undef ATTN_SCORES_KT_CASE
}

/* out[g] += f16(w[g][j]) * row j for ng queries, nv and ng compile-time
 * constants (nv * ng <= 16 accumulators in registers). */
CS_INLINE void attn_accum_mq(const int nv, const int ng, int32_t n, const uint8_t *base,
                             size_t stride, const int32_t *idx, const float *const *w,
                             float *const *out) {
    __m512 acc[16];
    for (int g = 0; g < ng; g++)
        for (int v = 0; v < nv; v++) acc[g * nv + v] = _mm512_loadu_ps(out[g] + 16 * v);
    for (int32_t j = 0; j < n; j += 16) {
        /* 16 probabilities of each query rounded to f16 at once (round to
         * nearest even) */
        const int32_t m = n - j < 16 ? n - j : 16;
        float wr[KERNELS_ATTN_MQ][16];
        for (int g = 0; g < ng; g++)
            _mm512_storeu_ps(
                wr[g], _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_maskz_loadu_ps(mask16(m), w[g] + j),
                                                       _MM_FROUND_TO_NEAREST_INT)));
        for (int32_t u = 0; u < m; u++) {
            const uint16_t *x = (const uint16_t *)(base + (size_t)idx[j + u] * stride);
            if (j + u + 2 < n)
                _mm_prefetch((const char *)(base + (size_t)idx[j + u + 2] * stride), _MM_HINT_T0);
            __m512 wv[KERNELS_ATTN_MQ];
            for (int g = 0; g < ng; g++) wv[g] = _mm512_set1_ps(wr[g][u]);
            for (int v = 0; v < nv; v++) {
                const __m512 xv = load_f16(x + 16 * v);
                for (int g = 0; g < ng; g++)
                    acc[g * nv + v] = _mm512_fmadd_ps(wv[g], xv, acc[g * nv + v]);
            }
        }
    }
    for (int g = 0; g < ng; g++)
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(out[g] + 16 * v, acc[g * nv + v]);
}

static void avx512_attn_accum_f16(int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                                  const int32_t *idx, int32_t nq, const float *const *w,
                                  float *const *out) {
    const int nv = (int)(hd / 16);
    if (hd % 16 != 0 || (nv != 4 && nv != 8) || nq < 1 || nq > KERNELS_ATTN_MQ) {
        kernels_attn_accum_each(avx512_axpy_f16, hd, n, base, stride, idx, nq, w, out);
        return;
    }
    /* hd = 64: all queries in one pass; hd = 128: two at a time */
    for (int32_t g0 = 0; g0 < nq; g0 += 16 / nv) {
        const int ng = nq - g0 < 16 / nv ? nq - g0 : 16 / nv;
#define ATTN_ACCUM_CASE(NV, NG)                                                                    \
    case (NV)*8 + (NG):                                                                            \
        attn_accum_mq(NV, NG, n, base, stride, idx, w + g0, out + g0);                             \
        break;
        switch (nv * 8 + ng) {
            KERNELS_ATTN_NQ_CASES(ATTN_ACCUM_CASE, 4)
            ATTN_ACCUM_CASE(8, 1)
            ATTN_ACCUM_CASE(8, 2)
        }
#undef ATTN_ACCUM_CASE
    }
}

static void avx512_vec_dot_f16_f32(int64_t n, float *s, const uint16_t *x, const float *y) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(load_f16(x + i), _mm512_loadu_ps(y + i), a0);
        a1 = _mm512_fmadd_ps(load_f16(x + i + 16), _mm512_loadu_ps(y + i + 16), a1);
        a2 = _mm512_fmadd_ps(load_f16(x + i + 32), _mm512_loadu_ps(y + i + 32), a2);
        a3 = _mm512_fmadd_ps(load_f16(x + i + 48), _mm512_loadu_ps(y + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(load_f16(x + i), _mm512_loadu_ps(y + i), a0);
    if (i < n)
        a1 = _mm512_fmadd_ps(load_f16_tail(x + i, n - i),
                             _mm512_maskz_loadu_ps(mask16(n - i), y + i), a1);
    *s = hsum16(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* ------------------------------------------------ matmul micro-kernels */

CS_INLINE void tile_f32(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int RB, const int TB) {
    __m512 acc[4][4];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 xv[4];
        for (int t = 0; t < TB; t++) xv[t] = _mm512_loadu_ps((const float *)x[t] + k);
        for (int r = 0; r < RB; r++) {
            __m512 wv = _mm512_loadu_ps((const float *)w[r] + k);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    if (k < K) {
        const __mmask16 m = mask16(K - k);
        __m512 xv[4];
        for (int t = 0; t < TB; t++) xv[t] = _mm512_maskz_loadu_ps(m, (const float *)x[t] + k);
        for (int r = 0; r < RB; r++) {
            __m512 wv = _mm512_maskz_loadu_ps(m, (const float *)w[r] + k);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = hsum16(acc[r][t]);
}

CS_INLINE void tile_16(int64_t K, const void *const *w, const void *const *x, float *out,
                       const int RB, const int TB, const int is_bf16) {
    __m512 acc[4][4];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 xv[4];
        for (int t = 0; t < TB; t++)
            xv[t] =
                cvt_16(_mm256_loadu_si256((const __m256i *)((const uint16_t *)x[t] + k)), is_bf16);
        for (int r = 0; r < RB; r++) {
            __m512 wv =
                cvt_16(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w[r] + k)), is_bf16);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    if (k < K) {
        const __mmask16 m = mask16(K - k);
        __m512 xv[4];
        for (int t = 0; t < TB; t++)
            xv[t] = cvt_16(_mm256_maskz_loadu_epi16(m, (const uint16_t *)x[t] + k), is_bf16);
        for (int r = 0; r < RB; r++) {
            __m512 wv = cvt_16(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w[r] + k), is_bf16);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = hsum16(acc[r][t]);
}

/* F16 / BF16 weights against activations already widened to f32 in the
 * converted row (matmul_wide_offset): per 16-element step RB weight
 * conversions and RB x TB FMAs with the activations as memory operands
 * (tile_16 converts the TB activation vectors at every step and row block
 * too: 8 conversions per 16 FMAs at 4 x 4, here 4 per 24). Per output the
 * sequence is tile_16's (one FMA per step into 16 lanes in k order, the
 * tail masked to zeros, hsum16), so the results are identical. Registers:
 * 24 accumulators and 4 weight vectors at 4 x 6. */
#define WIDE_RB 6
#define WIDE_TB 4
CS_INLINE void tile_wide(int64_t K, const void *const *w, const void *const *x, float *out,
                         const int RB, const int TB, const int is_bf16) {
    const size_t off = matmul_wide_offset(K);
    const float *xf[WIDE_TB];
    for (int t = 0; t < TB; t++) xf[t] = (const float *)(const void *)((const uint8_t *)x[t] + off);
    __m512 acc[WIDE_RB][WIDE_TB];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 xv[WIDE_TB];
        for (int t = 0; t < TB; t++) xv[t] = _mm512_loadu_ps(xf[t] + k);
        for (int r = 0; r < RB; r++) {
            const __m512 wv =
                cvt_16(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w[r] + k)), is_bf16);
            for (int t = 0; t < TB; t++) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    if (k < K) {
        const __mmask16 m = mask16(K - k);
        for (int r = 0; r < RB; r++) {
            const __m512 wv =
                cvt_16(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w[r] + k), is_bf16);
            for (int t = 0; t < TB; t++)
                acc[r][t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, xf[t] + k), acc[r][t]);
        }
    }
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = hsum16(acc[r][t]);
}

#define DPBUSD(acc, a, b) dpbusd_asm(acc, a, b)

CS_INLINE __m512i join256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* Two f16 scales as a zmm: d0 in lanes 0-7, d1 in lanes 8-15 (two
 * broadcast loads, one insert, one conversion). */
CS_INLINE __m512 scale2(const uint16_t *d0, const uint16_t *d1) {
    const __m128i a = _mm_set1_epi16((short)*d0), b = _mm_set1_epi16((short)*d1);
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
}

/* Activation blocks b and b+1 (two = 0: b only, upper half zero): the 64
 * signed bytes, the scales (lanes 0-7 / 8-15), and for Q4_0 weights the
 * per-lane correction -8 * (sum of the 4 bytes of that int32 lane). */
typedef struct xq_step {
    __m512i q;
    __m512 d;
    __m512i c4; /* Q4_0 only */
} xq_step;

CS_INLINE xq_step load_x2(const void *row, int64_t b, const int two, const int is_q4,
                          const int vnni) {
    const block_q8_0 *p = (const block_q8_0 *)row + b;
    xq_step s;
    if (two) {
        s.q = join256(_mm256_loadu_si256((const __m256i *)p[0].qs),
                      _mm256_loadu_si256((const __m256i *)p[1].qs));
        s.d = scale2(&p[0].d, &p[1].d);
    } else {
        static const uint16_t zero = 0;
        s.q = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)p[0].qs));
        s.d = scale2(&p[0].d, &zero);
    }
    s.c4 = _mm512_setzero_si512();
    if (is_q4) {
        /* 8 * x summed over each lane's 4 bytes, then negated */
        __m512i s8;
        if (vnni)
            s8 = DPBUSD(_mm512_setzero_si512(), _mm512_set1_epi8(8), s.q);
        else
            s8 = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_set1_epi8(8), s.q),
                                   _mm512_set1_epi16(1));
        s.c4 = _mm512_sub_epi32(_mm512_setzero_si512(), s8);
    }
    return s;
}

/* Weight blocks b and b+1 of a Q4_0 row as unsigned nibbles in the byte
 * order of the activations (lo nibbles of b = elements 0-15, hi = 16-31,
 * then b+1), and their scales. */
CS_INLINE __m512i load_w2_q4(const void *row, int64_t b, const int two, __m512 *dw) {
    const block_q4_0 *p = (const block_q4_0 *)row + b;
    __m128i q0 = _mm_loadu_si128((const __m128i *)p[0].qs);
    __m128i q1 = two ? _mm_loadu_si128((const __m128i *)p[1].qs) : _mm_set1_epi8(0x08);
    static const uint16_t zero = 0;
    *dw = scale2(&p[0].d, two ? &p[1].d : &zero);
    /* v = [q0, q1], z = [q0, q1, q0>>4, q1>>4] -> [q0, q0>>4, q1, q1>>4] */
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    __m512i z = join256(v, _mm256_srli_epi16(v, 4));
    z = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), z);
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
}

CS_INLINE __m512i load_w2_q8(const void *row, int64_t b, const int two, __m512 *dw) {
    const block_q8_0 *p = (const block_q8_0 *)row + b;
    static const uint16_t zero = 0;
    if (two) {
        *dw = scale2(&p[0].d, &p[1].d);
        return join256(_mm256_loadu_si256((const __m256i *)p[0].qs),
                       _mm256_loadu_si256((const __m256i *)p[1].qs));
    }
    *dw = scale2(&p[0].d, &zero);
    return _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)p[0].qs));
}

/* One step (one or two blocks) of the quantized tile. Every int32 lane
 * holds the exact integer sum of its 4 byte products (whatever the
 * instruction sequence: VNNI or maddubs + madd), so the float sequence per
 * output is the same for every shape and for VNNI / non-VNNI. */
/* Exact sum of the 8 int32 lanes of a 256-bit vector. */
CS_INLINE int32_t hsum_i32x8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

CS_INLINE float f16s(uint16_t h) {
    return _cvtsh_ss(h);
}

CS_INLINE void tile_q_step(__m512 acc[4][4], float accq[4][4], const void *const *w,
                           const void *const *x, int64_t b, const int RB, const int TB,
                           const int two, const int is_q4, const int vnni) {
    const __m512i ones = _mm512_set1_epi16(1);
    xq_step xs[4];
    for (int t = 0; t < TB; t++) xs[t] = load_x2(x[t], b, two, is_q4, vnni);
    for (int r = 0; r < RB; r++) {
        __m512 dw;
        if (is_q4) {
            const __m512i nib = load_w2_q4(w[r], b, two, &dw);
            for (int t = 0; t < TB; t++) {
                __m512i p32;
                if (vnni)
                    p32 = DPBUSD(xs[t].c4, nib, xs[t].q);
                else
                    p32 = _mm512_add_epi32(
                        xs[t].c4, _mm512_madd_epi16(_mm512_maddubs_epi16(nib, xs[t].q), ones));
                /* Q4_0 accumulates per block, acc = fma(block int sum, d_w*d_x,
                 * acc), like vec_dot_q4_0_q8_0_ref and ggml's repacked Q4_0
                 * kernels: bit-identical to the reference (the golden
                 * context_shift_q4_0 scenario sits 5 ulp from a rounding
                 * boundary that any other order crosses). Lanes 0-7 hold
                 * block b, lanes 8-15 block b + 1. */
                const block_q4_0 *wb = (const block_q4_0 *)w[r] + b;
                const block_q8_0 *xb = (const block_q8_0 *)x[t] + b;
                accq[r][t] = fmaf((float)hsum_i32x8(_mm512_castsi512_si256(p32)),
                                  f16s(wb[0].d) * f16s(xb[0].d), accq[r][t]);
                if (two)
                    accq[r][t] = fmaf((float)hsum_i32x8(_mm512_extracti64x4_epi64(p32, 1)),
                                      f16s(wb[1].d) * f16s(xb[1].d), accq[r][t]);
            }
            (void)dw;
        } else {
            const __m512i wq = load_w2_q8(w[r], b, two, &dw);
            const __m512i aw = _mm512_abs_epi8(wq);
            const __mmask64 neg = _mm512_movepi8_mask(wq);
            for (int t = 0; t < TB; t++) {
                __m512i sx = _mm512_mask_sub_epi8(xs[t].q, neg, _mm512_setzero_si512(), xs[t].q);
                __m512i p32;
                if (vnni)
                    p32 = DPBUSD(_mm512_setzero_si512(), aw, sx);
                else
                    p32 = _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), ones);
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dw, xs[t].d), _mm512_cvtepi32_ps(p32), acc[r][t]);
            }
        }
    }
}

CS_INLINE void tile_q(int64_t K, const void *const *w, const void *const *x, float *out,
                      const int RB, const int TB, const int is_q4, const int vnni) {
    __m512 acc[4][4];
    float accq[4][4];
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) acc[r][t] = _mm512_setzero_ps(), accq[r][t] = 0.0f;
    const int64_t nb = K / CS_QK8_0;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) tile_q_step(acc, accq, w, x, b, RB, TB, 1, is_q4, vnni);
    if (b < nb) tile_q_step(acc, accq, w, x, b, RB, TB, 0, is_q4, vnni);
    for (int r = 0; r < RB; r++)
        for (int t = 0; t < TB; t++) out[t * RB + r] = is_q4 ? accq[r][t] : hsum16(acc[r][t]);
}

#define UK_RB 4
#define UK_TB 4
#ifndef COL_RB
#define COL_RB 1
#endif

static void uk_f32_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_f32(K, w, x, out, UK_RB, UK_TB);
}
static void uk_f32_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r++) tile_f32(K, &w[r], &x, out + r, 1, 1);
}
static void uk_f16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_wide(K, w, x, out, WIDE_RB, WIDE_TB, 0);
}
/* Columns (a decode step) one row at a time from the 16-bit activations
 * at the start of the converted row: one sequential weight stream is what
 * the hardware prefetcher follows best (tile_wide with 6 rows side by side
 * ran 110M F16 generation at 0.54x, one row at a time from the widened
 * activations at 0.95x; measured at 1 thread). Same per-output sequence. */
static void uk_f16_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < WIDE_RB; r++) tile_16(K, &w[r], &x, out + r, 1, 1, 0);
}
static void uk_bf16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_wide(K, w, x, out, WIDE_RB, WIDE_TB, 1);
}
static void uk_bf16_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < WIDE_RB; r++) tile_16(K, &w[r], &x, out + r, 1, 1, 1);
}
static void uk_q8_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q(K, w, x, out, UK_RB, UK_TB, 0, 0);
}
static void uk_q8_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r += COL_RB) tile_q(K, w + r, &x, out + r, COL_RB, 1, 0, 0);
}
static void uk_q8_tile_vnni(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q(K, w, x, out, UK_RB, UK_TB, 0, 1);
}
static void uk_q8_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r += COL_RB) tile_q(K, w + r, &x, out + r, COL_RB, 1, 0, 1);
}
static void uk_q4_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q(K, w, x, out, UK_RB, UK_TB, 1, 0);
}
static void uk_q4_col(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r += COL_RB) tile_q(K, w + r, &x, out + r, COL_RB, 1, 1, 0);
}
static void uk_q4_tile_vnni(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_q(K, w, x, out, UK_RB, UK_TB, 1, 1);
}
static void uk_q4_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    for (int r = 0; r < UK_RB; r += COL_RB) tile_q(K, w + r, &x, out + r, COL_RB, 1, 1, 1);
}

/* ------------------------------------- x16 micro-kernels (repack.h) */

/* One x16 group (16 weight rows) against TB activation rows: lane r of
 * acc[t] accumulates row r's output for token t. Per block: the weight
 * quants are loaded (and, for Q4_0, split into nibbles) once and shared by
 * the TB tokens; each token then needs 8 int8 dot steps against a
 * broadcast 4-byte slice of its block and one vector scale step. The int32
 * lanes are exact block sums whatever the instruction path (VNNI with the
 * offset correction, or maddubs on |w| and sign-moved activations), so
 * VNNI and non-VNNI results are bit-identical, and so are the reference's
 * (repack_x16_dot_ref): Q4_0 scales with one FMA per block, Q8_0 with a
 * multiply then an add. */
CS_INLINE void tile_x16(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB, const int is_q4, const int vnni) {
    const int64_t nb = K / CS_QK8_0;
    const size_t aux_off = matmul_x16_aux_offset(K);
    const size_t gb = is_q4 ? CS_X16_Q4_BLOCK : CS_X16_Q8_BLOCK;
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f), ones = _mm512_set1_epi16(1);
    __m512 acc[8];
    for (int t = 0; t < TB; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * gb;
        x16_pf_col(TB, blk, gb);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        __m512i wq[8];
        __mmask64 neg[8];
        for (int s = 0; s < 8; s++) neg[s] = 0;
        if (is_q4) {
            for (int s = 0; s < 4; s++) {
                const __m512i raw = x16_load(blk + 32 + 64 * s);
                wq[2 * s] = _mm512_and_si512(raw, m4);
                wq[2 * s + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            }
        } else {
            for (int s = 0; s < 8; s++) {
                wq[s] = _mm512_loadu_si512(blk + 32 + 64 * s);
                if (!vnni) {
                    const __m512i sw = _mm512_xor_si512(wq[s], _mm512_set1_epi8((char)0x80));
                    neg[s] = _mm512_movepi8_mask(sw);
                    wq[s] = _mm512_abs_epi8(sw);
                }
            }
        }
        for (int t = 0; t < TB; t++) {
            const block_q8_0 *xb = (const block_q8_0 *)x[t] + b;
            const matmul_x16_aux *a = (const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b;
            __m512i acc_i = is_q4 || vnni ? _mm512_set1_epi32(a->corr) : _mm512_setzero_si512();
            /* two int32 chains (even / odd steps), added at the end: exact,
             * and half the dependent vpdpbusd per chain (bench_kernels T =
             * 512, 1 thread, Zen 5: see docs/BENCH.md, "Prompt tiles on Zen 5") */
            __m512i acc_o = _mm512_setzero_si512();
            for (int s = 0; s < 8; s++) {
                __m512i *ac = s & 1 ? &acc_o : &acc_i;
                /* Q4_0: wq[2s'] = low nibbles (elements 4s'..), wq[2s'+1]
                 * = high nibbles (elements 16+4s'..) */
                const int8_t *xp = is_q4 ? xb->qs + (s & 1) * 16 + (s >> 1) * 4 : xb->qs + 4 * s;
                if (vnni) {
                    *ac = dpbusd_bcast(*ac, wq[s], xp);
                } else {
                    int32_t v;
                    memcpy(&v, xp, 4);
                    __m512i xv = _mm512_set1_epi32(v);
                    if (!is_q4) xv = _mm512_mask_sub_epi8(xv, neg[s], _mm512_setzero_si512(), xv);
                    *ac = _mm512_add_epi32(
                        *ac, _mm512_madd_epi16(_mm512_maddubs_epi16(wq[s], xv), ones));
                }
            }
            acc_i = _mm512_add_epi32(acc_i, acc_o);
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(a->d));
            const __m512 f = _mm512_cvtepi32_ps(acc_i);
            acc[t] = is_q4 ? _mm512_fmadd_ps(f, sc, acc[t])
                           : _mm512_add_ps(acc[t], _mm512_mul_ps(f, sc));
        }
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

/* Two groups (32 rows) x X16_PAIR_TB tokens, VNNI only: each 4-byte
 * activation slice is broadcast once into a register for the two groups'
 * vpdpbusd, and a token's aux entry (start value, scale) is read once for
 * both. Per output the same exact int32 block sums and float steps as
 * tile_x16: its result bit for bit. bench_kernels T = 512, Zen 5, 5
 * alternating runs at 1 thread: Q8_0 mean 440 -> 466 GFLOP/s (best 471 ->
 * 494), Q4_0 best 513 -> 539. */
#define X16_PAIR_TB 8
CS_INLINE void tile_x16_pair(int64_t K, const void *const *w, const void *const *x, float *out,
                             const int is_q4) {
    const int64_t nb = K / CS_QK8_0;
    const size_t aux_off = matmul_x16_aux_offset(K);
    const size_t gb = is_q4 ? CS_X16_Q4_BLOCK : CS_X16_Q8_BLOCK;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[2][X16_PAIR_TB];
    for (int t = 0; t < X16_PAIR_TB; t++) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512 dw[2];
        __m512i wq[2][8];
        for (int g = 0; g < 2; g++) {
            const uint8_t *blk = (const uint8_t *)w[g] + (size_t)b * gb;
            dw[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
            for (int s4 = 0; s4 < 4 && is_q4; s4++) {
                const __m512i raw = x16_load(blk + 32 + 64 * s4);
                wq[g][2 * s4] = _mm512_and_si512(raw, m4);
                wq[g][2 * s4 + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            }
            for (int s8 = 0; s8 < 8 && !is_q4; s8++) wq[g][s8] = x16_load(blk + 32 + 64 * s8);
        }
        for (int t = 0; t < X16_PAIR_TB; t++) {
            const block_q8_0 *xb = (const block_q8_0 *)x[t] + b;
            const matmul_x16_aux *a = (const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b;
            __m512i c0 = _mm512_set1_epi32(a->corr), c1 = c0;
            for (int s8 = 0; s8 < 8; s8++) {
                /* tile_x16's element order: Q4_0 low nibbles then high */
                const int8_t *xp = is_q4 ? xb->qs + (s8 & 1) * 16 + (s8 >> 1) * 4 : xb->qs + 4 * s8;
                const __m512i xv = bcast4_512(xp);
                c0 = dpbusd_asm(c0, wq[0][s8], xv);
                c1 = dpbusd_asm(c1, wq[1][s8], xv);
            }
            const __m512 dx = _mm512_set1_ps(a->d);
            const __m512 f0 = _mm512_cvtepi32_ps(c0), f1 = _mm512_cvtepi32_ps(c1);
            const __m512 sc0 = _mm512_mul_ps(dw[0], dx), sc1 = _mm512_mul_ps(dw[1], dx);
            acc[0][t] = is_q4 ? _mm512_fmadd_ps(f0, sc0, acc[0][t])
                              : _mm512_add_ps(acc[0][t], _mm512_mul_ps(f0, sc0));
            acc[1][t] = is_q4 ? _mm512_fmadd_ps(f1, sc1, acc[1][t])
                              : _mm512_add_ps(acc[1][t], _mm512_mul_ps(f1, sc1));
        }
    }
    for (int t = 0; t < X16_PAIR_TB; t++) {
        _mm512_storeu_ps(out + 32 * t, acc[0][t]);
        _mm512_storeu_ps(out + 32 * t + 16, acc[1][t]);
    }
}
static void uk_x16_q4_pair_vnni(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_pair(K, w, x, out, 1);
}
static void uk_x16_q8_pair_vnni(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_pair(K, w, x, out, 0);
}

/* F16 x16 (repack.c's dot_row_16): element k of the 16 rows is one
 * 32-byte slice, widened once (vcvtph2ps) and multiplied by token t's
 * activation k, broadcast from the widened copy of its converted row
 * (matmul_wide_offset; an embedded-broadcast memory operand). Lane r of
 * a0[t] / a1[t] is row r's even-k / odd-k chain, so no horizontal sum is
 * left: per 2 elements 2 conversions serve 2 * TB FMAs (tile_wide spends
 * one conversion per 4 FMAs and 24 reductions per call). K even. */
#define X16_F16_TB 8
CS_INLINE void tile_x16_f16(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int is_bf16) {
    const __m256i *g = w[0];
    const size_t off = matmul_wide_offset(K);
    const float *xf[X16_F16_TB];
    for (int t = 0; t < TB; t++) xf[t] = (const float *)(const void *)((const uint8_t *)x[t] + off);
    __m512 a0[X16_F16_TB], a1[X16_F16_TB];
    for (int t = 0; t < TB; t++) a0[t] = a1[t] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 2) {
        X16_PF_COL(TB, (const char *)(g + k) + X16_PF_AHEAD, _MM_HINT_T0); /* the 64 B read here */
        const __m512 w0 = cvt_16(_mm256_loadu_si256(g + k), is_bf16);
        const __m512 w1 = cvt_16(_mm256_loadu_si256(g + k + 1), is_bf16);
        for (int t = 0; t < TB; t++) a0[t] = _mm512_fmadd_ps(w0, _mm512_set1_ps(xf[t][k]), a0[t]);
        for (int t = 0; t < TB; t++)
            a1[t] = _mm512_fmadd_ps(w1, _mm512_set1_ps(xf[t][k + 1]), a1[t]);
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, _mm512_add_ps(a0[t], a1[t]));
}

/* Two groups (32 rows) x X16_F16_PAIR_TB tokens: each broadcast feeds
 * two FMAs, each output the same even / odd chains as tile_x16_f16.
 * Zen 5 (two 512-bit FMA pipes) runs the 16 x 8 tile at 83 % of the FMA
 * peak from L1 / L2 in a throw-away harness (N = K = 768, 56 tokens),
 * this one at 90-92 % (16 x 12: 85 %, 32 x 8: 87 %, 48 x 4: 90 %). */
#define X16_F16_PAIR_TB 6
CS_INLINE void tile_x16_f16_pair(int64_t K, const void *const *w, const void *const *x, float *out,
                                 const int is_bf16) {
    const __m256i *g0 = w[0], *g1 = w[1];
    const size_t off = matmul_wide_offset(K);
    const float *xf[X16_F16_PAIR_TB];
    for (int t = 0; t < X16_F16_PAIR_TB; t++)
        xf[t] = (const float *)(const void *)((const uint8_t *)x[t] + off);
    __m512 a0[2][X16_F16_PAIR_TB], a1[2][X16_F16_PAIR_TB];
    for (int t = 0; t < X16_F16_PAIR_TB; t++)
        a0[0][t] = a0[1][t] = a1[0][t] = a1[1][t] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 2) {
        const __m512 u0 = cvt_16(_mm256_loadu_si256(g0 + k), is_bf16);
        const __m512 v0 = cvt_16(_mm256_loadu_si256(g1 + k), is_bf16);
        const __m512 u1 = cvt_16(_mm256_loadu_si256(g0 + k + 1), is_bf16);
        const __m512 v1 = cvt_16(_mm256_loadu_si256(g1 + k + 1), is_bf16);
        for (int t = 0; t < X16_F16_PAIR_TB; t++) {
            const __m512 xv = _mm512_set1_ps(xf[t][k]);
            a0[0][t] = _mm512_fmadd_ps(u0, xv, a0[0][t]);
            a0[1][t] = _mm512_fmadd_ps(v0, xv, a0[1][t]);
        }
        for (int t = 0; t < X16_F16_PAIR_TB; t++) {
            const __m512 xv = _mm512_set1_ps(xf[t][k + 1]);
            a1[0][t] = _mm512_fmadd_ps(u1, xv, a1[0][t]);
            a1[1][t] = _mm512_fmadd_ps(v1, xv, a1[1][t]);
        }
    }
    for (int t = 0; t < X16_F16_PAIR_TB; t++) {
        _mm512_storeu_ps(out + 32 * t, _mm512_add_ps(a0[0][t], a1[0][t]));
        _mm512_storeu_ps(out + 32 * t + 16, _mm512_add_ps(a0[1][t], a1[1][t]));
    }
}
static void uk_x16_f16_pair(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_f16_pair(K, w, x, out, 0);
}
static void uk_x16_bf16_pair(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_f16_pair(K, w, x, out, 1);
}

static void uk_x16_f16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_f16(K, w, x, out, X16_F16_TB, 0);
}
static void uk_x16_f16_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_f16(K, w, &x, out, 1, 0);
}
/* BF16 the same way (widened by a shift), for AVX-512 CPUs without
 * AVX512_BF16: where the CPU has it, kernels_bf16_avx512 keeps BF16 row-major
 * with vdpbf16ps (twice the FP32 FMA peak). */
static void uk_x16_bf16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_f16(K, w, x, out, X16_F16_TB, 1);
}
static void uk_x16_bf16_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_f16(K, w, &x, out, 1, 1);
}

/* int8 dot step for the x16 kernels: acc += per-lane sum of 4 products of
 * u8 w bytes and the 4 s8 bytes at p (broadcast). Exact int32 either way. */
CS_INLINE __m512i dp_x16(__m512i acc, __m512i w, const int8_t *p, const int vnni) {
    if (vnni) return dpbusd_bcast(acc, w, p);
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, _mm512_set1_epi32(v)),
                                                   _mm512_set1_epi16(1)));
}

/* Q4_K x16 (repack.c's dot_row_k4 order): per super-block and token the
 * exact integers sumi (sub-block sums times 6-bit scales) and summ (mins
 * times the activation's sub-block sums), then one FMA each with the
 * scales. The nibbles of a 32-byte chunk (two sub-blocks) are loaded once
 * per TB tokens. */
/* tokens per Q4_K tile call: 16 measured 63 -> 64 % of the vpdpbusd peak
 * against 8 (bench_kernels --peaks, 1 thread, 3 alternating runs); 8
 * (X16_KQ_TB2) for the rest of a batch */
#define X16_Q4K_TB 16
CS_INLINE void tile_x16_q4K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int vnni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m128i m63 = _mm_set1_epi8(63), m15 = _mm_set1_epi8(15), m3 = _mm_set1_epi8(3);
    __m512 acc[X16_Q4K_TB], accm[X16_Q4K_TB];
    for (int t = 0; t < TB; t++) acc[t] = accm[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q4K_BLOCK;
        const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512 dmv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 32)));
        const uint8_t *pl = blk + 64; /* 12 byte planes of 16 rows */
        __m512i sc[8];
        __m128i mnb[8]; /* the 16 rows' 6-bit mins of sub-block j, a byte each */
        for (int j = 0; j < 4; j++) {
            const __m128i p0 = _mm_loadu_si128((const __m128i *)(pl + 16 * j));
            const __m128i p4 = _mm_loadu_si128((const __m128i *)(pl + 16 * (j + 4)));
            const __m128i p8 = _mm_loadu_si128((const __m128i *)(pl + 16 * (j + 8)));
            sc[j] = _mm512_cvtepu8_epi32(_mm_and_si128(p0, m63));
            mnb[j] = _mm_and_si128(p4, m63);
            sc[j + 4] = _mm512_cvtepu8_epi32(
                _mm_or_si128(_mm_and_si128(p8, m15),
                             _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p0, 6), m3), 4)));
            mnb[j + 4] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(p8, 4), m15),
                                      _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p4, 6), m3), 4));
        }
        /* VNNI: the mins of sub-blocks 2i, 2i + 1 as the two words of each
         * row's lane (vpdpwssd against the token's sums of those sub-blocks);
         * otherwise each min widened to its lane (vpmulld) */
        __m512i mn[8];
        for (int i = 0; i < 4 && vnni; i++)
            mn[i] = _mm512_cvtepu8_epi16(
                _mm256_setr_m128i(_mm_unpacklo_epi8(mnb[2 * i], mnb[2 * i + 1]),
                                  _mm_unpackhi_epi8(mnb[2 * i], mnb[2 * i + 1])));
        for (int j = 0; j < 8 && !vnni; j++) mn[j] = _mm512_cvtepu8_epi32(mnb[j]);
        const uint8_t *qs = blk + 256; /* [32 slices][16 rows][4] */
        __m512i sumi[X16_Q4K_TB];
        for (int t = 0; t < TB; t++) sumi[t] = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            __m512i lo[8], hi[8];
            /* a tile's software prefetch of the block after next (36
             * lines, 9 per step; X16_PF_TILE: the column, which gained
             * from it with 4 KiB pages, now does better without) */
            for (int k = 0; k < 9; k++)
                X16_PF_TILE(TB,
                            (const char *)(blk + 2 * CS_X16_Q4K_BLOCK + (size_t)(9 * j + k) * 64),
                            _MM_HINT_T0);
            for (int s = 0; s < 8; s++) {
                const __m512i raw = x16_load(qs + (size_t)(8 * j + s) * 64);
                lo[s] = _mm512_and_si512(raw, m4);
                hi[s] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            }
            for (int t = 0; t < TB; t++) {
                const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 64 * j;
                /* two chains per nibble half: dpbusd latency, not
                 * throughput, bounds T = 1 otherwise */
                __m512i al = _mm512_setzero_si512(), ah = _mm512_setzero_si512();
                __m512i al2 = _mm512_setzero_si512(), ah2 = _mm512_setzero_si512();
                for (int s = 0; s < 8; s += 2) {
                    al = dp_x16(al, lo[s], a + 4 * s, vnni);
                    ah = dp_x16(ah, hi[s], a + 32 + 4 * s, vnni);
                    al2 = dp_x16(al2, lo[s + 1], a + 4 * s + 4, vnni);
                    ah2 = dp_x16(ah2, hi[s + 1], a + 32 + 4 * s + 4, vnni);
                }
                al = _mm512_add_epi32(al, al2);
                ah = _mm512_add_epi32(ah, ah2);
                sumi[t] = _mm512_add_epi32(sumi[t],
                                           _mm512_add_epi32(_mm512_mullo_epi32(al, sc[2 * j]),
                                                            _mm512_mullo_epi32(ah, sc[2 * j + 1])));
            }
        }
        for (int t = 0; t < TB; t++) {
            const block_q8_K *ab = (const block_q8_K *)x[t] + b;
            __m512i summ = _mm512_setzero_si512();
            if (vnni) {
                /* the 8 sub-block sums in pairs: 4 vpdpwssd instead of
                 * 8 vpmulld + vpaddd */
                summ = x16_k4_summ(ab->bsums, mn);
            }
            for (int j = 0; j < 8 && !vnni; j++)
                summ = _mm512_add_epi32(
                    summ,
                    _mm512_mullo_epi32(mn[j], _mm512_set1_epi32((int32_t)ab->bsums[2 * j] +
                                                                (int32_t)ab->bsums[2 * j + 1])));
            const __m512 dy = _mm512_set1_ps(ab->d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dv, dy), acc[t]);
            accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(summ), _mm512_mul_ps(dmv, dy), accm[t]);
        }
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, _mm512_sub_ps(acc[t], accm[t]));
}

/* Two groups (32 rows) x X16_Q4K_PAIR_TB tokens, VNNI only, a sub-block
 * at a time: its nibbles of both groups (16 vectors) are split once, and
 * each 4-byte activation slice is broadcast once into a register for the
 * two groups' vpdpbusd. The scales and mins come from x16_k4_scales_zmm
 * (the decode column's), the same exact integers sumi and summ as
 * tile_x16_q4K's and its float steps: its result bit for bit.
 * bench_kernels q4_K, T = 512, Zen 5, 5 alternating runs at 1 thread:
 * best 516 -> 574 GFLOP/s, mean 491 -> 536. */
#define X16_Q4K_PAIR_TB 16
CS_INLINE void tile_x16_q4K_pair(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    const int64_t nb = K / CS_QK_K;
    const int TB = X16_Q4K_PAIR_TB;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[2][X16_Q4K_PAIR_TB], accm[2][X16_Q4K_PAIR_TB];
    for (int t = 0; t < TB; t++)
        acc[0][t] = acc[1][t] = accm[0][t] = accm[1][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[2] = {(const uint8_t *)w[0] + (size_t)b * CS_X16_Q4K_BLOCK,
                                 (const uint8_t *)w[1] + (size_t)b * CS_X16_Q4K_BLOCK};
        uint8_t sc8[2][128];
        __m512i mnw[2][4];
        for (int g = 0; g < 2; g++) {
            x16_k4_scales_zmm(blk[g] + 64, sc8[g], mnw[g]);
            if (b + 2 < nb) /* the block after next, 36 lines */
                for (int l = 0; l < 36; l++)
                    _mm_prefetch((const char *)(blk[g] + 2 * CS_X16_Q4K_BLOCK + (size_t)l * 64),
                                 _MM_HINT_T0);
        }
        __m512i sumi[2][X16_Q4K_PAIR_TB];
        for (int j = 0; j < 4; j++)
            for (int hi = 0; hi < 2; hi++) {
                const int sb = 2 * j + hi;
                __m512i lv[2][8];
                for (int g = 0; g < 2; g++)
                    for (int s = 0; s < 8; s++) {
                        const __m512i raw = x16_load(blk[g] + 256 + (size_t)(8 * j + s) * 64);
                        lv[g][s] = _mm512_and_si512(hi ? _mm512_srli_epi16(raw, 4) : raw, m4);
                    }
                const __m512i sc0 = x16_k4_scale(sc8[0], sb), sc1 = x16_k4_scale(sc8[1], sb);
                for (int t = 0; t < TB; t++) {
                    const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 64 * j + 32 * hi;
                    __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();
                    for (int s = 0; s < 8; s++) {
                        const __m512i xb = bcast4_512(a + 4 * s);
                        c0 = dpbusd_asm(c0, lv[0][s], xb);
                        c1 = dpbusd_asm(c1, lv[1][s], xb);
                    }
                    const __m512i p0 = _mm512_mullo_epi32(c0, sc0);
                    const __m512i p1 = _mm512_mullo_epi32(c1, sc1);
                    sumi[0][t] = sb ? _mm512_add_epi32(sumi[0][t], p0) : p0;
                    sumi[1][t] = sb ? _mm512_add_epi32(sumi[1][t], p1) : p1;
                }
            }
        for (int g = 0; g < 2; g++) {
            const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk[g]));
            const __m512 dmv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk[g] + 32)));
            for (int t = 0; t < TB; t++) {
                const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                const __m512 dy = _mm512_set1_ps(ab->d);
                acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[g][t]), _mm512_mul_ps(dv, dy),
                                            acc[g][t]);
                accm[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x16_k4_summ(ab->bsums, mnw[g])),
                                             _mm512_mul_ps(dmv, dy), accm[g][t]);
            }
        }
    }
    for (int t = 0; t < TB; t++)
        for (int g = 0; g < 2; g++)
            _mm512_storeu_ps(out + 32 * t + 16 * g, _mm512_sub_ps(acc[g][t], accm[g][t]));
}
static void uk_x16_q4K_pair_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q4K_pair(K, w, x, out);
}

/* The Q4_K decode column (VNNI): tile_x16_q4K's integers and float steps,
 * so the same result bit for bit, with fewer instructions per weight line.
 * A 1-thread decode streams the weights at a rate set by how many line
 * loads the core keeps in flight, and that falls with the instructions
 * between them: against the paired read probe over 151 MB (K = 2048, 3
 * alternating runs of 40 passes, Zen 4, 1 thread) the tile at T = 1 read
 * 0.905-0.917, this column 0.931-0.942, and the same loop with no scales
 * at all 0.939-0.950; from L2 64 -> 77 GB/s. What it drops per super-block:
 * the scale decode (x16_k4_scales_zmm: 9 vector ops for 44 + 8 widenings),
 * the shift of each high nibble (the byte masked with 0xf0 is 16 times
 * the nibble; that sum, sh, is shifted right by 4 once, exactly, as every
 * term is a multiple of 16), and a merge per sub-block pair (lo and hi sums
 * scaled into their own accumulators). */
static void uk_x16_q4K_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f), mf0 = _mm512_set1_epi8((char)0xf0);
    __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q4K_BLOCK;
        const block_q8_K *ab = (const block_q8_K *)x + b;
        const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512 dmv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 32)));
        uint8_t sc[128];
        __m512i mnw[4];
        x16_k4_scales_zmm(blk + 64, sc, mnw);
        const uint8_t *qs = blk + 256; /* [32 slices][16 rows][4] */
        __m512i sl = _mm512_setzero_si512(), sh = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            const int8_t *a = ab->qs + 64 * j;
            /* three blocks ahead (the tile takes two): 1.1B Q4_K_M tg48, 1
             * thread, Zen 5, paired probe, 4 alternating runs: 2 blocks
             * 0.876-0.916, 3 blocks 0.933-0.939, 3.5 blocks 0.914-0.933;
             * 1 block 0.835-0.839 */
            for (int k = 0; k < 9; k++)
                X16_PF_COL(1, (const char *)(blk + 3 * CS_X16_Q4K_BLOCK + (size_t)(9 * j + k) * 64),
                           _MM_HINT_T0);
            /* two chains per nibble half: dpbusd latency */
            __m512i al = _mm512_setzero_si512(), ah = _mm512_setzero_si512();
            __m512i al2 = _mm512_setzero_si512(), ah2 = _mm512_setzero_si512();
            for (int s = 0; s < 8; s += 2) {
                const __m512i r0 = x16_load(qs + (size_t)(8 * j + s) * 64);
                const __m512i r1 = x16_load(qs + (size_t)(8 * j + s + 1) * 64);
                al = dpbusd_bcast(al, _mm512_and_si512(r0, m4), a + 4 * s);
                ah = dpbusd_bcast(ah, _mm512_and_si512(r0, mf0), a + 32 + 4 * s);
                al2 = dpbusd_bcast(al2, _mm512_and_si512(r1, m4), a + 4 * s + 4);
                ah2 = dpbusd_bcast(ah2, _mm512_and_si512(r1, mf0), a + 32 + 4 * s + 4);
            }
            sl = _mm512_add_epi32(
                sl, _mm512_mullo_epi32(_mm512_add_epi32(al, al2), x16_k4_scale(sc, 2 * j)));
            sh = _mm512_add_epi32(
                sh, _mm512_mullo_epi32(_mm512_add_epi32(ah, ah2), x16_k4_scale(sc, 2 * j + 1)));
        }
        /* |sh| <= 4 * 63 * 16 * (32 * 15 * 128) < 2^28: no overflow */
        const __m512i sumi = _mm512_add_epi32(sl, _mm512_srai_epi32(sh, 4));
        const __m512 dy = _mm512_set1_ps(ab->d);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dv, dy), acc);
        accm = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x16_k4_summ(ab->bsums, mnw)),
                               _mm512_mul_ps(dmv, dy), accm);
    }
    _mm512_storeu_ps(out, _mm512_sub_ps(acc, accm));
}

/* Bitwise select: bits where m is set from lo, the others from hi (one
 * vpternlogd; 0xe4 is the truth table of m ? lo : hi). */
CS_INLINE __m512i q6_sel(__m512i lo, __m512i hi, __m512i m) {
    return _mm512_ternarylogic_epi32(lo, hi, m, 0xe4);
}

/* Q6_K x16 (repack.c's dot_row_q6_K order): per super-block and token the
 * exact integer sum over the 16 sub-blocks of scale * (sum of q*a - 32 *
 * bsum), then one FMA. A quarter super-block (4 slices x 4 element groups,
 * one sub-block each per group) of 6-bit values is assembled once per TB
 * tokens.
 *
 * gfni (the column, where the assembly is most of the work; Zen 4 runs
 * vgf2p8affineqb on the two pipes that run vpdpbusd, so the tile, which
 * is bound by those, keeps the shifts: 255 -> 228-252 GFLOP/s with it):
 * each moved field comes out of one gf2p8affine already isolated, 9 ops
 * for 4 vectors instead of 13. bench_kernels q6_K T = 1 (N = K = 768, from
 * cache, 1 thread, Zen 4): 104 GFLOP/s -> 134 with the loads pinned below
 * -> 146 with gfni. */
#define X16_Q6K_TB 8 /* tokens per Q6_K tile call */
CS_INLINE void tile_x16_q6K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int vnni, const int gfni) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m512i m4 = _mm512_set1_epi8(0x0f), m63 = _mm512_set1_epi8(63);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    /* gf2p8affine bit matrices (row i, the input bits of output bit i, in
     * byte 7 - i): bits 0-1 -> 4-5, bits 2-3 -> 4-5, bits 6-7 -> 4-5, bits
     * 4-7 -> 0-3; every other output bit 0 */
    const __m512i g0 = _mm512_set1_epi64(0x01020000), g1 = _mm512_set1_epi64(0x04080000);
    const __m512i g3 = _mm512_set1_epi64(0x40800000);
    const __m512i g4 = _mm512_set1_epi64(0x1020408000000000LL);
    __m512 acc[X16_Q6K_TB];
    for (int t = 0; t < TB; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        /* the block front to back (repack.h, x16_q6K_scale_off): each
         * quarter's scales, its slices, d after the quarters */
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q6K_BLOCK;
        /* a tile reads from cache: d first, as before the reorder (with d
         * last gcc spilled more in the tile, 130 stack accesses against
         * 114; the throughput difference was within this host's noise) */
        __m512 dv = _mm512_setzero_ps();
        if (TB > 1) dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + CS_X16_Q6K_D)));
        __m512i sumi[X16_Q6K_TB];
        for (int t = 0; t < TB; t++) sumi[t] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            for (int g = 0; g < 2; g++) {
                __m512i v[4][4];             /* [m][slice in the group] */
                for (int k = 0; k < 14; k++) /* 53 lines ahead, a quarter per step */
                    X16_PF_TILE(TB,
                                (const char *)(blk + 2 * CS_X16_Q6K_BLOCK +
                                               (size_t)((2 * h + g) * 14 + k) * 64),
                                _MM_HINT_T0);
                for (int u = 0; u < 4; u++) {
                    /* repack.c's q6_K_slot: ql slice at l, at l + 32, qh at l. */
                    const uint8_t *c = blk + x16_q6K_quant_off(h, g, u);
                    /* x16_load: gcc read A, B and H seven times (column
                     * 104 -> 134 GFLOP/s in registers) */
                    const __m512i A = x16_load(c), B = x16_load(c + 64), H = x16_load(c + 128);
                    if (gfni) {
                        v[0][u] = q6_sel(A, gf2p8affine(H, g0), m4);
                        v[1][u] = q6_sel(B, gf2p8affine(H, g1), m4);
                        /* (A >> 4 per byte) | (H & 0x30) */
                        v[2][u] = _mm512_ternarylogic_epi32(gf2p8affine(A, g4), H, m30, 0xf8);
                        v[3][u] = _mm512_or_si512(gf2p8affine(B, g4), gf2p8affine(H, g3));
                        continue;
                    }
                    /* 13 vector ops for the 4 vectors (21 with and/shift/or
                     * per field): sel() takes the low nibble from its first
                     * operand and bits 4-7 from the second, whose bits 4-5
                     * are the 2 high bits after the 16-bit shift (bits that
                     * cross the byte boundary land outside 4-5 or below 4);
                     * one and with 63 then clears bits 6-7. */
                    v[0][u] = _mm512_and_si512(q6_sel(A, _mm512_slli_epi16(H, 4), m4), m63);
                    v[1][u] = _mm512_and_si512(q6_sel(B, _mm512_slli_epi16(H, 2), m4), m63);
                    v[2][u] = _mm512_and_si512(q6_sel(_mm512_srli_epi16(A, 4), H, m4), m63);
                    v[3][u] = _mm512_and_si512(
                        q6_sel(_mm512_srli_epi16(B, 4), _mm512_srli_epi16(H, 2), m4), m63);
                }
                for (int m = 0; m < 4; m++) {
                    const int sb = 8 * h + 2 * m + g;
                    const __m512i scv = _mm512_cvtepi8_epi32(
                        _mm_loadu_si128((const __m128i *)(blk + x16_q6K_scale_off(sb))));
                    for (int t = 0; t < TB; t++) {
                        const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                        const int8_t *a = ab->qs + 128 * h + 32 * m + 16 * g;
                        __m512i ai = _mm512_set1_epi32(-32 * (int32_t)ab->bsums[sb]);
                        if (TB == 1) { /* one chain: the 16 sub-blocks overlap (131 vs 128) */
                            for (int k = 0; k < 4; k++) ai = dp_x16(ai, v[m][k], a + 4 * k, vnni);
                        } else { /* two chains per token: fewer cycles on the last one */
                            __m512i ai2 = dp_x16(_mm512_setzero_si512(), v[m][1], a + 4, vnni);
                            ai = dp_x16(ai, v[m][0], a, vnni);
                            ai2 = dp_x16(ai2, v[m][3], a + 12, vnni);
                            ai = dp_x16(ai, v[m][2], a + 8, vnni);
                            ai = _mm512_add_epi32(ai, ai2);
                        }
                        sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(ai, scv));
                    }
                }
            }
        }
        if (TB == 1)
            dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + CS_X16_Q6K_D)));
        for (int t = 0; t < TB; t++) {
            const __m512 dy = _mm512_set1_ps(((const block_q8_K *)x[t])[b].d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dv, dy), acc[t]);
        }
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

/* Two groups (32 rows) x X16_Q6K_PAIR_TB tokens, VNNI only: a quarter's
 * 6-bit values of both groups are assembled once (as tile_x16_q6K
 * without GFNI) into a stack copy, and each 4-byte activation slice is
 * broadcast once into a register for the two groups' vpdpbusd; the
 * -32 * bsum start is shared too. Per output the same exact integer
 * and float steps as tile_x16_q6K: the tile's result bit for bit.
 * bench_kernels q6_K, T = 512, Zen 5, best of 5 alternating runs: 447 ->
 * 475 GFLOP/s at 1 thread, 875 -> 930 at 2; 110M Q6_K pp512 at 1 thread
 * +3 % (less than Q5_K's pair: here each token's 16-element sub-block
 * costs a start value and a vpmulld per 4 vpdpbusd; the start values
 * summed once per super-block by vpdpwssd measured no faster). */
#define X16_Q6K_PAIR_TB 16
CS_INLINE void tile_x16_q6K_pair(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    const int64_t nb = K / CS_QK_K;
    const int TB = X16_Q6K_PAIR_TB;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m63 = _mm512_set1_epi8(63);
    __m512 acc[2][X16_Q6K_PAIR_TB];
    for (int t = 0; t < TB; t++) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[2] = {(const uint8_t *)w[0] + (size_t)b * CS_X16_Q6K_BLOCK,
                                 (const uint8_t *)w[1] + (size_t)b * CS_X16_Q6K_BLOCK};
        __m512i sumi[2][X16_Q6K_PAIR_TB];
        for (int h = 0; h < 2; h++) {
            for (int g = 0; g < 2; g++) {
                __m512i v[2][4][4]; /* [group][m][slice in the group] */
                for (int gr = 0; gr < 2; gr++) {
                    for (int k = 0; k < 14; k++) /* 53 lines ahead, a quarter per step */
                        _mm_prefetch((const char *)(blk[gr] + 2 * CS_X16_Q6K_BLOCK +
                                                    (size_t)((2 * h + g) * 14 + k) * 64),
                                     _MM_HINT_T0);
                    for (int u = 0; u < 4; u++) {
                        const uint8_t *c = blk[gr] + x16_q6K_quant_off(h, g, u);
                        const __m512i A = x16_load(c), B = x16_load(c + 64), H = x16_load(c + 128);
                        v[gr][0][u] = _mm512_and_si512(q6_sel(A, _mm512_slli_epi16(H, 4), m4), m63);
                        v[gr][1][u] = _mm512_and_si512(q6_sel(B, _mm512_slli_epi16(H, 2), m4), m63);
                        v[gr][2][u] = _mm512_and_si512(q6_sel(_mm512_srli_epi16(A, 4), H, m4), m63);
                        v[gr][3][u] = _mm512_and_si512(
                            q6_sel(_mm512_srli_epi16(B, 4), _mm512_srli_epi16(H, 2), m4), m63);
                    }
                }
                for (int m = 0; m < 4; m++) {
                    const int sb = 8 * h + 2 * m + g;
                    const __m512i sc0 = _mm512_cvtepi8_epi32(
                        _mm_loadu_si128((const __m128i *)(blk[0] + x16_q6K_scale_off(sb))));
                    const __m512i sc1 = _mm512_cvtepi8_epi32(
                        _mm_loadu_si128((const __m128i *)(blk[1] + x16_q6K_scale_off(sb))));
                    for (int t = 0; t < TB; t++) {
                        const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                        const int8_t *a = ab->qs + 128 * h + 32 * m + 16 * g;
                        const __m512i corr = _mm512_set1_epi32(-32 * (int32_t)ab->bsums[sb]);
                        __m512i xb[4];
                        for (int k = 0; k < 4; k++) {
                            xb[k] = bcast4_512(a + 4 * k);
                        }
                        /* tile_x16_q6K's two chains per token and group */
                        __m512i p0 = dpbusd_asm(corr, v[0][m][0], xb[0]);
                        __m512i q0 = dpbusd_asm(_mm512_setzero_si512(), v[0][m][1], xb[1]);
                        __m512i p1 = dpbusd_asm(corr, v[1][m][0], xb[0]);
                        __m512i q1 = dpbusd_asm(_mm512_setzero_si512(), v[1][m][1], xb[1]);
                        p0 = dpbusd_asm(p0, v[0][m][2], xb[2]);
                        q0 = dpbusd_asm(q0, v[0][m][3], xb[3]);
                        p1 = dpbusd_asm(p1, v[1][m][2], xb[2]);
                        q1 = dpbusd_asm(q1, v[1][m][3], xb[3]);
                        const __m512i s0 = _mm512_mullo_epi32(_mm512_add_epi32(p0, q0), sc0);
                        const __m512i s1 = _mm512_mullo_epi32(_mm512_add_epi32(p1, q1), sc1);
                        const int first = h == 0 && g == 0 && m == 0;
                        sumi[0][t] = first ? s0 : _mm512_add_epi32(sumi[0][t], s0);
                        sumi[1][t] = first ? s1 : _mm512_add_epi32(sumi[1][t], s1);
                    }
                }
            }
        }
        const __m512 dv0 =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk[0] + CS_X16_Q6K_D)));
        const __m512 dv1 =
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk[1] + CS_X16_Q6K_D)));
        for (int t = 0; t < TB; t++) {
            const __m512 dy = _mm512_set1_ps(((const block_q8_K *)x[t])[b].d);
            acc[0][t] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[0][t]), _mm512_mul_ps(dv0, dy), acc[0][t]);
            acc[1][t] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[1][t]), _mm512_mul_ps(dv1, dy), acc[1][t]);
        }
    }
    for (int t = 0; t < TB; t++) {
        _mm512_storeu_ps(out + 32 * t, acc[0][t]);
        _mm512_storeu_ps(out + 32 * t + 16, acc[1][t]);
    }
}
static void uk_x16_q6K_pair_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q6K_pair(K, w, x, out);
}

static void uk_x16_q4K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q4K(K, w, x, out, X16_Q4K_TB, 0);
}
static void uk_x16_q4K_tile8(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q4K(K, w, x, out, X16_KQ_TB2, 0);
}
static void uk_x16_q4K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q4K(K, w, &x, out, 1, 0);
}
static void uk_x16_q4K_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q4K(K, w, x, out, X16_Q4K_TB, 1);
}
static void uk_x16_q4K_tile8_vnni(int64_t K, const void *const *w, const void *const *x,
                                  float *out) {
    tile_x16_q4K(K, w, x, out, X16_KQ_TB2, 1);
}
static void uk_x16_q6K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q6K(K, w, x, out, X16_Q6K_TB, 0, 0);
}
static void uk_x16_q6K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q6K(K, w, &x, out, 1, 0, 0);
}
static void uk_x16_q6K_tile_vnni(int64_t K, const void *const *w, const void *const *x,
                                 float *out) {
    tile_x16_q6K(K, w, x, out, X16_Q6K_TB, 1, 0);
}
static void uk_x16_q6K_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q6K(K, w, &x, out, 1, 1, 0);
}
static void uk_x16_q6K_col_vnni_gfni(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q6K(K, w, &x, out, 1, 1, 1);
}

#define X16_TB 8
static void uk_x16_q4_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16(K, w, x, out, X16_TB, 1, 0);
}
static void uk_x16_q4_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16(K, w, &x, out, 1, 1, 0);
}
static void uk_x16_q4_tile_vnni(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16(K, w, x, out, X16_TB, 1, 1);
}
static void uk_x16_q4_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16(K, w, &x, out, 1, 1, 1);
}
static void uk_x16_q8_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16(K, w, x, out, X16_TB, 0, 0);
}
static void uk_x16_q8_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16(K, w, &x, out, 1, 0, 0);
}
static void uk_x16_q8_tile_vnni(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16(K, w, x, out, X16_TB, 0, 1);
}
static void uk_x16_q8_col_vnni(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16(K, w, &x, out, 1, 0, 1);
}

/* Single dots of the table share the micro-kernel code (1 x 1 shape). */
static void avx512_vec_dot_bf16(int64_t n, float *s, const void *x, const void *y) {
    tile_16(n, &x, &y, s, 1, 1, 1);
}
static void avx512_vec_dot_q8_0_q8_0(int64_t n, float *s, const void *x, const void *y) {
    tile_q(n, &x, &y, s, 1, 1, 0, 0);
}
static void avx512_vec_dot_q4_0_q8_0(int64_t n, float *s, const void *x, const void *y) {
    tile_q(n, &x, &y, s, 1, 1, 1, 0);
}

/* ------------------------------------------- Q4_1, Q5_0, Q5_1 dots */
/* Two blocks per zmm for the integer work (lanes 0-7 block b, 8-15 block
 * b+1: unpacking in ymm halves, then one maddubs + madd for both), then
 * each block's exact integer sum and sum += (d_x * d_y) * isum in block
 * order: the order of quant_legacy.h, so bit-identical to the scalar
 * references (an odd last block runs alone). Not the hot path: the x16
 * micro-kernels run packed weights. */

/* Block q: bytes 0..31 = elements 0..31, the 4-bit parts. */
CS_INLINE __m256i lg_nibbles(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Byte j = 0x10 where bit j of qh is set, else 0 (a mask test). */
CS_INLINE __m256i lg_high(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    return _mm256_maskz_mov_epi8((__mmask32)h, _mm256_set1_epi8(0x10));
}

/* Weights of block b as u8 (q) and the activations (signed), with the
 * sign of a signed weight moved onto the activation when is_signed. */
typedef struct {
    __m256i u, y;
} lg_pair;

CS_INLINE lg_pair lg_q4_1(const void *x, const void *y, int64_t b) {
    const block_q4_1 *xb = (const block_q4_1 *)x + b;
    const block_q8_1 *yb = (const block_q8_1 *)y + b;
    return (lg_pair){lg_nibbles(xb->qs), _mm256_loadu_si256((const __m256i *)yb->qs)};
}

CS_INLINE lg_pair lg_q5_1(const void *x, const void *y, int64_t b) {
    const block_q5_1 *xb = (const block_q5_1 *)x + b;
    const block_q8_1 *yb = (const block_q8_1 *)y + b;
    return (lg_pair){_mm256_or_si256(lg_nibbles(xb->qs), lg_high(xb->qh)),
                     _mm256_loadu_si256((const __m256i *)yb->qs)};
}

CS_INLINE lg_pair lg_q5_0(const void *x, const void *y, int64_t b) {
    const block_q5_0 *xb = (const block_q5_0 *)x + b;
    const block_q8_0 *yb = (const block_q8_0 *)y + b;
    __m256i q = _mm256_or_si256(lg_nibbles(xb->qs), lg_high(xb->qh));
    q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    const __m256i yq = _mm256_loadu_si256((const __m256i *)yb->qs);
    return (lg_pair){_mm256_abs_epi8(q), _mm256_sign_epi8(yq, q)};
}

/* Block scales (d_x * d_y) and offsets (m_x * s_y; Q5_0 has none). */
CS_INLINE float lg_scale(const void *x, const void *y, int64_t b, int kind) {
    if (kind == 0) return f16s(((const block_q4_1 *)x)[b].d) * f16s(((const block_q8_1 *)y)[b].d);
    if (kind == 1) return f16s(((const block_q5_0 *)x)[b].d) * f16s(((const block_q8_0 *)y)[b].d);
    return f16s(((const block_q5_1 *)x)[b].d) * f16s(((const block_q8_1 *)y)[b].d);
}

CS_INLINE float lg_offset(const void *x, const void *y, int64_t b, int kind, float summs) {
    if (kind == 0)
        return fmaf(f16s(((const block_q4_1 *)x)[b].m), f16s(((const block_q8_1 *)y)[b].s), summs);
    return fmaf(f16s(((const block_q5_1 *)x)[b].m), f16s(((const block_q8_1 *)y)[b].s), summs);
}

CS_INLINE lg_pair lg_load(const void *x, const void *y, int64_t b, int kind) {
    return kind == 0 ? lg_q4_1(x, y, b) : kind == 1 ? lg_q5_0(x, y, b) : lg_q5_1(x, y, b);
}

/* Exact sum of 8 int32 lanes. */
CS_INLINE int32_t lg_hsum(__m256i v) {
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    t = _mm_add_epi32(t, _mm_unpackhi_epi64(t, t));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 1));
    return _mm_cvtsi128_si32(t);
}

/* kind: 0 Q4_1 x Q8_1, 1 Q5_0 x Q8_0, 2 Q5_1 x Q8_1. */
CS_INLINE float vec_dot_legacy(int64_t n, const void *x, const void *y, const int kind) {
    const int64_t nb = n / CS_QK_LEGACY;
    const __m512i ones = _mm512_set1_epi16(1);
    float sum = 0.0f, summs = 0.0f;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const lg_pair p0 = lg_load(x, y, b, kind), p1 = lg_load(x, y, b + 1, kind);
        const __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(p0.u), p1.u, 1);
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(p0.y), p1.y, 1);
        const __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(u, v), ones);
        if (kind != 1) summs = lg_offset(x, y, b + 1, kind, lg_offset(x, y, b, kind, summs));
        sum += lg_scale(x, y, b, kind) * (float)lg_hsum(_mm512_castsi512_si256(p));
        sum += lg_scale(x, y, b + 1, kind) * (float)lg_hsum(_mm512_extracti64x4_epi64(p, 1));
    }
    if (b < nb) {
        const lg_pair p0 = lg_load(x, y, b, kind);
        const __m256i p16 = _mm256_maddubs_epi16(p0.u, p0.y);
        if (kind != 1) summs = lg_offset(x, y, b, kind, summs);
        sum +=
            lg_scale(x, y, b, kind) * (float)lg_hsum(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
    }
    return sum + summs;
}

static void avx512_vec_dot_q4_1_q8_1(int64_t n, float *s, const void *x, const void *y) {
    *s = vec_dot_legacy(n, x, y, 0);
}
static void avx512_vec_dot_q5_0_q8_0(int64_t n, float *s, const void *x, const void *y) {
    *s = vec_dot_legacy(n, x, y, 1);
}
static void avx512_vec_dot_q5_1_q8_1(int64_t n, float *s, const void *x, const void *y) {
    *s = vec_dot_legacy(n, x, y, 2);
}

/* ---------------------------------------------------- row conversions */

/* One 32-value block, bit-exact with quantize_row_q8_0_ref: two zmm halves
 * of 16; max over |x|, d = amax/127 stored as f16 in *d, id = 127/amax,
 * qs = round-half-even(x * id). Returns sum(qs) when want_sum (Q8_1's s;
 * the int32 sum is exact), else 0 (Q8_0 skips the reduction). */
static inline int32_t avx512_q8_block(const float *p, uint16_t *d, int8_t *qs, bool want_sum,
                                      float *d_f) {
    const __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    *d_f = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    *d = (uint16_t)_cvtss_sh(*d_f, _MM_FROUND_TO_NEAREST_INT);
    const __m512 mul = _mm512_set1_ps(id);
    /* explicit nearest-even rounding, as the reference */
    const __m512i i0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, mul),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i i1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, mul),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128((__m128i *)qs, _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtsepi32_epi8(i1));
    return want_sum ? _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)) : 0;
}

static void avx512_quantize_row_q8_0(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    float d;
    for (int64_t b = 0; b < n / CS_QK8_0; b++)
        avx512_q8_block(x + b * CS_QK8_0, &y[b].d, y[b].qs, false, &d);
}

/* Bit-exact with quantize_row_q8_1_ref: the Q8_0 block plus
 * s = f16(d * sum q). */
static void avx512_quantize_row_q8_1(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    float d;
    for (int64_t b = 0; b < n / CS_QK_LEGACY; b++) {
        const int32_t sum = avx512_q8_block(x + b * CS_QK_LEGACY, &y[b].d, y[b].qs, true, &d);
        y[b].s = (uint16_t)_cvtss_sh(d * (float)sum, _MM_FROUND_TO_NEAREST_INT);
    }
}

/* Bit-exact with quantize_row_q8_K_ref (ggml's quantize_row_q8_K_ref):
 * the scale comes from the first element of largest magnitude (its sign
 * included), values are rounded to nearest even (cvtps2dq in the default
 * mode equals ggml's nearest_int below 2^22) and capped at 127. A block
 * holding a NaN goes to the reference. On the serial path of every
 * K-quant decode step: the scalar version took ~6 % of a 1.1B Q4_K_M token. */
static void avx512_quantize_row_q8_K(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t i = 0; i < n / CS_QK_K; i++) {
        const float *xb = x + i * CS_QK_K;
        __m512 vmax = _mm512_setzero_ps();
        __mmask16 nan = 0;
        for (int k = 0; k < 16; k++) {
            const __m512 v = _mm512_loadu_ps(xb + 16 * k);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));
        }
        if (nan) {
            quantize_row_q8_K_ref(xb, &y[i], CS_QK_K);
            continue;
        }
        const float amax = _mm512_reduce_max_ps(vmax);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = 0.0f;
        for (int k = 0; k < 16; k++) {
            const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(xb + 16 * k)),
                                                   _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (m) {
                max = xb[16 * k + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m512 vs = _mm512_set1_ps(iscale);
        /* 64 levels a vector; vpsadbw on level + 128 sums each 8 of them
         * (u64 lanes 2l, 2l + 1 hold 16-element group l of the 4) */
        __m512i sad[4];
        for (int g = 0; g < 4; g++) {
            __m128i b[4];
            for (int k = 0; k < 4; k++) {
                const __m512i q = _mm512_min_epi32(
                    _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(xb + 64 * g + 16 * k))),
                    _mm512_set1_epi32(127));
                b[k] = _mm512_cvtepi32_epi8(q); /* [-127, 127]: exact */
            }
            __m512i v = _mm512_castsi128_si512(b[0]);
            v = _mm512_inserti32x4(v, b[1], 1);
            v = _mm512_inserti32x4(v, b[2], 2);
            v = _mm512_inserti32x4(v, b[3], 3);
            _mm512_storeu_si512((void *)(y[i].qs + 64 * g), v);
            sad[g] = _mm512_sad_epu8(_mm512_xor_si512(v, _mm512_set1_epi8((char)0x80)),
                                     _mm512_setzero_si512());
        }
        /* groups 0-7 and 8-15: even lanes + odd lanes, then 16 x 128 off */
        const __m512i ev = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i od = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
        const __m512i s0 = _mm512_add_epi64(_mm512_permutex2var_epi64(sad[0], ev, sad[1]),
                                            _mm512_permutex2var_epi64(sad[0], od, sad[1]));
        const __m512i s1 = _mm512_add_epi64(_mm512_permutex2var_epi64(sad[2], ev, sad[3]),
                                            _mm512_permutex2var_epi64(sad[2], od, sad[3]));
        const __m256i bs = _mm256_sub_epi16(
            _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi64_epi16(s0)),
                                    _mm512_cvtepi64_epi16(s1), 1),
            _mm256_set1_epi16(16 * 128));
        _mm256_storeu_si256((__m256i *)(void *)y[i].bsums, bs);
        y[i].d = 1 / iscale;
    }
}

static void avx512_fp32_to_fp16_row(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = fp32_to_fp16(x[i]);
}

static void avx512_fp16_to_fp32_row(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_f16(x + i));
    for (; i < n; i++) y[i] = fp16_to_fp32(x[i]);
}

static void avx512_fp32_to_bf16_row(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_castps_si512(_mm512_loadu_ps(x + i));
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(v, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(v, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(v, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(v, 16), _mm512_set1_epi32(64));
        _mm256_storeu_si256((__m256i *)(y + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; i++) y[i] = fp32_to_bf16(x[i]);
}

/* -------------------------------------------------------- element-wise */

static void avx512_axpy_f32(int64_t n, float a, const float *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(
            y + i, m,
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void avx512_axpy_f16(int64_t n, float a, const uint16_t *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, load_f16(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(
            y + i, m,
            _mm512_fmadd_ps(va, load_f16_tail(x + i, n - i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void avx512_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 sq = _mm512_mul_ps(v, v); /* rounded to float, as ggml does */
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(sq, 1)));
    }
    double sum = hsum8d(_mm512_add_pd(s0, s1));
    for (; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    const __m512 vs = _mm512_set1_ps(scale);
    for (i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs),
                                                _mm512_loadu_ps(w + i)));
    if (i < n) {
        const __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(out + i, m,
                              _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs),
                                            _mm512_maskz_loadu_ps(m, w + i)));
    }
}

static void avx512_softmax(float *x, int64_t n) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    if (i < n)
        vmax = _mm512_mask_max_ps(vmax, mask16(n - i), vmax,
                                  _mm512_maskz_loadu_ps(mask16(n - i), x + i));
    const float max = _mm512_reduce_max_ps(vmax);
    const __m512 vm = _mm512_set1_ps(max);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : mask16(n - i);
        __m512 e =
            _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm)));
        _mm512_mask_storeu_ps(x + i, m, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    const double sum = hsum8d(_mm512_add_pd(s0, s1));
    const __m512 vi = _mm512_set1_ps((float)(1.0 / sum));
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : mask16(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi));
    }
}

static void avx512_swiglu(float *out, const float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        __m512 s = _mm512_div_ps(v, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

/* Bit-exact with ref_rope: separate multiplies and one add/sub, no FMA. */
static void avx512_rope(float *x, int64_t n_head, int64_t head_dim, int32_t n_rot, int32_t mode,
                        const float *cs) {
    const int32_t half = n_rot / 2;
    const bool neox = (mode & CS_ROPE_NEOX) != 0;
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd =
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int64_t h = 0; h < n_head; h++) {
        float *r = x + h * head_dim;
        int32_t k = 0;
        if (!neox) {
            for (; k < half; k += 8) {
                const __mmask16 m = half - k >= 8 ? (__mmask16)0xffff : mask16(2 * (half - k));
                __m512 v = _mm512_maskz_loadu_ps(m, r + 2 * k);
                __m512 c = _mm512_maskz_loadu_ps(m, cs + 2 * k);
                __m512 p = _mm512_mul_ps(v, _mm512_moveldup_ps(c));
                __m512 q = _mm512_mul_ps(_mm512_permute_ps(v, 0xb1), _mm512_movehdup_ps(c));
                __m512 res = _mm512_mask_sub_ps(_mm512_add_ps(p, q), 0x5555, p, q);
                _mm512_mask_storeu_ps(r + 2 * k, m, res);
            }
        } else {
            for (; k + 16 <= half; k += 16) {
                __m512 c0 = _mm512_loadu_ps(cs + 2 * k), c1 = _mm512_loadu_ps(cs + 2 * k + 16);
                __m512 vc = _mm512_permutex2var_ps(c0, even, c1);
                __m512 vs = _mm512_permutex2var_ps(c0, odd, c1);
                __m512 a = _mm512_loadu_ps(r + k), b = _mm512_loadu_ps(r + k + half);
                _mm512_storeu_ps(r + k, _mm512_sub_ps(_mm512_mul_ps(a, vc), _mm512_mul_ps(b, vs)));
                _mm512_storeu_ps(r + k + half,
                                 _mm512_add_ps(_mm512_mul_ps(a, vs), _mm512_mul_ps(b, vc)));
            }
            for (; k < half; k++) {
                const float c = cs[2 * k], s = cs[2 * k + 1];
                const float a = r[k], b = r[k + half];
                r[k] = a * c - b * s;
                r[k + half] = a * s + b * c;
            }
        }
    }
}

/* --------------------------------------------------------------- table */

/* Both tables hold the same kernels; only "avx512" gets the VNNI
 * micro-kernels, and only when cpuid reports AVX512_VNNI, and the vdpbf16ps
 * BF16 kernels, only when cpuid reports AVX512_BF16, and the GFNI Q6_K
 * column, only with VNNI and when cpuid reports GFNI ("avx512novnni" has
 * none: it lets tests cover the fallbacks, and keeps BF16 weights on the
 * FP32 widening kernels below). K-quant weights use the
 * AVX2 dots (every AVX-512 CPU has AVX2 and FMA; kernels.c checks both). A
 * row per weight type (and per vec_dot_type for from_float). */
static void avx512_init(kernels_table *k, const char *name, bool vnni, bool bf16dp, bool gfni,
                        bool vbmi) {
    kernels_init_ref(k, name);
    k->vnni512 = vnni;
    k->vec_dot[CS_TYPE_F32] = avx512_vec_dot_f32;
    k->vec_dot[CS_TYPE_F16] = avx512_vec_dot_f16;
    k->vec_dot[CS_TYPE_BF16] = avx512_vec_dot_bf16;
    k->vec_dot[CS_TYPE_Q8_0] = avx512_vec_dot_q8_0_q8_0;
    k->vec_dot[CS_TYPE_Q4_0] = avx512_vec_dot_q4_0_q8_0;
    k->vec_dot[CS_TYPE_Q2_K] = vec_dot_q2_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q3_K] = vec_dot_q3_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q4_1] = avx512_vec_dot_q4_1_q8_1;
    k->vec_dot[CS_TYPE_Q5_0] = avx512_vec_dot_q5_0_q8_0;
    k->vec_dot[CS_TYPE_Q5_1] = avx512_vec_dot_q5_1_q8_1;
    k->vec_dot[CS_TYPE_Q4_K] = vec_dot_q4_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q5_K] = vec_dot_q5_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_Q6_K] = vec_dot_q6_K_q8_K_avx2;
    k->vec_dot[CS_TYPE_IQ4_NL] = vec_dot_iq4_nl_q8_0_avx512;
    k->vec_dot[CS_TYPE_IQ4_XS] = vec_dot_iq4_xs_q8_K_avx512;

    k->from_float[CS_TYPE_F16] = avx512_fp32_to_fp16_row;
    k->from_float[CS_TYPE_BF16] = avx512_fp32_to_bf16_row;
    k->from_float[CS_TYPE_Q8_0] = avx512_quantize_row_q8_0;
    k->from_float[CS_TYPE_Q8_1] = avx512_quantize_row_q8_1;
    k->from_float[CS_TYPE_Q8_K] = avx512_quantize_row_q8_K;

    matmul_ukernel *u = k->ukernel;
    u[CS_TYPE_F32] = (matmul_ukernel){UK_RB, UK_TB, uk_f32_tile, uk_f32_col, 0, NULL, 0, NULL};
    u[CS_TYPE_F16] = (matmul_ukernel){WIDE_RB, WIDE_TB, uk_f16_tile, uk_f16_col, 0, NULL, 0, NULL};
    u[CS_TYPE_BF16] =
        (matmul_ukernel){WIDE_RB, WIDE_TB, uk_bf16_tile, uk_bf16_col, 0, NULL, 0, NULL};
    k->wide_x[CS_TYPE_F16] = k->wide_x[CS_TYPE_BF16] = true; /* tile_wide */
    u[CS_TYPE_Q8_0] = MATMUL_UK(vnni, UK_RB, UK_TB, uk_q8);
    u[CS_TYPE_Q4_0] = MATMUL_UK(vnni, UK_RB, UK_TB, uk_q4);

    matmul_ukernel *x = k->ukernel_x16;
    const int32_t r = CS_X16_ROWS;
    x[CS_TYPE_F16] = (matmul_ukernel){r, X16_F16_TB, uk_x16_f16_tile, uk_x16_f16_col,
                                      0, NULL,       X16_F16_PAIR_TB, uk_x16_f16_pair};
    x[CS_TYPE_BF16] = (matmul_ukernel){r, X16_F16_TB, uk_x16_bf16_tile, uk_x16_bf16_col,
                                       0, NULL,       X16_F16_PAIR_TB,  uk_x16_bf16_pair};
    k->wide_x16[CS_TYPE_F16] = k->wide_x16[CS_TYPE_BF16] = true;
    x[CS_TYPE_Q4_0] = MATMUL_UK(vnni, r, X16_TB, uk_x16_q4);
    x[CS_TYPE_Q8_0] = MATMUL_UK(vnni, r, X16_TB, uk_x16_q8);
    x[CS_TYPE_Q4_K] = MATMUL_UK2(vnni, r, X16_Q4K_TB, X16_KQ_TB2, uk_x16_q4K);
    x[CS_TYPE_Q6_K] = MATMUL_UK(vnni, r, X16_Q6K_TB, uk_x16_q6K);
    if (vnni && gfni) x[CS_TYPE_Q6_K].col = uk_x16_q6K_col_vnni_gfni;
    if (vnni) {
        x[CS_TYPE_Q4_0].tbp = x[CS_TYPE_Q8_0].tbp = X16_PAIR_TB;
        x[CS_TYPE_Q4_0].tile_pair = uk_x16_q4_pair_vnni;
        x[CS_TYPE_Q8_0].tile_pair = uk_x16_q8_pair_vnni;
        x[CS_TYPE_Q4_K].tbp = X16_Q4K_PAIR_TB;
        x[CS_TYPE_Q4_K].tile_pair = uk_x16_q4K_pair_vnni;
        x[CS_TYPE_Q6_K].tbp = X16_Q6K_PAIR_TB;
        x[CS_TYPE_Q6_K].tile_pair = uk_x16_q6K_pair_vnni;
    }
    kernels_x16_kquants_avx512(k, vnni, gfni, vbmi);
    kernels_x16_q5k_avx512(k, vnni);
    kernels_x16_legacy_avx512(k, vnni);
    /* BF16 weights: vdpbf16ps (bf16_avx512.c) where the CPU has it, in the
     * table that takes the optional extensions ("avx512"). */
    if (bf16dp) kernels_bf16_avx512(k);

    k->vec_dot_f16_f32 = avx512_vec_dot_f16_f32;
    k->fp16_to_fp32_row = avx512_fp16_to_fp32_row;
    k->axpy_f32 = avx512_axpy_f32;
    k->axpy_f16 = avx512_axpy_f16;
    k->attn_scores_f16 = avx512_attn_scores_f16;
    k->attn_accum_f16 = avx512_attn_accum_f16;
    k->attn_kt_f16 = avx512_attn_kt_f16;
    k->attn_scores_kt_f16 = avx512_attn_scores_kt_f16;
    k->rmsnorm = avx512_rmsnorm;
    k->softmax = avx512_softmax;
    k->swiglu = avx512_swiglu;
    k->rope = avx512_rope;
}

static kernels_table k_avx512, k_avx512_novnni, k_avx512_noext;
static pthread_once_t k_avx512_once = PTHREAD_ONCE_INIT;
static pthread_once_t k_avx512_novnni_once = PTHREAD_ONCE_INIT;
static pthread_once_t k_avx512_noext_once = PTHREAD_ONCE_INIT;

static void avx512_init_vnni(void) {
    avx512_init(&k_avx512, "avx512", kernels_cpu_has_avx512vnni(), kernels_cpu_has_avx512bf16(),
                kernels_cpu_has_gfni(), kernels_cpu_has_avx512vbmi());
}

static void avx512_init_novnni(void) {
    avx512_init(&k_avx512_novnni, "avx512novnni", false, false, false, false);
}

static void avx512_init_noext(void) {
    avx512_init(&k_avx512_noext, "avx512noext", kernels_cpu_has_avx512vnni(),
                kernels_cpu_has_avx512bf16(), false, false);
}

const kernels_table *kernels_avx512_table(void) {
    pthread_once(&k_avx512_once, avx512_init_vnni);
    return &k_avx512;
}

const kernels_table *kernels_avx512_novnni_table(void) {
    pthread_once(&k_avx512_novnni_once, avx512_init_novnni);
    return &k_avx512_novnni;
}

const kernels_table *kernels_avx512_noext_table(void) {
    pthread_once(&k_avx512_noext_once, avx512_init_noext);
    return &k_avx512_noext;
}

#endif /* x86 */
