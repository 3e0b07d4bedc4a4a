/* test_kv_cells.c: KV cache metadata (docs/KV_CACHE_SPEC.md §1, §2, §4.2), test ids of spec
 * §8 A and B (metadata level). Expected values are worked out by hand from
 * the spec in the comments beside them; the differential fuzz (A15) runs
 * every operation on kv_cells and on the independent reference model in
 * fixtures/kv_ref.c and compares after each step. Fixed seeds throughout. */
#include "test.h"

#include "common.h"
#include "cs_limits.h"
#include "fixtures/kv_ref.h"
#include "kv_cells.h"

/* A15: 250 episodes x 400 steps = 100,000 random operations. */
#define FUZZ_SEED      0x6b7663656c6c73ull
#define FUZZ_EPISODES  250
#define FUZZ_STEPS     400
#define FUZZ_MAX_CELLS 64
#define FUZZ_MAX_SEQ   8
#define FUZZ_POS_SPAN  40 /* random positions in [0, span): duplicates are common */
#define FUZZ_MAX_BATCH 6
/* B2/B3: random fragmented caches. */
#define DEFRAG_SEED      0x64656672616773ull
#define DEFRAG_CASES     400
#define DEFRAG_MAX_CELLS 200
#define DEFRAG_MAX_CAP   4

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state;
static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int32_t rnd(int32_t n) {
    return n > 0 ? (int32_t)(rng_next() % (uint64_t)n) : 0;
}

#define BIT(s) ((uint64_t)1 << (s))

static void cells_new(kv_cells *c, int32_t size) {
    assert_int_equal(kv_cells_init(c, size), CS_OK);
    assert_true(kv_cells_check(c));
}

/* Put token k of a run at cell cells[k] with position p0 + k. */
static void put(kv_cells *c, int32_t cell, cs_pos pos, uint64_t seqs) {
    kv_cells_assign(c, cell, pos, seqs);
    assert_true(kv_cells_check(c));
}

static void put_run(kv_cells *c, int32_t cell0, int32_t n, cs_pos p0, uint64_t seqs) {
    for (int32_t k = 0; k < n; k++) put(c, cell0 + k, p0 + k, seqs);
}

/* Deep copy of the metadata (dst freshly initialised with the same size). */
static void cells_copy(kv_cells *dst, const kv_cells *src) {
    cs_pos *p = dst->pos, *d = dst->delta;
    uint64_t *s = dst->seq;
    *dst = *src;
    dst->pos = p;
    dst->delta = d;
    dst->seq = s;
    memcpy(p, src->pos, (size_t)src->size * sizeof *p);
    memcpy(d, src->delta, (size_t)src->size * sizeof *d);
    memcpy(s, src->seq, (size_t)src->size * sizeof *s);
}

static void assert_cells_equal(const kv_cells *a, const kv_cells *b) {
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->used, b->used);
    assert_int_equal(a->head, b->head);
    assert_int_equal(a->has_shift, b->has_shift);
    for (int32_t i = 0; i < a->size; i++) {
        assert_int_equal(a->pos[i], b->pos[i]);
        assert_int_equal(a->delta[i], b->delta[i]);
        assert_int_equal(a->seq[i], b->seq[i]);
    }
    for (int32_t s = 0; s < CS_MAX_SEQ; s++) {
        assert_int_equal(kv_cells_seq_pos_min(a, s), kv_cells_seq_pos_min(b, s));
        assert_int_equal(kv_cells_seq_pos_max(a, s), kv_cells_seq_pos_max(b, s));
    }
}

static void assert_cell(const kv_cells *c, int32_t i, cs_pos pos, cs_pos delta, uint64_t seq) {
    assert_int_equal(c->pos[i], pos);
    assert_int_equal(c->delta[i], delta);
    assert_int_equal(c->seq[i], seq);
}

/* ------------------------------------------------------ A1 find_slot */

static void test_kv_cells_A1_find_slot_contiguous(void **state) {
    (void)state;
    kv_cells c;
    int32_t idx[16];
    cells_new(&c, 8);
    /* empty cache: the slot starts at head 0 */
    assert_true(kv_cells_find_slot(&c, 6, true, idx));
    for (int32_t k = 0; k < 6; k++) assert_int_equal(idx[k], k);
    assert_int_equal(c.head, 0);
    for (int32_t k = 0; k < 6; k++) kv_cells_assign(&c, idx[k], k, BIT(0));
    assert_int_equal(c.head, 6); /* follows the batch */
    /* free cells 1, 2 -> head = min(6, 1) = 1; free are 1, 2, 6, 7 */
    assert_int_equal(kv_cells_seq_rm(&c, 0, 1, 3), 2);
    assert_int_equal(c.head, 1);
    /* 3 contiguous: [1,4) clashes at 3, [4,7) at 4, [5,8) at 5, wrap, [0,3)
     * at 0 -> every start tested: fails although size - used = 4 >= 3 */
    kv_cells before;
    cells_new(&before, 8);
    cells_copy(&before, &c);
    assert_false(kv_cells_find_slot(&c, 3, true, idx));
    assert_cells_equal(&c, &before); /* failure changes nothing, head included */
    /* 2 contiguous: [1,3) */
    assert_true(kv_cells_find_slot(&c, 2, true, idx));
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 2);
    assert_int_equal(c.head, 1);
    /* success after defrag: cells 4, 5 fill the hole [1,3) -> [0,4) used */
    kv_move moves[8];
    int32_t scratch[8];
    int32_t nb = kv_cells_defrag_plan(&c, 0, scratch, moves);
    assert_true(nb > 0);
    kv_cells_apply_moves(&c, moves, nb);
    assert_true(kv_cells_check(&c));
    assert_int_equal(kv_cells_cell_max(&c), 4);
    assert_int_equal(c.head, 4);
    assert_true(kv_cells_find_slot(&c, 3, true, idx));
    for (int32_t k = 0; k < 3; k++) assert_int_equal(idx[k], 4 + k);
    /* wrap-around: a full cache with cells 0, 1 freed, head forced to 7:
     * 7 + 2 > 8 wraps to 0, and [0,2) is free */
    kv_cells_clear(&c);
    put_run(&c, 0, 8, 0, BIT(0));
    assert_int_equal(kv_cells_seq_rm(&c, 0, 0, 2), 2);
    c.head = 7;
    assert_true(kv_cells_find_slot(&c, 2, true, idx));
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    assert_int_equal(c.head, 0);
    kv_cells_free(&before);
    kv_cells_free(&c);
}

static void test_kv_cells_A1_find_slot_head_heuristic(void **state) {
    (void)state;
    kv_cells c;
    int32_t idx[4];
    cells_new(&c, 16);
    put_run(&c, 0, 4, 0, BIT(0));
    /* head 12 > used 4 + 2*2: restart from 0 -> first run of 2 is [4,6) */
    c.head = 12;
    assert_true(kv_cells_find_slot(&c, 2, true, idx));
    assert_int_equal(idx[0], 4);
    assert_int_equal(idx[1], 5);
    /* head 8 == used 4 + 2*2 (not greater): the search starts at 8 */
    c.head = 8;
    assert_true(kv_cells_find_slot(&c, 2, true, idx));
    assert_int_equal(idx[0], 8);
    assert_int_equal(idx[1], 9);
    /* same rule in scattered mode */
    c.head = 12;
    assert_true(kv_cells_find_slot(&c, 2, false, idx));
    assert_int_equal(idx[0], 4);
    assert_int_equal(idx[1], 5);
    kv_cells_free(&c);
}

