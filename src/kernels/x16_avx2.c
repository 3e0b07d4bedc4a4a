/* x16_avx2.c: the x16 micro-kernels (repack.h) of F16, BF16, Q8_0, Q4_0 and Q4_K for the
 * AVX2 table, for CPUs without AVX-512 (and without AVX-VNNI). Compiled with
 * the flags of x86_avx2.c (AVX2, FMA, F16C).
 *
 * 16 rows are two ymm of 8 int32 lanes per token (rows 0-7 from the first
 * 32 bytes of a 64-byte slice, rows 8-15 from the second). vpmaddubsw
 * multiplies u8 by s8 and adds pairs into saturating int16, so the kernels
 * keep every pair sum below 2^15 to stay exact:
 *   Q8_0: the stored byte is w + 128; the kernel takes w = byte ^ 0x80,
 *     multiplies |w| (u8, <= 128) by x with w's sign moved onto it
 *     (vpsignb; x = 0 where w = 0): pairs <= 2 * 128 * 127 = 32512,
 *     because Q8_0 activations from the table's from_float are in
 *     [-127, 127] (round(x / d), d = amax / 127). The product is the
 *     signed w * x, so the int32 accumulator starts at 0 (the aux
 *     correction, -128 * sum(q), belongs to the u8-offset form of VNNI).
 *   Q4_0: nibbles 0..15 (u8) times s8 x: a pair is <= 2 * 15 * 128 = 3840,
 *     and the 16 products of one int16 lane over the whole block (4 slices,
 *     low and high nibble) are <= 16 * 15 * 128 = 30720 < 2^15, so the
 *     block is summed in int16 and widened once (vpmaddwd by 1); the
 *     accumulator starts at the aux correction -8 * sum(q).
 * Each lane then holds its row's exact block integer, scaled as the
 * reference does (repack_x16_dot_ref, ref.c): sc = d_w * d_x, fma for Q4_0,
 * multiply then add for Q8_0, blocks in order; so the result is bit-identical
 * to the reference table and to the AVX-512 x16 kernels.
 * Cost per block and token: Q8_0 16 x (vpsignb, vpmaddubsw, vpmaddwd,
 * vpaddd); Q4_0 16 x (vpmaddubsw, vpaddw) + 2 vpmaddwd; the weight bytes are
 * loaded and prepared once per block for the TB tokens of a tile. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "kquants.h"
#include "matmul.h"
#include "simd_x86.h"

/* Tokens per tile call: 2 x TB int accumulators plus 4 weight registers
 * and the constants fit the 16 ymm registers. */
#define X16_AVX2_TB 4

/* One x16 group against TB activation rows (Q8_0 blocks, then the
 * matmul_x16_aux entries); out[16t + r] = row r's dot with token t. */
