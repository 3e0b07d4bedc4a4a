/* quantize.c: cs_model_quantize, the backend of `ctxshift quantize`:
 * rewrite the weights of a llama or qwen2 GGUF in another type, tensor by
 * tensor.
 *
 * Which type each tensor gets (qz_choose_type):
 * - Only 2-D (and higher) tensors whose name ends in "weight" and is not a
 *   norm are converted; 1-D tensors (biases, rope_freqs) and norms are
 *   copied as they are (F32 in every llama file).
 * - A plain type (every weight type of the type table that the engine can
 *   write, f32 excepted, named in any case: "q4_0", "Q6_K") converts
 *   every such tensor to that type, like `llama-quantize --pure`. This is
 *   how the reference files shared/models/stories260K-q8_0/q4_0.gguf were
 *   made (every 2-D weight in the type, output.weight included).
 * - A mix (k_mixes: llama.cpp's file types, named "llama:" and
 *   llama-quantize's name: "llama:Q4_K_M", "llama:Q4_0"; a mix whose name
 *   is no type's works bare too: "Q4_K_M") follows llama_tensor_get_type of
 *   llama.cpp's src/llama-quant.cpp (the release node-llama-cpp 3.21.1
 *   ships) without an importance matrix, for a model without experts:
 *     output.weight, and token_embd.weight when the file has no
 *     output.weight (tied embeddings): q8_0 when its rows are not a
 *     multiple of the mix's default type's block, else q8_0 for the Q8_0
 *     mix and q6_K for every other;
 *     attn_v.weight, ffn_down.weight, attn_output.weight: the row's rule
 *     (qz_attn_v_rule, qz_ffn_down_rule, attn_output), by layer i of n
 *     (n: the attn_v tensors in the file, resp. <arch>.block_count), with
 *       use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2
 *     and n_gqa = head_count / head_count_kv; a 70B model (80 layers, and
 *     for llama GQA) gets q5_K for an attn_v of q3_K or q4_K;
 *     everything else, untied token_embd included: the default type.
 *   Files with experts (<arch>.expert_count > 1) are refused: llama.cpp's
 *   MoE rules are not implemented.
 * - Row lengths that do not fit the chosen type's block, llama.cpp's
 *   tensor_type_fallback (qz_fallback): q2_K and q3_K -> q4_0, iq4_xs ->
 *   iq4_nl, q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0; a 32-block type stays;
 *   when that still does not fit (rows not a multiple of 32), f16. Plain
 *   types differ in one case: a 32-block plain type (q8_0, q4_0, ...)
 *   keeps such a tensor in F32, as the reference files keep stories260K's
 *   ffn_down (rows of 172).
 * - A tensor already in its chosen type is copied byte for byte.
 *
 * Conversion: each row is dequantized to f32 (dequantize_row) and
 * quantized with ggml's reference quantizers (quantize_row; for iq4_nl
 * quantize_iq4_nl, the search llama-quantize runs, which ggml's _ref
 * skips), so the bytes are those llama-quantize writes without an
 * importance matrix.
 * Rows are split over a thread pool; the result does not depend on the
 * number of threads.
 *
 * Memory: the input is mapped; one chunk of at most QZ_CHUNK_BYTES of
 * output rows plus one f32 row per thread. The output is written to
 * OUT.tmp and renamed to OUT only when complete. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cs_limits.h"
#include "gguf.h"
#include "gguf_stream.h"
#include "kernels/iquants.h"
#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "quantize_rules.h"
#include "threadpool.h"
#include "types.h"

/* Output bytes converted per thread-pool run: big enough that the pool's
 * wake-up cost is negligible, small enough to bound memory. */
#define QZ_CHUNK_BYTES ((size_t)8 << 20)
/* Upper bound on the automatic thread count. */
#define QZ_MAX_AUTO_THREADS 64

/* One row per llama.cpp file type (llama_ftype ids of llama.h). The rules
 * of a mix that llama_tensor_get_type applies to a dense llama/qwen2
 * model without an importance matrix are exactly these columns. */
