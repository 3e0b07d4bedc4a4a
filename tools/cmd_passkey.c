/* cmd_passkey.c: `ctxshift passkey`, llama.cpp's passkey retrieval test
 * (docs/KV_CACHE_SPEC.md §5).
 *
 * A pass key is hidden at a chosen depth in a long run of junk sentences;
 * the prompt is processed in batches, with self-extend (seq_add + seq_div)
 * while it fits the grouped context and with context shifts (seq_rm +
 * seq_add) once it does not; then 16 greedy tokens answer "What is the
 * pass key?". The lines printed are llama-passkey's ("main: processed: [a,
 * b)", "main: shifting KV cache with N", "main: passkey = ..."), all on
 * stdout in order, followed by the answer on its own line and a verdict.
 *
 * Differences from llama-passkey (c392e509), each documented in docs/CLI.md:
 * - The key and a random position come from our own PRNG (splitmix64) seeded
 *   by --seed, printed; llama.cpp calls rand() unseeded.
 * - Settings where llama.cpp's loop breaks are checked up front (usage error,
 *   exit 2) or handled: the last fill batch stops at the usable context when
 *   it is not a multiple of -b (llama.cpp overruns it and decodes the tokens
 *   after it twice), logits are requested only for the prompt's last token,
 *   the answer always gets free cells, and a batch that cannot be placed ends
 *   the run with a message (exit 1). With -b dividing the context (the golden
 *   runs) every call is the same as llama.cpp's.
 * - pos_max of an empty sequence is -1 here (0 in llama.cpp), so with
 *   --keep 0 a shift that empties the cache restarts at position 0.
 *
 * --sweep runs a grid of key depths x junk lengths and writes a CSV and an
 * SVG heatmap. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "kvmap.h"
#include "tool_context.h"
#include "tools.h"

/* ------------------------------------------------------------ constants */

enum {
    PK_N_PREDICT = 16,      /* answer tokens, as llama-passkey */
    PK_DEFAULT_JUNK = 250,  /* llama-passkey's default */
    PK_DEFAULT_KEEP = 32,   /* llama.cpp PR #5691's fixed n_keep */
    PK_DEFAULT_BATCH = 512, /* llama.cpp PR #5691's n_batch */
    PK_MAX_JUNK = 100000,   /* ~9 MB of prompt text */
    PK_MAX_GRP = 64,        /* self-extend group factor */
    PK_KEY_RANGE = 50000,   /* drawn keys are 1 .. 50000, as llama.cpp */
    PK_MAX_SWEEP = 32,      /* values per sweep axis */
    PK_DEFAULT_DEPTHS = 5,  /* 0, 25, 50, 75, 100 % */
    PK_ANSWER_MAX = 1024,   /* answer bytes kept for the verdict and the CSV */
};

/* The prompt pieces of spec §5.2 (llama-passkey's text, byte for byte). */
static const char pk_prefix[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there.";
static const char pk_junk[] =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
static const char pk_suffix[] = " What is the pass key? The pass key is";

/* ------------------------------------------------------------ options */

typedef struct pk_opts {
    tool_common common; /* -m -b -t -ctk -ctv --kv-map --kv-map-svg -v -h */
    int32_t n_junk;
    int32_t i_pos;  /* -1: drawn */
    int32_t n_keep; /* -1: the prefix tokens (BOS + instruction) */
    int32_t n_grp;
    int32_t n_ctx_train; /* 0: the model's */
    int64_t key;         /* -1: drawn */
    int64_t seed;        /* -1: random, printed */
    bool sweep;
    const char *sweep_junk; /* comma list */
    int32_t sweep_depths;
    const char *sweep_csv;
    const char *sweep_svg;
    bool print_prompt; /* hidden: print the prompt and exit (tests) */
    bool print_ids;    /* print the answer's token ids (tests against llama.cpp) */
} pk_opts;

static void pk_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift passkey [flags]\n"
            "\n"
            "llama.cpp's passkey retrieval test: a pass key hidden in junk text, the prompt\n"
            "processed with self-extend and context shift, then 16 greedy answer tokens.\n"
            "\n"
            "  -m,   --model FILE         GGUF model (default: %s)\n"
            "        --junk N             junk sentences (default: %d)\n"
            "        --pos I              insert the key before junk sentence I; -1 = drawn from\n"
            "                             the seed (default: -1)\n"
            "        --keep K             positions never discarded by a shift; -1 = the prefix\n"
            "                             tokens (default: %d)\n"
            "        --grp-attn-n G       self-extend group factor; the context is\n"
            "                             n_ctx_train*G + K cells (default: 1)\n"
            "  -b,   --batch-size B       tokens per batch and per shift; G must divide it\n"
            "                             (default: %d)\n"
            "        --key N              the pass key; -1 = drawn from the seed (default: -1)\n"
            "  -s,   --seed S             seed of the key / position draw; -1 = random, printed\n"
            "                             (default: -1)\n"
            "  -c,   --ctx-train N        use N instead of the model's training context in the\n"
            "                             sizing (default: the model's)\n" TOOL_HELP_THREADS
                TOOL_HELP_CACHE_TYPES
            "        --kv-map             print a map of the cache after every compression and "
            "shift\n"
            "        --kv-map-svg FILE    write the maps as an SVG timeline\n"
            "        --print-ids          print the answer's token ids (\"answer ids: ...\")\n"
            "        --sweep              run a grid of key depths x junk lengths instead\n"
            "        --sweep-junk LIST    junk values of the grid (default: 25,50,100,200)\n"
            "        --sweep-depths N     key depths 0..100%% of the junk (default: %d)\n"
            "        --sweep-csv FILE     the grid's results (default: passkey_sweep.csv)\n"
            "        --sweep-svg FILE     the grid's heatmap (default: "
            "passkey_sweep.svg)\n" TOOL_HELP_VERBOSE TOOL_HELP_HELP "\n"
            "The golden llama.cpp runs: --junk 250 --pos 90 --keep 32 -b 2048 --key 39384\n"
            "-ctk f32 -ctv f32 [--grp-attn-n 4].\n",
            CS_DEFAULT_MODEL, PK_DEFAULT_JUNK, PK_DEFAULT_KEEP, PK_DEFAULT_BATCH,
            PK_DEFAULT_DEPTHS);
}

