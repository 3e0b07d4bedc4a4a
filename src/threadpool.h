/* threadpool.h: a fixed pthread pool. threadpool_run runs fn on every
 * thread (the caller is thread 0) and returns when all are done. Work is
 * split over independent rows (by (ith, nth), or in ranges taken from a
 * shared counter), never across a reduction, so results do not depend on
 * the number of threads. */
#ifndef CS_THREADPOOL_H
#define CS_THREADPOOL_H

#include <stdatomic.h>

#include "common.h"

typedef struct threadpool threadpool;
typedef void (*threadpool_task_fn)(void *arg, int32_t ith, int32_t nth);

/* n_threads >= 1 (1 = no extra threads). CS_ERR_NOMEM / CS_ERR_IO on failure. */
cs_status threadpool_new(int32_t n_threads, threadpool **out);
void threadpool_free(threadpool *tp); /* NULL is a no-op */
int32_t threadpool_n_threads(const threadpool *tp);
/* Run fn(arg, ith, nth) for ith in [0, nth) and wait. Not reentrant. */
void threadpool_run(threadpool *tp, threadpool_task_fn fn, void *arg);

/* The [start, end) share of n items for thread ith of nth. */
static inline void threadpool_split(int64_t n, int32_t ith, int32_t nth, int64_t *start,
                                    int64_t *end) {
    int64_t per = (n + nth - 1) / nth;
    int64_t s = per * ith;
    int64_t e = s + per;
    *start = s < n ? s : n;
    *end = e < n ? e : n;
}

/* Work taken from a shared counter: a job cuts its items into
 * threadpool_n_ranges(n, nth) ranges (THREADPOOL_RANGES_PER_THREAD per
 * thread, at most n) and every thread takes the next unit with
 * threadpool_take until none is left. A thread slowed by another process
 * (on a small VM, any other process) then takes fewer units instead of
 * holding the others at the job's end. Which thread computes a unit
 * changes no result. Cost: one relaxed atomic add per unit. */
#define THREADPOOL_RANGES_PER_THREAD 4

static inline int64_t threadpool_n_ranges(int64_t n, int32_t nth) {
    const int64_t r = (int64_t)nth * THREADPOOL_RANGES_PER_THREAD;
    return r < n ? r : n;
}

/* The next of n_units units from *next (initialised to 0 by the job's
 * owner before threadpool_run), or -1 when all are taken. */
static inline int64_t threadpool_take(atomic_int_fast64_t *next, int64_t n_units) {
    const int64_t u = atomic_fetch_add_explicit(next, 1, memory_order_relaxed);
    return u < n_units ? u : -1;
}

#endif /* CS_THREADPOOL_H */
