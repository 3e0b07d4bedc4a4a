/* chat_template.c: chat formats matched by name or by marker substrings of
 * a Jinja template, and rendered by C code (cs_chat_*), following the
 * formats of llama.cpp's llama_chat_apply_template (src/llama-chat.cpp of
 * the build node-llama-cpp 3.21.1 bundles; tests/chat_template_peer
 * compares byte for byte).
 *
 * The renderer produces segments instead of one string so that template
 * text and message content stay apart: the caller tokenizes template text
 * with special-token parsing and content without. Segments point into
 * static strings and into the caller's messages, so nothing is allocated;
 * the flat string is the concatenation of the segments. */
#include "common.h"
#include "gguf.h"
#include "model.h"

#include <string.h>

/* Format ids index g_names; the order is the public listing order. */
typedef enum {
    F_CHATML,
    F_LLAMA2,
    F_LLAMA2_SYS,
    F_LLAMA2_SYS_BOS,
    F_LLAMA2_SYS_STRIP,
    F_MISTRAL_V1,
    F_MISTRAL_V3,
    F_MISTRAL_V3_TEKKEN,
    F_MISTRAL_V7,
    F_MISTRAL_V7_TEKKEN,
    F_PHI3,
    F_PHI4,
    F_FALCON3,
    F_ZEPHYR,
    F_MONARCH,
    F_GEMMA,
    F_ORION,
    F_OPENCHAT,
    F_VICUNA,
    F_VICUNA_ORCA,
    F_DEEPSEEK,
    F_DEEPSEEK2,
    F_DEEPSEEK3,
    F_COMMAND_R,
    F_LLAMA3,
    F_CHATGLM3,
    F_CHATGLM4,
    F_GLMEDGE,
    F_MINICPM,
    F_EXAONE3,
    F_COUNT,
    F_UNKNOWN = -1,
} chat_format;

