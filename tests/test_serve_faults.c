/* test_serve_faults: allocation failures along one request of `ctxshift
 * serve`, for every route a client uses to generate or manage the cache:
 * /completion, /v1/completions, /v1/chat/completions (a chat template),
 * the two streams, /tokenize, /detokenize, GET /slots, the cache map's
 * publication and GET /cache/events, and POST
 * /slots/ID?action=save|restore|erase.
 *
 * How. The server's own sources (tools/serve_*.c, args.c, tool_context.c)
 * are compiled into this test with tests/serve_faults_alloc.h forced in:
 * their malloc/calloc/realloc/strdup/free go through a counting allocator
 * here, and jansson's too (json_set_alloc_funcs). libmicrohttpd is replaced
 * by a fake (below) that calls the server's real request handler with a
 * body and collects the response it queues, so a request runs exactly as
 * over HTTP, through the real engine thread on the bundled stories260K
 * model, without a socket. The library's allocations fail through
 * mem_fail_after (src/mem.h).
 *
 * For each route and each of the two allocators, for every n from 0 until
 * the request succeeds without reaching its n-th allocation: a fresh engine
 * (not counted), the route's preparation (not counted), then the request
 * with the n-th allocation failing (the tools/jansson one fails once; the
 * library's fails from the n-th on until the request ends). The outcome
 * must be either exactly the response of a never-failed engine (an absorbed
 * failure: the prefix cache skipped, an event sent later), or a 5xx with a
 * JSON error message (the body is valid, so a 4xx would blame the client),
 * or, only when the connection's first allocation fails, no response (the
 * connection is closed: there is nothing to answer with). Then the engine
 * must still serve a completion with the never-failed greedy output, slot
 * files and the slots' caches must be as before the failed action, and
 * after the engine is freed no counted block may be left (ASan checks the
 * library's). The counts of allocation points are printed (docs/FUZZING.md).
 *
 * Streams (SSE: /completion and /v1/chat/completions with "stream") are
 * read to their end; a stream may end (a) whole: the same text, token ids,
 * log-probabilities and finishing events as a never-failed stream, however
 * the failures regrouped the text into events; (b) with an error event
 * (5xx) after a prefix of that text; or (c) cut (the reader's
 * END_WITH_ERROR: the client sees the connection drop) after a prefix. A
 * stream that ends normally with text missing is the failure this looks
 * for. GET /slots is swept as the other routes. The cache map: with a
 * clock that moves 150 ms a call, the engine publishes it at every step;
 * a completion is swept and the published map must then be whole (every
 * key, every slot, the cell string as long as its size), or the one before;
 * GET /cache/events is swept reading its first event, which must be a
 * whole map. Slot actions must not answer 500 once they are done (their
 * reply is formatted without allocating).
 *
 * Not deterministic in one respect: during generation the connection
 * thread (collecting text) and the engine thread allocate concurrently, so
 * which allocation is the n-th can differ between runs; every outcome is
 * checked the same way. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "serve_faults_alloc.h" /* forced in already (CMakeLists.txt); here for the reader */
#include "test.h"

#include "mem.h"
#include "serve.h"
#include "serve_api.h"
#include "serve_http.h"
#include "serve_page.h"

/* This file allocates for real: the macros are for the server's sources. */
#undef malloc
#undef calloc
#undef realloc
#undef strdup
#undef free
#undef clock_gettime
/* the system headers' declarations were renamed by the macros */
void *malloc(size_t n);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t n);
char *strdup(const char *s);
void free(void *p);
int clock_gettime(clockid_t clk, struct timespec *ts);

/* --------------------------------------------------- the allocator */

static atomic_long fa_fail_at = -1; /* the counted call that fails; -1: none */
static atomic_long fa_calls;        /* counted calls since arming */
static atomic_bool fa_fired;
static atomic_long fa_live; /* blocks allocated through fault_* and not freed */

static bool fa_should_fail(void) {
    const long at = atomic_load(&fa_fail_at);
    if (at < 0) return false;
    if (atomic_fetch_add(&fa_calls, 1) != at) return false;
    atomic_store(&fa_fired, true);
    return true;
}

void *fault_malloc(size_t n) {
    if (fa_should_fail()) return NULL;
    void *p = malloc(n);
    if (p) atomic_fetch_add(&fa_live, 1);
    return p;
}

void *fault_calloc(size_t n, size_t size) {
    if (fa_should_fail()) return NULL;
    void *p = calloc(n, size);
    if (p) atomic_fetch_add(&fa_live, 1);
    return p;
}

void *fault_realloc(void *p, size_t n) {
    if (fa_should_fail()) return NULL;
    void *q = realloc(p, n);
    if (q && !p) atomic_fetch_add(&fa_live, 1);
    return q;
}

char *fault_strdup(const char *s) {
    if (fa_should_fail()) return NULL;
    char *p = strdup(s);
    if (p) atomic_fetch_add(&fa_live, 1);
    return p;
}

void fault_free(void *p) {
    if (p) atomic_fetch_sub(&fa_live, 1);
    free(p);
}

static atomic_bool clock_ticks; /* the map routes: 150 ms a call */
static atomic_llong clock_ns = 50 * 1000 * 1000;