static void test_kv_cells_A1_find_slot_scattered(void **state) {
    (void)state;
    kv_cells c, before;
    int32_t idx[16];
    cells_new(&c, 8);
    cells_new(&before, 8);
    put_run(&c, 0, 8, 0, BIT(0));
    assert_false(kv_cells_find_slot(&c, 1, false, idx)); /* full */
    /* free 1, 2, 6, 7 */
    assert_int_equal(kv_cells_seq_rm(&c, 0, 1, 3), 2);
    assert_int_equal(kv_cells_seq_rm(&c, 0, 6, -1), 2);
    assert_int_equal(c.head, 0); /* the full batch wrapped head to 0; min(0, 1) */
    /* from head 6, wrapping: 6, 7, 1 (batch order) */
    c.head = 6;
    assert_true(kv_cells_find_slot(&c, 3, false, idx));
    assert_int_equal(idx[0], 6);
    assert_int_equal(idx[1], 7);
    assert_int_equal(idx[2], 1);
    /* succeeds iff size - used >= n: 4 fits, 5 does not */
    assert_true(kv_cells_find_slot(&c, 4, false, idx));
    cells_copy(&before, &c);
    assert_false(kv_cells_find_slot(&c, 5, false, idx));
    assert_cells_equal(&c, &before);
    /* larger than the cache, or empty: fails, nothing changes */
    assert_false(kv_cells_find_slot(&c, 9, false, idx));
    assert_false(kv_cells_find_slot(&c, 9, true, idx));
    assert_false(kv_cells_find_slot(&c, 0, false, idx));
    assert_cells_equal(&c, &before);
    /* assign follows the batch: head = last cell + 1 (wrapping) */
    assert_true(kv_cells_find_slot(&c, 3, false, idx));
    for (int32_t k = 0; k < 3; k++) kv_cells_assign(&c, idx[k], 100 + k, BIT(1));
    assert_int_equal(c.head, 2); /* last cell 1 */
    assert_true(kv_cells_check(&c));
    kv_cells_free(&before);
    kv_cells_free(&c);
}

static void test_kv_cells_init_rejects_bad_size(void **state) {
    (void)state;
    kv_cells c;
    assert_int_equal(kv_cells_init(&c, 0), CS_ERR_INVALID_ARG);
    assert_int_equal(kv_cells_init(&c, -3), CS_ERR_INVALID_ARG);
    assert_int_equal(kv_cells_init(&c, CS_MAX_CTX + 1), CS_ERR_INVALID_ARG);
    kv_cells_free(&c); /* safe on the zeroed struct */
}

/* ------------------------------------------------- A2 used invariant */

static void test_kv_cells_A2_used_invariant(void **state) {
    (void)state;
    /* a scripted mix of every operation; after each: used == count of
     * non-empty cells and C1/C2 (kv_cells_check recounts both) */
    kv_cells c;
    int32_t idx[8];
    cells_new(&c, 12);
    for (int32_t b = 0; b < 3; b++) {
        assert_true(kv_cells_find_slot(&c, 3, b != 1, idx));
        for (int32_t k = 0; k < 3; k++) kv_cells_assign(&c, idx[k], b * 3 + k, BIT(b % 2));
        assert_true(kv_cells_check(&c));
    }
    assert_int_equal(c.used, 9);
    kv_cells_seq_cp(&c, 0, 2, 0, 4);
    assert_true(kv_cells_check(&c));
    assert_int_equal(c.used, 9);
    assert_int_equal(kv_cells_seq_add(&c, 2, 0, -1, -2), 3); /* pos 0..2 of seq 2 -> 0 and 1 die */
    assert_true(kv_cells_check(&c));
    assert_int_equal(c.used, 7);
    assert_int_equal(kv_cells_seq_div(&c, 1, -1, -1, 2), 3);
    assert_true(kv_cells_check(&c));
    assert_int_equal(c.used, 7);
    assert_int_equal(kv_cells_seq_rm(&c, 0, 6, 7), 1);
    assert_true(kv_cells_check(&c));
    assert_int_equal(c.used, 6);
    assert_int_equal(kv_cells_seq_keep(&c, 0), 3); /* seq 1's 3 cells */
    assert_true(kv_cells_check(&c));
    assert_int_equal(c.used, 3);
    kv_move moves[12];
    int32_t scratch[12];
    int32_t nb = kv_cells_defrag_plan(&c, 0, scratch, moves);
    kv_cells_apply_moves(&c, moves, nb);
    assert_true(kv_cells_check(&c));
    assert_int_equal(c.used, 3);
    assert_int_equal(kv_cells_cell_max(&c), 3);
    kv_cells_clear(&c);
    assert_true(kv_cells_check(&c));
    assert_int_equal(c.used, 0);
    kv_cells_free(&c);
}

/* ---------------------------------------------------------- A3 seq_rm */

static void test_kv_cells_A3_seq_rm_half_open(void **state) {
    (void)state;
    kv_cells c, before;
    cells_new(&c, 16);
    cells_new(&before, 16);
    put_run(&c, 0, 8, 0, BIT(0));    /* seq 0 at pos 0..7 in cells 0..7 */
    kv_cells_seq_cp(&c, 0, 1, 4, 8); /* cells 4..7 shared {0,1} */
    c.head = 10;
    /* [2,5): cells 2, 3 freed; cell 4 only loses 0; pos 5 == p1 survives */
    assert_int_equal(kv_cells_seq_rm(&c, 0, 2, 5), 2);
    assert_int_equal(c.used, 6);
    assert_int_equal(c.head, 2); /* min(head, first freed) */
    assert_cell(&c, 2, -1, 0, 0);
    assert_cell(&c, 4, 4, 0, BIT(1));
    assert_cell(&c, 5, 5, 0, BIT(0) | BIT(1));
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), 0);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 7);
    assert_int_equal(kv_cells_seq_pos_min(&c, 1), 4);
    /* p0 < 0 is open: cell 4 (only seq 1 now) is freed; head stays 2 */
    assert_int_equal(kv_cells_seq_rm(&c, 1, -1, 5), 1);
    assert_int_equal(c.head, 2);
    assert_int_equal(kv_cells_seq_pos_min(&c, 1), 5);
    /* p1 < 0 is open: cells 6, 7 lose 0, keep 1 */
    assert_int_equal(kv_cells_seq_rm(&c, 0, 6, -1), 0);
    assert_cell(&c, 6, 6, 0, BIT(1));
    assert_cell(&c, 7, 7, 0, BIT(1));
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 5);
    assert_int_equal(kv_cells_seq_pos_max(&c, 1), 7);
    /* empty ranges: no change at all (head included) */
    c.head = 9;
    cells_copy(&before, &c);
    assert_int_equal(kv_cells_seq_rm(&c, 0, 3, 3), 0);
    assert_int_equal(kv_cells_seq_rm(&c, -1, 5, 2), 0);
    assert_int_equal(kv_cells_seq_rm(&c, -1, -5, 0), 0);
    assert_cells_equal(&c, &before);
    /* seq < 0: every member goes; [0,1) frees cell 0, [5,6) the shared 5 */
    assert_int_equal(kv_cells_seq_rm(&c, -1, 0, 1), 1);
    assert_int_equal(c.head, 0);
    assert_int_equal(kv_cells_seq_rm(&c, -1, 5, 6), 1);
    assert_cell(&c, 5, -1, 0, 0);
    assert_int_equal(c.used, 3); /* cells 1, 6, 7 */
    assert_true(kv_cells_check(&c));
    /* everything */
    assert_int_equal(kv_cells_seq_rm(&c, -1, -1, -1), 3);
    assert_int_equal(c.used, 0);
    assert_int_equal(kv_cells_token_count(&c), 0);
    assert_int_equal(kv_cells_seq_pos_max(&c, 1), -1);
    assert_true(kv_cells_check(&c));
    kv_cells_free(&before);
    kv_cells_free(&c);
}

/* ---------------------------------------------------------- A4 seq_cp */

