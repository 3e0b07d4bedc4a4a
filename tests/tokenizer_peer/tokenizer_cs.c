/* tokenizer_cs.c: ctxshift's side of tokenizer_peer_test.sh, and its
 * helpers (built by CMake as tokenizer_peer_cs):
 *   tokenize VOCAB RECORDS ADD_SPECIAL PARSE_SPECIAL
 *       one line of ids per record (records.h), cs_tokenize
 *   eog VOCAB               the ids cs_token_is_eog accepts, one line
 *   gen OUT N SEED          N generated strings: code, digit runs, whitespace
 *                           runs, emoji, CJK, accents, contractions, special
 *                           token texts, invalid UTF-8, mixed
 *   split-inp INP OUT       llama.cpp's test-tokenizer-0 .inp file as records
 *   set-pre IN OUT PRE      a copy of the GGUF IN with tokenizer.ggml.pre = PRE
 *   chat-gen OUT SET        the rendered chats (every format, every chat of
 *                           chats.h and N_RANDOM_CHATS generated ones, with
 *                           and without the assistant prompt) as records;
 *                           SET: all, clean, all-utf8, clean-utf8 (see
 *                           chat_in_set)
 *   chat-tokenize VOCAB SET FLAGS
 *                           the same chats by cs_tokenize_segments
 *                           (add_special on), one line each; FLAGS: special
 *                           (every segment is_special) or real
 *   chat-raw VOCAB          with the real flags, a chat's control tokens are
 *                           those of its template alone (contents replaced
 *                           by "x"); prints how many chats had control-token
 *                           text in content that stayed raw
 * Exit 1 on any error. */
#include <string.h>

#include "../chat_template_peer/chats.h"
#include "ctxshift.h"
#include "gguf.h"
#include "records.h"

static cs_model *load_vocab(const char *path) {
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = true;
    cs_model *m = NULL;
    if (cs_model_load(path, &mp, &m) != CS_OK) {
        fprintf(stderr, "tokenizer_peer_cs: %s: %s\n", path, cs_last_error());
        return NULL;
    }
    return m;
}

static int cmd_tokenize(const char *vocab, const char *path, bool add, bool parse) {
    cs_model *m = load_vocab(vocab);
    records r;
    if (!m || records_read(path, &r) != 0) return 1;
    int32_t cap = 1024;
    cs_token *t = malloc((size_t)cap * sizeof(cs_token));
    int rc = 0;
    for (size_t i = 0; i < r.n && rc == 0; ++i) {
        int32_t n = cs_tokenize(m, r.data + r.off[i], r.len[i], t, cap, add, parse);
        if (n < 0 && n != INT32_MIN) {
            cap = -n;
            t = realloc(t, (size_t)cap * sizeof(cs_token));
            n = cs_tokenize(m, r.data + r.off[i], r.len[i], t, cap, add, parse);
        }
        if (n < 0) {
            fprintf(stderr, "tokenizer_peer_cs: cs_tokenize failed on record %zu: %s\n", i,
                    cs_last_error());
            rc = 1;
        } else {
            print_tokens(stdout, t, n);
        }
    }
    free(t);
    records_free(&r);
    cs_model_free(m);
    return rc;
}

static int cmd_eog(const char *vocab) {
    cs_model *m = load_vocab(vocab);
    if (!m) return 1;
    for (int32_t t = 0; t < cs_model_n_vocab(m); ++t)
        if (cs_token_is_eog(m, t)) printf(" %d", (int)t);
    printf("\n");
    cs_model_free(m);
    return 0;
}

static void put_record(FILE *f, const char *s, size_t n) {
    const unsigned char h[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                                (unsigned char)(n >> 24)};
    fwrite(h, 1, 4, f);
    fwrite(s, 1, n, f);
}

