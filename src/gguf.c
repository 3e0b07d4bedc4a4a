/* gguf.c: GGUF v2/v3 reader and v3 writer (format: docs/GGUF.md).
 *
 * Reader. One pass over the bytes with a cursor that never reads past the
 * end. Every count is checked against the bytes left before anything is
 * allocated for it (a count of N items needs at least N times the smallest
 * item's bytes), every size computation is overflow-checked, and the caps
 * of cs_limits.h apply. Allocation is therefore bounded by a small multiple
 * of the file size. Tensor data is never copied: gguf_tensor.data points
 * into the caller's buffer or the mapping. Keys and tensor names go into
 * open-addressing hash indexes, so duplicate checks and lookups are O(1)
 * and a file with thousands of tensors costs O(n), not O(n^2).
 *
 * Writer. Keeps keys (in insertion order) and tensors (data copied) and
 * serializes them in llama.cpp's layout: header, keys, tensor infos, zero
 * padding to the alignment, then each tensor's data padded to the
 * alignment.
 *
 * Size note: ~1.4k lines because reader, writer and the value printer share
 * one key/value representation (gguf_kv); splitting them would expose it in
 * a header for no gain. */
#include "gguf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cs_limits.h"
#include "mmap.h"
#include "types.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_ALIGNMENT_KEY     "general.alignment"
/* Longest tensor name the writer emits: llama.cpp refuses names that do not
 * fit GGML_MAX_NAME (64) with their NUL. The reader allows CS_MAX_NAME_BYTES. */
#define GGUF_WRITER_MAX_NAME 63
/* Smallest encodings, for checking counts against the bytes left:
 * a key = u64 length + >= 1 byte + u32 type + >= 1 byte of value;
 * a tensor info = u64 length + >= 1 byte name + u32 n_dims + >= 1 u64
 * extent + u32 type + u64 offset. */
#define GGUF_MIN_KV_BYTES     14u
#define GGUF_MIN_TENSOR_BYTES 33u

/* ------------------------------------------------------------ value types */

static const char *const k_type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