static void test_kv_cells_A4_seq_cp(void **state) {
    (void)state;
    kv_cells c, before;
    cells_new(&c, 16);
    cells_new(&before, 16);
    put_run(&c, 0, 6, 0, BIT(0)); /* seq 0 at 0..5 */
    c.head = 9;
    kv_cells_seq_cp(&c, 0, 1, 2, 4);
    for (int32_t i = 0; i < 6; i++)
        assert_int_equal(c.seq[i], (i == 2 || i == 3) ? BIT(0) | BIT(1) : BIT(0));
    assert_int_equal(c.used, 6);
    assert_int_equal(kv_cells_token_count(&c), 8);
    assert_int_equal(kv_cells_seq_pos_min(&c, 1), 2);
    assert_int_equal(kv_cells_seq_pos_max(&c, 1), 3);
    assert_int_equal(c.head, 0); /* llama.cpp PR #5691's side effect */
    /* src == dst and empty ranges: nothing changes */
    c.head = 7;
    cells_copy(&before, &c);
    kv_cells_seq_cp(&c, 0, 0, -1, -1);
    kv_cells_seq_cp(&c, 0, 3, 4, 4);
    assert_cells_equal(&c, &before);
    /* copying onto a position dst already has: both cells stay */
    put(&c, 8, 3, BIT(2) | BIT(3));  /* seq 2 at pos 3 in cell 8 (with seq 3) */
    kv_cells_seq_cp(&c, 0, 2, 3, 4); /* cell 3 (pos 3) joins seq 2 */
    assert_int_equal(c.seq[3], BIT(0) | BIT(1) | BIT(2));
    assert_int_equal(kv_cells_token_count(&c), 8 + 2 + 1);
    /* remove one copy: seq 3 at cell 8 pushed below 0 frees cell 8 with
     * seq 2 in it; seq 2 still has pos 3 in cell 3 (counted multiset) */
    assert_int_equal(kv_cells_seq_add(&c, 3, -1, -1, -10), 1);
    assert_cell(&c, 8, -1, 0, 0);
    assert_int_equal(kv_cells_seq_pos_min(&c, 2), 3);
    assert_int_equal(kv_cells_seq_pos_max(&c, 2), 3);
    assert_int_equal(kv_cells_seq_pos_max(&c, 3), -1);
    assert_true(kv_cells_check(&c));
    kv_cells_free(&before);
    kv_cells_free(&c);
}

/* ------------------------------------------- seq_own (ctxshift's op) */

static void test_kv_cells_seq_own(void **state) {
    (void)state;
    kv_cells c, before;
    kv_move m[8];
    int32_t n = -1;
    cells_new(&c, 8);
    cells_new(&before, 8);
    put(&c, 0, 0, BIT(0) | BIT(1));
    put(&c, 1, 1, BIT(0) | BIT(1));
    put(&c, 2, 2, BIT(1));
    put(&c, 4, 3, BIT(0) | BIT(1) | BIT(2));
    put(&c, 6, 4, BIT(0));
    c.delta[4] = 5; /* a pending rotation, as seq_add leaves it */
    c.has_shift = true;
    c.head = 2;
    assert_true(kv_cells_check(&c));
    /* [1, inf): cells 1 and 4 are shared, cell 2 is seq 1's alone, cell 0
     * is out of range; the copies go to the lowest free cells 3 and 5 */
    assert_int_equal(kv_cells_seq_own(&c, 1, 1, -1, m, &n), 2);
    assert_int_equal(n, 2);
    assert_int_equal(m[0].src, 1);
    assert_int_equal(m[0].dst, 3);
    assert_int_equal(m[0].n, 1);
    assert_int_equal(m[1].src, 4);
    assert_int_equal(m[1].dst, 5);
    assert_int_equal(m[1].n, 1);
    assert_cell(&c, 0, 0, 0, BIT(0) | BIT(1));
    assert_cell(&c, 1, 1, 0, BIT(0));
    assert_cell(&c, 2, 2, 0, BIT(1));
    assert_cell(&c, 3, 1, 0, BIT(1));
    assert_cell(&c, 4, 3, 5, BIT(0) | BIT(2)); /* both copies keep the owed rotation */
    assert_cell(&c, 5, 3, 5, BIT(1));
    assert_cell(&c, 6, 4, 0, BIT(0));
    assert_cell(&c, 7, -1, 0, 0);
    assert_int_equal(c.used, 7);
    assert_int_equal(c.head, 2);
    assert_true(c.has_shift);
    assert_int_equal(kv_cells_token_count(&c), 9); /* memberships unchanged */
    assert_int_equal(kv_cells_seq_pos_min(&c, 1), 0);
    assert_int_equal(kv_cells_seq_pos_max(&c, 1), 3);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 4);
    assert_true(kv_cells_check(&c));
    /* the whole range: only cell 0 (pos 0) is left to split; then nothing
     * is, and an empty range is a no-op */
    assert_int_equal(kv_cells_seq_own(&c, 1, -1, -1, m, &n), 1);
    assert_int_equal(n, 1);
    assert_int_equal(m[0].src, 0);
    assert_int_equal(m[0].dst, 7);
    assert_int_equal(c.used, 8);
    assert_int_equal(kv_cells_seq_own(&c, 1, -1, -1, m, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(kv_cells_seq_own(&c, 0, 3, 3, m, &n), 0);
    assert_int_equal(n, 0);
    /* all or nothing: seq 0 shares cell 4 (with 2) and the cache is full */
    cells_copy(&before, &c);
    assert_int_equal(kv_cells_seq_own(&c, 0, -1, -1, m, &n), -1);
    assert_int_equal(n, 0);
    assert_cells_equal(&c, &before);
    kv_cells_seq_rm(&c, 1, 0, 1); /* frees cell 7: one free cell, one to split */
    assert_int_equal(kv_cells_seq_own(&c, 2, -1, -1, m, &n), 1);
    assert_cell(&c, 4, 3, 5, BIT(0));
    assert_cell(&c, 7, 3, 5, BIT(2));
    assert_true(kv_cells_check(&c));
    /* a run of shared cells to a run of free ones: one block */
    kv_cells_clear(&c);
    put_run(&c, 0, 3, 0, BIT(0) | BIT(3));
    assert_int_equal(kv_cells_seq_own(&c, 3, -1, -1, m, &n), 1);
    assert_int_equal(n, 3);
    assert_int_equal(m[0].src, 0);
    assert_int_equal(m[0].dst, 3);
    assert_int_equal(m[0].n, 3);
    for (int32_t i = 0; i < 3; i++) {
        assert_cell(&c, i, i, 0, BIT(0));
        assert_cell(&c, 3 + i, i, 0, BIT(3));
    }
    assert_true(kv_cells_check(&c));
    kv_cells_free(&before);
    kv_cells_free(&c);
}

/* -------------------------------------------------------- A5 seq_keep */

static void test_kv_cells_A5_seq_keep(void **state) {
    (void)state;
    kv_cells c;
    cells_new(&c, 8);
    put(&c, 0, 0, BIT(0));
    put(&c, 1, 1, BIT(0) | BIT(1));
    put(&c, 2, 2, BIT(1));
    put(&c, 3, 0, BIT(2));
    put(&c, 4, 3, BIT(1) | BIT(2));
    c.head = 7;
    assert_int_equal(kv_cells_seq_keep(&c, 1), 2); /* cells 0 and 3 */
    assert_cell(&c, 0, -1, 0, 0);
    assert_cell(&c, 1, 1, 0, BIT(1));
    assert_cell(&c, 2, 2, 0, BIT(1));
    assert_cell(&c, 3, -1, 0, 0);
    assert_cell(&c, 4, 3, 0, BIT(1));
    assert_int_equal(c.used, 3);
    assert_int_equal(c.head, 0);
    assert_int_equal(kv_cells_token_count(&c), 3);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), -1);
    assert_int_equal(kv_cells_seq_pos_min(&c, 2), -1);
    assert_int_equal(kv_cells_seq_pos_min(&c, 1), 1);
    assert_int_equal(kv_cells_seq_pos_max(&c, 1), 3);
    assert_true(kv_cells_check(&c));
    /* head moves to the first cell without seq, even one that was already
     * empty (llama.cpp PR #5691): cells 0 and 3 are empty, head 6 -> 0 */
    c.head = 6;
    assert_int_equal(kv_cells_seq_keep(&c, 1), 0);
    assert_int_equal(c.head, 0);
    kv_cells_free(&c);
}

/* --------------------------------------------------------- A6 seq_add */

