/* cmd_replay.c: `ctxshift replay`, replays a llama.cpp golden scenario
 * ("llama-kv-golden/1", ../shared/golden/README.md) through the public API
 * and compares every recorded logits row, arg-max, max_logit, counter,
 * pos_max and cell set with llama.cpp's values.
 *
 * Every run starts from a new context with the run's n_ctx, n_batch,
 * n_seq_max and cache types, one thread unless -t says otherwise, no
 * automatic defrag and (by default) contiguous cell placement as llama.cpp
 * c392e509 did, so that the cell order can be compared too. A decode step
 * is split into ubatches of n_ubatch consecutive rows, as llama_decode does,
 * each one cs_decode call. Tokens are teacher-forced; for the rows a step
 * lists in `greedy`, the token must equal our arg-max of the most recent
 * logits row of the row's first sequence.
 *
 * stdout: one line per step, failures, departures, near-ties and a summary
 * per run and overall; timings go to stderr. --out writes the scenario back
 * with our results in place of llama.cpp's. Exit: 0 when nothing failed, 1
 * on a failure or an unreadable/malformed file, 2 for a usage error.
 *
 * Cost: one cs_decode per ubatch plus O(n_vocab) per compared row and
 * O(n_ctx log n_ctx) per `cells` step; the scenario is held in memory. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "replay.h"
#include "tools.h"

/* The cs_kv_cell.seq bit set holds 64 sequences. */
#define RP_MAX_SEQ 64
/* Caps on untrusted sizes in a scenario file. */
#define RP_MAX_ROWS    (1 << 20)
#define RP_MAX_CELLS   (1 << 24)
#define RP_PATH_MAX    4096
#define RP_REAL_DIGITS 9 /* %.9g: a float survives the round trip */

/* Recommended tolerances (../shared/golden/README.md) by weight type. */
#define RP_ATOL_F32   1e-3
#define RP_ATOL_F16   3e-2
#define RP_ATOL_QUANT 1e-2

/* State of one run while it is replayed. */
typedef struct rp_run {
    const rp_opts *o;
    double atol;
    double tie_margin; /* an arg-max flip is a near-tie up to this margin */
    cs_context *ctx;
    int32_t n_vocab;
    int32_t n_ubatch;
    const char *name;
    size_t step;
    const char *op;
    rp_stats st;
    cs_kv_cell *view; /* n_cells entries */
    int32_t n_cells;
    int32_t last_arg[RP_MAX_SEQ]; /* our arg-max of the latest logits row per sequence; -1 */
    bool last_tie[RP_MAX_SEQ];    /* that row was a near-tie in llama.cpp */
} rp_run;

typedef struct rp_cell {
    int32_t pos;
    uint64_t seqs;
} rp_cell;

static void rp_usage(FILE *f) {
    fputs("usage: ctxshift replay FILE.json [flags]\n"
          "\n"
          "Replay a llama.cpp golden scenario (shared/golden/*.json) and compare every logits\n"
          "row, arg-max, counter, pos_max and cell set with the recorded values.\n"
          "\n"
          "  --models DIR      folder of the scenario's model (default: ../shared/models,\n"
          "                    then the folder of FILE/../models)\n"
          "  --out FILE        write the scenario with our results in place of llama.cpp's\n"
          "  --atol X          allowed max |logit difference| (default by weight type:\n"
          "                    f32 1e-3, f16 3e-2, q8_0/q4_0 1e-2)\n"
          "  --tie-margin X    an arg-max that differs from llama.cpp's passes only where\n"
          "                    llama.cpp's top-1 - top-2 logit margin is at most X\n"
          "                    (default: 2 * atol)\n"
          "  -t, --threads N   worker threads (default: 1)\n"
          "  --contiguous      place each ubatch in consecutive free cells, as llama.cpp\n"
          "                    (default)\n"
          "  --no-contiguous   place ubatches in any free cells\n"
          "  -q, --quiet       print only failures, departures and the summaries\n"
          "  -v, --verbose     print the library's info and debug log\n"
          "  -h, --help        print this help\n"
          "\n"
          "exit status: 0 every comparison passed, 1 a failure or a bad file, 2 usage error.\n",
          f);
}

static int rp_parse(int argc, char **argv, rp_opts *o) {
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        bool handled = false;
        int rc = tool_parse_common(&it, &o->common, &handled);
        if (rc != 0) return rc;
        if (handled) continue;
        if (tool_arg_is(a, "-q", "--quiet")) {
            o->quiet = true;
        } else if (tool_arg_is(a, NULL, "--contiguous")) {
            o->contiguous = true;
        } else if (tool_arg_is(a, NULL, "--no-contiguous")) {
            o->contiguous = false;
        } else if (tool_arg_is(a, NULL, "--models")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->models_dir = v;
        } else if (tool_arg_is(a, NULL, "--out")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) o->out_path = v;
        } else if (tool_arg_is(a, NULL, "--atol")) {
            float x = 0.0f;
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_f32(a, v, 0.0f, 1e6f, &x);
            if (rc == 0) o->atol = (double)x;
        } else if (tool_arg_is(a, NULL, "--tie-margin")) {
            float x = 0.0f;
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_f32(a, v, 0.0f, 1e6f, &x);
            if (rc == 0) o->tie_margin = (double)x;
        } else if (a[0] == '-' && a[1] != '\0') {
            rc = tool_arg_unknown("replay", a);
        } else if (o->file == NULL) {
            o->file = a;
        } else {
            tool_error("replay: more than one scenario file ('%s', '%s')", o->file, a);
            rc = TOOL_EXIT_USAGE;
        }
        if (rc != 0) return rc;
    }
    if (!o->common.help && o->file == NULL) {
        tool_error("replay: a scenario FILE.json is required (see 'ctxshift replay --help')");
        return TOOL_EXIT_USAGE;
    }
    return 0;
}

/* ------------------------------------------------------------ messages */

/* "<KIND>: run 'name' step N (op): message" on stdout. */
static void rp_vmsg(const rp_run *r, const char *kind, const char *fmt, va_list ap)
    TOOL_PRINTF(3, 0);
static void rp_vmsg(const rp_run *r, const char *kind, const char *fmt, va_list ap) {
    printf("%s: run '%s' step %zu (%s): ", kind, r->name, r->step, r->op ? r->op : "?");
    vprintf(fmt, ap);
    putchar('\n');
}

static void rp_fail(rp_run *r, const char *fmt, ...) TOOL_PRINTF(2, 3);
static void rp_fail(rp_run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rp_vmsg(r, "FAIL", fmt, ap);
    va_end(ap);
    r->st.n_fail++;
}

static void rp_info(rp_run *r, const char *kind, const char *fmt, ...) TOOL_PRINTF(3, 4);
static void rp_info(rp_run *r, const char *kind, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rp_vmsg(r, kind, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ JSON input */

/* An integer field within [lo, hi]. Missing or mistyped: a failure naming
 * the field, false. */
static bool rp_get_i32(rp_run *r, json_t *obj, const char *key, int32_t lo, int32_t hi,
                       int32_t *out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        rp_fail(r, "malformed step: field '%s' is missing or not an integer", key);
        return false;
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        rp_fail(r, "malformed step: field '%s' = %lld is out of range [%d, %d]", key, (long long)x,
                lo, hi);
        return false;
    }
    *out = (int32_t)x;
    return true;
}

/* Element i of an integer array within [lo, hi]. */
static bool rp_get_elem(rp_run *r, json_t *arr, const char *what, size_t i, int32_t lo, int32_t hi,
                        int32_t *out) {
    json_t *v = json_array_get(arr, i);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        rp_fail(r, "malformed step: %s[%zu] is not an integer in [%d, %d]", what, i, lo, hi);
        return false;
    }
    *out = (int32_t)json_integer_value(v);
    return true;
}

