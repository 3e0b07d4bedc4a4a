/* test_kv_cache.c: K/V storage numerics without a model (docs/KV_CACHE_SPEC.md §8 part C,
 * and B2/B8 at the storage level). K rows are written as RoPE(k, p) of
 * random pre-RoPE keys k, computed in float64 here (an independent
 * reference of spec §3.1, YaRN included), converted to the cache type by
 * kv_store_write. A K-shift must then give the rows that writing at the new
 * positions gives, within tolerances sized from spec §3.3. */
#include "test.h"

#include <math.h>

#include "kv_cache.h"
#include "kv_cells.h"
#include "threadpool.h"

/* ------------------------------------------------------------ tolerances */

/* C1 (float32 vs float64): rel-L1 for positions up to C1_POS_KNEE; beyond,
 * the float32 angle error grows like p * 2^-24 rad (spec §3.3 measured
 * 7e-5 at 32768 and 2.9e-4 at 131072), so the bound is C1_TOL_PER_POS * p. */
#define C1_TOL_BASE    1e-5
#define C1_TOL_PER_POS 3e-9
#define C1_POS_KNEE    4096
/* C2: cache-level shift vs a direct write at the new position, after one
 * shift. The shifted row is rounded to the cache type twice (at the write
 * and after the rotation), the direct row once, so the bound sits above
 * the rounding floor of the type. One round-to-nearest to f16 has a mean
 * relative error of about 2^-12 / 1.5 = 1.6e-4 (measured here: shifted vs
 * direct 1.7e-4 to 1.9e-4), above spec §8's 1e-4, which only a net-zero
 * shift meets (C7_TOL_F16_NET0). One Q8_0 rounding of values uniform in
 * [-1, 1] is about (amax/127)/4 / 0.5 = 3.9e-3 (measured: shifted vs
 * direct 5.0e-3 to 5.3e-3), at spec §8's 5e-3. */
#define C2_TOL_F16  3e-4
#define C2_TOL_Q8_0 8e-3
/* C4: the stepwise path rotates and rounds once per operation (5 here);
 * it may be up to this many times the one-shift bound away. */
#define C4_STEPWISE_FACTOR 2.0
/* C7: 100 alternating +37/-37 shifts, compared after an even number of
 * shifts with the row written at the original position. F16 does not
 * accumulate (spec §3.3: 4.6e-5 after 2, 8.4e-5 after 1000); Q8_0 does
 * (1.7e-3 after 2, 4.3e-3 after 10, 3.4e-2 after 100). After one shift
 * (odd: net +37) the C2 bounds apply. A double rotation would give errors
 * of order 1. */
#define C7_TOL_F16_NET0 1e-4
#define C7_TOL_Q8_0_2   3e-3 /* measured 1.9e-3 */
#define C7_TOL_Q8_0_10  7e-3 /* measured 4.6e-3 */
#define C7_TOL_Q8_0_100 5e-2 /* measured 3.4e-2 */
/* C8: a pure rotation keeps |K| per head; float32 rounding of a rotation
 * changes the norm by a few 1e-8. */
#define C8_TOL_NORM 1e-6
/* YaRN case of spec §8 C1/C8. */
#define YARN_EXT_FACTOR 1.0f
#define YARN_FREQ_SCALE 0.25f

