/* types.c: the type table (ggml element type traits, one row per type
 * id) and scalar f16/bf16 conversion. */
#include "types.h"

#include <stdio.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/iquants.h"
#include "kernels/kquants.h"
#include "kernels/quant_legacy.h"

/* The type table, as ggml's type_traits. Block layouts as in ggml
 * (ggml-common.h) for every id; ids 4, 5, 31-33 and 36-38 were removed
 * upstream and are refused.
 *
 * Adding a weight type touches exactly:
 *  1. this table: its row with the compute entries (is_weight, to_float,
 *     from_float_ref, vec_dot_type, vec_dot_ref, ftype), plus a row for its
 *     vec_dot_type if that is new (act_from_float_ref);
 *  2. its kernels file under src/kernels/ (block struct, reference
 *     dequantizer, quantizer and dot, e.g. quant.c, quant_legacy.c,
 *     kquants.c or iquants.c) and their declarations in kernels.h /
 *     quant_legacy.h / kquants.h / iquants.h;
 *  3. include/ctxshift.h: a named CS_TYPE_* constant;
 *  4. optionally, per SIMD kernel table: its vec_dot[type] (and
 *     from_float[] for a new vec_dot_type) and micro-kernels (ukernel[],
 *     ukernel_x16[]) in the table's init function in x86_avx2.c /
 *     x86_avx512.c (a table without them uses the scalar entries here).
 * Everything else looks the type up here: matmul (scratch, conversion,
 * dots), dequantize_row / quantize_row, the model loader and its
 * error text, cs_weight_types, cs_type_from_name, quantize's plain targets
 * and file types. (x16 repacking, repack.c, is per type by nature.) */
/* A type the engine only bounds (the GGUF reader), never computes with. */
#define LAYOUT(n, b, s)                                                                            \
    { .name = (n), .blck = (b), .size = (s) }

