/* test_model.c: llama hyper-parameters and tensor binding. Valid files
 * (every stories260K variant) load with the right shape; model-level
 * defects in otherwise well-formed GGUF files (built from the bundled model
 * with one thing changed) give the right status and a message naming the
 * key or tensor. */
#include "test.h"

#include <math.h>

#include "gguf.h"
#include "kernels/matmul.h"
#include "model.h"
#include "types.h"

static void test_model_load_variants(void **s) {
    (void)s;
    static const char *const files[] = {"stories260K-f32.gguf", "stories260K-f16.gguf",
                                        "stories260K-q8_0.gguf", "stories260K-q4_0.gguf"};
    static const char *const descs[] = {"f32", "f16", "q8_0", "q4_0"};
    for (size_t i = 0; i < 4; i++) {
        char rel[128], path[1024];
        snprintf(rel, sizeof rel, "models/%s", files[i]);
        const char *p = i == 0 ? test_bundled_model() : test_shared_path(rel, path, sizeof path);
        if (!p) continue;
        cs_model *m = NULL;
        assert_int_equal(cs_model_load(p, NULL, &m), CS_OK);
        assert_int_equal(cs_model_n_vocab(m), 512);
        assert_int_equal(cs_model_n_embd(m), 64);
        assert_int_equal(cs_model_n_layer(m), 5);
        assert_int_equal(cs_model_n_head(m), 8);
        assert_int_equal(cs_model_n_head_kv(m), 4);
        assert_int_equal(cs_model_n_ctx_train(m), 2048);
        assert_int_equal(cs_token_bos(m), 1);
        assert_int_equal(cs_token_eos(m), 2);
        char d[64];
        cs_model_desc(m, d, sizeof d);
        if (!strstr(d, descs[i])) print_message("description '%s' lacks '%s'\n", d, descs[i]);
        assert_non_null(strstr(d, descs[i]));
        assert_true(cs_model_n_params(m) > 250000 && cs_model_n_params(m) < 300000);
        /* decode bytes: all weights but the embedding, of which one row */
        gguf_file *g = NULL;
        assert_int_equal(gguf_open(p, &g), CS_OK);
        const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
        assert_non_null(te);
        const uint64_t row = te->nbytes / 512;
        const uint64_t want = gguf_find_tensor(g, "output.weight")
                                  ? cs_model_size(m) - te->nbytes + row
                                  : cs_model_size(m) + row;
        assert_int_equal(cs_model_decode_bytes(m), want);
        gguf_close(g);
        cs_model_free(m);
    }
}

/* ------------------------------------------------------- weight packing */

