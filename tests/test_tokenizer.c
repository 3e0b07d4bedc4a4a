/* test_tokenizer.c: the SPM and BPE tokenizers against llama.cpp's test
 * vectors (test-tokenizer-0: add_special = false, parse_special = false,
 * inputs separated by "\n__ggml_vocab_test__\n"), the bundled model, round
 * trips, byte fallback, streaming pieces, buffer conventions, hostile bytes
 * and vocabulary validation. */
#include "test.h"

#include "cs_limits.h"
#include "gguf.h"
#include "tokenizer.h"

#define N_RANDOM_STRINGS   2000
#define RANDOM_MAX_LEN     64
#define RANDOM_SEED        0x2545F4914F6CDD1DULL
#define MAX_TEST_TOKENS    4096
#define BUNDLED_BYTE_FIRST 3   /* stories260K: "<0x00>" is token 3, "<0xFF>" token 258 */
#define BUNDLED_SPACE      410 /* stories260K: the token "\u2581" */

typedef struct loaded {
    gguf_file *g;
    tokenizer_vocab *v;
} loaded;

static bool load(const char *path, loaded *l) {
    l->g = NULL;
    l->v = NULL;
    if (!path) return false;
    assert_int_equal(gguf_open(path, &l->g), CS_OK);
    assert_int_equal(tokenizer_load(l->g, &l->v), CS_OK);
    return true;
}

static void unload(loaded *l) {
    tokenizer_free(l->v);
    gguf_close(l->g);
}

static bool load_shared(const char *name, loaded *l) {
    char buf[1024];
    return load(test_shared_path(name, buf, sizeof(buf)), l);
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return s;
}

/* Encode with a buffer big enough for the tests here. */
static int32_t encode(const tokenizer_vocab *v, const char *s, size_t len, cs_token *out,
                      bool add_special, bool parse_special) {
    int32_t n = tokenizer_encode(v, s, len, out, MAX_TEST_TOKENS, add_special, parse_special);
    assert_true(n >= 0);
    return n;
}

/* ------------------------------------------------- llama.cpp vectors */

/* Run every .inp/.out pair of test-tokenizer-0 on the vocab `name`. */
static void check_vectors(const char *name) {
    char path[1024], inp[1100], outp[1100];
    if (!test_shared_path(name, path, sizeof(path))) {
        test_skip(CS_SKIP_REFERENCE, "%s/%s not found", CS_SHARED_DIR, name);
        return;
    }
    loaded l;
    load(path, &l);
    snprintf(inp, sizeof(inp), "%s.inp", path);
    snprintf(outp, sizeof(outp), "%s.out", path);
    size_t ni, no;
    char *si = read_all(inp, &ni), *so = read_all(outp, &no);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof(sep) - 1;

    cs_token *got = malloc(MAX_TEST_TOKENS * sizeof(cs_token));
    assert_non_null(got);
    size_t pos = 0, opos = 0;
    int n_cases = 0;
    while (pos < ni) {
        /* the next input */
        char *next = strstr(si + pos, sep);
        const size_t end = next ? (size_t)(next - si) : ni;
        /* the matching line of expected ids */
        assert_true(opos < no);
        char *eol = memchr(so + opos, '\n', no - opos);
        const size_t oend = eol ? (size_t)(eol - so) : no;
        so[oend] = '\0';
        cs_token want[MAX_TEST_TOKENS];
        int n_want = 0;
        for (char *p = so + opos, *q; *p; p = q) {
            long t = strtol(p, &q, 10);
            if (q == p) break;
            assert_true(n_want < MAX_TEST_TOKENS);
            want[n_want++] = (cs_token)t;
        }
        const int32_t n = encode(l.v, si + pos, end - pos, got, false, false);
        if (n != n_want || memcmp(got, want, (size_t)n * sizeof(cs_token)) != 0) {
            fprintf(stderr, "%s case %d '%.*s': got", name, n_cases, (int)(end - pos), si + pos);
            for (int32_t i = 0; i < n; ++i) fprintf(stderr, " %d", got[i]);
            fprintf(stderr, "\n");
        }
        assert_int_equal(n, n_want);
        assert_memory_equal(got, want, (size_t)n * sizeof(cs_token));
        ++n_cases;
        opos = oend + 1;
        if (!next) break;
        pos = end + sep_len;
    }
    assert_true(n_cases >= 40);
    free(got);
    free(si);
    free(so);
    unload(&l);
}

