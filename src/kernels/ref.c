/* ref.c: the scalar reference kernels, the executable specification of
 * every slot of kernels_table (the per-type slots come from the type table,
 * whose f32/f16/bf16/Q8_0/Q4_0 dots are here), and the reference table.
 * Compiled for generic x86-64 (or any target); SIMD versions are tested
 * against these with named tolerances.
 *
 * Numerics follow ggml's CPU backend (see kernels.h): norms and softmax sums
 * accumulate in double, float dot products of 16-bit types accumulate in
 * double like ggml's generic f16/bf16 dots, and the quantized dots sum exact
 * per-block integer products scaled by d_x*d_y in float. The file is built
 * with -std=c11, so GCC does not contract a*b+c into FMA: every expression
 * below is rounded exactly as written. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "kernels.h"

#define CS_PI_F 3.14159265358979323846f /* (float)M_PI; M_PI is not C11 */

/* ------------------------------------------------------------------ dots */

void vec_dot_f32_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    double sum = 0.0; /* ggml_vec_dot_f32's generic path: float products, double sum */
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * y[i]);
    *s = (float)sum;
}

void vec_dot_f16_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx, *y = vy;
    double sum = 0.0; /* each f16*f16 product is exact in float */
    for (int64_t i = 0; i < n; i++) sum += (double)(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    *s = (float)sum;
}

void vec_dot_bf16_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx, *y = vy;
    double sum = 0.0; /* each bf16*bf16 product is exact in float */
    for (int64_t i = 0; i < n; i++) sum += (double)(bf16_to_fp32(x[i]) * bf16_to_fp32(y[i]));
    *s = (float)sum;
}

/* Inputs and results below FLT_MIN count as (signed) zero: vdpbf16ps's
 * DAZ / FTZ, which ignore MXCSR. */
static float dp_flush(float v) {
    return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v;
}

float bf16_dp_lane_ref(float acc, const uint16_t w[2], const uint16_t x[2]) {
    /* odd element first, then even (the SDM's order); a bf16*bf16 product
     * is exact, fmaf rounds the sum once to nearest even */
    for (int e = 1; e >= 0; e--)
        acc = dp_flush(fmaf(dp_flush(bf16_to_fp32(w[e])), dp_flush(bf16_to_fp32(x[e])), acc));
    return acc;
}

void vec_dot_bf16_dp_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const uint16_t *x = vx, *y = vy;
    float lane[16] = {0};
    for (int64_t k = 0; k < n; k += 32) {
        for (int j = 0; j < 16; j++) {
            /* elements past n are zeros (the masked tail) */
            const int64_t i = k + 2 * j;
            const uint16_t a[2] = {i < n ? x[i] : 0, i + 1 < n ? x[i + 1] : 0};
            const uint16_t b[2] = {i < n ? y[i] : 0, i + 1 < n ? y[i + 1] : 0};
            lane[j] = bf16_dp_lane_ref(lane[j], a, b);
        }
    }
    /* the lane tree of bf16_avx512.c: i + i+8, i + i+4, (0+2, 1+3), 0+1 */
    float l8[8], l4[4];
    for (int i = 0; i < 8; i++) l8[i] = lane[i] + lane[i + 8];
    for (int i = 0; i < 4; i++) l4[i] = l8[i] + l8[i + 4];
    *s = (l4[0] + l4[2]) + (l4[1] + l4[3]);
}

static void ref_vec_dot_f16_f32(int64_t n, float *s, const uint16_t *x, const float *y) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(fp16_to_fp32(x[i]) * y[i]);
    *s = (float)sum;
}

void vec_dot_q8_0_q8_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q8_0 *x = vx, *y = vy;
    int64_t nb = n / CS_QK8_0;
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0; /* |isum| <= 32 * 128 * 128: no overflow */
        for (int j = 0; j < CS_QK8_0; j++) isum += (int32_t)x[b].qs[j] * (int32_t)y[b].qs[j];
        sum += (float)isum * (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
    }
    *s = sum;
}

void vec_dot_q4_0_q8_0_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q4_0 *x = vx;
    const block_q8_0 *y = vy;
    int64_t nb = n / CS_QK4_0;
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int j = 0; j < CS_QK4_0 / 2; j++) {
            int32_t lo = (int32_t)(x[b].qs[j] & 0x0f) - 8;
            int32_t hi = (int32_t)(x[b].qs[j] >> 4) - 8;
            isum += lo * y[b].qs[j] + hi * y[b].qs[j + CS_QK4_0 / 2];
        }
        /* ggml's repacked Q4_0 kernels (q4_0_8x8 gemm/gemv, what llama.cpp
         * runs for these weights on AVX2/AVX-512) accumulate each block with
         * one FMA: acc = fma(isum, d_x*d_y, acc). Rounding the product first
         * moves K/Q by an ulp, enough to flip a later Q8_0 rounding. */
        sum = fmaf((float)isum, fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d), sum);
    }
    *s = sum;
}

/* ------------------------------------------------------ row conversions */

static void ref_fp16_to_fp32_row(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = fp16_to_fp32(x[i]);
}

/* ------------------------------------------------------- element-wise */