static const qz_mix k_mixes[] = {
    /* name    ftype default      attn_v                ffn_down             attn_output */
    {"Q4_0", 2, CS_TYPE_Q4_0, QZ_V_NONE, QZ_D_NONE, -1},
    {"Q4_1", 3, CS_TYPE_Q4_1, QZ_V_NONE, QZ_D_NONE, -1},
    {"Q8_0", 7, CS_TYPE_Q8_0, QZ_V_NONE, QZ_D_NONE, -1},
    {"Q5_0", 8, CS_TYPE_Q5_0, QZ_V_NONE, QZ_D_NONE, -1},
    {"Q5_1", 9, CS_TYPE_Q5_1, QZ_V_NONE, QZ_D_NONE, -1},
    {"Q2_K", 10, CS_TYPE_Q2_K, QZ_V_GQA4_Q4_K_ELSE_Q3_K, QZ_D_Q3_K, CS_TYPE_Q3_K},
    {"Q3_K_S", 11, CS_TYPE_Q3_K, QZ_V_NONE, QZ_D_NONE, -1},
    {"Q3_K_M", 12, CS_TYPE_Q3_K, QZ_V_FIRST2_Q5_K_ELSE_Q4_K, QZ_D_Q3_K_M, CS_TYPE_Q4_K},
    {"Q3_K_L", 13, CS_TYPE_Q3_K, QZ_V_Q5_K, QZ_D_Q5_K, CS_TYPE_Q5_K},
    {"Q4_K_S", 14, CS_TYPE_Q4_K, QZ_V_FIRST4_Q5_K, QZ_D_EIGHTH_Q5_K, -1},
    {"Q4_K_M", 15, CS_TYPE_Q4_K, QZ_V_MORE_BITS_Q6_K, QZ_D_MORE_BITS_Q6_K, -1},
    {"Q5_K_S", 16, CS_TYPE_Q5_K, QZ_V_NONE, QZ_D_NONE, -1},
    {"Q5_K_M", 17, CS_TYPE_Q5_K, QZ_V_MORE_BITS_Q6_K, QZ_D_MORE_BITS_Q6_K, -1},
    {"Q6_K", 18, CS_TYPE_Q6_K, QZ_V_NONE, QZ_D_NONE, -1},
    {"IQ4_NL", 25, CS_TYPE_IQ4_NL, QZ_V_GQA4_Q5_K, QZ_D_EIGHTH_Q5_K, -1},
    {"IQ4_XS", 30, CS_TYPE_IQ4_XS, QZ_V_GQA4_Q5_K, QZ_D_EIGHTH_Q5_K, -1},
};
#define QZ_N_MIXES (sizeof k_mixes / sizeof k_mixes[0])

const qz_mix *qz_mixes(size_t *n) {
    *n = QZ_N_MIXES;
    return k_mixes;
}

const char *cs_quantize_mix_name(int32_t i) {
    return i >= 0 && (size_t)i < QZ_N_MIXES ? k_mixes[i].name : NULL;
}

/* A target: a mix, or a plain type (mix NULL). */
typedef struct qz_target {
    const char *name;
    int32_t type;      /* plain type, or the mix's default type */
    const qz_mix *mix; /* NULL: plain */
    uint32_t ftype;    /* general.file_type */
} qz_target;

/* A plain target: a weight type the engine can write (the type table's
 * from_float_ref), f32 excepted. */
static bool qz_plain_target(int32_t type) {
    const type_traits *tr = type_traits_get(type);
    return type != CS_TYPE_F32 && tr && tr->is_weight && tr->from_float_ref;
}

static qz_target qz_mix_target(const qz_mix *m) {
    return (qz_target){m->name, m->type, m, m->ftype};
}

/* The target named name (case-insensitive): "llama:" and a mix's name is
 * that mix ("llama:Q4_0"); a bare name is a plain type ("q4_0") or else a
 * mix ("Q4_K_M", which names no type). Nine mixes share their name with
 * their default type (Q4_0, Q8_0, Q2_K, Q6_K, IQ4_XS, ...): bare, those
 * stay the plain types they always were. */
static bool qz_find_target(const char *name, qz_target *out) {
    const bool prefixed = strncasecmp(name, QZ_MIX_PREFIX, strlen(QZ_MIX_PREFIX)) == 0;
    const char *mix = prefixed ? name + strlen(QZ_MIX_PREFIX) : name;
    const int32_t type = prefixed ? -1 : cs_type_from_name(name);
    if (qz_plain_target(type)) {
        const type_traits *tr = type_traits_get(type);
        *out = (qz_target){tr->name, type, NULL, (uint32_t)tr->ftype};
        return true;
    }
    for (size_t i = 0; i < QZ_N_MIXES; i++)
        if (strcasecmp(k_mixes[i].name, mix) == 0) return *out = qz_mix_target(&k_mixes[i]), true;
    return false;
}

