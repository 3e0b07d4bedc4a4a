/* context.c: cs_context creation, cs_decode and the KV operations of the
 * engine issue. Everything a decode needs is allocated here, once, so that
 * a decode can only fail before it changes anything. */
#include "context.h"

#include <string.h>
#include <unistd.h>

#include "cs_limits.h"
#include "kernels/matmul.h"

cs_context_params cs_context_default_params(void) {
    return (cs_context_params){
        .n_ctx = 0,
        .n_batch = 0,
        .n_seq_max = 1,
        .n_threads = 0,
        .type_k = CS_TYPE_F16,
        .type_v = CS_TYPE_F16,
        .contiguous_slots = false,
        .defrag_thold = -1.0f,
        .defrag_min_cells = 256,
        .defrag_max_moves = 0,
    };
}

static int32_t online_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > CS_MAX_THREADS ? CS_MAX_THREADS : (int32_t)n;
}

/* Largest scratch any weight matmul of the model needs for T tokens. */
static size_t matmul_scratch_max(const cs_model *m, int64_t T) {
    size_t best = matmul_scratch_size(m->output.type, m->output.ne0, T);
    for (int32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *L = &m->layers[il];
        const model_weight *ws[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                    &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t s = matmul_scratch_size(ws[i]->type, ws[i]->ne0, T);
            if (s > best) best = s;
        }
    }
    return best;
}

/* Validate params and fill the effective values. */
static cs_status check_params(const cs_model *m, const cs_context_params *p, uint32_t *n_ctx,
                              uint32_t *n_batch, uint32_t *n_seq_max, int32_t *n_threads) {
    *n_ctx = p->n_ctx ? p->n_ctx : (uint32_t)m->hp.n_ctx_train;
    if (*n_ctx > CS_MAX_CTX)
        return error_fail(CS_ERR_INVALID_ARG, "context: n_ctx %u exceeds the limit %d", *n_ctx,
                          CS_MAX_CTX);
    *n_batch = p->n_batch ? p->n_batch : (*n_ctx < 512 ? *n_ctx : 512);
    if (*n_batch > *n_ctx) *n_batch = *n_ctx;
    *n_seq_max = p->n_seq_max ? p->n_seq_max : 1;
    if (*n_seq_max > CS_MAX_SEQ)
        return error_fail(CS_ERR_INVALID_ARG, "context: n_seq_max %u exceeds the limit %d",
                          *n_seq_max, CS_MAX_SEQ);
    *n_threads = p->n_threads > 0 ? p->n_threads : online_cores();
    if (*n_threads > CS_MAX_THREADS)
        return error_fail(CS_ERR_INVALID_ARG, "context: n_threads %d exceeds the limit %d",
                          *n_threads, CS_MAX_THREADS);
    if (p->defrag_thold != p->defrag_thold)
        return error_fail(CS_ERR_INVALID_ARG, "context: defrag_thold is NaN");
    if (p->defrag_min_cells < 0 || p->defrag_max_moves < 0)
        return error_fail(CS_ERR_INVALID_ARG,
                          "context: defrag_min_cells %d and defrag_max_moves %d must be >= 0",
                          p->defrag_min_cells, p->defrag_max_moves);
    return CS_OK;
}

/* ------------------------------------------------------ per-thread scratch */

/* Largest transposed-key copy per thread: 4 MiB (16384 cells of a 64-wide
 * head), so a long context costs no more than that per thread; cells past
 * it take the per-cell kernel, which gives the same bits. */
#define KT_MAX_BYTES ((size_t)4 << 20)

static void thread_bufs_free(thread_bufs *t) {
    mem_free(t->scores);
    mem_free(t->vis);
    mem_free(t->qh);
    mem_free(t->vrow);
    mem_free(t->kt);
    mem_free(t->kt_state);
}

/* Cells of the transposed keys per thread (0: the path is off): the
 * table must have the kernels for this head dim, and K and V be F16 (the
 * grouped attention that reads the copy, forward.c attn_group). */