static void pk_defaults(pk_opts *o) {
    *o = (pk_opts){
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_THREADS | TOOL_FLAG_BATCH |
                                       TOOL_FLAG_CACHE_TYPES | TOOL_FLAG_KV_MAP),
        .n_junk = PK_DEFAULT_JUNK,
        .i_pos = -1,
        .n_keep = PK_DEFAULT_KEEP,
        .n_grp = 1,
        .key = -1,
        .seed = -1,
        .sweep_junk = "25,50,100,200",
        .sweep_depths = PK_DEFAULT_DEPTHS,
        .sweep_csv = "passkey_sweep.csv",
        .sweep_svg = "passkey_sweep.svg",
    };
    o->common.n_batch = PK_DEFAULT_BATCH;
}

static int pk_parse(int argc, char **argv, pk_opts *o) {
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &o->common, &handled);
        if (rc != 0) return rc;
        if (handled) continue;
        if (tool_arg_is(a, NULL, "--sweep")) {
            o->sweep = true;
        } else if (tool_arg_is(a, NULL, "--print-prompt")) {
            o->print_prompt = true;
        } else if (tool_arg_is(a, NULL, "--print-ids")) {
            o->print_ids = true;
        } else if (tool_arg_is(a, NULL, "--junk")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, PK_MAX_JUNK, &o->n_junk);
        } else if (tool_arg_is(a, NULL, "--pos")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -1, PK_MAX_JUNK - 1, &o->i_pos);
        } else if (tool_arg_is(a, NULL, "--keep")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -1, INT32_MAX, &o->n_keep);
        } else if (tool_arg_is(a, NULL, "--grp-attn-n")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, PK_MAX_GRP, &o->n_grp);
        } else if (tool_arg_is(a, NULL, "--key")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i64(a, v, -1, INT32_MAX, &o->key);
        } else if (tool_arg_is(a, "-s", "--seed")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i64(a, v, -1, INT64_MAX, &o->seed);
        } else if (tool_arg_is(a, "-c", "--ctx-train")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, INT32_MAX, &o->n_ctx_train);
        } else if (tool_arg_is(a, NULL, "--sweep-junk")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->sweep_junk = v;
        } else if (tool_arg_is(a, NULL, "--sweep-depths")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, PK_MAX_SWEEP, &o->sweep_depths);
        } else if (tool_arg_is(a, NULL, "--sweep-csv")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->sweep_csv = v;
        } else if (tool_arg_is(a, NULL, "--sweep-svg")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->sweep_svg = v;
        } else {
            rc = tool_arg_unknown("passkey", a);
        }
        if (rc != 0) return rc;
    }
    /* Checks that need no model (llama.cpp asserts or divides by zero here). */
    if (o->common.n_batch % o->n_grp != 0) {
        tool_error("passkey: -b %d is not a multiple of --grp-attn-n %d (self-extend compresses "
                   "each batch into b/G positions)",
                   (int)o->common.n_batch, (int)o->n_grp);
        return TOOL_EXIT_USAGE;
    }
    if (!o->sweep && o->i_pos >= o->n_junk) {
        tool_error("passkey: --pos %d is outside the junk sentences [0, %d) (-1 draws one)",
                   (int)o->i_pos, (int)o->n_junk);
        return TOOL_EXIT_USAGE;
    }
    if (o->sweep && (o->common.kv_map || o->common.kv_map_svg != NULL)) {
        tool_error("passkey: --kv-map and --kv-map-svg draw a single run; not with --sweep");
        return TOOL_EXIT_USAGE;
    }
    return 0;
}

/* ------------------------------------------------------------ PRNG */

/* splitmix64 (Steele et al.): the documented source of drawn keys and
 * positions, so a printed seed reproduces a run on any platform. */
static uint64_t pk_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t pk_random_seed(void) {
    uint64_t s = tool_time_ns() ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    return pk_next(&s) & 0xffffffffull; /* short enough to type back with -s */
}

/* ------------------------------------------------------------ prompt */

/* The prompt of spec §5.2: prefix, the junk sentences with the key sentence
 * before junk sentence i_pos, the suffix. Returns a heap string (free()) and
 * its length, or NULL when out of memory (message printed). O(n_junk). */
static char *pk_build_prompt(int32_t n_junk, int32_t i_pos, int64_t key, size_t *len) {
    char key_text[128];
    const int nk = snprintf(
        key_text, sizeof(key_text),
        " The pass key is %" PRId64 ". Remember it. %" PRId64 " is the pass key.", key, key);
    const size_t lp = sizeof(pk_prefix) - 1, lj = sizeof(pk_junk) - 1, ls = sizeof(pk_suffix) - 1;
    /* n_junk <= PK_MAX_JUNK keeps this far below SIZE_MAX */
    const size_t total = lp + (size_t)n_junk * lj + (size_t)nk + ls;
    char *s = malloc(total + 1);
    if (s == NULL) {
        tool_error("out of memory for a prompt of %zu bytes", total);
        return NULL;
    }
    size_t n = 0;
    memcpy(s + n, pk_prefix, lp);
    n += lp;
    for (int32_t i = 0; i < n_junk; i++) {
        if (i == i_pos) {
            memcpy(s + n, key_text, (size_t)nk);
            n += (size_t)nk;
        }
        memcpy(s + n, pk_junk, lj);
        n += lj;
    }
    memcpy(s + n, pk_suffix, ls);
    n += ls;
    s[n] = '\0';
    *len = n;
    return s;
}

