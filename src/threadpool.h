/* threadpool.h: a fixed pthread pool. threadpool_run runs fn on every
 * thread (the caller is thread 0) and returns when all are done. Work is
 * split by (ith, nth) over independent rows, never across a reduction, so
 * results do not depend on the number of threads. */
#ifndef CS_THREADPOOL_H
#define CS_THREADPOOL_H

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

#endif /* CS_THREADPOOL_H */
