/* quant_legacy.c: reference codecs and dots of the Q4_1, Q5_0, Q5_1
 * weights and the Q8_1 activations (layouts and numerics in
 * quant_legacy.h). Scalar, O(n) per row. */
#include "quant_legacy.h"

#include <math.h>
#include <string.h>

#define QK   CS_QK_LEGACY
#define HALF (CS_QK_LEGACY / 2)

/* ----------------------------------------------------------- helpers */

static void block_min_max(const float *v, float *min, float *max) {
    float lo = v[0], hi = v[0];
    for (int j = 1; j < QK; j++) {
        if (v[j] < lo) lo = v[j];
        if (v[j] > hi) hi = v[j];
    }
    *min = lo;
    *max = hi;
}

static uint32_t load_qh(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4); /* little-endian, as ggml reads it */
    return h;
}

static void store_qh(uint8_t *qh, uint32_t h) {
    memcpy(qh, &h, 4);
}

/* The fifth bit (0 or 16) of element j of a Q5 block. */
static int32_t q5_high(uint32_t qh, int j) {
    return (int32_t)((qh >> j) & 1u) << 4;
}

/* ------------------------------------------------------ dequantizers */

void dequantize_row_q4_1(const void *vx, float *y, int64_t n) {
    const block_q4_1 *x = vx;
    for (int64_t b = 0; b < n / QK; b++) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        float *o = y + b * QK;
        for (int j = 0; j < HALF; j++) {
            o[j] = (float)(x[b].qs[j] & 0x0f) * d + m;
            o[j + HALF] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

void dequantize_row_q5_0(const void *vx, float *y, int64_t n) {
    const block_q5_0 *x = vx;
    for (int64_t b = 0; b < n / QK; b++) {
        const float d = fp16_to_fp32(x[b].d);
        const uint32_t qh = load_qh(x[b].qh);
        float *o = y + b * QK;
        for (int j = 0; j < HALF; j++) {
            o[j] = (float)(((x[b].qs[j] & 0x0f) | q5_high(qh, j)) - 16) * d;
            o[j + HALF] = (float)(((x[b].qs[j] >> 4) | q5_high(qh, j + HALF)) - 16) * d;
        }
    }
}

void dequantize_row_q5_1(const void *vx, float *y, int64_t n) {
    const block_q5_1 *x = vx;
    for (int64_t b = 0; b < n / QK; b++) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        const uint32_t qh = load_qh(x[b].qh);
        float *o = y + b * QK;
        for (int j = 0; j < HALF; j++) {
            o[j] = (float)((x[b].qs[j] & 0x0f) | q5_high(qh, j)) * d + m;
            o[j + HALF] = (float)((x[b].qs[j] >> 4) | q5_high(qh, j + HALF)) * d + m;
        }
    }
}

/* -------------------------------------------------------- quantizers */
/* The casts and clamps are ggml's: the scaled value plus the rounding
 * offset is truncated toward zero (int8 or uint8), then clamped where ggml
 * clamps (Q5_1 is not: its values lie in [0, 31.5)). */

void quantize_row_q4_1_ref(const float *x, void *vy, int64_t n) {
    block_q4_1 *y = vy;
    for (int64_t b = 0; b < n / QK; b++) {
        const float *v = x + b * QK;
        float min, max;
        block_min_max(v, &min, &max);
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(min);
        for (int j = 0; j < HALF; j++) {
            const int8_t q0 = (int8_t)((v[j] - min) * id + 0.5f);
            const int8_t q1 = (int8_t)((v[j + HALF] - min) * id + 0.5f);
            const uint8_t u0 = (uint8_t)(q0 < 15 ? q0 : 15), u1 = (uint8_t)(q1 < 15 ? q1 : 15);
            y[b].qs[j] = (uint8_t)(u0 | (u1 << 4));
        }
    }
}

void quantize_row_q5_0_ref(const float *x, void *vy, int64_t n) {
    block_q5_0 *y = vy;
    for (int64_t b = 0; b < n / QK; b++) {
        const float *v = x + b * QK;
        float amax = 0.0f, max = 0.0f; /* max keeps the sign of the largest |v| */
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(v[j])) {
                amax = fabsf(v[j]);
                max = v[j];
            }
        }
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < HALF; j++) {
            const int8_t q0 = (int8_t)(v[j] * id + 16.5f);
            const int8_t q1 = (int8_t)(v[j + HALF] * id + 16.5f);
            const uint8_t u0 = (uint8_t)(q0 < 31 ? q0 : 31), u1 = (uint8_t)(q1 < 31 ? q1 : 31);
            y[b].qs[j] = (uint8_t)((u0 & 0x0f) | ((u1 & 0x0f) << 4));
            qh |= (uint32_t)(u0 >> 4) << j | (uint32_t)(u1 >> 4) << (j + HALF);
        }
        store_qh(y[b].qh, qh);
    }
}

