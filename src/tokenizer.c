/* tokenizer.c: vocabulary loading and the SPM / BPE tokenizers, reproducing
 * llama.cpp c392e509 (src/llama-vocab.cpp, src/unicode.cpp) token for token.
 *
 * Layout: all token texts live in one blob (NUL-terminated each, for
 * convenience); text -> id is an open-addressing hash table; BPE merges are
 * a second table keyed by the (left, right) pair. Encoding allocates its
 * scratch per call, so a tokenizer_vocab is read-only after load and thread-safe.
 *
 * Known, documented divergences from llama.cpp (all on inputs where
 * llama.cpp aborts, throws, or depends on hash-map order):
 * - duplicate token texts are a CS_ERR_FORMAT (llama.cpp asserts);
 * - a special-token id key outside the vocabulary is a CS_ERR_FORMAT
 *   (llama.cpp warns and keeps the default), except the "none" sentinel
 *   0xFFFFFFFF / -1, which keeps the default as llama.cpp does;
 * - an SPM byte with neither "<0xXX>" nor a one-byte token becomes UNK
 *   (llama.cpp throws), or is dropped when there is no UNK either;
 * - BPE input code points above U+10FFFF become U+FFFD (llama.cpp throws);
 * - SPM splits an invalid UTF-8 byte as its own character (see
 *   split_symbols; identical on valid UTF-8);
 * - pre-tokenizer regexes run on PCRE2 (Unicode tables of the installed
 *   PCRE2) instead of llama.cpp's hand-written matchers and tables: the
 *   split is identical except possibly for code points whose category the
 *   two Unicode versions disagree on (unassigned ones, surrogates);
 * - when several tokens carry an EOT/EOM/FIM text, the lowest id wins
 *   (llama.cpp takes the first in unordered_map order);
 * - LSTRIP/RSTRIP token attributes (set by llama.cpp only for the phi-3
 *   and jina-v2 families) are not modelled. */
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "cs_limits.h"
#include "unicode.h"

/* ------------------------------------------------------------ constants */

enum { VOCAB_SPM = 1, VOCAB_BPE = 2 };

/* llama_token_attr bits */
enum {
    ATTR_UNDEFINED = 0,
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
};

/* GGUF tokenizer.ggml.token_type values (llama_token_type) */
enum {
    TTYPE_NORMAL = 1,
    TTYPE_UNKNOWN = 2,
    TTYPE_CONTROL = 3,
    TTYPE_USER_DEFINED = 4,
    TTYPE_UNUSED = 5,
    TTYPE_BYTE = 6,
};

#define MAX_REGEX     4
#define ESCAPED_SPACE "\xE2\x96\x81" /* U+2581, SPM's visible space */

/* llama.cpp's GPT-2 pre-tokenizer regex (llm_tokenizer_bpe, PRE_TYPE_GPT2) */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
/* PRE_TYPE_LLAMA3 (the tokenizer.json regex with the case-insensitive group
 * spelled out, as llama.cpp has it) */
static const char RE_LLAMA3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* PRE_TYPE_QWEN2: the Llama 3 regex with single digits (\\p{N}, not {1,3}) */
static const char RE_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* PRE_TYPE_SMOLLM (also starcoder's): every digit its own piece, then GPT-2 */
static const char *const RE_SMOLLM[] = {"\\p{N}", RE_GPT2};
/* PRE_TYPE_DEFAULT: four passes, each splitting the pieces of the last */
static const char *const RE_DEFAULT[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+",
    RE_GPT2,
    "\\p{N}+",
    "[0-9][0-9][0-9]",
};

/* ---------------------------------------------------------------- types */

typedef struct vocab_token {
    size_t off;   /* text offset in tokenizer_vocab.text */
    uint32_t len; /* bytes, 1..CS_MAX_TOKEN_BYTES */
    float score;
    uint8_t attr; /* ATTR_* */
    uint8_t eog;  /* end of generation */
} vocab_token;

typedef struct vocab_merge {
    size_t off; /* left bytes, then right bytes, in tokenizer_vocab.merge_text */
    uint32_t left_len, right_len;
} vocab_merge;

struct tokenizer_vocab {
    int32_t type; /* VOCAB_SPM / VOCAB_BPE */
    int32_t n_tokens;
    vocab_token *tok; /* n_tokens */
    char *text;       /* all token texts, each NUL-terminated */
    int32_t *map;     /* text -> id, open addressing, -1 empty; map_mask + 1 slots */
    size_t map_mask;

    int32_t n_merges;
    vocab_merge *merges; /* rank = index */
    char *merge_text;
    int32_t *merge_map; /* (left, right) -> rank; merge_mask + 1 slots */
    size_t merge_mask;

    pcre2_code *re[MAX_REGEX];
    int32_t n_re;

    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;
    cs_token bos, eos, unk, eot, eom;
    cs_token byte_token[256]; /* SPM byte fallback (-1: drop) */
    uint32_t byte_cpt[256];   /* GPT-2 alphabet */

    cs_token *special; /* control / user-defined / unknown ids, longest text first */
    int32_t n_special;
};

/* --------------------------------------------------------- hash tables */

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ULL; /* FNV-1a 64 */
    }
    return h;
}
#define HASH_SEED 0xcbf29ce484222325ULL

static const char *tok_text(const tokenizer_vocab *v, int32_t id) {
    return v->text + v->tok[id].off;
}

/* Id of the token whose text is s[0, n), or -1. Expected O(n). */
static int32_t vocab_find(const tokenizer_vocab *v, const char *s, size_t n) {
    size_t i = (size_t)hash_bytes(HASH_SEED, s, n) & v->map_mask;
    for (;;) {
        const int32_t id = v->map[i];
        if (id < 0) return -1;
        if (v->tok[id].len == n && memcmp(tok_text(v, id), s, n) == 0) return id;
        i = (i + 1) & v->map_mask;
    }
}

static uint64_t merge_hash(const char *l, size_t ln, const char *r, size_t rn) {
    uint64_t h = hash_bytes(HASH_SEED, l, ln);
    h ^= (uint64_t)ln * 0x9E3779B97F4A7C15ULL;
    return hash_bytes(h, r, rn);
}

/* Rank of the merge "l r", or -1. Expected O(ln + rn). */
static int32_t merge_find(const tokenizer_vocab *v, const char *l, size_t ln, const char *r,
                          size_t rn) {
    if (!v->merge_map) return -1;
    size_t i = (size_t)merge_hash(l, ln, r, rn) & v->merge_mask;
    for (;;) {
        const int32_t rank = v->merge_map[i];
        if (rank < 0) return -1;
        const vocab_merge *m = &v->merges[rank];
        if (m->left_len == ln && m->right_len == rn && memcmp(v->merge_text + m->off, l, ln) == 0 &&
            memcmp(v->merge_text + m->off + ln, r, rn) == 0)
            return rank;
        i = (i + 1) & v->merge_mask;
    }
}

/* Smallest power of two >= 2n (load factor <= 1/2), at least 16. */
static size_t table_slots(size_t n) {
    size_t s = 16;
    while (s < 2 * n) s <<= 1;
    return s;
}

/* ------------------------------------------------------------- loading */

void tokenizer_free(tokenizer_vocab *v) {
    if (!v) return;
    for (int32_t i = 0; i < v->n_re; ++i) pcre2_code_free(v->re[i]);
    mem_free(v->tok);
    mem_free(v->text);
    mem_free(v->map);
    mem_free(v->merges);
    mem_free(v->merge_text);
    mem_free(v->merge_map);
    mem_free(v->special);
    mem_free(v);
}

/* Index of array key `key` with string elements, or -1 if absent (optional)
 * / an error. */
static cs_status find_str_array(const gguf_file *g, const char *key, bool required, int64_t *idx,
                                uint64_t *n) {
    *idx = gguf_find_key(g, key);
    *n = 0;
    if (*idx < 0) {
        if (required) return error_fail(CS_ERR_FORMAT, "tokenizer: missing key '%s'", key);
        return CS_OK;
    }
    if (gguf_kv_type(g, *idx) != GGUF_TYPE_ARRAY || gguf_kv_arr_type(g, *idx) != GGUF_TYPE_STRING)
        return error_fail(CS_ERR_FORMAT,
                          "tokenizer: key '%s' has type %s, expected an array of strings", key,
                          gguf_type_name(gguf_kv_type(g, *idx)));
    *n = gguf_kv_arr_n(g, *idx);
    return CS_OK;
}