static uint8_t *read_whole(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    uint8_t *b = malloc((size_t)n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

/* Logits of a 24-token prompt, last token, with the given load params;
 * n_shared of the packable weights share their bytes with another tensor
 * (and so stay unpacked). */
static float *packed_logits_n(const char *path, bool repack, bool use_mmap, uint8_t **state,
                              size_t *state_size, int n_shared) {
    cs_model_params mp = cs_model_default_params();
    mp.repack = repack;
    mp.use_mmap = use_mmap;
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(path, &mp, &m), CS_OK);
    /* every matmul weight that fits is packed where the kernels use x16:
     * stories260K's 4 attention matrices x 5 layers + output (its FFN
     * width 172 is not a multiple of 16 or 32, so the FFN stays row-major) */
    const bool native = matmul_x16_native(kernels_best(), m->layers[0].wq.type);
    assert_int_equal(m->n_packed, repack && native ? 5 * 4 + 1 - n_shared : 0);
    assert_int_equal(m->layers[0].w_up.layout, CS_LAYOUT_ROWS);
    /* the packed weights live in the model's arena, 64-byte aligned, the
     * arena 2 MiB aligned (mem_huge_alloc) */
    const model_weight *pw[] = {&m->layers[1].wq, &m->layers[4].wo, &m->output};
    for (size_t i = 0; i < sizeof pw / sizeof pw[0] && m->n_packed > 0; i++) {
        const uint8_t *d = pw[i]->data, *a = m->packed;
        assert_int_equal(pw[i]->layout, CS_LAYOUT_X16);
        assert_true(d >= a && d < a + m->packed_bytes);
        assert_int_equal((uintptr_t)d % 64, 0);
    }
    assert_int_equal((uintptr_t)m->packed % (2u << 20), 0);
    assert_true(m->n_packed > 0 || m->packed == NULL);
    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    cs_context *c = NULL;
    assert_int_equal(cs_context_new(m, &cp, &c), CS_OK);
    cs_batch *b = NULL;
    assert_int_equal(cs_batch_new(24, 1, &b), CS_OK);
    const cs_seq seq = 0;
    for (int32_t i = 0; i < 24; i++)
        assert_int_equal(cs_batch_add(b, (cs_token)(1 + (i * 37) % 500), i, &seq, 1, i == 23),
                         CS_OK);
    assert_int_equal(cs_decode(c, b), 0);
    const float *l = cs_get_logits_ith(c, 23);
    assert_non_null(l);
    float *out = malloc(512 * sizeof *out);
    assert_non_null(out);
    memcpy(out, l, 512 * sizeof *out);
    if (state) {
        *state_size = cs_state_size(c);
        *state = malloc(*state_size);
        assert_non_null(*state);
        size_t written = 0;
        assert_int_equal(cs_state_save(c, *state, *state_size, &written), CS_OK);
        *state_size = written;
    }
    cs_batch_free(b);
    cs_context_free(c);
    cs_model_free(m);
    return out;
}

static float *packed_logits(const char *path, bool repack, bool use_mmap, uint8_t **state,
                            size_t *state_size) {
    return packed_logits_n(path, repack, use_mmap, state, state_size, 0);
}

/* The byte offset of tensor `name`'s data offset field in a GGUF image
 * (name as u64 length + bytes, u32 n_dims, u64 dims, u32 type, u64 offset). */
static size_t tensor_offset_field(const uint8_t *b, size_t n, const char *name) {
    const size_t len = strlen(name);
    for (size_t i = 8; i + len + 4 <= n; i++) {
        uint64_t l;
        memcpy(&l, b + i - 8, 8);
        if (l != len || memcmp(b + i, name, len) != 0) continue;
        uint32_t nd;
        memcpy(&nd, b + i + len, 4);
        return i + len + 4 + 8 * (size_t)nd + 4;
    }
    fail_msg("tensor %s not found", name);
    return 0;
}

/* A file whose two tensors of the same size share their bytes (blk.0's
 * attention output points at its query matrix): neither is packed, since
 * packing one gives back pages the other still reads (on the read() path
 * anonymous pages, which would read as zeros), and the logits equal the
 * unpacked model's bit for bit, with a mapped file and a heap copy. */
static void test_model_packing_shared_bytes(void **s) {
    (void)s;
    char path[1024];
    const char *p = test_shared_path("models/stories260K-q4_0.gguf", path, sizeof path);
    if (!p) return;
    size_t n = 0;
    uint8_t *b = read_whole(p, &n);
    const size_t q = tensor_offset_field(b, n, "blk.0.attn_q.weight");
    const size_t o = tensor_offset_field(b, n, "blk.0.attn_output.weight");
    memcpy(b + o, b + q, 8);
    const char *alias = CS_BINARY_DIR "/test_model_shared_bytes.gguf";
    FILE *f = fopen(alias, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    float *plain = packed_logits_n(alias, false, true, NULL, NULL, 0);
    float *heap = packed_logits_n(alias, true, false, NULL, NULL, 2);
    float *mapped = packed_logits_n(alias, true, true, NULL, NULL, 2);
    assert_memory_equal(plain, heap, 512 * sizeof(float));
    assert_memory_equal(plain, mapped, 512 * sizeof(float));
    remove(alias);
    free(b), free(plain), free(heap), free(mapped);
}

/* Packing the Q4_0 / Q8_0 weights at load (cs_model_params.repack) never
 * writes the file, gives the same logits as unpacked weights (bit for bit
 * for Q4_0; Q8_0 within the kernels' rounding), with a mapped file or a
 * heap copy, and keeps the state fingerprint: a state saved with packed
 * weights loads into a context of the unpacked model. */
static void test_model_packing(void **s) {
    (void)s;
    static const char *const files[] = {"models/stories260K-q4_0.gguf",
                                        "models/stories260K-q8_0.gguf"};
    for (size_t i = 0; i < 2; i++) {
        char path[1024];
        const char *p = test_shared_path(files[i], path, sizeof path);
        if (!p) continue;
        size_t n0 = 0, n1 = 0, ns = 0;
        uint8_t *before = read_whole(p, &n0), *st = NULL;
        float *packed = packed_logits(p, true, true, &st, &ns);
        float *packed_heap = packed_logits(p, true, false, NULL, NULL);
        float *plain = packed_logits(p, false, true, NULL, NULL);
        uint8_t *after = read_whole(p, &n1);
        assert_int_equal(n0, n1);
        assert_memory_equal(before, after, n0);
        assert_memory_equal(packed, packed_heap, 512 * sizeof(float));
        for (int j = 0; j < 512; j++) {
            if (i == 0)
                assert_true(packed[j] == plain[j]);
            else
                assert_true(fabsf(packed[j] - plain[j]) <= 1e-4f * (1.0f + fabsf(plain[j])));
        }
        /* the fingerprint does not depend on packing */
        cs_model_params mp = cs_model_default_params();
        mp.repack = false;
        cs_model *m = NULL;
        assert_int_equal(cs_model_load(p, &mp, &m), CS_OK);
        cs_context_params cp = cs_context_default_params();
        cp.n_ctx = 64;
        cs_context *c = NULL;
        assert_int_equal(cs_context_new(m, &cp, &c), CS_OK);
        assert_int_equal(cs_state_load(c, st, ns), CS_OK);
        cs_context_free(c);
        cs_model_free(m);
        free(before), free(after), free(st), free(packed), free(packed_heap), free(plain);
    }
}

/* One per-token vector of a loaded model against its tensor in the file:
 * equal bytes always; outside the file's bytes exactly when `copied`. */
static void check_small_vector(const cs_model *m, const float *v, const char *name, bool copied) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    assert_non_null(t);
    assert_non_null(v);
    assert_memory_equal(v, t->data, (size_t)t->nbytes);
    const uint8_t *p = (const uint8_t *)(const void *)v, *d = (const uint8_t *)t->data;
    if (copied) {
        assert_non_null(m->small);
        assert_true(p != d);
    } else {
        assert_ptr_equal(p, d);
    }
}

/* When packing, the norms every token reads are copied out of the file
 * (model.c copy_small_vectors: their 2 MiB neighbourhood of a mapping is
 * given back, which kept large page-cache folios resident), with the file's
 * bytes; without packing they stay in the file. Mapped and heap copies. */
static void test_model_small_vectors_copied(void **s) {
    (void)s;
    char path[1024];
    const char *p = test_shared_path("models/stories260K-q4_0.gguf", path, sizeof path);
    if (!p) return;
    for (int mode = 0; mode < 3; mode++) {
        cs_model_params mp = cs_model_default_params();
        mp.repack = mode != 0;
        mp.use_mmap = mode != 2;
        cs_model *m = NULL;
        assert_int_equal(cs_model_load(p, &mp, &m), CS_OK);
        if (mode == 0) assert_null(m->small);
        char name[64];
        for (int32_t l = 0; l < m->hp.n_layer; l++) {
            snprintf(name, sizeof name, "blk.%d.attn_norm.weight", (int)l);
            check_small_vector(m, m->layers[l].attn_norm, name, mode != 0);
            snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", (int)l);
            check_small_vector(m, m->layers[l].ffn_norm, name, mode != 0);
        }
        check_small_vector(m, m->output_norm, "output_norm.weight", mode != 0);
        cs_model_free(m);
    }
}

/* ------------------------------------------------ variants of the model */

typedef struct variant {
    const char *drop_key; /* key not copied */
    const char *set_key;  /* key (re)set as u32 set_u32 / string set_str */
    uint32_t set_u32;
    const char *set_str;
    const char *drop_tensor;   /* tensor not copied */
    const char *retype_tensor; /* tensor written with type `type` (data re-sized) */
    int32_t type;
    const char *reshape_tensor; /* tensor written with ne[0] halved */
    const char *add_tensor;     /* an extra tensor of add_ne0 (0: 64) zeros of add_type */
    int64_t add_ne0;
    int32_t add_type;
    const char *base; /* the file copied; NULL: the bundled stories260K */
} variant;

static const char *write_variant(const variant *v, char *path, size_t size) {
    gguf_file *g = NULL;
    assert_int_equal(gguf_open(v->base ? v->base : test_bundled_model(), &g), CS_OK);
    gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), CS_OK);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *k = gguf_kv_key(g, i);
        if (v->drop_key && !strcmp(k, v->drop_key)) continue;
        assert_int_equal(gguf_writer_copy_kv(w, g, i), CS_OK);
    }
    if (v->set_key) {
        if (v->set_str)
            assert_int_equal(gguf_writer_set_str(w, v->set_key, v->set_str), CS_OK);
        else
            assert_int_equal(gguf_writer_set_u32(w, v->set_key, v->set_u32), CS_OK);
    }
    static uint8_t zeros[1 << 20];
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (v->drop_tensor && !strcmp(t->name, v->drop_tensor)) continue;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        int32_t type = t->type;
        const void *data = t->data;
        uint64_t nbytes = t->nbytes;
        if (v->retype_tensor && !strcmp(t->name, v->retype_tensor)) type = v->type;
        if (v->reshape_tensor && !strcmp(t->name, v->reshape_tensor)) ne[0] /= 2;
        if (type != t->type || ne[0] != t->ne[0]) {
            uint64_t row;
            assert_true(type_row_size(type, ne[0], &row));
            nbytes = row * (uint64_t)(ne[1] * ne[2] * ne[3]);
            assert_true(nbytes <= sizeof zeros);
            data = zeros;
        }
        assert_int_equal(gguf_writer_add_tensor(w, t->name, type, t->n_dims, ne, data, nbytes),
                         CS_OK);
    }
    if (v->add_tensor) {
        int64_t ne[1] = {v->add_ne0 ? v->add_ne0 : 64};
        uint64_t nbytes = 0;
        assert_true(type_row_size(v->add_type, ne[0], &nbytes));
        assert_int_equal(
            gguf_writer_add_tensor(w, v->add_tensor, v->add_type, 1, ne, zeros, nbytes), CS_OK);
    }
    test_tmp_path("variant.gguf", path, size);
    assert_int_equal(gguf_writer_write_file(w, path), CS_OK);
    gguf_writer_free(w);
    gguf_close(g);
    return path;
}

