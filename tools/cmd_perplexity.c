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
 * goes to stderr.
 *
 * KL divergence (llama-perplexity's --kl-divergence-base / --kl-divergence,
 * kl_divergence()): --kl-divergence-base FILE alone runs the perplexity and
 * also saves the base model's log-probabilities of every scored position
 * in llama.cpp's file format (below), so files are interchangeable; with
 * --kl-divergence the chunks are taken from FILE (the text, when given, must
 * tokenize to the same tokens) and each scored position of this model is
 * compared with the base: KLD, top-1 agreement, ln(PPL(Q)/PPL(base)), Δp.
 *
 * The base file (native byte order, little-endian on the hosts we build):
 *   "_logits_"                       8 bytes
 *   int32 n_ctx, n_vocab, n_chunk
 *   int32 tokens[n_chunk * n_ctx]     the text's tokens, BOS not substituted
 *   per chunk, per scored position (n_ctx - 1 - n_ctx/2 rows), one row of
 *   nv = 2 * ((n_vocab + 1) / 2) + 4 uint16: float scale, float min_log_prob,
 *   then q[n_vocab] (a pad q when n_vocab is odd) with
 *   log p[i] ~= scale * q[i] + min_log_prob over the 16 nats below the top
 *   logit (q = 0 below). The 16-bit steps make a model's KLD against its own
 *   base file not exactly 0: each row's |KLD| stays below scale / 2 plus
 *   the row's rounding of sum p, about 1.3e-4. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "tool_context.h"
#include "tools.h"

typedef struct ppl_opts {
    tool_common common;   /* -m -c -b -t -ctk -ctv -v -h */
    const char *file;     /* the text; optional with --kl-divergence */
    const char *kld_base; /* --kl-divergence-base FILE, or NULL */
    bool kld;             /* --kl-divergence: compare with kld_base */
    int32_t n_chunks;     /* -1: all */
} ppl_opts;

static void ppl_usage(FILE *f) {
    fprintf(
        f,
        "usage: ctxshift perplexity -f FILE [flags]\n"
        "       ctxshift perplexity -f FILE --kl-divergence-base BASE [flags]\n"
        "       ctxshift perplexity --kl-divergence-base BASE --kl-divergence [-f FILE] [flags]\n"
        "\n"
        "Perplexity of a text, computed as llama-perplexity does: chunks of -c tokens, each\n"
        "starting with BOS, scored on their second half. With --kl-divergence-base the\n"
        "log-probabilities of the scored positions are saved to BASE (llama.cpp's format);\n"
        "adding --kl-divergence compares this model with them instead (KL divergence, top-1\n"
        "agreement, PPL ratio) on the tokens BASE holds.\n"
        "\n"
        "  -m,   --model FILE         GGUF model (default: %s)\n"
        "  -f,   --file FILE          the text (at least 2 * c tokens; required unless\n"
        "                             --kl-divergence, which then checks its tokens)\n"
        "  -c,   --ctx-size N         tokens per chunk (default: 512)\n"
        "  -b,   --batch-size N       tokens per decode; b >= 2c scores floor(b / c) chunks\n"
        "                             per decode as separate sequences (default: "
        "2048)\n" TOOL_HELP_THREADS
        "        --chunks N           score at most N chunks; -1 = all (default: "
        "-1)\n"
        "        --kl-divergence-base BASE\n"
        "                             save the log-probabilities to BASE, or read them\n"
        "                             with --kl-divergence\n"
        "        --kl-divergence      compare with BASE (its -c and chunks are "
        "used)\n" TOOL_HELP_CACHE_TYPES TOOL_HELP_VERBOSE TOOL_HELP_HELP,
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
        } else if (tool_arg_is(a, NULL, "--kl-divergence-base")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->kld_base = v;
        } else if (tool_arg_is(a, NULL, "--kl-divergence")) {
            o->kld = true;
        } else {
            rc = tool_arg_unknown("perplexity", a);
        }
        if (rc != 0) return rc;
    }
    if (o->common.help) return 0;
    if (o->kld && o->kld_base == NULL) {
        tool_error("perplexity: --kl-divergence needs --kl-divergence-base BASE");
        return TOOL_EXIT_USAGE;
    }
    if (!o->kld && o->file == NULL) {
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

/* ------------------------------------------------------------ KL divergence */

/* Row layout of the base file: two floats (scale, min_log_prob) as four
 * uint16, then n_vocab values padded to an even count. */
static size_t kld_row_len(int32_t n_vocab) {
    return 2 * (((size_t)n_vocab + 1) / 2) + 4;
}

/* One base row from a logits row, as llama-perplexity's log_softmax with a
 * log_prob output: log p is stored on 65535 steps over the 16 nats below the
 * top logit (less when the logits span less), 0 below. Returns -log p(tok)
 * with llama's float arithmetic. row has kld_row_len(n_vocab) entries; the
 * pad entry is left as it is (the caller zeroes it once). Cost O(n_vocab). */
static double kld_base_row(const float *logits, int32_t n_vocab, cs_token tok, uint16_t *row) {
    float max_logit = logits[0];
    float min_logit = logits[0];
    for (int32_t i = 1; i < n_vocab; i++) {
        if (logits[i] > max_logit) max_logit = logits[i];
        if (logits[i] < min_logit) min_logit = logits[i];
    }
    if (min_logit < max_logit - 16) min_logit = max_logit - 16;
    double sum_exp = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) sum_exp += (double)expf(logits[i] - max_logit);
    const float log_sum_exp = (float)log(sum_exp);
    const float min_log_prob = min_logit - max_logit - log_sum_exp;
    const float scale = (max_logit - min_logit) / 65535.f;
    memcpy(row, &scale, sizeof(float));
    memcpy(row + 2, &min_log_prob, sizeof(float));
    uint16_t *q = row + 4;
    if (scale != 0.0f) {
        const float inv_scale = 1.0f / scale;
        for (int32_t i = 0; i < n_vocab; i++) {
            if (logits[i] > min_logit) {
                const long v = lrintf(inv_scale * (logits[i] - min_logit));
                q[i] = (uint16_t)(v > 65535 ? 65535 : v);
            } else {
                q[i] = 0;
            }
        }
    } else {
        memset(q, 0, (size_t)n_vocab * sizeof(uint16_t));
    }
    return (double)(max_logit + log_sum_exp - logits[tok]);
}

