/* mmap.c: read-only file mapping with a read() fallback. */
#define _DEFAULT_SOURCE /* madvise (Linux, BSD) */
#include "mmap.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read exactly size bytes from fd into buf; false on error or early EOF
 * (the file shrank under us). Loops because read() may return short. */
static bool mmap_read_all(int fd, uint8_t *buf, size_t size) {
    size_t done = 0;
    while (done < size) {
        size_t chunk = size - done;
        if (chunk > ((size_t)1 << 30)) chunk = (size_t)1 << 30;
        ssize_t r = read(fd, buf + done, chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        done += (size_t)r;
    }
    return true;
}

cs_status mmap_open(const char *path, bool use_mmap, mmap_file **out) {
    cs_status st = CS_OK;
    mmap_file *m = NULL;
    int fd = -1;
    *out = NULL;
    if (!path) return error_fail(CS_ERR_INVALID_ARG, "mmap: path is NULL");

    m = mem_calloc(1, sizeof *m);
    if (!m) {
        st = error_fail(CS_ERR_NOMEM, "mmap: out of memory");
        goto fail;
    }
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        st = error_fail(CS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = error_fail(CS_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = error_fail(CS_ERR_IO, "'%s' is not a regular file", path);
        goto fail;
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        st = error_fail(CS_ERR_IO, "'%s': size %lld does not fit in memory", path,
                        (long long)sb.st_size);
        goto fail;
    }
    m->size = (size_t)sb.st_size;
    if (m->size == 0) goto done; /* mmap refuses length 0; nothing to read */

    if (use_mmap) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            m->data = p;
            m->mapped = true;
            goto done;
        }
        CS_LOG_DBG("mmap of '%s' failed (%s); reading it instead", path, strerror(errno));
    }
    uint8_t *buf = mem_huge_alloc(m->size); /* the weights are read from it */
    if (!buf) {
        st = error_fail(CS_ERR_NOMEM, "cannot allocate %zu bytes to read '%s'", m->size, path);
        goto fail;
    }
    m->data = buf;
    errno = 0;
    if (!mmap_read_all(fd, buf, m->size)) {
        st = error_fail(CS_ERR_IO, "cannot read %zu bytes of '%s': %s", m->size, path,
                        errno ? strerror(errno) : "unexpected end of file");
        goto fail;
    }

done:
    close(fd);
    *out = m;
    return CS_OK;

fail:
    if (fd >= 0) close(fd);
    mmap_free(m);
    return st;
}

void mmap_release(mmap_file *m, const void *p, size_t n) {
    if (n == 0) return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = (uintptr_t)m->data, hi = lo + m->size;
    const uintptr_t a = (uintptr_t)p, b = a + n;
    CS_ASSERT(a >= lo && b <= hi && b >= a);
    /* whole pages only: the partial pages at both ends may hold bytes of
     * the neighbours */
    const uintptr_t a1 = (a + page - 1) & ~(page - 1), b1 = b & ~(page - 1);
    if (b1 > a1) (void)madvise((void *)a1, b1 - a1, MADV_DONTNEED);
}

void mmap_release_span(mmap_file *m, const void *p, size_t n) {
    if (n == 0 || !m->mapped) return;
    const uintptr_t span = (uintptr_t)2 << 20;
    const uintptr_t lo = (uintptr_t)m->data, hi = lo + m->size;
    const uintptr_t a = (uintptr_t)p, b = a + n;
    CS_ASSERT(a >= lo && b <= hi && b >= a);
    uintptr_t a1 = a & ~(span - 1), b1 = (b + span - 1) & ~(span - 1);
    if (a1 < lo) a1 = lo;
    if (b1 > hi || b1 < b) b1 = hi;
    mmap_release(m, (const void *)a1, b1 - a1);
}

void mmap_free(mmap_file *m) {
    if (!m) return;
    if (m->data) {
        if (m->mapped)
            munmap((void *)(uintptr_t)m->data, m->size);
        else
            mem_huge_free((void *)(uintptr_t)m->data, m->size);
    }
    mem_free(m);
}

bool mmap_range_ok(uint64_t size, uint64_t off, uint64_t len) {
    return off <= size && len <= size - off;
}

bool mmap_align_up(uint64_t x, uint64_t align, uint64_t *out) {
    CS_ASSERT(align != 0 && (align & (align - 1)) == 0);
    uint64_t r;
    if (!common_add_u64(x, align - 1, &r)) return false;
    *out = r & ~(align - 1);
    return true;
}
