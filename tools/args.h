/* args.h: strict command-line parsing and small helpers shared by the
 * ctxshift subcommands (tools/cmd_*.c). Tools use only the public API
 * (ctxshift.h) and the C library / POSIX.
 *
 * Error convention: every helper that can fail prints "error: <message>" to
 * stderr itself and returns the exit code to use (TOOL_EXIT_USAGE for a bad
 * flag or value, TOOL_EXIT_FAIL for a runtime failure); 0 means success. */
#ifndef CS_TOOLS_ARGS_H
#define CS_TOOLS_ARGS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ctxshift.h"

enum { TOOL_EXIT_OK = 0, TOOL_EXIT_FAIL = 1, TOOL_EXIT_USAGE = 2 };

#if defined(__GNUC__) || defined(__clang__)
#define TOOL_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#else
#define TOOL_PRINTF(fmt_idx, arg_idx)
#endif

/* ------------------------------------------------------------ messages */

/* Print "error: <formatted message>\n" to stderr. */
void tool_error(const char *fmt, ...) TOOL_PRINTF(1, 2);
/* The same with a va_list, for helpers that take a message format. */
void tool_verror(const char *fmt, va_list ap) TOOL_PRINTF(1, 0);

/* Report a failed library call: prints "error: <what>: <cs_last_error()>"
 * (or just the library message when it already names `what`) and returns
 * TOOL_EXIT_FAIL. `what` may be NULL. */
int tool_fail_lib(cs_status st, const char *what);

/* Install the log callback: warnings always, info and debug lines with
 * verbose. Library errors are not echoed (the tools print cs_last_error()
 * themselves), except with verbose. */
void tool_log_setup(bool verbose);

/* ------------------------------------------------------------ arguments */

/* A cursor over argv[first, argc) of one subcommand. */
typedef struct tool_args {
    int argc;
    char **argv;
    int i; /* index of the argument being looked at */
} tool_args;

/* True when arg equals short_name or long_name (either may be NULL). */
bool tool_arg_is(const char *arg, const char *short_name, const char *long_name);

/* Take the value that follows the flag at it->i (advancing it->i). Returns 0,
 * or TOOL_EXIT_USAGE with "error: <flag>: missing value" when there is none. */
int tool_arg_value(tool_args *it, const char **out);

/* Print "error: <cmd>: unknown flag '<arg>' (see 'ctxshift <cmd> --help')"
 * and return TOOL_EXIT_USAGE. */
int tool_arg_unknown(const char *cmd, const char *arg);

/* Parse a whole string as a base-10 integer in [min, max]. On failure prints
 * "error: <flag>: '<text>' is not an integer" or "... is out of range [min,
 * max]" and returns TOOL_EXIT_USAGE; *out is untouched then. */
int tool_parse_i32(const char *flag, const char *text, int32_t min, int32_t max, int32_t *out);
int tool_parse_i64(const char *flag, const char *text, int64_t min, int64_t max, int64_t *out);

/* Parse a whole string as a finite number in [min, max]. */
int tool_parse_f32(const char *flag, const char *text, float min, float max, float *out);

/* Parse a comma-separated list of integers in [min, max] ("1,2,4") into
 * out[0, cap). *n receives the count. Empty items and more than cap items
 * are errors. */
int tool_parse_i32_list(const char *flag, const char *text, int32_t min, int32_t max, int32_t *out,
                        int32_t cap, int32_t *n);

/* Parse a KV cache type name (f32, f16 or q8_0). */
int tool_parse_cache_type(const char *flag, const char *text, int32_t *out);

/* The shared flags a tool takes (tool_common.accepts). -h / --help and
 * -v / --verbose are always taken. */
enum {
    TOOL_FLAG_MODEL = 1u << 0,       /* -m, --model FILE */
    TOOL_FLAG_THREADS = 1u << 1,     /* -t, --threads N in [1, 4096] */
    TOOL_FLAG_CTX = 1u << 2,         /* -c, --ctx-size N in [ctx_min, ctx_max] */
    TOOL_FLAG_BATCH = 1u << 3,       /* -b, --batch-size N in [1, batch_max] */
    TOOL_FLAG_CACHE_TYPES = 1u << 4, /* -ctk, --cache-type-k / -ctv, --cache-type-v TYPE */
    TOOL_FLAG_DEFRAG = 1u << 5,      /* -dt, --defrag-thold X in [-1, 1] */
    TOOL_FLAG_KV_MAP = 1u << 6,      /* --kv-map, --kv-map-svg FILE */
};