static const char *const g_names[F_COUNT] = {
    [F_CHATML] = "chatml",
    [F_LLAMA2] = "llama2",
    [F_LLAMA2_SYS] = "llama2-sys",
    [F_LLAMA2_SYS_BOS] = "llama2-sys-bos",
    [F_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [F_MISTRAL_V1] = "mistral-v1",
    [F_MISTRAL_V3] = "mistral-v3",
    [F_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [F_MISTRAL_V7] = "mistral-v7",
    [F_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken",
    [F_PHI3] = "phi3",
    [F_PHI4] = "phi4",
    [F_FALCON3] = "falcon3",
    [F_ZEPHYR] = "zephyr",
    [F_MONARCH] = "monarch",
    [F_GEMMA] = "gemma",
    [F_ORION] = "orion",
    [F_OPENCHAT] = "openchat",
    [F_VICUNA] = "vicuna",
    [F_VICUNA_ORCA] = "vicuna-orca",
    [F_DEEPSEEK] = "deepseek",
    [F_DEEPSEEK2] = "deepseek2",
    [F_DEEPSEEK3] = "deepseek3",
    [F_COMMAND_R] = "command-r",
    [F_LLAMA3] = "llama3",
    [F_CHATGLM3] = "chatglm3",
    [F_CHATGLM4] = "chatglm4",
    [F_GLMEDGE] = "glmedge",
    [F_MINICPM] = "minicpm",
    [F_EXAONE3] = "exaone3",
};

const char *cs_chat_template_name(int32_t i) {
    return (i >= 0 && i < F_COUNT) ? g_names[i] : NULL;
}

static chat_format format_from_name(const char *name) {
    for (int i = 0; i < F_COUNT; i++)
        if (strcmp(name, g_names[i]) == 0) return (chat_format)i;
    return F_UNKNOWN;
}

/* ------------------------------------------------------------ detection */

static bool has(const char *tmpl, const char *marker) {
    return strstr(tmpl, marker) != NULL;
}

/* llama.cpp's llm_chat_detect_template, in its order. Formats llama.cpp
 * knows and this file does not render (SmolVLM, EXAONE 4 / MoE, Granite,
 * ...) answer F_UNKNOWN at the place where llama.cpp recognizes them, so a
 * template never falls through to a later, wrong match. */
static chat_format detect(const char *t) {
    if (has(t, "<|im_start|>")) {
        if (has(t, "<|im_sep|>")) return F_PHI4;
        if (has(t, "<end_of_utterance>")) return F_UNKNOWN; /* SmolVLM */
        return F_CHATML;
    }
    if (strncmp(t, "mistral", 7) == 0 || has(t, "[INST]")) {
        if (has(t, "[SYSTEM_PROMPT]")) return F_MISTRAL_V7;
        /* Mistral's official v1 template builds "' [INST] ' + system_message";
         * v3 and v3-tekken declare tools with [AVAILABLE_TOOLS]. */
        if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
            if (has(t, " [INST]")) return F_MISTRAL_V1;
            if (has(t, "\"[INST]\"")) return F_MISTRAL_V3_TEKKEN;
            return F_MISTRAL_V3;
        }
        if (has(t, "content.strip()")) return F_LLAMA2_SYS_STRIP;
        if (has(t, "bos_token + '[INST]")) return F_LLAMA2_SYS_BOS;
        if (has(t, "<<SYS>>")) return F_LLAMA2_SYS;
        return F_LLAMA2;
    }
    if (has(t, "<|assistant|>") && has(t, "<|end|>")) return F_PHI3;
    if (has(t, "[gMASK]<sop>")) return F_CHATGLM4;
    if (has(t, "<|assistant|>") && has(t, "<|user|>")) {
        if (has(t, "<|tool_declare|>")) return F_UNKNOWN; /* EXAONE MoE */
        return has(t, "</s>") ? F_FALCON3 : F_GLMEDGE;
    }
    if (has(t, "<|{{ item['role'] }}|>") && has(t, "<|begin_of_image|>")) return F_GLMEDGE;
    if (has(t, "<|user|>") && has(t, "<|endoftext|>")) return F_ZEPHYR;
    if (has(t, "bos_token + message['role']")) return F_MONARCH;
    if (has(t, "<start_of_turn>")) return F_GEMMA;
    if (has(t, "'\\n\\nAssistant: ' + eos_token")) return F_ORION;
    if (has(t, "GPT4 Correct ")) return F_OPENCHAT;
    if (has(t, "USER: ") && has(t, "ASSISTANT: "))
        return has(t, "SYSTEM: ") ? F_VICUNA_ORCA : F_VICUNA;
    if (has(t, "### Instruction:") && has(t, "<|EOT|>")) return F_DEEPSEEK;
    if (has(t, "<|START_OF_TURN_TOKEN|>") && has(t, "<|USER_TOKEN|>")) return F_COMMAND_R;
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) return F_LLAMA3;
    if (has(t, "[gMASK]sop")) return F_CHATGLM3;
    if (has(t, "<\xe7\x94\xa8\xe6\x88\xb7>")) return F_MINICPM; /* "<用户>" */
    if (has(t, "'Assistant: ' + message['content'] + eos_token")) return F_DEEPSEEK2;
    /* "<｜Assistant｜>", "<｜User｜>", "<｜end▁of▁sentence｜>" (full-width bars) */
    if (has(t, "<\xef\xbd\x9c"
               "Assistant\xef\xbd\x9c>") &&
        has(t, "<\xef\xbd\x9c"
               "User\xef\xbd\x9c>") &&
        has(t, "<\xef\xbd\x9c"
               "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"))
        return F_DEEPSEEK3;
    if (has(t, "[|system|]") && has(t, "[|assistant|]") && has(t, "[|endofturn|]"))
        return has(t, "[|tool|]") ? F_UNKNOWN /* EXAONE 4 */ : F_EXAONE3;
    return F_UNKNOWN;
}

cs_status cs_chat_template_detect(const char *tmpl, const char **name) {
    if (name) *name = NULL;
    if (!tmpl || !name)
        return error_fail(CS_ERR_INVALID_ARG, "chat template detect: %s is NULL",
                          !tmpl ? "tmpl" : "name");
    chat_format f = format_from_name(tmpl);
    if (f == F_UNKNOWN) f = detect(tmpl);
    *name = f == F_UNKNOWN ? NULL : g_names[f];
    return CS_OK;
}

const char *cs_model_chat_template(const cs_model *model) {
    if (!model || !model->gguf) return NULL;
    const char *s = NULL;
    int64_t k = gguf_find_key(model->gguf, "tokenizer.chat_template");
    if (k < 0 || gguf_kv_type(model->gguf, k) != GGUF_TYPE_STRING) return NULL;
    if (gguf_get_str(model->gguf, "tokenizer.chat_template", &s, NULL) != CS_OK) return NULL;
    return s;
}

/* ------------------------------------------------------------ rendering */

typedef enum { R_NONE = -1, R_SYSTEM, R_USER, R_ASSISTANT } chat_role;

static const char *const g_roles[] = {"system", "user", "assistant"};

static chat_role role_of(const char *r) {
    for (int i = 0; i < 3; i++)
        if (strcmp(r, g_roles[i]) == 0) return (chat_role)i;
    return R_NONE;
}

/* Where the pieces go: the caller's segment array (segs, n_max) and/or a
 * byte buffer (buf, size: bytes are copied while they fit with room for the
 * NUL); n and len count every piece, written or not. */
typedef struct {
    cs_chat_segment *segs;
    int64_t n_max;
    char *buf;
    size_t size;
    int64_t n;
    size_t len;
} emitter;

static void put(emitter *e, const char *text, size_t len, bool special) {
    if (len == 0) return;
    if (e->n < e->n_max) e->segs[e->n] = (cs_chat_segment){text, len, special};
    if (e->buf && e->len < e->size && len < e->size - e->len) memcpy(e->buf + e->len, text, len);
    e->n++;
    e->len += len;
}

/* Template text (static, NUL-terminated). */
static void tpl(emitter *e, const char *s) {
    put(e, s, strlen(s), true);
}

/* Message content: the whole of it, or without the leading and trailing
 * C-locale white space (llama.cpp's trim) when trim. */
static void content(emitter *e, const char *s, bool trim) {
    size_t len = strlen(s);
    if (trim) {
        static const char ws[] = " \t\n\v\f\r";
        while (len > 0 && memchr(ws, s[0], sizeof ws - 1)) s++, len--;
        while (len > 0 && memchr(ws, s[len - 1], sizeof ws - 1)) len--;
    }
    put(e, s, len, false);
}

static size_t trimmed_len(const char *s) {
    emitter e = {.n_max = 0};
    content(&e, s, true);
    return e.len;
}

/* The role of message i of m (checked by apply() before rendering). */
#define ROLE(i) role_of(m[(i)].role)

/* Gemma and Orion have no system turn: the system messages since the last
 * user turn are prepended to the next user turn (llama.cpp concatenates
 * them with no separator, then adds "\n\n"). Emits those of msgs[from, to)
 * and reports whether there was anything. */
static bool flush_system(emitter *e, const cs_chat_message *m, size_t from, size_t to, bool trim) {
    size_t total = 0;
    for (size_t i = from; i < to; i++)
        if (ROLE(i) == R_SYSTEM) total += trim ? trimmed_len(m[i].content) : strlen(m[i].content);
    if (total == 0) return false;
    for (size_t i = from; i < to; i++)
        if (ROLE(i) == R_SYSTEM) content(e, m[i].content, trim);
    tpl(e, "\n\n");
    return true;
}

/* "<|role|>" markers of phi3, zephyr, falcon3 and the GLM formats. */
static void bar_role(emitter *e, chat_role r, const char *after) {
    tpl(e, "<|");
    tpl(e, g_roles[r]);
    tpl(e, "|>");
    tpl(e, after);
}

#define DS_BAR(x) "<\xef\xbd\x9c" x "\xef\xbd\x9c>" /* <｜x｜>, full-width bars */
#define DS_EOS    DS_BAR("end\xe2\x96\x81of\xe2\x96\x81sentence")

/* Roles are looked up again at each use (a strcmp or three) rather than
 * kept in an array, so that nothing is allocated; apply() has checked
 * them. */
static void render(chat_format f, const cs_chat_message *m, size_t n, bool add_ass, emitter *e) {
    switch (f) {
    case F_CHATML:
    case F_PHI4: {
        const char *sep = f == F_PHI4 ? "<|im_sep|>" : "\n";
        const char *end = f == F_PHI4 ? "<|im_end|>" : "<|im_end|>\n";
        for (size_t i = 0; i < n; i++) {
            tpl(e, "<|im_start|>");
            tpl(e, g_roles[ROLE(i)]);
            tpl(e, sep);
            content(e, m[i].content, false);
            tpl(e, end);
        }
        if (add_ass) {
            tpl(e, "<|im_start|>assistant");
            tpl(e, sep);
        }
        break;
    }
    case F_MISTRAL_V7:
    case F_MISTRAL_V7_TEKKEN: {
        const char *sp = f == F_MISTRAL_V7 ? " " : "";
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_SYSTEM) {
                tpl(e, "[SYSTEM_PROMPT]");
                tpl(e, sp);
                content(e, m[i].content, false);
                tpl(e, "[/SYSTEM_PROMPT]");
            } else if (ROLE(i) == R_USER) {
                tpl(e, "[INST]");
                tpl(e, sp);
                content(e, m[i].content, false);
                tpl(e, "[/INST]");
            } else {
                tpl(e, sp);
                content(e, m[i].content, false);
                tpl(e, "</s>");
            }
        }
        break;
    }
    case F_MISTRAL_V1:
    case F_MISTRAL_V3:
    case F_MISTRAL_V3_TEKKEN: {
        const char *lead = f == F_MISTRAL_V1 ? " " : "";
        const char *trail = f == F_MISTRAL_V3_TEKKEN ? "" : " ";
        bool in_turn = false;
        for (size_t i = 0; i < n; i++) {
            if (!in_turn) {
                tpl(e, lead);
                tpl(e, "[INST]");
                tpl(e, trail);
                in_turn = true;
            }
            if (ROLE(i) == R_SYSTEM) {
                content(e, m[i].content, false);
                tpl(e, "\n\n");
            } else if (ROLE(i) == R_USER) {
                content(e, m[i].content, false);
                tpl(e, lead);
                tpl(e, "[/INST]");
            } else {
                tpl(e, trail);
                content(e, m[i].content, f == F_MISTRAL_V3);
                tpl(e, "</s>");
                in_turn = false;
            }
        }
        break;
    }
    case F_LLAMA2:
    case F_LLAMA2_SYS:
    case F_LLAMA2_SYS_BOS:
    case F_LLAMA2_SYS_STRIP: {
        bool strip = f == F_LLAMA2_SYS_STRIP;
        bool in_turn = true; /* the first "[INST] " comes without BOS */
        tpl(e, "[INST] ");
        for (size_t i = 0; i < n; i++) {
            if (!in_turn) {
                in_turn = true;
                tpl(e, f == F_LLAMA2_SYS_BOS ? "<s>[INST] " : "[INST] ");
            }
            if (ROLE(i) == R_SYSTEM) {
                /* plain llama2 has no system block: the text goes first */
                if (f != F_LLAMA2) tpl(e, "<<SYS>>\n");
                content(e, m[i].content, strip);
                tpl(e, f != F_LLAMA2 ? "\n<</SYS>>\n\n" : "\n");
            } else if (ROLE(i) == R_USER) {
                content(e, m[i].content, strip);
                tpl(e, " [/INST]");
            } else {
                content(e, m[i].content, strip);
                tpl(e, "</s>");
                in_turn = false;
            }
        }
        break;
    }
    case F_PHI3:
    case F_ZEPHYR:
    case F_FALCON3: {
        const char *end = f == F_PHI3 ? "<|end|>\n" : f == F_ZEPHYR ? "<|endoftext|>\n" : "\n";
        for (size_t i = 0; i < n; i++) {
            bar_role(e, ROLE(i), "\n");
            content(e, m[i].content, false);
            tpl(e, end);
        }
        if (add_ass) tpl(e, "<|assistant|>\n");
        break;
    }
    case F_MONARCH:
        for (size_t i = 0; i < n; i++) {
            if (i > 0) tpl(e, "<s>"); /* BOS inside the history, not before the first */
            tpl(e, g_roles[ROLE(i)]);
            tpl(e, "\n");
            content(e, m[i].content, false);
            tpl(e, "</s>\n");
        }
        if (add_ass) tpl(e, "<s>assistant\n");
        break;
    case F_GEMMA: {
        size_t sys_from = 0; /* system messages in [sys_from, i) are pending */
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_SYSTEM) continue;
            tpl(e, "<start_of_turn>");
            tpl(e, ROLE(i) == R_ASSISTANT ? "model" : "user");
            tpl(e, "\n");
            if (ROLE(i) == R_USER) {
                flush_system(e, m, sys_from, i, true);
                sys_from = i;
            }
            content(e, m[i].content, true);
            tpl(e, "<end_of_turn>\n");
        }
        if (add_ass) tpl(e, "<start_of_turn>model\n");
        break;
    }
    case F_ORION: {
        size_t sys_from = 0;
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_SYSTEM) continue;
            if (ROLE(i) == R_USER) {
                tpl(e, "Human: ");
                flush_system(e, m, sys_from, i, false);
                sys_from = i;
                content(e, m[i].content, false);
                tpl(e, "\n\nAssistant: </s>");
            } else {
                content(e, m[i].content, false);
                tpl(e, "</s>");
            }
        }
        break;
    }
    case F_OPENCHAT:
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_USER) tpl(e, "GPT4 Correct User: ");
            if (ROLE(i) == R_ASSISTANT) tpl(e, "GPT4 Correct Assistant: ");
            content(e, m[i].content, false);
            tpl(e, "<|end_of_turn|>");
        }
        if (add_ass) tpl(e, "GPT4 Correct Assistant:");
        break;
    case F_VICUNA:
    case F_VICUNA_ORCA:
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_SYSTEM) {
                if (f == F_VICUNA_ORCA) tpl(e, "SYSTEM: ");
                content(e, m[i].content, false);
                tpl(e, f == F_VICUNA_ORCA ? "\n" : "\n\n");
            } else if (ROLE(i) == R_USER) {
                tpl(e, "USER: ");
                content(e, m[i].content, false);
                tpl(e, "\n");
            } else {
                tpl(e, "ASSISTANT: ");
                content(e, m[i].content, false);
                tpl(e, "</s>\n");
            }
        }
        if (add_ass) tpl(e, "ASSISTANT:");
        break;
    case F_DEEPSEEK:
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_USER) tpl(e, "### Instruction:\n");
            if (ROLE(i) == R_ASSISTANT) tpl(e, "### Response:\n");
            content(e, m[i].content, false);
            if (ROLE(i) == R_USER) tpl(e, "\n");
            if (ROLE(i) == R_ASSISTANT) tpl(e, "\n<|EOT|>\n");
        }
        if (add_ass) tpl(e, "### Response:\n");
        break;
    case F_DEEPSEEK2:
    case F_DEEPSEEK3: {
        bool v3 = f == F_DEEPSEEK3;
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_SYSTEM) {
                content(e, m[i].content, false);
                tpl(e, "\n\n");
            } else if (ROLE(i) == R_USER) {
                tpl(e, v3 ? DS_BAR("User") : "User: ");
                content(e, m[i].content, false);
                if (!v3) tpl(e, "\n\n");
            } else {
                tpl(e, v3 ? DS_BAR("Assistant") : "Assistant: ");
                content(e, m[i].content, false);
                tpl(e, DS_EOS);
            }
        }
        if (add_ass) tpl(e, v3 ? DS_BAR("Assistant") : "Assistant:");
        break;
    }
    case F_COMMAND_R: {
        static const char *const open[] = {"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>",
                                           "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>",
                                           "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"};
        for (size_t i = 0; i < n; i++) {
            tpl(e, open[ROLE(i)]);
            content(e, m[i].content, true);
            tpl(e, "<|END_OF_TURN_TOKEN|>");
        }
        if (add_ass) tpl(e, open[R_ASSISTANT]);
        break;
    }
    case F_LLAMA3:
        for (size_t i = 0; i < n; i++) {
            tpl(e, "<|start_header_id|>");
            tpl(e, g_roles[ROLE(i)]);
            tpl(e, "<|end_header_id|>\n\n");
            content(e, m[i].content, true);
            tpl(e, "<|eot_id|>");
        }
        if (add_ass) tpl(e, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case F_CHATGLM3:
    case F_CHATGLM4:
    case F_GLMEDGE:
        if (f == F_CHATGLM3) tpl(e, "[gMASK]sop");
        if (f == F_CHATGLM4) tpl(e, "[gMASK]<sop>");
        for (size_t i = 0; i < n; i++) {
            bar_role(e, ROLE(i), f == F_CHATGLM3 ? "\n " : "\n");
            content(e, m[i].content, false);
        }
        if (add_ass) tpl(e, f == F_CHATGLM4 ? "<|assistant|>\n" : "<|assistant|>");
        break;
    case F_MINICPM:
        for (size_t i = 0; i < n; i++) {
            if (ROLE(i) == R_USER) tpl(e, "<\xe7\x94\xa8\xe6\x88\xb7>"); /* <用户> */
            content(e, m[i].content, true);
            if (ROLE(i) == R_USER) tpl(e, "<AI>");
        }
        break;
    case F_EXAONE3:
        for (size_t i = 0; i < n; i++) {
            tpl(e, ROLE(i) == R_SYSTEM ? "[|system|]"
                   : ROLE(i) == R_USER ? "[|user|]"
                                       : "[|assistant|]");
            content(e, m[i].content, true);
            tpl(e, ROLE(i) == R_USER ? "\n" : "[|endofturn|]\n");
        }
        if (add_ass) tpl(e, "[|assistant|]");
        break;
    case F_COUNT:
    case F_UNKNOWN:
        CS_ASSERT(!"chat format out of range");
    }
}

