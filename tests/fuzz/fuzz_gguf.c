/* libFuzzer entry point: the GGUF parser on arbitrary bytes, then the model
 * loader (cs_model_load, public API) on the same bytes: the binding of
 * tensors to the llama graph, the vocabulary, the Q4_0/Q8_0 repacking. The
 * loader takes a path, so the bytes go to a memfd opened as /proc/self/fd/N
 * (no disk writes; one memfd for the whole run). Built by the fuzz build
 * (clang, -fsanitize=fuzzer,address,undefined); `make test` runs it a few
 * seconds over tests/fuzz/corpus/gguf, `make fuzz` longer. */
#define _GNU_SOURCE /* memfd_create */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctxshift.h"
#include "gguf.h"

/* Writes the input into the memfd, truncated to its size; aborts on an I/O
 * error, which is the harness's, not the loader's. */
static void put_bytes(int fd, const uint8_t *data, size_t size) {
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) abort();
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) abort();
        done += (size_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    gguf_file *g = NULL;
    if (gguf_open_buffer(data, size, &g) != CS_OK) return 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        char buf[256];
        gguf_kv_to_text(g, i, 8, buf, sizeof buf);
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) (void)gguf_tensor_at(g, i)->nbytes;
    gguf_close(g);

    /* Only inputs that parse reach the loader: the rest it would reject in
     * the same parser. */
    if (fd < 0) {
        fd = memfd_create("fuzz_gguf", 0);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    put_bytes(fd, data, size);
    for (int vocab_only = 0; vocab_only < 2; vocab_only++) {
        cs_model_params mp = cs_model_default_params();
        mp.vocab_only = vocab_only != 0;
        cs_model *model = NULL;
        if (cs_model_load(path, &mp, &model) != CS_OK) continue;
        char desc[256];
        (void)cs_model_desc(model, desc, sizeof desc);
        cs_token toks[64];
        int32_t n = cs_tokenize(model, "Once upon a time", 16, toks, 64, true, true);
        if (n > 0) {
            char text[1024];
            (void)cs_detokenize(model, toks, n, text, sizeof text, true);
        }
        cs_model_free(model);
    }
    return 0;
}
