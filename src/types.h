/* types.h: traits of ggml element types (ids as in GGUF files). The GGUF
 * reader knows every type's block layout so it can bound every tensor's
 * bytes, including types the engine cannot compute with. */
#ifndef CS_TYPES_H
#define CS_TYPES_H

#include <stdbool.h>
#include <stdint.h>

#include "ctxshift.h"

#define CS_TYPE_COUNT 40

typedef struct cs_type_traits {
    const char *name; /* NULL for ids that ggml removed */
    int32_t blck;     /* elements per block */
    int32_t size;     /* bytes per block */
} cs_type_traits;

/* NULL when the id is out of range or was removed from ggml. */
const cs_type_traits *cs_type_traits_get(int32_t type);

/* Bytes of a row of n elements; false when n is not a multiple of the
 * block size or the type is unknown. */
bool cs_type_row_size(int32_t type, int64_t n, uint64_t *bytes);

/* Types the engine computes with (weights: F32, F16, BF16, Q8_0, Q4_0). */
bool cs_type_is_supported_weight(int32_t type);

/* ------------------------------------------------- quantized blocks */

#define CS_QK8_0 32
#define CS_QK4_0 32

typedef struct {
    uint16_t d;          /* f16 scale */
    int8_t qs[CS_QK8_0]; /* values */
} cs_block_q8_0;

typedef struct {
    uint16_t d;               /* f16 scale */
    uint8_t qs[CS_QK4_0 / 2]; /* nibbles: low = element j, high = element j + 16; value - 8 */
} cs_block_q4_0;

_Static_assert(sizeof(cs_block_q8_0) == 34, "q8_0 block layout");
_Static_assert(sizeof(cs_block_q4_0) == 18, "q4_0 block layout");

/* ------------------------------------------- half precision (scalar) */

float cs_fp16_to_fp32(uint16_t h);
uint16_t cs_fp32_to_fp16(float f); /* round to nearest even, as F16C does */
float cs_bf16_to_fp32(uint16_t h);
uint16_t cs_fp32_to_bf16(float f); /* round to nearest even; NaN stays NaN (ggml's rule) */

#endif /* CS_TYPES_H */