/* ------------------------------------------------------------ one run */

typedef struct pk_run_cfg {
    int32_t n_junk;
    int32_t i_pos;
    int64_t key;
    int32_t n_keep; /* -1: the prefix tokens */
    int32_t n_grp;
    int32_t n_batch;
    int32_t n_ctx;  /* usable span: n_ctx_train * n_grp */
    bool quiet;     /* sweep: no progress lines */
    bool print_ids; /* an "answer ids:" line before the verdict */
    tool_kvmap *map;
} pk_run_cfg;

typedef struct pk_result {
    int32_t n_tokens;
    int32_t n_prefix;
    bool found;
    char answer[PK_ANSWER_MAX];
    size_t answer_len;
    cs_token ids[PK_N_PREDICT]; /* the answer's tokens, n_ids */
    int32_t n_ids;
} pk_result;

/* Run state shared by the phases. */
typedef struct pk_state {
    const cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    const pk_run_cfg *cfg;
    char *prompt;
    cs_token *tokens; /* the prompt's, n_tokens */
    int32_t n_tokens;
    cs_token *prefix_tokens;
    char *piece; /* text of the last answer token, piece_cap bytes */
    size_t piece_cap;
    int32_t n_keep;
    int32_t n_past;
    float *logits; /* the logits of the last decoded token, copied */
    int32_t n_vocab;
} pk_state;

static void pk_map(pk_state *s, const char *label) {
    if (s->cfg->map != NULL) tool_kvmap_event(s->cfg->map, s->ctx, label);
}

/* Decode tokens[i0, i1) at positions n_past.. in seq 0, logits for the last
 * token when it is the prompt's last. */
static int pk_decode_chunk(pk_state *s, int32_t i0, int32_t i1) {
    const cs_seq seq0 = 0;
    const int32_t n = i1 - i0;
    cs_kv_info info;
    cs_kv_stats(s->ctx, &info);
    if (info.size - info.used < n) {
        tool_error("passkey: %d free KV cells for the %d tokens [%d, %d) (%d of %d cells hold "
                   "kept positions); use a smaller --keep or -b",
                   (int)(info.size - info.used), (int)n, (int)i0, (int)i1, (int)info.used,
                   (int)info.size);
        return TOOL_EXIT_FAIL;
    }
    cs_batch_clear(s->batch);
    for (int32_t j = i0; j < i1; j++) {
        const cs_status st =
            cs_batch_add(s->batch, s->tokens[j], s->n_past++, &seq0, 1, j == s->n_tokens - 1);
        if (st != CS_OK) return tool_fail_lib(st, "batch");
    }
    const int rc = tool_decode(s->ctx, s->batch, "passkey: no KV slot for the tokens [%d, %d)",
                               (int)i0, (int)i1);
    if (rc != 0) return rc;
    if (i1 == s->n_tokens) {
        const float *l = cs_get_logits_ith(s->ctx, n - 1);
        if (l == NULL) {
            tool_error("passkey: decode returned no logits");
            return TOOL_EXIT_FAIL;
        }
        memcpy(s->logits, l, (size_t)s->n_vocab * sizeof(float));
    }
    if (!s->cfg->quiet) {
        printf("main: processed: [%6d, %6d)\n", (int)i0, (int)i1);
        fflush(stdout);
    }
    return 0;
}

/* The context shift of spec §5.5: drop positions [n_keep, n_keep + n_discard)
 * and move [n_keep + n_discard, n_ctx) down; n_past = pos_max + 1. */
static int pk_shift(pk_state *s, int32_t n_discard, const char *what) {
    const int32_t k = s->n_keep;
    const int64_t end = (int64_t)k + n_discard;
    const cs_pos p1 = end > INT32_MAX ? INT32_MAX : (cs_pos)end;
    cs_status st = cs_kv_seq_rm(s->ctx, 0, k, p1);
    if (st == CS_OK && p1 < s->cfg->n_ctx)
        st = cs_kv_seq_add(s->ctx, 0, p1, s->cfg->n_ctx, -n_discard);
    if (st != CS_OK) return tool_fail_lib(st, "context shift");
    char label[96];
    snprintf(label, sizeof(label), "%s: discard %d", what, (int)n_discard);
    pk_map(s, label);
    if ((st = cs_kv_update(s->ctx)) != CS_OK) return tool_fail_lib(st, "update");
    s->n_past = cs_kv_seq_pos_max(s->ctx, 0) + 1;
    return 0;
}

static int32_t pk_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (x[i] > x[best]) best = i;
    }
    return best;
}

static void pk_state_free(pk_state *s) {
    free(s->piece);
    free(s->prefix_tokens);
    free(s->tokens);
    free(s->prompt);
    free(s->logits);
}

/* Build and tokenize the prompt of cfg on a cleared cache, work out n_keep
 * and print the run's header. */
