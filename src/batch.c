/* batch.c: cs_batch construction and validation. */
#include "batch.h"

#include "cs_limits.h"

cs_status cs_batch_new(int32_t n_tokens_max, int32_t n_seq_per_token_max, cs_batch **out) {
    if (out) *out = NULL;
    if (!out) return error_fail(CS_ERR_INVALID_ARG, "cs_batch_new: out is NULL");
    if (n_tokens_max < 1 || n_tokens_max > CS_MAX_CTX)
        return error_fail(CS_ERR_INVALID_ARG, "cs_batch_new: n_tokens_max %d outside [1, %d]",
                          n_tokens_max, CS_MAX_CTX);
    if (n_seq_per_token_max < 1 || n_seq_per_token_max > CS_MAX_SEQ)
        return error_fail(CS_ERR_INVALID_ARG,
                          "cs_batch_new: n_seq_per_token_max %d outside [1, %d]",
                          n_seq_per_token_max, CS_MAX_SEQ);
    cs_batch *b = mem_calloc(1, sizeof *b);
    if (!b) goto nomem;
    size_t n = (size_t)n_tokens_max;
    b->n_tokens_max = n_tokens_max;
    b->n_seq_per_token = n_seq_per_token_max;
    b->token = mem_malloc(n * sizeof *b->token);
    b->pos = mem_malloc(n * sizeof *b->pos);
    b->n_seq = mem_malloc(n * sizeof *b->n_seq);
    b->seq = mem_malloc(n * (size_t)n_seq_per_token_max * sizeof *b->seq);
    b->logits = mem_malloc(n * sizeof *b->logits);
    if (!b->token || !b->pos || !b->n_seq || !b->seq || !b->logits) goto nomem;
    *out = b;
    return CS_OK;
nomem:
    cs_batch_free(b);
    return error_fail(CS_ERR_NOMEM, "cs_batch_new: out of memory for %d tokens", n_tokens_max);
}

void cs_batch_free(cs_batch *b) {
    if (!b) return;
    mem_free(b->token);
    mem_free(b->pos);
    mem_free(b->n_seq);
    mem_free(b->seq);
    mem_free(b->logits);
    mem_free(b);
}

void cs_batch_clear(cs_batch *b) {
    if (b) b->n_tokens = 0;
}

int32_t cs_batch_n_tokens(const cs_batch *b) {
    return b ? b->n_tokens : 0;
}

cs_status cs_batch_add(cs_batch *b, cs_token token, cs_pos pos, const cs_seq *seqs, int32_t n_seq,
                       bool want_logits) {
    if (!b) return error_fail(CS_ERR_INVALID_ARG, "cs_batch_add: batch is NULL");
    if (b->n_tokens >= b->n_tokens_max)
        return error_fail(CS_ERR_INVALID_ARG, "cs_batch_add: batch is full (%d tokens)",
                          b->n_tokens_max);
    if (n_seq < 0 || n_seq > b->n_seq_per_token || (n_seq > 0 && !seqs))
        return error_fail(CS_ERR_INVALID_ARG,
                          "cs_batch_add: n_seq %d outside [0, %d] (or seqs is NULL)", n_seq,
                          b->n_seq_per_token);
    int32_t i = b->n_tokens++;
    b->token[i] = token;
    b->pos[i] = pos;
    b->n_seq[i] = n_seq;
    for (int32_t s = 0; s < n_seq; s++)
        b->seq[(size_t)i * (size_t)b->n_seq_per_token + (size_t)s] = seqs[s];
    b->logits[i] = want_logits;
    return CS_OK;
}

cs_status batch_validate(const cs_batch *b, int32_t n_vocab, uint32_t n_batch, uint32_t n_seq_ids,
                         uint64_t *seqs_out) {
    if (!b) return error_fail(CS_ERR_INVALID_ARG, "decode: batch is NULL");
    if (b->n_tokens <= 0) return error_fail(CS_ERR_INVALID_ARG, "decode: the batch is empty");
    if ((uint32_t)b->n_tokens > n_batch)
        return error_fail(CS_ERR_INVALID_ARG, "decode: batch has %d tokens, more than n_batch %u",
                          b->n_tokens, n_batch);
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (b->token[i] < 0 || b->token[i] >= n_vocab)
            return error_fail(CS_ERR_INVALID_ARG,
                              "decode: batch row %d: token id %d outside the vocabulary [0, %d)", i,
                              b->token[i], n_vocab);
        if (b->pos[i] < 0)
            return error_fail(CS_ERR_INVALID_ARG, "decode: batch row %d: position %d is negative",
                              i, b->pos[i]);
        if (b->pos[i] > CS_POS_MAX)
            return error_fail(CS_ERR_INVALID_ARG,
                              "decode: batch row %d: position %d is above CS_POS_MAX = %d", i,
                              b->pos[i], CS_POS_MAX);
        if (b->n_seq[i] < 1)
            return error_fail(CS_ERR_INVALID_ARG, "decode: batch row %d has no sequence id", i);
        uint64_t set = 0;
        for (int32_t s = 0; s < b->n_seq[i]; s++) {
            cs_seq id = b->seq[(size_t)i * (size_t)b->n_seq_per_token + (size_t)s];
            if (id < 0 || (uint32_t)id >= n_seq_ids)
                return error_fail(CS_ERR_INVALID_ARG,
                                  "decode: batch row %d: sequence id %d outside [0, %u)", i, id,
                                  n_seq_ids);
            set |= (uint64_t)1 << id;
        }
        seqs_out[i] = set;
    }
    return CS_OK;
}