static void test_tokenizer_llama_spm_vectors(void **state) {
    (void)state;
    check_vectors("models/ggml-vocab-llama-spm.gguf");
}

static void test_tokenizer_gpt2_vectors(void **state) {
    (void)state;
    check_vectors("models/ggml-vocab-gpt-2.gguf");
}

/* ------------------------------------------------------ bundled model */

static void test_tokenizer_bundled_once_upon_a_time(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    /* llama.cpp build 4748: llama-tokenize -p "Once upon a time" */
    const cs_token want[] = {1, 403, 407, 261, 378};
    cs_token got[16];
    const char *s = "Once upon a time";
    assert_int_equal(encode(l.v, s, strlen(s), got, true, false), 5);
    assert_memory_equal(got, want, sizeof(want));
    assert_int_equal(tokenizer_n_tokens(l.v), 512);
    assert_int_equal(tokenizer_bos(l.v), 1);
    assert_int_equal(tokenizer_eos(l.v), 2);
    assert_int_equal(tokenizer_unk(l.v), 0);
    assert_true(tokenizer_add_bos(l.v));
    assert_true(tokenizer_is_eog(l.v, 2));
    assert_false(tokenizer_is_eog(l.v, 1));
    assert_false(tokenizer_is_eog(l.v, -1));
    assert_false(tokenizer_is_eog(l.v, 512));

    /* llama_detokenize(remove_special = false): BOS gives "" and is the first
     * piece, so the space of "\u2581Once" stays */
    char buf[64];
    int32_t n = tokenizer_decode(l.v, got, 5, buf, sizeof(buf), false);
    assert_int_equal(n, 17);
    assert_memory_equal(buf, " Once upon a time", 17);
    n = tokenizer_decode(l.v, got + 1, 4, buf, sizeof(buf), false);
    assert_int_equal(n, 16);
    assert_memory_equal(buf, "Once upon a time", 16);
    n = tokenizer_decode(l.v, got, 5, buf, sizeof(buf), true);
    assert_int_equal(n, 20);
    assert_memory_equal(buf, "<s> Once upon a time", 20);
    unload(&l);
}

static void check_round_trip(const tokenizer_vocab *v, const char *s) {
    cs_token toks[MAX_TEST_TOKENS];
    char buf[4096];
    const int32_t n = encode(v, s, strlen(s), toks, false, false);
    const int32_t m = tokenizer_decode(v, toks, n, buf, sizeof(buf), false);
    assert_int_equal(m, (int32_t)strlen(s));
    assert_memory_equal(buf, s, (size_t)m);
}

static const char *const round_trip_strings[] = {
    "Hello world",
    "  leading spaces and trailing  ",
    "tabs\tand\nnewlines\n\n",
    ("caf\xC3\xA9 na\xC3\xAFve \xC3\x9C" /* the literal ends the \x escape */
     "ber"),
    "\xF0\x9F\xA6\x99 llama \xF0\x9F\x9A\x80\xF0\x9F\x98\x81",
    "\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8 apple \xE5\xB7\xA5\xE4\xBD\x9C",
    "\xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE \xD0\xBD\xD0\xB0",
    "x",
    "1234567890 3.14",
};

static void test_tokenizer_round_trip(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    for (size_t i = 0; i < sizeof(round_trip_strings) / sizeof(round_trip_strings[0]); ++i)
        check_round_trip(l.v, round_trip_strings[i]);
    unload(&l);
    if (load_shared("models/ggml-vocab-llama-spm.gguf", &l)) {
        for (size_t i = 0; i < sizeof(round_trip_strings) / sizeof(round_trip_strings[0]); ++i)
            check_round_trip(l.v, round_trip_strings[i]);
        unload(&l);
    }
    if (load_shared("models/ggml-vocab-gpt-2.gguf", &l)) {
        /* none of these has the " ." / " 's" patterns that clean_spaces removes */
        for (size_t i = 0; i < sizeof(round_trip_strings) / sizeof(round_trip_strings[0]); ++i)
            check_round_trip(l.v, round_trip_strings[i]);
        unload(&l);
    }
}

