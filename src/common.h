/* common.h: internal prelude for every file in src/.
 * Always-on assertions for broken internal contracts, checked size
 * arithmetic for untrusted input, error recording and logging (error.c),
 * the allocation wrappers (mem.h) and a monotonic clock. */
#ifndef CS_COMMON_H
#define CS_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ctxshift.h"
#include "mem.h"

#define CS_UNUSED(x) ((void)(x))

#if defined(__GNUC__)
#define CS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CS_NORETURN     __attribute__((noreturn))
#else
#define CS_PRINTF(a, b)
#define CS_NORETURN
#endif

/* Broken internal contract: print file, line, expression and abort. Always
 * on, like GGML_ASSERT; never used for bad input from outside. */
CS_NORETURN void error_abort(const char *file, int line, const char *expr);
#define CS_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) error_abort(__FILE__, __LINE__, #cond);                                       \
    } while (0)

/* Record a failure: formats the message into the thread-local last error,
 * sends it to the log callback at ERROR level, and returns status so that
 * callers can write `return error_fail(CS_ERR_FORMAT, "...", ...)`. */
cs_status error_fail(cs_status status, const char *fmt, ...) CS_PRINTF(2, 3);

/* Log at a level through the installed callback. */
void error_log(int32_t level, const char *fmt, ...) CS_PRINTF(2, 3);
#define CS_LOG_ERR(...) error_log(CS_LOG_ERROR, __VA_ARGS__)
#define CS_LOG_WRN(...) error_log(CS_LOG_WARN, __VA_ARGS__)
#define CS_LOG_INF(...) error_log(CS_LOG_INFO, __VA_ARGS__)
#define CS_LOG_DBG(...) error_log(CS_LOG_DEBUG, __VA_ARGS__)

/* Checked arithmetic: return false on overflow (out untouched then). */
static inline bool common_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool common_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}
static inline bool common_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool common_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a) return false;
    *out = a + b;
    return true;
}

/* Monotonic time in microseconds. */
static inline int64_t common_time_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif /* CS_COMMON_H */
