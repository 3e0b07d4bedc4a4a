/* libFuzzer entry point: a `ctxshift replay` scenario file (JSON, format
 * "llama-kv-golden/1") from memory through the command's own code
 * (tools/cmd_replay.c compiled in): parsed with jansson as the command
 * parses the file, its header checked (rp_scenario_model), then every run
 * replayed on the bundled stories260K model (decode, cache operations,
 * value and `cells` steps, comparisons with the recorded results, the
 * `checks`). Each run gets a new context; n_ctx, n_batch and n_ubatch are
 * capped at MAX_CELLS cells (rp_opts.max_cells) so that one input costs
 * milliseconds, not a 2^24-cell cache; the number of decoded tokens is
 * bounded by the input's length. stdout (a line per step) goes to
 * /dev/null. Invariants beyond "no crash, no sanitizer report": the
 * figures are consistent (no more rows compared than steps allow, no
 * negative counts) and a malformed header is refused before any run. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "ctxshift.h"
#include "replay.h"

#ifndef CS_FUZZ_MODEL
#define CS_FUZZ_MODEL "models/stories260K-f32.gguf"
#endif

enum { MAX_CELLS = 64 };

static void quiet_log(int32_t level, const char *msg, void *user) {
    (void)level;
    (void)msg;
    (void)user;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cs_model *model;
    if (!model) {
        cs_model_params mp = cs_model_default_params();
        if (cs_model_load(CS_FUZZ_MODEL, &mp, &model) != CS_OK) abort();
        cs_log_set(quiet_log, NULL, CS_LOG_ERROR);
        if (!freopen("/dev/null", "w", stdout)) abort();
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, size, 0, &jerr);
    if (root == NULL) return 0;
    if (rp_scenario_model(root, "fuzz") != NULL) {
        rp_opts o = {
            .common = tool_common_defaults(TOOL_FLAG_THREADS),
            .file = "fuzz",
            .atol = -1.0,
            .tie_margin = -1.0,
            .contiguous = (size & 1) == 0, /* both placements */
            .quiet = (size & 2) == 0,
            .max_cells = MAX_CELLS,
        };
        o.common.n_threads = 1;
        rp_stats st;
        const int rc = rp_replay_runs(&o, model, 1e-3, root, &st);
        if (rc != 0 && rc != TOOL_EXIT_FAIL) abort();
        if (st.n_steps < 0 || st.n_rows < 0 || st.n_values < 0 || st.n_fail < 0 ||
            st.n_departures < 0 || st.n_near_ties < 0 || st.n_rows > (int64_t)size)
            abort();
    }
    json_decref(root);
    return 0;
}