static void test_tokenizer_byte_fallback(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    /* U+4F60 is not in the 512-token vocabulary: "\u2581" then its 3 bytes */
    const char *s = "\xE4\xBD\xA0";
    cs_token got[8];
    assert_int_equal(encode(l.v, s, 3, got, false, false), 4);
    const cs_token want[] = {BUNDLED_SPACE, BUNDLED_BYTE_FIRST + 0xE4, BUNDLED_BYTE_FIRST + 0xBD,
                             BUNDLED_BYTE_FIRST + 0xA0};
    assert_memory_equal(got, want, sizeof(want));
    unload(&l);
}

/* A multi-byte character split over byte tokens: each piece is one byte and
 * cs_utf8_complete_len holds the incomplete tail back until it is whole. */
static void test_tokenizer_streaming_pieces(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    const char *s = "a\xF0\x9F\xA6\x99"; /* "a" + U+1F999 */
    cs_token got[16];
    const int32_t n = encode(l.v, s, strlen(s), got, false, false);
    char acc[64];
    size_t len = 0, printed = 0;
    int n_held = 0;
    for (int32_t i = 0; i < n; ++i) {
        char p[16];
        const int32_t k = tokenizer_token_to_piece(l.v, got[i], p, sizeof(p), false);
        assert_true(k >= 0);
        memcpy(acc + len, p, (size_t)k);
        len += (size_t)k;
        const size_t ok = cs_utf8_complete_len(acc, len);
        assert_true(ok >= printed && ok <= len);
        if (ok < len) ++n_held;
        printed = ok;
    }
    assert_int_equal(n_held, 3); /* after the 1st, 2nd and 3rd byte of the emoji */
    assert_int_equal(printed, len);
    assert_int_equal(len, strlen(s) + 1); /* the space prefix */
    assert_memory_equal(acc + 1, s, strlen(s));
    /* byte tokens decode to their byte */
    char b;
    assert_int_equal(tokenizer_token_to_piece(l.v, BUNDLED_BYTE_FIRST + 0xF0, &b, 1, false), 1);
    assert_int_equal((uint8_t)b, 0xF0);
    unload(&l);
}

static void test_tokenizer_small_buffers(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    const char *s = "Once upon a time";
    cs_token one[1];
    assert_int_equal(tokenizer_encode(l.v, s, strlen(s), one, 1, true, false), -5);
    assert_int_equal(tokenizer_encode(l.v, s, strlen(s), NULL, 0, true, false), -5);
    assert_int_equal(tokenizer_encode(l.v, "", 0, NULL, 0, false, false), 0);
    cs_token bos_only[2];
    assert_int_equal(tokenizer_encode(l.v, "", 0, bos_only, 2, true, false), 1);
    assert_int_equal(bos_only[0], 1);

    char buf[4] = {'#', '#', '#', '#'};
    /* 403 is "\u2581Once": the piece " Once" needs 5 bytes */
    assert_int_equal(tokenizer_token_to_piece(l.v, 403, buf, 4, false), -5);
    assert_memory_equal(buf, "####", 4);
    char big[8];
    assert_int_equal(tokenizer_token_to_piece(l.v, 403, big, sizeof(big), false), 5);
    assert_memory_equal(big, " Once", 5);
    const cs_token toks[] = {403, 407};
    assert_int_equal(tokenizer_decode(l.v, toks, 2, buf, 4, false), -9);
    assert_int_equal(tokenizer_decode(l.v, toks, 2, NULL, 0, false), -9);
    /* control tokens: "" unless special */
    assert_int_equal(tokenizer_token_to_piece(l.v, 1, big, sizeof(big), false), 0);
    assert_int_equal(tokenizer_token_to_piece(l.v, 1, big, sizeof(big), true), 3);
    assert_memory_equal(big, "<s>", 3);
    unload(&l);
}

