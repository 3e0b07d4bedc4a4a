/* mem.c: the allocation wrappers every module uses, with failure injection
 * for the tests (mem_fail_after): one place to make the N-th allocation
 * fail, so every constructor's CS_ERR_NOMEM path can be exercised. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, madvise (Linux, BSD) */
#include "mem.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

/* 2 MiB: the x86-64 and arm64 (4 KiB granule) huge page. */
#define HUGE_ALIGN ((size_t)2 << 20)

/* The mapping's length for n bytes: n rounded up to HUGE_ALIGN (0 on
 * overflow). */
static size_t huge_len(size_t n) {
    if (n == 0) n = 1;
    return n > SIZE_MAX - HUGE_ALIGN ? 0 : (n + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1);
}

void *mem_huge_alloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    const size_t len = huge_len(n);
    if (len == 0 || len > SIZE_MAX - HUGE_ALIGN) return NULL;
    /* map one huge page more and trim both ends to the aligned part (the
     * tail is never empty: p < raw + HUGE_ALIGN) */
    uint8_t *raw =
        mmap(NULL, len + HUGE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    munmap(p + len, (size_t)(raw + HUGE_ALIGN - p));
#ifdef MADV_HUGEPAGE
    /* a kernel without transparent huge pages refuses: 4 KiB pages then */
    (void)madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

void mem_huge_free(void *p, size_t n) {
    if (p) munmap(p, huge_len(n));
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
