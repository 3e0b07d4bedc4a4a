/* libFuzzer entry point, structured: the input bytes drive a sequence of
 * cache operations and small decodes on the bundled stories260K model (32
 * cells, 4 sequences), checked after every step against a reference model
 * of the cache written here, independently of src/kv_cells.c: an unordered
 * list of (position, sequence set) cells (docs/KV_CACHE_SPEC.md §2,
 * design test plan A2-A8, A15, B2, C5, D9).
 *
 * Byte 0 picks the context: even, contiguous placement, no automatic
 * defrag; odd, placement in any free cell, automatic defrag (threshold
 * 0.1, no minimum size) with one block move per pass. Each further step is
 * an op byte and its argument bytes (a missing byte reads as 0):
 *   decode (1-8 tokens: one sequence from its pos_max + 1, or rows at
 *   chosen positions in chosen sequence sets; now and then an invalid
 *   token, position or sequence id), seq_rm, seq_cp, seq_keep, seq_add,
 *   seq_div, seq_own, defrag + update, update, state seq save and load
 *   (into the same or another sequence, the destination cleared first or
 *   not), whole state save/clear/load, clear.
 * Positions come from a small range, with -1 (open end), 0, CS_POS_MAX,
 * CS_POS_MAX - 1, INT32_MAX and INT32_MIN mixed in; sequence ids from -1
 * to n_seq_max + 1.
 *
 * After every step: kv_cells_check (C1, C2, used, head, the per-sequence
 * bookkeeping); the multiset of (pos, sequence set) of the cache equals
 * the reference's; cs_kv_used_cells, cs_kv_token_count, pos_min and
 * pos_max of every sequence agree; a refused operation (an invalid
 * argument, no room) left the cache unchanged (the reference is only
 * changed on success, and a status that differs from the reference's
 * prediction is a finding); after an update no shift is pending and no
 * cell owes a rotation; after defrag + update the used cells are exactly
 * [0, used); a decode's logits are finite. Any mismatch aborts.
 *
 * Numeric properties (design test plan D7, D3): every operation runs on
 * three contexts of the same kind. A updates lazily (inside cs_decode); B
 * calls cs_kv_update before each decode that will run (D7: its cells,
 * deltas and logits equal A's bit for bit); C calls cs_kv_defrag +
 * cs_kv_update there (D3: the cells move, the logits do not change, bit
 * for bit, because attention visits cells in position order). Where two
 * cells visible to a row hold the same position, their order is the cell
 * order, which the defrag changed: the first such decode is compared
 * within F32 summation-order tolerance (1e-5 of the largest logit, spec
 * D3) and C is then left out of the comparisons until the next input (its
 * cached values may differ in the last bits from then on).
 * CS_FUZZ_OPS_TRACE=1 prints a line per step (to read a finding). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "ctxshift.h"
#include "kv_cells.h"

#ifndef CS_FUZZ_MODEL
#define CS_FUZZ_MODEL "models/stories260K-f32.gguf"
#endif

enum { N_CTX = 32, N_SEQ = 4, N_BATCH = 8, MAX_STEPS = 64 };

/* ------------------------------------------------------------- input */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t rd(reader *r) {
    if (r->n == 0) return 0;
    r->n--;
    return *r->p++;
}

/* A position argument: mostly small, sometimes an edge value. */
static cs_pos rd_pos(reader *r) {
    static const cs_pos edge[] = {-1,        0,  CS_POS_MAX,      CS_POS_MAX - 1, INT32_MAX,
                                  INT32_MIN, -2, CS_POS_MAX - 40, INT32_MAX / 2,  1 << 20};
    const uint8_t b = rd(r);
    if (b < 240) return (cs_pos)(b % 48) - 1;
    return edge[(b - 240) % (sizeof edge / sizeof edge[0])];
}