static void test_kv_cells_A6_seq_add_accumulates(void **state) {
    (void)state;
    kv_cells c, before;
    cells_new(&c, 16);
    cells_new(&before, 16);
    put_run(&c, 0, 10, 0, BIT(0)); /* seq 0 at 0..9 */
    /* delta 0 and empty ranges: no-ops, has_shift untouched, head kept */
    c.head = 12;
    cells_copy(&before, &c);
    assert_int_equal(kv_cells_seq_add(&c, 0, -1, -1, 0), 0);
    assert_int_equal(kv_cells_seq_add(&c, 0, 4, 4, 3), 0);
    assert_int_equal(kv_cells_seq_add(&c, 0, 6, 2, 3), 0);
    assert_cells_equal(&c, &before);
    assert_false(c.has_shift);
    /* no cell of seq 1: nothing matches, has_shift stays false, head = 0 */
    assert_int_equal(kv_cells_seq_add(&c, 1, -1, -1, 5), 0);
    assert_false(c.has_shift);
    assert_int_equal(c.head, 0);
    /* +5 on [5,10): pos 10..14, delta 5 */
    c.head = 12;
    assert_int_equal(kv_cells_seq_add(&c, 0, 5, 10, 5), 5);
    assert_true(c.has_shift);
    assert_int_equal(c.head, 0); /* nothing freed -> 0 */
    for (int32_t i = 5; i < 10; i++) assert_cell(&c, i, i + 5, 5, BIT(0));
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 14);
    /* -3 on [10,15): pos 7..11, delta +5 - 3 = +2 */
    assert_int_equal(kv_cells_seq_add(&c, 0, 10, 15, -3), 5);
    for (int32_t i = 5; i < 10; i++) assert_cell(&c, i, i + 2, 2, BIT(0));
    assert_int_equal(kv_cells_n_pending(&c), 5);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 11);
    /* the K-shift ran */
    kv_cells_reset_shift(&c);
    assert_false(c.has_shift);
    assert_int_equal(kv_cells_n_pending(&c), 0);
    for (int32_t i = 5; i < 10; i++) assert_cell(&c, i, i + 2, 0, BIT(0));
    assert_true(kv_cells_check(&c));
    kv_cells_free(&before);
    kv_cells_free(&c);
}

static void test_kv_cells_A6_seq_add_negative_frees(void **state) {
    (void)state;
    kv_cells c;
    cells_new(&c, 16);
    put_run(&c, 2, 6, 0, BIT(0));    /* seq 0 at pos 0..5 in cells 2..7 */
    kv_cells_seq_cp(&c, 0, 1, 0, 2); /* cells 2, 3 shared with seq 1 */
    c.head = 10;
    /* -2 on [0,3): pos 0 -> -2 and 1 -> -1 die with both sequences; pos 2 -> 0 */
    assert_int_equal(kv_cells_seq_add(&c, 0, 0, 3, -2), 3);
    assert_cell(&c, 2, -1, 0, 0);
    assert_cell(&c, 3, -1, 0, 0);
    assert_cell(&c, 4, 0, -2, BIT(0));
    assert_int_equal(c.used, 4);
    assert_int_equal(c.head, 2); /* first freed */
    assert_true(c.has_shift);
    assert_int_equal(kv_cells_seq_pos_min(&c, 1), -1);
    assert_int_equal(kv_cells_seq_pos_max(&c, 1), -1);
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), 0);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 5);
    assert_true(kv_cells_check(&c));
    /* shared cells move for every sharing sequence: pos 4, 5 of seq 0
     * shared with seq 2, moved through seq 0 */
    kv_cells_seq_cp(&c, 0, 2, 4, 6);
    assert_int_equal(kv_cells_seq_add(&c, 0, 4, 6, 10), 2);
    assert_int_equal(kv_cells_seq_pos_min(&c, 2), 14);
    assert_int_equal(kv_cells_seq_pos_max(&c, 2), 15);
    assert_true(kv_cells_check(&c));
    kv_cells_free(&c);
}

/* --------------------------------------------------------- A7 seq_div */

static void test_kv_cells_A7_seq_div(void **state) {
    (void)state;
    kv_cells c, before;
    cells_new(&c, 8);
    cells_new(&before, 8);
    put_run(&c, 0, 8, 0, BIT(0));
    c.head = 5;
    /* [4,8) / 2: pos 4..7 -> 2 2 3 3, delta new - old = -2 -3 -3 -4 */
    assert_int_equal(kv_cells_seq_div(&c, 0, 4, 8, 2), 4);
    assert_cell(&c, 4, 2, -2, BIT(0));
    assert_cell(&c, 5, 2, -3, BIT(0));
    assert_cell(&c, 6, 3, -3, BIT(0));
    assert_cell(&c, 7, 3, -4, BIT(0));
    assert_cell(&c, 3, 3, 0, BIT(0));
    assert_true(c.has_shift);
    assert_int_equal(c.head, 5); /* unchanged */
    assert_int_equal(c.used, 8);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 3);
    assert_true(kv_cells_check(&c));
    /* d == 1 and empty ranges: no-op */
    cells_copy(&before, &c);
    assert_int_equal(kv_cells_seq_div(&c, 0, -1, -1, 1), 0);
    assert_int_equal(kv_cells_seq_div(&c, 0, 3, 3, 2), 0);
    assert_cells_equal(&c, &before);
    /* add then div: delta = final - original (10 -> 16 -> 4: -6) */
    kv_cells_clear(&c);
    put(&c, 0, 10, BIT(0));
    assert_int_equal(kv_cells_seq_add(&c, 0, -1, -1, 6), 1);
    assert_int_equal(kv_cells_seq_div(&c, 0, -1, -1, 4), 1);
    assert_cell(&c, 0, 4, 4 - 10, BIT(0));
    /* positions below d become 0 and still set has_shift */
    kv_cells_clear(&c);
    put(&c, 0, 0, BIT(0));
    put(&c, 1, 1, BIT(0));
    assert_false(c.has_shift);
    assert_int_equal(kv_cells_seq_div(&c, 0, 0, 2, 4), 2);
    assert_cell(&c, 0, 0, 0, BIT(0));
    assert_cell(&c, 1, 0, -1, BIT(0));
    assert_true(c.has_shift);
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), 0);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 0);
    assert_true(kv_cells_check(&c));
    /* a cell at pos 0 alone: matched, has_shift set, no delta */
    kv_cells_clear(&c);
    put(&c, 3, 0, BIT(1));
    assert_int_equal(kv_cells_seq_div(&c, 1, -1, -1, 3), 1);
    assert_true(c.has_shift);
    assert_int_equal(kv_cells_n_pending(&c), 0);
    kv_cells_free(&before);
    kv_cells_free(&c);
}

/* ------------------------------------------------- A8 pos_min/pos_max */

static void test_kv_cells_A8_pos_min_max_duplicates(void **state) {
    (void)state;
    kv_cells c;
    cells_new(&c, 8);
    /* empty and unknown sequences */
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), -1);
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), -1);
    assert_int_equal(kv_cells_seq_pos_max(&c, -1), -1);
    assert_int_equal(kv_cells_seq_pos_max(&c, CS_MAX_SEQ), -1);
    assert_int_equal(kv_cells_seq_pos_min(&c, CS_MAX_SEQ - 1), -1);
    /* seq 0: pos 5 twice (cells 0 and 1, cell 1 shared with seq 1), pos 2 */
    put(&c, 0, 5, BIT(0));
    put(&c, 1, 5, BIT(0) | BIT(1));
    put(&c, 2, 2, BIT(0));
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), 2);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 5);
    /* remove one copy of 5 (cell 1 dies through seq 1): 5 still present */
    assert_int_equal(kv_cells_seq_add(&c, 1, 5, 6, -10), 1);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 5);
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), 2);
    assert_int_equal(kv_cells_seq_pos_max(&c, 1), -1);
    /* remove the min: min becomes 5 */
    assert_int_equal(kv_cells_seq_rm(&c, 0, 2, 3), 1);
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), 5);
    /* cp, then div of the copy's cells move seq 0 too (shared) */
    put(&c, 3, 9, BIT(0));
    kv_cells_seq_cp(&c, 0, 4, 6, -1); /* cell 3 shared {0,4} */
    assert_int_equal(kv_cells_seq_pos_min(&c, 4), 9);
    assert_int_equal(kv_cells_seq_div(&c, 4, -1, -1, 3), 1); /* 9 -> 3 */
    assert_int_equal(kv_cells_seq_pos_min(&c, 0), 3);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 5);
    assert_int_equal(kv_cells_seq_pos_max(&c, 4), 3);
    /* add moves the max */
    assert_int_equal(kv_cells_seq_add(&c, 0, 5, 6, 20), 1);
    assert_int_equal(kv_cells_seq_pos_max(&c, 0), 25);
    assert_true(kv_cells_check(&c));
    kv_cells_free(&c);
}

/* ----------------------------------------------------------- A9 clear */

