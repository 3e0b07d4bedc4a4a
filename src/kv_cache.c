/* kv_cache.c: K/V storage (head-major, kv_cache.h), cell writes, the K-shift and defrag moves. */
#include "kv_cache.h"

#include <math.h>
#include <string.h>

size_t kv_row_bytes(int32_t type, int64_t n) {
    switch (type) {
    case CS_TYPE_F32:
        return (size_t)n * 4;
    case CS_TYPE_F16:
        return (size_t)n * 2;
    case CS_TYPE_Q8_0:
        return n % CS_QK8_0 ? 0 : (size_t)(n / CS_QK8_0) * sizeof(block_q8_0);
    default:
        return 0;
    }
}

static cs_status check_type(const char *which, int32_t type, int32_t head_dim) {
    if (type != CS_TYPE_F32 && type != CS_TYPE_F16 && type != CS_TYPE_Q8_0)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "kv: cache type_%s %s (%d) is not supported (f32, f16, q8_0)", which,
                          cs_type_name(type), type);
    if (type == CS_TYPE_Q8_0 && head_dim % CS_QK8_0 != 0)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "kv: cache type_%s q8_0 needs a head size that is a multiple of 32; this "
                          "model's is %d",
                          which, head_dim);
    return CS_OK;
}

cs_status kv_store_init(kv_store *s, int32_t n_layer, int32_t size, int32_t n_head_kv,
                        int32_t head_dim, int32_t type_k, int32_t type_v) {
    memset(s, 0, sizeof *s);
    cs_status st = check_type("k", type_k, head_dim);
    if (st == CS_OK) st = check_type("v", type_v, head_dim);
    if (st != CS_OK) return st;
    s->n_layer = n_layer;
    s->size = size;
    s->n_head_kv = n_head_kv;
    s->head_dim = head_dim;
    s->n_embd_kv = n_head_kv * head_dim;
    s->type_k = type_k;
    s->type_v = type_v;
    s->row_k = kv_row_bytes(type_k, s->n_embd_kv);
    s->row_v = kv_row_bytes(type_v, s->n_embd_kv);
    s->head_k = kv_row_bytes(type_k, head_dim);
    s->head_v = kv_row_bytes(type_v, head_dim);
    s->k = mem_calloc((size_t)n_layer, sizeof *s->k);
    s->v = mem_calloc((size_t)n_layer, sizeof *s->v);
    if (!s->k || !s->v) goto nomem;
    /* each layer's K and V buffer rounded up to a cache line, so that every
     * buffer starts on one */
    size_t bk, bv, per_layer, total;
    if (!common_mul_size(s->row_k, (size_t)size, &bk) ||
        !common_mul_size(s->row_v, (size_t)size, &bv) || bk > SIZE_MAX - 64 || bv > SIZE_MAX - 64)
        goto nomem;
    bk = (bk + 63) & ~(size_t)63;
    bv = (bv + 63) & ~(size_t)63;
    if (bk > SIZE_MAX - bv) goto nomem;
    per_layer = bk + bv;
    if (!common_mul_size(per_layer, (size_t)n_layer, &total)) goto nomem;
    /* anonymous memory reads as zeros: a never-written cell is deterministic */
    s->arena = mem_huge_alloc(total);
    if (!s->arena) goto nomem;
    s->arena_bytes = total;
    for (int32_t il = 0; il < n_layer; il++) {
        s->k[il] = (uint8_t *)s->arena + per_layer * (size_t)il;
        s->v[il] = (uint8_t *)s->k[il] + bk;
    }
    return CS_OK;
nomem:
    kv_store_free(s);
    return error_fail(CS_ERR_NOMEM, "kv: out of memory for %d cells x %d layers", size, n_layer);
}

void kv_store_free(kv_store *s) {
    mem_huge_free(s->arena, s->arena_bytes);
    mem_free(s->k);
    mem_free(s->v);
    memset(s, 0, sizeof *s);
}

void kv_store_get_row(const kv_store *s, bool v, const void *buf, int32_t c, void *row) {
    const size_t hb = v ? s->head_v : s->head_k;
    for (int32_t h = 0; h < s->n_head_kv; h++)
        memcpy((uint8_t *)row + (size_t)h * hb, (const uint8_t *)buf + kv_store_off(s, v, h, c),
               hb);
}

