/* quantize.c: cs_model_quantize, the backend of `ctxshift quantize`:
 * rewrite the weights of a llama GGUF in another type, tensor by tensor.
 *
 * Which type each tensor gets (qz_choose_type):
 * - Only 2-D (and higher) tensors whose name ends in "weight" and is not a
 *   norm are converted; 1-D tensors and norms are copied as they are (F32
 *   in every llama file).
 * - The plain types (every weight type of the type table that the engine
 *   can write, f32 excepted: f16, q4_0, q8_0, q4_K, q5_K, q6_K, bf16)
 *   convert every such tensor to that type, like `llama-quantize --pure`. This is how the
 *   reference files shared/models/stories260K-q8_0/q4_0.gguf were made
 *   (every 2-D weight in the type, output.weight included).
 * - The mixes q4_K_M and q5_K_M follow llama.cpp's llama_tensor_get_type
 *   (src/llama-quant.cpp at c392e509) for a llama model without experts:
 *     output.weight (token_embd.weight when the file has no output.weight,
 *     i.e. tied embeddings): q6_K, or q8_0 when its rows are not a multiple
 *     of the base type's 256;
 *     attn_v.weight of layer i (counted in file order) and ffn_down.weight
 *     of layer i: q6_K when use_more_bits(i, n) holds, with
 *       use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2
 *     (n: the number of attn_v tensors, resp. llama.block_count);
 *     everything else, token_embd included: the base type (q4_K, q5_K).
 *   llama.cpp's extra rules for 70B models (attn_v -> q5_K) and for MoE
 *   models are not applied.
 * - Row lengths that do not fit the chosen type's block (llama.cpp's
 *   fallback in llama_tensor_get_type): a 256-block K type falls back to
 *   q8_0 when rows are a multiple of 32 (llama.cpp uses q5_0 for q4_K,
 *   q5_1 for q5_K and q8_0 for q6_K; ctxshift has no q5_0/q5_1, and q8_0 is
 *   the nearest supported type with at least as many bits), else to f16 (as
 *   llama.cpp). A 32-block type (q8_0, q4_0) keeps such a tensor in F32, as
 *   the reference files keep stories260K's ffn_down (rows of 172);
 *   llama-quantize refuses those files.
 * - A tensor already in its chosen type is copied byte for byte.
 *
 * Conversion: each row is dequantized to f32 (dequantize_row) and
 * quantized with ggml's reference quantizers (quantize_row), so the
 * bytes are those llama-quantize writes without an importance matrix.
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
#include "kernels/kernels.h"
#include "kernels/kquants.h"
#include "threadpool.h"
#include "types.h"

/* Output bytes converted per thread-pool run: big enough that the pool's
 * wake-up cost is negligible, small enough to bound memory. */
#define QZ_CHUNK_BYTES ((size_t)8 << 20)
/* Upper bound on the automatic thread count. */
#define QZ_MAX_AUTO_THREADS 64
/* llama_ftype values of the written general.file_type for the mixes (a
 * plain type's is the type table's ftype). */
enum {
    QZ_FTYPE_Q4_K_M = 15,
    QZ_FTYPE_Q5_K_M = 17,
};

typedef struct qz_target {
    const char *name;
    int32_t type;   /* base type */
    bool mix;       /* llama.cpp's _M rules */
    uint32_t ftype; /* general.file_type */
} qz_target;

static const qz_target k_mixes[] = {
    {"q4_K_M", CS_TYPE_Q4_K, true, QZ_FTYPE_Q4_K_M},
    {"q5_K_M", CS_TYPE_Q5_K, true, QZ_FTYPE_Q5_K_M},
};
#define QZ_N_MIXES (sizeof k_mixes / sizeof k_mixes[0])

/* A plain target: a weight type the engine can write (the type table's
 * from_float_ref), f32 excepted. */
static bool qz_plain_target(int32_t type) {
    const type_traits *tr = type_traits_get(type);
    return type != CS_TYPE_F32 && tr && tr->is_weight && tr->from_float_ref;
}

/* The target named name (case-insensitive): a plain type or a mix. */
static bool qz_find_target(const char *name, qz_target *out) {
    for (size_t i = 0; i < QZ_N_MIXES; i++)
        if (strcasecmp(k_mixes[i].name, name) == 0) return *out = k_mixes[i], true;
    const int32_t type = cs_type_from_name(name);
    if (!qz_plain_target(type)) return false;
    const type_traits *tr = type_traits_get(type);
    *out = (qz_target){tr->name, type, false, (uint32_t)tr->ftype};
    return true;
}

/* "f16, q4_0, ..., q4_K_M or q5_K_M" into buf (truncated to fit). */
static const char *qz_target_names(char *buf, size_t cap) {
    int32_t types[CS_TYPE_COUNT];
    const int32_t n = cs_weight_types(types, CS_TYPE_COUNT);
    size_t len = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < n && len < cap; i++)
        if (qz_plain_target(types[i]))
            len += (size_t)snprintf(buf + len, cap - len, "%s, ", cs_type_name(types[i]));
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