int fault_clock_gettime(int clk, struct timespec *ts) {
    if (clk == CLOCK_MONOTONIC) {
        /* frozen under the map's 100 ms refresh interval from 0 (never
         * published), or moving past it at every call (always published) */
        long long t = atomic_load(&clock_ns);
        if (atomic_load(&clock_ticks))
            t = atomic_fetch_add(&clock_ns, 150 * 1000 * 1000) + 150 * 1000 * 1000;
        ts->tv_sec = (time_t)(t / 1000000000);
        ts->tv_nsec = (long)(t % 1000000000);
        return 0;
    }
    return clock_gettime((clockid_t)clk, ts);
}

enum { DOM_TOOLS = 0, DOM_LIB = 1 };

static void arm(int dom, long n) {
    if (dom == DOM_TOOLS) {
        atomic_store(&fa_calls, 0);
        atomic_store(&fa_fired, false);
        atomic_store(&fa_fail_at, n);
    } else {
        mem_fail_after(n);
    }
}

/* Whether the n-th allocation was reached. */
static bool disarm(int dom) {
    if (dom == DOM_TOOLS) {
        atomic_store(&fa_fail_at, -1);
        return atomic_load(&fa_fired);
    }
    /* still counting down: the probe succeeds and nothing failed */
    void *probe = mem_malloc(1);
    mem_fail_after(-1);
    mem_free(probe);
    return probe == NULL;
}

/* ------------------------------------------ a fake libmicrohttpd */

struct MHD_Response {
    int refs;
    char *data;
    size_t len;
    MHD_ContentReaderCallback crc;
    void *crc_cls;
    MHD_ContentReaderFreeCallback crfc;
};

struct MHD_Connection {
    const char *content_length;
    const char *action;
    struct MHD_Response *queued;
    unsigned status;
    int n_queued;
};

struct MHD_Daemon {
    MHD_AccessHandlerCallback dh;
    void *dh_cls;
    MHD_RequestCompletedCallback done;
    void *done_cls;
};

static struct MHD_Daemon g_daemon;

struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls,
                                    ...) {
    (void)flags, (void)port, (void)apc, (void)apc_cls;
    memset(&g_daemon, 0, sizeof(g_daemon));
    g_daemon.dh = dh;
    g_daemon.dh_cls = dh_cls;
    va_list ap;
    va_start(ap, dh_cls);
    for (bool end = false; !end;) {
        const int opt = va_arg(ap, int);
        switch (opt) {
        case MHD_OPTION_END:
            end = true;
            break;
        case MHD_OPTION_SOCK_ADDR:
            (void)va_arg(ap, const void *);
            break;
        case MHD_OPTION_NOTIFY_COMPLETED:
            g_daemon.done = va_arg(ap, MHD_RequestCompletedCallback);
            g_daemon.done_cls = va_arg(ap, void *);
            break;
        case MHD_OPTION_CONNECTION_LIMIT:
        case MHD_OPTION_CONNECTION_TIMEOUT:
            (void)va_arg(ap, unsigned int);
            break;
        case MHD_OPTION_CONNECTION_MEMORY_LIMIT:
            (void)va_arg(ap, size_t);
            break;
        case MHD_OPTION_EXTERNAL_LOGGER:
            (void)va_arg(ap, MHD_LogCallback);
            (void)va_arg(ap, void *);
            break;
        default:
            /* serve_http.c passes an option this fake does not know */
            fprintf(stderr, "fake MHD_start_daemon: unknown option %d\n", opt);
            abort();
        }
    }
    va_end(ap);
    return &g_daemon;
}

void MHD_stop_daemon(struct MHD_Daemon *d) {
    memset(d, 0, sizeof(*d));
}

MHD_socket MHD_quiesce_daemon(struct MHD_Daemon *d) {
    (void)d;
    return MHD_INVALID_SOCKET;
}

const union MHD_DaemonInfo *MHD_get_daemon_info(struct MHD_Daemon *d, enum MHD_DaemonInfoType t,
                                                ...) {
    (void)d, (void)t;
    return NULL;
}

/* NULL: no socket, the connection counts as alive */
const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *c,
                                                        enum MHD_ConnectionInfoType t, ...) {
    (void)c, (void)t;
    return NULL;
}

const char *MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind,
                                        const char *key) {
    if (kind == MHD_HEADER_KIND && strcasecmp(key, "Content-Length") == 0) return c->content_length;
    if (kind == MHD_GET_ARGUMENT_KIND && strcmp(key, "action") == 0) return c->action;
    return NULL;
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode) {
    (void)mode; /* always copied */
    struct MHD_Response *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->refs = 1;
    r->data = malloc(size + 1);
    assert_non_null(r->data);
    if (size) memcpy(r->data, buffer, size);
    r->data[size] = '\0';
    r->len = size;
    return r;
}

struct MHD_Response *MHD_create_response_from_callback(uint64_t size, size_t block_size,
                                                       MHD_ContentReaderCallback crc, void *crc_cls,
                                                       MHD_ContentReaderFreeCallback crfc) {
    (void)size, (void)block_size;
    struct MHD_Response *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->refs = 1;
    r->crc = crc;
    r->crc_cls = crc_cls;
    r->crfc = crfc;
    return r;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *r, const char *h, const char *v) {
    (void)r, (void)h, (void)v;
    return MHD_YES;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *c, unsigned int status,
                                   struct MHD_Response *r) {
    c->n_queued++;
    if (c->queued) return MHD_NO;
    c->queued = r;
    r->refs++;
    c->status = status;
    return MHD_YES;
}

void MHD_destroy_response(struct MHD_Response *r) {
    if (--r->refs > 0) return;
    if (r->crfc) r->crfc(r->crc_cls);
    free(r->data);
    free(r);
}

