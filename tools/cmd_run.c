/* cmd_run.c: `ctxshift run`, text generation with llama-cli's flags.
 *
 * stdout carries only the text: the prompt as given, each generated piece as
 * it is produced, then "\n\n" (the shape of llama-cli's stdout). Load info,
 * the seed, stop reasons and timings go to stderr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "tools.h"

typedef struct run_opts {
    const char *model_path;
    const char *prompt;
    const char *prompt_file;
    const char *prompt_cache; /* --prompt-cache FILE: KV state of the prompt, reused and saved */
    int32_t n_predict; /* -1: until EOS or a full context */
    int32_t n_ctx;     /* 0: the model's training context */
    int32_t n_batch;
    int32_t n_threads; /* 0: number of cores */
    int64_t seed;      /* -1: random */
    float temp;
    int32_t top_k;
    float top_p;
    float min_p;
    float repeat_penalty;
    int32_t repeat_last_n; /* -1: the context size */
    int32_t type_k;
    int32_t type_v;
    float defrag_thold;
    bool ignore_eos;
    bool verbose;
    bool help;
} run_opts;

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift run [flags]\n"
            "\n"
            "Generate text from a prompt. stdout gets the prompt, then the generated text;\n"
            "everything else goes to stderr.\n"
            "\n"
            "  -m,   --model FILE         GGUF model (default: %s)\n"
            "  -p,   --prompt TEXT        prompt (default: empty, i.e. BOS only)\n"
            "  -f,   --file FILE          read the prompt from a file\n"
            "        --prompt-cache FILE  reuse the KV state of the longest common prompt prefix\n"
            "                             saved in FILE, and save the prompt's state there\n"
            "  -n,   --n-predict N        tokens to generate; -1 = until EOS or the context is "
            "full (default: -1)\n"
            "  -c,   --ctx-size N         context size in tokens; 0 = the model's training context "
            "(default: 0)\n"
            "  -b,   --batch-size N       prompt tokens per decode, capped at the context size "
            "(default: 2048)\n"
            "  -t,   --threads N          worker threads (default: number of cores)\n"
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
            "  -ctk, --cache-type-k TYPE  K cache type: f32, f16 or q8_0 (default: f16)\n"
            "  -ctv, --cache-type-v TYPE  V cache type: f32, f16 or q8_0 (default: f16)\n"
            "  -dt,  --defrag-thold X     defragment the KV cache when 1 - used/cell_max > X;\n"
            "                             <= 0 = never (default: 0.1)\n"
            "  -v,   --verbose            print the library's info and debug log\n"
            "  -h,   --help               print this help\n",
            CS_DEFAULT_MODEL);
}

static void run_defaults(run_opts *o) {
    const cs_sampler_params sp = cs_sampler_default_params();
    memset(o, 0, sizeof(*o));
    o->model_path = CS_DEFAULT_MODEL;
    o->n_predict = -1;
    o->n_ctx = 0;
    o->n_batch = 2048;
    o->n_threads = 0;
    o->seed = -1;
    o->temp = sp.temp;
    o->top_k = sp.top_k;
    o->top_p = sp.top_p;
    o->min_p = sp.min_p;
    o->repeat_penalty = sp.repeat_penalty;
    o->repeat_last_n = sp.repeat_last_n;
    o->type_k = CS_TYPE_F16;
    o->type_v = CS_TYPE_F16;
    o->defrag_thold = 0.1f; /* llama.cpp's tools default since b141e5f6 */
}