static int32_t kt_cells_for(const cs_context *c) {
    const int64_t hd = c->model->hp.head_dim;
    if (!c->kern->attn_kt_f16 || !KERNELS_ATTN_KT_HD(hd) || c->kv.type_k != CS_TYPE_F16 ||
        c->kv.type_v != CS_TYPE_F16)
        return 0;
    const size_t cap = KT_MAX_BYTES / ((size_t)hd * sizeof(float)) / 16 * 16;
    const size_t want = ((size_t)c->n_ctx + 15) / 16 * 16;
    return (int32_t)(want < cap ? want : cap);
}

/* Allocates every buffer or none (false: out of memory, *t all NULL).
 * Cost: O(n_threads * (n_ctx * (KERNELS_ATTN_MQ + 1) + kt_cells * head_dim)). */
static bool thread_bufs_alloc(const cs_context *c, int32_t n_threads, thread_bufs *t) {
    const size_t nt = (size_t)n_threads, n_ctx = c->n_ctx, hd = (size_t)c->model->hp.head_dim;
    *t = (thread_bufs){0};
    t->scores = mem_aligned_alloc(nt * KERNELS_ATTN_MQ * n_ctx * sizeof(float));
    t->vis = mem_aligned_alloc(nt * n_ctx * sizeof(int32_t));
    t->qh = mem_aligned_alloc(nt * KERNELS_ATTN_MQ * hd * 4);
    t->vrow = mem_aligned_alloc(nt * hd * sizeof(float));
    bool ok = t->scores && t->vis && t->qh && t->vrow;
    if (c->kt_cells > 0) {
        t->kt = mem_aligned_alloc(nt * (size_t)c->kt_cells * hd * sizeof(float));
        t->kt_state = mem_calloc(nt, sizeof *t->kt_state);
        ok = ok && t->kt && t->kt_state;
    }
    if (!ok) {
        thread_bufs_free(t);
        *t = (thread_bufs){0};
    }
    return ok;
}

cs_status cs_context_new(const cs_model *m, const cs_context_params *params, cs_context **out) {
    if (out) *out = NULL;
    if (!m || !out)
        return error_fail(CS_ERR_INVALID_ARG, "cs_context_new: model and out must be set");
    if (m->vocab_only)
        return error_fail(CS_ERR_UNSUPPORTED, "cs_context_new: the model was loaded vocab-only");
    cs_context_params p = params ? *params : cs_context_default_params();
    uint32_t n_ctx = 0, n_batch = 0, n_seq_max = 0;
    int32_t n_threads = 0;
    cs_status st = check_params(m, &p, &n_ctx, &n_batch, &n_seq_max, &n_threads);
    if (st != CS_OK) return st;
    if (n_ctx == 0) return error_fail(CS_ERR_INVALID_ARG, "context: n_ctx is 0");

    cs_context *c = mem_calloc(1, sizeof *c);
    if (!c) return error_fail(CS_ERR_NOMEM, "context: out of memory");
    const model_hparams *hp = &m->hp;
    c->model = m;
    c->params = p;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->n_seq_max = n_seq_max;
    c->n_threads = n_threads;
    c->kern = kernels_best();
    c->rope = (kernels_rope_params){.n_rot = hp->n_rot,
                                    .mode = hp->rope_mode,
                                    .freq_base = hp->rope_freq_base,
                                    .freq_scale = hp->rope_freq_scale,
                                    .ext_factor = 0.0f,
                                    .attn_factor = 1.0f,
                                    .beta_fast = 32.0f,
                                    .beta_slow = 1.0f,
                                    .n_ctx_orig = hp->n_ctx_train,
                                    .freq_factors = hp->rope_freq_factors};

    if ((st = kv_cells_init(&c->cells, (int32_t)n_ctx)) != CS_OK) goto fail;
    if ((st = kv_store_init(&c->kv, hp->n_layer, (int32_t)n_ctx, hp->n_head_kv, hp->head_dim,
                            p.type_k, p.type_v)) != CS_OK)
        goto fail;
    /* every llama model here uses RoPE, whose angle is linear in the position */
    c->can_shift = true;
    c->defrag_ids = mem_malloc((size_t)n_ctx * sizeof *c->defrag_ids);
    c->defrag_moves = mem_malloc((size_t)n_ctx * sizeof *c->defrag_moves);
    if (!c->defrag_ids || !c->defrag_moves) goto nomem;

    size_t T = n_batch;
    c->x = mem_aligned_alloc(T * (size_t)hp->n_embd * sizeof(float));
    c->xb = mem_aligned_alloc(T * (size_t)hp->n_embd * sizeof(float));
    c->q = mem_aligned_alloc(T * (size_t)hp->n_embd_q * sizeof(float));
    c->att = mem_aligned_alloc(T * (size_t)hp->n_embd_q * sizeof(float));
    c->k = mem_aligned_alloc(T * (size_t)hp->n_embd_kv * sizeof(float));
    c->v = mem_aligned_alloc(T * (size_t)hp->n_embd_kv * sizeof(float));
    c->hb = mem_aligned_alloc(T * (size_t)hp->n_ff * sizeof(float));
    c->hb2 = mem_aligned_alloc(T * (size_t)hp->n_ff * sizeof(float));
    c->rope_cs = mem_aligned_alloc(T * (size_t)hp->n_rot * sizeof(float));
    c->kt_cells = kt_cells_for(c);
    if (!thread_bufs_alloc(c, n_threads, &c->tb)) goto nomem;
    c->mm_scratch_size = matmul_scratch_max(m, (int64_t)T);
    c->mm_scratch = mem_aligned_alloc(c->mm_scratch_size);
    c->slot = mem_malloc(T * sizeof *c->slot);
    c->seqs = mem_malloc(T * sizeof *c->seqs);
    c->seq0 = mem_malloc(T * sizeof *c->seq0);
    c->out_index = mem_malloc(T * sizeof *c->out_index);
    c->seq_cells = mem_malloc((size_t)CS_ATTN_SEQ_LISTS * n_ctx * sizeof *c->seq_cells);
    c->tok_list = mem_malloc(T * sizeof *c->tok_list);
    if (!c->seq_cells || !c->tok_list) goto nomem;
    if (!c->x || !c->xb || !c->q || !c->att || !c->k || !c->v || !c->hb || !c->hb2 || !c->rope_cs ||
        !c->mm_scratch || !c->slot || !c->seqs || !c->seq0 || !c->out_index)
        goto nomem;
    if ((st = threadpool_new(n_threads, &c->tp)) != CS_OK) goto fail;
    *out = c;
    return CS_OK;
nomem:
    st =
        error_fail(CS_ERR_NOMEM, "context: out of memory for n_ctx %u, n_batch %u", n_ctx, n_batch);
fail:
    cs_context_free(c);
    return st;
}

