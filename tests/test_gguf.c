/* test_gguf.c: the GGUF reader and writer, cs_gguf_describe, cs_gen_model_*.
 *
 * (a) Valid files: every GGUF in shared/models and the bundled model, with
 *     counts and key values taken from shared/models/README.md and from an
 *     independent Python parse of the files (struct.unpack; numbers quoted
 *     below), a writer round trip of every value type, and the generated
 *     tiny model.
 * (b) Handcrafted corrupt files, built byte by byte in memory. Each must give
 *     CS_ERR_FORMAT and a cs_last_error() starting "gguf: " that contains the
 *     listed text (the field or cap at fault). Each is parsed from a buffer
 *     of exactly its size, so ASan catches any read past the end.
 *
 *   #  case                      what is wrong                               message contains
 *   1  empty                     0 bytes                                     "magic"
 *   2  bad_magic                 "GGUG"                                      "bad magic"
 *   3  version_0                 version 0                                   "version 0"
 *   4  version_1                 version 1 (32-bit counts)                   "version 1"
 *   5  version_4                 version 4                                   "version 4"
 *   6  big_endian                version bytes 00 00 00 03                   "big-endian"
 *   7  trunc_magic               2 bytes                                     "magic"
 *   8  trunc_version             cut inside the version                      "version"
 *   9  trunc_n_tensors           cut inside n_tensors                        "n_tensors"
 *  10  trunc_n_kv                cut inside n_kv                             "n_kv"
 *  11  trunc_key_len             cut inside key #1's length                  "key #1: key length"
 *  12  trunc_key_bytes           cut inside key #1's bytes                   "key #1: key bytes"
 *  13  trunc_value_type          cut inside a value type                     "value type"
 *  14  trunc_value               cut inside a uint32 value                   "uint32 value"
 *  15  trunc_str_len             cut inside a string length                  "string length"
 *  16  trunc_str_bytes           cut inside string bytes                     "string bytes"
 *  17  trunc_arr_type            cut inside an array element type            "array element type"
 *  18  trunc_arr_count           cut inside an array count                   "array count"
 *  19  trunc_arr_item_len        cut inside an array string's length         "length of string 1"
 *  20  trunc_arr_item_bytes      cut inside an array string's bytes          "bytes of string 1"
 *  21  trunc_tensor_name_len     cut inside a tensor name length             "name length"
 *  22  trunc_tensor_name         cut inside a tensor name                    "name bytes"
 *  23  trunc_n_dims              cut inside n_dims                           "n_dims"
 *  24  trunc_dims                cut inside ne[1]                            "ne[1]"
 *  25  trunc_tensor_type         cut inside the tensor type                  "type"
 *  26  trunc_tensor_offset       cut inside the tensor offset                "offset"
 *  27  trunc_data                cut inside the tensor data                  "exceeds file size"
 *  28  huge_n_kv                 n_kv 2^60                                   "CS_MAX_GGUF_KV"
 *  29  huge_n_tensors            n_tensors 2^60                              "CS_MAX_GGUF_TENSORS"
 *  30  n_kv_beyond_file          n_kv 60000 in a 60-byte file                "n_kv 60000"
 *  31  huge_string_len           string length 2^63                          "CS_MAX_STRING_BYTES"
 *  32  string_over_cap           string length CS_MAX_STRING_BYTES + 1       "CS_MAX_STRING_BYTES"
 *  33  huge_array_count          array count 2^62                            "CS_MAX_ARRAY_ITEMS"
 *  34  array_beyond_file         10^6 uint32 items in a small file           "array count 1000000"
 *  35  array_str_len_huge        string 1 of an array has length 2^63        "string 1 length"
 *  36  bad_value_type            value type 13                               "invalid value type
 * 13" 37  bad_value_type_max        value type 0xffffffff                       "invalid value
 * type" 38  bad_array_type            array element type 13                       "element type 13"
 *  39  nested_array              array of arrays                             "nested"
 *  40  bad_bool                  bool value 2                                "bool value 2"
 *  41  bad_bool_array            bool array element 7                        "bool element 1"
 *  42  n_dims_5                  5 dimensions                                "n_dims 5"
 *  43  n_dims_0                  0 dimensions                                "n_dims 0"
 *  44  zero_extent               ne[1] = 0                                   "ne[1] is 0"
 *  45  negative_extent           ne[0] = -1 as uint64                        "CS_MAX_TENSOR_DIM"
 *  46  extent_product_overflow   three extents of 2^40                       "CS_MAX_TENSOR_ELEMS"
 *  47  ne0_not_block_multiple    q8_0 with ne[0] = 33                        "block size 32"
 *  48  unknown_type              tensor type 99                              "unknown type 99"
 *  49  removed_type              tensor type 4 (q4_2)                        "q4_2"
 *  50  huge_type                 tensor type 2^31                            "unknown type"
 *  51  misaligned_offset         offset 4                                    "alignment 32"
 *  52  misaligned_offset_64      offset 32 with general.alignment 64         "alignment 64"
 *  53  offset_out_of_file        offset 4096 in a 256-byte file               "exceeds file size"
 *  54  offset_size_overflow      offset 2^64 - 32                            "overflows"
 *  55  duplicate_key             the same key twice                          "duplicate key"
 *  56  duplicate_tensor          the same tensor name twice                  "duplicate tensor
 * name" 57  alignment_zero            general.alignment 0 "general.alignment" 58 alignment_not_pow2
 * general.alignment 48                        "general.alignment" 59  alignment_too_big
 * general.alignment 2^17                      "CS_MAX_ALIGNMENT" 60  alignment_string
 * general.alignment is a string               "type string" 61  alignment_float general.alignment
 * is a float32              "type float32" 62  key_too_long              key of CS_MAX_KEY_BYTES +
 * 1 bytes           "CS_MAX_KEY_BYTES" 63  empty_key                 key of length 0 "is empty" 64
 * key_with_nul              key "a\0b"                                  "NUL" 65
 * tensor_name_too_long      name of CS_MAX_NAME_BYTES + 1 bytes         "CS_MAX_NAME_BYTES" 66
 * empty_tensor_name         name of length 0                            "empty name"
 *  67-69 removed_type_31/32/33 tensor types 31-33 (q4_0_4_4, q4_0_4_8, q4_0_8_8, ggml's
 *        removed repacked layouts): named, and "re-quantize this file"
 *
 * (c) 1000 deterministic mutations of the bundled model (truncations at
 *     random lengths, random byte flips, both): gguf_open_buffer never
 *     crashes or leaks and answers CS_OK or CS_ERR_FORMAT; every 10th
 *     mutation also goes through cs_model_load from a temporary file. */
#include "test.h"

#include <math.h>

#include "cs_limits.h"
#include "fixtures/tiny_model.h"
#include "gguf.h"
#include "kernels/kernels.h"
#include "types.h"

/* Sample standard deviation of generated weights vs 1/sqrt(fan_in). */
#define TOL_GEN_STD_REL 0.05
/* Q8_0 round trip: at most half a quantization step of the block's amax/127,
 * plus f16 rounding of the scale. */
#define TOL_Q8_0_REL_STEP 0.51
#define N_MUTATIONS       1000
#define MUTATION_SEED     0x5eedf00dULL

/* ============================================================ helpers */

static uint64_t test_rng(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Whole file into a malloc'd buffer; NULL if unreadable. */
static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* ------------------------------------------------------ byte builder */

typedef struct bb {
    uint8_t *p;
    size_t n;
    size_t cap;
} bb;

static void bb_put(bb *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bb_le(bb *b, uint64_t v, int n) {
    uint8_t t[8];
    for (int i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, t, (size_t)n);
}

static void bb_u8(bb *b, uint8_t v) {
    bb_le(b, v, 1);
}
static void bb_u32(bb *b, uint32_t v) {
    bb_le(b, v, 4);
}
static void bb_u64(bb *b, uint64_t v) {
    bb_le(b, v, 8);
}

static void bb_strn(bb *b, const void *s, uint64_t n) {
    bb_u64(b, n);
    bb_put(b, s, (size_t)n);
}

static void bb_str(bb *b, const char *s) {
    bb_strn(b, s, strlen(s));
}

static void bb_zeros(bb *b, size_t n) {
    for (size_t i = 0; i < n; i++) bb_u8(b, 0);
}

static void bb_pad(bb *b, size_t align) {
    while (b->n % align) bb_u8(b, 0);
}

static void bb_header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(bb *b, const char *key, uint32_t v) {
    bb_str(b, key);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u32(b, v);
}

static void bb_kv_str(bb *b, const char *key, const char *v) {
    bb_str(b, key);
    bb_u32(b, GGUF_TYPE_STRING);
    bb_str(b, v);
}

static void bb_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                      uint64_t offset) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

/* A file with one 1-D f32 tensor "w" of 8 elements at `offset`, a 100-byte
 * string key first (so that later truncations are past the count check),
 * and alignment `align` (0: no general.alignment key). */
static void bb_simple(bb *b, uint64_t offset, uint32_t type, uint64_t ne0, uint32_t align) {
    bb_header(b, 3, 1, align ? 2 : 1);
    char pad[101];
    memset(pad, 'x', 100);
    pad[100] = '\0';
    bb_kv_str(b, "general.name", pad);
    if (align) bb_kv_u32(b, "general.alignment", align);
    uint64_t ne[1] = {ne0};
    bb_tensor(b, "w", 1, ne, type, offset);
    bb_pad(b, align ? align : 32);
    bb_zeros(b, 64);
}

/* The mini file that truncation cases cut, with marks at the start of each
 * field. It is valid as built (test_gguf_mini_file_is_valid). */
enum {
    MK_VERSION,
    MK_N_TENSORS,
    MK_N_KV,
    MK_KV1_KEYLEN,
    MK_KV1_KEY,
    MK_KV1_TYPE,
    MK_KV1_VAL,
    MK_KV2_STRLEN,
    MK_KV2_STR,
    MK_KV3_ARRTYPE,
    MK_KV3_ARRN,
    MK_KV3_ITEM1_LEN,
    MK_KV3_ITEM1_BYTES,
    MK_T_NAMELEN,
    MK_T_NAME,
    MK_T_NDIMS,
    MK_T_NE1,
    MK_T_TYPE,
    MK_T_OFFSET,
    MK_DATA,
    MK_COUNT
};

static void build_mini(bb *b, size_t *mk) {
    size_t dummy[MK_COUNT];
    if (!mk) mk = dummy;
    bb_put(b, "GGUF", 4);
    mk[MK_VERSION] = b->n;
    bb_u32(b, 3);
    mk[MK_N_TENSORS] = b->n;
    bb_u64(b, 1);
    mk[MK_N_KV] = b->n;
    bb_u64(b, 4);
    char pad[101];
    memset(pad, 'x', 100);
    pad[100] = '\0';
    bb_kv_str(b, "general.name", pad); /* 132 bytes: later cuts pass the count check */
    mk[MK_KV1_KEYLEN] = b->n;
    bb_u64(b, 8);
    mk[MK_KV1_KEY] = b->n;
    bb_put(b, "test.u32", 8);
    mk[MK_KV1_TYPE] = b->n;
    bb_u32(b, GGUF_TYPE_UINT32);
    mk[MK_KV1_VAL] = b->n;
    bb_u32(b, 7);
    bb_str(b, "test.str");
    bb_u32(b, GGUF_TYPE_STRING);
    mk[MK_KV2_STRLEN] = b->n;
    bb_u64(b, 5);
    mk[MK_KV2_STR] = b->n;
    bb_put(b, "hello", 5);
    bb_str(b, "test.arr");
    bb_u32(b, GGUF_TYPE_ARRAY);
    mk[MK_KV3_ARRTYPE] = b->n;
    bb_u32(b, GGUF_TYPE_STRING);
    mk[MK_KV3_ARRN] = b->n;
    bb_u64(b, 2);
    bb_str(b, "abcdefghij"); /* long enough that cutting item 1 passes the count check */
    mk[MK_KV3_ITEM1_LEN] = b->n;
    bb_u64(b, 4);
    mk[MK_KV3_ITEM1_BYTES] = b->n;
    bb_put(b, "cdef", 4);
    mk[MK_T_NAMELEN] = b->n;
    bb_u64(b, 6);
    mk[MK_T_NAME] = b->n;
    bb_put(b, "weight", 6);
    mk[MK_T_NDIMS] = b->n;
    bb_u32(b, 2);
    bb_u64(b, 32);
    mk[MK_T_NE1] = b->n;
    bb_u64(b, 2);
    mk[MK_T_TYPE] = b->n;
    bb_u32(b, CS_TYPE_F32);
    mk[MK_T_OFFSET] = b->n;
    bb_u64(b, 0);
    bb_pad(b, 32);
    mk[MK_DATA] = b->n;
    for (int i = 0; i < 64; i++) {
        float f = (float)i;
        bb_put(b, &f, 4);
    }
}

/* Parse bytes from a buffer of exactly their size. */
static cs_status open_exact(const uint8_t *p, size_t n, gguf_file **g) {
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n) memcpy(copy, p, n);
    cs_status st = gguf_open_buffer(n ? copy : NULL, n, g);
    if (st == CS_OK) {
        gguf_close(*g);
        *g = NULL;
    }
    free(copy);
    return st;
}

