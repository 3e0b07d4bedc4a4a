/* args.c: strict flag parsing and shared helpers of the ctxshift tools. */
#include "args.h"

#include "tools.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ messages */

void tool_verror(const char *fmt, va_list ap) {
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void tool_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tool_verror(fmt, ap);
    va_end(ap);
}

int tool_fail_lib(cs_status st, const char *what) {
    const char *msg = cs_last_error();
    if (msg[0] == '\0') msg = cs_status_str(st);
    if (what == NULL || strstr(msg, what) != NULL) {
        tool_error("%s", msg);
    } else {
        tool_error("%s: %s", what, msg);
    }
    return TOOL_EXIT_FAIL;
}

static void tool_log_cb(int32_t level, const char *msg, void *user) {
    const bool verbose = user != NULL;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level == CS_LOG_ERROR && !verbose) return; /* reported via cs_last_error() */
    const char *name = level >= 0 && level <= CS_LOG_DEBUG ? names[level] : "log";
    fprintf(stderr, "%s: %s\n", name, msg);
}

void tool_log_setup(bool verbose) {
    /* The user pointer only carries the flag; any non-NULL value means verbose. */
    static int verbose_tag;
    cs_log_set(tool_log_cb, verbose ? &verbose_tag : NULL, verbose ? CS_LOG_DEBUG : CS_LOG_WARN);
}

/* ------------------------------------------------------------ arguments */

bool tool_arg_is(const char *arg, const char *short_name, const char *long_name) {
    return (short_name != NULL && strcmp(arg, short_name) == 0) ||
           (long_name != NULL && strcmp(arg, long_name) == 0);
}

int tool_arg_value(tool_args *it, const char **out) {
    const char *flag = it->argv[it->i];
    if (it->i + 1 >= it->argc) {
        tool_error("%s: missing value", flag);
        return TOOL_EXIT_USAGE;
    }
    it->i++;
    *out = it->argv[it->i];
    return 0;
}

int tool_arg_unknown(const char *cmd, const char *arg) {
    if (arg[0] == '-') {
        tool_error("%s: unknown flag '%s' (see 'ctxshift %s --help')", cmd, arg, cmd);
    } else {
        tool_error("%s: unexpected argument '%s' (see 'ctxshift %s --help')", cmd, arg, cmd);
    }
    return TOOL_EXIT_USAGE;
}

int tool_parse_i64(const char *flag, const char *text, int64_t min, int64_t max, int64_t *out) {
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    /* strtoll skips leading white space; a flag value must be the number alone. */
    if (text[0] == '\0' || isspace((unsigned char)text[0]) || end == text || *end != '\0') {
        tool_error("%s: '%s' is not an integer", flag, text);
        return TOOL_EXIT_USAGE;
    }
    if (errno == ERANGE || v < min || v > max) {
        tool_error("%s: '%s' is out of range [%lld, %lld]", flag, text, (long long)min,
                   (long long)max);
        return TOOL_EXIT_USAGE;
    }
    *out = (int64_t)v;
    return 0;
}

int tool_parse_i32(const char *flag, const char *text, int32_t min, int32_t max, int32_t *out) {
    int64_t v = 0;
    const int rc = tool_parse_i64(flag, text, min, max, &v);
    if (rc == 0) *out = (int32_t)v;
    return rc;
}

int tool_parse_f32(const char *flag, const char *text, float min, float max, float *out) {
    char *end = NULL;
    errno = 0;
    const double v = strtod(text, &end);
    if (text[0] == '\0' || isspace((unsigned char)text[0]) || end == text || *end != '\0' ||
        isnan(v)) {
        tool_error("%s: '%s' is not a number", flag, text);
        return TOOL_EXIT_USAGE;
    }
    if (errno == ERANGE || isinf(v) || v < (double)min || v > (double)max) {
        tool_error("%s: '%s' is out of range [%g, %g]", flag, text, (double)min, (double)max);
        return TOOL_EXIT_USAGE;
    }
    *out = (float)v;
    return 0;
}

int tool_parse_i32_list(const char *flag, const char *text, int32_t min, int32_t max, int32_t *out,
                        int32_t cap, int32_t *n) {
    char item[64];
    int32_t count = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof(item)) {
            tool_error("%s: '%s' is not a comma-separated list of integers", flag, text);
            return TOOL_EXIT_USAGE;
        }
        if (count >= cap) {
            tool_error("%s: '%s' has more than %d values", flag, text, (int)cap);
            return TOOL_EXIT_USAGE;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        const int rc = tool_parse_i32(flag, item, min, max, &out[count]);
        if (rc != 0) return rc;
        count++;
        if (comma == NULL) break;
        p = comma + 1;
    }
    *n = count;
    return 0;
}

int tool_parse_cache_type(const char *flag, const char *text, int32_t *out) {
    const int32_t t = cs_type_from_name(text);
    if (t != CS_TYPE_F32 && t != CS_TYPE_F16 && t != CS_TYPE_Q8_0) {
        tool_error("%s: '%s' is not a KV cache type (f32, f16, q8_0)", flag, text);
        return TOOL_EXIT_USAGE;
    }
    *out = t;
    return 0;
}

