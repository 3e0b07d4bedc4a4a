/* test_faults.c: allocation failure injection and I/O faults (issue 13).
 *
 * For every n from 0 until the operation succeeds, mem_fail_after(n) makes
 * the n-th library allocation fail: model load, context creation, batch and
 * sampler creation, cs_decode of a multi-sequence batch with a pending
 * K-shift, the cache operations that allocate, state save to memory and to
 * a file, state load from memory and from a file into a live fragmented
 * cache. Each failure must return CS_ERR_NOMEM with a fresh message and
 * leave the cache (metadata and every K/V byte) and the files as they were;
 * the sanitizer build checks that nothing leaks. Then the state file I/O
 * seam (src/state_io.h) injects short reads, ENOSPC after N bytes and a
 * failing fsync, and stale temporaries of a crashed saver are planted.
 * Allocations inside libc (fopen's FILE, opendir) are not counted: they are
 * not the library's and an interposer would also fail the test harness's. */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "context.h"
#include "fixtures/tiny_model.h"
#include "mem.h"
#include "state_io.h"

static cs_model *g_model;

static int setup(void **s) {
    (void)s;
    cs_model_params mp = cs_model_default_params();
    return cs_model_load(test_bundled_model(), &mp, &g_model) == CS_OK ? 0 : -1;
}
static int teardown(void **s) {
    (void)s;
    cs_model_free(g_model);
    return 0;
}

/* A known message in cs_last_error(), so that a failure that sets none is
 * caught (the message would still be this one). */
static const char *k_sentinel = "kv_update: context is NULL";
static void set_sentinel(void) {
    assert_int_equal(cs_kv_update(NULL), CS_ERR_INVALID_ARG);
    assert_string_equal(cs_last_error(), k_sentinel);
}
static void assert_fresh_message(void) {
    assert_true(cs_last_error()[0] != '\0');
    assert_string_not_equal(cs_last_error(), k_sentinel);
}

/* ------------------------------------------------------------ snapshots */

/* Everything a failed call must not change: cell metadata, per-sequence
 * bounds, the pending shift and defrag, and every K/V byte of every cell. */
typedef struct snapshot {
    int32_t size, used, head;
    bool has_shift, do_defrag;
    uint32_t n_threads;
    cs_pos *pos, *delta;
    uint64_t *seq;
    cs_pos seq_min[64], seq_max[64];
    uint8_t *kv;
    size_t kv_bytes;
} snapshot;

static void snap_take(const cs_context *c, snapshot *s) {
    const kv_cells *cl = &c->cells;
    s->size = cl->size;
    s->used = cl->used;
    s->head = cl->head;
    s->has_shift = cl->has_shift;
    s->do_defrag = c->do_defrag;
    s->n_threads = (uint32_t)c->n_threads;
    s->pos = malloc((size_t)cl->size * sizeof *s->pos);
    s->delta = malloc((size_t)cl->size * sizeof *s->delta);
    s->seq = malloc((size_t)cl->size * sizeof *s->seq);
    assert_non_null(s->pos);
    assert_non_null(s->delta);
    assert_non_null(s->seq);
    memcpy(s->pos, cl->pos, (size_t)cl->size * sizeof *s->pos);
    memcpy(s->delta, cl->delta, (size_t)cl->size * sizeof *s->delta);
    memcpy(s->seq, cl->seq, (size_t)cl->size * sizeof *s->seq);
    for (int32_t q = 0; q < 64; q++) {
        s->seq_min[q] = cs_kv_seq_pos_min(c, q);
        s->seq_max[q] = cs_kv_seq_pos_max(c, q);
    }
    const kv_store *kv = &c->kv;
    const size_t per = (size_t)kv->size * (kv->row_k + kv->row_v);
    s->kv_bytes = per * (size_t)kv->n_layer;
    s->kv = malloc(s->kv_bytes);
    assert_non_null(s->kv);
    for (int32_t il = 0; il < kv->n_layer; il++) {
        uint8_t *d = s->kv + (size_t)il * per;
        memcpy(d, kv->k[il], (size_t)kv->size * kv->row_k);
        memcpy(d + (size_t)kv->size * kv->row_k, kv->v[il], (size_t)kv->size * kv->row_v);
    }
}

static void snap_free(snapshot *s) {
    free(s->pos);
    free(s->delta);
    free(s->seq);
    free(s->kv);
    memset(s, 0, sizeof *s);
}

/* The context still matches s, byte for byte. */
static void snap_check(const cs_context *c, const snapshot *s) {
    snapshot now;
    snap_take(c, &now);
    assert_int_equal(now.size, s->size);
    assert_int_equal(now.used, s->used);
    assert_int_equal(now.head, s->head);
    assert_int_equal(now.has_shift, s->has_shift);
    assert_int_equal(now.do_defrag, s->do_defrag);
    assert_int_equal(now.n_threads, s->n_threads);
    assert_memory_equal(now.pos, s->pos, (size_t)s->size * sizeof *s->pos);
    assert_memory_equal(now.delta, s->delta, (size_t)s->size * sizeof *s->delta);
    assert_memory_equal(now.seq, s->seq, (size_t)s->size * sizeof *s->seq);
    assert_memory_equal(now.seq_min, s->seq_min, sizeof s->seq_min);
    assert_memory_equal(now.seq_max, s->seq_max, sizeof s->seq_max);
    assert_int_equal(now.kv_bytes, s->kv_bytes);
    assert_memory_equal(now.kv, s->kv, s->kv_bytes);
    snap_free(&now);
}