static void test_tokenizer_invalid_arguments(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    cs_token t[4];
    char buf[8];
    assert_int_equal(tokenizer_encode(NULL, "a", 1, t, 4, false, false), INT32_MIN);
    assert_int_equal(tokenizer_encode(l.v, NULL, 1, t, 4, false, false), INT32_MIN);
    assert_int_equal(tokenizer_encode(l.v, "a", 1, t, -1, false, false), INT32_MIN);
    assert_int_equal(tokenizer_encode(l.v, "a", 1, NULL, 4, false, false), INT32_MIN);
    /* refused before a byte is read */
    assert_int_equal(tokenizer_encode(l.v, "a", (size_t)INT32_MAX + 1, t, 4, false, false),
                     INT32_MIN);
    assert_int_equal(tokenizer_token_to_piece(l.v, -1, buf, sizeof(buf), false), INT32_MIN);
    assert_int_equal(tokenizer_token_to_piece(l.v, 512, buf, sizeof(buf), false), INT32_MIN);
    const cs_token bad[] = {5, 9999};
    assert_int_equal(tokenizer_decode(l.v, bad, 2, buf, sizeof(buf), false), INT32_MIN);
    assert_int_equal(tokenizer_decode(l.v, bad, -1, buf, sizeof(buf), false), INT32_MIN);
    unload(&l);
    tokenizer_free(NULL);
}

static void test_tokenizer_parse_special(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    cs_token a[64], b[64];
    const char *s = "<s>hi</s>";
    int32_t n = encode(l.v, s, strlen(s), a, false, true);
    const int32_t nh = encode(l.v, "hi", 2, b, false, false);
    /* after a special token the text gets its space prefix again */
    assert_int_equal(n, nh + 2);
    assert_int_equal(a[0], 1);
    assert_memory_equal(a + 1, b, (size_t)nh * sizeof(cs_token));
    assert_int_equal(a[n - 1], 2);
    n = encode(l.v, s, strlen(s), a, false, false);
    for (int32_t i = 0; i < n; ++i) assert_true(a[i] != 1 && a[i] != 2);
    unload(&l);

    if (load_shared("models/ggml-vocab-gpt-2.gguf", &l)) {
        const char *t = "a<|endoftext|>b";
        n = encode(l.v, t, strlen(t), a, false, true);
        assert_int_equal(n, 3);
        assert_int_equal(a[1], 50256);
        assert_true(tokenizer_is_eog(l.v, 50256));
        n = encode(l.v, t, strlen(t), a, false, false);
        assert_true(n > 3);
        for (int32_t i = 0; i < n; ++i) assert_true(a[i] != 50256);
        unload(&l);
    }
}

/* Invalid UTF-8 and NUL bytes: SPM keeps them byte-exact through byte
 * fallback; BPE (like llama.cpp) turns invalid bytes into U+FFFD. */
static void test_tokenizer_hostile_bytes(void **state) {
    (void)state;
    static const char s[] = "a\0b\xFF\xC3(\xE2\x82 \xF4\x90\x80\x80 \xED\xA0\x80 \xC0\x80 z\x80";
    const size_t len = sizeof(s) - 1;
    cs_token toks[256];
    char buf[512];
    loaded l;
    load(test_bundled_model(), &l);
    int32_t n = encode(l.v, s, len, toks, false, true);
    assert_true(n > 0);
    assert_int_equal(tokenizer_decode(l.v, toks, n, buf, sizeof(buf), false), (int32_t)len);
    assert_memory_equal(buf, s, len);
    unload(&l);
    if (load_shared("models/ggml-vocab-gpt-2.gguf", &l)) {
        n = encode(l.v, s, len, toks, true, true);
        assert_true(n > 0);
        assert_true(tokenizer_decode(l.v, toks, n, buf, sizeof(buf), false) > 0);
        unload(&l);
    }
}

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void random_strings(const tokenizer_vocab *v, bool check_round_trip_bytes) {
    uint64_t seed = RANDOM_SEED;
    cs_token toks[MAX_TEST_TOKENS];
    char s[RANDOM_MAX_LEN], buf[4 * RANDOM_MAX_LEN + 64];
    for (int i = 0; i < N_RANDOM_STRINGS; ++i) {
        const size_t len = (size_t)(xorshift(&seed) % (RANDOM_MAX_LEN + 1));
        const bool ascii = i % 2 == 0; /* half printable-heavy, half any byte */
        for (size_t j = 0; j < len; ++j) {
            const uint64_t r = xorshift(&seed);
            s[j] = ascii ? (char)(0x20 + r % 0x60) : (char)(r & 0xFF);
        }
        const int32_t n = encode(v, s, len, toks, i % 3 == 0, i % 5 == 0);
        if (!check_round_trip_bytes || i % 3 == 0 || i % 5 == 0) continue;
        /* U+2581 in the input itself decodes to a space (SPM's escape) */
        bool has_escape = false;
        for (size_t j = 0; j + 2 < len; ++j)
            if (memcmp(s + j, "\xE2\x96\x81", 3) == 0) has_escape = true;
        if (has_escape) continue;
        const int32_t m = tokenizer_decode(v, toks, n, buf, sizeof(buf), false);
        if (m != (int32_t)len) {
            fprintf(stderr, "case %d len %zu:", i, len);
            for (size_t j = 0; j < len; ++j) fprintf(stderr, " %02x", (unsigned)(uint8_t)s[j]);
            fprintf(stderr, "\ntokens:");
            for (int32_t j = 0; j < n; ++j) fprintf(stderr, " %d", toks[j]);
            fprintf(stderr, "\n");
        }
        assert_int_equal(m, (int32_t)len);
        assert_memory_equal(buf, s, len);
    }
}

