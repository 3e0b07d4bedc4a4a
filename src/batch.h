/* batch.h: the cs_batch object (tokens, positions, sequence sets, output
 * flags) and its validation against a model and context. */
#ifndef CS_BATCH_H
#define CS_BATCH_H

#include "common.h"

struct cs_batch {
    int32_t n_tokens;
    int32_t n_tokens_max;
    int32_t n_seq_per_token; /* sequences per token this batch can hold (capacity) */
    cs_token *token;   /* (n_tokens_max) */
    cs_pos *pos;       /* (n_tokens_max) */
    int32_t *n_seq;    /* (n_tokens_max) */
    cs_seq *seq;       /* (n_tokens_max, n_seq_per_token) */
    bool *logits;      /* (n_tokens_max) */
};

/* Validate batch b for a model of n_vocab tokens and a context with
 * n_batch and sequence ids in [0, n_seq_ids). CS_ERR_INVALID_ARG with a message naming the row
 * and the value on the first problem. On success *seqs_out[i] holds the
 * bitset of row i's sequences (caller's array of b->n_tokens). */
cs_status batch_validate(const cs_batch *b, int32_t n_vocab, uint32_t n_batch, uint32_t n_seq_ids,
                         uint64_t *seqs_out);

#endif /* CS_BATCH_H */
