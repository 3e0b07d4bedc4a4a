/* matmul.c: Y = X * W^T for the weight matmuls of the forward pass.
 *
 * Two phases, each a threadpool_run over independent rows:
 *  1. convert the T activation rows to the weight's vec_dot_type (type
 *     table, types.h) in scratch with the kernel table's from_float[] (bit-
 *     exact with the reference converters); skipped for F32 weights, and done
 *     on the calling thread when it is small (a decode step), which saves a
 *     wake-up of the pool;
 *  2. cut the work in units of (token chunk, range of rb-row blocks): chunk
 *     = converted rows that fit ~128 KiB (256 KiB for F16 / BF16 rows, which
 *     hold two copies), so they stay in L2 while the W
 *     rows stream past; the thread pool's ranges per thread. Threads take
 *     units from a shared counter (threadpool_take), so one slowed down by
 *     another process does not hold the others at the job's end. Each rb-row block runs
 *     tb-token tiles, then the leftover tokens one at a time.
 * No reduction is ever split, and the micro-kernels compute every output
 * with the same instruction sequence whatever the tile shape, so results
 * do not depend on the thread count, on T, or on where a split falls. */
#include "matmul.h"

#include <string.h>

#include "../common.h"

#define ROW_ALIGN   64
#define CHUNK_BYTES (128 * 1024)
/* below this many activation elements the conversion runs on the caller */
#define CONVERT_INLINE_ELEMS 16384
#define MAX_TILE             512 /* rb * tb of any micro-kernel (tile_pair: 32 * tbp) */

/* The type table's row of a weight type (asserted: a broken caller contract). */
static const type_traits *weight_traits(int32_t wtype) {
    const type_traits *t = type_traits_get(wtype);
    CS_ASSERT(t && t->is_weight && "matmul: unsupported weight type");
    return t;
}

/* Bytes of one converted activation row (a row of the weight's
 * vec_dot_type), or 0 for F32 (used in place). */
