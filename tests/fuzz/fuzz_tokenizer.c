/* libFuzzer entry point: tokenize arbitrary bytes with the bundled model's
 * SPM vocabulary (and parse_special on), detokenize the result. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "ctxshift.h"

#ifndef CS_FUZZ_MODEL
#define CS_FUZZ_MODEL "models/stories260K-f32.gguf"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cs_model *model;
    if (!model) {
        cs_model_params mp = cs_model_default_params();
        mp.vocab_only = true;
        if (cs_model_load(CS_FUZZ_MODEL, &mp, &model) != CS_OK) abort();
    }
    cs_token toks[4096];
    int32_t n = cs_tokenize(model, (const char *)data, size, toks, 4096, size & 1, size & 2);
    if (n > 0) {
        char out[65536];
        (void)cs_detokenize(model, toks, n, out, sizeof out, true);
    }
    return 0;
}