void quantize_row_q5_1_ref(const float *x, void *vy, int64_t n) {
    block_q5_1 *y = vy;
    for (int64_t b = 0; b < n / QK; b++) {
        const float *v = x + b * QK;
        float min, max;
        block_min_max(v, &min, &max);
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < HALF; j++) {
            const uint8_t u0 = (uint8_t)((v[j] - min) * id + 0.5f);
            const uint8_t u1 = (uint8_t)((v[j + HALF] - min) * id + 0.5f);
            y[b].qs[j] = (uint8_t)((u0 & 0x0f) | ((u1 & 0x0f) << 4));
            qh |= (uint32_t)((u0 >> 4) & 1u) << j | (uint32_t)((u1 >> 4) & 1u) << (j + HALF);
        }
        store_qh(y[b].qh, qh);
    }
}

void quantize_row_q8_1_ref(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / QK; b++) {
        const float *v = x + b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            if (fabsf(v[j]) > amax) amax = fabsf(v[j]);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        /* nearbyintf: round half to even in the default rounding mode, as
         * _mm256_round_ps(_MM_ROUND_NEAREST) */
        for (int j = 0; j < QK; j++) {
            y[b].qs[j] = (int8_t)nearbyintf(v[j] * id);
            sum += y[b].qs[j];
        }
        y[b].d = fp32_to_fp16(d);
        y[b].s = fp32_to_fp16(d * (float)sum);
    }
}

/* -------------------------------------------------------------- dots */

/* Dots in the block-sum order of quant_legacy.h. |isum| <= 32 * 31 * 127:
 * exact in int32 and in float. */
void vec_dot_q4_1_q8_1_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0.0f, summs = 0.0f;
    for (int64_t b = 0; b < n / QK; b++) {
        int32_t isum = 0;
        for (int j = 0; j < HALF; j++) {
            isum += (int32_t)(x[b].qs[j] & 0x0f) * y[b].qs[j];
            isum += (int32_t)(x[b].qs[j] >> 4) * y[b].qs[j + HALF];
        }
        summs = fmaf(fp16_to_fp32(x[b].m), fp16_to_fp32(y[b].s), summs);
        sum += (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d)) * (float)isum;
    }
    *s = sum + summs;
}

void vec_dot_q5_0_q8_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_0 *x = vx;
    const block_q8_0 *y = vy;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK; b++) {
        const uint32_t qh = load_qh(x[b].qh);
        int32_t isum = 0;
        for (int j = 0; j < HALF; j++) {
            isum += (((x[b].qs[j] & 0x0f) | q5_high(qh, j)) - 16) * y[b].qs[j];
            isum += (((x[b].qs[j] >> 4) | q5_high(qh, j + HALF)) - 16) * y[b].qs[j + HALF];
        }
        sum += (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d)) * (float)isum;
    }
    *s = sum;
}

void vec_dot_q5_1_q8_1_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q5_1 *x = vx;
    const block_q8_1 *y = vy;
    float sum = 0.0f, summs = 0.0f;
    for (int64_t b = 0; b < n / QK; b++) {
        const uint32_t qh = load_qh(x[b].qh);
        int32_t isum = 0;
        for (int j = 0; j < HALF; j++) {
            isum += ((x[b].qs[j] & 0x0f) | q5_high(qh, j)) * y[b].qs[j];
            isum += ((x[b].qs[j] >> 4) | q5_high(qh, j + HALF)) * y[b].qs[j + HALF];
        }
        summs = fmaf(fp16_to_fp32(x[b].m), fp16_to_fp32(y[b].s), summs);
        sum += (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d)) * (float)isum;
    }
    *s = sum + summs;
}