static size_t vec_row_bytes(int32_t wtype, int64_t K) {
    const int32_t vdt = weight_traits(wtype)->vec_dot_type;
    if (vdt == CS_TYPE_F32) return 0;
    uint64_t b = 0;
    CS_ASSERT(type_row_size(vdt, K, &b));
    if (vdt == CS_TYPE_Q8_0) /* blocks, then the x16 aux entries (used or not) */
        b = matmul_x16_aux_offset(K) + (size_t)(K / CS_QK8_0) * sizeof(matmul_x16_aux);
    if (vdt == CS_TYPE_F16 || vdt == CS_TYPE_BF16) /* the row, then widened (matmul.h) */
        b = matmul_wide_offset(K) + (size_t)K * sizeof(float);
    return ((size_t)b + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN;
}

static size_t weight_row_bytes(int32_t wtype, int64_t K) {
    uint64_t b = 0;
    CS_ASSERT(type_row_size(wtype, K, &b));
    return (size_t)b;
}

size_t matmul_scratch_size(int32_t wtype, int64_t K, int64_t T) {
    size_t s = vec_row_bytes(wtype, K) * (size_t)T;
    return s < ROW_ALIGN ? ROW_ALIGN : s;
}

typedef struct mm_task {
    const kernels_table *k;
    int32_t wtype;
    int32_t vdt; /* the weight type's vec_dot_type */
    int32_t layout;
    const uint8_t *W;
    size_t w_row; /* bytes per weight row */
    int64_t N, K, T;
    const float *X;
    const uint8_t *Xc; /* converted activations (or X itself for F32) */
    size_t x_row;      /* bytes per converted row */
    float *Y;
    uint8_t *scratch;
    bool have_uk;
    matmul_ukernel uk;
    type_vec_dot_fn vec_dot;  /* k->vec_dot[wtype], when there is no micro-kernel */
    atomic_int_fast64_t next; /* matmul_task's next work unit */
} mm_task;

/* The aux entries of a converted row for x16 weights. O(K). */
static void fill_x16_aux(int32_t wtype, int64_t K, void *row) {
    const block_q8_0 *q = row;
    matmul_x16_aux *a = (matmul_x16_aux *)((uint8_t *)row + matmul_x16_aux_offset(K));
    const int32_t off = wtype == CS_TYPE_Q4_0 ? 8 : wtype == CS_TYPE_Q5_0 ? 16 : 128;
    for (int64_t b = 0; b < K / CS_QK8_0; b++) {
        int32_t s = 0;
        for (int j = 0; j < CS_QK8_0; j++) s += q[b].qs[j];
        a[b].d = fp16_to_fp32(q[b].d);
        a[b].corr = -off * s;
    }
}

/* The widened copy of a converted F16 / BF16 row (matmul.h). O(K). */
static void widen_row(const kernels_table *k, int32_t vdt, int64_t K, uint8_t *row) {
    const uint16_t *h = (const uint16_t *)(const void *)row;
    float *f = (float *)(void *)(row + matmul_wide_offset(K));
    if (vdt == CS_TYPE_F16) {
        k->fp16_to_fp32_row(h, f, K);
        return;
    }
    for (int64_t i = 0; i < K; i++) {
        const uint32_t u = (uint32_t)h[i] << 16;
        memcpy(&f[i], &u, sizeof u);
    }
}

static void convert_rows(const mm_task *m, int64_t t0, int64_t t1) {
    const type_from_float_fn from_float = m->k->from_float[m->vdt];
    const bool aux = m->layout == CS_LAYOUT_X16 && m->vdt == CS_TYPE_Q8_0;
    const bool wide =
        m->have_uk && (m->layout == CS_LAYOUT_X16 ? m->k->wide_x16[m->wtype]
                                                  : m->k->wide_x[m->wtype] && m->T >= m->uk.tb);
    for (int64_t t = t0; t < t1; t++) {
        uint8_t *dst = m->scratch + (size_t)t * m->x_row;
        from_float(m->X + t * m->K, dst, m->K);
        if (aux) fill_x16_aux(m->wtype, m->K, dst);
        if (wide) widen_row(m->k, m->vdt, m->K, dst);
    }
}

static void convert_task(void *arg, int32_t ith, int32_t nth) {
    const mm_task *m = arg;
    int64_t t0, t1;
    threadpool_split(m->T, ith, nth, &t0, &t1);
    convert_rows(m, t0, t1);
}

/* One dot through the table (no micro-kernel). */
static float dot_generic(const mm_task *m, const void *w, const void *x) {
    float s = 0.0f;
    m->vec_dot(m->K, &s, w, x);
    return s;
}

typedef void (*mm_tile_fn)(int64_t K, const void *const *w, const void *const *x, float *out);

/* Tiles of tb tokens from *t while they fit before t1, for the rb-row block
 * at row n (w: its row pointers, nr of them kept); advances *t. */
static void run_tiles(const mm_task *m, mm_tile_fn tile, int32_t tb, const void *const *w,
                      int64_t n, int64_t nr, int64_t *t, int64_t t1) {
    const void *x[16];
    float out[MAX_TILE];
    for (; *t + tb <= t1; *t += tb) {
        for (int32_t j = 0; j < tb; j++) x[j] = m->Xc + (size_t)(*t + j) * m->x_row;
        tile(m->K, w, x, out);
        /* a full 16-row block: a constant-size copy, which the compiler
         * inlines; the libc call per token and row block took 3-4 % of a
         * 2-thread 110M Q2_K prompt (perf: memmove + run_tiles ~600 of
         * ~8000 samples, ~400 after) */
        if (nr == 16 && m->uk.rb == 16)
            for (int32_t j = 0; j < tb; j++)
                memcpy(m->Y + (*t + j) * m->N + n, out + (size_t)j * 16, 16 * sizeof(float));
        else
            for (int32_t j = 0; j < tb; j++)
                memcpy(m->Y + (*t + j) * m->N + n, out + (size_t)j * m->uk.rb,
                       (size_t)nr * sizeof(float));
    }
}

/* Rows [n0, n1) for tokens [t0, t1) with the micro-kernel: full tiles, then
 * tile2's (if any), then the column. Rows past the end of a short last
 * block repeat the last row; their outputs are dropped, so every kept
 * output is computed exactly as in a full block. An x16 kernel reads only
 * w[0] (its group's packed block) and x16 blocks are always full. A column
 * of a full block writes straight into Y. Why both: a decode step calls
 * the column once per block, about 27,000 times a token on the 1.1B shape.
 * Filling 16 row pointers, the empty tile loops and a 64-byte memcpy per
 * call took 1.9 % of a 1-thread token, now 0.4 % (perf, 1.1B Q4_K_M tg256;
 * a 768 x 768 Q4_K matmul at T = 1 from cache: 194-199 -> 214 GFLOP/s). */
static void rows_ukernel(const mm_task *m, int64_t n0, int64_t n1, int64_t t0, int64_t t1) {
    const int32_t rb = m->uk.rb;
    const bool x16 = m->layout == CS_LAYOUT_X16;
    const void *w[16] = {0};
    float out[16]; /* one column: rb <= 16 */
    for (int64_t n = n0; n < n1; n += rb) {
        const int64_t nr = n1 - n < rb ? n1 - n : rb;
        w[0] = m->W + (size_t)n * m->w_row;
        for (int32_t r = 1; r < rb && !x16; r++)
            w[r] = m->W + (size_t)(n + (r < nr ? r : nr - 1)) * m->w_row;
        int64_t t = t0;
        if (t1 - t >= m->uk.tb) run_tiles(m, m->uk.tile, m->uk.tb, w, n, nr, &t, t1);
        if (m->uk.tile2 && t1 - t >= m->uk.tb2)
            run_tiles(m, m->uk.tile2, m->uk.tb2, w, n, nr, &t, t1);
        for (; t < t1; t++) {
            float *y = m->Y + t * m->N + n;
            m->uk.col(m->K, w, m->Xc + (size_t)t * m->x_row, nr == rb ? y : out);
            if (nr < rb) memcpy(y, out, (size_t)nr * sizeof(float));
        }
    }
}

/* Pair tiles (ukernel tile_pair) over tokens [*t, t1) for the two x16
 * groups at rows n and n + 16; advances *t past the last full tile. */
static void run_pair_tiles(const mm_task *m, int64_t n, int64_t *t, int64_t t1) {
    const void *w[2] = {m->W + (size_t)n * m->w_row, m->W + (size_t)(n + 16) * m->w_row};
    const void *x[16];
    float out[MAX_TILE];
    const int32_t tb = m->uk.tbp;
    for (; *t + tb <= t1; *t += tb) {
        for (int32_t j = 0; j < tb; j++) x[j] = m->Xc + (size_t)(*t + j) * m->x_row;
        m->uk.tile_pair(m->K, w, x, out);
        for (int32_t j = 0; j < tb; j++)
            memcpy(m->Y + (*t + j) * m->N + n, out + (size_t)j * 32, 32 * sizeof(float));
    }
}

/* x16 with a pair tile: two full groups at a time through tile_pair, the
 * tokens left after its tiles and a lone last group through the 16-row
 * kernels (rows_ukernel). */
static void rows_ukernel_pairs(const mm_task *m, int64_t n0, int64_t n1, int64_t t0, int64_t t1) {
    int64_t n = n0;
    for (; n + 32 <= n1; n += 32) {
        int64_t t = t0;
        run_pair_tiles(m, n, &t, t1);
        if (t < t1) rows_ukernel(m, n, n + 32, t, t1);
    }
    if (n < n1) rows_ukernel(m, n, n1, t0, t1);
}

static void rows_generic(const mm_task *m, int64_t n0, int64_t n1, int64_t t0, int64_t t1) {
    if (m->layout == CS_LAYOUT_X16) { /* n0, n1: multiples of 16 */
        float out[CS_X16_ROWS];
        for (int64_t n = n0; n < n1; n += CS_X16_ROWS) {
            const void *grp = m->W + (size_t)n * m->w_row;
            for (int64_t t = t0; t < t1; t++) {
                repack_x16_dot_ref(m->wtype, m->K, grp, m->Xc + (size_t)t * m->x_row, out);
                memcpy(m->Y + t * m->N + n, out, sizeof out);
            }
        }
        return;
    }
    for (int64_t n = n0; n < n1; n++) {
        const void *w = m->W + (size_t)n * m->w_row;
        for (int64_t t = t0; t < t1; t++)
            m->Y[t * m->N + n] = dot_generic(m, w, m->Xc + (size_t)t * m->x_row);
    }
}

/* Work units are (token chunk, row range) pairs, token-chunk-major, taken
 * in order from the job's shared counter (threadpool_take): all threads
 * work on the same chunk of converted activations (it stays in cache)
 * while the weight rows stream past. Which thread computes a unit changes
 * no result (file comment). */
static void matmul_task(void *arg, int32_t ith, int32_t nth) {
    (void)ith;
    mm_task *m = arg;
    const int64_t rb = m->have_uk ? m->uk.rb : m->layout == CS_LAYOUT_X16 ? CS_X16_ROWS : 1;
    const int64_t n_blocks = (m->N + rb - 1) / rb;
    const int64_t n_ranges = threadpool_n_ranges(n_blocks, nth);
    /* F16 / BF16 rows carry the 16-bit copy and its widened floats and a
     * kernel reads one of them, so their budget is doubled: 110M F16 pp512
     * at 2 threads +3 % while another tenant loads the shared cache, 0 %
     * otherwise (docs/BENCH.md, "F16 at two threads") */
    const size_t budget =
        m->vdt == CS_TYPE_F16 || m->vdt == CS_TYPE_BF16 ? 2 * CHUNK_BYTES : CHUNK_BYTES;
    int64_t chunk = (int64_t)(budget / m->x_row);
    /* whole pair tiles where there are any (x16 F16: 56 -> 54 tokens at K = 768) */
    const int64_t tb = !m->have_uk ? 1 : m->uk.tile_pair ? m->uk.tbp : m->uk.tb;
    chunk = chunk < tb ? tb : chunk / tb * tb;
    const int64_t n_units = (m->T + chunk - 1) / chunk * n_ranges;
    for (int64_t u; (u = threadpool_take(&m->next, n_units)) >= 0;) {
        int64_t b0, b1;
        threadpool_split(n_blocks, (int32_t)(u % n_ranges), (int32_t)n_ranges, &b0, &b1);
        const int64_t n0 = b0 * rb, n1 = b1 * rb < m->N ? b1 * rb : m->N;
        if (n0 >= n1) continue;
        const int64_t t0 = u / n_ranges * chunk, t1 = t0 + chunk < m->T ? t0 + chunk : m->T;
        if (m->have_uk && m->uk.tile_pair && t1 - t0 >= m->uk.tbp)
            rows_ukernel_pairs(m, n0, n1, t0, t1);
        else if (m->have_uk)
            rows_ukernel(m, n0, n1, t0, t1);
        else
            rows_generic(m, n0, n1, t0, t1);
    }
}

bool matmul_x16_native(const kernels_table *k, int32_t wtype) {
    return wtype >= 0 && wtype < CS_TYPE_COUNT && k->ukernel_x16[wtype].tile != NULL;
}

int32_t matmul_convert_kind_of(int32_t wtype, int32_t layout) {
    const int32_t vdt = weight_traits(wtype)->vec_dot_type;
    if (layout == CS_LAYOUT_X16 &&
        (vdt == CS_TYPE_Q8_0 || vdt == CS_TYPE_F16 || vdt == CS_TYPE_BF16))
        return MATMUL_CONVERT_X16 + wtype; /* aux entries / the widened copy at every T */
    return vdt;                            /* CS_TYPE_F32 is MATMUL_CONVERT_NONE */
}

static void matmul_impl(const kernels_table *k, threadpool *tp, int32_t wtype, int32_t layout,
                        const void *W, int64_t N, int64_t K, const float *X, int64_t T, float *Y,
                        void *scratch, bool converted) {
    CS_ASSERT(k && W && X && Y && N >= 0 && K >= 0 && T >= 0);
    CS_ASSERT(layout == CS_LAYOUT_ROWS ||
              (layout == CS_LAYOUT_X16 && repack_x16_fits(wtype, N, K)));
    if (N == 0 || T == 0) return;
    mm_task m = {
        .k = k,
        .wtype = wtype,
        .vdt = weight_traits(wtype)->vec_dot_type,
        .layout = layout,
        .W = W,
        .w_row = weight_row_bytes(wtype, K),
        .N = N,
        .K = K,
        .T = T,
        .X = X,
        .x_row = vec_row_bytes(wtype, K),
        .Y = Y,
        .scratch = scratch,
    };
    m.uk = layout == CS_LAYOUT_X16 ? k->ukernel_x16[wtype] : k->ukernel[wtype];
    m.have_uk = m.uk.tile != NULL;
    m.vec_dot = k->vec_dot[wtype];
    CS_ASSERT(m.have_uk || m.vec_dot);
    CS_ASSERT(!m.have_uk || (m.uk.rb <= 16 && m.uk.tb <= 16 && m.uk.rb * m.uk.tb <= MAX_TILE));
    CS_ASSERT(!m.have_uk || !m.uk.tile2 || (m.uk.tb2 > 1 && m.uk.tb2 < m.uk.tb));
    CS_ASSERT(layout != CS_LAYOUT_X16 || !m.have_uk || m.uk.rb == CS_X16_ROWS);
    CS_ASSERT(
        !m.have_uk || !m.uk.tile_pair ||
        (layout == CS_LAYOUT_X16 && m.uk.tbp > 0 && m.uk.tbp <= 16 && 32 * m.uk.tbp <= MAX_TILE));
    if (m.vdt == CS_TYPE_F32) {
        m.Xc = (const uint8_t *)X;
        m.x_row = (size_t)K * sizeof(float);
    } else {
        CS_ASSERT(scratch);
        m.Xc = scratch;
        if (converted)
            ; /* the caller's previous call left X converted in scratch */
        else if (!tp || T * K <= CONVERT_INLINE_ELEMS)
            convert_rows(&m, 0, T);
        else
            threadpool_run(tp, convert_task, &m);
    }
    if (m.x_row == 0) m.x_row = 1; /* K == 0: keep the chunk division defined */
    atomic_init(&m.next, 0);
    if (tp)
        threadpool_run(tp, matmul_task, &m);
    else
        matmul_task(&m, 0, 1);
}

void matmul(const kernels_table *k, threadpool *tp, int32_t wtype, int32_t layout, const void *W,
            int64_t N, int64_t K, const float *X, int64_t T, float *Y, void *scratch) {
    matmul_impl(k, tp, wtype, layout, W, N, K, X, T, Y, scratch, false);
}

void matmul_converted(const kernels_table *k, threadpool *tp, int32_t wtype, int32_t layout,
                      const void *W, int64_t N, int64_t K, const float *X, int64_t T, float *Y,
                      void *scratch) {
    matmul_impl(k, tp, wtype, layout, W, N, K, X, T, Y, scratch, true);
}
