/* cmd_bench_kv.c: `ctxshift bench kv`, the cost of the KV cache operations
 * (docs/KV_CACHE.md) on a full cache of a 110M-parameter model.
 *
 * The cache (-c cells, one sequence) is filled once by decoding random
 * tokens in batches of 512 and saved with cs_state_save; every timed
 * repetition starts from cs_state_load of that image, so all repetitions
 * see the same cells. After one warm-up round the operations run
 * round-robin, r rounds; each row reports mean ± sample sd. Timed:
 *  - memcpy of a buffer of the K+V size (the bandwidth yardstick);
 *  - K-shift: seq_add of the second half of the positions, then only
 *    cs_kv_update is timed; bytes = the n_bytes_shifted increase (K rows
 *    read and written);
 *  - defrag: blocks of 8 positions removed alternately (half the cells
 *    become holes spread over the cache), then cs_kv_defrag and only
 *    cs_kv_update is timed; bytes = 2 x the n_bytes_moved increase (each
 *    row read and written); n_cells_moved is checked against the holes
 *    below `used` counted from cs_kv_view;
 *  - one decoded token over the full cache, over the same cache half
 *    emptied by those removals (the attention window stays -c cells), and
 *    over the compacted half (window -c/2).
 * GB/s counts bytes read plus bytes written; memcpy of B bytes counts 2B. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "tool_context.h"
#include "tools.h"

enum {
    KV_FILL_BATCH = 512, /* tokens per decode while filling */
    KV_HOLE_BLOCK = 8,   /* positions per removed / kept block in the defrag test */
};

typedef struct kv_opts {
    tool_common common; /* -m (default NULL: generate the 110m preset) -c -t -ctk -ctv -v -h */
    int32_t reps;
    int32_t gen_type; /* weight type of the generated model */
    bool json;
} kv_opts;

static void kv_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift bench kv [flags]\n"
            "\n"
            "Measure the KV cache operations on a full cache: K-shift of half the cells,\n"
            "defrag of a half-fragmented cache, memcpy of the K+V size for comparison, and one\n"
            "decoded token over the full, the half-emptied and the compacted cache.\n"
            "\n"
            "  -m,   --model FILE         GGUF model (default: a generated 110m-preset model,\n"
            "                             cached in /tmp, with the Llama SPM vocabulary from\n"
            "                             ../shared/models if present, else the bundled one)\n"
            "        --gen-type TYPE      weight type of the generated model (default: f32)\n"
            "  -c,   --ctx-size N         KV cells, all filled (default: 4096)\n" TOOL_HELP_THREADS
            "  -r,   --repetitions N      timed runs per operation, after one warm-up (default: "
            "5)\n" TOOL_HELP_CACHE_TYPES
            "        --json               print the results as a JSON object\n" TOOL_HELP_VERBOSE
                TOOL_HELP_HELP);
}

static int kv_parse_weight_type(const char *flag, const char *v, int32_t *out) {
    const int32_t t = cs_type_from_name(v);
    if (t < 0) {
        tool_error("%s: '%s' is not a weight type", flag, v);
        return TOOL_EXIT_USAGE;
    }
    *out = t;
    return 0;
}

static int kv_parse(int argc, char **argv, kv_opts *o) {
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
        } else if (tool_arg_is(a, NULL, "--gen-type")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = kv_parse_weight_type(a, v, &o->gen_type);
        } else if (tool_arg_is(a, "-r", "--repetitions")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_i32(a, v, 1, 10000, &o->reps);
        } else {
            rc = tool_arg_unknown("bench kv", a);
        }
        if (rc != 0) return rc;
    }
    if (o->common.n_ctx % (2 * KV_HOLE_BLOCK) != 0) {
        tool_error("-c: %d is not a multiple of %d", (int)o->common.n_ctx, 2 * KV_HOLE_BLOCK);
        return TOOL_EXIT_USAGE;
    }
    return 0;
}

/* ------------------------------------------------------------ the model */

/* The Llama SPM vocabulary in ../shared/models, looked up beside the
 * checkout that holds the bundled model (CMake passes its absolute path)
 * and relative to the working directory. NULL when absent. */