/* Optional numeric array of elem_type with exactly n elements. */
static cs_status get_num_array(const gguf_file *g, const char *key, int32_t elem_type, uint64_t n,
                               const void **data) {
    *data = NULL;
    if (gguf_find_key(g, key) < 0) return CS_OK;
    int32_t et = -1;
    uint64_t m = 0;
    cs_status st = gguf_get_arr(g, key, &et, &m, data);
    if (st != CS_OK) return st;
    if (et != elem_type)
        return error_fail(CS_ERR_FORMAT, "tokenizer: key '%s' holds %s elements, expected %s", key,
                          gguf_type_name(et), gguf_type_name(elem_type));
    if (m != n)
        return error_fail(
            CS_ERR_FORMAT,
            "tokenizer: key '%s' has %llu elements but tokenizer.ggml.tokens has %llu", key,
            (unsigned long long)m, (unsigned long long)n);
    if (n > 0 && !*data) return error_fail(CS_ERR_FORMAT, "tokenizer: key '%s' has no data", key);
    return CS_OK;
}

static cs_status get_opt_bool(const gguf_file *g, const char *key, bool *out) {
    if (gguf_find_key(g, key) < 0) return CS_OK;
    return gguf_get_bool(g, key, out);
}

/* A special token id key: absent keeps *id; the "none" sentinels -1 and
 * 0xFFFFFFFF keep *id too (llama.cpp warns and keeps its default); any other
 * value must be a token id. */
static cs_status get_token_id(const gguf_file *g, const char *key, int32_t n_tokens, cs_token *id) {
    if (gguf_find_key(g, key) < 0) return CS_OK;
    int64_t val = 0;
    cs_status st = gguf_get_int(g, key, &val);
    if (st != CS_OK) return st;
    if (val == -1 || val == (int64_t)UINT32_MAX) {
        CS_LOG_DBG("tokenizer: %s = %lld means none, keeping the default %d", key, (long long)val,
                   (int)*id);
        return CS_OK;
    }
    if (val < 0 || val >= n_tokens)
        return error_fail(CS_ERR_FORMAT,
                          "tokenizer: %s = %lld is outside the vocabulary of %d tokens", key,
                          (long long)val, (int)n_tokens);
    *id = (cs_token)val;
    return CS_OK;
}

/* Pass 1 over the token texts: check each is readable and at most
 * CS_MAX_TOKEN_BYTES, and sum the bytes the copies need into *total (an
 * empty text takes 32 for its "[EMPTY_<id>]" stand-in, plus a NUL each).
 * O(n); allocates nothing. */
static cs_status load_text_size(const gguf_file *g, int64_t idx, uint64_t n, size_t *total) {
    *total = 0;
    for (uint64_t i = 0; i < n; ++i) {
        size_t len = 0;
        if (!gguf_get_arr_str(g, idx, i, &len))
            return error_fail(CS_ERR_FORMAT, "tokenizer: cannot read token %llu",
                              (unsigned long long)i);
        if (len > CS_MAX_TOKEN_BYTES)
            return error_fail(CS_ERR_FORMAT,
                              "tokenizer: token %llu has %zu bytes, over CS_MAX_TOKEN_BYTES (%d)",
                              (unsigned long long)i, len, CS_MAX_TOKEN_BYTES);
        if (len == 0) len = 32;
        *total += len + 1; /* <= 2^21 * 4097: no overflow */
    }
    return CS_OK;
}

/* The ATTR_* of a tokenizer.ggml.token_type value (TTYPE_*); unknown
 * values are ATTR_UNDEFINED, as in llama.cpp. */
static uint8_t load_token_attr(int32_t type) {
    switch (type) {
    case TTYPE_NORMAL:
        return ATTR_NORMAL;
    case TTYPE_UNKNOWN:
        return ATTR_UNKNOWN;
    case TTYPE_CONTROL:
        return ATTR_CONTROL;
    case TTYPE_USER_DEFINED:
        return ATTR_USER_DEFINED;
    case TTYPE_UNUSED:
        return ATTR_UNUSED;
    case TTYPE_BYTE:
        return ATTR_BYTE;
    default:
        return ATTR_UNDEFINED;
    }
}

/* Pass 2: copy each text into v->text (sized by load_text_size) and fill
 * v->tok[i] with its offset, length, score (0 without scores; NaN is
 * refused) and attribute (normal without types). scores/types are the
 * raw n-element arrays from get_num_array, or NULL. O(total bytes). */
static cs_status load_token_entries(tokenizer_vocab *v, const gguf_file *g, int64_t idx, uint64_t n,
                                    const void *scores, const void *types) {
    size_t off = 0;
    for (uint64_t i = 0; i < n; ++i) {
        size_t len = 0;
        const char *s = gguf_get_arr_str(g, idx, i, &len);
        vocab_token *t = &v->tok[i];
        t->off = off;
        if (len == 0) {
            len = (size_t)snprintf(v->text + off, 32, "[EMPTY_%llu]", (unsigned long long)i);
            CS_LOG_WRN("tokenizer: empty token at index %llu", (unsigned long long)i);
        } else {
            memcpy(v->text + off, s, len);
            v->text[off + len] = '\0';
        }
        t->len = (uint32_t)len;
        off += len + 1;

        float score = 0.0f;
        if (scores) memcpy(&score, (const char *)scores + i * 4, 4);
        if (isnan(score))
            return error_fail(CS_ERR_FORMAT, "tokenizer: tokenizer.ggml.scores[%llu] is NaN",
                              (unsigned long long)i);
        t->score = score;

        int32_t type = TTYPE_NORMAL;
        if (types) memcpy(&type, (const char *)types + i * 4, 4);
        t->attr = load_token_attr(type);
    }
    return CS_OK;
}

/* The text -> id table (open addressing, table_slots(n) entries, -1 =
 * empty); two tokens with the same text are a format error. O(n)
 * expected. */
static cs_status load_token_map(tokenizer_vocab *v) {
    const size_t slots = table_slots((size_t)v->n_tokens);
    v->map = mem_malloc(slots * sizeof(int32_t));
    if (!v->map) return error_fail(CS_ERR_NOMEM, "tokenizer: out of memory for the token table");
    memset(v->map, 0xFF, slots * sizeof(int32_t));
    v->map_mask = slots - 1;
    for (int32_t id = 0; id < v->n_tokens; ++id) {
        const char *s = tok_text(v, id);
        const size_t len = v->tok[id].len;
        size_t i = (size_t)hash_bytes(HASH_SEED, s, len) & v->map_mask;
        while (v->map[i] >= 0) {
            const int32_t o = v->map[i];
            if (v->tok[o].len == len && memcmp(tok_text(v, o), s, len) == 0)
                return error_fail(CS_ERR_FORMAT, "tokenizer: tokens %d and %d have the same text",
                                  (int)o, (int)id);
            i = (i + 1) & v->map_mask;
        }
        v->map[i] = id;
    }
    return CS_OK;
}

/* Read and hash the token texts, scores and types. What v owns on failure
 * is freed by tokenizer_free. */
