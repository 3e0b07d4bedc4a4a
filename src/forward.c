/* forward.c: the llama transformer over one batch, on the KV cache.
 *
 * Per layer: RMSNorm -> Q,K,V projections -> RoPE on Q and K at each
 * token's position -> K,V rows written into the token's cell -> attention
 * of each (token, head) over the cells visible to it (docs/KV_CACHE_SPEC.md §1.5) -> output
 * projection + residual -> RMSNorm -> SwiGLU FFN + residual. Then the final
 * norm and the vocabulary projection for the rows that asked for logits.
 *
 * Numerics follow ggml's CPU path (kernels.h): the attention scores are
 * dot(q, k) * 1/sqrt(head_dim) with -inf for masked cells, softmax with a
 * double sum; for an F16 cache q is rounded to f16 before the dot and the
 * probabilities are rounded to f16 before weighting V, as ggml's mul_mat
 * does with f16 operands. Only the visible cells are visited, in position
 * order, so holes, other sequences and the cell order never change a
 * result, only the cost of scanning.
 *
 * Cost per layer: the matmuls (2*T*params) plus T*n_head*cell_max*head_dim*2
 * for attention. */
#include <math.h>
#include <string.h>

#include "context.h"
#include "kernels/matmul.h"

/* --------------------------------------------------------------- helpers */

/* Below this many multiply-adds (N * K * T) a matmul runs on the calling
 * thread: a pool job costs ~1 us of hand-offs, and a stories260K-sized
 * matrix (64 x 64) takes less than that on one core. matmul is
 * bit-identical for any thread count, so this choice never changes a
 * result. */
#define MATMUL_PARALLEL_MIN_MACS ((int64_t)1 << 16)
/* Below this many elements a row-wise step (norm, residual, RoPE, SwiGLU)
 * runs on the calling thread: a decode step (T = 1) then costs no pool job
 * for them, while a prompt batch splits them by rows. */
#define ROWS_PARALLEL_MIN_ELEMS ((int64_t)1 << 15)

/* y = x * w^T. prev: the weight of the previous matmul when it read the
 * same x (else NULL); when that left x converted to what w needs, the
 * conversion is not done again (Q/K/V, and the FFN gate/up pair). */
static void forward_matmul(cs_context *ctx, const model_weight *w, const model_weight *prev,
                           const float *x, int64_t T, float *y) {
    threadpool *tp = w->ne1 * w->ne0 * T >= MATMUL_PARALLEL_MIN_MACS ? ctx->tp : NULL;
    const bool converted = prev && prev->ne0 == w->ne0 &&
                           matmul_convert_kind_of(prev->type, prev->layout) ==
                               matmul_convert_kind_of(w->type, w->layout);
    (converted ? matmul_converted : matmul)(ctx->kern, tp, w->type, w->layout, w->data, w->ne1,
                                            w->ne0, x, T, y, ctx->mm_scratch);
}

/* The row-wise steps of the forward pass. Each batch row t is computed by
 * one thread with the same per-row kernel calls whatever the split, so
 * results do not depend on the number of threads (no reduction crosses a
 * row). */
typedef enum rows_op {
    ROWS_EMBED,      /* x[t] = tok_embd[token t]; rope angles of pos t */
    ROWS_NORM,       /* xb[t] = rmsnorm(x[t]) * w */
    ROWS_RESID,      /* x[t] += xb[t] */
    ROWS_RESID_NORM, /* x[t] += xb[t]; xb[t] = rmsnorm(x[t]) * w (one pass) */
    ROWS_ROPE,       /* add the Q/K/V biases (if any), rotate q[t] and k[t] */
    ROWS_SWIGLU,     /* hb[t] = silu(hb[t]) * hb2[t] */
} rows_op;

typedef struct rows_task {
    cs_context *ctx;
    const cs_batch *b;
    rows_op op;
    const float *w;           /* norm weights */
    const model_layer *layer; /* ROWS_ROPE: the layer's biases */
    int64_t T;                /* rows */
} rows_task;