/* A delta: small of either sign, sometimes huge. */
static cs_pos rd_delta(reader *r) {
    static const cs_pos edge[] = {INT32_MAX,   INT32_MIN, CS_POS_MAX,
                                  -CS_POS_MAX, 1 << 30,   -(1 << 30)};
    const uint8_t b = rd(r);
    if (b < 250) return (cs_pos)(b % 41) - 20;
    return edge[(b - 250) % (sizeof edge / sizeof edge[0])];
}

/* A sequence id in [-1, N_SEQ + 1]: the last two are out of range. */
static cs_seq rd_seq(reader *r) {
    return (cs_seq)(rd(r) % (N_SEQ + 3)) - 1;
}

/* ------------------------------------------------------------- reference */

typedef struct ref_cell {
    cs_pos pos;
    uint64_t seq;
} ref_cell;

typedef struct ref_cache {
    ref_cell c[N_CTX]; /* the non-empty cells, in no order */
    int32_t n;
} ref_cache;

static void ref_add(ref_cache *m, cs_pos pos, uint64_t seq) {
    if (m->n >= N_CTX) abort(); /* the caller checked the room */
    m->c[m->n++] = (ref_cell){pos, seq};
}

static void ref_del(ref_cache *m, int32_t i) {
    m->c[i] = m->c[--m->n];
}

static bool in_range(cs_pos pos, cs_pos p0, cs_pos p1) {
    if (p0 < 0) p0 = 0;
    if (p1 < 0) p1 = INT32_MAX;
    return pos >= p0 && pos < p1;
}

static void ref_seq_rm(ref_cache *m, cs_seq s, cs_pos p0, cs_pos p1) {
    const uint64_t mask = s < 0 ? ~(uint64_t)0 : (uint64_t)1 << s;
    for (int32_t i = m->n - 1; i >= 0; i--) {
        if (!(m->c[i].seq & mask) || !in_range(m->c[i].pos, p0, p1)) continue;
        m->c[i].seq &= ~mask;
        if (m->c[i].seq == 0) ref_del(m, i);
    }
}

static void ref_seq_cp(ref_cache *m, cs_seq src, cs_seq dst, cs_pos p0, cs_pos p1) {
    for (int32_t i = 0; i < m->n; i++)
        if ((m->c[i].seq >> src & 1) && in_range(m->c[i].pos, p0, p1))
            m->c[i].seq |= (uint64_t)1 << dst;
}

static void ref_seq_keep(ref_cache *m, cs_seq s) {
    for (int32_t i = m->n - 1; i >= 0; i--) {
        if (m->c[i].seq >> s & 1)
            m->c[i].seq = (uint64_t)1 << s;
        else
            ref_del(m, i);
    }
}

/* seq_add and seq_div move the whole cell (every sequence in it). */
static void ref_seq_add(ref_cache *m, cs_seq s, cs_pos p0, cs_pos p1, cs_pos delta) {
    if (delta == 0) return;
    for (int32_t i = m->n - 1; i >= 0; i--) {
        if (!(m->c[i].seq >> s & 1) || !in_range(m->c[i].pos, p0, p1)) continue;
        const int64_t np = (int64_t)m->c[i].pos + delta;
        if (np < 0)
            ref_del(m, i);
        else
            m->c[i].pos = np > CS_POS_MAX ? CS_POS_MAX : (cs_pos)np;
    }
}

static void ref_seq_div(ref_cache *m, cs_seq s, cs_pos p0, cs_pos p1, int32_t d) {
    for (int32_t i = 0; i < m->n; i++)
        if ((m->c[i].seq >> s & 1) && in_range(m->c[i].pos, p0, p1)) m->c[i].pos /= d;
}

/* Cells of s in range shared with another sequence: split off. */
static int32_t ref_shared(const ref_cache *m, cs_seq s, cs_pos p0, cs_pos p1) {
    int32_t n = 0;
    for (int32_t i = 0; i < m->n; i++)
        if ((m->c[i].seq >> s & 1) && (m->c[i].seq & ~((uint64_t)1 << s)) &&
            in_range(m->c[i].pos, p0, p1))
            n++;
    return n;
}

