/* kv_cells.c: KV metadata operations (docs/KV_CACHE_SPEC.md §1, §2, §4.2). Every operation
 * is O(size) at most (plus one bookkeeping rescan, see kv_cells.h) and
 * allocation-free after init. */
#include "kv_cells.h"

#include <string.h>

/* ------------------------------------------- per-sequence bookkeeping
 * A removal that takes the last cell at a sequence's min or max marks the
 * sequence stale in a caller-held mask; stale sequences are not updated
 * further and are recounted by seqpos_rescan at the end of the operation. */

static void seqpos_reset(kv_cells *c, int32_t s) {
    c->seq_n[s] = 0;
    c->seq_min[s] = -1;
    c->seq_max[s] = -1;
    c->seq_nmin[s] = 0;
    c->seq_nmax[s] = 0;
}

static void seqpos_add(kv_cells *c, int32_t s, cs_pos p, uint64_t stale) {
    if (stale & ((uint64_t)1 << s)) return;
    if (c->seq_n[s]++ == 0) {
        c->seq_min[s] = c->seq_max[s] = p;
        c->seq_nmin[s] = c->seq_nmax[s] = 1;
        return;
    }
    if (p < c->seq_min[s]) {
        c->seq_min[s] = p;
        c->seq_nmin[s] = 1;
    } else if (p == c->seq_min[s]) {
        c->seq_nmin[s]++;
    }
    if (p > c->seq_max[s]) {
        c->seq_max[s] = p;
        c->seq_nmax[s] = 1;
    } else if (p == c->seq_max[s]) {
        c->seq_nmax[s]++;
    }
}

static void seqpos_remove(kv_cells *c, int32_t s, cs_pos p, uint64_t *stale) {
    uint64_t bit = (uint64_t)1 << s;
    if (*stale & bit) return;
    if (--c->seq_n[s] == 0) {
        seqpos_reset(c, s);
        return;
    }
    if (p == c->seq_min[s] && --c->seq_nmin[s] == 0) *stale |= bit;
    if (p == c->seq_max[s] && --c->seq_nmax[s] == 0) *stale |= bit;
}

static void seqpos_add_all(kv_cells *c, uint64_t seqs, cs_pos p, uint64_t stale) {
    for (uint64_t m = seqs; m; m &= m - 1) seqpos_add(c, __builtin_ctzll(m), p, stale);
}

static void seqpos_remove_all(kv_cells *c, uint64_t seqs, cs_pos p, uint64_t *stale) {
    for (uint64_t m = seqs; m; m &= m - 1) seqpos_remove(c, __builtin_ctzll(m), p, stale);
}

/* Recount the stale sequences from the cells. O(size + memberships). */
static void seqpos_rescan(kv_cells *c, uint64_t stale) {
    if (!stale) return;
    for (uint64_t m = stale; m; m &= m - 1) seqpos_reset(c, __builtin_ctzll(m));
    for (int32_t i = 0; i < c->size; i++) {
        uint64_t hit = c->seq[i] & stale;
        if (hit) seqpos_add_all(c, hit, c->pos[i], 0);
    }
}

/* ------------------------------------------------------------- basics */

cs_status kv_cells_init(kv_cells *c, int32_t size) {
    memset(c, 0, sizeof *c);
    if (size < 1 || size > CS_MAX_CTX)
        return error_fail(CS_ERR_INVALID_ARG, "kv: cache size %d outside [1, %d]", size,
                          CS_MAX_CTX);
    c->pos = mem_malloc((size_t)size * sizeof *c->pos);
    c->delta = mem_malloc((size_t)size * sizeof *c->delta);
    c->seq = mem_malloc((size_t)size * sizeof *c->seq);
    if (!c->pos || !c->delta || !c->seq) {
        kv_cells_free(c);
        return error_fail(CS_ERR_NOMEM, "kv: out of memory for %d cells", size);
    }
    c->size = size;
    kv_cells_clear(c);
    return CS_OK;
}

void kv_cells_free(kv_cells *c) {
    mem_free(c->pos);
    mem_free(c->delta);
    mem_free(c->seq);
    memset(c, 0, sizeof *c);
}

void kv_cells_clear(kv_cells *c) {
    for (int32_t i = 0; i < c->size; i++) {
        c->pos[i] = -1;
        c->delta[i] = 0;
        c->seq[i] = 0;
    }
    for (int32_t s = 0; s < CS_MAX_SEQ; s++) seqpos_reset(c, s);
    c->used = 0;
    c->head = 0;
    c->has_shift = false;
}