static void test_tokenizer_random_bytes(void **state) {
    (void)state;
    loaded l;
    load(test_bundled_model(), &l);
    random_strings(l.v, true);
    unload(&l);
    if (load_shared("models/ggml-vocab-llama-spm.gguf", &l)) {
        random_strings(l.v, true);
        unload(&l);
    }
    if (load_shared("models/ggml-vocab-gpt-2.gguf", &l)) {
        random_strings(l.v, false);
        unload(&l);
    }
}

/* ------------------------------------------------- malformed vocabs */

/* A small SPM vocabulary written in memory; `mutate` spoils one thing. */
enum mutation {
    MUT_NONE,
    MUT_MODEL_BERT,
    MUT_NO_TOKENS,
    MUT_SCORES_SHORT,
    MUT_TYPES_SHORT,
    MUT_TYPES_WRONG_TYPE,
    MUT_BOS_OUT_OF_RANGE,
    MUT_EOT_OUT_OF_RANGE,
    MUT_DUPLICATE,
    MUT_TOKEN_TOO_LONG,
    MUT_GPT2_NO_MERGES,
    MUT_GPT2_UNKNOWN_PRE,
    MUT_BOS_NONE_SENTINEL,
};

static cs_status load_mutated(enum mutation mut, tokenizer_vocab **out) {
    static char long_token[CS_MAX_TOKEN_BYTES + 2];
    const char *tokens[8] = {"<unk>", "<s>", "</s>", "a", "b", "ab", "\xE2\x96\x81", "c"};
    float scores[8] = {0, 0, 0, -1, -2, -0.5f, -3, -4};
    int32_t types[8] = {2, 3, 3, 1, 1, 1, 1, 1};
    uint64_t n = 8;
    gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    const char *model = mut == MUT_MODEL_BERT                                        ? "bert"
                        : (mut == MUT_GPT2_NO_MERGES || mut == MUT_GPT2_UNKNOWN_PRE) ? "gpt2"
                                                                                     : "llama";
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", model), CS_OK);
    if (mut == MUT_GPT2_UNKNOWN_PRE) {
        assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre"), CS_OK);
        const char *merges[] = {"a b"};
        assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1), CS_OK);
    }
    if (mut == MUT_DUPLICATE) tokens[7] = "a";
    if (mut == MUT_TOKEN_TOO_LONG) {
        memset(long_token, 'x', sizeof(long_token) - 1);
        tokens[7] = long_token;
    }
    if (mut != MUT_NO_TOKENS)
        assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, n), CS_OK);
    assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
                                         mut == MUT_SCORES_SHORT ? n - 1 : n),
                     CS_OK);
    assert_int_equal(
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type",
                            mut == MUT_TYPES_WRONG_TYPE ? GGUF_TYPE_FLOAT32 : GGUF_TYPE_INT32,
                            types, mut == MUT_TYPES_SHORT ? n - 1 : n),
        CS_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
                                         mut == MUT_BOS_OUT_OF_RANGE    ? 8
                                         : mut == MUT_BOS_NONE_SENTINEL ? UINT32_MAX
                                                                        : 1),
                     CS_OK);
    if (mut == MUT_EOT_OUT_OF_RANGE)
        assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", 100), CS_OK);
    void *data = NULL;
    size_t size = 0;
    assert_int_equal(gguf_writer_write_buffer(w, &data, &size), CS_OK);
    gguf_writer_free(w);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open_buffer(data, size, &g), CS_OK);
    const cs_status st = tokenizer_load(g, out);
    gguf_close(g);
    mem_free(data);
    return st;
}