/* The page is not under test. */
const serve_page_file *serve_page_find(const char *url) {
    (void)url;
    return NULL;
}

/* ------------------------------------------------------- requests */

typedef struct resp {
    unsigned status; /* 0: no response queued */
    int no_at_call;  /* the handler call that returned MHD_NO (0 = connection setup); -1 */
    bool cut;        /* a callback response ended with END_WITH_ERROR */
    json_t *json;    /* the parsed body (uncounted: parsed after disarming) */
} resp;

static void resp_clear(resp *r) {
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* One request as libmicrohttpd delivers it: the connection call, the body,
 * the final call; then the queued response is read (a callback response to
 * its end) and the completion callback runs. The body is kept raw in *raw
 * (malloc'd) and parsed by resp_parse once the failures are off. */
static bool g_one_event; /* read a callback response up to its first event only */

static void request(const char *method, const char *url, const char *action, const char *body,
                    resp *out, char **raw, size_t *raw_len) {
    struct MHD_Connection c = {0};
    char cl[32];
    const size_t blen = body ? strlen(body) : 0;
    if (body) {
        snprintf(cl, sizeof(cl), "%zu", blen);
        c.content_length = cl;
    }
    c.action = action;
    memset(out, 0, sizeof(*out));
    out->no_at_call = -1;
    void *con_cls = NULL;
    size_t up = 0;
    int call = 0;
    enum MHD_Result rc =
        g_daemon.dh(g_daemon.dh_cls, &c, url, method, "HTTP/1.1", NULL, &up, &con_cls);
    if (rc == MHD_YES && !c.queued && blen) {
        call++;
        up = blen;
        rc = g_daemon.dh(g_daemon.dh_cls, &c, url, method, "HTTP/1.1", body, &up, &con_cls);
        if (rc == MHD_YES) assert_int_equal(up, 0);
    }
    if (rc == MHD_YES && !c.queued) {
        call++;
        up = 0;
        rc = g_daemon.dh(g_daemon.dh_cls, &c, url, method, "HTTP/1.1", NULL, &up, &con_cls);
    }
    if (rc == MHD_NO) out->no_at_call = call;
    *raw = NULL;
    *raw_len = 0;
    if (c.queued) {
        assert_int_equal(c.n_queued, 1);
        struct MHD_Response *r = c.queued;
        if (r->crc) {
            size_t cap = 0;
            for (uint64_t pos = 0;;) {
                if (*raw_len + 4097 > cap) {
                    cap = cap ? cap * 2 : 8192;
                    *raw = realloc(*raw, cap);
                    assert_non_null(*raw);
                }
                const ssize_t n = r->crc(r->crc_cls, pos, *raw + *raw_len, 4096);
                if (n == MHD_CONTENT_READER_END_WITH_ERROR) out->cut = true;
                if (n < 0) break;
                *raw_len += (size_t)n;
                pos += (uint64_t)n;
                (*raw)[*raw_len] = '\0';
                if (g_one_event && strstr(*raw, "\n\n")) break;
            }
        } else {
            *raw = malloc(r->len + 1);
            assert_non_null(*raw);
            memcpy(*raw, r->data, r->len + 1);
            *raw_len = r->len;
        }
        out->status = c.status;
        MHD_destroy_response(r);
    }
    if (g_daemon.done) {
        g_daemon.done(g_daemon.done_cls, &c, &con_cls,
                      rc == MHD_YES ? MHD_REQUEST_TERMINATED_COMPLETED_OK
                                    : MHD_REQUEST_TERMINATED_WITH_ERROR);
    }
    assert_null(con_cls);
}

static void resp_parse(resp *out, char *raw, size_t len) {
    if (raw) {
        json_error_t je;
        out->json = json_loadb(raw, len, 0, &je);
        if (!out->json)
            fail_msg("status %u, body not JSON (%s): %.300s", out->status, je.text, raw);
    }
    free(raw);
}

/* ------------------------------------------------------ the server */

static cs_model *g_model;
static serve_config g_cfg;
static char g_dir[600];      /* --slot-save-path */
static char g_ref_file[700]; /* <dir>/ref.bin: a slot saved by a never-failed engine */
static char g_keep_file[700];
static unsigned char *g_ref_bytes;
static size_t g_ref_len;
static int32_t g_ref_slot_tokens; /* tokens in slot 0 after the preparation */

typedef struct env {
    serve_engine *e;
    serve_http *h;
} env;

static void env_start(env *v) {
    assert_int_equal(serve_engine_start(&g_cfg, g_model, &v->e), 0);
    int32_t port = 0;
    assert_int_equal(serve_http_start(&g_cfg, g_model, v->e, "chatml", &v->h, &port), 0);
}

static void env_stop(env *v) {
    serve_http_stop(v->h);
    serve_engine_free(v->e);
    v->h = NULL;
    v->e = NULL;
}

static void post(const char *url, const char *action, const char *body, resp *out) {
    char *raw;
    size_t len;
    request("POST", url, action, body, out, &raw, &len);
    resp_parse(out, raw, len);
}

static int32_t slot_cached(env *v, int32_t slot) {
    serve_slot_info info[SERVE_MAX_SEQ];
    serve_engine_slots(v->e, info, SERVE_MAX_SEQ);
    return info[slot].n_cached_tokens;
}

/* ------------------------------------------------------- the routes */

#define PROMPT "Once upon a time"
static const char check_body[] =
    "{\"prompt\":\"" PROMPT "\",\"n_predict\":8,\"temperature\":0,\"seed\":7}";
static const char slot0_body[] =
    "{\"prompt\":\"" PROMPT " there was\",\"n_predict\":4,\"temperature\":0,\"id_slot\":0}";

enum {
    R_NATIVE,
    R_OAI,
    R_CHAT,
    R_NATIVE_STREAM,
    R_CHAT_STREAM,
    R_TOKENIZE,
    R_DETOKENIZE,
    R_SLOTS,
    R_MAP,
    R_EVENTS,
    R_SAVE,
    R_RESTORE,
    R_ERASE,
    R_COUNT
};

enum { K_JSON, K_STREAM, K_MAP, K_EVENTS }; /* what the response is and how it is checked */

typedef struct route_case {
    const char *name, *method, *url, *action, *body;
    int kind;
} route_case;

static const route_case cases[R_COUNT] = {
    [R_NATIVE] = {"/completion", "POST", "/completion", NULL,
                  "{\"prompt\":\"" PROMPT "\",\"n_predict\":8,\"temperature\":0,\"seed\":7,"
                  "\"n_probs\":2,\"stop\":[\"zzz\",\"qq\"],\"return_tokens\":true}",
                  K_JSON},
    [R_OAI] = {"/v1/completions", "POST", "/v1/completions", NULL,
               "{\"prompt\":[\"" PROMPT "\", 11],\"max_tokens\":8,\"temperature\":0,\"seed\":7,"
               "\"logprobs\":2,\"logit_bias\":{\"5\":-1}}",
               K_JSON},
    [R_CHAT] = {"/v1/chat/completions", "POST", "/v1/chat/completions", NULL,
                "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
                "\"content\":[{\"type\":\"text\",\"text\":\"Tell me \"},{\"type\":\"text\","
                "\"text\":\"a story\"}]}],\"max_tokens\":8,\"temperature\":0,\"seed\":7,"
                "\"logprobs\":true,\"top_logprobs\":2,\"stop\":\"zzz\"}",
                K_JSON},
    [R_NATIVE_STREAM] = {"/completion stream", "POST", "/completion", NULL,
                         "{\"prompt\":\"" PROMPT "\",\"n_predict\":8,\"temperature\":0,"
                         "\"seed\":7,\"n_probs\":2,\"stream\":true}",
                         K_STREAM},
    [R_CHAT_STREAM] = {"/v1/chat/completions stream", "POST", "/v1/chat/completions", NULL,
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me a story\"}],"
                       "\"max_tokens\":8,\"temperature\":0,\"seed\":7,\"logprobs\":true,"
                       "\"top_logprobs\":2,\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true}}",
                       K_STREAM},
    [R_TOKENIZE] = {"/tokenize", "POST", "/tokenize", NULL,
                    "{\"content\":\"" PROMPT "\",\"add_special\":true,\"with_pieces\":true}",
                    K_JSON},
    [R_DETOKENIZE] = {"/detokenize", "POST", "/detokenize", NULL,
                      "{\"tokens\":[1,400,200,30,7,300]}", K_JSON},
    [R_SLOTS] = {"GET /slots", "GET", "/slots", NULL, NULL, K_JSON},
    [R_MAP] = {"map publication", "POST", "/completion", NULL,
               "{\"prompt\":\"" PROMPT "\",\"n_predict\":8,\"temperature\":0,\"seed\":7}", K_MAP},
    [R_EVENTS] = {"GET /cache/events", "GET", "/cache/events", NULL, NULL, K_EVENTS},
    [R_SAVE] = {"/slots save", "POST", "/slots/0", "save", "{\"filename\":\"keep.bin\"}", K_JSON},
    [R_RESTORE] = {"/slots restore", "POST", "/slots/1", "restore", "{\"filename\":\"ref.bin\"}",
                   K_JSON},
    [R_ERASE] = {"/slots erase", "POST", "/slots/0", "erase", NULL, K_JSON},
};

static json_t *g_ref[R_COUNT]; /* never-failed responses (normalized) or stream summaries */
static json_t *g_ref_map;      /* a map published by a never-failed engine */
static json_t *g_check_ref;
static long g_points[R_COUNT][2];

/* The fields that differ between two identical requests: ids and clocks. */
static void normalize(json_t *j) {
    json_object_del(j, "id");
    json_object_del(j, "created");
    json_object_del(j, "timings");
}

/* ------------------------------------------------ streams and the map */

static void extend(json_t *to, const json_t *from) {
    if (json_is_array(from)) assert_int_equal(json_array_extend(to, (json_t *)from), 0);
}

/* What a stream said, whatever events the text came in: {"text": the
 * concatenated text, "finals": the finishing events (normalized), "error": the error
 * event's object (absent if none), "done": whether [DONE] ended it}, the
 * token ids in "ids" and the log-probabilities in "probs". Every
 * event must be whole "data: JSON" (or [DONE] last, or the error event
 * last but for [DONE]). Uncounted: runs after disarming. */
static json_t *stream_summary(const char *raw, size_t len) {
    json_t *sum =
        json_pack("{s:s,s:[],s:[],s:[],s:b}", "text", "", "ids", "probs", "finals", "done", 0);
    assert_non_null(sum);
    size_t tcap = 256, tlen = 0;
    char *text = malloc(tcap);
    assert_non_null(text);
    text[0] = '\0';
    const char *p = raw, *end = raw + len;
    while (p < end) {
        const char *e = strstr(p, "\n\n");
        if (!e || e + 2 > end) fail_msg("stream ends inside an event: %.200s", p);
        if (strncmp(p, "data: ", 6) != 0) fail_msg("stream event without 'data: ': %.200s", p);
        if (json_is_true(json_object_get(sum, "done"))) fail_msg("an event after [DONE]");
        const char *d = p + 6;
        const size_t dn = (size_t)(e - d);
        p = e + 2;
        if (dn == 6 && memcmp(d, "[DONE]", 6) == 0) {
            json_object_set_new(sum, "done", json_true());
            continue;
        }
        if (json_object_get(sum, "error")) fail_msg("an event after the error event");
        json_error_t je;
        json_t *ev = json_loadb(d, dn, 0, &je);
        if (!ev)
            fail_msg("stream event not JSON (%s): %.*s", je.text, (int)(dn > 300 ? 300 : dn), d);
        const json_t *err = json_object_get(ev, "error");
        const json_t *choices = json_object_get(ev, "choices");
        const json_t *c0 = json_array_get(choices, 0);
        bool final;
        const char *piece = NULL;
        if (err) {
            json_object_set(sum, "error", (json_t *)err);
            json_decref(ev);
            continue;
        } else if (json_object_get(ev, "stop")) { /* native */
            final = json_is_true(json_object_get(ev, "stop"));
            if (!final) {
                piece = json_string_value(json_object_get(ev, "content"));
                extend(json_object_get(sum, "ids"), json_object_get(ev, "tokens"));
                extend(json_object_get(sum, "probs"),
                       json_object_get(ev, "completion_probabilities"));
            }
        } else {
            assert_true(json_is_array(choices));
            final = !c0 || !json_is_null(json_object_get(c0, "finish_reason"));
            if (!final) {
                const json_t *delta = json_object_get(c0, "delta");
                piece = json_string_value(delta ? json_object_get(delta, "content")
                                                : json_object_get(c0, "text"));
                extend(json_object_get(sum, "probs"),
                       json_object_get(json_object_get(c0, "logprobs"), "content"));
            }
        }
        if (final) {
            normalize(ev);
            json_array_append(json_object_get(sum, "finals"), ev);
        } else if (piece) {
            const size_t n = strlen(piece);
            while (tlen + n + 1 > tcap) {
                tcap *= 2;
                text = realloc(text, tcap);
                assert_non_null(text);
            }
            memcpy(text + tlen, piece, n + 1);
            tlen += n;
        }
        json_decref(ev);
    }
    json_object_set_new(sum, "text", json_string(text));
    free(text);
    return sum;
}

/* Whether got's text, token ids and log-probabilities are beginnings of
 * ref's (a stream cut short). */
static bool stream_prefix(const json_t *ref, const json_t *got) {
    const char *rt = json_string_value(json_object_get(ref, "text"));
    const char *gt = json_string_value(json_object_get(got, "text"));
    if (strncmp(rt, gt, strlen(gt)) != 0) return false;
    static const char *const lists[] = {"ids", "probs"};
    for (int l = 0; l < 2; l++) {
        const json_t *ri = json_object_get(ref, lists[l]), *gi = json_object_get(got, lists[l]);
        if (json_array_size(gi) > json_array_size(ri)) return false;
        for (size_t i = 0; i < json_array_size(gi); i++) {
            if (!json_equal(json_array_get(gi, i), json_array_get(ri, i))) return false;
        }
    }
    return true;
}

/* A published cache map is whole: the reference's keys, one entry of four
 * fields per slot, a cell string as long as its size. */
static void check_map(const char *txt, size_t len) {
    json_error_t je;
    json_t *m = json_loadb(txt, len, 0, &je);
    if (!m) fail_msg("cache map not JSON (%s): %.200s", je.text, txt);
    assert_int_equal(json_object_size(m), json_object_size(g_ref_map));
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)g_ref_map, key, val) {
        const json_t *got = json_object_get(m, key);
        if (!got || json_typeof(got) != json_typeof(val)) fail_msg("cache map: '%s' missing", key);
    }
    const json_t *slots = json_object_get(m, "slots");
    assert_int_equal(json_array_size(slots), g_cfg.n_slots);
    for (size_t i = 0; i < json_array_size(slots); i++) {
        assert_int_equal(json_object_size(json_array_get(slots, i)), 4);
    }
    assert_int_equal(strlen(json_string_value(json_object_get(m, "cells"))),
                     json_integer_value(json_object_get(m, "size")));
    json_decref(m);
}