static void expect_load(const variant *v, cs_status want, const char *needle) {
    char path[1024];
    write_variant(v, path, sizeof path);
    cs_model *m = (cs_model *)1;
    cs_status st = cs_model_load(path, NULL, &m);
    if (st != want || (needle && !strstr(cs_last_error(), needle)))
        print_message("got %s: %s (wanted %s, '%s')\n", cs_status_str(st), cs_last_error(),
                      cs_status_str(want), needle ? needle : "");
    assert_int_equal(st, want);
    if (st == CS_OK)
        cs_model_free(m);
    else {
        assert_null(m);
        if (needle) assert_non_null(strstr(cs_last_error(), needle));
    }
    unlink(path);
}

static void test_model_variants(void **s) {
    (void)s;
    /* the unchanged copy loads */
    expect_load(&(variant){0}, CS_OK, NULL);
    expect_load(&(variant){.set_key = "general.architecture", .set_str = "gpt2"},
                CS_ERR_UNSUPPORTED, "gpt2");
    expect_load(&(variant){.drop_key = "general.architecture"}, CS_ERR_FORMAT,
                "general.architecture");
    expect_load(&(variant){.drop_key = "llama.block_count"}, CS_ERR_FORMAT, "llama.block_count");
    expect_load(&(variant){.set_key = "llama.block_count", .set_str = "five"}, CS_ERR_FORMAT,
                "llama.block_count");
    expect_load(&(variant){.set_key = "llama.block_count", .set_u32 = 0}, CS_ERR_FORMAT,
                "llama.block_count");
    expect_load(&(variant){.set_key = "llama.block_count", .set_u32 = 6}, CS_ERR_FORMAT,
                "blk.5.attn_norm.weight");
    expect_load(&(variant){.set_key = "llama.attention.head_count", .set_u32 = 7}, CS_ERR_FORMAT,
                "head_count");
    expect_load(&(variant){.set_key = "llama.attention.head_count_kv", .set_u32 = 3}, CS_ERR_FORMAT,
                "head_count_kv");
    expect_load(&(variant){.set_key = "llama.embedding_length", .set_u32 = 4000000000u},
                CS_ERR_FORMAT, "llama.embedding_length");
    expect_load(&(variant){.set_key = "llama.rope.dimension_count", .set_u32 = 9}, CS_ERR_FORMAT,
                "rope.dimension_count");
    expect_load(&(variant){.set_key = "llama.rope.scaling.type", .set_str = "yarn"},
                CS_ERR_UNSUPPORTED, "yarn");
    expect_load(&(variant){.drop_key = "llama.attention.layer_norm_rms_epsilon"}, CS_ERR_FORMAT,
                "layer_norm_rms_epsilon");
    expect_load(&(variant){.drop_tensor = "blk.2.ffn_up.weight"}, CS_ERR_FORMAT,
                "blk.2.ffn_up.weight");
    expect_load(&(variant){.reshape_tensor = "blk.1.attn_k.weight"}, CS_ERR_FORMAT,
                "blk.1.attn_k.weight");
    expect_load(&(variant){.retype_tensor = "blk.0.ffn_gate.weight", .type = 39 /* mxfp4 */},
                CS_ERR_UNSUPPORTED, "blk.0.ffn_gate.weight");
    expect_load(&(variant){.retype_tensor = "blk.0.attn_q.weight", .type = 39 /* mxfp4 */},
                CS_ERR_UNSUPPORTED, "mxfp4");
    expect_load(&(variant){.retype_tensor = "output_norm.weight", .type = CS_TYPE_F16},
                CS_ERR_UNSUPPORTED, "output_norm.weight");
    expect_load(&(variant){.add_tensor = "blk.0.attn_q.bias"}, CS_ERR_UNSUPPORTED,
                "blk.0.attn_q.bias");
    /* tied embeddings: no output.weight is fine */
    expect_load(&(variant){.drop_tensor = "output.weight"}, CS_OK, NULL);
    /* a vocab-only load of a model file works, a context on it does not */
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = true;
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(test_bundled_model(), &mp, &m), CS_OK);
    cs_context *c = (cs_context *)1;
    assert_int_equal(cs_context_new(m, NULL, &c), CS_ERR_UNSUPPORTED);
    assert_null(c);
    cs_model_free(m);
    /* missing files and bad arguments */
    assert_int_equal(cs_model_load("/nonexistent/x.gguf", NULL, &m), CS_ERR_IO);
    assert_non_null(strstr(cs_last_error(), "/nonexistent/x.gguf"));
    assert_int_equal(cs_model_load(NULL, NULL, &m), CS_ERR_INVALID_ARG);
}