void kv_store_put_row(const kv_store *s, bool v, void *buf, int32_t c, const void *row) {
    const size_t hb = v ? s->head_v : s->head_k;
    for (int32_t h = 0; h < s->n_head_kv; h++)
        memcpy((uint8_t *)buf + kv_store_off(s, v, h, c), (const uint8_t *)row + (size_t)h * hb,
               hb);
}

static void write_row(int32_t type, const kernels_table *k, void *dst, const float *src,
                      int64_t n) {
    switch (type) {
    case CS_TYPE_F16:
        k->from_float[CS_TYPE_F16](src, dst, n);
        break;
    case CS_TYPE_Q8_0:
        k->from_float[CS_TYPE_Q8_0](src, dst, n);
        break;
    default:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    }
}

void kv_store_write(const kv_store *s, const kernels_table *k, int32_t layer, int32_t cell,
                    const float *krow, const float *vrow) {
    /* head by head: every conversion is elementwise or per 32-element block,
     * and a head is whole blocks, so the bytes equal a whole-row conversion */
    const int32_t hd = s->head_dim;
    for (int32_t h = 0; h < s->n_head_kv; h++) {
        write_row(s->type_k, k, (uint8_t *)s->k[layer] + kv_store_off(s, false, h, cell),
                  krow + (size_t)h * hd, hd);
        write_row(s->type_v, k, (uint8_t *)s->v[layer] + kv_store_off(s, true, h, cell),
                  vrow + (size_t)h * hd, hd);
    }
}

/* ------------------------------------------------------------- K-shift
 *
 * The shift is memory-bound: per shifted cell and layer it reads and writes
 * the rotated part of one K row, and the arithmetic (convert, four
 * multiplies per pair, convert back) stays in L1. So the loops are arranged
 * for the memory system and for as few trig calls as possible:
 *  - the cells to rotate are collected once, in cell order, and split into
 *    contiguous shares, one per thread (cells are independent, so the
 *    result does not depend on the number of threads);
 *  - each share is walked in batches of SHIFT_BATCH cells; the (cos, sin)
 *    table of each batch cell is computed once (and reused from the
 *    previous cell when the delta repeats, the common case of a context
 *    shift) and then applied to every layer and head, layer-major inside
 *    the batch, so each head's cells are visited in ascending order;
 *  - each head of a cell is rotated by one kernel call (F32 in place; F16
 *    and Q8_0 through an f32 scratch head), over [0, n_rot) only, so the
 *    pass-through elements keep their bytes; a layer's heads are walked
 *    one after another, each an ascending run of cells (kv_cache.h). */

/* Cells per batch: large enough that each head's cells are streamed in
 * runs of SHIFT_BATCH cells (the hardware prefetcher needs runs; 16 was
 * ~15 % slower than 128 on the 12-layer F16 benchmark), small enough that
 * the batch's tables stay in L2 (128 * n_rot floats). */
enum { SHIFT_BATCH = 128 };

typedef struct shift_job {
    const kv_store *s;
    const kernels_table *k;
    kernels_rope_params rope; /* attn_factor 1: a pure rotation */
    const int32_t *cells;     /* cells to rotate, ascending */
    const cs_pos *delta;      /* kv_cells delta array */
    int32_t n_cells;
    int32_t batch;         /* cells per batch: <= SHIFT_BATCH and <= a thread's share */
    float *scratch;        /* per thread: batch tables + one f32 row */
    size_t scratch_floats; /* floats per thread */
} shift_job;

/* Rotate head h of one cell of one layer by the table cs (the rope kernel
 * treats heads alike, so one head at a time is the row's arithmetic). Only
 * [0, n_rot) is converted and written back (Q8_0: the blocks that hold
 * it), so the pass-through elements keep their exact bytes. buf holds
 * head_dim floats. */
static void shift_head(const shift_job *j, int32_t layer, int32_t h, int32_t cell, const float *cs,
                       float *buf) {
    const kv_store *s = j->s;
    const kernels_table *k = j->k;
    const int32_t n_rot = j->rope.n_rot, mode = j->rope.mode;
    const int32_t hd = s->head_dim;
    uint8_t *p = (uint8_t *)s->k[layer] + kv_store_off(s, false, h, cell);
    switch (s->type_k) {
    case CS_TYPE_F32:
        k->rope((float *)p, 1, hd, n_rot, mode, cs);
        break;
    case CS_TYPE_F16:
        k->fp16_to_fp32_row((const uint16_t *)p, buf, n_rot);
        k->rope(buf, 1, hd, n_rot, mode, cs);
        k->from_float[CS_TYPE_F16](buf, p, n_rot);
        break;
    case CS_TYPE_Q8_0: {
        /* the blocks holding rotated dims; the rest are neither read nor rewritten */
        const int64_t ne = (int64_t)((n_rot + CS_QK8_0 - 1) / CS_QK8_0) * CS_QK8_0;
        dequantize_row_q8_0((const block_q8_0 *)p, buf, ne);
        k->rope(buf, 1, hd, n_rot, mode, cs);
        k->from_float[CS_TYPE_Q8_0](buf, p, ne);
        break;
    }
    default:
        CS_ASSERT(!"kv: K-shift of an unsupported cache type");
    }
}

