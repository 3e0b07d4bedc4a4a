/* types.c: ggml element type traits and scalar f16/bf16 conversion. */
#include "types.h"

#include <string.h>

/* Block layouts as in ggml (ggml-common.h). Ids 4, 5, 31-33 and 36-38 were
 * removed upstream and are refused. */
static const cs_type_traits k_traits[CS_TYPE_COUNT] = {
    [0] = {"f32", 1, 4},         [1] = {"f16", 1, 2},         [2] = {"q4_0", 32, 18},
    [3] = {"q4_1", 32, 20},      [6] = {"q5_0", 32, 22},      [7] = {"q5_1", 32, 24},
    [8] = {"q8_0", 32, 34},      [9] = {"q8_1", 32, 36},      [10] = {"q2_K", 256, 84},
    [11] = {"q3_K", 256, 110},   [12] = {"q4_K", 256, 144},   [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210},   [15] = {"q8_K", 256, 292},   [16] = {"iq2_xxs", 256, 66},
    [17] = {"iq2_xs", 256, 74},  [18] = {"iq3_xxs", 256, 98}, [19] = {"iq1_s", 256, 50},
    [20] = {"iq4_nl", 32, 18},   [21] = {"iq3_s", 256, 110},  [22] = {"iq2_s", 256, 82},
    [23] = {"iq4_xs", 256, 136}, [24] = {"i8", 1, 1},         [25] = {"i16", 1, 2},
    [26] = {"i32", 1, 4},        [27] = {"i64", 1, 8},        [28] = {"f64", 1, 8},
    [29] = {"iq1_m", 256, 56},   [30] = {"bf16", 1, 2},       [34] = {"tq1_0", 256, 54},
    [35] = {"tq2_0", 256, 66},   [39] = {"mxfp4", 32, 17},
};

const cs_type_traits *cs_type_traits_get(int32_t type) {
    if (type < 0 || type >= CS_TYPE_COUNT || !k_traits[type].name) return NULL;
    return &k_traits[type];
}

bool cs_type_row_size(int32_t type, int64_t n, uint64_t *bytes) {
    const cs_type_traits *t = cs_type_traits_get(type);
    if (!t || n < 0 || n % t->blck != 0) return false;
    *bytes = (uint64_t)(n / t->blck) * (uint64_t)t->size;
    return true;
}

bool cs_type_is_supported_weight(int32_t type) {
    return type == CS_TYPE_F32 || type == CS_TYPE_F16 || type == CS_TYPE_BF16 ||
           type == CS_TYPE_Q8_0 || type == CS_TYPE_Q4_0 || type == 12 /* Q4_K */ ||
           type == 13 /* Q5_K */ || type == 14 /* Q6_K */;
}

const char *cs_type_name(int32_t type) {
    const cs_type_traits *t = cs_type_traits_get(type);
    return t ? t->name : "unknown";
}

int32_t cs_type_from_name(const char *name) {
    static const int32_t accepted[] = {CS_TYPE_F32, CS_TYPE_F16, CS_TYPE_BF16, CS_TYPE_Q8_0,
                                       CS_TYPE_Q4_0};
    if (!name) return -1;
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        const char *a = k_traits[accepted[i]].name;
        size_t j = 0;
        for (; a[j] && name[j]; j++) {
            char c = name[j];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (c != a[j]) break;
        }
        if (!a[j] && !name[j]) return accepted[i];
    }
    return -1;
}

/* ------------------------------------------------------ f16 and bf16 */

float cs_fp16_to_fp32(uint16_t h) {
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

uint16_t cs_fp32_to_fp16(float f) {
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

float cs_bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t cs_fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet NaN */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}