/* "f16, q4_0, ..., or llama: and Q4_0, ... or IQ4_XS" into buf (truncated
 * to fit). */
static const char *qz_target_names(char *buf, size_t cap) {
    int32_t types[CS_TYPE_COUNT];
    const int32_t n = cs_weight_types(types, CS_TYPE_COUNT);
    size_t len = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < n && len < cap; i++)
        if (qz_plain_target(types[i]))
            len += (size_t)snprintf(buf + len, cap - len, "%s, ", cs_type_name(types[i]));
    if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "or %s and ", QZ_MIX_PREFIX);
    for (size_t i = 0; i < QZ_N_MIXES && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", k_mixes[i].name,
                                i + 2 < QZ_N_MIXES   ? ", "
                                : i + 1 < QZ_N_MIXES ? " or "
                                                     : "");
    return buf;
}

/* Types dequantize_row reads: the weight types (type table's to_float). */
static bool qz_can_convert(int32_t type) {
    const type_traits *tr = type_traits_get(type);
    return tr && tr->is_weight && tr->to_float;
}

static bool qz_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third layer in between get more bits. */
static bool qz_use_more_bits(int64_t i, int64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool qz_fits(int32_t type, int64_t ne0) {
    return ne0 % type_traits_get(type)->blck == 0;
}

/* llama.cpp's tensor_type_fallback for a row of ne0 that does not fit
 * type: the 32-block type of about as many bits, or F16 when rows are not
 * a multiple of 32 either (plain 32-block types: F32, see the top). */
static int32_t qz_fallback(int32_t type, int64_t ne0, bool plain) {
    if (qz_fits(type, ne0)) return type;
    int32_t fb = type;
    switch (type) {
    case CS_TYPE_Q2_K:
    case CS_TYPE_Q3_K:
        fb = CS_TYPE_Q4_0;
        break;
    case CS_TYPE_IQ4_XS:
        fb = CS_TYPE_IQ4_NL;
        break;
    case CS_TYPE_Q4_K:
        fb = CS_TYPE_Q5_0;
        break;
    case CS_TYPE_Q5_K:
        fb = CS_TYPE_Q5_1;
        break;
    case CS_TYPE_Q6_K:
        fb = CS_TYPE_Q8_0;
        break;
    default:
        if (plain) return CS_TYPE_F32;
        break;
    }
    return qz_fits(fb, ne0) ? fb : CS_TYPE_F16;
}

int32_t qz_rule_type(const qz_mix *m, const qz_model_info *mi, const char *name, int64_t ne0,
                     int64_t layer) {
    int32_t type = m->type;
    const int64_t gqa = mi->n_head_kv > 0 ? mi->n_head / mi->n_head_kv : 1;
    if (strcmp(name, "output.weight") == 0 ||
        (!mi->has_output && strcmp(name, "token_embd.weight") == 0)) {
        type = !qz_fits(type, ne0) || type == CS_TYPE_Q8_0 ? CS_TYPE_Q8_0 : CS_TYPE_Q6_K;
    } else if (strstr(name, "attn_v.weight")) {
        switch (m->attn_v) {
        case QZ_V_NONE:
            break;
        case QZ_V_GQA4_Q4_K_ELSE_Q3_K:
            type = gqa >= 4 ? CS_TYPE_Q4_K : CS_TYPE_Q3_K;
            break;
        case QZ_V_FIRST2_Q5_K_ELSE_Q4_K:
            type = layer < 2 ? CS_TYPE_Q5_K : CS_TYPE_Q4_K;
            break;
        case QZ_V_Q5_K:
            type = CS_TYPE_Q5_K;
            break;
        case QZ_V_GQA4_Q5_K:
            if (gqa >= 4) type = CS_TYPE_Q5_K;
            break;
        case QZ_V_MORE_BITS_Q6_K:
            if (qz_use_more_bits(layer, mi->n_attn_v)) type = CS_TYPE_Q6_K;
            break;
        case QZ_V_FIRST4_Q5_K:
            if (layer < 4) type = CS_TYPE_Q5_K;
            break;
        }
        if (mi->is_70b && (type == CS_TYPE_Q3_K || type == CS_TYPE_Q4_K)) type = CS_TYPE_Q5_K;
    } else if (strstr(name, "attn_output.weight")) {
        if (m->attn_output >= 0) type = m->attn_output;
    } else if (strstr(name, "ffn_down")) {
        const int64_t n = mi->n_layer;
        switch (m->ffn_down) {
        case QZ_D_NONE:
            break;
        case QZ_D_Q3_K:
            type = CS_TYPE_Q3_K;
            break;
        case QZ_D_Q3_K_M:
            type = layer < n / 16 ? CS_TYPE_Q5_K : CS_TYPE_Q4_K;
            break;
        case QZ_D_Q5_K:
            type = CS_TYPE_Q5_K;
            break;
        case QZ_D_MORE_BITS_Q6_K:
            if (qz_use_more_bits(layer, n)) type = CS_TYPE_Q6_K;
            break;
        case QZ_D_EIGHTH_Q5_K:
            if (layer < n / 8) type = CS_TYPE_Q5_K;
            break;
        }
    }
    return qz_fallback(type, ne0, false);
}

/* Layer of a "blk.N." tensor (-1 for none). llama.cpp counts attn_v and
 * ffn_down tensors in layer order; with one of each per layer the count
 * is the layer number. */
static int64_t qz_layer_of(const char *name) {
    int layer = -1;
    if (sscanf(name, "blk.%d.", &layer) != 1) return -1;
    return layer;
}

/* The type tensor t gets (see the top of the file). */
static int32_t qz_choose_type(const qz_target *tg, const qz_model_info *mi, const gguf_tensor *t) {
    if (t->n_dims < 2 || !qz_ends_with(t->name, "weight") || strstr(t->name, "_norm.weight"))
        return t->type;
    if (tg->type == CS_TYPE_F16 || tg->type == CS_TYPE_BF16) return tg->type; /* every row fits */
    if (!tg->mix) return qz_fallback(tg->type, t->ne[0], true);
    return qz_rule_type(tg->mix, mi, t->name, t->ne[0], qz_layer_of(t->name));
}

/* ------------------------------------------------------------ conversion */

typedef struct qz_job {
    const uint8_t *src; /* first row of the chunk */
    uint8_t *dst;
    int32_t src_type, dst_type;
    int64_t ne0, n_rows;
    uint64_t row_in, row_out;
    float *scratch; /* ne0 floats per thread */
} qz_job;

static void qz_job_run(void *arg, int32_t ith, int32_t nth) {
    const qz_job *j = arg;
    int64_t r0, r1;
    threadpool_split(j->n_rows, ith, nth, &r0, &r1);
    float *row = j->scratch + (size_t)ith * (size_t)j->ne0;
    for (int64_t r = r0; r < r1; r++) {
        dequantize_row(j->src_type, j->src + (size_t)r * j->row_in, row, j->ne0);
        uint8_t *out = j->dst + (size_t)r * j->row_out;
        if (j->dst_type == CS_TYPE_IQ4_NL) /* llama-quantize's, not ggml's _ref (iquants.h) */
            quantize_iq4_nl(row, out, j->ne0);
        else
            quantize_row(j->dst_type, row, out, j->ne0);
    }
}

/* Write one tensor: a copy, or a conversion chunk by chunk. */
static cs_status qz_write_tensor(gguf_stream *s, threadpool *tp, const gguf_tensor *t, int32_t type,
                                 uint8_t *chunk, float *scratch) {
    cs_status st;
    if (type == t->type) return gguf_stream_write(s, t->data, (size_t)t->nbytes);
    qz_job j;
    j.src_type = t->type;
    j.dst_type = type;
    j.ne0 = t->ne[0];
    j.n_rows = t->ne[1] * t->ne[2] * t->ne[3];
    if (j.n_rows == 0) return CS_OK;
    j.row_in = t->nbytes / (uint64_t)j.n_rows;
    CS_ASSERT(type_row_size(type, j.ne0, &j.row_out));
    j.scratch = scratch;
    j.dst = chunk;
    int64_t total = j.n_rows;
    int64_t rows_per_chunk = (int64_t)(QZ_CHUNK_BYTES / j.row_out);
    if (rows_per_chunk < 1) rows_per_chunk = 1;
    for (int64_t r = 0; r < total; r += rows_per_chunk) {
        j.n_rows = total - r < rows_per_chunk ? total - r : rows_per_chunk;
        j.src = (const uint8_t *)t->data + (size_t)r * j.row_in;
        threadpool_run(tp, qz_job_run, &j);
        if ((st = gguf_stream_write(s, chunk, (size_t)j.n_rows * j.row_out)) != CS_OK) return st;
    }
    return CS_OK;
}

/* --------------------------------------------------------------- driver */

static cs_status qz_metadata(gguf_writer *w, const gguf_file *g, const qz_target *tg) {
    cs_status st;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        /* The stream writes with the default alignment. */
        if (strcmp(gguf_kv_key(g, i), "general.alignment") == 0) continue;
        if ((st = gguf_writer_copy_kv(w, g, i)) != CS_OK) return st;
    }
    if ((st = gguf_writer_set_u32(w, "general.file_type", tg->ftype)) != CS_OK) return st;
    return gguf_writer_set_u32(w, "general.quantization_version", 2);
}