/* The new keys and tensors of the families (llama 3, Mistral Nemo, qwen2),
 * and the refusals by name: each defect gives its status and a message
 * naming the field and the numbers. */
static void test_model_family_variants(void **s) {
    (void)s;
    /* stories260K: n_embd 64, 8 heads (head size 8), 4 KV heads, n_rot 8 */
    expect_load(&(variant){.set_key = "llama.expert_count", .set_u32 = 8}, CS_ERR_UNSUPPORTED,
                "llama.expert_count = 8: mixture-of-experts models are not supported");
    expect_load(&(variant){.set_key = "llama.expert_count", .set_u32 = 0}, CS_OK, NULL);
    expect_load(&(variant){.set_key = "general.architecture", .set_str = "phi3"},
                CS_ERR_UNSUPPORTED, "'phi3' is not supported (supported: llama, qwen2)");
    /* key_length 16 without value_length (which defaults to 64 / 8) */
    expect_load(&(variant){.set_key = "llama.attention.key_length", .set_u32 = 16},
                CS_ERR_UNSUPPORTED,
                "llama.attention.key_length 16 differs from llama.attention.value_length 8");
    expect_load(&(variant){.set_key = "llama.attention.key_length", .set_u32 = 0}, CS_ERR_FORMAT,
                "llama.attention.key_length' = 0 is outside [2, 131072]");
    expect_load(&(variant){.set_key = "llama.attention.value_length", .set_u32 = 4},
                CS_ERR_UNSUPPORTED, "key_length 8 differs from llama.attention.value_length 4");
    /* head size 4 < rope.dimension_count 8 */
    char kl4[1024];
    write_variant(&(variant){.set_key = "llama.attention.key_length", .set_u32 = 4}, kl4,
                  sizeof kl4);
    char kl4_base[1100];
    snprintf(kl4_base, sizeof kl4_base, "%s.base", kl4);
    assert_int_equal(rename(kl4, kl4_base), 0);
    expect_load(
        &(variant){.base = kl4_base, .set_key = "llama.attention.value_length", .set_u32 = 4},
        CS_ERR_FORMAT, "llama.rope.dimension_count' = 8 is outside [2, 4]");
    unlink(kl4_base);
    /* rope_freqs.weight: n_rot / 2 = 4 finite f32 factors > 0 */
    expect_load(&(variant){.add_tensor = "rope_freqs.weight"}, CS_ERR_FORMAT,
                "'rope_freqs.weight' has shape [64, 1, 1, 1], expected 4 factors (n_rot / 2, "
                "llama.rope.dimension_count 8)");
    expect_load(&(variant){.add_tensor = "rope_freqs.weight", .add_ne0 = 4}, CS_ERR_FORMAT,
                "'rope_freqs.weight': factor 0 is 0, not a finite number > 0");
    expect_load(
        &(variant){.add_tensor = "rope_freqs.weight", .add_ne0 = 4, .add_type = CS_TYPE_F16},
        CS_ERR_UNSUPPORTED, "'rope_freqs.weight' has type f16 (1); RoPE factors must be f32");

    /* a qwen2 file: 2 layers, n_embd 64, 4 heads, 2 KV heads, biases */
    char base[1024];
    cs_gen_model_params gp;
    memset(&gp, 0, sizeof gp);
    assert_true(cs_gen_model_preset("tiny", &gp));
    gp.vocab_path = test_bundled_model();
    gp.arch = "qwen2";
    test_tmp_path("qwen2-base.gguf", base, sizeof base);
    assert_int_equal(cs_gen_model_write(&gp, base), CS_OK);
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(base, NULL, &m), CS_OK);
    assert_int_equal(m->arch, MODEL_ARCH_QWEN2);
    assert_int_equal(m->hp.rope_mode, CS_ROPE_NEOX);
    assert_non_null(m->layers[1].bq);
    assert_non_null(m->layers[1].bk);
    assert_non_null(m->layers[1].bv);
    char desc[64];
    cs_model_desc(m, desc, sizeof desc);
    assert_non_null(strstr(desc, "qwen2"));
    cs_model_free(m);
    expect_load(&(variant){.base = base, .drop_tensor = "blk.0.attn_k.bias"}, CS_ERR_FORMAT,
                "missing tensor 'blk.0.attn_k.bias'");
    expect_load(&(variant){.base = base, .reshape_tensor = "blk.1.attn_v.bias"}, CS_ERR_FORMAT,
                "tensor 'blk.1.attn_v.bias' has shape [16, 1, 1, 1], expected [32, 1]");
    expect_load(&(variant){.base = base, .retype_tensor = "blk.0.attn_q.bias", .type = CS_TYPE_F16},
                CS_ERR_UNSUPPORTED, "bias tensor 'blk.0.attn_q.bias' has type f16");
    expect_load(&(variant){.base = base, .add_tensor = "blk.0.ffn_gate_inp.weight"},
                CS_ERR_UNSUPPORTED, "unexpected tensor 'blk.0.ffn_gate_inp.weight' for a qwen2");
    expect_load(&(variant){.base = base, .set_key = "qwen2.expert_count", .set_u32 = 60},
                CS_ERR_UNSUPPORTED, "qwen2.expert_count = 60: mixture-of-experts");
    /* key_length 32 with value_length 32: attn_q must be [64, 128] */
    variant kl = {.base = base, .set_key = "qwen2.attention.key_length", .set_u32 = 32};
    char kl_tmp[1024], kl_path[1100];
    write_variant(&kl, kl_tmp, sizeof kl_tmp);
    snprintf(kl_path, sizeof kl_path, "%s.base", kl_tmp);
    assert_int_equal(rename(kl_tmp, kl_path), 0);
    expect_load(
        &(variant){.base = kl_path, .set_key = "qwen2.attention.value_length", .set_u32 = 32},
        CS_ERR_FORMAT,
        "tensor 'blk.0.attn_q.weight' has shape [64, 64, 1, 1], expected "
        "[64, 128]");
    unlink(kl_path);
    unlink(base);
}