/* An integer context field; missing: def. */
static bool rp_ctx_i32(json_t *cx, const char *key, int32_t def, int32_t lo, int32_t hi,
                       int32_t *out, const char *run_name) {
    json_t *v = json_object_get(cx, key);
    if (v == NULL) {
        *out = def;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        tool_error("replay: run '%s': context.%s is not an integer in [%d, %d]", run_name, key, lo,
                   hi);
        return false;
    }
    *out = (int32_t)json_integer_value(v);
    return true;
}

static bool rp_ctx_type(json_t *cx, const char *key, int32_t *out, const char *run_name) {
    json_t *v = json_object_get(cx, key);
    if (v == NULL) {
        *out = CS_TYPE_F32;
        return true;
    }
    int32_t t = json_is_string(v) ? cs_type_from_name(json_string_value(v)) : -1;
    if (t < 0) {
        tool_error("replay: run '%s': context.%s is not a cache type name", run_name, key);
        return false;
    }
    *out = t;
    return true;
}

/* ------------------------------------------------------------ JSON output */

static json_t *rp_real(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *rp_value_result(int64_t v) {
    json_t *res = json_object();
    json_object_set_new(res, "value", json_integer(v));
    return res;
}

/* Replace the step's result with ours (NULL: remove it). */
static void rp_set_result(json_t *step, json_t *res) {
    if (res != NULL) {
        json_object_set_new(step, "result", res);
    } else {
        json_object_del(step, "result");
    }
}

/* ------------------------------------------------------------ comparisons */

static int32_t rp_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (x[i] > x[best]) best = i; /* a tie goes to the lowest id */
    }
    return best;
}

/* Compare one recorded row with ours. Sets *near_tie when llama.cpp's top-1
 * to top-2 margin is at most tie_margin (the arg-max may then differ). Returns
 * the max |difference| (NaN when ours has one). O(n_vocab). */
static double rp_compare_row(rp_run *r, json_t *row, int32_t row_idx, const float *ours,
                             bool *near_tie) {
    const int32_t n_vocab = r->n_vocab;
    const double atol = r->atol;
    const int32_t our_arg = rp_argmax(ours, n_vocab);
    int32_t ref_arg = -1;
    json_t *av = json_object_get(row, "argmax");
    if (json_is_integer(av) && json_integer_value(av) >= 0 && json_integer_value(av) < n_vocab) {
        ref_arg = (int32_t)json_integer_value(av);
    } else {
        rp_fail(r, "row %d: 'argmax' is missing or not a token id", row_idx);
    }
    json_t *lg = json_object_get(row, "logits");
    json_t *ml = json_object_get(row, "max_logit");
    double diff = 0.0, margin = (double)INFINITY;
    int32_t worst_i = -1;
    double worst_ref = 0.0;
    *near_tie = false;
    if (json_is_array(lg)) {
        if ((int32_t)json_array_size(lg) != n_vocab) {
            rp_fail(r, "row %d: %zu recorded logits, the model has %d", row_idx,
                    json_array_size(lg), n_vocab);
            return (double)NAN;
        }
        double top1 = -(double)INFINITY, top2 = -(double)INFINITY;
        for (int32_t i = 0; i < n_vocab; i++) {
            json_t *e = json_array_get(lg, (size_t)i);
            if (!json_is_number(e)) {
                rp_fail(r, "row %d: logits[%d] is not a number", row_idx, i);
                return (double)NAN;
            }
            const double ref = json_number_value(e);
            const double d = fabs(ref - (double)ours[i]);
            if (!(d <= diff) && !isnan(diff)) { /* NaN sticks as the worst */
                diff = d;
                worst_i = i;
                worst_ref = ref;
            }
            if (ref > top1) {
                top2 = top1;
                top1 = ref;
            } else if (ref > top2) {
                top2 = ref;
            }
        }
        margin = top1 - top2;
        *near_tie = !(margin > r->tie_margin);
    } else if (json_is_number(ml)) {
        worst_ref = json_number_value(ml);
        worst_i = our_arg;
        diff = fabs(worst_ref - (double)ours[our_arg]);
        /* No recorded margin: a flip counts as a near-tie when the logit of
         * llama.cpp's token is within tie_margin of our maximum. */
        *near_tie = ref_arg >= 0 && (double)ours[ref_arg] >= (double)ours[our_arg] - r->tie_margin;
    } else {
        rp_fail(r, "row %d: neither 'logits' nor 'max_logit' recorded", row_idx);
        return (double)NAN;
    }
    r->st.n_rows++;
    if (isnan(diff) || diff > r->st.max_diff) r->st.max_diff = diff;
    if (!(diff <= atol)) {
        rp_fail(
            r, "row %d: max |logit diff| %.3g > atol %.3g (token %d: ours %.6g, llama.cpp %.6g)",
            row_idx, diff, atol, worst_i, worst_i >= 0 ? (double)ours[worst_i] : 0.0, worst_ref);
    }
    if (ref_arg >= 0 && our_arg != ref_arg) {
        if (*near_tie) {
            r->st.n_near_ties++;
            if (isinf(margin)) {
                rp_info(r, "near-tie",
                        "row %d: arg-max ours %d, llama.cpp %d (our logits %.6g vs %.6g)", row_idx,
                        our_arg, ref_arg, (double)ours[our_arg], (double)ours[ref_arg]);
            } else {
                rp_info(r, "near-tie",
                        "row %d: arg-max ours %d, llama.cpp %d (margin %.3g <= %.3g)", row_idx,
                        our_arg, ref_arg, margin, r->tie_margin);
            }
        } else if (isinf(margin)) {
            rp_fail(r, "row %d: arg-max %d, llama.cpp %d (our logits %.6g vs %.6g)", row_idx,
                    our_arg, ref_arg, (double)ours[our_arg], (double)ours[ref_arg]);
        } else {
            rp_fail(r, "row %d: arg-max %d, llama.cpp %d (llama.cpp margin %.3g > %.3g)", row_idx,
                    our_arg, ref_arg, margin, r->tie_margin);
        }
    }
    return diff;
}

/* Our result row for --out. */
static json_t *rp_row_json(int32_t row_idx, const float *ours, int32_t n_vocab, bool full) {
    json_t *o = json_object();
    const int32_t arg = rp_argmax(ours, n_vocab);
    json_object_set_new(o, "row", json_integer(row_idx));
    json_object_set_new(o, "argmax", json_integer(arg));
    if (full) {
        json_t *a = json_array();
        for (int32_t i = 0; i < n_vocab; i++) json_array_append_new(a, rp_real((double)ours[i]));
        json_object_set_new(o, "logits", a);
    } else {
        json_object_set_new(o, "max_logit", rp_real((double)ours[arg]));
    }
    return o;
}