CS_INLINE void tile_x16(int64_t K, const void *const *w, const void *const *x, float *out,
                        const int TB, const int is_q4) {
    const int64_t nb = K / CS_QK8_0;
    const size_t aux_off = matmul_x16_aux_offset(K);
    const size_t gb = is_q4 ? CS_X16_Q4_BLOCK : CS_X16_Q8_BLOCK;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char)0x80);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[X16_AVX2_TB][2];
    for (int t = 0; t < TB; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * gb;
        const __m256 dw[2] = {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)),
                              _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16)))};
        __m256i ai[X16_AVX2_TB][2];
        for (int t = 0; t < TB; t++) ai[t][0] = ai[t][1] = _mm256_setzero_si256();
        if (TB == 1 && !is_q4) /* a Q8_0 decode step (Q4_0 measured no gain): x16_pf_block */
            x16_pf_block(blk, gb);
        else /* Q4_0 where the core needs it (kernels_col_prefetch) */
            x16_pf_col(TB, blk, gb);
        if (is_q4) {
            for (int s = 0; s < 4; s++) {
                /* slice s: low nibbles = elements 4s.., high = 16+4s.. */
                const uint8_t *p = blk + 32 + 64 * s;
                const __m256i r0 = _mm256_loadu_si256((const __m256i *)p);
                const __m256i r1 = _mm256_loadu_si256((const __m256i *)(p + 32));
                const __m256i lo0 = _mm256_and_si256(r0, m4), lo1 = _mm256_and_si256(r1, m4);
                const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(r0, 4), m4);
                const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(r1, 4), m4);
                for (int t = 0; t < TB; t++) {
                    const int8_t *q = ((const block_q8_0 *)x[t] + b)->qs;
                    const __m256i xl = bcast4(q + 4 * s), xh = bcast4(q + 16 + 4 * s);
                    ai[t][0] =
                        _mm256_add_epi16(ai[t][0], _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xl),
                                                                    _mm256_maddubs_epi16(hi0, xh)));
                    ai[t][1] =
                        _mm256_add_epi16(ai[t][1], _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xl),
                                                                    _mm256_maddubs_epi16(hi1, xh)));
                }
            }
            for (int t = 0; t < TB; t++) {
                const matmul_x16_aux *a =
                    (const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b;
                const __m256i c = _mm256_set1_epi32(a->corr);
                for (int h = 0; h < 2; h++)
                    ai[t][h] = _mm256_add_epi32(c, _mm256_madd_epi16(ai[t][h], ones));
            }
        } else {
            for (int s = 0; s < 8; s++) {
                const uint8_t *p = blk + 32 + 64 * s;
                const __m256i s0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p), flip);
                const __m256i s1 =
                    _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + 32)), flip);
                const __m256i a0 = _mm256_abs_epi8(s0), a1 = _mm256_abs_epi8(s1);
                for (int t = 0; t < TB; t++) {
                    const __m256i xv = bcast4(((const block_q8_0 *)x[t] + b)->qs + 4 * s);
                    const __m256i p0 = _mm256_maddubs_epi16(a0, _mm256_sign_epi8(xv, s0));
                    const __m256i p1 = _mm256_maddubs_epi16(a1, _mm256_sign_epi8(xv, s1));
                    ai[t][0] = _mm256_add_epi32(ai[t][0], _mm256_madd_epi16(p0, ones));
                    ai[t][1] = _mm256_add_epi32(ai[t][1], _mm256_madd_epi16(p1, ones));
                }
            }
        }
        for (int t = 0; t < TB; t++) {
            const matmul_x16_aux *a = (const matmul_x16_aux *)((const uint8_t *)x[t] + aux_off) + b;
            const __m256 dx = _mm256_set1_ps(a->d);
            for (int h = 0; h < 2; h++) {
                const __m256 sc = _mm256_mul_ps(dw[h], dx);
                const __m256 f = _mm256_cvtepi32_ps(ai[t][h]);
                acc[t][h] = is_q4 ? _mm256_fmadd_ps(f, sc, acc[t][h])
                                  : _mm256_add_ps(acc[t][h], _mm256_mul_ps(f, sc));
            }
        }
    }
    for (int t = 0; t < TB; t++) {
        _mm256_storeu_ps(out + 16 * t, acc[t][0]);
        _mm256_storeu_ps(out + 16 * t + 8, acc[t][1]);
    }
}

/* Q4_K x16 (repack.c's dot_row_k4 order, as the AVX-512 uk_x16_q4K_*
 * kernels): per super-block, token and half (rows 8h..8h+7) the exact
 * integers sumi = sum_j sc[j] * (q . a over sub-block j) and summ =
 * sum_j m[j] * (a's sub-block j sum), then acc = fma(sumi, d * d_a, acc),
 * accm = fma(summ, dmin * d_a, accm); the output is acc - accm.
 * Exact in int16: a nibble pair times Q8_K activations ([-128, 127]) is
 * <= 2 * 15 * 128 = 3840, and one sub-block's 8 slices put 16 products in
 * an int16 lane, <= 30720 < 2^15; vpmaddwd against the 6-bit scale held in
 * both int16 halves of the row's lane then gives sc * isum in int32.
 * A 64-byte slice is loaded once per half and TB tokens (the other half
 * reloads it from L1). */
