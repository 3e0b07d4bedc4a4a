/* cmd_run.c: `ctxshift run`, text generation with llama-cli's flags.
 *
 * stdout carries only the text: the prompt as given, each generated piece as
 * it is produced, then "\n\n" (the shape of llama-cli's stdout). Load info,
 * the seed, stop reasons, KV maps and timings go to stderr.
 *
 * Long generation follows llama-cli (llama.cpp c392e509,
 * examples/main/main.cpp; docs/KV_CACHE_SPEC.md §6.1): before every decode, either
 * the context shift (when the next tokens would reach the last cell: keep
 * n_keep tokens, drop half of the rest, slide the tail down) or, with
 * --grp-attn-n G > 1, self-extend (compress each full window of W positions
 * to W/G positions). Both only edit cell positions; the K rotation they
 * owe is applied lazily by the next decode. */
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

typedef struct run_opts {
    tool_common common; /* -m -c -b -t -ctk -ctv -dt --kv-map --kv-map-svg -v -h */
    const char *prompt;
    const char *prompt_file;
    const char *prompt_cache;   /* --prompt-cache FILE: KV state of the prompt, reused and saved */
    int32_t n_predict;          /* -1: no limit; -2: until the context is full */
    int32_t n_keep;             /* --keep: prompt tokens kept after BOS; -1: the whole prompt */
    int32_t grp_attn_n;         /* self-extend group factor G; 1: off */
    int32_t grp_attn_w;         /* self-extend window W */
    int64_t seed;               /* -1: random */
    cs_sampler_params sampling; /* repeat_last_n -1: the context size; seed unused */
    bool ignore_eos;
    bool no_ctx_shift;
    bool check_shift; /* hidden: assert the cache invariants at every shift */
    bool print_ids;   /* a line "id N" on stderr per generated token */
} run_opts;

static void run_usage(FILE *f) {
    fprintf(
        f,
        "usage: ctxshift run [flags]\n"
        "\n"
        "Generate text from a prompt. stdout gets the prompt, then the generated text;\n"
        "everything else goes to stderr. When the context is full, the oldest half of\n"
        "the tokens after --keep is dropped and generation goes on (context shift).\n"
        "\n"
        "  -m,   --model FILE         GGUF model (default: %s)\n"
        "  -p,   --prompt TEXT        prompt (default: empty, i.e. BOS only)\n"
        "  -f,   --file FILE          read the prompt from a file\n"
        "        --prompt-cache FILE  reuse the KV state of the longest common prompt prefix\n"
        "                             saved in FILE, and save the prompt's state there\n"
        "  -n,   --n-predict N        tokens to generate; -1 = no limit (until EOS), -2 = "
        "until\n"
        "                             the context is full (default: -1)\n"
        "  -c,   --ctx-size N         context size in tokens; 0 = the model's training context "
        "(default: 0)\n"
        "  -b,   --batch-size N       prompt tokens per decode, capped at the context size "
        "(default: 2048)\n" TOOL_HELP_THREADS
        "  -s,   --seed N             sampler seed; -1 = random, printed to stderr (default: "
        "-1)\n"
        "        --temp X             temperature; <= 0 = greedy (default: 0.8)\n"
        "        --top-k N            top-k sampling; 0 = off (default: 40)\n"
        "        --top-p X            top-p sampling; 1 = off (default: 0.95)\n"
        "        --min-p X            min-p sampling; 0 = off (default: 0.05)\n"
        "        --repeat-penalty X   repetition penalty; 1 = off (default: 1.0)\n"
        "        --repeat-last-n N    tokens the penalty looks back at; 0 = off, -1 = context "
        "size (default: 64)\n"
        "        --ignore-eos         never stop at end-of-generation tokens\n"
        "        --print-ids          print each generated token's id to stderr (\"id N\")\n"
        "        --keep N             prompt tokens kept by a context shift, after BOS (BOS is\n"
        "                             always kept); -1 = the whole prompt (default: 0)\n"
        "        --no-context-shift   stop when the context is full instead of shifting\n"
        "        --grp-attn-n G       self-extend group factor; 1 = off (default: 1)\n"
        "        --grp-attn-w W       self-extend window, a multiple of G (default: "
        "512)\n" TOOL_HELP_CACHE_TYPES
        "  -dt,  --defrag-thold X     defragment the KV cache when 1 - used/cell_max > X;\n"
        "                             <= 0 = never (default: 0.1)\n"
        "        --kv-map             print a map of the KV cells to stderr after every shift,\n"
        "                             self-extend step and defrag, and at the end\n"
        "        --kv-map-svg FILE    write the same maps as an SVG timeline\n"
        "  -v,   --verbose            print the library's info and debug log, and each "
        "shift\n" TOOL_HELP_HELP,
        CS_DEFAULT_MODEL);
}

static void run_defaults(run_opts *o) {
    const cs_sampler_params sp = cs_sampler_default_params();
    *o = (run_opts){
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_THREADS | TOOL_FLAG_CTX |
                                       TOOL_FLAG_BATCH | TOOL_FLAG_CACHE_TYPES | TOOL_FLAG_DEFRAG |
                                       TOOL_FLAG_KV_MAP),
        .n_predict = -1,
        .n_keep = 0,
        .grp_attn_n = 1,
        .grp_attn_w = 512,
        .seed = -1,
        .sampling = sp,
    };
    o->common.defrag_thold = 0.1f; /* llama.cpp's tools default since b141e5f6 */
}

