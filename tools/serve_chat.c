/* serve_chat.c: chat messages into prompts (serve_chat.h). */
#include "serve_chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

enum { CHAT_MAX_MESSAGES = 4096 };

const char *serve_chat_choose(const cs_model *model, const char *flag) {
    const char *name = NULL;
    if (flag) {
        if (cs_chat_template_detect(flag, &name) != CS_OK || !name) {
            char list[1024] = "";
            size_t o = 0;
            for (int32_t i = 0; cs_chat_template_name(i) && o + 40 < sizeof(list); i++) {
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "",
                                      cs_chat_template_name(i));
            }
            tool_error("--chat-template '%s' is not a known format (%s)", flag, list);
            return NULL;
        }
        return name;
    }
    const char *tmpl = cs_model_chat_template(model);
    if (tmpl && cs_chat_template_detect(tmpl, &name) == CS_OK && name) return name;
    fprintf(stderr, "serve: warning: %s; using chatml (choose one with --chat-template)\n",
            tmpl ? "the model's chat template matches no known format"
                 : "the model has no chat template");
    return "chatml";
}

/* Messages as cs_chat_message, their content joined from text parts into
 * strs (freed by the caller with free_msgs). */
static bool parse_messages(const json_t *messages, cs_chat_message **out, char ***strs, size_t *n,
                           serve_error *err) {
    *out = NULL;
    *strs = NULL;
    *n = 0;
    if (!messages) return serve_fail(err, 400, "'messages' is required");
    if (!json_is_array(messages)) return serve_fail(err, 400, "'messages' must be an array");
    const size_t count = json_array_size(messages);
    if (count == 0) return serve_fail(err, 400, "'messages' is empty");
    if (count > CHAT_MAX_MESSAGES) {
        return serve_fail(err, 400, "'messages' has %zu entries (at most %d)", count,
                          CHAT_MAX_MESSAGES);
    }
    cs_chat_message *m = calloc(count, sizeof(*m));
    char **s = calloc(count, sizeof(*s));
    if (!m || !s) {
        free(m);
        free(s);
        return serve_fail(err, 500, "out of memory");
    }
    *out = m;
    *strs = s;
    *n = count;
    for (size_t i = 0; i < count; i++) {
        const json_t *msg = json_array_get(messages, i);
        if (!json_is_object(msg)) return serve_fail(err, 400, "'messages'[%zu] must be an object", i);
        const json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role)) {
            return serve_fail(err, 400, "'messages'[%zu].role must be a string", i);
        }
        const char *r = json_string_value(role);
        if (strcmp(r, "developer") == 0) r = "system"; /* OpenAI's newer name for it */
        if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0) {
            return serve_fail(err, 400,
                              "'messages'[%zu].role '%.64s' is not system, user or assistant", i,
                              json_string_value(role));
        }
        m[i].role = r;
        const json_t *content = json_object_get(msg, "content");
        if (json_is_string(content)) {
            if (memchr(json_string_value(content), 0, json_string_length(content))) {
                return serve_fail(err, 400, "'messages'[%zu].content contains NUL", i);
            }
            m[i].content = json_string_value(content);
        } else if (json_is_array(content)) {
            /* content parts: only text parts, joined */
            size_t total = 0, k;
            json_t *part;
            json_array_foreach(content, k, part) {
                const json_t *type = json_object_get(part, "type");
                const json_t *text = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(type) ||
                    strcmp(json_string_value(type), "text") != 0 || !json_is_string(text)) {
                    return serve_fail(err, 400,
                                      "'messages'[%zu].content[%zu] must be {\"type\": \"text\", "
                                      "\"text\": ...} (other parts are not supported)",
                                      i, k);
                }
                total += json_string_length(text);
            }
            s[i] = malloc(total + 1);
            if (!s[i]) return serve_fail(err, 500, "out of memory");
            size_t o = 0;
            json_array_foreach(content, k, part) {
                const json_t *text = json_object_get(part, "text");
                memcpy(s[i] + o, json_string_value(text), json_string_length(text));
                o += json_string_length(text);
            }
            s[i][o] = '\0';
            if (strlen(s[i]) != o) return serve_fail(err, 400, "'messages'[%zu].content contains NUL", i);
            m[i].content = s[i];
        } else if (json_is_null(content) && strcmp(r, "assistant") == 0) {
            m[i].content = "";
        } else {
            return serve_fail(err, 400, "'messages'[%zu].content must be a string or an array of text parts", i);
        }
    }
    return true;
}