static int pk_prepare(pk_state *s, pk_result *res) {
    const pk_run_cfg *cfg = s->cfg;
    s->n_vocab = cs_model_n_vocab(s->model);
    s->logits = malloc((size_t)s->n_vocab * sizeof(float));
    if (s->logits == NULL) {
        tool_error("out of memory for %d logits", (int)s->n_vocab);
        return TOOL_EXIT_FAIL;
    }
    cs_kv_clear(s->ctx);

    size_t prompt_len = 0;
    int32_t n_prefix = 0;
    s->prompt = pk_build_prompt(cfg->n_junk, cfg->i_pos, cfg->key, &prompt_len);
    if (s->prompt == NULL) return TOOL_EXIT_FAIL;
    int rc = tool_tokenize(s->model, s->prompt, prompt_len, true, false, &s->tokens, &s->n_tokens);
    if (rc == 0) {
        rc = tool_tokenize(s->model, pk_prefix, sizeof(pk_prefix) - 1, true, false,
                           &s->prefix_tokens, &n_prefix);
    }
    if (rc != 0) return rc;
    res->n_tokens = s->n_tokens;
    res->n_prefix = n_prefix;
    s->n_keep = cfg->n_keep >= 0 ? cfg->n_keep : n_prefix;
    if (s->n_keep >= cfg->n_ctx) {
        tool_error("passkey: --keep %d must be smaller than the context (%d positions = "
                   "n_ctx_train * grp-attn-n)",
                   (int)s->n_keep, (int)cfg->n_ctx);
        return TOOL_EXIT_USAGE;
    }
    if (!cfg->quiet) {
        printf("main: n_len = %d, n_ctx = %d, n_kv_req = %d, n_grp = %d, n_batch = %d, n_junk = "
               "%d, i_pos = %d\n",
               (int)(s->n_tokens + PK_N_PREDICT), (int)cfg->n_ctx, (int)cs_n_ctx(s->ctx),
               (int)cfg->n_grp, (int)cfg->n_batch, (int)cfg->n_junk, (int)cfg->i_pos);
        printf("prefix tokens: %d\n", (int)n_prefix);
        printf("prompt tokens: %d\n", (int)s->n_tokens);
        if (cfg->n_keep < 0) printf("main: n_keep = %d (the prefix tokens)\n", (int)s->n_keep);
        fflush(stdout);
    }
    if (s->n_tokens == 0) {
        tool_error("passkey: the prompt has no tokens");
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* Self-extend before fill batch i (i > 0): group the previous batch's
 * positions by n_grp, after moving them by the earlier batches' saving. */
static int pk_group_batch(pk_state *s, int32_t i) {
    const int32_t n_batch = s->cfg->n_batch, n_grp = s->cfg->n_grp;
    const int32_t ib = i / n_batch - 1;
    const int32_t bd = (n_batch / n_grp) * (n_grp - 1);
    cs_status st = cs_kv_seq_add(s->ctx, 0, s->n_past - n_batch, s->n_past, ib * bd);
    if (st == CS_OK)
        st = cs_kv_seq_div(s->ctx, 0, s->n_past - n_batch + ib * bd, s->n_past + ib * bd, n_grp);
    if (st != CS_OK) return tool_fail_lib(st, "self-extend");
    char label[96];
    snprintf(label, sizeof(label), "self-extend: batch %d grouped by %d", (int)ib, (int)n_grp);
    pk_map(s, label);
    if ((st = cs_kv_update(s->ctx)) != CS_OK) return tool_fail_lib(st, "update");
    s->n_past = cs_kv_seq_pos_max(s->ctx, 0) + 1;
    return 0;
}

/* Fill phase (§5.4): batches while the usable context lasts; with
 * self-extend each earlier batch is compressed by n_grp first. The last
 * fill batch stops at n_ctx (llama.cpp overruns it when -b does not divide
 * n_ctx). *done_prompt: the whole prompt was decoded. */
static int pk_fill(pk_state *s, bool *done_prompt) {
    const int32_t n_ctx = s->cfg->n_ctx, n_batch = s->cfg->n_batch;
    *done_prompt = false;
    for (int32_t i = 0; i < n_ctx; i += n_batch) {
        int rc = 0;
        if (i > 0 && s->cfg->n_grp > 1 && (rc = pk_group_batch(s, i)) != 0) return rc;
        int32_t i1 = i + n_batch;
        if (i1 > s->n_tokens) i1 = s->n_tokens;
        if (i1 > n_ctx) i1 = n_ctx;
        if ((rc = pk_decode_chunk(s, i, i1)) != 0) return rc;
        if (i1 == s->n_tokens) {
            *done_prompt = true;
            break;
        }
    }
    return 0;
}

/* Context-shift phase (§5.5): discard n_batch positions after n_keep
 * before each further batch. */
static int pk_shift_rest(pk_state *s) {
    const int32_t n_batch = s->cfg->n_batch;
    for (int32_t i = s->cfg->n_ctx; i < s->n_tokens; i += n_batch) {
        if (!s->cfg->quiet) printf("main: shifting KV cache with %d\n", (int)n_batch);
        int rc = pk_shift(s, n_batch, "context shift");
        if (rc != 0) return rc;
        const int32_t i1 = s->n_tokens - i < n_batch ? s->n_tokens : i + n_batch;
        if ((rc = pk_decode_chunk(s, i, i1)) != 0) return rc;
    }
    return 0;
}

/* Room for the answer: llama.cpp's n_past - n_ctx + n_predict, and at
 * least enough free cells for the answer tokens. */
static int pk_answer_room(pk_state *s) {
    cs_kv_info info;
    cs_kv_stats(s->ctx, &info);
    int32_t n_discard = s->n_past - s->cfg->n_ctx + PK_N_PREDICT;
    const int32_t need = PK_N_PREDICT - (info.size - info.used);
    if (need > n_discard) n_discard = need;
    /* each discarded position frees at least one cell */
    if (n_discard > s->n_past - s->n_keep && need <= s->n_past - s->n_keep)
        n_discard = s->n_past - s->n_keep;
    if (n_discard <= 0) return 0;
    if (s->n_past - s->n_keep < n_discard) {
        tool_error("passkey: no room for the answer: %d of %d cells used and --keep %d "
                   "protects them",
                   (int)info.used, (int)info.size, (int)s->n_keep);
        return TOOL_EXIT_FAIL;
    }
    if (!s->cfg->quiet) {
        printf("main: shifting KV cache with %d to free space for the answer\n", (int)n_discard);
    }
    return pk_shift(s, n_discard, "shift for the answer");
}

/* Decode answer token tok (number k of the answer) and copy its logits. */
static int pk_decode_answer(pk_state *s, cs_token tok, int32_t k) {
    const cs_seq seq0 = 0;
    cs_batch_clear(s->batch);
    const cs_status st = cs_batch_add(s->batch, tok, s->n_past++, &seq0, 1, true);
    if (st != CS_OK) return tool_fail_lib(st, "batch");
    const int rc = tool_decode(s->ctx, s->batch, "passkey: no KV slot for answer token %d", (int)k);
    if (rc != 0) return rc;
    const float *l = cs_get_logits_ith(s->ctx, 0);
    if (l == NULL) {
        tool_error("passkey: decode returned no logits");
        return TOOL_EXIT_FAIL;
    }
    memcpy(s->logits, l, (size_t)s->n_vocab * sizeof(float));
    return 0;
}

/* Greedy answer (§5.6): at most PK_N_PREDICT tokens, stop at EOG; then the
 * verdict: does the answer contain the key. */
static int pk_answer(pk_state *s, pk_result *res) {
    const pk_run_cfg *cfg = s->cfg;
    const uint64_t t0 = tool_time_ns();
    const int32_t n_len = s->n_tokens + PK_N_PREDICT;
    int32_t n_decode = 0;
    for (int32_t n_cur = s->n_tokens; n_cur < n_len; n_cur++) {
        const cs_token tok = pk_argmax(s->logits, s->n_vocab);
        if (cs_token_is_eog(s->model, tok)) break;
        const int32_t n = tool_token_piece(s->model, tok, false, &s->piece, &s->piece_cap);
        if (n < 0) {
            tool_error("passkey: cannot print token %d", (int)tok);
            return TOOL_EXIT_FAIL;
        }
        if (!cfg->quiet) {
            fwrite(s->piece, 1, (size_t)n, stdout);
            fflush(stdout);
        }
        res->ids[res->n_ids++] = tok; /* at most PK_N_PREDICT iterations */
        if (res->answer_len + (size_t)n < sizeof(res->answer)) {
            memcpy(res->answer + res->answer_len, s->piece, (size_t)n);
            res->answer_len += (size_t)n;
            res->answer[res->answer_len] = '\0';
        }
        if (n_cur + 1 == n_len) break; /* llama.cpp decodes it but never reads the logits */
        const int rc = pk_decode_answer(s, tok, n_cur - s->n_tokens);
        if (rc != 0) return rc;
        n_decode++;
    }
    const double secs = (double)(tool_time_ns() - t0) / 1e9;
    if (!cfg->quiet) putchar('\n'); /* ends the answer line */
    char label[96];
    snprintf(label, sizeof(label), "answer done (n_past %d)", (int)s->n_past);
    pk_map(s, label);

    char key_text[32];
    snprintf(key_text, sizeof(key_text), "%" PRId64, cfg->key);
    res->found = strstr(res->answer, key_text) != NULL;
    if (!cfg->quiet && cfg->print_ids) {
        fputs("answer ids:", stdout);
        for (int32_t i = 0; i < res->n_ids; i++) printf(" %d", (int)res->ids[i]);
        putchar('\n');
    }
    if (!cfg->quiet) {
        printf("%s\n", res->found ? "passkey found" : "passkey not found");
        fflush(stdout);
        fprintf(stderr, "main: decoded %d tokens in %.2f s, speed: %.2f t/s\n", (int)n_decode, secs,
                secs > 0 ? n_decode / secs : 0.0);
    }
    return 0;
}

/* Prompt, fill, shifts and answer for one configuration on a cleared
 * context. Cost: one forward pass over the prompt plus 16 tokens. */
static int pk_run(const cs_model *model, cs_context *ctx, cs_batch *batch, const pk_run_cfg *cfg,
                  pk_result *res) {
    pk_state s;
    memset(&s, 0, sizeof(s));
    memset(res, 0, sizeof(*res));
    s.model = model;
    s.ctx = ctx;
    s.batch = batch;
    s.cfg = cfg;
    bool done_prompt = false;
    int rc = pk_prepare(&s, res);
    if (rc == 0) rc = pk_fill(&s, &done_prompt);
    if (rc == 0 && !done_prompt) rc = pk_shift_rest(&s);
    if (rc == 0) {
        char label[96];
        snprintf(label, sizeof(label), "prompt processed (n_past %d)", (int)s.n_past);
        pk_map(&s, label);
        rc = pk_answer_room(&s);
    }
    if (rc == 0 && !cfg->quiet) {
        printf("main: passkey = %" PRId64 ", inserted at position %d / %d (token pos: ~%d)\n",
               cfg->key, (int)cfg->i_pos, (int)cfg->n_junk,
               (int)((int64_t)cfg->i_pos * s.n_tokens / cfg->n_junk));
        printf("\n%s\n", pk_suffix);
        fflush(stdout);
    }
    if (rc == 0) rc = pk_answer(&s, res);
    pk_state_free(&s);
    return rc;
}

/* The run of the flags (progress printed) on a context of n_ctx usable
 * positions. */
static pk_run_cfg pk_cfg(const pk_opts *o, int32_t n_ctx, tool_kvmap *map) {
    return (pk_run_cfg){.n_junk = o->n_junk,
                        .i_pos = o->i_pos,
                        .key = o->key,
                        .n_keep = o->n_keep,
                        .n_grp = o->n_grp,
                        .n_batch = o->common.n_batch,
                        .n_ctx = n_ctx,
                        .quiet = false,
                        .print_ids = o->print_ids,
                        .map = map};
}

/* ------------------------------------------------------------ sweep */

typedef struct pk_cell {
    int32_t junk;
    int32_t n_tokens;
    int32_t pos;
    double depth; /* percent */
    int64_t key;
    bool found;
    char answer[PK_ANSWER_MAX];
} pk_cell;

static void pk_csv_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s != '\0'; s++) {
        if (*s == '"') fputc('"', f);
        fputc((*s == '\n' || *s == '\r') ? ' ' : *s, f);
    }
    fputc('"', f);
}