static void ref_axpy_f32(int64_t n, float a, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void ref_axpy_f16(int64_t n, float a, const uint16_t *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * fp16_to_fp32(x[i]);
}

static void ref_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0.0; /* ggml_float; the square is rounded to float first */
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

static void ref_softmax(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float e = expf(x[i] - max); /* -inf - max = -inf -> 0 */
        x[i] = e;
        sum += (double)e;
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static void ref_swiglu(float *out, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = g[i];
        out[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

static void ref_rope(float *x, int64_t n_head, int64_t head_dim, int32_t n_rot, int32_t mode,
                     const float *cs) {
    const int32_t half = n_rot / 2;
    const bool neox = (mode & CS_ROPE_NEOX) != 0;
    for (int64_t h = 0; h < n_head; h++) {
        float *r = x + h * head_dim;
        for (int32_t k = 0; k < half; k++) {
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

/* Filled once from the type table (per-type slots) and the kernels above;
 * the SIMD tables start from a copy of it (kernels_init_ref). */
static kernels_table k_ref;
static pthread_once_t k_ref_once = PTHREAD_ONCE_INIT;

static void ref_init(void) {
    kernels_table *k = &k_ref;
    k->name = "ref";
    for (int32_t t = 0; t < CS_TYPE_COUNT; t++) {
        const type_traits *tr = type_traits_get(t);
        if (!tr) continue;
        if (tr->is_weight) k->vec_dot[t] = tr->vec_dot_ref;
        k->from_float[t] = tr->act_from_float_ref;
    }
    k->vec_dot_f16_f32 = ref_vec_dot_f16_f32;
    k->fp16_to_fp32_row = ref_fp16_to_fp32_row;
    k->axpy_f32 = ref_axpy_f32;
    k->axpy_f16 = ref_axpy_f16;
    k->rmsnorm = ref_rmsnorm;
    k->softmax = ref_softmax;
    k->swiglu = ref_swiglu;
    k->rope = ref_rope;
}

const kernels_table *kernels_ref(void) {
    pthread_once(&k_ref_once, ref_init);
    return &k_ref;
}

void kernels_init_ref(kernels_table *k, const char *name) {
    *k = *kernels_ref();
    k->name = name;
}

/* ------------------------------------------------------------ rope cache */

/* ggml_rope_yarn_corr_dim: the dimension whose wavelength makes n_rot_beta
 * turns over the original context. */
static float rope_corr_dim(int32_t n_dims, int32_t n_ctx_orig, float n_rot_beta, float base) {
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot_beta * 2.0f * CS_PI_F)) /
           (2.0f * logf(base));
}

static float rope_ramp(float low, float high, int32_t i0) {
    const float y = ((float)(i0 / 2) - low) / fmaxf(0.001f, high - low);
    return 1.0f - fminf(1.0f, fmaxf(0.0f, y));
}

void kernels_rope_cache(float *cs, float pos, const kernels_rope_params *p) {
    const int32_t n_rot = p->n_rot;
    const float theta_scale = powf(p->freq_base, -2.0f / (float)n_rot);
    float corr0 = 0.0f, corr1 = 0.0f;
    float mscale = p->attn_factor;
    if (p->ext_factor != 0.0f) {
        float start = floorf(rope_corr_dim(n_rot, p->n_ctx_orig, p->beta_fast, p->freq_base));
        float end = ceilf(rope_corr_dim(n_rot, p->n_ctx_orig, p->beta_slow, p->freq_base));
        corr0 = fmaxf(0.0f, start);
        corr1 = fminf((float)(n_rot - 1), end);
        mscale *= 1.0f + 0.1f * logf(1.0f / p->freq_scale);
    }
    float theta = pos;
    for (int32_t i0 = 0; i0 < n_rot; i0 += 2) {
        const float theta_extrap = p->freq_factors ? theta / p->freq_factors[i0 / 2] : theta;
        const float theta_interp = p->freq_scale * theta_extrap;
        float t = theta_interp;
        if (p->ext_factor != 0.0f) {
            const float mix = rope_ramp(corr0, corr1, i0) * p->ext_factor;
            t = theta_interp * (1.0f - mix) + theta_extrap * mix;
        }
        cs[i0] = cosf(t) * mscale;
        cs[i0 + 1] = sinf(t) * mscale;
        theta *= theta_scale;
    }
}

void kernels_attn_scores_each(type_vec_dot_fn dot, int64_t hd, int32_t n, const uint8_t *base,
                              size_t stride, const int32_t *idx, int32_t nq,
                              const uint16_t *const *q, float scale, float *const *s) {
    for (int32_t g = 0; g < nq; g++)
        for (int32_t j = 0; j < n; j++) {
            float d;
            dot(hd, &d, base + (size_t)idx[j] * stride, q[g]);
            s[g][j] = d * scale;
        }
}

void kernels_attn_accum_each(void (*axpy)(int64_t n, float a, const uint16_t *x, float *y),
                             int64_t hd, int32_t n, const uint8_t *base, size_t stride,
                             const int32_t *idx, int32_t nq, const float *const *w,
                             float *const *out) {
    for (int32_t g = 0; g < nq; g++)
        for (int32_t j = 0; j < n; j++) /* ggml rounds the probabilities to f16 */
            axpy(hd, fp16_to_fp32(fp32_to_fp16(w[g][j])),
                 (const uint16_t *)(const void *)(base + (size_t)idx[j] * stride), out[g]);
}
