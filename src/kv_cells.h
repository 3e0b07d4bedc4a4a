/* kv_cells.h: pure KV-cache metadata (spec §1): per cell the position,
 * the pending RoPE delta and the set of sequences; the used count and the
 * search hint head. No tensors here: kv_cache.c owns the K/V rows.
 *
 * Invariants (checked by kv_cells_check):
 *  C1  pos >= 0  <=>  seq != 0 (a cell is empty iff it has no sequence)
 *  C2  an empty cell has delta == 0
 *  U   used == number of non-empty cells; 0 <= head < size */
#ifndef CS_KV_CELLS_H
#define CS_KV_CELLS_H

#include "common.h"

typedef struct kv_cells {
    int32_t size;   /* number of cells */
    int32_t used;   /* non-empty cells */
    int32_t head;   /* where the next slot search starts (a hint; any value in [0, size) is valid) */
    cs_pos *pos;    /* (size) position, -1 when empty */
    cs_pos *delta;  /* (size) RoPE angle still owed to the stored K */
    uint64_t *seq;  /* (size) bitset of sequence ids */
    bool has_shift; /* some cell has delta != 0 */
} kv_cells;

cs_status kv_cells_init(kv_cells *c, int32_t size);
void kv_cells_free(kv_cells *c);

/* Every cell empty, head 0, no pending shift. */
void kv_cells_clear(kv_cells *c);

/* 1 + the highest non-empty index, or 0 (spec §1.4; cell 0 included). O(size). */
int32_t kv_cells_cell_max(const kv_cells *c);

/* Find n free cells for a batch. contiguous: n consecutive free cells,
 * searched from head with the PR's wrap rule (spec §1.6); otherwise any n
 * free cells starting at head, wrapping around. Writes the cell indices to
 * idx[0, n) in batch order and returns true; false (nothing changed) when
 * there is no room. Does not mark the cells: see kv_cells_assign. O(size). */
bool kv_cells_find_slot(kv_cells *c, int32_t n, bool contiguous, int32_t *idx);

/* Mark cell i (must be empty) as holding position pos in the sequences of
 * bitset seqs (non-empty). */
void kv_cells_assign(kv_cells *c, int32_t i, cs_pos pos, uint64_t seqs);

/* Remove seq (seq < 0: all) from cells with pos in [p0, p1) (negative
 * bounds open). Returns the number of cells freed. */
int32_t kv_cells_seq_rm(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1);

/* Largest / smallest position of seq, -1 when it has no cell. O(size). */
cs_pos kv_cells_seq_pos_max(const kv_cells *c, cs_seq seq);
cs_pos kv_cells_seq_pos_min(const kv_cells *c, cs_seq seq);

/* Sum over cells of the number of sequences. O(size). */
int32_t kv_cells_token_count(const kv_cells *c);

/* Check every invariant; returns false and sets cs_last_error on the first
 * violation (tests and debug builds call it after every operation). */
bool kv_cells_check(const kv_cells *c);

#endif /* CS_KV_CELLS_H */