/* Bytes of one scalar of the type; 0 for string and array (variable). */
static const uint8_t k_type_size[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_type_name(int32_t type) {
    return (type >= 0 && type < GGUF_TYPE_COUNT) ? k_type_names[type] : "invalid";
}

static bool gguf_type_is_int(int32_t t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_INT8 || t == GGUF_TYPE_UINT16 ||
           t == GGUF_TYPE_INT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}

static bool gguf_type_is_signed(int32_t t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

/* Little-endian loads from unaligned bytes, independent of the host. */
static uint64_t gguf_load_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void gguf_store_le(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* -------------------------------------------------------- shared structs */

/* One key/value. The reader and the writer share it, so copy_kv is a deep
 * copy and one serializer and one printer serve both. */
typedef struct gguf_kv {
    char *key; /* NUL-terminated, no NUL inside, 1..CS_MAX_KEY_BYTES bytes */
    int32_t type;
    uint8_t raw[8]; /* scalar: little-endian bytes (k_type_size[type] of them) */
    char *str;      /* string: NUL-terminated copy (may hold NULs) */
    uint64_t str_len;
    int32_t arr_type; /* arrays: element type, count, elements */
    uint64_t arr_n;
    const uint8_t *arr_data; /* numeric arrays: raw LE elements (buffer or arr_own) */
    uint8_t *arr_own;        /* writer copies (NULL in the reader) */
    char *blob;              /* string arrays: strings back to back, each NUL-terminated */
    uint64_t *offs;          /* string arrays: arr_n + 1 offsets into blob */
} gguf_kv;

static void gguf_kv_clear(gguf_kv *kv) {
    mem_free(kv->key);
    mem_free(kv->str);
    mem_free(kv->arr_own);
    mem_free(kv->blob);
    mem_free(kv->offs);
    memset(kv, 0, sizeof *kv);
}

/* Hash index over names: open addressing, linear probing, slots hold
 * index + 1 (0 = empty). Capacity is a power of two >= 2n, so a probe
 * sequence is short and always ends at an empty slot. */
typedef struct gguf_index {
    uint32_t *slots;
    uint64_t mask;
} gguf_index;

static uint64_t gguf_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static cs_status gguf_index_init(gguf_index *ix, uint64_t n) {
    uint64_t cap = 8;
    while (cap < 2 * n) cap *= 2; /* n <= 65536 (caps), no overflow */
    ix->slots = mem_calloc((size_t)cap, sizeof *ix->slots);
    if (!ix->slots) return error_fail(CS_ERR_NOMEM, "gguf: out of memory for a name index");
    ix->mask = cap - 1;
    return CS_OK;
}

/* Index of name, or -1. name_at(ctx, i) gives the i-th name. */
static int64_t gguf_index_find(const gguf_index *ix, const char *name,
                               const char *(*name_at)(const void *, int64_t), const void *ctx) {
    if (!ix->slots) return -1;
    for (uint64_t h = gguf_hash(name) & ix->mask;; h = (h + 1) & ix->mask) {
        uint32_t s = ix->slots[h];
        if (s == 0) return -1;
        if (strcmp(name_at(ctx, (int64_t)s - 1), name) == 0) return (int64_t)s - 1;
    }
}

/* Insert index i (whose name is not present yet). */
static void gguf_index_insert(gguf_index *ix, const char *name, int64_t i) {
    uint64_t h = gguf_hash(name) & ix->mask;
    while (ix->slots[h] != 0) h = (h + 1) & ix->mask;
    ix->slots[h] = (uint32_t)(i + 1);
}

struct gguf_file {
    const uint8_t *base; /* file bytes */
    uint64_t size;
    mmap_file *map; /* owned when opened by path */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    gguf_kv *kvs;
    int64_t n_tensors;
    gguf_tensor *tensors;
    gguf_index kv_index;
    gguf_index tensor_index;
};

static const char *gguf_kv_name_at(const void *ctx, int64_t i) {
    return ((const gguf_file *)ctx)->kvs[i].key;
}

static const char *gguf_tensor_name_at(const void *ctx, int64_t i) {
    return ((const gguf_file *)ctx)->tensors[i].name;
}

/* ------------------------------------------------------------- the cursor */

typedef struct gguf_reader {
    const uint8_t *p;
    uint64_t size;
    uint64_t pos;
} gguf_reader;

static uint64_t rd_left(const gguf_reader *r) {
    return r->size - r->pos;
}

/* "gguf: truncated file: <what> needs N bytes at offset P, only M left". */
static cs_status gguf_truncated(const gguf_reader *r, uint64_t need, const char *fmt, ...)
    CS_PRINTF(3, 4);
static cs_status gguf_truncated(const gguf_reader *r, uint64_t need, const char *fmt, ...) {
    char what[CS_MAX_NAME_BYTES + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return error_fail(CS_ERR_FORMAT,
                      "gguf: truncated file: %s needs %" PRIu64 " bytes at offset %" PRIu64
                      ", only %" PRIu64 " left (file size %" PRIu64 ")",
                      what, need, r->pos, rd_left(r), r->size);
}

/* Take n bytes; NULL (cursor unchanged) when fewer are left. */
static const uint8_t *rd_take(gguf_reader *r, uint64_t n) {
    if (n > rd_left(r)) return NULL;
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static bool rd_u32(gguf_reader *r, uint32_t *v) {
    const uint8_t *p = rd_take(r, 4);
    if (!p) return false;
    *v = (uint32_t)gguf_load_le(p, 4);
    return true;
}

static bool rd_u64(gguf_reader *r, uint64_t *v) {
    const uint8_t *p = rd_take(r, 8);
    if (!p) return false;
    *v = gguf_load_le(p, 8);
    return true;
}

/* ------------------------------------------------------- reading values */

/* A string value of at most CS_MAX_STRING_BYTES, copied NUL-terminated. */
static cs_status gguf_read_string_value(gguf_reader *r, gguf_kv *kv) {
    uint64_t len;
    if (!rd_u64(r, &len)) return gguf_truncated(r, 8, "key '%s': string length", kv->key);
    if (len > CS_MAX_STRING_BYTES)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: key '%s': string length %" PRIu64
                          " exceeds CS_MAX_STRING_BYTES (%u)",
                          kv->key, len, (unsigned)CS_MAX_STRING_BYTES);
    const uint8_t *p = rd_take(r, len);
    if (!p) return gguf_truncated(r, len, "key '%s': string bytes", kv->key);
    kv->str = mem_strndup((const char *)p, (size_t)len);
    if (!kv->str) return error_fail(CS_ERR_NOMEM, "gguf: out of memory for key '%s'", kv->key);
    kv->str_len = len;
    return CS_OK;
}

/* String array: pass 1 validates every length against the bytes left and
 * sums them; pass 2 copies into one blob. O(n + bytes). */
static cs_status gguf_read_string_array(gguf_reader *r, gguf_kv *kv) {
    const uint64_t start = r->pos;
    uint64_t total = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t len;
        if (!rd_u64(r, &len))
            return gguf_truncated(r, 8, "key '%s': length of string %" PRIu64, kv->key, i);
        if (len > CS_MAX_STRING_BYTES)
            return error_fail(CS_ERR_FORMAT,
                              "gguf: key '%s': string %" PRIu64 " length %" PRIu64
                              " exceeds CS_MAX_STRING_BYTES (%u)",
                              kv->key, i, len, (unsigned)CS_MAX_STRING_BYTES);
        if (!rd_take(r, len))
            return gguf_truncated(r, len, "key '%s': bytes of string %" PRIu64, kv->key, i);
        total += len + 1; /* bounded by the file size: no overflow */
    }
    kv->blob = mem_malloc((size_t)total);
    kv->offs = mem_malloc(((size_t)kv->arr_n + 1) * sizeof *kv->offs);
    if (!kv->blob || !kv->offs)
        return error_fail(CS_ERR_NOMEM, "gguf: out of memory for array '%s' (%" PRIu64 " strings)",
                          kv->key, kv->arr_n);
    r->pos = start;
    uint64_t off = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t len = 0;
        rd_u64(r, &len); /* validated above */
        memcpy(kv->blob + off, rd_take(r, len), (size_t)len);
        kv->offs[i] = off;
        off += len;
        kv->blob[off++] = '\0';
    }
    kv->offs[kv->arr_n] = off;
    return CS_OK;
}

static cs_status gguf_check_bool(const gguf_kv *kv, uint8_t b, uint64_t i, bool in_array) {
    if (b <= 1) return CS_OK;
    if (in_array)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: key '%s': bool element %" PRIu64 " has value %u (not 0 or 1)",
                          kv->key, i, (unsigned)b);
    return error_fail(CS_ERR_FORMAT, "gguf: key '%s': bool value %u is not 0 or 1", kv->key,
                      (unsigned)b);
}

static cs_status gguf_read_array(gguf_reader *r, gguf_kv *kv) {
    uint32_t et;
    if (!rd_u32(r, &et)) return gguf_truncated(r, 4, "key '%s': array element type", kv->key);
    if (et >= GGUF_TYPE_COUNT)
        return error_fail(CS_ERR_FORMAT, "gguf: key '%s': invalid array element type %" PRIu32,
                          kv->key, et);
    if (et == GGUF_TYPE_ARRAY)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: key '%s': array element type array (nested arrays are not "
                          "supported)",
                          kv->key);
    kv->arr_type = (int32_t)et;
    uint64_t n;
    if (!rd_u64(r, &n)) return gguf_truncated(r, 8, "key '%s': array count", kv->key);
    if (n > CS_MAX_ARRAY_ITEMS)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: key '%s': array count %" PRIu64 " exceeds CS_MAX_ARRAY_ITEMS (%u)",
                          kv->key, n, (unsigned)CS_MAX_ARRAY_ITEMS);
    uint64_t min_item = et == GGUF_TYPE_STRING ? 8 : k_type_size[et];
    uint64_t need = n * min_item; /* n <= 2^24, min_item <= 8: no overflow */
    if (need > rd_left(r))
        return error_fail(CS_ERR_FORMAT,
                          "gguf: key '%s': array count %" PRIu64 " of %s needs at least %" PRIu64
                          " bytes at offset %" PRIu64 ", only %" PRIu64 " left",
                          kv->key, n, k_type_names[et], need, r->pos, rd_left(r));
    kv->arr_n = n;
    if (et == GGUF_TYPE_STRING) return gguf_read_string_array(r, kv);
    kv->arr_data = rd_take(r, need);
    if (et == GGUF_TYPE_BOOL) {
        for (uint64_t i = 0; i < n; i++) {
            cs_status st = gguf_check_bool(kv, kv->arr_data[i], i, true);
            if (st != CS_OK) return st;
        }
    }
    return CS_OK;
}

static cs_status gguf_read_kv(gguf_file *g, gguf_reader *r, int64_t idx) {
    gguf_kv *kv = &g->kvs[idx];
    uint64_t len;
    if (!rd_u64(r, &len)) return gguf_truncated(r, 8, "key #%" PRId64 ": key length", idx);
    if (len == 0)
        return error_fail(CS_ERR_FORMAT, "gguf: key #%" PRId64 " is empty (length 0)", idx);
    if (len > CS_MAX_KEY_BYTES)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: key #%" PRId64 ": key length %" PRIu64
                          " exceeds CS_MAX_KEY_BYTES (%u)",
                          idx, len, (unsigned)CS_MAX_KEY_BYTES);
    const uint8_t *p = rd_take(r, len);
    if (!p) return gguf_truncated(r, len, "key #%" PRId64 ": key bytes", idx);
    if (memchr(p, 0, (size_t)len))
        return error_fail(CS_ERR_FORMAT, "gguf: key #%" PRId64 ": key contains a NUL byte", idx);
    kv->key = mem_strndup((const char *)p, (size_t)len);
    if (!kv->key) return error_fail(CS_ERR_NOMEM, "gguf: out of memory for key #%" PRId64, idx);
    int64_t dup = gguf_index_find(&g->kv_index, kv->key, gguf_kv_name_at, g);
    if (dup >= 0)
        return error_fail(CS_ERR_FORMAT, "gguf: duplicate key '%s' (#%" PRId64 " and #%" PRId64 ")",
                          kv->key, dup, idx);
    gguf_index_insert(&g->kv_index, kv->key, idx);

    uint32_t type;
    if (!rd_u32(r, &type)) return gguf_truncated(r, 4, "key '%s': value type", kv->key);
    if (type >= GGUF_TYPE_COUNT)
        return error_fail(CS_ERR_FORMAT, "gguf: key '%s': invalid value type %" PRIu32, kv->key,
                          type);
    kv->type = (int32_t)type;
    if (type == GGUF_TYPE_STRING) return gguf_read_string_value(r, kv);
    if (type == GGUF_TYPE_ARRAY) return gguf_read_array(r, kv);
    uint64_t sz = k_type_size[type];
    p = rd_take(r, sz);
    if (!p) return gguf_truncated(r, sz, "key '%s': %s value", kv->key, k_type_names[type]);
    memcpy(kv->raw, p, (size_t)sz);
    if (type == GGUF_TYPE_BOOL) return gguf_check_bool(kv, p[0], 0, false);
    return CS_OK;
}

