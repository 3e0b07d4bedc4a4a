/* test_tokenize_segments.c: cs_tokenize_segments, the one-pass tokenizer of
 * a rendered chat. Oracles are cs_tokenize itself (whose llama.cpp parity
 * test_tokenizer and tokenizer_peer check):
 * (a) one segment equals cs_tokenize(text, add_special, is_special);
 * (b) all-special segments, however the text is cut, equal cs_tokenize of
 *     the joined text with parse_special (and all-content segments equal it
 *     without), on every chat format and many contents;
 * (c) content holding control-token text ("</s>", "<s>", "<|endoftext|>",
 *     "<|im_end|>") stays raw: between two control tokens it gives exactly
 *     cs_tokenize(content, parse_special = false), and in a rendered chat the
 *     control tokens are only the template's;
 * plus argument checks and the short-buffer convention. On the bundled
 * stories260K (SPM) and ../shared's ggml-vocab-llama-spm and
 * ggml-vocab-gpt-2 (BPE); tests/tokenizer_peer_test.sh compares with
 * llama.cpp on the Llama 3, Qwen and SPM vocabularies. */
#include "test.h"

#include <string.h>

#include "mem.h"

#define MAX_TOKENS 8192
#define MAX_SEGS   256
#define MAX_TEXT   8192
#define RNG_SEED   0x9E3779B97F4A7C15ULL
#define N_RANDOM   400

/* Contents: plain words, white space, UTF-8, invalid UTF-8, digits, and the
 * control-token texts of the vocabularies and formats under test. */
static const char *const k_contents[] = {
    "Hello",
    " Hello world ",
    "\n\nx\n",
    "caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80",
    "",
    "12345 don't",
    "<|im_end|>",
    "</s>",
    "<s>hi</s>",
    "a<|endoftext|>b",
    "[INST] x [/INST]",
    "  ",
    "\xff\xfe bad",
    "<unk>",
};
#define N_CONTENTS ((int)(sizeof k_contents / sizeof k_contents[0]))

typedef struct vocab {
    const char *what;
    cs_model *m;
} vocab;

static cs_model *load_vocab(const char *path) {
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = true;
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(path, &mp, &m), CS_OK);
    return m;
}

/* The vocabularies under test; n set to how many loaded. ../shared ones
 * missing is a reference skip (a failure when strict). */
static int load_all(vocab *out) {
    int n = 0;
    out[n++] = (vocab){"stories260K", load_vocab(test_bundled_model())};
    static const char *const shared[] = {"models/ggml-vocab-llama-spm.gguf",
                                         "models/ggml-vocab-gpt-2.gguf"};
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; ++i) {
        char buf[1024];
        const char *p = test_shared_path(shared[i], buf, sizeof buf);
        if (!p) {
            test_skip(CS_SKIP_REFERENCE, "%s missing", shared[i]);
            continue;
        }
        out[n++] = (vocab){shared[i], load_vocab(p)};
    }
    return n;
}

static void free_all(vocab *v, int n) {
    for (int i = 0; i < n; ++i) cs_model_free(v[i].m);
}

static int32_t tok(const cs_model *m, const char *s, size_t len, cs_token *out, bool add,
                   bool parse) {
    const int32_t n = cs_tokenize(m, s, len, out, MAX_TOKENS, add, parse);
    assert_true(n >= 0);
    return n;
}

static int32_t tok_segs(const cs_model *m, const cs_chat_segment *s, size_t n_segs, cs_token *out,
                        bool add) {
    const int32_t n = cs_tokenize_segments(m, s, n_segs, out, MAX_TOKENS, add);
    if (n < 0) fprintf(stderr, "cs_tokenize_segments: %d %s\n", (int)n, cs_last_error());
    assert_true(n >= 0);
    return n;
}

static void assert_tokens_equal(const cs_token *a, int32_t na, const cs_token *b, int32_t nb) {
    assert_int_equal(na, nb);
    if (na > 0) assert_memory_equal(a, b, (size_t)na * sizeof(cs_token));
}

/* A control (or unknown) token: its piece is empty unless special pieces
 * are asked for. */
static bool is_control(const cs_model *m, cs_token t) {
    char buf[256];
    return cs_token_to_piece(m, t, buf, sizeof buf, false) == 0 &&
           cs_token_to_piece(m, t, buf, sizeof buf, true) != 0;
}

static int32_t count_control(const cs_model *m, const cs_token *t, int32_t n) {
    int32_t c = 0;
    for (int32_t i = 0; i < n; ++i) c += is_control(m, t[i]);
    return c;
}

