/* llama_golden.c: llama.cpp's side of golden_peer_test.sh. Built by that
 * script against the headers of the llama.cpp source node-llama-cpp bundles
 * and its prebuilt libllama (bench/peer), as tests/tokenizer_peer builds
 * tokenizer_llama; not part of the CMake build.
 *
 *   llama_golden MODEL OUT.json BACKEND_DIR [N_PROMPT N_STEPS N_CTX SEED]
 *
 * Runs one scripted scenario on MODEL and writes it in the golden format
 * ("llama-kv-golden/1", read by `ctxshift replay`) with llama.cpp's results:
 *   - a prompt of N_PROMPT tokens (BOS, then pseudo-random ids >= 3 from
 *     SEED) decoded in one batch at positions 0.., logits of its last row;
 *   - N_STEPS single-token greedy steps (the token is the arg-max of the
 *     previous row, a tie to the lowest id), every row's full logits;
 *   - before a step, when n_past == N_CTX, llama-cli's context shift:
 *     n_keep = 1, n_discard = (n_past - n_keep) / 2,
 *     llama_memory_seq_rm(0, n_keep, n_keep + n_discard) and
 *     llama_memory_seq_add(0, n_keep + n_discard, n_past, -n_discard), then a
 *     pos_max step (no update: the K-shift is applied by the next decode).
 * The context is as the golden files': F32 KV cache, no flash attention,
 * one thread, one sequence, n_batch = n_ubatch = N_CTX. Defaults: 40 64 64
 * 1, which gives two shifts. Logits are written with %.9g (exact floats).
 * Exit 1 on any error. Cost: N_STEPS + 1 decodes, O(n_vocab) per row. */
#include <ggml-backend.h>
#include <llama.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LG_N_KEEP = 1, LG_MAX_CTX = 4096 };

/* Separator before the next step: none before the first. */
static const char *g_sep = "";

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int parse_int(const char *s, int lo, int hi, const char *what) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "llama_golden: %s '%s' is not in %d..%d\n", what, s, lo, hi);
        exit(1);
    }
    return (int)v;
}

static void put_ints(FILE *f, const int32_t *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? "," : "", (int)v[i]);
    fputc(']', f);
}

/* One decode step of n rows (tokens at positions pos..pos+n-1, seq 0),
 * logits of the last row only; writes the step and its result. Returns the
 * arg-max of that row, or -1 after an error. */
