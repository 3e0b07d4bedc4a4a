/* common.h: internal prelude for every file in src/.
 * Always-on assertions for broken internal contracts, checked size
 * arithmetic for untrusted input, error recording and logging. */
#ifndef CS_COMMON_H
#define CS_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctxshift.h"

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
CS_NORETURN void cs_abort_impl(const char *file, int line, const char *expr);
#define CS_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) cs_abort_impl(__FILE__, __LINE__, #cond);                                     \
    } while (0)

/* Record a failure: formats the message into the thread-local last error,
 * sends it to the log callback at ERROR level, and returns status so that
 * callers can write `return cs_fail(CS_ERR_FORMAT, "...", ...)`. */
cs_status cs_fail(cs_status status, const char *fmt, ...) CS_PRINTF(2, 3);

/* Log at a level through the installed callback. */
void cs_log(int32_t level, const char *fmt, ...) CS_PRINTF(2, 3);
#define CS_LOG_ERR(...) cs_log(CS_LOG_ERROR, __VA_ARGS__)
#define CS_LOG_WRN(...) cs_log(CS_LOG_WARN, __VA_ARGS__)
#define CS_LOG_INF(...) cs_log(CS_LOG_INFO, __VA_ARGS__)
#define CS_LOG_DBG(...) cs_log(CS_LOG_DEBUG, __VA_ARGS__)

/* Checked arithmetic: return false on overflow (out untouched then). */
static inline bool cs_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool cs_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}
static inline bool cs_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool cs_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a) return false;
    *out = a + b;
    return true;
}

/* Allocation wrappers. Tests can make the N-th allocation fail
 * (cs_alloc_fail_after) to check that every constructor returns
 * CS_ERR_NOMEM and leaks nothing. Pair cs_malloc/cs_calloc/cs_realloc
 * with cs_free. cs_aligned_alloc returns 64-byte aligned memory. */
void *cs_malloc(size_t n);
void *cs_calloc(size_t n, size_t size);
void *cs_realloc(void *p, size_t n);
void *cs_aligned_alloc(size_t n);
void cs_free(void *p);
char *cs_strdup(const char *s);
char *cs_strndup(const char *s, size_t n);
/* n < 0 disables failure injection; otherwise the allocation after n more
 * successes fails (and every one after it until reset). Test-only. */
void cs_alloc_fail_after(int64_t n);

/* Monotonic time in microseconds. */
int64_t cs_time_us(void);

#endif /* CS_COMMON_H */
