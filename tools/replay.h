/* replay.h: the scenario part of `ctxshift replay` (tools/cmd_replay.c),
 * apart from its command line and file reading, so that a fuzz target
 * (tests/fuzz/fuzz_replay.c) can replay a scenario parsed from memory. */
#ifndef CS_TOOLS_REPLAY_H
#define CS_TOOLS_REPLAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "args.h"
#include "ctxshift.h"

typedef struct rp_opts {
    tool_common common; /* -t -v -h */
    const char *file;   /* for messages */
    const char *models_dir;
    const char *out_path;
    double atol;       /* < 0: from the model's weight type */
    double tie_margin; /* < 0: 2 * atol */
    bool contiguous;
    bool quiet;
    int32_t max_cells; /* cap on a run's n_ctx, n_batch and n_ubatch; 0: 2^24 (the command) */
} rp_opts;

typedef struct rp_stats {
    int64_t n_steps;
    int64_t n_rows;   /* logits / max_logit rows compared */
    int64_t n_values; /* ret, value, cells and greedy checks compared */
    int64_t n_fail;
    int64_t n_departures;
    int64_t n_near_ties;
    double max_diff;
} rp_stats;

/* The scenario's model file name (owned by root), or NULL when root is not
 * a "llama-kv-golden/1" object with a non-empty "model" string and a "runs"
 * array (reported with tool_error, naming file). O(1). */
const char *rp_scenario_model(json_t *root, const char *file);

/* Replay every run of root (checked by rp_scenario_model) on model, each on
 * a new context, comparing with the recorded results at tolerance atol and
 * putting ours in their place in root; then recompute the file's `checks`.
 * Prints a line per step unless o->quiet. *total: the figures of all runs
 * (a failure is counted there, not returned). Returns 0, or TOOL_EXIT_FAIL
 * when a run is not an object or is malformed before its first step
 * (reported). Cost: see cmd_replay.c; memory O(n_ctx) cells of the model's
 * cache per run, bounded by o->max_cells. */
int rp_replay_runs(const rp_opts *o, const cs_model *model, double atol, json_t *root,
                   rp_stats *total);

#endif