/* -------------------------------------------------------------- helpers */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { /* uniform in [-1, 1) */
    return (double)(rng_next(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static kernels_rope_params rope_params(int32_t n_rot, int32_t mode, bool yarn) {
    return (kernels_rope_params){.n_rot = n_rot,
                                 .mode = mode,
                                 .freq_base = 10000.0f,
                                 .freq_scale = yarn ? YARN_FREQ_SCALE : 1.0f,
                                 .ext_factor = yarn ? YARN_EXT_FACTOR : 0.0f,
                                 .attn_factor = 1.0f,
                                 .beta_fast = 32.0f,
                                 .beta_slow = 1.0f,
                                 .n_ctx_orig = 4096};
}

static double corr_dim64(int32_t n_rot, int32_t n_ctx_orig, double beta, double base) {
    const double pi = 3.14159265358979323846;
    return n_rot * log(n_ctx_orig / (beta * 2.0 * pi)) / (2.0 * log(base));
}

/* The forward pass's RoPE in float64, written from spec §3.1: n_head heads
 * of hd values; pairs by mode; YaRN ramp and magnitude when ext_factor != 0;
 * dims from n_rot on copied. */
static void rope64(const kernels_rope_params *p, int32_t n_head, int32_t hd, const double *x,
                   double pos, double *out) {
    const int32_t half = p->n_rot / 2;
    const bool neox = (p->mode & CS_ROPE_NEOX) != 0;
    const double s = (double)p->freq_scale, e = (double)p->ext_factor;
    double m = (double)p->attn_factor, lo = 0.0, hi = 0.0;
    if (e != 0.0) {
        m *= 1.0 + 0.1 * log(1.0 / s);
        lo = fmax(0.0, floor(corr_dim64(p->n_rot, p->n_ctx_orig, (double)p->beta_fast,
                                        (double)p->freq_base)));
        hi = fmin(p->n_rot - 1.0, ceil(corr_dim64(p->n_rot, p->n_ctx_orig, (double)p->beta_slow,
                                                  (double)p->freq_base)));
    }
    for (int32_t h = 0; h < n_head; h++) {
        const double *xh = x + (size_t)h * hd;
        double *oh = out + (size_t)h * hd;
        memcpy(oh, xh, (size_t)hd * sizeof *oh);
        for (int32_t k = 0; k < half; k++) {
            const double extrap = pos * pow((double)p->freq_base, -2.0 * k / p->n_rot);
            double t = s * extrap;
            if (e != 0.0) {
                const double ramp = 1.0 - fmin(1.0, fmax(0.0, (k - lo) / fmax(0.001, hi - lo)));
                const double mix = ramp * e;
                t = t * (1.0 - mix) + extrap * mix;
            }
            const int32_t ia = neox ? k : 2 * k, ib = neox ? k + half : 2 * k + 1;
            const double a = xh[ia], b = xh[ib];
            oh[ia] = m * (a * cos(t) - b * sin(t));
            oh[ib] = m * (a * sin(t) + b * cos(t));
        }
    }
}

/* A store + cells with random pre-RoPE keys per (layer, cell). */
typedef struct fx {
    kv_store s;
    kv_cells c;
    kernels_rope_params rope;
    const kernels_table *k;
    double *kpre; /* (n_layer, size, n_embd_kv) */
    float *tmp;   /* (n_embd_kv) */
    double *tmp64;
} fx;

static void fx_init(fx *f, int32_t n_layer, int32_t size, int32_t n_head, int32_t hd, int32_t type,
                    kernels_rope_params rope, uint64_t seed) {
    memset(f, 0, sizeof *f);
    assert_int_equal(kv_store_init(&f->s, n_layer, size, n_head, hd, type, type), CS_OK);
    assert_int_equal(kv_cells_init(&f->c, size), CS_OK);
    f->rope = rope;
    f->k = kernels_best();
    const size_t n = (size_t)n_layer * (size_t)size * (size_t)f->s.n_embd_kv;
    f->kpre = malloc(n * sizeof *f->kpre);
    f->tmp = malloc((size_t)f->s.n_embd_kv * sizeof *f->tmp);
    f->tmp64 = malloc((size_t)f->s.n_embd_kv * sizeof *f->tmp64);
    assert_non_null(f->kpre);
    assert_non_null(f->tmp);
    assert_non_null(f->tmp64);
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) f->kpre[i] = rng_unit(&st);
}

static void fx_free(fx *f) {
    kv_store_free(&f->s);
    kv_cells_free(&f->c);
    free(f->kpre);
    free(f->tmp);
    free(f->tmp64);
}

static const double *fx_kpre(const fx *f, int32_t layer, int32_t cell) {
    return f->kpre + ((size_t)layer * (size_t)f->s.size + (size_t)cell) * (size_t)f->s.n_embd_kv;
}

/* Reference K of a cell at position pos (float64). */
static void fx_ref(const fx *f, int32_t layer, int32_t cell, double pos, double *out) {
    rope64(&f->rope, f->s.n_head_kv, f->s.head_dim, fx_kpre(f, layer, cell), pos, out);
}

/* Write the cell's K = RoPE(k, pos) (and V = k) in every layer. */
static void fx_write(fx *f, int32_t cell, double pos) {
    const int32_t n = f->s.n_embd_kv;
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (int32_t il = 0; il < f->s.n_layer; il++) {
        fx_ref(f, il, cell, pos, f->tmp64);
        const double *kp = fx_kpre(f, il, cell);
        for (int32_t i = 0; i < n; i++) {
            f->tmp[i] = (float)f->tmp64[i];
            v[i] = (float)kp[i];
        }
        kv_store_write(&f->s, f->k, il, cell, f->tmp, v);
    }
    free(v);
}

/* Write and assign a cell. */
static void fx_put(fx *f, int32_t cell, cs_pos pos, uint64_t seqs) {
    fx_write(f, cell, pos);
    kv_cells_assign(&f->c, cell, pos, seqs);
}

/* Cell cell of the K (v: V) layer buffer buf (a store's or a snapshot's),
 * gathered into a row, heads in order, in one of two static buffers (slot
 * 0 or 1), so two rows can be compared. */
static const void *row_in(const kv_store *s, bool v, const void *buf, int32_t cell, int slot) {
    static uint8_t rows[2][8192];
    assert_true((v ? s->row_v : s->row_k) <= sizeof rows[0]);
    kv_store_get_row(s, v, buf, cell, rows[slot]);
    return rows[slot];
}

static const void *k_row(const kv_store *s, int32_t layer, int32_t cell) {
    return row_in(s, false, s->k[layer], cell, 0);
}

/* The K row of a cell in a snapshot (snapshot() below). */
static const void *snap_k_row(const kv_store *s, const uint8_t *snap, int32_t layer, int32_t cell) {
    return row_in(s, false, snap + s->row_k * (size_t)s->size * (size_t)layer, cell, 1);
}

/* K row of a cell as floats. */
static void k_read(const kv_store *s, int32_t layer, int32_t cell, float *out) {
    dequantize_row(s->type_k, k_row(s, layer, cell), out, s->n_embd_kv);
}

/* Sums for rel-L1 = sum|a - b| / sum|b|. */
typedef struct err_acc {
    double num, den;
} err_acc;

static double err_rel(const err_acc *e) {
    return e->den > 0.0 ? e->num / e->den : 0.0;
}

/* Accumulate the error of the cell's K in store a against store b. */
static void acc_cells(err_acc *e, const kv_store *a, const kv_store *b, int32_t cell) {
    float *x = malloc((size_t)a->n_embd_kv * sizeof *x),
          *y = malloc((size_t)a->n_embd_kv * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int32_t il = 0; il < a->n_layer; il++) {
        k_read(a, il, cell, x);
        k_read(b, il, cell, y);
        for (int32_t i = 0; i < a->n_embd_kv; i++) {
            e->num += fabs((double)x[i] - (double)y[i]);
            e->den += fabs((double)y[i]);
        }
    }
    free(x);
    free(y);
}

/* Accumulate the error of the cell's K against the float64 reference at pos. */
static void acc_ref(err_acc *e, const fx *f, int32_t cell, double pos) {
    float *x = malloc((size_t)f->s.n_embd_kv * sizeof *x);
    assert_non_null(x);
    for (int32_t il = 0; il < f->s.n_layer; il++) {
        k_read(&f->s, il, cell, x);
        fx_ref(f, il, cell, pos, f->tmp64);
        for (int32_t i = 0; i < f->s.n_embd_kv; i++) {
            e->num += fabs((double)x[i] - f->tmp64[i]);
            e->den += fabs(f->tmp64[i]);
        }
    }
    free(x);
}

/* Copy of all K (or V) bytes of a store, for bit-exact comparisons. */
static uint8_t *snapshot(const kv_store *s, bool v) {
    const size_t layer = (v ? s->row_v : s->row_k) * (size_t)s->size;
    uint8_t *out = malloc(layer * (size_t)s->n_layer);
    assert_non_null(out);
    for (int32_t il = 0; il < s->n_layer; il++)
        memcpy(out + layer * (size_t)il, v ? s->v[il] : s->k[il], layer);
    return out;
}

static bool cell_k_equal(const kv_store *s, const uint8_t *snap, int32_t cell) {
    for (int32_t il = 0; il < s->n_layer; il++)
        if (memcmp(snap_k_row(s, snap, il, cell), k_row(s, il, cell), s->row_k) != 0) return false;
    return true;
}

static bool store_equal(const kv_store *s, const uint8_t *snap, bool v) {
    const size_t layer = (v ? s->row_v : s->row_k) * (size_t)s->size;
    for (int32_t il = 0; il < s->n_layer; il++)
        if (memcmp(snap + layer * (size_t)il, v ? s->v[il] : s->k[il], layer) != 0) return false;
    return true;
}

/* C1's bound for float32 at the largest position involved. */
static double tol_f32(cs_pos p) {
    return p <= C1_POS_KNEE ? C1_TOL_BASE : C1_TOL_PER_POS * p;
}

static double tol_type(int32_t type) {
    return type == CS_TYPE_F32 ? C1_TOL_BASE : type == CS_TYPE_F16 ? C2_TOL_F16 : C2_TOL_Q8_0;
}

static void assert_no_pending(const kv_cells *c) {
    assert_false(c->has_shift);
    for (int32_t i = 0; i < c->size; i++) assert_int_equal(c->delta[i], 0);
}

static const int32_t k_types[] = {CS_TYPE_F32, CS_TYPE_F16, CS_TYPE_Q8_0};
static const int32_t k_modes[] = {CS_ROPE_NORM, CS_ROPE_NEOX};

/* ------------------------------------------------------------------- C1 */

static const cs_pos c1_pos[] = {0, 1, 100, 4096, 32768, 131072};

/* Set a pending delta directly (the store-level test does not depend on
 * the metadata operations; apply_shift reads only pos >= 0 and delta). */
static void set_delta(kv_cells *c, int32_t cell, cs_pos d) {
    c->delta[cell] = d;
    c->has_shift = true;
}

static void c1_case(int32_t mode, int32_t hd, int32_t n_rot, bool yarn) {
    enum { N_DELTA = 4 };
    const int32_t n_pos = (int32_t)(sizeof c1_pos / sizeof c1_pos[0]);
    fx f;
    fx_init(&f, 2, n_pos * N_DELTA, 2, hd, CS_TYPE_F32, rope_params(n_rot, mode, yarn),
            1000 + (uint64_t)mode * 10 + (uint64_t)hd + (yarn ? 7 : 0));
    cs_pos dl[64];
    for (int32_t ip = 0; ip < n_pos; ip++) {
        const cs_pos p = c1_pos[ip];
        const cs_pos deltas[N_DELTA] = {-p, -p / 2, 1, 4096};
        for (int32_t id = 0; id < N_DELTA; id++) {
            const int32_t cell = ip * N_DELTA + id;
            fx_put(&f, cell, p, 1);
            dl[cell] = deltas[id];
            set_delta(&f.c, cell, deltas[id]);
        }
    }
    uint8_t *before = snapshot(&f.s, false);
    uint8_t *vbefore = snapshot(&f.s, true);
    int32_t n_expect = 0;
    for (int32_t i = 0; i < f.s.size; i++) n_expect += dl[i] != 0;
    assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, NULL), n_expect);
    assert_no_pending(&f.c);

    double worst = 0.0;
    for (int32_t ip = 0; ip < n_pos; ip++) {
        for (int32_t id = 0; id < N_DELTA; id++) {
            const int32_t cell = ip * N_DELTA + id;
            const cs_pos p = c1_pos[ip], q = p + dl[cell];
            err_acc e = {0};
            acc_ref(&e, &f, cell, q);
            const cs_pos scale = p > q ? p : q;
            const double tol = tol_f32(scale);
            if (err_rel(&e) > tol)
                fail_msg("C1 mode %d hd %d n_rot %d yarn %d: p %d delta %d rel-L1 %.3g > %.3g",
                         mode, hd, n_rot, yarn, p, dl[cell], err_rel(&e), tol);
            if (err_rel(&e) / tol > worst) worst = err_rel(&e) / tol;
            if (dl[cell] == 0) assert_true(cell_k_equal(&f.s, before, cell));
            /* pass-through dims keep their bytes */
            for (int32_t il = 0; il < f.s.n_layer; il++) {
                const float *now = k_row(&f.s, il, cell);
                const float *old = snap_k_row(&f.s, before, il, cell);
                for (int32_t h = 0; h < f.s.n_head_kv; h++)
                    assert_memory_equal(now + h * hd + n_rot, old + h * hd + n_rot,
                                        (size_t)(hd - n_rot) * sizeof(float));
            }
        }
    }
    assert_true(store_equal(&f.s, vbefore, true)); /* V never changes */
    printf("C1 mode %s hd %d n_rot %d yarn %d: worst rel-L1 / tolerance %.3f\n",
           mode == CS_ROPE_NEOX ? "neox" : "norm", hd, n_rot, yarn, worst);
    free(before);
    free(vbefore);
    fx_free(&f);
}

