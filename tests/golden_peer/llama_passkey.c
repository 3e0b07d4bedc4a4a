/* llama_passkey.c: llama.cpp's side of shift_peer_test.sh. Built by that
 * script with peer_build (tests/cli_lib.sh) against the headers of the
 * llama.cpp source node-llama-cpp bundles and its prebuilt libllama
 * (bench/peer), as golden_peer_test.sh builds llama_golden; not part of the
 * CMake build.
 *
 *   llama_passkey passkey MODEL BACKEND_DIR CACHE N_JUNK I_POS KEY N_KEEP N_GRP N_BATCH
 *   llama_passkey run     MODEL BACKEND_DIR CACHE PROMPT N_CTX N_KEEP N_PREDICT
 *
 * passkey: llama.cpp's examples/passkey procedure (the revision bundled):
 * the prompt (prefix, N_JUNK junk sentences with the key sentence before
 * sentence I_POS, suffix) tokenized with BOS, a context of n_ctx_train *
 * N_GRP + N_KEEP cells, the fill loop in batches of N_BATCH over the usable
 * n_ctx = n_ctx_train * N_GRP positions (self-extend: llama_memory_seq_add +
 * a division by N_GRP of the previous batch when N_GRP > 1, done with
 * seq_add per position because this libllama's seq_div rotates K the wrong
 * way; see seq_div below), then a context shift
 * (seq_rm [N_KEEP, N_KEEP + N_BATCH), seq_add of the rest by -N_BATCH)
 * before each further batch, the shift that frees room for the 16 answer
 * tokens, and greedy answer tokens until an end-of-generation token or 16.
 * Its progress lines are llama-passkey's ("main: processed: [a, b)", "main:
 * shifting KV cache with N[ to free space for the answer]"). n_ctx is the
 * computed one, not llama_n_ctx() - N_KEEP, so a padded cache changes
 * nothing.
 *
 * run: llama-cli's generation with its context shift: PROMPT tokenized with
 * BOS and special tokens parsed, decoded in one batch; then N_PREDICT greedy
 * tokens (end-of-generation tokens masked, as `ctxshift run --ignore-eos`),
 * each decoded except the last; before a decode at n_past with n_past + 1 >=
 * N_CTX, n_discard = (n_past - N_KEEP) / 2, seq_rm [N_KEEP, N_KEEP +
 * n_discard), seq_add [N_KEEP + n_discard, n_past) by -n_discard (a line
 * "context shift: n_keep = K, n_discard = D (n_past P -> Q)", as `ctxshift
 * run -v` prints it). N_KEEP counts BOS.
 *
 * Both print every generated token as "step I id T margin M" (M: the top
 * logit minus the second, of the row the token was picked from; ties go to
 * the lowest id, as ctxshift's arg-max), passkey's end-of-generation token
 * too, marked " eog". CACHE is the K and V cache type
 * (f32 or f16); no flash attention, 2 threads, one sequence. Exit 1 on any
 * error. Cost: one prompt pass plus the answer / N_PREDICT single-token
 * decodes. */
#include <ggml-backend.h>
#include <llama.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LP_N_PREDICT = 16, LP_MAX_CTX = 1 << 20, LP_THREADS = 2 };

static const char lp_prefix[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there.";
static const char lp_junk[] =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
static const char lp_suffix[] = " What is the pass key? The pass key is";

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int parse_int(const char *s, int lo, int hi, const char *what) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "llama_passkey: %s '%s' is not in %d..%d\n", what, s, lo, hi);
        exit(1);
    }
    return (int)v;
}

/* Arg-max of x (masked entries skipped; the lowest id wins a tie) and the
 * margin to the second largest. O(n). */
static int32_t pick(const float *x, const bool *masked, int32_t n, double *margin) {
    int32_t best = -1, second = -1;
    for (int32_t i = 0; i < n; i++) {
        if (masked != NULL && masked[i]) continue;
        if (best < 0 || x[i] > x[best]) {
            second = best;
            best = i;
        } else if (second < 0 || x[i] > x[second]) {
            second = i;
        }
    }
    *margin = second >= 0 ? (double)x[best] - (double)x[second] : INFINITY;
    return best;
}

