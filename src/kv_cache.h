/* kv_cache.h: K/V storage and the operations that touch it: writing a
 * batch's rows, the K-shift (docs/KV_CACHE_SPEC.md §3) and the defrag data moves (spec §4.3).
 * Metadata lives in kv_cells.h. */
#ifndef CS_KV_CACHE_H
#define CS_KV_CACHE_H

#include "common.h"
#include "kernels/kernels.h"
#include "kv_cells.h"
#include "threadpool.h"

/* K and V are head-major: in each layer, head h of every cell comes before
 * head h + 1, so head h of cell c is the head_k bytes at
 * k[l] + (h * size + c) * head_k (kv_store_off), head_dim elements in
 * type_k / type_v (F32, F16 or Q8_0; head_dim % 32 == 0 for Q8_0, so a
 * head is whole blocks). Why not one row per cell (spec §1.3, upstream's K):
 * attention reads one head over all cells, and with rows it read 128 of
 * every 1536 bytes (110M, F16), which ran at 7 GB/s where one stream per
 * head runs at 24 (docs/KV_CACHE.md "Storage"). A cell's row, heads in
 * order (row_k / row_v bytes), is what state files hold (kv_store_get_row /
 * kv_store_put_row). */
typedef struct kv_store {
    int32_t n_layer;
    int32_t size;
    int32_t n_embd_kv;
    int32_t head_dim;
    int32_t n_head_kv;
    int32_t type_k, type_v;
    size_t row_k, row_v;   /* bytes of one cell, all heads */
    size_t head_k, head_v; /* bytes of one head of one cell */
    void **k;              /* (n_layer) -> (n_head_kv, size, head_k bytes) */
    void **v;              /* (n_layer) -> (n_head_kv, size, head_v bytes) */
    void *arena;           /* every k[l] and v[l] (mem_huge_alloc) */
    size_t arena_bytes;
} kv_store;

/* Byte offset of head h of cell c in a layer's K buffer (v: V buffer). */
static inline size_t kv_store_off(const kv_store *s, bool v, int32_t h, int32_t c) {
    return ((size_t)h * (size_t)s->size + (size_t)c) * (v ? s->head_v : s->head_k);
}

/* Cell c of a layer's K buffer (v: V) buf, or of a copy of one, gathered
 * into row (row_k / row_v bytes, head after head), and scattered back.
 * O(row bytes). */
void kv_store_get_row(const kv_store *s, bool v, const void *buf, int32_t c, void *row);
void kv_store_put_row(const kv_store *s, bool v, void *buf, int32_t c, const void *row);

/* Bytes of a row of n elements of a cache type (F32, F16, Q8_0), 0 if the
 * type is not a cache type or n does not fit its blocks. */
size_t kv_row_bytes(int32_t type, int64_t n);

/* Allocate zeroed storage: one arena of huge pages for all layers (an
 * attention pass streams a head's cells; with 4 KiB pages the hardware
 * prefetcher stops at every page edge). CS_ERR_UNSUPPORTED (named) for a type other than
 * F32/F16/Q8_0 or Q8_0 with head_dim % 32 != 0; CS_ERR_NOMEM. */
cs_status kv_store_init(kv_store *s, int32_t n_layer, int32_t size, int32_t n_head_kv,
                        int32_t head_dim, int32_t type_k, int32_t type_v);
void kv_store_free(kv_store *s); /* safe on a zeroed or half-built store */

/* Store the K and V rows (n_embd_kv floats each; K already rotated) of one
 * cell of one layer, converting to the cache types. */
void kv_store_write(const kv_store *s, const kernels_table *k, int32_t layer, int32_t cell,
                    const float *krow, const float *vrow);

/* K-shift: for every non-empty cell with delta != 0, every layer and K
 * head, rotate the first n_rot elements of the head by the angle of
 * position delta, in place: the forward pass's angles (kernels_rope_cache,
 * YaRN ramp included) with the magnitude factor cancelled, so that K is
 * rotated and never rescaled (spec §3.2 [R]); Q8_0 heads are dequantized,
 * rotated and requantized. Then every delta is reset
 * (kv_cells_reset_shift). Split across threads by cell, each thread doing
 * every layer of its cells. Returns the number of cells rotated and adds
 * the K bytes read+written to *bytes; returns -1 (CS_ERR_NOMEM recorded,
 * nothing rotated, deltas still pending) when its scratch cannot be
 * allocated. O(cells shifted * n_layer * n_embd_kv). */
int32_t kv_store_apply_shift(kv_store *s, kv_cells *c, const kernels_table *k, threadpool *tp,
                             const kernels_rope_params *rope, uint64_t *bytes);

/* Move the K and V of the planned blocks in every layer (one memmove per
 * head of each block: bit-exact for every type). Adds the bytes moved to *bytes.
 * The source rows are left as they were, so this is also the row copy of
 * kv_cells_seq_own (whose source cells stay in use). */
void kv_store_move(kv_store *s, const kv_move *moves, int32_t n_moves, uint64_t *bytes);

#endif /* CS_KV_CACHE_H */
