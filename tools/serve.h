/* serve.h: `ctxshift serve`, an OpenAI-compatible HTTP server whose clients
 * share one KV cache (docs/SERVER.md).
 *
 * Three parts, one file each:
 *   serve_http.c    libmicrohttpd: routes, API key, limits, request bodies,
 *                   SSE streams, client disconnects (one thread per
 *                   connection; a connection thread only parses, waits and
 *                   writes).
 *   serve_api.c     JSON in and out (jansson): request fields validated into
 *                   serve_params with an error naming the field, and the
 *                   response shapes of llama-server and OpenAI.
 *   serve_engine.c  the engine thread: it alone owns the cs_context. Slots
 *                   are sequences of the one cache; every step is one
 *                   cs_decode that mixes one token of each generating slot
 *                   with prompt chunks of new requests (continuous batching),
 *                   with automatic prefix sharing through serve_prefix.c.
 *
 * A request becomes a serve_task: the connection thread validates and
 * tokenizes it, submits it, then reads the task's events (text deltas, the
 * final record) until the final one; the engine writes them. A task is
 * reference-counted (the connection and the engine each hold one). */
#ifndef CS_TOOLS_SERVE_H
#define CS_TOOLS_SERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctxshift.h"

/* ------------------------------------------------------------ config */

typedef struct serve_config {
    const char *model_path;
    const char *alias;         /* --alias: the model id clients see; NULL: the path */
    const char *host;          /* --host (default 127.0.0.1) */
    int32_t port;              /* --port; 0: a free port, printed at start */
    int32_t n_slots;           /* -np */
    int32_t n_ctx;             /* -c: KV cells of the shared pool */
    int32_t n_ctx_slot;        /* positions one slot may hold: n_ctx / n_slots */
    int32_t n_batch;           /* -b: tokens per decode step (the step budget) */
    int32_t n_threads;         /* -t */
    int32_t type_k, type_v;    /* -ctk / -ctv */
    int32_t n_cache_entries;   /* --cache-entries: idle prefixes kept (sequences) */
    bool context_shift;        /* false with --no-context-shift */
    int32_t cache_reuse;       /* --cache-reuse N: min chunk reused by shifting; 0 off */
    const char *api_key;       /* --api-key; NULL: none */
    const char *slot_save_path; /* --slot-save-path DIR; NULL: slot save disabled */
    const char *chat_template; /* --chat-template NAME; NULL: from the model */
    bool metrics;              /* --metrics */
    bool slots_endpoint;       /* --slots */
    int32_t timeout_s;         /* --timeout: total time of one request */
    int32_t idle_timeout_s;    /* --idle-timeout: a connection that sends nothing */
    int64_t max_body;          /* --max-body BYTES (413 above) */
    int32_t max_queue;         /* --max-queue: waiting requests (503 above) */
    int32_t max_connections;   /* --max-connections */
    bool verbose;
} serve_config;

/* --------------------------------------------------------- a request */

enum serve_kind {
    SERVE_NATIVE = 0,     /* /completion */
    SERVE_COMPLETION = 1, /* /v1/completions */
    SERVE_CHAT = 2,       /* /v1/chat/completions */
};

enum { SERVE_MAX_SEQ = 64, /* sequence ids of one cache (CS_MAX_SEQ) */
       SERVE_MAX_PROMPT = 1 << 20, /* tokens of one prompt (the library's CS_MAX_CTX) */
       SERVE_MAX_STOP = 16, SERVE_MAX_STOP_BYTES = 1024, SERVE_MAX_TOP_LOGPROBS = 20 };

