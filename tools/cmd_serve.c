/* cmd_serve.c: `ctxshift serve`, an OpenAI-compatible HTTP server whose
 * clients share one KV cache (serve.h; docs/SERVER.md).
 *
 * Flags take llama-server's names and meanings. stdout gets one line,
 * "serve: listening on http://HOST:PORT" (with the port chosen when
 * --port 0), once the server accepts connections; everything else goes to
 * stderr. SIGINT / SIGTERM stop it cleanly within SERVE_STOP_GRACE_MS plus
 * about 3 s: new connections are refused at once, queued requests get 503,
 * running ones go on for up to the grace and those still running then end
 * with an error event (and [DONE]); the engine stops, memory is freed,
 * exit status 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "serve.h"
#include "serve_chat.h"
#include "serve_http.h"
#include "tools.h"

/* How long running requests may go on after SIGTERM: with the 3 s that
 * serve_http_stop gives the last events, the server exits within 10 s. */
#define SERVE_STOP_GRACE_MS 5000

typedef struct serve_opts {
    tool_common common; /* -m -c -b -t -ctk -ctv -v -h */
    serve_config cfg;
} serve_opts;

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift serve [flags]\n"
            "\n"
            "An HTTP server with llama-server's and OpenAI's API (/v1/chat/completions,\n"
            "/v1/completions, /completion, ...). N slots share one KV cache: requests are\n"
            "batched together, cached prompt prefixes are shared between requests without\n"
            "copying, and a slot that fills shifts its context (docs/SERVER.md).\n"
            "\n"
            "  -m,   --model FILE           GGUF model (default: %s)\n"
            "        --host ADDR            IPv4 or IPv6 address to listen on (default: 127.0.0.1)\n"
            "        --port N               TCP port; 0 = a free port, printed (default: 8080)\n"
            "  -np,  --parallel N           slots: requests served at once (default: 4)\n"
            "  -c,   --ctx-size N           KV cells shared by all slots; a slot holds up to N/np\n"
            "                               positions; 0 = the model's training context (default: 0)\n"
            "  -b,   --batch-size N         tokens per decode step, shared by prompt chunks and\n"
            "                               generating slots (default: 512)\n"
            TOOL_HELP_THREADS TOOL_HELP_CACHE_TYPES
            "        --no-context-shift     a full slot ends its request (finish_reason \"length\")\n"
            "                               instead of dropping old tokens\n"
            "        --cache-entries N      idle prompt prefixes kept in the cache for reuse\n"
            "                               (default: 16, at most 63 - np)\n"
            "        --api-key KEY          require \"Authorization: Bearer KEY\" (not for /health,\n"
            "                               /v1/models, /)\n"
            "        --alias NAME           the model name clients see (default: the path)\n"
            "        --chat-template NAME   chat format (chatml, llama3, mistral-v7, ...; default:\n"
            "                               detected from the model, else chatml)\n"
            "        --metrics              enable GET /metrics (Prometheus text)\n"
            "        --slots                enable GET /slots\n"
            "        --timeout S            a request's total time limit in seconds (default: 600)\n"
            "        --idle-timeout S       close a connection idle this long (default: 60)\n"
            "        --max-body BYTES       request body limit, 413 above (default: 4194304)\n"
            "        --max-queue N          requests waiting for a slot, 503 above (default: 64)\n"
            "        --max-connections N    open connections (default: 256)\n"
            TOOL_HELP_VERBOSE TOOL_HELP_HELP,
            CS_DEFAULT_MODEL);
}

static void serve_defaults(serve_opts *o) {
    *o = (serve_opts){
        .common = tool_common_defaults(TOOL_FLAG_MODEL | TOOL_FLAG_THREADS | TOOL_FLAG_CTX |
                                       TOOL_FLAG_BATCH | TOOL_FLAG_CACHE_TYPES),
        .cfg =
            {
                .host = "127.0.0.1",
                .port = 8080,
                .n_slots = 4,
                .n_cache_entries = 16,
                .context_shift = true,
                .timeout_s = 600,
                .idle_timeout_s = 60,
                .max_body = 4 << 20,
                .max_queue = 64,
                .max_connections = 256,
            },
    };
    o->common.n_batch = 512;
}