static int run_parse(int argc, char **argv, run_opts *o) {
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &o->common, &handled);
        if (rc == 0 && !handled) rc = tool_parse_sampling(&it, &o->sampling, &handled);
        if (rc != 0) return rc;
        if (handled) continue;
        if (tool_arg_is(a, NULL, "--ignore-eos")) {
            o->ignore_eos = true;
        } else if (tool_arg_is(a, NULL, "--no-context-shift")) {
            o->no_ctx_shift = true;
        } else if (tool_arg_is(a, NULL, "--check-shift")) {
            o->check_shift = true;
        } else if (tool_arg_is(a, NULL, "--print-ids")) {
            o->print_ids = true;
        } else if (tool_arg_is(a, "-p", "--prompt")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->prompt = v;
        } else if (tool_arg_is(a, "-f", "--file")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->prompt_file = v;
        } else if (tool_arg_is(a, NULL, "--prompt-cache")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->prompt_cache = v;
        } else if (tool_arg_is(a, "-n", "--n-predict")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -2, INT32_MAX, &o->n_predict);
        } else if (tool_arg_is(a, NULL, "--keep")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -1, INT32_MAX, &o->n_keep);
        } else if (tool_arg_is(a, NULL, "--grp-attn-n")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, INT32_MAX, &o->grp_attn_n);
        } else if (tool_arg_is(a, NULL, "--grp-attn-w")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, INT32_MAX, &o->grp_attn_w);
        } else if (tool_arg_is(a, "-s", "--seed")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i64(a, v, -1, INT64_MAX, &o->seed);
        } else {
            rc = tool_arg_unknown("run", a);
        }
        if (rc != 0) return rc;
    }
    if (o->prompt != NULL && o->prompt_file != NULL) {
        tool_error("run: -p and -f are mutually exclusive");
        return TOOL_EXIT_USAGE;
    }
    /* llama-cli asserts this (GGML_ASSERT); here it is a usage error. */
    if (o->grp_attn_n > 1 && o->grp_attn_w % o->grp_attn_n != 0) {
        tool_error("--grp-attn-w: %d is not a multiple of --grp-attn-n %d (self-extend compresses "
                   "each window of W positions into W/G)",
                   (int)o->grp_attn_w, (int)o->grp_attn_n);
        return TOOL_EXIT_USAGE;
    }
    return 0;
}

/* ------------------------------------------------------------ streaming */

/* Bytes produced but not yet printed because they end inside a UTF-8
 * sequence; at most 3 bytes remain between pieces. */
typedef struct run_out {
    char *buf;
    size_t len;
    size_t cap;
} run_out;

