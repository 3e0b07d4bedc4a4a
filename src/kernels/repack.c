/* repack.c: the x16 weight layout (see repack.h): pack, unpack, and the
 * scalar reference dot that the SIMD kernels are tested against. */
#include "repack.h"

#include <math.h>
#include <string.h>

#include "../common.h"

static size_t block_bytes(int32_t type) {
    return type == CS_TYPE_Q4_0 ? sizeof(cs_block_q4_0) : sizeof(cs_block_q8_0);
}
static size_t group_block_bytes(int32_t type) {
    return type == CS_TYPE_Q4_0 ? CS_X16_Q4_BLOCK : CS_X16_Q8_BLOCK;
}
/* bytes of quants in one row block: 16 (Q4_0) or 32 (Q8_0) */
static int qs_bytes(int32_t type) {
    return type == CS_TYPE_Q4_0 ? CS_QK4_0 / 2 : CS_QK8_0;
}
/* the byte stored for a quant byte: Q8_0 flips the sign bit (value + 128) */
static uint8_t flip(int32_t type) {
    return type == CS_TYPE_Q8_0 ? 0x80 : 0x00;
}

bool cs_x16_fits(int32_t type, int64_t N, int64_t K) {
    return (type == CS_TYPE_Q4_0 || type == CS_TYPE_Q8_0) && N > 0 && N % CS_X16_ROWS == 0 &&
           K > 0 && K % CS_QK8_0 == 0;
}

/* Row-major group (16 rows of nb blocks) in src -> x16 group in dst. Block
 * layout of both formats: f16 d first, then the quant bytes. */
static void pack_group(int32_t type, int64_t nb, const uint8_t *src, uint8_t *dst) {
    const size_t bb = block_bytes(type), gb = group_block_bytes(type), row = (size_t)nb * bb;
    const int nq = qs_bytes(type);
    const uint8_t f = flip(type);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *o = dst + (size_t)b * gb;
        for (int r = 0; r < CS_X16_ROWS; r++) {
            const uint8_t *blk = src + (size_t)r * row + (size_t)b * bb;
            memcpy(o + 2 * r, blk, 2);
            for (int i = 0; i < nq; i++)
                o[32 + ((size_t)(i / 4) * CS_X16_ROWS + (size_t)r) * 4 + (size_t)(i % 4)] =
                    blk[2 + i] ^ f;
        }
    }
}

static void unpack_group(int32_t type, int64_t nb, const uint8_t *src, uint8_t *dst) {
    const size_t bb = block_bytes(type), gb = group_block_bytes(type), row = (size_t)nb * bb;
    const int nq = qs_bytes(type);
    const uint8_t f = flip(type);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *in = src + (size_t)b * gb;
        for (int r = 0; r < CS_X16_ROWS; r++) {
            uint8_t *blk = dst + (size_t)r * row + (size_t)b * bb;
            memcpy(blk, in + 2 * r, 2);
            for (int i = 0; i < nq; i++)
                blk[2 + i] =
                    in[32 + ((size_t)(i / 4) * CS_X16_ROWS + (size_t)r) * 4 + (size_t)(i % 4)] ^ f;
        }
    }
}

void cs_x16_pack(int32_t type, void *W, int64_t N, int64_t K, void *tmp) {
    CS_ASSERT(cs_x16_fits(type, N, K) && W && tmp);
    const int64_t nb = K / CS_QK8_0;
    const size_t gsize = (size_t)nb * block_bytes(type) * CS_X16_ROWS;
    for (int64_t g = 0; g < N / CS_X16_ROWS; g++) {
        uint8_t *p = (uint8_t *)W + (size_t)g * gsize;
        memcpy(tmp, p, gsize);
        pack_group(type, nb, tmp, p);
    }
}

void cs_x16_unpack(int32_t type, const void *W, int64_t N, int64_t K, void *out) {
    CS_ASSERT(cs_x16_fits(type, N, K) && W && out);
    const int64_t nb = K / CS_QK8_0;
    const size_t gsize = (size_t)nb * block_bytes(type) * CS_X16_ROWS;
    for (int64_t g = 0; g < N / CS_X16_ROWS; g++)
        unpack_group(type, nb, (const uint8_t *)W + (size_t)g * gsize,
                     (uint8_t *)out + (size_t)g * gsize);
}

void cs_x16_dot_ref(int32_t type, int64_t K, const void *grp, const cs_block_q8_0 *x,
                    float out[CS_X16_ROWS]) {
    const int64_t nb = K / CS_QK8_0;
    const size_t gb = group_block_bytes(type);
    float acc[CS_X16_ROWS] = {0};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = (const uint8_t *)grp + (size_t)b * gb;
        const float dx = cs_fp16_to_fp32(x[b].d);
        for (int r = 0; r < CS_X16_ROWS; r++) {
            uint16_t dh;
            memcpy(&dh, blk + 2 * r, 2);
            int32_t isum = 0;
            for (int s = 0; s < qs_bytes(type) / 4; s++) {
                for (int j = 0; j < 4; j++) {
                    const uint8_t q =
                        blk[32 + ((size_t)s * CS_X16_ROWS + (size_t)r) * 4 + (size_t)j];
                    if (type == CS_TYPE_Q4_0)
                        isum += ((int32_t)(q & 0x0f) - 8) * x[b].qs[4 * s + j] +
                                ((int32_t)(q >> 4) - 8) * x[b].qs[16 + 4 * s + j];
                    else
                        isum += (int32_t)(int8_t)(q ^ 0x80) * x[b].qs[4 * s + j];
                }
            }
            const float sc = cs_fp16_to_fp32(dh) * dx;
            /* the block order and rounding of ref.c's row-major dots */
            if (type == CS_TYPE_Q4_0)
                acc[r] = fmaf((float)isum, sc, acc[r]);
            else
                acc[r] += (float)isum * sc;
        }
    }
    memcpy(out, acc, sizeof acc);
}
