/* repack.c: the x16 weight layout (see repack.h): pack, unpack, and the
 * scalar reference dots that the SIMD kernels are tested against. */
#include "repack.h"

#include <math.h>
#include <string.h>

#include "../common.h"
#include "iquants.h"
#include "kquants.h"
#include "quant_legacy.h"

/* A block format as a list of fields. In the x16 layout each field of the
 * 16 rows' block b is stored as slices: slice i of the field (bytes
 * [i*size, (i+1)*size) of it) of row r goes to field_start + (i*16 + r) *
 * size. size 2 puts the f16 scales side by side (d[16]); size 1 makes byte
 * planes; size 4 interleaves the quants by 4-byte slices. Fields are
 * written in the listed order; xor flips bits of every byte (Q8_0: +128). */
typedef struct x16_field {
    uint16_t off; /* offset in the row-major block */
    uint16_t len; /* bytes in the row-major block */
    uint8_t size; /* slice size */
    uint8_t xor_mask;
} x16_field;

typedef struct x16_format {
    size_t block; /* row-major block bytes */
    int64_t qk;   /* elements per block */
    int n_fields;
    x16_field f[4];
    /* where slice i of field k goes (offset of its 16-row group in the
     * x16 block); NULL: fields one after the other, slices in order */
    size_t (*slot)(int k, int i);
} x16_format;

/* Q6_K (repack.h, x16_q6K_scale_off): the kernel assembles 6-bit values
 * from one ql slice at l, one at l + 32 and the qh slice at l; storing
 * those three side by side, in the order the kernel walks them (half h,
 * sub-block parity g, slice u), each quarter's scale planes before its
 * slices and d last, makes the weight stream strictly sequential, which the
 * hardware prefetcher needs for generation (T = 1): the field-by-field
 * order ran at a fifth of the bandwidth. */
static size_t q6_K_slot(int k, int i) {
    int h, g, u, sub;
    if (k == 0) { /* ql slice i: bytes 4i..4i+3 of ql */
        h = i / 16, sub = (i % 16) < 8 ? 0 : 1, g = (i % 8) / 4, u = i % 4;
    } else if (k == 1) { /* qh slice i */
        h = i / 8, sub = 2, g = (i % 8) / 4, u = i % 4;
    } else if (k == 2) { /* scale plane of sub-block i */
        return x16_q6K_scale_off(i);
    } else { /* d */
        return CS_X16_Q6K_D;
    }
    return x16_q6K_quant_off(h, g, u) + (size_t)sub * 64;
}

/* Q3_K (repack.h): d, the scale planes, then per lane k (elements 4k ..
 * 4k+3 of each 32) the hmask slice k and the qs slices (h = 0, k) and
 * (h = 1, k), so the kernel, which finishes lane k of all 16 sub-blocks
 * before lane k + 1, reads the block front to back. Fields: hmask, qs,
 * scales, d. */
static size_t q3_K_slot(int k, int i) {
    if (k == 0) return 224 + (size_t)i * 192;
    if (k == 1) return 224 + (size_t)(i % 8) * 192 + 64 + (size_t)(i / 8) * 64;
    if (k == 2) return 32 + (size_t)i * CS_X16_ROWS;
    return 0;
}

/* Q2_K (repack.h): d, dmin, the scales as 2-byte slices, then per lane k
 * the qs slices (h = 0, k) and (h = 1, k), in the kernel's read order.
 * Fields: scales, qs, d, dmin. */
static size_t q2_K_slot(int k, int i) {
    if (k == 0) return 64 + (size_t)i * 2 * CS_X16_ROWS;
    if (k == 1) return 320 + (size_t)(i % 8) * 128 + (size_t)(i / 8) * 64;
    return k == 2 ? 0 : 32;
}

/* Q5_K (repack.h): d and dmin, the scale planes, then per lane k (elements
 * 4k .. 4k+3 of each sub-block of 32) the qh slice k and the qs slices
 * (j, k), j = 0..3 (qs bytes 32j + 4k .. +3: low nibbles sub-block 2j,
 * high nibbles 2j + 1), so the lane-by-lane kernel reads the block front
 * to back. Fields: d and dmin as one 2-slice field, scales, qh, qs. */
static size_t q5_K_slot(int k, int i) {
    if (k == 0) return (size_t)i * 2 * CS_X16_ROWS;
    if (k == 1) return 64 + (size_t)i * CS_X16_ROWS;
    if (k == 2) return 256 + (size_t)i * 320;
    return 256 + (size_t)(i % 8) * 320 + 64 + (size_t)(i / 8) * 64;
}

