/* cmd_chat.c: `ctxshift chat`, a conversation in the terminal (llama-cli's
 * conversation mode) with the chat formats of `ctxshift serve`.
 *
 * User turns come from stdin, one line each ("\" at the end of a line
 * continues the turn); the reply streams to stdout as it is generated; load
 * info, the template, context shifts and (-v) timings go to stderr.
 *
 * The conversation stays in the KV cache: each turn renders the whole chat
 * with the template (cs_chat_apply_segments), tokenizes it, keeps the
 * cached tokens that are a prefix of it and evaluates only the rest (the
 * new user turn and the assistant prompt; also the end of the last reply
 * when its text tokenizes differently from how it was sampled). A full
 * context is shifted as llama-cli does (keep n_keep, drop half of the rest,
 * slide the tail down), n_keep being BOS plus the rendered system prompt so
 * that the system prompt is never dropped.
 *
 * Ctrl-C (SIGINT) during a reply ends the reply, which stays in the chat;
 * at the prompt it ends the session (exit 0), as EOF and /exit do. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "serve_chat.h"
#include "tool_context.h"
#include "tools.h"

enum { CHAT_MAX_BIAS = 64 };

typedef struct chat_bias {
    cs_token token;
    float bias;
} chat_bias;

typedef struct chat_opts {
    tool_common common; /* -m -c -b -t -ctk -ctv -v -h */
    const char *system;
    const char *chat_template;
    int32_t n_predict;          /* tokens per reply; -1: until end of generation */
    int64_t seed;               /* -1: random */
    cs_sampler_params sampling; /* repeat_last_n -1: the context size; seed unused */
    bool ignore_eos;
    bool no_ctx_shift;
    bool print_ids;
    chat_bias bias[CHAT_MAX_BIAS]; /* -l TOKEN(+|-)BIAS */
    int32_t n_bias;
} chat_opts;

static void chat_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift chat [flags]\n"
            "\n"
            "Chat with a model in the terminal. Each line of stdin is a user turn (a line\n"
            "ending in '\\' continues it); the reply streams to stdout. The conversation stays\n"
            "in the KV cache: each turn evaluates only its new tokens. When the context is\n"
            "full, the oldest half of the chat after the system prompt is dropped.\n"
            "Commands: /exit, /clear (start over), /help. Ctrl-C stops a reply; at the\n"
            "prompt it ends the session, as Ctrl-D does.\n"
            "\n"
            "  -m,   --model FILE         GGUF model (default: %s)\n"
            "  -sys, --system-prompt TEXT system prompt (default: none)\n"
            "        --chat-template NAME chat format (chatml, llama3, llama2, mistral-v7, gemma,\n"
            "                             ...; default: the model's when known, else chatml)\n"
            "  -n,   --n-predict N        tokens per reply; -1 = until end of generation "
            "(default: -1)\n"
            "  -c,   --ctx-size N         context size in tokens; 0 = the model's training context "
            "(default: 0)\n"
            "  -b,   --batch-size N       prompt tokens per decode, capped at the context size "
            "(default: 2048)\n" TOOL_HELP_THREADS
            "  -s,   --seed N             sampler seed; -1 = random (default: -1)\n"
            "        --temp X             temperature; <= 0 = greedy (default: 0.8)\n"
            "        --top-k N            top-k sampling; 0 = off (default: 40)\n"
            "        --top-p X            top-p sampling; 1 = off (default: 0.95)\n"
            "        --min-p X            min-p sampling; 0 = off (default: 0.05)\n"
            "        --repeat-penalty X   repetition penalty; 1 = off (default: 1.0)\n"
            "        --repeat-last-n N    tokens the penalty looks back at; -1 = context size "
            "(default: 64)\n"
            "  -l,   --logit-bias T(+|-)X add X to token T's logit (\"128009+5\", \"2-inf\"); "
            "repeatable\n"
            "        --ignore-eos         never end a reply at end-of-generation tokens\n"
            "        --no-context-shift   end the reply when the context is full instead of "
            "shifting\n" TOOL_HELP_CACHE_TYPES
            "        --print-ids          print the ids of each turn's evaluated tokens and of the "
            "reply\n"
            "                             to stderr\n"
            "  -v,   --verbose            print the library's log and each reply's "
            "timing\n" TOOL_HELP_HELP,
            CS_DEFAULT_MODEL);
}