CS_INLINE void tile_x16_q4K(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB) {
    const int64_t nb = K / CS_QK_K;
    const uint8_t *grp = w[0];
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc[X16_AVX2_TB][2], accm[X16_AVX2_TB][2];
    for (int t = 0; t < TB; t++)
        for (int h = 0; h < 2; h++) acc[t][h] = accm[t][h] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + (size_t)b * CS_X16_Q4K_BLOCK;
        x16_pf_col(TB, blk, CS_X16_Q4K_BLOCK);
        /* 6-bit scales and mins of the 16 rows, sub-block j, as bytes */
        __m128i scb[8], mnb[8];
        x16_k4_scale_bytes(blk + 64, scb, mnb);
        const uint8_t *qs = blk + 256; /* [32 slices][16 rows][4] */
        for (int h = 0; h < 2; h++) {
            __m256i sumi[X16_AVX2_TB];
            for (int t = 0; t < TB; t++) sumi[t] = _mm256_setzero_si256();
            for (int j = 0; j < 4; j++) {
                __m256i al[X16_AVX2_TB], ah[X16_AVX2_TB];
                for (int t = 0; t < TB; t++) al[t] = ah[t] = _mm256_setzero_si256();
                for (int s = 0; s < 8; s++) {
                    const __m256i raw = _mm256_loadu_si256(
                        (const __m256i *)(qs + (size_t)(8 * j + s) * 64 + 32 * h));
                    const __m256i lo = _mm256_and_si256(raw, m4);
                    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                    for (int t = 0; t < TB; t++) {
                        const int8_t *a = ((const block_q8_K *)x[t])[b].qs + 64 * j + 4 * s;
                        al[t] = _mm256_add_epi16(al[t], _mm256_maddubs_epi16(lo, bcast4(a)));
                        ah[t] = _mm256_add_epi16(ah[t], _mm256_maddubs_epi16(hi, bcast4(a + 32)));
                    }
                }
                /* the rows' scales in both int16 halves of their lanes */
                const __m256i s0 = _mm256_cvtepu8_epi32(half8(scb[2 * j], h));
                const __m256i s1 = _mm256_cvtepu8_epi32(half8(scb[2 * j + 1], h));
                const __m256i sc0 = _mm256_or_si256(s0, _mm256_slli_epi32(s0, 16));
                const __m256i sc1 = _mm256_or_si256(s1, _mm256_slli_epi32(s1, 16));
                for (int t = 0; t < TB; t++)
                    sumi[t] =
                        _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(al[t], sc0),
                                                                   _mm256_madd_epi16(ah[t], sc1)));
            }
            const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
            const __m256 dmv =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32 + 16 * h)));
            __m256i mn[8];
            for (int j = 0; j < 8; j++) mn[j] = _mm256_cvtepu8_epi32(half8(mnb[j], h));
            for (int t = 0; t < TB; t++) {
                const block_q8_K *ab = (const block_q8_K *)x[t] + b;
                __m256i summ = _mm256_setzero_si256();
                for (int j = 0; j < 8; j++)
                    summ = _mm256_add_epi32(
                        summ, _mm256_mullo_epi32(mn[j],
                                                 _mm256_set1_epi32((int32_t)ab->bsums[2 * j] +
                                                                   (int32_t)ab->bsums[2 * j + 1])));
                const __m256 dy = _mm256_set1_ps(ab->d);
                acc[t][h] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_mul_ps(dv, dy), acc[t][h]);
                accm[t][h] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_mul_ps(dmv, dy), accm[t][h]);
            }
        }
    }
    for (int t = 0; t < TB; t++)
        for (int h = 0; h < 2; h++)
            _mm256_storeu_ps(out + 16 * t + 8 * h, _mm256_sub_ps(acc[t][h], accm[t][h]));
}

/* F16 / BF16 x16 (repack.c's dot_row_16, as x86_avx512.c's tile_x16_f16):
 * element k of the group is two 16-byte halves (rows 0-7, 8-15), each
 * widened once (vcvtph2ps, or a shift for BF16) and multiplied by token
 * t's f32 activation k (broadcast); e0[t] / o0[t] are rows 0-7's even-k /
 * odd-k chains, e1[t] / o1[t] rows 8-15's. In a decode step
 * (TB = 1) the group is one sequential stream, which the hardware
 * prefetcher follows alone: a software prefetch 2, 4.3 or 8 KiB ahead cost
 * 8-12 % (110M F16 tg64, 1 thread, 5 alternating rounds: 96.5 t/s without,
 * 85-90 with). The row-major column read 2 rows at a time (x86_avx2.c's
 * col_16_pass) and reached 86-88 t/s there.
 * TB = 2: 8 accumulators. TB = 3 (12, plus 2 weights and a broadcast)
 * made gcc 12 store the accumulators at every step: 43 against 100
 * GFLOP/s (bench_kernels --peaks, 1 thread). K even. */
#define X16_F16_AVX2_TB 2
/* the 8 f16 / bf16 values at p widened to f32 (exact) */
CS_INLINE __m256 x16_widen8(const uint8_t *p, const int is_bf16) {
    return widen8_16(_mm_loadu_si128((const __m128i *)p), is_bf16);
}