static void rows_range(const rows_task *r, int64_t t0, int64_t t1) {
    cs_context *ctx = r->ctx;
    const cs_model *m = ctx->model;
    const model_hparams *hp = &m->hp;
    const kernels_table *k = ctx->kern;
    const int64_t E = hp->n_embd;
    switch (r->op) {
    case ROWS_EMBED: {
        /* ggml get_rows: dequantize the row */
        uint64_t row_bytes = 0;
        CS_ASSERT(type_row_size(m->tok_embd.type, E, &row_bytes));
        for (int64_t t = t0; t < t1; t++) {
            const uint8_t *row =
                (const uint8_t *)m->tok_embd.data + (size_t)r->b->token[t] * (size_t)row_bytes;
            dequantize_row(m->tok_embd.type, row, ctx->x + t * E, E);
            kernels_rope_cache(ctx->rope_cs + (size_t)t * (size_t)hp->n_rot, (float)r->b->pos[t],
                               &ctx->rope);
        }
        break;
    }
    case ROWS_NORM:
        for (int64_t t = t0; t < t1; t++)
            k->rmsnorm(ctx->xb + t * E, ctx->x + t * E, r->w, E, hp->norm_eps);
        break;
    case ROWS_RESID:
    case ROWS_RESID_NORM:
        for (int64_t t = t0; t < t1; t++) {
            float *x = ctx->x + t * E;
            float *xb = ctx->xb + t * E;
            for (int64_t i = 0; i < E; i++) x[i] += xb[i];
            if (r->op == ROWS_RESID_NORM) k->rmsnorm(xb, x, r->w, E, hp->norm_eps);
        }
        break;
    case ROWS_ROPE: {
        const model_layer *L = r->layer;
        const int64_t nq = hp->n_embd_q, nkv = hp->n_embd_kv;
        for (int64_t t = t0; t < t1; t++) {
            const float *cs = ctx->rope_cs + (size_t)t * (size_t)hp->n_rot;
            float *q = ctx->q + t * nq, *kr = ctx->k + t * nkv, *v = ctx->v + t * nkv;
            /* qwen2's biases are added to the projections before RoPE, as
             * ggml adds them after the mul_mat */
            if (L->bq)
                for (int64_t i = 0; i < nq; i++) q[i] += L->bq[i];
            if (L->bk)
                for (int64_t i = 0; i < nkv; i++) kr[i] += L->bk[i];
            if (L->bv)
                for (int64_t i = 0; i < nkv; i++) v[i] += L->bv[i];
            k->rope(q, hp->n_head, hp->head_dim, hp->n_rot, hp->rope_mode, cs);
            k->rope(kr, hp->n_head_kv, hp->head_dim, hp->n_rot, hp->rope_mode, cs);
        }
        break;
    }
    case ROWS_SWIGLU:
        /* one call per row, so a row's split between a SIMD body and a
         * scalar tail never depends on T or on the thread split */
        for (int64_t t = t0; t < t1; t++)
            k->swiglu(ctx->hb + t * hp->n_ff, ctx->hb + t * hp->n_ff, ctx->hb2 + t * hp->n_ff,
                      hp->n_ff);
        break;
    }
}

static void rows_worker(void *arg, int32_t ith, int32_t nth) {
    const rows_task *r = arg;
    int64_t t0, t1;
    threadpool_split(r->T, ith, nth, &t0, &t1);
    rows_range(r, t0, t1);
}

/* Run op over rows [0, T) of width elements each: on the pool, split by
 * rows, when there is enough work to pay for a job, else on the caller. */