static void test_tokenizer_malformed_vocab(void **state) {
    (void)state;
    static const struct {
        enum mutation mut;
        cs_status want;
        const char *in_message;
    } cases[] = {
        {MUT_MODEL_BERT, CS_ERR_UNSUPPORTED, "bert"},
        {MUT_NO_TOKENS, CS_ERR_FORMAT, "tokenizer.ggml.tokens"},
        {MUT_SCORES_SHORT, CS_ERR_FORMAT, "tokenizer.ggml.scores"},
        {MUT_TYPES_SHORT, CS_ERR_FORMAT, "tokenizer.ggml.token_type"},
        {MUT_TYPES_WRONG_TYPE, CS_ERR_FORMAT, "tokenizer.ggml.token_type"},
        {MUT_BOS_OUT_OF_RANGE, CS_ERR_FORMAT, "bos_token_id = 8"},
        {MUT_EOT_OUT_OF_RANGE, CS_ERR_FORMAT, "eot_token_id = 100"},
        {MUT_DUPLICATE, CS_ERR_FORMAT, "same text"},
        {MUT_TOKEN_TOO_LONG, CS_ERR_FORMAT, "CS_MAX_TOKEN_BYTES"},
        {MUT_GPT2_NO_MERGES, CS_ERR_FORMAT, "tokenizer.ggml.merges"},
        {MUT_GPT2_UNKNOWN_PRE, CS_ERR_UNSUPPORTED, "no-such-pre"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        tokenizer_vocab *v = (tokenizer_vocab *)(uintptr_t)1;
        assert_int_equal(load_mutated(cases[i].mut, &v), cases[i].want);
        assert_null(v);
        assert_non_null(strstr(cs_last_error(), cases[i].in_message));
    }

    /* the well-formed one works, and the 0xFFFFFFFF sentinel keeps BOS 1 */
    tokenizer_vocab *v = NULL;
    assert_int_equal(load_mutated(MUT_NONE, &v), CS_OK);
    cs_token t[8];
    /* "\u2581ab": "ab" (score -0.5) beats "a"+"b"; "\u2581" stays alone */
    assert_int_equal(tokenizer_encode(v, "ab", 2, t, 8, true, false), 3);
    assert_int_equal(t[0], 1);
    assert_int_equal(t[1], 6);
    assert_int_equal(t[2], 5);
    /* no byte tokens: unknown characters become UNK */
    assert_int_equal(tokenizer_encode(v, "z", 1, t, 8, false, false), 2);
    assert_int_equal(t[1], 0);
    tokenizer_free(v);
    assert_int_equal(load_mutated(MUT_BOS_NONE_SENTINEL, &v), CS_OK);
    assert_int_equal(tokenizer_bos(v), 1);
    tokenizer_free(v);
}

/* Every allocation of load and encode failing in turn: CS_ERR_NOMEM /
 * INT32_MIN, nothing leaked (checked under ASan). */
static void test_tokenizer_alloc_failure(void **state) {
    (void)state;
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(test_bundled_model(), &g), CS_OK);
    tokenizer_vocab *v = NULL;
    int64_t n_fail = 0;
    for (;; ++n_fail) {
        mem_fail_after(n_fail);
        const cs_status st = tokenizer_load(g, &v);
        mem_fail_after(-1);
        if (st == CS_OK) break;
        assert_int_equal(st, CS_ERR_NOMEM);
        assert_null(v);
    }
    assert_true(n_fail > 0);
    const char *s = "Once upon a time \xE4\xBD\xA0 <s>";
    cs_token t[64];
    int64_t k = 0;
    for (;; ++k) {
        mem_fail_after(k);
        const int32_t n = tokenizer_encode(v, s, strlen(s), t, 64, true, true);
        mem_fail_after(-1);
        if (n >= 0) break;
        assert_int_equal(n, INT32_MIN);
    }
    assert_true(k > 0);
    tokenizer_free(v);
    gguf_close(g);
}