/* ------------------------------------------------------------ decode */

/* A decode step's rows, read from its JSON. */
typedef struct rp_dstep {
    json_t *jt, *jp, *js, *jo; /* tokens, pos, seq, out */
    json_t *jg;                /* greedy, or NULL */
    size_t n;                  /* rows */
    size_t n_out;              /* rows with logits */
    bool full;                 /* record whole logits rows */
    int32_t *out_k;            /* batch row -> index in out, or -1 */
    int32_t *first_seq;        /* batch row -> its first sequence */
    int32_t max_seqs;          /* sequences of the widest row */
    float *ours;               /* n_out rows of logits */
} rp_dstep;

/* The step's arrays and their sizes. Returns 0 or -1 (reported). */
static int rp_dstep_check(rp_run *r, json_t *step, rp_dstep *d) {
    d->jt = json_object_get(step, "tokens");
    d->jp = json_object_get(step, "pos");
    d->js = json_object_get(step, "seq");
    d->jo = json_object_get(step, "out");
    d->jg = json_object_get(step, "greedy");
    if (!json_is_array(d->jt) || !json_is_array(d->jp) || !json_is_array(d->js) ||
        !json_is_array(d->jo)) {
        rp_fail(r, "malformed step: 'tokens', 'pos', 'seq' and 'out' must be arrays");
        return -1;
    }
    const size_t n = json_array_size(d->jt);
    if (n == 0 || n > RP_MAX_ROWS || json_array_size(d->jp) != n || json_array_size(d->js) != n) {
        rp_fail(r, "malformed step: %zu tokens, %zu pos, %zu seq (need equal counts in [1, %d])", n,
                json_array_size(d->jp), json_array_size(d->js), RP_MAX_ROWS);
        return -1;
    }
    if (d->jg != NULL && !json_is_array(d->jg)) {
        rp_fail(r, "malformed step: 'greedy' is not an array");
        return -1;
    }
    d->n = n;
    d->full = !json_is_false(json_object_get(step, "logits"));
    d->n_out = json_array_size(d->jo);
    return 0;
}

/* The row tables: out_k from 'out' (strictly ascending), first_seq and
 * max_seqs from 'seq'; the logits buffer. Returns 0 or -1 (reported). */