static void test_kv_cells_A9_clear_resets_everything(void **state) {
    (void)state;
    kv_cells c;
    cells_new(&c, 8);
    put_run(&c, 1, 5, 3, BIT(0) | BIT(5));
    assert_int_equal(kv_cells_seq_add(&c, 5, -1, -1, 7), 5);
    assert_true(c.has_shift);
    c.head = 6;
    kv_cells_clear(&c);
    for (int32_t i = 0; i < 8; i++) assert_cell(&c, i, -1, 0, 0);
    assert_int_equal(c.used, 0);
    assert_int_equal(c.head, 0);
    assert_false(c.has_shift);
    assert_int_equal(kv_cells_n_pending(&c), 0);
    for (int32_t s = 0; s < CS_MAX_SEQ; s++) {
        assert_int_equal(kv_cells_seq_pos_min(&c, s), -1);
        assert_int_equal(kv_cells_seq_pos_max(&c, s), -1);
    }
    assert_true(kv_cells_check(&c));
    kv_cells_free(&c);
}

/* -------------------------------------------------------- A10 cell_max */

static void test_kv_cells_A10_cell_max(void **state) {
    (void)state;
    kv_cells c;
    cells_new(&c, 8);
    assert_int_equal(kv_cells_cell_max(&c), 0);
    put(&c, 0, 0, BIT(0));
    assert_int_equal(kv_cells_cell_max(&c), 1); /* cell 0 counts (FIX 8) */
    put(&c, 7, 1, BIT(0));
    assert_int_equal(kv_cells_cell_max(&c), 8);
    assert_int_equal(kv_cells_seq_rm(&c, 0, 1, 2), 1);
    assert_int_equal(kv_cells_cell_max(&c), 1);
    kv_cells_free(&c);
}

/* ---------------------------------------------- invariant checker itself */

static void test_kv_cells_check_detects_corruption(void **state) {
    (void)state;
    kv_cells c;
    cells_new(&c, 8);
    put_run(&c, 0, 3, 0, BIT(0));
    c.seq[1] = 0; /* C1: pos >= 0, no sequence */
    assert_false(kv_cells_check(&c));
    c.seq[1] = BIT(0);
    c.delta[5] = 3; /* C2: empty cell with a delta */
    assert_false(kv_cells_check(&c));
    c.delta[5] = 0;
    c.used = 2;
    assert_false(kv_cells_check(&c));
    c.used = 3;
    c.head = 8;
    assert_false(kv_cells_check(&c));
    c.head = 0;
    c.delta[0] = 1; /* a delta without has_shift */
    assert_false(kv_cells_check(&c));
    c.delta[0] = 0;
    c.pos[2] = 9; /* bookkeeping no longer matches the cells */
    assert_false(kv_cells_check(&c));
    c.pos[2] = 2;
    assert_true(kv_cells_check(&c));
    kv_cells_free(&c);
}

/* ------------------------------------------------------------- defrag */

/* Expand blocks to single-cell (src, dst) pairs in ascending source order. */
static int32_t expand_moves(const kv_move *m, int32_t nb, kv_ref_move *out) {
    int32_t n = 0;
    for (int32_t b = 0; b < nb; b++)
        for (int32_t k = 0; k < m[b].n; k++) {
            out[n].src = m[b].src + k;
            out[n].dst = m[b].dst + k;
            n++;
        }
    return n;
}

static void sort_by_src(kv_ref_move *m, int32_t n) { /* insertion sort: n is small */
    for (int32_t i = 1; i < n; i++) {
        kv_ref_move x = m[i];
        int32_t j = i - 1;
        while (j >= 0 && m[j].src > x.src) {
            m[j + 1] = m[j];
            j--;
        }
        m[j + 1] = x;
    }
}

/* Maximal runs with consecutive sources and consecutive destinations
 * (B6), counted from single-cell moves sorted by source. */
static int32_t count_runs(const kv_ref_move *m, int32_t n) {
    int32_t runs = 0;
    for (int32_t i = 0; i < n; i++)
        if (i == 0 || m[i].src != m[i - 1].src + 1 || m[i].dst != m[i - 1].dst + 1) runs++;
    return runs;
}

/* Cells by letter: '.' empty, 'A'.. a cell at pos (letter - 'A') in seq 0. */
static void build_layout(kv_cells *c, const char *layout) {
    for (int32_t i = 0; layout[i]; i++)
        if (layout[i] != '.') put(c, i, layout[i] - 'A', BIT(0));
}

static void assert_layout(const kv_cells *c, const char *layout) {
    for (int32_t i = 0; layout[i]; i++) {
        if (layout[i] == '.') {
            assert_int_equal(c->seq[i], 0);
        } else {
            assert_int_equal(c->pos[i], layout[i] - 'A');
            assert_int_equal(c->seq[i], BIT(0));
        }
    }
}

static void test_kv_cells_B1_worked_example(void **state) {
    (void)state;
    /* spec §4.4: A . . B . C D E . F G . */
    kv_cells c;
    cells_new(&c, 12);
    build_layout(&c, "A..B.CDE.FG.");
    assert_int_equal(c.used, 7);
    assert_int_equal(kv_cells_cell_max(&c), 11);
    int32_t ids[12];
    kv_move moves[12];
    int32_t nb = kv_cells_defrag_plan(&c, 0, ids, moves);
    static const int32_t want_ids[11] = {0, 11, 11, 3, 11, 5, 6, 4, 11, 1, 2};
    for (int32_t i = 0; i < 11; i++) assert_int_equal(ids[i], want_ids[i]);
    assert_int_equal(nb, 2);
    assert_int_equal(moves[0].src, 7);
    assert_int_equal(moves[0].dst, 4);
    assert_int_equal(moves[0].n, 1);
    assert_int_equal(moves[1].src, 9);
    assert_int_equal(moves[1].dst, 1);
    assert_int_equal(moves[1].n, 2);
    assert_layout(&c, "A..B.CDE.FG."); /* planning changes nothing */
    kv_cells_apply_moves(&c, moves, nb);
    /* A F G B E C D . . . . . */
    assert_layout(&c, "AFGBECD.....");
    assert_int_equal(c.used, 7);
    assert_int_equal(kv_cells_cell_max(&c), 7);
    assert_int_equal(c.head, 7);
    assert_true(kv_cells_check(&c));
    /* the reference model plans the same */
    kv_ref r;
    kv_ref_move rm[12];
    int32_t rids[12], rblocks;
    kv_ref_init(&r, 12);
    const char *l = "A..B.CDE.FG.";
    for (int32_t i = 0; l[i]; i++)
        if (l[i] != '.') r.cell[i] = (kv_ref_cell){.pos = l[i] - 'A', .delta = 0, .seq = BIT(0)};
    assert_int_equal(kv_ref_defrag_plan(&r, 0, rm, rids, &rblocks), 3);
    assert_int_equal(rblocks, 2);
    for (int32_t i = 0; i < 11; i++) assert_int_equal(rids[i], want_ids[i]);
    kv_ref_free(&r);
    kv_cells_free(&c);
}

/* A random fragmented cache: each cell filled with probability fill/8,
 * 1-3 sequences out of 4, random positions, some pending deltas. */
static void random_cache(kv_cells *c, int32_t fill) {
    for (int32_t i = 0; i < c->size; i++) {
        if (rnd(8) >= fill) continue;
        uint64_t s = BIT(rnd(4)) | (rnd(3) == 0 ? BIT(rnd(4)) : 0);
        kv_cells_assign(c, i, rnd(100), s);
        if (rnd(4) == 0) {
            c->delta[i] = rnd(21) - 10;
            c->has_shift = true;
        }
    }
    assert_true(kv_cells_check(c));
}

typedef struct cell_meta {
    cs_pos pos, delta;
    uint64_t seq;
} cell_meta;

static int cmp_meta(const void *a, const void *b) {
    const cell_meta *x = a, *y = b;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    if (x->delta != y->delta) return x->delta < y->delta ? -1 : 1;
    if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
    return 0;
}

