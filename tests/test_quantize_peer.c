/* test_quantize_peer.c: `ctxshift quantize` (cs_model_quantize_threads)
 * against llama.cpp's own quantizer, llama_model_quantize of the libllama
 * node-llama-cpp 3.21.1 ships (release v0.4.0, loaded with dlopen from
 * CS_GGML_PEER_DIR), on generated models whose shapes exercise the rules:
 *  - every mix (qz_mixes: Q2_K ... IQ4_XS) without an importance matrix:
 *    the same general.file_type, the same tensors, every tensor of the
 *    same type and, since both write with ggml's reference quantizers,
 *    the same bytes;
 *  - `--pure` Q4_0 and Q8_0 against the plain types q4_0 and q8_0: the
 *    same types and bytes.
 * The models: SmolLM2's width 576 (not a multiple of 256: the K types
 * fall back) with GQA 3, tied; a 256-multiple llama with GQA 4, untied;
 * a tied qwen2 of 16 layers (use_more_bits and n/16 schedules) whose FFN
 * width 544 is a multiple of 32 but not of 256; and a llama whose FFN
 * width 200 fits no block (f16 fallback). Every difference is printed
 * before the test fails. Label peer (not run under ASan: llama.cpp is not
 * instrumented); skipped when the library is missing, a failure when
 * strict (CI, ../shared). */
#include "test.h"

#include <dlfcn.h>

#include "gguf.h"
#include "quantize_rules.h"

#define PEER_THREADS 2

/* llama.h (v0.4.0)'s struct llama_model_quantize_params, member for
 * member: llama_model_quantize_default_params returns it by value. */
typedef struct {
    int32_t nthread;
    int32_t ftype; /* enum llama_ftype */
    int32_t output_tensor_type;
    int32_t token_embedding_type;
    bool allow_requantize;
    bool quantize_output_tensor;
    bool only_copy;
    bool pure;
    bool keep_split;
    bool dry_run;
    const void *imatrix;
    const void *kv_overrides;
    const void *tt_overrides;
    const int32_t *prune_layers;
    size_t max_buf_size;
} peer_quantize_params;

static void *g_llama;
static peer_quantize_params (*g_default_params)(void);
static uint32_t (*g_quantize)(const char *in, const char *out, const peer_quantize_params *p);

/* llama.cpp's log callback: quiet (it logs every tensor). */
static void peer_log_quiet(int level, const char *text, void *user) {
    (void)level;
    (void)text;
    (void)user;
}

static int setup(void **state) {
    (void)state;
    void *ggml = dlopen(CS_GGML_PEER_DIR "/libggml.v0.4.0.so", RTLD_NOW | RTLD_GLOBAL);
    g_llama = dlopen(CS_GGML_PEER_DIR "/libllama.v0.4.0.so", RTLD_NOW | RTLD_GLOBAL);
    if (!ggml || !g_llama) return 0; /* each test skips */
    void (*load_all)(const char *dir);
    void (*backend_init)(void);
    *(void **)&load_all = dlsym(ggml, "ggml_backend_load_all_from_path");
    *(void **)&backend_init = dlsym(g_llama, "llama_backend_init");
    *(void **)&g_default_params = dlsym(g_llama, "llama_model_quantize_default_params");
    *(void **)&g_quantize = dlsym(g_llama, "llama_model_quantize");
    void (*log_set)(void (*cb)(int, const char *, void *), void *user);
    *(void **)&log_set = dlsym(g_llama, "llama_log_set");
    if (log_set) log_set(peer_log_quiet, NULL);
    if (load_all) load_all(CS_GGML_PEER_DIR);
    if (backend_init) backend_init();
    return 0;
}

static bool have_peer(void) {
    if (g_llama && g_default_params && g_quantize) return true;
    test_skip(CS_SKIP_REFERENCE, "libllama.v0.4.0.so not found in %s", CS_GGML_PEER_DIR);
    return false;
}

/* One generated model. */
typedef struct peer_model {
    const char *name;
    const char *arch; /* NULL: llama */
    int32_t n_embd, n_ff, n_layer, n_head, n_head_kv;
    bool tied;
} peer_model;

static const peer_model k_models[] = {
    {"smollm2ish", NULL, 576, 512, 8, 9, 3, true},
    {"gqa4", NULL, 256, 768, 8, 8, 2, false},
    {"qwen2", "qwen2", 320, 544, 16, 5, 1, true},
    {"ff200", NULL, 256, 200, 4, 4, 4, false},
};
#define N_MODELS (sizeof k_models / sizeof k_models[0])

static void peer_gen(const peer_model *pm, const char *path) {
    cs_gen_model_params p;
    assert_true(cs_gen_model_preset("tiny", &p));
    p.n_embd = pm->n_embd;
    p.n_ff = pm->n_ff;
    p.n_layer = pm->n_layer;
    p.n_head = pm->n_head;
    p.n_head_kv = pm->n_head_kv;
    p.tied_embeddings = pm->tied;
    p.arch = pm->arch;
    p.seed = 11;
    p.vocab_path = test_bundled_model();
    remove(path);
    assert_int_equal(cs_gen_model_write(&p, path), CS_OK);
}