/* Checks the arguments and renders into e (segments up to e->n_max). */
static cs_status apply(const char *fn, const char *name, const cs_chat_message *msgs, size_t n,
                       bool add_ass, emitter *e) {
    if (!name) return error_fail(CS_ERR_INVALID_ARG, "%s: name is NULL", fn);
    if (!msgs && n > 0) return error_fail(CS_ERR_INVALID_ARG, "%s: msgs is NULL, n = %zu", fn, n);
    chat_format f = format_from_name(name);
    if (f == F_UNKNOWN)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: unknown chat template name '%.64s' (cs_chat_template_detect maps a "
                          "template string to a name)",
                          fn, name);
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return error_fail(CS_ERR_INVALID_ARG, "%s: message %zu: %s is NULL", fn, i,
                              !msgs[i].role ? "role" : "content");
        if (role_of(msgs[i].role) == R_NONE)
            return error_fail(CS_ERR_INVALID_ARG,
                              "%s: message %zu: role '%.32s' is not system, user or assistant", fn,
                              i, msgs[i].role);
    }
    render(f, msgs, n, add_ass, e);
    if (e->len > INT32_MAX - 1 || e->n > INT32_MAX)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: the rendering is %zu bytes in %lld pieces, over INT32_MAX", fn,
                          e->len, (long long)e->n);
    return CS_OK;
}