static void chat_defaults(chat_opts *o) {
    const cs_sampler_params sp = cs_sampler_default_params();
    *o = (chat_opts){
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_THREADS | TOOL_FLAG_CTX |
                                       TOOL_FLAG_BATCH | TOOL_FLAG_CACHE_TYPES),
        .n_predict = -1,
        .seed = -1,
        .sampling = sp,
    };
}

/* "TOKEN+BIAS" / "TOKEN-BIAS" (llama-cli's -l); BIAS may be "inf". */
static int chat_parse_bias(const char *flag, const char *v, chat_opts *o) {
    char *end = NULL;
    errno = 0;
    const long tok = strtol(v, &end, 10);
    if (end == v || errno != 0 || tok < 0 || tok > INT32_MAX || (*end != '+' && *end != '-')) {
        tool_error("%s: '%s' is not TOKEN+BIAS or TOKEN-BIAS", flag, v);
        return TOOL_EXIT_USAGE;
    }
    char *end2 = NULL;
    const float b = strtof(end, &end2);
    if (end2 == end || *end2 != '\0' || isnan(b) || b == INFINITY) {
        tool_error("%s: '%s' is not TOKEN+BIAS or TOKEN-BIAS (BIAS a number or -inf)", flag, v);
        return TOOL_EXIT_USAGE;
    }
    if (o->n_bias == CHAT_MAX_BIAS) {
        tool_error("%s: at most %d biases", flag, CHAT_MAX_BIAS);
        return TOOL_EXIT_USAGE;
    }
    o->bias[o->n_bias++] = (chat_bias){(cs_token)tok, b};
    return 0;
}

static int chat_parse(int argc, char **argv, chat_opts *o) {
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
        } else if (tool_arg_is(a, NULL, "--print-ids")) {
            o->print_ids = true;
        } else if (tool_arg_is(a, "-sys", "--system-prompt")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->system = v;
        } else if (tool_arg_is(a, NULL, "--chat-template")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->chat_template = v;
        } else if (tool_arg_is(a, "-n", "--n-predict")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, -1, INT32_MAX, &o->n_predict);
        } else if (tool_arg_is(a, "-s", "--seed")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i64(a, v, -1, INT64_MAX, &o->seed);
        } else if (tool_arg_is(a, "-l", "--logit-bias")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = chat_parse_bias(a, v, o);
        } else {
            rc = tool_arg_unknown("chat", a);
        }
        if (rc != 0) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ Ctrl-C */

static volatile sig_atomic_t chat_interrupted = 0;

static void chat_on_sigint(int sig) {
    (void)sig;
    chat_interrupted = 1;
}

/* SIGINT sets a flag instead of killing the process. No SA_RESTART: a
 * read at the prompt fails with EINTR, which ends the session. */
