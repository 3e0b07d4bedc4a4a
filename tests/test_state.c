/* test_state.c: KV state save and restore (docs/KV_CACHE_SPEC.md §4.6, §7 items 8, 21, 28,
 * test D8) on the bundled stories260K model and the generated tiny model:
 * round trips through buffers and files give bit-identical next-token
 * logits, a pending shift is applied before saving, a sequence restores
 * into a fragmented cache, every truncation and random byte flip either
 * fails with the cache untouched or loads a consistent cache, and
 * mismatched models, types and sizes are refused by name. */
#include "test.h"

#include <math.h>
#include <sys/stat.h>

#include "fixtures/tiny_model.h"

/* The fragmented restore puts cells at other indices: allow summation-order
 * noise, relative to the largest logit (spec D8: 1e-5). */
#define TOL_RESTORED 1e-5
/* Prefixes of a saved state tried one by one up to this size, then with a stride. */
#define ALL_PREFIXES_MAX 20000
#define PREFIX_STRIDE    13
#define N_FLIPS          500
/* Format constants from docs/STATE.md (written independently of state.c). */
#define DOC_HEADER_BYTES 72
#define DOC_POS_BYTES    4
#define DOC_SEQ_BYTES    8

static cs_model *g_model; /* bundled stories260K, F32 weights */
static int32_t g_n_vocab;

static int setup(void **s) {
    (void)s;
    cs_model_params mp = cs_model_default_params();
    if (cs_model_load(test_bundled_model(), &mp, &g_model) != CS_OK) return -1;
    g_n_vocab = cs_model_n_vocab(g_model);
    return 0;
}
static int teardown(void **s) {
    (void)s;
    cs_model_free(g_model);
    return 0;
}

static cs_context *new_ctx_on(const cs_model *m, uint32_t n_ctx, uint32_t n_seq, int32_t type) {
    cs_context_params p = cs_context_default_params();
    p.n_ctx = n_ctx;
    p.n_batch = n_ctx;
    p.n_seq_max = n_seq;
    p.n_threads = 1;
    p.type_k = p.type_v = type;
    cs_context *c = NULL;
    assert_int_equal(cs_context_new(m, &p, &c), CS_OK);
    return c;
}
static cs_context *new_ctx(uint32_t n_ctx, uint32_t n_seq, int32_t type) {
    return new_ctx_on(g_model, n_ctx, n_seq, type);
}

static cs_model *load_tiny(int32_t weight_type) {
    const char *path = fixture_tiny_model(weight_type);
    assert_non_null(path);
    cs_model_params mp = cs_model_default_params();
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(path, &mp, &m), CS_OK);
    return m;
}

static const cs_token k_prompt[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 310};
#define N_PROMPT ((int32_t)(sizeof k_prompt / sizeof k_prompt[0]))
#define NEXT_TOK 417

/* Decode k_prompt[0, n) into seq at positions p0.. (logits for the last row). */
static void decode_prompt(cs_context *c, cs_seq seq, cs_pos p0, int32_t n) {
    cs_batch *b;
    assert_int_equal(cs_batch_new(n, 1, &b), CS_OK);
    for (int32_t i = 0; i < n; i++)
        assert_int_equal(cs_batch_add(b, k_prompt[i], p0 + i, &seq, 1, i == n - 1), CS_OK);
    assert_int_equal(cs_decode(c, b), 0);
    cs_batch_free(b);
}

/* Decode one token for seq at pos and copy its n_vocab logits into out. */
static void decode_one(cs_context *c, int32_t n_vocab, cs_token tok, cs_pos pos, cs_seq seq,
                       float *out) {
    cs_batch *b;
    assert_int_equal(cs_batch_new(1, 1, &b), CS_OK);
    assert_int_equal(cs_batch_add(b, tok, pos, &seq, 1, true), CS_OK);
    assert_int_equal(cs_decode(c, b), 0);
    const float *l = cs_get_logits_ith(c, 0);
    assert_non_null(l);
    memcpy(out, l, (size_t)n_vocab * sizeof(float));
    cs_batch_free(b);
}

/* K (or V) elements per cell and layer: n_head_kv * head_dim. */
static size_t embd_kv(const cs_model *m) {
    return (size_t)(cs_model_n_embd(m) / cs_model_n_head(m) * cs_model_n_head_kv(m));
}

static float *new_logits(void) {
    float *l = calloc((size_t)g_n_vocab, sizeof(float));
    assert_non_null(l);
    return l;
}

/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, int32_t n) {
    double m = 0, s = 0;
    for (int32_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m) m = d;
        if (fabs((double)b[i]) > s) s = fabs((double)b[i]);
    }
    return s > 0 ? m / s : m;
}

static uint8_t *save_whole(cs_context *c, size_t *n) {
    size_t need = cs_state_size(c);
    assert_true(need > 0);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    size_t written = 0;
    assert_int_equal(cs_state_save(c, buf, need, &written), CS_OK);
    assert_int_equal(written, need);
    *n = written;
    return buf;
}