/* The sums llama-perplexity's kl_divergence keeps over scored positions. */
typedef struct kld_sums {
    double nll, nll2;           /* -log p(tok) of this model */
    double nll_base, nll_base2; /* of the base */
    double nll_nll_base;
    double kld, kld2;
    double p_diff, p_diff2, p_diff4; /* p(tok) - p_base(tok) */
    float max_p_diff;
    int64_t n_same_top; /* positions whose arg-max agrees */
    int64_t count;
} kld_sums;

static void kld_sums_add(kld_sums *to, const kld_sums *k) {
    to->nll += k->nll;
    to->nll2 += k->nll2;
    to->nll_base += k->nll_base;
    to->nll_base2 += k->nll_base2;
    to->nll_nll_base += k->nll_nll_base;
    to->kld += k->kld;
    to->kld2 += k->kld2;
    to->p_diff += k->p_diff;
    to->p_diff2 += k->p_diff2;
    to->p_diff4 += k->p_diff4;
    if (k->max_p_diff > to->max_p_diff) to->max_p_diff = k->max_p_diff;
    to->n_same_top += k->n_same_top;
    to->count += k->count;
}

/* Compare one logits row with its base row (llama's log_softmax with a
 * base_log_prob input, same float / double types): KLD(base || this) over
 * the base entries above -16 nats, the arg-maxes (first of equals), the
 * probabilities of tok. Adds to k; *kld_out and *p_diff_out receive the
 * position's values. tok is in [0, n_vocab). Cost O(n_vocab). */
