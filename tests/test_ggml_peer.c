/* test_ggml_peer.c: every weight type of the type table (cs_weight_types)
 * against ggml itself, loaded with dlopen from the node-llama-cpp build
 * in bench/peer (CS_GGML_PEER_DIR):
 *  - dequantization: bit-exact on random blocks (every byte random, so the
 *    f16 scales range over all exponents, subnormals, inf and NaN) and on
 *    blocks of repeated extreme bytes;
 *  - the reference quantizer (what llama-quantize writes): byte-exact on
 *    random rows with outliers, zeros, tiny (f16-subnormal and
 *    f16-underflowing) and huge (f16-overflowing scales) values;
 *  - with ggml's AVX2 CPU backend (libggml-cpu-haswell.so) where the CPU
 *    runs it: the activation converter of each vec_dot_type byte-exact with
 *    ggml's from_float, and our scalar dot against ggml's vec_dot within a
 *    named tolerance (bit-exact where ours claims ggml's AVX2 order).
 * ggml's functions are looked up by name (dequantize_row_<name>,
 * quantize_row_<name>_ref), falling back to ggml_get_type_traits (f16,
 * bf16); a type ggml lacks fails. Label peer (not run under ASan: ggml is
 * not instrumented). */
#include "test.h"

#include <dlfcn.h>
#include <math.h>

#include "kernels/kernels.h"
#include "types.h"

/* Our scalar dot vs ggml's AVX2 vec_dot, relative to sum |w_i * x_i| of
 * the dequantized weights and the f32 activations, for the types whose
 * summation order differs from ggml's AVX2 kernel (f32, f16, bf16: we sum
 * in double; Q8_0, Q4_0: one FMA per block; Q4_1, Q5_0, Q5_1: block sums;
 * some K-quants). [measured
 * worst over all types: 7.2e-8] */
#define TOL_DOT_REL 3e-7

#define N_ROW       512 /* elements per row: a multiple of every block size */
#define N_RAND_ROWS 24

typedef void (*ggml_to_float_fn)(const void *x, float *y, int64_t k);
typedef void (*ggml_from_float_fn)(const float *x, void *y, int64_t k);
typedef void (*ggml_vec_dot_fn)(int n, float *s, size_t bs, const void *x, size_t bx, const void *y,
                                size_t by, int nrc);

/* ggml.h's struct ggml_type_traits and ggml-cpu.h's ggml_type_traits_cpu
 * (their leading members, which is all we read). */
typedef struct {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    ggml_to_float_fn to_float;
    ggml_from_float_fn from_float_ref;
} ggml_traits;
typedef struct {
    ggml_from_float_fn from_float;
    ggml_vec_dot_fn vec_dot;
    int32_t vec_dot_type;
    int64_t nrows;
} ggml_traits_cpu;

static void *g_base, *g_cpu;
static const ggml_traits *(*g_traits)(int32_t type);
static const ggml_traits_cpu *(*g_traits_cpu)(int32_t type);

/* Types whose scalar dot follows ggml's AVX2 kernel order exactly: none
 * since Q4_1 / Q5_0 / Q5_1 took the block-sum order (quant_legacy.h);
 * every dot is held to TOL_DOT_REL. */
static bool dot_exact(int32_t type) {
    (void)type;
    return false;
}

