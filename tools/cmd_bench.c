/* cmd_bench.c: `ctxshift bench`, llama-bench's pp/tg measurements.
 *
 * pp<N>: decode N random tokens from an empty cache in batches of n_batch,
 * logits only for the last row of each batch. tg<N>: N single-token decodes
 * from an empty cache. Each test runs once as a warm-up, then r times; the
 * table reports tokens per second as mean ± sample standard deviation.
 *
 * Depth (-d D, llama-bench's --n-depth): before every timed run, untimed, D
 * tokens of the same sequence fill the cache, so the test measures decoding
 * against D cached cells. --fragment makes those cells half holes: 2D tokens
 * alternate between sequence 0 and a second sequence in consecutive cells,
 * then the second sequence is removed; attention must then cost the D live
 * cells, not the 2D-cell window.
 *
 * Peak memory: the JSON gives the process's peak resident set (getrusage)
 * and the KV cache bytes of the test's context, for the check peak <= file
 * + KV + 64 MiB. */
#include <math.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "tool_context.h"
#include "tools.h"

enum { BENCH_LIST_MAX = 32 };

typedef struct bench_opts {
    tool_common common; /* -m -b -ctk -ctv -v -h */
    int32_t n_prompt[BENCH_LIST_MAX];
    int32_t n_n_prompt;
    int32_t n_gen[BENCH_LIST_MAX];
    int32_t n_n_gen;
    int32_t threads[BENCH_LIST_MAX];
    int32_t n_n_threads;
    int32_t depth[BENCH_LIST_MAX];
    int32_t n_depth;
    int32_t reps;
    int32_t warmup; /* pp warm-up tokens; < 0 = the whole prompt */
    bool fragment;
    bool no_repack;
    bool json;
    bool mem_pair; /* --mem-pair: a bandwidth probe pass after every generated token */
} bench_opts;

/* --mem-pair's probe: bench mem's read pass over a buffer of as many bytes
 * as a token reads (cs_model_decode_bytes), run with the test's threads
 * after every timed token, so each token's weight stream is compared with
 * the machine's read bandwidth of the same moment (on a shared host the
 * bandwidth drifts by tens of % within seconds; a probe run before or after
 * a whole test pairs different moments). */
typedef struct bench_probe {
    uint64_t *buf; /* NULL: no probe */
    size_t bytes;
    double huge_frac;
} bench_probe;

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift bench [flags]\n"
            "\n"
            "Measure prompt processing (ppN) and text generation (tgN) speed, like llama-bench.\n"
            "Lists are comma-separated (\"-t 1,2\"); every combination is measured.\n"
            "'ctxshift bench kv --help': the KV cache operations (K-shift, defrag).\n"
            "'ctxshift bench mem --help': memory read bandwidth (the tg ceiling).\n"
            "\n"
            "  -m,   --model FILE         GGUF model (default: %s)\n"
            "  -p,   --n-prompt LIST      prompt tokens per pp test; 0 = none (default: 512)\n"
            "  -n,   --n-gen LIST         generated tokens per tg test; 0 = none (default: 128)\n"
            "  -b,   --batch-size N       tokens per decode in pp tests (default: 2048)\n"
            "  -t,   --threads LIST       worker threads (default: number of cores)\n"
            "  -r,   --repetitions N      measured runs per test, after one warm-up (default: "
            "5)\n"
            "  -d,   --n-depth LIST       tokens already in the cache before each run "
            "(default: 0)\n"
            "        --fragment           with -d D: the D cached cells alternate with D holes\n"
            "        --warmup-tokens N    tokens of the pp warm-up (default: the whole prompt)\n"
            "        --no-repack          keep weights in file order (no x16 packing)\n"
            "        --mem-pair           tg tests: after every timed token, one pass of the\n"
            "                             read probe of 'bench mem' over as many bytes as a token\n"
            "                             reads of weights (with -d, its KV cache reads are not\n"
            "                             counted), with the test's threads; reports the decode's\n"
            "                             GB/s against the probe's (t/s counts the tokens only;\n"
            "                             the probe buffer adds that many bytes to the process,\n"
            "                             so peak_rss_bytes is null)\n" TOOL_HELP_CACHE_TYPES
            "  -o,   --output FORMAT      md (a markdown table, default) or json\n"
            "        --json               same as -o json: a JSON array with llama-bench's "
            "fields\n" TOOL_HELP_VERBOSE TOOL_HELP_HELP,
            CS_DEFAULT_MODEL);
}