/* Tokenize text (BOS added when the vocabulary does); NULL on error. */
static llama_token *tokenize(const struct llama_vocab *vocab, const char *text, bool special,
                             int32_t *n_out) {
    const int32_t len = (int32_t)strlen(text);
    const int32_t n = -llama_tokenize(vocab, text, len, NULL, 0, true, special);
    llama_token *t = n > 0 ? malloc(sizeof *t * (size_t)n) : NULL;
    if (t == NULL || llama_tokenize(vocab, text, len, t, n, true, special) != n) {
        fprintf(stderr, "llama_passkey: cannot tokenize the prompt\n");
        free(t);
        return NULL;
    }
    *n_out = n;
    return t;
}

/* Decode toks[0, n) at positions pos.. in seq 0, logits for the last row
 * when want_logits. Returns 0 or -1 (message printed). */
static int decode(struct llama_context *ctx, struct llama_batch *b, const llama_token *toks,
                  int32_t n, llama_pos pos, bool want_logits) {
    for (int32_t i = 0; i < n; i++) {
        b->token[i] = toks[i];
        b->pos[i] = pos + i;
        b->n_seq_id[i] = 1;
        b->seq_id[i][0] = 0;
        b->logits[i] = want_logits && i == n - 1;
    }
    b->n_tokens = n;
    const int32_t ret = llama_decode(ctx, *b);
    if (ret != 0) {
        fprintf(stderr, "llama_passkey: llama_decode at pos %d returned %d\n", (int)pos, (int)ret);
        return -1;
    }
    return 0;
}

static struct llama_context *new_context(struct llama_model *model, int n_ctx, int n_batch,
                                         enum ggml_type type) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_batch;
    cp.n_ubatch = (uint32_t)n_batch;
    cp.n_seq_max = 1;
    cp.n_threads = LP_THREADS;
    cp.n_threads_batch = LP_THREADS;
    cp.type_k = type;
    cp.type_v = type;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) fprintf(stderr, "llama_passkey: cannot create a context of %d\n", n_ctx);
    return ctx;
}

/* llama_memory_seq_div with the rotation of the kv-cache spec (§2.7,
 * upstream issue 26): this libllama records shift += old - new for a
 * division (a K rotated to 2·old - new instead of new; ctxshift uses new -
 * old). Moving each position p of [p0, p1) by itself with seq_add(p, p + 1,
 * p/d - p), in increasing order, gives the same positions with shift += new
 * - old (a moved cell lands at p/d <= p, below every later p). O(p1 - p0)
 * calls of O(cells). */
static void seq_div(llama_memory_t mem, int p0, int p1, int d) {
    for (int p = p0; p < p1; p++)
        if (p / d != p) llama_memory_seq_add(mem, 0, p, p + 1, p / d - p);
}

/* The shift of examples/passkey: drop [n_keep, n_keep + n_discard), move
 * [n_keep + n_discard, n_ctx) down; returns the new n_past. */
static int passkey_shift(llama_memory_t mem, int n_keep, int n_discard, int n_ctx) {
    llama_memory_seq_rm(mem, 0, n_keep, n_keep + n_discard);
    llama_memory_seq_add(mem, 0, n_keep + n_discard, n_ctx, -n_discard);
    return llama_memory_seq_pos_max(mem, 0) + 1;
}