static void ref_seq_own(ref_cache *m, cs_seq s, cs_pos p0, cs_pos p1) {
    const int32_t n0 = m->n;
    const uint64_t bit = (uint64_t)1 << s;
    for (int32_t i = 0; i < n0; i++) {
        if (!(m->c[i].seq & bit) || !(m->c[i].seq & ~bit) || !in_range(m->c[i].pos, p0, p1))
            continue;
        m->c[i].seq &= ~bit;
        ref_add(m, m->c[i].pos, bit);
    }
}

static cs_pos ref_pos_max(const ref_cache *m, cs_seq s) {
    cs_pos x = -1;
    for (int32_t i = 0; i < m->n; i++)
        if ((m->c[i].seq >> s & 1) && m->c[i].pos > x) x = m->c[i].pos;
    return x;
}

static cs_pos ref_pos_min(const ref_cache *m, cs_seq s) {
    cs_pos x = -1;
    for (int32_t i = 0; i < m->n; i++)
        if ((m->c[i].seq >> s & 1) && (x < 0 || m->c[i].pos < x)) x = m->c[i].pos;
    return x;
}

static int32_t ref_seq_count(const ref_cache *m, cs_seq s) {
    int32_t n = 0;
    for (int32_t i = 0; i < m->n; i++) n += (int32_t)(m->c[i].seq >> s & 1);
    return n;
}