/* ================================================ (b) corrupt files */

#define TRUNC_CASE(fn, mark, delta)                                                                \
    static void fn(bb *b) {                                                                        \
        size_t mk[MK_COUNT];                                                                       \
        build_mini(b, mk);                                                                         \
        b->n = mk[mark] + (delta);                                                                 \
    }

static void c_empty(bb *b) {
    (void)b;
}
static void c_bad_magic(bb *b) {
    build_mini(b, NULL);
    b->p[3] = 'G';
}
static void c_version_0(bb *b) {
    bb_header(b, 0, 0, 0);
}
static void c_version_1(bb *b) {
    bb_header(b, 1, 0, 0);
}
static void c_version_4(bb *b) {
    bb_header(b, 4, 0, 0);
}
static void c_big_endian(bb *b) {
    build_mini(b, NULL);
    b->p[4] = 0, b->p[5] = 0, b->p[6] = 0, b->p[7] = 3;
}
static void c_trunc_magic(bb *b) {
    bb_put(b, "GG", 2);
}
TRUNC_CASE(c_trunc_version, MK_VERSION, 2)
TRUNC_CASE(c_trunc_n_tensors, MK_N_TENSORS, 5)
TRUNC_CASE(c_trunc_n_kv, MK_N_KV, 7)
TRUNC_CASE(c_trunc_key_len, MK_KV1_KEYLEN, 3)
TRUNC_CASE(c_trunc_key_bytes, MK_KV1_KEY, 4)
TRUNC_CASE(c_trunc_value_type, MK_KV1_TYPE, 1)
TRUNC_CASE(c_trunc_value, MK_KV1_VAL, 2)
TRUNC_CASE(c_trunc_str_len, MK_KV2_STRLEN, 6)
TRUNC_CASE(c_trunc_str_bytes, MK_KV2_STR, 3)
TRUNC_CASE(c_trunc_arr_type, MK_KV3_ARRTYPE, 2)
TRUNC_CASE(c_trunc_arr_count, MK_KV3_ARRN, 4)
TRUNC_CASE(c_trunc_arr_item_len, MK_KV3_ITEM1_LEN, 1)
TRUNC_CASE(c_trunc_arr_item_bytes, MK_KV3_ITEM1_BYTES, 2)
TRUNC_CASE(c_trunc_tensor_name_len, MK_T_NAMELEN, 7)
TRUNC_CASE(c_trunc_tensor_name, MK_T_NAME, 3)
TRUNC_CASE(c_trunc_n_dims, MK_T_NDIMS, 3)
TRUNC_CASE(c_trunc_dims, MK_T_NE1, 5)
TRUNC_CASE(c_trunc_tensor_type, MK_T_TYPE, 1)
TRUNC_CASE(c_trunc_tensor_offset, MK_T_OFFSET, 4)
TRUNC_CASE(c_trunc_data, MK_DATA, 100)

static void c_huge_n_kv(bb *b) {
    bb_header(b, 3, 0, (uint64_t)1 << 60);
}
static void c_huge_n_tensors(bb *b) {
    bb_header(b, 3, (uint64_t)1 << 60, 0);
}
static void c_n_kv_beyond_file(bb *b) {
    bb_header(b, 3, 0, 60000);
    bb_zeros(b, 36);
}

static void bb_one_string_kv(bb *b, uint64_t len) {
    bb_header(b, 3, 0, 1);
    bb_str(b, "k");
    bb_u32(b, GGUF_TYPE_STRING);
    bb_u64(b, len);
    bb_zeros(b, 16);
}
static void c_huge_string_len(bb *b) {
    bb_one_string_kv(b, (uint64_t)1 << 63);
}
static void c_string_over_cap(bb *b) {
    bb_one_string_kv(b, (uint64_t)CS_MAX_STRING_BYTES + 1);
}

static void bb_array_head(bb *b, uint32_t elem_type, uint64_t n) {
    bb_header(b, 3, 0, 1);
    bb_str(b, "arr");
    bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u32(b, elem_type);
    bb_u64(b, n);
}
static void c_huge_array_count(bb *b) {
    bb_array_head(b, GGUF_TYPE_UINT8, (uint64_t)1 << 62);
    bb_zeros(b, 64);
}
static void c_array_beyond_file(bb *b) {
    bb_array_head(b, GGUF_TYPE_UINT32, 1000000);
    bb_zeros(b, 64);
}
static void c_array_str_len_huge(bb *b) {
    bb_array_head(b, GGUF_TYPE_STRING, 2);
    bb_str(b, "ok");
    bb_u64(b, (uint64_t)1 << 63);
    bb_zeros(b, 16);
}
static void c_bad_value_type(bb *b) {
    bb_header(b, 3, 0, 1);
    bb_str(b, "k");
    bb_u32(b, 13);
    bb_zeros(b, 16);
}
static void c_bad_value_type_max(bb *b) {
    bb_header(b, 3, 0, 1);
    bb_str(b, "k");
    bb_u32(b, 0xffffffffu);
    bb_zeros(b, 16);
}
static void c_bad_array_type(bb *b) {
    bb_array_head(b, 13, 1);
    bb_zeros(b, 16);
}
static void c_nested_array(bb *b) {
    bb_array_head(b, GGUF_TYPE_ARRAY, 1);
    bb_u32(b, GGUF_TYPE_UINT8);
    bb_u64(b, 1);
    bb_u8(b, 1);
    bb_zeros(b, 16);
}
static void c_bad_bool(bb *b) {
    bb_header(b, 3, 0, 1);
    bb_str(b, "flag");
    bb_u32(b, GGUF_TYPE_BOOL);
    bb_u8(b, 2);
}
static void c_bad_bool_array(bb *b) {
    bb_array_head(b, GGUF_TYPE_BOOL, 3);
    bb_u8(b, 1);
    bb_u8(b, 7);
    bb_u8(b, 0);
}

