/* kv_cells.h: pure KV-cache metadata (docs/KV_CACHE_SPEC.md §1): per cell the position,
 * the pending RoPE delta and the set of sequences; the used count and the
 * search hint head. No tensors here: kv_cache.c owns the K/V rows.
 *
 * Invariants (checked by kv_cells_check):
 *  C1  pos >= 0  <=>  seq != 0 (a cell is empty iff it has no sequence)
 *  C2  an empty cell has delta == 0
 *  U   used == number of non-empty cells; 0 <= head < size
 *  S   the per-sequence min/max bookkeeping matches a recount of the cells */
#ifndef CS_KV_CELLS_H
#define CS_KV_CELLS_H

#include "common.h"
#include "cs_limits.h"

typedef struct kv_cells {
    int32_t size;  /* number of cells */
    int32_t used;  /* non-empty cells */
    int32_t head;  /* where the next slot search starts (a hint; any value in [0, size) is valid) */
    cs_pos *pos;   /* (size) position, -1 when empty */
    cs_pos *delta; /* (size) RoPE angle still owed to the stored K */
    uint64_t *seq; /* (size) bitset of sequence ids */
    bool has_shift; /* set by seq_add/seq_div matches; a cell with delta != 0 implies it */
    /* Per-sequence position bookkeeping (spec FIX 17: duplicate positions
     * must be counted). For sequence s: seq_n[s] cells hold s; the smallest
     * position is seq_min[s], held by seq_nmin[s] of them, the largest
     * seq_max[s], held by seq_nmax[s] (all -1 / 0 when seq_n[s] == 0).
     * Adding a membership is O(1); removing one is O(1) unless it was the
     * last cell at the min or max, in which case the operation ends with one
     * rescan of the cells for the affected sequences (O(size + memberships),
     * the same order as the O(size) bulk operation that caused it). */
    int32_t seq_n[CS_MAX_SEQ];
    cs_pos seq_min[CS_MAX_SEQ];
    cs_pos seq_max[CS_MAX_SEQ];
    int32_t seq_nmin[CS_MAX_SEQ];
    int32_t seq_nmax[CS_MAX_SEQ];
} kv_cells;

/* A coalesced block move: cells [src, src + n) go to [dst, dst + n). */
typedef struct kv_move {
    int32_t src;
    int32_t dst;
    int32_t n;
} kv_move;

/* Allocate size cells, all empty. CS_ERR_INVALID_ARG for size outside
 * [1, CS_MAX_CTX]; CS_ERR_NOMEM. */
cs_status kv_cells_init(kv_cells *c, int32_t size);
/* Release the arrays; safe on a zeroed struct. */
void kv_cells_free(kv_cells *c);

/* Every cell empty, head 0, no pending shift. */
void kv_cells_clear(kv_cells *c);

/* 1 + the highest non-empty index, or 0 (spec §1.4; cell 0 included). O(size). */
int32_t kv_cells_cell_max(const kv_cells *c);

/* Find n free cells for a batch. First llama.cpp PR #5691's heuristic: if head >
 * used + 2n, head = 0. contiguous: n consecutive free cells, searched from
 * head with llama.cpp PR #5691's wrap rule (spec §1.6), head = first cell of the slot;
 * otherwise any n free cells starting at head, wrapping around. Writes the
 * cell indices to idx[0, n) in batch order and returns true; false (nothing
 * changed, head included) when there is no room or n <= 0. Does not mark
 * the cells: see kv_cells_assign. O(size) scattered; contiguous O(size * n)
 * worst case (each clash check reads up to n cells), O(size) typically. */
bool kv_cells_find_slot(kv_cells *c, int32_t n, bool contiguous, int32_t *idx);

/* Mark cell i (must be empty) as holding position pos >= 0 in the
 * sequences of bitset seqs (non-empty); delta 0; head = i + 1 (0 past the
 * end), so after a batch head follows its last cell (spec §1.6). O(bits). */
void kv_cells_assign(kv_cells *c, int32_t i, cs_pos pos, uint64_t seqs);

/* Remove seq (seq < 0: all) from cells with pos in [p0, p1) (negative
 * bounds open; an empty range is a no-op). Freed cells get pos -1 and
 * delta 0; head = min(head, first freed cell). Returns the number of cells
 * freed. O(size). */
int32_t kv_cells_seq_rm(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1);

/* Largest / smallest position of seq, -1 when it has no cell or seq is
 * outside [0, CS_MAX_SEQ). O(1). */
cs_pos kv_cells_seq_pos_max(const kv_cells *c, cs_seq seq);
cs_pos kv_cells_seq_pos_min(const kv_cells *c, cs_seq seq);

/* Sum over cells of the number of sequences. O(size). */
int32_t kv_cells_token_count(const kv_cells *c);

