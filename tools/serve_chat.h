/* serve_chat.h: chat messages of `ctxshift serve` and `ctxshift chat`
 * (serve_chat.c): OpenAI "messages" validated, rendered with a known chat
 * format (cs_chat_apply_segments) and tokenized so that only the
 * template's own text can become special tokens. */
#ifndef CS_TOOLS_SERVE_CHAT_H
#define CS_TOOLS_SERVE_CHAT_H

#include <jansson.h>

#include "serve_api.h"

/* The format the server uses: --chat-template NAME when given (it must be a
 * known name), else the model's tokenizer.chat_template when it matches a
 * known format, else chatml with a warning printed. NULL after printing an
 * error (an unknown --chat-template name). */
const char *serve_chat_choose(const cs_model *model, const char *flag);

/* Tokens of messages rendered with template name plus the assistant
 * prompt: template segments tokenized with special-token parsing, message
 * content without; BOS first when the model adds one. Returns false with
 * err set (400 naming the message and field) for bad messages. */
bool serve_chat_prompt(const cs_model *model, const char *name, const json_t *messages,
                       cs_token **out, int32_t *n_out, serve_error *err);

/* The tokens of a rendered chat (cs_tokenize_segments: one pass, control
 * tokens only from template text), BOS first when the model adds one and
 * only once when the template writes it too, into a malloc'd *out.
 * Returns false with err set (400 when too long, 500 otherwise). */
bool serve_chat_tokens(const cs_model *model, const cs_chat_segment *segs, int32_t n_segs,
                       cs_token **out, int32_t *n_out, serve_error *err);

/* The rendered text (malloc'd, NUL-terminated) for /apply-template. */
bool serve_chat_render(const char *name, const json_t *messages, char **out, size_t *len,
                       serve_error *err);

#endif /* CS_TOOLS_SERVE_CHAT_H */
