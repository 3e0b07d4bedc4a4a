/* serve_api.c: request fields and response shapes of `ctxshift serve`
 * (serve_api.h, docs/SERVER.md).
 *
 * Departures from llama-server (c392e509), each a client-visible fix:
 * a field of the wrong type or out of range is a 400 naming it (llama-server
 * silently uses the default); `n` other than 1 is a 400 (500 there);
 * /v1/completions logprobs use OpenAI's legacy shape (tokens,
 * token_logprobs, top_logprobs, text_offset); n_predict 0 evaluates the
 * prompt and generates nothing (llama-server still generates one token). */
#include "serve_api.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

bool serve_fail(serve_error *err, int32_t status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->status = status;
    return false;
}

void serve_params_free(serve_params *p) {
    for (int32_t i = 0; i < p->n_stop; i++) free(p->stop[i]);
    p->n_stop = 0;
    free(p->bias_tok);
    free(p->bias_val);
    p->bias_tok = NULL;
    p->bias_val = NULL;
    p->n_bias = 0;
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Field readers: absent or null keeps *out; a wrong type or a value
 * outside [lo, hi] is a 400 naming the field. */
static bool get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    serve_error *err) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v); /* 64.0: an integer written as a number */
    } else {
        return serve_fail(err, 400, "'%s' must be an integer, got %s", key, json_kind(v));
    }
    if (x < lo || x > hi) {
        return serve_fail(err, 400, "'%s' = %lld is outside [%lld, %lld]", key, (long long)x,
                          (long long)lo, (long long)hi);
    }
    *out = x;
    return true;
}

static bool get_i32(const json_t *o, const char *key, int32_t lo, int32_t hi, int32_t *out,
                    serve_error *err) {
    int64_t x = *out;
    if (!get_int(o, key, lo, hi, &x, err)) return false;
    *out = (int32_t)x;
    return true;
}

static bool get_num(const json_t *o, const char *key, double lo, double hi, float *out,
                    serve_error *err) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) {
        return serve_fail(err, 400, "'%s' must be a number, got %s", key, json_kind(v));
    }
    const double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        return serve_fail(err, 400, "'%s' = %g is outside [%g, %g]", key, x, lo, hi);
    }
    *out = (float)x;
    return true;
}

static bool get_bool(const json_t *o, const char *key, bool *out, serve_error *err) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) {
        return serve_fail(err, 400, "'%s' must be a boolean, got %s", key, json_kind(v));
    }
    *out = json_is_true(v);
    return true;
}

static bool add_stop(serve_params *p, const json_t *v, serve_error *err) {
    if (!json_is_string(v)) {
        return serve_fail(err, 400, "'stop' must be a string or an array of strings, got %s",
                          json_kind(v));
    }
    const size_t len = json_string_length(v);
    if (len == 0) return serve_fail(err, 400, "'stop' strings must not be empty");
    if (len > SERVE_MAX_STOP_BYTES) {
        return serve_fail(err, 400, "'stop' string of %zu bytes exceeds %d", len,
                          SERVE_MAX_STOP_BYTES);
    }
    if (memchr(json_string_value(v), 0, len)) {
        return serve_fail(err, 400, "'stop' strings must not contain NUL");
    }
    if (p->n_stop == SERVE_MAX_STOP) {
        return serve_fail(err, 400, "'stop' has more than %d strings", SERVE_MAX_STOP);
    }
    p->stop[p->n_stop] = strdup(json_string_value(v));
    if (!p->stop[p->n_stop]) return serve_fail(err, 500, "out of memory");
    p->n_stop++;
    return true;
}