/* Integer value of a scalar kv as int64 (false if it does not fit). */
static bool gguf_kv_int(const gguf_kv *kv, int64_t *out) {
    size_t sz = k_type_size[kv->type];
    uint64_t u = gguf_load_le(kv->raw, sz);
    if (gguf_type_is_signed(kv->type)) {
        if (sz < 8 && (u >> (8 * sz - 1)) & 1) u |= ~(uint64_t)0 << (8 * sz); /* sign-extend */
        *out = (int64_t)u;
        return true;
    }
    if (u > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)u;
    return true;
}

static double gguf_kv_float(const gguf_kv *kv) {
    if (kv->type == GGUF_TYPE_FLOAT32) {
        uint32_t b = (uint32_t)gguf_load_le(kv->raw, 4);
        float f;
        memcpy(&f, &b, 4);
        return (double)f;
    }
    uint64_t b = gguf_load_le(kv->raw, 8);
    double d;
    memcpy(&d, &b, 8);
    return d;
}

/* ------------------------------------------------------ reading tensors */

/* Names of the type ids ggml removed, for a helpful refusal. */
static const char *gguf_removed_type_name(uint32_t t) {
    switch (t) {
    case 4:
        return "q4_2";
    case 5:
        return "q4_3";
    case 31:
        return "q4_0_4_4";
    case 32:
        return "q4_0_4_8";
    case 33:
        return "q4_0_8_8";
    case 36:
        return "iq4_nl_4_4";
    case 37:
        return "iq4_nl_4_8";
    case 38:
        return "iq4_nl_8_8";
    default:
        return NULL;
    }
}

static cs_status gguf_read_tensor_info(gguf_file *g, gguf_reader *r, int64_t idx) {
    gguf_tensor *t = &g->tensors[idx];
    uint64_t len;
    if (!rd_u64(r, &len)) return gguf_truncated(r, 8, "tensor #%" PRId64 ": name length", idx);
    if (len == 0)
        return error_fail(CS_ERR_FORMAT, "gguf: tensor #%" PRId64 ": empty name (length 0)", idx);
    if (len > CS_MAX_NAME_BYTES)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: tensor #%" PRId64 ": name length %" PRIu64
                          " exceeds CS_MAX_NAME_BYTES (%u)",
                          idx, len, (unsigned)CS_MAX_NAME_BYTES);
    const uint8_t *p = rd_take(r, len);
    if (!p) return gguf_truncated(r, len, "tensor #%" PRId64 ": name bytes", idx);
    if (memchr(p, 0, (size_t)len))
        return error_fail(CS_ERR_FORMAT, "gguf: tensor #%" PRId64 ": name contains a NUL byte",
                          idx);
    char *name = mem_strndup((const char *)p, (size_t)len);
    if (!name) return error_fail(CS_ERR_NOMEM, "gguf: out of memory for tensor #%" PRId64, idx);
    t->name = name;
    int64_t dup = gguf_index_find(&g->tensor_index, name, gguf_tensor_name_at, g);
    if (dup >= 0)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: duplicate tensor name '%s' (#%" PRId64 " and #%" PRId64 ")", name,
                          dup, idx);
    gguf_index_insert(&g->tensor_index, name, idx);

    uint32_t n_dims;
    if (!rd_u32(r, &n_dims)) return gguf_truncated(r, 4, "tensor '%s': n_dims", name);
    if (n_dims < 1 || n_dims > CS_MAX_DIMS)
        return error_fail(CS_ERR_FORMAT, "gguf: tensor '%s': n_dims %" PRIu32 " is not in 1..%d",
                          name, n_dims, CS_MAX_DIMS);
    t->n_dims = (int32_t)n_dims;
    uint64_t n_elems = 1;
    for (int d = 0; d < CS_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        if (!rd_u64(r, &ne)) return gguf_truncated(r, 8, "tensor '%s': ne[%" PRIu32 "]", name, d);
        if (ne == 0)
            return error_fail(CS_ERR_FORMAT, "gguf: tensor '%s': ne[%" PRIu32 "] is 0", name, d);
        if (ne > (uint64_t)CS_MAX_TENSOR_DIM)
            return error_fail(CS_ERR_FORMAT,
                              "gguf: tensor '%s': ne[%" PRIu32 "] = %" PRIu64
                              " exceeds CS_MAX_TENSOR_DIM (%" PRId64 ")",
                              name, d, ne, (int64_t)CS_MAX_TENSOR_DIM);
        if (!common_mul_u64(n_elems, ne, &n_elems) || n_elems > (uint64_t)CS_MAX_TENSOR_ELEMS)
            return error_fail(CS_ERR_FORMAT,
                              "gguf: tensor '%s': element count (product of ne[0..%" PRIu32
                              "]) exceeds CS_MAX_TENSOR_ELEMS (%" PRId64 ")",
                              name, d, (int64_t)CS_MAX_TENSOR_ELEMS);
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    if (!rd_u32(r, &type)) return gguf_truncated(r, 4, "tensor '%s': type", name);
    const type_traits *tr = type < CS_TYPE_COUNT ? type_traits_get((int32_t)type) : NULL;
    if (!tr) {
        const char *removed = gguf_removed_type_name(type);
        if (removed)
            return error_fail(CS_ERR_FORMAT,
                              "gguf: tensor '%s': type %" PRIu32
                              " (%s) was removed from ggml; re-quantize this file (for example "
                              "to q4_0, which is repacked at load)",
                              name, type, removed);
        return error_fail(CS_ERR_FORMAT, "gguf: tensor '%s': unknown type %" PRIu32, name, type);
    }
    t->type = (int32_t)type;
    uint64_t row;
    if (!type_row_size(t->type, t->ne[0], &row))
        return error_fail(CS_ERR_FORMAT,
                          "gguf: tensor '%s': ne[0] = %" PRId64
                          " is not a multiple of the %s block size %" PRId32,
                          name, t->ne[0], tr->name, tr->blck);
    /* row <= 2^40 * 292/256 and n_rows <= 2^40; check anyway */
    uint64_t n_rows = n_elems / (uint64_t)t->ne[0];
    if (!common_mul_u64(row, n_rows, &t->nbytes))
        return error_fail(CS_ERR_FORMAT, "gguf: tensor '%s': byte size overflows", name);
    if (!rd_u64(r, &t->offset)) return gguf_truncated(r, 8, "tensor '%s': offset", name);
    if (t->offset % g->alignment != 0)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: tensor '%s': offset %" PRIu64
                          " is not a multiple of the alignment %" PRIu64,
                          name, t->offset, g->alignment);
    return CS_OK;
}