int32_t kv_cells_cell_max(const kv_cells *c) {
    for (int32_t i = c->size - 1; i >= 0; i--)
        if (c->seq[i]) return i + 1;
    return 0;
}

/* llama.cpp PR #5691's contiguous search (spec §1.6): skip past the first clash,
 * wrap when the slot would run past the end, give up once every start
 * index has been passed over. Each start index is passed at most once, and
 * each clash check advances head past the cells it read: O(size * n) worst
 * case, O(size) for the usual small n. */
static bool find_contiguous(kv_cells *c, int32_t n, int32_t *idx) {
    int32_t head = c->head, tested = 0;
    for (;;) {
        if (head + n > c->size) {
            tested += c->size - head;
            head = 0;
            continue;
        }
        int32_t clash = -1;
        for (int32_t i = 0; i < n; i++)
            if (c->pos[head + i] >= 0) {
                clash = i;
                break;
            }
        if (clash < 0) break;
        head += clash + 1;
        tested += clash + 1;
        if (tested >= c->size) return false;
    }
    for (int32_t i = 0; i < n; i++) idx[i] = head + i;
    c->head = head;
    return true;
}

bool kv_cells_find_slot(kv_cells *c, int32_t n, bool contiguous, int32_t *idx) {
    if (n <= 0 || n > c->size - c->used) return false;
    int32_t head_before = c->head;
    /* llama.cpp PR #5691's heuristic: plenty of room before head -> refill from the start. */
    if ((int64_t)c->head > (int64_t)c->used + 2 * (int64_t)n) c->head = 0;
    if (contiguous) {
        if (find_contiguous(c, n, idx)) return true;
        c->head = head_before;
        return false;
    }
    /* n <= size - used free cells exist, so one lap finds them all. */
    int32_t found = 0;
    for (int32_t k = 0; k < c->size && found < n; k++) {
        int32_t i = c->head + k < c->size ? c->head + k : c->head + k - c->size;
        if (c->pos[i] < 0) idx[found++] = i;
    }
    CS_ASSERT(found == n);
    return true;
}

void kv_cells_assign(kv_cells *c, int32_t i, cs_pos pos, uint64_t seqs) {
    CS_ASSERT(i >= 0 && i < c->size && c->pos[i] < 0 && c->seq[i] == 0);
    CS_ASSERT(pos >= 0 && seqs != 0);
    c->pos[i] = pos;
    c->seq[i] = seqs;
    c->delta[i] = 0;
    c->used++;
    c->head = i + 1 < c->size ? i + 1 : 0;
    seqpos_add_all(c, seqs, pos, 0);
}

/* Empty cell i (its bookkeeping already removed by the caller). */
static void cell_free(kv_cells *c, int32_t i) {
    c->pos[i] = -1;
    c->delta[i] = 0;
    c->seq[i] = 0;
    c->used--;
}

/* Normalise [p0, p1) (spec §2.1); false for an empty range. */
static bool range_norm(cs_pos *p0, cs_pos *p1) {
    if (*p0 < 0) *p0 = 0;
    if (*p1 < 0) *p1 = INT32_MAX;
    return *p0 < *p1;
}

int32_t kv_cells_seq_rm(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1) {
    if (!range_norm(&p0, &p1)) return 0;
    CS_ASSERT(seq < CS_MAX_SEQ);
    int32_t freed = 0, first = -1;
    uint64_t mask = seq < 0 ? ~(uint64_t)0 : (uint64_t)1 << seq, stale = 0;
    for (int32_t i = 0; i < c->size; i++) {
        uint64_t hit = c->seq[i] & mask;
        if (!hit || c->pos[i] < p0 || c->pos[i] >= p1) continue;
        seqpos_remove_all(c, hit, c->pos[i], &stale);
        c->seq[i] &= ~mask;
        if (!c->seq[i]) {
            cell_free(c, i);
            if (first < 0) first = i;
            freed++;
        }
    }
    if (first >= 0 && first < c->head) c->head = first;
    seqpos_rescan(c, stale);
    return freed;
}

cs_pos kv_cells_seq_pos_max(const kv_cells *c, cs_seq seq) {
    if (seq < 0 || seq >= CS_MAX_SEQ) return -1;
    return c->seq_max[seq];
}

