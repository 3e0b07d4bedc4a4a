/* libFuzzer entry point: tokenize arbitrary bytes with one of several
 * vocabularies, detokenize the result. Byte 0 picks the vocabulary (modulo
 * N_VOCABS): 0, the bundled stories260K SPM vocabulary (through the public
 * API); 1, a synthetic SPM vocabulary (byte fallback, user-defined and
 * control tokens); 2-6, a synthetic byte-level BPE vocabulary ("gpt2": the
 * 256 byte tokens, a few merges, control tokens) with the pre-tokenizers
 * default, gpt-2, llama3, qwen2 and smollm (through the internal tokenizer
 * API, loaded from GGUF files built in memory at start-up with the GGUF
 * writer, as tests/test_tokenizer.c builds its vocabularies). WPM and UGM
 * vocabularies are refused by the loader (CS_ERR_UNSUPPORTED), so none here.
 * Byte 1: bit 0 add_special, bit 1 parse_special, bit 2 detokenize with
 * special pieces. The rest is the text.
 * Invariants: the size query (n_max 0) returns minus the count that the
 * call with that exact room then returns, with the same tokens as a call
 * with ample room; every id is in the vocabulary; detokenize with the room
 * its size query asked for succeeds, as with ample room; for the BPE vocabularies that keep
 * spaces as they are (qwen2, smollm), valid UTF-8 tokenized without
 * special handling detokenizes to itself. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxshift.h"
#include "gguf.h"
#include "mem.h"
#include "tokenizer.h"

#ifndef CS_FUZZ_MODEL
#define CS_FUZZ_MODEL "models/stories260K-f32.gguf"
#endif

enum { N_VOCABS = 7, N_BPE_PRE = 5 };

static const char *const bpe_pre[N_BPE_PRE] = {"default", "gpt-2", "llama3", "qwen2", "smollm"};

static cs_model *model;
static tokenizer_vocab *vocabs[N_VOCABS]; /* [0] unused: the bundled model */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_tokenizer: check failed at line %d: %s\n", __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for
 * themselves, the others for U+0100 + n; written as UTF-8 (2 bytes max). */
static void byte_token(int b, char out[3]) {
    const bool self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    int cp = b;
    if (!self) {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

static tokenizer_vocab *load_vocab(gguf_writer *w) {
    void *data = NULL;
    size_t size = 0;
    gguf_file *g = NULL;
    tokenizer_vocab *v = NULL;
    if (gguf_writer_write_buffer(w, &data, &size) != CS_OK) abort();
    gguf_writer_free(w);
    if (gguf_open_buffer(data, size, &g) != CS_OK || tokenizer_load(g, &v) != CS_OK) {
        fprintf(stderr, "fuzz_tokenizer: synthetic vocabulary: %s\n", cs_last_error());
        abort();
    }
    gguf_close(g);
    mem_free(data);
    return v;
}

/* SPM: <unk> <s> </s>, the 256 byte tokens, a few pieces, a user-defined
 * and a control token. */
static tokenizer_vocab *synthetic_spm(void) {
    static const char *const pieces[] = {
        "\xE2\x96\x81", "\xE2\x96\x81t", "\xE2\x96\x81the",          "he",       "th",        "in",
        "\xC3\xA9",     "\xE6\x88\x91",  "\xE2\x96\x81\xE2\x96\x81", "<|user|>", "<|im_end|>"};
    enum { N_PIECES = sizeof pieces / sizeof pieces[0], N = 3 + 256 + N_PIECES };
    static char bytes[256][7];
    const char *tokens[N];
    float scores[N];
    int32_t types[N];
    tokens[0] = "<unk>", tokens[1] = "<s>", tokens[2] = "</s>";
    types[0] = 2, types[1] = 3, types[2] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[3 + b] = bytes[b];
        types[3 + b] = 6;
    }
    for (int i = 0; i < N_PIECES; i++) {
        tokens[3 + 256 + i] = pieces[i];
        types[3 + 256 + i] = 1;
    }
    types[N - 2] = 4; /* user-defined */
    types[N - 1] = 3; /* control */
    for (int i = 0; i < N; i++) scores[i] = -(float)i;
    gguf_writer *w = NULL;
    if (gguf_writer_new(&w) != CS_OK ||
        gguf_writer_set_str(w, "tokenizer.ggml.model", "llama") != CS_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, N) != CS_OK ||
        gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, N) != CS_OK ||
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, N) != CS_OK ||
        gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1) != CS_OK ||
        gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2) != CS_OK ||
        gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0) != CS_OK)
        abort();
    return load_vocab(w);
}