static int rp_dstep_rows(rp_run *r, rp_dstep *d) {
    const size_t n = d->n;
    d->out_k = malloc(n * sizeof *d->out_k);
    d->first_seq = malloc(n * sizeof *d->first_seq);
    d->ours = malloc((d->n_out ? d->n_out : 1) * (size_t)r->n_vocab * sizeof *d->ours);
    if (!d->out_k || !d->first_seq || !d->ours) {
        rp_fail(r, "out of memory for %zu rows", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) d->out_k[i] = -1;
    int32_t prev = -1;
    for (size_t k = 0; k < d->n_out; k++) {
        int32_t row = 0;
        if (!rp_get_elem(r, d->jo, "out", k, 0, (int32_t)n - 1, &row)) return -1;
        if (row <= prev) {
            rp_fail(r, "malformed step: 'out' is not strictly ascending at out[%zu] = %d", k, row);
            return -1;
        }
        prev = row;
        d->out_k[row] = (int32_t)k;
    }
    d->max_seqs = 1;
    for (size_t i = 0; i < n; i++) {
        json_t *sl = json_array_get(d->js, i);
        if (!json_is_array(sl) || json_array_size(sl) == 0 || json_array_size(sl) > RP_MAX_SEQ) {
            rp_fail(r, "malformed step: seq[%zu] is not a list of 1 to %d sequence ids", i,
                    RP_MAX_SEQ);
            return -1;
        }
        if ((int32_t)json_array_size(sl) > d->max_seqs) d->max_seqs = (int32_t)json_array_size(sl);
        if (!rp_get_elem(r, sl, "seq[i]", 0, 0, RP_MAX_SEQ - 1, &d->first_seq[i])) return -1;
    }
    return 0;
}

/* Greedy rows: the token must be our arg-max of the latest logits row of
 * the same sequence (checked before this step's rows replace it). A
 * mismatch is counted, not fatal. Returns 0 or -1 (malformed). */
static int rp_check_greedy(rp_run *r, const rp_dstep *d) {
    for (size_t g = 0; d->jg != NULL && g < json_array_size(d->jg); g++) {
        int32_t row = 0, tok = 0;
        if (!rp_get_elem(r, d->jg, "greedy", g, 0, (int32_t)d->n - 1, &row)) return -1;
        if (!rp_get_elem(r, d->jt, "tokens", (size_t)row, 0, INT32_MAX, &tok)) return -1;
        const int32_t s = d->first_seq[row];
        r->st.n_values++;
        if (r->last_arg[s] < 0) {
            rp_fail(r, "greedy row %d: no earlier logits row for sequence %d", row, s);
        } else if (r->last_arg[s] != tok) {
            if (r->last_tie[s]) {
                r->st.n_near_ties++;
                rp_info(r, "near-tie",
                        "greedy row %d: token %d, our arg-max of the previous row of sequence %d "
                        "is %d (near-tie there)",
                        row, tok, s, r->last_arg[s]);
            } else {
                rp_fail(r,
                        "greedy row %d: token %d, but our arg-max of the previous row of "
                        "sequence %d is %d",
                        row, tok, s, r->last_arg[s]);
            }
        }
    }
    return 0;
}

/* Add rows [off, end) of the step to batch. Returns 0 or -1 (reported). */
static int rp_fill_batch(rp_run *r, const rp_dstep *d, cs_batch *batch, size_t off, size_t end) {
    cs_batch_clear(batch);
    for (size_t i = off; i < end; i++) {
        int32_t tok = 0, pos = 0;
        cs_seq ids[RP_MAX_SEQ];
        json_t *sl = json_array_get(d->js, i);
        if (!rp_get_elem(r, d->jt, "tokens", i, INT32_MIN, INT32_MAX, &tok)) return -1;
        if (!rp_get_elem(r, d->jp, "pos", i, INT32_MIN, INT32_MAX, &pos)) return -1;
        for (size_t j = 0; j < json_array_size(sl); j++) {
            if (!rp_get_elem(r, sl, "seq[i]", j, 0, RP_MAX_SEQ - 1, &ids[j])) return -1;
        }
        const cs_status st =
            cs_batch_add(batch, tok, pos, ids, (int32_t)json_array_size(sl), d->out_k[i] >= 0);
        if (st != CS_OK) {
            rp_fail(r, "cs_batch_add row %zu: %s", i, cs_last_error());
            return -1;
        }
    }
    return 0;
}

/* Decode the rows in ubatches of n_ubatch consecutive rows, as llama_decode
 * splits, copying the logits of the 'out' rows; then compare the return
 * code with llama.cpp's (*ret: ours). Returns 0 or -1 (a failed decode or
 * a malformed row, reported). */
static int rp_decode_rows(rp_run *r, rp_dstep *d, json_t *ref, int32_t *ret) {
    const size_t n = d->n;
    int32_t ub = r->n_ubatch;
    if (ub > (int32_t)cs_n_batch(r->ctx)) ub = (int32_t)cs_n_batch(r->ctx);
    if (ub > (int32_t)n) ub = (int32_t)n;
    cs_batch *batch = NULL;
    if (cs_batch_new(ub, d->max_seqs, &batch) != CS_OK) {
        rp_fail(r, "cs_batch_new: %s", cs_last_error());
        return -1;
    }
    int32_t ref_ret = 0;
    json_t *jr = json_object_get(ref, "ret");
    if (json_is_integer(jr)) ref_ret = (int32_t)json_integer_value(jr);
    int rc = -1;
    for (size_t off = 0; off < n; off += (size_t)ub) {
        const size_t end = off + (size_t)ub < n ? off + (size_t)ub : n;
        if (rp_fill_batch(r, d, batch, off, end) != 0) goto done;
        *ret = cs_decode(r->ctx, batch);
        if (*ret != 0) {
            r->st.n_values++;
            rp_fail(r, "rows [%zu, %zu): cs_decode returned %d (%s), llama.cpp %d", off, end, *ret,
                    *ret < 0 ? cs_last_error() : "no KV slot", ref_ret);
            goto done;
        }
        for (size_t i = off; i < end; i++) {
            if (d->out_k[i] < 0) continue;
            const float *lg = cs_get_logits_ith(r->ctx, (int32_t)(i - off));
            if (lg == NULL) {
                rp_fail(r, "row %zu: no logits from cs_get_logits_ith", i);
                goto done;
            }
            memcpy(d->ours + (size_t)d->out_k[i] * (size_t)r->n_vocab, lg,
                   (size_t)r->n_vocab * sizeof *d->ours);
        }
    }
    r->st.n_values++;
    if (ref_ret != 0) rp_fail(r, "cs_decode returned 0, llama.cpp %d", ref_ret);
    rc = 0;
done:
    cs_batch_free(batch);
    return rc;
}

/* Compare the recorded rows with ours (tie[k]: row k of 'out' is a
 * near-tie) and print the step's line. Mismatches are counted. */
static void rp_compare_rows(rp_run *r, const rp_dstep *d, json_t *ref, bool *tie) {
    json_t *rows = json_object_get(ref, "rows");
    double step_max = 0.0;
    if (!json_is_array(rows) || json_array_size(rows) != d->n_out) {
        rp_fail(r, "recorded result has %zu rows, 'out' asks for %zu",
                json_is_array(rows) ? json_array_size(rows) : (size_t)0, d->n_out);
    }
    for (size_t j = 0; json_is_array(rows) && j < json_array_size(rows); j++) {
        json_t *row = json_array_get(rows, j);
        json_t *ri = json_object_get(row, "row");
        if (!json_is_integer(ri) || json_integer_value(ri) < 0 ||
            (size_t)json_integer_value(ri) >= d->n || d->out_k[json_integer_value(ri)] < 0) {
            rp_fail(r, "rows[%zu]: 'row' is missing or not a row listed in 'out'", j);
            continue;
        }
        const int32_t row_idx = (int32_t)json_integer_value(ri);
        const int32_t k = d->out_k[row_idx];
        bool nt = false;
        const double diff =
            rp_compare_row(r, row, row_idx, d->ours + (size_t)k * (size_t)r->n_vocab, &nt);
        tie[k] = nt;
        if (isnan(diff) || diff > step_max) step_max = diff;
    }
    if (!r->o->quiet) {
        printf("  step %4zu decode      %6zu tokens, %3zu rows, max |diff| %.3g\n", r->step, d->n,
               d->n_out, step_max);
    }
}

/* Our result of the step ({"ret", "rows"}); the latest row of each
 * sequence feeds the next greedy check. */
static void rp_record_decode(rp_run *r, json_t *step, const rp_dstep *d, int32_t ret,
                             const bool *tie) {
    json_t *res = json_object();
    json_object_set_new(res, "ret", json_integer(ret));
    json_t *our_rows = json_array();
    for (size_t k = 0; k < d->n_out; k++) {
        const int32_t row = (int32_t)json_integer_value(json_array_get(d->jo, k));
        const float *lg = d->ours + k * (size_t)r->n_vocab;
        r->last_arg[d->first_seq[row]] = rp_argmax(lg, r->n_vocab);
        r->last_tie[d->first_seq[row]] = tie[k];
        json_array_append_new(our_rows, rp_row_json(row, lg, r->n_vocab, d->full));
    }
    json_object_set_new(res, "rows", our_rows);
    rp_set_result(step, res);
}

/* One decode step: check -> rows -> greedy check -> decode -> compare ->
 * record. Returns 0, or -1 when the run cannot go on (a malformed step or a
 * decode that failed; already reported). */
static int rp_decode(rp_run *r, json_t *step, json_t *ref) {
    rp_dstep d;
    memset(&d, 0, sizeof d);
    if (rp_dstep_check(r, step, &d) != 0) return -1;
    int rc = -1;
    bool *tie = NULL;
    int32_t ret = 0;
    if (rp_dstep_rows(r, &d) != 0 || rp_check_greedy(r, &d) != 0 ||
        rp_decode_rows(r, &d, ref, &ret) != 0)
        goto done;
    tie = calloc(d.n_out ? d.n_out : 1, sizeof *tie);
    if (tie == NULL) {
        rp_fail(r, "out of memory");
        goto done;
    }
    rp_compare_rows(r, &d, ref, tie);
    rp_record_decode(r, step, &d, ret, tie);
    rc = 0;
done:
    if (rc != 0) rp_set_result(step, NULL);
    free(tie);
    free(d.ours);
    free(d.first_seq);
    free(d.out_k);
    return rc;
}

/* ------------------------------------------------------------ cells */

static int rp_cell_cmp(const void *a, const void *b) {
    const rp_cell *x = a, *y = b;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    if (x->seqs != y->seqs) return x->seqs < y->seqs ? -1 : 1;
    return 0;
}

/* Refresh r->view from the cache. */
static void rp_view(rp_run *r) {
    cs_kv_view(r->ctx, r->view, r->n_cells);
}

static bool rp_seq_has_cells(rp_run *r, int32_t seq) {
    if (seq < 0 || seq >= RP_MAX_SEQ) return false;
    rp_view(r);
    for (int32_t i = 0; i < r->n_cells; i++) {
        if (r->view[i].seq & ((uint64_t)1 << seq)) return true;
    }
    return false;
}

static void rp_cells_describe(const rp_cell *c, char *buf, size_t size) {
    int w = snprintf(buf, size, "(pos %d, seqs {", c->pos);
    bool first = true;
    for (int s = 0; s < RP_MAX_SEQ && w > 0 && (size_t)w < size; s++) {
        if (c->seqs & ((uint64_t)1 << s)) {
            w += snprintf(buf + w, size - (size_t)w, first ? "%d" : ",%d", s);
            first = false;
        }
    }
    if (w > 0 && (size_t)w < size) snprintf(buf + w, size - (size_t)w, "})");
}

/* What one `cells` step found; filled by the rp_cells_* phases. */
typedef struct rp_cells_cmp {
    size_t n_ref;      /* their cells listed, empty ones included */
    size_t n_theirs;   /* their non-empty cells */
    size_t n_mine;     /* our non-empty cells */
    int32_t last;      /* our last non-empty cell, -1 when none */
    bool same_order;   /* our cells [0, last] are theirs, cell by cell */
    size_t first_diff; /* the first cell that differs, when !same_order */
    bool same_set;     /* the (pos, seq set) multisets are equal */
} rp_cells_cmp;

/* Parse their cells: their_order[i] is cell i as listed (an empty cell is
 * pos -1 with no seqs), theirs[] the non-empty ones (c->n_theirs). Both
 * hold c->n_ref entries. Returns 0, or -1 on a malformed element (already
 * reported). O(cells * seqs). */
static int rp_cells_parse(rp_run *r, json_t *jp, json_t *js, rp_cell *their_order, rp_cell *theirs,
                          rp_cells_cmp *c) {
    c->n_theirs = 0;
    for (size_t i = 0; i < c->n_ref; i++) {
        int32_t pos = 0;
        if (!rp_get_elem(r, jp, "pos", i, -1, INT32_MAX, &pos)) return -1;
        json_t *sl = json_array_get(js, i);
        if (!json_is_array(sl)) {
            rp_fail(r, "malformed step: seqs[%zu] is not an array", i);
            return -1;
        }
        uint64_t mask = 0;
        for (size_t j = 0; j < json_array_size(sl); j++) {
            int32_t s = 0;
            if (!rp_get_elem(r, sl, "seqs[i]", j, 0, RP_MAX_SEQ - 1, &s)) return -1;
            mask |= (uint64_t)1 << s;
        }
        their_order[i].pos = pos;
        their_order[i].seqs = mask;
        if (mask != 0 || pos != -1) theirs[c->n_theirs++] = their_order[i];
    }
    return 0;
}

/* Refresh r->view and copy our non-empty cells into mine (c->n_mine, at
 * most r->n_cells); c->last is the index of the last one. */
static void rp_cells_ours(rp_run *r, rp_cell *mine, rp_cells_cmp *c) {
    rp_view(r);
    c->n_mine = 0;
    c->last = -1;
    for (int32_t i = 0; i < r->n_cells; i++) {
        if (r->view[i].seq == 0) continue;
        mine[c->n_mine].pos = r->view[i].pos;
        mine[c->n_mine].seqs = r->view[i].seq;
        c->n_mine++;
        c->last = i;
    }
}

/* Order (information only): our cells [0, last] against their_order. */
static void rp_cells_order(const rp_run *r, const rp_cell *their_order, rp_cells_cmp *c) {
    c->same_order = (size_t)(c->last + 1) == c->n_ref;
    c->first_diff = 0;
    for (size_t i = 0; c->same_order && i < c->n_ref; i++) {
        const cs_kv_cell *v = &r->view[i];
        const int32_t pos = v->seq ? v->pos : -1;
        if (pos != their_order[i].pos || v->seq != their_order[i].seqs) {
            c->same_order = false;
            c->first_diff = i;
        }
    }
}

/* The check: sort both multisets (O(n log n)) and compare; a difference
 * fails the step, quoting the first differing cell of each side. */
static void rp_cells_multiset(rp_run *r, rp_cell *mine, rp_cell *theirs, rp_cells_cmp *c) {
    qsort(theirs, c->n_theirs, sizeof *theirs, rp_cell_cmp);
    qsort(mine, c->n_mine, sizeof *mine, rp_cell_cmp);
    c->same_set = c->n_theirs == c->n_mine;
    size_t k = 0;
    for (; k < c->n_mine && k < c->n_theirs; k++) {
        if (rp_cell_cmp(&mine[k], &theirs[k]) != 0) {
            c->same_set = false;
            break;
        }
    }
    if (c->same_set) return;
    char a[160] = "none", b[160] = "none";
    if (k < c->n_mine) rp_cells_describe(&mine[k], a, sizeof a);
    if (k < c->n_theirs) rp_cells_describe(&theirs[k], b, sizeof b);
    rp_fail(r,
            "cell multisets differ: %zu non-empty cells, llama.cpp %zu; first difference in "
            "sorted order at %zu: ours %s, llama.cpp %s",
            c->n_mine, c->n_theirs, k, a, b);
}

/* The step's line on stdout (unless --quiet). */
static void rp_cells_print(const rp_run *r, const rp_cells_cmp *c) {
    if (r->o->quiet) return;
    printf("  step %4zu cells       %zu non-empty cells: multiset %s, order %s", r->step, c->n_mine,
           c->same_set ? "equal" : "DIFFERS", c->same_order ? "equal" : "differs");
    if (!c->same_order && (size_t)(c->last + 1) == c->n_ref) {
        printf(" (first at cell %zu)", c->first_diff);
    } else if (!c->same_order) {
        printf(" (ours spans %d cells, llama.cpp %zu)", c->last + 1, c->n_ref);
    }
    printf(" (info)\n");
}

/* The step's result: our n_cells and cells [0, last] in the reference's
 * shape (pos -1 and no seqs for an empty cell). */
static json_t *rp_cells_result(const rp_run *r, int32_t last) {
    json_t *res = json_object();
    json_object_set_new(res, "n_cells", json_integer(r->n_cells));
    json_t *op = json_array(), *os = json_array();
    for (int32_t i = 0; i <= last; i++) {
        const cs_kv_cell *c = &r->view[i];
        json_t *sl = json_array();
        for (int s = 0; s < RP_MAX_SEQ; s++) {
            if (c->seq & ((uint64_t)1 << s)) json_array_append_new(sl, json_integer(s));
        }
        json_array_append_new(op, json_integer(c->seq ? c->pos : -1));
        json_array_append_new(os, sl);
    }
    json_object_set_new(res, "pos", op);
    json_object_set_new(res, "seqs", os);
    return res;
}

/* The `cells` step: the multiset of (pos, seq set) must match; the exact
 * order is reported as information. Returns 0 or -1 (malformed). */
static int rp_cells(rp_run *r, json_t *step, json_t *ref) {
    int rc = -1;
    json_t *jp = json_object_get(ref, "pos"), *js = json_object_get(ref, "seqs");
    int32_t ref_n_cells = 0;
    if (!rp_get_i32(r, ref, "n_cells", 0, RP_MAX_CELLS, &ref_n_cells)) return -1;
    if (!json_is_array(jp) || !json_is_array(js) || json_array_size(jp) != json_array_size(js) ||
        json_array_size(jp) > (size_t)ref_n_cells) {
        rp_fail(r, "malformed step: 'pos' and 'seqs' must be arrays of equal length <= n_cells");
        return -1;
    }
    rp_cells_cmp c;
    memset(&c, 0, sizeof c);
    c.n_ref = json_array_size(jp);
    rp_cell *theirs = malloc((c.n_ref ? c.n_ref : 1) * sizeof *theirs);
    rp_cell *mine = malloc((size_t)r->n_cells * sizeof *mine);
    rp_cell *their_order = malloc((c.n_ref ? c.n_ref : 1) * sizeof *their_order);
    if (!theirs || !mine || !their_order) {
        rp_fail(r, "out of memory");
        goto done;
    }
    if (rp_cells_parse(r, jp, js, their_order, theirs, &c) != 0) goto done;
    rp_cells_ours(r, mine, &c);
    r->st.n_values += 2;
    if (ref_n_cells != r->n_cells) {
        rp_fail(r, "n_cells %d, llama.cpp %d", r->n_cells, ref_n_cells);
    }
    rp_cells_order(r, their_order, &c);
    rp_cells_multiset(r, mine, theirs, &c);
    rp_cells_print(r, &c);
    rp_set_result(step, rp_cells_result(r, c.last));
    rc = 0;
done:
    free(their_order);
    free(mine);
    free(theirs);
    return rc;
}

/* ------------------------------------------------------------ other ops */

static void rp_step_line(const rp_run *r, const char *fmt, ...) TOOL_PRINTF(2, 3);
static void rp_step_line(const rp_run *r, const char *fmt, ...) {
    if (r->o->quiet) return;
    printf("  step %4zu %-11s ", r->step, r->op);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* A value step (pos_max, used_cells, token_count). */
static int rp_value(rp_run *r, json_t *step, json_t *ref) {
    int32_t seq = -1, ours = 0, theirs = 0;
    const bool is_pos_max = strcmp(r->op, "pos_max") == 0;
    if (is_pos_max) {
        if (!rp_get_i32(r, step, "seq", INT32_MIN, INT32_MAX, &seq)) return -1;
        ours = cs_kv_seq_pos_max(r->ctx, seq);
    } else if (strcmp(r->op, "used_cells") == 0) {
        ours = cs_kv_used_cells(r->ctx);
    } else {
        ours = cs_kv_token_count(r->ctx);
    }
    if (!rp_get_i32(r, ref, "value", INT32_MIN, INT32_MAX, &theirs)) return -1;
    r->st.n_values++;
    if (is_pos_max) {
        rp_step_line(r, "seq %d: %d (llama.cpp %d)", seq, ours, theirs);
    } else {
        rp_step_line(r, "%d (llama.cpp %d)", ours, theirs);
    }
    if (ours != theirs) {
        if (is_pos_max && ours == -1 && theirs == 0 && !rp_seq_has_cells(r, seq)) {
            r->st.n_departures++;
            printf("departure: pos_max of empty sequence: ours -1, llama.cpp 0 (spec §2.8) "
                   "[run '%s' step %zu, seq %d]\n",
                   r->name, r->step, seq);
        } else {
            rp_fail(r, "%s %d, llama.cpp %d", is_pos_max ? "pos_max" : "value", ours, theirs);
        }
    }
    rp_set_result(step, rp_value_result(ours));
    return 0;
}

/* A library call that returns a status. */
static void rp_check_status(rp_run *r, cs_status st) {
    r->st.n_values++;
    if (st != CS_OK) {
        rp_fail(r, "returned %s: %s (llama.cpp succeeded)", cs_status_str(st), cs_last_error());
    }
}

/* Run one step. Returns 0, or -1 when the run cannot continue. */
static int rp_step(rp_run *r, json_t *step) {
    json_t *ref = json_object_get(step, "result");
    const char *op = r->op;
    int32_t seq = 0, p0 = 0, p1 = 0, x = 0;
    if (strcmp(op, "decode") == 0) return rp_decode(r, step, ref);
    if (strcmp(op, "cells") == 0) return rp_cells(r, step, ref);
    if (strcmp(op, "pos_max") == 0 || strcmp(op, "used_cells") == 0 ||
        strcmp(op, "token_count") == 0) {
        return rp_value(r, step, ref);
    }
    if (strcmp(op, "seq_rm") == 0) {
        if (!rp_get_i32(r, step, "seq", INT32_MIN, INT32_MAX, &seq) ||
            !rp_get_i32(r, step, "p0", INT32_MIN, INT32_MAX, &p0) ||
            !rp_get_i32(r, step, "p1", INT32_MIN, INT32_MAX, &p1)) {
            return -1;
        }
        const cs_status st = cs_kv_seq_rm(r->ctx, seq, p0, p1);
        const bool ours = st == CS_OK;
        json_t *jr = json_object_get(ref, "ret");
        r->st.n_values++;
        if (st < 0) {
            rp_fail(r, "cs_kv_seq_rm returned %s: %s", cs_status_str(st), cs_last_error());
        } else if (json_is_boolean(jr) && json_is_true(jr) != ours) {
            rp_fail(r, "returned %s, llama.cpp %s", ours ? "true" : "false",
                    json_is_true(jr) ? "true" : "false");
        }
        rp_step_line(r, "seq %d [%d, %d)", seq, p0, p1);
        json_t *res = json_object();
        json_object_set_new(res, "ret", json_boolean(ours));
        rp_set_result(step, res);
        return 0;
    }
    if (strcmp(op, "seq_cp") == 0) {
        if (!rp_get_i32(r, step, "src", INT32_MIN, INT32_MAX, &seq) ||
            !rp_get_i32(r, step, "dst", INT32_MIN, INT32_MAX, &x) ||
            !rp_get_i32(r, step, "p0", INT32_MIN, INT32_MAX, &p0) ||
            !rp_get_i32(r, step, "p1", INT32_MIN, INT32_MAX, &p1)) {
            return -1;
        }
        rp_check_status(r, cs_kv_seq_cp(r->ctx, seq, x, p0, p1));
        rp_step_line(r, "%d -> %d [%d, %d)", seq, x, p0, p1);
        return 0;
    }
    if (strcmp(op, "seq_keep") == 0) {
        if (!rp_get_i32(r, step, "seq", INT32_MIN, INT32_MAX, &seq)) return -1;
        rp_check_status(r, cs_kv_seq_keep(r->ctx, seq));
        rp_step_line(r, "seq %d", seq);
        return 0;
    }
    if (strcmp(op, "seq_add") == 0 || strcmp(op, "seq_div") == 0) {
        const bool add = op[4] == 'a';
        if (!rp_get_i32(r, step, "seq", INT32_MIN, INT32_MAX, &seq) ||
            !rp_get_i32(r, step, "p0", INT32_MIN, INT32_MAX, &p0) ||
            !rp_get_i32(r, step, "p1", INT32_MIN, INT32_MAX, &p1) ||
            !rp_get_i32(r, step, add ? "delta" : "d", INT32_MIN, INT32_MAX, &x)) {
            return -1;
        }
        rp_check_status(r, add ? cs_kv_seq_add(r->ctx, seq, p0, p1, x)
                               : cs_kv_seq_div(r->ctx, seq, p0, p1, x));
        rp_step_line(r, "seq %d [%d, %d) %s %d", seq, p0, p1, add ? "+" : "/", x);
        return 0;
    }
    if (strcmp(op, "defrag") == 0) {
        cs_kv_defrag(r->ctx);
        rp_step_line(r, "scheduled");
        return 0;
    }
    if (strcmp(op, "update") == 0) {
        rp_check_status(r, cs_kv_update(r->ctx));
        rp_step_line(r, "done");
        return 0;
    }
    rp_fail(r, "unknown op '%s'", op);
    return 0;
}

/* ------------------------------------------------------------ runs */

static void rp_stats_add(rp_stats *a, const rp_stats *b) {
    a->n_steps += b->n_steps;
    a->n_rows += b->n_rows;
    a->n_values += b->n_values;
    a->n_fail += b->n_fail;
    a->n_departures += b->n_departures;
    a->n_near_ties += b->n_near_ties;
    if (isnan(b->max_diff) || b->max_diff > a->max_diff) a->max_diff = b->max_diff;
}

static void rp_print_stats(const char *what, const rp_stats *s) {
    printf("%s: %lld steps, %lld rows compared, %lld values compared, max |diff| %.3g, "
           "%lld failures, %lld departures, %lld near-ties\n",
           what, (long long)s->n_steps, (long long)s->n_rows, (long long)s->n_values, s->max_diff,
           (long long)s->n_fail, (long long)s->n_departures, (long long)s->n_near_ties);
}

/* Replay run number run_i. Adds its figures to *total. Returns 0, or
 * TOOL_EXIT_FAIL when the run was malformed (reported). */
static int rp_replay_run(const rp_opts *o, const cs_model *model, double atol, json_t *run,
                         size_t run_i, rp_stats *total) {
    rp_run r;
    memset(&r, 0, sizeof r);
    r.o = o;
    r.atol = atol;
    r.tie_margin = o->tie_margin >= 0.0 ? o->tie_margin : 2.0 * atol;
    r.n_vocab = cs_model_n_vocab(model);
    for (int s = 0; s < RP_MAX_SEQ; s++) r.last_arg[s] = -1;
    char name_buf[32];
    json_t *jn = json_object_get(run, "name");
    if (json_is_string(jn)) {
        r.name = json_string_value(jn);
    } else {
        snprintf(name_buf, sizeof name_buf, "#%zu", run_i);
        r.name = name_buf;
    }
    json_t *cx = json_object_get(run, "context");
    json_t *steps = json_object_get(run, "steps");
    if (!json_is_object(cx) || !json_is_array(steps)) {
        tool_error("replay: run '%s': 'context' must be an object and 'steps' an array", r.name);
        return TOOL_EXIT_FAIL;
    }
    int32_t n_ctx = 0, n_batch = 0, n_ubatch = 0, n_seq_max = 0, type_k = 0, type_v = 0;
    const int32_t max_cells = o->max_cells > 0 ? o->max_cells : RP_MAX_CELLS;
    if (!rp_ctx_i32(cx, "n_ctx", -1, 1, max_cells, &n_ctx, r.name)) return TOOL_EXIT_FAIL;
    if (n_ctx < 0) {
        tool_error("replay: run '%s': context.n_ctx is missing", r.name);
        return TOOL_EXIT_FAIL;
    }
    if (!rp_ctx_i32(cx, "n_batch", n_ctx, 1, max_cells, &n_batch, r.name) ||
        !rp_ctx_i32(cx, "n_ubatch", n_batch, 1, max_cells, &n_ubatch, r.name) ||
        !rp_ctx_i32(cx, "n_seq_max", 8, 1, RP_MAX_SEQ, &n_seq_max, r.name) ||
        !rp_ctx_type(cx, "type_k", &type_k, r.name) ||
        !rp_ctx_type(cx, "type_v", &type_v, r.name)) {
        return TOOL_EXIT_FAIL;
    }
    r.n_ubatch = n_ubatch;
    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_batch;
    cp.n_seq_max = (uint32_t)n_seq_max;
    cp.n_threads = o->common.n_threads;
    cp.type_k = type_k;
    cp.type_v = type_v;
    cp.contiguous_slots = o->contiguous;
    cp.defrag_thold = -1.0f;
    printf("run '%s': n_ctx %d, n_batch %d, n_ubatch %d, n_seq_max %d, cache %s/%s, %zu steps\n",
           r.name, n_ctx, n_batch, n_ubatch, n_seq_max, cs_type_name(type_k), cs_type_name(type_v),
           json_array_size(steps));
    const uint64_t t0 = tool_time_ns();
    cs_status st = cs_context_new(model, &cp, &r.ctx);
    if (st != CS_OK) {
        tool_error("replay: run '%s': %s", r.name, cs_last_error());
        r.st.n_fail++;
        rp_stats_add(total, &r.st);
        return 0;
    }
    r.n_cells = cs_kv_view(r.ctx, NULL, 0);
    r.view = calloc((size_t)(r.n_cells > 0 ? r.n_cells : 1), sizeof *r.view);
    if (r.view == NULL) {
        tool_error("replay: out of memory for %d cells", r.n_cells);
        cs_context_free(r.ctx);
        return TOOL_EXIT_FAIL;
    }
    size_t si;
    json_t *step;
    bool aborted = false;
    json_array_foreach(steps, si, step) {
        r.step = si;
        r.op = NULL;
        if (aborted) {
            rp_set_result(step, NULL); /* not replayed: no result of ours */
            continue;
        }
        r.st.n_steps++;
        json_t *jop = json_is_object(step) ? json_object_get(step, "op") : NULL;
        if (!json_is_string(jop)) {
            rp_fail(&r, "malformed step: no 'op' string");
            aborted = true;
            continue;
        }
        r.op = json_string_value(jop);
        if (rp_step(&r, step) != 0) {
            aborted = true;
            printf("FAIL: run '%s': stopped after step %zu; the remaining steps are not replayed\n",
                   r.name, si);
        }
    }
    const double secs = (double)(tool_time_ns() - t0) * 1e-9;
    char what[300];
    snprintf(what, sizeof what, "run '%.200s'", r.name);
    rp_print_stats(what, &r.st);
    fprintf(stderr, "replay: run '%s': %.3f s\n", r.name, secs);
    rp_stats_add(total, &r.st);
    free(r.view);
    cs_context_free(r.ctx);
    return 0;
}

/* Row `row_index` of step `step` of run `run` in the (updated) tree. */
static json_t *rp_check_row(json_t *root, json_t *ref) {
    json_t *runs = json_object_get(root, "runs");
    json_t *run = json_array_get(runs, (size_t)json_integer_value(json_object_get(ref, "run")));
    json_t *step = json_array_get(json_object_get(run, "steps"),
                                  (size_t)json_integer_value(json_object_get(ref, "step")));
    json_t *rows = json_object_get(json_object_get(step, "result"), "rows");
    json_t *row =
        json_array_get(rows, (size_t)json_integer_value(json_object_get(ref, "row_index")));
    json_t *lg = json_object_get(row, "logits");
    return json_is_array(lg) ? row : NULL;
}

/* The file's `checks` (two routes to one cache state) recomputed from our
 * rows: printed as information and updated in the tree for --out. */
static void rp_checks(json_t *root, bool quiet) {
    json_t *checks = json_object_get(root, "checks");
    size_t i;
    json_t *c;
    json_array_foreach(checks, i, c) {
        json_t *a = rp_check_row(root, json_object_get(c, "a"));
        json_t *b = rp_check_row(root, json_object_get(c, "b"));
        json_t *jw = json_object_get(c, "what");
        const char *what = json_is_string(jw) ? json_string_value(jw) : "?";
        if (!a || !b) {
            if (!quiet) printf("check %zu (%s): rows not available\n", i, what);
            continue;
        }
        json_t *la = json_object_get(a, "logits"), *lb = json_object_get(b, "logits");
        double d = 0.0;
        for (size_t k = 0; k < json_array_size(la) && k < json_array_size(lb); k++) {
            const double x = fabs(json_number_value(json_array_get(la, k)) -
                                  json_number_value(json_array_get(lb, k)));
            if (x > d) d = x;
        }
        const bool eq = json_equal(json_object_get(a, "argmax"), json_object_get(b, "argmax"));
        json_t *ref_d = json_object_get(c, "max_abs_diff");
        if (!quiet) {
            printf("check %zu (%s): ours max |diff| %.3g, arg-max %s; llama.cpp %.3g (info)\n", i,
                   what, d, eq ? "equal" : "differs",
                   json_is_number(ref_d) ? json_number_value(ref_d) : -1.0);
        }
        json_object_set_new(c, "max_abs_diff", json_real(d));
        json_object_set_new(c, "argmax_equal", json_boolean(eq));
    }
}

const char *rp_scenario_model(json_t *root, const char *file) {
    json_t *jfmt = json_object_get(root, "format");
    json_t *jmodel = json_object_get(root, "model");
    if (!json_is_object(root) || !json_is_string(jfmt) ||
        strcmp(json_string_value(jfmt), "llama-kv-golden/1") != 0) {
        tool_error("replay: %s: not a scenario (\"format\" must be \"llama-kv-golden/1\")", file);
        return NULL;
    }
    if (!json_is_string(jmodel) || json_string_length(jmodel) == 0 ||
        !json_is_array(json_object_get(root, "runs"))) {
        tool_error("replay: %s: \"model\" must be a file name and \"runs\" an array", file);
        return NULL;
    }
    return json_string_value(jmodel);
}

int rp_replay_runs(const rp_opts *o, const cs_model *model, double atol, json_t *root,
                   rp_stats *total) {
    memset(total, 0, sizeof *total);
    size_t ri;
    json_t *run;
    json_array_foreach(json_object_get(root, "runs"), ri, run) {
        if (!json_is_object(run)) {
            tool_error("replay: %s: runs[%zu] is not an object", o->file, ri);
            return TOOL_EXIT_FAIL;
        }
        if (rp_replay_run(o, model, atol, run, ri, total) != 0) return TOOL_EXIT_FAIL;
    }
    rp_checks(root, o->quiet);
    return 0;
}

/* Find the scenario's model file. Returns 0 or TOOL_EXIT_FAIL (reported). */
static int rp_model_path(const rp_opts *o, const char *model, char *out, size_t size) {
    if (o->models_dir != NULL) {
        snprintf(out, size, "%s/%s", o->models_dir, model);
        return 0;
    }
    char tried[2][RP_PATH_MAX];
    snprintf(tried[0], sizeof tried[0], "../shared/models/%s", model);
    const char *slash = strrchr(o->file, '/');
    if (slash != NULL) {
        snprintf(tried[1], sizeof tried[1], "%.*s/../models/%s", (int)(slash - o->file), o->file,
                 model);
    } else {
        snprintf(tried[1], sizeof tried[1], "../models/%s", model);
    }
    for (int i = 0; i < 2; i++) {
        if (access(tried[i], R_OK) == 0) {
            snprintf(out, size, "%s", tried[i]);
            return 0;
        }
    }
    tool_error("replay: model '%s' not found: tried %s and %s (use --models DIR)", model, tried[0],
               tried[1]);
    return TOOL_EXIT_FAIL;
}

/* Default tolerance from the weight type (the last word of cs_model_desc). */
static double rp_default_atol(const cs_model *model, char *type_name, size_t size) {
    char desc[128];
    cs_model_desc(model, desc, sizeof desc);
    const char *sp = strrchr(desc, ' ');
    snprintf(type_name, size, "%s", sp ? sp + 1 : desc);
    if (strcmp(type_name, "f32") == 0) return RP_ATOL_F32;
    if (strcmp(type_name, "f16") == 0 || strcmp(type_name, "bf16") == 0) return RP_ATOL_F16;
    return RP_ATOL_QUANT;
}

int cmd_replay(int argc, char **argv) {
    rp_opts o = {
        .common = tool_common_defaults(TOOL_FLAG_THREADS),
        .atol = -1.0,
        .tie_margin = -1.0,
        .contiguous = true,
    };
    o.common.n_threads = 1;
    int rc = rp_parse(argc, argv, &o);
    if (!tool_begin(&rc, &o.common, rp_usage)) return rc;

    cs_model *model = NULL;
    json_error_t jerr;
    json_t *root = json_load_file(o.file, 0, &jerr);
    if (root == NULL) {
        if (jerr.line > 0) {
            tool_error("replay: %s: line %d, column %d: %s", o.file, jerr.line, jerr.column,
                       jerr.text);
        } else {
            tool_error("replay: %s: %s", o.file, jerr.text);
        }
        return TOOL_EXIT_FAIL;
    }
    rc = TOOL_EXIT_FAIL;
    const char *model_name = rp_scenario_model(root, o.file);
    if (model_name == NULL) goto done;
    json_t *runs = json_object_get(root, "runs");
    char mpath[RP_PATH_MAX + 256];
    if (rp_model_path(&o, model_name, mpath, sizeof mpath) != 0) goto done;
    const uint64_t t_load = tool_time_ns();
    if (tool_load_model(mpath, false, &model) != 0) goto done;
    char type_name[128];
    const double def_atol = rp_default_atol(model, type_name, sizeof type_name);
    const double atol = o.atol >= 0.0 ? o.atol : def_atol;
    json_t *jname = json_object_get(root, "name");
    printf("replay %s (%s): model %s (%s), atol %.3g, tie margin %.3g, %d thread%s, %s "
           "placement\n",
           o.file, json_is_string(jname) ? json_string_value(jname) : "?", mpath, type_name, atol,
           o.tie_margin >= 0.0 ? o.tie_margin : 2.0 * atol, o.common.n_threads,
           o.common.n_threads == 1 ? "" : "s", o.contiguous ? "contiguous" : "any-cell");
    fprintf(stderr, "replay: model loaded in %.3f s\n", (double)(tool_time_ns() - t_load) * 1e-9);

    const uint64_t t0 = tool_time_ns();
    rp_stats total;
    if (rp_replay_runs(&o, model, atol, root, &total) != 0) goto done;
    const double secs = (double)(tool_time_ns() - t0) * 1e-9;
    rp_print_stats("total", &total);
    printf("%s\n", total.n_fail == 0 ? "PASS" : "FAIL");
    fprintf(stderr, "replay: %zu runs replayed in %.3f s\n", json_array_size(runs), secs);

    if (o.out_path != NULL) {
        json_t *meta = json_object();
        json_object_set_new(meta, "tool", json_string("ctxshift replay"));
        json_object_set_new(meta, "atol", json_real(atol));
        json_object_set_new(meta, "tie_margin",
                            json_real(o.tie_margin >= 0.0 ? o.tie_margin : 2.0 * atol));
        json_object_set_new(meta, "n_threads", json_integer(o.common.n_threads));
        json_object_set_new(meta, "contiguous_slots", json_boolean(o.contiguous));
        json_object_set_new(meta, "failures", json_integer(total.n_fail));
        json_object_set_new(meta, "departures", json_integer(total.n_departures));
        json_object_set_new(meta, "max_abs_diff", rp_real(total.max_diff));
        json_object_set_new(root, "replayed_by", meta);
        if (json_dump_file(root, o.out_path, JSON_COMPACT | JSON_REAL_PRECISION(RP_REAL_DIGITS)) !=
            0) {
            tool_error("replay: cannot write %s", o.out_path);
            goto done;
        }
    }
    rc = total.n_fail == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAIL;
done:
    cs_model_free(model);
    json_decref(root);
    return rc;
}