cs_pos kv_cells_seq_pos_min(const kv_cells *c, cs_seq seq) {
    if (seq < 0 || seq >= CS_MAX_SEQ) return -1;
    return c->seq_min[seq];
}

int32_t kv_cells_token_count(const kv_cells *c) {
    int32_t n = 0;
    for (int32_t i = 0; i < c->size; i++) n += __builtin_popcountll(c->seq[i]);
    return n;
}

/* ------------------------------------------------- spec §2 operations */

void kv_cells_seq_cp(kv_cells *c, cs_seq src, cs_seq dst, cs_pos p0, cs_pos p1) {
    if (src == dst || !range_norm(&p0, &p1)) return;
    CS_ASSERT(src >= 0 && src < CS_MAX_SEQ && dst >= 0 && dst < CS_MAX_SEQ);
    uint64_t sb = (uint64_t)1 << src, db = (uint64_t)1 << dst;
    for (int32_t i = 0; i < c->size; i++) {
        if (!(c->seq[i] & sb) || (c->seq[i] & db) || c->pos[i] < p0 || c->pos[i] >= p1) continue;
        c->seq[i] |= db;
        seqpos_add(c, dst, c->pos[i], 0);
    }
    c->head = 0; /* llama.cpp PR #5691's side effect (spec §1.7) */
}

int32_t kv_cells_seq_keep(kv_cells *c, cs_seq seq) {
    CS_ASSERT(seq >= 0 && seq < CS_MAX_SEQ);
    uint64_t bit = (uint64_t)1 << seq, stale = 0;
    int32_t freed = 0, first = -1;
    for (int32_t i = 0; i < c->size; i++) {
        if (!c->seq[i]) {
            if (first < 0) first = i; /* llama.cpp PR #5691 counts every cell without seq */
            continue;
        }
        seqpos_remove_all(c, c->seq[i] & ~bit, c->pos[i], &stale);
        if (c->seq[i] & bit) {
            c->seq[i] = bit;
        } else {
            cell_free(c, i);
            if (first < 0) first = i;
            freed++;
        }
    }
    if (first >= 0 && first < c->head) c->head = first;
    seqpos_rescan(c, stale);
    return freed;
}

static int32_t sat32(int64_t v) {
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
}

int32_t kv_cells_seq_add(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1, cs_pos delta) {
    if (delta == 0 || !range_norm(&p0, &p1)) return 0;
    CS_ASSERT(seq >= 0 && seq < CS_MAX_SEQ);
    uint64_t bit = (uint64_t)1 << seq, stale = 0;
    int32_t matched = 0, first = -1;
    for (int32_t i = 0; i < c->size; i++) {
        if (!(c->seq[i] & bit) || c->pos[i] < p0 || c->pos[i] >= p1) continue;
        matched++;
        cs_pos old = c->pos[i];
        int64_t np = (int64_t)old + delta;
        seqpos_remove_all(c, c->seq[i], old, &stale);
        if (np < 0) {
            /* dropped entirely, every sequence with it (spec §2.6) */
            cell_free(c, i);
            if (first < 0) first = i;
            continue;
        }
        /* saturate at CS_POS_MAX, not INT32_MAX: an open range must reach
         * every cell */
        c->pos[i] = np > CS_POS_MAX ? CS_POS_MAX : (int32_t)np;
        c->delta[i] = sat32((int64_t)c->delta[i] + delta);
        seqpos_add_all(c, c->seq[i], c->pos[i], stale);
    }
    if (matched) c->has_shift = true;
    c->head = first >= 0 ? first : 0; /* always reassigned (spec §1.7) */
    seqpos_rescan(c, stale);
    return matched;
}

int32_t kv_cells_seq_div(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1, int32_t d) {
    CS_ASSERT(d >= 1);
    if (d == 1 || !range_norm(&p0, &p1)) return 0;
    CS_ASSERT(seq >= 0 && seq < CS_MAX_SEQ);
    uint64_t bit = (uint64_t)1 << seq, stale = 0;
    int32_t matched = 0;
    for (int32_t i = 0; i < c->size; i++) {
        if (!(c->seq[i] & bit) || c->pos[i] < p0 || c->pos[i] >= p1) continue;
        matched++;
        cs_pos old = c->pos[i], np = old / d;
        seqpos_remove_all(c, c->seq[i], old, &stale);
        c->pos[i] = np;
        c->delta[i] = sat32((int64_t)c->delta[i] + np - old); /* new - old (spec §2.7) */
        seqpos_add_all(c, c->seq[i], np, stale);
    }
    if (matched) c->has_shift = true;
    seqpos_rescan(c, stale);
    return matched;
}