static int serve_parse(int argc, char **argv, serve_opts *o) {
    tool_args it = {argc, argv, 1};
    serve_config *c = &o->cfg;
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &o->common, &handled);
        if (rc != 0) return rc;
        if (handled) continue;
        if (tool_arg_is(a, NULL, "--host")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) c->host = v;
        } else if (tool_arg_is(a, NULL, "--port")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_i32(a, v, 0, 65535, &c->port);
        } else if (tool_arg_is(a, "-np", "--parallel")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_i32(a, v, 1, 63, &c->n_slots);
        } else if (tool_arg_is(a, NULL, "--cache-entries")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 0, 63, &c->n_cache_entries);
        } else if (tool_arg_is(a, NULL, "--no-context-shift")) {
            c->context_shift = false;
        } else if (tool_arg_is(a, NULL, "--cache-reuse")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 0, INT32_MAX, &c->cache_reuse);
        } else if (tool_arg_is(a, NULL, "--api-key")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) {
                if (!*v) {
                    tool_error("--api-key: the key is empty");
                    rc = TOOL_EXIT_USAGE;
                }
                c->api_key = v;
            }
        } else if (tool_arg_is(a, NULL, "--alias")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) c->alias = v;
        } else if (tool_arg_is(a, NULL, "--chat-template")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) c->chat_template = v;
        } else if (tool_arg_is(a, NULL, "--slot-save-path")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) c->slot_save_path = v;
        } else if (tool_arg_is(a, NULL, "--metrics")) {
            c->metrics = true;
        } else if (tool_arg_is(a, NULL, "--slots")) {
            c->slots_endpoint = true;
        } else if (tool_arg_is(a, NULL, "--timeout")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, 7 * 24 * 3600, &c->timeout_s);
        } else if (tool_arg_is(a, NULL, "--idle-timeout")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, 24 * 3600, &c->idle_timeout_s);
        } else if (tool_arg_is(a, NULL, "--max-body")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i64(a, v, 1024, (int64_t)1 << 30, &c->max_body);
        } else if (tool_arg_is(a, NULL, "--max-queue")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, 1 << 20, &c->max_queue);
        } else if (tool_arg_is(a, NULL, "--max-connections")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, 1 << 16, &c->max_connections);
        } else {
            rc = tool_arg_unknown("serve", a);
        }
        if (rc != 0) return rc;
    }
    /* sequence ids: the slots, the entries and one scratch sequence */
    if (c->n_slots + c->n_cache_entries > 63) c->n_cache_entries = 63 - c->n_slots;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    serve_opts o;
    serve_defaults(&o);
    int rc = serve_parse(argc, argv, &o);
    if (!tool_begin(&rc, &o.common, serve_usage)) return rc;
    serve_config *cfg = &o.cfg;
    cfg->model_path = o.common.model;
    cfg->verbose = o.common.verbose;
    cfg->n_threads = o.common.n_threads;
    cfg->type_k = o.common.type_k;
    cfg->type_v = o.common.type_v;

    cs_model *model = NULL;
    serve_engine *engine = NULL;
    serve_http *http = NULL;
    if ((rc = tool_load_model(cfg->model_path, false, &model)) != 0) return rc;
    const char *tmpl = serve_chat_choose(model, cfg->chat_template);
    if (!tmpl) {
        rc = TOOL_EXIT_USAGE;
        goto done;
    }
    cfg->n_ctx = o.common.n_ctx > 0 ? o.common.n_ctx : cs_model_n_ctx_train(model);
    if (cfg->n_ctx <= 0) cfg->n_ctx = 4096;
    cfg->n_ctx_slot = cfg->n_ctx / cfg->n_slots;
    if (cfg->n_ctx_slot < 8) {
        tool_error("serve: -c %d / -np %d leaves %d positions per slot (at least 8 are needed)",
                   (int)cfg->n_ctx, (int)cfg->n_slots, (int)cfg->n_ctx_slot);
        rc = TOOL_EXIT_USAGE;
        goto done;
    }
    cfg->n_batch = o.common.n_batch < cfg->n_ctx ? o.common.n_batch : cfg->n_ctx;

    /* every thread started from here on inherits this mask; the main
     * thread takes the signals with sigwait */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    if (cfg->slot_save_path) {
        const int32_t n_tmp = serve_slot_clean_temporaries(cfg->slot_save_path);
        if (n_tmp > 0) {
            fprintf(stderr, "serve: removed %d unfinished slot file temporaries from %s\n",
                    (int)n_tmp, cfg->slot_save_path);
        }
    }
    if ((rc = serve_engine_start(cfg, model, &engine)) != 0) goto done;
    int32_t port = 0;
    if ((rc = serve_http_start(cfg, model, engine, tmpl, &http, &port)) != 0) goto done;
    fprintf(stderr,
            "serve: model %s, %d slots of %d positions sharing %d KV cells, %d cached-prefix "
            "entries, chat template %s, context shift %s\n",
            cfg->model_path, (int)cfg->n_slots, (int)cfg->n_ctx_slot, (int)cfg->n_ctx,
            (int)cfg->n_cache_entries, tmpl, cfg->context_shift ? "on" : "off");
    printf("serve: listening on http://%s%s%s:%d\n", strchr(cfg->host, ':') ? "[" : "", cfg->host,
           strchr(cfg->host, ':') ? "]" : "", (int)port);
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "serve: %s received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    serve_http_quiesce(http);
    serve_engine_drain(engine, SERVE_STOP_GRACE_MS);
    rc = TOOL_EXIT_OK;
done:
    /* the engine first: open streams get their final error event, then the
     * HTTP daemon closes the connections */
    if (engine) serve_engine_shutdown(engine);
    serve_http_stop(http);
    serve_engine_free(engine);
    cs_model_free(model);
    return rc;
}
