/* types.h: traits of ggml element types (ids as in GGUF files). The GGUF
 * reader knows every type's block layout so it can bound every tensor's
 * bytes, including types the engine cannot compute with. */
#ifndef CS_TYPES_H
#define CS_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctxshift.h"

#define CS_TYPE_COUNT 40

/* Q8_K: the activation type of the K-quant weights, Q8_1 that of Q4_1 and
 * Q5_1 (never weight or cache types, so not in ctxshift.h). */
enum { CS_TYPE_Q8_1 = 9, CS_TYPE_Q8_K = 15 };

/* Row kernels of the type table and of the kernel tables (kernels.h); n
 * elements, a multiple of the type's block. Rows are untyped so that one
 * table holds every type's functions. */
typedef void (*type_to_float_fn)(const void *x, float *y, int64_t n);
typedef void (*type_from_float_fn)(const float *x, void *y, int64_t n);
/* *s = sum_i x[i] * y[i]: x a row of a weight type, y a row of its
 * vec_dot_type. */
typedef void (*type_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);

/* One row per ggml type id (types.c), as ggml's type_traits. Layout (name,
 * blck, size) for every id, so the GGUF reader can bound any tensor; the
 * compute entries only for the types the engine computes with. The SIMD
 * versions of vec_dot and of the activation converter live in the kernel
 * tables (kernels.h: vec_dot[type], from_float[type]), which start from
 * the scalar entries here and replace the ones they have SIMD for. */
typedef struct type_traits {
    const char *name; /* NULL for ids that ggml removed */
    int32_t blck;     /* elements per block */
    int32_t size;     /* bytes per block */

    /* A weight type: matmul, cs_weight_types and the model loader take it. */
    bool is_weight;
    /* Row to f32, exact (weights, and embeddings read row by row). */
    type_to_float_fn to_float;
    /* f32 to this type as weight files hold it (ggml's quantize_row_*_ref,
     * what llama-quantize writes without an importance matrix); NULL when
     * the engine cannot write the type. */
    type_from_float_fn from_float_ref;
    /* The type the activations are converted to before the dot with a
     * weight row (ggml's vec_dot_type): F32 (used as it is), F16, BF16,
     * Q8_0, Q8_1 or Q8_K. */
    int32_t vec_dot_type;
    /* The scalar dot of a row of this (weight) type with a row of its
     * vec_dot_type: the specification the kernel tables' vec_dot[] match. */
    type_vec_dot_fn vec_dot_ref;
    /* For a type that is some weight's vec_dot_type (F16, BF16, Q8_0, Q8_1, Q8_K):
     * f32 activations to this type, the scalar specification of the kernel
     * tables' from_float[]. Differs from from_float_ref for Q8_0, as in
     * ggml (see quant.c). NULL for F32 (activations are used in place). */
    type_from_float_fn act_from_float_ref;
    /* general.file_type (llama_ftype) of a file whose 2-D weights are all
     * of this type (the "_S" variant for K-quants); 0 for F32. */
    int32_t ftype;
} type_traits;

/* NULL when the id is out of range or was removed from ggml. */
const type_traits *type_traits_get(int32_t type);

/* Bytes of a row of n elements; false when n is not a multiple of the
 * block size or the type is unknown. */
bool type_row_size(int32_t type, int64_t n, uint64_t *bytes);

/* A type the engine computes with (traits is_weight; listed by cs_weight_types). */
bool type_is_weight(int32_t type);

/* Writes the weight types' names, in table order, separated by ", "
 * ("f32, f16, q4_0, ...") into buf (NUL-terminated when cap > 0; only the
 * whole names that fit) and returns buf: for error texts. O(types). */
const char *type_weight_names(char *buf, size_t cap);

/* ------------------------------------------------- quantized blocks */

#define CS_QK8_0 32
#define CS_QK4_0 32

typedef struct {
    uint16_t d;          /* f16 scale */
    int8_t qs[CS_QK8_0]; /* values */
} block_q8_0;

typedef struct {
    uint16_t d;               /* f16 scale */
    uint8_t qs[CS_QK4_0 / 2]; /* nibbles: low = element j, high = element j + 16; value - 8 */
} block_q4_0;

_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block layout");
_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block layout");

/* ------------------------------------------- half precision (scalar) */

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f); /* round to nearest even, as F16C does */
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f); /* round to nearest even; NaN stays NaN (ggml's rule) */

#endif /* CS_TYPES_H */