/* Every tensor's bytes inside the file; called once data_offset is known. */
static cs_status gguf_bind_tensor_data(gguf_file *g) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        uint64_t start, end;
        if (!common_add_u64(g->data_offset, t->offset, &start) ||
            !common_add_u64(start, t->nbytes, &end))
            return error_fail(CS_ERR_FORMAT,
                              "gguf: tensor '%s': offset %" PRIu64 " + %" PRIu64
                              " bytes overflows (data section at %" PRIu64 ")",
                              t->name, t->offset, t->nbytes, g->data_offset);
        if (end > g->size)
            return error_fail(CS_ERR_FORMAT,
                              "gguf: tensor '%s': offset %" PRIu64 " + %" PRIu64
                              " bytes exceeds file size %" PRIu64 " (data section at %" PRIu64 ")",
                              t->name, start, t->nbytes, g->size, g->data_offset);
        t->data = g->base + start;
    }
    return CS_OK;
}

/* general.alignment: an integer, a nonzero power of two <= CS_MAX_ALIGNMENT. */
static cs_status gguf_read_alignment(gguf_file *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_index_find(&g->kv_index, GGUF_ALIGNMENT_KEY, gguf_kv_name_at, g);
    if (i < 0) return CS_OK;
    const gguf_kv *kv = &g->kvs[i];
    if (!gguf_type_is_int(kv->type))
        return error_fail(CS_ERR_FORMAT, "gguf: key '%s' has type %s, expected uint32",
                          GGUF_ALIGNMENT_KEY, k_type_names[kv->type]);
    int64_t a;
    if (!gguf_kv_int(kv, &a) || a <= 0 || a > (int64_t)CS_MAX_ALIGNMENT || (a & (a - 1)) != 0) {
        char text[64];
        gguf_kv_to_text(g, i, 0, text, sizeof text);
        return error_fail(CS_ERR_FORMAT,
                          "gguf: key '%s' = %s is not a power of two in 1..CS_MAX_ALIGNMENT (%u)",
                          GGUF_ALIGNMENT_KEY, text, (unsigned)CS_MAX_ALIGNMENT);
    }
    g->alignment = (uint64_t)a;
    return CS_OK;
}

static cs_status gguf_parse(gguf_file *g) {
    cs_status st;
    gguf_reader r = {g->base, g->size, 0};

    const uint8_t *magic = rd_take(&r, 4);
    if (!magic)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: file of %" PRIu64 " bytes is too short for the magic", g->size);
    if (memcmp(magic, "GGUF", 4) != 0)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: bad magic %02x %02x %02x %02x (expected \"GGUF\" = 47 47 55 46)",
                          magic[0], magic[1], magic[2], magic[3]);
    uint32_t version;
    if (!rd_u32(&r, &version)) return gguf_truncated(&r, 4, "header: version");
    if ((version & 0xffffffu) == 0 && (version >> 24) >= 1 && (version >> 24) <= 3) {
        /* Versions 1..3 in big-endian byte order read as v << 24. */
        const uint8_t *v = g->base + 4;
        return error_fail(CS_ERR_FORMAT,
                          "gguf: big-endian file (version bytes %02x %02x %02x %02x) is not "
                          "supported; only little-endian GGUF is",
                          v[0], v[1], v[2], v[3]);
    }
    if (version == 1)
        return error_fail(
            CS_ERR_FORMAT,
            "gguf: version 1 is not supported (32-bit counts); only versions 2 and 3");
    if (version != 2 && version != 3)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: version %" PRIu32 " is not supported; only versions 2 and 3",
                          version);
    g->version = version;

    uint64_t n_tensors, n_kv;
    if (!rd_u64(&r, &n_tensors)) return gguf_truncated(&r, 8, "header: n_tensors");
    if (!rd_u64(&r, &n_kv)) return gguf_truncated(&r, 8, "header: n_kv");
    if (n_tensors > CS_MAX_GGUF_TENSORS)
        return error_fail(CS_ERR_FORMAT,
                          "gguf: n_tensors %" PRIu64 " exceeds CS_MAX_GGUF_TENSORS (%d)", n_tensors,
                          CS_MAX_GGUF_TENSORS);
    if (n_kv > CS_MAX_GGUF_KV)
        return error_fail(CS_ERR_FORMAT, "gguf: n_kv %" PRIu64 " exceeds CS_MAX_GGUF_KV (%d)", n_kv,
                          CS_MAX_GGUF_KV);
    uint64_t need = n_kv * GGUF_MIN_KV_BYTES + n_tensors * GGUF_MIN_TENSOR_BYTES;
    if (need > rd_left(&r))
        return error_fail(CS_ERR_FORMAT,
                          "gguf: n_kv %" PRIu64 " and n_tensors %" PRIu64 " need at least %" PRIu64
                          " bytes, only %" PRIu64 " left after the header",
                          n_kv, n_tensors, need, rd_left(&r));

    g->kvs = mem_calloc((size_t)n_kv, sizeof *g->kvs);
    g->tensors = mem_calloc((size_t)n_tensors, sizeof *g->tensors);
    if (!g->kvs || !g->tensors)
        return error_fail(CS_ERR_NOMEM,
                          "gguf: out of memory for %" PRIu64 " keys, %" PRIu64 " tensors", n_kv,
                          n_tensors);
    if ((st = gguf_index_init(&g->kv_index, n_kv)) != CS_OK) return st;
    if ((st = gguf_index_init(&g->tensor_index, n_tensors)) != CS_OK) return st;

    /* n_kv counts the entries parsed so far, so gguf_close frees exactly those. */
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (int64_t)i + 1;
        if ((st = gguf_read_kv(g, &r, (int64_t)i)) != CS_OK) return st;
    }
    if ((st = gguf_read_alignment(g)) != CS_OK) return st;
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (int64_t)i + 1;
        if ((st = gguf_read_tensor_info(g, &r, (int64_t)i)) != CS_OK) return st;
    }
    /* The data section starts at the next multiple of the alignment; it may
     * lie past the end of a file without tensors (gguf-py does not pad). */
    mmap_align_up(r.pos, g->alignment, &g->data_offset); /* pos <= size: no overflow */
    return gguf_bind_tensor_data(g);
}

/* ------------------------------------------------------------ open/close */

cs_status gguf_open_buffer(const void *data, size_t size, gguf_file **out) {
    *out = NULL;
    if (!data && size > 0) return error_fail(CS_ERR_INVALID_ARG, "gguf: buffer is NULL");
    gguf_file *g = mem_calloc(1, sizeof *g);
    if (!g) return error_fail(CS_ERR_NOMEM, "gguf: out of memory");
    g->base = data;
    g->size = size;
    cs_status st = gguf_parse(g);
    if (st != CS_OK) {
        gguf_close(g);
        return st;
    }
    *out = g;
    return CS_OK;
}

cs_status gguf_open(const char *path, gguf_file **out) {
    return gguf_open_ex(path, true, out);
}

cs_status gguf_open_ex(const char *path, bool use_mmap, gguf_file **out) {
    *out = NULL;
    mmap_file *m = NULL;
    cs_status st = mmap_open(path, use_mmap, &m);
    if (st != CS_OK) return st;
    gguf_file *g = NULL;
    st = gguf_open_buffer(m->data, m->size, &g);
    if (st != CS_OK) {
        mmap_free(m);
        return st;
    }
    g->map = m;
    *out = g;
    return CS_OK;
}

void gguf_release(gguf_file *g, const void *p, size_t n) {
    if (g->map) mmap_release(g->map, p, n);
}