/* The validated fields of one completion request. */
typedef struct serve_params {
    cs_sampler_params sampling;
    int32_t n_predict;   /* -1: until the end of generation or the slot's limit */
    int32_t n_keep;      /* prompt tokens kept by a context shift (BOS not counted); -1: all */
    int32_t n_discard;   /* 0: half of what follows n_keep */
    int32_t id_slot;     /* -1: automatic */
    bool cache_prompt;   /* reuse cached prefixes (default true) */
    bool ignore_eos;
    bool stream;
    bool include_usage;  /* stream_options.include_usage */
    bool return_tokens;  /* native: token ids in each event */
    bool logprobs;       /* logprobs of the chosen tokens */
    int32_t n_probs;     /* top_logprobs (OAI) / n_probs (native): alternatives per token */
    int32_t n_stop;
    char *stop[SERVE_MAX_STOP]; /* stop strings (malloc'd) */
    int32_t n_bias;
    cs_token *bias_tok; /* logit_bias (malloc'd arrays) */
    float *bias_val;
    char model[256]; /* the "model" field echoed back (the alias when absent) */
} serve_params;

/* What the engine reports of one generated token. */
typedef struct serve_token_info {
    cs_token id;
    float logprob;
    int32_t n_top;
    cs_token top_id[SERVE_MAX_TOP_LOGPROBS];
    float top_logprob[SERVE_MAX_TOP_LOGPROBS];
} serve_token_info;

enum serve_finish {
    SERVE_FINISH_NONE = 0,
    SERVE_FINISH_EOS = 1,    /* an end-of-generation token: "stop" */
    SERVE_FINISH_WORD = 2,   /* a stop string: "stop" */
    SERVE_FINISH_LIMIT = 3,  /* n_predict, or a full slot without context shift: "length" */
    SERVE_FINISH_ERROR = 4,  /* the request failed after it started: error_* set */
};

/* One piece of output, appended by the engine, read by the connection. */
typedef struct serve_event {
    struct serve_event *next;
    char *text; /* text delta (UTF-8 complete, stop strings held back); may be empty */
    size_t len;
    int32_t n_tokens; /* tokens this delta covers (their infos follow) */
    serve_token_info *tokens;
} serve_event;

typedef struct serve_timings {
    int32_t prompt_n; /* prompt tokens evaluated (the cached ones excluded) */
    double prompt_ms;
    int32_t predicted_n;
    double predicted_ms;
} serve_timings;

typedef struct serve_task {
    /* set before submission, then read-only */
    uint64_t id;
    int32_t kind;
    serve_params p;
    cs_token *prompt; /* tokenized prompt (BOS included when the model adds one) */
    int32_t n_prompt;
    uint64_t t_submit_ns;
    uint64_t deadline_ns; /* 0: none */

    atomic_bool cancelled; /* set by the connection (client gone, shutdown) */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    serve_event *head, *tail; /* pending events (mu) */
    bool done;                /* the final record below is written (mu) */
    /* final record (written by the engine before done) */
    int32_t finish;           /* enum serve_finish */
    char stopping_word[SERVE_MAX_STOP_BYTES + 1];
    int32_t id_slot;
    int32_t n_prompt_used;   /* prompt tokens after truncation */
    int32_t n_cached;        /* prompt tokens taken from the cache */
    int32_t n_predicted;
    bool truncated;          /* the prompt or the context was shifted */
    serve_timings timings;
    int32_t error_status;    /* SERVE_FINISH_ERROR: HTTP status and message */
    char error_msg[512];
} serve_task;

/* A new task with one reference, prompt owned (NULL on allocation failure;
 * the prompt is freed then). */
serve_task *serve_task_new(int32_t kind, cs_token *prompt, int32_t n_prompt);
void serve_task_ref(serve_task *t);
/* Drop a reference; the last one frees the task, its events and params. */
void serve_task_unref(serve_task *t);
/* Free what serve_params owns (stop strings, bias arrays). */
void serve_params_free(serve_params *p);

/* ------------------------------------------------------------ engine */

typedef struct serve_engine serve_engine;

/* Per-engine counters for /metrics and /props (a snapshot under the lock). */
typedef struct serve_stats {
    uint64_t n_requests, n_prompt_tokens, n_predicted_tokens, n_decode, n_busy_slot_steps;
    double prompt_seconds, predicted_seconds;
    int32_t n_processing, n_deferred; /* active slots, queued tasks */
    uint64_t n_prefix_hits, n_tokens_reused, n_cache_evictions, n_context_shifts;
    uint64_t n_chunks_reused_tokens; /* --cache-reuse: tokens slid into place */
    int32_t n_cache_entries;
    cs_kv_info kv;
} serve_stats;