static int run_passkey(struct llama_model *model, enum ggml_type type, char **a) {
    const int n_junk = parse_int(a[0], 1, 100000, "N_JUNK");
    const int i_pos = parse_int(a[1], 0, n_junk - 1, "I_POS");
    const int key = parse_int(a[2], 1, 1 << 30, "KEY");
    const int n_keep = parse_int(a[3], 0, LP_MAX_CTX, "N_KEEP");
    const int n_grp = parse_int(a[4], 1, 64, "N_GRP");
    const int n_batch = parse_int(a[5], 1, LP_MAX_CTX, "N_BATCH");
    const int n_ctx = llama_model_n_ctx_train(model) * n_grp;
    if (n_batch % n_grp != 0 || n_ctx + n_keep > LP_MAX_CTX || n_batch > n_ctx) {
        fprintf(stderr, "llama_passkey: N_BATCH %d, N_GRP %d, n_ctx %d do not fit\n", n_batch,
                n_grp, n_ctx);
        return 1;
    }
    char key_text[128];
    snprintf(key_text, sizeof key_text, " The pass key is %d. Remember it. %d is the pass key.",
             key, key);
    const size_t len =
        strlen(lp_prefix) + (size_t)n_junk * strlen(lp_junk) + strlen(key_text) + strlen(lp_suffix);
    char *prompt = malloc(len + 1);
    if (prompt == NULL) return 1;
    strcpy(prompt, lp_prefix);
    for (int i = 0; i < n_junk; i++) {
        if (i == i_pos) strcat(prompt, key_text);
        strcat(prompt, lp_junk);
    }
    strcat(prompt, lp_suffix);

    int rc = 1;
    llama_token *toks = NULL;
    struct llama_batch b = llama_batch_init(n_batch, 0, 1);
    struct llama_context *ctx = new_context(model, n_ctx + n_keep, n_batch, type);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int32_t n_tokens = 0;
    if (ctx == NULL || (toks = tokenize(vocab, prompt, false, &n_tokens)) == NULL) goto done;
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    llama_memory_t mem = llama_get_memory(ctx);
    printf("main: n_len = %d, n_ctx = %d, n_kv_req = %d, n_grp = %d, n_batch = %d, n_junk = %d, "
           "i_pos = %d (llama_n_ctx %u)\n",
           (int)(n_tokens + LP_N_PREDICT), n_ctx, n_ctx + n_keep, n_grp, n_batch, n_junk, i_pos,
           llama_n_ctx(ctx));
    printf("prompt tokens: %d\n", (int)n_tokens);
    int n_past = 0;
    /* fill: while the usable context lasts, self-extend on the batch before */
    for (int i = 0; i < n_ctx; i += n_batch) {
        if (i > 0 && n_grp > 1) {
            const int ib = i / n_batch - 1;
            const int bd = (n_batch / n_grp) * (n_grp - 1);
            llama_memory_seq_add(mem, 0, n_past - n_batch, n_past, ib * bd);
            seq_div(mem, n_past - n_batch + ib * bd, n_past + ib * bd, n_grp);
            n_past = llama_memory_seq_pos_max(mem, 0) + 1;
        }
        const int i1 = i + n_batch < n_tokens ? i + n_batch : n_tokens;
        if (decode(ctx, &b, toks + i, i1 - i, n_past, i1 == n_tokens) != 0) goto done;
        n_past += i1 - i;
        printf("main: processed: [%6d, %6d)\n", i, i1);
        if (i1 == n_tokens) break;
    }
    /* then a shift of one batch before each further batch */
    for (int i = n_ctx; i < n_tokens; i += n_batch) {
        printf("main: shifting KV cache with %d\n", n_batch);
        n_past = passkey_shift(mem, n_keep, n_batch, n_ctx);
        const int i1 = i + n_batch < n_tokens ? i + n_batch : n_tokens;
        if (decode(ctx, &b, toks + i, i1 - i, n_past, i1 == n_tokens) != 0) goto done;
        n_past += i1 - i;
        printf("main: processed: [%6d, %6d)\n", i, i1);
    }
    const int n_discard = n_past - n_ctx + LP_N_PREDICT;
    if (n_discard > 0) {
        printf("main: shifting KV cache with %d to free space for the answer\n", n_discard);
        n_past = passkey_shift(mem, n_keep, n_discard, n_ctx);
    }
    for (int k = 0; k < LP_N_PREDICT; k++) {
        double margin = 0;
        const float *lg = llama_get_logits_ith(ctx, -1);
        if (lg == NULL) goto done;
        const llama_token tok = pick(lg, NULL, n_vocab, &margin);
        const bool end = llama_vocab_is_eog(vocab, tok);
        printf("step %d id %d margin %.6f%s\n", k, (int)tok, margin, end ? " eog" : "");
        if (end) break;
        if (k + 1 == LP_N_PREDICT) break; /* llama.cpp decodes it, never reads it */
        if (decode(ctx, &b, &tok, 1, n_past++, true) != 0) goto done;
    }
    rc = 0;
done:
    free(toks);
    free(prompt);
    llama_batch_free(b);
    if (ctx != NULL) llama_free(ctx);
    return rc;
}