static uint8_t *save_seq(cs_context *c, cs_seq seq, size_t *n) {
    size_t need = cs_state_seq_size(c, seq);
    assert_true(need > 0);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    size_t written = 0;
    assert_int_equal(cs_state_seq_save(c, seq, buf, need, &written), CS_OK);
    assert_int_equal(written, need);
    *n = written;
    return buf;
}

/* Everything the public API shows of a cache's metadata. */
typedef struct snapshot {
    int32_t size;
    cs_kv_cell *cells;
    int32_t used;
    int32_t tokens;
    cs_pos pos_max[4];
    cs_pos pos_min[4];
} snapshot;

static void snap_take(const cs_context *c, snapshot *s) {
    s->size = cs_kv_view(c, NULL, 0);
    s->cells = calloc((size_t)s->size, sizeof *s->cells);
    assert_non_null(s->cells);
    assert_int_equal(cs_kv_view(c, s->cells, s->size), s->size);
    s->used = cs_kv_used_cells(c);
    s->tokens = cs_kv_token_count(c);
    for (int i = 0; i < 4; i++) {
        s->pos_max[i] = cs_kv_seq_pos_max(c, i);
        s->pos_min[i] = cs_kv_seq_pos_min(c, i);
    }
}

static void snap_free(snapshot *s) {
    free(s->cells);
}

static void assert_unchanged(const cs_context *c, const snapshot *before) {
    snapshot now;
    snap_take(c, &now);
    assert_int_equal(now.size, before->size);
    assert_memory_equal(now.cells, before->cells, (size_t)now.size * sizeof *now.cells);
    assert_int_equal(now.used, before->used);
    assert_int_equal(now.tokens, before->tokens);
    assert_memory_equal(now.pos_max, before->pos_max, sizeof now.pos_max);
    assert_memory_equal(now.pos_min, before->pos_min, sizeof now.pos_min);
    snap_free(&now);
}

/* After any successful load: used and the sequence extremes agree with the
 * cells, and every non-empty cell has a position and no pending delta. */
static void assert_consistent(const cs_context *c, int32_t n_seq) {
    snapshot s;
    snap_take(c, &s);
    int32_t used = 0;
    for (int32_t i = 0; i < s.size; i++) {
        if (s.cells[i].seq == 0) {
            assert_int_equal(s.cells[i].pos, -1);
            continue;
        }
        used++;
        assert_true(s.cells[i].pos >= 0);
        assert_int_equal(s.cells[i].seq >> n_seq, 0);
    }
    assert_int_equal(s.used, used);
    for (cs_seq q = 0; q < n_seq && q < 4; q++) {
        cs_pos mx = -1;
        for (int32_t i = 0; i < s.size; i++)
            if ((s.cells[i].seq >> q) & 1 && s.cells[i].pos > mx) mx = s.cells[i].pos;
        assert_int_equal(s.pos_max[q], mx);
    }
    snap_free(&s);
}

static uint64_t rng_next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* ---------------------------------------------------------------- tests */

/* D8: save after the prompt, load into a fresh context: the next token's
 * logits are bit-identical to the run that never saved. */
static void test_state_roundtrip_buffer_bit_exact(void **st) {
    (void)st;
    cs_context *a = new_ctx(64, 1, CS_TYPE_F32);
    decode_prompt(a, 0, 0, N_PROMPT);
    size_t n = 0;
    uint8_t *buf = save_whole(a, &n);
    snapshot sa;
    snap_take(a, &sa);
    float *ref = new_logits(), *got = new_logits();
    decode_one(a, g_n_vocab, NEXT_TOK, N_PROMPT, 0, ref);

    cs_context *b = new_ctx(64, 1, CS_TYPE_F32);
    assert_int_equal(cs_state_load(b, buf, n), CS_OK);
    assert_unchanged(b, &sa); /* no holes in a: compact placement keeps indices */
    decode_one(b, g_n_vocab, NEXT_TOK, N_PROMPT, 0, got);
    assert_memory_equal(got, ref, (size_t)g_n_vocab * sizeof(float));

    /* loading replaces what was there */
    cs_context *c = new_ctx(64, 1, CS_TYPE_F32);
    decode_prompt(c, 0, 0, 5);
    assert_int_equal(cs_state_load(c, buf, n), CS_OK);
    assert_int_equal(cs_kv_used_cells(c), N_PROMPT);
    decode_one(c, g_n_vocab, NEXT_TOK, N_PROMPT, 0, got);
    assert_memory_equal(got, ref, (size_t)g_n_vocab * sizeof(float));

    snap_free(&sa);
    free(ref);
    free(got);
    free(buf);
    cs_context_free(a);
    cs_context_free(b);
    cs_context_free(c);
}