/* ------------------------------------------------------------ fixtures */

static cs_context *new_ctx(uint32_t n_ctx, int32_t threads, int32_t type) {
    cs_context_params p = cs_context_default_params();
    p.n_ctx = n_ctx;
    p.n_batch = 32;
    p.n_seq_max = 4;
    p.n_threads = threads;
    p.type_k = type;
    p.type_v = type;
    cs_context *c = NULL;
    assert_int_equal(cs_context_new(g_model, &p, &c), CS_OK);
    return c;
}

static cs_token tok(int32_t s, int32_t i) {
    return (cs_token)(1 + (s * 37 + i * 11) % 250);
}

/* Three sequences of 8 tokens, a hole in sequence 1 (positions 2..4
 * removed) and sequence 2 shifted by 3 (the K-shift still pending): a
 * fragmented cache whose next update must allocate. */
static void fill_fragmented(cs_context *c) {
    cs_batch *b = NULL;
    assert_int_equal(cs_batch_new(32, 2, &b), CS_OK);
    for (int32_t s = 0; s < 3; s++)
        for (int32_t i = 0; i < 8; i++) {
            const cs_seq q = s;
            assert_int_equal(cs_batch_add(b, tok(s, i), i, &q, 1, i == 7), CS_OK);
        }
    assert_int_equal(cs_decode(c, b), 0);
    cs_batch_free(b);
    assert_int_equal(cs_kv_seq_rm(c, 1, 2, 5), CS_OK);
    assert_int_equal(cs_kv_seq_add(c, 2, 0, -1, 3), CS_OK);
    assert_true(c->cells.has_shift);
}

/* Sequences 0 and 1 continue (positions 8..11), sequence 3 starts (0..3,
 * shared with 0 for its first token); every row wants logits, more rows
 * than the first decode, so the logits buffer must grow. */
static cs_batch *multi_seq_batch(void) {
    cs_batch *b = NULL;
    assert_int_equal(cs_batch_new(32, 2, &b), CS_OK);
    for (int32_t i = 0; i < 4; i++) {
        const cs_seq s0 = 0, s1 = 1;
        assert_int_equal(cs_batch_add(b, tok(0, 8 + i), 8 + i, &s0, 1, true), CS_OK);
        assert_int_equal(cs_batch_add(b, tok(1, 8 + i), 8 + i, &s1, 1, true), CS_OK);
        const cs_seq s3[2] = {3, 2};
        assert_int_equal(cs_batch_add(b, tok(3, i), i, s3, i == 0 ? 2 : 1, true), CS_OK);
    }
    return b;
}

/* Run op with the n-th allocation failing for n = 0, 1, ... until it
 * succeeds; each failure must be CS_ERR_NOMEM with a fresh message and
 * leave c as snap_before recorded (when c is set). Returns the number of
 * failing allocation points. */
typedef int32_t (*fault_op)(cs_context *c, void *user);
static int32_t sweep(const char *what, cs_context *c, fault_op op, void *user,
                     void (*after_failure)(void *user)) {
    snapshot before;
    if (c) snap_take(c, &before);
    int32_t failures = 0;
    for (int64_t n = 0; n < 1000000; n++) {
        set_sentinel();
        mem_fail_after(n);
        const int32_t st = op(c, user);
        mem_fail_after(-1);
        if (st == CS_OK) break;
        if (st != CS_ERR_NOMEM)
            fail_msg("%s: allocation %lld failing gave %d (%s): %s", what, (long long)n, st,
                     cs_status_str((cs_status)st), cs_last_error());
        assert_fresh_message();
        if (c) snap_check(c, &before);
        if (after_failure) after_failure(user);
        failures++;
    }
    if (c) snap_free(&before);
    print_message("faults: %-28s %d allocation points\n", what, failures);
    return failures;
}

/* ------------------------------------------------------------ constructors */

static int32_t op_model_load(cs_context *c, void *user) {
    (void)c;
    cs_model *m = (cs_model *)1;
    cs_status st = cs_model_load(test_bundled_model(), NULL, &m);
    if (st == CS_OK) {
        cs_model_free(m);
    } else {
        assert_null(m);
    }
    (void)user;
    return st;
}

static int32_t op_model_load_read(cs_context *c, void *user) {
    (void)c;
    (void)user;
    cs_model_params mp = cs_model_default_params();
    mp.use_mmap = false;
    cs_model *m = (cs_model *)1;
    cs_status st = cs_model_load(test_bundled_model(), &mp, &m);
    if (st == CS_OK) {
        cs_model_free(m);
    } else {
        assert_null(m);
    }
    return st;
}

/* cs_context_new on model m (NULL: the bundled one) with `threads` threads
 * and a K / V cache of `type`; kt: the context must hold a transposed-key
 * copy (forward.c), or must not. */
typedef struct ctx_case {
    const cs_model *m;
    int32_t threads;
    int32_t type;
    bool kt;
} ctx_case;