static void test_kv_cache_c1_composition(void **state) {
    (void)state;
    for (size_t m = 0; m < 2; m++)
        for (int yarn = 0; yarn < 2; yarn++) {
            c1_case(k_modes[m], 64, 64, yarn);
            c1_case(k_modes[m], 32, 16, yarn);
        }
}

/* The elements past n_rot keep their exact bytes in every cache type
 * (Q8_0: whole blocks past the rotated ones). */
static void test_kv_cache_c1_partial_rotary_bytes(void **state) {
    (void)state;
    for (size_t t = 0; t < 3; t++)
        for (size_t m = 0; m < 2; m++) {
            const int32_t type = k_types[t], hd = 64, n_rot = 16;
            fx f;
            fx_init(&f, 2, 8, 3, hd, type, rope_params(n_rot, k_modes[m], false), 77 + t);
            for (int32_t i = 0; i < 8; i++) fx_put(&f, i, 50 + 13 * i, 1);
            assert_int_equal(kv_cells_seq_add(&f.c, 0, -1, -1, 1000), 8);
            uint8_t *before = snapshot(&f.s, false);
            uint64_t bytes = 0;
            assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, &bytes), 8);
            /* bytes of the rotated span: n_rot elements per head (Q8_0: the
             * one 32-element block that holds them) read and written */
            const size_t span = type == CS_TYPE_F32 ? 16 * 4 : type == CS_TYPE_F16 ? 16 * 2 : 34;
            assert_int_equal(bytes, 2 * span * 3 * 8 * 2);
            const size_t elt = type == CS_TYPE_F32 ? 4 : 2;
            err_acc e = {0};
            for (int32_t i = 0; i < 8; i++) {
                acc_ref(&e, &f, i, 1050 + 13 * i);
                for (int32_t il = 0; il < 2; il++) {
                    const uint8_t *now = k_row(&f.s, il, i);
                    const uint8_t *old = snap_k_row(&f.s, before, il, i);
                    for (int32_t h = 0; h < 3; h++) {
                        size_t off, len;
                        if (type == CS_TYPE_Q8_0) {
                            off = (size_t)h * 2 * 34 + 34; /* second block of the head */
                            len = 34;
                        } else {
                            off = ((size_t)h * hd + n_rot) * elt;
                            len = (size_t)(hd - n_rot) * elt;
                        }
                        assert_memory_equal(now + off, old + off, len);
                    }
                }
            }
            /* the rotated part is right too (direct-write tolerance vs float64:
             * one rounding to the cache type per shift, two in all) */
            assert_true(err_rel(&e) <= 2 * tol_type(type));
            free(before);
            fx_free(&f);
        }
}