/* A 7-token byte-level BPE vocab with merges "3 4" (rank 0), "4 5" (rank 1). */
static tokenizer_vocab *tiny_bpe(const char *pre) {
    const char *tokens[] = {"1", "2", "3", "4", "5", "34", "45"};
    const char *merges[] = {"3 4", "4 5"};
    gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), CS_OK);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", pre), CS_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 7), CS_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 2), CS_OK);
    void *data = NULL;
    size_t size = 0;
    assert_int_equal(gguf_writer_write_buffer(w, &data, &size), CS_OK);
    gguf_writer_free(w);
    gguf_file *g = NULL;
    assert_int_equal(gguf_open_buffer(data, size, &g), CS_OK);
    tokenizer_vocab *v = NULL;
    assert_int_equal(tokenizer_load(g, &v), CS_OK);
    gguf_close(g);
    mem_free(data);
    return v;
}

static void test_tokenizer_bpe_pre_tokenizers(void **state) {
    (void)state;
    cs_token t[8];
    /* gpt-2: "12345" is one piece; rank 0 "3 4" merges first */
    tokenizer_vocab *v = tiny_bpe("gpt-2");
    assert_int_equal(tokenizer_encode(v, "12345", 5, t, 8, true, false), 4);
    const cs_token gpt2[] = {0, 1, 5, 4};
    assert_memory_equal(t, gpt2, sizeof(gpt2));
    assert_false(tokenizer_add_bos(v));
    tokenizer_free(v);
    /* default: its last pass "[0-9][0-9][0-9]" cuts "123" | "45" */
    v = tiny_bpe("default");
    assert_int_equal(tokenizer_encode(v, "12345", 5, t, 8, true, false), 4);
    const cs_token def[] = {0, 1, 2, 6};
    assert_memory_equal(t, def, sizeof(def));
    tokenizer_free(v);
    /* llama3: "\\p{N}{1,3}" cuts "123" | "45" as well; no BOS token here */
    v = tiny_bpe("llama-bpe");
    assert_int_equal(tokenizer_encode(v, "12345", 5, t, 8, true, false), 4);
    assert_memory_equal(t, def, sizeof(def));
    tokenizer_free(v);
    /* qwen2 ("\\p{N}") and smollm (a "\\p{N}" pass before GPT-2's regex):
     * every digit is its own piece, so no merge applies */
    const cs_token digits[] = {0, 1, 2, 3, 4};
    v = tiny_bpe("qwen2");
    assert_int_equal(tokenizer_encode(v, "12345", 5, t, 8, true, false), 5);
    assert_memory_equal(t, digits, sizeof(digits));
    assert_false(tokenizer_add_bos(v));
    tokenizer_free(v);
    v = tiny_bpe("smollm");
    assert_int_equal(tokenizer_encode(v, "12345", 5, t, 8, true, false), 5);
    assert_memory_equal(t, digits, sizeof(digits));
    assert_false(tokenizer_add_bos(v));
    tokenizer_free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_llama_spm_vectors),
        cmocka_unit_test(test_tokenizer_gpt2_vectors),
        cmocka_unit_test(test_tokenizer_bundled_once_upon_a_time),
        cmocka_unit_test(test_tokenizer_round_trip),
        cmocka_unit_test(test_tokenizer_byte_fallback),
        cmocka_unit_test(test_tokenizer_streaming_pieces),
        cmocka_unit_test(test_tokenizer_small_buffers),
        cmocka_unit_test(test_tokenizer_invalid_arguments),
        cmocka_unit_test(test_tokenizer_parse_special),
        cmocka_unit_test(test_tokenizer_hostile_bytes),
        cmocka_unit_test(test_tokenizer_random_bytes),
        cmocka_unit_test(test_tokenizer_malformed_vocab),
        cmocka_unit_test(test_tokenizer_alloc_failure),
        cmocka_unit_test(test_tokenizer_bpe_pre_tokenizers),
    };
    return test_run(tests, NULL, NULL);
}