static int32_t op_context_new(cs_context *c, void *user) {
    (void)c;
    const ctx_case *cc = user;
    cs_context_params p = cs_context_default_params();
    p.n_ctx = 64;
    p.n_seq_max = 4;
    p.n_threads = cc->threads;
    p.type_k = p.type_v = cc->type;
    cs_context *x = (cs_context *)1;
    cs_status st = cs_context_new(cc->m ? cc->m : g_model, &p, &x);
    if (st == CS_OK) {
        assert_int_equal(x->kt_cells > 0, cc->kt);
        cs_context_free(x);
    } else {
        assert_null(x);
    }
    return st;
}

static int32_t op_batch_new(cs_context *c, void *user) {
    (void)c;
    (void)user;
    cs_batch *b = (cs_batch *)1;
    cs_status st = cs_batch_new(64, 3, &b);
    if (st == CS_OK) {
        cs_batch_free(b);
    } else {
        assert_null(b);
    }
    return st;
}

static int32_t op_sampler_new(cs_context *c, void *user) {
    (void)c;
    (void)user;
    cs_sampler_params sp = cs_sampler_default_params();
    cs_sampler *s = (cs_sampler *)1;
    cs_status st = cs_sampler_new(&sp, cs_model_n_vocab(g_model), &s);
    if (st == CS_OK) {
        cs_sampler_free(s);
    } else {
        assert_null(s);
    }
    return st;
}

static void test_faults_constructors(void **s) {
    (void)s;
    assert_true(sweep("model load", NULL, op_model_load, NULL, NULL) > 3);
    assert_true(sweep("model load (no mmap)", NULL, op_model_load_read, NULL, NULL) > 3);
    ctx_case cc = {NULL, 1, CS_TYPE_F16, false};
    assert_true(sweep("context (1 thread)", NULL, op_context_new, &cc, NULL) > 10);
    cc.threads = 3; /* the pool's workers allocate too */
    assert_true(sweep("context (3 threads)", NULL, op_context_new, &cc, NULL) > 12);
    assert_int_equal(sweep("batch", NULL, op_batch_new, NULL, NULL), 6);
    assert_int_equal(sweep("sampler", NULL, op_sampler_new, NULL, NULL), 1);
}

/* Sampling allocates nothing: with every allocation failing it gives the
 * token it gives otherwise. */
static void test_faults_sampling(void **s) {
    (void)s;
    const int32_t nv = cs_model_n_vocab(g_model);
    cs_sampler_params sp = cs_sampler_default_params();
    sp.seed = 7;
    sp.repeat_penalty = 1.1f;
    cs_sampler *a = NULL, *b = NULL;
    assert_int_equal(cs_sampler_new(&sp, nv, &a), CS_OK);
    assert_int_equal(cs_sampler_new(&sp, nv, &b), CS_OK);
    float *logits = malloc((size_t)nv * sizeof *logits);
    assert_non_null(logits);
    uint64_t rng = 3;
    for (int32_t i = 0; i < nv; i++) logits[i] = 4.0f * test_frand(&rng);
    for (int32_t i = 0; i < 20; i++) {
        const cs_token ta = cs_sampler_sample(a, logits);
        mem_fail_after(0);
        const cs_token tb = cs_sampler_sample(b, logits);
        cs_sampler_accept(b, tb);
        assert_int_equal(cs_sampler_set_logit_bias(b, tb, -1.0f), CS_OK);
        mem_fail_after(-1);
        assert_int_equal(ta, tb);
        assert_true(ta >= 0 && ta < nv);
        cs_sampler_accept(a, ta);
        assert_int_equal(cs_sampler_set_logit_bias(a, ta, -1.0f), CS_OK);
    }
    free(logits);
    cs_sampler_free(a);
    cs_sampler_free(b);
}

/* ------------------------------------------------------------ decode, cache ops */

static int32_t op_decode(cs_context *c, void *user) {
    return cs_decode(c, (const cs_batch *)user);
}

/* A failed decode (logits growth, then the pending K-shift's scratch)
 * leaves the cache as it was; the decode that then succeeds gives the
 * logits, bit for bit, of an identical context that never failed. */
static void decode_case(int32_t threads, int32_t type) {
    cs_context *ref = new_ctx(64, threads, type), *c = new_ctx(64, threads, type);
    fill_fragmented(ref);
    fill_fragmented(c);
    cs_batch *b = multi_seq_batch();
    assert_int_equal(cs_decode(ref, b), 0);
    char what[64];
    snprintf(what, sizeof what, "decode (%d thr, %s)", threads, cs_type_name(type));
    assert_int_equal(sweep(what, c, op_decode, b, NULL), 2);
    const int32_t nv = cs_model_n_vocab(g_model);
    for (int32_t i = 0; i < cs_batch_n_tokens(b); i++)
        assert_memory_equal(cs_get_logits_ith(c, i), cs_get_logits_ith(ref, i),
                            (size_t)nv * sizeof(float));
    snapshot a;
    snap_take(ref, &a);
    snap_check(c, &a);
    snap_free(&a);
    cs_batch_free(b);
    cs_context_free(ref);
    cs_context_free(c);
}