static int32_t qz_auto_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > QZ_MAX_AUTO_THREADS ? QZ_MAX_AUTO_THREADS : (int32_t)n;
}

/* Phase 1 (parse): validate the arguments, resolve `type` into *target and
 * a thread count of 0 into qz_auto_threads(). Allocates nothing; the
 * failure is reported (error_fail) and returned. */
static cs_status qz_check_args(const char *in_path, const char *out_path, const char *type,
                               int32_t *n_threads, qz_target *target) {
    char names[512];
    if (!in_path || !out_path || !type)
        return error_fail(CS_ERR_INVALID_ARG, "quantize: in_path, out_path and type are required");
    if (!qz_find_target(type, target))
        return error_fail(CS_ERR_INVALID_ARG, "quantize: unknown type '%s' (expected %s)", type,
                          qz_target_names(names, sizeof names));
    if (*n_threads < 0 || *n_threads > CS_MAX_THREADS)
        return error_fail(CS_ERR_INVALID_ARG, "quantize: n_threads %" PRId32 " is not in 0..%d",
                          *n_threads, CS_MAX_THREADS);
    if (*n_threads == 0) *n_threads = qz_auto_threads();
    return CS_OK;
}

/* The type rules and tensor names above are those of the llama family:
 * refuse any general.architecture but llama and qwen2 (or none) before
 * planning anything. *arch is set on success. */