static int run_generate(struct llama_model *model, enum ggml_type type, char **a) {
    const char *text = a[0];
    const int n_ctx = parse_int(a[1], 4, LP_MAX_CTX, "N_CTX");
    const int n_keep = parse_int(a[2], 1, n_ctx - 3, "N_KEEP");
    const int n_predict = parse_int(a[3], 1, 1 << 20, "N_PREDICT");
    int rc = 1;
    llama_token *toks = NULL;
    bool *eog = NULL;
    struct llama_batch b = llama_batch_init(n_ctx, 0, 1);
    struct llama_context *ctx = new_context(model, n_ctx, n_ctx, type);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    int32_t n_tokens = 0;
    if (ctx == NULL || (toks = tokenize(vocab, text, true, &n_tokens)) == NULL) goto done;
    if (n_tokens >= n_ctx || n_keep > n_tokens) {
        fprintf(stderr, "llama_passkey: prompt of %d tokens, N_CTX %d, N_KEEP %d\n", (int)n_tokens,
                n_ctx, n_keep);
        goto done;
    }
    eog = calloc((size_t)n_vocab, sizeof *eog);
    if (eog == NULL) goto done;
    for (int32_t i = 0; i < n_vocab; i++) eog[i] = llama_vocab_is_eog(vocab, i);
    llama_memory_t mem = llama_get_memory(ctx);
    printf("prompt tokens: %d\n", (int)n_tokens);
    if (decode(ctx, &b, toks, n_tokens, 0, true) != 0) goto done;
    int n_past = n_tokens;
    for (int k = 0; k < n_predict; k++) {
        double margin = 0;
        const float *lg = llama_get_logits_ith(ctx, -1);
        if (lg == NULL) goto done;
        const llama_token tok = pick(lg, eog, n_vocab, &margin);
        printf("step %d id %d margin %.6f\n", k, (int)tok, margin);
        if (k + 1 == n_predict) break;
        if (n_past + 1 >= n_ctx) {
            const int n_discard = (n_past - n_keep) / 2;
            printf("context shift: n_keep = %d, n_discard = %d (n_past %d -> %d)\n", n_keep,
                   n_discard, n_past, n_past - n_discard);
            llama_memory_seq_rm(mem, 0, n_keep, n_keep + n_discard);
            llama_memory_seq_add(mem, 0, n_keep + n_discard, n_past, -n_discard);
            n_past -= n_discard;
        }
        if (decode(ctx, &b, &tok, 1, n_past++, true) != 0) goto done;
    }
    rc = 0;
done:
    free(eog);
    free(toks);
    llama_batch_free(b);
    if (ctx != NULL) llama_free(ctx);
    return rc;
}

int main(int argc, char **argv) {
    const bool pk = argc == 11 && strcmp(argv[1], "passkey") == 0;
    const bool gen = argc == 9 && strcmp(argv[1], "run") == 0;
    enum ggml_type type = GGML_TYPE_COUNT;
    if (argc > 4) {
        if (strcmp(argv[4], "f32") == 0) type = GGML_TYPE_F32;
        if (strcmp(argv[4], "f16") == 0) type = GGML_TYPE_F16;
    }
    if ((!pk && !gen) || type == GGML_TYPE_COUNT) {
        fprintf(stderr,
                "usage: llama_passkey passkey MODEL BACKEND_DIR f32|f16 N_JUNK I_POS KEY N_KEEP "
                "N_GRP N_BATCH\n"
                "       llama_passkey run MODEL BACKEND_DIR f32|f16 PROMPT N_CTX N_KEEP "
                "N_PREDICT\n");
        return 1;
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[3]);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    int rc = 1;
    if (model == NULL) {
        fprintf(stderr, "llama_passkey: cannot load %s\n", argv[2]);
    } else {
        rc = pk ? run_passkey(model, type, argv + 5) : run_generate(model, type, argv + 5);
        llama_model_free(model);
    }
    llama_backend_free();
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}
