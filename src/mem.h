/* mem.h: allocation wrappers (mem.c). Tests can make the N-th allocation
 * fail (mem_fail_after) to check that every constructor returns
 * CS_ERR_NOMEM and leaks nothing. Pair mem_malloc/mem_calloc/mem_realloc/
 * mem_aligned_alloc/mem_strdup/mem_strndup with mem_free.
 * mem_aligned_alloc returns 64-byte aligned memory. Zero-byte requests
 * return a valid, distinct pointer (never NULL on success). */
#ifndef CS_MEM_H
#define CS_MEM_H

#include <stddef.h>
#include <stdint.h>

void *mem_malloc(size_t n);
void *mem_calloc(size_t n, size_t size);
void *mem_realloc(void *p, size_t n);
void *mem_aligned_alloc(size_t n);
void mem_free(void *p);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);
/* A large, long-lived buffer (the packed weights) of n bytes, zeroed,
 * 2 MiB aligned, in an anonymous mapping with transparent huge pages
 * requested (madvise MADV_HUGEPAGE; 4 KiB pages where the kernel has none
 * or is set to "never"). Why: decoding a token streams every weight once,
 * and with 4 KiB pages the hardware prefetchers stop at every page edge
 * and each page costs a TLB walk (110M F16 decode, 1 thread: +24 % tokens/s,
 * docs/BENCH.md). NULL on failure; free with mem_huge_free(p, n), same n. */
void *mem_huge_alloc(size_t n);
void mem_huge_free(void *p, size_t n);
/* n < 0 disables failure injection; otherwise the allocation after n more
 * successes fails (and every one after it until reset). Test-only. */
void mem_fail_after(int64_t n);

#endif /* CS_MEM_H */
