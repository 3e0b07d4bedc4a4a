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
    };
}

static int32_t online_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > CS_MAX_THREADS ? CS_MAX_THREADS : (int32_t)n;
}

static size_t type_elem_size(int32_t type) { return type == CS_TYPE_F16 ? 2 : 4; }

/* Largest scratch any weight matmul of the model needs for T tokens. */
static size_t matmul_scratch_max(const cs_model *m, int64_t T) {
    size_t best = cs_matmul_scratch_size(m->output.type, m->output.ne0, T);
    for (int32_t il = 0; il < m->hp.n_layer; il++) {
        const cs_layer *L = &m->layers[il];
        const cs_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t s = cs_matmul_scratch_size(ws[i]->type, ws[i]->ne0, T);
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
        return cs_fail(CS_ERR_INVALID_ARG, "context: n_ctx %u exceeds the limit %d", *n_ctx,
                       CS_MAX_CTX);
    *n_batch = p->n_batch ? p->n_batch : (*n_ctx < 512 ? *n_ctx : 512);
    if (*n_batch > *n_ctx) *n_batch = *n_ctx;
    *n_seq_max = p->n_seq_max ? p->n_seq_max : 1;
    if (*n_seq_max > CS_MAX_SEQ)
        return cs_fail(CS_ERR_INVALID_ARG, "context: n_seq_max %u exceeds the limit %d", *n_seq_max,
                       CS_MAX_SEQ);
    *n_threads = p->n_threads > 0 ? p->n_threads : online_cores();
    if (*n_threads > CS_MAX_THREADS)
        return cs_fail(CS_ERR_INVALID_ARG, "context: n_threads %d exceeds the limit %d",
                       *n_threads, CS_MAX_THREADS);
    if (p->type_k != CS_TYPE_F32 && p->type_k != CS_TYPE_F16)
        return cs_fail(CS_ERR_UNSUPPORTED, "context: type_k %s (%d) is not supported (f32, f16)",
                       cs_type_name(p->type_k), p->type_k);
    if (p->type_v != CS_TYPE_F32 && p->type_v != CS_TYPE_F16)
        return cs_fail(CS_ERR_UNSUPPORTED, "context: type_v %s (%d) is not supported (f32, f16)",
                       cs_type_name(p->type_v), p->type_v);
    if (p->defrag_thold != p->defrag_thold)
        return cs_fail(CS_ERR_INVALID_ARG, "context: defrag_thold is NaN");
    return CS_OK;
}

cs_status cs_context_new(const cs_model *m, const cs_context_params *params, cs_context **out) {
    if (out) *out = NULL;
    if (!m || !out) return cs_fail(CS_ERR_INVALID_ARG, "cs_context_new: model and out must be set");
    if (m->vocab_only)
        return cs_fail(CS_ERR_UNSUPPORTED, "cs_context_new: the model was loaded vocab-only");
    cs_context_params p = params ? *params : cs_context_default_params();
    uint32_t n_ctx = 0, n_batch = 0, n_seq_max = 0;
    int32_t n_threads = 0;
    cs_status st = check_params(m, &p, &n_ctx, &n_batch, &n_seq_max, &n_threads);
    if (st != CS_OK) return st;
    if (n_ctx == 0) return cs_fail(CS_ERR_INVALID_ARG, "context: n_ctx is 0");

    cs_context *c = cs_calloc(1, sizeof *c);
    if (!c) return cs_fail(CS_ERR_NOMEM, "context: out of memory");
    const cs_hparams *hp = &m->hp;
    c->model = m;
    c->params = p;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->n_seq_max = n_seq_max;
    c->n_threads = n_threads;
    c->kern = cs_kernels_best();
    c->rope = (cs_rope_params){.n_rot = hp->n_rot,
                               .mode = hp->rope_mode,
                               .freq_base = hp->rope_freq_base,
                               .freq_scale = hp->rope_freq_scale,
                               .ext_factor = 0.0f,
                               .attn_factor = 1.0f,
                               .beta_fast = 32.0f,
                               .beta_slow = 1.0f,
                               .n_ctx_orig = hp->n_ctx_train};

    if ((st = kv_cells_init(&c->cells, (int32_t)n_ctx)) != CS_OK) goto fail;
    c->kv.type_k = p.type_k;
    c->kv.type_v = p.type_v;
    c->kv.row_k = (size_t)hp->n_embd_kv * type_elem_size(p.type_k);
    c->kv.row_v = (size_t)hp->n_embd_kv * type_elem_size(p.type_v);
    c->kv.k = cs_calloc((size_t)hp->n_layer, sizeof *c->kv.k);
    c->kv.v = cs_calloc((size_t)hp->n_layer, sizeof *c->kv.v);
    if (!c->kv.k || !c->kv.v) goto nomem;
    for (int32_t il = 0; il < hp->n_layer; il++) {
        size_t bk, bv;
        if (!cs_mul_size(c->kv.row_k, n_ctx, &bk) || !cs_mul_size(c->kv.row_v, n_ctx, &bv))
            goto nomem;
        c->kv.k[il] = cs_aligned_alloc(bk);
        c->kv.v[il] = cs_aligned_alloc(bv);
        if (!c->kv.k[il] || !c->kv.v[il]) goto nomem;
        /* zeroed so that a read of a never-written cell is deterministic */
        memset(c->kv.k[il], 0, bk);
        memset(c->kv.v[il], 0, bv);
    }

    size_t T = n_batch;
    c->x = cs_aligned_alloc(T * (size_t)hp->n_embd * sizeof(float));
    c->xb = cs_aligned_alloc(T * (size_t)hp->n_embd * sizeof(float));
    c->q = cs_aligned_alloc(T * (size_t)hp->n_embd * sizeof(float));
    c->att = cs_aligned_alloc(T * (size_t)hp->n_embd * sizeof(float));
    c->k = cs_aligned_alloc(T * (size_t)hp->n_embd_kv * sizeof(float));
    c->v = cs_aligned_alloc(T * (size_t)hp->n_embd_kv * sizeof(float));
    c->hb = cs_aligned_alloc(T * (size_t)hp->n_ff * sizeof(float));
    c->hb2 = cs_aligned_alloc(T * (size_t)hp->n_ff * sizeof(float));
    c->rope_cs = cs_aligned_alloc(T * (size_t)hp->n_rot * sizeof(float));
    c->scores = cs_aligned_alloc((size_t)n_threads * n_ctx * sizeof(float));
    c->vis = cs_aligned_alloc((size_t)n_threads * n_ctx * sizeof(int32_t));
    c->qh = cs_aligned_alloc((size_t)n_threads * (size_t)hp->head_dim * sizeof(uint16_t));
    c->mm_scratch_size = matmul_scratch_max(m, (int64_t)T);
    c->mm_scratch = cs_aligned_alloc(c->mm_scratch_size);
    c->slot = cs_malloc(T * sizeof *c->slot);
    c->seqs = cs_malloc(T * sizeof *c->seqs);
    c->seq0 = cs_malloc(T * sizeof *c->seq0);
    c->out_index = cs_malloc(T * sizeof *c->out_index);
    if (!c->x || !c->xb || !c->q || !c->att || !c->k || !c->v || !c->hb || !c->hb2 ||
        !c->rope_cs || !c->scores || !c->vis || !c->qh || !c->mm_scratch || !c->slot || !c->seqs ||
        !c->seq0 || !c->out_index)
        goto nomem;
    if ((st = cs_threadpool_new(n_threads, &c->tp)) != CS_OK) goto fail;
    *out = c;
    return CS_OK;
nomem:
    st = cs_fail(CS_ERR_NOMEM, "context: out of memory for n_ctx %u, n_batch %u", n_ctx, n_batch);
fail:
    cs_context_free(c);
    return st;
}

void cs_context_free(cs_context *c) {
    if (!c) return;
    cs_threadpool_free(c->tp);
    if (c->kv.k)
        for (int32_t il = 0; il < c->model->hp.n_layer; il++) cs_free(c->kv.k[il]);
    if (c->kv.v)
        for (int32_t il = 0; il < c->model->hp.n_layer; il++) cs_free(c->kv.v[il]);
    cs_free(c->kv.k);
    cs_free(c->kv.v);
    kv_cells_free(&c->cells);
    void *bufs[] = {c->x,  c->xb,      c->q,      c->att,  c->k,    c->v,
                    c->hb, c->hb2,     c->rope_cs, c->scores, c->vis, c->qh, c->mm_scratch,
                    c->slot, c->seqs,  c->seq0,   c->out_index, c->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cs_free(bufs[i]);
    cs_free(c);
}

uint32_t cs_n_ctx(const cs_context *c) { return c->n_ctx; }
uint32_t cs_n_batch(const cs_context *c) { return c->n_batch; }
uint32_t cs_n_seq_max(const cs_context *c) { return c->n_seq_max; }
int32_t cs_n_threads(const cs_context *c) { return c->n_threads; }

cs_status cs_set_n_threads(cs_context *c, int32_t n_threads) {
    if (!c || n_threads < 1 || n_threads > CS_MAX_THREADS)
        return cs_fail(CS_ERR_INVALID_ARG, "cs_set_n_threads: n_threads %d outside [1, %d]",
                       n_threads, CS_MAX_THREADS);
    if (n_threads == c->n_threads) return CS_OK;
    float *scores = cs_aligned_alloc((size_t)n_threads * c->n_ctx * sizeof(float));
    int32_t *vis = cs_aligned_alloc((size_t)n_threads * c->n_ctx * sizeof(int32_t));
    uint16_t *qh = cs_aligned_alloc((size_t)n_threads * (size_t)c->model->hp.head_dim * 2);
    cs_threadpool *tp = NULL;
    cs_status st = (scores && vis && qh)
                       ? cs_threadpool_new(n_threads, &tp)
                       : cs_fail(CS_ERR_NOMEM, "cs_set_n_threads: out of memory");
    if (st != CS_OK) {
        cs_free(scores);
        cs_free(vis);
        cs_free(qh);
        return st;
    }
    cs_threadpool_free(c->tp);
    cs_free(c->scores);
    cs_free(c->vis);
    cs_free(c->qh);
    c->tp = tp;
    c->scores = scores;
    c->vis = vis;
    c->qh = qh;
    c->n_threads = n_threads;
    return CS_OK;
}

/* ----------------------------------------------------------------- decode */

int32_t cs_decode(cs_context *c, const cs_batch *b) {
    if (!c) return cs_fail(CS_ERR_INVALID_ARG, "decode: context is NULL");
    const int32_t n_vocab = c->model->hp.n_vocab;
    c->n_batch_rows = 0; /* earlier logits are invalid from here on */
    cs_status st = batch_validate(b, n_vocab, c->n_batch, c->n_seq_max, c->seqs);
    if (st != CS_OK) return st;
    const int32_t T = b->n_tokens;

    /* outputs: grow the logits buffer before touching the cache */
    int32_t n_out = 0;
    for (int32_t t = 0; t < T; t++) c->out_index[t] = b->logits[t] ? n_out++ : -1;
    size_t need;
    if (!cs_mul_size((size_t)n_out, (size_t)n_vocab, &need))
        return cs_fail(CS_ERR_NOMEM, "decode: logits size overflows");
    if (need > c->logits_cap) {
        float *l = cs_aligned_alloc(need * sizeof(float));
        if (!l)
            return cs_fail(CS_ERR_NOMEM, "decode: out of memory for %d logits rows", n_out);
        cs_free(c->logits);
        c->logits = l;
        c->logits_cap = need;
    }

    /* place the batch; nothing has changed if there is no room */
    int32_t head_before = c->cells.head;
    if (!kv_cells_find_slot(&c->cells, T, c->params.contiguous_slots, c->slot)) {
        c->cells.head = head_before;
        return CS_NO_KV_SLOT;
    }
    for (int32_t t = 0; t < T; t++) {
        c->seq0[t] = b->seq[(size_t)t * (size_t)b->n_seq_max];
        kv_cells_assign(&c->cells, c->slot[t], b->pos[t], c->seqs[t]);
    }
    forward_batch(c, b);
    c->n_batch_rows = T;
    return CS_OK;
}

const float *cs_get_logits_ith(cs_context *c, int32_t i) {
    if (!c || i < 0 || i >= c->n_batch_rows || c->out_index[i] < 0) return NULL;
    return c->logits + (size_t)c->out_index[i] * (size_t)c->model->hp.n_vocab;
}

/* --------------------------------------------------------------- KV ops */

void cs_kv_clear(cs_context *c) {
    if (c) kv_cells_clear(&c->cells);
}

cs_status cs_kv_seq_rm(cs_context *c, cs_seq seq, cs_pos p0, cs_pos p1) {
    if (!c) return cs_fail(CS_ERR_INVALID_ARG, "kv_seq_rm: context is NULL");
    if (seq >= (cs_seq)c->n_seq_max)
        return cs_fail(CS_ERR_INVALID_ARG, "kv_seq_rm: sequence id %d outside [0, %u)", seq,
                       c->n_seq_max);
    kv_cells_seq_rm(&c->cells, seq, p0, p1);
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

int32_t cs_kv_used_cells(const cs_context *c) { return c ? c->cells.used : 0; }
int32_t cs_kv_token_count(const cs_context *c) { return c ? kv_cells_token_count(&c->cells) : 0; }
