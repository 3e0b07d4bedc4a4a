/* serve_engine.c: the engine thread of `ctxshift serve` (serve.h).
 *
 * One thread owns the cs_context. Sequences [0, n_slots) are the slots;
 * sequences [n_slots, n_slots + n_entries) are prefix-cache entries: idle
 * token prefixes whose cells stay in the cache, indexed by serve_prefix.c.
 *
 * A step:
 *   1. assign queued tasks to free slots; a task's prompt starts from the
 *      longest cached prefix: the slot's own cache or an entry copied into
 *      the slot with cs_kv_seq_cp (shared cells, nothing recomputed);
 *   2. context-shift every slot whose next token would reach its size
 *      (llama-server's n_keep / n_discard rule); the moving range is first
 *      made the slot's own (cs_kv_seq_own) so that sequences sharing those
 *      cells never see them move;
 *   3. one batch: the pending token of every generating slot, then prompt
 *      chunks of prefilling slots in arrival order, up to n_batch tokens;
 *   4. cs_decode; on a full cache the least recently used entries are
 *      evicted and the step retried;
 *   5. sample each slot whose last batch row had logits, stream the text,
 *      check stop conditions, release finished slots (their tokens become an
 *      entry).
 *
 * Each slot keeps the tokens its sequence holds at positions 0..n_cache-1
 * (slot->cache); n_exact of them equal a fresh evaluation (a context shift
 * leaves only the kept prefix exact), and only exact prefixes are shared. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "args.h"
#include "serve.h"
#include "serve_api.h"
#include "serve_prefix.h"
#include "tool_context.h"

enum { SLOT_IDLE = 0, SLOT_ACTIVE = 1 };

typedef struct serve_slot {
    int32_t id;
    cs_seq seq;
    serve_task *task; /* NULL when idle */
    int32_t state;

    cs_token *cache; /* tokens at positions 0..n_cache-1 of seq */
    int32_t n_cache;
    int32_t n_exact; /* cache[0, n_exact) equals a fresh evaluation */
    int32_t cap;     /* n_ctx_slot + 1 */

    /* tokens still to evaluate, at positions n_cache.. (prompt rest, a
     * recomputed tail, or the sampled token) */
    cs_token *todo;
    int32_t n_todo, i_todo;
    bool prefill;     /* todo holds prompt tokens (timings) */
    int32_t i_batch;  /* batch row with this slot's logits, -1 */
    int32_t n_keep;   /* kept by a context shift, BOS included */

    cs_sampler *smpl;
    int32_t n_decoded;
    int32_t n_prompt_eval;
    bool truncated;
    char *gen; /* generated text */
    size_t gen_len, gen_cap, gen_sent;
    serve_token_info *infos; /* generated tokens not yet sent */
    int32_t n_infos, cap_infos;
    uint64_t t_start, t_prompt_done;
    uint64_t last_used;
    int32_t max_stop; /* longest stop string of the task */
} serve_slot;

typedef struct serve_entry {
    bool used;
    int32_t n; /* tokens held (positions 0..n-1) */
} serve_entry;

struct serve_engine {
    const serve_config *cfg;
    const cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    int32_t n_vocab;
    cs_token bos;
    bool add_bos;
    int32_t n_ctx_train;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu; /* queue, stats, slot snapshot */
    pthread_cond_t cv;
    bool stopping;
    bool draining;      /* serve_engine_drain: no new tasks, the active ones run on */
    serve_task **queue; /* ring */
    int32_t q_head, q_len, q_cap;

    serve_slot *slots;
    int32_t n_slots;
    serve_entry *entries;
    int32_t n_entries;
    prefix_tree *tree;
    uint64_t clock;

    float *lp; /* n_vocab scratch for log-probabilities */
    char *piece;
    size_t piece_cap;

    struct serve_ctl *ctl; /* mu: slot actions waiting for the engine thread */
    cs_seq scratch;        /* a sequence no slot or entry uses: restores land here first */

    int32_t n_cells;     /* cs_n_ctx */
    cs_kv_cell *view;    /* engine thread: cs_kv_view scratch */
    char *cells;         /* engine thread: its encoding */
    char *map;           /* mu: the last published map (JSON) */
    uint64_t map_version; /* mu */
    uint64_t map_t_ns;    /* engine thread: when it was published */