static void test_faults_decode(void **s) {
    (void)s;
    decode_case(1, CS_TYPE_F16);
    decode_case(2, CS_TYPE_F32);
}

static int32_t op_kv_update(cs_context *c, void *user) {
    (void)user;
    return cs_kv_update(c);
}
static int32_t op_set_threads(cs_context *c, void *user) {
    return cs_set_n_threads(c, *(int32_t *)user);
}

/* The cache operations that allocate (the K-shift's scratch in
 * cs_kv_update; cs_set_n_threads' pool and scratch) fail whole; the others
 * allocate nothing and succeed with every allocation failing. */
static void test_faults_cache_ops(void **s) {
    (void)s;
    cs_context *ref = new_ctx(64, 1, CS_TYPE_F16), *c = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(ref);
    fill_fragmented(c);
    assert_int_equal(cs_kv_update(ref), CS_OK);
    assert_int_equal(sweep("kv_update (K-shift)", c, op_kv_update, NULL, NULL), 1);
    snapshot a;
    snap_take(ref, &a);
    snap_check(c, &a);
    snap_free(&a);

    int32_t threads = 3;
    assert_true(sweep("set_n_threads 1 -> 3", c, op_set_threads, &threads, NULL) >= 4);
    assert_int_equal(cs_n_threads(c), 3);

    /* allocation-free operations */
    mem_fail_after(0);
    assert_int_equal(cs_kv_seq_cp(c, 0, 3, 0, 4), CS_OK);
    assert_int_equal(cs_kv_seq_own(c, 3, 0, -1), CS_OK);
    assert_int_equal(cs_kv_seq_add(c, 3, 0, -1, 2), CS_OK);
    assert_int_equal(cs_kv_seq_div(c, 3, 0, -1, 2), CS_OK);
    assert_int_equal(cs_kv_seq_rm(c, 1, 0, 1), CS_OK);
    assert_int_equal(cs_kv_seq_keep(c, 0), CS_OK);
    cs_kv_defrag(c);
    mem_fail_after(-1);
    cs_kv_info info;
    assert_int_equal(cs_kv_stats(c, &info), CS_OK);
    assert_true(info.defrag_pending);
    /* the defrag alone (no shift pending) allocates nothing either */
    assert_int_equal(cs_kv_update(c), CS_OK); /* apply the shift of seq 3 */
    cs_kv_defrag(c);
    mem_fail_after(0);
    assert_int_equal(cs_kv_update(c), CS_OK);
    mem_fail_after(-1);
    cs_context_free(ref);
    cs_context_free(c);
}

/* ------------------------------------------------------------ state in memory */

typedef struct mem_save {
    uint8_t *buf;
    size_t size, written;
    cs_seq seq; /* < 0: whole cache */
} mem_save;

static int32_t op_state_save(cs_context *c, void *user) {
    mem_save *m = user;
    return m->seq < 0 ? cs_state_save(c, m->buf, m->size, &m->written)
                      : cs_state_seq_save(c, m->seq, m->buf, m->size, &m->written);
}

typedef struct mem_load {
    const uint8_t *buf;
    size_t size;
    cs_seq dst;
} mem_load;

static int32_t op_state_seq_load(cs_context *c, void *user) {
    mem_load *m = user;
    return cs_state_seq_load(c, m->dst, m->buf, m->size);
}

static void test_faults_state_memory(void **s) {
    (void)s;
    cs_context *ref = new_ctx(64, 1, CS_TYPE_F16), *c = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(ref);
    fill_fragmented(c);
    /* whole-cache save: the pending shift's scratch is the one allocation */
    const size_t size = cs_state_size(c);
    assert_int_equal(size, cs_state_size(ref));
    uint8_t *want = malloc(size), *got = malloc(size);
    assert_non_null(want);
    assert_non_null(got);
    size_t n_want = 0;
    assert_int_equal(cs_state_save(ref, want, size, &n_want), CS_OK);
    mem_save ms = {got, size, 0, -1};
    assert_int_equal(sweep("state_save (memory)", c, op_state_save, &ms, NULL), 1);
    assert_int_equal(ms.written, n_want);
    assert_memory_equal(got, want, n_want);

    /* sequence save: no shift pending now, nothing to allocate */
    const size_t ss = cs_state_seq_size(c, 1);
    uint8_t *seqbuf = malloc(ss);
    assert_non_null(seqbuf);
    mem_save mq = {seqbuf, ss, 0, 1};
    assert_int_equal(sweep("state_seq_save (memory)", c, op_state_save, &mq, NULL), 0);

    /* whole load into the live fragmented cache allocates nothing */
    cs_context *d = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(d);
    mem_fail_after(0);
    assert_int_equal(cs_state_load(d, got, n_want), CS_OK);
    mem_fail_after(-1);
    snapshot a;
    snap_take(c, &a);
    assert_int_equal(cs_kv_used_cells(d), a.used);
    snap_free(&a);

    /* sequence load into a fragmented cache: its index list is the
     * allocation; the failed loads leave the cache as it was */
    cs_context *e = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(e);
    mem_load ml = {seqbuf, mq.written, 3};
    assert_int_equal(sweep("state_seq_load (memory)", e, op_state_seq_load, &ml, NULL), 1);
    assert_int_equal(cs_kv_seq_pos_max(e, 3), cs_kv_seq_pos_max(c, 1));

    free(want);
    free(got);
    free(seqbuf);
    cs_context_free(ref);
    cs_context_free(c);
    cs_context_free(d);
    cs_context_free(e);
}