static uint64_t rng(uint64_t *s) { /* xorshift64 */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Fragments the generated strings are made of; each class the issue names. */
static const char *const fragments[] = {
    /* code */
    "int main(void) {\n\treturn 0;\n}", "for (i = 0; i < n; ++i) x[i] += y[i];",
    "def f(x):\n    return x**2", "if (a && !b) { c = a->d[3]; }", "#include <stdio.h>",
    "const x = () => { return [1, 2, 3]; };", "SELECT * FROM t WHERE id = 42;", "    // comment\n",
    "std::vector<int> v{1,2};", "$x = @arr[0]; # perl",
    /* digits */
    "0", "7", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "2024-01-31",
    "0x1F", "\xd9\xa3\xd9\xa4",
    /* Arabic-Indic digits */ "\xe2\x85\xab", /* Roman numeral twelve (Nl) */
    "\xc2\xb2",                               /* superscript two (No) */
    /* whitespace runs */
    " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "  \n\n  ",
    " \t \n", "\xc2\xa0", /* NBSP */ "\xe3\x80\x80",
    /* ideographic space */ "\xe2\x80\x83", /* em space */
    /* words, contractions, case */
    "Hello", " world", "HELLO", "don't", "I'LL", "we've", "you'd", "it's", "THEY'RE", "'s", "'S",
    "'t", " the", "a", "Lorem ipsum dolor sit amet", "camelCaseWord", "snake_case_word",
    "URL:https://x.org/a?b=c",
    /* accents and other scripts */
    "caf\xc3\xa9", "na\xc3\xafve", "\xc3\x85ngstr\xc3\xb6m",
    "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", "\xce\xb1\xce\xb2\xce\xb3",
    "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d", "\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7",
    "\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87", /* Devanagari, marks
                                                                                 */
    "e\xcc\x81", /* e + combining acute */
    /* CJK */
    "\xe4\xbd\xa0\xe5\xa5\xbd", "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
    "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf",
    "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", "\xe3\x80\x82", "\xef\xbc\x8c", /* CJK punctuation */
    /* emoji */
    "\xf0\x9f\x98\x80", "\xf0\x9f\xa6\x99", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd",
    "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7", /* ZWJ family */
    "\xf0\x9f\x87\xab\xf0\x9f\x87\xb7", /* flag */ "\xe2\x9d\xa4\xef\xb8\x8f",  /* heart + VS16 */
    /* punctuation and symbols */
    "!!!", "...", "?!", "---", "==>", "<=", "(", ")]}", "\"quoted\"", "\xe2\x80\x94",
    "\xe2\x82\xac"
    "5",
    /* special token texts (split only with parse_special) */
    "<|eot_id|>", "<|im_end|>", "<|im_start|>", "<|begin_of_text|>", "<|endoftext|>", "<think>",
    /* invalid UTF-8; every risky lead byte is followed by ASCII (see gen) */
    "\x80", "\xbf",
    "\xc0"
    "a",
    "\xc3"
    "(",
    "\xe2\x82"
    "x",
    "\xf0\x9f\x98"
    "y",
    "\xff"
    "z",
    "\xfe"
    " ",
    "\xed\xa0\x80", /* a surrogate, CESU-style */ "\xc1\xbf", /* overlong */
};

/* Writes n strings: each 1..10 random fragments, sometimes a random printable
 * ASCII run; deterministic for a seed. Never a 4-byte lead F4..FF followed by
 * three continuation bytes: llama.cpp throws on code points past U+10FFFF
 * (ctxshift maps them to U+FFFD), a documented divergence not tested here. */
static int cmd_gen(const char *path, long n, uint64_t seed) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    const size_t n_frag = sizeof(fragments) / sizeof(fragments[0]);
    uint64_t s = seed ? seed : 1;
    char buf[4096];
    for (long i = 0; i < n; ++i) {
        size_t len = 0;
        const int k = 1 + (int)(rng(&s) % 10);
        for (int j = 0; j < k; ++j) {
            const char *frag;
            char tmp[16];
            if (rng(&s) % 8 == 0) { /* a random ASCII run */
                const int m = 1 + (int)(rng(&s) % 12);
                for (int c = 0; c < m; ++c) tmp[c] = (char)(32 + rng(&s) % 95);
                tmp[m] = '\0';
                frag = tmp;
            } else {
                frag = fragments[rng(&s) % n_frag];
            }
            const size_t fl = strlen(frag);
            if (len + fl < sizeof(buf)) {
                memcpy(buf + len, frag, fl);
                len += fl;
            }
        }
        put_record(f, buf, len);
    }
    return fclose(f) == 0 ? 0 : 1;
}