static cs_status load_tokens(tokenizer_vocab *v, const gguf_file *g) {
    int64_t idx;
    uint64_t n;
    cs_status st = find_str_array(g, "tokenizer.ggml.tokens", true, &idx, &n);
    if (st != CS_OK) return st;
    if (n == 0) return error_fail(CS_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens is empty");
    if (n > (uint64_t)CS_MAX_VOCAB)
        return error_fail(CS_ERR_FORMAT, "tokenizer: %llu tokens exceed CS_MAX_VOCAB (%d)",
                          (unsigned long long)n, CS_MAX_VOCAB);
    const void *scores = NULL, *types = NULL;
    if ((st = get_num_array(g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, n, &scores))) return st;
    if ((st = get_num_array(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, n, &types))) return st;

    v->n_tokens = (int32_t)n;
    v->tok = mem_calloc((size_t)n, sizeof(vocab_token));
    if (!v->tok)
        return error_fail(CS_ERR_NOMEM, "tokenizer: out of memory for %llu tokens",
                          (unsigned long long)n);
    size_t total = 0;
    if ((st = load_text_size(g, idx, n, &total))) return st;
    v->text = mem_malloc(total);
    if (!v->text)
        return error_fail(CS_ERR_NOMEM, "tokenizer: out of memory for %zu bytes of text", total);
    if ((st = load_token_entries(v, g, idx, n, scores, types))) return st;
    return load_token_map(v);
}

/* BPE merges "left right" (split at the first space after the first byte,
 * as llama.cpp; the first occurrence of a pair keeps its rank). */
static cs_status load_merges(tokenizer_vocab *v, const gguf_file *g) {
    int64_t idx;
    uint64_t n;
    cs_status st = find_str_array(g, "tokenizer.ggml.merges", true, &idx, &n);
    if (st != CS_OK) return st;
    if (n > (uint64_t)CS_MAX_ARRAY_ITEMS || n > (uint64_t)INT32_MAX)
        return error_fail(CS_ERR_FORMAT, "tokenizer: %llu merges exceed CS_MAX_ARRAY_ITEMS (%u)",
                          (unsigned long long)n, CS_MAX_ARRAY_ITEMS);
    size_t total = 0;
    for (uint64_t i = 0; i < n; ++i) {
        size_t len = 0;
        if (!gguf_get_arr_str(g, idx, i, &len))
            return error_fail(CS_ERR_FORMAT, "tokenizer: cannot read merge %llu",
                              (unsigned long long)i);
        if (len > 2 * CS_MAX_TOKEN_BYTES + 1)
            return error_fail(CS_ERR_FORMAT, "tokenizer: merge %llu has %zu bytes, over %d",
                              (unsigned long long)i, len, 2 * CS_MAX_TOKEN_BYTES + 1);
        total += len;
    }
    v->n_merges = (int32_t)n;
    v->merges = mem_calloc(n ? (size_t)n : 1, sizeof(vocab_merge));
    v->merge_text = mem_malloc(total ? total : 1);
    const size_t slots = table_slots((size_t)n);
    v->merge_map = mem_malloc(slots * sizeof(int32_t));
    if (!v->merges || !v->merge_text || !v->merge_map)
        return error_fail(CS_ERR_NOMEM, "tokenizer: out of memory for %llu merges",
                          (unsigned long long)n);
    memset(v->merge_map, 0xFF, slots * sizeof(int32_t));
    v->merge_mask = slots - 1;

    size_t off = 0;
    for (uint64_t r = 0; r < n; ++r) {
        size_t len = 0;
        const char *s = gguf_get_arr_str(g, idx, r, &len);
        vocab_merge *m = &v->merges[r];
        m->off = off;
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) continue; /* llama.cpp ranks the pair ("", ""), which never matches */
        const size_t ln = (size_t)(sp - s), rn = len - ln - 1;
        memcpy(v->merge_text + off, s, ln);
        memcpy(v->merge_text + off + ln, sp + 1, rn);
        m->left_len = (uint32_t)ln;
        m->right_len = (uint32_t)rn;
        off += ln + rn;
        if (merge_find(v, s, ln, sp + 1, rn) >= 0) continue; /* first rank wins */
        size_t i = (size_t)merge_hash(s, ln, sp + 1, rn) & v->merge_mask;
        while (v->merge_map[i] >= 0) i = (i + 1) & v->merge_mask;
        v->merge_map[i] = (int32_t)r;
    }
    return CS_OK;
}

static cs_status compile_regexes(tokenizer_vocab *v, const char *const *exprs, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        int err = 0;
        PCRE2_SIZE err_off = 0;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)exprs[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &err, &err_off, NULL);
        if (!re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(err, msg, sizeof(msg));
            return error_fail(CS_ERR_UNSUPPORTED,
                              "tokenizer: PCRE2 cannot compile regex %d at %zu: %s", (int)i,
                              (size_t)err_off, (const char *)msg);
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up */
        v->re[v->n_re++] = re;
    }
    return CS_OK;
}

static bool str_in(const char *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

/* Select the BPE pre-tokenizer from tokenizer.ggml.pre (llama.cpp's table,
 * restricted to the regexes implemented here). */
static cs_status load_pre(tokenizer_vocab *v, const gguf_file *g) {
    static const char *const gpt2[] = {"gpt-2",   "phi-2",       "mpt",      "olmo",
                                       "jais",    "roberta-bpe", "gigachat", "jina-es",
                                       "jina-de", "jina-v1-en"};
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3"};
    static const char *const llama3_re[] = {"dbrx", "smaug-bpe"};
    const char *pre = "";
    size_t pre_len = 0;
    if (gguf_find_key(g, "tokenizer.ggml.pre") >= 0) {
        cs_status st = gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_len);
        if (st != CS_OK) return st;
    }
    v->clean_spaces = true;
    const bool no_nul = pre_len == strlen(pre); /* a name with a NUL matches nothing */
    if (no_nul && (pre_len == 0 || strcmp(pre, "default") == 0)) {
        if (pre_len == 0) CS_LOG_WRN("tokenizer: missing pre-tokenizer type, using 'default'");
        return compile_regexes(v, RE_DEFAULT, 4);
    } else if (no_nul && str_in(pre, gpt2, sizeof(gpt2) / sizeof(gpt2[0]))) {
        const char *re = RE_GPT2;
        return compile_regexes(v, &re, 1);
    } else if (no_nul && (str_in(pre, llama3, sizeof(llama3) / sizeof(llama3[0])) ||
                          str_in(pre, llama3_re, sizeof(llama3_re) / sizeof(llama3_re[0])))) {
        if (str_in(pre, llama3, sizeof(llama3) / sizeof(llama3[0]))) {
            v->ignore_merges = true;
            v->add_bos = true;
        }
        const char *re = RE_LLAMA3;
        return compile_regexes(v, &re, 1);
    }
    if (no_nul && (strcmp(pre, "qwen2") == 0 || strcmp(pre, "deepseek-r1-qwen") == 0)) {
        v->clean_spaces = false;
        const char *re = RE_QWEN2;
        return compile_regexes(v, &re, 1);
    }
    if (no_nul && strcmp(pre, "smollm") == 0) {
        v->clean_spaces = false;
        return compile_regexes(v, RE_SMOLLM, 2);
    }
    if (no_nul && strcmp(pre, "tekken") == 0) /* Mistral Nemo: no vocabulary to test it on */
        return error_fail(CS_ERR_UNSUPPORTED,
                          "tokenizer: the 'tekken' pre-tokenizer (tokenizer.ggml.pre, Mistral "
                          "Nemo) is not supported");
    return error_fail(CS_ERR_UNSUPPORTED,
                      "tokenizer: pre-tokenizer tokenizer.ggml.pre = '%.*s' is not supported",
                      (int)(pre_len > 64 ? 64 : pre_len), pre);
}

/* EOT/EOM/FIM detection by text and the end-of-generation set, as
 * llama.cpp's load(): a found token is forced to CONTROL. */