/* F16 / BF16: element k of the 16 rows side by side (32 bytes, one
 * widening), blocks of 16 elements so K need only be a multiple of 16. */
static const x16_format k_f16 = {32, 16, 1, {{0, 32, 2, 0}}, NULL};
static const x16_format k_q4_0 = {18, 32, 2, {{0, 2, 2, 0}, {2, 16, 4, 0}}, NULL};
static const x16_format k_q8_0 = {34, 32, 2, {{0, 2, 2, 0}, {2, 32, 4, 0x80}}, NULL};
static const x16_format k_q4_K = {
    144, 256, 4, {{0, 2, 2, 0}, {2, 2, 2, 0}, {4, 12, 1, 0}, {16, 128, 4, 0}}, NULL};
static const x16_format k_q6_K = {
    210, 256, 4, {{0, 128, 4, 0}, {128, 64, 4, 0}, {192, 16, 1, 0}, {208, 2, 2, 0}}, q6_K_slot};
static const x16_format k_q5_K = {
    176, 256, 4, {{0, 4, 2, 0}, {4, 12, 1, 0}, {16, 32, 4, 0}, {48, 128, 4, 0}}, q5_K_slot};
/* IQ4_XS: d, scales_h, scales_l planes, then qs (the kernel's read order) */
static const x16_format k_iq4_xs = {
    136, 256, 4, {{0, 2, 2, 0}, {2, 2, 2, 0}, {4, 4, 1, 0}, {8, 128, 4, 0}}, NULL};

static const x16_format k_q3_K = {
    110, 256, 4, {{0, 32, 4, 0}, {32, 64, 4, 0}, {96, 12, 1, 0}, {108, 2, 2, 0}}, q3_K_slot};

static const x16_format k_q2_K = {
    84, 256, 4, {{0, 16, 2, 0}, {16, 64, 4, 0}, {80, 2, 2, 0}, {82, 2, 2, 0}}, q2_K_slot};

/* Q4_1 / Q5_0 / Q5_1 / IQ4_NL (repack.h): d (and m) as f16 rows, qh one
 * bit-transposed dword per row, qs as Q4_0. */
static const x16_format k_iq4_nl = {18, 32, 2, {{0, 2, 2, 0}, {2, 16, 4, 0}}, NULL};
static const x16_format k_q5_0 = {22, 32, 3, {{0, 2, 2, 0}, {2, 4, 4, 0}, {6, 16, 4, 0}}, NULL};
static const x16_format k_q4_1 = {20, 32, 3, {{0, 2, 2, 0}, {2, 2, 2, 0}, {4, 16, 4, 0}}, NULL};
static const x16_format k_q5_1 = {
    24, 32, 4, {{0, 2, 2, 0}, {2, 2, 2, 0}, {4, 4, 4, 0}, {8, 16, 4, 0}}, NULL};

/* The qh fields (4-byte slices, bit-transposed by x16_qh_t). */
static bool bit_transposed(const x16_format *fm, int k) {
    return (fm == &k_q5_0 && k == 1) || (fm == &k_q5_1 && k == 2);
}

/* The Q5 high-bit dword: bit 4k + j (element 4k + j, k = lane 0..7, j =
 * 0..3) <-> bit 8j + k, so that one dword shift and a mask put lane k's
 * four high bits at bit 4 of the four bytes (repack.h). A bijection. */
static uint32_t x16_qh_t(uint32_t h, bool to_x16) {
    uint32_t o = 0;
    for (int e = 0; e < 32; e++) {
        const int a = e, b = 8 * (e % 4) + e / 4;
        o |= ((h >> (to_x16 ? a : b)) & 1u) << (to_x16 ? b : a);
    }
    return o;
}

static const x16_format *format_of(int32_t type) {
    switch (type) {
    case CS_TYPE_F16:
    case CS_TYPE_BF16:
        return &k_f16;
    case CS_TYPE_Q5_0:
        return &k_q5_0;
    case CS_TYPE_IQ4_NL:
        return &k_iq4_nl;
    case CS_TYPE_Q4_1:
        return &k_q4_1;
    case CS_TYPE_Q5_1:
        return &k_q5_1;
    case CS_TYPE_Q4_0:
        return &k_q4_0;
    case CS_TYPE_Q8_0:
        return &k_q8_0;
    case CS_TYPE_Q4_K:
        return &k_q4_K;
    case CS_TYPE_Q5_K:
        return &k_q5_K;
    case CS_TYPE_Q6_K:
        return &k_q6_K;
    case CS_TYPE_IQ4_XS:
        return &k_iq4_xs;
    case CS_TYPE_Q3_K:
        return &k_q3_K;
    case CS_TYPE_Q2_K:
        return &k_q2_K;
    default:
        return NULL;
    }
}