static int pk_write_csv(const char *path, const pk_cell *cells, int32_t n) {
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        tool_error("%s: cannot open for writing", path);
        return TOOL_EXIT_FAIL;
    }
    fputs("junk,n_tokens,pos,depth,key,found,answer\n", f);
    for (int32_t i = 0; i < n; i++) {
        const pk_cell *c = &cells[i];
        fprintf(f, "%d,%d,%d,%.1f,%" PRId64 ",%d,", (int)c->junk, (int)c->n_tokens, (int)c->pos,
                c->depth, c->key, c->found ? 1 : 0);
        pk_csv_string(f, c->answer);
        fputc('\n', f);
    }
    const bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        tool_error("%s: write failed", path);
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

enum {
    PK_SVG_CELL_W = 110,
    PK_SVG_CELL_H = 44,
    PK_SVG_LEFT = 150,
    PK_SVG_TOP = 70,
    PK_SVG_BOTTOM = 90,
    PK_SVG_RIGHT = 30,
};

static void pk_xml(FILE *f, const char *s) {
    for (; *s != '\0'; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else
            fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
    }
}

/* Heatmap: rows = junk lengths (top: shortest), columns = key depths. */
static int pk_write_svg(const char *path, const pk_cell *cells, int32_t n_rows, int32_t n_cols,
                        const char *title) {
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        tool_error("%s: cannot open for writing", path);
        return TOOL_EXIT_FAIL;
    }
    const int w = PK_SVG_LEFT + n_cols * PK_SVG_CELL_W + PK_SVG_RIGHT;
    const int h = PK_SVG_TOP + n_rows * PK_SVG_CELL_H + PK_SVG_BOTTOM;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 "
            "%d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n"
            "<text x=\"%d\" y=\"24\" font-size=\"15\" font-weight=\"bold\" "
            "text-anchor=\"middle\">",
            w, h, w, h, w, h, w / 2);
    pk_xml(f, title);
    fputs("</text>\n", f);
    for (int32_t r = 0; r < n_rows; r++) {
        const pk_cell *row = &cells[r * n_cols];
        const int y = PK_SVG_TOP + r * PK_SVG_CELL_H;
        fprintf(f,
                "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">~%d tokens</text>\n"
                "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-size=\"10\" "
                "fill=\"#555\">junk %d</text>\n",
                PK_SVG_LEFT - 8, y + PK_SVG_CELL_H / 2, (int)row->n_tokens, PK_SVG_LEFT - 8,
                y + PK_SVG_CELL_H / 2 + 13, (int)row->junk);
        for (int32_t c = 0; c < n_cols; c++) {
            const pk_cell *cell = &row[c];
            const int x = PK_SVG_LEFT + c * PK_SVG_CELL_W;
            fprintf(f, "<g><title>junk %d, pos %d, key %" PRId64 ": ", (int)cell->junk,
                    (int)cell->pos, cell->key);
            pk_xml(f, cell->found ? "found" : "not found");
            fputs(", answer: ", f);
            pk_xml(f, cell->answer);
            fprintf(f,
                    "</title><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" "
                    "stroke=\"#ffffff\" stroke-width=\"2\"/>"
                    "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#ffffff\">%s</text>"
                    "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#ffffff\" "
                    "font-size=\"10\">pos %d</text></g>\n",
                    x, y, PK_SVG_CELL_W, PK_SVG_CELL_H, cell->found ? "#2e9e44" : "#d0393e",
                    x + PK_SVG_CELL_W / 2, y + PK_SVG_CELL_H / 2,
                    cell->found ? "found" : "not found", x + PK_SVG_CELL_W / 2,
                    y + PK_SVG_CELL_H / 2 + 13, (int)cell->pos);
        }
    }
    const int yb = PK_SVG_TOP + n_rows * PK_SVG_CELL_H;
    for (int32_t c = 0; c < n_cols; c++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.0f%%</text>\n",
                PK_SVG_LEFT + c * PK_SVG_CELL_W + PK_SVG_CELL_W / 2, yb + 18, cells[c].depth);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-weight=\"bold\">key depth (%% "
            "of the junk sentences before the key)</text>\n",
            PK_SVG_LEFT + n_cols * PK_SVG_CELL_W / 2, yb + 40);
    fprintf(f,
            "<text x=\"18\" y=\"%d\" text-anchor=\"middle\" font-weight=\"bold\" "
            "transform=\"rotate(-90 18 %d)\">prompt length</text>\n",
            PK_SVG_TOP + n_rows * PK_SVG_CELL_H / 2, PK_SVG_TOP + n_rows * PK_SVG_CELL_H / 2);
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"14\" fill=\"#2e9e44\"/>"
            "<text x=\"%d\" y=\"%d\">found (the answer contains the key)</text>\n"
            "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"14\" fill=\"#d0393e\"/>"
            "<text x=\"%d\" y=\"%d\">not found</text>\n",
            PK_SVG_LEFT, yb + 56, PK_SVG_LEFT + 20, yb + 67, PK_SVG_LEFT + 260, yb + 56,
            PK_SVG_LEFT + 280, yb + 67);
    fputs("</svg>\n", f);
    const bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        tool_error("%s: write failed", path);
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