static cs_status qz_check_arch(const gguf_file *g, const char *in_path, const char **arch) {
    *arch = NULL;
    if (gguf_get_str(g, "general.architecture", arch, NULL) != CS_OK ||
        (strcmp(*arch, "llama") != 0 && strcmp(*arch, "qwen2") != 0))
        return error_fail(CS_ERR_UNSUPPORTED,
                          "quantize: '%s': general.architecture is %s%s%s, not llama or qwen2",
                          in_path, *arch ? "'" : "", *arch ? *arch : "missing", *arch ? "'" : "");
    return CS_OK;
}

/* <arch>.<suffix> as an integer into *out; def when absent (def < 0: the
 * key is required and its absence an error). */
static cs_status qz_arch_int(const gguf_file *g, const char *arch, const char *suffix, int64_t def,
                             int64_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (def >= 0 && gguf_find_key(g, key) < 0) return *out = def, CS_OK;
    return gguf_get_int(g, key, out);
}

/* What the mix rules read (qz_model_info), for a mix; refuses a file with
 * experts, whose rules (llama.cpp's n_expert cases) are not implemented.
 * O(n_tensors). */
static cs_status qz_model_info_read(const gguf_file *g, const char *arch, const char *in_path,
                                    qz_model_info *mi) {
    cs_status st;
    int64_t n_expert = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const char *name = gguf_tensor_at(g, i)->name;
        if (strcmp(name, "output.weight") == 0) mi->has_output = true;
        if (strstr(name, "attn_v.weight")) mi->n_attn_v++;
    }
    if ((st = qz_arch_int(g, arch, "block_count", -1, &mi->n_layer)) != CS_OK) return st;
    if ((st = qz_arch_int(g, arch, "attention.head_count", -1, &mi->n_head)) != CS_OK) return st;
    if ((st = qz_arch_int(g, arch, "attention.head_count_kv", mi->n_head, &mi->n_head_kv)) != CS_OK)
        return st;
    if ((st = qz_arch_int(g, arch, "expert_count", 0, &n_expert)) != CS_OK) return st;
    if (n_expert > 1)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "quantize: '%s' has %" PRId64
                          " experts; llama.cpp's rules for experts are not implemented (use a "
                          "plain type)",
                          in_path, n_expert);
    /* llama.cpp's LLM_TYPE_70B: 80 layers; for llama only with GQA (without
     * it the model is LLaMA 65B). */
    mi->is_70b = mi->n_layer == 80 && (strcmp(arch, "qwen2") == 0 || mi->n_head != mi->n_head_kv);
    return CS_OK;
}