void cs_context_free(cs_context *c) {
    if (!c) return;
    threadpool_free(c->tp);
    kv_store_free(&c->kv);
    kv_cells_free(&c->cells);
    thread_bufs_free(&c->tb);
    void *bufs[] = {c->x,          c->xb,           c->q,         c->att,       c->k,
                    c->v,          c->hb,           c->hb2,       c->rope_cs,   c->mm_scratch,
                    c->slot,       c->seqs,         c->seq0,      c->out_index, c->logits,
                    c->defrag_ids, c->defrag_moves, c->seq_cells, c->tok_list};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) mem_free(bufs[i]);
    mem_free(c);
}

uint32_t cs_n_ctx(const cs_context *c) {
    return c->n_ctx;
}
uint32_t cs_n_batch(const cs_context *c) {
    return c->n_batch;
}
uint32_t cs_n_seq_max(const cs_context *c) {
    return c->n_seq_max;
}
int32_t cs_n_threads(const cs_context *c) {
    return c->n_threads;
}

cs_status cs_set_n_threads(cs_context *c, int32_t n_threads) {
    if (!c || n_threads < 1 || n_threads > CS_MAX_THREADS)
        return error_fail(CS_ERR_INVALID_ARG, "cs_set_n_threads: n_threads %d outside [1, %d]",
                          n_threads, CS_MAX_THREADS);
    if (n_threads == c->n_threads) return CS_OK;
    thread_bufs tb;
    threadpool *tp = NULL;
    if (!thread_bufs_alloc(c, n_threads, &tb))
        return error_fail(CS_ERR_NOMEM, "cs_set_n_threads: out of memory for %d threads",
                          n_threads);
    const cs_status st = threadpool_new(n_threads, &tp);
    if (st != CS_OK) {
        thread_bufs_free(&tb);
        return st;
    }
    threadpool_free(c->tp);
    thread_bufs_free(&c->tb);
    c->tb = tb;
    c->tp = tp;
    c->n_threads = n_threads;
    return CS_OK;
}