static int pk_sweep(const pk_opts *o, const cs_model *model, cs_context *ctx, cs_batch *batch,
                    int32_t n_ctx, uint64_t seed) {
    int32_t junks[PK_MAX_SWEEP];
    int32_t n_junks = 0;
    int rc = tool_parse_i32_list("--sweep-junk", o->sweep_junk, 1, PK_MAX_JUNK, junks, PK_MAX_SWEEP,
                                 &n_junks);
    if (rc != 0) return rc;
    const int32_t n_depths = o->sweep_depths;
    const int32_t n_cells = n_junks * n_depths;
    pk_cell *cells = calloc((size_t)n_cells, sizeof(*cells));
    pk_result *res = malloc(sizeof(*res));
    if (cells == NULL || res == NULL) {
        tool_error("out of memory for %d sweep cells", (int)n_cells);
        rc = TOOL_EXIT_FAIL;
        goto done;
    }
    printf("sweep: %d junk lengths x %d depths, seed = %" PRIu64 "%s\n", (int)n_junks,
           (int)n_depths, seed, o->key >= 0 ? " (fixed --key)" : " (one key per cell)");
    int32_t n_found = 0;
    for (int32_t r = 0; r < n_junks; r++) {
        for (int32_t c = 0; c < n_depths; c++) {
            pk_cell *cell = &cells[r * n_depths + c];
            const double frac = n_depths > 1 ? (double)c / (n_depths - 1) : 0.0;
            cell->junk = junks[r];
            cell->pos = (int32_t)floor(frac * (junks[r] - 1) + 0.5);
            cell->depth = 100.0 * frac;
            /* a key per cell from the seed and the cell index */
            uint64_t st = seed ^ ((uint64_t)(r * n_depths + c + 1) * 0xd1b54a32d192ed03ull);
            cell->key = o->key >= 0 ? o->key : (int64_t)(pk_next(&st) % PK_KEY_RANGE) + 1;
            pk_run_cfg cfg = pk_cfg(o, n_ctx, NULL);
            cfg.n_junk = cell->junk;
            cfg.i_pos = cell->pos;
            cfg.key = cell->key;
            cfg.quiet = true;
            if ((rc = pk_run(model, ctx, batch, &cfg, res)) != 0) goto done;
            cell->n_tokens = res->n_tokens;
            cell->found = res->found;
            memcpy(cell->answer, res->answer, sizeof(cell->answer));
            n_found += cell->found ? 1 : 0;
            printf("junk %5d (%6d tokens), pos %5d (depth %5.1f%%), key %5" PRId64 ": %-9s "
                   "answer \"%s\"\n",
                   (int)cell->junk, (int)cell->n_tokens, (int)cell->pos, cell->depth, cell->key,
                   cell->found ? "found" : "not found", cell->answer);
            fflush(stdout);
        }
    }
    char title[160];
    snprintf(title, sizeof(title),
             "passkey retrieval: %d / %d found (grp-attn-n %d, batch %d, "
             "keep %d, context %d)",
             (int)n_found, (int)n_cells, (int)o->n_grp, (int)o->common.n_batch, (int)o->n_keep,
             (int)n_ctx);
    if ((rc = pk_write_csv(o->sweep_csv, cells, n_cells)) != 0) goto done;
    if ((rc = pk_write_svg(o->sweep_svg, cells, n_junks, n_depths, title)) != 0) goto done;
    printf("sweep: %d / %d found; wrote %s and %s\n", (int)n_found, (int)n_cells, o->sweep_csv,
           o->sweep_svg);
    rc = 0;
done:
    free(res);
    free(cells);
    return rc;
}