static void run_rows_layer(cs_context *ctx, const cs_batch *b, rows_op op, const float *w,
                           const model_layer *layer, int64_t T, int64_t width) {
    rows_task r = {.ctx = ctx, .b = b, .op = op, .w = w, .layer = layer, .T = T};
    if (T > 1 && T * width >= ROWS_PARALLEL_MIN_ELEMS)
        threadpool_run(ctx->tp, rows_worker, &r);
    else
        rows_range(&r, 0, T);
}

static void run_rows(cs_context *ctx, const cs_batch *b, rows_op op, const float *w, int64_t T,
                     int64_t width) {
    run_rows_layer(ctx, b, op, w, NULL, T, width);
}

/* ------------------------------------------------------------- attention */

typedef struct attn_task {
    cs_context *ctx;
    const cs_batch *b;
    int32_t layer;
    int32_t n_cells;          /* cells [0, n_cells) may be visible */
    bool use_kt;              /* grouped scores from transposed keys (attn_scores_span) */
    atomic_int_fast64_t next; /* attn_worker's next range of items */
} attn_task;

/* Heads narrower than this use inline loops: for tiny heads (stories260K
 * has 8) an indirect call per cell costs more than the arithmetic. */
#define ATTN_INLINE_HEAD_DIM 32

static inline float dot_f32_small(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* In-place heap sort of cell indices by (position, index). O(n log n), no
 * allocation (it runs inside worker threads). */
static bool cell_before(const kv_cells *c, int32_t a, int32_t b) {
    return c->pos[a] < c->pos[b] || (c->pos[a] == c->pos[b] && a < b);
}

static void sift_down(const kv_cells *c, int32_t *v, int32_t root, int32_t n) {
    for (;;) {
        int32_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && cell_before(c, v[child], v[child + 1])) child++;
        if (!cell_before(c, v[root], v[child])) return;
        int32_t tmp = v[root];
        v[root] = v[child];
        v[child] = tmp;
        root = child;
    }
}

static void sort_by_position(const kv_cells *c, int32_t *v, int32_t n) {
    for (int32_t i = n / 2 - 1; i >= 0; i--) sift_down(c, v, i, n);
    for (int32_t end = n - 1; end > 0; end--) {
        int32_t tmp = v[0];
        v[0] = v[end];
        v[end] = tmp;
        sift_down(c, v, 0, end);
    }
}

/* Cells visible to batch row t (spec §1.5): holding the row's first
 * sequence at a position <= its own. Writes their indices to vis, in
 * position order, and returns how many. Attention then sums in position
 * order, so where a token sits in the cache (hole reuse, defrag, other
 * sequences' cells) never changes a result, not even in the last bit
 * (spec §8 D3). O(n_cells), plus O(n log n) when placement left the cells
 * out of position order. */
static int32_t visible_cells(const cs_context *ctx, const cs_batch *b, int64_t t, int32_t n_cells,
                             int32_t *vis) {
    const kv_cells *cells = &ctx->cells;
    const uint64_t smask = (uint64_t)1 << ctx->seq0[t];
    const cs_pos pos = b->pos[t];
    int32_t n = 0;
    bool sorted = true;
    for (int32_t c = 0; c < n_cells; c++)
        if ((cells->seq[c] & smask) && cells->pos[c] <= pos) {
            if (n > 0 && cells->pos[c] < cells->pos[vis[n - 1]]) sorted = false;
            vis[n++] = c;
        }
    if (!sorted) sort_by_position(cells, vis, n);
    return n;
}

/* Before the layers of a decode (the cell metadata does not change during
 * the forward pass): for up to CS_ATTN_SEQ_LISTS distinct first sequences
 * of the batch, all cells of that sequence in [0, n_cells) sorted by
 * position. The cells visible to row t are then the prefix of its list with
 * positions <= pos[t]: the same cells in the same order as visible_cells
 * gives, found by a binary search. Cost: O(n_cells) per list, plus one sort
 * when placement left the cells out of position order, instead of a scan
 * (and maybe a sort) per row, layer and thread. */