static int chat_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = chat_on_sigint;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0) {
        tool_error("sigaction: %s", strerror(errno));
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* ------------------------------------------------------------ state */

typedef struct chat_msg {
    const char *role; /* static: "system", "user", "assistant" */
    char *content;    /* malloc'd */
} chat_msg;

/* Everything one session holds; chat_free releases it. */
typedef struct chat_state {
    chat_opts o;
    cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    cs_sampler *smpl;
    const char *tmpl; /* the chat format's name */
    int32_t n_ctx, n_batch, n_vocab;
    chat_msg *msgs; /* the conversation, system prompt first when given */
    size_t n_msgs, cap_msgs;
    /* Every token the model was given in this session, in order, including
     * those a context shift dropped: cache position p holds hist[p] for
     * p < n_keep and hist[p + n_dropped] after. Grows with the chat
     * (4 bytes a token). */
    cs_token *hist;
    int32_t n_hist, cap_hist;
    int32_t n_keep;     /* cells a shift keeps: BOS + the rendered system prompt */
    int32_t n_dropped;  /* tokens dropped by shifts: hist[n_keep, n_keep + n_dropped) */
    bool keep_known;    /* n_keep checked against the first turn's rendering */
    cs_token *sys_toks; /* the rendered system prompt alone (BOS first) */
    int32_t n_sys;
    int32_t n_shifts;
    char *piece;
    size_t piece_cap;
    char *reply; /* the reply being generated */
    size_t reply_len, reply_cap;
    size_t n_pending; /* bytes of reply not yet printed (an incomplete UTF-8 tail) */
} chat_state;

static int32_t chat_n_past(const chat_state *s) {
    return s->n_hist - s->n_dropped;
}

static void chat_msgs_free(chat_state *s, size_t from) {
    for (size_t i = from; i < s->n_msgs; i++) free(s->msgs[i].content);
    s->n_msgs = from;
}

static void chat_free(chat_state *s) {
    chat_msgs_free(s, 0);
    free(s->msgs);
    free(s->hist);
    free(s->sys_toks);
    free(s->piece);
    free(s->reply);
    cs_sampler_free(s->smpl);
    cs_batch_free(s->batch);
    cs_context_free(s->ctx);
    cs_model_free(s->model);
}

static int chat_oom(void) {
    tool_error("out of memory");
    return TOOL_EXIT_FAIL;
}

/* Append a message (content copied). */
static int chat_push_msg(chat_state *s, const char *role, const char *content, size_t len) {
    if (s->n_msgs == s->cap_msgs) {
        const size_t cap = s->cap_msgs ? s->cap_msgs * 2 : 16;
        chat_msg *p = realloc(s->msgs, cap * sizeof(*p));
        if (p == NULL) return chat_oom();
        s->msgs = p;
        s->cap_msgs = cap;
    }
    char *c = malloc(len + 1);
    if (c == NULL) return chat_oom();
    memcpy(c, content, len);
    c[len] = '\0';
    s->msgs[s->n_msgs++] = (chat_msg){role, c};
    return 0;
}

static int chat_hist_push(chat_state *s, cs_token t) {
    if (s->n_hist == s->cap_hist) {
        const int32_t cap = s->cap_hist ? s->cap_hist * 2 : 1024;
        cs_token *p = realloc(s->hist, (size_t)cap * sizeof(*p));
        if (p == NULL) return chat_oom();
        s->hist = p;
        s->cap_hist = cap;
    }
    s->hist[s->n_hist++] = t;
    return 0;
}

/* ------------------------------------------------------------ prompts */

/* The tokens of rendered segments (serve_chat_tokens: one pass,
 * control tokens only from template text, one BOS). */
static int chat_tokenize_segments(const cs_model *model, const cs_chat_segment *segs,
                                  int32_t n_segs, cs_token **out, int32_t *n_out) {
    serve_error err;
    if (!serve_chat_tokens(model, segs, n_segs, out, n_out, &err)) {
        tool_error("%s", err.msg);
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

/* The tokens of msgs[0, n) rendered with the chat format (and the
 * assistant prompt when add_assistant). Cost: O(conversation bytes). */
static int chat_render(const chat_state *s, size_t n, bool add_assistant, cs_token **out,
                       int32_t *n_out) {
    cs_chat_message *m = malloc((n ? n : 1) * sizeof(*m));
    if (m == NULL) return chat_oom();
    for (size_t i = 0; i < n; i++) m[i] = (cs_chat_message){s->msgs[i].role, s->msgs[i].content};
    int rc = 0;
    cs_chat_segment *segs = NULL;
    const int32_t want = cs_chat_apply_segments(s->tmpl, m, n, add_assistant, NULL, 0);
    if (want < 0) {
        rc = tool_fail_lib((cs_status)want, "chat template");
    } else if ((segs = malloc((size_t)(want ? want : 1) * sizeof(*segs))) == NULL) {
        rc = chat_oom();
    } else {
        const int32_t got = cs_chat_apply_segments(s->tmpl, m, n, add_assistant, segs, want);
        rc = got < 0 ? tool_fail_lib((cs_status)got, "chat template")
                     : chat_tokenize_segments(s->model, segs, got, out, n_out);
    }
    free(segs);
    free(m);
    return rc;
}

static void chat_print_ids(const char *what, const cs_token *t, int32_t n) {
    fprintf(stderr, "%s (%d):", what, (int)n);
    for (int32_t i = 0; i < n; i++) fprintf(stderr, " %d", (int)t[i]);
    fputc('\n', stderr);
}

/* ------------------------------------------------------------ the cache */

/* llama-cli's context shift (spec §6.1): keep [0, n_keep), drop half of
 * the rest, slide the tail down. The K rotation is applied lazily by the
 * next decode. */
static int chat_shift(chat_state *s) {
    const int32_t n_past = chat_n_past(s);
    const int32_t n_discard = (n_past - s->n_keep) / 2;
    if (n_discard < 1) {
        tool_error("context full and nothing to discard after the %d kept tokens", (int)s->n_keep);
        return TOOL_EXIT_FAIL;
    }
    cs_status st = cs_kv_seq_rm(s->ctx, 0, s->n_keep, s->n_keep + n_discard);
    if (st == CS_OK) st = cs_kv_seq_add(s->ctx, 0, s->n_keep + n_discard, n_past, -n_discard);
    if (st != CS_OK) return tool_fail_lib(st, "context shift");
    s->n_dropped += n_discard;
    s->n_shifts++;
    fflush(stdout);
    fprintf(stderr,
            "\n[context shift: kept the first %d tokens (system prompt), dropped %d (n_past %d "
            "-> %d)]\n",
            (int)s->n_keep, (int)n_discard, (int)n_past, (int)(n_past - n_discard));
    return 0;
}

/* Outcomes of chat_eval besides 0 / an exit code. */
enum { CHAT_FULL = -1, CHAT_STOPPED = -2 };

/* Decode toks[0, n) after the cache, chunked, shifting before a chunk that
 * would fill the last cell; each is appended to hist. logits for the last
 * token only (its row in *row). CHAT_FULL with --no-context-shift when
 * they do not fit (nothing decoded then); CHAT_STOPPED when Ctrl-C came
 * between chunks (what was decoded stays). */
static int chat_eval(chat_state *s, const cs_token *toks, int32_t n, int32_t *row) {
    if (s->o.no_ctx_shift && chat_n_past(s) + n >= s->n_ctx) return CHAT_FULL;
    /* a chunk fits once the shifts left n_keep + (n_ctx - n_keep) / 2 */
    int32_t chunk = (s->n_ctx - s->n_keep - 1) / 2;
    if (chunk > s->n_batch) chunk = s->n_batch;
    if (chunk < 1) chunk = 1;
    const cs_seq seq0 = 0;
    for (int32_t i = 0; i < n; i += chunk) {
        if (chat_interrupted) return CHAT_STOPPED;
        const int32_t nb = n - i < chunk ? n - i : chunk;
        while (chat_n_past(s) + nb >= s->n_ctx) {
            const int rc = chat_shift(s);
            if (rc != 0) return rc;
        }
        cs_batch_clear(s->batch);
        const int32_t p0 = chat_n_past(s);
        for (int32_t k = 0; k < nb; k++) {
            const cs_status st =
                cs_batch_add(s->batch, toks[i + k], p0 + k, &seq0, 1, i + k == n - 1);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        const int rc = tool_decode(s->ctx, s->batch, "decode: no KV slot for %d tokens at %d",
                                   (int)nb, (int)p0);
        if (rc != 0) return rc;
        for (int32_t k = 0; k < nb; k++) {
            if (chat_hist_push(s, toks[i + k]) != 0) return TOOL_EXIT_FAIL;
            cs_sampler_accept(s->smpl, toks[i + k]);
        }
        *row = nb - 1;
    }
    return 0;
}

/* Make the cache a prefix of full[0, n_full): keep the longest common
 * prefix of what the model was given (hist) and full, but at least one
 * token of full to evaluate (its logits start the reply); remove the rest
 * of the cache. The one place where that prefix can end inside cells a
 * shift dropped is a last reply whose text tokenizes differently than it
 * was sampled, reaching back before the drop: then the tail of full that
 * fits in half of the free context is evaluated again after the kept
 * tokens. Returns the index in full of the first token to evaluate, or -1
 * after printing an error. Cost: O(n_full). */
static int32_t chat_reconcile(chat_state *s, const cs_token *full, int32_t n_full) {
    int32_t c = 0;
    while (c < s->n_hist && c < n_full && s->hist[c] == full[c]) c++;
    if (c >= n_full) c = n_full - 1;
    if (c == s->n_hist) return c;
    cs_pos from;
    if (s->n_dropped == 0 || c < s->n_keep) {
        from = c;
        s->n_dropped = 0;
        s->n_hist = c;
    } else if (c >= s->n_keep + s->n_dropped) {
        from = c - s->n_dropped;
        s->n_hist = c;
    } else {
        int32_t start = n_full - (s->n_ctx - s->n_keep) / 2;
        if (start < s->n_keep) start = s->n_keep;
        fprintf(stderr,
                "[the chat differs from the cache inside the dropped part; evaluating its last "
                "%d tokens again]\n",
                (int)(n_full - start));
        from = s->n_keep;
        if (start > s->cap_hist) {
            cs_token *p = realloc(s->hist, (size_t)start * sizeof(*p));
            if (p == NULL) {
                chat_oom();
                return -1;
            }
            s->hist = p;
            s->cap_hist = start;
        }
        memcpy(s->hist, full, (size_t)start * sizeof(cs_token));
        s->n_hist = start;
        s->n_dropped = start - s->n_keep;
    }
    const cs_status st = cs_kv_seq_rm(s->ctx, 0, from, -1);
    if (st != CS_OK) {
        tool_fail_lib(st, "cache");
        return -1;
    }
    return s->n_hist;
}

/* ------------------------------------------------------------ a turn */

/* Stream a generated piece: print what is complete UTF-8 up to now. */
static int chat_reply_piece(chat_state *s, const char *piece, size_t n) {
    if (s->reply_len + n + 1 > s->reply_cap) {
        const size_t cap = (s->reply_len + n + 1) * 2;
        char *p = realloc(s->reply, cap);
        if (p == NULL) return chat_oom();
        s->reply = p;
        s->reply_cap = cap;
    }
    memcpy(s->reply + s->reply_len, piece, n);
    s->reply_len += n;
    s->n_pending += n;
    const char *tail = s->reply + s->reply_len - s->n_pending;
    const size_t ok = cs_utf8_complete_len(tail, s->n_pending);
    fwrite(tail, 1, ok, stdout);
    fflush(stdout);
    s->n_pending -= ok;
    return 0;
}

/* Decode one generated token at the end of the cache, shifting first when
 * it would fill the last cell. CHAT_FULL with --no-context-shift. */
static int chat_decode_token(chat_state *s, cs_token tok) {
    if (chat_n_past(s) + 1 >= s->n_ctx) {
        if (s->o.no_ctx_shift) return CHAT_FULL;
        const int rc = chat_shift(s);
        if (rc != 0) return rc;
    }
    const cs_seq seq0 = 0;
    cs_batch_clear(s->batch);
    const cs_status st = cs_batch_add(s->batch, tok, chat_n_past(s), &seq0, 1, true);
    if (st != CS_OK) return tool_fail_lib(st, "batch");
    const int rc =
        tool_decode(s->ctx, s->batch, "decode: no KV slot at position %d", (int)chat_n_past(s));
    if (rc != 0) return rc;
    return chat_hist_push(s, tok);
}

/* One user turn: render the chat with it, evaluate what the cache lacks,
 * stream the reply until an end-of-generation token, -n tokens, Ctrl-C or
 * (--no-context-shift) a full context; the reply joins the chat. */
static int chat_turn(chat_state *s, const char *text, size_t len) {
    const size_t n_before = s->n_msgs;
    int rc = chat_push_msg(s, "user", text, len);
    if (rc != 0) return rc;
    cs_token *full = NULL;
    int32_t n_full = 0;
    if ((rc = chat_render(s, s->n_msgs, true, &full, &n_full)) != 0) return rc;
    if (!s->keep_known) {
        /* BOS and the system prompt, as far as the chat starts with them */
        int32_t k = 0;
        while (k < s->n_sys && k < n_full && s->sys_toks[k] == full[k]) k++;
        s->n_keep = k;
        s->keep_known = true;
        if (s->o.common.verbose) fprintf(stderr, "chat: n_keep = %d\n", (int)s->n_keep);
    }
    const uint64_t t0 = tool_time_ns();
    const int32_t n_hist0 = s->n_hist, dropped0 = s->n_dropped;
    const int32_t first = chat_reconcile(s, full, n_full);
    if (first < 0) {
        free(full);
        return TOOL_EXIT_FAIL;
    }
    const int32_t n_reused = chat_n_past(s); /* cells kept */
    if (s->o.print_ids) chat_print_ids("prompt ids", full + first, n_full - first);
    int32_t row = 0;
    rc = chat_eval(s, full + first, n_full - first, &row);
    free(full);
    const double prompt_ms = (double)(tool_time_ns() - t0) / 1e6;
    if (rc == CHAT_FULL) {
        fprintf(stderr,
                "[context full: this turn needs %d more cells than the %d free "
                "(--no-context-shift); try /clear]\n",
                (int)(n_full - first), (int)(s->n_ctx - 1 - chat_n_past(s)));
        chat_msgs_free(s, n_before);
        return 0;
    }
    if (rc == CHAT_STOPPED) {
        fputc('\n', stdout);
        return chat_push_msg(s, "assistant", "", 0);
    }
    if (rc != 0) return rc;
    if (s->o.common.verbose) {
        fprintf(stderr,
                "turn: %d tokens in the chat, %d cached tokens reused, %d evaluated in %.2f ms "
                "(the cache held %d)\n",
                (int)n_full, (int)n_reused, (int)(n_full - first), prompt_ms,
                (int)(n_hist0 - dropped0));
    }

    /* the reply */
    const uint64_t t1 = tool_time_ns();
    const char *stop = "limit";
    int32_t n_gen = 0, n_ids = 0, cap_ids = 0;
    cs_token *ids = NULL;
    s->reply_len = 0;
    s->n_pending = 0;
    for (;;) {
        if (chat_interrupted) {
            stop = "interrupted";
            break;
        }
        if (s->o.n_predict >= 0 && n_gen >= s->o.n_predict) break;
        const float *logits = cs_get_logits_ith(s->ctx, row);
        if (logits == NULL) {
            tool_error("decode returned no logits for row %d", (int)row);
            rc = TOOL_EXIT_FAIL;
            break;
        }
        const cs_token tok = cs_sampler_sample(s->smpl, logits);
        if (tok < 0) {
            rc = tool_fail_lib(CS_ERR_INVALID_ARG, "sampler");
            break;
        }
        cs_sampler_accept(s->smpl, tok);
        if (s->o.print_ids) {
            if (n_ids == cap_ids) {
                cap_ids = cap_ids ? cap_ids * 2 : 64;
                cs_token *p = realloc(ids, (size_t)cap_ids * sizeof(*p));
                if (p == NULL) {
                    rc = chat_oom();
                    break;
                }
                ids = p;
            }
            ids[n_ids++] = tok;
        }
        if (cs_token_is_eog(s->model, tok)) {
            stop = "eog";
            break;
        }
        const int32_t np = tool_token_piece(s->model, tok, false, &s->piece, &s->piece_cap);
        if (np < 0) {
            tool_error("cannot print token %d", (int)tok);
            rc = TOOL_EXIT_FAIL;
            break;
        }
        if ((rc = chat_reply_piece(s, s->piece, (size_t)np)) != 0) break;
        n_gen++;
        /* the last token of a -n limit is not decoded: the next turn does it */
        if (s->o.n_predict >= 0 && n_gen >= s->o.n_predict) break;
        rc = chat_decode_token(s, tok);
        if (rc == CHAT_FULL) {
            fflush(stdout);
            fprintf(stderr, "\n[context full (%d of %d cells); reply ended (--no-context-shift)]\n",
                    (int)chat_n_past(s), (int)s->n_ctx);
            stop = "context full";
            rc = 0;
            break;
        }
        if (rc != 0) break;
        row = 0;
    }
    if (s->n_pending > 0) fwrite(s->reply + s->reply_len - s->n_pending, 1, s->n_pending, stdout);
    s->n_pending = 0;
    fputc('\n', stdout);
    fflush(stdout);
    if (s->o.print_ids) chat_print_ids("reply ids", ids, n_ids);
    free(ids);
    if (rc != 0) return rc;
    if (s->o.common.verbose) {
        const double ms = (double)(tool_time_ns() - t1) / 1e6;
        fprintf(stderr, "reply: %d tokens in %.2f ms (%.2f tokens per second), stop: %s\n",
                (int)n_gen, ms, ms > 0 ? 1e3 * n_gen / ms : 0.0, stop);
    }
    return chat_push_msg(s, "assistant", s->reply ? s->reply : "", s->reply_len);
}

/* ------------------------------------------------------------ the session */

/* The system prompt (when given) as the first message; its rendering
 * alone is what a shift keeps. Also what /clear returns to. */
static int chat_start(chat_state *s) {
    chat_msgs_free(s, 0);
    s->n_hist = 0;
    s->n_dropped = 0;
    s->keep_known = false;
    free(s->sys_toks);
    s->sys_toks = NULL;
    s->n_sys = 0;
    int rc = 0;
    if (s->o.system != NULL) {
        if ((rc = chat_push_msg(s, "system", s->o.system, strlen(s->o.system))) != 0) return rc;
        if ((rc = chat_render(s, 1, false, &s->sys_toks, &s->n_sys)) != 0) return rc;
    } else {
        s->sys_toks = malloc(sizeof(cs_token));
        if (s->sys_toks == NULL) return chat_oom();
        const cs_token bos = cs_token_bos(s->model);
        if (cs_vocab_add_bos(s->model) && bos >= 0) s->sys_toks[s->n_sys++] = bos;
    }
    if (!s->o.no_ctx_shift && s->n_sys > s->n_ctx - 3) {
        tool_error("the system prompt is %d tokens; a context shift keeps it and needs n_keep <= "
                   "n_ctx - 3 = %d (use a larger -c or --no-context-shift)",
                   (int)s->n_sys, (int)(s->n_ctx - 3));
        return TOOL_EXIT_FAIL;
    }
    return 0;
}

static int chat_load(chat_state *s) {
    const chat_opts *o = &s->o;
    int rc = tool_load_model(o->common.model, false, &s->model);
    if (rc != 0) return rc;
    char desc[128];
    cs_model_desc(s->model, desc, sizeof(desc));
    s->n_vocab = cs_model_n_vocab(s->model);
    fprintf(stderr, "load: model '%s': %s, n_vocab = %d, n_ctx_train = %d\n", o->common.model, desc,
            (int)s->n_vocab, (int)cs_model_n_ctx_train(s->model));
    s->tmpl = serve_chat_choose(s->model, o->chat_template);
    if (s->tmpl == NULL) return TOOL_EXIT_USAGE;
    fprintf(stderr, "chat: template %s%s\n", s->tmpl, o->chat_template ? " (--chat-template)" : "");
    if ((rc = tool_context_new(s->model, &o->common, 1, &s->ctx)) != 0) return rc;
    s->n_ctx = (int32_t)cs_n_ctx(s->ctx);
    s->n_batch = (int32_t)cs_n_batch(s->ctx);
    fprintf(
        stderr, "context: n_ctx = %d, n_batch = %d, n_threads = %d, type_k = %s, type_v = %s%s\n",
        (int)s->n_ctx, (int)s->n_batch, (int)cs_n_threads(s->ctx), cs_type_name(o->common.type_k),
        cs_type_name(o->common.type_v), o->no_ctx_shift ? ", context shift off" : "");
    if (!o->no_ctx_shift && !cs_kv_can_shift(s->ctx)) {
        tool_error("this model cannot move cache positions; use --no-context-shift");
        return TOOL_EXIT_FAIL;
    }
    const cs_status bs = cs_batch_new(s->n_batch, 1, &s->batch);
    if (bs != CS_OK) return tool_fail_lib(bs, "batch");

    uint64_t seed = (uint64_t)o->seed;
    if (o->seed < 0) seed = (tool_time_ns() ^ ((uint64_t)getpid() << 32)) & 0xffffffffull;
    cs_sampler_params sp = o->sampling;
    sp.seed = seed;
    if (sp.repeat_last_n < 0) sp.repeat_last_n = s->n_ctx;
    cs_status st = cs_sampler_new(&sp, s->n_vocab, &s->smpl);
    if (st != CS_OK) return tool_fail_lib(st, "sampler");
    for (int32_t i = 0; i < o->n_bias; i++) {
        st = cs_sampler_set_logit_bias(s->smpl, o->bias[i].token, o->bias[i].bias);
        if (st != CS_OK) return tool_fail_lib(st, "--logit-bias");
    }
    if (o->ignore_eos) {
        /* as llama.cpp: end-of-generation tokens banned */
        for (cs_token t = 0; t < s->n_vocab; t++) {
            if (cs_token_is_eog(s->model, t) &&
                (st = cs_sampler_set_logit_bias(s->smpl, t, -INFINITY)) != CS_OK)
                return tool_fail_lib(st, "--ignore-eos");
        }
    }
    fprintf(stderr, "sampler: seed = %llu, temp = %.3f, top_k = %d, top_p = %.3f, min_p = %.3f\n",
            (unsigned long long)seed, (double)sp.temp, (int)sp.top_k, (double)sp.top_p,
            (double)sp.min_p);
    return chat_start(s);
}

/* Read one turn: lines joined while they end in '\' (the '\' becomes a
 * newline). *eof on end of input or Ctrl-C at the prompt. */
static int chat_read_turn(char **line, size_t *cap, char **turn, size_t *len, bool *eof) {
    *len = 0;
    *eof = false;
    const bool tty = isatty(STDIN_FILENO) != 0;
    for (bool more = true; more;) {
        if (tty) {
            fputs(*len ? ". " : "> ", stdout);
            fflush(stdout);
        }
        errno = 0;
        ssize_t n = getline(line, cap, stdin);
        if (n < 0) {
            if (errno == EINTR || chat_interrupted) fputc('\n', stdout);
            *eof = true;
            return 0;
        }
        if (n > 0 && (*line)[n - 1] == '\n') n--;
        if (n > 0 && (*line)[n - 1] == '\r') n--;
        more = n > 0 && (*line)[n - 1] == '\\';
        if (more) (*line)[n - 1] = '\n';
        char *p = realloc(*turn, *len + (size_t)n + 1);
        if (p == NULL) return chat_oom();
        *turn = p;
        memcpy(*turn + *len, *line, (size_t)n);
        *len += (size_t)n;
        (*turn)[*len] = '\0';
    }
    return 0;
}

int cmd_chat(int argc, char **argv) {
    chat_state s;
    memset(&s, 0, sizeof(s));
    chat_defaults(&s.o);
    int rc = chat_parse(argc, argv, &s.o);
    if (!tool_begin(&rc, &s.o.common, chat_usage)) return rc;
    char *line = NULL, *turn = NULL;
    size_t line_cap = 0, len = 0;
    if ((rc = chat_signals()) != 0) goto done;
    if ((rc = chat_load(&s)) != 0) goto done;
    for (;;) {
        chat_interrupted = 0;
        bool eof = false;
        if ((rc = chat_read_turn(&line, &line_cap, &turn, &len, &eof)) != 0 || eof) break;
        if (len == 0) continue;
        if (strcmp(turn, "/exit") == 0) break;
        if (strcmp(turn, "/help") == 0) {
            fputs("/exit: end the session (also Ctrl-D, or Ctrl-C at the prompt)\n"
                  "/clear: forget the chat (the system prompt stays)\n"
                  "/help: this list\n"
                  "A line ending in '\\' continues on the next line. Ctrl-C stops a reply.\n",
                  stdout);
            continue;
        }
        if (strcmp(turn, "/clear") == 0) {
            const cs_status st = cs_kv_seq_rm(s.ctx, 0, 0, -1);
            if (st != CS_OK) {
                rc = tool_fail_lib(st, "cache");
                break;
            }
            cs_sampler_reset(s.smpl); /* the same seed as a new session */
            if ((rc = chat_start(&s)) != 0) break;
            fprintf(stderr, "[chat cleared]\n");
            continue;
        }
        if ((rc = chat_turn(&s, turn, len)) != 0) break;
    }
    if (rc == 0 && s.o.common.verbose) {
        fprintf(stderr, "chat: %d messages, %d context shifts, %d tokens cached\n", (int)s.n_msgs,
                (int)s.n_shifts, (int)chat_n_past(&s));
    }
done:
    free(line);
    free(turn);
    chat_free(&s);
    return rc;
}
