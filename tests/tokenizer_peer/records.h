/* records.h: the string file both tokenizer_peer tools read. A record is a
 * little-endian u32 byte count, then that many bytes (any bytes: invalid
 * UTF-8 and NULs travel as they are). Both tools print one line per record,
 * " id id ...\n", the format of llama.cpp's test-tokenizer-0 .out files.
 * Header-only so the llama.cpp tool, built outside CMake, shares it. */
#ifndef CS_TOKENIZER_PEER_RECORDS_H
#define CS_TOKENIZER_PEER_RECORDS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct records {
    char *data;    /* the whole file */
    size_t *off;   /* record i starts at data + off[i] */
    uint32_t *len; /* and has len[i] bytes */
    size_t n;
} records;

/* Reads path into r; returns 0, or -1 with a message on stderr (a short or
 * truncated file included). O(file size). */
static inline int records_read(const char *path, records *r) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    rewind(f);
    r->data = malloc(size > 0 ? (size_t)size : 1);
    size_t cap = 1024;
    r->off = malloc(cap * sizeof(size_t));
    r->len = malloc(cap * sizeof(uint32_t));
    r->n = 0;
    if (size < 0 || !r->data || !r->off || !r->len ||
        fread(r->data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "%s: cannot read\n", path);
        fclose(f);
        return -1;
    }
    fclose(f);
    for (size_t pos = 0; pos < (size_t)size;) {
        if ((size_t)size - pos < 4) {
            fprintf(stderr, "%s: truncated record header at %zu\n", path, pos);
            return -1;
        }
        const unsigned char *p = (const unsigned char *)r->data + pos;
        const uint32_t n =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if ((size_t)size - pos - 4 < n) {
            fprintf(stderr, "%s: truncated record at %zu\n", path, pos);
            return -1;
        }
        if (r->n == cap) {
            cap *= 2;
            r->off = realloc(r->off, cap * sizeof(size_t));
            r->len = realloc(r->len, cap * sizeof(uint32_t));
            if (!r->off || !r->len) return -1;
        }
        r->off[r->n] = pos + 4;
        r->len[r->n] = n;
        ++r->n;
        pos += 4 + (size_t)n;
    }
    return 0;
}

static inline void records_free(records *r) {
    free(r->data);
    free(r->off);
    free(r->len);
}

static inline void print_tokens(FILE *out, const int32_t *t, int32_t n) {
    for (int32_t i = 0; i < n; ++i) fprintf(out, " %d", (int)t[i]);
    fputc('\n', out);
}

#endif