bool repack_x16_fits(int32_t type, int64_t N, int64_t K) {
    const x16_format *f = format_of(type);
    return f && N > 0 && N % CS_X16_ROWS == 0 && K > 0 && K % f->qk == 0;
}

/* Row-major group (16 rows of nb blocks) in rows <-> x16 group in grp. */
static void convert_group(const x16_format *fm, int64_t nb, uint8_t *rows, uint8_t *grp,
                          bool to_x16) {
    const size_t gb = fm->block * CS_X16_ROWS, row = (size_t)nb * fm->block;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *o = grp + (size_t)b * gb;
        size_t start = 0;
        for (int k = 0; k < fm->n_fields; k++) {
            const x16_field *f = &fm->f[k];
            const bool bit_t = bit_transposed(fm, k);
            for (int r = 0; r < CS_X16_ROWS; r++) {
                uint8_t *blk = rows + (size_t)r * row + (size_t)b * fm->block + f->off;
                for (int i = 0; i < f->len / f->size; i++) {
                    const size_t at =
                        fm->slot ? fm->slot(k, i) : start + (size_t)i * CS_X16_ROWS * f->size;
                    uint8_t *x = o + at + (size_t)r * f->size;
                    uint8_t *y = blk + (size_t)i * f->size;
                    if (bit_t) { /* size 4 */
                        uint32_t v;
                        memcpy(&v, to_x16 ? y : x, 4);
                        v = x16_qh_t(v, to_x16);
                        memcpy(to_x16 ? x : y, &v, 4);
                        continue;
                    }
                    for (int j = 0; j < f->size; j++) {
                        if (to_x16)
                            x[j] = y[j] ^ f->xor_mask;
                        else
                            y[j] = x[j] ^ f->xor_mask;
                    }
                }
            }
            start += (size_t)f->len * CS_X16_ROWS;
        }
    }
}

void repack_x16_pack(int32_t type, void *W, int64_t N, int64_t K, void *tmp) {
    CS_ASSERT(repack_x16_fits(type, N, K) && W && tmp);
    const x16_format *fm = format_of(type);
    const int64_t nb = K / fm->qk;
    const size_t gsize = (size_t)nb * fm->block * CS_X16_ROWS;
    for (int64_t g = 0; g < N / CS_X16_ROWS; g++) {
        uint8_t *p = (uint8_t *)W + (size_t)g * gsize;
        memcpy(tmp, p, gsize);
        convert_group(fm, nb, tmp, p, true);
    }
}

void repack_x16_pack_to(int32_t type, void *dst, const void *src, int64_t N, int64_t K) {
    CS_ASSERT(repack_x16_fits(type, N, K) && dst && src);
    const x16_format *fm = format_of(type);
    const int64_t nb = K / fm->qk;
    const size_t gsize = (size_t)nb * fm->block * CS_X16_ROWS;
    for (int64_t g = 0; g < N / CS_X16_ROWS; g++)
        convert_group(fm, nb, (uint8_t *)(uintptr_t)src + (size_t)g * gsize,
                      (uint8_t *)dst + (size_t)g * gsize, true);
}

void repack_x16_unpack(int32_t type, const void *W, int64_t N, int64_t K, void *out) {
    CS_ASSERT(repack_x16_fits(type, N, K) && W && out);
    const x16_format *fm = format_of(type);
    const int64_t nb = K / fm->qk;
    const size_t gsize = (size_t)nb * fm->block * CS_X16_ROWS;
    for (int64_t g = 0; g < N / CS_X16_ROWS; g++)
        convert_group(fm, nb, (uint8_t *)out + (size_t)g * gsize,
                      (uint8_t *)(uintptr_t)W + (size_t)g * gsize, false);
}

/* ------------------------------------------------ reference dots */

/* The x16 kernels' order on one unpacked row of Q4_0 / Q8_0: per block the
 * exact integer sum, scaled by d_w * d_x; fma for Q4_0, multiply then add
 * for Q8_0 (ref.c's row-major order). */