/* ------------------------------------------------------------------- C2 */

static void c2_case(int32_t type, int32_t mode, cs_pos delta) {
    enum { N = 64, N_SHIFT = 40, N_OTHER = 8 };
    fx a, b;
    const kernels_rope_params rp = rope_params(64, mode, false);
    fx_init(&a, 2, N, 2, 64, type, rp, 2000 + (uint64_t)type);
    fx_init(&b, 2, N, 2, 64, type, rp, 2000 + (uint64_t)type);
    for (int32_t i = 0; i < N_SHIFT; i++) {
        fx_put(&a, i, 100 + 3 * i, 1);
        fx_write(&b, i, 100 + 3 * i + delta);
    }
    for (int32_t i = N_SHIFT; i < N_SHIFT + N_OTHER; i++) fx_put(&a, i, 100 + i, 2);
    /* empty cells with data in them (a freed cell keeps its old rows) */
    for (int32_t i = N_SHIFT + N_OTHER; i < N; i++) fx_write(&a, i, 7 * i);
    uint8_t *before = snapshot(&a.s, false), *vbefore = snapshot(&a.s, true);
    assert_int_equal(kv_cells_seq_add(&a.c, 0, -1, -1, delta), N_SHIFT);
    assert_true(a.c.has_shift);
    uint64_t bytes = 0;
    assert_int_equal(kv_store_apply_shift(&a.s, &a.c, a.k, NULL, &a.rope, &bytes), N_SHIFT);
    assert_int_equal(bytes, (uint64_t)2 * N_SHIFT * 2 * a.s.row_k);
    assert_no_pending(&a.c);
    err_acc e = {0}, er = {0};
    for (int32_t i = 0; i < N_SHIFT; i++) {
        acc_cells(&e, &a.s, &b.s, i);
        acc_ref(&er, &a, i, 100 + 3 * i + delta);
    }
    for (int32_t i = N_SHIFT; i < N; i++) assert_true(cell_k_equal(&a.s, before, i));
    assert_true(store_equal(&a.s, vbefore, true));
    printf("C2 %-4s %s delta %+d: rel-L1 vs direct %.3g, vs float64 %.3g\n", cs_type_name(type),
           mode == CS_ROPE_NEOX ? "neox" : "norm", delta, err_rel(&e), err_rel(&er));
    assert_true(err_rel(&e) <= tol_type(type));
    free(before);
    free(vbefore);
    fx_free(&a);
    fx_free(&b);
}