static int32_t decode_step(FILE *f, struct llama_context *ctx, int32_t n_vocab,
                           const llama_token *toks, int n, llama_pos pos, int greedy,
                           const char *note) {
    struct llama_batch b = llama_batch_init(n, 0, 1);
    int32_t *pv = malloc(sizeof *pv * (size_t)n);
    if (pv == NULL) {
        llama_batch_free(b);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        b.token[i] = toks[i];
        b.pos[i] = pos + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = i == n - 1;
        pv[i] = pos + i;
    }
    b.n_tokens = n;
    const int32_t ret = llama_decode(ctx, b);
    llama_batch_free(b);
    const float *lg = ret == 0 ? llama_get_logits_ith(ctx, n - 1) : NULL;
    if (lg == NULL) {
        fprintf(stderr, "llama_golden: llama_decode at pos %d returned %d\n", (int)pos, (int)ret);
        free(pv);
        return -1;
    }
    fprintf(f, "%s{\"op\":\"decode\",\"tokens\":", g_sep);
    g_sep = ",\n";
    put_ints(f, toks, n);
    fputs(",\"pos\":", f);
    put_ints(f, pv, n);
    fputs(",\"seq\":[", f);
    for (int i = 0; i < n; i++) fputs(i ? ",[0]" : "[0]", f);
    fprintf(f, "],\"out\":[%d]", n - 1);
    if (greedy) fputs(",\"greedy\":[0]", f);
    if (note) fprintf(f, ",\"note\":\"%s\"", note);
    const int32_t am = argmax(lg, n_vocab);
    fprintf(f, ",\"result\":{\"ret\":0,\"rows\":[{\"row\":%d,\"argmax\":%d,\"logits\":[", n - 1,
            (int)am);
    for (int32_t i = 0; i < n_vocab; i++) fprintf(f, "%s%.9g", i ? "," : "", (double)lg[i]);
    fputs("]}]}}", f);
    free(pv);
    return am;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 8) {
        fprintf(stderr, "usage: llama_golden MODEL OUT.json BACKEND_DIR "
                        "[N_PROMPT N_STEPS N_CTX SEED]\n");
        return 1;
    }
    const char *path = argv[1];
    int n_prompt = 40, n_steps = 64, n_ctx = 64;
    uint64_t seed = 1;
    if (argc == 8) {
        n_ctx = parse_int(argv[6], 4, LG_MAX_CTX, "N_CTX");
        n_prompt = parse_int(argv[4], 1, n_ctx, "N_PROMPT");
        n_steps = parse_int(argv[5], 0, 1 << 20, "N_STEPS");
        seed = (uint64_t)parse_int(argv[7], 0, 1 << 30, "SEED");
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[3]);
    llama_backend_init();
    int rc = 1;
    struct llama_context *ctx = NULL;
    llama_token *toks = NULL;
    FILE *f = NULL;
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (model == NULL) {
        fprintf(stderr, "llama_golden: cannot load %s\n", path);
        goto done;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_ctx;
    cp.n_ubatch = (uint32_t)n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "llama_golden: cannot create a context\n");
        goto done;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    llama_memory_t mem = llama_get_memory(ctx);
    toks = malloc(sizeof *toks * (size_t)n_prompt);
    f = fopen(argv[2], "w");
    if (toks == NULL || f == NULL || n_vocab <= 3) {
        fprintf(stderr, "llama_golden: cannot write %s\n", argv[2]);
        goto done;
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    toks[0] = llama_vocab_bos(vocab);
    for (int i = 1; i < n_prompt; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = 3 + (llama_token)((s >> 33) % (uint64_t)(n_vocab - 3));
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    /* The effective context (llama.cpp may pad the cache); the shifts are
     * driven by the requested n_ctx, so the logits do not depend on it. */
    fprintf(f,
            "{\"format\":\"llama-kv-golden/1\",\"name\":\"golden_peer\",\"description\":"
            "\"%d-token prompt, %d greedy steps, llama-cli context shift at n_past == %d "
            "(n_keep = %d)\",\"model\":\"%s\",\"reference\":{\"llama_cpp\":\"node-llama-cpp "
            "prebuilt libllama\",\"api\":\"llama_memory_seq_rm/_add / llama_decode\","
            "\"kv_cache_type\":\"f32\",\"flash_attn\":false,\"n_threads\":1,"
            "\"logits_format\":\"%%.9g\"},\"runs\":[{\"name\":\"main\",\"context\":{"
            "\"n_ctx\":%u,\"n_batch\":%u,\"n_ubatch\":%u,\"n_seq_max\":1,\"n_threads\":1,"
            "\"type_k\":\"f32\",\"type_v\":\"f32\",\"flash_attn\":false,\"defrag_thold\":-1,"
            "\"requested\":{\"n_ctx\":%d,\"n_batch\":%d,\"n_ubatch\":%d,\"n_seq_max\":1,"
            "\"n_threads\":1}},\"steps\":[\n",
            n_prompt, n_steps, n_ctx, LG_N_KEEP, base, llama_n_ctx(ctx), llama_n_batch(ctx),
            llama_n_ubatch(ctx), n_ctx, n_ctx, n_ctx);
    int32_t tok = decode_step(f, ctx, n_vocab, toks, n_prompt, 0, 0, "prompt");
    int n_past = n_prompt, n_shift = 0;
    for (int i = 0; i < n_steps && tok >= 0; i++) {
        if (n_past >= n_ctx) {
            const int n_discard = (n_past - LG_N_KEEP) / 2;
            const bool ok = llama_memory_seq_rm(mem, 0, LG_N_KEEP, LG_N_KEEP + n_discard);
            llama_memory_seq_add(mem, 0, LG_N_KEEP + n_discard, n_past, -n_discard);
            n_past -= n_discard;
            fprintf(f,
                    ",\n{\"op\":\"seq_rm\",\"seq\":0,\"p0\":%d,\"p1\":%d,\"note\":\"context "
                    "shift %d: n_past=%d, n_keep=%d, n_discard=%d\",\"result\":{\"ret\":%s}},\n"
                    "{\"op\":\"seq_add\",\"seq\":0,\"p0\":%d,\"p1\":%d,\"delta\":%d},\n"
                    "{\"op\":\"pos_max\",\"seq\":0,\"result\":{\"value\":%d}}",
                    LG_N_KEEP, LG_N_KEEP + n_discard, n_shift, n_past + n_discard, LG_N_KEEP,
                    n_discard, ok ? "true" : "false", LG_N_KEEP + n_discard, n_past + n_discard,
                    -n_discard, (int)llama_memory_seq_pos_max(mem, 0));
            n_shift++;
        }
        llama_token t = tok;
        tok = decode_step(f, ctx, n_vocab, &t, 1, n_past, 1, NULL);
        n_past++;
    }
    if (tok < 0) goto done;
    fprintf(f, "\n],\"summary\":{\"note\":\"%d context shifts\"}}]}\n", n_shift);
    rc = 0;
done:
    if (f != NULL && fclose(f) != 0) rc = 1;
    free(toks);
    if (ctx != NULL) llama_free(ctx);
    if (model != NULL) llama_model_free(model);
    llama_backend_free();
    return rc;
}
