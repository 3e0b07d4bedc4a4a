/* llama_kld.c: llama-perplexity's --kl-divergence-base / --kl-divergence on
 * the PREBUILT libllama of node-llama-cpp 3.21.1 (bench/peer), so ctxshift's
 * KL divergence can be set beside llama.cpp's for the same files without a
 * llama-perplexity binary. Built by tests/kld_peer_test.sh and
 * bench/kld_table.sh with tests/cli_lib.sh `peer_build` (the headers of the
 * llama.cpp source node-llama-cpp bundles); not part of the CMake build.
 *
 *   llama_kld BACKEND_DIR -m MODEL --kl-divergence-base BASE [-f TEXT]
 *             [--kl-divergence] [-c 512] [-b 2048] [--chunks -1] [-t N]
 *             [-ctk f16|f32] [--fa auto|on|off]
 *
 * What it does is tools/perplexity/perplexity.cpp's perplexity() and
 * kl_divergence() of that source (80fb11ac), re-written in C:
 *  - the text is tokenized with add_special (BOS when the vocabulary adds
 *    it) and parse_special off, and cut into n_chunk = n_tokens / n_ctx
 *    chunks (at most --chunks); n_seq = max(1, b / c) chunks share one
 *    decode as separate sequences, each from an empty cache, its first
 *    token replaced by BOS in the first batch;
 *  - only positions [n_ctx/2, n_ctx - 1) are scored (logit row p predicts
 *    chunk token p + 1);
 *  - without --kl-divergence: writes BASE ("_logits_", int32 n_ctx,
 *    n_vocab, n_chunk, int32 tokens[n_chunk * n_ctx], then per scored row
 *    nv = 2 * ((n_vocab + 1) / 2) + 4 uint16: float scale, float
 *    min_log_prob, n_vocab uint16 q with log p ~= scale * q + min_log_prob
 *    over the 16 nats below the top logit, pad 0) and prints the perplexity
 *    ("[i]ppl," then "Final estimate: PPL = x +/- y");
 *  - with --kl-divergence: the chunks are BASE's tokens (the text is not
 *    needed), each scored row is compared with BASE's row and the per-chunk
 *    table and the three statistics blocks are printed as llama-perplexity
 *    prints them (stdout; progress and errors on stderr).
 * Context defaults are llama-perplexity's: F16 KV cache, flash attention
 * auto, n_ubatch 512. Exit 1 on any error. Cost: n_chunk * n_ctx tokens
 * decoded, O(n_vocab) per scored row, O(n log n) for the percentiles. */
#include <ggml-backend.h>
#include <llama.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lk_opts {
    const char *backend_dir, *model, *text, *base;
    bool kld;
    int n_ctx, n_batch, n_chunks, threads;
    enum ggml_type type_k;
    enum llama_flash_attn_type fa;
} lk_opts;

/* Sums over the scored rows, as kl_divergence_result. */
typedef struct lk_sums {
    double nll, nll2, nll_base, nll_base2, nll_nll_base, kld, kld2;
    double p_diff, p_diff2, p_diff4;
    float max_p_diff;
    int64_t n_same_top, count;
} lk_sums;

typedef struct lk_state {
    lk_opts o;
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    struct llama_batch batch;
    bool batch_ok;
    llama_token *tokens;
    int n_tokens, n_ctx, n_vocab, n_chunk, n_seq, n_batch, first;
    size_t nv; /* uint16 per base row */
    uint16_t *row;
    FILE *base;
    double nll, nll2; /* perplexity sums (base writing) */
    int64_t count;
    lk_sums k;
    float *kld_values, *p_diff_values;
    size_t n_values;
} lk_state;

static void lk_quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int lk_int(const char *s, int lo, int hi, const char *what) {
    char *end = NULL;
    const long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "llama_kld: %s '%s' is not in %d..%d\n", what, s, lo, hi);
        exit(1);
    }
    return (int)v;
}

static void lk_usage(void) {
    fprintf(stderr, "usage: llama_kld BACKEND_DIR -m MODEL --kl-divergence-base BASE [-f TEXT]\n"
                    "                 [--kl-divergence] [-c 512] [-b 2048] [--chunks -1] [-t N]\n"
                    "                 [-ctk f16|f32] [--fa auto|on|off]\n");
    exit(1);
}

