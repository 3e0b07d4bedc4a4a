/* repack.h: the "x16" weight layout, Q4_0, Q8_0, Q4_K and Q6_K (and the
 * legacy Q5_0, IQ4_NL, Q4_1, Q5_1, the K-quants, F16 and BF16) matrices reordered at
 * load time so that one 64-byte load holds 4 bytes of each of 16 rows.
 *
 * Why: the row-major matmul needs a horizontal sum per 32-element block and
 * per output (8 int32 lanes to 1) before the block's scale can be applied,
 * because ggml's numerics (and the golden logits) scale every block's exact
 * integer sum separately. With 16 rows interleaved, vpdpbusd against a
 * broadcast 4-byte slice of the activation block puts row r's partial sum
 * in lane r: after a block's 8 steps each lane holds that row's exact block
 * sum, and one vector multiply-add applies 16 scales. No horizontal work is
 * left, so the prompt matmul becomes bound by the dot instructions and the
 * generation matmul by memory.
 *
 * K-quants (Q4_K, Q6_K) use the same idea with their own fields (repack.c's
 * format table): Q4_K block = d[16], dmin[16], the 12 scale bytes as byte
 * planes [12][16], qs sliced [32][16][4]; Q6_K block = four quarters of
 * scale planes and ql / qh slices in the kernels' read order, then d[16]
 * (x16_q6K_scale_off below).
 * IQ4_XS (x16_kquants_avx512.c): d[16], scales_h[16], scales_l as byte
 * planes [4][16], qs sliced [32][16][4] (sub-block j = slices 4j..4j+3);
 * its x16 order is the reference dot's (vec_dot_iq4_xs_q8_K_ref), so the
 * x16 result equals the reference table's row-major result bit for bit.
 * Q3_K (same file): d[16] at 0, scales as byte planes [12][16] at 32, then
 * for lane k = 0..7 at 224 + 192k: hmask slice k [16][4], qs slice
 * (h = 0, k) [16][4], qs slice (h = 1, k) [16][4] (slice (h, k) = qs bytes
 * 32h + 4k .. +3: elements 128h + 32g + 4k + j, g = 0..3, j = 0..3), so the
 * lane-by-lane kernel streams the block in order (1760 = 16 * 110). Its
 * numerics are the reference dot's (vec_dot_q3_K_q8_K_ref): the
 * super-block's exact integer, then one multiply and add (the tile visits
 * it sub-block by sub-block, the column lane by lane: the same integer).
 * Q2_K (same file, same numerics as vec_dot_q2_K_q8_K_ref: the mins'
 * integer, then the levels', each multiplied and added once per
 * super-block): d[16] at 0, dmin[16] at 32, scales as
 * 2-byte slices [8][16][2] at 64 (slice s = scales 2s, 2s+1: the mins of
 * lane s and the scales of groups (h, g) = (s / 4, s % 4)), then for lane
 * k at 320 + 128k the qs slices (h = 0, k) and (h = 1, k) (1344 = 16 * 84).
 * Q5_K (x16_q5k_avx512.c; numerics repack.c's dot_row_k4, Q4_K's x16
 * order with a fifth bit: the super-block's scaled sums and mins as exact
 * integers, one FMA each): d[16] at 0, dmin[16]
 * at 32, scales as byte planes [12][16] at 64, then for lane k at 256 +
 * 320k the qh slice k [16][4] (qh bytes 4k .. 4k+3) and the qs slices
 * (j, k) [16][4] for j = 0..3 (qs bytes 32j + 4k .. +3: elements 64j +
 * 4k + i, low nibble, and 64j + 32 + 4k + i, high nibble) (2816 = 16 * 176).
 *
 * F16 and BF16 (x86_avx512.c's tile_x16_f16, x16_avx2.c's): blocks of 16
 * elements; element k of the 16 rows is one 32-byte slice (16 values, row
 * r at 2r), so one widening (vcvtph2ps, or a shift for BF16) makes a
 * column of the group and a broadcast activation multiplies it into 16 row
 * sums with no horizontal work. Numerics (repack.c's dot_row_16): per row
 * two fused float chains, even k and odd k, from +0, then their sum;
 * against the f32 widened activations (the f16 / bf16 activations
 * exactly). The row-major kernels sum 16 lanes and reduce them, so results
 * differ from them within float rounding. Where the CPU has AVX512_BF16
 * the "avx512" table reads the same BF16 layout with vdpbf16ps instead
 * (bf16_avx512.c; repack_x16_dot_bf16dp_ref below), as it does for rows.
 *
 * Layout of one group of 16 rows (rows 16g .. 16g+15), block-major; it
 * occupies exactly the bytes of those 16 rows in row-major order, so the
 * reorder happens in place and group g starts where row 16g started:
 *   for each block b (K / 32 of them):
 *     uint16_t d[16]                 f16 scale of row r's block b
 *     Q4_0: uint8_t qs[4][16][4]     qs[s][r][j] = row r's qs[4s + j]
 *                                    (low nibble: element 4s+j, high
 *                                    nibble: element 16+4s+j; value - 8)
 *     Q8_0: uint8_t qs[8][16][4]     qs[s][r][j] = row r's qs[4s + j] ^ 0x80
 *                                    (value + 128 as an unsigned byte, the
 *                                    u8 operand of vpdpbusd)
 * Block sizes: Q4_0 32 + 256 = 288 = 16 * 18 bytes, Q8_0 32 + 512 = 544 =
 * 16 * 34 bytes.
 *
 * Legacy types (kernels in x16_legacy_avx512.c): IQ4_NL as Q4_0 (d[16],
 * qs[4][16][4]; the kernel looks the nibbles up). Q5_0: d[16], qh[16][4],
 * qs[4][16][4] (352 = 16 * 22); Q4_1: d[16], m[16], qs (320 = 16 * 20);
 * Q5_1: d[16], m[16], qh[16][4], qs (384 = 16 * 24). qh[r] is row r's
 * high-bit dword with bit 4k + j (element 4k + j) moved to bit 8j + k, so
 * lane k's four high bits (elements 4k .. 4k+3, one int32 lane of the
 * dot) are one shift and one mask away. Their numerics are those of the
 * type's reference dot (quant_legacy.c, iquants.c): each exact block sum
 * scaled with a multiply then an add, as Q8_0; Q4_1 / Q5_1 then + the
 * fma'd m * s chain; Q5_0's offset -16 is the aux start value -16 *
 * sum(q), its 5-bit values stay unsigned as the u8 operand; IQ4_NL's
 * levels are stored + 128 (aux correction -128 * sum(q)).
 *
 * The activation rows a matmul with x16 weights converts to carry, after
 * their Q8_0 blocks, one matmul_x16_aux per block (matmul.h): the scale as a
 * float and the offset correction -8 * sum(q) (Q4_0) or -128 * sum(q) (Q8_0),
 * so the int32 accumulator starts at the correction.
 *
 * Numerics: every output is sum over blocks of (exact block integer sum) *
 * (d_w * d_x), accumulated in block order like the row-major reference
 * kernels (ref.c): fma for Q4_0, multiply then add for Q8_0. The x16 path
 * is bit-identical to the reference table on unpacked rows. */