/* Byte-level BPE: the 256 byte tokens, merged tokens, control tokens. */
static tokenizer_vocab *synthetic_bpe(const char *pre) {
    /* "Ġ" is the byte token of ' ', "Ã©" the two byte tokens of "é" */
    static const char *const merges[] = {"Ġ t", "h e", "Ġt he", "i n", "Ġ a",
                                         "1 2", "Ã ©", "Ġ Ġ",   "Ċ Ċ", "Ġthe re"};
    static const char *const merged[] = {"Ġt", "he", "Ġthe", "in", "Ġa",
                                         "12", "Ã©", "ĠĠ",   "ĊĊ", "Ġthere"};
    static const char *const control[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                          "<|eot_id|>"};
    enum {
        N_MERGES = sizeof merges / sizeof merges[0],
        N_CONTROL = sizeof control / sizeof control[0],
        N = 256 + N_MERGES + N_CONTROL
    };
    static char bytes[256][3];
    const char *tokens[N];
    int32_t types[N];
    for (int b = 0; b < 256; b++) {
        byte_token(b, bytes[b]);
        tokens[b] = bytes[b];
        types[b] = 1;
    }
    for (int i = 0; i < N_MERGES; i++) tokens[256 + i] = merged[i], types[256 + i] = 1;
    for (int i = 0; i < N_CONTROL; i++)
        tokens[256 + N_MERGES + i] = control[i], types[256 + N_MERGES + i] = 3;
    gguf_writer *w = NULL;
    if (gguf_writer_new(&w) != CS_OK ||
        gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2") != CS_OK ||
        gguf_writer_set_str(w, "tokenizer.ggml.pre", pre) != CS_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, N) != CS_OK ||
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, N) != CS_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, N_MERGES) != CS_OK ||
        gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256 + N_MERGES) != CS_OK ||
        gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 256 + N_MERGES) != CS_OK)
        abort();
    return load_vocab(w);
}

static void setup(void) {
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = true;
    if (cs_model_load(CS_FUZZ_MODEL, &mp, &model) != CS_OK) abort();
    vocabs[1] = synthetic_spm();
    for (int i = 0; i < N_BPE_PRE; i++) vocabs[2 + i] = synthetic_bpe(bpe_pre[i]);
}

static int32_t encode(int k, const char *s, size_t len, cs_token *t, int32_t n_max, bool add,
                      bool parse) {
    return k == 0 ? cs_tokenize(model, s, len, t, n_max, add, parse)
                  : tokenizer_encode(vocabs[k], s, len, t, n_max, add, parse);
}

static int32_t decode(int k, const cs_token *t, int32_t n, char *buf, size_t size, bool special) {
    return k == 0 ? cs_detokenize(model, t, n, buf, size, special)
                  : tokenizer_decode(vocabs[k], t, n, buf, size, special);
}

/* Strict UTF-8: no overlong forms, no surrogates, at most U+10FFFF. */
static bool valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > n) return false;
        uint32_t cp = len == 1 ? c : c & (0x7F >> len);
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model) setup();
    if (size < 2) return 0;
    const int k = data[0] % N_VOCABS;
    const bool add = data[1] & 1, parse = data[1] & 2, special = data[1] & 4;
    const char *text = (const char *)data + 2;
    const size_t len = size - 2;
    const int32_t n_vocab = k == 0 ? cs_model_n_vocab(model) : tokenizer_n_tokens(vocabs[k]);

    /* the size query, then exactly that room, then ample room */
    cs_token none[1];
    const int32_t q = encode(k, text, len, none, 0, add, parse);
    CHECK(q <= 0 && q != INT32_MIN);
    const int32_t need = -q;
    cs_token *t = malloc(((size_t)need + 1) * sizeof *t);
    /* ample: an invalid byte can become U+FFFD, three byte tokens */
    cs_token *t2 = malloc(((size_t)need + 16) * sizeof *t2);
    CHECK(t && t2);
    CHECK(encode(k, text, len, t, need, add, parse) == need);
    CHECK(encode(k, text, len, t2, need + 16, add, parse) == need);
    CHECK(memcmp(t, t2, (size_t)need * sizeof *t) == 0);
    for (int32_t i = 0; i < need; i++) CHECK(t[i] >= 0 && t[i] < n_vocab);
    if (need > 0) {
        CHECK(encode(k, text, len, t2, need - 1, add, parse) == q);
        char nothing[1];
        const int32_t dq = decode(k, t, need, nothing, 0, special);
        CHECK(dq <= 0);
        /* the room asked for suffices; the result can be shorter (the
         * clean-up of spaces before punctuation runs after the query, as
         * in llama.cpp) and equals the one with ample room */
        const size_t room = (size_t)-dq, big = 2 * room + 16;
        char *out = malloc(room + 1), *out2 = malloc(big);
        CHECK(out && out2);
        const int32_t r = decode(k, t, need, out, room, special);
        CHECK(r >= 0 && (size_t)r <= room);
        CHECK(decode(k, t, need, out2, big, special) == r);
        CHECK(memcmp(out, out2, (size_t)r) == 0);
        free(out2);
        /* byte-level BPE keeping spaces: lossless on valid UTF-8 */
        if (k >= 5 && !add && !parse && valid_utf8((const uint8_t *)text, len)) {
            if ((size_t)r != len || memcmp(out, text, len) != 0) {
                fprintf(stderr, "fuzz_tokenizer: %s round trip: %zu bytes in, %d out\n",
                        bpe_pre[k - 2], len, r);
                abort();
            }
        }
        free(out);
    }
    free(t);
    free(t2);
    return 0;
}