static void lk_parse(int argc, char **argv, lk_opts *o) {
    if (argc < 2) lk_usage();
    *o = (lk_opts){.backend_dir = argv[1],
                   .n_ctx = 512,
                   .n_batch = 2048,
                   .n_chunks = -1,
                   .threads = 2,
                   .type_k = GGML_TYPE_F16,
                   .fa = LLAMA_FLASH_ATTN_TYPE_AUTO};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--kl-divergence") == 0) {
            o->kld = true;
            continue;
        }
        if (i + 1 >= argc) lk_usage();
        const char *v = argv[++i];
        if (strcmp(a, "-m") == 0) {
            o->model = v;
        } else if (strcmp(a, "-f") == 0) {
            o->text = v;
        } else if (strcmp(a, "--kl-divergence-base") == 0) {
            o->base = v;
        } else if (strcmp(a, "-c") == 0) {
            o->n_ctx = lk_int(v, 4, 1 << 20, "-c");
        } else if (strcmp(a, "-b") == 0) {
            o->n_batch = lk_int(v, 1, 1 << 24, "-b");
        } else if (strcmp(a, "--chunks") == 0) {
            o->n_chunks = lk_int(v, -1, 1 << 30, "--chunks");
        } else if (strcmp(a, "-t") == 0) {
            o->threads = lk_int(v, 1, 512, "-t");
        } else if (strcmp(a, "-ctk") == 0) {
            if (strcmp(v, "f16") == 0) {
                o->type_k = GGML_TYPE_F16;
            } else if (strcmp(v, "f32") == 0) {
                o->type_k = GGML_TYPE_F32;
            } else {
                lk_usage();
            }
        } else if (strcmp(a, "--fa") == 0) {
            o->fa = strcmp(v, "on") == 0    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                    : strcmp(v, "off") == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                            : LLAMA_FLASH_ATTN_TYPE_AUTO;
        } else {
            lk_usage();
        }
    }
    if (o->model == NULL || o->base == NULL || (!o->kld && o->text == NULL)) lk_usage();
}

/* ------------------------------------------------------------ one row */

/* llama.cpp's nearest_int: round to nearest, ties to even, through the
 * float mantissa (|x| < 2^22). */
static int lk_nearest_int(float x) {
    const float v = x + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof(i));
    return (i & 0x007fffff) - 0x00400000;
}

/* The row of the base file for one logits row (perplexity.cpp's
 * log_softmax with a uint16 output, its float / double mix kept so the
 * bytes match); returns -log p(tok). row has nv entries, the pad zeroed by
 * the caller. Cost O(n_vocab). */
static double lk_base_row(const float *lg, int n_vocab, uint16_t *row, int tok) {
    float max_logit = lg[0], min_logit = lg[0];
    for (int i = 1; i < n_vocab; i++) {
        if (lg[i] > max_logit) max_logit = lg[i];
        if (lg[i] < min_logit) min_logit = lg[i];
    }
    if (max_logit - 16 > min_logit) min_logit = max_logit - 16;
    double sum_exp = 0.0;
    for (int i = 0; i < n_vocab; i++) sum_exp += expf(lg[i] - max_logit);
    const float log_sum_exp = (float)log(sum_exp);
    const float min_log_prob = min_logit - max_logit - log_sum_exp;
    const float scale = (max_logit - min_logit) / 65535.f;
    memcpy(row, &scale, sizeof(scale));
    memcpy(row + 2, &min_log_prob, sizeof(min_log_prob));
    uint16_t *q = row + 4;
    if (scale != 0.f) {
        const float inv = 1 / scale;
        for (int i = 0; i < n_vocab; i++)
            q[i] = lg[i] > min_logit ? (uint16_t)lk_nearest_int(inv * (lg[i] - min_logit)) : 0;
    } else {
        memset(q, 0, sizeof(*q) * (size_t)n_vocab);
    }
    return max_logit + log_sum_exp - lg[tok];
}