/* ----------------------------------------------------------------- update */

/* One defrag pass: plan, move the rows, then the metadata. Returns the
 * number of blocks moved (0: compact). */
static int32_t defrag_pass(cs_context *c) {
    int32_t n =
        kv_cells_defrag_plan(&c->cells, c->params.defrag_max_moves, c->defrag_ids, c->defrag_moves);
    if (n == 0) return 0;
    kv_store_move(&c->kv, c->defrag_moves, n, &c->totals.n_bytes_moved);
    kv_cells_apply_moves(&c->cells, c->defrag_moves, n);
    for (int32_t i = 0; i < n; i++) c->totals.n_cells_moved += (uint64_t)c->defrag_moves[i].n;
    c->totals.n_blocks_moved += (uint64_t)n;
    c->totals.n_defrag_passes++;
    return n;
}

/* K-shift first (deltas must be 0 before cells move), then defrag. With a
 * cap on moves per pass, passes repeat until the cache is compact: each
 * pass fills at least one hole, so at most `holes` passes run. */
static cs_status kv_update(cs_context *c) {
    if (c->cells.has_shift) {
        int32_t n = kv_store_apply_shift(&c->kv, &c->cells, c->kern, c->tp, &c->rope,
                                         &c->totals.n_bytes_shifted);
        if (n < 0) return CS_ERR_NOMEM; /* nothing rotated, deltas still pending */
        if (n > 0) c->totals.n_shift_passes++;
        c->totals.n_cells_shifted += (uint64_t)n;
        CS_ASSERT(!c->cells.has_shift);
    }
    if (c->do_defrag) {
        while (defrag_pass(c) > 0) {
        }
        c->do_defrag = false;
    }
    return CS_OK;
}

cs_status cs_kv_update(cs_context *c) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "kv_update: context is NULL");
    return kv_update(c);
}

void cs_kv_defrag(cs_context *c) {
    if (c) c->do_defrag = true;
}

/* docs/KV_CACHE_SPEC.md §4.5 [R]: frag = 1 - used / cell_max, for caches whose cell_max
 * reaches defrag_min_cells; a defrag is scheduled for the next update. */
static void maybe_schedule_defrag(cs_context *c) {
    if (!(c->params.defrag_thold > 0.0f)) return;
    int32_t cell_max = kv_cells_cell_max(&c->cells);
    if (cell_max == 0 || cell_max < c->params.defrag_min_cells) return;
    float frag = 1.0f - (float)c->cells.used / (float)cell_max;
    if (frag > c->params.defrag_thold) c->do_defrag = true;
}

/* ----------------------------------------------------------------- decode */

int32_t cs_decode(cs_context *c, const cs_batch *b) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "decode: context is NULL");
    const int32_t n_vocab = c->model->hp.n_vocab;
    c->n_batch_rows = 0; /* earlier logits are invalid from here on */
    cs_status st = batch_validate(b, n_vocab, c->n_batch, c->n_seq_max, c->seqs);
    if (st != CS_OK) return st;
    const int32_t T = b->n_tokens;
    /* No room even after compaction: answer before anything changes, so a
     * failed decode leaves cells, deltas and head as they were (D9). */
    if (T > c->cells.size - c->cells.used) return CS_NO_KV_SLOT;

    /* outputs: grow the logits buffer before touching the cache */
    int32_t n_out = 0;
    for (int32_t t = 0; t < T; t++) c->out_index[t] = b->logits[t] ? n_out++ : -1;
    size_t need;
    if (!common_mul_size((size_t)n_out, (size_t)n_vocab, &need))
        return error_fail(CS_ERR_NOMEM, "decode: logits size overflows");
    if (need > c->logits_cap) {
        float *l = mem_aligned_alloc(need * sizeof(float));
        if (!l) return error_fail(CS_ERR_NOMEM, "decode: out of memory for %d logits rows", n_out);
        mem_free(c->logits);
        c->logits = l;
        c->logits_cap = need;
    }

    /* pending K-shift and defrag before placement (spec §3.6, FIX 2) */
    if ((st = kv_update(c)) != CS_OK) return st;
    if (!kv_cells_find_slot(&c->cells, T, c->params.contiguous_slots, c->slot)) {
        /* contiguous mode: enough free cells but no run of T; compact once
         * and retry (spec §4.5). Cannot fail afterwards: free cells are
         * then exactly [used, size); a defrag allocates nothing. */
        c->do_defrag = true;
        kv_update(c);
        bool ok = kv_cells_find_slot(&c->cells, T, c->params.contiguous_slots, c->slot);
        CS_ASSERT(ok);
    }
    for (int32_t t = 0; t < T; t++) {
        c->seq0[t] = b->seq[(size_t)t * (size_t)b->n_seq_per_token];
        kv_cells_assign(&c->cells, c->slot[t], b->pos[t], c->seqs[t]);
    }
    forward_batch(c, b);
    c->n_batch_rows = T;
    maybe_schedule_defrag(c);
    return CS_OK;
}