static int cell_cmp(const void *a, const void *b) {
    const ref_cell *x = a, *y = b;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* ------------------------------------------------------------- checks */

enum { LAZY, EXPLICIT, DEFRAG, N_LANES }; /* A, B, C above */

static cs_model *model;
static cs_context *ctxs[2][N_LANES];
static int32_t n_vocab;
static bool c_diverged; /* C left out of the logits comparisons (above) */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_ops: check failed at line %d: %s\n", __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The cache against the reference; O(N_CTX log N_CTX + N_SEQ * N_CTX). */
static void check_cache(cs_context *ctx, const ref_cache *m) {
    const kv_cells *c = &ctx->cells;
    if (!kv_cells_check(c)) {
        fprintf(stderr, "fuzz_ops: kv_cells_check: %s\n", cs_last_error());
        abort();
    }
    ref_cell ours[N_CTX], theirs[N_CTX];
    int32_t n = 0, tokens = 0;
    for (int32_t i = 0; i < c->size; i++) {
        if (c->seq[i] == 0) continue;
        ours[n++] = (ref_cell){c->pos[i], c->seq[i]};
        tokens += __builtin_popcountll(c->seq[i]);
    }
    CHECK(n == m->n);
    memcpy(theirs, m->c, (size_t)m->n * sizeof *theirs);
    qsort(ours, (size_t)n, sizeof *ours, cell_cmp);
    qsort(theirs, (size_t)n, sizeof *theirs, cell_cmp);
    for (int32_t i = 0; i < n; i++) CHECK(cell_cmp(&ours[i], &theirs[i]) == 0);
    CHECK(cs_kv_used_cells(ctx) == m->n);
    CHECK(cs_kv_token_count(ctx) == tokens);
    for (cs_seq s = -1; s <= N_SEQ; s++) {
        const bool ok = s >= 0 && s < N_SEQ;
        CHECK(cs_kv_seq_pos_max(ctx, s) == (ok ? ref_pos_max(m, s) : -1));
        CHECK(cs_kv_seq_pos_min(ctx, s) == (ok ? ref_pos_min(m, s) : -1));
    }
}

/* After an update: nothing pending (C5); after a defrag too: compact (B2). */
static void check_updated(cs_context *ctx, bool defragged) {
    const kv_cells *c = &ctx->cells;
    CHECK(!c->has_shift);
    for (int32_t i = 0; i < c->size; i++) CHECK(c->delta[i] == 0);
    if (defragged)
        for (int32_t i = 0; i < c->size; i++) CHECK((c->seq[i] != 0) == (i < c->used));
}

/* D7: B's cells are A's, cell by cell (positions, sets, pending deltas). */
static void check_same_cells(const cs_context *a, const cs_context *b) {
    const kv_cells *x = &a->cells, *y = &b->cells;
    CHECK(x->size == y->size && x->used == y->used && x->has_shift == y->has_shift);
    CHECK(memcmp(x->pos, y->pos, (size_t)x->size * sizeof *x->pos) == 0);
    CHECK(memcmp(x->seq, y->seq, (size_t)x->size * sizeof *x->seq) == 0);
    CHECK(memcmp(x->delta, y->delta, (size_t)x->size * sizeof *x->delta) == 0);
}

/* Whether the cells visible to some row of the batch just placed hold a
 * position twice (their visiting order is then the cell order). */
static bool visible_duplicates(const ref_cache *m, int32_t n, const cs_pos *pos,
                               const cs_seq *seq0) {
    for (int32_t t = 0; t < n; t++) {
        cs_pos seen[N_CTX];
        int32_t k = 0;
        for (int32_t i = 0; i < m->n; i++) {
            if (!(m->c[i].seq >> seq0[t] & 1) || m->c[i].pos > pos[t]) continue;
            for (int32_t j = 0; j < k; j++)
                if (seen[j] == m->c[i].pos) return true;
            seen[k++] = m->c[i].pos;
        }
    }
    return false;
}

/* ------------------------------------------------------------- steps */

static cs_batch *batch;
static bool trace; /* CS_FUZZ_OPS_TRACE set: a line per step on stderr */

/* A decode of 1-8 rows, on the three contexts. The expected result: < 0
 * when a row is invalid, 1 when the rows do not fit in the free cells,
 * else 0 (spec A1, A12, D9); the same on every context. */
static void step_decode(cs_context *const *cx, ref_cache *m, reader *r) {
    const uint8_t mode = rd(r);
    const int32_t n = 1 + (mode & 7);
    bool valid = true;
    cs_pos pos[N_BATCH];
    cs_seq seq0[N_BATCH];
    uint64_t set[N_BATCH];
    cs_batch_clear(batch);
    cs_seq s0 = (cs_seq)(mode >> 3 & 3);
    const cs_pos start = ref_pos_max(m, s0) + 1; /* <= CS_POS_MAX: a cell is never above */
    for (int32_t i = 0; i < n; i++) {
        cs_seq ids[N_SEQ + 2];
        int32_t n_ids = 0;
        cs_token tok = (cs_token)(rd(r) * 2 % n_vocab);
        if ((mode & 0x20) == 0) { /* one sequence, consecutive positions */
            ids[n_ids++] = s0;
            const int64_t p = (int64_t)start + i;
            pos[i] = p > INT32_MAX ? INT32_MAX : (cs_pos)p;
        } else { /* chosen positions and sequence sets */
            pos[i] = rd_pos(r);
            const uint8_t b = rd(r);
            for (cs_seq s = 0; s < N_SEQ; s++)
                if (b >> s & 1) ids[n_ids++] = s;
            if (b >> 4 & 1) ids[n_ids++] = N_SEQ + (b >> 5 & 1); /* out of range */
            if (n_ids == 0) ids[n_ids++] = s0;
            if (b == 0xff) tok = n_vocab; /* out of the vocabulary */
            if (b == 0xfe) tok = -1;
        }
        seq0[i] = ids[0];
        set[i] = 0;
        for (int32_t k = 0; k < n_ids; k++) {
            if (ids[k] >= N_SEQ)
                valid = false;
            else
                set[i] |= (uint64_t)1 << ids[k];
        }
        if (tok < 0 || tok >= n_vocab || pos[i] < 0 || pos[i] > CS_POS_MAX) valid = false;
        CHECK(cs_batch_add(batch, tok, pos[i], ids, n_ids, i == n - 1 || (mode & 0x40)) == CS_OK);
    }
    const bool runs = valid && n <= N_CTX - m->n;
    int32_t ret[N_LANES];
    for (int k = 0; k < N_LANES; k++) {
        if (runs && k == EXPLICIT) {
            CHECK(cs_kv_update(cx[k]) == CS_OK);
            check_updated(cx[k], false);
        }
        if (runs && k == DEFRAG) {
            cs_kv_defrag(cx[k]);
            CHECK(cs_kv_update(cx[k]) == CS_OK);
            check_updated(cx[k], true);
        }
        ret[k] = cs_decode(cx[k], batch);
        CHECK(ret[k] == ret[LAZY]);
    }
    if (!valid) {
        CHECK(ret[LAZY] < 0);
        return;
    }
    if (!runs) {
        CHECK(ret[LAZY] == CS_NO_KV_SLOT);
        return;
    }
    CHECK(ret[LAZY] == 0);
    for (int32_t i = 0; i < n; i++) ref_add(m, pos[i], set[i]);
    const bool exact = !visible_duplicates(m, n, pos, seq0);
    for (int32_t i = 0; i < n; i++) {
        const float *lg = cs_get_logits_ith(cx[LAZY], i);
        if (i != n - 1 && !(mode & 0x40)) {
            CHECK(lg == NULL);
            continue;
        }
        CHECK(lg != NULL);
        float amax = 0.0f;
        for (int32_t k = 0; k < n_vocab; k++) {
            CHECK(isfinite(lg[k]));
            amax = fmaxf(amax, fabsf(lg[k]));
        }
        /* D7: an explicit update changes nothing */
        const float *lb = cs_get_logits_ith(cx[EXPLICIT], i);
        CHECK(lb != NULL && memcmp(lg, lb, (size_t)n_vocab * sizeof *lg) == 0);
        /* D3: neither does a defrag (exactly, in position order) */
        const float *lc = cs_get_logits_ith(cx[DEFRAG], i);
        CHECK(lc != NULL);
        if (c_diverged) continue;
        if (exact) {
            CHECK(memcmp(lg, lc, (size_t)n_vocab * sizeof *lg) == 0);
        } else {
            for (int32_t k = 0; k < n_vocab; k++) CHECK(fabsf(lg[k] - lc[k]) <= 1e-5f * amax);
        }
    }
    if (!exact) c_diverged = true;
}

/* State of one sequence saved, dst cleared or not, then loaded into dst:
 * dst gets single-sequence cells at the saved positions (state seq save
 * and load; the destination must be empty, the cells must fit). */
static void step_seq_state(cs_context *const *cx, ref_cache *m, reader *r) {
    const uint8_t b = rd(r);
    const cs_seq src = (cs_seq)(b & 3), dst = (cs_seq)(b >> 2 & 3);
    cs_pos saved[N_CTX];
    int32_t n_saved = 0;
    for (int32_t i = 0; i < m->n; i++)
        if (m->c[i].seq >> src & 1) saved[n_saved++] = m->c[i].pos;
    const ref_cache before = *m;
    cs_status st0 = CS_OK;
    for (int k = 0; k < N_LANES; k++) {
        cs_context *ctx = cx[k];
        const size_t size = cs_state_seq_size(ctx, src);
        unsigned char *buf = malloc(size ? size : 1);
        size_t w = 0;
        CHECK(buf != NULL);
        CHECK(cs_state_seq_save(ctx, src, buf, size, &w) == CS_OK);
        if (b & 0x10) {
            CHECK(cs_kv_seq_rm(ctx, dst, -1, -1) == CS_OK);
            *m = before;
            ref_seq_rm(m, dst, -1, -1);
            check_cache(ctx, m);
        }
        if (b & 0x20) w = (size_t)(b >> 6) * w / 4; /* truncated: refused */
        const cs_status st = cs_state_seq_load(ctx, dst, buf, w);
        free(buf);
        if (k == LAZY) st0 = st;
        CHECK(st == st0);
    }
    if (b & 0x20) { /* refused, or an empty state that loads as nothing */
        CHECK(st0 != CS_OK || n_saved == 0);
        return;
    }
    if (ref_seq_count(m, dst) > 0) {
        CHECK(st0 == CS_ERR_INVALID_ARG);
    } else if (n_saved > N_CTX - m->n) {
        CHECK(st0 == CS_NO_KV_SLOT);
    } else {
        CHECK(st0 == CS_OK);
        for (int32_t i = 0; i < n_saved; i++) ref_add(m, saved[i], (uint64_t)1 << dst);
    }
}

/* The whole cache saved, cleared and loaded back: the same cells. */
static void step_state(cs_context *ctx) {
    const size_t size = cs_state_size(ctx);
    unsigned char *buf = malloc(size ? size : 1);
    size_t w = 0;
    CHECK(buf != NULL);
    CHECK(cs_state_save(ctx, buf, size, &w) == CS_OK);
    cs_kv_clear(ctx);
    CHECK(cs_kv_used_cells(ctx) == 0);
    CHECK(cs_state_load(ctx, buf, w) == CS_OK);
    free(buf);
    check_updated(ctx, false); /* saved after the pending shift was applied */
}

/* The same call on every context: the same status. */
#define ON_ALL(call)                                                                               \
    do {                                                                                           \
        cs_context *ctx = cx[LAZY];                                                                \
        st = (call);                                                                               \
        for (int k_ = 1; k_ < N_LANES; k_++) {                                                     \
            ctx = cx[k_];                                                                          \
            CHECK((call) == st);                                                                   \
        }                                                                                          \
    } while (0)

static void step(cs_context *const *cx, ref_cache *m, reader *r) {
    const uint8_t op = rd(r) % 16;
    cs_seq s = 0, s2 = 0;
    cs_pos p0 = 0, p1 = 0, x = 0;
    cs_status st = CS_OK;
    switch (op) {
    case 0:
    case 1:
    case 2:
        step_decode(cx, m, r);
        break;
    case 3: /* seq_rm: seq -1 means every sequence */
        s = rd_seq(r), p0 = rd_pos(r), p1 = rd_pos(r);
        ON_ALL(cs_kv_seq_rm(ctx, s, p0, p1));
        CHECK(st == (s >= N_SEQ ? CS_ERR_INVALID_ARG : CS_OK));
        if (st == CS_OK) ref_seq_rm(m, s, p0, p1);
        break;
    case 4:
        s = rd_seq(r), s2 = rd_seq(r), p0 = rd_pos(r), p1 = rd_pos(r);
        ON_ALL(cs_kv_seq_cp(ctx, s, s2, p0, p1));
        CHECK(st == (s < 0 || s >= N_SEQ || s2 < 0 || s2 >= N_SEQ ? CS_ERR_INVALID_ARG : CS_OK));
        if (st == CS_OK && s != s2) ref_seq_cp(m, s, s2, p0, p1);
        break;
    case 5:
        s = rd_seq(r);
        ON_ALL(cs_kv_seq_keep(ctx, s));
        CHECK(st == (s < 0 || s >= N_SEQ ? CS_ERR_INVALID_ARG : CS_OK));
        if (st == CS_OK) ref_seq_keep(m, s);
        break;
    case 6:
    case 7:
        s = rd_seq(r), p0 = rd_pos(r), p1 = rd_pos(r), x = rd_delta(r);
        ON_ALL(cs_kv_seq_add(ctx, s, p0, p1, x));
        CHECK(st == (s < 0 || s >= N_SEQ ? CS_ERR_INVALID_ARG : CS_OK));
        if (st == CS_OK) ref_seq_add(m, s, p0, p1, x);
        break;
    case 8:
        s = rd_seq(r), p0 = rd_pos(r), p1 = rd_pos(r), x = (cs_pos)(rd(r) % 6) - 1;
        ON_ALL(cs_kv_seq_div(ctx, s, p0, p1, x));
        CHECK(st == (s < 0 || s >= N_SEQ || x < 1 ? CS_ERR_INVALID_ARG : CS_OK));
        if (st == CS_OK) ref_seq_div(m, s, p0, p1, x);
        break;
    case 9: /* seq_own: all or nothing */
        s = rd_seq(r), p0 = rd_pos(r), p1 = rd_pos(r);
        ON_ALL(cs_kv_seq_own(ctx, s, p0, p1));
        if (s < 0 || s >= N_SEQ) {
            CHECK(st == CS_ERR_INVALID_ARG);
        } else if (ref_shared(m, s, p0, p1) > N_CTX - m->n) {
            CHECK(st == CS_NO_KV_SLOT);
        } else {
            CHECK(st == CS_OK);
            ref_seq_own(m, s, p0, p1);
        }
        break;
    case 10:
        for (int k = 0; k < N_LANES; k++) {
            cs_kv_defrag(cx[k]);
            CHECK(cs_kv_update(cx[k]) == CS_OK);
            check_updated(cx[k], true);
        }
        break;
    case 11:
        for (int k = 0; k < N_LANES; k++) {
            CHECK(cs_kv_update(cx[k]) == CS_OK);
            check_updated(cx[k], false);
        }
        break;
    case 12:
    case 13:
        step_seq_state(cx, m, r);
        break;
    case 14:
        for (int k = 0; k < N_LANES; k++) step_state(cx[k]);
        break;
    default:
        if (rd(r) == 0) { /* rarely: clear */
            for (int k = 0; k < N_LANES; k++) cs_kv_clear(cx[k]);
            m->n = 0;
        }
        break;
    }
    for (int k = 0; k < N_LANES; k++) check_cache(cx[k], m);
    check_same_cells(cx[LAZY], cx[EXPLICIT]);
    if (trace)
        fprintf(stderr, "op %2u: status %d, %d cells used, pos_max %d %d %d %d%s\n", op, (int)st,
                m->n, ref_pos_max(m, 0), ref_pos_max(m, 1), ref_pos_max(m, 2), ref_pos_max(m, 3),
                c_diverged ? " (C diverged)" : "");
}

static void quiet_log(int32_t level, const char *msg, void *user) {
    (void)level;
    (void)msg;
    (void)user;
}

static void setup(void) {
    cs_log_set(quiet_log, NULL, CS_LOG_ERROR);
    trace = getenv("CS_FUZZ_OPS_TRACE") != NULL;
    cs_model_params mp = cs_model_default_params();
    if (cs_model_load(CS_FUZZ_MODEL, &mp, &model) != CS_OK) abort();
    n_vocab = cs_model_n_vocab(model);
    for (int k = 0; k < 2 * N_LANES; k++) {
        cs_context_params cp = cs_context_default_params();
        cp.n_ctx = N_CTX;
        cp.n_batch = N_BATCH;
        cp.n_seq_max = N_SEQ;
        cp.n_threads = 1;
        cp.type_k = CS_TYPE_F32;
        cp.type_v = CS_TYPE_F32;
        const bool contiguous = k < N_LANES;
        cp.contiguous_slots = contiguous;
        cp.defrag_thold = contiguous ? -1.0f : 0.1f;
        cp.defrag_min_cells = 0;
        cp.defrag_max_moves = contiguous ? 0 : 1;
        if (cs_context_new(model, &cp, &ctxs[!contiguous][k % N_LANES]) != CS_OK) abort();
    }
    if (cs_batch_new(N_BATCH, N_SEQ + 2, &batch) != CS_OK) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model) setup();
    if (size < 1) return 0;
    cs_context *const *cx = ctxs[data[0] & 1];
    reader r = {data + 1, size - 1};
    ref_cache m;
    m.n = 0;
    c_diverged = false;
    for (int k = 0; k < N_LANES; k++) {
        cs_kv_clear(cx[k]);
        check_cache(cx[k], &m);
    }
    for (int k = 0; k < MAX_STEPS && r.n > 0; k++) step(cx, &m, &r);
    return 0;
}
