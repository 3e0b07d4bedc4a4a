/* tokenizer_llama.c: llama.cpp's side of tokenizer_peer_test.sh. Built by
 * that script against the headers of the llama.cpp source node-llama-cpp
 * bundles and its prebuilt libllama (bench/peer), as bench/peer/compare.sh
 * builds native_bench; not part of the CMake build.
 *   tokenizer_llama tokenize VOCAB RECORDS ADD_SPECIAL PARSE_SPECIAL
 *       one line of ids per record (records.h), llama_tokenize
 *   tokenizer_llama eog VOCAB
 *       the ids llama_vocab_is_eog accepts, one line
 * VOCAB is loaded with vocab_only. Exit 1 on any error. */
#include <llama.h>
#include <string.h>

#include "records.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tokenizer_llama tokenize|eog VOCAB [RECORDS ADD PARSE]\n");
        return 1;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    if (!model) {
        fprintf(stderr, "tokenizer_llama: cannot load %s\n", argv[2]);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int rc = 0;
    if (strcmp(argv[1], "eog") == 0) {
        const int32_t n = llama_vocab_n_tokens(vocab);
        for (int32_t t = 0; t < n; ++t)
            if (llama_vocab_is_eog(vocab, t)) printf(" %d", (int)t);
        printf("\n");
    } else if (strcmp(argv[1], "tokenize") == 0 && argc == 6) {
        records r;
        if (records_read(argv[3], &r) != 0) return 1;
        const bool add = atoi(argv[4]) != 0, parse = atoi(argv[5]) != 0;
        size_t cap = 1024;
        llama_token *t = malloc(cap * sizeof(llama_token));
        for (size_t i = 0; i < r.n && rc == 0; ++i) {
            int32_t n = llama_tokenize(vocab, r.data + r.off[i], (int32_t)r.len[i], t, (int32_t)cap,
                                       add, parse);
            if (n < 0 && n != INT32_MIN) {
                cap = (size_t)-n;
                t = realloc(t, cap * sizeof(llama_token));
                n = llama_tokenize(vocab, r.data + r.off[i], (int32_t)r.len[i], t, (int32_t)cap,
                                   add, parse);
            }
            if (n < 0) {
                fprintf(stderr, "tokenizer_llama: llama_tokenize failed on record %zu\n", i);
                rc = 1;
            } else {
                print_tokens(stdout, t, n);
            }
        }
        free(t);
        records_free(&r);
    } else {
        fprintf(stderr, "tokenizer_llama: bad arguments\n");
        rc = 1;
    }
    llama_model_free(model);
    llama_backend_free();
    return rc;
}
