/* gguf_describe.c: `ctxshift info` backend: a GGUF file as text. */
#include <inttypes.h>
#include <stdio.h>

#include "cs_limits.h"
#include "gguf.h"
#include "types.h"

/* One metadata line's value: enough for any scalar and a summarized array;
 * longer values (chat templates) are cut and end with "...". */
#define DESCRIBE_VALUE_BYTES 4096

cs_status cs_gguf_describe(const char *path, int32_t max_array_items, cs_write_fn write,
                           void *user) {
    if (!path || !write)
        return error_fail(CS_ERR_INVALID_ARG, "gguf describe: path and write must not be NULL");
    gguf_file *g = NULL;
    cs_status st = gguf_open(path, &g); /* validates the whole file before any output */
    if (st != CS_OK) return st;

    char line[DESCRIBE_VALUE_BYTES + CS_MAX_NAME_BYTES + 256];
    char value[DESCRIBE_VALUE_BYTES];
    snprintf(line, sizeof line,
             "GGUF v%" PRIu32 ", %" PRId64 " metadata keys, %" PRId64
             " tensors, data at offset %" PRIu64 "\n",
             gguf_version(g), gguf_n_kv(g), gguf_n_tensors(g), gguf_data_offset(g));
    write(line, user);

    int32_t max_items = max_array_items < 0 ? 0 : max_array_items;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_kv_to_text(g, i, max_items, value, sizeof value);
        /* The key is at most CS_MAX_KEY_BYTES (64 KiB): write it separately
         * so a long key is never cut. */
        write("  ", user);
        write(gguf_kv_key(g, i), user);
        snprintf(line, sizeof line, " (%s) = %s\n", gguf_type_name(gguf_kv_type(g, i)), value);
        write(line, user);
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char shape[128];
        int n = snprintf(shape, sizeof shape, "[");
        for (int32_t d = 0; d < t->n_dims; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        snprintf(shape + n, sizeof shape - (size_t)n, "]");
        snprintf(line, sizeof line, "  %s  %s  %s  %" PRIu64 "\n", t->name, cs_type_name(t->type),
                 shape, t->offset);
        write(line, user);
    }
    gguf_close(g);
    return CS_OK;
}