/* The same through a file, with the prompt tokens alongside. */
static void test_state_roundtrip_file_tokens(void **st) {
    (void)st;
    char path[1024];
    test_tmp_path("state-file.cskv", path, sizeof path);
    cs_context *a = new_ctx(64, 1, CS_TYPE_F32);
    decode_prompt(a, 0, 0, N_PROMPT);
    assert_int_equal(cs_state_save_file(a, path, k_prompt, N_PROMPT), CS_OK);
    float *ref = new_logits(), *got = new_logits();
    decode_one(a, g_n_vocab, NEXT_TOK, N_PROMPT, 0, ref);

    /* no temporary file left beside it */
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    const size_t per_cell =
        DOC_POS_BYTES + DOC_SEQ_BYTES +
        (size_t)cs_model_n_layer(g_model) * 2 * embd_kv(g_model) * sizeof(float);
    assert_int_equal((size_t)sb.st_size,
                     DOC_HEADER_BYTES + 4 * (size_t)N_PROMPT + (size_t)N_PROMPT * per_cell);

    cs_context *b = new_ctx(64, 1, CS_TYPE_F32);
    decode_prompt(b, 0, 0, 3);
    snapshot sb3;
    snap_take(b, &sb3);
    cs_token toks[64];
    int32_t n_tok = -5;
    /* too small a token buffer: refused, nothing changed */
    assert_int_equal(cs_state_load_file(b, path, toks, N_PROMPT - 1, &n_tok), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "tokens"));
    assert_unchanged(b, &sb3);
    assert_int_equal(cs_state_load_file(b, path, toks, 64, &n_tok), CS_OK);
    assert_int_equal(n_tok, N_PROMPT);
    assert_memory_equal(toks, k_prompt, sizeof k_prompt);
    decode_one(b, g_n_vocab, NEXT_TOK, N_PROMPT, 0, got);
    assert_memory_equal(got, ref, (size_t)g_n_vocab * sizeof(float));

    /* a file state is a whole-cache state: cs_state_load reads its bytes too */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *bytes = malloc((size_t)sb.st_size);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, (size_t)sb.st_size, f), (size_t)sb.st_size);
    fclose(f);
    cs_context *c = new_ctx(64, 1, CS_TYPE_F32);
    assert_int_equal(cs_state_load(c, bytes, (size_t)sb.st_size), CS_OK);
    decode_one(c, g_n_vocab, NEXT_TOK, N_PROMPT, 0, got);
    assert_memory_equal(got, ref, (size_t)g_n_vocab * sizeof(float));

    /* a truncated file: CS_ERR_FORMAT naming the offset; cache unchanged */
    snapshot sc;
    snap_take(c, &sc);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, (size_t)sb.st_size - 100, f), (size_t)sb.st_size - 100);
    fclose(f);
    assert_int_equal(cs_state_load_file(c, path, toks, 64, &n_tok), CS_ERR_FORMAT);
    assert_non_null(strstr(cs_last_error(), "offset"));
    assert_unchanged(c, &sc);
    /* a longer file: trailing bytes */
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, (size_t)sb.st_size, f), (size_t)sb.st_size);
    assert_int_equal(fwrite("x", 1, 1, f), 1);
    fclose(f);
    assert_int_equal(cs_state_load_file(c, path, toks, 64, &n_tok), CS_ERR_FORMAT);
    assert_unchanged(c, &sc);

    remove(path);
    snap_free(&sb3);
    snap_free(&sc);
    free(bytes);
    free(ref);
    free(got);
    cs_context_free(a);
    cs_context_free(b);
    cs_context_free(c);
}

static void test_state_missing_file_names_path(void **st) {
    (void)st;
    char path[1024];
    test_tmp_path("no-such-dir/state.cskv", path, sizeof path);
    cs_context *c = new_ctx(32, 1, CS_TYPE_F32);
    decode_prompt(c, 0, 0, 4);
    snapshot s;
    snap_take(c, &s);
    cs_token toks[8];
    int32_t n = 7;
    assert_int_equal(cs_state_load_file(c, path, toks, 8, &n), CS_ERR_IO);
    assert_non_null(strstr(cs_last_error(), path));
    assert_int_equal(n, 0);
    assert_unchanged(c, &s);
    /* saving into a missing directory fails too, naming the path */
    assert_int_equal(cs_state_save_file(c, path, toks, 0), CS_ERR_IO);
    assert_non_null(strstr(cs_last_error(), path));
    snap_free(&s);
    cs_context_free(c);
}

/* Spec §7 item 28: a save right after seq_add stores rotated K. Loading it
 * and decoding at the shifted position equals the run that called update()
 * and never saved. */
static void test_state_pending_shift_applied_before_save(void **st) {
    (void)st;
    const cs_pos delta = 9;
    cs_context *r = new_ctx(64, 1, CS_TYPE_F32);
    decode_prompt(r, 0, 0, N_PROMPT);
    assert_int_equal(cs_kv_seq_add(r, 0, -1, -1, delta), CS_OK);
    assert_int_equal(cs_kv_update(r), CS_OK);
    float *ref = new_logits(), *got = new_logits();
    decode_one(r, g_n_vocab, NEXT_TOK, N_PROMPT + delta, 0, ref);

    cs_context *a = new_ctx(64, 1, CS_TYPE_F32);
    decode_prompt(a, 0, 0, N_PROMPT);
    assert_int_equal(cs_kv_seq_add(a, 0, -1, -1, delta), CS_OK);
    cs_kv_info info;
    assert_int_equal(cs_kv_stats(a, &info), CS_OK);
    assert_int_equal(info.n_pending_shift, N_PROMPT);
    size_t n = 0;
    uint8_t *buf = save_whole(a, &n);
    assert_int_equal(cs_kv_stats(a, &info), CS_OK);
    assert_int_equal(info.n_pending_shift, 0);

    cs_context *b = new_ctx(64, 1, CS_TYPE_F32);
    assert_int_equal(cs_state_load(b, buf, n), CS_OK);
    assert_int_equal(cs_kv_seq_pos_min(b, 0), delta);
    assert_int_equal(cs_kv_seq_pos_max(b, 0), N_PROMPT - 1 + delta);
    assert_int_equal(cs_kv_stats(b, &info), CS_OK);
    assert_int_equal(info.n_pending_shift, 0);
    decode_one(b, g_n_vocab, NEXT_TOK, N_PROMPT + delta, 0, got);
    assert_memory_equal(got, ref, (size_t)g_n_vocab * sizeof(float));

    free(buf);
    free(ref);
    free(got);
    cs_context_free(r);
    cs_context_free(a);
    cs_context_free(b);
}