tool_common tool_common_defaults(uint32_t accepts) {
    return (tool_common){
        .accepts = accepts,
        .model = CS_DEFAULT_MODEL,
        .n_threads = 0,
        .n_ctx = 0,
        .ctx_min = 0,
        .ctx_max = INT32_MAX,
        .n_batch = 2048,
        .batch_max = INT32_MAX,
        .type_k = CS_TYPE_F16,
        .type_v = CS_TYPE_F16,
        .defrag_thold = cs_context_default_params().defrag_thold,
    };
}

int tool_parse_sampling(tool_args *it, cs_sampler_params *sp, bool *handled) {
    const char *a = it->argv[it->i];
    const char *v = NULL;
    int rc = 0;
    *handled = true;
    if (tool_arg_is(a, NULL, "--temp")) {
        if ((rc = tool_arg_value(it, &v)) == 0) rc = tool_parse_f32(a, v, -1e6f, 1e6f, &sp->temp);
    } else if (tool_arg_is(a, NULL, "--top-k")) {
        if ((rc = tool_arg_value(it, &v)) == 0) rc = tool_parse_i32(a, v, 0, INT32_MAX, &sp->top_k);
    } else if (tool_arg_is(a, NULL, "--top-p")) {
        if ((rc = tool_arg_value(it, &v)) == 0) rc = tool_parse_f32(a, v, 0, 1, &sp->top_p);
    } else if (tool_arg_is(a, NULL, "--min-p")) {
        if ((rc = tool_arg_value(it, &v)) == 0) rc = tool_parse_f32(a, v, 0, 1, &sp->min_p);
    } else if (tool_arg_is(a, NULL, "--repeat-penalty")) {
        if ((rc = tool_arg_value(it, &v)) == 0)
            rc = tool_parse_f32(a, v, 0, 1e6f, &sp->repeat_penalty);
    } else if (tool_arg_is(a, NULL, "--repeat-last-n")) {
        if ((rc = tool_arg_value(it, &v)) == 0)
            rc = tool_parse_i32(a, v, -1, INT32_MAX, &sp->repeat_last_n);
    } else {
        *handled = false;
    }
    return rc;
}

int tool_parse_common(tool_args *it, tool_common *c, bool *handled) {
    const char *a = it->argv[it->i];
    const char *v = NULL;
    int rc = 0;
    const uint32_t f = c->accepts;
    *handled = true;
    if (tool_arg_is(a, "-h", "--help")) {
        c->help = true;
    } else if (tool_arg_is(a, "-v", "--verbose")) {
        c->verbose = true;
    } else if ((f & TOOL_FLAG_KV_MAP) && tool_arg_is(a, NULL, "--kv-map")) {
        c->kv_map = true;
    } else if ((f & TOOL_FLAG_KV_MAP) && tool_arg_is(a, NULL, "--kv-map-svg")) {
        if ((rc = tool_arg_value(it, &v)) == 0) c->kv_map_svg = v;
    } else if ((f & TOOL_FLAG_MODEL) && tool_arg_is(a, "-m", "--model")) {
        if ((rc = tool_arg_value(it, &v)) == 0) c->model = v;
    } else if ((f & TOOL_FLAG_THREADS) && tool_arg_is(a, "-t", "--threads")) {
        if ((rc = tool_arg_value(it, &v)) == 0) rc = tool_parse_i32(a, v, 1, 4096, &c->n_threads);
    } else if ((f & TOOL_FLAG_CTX) && tool_arg_is(a, "-c", "--ctx-size")) {
        if ((rc = tool_arg_value(it, &v)) == 0)
            rc = tool_parse_i32(a, v, c->ctx_min, c->ctx_max, &c->n_ctx);
    } else if ((f & TOOL_FLAG_BATCH) && tool_arg_is(a, "-b", "--batch-size")) {
        if ((rc = tool_arg_value(it, &v)) == 0)
            rc = tool_parse_i32(a, v, 1, c->batch_max, &c->n_batch);
    } else if ((f & TOOL_FLAG_CACHE_TYPES) && tool_arg_is(a, "-ctk", "--cache-type-k")) {
        if ((rc = tool_arg_value(it, &v)) == 0) rc = tool_parse_cache_type(a, v, &c->type_k);
    } else if ((f & TOOL_FLAG_CACHE_TYPES) && tool_arg_is(a, "-ctv", "--cache-type-v")) {
        if ((rc = tool_arg_value(it, &v)) == 0) rc = tool_parse_cache_type(a, v, &c->type_v);
    } else if ((f & TOOL_FLAG_DEFRAG) && tool_arg_is(a, "-dt", "--defrag-thold")) {
        if ((rc = tool_arg_value(it, &v)) == 0)
            rc = tool_parse_f32(a, v, -1.0f, 1.0f, &c->defrag_thold);
    } else {
        *handled = false;
    }
    return rc;
}

