/* libFuzzer entry point: an HTTP request body of `ctxshift serve` through
 * the server's own validation (tools/serve_api.c, tools/serve_chat.c):
 * byte 0 picks the route (native /completion, /v1/completions,
 * /v1/chat/completions), byte 1 the chat format, the rest is the body.
 * The JSON is parsed as the server parses it, the generation fields
 * validated, the prompt or the messages tokenized (the chat rendered with
 * the template, tokenized by cs_tokenize_segments); everything is freed.
 * libmicrohttpd parses the request heads itself; its limits are tested in
 * tests/serve. Invariant checked: a rejected request has a 4xx/5xx status
 * and a message; an accepted one a non-empty prompt within the limits. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ctxshift.h"
#include "serve_api.h"
#include "serve_chat.h"

#ifndef CS_FUZZ_MODEL
#define CS_FUZZ_MODEL "models/stories260K-f32.gguf"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cs_model *model;
    static serve_config cfg;
    if (!model) {
        cs_model_params mp = cs_model_default_params();
        mp.vocab_only = true;
        if (cs_model_load(CS_FUZZ_MODEL, &mp, &model) != CS_OK) abort();
        cfg = (serve_config){.model_path = "fuzz", .n_slots = 4, .n_ctx = 1024, .n_ctx_slot = 256,
                             .context_shift = true};
    }
    if (size < 2) return 0;
    const int32_t kind = data[0] % 3;
    int32_t n_names = 0;
    while (cs_chat_template_name(n_names)) n_names++;
    const char *tmpl = cs_chat_template_name(data[1] % n_names);
    json_t *body = json_loadb((const char *)data + 2, size - 2, JSON_REJECT_DUPLICATES, NULL);
    if (!body) return 0;
    serve_params p;
    serve_error err = {0};
    cs_token *prompt = NULL;
    int32_t n_prompt = 0;
    bool ok = serve_parse_params(body, kind, &cfg, model, &p, &err);
    if (ok && kind == SERVE_CHAT) {
        ok = serve_chat_prompt(model, tmpl, json_object_get(body, "messages"), &prompt, &n_prompt,
                               &err);
        char *text = NULL;
        size_t len = 0;
        serve_error err2 = {0};
        if (serve_chat_render(tmpl, json_object_get(body, "messages"), &text, &len, &err2)) {
            free(text);
        }
    } else if (ok) {
        ok = serve_tokenize_prompt(json_object_get(body, "prompt"), model, "prompt", &prompt,
                                   &n_prompt, &err);
    }
    if (ok) {
        if (n_prompt <= 0 || n_prompt > SERVE_MAX_PROMPT || !prompt) abort();
        if (p.n_stop > SERVE_MAX_STOP || p.n_probs > SERVE_MAX_TOP_LOGPROBS) abort();
        if (p.id_slot >= cfg.n_slots) abort();
    } else if (err.status < 400 || err.status > 599 || !err.msg[0]) {
        abort();
    }
    free(prompt);
    serve_params_free(&p);
    json_decref(body);
    return 0;
}