/* The map the engine publishes now, checked; false when none is. */
static bool check_engine_map(serve_engine *e) {
    uint64_t version = 0;
    char *m = serve_engine_map(e, &version);
    if (!m) return false;
    check_map(m, strlen(m));
    fault_free(m); /* allocated by the engine's counted strdup */
    return true;
}

static const char *file_text = "an older slot file\n";

static void write_keep(void) {
    FILE *f = fopen(g_keep_file, "wb");
    assert_non_null(f);
    assert_int_equal(fputs(file_text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        const size_t n = fread(buf + *len, 1, 4096, f);
        *len += n;
        if (n < 4096) break;
    }
    fclose(f);
    return buf;
}

/* The folder holds ref.bin and keep.bin and nothing else (no temporary). */
static void check_dir(void) {
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    const struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (strcmp(de->d_name, "ref.bin") != 0 && strcmp(de->d_name, "keep.bin") != 0) {
            fail_msg("slot folder holds %s after a failed save", de->d_name);
        }
    }
    closedir(d);
}

static void prepare(int route, env *v) {
    if (route == R_SAVE || route == R_ERASE) {
        resp r;
        post("/completion", NULL, slot0_body, &r);
        assert_int_equal(r.status, 200);
        resp_clear(&r);
        assert_int_equal(slot_cached(v, 0), g_ref_slot_tokens);
    }
    if (route == R_SAVE) write_keep();
    if (cases[route].kind == K_MAP || cases[route].kind == K_EVENTS) {
        atomic_store(&clock_ticks, true);
    }
    if (cases[route].kind == K_EVENTS) {
        /* a map to send: published at the completion's steps */
        resp r;
        post("/completion", NULL, check_body, &r);
        assert_int_equal(r.status, 200);
        resp_clear(&r);
        assert_true(check_engine_map(v->e));
    }
}