/* The state of one slot for /slots. */
typedef struct serve_slot_info {
    int32_t id;
    bool processing;
    uint64_t task_id;
    int32_t n_ctx;
    int32_t n_cached_tokens;
    int32_t n_decoded;
    int32_t n_remain;
} serve_slot_info;

/* Create the engine (context of cfg->n_ctx cells, n_slots + n_cache_entries
 * sequences) and start its thread. Returns 0 or prints the error and
 * returns TOOL_EXIT_FAIL. */
int serve_engine_start(const serve_config *cfg, const cs_model *model, serve_engine **out);
/* Graceful stop, first half: later submissions and slot actions get 503,
 * queued tasks end with 503 at once, and the active ones run on until they
 * finish or grace_ms pass (polled every 20 ms). serve_engine_shutdown ends
 * what is left. */
void serve_engine_drain(serve_engine *e, int32_t grace_ms);
/* Remove the temporaries that an interrupted slot save left in dir
 * (".NAME.tmp.PID", see slot_save: a name no request can restore) whose
 * process is gone; at start. Returns how many were removed. Cost: one
 * readdir of dir. */
int32_t serve_slot_clean_temporaries(const char *dir);
/* Stop the thread: active and queued tasks end with an error, later
 * submissions get 503. Stats and slots stay readable until the free. */
void serve_engine_shutdown(serve_engine *e);
/* Shut down (when not yet) and free everything. NULL is a no-op. */
void serve_engine_free(serve_engine *e);
/* Queue a task (the engine takes its own reference). Returns 0, or 503 when
 * the queue is full, or 410 when the engine is stopping (nothing queued;
 * both are answered 503, the codes only pick the message). */
int serve_engine_submit(serve_engine *e, serve_task *t);
void serve_engine_stats(serve_engine *e, serve_stats *out);
enum serve_slot_action { SERVE_SLOT_SAVE = 0, SERVE_SLOT_RESTORE = 1, SERVE_SLOT_ERASE = 2 };

/* The outcome of a slot action (POST /slots/ID?action=...). */
typedef struct serve_slot_result {
    int32_t status; /* 200, or the HTTP error status with msg */
    char msg[512];
    int32_t n_tokens; /* saved, restored or erased */
    uint64_t n_bytes; /* written or read */
    double ms;
} serve_slot_result;

/* Run a slot action on the engine thread and wait for it. path: the file
 * (already confined to --slot-save-path by the caller). Save writes a
 * temporary file and renames it; restore checks the whole file (header,
 * token count within the slot, the state blob through cs_state_seq_load
 * into a scratch sequence) before the slot changes, so a corrupt or
 * foreign file changes nothing; a busy slot is 409. */
void serve_engine_slot_action(serve_engine *e, int32_t slot, int32_t action, const char *path,
                              serve_slot_result *res);

/* The cache map for the page (GET /cache/events): when the map changed
 * since *version, a malloc'd JSON text (cells as one character each: '.'
 * empty, the sequence's character for a cell of one sequence, '*' for a
 * shared cell; counters; slots) is returned and *version updated; else
 * NULL. */
char *serve_engine_map(serve_engine *e, uint64_t *version);

/* Slots into out[0, n_max); returns the slot count. */
int32_t serve_engine_slots(serve_engine *e, serve_slot_info *out, int32_t n_max);

/* ---------------------------------------------------------- task I/O */

/* Wait until the task has an event or is done, or until timeout_ms passes
 * (then returns NULL with *done false). Returns the oldest event (caller
 * frees with serve_event_free) or NULL with *done true when the final
 * record is there and no event is left. */
serve_event *serve_task_wait(serve_task *t, int timeout_ms, bool *done);
void serve_event_free(serve_event *ev);

/* Engine side: append an event (takes ownership) / finish the task. */
void serve_task_push(serve_task *t, serve_event *ev);
void serve_task_finish(serve_task *t);

#endif /* CS_TOOLS_SERVE_H */