void gguf_release_span(gguf_file *g, const void *p, size_t n) {
    if (g->map) mmap_release_span(g->map, p, n);
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) gguf_kv_clear(&g->kvs[i]);
    for (int64_t i = 0; i < g->n_tensors; i++) mem_free((void *)(uintptr_t)g->tensors[i].name);
    mem_free(g->kvs);
    mem_free(g->tensors);
    mem_free(g->kv_index.slots);
    mem_free(g->tensor_index.slots);
    mmap_free(g->map);
    mem_free(g);
}

uint32_t gguf_version(const gguf_file *g) {
    return g->version;
}
uint64_t gguf_alignment(const gguf_file *g) {
    return g->alignment;
}
uint64_t gguf_data_offset(const gguf_file *g) {
    return g->data_offset;
}
uint64_t gguf_file_size(const gguf_file *g) {
    return g->size;
}

/* ---------------------------------------------------------- metadata API */

int64_t gguf_n_kv(const gguf_file *g) {
    return g->n_kv;
}

int64_t gguf_find_key(const gguf_file *g, const char *key) {
    return gguf_index_find(&g->kv_index, key, gguf_kv_name_at, g);
}

static const gguf_kv *gguf_kv_at(const gguf_file *g, int64_t i) {
    CS_ASSERT(i >= 0 && i < g->n_kv);
    return &g->kvs[i];
}

const char *gguf_kv_key(const gguf_file *g, int64_t i) {
    return gguf_kv_at(g, i)->key;
}
int32_t gguf_kv_type(const gguf_file *g, int64_t i) {
    return gguf_kv_at(g, i)->type;
}

int32_t gguf_kv_arr_type(const gguf_file *g, int64_t i) {
    const gguf_kv *kv = gguf_kv_at(g, i);
    return kv->type == GGUF_TYPE_ARRAY ? kv->arr_type : -1;
}

uint64_t gguf_kv_arr_n(const gguf_file *g, int64_t i) {
    const gguf_kv *kv = gguf_kv_at(g, i);
    return kv->type == GGUF_TYPE_ARRAY ? kv->arr_n : 0;
}

/* The kv for key, or NULL with "missing key" recorded. */
static const gguf_kv *gguf_kv_get(const gguf_file *g, const char *key, cs_status *st) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0) {
        *st = error_fail(CS_ERR_FORMAT, "gguf: missing key '%s'", key);
        return NULL;
    }
    return &g->kvs[i];
}

static cs_status gguf_wrong_type(const gguf_kv *kv, const char *expected) {
    return error_fail(CS_ERR_FORMAT, "gguf: key '%s' has type %s, expected %s", kv->key,
                      k_type_names[kv->type], expected);
}

cs_status gguf_get_int(const gguf_file *g, const char *key, int64_t *out) {
    cs_status st = CS_OK;
    const gguf_kv *kv = gguf_kv_get(g, key, &st);
    if (!kv) return st;
    if (!gguf_type_is_int(kv->type)) return gguf_wrong_type(kv, "an integer");
    if (!gguf_kv_int(kv, out))
        return error_fail(CS_ERR_FORMAT, "gguf: key '%s' = %" PRIu64 " does not fit int64", key,
                          gguf_load_le(kv->raw, 8));
    return CS_OK;
}

cs_status gguf_get_float(const gguf_file *g, const char *key, double *out) {
    cs_status st = CS_OK;
    const gguf_kv *kv = gguf_kv_get(g, key, &st);
    if (!kv) return st;
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return gguf_wrong_type(kv, "float32 or float64");
    *out = gguf_kv_float(kv);
    return CS_OK;
}

cs_status gguf_get_bool(const gguf_file *g, const char *key, bool *out) {
    cs_status st = CS_OK;
    const gguf_kv *kv = gguf_kv_get(g, key, &st);
    if (!kv) return st;
    if (kv->type != GGUF_TYPE_BOOL) return gguf_wrong_type(kv, "bool");
    *out = kv->raw[0] != 0;
    return CS_OK;
}

cs_status gguf_get_str(const gguf_file *g, const char *key, const char **out, size_t *len) {
    cs_status st = CS_OK;
    const gguf_kv *kv = gguf_kv_get(g, key, &st);
    if (!kv) return st;
    if (kv->type != GGUF_TYPE_STRING) return gguf_wrong_type(kv, "string");
    *out = kv->str;
    if (len) *len = (size_t)kv->str_len;
    return CS_OK;
}

cs_status gguf_get_arr(const gguf_file *g, const char *key, int32_t *elem_type, uint64_t *n,
                       const void **data) {
    cs_status st = CS_OK;
    const gguf_kv *kv = gguf_kv_get(g, key, &st);
    if (!kv) return st;
    if (kv->type != GGUF_TYPE_ARRAY) return gguf_wrong_type(kv, "an array");
    if (elem_type) *elem_type = kv->arr_type;
    if (n) *n = kv->arr_n;
    if (data) *data = kv->arr_type == GGUF_TYPE_STRING ? NULL : kv->arr_data;
    return CS_OK;
}

static const char *gguf_kv_arr_str(const gguf_kv *kv, uint64_t i, size_t *len) {
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING || i >= kv->arr_n)
        return NULL;
    if (len) *len = (size_t)(kv->offs[i + 1] - kv->offs[i] - 1);
    return kv->blob + kv->offs[i];
}

const char *gguf_get_arr_str(const gguf_file *g, int64_t key_index, uint64_t i, size_t *len) {
    if (key_index < 0 || key_index >= g->n_kv) return NULL;
    return gguf_kv_arr_str(&g->kvs[key_index], i, len);
}

/* ------------------------------------------------------------- as text */

/* Appends into a fixed buffer; once full, further output is dropped and
 * the end is marked with "...". */
typedef struct gguf_text {
    char *buf;
    size_t size;
    size_t len;
    bool full;
} gguf_text;