static int run_out_piece(run_out *out, const char *piece, size_t n) {
    if (n == 0) return 0; /* control tokens have no text */
    if (out->len + n > out->cap) {
        const size_t cap = (out->len + n) * 2 + 16;
        char *p = realloc(out->buf, cap);
        if (p == NULL) return -1;
        out->buf = p;
        out->cap = cap;
    }
    memcpy(out->buf + out->len, piece, n);
    out->len += n;
    const size_t ok = cs_utf8_complete_len(out->buf, out->len);
    fwrite(out->buf, 1, ok, stdout);
    memmove(out->buf, out->buf + ok, out->len - ok);
    out->len -= ok;
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------ timings */

static void run_print_timings(double load_ms, double sample_ms, int32_t n_sample, double prompt_ms,
                              int32_t n_prompt, double eval_ms, int32_t n_eval, double total_ms) {
    const double s_per = n_sample > 0 ? sample_ms / n_sample : 0.0;
    const double s_tps = sample_ms > 0 ? 1e3 * n_sample / sample_ms : 0.0;
    const double p_per = n_prompt > 0 ? prompt_ms / n_prompt : 0.0;
    const double p_tps = prompt_ms > 0 ? 1e3 * n_prompt / prompt_ms : 0.0;
    const double e_per = n_eval > 0 ? eval_ms / n_eval : 0.0;
    const double e_tps = eval_ms > 0 ? 1e3 * n_eval / eval_ms : 0.0;
    fprintf(stderr, "\n");
    fprintf(stderr, "perf:        load time = %10.2f ms\n", load_ms);
    fprintf(stderr,
            "perf:    sampling time = %10.2f ms / %5d runs   (%8.2f ms per token, %8.2f tokens "
            "per second)\n",
            sample_ms, (int)n_sample, s_per, s_tps);
    fprintf(stderr,
            "perf: prompt eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens "
            "per second)\n",
            prompt_ms, (int)n_prompt, p_per, p_tps);
    fprintf(stderr,
            "perf:        eval time = %10.2f ms / %5d runs   (%8.2f ms per token, %8.2f tokens "
            "per second)\n",
            eval_ms, (int)n_eval, e_per, e_tps);
    fprintf(stderr, "perf:       total time = %10.2f ms / %5d tokens\n", total_ms,
            (int)(n_prompt + n_eval));
}

static uint64_t run_random_seed(void) {
    /* Random by default, as llama-cli: time and pid mixed by splitmix64's finalizer. */
    uint64_t x = tool_time_ns() ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x & 0xffffffffull; /* printable and reusable with -s */
}

/* --prompt-cache: load FILE when it exists and fits this model and context,
 * keep the longest common prefix of its tokens and the prompt (always
 * leaving the last prompt token to evaluate, for its logits), drop the rest
 * of the cache, and return the number of reused tokens in *n_reused. A file
 * that cannot be used is reported and ignored (the cache stays empty). */
static int run_cache_load(cs_context *ctx, const char *path, const cs_token *tokens,
                          int32_t n_prompt, int32_t *n_reused) {
    *n_reused = 0;
    if (access(path, F_OK) != 0) {
        fprintf(stderr, "prompt cache: '%s' does not exist yet; it will be created\n", path);
        return 0;
    }
    const int32_t n_max = (int32_t)cs_n_ctx(ctx);
    cs_token *cached = malloc((size_t)n_max * sizeof(cs_token));
    if (cached == NULL) {
        tool_error("out of memory for %d prompt cache tokens", (int)n_max);
        return TOOL_EXIT_FAIL;
    }
    int32_t n_cached = 0;
    const cs_status st = cs_state_load_file(ctx, path, cached, n_max, &n_cached);
    if (st != CS_OK) {
        fprintf(stderr, "prompt cache: cannot use '%s' (%s); evaluating the whole prompt\n", path,
                cs_last_error());
        free(cached);
        return 0;
    }
    /* the cells must be exactly the tokens' positions 0 .. n_cached-1 */
    if (cs_kv_used_cells(ctx) != n_cached || cs_kv_seq_pos_max(ctx, 0) != n_cached - 1 ||
        (n_cached > 0 && cs_kv_seq_pos_min(ctx, 0) != 0)) {
        fprintf(stderr,
                "prompt cache: '%s' holds %d tokens but cells for positions %d..%d; ignoring it\n",
                path, (int)n_cached, (int)cs_kv_seq_pos_min(ctx, 0),
                (int)cs_kv_seq_pos_max(ctx, 0));
        cs_kv_clear(ctx);
        free(cached);
        return 0;
    }
    int32_t n_common = 0;
    while (n_common < n_cached && n_common < n_prompt && cached[n_common] == tokens[n_common])
        n_common++;
    if (n_common == n_prompt) n_common--; /* re-evaluate the last token for its logits */
    free(cached);
    const cs_status rm = cs_kv_seq_rm(ctx, 0, n_common, -1);
    if (rm != CS_OK) return tool_fail_lib(rm, "prompt cache");
    *n_reused = n_common;
    return 0;
}

/* ------------------------------------------------------------ long context */

/* Generation state of sequence 0 and what the shifts did. */
typedef struct run_kv {
    cs_context *ctx;
    const run_opts *o;
    int32_t n_ctx;
    int32_t n_keep;       /* cells kept by a context shift (BOS included) */
    int32_t n_past;       /* next position of sequence 0 */
    int32_t n_cached;     /* tokens in the cache (cells of sequence 0) */
    int32_t ga_i;         /* self-extend: positions [0, ga_i) are compressed */
    int32_t n_shifts;     /* context shifts done */
    int64_t n_discarded;  /* tokens dropped by them */
    int32_t n_extends;    /* self-extend window compressions done */
    int32_t n_checks;     /* --check-shift: verifications passed */
    uint64_t defrag_seen; /* defrag passes already reported on the map */
    tool_kvmap *map;      /* --kv-map / --kv-map-svg, or NULL */
    /* --check-shift scratch */
    cs_kv_cell *cells; /* n_ctx */
    int32_t *per_pos;  /* cells per position, n_ctx */
    int32_t *keep_idx; /* cell index of each kept position, n_keep */
    bool keep_known;   /* keep_idx recorded */
} run_kv;

/* Stop reasons of run_kv_before_decode (0: go on). */
enum { RUN_GO = 0, RUN_STOP = 1 };

static void run_kv_free(run_kv *s) {
    free(s->cells);
    free(s->per_pos);
    free(s->keep_idx);
    tool_kvmap_free(s->map);
}

/* Record the cache on the map (when one is kept) after `event`. The text map
 * starts on a line of its own, after the story printed so far. */
static void run_kv_event(run_kv *s, const char *event) {
    if (s->map == NULL) return;
    fflush(stdout);
    if (s->o->common.kv_map) fputc('\n', stderr);
    tool_kvmap_event(s->map, s->ctx, event);
}

/* --check-shift: verify the cache against the generation state.
 *  - pos_max(0) + 1 == n_past;
 *  - every used cell belongs to sequence 0 only, with a position < n_past;
 *  - position p holds G cells below ga_i (self-extend) and 1 cell above, so
 *    the used cells are exactly the n_cached tokens (nothing lost);
 *  - context shift: the cells of positions [0, n_keep) are the ones the
 *    prompt wrote, at the same positions, with no rotation owed, and after
 *    a shift every later cell owes exactly -n_discard (shift_delta; 0: not
 *    checked).
 * Cost O(n_ctx). Returns 0, or TOOL_EXIT_FAIL with a message naming the
 * cell and the numbers. */
static int run_kv_check(run_kv *s, const char *when, int32_t shift_delta) {
    const cs_pos pmax = cs_kv_seq_pos_max(s->ctx, 0);
    if (pmax + 1 != s->n_past) {
        tool_error("shift-check (%s): pos_max + 1 = %d but n_past = %d", when, (int)(pmax + 1),
                   (int)s->n_past);
        return TOOL_EXIT_FAIL;
    }
    const int32_t size = cs_kv_view(s->ctx, s->cells, s->n_ctx);
    if (size != s->n_ctx) {
        tool_error("shift-check (%s): the cache has %d cells, expected %d", when, (int)size,
                   (int)s->n_ctx);
        return TOOL_EXIT_FAIL;
    }
    memset(s->per_pos, 0, (size_t)s->n_ctx * sizeof(int32_t));
    int32_t used = 0;
    for (int32_t i = 0; i < size; i++) {
        const cs_kv_cell *c = &s->cells[i];
        if (c->pos < 0) {
            if (c->seq != 0) {
                tool_error("shift-check (%s): empty cell %d has sequences 0x%llx", when, (int)i,
                           (unsigned long long)c->seq);
                return TOOL_EXIT_FAIL;
            }
            continue;
        }
        if (c->seq != 1u || c->pos >= s->n_past) {
            tool_error("shift-check (%s): cell %d holds position %d of sequences 0x%llx; expected "
                       "sequence 0 below n_past = %d",
                       when, (int)i, (int)c->pos, (unsigned long long)c->seq, (int)s->n_past);
            return TOOL_EXIT_FAIL;
        }
        s->per_pos[c->pos]++;
        used++;
        if (shift_delta != 0 && c->pos >= s->n_keep && c->delta != shift_delta) {
            tool_error("shift-check (%s): cell %d (position %d) owes a rotation of %d, expected "
                       "%d",
                       when, (int)i, (int)c->pos, (int)c->delta, (int)shift_delta);
            return TOOL_EXIT_FAIL;
        }
    }
    if (used != s->n_cached || used != cs_kv_used_cells(s->ctx)) {
        tool_error("shift-check (%s): %d cells in the view, %d used cells reported, %d tokens "
                   "expected",
                   when, (int)used, (int)cs_kv_used_cells(s->ctx), (int)s->n_cached);
        return TOOL_EXIT_FAIL;
    }
    for (int32_t p = 0; p < s->n_past; p++) {
        const int32_t want = p < s->ga_i ? s->o->grp_attn_n : 1;
        if (s->per_pos[p] != want) {
            tool_error("shift-check (%s): position %d has %d cells, expected %d", when, (int)p,
                       (int)s->per_pos[p], (int)want);
            return TOOL_EXIT_FAIL;
        }
    }
    if (s->o->grp_attn_n == 1) {
        for (int32_t p = 0; p < s->n_keep && p < s->n_past; p++) {
            if (!s->keep_known) {
                for (int32_t i = 0; i < size; i++) {
                    if (s->cells[i].pos == p) s->keep_idx[p] = i;
                }
                continue;
            }
            const cs_kv_cell *c = &s->cells[s->keep_idx[p]];
            if (c->pos != p || c->delta != 0) {
                tool_error("shift-check (%s): kept cell %d (position %d) changed: position %d, "
                           "rotation owed %d",
                           when, (int)s->keep_idx[p], (int)p, (int)c->pos, (int)c->delta);
                return TOOL_EXIT_FAIL;
            }
        }
        if (s->n_past >= s->n_keep) s->keep_known = true;
    }
    s->n_checks++;
    return 0;
}

/* The context shift of llama-cli (spec §6.1): keep [0, n_keep), drop the
 * next n_discard = (n_past - n_keep) / 2 positions, move the rest down.
 * Returns 0 or TOOL_EXIT_FAIL (a library error, or nothing to discard). */
static int run_kv_shift(run_kv *s) {
    const int32_t n_left = s->n_past - s->n_keep;
    const int32_t n_discard = n_left / 2;
    if (n_discard < 1) {
        /* run_kv_keep rules this out up front; never loop on a no-op shift */
        tool_error("context full (%d of %d cells) and --keep leaves nothing to discard (n_keep = "
                   "%d, n_past = %d); use a smaller --keep or a larger -c",
                   (int)s->n_past, (int)s->n_ctx, (int)s->n_keep, (int)s->n_past);
        return TOOL_EXIT_FAIL;
    }
    if (s->o->common.verbose) {
        fprintf(stderr, "\ncontext shift: n_keep = %d, n_discard = %d (n_past %d -> %d)\n",
                (int)s->n_keep, (int)n_discard, (int)s->n_past, (int)(s->n_past - n_discard));
    }
    cs_status st = cs_kv_seq_rm(s->ctx, 0, s->n_keep, s->n_keep + n_discard);
    if (st == CS_OK) st = cs_kv_seq_add(s->ctx, 0, s->n_keep + n_discard, s->n_past, -n_discard);
    if (st != CS_OK) return tool_fail_lib(st, "context shift");
    s->n_past -= n_discard;
    s->n_cached -= n_discard;
    s->n_shifts++;
    s->n_discarded += n_discard;
    if (s->o->check_shift) {
        char when[48];
        snprintf(when, sizeof(when), "context shift %d", (int)s->n_shifts);
        /* delta 0 cannot be told from "not moved"; n_discard >= 1 here */
        const int rc = run_kv_check(s, when, -n_discard);
        if (rc != 0) return rc;
    }
    char event[64];
    snprintf(event, sizeof(event), "context shift %d: drop [%d, %d)", (int)s->n_shifts,
             (int)s->n_keep, (int)(s->n_keep + n_discard));
    run_kv_event(s, event);
    return 0;
}

/* Self-extend (llama-cli, spec §6.1): while the window [ga_i, ga_i + W)
 * is complete, divide its positions by G and slide the later ones down, so
 * that positions grow W/G per W tokens except in the last < W tokens.
 * Returns 0 or TOOL_EXIT_FAIL. */
static int run_kv_self_extend(run_kv *s) {
    const int32_t ga_n = s->o->grp_attn_n, ga_w = s->o->grp_attn_w;
    while (s->n_past >= s->ga_i + ga_w) {
        const int32_t ib = (int32_t)(((int64_t)ga_n * s->ga_i) / ga_w);
        const int32_t bd = (ga_w / ga_n) * (ga_n - 1);
        const int32_t dd = (ga_w / ga_n) - ib * bd - ga_w;
        const int32_t p_div = s->ga_i + ib * bd;
        if (s->o->common.verbose) {
            fprintf(stderr,
                    "\nself-extend: [%d, %d) + %d; [%d, %d) / %d; [%d, %d) + %d; n_past %d -> %d, "
                    "ga_i %d -> %d\n",
                    (int)s->ga_i, (int)s->n_past, (int)(ib * bd), (int)p_div, (int)(p_div + ga_w),
                    (int)ga_n, (int)(p_div + ga_w), (int)(s->n_past + ib * bd), (int)dd,
                    (int)s->n_past, (int)(s->n_past - bd), (int)s->ga_i,
                    (int)(s->ga_i + ga_w / ga_n));
        }
        cs_status st = cs_kv_seq_add(s->ctx, 0, s->ga_i, s->n_past, ib * bd);
        if (st == CS_OK) st = cs_kv_seq_div(s->ctx, 0, p_div, p_div + ga_w, ga_n);
        if (st == CS_OK) st = cs_kv_seq_add(s->ctx, 0, p_div + ga_w, s->n_past + ib * bd, dd);
        if (st != CS_OK) return tool_fail_lib(st, "self-extend");
        s->n_past -= bd;
        s->ga_i += ga_w / ga_n;
        s->n_extends++;
        if (s->o->check_shift) {
            char when[48];
            snprintf(when, sizeof(when), "self-extend %d", (int)s->n_extends);
            const int rc = run_kv_check(s, when, 0);
            if (rc != 0) return rc;
        }
        char event[64];
        snprintf(event, sizeof(event), "self-extend %d: [%d, %d) / %d", (int)s->n_extends,
                 (int)(s->ga_i - ga_w / ga_n), (int)(s->ga_i - ga_w / ga_n + ga_w), (int)ga_n);
        run_kv_event(s, event);
    }
    return 0;
}

/* Before decoding n_new tokens at n_past: make room as llama-cli does, or
 * decide to stop (*stop = RUN_STOP, reason printed to stderr). Returns 0 or
 * TOOL_EXIT_FAIL. */
static int run_kv_before_decode(run_kv *s, int32_t n_new, int *stop) {
    *stop = RUN_GO;
    if (s->o->grp_attn_n == 1) {
        /* llama-cli's trigger: the last cell is never filled */
        if (s->n_past + n_new < s->n_ctx) return 0;
        if (s->o->no_ctx_shift) {
            fprintf(stderr, "\ncontext full (%d of %d cells); stopping (--no-context-shift)\n",
                    (int)s->n_past, (int)s->n_ctx);
            *stop = RUN_STOP;
            return 0;
        }
        if (s->o->n_predict == -2) {
            fprintf(stderr, "\ncontext full (%d of %d cells); stopping (-n -2)\n", (int)s->n_past,
                    (int)s->n_ctx);
            *stop = RUN_STOP;
            return 0;
        }
        return run_kv_shift(s);
    }
    /* Self-extend keeps every token: the cells, not the positions, run out. */
    if (s->n_cached + n_new >= s->n_ctx) {
        fprintf(stderr,
                "\ncontext full (%d of %d cells); self-extend keeps every token in the cache, "
                "stopping (use a larger -c)\n",
                (int)s->n_cached, (int)s->n_ctx);
        *stop = RUN_STOP;
        return 0;
    }
    return run_kv_self_extend(s);
}

/* After a successful decode of n_new tokens: advance, and put a defrag the
 * decode ran (the -dt threshold) on the map. */
static void run_kv_after_decode(run_kv *s, int32_t n_new) {
    s->n_past += n_new;
    s->n_cached += n_new;
    if (s->map == NULL) return;
    cs_kv_info info;
    if (cs_kv_stats(s->ctx, &info) == CS_OK && info.n_defrag_passes != s->defrag_seen) {
        s->defrag_seen = info.n_defrag_passes;
        run_kv_event(s, "defrag");
    }
}

/* n_keep as llama-cli computes it (spec §6.1): --keep < 0 or larger than the
 * prompt: the whole prompt; otherwise N + 1 with BOS (BOS always kept),
 * never more than the prompt. Then refuse settings whose first shift could
 * not discard anything (n_discard = (n_ctx - 1 - n_keep) / 2 < 1). */
static int run_kv_keep(run_kv *s, const cs_model *model, int32_t n_prompt, bool may_shift) {
    const int32_t add_bos = cs_vocab_add_bos(model) ? 1 : 0;
    const int32_t keep = s->o->n_keep;
    if (keep < 0 || keep >= n_prompt) {
        s->n_keep = n_prompt;
    } else {
        s->n_keep = keep + add_bos < n_prompt ? keep + add_bos : n_prompt;
    }
    if (may_shift && s->n_keep > s->n_ctx - 3) {
        tool_error("--keep: n_keep = %d (BOS included) leaves nothing to discard when the context "
                   "of %d cells is full; a context shift needs n_keep <= n_ctx - 3 = %d (use a "
                   "smaller --keep, a larger -c, or --no-context-shift)",
                   (int)s->n_keep, (int)s->n_ctx, (int)(s->n_ctx - 3));
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* Decode prompt tokens [first, n) in chunks of n_batch with logits for the
 * last token only, at positions from s->n_past on. As in llama-cli, the
 * shift / self-extend step runs before every chunk. On success *last_row is
 * the last token's row in the last batch. */
static int run_prompt(run_kv *s, cs_batch *batch, const cs_token *tokens, int32_t first, int32_t n,
                      int32_t n_batch, int32_t *last_row) {
    const cs_seq seq0 = 0;
    for (int32_t i = first; i < n; i += n_batch) {
        const int32_t nb = n - i < n_batch ? n - i : n_batch;
        int stop = RUN_GO;
        const int rc = run_kv_before_decode(s, nb, &stop);
        if (rc != 0) return rc;
        if (stop != RUN_GO) {
            /* cannot happen: the prompt is shorter than the context */
            tool_error("the prompt does not fit the context");
            return TOOL_EXIT_FAIL;
        }
        cs_batch_clear(batch);
        for (int32_t k = 0; k < nb; k++) {
            const cs_status st =
                cs_batch_add(batch, tokens[i + k], s->n_past + k, &seq0, 1, i + k == n - 1);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        const int rc_dec = tool_decode(
            s->ctx, batch, "decode: no KV slot for prompt tokens [%d, %d)", (int)i, (int)(i + nb));
        if (rc_dec != 0) return rc_dec;
        run_kv_after_decode(s, nb);
        *last_row = nb - 1;
    }
    return 0;
}

/* ------------------------------------------------------------ the command */

/* Everything one `ctxshift run` holds; run_free releases it. */
typedef struct run_state {
    run_opts o;
    char *file_text; /* -f: the file's bytes */
    const char *prompt;
    size_t prompt_len;
    cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    cs_sampler *smpl;
    cs_token *tokens; /* the prompt, n_prompt */
    int32_t n_prompt;
    int32_t n_vocab;
    int32_t n_batch;
    cs_token *eog; /* --ignore-eos: the end-of-generation tokens, n_eog */
    int32_t n_eog;
    float *logits_buf; /* --ignore-eos: the logits with them masked */
    char *piece;
    size_t piece_cap;
    run_out out;
    run_kv kv;
    int32_t row;      /* logits row of the last prompt token */
    int32_t n_reused; /* prompt tokens taken from --prompt-cache */
    int32_t n_eval;   /* generated tokens decoded */
    int32_t n_sample; /* tokens sampled */
    uint64_t t_start;
    double load_ms, prompt_ms, eval_ms, sample_ms;
} run_state;

static void run_free(run_state *st) {
    run_kv_free(&st->kv);
    free(st->out.buf);
    free(st->piece);
    free(st->logits_buf);
    free(st->eog);
    free(st->tokens);
    cs_sampler_free(st->smpl);
    cs_batch_free(st->batch);
    cs_context_free(st->ctx);
    cs_model_free(st->model);
    free(st->file_text);
}

/* Read the prompt, load the model, create the context; print what they are. */
static int run_load(run_state *st) {
    const run_opts *o = &st->o;
    int rc = 0;
    if (o->prompt_file != NULL) {
        if ((rc = tool_read_file(o->prompt_file, &st->file_text, &st->prompt_len)) != 0) return rc;
        st->prompt = st->file_text;
    } else {
        st->prompt = o->prompt != NULL ? o->prompt : "";
        st->prompt_len = strlen(st->prompt);
    }

    if ((rc = tool_load_model(o->common.model, false, &st->model)) != 0) return rc;
    st->load_ms = (double)(tool_time_ns() - st->t_start) / 1e6;
    char desc[128];
    cs_model_desc(st->model, desc, sizeof(desc));
    st->n_vocab = cs_model_n_vocab(st->model);
    fprintf(stderr,
            "load: model '%s': %s, %.2f M params, %.2f MiB, n_vocab = %d, n_ctx_train = %d\n",
            o->common.model, desc, (double)cs_model_n_params(st->model) / 1e6,
            (double)cs_model_size(st->model) / (1024.0 * 1024.0), (int)st->n_vocab,
            (int)cs_model_n_ctx_train(st->model));

    if ((rc = tool_context_new(st->model, &o->common, 1, &st->ctx)) != 0) return rc;
    const int32_t n_ctx = (int32_t)cs_n_ctx(st->ctx);
    st->n_batch = (int32_t)cs_n_batch(st->ctx);
    st->kv.ctx = st->ctx;
    st->kv.n_ctx = n_ctx;
    fprintf(stderr, "context: n_ctx = %d, n_batch = %d, n_threads = %d, type_k = %s, type_v = %s\n",
            (int)n_ctx, (int)st->n_batch, (int)cs_n_threads(st->ctx),
            cs_type_name(o->common.type_k), cs_type_name(o->common.type_v));
    fprintf(stderr, "system_info: n_threads = %d | %s\n", (int)cs_n_threads(st->ctx),
            cs_system_info());
    if ((o->grp_attn_n > 1 || !o->no_ctx_shift) && !cs_kv_can_shift(st->ctx)) {
        tool_error("this model cannot move cache positions; use --no-context-shift and no "
                   "--grp-attn-n");
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* The sampler of the flags (a random seed unless -s), printed. */
static int run_sampler_new(run_state *st) {
    const run_opts *o = &st->o;
    const uint64_t seed = o->seed >= 0 ? (uint64_t)o->seed : run_random_seed();
    cs_sampler_params sp = o->sampling;
    sp.seed = seed;
    if (sp.repeat_last_n < 0) sp.repeat_last_n = st->kv.n_ctx;
    const cs_status st_new = cs_sampler_new(&sp, st->n_vocab, &st->smpl);
    if (st_new != CS_OK) return tool_fail_lib(st_new, "sampler");
    fprintf(stderr,
            "sampler: seed = %llu, temp = %.3f, top_k = %d, top_p = %.3f, min_p = %.3f, "
            "repeat_penalty = %.3f, repeat_last_n = %d\n",
            (unsigned long long)seed, (double)sp.temp, (int)sp.top_k, (double)sp.top_p,
            (double)sp.min_p, (double)sp.repeat_penalty, (int)sp.repeat_last_n);
    return 0;
}

/* What the optional flags need: --ignore-eos's token list and logits
 * buffer, --check-shift's scratch, the --kv-map recorder. */
static int run_extras_new(run_state *st) {
    const run_opts *o = &st->o;
    const int32_t n_ctx = st->kv.n_ctx;
    if (o->ignore_eos) {
        /* As llama.cpp: end-of-generation tokens get logit -inf. */
        st->eog = malloc((size_t)st->n_vocab * sizeof(cs_token));
        st->logits_buf = malloc((size_t)st->n_vocab * sizeof(float));
        if (st->eog == NULL || st->logits_buf == NULL) {
            tool_error("out of memory for %d logits", (int)st->n_vocab);
            return TOOL_EXIT_FAIL;
        }
        for (cs_token t = 0; t < st->n_vocab; t++) {
            if (cs_token_is_eog(st->model, t)) st->eog[st->n_eog++] = t;
        }
    }
    run_kv *s = &st->kv;
    if (o->check_shift) {
        s->cells = malloc((size_t)n_ctx * sizeof(cs_kv_cell));
        s->per_pos = malloc((size_t)n_ctx * sizeof(int32_t));
        s->keep_idx = malloc((size_t)(s->n_keep > 0 ? s->n_keep : 1) * sizeof(int32_t));
        if (s->cells == NULL || s->per_pos == NULL || s->keep_idx == NULL) {
            tool_error("out of memory for --check-shift over %d cells", (int)n_ctx);
            return TOOL_EXIT_FAIL;
        }
    }
    if (o->common.kv_map || o->common.kv_map_svg != NULL) {
        s->map = tool_kvmap_new(o->common.kv_map ? stderr : NULL, o->common.kv_map_svg, 0);
        if (s->map == NULL) return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* Tokenize the prompt and check it against the context, work out n_keep,
 * then the sampler, the extras and the batch; print the plan. */
static int run_setup(run_state *st) {
    const run_opts *o = &st->o;
    const int32_t n_ctx = st->kv.n_ctx;
    int rc = tool_tokenize(st->model, st->prompt, st->prompt_len, true, true, &st->tokens,
                           &st->n_prompt);
    if (rc != 0) return rc;
    const int32_t n_prompt = st->n_prompt;
    if (n_prompt == 0) {
        tool_error("the prompt is empty and the vocabulary adds no BOS token");
        return TOOL_EXIT_FAIL;
    }
    if (n_prompt >= n_ctx) {
        tool_error("the prompt is %d tokens but the context holds %d (use a larger -c)",
                   (int)n_prompt, (int)n_ctx);
        return TOOL_EXIT_FAIL;
    }
    const bool may_shift = o->grp_attn_n == 1 && !o->no_ctx_shift && o->n_predict != -2 &&
                           (o->n_predict < 0 || (int64_t)n_prompt + o->n_predict > n_ctx);
    if ((rc = run_kv_keep(&st->kv, st->model, n_prompt, may_shift)) != 0) return rc;
    if ((rc = run_sampler_new(st)) != 0) return rc;
    if ((rc = run_extras_new(st)) != 0) return rc;

    const cs_status bs = cs_batch_new(st->n_batch, 1, &st->batch);
    if (bs != CS_OK) return tool_fail_lib(bs, "batch");
    fprintf(stderr,
            "generate: n_ctx = %d, n_batch = %d, n_predict = %d, n_keep = %d, n_prompt = %d",
            (int)n_ctx, (int)st->n_batch, (int)o->n_predict, (int)st->kv.n_keep, (int)n_prompt);
    if (o->grp_attn_n > 1) {
        fprintf(stderr, ", self-extend: grp_attn_n = %d, grp_attn_w = %d", (int)o->grp_attn_n,
                (int)o->grp_attn_w);
    } else if (o->no_ctx_shift) {
        fprintf(stderr, ", context shift off");
    }
    fprintf(stderr, "\n\n");
    return 0;
}

/* Print the prompt; take what --prompt-cache holds of it, decode the rest,
 * save the prompt's state; feed the prompt to the sampler's history. */
static int run_eval_prompt(run_state *st) {
    const run_opts *o = &st->o;
    fwrite(st->prompt, 1, st->prompt_len, stdout);
    fflush(stdout);

    int rc = 0;
    if (o->prompt_cache != NULL) {
        rc = run_cache_load(st->ctx, o->prompt_cache, st->tokens, st->n_prompt, &st->n_reused);
        if (rc != 0) return rc;
        fprintf(stderr, "prompt cache: reused %d of %d prompt tokens from '%s'\n",
                (int)st->n_reused, (int)st->n_prompt, o->prompt_cache);
    }
    st->kv.n_past = st->n_reused;
    st->kv.n_cached = st->n_reused;
    const uint64_t t0 = tool_time_ns();
    rc = run_prompt(&st->kv, st->batch, st->tokens, st->n_reused, st->n_prompt, st->n_batch,
                    &st->row);
    if (rc != 0) return rc;
    st->prompt_ms = (double)(tool_time_ns() - t0) / 1e6;
    if (o->prompt_cache != NULL) {
        const cs_status ss = cs_state_save_file(st->ctx, o->prompt_cache, st->tokens, st->n_prompt);
        if (ss != CS_OK) return tool_fail_lib(ss, "prompt cache");
        fprintf(stderr, "prompt cache: saved %d prompt tokens to '%s'\n", (int)st->n_prompt,
                o->prompt_cache);
    }
    if (o->check_shift && (rc = run_kv_check(&st->kv, "prompt", 0)) != 0) return rc;
    for (int32_t i = 0; i < st->n_prompt; i++) cs_sampler_accept(st->smpl, st->tokens[i]);
    return 0;
}

/* Sample the next token from the logits of `row` (end-of-generation tokens
 * masked with --ignore-eos) and add it to the sampler's history. */
static int run_sample(run_state *st, int32_t row, cs_token *tok) {
    const float *logits = cs_get_logits_ith(st->ctx, row);
    if (logits == NULL) {
        tool_error("decode returned no logits for row %d", (int)row);
        return TOOL_EXIT_FAIL;
    }
    if (st->n_eog > 0) {
        memcpy(st->logits_buf, logits, (size_t)st->n_vocab * sizeof(float));
        for (int32_t i = 0; i < st->n_eog; i++) st->logits_buf[st->eog[i]] = -INFINITY;
        logits = st->logits_buf;
    }
    const uint64_t t0 = tool_time_ns();
    *tok = cs_sampler_sample(st->smpl, logits);
    st->sample_ms += (double)(tool_time_ns() - t0) / 1e6;
    st->n_sample++;
    if (*tok < 0) return tool_fail_lib(CS_ERR_INVALID_ARG, "sampler");
    cs_sampler_accept(st->smpl, *tok);
    return 0;
}

/* Decode one generated token at n_past, timed. */
static int run_decode_token(run_state *st, cs_token tok) {
    const cs_seq seq0 = 0;
    cs_batch_clear(st->batch);
    const cs_status bs = cs_batch_add(st->batch, tok, st->kv.n_past, &seq0, 1, true);
    if (bs != CS_OK) return tool_fail_lib(bs, "batch");
    const uint64_t t0 = tool_time_ns();
    const int rc =
        tool_decode(st->ctx, st->batch, "decode: no KV slot at position %d", (int)st->kv.n_past);
    st->eval_ms += (double)(tool_time_ns() - t0) / 1e6;
    if (rc != 0) return rc;
    run_kv_after_decode(&st->kv, 1);
    st->n_eval++;
    return 0;
}

/* Sample, print and decode until -n tokens, an end-of-generation token or
 * a full context (without shift); then the text's tail and "\n\n". */
static int run_generate(run_state *st) {
    const run_opts *o = &st->o;
    int32_t n_gen = 0;
    int32_t row = st->row;
    while (o->n_predict < 0 || n_gen < o->n_predict) {
        cs_token tok = 0;
        int rc = run_sample(st, row, &tok);
        if (rc != 0) return rc;
        if (!o->ignore_eos && cs_token_is_eog(st->model, tok)) {
            fprintf(stderr, "\n[end of text]\n");
            break;
        }
        const int32_t n = tool_token_piece(st->model, tok, false, &st->piece, &st->piece_cap);
        if (n < 0 || run_out_piece(&st->out, st->piece, (size_t)n) != 0) {
            tool_error("cannot print token %d", (int)tok);
            return TOOL_EXIT_FAIL;
        }
        if (o->print_ids) fprintf(stderr, "id %d\n", (int)tok);
        n_gen++;
        if (o->n_predict >= 0 && n_gen >= o->n_predict) break;
        int stop = RUN_GO;
        if ((rc = run_kv_before_decode(&st->kv, 1, &stop)) != 0) return rc;
        if (stop != RUN_GO) break;
        if ((rc = run_decode_token(st, tok)) != 0) return rc;
        row = 0;
    }
    if (st->out.len > 0) fwrite(st->out.buf, 1, st->out.len, stdout); /* an incomplete UTF-8 tail */
    st->out.len = 0;
    fputs("\n\n", stdout);
    fflush(stdout);
    return 0;
}

/* The last check and map, the shift / cache statistics and the timings. */
static int run_report(run_state *st) {
    const run_opts *o = &st->o;
    run_kv *s = &st->kv;
    int rc = 0;
    if (o->check_shift && (rc = run_kv_check(s, "end", 0)) != 0) return rc;
    if (s->map != NULL) {
        run_kv_event(s, "end");
        if (tool_kvmap_finish(s->map) != 0) return TOOL_EXIT_FAIL;
        if (o->common.kv_map_svg != NULL)
            fprintf(stderr, "kv-map: wrote '%s'\n", o->common.kv_map_svg);
    }
    cs_kv_info info;
    const cs_status ks = cs_kv_stats(st->ctx, &info);
    if (ks != CS_OK) return tool_fail_lib(ks, "kv stats");
    fprintf(stderr, "\ncontext shift: %d shifts, %lld tokens discarded, n_keep = %d\n",
            (int)s->n_shifts, (long long)s->n_discarded, (int)s->n_keep);
    if (o->grp_attn_n > 1) {
        fprintf(stderr,
                "self-extend: %d window compressions (G = %d, W = %d); %d tokens cached at "
                "positions 0..%d\n",
                (int)s->n_extends, (int)o->grp_attn_n, (int)o->grp_attn_w, (int)s->n_cached,
                (int)(s->n_past - 1));
    }
    fprintf(stderr,
            "kv cache: used %d/%d cells, holes %d; K-shift: %llu passes, %llu cells rotated; "
            "defrag: %llu passes, %llu cells moved\n",
            (int)info.used, (int)info.size, (int)info.holes,
            (unsigned long long)info.n_shift_passes, (unsigned long long)info.n_cells_shifted,
            (unsigned long long)info.n_defrag_passes, (unsigned long long)info.n_cells_moved);
    if (o->check_shift) {
        fprintf(stderr, "shift-check ok (%d shifts, %d self-extend compressions, %d checks)\n",
                (int)s->n_shifts, (int)s->n_extends, (int)s->n_checks);
    }
    run_print_timings(st->load_ms, st->sample_ms, st->n_sample, st->prompt_ms,
                      st->n_prompt - st->n_reused, st->eval_ms, st->n_eval,
                      (double)(tool_time_ns() - st->t_start) / 1e6);
    return TOOL_EXIT_OK;
}

/* parse -> load -> set up -> prompt -> generate -> report, one cleanup. */
int cmd_run(int argc, char **argv) {
    run_state st;
    memset(&st, 0, sizeof(st));
    run_defaults(&st.o);
    int rc = run_parse(argc, argv, &st.o);
    if (!tool_begin(&rc, &st.o.common, run_usage)) return rc;
    st.kv.o = &st.o;
    st.t_start = tool_time_ns();

    if ((rc = run_load(&st)) != 0) goto done;
    if ((rc = run_setup(&st)) != 0) goto done;
    if ((rc = run_eval_prompt(&st)) != 0) goto done;
    if ((rc = run_generate(&st)) != 0) goto done;
    rc = run_report(&st);
done:
    run_free(&st);
    return rc;
}