int32_t kv_cells_seq_own(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1, kv_move *copies,
                         int32_t *n_cells) {
    *n_cells = 0;
    if (!range_norm(&p0, &p1)) return 0;
    CS_ASSERT(seq >= 0 && seq < CS_MAX_SEQ);
    const uint64_t bit = (uint64_t)1 << seq;
    /* count first, so that a refusal changes nothing */
    int32_t need = 0;
    for (int32_t i = 0; i < c->size; i++)
        need += (c->seq[i] & bit) && (c->seq[i] & ~bit) && c->pos[i] >= p0 && c->pos[i] < p1;
    if (need == 0) return 0;
    if (need > c->size - c->used) return -1;
    /* dst is the lowest free cell not yet taken; it only moves forward, so
     * the two scans together are O(size). A copy lands in a cell the split
     * scan may reach later, but it holds seq alone and is skipped. */
    int32_t nb = 0, dst = 0;
    for (int32_t i = 0; i < c->size && *n_cells < need; i++) {
        if (!(c->seq[i] & bit) || !(c->seq[i] & ~bit) || c->pos[i] < p0 || c->pos[i] >= p1)
            continue;
        while (c->seq[dst]) { /* need <= free cells: always found */
            dst++;
            CS_ASSERT(dst < c->size);
        }
        c->pos[dst] = c->pos[i];
        c->delta[dst] = c->delta[i];
        c->seq[dst] = bit;
        c->seq[i] &= ~bit;
        c->used++;
        (*n_cells)++;
        kv_move *last = nb ? &copies[nb - 1] : NULL;
        if (last && last->src + last->n == i && last->dst + last->n == dst) {
            last->n++;
        } else {
            copies[nb++] = (kv_move){.src = i, .dst = dst, .n = 1};
        }
    }
    return nb;
}

int32_t kv_cells_n_pending(const kv_cells *c) {
    int32_t n = 0;
    for (int32_t i = 0; i < c->size; i++) n += c->seq[i] != 0 && c->delta[i] != 0;
    return n;
}

void kv_cells_reset_shift(kv_cells *c) {
    for (int32_t i = 0; i < c->size; i++) c->delta[i] = 0;
    c->has_shift = false;
}

/* ------------------------------------------------------------ defrag */

/* The spec's plan_defrag (§4.2). The back-to-front search of the pseudo-
 * code restarts at cell_max for every hole; since the sources of each hole
 * lie below those of the previous one (property 2) and cells in between
 * are either claimed or empty, it resumes at `top`, the lowest cell
 * claimed so far. Every index is read at most twice: O(cell_max). */
int32_t kv_cells_defrag_plan(const kv_cells *c, int32_t max_moves, int32_t *ids, kv_move *moves) {
    const int32_t n_kv = kv_cells_cell_max(c), n_used = c->used;
    const int32_t cap = max_moves > 0 ? max_moves : INT32_MAX;
    CS_ASSERT(n_used <= n_kv);
    for (int32_t i = 0; i < n_kv; i++) ids[i] = n_kv;
    int32_t n_moves = 0, top = n_kv, i0 = 0;
    while (i0 < n_used) {
        if (c->seq[i0]) {
            ids[i0] = i0;
            i0++;
            continue;
        }
        int32_t nh = 1;
        while (i0 + nh < n_used && !c->seq[i0 + nh]) nh++;
        /* the nh-th non-empty unclaimed cell from the back */
        int32_t is = top, nf = 0;
        while (nf < nh) {
            is--;
            CS_ASSERT(is > i0); /* fails only if used is wrong */
            nf += c->seq[is] != 0;
        }
        /* claim them in ascending order; each run of sources is one block */
        bool cont = false, stop = false;
        nf = 0;
        for (int32_t i1 = is; i1 < top && nf < nh; i1++) {
            if (!c->seq[i1]) {
                if (n_moves == cap) {
                    stop = true;
                    break;
                }
                cont = false;
                continue;
            }
            ids[i1] = i0 + nf++;
            if (!cont) {
                n_moves++;
                cont = true;
            }
        }
        top = is;
        if (stop || n_moves == cap) break;
        i0 += nh;
    }
    if (n_moves == 0) return 0;
    /* coalesce (§4.3): consecutive sources with consecutive destinations */
    int32_t nb = 0;
    for (int32_t i = 0; i < n_kv;) {
        int32_t d = ids[i];
        if (d == i || d == n_kv) {
            i++;
            continue;
        }
        int32_t nm = 1;
        while (i + nm < n_kv && ids[i + nm] == d + nm) nm++;
        moves[nb++] = (kv_move){.src = i, .dst = d, .n = nm};
        i += nm;
    }
    return nb;
}