/* ------------------------------------------------------------ command */

/* Sizing (§5.3): n_ctx = n_ctx_train * G usable positions (*n_ctx_out),
 * plus n_keep cells; with --keep -1 the prefix tokens (counted here as
 * pk_run does). Checks them, creates the context and batch, prints them. */
static int pk_context_new(const pk_opts *o, const cs_model *model, cs_context **ctx,
                          cs_batch **batch, int32_t *n_ctx_out) {
    const int32_t n_ctx_train = o->n_ctx_train > 0 ? o->n_ctx_train : cs_model_n_ctx_train(model);
    int32_t n_keep_cells = o->n_keep;
    if (n_keep_cells < 0) {
        cs_token tmp[512];
        n_keep_cells = cs_tokenize(model, pk_prefix, sizeof(pk_prefix) - 1, tmp, 512, true, false);
        if (n_keep_cells < 0) n_keep_cells = 512;
    }
    const int64_t n_ctx64 = (int64_t)n_ctx_train * o->n_grp;
    const int64_t n_kv_req = n_ctx64 + n_keep_cells;
    if (n_ctx_train <= 0 || n_kv_req > (1 << 20)) {
        tool_error("passkey: a context of %" PRId64 " cells (n_ctx_train %d * grp-attn-n %d + "
                   "keep %d) is outside [1, %d]; use -c or a smaller --grp-attn-n / --keep",
                   n_kv_req, (int)n_ctx_train, (int)o->n_grp, (int)n_keep_cells, 1 << 20);
        return TOOL_EXIT_USAGE;
    }
    const int32_t n_ctx = (int32_t)n_ctx64;
    if (n_keep_cells >= n_ctx) {
        tool_error("passkey: --keep %d must be smaller than the context (%d positions = "
                   "n_ctx_train %d * grp-attn-n %d)",
                   (int)n_keep_cells, (int)n_ctx, (int)n_ctx_train, (int)o->n_grp);
        return TOOL_EXIT_USAGE;
    }
    if (o->common.n_batch > n_ctx) {
        tool_error("passkey: -b %d is larger than the context (%d positions = n_ctx_train %d * "
                   "grp-attn-n %d); a shift discards one batch",
                   (int)o->common.n_batch, (int)n_ctx, (int)n_ctx_train, (int)o->n_grp);
        return TOOL_EXIT_USAGE;
    }

    tool_common cc = o->common;
    cc.n_ctx = (int32_t)n_kv_req; /* n_batch <= n_ctx < n_kv_req: taken whole */
    cc.defrag_thold = -1.0f;      /* as llama-passkey: no automatic defrag */
    int rc = tool_context_new(model, &cc, 1, ctx);
    if (rc != 0) return rc;
    if (!cs_kv_can_shift(*ctx)) {
        tool_error("passkey: this model's cache cannot shift positions");
        return TOOL_EXIT_FAIL;
    }
    const cs_status st = cs_batch_new(o->common.n_batch, 1, batch);
    if (st != CS_OK) return tool_fail_lib(st, "batch");
    fprintf(stderr, "passkey: model '%s', n_ctx_train = %d, cache %s/%s, %d threads\n",
            o->common.model, (int)n_ctx_train, cs_type_name(o->common.type_k),
            cs_type_name(o->common.type_v), (int)cs_n_threads(*ctx));
    *n_ctx_out = n_ctx;
    return 0;
}