static int bench_parse(int argc, char **argv, bench_opts *o) {
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &o->common, &handled);
        if (rc != 0) return rc;
        if (handled) continue;
        if (tool_arg_is(a, NULL, "--json")) {
            o->json = true;
        } else if (tool_arg_is(a, "-o", "--output")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) {
                if (strcmp(v, "json") == 0) {
                    o->json = true;
                } else if (strcmp(v, "md") == 0) {
                    o->json = false;
                } else {
                    tool_error("%s: '%s' is not an output format (md, json)", a, v);
                    rc = TOOL_EXIT_USAGE;
                }
            }
        } else if (tool_arg_is(a, "-p", "--n-prompt")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32_list(a, v, 0, 1 << 20, o->n_prompt, BENCH_LIST_MAX,
                                         &o->n_n_prompt);
        } else if (tool_arg_is(a, "-n", "--n-gen")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32_list(a, v, 0, 1 << 20, o->n_gen, BENCH_LIST_MAX, &o->n_n_gen);
        } else if (tool_arg_is(a, "-t", "--threads")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc =
                    tool_parse_i32_list(a, v, 1, 4096, o->threads, BENCH_LIST_MAX, &o->n_n_threads);
        } else if (tool_arg_is(a, "-r", "--repetitions")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_i32(a, v, 1, 10000, &o->reps);
        } else if (tool_arg_is(a, "-d", "--n-depth")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32_list(a, v, 0, 1 << 20, o->depth, BENCH_LIST_MAX, &o->n_depth);
        } else if (tool_arg_is(a, NULL, "--fragment")) {
            o->fragment = true;
        } else if (tool_arg_is(a, NULL, "--no-repack")) {
            o->no_repack = true;
        } else if (tool_arg_is(a, NULL, "--mem-pair")) {
            o->mem_pair = true;
        } else if (tool_arg_is(a, NULL, "--warmup-tokens")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, 1 << 20, &o->warmup);
        } else {
            rc = tool_arg_unknown("bench", a);
        }
        if (rc != 0) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ one test */

typedef struct bench_test {
    int32_t n_prompt;
    int32_t n_gen;
    int32_t n_depth;
    int32_t n_threads;
    int32_t n_batch; /* effective, after capping at n_ctx */
    char test_time[32];
    uint64_t *samples_ns; /* reps */
    double *samples_ts;   /* reps */
    double avg_ns, stddev_ns, avg_ts, stddev_ts;
    uint64_t kv_bytes; /* K and V bytes of the test's cache */
    uint64_t peak_rss; /* process peak resident set after the test, bytes */
    int32_t n_window;  /* cells attention scanned at the end of the last run */
    int32_t n_used;    /* live cells then */
    /* --mem-pair (tg tests): token and probe time summed over all reps, and
     * the median over tokens of (token's GB/s) / (the probe's right after) */
    bool paired;
    uint64_t pair_tokens, pair_probe_bytes; /* tokens timed; bytes of one probe pass */
    uint64_t pair_tok_ns, pair_probe_ns;
    double pair_median;
} bench_test;

/* Deterministic token source (xorshift64*), like llama-bench's rand() % n_vocab. */
static cs_token bench_rand_token(uint64_t *state, int32_t n_vocab) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (cs_token)((x * 0x2545f4914f6cdd1dull >> 33) % (uint64_t)n_vocab);
}