#ifndef CS_REPACK_H
#define CS_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../types.h"

enum { CS_LAYOUT_ROWS = 0, CS_LAYOUT_X16 = 1 };

#define CS_X16_ROWS        16
#define CS_X16_Q4_BLOCK    288 /* bytes per block of a group */
#define CS_X16_Q8_BLOCK    544
#define CS_X16_Q4K_BLOCK   2304
#define CS_X16_Q5K_BLOCK   2816
#define CS_X16_Q6K_BLOCK   3360
#define CS_X16_IQ4XS_BLOCK 2176
/* Q6_K's x16 block (repack.c's q6_K_slot) is laid out in the order the
 * kernels read it, front to back: quarter q = 2h + g (h: the half of 128
 * elements, g: the sub-block parity) at CS_X16_Q6K_QUARTER * q holds the
 * scale planes (16 rows, s8) of the sub-blocks 8h + 2m + g, m = 0..3, at
 * +16m, then for u = 0..3 at +64 + 192u the ql slice at l, the ql slice at
 * l + 32 and the qh slice at l; d[16] (f16) closes the block at
 * CS_X16_Q6K_D, which the decode column reads after the quarters (a tile,
 * reading from cache, loads it first). Why: a decode column streams the
 * weights from memory, and the hardware prefetcher follows a stream that
 * only moves forward. With the scales and d at the block's end, read before
 * and between the quants, the 1.1B Q6_K decode (1 thread, `bench -n 48
 * --mem-pair`: each token against a read pass of the same bytes right after
 * it) ran at 71-76 % of that bandwidth over all tokens (the median token
 * 72-82 %, 3 runs); in this order 76-105 % (median token 97-107 %, 6 runs
 * alternating with them). */