static void detect_special(tokenizer_vocab *v, cs_token *fim_ids, size_t n_fim) {
    static const char *const eot_texts[] = {"<|eot_id|>",
                                            "<|im_end|>",
                                            "<|end|>",
                                            "<end_of_turn>",
                                            "<|endoftext|>",
                                            "<EOT>",
                                            "<\xEF\xBD\x9C"
                                            "end\xE2\x96\x81"
                                            "of\xE2\x96\x81"
                                            "sentence\xEF\xBD\x9C>"};
    static const char *const eom_texts[] = {"<|eom_id|>"};
    static const char *const fim_texts[6][4] = {
        {"<|fim_prefix|>", "<fim-prefix>",
         "<\xEF\xBD\x9C"
         "fim\xE2\x96\x81"
         "begin\xEF\xBD\x9C>",
         "<PRE>"},
        {"<|fim_suffix|>", "<fim-suffix>",
         "<\xEF\xBD\x9C"
         "fim\xE2\x96\x81"
         "hole\xEF\xBD\x9C>",
         "<SUF>"},
        {"<|fim_middle|>", "<fim-middle>",
         "<\xEF\xBD\x9C"
         "fim\xE2\x96\x81"
         "end\xEF\xBD\x9C>",
         "<MID>"},
        {"<|fim_pad|>", "<fim-pad>", "<PAD>", NULL},
        {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"},
        {"<|file_sep|>", NULL, NULL, NULL},
    };
    static const char *const eog_texts[] = {"<|eot_id|>",    "<|im_end|>",    "<|end|>",
                                            "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                                            "<EOT>"};
    struct role {
        cs_token *id;
        const char *const *texts;
        size_t n;
    } roles[8] = {{&v->eot, eot_texts, 7}, {&v->eom, eom_texts, 1}};
    size_t n_roles = 2;
    for (size_t f = 0; f < n_fim && f < 6; ++f)
        roles[n_roles++] = (struct role){&fim_ids[f], fim_texts[f], 4};

    for (size_t r = 0; r < n_roles; ++r) {
        if (*roles[r].id >= 0) continue;
        cs_token best = -1;
        for (size_t k = 0; k < roles[r].n && roles[r].texts[k]; ++k) {
            const cs_token id = vocab_find(v, roles[r].texts[k], strlen(roles[r].texts[k]));
            if (id >= 0 && (best < 0 || id < best)) best = id;
        }
        if (best >= 0) {
            *roles[r].id = best;
            v->tok[best].attr |= ATTR_CONTROL;
        }
    }
    for (size_t f = 3; f < n_fim && f < 6; ++f) /* fim pad, rep, sep end generation */
        if (fim_ids[f] >= 0) v->tok[fim_ids[f]].eog = 1;
    for (size_t k = 0; k < sizeof(eog_texts) / sizeof(eog_texts[0]); ++k) {
        const cs_token id = vocab_find(v, eog_texts[k], strlen(eog_texts[k]));
        if (id < 0) continue;
        v->tok[id].eog = 1;
        v->tok[id].attr |= ATTR_CONTROL;
    }
    if (v->eos >= 0) v->tok[v->eos].eog = 1;
    if (v->eot >= 0) v->tok[v->eot].eog = 1;
    if (v->eom >= 0) v->tok[v->eom].eog = 1;
}

typedef struct special_key {
    uint32_t len;
    int32_t id;
} special_key;

static int special_cmp(const void *a, const void *b) {
    const special_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The special-token cache: control, user-defined and unknown tokens,
 * longest text first (ties by id; llama.cpp's std::sort leaves them in an
 * unspecified order). O(n log n). */
static cs_status build_special_cache(tokenizer_vocab *v) {
    int32_t n = 0;
    for (int32_t id = 0; id < v->n_tokens; ++id)
        if (v->tok[id].attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) ++n;
    special_key *keys = mem_malloc((size_t)(n ? n : 1) * sizeof(special_key));
    v->special = mem_malloc((size_t)(n ? n : 1) * sizeof(cs_token));
    if (!keys || !v->special) {
        mem_free(keys);
        return error_fail(CS_ERR_NOMEM, "tokenizer: out of memory for %d special tokens", (int)n);
    }
    int32_t k = 0;
    for (int32_t id = 0; id < v->n_tokens; ++id)
        if (v->tok[id].attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN))
            keys[k++] = (special_key){v->tok[id].len, id};
    qsort(keys, (size_t)n, sizeof(special_key), special_cmp);
    for (int32_t i = 0; i < n; ++i) v->special[i] = keys[i].id;
    v->n_special = n;
    mem_free(keys);
    return CS_OK;
}

/* tokenizer.ggml.model -> v->type: "llama" (SPM) or "gpt2" (BPE); any
 * other model is unsupported (its text is quoted, at most 64 bytes). */
static cs_status load_model_type(tokenizer_vocab *v, const gguf_file *g) {
    const char *model = NULL;
    size_t model_len = 0;
    cs_status st = gguf_get_str(g, "tokenizer.ggml.model", &model, &model_len);
    if (st) return st;
    if (model_len == 5 && strcmp(model, "llama") == 0) {
        v->type = VOCAB_SPM;
    } else if (model_len == 4 && strcmp(model, "gpt2") == 0) {
        v->type = VOCAB_BPE;
    } else {
        return error_fail(
            CS_ERR_UNSUPPORTED,
            "tokenizer: tokenizer.ggml.model = '%.*s' is not supported (only 'llama' and "
            "'gpt2')",
            (int)(model_len > 64 ? 64 : model_len), model);
    }
    return CS_OK;
}

/* Per-type defaults (llama.cpp load()): SPM's special ids and flags, or
 * BPE's ids plus its merges and pre-tokenizer; ids past the vocabulary
 * become -1; then the file's add_space_prefix, if any. Needs v->tok. */
static cs_status load_type_defaults(tokenizer_vocab *v, const gguf_file *g) {
    cs_status st;
    v->eot = v->eom = -1;
    if (v->type == VOCAB_SPM) {
        v->bos = 1, v->eos = 2, v->unk = 0;
        v->add_space_prefix = true;
        v->add_bos = true;
    } else {
        v->bos = 11, v->eos = 11, v->unk = -1;
        if ((st = load_merges(v, g))) return st;
        if ((st = load_pre(v, g))) return st;
    }
    if (v->bos >= v->n_tokens) v->bos = -1;
    if (v->eos >= v->n_tokens) v->eos = -1;
    if (v->unk >= v->n_tokens) v->unk = -1;
    return get_opt_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);
}

/* The special token id keys (get_token_id) over the defaults. fim[6]
 * receives the FIM pre/suf/mid/pad/rep/sep ids; the deprecated
 * prefix/suffix/middle keys are read last, so they win over fim_pre/suf/mid
 * when a file has both. The separator, padding and mask ids are validated
 * but not kept. */
static cs_status load_special_ids(tokenizer_vocab *v, const gguf_file *g, cs_token fim[6]) {
    cs_token sep = -1, pad = -1, mask = -1;
    const struct {
        const char *key;
        cs_token *id;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos},     {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.eot_token_id", &v->eot},     {"tokenizer.ggml.eom_token_id", &v->eom},
        {"tokenizer.ggml.unknown_token_id", &v->unk}, {"tokenizer.ggml.seperator_token_id", &sep},
        {"tokenizer.ggml.padding_token_id", &pad},    {"tokenizer.ggml.mask_token_id", &mask},
        {"tokenizer.ggml.fim_pre_token_id", &fim[0]}, {"tokenizer.ggml.fim_suf_token_id", &fim[1]},
        {"tokenizer.ggml.fim_mid_token_id", &fim[2]}, {"tokenizer.ggml.fim_pad_token_id", &fim[3]},
        {"tokenizer.ggml.fim_rep_token_id", &fim[4]}, {"tokenizer.ggml.fim_sep_token_id", &fim[5]},
        {"tokenizer.ggml.prefix_token_id", &fim[0]},  {"tokenizer.ggml.suffix_token_id", &fim[1]},
        {"tokenizer.ggml.middle_token_id", &fim[2]},
    };
    cs_status st;
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); ++i)
        if ((st = get_token_id(g, ids[i].key, v->n_tokens, ids[i].id))) return st;
    return CS_OK;
}

/* add_bos_token / add_eos_token over the defaults; a flag whose token does
 * not exist is dropped with a warning. */
static cs_status load_add_flags(tokenizer_vocab *v, const gguf_file *g) {
    cs_status st;
    if ((st = get_opt_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos))) return st;
    if ((st = get_opt_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos))) return st;
    if (v->add_bos && v->bos < 0) {
        CS_LOG_WRN("tokenizer: add_bos_token is set but there is no BOS token; not adding it");
        v->add_bos = false;
    }
    if (v->add_eos && v->eos < 0) {
        CS_LOG_WRN("tokenizer: add_eos_token is set but there is no EOS token; not adding it");
        v->add_eos = false;
    }
    return CS_OK;
}

/* Byte tables: SPM maps each byte to its <0xXX> token (else the one-byte
 * token, else unk); BPE maps each byte to its GPT-2 code point. 256
 * lookups. */