static const type_traits k_traits[CS_TYPE_COUNT] = {
    [CS_TYPE_F32] = {.name = "f32",
                     .blck = 1,
                     .size = 4,
                     .is_weight = true,
                     .to_float = f32_to_float_row,
                     .from_float_ref = f32_from_float_row,
                     .vec_dot_type = CS_TYPE_F32,
                     .vec_dot_ref = vec_dot_f32_ref,
                     .ftype = 0},
    [CS_TYPE_F16] = {.name = "f16",
                     .blck = 1,
                     .size = 2,
                     .is_weight = true,
                     .to_float = fp16_to_fp32_row_ref,
                     .from_float_ref = fp32_to_fp16_row_ref,
                     .vec_dot_type = CS_TYPE_F16,
                     .vec_dot_ref = vec_dot_f16_ref,
                     .act_from_float_ref = fp32_to_fp16_row_ref,
                     .ftype = 1},
    [CS_TYPE_Q4_0] = {.name = "q4_0",
                      .blck = 32,
                      .size = 18,
                      .is_weight = true,
                      .to_float = dequantize_row_q4_0,
                      .from_float_ref = quantize_row_q4_0_ref,
                      .vec_dot_type = CS_TYPE_Q8_0,
                      .vec_dot_ref = vec_dot_q4_0_q8_0_ref,
                      .ftype = 2},
    [CS_TYPE_Q4_1] = {.name = "q4_1",
                      .blck = 32,
                      .size = 20,
                      .is_weight = true,
                      .to_float = dequantize_row_q4_1,
                      .from_float_ref = quantize_row_q4_1_ref,
                      .vec_dot_type = CS_TYPE_Q8_1,
                      .vec_dot_ref = vec_dot_q4_1_q8_1_ref,
                      .ftype = 3},
    [CS_TYPE_Q5_0] = {.name = "q5_0",
                      .blck = 32,
                      .size = 22,
                      .is_weight = true,
                      .to_float = dequantize_row_q5_0,
                      .from_float_ref = quantize_row_q5_0_ref,
                      .vec_dot_type = CS_TYPE_Q8_0,
                      .vec_dot_ref = vec_dot_q5_0_q8_0_ref,
                      .ftype = 8},
    [CS_TYPE_Q5_1] = {.name = "q5_1",
                      .blck = 32,
                      .size = 24,
                      .is_weight = true,
                      .to_float = dequantize_row_q5_1,
                      .from_float_ref = quantize_row_q5_1_ref,
                      .vec_dot_type = CS_TYPE_Q8_1,
                      .vec_dot_ref = vec_dot_q5_1_q8_1_ref,
                      .ftype = 9},
    [CS_TYPE_Q8_0] = {.name = "q8_0",
                      .blck = 32,
                      .size = 34,
                      .is_weight = true,
                      .to_float = dequantize_row_q8_0,
                      .from_float_ref = quantize_row_q8_0_weight_ref,
                      .vec_dot_type = CS_TYPE_Q8_0,
                      .vec_dot_ref = vec_dot_q8_0_q8_0_ref,
                      .act_from_float_ref = quantize_row_q8_0_ref,
                      .ftype = 7},
    [CS_TYPE_Q8_1] = {.name = "q8_1",
                      .blck = 32,
                      .size = 36,
                      .act_from_float_ref = quantize_row_q8_1_ref},
    [CS_TYPE_Q2_K] = {.name = "q2_K",
                      .blck = 256,
                      .size = 84,
                      .is_weight = true,
                      .to_float = dequantize_row_q2_K,
                      .from_float_ref = quantize_row_q2_K_ref,
                      .vec_dot_type = CS_TYPE_Q8_K,
                      .vec_dot_ref = vec_dot_q2_K_q8_K_ref,
                      .ftype = 10},
    [CS_TYPE_Q3_K] = {.name = "q3_K",
                      .blck = 256,
                      .size = 110,
                      .is_weight = true,
                      .to_float = dequantize_row_q3_K,
                      .from_float_ref = quantize_row_q3_K_ref,
                      .vec_dot_type = CS_TYPE_Q8_K,
                      .vec_dot_ref = vec_dot_q3_K_q8_K_ref,
                      .ftype = 11 /* Q3_K_S */},
    [CS_TYPE_Q4_K] = {.name = "q4_K",
                      .blck = 256,
                      .size = 144,
                      .is_weight = true,
                      .to_float = dequantize_row_q4_K,
                      .from_float_ref = quantize_row_q4_K_ref,
                      .vec_dot_type = CS_TYPE_Q8_K,
                      .vec_dot_ref = vec_dot_q4_K_q8_K_ref,
                      .ftype = 14 /* Q4_K_S */},
    [CS_TYPE_Q5_K] = {.name = "q5_K",
                      .blck = 256,
                      .size = 176,
                      .is_weight = true,
                      .to_float = dequantize_row_q5_K,
                      .from_float_ref = quantize_row_q5_K_ref,
                      .vec_dot_type = CS_TYPE_Q8_K,
                      .vec_dot_ref = vec_dot_q5_K_q8_K_ref,
                      .ftype = 16 /* Q5_K_S */},
    [CS_TYPE_Q6_K] = {.name = "q6_K",
                      .blck = 256,
                      .size = 210,
                      .is_weight = true,
                      .to_float = dequantize_row_q6_K,
                      .from_float_ref = quantize_row_q6_K_ref,
                      .vec_dot_type = CS_TYPE_Q8_K,
                      .vec_dot_ref = vec_dot_q6_K_q8_K_ref,
                      .ftype = 18},
    [CS_TYPE_Q8_K] = {.name = "q8_K",
                      .blck = 256,
                      .size = 292,
                      .act_from_float_ref = quantize_row_q8_K_ref},
    [16] = LAYOUT("iq2_xxs", 256, 66),
    [17] = LAYOUT("iq2_xs", 256, 74),
    [18] = LAYOUT("iq3_xxs", 256, 98),
    [19] = LAYOUT("iq1_s", 256, 50),
    [CS_TYPE_IQ4_NL] = {.name = "iq4_nl",
                        .blck = 32,
                        .size = 18,
                        .is_weight = true,
                        .to_float = dequantize_row_iq4_nl,
                        .from_float_ref = quantize_row_iq4_nl_ref,
                        .vec_dot_type = CS_TYPE_Q8_0,
                        .vec_dot_ref = vec_dot_iq4_nl_q8_0_ref,
                        .ftype = 25},
    [21] = LAYOUT("iq3_s", 256, 110),
    [22] = LAYOUT("iq2_s", 256, 82),
    [CS_TYPE_IQ4_XS] = {.name = "iq4_xs",
                        .blck = 256,
                        .size = 136,
                        .is_weight = true,
                        .to_float = dequantize_row_iq4_xs,
                        .from_float_ref = quantize_row_iq4_xs_ref,
                        .vec_dot_type = CS_TYPE_Q8_K,
                        .vec_dot_ref = vec_dot_iq4_xs_q8_K_ref,
                        .ftype = 30},
    [24] = LAYOUT("i8", 1, 1),
    [25] = LAYOUT("i16", 1, 2),
    [26] = LAYOUT("i32", 1, 4),
    [27] = LAYOUT("i64", 1, 8),
    [28] = LAYOUT("f64", 1, 8),
    [29] = LAYOUT("iq1_m", 256, 56),
    [CS_TYPE_BF16] = {.name = "bf16",
                      .blck = 1,
                      .size = 2,
                      .is_weight = true,
                      .to_float = bf16_to_fp32_row_ref,
                      .from_float_ref = fp32_to_bf16_row_ref,
                      .vec_dot_type = CS_TYPE_BF16,
                      .vec_dot_ref = vec_dot_bf16_ref,
                      .act_from_float_ref = fp32_to_bf16_row_ref,
                      .ftype = 32},
    [34] = LAYOUT("tq1_0", 256, 54),
    [35] = LAYOUT("tq2_0", 256, 66),
    [39] = LAYOUT("mxfp4", 32, 17),
};

