/* serve_api.h: the JSON side of `ctxshift serve` (serve_api.c): request
 * fields into serve_params, with an error that names the field, and the
 * response shapes of llama-server (/completion) and OpenAI (/v1/...). */
#ifndef CS_TOOLS_SERVE_API_H
#define CS_TOOLS_SERVE_API_H

#include <jansson.h>

#include "serve.h"

/* A client error: HTTP status (4xx) and message. */
typedef struct serve_error {
    int32_t status;
    char msg[512];
} serve_error;

/* Fill err (status 400) with a formatted message; returns false. */
bool serve_fail(serve_error *err, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse the generation fields of a request body into p (defaults first;
 * kind decides which names apply: OpenAI's max_tokens / logprobs /
 * top_logprobs, or llama-server's n_predict / n_probs, both accepted as
 * llama-server does). Returns false with err set (the field named) for a
 * wrong type, a value out of range, n != 1, an unknown id_slot. */
bool serve_parse_params(const json_t *body, int32_t kind, const serve_config *cfg,
                        const cs_model *model, serve_params *p, serve_error *err);

/* Tokenize a prompt field: a string, an array of token ids, or an array
 * mixing strings and ids (one prompt); BOS added when the model adds one
 * and the prompt does not start with it; special-token text is parsed
 * (llama-server's behaviour for raw prompts). Returns false with err set. */
bool serve_tokenize_prompt(const json_t *prompt, const cs_model *model, const char *field,
                           cs_token **out, int32_t *n_out, serve_error *err);

/* Make jansson allocate through the server's functions (malloc and free,
 * plus the note serve_json_load reads); idempotent, and harmless for values
 * already allocated. serve_http_start calls it. */
void serve_json_use_alloc(void);

/* json_loadb of a request body; on failure *oom tells a failed allocation
 * (a 500) from invalid JSON (a 400): jansson 2.14 reports most allocation
 * failures of its lexer as syntax errors, and one (its token buffer's
 * growth) not at all, returning a string with a character missing; any
 * failed allocation during the parse makes it NULL with *oom true. Needs
 * serve_json_use_alloc. */
json_t *serve_json_load(const char *buf, size_t len, size_t flags, json_error_t *je, bool *oom);

/* JSON_COMPACT text of j (malloc'd, NUL-terminated), or NULL when any
 * allocation fails. Use it, not json_dumps: jansson 2.14's json_dumps
 * ignores a failure while writing an object's key and can return text with
 * that key cut (valid-looking output, wrong content). Cost: one pass over
 * j, the buffer doubling as it grows. */
char *serve_json_dumps(const json_t *j);

/* Append v to *arr (reference stolen). False, with *arr released and set
 * to NULL, when either is NULL or the append fails for want of memory: a
 * reply is whole or not built (a 500), never a 200 with an element
 * missing. jansson's own append and set report failure in a return value
 * that is easy to drop; every reply the server builds goes through these. */
bool serve_json_append(json_t **arr, json_t *v);
/* Set (*o)[key] = v (reference stolen), as serve_json_append. */
bool serve_json_set(json_t **o, const char *key, json_t *v);

/* Whether s[0, len) is UTF-8 that json_stringn accepts (NUL included);
 * allocates nothing. */
bool serve_utf8_valid(const char *s, size_t len);

/* Valid UTF-8 copy of s[0, len) as a JSON string (invalid bytes become
 * U+FFFD). New reference, NULL only on allocation failure. */
json_t *serve_json_text(const char *s, size_t len);

/* The response bodies. content: the whole generated text (non-stream) or
 * this event's delta (stream); tokens/n_tokens: the token infos it covers. */
json_t *serve_json_final(const serve_task *t, const serve_config *cfg, const cs_model *model,
                         const char *content, size_t len, const serve_token_info *tokens,
                         int32_t n_tokens, const char *id, int64_t created);
/* One stream chunk for an event (final false) or the finishing chunk. */
json_t *serve_json_chunk(const serve_task *t, const cs_model *model, const char *content, size_t len,
                         const serve_token_info *tokens, int32_t n_tokens, bool first,
                         const char *id, int64_t created);
/* The OpenAI usage object of a finished task. */
json_t *serve_json_usage(const serve_task *t);
/* {"error":{"code","message","type"}} for an HTTP status. */
json_t *serve_json_error(int32_t status, const char *msg);
/* OpenAI's error type name for a status. */
const char *serve_error_type(int32_t status);

#endif /* CS_TOOLS_SERVE_API_H */
