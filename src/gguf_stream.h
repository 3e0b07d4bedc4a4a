/* gguf_stream.h: write a GGUF file tensor by tensor, for writers whose
 * tensors are too big to hold (gen_model.c, quantize.c). The keys come from
 * a gguf_writer that holds no tensors; the tensor infos are declared up
 * front; then each tensor's bytes are appended in declaration order. The
 * layout is the one gguf_writer_write_file produces: version 3, tensor data
 * offsets padded to GGUF_STREAM_ALIGNMENT, data section aligned to it (so
 * the keys must not set general.alignment). Memory: the key section. */
#ifndef CS_GGUF_STREAM_H
#define CS_GGUF_STREAM_H

#include "gguf.h"

#define GGUF_STREAM_ALIGNMENT 32

typedef struct gguf_stream_tensor {
    const char *name; /* borrowed until gguf_stream_begin returns */
    int32_t type;
    int32_t n_dims; /* 1..4 */
    int64_t ne[4];
    uint64_t nbytes; /* bytes of data the caller will append */
} gguf_stream_tensor;

typedef struct gguf_stream gguf_stream;

/* Create path and write the header, the keys of w, the n tensor infos and
 * the padding before the data section. CS_ERR_IO when the file cannot be
 * created or written (the file is removed then), CS_ERR_NOMEM. */
cs_status gguf_stream_begin(const char *path, const gguf_writer *w, const gguf_stream_tensor *t,
                            int64_t n, gguf_stream **out);
/* Append n bytes of the current tensor (the first one not yet ended).
 * CS_ERR_IO on a write error; CS_ASSERT when more than its nbytes. */
cs_status gguf_stream_write(gguf_stream *s, const void *data, size_t n);
/* End the current tensor (all its nbytes written) and pad. */
cs_status gguf_stream_end_tensor(gguf_stream *s);
/* After the last tensor: flush and close. CS_ERR_IO (file removed) when
 * any write failed. Frees s in every case. */
cs_status gguf_stream_finish(gguf_stream *s);
/* Close and remove the file; frees s. NULL is a no-op. */
void gguf_stream_abort(gguf_stream *s);

#endif /* CS_GGUF_STREAM_H */
