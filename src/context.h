/* context.h: cs_context, which owns the KV cache (metadata + K/V rows),
 * the thread pool, scratch buffers and logits. */
#ifndef CS_CONTEXT_H
#define CS_CONTEXT_H

#include "batch.h"
#include "common.h"
#include "kernels/kernels.h"
#include "kv_cache.h"
#include "kv_cells.h"
#include "model.h"
#include "threadpool.h"

#define CS_ATTN_SEQ_LISTS 4

/* A batch of at least this many rows takes the transposed keys (forward.c,
 * kernels.h attn_kt_f16): each thread transposes a KV head's cells once
 * (about 6 operations per cell and 16 head elements) and saves about 5 per
 * (cell, query) on the scores, so it pays when a cell serves several of
 * the thread's queries; a decode step's few rows keep the per-cell kernel. */
#define CS_ATTN_KT_MIN_TOKENS 32

/* Which keys a thread's transposed copy holds (forward.c): blocks [0,
 * n_blocks) of list `list`'s cells, KV head hk, layer `layer`, in the
 * current decode (reset with layer -1 at each layer's attention). */
typedef struct attn_kt_state {
    int32_t layer, hk, list, n_blocks;
} attn_kt_state;

/* The attention's buffers of each thread of the pool. */
typedef struct thread_bufs {
    float *scores; /* (n_threads, KERNELS_ATTN_MQ, n_ctx) attention scores */
    int32_t *vis;  /* (n_threads, n_ctx) cells visible to the current token */
    void *qh;      /* (n_threads, KERNELS_ATTN_MQ, head_dim) queries as f16 or Q8_0 (K cache) */
    float *vrow;   /* (n_threads, head_dim) a V head dequantized from Q8_0 */
    /* A prompt's keys transposed (kernels.h, attn_kt_f16): per thread
     * kt_cells cells of one KV head, the head and list named by its
     * kt_state; NULL without a copy. */
    float *kt;               /* (n_threads, kt_cells, head_dim) */
    attn_kt_state *kt_state; /* (n_threads) */
} thread_bufs;

struct cs_context {
    const cs_model *model;
    cs_context_params params;
    uint32_t n_ctx;
    uint32_t n_batch;
    uint32_t n_seq_max;
    int32_t n_threads;

    kv_cells cells;
    kv_store kv;
    bool do_defrag;        /* a defrag is scheduled for the next update */
    bool can_shift;        /* positions may change (RoPE model) */
    int32_t *defrag_ids;   /* (n_ctx) planner scratch */
    kv_move *defrag_moves; /* (n_ctx) planned blocks */
    cs_kv_info totals;     /* the cumulative counters of cs_kv_stats */

    threadpool *tp;
    const kernels_table *kern;
    kernels_rope_params rope;

    /* scratch, sized for n_batch tokens */
    float *x;       /* (n_batch, n_embd) residual stream */
    float *xb;      /* (n_batch, n_embd) normed input */
    float *q;       /* (n_batch, n_embd_q) */
    float *k;       /* (n_batch, n_embd_kv) */
    float *v;       /* (n_batch, n_embd_kv) */
    float *att;     /* (n_batch, n_embd_q) attention output */
    float *hb;      /* (n_batch, n_ff) */
    float *hb2;     /* (n_batch, n_ff) */
    float *rope_cs; /* (n_batch, n_rot) cos/sin per token */
    /* per thread of the pool (thread_bufs_alloc in context.c sizes them) */
    thread_bufs tb;
    /* cells of tb.kt per thread; 0: no copy (no such kernel, another cache
     * type or head dim) */
    int32_t kt_cells;
    /* Per decode (forward.c): the cells of up to CS_ATTN_SEQ_LISTS of the
     * batch's sequences in position order, so a row's visible cells are a
     * prefix of its sequence's list: sorted once per decode, not per
     * (row, layer). Rows of other sequences use vis. */
    int32_t *seq_cells; /* (CS_ATTN_SEQ_LISTS, n_ctx) */
    int32_t *tok_list;  /* (n_batch) list of each row's first sequence, -1: none */
    int32_t seq_list_n[CS_ATTN_SEQ_LISTS];
    cs_seq seq_list_id[CS_ATTN_SEQ_LISTS];
    int32_t n_seq_lists;
    bool all_rows_listed; /* every row of the batch has a list */
    void *mm_scratch;     /* activations converted for the matmul */
    size_t mm_scratch_size;
    int32_t *slot;  /* (n_batch) cell of each batch row */
    uint64_t *seqs; /* (n_batch) sequence set of each batch row */
    cs_seq *seq0;   /* (n_batch) first sequence of each row (the mask uses it) */

    /* outputs of the last decode */
    float *logits;        /* (n_outputs, n_vocab) */
    size_t logits_cap;    /* floats allocated */
    int32_t *out_index;   /* (n_batch) batch row -> logits row, or -1 */
    int32_t n_batch_rows; /* rows in the last decode */
};

/* Run the transformer over batch b whose rows were placed in cells
 * ctx->slot[0, n). Writes K/V rows and the logits of rows asking for them
 * (ctx->out_index). Cannot fail: every buffer was sized at context
 * creation (logits were grown by the caller). */
void forward_batch(cs_context *ctx, const cs_batch *b);

#endif /* CS_CONTEXT_H */