/* ------------------------------------------------------------ state files */

/* a and b hold the same cells in the same index order, rows and all: their
 * whole-cache states are equal byte for byte. */
static void assert_same_state(cs_context *a, cs_context *b) {
    const size_t n = cs_state_size(a);
    assert_int_equal(cs_state_size(b), n);
    uint8_t *x = malloc(n), *y = malloc(n);
    assert_non_null(x);
    assert_non_null(y);
    size_t nx = 0, ny = 0;
    assert_int_equal(cs_state_save(a, x, n, &nx), CS_OK);
    assert_int_equal(cs_state_save(b, y, n, &ny), CS_OK);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x);
    free(y);
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    const long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    uint8_t *d = malloc((size_t)len + 1);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return d;
}

static void write_all(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Entries of the directory of path named basename(path).tmp-*, other than
 * `except` (may be NULL). */
static int32_t count_temporaries(const char *path, const char *except) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    assert_non_null(slash);
    *slash = '\0';
    const char *base = slash + 1;
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "%s.tmp-", path + (base - dir));
    DIR *d = opendir(dir);
    assert_non_null(d);
    int32_t n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        if (except && strcmp(e->d_name, except) == 0) continue;
        n++;
    }
    closedir(d);
    return n;
}

/* The old file survives a failed save byte for byte, with no temporary. */
typedef struct file_save {
    const char *path;
    const uint8_t *old;
    size_t old_n;
    const cs_token *toks;
    int32_t n_toks;
} file_save;

static int32_t op_save_file(cs_context *c, void *user) {
    file_save *f = user;
    return cs_state_save_file(c, f->path, f->toks, f->n_toks);
}

static void file_unchanged(void *user) {
    file_save *f = user;
    size_t n = 0;
    uint8_t *now = read_all(f->path, &n);
    assert_int_equal(n, f->old_n);
    assert_memory_equal(now, f->old, n);
    free(now);
    assert_int_equal(count_temporaries(f->path, NULL), 0);
}

typedef struct file_load {
    const char *path;
    cs_token toks[16];
    int32_t n_toks;
} file_load;

static int32_t op_load_file(cs_context *c, void *user) {
    file_load *f = user;
    return cs_state_load_file(c, f->path, f->toks, 16, &f->n_toks);
}

static void test_faults_state_file(void **s) {
    (void)s;
    char path[512], refpath[512];
    test_tmp_path("faults.state", path, sizeof path);
    test_tmp_path("faults-ref.state", refpath, sizeof refpath);
    cs_context *ref = new_ctx(64, 1, CS_TYPE_F16), *c = new_ctx(64, 1, CS_TYPE_F16);
    const cs_token toks[3] = {5, 6, 7};
    /* the old file: an empty cache's state */
    assert_int_equal(cs_state_save_file(c, path, toks, 1), CS_OK);
    size_t old_n = 0;
    uint8_t *old = read_all(path, &old_n);
    fill_fragmented(ref);
    fill_fragmented(c);
    assert_int_equal(cs_state_save_file(ref, refpath, toks, 3), CS_OK);
    file_save fs = {path, old, old_n, toks, 3};
    /* the names, then the K-shift's scratch */
    assert_int_equal(sweep("state_save_file", c, op_save_file, &fs, file_unchanged), 2);
    size_t n_new = 0, n_ref = 0;
    uint8_t *nw = read_all(path, &n_new), *rf = read_all(refpath, &n_ref);
    assert_int_equal(n_new, n_ref);
    assert_memory_equal(nw, rf, n_ref);
    assert_int_equal(count_temporaries(path, NULL), 0);

    /* load into a live fragmented cache: the names, the file's bytes */
    cs_context *d = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(d);
    assert_int_equal(cs_kv_seq_rm(d, 0, 1, 3), CS_OK);
    file_load fl = {path, {0}, 0};
    assert_int_equal(sweep("state_load_file", d, op_load_file, &fl, NULL), 2);
    assert_int_equal(fl.n_toks, 3);
    assert_memory_equal(fl.toks, toks, sizeof toks);
    assert_same_state(c, d);
    free(old);
    free(nw);
    free(rf);
    remove(path);
    remove(refpath);
    cs_context_free(ref);
    cs_context_free(c);
    cs_context_free(d);
}

/* ------------------------------------------------------------ model files */

typedef struct out_file {
    char path[1024];
} out_file;

static const char k_old_model[] = "an old file the failed writer must leave alone";

/* After a failed write: the old file byte for byte, no temporary. */
static void file_kept(void *user) {
    out_file *o = user;
    size_t n = 0;
    uint8_t *d = read_all(o->path, &n);
    assert_int_equal(n, sizeof k_old_model);
    assert_memory_equal(d, k_old_model, n);
    free(d);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", o->path);
    assert_false(access(tmp, F_OK) == 0);
}

static int32_t op_quantize(cs_context *c, void *user) {
    (void)c;
    out_file *o = user;
    return cs_model_quantize_threads(test_bundled_model(), o->path, "q8_0", 2);
}

