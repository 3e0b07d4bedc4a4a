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
#include "tools.h"

typedef struct ppl_opts {
    const char *model_path;
    const char *file;
    int32_t n_ctx;
    int32_t n_batch;
    int32_t n_threads;
    int32_t n_chunks; /* -1: all */
    int32_t type_k;
    int32_t type_v;
    bool verbose;
    bool help;
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
    /* fields in the order of tool_common (args.h); NULL = flag not taken */
    const tool_common com = {&o->help,   &o->verbose, &o->model_path, &o->n_threads, &o->n_ctx,
                             4,          1 << 24,     &o->n_batch,    1 << 24,       &o->type_k,
                             &o->type_v, NULL,        NULL,           NULL};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &com, &handled);
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
    if (!o->help && o->file == NULL) {
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

int cmd_perplexity(int argc, char **argv) {
    ppl_opts o;
    memset(&o, 0, sizeof(o));
    o.model_path = CS_DEFAULT_MODEL;
    o.n_ctx = 512;
    o.n_batch = 2048;
    o.n_chunks = -1;
    o.type_k = CS_TYPE_F16;
    o.type_v = CS_TYPE_F16;
    int rc = ppl_parse(argc, argv, &o);
    if (rc != 0) return rc;
    if (o.help) {
        ppl_usage(stdout);
        return TOOL_EXIT_OK;
    }
    tool_log_setup(o.verbose);

    char *text = NULL;
    size_t text_len = 0;
    cs_model *model = NULL;
    cs_context *ctx = NULL;
    cs_batch *batch = NULL;
    cs_token *tokens = NULL;
    double *seq_nll = NULL, *seq_nll2 = NULL;
    int32_t n_tokens = 0;

    if ((rc = tool_read_file(o.file, &text, &text_len)) != 0) goto done;
    if ((rc = tool_load_model(o.model_path, false, &model)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;

    /* As llama-perplexity's main(): n_seq chunks per decode when the batch
     * holds several; capped by the context's sequence limit (64). */
    const int32_t n_ctx = o.n_ctx;
    int32_t n_seq = o.n_batch / n_ctx > 1 ? o.n_batch / n_ctx : 1;
    if (n_seq > 64) n_seq = 64;
    const int32_t n_kv = n_seq * n_ctx;
    const int32_t n_batch = o.n_batch < n_kv ? o.n_batch : n_kv;

    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = (uint32_t)n_kv;
    cp.n_batch = (uint32_t)n_batch;
    cp.n_seq_max = (uint32_t)n_seq;
    cp.n_threads = o.n_threads > 0 ? o.n_threads : tool_default_threads();
    cp.type_k = o.type_k;
    cp.type_v = o.type_v;
    cs_status st = cs_context_new(model, &cp, &ctx);
    if (st != CS_OK) {
        rc = tool_fail_lib(st, "context");
        goto done;
    }
    if ((st = cs_batch_new(n_batch, 1, &batch)) != CS_OK) {
        rc = tool_fail_lib(st, "batch");
        goto done;
    }
    fprintf(stderr, "system_info: n_threads = %d | %s\n", (int)cs_n_threads(ctx), cs_system_info());

    const uint64_t t_tok = tool_time_ns();
    if ((rc = tool_tokenize(model, text, text_len, true, false, &tokens, &n_tokens)) != 0)
        goto done;
    rc = TOOL_EXIT_FAIL;
    fprintf(stderr, "perplexity: tokenization took %g ms\n",
            (double)(tool_time_ns() - t_tok) / 1e6);
    if (n_tokens < 2 * n_ctx) {
        tool_error("perplexity: the text tokenizes to %d tokens; a context of %d needs at least %d",
                   (int)n_tokens, (int)n_ctx, (int)(2 * n_ctx));
        goto done;
    }

    const int32_t n_chunk_max = n_tokens / n_ctx;
    const int32_t n_chunk = o.n_chunks < 0 || o.n_chunks > n_chunk_max ? n_chunk_max : o.n_chunks;
    const int32_t n_vocab = cs_model_n_vocab(model);
    const bool add_bos = cs_vocab_add_bos(model) && cs_token_bos(model) >= 0;
    const cs_token bos = cs_token_bos(model);
    const int32_t num_batches = (n_ctx + n_batch - 1) / n_batch;
    const int32_t first = n_ctx / 2;
    fprintf(stderr,
            "perplexity: calculating perplexity over %d chunks, n_ctx=%d, batch_size=%d, "
            "n_seq=%d\n",
            (int)n_chunk, (int)n_ctx, (int)n_batch, (int)n_seq);

    seq_nll = calloc((size_t)n_seq, sizeof(double));
    seq_nll2 = calloc((size_t)n_seq, sizeof(double));
    if (seq_nll == NULL || seq_nll2 == NULL) {
        tool_error("out of memory");
        goto done;
    }

    double nll = 0.0, nll2 = 0.0;
    int32_t count = 0;
    for (int32_t i = 0; i < n_chunk; i += n_seq) {
        const int32_t start = i * n_ctx;
        const int32_t n_seq_batch = n_seq < n_chunk - i ? n_seq : n_chunk - i;
        const uint64_t t_start = tool_time_ns();
        cs_kv_clear(ctx);
        for (int32_t s = 0; s < n_seq_batch; s++) seq_nll[s] = seq_nll2[s] = 0.0;

        for (int32_t j = 0; j < num_batches; j++) {
            const int32_t batch_start = start + j * n_batch;
            const int32_t batch_size =
                start + n_ctx - batch_start < n_batch ? start + n_ctx - batch_start : n_batch;
            cs_batch_clear(batch);
            for (int32_t s = 0; s < n_seq_batch; s++) {
                const int32_t seq_start = batch_start + s * n_ctx;
                const cs_seq seq = s;
                for (int32_t k = 0; k < batch_size; k++) {
                    const cs_pos pos = j * n_batch + k;
                    const cs_token t = add_bos && j == 0 && k == 0 ? bos : tokens[seq_start + k];
                    st = cs_batch_add(batch, t, pos, &seq, 1, pos >= first);
                    if (st != CS_OK) {
                        rc = tool_fail_lib(st, "batch");
                        goto done;
                    }
                }
            }
            const int32_t ret = cs_decode(ctx, batch);
            if (ret != 0) {
                if (ret == CS_NO_KV_SLOT) {
                    tool_error("decode: no KV slot for chunk %d", (int)(i + 1));
                } else {
                    rc = tool_fail_lib((cs_status)ret, "decode");
                }
                goto done;
            }
            /* Score the rows of this decode: position p predicts chunk token p + 1. */
            for (int32_t s = 0; s < n_seq_batch; s++) {
                const int32_t chunk_start = start + s * n_ctx;
                for (int32_t k = 0; k < batch_size; k++) {
                    const int32_t pos = j * n_batch + k;
                    if (pos < first || pos >= n_ctx - 1) continue;
                    const float *logits = cs_get_logits_ith(ctx, s * batch_size + k);
                    if (logits == NULL) {
                        tool_error("decode returned no logits for row %d",
                                   (int)(s * batch_size + k));
                        goto done;
                    }
                    const double v = ppl_nll(logits, n_vocab, tokens[chunk_start + pos + 1]);
                    seq_nll[s] += v;
                    seq_nll2[s] += v * v;
                }
            }
        }
        if (i == 0) {
            const double t_pass = (double)(tool_time_ns() - t_start) / 1e9;
            fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", t_pass,
                    t_pass * n_chunk / n_seq / 60.0);
        }
        for (int32_t s = 0; s < n_seq_batch; s++) {
            nll += seq_nll[s];
            nll2 += seq_nll2[s];
            count += n_ctx - first - 1;
            printf("[%d]%.4f,", (int)(i + s + 1), exp(nll / count));
            fflush(stdout);
        }
    }
    printf("\n");

    nll2 /= count;
    nll /= count;
    const double ppl = exp(nll);
    nll2 -= nll * nll;
    if (nll2 > 0 && count > 1) {
        nll2 = sqrt(nll2 / (count - 1));
        printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, nll2 * ppl);
    } else {
        printf("Final estimate: PPL = %.4f\n", ppl);
        fprintf(stderr, "perplexity: unexpected non-positive variance of log(prob)\n");
    }
    rc = TOOL_EXIT_OK;
done:
    free(seq_nll2);
    free(seq_nll);
    free(tokens);
    cs_batch_free(batch);
    cs_context_free(ctx);
    cs_model_free(model);
    free(text);
    return rc;
}