/* Set the reference map from a never-failed engine's publication. */
static void set_ref_map(const char *txt, size_t len) {
    if (g_ref_map) return;
    json_error_t je;
    g_ref_map = json_loadb(txt, len, 0, &je);
    assert_non_null(g_ref_map);
    assert_non_null(json_object_get(g_ref_map, "slots"));
}

/* The text and end of a native completion. */
static void check_output(const json_t *j, const json_t *ref) {
    assert_non_null(j);
    assert_true(json_equal(json_object_get(j, "content"), json_object_get(ref, "content")));
    assert_true(json_equal(json_object_get(j, "stop_type"), json_object_get(ref, "stop_type")));
}

/* What the route left: 0 as before it (a failed action), 1 as after a
 * successful one; a test failure otherwise. */
static int route_state(int route, env *v) {
    int st = 0;
    if (route == R_SAVE) {
        size_t len = 0;
        unsigned char *b = read_all(g_keep_file, &len);
        assert_non_null(b);
        if (len == g_ref_len && memcmp(b, g_ref_bytes, len) == 0) {
            st = 1;
        } else if (len != strlen(file_text) || memcmp(b, file_text, len) != 0) {
            fail_msg("keep.bin is neither the old file nor the saved slot (%zu bytes)", len);
        }
        free(b);
        check_dir();
    } else if (route == R_RESTORE) {
        const int32_t n = slot_cached(v, 1);
        if (n != 0 && n != g_ref_slot_tokens)
            fail_msg("slot 1 holds %d tokens after a restore", (int)n);
        st = n == g_ref_slot_tokens;
    } else if (route == R_ERASE) {
        const int32_t n = slot_cached(v, 0);
        if (n != 0 && n != g_ref_slot_tokens)
            fail_msg("slot 0 holds %d tokens after an erase", (int)n);
        st = n == 0;
    } else {
        st = 1; /* no state */
    }
    return st;
}

