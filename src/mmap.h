/* mmap.h: a whole file, read-only, in memory: mapped with mmap(2) when
 * possible, else read(2) into a heap buffer. Plus bounds helpers for
 * offsets taken from untrusted files. */
#ifndef CS_MMAP_H
#define CS_MMAP_H

#include "common.h"

typedef struct mmap_file {
    const void *data; /* size bytes; NULL when size is 0 */
    size_t size;      /* file size in bytes */
    bool mapped;      /* true: mmap'd (munmap on free); false: heap copy (mem_huge_alloc) */
} mmap_file;

/* Open path and make its bytes available read-only. use_mmap false (or a
 * failed mmap) reads the file into memory instead (cost: one copy of the
 * file). Only regular files are accepted. Errors: CS_ERR_IO (open, stat,
 * read or a non-regular file; message names the path and errno text),
 * CS_ERR_NOMEM. *out is NULL on failure; free with mmap_free. */
cs_status mmap_open(const char *path, bool use_mmap, mmap_file **out);

/* The caller never reads [p, p + n) (inside data) again: the whole pages
 * inside the range are given back (madvise MADV_DONTNEED). A mapping would
 * map the file's bytes again if they were read; a heap copy (huge pages,
 * mem_huge_alloc) would read zeros. The model loader calls it for each
 * weight it packed into its arena, so the process does not hold
 * both copies. Best effort, O(pages). */
void mmap_release(mmap_file *m, const void *p, size_t n);

/* For a small range copied out of the file: on a mapping, the pages of
 * the 2 MiB-aligned span around [p, p + n) (clipped to the file) are given
 * back. The kernel maps a file's large page-cache folios whole (up to
 * 2 MiB), so reading an 8 KB norm kept up to 2 MiB of its neighbours
 * resident. On a mapping any page given back is read from the file again
 * if needed (the token embedding, another vector); a heap copy is left
 * alone (its pages would read as zeros). O(span pages). */
void mmap_release_span(mmap_file *m, const void *p, size_t n);

/* Unmap or free. NULL is a no-op. Pointers into data die with it. */
void mmap_free(mmap_file *m);

/* True when [off, off + len) lies inside a buffer of size bytes, computed
 * without overflow. O(1). */
bool mmap_range_ok(uint64_t size, uint64_t off, uint64_t len);

/* x rounded up to a multiple of align (a nonzero power of two); false on
 * overflow. */
bool mmap_align_up(uint64_t x, uint64_t align, uint64_t *out);

#endif /* CS_MMAP_H */