static bool add_bias(serve_params *p, int32_t n_vocab, int64_t tok, const json_t *val,
                     serve_error *err) {
    if (tok < 0 || tok >= n_vocab) {
        return serve_fail(err, 400, "'logit_bias': token %lld is outside the vocabulary [0, %d)",
                          (long long)tok, (int)n_vocab);
    }
    float b;
    if (json_is_false(val)) {
        b = -INFINITY; /* llama-server: false bans the token */
    } else if (json_is_number(val) && isfinite(json_number_value(val))) {
        b = (float)json_number_value(val);
        if (b < -100.0f || b > 100.0f) {
            return serve_fail(err, 400, "'logit_bias' of token %lld = %g is outside [-100, 100]",
                              (long long)tok, (double)b);
        }
    } else {
        return serve_fail(err, 400, "'logit_bias' of token %lld must be a number or false, got %s",
                          (long long)tok, json_kind(val));
    }
    if (p->n_bias >= n_vocab || p->n_bias >= 1 << 20) {
        return serve_fail(err, 400, "'logit_bias' has too many entries");
    }
    cs_token *nt = realloc(p->bias_tok, (size_t)(p->n_bias + 1) * sizeof(cs_token));
    if (!nt) return serve_fail(err, 500, "out of memory");
    p->bias_tok = nt;
    float *nv = realloc(p->bias_val, (size_t)(p->n_bias + 1) * sizeof(float));
    if (!nv) return serve_fail(err, 500, "out of memory");
    p->bias_val = nv;
    p->bias_tok[p->n_bias] = (cs_token)tok;
    p->bias_val[p->n_bias] = b;
    p->n_bias++;
    return true;
}

static bool parse_bias(serve_params *p, const json_t *v, int32_t n_vocab, serve_error *err) {
    if (!v || json_is_null(v)) return true;
    if (json_is_object(v)) { /* OpenAI: {"123": -100} */
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)v, k, val) {
            char *end = NULL;
            const long long tok = strtoll(k, &end, 10);
            if (!*k || *end) {
                return serve_fail(err, 400, "'logit_bias' key '%.64s' is not a token id", k);
            }
            if (!add_bias(p, n_vocab, tok, val, err)) return false;
        }
        return true;
    }
    if (json_is_array(v)) { /* llama-server: [[id, bias], ...] */
        size_t i;
        json_t *pair;
        json_array_foreach(v, i, pair) {
            if (!json_is_array(pair) || json_array_size(pair) != 2 ||
                !json_is_integer(json_array_get(pair, 0))) {
                return serve_fail(err, 400, "'logit_bias'[%zu] must be [token id, bias]", i);
            }
            if (!add_bias(p, n_vocab, json_integer_value(json_array_get(pair, 0)),
                          json_array_get(pair, 1), err)) {
                return false;
            }
        }
        return true;
    }
    return serve_fail(err, 400, "'logit_bias' must be an object or an array, got %s", json_kind(v));
}