/* Compare ours with theirs; print every difference; returns the count. */
static int peer_compare(const char *what, const char *ours_path, const char *theirs_path,
                        bool bytes) {
    gguf_file *a = NULL, *b = NULL;
    assert_int_equal(gguf_open(ours_path, &a), CS_OK);
    assert_int_equal(gguf_open(theirs_path, &b), CS_OK);
    int bad = 0;
    int64_t fa = -1, fb = -2;
    assert_int_equal(gguf_get_int(a, "general.file_type", &fa), CS_OK);
    assert_int_equal(gguf_get_int(b, "general.file_type", &fb), CS_OK);
    if (fa != fb) {
        print_message("%s: general.file_type %lld, llama.cpp %lld\n", what, (long long)fa,
                      (long long)fb);
        bad++;
    }
    if (gguf_n_tensors(a) != gguf_n_tensors(b)) {
        print_message("%s: %lld tensors, llama.cpp %lld\n", what, (long long)gguf_n_tensors(a),
                      (long long)gguf_n_tensors(b));
        bad++;
    }
    for (int64_t i = 0; i < gguf_n_tensors(b); i++) {
        const gguf_tensor *tb = gguf_tensor_at(b, i);
        const gguf_tensor *ta = gguf_find_tensor(a, tb->name);
        if (!ta) {
            print_message("%s: %s missing\n", what, tb->name);
            bad++;
        } else if (ta->type != tb->type) {
            print_message("%s: %-28s ne0 %5lld: ours %s, llama.cpp %s\n", what, tb->name,
                          (long long)tb->ne[0], cs_type_name(ta->type), cs_type_name(tb->type));
            bad++;
        } else if (bytes && (ta->nbytes != tb->nbytes ||
                             memcmp(ta->data, tb->data, (size_t)ta->nbytes) != 0)) {
            print_message("%s: %-28s %s: bytes differ\n", what, tb->name, cs_type_name(ta->type));
            bad++;
        }
    }
    gguf_close(a);
    gguf_close(b);
    return bad;
}

/* Quantize `src` both ways: llama.cpp with ftype (pure or not), ours with
 * `target`; compare. */
static int peer_run(const char *model, const char *src, const char *target, uint32_t ftype,
                    bool pure) {
    char ours[512], theirs[512], what[128];
    test_tmp_path("qpeer-ours.gguf", ours, sizeof ours);
    test_tmp_path("qpeer-llama.gguf", theirs, sizeof theirs);
    snprintf(what, sizeof what, "%s %s%s", model, target, pure ? " (pure)" : "");
    peer_quantize_params p = g_default_params();
    p.nthread = PEER_THREADS;
    p.ftype = (int32_t)ftype;
    p.pure = pure;
    uint32_t rc = g_quantize(src, theirs, &p);
    if (rc != 0) {
        print_message("%s: llama_model_quantize failed (%u)\n", what, rc);
        return 1;
    }
    assert_int_equal(cs_model_quantize_threads(src, ours, target, PEER_THREADS), CS_OK);
    int bad = peer_compare(what, ours, theirs, true);
    remove(ours);
    remove(theirs);
    return bad;
}

static void test_quantize_peer_mixes(void **state) {
    (void)state;
    if (!have_peer()) return;
    size_t n_mixes = 0;
    const qz_mix *mixes = qz_mixes(&n_mixes);
    assert_int_equal(n_mixes, 16);
    int bad = 0;
    for (size_t m = 0; m < N_MODELS; m++) {
        char src[512];
        test_tmp_path("qpeer-src.gguf", src, sizeof src);
        peer_gen(&k_models[m], src);
        for (size_t i = 0; i < n_mixes; i++) {
            char target[64];
            snprintf(target, sizeof target, "%s%s", QZ_MIX_PREFIX, mixes[i].name);
            int b = peer_run(k_models[m].name, src, target, mixes[i].ftype, false);
            if (b) print_message("%s %s: %d differences\n", k_models[m].name, target, b);
            bad += b;
        }
        remove(src);
    }
    assert_int_equal(bad, 0);
}

/* --pure Q4_0 / Q8_0 against the plain types, on the models whose rows
 * are all multiples of 32 (for rows that are not, llama.cpp writes f16
 * where the plain types keep f32, as the reference files do). */
static void test_quantize_peer_pure(void **state) {
    (void)state;
    if (!have_peer()) return;
    int bad = 0;
    for (size_t m = 0; m < N_MODELS; m++) {
        if (k_models[m].n_ff % 32 != 0) continue;
        char src[512];
        test_tmp_path("qpeer-src.gguf", src, sizeof src);
        peer_gen(&k_models[m], src);
        bad += peer_run(k_models[m].name, src, "q4_0", 2, true);
        bad += peer_run(k_models[m].name, src, "q8_0", 7, true);
        remove(src);
    }
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_peer_mixes),
        cmocka_unit_test(test_quantize_peer_pure),
    };
    return test_run(tests, setup, NULL);
}
