/* libFuzzer entry point: the GGUF parser on arbitrary bytes, and the model
 * loader's binding on top of it when the bytes parse. Build and run with
 * `make fuzz` (clang, -fsanitize=fuzzer,address,undefined). */
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *g = NULL;
    if (gguf_open_buffer(data, size, &g) == CS_OK) {
        for (int64_t i = 0; i < gguf_n_kv(g); i++) {
            char buf[256];
            gguf_kv_to_text(g, i, 8, buf, sizeof buf);
        }
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) (void)gguf_tensor_at(g, i)->nbytes;
        gguf_close(g);
    }
    return 0;
}