/* The values of the flags that several tools share. Every options struct
 * embeds one by value (`opts.common`), starts from tool_common_defaults and
 * then sets its own defaults by field name. A flag outside `accepts` is left
 * to the tool's own branches (and so to tool_arg_unknown); its field keeps
 * the default, which tool_context_new still uses. */
typedef struct tool_common {
    uint32_t accepts; /* TOOL_FLAG_* */
    bool help;
    bool verbose;
    const char *model;      /* default CS_DEFAULT_MODEL */
    int32_t n_threads;      /* default 0: number of cores */
    int32_t n_ctx;          /* default 0: the model's training context */
    int32_t ctx_min;        /* range of -c, default [0, INT32_MAX] */
    int32_t ctx_max;        /* */
    int32_t n_batch;        /* default 2048; capped at the context by tool_context_new */
    int32_t batch_max;      /* range of -b is [1, batch_max], default INT32_MAX */
    int32_t type_k;         /* default CS_TYPE_F16 */
    int32_t type_v;         /* default CS_TYPE_F16 */
    float defrag_thold;     /* default: the library's (never) */
    bool kv_map;            /* --kv-map: text maps to stderr */
    const char *kv_map_svg; /* --kv-map-svg FILE, or NULL */
} tool_common;

/* The shared defaults above, taking the flags in `accepts`. */
tool_common tool_common_defaults(uint32_t accepts);

/* Parse it->argv[it->i] when it is one of the shared flags that c accepts:
 * sets *handled, takes the value (advancing it->i) and stores it in c.
 * Returns 0 or the exit code of a missing / bad value (the message is
 * printed, with the same wording as tool_arg_value and tool_parse_*).
 * *handled is false, and nothing is consumed, for any other argument. */
int tool_parse_common(tool_args *it, tool_common *c, bool *handled);

/* The sampling flags of run and chat, as tool_parse_common: --temp,
 * --top-k, --top-p, --min-p, --repeat-penalty and --repeat-last-n (-1:
 * the context size, resolved by the tool) into sp. */
int tool_parse_sampling(tool_args *it, cs_sampler_params *sp, bool *handled);

/* Help lines shared by the tools that align their flags in 29 columns. */
#define TOOL_HELP_THREADS "  -t,   --threads N          worker threads (default: number of cores)\n"
#define TOOL_HELP_CACHE_TYPES                                                                      \
    "  -ctk, --cache-type-k TYPE  K cache type: f32, f16 or q8_0 (default: f16)\n"                 \
    "  -ctv, --cache-type-v TYPE  V cache type: f32, f16 or q8_0 (default: f16)\n"
#define TOOL_HELP_VERBOSE "  -v,   --verbose            print the library's info and debug log\n"
#define TOOL_HELP_HELP    "  -h,   --help               print this help\n"

/* The start every tool_common tool shares, after its parse returned *rc:
 * a parse error, or --help (usage to stdout, *rc = TOOL_EXIT_OK), ends the
 * command (returns false, *rc is its exit code); otherwise the log is set
 * up for -v and the command goes on (returns true). */
bool tool_begin(int *rc, const tool_common *c, void (*usage)(FILE *f));

/* ------------------------------------------------------------ utilities */

/* Number of online cores (at least 1). */
int32_t tool_default_threads(void);

/* Monotonic clock in nanoseconds. */
uint64_t tool_time_ns(void);

/* Read a whole file into a NUL-terminated heap buffer (free() it). Returns 0,
 * or TOOL_EXIT_FAIL after printing "error: <path>: <strerror>". */
int tool_read_file(const char *path, char **data, size_t *len);

/* Load a model, printing the library's message on failure (exit code 1). */
int tool_load_model(const char *path, bool vocab_only, cs_model **out);

/* Tokenize text[0, len) into a heap array (free() it). Returns 0 or
 * TOOL_EXIT_FAIL after printing the error. */
int tool_tokenize(const cs_model *model, const char *text, size_t len, bool add_special,
                  bool parse_special, cs_token **tokens, int32_t *n_tokens);

/* The text of one token into a growable heap buffer *buf of *cap bytes.
 * Returns the byte count (>= 0) or -1 for an invalid token / no memory. */
int32_t tool_token_piece(const cs_model *model, cs_token token, bool special, char **buf,
                         size_t *cap);

/* The names of the weight types the engine computes with (cs_weight_types,
 * the library's type table), ", "-separated, into buf (NUL-terminated;
 * whole names only). skip_f32 leaves out f32 (not a quantize target).
 * Returns buf. */
const char *tool_weight_type_names(char *buf, size_t cap, bool skip_f32);

/* Write s[0, len) to f with JSON string escaping, including the quotes. */
void tool_json_string(FILE *file, const char *s, size_t len);

#endif /* CS_TOOLS_ARGS_H */