/* One tensor with the given shape/type/offset after a padding key. */
static void bb_one_tensor(bb *b, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                          uint64_t offset) {
    bb_header(b, 3, 1, 1);
    char pad[101];
    memset(pad, 'x', 100);
    pad[100] = '\0';
    bb_kv_str(b, "general.name", pad);
    bb_tensor(b, "t", n_dims, ne, type, offset);
    bb_pad(b, 32);
    bb_zeros(b, 128);
}
static void c_n_dims_5(bb *b) {
    uint64_t ne[5] = {1, 1, 1, 1, 1};
    bb_one_tensor(b, 5, ne, CS_TYPE_F32, 0);
}
static void c_n_dims_0(bb *b) {
    bb_one_tensor(b, 0, NULL, CS_TYPE_F32, 0);
}
static void c_zero_extent(bb *b) {
    uint64_t ne[2] = {4, 0};
    bb_one_tensor(b, 2, ne, CS_TYPE_F32, 0);
}
static void c_negative_extent(bb *b) {
    uint64_t ne[1] = {UINT64_MAX};
    bb_one_tensor(b, 1, ne, CS_TYPE_F32, 0);
}
static void c_extent_product_overflow(bb *b) {
    uint64_t big = (uint64_t)1 << 40;
    uint64_t ne[3] = {big, big, big};
    bb_one_tensor(b, 3, ne, CS_TYPE_F32, 0);
}
static void c_ne0_not_block_multiple(bb *b) {
    uint64_t ne[1] = {33};
    bb_one_tensor(b, 1, ne, CS_TYPE_Q8_0, 0);
}
static void c_unknown_type(bb *b) {
    bb_simple(b, 0, 99, 8, 0);
}
static void c_removed_type(bb *b) {
    bb_simple(b, 0, 4, 32, 0);
}
static void c_removed_type_31(bb *b) {
    bb_simple(b, 0, 31, 32, 0);
}
static void c_removed_type_32(bb *b) {
    bb_simple(b, 0, 32, 32, 0);
}
static void c_removed_type_33(bb *b) {
    bb_simple(b, 0, 33, 32, 0);
}
static void c_huge_type(bb *b) {
    bb_simple(b, 0, 0x80000000u, 8, 0);
}
static void c_misaligned_offset(bb *b) {
    bb_simple(b, 4, CS_TYPE_F32, 8, 0);
}
static void c_misaligned_offset_64(bb *b) {
    bb_simple(b, 32, CS_TYPE_F32, 8, 64);
}
static void c_offset_out_of_file(bb *b) {
    bb_simple(b, 4096, CS_TYPE_F32, 8, 0);
}
static void c_offset_size_overflow(bb *b) {
    bb_simple(b, UINT64_MAX - 31, CS_TYPE_F32, 8, 0);
}
static void c_duplicate_key(bb *b) {
    bb_header(b, 3, 0, 3);
    bb_kv_u32(b, "a.b", 1);
    bb_kv_u32(b, "c", 2);
    bb_kv_u32(b, "a.b", 3);
}
static void c_duplicate_tensor(bb *b) {
    uint64_t ne[1] = {8};
    bb_header(b, 3, 2, 0);
    bb_tensor(b, "w", 1, ne, CS_TYPE_F32, 0);
    bb_tensor(b, "w", 1, ne, CS_TYPE_F32, 32);
    bb_pad(b, 32);
    bb_zeros(b, 64);
}
/* general.alignment of the given type and raw value, then a tensor at 0. */
static void bb_alignment(bb *b, uint32_t type, uint64_t value, int value_bytes) {
    uint64_t ne[1] = {8};
    bb_header(b, 3, 1, 1);
    bb_str(b, "general.alignment");
    bb_u32(b, type);
    if (type == GGUF_TYPE_STRING)
        bb_str(b, "32");
    else
        bb_le(b, value, value_bytes);
    bb_tensor(b, "w", 1, ne, CS_TYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 64);
}
static void c_alignment_zero(bb *b) {
    bb_alignment(b, GGUF_TYPE_UINT32, 0, 4);
}
static void c_alignment_not_pow2(bb *b) {
    bb_alignment(b, GGUF_TYPE_UINT32, 48, 4);
}
static void c_alignment_too_big(bb *b) {
    bb_alignment(b, GGUF_TYPE_UINT32, 1u << 17, 4);
}
static void c_alignment_string(bb *b) {
    bb_alignment(b, GGUF_TYPE_STRING, 0, 0);
}
static void c_alignment_float(bb *b) {
    float f = 32.0f;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    bb_alignment(b, GGUF_TYPE_FLOAT32, bits, 4);
}
static void c_key_too_long(bb *b) {
    bb_header(b, 3, 0, 1);
    bb_u64(b, (uint64_t)CS_MAX_KEY_BYTES + 1);
    bb_zeros(b, (size_t)CS_MAX_KEY_BYTES + 1 + 64);
    memset(b->p + 32, 'k', (size_t)CS_MAX_KEY_BYTES + 1);
}
static void c_empty_key(bb *b) {
    bb_header(b, 3, 0, 1);
    bb_u64(b, 0);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u32(b, 1);
}
static void c_key_with_nul(bb *b) {
    bb_header(b, 3, 0, 1);
    bb_strn(b, "a\0b", 3);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u32(b, 1);
}
static void c_tensor_name_too_long(bb *b) {
    char name[CS_MAX_NAME_BYTES + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    uint64_t ne[1] = {8};
    bb_header(b, 3, 1, 0);
    bb_tensor(b, name, 1, ne, CS_TYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 64);
}
static void c_empty_tensor_name(bb *b) {
    uint64_t ne[1] = {8};
    bb_header(b, 3, 1, 0);
    bb_tensor(b, "", 1, ne, CS_TYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 64);
}

typedef struct corrupt_case {
    const char *name;
    void (*build)(bb *b);
    const char *needle; /* must appear in cs_last_error() */
} corrupt_case;

static const corrupt_case k_corrupt[] = {
    {"empty", c_empty, "magic"},
    {"bad_magic", c_bad_magic, "bad magic"},
    {"version_0", c_version_0, "version 0"},
    {"version_1", c_version_1, "version 1"},
    {"version_4", c_version_4, "version 4"},
    {"big_endian", c_big_endian, "big-endian"},
    {"trunc_magic", c_trunc_magic, "magic"},
    {"trunc_version", c_trunc_version, "version"},
    {"trunc_n_tensors", c_trunc_n_tensors, "n_tensors"},
    {"trunc_n_kv", c_trunc_n_kv, "n_kv"},
    {"trunc_key_len", c_trunc_key_len, "key #1: key length"},
    {"trunc_key_bytes", c_trunc_key_bytes, "key #1: key bytes"},
    {"trunc_value_type", c_trunc_value_type, "'test.u32': value type"},
    {"trunc_value", c_trunc_value, "'test.u32': uint32 value"},
    {"trunc_str_len", c_trunc_str_len, "'test.str': string length"},
    {"trunc_str_bytes", c_trunc_str_bytes, "'test.str': string bytes"},
    {"trunc_arr_type", c_trunc_arr_type, "'test.arr': array element type"},
    {"trunc_arr_count", c_trunc_arr_count, "'test.arr': array count"},
    {"trunc_arr_item_len", c_trunc_arr_item_len, "length of string 1"},
    {"trunc_arr_item_bytes", c_trunc_arr_item_bytes, "bytes of string 1"},
    {"trunc_tensor_name_len", c_trunc_tensor_name_len, "tensor #0: name length"},
    {"trunc_tensor_name", c_trunc_tensor_name, "tensor #0: name bytes"},
    {"trunc_n_dims", c_trunc_n_dims, "'weight': n_dims"},
    {"trunc_dims", c_trunc_dims, "'weight': ne[1]"},
    {"trunc_tensor_type", c_trunc_tensor_type, "'weight': type"},
    {"trunc_tensor_offset", c_trunc_tensor_offset, "'weight': offset"},
    {"trunc_data", c_trunc_data, "exceeds file size"},
    {"huge_n_kv", c_huge_n_kv, "CS_MAX_GGUF_KV"},
    {"huge_n_tensors", c_huge_n_tensors, "CS_MAX_GGUF_TENSORS"},
    {"n_kv_beyond_file", c_n_kv_beyond_file, "n_kv 60000"},
    {"huge_string_len", c_huge_string_len, "CS_MAX_STRING_BYTES"},
    {"string_over_cap", c_string_over_cap, "CS_MAX_STRING_BYTES"},
    {"huge_array_count", c_huge_array_count, "CS_MAX_ARRAY_ITEMS"},
    {"array_beyond_file", c_array_beyond_file, "array count 1000000"},
    {"array_str_len_huge", c_array_str_len_huge, "string 1 length"},
    {"bad_value_type", c_bad_value_type, "invalid value type 13"},
    {"bad_value_type_max", c_bad_value_type_max, "invalid value type 4294967295"},
    {"bad_array_type", c_bad_array_type, "element type 13"},
    {"nested_array", c_nested_array, "nested"},
    {"bad_bool", c_bad_bool, "bool value 2"},
    {"bad_bool_array", c_bad_bool_array, "bool element 1"},
    {"n_dims_5", c_n_dims_5, "n_dims 5"},
    {"n_dims_0", c_n_dims_0, "n_dims 0"},
    {"zero_extent", c_zero_extent, "ne[1] is 0"},
    {"negative_extent", c_negative_extent, "CS_MAX_TENSOR_DIM"},
    {"extent_product_overflow", c_extent_product_overflow, "CS_MAX_TENSOR_ELEMS"},
    {"ne0_not_block_multiple", c_ne0_not_block_multiple, "q8_0 block size 32"},
    {"unknown_type", c_unknown_type, "unknown type 99"},
    {"removed_type", c_removed_type, "q4_2"},
    {"huge_type", c_huge_type, "unknown type 2147483648"},
    {"misaligned_offset", c_misaligned_offset, "alignment 32"},
    {"misaligned_offset_64", c_misaligned_offset_64, "alignment 64"},
    {"offset_out_of_file", c_offset_out_of_file, "exceeds file size"},
    {"offset_size_overflow", c_offset_size_overflow, "overflows"},
    {"duplicate_key", c_duplicate_key, "duplicate key 'a.b'"},
    {"duplicate_tensor", c_duplicate_tensor, "duplicate tensor name 'w'"},
    {"alignment_zero", c_alignment_zero, "general.alignment"},
    {"alignment_not_pow2", c_alignment_not_pow2, "general.alignment' = 48"},
    {"alignment_too_big", c_alignment_too_big, "CS_MAX_ALIGNMENT"},
    {"alignment_string", c_alignment_string, "type string"},
    {"alignment_float", c_alignment_float, "type float32"},
    {"key_too_long", c_key_too_long, "CS_MAX_KEY_BYTES"},
    {"empty_key", c_empty_key, "is empty"},
    {"key_with_nul", c_key_with_nul, "NUL"},
    {"tensor_name_too_long", c_tensor_name_too_long, "CS_MAX_NAME_BYTES"},
    {"empty_tensor_name", c_empty_tensor_name, "empty name"},
    {"removed_type_31", c_removed_type_31, "type 31 (q4_0_4_4) was removed from ggml; re-quantize"},
    {"removed_type_32", c_removed_type_32, "type 32 (q4_0_4_8) was removed from ggml; re-quantize"},
    {"removed_type_33", c_removed_type_33, "type 33 (q4_0_8_8) was removed from ggml; re-quantize"},
};

static void test_gguf_corrupt_files_refused(void **state) {
    (void)state;
    size_t n_cases = sizeof k_corrupt / sizeof k_corrupt[0];
    assert_true(n_cases >= 30);
    for (size_t i = 0; i < n_cases; i++) {
        bb b = {0};
        k_corrupt[i].build(&b);
        gguf_file *g = (gguf_file *)&b; /* must be reset to NULL */
        cs_status st = open_exact(b.p, b.n, &g);
        const char *err = cs_last_error();
        if (st != CS_ERR_FORMAT || g != NULL || strncmp(err, "gguf: ", 6) != 0 ||
            !strstr(err, k_corrupt[i].needle))
            fail_msg("corrupt case '%s': status %s, message \"%s\", expected CS_ERR_FORMAT and "
                     "\"%s\"",
                     k_corrupt[i].name, cs_status_str(st), err, k_corrupt[i].needle);
        if (getenv("CS_TEST_VERBOSE")) printf("  %-24s %s\n", k_corrupt[i].name, err);
        free(b.p);
    }
}

static void test_gguf_mini_file_is_valid(void **state) {
    (void)state;
    bb b = {0};
    build_mini(&b, NULL);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open_buffer(b.p, b.n, &g), CS_OK);
    assert_int_equal(gguf_n_kv(g), 4);
    assert_int_equal(gguf_n_tensors(g), 1);
    assert_int_equal(gguf_data_offset(g) % 32, 0);
    int64_t v = 0;
    assert_int_equal(gguf_get_int(g, "test.u32", &v), CS_OK);
    assert_int_equal(v, 7);
    int64_t ia = gguf_find_key(g, "test.arr");
    assert_true(ia >= 0);
    size_t len = 0;
    assert_string_equal(gguf_get_arr_str(g, ia, 1, &len), "cdef");
    assert_int_equal(len, 4);
    assert_null(gguf_get_arr_str(g, ia, 2, &len));
    const gguf_tensor *t = gguf_find_tensor(g, "weight");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 32 * 2 * 4);
    float f;
    memcpy(&f, (const uint8_t *)t->data + 4 * 63, 4);
    assert_true(f == 63.0f);
    gguf_close(g);

    /* The same bytes as v2 parse the same way. */
    b.p[4] = 2;
    assert_int_equal(gguf_open_buffer(b.p, b.n, &g), CS_OK);
    assert_int_equal(gguf_version(g), 2);
    gguf_close(g);
    free(b.p);
}

