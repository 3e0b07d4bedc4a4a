/* cmd_perplexity.c: `ctxshift perplexity`, llama-perplexity's algorithm
 * (examples/perplexity/perplexity.cpp, perplexity(), llama.cpp c392e509).
 *
 * The whole text is tokenized with BOS and cut into n_chunk = n_tokens / n_ctx
 * chunks. Each chunk is decoded from an empty cache with its first token
 * replaced by BOS, and only its second half is scored: the logits at
 * positions [n_ctx/2, n_ctx - 1) predict the token that follows. When
 * n_batch holds several chunks, floor(n_batch / n_ctx) of them (at most 64)
 * share one decode as separate sequences. stdout: the running estimates
 * "[1]x,[2]y,..." and the final "Final estimate: PPL = x +/- y"; progress
 * goes to stderr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "tool_context.h"
#include "tools.h"

typedef struct ppl_opts {
    tool_common common; /* -m -c -b -t -ctk -ctv -v -h */
    const char *file;
    int32_t n_chunks; /* -1: all */
} ppl_opts;

static void ppl_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift perplexity -f FILE [flags]\n"
            "\n"
            "Perplexity of a text, computed as llama-perplexity does: chunks of -c tokens, each\n"
            "starting with BOS, scored on their second half.\n"
            "\n"
            "  -m,   --model FILE         GGUF model (default: %s)\n"
            "  -f,   --file FILE          the text (required; at least 2 * c tokens)\n"
            "  -c,   --ctx-size N         tokens per chunk (default: 512)\n"
            "  -b,   --batch-size N       tokens per decode; b >= 2c scores floor(b / c) chunks\n"
            "                             per decode as separate sequences (default: "
            "2048)\n" TOOL_HELP_THREADS
            "        --chunks N           score at most N chunks; -1 = all (default: "
            "-1)\n" TOOL_HELP_CACHE_TYPES TOOL_HELP_VERBOSE TOOL_HELP_HELP,
            CS_DEFAULT_MODEL);
}

static int ppl_parse(int argc, char **argv, ppl_opts *o) {
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &o->common, &handled);
        if (rc != 0) return rc;
        if (handled) continue;
        if (tool_arg_is(a, "-f", "--file")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->file = v;
        } else if (tool_arg_is(a, NULL, "--chunks")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -1, INT32_MAX, &o->n_chunks);
        } else {
            rc = tool_arg_unknown("perplexity", a);
        }
        if (rc != 0) return rc;
    }
    if (!o->common.help && o->file == NULL) {
        tool_error("perplexity: -f FILE is required (see 'ctxshift perplexity --help')");
        return TOOL_EXIT_USAGE;
    }
    return 0;
}

/* -log p(tok) from one logits row, as llama-perplexity's log_softmax: the
 * maximum in float, the sum of expf in double. Cost O(n_vocab). */
static double ppl_nll(const float *logits, int32_t n_vocab, cs_token tok) {
    float max_logit = logits[0];
    for (int32_t i = 1; i < n_vocab; i++) {
        if (logits[i] > max_logit) max_logit = logits[i];
    }
    double sum_exp = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) sum_exp += (double)expf(logits[i] - max_logit);
    return -((double)(logits[tok] - max_logit) - log(sum_exp));
}

/* Everything one `ctxshift perplexity` holds; ppl_free releases it. */
typedef struct ppl_state {
    ppl_opts o;
    char *text;
    size_t text_len;
    cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    cs_token *tokens;
    int32_t n_tokens;
    int32_t n_ctx;   /* tokens per chunk */
    int32_t n_seq;   /* chunks per decode */
    int32_t n_batch; /* tokens per decode */
    int32_t n_chunk; /* chunks scored */
    int32_t n_vocab;
    int32_t first; /* first scored position of a chunk */
    bool add_bos;
    cs_token bos;
    double *seq_nll, *seq_nll2; /* per sequence of one decode group, n_seq */
    double nll, nll2;           /* sums over the scored tokens */
    int32_t count;              /* scored tokens */
} ppl_state;

static void ppl_free(ppl_state *st) {
    free(st->seq_nll2);
    free(st->seq_nll);
    free(st->tokens);
    cs_batch_free(st->batch);
    cs_context_free(st->ctx);
    cs_model_free(st->model);
    free(st->text);
}