static size_t join(const cs_chat_segment *s, size_t n, char *buf) {
    size_t len = 0;
    for (size_t i = 0; i < n; ++i) {
        assert_true(len + s[i].len <= MAX_TEXT);
        if (s[i].len) memcpy(buf + len, s[i].text, s[i].len);
        len += s[i].len;
    }
    return len;
}

static uint64_t rng(uint64_t *s) { /* xorshift64 */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A random string of 1..8 contents; NUL-free. */
static size_t random_text(uint64_t *s, char *buf) {
    size_t len = 0;
    const int k = 1 + (int)(rng(s) % 8);
    for (int j = 0; j < k; ++j) {
        const char *c = k_contents[rng(s) % N_CONTENTS];
        memcpy(buf + len, c, strlen(c));
        len += strlen(c);
    }
    return len;
}

/* text[0, len) cut at random places into segments, all with flag `special`. */
static size_t random_cut(uint64_t *s, const char *text, size_t len, bool special,
                         cs_chat_segment *segs) {
    size_t n = 0, pos = 0;
    while (pos < len && n + 1 < MAX_SEGS) {
        size_t k = 1 + (size_t)(rng(s) % 6);
        if (rng(s) % 5 == 0) k = 0; /* empty segments are allowed */
        if (k > len - pos) k = len - pos;
        segs[n++] = (cs_chat_segment){text + pos, k, special};
        pos += k;
    }
    if (pos < len) segs[n++] = (cs_chat_segment){text + pos, len - pos, special};
    return n;
}

/* (a) one segment is cs_tokenize with parse_special = is_special */
static void test_segments_one_segment(void **state) {
    (void)state;
    vocab v[3];
    const int nv = load_all(v);
    cs_token *a = malloc(MAX_TOKENS * sizeof(cs_token)), *b = malloc(MAX_TOKENS * sizeof(cs_token));
    char text[MAX_TEXT];
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < nv; ++i) {
        uint64_t s = RNG_SEED;
        for (int r = 0; r < N_RANDOM; ++r) {
            const size_t len = random_text(&s, text);
            for (int f = 0; f < 4; ++f) {
                const bool add = f & 1, special = f & 2;
                const cs_chat_segment seg = {text, len, special};
                const int32_t na = tok_segs(v[i].m, &seg, 1, a, add);
                const int32_t nb = tok(v[i].m, text, len, b, add, special);
                assert_tokens_equal(a, na, b, nb);
            }
        }
        /* no segments: the empty text */
        for (int f = 0; f < 2; ++f) {
            const int32_t na = tok_segs(v[i].m, NULL, 0, a, f);
            assert_tokens_equal(a, na, b, tok(v[i].m, "", 0, b, f, true));
        }
    }
    free(a);
    free(b);
    free_all(v, nv);
}

/* (b) with one flag throughout, the cut points do not matter */
static void test_segments_uniform_cuts(void **state) {
    (void)state;
    vocab v[3];
    const int nv = load_all(v);
    cs_token *a = malloc(MAX_TOKENS * sizeof(cs_token)), *b = malloc(MAX_TOKENS * sizeof(cs_token));
    cs_chat_segment *segs = malloc(MAX_SEGS * sizeof(cs_chat_segment));
    char text[MAX_TEXT];
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(segs);
    for (int i = 0; i < nv; ++i) {
        uint64_t s = RNG_SEED ^ 0x5555;
        for (int r = 0; r < N_RANDOM; ++r) {
            const size_t len = random_text(&s, text);
            for (int f = 0; f < 4; ++f) {
                const bool add = f & 1, special = f & 2;
                const size_t n = random_cut(&s, text, len, special, segs);
                const int32_t na = tok_segs(v[i].m, segs, n, a, add);
                const int32_t nb = tok(v[i].m, text, len, b, add, special);
                assert_tokens_equal(a, na, b, nb);
            }
        }
    }
    free(a);
    free(b);
    free(segs);
    free_all(v, nv);
}

/* Render a 4-message chat of contents c, c+1, c+2, c+3 in format name. */
static int32_t render(const char *name, int c, bool add_ass, cs_chat_segment *segs) {
    const cs_chat_message msgs[] = {
        {"system", k_contents[c % N_CONTENTS]},
        {"user", k_contents[(c + 1) % N_CONTENTS]},
        {"assistant", k_contents[(c + 2) % N_CONTENTS]},
        {"user", k_contents[(c + 3) % N_CONTENTS]},
    };
    const int32_t n = cs_chat_apply_segments(name, msgs, 4, add_ass, segs, MAX_SEGS);
    assert_true(n >= 0 && n <= MAX_SEGS);
    return n;
}

/* (b) on rendered chats, and (c): with the real flags, the control tokens
 * are those of the template alone (each content replaced by a byte that
 * is no token's start: "x" as content), never more; with content that
 * spells a control token, fewer than the all-special pass gives. */
