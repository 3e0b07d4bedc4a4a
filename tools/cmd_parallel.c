/* cmd_parallel.c: `ctxshift parallel`, N simulated clients served with
 * continuous batching over one shared KV cache (llama.cpp's
 * examples/parallel, docs/KV_CACHE_SPEC.md §6.3).
 *
 * The system prompt is decoded once as sequence 0 and shared with every
 * client sequence 1..N by cs_kv_seq_cp (no data copied). Each step builds
 * one list: the next token of every active client, then the prompt tokens
 * of the clients that start a request in this step; it is decoded in
 * chunks of n_batch, halved on CS_NO_KV_SLOT as llama.cpp does. A finished
 * client drops its cells (seq_rm) and is re-seeded from sequence 0.
 *
 * Determinism: request r always gets prompt r mod (number of prompts) and a
 * sampler seeded with seed + r, so its text does not depend on -np, on the
 * order in which requests finish, or on defragmentation.
 *
 * stdout: a line per finished request, the --kv-map pictures, the summary
 * (throughput, cache usage, defrag totals) and every request's text in
 * request order. stderr: load information, warnings and errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "kvmap.h"
#include "tool_context.h"
#include "tools.h"

enum {
    PAR_MAX_CLIENTS = 63,       /* sequence ids 0..63: the library's n_seq_max limit */
    PAR_MAX_REQUESTS = 1000000, /* -ns cap: request records stay in memory */
};

/* A prompt that starts a TinyStories-style story; the requests continue it. */
static const char par_default_system[] =
    "Once upon a time, in a small town, there lived many happy children.";

static const char *const par_default_prompts[] = {
    "Lily went to the park with her mom.",      "Tom had a big red ball.",
    "One day, a little cat found a box.",       "Ben and Sue wanted to build a tall tower.",
    "The sun was hot and the dog was thirsty.", "Sam saw a bird in the tree.",
    "Mia loved to paint pictures of flowers.",  "A small boat was on the lake.",
};

typedef struct par_opts {
    tool_common common; /* -m -c -b -t -ctk -ctv -dt --kv-map --kv-map-svg -v -h */
    const char *system_prompt;
    const char *prompts_file;
    int32_t n_parallel;
    int32_t n_sequences;
    int32_t n_predict;
    int64_t seed; /* -1: random */
    float temp;
} par_opts;

/* A growable byte string. */
typedef struct par_str {
    char *p;
    size_t len;
    size_t cap;
} par_str;

typedef struct par_request {
    int32_t n_prompt; /* request prompt tokens (the system prompt not counted) */
    int32_t n_gen;    /* generated tokens, the end-of-generation token not counted */
    par_str text;     /* the request prompt, then the generated text */
} par_request;

typedef struct par_client {
    int32_t req;      /* request being served, -1 when idle */
    cs_pos pos;       /* position of the next token to decode */
    cs_token sampled; /* last sampled token, decoded in the next step */
    int32_t i_batch;  /* step-list row whose logits the client waits for, -1 none */
    uint64_t t_start; /* when the request started */
    cs_sampler *smpl;
} par_client;

/* One token of a step list. */
typedef struct par_item {
    cs_token token;
    cs_pos pos;
    cs_seq seq;
    bool logits;
} par_item;

