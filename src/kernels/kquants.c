/* kquants.c: scalar reference codecs and dot products for Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K weights and Q8_K activations (see kquants.h for the
 * numerics).
 *
 * The quantizers reproduce ggml's reference quantizers step for step
 * (make_qkx2_quants for Q2_K/Q4_K/Q5_K, make_q3_quants for Q3_K,
 * make_qx_quants for Q6_K, float
 * arithmetic in the same order), so a file written here matches one written
 * by llama-quantize without an importance matrix, up to compilers that
 * contract a*b+c into an FMA (ggml's default gnu11 build may; this project
 * builds as ISO C11, which does not). */
#include "kquants.h"

#include <math.h>
#include <string.h>

#include "../common.h"

#define GROUP_MAX_EPS 1e-15f

/* Round to nearest, ties to even, for |v| < 2^22 (ggml's nearest_int). */
static int nearest_int(float v) {
    float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static int imax(int a, int b) {
    return a > b ? a : b;
}
static int imin(int a, int b) {
    return a < b ? a : b;
}

/* 6-bit scale and min of sub-block j from the 12 packed bytes. */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Fit x ~ scale*L + min with L in 0..nmax, min <= 0, minimizing the
 * weighted squared error (use_mad: the weighted absolute error) over
 * nstep+1 trial scales (ggml's make_qkx2_quants). Returns scale;
 * *the_min = -min. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Symmetric fit x ~ scale*(L - nmax), L in 0..2*nmax-1, weights x^2,
 * 19 trial scales (ggml's make_qx_quants with rmse_type 1, no weights). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    float iscale = -(float)nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Symmetric fit x ~ scale*L, L in -nmax..nmax-1, weights x^2: start from
 * the max-abs scale, then up to 5 sweeps that move single levels while the
 * weighted fit improves (ggml's make_q3_quants with do_rmse). L receives
 * L + nmax (0..2*nmax-1). */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    const float iscale = -(float)nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = imax(-nmax, imin(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* The 2-bit levels of a Q2_K / Q3_K super-block (L[e] in 0..3) into qs:
 * element 128h + 32g + l at bits 2g of qs[32h + l]. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
            const uint8_t *v = L + 128 * h + l;
            qs[32 * h + l] = (uint8_t)(v[0] | (v[32] << 2) | (v[64] << 4) | (v[96] << 6));
        }
}

/* 6-bit scale j (0..15) of a Q3_K block, minus 32. */
static int q3_K_scale(const uint8_t *sc, int j) {
    const int lo = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
    const int hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per-sub-block scale/min
 * fit, 6-bit quantization of scales and mins, then requantization of the
 * values against the stored scales. L receives 256 levels. */
static void quantize_k_super(const float *x, int nmax, float rmin, float rdelta, int nstep,
                             uint16_t *d_out, uint16_t *dmin_out, uint8_t *packed, uint8_t *L) {
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                     rmin, rdelta, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(packed, 0, 12);
    for (int j = 0; j < 8; ++j) {
        /* ggml stores nearest_int into a uint8_t before clamping */
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        if (ls > 63) ls = 63;
        if (lm > 63) lm = 63;
        if (j < 4) {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            packed[j - 4] |= (uint8_t)((ls >> 4) << 6);
            packed[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = fp32_to_fp16(max_scale / 63.f);
    *dmin_out = fp32_to_fp16(max_min / 63.f);
    const float dd = fp16_to_fp32(*d_out), dm_all = fp16_to_fp32(*dmin_out);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        scale_min_k4(j, packed, &sc, &m);
        const float d = dd * (float)sc;
        if (d == 0.0f) continue;
        const float dm = dm_all * (float)m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

void quantize_row_q2_K_ref(const float *x, void *vy, int64_t n) {
    block_q2_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    uint8_t L[CS_QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    for (int64_t i = 0; i < nb; i++, x += CS_QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                         -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        /* 4-bit scales and mins against the largest of each */
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < 16; ++j) y[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
            y[i].d = fp32_to_fp16(max_scale / 15.f);
        } else {
            memset(y[i].scales, 0, 16);
            y[i].d = fp32_to_fp16(0.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < 16; ++j)
                y[i].scales[j] |= (uint8_t)((unsigned)nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = fp32_to_fp16(max_min / 15.f);
        } else {
            y[i].dmin = fp32_to_fp16(0.f);
        }
        /* requantize against the stored scales */
        const float dd = fp16_to_fp32(y[i].d), dm_all = fp16_to_fp32(y[i].dmin);
        for (int j = 0; j < 16; ++j) {
            const float d = dd * (float)(y[i].scales[j] & 0xF);
            if (d == 0.0f) continue;
            const float dm = dm_all * (float)(y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int((x[16 * j + ii] + dm) / d);
                L[16 * j + ii] = (uint8_t)imax(0, imin(3, l));
            }
        }
        pack_2bit(L, y[i].qs);
    }
}

void quantize_row_q3_K_ref(const float *x, void *vy, int64_t n) {
    block_q3_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    int8_t L[CS_QK_K];
    float scales[16];
    for (int64_t i = 0; i < nb; i++, x += CS_QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            const float a = fabsf(scales[j]);
            if (a > amax) {
                amax = a;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, 12);
        if (max_scale != 0.0f) {
            /* 6-bit signed scales against the largest, stored + 32 */
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; ++j) {
                /* ggml narrows nearest_int to int8_t before clamping */
                int8_t l8 = (int8_t)nearest_int(iscale * scales[j]);
                const int l = imax(-32, imin(31, l8)) + 32;
                if (j < 8)
                    y[i].scales[j] = (uint8_t)(l & 0xF);
                else
                    y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                y[i].scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = fp32_to_fp16(1 / iscale);
        } else {
            y[i].d = fp32_to_fp16(0.f);
        }
        const float dd = fp16_to_fp32(y[i].d);
        for (int j = 0; j < 16; ++j) {
            const float d = dd * (float)q3_K_scale(y[i].scales, j);
            if (d == 0.0f) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(imax(-4, imin(3, l)) + 4);
            }
        }
        /* high bit of element e at bit e/32 of hmask[e % 32], low 2 bits in qs */
        uint8_t low[CS_QK_K];
        memset(y[i].hmask, 0, sizeof y[i].hmask);
        for (int e = 0; e < CS_QK_K; ++e) {
            int l = L[e];
            if (l > 3) {
                y[i].hmask[e % 32] |= (uint8_t)(1u << (e / 32));
                l -= 4;
            }
            low[e] = (uint8_t)l;
        }
        pack_2bit(low, y[i].qs);
    }
}

void quantize_row_q4_K_ref(const float *x, void *vy, int64_t n) {
    block_q4_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    uint8_t L[CS_QK_K];
    for (int64_t i = 0; i < nb; i++, x += CS_QK_K) {
        quantize_k_super(x, 15, -1.f, 0.1f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < CS_QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

void quantize_row_q5_K_ref(const float *x, void *vy, int64_t n) {
    block_q5_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    uint8_t L[CS_QK_K];
    for (int64_t i = 0; i < nb; i++, x += CS_QK_K) {
        quantize_k_super(x, 31, -0.5f, 0.1f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, CS_QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int nn = 0; nn < CS_QK_K; nn += 64, ql += 32) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[nn + j], l2 = L[nn + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

void quantize_row_q6_K_ref(const float *x, void *vy, int64_t n) {
    block_q6_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    int8_t L[CS_QK_K];
    float scales[CS_QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += CS_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < CS_QK_K / 16; ++ib) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < CS_QK_K / 16; ++ib)
            y[i].scales[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
        const float dd = fp16_to_fp32(y[i].d);
        for (int j = 0; j < CS_QK_K / 16; ++j) {
            const float d = dd * (float)y[i].scales[j];
            if (d == 0.0f) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(imax(-32, imin(31, l)) + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < CS_QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = (uint8_t)(L[j + l] & 0xF);
                const uint8_t q2 = (uint8_t)(L[j + l + 32] & 0xF);
                const uint8_t q3 = (uint8_t)(L[j + l + 64] & 0xF);
                const uint8_t q4 = (uint8_t)(L[j + l + 96] & 0xF);
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

void dequantize_row_q2_K(const void *vx, float *y, int64_t n) {
    const block_q2_K *x = vx;
    const int64_t nb = n / CS_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
        const uint8_t *sc = x[i].scales;
        for (int h = 0; h < 2; ++h) {
            const uint8_t *q = x[i].qs + 32 * h;
            for (int g = 0; g < 4; ++g) {
                for (int half = 0; half < 2; ++half, ++sc) {
                    const float dl = d * (float)(*sc & 0xF), ml = min * (float)(*sc >> 4);
                    for (int l = 0; l < 16; ++l)
                        *y++ = dl * (float)((q[16 * half + l] >> (2 * g)) & 3) - ml;
                }
            }
        }
    }
}

void dequantize_row_q3_K(const void *vx, float *y, int64_t n) {
    const block_q3_K *x = vx;
    const int64_t nb = n / CS_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d_all = fp16_to_fp32(x[i].d);
        const uint8_t *hm = x[i].hmask;
        int j = 0;
        for (int h = 0; h < 2; ++h) {
            const uint8_t *q = x[i].qs + 32 * h;
            for (int g = 0; g < 4; ++g) {
                const int bit = 4 * h + g;
                for (int half = 0; half < 2; ++half, ++j) {
                    const float dl = d_all * (float)q3_K_scale(x[i].scales, j);
                    for (int l = 0; l < 16; ++l) {
                        const int b = 16 * half + l;
                        const int v = ((q[b] >> (2 * g)) & 3) - ((hm[b] >> bit) & 1 ? 0 : 4);
                        *y++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

void dequantize_row_q4_K(const void *vx, float *y, int64_t n) {
    const block_q4_K *x = vx;
    const int64_t nb = n / CS_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int j = 0; j < 4; ++j, q += 32) {
            uint8_t sc, m;
            scale_min_k4(2 * j, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            scale_min_k4(2 * j + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

void dequantize_row_q5_K(const void *vx, float *y, int64_t n) {
    const block_q5_K *x = vx;
    const int64_t nb = n / CS_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        for (int j = 0; j < 4; ++j, ql += 32) {
            uint8_t sc, m;
            scale_min_k4(2 * j, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            scale_min_k4(2 * j + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            const uint8_t u1 = (uint8_t)(1u << (2 * j)), u2 = (uint8_t)(2u << (2 * j));
            for (int l = 0; l < 32; ++l)
                *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l)
                *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

void dequantize_row_q6_K(const void *vx, float *y, int64_t n) {
    const block_q6_K *x = vx;
    const int64_t nb = n / CS_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int h = 0; h < 2; ++h, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

void quantize_row_q8_K_ref(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    for (int64_t i = 0; i < nb; i++, x += CS_QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < CS_QK_K; ++j) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* -127, not -128: ggml changed it for IQ2_XXS (Jan 2024), so the
         * levels are symmetric and no product saturates in maddubs */
        const float iscale = -127.f / max;
        for (int j = 0; j < CS_QK_K; ++j)
            y[i].qs[j] = (int8_t)imin(127, nearest_int(iscale * x[j]));
        for (int j = 0; j < CS_QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* ------------------------------------------------------------- dots */

/* ggml's hsum_float_8: (x0+x4 + x2+x6) + (x1+x5 + x3+x7). */
static float hsum8(const float *a) {
    float r[4];
    for (int i = 0; i < 4; i++) r[i] = a[i + 4] + a[i];
    return (r[0] + r[2]) + (r[1] + r[3]);
}

/* mins term of Q4_K/Q5_K: prod[k] = m[2k]*S[2k] + m[2k+1]*S[2k+1] with
 * S[s] = bsums[2s] + bsums[2s+1] (the 32-element sums). */
static void min_prods(const uint8_t *mn, const int16_t *bsums, int32_t *prod) {
    for (int k = 0; k < 4; k++) {
        const int32_t s0 = bsums[4 * k] + bsums[4 * k + 1];
        const int32_t s1 = bsums[4 * k + 2] + bsums[4 * k + 3];
        prod[k] = mn[2 * k] * s0 + mn[2 * k + 1] * s1;
    }
}

/* Q4_K/Q5_K super-block integer lanes; hbits NULL for Q4_K. */
static void lanes_k4(const uint8_t *qs, const uint8_t *qh, const uint8_t *sc, const int8_t *q8,
                     int32_t *lane) {
    for (int k = 0; k < 8; k++) lane[k] = 0;
    for (int j = 0; j < 4; j++) {
        const uint8_t *q = qs + 32 * j;
        const int8_t *a = q8 + 64 * j;
        for (int b = 0; b < 32; b++) {
            int lo = q[b] & 0xF, hi = q[b] >> 4;
            if (qh) {
                lo += (qh[b] >> (2 * j)) & 1 ? 16 : 0;
                hi += (qh[b] >> (2 * j + 1)) & 1 ? 16 : 0;
            }
            lane[b / 4] += sc[2 * j] * lo * a[b] + sc[2 * j + 1] * hi * a[32 + b];
        }
    }
}

static float dot_k4(int64_t n, const void *vx, size_t stride, bool q5, const block_q8_K *y) {
    const int64_t nb = n / CS_QK_K;
    float acc[8] = {0}, accm[4] = {0}, summs = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *blk = (const uint8_t *)vx + (size_t)i * stride;
        uint16_t hd, hdmin;
        memcpy(&hd, blk, 2);
        memcpy(&hdmin, blk + 2, 2);
        const uint8_t *packed = blk + 4;
        const uint8_t *qh = q5 ? blk + 16 : NULL;
        const uint8_t *qs = q5 ? blk + 48 : blk + 16;
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++) scale_min_k4(j, packed, &sc[j], &mn[j]);
        const float d = y[i].d * fp16_to_fp32(hd);
        const float dmin = -y[i].d * fp16_to_fp32(hdmin);
        int32_t prod[4], lane[8];
        min_prods(mn, y[i].bsums, prod);
        if (q5) {
            /* ggml's Q5_K kernel sums the mins in integers first */
            const int32_t isum = (prod[0] + prod[1]) + (prod[2] + prod[3]);
            summs += dmin * (float)isum;
        } else {
            for (int k = 0; k < 4; k++) accm[k] = fmaf(dmin, (float)prod[k], accm[k]);
        }
        lanes_k4(qs, qh, sc, y[i].qs, lane);
        for (int k = 0; k < 8; k++) acc[k] = fmaf(d, (float)lane[k], acc[k]);
    }
    if (q5) return hsum8(acc) + summs;
    return hsum8(acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3]));
}

/* Q2_K / Q3_K super-block integer lanes: lane[b/4] += scale * q * a over
 * element 128h + 32g + b, scale sc[8h + 2g + b/16]; q3: hmask given, q is
 * the 2-bit level minus 4 where the element's high bit is clear. */
static void lanes_k2(const uint8_t *qs, const uint8_t *hmask, const int *sc, const int8_t *q8,
                     int32_t *lane) {
    for (int k = 0; k < 8; k++) lane[k] = 0;
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 4; g++) {
            const int8_t *a = q8 + 128 * h + 32 * g;
            for (int b = 0; b < 32; b++) {
                int q = (qs[32 * h + b] >> (2 * g)) & 3;
                if (hmask && !((hmask[b] >> (4 * h + g)) & 1)) q -= 4;
                lane[b / 4] += sc[8 * h + 2 * g + b / 16] * q * a[b];
            }
        }
}

void vec_dot_q2_K_q8_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q2_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const float dmin = -y[i].d * fp16_to_fp32(x[i].dmin);
        int sc[16];
        for (int j = 0; j < 16; j++) sc[j] = x[i].scales[j] & 0xF;
        /* the mins' and the levels' exact integers (kquants.h): |summs| <=
         * 16 * 15 * 16 * 128, |isum| <= 256 * 3 * 128 * 15, both exact in
         * float */
        int32_t summs = 0;
        for (int j = 0; j < 16; j++) summs += (x[i].scales[j] >> 4) * y[i].bsums[j];
        int32_t lane[8], isum = 0;
        lanes_k2(x[i].qs, NULL, sc, y[i].qs, lane);
        for (int k = 0; k < 8; k++) isum += lane[k];
        sum += dmin * (float)summs;
        sum += d * (float)isum;
    }
    *s = sum;
}

void vec_dot_q3_K_q8_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q3_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        int sc[16];
        for (int j = 0; j < 16; j++) sc[j] = q3_K_scale(x[i].scales, j);
        int32_t lane[8];
        lanes_k2(x[i].qs, x[i].hmask, sc, y[i].qs, lane);
        /* |isum| <= 256 * 4 * 127 * 32: exact in int32 and in float */
        int32_t isum = 0;
        for (int k = 0; k < 8; k++) isum += lane[k];
        sum += d * (float)isum;
    }
    *s = sum;
}

void vec_dot_q4_K_q8_K_ref(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_k4(n, x, sizeof(block_q4_K), false, y);
}

void vec_dot_q5_K_q8_K_ref(int64_t n, float *s, const void *x, const void *y) {
    *s = dot_k4(n, x, sizeof(block_q5_K), true, y);
}

void vec_dot_q6_K_q8_K_ref(int64_t n, float *s, const void *vx, const void *vy) {
    const block_q6_K *x = vx;
    const block_q8_K *y = vy;
    const int64_t nb = n / CS_QK_K;
    float acc[8] = {0};
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        int32_t lane[8] = {0};
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            const int8_t *sc = x[i].scales + 8 * h;
            const int8_t *a = y[i].qs + 128 * h;
            for (int b = 0; b < 32; b++) {
                const int q0 = ((ql[b] & 0xF) | ((qh[b] & 3) << 4)) - 32;
                const int q1 = ((ql[32 + b] & 0xF) | (((qh[b] >> 2) & 3) << 4)) - 32;
                const int q2 = ((ql[b] >> 4) | (((qh[b] >> 4) & 3) << 4)) - 32;
                const int q3 = ((ql[32 + b] >> 4) | (((qh[b] >> 6) & 3) << 4)) - 32;
                const int h16 = b / 16;
                lane[b / 4] += sc[h16] * q0 * a[b] + sc[2 + h16] * q1 * a[32 + b] +
                               sc[4 + h16] * q2 * a[64 + b] + sc[6 + h16] * q3 * a[96 + b];
            }
        }
        for (int k = 0; k < 8; k++) acc[k] = fmaf(d, (float)lane[k], acc[k]);
    }
    *s = hsum8(acc);
}