static void text_put(gguf_text *t, const char *s, size_t n) {
    if (t->full) return;
    size_t room = t->size - 1 - t->len;
    if (n > room) {
        n = room;
        t->full = true;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void text_printf(gguf_text *t, const char *fmt, ...) CS_PRINTF(2, 3);
static void text_printf(gguf_text *t, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) text_put(t, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Quoted, with " \ and control bytes escaped; stops once the buffer is full. */
static void text_quoted(gguf_text *t, const char *s, uint64_t n) {
    text_put(t, "\"", 1);
    for (uint64_t i = 0; i < n && !t->full; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            text_put(t, e, 2);
        } else if (c == '\n') {
            text_put(t, "\\n", 2);
        } else if (c == '\t') {
            text_put(t, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            text_printf(t, "\\x%02x", c);
        } else {
            text_put(t, (const char *)&c, 1);
        }
    }
    text_put(t, "\"", 1);
}

/* One scalar of type at p (LE bytes). */
static void text_scalar(gguf_text *t, int32_t type, const uint8_t *p) {
    size_t sz = k_type_size[type];
    uint64_t u = gguf_load_le(p, sz);
    if (type == GGUF_TYPE_BOOL) {
        text_printf(t, "%s", u ? "true" : "false");
    } else if (type == GGUF_TYPE_FLOAT32 || type == GGUF_TYPE_FLOAT64) {
        gguf_kv tmp = {.type = type};
        memcpy(tmp.raw, p, sz);
        text_printf(t, "%g", gguf_kv_float(&tmp));
    } else if (gguf_type_is_signed(type)) {
        gguf_kv tmp = {.type = type};
        memcpy(tmp.raw, p, sz);
        int64_t v = 0;
        gguf_kv_int(&tmp, &v);
        text_printf(t, "%" PRId64, v);
    } else {
        text_printf(t, "%" PRIu64, u);
    }
}

static void gguf_kv_text(const gguf_kv *kv, int32_t max_items, gguf_text *t) {
    if (kv->type == GGUF_TYPE_STRING) {
        text_quoted(t, kv->str, kv->str_len);
    } else if (kv->type != GGUF_TYPE_ARRAY) {
        text_scalar(t, kv->type, kv->raw);
    } else {
        text_printf(t, "[%s x %" PRIu64 "]", k_type_names[kv->arr_type], kv->arr_n);
        uint64_t shown = max_items > 0 ? (uint64_t)max_items : 0;
        if (shown > kv->arr_n) shown = kv->arr_n;
        for (uint64_t i = 0; i < shown && !t->full; i++) {
            text_put(t, i ? ", " : " ", i ? 2 : 1);
            if (kv->arr_type == GGUF_TYPE_STRING) {
                size_t len = 0;
                const char *s = gguf_kv_arr_str(kv, i, &len);
                text_quoted(t, s, len);
            } else {
                text_scalar(t, kv->arr_type, kv->arr_data + i * k_type_size[kv->arr_type]);
            }
        }
        if (shown < kv->arr_n) text_put(t, shown ? ", ..." : " ...", shown ? 5 : 4);
    }
}

const char *gguf_kv_to_text(const gguf_file *g, int64_t i, int32_t max_items, char *buf,
                            size_t size) {
    if (!buf || size == 0) return buf;
    gguf_text t = {buf, size, 0, false};
    buf[0] = '\0';
    gguf_kv_text(gguf_kv_at(g, i), max_items, &t);
    if (t.full && size >= 4) memcpy(buf + size - 4, "...", 4);
    return buf;
}

/* --------------------------------------------------------------- tensors */

int64_t gguf_n_tensors(const gguf_file *g) {
    return g->n_tensors;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *g, int64_t i) {
    CS_ASSERT(i >= 0 && i < g->n_tensors);
    return &g->tensors[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    int64_t i = gguf_index_find(&g->tensor_index, name, gguf_tensor_name_at, g);
    return i < 0 ? NULL : &g->tensors[i];
}

/* ================================================================ writer */

typedef struct gguf_wtensor {
    char *name;
    int32_t type;
    int32_t n_dims;
    int64_t ne[4];
    uint64_t nbytes;
    uint8_t *data;
} gguf_wtensor;

/* Keys and tensors are few (a model has ~30 keys, ~10^3 tensors), so the
 * writer finds them by linear search: O(n^2) over a whole model, ~10^6
 * string compares at worst, negligible next to writing its data. */
struct gguf_writer {
    gguf_kv *kvs;
    int64_t n_kv;
    int64_t cap_kv;
    gguf_wtensor *tensors;
    int64_t n_tensors;
    int64_t cap_tensors;
};

cs_status gguf_writer_new(gguf_writer **out) {
    *out = mem_calloc(1, sizeof **out);
    if (!*out) return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory");
    return CS_OK;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) gguf_kv_clear(&w->kvs[i]);
    for (int64_t i = 0; i < w->n_tensors; i++) {
        mem_free(w->tensors[i].name);
        mem_free(w->tensors[i].data);
    }
    mem_free(w->kvs);
    mem_free(w->tensors);
    mem_free(w);
}

static cs_status gguf_writer_check_key(const char *key) {
    if (!key || !key[0]) return error_fail(CS_ERR_INVALID_ARG, "gguf writer: empty key");
    size_t n = strlen(key);
    if (n > CS_MAX_KEY_BYTES)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: key length %zu exceeds CS_MAX_KEY_BYTES (%u)", n,
                          (unsigned)CS_MAX_KEY_BYTES);
    return CS_OK;
}

/* Store kv (ownership taken, also on failure): replaces a key of the same
 * name in place, else appends. general.alignment must be a uint32 power of
 * two <= CS_MAX_ALIGNMENT since it decides the file layout. */
static cs_status gguf_writer_put(gguf_writer *w, gguf_kv *kv) {
    cs_status st = CS_OK;
    if (strcmp(kv->key, GGUF_ALIGNMENT_KEY) == 0) {
        uint64_t a = gguf_load_le(kv->raw, 4);
        if (kv->type != GGUF_TYPE_UINT32 || a == 0 || a > CS_MAX_ALIGNMENT || (a & (a - 1))) {
            st = error_fail(CS_ERR_INVALID_ARG,
                            "gguf writer: '%s' must be a uint32 power of two <= %u (type %s)",
                            GGUF_ALIGNMENT_KEY, (unsigned)CS_MAX_ALIGNMENT, k_type_names[kv->type]);
            goto fail;
        }
    }
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, kv->key) == 0) {
            gguf_kv_clear(&w->kvs[i]);
            w->kvs[i] = *kv;
            return CS_OK;
        }
    }
    if (w->n_kv >= CS_MAX_GGUF_KV) {
        st = error_fail(CS_ERR_INVALID_ARG, "gguf writer: more than CS_MAX_GGUF_KV (%d) keys",
                        CS_MAX_GGUF_KV);
        goto fail;
    }
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        gguf_kv *p = mem_realloc(w->kvs, (size_t)cap * sizeof *p);
        if (!p) {
            st = error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for key '%s'", kv->key);
            goto fail;
        }
        w->kvs = p;
        w->cap_kv = cap;
    }
    w->kvs[w->n_kv++] = *kv;
    return CS_OK;
fail:
    gguf_kv_clear(kv);
    return st;
}

static cs_status gguf_writer_set_scalar(gguf_writer *w, const char *key, int32_t type,
                                        uint64_t bits) {
    cs_status st = gguf_writer_check_key(key);
    if (st != CS_OK) return st;
    gguf_kv kv = {.type = type};
    kv.key = mem_strdup(key);
    if (!kv.key) return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    gguf_store_le(kv.raw, bits, k_type_size[type]);
    return gguf_writer_put(w, &kv);
}

cs_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    return gguf_writer_set_scalar(w, key, GGUF_TYPE_UINT32, v);
}

cs_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
    return gguf_writer_set_scalar(w, key, GGUF_TYPE_INT32, (uint64_t)(uint32_t)v);
}

cs_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    return gguf_writer_set_scalar(w, key, GGUF_TYPE_UINT64, v);
}

cs_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return gguf_writer_set_scalar(w, key, GGUF_TYPE_FLOAT32, bits);
}

cs_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) {
    return gguf_writer_set_scalar(w, key, GGUF_TYPE_BOOL, v ? 1u : 0u);
}

cs_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    cs_status st = gguf_writer_check_key(key);
    if (st != CS_OK) return st;
    if (!v) return error_fail(CS_ERR_INVALID_ARG, "gguf writer: key '%s': string is NULL", key);
    size_t n = strlen(v);
    if (n > CS_MAX_STRING_BYTES)
        return error_fail(
            CS_ERR_INVALID_ARG,
            "gguf writer: key '%s': string length %zu exceeds CS_MAX_STRING_BYTES (%u)", key, n,
            (unsigned)CS_MAX_STRING_BYTES);
    gguf_kv kv = {.type = GGUF_TYPE_STRING, .str_len = n};
    kv.key = mem_strdup(key);
    kv.str = mem_strndup(v, n);
    if (!kv.key || !kv.str) {
        gguf_kv_clear(&kv);
        return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    }
    return gguf_writer_put(w, &kv);
}