#define FRAG_LEN 8
#define FRAG_CTX (3 * FRAG_LEN + 2) /* after removing seq 1 no run of FRAG_LEN free cells */

/* Decode FRAG_LEN tokens for each of sequences 0, 1, 2, interleaved cell
 * by cell (0 1 2 0 1 2 ...). Sequence s gets the prompt shifted by s. */
static void decode_interleaved(cs_context *c) {
    cs_batch *b;
    assert_int_equal(cs_batch_new(3 * FRAG_LEN, 1, &b), CS_OK);
    for (int32_t i = 0; i < FRAG_LEN; i++)
        for (cs_seq s = 0; s < 3; s++)
            assert_int_equal(cs_batch_add(b, k_prompt[i + s], i, &s, 1, false), CS_OK);
    assert_int_equal(cs_decode(c, b), 0);
    cs_batch_free(b);
}

/* FIX 21 / llama.cpp test-state-restore-fragmented: save sequence 1 of an
 * interleaved cache, remove it, restore it (as 1, and as 3 elsewhere), and
 * decode one more token: logits equal the uninterrupted run. */
static void test_state_seq_restore_fragmented(void **st) {
    (void)st;
    const cs_token next = k_prompt[FRAG_LEN + 1];
    float *ref = new_logits(), *got = new_logits();
    cs_context *r = new_ctx(FRAG_CTX, 4, CS_TYPE_F32);
    decode_interleaved(r);
    decode_one(r, g_n_vocab, next, FRAG_LEN, 1, ref);

    cs_context *a = new_ctx(FRAG_CTX, 4, CS_TYPE_F32);
    decode_interleaved(a);
    size_t n = 0;
    uint8_t *buf = save_seq(a, 1, &n);
    assert_int_equal(n, DOC_HEADER_BYTES +
                            FRAG_LEN * (DOC_POS_BYTES + (size_t)cs_model_n_layer(g_model) * 2 *
                                                            embd_kv(g_model) * sizeof(float)));
    assert_int_equal(cs_kv_seq_rm(a, 1, -1, -1), CS_OK);
    cs_kv_info info;
    assert_int_equal(cs_kv_stats(a, &info), CS_OK);
    assert_int_equal(info.holes, FRAG_LEN);
    /* sequence 0 is not empty: refused, unchanged */
    snapshot s0;
    snap_take(a, &s0);
    assert_int_equal(cs_state_seq_load(a, 0, buf, n), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_state_seq_load(a, 4, buf, n), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_state_seq_load(a, -1, buf, n), CS_ERR_INVALID_ARG);
    assert_unchanged(a, &s0);
    /* the whole-cache loader refuses a sequence state */
    assert_int_equal(cs_state_load(a, buf, n), CS_ERR_INVALID_ARG);
    assert_unchanged(a, &s0);

    assert_int_equal(cs_state_seq_load(a, 1, buf, n), CS_OK);
    assert_consistent(a, 4);
    assert_int_equal(cs_kv_used_cells(a), 3 * FRAG_LEN);
    assert_int_equal(cs_kv_seq_pos_min(a, 1), 0);
    assert_int_equal(cs_kv_seq_pos_max(a, 1), FRAG_LEN - 1);
    decode_one(a, g_n_vocab, next, FRAG_LEN, 1, got);
    assert_true(rel_diff(got, ref, g_n_vocab) <= TOL_RESTORED);

    /* as sequence 3 into another fragmented context */
    cs_context *b = new_ctx(FRAG_CTX, 4, CS_TYPE_F32);
    decode_interleaved(b);
    assert_int_equal(cs_kv_seq_rm(b, 1, -1, -1), CS_OK);
    assert_int_equal(cs_state_seq_load(b, 3, buf, n), CS_OK);
    assert_consistent(b, 4);
    assert_int_equal(cs_kv_seq_pos_max(b, 1), -1);
    assert_int_equal(cs_kv_seq_pos_max(b, 3), FRAG_LEN - 1);
    decode_one(b, g_n_vocab, next, FRAG_LEN, 3, got);
    assert_true(rel_diff(got, ref, g_n_vocab) <= TOL_RESTORED);

    /* no room: CS_NO_KV_SLOT, unchanged (b keeps 3 free cells, the state needs 8) */
    assert_int_equal(cs_kv_seq_rm(b, 3, -1, -1), CS_OK);
    decode_prompt(b, 1, 0, FRAG_LEN - 1);
    snapshot sb;
    snap_take(b, &sb);
    assert_int_equal(cs_state_seq_load(b, 3, buf, n), CS_NO_KV_SLOT);
    assert_unchanged(b, &sb);

    snap_free(&s0);
    snap_free(&sb);
    free(buf);
    free(ref);
    free(got);
    cs_context_free(r);
    cs_context_free(a);
    cs_context_free(b);
}

