/* threadpool.c: fixed pool of n-1 worker threads plus the caller.
 *
 * A decode step is a chain of short jobs (8 per layer: the matmuls and
 * attention, a few to a few hundred microseconds each) with a little serial
 * work on the caller in between. Waking a sleeping thread costs tens of
 * microseconds, so the workers stay hot between jobs, as llama.cpp keeps its
 * threads hot for a whole graph:
 *
 *  - start: the caller publishes fn/arg and bumps a generation counter; a
 *    worker polls that counter with a pause instruction (phase HOT, about
 *    TP_HOT_NS), then keeps polling but gives its core away with
 *    sched_yield between polls (phase WARM, up to TP_IDLE_NS after its last
 *    job, so an oversubscribed machine still makes progress), and only then
 *    sleeps on a condition variable. The caller takes the mutex and
 *    broadcasts only when some worker announced that it sleeps;
 *  - finish: each worker decrements a pending counter; the caller polls it
 *    for up to TP_CALLER_SPIN_NS, then sleeps on a second condition variable, which
 *    the last worker signals only when the caller announced that it sleeps
 *    (a sleeping caller frees its core for a worker queued behind another
 *    process on a busy machine).
 * Cost per job with hot threads: a few cache-line transfers (well under a
 * microsecond); after TP_IDLE_NS of idleness one condvar wake-up.
 *
 * Lost wake-ups: a worker going to sleep increments n_sleeping and then
 * re-reads the generation, both under the mutex and seq_cst; the caller
 * bumps the generation and then reads n_sleeping, both seq_cst. One of the
 * two sees the other's write, and when the caller sees a sleeper it
 * broadcasts under the same mutex, so the wake-up cannot fall between the
 * sleeper's check and its wait. The job's end uses the same pattern with
 * caller_waiting and pending. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define TP_PAUSE() __asm__ __volatile__("yield" ::: "memory")
#else
#define TP_PAUSE() ((void)0)
#endif

/* Poll with pause only, this long after the last job (or since the wait
 * began): covers the gaps inside one decode step. */
#define TP_HOT_NS 100000LL
/* Then poll with sched_yield until this long, then sleep. Covers the gap
 * between two decode steps (sampling, detokenising). */
#define TP_IDLE_NS 1000000LL
/* The caller polls for the end of a job this long, then sleeps. Short: the
 * threads of a decode job end within microseconds of each other on a quiet
 * machine, and on a busy one a polling caller keeps its core from a worker
 * queued behind another process (measured with a busy loop beside a 2-thread
 * decode of a 110M Q8_0 model on 2 cores: 80 tokens/s with 10 us, 44 with
 * 100 us; no loss on a quiet machine). */
#define TP_CALLER_SPIN_NS 10000LL
/* Pauses between two reads of the clock (a clock read costs ~20 ns, a
 * pause 10-150 cycles depending on the core). */
#define TP_POLLS_PER_CLOCK 64

/* Fields written by different threads sit on different cache lines (the
 * pad arrays), so polling one does not slow down writing another. */
struct threadpool {
    int32_t n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_start;
    pthread_cond_t cv_done;
    threadpool_task_fn fn; /* published by the generation bump (release) */
    void *arg;
    char pad0[64];
    atomic_uint_fast64_t generation; /* written by the caller only */
    char pad1[64];
    atomic_int pending; /* workers still running the current job */
    char pad2[64];
    atomic_int n_sleeping;     /* workers inside (or entering) the condvar wait */
    atomic_int caller_waiting; /* the caller sleeps on cv_done for the job's end */
    atomic_bool stop;
    char pad3[64];
};

typedef struct {
    threadpool *tp;
    int32_t ith;
} worker_arg;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Poll until the generation differs from seen; HOT, then WARM, then sleep.
 * Returns the new generation. */
static uint64_t wait_for_job(threadpool *tp, uint64_t seen) {
    const int64_t t0 = now_ns();
    bool warm = false;
    for (;;) {
        for (int i = 0; i < TP_POLLS_PER_CLOCK; i++) {
            uint64_t gen = atomic_load_explicit(&tp->generation, memory_order_acquire);
            if (gen != seen) return gen;
            TP_PAUSE();
        }
        if (warm) sched_yield();
        const int64_t idle = now_ns() - t0;
        if (idle >= TP_IDLE_NS) break;
        warm = idle >= TP_HOT_NS;
    }
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->n_sleeping, 1);
    while (!atomic_load(&tp->stop) && atomic_load(&tp->generation) == seen)
        pthread_cond_wait(&tp->cv_start, &tp->mu);
    atomic_fetch_sub(&tp->n_sleeping, 1);
    pthread_mutex_unlock(&tp->mu);
    return atomic_load_explicit(&tp->generation, memory_order_acquire);
}