static void run_reference(int route) {
    const route_case *rc = &cases[route];
    env v;
    env_start(&v);
    if (rc->kind == K_MAP || rc->kind == K_EVENTS) {
        /* the map's reference: a publication of a never-failed engine */
        atomic_store(&clock_ticks, true);
        resp r;
        post("/completion", NULL, check_body, &r);
        assert_int_equal(r.status, 200);
        resp_clear(&r);
        uint64_t version = 0;
        char *m = serve_engine_map(v.e, &version);
        assert_non_null(m);
        set_ref_map(m, strlen(m));
        fault_free(m);
        env_stop(&v);
        env_start(&v);
    }
    prepare(route, &v);
    resp r;
    char *raw;
    size_t len;
    g_one_event = rc->kind == K_EVENTS;
    request(rc->method, rc->url, rc->action, rc->body, &r, &raw, &len);
    g_one_event = false;
    if (r.status != 200 || r.cut) {
        fail_msg("%s: status %u%s without failures", rc->name, r.status, r.cut ? " (cut)" : "");
    }
    if (rc->kind == K_STREAM) {
        g_ref[route] = stream_summary(raw, len);
        free(raw);
        const json_t *sum = g_ref[route];
        if (json_object_get(sum, "error") || json_array_size(json_object_get(sum, "finals")) == 0 ||
            strlen(json_string_value(json_object_get(sum, "text"))) == 0) {
            fail_msg("%s: a never-failed stream without text or end", rc->name);
        }
    } else if (rc->kind == K_EVENTS) {
        assert_true(len > 8 && strncmp(raw, "data: ", 6) == 0);
        check_map(raw + 6, len - 8);
        free(raw);
    } else {
        resp_parse(&r, raw, len);
        normalize(r.json);
        g_ref[route] = json_incref(r.json);
        if (rc->kind == K_MAP) assert_true(check_engine_map(v.e));
    }
    assert_int_equal(route_state(route, &v), 1);
    resp_clear(&r);
    env_stop(&v);
    atomic_store(&clock_ticks, false);
}