static int run_parse(int argc, char **argv, run_opts *o) {
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        int rc = 0;
        if (tool_arg_is(a, "-h", "--help")) {
            o->help = true;
        } else if (tool_arg_is(a, "-v", "--verbose")) {
            o->verbose = true;
        } else if (tool_arg_is(a, NULL, "--ignore-eos")) {
            o->ignore_eos = true;
        } else if (tool_arg_is(a, "-m", "--model")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->model_path = v;
        } else if (tool_arg_is(a, "-p", "--prompt")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->prompt = v;
        } else if (tool_arg_is(a, "-f", "--file")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->prompt_file = v;
        } else if (tool_arg_is(a, NULL, "--prompt-cache")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->prompt_cache = v;
        } else if (tool_arg_is(a, "-n", "--n-predict")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -1, INT32_MAX, &o->n_predict);
        } else if (tool_arg_is(a, "-c", "--ctx-size")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 0, INT32_MAX, &o->n_ctx);
        } else if (tool_arg_is(a, "-b", "--batch-size")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, INT32_MAX, &o->n_batch);
        } else if (tool_arg_is(a, "-t", "--threads")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, 4096, &o->n_threads);
        } else if (tool_arg_is(a, "-s", "--seed")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i64(a, v, -1, INT64_MAX, &o->seed);
        } else if (tool_arg_is(a, NULL, "--temp")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_f32(a, v, -1e6f, 1e6f, &o->temp);
        } else if (tool_arg_is(a, NULL, "--top-k")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 0, INT32_MAX, &o->top_k);
        } else if (tool_arg_is(a, NULL, "--top-p")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_f32(a, v, 0, 1, &o->top_p);
        } else if (tool_arg_is(a, NULL, "--min-p")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_f32(a, v, 0, 1, &o->min_p);
        } else if (tool_arg_is(a, NULL, "--repeat-penalty")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_f32(a, v, 0, 1e6f, &o->repeat_penalty);
        } else if (tool_arg_is(a, NULL, "--repeat-last-n")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -1, INT32_MAX, &o->repeat_last_n);
        } else if (tool_arg_is(a, "-ctk", "--cache-type-k")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_cache_type(a, v, &o->type_k);
        } else if (tool_arg_is(a, "-ctv", "--cache-type-v")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_cache_type(a, v, &o->type_v);
        } else if (tool_arg_is(a, "-dt", "--defrag-thold")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_f32(a, v, -1.0f, 1.0f, &o->defrag_thold);
        } else {
            rc = tool_arg_unknown("run", a);
        }
        if (rc != 0) return rc;
    }
    if (o->prompt != NULL && o->prompt_file != NULL) {
        tool_error("run: -p and -f are mutually exclusive");
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

/* Decode prompt tokens [first, n) in chunks of n_batch with logits for the
 * last token only. On success *last_row is that token's row in the last batch. */
static int run_prompt(cs_context *ctx, cs_batch *batch, const cs_token *tokens, int32_t first,
                      int32_t n, int32_t n_batch, int32_t *last_row) {
    const cs_seq seq0 = 0;
    for (int32_t i = first; i < n; i += n_batch) {
        const int32_t nb = n - i < n_batch ? n - i : n_batch;
        cs_batch_clear(batch);
        for (int32_t k = 0; k < nb; k++) {
            const cs_status st =
                cs_batch_add(batch, tokens[i + k], i + k, &seq0, 1, i + k == n - 1);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        const int32_t ret = cs_decode(ctx, batch);
        if (ret == CS_NO_KV_SLOT) {
            tool_error("decode: no KV slot for prompt tokens [%d, %d)", (int)i, (int)(i + nb));
            return TOOL_EXIT_FAIL;
        }
        if (ret != 0) return tool_fail_lib((cs_status)ret, "decode");
        *last_row = nb - 1;
    }
    return 0;
}

int cmd_run(int argc, char **argv) {
    run_opts o;
    run_defaults(&o);
    int rc = run_parse(argc, argv, &o);
    if (rc != 0) return rc;
    if (o.help) {
        run_usage(stdout);
        return TOOL_EXIT_OK;
    }
    tool_log_setup(o.verbose);

    char *file_text = NULL;
    size_t prompt_len = 0;
    const char *prompt = NULL;
    cs_model *model = NULL;
    cs_context *ctx = NULL;
    cs_batch *batch = NULL;
    cs_sampler *smpl = NULL;
    cs_token *tokens = NULL;
    cs_token *eog = NULL;
    float *logits_buf = NULL;
    char *piece = NULL;
    size_t piece_cap = 0;
    run_out out = {NULL, 0, 0};
    int32_t n_prompt = 0, n_eog = 0;
    const uint64_t t_start = tool_time_ns();

    if (o.prompt_file != NULL) {
        if ((rc = tool_read_file(o.prompt_file, &file_text, &prompt_len)) != 0) goto done;
        prompt = file_text;
    } else {
        prompt = o.prompt != NULL ? o.prompt : "";
        prompt_len = strlen(prompt);
    }

    if ((rc = tool_load_model(o.model_path, false, &model)) != 0) goto done;
    const double load_ms = (double)(tool_time_ns() - t_start) / 1e6;
    rc = TOOL_EXIT_FAIL;

    char desc[128];
    cs_model_desc(model, desc, sizeof(desc));
    const int32_t n_vocab = cs_model_n_vocab(model);
    const int32_t n_ctx_train = cs_model_n_ctx_train(model);
    fprintf(stderr,
            "load: model '%s': %s, %.2f M params, %.2f MiB, n_vocab = %d, n_ctx_train = %d\n",
            o.model_path, desc, (double)cs_model_n_params(model) / 1e6,
            (double)cs_model_size(model) / (1024.0 * 1024.0), (int)n_vocab, (int)n_ctx_train);

    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = o.n_ctx > 0 ? (uint32_t)o.n_ctx : (n_ctx_train > 0 ? (uint32_t)n_ctx_train : 4096u);
    cp.n_batch = (uint32_t)o.n_batch < cp.n_ctx ? (uint32_t)o.n_batch : cp.n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = o.n_threads > 0 ? o.n_threads : tool_default_threads();
    cp.type_k = o.type_k;
    cp.type_v = o.type_v;
    cp.defrag_thold = o.defrag_thold;
    cs_status st = cs_context_new(model, &cp, &ctx);
    if (st != CS_OK) {
        rc = tool_fail_lib(st, "context");
        goto done;
    }
    const int32_t n_ctx = (int32_t)cs_n_ctx(ctx);
    const int32_t n_batch = (int32_t)cs_n_batch(ctx);
    fprintf(stderr, "context: n_ctx = %d, n_batch = %d, n_threads = %d, type_k = %s, type_v = %s\n",
            (int)n_ctx, (int)n_batch, (int)cs_n_threads(ctx), cs_type_name(o.type_k),
            cs_type_name(o.type_v));
    fprintf(stderr, "system_info: n_threads = %d | %s\n", (int)cs_n_threads(ctx), cs_system_info());

    if ((rc = tool_tokenize(model, prompt, prompt_len, true, true, &tokens, &n_prompt)) != 0)
        goto done;
    rc = TOOL_EXIT_FAIL;
    if (n_prompt == 0) {
        tool_error("the prompt is empty and the vocabulary adds no BOS token");
        goto done;
    }
    if (n_prompt >= n_ctx) {
        tool_error("the prompt is %d tokens but the context holds %d (use a larger -c)",
                   (int)n_prompt, (int)n_ctx);
        goto done;
    }

    const uint64_t seed = o.seed >= 0 ? (uint64_t)o.seed : run_random_seed();
    cs_sampler_params sp = cs_sampler_default_params();
    sp.seed = seed;
    sp.temp = o.temp;
    sp.top_k = o.top_k;
    sp.top_p = o.top_p;
    sp.min_p = o.min_p;
    sp.repeat_penalty = o.repeat_penalty;
    sp.repeat_last_n = o.repeat_last_n < 0 ? n_ctx : o.repeat_last_n;
    if ((st = cs_sampler_new(&sp, n_vocab, &smpl)) != CS_OK) {
        rc = tool_fail_lib(st, "sampler");
        goto done;
    }
    fprintf(stderr,
            "sampler: seed = %llu, temp = %.3f, top_k = %d, top_p = %.3f, min_p = %.3f, "
            "repeat_penalty = %.3f, repeat_last_n = %d\n",
            (unsigned long long)seed, (double)sp.temp, (int)sp.top_k, (double)sp.top_p,
            (double)sp.min_p, (double)sp.repeat_penalty, (int)sp.repeat_last_n);

    if (o.ignore_eos) {
        /* As llama.cpp: end-of-generation tokens get logit -inf. */
        eog = malloc((size_t)n_vocab * sizeof(cs_token));
        logits_buf = malloc((size_t)n_vocab * sizeof(float));
        if (eog == NULL || logits_buf == NULL) {
            tool_error("out of memory for %d logits", (int)n_vocab);
            goto done;
        }
        for (cs_token t = 0; t < n_vocab; t++) {
            if (cs_token_is_eog(model, t)) eog[n_eog++] = t;
        }
    }

    if ((st = cs_batch_new(n_batch, 1, &batch)) != CS_OK) {
        rc = tool_fail_lib(st, "batch");
        goto done;
    }
    fprintf(stderr, "generate: n_ctx = %d, n_batch = %d, n_predict = %d, n_prompt = %d\n\n",
            (int)n_ctx, (int)n_batch, (int)o.n_predict, (int)n_prompt);

    fwrite(prompt, 1, prompt_len, stdout);
    fflush(stdout);

    int32_t n_reused = 0;
    if (o.prompt_cache != NULL) {
        if ((rc = run_cache_load(ctx, o.prompt_cache, tokens, n_prompt, &n_reused)) != 0) goto done;
        fprintf(stderr, "prompt cache: reused %d of %d prompt tokens from '%s'\n", (int)n_reused,
                (int)n_prompt, o.prompt_cache);
    }
    uint64_t t0 = tool_time_ns();
    int32_t row = 0;
    if ((rc = run_prompt(ctx, batch, tokens, n_reused, n_prompt, n_batch, &row)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;
    const double prompt_ms = (double)(tool_time_ns() - t0) / 1e6;
    if (o.prompt_cache != NULL) {
        if ((st = cs_state_save_file(ctx, o.prompt_cache, tokens, n_prompt)) != CS_OK) {
            rc = tool_fail_lib(st, "prompt cache");
            goto done;
        }
        fprintf(stderr, "prompt cache: saved %d prompt tokens to '%s'\n", (int)n_prompt,
                o.prompt_cache);
    }
    for (int32_t i = 0; i < n_prompt; i++) cs_sampler_accept(smpl, tokens[i]);

    int32_t n_past = n_prompt, n_gen = 0, n_eval = 0, n_sample = 0;
    double eval_ms = 0.0, sample_ms = 0.0;
    const cs_seq seq0 = 0;
    while (o.n_predict < 0 || n_gen < o.n_predict) {
        const float *logits = cs_get_logits_ith(ctx, row);
        if (logits == NULL) {
            tool_error("decode returned no logits for row %d", (int)row);
            goto done;
        }
        if (n_eog > 0) {
            memcpy(logits_buf, logits, (size_t)n_vocab * sizeof(float));
            for (int32_t i = 0; i < n_eog; i++) logits_buf[eog[i]] = -INFINITY;
            logits = logits_buf;
        }
        t0 = tool_time_ns();
        const cs_token tok = cs_sampler_sample(smpl, logits);
        sample_ms += (double)(tool_time_ns() - t0) / 1e6;
        n_sample++;
        if (tok < 0) {
            tool_fail_lib(CS_ERR_INVALID_ARG, "sampler");
            goto done;
        }
        cs_sampler_accept(smpl, tok);
        if (!o.ignore_eos && cs_token_is_eog(model, tok)) {
            fprintf(stderr, "\n[end of text]\n");
            break;
        }
        const int32_t n = tool_token_piece(model, tok, false, &piece, &piece_cap);
        if (n < 0 || run_out_piece(&out, piece, (size_t)n) != 0) {
            tool_error("cannot print token %d", (int)tok);
            goto done;
        }
        n_gen++;
        if (o.n_predict >= 0 && n_gen >= o.n_predict) break;
        /* llama-cli's trigger: the last cell is never filled (n_past + 1 >= n_ctx). */
        if (n_past + 1 >= n_ctx) {
            fprintf(stderr, "\ncontext full (%d tokens); context shift comes with issue 4\n",
                    (int)n_ctx);
            break;
        }
        cs_batch_clear(batch);
        if ((st = cs_batch_add(batch, tok, n_past, &seq0, 1, true)) != CS_OK) {
            rc = tool_fail_lib(st, "batch");
            goto done;
        }
        t0 = tool_time_ns();
        const int32_t ret = cs_decode(ctx, batch);
        eval_ms += (double)(tool_time_ns() - t0) / 1e6;
        if (ret == CS_NO_KV_SLOT) {
            tool_error("decode: no KV slot at position %d", (int)n_past);
            goto done;
        }
        if (ret != 0) {
            rc = tool_fail_lib((cs_status)ret, "decode");
            goto done;
        }
        n_eval++;
        n_past++;
        row = 0;
    }
    if (out.len > 0) fwrite(out.buf, 1, out.len, stdout); /* an incomplete UTF-8 tail */
    out.len = 0;
    fputs("\n\n", stdout);
    fflush(stdout);
    run_print_timings(load_ms, sample_ms, n_sample, prompt_ms, n_prompt - n_reused, eval_ms, n_eval,
                      (double)(tool_time_ns() - t_start) / 1e6);
    rc = TOOL_EXIT_OK;

done:
    free(out.buf);
    free(piece);
    free(logits_buf);
    free(eog);
    free(tokens);
    cs_sampler_free(smpl);
    cs_batch_free(batch);
    cs_context_free(ctx);
    cs_model_free(model);
    free(file_text);
    return rc;
}