static float dot_row_q(int32_t type, int64_t K, const uint8_t *w, const block_q8_0 *x) {
    float acc = 0.0f;
    for (int64_t b = 0; b < K / CS_QK8_0; b++) {
        int32_t isum = 0;
        uint16_t dh;
        if (type == CS_TYPE_Q4_0) {
            const block_q4_0 *q = (const block_q4_0 *)(const void *)w + b;
            dh = q->d;
            for (int j = 0; j < 16; j++)
                isum += ((int32_t)(q->qs[j] & 0x0f) - 8) * x[b].qs[j] +
                        ((int32_t)(q->qs[j] >> 4) - 8) * x[b].qs[j + 16];
        } else {
            const block_q8_0 *q = (const block_q8_0 *)(const void *)w + b;
            dh = q->d;
            for (int j = 0; j < 32; j++) isum += (int32_t)q->qs[j] * x[b].qs[j];
        }
        const float sc = fp16_to_fp32(dh) * fp16_to_fp32(x[b].d);
        if (type == CS_TYPE_Q4_0)
            acc = fmaf((float)isum, sc, acc);
        else
            acc += (float)isum * sc;
    }
    return acc;
}

/* Q4_K and Q5_K in the x16 kernels' order (Q5_K: Q4_K's with a fifth bit;
 * the row references keep their float lanes): per super-block the exact
 * integers sumi = sum_j sc[j] * (sum of q * a over sub-block j of 32; Q5_K:
 * q = nibble | qh bit j << 4) and summ = sum_j m[j] * (bsums[2j] +
 * bsums[2j+1]), then acc = fma(sumi, d*d_a, acc), accm = fma(summ,
 * dmin*d_a, accm); the result is acc - accm. Both blocks start d, dmin,
 * scales[12]; Q5_K has qh[32] before qs. */