static void load_byte_tables(tokenizer_vocab *v) {
    if (v->type == VOCAB_SPM) {
        for (int b = 0; b < 256; ++b) {
            char hex[8];
            snprintf(hex, sizeof(hex), "<0x%02X>", (unsigned)b);
            cs_token id = vocab_find(v, hex, 6);
            if (id < 0 && b != 0) {
                const char one = (char)b;
                id = vocab_find(v, &one, 1);
            }
            v->byte_token[b] = id >= 0 ? id : v->unk;
        }
    } else {
        for (int b = 0; b < 256; ++b) v->byte_cpt[b] = unicode_byte_to_cpt((uint8_t)b);
    }
}

cs_status tokenizer_load(const gguf_file *g, tokenizer_vocab **out) {
    cs_status st = CS_OK;
    tokenizer_vocab *v = NULL;
    if (!out) return error_fail(CS_ERR_INVALID_ARG, "tokenizer_load: out is NULL");
    *out = NULL;
    if (!g) return error_fail(CS_ERR_INVALID_ARG, "tokenizer_load: gguf is NULL");

    v = mem_calloc(1, sizeof(*v));
    if (!v) return error_fail(CS_ERR_NOMEM, "tokenizer: out of memory");

    cs_token fim[6] = {-1, -1, -1, -1, -1, -1};
    if ((st = load_model_type(v, g))) goto fail;
    if ((st = load_tokens(v, g))) goto fail;
    if ((st = load_type_defaults(v, g))) goto fail;
    if ((st = load_special_ids(v, g, fim))) goto fail;
    if ((st = load_add_flags(v, g))) goto fail;
    detect_special(v, fim, 6);
    if ((st = build_special_cache(v))) goto fail;
    load_byte_tables(v);

    *out = v;
    return CS_OK;
fail:
    tokenizer_free(v);
    return st;
}

/* -------------------------------------------------------------- getters */

int32_t tokenizer_n_tokens(const tokenizer_vocab *v) {
    return v ? v->n_tokens : 0;
}
cs_token tokenizer_bos(const tokenizer_vocab *v) {
    return v ? v->bos : -1;
}
cs_token tokenizer_eos(const tokenizer_vocab *v) {
    return v ? v->eos : -1;
}
cs_token tokenizer_unk(const tokenizer_vocab *v) {
    return v ? v->unk : -1;
}
bool tokenizer_add_bos(const tokenizer_vocab *v) {
    return v && v->add_bos;
}
bool tokenizer_is_eog(const tokenizer_vocab *v, cs_token t) {
    return v && t >= 0 && t < v->n_tokens && v->tok[t].eog;
}

/* ------------------------------------------------------ encode scratch */

/* Grow *p (elements of elem bytes, capacity *cap) to hold need elements. */
static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 16, bytes;
    while (n < need) {
        if (n > SIZE_MAX / 2) return false;
        n *= 2;
    }
    if (!common_mul_size(n, elem, &bytes)) return false;
    void *q = mem_realloc(*p, bytes);
    if (!q) return false;
    *p = q;
    *cap = n;
    return true;
}

typedef struct sym {
    int32_t prev, next;
    size_t off, n; /* bytes of the session text; n == 0 once merged away */
} sym;

typedef struct bigram {
    double key; /* SPM: -score, BPE: rank; smaller pops first, then smaller left */
    int32_t left, right;
    size_t size;
} bigram;

typedef struct frag {
    cs_token token; /* -1: raw text [off, off + len) of the input */
    size_t off, len;
} frag;

typedef struct seg {
    size_t off, len;
} seg;

typedef struct enc {
    const tokenizer_vocab *v;
    cs_token *out;
    size_t n_out, cap_out;
    sym *syms;
    size_t n_syms, cap_syms;
    bigram *heap;
    size_t n_heap, cap_heap;
    char *buf; /* session text (SPM escaped text / BPE mapped word) */
    size_t cap_buf;
    char *subj, *orig; /* BPE: regex subject and output bytes of a fragment */
    size_t cap_subj, cap_orig;
    seg *segs, *segs2;
    size_t cap_segs, cap_segs2;
    pcre2_match_data *md;
    cs_status err;
} enc;

static bool enc_oom(enc *e) {
    if (e->err == CS_OK)
        e->err = error_fail(CS_ERR_NOMEM, "tokenizer: out of memory while encoding");
    return false;
}

static bool push_token(enc *e, cs_token t) {
    if (e->n_out >= (size_t)INT32_MAX) {
        if (e->err == CS_OK)
            e->err = error_fail(CS_ERR_INVALID_ARG, "tokenizer: the text gives more than %d tokens",
                                INT32_MAX);
        return false;
    }
    if (!grow((void **)&e->out, &e->cap_out, e->n_out + 1, sizeof(cs_token))) return enc_oom(e);
    e->out[e->n_out++] = t;
    return true;
}

