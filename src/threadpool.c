/* threadpool.c: fixed pool of n-1 worker threads plus the caller. One
 * generation counter under a mutex starts a job; workers spin briefly, then
 * sleep on a condition variable, so a decode step of a tiny model is not
 * dominated by wake-up latency. Cost per run: one broadcast + one barrier. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>

struct cs_threadpool {
    int32_t n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_start;
    pthread_cond_t cv_done;
    cs_task_fn fn;
    void *arg;
    atomic_uint_fast64_t generation;
    atomic_int pending;
    bool stop;
};

typedef struct {
    cs_threadpool *tp;
    int32_t ith;
} worker_arg;


static void *worker_main(void *p) {
    cs_threadpool *tp = ((worker_arg *)p)->tp;
    int32_t ith = ((worker_arg *)p)->ith;
    cs_free(p);
    uint64_t seen = 0;
    for (;;) {
        /* spin a little before sleeping: decode steps come back to back */
        uint64_t gen = 0;
        for (int spin = 0; spin < 20000; spin++) {
            gen = atomic_load_explicit(&tp->generation, memory_order_acquire);
            if (gen != seen) break;
        }
        if (gen == seen) {
            pthread_mutex_lock(&tp->mu);
            while (!tp->stop && atomic_load(&tp->generation) == seen)
                pthread_cond_wait(&tp->cv_start, &tp->mu);
            pthread_mutex_unlock(&tp->mu);
            gen = atomic_load(&tp->generation);
        }
        if (tp->stop) break;
        seen = gen;
        tp->fn(tp->arg, ith, tp->n_threads);
        if (atomic_fetch_sub(&tp->pending, 1) == 1) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->cv_done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
    return NULL;
}

cs_status cs_threadpool_new(int32_t n_threads, cs_threadpool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    cs_threadpool *tp = cs_calloc(1, sizeof *tp);
    if (!tp) return cs_fail(CS_ERR_NOMEM, "threadpool: out of memory");
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv_start, NULL);
    pthread_cond_init(&tp->cv_done, NULL);
    atomic_init(&tp->generation, 0);
    atomic_init(&tp->pending, 0);
    if (n_threads > 1) {
        tp->threads = cs_calloc((size_t)n_threads - 1, sizeof *tp->threads);
        if (!tp->threads) goto nomem;
        for (int32_t i = 1; i < n_threads; i++) {
            worker_arg *wa = cs_malloc(sizeof *wa);
            if (!wa) {
                tp->n_threads = i;
                goto nomem;
            }
            wa->tp = tp;
            wa->ith = i;
            if (pthread_create(&tp->threads[i - 1], NULL, worker_main, wa) != 0) {
                cs_free(wa);
                tp->n_threads = i;
                cs_threadpool_free(tp);
                return cs_fail(CS_ERR_IO, "threadpool: cannot create thread %d of %d", i,
                               n_threads);
            }
        }
    }
    *out = tp;
    return CS_OK;
nomem:
    cs_threadpool_free(tp);
    return cs_fail(CS_ERR_NOMEM, "threadpool: out of memory for %d threads", n_threads);
}

void cs_threadpool_free(cs_threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    tp->stop = true;
    atomic_fetch_add(&tp->generation, 1);
    pthread_cond_broadcast(&tp->cv_start);
    pthread_mutex_unlock(&tp->mu);
    if (tp->threads)
        for (int32_t i = 1; i < tp->n_threads; i++) pthread_join(tp->threads[i - 1], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv_start);
    pthread_cond_destroy(&tp->cv_done);
    cs_free(tp->threads);
    cs_free(tp);
}

int32_t cs_threadpool_n_threads(const cs_threadpool *tp) { return tp ? tp->n_threads : 1; }

void cs_threadpool_run(cs_threadpool *tp, cs_task_fn fn, void *arg) {
    if (!tp || tp->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store(&tp->pending, tp->n_threads - 1);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->generation, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv_start);
    pthread_mutex_unlock(&tp->mu);
    fn(arg, 0, tp->n_threads);
    /* wait for the workers: spin first, then sleep */
    for (int spin = 0; spin < 100000 && atomic_load(&tp->pending) > 0; spin++) {
    }
    if (atomic_load(&tp->pending) > 0) {
        pthread_mutex_lock(&tp->mu);
        while (atomic_load(&tp->pending) > 0) pthread_cond_wait(&tp->cv_done, &tp->mu);
        pthread_mutex_unlock(&tp->mu);
    }
}
