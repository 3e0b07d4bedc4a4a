/* kv_cells.c: KV metadata operations. Every operation is O(size) at most
 * and allocation-free after init. */
#include "kv_cells.h"

#include <string.h>

cs_status kv_cells_init(kv_cells *c, int32_t size) {
    memset(c, 0, sizeof *c);
    c->pos = cs_malloc((size_t)size * sizeof *c->pos);
    c->delta = cs_malloc((size_t)size * sizeof *c->delta);
    c->seq = cs_malloc((size_t)size * sizeof *c->seq);
    if (!c->pos || !c->delta || !c->seq) {
        kv_cells_free(c);
        return cs_fail(CS_ERR_NOMEM, "kv: out of memory for %d cells", size);
    }
    c->size = size;
    kv_cells_clear(c);
    return CS_OK;
}

void kv_cells_free(kv_cells *c) {
    cs_free(c->pos);
    cs_free(c->delta);
    cs_free(c->seq);
    memset(c, 0, sizeof *c);
}

void kv_cells_clear(kv_cells *c) {
    for (int32_t i = 0; i < c->size; i++) {
        c->pos[i] = -1;
        c->delta[i] = 0;
        c->seq[i] = 0;
    }
    c->used = 0;
    c->head = 0;
    c->has_shift = false;
}

int32_t kv_cells_cell_max(const kv_cells *c) {
    for (int32_t i = c->size - 1; i >= 0; i--)
        if (c->seq[i]) return i + 1;
    return 0;
}

bool kv_cells_find_slot(kv_cells *c, int32_t n, bool contiguous, int32_t *idx) {
    if (n <= 0 || n > c->size - c->used) return false;
    /* The PR's heuristic: plenty of room before head -> refill from the start. */
    if (c->head > c->used + 2 * n) c->head = 0;
    if (contiguous) {
        int32_t head = c->head, tested = 0;
        for (;;) {
            if (head + n > c->size) {
                tested += c->size - head;
                head = 0;
                if (tested >= c->size) return false;
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
    int32_t found = 0;
    for (int32_t k = 0; k < c->size && found < n; k++) {
        int32_t i = (c->head + k) % c->size;
        if (c->pos[i] < 0) idx[found++] = i;
    }
    return found == n;
}

void kv_cells_assign(kv_cells *c, int32_t i, cs_pos pos, uint64_t seqs) {
    CS_ASSERT(i >= 0 && i < c->size && c->pos[i] < 0 && c->seq[i] == 0);
    CS_ASSERT(pos >= 0 && seqs != 0);
    c->pos[i] = pos;
    c->seq[i] = seqs;
    c->delta[i] = 0;
    c->used++;
    c->head = i + 1 < c->size ? i + 1 : 0;
}

static void cell_free(kv_cells *c, int32_t i) {
    c->pos[i] = -1;
    c->delta[i] = 0;
    c->seq[i] = 0;
    c->used--;
}

int32_t kv_cells_seq_rm(kv_cells *c, cs_seq seq, cs_pos p0, cs_pos p1) {
    if (p0 < 0) p0 = 0;
    if (p1 < 0) p1 = INT32_MAX;
    int32_t freed = 0, first = -1;
    uint64_t mask = seq < 0 ? ~(uint64_t)0 : (uint64_t)1 << seq;
    for (int32_t i = 0; i < c->size; i++) {
        if (c->pos[i] < p0 || c->pos[i] >= p1 || !(c->seq[i] & mask)) continue;
        c->seq[i] &= ~mask;
        if (!c->seq[i]) {
            cell_free(c, i);
            if (first < 0) first = i;
            freed++;
        }
    }
    if (first >= 0 && first < c->head) c->head = first;
    return freed;
}

cs_pos kv_cells_seq_pos_max(const kv_cells *c, cs_seq seq) {
    cs_pos r = -1;
    uint64_t m = (uint64_t)1 << seq;
    for (int32_t i = 0; i < c->size; i++)
        if ((c->seq[i] & m) && c->pos[i] > r) r = c->pos[i];
    return r;
}

cs_pos kv_cells_seq_pos_min(const kv_cells *c, cs_seq seq) {
    cs_pos r = -1;
    uint64_t m = (uint64_t)1 << seq;
    for (int32_t i = 0; i < c->size; i++)
        if ((c->seq[i] & m) && (r < 0 || c->pos[i] < r)) r = c->pos[i];
    return r;
}

int32_t kv_cells_token_count(const kv_cells *c) {
    int32_t n = 0;
    for (int32_t i = 0; i < c->size; i++) n += __builtin_popcountll(c->seq[i]);
    return n;
}

bool kv_cells_check(const kv_cells *c) {
    int32_t used = 0;
    bool any_delta = false;
    for (int32_t i = 0; i < c->size; i++) {
        bool empty = c->seq[i] == 0;
        if (empty != (c->pos[i] < 0)) {
            cs_fail(CS_ERR_INVALID_ARG, "kv: C1 broken at cell %d: pos %d, seq %#llx", i,
                    c->pos[i], (unsigned long long)c->seq[i]);
            return false;
        }
        if (empty && c->delta[i] != 0) {
            cs_fail(CS_ERR_INVALID_ARG, "kv: C2 broken at cell %d: empty with delta %d", i,
                    c->delta[i]);
            return false;
        }
        used += !empty;
        any_delta |= c->delta[i] != 0;
    }
    if (used != c->used) {
        cs_fail(CS_ERR_INVALID_ARG, "kv: used is %d but %d cells are non-empty", c->used, used);
        return false;
    }
    if (c->head < 0 || c->head >= c->size) {
        cs_fail(CS_ERR_INVALID_ARG, "kv: head %d outside [0, %d)", c->head, c->size);
        return false;
    }
    if (any_delta && !c->has_shift) {
        cs_fail(CS_ERR_INVALID_ARG, "kv: a cell has a delta but has_shift is false");
        return false;
    }
    return true;
}