/* The multiset of (pos, delta, seq) of the non-empty cells, sorted. */
static int32_t meta_multiset(const kv_cells *c, cell_meta *out) {
    int32_t n = 0;
    for (int32_t i = 0; i < c->size; i++)
        if (c->seq[i]) out[n++] = (cell_meta){c->pos[i], c->delta[i], c->seq[i]};
    qsort(out, (size_t)n, sizeof *out, cmp_meta);
    return n;
}

/* Checks shared by B2 and B3 on one plan, before it is applied. */
static void check_plan(const kv_cells *c, const kv_move *m, int32_t nb, int32_t cap) {
    static uint8_t role[DEFRAG_MAX_CELLS]; /* 1 source, 2 destination */
    memset(role, 0, sizeof role);
    if (cap > 0) assert_true(nb <= cap);
    for (int32_t b = 0; b < nb; b++) {
        assert_true(m[b].n >= 1);
        if (b > 0) assert_true(m[b].src > m[b - 1].src); /* ascending sources */
        for (int32_t k = 0; k < m[b].n; k++) {
            int32_t s = m[b].src + k, d = m[b].dst + k;
            assert_true(s >= c->used); /* every source >= used */
            assert_true(d < c->used);  /* every destination < used */
            assert_true(c->seq[s] != 0);
            assert_true(c->seq[d] == 0);
            assert_int_equal(role[s], 0); /* blocks disjoint */
            assert_int_equal(role[d], 0);
            role[s] = 1;
            role[d] = 2;
        }
    }
}

static void test_kv_cells_B2_full_pass_properties(void **state) {
    (void)state;
    rng_state = DEFRAG_SEED;
    static cell_meta before[DEFRAG_MAX_CELLS], after[DEFRAG_MAX_CELLS];
    static int32_t scratch[DEFRAG_MAX_CELLS];
    static kv_move moves[DEFRAG_MAX_CELLS];
    int32_t total_blocks = 0;
    for (int32_t t = 0; t < DEFRAG_CASES; t++) {
        kv_cells c;
        cells_new(&c, 1 + rnd(DEFRAG_MAX_CELLS));
        random_cache(&c, 1 + rnd(7));
        int32_t used = c.used;
        int32_t n0 = meta_multiset(&c, before);
        int32_t nb = kv_cells_defrag_plan(&c, 0, scratch, moves);
        check_plan(&c, moves, nb, 0);
        total_blocks += nb;
        kv_cells_apply_moves(&c, moves, nb);
        assert_true(kv_cells_check(&c));
        assert_int_equal(c.used, used);
        for (int32_t i = 0; i < c.size; i++) assert_int_equal(c.seq[i] != 0, i < used);
        assert_int_equal(meta_multiset(&c, after), n0);
        assert_memory_equal(before, after, (size_t)n0 * sizeof *before);
        /* a second pass has nothing to do */
        assert_int_equal(kv_cells_defrag_plan(&c, 0, scratch, moves), 0);
        kv_cells_free(&c);
    }
    assert_true(total_blocks > DEFRAG_CASES); /* the cases did fragment */
}

static void test_kv_cells_B3_capped_passes_converge(void **state) {
    (void)state;
    rng_state = DEFRAG_SEED ^ 0x3;
    static cell_meta before[DEFRAG_MAX_CELLS], after[DEFRAG_MAX_CELLS];
    static int32_t scratch[DEFRAG_MAX_CELLS];
    static kv_move moves[DEFRAG_MAX_CELLS];
    int32_t multi_pass = 0;
    for (int32_t t = 0; t < DEFRAG_CASES; t++) {
        kv_cells c;
        cells_new(&c, 1 + rnd(DEFRAG_MAX_CELLS));
        random_cache(&c, 1 + rnd(7));
        int32_t cap = 1 + rnd(DEFRAG_MAX_CAP), used = c.used, passes = 0;
        int32_t n0 = meta_multiset(&c, before);
        for (;;) {
            int32_t holes = 0;
            for (int32_t i = 0; i < used; i++) holes += c.seq[i] == 0;
            int32_t nb = kv_cells_defrag_plan(&c, cap, scratch, moves);
            if (nb == 0) {
                assert_int_equal(holes, 0);
                break;
            }
            check_plan(&c, moves, nb, cap);
            kv_cells_apply_moves(&c, moves, nb);
            assert_true(kv_cells_check(&c)); /* consistent after every pass */
            assert_int_equal(c.used, used);
            int32_t holes_after = 0;
            for (int32_t i = 0; i < used; i++) holes_after += c.seq[i] == 0;
            assert_true(holes_after < holes); /* progress: converges */
            passes++;
        }
        multi_pass += passes > 1;
        for (int32_t i = 0; i < c.size; i++) assert_int_equal(c.seq[i] != 0, i < used);
        assert_int_equal(meta_multiset(&c, after), n0);
        assert_memory_equal(before, after, (size_t)n0 * sizeof *before);
        kv_cells_free(&c);
    }
    assert_true(multi_pass > DEFRAG_CASES / 4); /* the cap really split passes */
}

static void test_kv_cells_B3_cap_splits_one_hole(void **state) {
    (void)state;
    /* A . . B C D . E . F: the hole [1,3) takes E (7) and F (9), two runs.
     * cap 1: only 7 -> 1, and the pass stops at the gap (cell 8). */
    kv_cells c;
    int32_t ids[10];
    kv_move m[10];
    cells_new(&c, 10);
    build_layout(&c, "A..BCD.E.F");
    int32_t nb = kv_cells_defrag_plan(&c, 1, ids, m);
    assert_int_equal(nb, 1);
    assert_int_equal(m[0].src, 7);
    assert_int_equal(m[0].dst, 1);
    assert_int_equal(m[0].n, 1);
    kv_cells_apply_moves(&c, m, nb);
    assert_layout(&c, "AE.BCD...F");
    assert_true(kv_cells_check(&c));
    nb = kv_cells_defrag_plan(&c, 1, ids, m);
    assert_int_equal(nb, 1);
    assert_int_equal(m[0].src, 9);
    assert_int_equal(m[0].dst, 2);
    kv_cells_apply_moves(&c, m, nb);
    assert_layout(&c, "AEFBCD....");
    assert_int_equal(kv_cells_defrag_plan(&c, 1, ids, m), 0);
    /* uncapped on the original layout: the same two blocks in one pass */
    kv_cells_clear(&c);
    build_layout(&c, "A..BCD.E.F");
    nb = kv_cells_defrag_plan(&c, 0, ids, m);
    assert_int_equal(nb, 2);
    kv_cells_apply_moves(&c, m, nb);
    assert_layout(&c, "AEFBCD....");
    kv_cells_free(&c);
}

static void test_kv_cells_B4_no_holes_no_moves(void **state) {
    (void)state;
    kv_cells c;
    int32_t ids[16];
    kv_move m[16];
    cells_new(&c, 16);
    assert_int_equal(kv_cells_defrag_plan(&c, 0, ids, m), 0); /* empty */
    put_run(&c, 0, 5, 0, BIT(0));
    assert_int_equal(kv_cells_defrag_plan(&c, 0, ids, m), 0); /* packed */
    for (int32_t i = 0; i < 5; i++) assert_int_equal(ids[i], i);
    put_run(&c, 5, 11, 5, BIT(1));
    assert_int_equal(kv_cells_defrag_plan(&c, 3, ids, m), 0); /* full */
    kv_cells_free(&c);
}

static void test_kv_cells_B5_self_moves_never_clear(void **state) {
    (void)state;
    kv_cells c;
    cells_new(&c, 10);
    build_layout(&c, "AB..CD....");
    /* hand-built: a self-move block, then a real move in the same call */
    const kv_move m[2] = {{.src = 0, .dst = 0, .n = 2}, {.src = 4, .dst = 2, .n = 2}};
    kv_cells_apply_moves(&c, m, 2);
    assert_layout(&c, "ABCD......");
    assert_true(kv_cells_check(&c));
    const kv_move self = {.src = 1, .dst = 1, .n = 3};
    kv_cells_apply_moves(&c, &self, 1);
    assert_layout(&c, "ABCD......");
    assert_int_equal(c.used, 4);
    /* cells the plan keeps (ids[i] == i) keep their metadata after apply */
    kv_cells_clear(&c);
    build_layout(&c, "A.C.E.GH.J");
    int32_t ids[10];
    kv_move pm[10];
    int32_t nb = kv_cells_defrag_plan(&c, 0, ids, pm);
    kv_cells_apply_moves(&c, pm, nb);
    for (int32_t i = 0; i < 10; i++)
        if (ids[i] == i) assert_int_equal(c.pos[i], i);
    assert_true(kv_cells_check(&c));
    kv_cells_free(&c);
}