static int32_t op_gen_model(cs_context *c, void *user) {
    (void)c;
    out_file *o = user;
    cs_gen_model_params gp;
    assert_true(cs_gen_model_preset("tiny", &gp));
    gp.vocab_path = test_bundled_model();
    return cs_gen_model_write(&gp, o->path);
}

/* The writers of model files: a failed quantize or generation leaves the
 * file that was at the output path as it was, and no temporary. */
static void test_faults_model_files(void **s) {
    (void)s;
    out_file o;
    test_tmp_path("faults-q8.gguf", o.path, sizeof o.path);
    write_all(o.path, k_old_model, sizeof k_old_model);
    assert_true(sweep("model_quantize q8_0", NULL, op_quantize, &o, file_kept) > 5);
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(o.path, NULL, &m), CS_OK);
    cs_model_free(m);
    remove(o.path);
    test_tmp_path("faults-gen.gguf", o.path, sizeof o.path);
    write_all(o.path, k_old_model, sizeof k_old_model);
    assert_true(sweep("gen_model_write tiny", NULL, op_gen_model, &o, file_kept) > 3);
    assert_int_equal(cs_model_load(o.path, NULL, &m), CS_OK);
    cs_model_free(m);
    remove(o.path);
}

/* ------------------------------------------------------------ I/O hooks */

static size_t g_write_left; /* bytes the write hook still accepts */
static size_t write_enospc(const void *p, size_t n, FILE *f) {
    const size_t put = n < g_write_left ? n : g_write_left;
    const size_t done = put ? fwrite(p, 1, put, f) : 0;
    g_write_left -= done;
    if (done < n) errno = ENOSPC;
    return done;
}

static size_t g_read_left; /* bytes the read hook still gives */
static size_t read_short(void *p, size_t n, FILE *f) {
    const size_t want = n < g_read_left ? n : g_read_left;
    const size_t got = want ? fread(p, 1, want, f) : 0;
    g_read_left -= got;
    return got;
}

static int fsync_eio(int fd) {
    (void)fd;
    errno = EIO;
    return -1;
}

static int g_fsyncs, g_fsync_fail_at = -1; /* fail the call with this index */
static int fsync_count(int fd) {
    if (g_fsyncs++ == g_fsync_fail_at) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

/* A save syncs the temporary and then the directory; a failing directory
 * sync is reported (the new file is in place then, the old one gone). */
static void test_faults_fsync(void **s) {
    (void)s;
    char path[512];
    test_tmp_path("faults-sync.state", path, sizeof path);
    cs_context *c = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(c);
    const state_io_hooks h = {NULL, NULL, fsync_count};
    g_fsyncs = 0;
    g_fsync_fail_at = -1;
    state_io_set_hooks(&h);
    assert_int_equal(cs_state_save_file(c, path, NULL, 0), CS_OK);
    assert_int_equal(g_fsyncs, 2);
    g_fsyncs = 0;
    g_fsync_fail_at = 1;
    const cs_status st = cs_state_save_file(c, path, NULL, 0);
    state_io_set_hooks(NULL);
    assert_int_equal(st, CS_ERR_IO);
    assert_non_null(strstr(cs_last_error(), "its directory"));
    assert_non_null(strstr(cs_last_error(), strerror(EIO)));
    assert_int_equal(count_temporaries(path, NULL), 0);
    cs_context *d = new_ctx(64, 1, CS_TYPE_F16);
    cs_token none[1];
    int32_t n = -1;
    assert_int_equal(cs_state_load_file(d, path, none, 1, &n), CS_OK);
    assert_int_equal(n, 0);
    assert_same_state(c, d);
    remove(path);
    cs_context_free(c);
    cs_context_free(d);
}

static void test_faults_io_hooks(void **s) {
    (void)s;
    char path[512];
    test_tmp_path("faults-io.state", path, sizeof path);
    cs_context *c = new_ctx(64, 1, CS_TYPE_F16);
    const cs_token toks[2] = {9, 10};
    assert_int_equal(cs_state_save_file(c, path, toks, 2), CS_OK);
    size_t old_n = 0;
    uint8_t *old = read_all(path, &old_n);
    fill_fragmented(c);
    assert_int_equal(cs_kv_update(c), CS_OK);
    const size_t total = cs_state_size(c) + 2 * 4;
    file_save fs = {path, old, old_n, toks, 2};

    /* ENOSPC after N bytes: at the start, in the header, in the tokens, in
     * the cells, one byte short */
    const size_t cuts[] = {0, 10, 72, 75, 500, total - 1};
    const state_io_hooks enospc = {write_enospc, NULL, NULL};
    snapshot before;
    snap_take(c, &before);
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        g_write_left = cuts[i];
        state_io_set_hooks(&enospc);
        const cs_status st = cs_state_save_file(c, path, toks, 2);
        state_io_set_hooks(NULL);
        assert_int_equal(st, CS_ERR_IO);
        assert_non_null(strstr(cs_last_error(), path));
        assert_non_null(strstr(cs_last_error(), strerror(ENOSPC)));
        char wrote[64];
        snprintf(wrote, sizeof wrote, "(%zu bytes written)", cuts[i]);
        assert_non_null(strstr(cs_last_error(), wrote));
        file_unchanged(&fs);
        snap_check(c, &before);
    }
    /* fsync of the temporary fails */
    const state_io_hooks eio = {NULL, NULL, fsync_eio};
    state_io_set_hooks(&eio);
    assert_int_equal(cs_state_save_file(c, path, toks, 2), CS_ERR_IO);
    state_io_set_hooks(NULL);
    assert_non_null(strstr(cs_last_error(), strerror(EIO)));
    file_unchanged(&fs);

    /* the new state, then short reads of it into a live cache */
    assert_int_equal(cs_state_save_file(c, path, toks, 2), CS_OK);
    size_t new_n = 0;
    uint8_t *nw = read_all(path, &new_n);
    assert_int_equal(new_n, total);
    free(nw);
    cs_context *d = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(d);
    assert_int_equal(cs_kv_seq_rm(d, 0, 0, 2), CS_OK);
    snapshot dbefore;
    snap_take(d, &dbefore);
    const size_t reads[] = {0, 40, 72, 100, total - 1};
    const state_io_hooks shortr = {NULL, read_short, NULL};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        g_read_left = reads[i];
        cs_token out[4] = {0};
        int32_t n_out = -1;
        state_io_set_hooks(&shortr);
        const cs_status st = cs_state_load_file(d, path, out, 4, &n_out);
        state_io_set_hooks(NULL);
        assert_int_equal(st, CS_ERR_IO);
        assert_int_equal(n_out, 0);
        char msg[1024];
        const size_t expect = reads[i] < 72 ? 72 : total;
        snprintf(msg, sizeof msg, "short read of '%s': expected %zu bytes, read %zu", path, expect,
                 reads[i]);
        assert_non_null(strstr(cs_last_error(), msg));
        snap_check(d, &dbefore);
    }
    cs_token out[4] = {0};
    int32_t n_out = 0;
    assert_int_equal(cs_state_load_file(d, path, out, 4, &n_out), CS_OK);
    assert_int_equal(n_out, 2);
    assert_same_state(c, d);
    snap_free(&before);
    snap_free(&dbefore);
    free(old);
    remove(path);
    cs_context_free(c);
    cs_context_free(d);
}