/* Every prefix of the mini file: never a crash, CS_OK only for the whole. */
static void test_gguf_every_truncation_refused(void **state) {
    (void)state;
    bb b = {0};
    size_t mk[MK_COUNT];
    build_mini(&b, mk);
    size_t data_end = mk[MK_DATA] + 256;
    for (size_t n = 0; n < b.n; n++) {
        gguf_file *g = NULL;
        cs_status st = open_exact(b.p, n, &g);
        if (n < data_end) {
            if (st != CS_ERR_FORMAT) fail_msg("prefix of %zu bytes: %s", n, cs_status_str(st));
            assert_true(strncmp(cs_last_error(), "gguf: ", 6) == 0);
        }
    }
    free(b.p);
}

/* =================================================== (a) valid files */

typedef struct known_file {
    const char *rel; /* under shared/ */
    uint32_t version;
    int64_t n_kv;
    int64_t n_tensors;
    uint64_t data_offset; /* from an independent Python parse */
    uint64_t size;        /* README.md */
    uint64_t n_tokens;
} known_file;

static const known_file k_known[] = {
    {"models/ggml-vocab-gpt-2.gguf", 3, 16, 0, 1766816, 1766807, 50257},
    {"models/ggml-vocab-llama-spm.gguf", 3, 22, 0, 723872, 723869, 32000},
    {"models/stories260K-f16.gguf", 3, 21, 48, 14240, 601248, 512},
    {"models/stories260K-f32.gguf", 3, 19, 48, 14176, 1185376, 512},
    {"models/stories260K-q4_0.gguf", 3, 20, 48, 14208, 370688, 512},
    {"models/stories260K-q8_0.gguf", 3, 20, 48, 14208, 489216, 512},
};

/* Structural checks that hold for any valid file. */
static void check_consistent(const gguf_file *g) {
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *key = gguf_kv_key(g, i);
        assert_int_equal(gguf_find_key(g, key), i);
    }
    uint64_t base_data = gguf_data_offset(g);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        assert_ptr_equal(gguf_find_tensor(g, t->name), t);
        assert_int_equal(t->offset % gguf_alignment(g), 0);
        assert_true(base_data + t->offset + t->nbytes <= gguf_file_size(g));
        uint64_t row = 0;
        assert_true(type_row_size(t->type, t->ne[0], &row));
        assert_int_equal(t->nbytes, row * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]));
    }
}

static void test_gguf_shared_models(void **state) {
    (void)state;
    int n_found = 0;
    for (size_t i = 0; i < sizeof k_known / sizeof k_known[0]; i++) {
        char path[4096];
        if (!test_shared_path(k_known[i].rel, path, sizeof path)) continue;
        n_found++;
        gguf_file *g = NULL;
        if (gguf_open(path, &g) != CS_OK) fail_msg("%s: %s", path, cs_last_error());
        assert_int_equal(gguf_version(g), k_known[i].version);
        assert_int_equal(gguf_n_kv(g), k_known[i].n_kv);
        assert_int_equal(gguf_n_tensors(g), k_known[i].n_tensors);
        assert_int_equal(gguf_data_offset(g), k_known[i].data_offset);
        assert_int_equal(gguf_file_size(g), k_known[i].size);
        assert_int_equal(gguf_alignment(g), 32);
        int32_t et = -1;
        uint64_t n = 0;
        const void *data = (const void *)path;
        assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), CS_OK);
        assert_int_equal(et, GGUF_TYPE_STRING);
        assert_int_equal(n, k_known[i].n_tokens);
        assert_null(data);
        check_consistent(g);
        gguf_close(g);
    }
    if (n_found == 0)
        test_skip(CS_SKIP_REFERENCE, "none of the shared models found in %s", CS_SHARED_DIR);
}

static void test_gguf_stories_values(void **state) {
    (void)state;
    /* Shapes from shared/models/README.md: dim 64, 5 layers, 8 heads, 4 KV
     * heads, FFN 172, 512 tokens, BOS 1, EOS 2, UNK 0. */
    static const struct {
        const char *rel;
        int32_t type_2d; /* token_embd type */
    } files[] = {
        {"models/stories260K-f32.gguf", CS_TYPE_F32},
        {"models/stories260K-f16.gguf", CS_TYPE_F16},
        {"models/stories260K-q8_0.gguf", CS_TYPE_Q8_0},
        {"models/stories260K-q4_0.gguf", CS_TYPE_Q4_0},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char buf[4096];
        const char *path = test_shared_path(files[i].rel, buf, sizeof buf);
        if (!path && i == 0) path = test_bundled_model();
        if (!path) continue;
        gguf_file *g = NULL;
        assert_int_equal(gguf_open(path, &g), CS_OK);
        int64_t v = 0;
        assert_int_equal(gguf_get_int(g, "llama.block_count", &v), CS_OK);
        assert_int_equal(v, 5);
        assert_int_equal(gguf_get_int(g, "llama.embedding_length", &v), CS_OK);
        assert_int_equal(v, 64);
        assert_int_equal(gguf_get_int(g, "llama.attention.head_count", &v), CS_OK);
        assert_int_equal(v, 8);
        assert_int_equal(gguf_get_int(g, "llama.attention.head_count_kv", &v), CS_OK);
        assert_int_equal(v, 4);
        assert_int_equal(gguf_get_int(g, "llama.feed_forward_length", &v), CS_OK);
        assert_int_equal(v, 172);
        assert_int_equal(gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v), CS_OK);
        assert_int_equal(v, 1);
        assert_int_equal(gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v), CS_OK);
        assert_int_equal(v, 2);
        double eps = 0;
        assert_int_equal(gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &eps), CS_OK);
        assert_true(fabs(eps - 1e-5) < 1e-9);
        const char *s = NULL;
        size_t len = 0;
        assert_int_equal(gguf_get_str(g, "general.architecture", &s, &len), CS_OK);
        assert_string_equal(s, "llama");
        assert_int_equal(len, 5);
        assert_int_equal(gguf_n_tensors(g), 48);
        const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
        assert_non_null(t);
        assert_int_equal(t->type, files[i].type_2d);
        assert_int_equal(t->n_dims, 2);
        assert_int_equal(t->ne[0], 64);
        assert_int_equal(t->ne[1], 512);
        t = gguf_find_tensor(g, "blk.4.ffn_down.weight");
        assert_non_null(t);
        assert_int_equal(t->ne[0], 172);
        assert_int_equal(t->ne[1], 64);
        /* rows of 172 cannot be Q8_0/Q4_0 blocks: they stay F32 (README) */
        if (files[i].type_2d == CS_TYPE_Q8_0 || files[i].type_2d == CS_TYPE_Q4_0)
            assert_int_equal(t->type, CS_TYPE_F32);
        t = gguf_find_tensor(g, "output_norm.weight");
        assert_non_null(t);
        assert_int_equal(t->type, CS_TYPE_F32);
        assert_int_equal(t->n_dims, 1);
        assert_null(gguf_find_tensor(g, "blk.5.ffn_down.weight"));
        assert_int_equal(gguf_find_key(g, "no.such.key"), -1);
        gguf_close(g);
    }
}

/* gguf_open maps the file; the tensor bytes must be the file's bytes. */
static void test_gguf_open_path_matches_file(void **state) {
    (void)state;
    size_t size = 0;
    uint8_t *bytes = read_file(test_bundled_model(), &size);
    assert_non_null(bytes);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(test_bundled_model(), &g), CS_OK);
    assert_int_equal(gguf_file_size(g), size);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        assert_memory_equal(t->data, bytes + gguf_data_offset(g) + t->offset, t->nbytes);
    }
    gguf_close(g);
    free(bytes);

    assert_int_equal(gguf_open("/nonexistent/dir/x.gguf", &g), CS_ERR_IO);
    assert_null(g);
    assert_int_equal(gguf_open(CS_SOURCE_DIR, &g), CS_ERR_IO); /* a directory */
    assert_null(g);
    gguf_close(NULL);
}