static int bench_pp(const cs_model *model, cs_context *ctx, cs_batch *batch, int32_t n_prompt,
                    int32_t n_batch, int32_t pos0, uint64_t *rng) {
    const int32_t n_vocab = cs_model_n_vocab(model);
    const cs_token bos = cs_token_bos(model);
    const bool add_bos = cs_vocab_add_bos(model) && bos >= 0;
    const cs_seq seq0 = 0;
    for (int32_t i = 0; i < n_prompt; i += n_batch) {
        const int32_t nb = n_prompt - i < n_batch ? n_prompt - i : n_batch;
        cs_batch_clear(batch);
        for (int32_t k = 0; k < nb; k++) {
            const int32_t pos = pos0 + i + k;
            const cs_token t = pos == 0 && add_bos ? bos : bench_rand_token(rng, n_vocab);
            const cs_status st = cs_batch_add(batch, t, pos, &seq0, 1, k == nb - 1);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        const int rc = tool_decode(ctx, batch, "decode: no KV slot");
        if (rc != 0) return rc;
    }
    return 0;
}

static int bench_tg(const cs_model *model, cs_context *ctx, cs_batch *batch, int32_t n_gen,
                    int32_t pos0, uint64_t *rng) {
    const int32_t n_vocab = cs_model_n_vocab(model);
    const cs_token bos = cs_token_bos(model);
    const cs_seq seq0 = 0;
    cs_token t =
        pos0 == 0 && cs_vocab_add_bos(model) && bos >= 0 ? bos : bench_rand_token(rng, n_vocab);
    for (int32_t i = 0; i < n_gen; i++) {
        cs_batch_clear(batch);
        const cs_status st = cs_batch_add(batch, t, pos0 + i, &seq0, 1, true);
        if (st != CS_OK) return tool_fail_lib(st, "batch");
        const int rc = tool_decode(ctx, batch, "decode: no KV slot");
        if (rc != 0) return rc;
        t = bench_rand_token(rng, n_vocab);
    }
    return 0;
}

/* One timed tg run with the probe: n_gen tokens, each followed by one
 * probe pass; adds the tokens' time to *tok_ns, the passes' to t's sums,
 * and each token's ratio (decode_bytes / token time) / (probe bytes /
 * pass time) to ratios[0..n_gen). */
static int bench_tg_paired(const cs_model *model, cs_context *ctx, cs_batch *batch,
                           const bench_probe *pr, bench_test *t, uint64_t decode_bytes,
                           uint64_t *rng, uint64_t *tok_ns, double *ratios) {
    uint64_t sink = 0;
    for (int32_t i = 0; i < t->n_gen; i++) {
        const uint64_t a = tool_time_ns();
        const int rc = bench_tg(model, ctx, batch, 1, t->n_depth + i, rng);
        if (rc != 0) return rc;
        const uint64_t b = tool_time_ns();
        const double secs =
            bench_mem_pass(pr->buf, pr->bytes / sizeof(uint64_t), t->n_threads, &sink);
        if (secs <= 0) return TOOL_EXIT_FAIL; /* the pass said why */
        const uint64_t dt = b - a > 0 ? b - a : 1;
        *tok_ns += dt;
        t->pair_tokens++;
        t->pair_tok_ns += dt;
        t->pair_probe_ns += (uint64_t)(secs * 1e9);
        ratios[i] = ((double)decode_bytes / (double)dt) / ((double)pr->bytes / (secs * 1e9));
    }
    if (sink == 42) fprintf(stderr, "(checksum %llu)\n", (unsigned long long)sink); /* keep it */
    return 0;
}

/* Fill the cache with depth tokens of sequence 0 (positions 0..depth-1);
 * fragment: 2*depth tokens alternating between sequence 0 and sequence 1
 * in consecutive cells, then sequence 1 removed, leaving a hole after every
 * live cell. Untimed. */
static int bench_fill_depth(const cs_model *model, cs_context *ctx, cs_batch *batch, int32_t depth,
                            bool fragment, int32_t n_batch, uint64_t *rng) {
    if (!fragment) return bench_pp(model, ctx, batch, depth, n_batch, 0, rng);
    const int32_t n_vocab = cs_model_n_vocab(model);
    const int32_t total = 2 * depth;
    for (int32_t i = 0; i < total; i += n_batch) {
        const int32_t nb = total - i < n_batch ? total - i : n_batch;
        cs_batch_clear(batch);
        for (int32_t k = 0; k < nb; k++) {
            const cs_seq s = (cs_seq)((i + k) % 2);
            const cs_status st = cs_batch_add(batch, bench_rand_token(rng, n_vocab), (i + k) / 2,
                                              &s, 1, k == nb - 1);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        const int rc = tool_decode(ctx, batch, "decode: no KV slot");
        if (rc != 0) return rc;
    }
    const cs_status st = cs_kv_seq_rm(ctx, 1, -1, -1);
    return st == CS_OK ? 0 : tool_fail_lib(st, "seq_rm");
}

/* K+V bytes of a cache of n_ctx cells (what cs_context_new allocates). */
static uint64_t bench_kv_bytes(const cs_model *model, uint32_t n_ctx, int32_t type_k,
                               int32_t type_v) {
    const uint64_t n_embd_kv = (uint64_t)cs_model_n_embd(model) / (uint64_t)cs_model_n_head(model) *
                               (uint64_t)cs_model_n_head_kv(model);
    /* the cache types a context accepts: F32, F16, Q8_0 (34 bytes / 32) */
    const uint64_t row_k = type_k == CS_TYPE_F32   ? 4 * n_embd_kv
                           : type_k == CS_TYPE_F16 ? 2 * n_embd_kv
                                                   : n_embd_kv / 32 * 34;
    const uint64_t row_v = type_v == CS_TYPE_F32   ? 4 * n_embd_kv
                           : type_v == CS_TYPE_F16 ? 2 * n_embd_kv
                                                   : n_embd_kv / 32 * 34;
    return (row_k + row_v) * (uint64_t)cs_model_n_layer(model) * n_ctx;
}

static void bench_stats(bench_test *t, int32_t reps) {
    const double n_tokens = (double)(t->n_prompt + t->n_gen);
    double sum_ns = 0, sum_ts = 0;
    for (int32_t r = 0; r < reps; r++) {
        const double ns = t->samples_ns[r] > 0 ? (double)t->samples_ns[r] : 1.0;
        t->samples_ts[r] = 1e9 * n_tokens / ns;
        sum_ns += (double)t->samples_ns[r];
        sum_ts += t->samples_ts[r];
    }
    t->avg_ns = sum_ns / reps;
    t->avg_ts = sum_ts / reps;
    double var_ns = 0, var_ts = 0;
    for (int32_t r = 0; r < reps; r++) {
        var_ns += ((double)t->samples_ns[r] - t->avg_ns) * ((double)t->samples_ns[r] - t->avg_ns);
        var_ts += (t->samples_ts[r] - t->avg_ts) * (t->samples_ts[r] - t->avg_ts);
    }
    t->stddev_ns = reps > 1 ? sqrt(var_ns / (reps - 1)) : 0.0;
    t->stddev_ts = reps > 1 ? sqrt(var_ts / (reps - 1)) : 0.0;
}

/* Run one test on a fresh context: a warm-up, then reps timed runs (a tg
 * test with pr->buf set runs them paired with the probe). */
static int bench_run_test(const cs_model *model, const bench_opts *o, const bench_probe *pr,
                          bench_test *t) {
    int rc = TOOL_EXIT_FAIL;
    cs_context *ctx = NULL;
    cs_batch *batch = NULL;
    double *ratios = NULL;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    t->paired = pr->buf != NULL && t->n_gen > 0 && t->n_prompt == 0;
    t->pair_probe_bytes = pr->bytes;
    const uint64_t decode_bytes = cs_model_decode_bytes(model);
    if (t->paired) {
        ratios = malloc((size_t)t->n_gen * (size_t)o->reps * sizeof *ratios);
        if (!ratios) {
            tool_error("out of memory for %d x %d paired samples", (int)t->n_gen, (int)o->reps);
            return TOOL_EXIT_FAIL;
        }
    }

    const int32_t fill = o->fragment ? 2 * t->n_depth : t->n_depth;
    tool_common cc = o->common;
    cc.n_ctx = fill + t->n_prompt + t->n_gen; /* >= 1: tests of no tokens are never listed */
    cc.n_threads = t->n_threads;
    if ((rc = tool_context_new(model, &cc, o->fragment ? 2 : 1, &ctx)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;
    t->n_batch = (int32_t)cs_n_batch(ctx);
    const cs_status bs = cs_batch_new(t->n_batch, 1, &batch);
    if (bs != CS_OK) {
        rc = tool_fail_lib(bs, "batch");
        goto done;
    }

    const time_t now = time(NULL);
    struct tm tm_utc;
    if (gmtime_r(&now, &tm_utc) == NULL ||
        strftime(t->test_time, sizeof(t->test_time), "%Y-%m-%dT%H:%M:%SZ", &tm_utc) == 0) {
        snprintf(t->test_time, sizeof(t->test_time), "1970-01-01T00:00:00Z");
    }

    /* Warm-up: the whole prompt (or --warmup-tokens of it), or one
     * generated token (llama-bench). */
    const int32_t n_warm = o->warmup > 0 && o->warmup < t->n_prompt ? o->warmup : t->n_prompt;
    if (t->n_prompt > 0 && (rc = bench_pp(model, ctx, batch, n_warm, t->n_batch, 0, &rng)) != 0)
        goto done;
    if (t->n_gen > 0 && (rc = bench_tg(model, ctx, batch, 1, 0, &rng)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;

    for (int32_t r = 0; r < o->reps; r++) {
        cs_kv_clear(ctx);
        if (t->n_depth > 0 && (rc = bench_fill_depth(model, ctx, batch, t->n_depth, o->fragment,
                                                     t->n_batch, &rng)) != 0)
            goto done;
        if (t->paired) {
            uint64_t tok_ns = 0;
            if ((rc = bench_tg_paired(model, ctx, batch, pr, t, decode_bytes, &rng, &tok_ns,
                                      ratios + (size_t)r * (size_t)t->n_gen)) != 0)
                goto done;
            t->samples_ns[r] = tok_ns;
            continue;
        }
        const uint64_t t0 = tool_time_ns();
        if (t->n_prompt > 0 &&
            (rc = bench_pp(model, ctx, batch, t->n_prompt, t->n_batch, t->n_depth, &rng)) != 0)
            goto done;
        if (t->n_gen > 0 && (rc = bench_tg(model, ctx, batch, t->n_gen, t->n_depth, &rng)) != 0)
            goto done;
        t->samples_ns[r] = tool_time_ns() - t0;
    }
    bench_stats(t, o->reps);
    if (t->paired) {
        const size_t n = (size_t)t->n_gen * (size_t)o->reps;
        t->pair_median = bench_sort_median(ratios, n);
    }
    cs_kv_info ki;
    if (cs_kv_stats(ctx, &ki) == CS_OK) {
        t->n_window = ki.n_window;
        t->n_used = ki.used;
    }
    t->kv_bytes = bench_kv_bytes(model, (uint32_t)cc.n_ctx, o->common.type_k, o->common.type_v);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) t->peak_rss = (uint64_t)ru.ru_maxrss * 1024u;
    rc = 0;
done:
    free(ratios);
    cs_batch_free(batch);
    cs_context_free(ctx);
    return rc;
}

/* ------------------------------------------------------------ output */

typedef struct bench_model_info {
    const char *path;
    char desc[128];
    uint64_t size;
    uint64_t decode_bytes; /* weight bytes a single-token decode reads */
    uint64_t n_params;
} bench_model_info;

/* --mem-pair: the decode's weight stream (decode_bytes per token) or the
 * probe's bandwidth over all timed tokens, GB/s; and their ratio. */
static double bench_pair_gbs(const bench_test *t, uint64_t decode_bytes, bool decode) {
    const double bytes = (double)(decode ? decode_bytes : t->pair_probe_bytes) * t->pair_tokens;
    const uint64_t ns = decode ? t->pair_tok_ns : t->pair_probe_ns;
    return ns > 0 ? bytes / (double)ns : 0.0;
}

static double bench_pair_ratio(const bench_test *t, uint64_t decode_bytes) {
    const double p = bench_pair_gbs(t, decode_bytes, false);
    return p > 0 ? bench_pair_gbs(t, decode_bytes, true) / p : 0.0;
}

static void bench_md_header(bool mem_pair) {
    printf("| %-30s | %10s | %10s | %-10s | %7s | %13s | %20s |", "model", "size", "params",
           "backend", "threads", "test", "t/s");
    if (mem_pair) printf(" decode GB/s | probe GB/s | decode / probe (median) |");
    printf("\n| ------------------------------ | ---------: | ---------: | ---------- | ------: | "
           "------------: | -------------------: |");
    if (mem_pair) printf(" ----------: | ---------: | ----------------------: |");
    printf("\n");
}

static void bench_md_row(const bench_model_info *mi, const bench_test *t, bool mem_pair) {
    char size[32], params[32], test[32], ts[48];
    const double gib = 1024.0 * 1024.0 * 1024.0;
    if ((double)mi->size < gib) {
        snprintf(size, sizeof(size), "%.2f MiB", (double)mi->size / (1024.0 * 1024.0));
    } else {
        snprintf(size, sizeof(size), "%.2f GiB", (double)mi->size / gib);
    }
    if (mi->n_params < 1000000000ull) {
        snprintf(params, sizeof(params), "%.2f M", (double)mi->n_params / 1e6);
    } else {
        snprintf(params, sizeof(params), "%.2f B", (double)mi->n_params / 1e9);
    }
    if (t->n_prompt > 0 && t->n_gen == 0) {
        snprintf(test, sizeof(test), "pp%d", (int)t->n_prompt);
    } else if (t->n_gen > 0 && t->n_prompt == 0) {
        snprintf(test, sizeof(test), "tg%d", (int)t->n_gen);
    } else {
        snprintf(test, sizeof(test), "pp%d+tg%d", (int)t->n_prompt, (int)t->n_gen);
    }
    if (t->n_depth > 0) {
        const size_t l = strlen(test);
        snprintf(test + l, sizeof(test) - l, " @ d%d%s", (int)t->n_depth,
                 t->n_window > t->n_used ? "h" : "");
    }
    snprintf(ts, sizeof(ts), "%.2f ± %.2f", t->avg_ts, t->stddev_ts);
    /* "±" is two bytes in UTF-8 but one column: pad by one more. */
    printf("| %-30.30s | %10s | %10s | %-10s | %7d | %13s | %21s |", mi->desc, size, params, "CPU",
           (int)t->n_threads, test, ts);
    if (t->paired) {
        printf(" %11.2f | %10.2f | %11.1f %% (%5.1f %%) |",
               bench_pair_gbs(t, mi->decode_bytes, true),
               bench_pair_gbs(t, mi->decode_bytes, false),
               100.0 * bench_pair_ratio(t, mi->decode_bytes), 100.0 * t->pair_median);
    } else if (mem_pair) {
        printf(" %11s | %10s | %23s |", "", "", "");
    }
    printf("\n");
}

static void bench_json_obj(const bench_model_info *mi, const bench_opts *o, const bench_test *t,
                           int32_t reps, double pr_huge_frac) {
    printf("  {\n");
    printf("    \"model_filename\": ");
    tool_json_string(stdout, mi->path, strlen(mi->path));
    printf(",\n    \"model_type\": ");
    tool_json_string(stdout, mi->desc, strlen(mi->desc));
    printf(",\n    \"model_size\": %llu,\n", (unsigned long long)mi->size);
    printf("    \"model_n_params\": %llu,\n", (unsigned long long)mi->n_params);
    printf("    \"model_decode_bytes\": %llu,\n", (unsigned long long)mi->decode_bytes);
    printf("    \"backends\": \"CPU\",\n");
    printf("    \"n_batch\": %d,\n", (int)t->n_batch);
    printf("    \"n_threads\": %d,\n", (int)t->n_threads);
    printf("    \"type_k\": \"%s\",\n", cs_type_name(o->common.type_k));
    printf("    \"type_v\": \"%s\",\n", cs_type_name(o->common.type_v));
    printf("    \"n_prompt\": %d,\n", (int)t->n_prompt);
    printf("    \"n_gen\": %d,\n", (int)t->n_gen);
    printf("    \"n_depth\": %d,\n", (int)t->n_depth);
    printf("    \"fragmented\": %s,\n", o->fragment && t->n_depth > 0 ? "true" : "false");
    printf("    \"kv_cells_used\": %d,\n", (int)t->n_used);
    printf("    \"kv_window\": %d,\n", (int)t->n_window);
    printf("    \"kv_bytes\": %llu,\n", (unsigned long long)t->kv_bytes);
    if (o->mem_pair)
        printf("    \"peak_rss_bytes\": null,\n"); /* the probe buffer counts in it */
    else
        printf("    \"peak_rss_bytes\": %llu,\n", (unsigned long long)t->peak_rss);
    if (t->paired) {
        printf("    \"mem_pair_tokens\": %llu,\n", (unsigned long long)t->pair_tokens);
        printf("    \"mem_pair_probe_bytes\": %llu,\n", (unsigned long long)t->pair_probe_bytes);
        printf("    \"mem_pair_huge_page_fraction\": %.3f,\n", pr_huge_frac);
        printf("    \"mem_pair_loop\": \"%s\",\n", bench_mem_loop());
        printf("    \"mem_pair_decode_gbs\": %.6f,\n", bench_pair_gbs(t, mi->decode_bytes, true));
        printf("    \"mem_pair_probe_gbs\": %.6f,\n", bench_pair_gbs(t, mi->decode_bytes, false));
        printf("    \"mem_pair_ratio\": %.6f,\n", bench_pair_ratio(t, mi->decode_bytes));
        printf("    \"mem_pair_ratio_median\": %.6f,\n", t->pair_median);
    }
    printf("    \"repack\": %s,\n", o->no_repack ? "false" : "true");
    printf("    \"test_time\": \"%s\",\n", t->test_time);
    printf("    \"avg_ns\": %.0f,\n", t->avg_ns);
    printf("    \"stddev_ns\": %.0f,\n", t->stddev_ns);
    printf("    \"avg_ts\": %.6f,\n", t->avg_ts);
    printf("    \"stddev_ts\": %.6f,\n", t->stddev_ts);
    printf("    \"samples_ns\": [ ");
    for (int32_t r = 0; r < reps; r++) {
        printf("%s%llu", r > 0 ? ", " : "", (unsigned long long)t->samples_ns[r]);
    }
    printf(" ],\n    \"samples_ts\": [ ");
    for (int32_t r = 0; r < reps; r++) printf("%s%.6f", r > 0 ? ", " : "", t->samples_ts[r]);
    printf(" ]\n  }");
}

/* Phase 2 (build): the test list: for every thread count and depth, each
 * pp then each tg size (sizes of 0 skipped). On success *tests (calloc'd,
 * the caller frees it) holds *n_tests > 0 entries. Otherwise returns
 * TOOL_EXIT_FAIL (out of memory) or TOOL_EXIT_USAGE (nothing to measure),
 * reported, with nothing left allocated. */
static int bench_plan(const bench_opts *o, bench_test **tests, int32_t *n_tests) {
    int32_t n = 0;
    bench_test *t =
        calloc((size_t)BENCH_LIST_MAX * BENCH_LIST_MAX * 2 * BENCH_LIST_MAX, sizeof(bench_test));
    if (t == NULL) {
        tool_error("out of memory for the test list");
        return TOOL_EXIT_FAIL;
    }
    for (int32_t ti = 0; ti < o->n_n_threads; ti++) {
        for (int32_t di = 0; di < o->n_depth; di++) {
            for (int32_t i = 0; i < o->n_n_prompt; i++) {
                if (o->n_prompt[i] == 0) continue;
                memset(&t[n], 0, sizeof(t[0]));
                t[n].n_prompt = o->n_prompt[i];
                t[n].n_depth = o->depth[di];
                t[n++].n_threads = o->threads[ti];
            }
            for (int32_t i = 0; i < o->n_n_gen; i++) {
                if (o->n_gen[i] == 0) continue;
                memset(&t[n], 0, sizeof(t[0]));
                t[n].n_gen = o->n_gen[i];
                t[n].n_depth = o->depth[di];
                t[n++].n_threads = o->threads[ti];
            }
        }
    }
    if (n == 0) {
        tool_error("bench: nothing to measure (every -p and -n value is 0)");
        free(t);
        return TOOL_EXIT_USAGE;
    }
    *tests = t;
    *n_tests = n;
    return TOOL_EXIT_OK;
}

/* Load the model (repacked unless --no-repack) into *model, which the
 * caller frees. Returns TOOL_EXIT_OK or TOOL_EXIT_FAIL (reported). */
static int bench_load_model(const bench_opts *o, cs_model **model) {
    cs_model_params mp = cs_model_default_params();
    mp.repack = !o->no_repack;
    const cs_status st = cs_model_load(o->common.model, &mp, model);
    if (st != CS_OK) return tool_fail_lib(st, o->common.model);
    return TOOL_EXIT_OK;
}

/* The model columns of every row: path, description, sizes. */
static void bench_model_describe(const cs_model *model, const char *path, bench_model_info *mi) {
    mi->path = path;
    cs_model_desc(model, mi->desc, sizeof(mi->desc));
    mi->size = cs_model_size(model);
    mi->decode_bytes = cs_model_decode_bytes(model);
    mi->n_params = cs_model_n_params(model);
}

/* Phase 3 (work and report): run the tests in order, printing each result
 * as it comes (a markdown table, or a JSON array that stays valid when a
 * test fails part way). samples_ns/samples_ts (o->reps each) are shared by
 * every test. Returns TOOL_EXIT_OK or the failing test's status. */
static int bench_run_all(const cs_model *model, const bench_opts *o, const bench_model_info *mi,
                         const bench_probe *pr, bench_test *tests, int32_t n_tests,
                         uint64_t *samples_ns, double *samples_ts) {
    int rc;
    if (o->json) {
        printf("[\n");
    } else {
        bench_md_header(o->mem_pair);
    }
    fflush(stdout);
    for (int32_t i = 0; i < n_tests; i++) {
        bench_test *t = &tests[i];
        t->samples_ns = samples_ns;
        t->samples_ts = samples_ts;
        if ((rc = bench_run_test(model, o, pr, t)) != 0) {
            if (o->json) printf("\n]\n"); /* keep stdout a valid (partial) JSON array */
            return rc;
        }
        if (o->json) {
            if (i > 0) printf(",\n");
            bench_json_obj(mi, o, t, o->reps, pr->huge_frac);
        } else {
            bench_md_row(mi, t, o->mem_pair);
        }
        fflush(stdout);
    }
    if (o->json) printf("\n]\n");
    return TOOL_EXIT_OK;
}

int cmd_bench(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "kv") == 0) return cmd_bench_kv(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "mem") == 0) return cmd_bench_mem(argc - 1, argv + 1);
    bench_opts o = {
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_BATCH | TOOL_FLAG_CACHE_TYPES),
        .n_prompt = {512},
        .n_n_prompt = 1,
        .n_gen = {128},
        .n_n_gen = 1,
        .threads = {tool_default_threads()},
        .n_n_threads = 1,
        .reps = 5,
        .n_depth = 1, /* depth[0] = 0 */
        .warmup = -1,
    };
    int rc = bench_parse(argc, argv, &o);
    if (!tool_begin(&rc, &o.common, bench_usage)) return rc;
    for (int32_t i = 0; o.mem_pair && i < o.n_n_threads; i++)
        if (o.threads[i] > BENCH_MEM_MAX_THREADS) {
            tool_error("--mem-pair: %d threads: the probe runs at most %d (set -t)",
                       (int)o.threads[i], (int)BENCH_MEM_MAX_THREADS);
            return TOOL_EXIT_USAGE;
        }

    bench_test *tests = NULL;
    int32_t n_tests = 0;
    if ((rc = bench_plan(&o, &tests, &n_tests)) != TOOL_EXIT_OK) return rc;
    cs_model *model = NULL;
    bench_probe probe = {0};
    uint64_t *samples_ns = NULL;
    double *samples_ts = NULL;
    if ((rc = bench_load_model(&o, &model)) != TOOL_EXIT_OK) goto done;
    rc = TOOL_EXIT_FAIL;
    samples_ns = malloc((size_t)o.reps * sizeof(uint64_t));
    samples_ts = malloc((size_t)o.reps * sizeof(double));
    if (samples_ns == NULL || samples_ts == NULL) {
        tool_error("out of memory for %d samples", (int)o.reps);
        goto done;
    }
    bench_model_info mi;
    bench_model_describe(model, o.common.model, &mi);
    if (o.mem_pair) {
        probe.bytes = (size_t)(mi.decode_bytes / sizeof(uint64_t) * sizeof(uint64_t));
        probe.buf = bench_mem_buffer(probe.bytes, false, &probe.huge_frac);
        if (!probe.buf) {
            tool_error("--mem-pair: out of memory for a probe buffer of %llu bytes",
                       (unsigned long long)probe.bytes);
            goto done;
        }
    }
    if (o.common.verbose) fprintf(stderr, "system_info: %s\n", cs_system_info());
    rc = bench_run_all(model, &o, &mi, &probe, tests, n_tests, samples_ns, samples_ts);
done:
    bench_mem_buffer_free(probe.buf, probe.bytes);
    free(samples_ts);
    free(samples_ns);
    free(tests);
    cs_model_free(model);
    return rc;
}