/* ------------------------------------------------------------ stale temporaries */

/* A PID that no process has: a child that has exited and been reaped. */
static pid_t dead_pid(void) {
    const pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) _exit(0);
    int status = 0;
    assert_int_equal(waitpid(p, &status, 0), p);
    return p;
}

static bool exists(const char *p) {
    return access(p, F_OK) == 0;
}

static void test_faults_stale_temporaries(void **s) {
    (void)s;
    char path[512], stale[600], live[600], other[600];
    test_tmp_path("faults-stale.state", path, sizeof path);
    cs_context *c = new_ctx(64, 1, CS_TYPE_F16);
    fill_fragmented(c);
    const cs_token toks[1] = {3};
    snprintf(stale, sizeof stale, "%s.tmp-%ld", path, (long)dead_pid());
    snprintf(live, sizeof live, "%s.tmp-%ld", path, (long)getppid()); /* a save in progress */
    snprintf(other, sizeof other, "%s.tmp-12ab", path);               /* not ours: not a PID */
    write_all(stale, "crash", 5);
    write_all(live, "live", 4);
    write_all(other, "other", 5);
    assert_int_equal(cs_state_save_file(c, path, toks, 1), CS_OK);
    assert_false(exists(stale));
    assert_true(exists(live));
    assert_true(exists(other));

    /* a load ignores a crashed save's temporary (garbage) and removes it */
    write_all(stale, "crash", 5);
    cs_context *d = new_ctx(64, 1, CS_TYPE_F16);
    cs_token out[2];
    int32_t n_out = 0;
    assert_int_equal(cs_state_load_file(d, path, out, 2, &n_out), CS_OK);
    assert_int_equal(n_out, 1);
    assert_int_equal(cs_kv_used_cells(d), cs_kv_used_cells(c));
    assert_false(exists(stale));
    assert_true(exists(live));
    remove(live);
    remove(other);
    remove(path);
    cs_context_free(c);
    cs_context_free(d);
}

/* ------------------------------------------------------------ a full tmpfs */

/* A real ENOSPC: a 64 KiB tmpfs holds the old state; a larger one does not
 * fit, nor does a generated model over an old file. Needs root (mount); elsewhere the hook test
 * above is the evidence. */