const type_traits *type_traits_get(int32_t type) {
    if (type < 0 || type >= CS_TYPE_COUNT || !k_traits[type].name) return NULL;
    return &k_traits[type];
}

bool type_row_size(int32_t type, int64_t n, uint64_t *bytes) {
    const type_traits *t = type_traits_get(type);
    if (!t || n < 0 || n % t->blck != 0) return false;
    *bytes = (uint64_t)(n / t->blck) * (uint64_t)t->size;
    return true;
}

bool type_is_weight(int32_t type) {
    const type_traits *t = type_traits_get(type);
    return t && t->is_weight;
}

int32_t cs_weight_types(int32_t *types, int32_t cap) {
    int32_t n = 0;
    for (int32_t i = 0; i < CS_TYPE_COUNT; i++) {
        if (!k_traits[i].is_weight) continue;
        if (n < cap) types[n] = i;
        n++;
    }
    return n;
}

const char *type_weight_names(char *buf, size_t cap) {
    if (cap == 0) return buf;
    size_t len = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < CS_TYPE_COUNT; i++) {
        if (!k_traits[i].is_weight) continue;
        int w = snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", k_traits[i].name);
        if (w < 0 || (size_t)w >= cap - len) { /* keep whole names only */
            buf[len] = '\0';
            break;
        }
        len += (size_t)w;
    }
    return buf;
}

const char *cs_type_name(int32_t type) {
    const type_traits *t = type_traits_get(type);
    return t ? t->name : "unknown";
}

int32_t cs_type_from_name(const char *name) {
    if (!name) return -1;
    for (int32_t i = 0; i < CS_TYPE_COUNT; i++) {
        if (!k_traits[i].is_weight) continue;
        const char *a = k_traits[i].name;
        size_t j = 0;
        for (; a[j] && name[j]; j++) {
            char c = name[j], e = a[j];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (e >= 'A' && e <= 'Z') e = (char)(e - 'A' + 'a');
            if (c != e) break;
        }
        if (!a[j] && !name[j]) return i;
    }
    return -1;
}

/* ------------------------------------------------------ f16 and bf16 */

float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            mant &= 0x3ff;
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | mant << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 112) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (absx < 0x38800000u) {                                  /* result is subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign;         /* < half the smallest subnormal */
        uint32_t e = absx >> 23;
        uint32_t mant = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 .. 24 */
        uint32_t val = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (val & 1))) val++;
        return (uint16_t)(sign | val);
    }
    uint32_t e = (absx >> 23) - 112;
    uint32_t mant = absx & 0x7fffff;
    uint32_t val = (e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (val & 1))) val++;
    return (uint16_t)(sign | val);
}

float bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet NaN */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}
