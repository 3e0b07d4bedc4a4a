/* gguf_stream.c: tensor-by-tensor GGUF writing (gguf_stream.h). */
#include "gguf_stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct gguf_stream {
    FILE *f;
    char *path;
    const uint64_t *sizes; /* nbytes of each tensor, copied */
    int64_t n_tensors;
    int64_t cur;      /* index of the tensor being written */
    uint64_t written; /* bytes of the current tensor so far */
    uint64_t pos;     /* file offset */
    bool ok;          /* no write failed */
    bool created;     /* path was created: abort removes it */
};

static void stream_put(gguf_stream *s, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, s->f) != n) s->ok = false;
    s->pos += n;
}

static void stream_put_le(gguf_stream *s, uint64_t v, int n) {
    uint8_t b[8];
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
    stream_put(s, b, (size_t)n);
}

static void stream_pad(gguf_stream *s) {
    static const uint8_t zeros[GGUF_STREAM_ALIGNMENT];
    uint64_t n = (GGUF_STREAM_ALIGNMENT - s->pos % GGUF_STREAM_ALIGNMENT) % GGUF_STREAM_ALIGNMENT;
    stream_put(s, zeros, (size_t)n);
}

static void stream_free(gguf_stream *s) {
    mem_free((void *)s->sizes);
    mem_free(s->path);
    mem_free(s);
}

void gguf_stream_abort(gguf_stream *s) {
    if (!s) return;
    if (s->f) fclose(s->f);
    if (s->created) remove(s->path);
    stream_free(s);
}

cs_status gguf_stream_begin(const char *path, const gguf_writer *w, const gguf_stream_tensor *t,
                            int64_t n, gguf_stream **out) {
    cs_status st;
    uint8_t *meta = NULL;
    size_t meta_size = 0;
    gguf_stream *s = NULL;
    uint64_t *sizes = NULL;
    *out = NULL;
    CS_ASSERT(n >= 0 && (n == 0 || t));

    void *buf = NULL;
    if ((st = gguf_writer_write_buffer(w, &buf, &meta_size)) != CS_OK) goto fail;
    meta = buf;
    CS_ASSERT(meta_size >= 24); /* magic, version, n_tensors, n_kv */
    s = mem_calloc(1, sizeof *s);
    sizes = mem_malloc(((size_t)n + 1) * sizeof *sizes);
    if (!s || !sizes || !(s->path = mem_strdup(path))) {
        st = error_fail(CS_ERR_NOMEM, "gguf: out of memory writing '%s'", path);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) sizes[i] = t[i].nbytes;
    s->sizes = sizes;
    sizes = NULL;
    s->n_tensors = n;
    s->ok = true;
    s->f = fopen(path, "wb");
    if (!s->f) {
        st = error_fail(CS_ERR_IO, "gguf: cannot create '%s'", path);
        goto fail;
    }
    s->created = true;
    /* The writer held no tensors: patch the count (bytes 8..15). */
    for (int i = 0; i < 8; i++) meta[8 + i] = (uint8_t)((uint64_t)n >> (8 * i));
    stream_put(s, meta, meta_size);
    uint64_t offset = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t nlen = strlen(t[i].name);
        CS_ASSERT(t[i].n_dims >= 1 && t[i].n_dims <= 4);
        stream_put_le(s, nlen, 8);
        stream_put(s, t[i].name, nlen);
        stream_put_le(s, (uint64_t)t[i].n_dims, 4);
        for (int32_t d = 0; d < t[i].n_dims; d++) stream_put_le(s, (uint64_t)t[i].ne[d], 8);
        stream_put_le(s, (uint64_t)t[i].type, 4);
        stream_put_le(s, offset, 8);
        offset += (t[i].nbytes + GGUF_STREAM_ALIGNMENT - 1) / GGUF_STREAM_ALIGNMENT *
                  GGUF_STREAM_ALIGNMENT;
    }
    stream_pad(s);
    if (!s->ok) {
        st = error_fail(CS_ERR_IO, "gguf: cannot write '%s'", path);
        goto fail;
    }
    mem_free(meta);
    *out = s;
    return CS_OK;

fail:
    if (s) gguf_stream_abort(s);
    mem_free(sizes);
    mem_free(meta);
    return st;
}

cs_status gguf_stream_write(gguf_stream *s, const void *data, size_t n) {
    CS_ASSERT(s->cur < s->n_tensors && n <= s->sizes[s->cur] - s->written);
    stream_put(s, data, n);
    s->written += n;
    return s->ok ? CS_OK : error_fail(CS_ERR_IO, "gguf: cannot write '%s'", s->path);
}

cs_status gguf_stream_end_tensor(gguf_stream *s) {
    CS_ASSERT(s->cur < s->n_tensors && s->written == s->sizes[s->cur]);
    stream_pad(s);
    s->cur++;
    s->written = 0;
    return s->ok ? CS_OK : error_fail(CS_ERR_IO, "gguf: cannot write '%s'", s->path);
}

cs_status gguf_stream_finish(gguf_stream *s) {
    CS_ASSERT(s->cur == s->n_tensors);
    if (fclose(s->f) != 0) s->ok = false;
    s->f = NULL;
    if (!s->ok) {
        cs_status st = error_fail(CS_ERR_IO, "gguf: cannot write '%s'", s->path);
        gguf_stream_abort(s);
        return st;
    }
    stream_free(s);
    return CS_OK;
}