static void test_faults_tmpfs_enospc(void **s) {
    (void)s;
    char dir[512], path[600];
    test_tmp_path("faults-tmpfs", dir, sizeof dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    if (geteuid() != 0 || mount("tmpfs", dir, "tmpfs", 0, "size=64k") != 0) {
        print_message("skip (environment): cannot mount a 64k tmpfs on %s (%s); the I/O hook "
                      "test covers ENOSPC\n",
                      dir, geteuid() != 0 ? "not root" : strerror(errno));
        rmdir(dir);
        return;
    }
    snprintf(path, sizeof path, "%s/cache.state", dir);
    cs_context *c = new_ctx(256, 1, CS_TYPE_F32);
    const cs_token toks[1] = {1};
    fill_fragmented(c);
    assert_int_equal(cs_state_save_file(c, path, toks, 1), CS_OK);
    size_t old_n = 0;
    uint8_t *old = read_all(path, &old_n);
    /* 7 batches of 30 cells of 1292 bytes (f32 rows): 231 cells, about 290 KiB */
    cs_batch *b = NULL;
    assert_int_equal(cs_batch_new(32, 1, &b), CS_OK);
    for (int32_t k = 0; k < 7; k++) {
        cs_batch_clear(b);
        for (int32_t i = 0; i < 30; i++) {
            const cs_seq q = 0;
            assert_int_equal(cs_batch_add(b, tok(0, i), 8 + 30 * k + i, &q, 1, false), CS_OK);
        }
        assert_int_equal(cs_decode(c, b), 0);
    }
    cs_batch_free(b);
    assert_true(cs_state_size(c) > 128 * 1024);
    const cs_status st = cs_state_save_file(c, path, toks, 1);
    const char *msg = cs_last_error();
    file_save fs = {path, old, old_n, toks, 1};
    file_unchanged(&fs);
    assert_int_equal(st, CS_ERR_IO);
    assert_non_null(strstr(msg, strerror(ENOSPC)));
    free(old);
    remove(path);
    cs_context_free(c);

    /* a model generated over an old file on the full file system */
    out_file o;
    snprintf(o.path, sizeof o.path, "%s/model.gguf", dir);
    write_all(o.path, k_old_model, sizeof k_old_model);
    cs_gen_model_params gp;
    assert_true(cs_gen_model_preset("tiny", &gp));
    gp.vocab_path = test_bundled_model();
    assert_int_equal(cs_gen_model_write(&gp, o.path), CS_ERR_IO);
    file_kept(&o);
    remove(o.path);
    assert_int_equal(umount2(dir, MNT_DETACH), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* A context whose prompts take the transposed keys (head_dim 64, F16
 * cache, a table with attn_kt_f16) allocates a copy and its state per
 * thread: exactly two allocation points more than the same context with
 * an F32 cache (no copy), each failing whole (ASan shows a leak or a double
 * free on the way out); cs_set_n_threads fails whole at them too, and a
 * context made after the failures decodes a prompt that uses the copy. */
static void test_faults_transposed_keys(void **s) {
    (void)s;
    if (!kernels_best()->attn_kt_f16)
        test_skip(CS_SKIP_CPU, "no kernel table with transposed keys (AVX-512)");
    cs_model *m = fixture_wide_head_model(64, 0);
    assert_non_null(m);
    ctx_case plain = {m, 2, CS_TYPE_F32, false}, kt = {m, 2, CS_TYPE_F16, true};
    const int32_t n_plain = sweep("context, F32 cache", NULL, op_context_new, &plain, NULL);
    assert_int_equal(sweep("context, transposed keys", NULL, op_context_new, &kt, NULL),
                     n_plain + 2);

    cs_context_params p = cs_context_default_params();
    p.n_ctx = 64;
    p.n_threads = 1;
    p.type_k = p.type_v = CS_TYPE_F32;
    cs_context *c = NULL;
    assert_int_equal(cs_context_new(m, &p, &c), CS_OK);
    int32_t threads = 3;
    const int32_t n_plain_threads =
        sweep("set_n_threads 1 -> 3, F32", c, op_set_threads, &threads, NULL);
    cs_context_free(c);
    p.type_k = p.type_v = CS_TYPE_F16;
    assert_int_equal(cs_context_new(m, &p, &c), CS_OK);
    assert_int_equal(sweep("set_n_threads 1 -> 3, keys", c, op_set_threads, &threads, NULL),
                     n_plain_threads + 2);
    assert_int_equal(cs_n_threads(c), 3);
    cs_batch *b = NULL;
    cs_seq seq = 0;
    assert_int_equal(cs_batch_new(CS_ATTN_KT_MIN_TOKENS, 1, &b), CS_OK);
    for (int32_t i = 0; i < CS_ATTN_KT_MIN_TOKENS; i++)
        assert_int_equal(
            cs_batch_add(b, (cs_token)(1 + i), i, &seq, 1, i + 1 == CS_ATTN_KT_MIN_TOKENS), CS_OK);
    assert_int_equal(cs_decode(c, b), 0);
    bool used = false;
    for (int32_t i = 0; i < cs_n_threads(c); i++) used = used || c->tb.kt_state[i].n_blocks > 0;
    assert_true(used);
    cs_batch_free(b);
    cs_context_free(c);
    cs_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faults_constructors),
        cmocka_unit_test(test_faults_sampling),
        cmocka_unit_test(test_faults_decode),
        cmocka_unit_test(test_faults_cache_ops),
        cmocka_unit_test(test_faults_transposed_keys),
        cmocka_unit_test(test_faults_state_memory),
        cmocka_unit_test(test_faults_state_file),
        cmocka_unit_test(test_faults_model_files),
        cmocka_unit_test(test_faults_io_hooks),
        cmocka_unit_test(test_faults_fsync),
        cmocka_unit_test(test_faults_stale_temporaries),
        cmocka_unit_test(test_faults_tmpfs_enospc),
    };
    return test_run(tests, setup, teardown);
}