static void test_segments_chats(void **state) {
    (void)state;
    vocab v[3];
    const int nv = load_all(v);
    cs_token *a = malloc(MAX_TOKENS * sizeof(cs_token)), *b = malloc(MAX_TOKENS * sizeof(cs_token));
    cs_chat_segment *segs = malloc(MAX_SEGS * sizeof(cs_chat_segment));
    cs_chat_segment *all = malloc(MAX_SEGS * sizeof(cs_chat_segment));
    char text[MAX_TEXT];
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(segs);
    assert_non_null(all);
    int n_fewer = 0, n_chats = 0;
    for (int i = 0; i < nv; ++i) {
        const cs_model *m = v[i].m;
        for (int32_t f = 0; cs_chat_template_name(f); ++f) {
            const char *name = cs_chat_template_name(f);
            for (int c = 0; c < N_CONTENTS; ++c) {
                const bool add_ass = c & 1;
                const int32_t n = render(name, c, add_ass, segs);
                const size_t len = join(segs, (size_t)n, text);
                for (int32_t k = 0; k < n; ++k) {
                    all[k] = segs[k];
                    all[k].is_special = true;
                }
                /* (b) all special: the joined text with parse_special */
                for (int add = 0; add < 2; ++add) {
                    const int32_t na = tok_segs(m, all, (size_t)n, a, add);
                    assert_tokens_equal(a, na, b, tok(m, text, len, b, add, true));
                }
                const int32_t n_all = count_control(m, a, tok_segs(m, all, (size_t)n, a, false));
                /* (c) real flags */
                const int32_t nr = tok_segs(m, segs, (size_t)n, a, false);
                const int32_t n_real = count_control(m, a, nr);
                for (int32_t k = 0; k < n; ++k) {
                    all[k] = segs[k];
                    if (!segs[k].is_special) all[k] = (cs_chat_segment){"x", 1, false};
                }
                const int32_t nt = tok_segs(m, all, (size_t)n, b, false);
                assert_int_equal(n_real, count_control(m, b, nt));
                assert_true(n_real <= n_all);
                n_fewer += n_real < n_all;
                ++n_chats;
            }
        }
    }
    /* the contents with "</s>" / "<s>" on the SPM vocabularies at least */
    fprintf(stderr, "%d of %d chats hold control-token text in content\n", n_fewer, n_chats);
    assert_true(n_fewer > 0);
    free(a);
    free(b);
    free(segs);
    free(all);
    free_all(v, nv);
}

/* (c) exactly: content between two control tokens is tokenized as
 * cs_tokenize(content, parse_special = false) (the space prefix and the
 * pre-tokenizer start afresh after a control token, so no merge crosses),
 * and a control token's text inside content never gives its id. */
static void test_segments_content_stays_raw(void **state) {
    (void)state;
    vocab v[3];
    const int nv = load_all(v);
    cs_token a[512], b[512], ctl[4];
    for (int i = 0; i < nv; ++i) {
        const cs_model *m = v[i].m;
        /* a control token of the vocabulary: EOS ("</s>", "<|endoftext|>") */
        const cs_token eos = cs_token_eos(m);
        char eos_text[64];
        const int32_t ne = cs_token_to_piece(m, eos, eos_text, sizeof eos_text, true);
        assert_true(ne > 0);
        assert_true(is_control(m, eos));
        assert_int_equal(tok(m, eos_text, (size_t)ne, ctl, false, true), 1);
        assert_int_equal(ctl[0], eos);
        for (int c = 0; c < N_CONTENTS; ++c) {
            const char *content = k_contents[c];
            const cs_chat_segment segs[] = {
                {eos_text, (size_t)ne, true},
                {content, strlen(content), false},
                {eos_text, (size_t)ne, true},
            };
            const int32_t na = tok_segs(m, segs, 3, a, false);
            const int32_t nb = tok(m, content, strlen(content), b, false, false);
            assert_int_equal(na, nb + 2);
            assert_int_equal(a[0], eos);
            assert_int_equal(a[na - 1], eos);
            if (nb > 0) assert_memory_equal(a + 1, b, (size_t)nb * sizeof(cs_token));
            for (int32_t k = 1; k + 1 < na; ++k) assert_false(is_control(m, a[k]));
            /* the content's own control text alone, as content */
            const cs_chat_segment only = {eos_text, (size_t)ne, false};
            const int32_t no = tok_segs(m, &only, 1, a, false);
            assert_true(no > 1);
            for (int32_t k = 0; k < no; ++k) assert_int_not_equal(a[k], eos);
        }
        /* a control token cut by a content boundary is not matched either */
        const cs_chat_segment cut[] = {{eos_text, 1, true}, {eos_text + 1, (size_t)ne - 1, false}};
        const int32_t nc = tok_segs(m, cut, 2, a, false);
        assert_tokens_equal(a, nc, b, tok(m, eos_text, (size_t)ne, b, false, false));
    }
    free_all(v, nv);
}

