/* gguf.h: GGUF (v2, v3) parser and writer. Knows the file format and
 * nothing about llamas (model.c does). Every count is checked against the
 * bytes that remain, every size computation is overflow-checked, every
 * tensor's data must lie inside the file, duplicate keys and tensor names
 * are refused, and the caps of cs_limits.h apply. Error messages name the
 * field and the numbers. docs/GGUF.md lists what is accepted. */
#ifndef CS_GGUF_H
#define CS_GGUF_H

#include "common.h"

enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

/* Name of a value type ("uint32", "string", "array"...), "invalid" otherwise. */
const char *gguf_type_name(int32_t type);

typedef struct gguf_file gguf_file;

typedef struct gguf_tensor {
    const char *name; /* NUL-terminated copy */
    int32_t type;     /* ggml type id (types.h); any known type, supported or not */
    int32_t n_dims;   /* 1..CS_MAX_DIMS */
    int64_t ne[4];    /* extents, ne[0] fastest; unused dims are 1 */
    uint64_t offset;  /* relative to the data section */
    uint64_t nbytes;  /* bytes of data */
    const void *data; /* inside the mapping (aligned per general.alignment) */
} gguf_tensor;

/* Map and parse a file. CS_ERR_IO if it cannot be opened or mapped,
 * CS_ERR_FORMAT (message names field and numbers) if malformed. */
cs_status gguf_open(const char *path, gguf_file **out);
/* As gguf_open; use_mmap false reads the whole file into memory instead. */
cs_status gguf_open_ex(const char *path, bool use_mmap, gguf_file **out);
/* Parse a buffer in memory (tests, fuzzing). The buffer must outlive the
 * result; it is not copied. */
cs_status gguf_open_buffer(const void *data, size_t size, gguf_file **out);
void gguf_close(gguf_file *g); /* NULL is a no-op */

uint32_t gguf_version(const gguf_file *g);
uint64_t gguf_alignment(const gguf_file *g);
uint64_t gguf_data_offset(const gguf_file *g); /* file offset of the data section */
uint64_t gguf_file_size(const gguf_file *g);

/* ------------------------------------------------------------ metadata */

int64_t gguf_n_kv(const gguf_file *g);
int64_t gguf_find_key(const gguf_file *g, const char *key); /* index, or -1 */
const char *gguf_kv_key(const gguf_file *g, int64_t i);
int32_t gguf_kv_type(const gguf_file *g, int64_t i);
int32_t gguf_kv_arr_type(const gguf_file *g, int64_t i); /* element type, for arrays */
uint64_t gguf_kv_arr_n(const gguf_file *g, int64_t i);   /* element count, for arrays */

/* Typed getters by key. Each returns CS_OK, or CS_ERR_FORMAT with a message
 * naming the key when it is missing ("missing key 'llama.block_count'") or
 * has another type ("key 'llama.block_count' has type string, expected an
 * integer"). gguf_get_int accepts every integer type and checks that the
 * value fits int64; gguf_get_float accepts float32 and float64. */
cs_status gguf_get_int(const gguf_file *g, const char *key, int64_t *out);
cs_status gguf_get_float(const gguf_file *g, const char *key, double *out);
cs_status gguf_get_bool(const gguf_file *g, const char *key, bool *out);
/* *out points to a NUL-terminated copy owned by g; *len excludes the NUL
 * (strings may hold NUL bytes; len tells the truth). len may be NULL. */
cs_status gguf_get_str(const gguf_file *g, const char *key, const char **out, size_t *len);

/* Arrays. gguf_get_arr gives the element type and count and, for numeric
 * element types, a pointer to the raw little-endian elements inside the
 * mapping (may be unaligned: read with memcpy). For string arrays *data is
 * NULL; use gguf_get_arr_str. */
cs_status gguf_get_arr(const gguf_file *g, const char *key, int32_t *elem_type, uint64_t *n,
                       const void **data);
/* Element i of a string array, by key index (from gguf_find_key).
 * NUL-terminated copy owned by g; len excludes the NUL. */
const char *gguf_get_arr_str(const gguf_file *g, int64_t key_index, uint64_t i, size_t *len);

/* Scalar value of key i as text for printing (numbers, bools, strings
 * quoted and escaped; arrays summarized after max_items). Writes at most
 * size bytes including the NUL; returns buf. */
const char *gguf_kv_to_text(const gguf_file *g, int64_t i, int32_t max_items, char *buf,
                            size_t size);

/* --------------------------------------------------------------- tensors */

int64_t gguf_n_tensors(const gguf_file *g);
const gguf_tensor *gguf_tensor_at(const gguf_file *g, int64_t i);
/* The caller never reads the tensor bytes [p, p + n) again: for a file
 * opened by path, mmap_release gives their pages back; for a caller's
 * buffer, nothing. */
void gguf_release(gguf_file *g, const void *p, size_t n);
/* For bytes copied out of the file: on a mapping, mmap_release_span gives
 * back the pages of the 2 MiB-aligned span around them, which other
 * tensors may share (read from the file again if needed); nothing for a
 * heap copy or a caller's buffer. */
void gguf_release_span(gguf_file *g, const void *p, size_t n);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name); /* NULL if absent */

/* ---------------------------------------------------------------- writer */

typedef struct gguf_writer gguf_writer;

cs_status gguf_writer_new(gguf_writer **out); /* version 3, alignment 32 */
void gguf_writer_free(gguf_writer *w);

/* Setters copy their arguments. Setting an existing key replaces it. */
cs_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
cs_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
cs_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
cs_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
cs_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
cs_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* Numeric array of n elements of elem_type, raw little-endian bytes. */
cs_status gguf_writer_set_arr(gguf_writer *w, const char *key, int32_t elem_type, const void *data,
                              uint64_t n);
cs_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                  uint64_t n);
/* Copy key i of g (any type, arrays included) into w. */
cs_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *g, int64_t i);

/* Add a tensor; data (nbytes, must equal the size implied by type and
 * shape) is copied. */
cs_status gguf_writer_add_tensor(gguf_writer *w, const char *name, int32_t type, int32_t n_dims,
                                 const int64_t *ne, const void *data, uint64_t nbytes);

/* Serialize: to a file, or to a malloc'd buffer (*out freed with mem_free). */
cs_status gguf_writer_write_file(const gguf_writer *w, const char *path);
cs_status gguf_writer_write_buffer(const gguf_writer *w, void **out, size_t *size);

#endif /* CS_GGUF_H */