static void test_gguf_getters_types(void **state) {
    (void)state;
    /* every scalar type, built by hand */
    bb b = {0};
    bb_header(&b, 3, 0, 13);
    bb_str(&b, "u8"), bb_u32(&b, GGUF_TYPE_UINT8), bb_u8(&b, 200);
    bb_str(&b, "i8"), bb_u32(&b, GGUF_TYPE_INT8), bb_u8(&b, (uint8_t)-5);
    bb_str(&b, "u16"), bb_u32(&b, GGUF_TYPE_UINT16), bb_le(&b, 60000, 2);
    bb_str(&b, "i16"), bb_u32(&b, GGUF_TYPE_INT16), bb_le(&b, (uint16_t)-30000, 2);
    bb_str(&b, "u32"), bb_u32(&b, GGUF_TYPE_UINT32), bb_u32(&b, 4000000000u);
    bb_str(&b, "i32"), bb_u32(&b, GGUF_TYPE_INT32), bb_u32(&b, (uint32_t)-2000000000);
    float f32 = 1.5f;
    uint32_t f32b;
    memcpy(&f32b, &f32, 4);
    bb_str(&b, "f32"), bb_u32(&b, GGUF_TYPE_FLOAT32), bb_u32(&b, f32b);
    bb_str(&b, "bool"), bb_u32(&b, GGUF_TYPE_BOOL), bb_u8(&b, 1);
    bb_str(&b, "str"), bb_u32(&b, GGUF_TYPE_STRING), bb_strn(&b, "a\0b", 3);
    bb_str(&b, "u64big"), bb_u32(&b, GGUF_TYPE_UINT64), bb_u64(&b, ((uint64_t)1 << 63) + 5);
    bb_str(&b, "i64"), bb_u32(&b, GGUF_TYPE_INT64), bb_u64(&b, (uint64_t) - ((int64_t)1 << 62));
    double f64 = 3.25;
    uint64_t f64b;
    memcpy(&f64b, &f64, 8);
    bb_str(&b, "f64"), bb_u32(&b, GGUF_TYPE_FLOAT64), bb_u64(&b, f64b);
    bb_str(&b, "arr"), bb_u32(&b, GGUF_TYPE_ARRAY), bb_u32(&b, GGUF_TYPE_INT16), bb_u64(&b, 3);
    bb_le(&b, 1, 2), bb_le(&b, (uint16_t)-2, 2), bb_le(&b, 3, 2);

    gguf_file *g = NULL;
    assert_int_equal(gguf_open_buffer(b.p, b.n, &g), CS_OK);
    static const struct {
        const char *key;
        int64_t value;
    } ints[] = {{"u8", 200},
                {"i8", -5},
                {"u16", 60000},
                {"i16", -30000},
                {"u32", 4000000000},
                {"i32", -2000000000},
                {"i64", -((int64_t)1 << 62)}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v = 0;
        assert_int_equal(gguf_get_int(g, ints[i].key, &v), CS_OK);
        assert_true(v == ints[i].value);
    }
    int64_t v;
    assert_int_equal(gguf_get_int(g, "u64big", &v), CS_ERR_FORMAT);
    assert_non_null(strstr(cs_last_error(), "u64big"));
    assert_int_equal(gguf_get_int(g, "missing", &v), CS_ERR_FORMAT);
    assert_non_null(strstr(cs_last_error(), "missing key 'missing'"));
    assert_int_equal(gguf_get_int(g, "str", &v), CS_ERR_FORMAT);
    assert_non_null(strstr(cs_last_error(), "key 'str' has type string, expected an integer"));
    assert_int_equal(gguf_get_int(g, "f32", &v), CS_ERR_FORMAT);
    double d = 0;
    assert_int_equal(gguf_get_float(g, "f32", &d), CS_OK);
    assert_true(d == 1.5);
    assert_int_equal(gguf_get_float(g, "f64", &d), CS_OK);
    assert_true(d == 3.25);
    assert_int_equal(gguf_get_float(g, "u32", &d), CS_ERR_FORMAT);
    bool bv = false;
    assert_int_equal(gguf_get_bool(g, "bool", &bv), CS_OK);
    assert_true(bv);
    assert_int_equal(gguf_get_bool(g, "u8", &bv), CS_ERR_FORMAT);
    const char *s = NULL;
    size_t len = 0;
    assert_int_equal(gguf_get_str(g, "str", &s, &len), CS_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 4); /* NUL kept, and NUL-terminated */
    assert_int_equal(gguf_get_str(g, "u8", &s, &len), CS_ERR_FORMAT);
    int32_t et;
    uint64_t n;
    const void *data;
    assert_int_equal(gguf_get_arr(g, "arr", &et, &n, &data), CS_OK);
    assert_int_equal(et, GGUF_TYPE_INT16);
    assert_int_equal(n, 3);
    int16_t second;
    memcpy(&second, (const uint8_t *)data + 2, 2);
    assert_int_equal(second, -2);
    assert_int_equal(gguf_get_arr(g, "u8", &et, &n, &data), CS_ERR_FORMAT);
    int64_t ia = gguf_find_key(g, "arr");
    assert_int_equal(gguf_kv_type(g, ia), GGUF_TYPE_ARRAY);
    assert_int_equal(gguf_kv_arr_type(g, ia), GGUF_TYPE_INT16);
    assert_int_equal(gguf_kv_arr_n(g, ia), 3);
    assert_int_equal(gguf_kv_arr_type(g, gguf_find_key(g, "u8")), -1);

    char text[64];
    assert_string_equal(gguf_kv_to_text(g, gguf_find_key(g, "i16"), 4, text, sizeof text),
                        "-30000");
    assert_string_equal(gguf_kv_to_text(g, gguf_find_key(g, "str"), 4, text, sizeof text),
                        "\"a\\x00b\"");
    assert_string_equal(gguf_kv_to_text(g, ia, 4, text, sizeof text), "[int16 x 3] 1, -2, 3");
    assert_string_equal(gguf_kv_to_text(g, ia, 2, text, sizeof text), "[int16 x 3] 1, -2, ...");
    assert_string_equal(gguf_kv_to_text(g, ia, 0, text, sizeof text), "[int16 x 3] ...");
    assert_string_equal(gguf_kv_to_text(g, gguf_find_key(g, "bool"), 4, text, sizeof text), "true");
    /* a too-small buffer is cut and marked, never overrun */
    assert_string_equal(gguf_kv_to_text(g, ia, 4, text, 10), "[int16...");
    assert_string_equal(gguf_type_name(GGUF_TYPE_FLOAT64), "float64");
    assert_string_equal(gguf_type_name(99), "invalid");
    gguf_close(g);
    free(b.p);
}

/* ============================================================ writer */

/* Bytes of one numeric array element (the GGUF spec's table). */
static size_t elem_size(int32_t t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    default:
        return 8;
    }
}

/* Two parsed files hold the same keys (same order) and tensors. */
static void assert_same_content(const gguf_file *a, const gguf_file *b) {
    assert_int_equal(gguf_n_kv(a), gguf_n_kv(b));
    assert_int_equal(gguf_n_tensors(a), gguf_n_tensors(b));
    for (int64_t i = 0; i < gguf_n_kv(a); i++) {
        assert_string_equal(gguf_kv_key(a, i), gguf_kv_key(b, i));
        assert_int_equal(gguf_kv_type(a, i), gguf_kv_type(b, i));
        assert_int_equal(gguf_kv_arr_type(a, i), gguf_kv_arr_type(b, i));
        assert_int_equal(gguf_kv_arr_n(a, i), gguf_kv_arr_n(b, i));
        char ta[512], tb[512];
        assert_string_equal(gguf_kv_to_text(a, i, 1000, ta, sizeof ta),
                            gguf_kv_to_text(b, i, 1000, tb, sizeof tb));
        if (gguf_kv_arr_type(a, i) == GGUF_TYPE_STRING) {
            for (uint64_t j = 0; j < gguf_kv_arr_n(a, i); j++) {
                size_t la = 0, lb = 0;
                const char *sa = gguf_get_arr_str(a, i, j, &la);
                const char *sb = gguf_get_arr_str(b, i, j, &lb);
                assert_int_equal(la, lb);
                assert_memory_equal(sa, sb, la);
            }
        } else if (gguf_kv_type(a, i) == GGUF_TYPE_ARRAY) {
            int32_t et;
            uint64_t n;
            const void *da, *db;
            assert_int_equal(gguf_get_arr(a, gguf_kv_key(a, i), &et, &n, &da), CS_OK);
            assert_int_equal(gguf_get_arr(b, gguf_kv_key(a, i), &et, &n, &db), CS_OK);
            if (n) assert_memory_equal(da, db, n * elem_size(et));
        } else if (gguf_kv_type(a, i) == GGUF_TYPE_STRING) {
            const char *sa, *sb;
            size_t la, lb;
            assert_int_equal(gguf_get_str(a, gguf_kv_key(a, i), &sa, &la), CS_OK);
            assert_int_equal(gguf_get_str(b, gguf_kv_key(a, i), &sb, &lb), CS_OK);
            assert_int_equal(la, lb);
            assert_memory_equal(sa, sb, la);
        }
    }
    for (int64_t i = 0; i < gguf_n_tensors(a); i++) {
        const gguf_tensor *ta = gguf_tensor_at(a, i), *tb = gguf_tensor_at(b, i);
        assert_string_equal(ta->name, tb->name);
        assert_int_equal(ta->type, tb->type);
        assert_int_equal(ta->n_dims, tb->n_dims);
        assert_memory_equal(ta->ne, tb->ne, sizeof ta->ne);
        assert_int_equal(ta->nbytes, tb->nbytes);
        assert_memory_equal(ta->data, tb->data, ta->nbytes);
    }
}

/* Every value type (scalars and arrays, strings with NUL bytes, empty
 * arrays), tensors of several types, alignment 64: parse, copy into a
 * writer, write, parse again, compare. */