static void *worker_main(void *p) {
    threadpool *tp = ((worker_arg *)p)->tp;
    const int32_t ith = ((worker_arg *)p)->ith;
    mem_free(p);
    uint64_t seen = 0;
    for (;;) {
        seen = wait_for_job(tp, seen);
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) break;
        tp->fn(tp->arg, ith, tp->n_threads);
        /* seq_cst, paired with the caller's caller_waiting store */
        if (atomic_fetch_sub(&tp->pending, 1) == 1 && atomic_load(&tp->caller_waiting)) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->cv_done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
    return NULL;
}

/* The caller's wait for the workers: poll for up to TP_CALLER_SPIN_NS, then
 * sleep on cv_done until the last worker signals it. Sleeping frees this
 * core: on a machine busy with other processes a worker may be queued
 * behind one of them, and an idle core lets the scheduler run it at once. */
static void wait_for_workers(threadpool *tp) {
    int64_t t0 = -1;
    for (;;) {
        for (int i = 0; i < TP_POLLS_PER_CLOCK; i++) {
            if (atomic_load_explicit(&tp->pending, memory_order_acquire) == 0) return;
            TP_PAUSE();
        }
        const int64_t t = now_ns();
        if (t0 < 0)
            t0 = t;
        else if (t - t0 >= TP_CALLER_SPIN_NS)
            break;
    }
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->caller_waiting, 1); /* seq_cst, then re-read pending */
    while (atomic_load(&tp->pending) > 0) pthread_cond_wait(&tp->cv_done, &tp->mu);
    atomic_store(&tp->caller_waiting, 0);
    pthread_mutex_unlock(&tp->mu);
}

cs_status threadpool_new(int32_t n_threads, threadpool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    threadpool *tp = mem_calloc(1, sizeof *tp);
    if (!tp) return error_fail(CS_ERR_NOMEM, "threadpool: out of memory");
    tp->n_threads = 1; /* threads started so far, for threadpool_free */
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv_start, NULL);
    pthread_cond_init(&tp->cv_done, NULL);
    atomic_init(&tp->generation, 0);
    atomic_init(&tp->pending, 0);
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->caller_waiting, 0);
    atomic_init(&tp->stop, false);
    if (n_threads > 1) {
        tp->threads = mem_calloc((size_t)n_threads - 1, sizeof *tp->threads);
        if (!tp->threads) goto nomem;
        for (int32_t i = 1; i < n_threads; i++) {
            worker_arg *wa = mem_malloc(sizeof *wa);
            if (!wa) goto nomem;
            wa->tp = tp;
            wa->ith = i;
            /* workers read n_threads only inside a job, after this loop */
            if (pthread_create(&tp->threads[i - 1], NULL, worker_main, wa) != 0) {
                mem_free(wa);
                threadpool_free(tp);
                return error_fail(CS_ERR_IO, "threadpool: cannot create thread %d of %d", i,
                                  n_threads);
            }
            tp->n_threads = i + 1;
        }
    }
    *out = tp;
    return CS_OK;
nomem:
    threadpool_free(tp);
    return error_fail(CS_ERR_NOMEM, "threadpool: out of memory for %d threads", n_threads);
}

void threadpool_free(threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, true);
    atomic_fetch_add(&tp->generation, 1);
    pthread_cond_broadcast(&tp->cv_start);
    pthread_mutex_unlock(&tp->mu);
    if (tp->threads)
        for (int32_t i = 1; i < tp->n_threads; i++) pthread_join(tp->threads[i - 1], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv_start);
    pthread_cond_destroy(&tp->cv_done);
    mem_free(tp->threads);
    mem_free(tp);
}

int32_t threadpool_n_threads(const threadpool *tp) {
    return tp ? tp->n_threads : 1;
}

void threadpool_run(threadpool *tp, threadpool_task_fn fn, void *arg) {
    if (!tp || tp->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->pending, tp->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&tp->generation, 1); /* seq_cst: publishes fn, arg, pending */
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv_start);
        pthread_mutex_unlock(&tp->mu);
    }
    fn(arg, 0, tp->n_threads);
    wait_for_workers(tp);
}