static int setup(void **state) {
    (void)state;
    g_base = dlopen(CS_GGML_PEER_DIR "/libggml-base.so", RTLD_NOW | RTLD_GLOBAL);
    if (!g_base) return 0; /* each test skips */
    *(void **)&g_traits = dlsym(g_base, "ggml_get_type_traits");
    if (kernels_by_name("avx2")) { /* AVX2 + FMA + F16C, what the haswell build needs */
        g_cpu = dlopen(CS_GGML_PEER_DIR "/libggml-cpu-haswell.so", RTLD_NOW | RTLD_LOCAL);
        if (g_cpu) {
            void (*init)(void);
            *(void **)&init = dlsym(g_cpu, "ggml_cpu_init");
            *(void **)&g_traits_cpu = dlsym(g_cpu, "ggml_get_type_traits_cpu");
            if (init) init(); /* fills ggml's f16 tables */
        }
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (g_cpu) dlclose(g_cpu);
    if (g_base) dlclose(g_base);
    return 0;
}

static bool have_peer(void) {
    if (g_base && g_traits) return true;
    test_skip(CS_SKIP_REFERENCE, "libggml-base.so not found in %s", CS_GGML_PEER_DIR);
    return false;
}

static void *peer_sym(const char *prefix, const char *name, const char *suffix) {
    char sym[128];
    snprintf(sym, sizeof sym, "%s%s%s", prefix, name, suffix);
    return dlsym(g_base, sym);
}

static const ggml_traits *peer_traits(int32_t type) {
    const ggml_traits *t = g_traits(type);
    assert_non_null(t);
    assert_string_equal(t->type_name, cs_type_name(type)); /* same ids */
    return t;
}

static uint64_t g_rng;
static uint64_t next_u64(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return g_rng;
}
static float frand(void) { /* uniform [-1, 1) */
    return (float)((double)(next_u64() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Equal bits, or both NaN (payloads may differ between converters). */
static bool same_float(float a, float b) {
    return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

/* ---------------------------------------------------- dequantization */

static void check_dequantize(int32_t type) {
    const type_traits *tr = type_traits_get(type);
    const ggml_traits *gt = peer_traits(type);
    ggml_to_float_fn peer = (ggml_to_float_fn)peer_sym("dequantize_row_", tr->name, "");
    if (!peer) peer = gt->to_float;
    if (!peer) { /* f32: no converter on either side worth comparing */
        assert_int_equal(type, CS_TYPE_F32);
        return;
    }
    uint64_t row_bytes;
    assert_true(type_row_size(type, N_ROW, &row_bytes));
    uint8_t *q = malloc(row_bytes);
    float *a = malloc(N_ROW * sizeof *a), *b = malloc(N_ROW * sizeof *b);
    assert_true(q && a && b);
    static const uint8_t k_fill[] = {0x00, 0x01, 0x3c, 0x7b, 0x7c, 0x80, 0xfb, 0xff};
    const int n_rows = 64 + (int)sizeof k_fill;
    g_rng = 1000 + (uint64_t)type;
    for (int r = 0; r < n_rows; r++) {
        if (r < 64)
            for (uint64_t i = 0; i < row_bytes; i++) q[i] = (uint8_t)(next_u64() >> 56);
        else
            memset(q, k_fill[r - 64], row_bytes);
        tr->to_float(q, a, N_ROW);
        peer(q, b, N_ROW);
        for (int i = 0; i < N_ROW; i++) {
            if (same_float(a[i], b[i])) continue;
            fail_msg("%s: row %d element %d: ours %a, ggml %a", tr->name, r, i, (double)a[i],
                     (double)b[i]);
        }
    }
    free(q), free(a), free(b);
}

static void test_peer_dequantize(void **state) {
    (void)state;
    if (!have_peer()) return;
    int32_t types[CS_TYPE_COUNT];
    const int32_t n = cs_weight_types(types, CS_TYPE_COUNT);
    for (int32_t i = 0; i < n; i++) check_dequantize(types[i]);
    print_message("dequantize: %d weight types bit-exact with ggml\n", (int)n);
}

/* ------------------------------------------------------ quantization */

/* Row kind k of the quantizer tests: 0 zeros, 1 uniform, 2 uniform with
 * outliers and repeated values (ties), 3 tiny (1e-6: f16-subnormal
 * scales), 4 tinier (1e-30: scales underflow f16), 5 huge (3e5: scales
 * overflow f16), 6 one non-zero per block, 7 constant. */
#define N_KINDS 8
static void fill_row(float *x, int kind) {
    for (int i = 0; i < N_ROW; i++) {
        float v = frand();
        switch (kind) {
        case 0:
            v = 0.0f;
            break;
        case 2:
            if (i % 37 == 3) v *= 8.0f;
            if (i % 5 == 1) v = x[i - 1];
            break;
        case 3:
            v *= 1e-6f;
            break;
        case 4:
            v *= 1e-30f;
            break;
        case 5:
            v *= 3e5f;
            break;
        case 6:
            v = i % 32 == 7 ? v : 0.0f;
            break;
        case 7:
            v = 0.75f;
            break;
        default:
            break;
        }
        x[i] = v;
    }
}

static void check_quantize(int32_t type) {
    const type_traits *tr = type_traits_get(type);
    const ggml_traits *gt = peer_traits(type);
    if (!tr->from_float_ref || type == CS_TYPE_F32) return; /* f32: a copy */
    ggml_from_float_fn peer = (ggml_from_float_fn)peer_sym("quantize_row_", tr->name, "_ref");
    if (!peer) peer = gt->from_float_ref;
    assert_non_null(peer);
    uint64_t row_bytes;
    assert_true(type_row_size(type, N_ROW, &row_bytes));
    uint8_t *a = malloc(row_bytes), *b = malloc(row_bytes);
    float *x = malloc(N_ROW * sizeof *x);
    assert_true(a && b && x);
    g_rng = 2000 + (uint64_t)type;
    for (int r = 0; r < N_RAND_ROWS; r++) {
        fill_row(x, r % N_KINDS);
        memset(a, 0xa5, row_bytes);
        memset(b, 0x5a, row_bytes);
        tr->from_float_ref(x, a, N_ROW);
        peer(x, b, N_ROW);
        for (uint64_t i = 0; i < row_bytes; i++) {
            if (a[i] == b[i]) continue;
            /* ggml's IQ4_NL/IQ4_XS quantizers leave the indices of a block
             * whose scale is 0 undefined (stale stack bytes for a row's first
             * block): such a block decodes to zeros whatever the bytes, so a
             * difference there is allowed when both blocks decode to zeros. */
            const uint64_t blk = i / (uint64_t)tr->size;
            float va[256], vb[256];
            tr->to_float(a + blk * (uint64_t)tr->size, va, tr->blck);
            tr->to_float(b + blk * (uint64_t)tr->size, vb, tr->blck);
            bool zeros = true;
            for (int32_t j = 0; j < tr->blck; j++) zeros = zeros && va[j] == 0.0f && vb[j] == 0.0f;
            if (zeros) continue;
            fail_msg("%s: row %d (kind %d) byte %d: ours 0x%02x, ggml 0x%02x", tr->name, r,
                     r % N_KINDS, (int)i, a[i], b[i]);
        }
    }
    free(a), free(b), free(x);
}

static void test_peer_quantize(void **state) {
    (void)state;
    if (!have_peer()) return;
    int32_t types[CS_TYPE_COUNT];
    const int32_t n = cs_weight_types(types, CS_TYPE_COUNT);
    for (int32_t i = 0; i < n; i++) check_quantize(types[i]);
    print_message(
        "quantize: %d weight types byte-exact with ggml (zero-scale blocks: equal values)\n",
        (int)n);
}

/* ------------------------------------------------ dots (CPU backend) */

static void check_dot(int32_t type) {
    const type_traits *tr = type_traits_get(type);
    const int32_t vdt = tr->vec_dot_type;
    const ggml_traits_cpu *gw = g_traits_cpu(type);
    assert_non_null(gw);
    assert_non_null(gw->vec_dot);
    assert_int_equal(gw->vec_dot_type, vdt);
    uint64_t wb, ab;
    assert_true(type_row_size(type, N_ROW, &wb));
    assert_true(type_row_size(vdt, N_ROW, &ab));
    uint8_t *w = malloc(wb), *act = malloc(ab), *act_peer = malloc(ab);
    float *x = malloc(N_ROW * sizeof *x), *wf = malloc(N_ROW * sizeof *wf);
    assert_true(w && act && act_peer && x && wf);
    double worst = 0;
    int n_exact = 0;
    g_rng = 3000 + (uint64_t)type;
    for (int r = 0; r < N_RAND_ROWS; r++) {
        fill_row(x, 1 + r % 2);
        tr->from_float_ref(x, w, N_ROW);
        fill_row(x, 1 + (r / 2) % 2);
        const type_traits *at = type_traits_get(vdt);
        if (vdt == CS_TYPE_F32) {
            memcpy(act, x, ab);
        } else {
            at->act_from_float_ref(x, act, N_ROW);
            const ggml_traits_cpu *ga = g_traits_cpu(vdt);
            assert_non_null(ga->from_float);
            ga->from_float(x, act_peer, N_ROW);
            if (memcmp(act, act_peer, ab) != 0)
                fail_msg("%s activations: not byte-exact with ggml's from_float", at->name);
        }
        float ours, peer;
        tr->vec_dot_ref(N_ROW, &ours, w, act);
        gw->vec_dot(N_ROW, &peer, 0, w, 0, act, 0, 1);
        tr->to_float(w, wf, N_ROW);
        double sabs = 0; /* the scale: with the unrounded activations */
        for (int i = 0; i < N_ROW; i++) sabs += fabs((double)wf[i] * (double)x[i]);
        const double rel = fabs((double)ours - (double)peer) / fmax(sabs, 1e-30);
        worst = fmax(worst, rel);
        n_exact += ours == peer;
        if (dot_exact(type) && ours != peer)
            fail_msg("%s: row %d: ours %a, ggml %a (claimed bit-exact)", tr->name, r, (double)ours,
                     (double)peer);
        assert_true(rel <= TOL_DOT_REL);
    }
    print_message("vec_dot %-5s x %-5s vs ggml avx2: %2d/%d bit-exact, worst rel %.2e\n", tr->name,
                  type_traits_get(vdt)->name, n_exact, N_RAND_ROWS, worst);
    free(w), free(act), free(act_peer), free(x), free(wf);
}

static void test_peer_vec_dot(void **state) {
    (void)state;
    if (!have_peer()) return;
    if (!g_cpu || !g_traits_cpu) {
        test_skip(CS_SKIP_CPU, "no AVX2/FMA/F16C, or libggml-cpu-haswell.so did not load");
        return;
    }
    int32_t types[CS_TYPE_COUNT];
    const int32_t n = cs_weight_types(types, CS_TYPE_COUNT);
    for (int32_t i = 0; i < n; i++) check_dot(types[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_dequantize),
        cmocka_unit_test(test_peer_quantize),
        cmocka_unit_test(test_peer_vec_dot),
    };
    return test_run(tests, setup, teardown);
}