static void test_gguf_writer_round_trip(void **state) {
    (void)state;
    bb b = {0};
    bb_header(&b, 3, 3, 27);
    for (uint32_t t = 0; t < GGUF_TYPE_COUNT; t++) {
        if (t == GGUF_TYPE_STRING || t == GGUF_TYPE_ARRAY) continue;
        char key[32];
        snprintf(key, sizeof key, "scalar.%s", gguf_type_name((int32_t)t));
        bb_str(&b, key);
        bb_u32(&b, t);
        size_t sz = elem_size((int32_t)t);
        bb_le(&b, t == GGUF_TYPE_BOOL ? 1 : 0x8070605040302010ull + t, (int)sz);
        snprintf(key, sizeof key, "array.%s", gguf_type_name((int32_t)t));
        bb_str(&b, key);
        bb_u32(&b, GGUF_TYPE_ARRAY);
        bb_u32(&b, t);
        bb_u64(&b, 3);
        for (int j = 0; j < 3; j++)
            bb_le(&b,
                  t == GGUF_TYPE_BOOL ? (uint64_t)(j & 1)
                                      : 0xfedcba9876543210ull * (uint64_t)(j + 1),
                  (int)sz);
    }
    bb_str(&b, "scalar.string"), bb_u32(&b, GGUF_TYPE_STRING), bb_strn(&b, "x\0y\"\n", 5);
    bb_str(&b, "array.string"), bb_u32(&b, GGUF_TYPE_ARRAY), bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 3), bb_str(&b, "one"), bb_strn(&b, "", 0), bb_strn(&b, "t\0o", 3);
    bb_str(&b, "array.empty"), bb_u32(&b, GGUF_TYPE_ARRAY), bb_u32(&b, GGUF_TYPE_FLOAT32);
    bb_u64(&b, 0);
    /* 11 scalar types x (scalar, array) + 3 above + 2 below = 27 keys */
    bb_kv_u32(&b, "extra.a", 1);
    bb_kv_str(&b, "extra.b", "b");
    uint64_t ne_a[2] = {8, 3}, ne_b[1] = {64}, ne_c[3] = {5, 1, 2};
    bb_tensor(&b, "a", 2, ne_a, CS_TYPE_F32, 0);
    bb_tensor(&b, "b", 1, ne_b, CS_TYPE_Q8_0, 96);
    bb_tensor(&b, "c", 3, ne_c, CS_TYPE_F16, 96 + 96);
    bb_pad(&b, 32);
    for (int i = 0; i < 96 + 96 + 32; i++) bb_u8(&b, (uint8_t)(i * 7 + 1));

    gguf_file *src = NULL;
    if (gguf_open_buffer(b.p, b.n, &src) != CS_OK) fail_msg("%s", cs_last_error());
    assert_int_equal(gguf_n_kv(src), 27);

    gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    for (int64_t i = 0; i < gguf_n_kv(src); i++)
        assert_int_equal(gguf_writer_copy_kv(w, src, i), CS_OK);
    for (int64_t i = 0; i < gguf_n_tensors(src); i++) {
        const gguf_tensor *t = gguf_tensor_at(src, i);
        assert_int_equal(
            gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes),
            CS_OK);
    }
    void *out = NULL;
    size_t out_size = 0;
    assert_int_equal(gguf_writer_write_buffer(w, &out, &out_size), CS_OK);
    gguf_file *back = NULL;
    if (gguf_open_buffer(out, out_size, &back) != CS_OK) fail_msg("%s", cs_last_error());
    assert_int_equal(gguf_version(back), 3);
    assert_int_equal(gguf_alignment(back), 32);
    assert_int_equal(gguf_find_key(back, "general.alignment"), -1); /* default not written */
    assert_same_content(src, back);
    gguf_close(back);

    /* alignment 64, to a file this time */
    assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 64), CS_OK);
    char path[4096];
    test_tmp_path("roundtrip.gguf", path, sizeof path);
    assert_int_equal(gguf_writer_write_file(w, path), CS_OK);
    assert_int_equal(gguf_open(path, &back), CS_OK);
    assert_int_equal(gguf_alignment(back), 64);
    assert_int_equal(gguf_data_offset(back) % 64, 0);
    assert_int_equal(gguf_n_kv(back), 28);
    for (int64_t i = 0; i < gguf_n_tensors(back); i++) {
        const gguf_tensor *t = gguf_tensor_at(back, i);
        assert_int_equal(t->offset % 64, 0);
        assert_memory_equal(t->data, gguf_tensor_at(src, i)->data, t->nbytes);
    }
    gguf_close(back);
    remove(path);

    mem_free(out);
    gguf_writer_free(w);
    gguf_close(src);
    free(b.p);
}

static void test_gguf_writer_setters(void **state) {
    (void)state;
    gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    assert_int_equal(gguf_writer_set_u32(w, "k.u32", 7), CS_OK);
    assert_int_equal(gguf_writer_set_u32(w, "k.u32", 8), CS_OK); /* replaces */
    assert_int_equal(gguf_writer_set_i32(w, "k.i32", -9), CS_OK);
    assert_int_equal(gguf_writer_set_u64(w, "k.u64", (uint64_t)1 << 40), CS_OK);
    assert_int_equal(gguf_writer_set_f32(w, "k.f32", 0.25f), CS_OK);
    assert_int_equal(gguf_writer_set_bool(w, "k.bool", true), CS_OK);
    assert_int_equal(gguf_writer_set_str(w, "k.str", "héllo"), CS_OK);
    const float arr[3] = {1.0f, -2.0f, 3.5f};
    assert_int_equal(gguf_writer_set_arr(w, "k.arr", GGUF_TYPE_FLOAT32, arr, 3), CS_OK);
    const char *strs[2] = {"<s>", ""};
    assert_int_equal(gguf_writer_set_arr_str(w, "k.strs", strs, 2), CS_OK);

    /* invalid arguments */
    assert_int_equal(gguf_writer_set_u32(w, "", 1), CS_ERR_INVALID_ARG);
    assert_int_equal(gguf_writer_set_u32(w, "general.alignment", 48), CS_ERR_INVALID_ARG);
    assert_int_equal(gguf_writer_set_f32(w, "general.alignment", 32.0f), CS_ERR_INVALID_ARG);
    assert_int_equal(gguf_writer_set_arr(w, "k.bad", GGUF_TYPE_STRING, arr, 1), CS_ERR_INVALID_ARG);
    const int64_t ne[2] = {4, 2};
    float data[8] = {0};
    assert_int_equal(gguf_writer_add_tensor(w, "t", CS_TYPE_F32, 2, ne, data, sizeof data), CS_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "t", CS_TYPE_F32, 2, ne, data, sizeof data),
                     CS_ERR_INVALID_ARG); /* duplicate */
    assert_int_equal(gguf_writer_add_tensor(w, "u", CS_TYPE_F32, 2, ne, data, 16),
                     CS_ERR_INVALID_ARG); /* wrong size */
    assert_int_equal(gguf_writer_add_tensor(w, "v", CS_TYPE_Q8_0, 2, ne, data, 34),
                     CS_ERR_INVALID_ARG); /* ne[0] not a block multiple */
    assert_int_equal(gguf_writer_add_tensor(w, "x", 4, 1, ne, data, 16), CS_ERR_INVALID_ARG);
    char long_name[65];
    memset(long_name, 'n', 64);
    long_name[64] = '\0'; /* llama.cpp needs names of at most 63 bytes */
    assert_int_equal(gguf_writer_add_tensor(w, long_name, CS_TYPE_F32, 1, ne, data, 16),
                     CS_ERR_INVALID_ARG);
    assert_int_equal(gguf_writer_add_tensor(w, "y", CS_TYPE_F32, 5, ne, data, 16),
                     CS_ERR_INVALID_ARG);

    void *out = NULL;
    size_t size = 0;
    assert_int_equal(gguf_writer_write_buffer(w, &out, &size), CS_OK);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open_buffer(out, size, &g), CS_OK);
    assert_int_equal(gguf_n_kv(g), 8);
    assert_int_equal(gguf_n_tensors(g), 1);
    int64_t v = 0;
    assert_int_equal(gguf_get_int(g, "k.u32", &v), CS_OK);
    assert_int_equal(v, 8);
    assert_int_equal(gguf_get_int(g, "k.i32", &v), CS_OK);
    assert_int_equal(v, -9);
    assert_int_equal(gguf_get_int(g, "k.u64", &v), CS_OK);
    assert_true(v == (int64_t)1 << 40);
    double d = 0;
    assert_int_equal(gguf_get_float(g, "k.f32", &d), CS_OK);
    assert_true(d == 0.25);
    bool bv = false;
    assert_int_equal(gguf_get_bool(g, "k.bool", &bv), CS_OK);
    assert_true(bv);
    const char *s = NULL;
    assert_int_equal(gguf_get_str(g, "k.str", &s, NULL), CS_OK);
    assert_string_equal(s, "héllo");
    int32_t et;
    uint64_t n;
    const void *p;
    assert_int_equal(gguf_get_arr(g, "k.arr", &et, &n, &p), CS_OK);
    assert_int_equal(et, GGUF_TYPE_FLOAT32);
    assert_int_equal(n, 3);
    assert_memory_equal(p, arr, sizeof arr);
    int64_t is = gguf_find_key(g, "k.strs");
    assert_string_equal(gguf_get_arr_str(g, is, 0, NULL), "<s>");
    assert_string_equal(gguf_get_arr_str(g, is, 1, NULL), "");
    gguf_close(g);
    mem_free(out);
    gguf_writer_free(w);

    /* an empty writer makes a valid 24-byte file */
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    assert_int_equal(gguf_writer_write_buffer(w, &out, &size), CS_OK);
    assert_int_equal(size, 24);
    assert_int_equal(gguf_open_buffer(out, size, &g), CS_OK);
    assert_int_equal(gguf_n_kv(g), 0);
    gguf_close(g);
    mem_free(out);
    assert_int_equal(gguf_writer_write_file(w, "/nonexistent/dir/x.gguf"), CS_ERR_IO);
    gguf_writer_free(w);
    gguf_writer_free(NULL);
}

/* Every allocation of a parse can fail: CS_ERR_NOMEM, nothing leaked (ASan). */
static void test_gguf_alloc_failures(void **state) {
    (void)state;
    bb b = {0};
    build_mini(&b, NULL);
    int64_t n;
    for (n = 0; n < 1000; n++) {
        gguf_file *g = NULL;
        mem_fail_after(n);
        cs_status st = gguf_open_buffer(b.p, b.n, &g);
        mem_fail_after(-1);
        if (st == CS_OK) {
            gguf_close(g);
            break;
        }
        assert_int_equal(st, CS_ERR_NOMEM);
        assert_null(g);
    }
    assert_true(n > 3 && n < 1000);
    /* and the writer */
    gguf_file *src = NULL;
    assert_int_equal(gguf_open_buffer(b.p, b.n, &src), CS_OK);
    for (n = 0; n < 1000; n++) {
        gguf_writer *w = NULL;
        void *out = NULL;
        size_t size = 0;
        mem_fail_after(n);
        cs_status st = gguf_writer_new(&w);
        for (int64_t i = 0; st == CS_OK && i < gguf_n_kv(src); i++)
            st = gguf_writer_copy_kv(w, src, i);
        const gguf_tensor *t = gguf_tensor_at(src, 0);
        if (st == CS_OK)
            st = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes);
        if (st == CS_OK) st = gguf_writer_write_buffer(w, &out, &size);
        mem_fail_after(-1);
        gguf_writer_free(w);
        mem_free(out);
        if (st == CS_OK) break;
        assert_int_equal(st, CS_ERR_NOMEM);
    }
    assert_true(n > 3 && n < 1000);
    gguf_close(src);
    free(b.p);
}

/* ========================================================== describe */

typedef struct text_sink {
    char *buf;
    size_t len;
} text_sink;

static void sink_write(const char *text, void *user) {
    text_sink *s = user;
    size_t n = strlen(text);
    s->buf = realloc(s->buf, s->len + n + 1);
    assert_non_null(s->buf);
    memcpy(s->buf + s->len, text, n + 1);
    s->len += n;
}

