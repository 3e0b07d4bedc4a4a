/* serve_http.c: routes, limits and streams of `ctxshift serve` on
 * libmicrohttpd (serve_http.h, docs/SERVER.md).
 *
 * Threading: one thread per connection (MHD_USE_THREAD_PER_CONNECTION),
 * at most --max-connections of them. A connection thread parses and
 * validates the request, tokenizes the prompt, submits the task and then
 * blocks on the task's events: a non-stream request until the final record,
 * a stream in libmicrohttpd's content reader, one SSE event per engine
 * event. While it waits it polls its socket, so a client that goes away
 * cancels its task at once (the engine frees the slot at the next step).
 *
 * Limits: the body (--max-body; 413, decided from Content-Length before
 * reading when the client sends one), request line and headers
 * (libmicrohttpd's memory pool: 414 / 431 at once), the queue (503 with
 * Retry-After), idle connections (--idle-timeout), request time
 * (--timeout, enforced by the engine). */
/* POLLRDHUP (Linux): a peer that closed its side, seen without reading. */
#define _GNU_SOURCE

#include "serve_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "args.h"
#include "serve_api.h"
#include "serve_chat.h"
#include "serve_page.h"

struct serve_http {
    const serve_config *cfg;
    const cs_model *model;
    serve_engine *engine;
    const char *chat_template;
    struct MHD_Daemon *daemon;
    int64_t created;   /* start time, for /v1/models */
    atomic_int n_open; /* requests not yet completed, /cache/events excluded */
};

/* Per request state kept across libmicrohttpd's handler calls. */
typedef struct req_ctx {
    bool counted; /* in n_open */
    bool started;
    bool too_big;
    bool oom; /* the body could not be stored: answered 500 once it is read */
    char *body;
    size_t len, cap;
} req_ctx;

/* ------------------------------------------------------------ replies */

static void add_common_headers(struct MHD_Connection *c, struct MHD_Response *r) {
    MHD_add_response_header(r, "Server", "ctxshift/" CS_VERSION_STRING);
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    MHD_add_response_header(r, "Access-Control-Allow-Origin", origin ? origin : "*");
}

static enum MHD_Result reply_bytes(struct MHD_Connection *c, unsigned status, const char *type,
                                   const void *data, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    add_common_headers(c, r);
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    const enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* Send a JSON value (reference stolen). */
static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *j) {
    if (!j) {
        static const char oom[] =
            "{\"error\":{\"code\":500,\"message\":\"out of memory\",\"type\":\"server_error\"}}";
        return reply_bytes(c, 500, "application/json; charset=utf-8", oom, sizeof(oom) - 1);
    }
    char *s = serve_json_dumps(j);
    json_decref(j);
    if (!s) return reply_json(c, 500, NULL);
    const enum MHD_Result ok = reply_bytes(c, status, "application/json; charset=utf-8", s, strlen(s));
    free(s);
    return ok;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return reply_json(c, status, serve_json_error((int32_t)status, msg));
}

/* ------------------------------------------------------------ helpers */

/* False when the peer closed the connection (orderly or not). */
static bool conn_alive(int fd) {
    if (fd < 0) return true;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return true;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) return false;
    if (p.revents & POLLIN) {
        char b;
        const ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n != 0;
    }
    return true;
}

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static void make_id(char *out, size_t cap, const char *prefix) {
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (; n + 1 < cap && n < strlen(prefix) + 24; n++) out[n] = al[(unsigned)rand() % 62];
    out[n] = '\0';
}

/* Constant-time comparison of the Authorization header with the key. */
static bool auth_ok(const serve_http *h, struct MHD_Connection *c) {
    if (!h->cfg->api_key) return true;
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (v && strncmp(v, "Bearer ", 7) == 0) {
        v += 7;
    } else {
        /* the page's EventSource cannot send headers: ?api_key= instead */
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "api_key");
        if (!v) return false;
    }
    const char *k = h->cfg->api_key;
    const size_t lv = strlen(v), lk = strlen(k);
    unsigned diff = (unsigned)(lv ^ lk);
    for (size_t i = 0; i < lk; i++) diff |= (unsigned)(k[i] ^ (i < lv ? v[i] : 0));
    return diff == 0;
}