static void test_kv_cells_B6_coalescing(void **state) {
    (void)state;
    kv_cells c;
    int32_t ids[10];
    kv_move m[10];
    cells_new(&c, 10);
    /* . B . D . F G H . J (hand-worked): holes 0, 2, 4 take J (9), H (7),
     * G (6) one at a time; G -> 4 and H -> 2 are consecutive sources with
     * decreasing destinations, so three blocks */
    build_layout(&c, ".B.D.FGH.J");
    int32_t nb = kv_cells_defrag_plan(&c, 0, ids, m);
    static const int32_t want[10] = {10, 1, 10, 3, 10, 5, 4, 2, 10, 0};
    for (int32_t i = 0; i < 10; i++) assert_int_equal(ids[i], want[i]);
    assert_int_equal(nb, 3);
    const kv_move want_m[3] = {{6, 4, 1}, {7, 2, 1}, {9, 0, 1}};
    for (int32_t b = 0; b < 3; b++) {
        assert_int_equal(m[b].src, want_m[b].src);
        assert_int_equal(m[b].dst, want_m[b].dst);
        assert_int_equal(m[b].n, want_m[b].n);
    }
    kv_cells_apply_moves(&c, m, nb);
    assert_layout(&c, "JBHDGF....");
    /* one hole of four filled by one run of four: a single block */
    kv_cells_clear(&c);
    build_layout(&c, "....EFGHIJ");
    nb = kv_cells_defrag_plan(&c, 0, ids, m);
    assert_int_equal(nb, 1);
    assert_int_equal(m[0].src, 6);
    assert_int_equal(m[0].dst, 0);
    assert_int_equal(m[0].n, 4);
    /* random caches: blocks == maximal runs of the single-cell moves */
    rng_state = DEFRAG_SEED ^ 0x6;
    static int32_t scratch[DEFRAG_MAX_CELLS];
    static kv_move bm[DEFRAG_MAX_CELLS];
    static kv_ref_move cm[DEFRAG_MAX_CELLS];
    for (int32_t t = 0; t < DEFRAG_CASES; t++) {
        kv_cells r;
        cells_new(&r, 1 + rnd(DEFRAG_MAX_CELLS));
        random_cache(&r, 1 + rnd(7));
        int32_t cap = rnd(DEFRAG_MAX_CAP + 1);
        int32_t n = kv_cells_defrag_plan(&r, cap, scratch, bm);
        int32_t cells = expand_moves(bm, n, cm);
        assert_int_equal(count_runs(cm, cells), n);
        kv_cells_free(&r);
    }
    kv_cells_free(&c);
}

/* ------------------------------------------------ A15 differential fuzz */

typedef struct fuzz_ctx {
    uint64_t seed;
    int32_t episode, step;
    const char *op;
} fuzz_ctx;

static bool fuzz_fail(const fuzz_ctx *f, const char *what, long long got, long long want) {
    print_error("A15 mismatch: seed %#llx episode %d step %d op %s: %s: kv_cells %lld, "
                "reference %lld\n",
                (unsigned long long)f->seed, f->episode, f->step, f->op, what, got, want);
    return false;
}

static bool fuzz_compare(const fuzz_ctx *f, const kv_cells *c, const kv_ref *r, int32_t n_seq) {
    if (!kv_cells_check(c)) {
        print_error("A15 kv_cells_check: %s\n", cs_last_error());
        return fuzz_fail(f, "kv_cells_check", 0, 1);
    }
    int32_t pending = 0;
    for (int32_t i = 0; i < c->size; i++) {
        const kv_ref_cell *x = &r->cell[i];
        if (c->pos[i] != x->pos) return fuzz_fail(f, "pos", c->pos[i], x->pos);
        if (c->delta[i] != x->delta) return fuzz_fail(f, "delta", c->delta[i], x->delta);
        if (c->seq[i] != x->seq)
            return fuzz_fail(f, "seq", (long long)c->seq[i], (long long)x->seq);
        pending += x->seq != 0 && x->delta != 0;
    }
    if (c->used != kv_ref_used(r)) return fuzz_fail(f, "used", c->used, kv_ref_used(r));
    if (c->head != r->head) return fuzz_fail(f, "head", c->head, r->head);
    if (c->has_shift != r->has_shift) return fuzz_fail(f, "has_shift", c->has_shift, r->has_shift);
    if (kv_cells_token_count(c) != kv_ref_token_count(r))
        return fuzz_fail(f, "token_count", kv_cells_token_count(c), kv_ref_token_count(r));
    if (kv_cells_cell_max(c) != kv_ref_cell_max(r))
        return fuzz_fail(f, "cell_max", kv_cells_cell_max(c), kv_ref_cell_max(r));
    if (kv_cells_n_pending(c) != pending)
        return fuzz_fail(f, "n_pending", kv_cells_n_pending(c), pending);
    for (int32_t s = 0; s <= n_seq; s++) {
        int32_t q = s < n_seq ? s : CS_MAX_SEQ - 1; /* plus one never-used id */
        if (kv_cells_seq_pos_min(c, q) != kv_ref_pos_min(r, q))
            return fuzz_fail(f, "pos_min", kv_cells_seq_pos_min(c, q), kv_ref_pos_min(r, q));
        if (kv_cells_seq_pos_max(c, q) != kv_ref_pos_max(r, q))
            return fuzz_fail(f, "pos_max", kv_cells_seq_pos_max(c, q), kv_ref_pos_max(r, q));
    }
    return true;
}

static int32_t fuzz_pos(void) {
    return rnd(50) - 3;
} /* bounds in [-3, 46] */