static void test_gguf_describe(void **state) {
    (void)state;
    text_sink s = {0};
    assert_int_equal(cs_gguf_describe(test_bundled_model(), 3, sink_write, &s), CS_OK);
    assert_non_null(s.buf);
    const char *first = "GGUF v3, 19 metadata keys, 48 tensors, data at offset 14176\n";
    assert_true(strncmp(s.buf, first, strlen(first)) == 0);
    assert_non_null(strstr(s.buf, "\n  llama.block_count (uint32) = 5\n"));
    assert_non_null(strstr(s.buf, "\n  general.architecture (string) = \"llama\"\n"));
    assert_non_null(strstr(
        s.buf,
        "\n  tokenizer.ggml.tokens (array) = [string x 512] \"<unk>\", \"<s>\", \"</s>\", ...\n"));
    assert_non_null(strstr(s.buf, "\n  token_embd.weight  f32  [64, 512]  0\n"));
    assert_non_null(strstr(s.buf, "\n  output_norm.weight  f32  [64]  "));
    size_t lines = 0;
    for (size_t i = 0; i < s.len; i++) lines += s.buf[i] == '\n';
    assert_int_equal(lines, 1 + 19 + 48);
    free(s.buf);

    /* a corrupt file: an error and no output at all */
    bb b = {0};
    c_duplicate_key(&b);
    char path[4096];
    test_tmp_path("describe-bad.gguf", path, sizeof path);
    write_bytes(path, b.p, b.n);
    free(b.p);
    text_sink s2 = {0};
    assert_int_equal(cs_gguf_describe(path, 3, sink_write, &s2), CS_ERR_FORMAT);
    assert_null(s2.buf);
    remove(path);
    assert_int_equal(cs_gguf_describe("/nonexistent.gguf", 3, sink_write, &s2), CS_ERR_IO);
    assert_null(s2.buf);
}

/* cs_model_describe: per-type counts, then the model as the loader sees it. */
static void test_gguf_model_describe(void **state) {
    (void)state;
    text_sink s = {0};
    assert_int_equal(cs_model_describe(test_bundled_model(), sink_write, &s), CS_OK);
    assert_non_null(s.buf);
    assert_string_equal(s.buf,
                        "tensor types: f32 48\n"
                        "model: family llama, 5 layers, n_embd 64, n_ff 172, 8 heads, 4 KV heads "
                        "(GQA group 2), head size k 8 v 8, n_vocab 512, context 2048\n"
                        "  rope: norm, n_rot 8, freq_base 10000, scaling none\n"
                        "  attention biases: none; output: output.weight\n");
    free(s.buf);
    /* no general.architecture: the counts only */
    bb b = {0};
    build_mini(&b, NULL);
    char path[4096];
    test_tmp_path("describe-mini.gguf", path, sizeof path);
    write_bytes(path, b.p, b.n);
    free(b.p);
    text_sink s2 = {0};
    assert_int_equal(cs_model_describe(path, sink_write, &s2), CS_OK);
    assert_non_null(s2.buf);
    assert_true(strncmp(s2.buf, "tensor types: ", 14) == 0);
    assert_null(strstr(s2.buf, "model:"));
    free(s2.buf);
    remove(path);
    assert_int_equal(cs_model_describe("/nonexistent.gguf", sink_write, &s2), CS_ERR_IO);
    assert_int_equal(cs_model_describe(NULL, sink_write, &s2), CS_ERR_INVALID_ARG);
}

/* ========================================================= gen-model */

static const char *bundled_vocab(void) {
    return test_bundled_model();
}

/* Sample standard deviation of an f32 tensor. */
static double tensor_std(const gguf_tensor *t) {
    int64_t n = t->ne[0] * t->ne[1];
    double sum = 0, sum2 = 0;
    for (int64_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, (const uint8_t *)t->data + 4 * i, 4);
        sum += (double)f;
        sum2 += (double)f * (double)f;
    }
    double mean = sum / (double)n;
    return sqrt(sum2 / (double)n - mean * mean);
}

static void test_gguf_gen_model_tiny(void **state) {
    (void)state;
    const char *path = fixture_tiny_model(CS_TYPE_F32);
    if (!path) fail_msg("fixture: %s", cs_last_error());
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(path, &g), CS_OK);
    /* the "tiny" preset as specified: 64 / 2 layers / 4 heads / 2 KV / 128 / 512 */
    static const struct {
        const char *key;
        int64_t value;
    } ints[] = {
        {"llama.embedding_length", 64},     {"llama.block_count", 2},
        {"llama.attention.head_count", 4},  {"llama.attention.head_count_kv", 2},
        {"llama.feed_forward_length", 128}, {"llama.context_length", 512},
        {"llama.rope.dimension_count", 16}, {"llama.vocab_size", 512},
        {"general.file_type", 0},           {"tokenizer.ggml.bos_token_id", 1},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v = -1;
        if (gguf_get_int(g, ints[i].key, &v) != CS_OK) fail_msg("%s", cs_last_error());
        if (v != ints[i].value)
            fail_msg("%s = %lld, want %lld", ints[i].key, (long long)v, (long long)ints[i].value);
    }
    const char *s = NULL;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s, NULL), CS_OK);
    assert_string_equal(s, "llama");
    assert_int_equal(gguf_get_str(g, "tokenizer.ggml.model", &s, NULL), CS_OK);
    assert_string_equal(s, "llama");
    double d = 0;
    assert_int_equal(gguf_get_float(g, "llama.rope.freq_base", &d), CS_OK);
    assert_true(d == 10000.0);
    assert_int_equal(gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &d), CS_OK);
    assert_true(d == (double)1e-5f);
    int64_t it = gguf_find_key(g, "tokenizer.ggml.tokens");
    assert_int_equal(gguf_kv_arr_n(g, it), 512);
    assert_string_equal(gguf_get_arr_str(g, it, 1, NULL), "<s>");

    /* tensors: llama.cpp's names and shapes, ne[0] = input dimension */
    assert_int_equal(gguf_n_tensors(g), 3 + 9 * 2);
    static const struct {
        const char *name;
        int64_t ne0, ne1;
    } shapes[] = {
        {"token_embd.weight", 64, 512},   {"output_norm.weight", 64, 1},
        {"output.weight", 64, 512},       {"blk.1.attn_norm.weight", 64, 1},
        {"blk.1.attn_q.weight", 64, 64},  {"blk.1.attn_k.weight", 64, 32},
        {"blk.1.attn_v.weight", 64, 32},  {"blk.1.attn_output.weight", 64, 64},
        {"blk.1.ffn_norm.weight", 64, 1}, {"blk.1.ffn_gate.weight", 64, 128},
        {"blk.1.ffn_up.weight", 64, 128}, {"blk.1.ffn_down.weight", 128, 64},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, shapes[i].name);
        if (!t) fail_msg("missing tensor %s", shapes[i].name);
        assert_int_equal(t->type, CS_TYPE_F32);
        assert_int_equal(t->n_dims, shapes[i].ne1 == 1 ? 1 : 2);
        assert_int_equal(t->ne[0], shapes[i].ne0);
        assert_int_equal(t->ne[1], shapes[i].ne1);
    }
    /* norms near 1; matrices with std 1/sqrt(fan_in) */
    const gguf_tensor *norm = gguf_find_tensor(g, "blk.0.ffn_norm.weight");
    for (int64_t i = 0; i < norm->ne[0]; i++) {
        float f;
        memcpy(&f, (const uint8_t *)norm->data + 4 * i, 4);
        assert_true(f >= 0.9f && f <= 1.1f);
    }
    const char *mats[] = {"token_embd.weight", "blk.0.ffn_gate.weight", "blk.1.ffn_down.weight"};
    for (size_t i = 0; i < 3; i++) {
        const gguf_tensor *t = gguf_find_tensor(g, mats[i]);
        double want = 1.0 / sqrt((double)t->ne[0]);
        double got = tensor_std(t);
        if (fabs(got - want) > TOL_GEN_STD_REL * want)
            fail_msg("%s: std %g, want %g", mats[i], got, want);
    }
    /* layers differ (a distinct stream per tensor) */
    assert_memory_not_equal(gguf_find_tensor(g, "blk.0.attn_q.weight")->data,
                            gguf_find_tensor(g, "blk.1.attn_q.weight")->data, 64 * 64 * 4);
    gguf_close(g);
}

static void test_gguf_gen_model_deterministic(void **state) {
    (void)state;
    cs_gen_model_params p;
    memset(&p, 0, sizeof p);
    assert_true(cs_gen_model_preset("tiny", &p));
    p.vocab_path = bundled_vocab();
    p.n_layer = 1;
    p.tied_embeddings = true;
    p.seed = 42;
    char a[4096], b[4096], c[4096];
    test_tmp_path("gen-a.gguf", a, sizeof a);
    test_tmp_path("gen-b.gguf", b, sizeof b);
    test_tmp_path("gen-c.gguf", c, sizeof c);
    assert_int_equal(cs_gen_model_write(&p, a), CS_OK);
    assert_int_equal(cs_gen_model_write(&p, b), CS_OK);
    p.seed = 43;
    assert_int_equal(cs_gen_model_write(&p, c), CS_OK);
    size_t na, nb, nc;
    uint8_t *ba = read_file(a, &na), *bb_ = read_file(b, &nb), *bc = read_file(c, &nc);
    assert_non_null(ba);
    assert_non_null(bb_);
    assert_non_null(bc);
    assert_int_equal(na, nb);
    assert_memory_equal(ba, bb_, na);
    assert_int_equal(na, nc);
    assert_memory_not_equal(ba, bc, na);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(a, &g), CS_OK);
    assert_null(gguf_find_tensor(g, "output.weight")); /* tied */
    assert_int_equal(gguf_n_tensors(g), 2 + 9);
    gguf_close(g);
    free(ba), free(bb_), free(bc);
    remove(a), remove(b), remove(c);
}

static void test_gguf_gen_model_vocab_cut(void **state) {
    (void)state;
    cs_gen_model_params p;
    memset(&p, 0, sizeof p);
    assert_true(cs_gen_model_preset("tiny", &p));
    p.vocab_path = bundled_vocab();
    p.n_layer = 1;
    p.n_vocab = 100;
    char path[4096];
    test_tmp_path("gen-cut.gguf", path, sizeof path);
    assert_int_equal(cs_gen_model_write(&p, path), CS_OK);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(path, &g), CS_OK);
    const char *arrays[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                            "tokenizer.ggml.token_type"};
    for (int i = 0; i < 3; i++) {
        uint64_t n = 0;
        assert_int_equal(gguf_get_arr(g, arrays[i], NULL, &n, NULL), CS_OK);
        assert_int_equal(n, 100);
    }
    int64_t v = 0;
    assert_int_equal(gguf_get_int(g, "llama.vocab_size", &v), CS_OK);
    assert_int_equal(v, 100);
    assert_int_equal(gguf_find_tensor(g, "token_embd.weight")->ne[1], 100);
    assert_int_equal(gguf_find_tensor(g, "output.weight")->ne[1], 100);
    gguf_close(g);
    remove(path);

    p.n_vocab = 513; /* more than the vocabulary */
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    p.n_vocab = 2; /* EOS (id 2) would be outside */
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "eos_token_id"));

    char gpt2[4096];
    if (test_shared_path("models/ggml-vocab-gpt-2.gguf", gpt2, sizeof gpt2)) {
        p.vocab_path = gpt2;
        p.n_vocab = 1000; /* BPE vocabularies cannot be cut (merges) */
        assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_UNSUPPORTED);
    }
    assert_int_equal(access(path, F_OK), -1); /* nothing left behind */
}