bool tool_begin(int *rc, const tool_common *c, void (*usage)(FILE *f)) {
    if (*rc != 0) return false;
    if (c->help) {
        usage(stdout);
        *rc = TOOL_EXIT_OK;
        return false;
    }
    tool_log_setup(c->verbose);
    return true;
}

/* ------------------------------------------------------------ utilities */

int32_t tool_default_threads(void) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > 512 ? 512 : (int32_t)n;
}

uint64_t tool_time_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tool_read_file(const char *path, char **data, size_t *len) {
    int rc = TOOL_EXIT_FAIL;
    char *buf = NULL;
    size_t size = 0, cap = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        tool_error("%s: %s", path, strerror(errno));
        goto done;
    }
    for (;;) {
        if (cap - size < 4096) {
            const size_t new_cap = cap == 0 ? 65536 : cap * 2;
            char *p = realloc(buf, new_cap + 1);
            if (p == NULL) {
                tool_error("%s: out of memory reading the file", path);
                goto done;
            }
            buf = p;
            cap = new_cap;
        }
        const size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        tool_error("%s: read error", path);
        goto done;
    }
    buf[size] = '\0';
    *data = buf;
    *len = size;
    buf = NULL;
    rc = 0;
done:
    if (f != NULL) fclose(f);
    free(buf);
    return rc;
}

int tool_load_model(const char *path, bool vocab_only, cs_model **out) {
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = vocab_only;
    const cs_status st = cs_model_load(path, &mp, out);
    if (st != CS_OK) {
        *out = NULL;
        return tool_fail_lib(st, path);
    }
    return 0;
}

int tool_tokenize(const cs_model *model, const char *text, size_t len, bool add_special,
                  bool parse_special, cs_token **tokens, int32_t *n_tokens) {
    /* Every byte gives at most one token, plus BOS/EOS: a first guess that is
     * usually enough; the negative return gives the exact need otherwise. */
    if (len > (size_t)INT32_MAX - 16) {
        tool_error("text of %zu bytes is too long to tokenize", len);
        return TOOL_EXIT_FAIL;
    }
    int32_t cap = (int32_t)len + 8;
    for (int attempt = 0; attempt < 2; attempt++) {
        cs_token *buf = malloc((size_t)cap * sizeof(cs_token));
        if (buf == NULL) {
            tool_error("out of memory for %d tokens", (int)cap);
            return TOOL_EXIT_FAIL;
        }
        const int32_t n = cs_tokenize(model, text, len, buf, cap, add_special, parse_special);
        if (n >= 0) {
            *tokens = buf;
            *n_tokens = n;
            return 0;
        }
        free(buf);
        if (n == INT32_MIN) return tool_fail_lib(CS_ERR_INVALID_ARG, "tokenize");
        cap = -n;
    }
    tool_error("tokenize: the token count changed between calls");
    return TOOL_EXIT_FAIL;
}

int32_t tool_token_piece(const cs_model *model, cs_token token, bool special, char **buf,
                         size_t *cap) {
    if (*buf == NULL || *cap == 0) {
        char *p = malloc(64);
        if (p == NULL) return -1;
        *buf = p;
        *cap = 64;
    }
    int32_t n = cs_token_to_piece(model, token, *buf, *cap, special);
    if (n == INT32_MIN) return -1;
    if (n < 0) {
        char *p = realloc(*buf, (size_t)-n);
        if (p == NULL) return -1;
        *buf = p;
        *cap = (size_t)-n;
        n = cs_token_to_piece(model, token, *buf, *cap, special);
        if (n < 0) return -1;
    }
    return n;
}

const char *tool_weight_type_names(char *buf, size_t cap, bool skip_f32) {
    int32_t types[64];
    int32_t n = cs_weight_types(types, 64);
    if (n > 64) n = 64;
    size_t len = 0;
    if (cap > 0) buf[0] = '\0';
    for (int32_t i = 0; i < n; i++) {
        if (skip_f32 && types[i] == CS_TYPE_F32) continue;
        const char *name = cs_type_name(types[i]);
        const size_t need = strlen(name) + (len ? 2 : 0);
        if (len + need + 1 > cap) break;
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", name);
    }
    return buf;
}

void tool_json_string(FILE *file, const char *s, size_t len) {
    fputc('"', file);
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            fputs("\\\"", file);
            break;
        case '\\':
            fputs("\\\\", file);
            break;
        case '\n':
            fputs("\\n", file);
            break;
        case '\r':
            fputs("\\r", file);
            break;
        case '\t':
            fputs("\\t", file);
            break;
        case '\b':
            fputs("\\b", file);
            break;
        case '\f':
            fputs("\\f", file);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                fprintf(file, "\\u%04x", (unsigned)c);
            } else {
                fputc((int)c, file);
            }
        }
    }
    fputc('"', file);
}
