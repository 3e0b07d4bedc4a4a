/* tool_context.h: the context and decode helpers of the ctxshift tools
 * (tools/tool_context.c): one place that turns the shared flags into
 * cs_context_params, and one that reports a failed cs_decode. */
#ifndef CS_TOOLS_TOOL_CONTEXT_H
#define CS_TOOLS_TOOL_CONTEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "args.h"
#include "ctxshift.h"

/* Create a context from the shared flags: n_ctx (0: the model's training
 * context, or 4096 when it has none), n_batch capped at n_ctx, n_threads
 * (0: number of cores), the cache types and defrag_thold, with n_seq_max
 * sequences; everything else keeps cs_context_default_params. A tool that
 * sizes the context itself passes a copy of its tool_common with n_ctx /
 * n_batch / n_threads set. Returns 0, or TOOL_EXIT_FAIL after printing
 * "error: context: <library message>". */
int tool_context_new(const cs_model *model, const tool_common *c, uint32_t n_seq_max,
                     cs_context **out);

/* cs_decode with the tools' error reporting. Returns 0 on success. When the
 * batch finds no KV slot it prints "error: <no_slot_fmt ...>" (the caller
 * says which tokens did not fit) and returns TOOL_EXIT_FAIL; any other
 * failure prints "error: decode: <library message>" and returns
 * TOOL_EXIT_FAIL. */
int tool_decode(cs_context *ctx, const cs_batch *batch, const char *no_slot_fmt, ...)
    TOOL_PRINTF(3, 4);

/* As tool_decode for callers that retry on a full cache: *no_slot is set
 * (and 0 returned, nothing printed) when the batch found no KV slot; the
 * cache is then unchanged. */
int tool_decode_try(cs_context *ctx, const cs_batch *batch, bool *no_slot);

#endif /* CS_TOOLS_TOOL_CONTEXT_H */