static void test_kv_cache_c2_cache_equivalence(void **state) {
    (void)state;
    for (size_t t = 0; t < 3; t++)
        for (size_t m = 0; m < 2; m++) {
            c2_case(k_types[t], k_modes[m], 57);
            c2_case(k_types[t], k_modes[m], -61);
        }
}

/* ------------------------------------------------------------------- C3 */

static void test_kv_cache_c3_seq_div(void **state) {
    (void)state;
    enum { N = 40 };
    for (size_t t = 0; t < 3; t++)
        for (int32_t d = 2; d <= 3; d++) {
            const int32_t type = k_types[t];
            fx a, b;
            const kernels_rope_params rp = rope_params(64, CS_ROPE_NORM, false);
            fx_init(&a, 2, N, 2, 64, type, rp, 3000 + (uint64_t)type);
            fx_init(&b, 2, N, 2, 64, type, rp, 3000 + (uint64_t)type);
            for (int32_t i = 0; i < N; i++) {
                const cs_pos p = 1000 + 7 * i;
                fx_put(&a, i, p, 1);
                fx_write(&b, i, p / d);
            }
            assert_int_equal(kv_cells_seq_div(&a.c, 0, -1, -1, d), N);
            assert_int_equal(kv_store_apply_shift(&a.s, &a.c, a.k, NULL, &a.rope, NULL), N);
            err_acc e = {0};
            for (int32_t i = 0; i < N; i++) {
                assert_int_equal(a.c.pos[i], (1000 + 7 * i) / d);
                acc_cells(&e, &a.s, &b.s, i);
            }
            printf("C3 %-4s seq_div %d: rel-L1 vs direct write at floor(p/d) %.3g\n",
                   cs_type_name(type), d, err_rel(&e));
            assert_true(err_rel(&e) <= tol_type(type));
            fx_free(&a);
            fx_free(&b);
        }
}

/* ------------------------------------------------------------------- C4 */

typedef struct op {
    bool div;
    cs_pos p0, p1;
    int32_t v;
} op;

static void apply_op(kv_cells *c, const op *o) {
    if (o->div)
        kv_cells_seq_div(c, 0, o->p0, o->p1, o->v);
    else
        kv_cells_seq_add(c, 0, o->p0, o->p1, o->v);
}

static void test_kv_cache_c4_folding(void **state) {
    (void)state;
    enum { N = 48 };
    static const op ops[] = {
        {false, -1, -1, 100}, {true, -1, -1, 2},     {false, 700, -1, -37},
        {true, 600, -1, 3},   {false, 0, 300, 4096},
    };
    for (size_t t = 0; t < 3; t++) {
        const int32_t type = k_types[t];
        const kernels_rope_params rp = rope_params(64, CS_ROPE_NEOX, false);
        fx x, y, z;
        fx_init(&x, 2, N, 2, 64, type, rp, 4000 + (uint64_t)type);
        fx_init(&y, 2, N, 2, 64, type, rp, 4000 + (uint64_t)type);
        fx_init(&z, 2, N, 2, 64, type, rp, 4000 + (uint64_t)type);
        for (int32_t i = 0; i < N; i++) {
            fx_put(&x, i, 1000 + 29 * i, 1);
            fx_put(&y, i, 1000 + 29 * i, 1);
        }
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
            apply_op(&x.c, &ops[o]);
            apply_op(&y.c, &ops[o]);
            kv_store_apply_shift(&y.s, &y.c, y.k, NULL, &y.rope, NULL);
        }
        assert_true(x.c.has_shift);
        kv_store_apply_shift(&x.s, &x.c, x.k, NULL, &x.rope, NULL);
        assert_no_pending(&x.c);
        assert_memory_equal(x.c.pos, y.c.pos, N * sizeof(cs_pos));
        err_acc e = {0}, ed = {0}, es = {0};
        cs_pos pmax = 0;
        for (int32_t i = 0; i < N; i++) {
            fx_write(&z, i, x.c.pos[i]);
            acc_cells(&e, &x.s, &y.s, i);
            acc_cells(&ed, &x.s, &z.s, i);
            acc_cells(&es, &y.s, &z.s, i);
            if (x.c.pos[i] > pmax) pmax = x.c.pos[i];
        }
        printf("C4 %-4s: folded vs stepwise rel-L1 %.3g; vs direct: folded %.3g, stepwise %.3g\n",
               cs_type_name(type), err_rel(&e), err_rel(&ed), err_rel(&es));
        /* each path is within the one-shift bound of the direct write (the
         * float32 angle error scales with the largest position involved) */
        const double tol = type == CS_TYPE_F32 ? tol_f32(pmax) : tol_type(type);
        assert_true(err_rel(&ed) <= tol);
        assert_true(err_rel(&es) <= C4_STEPWISE_FACTOR * tol);
        assert_true(err_rel(&e) <= C4_STEPWISE_FACTOR * tol);
        fx_free(&x);
        fx_free(&y);
        fx_free(&z);
    }
}

/* ------------------------------------------------------------------- C5 */