const float *cs_get_logits_ith(cs_context *c, int32_t i) {
    if (!c || i < 0 || i >= c->n_batch_rows || c->out_index[i] < 0) return NULL;
    return c->logits + (size_t)c->out_index[i] * (size_t)c->model->hp.n_vocab;
}

/* --------------------------------------------------------------- KV ops */

static cs_status check_seq(const cs_context *c, const char *op, const char *name, cs_seq s,
                           bool allow_negative) {
    if ((s < 0 && !allow_negative) || s >= (cs_seq)c->n_seq_max)
        return error_fail(CS_ERR_INVALID_ARG, "%s: %s %d outside [0, %u)", op, name, s,
                          c->n_seq_max);
    return CS_OK;
}

void cs_kv_clear(cs_context *c) {
    if (!c) return;
    kv_cells_clear(&c->cells);
    c->do_defrag = false;
}

cs_status cs_kv_seq_rm(cs_context *c, cs_seq seq, cs_pos p0, cs_pos p1) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "kv_seq_rm: context is NULL");
    cs_status st = check_seq(c, "kv_seq_rm", "sequence id", seq, true);
    if (st != CS_OK) return st;
    kv_cells_seq_rm(&c->cells, seq, p0, p1);
    return CS_OK;
}

cs_status cs_kv_seq_cp(cs_context *c, cs_seq src, cs_seq dst, cs_pos p0, cs_pos p1) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "kv_seq_cp: context is NULL");
    cs_status st = check_seq(c, "kv_seq_cp", "src", src, false);
    if (st == CS_OK) st = check_seq(c, "kv_seq_cp", "dst", dst, false);
    if (st != CS_OK) return st;
    if (src != dst) kv_cells_seq_cp(&c->cells, src, dst, p0, p1);
    return CS_OK;
}

cs_status cs_kv_seq_keep(cs_context *c, cs_seq seq) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "kv_seq_keep: context is NULL");
    cs_status st = check_seq(c, "kv_seq_keep", "sequence id", seq, false);
    if (st != CS_OK) return st;
    kv_cells_seq_keep(&c->cells, seq);
    return CS_OK;
}

/* Spec §2.1 [R] / A14: moving a cell shared with other sequences moves it
 * for all of them. Legal (llama.cpp does the same) but rarely intended, so
 * say it in the log. O(size), like the operation itself. */
static void warn_shared(const cs_context *c, const char *op, cs_seq seq, cs_pos p0, cs_pos p1) {
    if (p0 < 0) p0 = 0;
    if (p1 < 0) p1 = INT32_MAX;
    const uint64_t bit = (uint64_t)1 << seq;
    int32_t n = 0;
    for (int32_t i = 0; i < c->cells.size; i++)
        if ((c->cells.seq[i] & bit) && (c->cells.seq[i] & ~bit) && c->cells.pos[i] >= p0 &&
            c->cells.pos[i] < p1)
            n++;
    if (n > 0)
        CS_LOG_WRN("%s: sequence %d: %d cells in [%d, %d) are shared with other sequences and "
                   "move for them too (cs_kv_seq_own first would give it cells of its own)",
                   op, seq, n, p0, p1);
}

