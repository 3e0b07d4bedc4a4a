/* simd_x86.h: helpers shared by the x86 SIMD kernel files. Include it only
 * from files compiled with at least -mavx2 (x86_avx2.c, kquants_avx2.c,
 * iquants_avx2.c, the AVX-512 files; hsum8_x16_ps only with -mavx512f): the helpers use AVX
 * instructions and are always inlined into their callers. */
#ifndef CS_SIMD_X86_H
#define CS_SIMD_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

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

/* Software prefetch for the x16 column kernels (a decode step, T = 1):
 * the lines of the gb-byte block X16_PF_AHEAD bytes past blk, one per 64
 * bytes consumed. The hardware prefetcher alone leaves a 1-thread decode
 * short of the bandwidth: 110M Q8_0 generation on the AVX2 table, 1
 * thread, 158 -> 182 tokens/s at 4.3-5.4 KiB ahead (2.2 KiB: 158, 6.5 KiB:
 * 161; Q4_0 unchanged, so only Q8_0 calls it). Groups are contiguous,
 * so the stream runs on into the next group; past the matrix end the
 * prefetches are only hints (they never fault).
 * Cost: gb / 64 prefetch instructions per block (gb a constant at every
 * call, so the loop unrolls). */
#define X16_PF_AHEAD 4352
CS_INLINE void x16_pf_block(const uint8_t *blk, size_t gb) {
    for (size_t o = 0; o < gb; o += 64)
        _mm_prefetch((const char *)(blk + X16_PF_AHEAD + o), _MM_HINT_T0);
}

/* Software prefetch of weight lines in the K-quant / IQ4_XS kernels: in
 * tiles always (TB > 1, a compile-time constant at every call), in a
 * decode column (TB == 1) where kernels_col_prefetch says the core needs
 * it (kernels.h). On Zen 4 a column leaves the stream to the hardware
 * prefetcher: with the weights on huge pages (mem_huge_alloc) it follows
 * them alone, and the prefetch instructions only cost (110M tg64, 1
 * thread, 3 alternating rounds: AVX-512 Q6_K 220 -> 242 t/s, Q4_K_M 288 ->
 * 333, Q3_K_M 246 -> 324, Q2_K 361 -> 384; AVX2 Q6_K 190 -> 244, IQ4_XS
 * 238 -> 293; 1.1B Q6_K 24.6 -> 27.8). On Zen 5 the hardware prefetcher
 * falls behind a column and the prefetch doubles K-quant generation (110M
 * Q6_K tg64, 1 thread: 153 -> 355 t/s). A prompt's tiles, which read the
 * weights from cache at a far lower rate, gain from it on both (AVX-512
 * Q4_K_M pp512 1141 -> 1249 t/s on Zen 4). X16_PF_COL: a site that only a
 * column takes (the tiles there were measured without one). */
#define X16_PF_TILE(TB, p, h)                                                                      \
    do {                                                                                           \
        if ((TB) > 1 || kernels_col_prefetch) _mm_prefetch((p), (h));                              \
    } while (0)
#define X16_PF_COL(TB, p, h)                                                                       \
    do {                                                                                           \
        if ((TB) == 1 && kernels_col_prefetch) _mm_prefetch((p), (h));                             \
    } while (0)

/* A decode column's prefetch of one gb-byte block's worth of lines ahead
 * of the block at blk, where kernels_col_prefetch says the core needs it
 * (TB == 1; a tile passes its TB and takes none here). How far: a
 * super-block (gb >= 1 KiB) the block after next, as the tiles'
 * X16_PF_TILE; a small legacy block X16_PF_AHEAD bytes, as x16_pf_block
 * (two 288-byte blocks would be only 576 bytes). gb is a constant at
 * every call, so the choice and the loop fold at compile time. */
CS_INLINE void x16_pf_col(const int TB, const uint8_t *blk, size_t gb) {
    if (TB != 1 || !kernels_col_prefetch) return;
    const uint8_t *p = blk + (gb >= 1024 ? 2 * gb : X16_PF_AHEAD);
    for (size_t o = 0; o < gb; o += 64) _mm_prefetch((const char *)(p + o), _MM_HINT_T0);
}

/* Keeps a just-loaded vector in its register: left to itself gcc folds
 * the load into each op that reads the value (vpsrlw $4, (mem); vpandd
 * (mem)), which reads the same 64 bytes two or three times, and Zen 4 takes
 * one 64-byte load a cycle. The empty asm costs no instruction. */
#define X16_IN_REG(v) __asm__("" : "+v"(v))

#ifdef __AVX512F__
/* A weight vector loaded once into a register (X16_IN_REG). */
CS_INLINE __m512i x16_load(const void *p) {
    __m512i v = _mm512_loadu_si512(p);
    X16_IN_REG(v);
    return v;
}
#endif

/* The 6-bit scales and mins of a Q4_K / Q5_K x16 super-block (scale_min_k4
 * on the 12 byte planes of 16 rows at pl, repack.h): sc[j] and mn[j] hold
 * sub-block j's, one byte per row. SSE2; the AVX2 and AVX-VNNI kernels of
 * both types take them from here. */