static void kld_compare_row(const float *logits, int32_t n_vocab, const uint16_t *row, cs_token tok,
                            kld_sums *k, float *kld_out, float *p_diff_out) {
    float max_logit = logits[0];
    int32_t imax = 0;
    for (int32_t i = 1; i < n_vocab; i++) {
        if (logits[i] > max_logit) {
            max_logit = logits[i];
            imax = i;
        }
    }
    double sum_exp = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) sum_exp += (double)expf(logits[i] - max_logit);
    const float log_sum_exp = (float)log(sum_exp);
    float scale, min_log_prob;
    memcpy(&scale, row, sizeof(float));
    memcpy(&min_log_prob, row + 2, sizeof(float));
    const uint16_t *q = row + 4;

    const float nll = max_logit + log_sum_exp - logits[tok];
    k->nll += (double)nll;
    k->nll2 += (double)(nll * nll);
    const float nll_base = -(scale * q[tok] + min_log_prob);
    k->nll_base += (double)nll_base;
    k->nll_base2 += (double)(nll_base * nll_base);
    k->nll_nll_base += (double)(nll * nll_base);

    const float log_norm = max_logit + log_sum_exp;
    double sum = 0.0;
    int32_t imax_base = 0;
    float p_log_base_max = 0.0f;
    for (int32_t i = 0; i < n_vocab; i++) {
        const float p_log_base = scale * q[i] + min_log_prob;
        if (i == 0 || p_log_base > p_log_base_max) {
            p_log_base_max = p_log_base;
            imax_base = i;
        }
        if (p_log_base > -16.f) {
            const float p_base = expf(p_log_base);
            sum += (double)(p_base * (p_log_base - logits[i] + log_norm));
        }
    }
    k->kld += sum;
    k->kld2 += sum * sum;
    k->count++;
    if (imax == imax_base) k->n_same_top++;

    const float p_base = expf(-nll_base);
    const float p = expf(-nll);
    const float p_diff = p - p_base;
    k->p_diff += (double)p_diff;
    const double p_diff2 = (double)(p_diff * p_diff);
    k->p_diff2 += p_diff2;
    k->p_diff4 += p_diff2 * p_diff2;
    if (fabsf(p_diff) > k->max_p_diff) k->max_p_diff = fabsf(p_diff);
    *kld_out = (float)sum;
    *p_diff_out = p_diff;
}

/* Mean of sum / count and its standard error (0 for count <= 10 or a
 * non-positive variance), as llama-perplexity. */
static void kld_mean(double sum, double sum2, int64_t count, double *mean, double *err) {
    *mean = *err = 0.0;
    if (count < 1) return;
    const double f = sum / (double)count;
    const double df = sum2 / (double)count - f * f;
    *mean = f;
    *err = df > 0 && count > 10 ? sqrt(df / (double)(count - 1)) : 0.0;
}

/* Covariance of the two means (0 under 10 values), as llama-perplexity. */
static double kld_cov(double suma, double sumb, double sumab, int64_t count) {
    if (count < 10) return 0.0;
    const double n = (double)count;
    return (sumab / n - (suma / n) * (sumb / n)) / (n - 1);
}

/* sqrt of a value that rounding may have pushed below 0. */
static double kld_sqrt0(double v) {
    return v > 0 ? sqrt(v) : 0.0;
}

/* ------------------------------------------------------------ state */

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
    /* --kl-divergence-base / --kl-divergence */
    FILE *base;           /* the base file, being written or read */
    bool base_written;    /* a base file was created (removed on failure) */
    int32_t base_n_vocab; /* header of a base file being read */
    int32_t base_n_chunk; /* */
    uint16_t *row;        /* one base row, kld_row_len(n_vocab) */
    kld_sums *seq_kld;    /* per sequence of one decode group, n_seq */
    kld_sums kld;         /* over the chunks done */
    float *kld_values;    /* per scored position, n_values of them */
    float *p_diff_values; /* */
    size_t n_values;      /* */
} ppl_state;

static void ppl_free(ppl_state *st, int rc) {
    if (st->base != NULL) fclose(st->base);
    if (rc != 0 && st->base_written) remove(st->o.kld_base);
    free(st->p_diff_values);
    free(st->kld_values);
    free(st->seq_kld);
    free(st->row);
    free(st->seq_nll2);
    free(st->seq_nll);
    free(st->tokens);
    cs_batch_free(st->batch);
    cs_context_free(st->ctx);
    cs_model_free(st->model);
    free(st->text);
}

