/* error.c: status names, the thread-local last error, logging and the
 * always-on assertion. */
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

void error_log(int32_t level, const char *fmt, ...) {
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

cs_status error_fail(cs_status status, const char *fmt, ...) {
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

void error_abort(const char *file, int line, const char *expr) {
    fprintf(stderr, "%s:%d: CS_ASSERT(%s) failed\n", file, line, expr);
    fflush(stderr);
    abort();
}