/* One logits row against its base row (perplexity.cpp's log_softmax with a
 * uint16 input): KLD(base || this) over the base entries above -16 nats,
 * the arg-maxes (first of equals), p(tok) - p_base(tok). Cost O(n_vocab). */
static void lk_compare_row(lk_state *st, const float *lg, const uint16_t *row, int tok) {
    const int n_vocab = st->n_vocab;
    lk_sums *k = &st->k;
    float max_logit = lg[0];
    int imax = 0;
    for (int i = 1; i < n_vocab; i++) {
        if (lg[i] > max_logit) {
            max_logit = lg[i];
            imax = i;
        }
    }
    double sum_exp = 0.0;
    for (int i = 0; i < n_vocab; i++) sum_exp += expf(lg[i] - max_logit);
    const float log_sum_exp = (float)log(sum_exp);
    float scale, min_log_prob;
    memcpy(&scale, row, sizeof(scale));
    memcpy(&min_log_prob, row + 2, sizeof(min_log_prob));
    const uint16_t *q = row + 4;
    const float nll = max_logit + log_sum_exp - lg[tok];
    const float nll_base = -(scale * q[tok] + min_log_prob);
    k->nll += nll;
    k->nll2 += nll * nll;
    k->nll_base += nll_base;
    k->nll_base2 += nll_base * nll_base;
    k->nll_nll_base += nll * nll_base;
    const float log_norm = max_logit + log_sum_exp;
    double sum = 0;
    int imax_base = -1;
    float p_log_base_max = 0;
    for (int i = 0; i < n_vocab; i++) {
        const float p_log_base = scale * q[i] + min_log_prob;
        if (i == 0 || p_log_base > p_log_base_max) {
            p_log_base_max = p_log_base;
            imax_base = i;
        }
        if (p_log_base > -16.f) sum += expf(p_log_base) * (p_log_base - lg[i] + log_norm);
    }
    k->kld += sum;
    k->kld2 += sum * sum;
    k->count++;
    if (imax == imax_base) k->n_same_top++;
    const float p_diff = expf(-nll) - expf(-nll_base);
    k->p_diff += p_diff;
    const double p_diff2 = p_diff * p_diff;
    k->p_diff2 += p_diff2;
    k->p_diff4 += p_diff2 * p_diff2;
    if (fabsf(p_diff) > k->max_p_diff) k->max_p_diff = fabsf(p_diff);
    st->kld_values[st->n_values] = (float)sum;
    st->p_diff_values[st->n_values] = p_diff;
    st->n_values++;
}

/* ------------------------------------------------------------ statistics */

static void lk_mean(double sum, double sum2, int64_t count, double *mean, double *err) {
    *mean = *err = 0;
    if (count < 1) return;
    *mean = sum / (double)count;
    const double df = sum2 / (double)count - *mean * *mean;
    *err = df > 0 && count > 10 ? sqrt(df / (double)(count - 1)) : 0.;
}

static double lk_cov(double a, double b, double ab, int64_t count) {
    if (count < 10) return 0.0;
    const double n = (double)count;
    return (ab / n - (a / n) * (b / n)) / (n - 1);
}

