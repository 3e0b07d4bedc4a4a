/* quant.c: reference block codecs (Q8_0, Q4_0), the f32/f16/bf16 row
 * conversions of the type table, and dequantize_row / quantize_row,
 * its look-ups. Scalar, O(n) per row.
 *
 * Two Q8_0 quantizers exist on purpose, as in ggml:
 *  - quantize_row_q8_0_ref mirrors ggml's x86 SIMD activation quantizer
 *    (what llama.cpp runs on the activations that meet Q8_0/Q4_0 weights):
 *    id = 127/amax and round half to even. The SIMD tables must produce the
 *    same bytes.
 *  - quantize_row_q8_0_weight_ref (the type table's from_float_ref, so
 *    quantize_row) mirrors quantize_row_q8_0_ref,
 *    which writes weight files: id = 1/d and roundf (half away from zero).
 * The two differ in the last bit for a few inputs; swapping them would make
 * our logits drift from llama.cpp's. */
#include <math.h>
#include <string.h>

#include "../common.h"
#include "kernels.h"

/* Largest |v[j]| of one 32-element block. */
static float block_amax(const float *v) {
    float amax = 0.0f;
    for (int j = 0; j < CS_QK8_0; j++) {
        float a = fabsf(v[j]);
        if (a > amax) amax = a;
    }
    return amax;
}

void quantize_row_q8_0_ref(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    const int64_t nb = n / CS_QK8_0;
    for (int64_t b = 0; b < nb; b++) {
        const float *v = x + b * CS_QK8_0;
        const float amax = block_amax(v);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = fp32_to_fp16(d);
        /* nearbyintf rounds half to even in the default rounding mode,
         * like _mm256_round_ps(_MM_ROUND_NEAREST) */
        for (int j = 0; j < CS_QK8_0; j++) y[b].qs[j] = (int8_t)nearbyintf(v[j] * id);
    }
}

void quantize_row_q8_0_weight_ref(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    const int64_t nb = n / CS_QK8_0;
    for (int64_t b = 0; b < nb; b++) {
        const float *v = x + b * CS_QK8_0;
        const float amax = block_amax(v);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < CS_QK8_0; j++) y[b].qs[j] = (int8_t)roundf(v[j] * id);
    }
}

void quantize_row_q4_0_ref(const float *x, void *vy, int64_t n) {
    block_q4_0 *y = vy;
    const int64_t nb = n / CS_QK4_0;
    for (int64_t b = 0; b < nb; b++) {
        const float *v = x + b * CS_QK4_0;
        float amax = 0.0f, max = 0.0f; /* max keeps the sign of the largest |v| */
        for (int j = 0; j < CS_QK4_0; j++) {
            if (amax < fabsf(v[j])) {
                amax = fabsf(v[j]);
                max = v[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < CS_QK4_0 / 2; j++) {
            const float x0 = v[j] * id;
            const float x1 = v[j + CS_QK4_0 / 2] * id;
            /* x*id lies in [-8, 8]: +8.5 and truncation round to 0..16 */
            int8_t q0 = (int8_t)(x0 + 8.5f);
            int8_t q1 = (int8_t)(x1 + 8.5f);
            uint8_t u0 = (uint8_t)(q0 < 15 ? q0 : 15);
            uint8_t u1 = (uint8_t)(q1 < 15 ? q1 : 15);
            y[b].qs[j] = (uint8_t)(u0 | (u1 << 4));
        }
    }
}

void dequantize_row_q8_0(const void *vx, float *y, int64_t n) {
    const block_q8_0 *x = vx;
    const int64_t nb = n / CS_QK8_0;
    for (int64_t b = 0; b < nb; b++) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < CS_QK8_0; j++) y[b * CS_QK8_0 + j] = (float)x[b].qs[j] * d;
    }
}

void dequantize_row_q4_0(const void *vx, float *y, int64_t n) {
    const block_q4_0 *x = vx;
    const int64_t nb = n / CS_QK4_0;
    for (int64_t b = 0; b < nb; b++) {
        const float d = fp16_to_fp32(x[b].d);
        float *o = y + b * CS_QK4_0;
        for (int j = 0; j < CS_QK4_0 / 2; j++) {
            o[j] = (float)((int32_t)(x[b].qs[j] & 0x0f) - 8) * d;
            o[j + CS_QK4_0 / 2] = (float)((int32_t)(x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void f32_to_float_row(const void *x, float *y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof(float));
}

void f32_from_float_row(const float *x, void *y, int64_t n) {
    memcpy(y, x, (size_t)n * sizeof(float));
}

void fp16_to_fp32_row_ref(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = fp16_to_fp32(x[i]);
}

void fp32_to_fp16_row_ref(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = fp32_to_fp16(x[i]);
}

void bf16_to_fp32_row_ref(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = bf16_to_fp32(x[i]);
}

void fp32_to_bf16_row_ref(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = fp32_to_bf16(x[i]);
}

void dequantize_row(int32_t type, const void *x, float *y, int64_t n) {
    const type_traits *t = type_traits_get(type);
    CS_ASSERT(t && t->to_float && "dequantize_row: unsupported type");
    t->to_float(x, y, n);
}

void quantize_row(int32_t type, const float *x, void *y, int64_t n) {
    const type_traits *t = type_traits_get(type);
    CS_ASSERT(t && t->from_float_ref && "quantize_row: unsupported type");
    t->from_float_ref(x, y, n);
}