static const char *kv_find_spm_vocab(char *buf, size_t size) {
    static const char rel[] = "shared/models/ggml-vocab-llama-spm.gguf";
    static const char bundled_tail[] = "/models/stories260K-f32.gguf";
    const char *bundled = CS_DEFAULT_MODEL;
    const size_t n = strlen(bundled), nt = strlen(bundled_tail);
    if (n > nt && strcmp(bundled + n - nt, bundled_tail) == 0) {
        snprintf(buf, size, "%.*s/../%s", (int)(n - nt), bundled, rel);
        if (access(buf, R_OK) == 0) return buf;
    }
    snprintf(buf, size, "../%s", rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* Generate the 110m preset once into /tmp (named by preset, weight type
 * and vocabulary; written to a temporary name, then renamed). */
static int kv_default_model(int32_t wtype, char *path, size_t size) {
    char vocab_buf[4096];
    const char *vocab = kv_find_spm_vocab(vocab_buf, sizeof vocab_buf);
    const char *vocab_tag = vocab ? "llama-spm" : "stories260k";
    if (!vocab) vocab = CS_DEFAULT_MODEL;
    snprintf(path, size, "/tmp/ctxshift-bench-kv-110m-%s-%s.gguf", cs_type_name(wtype), vocab_tag);
    if (access(path, R_OK) == 0) {
        fprintf(stderr, "model: %s (cached: 110m preset, %s weights, vocabulary of %s)\n", path,
                cs_type_name(wtype), vocab);
        return 0;
    }
    cs_gen_model_params p;
    memset(&p, 0, sizeof p);
    if (!cs_gen_model_preset("110m", &p)) {
        tool_error("the 110m preset is missing from the library");
        return TOOL_EXIT_FAIL;
    }
    p.type = wtype;
    p.vocab_path = vocab;
    char tmp[4096 + 32];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    fprintf(stderr, "model: generating the 110m preset (%s weights, vocabulary of %s) into %s\n",
            cs_type_name(wtype), vocab, path);
    const cs_status st = cs_gen_model_write(&p, tmp);
    if (st != CS_OK) {
        remove(tmp);
        return tool_fail_lib(st, "gen-model");
    }
    if (rename(tmp, path) != 0) {
        remove(tmp);
        tool_error("%s: cannot rename the generated model", path);
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* ------------------------------------------------------------ samples */

typedef struct kv_result {
    const char *op;    /* machine name (JSON) */
    char label[96];    /* table name */
    double *ms;        /* reps samples */
    double mean, sd;   /* ms */
    uint64_t bytes;    /* read + written per run, 0: not a memory operation */
    const char *check; /* "OK", "MISMATCH" or NULL */
} kv_result;

static void kv_stats(kv_result *r, int32_t reps) {
    double s = 0;
    for (int32_t i = 0; i < reps; i++) s += r->ms[i];
    r->mean = s / reps;
    double v = 0;
    for (int32_t i = 0; i < reps; i++) v += (r->ms[i] - r->mean) * (r->ms[i] - r->mean);
    r->sd = reps > 1 ? sqrt(v / (reps - 1)) : 0.0;
}

static double kv_gbps(const kv_result *r) {
    return r->bytes && r->mean > 0 ? (double)r->bytes / (r->mean * 1e-3) / 1e9 : 0.0;
}

/* ------------------------------------------------------------ the runs */

typedef struct kv_bench {
    const kv_opts *o;
    cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    void *state;
    size_t state_size;
    uint64_t kv_bytes; /* K+V of all cells and layers */
    double fill_ms;
} kv_bench;

static cs_token kv_rand_token(uint64_t *state, int32_t n_vocab) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (cs_token)((x * 0x2545f4914f6cdd1dull >> 33) % (uint64_t)n_vocab);
}

static int kv_decode(kv_bench *b) {
    return tool_decode(b->ctx, b->batch, "decode: no KV slot");
}

static int kv_fill(kv_bench *b) {
    const int32_t n_vocab = cs_model_n_vocab(b->model);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    const cs_seq s0 = 0;
    const uint64_t t0 = tool_time_ns();
    for (int32_t i = 0; i < b->o->common.n_ctx; i += KV_FILL_BATCH) {
        const int32_t nb =
            b->o->common.n_ctx - i < KV_FILL_BATCH ? b->o->common.n_ctx - i : KV_FILL_BATCH;
        cs_batch_clear(b->batch);
        for (int32_t k = 0; k < nb; k++) {
            const cs_status st =
                cs_batch_add(b->batch, kv_rand_token(&rng, n_vocab), i + k, &s0, 1, k == nb - 1);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        const int rc = kv_decode(b);
        if (rc != 0) return rc;
    }
    b->fill_ms = (double)(tool_time_ns() - t0) * 1e-6;
    b->state_size = cs_state_size(b->ctx);
    b->state = malloc(b->state_size ? b->state_size : 1);
    if (!b->state) {
        tool_error("out of memory for a state of %zu bytes", b->state_size);
        return TOOL_EXIT_FAIL;
    }
    size_t written = 0;
    const cs_status st = cs_state_save(b->ctx, b->state, b->state_size, &written);
    if (st != CS_OK) return tool_fail_lib(st, "state save");
    b->state_size = written;
    return 0;
}

static int kv_restore(kv_bench *b) {
    const cs_status st = cs_state_load(b->ctx, b->state, b->state_size);
    return st != CS_OK ? tool_fail_lib(st, "state load") : 0;
}

static int kv_stats_of(const kv_bench *b, cs_kv_info *out) {
    const cs_status st = cs_kv_stats(b->ctx, out);
    return st != CS_OK ? tool_fail_lib(st, "kv stats") : 0;
}

/* Remove alternate blocks of KV_HOLE_BLOCK positions, starting with the
 * first, keeping the last block: half the cells become holes. */
static int kv_punch_holes(kv_bench *b) {
    for (int32_t p = 0; p < b->o->common.n_ctx; p += 2 * KV_HOLE_BLOCK) {
        const cs_status st = cs_kv_seq_rm(b->ctx, 0, p, p + KV_HOLE_BLOCK);
        if (st != CS_OK) return tool_fail_lib(st, "seq_rm");
    }
    return 0;
}

/* Empty cells below `used`, from the cell view: the cells a full defrag
 * must move. */
static int kv_holes_below_used(const kv_bench *b, int64_t *out) {
    const int32_t n = cs_kv_view(b->ctx, NULL, 0);
    cs_kv_cell *cells = malloc((size_t)n * sizeof *cells);
    if (!cells) {
        tool_error("out of memory for %d cells", (int)n);
        return TOOL_EXIT_FAIL;
    }
    cs_kv_view(b->ctx, cells, n);
    const int32_t used = cs_kv_used_cells(b->ctx);
    int64_t h = 0;
    for (int32_t i = 0; i < used && i < n; i++) h += cells[i].pos < 0;
    free(cells);
    *out = h;
    return 0;
}

enum { OP_MEMCPY, OP_SHIFT, OP_DEFRAG, OP_DEC_FULL, OP_DEC_HOLES, OP_DEC_COMPACT, OP_COUNT };

/* One run of operation op; *ms gets the timed part. */
static int kv_run_op(kv_bench *b, int op, uint8_t *src, uint8_t *dst, kv_result *r, double *ms) {
    int rc = 0;
    cs_kv_info s0, s1;
    if (op == OP_MEMCPY) {
        const uint64_t t0 = tool_time_ns();
        memcpy(dst, src, (size_t)b->kv_bytes);
        *ms = (double)(tool_time_ns() - t0) * 1e-6;
        r->bytes = 2 * b->kv_bytes;
        return 0;
    }
    if ((rc = kv_restore(b)) != 0) return rc;
    const int32_t n = b->o->common.n_ctx;
    if (op == OP_SHIFT) {
        const cs_status st = cs_kv_seq_add(b->ctx, 0, n / 2, -1, -n / 4);
        if (st != CS_OK) return tool_fail_lib(st, "seq_add");
        if ((rc = kv_stats_of(b, &s0)) != 0) return rc;
        const uint64_t t0 = tool_time_ns();
        cs_kv_update(b->ctx);
        *ms = (double)(tool_time_ns() - t0) * 1e-6;
        if ((rc = kv_stats_of(b, &s1)) != 0) return rc;
        r->bytes = s1.n_bytes_shifted - s0.n_bytes_shifted;
        const bool ok = s1.n_cells_shifted - s0.n_cells_shifted == (uint64_t)(n - n / 2) &&
                        s1.n_pending_shift == 0;
        if (!ok || !r->check) r->check = ok ? "OK" : "MISMATCH";
        return 0;
    }
    if ((rc = kv_punch_holes(b)) != 0) return rc;
    if (op == OP_DEFRAG || op == OP_DEC_COMPACT) {
        int64_t holes = 0;
        if ((rc = kv_holes_below_used(b, &holes)) != 0) return rc;
        if ((rc = kv_stats_of(b, &s0)) != 0) return rc;
        cs_kv_defrag(b->ctx);
        const uint64_t t0 = tool_time_ns();
        cs_kv_update(b->ctx);
        const double t = (double)(tool_time_ns() - t0) * 1e-6;
        if ((rc = kv_stats_of(b, &s1)) != 0) return rc;
        if (op == OP_DEFRAG) {
            *ms = t;
            r->bytes = 2 * (s1.n_bytes_moved - s0.n_bytes_moved);
            const bool ok =
                (int64_t)(s1.n_cells_moved - s0.n_cells_moved) == holes && s1.cell_max == s1.used;
            if (!ok || !r->check) r->check = ok ? "OK" : "MISMATCH";
            return 0;
        }
    }
    if (op == OP_DEC_FULL) {
        /* free the last cell so that the token fits; the window stays n */
        const cs_status st = cs_kv_seq_rm(b->ctx, 0, n - 1, -1);
        if (st != CS_OK) return tool_fail_lib(st, "seq_rm");
    }
    const cs_seq s = 0;
    const cs_pos pos = op == OP_DEC_FULL ? n - 1 : n;
    cs_batch_clear(b->batch);
    const cs_status st = cs_batch_add(b->batch, 1 % cs_model_n_vocab(b->model), pos, &s, 1, true);
    if (st != CS_OK) return tool_fail_lib(st, "batch");
    if ((rc = kv_stats_of(b, &s0)) != 0) return rc;
    const uint64_t t0 = tool_time_ns();
    rc = kv_decode(b);
    *ms = (double)(tool_time_ns() - t0) * 1e-6;
    if (rc != 0) return rc;
    /* the window before the token is placed: n - 1 (the freed last cell is
     * where the token goes), n (the token fills a hole), n / 2 */
    const int32_t want = op == OP_DEC_FULL ? n - 1 : op == OP_DEC_HOLES ? n : n / 2;
    if (s0.cell_max != want || !r->check) r->check = s0.cell_max == want ? "OK" : "MISMATCH";
    return 0;
}

static int kv_measure(kv_bench *b, kv_result *res) {
    const int32_t reps = b->o->reps;
    uint8_t *src = malloc((size_t)b->kv_bytes), *dst = malloc((size_t)b->kv_bytes);
    int rc = TOOL_EXIT_FAIL;
    if (!src || !dst) {
        tool_error("out of memory for two buffers of %llu bytes", (unsigned long long)b->kv_bytes);
        goto done;
    }
    memset(src, 1, (size_t)b->kv_bytes); /* fault the pages in before timing */
    memset(dst, 2, (size_t)b->kv_bytes);
    /* one warm-up round, then the operations round-robin, so that a
     * disturbance (another process) spreads over all of them */
    for (int op = 0; op < OP_COUNT; op++) {
        double warm = 0;
        if ((rc = kv_run_op(b, op, src, dst, &res[op], &warm)) != 0) goto done;
    }
    for (int32_t i = 0; i < reps; i++)
        for (int op = 0; op < OP_COUNT; op++)
            if ((rc = kv_run_op(b, op, src, dst, &res[op], &res[op].ms[i])) != 0) goto done;
    for (int op = 0; op < OP_COUNT; op++) kv_stats(&res[op], reps);
    rc = 0;
done:
    free(src);
    free(dst);
    return rc;
}

/* ------------------------------------------------------------ output */

static void kv_print_table(const kv_bench *b, const kv_result *res, const char *desc) {
    const double memcpy_gbps = kv_gbps(&res[OP_MEMCPY]);
    printf("model: %s, cache %d cells, K %s, V %s, %d threads, %d reps (fill: %.0f ms)\n\n", desc,
           (int)b->o->common.n_ctx, cs_type_name(b->o->common.type_k),
           cs_type_name(b->o->common.type_v), (int)b->o->common.n_threads, (int)b->o->reps,
           b->fill_ms);
    printf("| %-40s | %19s | %12s | %7s | %8s | %-8s |\n", "operation", "ms", "bytes", "GB/s",
           "% memcpy", "check");
    printf("| ---------------------------------------- | ------------------: | -----------: | "
           "------: | -------: | -------- |\n");
    for (int op = 0; op < OP_COUNT; op++) {
        const kv_result *r = &res[op];
        char ms[48], bytes[24], gbps[16], pct[16];
        snprintf(ms, sizeof ms, "%.3f ± %.3f", r->mean, r->sd);
        if (r->bytes) {
            snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)r->bytes);
            snprintf(gbps, sizeof gbps, "%.2f", kv_gbps(r));
            snprintf(pct, sizeof pct, "%.0f %%",
                     memcpy_gbps > 0 ? 100.0 * kv_gbps(r) / memcpy_gbps : 0.0);
        } else {
            snprintf(bytes, sizeof bytes, "-");
            snprintf(gbps, sizeof gbps, "-");
            snprintf(pct, sizeof pct, "-");
        }
        /* "±" is two bytes but one column: pad by one more */
        printf("| %-40s | %20s | %12s | %7s | %8s | %-8s |\n", r->label, ms, bytes, gbps, pct,
               r->check ? r->check : "");
    }
}

static void kv_print_json(const kv_bench *b, const kv_result *res, const char *path,
                          const char *desc) {
    const double memcpy_gbps = kv_gbps(&res[OP_MEMCPY]);
    printf("{\n  \"model_filename\": ");
    tool_json_string(stdout, path, strlen(path));
    printf(",\n  \"model_type\": ");
    tool_json_string(stdout, desc, strlen(desc));
    printf(",\n  \"n_ctx\": %d,\n  \"type_k\": \"%s\",\n  \"type_v\": \"%s\",\n",
           (int)b->o->common.n_ctx, cs_type_name(b->o->common.type_k),
           cs_type_name(b->o->common.type_v));
    printf("  \"n_threads\": %d,\n  \"reps\": %d,\n  \"fill_ms\": %.3f,\n",
           (int)b->o->common.n_threads, (int)b->o->reps, b->fill_ms);
    printf("  \"kv_bytes\": %llu,\n  \"results\": [\n", (unsigned long long)b->kv_bytes);
    for (int op = 0; op < OP_COUNT; op++) {
        const kv_result *r = &res[op];
        printf("    {\"op\": \"%s\", \"label\": ", r->op);
        tool_json_string(stdout, r->label, strlen(r->label));
        printf(", \"ms_mean\": %.6f, \"ms_sd\": %.6f, \"bytes\": %llu", r->mean, r->sd,
               (unsigned long long)r->bytes);
        if (r->bytes) {
            printf(", \"gb_per_s\": %.4f, \"pct_memcpy\": %.2f", kv_gbps(r),
                   memcpy_gbps > 0 ? 100.0 * kv_gbps(r) / memcpy_gbps : 0.0);
        }
        printf(", \"check\": %s%s%s, \"samples_ms\": [", r->check ? "\"" : "",
               r->check ? r->check : "null", r->check ? "\"" : "");
        for (int32_t i = 0; i < b->o->reps; i++) printf("%s%.6f", i ? ", " : "", r->ms[i]);
        printf("]}%s\n", op + 1 < OP_COUNT ? "," : "");
    }
    printf("  ]\n}\n");
}

/* ------------------------------------------------------------ entry */

int cmd_bench_kv(int argc, char **argv) {
    kv_opts o = {
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_THREADS | TOOL_FLAG_CTX |
                                       TOOL_FLAG_CACHE_TYPES),
        .reps = 5,
        .gen_type = CS_TYPE_F32,
    };
    o.common.model = NULL;
    o.common.n_ctx = 4096;
    o.common.ctx_min = 4 * KV_HOLE_BLOCK;
    o.common.ctx_max = 1 << 20;
    o.common.n_batch = KV_FILL_BATCH;
    o.common.n_threads = tool_default_threads();
    int rc = kv_parse(argc, argv, &o);
    if (!tool_begin(&rc, &o.common, kv_usage)) return rc;

    kv_bench b;
    memset(&b, 0, sizeof b);
    b.o = &o;
    kv_result res[OP_COUNT];
    memset(res, 0, sizeof res);
    double *samples = calloc((size_t)OP_COUNT * (size_t)o.reps, sizeof(double));
    char gen_path[4096];
    const char *path = o.common.model;
    if (!samples) {
        tool_error("out of memory for %d samples", (int)o.reps);
        return TOOL_EXIT_FAIL;
    }
    if (!path) {
        if ((rc = kv_default_model(o.gen_type, gen_path, sizeof gen_path)) != 0) goto done;
        path = gen_path;
    }
    if ((rc = tool_load_model(path, false, &b.model)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;

    if ((rc = tool_context_new(b.model, &o.common, 1, &b.ctx)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;
    const cs_status bs = cs_batch_new(KV_FILL_BATCH, 1, &b.batch);
    if (bs != CS_OK) {
        rc = tool_fail_lib(bs, "batch");
        goto done;
    }
    /* K+V bytes of the whole cache, from the model's shape and the types */
    const int64_t n_embd_kv = (int64_t)cs_model_n_head_kv(b.model) *
                              (cs_model_n_embd(b.model) / cs_model_n_head(b.model));
    const int32_t types[2] = {o.common.type_k, o.common.type_v};
    b.kv_bytes = 0;
    for (int i = 0; i < 2; i++) {
        const uint64_t row = types[i] == CS_TYPE_F32   ? (uint64_t)n_embd_kv * 4
                             : types[i] == CS_TYPE_F16 ? (uint64_t)n_embd_kv * 2
                                                       : (uint64_t)n_embd_kv / 32 * 34;
        b.kv_bytes += row * (uint64_t)o.common.n_ctx * (uint64_t)cs_model_n_layer(b.model);
    }
    char desc[128];
    cs_model_desc(b.model, desc, sizeof desc);
    if (o.common.verbose) fprintf(stderr, "system_info: %s\n", cs_system_info());
    fprintf(stderr, "filling %d cells in batches of %d ...\n", (int)o.common.n_ctx, KV_FILL_BATCH);
    if ((rc = kv_fill(&b)) != 0) goto done;
    fprintf(stderr, "filled in %.1f s; state image %zu bytes\n", b.fill_ms * 1e-3, b.state_size);

    const int32_t n = o.common.n_ctx;
    static const char *const ops[OP_COUNT] = {"memcpy",      "kshift",       "defrag",
                                              "decode_full", "decode_holes", "decode_compact"};
    for (int op = 0; op < OP_COUNT; op++) {
        res[op].op = ops[op];
        res[op].ms = samples + (size_t)op * (size_t)o.reps;
    }
    snprintf(res[OP_MEMCPY].label, sizeof res[0].label, "memcpy K+V (%.1f MiB)",
             (double)b.kv_bytes / (1024.0 * 1024.0));
    snprintf(res[OP_SHIFT].label, sizeof res[0].label, "K-shift of %d cells (update)", n - n / 2);
    snprintf(res[OP_DEFRAG].label, sizeof res[0].label, "defrag, %d holes in %d (update)", n / 2,
             n);
    snprintf(res[OP_DEC_FULL].label, sizeof res[0].label, "decode 1 token, full (window %d)", n);
    snprintf(res[OP_DEC_HOLES].label, sizeof res[0].label, "decode 1 token, half empty (window %d)",
             n);
    snprintf(res[OP_DEC_COMPACT].label, sizeof res[0].label,
             "decode 1 token, compacted (window %d)", n / 2);
    if ((rc = kv_measure(&b, res)) != 0) goto done;
    if (o.json) {
        kv_print_json(&b, res, path, desc);
    } else {
        kv_print_table(&b, res, desc);
    }
    rc = 0;
    for (int op = 0; op < OP_COUNT; op++)
        if (res[op].check && strcmp(res[op].check, "OK") != 0) rc = TOOL_EXIT_FAIL;
done:
    free(samples);
    free(b.state);
    cs_batch_free(b.batch);
    cs_context_free(b.ctx);
    cs_model_free(b.model);
    return rc;
}