cs_status gguf_writer_set_arr(gguf_writer *w, const char *key, int32_t elem_type, const void *data,
                              uint64_t n) {
    cs_status st = gguf_writer_check_key(key);
    if (st != CS_OK) return st;
    if (elem_type < 0 || elem_type >= GGUF_TYPE_COUNT || elem_type == GGUF_TYPE_STRING ||
        elem_type == GGUF_TYPE_ARRAY)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: key '%s': element type %" PRId32 " is not numeric", key,
                          elem_type);
    if (n > CS_MAX_ARRAY_ITEMS)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: key '%s': %" PRIu64 " items exceed CS_MAX_ARRAY_ITEMS (%u)",
                          key, n, (unsigned)CS_MAX_ARRAY_ITEMS);
    if (n > 0 && !data)
        return error_fail(CS_ERR_INVALID_ARG, "gguf writer: key '%s': data is NULL", key);
    size_t bytes = (size_t)n * k_type_size[elem_type];
    gguf_kv kv = {.type = GGUF_TYPE_ARRAY, .arr_type = elem_type, .arr_n = n};
    kv.key = mem_strdup(key);
    kv.arr_own = mem_malloc(bytes);
    if (!kv.key || !kv.arr_own) {
        gguf_kv_clear(&kv);
        return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    }
    if (bytes) memcpy(kv.arr_own, data, bytes);
    kv.arr_data = kv.arr_own;
    if (elem_type == GGUF_TYPE_BOOL) /* normalize so the reader's 0/1 check holds */
        for (size_t i = 0; i < bytes; i++) kv.arr_own[i] = kv.arr_own[i] != 0;
    return gguf_writer_put(w, &kv);
}

/* A string array kv from n (pointer, length) pairs; get(ctx, i, &len). */
static cs_status gguf_make_str_array(gguf_kv *kv, uint64_t n,
                                     const char *(*get)(const void *, uint64_t, size_t *),
                                     const void *ctx) {
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = 0;
        get(ctx, i, &len);
        if (len > CS_MAX_STRING_BYTES)
            return error_fail(CS_ERR_INVALID_ARG,
                              "gguf writer: key '%s': string %" PRIu64
                              " length %zu exceeds CS_MAX_STRING_BYTES (%u)",
                              kv->key, i, len, (unsigned)CS_MAX_STRING_BYTES);
        if (!common_add_u64(total, (uint64_t)len + 1, &total) || total > SIZE_MAX)
            return error_fail(CS_ERR_INVALID_ARG, "gguf writer: key '%s': strings too large",
                              kv->key);
    }
    kv->blob = mem_malloc((size_t)total);
    kv->offs = mem_malloc(((size_t)n + 1) * sizeof *kv->offs);
    if (!kv->blob || !kv->offs)
        return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for key '%s'", kv->key);
    uint64_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *s = get(ctx, i, &len);
        if (len) memcpy(kv->blob + off, s, len);
        kv->offs[i] = off;
        off += len;
        kv->blob[off++] = '\0';
    }
    kv->offs[n] = off;
    kv->arr_n = n;
    return CS_OK;
}

static const char *gguf_cstr_at(const void *ctx, uint64_t i, size_t *len) {
    const char *s = ((const char *const *)ctx)[i];
    *len = strlen(s);
    return s;
}

static const char *gguf_kvstr_at(const void *ctx, uint64_t i, size_t *len) {
    return gguf_kv_arr_str((const gguf_kv *)ctx, i, len);
}

cs_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                  uint64_t n) {
    cs_status st = gguf_writer_check_key(key);
    if (st != CS_OK) return st;
    if (n > CS_MAX_ARRAY_ITEMS)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: key '%s': %" PRIu64 " items exceed CS_MAX_ARRAY_ITEMS (%u)",
                          key, n, (unsigned)CS_MAX_ARRAY_ITEMS);
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i])
            return error_fail(CS_ERR_INVALID_ARG,
                              "gguf writer: key '%s': string %" PRIu64 " is NULL", key, i);
    gguf_kv kv = {.type = GGUF_TYPE_ARRAY, .arr_type = GGUF_TYPE_STRING};
    kv.key = mem_strdup(key);
    if (!kv.key) return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    st = gguf_make_str_array(&kv, n, gguf_cstr_at, strs);
    if (st != CS_OK) {
        gguf_kv_clear(&kv);
        return st;
    }
    return gguf_writer_put(w, &kv);
}

cs_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *g, int64_t i) {
    if (i < 0 || i >= g->n_kv)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: key index %" PRId64 " not in 0..%" PRId64, i, g->n_kv - 1);
    const gguf_kv *src = &g->kvs[i];
    cs_status st = CS_OK;
    gguf_kv kv = {.type = src->type, .arr_type = src->arr_type, .arr_n = src->arr_n};
    memcpy(kv.raw, src->raw, sizeof kv.raw);
    kv.key = mem_strdup(src->key);
    if (!kv.key) goto nomem;
    if (src->type == GGUF_TYPE_STRING) {
        kv.str = mem_strndup(src->str, (size_t)src->str_len);
        kv.str_len = src->str_len;
        if (!kv.str) goto nomem;
    } else if (src->type == GGUF_TYPE_ARRAY && src->arr_type == GGUF_TYPE_STRING) {
        st = gguf_make_str_array(&kv, src->arr_n, gguf_kvstr_at, src);
        if (st != CS_OK) goto fail;
    } else if (src->type == GGUF_TYPE_ARRAY) {
        size_t bytes = (size_t)src->arr_n * k_type_size[src->arr_type];
        kv.arr_own = mem_malloc(bytes);
        if (!kv.arr_own) goto nomem;
        if (bytes) memcpy(kv.arr_own, src->arr_data, bytes);
        kv.arr_data = kv.arr_own;
    }
    return gguf_writer_put(w, &kv);
nomem:
    st = error_fail(CS_ERR_NOMEM, "gguf writer: out of memory copying key '%s'", src->key);
fail:
    gguf_kv_clear(&kv);
    return st;
}