/* Read the text, load the model, size the context as llama-perplexity's
 * main(): n_seq chunks per decode when the batch holds several; capped by
 * the context's sequence limit (64). */
static int ppl_load(ppl_state *st) {
    const ppl_opts *o = &st->o;
    int rc = tool_read_file(o->file, &st->text, &st->text_len);
    if (rc == 0) rc = tool_load_model(o->common.model, false, &st->model);
    if (rc != 0) return rc;

    st->n_ctx = o->common.n_ctx;
    int32_t n_seq = o->common.n_batch / st->n_ctx > 1 ? o->common.n_batch / st->n_ctx : 1;
    if (n_seq > 64) n_seq = 64;
    st->n_seq = n_seq;
    const int32_t n_kv = n_seq * st->n_ctx;
    st->n_batch = o->common.n_batch < n_kv ? o->common.n_batch : n_kv;

    tool_common cc = o->common;
    cc.n_ctx = n_kv;
    cc.n_batch = st->n_batch;
    if ((rc = tool_context_new(st->model, &cc, (uint32_t)n_seq, &st->ctx)) != 0) return rc;
    const cs_status bs = cs_batch_new(st->n_batch, 1, &st->batch);
    if (bs != CS_OK) return tool_fail_lib(bs, "batch");
    fprintf(stderr, "system_info: n_threads = %d | %s\n", (int)cs_n_threads(st->ctx),
            cs_system_info());
    return 0;
}

/* Tokenize the text, check that it holds two chunks, work out the chunk
 * count and print the plan. */