/* ---------------------------------------------- spec §2 operations
 * Preconditions: seq ids in [0, CS_MAX_SEQ) (seq < 0 only where noted);
 * the public wrappers in context.c validate them. Negative p0 means 0,
 * negative p1 means +infinity, ranges are half-open. */

/* Add dst to every cell of src with pos in [p0, p1). src == dst or an
 * empty range: no-op; otherwise head = 0 (llama.cpp PR #5691's side effect). dst may
 * end up with duplicate positions (spec §2.4). O(size). */
void kv_cells_seq_cp(kv_cells *c, cs_seq src, cs_seq dst, cs_pos p0, cs_pos p1);

/* Free cells without seq, reduce the rest to {seq}; head = min(head,
 * first cell without seq, already empty ones included, as in llama.cpp PR #5691).
 * Returns cells freed. O(size). */
int32_t kv_cells_seq_keep(kv_cells *c, cs_seq seq);

/* pos += delta and cell delta += delta for cells of seq (>= 0) in [p0, p1);
 * a cell whose pos becomes negative is freed with all its sequences;
 * has_shift set if any cell matched; head = first freed cell, else 0
 * (llama.cpp c392e509). delta 0 or an empty range: no-op. Positions and
 * deltas saturate at the int32 range (the public wrapper keeps them far
 * from it; saturation only rules out overflow). Returns the number of
 * cells matched. O(size). */
int32_t kv_cells_seq_add(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1, cs_pos delta);

/* pos = pos / d, cell delta += new - old, for cells of seq in [p0, p1);
 * d >= 1 (1: no-op; an empty range: no-op). has_shift set if any cell
 * matched; used and head unchanged. Returns matches. O(size). */
int32_t kv_cells_seq_div(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1, int32_t d);

/* ctxshift's extension (not in llama.cpp; docs/KV_CACHE.md "Owning shared
 * cells"): give seq cells of its own for [p0, p1), so that a later
 * seq_add/seq_div on seq moves nothing of another sequence. Every cell
 * holding seq and at least one other sequence, with pos in range, is
 * split: seq leaves it, and a free cell (the lowest free ones, in
 * ascending order of the split cells) gets its pos and delta, with {seq}
 * only. Cells held by seq alone are untouched. All or nothing: when fewer
 * cells are free than cells to split, returns -1 and nothing changes.
 * Otherwise writes the (split cell -> copy) pairs to copies (capacity:
 * size), coalesced into blocks (consecutive sources to consecutive
 * destinations) in ascending source order; sources were non-empty and
 * destinations empty, so no block overlaps another's source. Returns the
 * number of blocks and sets *n_cells to the cells split. used grows by
 * *n_cells; head, has_shift (a copied delta != 0 was already covered by
 * it) and the per-sequence positions (seq keeps the same positions, in
 * other cells) are unchanged. Does not touch K/V: the caller copies the
 * rows (kv_store_move). seq in [0, CS_MAX_SEQ). O(size). */
int32_t kv_cells_seq_own(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1, kv_move *copies,
                         int32_t *n_cells);

/* Number of non-empty cells with delta != 0. */
int32_t kv_cells_n_pending(const kv_cells *c);

/* After the K rows were rotated: every delta 0, has_shift false. */
void kv_cells_reset_shift(kv_cells *c);

/* ------------------------------------------------------------ defrag */

/* Plan one defrag pass (spec §4.2, with fixes 2-6): fill holes in
 * [0, used) with the non-empty cells nearest the end, at most max_moves
 * blocks (0 = unlimited). Writes the blocks, coalesced per §4.3, in
 * ascending source order to moves (capacity: size) and returns their
 * count (0: nothing to do). Sources are all >= used and destinations < used,
 * so the blocks never overlap and may be applied in any order. Does not
 * change c. O(size). ids: size int32s of scratch; on return ids[0, cell_max)
 * holds the spec's ids vector (ids[i] == i: stays, == cell_max: not moved,
 * else the destination of cell i). */
int32_t kv_cells_defrag_plan(const kv_cells *c, int32_t max_moves, int32_t *ids, kv_move *moves);

/* Apply planned moves to the metadata: each source cell's pos, delta and
 * seq go to its destination (which must be empty) and the source is
 * cleared; a cell moved onto itself is left alone (spec FIX 15); used and
 * the per-sequence positions unchanged; head = used (0 when used == size).
 * O(cells moved). */
void kv_cells_apply_moves(kv_cells *c, const kv_move *moves, int32_t n_moves);

/* Check every invariant (C1, C2, used, head, has_shift, and the
 * per-sequence bookkeeping against a recount); returns false and sets
 * cs_last_error on the first violation (tests and debug builds call it
 * after every operation). O(size * CS_MAX_SEQ). */
bool kv_cells_check(const kv_cells *c);

#endif /* CS_KV_CELLS_H */