/* Spec FIX 8: holes are not saved; a whole load compacts to [0, used). */
static void test_state_holes_not_saved_load_compacts(void **st) {
    (void)st;
    cs_context *a = new_ctx(FRAG_CTX, 4, CS_TYPE_F32);
    decode_interleaved(a);
    assert_int_equal(cs_kv_seq_rm(a, 1, -1, -1), CS_OK);
    assert_int_equal(cs_kv_seq_cp(a, 0, 3, 2, 5), CS_OK); /* some shared cells */
    snapshot sa;
    snap_take(a, &sa);
    const size_t per_cell =
        DOC_POS_BYTES + DOC_SEQ_BYTES +
        (size_t)cs_model_n_layer(g_model) * 2 * embd_kv(g_model) * sizeof(float);
    assert_int_equal(cs_state_size(a), DOC_HEADER_BYTES + 2 * FRAG_LEN * per_cell);
    size_t n = 0;
    uint8_t *buf = save_whole(a, &n);

    cs_context *b = new_ctx(FRAG_CTX, 4, CS_TYPE_F32);
    assert_int_equal(cs_state_load(b, buf, n), CS_OK);
    snapshot sb;
    snap_take(b, &sb);
    int32_t j = 0;
    for (int32_t i = 0; i < sa.size; i++) {
        if (sa.cells[i].seq == 0) continue;
        assert_int_equal(sb.cells[j].pos, sa.cells[i].pos);
        assert_int_equal(sb.cells[j].seq, sa.cells[i].seq);
        j++;
    }
    assert_int_equal(j, 2 * FRAG_LEN);
    for (; j < sb.size; j++) assert_int_equal(sb.cells[j].seq, 0);
    assert_int_equal(sb.tokens, sa.tokens);
    assert_memory_equal(sb.pos_max, sa.pos_max, sizeof sa.pos_max);

    /* the next token of sequence 2 agrees with the fragmented original */
    float *ref = new_logits(), *got = new_logits();
    decode_one(a, g_n_vocab, NEXT_TOK, FRAG_LEN, 2, ref);
    decode_one(b, g_n_vocab, NEXT_TOK, FRAG_LEN, 2, got);
    assert_true(rel_diff(got, ref, g_n_vocab) <= TOL_RESTORED);

    /* a context with fewer cells than the state: refused by name */
    cs_context *small = new_ctx(2 * FRAG_LEN - 1, 4, CS_TYPE_F32);
    assert_int_equal(cs_state_load(small, buf, n), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "cells"));
    assert_int_equal(cs_kv_used_cells(small), 0);
    /* a context with fewer sequences than the state's bits */
    cs_context *two = new_ctx(64, 2, CS_TYPE_F32);
    assert_int_equal(cs_state_load(two, buf, n), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "sequence"));
    assert_int_equal(cs_kv_used_cells(two), 0);

    snap_free(&sa);
    snap_free(&sb);
    free(buf);
    free(ref);
    free(got);
    cs_context_free(a);
    cs_context_free(b);
    cs_context_free(small);
    cs_context_free(two);
}

/* Every prefix of a saved state fails with CS_ERR_FORMAT (or another
 * error) and leaves the target as it was; the full state loads. */
static void check_truncations(cs_context *target, const uint8_t *buf, size_t n, bool seq,
                              cs_seq dst) {
    snapshot before;
    snap_take(target, &before);
    size_t step = n <= ALL_PREFIXES_MAX ? 1 : PREFIX_STRIDE;
    for (size_t len = 0; len < n; len += step) {
        cs_status s =
            seq ? cs_state_seq_load(target, dst, buf, len) : cs_state_load(target, buf, len);
        assert_int_equal(s, CS_ERR_FORMAT);
        assert_non_null(strstr(cs_last_error(), "offset"));
        assert_unchanged(target, &before);
    }
    snap_free(&before);
}

/* 500 random byte flips: each load fails with the target unchanged, or
 * succeeds with a consistent cache (then the target is put back). */