static int ppl_prepare(ppl_state *st) {
    const uint64_t t_tok = tool_time_ns();
    int rc =
        tool_tokenize(st->model, st->text, st->text_len, true, false, &st->tokens, &st->n_tokens);
    if (rc != 0) return rc;
    fprintf(stderr, "perplexity: tokenization took %g ms\n",
            (double)(tool_time_ns() - t_tok) / 1e6);
    const int32_t n_ctx = st->n_ctx;
    if (st->n_tokens < 2 * n_ctx) {
        tool_error("perplexity: the text tokenizes to %d tokens; a context of %d needs at least %d",
                   (int)st->n_tokens, (int)n_ctx, (int)(2 * n_ctx));
        return TOOL_EXIT_FAIL;
    }

    const int32_t n_chunk_max = st->n_tokens / n_ctx;
    const int32_t n_chunks = st->o.n_chunks;
    st->n_chunk = n_chunks < 0 || n_chunks > n_chunk_max ? n_chunk_max : n_chunks;
    st->n_vocab = cs_model_n_vocab(st->model);
    st->add_bos = cs_vocab_add_bos(st->model) && cs_token_bos(st->model) >= 0;
    st->bos = cs_token_bos(st->model);
    st->first = n_ctx / 2;
    fprintf(stderr,
            "perplexity: calculating perplexity over %d chunks, n_ctx=%d, batch_size=%d, "
            "n_seq=%d\n",
            (int)st->n_chunk, (int)n_ctx, (int)st->n_batch, (int)st->n_seq);

    st->seq_nll = calloc((size_t)st->n_seq, sizeof(double));
    st->seq_nll2 = calloc((size_t)st->n_seq, sizeof(double));
    if (st->seq_nll == NULL || st->seq_nll2 == NULL) {
        tool_error("out of memory");
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* Decode batch j of the chunks [i, i + n_seq_batch) starting at token
 * `start`, one sequence per chunk (first token BOS), and add the scores
 * of its rows: position p predicts chunk token p + 1. */
static int ppl_decode_batch(ppl_state *st, int32_t i, int32_t start, int32_t n_seq_batch,
                            int32_t j) {
    const int32_t n_ctx = st->n_ctx, n_batch = st->n_batch, first = st->first;
    const int32_t batch_start = start + j * n_batch;
    const int32_t batch_size =
        start + n_ctx - batch_start < n_batch ? start + n_ctx - batch_start : n_batch;
    cs_batch_clear(st->batch);
    for (int32_t s = 0; s < n_seq_batch; s++) {
        const int32_t seq_start = batch_start + s * n_ctx;
        const cs_seq seq = s;
        for (int32_t k = 0; k < batch_size; k++) {
            const cs_pos pos = j * n_batch + k;
            const cs_token t =
                st->add_bos && j == 0 && k == 0 ? st->bos : st->tokens[seq_start + k];
            const cs_status bs = cs_batch_add(st->batch, t, pos, &seq, 1, pos >= first);
            if (bs != CS_OK) return tool_fail_lib(bs, "batch");
        }
    }
    const int rc = tool_decode(st->ctx, st->batch, "decode: no KV slot for chunk %d", (int)(i + 1));
    if (rc != 0) return rc;
    for (int32_t s = 0; s < n_seq_batch; s++) {
        const int32_t chunk_start = start + s * n_ctx;
        for (int32_t k = 0; k < batch_size; k++) {
            const int32_t pos = j * n_batch + k;
            if (pos < first || pos >= n_ctx - 1) continue;
            const float *logits = cs_get_logits_ith(st->ctx, s * batch_size + k);
            if (logits == NULL) {
                tool_error("decode returned no logits for row %d", (int)(s * batch_size + k));
                return TOOL_EXIT_FAIL;
            }
            const double v = ppl_nll(logits, st->n_vocab, st->tokens[chunk_start + pos + 1]);
            st->seq_nll[s] += v;
            st->seq_nll2[s] += v * v;
        }
    }
    return 0;
}

/* Score every chunk, n_seq per pass from an empty cache, printing the
 * running estimate after each chunk. */
static int ppl_score(ppl_state *st) {
    const int32_t n_ctx = st->n_ctx, n_seq = st->n_seq, n_chunk = st->n_chunk;
    const int32_t num_batches = (n_ctx + st->n_batch - 1) / st->n_batch;
    for (int32_t i = 0; i < n_chunk; i += n_seq) {
        const int32_t start = i * n_ctx;
        const int32_t n_seq_batch = n_seq < n_chunk - i ? n_seq : n_chunk - i;
        const uint64_t t_start = tool_time_ns();
        cs_kv_clear(st->ctx);
        for (int32_t s = 0; s < n_seq_batch; s++) st->seq_nll[s] = st->seq_nll2[s] = 0.0;
        for (int32_t j = 0; j < num_batches; j++) {
            const int rc = ppl_decode_batch(st, i, start, n_seq_batch, j);
            if (rc != 0) return rc;
        }
        if (i == 0) {
            const double t_pass = (double)(tool_time_ns() - t_start) / 1e9;
            fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", t_pass,
                    t_pass * n_chunk / n_seq / 60.0);
        }
        for (int32_t s = 0; s < n_seq_batch; s++) {
            st->nll += st->seq_nll[s];
            st->nll2 += st->seq_nll2[s];
            st->count += n_ctx - st->first - 1;
            printf("[%d]%.4f,", (int)(i + s + 1), exp(st->nll / st->count));
            fflush(stdout);
        }
    }
    printf("\n");
    return 0;
}

/* The final estimate with its standard error, as llama-perplexity prints it. */
static void ppl_report(const ppl_state *st) {
    double nll2 = st->nll2 / st->count;
    const double nll = st->nll / st->count;
    const double ppl = exp(nll);
    nll2 -= nll * nll;
    if (nll2 > 0 && st->count > 1) {
        nll2 = sqrt(nll2 / (st->count - 1));
        printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, nll2 * ppl);
    } else {
        printf("Final estimate: PPL = %.4f\n", ppl);
        fprintf(stderr, "perplexity: unexpected non-positive variance of log(prob)\n");
    }
}

/* parse -> load -> prepare -> score -> report, one cleanup. */
int cmd_perplexity(int argc, char **argv) {
    ppl_state st;
    memset(&st, 0, sizeof(st));
    st.o = (ppl_opts){
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_THREADS | TOOL_FLAG_CTX |
                                       TOOL_FLAG_BATCH | TOOL_FLAG_CACHE_TYPES),
        .n_chunks = -1,
    };
    st.o.common.n_ctx = 512;
    st.o.common.ctx_min = 4;
    st.o.common.ctx_max = 1 << 24;
    st.o.common.batch_max = 1 << 24;
    int rc = ppl_parse(argc, argv, &st.o);
    if (!tool_begin(&rc, &st.o.common, ppl_usage)) return rc;

    if ((rc = ppl_load(&st)) != 0) goto done;
    if ((rc = ppl_prepare(&st)) != 0) goto done;
    if ((rc = ppl_score(&st)) != 0) goto done;
    ppl_report(&st);
done:
    ppl_free(&st);
    return rc;
}