/* The outcome of a stream under a failure (status 200: the stream began). */
static void check_stream(int route, const resp *r, const char *raw, size_t len, bool fired, long n,
                         int dom) {
    json_t *sum = stream_summary(raw, len);
    const json_t *ref = g_ref[route];
    const json_t *err = json_object_get(sum, "error");
    const char *who = dom == DOM_TOOLS ? "tools" : "library";
    if (r->cut || err) {
        /* ended early: only by the failure, after a prefix of the text */
        if (!fired) fail_msg("%s: stream ended early without a failure", cases[route].name);
        if (!stream_prefix(ref, sum)) {
            fail_msg("%s, %s allocation %ld failing: the text sent before the end is not the "
                     "never-failed text's beginning: %s",
                     cases[route].name, who, n, json_string_value(json_object_get(sum, "text")));
        }
        if (err) {
            const json_int_t code = json_integer_value(json_object_get(err, "code"));
            assert_true(code >= 500 && code <= 599);
            const char *msg = json_string_value(json_object_get(err, "message"));
            assert_true(msg && msg[0]);
            assert_int_equal(json_array_size(json_object_get(sum, "finals")), 0);
            if (!r->cut) {
                assert_true(json_equal(json_object_get(sum, "done"), json_object_get(ref, "done")));
            }
        }
    } else if (!json_equal(sum, ref)) {
        char *got = json_dumps(sum, JSON_COMPACT);
        char *want = json_dumps(ref, JSON_COMPACT);
        fail_msg("%s, %s allocation %ld failing: a stream that ended normally differs\n got "
                 "%.3000s\nwant %.3000s",
                 cases[route].name, who, n, got, want);
    }
    json_decref(sum);
}

static int setup(void **state) {
    (void)state;
    /* the server's jansson allocator, which calls malloc: fault_malloc */
    serve_json_use_alloc();
    cs_model_params mp = cs_model_default_params();
    if (cs_model_load(test_bundled_model(), &mp, &g_model) != CS_OK) return -1;
    test_tmp_path("serve-faults", g_dir, sizeof(g_dir));
    mkdir(g_dir, 0700);
    snprintf(g_ref_file, sizeof(g_ref_file), "%s/ref.bin", g_dir);
    snprintf(g_keep_file, sizeof(g_keep_file), "%s/keep.bin", g_dir);
    remove(g_ref_file);
    remove(g_keep_file);
    g_cfg = (serve_config){
        .model_path = "stories260K",
        .alias = "stories",
        .host = "127.0.0.1",
        .n_slots = 2,
        .n_ctx = 512,
        .n_ctx_slot = 256,
        .n_batch = 64,
        .n_threads = 1,
        .type_k = CS_TYPE_F16,
        .type_v = CS_TYPE_F16,
        .n_cache_entries = 2,
        .context_shift = true,
        .slot_save_path = g_dir,
        .slots_endpoint = true,
        .max_body = 1 << 20,
        .max_queue = 8,
        .max_connections = 8,
    };
    /* ref.bin: slot 0 after the preparation, saved by a never-failed engine */
    env v;
    env_start(&v);
    resp r;
    post("/completion", NULL, slot0_body, &r);
    if (r.status != 200) return -1;
    resp_clear(&r);
    g_ref_slot_tokens = slot_cached(&v, 0);
    post("/slots/0", "save", "{\"filename\":\"ref.bin\"}", &r);
    if (r.status != 200) return -1;
    resp_clear(&r);
    post("/completion", NULL, check_body, &r);
    if (r.status != 200) return -1;
    g_check_ref = json_incref(r.json);
    resp_clear(&r);
    env_stop(&v);
    g_ref_bytes = read_all(g_ref_file, &g_ref_len);
    if (!g_ref_bytes || g_ref_slot_tokens <= 0) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < R_COUNT; i++) json_decref(g_ref[i]);
    json_decref(g_ref_map);
    json_decref(g_check_ref);
    free(g_ref_bytes);
    remove(g_ref_file);
    remove(g_keep_file);
    rmdir(g_dir);
    cs_model_free(g_model);
    printf("allocation points of one request (tools + jansson / library):\n");
    for (int i = 0; i < R_COUNT; i++) {
        printf("  %-28s %5ld / %ld\n", cases[i].name, g_points[i][DOM_TOOLS], g_points[i][DOM_LIB]);
    }
    return 0;
}

/* The outcome of a JSON reply under a failure: the never-failed reply, a
 * 5xx with a message (*msg), or nothing (the connection's first
 * allocation failed). */
static void check_reply(int route, resp *r, bool fired, long n, int dom, const char **msg) {
    const route_case *rc = &cases[route];
    const char *who = dom == DOM_TOOLS ? "tools" : "library";
    if (r->status == 200) {
        normalize(r->json);
        if (!json_equal(r->json, g_ref[route])) {
            char *got = json_dumps(r->json, JSON_COMPACT);
            char *want = json_dumps(g_ref[route], JSON_COMPACT);
            const char *key;
            json_t *val;
            json_object_foreach(g_ref[route], key, val) {
                if (!json_equal(val, json_object_get(r->json, key))) {
                    char *a =
                        json_dumps(json_object_get(r->json, key), JSON_COMPACT | JSON_ENCODE_ANY);
                    char *b = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
                    fprintf(stderr, "field '%s' differs:\n got %.2000s\nwant %.2000s\n", key,
                            a ? a : "(absent)", b ? b : "");
                }
            }
            fail_msg("%s, %s allocation %ld failing: a 200 unlike the reference\n got %s\nwant %s",
                     rc->name, who, n, got, want);
        }
    } else if (r->status == 0) {
        /* no response: only when the connection's first allocation failed */
        assert_true(fired);
        assert_int_equal(r->no_at_call, 0);
    } else {
        if (!fired || r->status < 500 || r->status > 599) {
            char *got = json_dumps(r->json, JSON_COMPACT);
            fail_msg("%s, %s allocation %ld failing (%s): status %u: %s", rc->name, who, n,
                     fired ? "reached" : "not reached", r->status, got ? got : "");
        }
        const json_t *e = json_object_get(r->json, "error");
        assert_int_equal(json_integer_value(json_object_get(e, "code")), r->status);
        *msg = json_string_value(json_object_get(e, "message"));
        assert_non_null(*msg);
        assert_true((*msg)[0] != '\0');
    }
}