#define CS_X16_Q6K_QUARTER 832
#define CS_X16_Q6K_D       3328
static inline size_t x16_q6K_scale_off(int sb) {
    return (size_t)(2 * (sb / 8) + sb % 2) * CS_X16_Q6K_QUARTER + (size_t)16 * ((sb % 8) / 2);
}
static inline size_t x16_q6K_quant_off(int h, int g, int u) {
    return (size_t)(2 * h + g) * CS_X16_Q6K_QUARTER + 64 + (size_t)192 * u;
}
#define CS_X16_Q3K_BLOCK  1760
#define CS_X16_Q2K_BLOCK  1344
#define CS_X16_Q5_0_BLOCK 352 /* legacy types (IQ4_NL: CS_X16_Q4_BLOCK) */
#define CS_X16_Q4_1_BLOCK 320
#define CS_X16_Q5_1_BLOCK 384

/* Where the parts of one x16 group block of Q5_0, Q4_1 or Q5_1 start
 * (layout below): d[16] at 0, m[16] at 32 (Q4_1 / Q5_1: has_m), qh at
 * high (Q5_0 / Q5_1: has_h), qs at qs; size is the block's bytes. One
 * table for the AVX2 and AVX-512 kernels. */
typedef struct x16_legacy_parts {
    size_t size, high, qs;
    bool has_h, has_m;
} x16_legacy_parts;

static inline x16_legacy_parts repack_x16_legacy_parts(int32_t type) {
    const bool has_m = type != CS_TYPE_Q5_0, has_h = type != CS_TYPE_Q4_1;
    const size_t high = has_m ? 64 : 32;
    return (x16_legacy_parts){type == CS_TYPE_Q5_0   ? CS_X16_Q5_0_BLOCK
                              : type == CS_TYPE_Q4_1 ? CS_X16_Q4_1_BLOCK
                                                     : CS_X16_Q5_1_BLOCK,
                              high, high + (has_h ? 64 : 0), has_h, has_m};
}

/* True when an (N rows, K columns) matrix of type can take the x16 layout:
 * F16 or BF16 (K a positive multiple of 16), Q4_0, Q8_0, Q5_0, IQ4_NL, Q4_1 or Q5_1 (K a positive
 * multiple of 32) or Q4_K, Q5_K, Q6_K, IQ4_XS, Q3_K or Q2_K (K a positive multiple of 256), N a
 * positive multiple of 16. */
bool repack_x16_fits(int32_t type, int64_t N, int64_t K);

/* Reorder W (N rows of K elements, row-major) into the x16 layout in place.
 * tmp: scratch of 16 rows (16 * row bytes). Requires repack_x16_fits.
 * Cost: one read and one write of W. */
void repack_x16_pack(int32_t type, void *W, int64_t N, int64_t K, void *tmp);

/* The same layout written to dst from the row-major src (same size, not
 * overlapping): the model loader packs the file's weights straight into
 * its huge-page arena. Cost: one read of src and one write of dst. */
void repack_x16_pack_to(int32_t type, void *dst, const void *src, int64_t N, int64_t K);

/* The inverse: x16 matrix W back to row-major rows in out (not in place). */
void repack_x16_unpack(int32_t type, const void *W, int64_t N, int64_t K, void *out);

/* The scalar reference of one x16 group against one activation row (Q8_0
 * blocks for Q4_0 / Q8_0 / Q5_0 / IQ4_NL, F16 / BF16 values for F16 / BF16, Q8_1 for Q4_1 / Q5_1,
 * Q8_K for Q4_K / Q5_K / Q6_K / IQ4_XS / Q3_K / Q2_K): out[r] = dot(row 16g + r, x) for r < 16, grp
 * = the group's first byte, in the order of the x16 kernels (each function's comment in repack.c).
 * Reads only the blocks of x (not the aux entries), so it also checks the aux entries the SIMD
 * kernels rely on. */
void repack_x16_dot_ref(int32_t type, int64_t K, const void *grp, const void *x,
                        float out[CS_X16_ROWS]);

/* The x16 BF16 group in the arithmetic of bf16_avx512.c's x16 kernels
 * (vdpbf16ps, the tables that have it; x: the bf16 activation row):
 * per row two chains, element pairs (k, k+1) with k / 2 even and odd, each
 * step bf16_dp_lane_ref (kernels.h), from +0, then their sum. */
void repack_x16_dot_bf16dp_ref(int64_t K, const void *grp, const void *x, float out[CS_X16_ROWS]);

#endif /* CS_REPACK_H */