/* Phase 2 (build): the output header's tensor list, one entry per input
 * tensor (plus a zeroed terminator) with its chosen type and size, and the
 * longest converted row (*max_ne0 elements in, *max_row_out bytes out;
 * both at least 1) that sizes the buffers. *plan is set as soon as it is
 * allocated, so the caller frees it on every path (mem_free). Fails on a
 * tensor that must be converted from a type the engine cannot read, and
 * for a mix on what qz_model_info_read refuses. O(n_tensors). */
static cs_status qz_plan(const gguf_file *g, const qz_target *tg, const char *arch,
                         const char *in_path, gguf_stream_tensor **plan, int64_t *max_ne0,
                         uint64_t *max_row_out) {
    cs_status st;
    char names[256];
    int64_t n = gguf_n_tensors(g);
    qz_model_info mi = {0};
    if (tg->mix && (st = qz_model_info_read(g, arch, in_path, &mi)) != CS_OK) return st;

    gguf_stream_tensor *p = *plan = mem_calloc((size_t)n + 1, sizeof *p);
    if (!p) return error_fail(CS_ERR_NOMEM, "quantize: out of memory");
    *max_ne0 = 1;
    *max_row_out = 1;
    for (int64_t i = 0; i < n; i++, p++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        p->name = t->name;
        p->type = qz_choose_type(tg, &mi, t);
        p->n_dims = t->n_dims;
        memcpy(p->ne, t->ne, sizeof p->ne);
        p->nbytes = t->nbytes;
        if (p->type == t->type) continue;
        if (!qz_can_convert(t->type))
            return error_fail(
                CS_ERR_UNSUPPORTED,
                "quantize: tensor '%s' has type %s, which cannot be converted (supported: "
                "%s)",
                t->name, cs_type_name(t->type), type_weight_names(names, sizeof names));
        uint64_t row = 0;
        CS_ASSERT(type_row_size(p->type, t->ne[0], &row)); /* qz_choose_type made it fit */
        /* nbytes: the reader checked the source size, and no type takes
         * more than 4 bytes per element, so this cannot overflow. */
        p->nbytes = row * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        if (t->ne[0] > *max_ne0) *max_ne0 = t->ne[0];
        if (row > *max_row_out) *max_row_out = row;
    }
    return CS_OK;
}

/* The working buffers: one output chunk (QZ_CHUNK_BYTES, or one converted
 * row when that is longer), max_ne0 f32 scratch per thread, and the
 * OUT.tmp path. Each pointer is set (NULL when not allocated) for the
 * caller to free on every path; out of memory is reported. */
static cs_status qz_alloc_buffers(int64_t max_ne0, uint64_t max_row_out, int32_t n_threads,
                                  const char *out_path, uint8_t **chunk, float **scratch,
                                  char **tmp_path) {
    size_t chunk_size = max_row_out > QZ_CHUNK_BYTES ? (size_t)max_row_out : QZ_CHUNK_BYTES;
    size_t scratch_n = 0;
    if (!common_mul_size((size_t)max_ne0, (size_t)n_threads, &scratch_n))
        return error_fail(CS_ERR_NOMEM, "quantize: out of memory");
    *chunk = mem_malloc(chunk_size);
    *scratch = mem_malloc(scratch_n * sizeof **scratch);
    size_t plen = strlen(out_path);
    *tmp_path = mem_malloc(plen + 5);
    if (!*chunk || !*scratch || !*tmp_path)
        return error_fail(CS_ERR_NOMEM, "quantize: out of memory");
    memcpy(*tmp_path, out_path, plen);
    memcpy(*tmp_path + plen, ".tmp", 5);
    return CS_OK;
}