    serve_stats stats; /* mu */
    serve_slot_info *snap; /* mu: slot snapshot for /slots */
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ tasks */

serve_task *serve_task_new(int32_t kind, cs_token *prompt, int32_t n_prompt) {
    serve_task *t = calloc(1, sizeof(*t));
    if (!t) {
        free(prompt);
        return NULL;
    }
    t->kind = kind;
    t->prompt = prompt;
    t->n_prompt = n_prompt;
    t->refs = 1;
    t->id_slot = -1;
    atomic_init(&t->cancelled, false);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    return t;
}

void serve_event_free(serve_event *ev) {
    if (!ev) return;
    free(ev->text);
    free(ev->tokens);
    free(ev);
}

void serve_task_ref(serve_task *t) {
    pthread_mutex_lock(&t->mu);
    t->refs++;
    pthread_mutex_unlock(&t->mu);
}

void serve_task_unref(serve_task *t) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    const int left = --t->refs;
    pthread_mutex_unlock(&t->mu);
    if (left > 0) return;
    for (serve_event *ev = t->head; ev;) {
        serve_event *next = ev->next;
        serve_event_free(ev);
        ev = next;
    }
    serve_params_free(&t->p);
    free(t->prompt);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

void serve_task_push(serve_task *t, serve_event *ev) {
    ev->next = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->tail) {
        t->tail->next = ev;
    } else {
        t->head = ev;
    }
    t->tail = ev;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void serve_task_finish(serve_task *t) {
    pthread_mutex_lock(&t->mu);
    t->done = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

serve_event *serve_task_wait(serve_task *t, int timeout_ms, bool *done) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    serve_event *ev = NULL;
    pthread_mutex_lock(&t->mu);
    while (!t->head && !t->done) {
        if (pthread_cond_timedwait(&t->cv, &t->mu, &until) == ETIMEDOUT) break;
    }
    if (t->head) {
        ev = t->head;
        t->head = ev->next;
        if (!t->head) t->tail = NULL;
        ev->next = NULL;
    }
    *done = !ev && t->done;
    pthread_mutex_unlock(&t->mu);
    return ev;
}

/* Record a task's error (status, message) without finishing it: for a
 * task on a slot, which slot_release(SERVE_FINISH_ERROR) finishes once it
 * has written the rest of the final record (the connection reads that
 * record as soon as the task is done). */
static void task_error(serve_task *t, int32_t status, const char *fmt, va_list ap)
    TOOL_PRINTF(3, 0);
static void task_error(serve_task *t, int32_t status, const char *fmt, va_list ap) {
    vsnprintf(t->error_msg, sizeof(t->error_msg), fmt, ap);
    t->error_status = status;
    t->finish = SERVE_FINISH_ERROR;
}

static void slot_error(serve_task *t, int32_t status, const char *fmt, ...) TOOL_PRINTF(3, 4);
static void slot_error(serve_task *t, int32_t status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    task_error(t, status, fmt, ap);
    va_end(ap);
}

/* Finish a task that holds no slot with an error; the connection turns it
 * into an HTTP error or a stream error event. */
static void task_fail(serve_task *t, int32_t status, const char *fmt, ...) TOOL_PRINTF(3, 4);
static void task_fail(serve_task *t, int32_t status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    task_error(t, status, fmt, ap);
    va_end(ap);
    serve_task_finish(t);
}

/* ---------------------------------------------------------- queue */

int serve_engine_submit(serve_engine *e, serve_task *t) {
    pthread_mutex_lock(&e->mu);
    if (e->stopping || e->draining || e->q_len >= e->q_cap) {
        const int rc = e->stopping || e->draining ? 410 : 503;
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    serve_task_ref(t);
    t->t_submit_ns = now_ns();
    if (e->cfg->timeout_s > 0) t->deadline_ns = t->t_submit_ns + (uint64_t)e->cfg->timeout_s * 1000000000u;
    e->queue[(e->q_head + e->q_len) % e->q_cap] = t;
    e->q_len++;
    e->stats.n_deferred = e->q_len;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

/* ------------------------------------------------------ prefix cache */

static void entry_drop(serve_engine *e, int32_t i) {
    if (!e->entries[i].used) return;
    cs_kv_seq_rm(e->ctx, (cs_seq)(e->n_slots + i), -1, -1);
    prefix_tree_remove(e->tree, i);
    e->entries[i] = (serve_entry){0};
}

/* Evict the least recently used entry; false when there is none. */
static bool entry_evict_lru(serve_engine *e) {
    int32_t id;
    if (!prefix_tree_lru(e->tree, &id)) return false;
    entry_drop(e, id);
    pthread_mutex_lock(&e->mu);
    e->stats.n_cache_evictions++;
    pthread_mutex_unlock(&e->mu);
    return true;
}

/* Keep tokens[0, n) of slot s (exact, at positions 0..n-1) as an entry:
 * shared cells, nothing copied. Entries covered by it are dropped. */
static void entry_insert(serve_engine *e, const serve_slot *s, int32_t n) {
    if (n <= 0 || e->n_entries == 0) return;
    int32_t hit = -1;
    const int32_t m = prefix_tree_match(e->tree, s->cache, n, &hit);
    if (m >= n && hit >= 0) { /* already held in full */
        prefix_tree_touch(e->tree, hit, ++e->clock);
        return;
    }
    int32_t free_i = -1;
    for (int32_t i = 0; i < e->n_entries; i++) {
        if (!e->entries[i].used) {
            free_i = i;
            break;
        }
    }
    if (free_i < 0) {
        if (!prefix_tree_lru(e->tree, &free_i)) return;
        entry_drop(e, free_i);
        pthread_mutex_lock(&e->mu);
        e->stats.n_cache_evictions++;
        pthread_mutex_unlock(&e->mu);
    }
    int32_t redundant[SERVE_MAX_SEQ];
    int32_t n_red = 0;
    if (prefix_tree_insert(e->tree, free_i, s->cache, n, ++e->clock, redundant, &n_red) != 0) return;
    const cs_seq seq = (cs_seq)(e->n_slots + free_i);
    cs_kv_seq_rm(e->ctx, seq, -1, -1);
    cs_kv_seq_cp(e->ctx, s->seq, seq, 0, n);
    e->entries[free_i] = (serve_entry){.used = true, .n = n};
    for (int32_t r = 0; r < n_red; r++) {
        if (redundant[r] != free_i) entry_drop(e, redundant[r]);
    }
}

/* ------------------------------------------------------------ slots */

static int32_t common_prefix(const cs_token *a, int32_t na, const cs_token *b, int32_t nb) {
    int32_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

static const char map_alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+=";

/* Publish the cache map when it changed, at most 10 times a second (the
 * page's refresh; O(n_ctx) per publication). Engine thread (or
 * serve_engine_start before it runs). */
static void map_publish(serve_engine *e, const serve_stats *st) {
    const uint64_t now = now_ns();
    if (now - e->map_t_ns < 100000000u) return;
    const int32_t n = cs_kv_view(e->ctx, e->view, e->n_cells);
    for (int32_t i = 0; i < n; i++) {
        const uint64_t m = e->view[i].seq;
        char ch = '.';
        if (e->view[i].pos >= 0 && m) {
            ch = (m & (m - 1)) ? '*' : map_alphabet[__builtin_ctzll(m) & 63];
        }
        e->cells[i] = ch;
    }
    e->cells[n] = '\0';
    /* a failed allocation skips this publication (the page keeps the last
     * one), never publishes a map with a slot missing */
    json_t *slots = json_array();
    for (int32_t i = 0; i < e->n_slots && slots; i++) {
        serve_json_append(&slots, json_pack("{s:i,s:b,s:i,s:i}", "id", (int)i, "busy",
                                            e->slots[i].task != NULL, "n_cache",
                                            (int)e->slots[i].n_cache, "n_decoded",
                                            (int)e->slots[i].n_decoded));
    }
    if (!slots) return;
    json_t *j = json_pack(
        "{s:i,s:i,s:i,s:s,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:o}", "size", (int)n, "n_slots",
        (int)e->n_slots, "n_entries", (int)e->n_entries, "cells", e->cells, "used", (int)st->kv.used,
        "holes", (int)st->kv.holes, "kshift_passes", (json_int_t)st->kv.n_shift_passes,
        "cells_rotated", (json_int_t)st->kv.n_cells_shifted, "defrags",
        (json_int_t)st->kv.n_defrag_passes, "cells_moved", (json_int_t)st->kv.n_cells_moved,
        "context_shifts", (json_int_t)st->n_context_shifts, "prefix_hits",
        (json_int_t)st->n_prefix_hits, "tokens_reused", (json_int_t)st->n_tokens_reused,
        "cached_prefixes", (int)st->n_cache_entries, "slots", slots);
    char *txt = j ? serve_json_dumps(j) : NULL;
    json_decref(j);
    if (!txt) return;
    pthread_mutex_lock(&e->mu);
    if (e->map && strcmp(e->map, txt) == 0) {
        free(txt);
    } else {
        free(e->map);
        e->map = txt;
        e->map_version++;
    }
    pthread_mutex_unlock(&e->mu);
    e->map_t_ns = now;
}

char *serve_engine_map(serve_engine *e, uint64_t *version) {
    char *out = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->map && e->map_version != *version) {
        out = strdup(e->map);
        if (out) *version = e->map_version;
    }
    pthread_mutex_unlock(&e->mu);
    return out;
}

static void slot_snapshot(serve_engine *e) {
    pthread_mutex_lock(&e->mu);
    for (int32_t i = 0; i < e->n_slots; i++) {
        const serve_slot *s = &e->slots[i];
        serve_slot_info *o = &e->snap[i];
        o->id = s->id;
        o->processing = s->task != NULL;
        o->task_id = s->task ? s->task->id : 0;
        o->n_ctx = e->cfg->n_ctx_slot;
        o->n_cached_tokens = s->n_cache;
        o->n_decoded = s->n_decoded;
        o->n_remain = s->task && s->task->p.n_predict >= 0 ? s->task->p.n_predict - s->n_decoded : -1;
    }
    /* n_processing is counted where slots start and end (slot_start,
     * slot_release), not here: a snapshot lags by one step */
    e->stats.n_deferred = e->q_len;
    e->stats.n_cache_entries = prefix_tree_count(e->tree);
    cs_kv_stats(e->ctx, &e->stats.kv);
    const serve_stats st = e->stats;
    pthread_mutex_unlock(&e->mu);
    map_publish(e, &st);
}

/* Emit the text that is safe to send: not inside an incomplete UTF-8
 * sequence and not a possible beginning of a stop string. Returns false
 * when the event cannot be allocated: nothing was sent, the text and token
 * infos stay pending (a later flush sends them). */
static bool slot_flush(serve_engine *e, serve_slot *s, bool final) {
    (void)e;
    size_t safe = s->gen_len;
    if (!final) {
        /* hold back a suffix that is a prefix of a stop string */
        const serve_params *p = &s->task->p;
        size_t hold = 0;
        for (int32_t k = 0; k < p->n_stop; k++) {
            const size_t sl = strlen(p->stop[k]);
            for (size_t l = sl - 1; l > hold && l > 0; l--) {
                if (l <= s->gen_len && memcmp(s->gen + s->gen_len - l, p->stop[k], l) == 0) {
                    hold = l;
                    break;
                }
            }
        }
        safe = s->gen_len - hold;
        if (safe < s->gen_sent) safe = s->gen_sent;
        safe = s->gen_sent + cs_utf8_complete_len(s->gen + s->gen_sent, safe - s->gen_sent);
    }
    if (safe == s->gen_sent && s->n_infos == 0) return true;
    serve_event *ev = calloc(1, sizeof(*ev));
    if (!ev) return false;
    ev->len = safe - s->gen_sent;
    ev->text = malloc(ev->len + 1);
    if (ev->text) {
        memcpy(ev->text, s->gen + s->gen_sent, ev->len);
        ev->text[ev->len] = '\0';
    }
    if (s->n_infos > 0) {
        ev->tokens = malloc((size_t)s->n_infos * sizeof(serve_token_info));
        if (ev->tokens) {
            memcpy(ev->tokens, s->infos, (size_t)s->n_infos * sizeof(serve_token_info));
            ev->n_tokens = s->n_infos;
        }
    }
    if (!ev->text || (s->n_infos > 0 && !ev->tokens)) {
        serve_event_free(ev);
        return false;
    }
    s->gen_sent = safe;
    s->n_infos = 0;
    serve_task_push(s->task, ev);
    return true;
}

/* End the slot's task: final record, cache entry, slot idle. */
static void slot_release(serve_engine *e, serve_slot *s, int32_t finish) {
    serve_task *t = s->task;
    const uint64_t now = now_ns();
    if (finish != SERVE_FINISH_ERROR && finish != SERVE_FINISH_NONE && !slot_flush(e, s, true)) {
        /* the rest of the text cannot be sent: an answer cut short would
         * pass for a whole one */
        slot_error(t, 500, "out of memory sending the generated text");
        finish = SERVE_FINISH_ERROR;
    }
    if (finish != SERVE_FINISH_ERROR) t->finish = finish;
    t->id_slot = s->id;
    t->n_predicted = s->n_decoded;
    t->truncated = s->truncated;
    t->timings.prompt_n = s->n_prompt_eval;
    const uint64_t tp = s->t_prompt_done ? s->t_prompt_done : now;
    t->timings.prompt_ms = (double)(tp - s->t_start) / 1e6;
    t->timings.predicted_n = s->n_decoded;
    t->timings.predicted_ms = s->t_prompt_done ? (double)(now - s->t_prompt_done) / 1e6 : 0.0;
    pthread_mutex_lock(&e->mu);
    e->stats.n_requests++;
    e->stats.n_prompt_tokens += (uint64_t)s->n_prompt_eval;
    e->stats.n_predicted_tokens += (uint64_t)s->n_decoded;
    e->stats.prompt_seconds += t->timings.prompt_ms / 1e3;
    e->stats.predicted_seconds += t->timings.predicted_ms / 1e3;
    pthread_mutex_unlock(&e->mu);
    /* the evaluated part of the cache becomes an entry (only what was
     * evaluated: a pending sampled token has no cell yet) */
    if (t->p.cache_prompt && s->n_exact > 0) entry_insert(e, s, s->n_exact);
    cs_sampler_free(s->smpl);
    s->smpl = NULL;
    s->task = NULL;
    s->state = SLOT_IDLE;
    s->n_todo = s->i_todo = 0;
    s->i_batch = -1;
    s->last_used = ++e->clock;
    /* /slots and /metrics show the slot free before its client hears the
     * end (the full snapshot waits for the end of the step) */
    pthread_mutex_lock(&e->mu);
    int32_t busy = 0;
    for (int32_t i = 0; i < e->n_slots; i++) busy += e->slots[i].task != NULL;
    e->stats.n_processing = busy;
    e->snap[s->id].processing = false;
    e->snap[s->id].task_id = 0;
    e->snap[s->id].n_cached_tokens = s->n_cache;
    e->snap[s->id].n_remain = -1;
    pthread_mutex_unlock(&e->mu);
    serve_task_finish(t);
    serve_task_unref(t);
}

/* llama-server's --cache-reuse after the common prefix [0, n_past): walk
 * the old cache (head_c) and the prompt (head_p); a run of at least
 * cache_reuse equal tokens is moved from head_c to head_p (its cells made
 * the slot's own first, so sharers keep theirs in place). Returns the new
 * number of prompt tokens in the cache. s->cache is updated in place. */
static int32_t slot_reuse_chunks(serve_engine *e, serve_slot *s, const cs_token *prompt,
                                 int32_t n_prompt, int32_t n_past) {
    int32_t head_c = n_past, head_p = n_past;
    int32_t moved = 0;
    while (head_c < s->n_cache && head_p < n_prompt) {
        int32_t n = 0;
        while (head_c + n < s->n_cache && head_p + n < n_prompt &&
               s->cache[head_c + n] == prompt[head_p + n]) {
            n++;
        }
        if (n < e->cfg->cache_reuse) {
            head_c++;
            continue;
        }
        cs_status st = cs_kv_seq_own(e->ctx, s->seq, head_c, head_c + n);
        if (st == CS_OK) st = cs_kv_seq_rm(e->ctx, s->seq, head_p, head_c);
        if (st == CS_OK) st = cs_kv_seq_add(e->ctx, s->seq, head_c, head_c + n, head_p - head_c);
        if (st != CS_OK) break; /* no room to unshare: evaluate the rest */
        memmove(s->cache + head_p, s->cache + head_c, (size_t)n * sizeof(cs_token));
        head_c += n;
        head_p += n;
        moved += n;
    }
    if (moved > 0) {
        pthread_mutex_lock(&e->mu);
        e->stats.n_chunks_reused_tokens += (uint64_t)moved;
        pthread_mutex_unlock(&e->mu);
    }
    return head_p;
}

/* Start task t on slot s: reuse the longest cached prefix, queue the rest
 * of the prompt. Returns false (task failed and released) on error. */
static bool slot_start(serve_engine *e, serve_slot *s, serve_task *t) {
    const serve_config *cfg = e->cfg;
    s->task = t;
    s->state = SLOT_ACTIVE;
    s->t_start = now_ns();
    s->t_prompt_done = 0;
    s->n_decoded = 0;
    s->n_prompt_eval = 0;
    s->truncated = false;
    s->gen_len = s->gen_sent = 0;
    s->n_infos = 0;
    s->i_batch = -1;
    s->max_stop = 0;
    for (int32_t k = 0; k < t->p.n_stop; k++) {
        const int32_t l = (int32_t)strlen(t->p.stop[k]);
        if (l > s->max_stop) s->max_stop = l;
    }

    /* prompt truncation (llama-server's rule, context shift on): keep
     * n_keep, erase whole blocks of half the rest after it */
    const cs_token *prompt = t->prompt;
    int32_t n_prompt = t->n_prompt;
    cs_token *trunc = NULL;
    const int32_t n_ctx = cfg->n_ctx_slot;
    int32_t n_keep = t->p.n_keep < 0 ? n_prompt : t->p.n_keep;
    if (n_keep > n_ctx - 4) n_keep = n_ctx - 4;
    if (n_prompt >= n_ctx) {
        const int32_t n_left = n_ctx - n_keep;
        const int32_t n_block = n_left / 2;
        const int32_t erased = (n_prompt - n_keep - n_block) / n_block * n_block;
        trunc = malloc((size_t)(n_prompt - erased) * sizeof(cs_token));
        if (!trunc) {
            task_fail(t, 500, "out of memory truncating the prompt");
            s->task = NULL;
            s->state = SLOT_IDLE;
            serve_task_unref(t);
            return false;
        }
        memcpy(trunc, prompt, (size_t)n_keep * sizeof(cs_token));
        memcpy(trunc + n_keep, prompt + n_keep + erased,
               (size_t)(n_prompt - n_keep - erased) * sizeof(cs_token));
        prompt = trunc;
        n_prompt -= erased;
        s->truncated = true;
    }
    s->n_keep = n_keep + (e->add_bos && n_prompt > 0 && prompt[0] == e->bos ? 1 : 0);
    if (s->n_keep > n_ctx - 4) s->n_keep = n_ctx - 4;
    if (s->n_keep < 0) s->n_keep = 0;
    t->n_prompt_used = n_prompt;

    /* reuse: the slot's own exact cache, or an entry, whichever is longer */
    int32_t reuse = 0;
    if (t->p.cache_prompt) {
        reuse = common_prefix(s->cache, s->n_exact, prompt, n_prompt);
        int32_t hit = -1;
        const int32_t m = e->n_entries > 0 ? prefix_tree_match(e->tree, prompt, n_prompt, &hit) : 0;
        if (m > reuse && hit >= 0) {
            cs_kv_seq_rm(e->ctx, s->seq, -1, -1);
            cs_kv_seq_cp(e->ctx, (cs_seq)(e->n_slots + hit), s->seq, 0, m);
            memcpy(s->cache, prompt, (size_t)m * sizeof(cs_token));
            s->n_cache = s->n_exact = m;
            reuse = m;
            prefix_tree_touch(e->tree, hit, ++e->clock);
        }
    }
    if (s->n_exact > reuse) s->n_exact = reuse;
    /* --cache-reuse: chunks of the old cache after the common prefix that
     * the prompt repeats further down are slid into place (llama-server's
     * seq_rm + seq_add) instead of evaluated; they are not exact any more */
    if (t->p.cache_prompt && cfg->cache_reuse > 0 && cs_kv_can_shift(e->ctx)) {
        reuse = slot_reuse_chunks(e, s, prompt, n_prompt, reuse);
    }
    /* the last prompt token is always evaluated: its logits start generation */
    if (reuse >= n_prompt) reuse = n_prompt - 1;
    if (reuse < 0) reuse = 0;
    cs_kv_seq_rm(e->ctx, s->seq, reuse, -1);
    s->n_cache = reuse;
    if (s->n_exact > reuse) s->n_exact = reuse;
    if (reuse > 0) {
        pthread_mutex_lock(&e->mu);
        e->stats.n_prefix_hits++;
        e->stats.n_tokens_reused += (uint64_t)reuse;
        pthread_mutex_unlock(&e->mu);
    }
    t->n_cached = reuse;

    s->n_todo = n_prompt - reuse;
    memcpy(s->todo, prompt + reuse, (size_t)s->n_todo * sizeof(cs_token));
    s->i_todo = 0;
    s->prefill = true;
    free(trunc);

    cs_status st = cs_sampler_new(&t->p.sampling, e->n_vocab, &s->smpl);
    for (int32_t i = 0; st == CS_OK && i < t->p.n_bias; i++) {
        st = cs_sampler_set_logit_bias(s->smpl, t->p.bias_tok[i], t->p.bias_val[i]);
    }
    if (st != CS_OK) {
        task_fail(t, st == CS_ERR_NOMEM ? 500 : 400, "sampling parameters: %s", cs_last_error());
        cs_sampler_free(s->smpl);
        s->smpl = NULL;
        s->task = NULL;
        s->state = SLOT_IDLE;
        serve_task_unref(t);
        return false;
    }
    /* prompt tokens count for the repetition penalties, as in llama-cli */
    for (int32_t i = 0; i < s->n_cache; i++) cs_sampler_accept(s->smpl, s->cache[i]);
    for (int32_t i = 0; i < s->n_todo; i++) cs_sampler_accept(s->smpl, s->todo[i]);
    pthread_mutex_lock(&e->mu);
    e->stats.n_processing++;
    pthread_mutex_unlock(&e->mu);
    return true;
}

/* Context shift of slot s before its next token: keep n_keep, drop
 * n_discard (the request's, or half of the rest), slide the tail down.
 * The tail is first made the slot's own, so sharers never see it move;
 * without free cells for that, the tail is recomputed instead. */
static bool slot_shift(serve_engine *e, serve_slot *s) {
    const serve_task *t = s->task;
    const int32_t keep = s->n_keep;
    const int32_t n_past = s->n_cache;
    const int32_t n_left = n_past - keep;
    int32_t n_discard = t->p.n_discard > 0 ? t->p.n_discard : n_left / 2;
    if (n_discard > n_left) n_discard = n_left;
    if (n_discard < 1) return false;
    cs_status st = cs_kv_seq_own(e->ctx, s->seq, keep + n_discard, n_past);
    while (st == CS_NO_KV_SLOT && entry_evict_lru(e)) {
        st = cs_kv_seq_own(e->ctx, s->seq, keep + n_discard, n_past);
    }
    const bool recompute = st != CS_OK;
    if (!recompute) {
        st = cs_kv_seq_rm(e->ctx, s->seq, keep, keep + n_discard);
        if (st == CS_OK) st = cs_kv_seq_add(e->ctx, s->seq, keep + n_discard, n_past, -n_discard);
        if (st != CS_OK) return false;
    } else {
        /* no room to unshare: drop the tail and evaluate it again */
        cs_kv_seq_rm(e->ctx, s->seq, keep, -1);
    }
    memmove(s->cache + keep, s->cache + keep + n_discard,
            (size_t)(n_past - keep - n_discard) * sizeof(cs_token));
    s->n_cache = n_past - n_discard;
    if (s->n_exact > keep) s->n_exact = keep;
    if (recompute) {
        /* todo = the tail, then what was pending */
        const int32_t n_tail = s->n_cache - keep;
        const int32_t n_rest = s->n_todo - s->i_todo;
        memmove(s->todo + n_tail, s->todo + s->i_todo, (size_t)n_rest * sizeof(cs_token));
        memcpy(s->todo, s->cache + keep, (size_t)n_tail * sizeof(cs_token));
        s->n_todo = n_tail + n_rest;
        s->i_todo = 0;
        s->n_cache = keep;
    }
    s->truncated = true;
    pthread_mutex_lock(&e->mu);
    e->stats.n_context_shifts++;
    pthread_mutex_unlock(&e->mu);
    return true;
}

/* Log-probabilities of the raw logits: the chosen token's and the n_top
 * most likely (descending; ties to the lower id). O(n_vocab * n_top). */
static void token_logprobs(serve_engine *e, const float *logits, cs_token tok, int32_t n_top,
                           serve_token_info *info) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < e->n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < e->n_vocab; i++) sum += exp((double)logits[i] - (double)mx);
    const double lse = (double)mx + log(sum);
    info->logprob = (float)((double)logits[tok] - lse);
    int32_t k = 0;
    for (int32_t i = 0; i < e->n_vocab && n_top > 0; i++) {
        const float v = logits[i];
        if (k == n_top && !(v > info->top_logprob[k - 1])) continue;
        int32_t j = k < n_top ? k++ : n_top - 1;
        while (j > 0 && info->top_logprob[j - 1] < v) {
            info->top_id[j] = info->top_id[j - 1];
            info->top_logprob[j] = info->top_logprob[j - 1];
            j--;
        }
        info->top_id[j] = i;
        info->top_logprob[j] = v;
    }
    info->n_top = k;
    for (int32_t j = 0; j < k; j++) info->top_logprob[j] = (float)((double)info->top_logprob[j] - lse);
}

/* After a decode: sample slot s's next token from batch row s->i_batch and
 * decide whether the task goes on. */
static void slot_sample(serve_engine *e, serve_slot *s) {
    serve_task *t = s->task;
    const float *logits = cs_get_logits_ith(e->ctx, s->i_batch);
    s->i_batch = -1;
    if (!s->t_prompt_done) s->t_prompt_done = now_ns();
    if (t->p.n_predict == 0) {
        slot_release(e, s, SERVE_FINISH_LIMIT);
        return;
    }
    const cs_token tok = cs_sampler_sample(s->smpl, logits);
    if (tok < 0) {
        slot_error(t, 500, "sampling failed: %s", cs_last_error());
        slot_release(e, s, SERVE_FINISH_ERROR);
        return;
    }
    cs_sampler_accept(s->smpl, tok);
    s->n_decoded++;
    if (cs_token_is_eog(e->model, tok) && !t->p.ignore_eos) {
        slot_release(e, s, SERVE_FINISH_EOS);
        return;
    }
    /* the token's text and info */
    const int32_t n = tool_token_piece(e->model, tok, false, &e->piece, &e->piece_cap);
    if (n < 0) { /* a sampled id is in the vocabulary: the piece buffer's allocation */
        slot_error(t, 500, "out of memory");
        slot_release(e, s, SERVE_FINISH_ERROR);
        return;
    }
    if (n > 0) {
        if (s->gen_len + (size_t)n + 1 > s->gen_cap) {
            size_t cap = s->gen_cap ? s->gen_cap * 2 : 1024;
            while (cap < s->gen_len + (size_t)n + 1) cap *= 2;
            char *g = realloc(s->gen, cap);
            if (!g) {
                slot_error(t, 500, "out of memory");
                slot_release(e, s, SERVE_FINISH_ERROR);
                return;
            }
            s->gen = g;
            s->gen_cap = cap;
        }
        memcpy(s->gen + s->gen_len, e->piece, (size_t)n);
        s->gen_len += (size_t)n;
    }
    if (s->n_infos == s->cap_infos) {
        const int32_t cap = s->cap_infos ? s->cap_infos * 2 : 8;
        serve_token_info *p = realloc(s->infos, (size_t)cap * sizeof(*p));
        if (!p) {
            slot_error(t, 500, "out of memory");
            slot_release(e, s, SERVE_FINISH_ERROR);
            return;
        }
        s->infos = p;
        s->cap_infos = cap;
    }
    serve_token_info *info = &s->infos[s->n_infos++];
    memset(info, 0, sizeof(*info));
    info->id = tok;
    if (t->p.logprobs || t->p.n_probs > 0) token_logprobs(e, logits, tok, t->p.n_probs, info);

    /* stop strings: search the new text (and the held-back tail before it) */
    if (t->p.n_stop > 0) {
        const size_t from = s->gen_len > (size_t)n + (size_t)s->max_stop
                                ? s->gen_len - (size_t)n - (size_t)s->max_stop
                                : 0;
        size_t best = SIZE_MAX;
        int32_t which = -1;
        for (int32_t k = 0; k < t->p.n_stop; k++) {
            const size_t sl = strlen(t->p.stop[k]);
            for (size_t at = from; at + sl <= s->gen_len; at++) {
                if (memcmp(s->gen + at, t->p.stop[k], sl) == 0) {
                    if (at < best) best = at, which = k;
                    break;
                }
            }
        }
        if (which >= 0) {
            snprintf(t->stopping_word, sizeof(t->stopping_word), "%s", t->p.stop[which]);
            if (best < s->gen_sent) best = s->gen_sent;
            s->gen_len = best;
            slot_release(e, s, SERVE_FINISH_WORD);
            return;
        }
    }
    if (t->p.n_predict > 0 && s->n_decoded >= t->p.n_predict) {
        slot_release(e, s, SERVE_FINISH_LIMIT);
        return;
    }
    /* n_predict -1: llama-server's cap, prompt + generated tokens up to the
     * model's training context, so a model that never emits EOS stops */
    if (t->p.n_predict < 0 && e->n_ctx_train > 0 &&
        t->n_prompt_used + s->n_decoded >= e->n_ctx_train) {
        s->truncated = true;
        slot_release(e, s, SERVE_FINISH_LIMIT);
        return;
    }
    slot_flush(e, s, false);
    s->todo[0] = tok;
    s->n_todo = 1;
    s->i_todo = 0;
    s->prefill = false;
}

/* ----------------------------------------------------- slot actions */

typedef struct serve_ctl {
    struct serve_ctl *next;
    int32_t slot, action;
    const char *path;
    serve_slot_result *res;
    bool done;
    pthread_cond_t cv;
} serve_ctl;

static const char slot_magic[8] = {'C', 'S', 'S', 'L', 'O', 'T', '1', '\n'};

/* File: magic, uint32 n_tokens, uint32 n_exact, uint64 state bytes, the
 * tokens (int32), the cs_state_seq_save blob (its own header checks the
 * model and cache types). */
static void slot_save(serve_engine *e, serve_slot *s, const char *path, serve_slot_result *res) {
    const size_t n_state = cs_state_seq_size(e->ctx, s->seq);
    const size_t n_tok = (size_t)s->n_cache * sizeof(cs_token);
    const size_t total = sizeof(slot_magic) + 16 + n_tok + n_state;
    unsigned char *buf = malloc(total);
    if (!buf) {
        res->status = 500;
        snprintf(res->msg, sizeof(res->msg), "out of memory (%zu bytes)", total);
        return;
    }
    size_t written = 0;
    const cs_status st = cs_state_seq_save(e->ctx, s->seq, buf + total - n_state, n_state, &written);
    if (st != CS_OK) {
        free(buf);
        res->status = 500;
        snprintf(res->msg, sizeof(res->msg), "saving the slot's state: %s", cs_last_error());
        return;
    }
    const uint32_t nt = (uint32_t)s->n_cache, ne = (uint32_t)s->n_exact;
    const uint64_t ns = (uint64_t)written;
    memcpy(buf, slot_magic, 8);
    memcpy(buf + 8, &nt, 4);
    memcpy(buf + 12, &ne, 4);
    memcpy(buf + 16, &ns, 8);
    memcpy(buf + 24, s->cache, n_tok);
    const size_t len = 24 + n_tok + written;
    /* a temporary name in the same folder, then rename: a reader never
     * sees half a file, a failed write leaves the old file. The name,
     * ".NAME.tmp.PID", starts with '.', which no request's filename may
     * (serve_http.c), so a temporary left by a crash is never restored, and
     * serve_slot_clean_temporaries recognises it at the next start. */
    char tmp[4200];
    const char *slash = strrchr(path, '/');
    if (slash) {
        snprintf(tmp, sizeof(tmp), "%.*s/.%s.tmp.%ld", (int)(slash - path), path, slash + 1,
                 (long)getpid());
    } else {
        snprintf(tmp, sizeof(tmp), ".%s.tmp.%ld", path, (long)getpid());
    }
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(buf, 1, len, f) == len;
    if (f && fflush(f) != 0) ok = false;
    if (f && fsync(fileno(f)) != 0) ok = false;
    if (f && fclose(f) != 0) ok = false;
    if (ok && rename(tmp, path) != 0) ok = false;
    if (!ok) {
        const int err = errno;
        remove(tmp);
        res->status = 500;
        snprintf(res->msg, sizeof(res->msg), "writing the slot file: %s", strerror(err));
    } else {
        res->n_tokens = (int32_t)nt;
        res->n_bytes = (uint64_t)len;
    }
    free(buf);
}

static void slot_restore(serve_engine *e, serve_slot *s, const char *path, serve_slot_result *res) {
    res->status = 400;
    FILE *f = fopen(path, "rb");
    if (!f) {
        res->status = errno == ENOENT ? 404 : 500;
        snprintf(res->msg, sizeof(res->msg), "cannot open the slot file: %s", strerror(errno));
        return;
    }
    unsigned char head[24];
    uint32_t nt = 0, ne = 0;
    uint64_t ns = 0;
    unsigned char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    rewind(f);
    if (size < 24 || fread(head, 1, 24, f) != 24 || memcmp(head, slot_magic, 8) != 0) {
        snprintf(res->msg, sizeof(res->msg), "not a ctxshift slot file (bad magic or shorter than its header)");
        goto out;
    }
    memcpy(&nt, head + 8, 4);
    memcpy(&ne, head + 12, 4);
    memcpy(&ns, head + 16, 8);
    if (nt > (uint32_t)e->cfg->n_ctx_slot) {
        snprintf(res->msg, sizeof(res->msg), "the slot file holds %u tokens; a slot holds %d", nt,
                 (int)e->cfg->n_ctx_slot);
        goto out;
    }
    if (ne > nt) {
        snprintf(res->msg, sizeof(res->msg), "slot file: n_exact %u > n_tokens %u", ne, nt);
        goto out;
    }
    if ((uint64_t)size != 24 + (uint64_t)nt * 4 + ns) {
        snprintf(res->msg, sizeof(res->msg),
                 "slot file size %ld does not match its header (24 + %u tokens + %llu state bytes)",
                 size, nt, (unsigned long long)ns);
        goto out;
    }
    buf = malloc((size_t)size - 24 + 1);
    if (!buf || fread(buf, 1, (size_t)size - 24, f) != (size_t)size - 24) {
        res->status = 500;
        snprintf(res->msg, sizeof(res->msg), "reading the slot file failed");
        goto out;
    }
    const cs_token *toks = (const cs_token *)(const void *)buf;
    for (uint32_t i = 0; i < nt; i++) {
        if (toks[i] < 0 || toks[i] >= e->n_vocab) {
            snprintf(res->msg, sizeof(res->msg), "slot file: token %u = %d is outside the vocabulary", i, (int)toks[i]);
            goto out;
        }
    }
    /* load into the scratch sequence first: a refused blob changes nothing */
    cs_kv_seq_rm(e->ctx, e->scratch, -1, -1);
    cs_status st = cs_state_seq_load(e->ctx, e->scratch, buf + (size_t)nt * 4, (size_t)ns);
    while (st == CS_NO_KV_SLOT && entry_evict_lru(e)) {
        st = cs_state_seq_load(e->ctx, e->scratch, buf + (size_t)nt * 4, (size_t)ns);
    }
    if (st != CS_OK) {
        res->status = st == CS_NO_KV_SLOT ? 503 : st == CS_ERR_NOMEM ? 500 : 400;
        snprintf(res->msg, sizeof(res->msg), "slot file state refused: %s", cs_last_error());
        cs_kv_seq_rm(e->ctx, e->scratch, -1, -1);
        goto out;
    }
    const cs_pos pmin = cs_kv_seq_pos_min(e->ctx, e->scratch), pmax = cs_kv_seq_pos_max(e->ctx, e->scratch);
    if (nt > 0 ? (pmin != 0 || pmax != (cs_pos)nt - 1) : pmax != -1) {
        snprintf(res->msg, sizeof(res->msg),
                 "slot file: its cells hold positions %d..%d, its token list %u tokens", (int)pmin,
                 (int)pmax, nt);
        cs_kv_seq_rm(e->ctx, e->scratch, -1, -1);
        goto out;
    }
    cs_kv_seq_rm(e->ctx, s->seq, -1, -1);
    cs_kv_seq_cp(e->ctx, e->scratch, s->seq, -1, -1);
    cs_kv_seq_rm(e->ctx, e->scratch, -1, -1);
    memcpy(s->cache, toks, (size_t)nt * sizeof(cs_token));
    s->n_cache = (int32_t)nt;
    s->n_exact = (int32_t)ne;
    res->status = 200;
    res->n_tokens = (int32_t)nt;
    res->n_bytes = (uint64_t)size;
out:
    free(buf);
    fclose(f);
}

static void run_ctl(serve_engine *e, serve_ctl *c) {
    serve_slot_result *res = c->res;
    const uint64_t t0 = now_ns();
    serve_slot *s = &e->slots[c->slot];
    res->status = 200;
    if (s->task) {
        res->status = 409;
        snprintf(res->msg, sizeof(res->msg), "slot %d is busy with a request", (int)c->slot);
    } else if (c->action == SERVE_SLOT_SAVE) {
        slot_save(e, s, c->path, res);
    } else if (c->action == SERVE_SLOT_RESTORE) {
        slot_restore(e, s, c->path, res);
    } else {
        res->n_tokens = s->n_cache;
        cs_kv_seq_rm(e->ctx, s->seq, -1, -1);
        s->n_cache = s->n_exact = 0;
    }
    res->ms = (double)(now_ns() - t0) / 1e6;
}

void serve_engine_slot_action(serve_engine *e, int32_t slot, int32_t action, const char *path,
                              serve_slot_result *res) {
    memset(res, 0, sizeof(*res));
    serve_ctl c = {.slot = slot, .action = action, .path = path, .res = res};
    pthread_cond_init(&c.cv, NULL);
    pthread_mutex_lock(&e->mu);
    if (e->stopping || e->draining) {
        res->status = 503;
        snprintf(res->msg, sizeof(res->msg), "the server is shutting down");
    } else {
        c.next = e->ctl;
        e->ctl = &c;
        pthread_cond_signal(&e->cv);
        while (!c.done) pthread_cond_wait(&c.cv, &e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    pthread_cond_destroy(&c.cv);
}

/* Run the waiting slot actions (engine thread). */
static void run_ctls(serve_engine *e) {
    for (;;) {
        pthread_mutex_lock(&e->mu);
        serve_ctl *c = e->ctl;
        if (c) e->ctl = c->next;
        pthread_mutex_unlock(&e->mu);
        if (!c) return;
        run_ctl(e, c);
        pthread_mutex_lock(&e->mu);
        /* /slots shows what the action left before its caller hears back */
        e->snap[c->slot].n_cached_tokens = e->slots[c->slot].n_cache;
        c->done = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&e->mu);
    }
}

/* --------------------------------------------------------- the loop */

/* Length of the common prefix of toks[0, n) and the prompt slot s is
 * evaluating (its cache, then the rest of its todo list). */
static int32_t prefill_common_prefix(const serve_slot *s, const cs_token *toks, int32_t n) {
    int32_t l = common_prefix(s->cache, s->n_cache, toks, n);
    if (l < s->n_cache) return l;
    return l + common_prefix(s->todo + s->i_todo, s->n_todo - s->i_todo, toks + l, n - l);
}

/* Whether task c should wait for a prompt another slot is evaluating:
 * when that prompt shares at least SERVE_DEFER_MIN more tokens with c's
 * than any cached prefix does, c waits until it is cached (the next steps)
 * and then takes those cells instead of computing them a second time: 16
 * clients arriving at once with one system prompt evaluate it once.
 * Cost: O(n_slots * prompt length) per queued task and step. */
enum { SERVE_DEFER_MIN = 32 };
static bool defer_for_prefill(serve_engine *e, const serve_task *c, int32_t best_slot_reuse) {
    int32_t have = best_slot_reuse;
    if (e->n_entries > 0) {
        const int32_t m = prefix_tree_match(e->tree, c->prompt, c->n_prompt, NULL);
        if (m > have) have = m;
    }
    for (int32_t i = 0; i < e->n_slots; i++) {
        const serve_slot *s = &e->slots[i];
        if (!s->task || !s->prefill || s->i_todo >= s->n_todo || !s->task->p.cache_prompt) continue;
        if (s->n_exact != s->n_cache) continue; /* would not become an entry */
        const int32_t l = prefill_common_prefix(s, c->prompt, c->n_prompt);
        if (l >= have + SERVE_DEFER_MIN) return true;
    }
    return false;
}

/* Take queued tasks into free slots. Called with e->mu NOT held. */
static void assign_tasks(serve_engine *e) {
    for (;;) {
        pthread_mutex_lock(&e->mu);
        serve_task *t = NULL;
        int32_t pick = -1;
        for (int32_t q = 0; q < e->q_len && !t; q++) {
            serve_task *c = e->queue[(e->q_head + q) % e->q_cap];
            int32_t slot = -1;
            if (atomic_load(&c->cancelled)) {
                slot = -2;
            } else if (c->deadline_ns && now_ns() > c->deadline_ns) {
                slot = -3; /* --timeout passed while it waited for a slot */
            } else if (c->p.id_slot >= 0) {
                if (!e->slots[c->p.id_slot].task) slot = c->p.id_slot;
            } else {
                /* the free slot whose exact cache shares the longest prefix;
                 * ties: least recently used */
                int32_t best = -1;
                for (int32_t i = 0; i < e->n_slots; i++) {
                    const serve_slot *s = &e->slots[i];
                    if (s->task) continue;
                    const int32_t l = common_prefix(s->cache, s->n_exact, c->prompt, c->n_prompt);
                    if (slot < 0 || l > best ||
                        (l == best && s->last_used < e->slots[slot].last_used)) {
                        slot = i;
                        best = l;
                    }
                }
                if (slot >= 0 && c->p.cache_prompt && defer_for_prefill(e, c, best)) slot = -1;
            }
            if (slot == -1) continue;
            /* remove queue entry q (keep FIFO order of the others) */
            for (int32_t k = q; k + 1 < e->q_len; k++) {
                e->queue[(e->q_head + k) % e->q_cap] = e->queue[(e->q_head + k + 1) % e->q_cap];
            }
            e->q_len--;
            t = c;
            pick = slot;
        }
        e->stats.n_deferred = e->q_len;
        pthread_mutex_unlock(&e->mu);
        if (!t) return;
        if (pick == -2) { /* cancelled while queued */
            serve_task_finish(t);
            serve_task_unref(t);
            continue;
        }
        if (pick == -3) {
            task_fail(t, 503, "the request waited longer than --timeout %d s for a slot",
                      e->cfg->timeout_s);
            serve_task_unref(t);
            continue;
        }
        slot_start(e, &e->slots[pick], t);
    }
}

/* One decode step over all active slots. Returns false when idle. */
static bool engine_step(serve_engine *e) {
    const serve_config *cfg = e->cfg;
    const uint64_t now = now_ns();
    bool any = false;
    for (int32_t i = 0; i < e->n_slots; i++) {
        serve_slot *s = &e->slots[i];
        if (!s->task) continue;
        if (atomic_load(&s->task->cancelled)) {
            slot_release(e, s, SERVE_FINISH_NONE);
            continue;
        }
        if (s->task->deadline_ns && now > s->task->deadline_ns) {
            slot_flush(e, s, true);
            slot_error(s->task, 503, "the request took longer than --timeout %d s", cfg->timeout_s);
            slot_release(e, s, SERVE_FINISH_ERROR);
            continue;
        }
        /* the slot's next token would reach its size: shift or stop */
        if (!s->prefill && s->n_cache + 1 >= cfg->n_ctx_slot) {
            if (!cfg->context_shift || !slot_shift(e, s)) {
                slot_release(e, s, SERVE_FINISH_LIMIT);
                continue;
            }
        }
        any = true;
    }
    if (!any) return false;

    /* batch: generating slots first (one token each), then prompt chunks */
    for (int retry = 0;; retry++) {
        cs_batch_clear(e->batch);
        int32_t budget = cfg->n_batch;
        int32_t chunk_cap = retry == 0 ? cfg->n_batch : cfg->n_batch >> (retry < 16 ? retry : 16);
        if (chunk_cap < 1) chunk_cap = 1;
        int32_t n_rows = 0;
        int32_t take[SERVE_MAX_SEQ] = {0};
        for (int pass = 0; pass < 2; pass++) {
            for (int32_t i = 0; i < e->n_slots && budget > 0; i++) {
                serve_slot *s = &e->slots[i];
                if (!s->task || (pass == 0) == s->prefill) continue;
                int32_t n = s->n_todo - s->i_todo;
                if (n > budget) n = budget;
                if (pass == 1 && n > chunk_cap) n = chunk_cap;
                for (int32_t k = 0; k < n; k++) {
                    const bool last = s->i_todo + k + 1 == s->n_todo;
                    cs_batch_add(e->batch, s->todo[s->i_todo + k], s->n_cache + k, &s->seq, 1, last);
                    if (last) s->i_batch = n_rows;
                    n_rows++;
                }
                take[i] = n;
                budget -= n;
            }
        }
        if (n_rows == 0) return true;
        const int32_t rc = cs_decode(e->ctx, e->batch);
        if (rc == 0) {
            pthread_mutex_lock(&e->mu);
            e->stats.n_decode++;
            for (int32_t i = 0; i < e->n_slots; i++) e->stats.n_busy_slot_steps += take[i] > 0;
            pthread_mutex_unlock(&e->mu);
            for (int32_t i = 0; i < e->n_slots; i++) {
                serve_slot *s = &e->slots[i];
                if (!s->task || take[i] == 0) continue;
                memcpy(s->cache + s->n_cache, s->todo + s->i_todo, (size_t)take[i] * sizeof(cs_token));
                if (s->n_exact == s->n_cache) s->n_exact += take[i];
                s->n_cache += take[i];
                s->i_todo += take[i];
                if (s->prefill) s->n_prompt_eval += take[i];
                if (s->i_todo == s->n_todo && s->prefill && s->task->p.cache_prompt &&
                    s->n_exact == s->n_cache) {
                    /* the evaluated prompt is an entry at once: concurrent
                     * requests with the same prefix share it */
                    entry_insert(e, s, s->n_cache);
                }
            }
            for (int32_t i = 0; i < e->n_slots; i++) {
                serve_slot *s = &e->slots[i];
                if (s->task && s->i_batch >= 0 && take[i] > 0) slot_sample(e, s);
                else s->i_batch = -1;
            }
            return true;
        }
        for (int32_t i = 0; i < e->n_slots; i++) e->slots[i].i_batch = -1;
        if (rc == CS_NO_KV_SLOT) {
            if (entry_evict_lru(e)) continue;
            if (chunk_cap > 1) continue;
        }
        /* nothing left to try: the active tasks fail */
        const char *why = rc == CS_NO_KV_SLOT ? "the KV cache is full" : cs_last_error();
        for (int32_t i = 0; i < e->n_slots; i++) {
            serve_slot *s = &e->slots[i];
            if (!s->task || take[i] == 0) continue;
            slot_error(s->task, 500, "decode failed: %s", why);
            slot_release(e, s, SERVE_FINISH_ERROR);
        }
        return true;
    }
}

static void *engine_main(void *arg) {
    serve_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (e->stopping) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        pthread_mutex_unlock(&e->mu);
        run_ctls(e);
        assign_tasks(e);
        const bool busy = engine_step(e);
        slot_snapshot(e);
        if (!busy) {
            pthread_mutex_lock(&e->mu);
            if (!e->stopping && e->q_len == 0 && !e->ctl) {
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += 100000000L;
                if (until.tv_nsec >= 1000000000L) {
                    until.tv_sec++;
                    until.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&e->cv, &e->mu, &until);
            }
            pthread_mutex_unlock(&e->mu);
        }
    }
    /* shutdown: waiting slot actions and every task end */
    pthread_mutex_lock(&e->mu);
    for (serve_ctl *c = e->ctl; c; c = c->next) {
        c->res->status = 503;
        snprintf(c->res->msg, sizeof(c->res->msg), "the server is shutting down");
        c->done = true;
        pthread_cond_signal(&c->cv);
    }
    e->ctl = NULL;
    pthread_mutex_unlock(&e->mu);
    for (int32_t i = 0; i < e->n_slots; i++) {
        if (e->slots[i].task) {
            slot_error(e->slots[i].task, 503, "the server is shutting down");
            slot_release(e, &e->slots[i], SERVE_FINISH_ERROR);
        }
    }
    pthread_mutex_lock(&e->mu);
    while (e->q_len > 0) {
        serve_task *t = e->queue[e->q_head];
        e->q_head = (e->q_head + 1) % e->q_cap;
        e->q_len--;
        task_fail(t, 503, "the server is shutting down");
        serve_task_unref(t);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ------------------------------------------------------ lifecycle */

int serve_engine_start(const serve_config *cfg, const cs_model *model, serve_engine **out) {
    serve_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        tool_error("serve: out of memory");
        return TOOL_EXIT_FAIL;
    }
    e->cfg = cfg;
    e->model = model;
    e->n_vocab = cs_model_n_vocab(model);
    e->bos = cs_token_bos(model);
    e->add_bos = cs_vocab_add_bos(model);
    e->n_ctx_train = cs_model_n_ctx_train(model);
    e->n_slots = cfg->n_slots;
    e->n_entries = cfg->n_cache_entries;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    int rc = TOOL_EXIT_FAIL;

    tool_common c = tool_common_defaults(0);
    c.n_ctx = cfg->n_ctx;
    c.n_batch = cfg->n_batch;
    c.n_threads = cfg->n_threads;
    c.type_k = cfg->type_k;
    c.type_v = cfg->type_v;
    /* a server's cache is long-lived and fragments: defragment as
     * llama-server does (-dt 0.1), above the library's minimum size */
    c.defrag_thold = 0.1f;
    e->scratch = (cs_seq)(e->n_slots + e->n_entries);
    if ((rc = tool_context_new(model, &c, (uint32_t)(e->n_slots + e->n_entries + 1), &e->ctx)) != 0) goto fail;
    rc = TOOL_EXIT_FAIL;
    if (cs_batch_new(cfg->n_batch, 1, &e->batch) != CS_OK) goto oom;
    e->q_cap = cfg->max_queue;
    e->queue = calloc((size_t)e->q_cap, sizeof(*e->queue));
    e->slots = calloc((size_t)e->n_slots, sizeof(*e->slots));
    e->snap = calloc((size_t)e->n_slots, sizeof(*e->snap));
    e->entries = calloc((size_t)(e->n_entries > 0 ? e->n_entries : 1), sizeof(*e->entries));
    e->tree = prefix_tree_new(e->n_entries > 0 ? e->n_entries : 1);
    e->lp = malloc((size_t)e->n_vocab * sizeof(float));
    e->n_cells = (int32_t)cs_n_ctx(e->ctx);
    e->view = malloc((size_t)e->n_cells * sizeof(cs_kv_cell));
    e->cells = malloc((size_t)e->n_cells + 1);
    if (!e->queue || !e->slots || !e->snap || !e->entries || !e->tree || !e->lp || !e->view ||
        !e->cells) {
        goto oom;
    }
    for (int32_t i = 0; i < e->n_slots; i++) {
        serve_slot *s = &e->slots[i];
        s->id = i;
        s->seq = i;
        s->cap = cfg->n_ctx_slot + 1;
        s->cache = malloc((size_t)s->cap * sizeof(cs_token));
        /* todo holds a prompt (< n_ctx_slot tokens after truncation) or a
         * recomputed tail plus the pending token */
        s->todo = malloc((size_t)(s->cap + 1) * sizeof(cs_token));
        s->i_batch = -1;
        if (!s->cache || !s->todo) goto oom;
    }
    /* the first snapshot (slots, stats, map) before the thread runs: a
     * request may arrive before the engine thread's first step, and must
     * not read zeroed slots */
    slot_snapshot(e);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        tool_error("serve: cannot start the engine thread");
        goto fail;
    }
    e->thread_started = true;
    *out = e;
    return 0;
oom:
    tool_error("serve: out of memory");
fail:
    serve_engine_free(e);
    return TOOL_EXIT_FAIL;
}

void serve_engine_drain(serve_engine *e, int32_t grace_ms) {
    pthread_mutex_lock(&e->mu);
    e->draining = true;
    /* queued tasks never started: they end now (the engine thread only
     * takes tasks from the queue under e->mu, so none is half taken) */
    while (e->q_len > 0) {
        serve_task *t = e->queue[e->q_head];
        e->q_head = (e->q_head + 1) % e->q_cap;
        e->q_len--;
        task_fail(t, 503, "the server is shutting down");
        serve_task_unref(t);
    }
    e->stats.n_deferred = 0;
    pthread_mutex_unlock(&e->mu);
    /* the snapshot is refreshed after every engine step, so a slot that
     * finished shows idle within one step */
    for (int32_t waited = 0; waited < grace_ms; waited += 20) {
        bool busy = false;
        pthread_mutex_lock(&e->mu);
        for (int32_t i = 0; i < e->n_slots; i++) busy = busy || e->snap[i].processing;
        pthread_mutex_unlock(&e->mu);
        if (!busy) return;
        nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    }
}

/* A slot temporary: "." NAME ".tmp." PID, NAME not empty. */
static bool is_slot_temporary(const char *name, long *pid) {
    if (name[0] != '.') return false;
    const char *t = strstr(name + 1, ".tmp.");
    if (!t || t == name + 1) return false;
    /* the last ".tmp." (NAME may hold one itself) */
    for (const char *n; (n = strstr(t + 1, ".tmp.")) != NULL;) t = n;
    const char *d = t + 5;
    if (!*d) return false;
    for (const char *q = d; *q; q++) {
        if (*q < '0' || *q > '9') return false;
    }
    *pid = strtol(d, NULL, 10);
    return true;
}

int32_t serve_slot_clean_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int32_t n = 0;
    const struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        long pid = 0;
        if (!is_slot_temporary(de->d_name, &pid)) continue;
        /* a live writer (another server on the same folder) keeps its
         * temporary; a reused pid only delays the removal */
        if (pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (remove(path) == 0) n++;
    }
    closedir(d);
    return n;
}

void serve_engine_shutdown(serve_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) pthread_join(e->thread, NULL);
    e->thread_started = false;
}

void serve_engine_free(serve_engine *e) {
    if (!e) return;
    serve_engine_shutdown(e);
    for (int32_t i = 0; e->slots && i < e->n_slots; i++) {
        free(e->slots[i].cache);
        free(e->slots[i].todo);
        free(e->slots[i].gen);
        free(e->slots[i].infos);
        cs_sampler_free(e->slots[i].smpl);
    }
    prefix_tree_free(e->tree);
    free(e->entries);
    free(e->slots);
    free(e->snap);
    free(e->queue);
    free(e->lp);
    free(e->piece);
    free(e->view);
    free(e->cells);
    free(e->map);
    cs_batch_free(e->batch);
    cs_context_free(e->ctx);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

void serve_engine_stats(serve_engine *e, serve_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}

int32_t serve_engine_slots(serve_engine *e, serve_slot_info *out, int32_t n_max) {
    pthread_mutex_lock(&e->mu);
    const int32_t n = e->n_slots < n_max ? e->n_slots : n_max;
    memcpy(out, e->snap, (size_t)n * sizeof(*out));
    pthread_mutex_unlock(&e->mu);
    return e->n_slots;
}