/* The sweep of one route over one allocator. */
static void sweep(int route, int dom) {
    const route_case *rc = &cases[route];
    if (!g_ref[route]) run_reference(route);
    const long live0 = atomic_load(&fa_live);
    long n = 0;
    for (;; n++) {
        assert_true(n < 100000);
        env v;
        env_start(&v);
        prepare(route, &v);
        resp r;
        char *raw;
        size_t len;
        const char *msg = NULL;
        arm(dom, n);
        g_one_event = rc->kind == K_EVENTS;
        request(rc->method, rc->url, rc->action, rc->body, &r, &raw, &len);
        g_one_event = false;
        const bool fired = disarm(dom);
        if (r.status == 200 && rc->kind == K_STREAM) {
            check_stream(route, &r, raw, len, fired, n, dom);
            free(raw);
        } else if (r.status == 200 && rc->kind == K_EVENTS) {
            /* the first event, a whole map; or the stream cut before it */
            if (r.cut) {
                assert_true(fired);
            } else {
                assert_true(len > 8 && strncmp(raw, "data: ", 6) == 0);
                check_map(raw + 6, len - 8);
            }
            free(raw);
        } else {
            resp_parse(&r, raw, len);
            check_reply(route, &r, fired, n, dom, &msg);
        }
        if (rc->kind == K_MAP && !check_engine_map(v.e)) {
            /* nothing published: only when a publication failed */
            assert_true(fired);
        }
        const int st = route_state(route, &v);
        if (r.status == 200) {
            assert_int_equal(st, 1);
        } else if (st == 1 && route >= R_SAVE) {
            fail_msg("%s, %s allocation %ld failing: the action was done, but the reply is %u: %s",
                     rc->name, dom == DOM_TOOLS ? "tools" : "library", n, r.status, msg ? msg : "");
        }
        resp_clear(&r);
        if (route == R_SAVE) write_keep();
        /* the engine serves on, with the never-failed greedy output */
        post("/completion", NULL, check_body, &r);
        assert_int_equal(r.status, 200);
        check_output(r.json, g_check_ref);
        resp_clear(&r);
        env_stop(&v);
        atomic_store(&clock_ticks, false);
        assert_int_equal(atomic_load(&fa_live), live0);
        if (!fired) break;
    }
    /* the library's count: its last reached point was the probe itself */
    g_points[route][dom] = dom == DOM_LIB ? n - 1 : n;
}

#define ROUTE_TEST(fn, route)                                                                      \
    static void fn(void **state) {                                                                 \
        (void)state;                                                                               \
        sweep(route, DOM_TOOLS);                                                                   \
        sweep(route, DOM_LIB);                                                                     \
    }
ROUTE_TEST(test_native, R_NATIVE)
ROUTE_TEST(test_completions, R_OAI)
ROUTE_TEST(test_chat, R_CHAT)
ROUTE_TEST(test_native_stream, R_NATIVE_STREAM)
ROUTE_TEST(test_chat_stream, R_CHAT_STREAM)
ROUTE_TEST(test_tokenize, R_TOKENIZE)
ROUTE_TEST(test_detokenize, R_DETOKENIZE)
ROUTE_TEST(test_slots, R_SLOTS)
ROUTE_TEST(test_map, R_MAP)
ROUTE_TEST(test_cache_events, R_EVENTS)
ROUTE_TEST(test_slot_save, R_SAVE)
ROUTE_TEST(test_slot_restore, R_RESTORE)
ROUTE_TEST(test_slot_erase, R_ERASE)

/* The slot snapshot that GET /slots reads is whole from the engine's start:
 * the request can arrive before the engine thread's first step (CI once saw
 * a 200 with zeroed slots in test_slots). Right after each start, before
 * the thread has necessarily run, every slot reads as idle with its id. */
static void test_slots_at_start(void **state) {
    (void)state;
    for (int round = 0; round < 20; round++) {
        serve_engine *e = NULL;
        assert_int_equal(serve_engine_start(&g_cfg, g_model, &e), 0);
        serve_slot_info info[SERVE_MAX_SEQ];
        const int32_t n = serve_engine_slots(e, info, SERVE_MAX_SEQ);
        assert_int_equal(n, g_cfg.n_slots);
        for (int32_t i = 0; i < n; i++) {
            assert_int_equal(info[i].id, i);
            assert_int_equal(info[i].n_ctx, g_cfg.n_ctx_slot);
            assert_int_equal(info[i].n_remain, -1);
            assert_false(info[i].processing);
        }
        serve_engine_free(e);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_at_start), cmocka_unit_test(test_native),
        cmocka_unit_test(test_completions),    cmocka_unit_test(test_chat),
        cmocka_unit_test(test_native_stream),  cmocka_unit_test(test_chat_stream),
        cmocka_unit_test(test_tokenize),       cmocka_unit_test(test_detokenize),
        cmocka_unit_test(test_slots),          cmocka_unit_test(test_map),
        cmocka_unit_test(test_cache_events),   cmocka_unit_test(test_slot_save),
        cmocka_unit_test(test_slot_restore),   cmocka_unit_test(test_slot_erase),
    };
    return test_run(tests, setup, teardown);
}
