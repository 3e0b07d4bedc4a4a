/* mem.c: the allocation wrappers every module uses, with failure injection
 * for the tests (mem_fail_after): one place to make the N-th allocation
 * fail, so every constructor's CS_ERR_NOMEM path can be exercised. */
#include "mem.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- allocation */

static int64_t g_alloc_fail_after = -1;

void mem_fail_after(int64_t n) {
    g_alloc_fail_after = n;
}

static bool alloc_should_fail(void) {
    if (g_alloc_fail_after < 0) return false;
    if (g_alloc_fail_after == 0) return true;
    g_alloc_fail_after--;
    return false;
}

void *mem_malloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *mem_calloc(size_t n, size_t size) {
    if (alloc_should_fail()) return NULL;
    if (n == 0 || size == 0) return calloc(1, 1);
    return calloc(n, size);
}

void *mem_realloc(void *p, size_t n) {
    if (alloc_should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

void *mem_aligned_alloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}

void mem_free(void *p) {
    free(p);
}

char *mem_strndup(const char *s, size_t n) {
    char *d = mem_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *mem_strdup(const char *s) {
    return mem_strndup(s, strlen(s));
}