static void test_gguf_gen_model_bad_params(void **state) {
    (void)state;
    cs_gen_model_params base;
    memset(&base, 0, sizeof base);
    assert_true(cs_gen_model_preset("tiny", &base));
    base.vocab_path = bundled_vocab();
    char path[4096];
    test_tmp_path("gen-bad.gguf", path, sizeof path);
    cs_gen_model_params p;
    p = base, p.n_head = 3; /* 64 % 3 */
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    p = base, p.n_head_kv = 3; /* does not divide 4 */
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    p = base, p.n_layer = 0;
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "n_layer"));
    p = base, p.type = 99;
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    p = base, p.norm_eps = 0.0f;
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    p = base, p.vocab_path = NULL;
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_INVALID_ARG);
    p = base, p.vocab_path = "/nonexistent.gguf";
    assert_int_equal(cs_gen_model_write(&p, path), CS_ERR_IO);
    p = base;
    assert_int_equal(cs_gen_model_write(&p, "/nonexistent/dir/x.gguf"), CS_ERR_IO);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_gguf_gen_model_presets(void **state) {
    (void)state;
    cs_gen_model_params p;
    memset(&p, 0x5a, sizeof p);
    p.vocab_path = "keep-me";
    cs_gen_model_params before = p;
    assert_false(cs_gen_model_preset("7b", &p));
    assert_memory_equal(&p, &before, sizeof p); /* untouched */
    assert_true(cs_gen_model_preset("1.1b", &p));
    assert_int_equal(p.n_embd, 2048);
    assert_int_equal(p.n_layer, 22);
    assert_int_equal(p.n_head, 32);
    assert_int_equal(p.n_head_kv, 4);
    assert_int_equal(p.n_ff, 5632);
    assert_int_equal(p.n_ctx_train, 2048);
    assert_int_equal(p.n_vocab, 0);
    assert_int_equal(p.type, CS_TYPE_F32);
    assert_true(p.rope_freq_base == 10000.0f);
    assert_true(p.norm_eps == 1e-5f);
    assert_string_equal(p.vocab_path, "keep-me");
    assert_true(cs_gen_model_preset("110m", &p));
    assert_int_equal(p.n_embd, 768);
    assert_int_equal(p.n_layer, 12);
    assert_int_equal(p.n_head, 12);
    assert_int_equal(p.n_head_kv, 12);
    assert_int_equal(p.n_ff, 2048);
    assert_true(cs_gen_model_preset("tiny", &p));
    assert_int_equal(p.n_embd, 64);
    assert_int_equal(p.n_ff, 128);
}

/* Q8_0 weights are the F32 weights of the same seed, quantized: rows of
 * 172 (ffn_down) stay F32 and equal exactly. */
static void test_gguf_gen_model_quantized(void **state) {
    (void)state;
    cs_gen_model_params p;
    memset(&p, 0, sizeof p);
    assert_true(cs_gen_model_preset("tiny", &p));
    p.vocab_path = bundled_vocab();
    p.n_layer = 1;
    p.n_ff = 172;
    char pf[4096], pq[4096];
    test_tmp_path("gen-f32.gguf", pf, sizeof pf);
    test_tmp_path("gen-q8.gguf", pq, sizeof pq);
    assert_int_equal(cs_gen_model_write(&p, pf), CS_OK);
    p.type = CS_TYPE_Q8_0;
    assert_int_equal(cs_gen_model_write(&p, pq), CS_OK);
    gguf_file *gf = NULL, *gq = NULL;
    assert_int_equal(gguf_open(pf, &gf), CS_OK);
    assert_int_equal(gguf_open(pq, &gq), CS_OK);
    int64_t ft = 0;
    assert_int_equal(gguf_get_int(gq, "general.file_type", &ft), CS_OK);
    assert_int_equal(ft, 7); /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    const gguf_tensor *down_q = gguf_find_tensor(gq, "blk.0.ffn_down.weight");
    assert_int_equal(down_q->type, CS_TYPE_F32);
    assert_memory_equal(down_q->data, gguf_find_tensor(gf, "blk.0.ffn_down.weight")->data,
                        down_q->nbytes);
    assert_int_equal(gguf_find_tensor(gq, "blk.0.attn_norm.weight")->type, CS_TYPE_F32);
    const gguf_tensor *tq = gguf_find_tensor(gq, "blk.0.ffn_gate.weight");
    const gguf_tensor *tf = gguf_find_tensor(gf, "blk.0.ffn_gate.weight");
    assert_int_equal(tq->type, CS_TYPE_Q8_0);
    int64_t n = tf->ne[0] * tf->ne[1];
    float *ref = malloc((size_t)n * sizeof *ref), *deq = malloc((size_t)n * sizeof *deq);
    assert_non_null(ref);
    assert_non_null(deq);
    memcpy(ref, tf->data, (size_t)n * sizeof *ref);
    dequantize_row(CS_TYPE_Q8_0, tq->data, deq, n);
    for (int64_t blk = 0; blk < n / 32; blk++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(ref[blk * 32 + j]));
        double step = (double)amax / 127.0;
        for (int j = 0; j < 32; j++) {
            double err = fabs((double)deq[blk * 32 + j] - (double)ref[blk * 32 + j]);
            if (err > TOL_Q8_0_REL_STEP * step + 1e-3 * (double)amax)
                fail_msg("block %lld elem %d: %g vs %g", (long long)blk, j,
                         (double)deq[blk * 32 + j], (double)ref[blk * 32 + j]);
        }
    }
    free(ref);
    free(deq);
    gguf_close(gf);
    gguf_close(gq);
    remove(pf);
    remove(pq);
}

/* ================================================== (c) mutations */

static void test_gguf_random_mutations(void **state) {
    (void)state;
    size_t size = 0;
    uint8_t *orig = read_file(test_bundled_model(), &size);
    assert_non_null(orig);
    const size_t meta_end = 14176; /* data offset of the bundled model */
    char path[4096];
    test_tmp_path("mutant.gguf", path, sizeof path);
    uint64_t rng = MUTATION_SEED;
    int n_ok = 0, n_err = 0, n_model = 0;
    for (int i = 0; i < N_MUTATIONS; i++) {
        int kind = (int)(test_rng(&rng) % 3); /* 0 cut, 1 flip, 2 both */
        size_t len = size;
        if (kind != 1) {
            uint64_t r = test_rng(&rng);
            len = (r & 1) ? (size_t)(r >> 1) % (meta_end + 64) : (size_t)(r >> 1) % size;
        }
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        memcpy(buf, orig, len);
        if (kind != 0 && len > 0) {
            int n_flips = 1 + (int)(test_rng(&rng) % 8);
            for (int k = 0; k < n_flips; k++) {
                uint64_t r = test_rng(&rng);
                size_t lim = (r & 7) ? (len < meta_end ? len : meta_end) : len;
                size_t pos = (size_t)(r >> 8) % lim;
                buf[pos] ^= (uint8_t)(1 + (r >> 3) % 255);
            }
        }
        gguf_file *g = NULL;
        cs_status st = gguf_open_buffer(len ? buf : NULL, len, &g);
        if (st == CS_OK) {
            n_ok++;
            /* everything reachable is readable */
            char text[256];
            for (int64_t k = 0; k < gguf_n_kv(g); k++) gguf_kv_to_text(g, k, 4, text, sizeof text);
            unsigned sum = 0;
            for (int64_t k = 0; k < gguf_n_tensors(g); k++) {
                const gguf_tensor *t = gguf_tensor_at(g, k);
                if (t->nbytes)
                    sum +=
                        ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
            }
            (void)sum;
            gguf_close(g);
        } else {
            n_err++;
            if (st != CS_ERR_FORMAT)
                fail_msg("mutation %d: %s: %s", i, cs_status_str(st), cs_last_error());
            assert_null(g);
            assert_true(strncmp(cs_last_error(), "gguf: ", 6) == 0);
        }
        if (i % 10 == 0) {
            write_bytes(path, buf, len);
            cs_model_params mp = cs_model_default_params();
            cs_model *m = NULL;
            cs_status ms = cs_model_load(path, &mp, &m);
            if (ms == CS_OK) {
                assert_non_null(m);
                n_model++;
                cs_model_free(m);
            } else {
                assert_null(m);
                if (ms != CS_ERR_FORMAT && ms != CS_ERR_UNSUPPORTED)
                    fail_msg("mutation %d: cs_model_load: %s: %s", i, cs_status_str(ms),
                             cs_last_error());
            }
        }
        free(buf);
    }
    remove(path);
    free(orig);
    /* both outcomes occur: the mutations reach the parser's checks */
    assert_true(n_ok > 0);
    assert_true(n_err > N_MUTATIONS / 4);
    if (getenv("CS_TEST_VERBOSE"))
        printf("  mutations: %d parsed, %d refused; %d of %d model loads succeeded\n", n_ok, n_err,
               n_model, (N_MUTATIONS + 9) / 10);
    assert_true(n_model > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_mini_file_is_valid),
        cmocka_unit_test(test_gguf_corrupt_files_refused),
        cmocka_unit_test(test_gguf_every_truncation_refused),
        cmocka_unit_test(test_gguf_shared_models),
        cmocka_unit_test(test_gguf_stories_values),
        cmocka_unit_test(test_gguf_open_path_matches_file),
        cmocka_unit_test(test_gguf_getters_types),
        cmocka_unit_test(test_gguf_writer_round_trip),
        cmocka_unit_test(test_gguf_writer_setters),
        cmocka_unit_test(test_gguf_alloc_failures),
        cmocka_unit_test(test_gguf_describe),
        cmocka_unit_test(test_gguf_model_describe),
        cmocka_unit_test(test_gguf_gen_model_tiny),
        cmocka_unit_test(test_gguf_gen_model_deterministic),
        cmocka_unit_test(test_gguf_gen_model_vocab_cut),
        cmocka_unit_test(test_gguf_gen_model_bad_params),
        cmocka_unit_test(test_gguf_gen_model_presets),
        cmocka_unit_test(test_gguf_gen_model_quantized),
        cmocka_unit_test(test_gguf_random_mutations),
    };
    return test_run(tests, NULL, NULL);
}