static void test_kv_cache_c5_idempotence(void **state) {
    (void)state;
    for (size_t t = 0; t < 3; t++) {
        fx f;
        fx_init(&f, 2, 32, 2, 64, k_types[t], rope_params(64, CS_ROPE_NORM, false), 5000 + t);
        for (int32_t i = 0; i < 24; i++) fx_put(&f, i, 10 * i, i < 12 ? 1 : 2);
        kv_cells_seq_add(&f.c, 0, -1, -1, 333);
        kv_cells_seq_div(&f.c, 1, -1, -1, 4);
        assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, NULL), 24);
        assert_no_pending(&f.c);
        uint8_t *k1 = snapshot(&f.s, false), *v1 = snapshot(&f.s, true);
        uint64_t bytes = 0;
        assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, &bytes), 0);
        assert_int_equal(bytes, 0);
        assert_true(store_equal(&f.s, k1, false));
        assert_true(store_equal(&f.s, v1, true));
        assert_no_pending(&f.c);
        /* +a then -a folds to delta 0: the cells are not touched at all */
        kv_cells_seq_add(&f.c, 0, -1, -1, 5);
        kv_cells_seq_add(&f.c, 0, -1, -1, -5);
        assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, NULL), 0);
        assert_true(store_equal(&f.s, k1, false));
        assert_no_pending(&f.c);
        free(k1);
        free(v1);
        fx_free(&f);
    }
}

/* C6 at the storage level: no RoPE (rope NULL, n_rot 0 or mode < 0) clears the
 * deltas and leaves K bit-exact. */
static void test_kv_cache_c6_no_rope(void **state) {
    (void)state;
    fx f;
    fx_init(&f, 2, 16, 2, 64, CS_TYPE_F16, rope_params(64, CS_ROPE_NORM, false), 6000);
    for (int32_t i = 0; i < 10; i++) fx_put(&f, i, i, 1);
    uint8_t *k1 = snapshot(&f.s, false);
    kv_cells_seq_add(&f.c, 0, -1, -1, 9);
    assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, NULL, NULL), 0);
    assert_no_pending(&f.c);
    kernels_rope_params none = f.rope;
    none.n_rot = 0;
    kv_cells_seq_add(&f.c, 0, -1, -1, 9);
    assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &none, NULL), 0);
    assert_no_pending(&f.c);
    none = f.rope;
    none.mode = -1; /* RoPE type NONE */
    kv_cells_seq_add(&f.c, 0, -1, -1, 9);
    assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &none, NULL), 0);
    assert_no_pending(&f.c);
    assert_true(store_equal(&f.s, k1, false));
    free(k1);
    fx_free(&f);
}

/* An allocation failure in the shift leaves everything pending and K as it
 * was; the next attempt then applies it. */
static void test_kv_cache_shift_nomem_leaves_pending(void **state) {
    (void)state;
    fx f;
    fx_init(&f, 2, 16, 2, 64, CS_TYPE_F16, rope_params(64, CS_ROPE_NORM, false), 6500);
    for (int32_t i = 0; i < 10; i++) fx_put(&f, i, i, 1);
    uint8_t *k1 = snapshot(&f.s, false);
    kv_cells_seq_add(&f.c, 0, -1, -1, 9);
    mem_fail_after(0);
    const int32_t r = kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, NULL);
    mem_fail_after(-1);
    assert_int_equal(r, -1);
    assert_non_null(strstr(cs_last_error(), "out of memory"));
    assert_true(f.c.has_shift);
    assert_int_equal(f.c.delta[3], 9);
    assert_true(store_equal(&f.s, k1, false));
    assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, NULL), 10);
    assert_no_pending(&f.c);
    free(k1);
    fx_free(&f);
}

/* ------------------------------------------------------------------- C7 */

static void test_kv_cache_c7_repeated_shifts(void **state) {
    (void)state;
    enum { N = 32, D = 37 };
    for (size_t t = 1; t < 3; t++) {
        const int32_t type = k_types[t];
        const kernels_rope_params rp = rope_params(64, CS_ROPE_NORM, false);
        fx a, at0, at1;
        fx_init(&a, 2, N, 2, 64, type, rp, 7000);
        fx_init(&at0, 2, N, 2, 64, type, rp, 7000);
        fx_init(&at1, 2, N, 2, 64, type, rp, 7000);
        for (int32_t i = 0; i < N; i++) {
            fx_put(&a, i, 1000 + i, 1);
            fx_write(&at0, i, 1000 + i);
            fx_write(&at1, i, 1000 + i + D);
        }
        double worst_odd = 0.0, worst_even = 0.0;
        for (int32_t step = 1; step <= 100; step++) {
            kv_cells_seq_add(&a.c, 0, -1, -1, step % 2 ? D : -D);
            assert_int_equal(kv_store_apply_shift(&a.s, &a.c, a.k, NULL, &a.rope, NULL), N);
            err_acc e = {0}, er = {0};
            for (int32_t i = 0; i < N; i++) {
                acc_cells(&e, &a.s, step % 2 ? &at1.s : &at0.s, i);
                acc_ref(&er, &a, i, 1000 + i + (step % 2 ? D : 0));
            }
            double *w = step % 2 ? &worst_odd : &worst_even;
            if (err_rel(&e) > *w) *w = err_rel(&e);
            if (step == 1 || step == 2 || step == 10 || step == 100) {
                printf("C7 %-4s after %3d shifts: rel-L1 vs direct %.3g, vs float64 %.3g\n",
                       cs_type_name(type), step, err_rel(&e), err_rel(&er));
                if (type == CS_TYPE_Q8_0 && step > 1) {
                    const double tol = step == 2    ? C7_TOL_Q8_0_2
                                       : step == 10 ? C7_TOL_Q8_0_10
                                                    : C7_TOL_Q8_0_100;
                    assert_true(err_rel(&e) <= tol);
                }
            }
        }
        printf("C7 %-4s worst over 100 shifts: odd (net +%d) %.3g, even (net 0) %.3g\n",
               cs_type_name(type), D, worst_odd, worst_even);
        if (type == CS_TYPE_F16) {
            assert_true(worst_even <= C7_TOL_F16_NET0);
            assert_true(worst_odd <= C2_TOL_F16);
        } else {
            assert_true(worst_odd <= C7_TOL_Q8_0_100);
        }
        fx_free(&a);
        fx_free(&at0);
        fx_free(&at1);
    }
}