static void shift_worker(void *arg, int32_t ith, int32_t nth) {
    const shift_job *j = arg;
    int64_t i0, i1;
    threadpool_split(j->n_cells, ith, nth, &i0, &i1);
    if (i0 >= i1) return;
    const int32_t n_rot = j->rope.n_rot;
    float *tabs = j->scratch + (size_t)ith * j->scratch_floats;
    float *buf = tabs + (size_t)j->batch * (size_t)n_rot;
    const float *tab[SHIFT_BATCH];
    int32_t n_tab = 0; /* tables filled in tabs for the current batch */
    cs_pos last_d = 0; /* delta of table n_tab - 1 (deltas here are never 0) */
    for (int64_t b0 = i0; b0 < i1; b0 += j->batch) {
        const int32_t nb = (int32_t)(i1 - b0 < j->batch ? i1 - b0 : j->batch);
        /* carry the previous batch's last table over when the delta repeats */
        if (n_tab > 0 && j->delta[j->cells[b0]] == last_d) {
            if (n_tab > 1)
                memmove(tabs, tabs + (size_t)(n_tab - 1) * n_rot, (size_t)n_rot * sizeof(float));
            n_tab = 1;
        } else {
            n_tab = 0;
        }
        for (int32_t b = 0; b < nb; b++) {
            const cs_pos d = j->delta[j->cells[b0 + b]];
            if (n_tab == 0 || d != last_d) {
                kernels_rope_cache(tabs + (size_t)n_tab * n_rot, (float)d, &j->rope);
                n_tab++;
                last_d = d;
            }
            tab[b] = tabs + (size_t)(n_tab - 1) * n_rot;
        }
        /* layer by layer, head by head: each head's cells are one ascending
         * run of memory */
        for (int32_t il = 0; il < j->s->n_layer; il++)
            for (int32_t h = 0; h < j->s->n_head_kv; h++)
                for (int32_t b = 0; b < nb; b++)
                    shift_head(j, il, h, j->cells[b0 + b], tab[b], buf);
    }
}

/* The attn_factor that makes kernels_rope_cache's magnitude exactly 1. With
 * ext_factor != 0 kernels_rope_cache multiplies attn_factor by the YaRN factor
 * x = 1 + 0.1*ln(1/freq_scale) (computed below with the same float
 * expression), so attn_factor 1 alone would scale K by x on every shift
 * (upstream's drift, docs/KV_CACHE_SPEC.md §3.2 obs.). Pick the float a nearest 1/x with
 * a*x == 1 exactly, so that the table is cos/sin unscaled. */
static float shift_attn_factor(const kernels_rope_params *p) {
    if (p->ext_factor == 0.0f) return 1.0f;
    const float x = 1.0f + 0.1f * logf(1.0f / p->freq_scale);
    float a = 1.0f / x;
    for (int i = 0; i < 4 && a * x != 1.0f; i++) a = nextafterf(a, a * x > 1.0f ? 0.0f : 2.0f);
    return a;
}

/* Bytes of one K row that a shift reads (and writes again): the blocks or
 * elements of [0, n_rot) of every head. */
static size_t shift_row_bytes(const kv_store *s, int32_t n_rot) {
    if (n_rot == s->head_dim) return s->row_k;
    int64_t per_head =
        s->type_k == CS_TYPE_Q8_0 ? (int64_t)((n_rot + CS_QK8_0 - 1) / CS_QK8_0) * CS_QK8_0 : n_rot;
    return kv_row_bytes(s->type_k, per_head) * (size_t)s->n_head_kv;
}