static void prepare_seq_lists(cs_context *ctx, const cs_batch *b, int32_t n_cells) {
    const kv_cells *cells = &ctx->cells;
    ctx->n_seq_lists = 0;
    ctx->all_rows_listed = true;
    for (int32_t t = 0; t < b->n_tokens; t++) {
        const cs_seq s = ctx->seq0[t];
        int32_t li = -1;
        for (int32_t i = 0; i < ctx->n_seq_lists; i++)
            if (ctx->seq_list_id[i] == s) li = i;
        if (li < 0 && ctx->n_seq_lists < CS_ATTN_SEQ_LISTS) {
            li = ctx->n_seq_lists++;
            ctx->seq_list_id[li] = s;
            int32_t *v = ctx->seq_cells + (size_t)li * ctx->n_ctx, n = 0;
            const uint64_t smask = (uint64_t)1 << s;
            bool sorted = true;
            for (int32_t c = 0; c < n_cells; c++)
                if (cells->seq[c] & smask) {
                    if (n > 0 && cells->pos[c] < cells->pos[v[n - 1]]) sorted = false;
                    v[n++] = c;
                }
            if (!sorted) sort_by_position(cells, v, n);
            ctx->seq_list_n[li] = n;
        }
        ctx->tok_list[t] = li;
        if (li < 0) ctx->all_rows_listed = false;
    }
}

/* Row t's visible cells from its sequence's list: the longest prefix with
 * positions <= pos[t]. O(log n). */