static void free_msgs(cs_chat_message *m, char **s, size_t n) {
    for (size_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
    free(m);
}

/* Segments of the rendered chat (malloc'd). */
static bool render_segments(const char *name, const cs_chat_message *m, size_t n,
                            cs_chat_segment **segs, int32_t *n_segs, serve_error *err) {
    const int32_t want = cs_chat_apply_segments(name, m, n, true, NULL, 0);
    if (want < 0) {
        return serve_fail(err, want == CS_ERR_NOMEM ? 500 : 400, "chat template: %s",
                          cs_last_error());
    }
    *segs = malloc((size_t)(want > 0 ? want : 1) * sizeof(cs_chat_segment));
    if (!*segs) return serve_fail(err, 500, "out of memory");
    *n_segs = cs_chat_apply_segments(name, m, n, true, *segs, want);
    if (*n_segs < 0) {
        free(*segs);
        return serve_fail(err, *n_segs == CS_ERR_NOMEM ? 500 : 400, "chat template: %s",
                          cs_last_error());
    }
    return true;
}

bool serve_chat_tokens(const cs_model *model, const cs_chat_segment *segs, int32_t n_segs,
                       cs_token **out, int32_t *n_out, serve_error *err) {
    int32_t want = cs_tokenize_segments(model, segs, (size_t)n_segs, NULL, 0, true);
    /* the segments are valid here: INT32_MIN is the tokenizer's want of
     * memory, a server error */
    if (want == INT32_MIN) return serve_fail(err, 500, "tokenize: %s", cs_last_error());
    want = want < 0 ? -want : want;
    if (want > SERVE_MAX_PROMPT) {
        return serve_fail(err, 400, "the chat has %d tokens (at most %d)", (int)want,
                          SERVE_MAX_PROMPT);
    }
    cs_token *toks = malloc((size_t)(want > 0 ? want : 1) * sizeof(cs_token));
    if (!toks) return serve_fail(err, 500, "out of memory");
    int32_t n = cs_tokenize_segments(model, segs, (size_t)n_segs, toks, want, true);
    if (n < 0) {
        free(toks);
        return serve_fail(err, 500, "tokenize failed");
    }
    /* a template that writes the BOS text itself: one BOS only */
    const cs_token bos = cs_token_bos(model);
    if (n > 1 && bos >= 0 && toks[0] == bos && toks[1] == bos) {
        memmove(toks, toks + 1, (size_t)(n - 1) * sizeof(cs_token));
        n--;
    }
    *out = toks;
    *n_out = n;
    return true;
}

bool serve_chat_prompt(const cs_model *model, const char *name, const json_t *messages,
                       cs_token **out, int32_t *n_out, serve_error *err) {
    cs_chat_message *m;
    char **strs;
    size_t n;
    cs_chat_segment *segs = NULL;
    int32_t n_segs = 0;
    bool ok = parse_messages(messages, &m, &strs, &n, err) &&
              render_segments(name, m, n, &segs, &n_segs, err) &&
              serve_chat_tokens(model, segs, n_segs, out, n_out, err);
    if (ok && *n_out == 0) {
        free(*out);
        ok = serve_fail(err, 400, "the chat renders to no tokens");
    }
    free(segs);
    free_msgs(m, strs, n);
    return ok;
}

bool serve_chat_render(const char *name, const json_t *messages, char **out, size_t *len,
                       serve_error *err) {
    cs_chat_message *m;
    char **strs;
    size_t n;
    bool ok = parse_messages(messages, &m, &strs, &n, err);
    if (ok) {
        const int32_t want = cs_chat_apply_template(name, m, n, true, NULL, 0);
        if (want < 0) {
            ok = serve_fail(err, want == CS_ERR_NOMEM ? 500 : 400, "chat template: %s",
                            cs_last_error());
        } else {
            *out = malloc((size_t)want + 1);
            if (!*out) {
                ok = serve_fail(err, 500, "out of memory");
            } else {
                cs_chat_apply_template(name, m, n, true, *out, (size_t)want + 1);
                *len = (size_t)want;
            }
        }
    }
    free_msgs(m, strs, n);
    return ok;
}