/* Contract in kv_cache.h. rope == NULL, rope->n_rot == 0 or rope->mode < 0
 * (RoPE type NONE) means the model has no RoPE: positions live in the
 * metadata only, so the deltas are just cleared (spec §8 C6). Allocates
 * one scratch block (the cell list, and per thread a batch of tables and
 * an f32 head: at most (n_cells + n_threads) * n_rot + n_threads * head_dim
 * floats); if that fails, returns -1 with CS_ERR_NOMEM recorded and the
 * deltas left pending (nothing changed). */
int32_t kv_store_apply_shift(kv_store *s, kv_cells *c, const kernels_table *k, threadpool *tp,
                             const kernels_rope_params *rope, uint64_t *bytes) {
    CS_ASSERT(s->size == c->size);
    int32_t n_cells = 0;
    for (int32_t i = 0; i < c->size; i++) n_cells += c->pos[i] >= 0 && c->delta[i] != 0;
    if (n_cells == 0 || !rope || rope->n_rot == 0 || rope->mode < 0) {
        kv_cells_reset_shift(c);
        return 0;
    }
    CS_ASSERT(rope->n_rot > 0 && rope->n_rot % 2 == 0 && rope->n_rot <= s->head_dim);

    /* a few hundred rows take microseconds: not worth waking the pool */
    const int32_t nth =
        tp && (int64_t)n_cells * s->n_layer >= 2 * SHIFT_BATCH ? threadpool_n_threads(tp) : 1;
    const int32_t share = (n_cells + nth - 1) / nth;
    const int32_t batch = share < SHIFT_BATCH ? share : SHIFT_BATCH;
    /* per thread: tables, then the row, rounded up to a cache line so that
     * threads never write to the same line */
    size_t per = (size_t)batch * (size_t)rope->n_rot + (size_t)s->head_dim;
    per = (per + 15) & ~(size_t)15;
    size_t list_floats = ((size_t)n_cells + 15) & ~(size_t)15; /* int32 and float are 4 bytes */
    void *mem = mem_aligned_alloc((list_floats + (size_t)nth * per) * sizeof(float));
    if (!mem) {
        error_fail(CS_ERR_NOMEM, "kv: out of memory for the K-shift scratch of %d cells", n_cells);
        return -1;
    }
    int32_t *cells = mem;
    for (int32_t i = 0, n = 0; i < c->size; i++)
        if (c->pos[i] >= 0 && c->delta[i] != 0) cells[n++] = i;

    shift_job job = {
        .s = s,
        .k = k,
        .rope = *rope,
        .cells = cells,
        .delta = c->delta,
        .n_cells = n_cells,
        .batch = batch,
        .scratch = (float *)mem + list_floats,
        .scratch_floats = per,
    };
    job.rope.attn_factor = shift_attn_factor(rope); /* spec §3.2: magnitude 1, same angles */
    if (nth > 1)
        threadpool_run(tp, shift_worker, &job);
    else
        shift_worker(&job, 0, 1);
    mem_free(mem);

    if (bytes)
        *bytes += 2 * (uint64_t)shift_row_bytes(s, rope->n_rot) * (uint64_t)n_cells *
                  (uint64_t)s->n_layer;
    kv_cells_reset_shift(c);
    return n_cells;
}

void kv_store_move(kv_store *s, const kv_move *moves, int32_t n_moves, uint64_t *bytes) {
    uint64_t total = 0;
    for (int32_t m = 0; m < n_moves; m++) /* a plan from kv_cells_defrag_plan is in range */
        CS_ASSERT(moves[m].n >= 0 && moves[m].src >= 0 && moves[m].dst >= 0 &&
                  moves[m].src <= s->size - moves[m].n && moves[m].dst <= s->size - moves[m].n);
    for (int32_t il = 0; il < s->n_layer; il++) {
        uint8_t *K = s->k[il], *V = s->v[il];
        for (int32_t m = 0; m < n_moves; m++) {
            const int32_t src = moves[m].src, dst = moves[m].dst;
            const size_t nk = (size_t)moves[m].n * s->head_k, nv = (size_t)moves[m].n * s->head_v;
            /* a block of cells is one run per head; sources >= used >
             * destinations, so the runs never overlap, but memmove keeps
             * this correct even for a hand-made plan */
            for (int32_t h = 0; h < s->n_head_kv; h++) {
                memmove(K + kv_store_off(s, false, h, dst), K + kv_store_off(s, false, h, src), nk);
                memmove(V + kv_store_off(s, true, h, dst), V + kv_store_off(s, true, h, src), nv);
            }
            total += (uint64_t)moves[m].n * (s->row_k + s->row_v);
        }
    }
    if (bytes) *bytes += total;
}