CS_INLINE void tile_x16_f16(int64_t K, const void *const *w, const void *const *x, float *out,
                            const int TB, const int is_bf16) {
    const uint8_t *g = w[0];
    const size_t off = matmul_wide_offset(K);
    const float *xf[X16_F16_AVX2_TB];
    for (int t = 0; t < TB; t++) xf[t] = (const float *)(const void *)((const uint8_t *)x[t] + off);
    __m256 e0[X16_F16_AVX2_TB], e1[X16_F16_AVX2_TB], o0[X16_F16_AVX2_TB], o1[X16_F16_AVX2_TB];
    for (int t = 0; t < TB; t++) e0[t] = e1[t] = o0[t] = o1[t] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 2) {
        const uint8_t *p = g + (size_t)k * 32;
        X16_PF_COL(TB, (const char *)p + X16_PF_AHEAD, _MM_HINT_T0); /* the 64 B read here */
        __m256 w0 = x16_widen8(p, is_bf16), w1 = x16_widen8(p + 16, is_bf16);
        for (int t = 0; t < TB; t++) {
            const __m256 xb = _mm256_broadcast_ss(xf[t] + k);
            e0[t] = _mm256_fmadd_ps(w0, xb, e0[t]);
            e1[t] = _mm256_fmadd_ps(w1, xb, e1[t]);
        }
        w0 = x16_widen8(p + 32, is_bf16), w1 = x16_widen8(p + 48, is_bf16);
        for (int t = 0; t < TB; t++) {
            const __m256 xb = _mm256_broadcast_ss(xf[t] + k + 1);
            o0[t] = _mm256_fmadd_ps(w0, xb, o0[t]);
            o1[t] = _mm256_fmadd_ps(w1, xb, o1[t]);
        }
    }
    for (int t = 0; t < TB; t++) {
        _mm256_storeu_ps(out + 16 * t, _mm256_add_ps(e0[t], o0[t]));
        _mm256_storeu_ps(out + 16 * t + 8, _mm256_add_ps(e1[t], o1[t]));
    }
}

static void uk_x16_f16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_f16(K, w, x, out, X16_F16_AVX2_TB, 0);
}
static void uk_x16_f16_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_f16(K, w, &x, out, 1, 0);
}
static void uk_x16_bf16_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_f16(K, w, x, out, X16_F16_AVX2_TB, 1);
}
static void uk_x16_bf16_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_f16(K, w, &x, out, 1, 1);
}

static void uk_x16_q8_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16(K, w, x, out, X16_AVX2_TB, 0);
}
static void uk_x16_q8_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16(K, w, &x, out, 1, 0);
}
static void uk_x16_q4_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16(K, w, x, out, X16_AVX2_TB, 1);
}
static void uk_x16_q4_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16(K, w, &x, out, 1, 1);
}
static void uk_x16_q4K_tile(int64_t K, const void *const *w, const void *const *x, float *out) {
    tile_x16_q4K(K, w, x, out, X16_AVX2_TB);
}
static void uk_x16_q4K_col(int64_t K, const void *const *w, const void *x, float *out) {
    tile_x16_q4K(K, w, &x, out, 1);
}

void kernels_x16_avx2(kernels_table *k) {
    k->ukernel_x16[CS_TYPE_F16] = (matmul_ukernel){
        CS_X16_ROWS, X16_F16_AVX2_TB, uk_x16_f16_tile, uk_x16_f16_col, 0, NULL, 0, NULL};
    k->ukernel_x16[CS_TYPE_BF16] = (matmul_ukernel){
        CS_X16_ROWS, X16_F16_AVX2_TB, uk_x16_bf16_tile, uk_x16_bf16_col, 0, NULL, 0, NULL};
    k->wide_x16[CS_TYPE_F16] = k->wide_x16[CS_TYPE_BF16] = true;
    k->ukernel_x16[CS_TYPE_Q8_0] =
        (matmul_ukernel){CS_X16_ROWS, X16_AVX2_TB, uk_x16_q8_tile, uk_x16_q8_col, 0, NULL, 0, NULL};
    k->ukernel_x16[CS_TYPE_Q4_0] =
        (matmul_ukernel){CS_X16_ROWS, X16_AVX2_TB, uk_x16_q4_tile, uk_x16_q4_col, 0, NULL, 0, NULL};
    k->ukernel_x16[CS_TYPE_Q4_K] = (matmul_ukernel){
        CS_X16_ROWS, X16_AVX2_TB, uk_x16_q4K_tile, uk_x16_q4K_col, 0, NULL, 0, NULL};
}

#endif /* x86 */