int32_t cs_chat_apply_segments(const char *name, const cs_chat_message *msgs, size_t n,
                               bool add_assistant, cs_chat_segment *segs, int32_t n_max) {
    if (n_max < 0 || (!segs && n_max > 0))
        return error_fail(CS_ERR_INVALID_ARG, "cs_chat_apply_segments: segs %s, n_max = %d",
                          segs ? "set" : "NULL", n_max);
    emitter e = {.segs = segs, .n_max = n_max};
    cs_status st = apply("cs_chat_apply_segments", name, msgs, n, add_assistant, &e);
    return st != CS_OK ? st : (int32_t)e.n;
}

int32_t cs_chat_apply_template(const char *name, const cs_chat_message *msgs, size_t n,
                               bool add_assistant, char *buf, size_t size) {
    if (!buf && size > 0)
        return error_fail(CS_ERR_INVALID_ARG, "cs_chat_apply_template: buf is NULL, size = %zu",
                          size);
    emitter e = {.buf = buf, .size = size};
    cs_status st = apply("cs_chat_apply_template", name, msgs, n, add_assistant, &e);
    if (st != CS_OK) {
        if (size > 0) buf[0] = '\0';
        return st;
    }
    if (size > 0) buf[e.len < size ? e.len : 0] = '\0';
    return (int32_t)e.len;
}