static float dot_row_k4(int64_t K, const uint8_t *w, size_t stride, bool q5, const block_q8_K *a) {
    float acc = 0.0f, accm = 0.0f;
    for (int64_t b = 0; b < K / CS_QK_K; b++) {
        const uint8_t *blk = w + (size_t)b * stride;
        uint16_t hd, hdmin;
        memcpy(&hd, blk, 2);
        memcpy(&hdmin, blk + 2, 2);
        const uint8_t *q = blk + 4, *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            const int32_t sc = j < 4 ? (q[j] & 63) : ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
            const int32_t mn = j < 4 ? (q[j + 4] & 63) : ((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
            int32_t isum = 0;
            for (int l = 0; l < 32; l++) {
                const uint8_t byte = qs[32 * (j / 2) + l];
                int32_t v = j % 2 ? byte >> 4 : byte & 0xF;
                if (q5) v |= ((qh[l] >> j) & 1) << 4;
                isum += v * a[b].qs[32 * j + l];
            }
            sumi += sc * isum;
            summ += mn * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        }
        acc = fmaf((float)sumi, fp16_to_fp32(hd) * a[b].d, acc);
        accm = fmaf((float)summ, fp16_to_fp32(hdmin) * a[b].d, accm);
    }
    return acc - accm;
}

/* Q6_K in the x16 kernels' order: per super-block the exact integer
 * sumi = sum_s scale[s] * (sum of q * a over sub-block s - 32 * bsums[s]),
 * then acc = fma(sumi, d*d_a, acc). */
static float dot_row_q6_K(int64_t K, const block_q6_K *w, const block_q8_K *a) {
    float acc = 0.0f;
    for (int64_t b = 0; b < K / CS_QK_K; b++) {
        int32_t sumi = 0;
        for (int s = 0; s < 16; s++) {
            int32_t isum = 0;
            for (int e = 16 * s; e < 16 * s + 16; e++) {
                const int h = e / 128, l = e % 32, m = (e % 128) / 32;
                const uint8_t lo = w[b].ql[64 * h + l + 32 * (m & 1)];
                const int32_t q =
                    (m < 2 ? lo & 0xF : lo >> 4) | (((w[b].qh[32 * h + l] >> (2 * m)) & 3) << 4);
                isum += q * a[b].qs[e];
            }
            sumi += (int32_t)w[b].scales[s] * (isum - 32 * a[b].bsums[s]);
        }
        acc = fmaf((float)sumi, fp16_to_fp32(w[b].d) * a[b].d, acc);
    }
    return acc;
}

/* The x16 F16 / BF16 kernels' order on one unpacked row against
 * activations of the same type: two fused chains, even k and odd k, from
 * +0, then their sum. The two chains let the column (T = 1) keep two FMAs
 * in flight on one group of 16 rows; both operands widen exactly, so fmaf
 * matches vfmadd231ps. */
static float dot_row_16(int64_t K, const uint16_t *w, const uint16_t *x, bool bf16) {
    float (*cvt)(uint16_t) = bf16 ? bf16_to_fp32 : fp16_to_fp32;
    float c0 = 0.0f, c1 = 0.0f;
    for (int64_t k = 0; k < K; k += 2) {
        c0 = fmaf(cvt(w[k]), cvt(x[k]), c0);
        c1 = fmaf(cvt(w[k + 1]), cvt(x[k + 1]), c1);
    }
    return c0 + c1;
}

/* repack_x16_dot_bf16dp_ref's order on one unpacked row: element pairs (k,
 * k+1) alternate between two chains (k / 2 even, odd), each step one
 * vdpbf16ps lane (bf16_dp_lane_ref), from +0, then their sum. */
static float dot_row_bf16dp(int64_t K, const uint16_t *w, const uint16_t *x) {
    float c[2] = {0.0f, 0.0f};
    for (int64_t k = 0; k < K; k += 2)
        c[(k / 2) % 2] = bf16_dp_lane_ref(c[(k / 2) % 2], w + k, x + k);
    return c[0] + c[1];
}

/* repack_x16_dot_ref, with BF16 in the vdpbf16ps arithmetic when bf16dp. */
static void x16_dot_ref(int32_t type, int64_t K, const void *grp, const void *x, bool bf16dp,
                        float out[CS_X16_ROWS]) {
    const x16_format *fm = format_of(type);
    CS_ASSERT(fm);
    const size_t row = (size_t)(K / fm->qk) * fm->block;
    uint8_t rows[CS_X16_ROWS * 210 * 4]; /* up to K = 1024 of any type */
    uint8_t *buf = row * CS_X16_ROWS <= sizeof rows ? rows : mem_malloc(row * CS_X16_ROWS);
    CS_ASSERT(buf);
    repack_x16_unpack(type, grp, CS_X16_ROWS, K, buf);
    for (int r = 0; r < CS_X16_ROWS; r++) {
        const uint8_t *w = buf + (size_t)r * row;
        switch (type) {
        case CS_TYPE_F16:
        case CS_TYPE_BF16:
            out[r] = bf16dp ? dot_row_bf16dp(K, (const void *)w, x)
                            : dot_row_16(K, (const void *)w, x, type == CS_TYPE_BF16);
            break;
        case CS_TYPE_Q5_0: /* the legacy types: their reference dot itself */
            vec_dot_q5_0_q8_0_ref(K, &out[r], w, x);
            break;
        case CS_TYPE_IQ4_NL:
            vec_dot_iq4_nl_q8_0_ref(K, &out[r], w, x);
            break;
        case CS_TYPE_Q4_1:
            vec_dot_q4_1_q8_1_ref(K, &out[r], w, x);
            break;
        case CS_TYPE_Q5_1:
            vec_dot_q5_1_q8_1_ref(K, &out[r], w, x);
            break;
        case CS_TYPE_Q4_K:
            out[r] = dot_row_k4(K, w, sizeof(block_q4_K), false, x);
            break;
        case CS_TYPE_Q6_K:
            out[r] = dot_row_q6_K(K, (const void *)w, x);
            break;
        case CS_TYPE_IQ4_XS: /* the x16 kernels follow the reference dot */
            vec_dot_iq4_xs_q8_K_ref(K, &out[r], w, x);
            break;
        case CS_TYPE_Q5_K:
            out[r] = dot_row_k4(K, w, sizeof(block_q5_K), true, x);
            break;
        case CS_TYPE_Q3_K:
            vec_dot_q3_K_q8_K_ref(K, &out[r], w, x);
            break;
        case CS_TYPE_Q2_K:
            vec_dot_q2_K_q8_K_ref(K, &out[r], w, x);
            break;
        default:
            out[r] = dot_row_q(type, K, w, x);
            break;
        }
    }
    if (buf != rows) mem_free(buf);
}

void repack_x16_dot_ref(int32_t type, int64_t K, const void *grp, const void *x,
                        float out[CS_X16_ROWS]) {
    x16_dot_ref(type, K, grp, x, false, out);
}

void repack_x16_dot_bf16dp_ref(int64_t K, const void *grp, const void *x, float out[CS_X16_ROWS]) {
    x16_dot_ref(CS_TYPE_BF16, K, grp, x, true, out);
}