/* One run of the flags' configuration, with the --kv-map recorder. */
static int pk_single(const pk_opts *o, const cs_model *model, cs_context *ctx, cs_batch *batch,
                     int32_t n_ctx) {
    int rc = TOOL_EXIT_FAIL;
    tool_kvmap *map = NULL;
    pk_result *res = NULL;
    if (o->common.kv_map || o->common.kv_map_svg != NULL) {
        map = tool_kvmap_new(o->common.kv_map ? stdout : NULL, o->common.kv_map_svg, 0);
        if (map == NULL) goto done;
    }
    res = malloc(sizeof(*res));
    if (res == NULL) {
        tool_error("out of memory");
        goto done;
    }
    const pk_run_cfg cfg = pk_cfg(o, n_ctx, map);
    if ((rc = pk_run(model, ctx, batch, &cfg, res)) != 0) goto done;
    if ((rc = tool_kvmap_finish(map)) != 0) goto done;
    if (o->common.kv_map_svg != NULL) fprintf(stderr, "passkey: wrote %s\n", o->common.kv_map_svg);
    rc = TOOL_EXIT_OK;
done:
    free(res);
    tool_kvmap_free(map);
    return rc;
}

/* parse -> draw the key -> (print the prompt) -> load -> context -> one run
 * or the sweep, one cleanup. */
int cmd_passkey(int argc, char **argv) {
    pk_opts o;
    pk_defaults(&o);
    int rc = pk_parse(argc, argv, &o);
    if (!tool_begin(&rc, &o.common, pk_usage)) return rc;

    /* Key and position: given, or drawn from the seed in this order
     * (position first, as llama.cpp's rand() calls). */
    const bool draws = !o.sweep && (o.i_pos < 0 || o.key < 0);
    const uint64_t seed = o.seed >= 0 ? (uint64_t)o.seed : pk_random_seed();
    uint64_t rng = seed;
    if (!o.sweep && o.i_pos < 0) o.i_pos = (int32_t)(pk_next(&rng) % (uint64_t)o.n_junk);
    if (!o.sweep && o.key < 0) o.key = (int64_t)(pk_next(&rng) % PK_KEY_RANGE) + 1;

    if (o.print_prompt) {
        size_t len = 0;
        char *prompt = pk_build_prompt(o.n_junk, o.i_pos, o.key, &len);
        if (prompt == NULL) return TOOL_EXIT_FAIL;
        fwrite(prompt, 1, len, stdout);
        free(prompt);
        return TOOL_EXIT_OK;
    }

    cs_model *model = NULL;
    cs_context *ctx = NULL;
    cs_batch *batch = NULL;
    int32_t n_ctx = 0;
    if ((rc = tool_load_model(o.common.model, false, &model)) != 0) goto done;
    if ((rc = pk_context_new(&o, model, &ctx, &batch, &n_ctx)) != 0) goto done;
    if (o.sweep) {
        rc = pk_sweep(&o, model, ctx, batch, n_ctx, seed);
        goto done;
    }
    if (draws) printf("main: seed = %" PRIu64 " (key and position drawn from it)\n", seed);
    rc = pk_single(&o, model, ctx, batch, n_ctx);
done:
    cs_batch_free(batch);
    cs_context_free(ctx);
    cs_model_free(model);
    return rc;
}