/* State of the mix rules over one pass through the tensors in file order. */
typedef struct qz_mix_state {
    bool has_output;    /* the file has output.weight */
    int64_t n_attn_v;   /* attn_v.weight tensors in the file */
    int64_t n_ffn_down; /* llama.block_count */
    int64_t i_attn_v;   /* attn_v tensors seen so far */
    int64_t i_ffn_down; /* ffn_down tensors seen so far */
} qz_mix_state;

/* The type tensor t gets (see the top of the file). */
static int32_t qz_choose_type(const qz_target *tg, qz_mix_state *ms, const gguf_tensor *t) {
    if (t->n_dims < 2 || !qz_ends_with(t->name, "weight") || strstr(t->name, "_norm.weight"))
        return t->type;
    int32_t type = tg->type;
    if (type == CS_TYPE_F16 || type == CS_TYPE_BF16) return type; /* every row fits */
    int64_t ne0 = t->ne[0];
    if (tg->mix) {
        if (strcmp(t->name, "output.weight") == 0 ||
            (!ms->has_output && strcmp(t->name, "token_embd.weight") == 0)) {
            type = ne0 % type_traits_get(type)->blck != 0 ? CS_TYPE_Q8_0 : CS_TYPE_Q6_K;
        } else if (strstr(t->name, "attn_v.weight")) {
            if (qz_use_more_bits(ms->i_attn_v, ms->n_attn_v)) type = CS_TYPE_Q6_K;
            ms->i_attn_v++;
        } else if (strstr(t->name, "ffn_down")) {
            if (qz_use_more_bits(ms->i_ffn_down, ms->n_ffn_down)) type = CS_TYPE_Q6_K;
            ms->i_ffn_down++;
        }
    }
    if (ne0 % type_traits_get(type)->blck != 0) {
        if (type_traits_get(type)->blck == CS_QK_K)
            type = ne0 % CS_QK8_0 == 0 ? CS_TYPE_Q8_0 : CS_TYPE_F16;
        else
            type = CS_TYPE_F32;
    }
    return type;
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
        quantize_row(j->dst_type, row, j->dst + (size_t)r * j->row_out, j->ne0);
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
    char names[256];
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

/* The type rules and tensor names above are llama's: refuse any other
 * general.architecture (or none) before planning anything. */
static cs_status qz_check_arch(const gguf_file *g, const char *in_path) {
    const char *arch = NULL;
    if (gguf_get_str(g, "general.architecture", &arch, NULL) != CS_OK || strcmp(arch, "llama") != 0)
        return error_fail(CS_ERR_UNSUPPORTED,
                          "quantize: '%s': general.architecture is %s%s%s, not llama", in_path,
                          arch ? "'" : "", arch ? arch : "missing", arch ? "'" : "");
    return CS_OK;
}

/* Phase 2 (build): the output header's tensor list, one entry per input
 * tensor (plus a zeroed terminator) with its chosen type and size, and the
 * longest converted row (*max_ne0 elements in, *max_row_out bytes out;
 * both at least 1) that sizes the buffers. *plan is set as soon as it is
 * allocated, so the caller frees it on every path (mem_free). Fails on a
 * tensor that must be converted from a type the engine cannot read.
 * O(n_tensors). */
static cs_status qz_plan(const gguf_file *g, const qz_target *tg, gguf_stream_tensor **plan,
                         int64_t *max_ne0, uint64_t *max_row_out) {
    cs_status st;
    char names[256];
    int64_t n = gguf_n_tensors(g);
    qz_mix_state ms = {0};
    for (int64_t i = 0; i < n; i++) {
        const char *name = gguf_tensor_at(g, i)->name;
        if (strcmp(name, "output.weight") == 0) ms.has_output = true;
        if (strstr(name, "attn_v.weight")) ms.n_attn_v++;
    }
    if (tg->mix && (st = gguf_get_int(g, "llama.block_count", &ms.n_ffn_down)) != CS_OK) return st;

    gguf_stream_tensor *p = *plan = mem_calloc((size_t)n + 1, sizeof *p);
    if (!p) return error_fail(CS_ERR_NOMEM, "quantize: out of memory");
    *max_ne0 = 1;
    *max_row_out = 1;
    for (int64_t i = 0; i < n; i++, p++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        p->name = t->name;
        p->type = qz_choose_type(tg, &ms, t);
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
    gguf_stream_tensor *plan = NULL;
    threadpool *tp = NULL;
    uint8_t *chunk = NULL;
    float *scratch = NULL;
    char *tmp_path = NULL;
    int64_t max_ne0 = 1;
    uint64_t max_row_out = 1;
    if ((st = gguf_open(in_path, &g)) != CS_OK) goto done;
    if ((st = qz_check_arch(g, in_path)) != CS_OK) goto done;
    if ((st = qz_plan(g, &target, &plan, &max_ne0, &max_row_out)) != CS_OK) goto done;
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