static void check_flips(cs_context *target, const uint8_t *buf, size_t n, bool seq, cs_seq dst,
                        const uint8_t *restore, size_t n_restore, uint64_t seed) {
    snapshot before;
    snap_take(target, &before);
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    int n_ok = 0, n_err = 0;
    for (int k = 0; k < N_FLIPS; k++) {
        memcpy(copy, buf, n);
        /* half of the flips aimed at the header and cell metadata region */
        size_t at = (size_t)(rng_next(&seed) % (k % 2 ? n : (n < 200 ? n : 200)));
        copy[at] ^= (uint8_t)(1 + rng_next(&seed) % 255);
        cs_status s =
            seq ? cs_state_seq_load(target, dst, copy, n) : cs_state_load(target, copy, n);
        if (s == CS_OK) {
            n_ok++;
            assert_consistent(target, 4);
            if (seq)
                assert_int_equal(cs_kv_seq_rm(target, dst, -1, -1), CS_OK);
            else
                assert_int_equal(cs_state_load(target, restore, n_restore), CS_OK);
            assert_unchanged(target, &before);
        } else {
            n_err++;
            assert_true(s < 0 || s == CS_NO_KV_SLOT);
            assert_unchanged(target, &before);
        }
    }
    assert_int_equal(n_ok + n_err, N_FLIPS);
    assert_true(n_err > 0); /* header flips must be caught */
    free(copy);
    snap_free(&before);
}

static void test_state_truncation_and_flips_are_atomic(void **st) {
    (void)st;
    /* source: two sequences, shared cells, a pending shift */
    cs_context *src = new_ctx(32, 2, CS_TYPE_F32);
    decode_prompt(src, 0, 0, 6);
    assert_int_equal(cs_kv_seq_cp(src, 0, 1, 0, 3), CS_OK);
    decode_prompt(src, 1, 3, 2);
    assert_int_equal(cs_kv_seq_add(src, 0, 3, -1, 2), CS_OK);
    size_t n = 0, n_seq = 0, n_t = 0;
    uint8_t *whole = save_whole(src, &n);
    uint8_t *seq1 = save_seq(src, 1, &n_seq);

    /* target: different content, sequences 0 and 1, 1 empty for seq loads */
    cs_context *t = new_ctx(32, 2, CS_TYPE_F32);
    decode_prompt(t, 0, 0, 9);
    uint8_t *t_state = save_whole(t, &n_t);
    float *ref = new_logits(), *got = new_logits();
    {
        cs_context *u = new_ctx(32, 2, CS_TYPE_F32);
        decode_prompt(u, 0, 0, 9);
        decode_one(u, g_n_vocab, NEXT_TOK, 9, 0, ref);
        cs_context_free(u);
    }

    check_truncations(t, whole, n, false, 0);
    check_truncations(t, seq1, n_seq, true, 1);
    check_flips(t, whole, n, false, 0, t_state, n_t, 0x5eed0001ull);
    check_flips(t, seq1, n_seq, true, 1, t_state, n_t, 0x5eed0002ull);

    /* trailing bytes and NULL buffers */
    snapshot before;
    snap_take(t, &before);
    uint8_t *longer = calloc(n + 1, 1);
    assert_non_null(longer);
    memcpy(longer, whole, n);
    assert_int_equal(cs_state_load(t, longer, n + 1), CS_ERR_FORMAT);
    assert_non_null(strstr(cs_last_error(), "trailing"));
    assert_int_not_equal(cs_state_load(t, NULL, 0), CS_OK);
    assert_int_not_equal(cs_state_load(t, NULL, 10), CS_OK);
    assert_int_not_equal(cs_state_load(NULL, whole, n), CS_OK);
    assert_unchanged(t, &before);

    /* targeted fields */
    struct {
        size_t off;
        uint8_t val;
        cs_status want;
        const char *needle;
    } cases[] = {
        {0, 0x01, CS_ERR_INVALID_ARG, "magic"},
        {4, 7, CS_ERR_INVALID_ARG, "version"},
        {8, 9, CS_ERR_FORMAT, "kind"},
        {12, 3, CS_ERR_INVALID_ARG, "n_layer"},
        {44, 0x77, CS_ERR_INVALID_ARG, "weights_hash"},
        {48, 0x01, CS_ERR_INVALID_ARG, "type_k"}, /* f32 -> f16 */
        {56, 1, CS_ERR_FORMAT, "row_k"},
        {DOC_HEADER_BYTES + 3, 0x80, CS_ERR_FORMAT, "position"},
        {DOC_HEADER_BYTES + 4, 0x04, CS_ERR_INVALID_ARG, "sequence bits"}, /* id 2 of 2 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(longer, whole, n);
        longer[cases[i].off] ^= cases[i].val;
        assert_int_equal(cs_state_load(t, longer, n), cases[i].want);
        assert_non_null(strstr(cs_last_error(), cases[i].needle));
        assert_unchanged(t, &before);
    }
    /* an empty sequence set in a whole state */
    memcpy(longer, whole, n);
    memset(longer + DOC_HEADER_BYTES + 4, 0, 8);
    assert_int_equal(cs_state_load(t, longer, n), CS_ERR_FORMAT);
    assert_unchanged(t, &before);

    /* after all of that, the target's K/V are untouched too */
    decode_one(t, g_n_vocab, NEXT_TOK, 9, 0, got);
    assert_memory_equal(got, ref, (size_t)g_n_vocab * sizeof(float));

    snap_free(&before);
    free(longer);
    free(whole);
    free(seq1);
    free(t_state);
    free(ref);
    free(got);
    cs_context_free(src);
    cs_context_free(t);
}

/* A state of the bundled model into a tiny-model context, and across
 * weights of the same shape: refused, naming the fingerprint field. */
static void test_state_mismatched_model_refused(void **st) {
    (void)st;
    cs_model *tiny = load_tiny(CS_TYPE_F32);
    cs_model *tiny16 = load_tiny(CS_TYPE_F16);
    cs_context *a = new_ctx(32, 1, CS_TYPE_F32);
    decode_prompt(a, 0, 0, 5);
    size_t n = 0;
    uint8_t *buf = save_whole(a, &n);

    cs_context *t = new_ctx_on(tiny, 32, 1, CS_TYPE_F32);
    decode_prompt(t, 0, 0, 3);
    snapshot s;
    snap_take(t, &s);
    assert_int_equal(cs_state_load(t, buf, n), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "fingerprint"));
    assert_non_null(strstr(cs_last_error(), "n_layer"));
    assert_unchanged(t, &s);

    /* same shape, other weights (F16 copy of the tiny model) */
    size_t nt = 0;
    uint8_t *tbuf = save_whole(t, &nt);
    cs_context *t16 = new_ctx_on(tiny16, 32, 1, CS_TYPE_F32);
    assert_int_equal(cs_state_load(t16, tbuf, nt), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "fingerprint"));
    assert_non_null(strstr(cs_last_error(), "weights_hash"));
    assert_int_equal(cs_kv_used_cells(t16), 0);

    /* same model, other cache type */
    cs_context *h = new_ctx(32, 1, CS_TYPE_F16);
    assert_int_equal(cs_state_load(h, buf, n), CS_ERR_INVALID_ARG);
    assert_non_null(strstr(cs_last_error(), "type"));
    assert_int_equal(cs_kv_used_cells(h), 0);

    /* a tiny-model round trip works, sequence states included */
    float *ref = new_logits(), *got = new_logits();
    cs_context *t2 = new_ctx_on(tiny, 32, 2, CS_TYPE_F32);
    size_t ns = 0;
    uint8_t *sbuf = save_seq(t, 0, &ns);
    assert_int_equal(cs_state_seq_load(t2, 1, sbuf, ns), CS_OK);
    decode_one(t, cs_model_n_vocab(tiny), NEXT_TOK, 3, 0, ref);
    decode_one(t2, cs_model_n_vocab(tiny), NEXT_TOK, 3, 1, got);
    assert_memory_equal(got, ref, (size_t)cs_model_n_vocab(tiny) * sizeof(float));

    snap_free(&s);
    free(buf);
    free(tbuf);
    free(sbuf);
    free(ref);
    free(got);
    cs_context_free(a);
    cs_context_free(t);
    cs_context_free(t16);
    cs_context_free(t2);
    cs_context_free(h);
    cs_model_free(tiny);
    cs_model_free(tiny16);
}