static void par_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift parallel [flags]\n"
            "\n"
            "Simulate N clients sending M requests in total to one server, as llama.cpp's\n"
            "parallel example: a system prompt decoded once and shared by every client\n"
            "sequence, continuous batching of all active clients in one decode per step,\n"
            "finished sequences removed from the KV cache and new ones started.\n"
            "\n"
            "  -m,   --model FILE           GGUF model (default: %s)\n"
            "  -np,  --parallel N           client slots, 1..%d (default: 4)\n"
            "  -ns,  --sequences M          requests in total (default: 16)\n"
            "  -n,   --n-predict N          a request ends when its prompt and generated tokens\n"
            "                               reach N (at least one is generated; default: 64)\n"
            "  -c,   --ctx-size N           KV cells; 0 = the model's training context "
            "(default: 0)\n"
            "  -b,   --batch-size N         tokens per decode, capped at the context size "
            "(default: 2048)\n"
            "  -t,   --threads N            worker threads (default: number of cores)\n"
            "  -dt,  --defrag-thold X       defragment when 1 - used/cell_max > X; <= 0 = never\n"
            "                               (default: 0.1)\n"
            "        --temp X               temperature; <= 0 = greedy (default: 0)\n"
            "  -s,   --seed N               sampler seed; request r uses N + r; -1 = random\n"
            "                               (default: -1)\n"
            "  -ctk, --cache-type-k TYPE    K cache type: f32, f16 or q8_0 (default: f16)\n"
            "  -ctv, --cache-type-v TYPE    V cache type: f32, f16 or q8_0 (default: f16)\n"
            "  -p,   --prompt TEXT          system prompt shared by all clients (default: a\n"
            "                               story opening)\n"
            "        --prompts FILE         request prompts, one per line, cycled (default: "
            "%d\n"
            "                               built-in story prompts)\n"
            "        --kv-map               print a map of the KV cache after every defrag and\n"
            "                               every request end\n"
            "        --kv-map-svg FILE      write the same maps as an SVG timeline\n"
            "  -v,   --verbose              print the library's info and debug log\n"
            "  -h,   --help                 print this help\n",
            CS_DEFAULT_MODEL, PAR_MAX_CLIENTS,
            (int)(sizeof(par_default_prompts) / sizeof(par_default_prompts[0])));
}

static void par_defaults(par_opts *o) {
    *o = (par_opts){
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_THREADS | TOOL_FLAG_CTX |
                                       TOOL_FLAG_BATCH | TOOL_FLAG_CACHE_TYPES | TOOL_FLAG_DEFRAG |
                                       TOOL_FLAG_KV_MAP),
        .system_prompt = par_default_system,
        .n_parallel = 4,
        .n_sequences = 16,
        .n_predict = 64,
        .seed = -1,
        .temp = 0.0f,
    };
    o->common.defrag_thold = 0.1f; /* llama.cpp's tools default since b141e5f6 */
}

static int par_parse(int argc, char **argv, par_opts *o) {
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &o->common, &handled);
        if (rc != 0) return rc;
        if (handled) continue;
        if (tool_arg_is(a, "-p", "--prompt")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->system_prompt = v;
        } else if (tool_arg_is(a, NULL, "--prompts")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->prompts_file = v;
        } else if (tool_arg_is(a, "-np", "--parallel")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, PAR_MAX_CLIENTS, &o->n_parallel);
        } else if (tool_arg_is(a, "-ns", "--sequences")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, PAR_MAX_REQUESTS, &o->n_sequences);
        } else if (tool_arg_is(a, "-n", "--n-predict")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, INT32_MAX, &o->n_predict);
        } else if (tool_arg_is(a, "-s", "--seed")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i64(a, v, -1, INT64_MAX, &o->seed);
        } else if (tool_arg_is(a, NULL, "--temp")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_f32(a, v, -1e6f, 1e6f, &o->temp);
        } else {
            rc = tool_arg_unknown("parallel", a);
        }
        if (rc != 0) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ helpers */