static int lk_cmp(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* llama-perplexity's percentile: float interpolation between two ranks. */
static float lk_pct(const float *v, size_t n, float fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    const size_t ip = (size_t)p;
    p -= (float)ip;
    return (1 - p) * v[ip] + p * v[ip + 1 < n ? ip + 1 : n - 1];
}

static float lk_median(const float *v, size_t n) {
    return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

/* The running line printed after each chunk of --kl-divergence. */
static void lk_chunk_line(const lk_sums *k, int chunk) {
    double lp, lpe, lb, lbe, kl, kle, mse, msee;
    lk_mean(k->nll, k->nll2, k->count, &lp, &lpe);
    lk_mean(k->nll_base, k->nll_base2, k->count, &lb, &lbe);
    lk_mean(k->kld, k->kld2, k->count, &kl, &kle);
    lk_mean(k->p_diff2, k->p_diff4, k->count, &mse, &msee);
    const double cov = lk_cov(k->nll, k->nll_base, k->nll_nll_base, k->count);
    const double rms = sqrt(mse);
    const double top = (double)k->n_same_top / (double)k->count;
    printf("%4d    %9.4f ± %9.4f", chunk, exp(lp), exp(lp) * lpe);
    printf("    %10.5f ± %10.5f", lp - lb, sqrt(lpe * lpe + lbe * lbe - 2.0 * cov));
    printf("    %10.5f ± %10.5f", kl, kle);
    printf("    %6.3f ± %6.3f %%", 100.0 * rms, 100.0 * 0.5 / rms * msee);
    printf("    %6.3f ± %6.3f %%\n", 100.0 * top,
           100.0 * sqrt(top * (1 - top) / (double)(k->count - 1)));
}

static void lk_report(lk_state *st) {
    const lk_sums *k = &st->k;
    const size_t n = st->n_values;
    if (k->count < 100) return; /* as llama-perplexity: no statistics */
    qsort(st->kld_values, n, sizeof(float), lk_cmp);
    qsort(st->p_diff_values, n, sizeof(float), lk_cmp);
    double lp, lpe, lb, lbe;
    lk_mean(k->nll, k->nll2, k->count, &lp, &lpe);
    lk_mean(k->nll_base, k->nll_base2, k->count, &lb, &lbe);
    const double ppl = exp(lp), ppl_e = ppl * lpe, ppl_b = exp(lb), ppl_be = ppl_b * lbe;
    const double cov = lk_cov(k->nll, k->nll_base, k->nll_nll_base, k->count);
    const double ratio = lp - lb, ratio_e = sqrt(lpe * lpe + lbe * lbe - 2.0 * cov);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", ppl, ppl_e);
    printf("Mean PPL(base)                : %10.6f ± %10.6f\n", ppl_b, ppl_be);
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * cov / (lpe * lbe));
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", ratio, ratio_e);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", exp(ratio), exp(ratio) * ratio_e);
    printf("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", ppl - ppl_b,
           sqrt(ppl_e * ppl_e + ppl_be * ppl_be - 2.0 * ppl * ppl_b * cov));
    printf("\n====== KL divergence statistics ======\n");
    double kl, kle;
    lk_mean(k->kld, k->kld2, k->count, &kl, &kle);
    const float *v = st->kld_values;
    printf("Mean    KLD: %10.6f ± %10.6f\n", kl, kle);
    printf("Maximum KLD: %10.6f\n", (double)v[n - 1]);
    printf("99.9%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.999f));
    printf("99.0%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.990f));
    printf("95.0%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.950f));
    printf("90.0%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.900f));
    printf("Median  KLD: %10.6f\n", (double)lk_median(v, n));
    printf("10.0%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.100f));
    printf(" 5.0%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.050f));
    printf(" 1.0%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.010f));
    printf(" 0.1%%   KLD: %10.6f\n", (double)lk_pct(v, n, 0.001f));
    printf("Minimum KLD: %10.6f\n", (double)v[0]);
    printf("\n====== Token probability statistics ======\n");
    double pd, pde, mse, msee;
    lk_mean(k->p_diff, k->p_diff2, k->count, &pd, &pde);
    const float *p = st->p_diff_values;
    printf("Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * pd, 100.0 * pde);
    printf("Maximum Δp: %6.3f%%\n", 100.0 * (double)p[n - 1]);
    static const struct {
        const char *name;
        float f;
    } pq[] = {{"99.9%", 0.999f}, {"99.0%", 0.990f}, {"95.0%", 0.950f}, {"90.0%", 0.900f},
              {"75.0%", 0.750f}, {NULL, 0.5f},      {"25.0%", 0.250f}, {"10.0%", 0.100f},
              {" 5.0%", 0.050f}, {" 1.0%", 0.010f}, {" 0.1%", 0.001f}};
    for (size_t i = 0; i < sizeof(pq) / sizeof(pq[0]); i++) {
        if (pq[i].name == NULL) {
            printf("Median  Δp: %6.3f%%\n", 100.0 * (double)lk_median(p, n));
        } else {
            printf("%s   Δp: %6.3f%%\n", pq[i].name, 100.0 * (double)lk_pct(p, n, pq[i].f));
        }
    }
    printf("Minimum Δp: %6.3f%%\n", 100.0 * (double)p[0]);
    lk_mean(k->p_diff2, k->p_diff4, k->count, &mse, &msee);
    const double rms = sqrt(mse);
    printf("RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * rms, 100.0 * 0.5 / rms * msee);
    const double top = (double)k->n_same_top / (double)k->count;
    printf("Same top p: %6.3f ± %5.3f %%\n", 100.0 * top,
           100.0 * sqrt(top * (1.0 - top) / (double)(k->count - 1)));
}

/* ------------------------------------------------------------ setup */

static char *lk_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL &&
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (f != NULL) fclose(f);
    if (buf == NULL) {
        fprintf(stderr, "llama_kld: cannot read %s\n", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* common_tokenize(ctx, text, add_special = true, parse_special = false). */
static int lk_tokenize(lk_state *st) {
    size_t len = 0;
    char *text = lk_slurp(st->o.text, &len);
    if (text == NULL) return 1;
    if (len > INT32_MAX - 2) {
        free(text);
        return 1;
    }
    int n = (int)len + 2;
    st->tokens = malloc(sizeof(llama_token) * (size_t)n);
    if (st->tokens != NULL)
        n = llama_tokenize(st->vocab, text, (int32_t)len, st->tokens, n, true, false);
    if (st->tokens != NULL && n < 0) {
        llama_token *t = realloc(st->tokens, sizeof(llama_token) * (size_t)-n);
        if (t != NULL) {
            st->tokens = t;
            n = llama_tokenize(st->vocab, text, (int32_t)len, t, -n, true, false);
        }
    }
    free(text);
    if (st->tokens == NULL || n < 0) {
        fprintf(stderr, "llama_kld: tokenization of %s failed\n", st->o.text);
        return 1;
    }
    st->n_tokens = n;
    return 0;
}

static int lk_read(lk_state *st, void *dst, size_t n, const char *what) {
    if (fread(dst, 1, n, st->base) == n) return 0;
    fprintf(stderr, "llama_kld: %s: cannot read %s\n", st->o.base, what);
    return 1;
}

/* --kl-divergence: BASE's header and tokens replace the text's. */
static int lk_open_base(lk_state *st) {
    st->base = fopen(st->o.base, "rb");
    char magic[8];
    int32_t head[3];
    if (st->base == NULL || lk_read(st, magic, 8, "the magic") != 0 ||
        memcmp(magic, "_logits_", 8) != 0) {
        fprintf(stderr, "llama_kld: %s does not look like a log-probabilities file\n", st->o.base);
        return 1;
    }
    if (lk_read(st, head, sizeof(head), "the header") != 0) return 1;
    if (head[0] < 4 || head[0] > (1 << 20) || head[1] != st->n_vocab || head[2] < 1) {
        fprintf(stderr, "llama_kld: %s: n_ctx %d, n_vocab %d (model %d), n_chunk %d\n", st->o.base,
                head[0], head[1], st->n_vocab, head[2]);
        return 1;
    }
    st->n_ctx = head[0];
    st->n_chunk = head[2];
    st->n_tokens = st->n_ctx * st->n_chunk;
    st->tokens = malloc(sizeof(llama_token) * (size_t)st->n_tokens);
    if (st->tokens == NULL) return 1;
    return lk_read(st, st->tokens, sizeof(llama_token) * (size_t)st->n_tokens, "the tokens");
}

/* Model, then (as llama-perplexity's main) a context of n_seq * n_ctx
 * cells with n_seq = max(1, b / c) sequences and n_batch = min(b, cells). */
static int lk_setup(lk_state *st) {
    const lk_opts *o = &st->o;
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    st->model = llama_model_load_from_file(o->model, mp);
    if (st->model == NULL) {
        fprintf(stderr, "llama_kld: cannot load %s\n", o->model);
        return 1;
    }
    st->vocab = llama_model_get_vocab(st->model);
    st->n_vocab = llama_vocab_n_tokens(st->vocab);
    st->nv = 2 * (((size_t)st->n_vocab + 1) / 2) + 4;
    st->n_ctx = o->n_ctx;
    if (o->kld) {
        if (lk_open_base(st) != 0) return 1;
    } else {
        if (lk_tokenize(st) != 0) return 1;
        if (st->n_tokens < 2 * st->n_ctx) {
            fprintf(stderr, "llama_kld: %d tokens; a context of %d needs %d\n", st->n_tokens,
                    st->n_ctx, 2 * st->n_ctx);
            return 1;
        }
        const int max = st->n_tokens / st->n_ctx;
        st->n_chunk = o->n_chunks < 0 || o->n_chunks > max ? max : o->n_chunks;
    }
    st->n_seq = o->n_batch / st->n_ctx > 1 ? o->n_batch / st->n_ctx : 1;
    const int cells = st->n_seq * st->n_ctx;
    st->n_batch = o->n_batch < cells ? o->n_batch : cells;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)cells;
    cp.n_batch = (uint32_t)st->n_batch;
    cp.n_seq_max = (uint32_t)st->n_seq;
    cp.n_threads = cp.n_threads_batch = o->threads;
    cp.type_k = cp.type_v = o->type_k;
    cp.flash_attn_type = o->fa;
    cp.no_perf = true;
    st->ctx = llama_init_from_model(st->model, cp);
    if (st->ctx == NULL) {
        fprintf(stderr, "llama_kld: cannot create a context of %d cells\n", cells);
        return 1;
    }
    st->batch = llama_batch_init(st->n_batch, 0, 1);
    st->batch_ok = true;
    st->first = st->n_ctx / 2;
    st->row = calloc(st->nv, sizeof(uint16_t));
    const size_t nrows = (size_t)st->n_chunk * (size_t)(st->n_ctx - 1 - st->first);
    st->kld_values = malloc(sizeof(float) * (nrows ? nrows : 1));
    st->p_diff_values = malloc(sizeof(float) * (nrows ? nrows : 1));
    if (st->row == NULL || st->kld_values == NULL || st->p_diff_values == NULL) return 1;
    fprintf(stderr, "llama_kld: %s over %d chunks, n_ctx=%d, batch_size=%d, n_seq=%d\n",
            o->kld ? "KL divergence" : "perplexity", st->n_chunk, st->n_ctx, st->n_batch,
            st->n_seq);
    if (!o->kld) {
        const int32_t head[3] = {st->n_ctx, st->n_vocab, st->n_chunk};
        const size_t nt = (size_t)st->n_chunk * (size_t)st->n_ctx;
        st->base = fopen(o->base, "wb");
        if (st->base == NULL || fwrite("_logits_", 1, 8, st->base) != 8 ||
            fwrite(head, sizeof(head), 1, st->base) != 1 ||
            fwrite(st->tokens, sizeof(llama_token), nt, st->base) != nt) {
            fprintf(stderr, "llama_kld: cannot write %s\n", o->base);
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ scoring */

/* Score logits row `idx` of the last decode, predicting tok: write or
 * compare its base row. Rows arrive in the file's order (chunk, then
 * position): a multi-chunk decode has n_batch >= n_seq * n_ctx. */
static int lk_score(lk_state *st, int idx, int tok) {
    const float *lg = llama_get_logits_ith(st->ctx, idx);
    if (lg == NULL) {
        fprintf(stderr, "llama_kld: no logits for row %d\n", idx);
        return 1;
    }
    if (st->o.kld) {
        if (lk_read(st, st->row, st->nv * sizeof(uint16_t), "a log-probabilities row") != 0)
            return 1;
        lk_compare_row(st, lg, st->row, tok);
        return 0;
    }
    const double v = lk_base_row(lg, st->n_vocab, st->row, tok);
    st->nll += v;
    st->nll2 += v * v;
    st->count++;
    if (fwrite(st->row, sizeof(uint16_t), st->nv, st->base) != st->nv) {
        fprintf(stderr, "llama_kld: write to %s failed\n", st->o.base);
        return 1;
    }
    return 0;
}

static int lk_run(lk_state *st) {
    const int n_ctx = st->n_ctx, n_batch = st->n_batch, first = st->first;
    const int num_batches = (n_ctx + n_batch - 1) / n_batch;
    const llama_token bos = llama_vocab_bos(st->vocab);
    const bool add_bos = llama_vocab_get_add_bos(st->vocab);
    if (st->o.kld)
        printf("\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence  "
               "            Δp RMS            Same top p\n");
    for (int i = 0; i < st->n_chunk; i += st->n_seq) {
        const int start = i * n_ctx;
        const int n_seq_batch = st->n_seq < st->n_chunk - i ? st->n_seq : st->n_chunk - i;
        llama_memory_clear(llama_get_memory(st->ctx), true);
        for (int j = 0; j < num_batches; j++) {
            const int batch_start = start + j * n_batch;
            const int batch_size =
                start + n_ctx - batch_start < n_batch ? start + n_ctx - batch_start : n_batch;
            struct llama_batch *b = &st->batch;
            b->n_tokens = 0;
            for (int s = 0; s < n_seq_batch; s++) {
                const int seq_start = batch_start + s * n_ctx;
                for (int k = 0; k < batch_size; k++) {
                    const int idx = b->n_tokens++;
                    const int pos = j * n_batch + k;
                    b->token[idx] = add_bos && j == 0 && k == 0 ? bos : st->tokens[seq_start + k];
                    b->pos[idx] = pos;
                    b->n_seq_id[idx] = 1;
                    b->seq_id[idx][0] = s;
                    b->logits[idx] = pos >= first;
                }
            }
            if (llama_decode(st->ctx, *b) != 0) {
                fprintf(stderr, "llama_kld: llama_decode failed on chunk %d\n", i + 1);
                return 1;
            }
            /* Sequence by sequence, each printed once its last batch is
             * in (several batches only when n_seq == 1), as llama.cpp. */
            for (int s = 0; s < n_seq_batch; s++) {
                for (int k = 0; k < batch_size; k++) {
                    const int pos = j * n_batch + k;
                    if (pos < first || pos >= n_ctx - 1) continue;
                    const int tok = st->tokens[start + s * n_ctx + pos + 1];
                    if (lk_score(st, s * batch_size + k, tok) != 0) return 1;
                }
                if (j < num_batches - 1) continue;
                if (st->o.kld) {
                    lk_chunk_line(&st->k, i + s + 1);
                } else {
                    printf("[%d]%.4f,", i + s + 1, exp(st->nll / (double)st->count));
                }
            }
        }
        fflush(stdout);
    }
    printf("\n");
    if (st->o.kld) {
        lk_report(st);
        return 0;
    }
    const double nll = st->nll / (double)st->count;
    double nll2 = st->nll2 / (double)st->count - nll * nll;
    if (nll2 > 0) {
        nll2 = sqrt(nll2 / (double)(st->count - 1));
        printf("Final estimate: PPL = %.4f +/- %.5f\n", exp(nll), nll2 * exp(nll));
    } else {
        fprintf(stderr, "llama_kld: non-positive variance of log(prob)\n");
    }
    const int rc = fclose(st->base);
    st->base = NULL;
    if (rc != 0) fprintf(stderr, "llama_kld: write to %s failed\n", st->o.base);
    return rc != 0;
}

int main(int argc, char **argv) {
    lk_state st;
    memset(&st, 0, sizeof(st));
    lk_parse(argc, argv, &st.o);
    llama_log_set(lk_quiet, NULL);
    ggml_backend_load_all_from_path(st.o.backend_dir);
    llama_backend_init();
    int rc = lk_setup(&st);
    if (rc == 0) rc = lk_run(&st);
    if (st.base != NULL) fclose(st.base);
    if (rc != 0 && !st.o.kld) remove(st.o.base);
    free(st.kld_values);
    free(st.p_diff_values);
    free(st.row);
    free(st.tokens);
    if (st.batch_ok) llama_batch_free(st.batch);
    if (st.ctx != NULL) llama_free(st.ctx);
    if (st.model != NULL) llama_model_free(st.model);
    llama_backend_free();
    return rc;
}