/* ------------------------------------------------------------------- C8 */

static double head_norm(const float *x, int32_t n) {
    double s = 0.0;
    for (int32_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return sqrt(s);
}

static void test_kv_cache_c8_yarn_magnitude(void **state) {
    (void)state;
    enum { N = 24, HD = 64, NH = 2 };
    for (size_t m = 0; m < 2; m++) {
        fx f;
        fx_init(&f, 2, N, NH, HD, CS_TYPE_F32, rope_params(HD, k_modes[m], true), 8000 + m);
        for (int32_t i = 0; i < N; i++) fx_put(&f, i, 97 * i, 1);
        float *before = malloc((size_t)2 * N * NH * HD * sizeof *before);
        assert_non_null(before);
        for (int32_t il = 0; il < 2; il++)
            for (int32_t i = 0; i < N; i++)
                k_read(&f.s, il, i, before + ((size_t)il * N + i) * NH * HD);
        kv_cells_seq_add(&f.c, 0, -1, -1, 1234);
        kv_cells_seq_div(&f.c, 0, -1, -1, 3);
        assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, NULL, &f.rope, NULL), N);
        float row[NH * HD];
        double worst = 0.0;
        for (int32_t il = 0; il < 2; il++)
            for (int32_t i = 0; i < N; i++) {
                k_read(&f.s, il, i, row);
                for (int32_t h = 0; h < NH; h++) {
                    const double n0 =
                        head_norm(before + ((size_t)il * N + i) * NH * HD + h * HD, HD);
                    const double n1 = head_norm(row + h * HD, HD);
                    const double r = fabs(n1 / n0 - 1.0);
                    if (r > worst) worst = r;
                    assert_true(r <= C8_TOL_NORM);
                }
            }
        printf("C8 yarn %s: worst |K| change per head %.3g (upstream drift would be %.4f)\n",
               k_modes[m] == CS_ROPE_NEOX ? "neox" : "norm", worst,
               0.1 * log(1.0 / (double)YARN_FREQ_SCALE));
        free(before);
        fx_free(&f);
    }
}

/* ------------------------------------------------ thread-count independence */

static void test_kv_cache_shift_threads_bit_identical(void **state) {
    (void)state;
    enum { N = 300 };
    threadpool *tp[3] = {NULL, NULL, NULL};
    for (int32_t i = 0; i < 3; i++) assert_int_equal(threadpool_new(i + 1, &tp[i]), CS_OK);
    for (size_t t = 0; t < 3; t++)
        for (size_t m = 0; m < 2; m++)
            for (int32_t n_rot = 32; n_rot <= 64; n_rot += 32) {
                uint8_t *ref = NULL;
                for (int32_t run = 0; run < 4; run++) {
                    fx f;
                    /* YaRN angles in the partial-rotary case */
                    fx_init(&f, 3, N, 2, 64, k_types[t], rope_params(n_rot, k_modes[m], n_rot < 64),
                            9000 + t);
                    for (int32_t i = 0; i < N - 20; i++) fx_put(&f, i, 5 * i, i % 3 ? 1 : 2);
                    kv_cells_seq_add(&f.c, 0, -1, -1, 4097); /* long runs of one delta */
                    kv_cells_seq_div(&f.c, 1, -1, -1, 3);    /* a different delta per cell */
                    kv_cells_seq_add(&f.c, 0, 4500, 5000, -999);
                    /* run 3: no pool (NULL) */
                    threadpool *p = run < 3 ? tp[run] : NULL;
                    assert_int_equal(kv_store_apply_shift(&f.s, &f.c, f.k, p, &f.rope, NULL),
                                     N - 20 - 1 /* pos 0 of seq 1 stays 0 */);
                    uint8_t *snap = snapshot(&f.s, false);
                    if (!ref)
                        ref = snap;
                    else {
                        assert_true(store_equal(&f.s, ref, false));
                        free(snap);
                    }
                    fx_free(&f);
                }
                free(ref);
            }
    for (int32_t i = 0; i < 3; i++) threadpool_free(tp[i]);
}

/* ------------------------------------------------- B2/B8: row moves */