/* Phase 3 (work): write tmp_path: the metadata (qz_metadata), the header
 * from plan, then every tensor in file order, converted on tp. Logs one
 * line per tensor. On failure the partial file is aborted (removed by
 * gguf_stream_abort); the writer and stream never outlive this call. Cost:
 * one pass over the input, memory bounded by chunk and scratch. */
static cs_status qz_write_file(const gguf_file *g, const qz_target *tg,
                               const gguf_stream_tensor *plan, const char *tmp_path, threadpool *tp,
                               uint8_t *chunk, float *scratch) {
    cs_status st;
    gguf_writer *w = NULL;
    gguf_stream *s = NULL;
    int64_t n = gguf_n_tensors(g);
    if ((st = gguf_writer_new(&w)) != CS_OK) goto done;
    if ((st = qz_metadata(w, g, tg)) != CS_OK) goto done;
    if ((st = gguf_stream_begin(tmp_path, w, plan, n, &s)) != CS_OK) goto done;
    gguf_writer_free(w);
    w = NULL;
    for (int64_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        CS_LOG_INF("quantize: [%" PRId64 "/%" PRId64 "] %-32s %-5s -> %s", i + 1, n, t->name,
                   cs_type_name(t->type), cs_type_name(plan[i].type));
        if ((st = qz_write_tensor(s, tp, t, plan[i].type, chunk, scratch)) != CS_OK) goto done;
        if ((st = gguf_stream_end_tensor(s)) != CS_OK) goto done;
    }
    st = gguf_stream_finish(s);
    s = NULL;
done:
    gguf_stream_abort(s);
    gguf_writer_free(w);
    return st;
}

/* Phase 4 (report): move the complete tmp_path onto out_path; on failure
 * remove it so no partial output is left behind. */
static cs_status qz_publish(const char *tmp_path, const char *out_path) {
    if (rename(tmp_path, out_path) != 0) {
        remove(tmp_path);
        return error_fail(CS_ERR_IO, "quantize: cannot rename '%s' to '%s'", tmp_path, out_path);
    }
    return CS_OK;
}

cs_status cs_model_quantize_threads(const char *in_path, const char *out_path, const char *type,
                                    int32_t n_threads) {
    qz_target target = {0}; /* set by qz_check_args; zeroed for gcc -Wmaybe-uninitialized */
    cs_status st = qz_check_args(in_path, out_path, type, &n_threads, &target);
    if (st != CS_OK) return st;

    gguf_file *g = NULL;
    const char *arch = NULL;
    gguf_stream_tensor *plan = NULL;
    threadpool *tp = NULL;
    uint8_t *chunk = NULL;
    float *scratch = NULL;
    char *tmp_path = NULL;
    int64_t max_ne0 = 1;
    uint64_t max_row_out = 1;
    if ((st = gguf_open(in_path, &g)) != CS_OK) goto done;
    if ((st = qz_check_arch(g, in_path, &arch)) != CS_OK) goto done;
    if ((st = qz_plan(g, &target, arch, in_path, &plan, &max_ne0, &max_row_out)) != CS_OK)
        goto done;
    st = qz_alloc_buffers(max_ne0, max_row_out, n_threads, out_path, &chunk, &scratch, &tmp_path);
    if (st != CS_OK) goto done;
    if ((st = threadpool_new(n_threads, &tp)) != CS_OK) goto done;
    if ((st = qz_write_file(g, &target, plan, tmp_path, tp, chunk, scratch)) != CS_OK) goto done;
    st = qz_publish(tmp_path, out_path);
done:
    threadpool_free(tp);
    gguf_close(g);
    mem_free(plan);
    mem_free(chunk);
    mem_free(scratch);
    mem_free(tmp_path);
    return st;
}

cs_status cs_model_quantize(const char *in_path, const char *out_path, const char *type) {
    return cs_model_quantize_threads(in_path, out_path, type, 0);
}