/* One random step on both models; false on the first difference. */
static bool fuzz_step(fuzz_ctx *f, kv_cells *c, kv_ref *r, int32_t n_seq, int32_t *counts) {
    static int32_t idx_c[FUZZ_MAX_CELLS + 2], idx_r[FUZZ_MAX_CELLS + 2], pos[FUZZ_MAX_CELLS + 2];
    static uint64_t seqs[FUZZ_MAX_CELLS + 2];
    static int32_t scratch[FUZZ_MAX_CELLS], rids[FUZZ_MAX_CELLS];
    static kv_move moves[FUZZ_MAX_CELLS];
    static kv_ref_move rm[FUZZ_MAX_CELLS], cm[FUZZ_MAX_CELLS];
    const int32_t size = c->size;
    int32_t op = rnd(100);
    if (op < 30) {
        f->op = "place";
        int32_t n = 1 + rnd(size < FUZZ_MAX_BATCH ? size : FUZZ_MAX_BATCH);
        if (rnd(20) == 0) n = rnd(size + 2); /* empty or too large batches too */
        bool contiguous = rnd(2);
        for (int32_t k = 0; k < n; k++) {
            int32_t s = rnd(n_seq);
            seqs[k] = BIT(s) | (rnd(5) == 0 ? BIT(rnd(n_seq)) : 0);
            int32_t pm = kv_ref_pos_max(r, s);
            pos[k] = rnd(3) == 0 ? rnd(FUZZ_POS_SPAN) : (pm < 0 ? 0 : pm) + 1 + k;
        }
        int32_t room = c->size - c->used;
        bool ok_c = kv_cells_find_slot(c, n, contiguous, idx_c);
        if (ok_c)
            for (int32_t k = 0; k < n; k++) kv_cells_assign(c, idx_c[k], pos[k], seqs[k]);
        bool ok_r = kv_ref_place(r, n, contiguous, pos, seqs, idx_r);
        if (ok_c != ok_r) return fuzz_fail(f, "find_slot result", ok_c, ok_r);
        counts[ok_c ? 2 : 3]++;
        counts[4] += !ok_c && n >= 1 && n <= room; /* contiguous: room but no run */
        for (int32_t k = 0; ok_c && k < n; k++)
            if (idx_c[k] != idx_r[k]) return fuzz_fail(f, "slot index", idx_c[k], idx_r[k]);
    } else if (op < 44) {
        f->op = "seq_rm";
        int32_t s = rnd(n_seq + 1) - 1, p0 = fuzz_pos(), p1 = fuzz_pos();
        int32_t a = kv_cells_seq_rm(c, s, p0, p1), b = kv_ref_seq_rm(r, s, p0, p1);
        if (a != b) return fuzz_fail(f, "seq_rm freed", a, b);
    } else if (op < 52) {
        f->op = "seq_cp";
        int32_t s = rnd(n_seq), d = rnd(n_seq), p0 = fuzz_pos(), p1 = fuzz_pos();
        kv_cells_seq_cp(c, s, d, p0, p1);
        kv_ref_seq_cp(r, s, d, p0, p1);
    } else if (op < 56) {
        f->op = "seq_keep";
        int32_t s = rnd(n_seq);
        int32_t a = kv_cells_seq_keep(c, s), b = kv_ref_seq_keep(r, s);
        if (a != b) return fuzz_fail(f, "seq_keep freed", a, b);
    } else if (op < 72) {
        f->op = "seq_add";
        int32_t s = rnd(n_seq), p0 = fuzz_pos(), p1 = fuzz_pos(), d = rnd(25) - 12;
        int32_t a = kv_cells_seq_add(c, s, p0, p1, d), b = kv_ref_seq_add(r, s, p0, p1, d);
        if (a != b) return fuzz_fail(f, "seq_add matched", a, b);
    } else if (op < 80) {
        f->op = "seq_div";
        int32_t s = rnd(n_seq), p0 = fuzz_pos(), p1 = fuzz_pos(), d = 1 + rnd(4);
        int32_t a = kv_cells_seq_div(c, s, p0, p1, d), b = kv_ref_seq_div(r, s, p0, p1, d);
        if (a != b) return fuzz_fail(f, "seq_div matched", a, b);
    } else if (op < 82) {
        f->op = "clear";
        kv_cells_clear(c);
        kv_ref_clear(r);
    } else if (op < 85) {
        f->op = "reset_shift";
        kv_cells_reset_shift(c);
        kv_ref_reset_shift(r);
    } else if (op < 89) {
        f->op = "seq_own";
        int32_t s = rnd(n_seq), p0 = fuzz_pos(), p1 = fuzz_pos(), n_cells = -7;
        int32_t nb = kv_cells_seq_own(c, s, p0, p1, moves, &n_cells);
        int32_t nr = kv_ref_seq_own(r, s, p0, p1, rm);
        if ((nb < 0) != (nr < 0)) return fuzz_fail(f, "seq_own refused", nb < 0, nr < 0);
        if (nb >= 0) {
            int32_t ncell = expand_moves(moves, nb, cm);
            if (ncell != nr) return fuzz_fail(f, "seq_own cells", ncell, nr);
            if (n_cells != nr) return fuzz_fail(f, "seq_own n_cells", n_cells, nr);
            for (int32_t k = 0; k < nr; k++) {
                if (cm[k].src != rm[k].src) return fuzz_fail(f, "own src", cm[k].src, rm[k].src);
                if (cm[k].dst != rm[k].dst) return fuzz_fail(f, "own dst", cm[k].dst, rm[k].dst);
            }
            if (count_runs(rm, nr) != nb) return fuzz_fail(f, "own runs", count_runs(rm, nr), nb);
        }
        counts[5] += nr > 0;
        counts[6] += nr < 0;
    } else {
        f->op = "defrag";
        int32_t cap = rnd(4), rblocks = 0;
        int32_t n_kv = kv_cells_cell_max(c);
        int32_t nb = kv_cells_defrag_plan(c, cap, scratch, moves);
        int32_t nr = kv_ref_defrag_plan(r, cap, rm, rids, &rblocks);
        for (int32_t i = 0; i < n_kv; i++)
            if (scratch[i] != rids[i]) return fuzz_fail(f, "defrag ids", scratch[i], rids[i]);
        if (nb != rblocks) return fuzz_fail(f, "defrag blocks", nb, rblocks);
        int32_t ncell = expand_moves(moves, nb, cm);
        if (ncell != nr) return fuzz_fail(f, "defrag cells moved", ncell, nr);
        kv_ref_move sorted[FUZZ_MAX_CELLS];
        memcpy(sorted, rm, (size_t)nr * sizeof *rm);
        sort_by_src(sorted, nr);
        for (int32_t k = 0; k < nr; k++) {
            if (cm[k].src != sorted[k].src)
                return fuzz_fail(f, "move src", cm[k].src, sorted[k].src);
            if (cm[k].dst != sorted[k].dst)
                return fuzz_fail(f, "move dst", cm[k].dst, sorted[k].dst);
        }
        if (count_runs(sorted, nr) != nb) return fuzz_fail(f, "runs", count_runs(sorted, nr), nb);
        kv_cells_apply_moves(c, moves, nb);
        kv_ref_apply(r, rm, nr);
        counts[1] += nb;
    }
    counts[0]++;
    return fuzz_compare(f, c, r, n_seq);
}

static void test_kv_cells_A15_differential_fuzz(void **state) {
    (void)state;
    fuzz_ctx f = {.seed = FUZZ_SEED};
    rng_state = FUZZ_SEED;
    /* operations, defrag blocks, placements ok / failed / no run, seq_own
     * splitting something / refused */
    int32_t counts[7] = {0};
    for (f.episode = 0; f.episode < FUZZ_EPISODES; f.episode++) {
        int32_t size = 1 + rnd(FUZZ_MAX_CELLS), n_seq = 1 + rnd(FUZZ_MAX_SEQ);
        kv_cells c;
        kv_ref r;
        cells_new(&c, size);
        kv_ref_init(&r, size);
        for (f.step = 0; f.step < FUZZ_STEPS; f.step++)
            if (!fuzz_step(&f, &c, &r, n_seq, counts)) fail_msg("A15: see the mismatch above");
        kv_ref_free(&r);
        kv_cells_free(&c);
    }
    print_message("A15: %d operations, %d defrag blocks, %d placements, %d refused (%d with "
                  "room but no contiguous run), %d seq_own splits, %d refused\n",
                  counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6]);
    assert_int_equal(counts[0], FUZZ_EPISODES * FUZZ_STEPS);
    assert_true(counts[1] > 0);
    assert_true(counts[4] > 0);                  /* the no-run path ran too */
    assert_true(counts[5] > 0 && counts[6] > 0); /* seq_own split and refused */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_cells_A1_find_slot_contiguous),
        cmocka_unit_test(test_kv_cells_A1_find_slot_head_heuristic),
        cmocka_unit_test(test_kv_cells_A1_find_slot_scattered),
        cmocka_unit_test(test_kv_cells_init_rejects_bad_size),
        cmocka_unit_test(test_kv_cells_A2_used_invariant),
        cmocka_unit_test(test_kv_cells_A3_seq_rm_half_open),
        cmocka_unit_test(test_kv_cells_A4_seq_cp),
        cmocka_unit_test(test_kv_cells_seq_own),
        cmocka_unit_test(test_kv_cells_A5_seq_keep),
        cmocka_unit_test(test_kv_cells_A6_seq_add_accumulates),
        cmocka_unit_test(test_kv_cells_A6_seq_add_negative_frees),
        cmocka_unit_test(test_kv_cells_A7_seq_div),
        cmocka_unit_test(test_kv_cells_A8_pos_min_max_duplicates),
        cmocka_unit_test(test_kv_cells_A9_clear_resets_everything),
        cmocka_unit_test(test_kv_cells_A10_cell_max),
        cmocka_unit_test(test_kv_cells_check_detects_corruption),
        cmocka_unit_test(test_kv_cells_B1_worked_example),
        cmocka_unit_test(test_kv_cells_B2_full_pass_properties),
        cmocka_unit_test(test_kv_cells_B3_capped_passes_converge),
        cmocka_unit_test(test_kv_cells_B3_cap_splits_one_hole),
        cmocka_unit_test(test_kv_cells_B4_no_holes_no_moves),
        cmocka_unit_test(test_kv_cells_B5_self_moves_never_clear),
        cmocka_unit_test(test_kv_cells_B6_coalescing),
        cmocka_unit_test(test_kv_cells_A15_differential_fuzz),
    };
    return test_run(tests, NULL, NULL);
}