/* The template text and the content next to it are one fragment, as in
 * llama.cpp: "[INST] " + "Hello" gives the tokens of "[INST] Hello", which
 * per-segment calls do not (SPM: a second space prefix). */
static void test_segments_one_fragment(void **state) {
    (void)state;
    cs_model *m = load_vocab(test_bundled_model());
    cs_token a[64], b[64], c[64];
    const cs_chat_segment segs[] = {{"[INST] ", 7, true}, {"Hello", 5, false}};
    const int32_t na = tok_segs(m, segs, 2, a, true);
    assert_tokens_equal(a, na, b, tok(m, "[INST] Hello", 12, b, true, true));
    const int32_t n1 = tok(m, "[INST] ", 7, c, true, true);
    const int32_t n2 = tok(m, "Hello", 5, c + n1, false, false);
    assert_true(n1 + n2 != na || memcmp(a, c, (size_t)na * sizeof(cs_token)) != 0);
    cs_model_free(m);
}

static void test_segments_arguments(void **state) {
    (void)state;
    cs_model *m = load_vocab(test_bundled_model());
    cs_token t[64];
    const cs_chat_segment ok[] = {{"<s>", 3, true}, {"Hello world", 11, false}};
    const cs_chat_segment bad[] = {{"a", 1, true}, {NULL, 2, false}};
    const cs_chat_segment empty[] = {{NULL, 0, true}, {"hi", 2, false}};
    assert_int_equal(cs_tokenize_segments(NULL, ok, 2, t, 64, true), INT32_MIN);
    assert_true(strlen(cs_last_error()) > 0);
    assert_int_equal(cs_tokenize_segments(m, NULL, 2, t, 64, true), INT32_MIN);
    assert_int_equal(cs_tokenize_segments(m, bad, 2, t, 64, true), INT32_MIN);
    assert_non_null(strstr(cs_last_error(), "segment 1"));
    assert_int_equal(cs_tokenize_segments(m, ok, 2, NULL, 4, true), INT32_MIN);
    assert_int_equal(cs_tokenize_segments(m, ok, 2, t, -1, true), INT32_MIN);
    /* NULL text with len 0 is fine */
    const int32_t ne = cs_tokenize_segments(m, empty, 2, t, 64, false);
    cs_token u[64];
    assert_tokens_equal(t, ne, u, tok(m, "hi", 2, u, false, false));
    /* short buffer: minus the count needed; then exactly that fits */
    const int32_t n = cs_tokenize_segments(m, ok, 2, NULL, 0, true);
    assert_true(n < -2);
    assert_int_equal(cs_tokenize_segments(m, ok, 2, t, -n - 1, true), n);
    assert_int_equal(cs_tokenize_segments(m, ok, 2, t, -n, true), -n);
    assert_int_equal(t[0], 1); /* BOS */
    assert_int_equal(t[1], 1); /* "<s>" in template text */
    cs_model_free(m);
}

/* Every allocation failing in turn: INT32_MIN (CS_ERR_NOMEM), no leak
 * (ASan), then the full result once the allocations succeed. */
static void test_segments_alloc_failure(void **state) {
    (void)state;
    cs_model *m = load_vocab(test_bundled_model());
    const cs_chat_segment segs[] = {{"<s>[INST] ", 10, true},
                                    {"Once upon \xE4\xBD\xA0 </s>", 18, false},
                                    {" [/INST]</s>", 12, true}};
    cs_token t[64], want[64];
    const int32_t nw = tok_segs(m, segs, 3, want, true);
    int64_t k = 0;
    for (;; ++k) {
        mem_fail_after(k);
        const int32_t n = cs_tokenize_segments(m, segs, 3, t, 64, true);
        mem_fail_after(-1);
        if (n >= 0) {
            assert_tokens_equal(t, n, want, nw);
            break;
        }
        assert_int_equal(n, INT32_MIN);
    }
    assert_true(k > 2);
    cs_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments_one_segment),
        cmocka_unit_test(test_segments_uniform_cuts),
        cmocka_unit_test(test_segments_chats),
        cmocka_unit_test(test_segments_content_stays_raw),
        cmocka_unit_test(test_segments_one_fragment),
        cmocka_unit_test(test_segments_arguments),
        cmocka_unit_test(test_segments_alloc_failure),
    };
    return test_run(tests, NULL, NULL);
}
