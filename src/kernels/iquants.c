/* iquants.c: scalar reference codecs and dots for IQ4_NL and IQ4_XS (see
 * iquants.h). The quantizer reproduces ggml's quantize_row_iq4_nl_impl
 * without importance matrix step for step (same float operations in the
 * same order; ISO C11 contracts no a*b+c into an FMA), so its bytes match
 * llama-quantize's. */
#include "iquants.h"

#include <math.h>
#include <string.h>

#include "../common.h"

#define GROUP_MAX_EPS 1e-15f

const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                 1,    13,   25,  38,  53,  69,  89,  113};

/* Round to nearest, ties to even, for |v| < 2^22 (ggml's nearest_int). */
static int nearest_int(float v) {
    float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* Index of the level nearest to v (the upper one on a tie; NaN gives 15),
 * by bisection as ggml's best_index_int8. */
static int best_level(float v) {
    if (v <= (float)iq4nl_values[0]) return 0;
    if (v >= (float)iq4nl_values[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < (float)iq4nl_values[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - (float)iq4nl_values[hi - 1] < (float)iq4nl_values[hi] - v ? hi - 1 : hi;
}

/* Least-squares scale of one 32-element block with weights x^2: indices
 * for the start scale max/(-127) (ntry < 0, IQ4_NL) or max/127 (IQ4_XS,
 * then trial scales (t - 127)/max for t in -ntry..ntry). Returns the
 * scale; L gets the start indices. xb's |max| >= GROUP_MAX_EPS. */
static float fit_block(const float *xb, float amax_signed, int ntry, uint8_t *L) {
    float w[CS_QK4_NL];
    for (int j = 0; j < CS_QK4_NL; ++j) w[j] = xb[j] * xb[j];
    const float max = amax_signed;
    const float v0 = (float)iq4nl_values[0];
    float d = ntry > 0 ? -max / v0 : max / v0;
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < CS_QK4_NL; ++j) {
        const int l = best_level(id * xb[j]);
        L[j] = (uint8_t)l;
        const float q = (float)iq4nl_values[l];
        sumqx += w[j] * q * xb[j];
        sumq2 += w[j] * q * q;
    }
    d = sumqx / sumq2;
    float best = d * sumqx;
    for (int t = -ntry; t <= ntry; ++t) {
        id = (float)(t + iq4nl_values[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < CS_QK4_NL; ++j) {
            const float q = (float)iq4nl_values[best_level(id * xb[j])];
            sumqx += w[j] * q * xb[j];
            sumq2 += w[j] * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* The value of largest magnitude (the first one on ties); 0 for none. */
static float signed_amax(const float *x, int n, float *amax) {
    float a = 0, m = 0;
    for (int j = 0; j < n; ++j) {
        const float ax = fabsf(x[j]);
        if (ax > a) {
            a = ax;
            m = x[j];
        }
    }
    *amax = a;
    return m;
}

/* Nibbles: element j low, element j + 16 high, per 32 elements. */
static void pack_indices(const uint8_t *L, uint8_t *qs, int n) {
    for (int b = 0; b < n / 32; ++b)
        for (int j = 0; j < 16; ++j)
            qs[16 * b + j] = (uint8_t)(L[32 * b + j] | (L[32 * b + 16 + j] << 4));
}

void quantize_row_iq4_nl_ref(const float *x, void *vy, int64_t n) {
    block_iq4_nl *y = vy;
    uint8_t L[CS_QK4_NL] = {0}; /* kept across blocks, as in ggml (see iquants.h) */
    for (int64_t b = 0; b < n / CS_QK4_NL; ++b) {
        const float *xb = x + b * CS_QK4_NL;
        float amax;
        const float max = signed_amax(xb, CS_QK4_NL, &amax);
        float d = 0;
        if (amax >= GROUP_MAX_EPS) d = fit_block(xb, max, -1, L);
        y[b].d = fp32_to_fp16(d);
        pack_indices(L, y[b].qs, CS_QK4_NL);
    }
}

void quantize_iq4_nl(const float *x, void *vy, int64_t n) {
    block_iq4_nl *y = vy;
    for (int64_t b = 0; b < n / CS_QK4_NL; ++b) {
        const float *xb = x + b * CS_QK4_NL;
        uint8_t L[CS_QK4_NL];
        float amax;
        const float max = signed_amax(xb, CS_QK4_NL, &amax);
        const float d = amax >= GROUP_MAX_EPS ? fit_block(xb, max, 7, L) : 0.0f;
        /* ggml re-picks every index for the final scale (all the level
         * nearest 0 when d is 0). */
        const float id = d != 0.0f ? 1 / d : 0.0f;
        for (int j = 0; j < CS_QK4_NL; ++j) L[j] = (uint8_t)best_level(id * xb[j]);
        y[b].d = fp32_to_fp16(d);
        pack_indices(L, y[b].qs, CS_QK4_NL);
    }
}

void quantize_row_iq4_xs_ref(const float *x, void *vy, int64_t n) {
    block_iq4_xs *y = vy;
    enum { NSUB = CS_QK_K / 32 };
    for (int64_t i = 0; i < n / CS_QK_K; ++i) {
        const float *xs = x + i * CS_QK_K;
        uint8_t L[CS_QK_K];
        float scales[NSUB];
        float max_scale = 0, amax_scale = 0;
        for (int ib = 0; ib < NSUB; ++ib) {
            const float *xb = xs + 32 * ib;
            float amax;
            const float max = signed_amax(xb, 32, &amax);
            scales[ib] = 0;
            if (amax < GROUP_MAX_EPS) continue;
            scales[ib] = fit_block(xb, max, 7, L + 32 * ib);
            const float abs_d = fabsf(scales[ib]);
            if (abs_d > amax_scale) {
                amax_scale = abs_d;
                max_scale = scales[ib];
            }
        }
        /* 6-bit signed sub-block scales l - 32 in units of d = -max/32
         * (all zero blocks: d = -0.0, stored as f16 0x8000 as in ggml) */
        const float d = -max_scale / 32;
        y[i].d = fp32_to_fp16(d);
        y[i].scales_h = 0;
        memset(y[i].scales_l, 0, sizeof y[i].scales_l);
        const float id = d != 0.0f ? 1 / d : 0.0f;
        for (int ib = 0; ib < NSUB; ++ib) {
            int l = nearest_int(id * scales[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            const float dl = d * (float)l;
            const float idl = dl != 0.0f ? 1 / dl : 0.0f;
            for (int j = 0; j < 32; ++j)
                L[32 * ib + j] = (uint8_t)best_level(idl * xs[32 * ib + j]);
            l += 32;
            y[i].scales_l[ib / 2] |= (uint8_t)((l & 0xF) << (4 * (ib % 2)));
            y[i].scales_h |= (uint16_t)((l >> 4) << (2 * ib));
        }
        pack_indices(L, y[i].qs, CS_QK_K);
    }
}

void dequantize_row_iq4_nl(const void *vx, float *y, int64_t n) {
    const block_iq4_nl *x = vx;
    for (int64_t b = 0; b < n / CS_QK4_NL; ++b) {
        const float d = fp16_to_fp32(x[b].d);
        float *o = y + b * CS_QK4_NL;
        for (int j = 0; j < 16; ++j) {
            o[j] = d * (float)iq4nl_values[x[b].qs[j] & 0xF];
            o[j + 16] = d * (float)iq4nl_values[x[b].qs[j] >> 4];
        }
    }
}

/* Sub-block b's 6-bit scale (0..63; the multiplier is ls - 32). */
static int xs_scale(const block_iq4_xs *x, int b) {
    return ((x->scales_l[b / 2] >> (4 * (b % 2))) & 0xF) | (((x->scales_h >> (2 * b)) & 3) << 4);
}

void dequantize_row_iq4_xs(const void *vx, float *y, int64_t n) {
    const block_iq4_xs *x = vx;
    for (int64_t i = 0; i < n / CS_QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int b = 0; b < CS_QK_K / 32; ++b) {
            const float dl = d * (float)(xs_scale(&x[i], b) - 32);
            const uint8_t *qs = x[i].qs + 16 * b;
            float *o = y + i * CS_QK_K + 32 * b;
            for (int j = 0; j < 16; ++j) {
                o[j] = dl * (float)iq4nl_values[qs[j] & 0xF];
                o[j + 16] = dl * (float)iq4nl_values[qs[j] >> 4];
            }
        }
    }
}

/* ------------------------------------------------------------- dots */

void vec_dot_iq4_nl_q8_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_nl *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0;
    for (int64_t b = 0; b < n / CS_QK4_NL; ++b) {
        const float d = fp16_to_fp32(y[b].d) * fp16_to_fp32(x[b].d);
        sum += d * (float)iq4_nl_block_isum(x[b].qs, y[b].qs);
    }
    *s = sum;
}

/* Per super-block the exact integer isum = sum over the sub-blocks of
 * (ls - 32) * (q . a) (|isum| <= 8 * 32 * 32 * 127 * 127 < 2^31), then
 * sum += (d_w * d_a) * isum, a multiply and an add: ggml's AVX2 order up to
 * the float rounding of its 8 lanes (ggml's scalar code scales every
 * sub-block in float). One float step per super-block is what lets the x16
 * kernels fold the scale into the integer products (x16_kquants_*.c). */
void vec_dot_iq4_xs_q8_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_iq4_xs *x = vx;
    const block_q8_K *y = vy;
    float sum = 0;
    for (int64_t i = 0; i < n / CS_QK_K; ++i) {
        int32_t isum = 0;
        for (int b = 0; b < CS_QK_K / 32; ++b)
            isum +=
                (xs_scale(&x[i], b) - 32) * iq4_nl_block_isum(x[i].qs + 16 * b, y[i].qs + 32 * b);
        sum += fp16_to_fp32(x[i].d) * y[i].d * (float)isum;
    }
    *s = sum;
}