CS_INLINE void x16_k4_scale_bytes(const uint8_t *pl, __m128i sc[8], __m128i mn[8]) {
    const __m128i m63 = _mm_set1_epi8(63), m15 = _mm_set1_epi8(15), m3 = _mm_set1_epi8(3);
    for (int j = 0; j < 4; j++) {
        const __m128i p0 = _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * j));
        const __m128i p4 = _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * (j + 4)));
        const __m128i p8 = _mm_loadu_si128((const __m128i *)(const void *)(pl + 16 * (j + 8)));
        sc[j] = _mm_and_si128(p0, m63);
        mn[j] = _mm_and_si128(p4, m63);
        sc[j + 4] = _mm_or_si128(_mm_and_si128(p8, m15),
                                 _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p0, 6), m3), 4));
        mn[j + 4] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(p8, 4), m15),
                                 _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(p4, 6), m3), 4));
    }
}

#ifdef __SSSE3__
/* The 8 32-element sums of a Q8_K block's activations, bsums[2j] +
 * bsums[2j + 1] (at most 32 * 128 in magnitude: words), as words 0..7:
 * one vphaddw. The K-quant and IQ4_XS kernels' mins and corrections. */
CS_INLINE __m128i q8k_sums32(const int16_t *bsums) {
    return _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(const void *)bsums),
                          _mm_loadu_si128((const __m128i *)(const void *)(bsums + 8)));
}
#endif

#ifdef __AVX2__
/* 8 f16 (is_bf16 = 0) or bf16 (1) values widened to f32, exactly: F16C's
 * vcvtph2ps, or the bf16 bits moved to the top of each dword. */
CS_INLINE __m256 widen8_16(__m128i v, const int is_bf16) {
    if (is_bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
    return _mm256_cvtph_ps(v);
}

/* The 4 bytes at p broadcast to the 8 int32 lanes (an activation group of
 * the AVX2 x16 kernels; unaligned, so through memcpy). */
CS_INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Bytes 8h .. 8h+7 of v in its low half (rows 8h.. of an x16 byte plane). */
CS_INLINE __m128i half8(__m128i v, int h) {
    return h ? _mm_srli_si128(v, 8) : v;
}

/* hsum8_ps for 8 rows at once, as hsum8_x16_ps: lane k of a[k] holds row
 * r's lane k; (0+4 + 2+6) + (1+5 + 3+7) per row. */
CS_INLINE __m256 hsum8_x8_ps(const __m256 a[8]) {
    const __m256 r0 = _mm256_add_ps(a[4], a[0]), r1 = _mm256_add_ps(a[5], a[1]);
    const __m256 r2 = _mm256_add_ps(a[6], a[2]), r3 = _mm256_add_ps(a[7], a[3]);
    return _mm256_add_ps(_mm256_add_ps(r0, r2), _mm256_add_ps(r1, r3));
}
#endif

#ifdef __AVX512F__
/* vpdpbusd through inline asm: the AVX-512 files are not compiled with
 * -mavx512vnni (the CPU may lack it); callers only take this path after
 * the cpuid check in kernels.c. acc += sum of 4 products u8(a) * s8(b)
 * per int32 lane. */
CS_INLINE __m512i dpbusd_asm(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* The 4 bytes at p (an activation slice) broadcast to every int32 lane
 * of a register: the pair tiles' operand for two vpdpbusd. */
CS_INLINE __m512i bcast4_512(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* vpdpbusd with a 4-byte memory operand broadcast to all 16 lanes: per
 * int32 lane, acc + the sum of 4 products u8(a) * s8(p[0..3]). Inline asm:
 * the AVX-512 files are not compiled with -mavx512vnni (the CPU may lack
 * it; callers check kernels_cpu_has_avx512vnni). */
typedef int32_t i32u_unaligned __attribute__((may_alias, aligned(1)));
CS_INLINE __m512i dpbusd_bcast(__m512i acc, __m512i a, const int8_t *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*(const i32u_unaligned *)p));
    return acc;
}

/* vpdpwssd: per int32 lane, acc + the two signed word products of a and
 * b (exact, no saturation). VNNI only, inline asm as dpbusd_bcast. */
CS_INLINE __m512i dpwssd(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* dpwssd with b = the two s16 words at p broadcast to all 16 lanes. */
CS_INLINE __m512i dpwssd_bcast(__m512i acc, __m512i a, const int16_t *p) {
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*(const i32u_unaligned *)p));
    return acc;
}

#ifdef __AVX512BW__
/* x16_k4_scale_bytes for the VNNI decode columns of Q4_K and Q5_K, on whole
 * vectors: the 12 planes are 3 vectors of 4 planes (sc 0-3 with 2 high bits
 * of sc 4-7 each; mn 0-3 likewise; the low nibbles of sc 4-7 and mn 4-7),
 * so 9 vector ops decode all 16 fields (the per-plane SSE2 form takes 44
 * plus 8 widenings). sc: the 8 scale planes (16 bytes, one per row) into a
 * 128-byte buffer, where a column widens each with a load-op vpmovzxbd
 * when it multiplies. mnw[u]: the mins of sub-blocks 2u and 2u + 1 as the
 * two words of each row's lane (for dpwssd_bcast against the activation's
 * two 32-element sums). A 16-bit shift moves bits across a byte boundary;
 * the masks before it or the select after it keep only the bits that stay
 * within their byte. */
