/* test_serve_faults: allocation failures along one request of `ctxshift
 * serve`, for every route a client uses to generate or manage the cache:
 * /completion, /v1/completions, /v1/chat/completions (a chat template),
 * /tokenize, /detokenize and POST /slots/ID?action=save|restore|erase.
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
 * Not deterministic in one respect: during generation the connection
 * thread (collecting text) and the engine thread allocate concurrently, so
 * which allocation is the n-th can differ between runs; every outcome is
 * checked the same way. Streams (SSE) and the cache map page are not
 * covered: the clock is frozen, so the map is never published. */
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

int fault_clock_gettime(int clk, struct timespec *ts) {
    if (clk == CLOCK_MONOTONIC) {
        /* under the map's 100 ms refresh interval from 0: never published */
        ts->tv_sec = 0;
        ts->tv_nsec = 50 * 1000 * 1000;
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
                if (*raw_len + 4096 > cap) {
                    cap = cap ? cap * 2 : 8192;
                    *raw = realloc(*raw, cap);
                    assert_non_null(*raw);
                }
                const ssize_t n = r->crc(r->crc_cls, pos, *raw + *raw_len, 4096);
                if (n < 0) break;
                *raw_len += (size_t)n;
                pos += (uint64_t)n;
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

enum { R_NATIVE, R_OAI, R_CHAT, R_TOKENIZE, R_DETOKENIZE, R_SAVE, R_RESTORE, R_ERASE, R_COUNT };

typedef struct route_case {
    const char *name, *url, *action, *body;
} route_case;

static const route_case cases[R_COUNT] = {
    [R_NATIVE] = {"/completion", "/completion", NULL,
                  "{\"prompt\":\"" PROMPT "\",\"n_predict\":8,\"temperature\":0,\"seed\":7,"
                  "\"n_probs\":2,\"stop\":[\"zzz\",\"qq\"],\"return_tokens\":true}"},
    [R_OAI] = {"/v1/completions", "/v1/completions", NULL,
               "{\"prompt\":[\"" PROMPT "\", 11],\"max_tokens\":8,\"temperature\":0,\"seed\":7,"
               "\"logprobs\":2,\"logit_bias\":{\"5\":-1}}"},
    [R_CHAT] = {"/v1/chat/completions", "/v1/chat/completions", NULL,
                "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
                "\"content\":[{\"type\":\"text\",\"text\":\"Tell me \"},{\"type\":\"text\","
                "\"text\":\"a story\"}]}],\"max_tokens\":8,\"temperature\":0,\"seed\":7,"
                "\"logprobs\":true,\"top_logprobs\":2,\"stop\":\"zzz\"}"},
    [R_TOKENIZE] = {"/tokenize", "/tokenize", NULL,
                    "{\"content\":\"" PROMPT "\",\"add_special\":true,\"with_pieces\":true}"},
    [R_DETOKENIZE] = {"/detokenize", "/detokenize", NULL, "{\"tokens\":[1,400,200,30,7,300]}"},
    [R_SAVE] = {"/slots save", "/slots/0", "save", "{\"filename\":\"keep.bin\"}"},
    [R_RESTORE] = {"/slots restore", "/slots/1", "restore", "{\"filename\":\"ref.bin\"}"},
    [R_ERASE] = {"/slots erase", "/slots/0", "erase", NULL},
};

static json_t *g_ref[R_COUNT]; /* never-failed responses, normalized */
static json_t *g_check_ref;
static long g_points[R_COUNT][2];
static long g_after[R_COUNT]; /* 500s whose action was done (the reply failed) */

/* The fields that differ between two identical requests: ids and clocks. */
static void normalize(json_t *j) {
    json_object_del(j, "id");
    json_object_del(j, "created");
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
    env v;
    env_start(&v);
    prepare(route, &v);
    resp r;
    post(cases[route].url, cases[route].action, cases[route].body, &r);
    if (r.status != 200) fail_msg("%s: status %u without failures", cases[route].name, r.status);
    normalize(r.json);
    g_ref[route] = json_incref(r.json);
    assert_int_equal(route_state(route, &v), 1);
    resp_clear(&r);
    env_stop(&v);
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
    json_decref(g_check_ref);
    free(g_ref_bytes);
    remove(g_ref_file);
    remove(g_keep_file);
    rmdir(g_dir);
    cs_model_free(g_model);
    printf("allocation points of one request (tools + jansson / library):\n");
    for (int i = 0; i < R_COUNT; i++) {
        printf("  %-22s %5ld / %ld  (500 after the action: %ld)\n", cases[i].name,
               g_points[i][DOM_TOOLS], g_points[i][DOM_LIB], g_after[i]);
    }
    return 0;
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
        request("POST", rc->url, rc->action, rc->body, &r, &raw, &len);
        const bool fired = disarm(dom);
        resp_parse(&r, raw, len);
        if (r.status == 200) {
            normalize(r.json);
            if (!json_equal(r.json, g_ref[route])) {
                char *got = json_dumps(r.json, JSON_COMPACT);
                char *want = json_dumps(g_ref[route], JSON_COMPACT);
                const char *key;
                json_t *val;
                json_object_foreach(g_ref[route], key, val) {
                    if (!json_equal(val, json_object_get(r.json, key))) {
                        char *a = json_dumps(json_object_get(r.json, key),
                                             JSON_COMPACT | JSON_ENCODE_ANY);
                        char *b = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
                        fprintf(stderr, "field '%s' differs:\n got %.2000s\nwant %.2000s\n", key,
                                a ? a : "(absent)", b ? b : "");
                    }
                }
                fail_msg(
                    "%s, %s allocation %ld failing: a 200 unlike the reference\n got %s\nwant %s",
                    rc->name, dom == DOM_TOOLS ? "tools" : "library", n, got, want);
            }
        } else if (r.status == 0) {
            /* no response: only when the connection's first allocation failed */
            assert_true(fired);
            assert_int_equal(r.no_at_call, 0);
        } else {
            if (!fired || r.status < 500 || r.status > 599) {
                char *got = json_dumps(r.json, JSON_COMPACT);
                fail_msg("%s, %s allocation %ld failing (%s): status %u: %s", rc->name,
                         dom == DOM_TOOLS ? "tools" : "library", n,
                         fired ? "reached" : "not reached", r.status, got ? got : "");
            }
            const json_t *e = json_object_get(r.json, "error");
            assert_int_equal(json_integer_value(json_object_get(e, "code")), r.status);
            msg = json_string_value(json_object_get(e, "message"));
            assert_non_null(msg);
            assert_true(msg[0] != '\0');
        }
        const int st = route_state(route, &v);
        if (r.status == 200) {
            assert_int_equal(st, 1);
        } else if (route >= R_SAVE && st == 1) {
            /* the action was done and only its reply could not be built:
             * reply_json's fixed body, as a client would see a connection
             * lost after the action */
            assert_non_null(msg);
            assert_string_equal(msg, "out of memory");
            g_after[route]++;
        }
        resp_clear(&r);
        if (route == R_SAVE) write_keep();
        /* the engine serves on, with the never-failed greedy output */
        post("/completion", NULL, check_body, &r);
        assert_int_equal(r.status, 200);
        check_output(r.json, g_check_ref);
        resp_clear(&r);
        env_stop(&v);
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
ROUTE_TEST(test_tokenize, R_TOKENIZE)
ROUTE_TEST(test_detokenize, R_DETOKENIZE)
ROUTE_TEST(test_slot_save, R_SAVE)
ROUTE_TEST(test_slot_restore, R_RESTORE)
ROUTE_TEST(test_slot_erase, R_ERASE)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_native),       cmocka_unit_test(test_completions),
        cmocka_unit_test(test_chat),         cmocka_unit_test(test_tokenize),
        cmocka_unit_test(test_detokenize),   cmocka_unit_test(test_slot_save),
        cmocka_unit_test(test_slot_restore), cmocka_unit_test(test_slot_erase),
    };
    return test_run(tests, setup, teardown);
}