static void test_kv_cache_move_bit_exact(void **state) {
    (void)state;
    enum { N = 512, CHUNK = 16, N_LAYER = 3 };
    uint64_t rs = 424242;
    for (size_t t = 0; t < 3; t++)
        for (int32_t rep = 0; rep < 5; rep++) {
            kv_store s;
            const int32_t tk = k_types[t], tv = k_types[(t + (size_t)rep) % 3];
            assert_int_equal(kv_store_init(&s, N_LAYER, N, 2, 64, tk, tv), CS_OK);
            for (int32_t il = 0; il < N_LAYER; il++) {
                uint8_t *k = s.k[il], *v = s.v[il];
                for (size_t i = 0; i < s.row_k * N; i++) k[i] = (uint8_t)rng_next(&rs);
                for (size_t i = 0; i < s.row_v * N; i++) v[i] = (uint8_t)rng_next(&rs);
            }
            uint8_t *k0 = snapshot(&s, false), *v0 = snapshot(&s, true);
            /* disjoint ranges: chunks in random order, two per move */
            int32_t perm[N / CHUNK];
            for (int32_t i = 0; i < N / CHUNK; i++) perm[i] = i;
            for (int32_t i = N / CHUNK - 1; i > 0; i--) {
                int32_t j = (int32_t)(rng_next(&rs) % (uint64_t)(i + 1)), x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
            }
            kv_move moves[N / CHUNK / 2];
            const int32_t n_moves = 1 + (int32_t)(rng_next(&rs) % (N / CHUNK / 2));
            uint64_t expect = 0;
            for (int32_t m = 0; m < n_moves; m++) {
                const int32_t n = 1 + (int32_t)(rng_next(&rs) % CHUNK);
                const int32_t os = (int32_t)(rng_next(&rs) % (uint64_t)(CHUNK - n + 1));
                const int32_t od = (int32_t)(rng_next(&rs) % (uint64_t)(CHUNK - n + 1));
                moves[m] = (kv_move){
                    .src = perm[2 * m] * CHUNK + os, .dst = perm[2 * m + 1] * CHUNK + od, .n = n};
                expect += (uint64_t)n * N_LAYER * (s.row_k + s.row_v);
            }
            /* oracle: the destination rows take the source rows' old bytes */
            uint8_t *k1 = malloc(s.row_k * N * N_LAYER), *v1 = malloc(s.row_v * N * N_LAYER);
            assert_non_null(k1);
            assert_non_null(v1);
            memcpy(k1, k0, s.row_k * N * N_LAYER);
            memcpy(v1, v0, s.row_v * N * N_LAYER);
            /* (each cell's row gathered and scattered, so the oracle does
             * not share kv_store_move's per-head runs) */
            uint8_t row[2 * 64 * 4];
            for (int32_t il = 0; il < N_LAYER; il++)
                for (int32_t m = 0; m < n_moves; m++)
                    for (int32_t r = 0; r < moves[m].n; r++) {
                        const size_t lk = s.row_k * N * (size_t)il, lv = s.row_v * N * (size_t)il;
                        kv_store_get_row(&s, false, k0 + lk, moves[m].src + r, row);
                        kv_store_put_row(&s, false, k1 + lk, moves[m].dst + r, row);
                        kv_store_get_row(&s, true, v0 + lv, moves[m].src + r, row);
                        kv_store_put_row(&s, true, v1 + lv, moves[m].dst + r, row);
                    }
            uint64_t bytes = 7;
            kv_store_move(&s, moves, n_moves, &bytes);
            assert_int_equal(bytes, 7 + expect);
            assert_true(store_equal(&s, k1, false));
            assert_true(store_equal(&s, v1, true));
            free(k0);
            free(v0);
            free(k1);
            free(v1);
            kv_store_free(&s);
        }
}

/* ------------------------------------------------------ init and sizes */

static void test_kv_cache_init_types(void **state) {
    (void)state;
    assert_int_equal(kv_row_bytes(CS_TYPE_F32, 768), 3072);
    assert_int_equal(kv_row_bytes(CS_TYPE_F16, 768), 1536);
    assert_int_equal(kv_row_bytes(CS_TYPE_Q8_0, 768), 24 * 34);
    assert_int_equal(kv_row_bytes(CS_TYPE_Q8_0, 48), 0);
    assert_int_equal(kv_row_bytes(CS_TYPE_BF16, 64), 0);
    kv_store s;
    assert_int_equal(kv_store_init(&s, 2, 8, 2, 64, CS_TYPE_BF16, CS_TYPE_F16), CS_ERR_UNSUPPORTED);
    assert_non_null(strstr(cs_last_error(), "type_k"));
    assert_int_equal(kv_store_init(&s, 2, 8, 2, 48, CS_TYPE_F16, CS_TYPE_Q8_0), CS_ERR_UNSUPPORTED);
    assert_non_null(strstr(cs_last_error(), "48"));
    kv_store_free(&s); /* safe on the zeroed store */
    assert_int_equal(kv_store_init(&s, 2, 8, 2, 64, CS_TYPE_Q8_0, CS_TYPE_F32), CS_OK);
    assert_int_equal(s.row_k, 4 * 34);
    assert_int_equal(s.row_v, 128 * 4);
    kv_store_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_cache_init_types),
        cmocka_unit_test(test_kv_cache_c1_composition),
        cmocka_unit_test(test_kv_cache_c1_partial_rotary_bytes),
        cmocka_unit_test(test_kv_cache_c2_cache_equivalence),
        cmocka_unit_test(test_kv_cache_c3_seq_div),
        cmocka_unit_test(test_kv_cache_c4_folding),
        cmocka_unit_test(test_kv_cache_c5_idempotence),
        cmocka_unit_test(test_kv_cache_c6_no_rope),
        cmocka_unit_test(test_kv_cache_shift_nomem_leaves_pending),
        cmocka_unit_test(test_kv_cache_c7_repeated_shifts),
        cmocka_unit_test(test_kv_cache_c8_yarn_magnitude),
        cmocka_unit_test(test_kv_cache_shift_threads_bit_identical),
        cmocka_unit_test(test_kv_cache_move_bit_exact),
    };
    return test_run(tests, NULL, NULL);
}
