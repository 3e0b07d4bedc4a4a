/* error.c: status names, the thread-local last error, logging, the
 * always-on assertion, allocation wrappers with failure injection, time. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------- statuses */

const char *cs_status_str(cs_status s) {
    switch (s) {
    case CS_OK:
        return "CS_OK";
    case CS_NO_KV_SLOT:
        return "CS_NO_KV_SLOT";
    case CS_ERR_INVALID_ARG:
        return "CS_ERR_INVALID_ARG";
    case CS_ERR_IO:
        return "CS_ERR_IO";
    case CS_ERR_FORMAT:
        return "CS_ERR_FORMAT";
    case CS_ERR_UNSUPPORTED:
        return "CS_ERR_UNSUPPORTED";
    case CS_ERR_NOMEM:
        return "CS_ERR_NOMEM";
    }
    return "CS_STATUS_UNKNOWN";
}

/* ------------------------------------------------------------- logging */

static cs_log_fn g_log_fn;
static void *g_log_user;
static int32_t g_log_level = CS_LOG_WARN;

void cs_log_set(cs_log_fn fn, void *user, int32_t max_level) {
    g_log_fn = fn;
    g_log_user = user;
    g_log_level = max_level;
}

static void log_emit(int32_t level, const char *msg) {
    if (level > g_log_level) return;
    if (g_log_fn) {
        g_log_fn(level, msg, g_log_user);
        return;
    }
    static const char *const names[] = {"error", "warning", "info", "debug"};
    const char *name = (level >= 0 && level <= 3) ? names[level] : "log";
    if (level <= CS_LOG_WARN)
        fprintf(stderr, "%s: %s\n", name, msg);
    else
        fprintf(stderr, "%s\n", msg);
}

void cs_log(int32_t level, const char *fmt, ...) {
    if (level > g_log_level) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_emit(level, buf);
}

/* ---------------------------------------------------------- last error */

static _Thread_local char g_last_error[1024];

const char *cs_last_error(void) {
    return g_last_error;
}

cs_status cs_fail(cs_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    /* Errors reach the caller through the status and cs_last_error(); the
     * log gets them at DEBUG so that a library user is not spammed on
     * stderr for a failure they handle (the tools print the error once). */
    log_emit(CS_LOG_DEBUG, g_last_error);
    return status;
}

void cs_abort_impl(const char *file, int line, const char *expr) {
    fprintf(stderr, "%s:%d: CS_ASSERT(%s) failed\n", file, line, expr);
    fflush(stderr);
    abort();
}

/* ---------------------------------------------------------- allocation */

static int64_t g_alloc_fail_after = -1;

void cs_alloc_fail_after(int64_t n) {
    g_alloc_fail_after = n;
}

static bool alloc_should_fail(void) {
    if (g_alloc_fail_after < 0) return false;
    if (g_alloc_fail_after == 0) return true;
    g_alloc_fail_after--;
    return false;
}

void *cs_malloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *cs_calloc(size_t n, size_t size) {
    if (alloc_should_fail()) return NULL;
    if (n == 0 || size == 0) return calloc(1, 1);
    return calloc(n, size);
}

void *cs_realloc(void *p, size_t n) {
    if (alloc_should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

void *cs_aligned_alloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}

void cs_free(void *p) {
    free(p);
}

char *cs_strndup(const char *s, size_t n) {
    char *d = cs_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *cs_strdup(const char *s) {
    return cs_strndup(s, strlen(s));
}

/* ---------------------------------------------------------------- time */

int64_t cs_time_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