/* Read exactly n bytes of the base file; a short read is a truncated file. */
static int kld_read(ppl_state *st, void *dst, size_t n, const char *what) {
    if (fread(dst, 1, n, st->base) != n) {
        tool_error("%s: truncated or unreadable base file: cannot read %s", st->o.kld_base, what);
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* Open a base file for --kl-divergence and check its header: the magic,
 * n_ctx (in -c's range, equal to -c when -c was given), n_vocab, n_chunk,
 * and that the file is as long as they say (so a truncated file fails here,
 * before any decode). Sets st->n_ctx. Cost O(1). */
static int kld_open_base(ppl_state *st) {
    const char *path = st->o.kld_base;
    st->base = fopen(path, "rb");
    if (st->base == NULL) {
        tool_error("%s: cannot open the base file", path);
        return TOOL_EXIT_FAIL;
    }
    char magic[8];
    int32_t head[3];
    int rc = kld_read(st, magic, sizeof(magic), "the magic");
    if (rc == 0 && memcmp(magic, "_logits_", 8) != 0) {
        tool_error("%s: not a log-probabilities file (no '_logits_' magic)", path);
        return TOOL_EXIT_FAIL;
    }
    if (rc == 0) rc = kld_read(st, head, sizeof(head), "n_ctx, n_vocab, n_chunk");
    if (rc != 0) return rc;
    const int32_t n_ctx = head[0], n_vocab = head[1], n_chunk = head[2];
    if (n_ctx < st->o.common.ctx_min || n_ctx > st->o.common.ctx_max) {
        tool_error("%s: n_ctx %d is out of range [%d, %d]", path, (int)n_ctx,
                   (int)st->o.common.ctx_min, (int)st->o.common.ctx_max);
        return TOOL_EXIT_FAIL;
    }
    if (st->o.common.n_ctx != 0 && st->o.common.n_ctx != n_ctx) {
        tool_error("%s: n_ctx mismatch: the base file was computed with -c %d, this run has -c %d",
                   path, (int)n_ctx, (int)st->o.common.n_ctx);
        return TOOL_EXIT_FAIL;
    }
    if (n_vocab < 1 || n_chunk < 1) {
        tool_error("%s: bad header: n_vocab %d, n_chunk %d", path, (int)n_vocab, (int)n_chunk);
        return TOOL_EXIT_FAIL;
    }
    /* Expected size in uint64: the token bytes stay below 2^57; the rows are
     * checked against overflow before they are added. */
    const uint64_t head_bytes = 8 + sizeof(head) + 4ull * (uint64_t)n_chunk * (uint64_t)n_ctx;
    const uint64_t rows = (uint64_t)n_chunk * (uint64_t)(n_ctx - 1 - n_ctx / 2);
    const uint64_t row_bytes = 2ull * kld_row_len(n_vocab);
    long size = -1;
    if (fseek(st->base, 0, SEEK_END) == 0) size = ftell(st->base);
    if (size < 0 || fseek(st->base, (long)(8 + sizeof(head)), SEEK_SET) != 0) {
        tool_error("%s: cannot seek the base file", path);
        return TOOL_EXIT_FAIL;
    }
    if (rows > (UINT64_MAX - head_bytes) / row_bytes ||
        head_bytes + rows * row_bytes != (uint64_t)size) {
        tool_error("%s: truncated or padded base file: %ld bytes, its header (n_ctx %d, n_vocab "
                   "%d, n_chunk %d) says %.0f",
                   path, size, (int)n_ctx, (int)n_vocab, (int)n_chunk,
                   (double)head_bytes + (double)rows * (double)row_bytes);
        return TOOL_EXIT_FAIL;
    }
    st->n_ctx = n_ctx;
    st->base_n_vocab = n_vocab;
    st->base_n_chunk = n_chunk;
    return 0;
}

/* Read the text, load the model, size the context as llama-perplexity's
 * main(): n_seq chunks per decode when the batch holds several; capped by
 * the context's sequence limit (64). With --kl-divergence the base file's
 * header gives n_ctx first. */
static int ppl_load(ppl_state *st) {
    const ppl_opts *o = &st->o;
    int rc = 0;
    if (o->kld) {
        if ((rc = kld_open_base(st)) != 0) return rc;
    } else {
        st->n_ctx = o->common.n_ctx != 0 ? o->common.n_ctx : 512;
    }
    if (o->file != NULL) rc = tool_read_file(o->file, &st->text, &st->text_len);
    if (rc == 0) rc = tool_load_model(o->common.model, false, &st->model);
    if (rc != 0) return rc;

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

/* --kl-divergence: the tokens come from the base file; they must be tokens
 * of this model, and the text, when given, must tokenize to them (the
 * first n_chunk * n_ctx tokens). Cost O(n_chunk * n_ctx). */
static int kld_read_tokens(ppl_state *st) {
    const char *path = st->o.kld_base;
    if (st->base_n_vocab != st->n_vocab) {
        tool_error("%s: n_vocab mismatch: the base file has %d, the model %d", path,
                   (int)st->base_n_vocab, (int)st->n_vocab);
        return TOOL_EXIT_FAIL;
    }
    const size_t n = (size_t)st->base_n_chunk * (size_t)st->n_ctx;
    cs_token *tokens = malloc(n * sizeof(cs_token));
    if (tokens == NULL) {
        tool_error("out of memory");
        return TOOL_EXIT_FAIL;
    }
    int rc = kld_read(st, tokens, n * sizeof(cs_token), "the tokens");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= st->n_vocab) {
            tool_error("%s: token %zu is %d, outside the model's vocabulary [0, %d)", path, i,
                       (int)tokens[i], (int)st->n_vocab);
            rc = TOOL_EXIT_FAIL;
        }
    }
    if (rc == 0 && st->text != NULL) {
        if ((size_t)st->n_tokens < n) {
            tool_error("%s: tokens mismatch: the base file holds %d chunks of %d = %zu tokens, "
                       "the text tokenizes to %d",
                       path, (int)st->base_n_chunk, (int)st->n_ctx, n, (int)st->n_tokens);
            rc = TOOL_EXIT_FAIL;
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (tokens[i] != st->tokens[i]) {
                tool_error("%s: tokens mismatch at token %zu: the base file has %d, the text %d",
                           path, i, (int)tokens[i], (int)st->tokens[i]);
                rc = TOOL_EXIT_FAIL;
            }
        }
    }
    free(st->tokens);
    st->tokens = tokens;
    st->n_tokens = (int32_t)n;
    return rc;
}

/* --kl-divergence-base without --kl-divergence: create the file and write
 * the header and the tokens of the chunks that will be scored. */
static int kld_write_header(ppl_state *st) {
    const char *path = st->o.kld_base;
    st->base = fopen(path, "wb");
    if (st->base == NULL) {
        tool_error("%s: cannot create the base file", path);
        return TOOL_EXIT_FAIL;
    }
    st->base_written = true;
    fprintf(stderr, "perplexity: saving all logits to %s\n", path);
    const int32_t head[3] = {st->n_ctx, st->n_vocab, st->n_chunk};
    const size_t n = (size_t)st->n_chunk * (size_t)st->n_ctx;
    if (fwrite("_logits_", 1, 8, st->base) != 8 || fwrite(head, sizeof(head), 1, st->base) != 1 ||
        fwrite(st->tokens, sizeof(cs_token), n, st->base) != n) {
        tool_error("%s: write failed", path);
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* Tokenize the text, check that it holds two chunks, work out the chunk
 * count and print the plan. With --kl-divergence the chunks are the base
 * file's. */
static int ppl_prepare(ppl_state *st) {
    const bool kld = st->o.kld;
    const int32_t n_ctx = st->n_ctx;
    st->n_vocab = cs_model_n_vocab(st->model);
    if (st->text != NULL) {
        const uint64_t t_tok = tool_time_ns();
        int rc = tool_tokenize(st->model, st->text, st->text_len, true, false, &st->tokens,
                               &st->n_tokens);
        if (rc != 0) return rc;
        fprintf(stderr, "perplexity: tokenization took %g ms\n",
                (double)(tool_time_ns() - t_tok) / 1e6);
        if (!kld && st->n_tokens < 2 * n_ctx) {
            tool_error(
                "perplexity: the text tokenizes to %d tokens; a context of %d needs at least %d",
                (int)st->n_tokens, (int)n_ctx, (int)(2 * n_ctx));
            return TOOL_EXIT_FAIL;
        }
    }
    if (kld) {
        const int rc = kld_read_tokens(st);
        if (rc != 0) return rc;
    }

    const int32_t n_chunk_max = st->n_tokens / n_ctx;
    const int32_t n_chunks = st->o.n_chunks;
    st->n_chunk = n_chunks < 0 || n_chunks > n_chunk_max ? n_chunk_max : n_chunks;
    st->add_bos = cs_vocab_add_bos(st->model) && cs_token_bos(st->model) >= 0;
    st->bos = cs_token_bos(st->model);
    st->first = n_ctx / 2;
    fprintf(stderr,
            "perplexity: calculating %s over %d chunks, n_ctx=%d, batch_size=%d, "
            "n_seq=%d\n",
            kld ? "KL divergence" : "perplexity", (int)st->n_chunk, (int)n_ctx, (int)st->n_batch,
            (int)st->n_seq);

    st->seq_nll = calloc((size_t)st->n_seq, sizeof(double));
    st->seq_nll2 = calloc((size_t)st->n_seq, sizeof(double));
    if (st->seq_nll == NULL || st->seq_nll2 == NULL) {
        tool_error("out of memory");
        return TOOL_EXIT_FAIL;
    }
    if (st->o.kld_base != NULL) {
        st->row = calloc(kld_row_len(st->n_vocab), sizeof(uint16_t));
        if (st->row == NULL) {
            tool_error("out of memory");
            return TOOL_EXIT_FAIL;
        }
    }
    if (kld) {
        const size_t n = (size_t)st->n_chunk * (size_t)(n_ctx - 1 - st->first);
        st->seq_kld = calloc((size_t)st->n_seq, sizeof(kld_sums));
        st->kld_values = malloc((n > 0 ? n : 1) * sizeof(float));
        st->p_diff_values = malloc((n > 0 ? n : 1) * sizeof(float));
        if (st->seq_kld == NULL || st->kld_values == NULL || st->p_diff_values == NULL) {
            tool_error("out of memory");
            return TOOL_EXIT_FAIL;
        }
    } else if (st->o.kld_base != NULL) {
        return kld_write_header(st);
    }
    return 0;
}

/* Score one logits row of sequence s predicting tok: -log p into the
 * sequence's sums; with a base file being written its row goes out, with
 * one being read its row is compared. Rows come in chunk order, then
 * position order, which is the file's. */
static int ppl_score_row(ppl_state *st, const float *logits, int32_t s, cs_token tok) {
    const size_t row_len = kld_row_len(st->n_vocab);
    if (st->o.kld) {
        if (kld_read(st, st->row, row_len * sizeof(uint16_t), "a log-probabilities row") != 0)
            return TOOL_EXIT_FAIL;
        kld_compare_row(logits, st->n_vocab, st->row, tok, &st->seq_kld[s],
                        &st->kld_values[st->n_values], &st->p_diff_values[st->n_values]);
        st->n_values++;
        return 0;
    }
    double v;
    if (st->base != NULL) {
        v = kld_base_row(logits, st->n_vocab, tok, st->row);
        if (fwrite(st->row, sizeof(uint16_t), row_len, st->base) != row_len) {
            tool_error("%s: write failed", st->o.kld_base);
            return TOOL_EXIT_FAIL;
        }
    } else {
        v = ppl_nll(logits, st->n_vocab, tok);
    }
    st->seq_nll[s] += v;
    st->seq_nll2[s] += v * v;
    return 0;
}

/* Decode batch j of the chunks [i, i + n_seq_batch) starting at token
 * `start`, one sequence per chunk (first token BOS), and score its rows:
 * position p predicts chunk token p + 1. */
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
    int rc = tool_decode(st->ctx, st->batch, "decode: no KV slot for chunk %d", (int)(i + 1));
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
            rc = ppl_score_row(st, logits, s, st->tokens[chunk_start + pos + 1]);
            if (rc != 0) return rc;
        }
    }
    return 0;
}

/* One line of llama-perplexity's KL divergence table: the running values
 * after chunk `chunk`. */
static void kld_print_chunk(const kld_sums *k, int32_t chunk) {
    double lp, lp_err, lb, lb_err, kl, kl_err, mse, mse_err;
    kld_mean(k->nll, k->nll2, k->count, &lp, &lp_err);
    kld_mean(k->nll_base, k->nll_base2, k->count, &lb, &lb_err);
    kld_mean(k->kld, k->kld2, k->count, &kl, &kl_err);
    kld_mean(k->p_diff2, k->p_diff4, k->count, &mse, &mse_err);
    const double cov = kld_cov(k->nll, k->nll_base, k->nll_nll_base, k->count);
    const double rms = sqrt(mse);
    const double top = (double)k->n_same_top / (double)k->count;
    printf("%4d", (int)chunk);
    printf("    %9.4f ± %9.4f", exp(lp), exp(lp) * lp_err);
    printf("    %10.5f ± %10.5f", lp - lb,
           kld_sqrt0(lp_err * lp_err + lb_err * lb_err - 2.0 * cov));
    printf("    %10.5f ± %10.5f", kl, kl_err);
    printf("    %6.3f ± %6.3f %%", 100.0 * rms, rms > 0 ? 100.0 * 0.5 / rms * mse_err : 0.0);
    printf("    %6.3f ± %6.3f %%\n", 100.0 * top,
           k->count > 1 ? 100.0 * sqrt(top * (1 - top) / (double)(k->count - 1)) : 0.0);
}

/* Score every chunk, n_seq per pass from an empty cache, printing the
 * running estimate (or KL divergence line) after each chunk. */
static int ppl_score(ppl_state *st) {
    const int32_t n_ctx = st->n_ctx, n_seq = st->n_seq, n_chunk = st->n_chunk;
    const int32_t num_batches = (n_ctx + st->n_batch - 1) / st->n_batch;
    if (st->o.kld) {
        printf("\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence  "
               "            Δp RMS            Same top p\n");
    }
    for (int32_t i = 0; i < n_chunk; i += n_seq) {
        const int32_t start = i * n_ctx;
        const int32_t n_seq_batch = n_seq < n_chunk - i ? n_seq : n_chunk - i;
        const uint64_t t_start = tool_time_ns();
        cs_kv_clear(st->ctx);
        for (int32_t s = 0; s < n_seq_batch; s++) st->seq_nll[s] = st->seq_nll2[s] = 0.0;
        if (st->seq_kld != NULL) memset(st->seq_kld, 0, (size_t)n_seq * sizeof(kld_sums));
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
            if (st->o.kld) {
                kld_sums_add(&st->kld, &st->seq_kld[s]);
                kld_print_chunk(&st->kld, i + s + 1);
                fflush(stdout);
                continue;
            }
            st->nll += st->seq_nll[s];
            st->nll2 += st->seq_nll2[s];
            st->count += n_ctx - st->first - 1;
            printf("[%d]%.4f,", (int)(i + s + 1), exp(st->nll / st->count));
            fflush(stdout);
        }
    }
    printf("\n");
    if (st->base != NULL && !st->o.kld) {
        const int rc = fclose(st->base);
        st->base = NULL;
        if (rc != 0) {
            tool_error("%s: write failed", st->o.kld_base);
            return TOOL_EXIT_FAIL;
        }
    }
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

static int kld_cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* llama-perplexity's percentile of sorted values[0, n): linear between the
 * two nearest ranks, in float. */
static float kld_percentile(const float *v, size_t n, float fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    const size_t ip = (size_t)p;
    p -= (float)ip;
    return (1 - p) * v[ip] + p * v[ip + 1 < n ? ip + 1 : n - 1];
}

static float kld_median(const float *v, size_t n) {
    return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

/* The three statistics blocks of llama-perplexity's kl_divergence, to
 * stdout; like llama.cpp, none under 100 scored positions. Sorts the
 * per-position values: O(n log n). */
static void kld_report(ppl_state *st) {
    const kld_sums *k = &st->kld;
    const size_t n = st->n_values;
    if (k->count < 100) {
        fprintf(stderr,
                "perplexity: %lld scored positions; the statistics need at least 100 (as "
                "llama-perplexity)\n",
                (long long)k->count);
        return;
    }
    qsort(st->kld_values, n, sizeof(float), kld_cmp_float);
    qsort(st->p_diff_values, n, sizeof(float), kld_cmp_float);

    double lp, lp_err, lb, lb_err;
    kld_mean(k->nll, k->nll2, k->count, &lp, &lp_err);
    kld_mean(k->nll_base, k->nll_base2, k->count, &lb, &lb_err);
    const double ppl = exp(lp), ppl_err = ppl * lp_err;
    const double ppl_base = exp(lb), ppl_base_err = ppl_base * lb_err;
    const double cov = kld_cov(k->nll, k->nll_base, k->nll_nll_base, k->count);
    const double cor = lp_err * lb_err > 0 ? cov / (lp_err * lb_err) : 0.0;
    const double ratio = lp - lb;
    const double ratio_err = kld_sqrt0(lp_err * lp_err + lb_err * lb_err - 2.0 * cov);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", ppl, ppl_err);
    printf("Mean PPL(base)                : %10.6f ± %10.6f\n", ppl_base, ppl_base_err);
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * cor);
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", ratio, ratio_err);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", exp(ratio), exp(ratio) * ratio_err);
    printf("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", ppl - ppl_base,
           kld_sqrt0(ppl_err * ppl_err + ppl_base_err * ppl_base_err - 2.0 * ppl * ppl_base * cov));
    printf("\n");

    double kl, kl_err;
    kld_mean(k->kld, k->kld2, k->count, &kl, &kl_err);
    const float *kv = st->kld_values;
    printf("====== KL divergence statistics ======\n");
    printf("Mean    KLD: %10.6f ± %10.6f\n", kl, kl_err);
    printf("Maximum KLD: %10.6f\n", (double)kv[n - 1]);
    static const struct {
        const char *name;
        float fraction;
    } kq[] = {{"99.9%", 0.999f}, {"99.0%", 0.990f}, {"95.0%", 0.950f},
              {"90.0%", 0.900f}, {NULL, 0.5f},      {"10.0%", 0.100f},
              {" 5.0%", 0.050f}, {" 1.0%", 0.010f}, {" 0.1%", 0.001f}};
    for (size_t q = 0; q < sizeof(kq) / sizeof(kq[0]); q++) {
        if (kq[q].name == NULL) {
            printf("Median  KLD: %10.6f\n", (double)kld_median(kv, n));
        } else {
            printf("%s   KLD: %10.6f\n", kq[q].name, (double)kld_percentile(kv, n, kq[q].fraction));
        }
    }
    printf("Minimum KLD: %10.6f\n", (double)kv[0]);
    printf("\n");

    double pd, pd_err, mse, mse_err;
    kld_mean(k->p_diff, k->p_diff2, k->count, &pd, &pd_err);
    const float *pv = st->p_diff_values;
    printf("====== Token probability statistics ======\n");
    printf("Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * pd, 100.0 * pd_err);
    printf("Maximum Δp: %6.3f%%\n", 100.0 * (double)pv[n - 1]);
    static const struct {
        const char *name;
        float fraction;
    } pq[] = {{"99.9%", 0.999f}, {"99.0%", 0.990f}, {"95.0%", 0.950f}, {"90.0%", 0.900f},
              {"75.0%", 0.750f}, {NULL, 0.5f},      {"25.0%", 0.250f}, {"10.0%", 0.100f},
              {" 5.0%", 0.050f}, {" 1.0%", 0.010f}, {" 0.1%", 0.001f}};
    for (size_t q = 0; q < sizeof(pq) / sizeof(pq[0]); q++) {
        if (pq[q].name == NULL) {
            printf("Median  Δp: %6.3f%%\n", 100.0 * (double)kld_median(pv, n));
        } else {
            printf("%s   Δp: %6.3f%%\n", pq[q].name,
                   100.0 * (double)kld_percentile(pv, n, pq[q].fraction));
        }
    }
    printf("Minimum Δp: %6.3f%%\n", 100.0 * (double)pv[0]);
    kld_mean(k->p_diff2, k->p_diff4, k->count, &mse, &mse_err);
    const double rms = sqrt(mse);
    printf("RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * rms,
           rms > 0 ? 100.0 * 0.5 / rms * mse_err : 0.0);
    const double top = (double)k->n_same_top / (double)k->count;
    printf("Same top p: %6.3f ± %5.3f %%\n", 100.0 * top,
           100.0 * sqrt(top * (1.0 - top) / (double)(k->count - 1)));
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
    st.o.common.n_ctx = 0; /* unset: 512, or the base file's with --kl-divergence */
    st.o.common.ctx_min = 4;
    st.o.common.ctx_max = 1 << 24;
    st.o.common.batch_max = 1 << 24;
    int rc = ppl_parse(argc, argv, &st.o);
    if (!tool_begin(&rc, &st.o.common, ppl_usage)) return rc;

    if ((rc = ppl_load(&st)) != 0) goto done;
    if ((rc = ppl_prepare(&st)) != 0) goto done;
    if ((rc = ppl_score(&st)) != 0) goto done;
    if (st.o.kld) {
        kld_report(&st);
    } else {
        ppl_report(&st);
    }
done:
    ppl_free(&st, rc);
    return rc;
}