cs_status cs_kv_seq_add(cs_context *c, cs_seq seq, cs_pos p0, cs_pos p1, cs_pos delta) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "kv_seq_add: context is NULL");
    cs_status st = check_seq(c, "kv_seq_add", "sequence id", seq, false);
    if (st != CS_OK) return st;
    if (!c->can_shift)
        return error_fail(CS_ERR_UNSUPPORTED, "kv_seq_add: this model's cache cannot be shifted");
    if (delta != 0) warn_shared(c, "kv_seq_add", seq, p0, p1);
    kv_cells_seq_add(&c->cells, seq, p0, p1, delta);
    return CS_OK;
}

cs_status cs_kv_seq_div(cs_context *c, cs_seq seq, cs_pos p0, cs_pos p1, int32_t d) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "kv_seq_div: context is NULL");
    cs_status st = check_seq(c, "kv_seq_div", "sequence id", seq, false);
    if (st != CS_OK) return st;
    if (d < 1) return error_fail(CS_ERR_INVALID_ARG, "kv_seq_div: divisor %d must be >= 1", d);
    if (!c->can_shift)
        return error_fail(CS_ERR_UNSUPPORTED, "kv_seq_div: this model's cache cannot be shifted");
    if (d != 1) warn_shared(c, "kv_seq_div", seq, p0, p1);
    kv_cells_seq_div(&c->cells, seq, p0, p1, d);
    return CS_OK;
}

cs_status cs_kv_seq_own(cs_context *c, cs_seq seq, cs_pos p0, cs_pos p1) {
    if (!c) return error_fail(CS_ERR_INVALID_ARG, "kv_seq_own: context is NULL");
    cs_status st = check_seq(c, "kv_seq_own", "sequence id", seq, false);
    if (st != CS_OK) return st;
    /* defrag_moves (n_ctx blocks) is free between updates and can hold any
     * split: at most one block per cell */
    int32_t n_cells = 0;
    int32_t nb = kv_cells_seq_own(&c->cells, seq, p0, p1, c->defrag_moves, &n_cells);
    if (nb < 0) return CS_NO_KV_SLOT; /* as cs_decode: no room is not an error */
    kv_store_move(&c->kv, c->defrag_moves, nb, &c->totals.n_bytes_owned);
    c->totals.n_cells_owned += (uint64_t)n_cells;
    return CS_OK;
}

cs_pos cs_kv_seq_pos_max(const cs_context *c, cs_seq seq) {
    if (!c || seq < 0 || seq >= (cs_seq)c->n_seq_max) return -1;
    return kv_cells_seq_pos_max(&c->cells, seq);
}

cs_pos cs_kv_seq_pos_min(const cs_context *c, cs_seq seq) {
    if (!c || seq < 0 || seq >= (cs_seq)c->n_seq_max) return -1;
    return kv_cells_seq_pos_min(&c->cells, seq);
}

bool cs_kv_can_shift(const cs_context *c) {
    return c && c->can_shift;
}
int32_t cs_kv_used_cells(const cs_context *c) {
    return c ? c->cells.used : 0;
}
int32_t cs_kv_token_count(const cs_context *c) {
    return c ? kv_cells_token_count(&c->cells) : 0;
}

cs_status cs_kv_stats(const cs_context *c, cs_kv_info *out) {
    if (!c || !out) return error_fail(CS_ERR_INVALID_ARG, "kv_stats: context and out must be set");
    *out = c->totals;
    out->size = c->cells.size;
    out->used = c->cells.used;
    out->cell_max = kv_cells_cell_max(&c->cells);
    out->n_window = out->cell_max;
    out->holes = out->cell_max - out->used;
    out->n_pending_shift = kv_cells_n_pending(&c->cells);
    out->fragmentation = out->cell_max ? 1.0f - (float)out->used / (float)out->cell_max : 0.0f;
    out->defrag_pending = c->do_defrag;
    return CS_OK;
}

int32_t cs_kv_view(const cs_context *c, cs_kv_cell *cells, int32_t n_max) {
    if (!c) return 0;
    int32_t n = n_max < c->cells.size ? n_max : c->cells.size;
    for (int32_t i = 0; i < n && cells; i++) {
        cells[i].pos = c->cells.pos[i];
        cells[i].delta = c->cells.delta[i];
        cells[i].seq = c->cells.seq[i];
    }
    return c->cells.size;
}