static void test_model_vocab_only_files(void **s) {
    (void)s;
    char path[1024];
    if (!test_shared_path("models/ggml-vocab-llama-spm.gguf", path, sizeof path))
        test_skip(CS_SKIP_REFERENCE, "%s/models/ggml-vocab-llama-spm.gguf not found",
                  CS_SHARED_DIR);
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = true;
    cs_model *m = NULL;
    assert_int_equal(cs_model_load(path, &mp, &m), CS_OK);
    assert_int_equal(cs_model_n_vocab(m), 32000);
    cs_model_free(m);
    /* without vocab_only it is refused with a clear message */
    assert_true(cs_model_load(path, NULL, &m) != CS_OK);
    assert_null(m);
}

/* Mistral Nemo's "tekken" pre-tokenizer is refused by name (no vocabulary
 * to test it against here): the gpt-2 vocabulary with pre = tekken. */
static void test_model_tekken_refused(void **s) {
    (void)s;
    char vocab[1024];
    if (!test_shared_path("models/ggml-vocab-gpt-2.gguf", vocab, sizeof vocab))
        test_skip(CS_SKIP_REFERENCE, "%s/models/ggml-vocab-gpt-2.gguf not found", CS_SHARED_DIR);
    char path[1024];
    write_variant(&(variant){.base = vocab, .set_key = "tokenizer.ggml.pre", .set_str = "tekken"},
                  path, sizeof path);
    cs_model_params mp = cs_model_default_params();
    mp.vocab_only = true;
    cs_model *m = (cs_model *)1;
    assert_int_equal(cs_model_load(path, &mp, &m), CS_ERR_UNSUPPORTED);
    assert_null(m);
    assert_non_null(strstr(cs_last_error(), "'tekken' pre-tokenizer"));
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_load_variants),
        cmocka_unit_test(test_model_packing),
        cmocka_unit_test(test_model_packing_shared_bytes),
        cmocka_unit_test(test_model_small_vectors_copied),
        cmocka_unit_test(test_model_variants),
        cmocka_unit_test(test_model_family_variants),
        cmocka_unit_test(test_model_tekken_refused),
        cmocka_unit_test(test_model_vocab_only_files),
    };
    return test_run(tests, NULL, NULL);
}
