/* tool_context.c: context creation from the shared flags and cs_decode
 * error reporting, for the ctxshift subcommands. */
#include "tool_context.h"

#include <stdarg.h>

int tool_context_new(const cs_model *model, const tool_common *c, uint32_t n_seq_max,
                     cs_context **out) {
    cs_context_params cp = cs_context_default_params();
    const int32_t n_ctx_train = cs_model_n_ctx_train(model);
    cp.n_ctx =
        c->n_ctx > 0 ? (uint32_t)c->n_ctx : (n_ctx_train > 0 ? (uint32_t)n_ctx_train : 4096u);
    cp.n_batch = (uint32_t)c->n_batch < cp.n_ctx ? (uint32_t)c->n_batch : cp.n_ctx;
    cp.n_seq_max = n_seq_max;
    cp.n_threads = c->n_threads > 0 ? c->n_threads : tool_default_threads();
    cp.type_k = c->type_k;
    cp.type_v = c->type_v;
    cp.defrag_thold = c->defrag_thold;
    const cs_status st = cs_context_new(model, &cp, out);
    if (st != CS_OK) {
        *out = NULL;
        return tool_fail_lib(st, "context");
    }
    return 0;
}

int tool_decode_try(cs_context *ctx, const cs_batch *batch, bool *no_slot) {
    const int32_t ret = cs_decode(ctx, batch);
    *no_slot = ret == CS_NO_KV_SLOT;
    if (ret == 0 || *no_slot) return 0;
    return tool_fail_lib((cs_status)ret, "decode");
}

int tool_decode(cs_context *ctx, const cs_batch *batch, const char *no_slot_fmt, ...) {
    bool no_slot = false;
    const int rc = tool_decode_try(ctx, batch, &no_slot);
    if (rc != 0 || !no_slot) return rc;
    va_list ap;
    va_start(ap, no_slot_fmt);
    tool_verror(no_slot_fmt, ap);
    va_end(ap);
    return TOOL_EXIT_FAIL;
}