bool serve_parse_params(const json_t *body, int32_t kind, const serve_config *cfg,
                        const cs_model *model, serve_params *p, serve_error *err) {
    memset(p, 0, sizeof(*p));
    p->sampling = cs_sampler_default_params();
    p->sampling.seed = ((uint64_t)rand() << 32) ^ (uint64_t)rand(); /* -1 = random, as llama-server */
    p->n_predict = -1;
    p->n_keep = 0;
    p->id_slot = -1;
    p->cache_prompt = true;
    if (!json_is_object(body)) {
        return serve_fail(err, 400, "the request body must be a JSON object, got %s",
                          json_kind(body));
    }
    int64_t n = 1;
    if (!get_int(body, "n", INT32_MIN, INT32_MAX, &n, err)) return false;
    if (n != 1) return serve_fail(err, 400, "'n' = %lld: only one choice per request is supported", (long long)n);

    /* max_completion_tokens (OpenAI's current name) > max_tokens > n_predict */
    const int32_t lim = INT32_MAX / 2;
    if (!get_i32(body, "n_predict", -1, lim, &p->n_predict, err)) return false;
    if (!get_i32(body, "max_tokens", -1, lim, &p->n_predict, err)) return false;
    if (!get_i32(body, "max_completion_tokens", -1, lim, &p->n_predict, err)) return false;

    cs_sampler_params *s = &p->sampling;
    if (!get_num(body, "temperature", 0.0, 100.0, &s->temp, err)) return false;
    if (!get_i32(body, "top_k", 0, INT32_MAX, &s->top_k, err)) return false;
    if (!get_num(body, "top_p", 0.0, 1.0, &s->top_p, err)) return false;
    if (s->top_p <= 0.0f) s->top_p = 1.0f; /* 0 means off in llama.cpp */
    if (!get_num(body, "min_p", 0.0, 1.0, &s->min_p, err)) return false;
    if (!get_num(body, "repeat_penalty", 0.0, 100.0, &s->repeat_penalty, err)) return false;
    if (s->repeat_penalty <= 0.0f) return serve_fail(err, 400, "'repeat_penalty' must be > 0 (1 = off)");
    int32_t last_n = s->repeat_last_n;
    if (!get_i32(body, "repeat_last_n", -1, cfg->n_ctx_slot, &last_n, err)) return false;
    s->repeat_last_n = last_n < 0 ? cfg->n_ctx_slot : last_n;
    if (!get_num(body, "presence_penalty", -2.0, 2.0, &s->presence_penalty, err)) return false;
    if (!get_num(body, "frequency_penalty", -2.0, 2.0, &s->frequency_penalty, err)) return false;
    int64_t seed = -1;
    if (!get_int(body, "seed", INT64_MIN / 2, INT64_MAX / 2, &seed, err)) return false;
    if (seed != -1) s->seed = (uint64_t)seed;

    const json_t *stop = json_object_get(body, "stop");
    if (stop && !json_is_null(stop)) {
        if (json_is_array(stop)) {
            size_t i;
            json_t *v;
            json_array_foreach(stop, i, v) {
                if (!add_stop(p, v, err)) return false;
            }
        } else if (!add_stop(p, stop, err)) {
            return false;
        }
    }
    if (!get_bool(body, "stream", &p->stream, err)) return false;
    const json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            return serve_fail(err, 400, "'stream_options' must be an object, got %s", json_kind(so));
        }
        if (!get_bool(so, "include_usage", &p->include_usage, err)) return false;
    }
    /* logprobs: a boolean for chat, an integer (the top count) for the
     * legacy completions API; n_probs for /completion */
    const json_t *lp = json_object_get(body, "logprobs");
    if (lp && !json_is_null(lp)) {
        if (kind == SERVE_COMPLETION && json_is_integer(lp)) {
            int32_t k = 0;
            if (!get_i32(body, "logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &k, err)) return false;
            p->logprobs = true;
            p->n_probs = k;
        } else if (!get_bool(body, "logprobs", &p->logprobs, err)) {
            return false;
        }
    }
    if (!get_i32(body, "top_logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &p->n_probs, err)) return false;
    if (kind == SERVE_CHAT && p->n_probs > 0 && !p->logprobs) {
        return serve_fail(err, 400, "'top_logprobs' requires 'logprobs': true");
    }
    if (!get_i32(body, "n_probs", 0, SERVE_MAX_TOP_LOGPROBS, &p->n_probs, err)) return false;
    if (kind == SERVE_NATIVE && p->n_probs > 0) p->logprobs = true;

    if (!get_i32(body, "id_slot", -1, INT32_MAX, &p->id_slot, err)) return false;
    if (p->id_slot >= cfg->n_slots) {
        return serve_fail(err, 400, "'id_slot' = %d: there are %d slots (0..%d)", (int)p->id_slot,
                          (int)cfg->n_slots, (int)cfg->n_slots - 1);
    }
    if (!get_bool(body, "cache_prompt", &p->cache_prompt, err)) return false;
    if (!get_i32(body, "n_keep", -1, cfg->n_ctx_slot, &p->n_keep, err)) return false;
    if (!get_i32(body, "n_discard", 0, cfg->n_ctx_slot, &p->n_discard, err)) return false;
    if (!get_bool(body, "ignore_eos", &p->ignore_eos, err)) return false;
    if (!get_bool(body, "return_tokens", &p->return_tokens, err)) return false;
    if (!parse_bias(p, json_object_get(body, "logit_bias"), cs_model_n_vocab(model), err)) {
        return false;
    }
    const json_t *m = json_object_get(body, "model");
    if (m && !json_is_null(m) && !json_is_string(m)) {
        return serve_fail(err, 400, "'model' must be a string, got %s", json_kind(m));
    }
    const char *name = m && json_is_string(m) ? json_string_value(m) : NULL;
    if (!name) name = cfg->alias ? cfg->alias : cfg->model_path;
    snprintf(p->model, sizeof(p->model), "%s", name);
    return true;
}

/* ------------------------------------------------------------ prompts */

static bool push_tokens(cs_token **buf, int32_t *n, int32_t *cap, const cs_token *src, int32_t k,
                        serve_error *err) {
    if (*n + (int64_t)k > SERVE_MAX_PROMPT) {
        return serve_fail(err, 400, "the prompt has more than %d tokens", SERVE_MAX_PROMPT);
    }
    if (*n + k > *cap) {
        int32_t c = *cap ? *cap : 256;
        while (c < *n + k) c *= 2;
        cs_token *p = realloc(*buf, (size_t)c * sizeof(cs_token));
        if (!p) return serve_fail(err, 500, "out of memory");
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *n, src, (size_t)k * sizeof(cs_token));
    *n += k;
    return true;
}

static bool tokenize_piece(const cs_model *model, const char *s, size_t len, cs_token **buf,
                           int32_t *n, int32_t *cap, serve_error *err) {
    if (len > (size_t)SERVE_MAX_PROMPT * 64) {
        return serve_fail(err, 413, "the prompt text of %zu bytes is too long", len);
    }
    int32_t want = cs_tokenize(model, s, len, NULL, 0, false, true);
    /* the arguments are valid here: INT32_MIN is the tokenizer's want of
     * memory, a server error */
    if (want == INT32_MIN) return serve_fail(err, 500, "tokenize: %s", cs_last_error());
    want = want < 0 ? -want : want;
    if (*n + (int64_t)want > SERVE_MAX_PROMPT) {
        return serve_fail(err, 400, "the prompt has more than %d tokens", SERVE_MAX_PROMPT);
    }
    cs_token *tmp = malloc((size_t)(want > 0 ? want : 1) * sizeof(cs_token));
    if (!tmp) return serve_fail(err, 500, "out of memory");
    const int32_t got = cs_tokenize(model, s, len, tmp, want, false, true);
    const bool ok = got >= 0 && push_tokens(buf, n, cap, tmp, got, err);
    free(tmp);
    if (got < 0) return serve_fail(err, 500, "tokenize failed");
    return ok;
}

bool serve_tokenize_prompt(const json_t *prompt, const cs_model *model, const char *field,
                           cs_token **out, int32_t *n_out, serve_error *err) {
    cs_token *buf = NULL;
    int32_t n = 0, cap = 0;
    const cs_token bos = cs_token_bos(model);
    const int32_t n_vocab = cs_model_n_vocab(model);
    if (cs_vocab_add_bos(model) && bos >= 0 && !push_tokens(&buf, &n, &cap, &bos, 1, err)) {
        goto fail;
    }
    const int32_t n_bos = n;
    if (!prompt) {
        serve_fail(err, 400, "'%s' is required", field);
        goto fail;
    }
    if (json_is_string(prompt)) {
        if (!tokenize_piece(model, json_string_value(prompt), json_string_length(prompt), &buf, &n,
                            &cap, err)) {
            goto fail;
        }
    } else if (json_is_array(prompt)) {
        /* one prompt of strings and token ids, or a one-element array of one */
        const json_t *arr = prompt;
        if (json_array_size(arr) == 1 && json_is_array(json_array_get(arr, 0))) {
            arr = json_array_get(arr, 0);
        }
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            if (json_is_string(v)) {
                if (i > 0 && json_is_string(json_array_get(arr, i - 1)) && arr == prompt) {
                    serve_fail(err, 400,
                               "'%s' holds several prompts: one prompt per request is supported",
                               field);
                    goto fail;
                }
                if (!tokenize_piece(model, json_string_value(v), json_string_length(v), &buf, &n,
                                    &cap, err)) {
                    goto fail;
                }
            } else if (json_is_integer(v)) {
                const json_int_t id = json_integer_value(v);
                if (id < 0 || id >= n_vocab) {
                    serve_fail(err, 400, "'%s'[%zu]: token %lld is outside the vocabulary [0, %d)",
                               field, i, (long long)id, (int)n_vocab);
                    goto fail;
                }
                const cs_token t = (cs_token)id;
                if (!(i == 0 && n == 1 && t == bos) && !push_tokens(&buf, &n, &cap, &t, 1, err)) {
                    goto fail;
                }
            } else {
                serve_fail(err, 400, "'%s'[%zu] must be a string or a token id, got %s", field, i,
                           json_kind(v));
                goto fail;
            }
        }
    } else {
        serve_fail(err, 400, "'%s' must be a string or an array of token ids, got %s", field,
                   json_kind(prompt));
        goto fail;
    }
    /* a prompt that already starts with BOS text does not get a second one */
    if (n_bos == 1 && n > 1 && buf[1] == bos) {
        memmove(buf, buf + 1, (size_t)(n - 1) * sizeof(cs_token));
        n--;
    }
    if (n == 0) {
        serve_fail(err, 400, "'%s' is empty and the model adds no BOS token", field);
        goto fail;
    }
    *out = buf;
    *n_out = n;
    return true;
fail:
    free(buf);
    return false;
}

/* ------------------------------------------------------- jansson */

/* Set by json_alloc when an allocation of this thread fails (each
 * connection parses on its own thread). */
static _Thread_local bool json_alloc_failed;

static void *json_alloc(size_t n) {
    void *p = malloc(n);
    if (!p) json_alloc_failed = true;
    return p;
}

static void json_release(void *p) {
    free(p);
}

void serve_json_use_alloc(void) {
    json_set_alloc_funcs(json_alloc, json_release);
}

json_t *serve_json_load(const char *buf, size_t len, size_t flags, json_error_t *je, bool *oom) {
    json_alloc_failed = false;
    json_t *j = json_loadb(buf, len, flags, je);
    /* a parse that succeeded despite a failed allocation is refused too:
     * jansson 2.14's lexer ignores a failed growth of its token buffer and
     * goes on without the character (a string silently cut) */
    *oom = json_alloc_failed;
    if (*oom) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ---------------------------------------------------------- responses */

/* The text being written by serve_json_dumps; failed is sticky, so that
 * every write after a failed one fails too, whether or not jansson looked
 * at the first failure's result. */
typedef struct dump_buf {
    char *p;
    size_t len, cap;
    bool failed;
} dump_buf;

static int dump_write(const char *buf, size_t size, void *data) {
    dump_buf *d = data;
    if (d->failed) return -1;
    if (d->len + size + 1 > d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        while (cap < d->len + size + 1) cap *= 2;
        char *q = realloc(d->p, cap);
        if (!q) {
            d->failed = true;
            return -1;
        }
        d->p = q;
        d->cap = cap;
    }
    memcpy(d->p + d->len, buf, size);
    d->len += size;
    return 0;
}

char *serve_json_dumps(const json_t *j) {
    dump_buf d = {0};
    if (json_dump_callback(j, dump_write, &d, JSON_COMPACT) != 0 || d.failed || !d.p) {
        free(d.p);
        return NULL;
    }
    d.p[d.len] = '\0';
    return d.p;
}

/* The length of the valid UTF-8 character at s[0, len) as jansson accepts
 * it (no overlong form, surrogate or code point above U+10FFFF), or 0.
 * Checked here rather than by a trial json_stringn, whose failure for want
 * of memory would look like invalid text. */
static size_t utf8_char(const char *s, size_t len) {
    const unsigned char c = (unsigned char)s[0];
    const size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (k == 0 || k > len) return 0;
    for (size_t j = 1; j < k; j++) {
        if (((unsigned char)s[j] >> 6) != 2) return 0;
    }
    const unsigned char c1 = k > 1 ? (unsigned char)s[1] : 0;
    bool ok = true;
    if (k == 2)
        ok = c >= 0xC2;
    else if (k == 3)
        ok = (c != 0xE0 || c1 >= 0xA0) && (c != 0xED || c1 < 0xA0);
    else if (k == 4)
        ok = c <= 0xF4 && (c != 0xF0 || c1 >= 0x90) && (c != 0xF4 || c1 < 0x90);
    return ok ? k : 0;
}

bool serve_utf8_valid(const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        const size_t k = utf8_char(s + i, len - i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

json_t *serve_json_text(const char *s, size_t len) {
    /* copy, replacing every invalid UTF-8 sequence by U+FFFD */
    char *out = malloc(len * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_char(s + i, len - i);
        if (k == 1 && s[i] == 0) k = 0; /* NUL: jansson strings are C strings */
        if (k > 0) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

const char *serve_error_type(int32_t status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 501: return "not_supported_error";
    case 503: return "unavailable_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

json_t *serve_json_error(int32_t status, const char *msg) {
    return json_pack("{s:{s:i,s:o,s:s}}", "error", "code", (int)status, "message",
                     serve_json_text(msg, strlen(msg)), "type", serve_error_type(status));
}

static const char *finish_name(int32_t f) {
    return f == SERVE_FINISH_EOS || f == SERVE_FINISH_WORD ? "stop" : "length";
}

bool serve_json_append(json_t **arr, json_t *v) {
    if (*arr && v && json_array_append_new(*arr, v) == 0) return true;
    if (!*arr) json_decref(v);
    json_decref(*arr);
    *arr = NULL;
    return false;
}

bool serve_json_set(json_t **o, const char *key, json_t *v) {
    if (*o && v && json_object_set_new(*o, key, v) == 0) return true;
    if (!*o) json_decref(v);
    json_decref(*o);
    *o = NULL;
    return false;
}

/* The token's text; its bytes as an array of integers into *bytes when
 * bytes is not NULL. NULL (and *bytes NULL) on allocation failure. */
static json_t *piece_json(const cs_model *model, cs_token id, json_t **bytes) {
    char buf[256];
    int32_t n = cs_token_to_piece(model, id, buf, sizeof(buf), false);
    if (n < 0) n = 0;
    if (bytes) {
        *bytes = json_array();
        for (int32_t i = 0; i < n && *bytes; i++) {
            serve_json_append(bytes, json_integer((unsigned char)buf[i]));
        }
        if (!*bytes) return NULL;
    }
    json_t *text = serve_json_text(buf, (size_t)n);
    if (!text && bytes) {
        json_decref(*bytes);
        *bytes = NULL;
    }
    return text;
}

/* Chat-shape logprobs: {"content":[{token, logprob, bytes, top_logprobs}]}.
 * NULL on allocation failure. */
static json_t *logprobs_chat(const cs_model *model, const serve_token_info *tk, int32_t n) {
    json_t *arr = json_array();
    for (int32_t i = 0; i < n && arr; i++) {
        json_t *bytes;
        json_t *tok = piece_json(model, tk[i].id, &bytes);
        json_t *top = json_array();
        for (int32_t k = 0; k < tk[i].n_top && top; k++) {
            json_t *b2;
            json_t *t2 = piece_json(model, tk[i].top_id[k], &b2);
            serve_json_append(&top,
                           json_pack("{s:i,s:o,s:o,s:f}", "id", (int)tk[i].top_id[k], "token", t2,
                                     "bytes", b2, "logprob", (double)tk[i].top_logprob[k]));
        }
        serve_json_append(&arr, json_pack("{s:i,s:o,s:o,s:f,s:o}", "id", (int)tk[i].id, "token", tok,
                                       "bytes", bytes, "logprob", (double)tk[i].logprob,
                                       "top_logprobs", top));
    }
    return arr;
}

/* Legacy completions logprobs: tokens, token_logprobs, top_logprobs, text_offset. */
static json_t *logprobs_legacy(const cs_model *model, const serve_token_info *tk, int32_t n,
                               size_t offset0) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = offset0;
    for (int32_t i = 0; i < n && tokens && lps && tops && offs; i++) {
        char buf[256];
        int32_t len = cs_token_to_piece(model, tk[i].id, buf, sizeof(buf), false);
        if (len < 0) len = 0;
        serve_json_append(&tokens, serve_json_text(buf, (size_t)len));
        serve_json_append(&lps, json_real((double)tk[i].logprob));
        json_t *top = json_object();
        for (int32_t k = 0; k < tk[i].n_top && top; k++) {
            char b2[256];
            int32_t l2 = cs_token_to_piece(model, tk[i].top_id[k], b2, sizeof(b2), false);
            if (l2 < 0) l2 = 0;
            json_t *key = serve_json_text(b2, (size_t)l2);
            if (!key) {
                json_decref(top);
                top = NULL;
            } else if (!json_object_get(top, json_string_value(key))) {
                serve_json_set(&top, json_string_value(key), json_real((double)tk[i].top_logprob[k]));
            }
            json_decref(key);
        }
        serve_json_append(&tops, top);
        serve_json_append(&offs, json_integer((json_int_t)off));
        off += (size_t)len;
    }
    /* json_pack releases the values it was given when one is NULL */
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs",
                     tops, "text_offset", offs);
}

/* A choice's "logprobs": null, the chat shape or the legacy shape. */
static json_t *choice_logprobs(const serve_task *t, const cs_model *model,
                               const serve_token_info *tokens, int32_t n_tokens) {
    if (!t->p.logprobs) return json_null();
    return t->kind == SERVE_CHAT ? json_pack("{s:o}", "content", logprobs_chat(model, tokens, n_tokens))
                                 : logprobs_legacy(model, tokens, n_tokens, 0);
}

static json_t *timings_json(const serve_task *t) {
    const serve_timings *g = &t->timings;
    const double pp = g->prompt_n > 0 ? g->prompt_ms / g->prompt_n : 0.0;
    const double tp = g->predicted_n > 0 ? g->predicted_ms / g->predicted_n : 0.0;
    return json_pack("{s:i,s:f,s:f,s:f,s:i,s:f,s:f,s:f}", "prompt_n", (int)g->prompt_n, "prompt_ms",
                     g->prompt_ms, "prompt_per_token_ms", pp, "prompt_per_second",
                     g->prompt_ms > 0 ? 1e3 * g->prompt_n / g->prompt_ms : 0.0, "predicted_n",
                     (int)g->predicted_n, "predicted_ms", g->predicted_ms,
                     "predicted_per_token_ms", tp, "predicted_per_second",
                     g->predicted_ms > 0 ? 1e3 * g->predicted_n / g->predicted_ms : 0.0);
}

json_t *serve_json_usage(const serve_task *t) {
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "completion_tokens", (int)t->n_predicted,
                     "prompt_tokens", (int)t->n_prompt_used, "total_tokens",
                     (int)(t->n_predicted + t->n_prompt_used), "prompt_tokens_details",
                     "cached_tokens", (int)t->n_cached);
}

static const char *stop_type(int32_t f) {
    switch (f) {
    case SERVE_FINISH_EOS: return "eos";
    case SERVE_FINISH_WORD: return "word";
    case SERVE_FINISH_LIMIT: return "limit";
    default: return "none";
    }
}

static json_t *token_ids(const serve_token_info *tk, int32_t n) {
    json_t *a = json_array();
    for (int32_t i = 0; i < n && a; i++) serve_json_append(&a, json_integer(tk[i].id));
    return a;
}

json_t *serve_json_final(const serve_task *t, const serve_config *cfg, const cs_model *model,
                         const char *content, size_t len, const serve_token_info *tokens,
                         int32_t n_tokens, const char *id, int64_t created) {
    const serve_params *p = &t->p;
    json_t *text = serve_json_text(content, len);
    if (t->kind == SERVE_NATIVE) {
        json_t *r = json_pack(
            "{s:i,s:o,s:o,s:i,s:b,s:s,s:i,s:i,s:b,s:b,s:s,s:s,s:i,s:o,s:{s:i,s:i,s:f,s:i,s:i}}",
            "index", 0, "content", text, "tokens",
            p->return_tokens ? token_ids(tokens, n_tokens) : json_array(), "id_slot",
            (int)t->id_slot, "stop", 1, "model", p->model, "tokens_predicted", (int)t->n_predicted,
            "tokens_evaluated", (int)t->n_prompt_used, "has_new_line",
            len > 0 && memchr(content, '\n', len) != NULL, "truncated", t->truncated, "stop_type",
            stop_type(t->finish), "stopping_word", t->stopping_word, "tokens_cached",
            (int)(t->n_prompt_used + t->n_predicted), "timings", timings_json(t),
            "generation_settings", "n_ctx", (int)cfg->n_ctx_slot, "n_predict", (int)p->n_predict,
            "temperature", (double)p->sampling.temp, "top_k", (int)p->sampling.top_k, "n_keep",
            (int)p->n_keep);
        if (p->logprobs && r) {
            serve_json_set(&r, "completion_probabilities", logprobs_chat(model, tokens, n_tokens));
        }
        return r;
    }
    json_t *lp = choice_logprobs(t, model, tokens, n_tokens);
    json_t *choice;
    if (t->kind == SERVE_CHAT) {
        choice = json_pack("{s:i,s:{s:s,s:o},s:o,s:s}", "index", 0, "message", "role", "assistant",
                           "content", text, "logprobs", lp, "finish_reason", finish_name(t->finish));
    } else {
        choice = json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "text", text, "logprobs", lp,
                           "finish_reason", finish_name(t->finish));
    }
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:[o],s:o,s:o}", "id", id, "object",
                     t->kind == SERVE_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)created,
                     "model", p->model, "system_fingerprint", "ctxshift-" CS_VERSION_STRING, "choices",
                     choice, "usage", serve_json_usage(t), "timings", timings_json(t));
}

json_t *serve_json_chunk(const serve_task *t, const cs_model *model, const char *content, size_t len,
                         const serve_token_info *tokens, int32_t n_tokens, bool first,
                         const char *id, int64_t created) {
    const serve_params *p = &t->p;
    if (t->kind == SERVE_NATIVE) {
        json_t *r = json_pack("{s:i,s:o,s:o,s:b,s:i,s:i,s:i}", "index", 0, "content",
                              serve_json_text(content, len), "tokens", token_ids(tokens, n_tokens),
                              "stop", 0, "id_slot", -1, "tokens_predicted", 0, "tokens_evaluated",
                              (int)t->n_prompt);
        if (p->logprobs && r) {
            serve_json_set(&r, "completion_probabilities", logprobs_chat(model, tokens, n_tokens));
        }
        return r;
    }
    json_t *lp = choice_logprobs(t, model, tokens, n_tokens);
    json_t *choice;
    if (t->kind == SERVE_CHAT) {
        json_t *delta = json_object();
        if (first) serve_json_set(&delta, "role", json_string("assistant"));
        serve_json_set(&delta, "content", serve_json_text(content, len));
        choice = json_pack("{s:i,s:o,s:o,s:n}", "index", 0, "delta", delta, "logprobs", lp,
                           "finish_reason");
    } else {
        choice = json_pack("{s:i,s:o,s:o,s:n}", "index", 0, "text", serve_json_text(content, len),
                           "logprobs", lp, "finish_reason");
    }
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:[o]}", "id", id, "object",
                     t->kind == SERVE_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)created, "model", p->model, "system_fingerprint",
                     "ctxshift-" CS_VERSION_STRING, "choices", choice);
}