static void test_state_too_small_buffer(void **st) {
    (void)st;
    cs_context *a = new_ctx(32, 2, CS_TYPE_F32);
    decode_prompt(a, 0, 0, 5);
    const size_t need = cs_state_size(a);
    assert_int_equal(need, DOC_HEADER_BYTES + 5 * (DOC_POS_BYTES + DOC_SEQ_BYTES +
                                                   (size_t)cs_model_n_layer(g_model) * 2 *
                                                       embd_kv(g_model) * sizeof(float)));
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    size_t written = 99;
    assert_int_equal(cs_state_save(a, buf, need - 1, &written), CS_ERR_INVALID_ARG);
    assert_int_equal(written, 0);
    assert_non_null(strstr(cs_last_error(), "too small"));
    assert_int_equal(cs_state_save(a, NULL, 0, &written), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_state_save(NULL, buf, need, &written), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_state_seq_save(a, 0, buf, cs_state_seq_size(a, 0) - 1, &written),
                     CS_ERR_INVALID_ARG);
    assert_int_equal(cs_state_seq_save(a, 2, buf, need, &written), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_state_seq_save(a, -1, buf, need, &written), CS_ERR_INVALID_ARG);
    assert_int_equal(cs_state_seq_size(a, 2), 0);
    assert_int_equal(cs_state_size(NULL), 0);
    /* an empty sequence saves as a header alone and loads as nothing */
    assert_int_equal(cs_state_seq_size(a, 1), DOC_HEADER_BYTES);
    assert_int_equal(cs_state_seq_save(a, 1, buf, need, &written), CS_OK);
    assert_int_equal(written, DOC_HEADER_BYTES);
    assert_int_equal(cs_state_seq_load(a, 1, buf, written), CS_OK);
    assert_int_equal(cs_kv_used_cells(a), 5);
    /* an empty cache too */
    cs_context *e = new_ctx(32, 2, CS_TYPE_F32);
    assert_int_equal(cs_state_size(e), DOC_HEADER_BYTES);
    assert_int_equal(cs_state_save(e, buf, need, &written), CS_OK);
    assert_int_equal(cs_state_load(a, buf, written), CS_OK);
    assert_int_equal(cs_kv_used_cells(a), 0);
    free(buf);
    cs_context_free(a);
    cs_context_free(e);
}

/* F16 cache: rows are copied byte for byte, so the round trip is exact. */
/* No cell may hold INT32_MAX (CS_POS_MAX is the largest position): an open
 * range end must reach every cell. Found by tests/fuzz/fuzz_state.c: a
 * sequence state with a cell at INT32_MAX loaded, and seq_rm(s, -1, -1)
 * could not empty the sequence afterwards. */