static bool heap_less(const bigram *a, const bigram *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static bool heap_push(enc *e, bigram b) {
    if (!grow((void **)&e->heap, &e->cap_heap, e->n_heap + 1, sizeof(bigram))) return enc_oom(e);
    size_t i = e->n_heap++;
    while (i > 0) {
        const size_t p = (i - 1) / 2;
        if (!heap_less(&b, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = b;
    return true;
}

static bigram heap_pop(enc *e) {
    const bigram top = e->heap[0];
    const bigram last = e->heap[--e->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->n_heap) break;
        if (c + 1 < e->n_heap && heap_less(&e->heap[c + 1], &e->heap[c])) ++c;
        if (!heap_less(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (e->n_heap > 0) e->heap[i] = last;
    return top;
}

/* Split buf[0, n) into linked symbols, one UTF-8 character each. For valid
 * UTF-8 this is llama.cpp's split (length from the lead byte). For an
 * invalid sequence llama.cpp still takes the lead byte's length, which can
 * swallow the first byte of a following U+2581 escape and turn that space
 * into three raw byte tokens; here each invalid byte is its own symbol
 * (documented divergence), so SPM round-trips any bytes exactly. */
static bool split_symbols(enc *e, size_t n) {
    e->n_syms = 0;
    size_t off = 0;
    while (off < n) {
        size_t next = off;
        (void)unicode_cpt_from_utf8(e->buf, n, &next);
        const size_t l = next - off;
        if (e->n_syms >= (size_t)INT32_MAX - 1) return enc_oom(e);
        if (!grow((void **)&e->syms, &e->cap_syms, e->n_syms + 1, sizeof(sym))) return enc_oom(e);
        const int32_t idx = (int32_t)e->n_syms;
        e->syms[e->n_syms++] = (sym){idx - 1, off + l == n ? -1 : idx + 1, off, l};
        off += l;
    }
    return true;
}

/* Merge loop shared by SPM and BPE: pop the best bigram, skip stale ones
 * (a side merged since: then the sizes no longer add up), merge, and let
 * add() queue the two new neighbours. O(m log m) for m symbols. */
static bool merge_loop(enc *e, bool (*add)(enc *, int32_t, int32_t)) {
    for (size_t i = 1; i < e->n_syms; ++i)
        if (!add(e, (int32_t)i - 1, (int32_t)i)) return false;
    while (e->n_heap > 0) {
        const bigram b = heap_pop(e);
        sym *l = &e->syms[b.left], *r = &e->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) e->syms[r->next].prev = b.left;
        if (!add(e, l->prev, b.left) || !add(e, b.left, l->next)) return false;
    }
    return true;
}

/* ------------------------------------------------------------------ SPM */

static bool spm_add(enc *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return true;
    const sym *l = &e->syms[left], *r = &e->syms[right];
    const size_t n = l->n + r->n;
    const cs_token id = vocab_find(e->v, e->buf + l->off, n);
    if (id < 0) return true;
    return heap_push(e, (bigram){-(double)e->v->tok[id].score, left, right, n});
}

/* llm_tokenizer_spm_session::tokenize on e->buf[0, n) (already escaped). */
static bool spm_session(enc *e, size_t n) {
    e->n_heap = 0;
    if (!split_symbols(e, n) || !merge_loop(e, spm_add)) return false;
    if (e->n_syms == 0) return true;
    for (int32_t i = 0; i != -1; i = e->syms[i].next) {
        const sym *s = &e->syms[i];
        const cs_token id = vocab_find(e->v, e->buf + s->off, s->n);
        if (id >= 0) {
            if (!push_token(e, id)) return false;
            continue;
        }
        for (size_t j = 0; j < s->n; ++j) { /* byte fallback */
            const cs_token b = e->v->byte_token[(uint8_t)e->buf[s->off + j]];
            if (b >= 0 && !push_token(e, b)) return false;
        }
    }
    return true;
}

/* One raw fragment: optional leading space, spaces escaped to U+2581. */
static bool spm_fragment(enc *e, const char *text, size_t len, bool prefix) {
    size_t need;
    if (!common_add_size(len, 1, &need) || !common_mul_size(need, 3, &need)) return enc_oom(e);
    if (!grow((void **)&e->buf, &e->cap_buf, need, 1)) return enc_oom(e);
    size_t n = 0;
    if (prefix) {
        memcpy(e->buf, ESCAPED_SPACE, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; ++i) {
        if (text[i] == ' ') {
            memcpy(e->buf + n, ESCAPED_SPACE, 3);
            n += 3;
        } else {
            e->buf[n++] = text[i];
        }
    }
    return spm_session(e, n);
}

/* ------------------------------------------------------------------ BPE */

static bool bpe_add(enc *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return true;
    const sym *l = &e->syms[left], *r = &e->syms[right];
    const int32_t rank = merge_find(e->v, e->buf + l->off, l->n, e->buf + r->off, r->n);
    if (rank < 0) return true;
    return heap_push(e, (bigram){(double)rank, left, right, l->n + r->n});
}

/* llm_tokenizer_bpe_session on one pre-tokenized word orig[0, n): map its
 * bytes to the GPT-2 alphabet, merge by rank, emit tokens. */
static bool bpe_word(enc *e, const char *word, size_t n) {
    const tokenizer_vocab *v = e->v;
    size_t need;
    if (!common_mul_size(n, 2, &need) || !grow((void **)&e->buf, &e->cap_buf, need + 1, 1))
        return enc_oom(e);
    size_t m = 0;
    for (size_t i = 0; i < n; ++i) {
        char tmp[4];
        const size_t k = unicode_cpt_to_utf8(v->byte_cpt[(uint8_t)word[i]], tmp);
        memcpy(e->buf + m, tmp, k);
        m += k;
    }
    e->n_heap = 0;
    if (v->ignore_merges && vocab_find(v, e->buf, m) >= 0) {
        e->n_syms = 0;
        if (!grow((void **)&e->syms, &e->cap_syms, 1, sizeof(sym))) return enc_oom(e);
        e->syms[e->n_syms++] = (sym){-1, -1, 0, m};
    } else if (!split_symbols(e, m) || !merge_loop(e, bpe_add)) {
        return false;
    }
    for (size_t i = 0; i < e->n_syms; ++i) {
        const sym *s = &e->syms[i];
        if (s->n == 0) continue;
        const cs_token id = vocab_find(v, e->buf + s->off, s->n);
        if (id >= 0) {
            if (!push_token(e, id)) return false;
            continue;
        }
        for (size_t j = 0; j < s->n; ++j) { /* single bytes that happen to be tokens */
            const cs_token b = vocab_find(v, e->buf + s->off + j, 1);
            if (b >= 0 && !push_token(e, b)) return false;
        }
    }
    return true;
}

/* Pre-tokenize one raw fragment with the regex passes and BPE each piece.
 * The text is decoded to code points llama.cpp's way (invalid bytes become
 * U+FFFD) and re-encoded twice with identical byte layout: `orig` (what the
 * pieces are made of) and `subj` (valid UTF-8 for PCRE2: surrogates shown as
 * U+FFFD). Each pass splits every piece into matches and the gaps between
 * them (unicode_regex_split_stl). O(len) per pass plus the regex cost. */
static bool bpe_fragment(enc *e, const char *text, size_t len) {
    const tokenizer_vocab *v = e->v;
    size_t need;
    if (!common_mul_size(len, 3, &need) || !grow((void **)&e->subj, &e->cap_subj, need + 1, 1) ||
        !grow((void **)&e->orig, &e->cap_orig, need + 1, 1))
        return enc_oom(e);
    size_t n = 0;
    for (size_t off = 0; off < len;) {
        const uint32_t cpt = unicode_cpt_from_utf8(text, len, &off);
        const size_t k = unicode_cpt_to_utf8(cpt, e->orig + n);
        if (cpt >= 0xD800u && cpt <= 0xDFFFu)
            unicode_cpt_to_utf8(UNICODE_REPLACEMENT, e->subj + n); /* also 3 bytes */
        else
            memcpy(e->subj + n, e->orig + n, k);
        n += k;
    }

    size_t n_segs = 1;
    if (!grow((void **)&e->segs, &e->cap_segs, 1, sizeof(seg))) return enc_oom(e);
    e->segs[0] = (seg){0, n};
    for (int32_t r = 0; r < v->n_re; ++r) {
        size_t n2 = 0;
        for (size_t s = 0; s < n_segs; ++s) {
            const seg cur = e->segs[s];
            const PCRE2_SPTR subject = (PCRE2_SPTR)(e->subj + cur.off);
            size_t pos = 0;
            while (pos < cur.len) {
                const int rc =
                    pcre2_match(v->re[r], subject, cur.len, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[128];
                    pcre2_get_error_message(rc, msg, sizeof(msg));
                    e->err =
                        error_fail(CS_ERR_INVALID_ARG, "tokenizer: pre-tokenizer regex failed: %s",
                                   (const char *)msg);
                    return false;
                }
                const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) { /* empty match (not produced by our regexes): step one char */
                    pos += unicode_len_utf8((uint8_t)subject[pos]);
                    continue;
                }
                if (!grow((void **)&e->segs2, &e->cap_segs2, n2 + 2, sizeof(seg)))
                    return enc_oom(e);
                if (ms > pos) e->segs2[n2++] = (seg){cur.off + pos, ms - pos};
                e->segs2[n2++] = (seg){cur.off + ms, me - ms};
                pos = me;
            }
            if (pos < cur.len) {
                if (!grow((void **)&e->segs2, &e->cap_segs2, n2 + 1, sizeof(seg)))
                    return enc_oom(e);
                e->segs2[n2++] = (seg){cur.off + pos, cur.len - pos};
            }
        }
        seg *t = e->segs;
        e->segs = e->segs2;
        e->segs2 = t;
        size_t tc = e->cap_segs;
        e->cap_segs = e->cap_segs2;
        e->cap_segs2 = tc;
        n_segs = n2;
    }
    for (size_t s = 0; s < n_segs; ++s)
        if (!bpe_word(e, e->orig + e->segs[s].off, e->segs[s].len)) return false;
    return true;
}

/* ------------------------------------------------------- special tokens */

/* First occurrence of needle in hay[0, n), or SIZE_MAX. O(n * m) worst. */
static size_t find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0 || m > n) return SIZE_MAX;
    const char *p = hay, *end = hay + (n - m) + 1;
    while (p < end) {
        p = memchr(p, needle[0], (size_t)(end - p));
        if (!p) return SIZE_MAX;
        if (memcmp(p, needle, m) == 0) return (size_t)(p - hay);
        ++p;
    }
    return SIZE_MAX;
}

/* Append the matches of special token id (text st, m bytes) inside the
 * raw fragment [pos, end) of text to b, searching only [lo, hi) (within
 * the fragment): leftmost first, resuming after each match, as llama.cpp's
 * find loop does. *pos advances past the last match; the raw text before
 * each match becomes a fragment. */
static bool cut_matches(enc *e, const char *text, size_t *pos, size_t lo, size_t hi, cs_token id,
                        const char *st, size_t m, frag **b, size_t *cb, size_t *nb) {
    while (lo < hi) {
        const size_t at = find_bytes(text + lo, hi - lo, st, m);
        if (at == SIZE_MAX) break;
        if (!grow((void **)b, cb, *nb + 2, sizeof(frag))) return enc_oom(e);
        if (lo + at > *pos) (*b)[(*nb)++] = (frag){-1, *pos, lo + at - *pos};
        (*b)[(*nb)++] = (frag){id, 0, 0};
        *pos = lo + at + m;
        lo = *pos;
    }
    return true;
}

/* tokenizer_st_partition: cut the special tokens' texts out of the raw
 * fragments, longest token first. User-defined tokens match anywhere;
 * control and unknown tokens only entirely inside one of the byte ranges
 * allow[0, n_allow) (sorted, disjoint; one range [0, len) is llama.cpp's
 * parse_special, none is its parse_special = false). Raw text between
 * matches stays one fragment across range boundaries. Cost
 * O(n_special * (fragments + n_allow)) plus the byte comparisons, which are
 * O(n_special * len). *frags has *n_frags entries on return. */
static bool partition(enc *e, const char *text, size_t len, const seg *allow, size_t n_allow,
                      frag **frags, size_t *n_frags) {
    const tokenizer_vocab *v = e->v;
    frag *a = NULL, *b = NULL;
    size_t ca = 0, cb = 0, na = 0;
    if (len > 0) {
        if (!grow((void **)&a, &ca, 1, sizeof(frag))) goto oom;
        a[na++] = (frag){-1, 0, len};
    }
    for (int32_t k = 0; k < v->n_special && na > 0; ++k) {
        const cs_token id = v->special[k];
        const vocab_token *t = &v->tok[id];
        const bool restricted = (t->attr & (ATTR_CONTROL | ATTR_UNKNOWN)) != 0;
        if (restricted && n_allow == 0) continue;
        const char *st = tok_text(v, id);
        size_t nb = 0, r = 0; /* r: first range that may meet the current fragment */
        for (size_t i = 0; i < na; ++i) {
            if (a[i].token >= 0) {
                if (!grow((void **)&b, &cb, nb + 1, sizeof(frag))) goto oom;
                b[nb++] = a[i];
                continue;
            }
            size_t pos = a[i].off;
            const size_t end = a[i].off + a[i].len;
            if (!restricted) {
                if (!cut_matches(e, text, &pos, pos, end, id, st, t->len, &b, &cb, &nb)) goto fail;
            } else {
                /* fragments ascend, so ranges ending before this one's
                 * start end before every later one's too */
                while (r < n_allow && allow[r].off + allow[r].len <= pos) ++r;
                for (size_t q = r; q < n_allow && allow[q].off < end; ++q) {
                    const size_t lo = allow[q].off > pos ? allow[q].off : pos;
                    const size_t re = allow[q].off + allow[q].len;
                    const size_t hi = re < end ? re : end;
                    if (!cut_matches(e, text, &pos, lo, hi, id, st, t->len, &b, &cb, &nb))
                        goto fail;
                }
            }
            if (pos < end) {
                if (!grow((void **)&b, &cb, nb + 1, sizeof(frag))) goto oom;
                b[nb++] = (frag){-1, pos, end - pos};
            }
        }
        frag *tf = a;
        a = b;
        b = tf;
        size_t tc = ca;
        ca = cb;
        cb = tc;
        na = nb;
    }
    mem_free(b);
    *frags = a;
    *n_frags = na;
    return true;
oom:
    enc_oom(e);
fail:
    mem_free(a);
    mem_free(b);
    return false;
}

/* -------------------------------------------------------------- encode */

/* Tokenize text[0, len) with control tokens matched only inside
 * allow[0, n_allow) (see partition): llama.cpp's tokenize, one pass. */
static int32_t encode_masked(const tokenizer_vocab *v, const char *text, size_t len,
                             const seg *allow, size_t n_allow, cs_token *tokens, int32_t n_max,
                             bool add_special) {
    enc e;
    memset(&e, 0, sizeof(e));
    e.v = v;
    frag *frags = NULL;
    size_t n_frags = 0;
    int32_t ret = INT32_MIN;

    if (!partition(&e, text, len, allow, n_allow, &frags, &n_frags)) goto done;
    if (v->type == VOCAB_SPM) {
        bool prev_special = true; /* a space prefix at the start and after special tokens */
        if (add_special && v->add_bos && !push_token(&e, v->bos)) goto done;
        for (size_t i = 0; i < n_frags; ++i) {
            if (frags[i].token >= 0) {
                if (!push_token(&e, frags[i].token)) goto done;
                prev_special = true;
                continue;
            }
            if (!spm_fragment(&e, text + frags[i].off, frags[i].len,
                              v->add_space_prefix && prev_special))
                goto done;
            prev_special = false;
        }
    } else {
        if (add_special && v->add_bos && !push_token(&e, v->bos)) goto done;
        e.md = pcre2_match_data_create(8, NULL);
        if (!e.md) {
            enc_oom(&e);
            goto done;
        }
        for (size_t i = 0; i < n_frags; ++i) {
            if (frags[i].token >= 0) {
                if (!push_token(&e, frags[i].token)) goto done;
                continue;
            }
            if (!bpe_fragment(&e, text + frags[i].off, frags[i].len)) goto done;
        }
    }
    if (add_special && v->add_eos && !push_token(&e, v->eos)) goto done;

    if (e.n_out > (size_t)n_max) {
        ret = -(int32_t)e.n_out;
    } else {
        if (e.n_out) memcpy(tokens, e.out, e.n_out * sizeof(cs_token));
        ret = (int32_t)e.n_out;
    }
done:
    pcre2_match_data_free(e.md);
    mem_free(frags);
    mem_free(e.out);
    mem_free(e.syms);
    mem_free(e.heap);
    mem_free(e.buf);
    mem_free(e.subj);
    mem_free(e.orig);
    mem_free(e.segs);
    mem_free(e.segs2);
    return ret;
}

int32_t tokenizer_encode(const tokenizer_vocab *v, const char *text, size_t len, cs_token *tokens,
                         int32_t n_max, bool add_special, bool parse_special) {
    if (!v || (!text && len > 0) || n_max < 0 || (!tokens && n_max > 0)) {
        error_fail(CS_ERR_INVALID_ARG,
                   "tokenizer_encode: bad arguments (vocab %p, text %p, len %zu, "
                   "tokens %p, n_max %d)",
                   (const void *)v, (const void *)text, len, (void *)tokens, (int)n_max);
        return INT32_MIN;
    }
    if (len > (size_t)INT32_MAX) {
        error_fail(CS_ERR_INVALID_ARG, "tokenizer_encode: text of %zu bytes exceeds INT32_MAX",
                   len);
        return INT32_MIN;
    }
    const seg whole = {0, len};
    return encode_masked(v, text, len, &whole, parse_special ? 1 : 0, tokens, n_max, add_special);
}

int32_t tokenizer_encode_segments(const tokenizer_vocab *v, const cs_chat_segment *segs,
                                  size_t n_segs, cs_token *tokens, int32_t n_max,
                                  bool add_special) {
    if (!v || (!segs && n_segs > 0) || n_max < 0 || (!tokens && n_max > 0)) {
        error_fail(CS_ERR_INVALID_ARG,
                   "tokenizer_encode_segments: bad arguments (vocab %p, segs %p, n_segs %zu, "
                   "tokens %p, n_max %d)",
                   (const void *)v, (const void *)segs, n_segs, (void *)tokens, (int)n_max);
        return INT32_MIN;
    }
    size_t len = 0, n_allow = 0;
    for (size_t i = 0; i < n_segs; ++i) {
        if (!segs[i].text && segs[i].len > 0) {
            error_fail(CS_ERR_INVALID_ARG,
                       "tokenizer_encode_segments: segment %zu has NULL text and %zu bytes", i,
                       segs[i].len);
            return INT32_MIN;
        }
        if (segs[i].len > (size_t)INT32_MAX - len) {
            error_fail(CS_ERR_INVALID_ARG,
                       "tokenizer_encode_segments: the segments exceed INT32_MAX bytes");
            return INT32_MIN;
        }
        len += segs[i].len;
        if (segs[i].is_special && segs[i].len > 0) ++n_allow;
    }
    /* the joined text, and its special ranges with adjacent ones merged
     * (a per-byte mask: a control token may span two template segments) */
    char *text = mem_malloc(len ? len : 1);
    seg *allow = mem_malloc((n_allow ? n_allow : 1) * sizeof(seg));
    int32_t ret = INT32_MIN;
    if (!text || !allow) {
        error_fail(CS_ERR_NOMEM, "tokenizer: out of memory while encoding");
        goto done;
    }
    size_t off = 0;
    n_allow = 0;
    for (size_t i = 0; i < n_segs; ++i) {
        if (segs[i].len == 0) continue;
        memcpy(text + off, segs[i].text, segs[i].len);
        if (segs[i].is_special) {
            if (n_allow > 0 && allow[n_allow - 1].off + allow[n_allow - 1].len == off)
                allow[n_allow - 1].len += segs[i].len;
            else
                allow[n_allow++] = (seg){off, segs[i].len};
        }
        off += segs[i].len;
    }
    ret = encode_masked(v, text, len, allow, n_allow, tokens, n_max, add_special);
done:
    mem_free(text);
    mem_free(allow);
    return ret;
}

/* -------------------------------------------------------------- decode */

/* Output sink: writes while there is room, always counts. `strip` drops
 * one leading space of the current piece (llama.cpp's lstrip = 1). */
typedef struct sink {
    char *buf;
    size_t cap;
    uint64_t n;
    bool strip;
} sink;

static void sink_put(sink *s, const char *p, size_t n) {
    if (n == 0) return;
    if (s->strip) {
        s->strip = false;
        if (p[0] == ' ') {
            ++p;
            --n;
        }
    }
    if (s->n < s->cap) {
        const size_t room = s->cap - (size_t)s->n;
        memcpy(s->buf + s->n, p, n < room ? n : room);
    }
    s->n += n;
}

/* llama_decode_text for one BPE token: each code point of the text back to
 * its byte, or "[UNK_BYTE_0x<hex>" + text + "]" when it is not in the
 * alphabet. */
static void bpe_piece(const char *t, size_t len, sink *s) {
    for (size_t off = 0; off < len;) {
        const uint32_t cpt = unicode_cpt_from_utf8(t, len, &off);
        const int32_t b = unicode_cpt_to_byte(cpt);
        if (b >= 0) {
            const char c = (char)b;
            sink_put(s, &c, 1);
            continue;
        }
        char u[4], hex[3];
        const size_t k = unicode_cpt_to_utf8(cpt, u);
        sink_put(s, "[UNK_BYTE_0x", 12);
        for (size_t i = 0; i < k; ++i) {
            snprintf(hex, sizeof(hex), "%02x", (unsigned)(uint8_t)u[i]);
            sink_put(s, hex, 2);
        }
        sink_put(s, t, len);
        sink_put(s, "]", 1);
    }
}

/* The piece of token t into a sink (llama_vocab::token_to_piece with
 * lstrip 0 or 1). O(token bytes), or O(bytes^2) for the UNK_BYTE form. */
static void piece(const tokenizer_vocab *v, cs_token t, bool special, bool lstrip, sink *s) {
    const vocab_token *tk = &v->tok[t];
    const char *text = tok_text(v, t);
    const uint8_t attr = tk->attr;
    if (!special && (attr & (ATTR_UNKNOWN | ATTR_CONTROL))) return;
    s->strip = lstrip;
    if (attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
        sink_put(s, text, tk->len);
    } else if (v->type == VOCAB_SPM && (attr & ATTR_NORMAL)) {
        size_t run = 0, i = 0; /* unescape U+2581 to ' ' */
        while (i < tk->len) {
            if (i + 3 <= tk->len && memcmp(text + i, ESCAPED_SPACE, 3) == 0) {
                sink_put(s, text + run, i - run);
                sink_put(s, " ", 1);
                i += 3;
                run = i;
            } else {
                ++i;
            }
        }
        sink_put(s, text + run, tk->len - run);
    } else if (v->type == VOCAB_SPM && (attr & ATTR_BYTE)) {
        /* token_to_byte: strtol(text.substr(3, 2), 16) */
        unsigned val = 0;
        for (size_t i = 3; i < 5 && i < tk->len; ++i) {
            const char c = text[i];
            const int d = (c >= '0' && c <= '9')   ? c - '0'
                          : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                          : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                   : -1;
            if (d < 0) break;
            val = val * 16 + (unsigned)d;
        }
        const char c = (char)val;
        sink_put(s, &c, 1);
    } else if (v->type == VOCAB_BPE && (attr & ATTR_NORMAL)) {
        bpe_piece(text, tk->len, s);
    }
    s->strip = false; /* unused and undefined tokens give "" */
}

int32_t tokenizer_token_to_piece(const tokenizer_vocab *v, cs_token t, char *buf, size_t size,
                                 bool special) {
    if (!v || t < 0 || t >= v->n_tokens || (!buf && size > 0)) {
        error_fail(CS_ERR_INVALID_ARG,
                   "tokenizer_token_to_piece: token %d outside [0, %d) or bad buffer", (int)t,
                   v ? (int)v->n_tokens : 0);
        return INT32_MIN;
    }
    /* measure first so that a short buffer is left untouched */
    sink m = {NULL, 0, 0, false};
    piece(v, t, special, false, &m);
    if (m.n > (uint64_t)INT32_MAX) {
        error_fail(CS_ERR_INVALID_ARG, "tokenizer_token_to_piece: piece of %llu bytes",
                   (unsigned long long)m.n);
        return INT32_MIN;
    }
    if (m.n > size) return -(int32_t)m.n;
    sink s = {buf, size, 0, false};
    piece(v, t, special, false, &s);
    return (int32_t)s.n;
}

/* llama.cpp's clean_spaces passes (BPE vocabularies), in place on
 * text[0, total): " ?" " !" " ." " ," lose the space; " ' " becomes "'";
 * " 's" " 'm" " 're" " 've" lose the space. Returns the new length. */
static size_t clean_spaces(char *text, size_t total) {
    size_t n1 = total, n = total ? 1 : 0;
    for (size_t i = 1; i < n1; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --n;
        text[n++] = x;
    }
    const size_t n2 = n;
    n = n ? 1 : 0;
    for (size_t i = 1; i < n2; ++i) {
        const char x = text[i];
        if (x == '\'' && i + 1 < n2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            --n;
            text[++i] = '\0';
        }
        text[n++] = x;
    }
    const size_t n3 = n;
    n = n ? 1 : 0;
    for (size_t i = 1; i < n3; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < n3) {
            const char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') {
                --n;
            } else if (i + 2 < n3) {
                const char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --n;
            }
        }
        text[n++] = x;
    }
    return n;
}

/* llama_detokenize(remove_special = false, unparse_special = special), the
 * way common_detokenize calls it: pieces concatenated, the first piece
 * losing one leading space when the vocabulary adds a space prefix (note:
 * when tokens[0] is BOS, that first piece is BOS's, so the space after it
 * stays, as in llama.cpp), then clean_spaces for BPE. */
int32_t tokenizer_decode(const tokenizer_vocab *v, const cs_token *tokens, int32_t n, char *buf,
                         size_t size, bool special) {
    if (!v || n < 0 || (!tokens && n > 0) || (!buf && size > 0)) {
        error_fail(CS_ERR_INVALID_ARG, "tokenizer_decode: bad arguments (n %d)", (int)n);
        return INT32_MIN;
    }
    for (int32_t i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= v->n_tokens) {
            error_fail(CS_ERR_INVALID_ARG, "tokenizer_decode: tokens[%d] = %d is outside [0, %d)",
                       (int)i, (int)tokens[i], (int)v->n_tokens);
            return INT32_MIN;
        }
    }
    if (size > (size_t)INT32_MAX) size = (size_t)INT32_MAX;
    sink s = {buf, size, 0, false};
    for (int32_t i = 0; i < n; ++i) {
        piece(v, tokens[i], special, i == 0 && v->add_space_prefix, &s);
        if (s.n > (uint64_t)INT32_MAX) {
            error_fail(CS_ERR_INVALID_ARG, "tokenizer_decode: output exceeds INT32_MAX bytes");
            return INT32_MIN;
        }
    }
    if (s.n > size) return -(int32_t)s.n;
    size_t total = (size_t)s.n;
    if (v->clean_spaces) total = clean_spaces(buf, total);
    return (int32_t)total;
}