CS_INLINE void x16_k4_scales_zmm(const uint8_t *pl, uint8_t sc[128], __m512i mnw[4]) {
    const __m512i m63 = _mm512_set1_epi8(63), mc0 = _mm512_set1_epi8((char)0xc0);
    const __m512i m15 = _mm512_set1_epi8(15);
    const __m512i z0 = x16_load(pl), z1 = x16_load(pl + 64), z2 = x16_load(pl + 128);
    /* 0xca: m ? a : b per bit (m = m15: bits 0-3 from a, 4-7 from b) */
    _mm512_storeu_si512(sc, _mm512_and_si512(z0, m63));
    _mm512_storeu_si512(
        sc + 64,
        _mm512_ternarylogic_epi32(m15, z2, _mm512_srli_epi16(_mm512_and_si512(z0, mc0), 2), 0xca));
    const __m512i ma = _mm512_and_si512(z1, m63);
    const __m512i mb = _mm512_ternarylogic_epi32(
        m15, _mm512_srli_epi16(z2, 4), _mm512_srli_epi16(_mm512_and_si512(z1, mc0), 2), 0xca);
    /* planes (m0 | m1 | m2 | m3): bytes of planes 2u and 2u + 1 interleaved
     * row by row (the lane-swapped copy puts plane 2u + 1 beside 2u), rows
     * 0-7 and 8-15 joined, widened to words */
    const __m512i ix = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i ta = _mm512_shuffle_i64x2(ma, ma, 0xb1), tb = _mm512_shuffle_i64x2(mb, mb, 0xb1);
    const __m512i qa =
        _mm512_permutex2var_epi64(_mm512_unpacklo_epi8(ma, ta), ix, _mm512_unpackhi_epi8(ma, ta));
    const __m512i qb =
        _mm512_permutex2var_epi64(_mm512_unpacklo_epi8(mb, tb), ix, _mm512_unpackhi_epi8(mb, tb));
    mnw[0] = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(qa));
    mnw[1] = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(qa, 1));
    mnw[2] = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(qb));
    mnw[3] = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(qb, 1));
}

/* Sub-block j's scales of x16_k4_scales_zmm's buffer as int32 lanes. */
CS_INLINE __m512i x16_k4_scale(const uint8_t sc[128], int j) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(sc + 16 * j)));
}

/* The mins' exact integer of a decode column: sum over the 8 sub-blocks of
 * min * (the activation's 32-element sum, bsums[2s] + bsums[2s + 1], at
 * most 32 * 128 in magnitude: a word), 4 vpdpwssd against x16_k4_scales_zmm's
 * pairs. */
CS_INLINE __m512i x16_k4_summ(const int16_t *bsums, const __m512i mnw[4]) {
    int16_t s32[8];
    _mm_storeu_si128((__m128i *)(void *)s32, q8k_sums32(bsums));
    __m512i summ = _mm512_setzero_si512();
    for (int u = 0; u < 4; u++) summ = dpwssd_bcast(summ, mnw[u], s32 + 2 * u);
    return summ;
}
#endif

/* vpermb: byte i of the result is byte (idx[i] & 63) of tbl. VBMI only,
 * inline asm as dpbusd_bcast (callers check kernels_cpu_has_avx512vbmi). */
CS_INLINE __m512i permb(__m512i idx, __m512i tbl) {
    __m512i r;
    __asm__("vpermb %2, %1, %0" : "=v"(r) : "v"(idx), "v"(tbl));
    return r;
}

/* vgf2p8affineqb with b = 0: each byte x becomes M x over GF(2), M the
 * 8x8 bit matrix in the qword m (byte 7 - i of m selects the input bits
 * whose parity is output bit i). With a 0/1 permutation matrix it moves
 * bits within every byte and clears the rest in one op, which a 16-bit
 * shift plus a mask takes two for. GFNI only, inline asm as dpbusd_bcast
 * (callers check kernels_cpu_has_gfni). */
CS_INLINE __m512i gf2p8affine(__m512i x, __m512i m) {
    __m512i r;
    __asm__("vgf2p8affineqb $0, %2, %1, %0" : "=v"(r) : "v"(x), "v"(m));
    return r;
}

/* hsum8_ps for 16 rows at once: lane k of 8 per-lane accumulators holds
 * row r's lane k; the same order, (0+4 + 2+6) + (1+5 + 3+7), per row. For
 * the x16 kernels that keep the reference dots' 8 float lanes. */
CS_INLINE __m512 hsum8_x16_ps(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4, __m512 a5,
                              __m512 a6, __m512 a7) {
    const __m512 r0 = _mm512_add_ps(a4, a0), r1 = _mm512_add_ps(a5, a1);
    const __m512 r2 = _mm512_add_ps(a6, a2), r3 = _mm512_add_ps(a7, a3);
    return _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
}
#endif

#endif /* CS_SIMD_X86_H */