static void test_state_position_limit(void **st) {
    (void)st;
    cs_context *c = new_ctx(64, 2, CS_TYPE_F32);
    decode_prompt(c, 0, 0, N_PROMPT);
    size_t n = 0;
    uint8_t *buf = save_seq(c, 0, &n);
    /* the first cell's position (docs/STATE.md: positions follow the header) */
    uint32_t pos0;
    memcpy(&pos0, buf + DOC_HEADER_BYTES, 4);
    assert_int_equal(pos0, 0);
    const uint32_t too_far = (uint32_t)INT32_MAX, last = (uint32_t)CS_POS_MAX;
    memcpy(buf + DOC_HEADER_BYTES, &too_far, 4);
    snapshot s0;
    snap_take(c, &s0);
    assert_int_equal(cs_state_seq_load(c, 1, buf, n), CS_ERR_FORMAT);
    assert_non_null(strstr(cs_last_error(), "2147483647"));
    assert_unchanged(c, &s0);
    /* the largest position loads, and an open range removes it */
    memcpy(buf + DOC_HEADER_BYTES, &last, 4);
    assert_int_equal(cs_state_seq_load(c, 1, buf, n), CS_OK);
    assert_int_equal(cs_kv_seq_pos_max(c, 1), CS_POS_MAX);
    assert_int_equal(cs_kv_seq_rm(c, 1, -1, -1), CS_OK);
    assert_int_equal(cs_kv_seq_pos_max(c, 1), -1);
    assert_unchanged(c, &s0);
    snap_free(&s0);
    free(buf);
    /* decode refuses INT32_MAX; seq_add saturates at CS_POS_MAX */
    cs_batch *b;
    assert_int_equal(cs_batch_new(1, 1, &b), CS_OK);
    const cs_seq s1 = 1;
    assert_int_equal(cs_batch_add(b, k_prompt[0], INT32_MAX, &s1, 1, true), CS_OK);
    assert_true(cs_decode(c, b) < 0);
    assert_non_null(strstr(cs_last_error(), "above CS_POS_MAX = 2147483646"));
    cs_batch_clear(b);
    assert_int_equal(cs_batch_add(b, k_prompt[0], CS_POS_MAX - 1, &s1, 1, true), CS_OK);
    assert_int_equal(cs_decode(c, b), 0);
    assert_int_equal(cs_kv_seq_add(c, 1, -1, -1, 10), CS_OK);
    assert_int_equal(cs_kv_seq_pos_max(c, 1), CS_POS_MAX);
    assert_int_equal(cs_kv_seq_rm(c, 1, -1, -1), CS_OK);
    assert_int_equal(cs_kv_seq_pos_max(c, 1), -1);
    cs_batch_free(b);
    cs_context_free(c);
}

static void test_state_f16_cache_round_trip(void **st) {
    (void)st;
    cs_context *a = new_ctx(64, 1, CS_TYPE_F16);
    decode_prompt(a, 0, 0, N_PROMPT);
    assert_int_equal(cs_kv_seq_add(a, 0, -1, -1, 4), CS_OK);
    assert_int_equal(cs_state_size(a),
                     DOC_HEADER_BYTES + (size_t)N_PROMPT * (DOC_POS_BYTES + DOC_SEQ_BYTES +
                                                            (size_t)cs_model_n_layer(g_model) * 2 *
                                                                embd_kv(g_model) * 2));
    size_t n = 0;
    uint8_t *buf = save_whole(a, &n);
    float *ref = new_logits(), *got = new_logits();
    decode_one(a, g_n_vocab, NEXT_TOK, N_PROMPT + 4, 0, ref);
    cs_context *b = new_ctx(64, 1, CS_TYPE_F16);
    assert_int_equal(cs_state_load(b, buf, n), CS_OK);
    decode_one(b, g_n_vocab, NEXT_TOK, N_PROMPT + 4, 0, got);
    assert_memory_equal(got, ref, (size_t)g_n_vocab * sizeof(float));
    /* an F32 context refuses it */
    cs_context *c = new_ctx(64, 1, CS_TYPE_F32);
    assert_int_equal(cs_state_load(c, buf, n), CS_ERR_INVALID_ARG);
    free(buf);
    free(ref);
    free(got);
    cs_context_free(a);
    cs_context_free(b);
    cs_context_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_roundtrip_buffer_bit_exact),
        cmocka_unit_test(test_state_roundtrip_file_tokens),
        cmocka_unit_test(test_state_missing_file_names_path),
        cmocka_unit_test(test_state_pending_shift_applied_before_save),
        cmocka_unit_test(test_state_seq_restore_fragmented),
        cmocka_unit_test(test_state_holes_not_saved_load_compacts),
        cmocka_unit_test(test_state_truncation_and_flips_are_atomic),
        cmocka_unit_test(test_state_mismatched_model_refused),
        cmocka_unit_test(test_state_too_small_buffer),
        cmocka_unit_test(test_state_f16_cache_round_trip),
        cmocka_unit_test(test_state_position_limit),
    };
    return test_run(tests, setup, teardown);
}