static int par_str_append(par_str *s, const char *data, size_t n) {
    if (n == 0) return 0;
    if (n > SIZE_MAX / 2 - s->len) return -1;
    if (s->len + n > s->cap) {
        const size_t cap = (s->len + n) * 2 + 16;
        char *p = realloc(s->p, cap);
        if (p == NULL) return -1;
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
    return 0;
}

static uint64_t par_random_seed(void) {
    /* time and pid mixed by splitmix64's finalizer, kept to 32 bits so that
     * the printed value is easy to pass back with -s */
    uint64_t x = tool_time_ns() ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x & 0xffffffffull;
}

/* Split the --prompts file into lines in place (a trailing '\r' dropped,
 * empty lines skipped). *lines gets a heap array of pointers into text. */
static int par_split_lines(char *text, size_t len, const char *path, const char ***lines,
                           int32_t *n_lines) {
    int32_t n = 0, cap = 0;
    const char **out = NULL;
    size_t i = 0;
    while (i < len) {
        char *line = text + i;
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        size_t l = e - i;
        text[e < len ? e : len] = '\0';
        if (l > 0 && line[l - 1] == '\r') line[--l] = '\0';
        i = e + 1;
        if (l == 0) continue;
        if (n == cap) {
            if (cap >= PAR_MAX_REQUESTS) {
                tool_error("%s: more than %d prompts", path, (int)PAR_MAX_REQUESTS);
                free(out);
                return TOOL_EXIT_FAIL;
            }
            cap = cap == 0 ? 16 : cap * 2;
            const char **p = realloc(out, (size_t)cap * sizeof(*out));
            if (p == NULL) {
                tool_error("%s: out of memory for %d prompts", path, (int)cap);
                free(out);
                return TOOL_EXIT_FAIL;
            }
            out = p;
        }
        out[n++] = line;
    }
    if (n == 0) {
        tool_error("%s: no prompts (the file has no non-empty line)", path);
        free(out);
        return TOOL_EXIT_FAIL;
    }
    *lines = out;
    *n_lines = n;
    return 0;
}

/* Statistics gathered over the run. */
typedef struct par_totals {
    int64_t n_prompt_tokens; /* system prompt + every request prompt */
    int64_t n_gen_tokens;
    int64_t n_decode_calls;
    int64_t n_cache_misses; /* decodes that returned CS_NO_KV_SLOT */
    int32_t max_used;
    float max_frag;
} par_totals;

/* Everything one run owns; freed by par_state_free. */
typedef struct par_state {
    const par_opts *o;
    cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    tool_kvmap *kvmap;
    char *prompts_text;
    const char **prompts;
    int32_t n_prompts;
    cs_token **prompt_tokens; /* per prompt */
    int32_t *prompt_n_tokens;
    cs_token *sys_tokens;
    int32_t n_sys;
    par_request *reqs;
    par_client *clients;
    par_item *items;
    size_t items_cap; /* step-list capacity */
    char *piece;
    size_t piece_cap;
    uint64_t seed;
    int32_t n_batch;
    int32_t next_req;
    int32_t n_done;
    par_totals tot;
} par_state;

static void par_state_free(par_state *s) {
    if (s->clients != NULL) {
        for (int32_t c = 0; c < s->o->n_parallel; c++) cs_sampler_free(s->clients[c].smpl);
    }
    free(s->clients);
    if (s->reqs != NULL) {
        for (int32_t r = 0; r < s->o->n_sequences; r++) free(s->reqs[r].text.p);
    }
    free(s->reqs);
    if (s->prompt_tokens != NULL) {
        for (int32_t i = 0; i < s->n_prompts; i++) free(s->prompt_tokens[i]);
    }
    free(s->prompt_tokens);
    free(s->prompt_n_tokens);
    free(s->sys_tokens);
    free(s->items);
    free(s->piece);
    free(s->prompts);
    free(s->prompts_text);
    tool_kvmap_free(s->kvmap);
    cs_batch_free(s->batch);
    cs_context_free(s->ctx);
    cs_model_free(s->model);
}

/* Record the cache in the map (if any) after an event. */
static void par_map_event(par_state *s, const char *event) {
    if (s->kvmap != NULL) tool_kvmap_event(s->kvmap, s->ctx, event);
}

/* Right after a decode (before finished requests drop their cells): track
 * the peak use and fragmentation. */
static int par_track(par_state *s) {
    cs_kv_info info;
    const cs_status st = cs_kv_stats(s->ctx, &info);
    if (st != CS_OK) return tool_fail_lib(st, "kv stats");
    if (info.used > s->tot.max_used) s->tot.max_used = info.used;
    if (info.fragmentation > s->tot.max_frag) s->tot.max_frag = info.fragmentation;
    return 0;
}

/* When the last decode scheduled a defrag (the library's -dt check), run it
 * now with cs_kv_update so that the map shows its result; the lazy path (at
 * the start of the next decode) would move the same cells. */
static int par_defrag_if_pending(par_state *s) {
    cs_kv_info info;
    cs_status st = cs_kv_stats(s->ctx, &info);
    if (st != CS_OK) return tool_fail_lib(st, "kv stats");
    if (!info.defrag_pending) return 0;
    const uint64_t moved0 = info.n_cells_moved;
    const uint32_t holes0 = (uint32_t)info.holes;
    if ((st = cs_kv_update(s->ctx)) != CS_OK) return tool_fail_lib(st, "kv update");
    if ((st = cs_kv_stats(s->ctx, &info)) != CS_OK) return tool_fail_lib(st, "kv stats");
    char event[128];
    snprintf(event, sizeof(event), "defrag %llu: %u holes, %llu cells moved",
             (unsigned long long)info.n_defrag_passes, (unsigned)holes0,
             (unsigned long long)(info.n_cells_moved - moved0));
    par_map_event(s, event);
    return 0;
}

/* Decode the system prompt as sequence 0 in chunks of n_batch (no logits)
 * and share its cells with every client sequence. */
static int par_system_prompt(par_state *s) {
    const cs_seq seq0 = 0;
    for (int32_t i = 0; i < s->n_sys; i += s->n_batch) {
        const int32_t nb = s->n_sys - i < s->n_batch ? s->n_sys - i : s->n_batch;
        cs_batch_clear(s->batch);
        for (int32_t k = 0; k < nb; k++) {
            const cs_status st =
                cs_batch_add(s->batch, s->sys_tokens[i + k], i + k, &seq0, 1, false);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        s->tot.n_decode_calls++;
        int rc =
            tool_decode(s->ctx, s->batch,
                        "the system prompt (%d tokens) does not fit in the KV cache (%d cells)",
                        (int)s->n_sys, (int)cs_n_ctx(s->ctx));
        if (rc != 0) return rc;
        rc = par_track(s);
        if (rc == 0) rc = par_defrag_if_pending(s);
        if (rc != 0) return rc;
    }
    for (int32_t c = 0; c < s->o->n_parallel; c++) {
        const cs_status st = cs_kv_seq_cp(s->ctx, 0, c + 1, -1, -1);
        if (st != CS_OK) return tool_fail_lib(st, "kv seq_cp");
    }
    s->tot.n_prompt_tokens += s->n_sys;
    par_map_event(s, "system prompt shared");
    return 0;
}

/* Give idle client c the next request: a fresh sampler (seed + request id),
 * its prompt tokens appended to the step list with logits for the last. */
static int par_start_request(par_state *s, int32_t c, int32_t *n_items) {
    par_client *cl = &s->clients[c];
    const int32_t r = s->next_req++;
    const int32_t p = r % s->n_prompts;
    par_request *rq = &s->reqs[r];
    const int32_t n = s->prompt_n_tokens[p];

    cs_sampler_free(cl->smpl);
    cl->smpl = NULL;
    cs_sampler_params sp = cs_sampler_default_params();
    sp.seed = s->seed + (uint64_t)r;
    sp.temp = s->o->temp;
    cs_status st = cs_sampler_new(&sp, cs_model_n_vocab(s->model), &cl->smpl);
    if (st != CS_OK) return tool_fail_lib(st, "sampler");
    for (int32_t i = 0; i < s->n_sys; i++) cs_sampler_accept(cl->smpl, s->sys_tokens[i]);

    if (par_str_append(&rq->text, s->prompts[p], strlen(s->prompts[p])) != 0) {
        tool_error("out of memory for the text of request %d", (int)r);
        return TOOL_EXIT_FAIL;
    }
    for (int32_t k = 0; k < n; k++) {
        const cs_token t = s->prompt_tokens[p][k];
        s->items[*n_items] = (par_item){t, s->n_sys + k, c + 1, k == n - 1};
        (*n_items)++;
        cs_sampler_accept(cl->smpl, t);
    }
    rq->n_prompt = n;
    cl->req = r;
    cl->pos = s->n_sys + n;
    cl->i_batch = *n_items - 1;
    cl->t_start = tool_time_ns();
    s->tot.n_prompt_tokens += n;
    return 0;
}

/* Client c's request ends: drop its cells, re-seed it from the system
 * prompt (spec §6.3), print the request line. */
static int par_end_request(par_state *s, int32_t c, const char *stop) {
    par_client *cl = &s->clients[c];
    par_request *rq = &s->reqs[cl->req];
    cs_status st = cs_kv_seq_rm(s->ctx, c + 1, -1, -1);
    if (st == CS_OK) st = cs_kv_seq_cp(s->ctx, 0, c + 1, -1, -1);
    if (st != CS_OK) return tool_fail_lib(st, "kv seq_rm/seq_cp");
    const double secs = (double)(tool_time_ns() - cl->t_start) / 1e9;
    printf("request %d (client %d): prompt %d t, generated %d t, stop %s, %.3f s: ", (int)cl->req,
           (int)c, (int)rq->n_prompt, (int)rq->n_gen, stop, secs);
    tool_json_string(stdout, rq->text.p, rq->text.len);
    putchar('\n');
    char event[96];
    snprintf(event, sizeof(event), "request %d ended (client %d, sequence %d)", (int)cl->req,
             (int)c, (int)(c + 1));
    par_map_event(s, event);
    cl->req = -1;
    cl->i_batch = -1;
    s->n_done++;
    return 0;
}

/* Sample the next token of client c from batch row `row`. */
static int par_sample(par_state *s, int32_t c, int32_t row) {
    par_client *cl = &s->clients[c];
    par_request *rq = &s->reqs[cl->req];
    const float *logits = cs_get_logits_ith(s->ctx, row);
    if (logits == NULL) {
        tool_error("decode returned no logits for row %d", (int)row);
        return TOOL_EXIT_FAIL;
    }
    const cs_token tok = cs_sampler_sample(cl->smpl, logits);
    if (tok < 0) return tool_fail_lib(CS_ERR_INVALID_ARG, "sampler");
    cs_sampler_accept(cl->smpl, tok);
    cl->i_batch = -1;
    if (cs_token_is_eog(s->model, tok)) return par_end_request(s, c, "eos");
    const int32_t n = tool_token_piece(s->model, tok, false, &s->piece, &s->piece_cap);
    if (n < 0 || par_str_append(&rq->text, s->piece, (size_t)n) != 0) {
        tool_error("cannot store the text of token %d", (int)tok);
        return TOOL_EXIT_FAIL;
    }
    rq->n_gen++;
    s->tot.n_gen_tokens++;
    /* llama.cpp's parallel counts the request prompt too; requests with
     * prompts of different lengths then end in different steps, which is
     * what fragments the cache */
    if ((int64_t)rq->n_prompt + rq->n_gen >= s->o->n_predict) return par_end_request(s, c, "limit");
    cl->sampled = tok;
    return 0;
}

/* Decode the step list items[0, n_items) in chunks of n_batch; on
 * CS_NO_KV_SLOT halve the chunk and retry (the cache is unchanged by a
 * failed decode); sample every client whose row is in a decoded chunk
 * before the next decode invalidates the logits. */
static int par_decode_step(par_state *s, int32_t n_items) {
    int32_t nb = s->n_batch;
    for (int32_t i = 0; i < n_items;) {
        const int32_t n = n_items - i < nb ? n_items - i : nb;
        cs_batch_clear(s->batch);
        for (int32_t k = 0; k < n; k++) {
            const par_item *it = &s->items[i + k];
            const cs_status st =
                cs_batch_add(s->batch, it->token, it->pos, &it->seq, 1, it->logits);
            if (st != CS_OK) return tool_fail_lib(st, "batch");
        }
        bool no_slot = false;
        s->tot.n_decode_calls++;
        int rc = tool_decode_try(s->ctx, s->batch, &no_slot);
        if (rc != 0) return rc;
        if (no_slot) {
            s->tot.n_cache_misses++;
            if (nb == 1) {
                int32_t active = 0;
                for (int32_t c = 0; c < s->o->n_parallel; c++) active += s->clients[c].req >= 0;
                tool_error("the KV cache is full: %d of %d cells used with %d active clients, "
                           "and even a single token does not fit; use a larger -c, fewer "
                           "clients (-np) or fewer tokens per request (-n)",
                           (int)cs_kv_used_cells(s->ctx), (int)cs_n_ctx(s->ctx), (int)active);
                return TOOL_EXIT_FAIL;
            }
            nb /= 2;
            if (s->o->common.verbose) {
                fprintf(stderr, "parallel: no KV slot for %d tokens, retrying with %d\n", (int)n,
                        (int)nb);
            }
            continue;
        }
        if ((rc = par_track(s)) != 0) return rc;
        for (int32_t c = 0; c < s->o->n_parallel; c++) {
            const int32_t row = s->clients[c].i_batch;
            if (s->clients[c].req < 0 || row < i || row >= i + n) continue;
            if ((rc = par_sample(s, c, row - i)) != 0) return rc;
        }
        if ((rc = par_defrag_if_pending(s)) != 0) return rc;
        i += n;
    }
    return 0;
}

/* The serving loop: one step list per iteration until every request ended. */
static int par_loop(par_state *s) {
    const int32_t np = s->o->n_parallel;
    for (;;) {
        int32_t n_items = 0;
        for (int32_t c = 0; c < np; c++) {
            par_client *cl = &s->clients[c];
            if (cl->req < 0) continue;
            s->items[n_items] = (par_item){cl->sampled, cl->pos, c + 1, true};
            cl->i_batch = n_items++;
            cl->pos++;
        }
        for (int32_t c = 0; c < np && s->next_req < s->o->n_sequences; c++) {
            if (s->clients[c].req >= 0) continue;
            int rc = par_start_request(s, c, &n_items);
            if (rc != 0) return rc;
        }
        if (n_items == 0) return 0;
        int rc = par_decode_step(s, n_items);
        if (rc != 0) return rc;
    }
}

static int par_load_prompts(par_state *s) {
    const par_opts *o = s->o;
    if (o->prompts_file != NULL) {
        size_t len = 0;
        int rc = tool_read_file(o->prompts_file, &s->prompts_text, &len);
        if (rc != 0) return rc;
        rc = par_split_lines(s->prompts_text, len, o->prompts_file, &s->prompts, &s->n_prompts);
        if (rc != 0) return rc;
    } else {
        s->n_prompts = (int32_t)(sizeof(par_default_prompts) / sizeof(par_default_prompts[0]));
        s->prompts = malloc((size_t)s->n_prompts * sizeof(*s->prompts));
        if (s->prompts == NULL) {
            tool_error("out of memory for the prompts");
            return TOOL_EXIT_FAIL;
        }
        for (int32_t i = 0; i < s->n_prompts; i++) s->prompts[i] = par_default_prompts[i];
    }
    return 0;
}

/* Tokenize the system prompt (with BOS) and every request prompt (no BOS:
 * they continue the system prompt); check that the longest request with
 * one generated token fits the cache alone. *max_prompt gets the longest. */
static int par_tokenize_all(par_state *s, int32_t *max_prompt) {
    const par_opts *o = s->o;
    int rc = tool_tokenize(s->model, o->system_prompt, strlen(o->system_prompt), true, true,
                           &s->sys_tokens, &s->n_sys);
    if (rc != 0) return rc;
    if (s->n_sys == 0) {
        tool_error("the system prompt is empty and the vocabulary adds no BOS token");
        return TOOL_EXIT_FAIL;
    }
    s->prompt_tokens = calloc((size_t)s->n_prompts, sizeof(*s->prompt_tokens));
    s->prompt_n_tokens = calloc((size_t)s->n_prompts, sizeof(*s->prompt_n_tokens));
    if (s->prompt_tokens == NULL || s->prompt_n_tokens == NULL) {
        tool_error("out of memory for %d prompts", (int)s->n_prompts);
        return TOOL_EXIT_FAIL;
    }
    const int32_t n_ctx = (int32_t)cs_n_ctx(s->ctx);
    *max_prompt = 0;
    for (int32_t i = 0; i < s->n_prompts; i++) {
        rc = tool_tokenize(s->model, s->prompts[i], strlen(s->prompts[i]), false, true,
                           &s->prompt_tokens[i], &s->prompt_n_tokens[i]);
        if (rc != 0) return rc;
        const int32_t n = s->prompt_n_tokens[i];
        if (n == 0) {
            tool_error("prompt %d ('%s') has no tokens", (int)i, s->prompts[i]);
            return TOOL_EXIT_FAIL;
        }
        if ((int64_t)s->n_sys + n + 1 > n_ctx) {
            tool_error("the system prompt (%d tokens) and prompt %d (%d tokens) do not fit in "
                       "-c %d",
                       (int)s->n_sys, (int)i, (int)n, (int)n_ctx);
            return TOOL_EXIT_FAIL;
        }
        if (n > *max_prompt) *max_prompt = n;
    }
    return 0;
}

static void par_print_summary(const par_state *s, double secs) {
    const par_opts *o = s->o;
    cs_kv_info info;
    memset(&info, 0, sizeof(info));
    cs_kv_stats(s->ctx, &info);
    const double tp = secs > 0 ? (double)s->tot.n_prompt_tokens / secs : 0.0;
    const double tg = secs > 0 ? (double)s->tot.n_gen_tokens / secs : 0.0;
    const int64_t n_all = s->tot.n_prompt_tokens + s->tot.n_gen_tokens;
    const double ta = secs > 0 ? (double)n_all / secs : 0.0;
    printf("\n");
    printf("summary: %d clients, %d requests, n_predict = %d, system prompt = %d tokens, "
           "n_ctx = %d, n_batch = %d, n_threads = %d\n",
           (int)o->n_parallel, (int)o->n_sequences, (int)o->n_predict, (int)s->n_sys,
           (int)info.size, (int)s->n_batch, (int)cs_n_threads(s->ctx));
    printf("throughput: prompt %lld tokens (%.2f t/s), generated %lld tokens (%.2f t/s), "
           "total %lld tokens in %.3f s (%.2f t/s)\n",
           (long long)s->tot.n_prompt_tokens, tp, (long long)s->tot.n_gen_tokens, tg,
           (long long)n_all, secs, ta);
    printf("cache: max used = %d of %d cells (%.1f%%), used at end = %d, decode calls = %lld, "
           "cache misses = %lld\n",
           (int)s->tot.max_used, (int)info.size,
           info.size > 0 ? 100.0 * s->tot.max_used / info.size : 0.0, (int)info.used,
           (long long)s->tot.n_decode_calls, (long long)s->tot.n_cache_misses);
    printf("defrag: threshold = %.3f, passes = %llu, cells moved = %llu, blocks moved = %llu, "
           "bytes moved = %llu, fragmentation = %.3f (max %.3f)\n",
           (double)o->common.defrag_thold, (unsigned long long)info.n_defrag_passes,
           (unsigned long long)info.n_cells_moved, (unsigned long long)info.n_blocks_moved,
           (unsigned long long)info.n_bytes_moved, (double)info.fragmentation,
           (double)s->tot.max_frag);
    printf("\ntexts in request order:\n");
    for (int32_t r = 0; r < o->n_sequences; r++) {
        printf("request %d: ", (int)r);
        tool_json_string(stdout, s->reqs[r].text.p, s->reqs[r].text.len);
        putchar('\n');
    }
}

int cmd_parallel(int argc, char **argv) {
    par_opts o;
    par_defaults(&o);
    int rc = par_parse(argc, argv, &o);
    if (!tool_begin(&rc, &o.common, par_usage)) return rc;

    par_state s;
    memset(&s, 0, sizeof(s));
    s.o = &o;
    int32_t max_prompt = 0;

    if ((rc = par_load_prompts(&s)) != 0) goto done;
    if ((rc = tool_load_model(o.common.model, false, &s.model)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;

    char desc[128];
    cs_model_desc(s.model, desc, sizeof(desc));
    const int32_t n_ctx_train = cs_model_n_ctx_train(s.model);
    fprintf(stderr, "load: model '%s': %s, n_vocab = %d, n_ctx_train = %d\n", o.common.model, desc,
            (int)cs_model_n_vocab(s.model), (int)n_ctx_train);

    rc = tool_context_new(s.model, &o.common, (uint32_t)o.n_parallel + 1, &s.ctx);
    if (rc != 0) goto done;
    rc = TOOL_EXIT_FAIL;
    s.n_batch = (int32_t)cs_n_batch(s.ctx);
    fprintf(stderr,
            "context: n_ctx = %d, n_batch = %d, n_seq_max = %d, n_threads = %d, type_k = %s, "
            "type_v = %s, defrag_thold = %.3f\n",
            (int)cs_n_ctx(s.ctx), (int)s.n_batch, (int)cs_n_seq_max(s.ctx),
            (int)cs_n_threads(s.ctx), cs_type_name(o.common.type_k), cs_type_name(o.common.type_v),
            (double)o.common.defrag_thold);

    if ((rc = par_tokenize_all(&s, &max_prompt)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;
    s.seed = o.seed >= 0 ? (uint64_t)o.seed : par_random_seed();
    fprintf(stderr,
            "parallel: %d clients, %d requests, %d prompts, system prompt %d tokens, "
            "n_predict = %d, temp = %.3f, seed = %llu\n",
            (int)o.n_parallel, (int)o.n_sequences, (int)s.n_prompts, (int)s.n_sys, (int)o.n_predict,
            (double)o.temp, (unsigned long long)s.seed);

    s.reqs = calloc((size_t)o.n_sequences, sizeof(*s.reqs));
    s.clients = calloc((size_t)o.n_parallel, sizeof(*s.clients));
    /* a step holds one token per active client plus the prompts of the
     * clients starting in it: at most n_parallel * max(1, max_prompt) */
    s.items_cap = (size_t)o.n_parallel * (size_t)(max_prompt > 1 ? max_prompt : 1);
    s.items = malloc(s.items_cap * sizeof(*s.items));
    if (s.reqs == NULL || s.clients == NULL || s.items == NULL) {
        tool_error("out of memory for %d requests and %d clients", (int)o.n_sequences,
                   (int)o.n_parallel);
        goto done;
    }
    for (int32_t c = 0; c < o.n_parallel; c++) {
        s.clients[c].req = -1;
        s.clients[c].i_batch = -1;
    }
    const cs_status bs = cs_batch_new(s.n_batch, 1, &s.batch);
    if (bs != CS_OK) {
        rc = tool_fail_lib(bs, "batch");
        goto done;
    }
    if (o.common.kv_map || o.common.kv_map_svg != NULL) {
        s.kvmap = tool_kvmap_new(o.common.kv_map ? stdout : NULL, o.common.kv_map_svg, 0);
        if (s.kvmap == NULL) goto done;
    }

    const uint64_t t0 = tool_time_ns();
    if ((rc = par_system_prompt(&s)) != 0) goto done;
    if ((rc = par_loop(&s)) != 0) goto done;
    rc = TOOL_EXIT_FAIL;
    const double secs = (double)(tool_time_ns() - t0) / 1e9;
    if (s.n_done != o.n_sequences) {
        tool_error("internal: %d of %d requests ended", (int)s.n_done, (int)o.n_sequences);
        goto done;
    }
    par_print_summary(&s, secs);
    if (s.kvmap != NULL && tool_kvmap_finish(s.kvmap) != 0) goto done;
    rc = TOOL_EXIT_OK;

done:
    par_state_free(&s);
    return rc;
}