static int32_t visible_prefix(const cs_context *ctx, const cs_batch *b, int64_t t,
                              const int32_t **vis) {
    const int32_t li = ctx->tok_list[t];
    const int32_t *v = ctx->seq_cells + (size_t)li * ctx->n_ctx;
    const cs_pos pos = b->pos[t];
    int32_t lo = 0, hi = ctx->seq_list_n[li];
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (ctx->cells.pos[v[mid]] <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    *vis = v;
    return lo;
}

/* Work items are (token, head) pairs, KV head by KV head, in ranges that
 * threads take from a shared counter (attn_worker); a thread looks up the
 * visible list when its token changes. Each output row is written by
 * exactly one thread, so results do not depend on the thread count. */
typedef struct attn_item {
    int64_t t, h, hk;
} attn_item;

/* Item p in the order described in attn_worker. */
static attn_item attn_item_at(const cs_context *ctx, const cs_batch *b, int64_t p) {
    const model_hparams *hp = &ctx->model->hp;
    const int32_t n_rep = hp->n_head / hp->n_head_kv;
    attn_item it;
    if (ctx->all_rows_listed) {
        const int64_t per_kv = (int64_t)b->n_tokens * n_rep;
        const int64_t rem = p % per_kv;
        it.hk = p / per_kv, it.t = rem / n_rep, it.h = it.hk * n_rep + rem % n_rep;
    } else { /* token-major: visible_cells scans once per token */
        it.t = p / hp->n_head, it.h = p % hp->n_head, it.hk = it.h / n_rep;
    }
    return it;
}

/* Scores of nq queries of KV head hk for cells [j0, j1) of the list vis
 * (list li): s[g][j] = scale * dot(cell vis[j], q[g]). With the task's
 * transposed keys, thread ith first extends its copy to cover j1 (whole
 * blocks of the list, at most kt_cells cells), then reads it; the cells
 * past the copy, or every cell without one, take attn_scores_f16. Both
 * give the same bits (kernels.h), so where a range falls changes nothing. */
static void attn_scores_span(const attn_task *a, int32_t ith, int64_t hk, int32_t li,
                             const int32_t *vis, int32_t j0, int32_t j1, int32_t nq,
                             const uint16_t *const *q, float *const *s) {
    cs_context *ctx = a->ctx;
    const kernels_table *k = ctx->kern;
    const kv_store *kv = &ctx->kv;
    const int64_t hd = ctx->model->hp.head_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    const uint8_t *K = (const uint8_t *)kv->k[a->layer] + kv_store_off(kv, false, (int32_t)hk, 0);
    int32_t jk = j0; /* first cell not served by the copy */
    if (a->use_kt) {
        attn_kt_state *st = &ctx->tb.kt_state[ith];
        float *kt = ctx->tb.kt + (size_t)ith * (size_t)ctx->kt_cells * (size_t)hd;
        if (st->layer != a->layer || st->hk != (int32_t)hk || st->list != li)
            *st = (attn_kt_state){a->layer, (int32_t)hk, li, 0};
        /* whole blocks up to j1 (kt_cells is a multiple of 16); the list's
         * last block may be partial */
        const int32_t want = ((j1 < ctx->kt_cells ? j1 : ctx->kt_cells) + 15) / 16 * 16;
        const int32_t have = st->n_blocks * 16, n_list = ctx->seq_list_n[li];
        if (want > have) {
            const int32_t end = want < n_list ? want : n_list;
            k->attn_kt_f16(hd, end - have, K, kv->head_k, vis + have, kt + (size_t)have * hd);
            st->n_blocks = want / 16;
        }
        const int32_t covered = st->n_blocks * 16 < j1 ? st->n_blocks * 16 : j1;
        if (covered > j0) {
            k->attn_scores_kt_f16(hd, j0, covered, kt, nq, q, scale, s);
            jk = covered;
        }
    }
    if (jk < j1) {
        float *sj[KERNELS_ATTN_MQ];
        for (int32_t g = 0; g < nq; g++) sj[g] = s[g] + jk;
        k->attn_scores_f16(hd, j1 - jk, K, kv->head_k, vis + jk, nq, q, scale, sj);
    }
}

/* Items p0.. of one KV head whose rows share their sequence's sorted list
 * (the cache's F16 gathered kernels): up to KERNELS_ATTN_MQ of them go
 * through attn_scores_f16 / attn_accum_f16 together over the cells all of
 * them see (the shortest visible prefix), then each alone over the rest of
 * its own prefix. Per query and cell the kernels do the same operations as
 * one query at a time, so the grouping changes no result. */
static void attn_group(const attn_task *a, int32_t ith, const attn_item *it, int32_t ng) {
    cs_context *ctx = a->ctx;
    const model_hparams *hp = &ctx->model->hp;
    const kernels_table *k = ctx->kern;
    const kv_store *kv = &ctx->kv;
    const int64_t hd = hp->head_dim;
    const uint8_t *V =
        (const uint8_t *)kv->v[a->layer] + kv_store_off(kv, true, (int32_t)it[0].hk, 0);
    float *scb = ctx->tb.scores + (size_t)ith * KERNELS_ATTN_MQ * ctx->n_ctx;
    uint16_t *qcb = (uint16_t *)((uint8_t *)ctx->tb.qh + (size_t)ith * KERNELS_ATTN_MQ * hd * 4);
    const uint16_t *qc[KERNELS_ATTN_MQ];
    float *sc[KERNELS_ATTN_MQ], *out[KERNELS_ATTN_MQ];
    const float *w[KERNELS_ATTN_MQ];
    int32_t n_vis[KERNELS_ATTN_MQ], n_min = INT32_MAX;
    const int32_t *vis = NULL;
    for (int32_t g = 0; g < ng; g++) {
        n_vis[g] = visible_prefix(ctx, a->b, it[g].t, &vis); /* the same list for all */
        if (n_vis[g] < n_min) n_min = n_vis[g];
        /* ggml's mul_mat converts the query to the K type's dot type */
        uint16_t *q16 = qcb + (size_t)g * hd;
        k->from_float[CS_TYPE_F16](ctx->q + it[g].t * hp->n_embd_q + it[g].h * hd, q16, hd);
        qc[g] = q16;
        sc[g] = scb + (size_t)g * ctx->n_ctx;
        w[g] = sc[g];
        out[g] = ctx->att + it[g].t * hp->n_embd_q + it[g].h * hd;
        memset(out[g], 0, (size_t)hd * sizeof(float));
    }
    const int32_t li = ctx->tok_list[it[0].t];
    attn_scores_span(a, ith, it[0].hk, li, vis, 0, n_min, ng, qc, sc);
    for (int32_t g = 0; g < ng; g++) {
        if (n_vis[g] > n_min)
            attn_scores_span(a, ith, it[0].hk, li, vis, n_min, n_vis[g], 1, &qc[g], &sc[g]);
        k->softmax(sc[g], n_vis[g]);
    }
    k->attn_accum_f16(hd, n_min, V, kv->head_v, vis, ng, w, out);
    for (int32_t g = 0; g < ng; g++)
        if (n_vis[g] > n_min)
            k->attn_accum_f16(hd, n_vis[g] - n_min, V, kv->head_v, vis + n_min, 1,
                              (const float *const[]){w[g] + n_min}, &out[g]);
}

/* Items [p0, p1) on thread ith (its scratch rows). */
static void attn_range(const attn_task *a, int32_t ith, int64_t p0, int64_t p1) {
    cs_context *ctx = a->ctx;
    const model_hparams *hp = &ctx->model->hp;
    const kernels_table *k = ctx->kern;
    const kv_store *kv = &ctx->kv;
    const int64_t hd = hp->head_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    const int32_t tk = kv->type_k, tv = kv->type_v;
    const bool small = hd < ATTN_INLINE_HEAD_DIM;
    /* bytes of one cell's head: the stride between cells of a head (kv_cache.h) */
    const size_t khead = kv->head_k, vhead = kv->head_v;
    const uint8_t *K = kv->k[a->layer];
    const uint8_t *V = kv->v[a->layer];
    float *sc = ctx->tb.scores + (size_t)ith * KERNELS_ATTN_MQ * ctx->n_ctx;
    int32_t *vis_buf = ctx->tb.vis + (size_t)ith * ctx->n_ctx;
    const int32_t *vis = vis_buf;
    void *qc = (uint8_t *)ctx->tb.qh + (size_t)ith * KERNELS_ATTN_MQ * (size_t)hd * 4;
    float *vtmp = ctx->tb.vrow + (size_t)ith * (size_t)hd;
    /* an F16 cache with the table's gathered kernels, every row on a sorted
     * list: items go in groups (attn_group) */
    const bool grouped = tk == CS_TYPE_F16 && tv == CS_TYPE_F16 && k->attn_scores_f16 &&
                         k->attn_accum_f16 && ctx->all_rows_listed;
    int64_t cur_t = -1;
    int32_t n_vis = 0;
    for (int64_t p = p0; p < p1; p++) {
        /* KV-head-major order: consecutive items of a thread read the same
         * K/V head slices (all tokens, then the query heads sharing them),
         * so a deep cache streams from memory once per head instead of once
         * per token. Every output is still computed by one item, so the
         * order changes no result. For T = 1 it is the plain head order.
         * Rows without a sorted list (more distinct sequences than lists)
         * keep the token-major order, whose scan runs once per token. */
        const attn_item it = attn_item_at(ctx, a->b, p);
        if (grouped) {
            /* the next items of the same KV head and sequence list: the
             * query heads of one token (GQA), then the next tokens */
            attn_item grp[KERNELS_ATTN_MQ];
            int32_t ng = 0;
            grp[ng++] = it;
            while (ng < KERNELS_ATTN_MQ && p + ng < p1) {
                const attn_item nx = attn_item_at(ctx, a->b, p + ng);
                if (nx.hk != it.hk || ctx->tok_list[nx.t] != ctx->tok_list[it.t]) break;
                grp[ng++] = nx;
            }
            attn_group(a, ith, grp, ng);
            p += ng - 1;
            continue;
        }
        const int64_t t = it.t, h = it.h, hk = it.hk;
        if (t != cur_t) {
            if (ctx->tok_list[t] >= 0) {
                n_vis = visible_prefix(ctx, a->b, t, &vis);
            } else {
                n_vis = visible_cells(ctx, a->b, t, a->n_cells, vis_buf);
                vis = vis_buf;
            }
            cur_t = t;
        }
        const float *q = ctx->q + t * hp->n_embd_q + h * hd;
        float *out = ctx->att + t * hp->n_embd_q + h * hd;
        memset(out, 0, (size_t)hd * sizeof *out);
        if (n_vis == 0) continue; /* cannot happen: a token always sees its own cell */
        /* ggml's mul_mat converts the query to the K type's dot type */
        if (tk == CS_TYPE_F16)
            k->from_float[CS_TYPE_F16](q, qc, hd);
        else if (tk == CS_TYPE_Q8_0)
            k->from_float[CS_TYPE_Q8_0](q, qc, hd);
        const bool gathered_k = tk == CS_TYPE_F16 && k->attn_scores_f16;
        if (gathered_k)
            k->attn_scores_f16(hd, n_vis, K + kv_store_off(kv, false, (int32_t)hk, 0), khead, vis,
                               1, (const uint16_t *const[]){qc}, scale, &sc);
        for (int32_t j = 0; j < (gathered_k ? 0 : n_vis); j++) {
            const uint8_t *kh = K + kv_store_off(kv, false, (int32_t)hk, vis[j]);
            float s;
            if (tk == CS_TYPE_F16)
                k->vec_dot[CS_TYPE_F16](hd, &s, (const uint16_t *)kh, qc);
            else if (tk == CS_TYPE_Q8_0)
                k->vec_dot[CS_TYPE_Q8_0](hd, &s, (const void *)kh, qc);
            else if (small)
                s = dot_f32_small((const float *)kh, q, hd);
            else
                k->vec_dot[CS_TYPE_F32](hd, &s, (const float *)kh, q);
            sc[j] = s * scale;
        }
        k->softmax(sc, n_vis);
        const bool gathered_v = tv == CS_TYPE_F16 && k->attn_accum_f16;
        if (gathered_v)
            k->attn_accum_f16(hd, n_vis, V + kv_store_off(kv, true, (int32_t)hk, 0), vhead, vis, 1,
                              (const float *const[]){sc}, &out);
        for (int32_t j = 0; j < (gathered_v ? 0 : n_vis); j++) {
            float w = sc[j];
            const uint8_t *vh = V + kv_store_off(kv, true, (int32_t)hk, vis[j]);
            if (tv == CS_TYPE_F16) {
                /* without flash attention ggml rounds the probabilities to f16 */
                w = fp16_to_fp32(fp32_to_fp16(w));
                k->axpy_f16(hd, w, (const uint16_t *)vh, out);
            } else if (tv == CS_TYPE_Q8_0) {
                dequantize_row_q8_0((const block_q8_0 *)(const void *)vh, vtmp, hd);
                k->axpy_f32(hd, w, vtmp, out);
            } else if (small) {
                const float *vv = (const float *)(const void *)vh;
                for (int64_t i = 0; i < hd; i++) out[i] += w * vv[i];
            } else {
                k->axpy_f32(hd, w, (const float *)(const void *)vh, out);
            }
        }
    }
}

/* Item ranges from the job's shared counter (threadpool_take). */
static void attn_worker(void *arg, int32_t ith, int32_t nth) {
    attn_task *a = arg;
    /* the copy a thread kept is of the last layer's keys (attn_kt_state) */
    if (a->use_kt) a->ctx->tb.kt_state[ith].layer = -1;
    const int64_t n_pairs = (int64_t)a->b->n_tokens * a->ctx->model->hp.n_head;
    const int64_t n_ranges = threadpool_n_ranges(n_pairs, nth);
    for (int64_t u; (u = threadpool_take(&a->next, n_ranges)) >= 0;) {
        int64_t p0, p1;
        threadpool_split(n_pairs, (int32_t)u, (int32_t)n_ranges, &p0, &p1);
        attn_range(a, ith, p0, p1);
    }
}

/* Write the batch's K and V rows (already rotated) into their cells. */
static void store_kv(cs_context *ctx, int32_t layer, int32_t T) {
    const int64_t n = ctx->model->hp.n_embd_kv;
    for (int32_t t = 0; t < T; t++)
        kv_store_write(&ctx->kv, ctx->kern, layer, ctx->slot[t], ctx->k + t * n, ctx->v + t * n);
}

/* ---------------------------------------------------------------- forward */

void forward_batch(cs_context *ctx, const cs_batch *b) {
    const cs_model *m = ctx->model;
    const model_hparams *hp = &m->hp;
    const int32_t T = b->n_tokens;
    const int64_t E = hp->n_embd, F = hp->n_ff;

    /* token embeddings, and the RoPE angles once per token, shared by all
     * layers and heads */
    run_rows(ctx, b, ROWS_EMBED, NULL, T, E);

    int32_t n_cells = kv_cells_cell_max(&ctx->cells);
    prepare_seq_lists(ctx, b, n_cells);
    const bool kt_batch = ctx->kt_cells > 0 && ctx->all_rows_listed && T >= CS_ATTN_KT_MIN_TOKENS;
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        /* layers after the first got xb = norm(x) with the residual below */
        if (il == 0) run_rows(ctx, b, ROWS_NORM, L->attn_norm, T, E);
        forward_matmul(ctx, &L->wq, NULL, ctx->xb, T, ctx->q);
        forward_matmul(ctx, &L->wk, &L->wq, ctx->xb, T, ctx->k);
        forward_matmul(ctx, &L->wv, &L->wk, ctx->xb, T, ctx->v);
        run_rows_layer(ctx, b, ROWS_ROPE, NULL, L, T, hp->n_embd_q + hp->n_embd_kv);
        store_kv(ctx, il, T);
        attn_task at = {.ctx = ctx, .b = b, .layer = il, .n_cells = n_cells, .use_kt = kt_batch};
        atomic_init(&at.next, 0);
        threadpool_run(ctx->tp, attn_worker, &at);
        forward_matmul(ctx, &L->wo, NULL, ctx->att, T, ctx->xb);
        run_rows(ctx, b, ROWS_RESID_NORM, L->ffn_norm, T, E);

        forward_matmul(ctx, &L->w_gate, NULL, ctx->xb, T, ctx->hb);
        forward_matmul(ctx, &L->w_up, &L->w_gate, ctx->xb, T, ctx->hb2);
        run_rows(ctx, b, ROWS_SWIGLU, NULL, T, F);
        forward_matmul(ctx, &L->w_down, NULL, ctx->hb, T, ctx->xb);
        if (il + 1 < hp->n_layer)
            run_rows(ctx, b, ROWS_RESID_NORM, m->layers[il + 1].attn_norm, T, E);
        else
            run_rows(ctx, b, ROWS_RESID, NULL, T, E);
    }

    /* gather the rows that want logits, then norm and project them */
    int32_t n_out = 0;
    for (int32_t t = 0; t < T; t++) {
        if (ctx->out_index[t] < 0) continue;
        memmove(ctx->x + (size_t)n_out * (size_t)E, ctx->x + (size_t)t * (size_t)E,
                (size_t)E * sizeof(float));
        n_out++;
    }
    if (n_out == 0) return;
    run_rows(ctx, b, ROWS_NORM, m->output_norm, n_out, E);
    forward_matmul(ctx, &m->output, NULL, ctx->xb, n_out, ctx->logits);
}