/* Parse the body as a JSON object; NULL after replying 400. */
static json_t *body_json(struct MHD_Connection *c, const req_ctx *r, enum MHD_Result *res) {
    json_error_t je;
    if (r->len == 0) {
        *res = reply_error(c, 400, "the request body is empty: a JSON object is expected");
        return NULL;
    }
    /* JSON_DECODE_ANY: a scalar body is valid JSON, refused below by name */
    bool oom = false;
    json_t *j =
        serve_json_load(r->body, r->len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &oom);
    if (oom) {
        *res = reply_error(c, 500, "out of memory parsing the request body");
        return NULL;
    }
    if (!j) {
        *res = reply_error(c, 400, "invalid JSON at line %d, column %d: %s", je.line, je.column,
                           je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *res = reply_error(c, 400, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ------------------------------------------------------------ streams */

typedef struct stream_ctx {
    serve_http *h;
    serve_task *t;
    int fd;
    char *buf;
    size_t len, off, cap;
    bool first, ended;
    char id[48];
    int64_t created;
} stream_ctx;

static bool sbuf_add(stream_ctx *s, const char *data, size_t n) {
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        while (cap < s->len + n) cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) return false;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    return true;
}

/* Append "data: <json>\n\n" (reference stolen). */
static bool sbuf_event(stream_ctx *s, json_t *j) {
    if (!j) return false;
    char *txt = serve_json_dumps(j);
    json_decref(j);
    if (!txt) return false;
    const bool ok = sbuf_add(s, "data: ", 6) && sbuf_add(s, txt, strlen(txt)) && sbuf_add(s, "\n\n", 2);
    free(txt);
    return ok;
}

static bool stream_final(stream_ctx *s) {
    const serve_task *t = s->t;
    const bool oai = t->kind != SERVE_NATIVE;
    if (t->finish == SERVE_FINISH_ERROR || t->finish == SERVE_FINISH_NONE) {
        const int32_t st = t->error_status ? t->error_status : 500;
        if (!sbuf_event(s, serve_json_error(st, t->error_msg[0] ? t->error_msg : "request cancelled"))) {
            return false;
        }
    } else if (!oai) {
        if (!sbuf_event(s, serve_json_final(t, s->h->cfg, s->h->model, "", 0, NULL, 0, s->id, s->created))) {
            return false;
        }
    } else {
        /* a failed set drops the whole event and cuts the stream: a
         * finishing chunk without its finish_reason would pass for an
         * ordinary one (json_object_set_new releases v when it fails) */
        json_t *j = serve_json_chunk(t, s->h->model, "", 0, NULL, 0, false, s->id, s->created);
        json_t *choice = j ? json_array_get(json_object_get(j, "choices"), 0) : NULL;
        const char *reason = t->finish == SERVE_FINISH_LIMIT ? "length" : "stop";
        if (!choice || json_object_set_new(choice, "finish_reason", json_string(reason)) != 0 ||
            (t->kind == SERVE_CHAT && json_object_set_new(choice, "delta", json_object()) != 0)) {
            json_decref(j);
            return false;
        }
        if (!sbuf_event(s, j)) return false;
        if (t->p.include_usage) {
            json_t *u = serve_json_chunk(t, s->h->model, "", 0, NULL, 0, false, s->id, s->created);
            if (!serve_json_set(&u, "choices", json_array()) ||
                !serve_json_set(&u, "usage", serve_json_usage(t))) {
                return false;
            }
            if (!sbuf_event(s, u)) return false;
        }
    }
    if (oai && !sbuf_add(s, "data: [DONE]\n\n", 14)) return false;
    return true;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    stream_ctx *s = cls;
    while (s->off == s->len) {
        if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        s->off = s->len = 0;
        if (s->first && s->t->kind == SERVE_CHAT) {
            /* OpenAI's first chunk: the role, empty content */
            s->first = false;
            if (!sbuf_event(s, serve_json_chunk(s->t, s->h->model, "", 0, NULL, 0, true, s->id, s->created))) {
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            continue;
        }
        bool done = false;
        serve_event *ev = serve_task_wait(s->t, 100, &done);
        if (ev) {
            const bool skip = s->t->kind != SERVE_NATIVE && ev->len == 0 && !s->t->p.logprobs;
            bool ok = true;
            if (!skip) {
                ok = sbuf_event(s, serve_json_chunk(s->t, s->h->model, ev->text, ev->len, ev->tokens,
                                                    ev->n_tokens, false, s->id, s->created));
            }
            serve_event_free(ev);
            if (!ok) return MHD_CONTENT_READER_END_WITH_ERROR;
        } else if (done) {
            s->ended = true;
            if (!stream_final(s)) return MHD_CONTENT_READER_END_WITH_ERROR;
        } else if (!conn_alive(s->fd)) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = s->len - s->off;
    if (n > max) n = max;
    memcpy(out, s->buf + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream_ctx *s = cls;
    atomic_store(&s->t->cancelled, true); /* no-op when it had finished */
    serve_task_unref(s->t);
    free(s->buf);
    free(s);
}

/* Queue a 200 text/event-stream response read from reader(ctx) (chunked,
 * blocking reader: thread-per-connection); free_fn(ctx) runs when the
 * response is done or the client is gone, and also here on failure. */
static enum MHD_Result reply_sse(struct MHD_Connection *c, MHD_ContentReaderCallback reader,
                                 void *ctx, MHD_ContentReaderFreeCallback free_fn, size_t block) {
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, reader, ctx, free_fn);
    if (!r) {
        free_fn(ctx);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    add_common_headers(c, r);
    const enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---------------------------------------------------- the cache map */

typedef struct map_ctx {
    serve_http *h;
    int fd;
    uint64_t version;
    char *buf;
    size_t len, off;
} map_ctx;

/* GET /cache/events: an SSE stream of the cache map (serve_engine_map),
 * one event per change, a comment line every 15 s to keep proxies open. */
static ssize_t map_reader(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    map_ctx *m = cls;
    int idle_ms = 0;
    while (m->off == m->len) {
        free(m->buf);
        m->buf = NULL;
        m->off = m->len = 0;
        char *j = serve_engine_map(m->h->engine, &m->version);
        if (j) {
            const size_t n = strlen(j);
            m->buf = malloc(n + 16);
            if (!m->buf) {
                free(j);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            memcpy(m->buf, "data: ", 6);
            memcpy(m->buf + 6, j, n);
            memcpy(m->buf + 6 + n, "\n\n", 2);
            m->len = n + 8;
            free(j);
            break;
        }
        if (!conn_alive(m->fd)) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (idle_ms >= 15000) {
            m->buf = strdup(": keep-alive\n\n");
            if (!m->buf) return MHD_CONTENT_READER_END_WITH_ERROR;
            m->len = strlen(m->buf);
            break;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        idle_ms += 100;
    }
    size_t n = m->len - m->off;
    if (n > max) n = max;
    memcpy(out, m->buf + m->off, n);
    m->off += n;
    return (ssize_t)n;
}

static void map_free(void *cls) {
    map_ctx *m = cls;
    free(m->buf);
    free(m);
}

static enum MHD_Result h_cache_events(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    (void)r;
    map_ctx *m = calloc(1, sizeof(*m));
    if (!m) return reply_error(c, 500, "out of memory");
    m->h = h;
    m->fd = conn_fd(c);
    return reply_sse(c, map_reader, m, map_free, 65536);
}

/* ------------------------------------------------------- generation */

/* Run a task: submit, then stream or wait. Takes the caller's reference. */
static enum MHD_Result run_task(serve_http *h, struct MHD_Connection *c, serve_task *t) {
    const int rc = serve_engine_submit(h->engine, t);
    if (rc != 0) {
        serve_task_unref(t);
        if (rc == 410) return reply_error(c, 503, "the server is shutting down");
        return reply_error(c, 503, "the server is busy: %d requests are waiting (--max-queue)",
                           (int)h->cfg->max_queue);
    }
    char id[48];
    make_id(id, sizeof(id), t->kind == SERVE_CHAT ? "chatcmpl-" : "cmpl-");
    const int64_t created = (int64_t)time(NULL);
    const int fd = conn_fd(c);
    if (t->p.stream) {
        stream_ctx *s = calloc(1, sizeof(*s));
        if (!s) {
            atomic_store(&t->cancelled, true);
            serve_task_unref(t);
            return reply_error(c, 500, "out of memory");
        }
        s->h = h;
        s->t = t;
        s->fd = fd;
        s->first = true;
        s->created = created;
        memcpy(s->id, id, sizeof(id));
        return reply_sse(c, stream_reader, s, stream_free, 16384);
    }
    /* non-stream: collect every event */
    char *text = NULL;
    size_t len = 0, cap = 0;
    serve_token_info *tk = NULL;
    int32_t n_tk = 0, cap_tk = 0;
    bool oom = false, gone = false;
    for (;;) {
        bool done = false;
        serve_event *ev = serve_task_wait(t, 100, &done);
        if (ev) {
            if (len + ev->len + 1 > cap) {
                size_t nc = cap ? cap * 2 : 1024;
                while (nc < len + ev->len + 1) nc *= 2;
                char *p = realloc(text, nc);
                if (p) text = p, cap = nc;
                else oom = true;
            }
            if (!oom) memcpy(text + len, ev->text, ev->len), len += ev->len;
            if ((t->p.logprobs || t->p.return_tokens) && ev->n_tokens > 0 && !oom) {
                if (n_tk + ev->n_tokens > cap_tk) {
                    int32_t nc = cap_tk ? cap_tk * 2 : 64;
                    while (nc < n_tk + ev->n_tokens) nc *= 2;
                    serve_token_info *p = realloc(tk, (size_t)nc * sizeof(*tk));
                    if (p) tk = p, cap_tk = nc;
                    else oom = true;
                }
                if (!oom) memcpy(tk + n_tk, ev->tokens, (size_t)ev->n_tokens * sizeof(*tk)), n_tk += ev->n_tokens;
            }
            serve_event_free(ev);
        } else if (done) {
            break;
        }
        /* checked after events too: a generating task sends one per token,
         * so a wait rarely times out (one poll(0) per event) */
        if (!gone && !conn_alive(fd)) {
            atomic_store(&t->cancelled, true);
            gone = true;
        }
    }
    enum MHD_Result res;
    if (gone) {
        res = MHD_NO; /* nobody to answer */
    } else if (oom) {
        res = reply_error(c, 500, "out of memory");
    } else if (t->finish == SERVE_FINISH_ERROR || t->finish == SERVE_FINISH_NONE) {
        res = reply_error(c, (unsigned)(t->error_status ? t->error_status : 500), "%s",
                          t->error_msg[0] ? t->error_msg : "request cancelled");
    } else {
        res = reply_json(c, 200, serve_json_final(t, h->cfg, h->model, text ? text : "", len, tk, n_tk, id, created));
    }
    free(text);
    free(tk);
    serve_task_unref(t);
    return res;
}

static enum MHD_Result h_generate(serve_http *h, struct MHD_Connection *c, const req_ctx *r, int32_t kind) {
    enum MHD_Result res;
    json_t *body = body_json(c, r, &res);
    if (!body) return res;
    serve_error err = {0};
    serve_params p;
    cs_token *prompt = NULL;
    int32_t n_prompt = 0;
    bool ok = serve_parse_params(body, kind, h->cfg, h->model, &p, &err);
    if (ok && kind == SERVE_CHAT) {
        ok = serve_chat_prompt(h->model, h->chat_template, json_object_get(body, "messages"), &prompt,
                               &n_prompt, &err);
    } else if (ok) {
        ok = serve_tokenize_prompt(json_object_get(body, "prompt"), h->model, "prompt", &prompt,
                                   &n_prompt, &err);
    }
    json_decref(body);
    if (ok && n_prompt >= h->cfg->n_ctx_slot && !h->cfg->context_shift) {
        ok = serve_fail(&err, 400,
                        "the prompt has %d tokens and a slot holds %d (-c %d / -np %d); context "
                        "shift is off, so it cannot be truncated",
                        (int)n_prompt, (int)h->cfg->n_ctx_slot, (int)h->cfg->n_ctx, (int)h->cfg->n_slots);
    }
    if (!ok) {
        serve_params_free(&p);
        free(prompt);
        return reply_error(c, (unsigned)err.status, "%s", err.msg);
    }
    serve_task *t = serve_task_new(kind, prompt, n_prompt);
    if (!t) {
        serve_params_free(&p);
        return reply_error(c, 500, "out of memory");
    }
    t->p = p;
    return run_task(h, c, t);
}

/* ------------------------------------------------------------ routes */

static enum MHD_Result h_health(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    (void)h, (void)r;
    return reply_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

static enum MHD_Result h_models(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    (void)r;
    const char *name = h->cfg->alias ? h->cfg->alias : h->cfg->model_path;
    return reply_json(
        c, 200,
        json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:{s:i,s:i,s:i,s:I,s:I}}]}", "object", "list", "data",
                  "id", name, "object", "model", "created", (json_int_t)h->created, "owned_by",
                  "ctxshift", "meta", "n_vocab", (int)cs_model_n_vocab(h->model), "n_ctx_train",
                  (int)cs_model_n_ctx_train(h->model), "n_embd", (int)cs_model_n_embd(h->model),
                  "n_params", (json_int_t)cs_model_n_params(h->model), "size",
                  (json_int_t)cs_model_size(h->model)));
}

static enum MHD_Result h_props(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    (void)r;
    char bos[128] = "", eos[128] = "";
    const cs_token b = cs_token_bos(h->model), e = cs_token_eos(h->model);
    int32_t nb = b >= 0 ? cs_token_to_piece(h->model, b, bos, sizeof(bos) - 1, true) : 0;
    int32_t ne = e >= 0 ? cs_token_to_piece(h->model, e, eos, sizeof(eos) - 1, true) : 0;
    return reply_json(
        c, 200,
        json_pack("{s:{s:i,s:i},s:i,s:s,s:s,s:o,s:o,s:s}", "default_generation_settings", "n_ctx",
                  (int)h->cfg->n_ctx_slot, "n_predict", -1, "total_slots", (int)h->cfg->n_slots,
                  "model_path", h->cfg->model_path, "chat_template", h->chat_template, "bos_token",
                  serve_json_text(bos, (size_t)(nb > 0 ? nb : 0)), "eos_token",
                  serve_json_text(eos, (size_t)(ne > 0 ? ne : 0)), "build_info",
                  "ctxshift " CS_VERSION_STRING));
}

static enum MHD_Result h_slots(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    (void)r;
    if (!h->cfg->slots_endpoint) {
        return reply_error(c, 501, "this server's slots endpoint is disabled: start it with --slots");
    }
    serve_slot_info info[SERVE_MAX_SEQ];
    const int32_t n = serve_engine_slots(h->engine, info, SERVE_MAX_SEQ);
    json_t *a = json_array();
    for (int32_t i = 0; i < n && i < SERVE_MAX_SEQ && a; i++) {
        serve_json_append(
            &a, json_pack("{s:i,s:I,s:i,s:b,s:i,s:{s:b,s:i,s:i}}", "id", (int)info[i].id, "id_task",
                         (json_int_t)info[i].task_id, "n_ctx", (int)info[i].n_ctx, "is_processing",
                         info[i].processing, "n_cached_tokens", (int)info[i].n_cached_tokens,
                         "next_token", "has_next_token", info[i].processing, "n_remain",
                         (int)info[i].n_remain, "n_decoded", (int)info[i].n_decoded));
    }
    return reply_json(c, 200, a);
}

static void metric(char **buf, size_t *len, size_t *cap, const char *name, const char *type,
                   const char *help, double v) {
    char line[512];
    const int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help,
                           name, type, name, v);
    if (n <= 0) return;
    if (*len + (size_t)n + 1 > *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        char *p = realloc(*buf, nc);
        if (!p) return;
        *buf = p;
        *cap = nc;
    }
    memcpy(*buf + *len, line, (size_t)n);
    *len += (size_t)n;
}

static enum MHD_Result h_metrics(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    (void)r;
    if (!h->cfg->metrics) {
        return reply_error(c, 501, "this server's metrics endpoint is disabled: start it with --metrics");
    }
    serve_stats s;
    serve_engine_stats(h->engine, &s);
    char *b = NULL;
    size_t len = 0, cap = 0;
    /* llama-server's names, so existing dashboards work */
    metric(&b, &len, &cap, "llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.", (double)s.n_prompt_tokens);
    metric(&b, &len, &cap, "llamacpp:prompt_seconds_total", "counter", "Prompt process time", s.prompt_seconds);
    metric(&b, &len, &cap, "llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.", (double)s.n_predicted_tokens);
    metric(&b, &len, &cap, "llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time", s.predicted_seconds);
    metric(&b, &len, &cap, "llamacpp:n_decode_total", "counter", "Total number of llama_decode() calls", (double)s.n_decode);
    metric(&b, &len, &cap, "llamacpp:n_busy_slots_per_decode", "counter", "Average number of busy slots per llama_decode() call",
           s.n_decode ? (double)s.n_busy_slot_steps / (double)s.n_decode : 0.0);
    metric(&b, &len, &cap, "llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
           s.prompt_seconds > 0 ? (double)s.n_prompt_tokens / s.prompt_seconds : 0.0);
    metric(&b, &len, &cap, "llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
           s.predicted_seconds > 0 ? (double)s.n_predicted_tokens / s.predicted_seconds : 0.0);
    metric(&b, &len, &cap, "llamacpp:kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.",
           s.kv.size ? (double)s.kv.used / (double)s.kv.size : 0.0);
    metric(&b, &len, &cap, "llamacpp:kv_cache_tokens", "gauge", "KV-cache tokens.", (double)s.kv.used);
    metric(&b, &len, &cap, "llamacpp:requests_processing", "gauge", "Number of requests processing.", (double)s.n_processing);
    metric(&b, &len, &cap, "llamacpp:requests_deferred", "gauge", "Number of requests deferred.", (double)s.n_deferred);
    /* ctxshift's own: the cache as it is */
    metric(&b, &len, &cap, "ctxshift:kv_cells", "gauge", "KV cells in the shared pool.", (double)s.kv.size);
    metric(&b, &len, &cap, "ctxshift:kv_cells_used", "gauge", "KV cells holding at least one sequence.", (double)s.kv.used);
    metric(&b, &len, &cap, "ctxshift:kv_holes", "gauge", "Empty cells below the highest used cell.", (double)s.kv.holes);
    metric(&b, &len, &cap, "ctxshift:kshift_passes_total", "counter", "K-shift passes that rotated cells.", (double)s.kv.n_shift_passes);
    metric(&b, &len, &cap, "ctxshift:kshift_cells_total", "counter", "Cells rotated by K-shifts.", (double)s.kv.n_cells_shifted);
    metric(&b, &len, &cap, "ctxshift:defrag_passes_total", "counter", "Defragmentation passes.", (double)s.kv.n_defrag_passes);
    metric(&b, &len, &cap, "ctxshift:defrag_cells_moved_total", "counter", "Cells moved by defragmentation.", (double)s.kv.n_cells_moved);
    metric(&b, &len, &cap, "ctxshift:context_shifts_total", "counter", "Slot context shifts.", (double)s.n_context_shifts);
    metric(&b, &len, &cap, "ctxshift:prefix_cache_hits_total", "counter", "Requests that started from a cached prefix.", (double)s.n_prefix_hits);
    metric(&b, &len, &cap, "ctxshift:prefix_tokens_reused_total", "counter", "Prompt tokens taken from the cache instead of evaluated.", (double)s.n_tokens_reused);
    metric(&b, &len, &cap, "ctxshift:prefix_cache_evictions_total", "counter", "Cached prefixes evicted for room.", (double)s.n_cache_evictions);
    metric(&b, &len, &cap, "ctxshift:prefix_cache_entries", "gauge", "Idle prefixes kept in the cache.", (double)s.n_cache_entries);
    metric(&b, &len, &cap, "ctxshift:cells_owned_total", "counter", "Shared cells copied so that a moving sequence owns them (cs_kv_seq_own).", (double)s.kv.n_cells_owned);
    metric(&b, &len, &cap, "ctxshift:cache_reuse_tokens_total", "counter", "Prompt tokens slid into place by --cache-reuse.", (double)s.n_chunks_reused_tokens);
    metric(&b, &len, &cap, "ctxshift:requests_total", "counter", "Finished requests.", (double)s.n_requests);
    const enum MHD_Result ok = reply_bytes(c, 200, "text/plain; version=0.0.4", b ? b : "", len);
    free(b);
    return ok;
}

static enum MHD_Result h_native(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    return h_generate(h, c, r, SERVE_NATIVE);
}
static enum MHD_Result h_completions(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    return h_generate(h, c, r, SERVE_COMPLETION);
}
static enum MHD_Result h_chat(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    return h_generate(h, c, r, SERVE_CHAT);
}

static enum MHD_Result h_tokenize(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    enum MHD_Result res;
    json_t *body = body_json(c, r, &res);
    if (!body) return res;
    const json_t *content = json_object_get(body, "content");
    const json_t *as = json_object_get(body, "add_special");
    const json_t *wp = json_object_get(body, "with_pieces");
    if (!json_is_string(content)) {
        json_decref(body);
        return reply_error(c, 400, "'content' must be a string");
    }
    if ((as && !json_is_boolean(as)) || (wp && !json_is_boolean(wp))) {
        json_decref(body);
        return reply_error(c, 400, "'%s' must be a boolean", as && !json_is_boolean(as) ? "add_special" : "with_pieces");
    }
    const char *s = json_string_value(content);
    const size_t len = json_string_length(content);
    int32_t want = cs_tokenize(h->model, s, len, NULL, 0, json_is_true(as), true);
    want = want < 0 ? (want == INT32_MIN ? 0 : -want) : want;
    cs_token *toks = malloc((size_t)(want + 1) * sizeof(cs_token));
    const int32_t n = toks ? cs_tokenize(h->model, s, len, toks, want, json_is_true(as), true) : -1;
    json_t *arr = json_array();
    bool oom = !arr;
    for (int32_t i = 0; i < n && !oom; i++) {
        if (json_is_true(wp)) {
            char buf[256];
            int32_t pl = cs_token_to_piece(h->model, toks[i], buf, sizeof(buf), true);
            if (pl < 0) pl = 0;
            /* text when it is valid UTF-8 (json_stringn is then NULL only
             * for want of memory), else its bytes */
            json_t *piece;
            if (serve_utf8_valid(buf, (size_t)pl)) {
                piece = json_stringn(buf, (size_t)pl);
            } else {
                piece = json_array();
                for (int32_t k = 0; k < pl && piece; k++) {
                    if (json_array_append_new(piece, json_integer((unsigned char)buf[k])) != 0) {
                        json_decref(piece);
                        piece = NULL;
                    }
                }
            }
            oom = json_array_append_new(
                      arr, json_pack("{s:i,s:o}", "id", (int)toks[i], "piece", piece)) != 0;
        } else {
            oom = json_array_append_new(arr, json_integer(toks[i])) != 0;
        }
    }
    free(toks);
    json_decref(body);
    if (n < 0 || oom) {
        json_decref(arr);
        return reply_error(c, 500, n < 0 ? "tokenize failed" : "out of memory");
    }
    return reply_json(c, 200, json_pack("{s:o}", "tokens", arr));
}

static enum MHD_Result h_detokenize(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    enum MHD_Result res;
    json_t *body = body_json(c, r, &res);
    if (!body) return res;
    const json_t *tokens = json_object_get(body, "tokens");
    if (!json_is_array(tokens)) {
        json_decref(body);
        return reply_error(c, 400, "'tokens' must be an array of token ids");
    }
    const size_t n = json_array_size(tokens);
    const int32_t n_vocab = cs_model_n_vocab(h->model);
    cs_token *ids = malloc((n + 1) * sizeof(cs_token));
    if (!ids) {
        json_decref(body);
        return reply_error(c, 500, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(tokens, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= n_vocab) {
            free(ids);
            json_decref(body);
            return reply_error(c, 400, "'tokens'[%zu] must be a token id in [0, %d)", i, (int)n_vocab);
        }
        ids[i] = (cs_token)json_integer_value(v);
    }
    json_decref(body);
    int32_t want = cs_detokenize(h->model, ids, (int32_t)n, NULL, 0, true);
    if (want == INT32_MIN) { /* the ids are checked: the library's failure */
        free(ids);
        return reply_error(c, 500, "detokenize failed: %s", cs_last_error());
    }
    want = want < 0 ? -want : want;
    char *out = malloc((size_t)want + 1);
    const int32_t got = out ? cs_detokenize(h->model, ids, (int32_t)n, out, (size_t)want + 1, true) : -1;
    free(ids);
    if (got < 0) {
        free(out);
        return reply_error(c, 500, "detokenize failed");
    }
    const enum MHD_Result ok = reply_json(c, 200, json_pack("{s:o}", "content", serve_json_text(out, (size_t)got)));
    free(out);
    return ok;
}

static enum MHD_Result h_apply_template(serve_http *h, struct MHD_Connection *c, const req_ctx *r) {
    enum MHD_Result res;
    json_t *body = body_json(c, r, &res);
    if (!body) return res;
    serve_error err = {0};
    char *text = NULL;
    size_t len = 0;
    const bool ok = serve_chat_render(h->chat_template, json_object_get(body, "messages"), &text, &len, &err);
    json_decref(body);
    if (!ok) return reply_error(c, (unsigned)err.status, "%s", err.msg);
    res = reply_json(c, 200, json_pack("{s:o}", "prompt", serve_json_text(text, len)));
    free(text);
    return res;
}

/* POST /slots/ID?action=save|restore|erase, {"filename": NAME}: the file
 * is NAME inside --slot-save-path; NAME is letters, digits, '.', '_', '-'
 * (not starting with '.'), so no request reaches outside that folder. */
static enum MHD_Result h_slot_action(serve_http *h, struct MHD_Connection *c, const req_ctx *r,
                                     const char *id_text) {
    char *end = NULL;
    const long id = strtol(id_text, &end, 10);
    if (!*id_text || *end || id < 0 || id >= h->cfg->n_slots) {
        return reply_error(c, 400, "slot '%.32s' does not exist: there are %d slots (0..%d)", id_text,
                           (int)h->cfg->n_slots, (int)h->cfg->n_slots - 1);
    }
    const char *action = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "action");
    int32_t act;
    if (action && strcmp(action, "save") == 0) act = SERVE_SLOT_SAVE;
    else if (action && strcmp(action, "restore") == 0) act = SERVE_SLOT_RESTORE;
    else if (action && strcmp(action, "erase") == 0) act = SERVE_SLOT_ERASE;
    else return reply_error(c, 400, "'action' must be save, restore or erase, got '%.32s'", action ? action : "");
    char path[4096] = "";
    char name[160] = "";
    if (act != SERVE_SLOT_ERASE) {
        if (!h->cfg->slot_save_path) {
            return reply_error(c, 501, "slot save and restore are disabled: start the server with --slot-save-path DIR");
        }
        enum MHD_Result res;
        json_t *body = body_json(c, r, &res);
        if (!body) return res;
        const json_t *fn = json_object_get(body, "filename");
        bool ok = json_is_string(fn) && json_string_length(fn) >= 1 && json_string_length(fn) <= 128 &&
                  json_string_value(fn)[0] != '.';
        for (size_t i = 0; ok && i < json_string_length(fn); i++) {
            const char ch = json_string_value(fn)[i];
            ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-';
        }
        if (!ok) {
            json_decref(body);
            return reply_error(c, 400,
                               "'filename' must be 1..128 letters, digits, '.', '_' or '-', not "
                               "starting with '.'");
        }
        snprintf(name, sizeof(name), "%s", json_string_value(fn));
        json_decref(body);
        snprintf(path, sizeof(path), "%s/%s", h->cfg->slot_save_path, name);
    }
    serve_slot_result res;
    serve_engine_slot_action(h->engine, (int32_t)id, act, path, &res);
    if (res.status != 200) return reply_error(c, (unsigned)res.status, "%s", res.msg);
    /* The action is done: the reply is formatted here, with no allocation
     * of ours that could fail and turn a done action into a 500. The
     * filename needs no escaping (checked above: letters, digits, '.',
     * '_', '-'; at most 128 bytes); %.17g round-trips a double. */
    char reply[512];
    int n;
    if (act == SERVE_SLOT_ERASE) {
        n = snprintf(reply, sizeof(reply), "{\"id_slot\":%ld,\"n_erased\":%d}", id,
                     (int)res.n_tokens);
    } else {
        const bool save = act == SERVE_SLOT_SAVE;
        n = snprintf(reply, sizeof(reply),
                     "{\"id_slot\":%ld,\"filename\":\"%s\",\"%s\":%d,\"%s\":%llu,"
                     "\"timings\":{\"%s\":%.17g}}",
                     id, name, save ? "n_saved" : "n_restored", (int)res.n_tokens,
                     save ? "n_written" : "n_read", (unsigned long long)res.n_bytes,
                     save ? "save_ms" : "restore_ms", res.ms);
    }
    if (n <= 0 || (size_t)n >= sizeof(reply)) return reply_error(c, 500, "slot reply too long");
    return reply_bytes(c, 200, "application/json; charset=utf-8", reply, (size_t)n);
}

typedef enum MHD_Result (*route_fn)(serve_http *, struct MHD_Connection *, const req_ctx *);

typedef struct route {
    const char *path;
    bool post;   /* POST (else GET) */
    bool public_; /* no API key needed */
    route_fn fn;
} route;

static const route routes[] = {
    {"/health", false, true, h_health},
    {"/v1/models", false, true, h_models},
    {"/models", false, true, h_models},
    {"/props", false, false, h_props},
    {"/slots", false, false, h_slots},
    {"/metrics", false, false, h_metrics},
    {"/completion", true, false, h_native},
    {"/completions", true, false, h_native},
    {"/v1/completions", true, false, h_completions},
    {"/chat/completions", true, false, h_chat},
    {"/v1/chat/completions", true, false, h_chat},
    {"/tokenize", true, false, h_tokenize},
    {"/detokenize", true, false, h_detokenize},
    {"/apply-template", true, false, h_apply_template},
    {"/cache/events", false, false, h_cache_events},
};

/* ------------------------------------------------------------ handler */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    serve_http *h = cls;
    req_ctx *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) return MHD_NO;
        *con_cls = r;
        /* the endless map stream is not waited for at shutdown */
        r->counted = strcmp(url, "/cache/events") != 0;
        if (r->counted) atomic_fetch_add(&h->n_open, 1);
        /* a declared body over the limit is refused before reading it */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            const unsigned long long v = strtoull(cl, &end, 10);
            if (*end == '\0' && v > (unsigned long long)h->cfg->max_body) r->too_big = true;
        }
        /* A client that waits for "100 Continue" gets the 413 now, before
         * its body (RFC 9110 10.1.1), and never sends it. Any other client
         * is already sending: its body is read and dropped, then answered,
         * as closing on unread data resets the connection and the client
         * may see a network error instead of the 413 (and retry). */
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
        if (r->too_big && expect && strcasecmp(expect, "100-continue") == 0) {
            r->started = true;
            return reply_error(c, 413, "the request body exceeds %lld bytes (--max-body)",
                               (long long)h->cfg->max_body);
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!r->too_big && r->len + *upload_size > (size_t)h->cfg->max_body) r->too_big = true;
        if (!r->too_big && !r->oom && r->len + *upload_size + 1 > r->cap) {
            size_t nc = r->cap ? r->cap * 2 : 8192;
            while (nc < r->len + *upload_size + 1) nc *= 2;
            char *b = realloc(r->body, nc);
            if (b) {
                r->body = b;
                r->cap = nc;
            } else {
                r->oom = true; /* read the rest and drop it, as for too_big */
            }
        }
        if (!r->too_big && !r->oom) {
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
        }
        *upload_size = 0; /* consumed (or discarded past the limit) */
        return MHD_YES;
    }
    if (r->started) return MHD_YES;
    r->started = true;

    if (strcmp(method, "OPTIONS") == 0) { /* CORS preflight */
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        add_common_headers(c, resp);
        MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true");
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", "*");
        const enum MHD_Result ok = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ok;
    }
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(url, routes[i].path) == 0) {
            rt = &routes[i];
            break;
        }
    }
    if (!rt && strncmp(url, "/slots/", 7) == 0) {
        if (strcmp(method, "POST") != 0) {
            return reply_error(c, 405, "/slots/ID takes POST, not %.32s", method);
        }
        if (!auth_ok(h, c)) return reply_error(c, 401, "Invalid API Key");
        if (r->too_big) {
            return reply_error(c, 413, "the request body exceeds %lld bytes (--max-body)",
                               (long long)h->cfg->max_body);
        }
        if (r->oom) return reply_error(c, 500, "out of memory reading the request body");
        return h_slot_action(h, c, r, url + 7);
    }
    if (!rt && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
        /* the page (tools/page, embedded at build time): public like /health,
         * its API calls carry the key */
        const serve_page_file *pf = serve_page_find(url);
        if (pf) return reply_bytes(c, 200, pf->content_type, pf->data, pf->len);
    }
    if (!rt) return reply_error(c, 404, "no route %.200s %.200s", method, url);
    const bool is_post = strcmp(method, "POST") == 0;
    const bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (rt->post ? !is_post : !is_get) {
        struct MHD_Response *resp;
        json_t *j = serve_json_error(405, "");
        char msg[256];
        snprintf(msg, sizeof(msg), "%s takes %s, not %.32s", rt->path, rt->post ? "POST" : "GET", method);
        json_decref(j);
        j = serve_json_error(405, msg);
        char *s = serve_json_dumps(j);
        json_decref(j);
        resp = MHD_create_response_from_buffer(s ? strlen(s) : 0, s ? s : (void *)"", MHD_RESPMEM_MUST_COPY);
        free(s);
        MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
        MHD_add_response_header(resp, "Allow", rt->post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
        add_common_headers(c, resp);
        const enum MHD_Result ok = MHD_queue_response(c, 405, resp);
        MHD_destroy_response(resp);
        return ok;
    }
    if (!rt->public_ && !auth_ok(h, c)) return reply_error(c, 401, "Invalid API Key");
    if (r->too_big) {
        return reply_error(c, 413, "the request body exceeds %lld bytes (--max-body)",
                           (long long)h->cfg->max_body);
    }
    if (r->oom) return reply_error(c, 500, "out of memory reading the request body");
    return rt->fn(h, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode code) {
    (void)c, (void)code;
    serve_http *h = cls;
    req_ctx *r = *con_cls;
    if (!r) return;
    if (r->counted) atomic_fetch_sub(&h->n_open, 1);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

/* libmicrohttpd's messages (its format strings), with -v. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) TOOL_PRINTF(2, 0);
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    const serve_http *h = cls;
    if (!h->cfg->verbose) return;
    fputs("serve: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

int serve_http_start(const serve_config *cfg, const cs_model *model, serve_engine *engine,
                     const char *chat_template, serve_http **out, int32_t *port_out) {
    serve_http *h = calloc(1, sizeof(*h));
    if (!h) {
        tool_error("serve: out of memory");
        return TOOL_EXIT_FAIL;
    }
    h->cfg = cfg;
    h->model = model;
    h->engine = engine;
    h->chat_template = chat_template;
    h->created = (int64_t)time(NULL);
    serve_json_use_alloc();

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    /* MHD_USE_ITC: MHD_quiesce_daemon needs it with internal threads */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (inet_pton(AF_INET, cfg->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        tool_error("serve: --host '%s' is not an IPv4 or IPv6 address", cfg->host);
        free(h);
        return TOOL_EXIT_USAGE;
    }
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_END);
    if (!h->daemon) {
        tool_error("serve: cannot listen on %s:%d (in use, or not allowed)", cfg->host, (int)cfg->port);
        free(h);
        return TOOL_EXIT_FAIL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = di ? di->port : cfg->port;
    *out = h;
    return 0;
}

void serve_http_quiesce(serve_http *h) {
    if (!h || !h->daemon) return;
    const MHD_socket fd = MHD_quiesce_daemon(h->daemon);
    /* the daemon no longer polls the socket, but it still listens: a
     * connect would wait in the backlog. Closing it refuses at once. */
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void serve_http_stop(serve_http *h) {
    if (!h) return;
    /* After serve_engine_shutdown every task is finished: let the open
     * requests write their last event or error (at most 3 s) before
     * MHD_stop_daemon closes their connections mid-response. */
    for (int i = 0; i < 300 && atomic_load(&h->n_open) > 0; i++) {
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    if (h->daemon) MHD_stop_daemon(h->daemon);
    free(h);
}