cs_status gguf_writer_add_tensor(gguf_writer *w, const char *name, int32_t type, int32_t n_dims,
                                 const int64_t *ne, const void *data, uint64_t nbytes) {
    if (!name || !name[0]) return error_fail(CS_ERR_INVALID_ARG, "gguf writer: empty tensor name");
    size_t len = strlen(name);
    if (len > GGUF_WRITER_MAX_NAME)
        return error_fail(
            CS_ERR_INVALID_ARG,
            "gguf writer: tensor name length %zu exceeds %d (llama.cpp's GGML_MAX_NAME "
            "is 64 with the NUL)",
            len, GGUF_WRITER_MAX_NAME);
    if (n_dims < 1 || n_dims > CS_MAX_DIMS)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: tensor '%s': n_dims %" PRId32 " is not in 1..%d", name,
                          n_dims, CS_MAX_DIMS);
    const type_traits *tr = type_traits_get(type);
    if (!tr)
        return error_fail(CS_ERR_INVALID_ARG, "gguf writer: tensor '%s': unknown type %" PRId32,
                          name, type);
    uint64_t n_elems = 1;
    for (int32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || ne[d] > CS_MAX_TENSOR_DIM ||
            !common_mul_u64(n_elems, (uint64_t)ne[d], &n_elems) ||
            n_elems > (uint64_t)CS_MAX_TENSOR_ELEMS)
            return error_fail(CS_ERR_INVALID_ARG,
                              "gguf writer: tensor '%s': ne[%" PRId32 "] = %" PRId64
                              " out of range (or too many elements)",
                              name, d, ne[d]);
    }
    uint64_t row = 0, expect = 0;
    if (!type_row_size(type, ne[0], &row))
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: tensor '%s': ne[0] = %" PRId64
                          " is not a multiple of the %s block size %" PRId32,
                          name, ne[0], tr->name, tr->blck);
    if (!common_mul_u64(row, n_elems / (uint64_t)ne[0], &expect) || expect != nbytes ||
        nbytes > SIZE_MAX)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: tensor '%s': %" PRIu64 " bytes given, shape needs %" PRIu64,
                          name, nbytes, expect);
    if (nbytes > 0 && !data)
        return error_fail(CS_ERR_INVALID_ARG, "gguf writer: tensor '%s': data is NULL", name);
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return error_fail(CS_ERR_INVALID_ARG, "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_tensors >= CS_MAX_GGUF_TENSORS)
        return error_fail(CS_ERR_INVALID_ARG,
                          "gguf writer: more than CS_MAX_GGUF_TENSORS (%d) tensors",
                          CS_MAX_GGUF_TENSORS);
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        gguf_wtensor *p = mem_realloc(w->tensors, (size_t)cap * sizeof *p);
        if (!p) return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for tensor '%s'", name);
        w->tensors = p;
        w->cap_tensors = cap;
    }
    gguf_wtensor t = {.type = type, .n_dims = n_dims, .nbytes = nbytes};
    for (int d = 0; d < 4; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    t.name = mem_strdup(name);
    t.data = mem_malloc((size_t)nbytes);
    if (!t.name || !t.data) {
        mem_free(t.name);
        mem_free(t.data);
        return error_fail(CS_ERR_NOMEM,
                          "gguf writer: out of memory for tensor '%s' (%" PRIu64 " bytes)", name,
                          nbytes);
    }
    if (nbytes) memcpy(t.data, data, (size_t)nbytes);
    w->tensors[w->n_tensors++] = t;
    return CS_OK;
}

/* ------------------------------------------------------- serialization */

/* Output: a FILE, a buffer of known size, or nothing (counting only). */
typedef struct gguf_sink {
    FILE *f;
    uint8_t *buf;
    uint64_t pos;
    bool failed;
} gguf_sink;

static void sink_put(gguf_sink *s, const void *p, uint64_t n) {
    if (n == 0 || s->failed) return;
    if (s->f) {
        if (fwrite(p, 1, (size_t)n, s->f) != n) s->failed = true;
    } else if (s->buf) {
        memcpy(s->buf + s->pos, p, (size_t)n);
    }
    s->pos += n;
}

static void sink_u32(gguf_sink *s, uint32_t v) {
    uint8_t b[4];
    gguf_store_le(b, v, 4);
    sink_put(s, b, 4);
}

static void sink_u64(gguf_sink *s, uint64_t v) {
    uint8_t b[8];
    gguf_store_le(b, v, 8);
    sink_put(s, b, 8);
}

static void sink_str(gguf_sink *s, const char *p, uint64_t n) {
    sink_u64(s, n);
    sink_put(s, p, n);
}

static void sink_pad(gguf_sink *s, uint64_t align) {
    static const uint8_t zeros[64];
    uint64_t n = (align - s->pos % align) % align;
    while (n > 0) {
        uint64_t k = n < sizeof zeros ? n : sizeof zeros;
        sink_put(s, zeros, k);
        n -= k;
    }
}

static uint64_t gguf_writer_alignment(const gguf_writer *w) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, GGUF_ALIGNMENT_KEY) == 0)
            return gguf_load_le(w->kvs[i].raw, 4); /* validated by gguf_writer_put */
    return GGUF_DEFAULT_ALIGNMENT;
}

/* The whole file. With no tensors the output ends right after the last key
 * (no padding), as gguf-py writes vocab-only files; gen_model.c relies on
 * this to reuse the key section. */
static void gguf_writer_emit(const gguf_writer *w, gguf_sink *s) {
    uint64_t align = gguf_writer_alignment(w);
    sink_put(s, "GGUF", 4);
    sink_u32(s, 3);
    sink_u64(s, (uint64_t)w->n_tensors);
    sink_u64(s, (uint64_t)w->n_kv);
    for (int64_t i = 0; i < w->n_kv; i++) {
        const gguf_kv *kv = &w->kvs[i];
        sink_str(s, kv->key, strlen(kv->key));
        sink_u32(s, (uint32_t)kv->type);
        if (kv->type == GGUF_TYPE_STRING) {
            sink_str(s, kv->str, kv->str_len);
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            sink_u32(s, (uint32_t)kv->arr_type);
            sink_u64(s, kv->arr_n);
            if (kv->arr_type == GGUF_TYPE_STRING) {
                for (uint64_t j = 0; j < kv->arr_n; j++)
                    sink_str(s, kv->blob + kv->offs[j], kv->offs[j + 1] - kv->offs[j] - 1);
            } else {
                sink_put(s, kv->arr_data, kv->arr_n * k_type_size[kv->arr_type]);
            }
        } else {
            sink_put(s, kv->raw, k_type_size[kv->type]);
        }
    }
    uint64_t offset = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        const gguf_wtensor *t = &w->tensors[i];
        sink_str(s, t->name, strlen(t->name));
        sink_u32(s, (uint32_t)t->n_dims);
        for (int32_t d = 0; d < t->n_dims; d++) sink_u64(s, (uint64_t)t->ne[d]);
        sink_u32(s, (uint32_t)t->type);
        sink_u64(s, offset);
        offset += (t->nbytes + align - 1) / align * align;
    }
    if (w->n_tensors == 0) return;
    sink_pad(s, align);
    for (int64_t i = 0; i < w->n_tensors; i++) {
        sink_put(s, w->tensors[i].data, w->tensors[i].nbytes);
        sink_pad(s, align);
    }
}

cs_status gguf_writer_write_file(const gguf_writer *w, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return error_fail(CS_ERR_IO, "gguf writer: cannot create '%s'", path);
    gguf_sink s = {.f = f};
    gguf_writer_emit(w, &s);
    bool ok = !s.failed;
    if (fclose(f) != 0) ok = false;
    if (!ok) return error_fail(CS_ERR_IO, "gguf writer: cannot write '%s'", path);
    return CS_OK;
}

cs_status gguf_writer_write_buffer(const gguf_writer *w, void **out, size_t *size) {
    *out = NULL;
    *size = 0;
    gguf_sink count = {0};
    gguf_writer_emit(w, &count);
    if (count.pos > SIZE_MAX)
        return error_fail(CS_ERR_NOMEM, "gguf writer: %" PRIu64 " bytes do not fit in memory",
                          count.pos);
    uint8_t *buf = mem_malloc((size_t)count.pos);
    if (!buf)
        return error_fail(CS_ERR_NOMEM, "gguf writer: out of memory for %" PRIu64 " bytes",
                          count.pos);
    gguf_sink s = {.buf = buf};
    gguf_writer_emit(w, &s);
    *out = buf;
    *size = (size_t)s.pos;
    return CS_OK;
}