void kv_cells_apply_moves(kv_cells *c, const kv_move *moves, int32_t n_moves) {
    for (int32_t m = 0; m < n_moves; m++) {
        const kv_move *mv = &moves[m];
        CS_ASSERT(mv->n >= 0 && mv->src >= 0 && mv->dst >= 0 && mv->src <= c->size - mv->n &&
                  mv->dst <= c->size - mv->n);
        for (int32_t k = 0; k < mv->n; k++) {
            int32_t s = mv->src + k, d = mv->dst + k;
            if (s == d) continue; /* FIX 15: a self-move must not erase the cell */
            CS_ASSERT(c->seq[d] == 0);
            c->pos[d] = c->pos[s];
            c->delta[d] = c->delta[s];
            c->seq[d] = c->seq[s];
            c->pos[s] = -1;
            c->delta[s] = 0;
            c->seq[s] = 0;
        }
    }
    c->head = c->used < c->size ? c->used : 0;
}

/* ------------------------------------------------------------- checks */

static bool check_seqpos(const kv_cells *c) {
    for (int32_t s = 0; s < CS_MAX_SEQ; s++) {
        uint64_t bit = (uint64_t)1 << s;
        int32_t n = 0, nmin = 0, nmax = 0;
        cs_pos mn = -1, mx = -1;
        for (int32_t i = 0; i < c->size; i++) {
            if (!(c->seq[i] & bit)) continue;
            cs_pos p = c->pos[i];
            if (n++ == 0 || p < mn) {
                mn = p;
                nmin = 0;
            }
            if (n == 1 || p > mx) {
                mx = p;
                nmax = 0;
            }
            nmin += p == mn;
            nmax += p == mx;
        }
        if (n != c->seq_n[s] || mn != c->seq_min[s] || mx != c->seq_max[s] ||
            nmin != c->seq_nmin[s] || nmax != c->seq_nmax[s]) {
            error_fail(CS_ERR_INVALID_ARG,
                       "kv: sequence %d bookkeeping (n %d, min %d x%d, max %d x%d) differs from "
                       "the cells (n %d, min %d x%d, max %d x%d)",
                       s, c->seq_n[s], c->seq_min[s], c->seq_nmin[s], c->seq_max[s], c->seq_nmax[s],
                       n, mn, nmin, mx, nmax);
            return false;
        }
    }
    return true;
}

bool kv_cells_check(const kv_cells *c) {
    int32_t used = 0;
    bool any_delta = false;
    for (int32_t i = 0; i < c->size; i++) {
        bool empty = c->seq[i] == 0;
        if (empty != (c->pos[i] < 0)) {
            error_fail(CS_ERR_INVALID_ARG, "kv: C1 broken at cell %d: pos %d, seq %#llx", i,
                       c->pos[i], (unsigned long long)c->seq[i]);
            return false;
        }
        if (empty && c->delta[i] != 0) {
            error_fail(CS_ERR_INVALID_ARG, "kv: C2 broken at cell %d: empty with delta %d", i,
                       c->delta[i]);
            return false;
        }
        used += !empty;
        any_delta |= c->delta[i] != 0;
    }
    if (used != c->used) {
        error_fail(CS_ERR_INVALID_ARG, "kv: used is %d but %d cells are non-empty", c->used, used);
        return false;
    }
    if (c->head < 0 || c->head >= c->size) {
        error_fail(CS_ERR_INVALID_ARG, "kv: head %d outside [0, %d)", c->head, c->size);
        return false;
    }
    if (any_delta && !c->has_shift) {
        error_fail(CS_ERR_INVALID_ARG, "kv: a cell has a delta but has_shift is false");
        return false;
    }
    return check_seqpos(c);
}