static int cmd_split_inp(const char *in, const char *out) {
    FILE *f = fopen(in, "rb");
    if (!f) {
        perror(in);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    rewind(f);
    char *s = malloc((size_t)size + 1);
    if (!s || fread(s, 1, (size_t)size, f) != (size_t)size) return 1;
    s[size] = '\0';
    fclose(f);
    FILE *o = fopen(out, "wb");
    if (!o) return 1;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    for (char *p = s;;) {
        char *q = strstr(p, sep);
        const size_t n = q ? (size_t)(q - p) : (size_t)(s + size - p);
        put_record(o, p, n);
        if (!q || q + strlen(sep) >= s + size) break;
        p = q + strlen(sep);
    }
    free(s);
    return fclose(o) == 0 ? 0 : 1;
}

static int cmd_set_pre(const char *in, const char *out, const char *pre) {
    gguf_file *g = NULL;
    gguf_writer *w = NULL;
    if (gguf_open(in, &g) != CS_OK || gguf_writer_new(&w) != CS_OK) {
        fprintf(stderr, "tokenizer_peer_cs: %s: %s\n", in, cs_last_error());
        return 1;
    }
    cs_status st = CS_OK;
    for (int64_t i = 0; i < gguf_n_kv(g) && st == CS_OK; ++i)
        if (strcmp(gguf_kv_key(g, i), "tokenizer.ggml.pre") != 0) st = gguf_writer_copy_kv(w, g, i);
    if (st == CS_OK) st = gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    if (st == CS_OK) st = gguf_writer_write_file(w, out);
    if (st != CS_OK) fprintf(stderr, "tokenizer_peer_cs: %s: %s\n", out, cs_last_error());
    gguf_writer_free(w);
    gguf_close(g);
    return st == CS_OK ? 0 : 1;
}

/* ------------------------------------------------------------ chats */

#define N_RANDOM_CHATS 40
#define MAX_CHAT_SEGS  256
#define MAX_CHAT_TEXT  (64 * 1024)

typedef struct chat_buf {
    int n;
    cs_chat_message msgs[6];
    char content[6][512];
} chat_buf;

/* Chat c: k_chats[c] (chats.h), else a generated one (1..6 messages of
 * random roles, each 0..4 fragments: code, digits, white space, UTF-8,
 * invalid UTF-8, special token texts), deterministic in c. */
static void make_chat(int c, chat_buf *cb) {
    if (c < N_CHATS) {
        cb->n = k_chats[c].n;
        for (int i = 0; i < cb->n; ++i)
            cb->msgs[i] = (cs_chat_message){k_chats[c].msgs[i].role, k_chats[c].msgs[i].content};
        return;
    }
    static const char *const roles[] = {"system", "user", "assistant"};
    const size_t n_frag = sizeof(fragments) / sizeof(fragments[0]);
    uint64_t s = 0x9E3779B97F4A7C15ULL * (uint64_t)(c + 1);
    cb->n = 1 + (int)(rng(&s) % 6);
    for (int i = 0; i < cb->n; ++i) {
        size_t len = 0;
        const int k = (int)(rng(&s) % 5);
        for (int j = 0; j < k; ++j) {
            const char *f = fragments[rng(&s) % n_frag];
            const size_t fl = strlen(f);
            if (len + fl < sizeof cb->content[i]) {
                memcpy(cb->content[i] + len, f, fl);
                len += fl;
            }
        }
        cb->content[i][len] = '\0';
        cb->msgs[i] = (cs_chat_message){roles[rng(&s) % 3], cb->content[i]};
    }
}

/* Whether s is valid UTF-8 (shortest forms, no surrogates, <= U+10FFFF). */
static bool valid_utf8(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        const unsigned c = *s;
        int n = c < 0x80                 ? 0
                : c >= 0xC2 && c <= 0xDF ? 1
                : c >= 0xE0 && c <= 0xEF ? 2
                : c >= 0xF0 && c <= 0xF4 ? 3
                                         : -1;
        if (n < 0) return false;
        uint32_t cp = n == 0 ? c : n == 1 ? c & 0x1F : n == 2 ? c & 0x0F : c & 0x07;
        for (int i = 1; i <= n; ++i) {
            if ((s[i] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        s += n + 1;
    }
    return true;
}

/* SET "all" keeps every chat; one naming "clean" only those whose contents
 * hold no '<' (no control-token text); one naming "utf8" only those whose
 * contents are valid UTF-8 (SPM splits invalid bytes differently from
 * llama.cpp, a divergence documented in src/tokenizer.c). */
static bool chat_in_set(const chat_buf *cb, const char *set) {
    for (int i = 0; i < cb->n; ++i) {
        if (strstr(set, "clean") && strchr(cb->msgs[i].content, '<')) return false;
        if (strstr(set, "utf8") && !valid_utf8(cb->msgs[i].content)) return false;
    }
    return true;
}

/* Tokens of segs[0, n) into *t (grown as needed); count, or -1. */
static int32_t tokenize_segs(const cs_model *m, const cs_chat_segment *segs, int32_t n,
                             cs_token **t, int32_t *cap, bool add) {
    int32_t k = cs_tokenize_segments(m, segs, (size_t)n, *t, *cap, add);
    if (k < 0 && k != INT32_MIN) {
        *cap = -k;
        *t = realloc(*t, (size_t)*cap * sizeof(cs_token));
        k = cs_tokenize_segments(m, segs, (size_t)n, *t, *cap, add);
    }
    if (k < 0) fprintf(stderr, "tokenizer_peer_cs: cs_tokenize_segments: %s\n", cs_last_error());
    return k < 0 ? -1 : k;
}

/* A control (or unknown) token: an empty piece unless special pieces are
 * asked for. */
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

/* what: "gen" (arg = OUT), "tokenize" or "raw" (arg = VOCAB). */
static int cmd_chat(const char *what, const char *arg, const char *set, bool real) {
    const bool gen = strcmp(what, "gen") == 0, raw = strcmp(what, "raw") == 0;
    cs_model *m = gen ? NULL : load_vocab(arg);
    FILE *f = gen ? fopen(arg, "wb") : NULL;
    if (gen ? !f : !m) return 1;
    cs_chat_segment *segs = malloc(MAX_CHAT_SEGS * sizeof(cs_chat_segment));
    char *text = malloc(MAX_CHAT_TEXT);
    int32_t cap = 1024, cap2 = 1024;
    cs_token *t = malloc((size_t)cap * sizeof(cs_token)),
             *t2 = malloc((size_t)cap2 * sizeof(cs_token));
    long n_chats = 0, n_kept_raw = 0;
    int rc = 0;
    for (int32_t fi = 0; cs_chat_template_name(fi) && rc == 0; ++fi) {
        const char *name = cs_chat_template_name(fi);
        for (int c = 0; c < N_CHATS + N_RANDOM_CHATS && rc == 0; ++c) {
            chat_buf cb;
            make_chat(c, &cb);
            if (!chat_in_set(&cb, set)) continue;
            for (int add = 0; add < 2 && rc == 0; ++add) {
                const int32_t n =
                    cs_chat_apply_segments(name, cb.msgs, (size_t)cb.n, add, segs, MAX_CHAT_SEGS);
                if (n < 0 || n > MAX_CHAT_SEGS) {
                    fprintf(stderr, "tokenizer_peer_cs: %s chat %d: %d segments: %s\n", name, c,
                            (int)n, cs_last_error());
                    rc = 1;
                    break;
                }
                if (gen) {
                    size_t len = 0;
                    for (int32_t k = 0; k < n; ++k) {
                        if (len + segs[k].len > MAX_CHAT_TEXT) {
                            rc = 1;
                            break;
                        }
                        memcpy(text + len, segs[k].text, segs[k].len);
                        len += segs[k].len;
                    }
                    put_record(f, text, len);
                    continue;
                }
                if (raw) {
                    /* real flags against the template alone; and all special */
                    const int32_t nr = tokenize_segs(m, segs, n, &t, &cap, false);
                    for (int32_t k = 0; k < n; ++k)
                        if (!segs[k].is_special) segs[k] = (cs_chat_segment){"x", 1, false};
                    const int32_t nt = tokenize_segs(m, segs, n, &t2, &cap2, false);
                    if (nr < 0 || nt < 0) {
                        rc = 1;
                        break;
                    }
                    const int32_t cr = count_control(m, t, nr), ct = count_control(m, t2, nt);
                    if (cr != ct) {
                        fprintf(stderr,
                                "tokenizer_peer_cs: %s chat %d add_ass %d: %d control tokens, "
                                "the template alone has %d\n",
                                name, c, add, (int)cr, (int)ct);
                        rc = 1;
                        break;
                    }
                    cs_chat_apply_segments(name, cb.msgs, (size_t)cb.n, add, segs, MAX_CHAT_SEGS);
                    for (int32_t k = 0; k < n; ++k) segs[k].is_special = true;
                    const int32_t na = tokenize_segs(m, segs, n, &t2, &cap2, false);
                    if (na < 0) {
                        rc = 1;
                        break;
                    }
                    ++n_chats;
                    n_kept_raw += count_control(m, t2, na) > cr;
                    continue;
                }
                if (!real)
                    for (int32_t k = 0; k < n; ++k) segs[k].is_special = true;
                const int32_t k = tokenize_segs(m, segs, n, &t, &cap, true);
                if (k < 0) {
                    rc = 1;
                    break;
                }
                print_tokens(stdout, t, k);
            }
        }
    }
    if (raw && rc == 0) printf("%ld %ld\n", n_chats, n_kept_raw);
    free(segs);
    free(text);
    free(t);
    free(t2);
    if (f && fclose(f) != 0) rc = 1;
    cs_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "tokenize") == 0 && argc == 6)
        return cmd_tokenize(argv[2], argv[3], atoi(argv[4]) != 0, atoi(argv[5]) != 0);
    if (strcmp(cmd, "eog") == 0 && argc == 3) return cmd_eog(argv[2]);
    if (strcmp(cmd, "gen") == 0 && argc == 5)
        return cmd_gen(argv[2], atol(argv[3]), strtoull(argv[4], NULL, 0));
    if (strcmp(cmd, "split-inp") == 0 && argc == 4) return cmd_split_inp(argv[2], argv[3]);
    if (strcmp(cmd, "set-pre") == 0 && argc == 5) return cmd_set_pre(argv[2], argv[3], argv[4]);
    if (strcmp(cmd, "chat-gen") == 0 && argc == 4) return cmd_chat("gen", argv[2], argv[3], false);
    if (strcmp(cmd, "chat-tokenize") == 0 && argc == 5)
        return cmd_chat("tokenize", argv[2], argv[3], strcmp(argv[4], "real") == 0);
    if (strcmp(cmd, "chat-raw") == 0 && argc == 3) return cmd_chat("raw", argv[2], "all", false);
    fprintf(stderr, "usage: tokenizer_peer_cs tokenize VOCAB RECORDS ADD PARSE | eog VOCAB |\n"
                    "       gen OUT N SEED | split-inp INP OUT | set-pre IN OUT PRE |\n"
                    "       chat-gen OUT SET | chat-tokenize VOCAB SET special|real |\n"
                    "       chat-raw VOCAB\n");
    return 1;
}
