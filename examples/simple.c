/* simple.c: generate text from a prompt with libctxshift, in the spirit of
 * llama.cpp's examples/simple: load, tokenize, decode the prompt in one
 * batch, then sample greedily one token at a time.
 *
 *   simple -m MODEL [-n N_PREDICT] [PROMPT]
 *
 * Uses only ctxshift.h. Exit status 0 on success, 1 on a failure, 2 on bad
 * arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxshift.h>

static void usage(const char *argv0) {
    fprintf(stderr, "usage: %s -m MODEL [-n N_PREDICT] [PROMPT]\n", argv0);
}

/* Report a failed call with the library's message and give up. */
static int fail(const char *what, cs_status st) {
    fprintf(stderr, "simple: %s: %s: %s\n", what, cs_status_str(st), cs_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL;
    const char *prompt = "Once upon a time";
    int n_predict = 32;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            model_path = argv[++i];
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            n_predict = atoi(argv[++i]);
        } else if (argv[i][0] != '-') {
            prompt = argv[i];
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (!model_path || n_predict < 1) {
        usage(argv[0]);
        return 2;
    }
    if (strcmp(cs_version(), CS_VERSION_STRING) != 0) {
        fprintf(stderr, "simple: built with ctxshift.h %s, running libctxshift %s\n",
                CS_VERSION_STRING, cs_version());
    }

    cs_model_params mp = cs_model_default_params();
    cs_model *model = NULL;
    cs_status st = cs_model_load(model_path, &mp, &model);
    if (st != CS_OK) return fail("cs_model_load", st);

    /* The prompt: ask for the size first (a negative count), then tokenize. */
    const size_t len = strlen(prompt);
    const int32_t n_prompt = -cs_tokenize(model, prompt, len, NULL, 0, true, true);
    cs_token *tokens = malloc(sizeof(cs_token) * (size_t)(n_prompt > 0 ? n_prompt : 1));
    if (n_prompt <= 0 || !tokens ||
        cs_tokenize(model, prompt, len, tokens, n_prompt, true, true) != n_prompt) {
        fprintf(stderr, "simple: cannot tokenize the prompt\n");
        free(tokens);
        cs_model_free(model);
        return 1;
    }

    /* A context just big enough for the prompt and the answer. */
    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_predict);
    cp.n_batch = (uint32_t)n_prompt;
    cs_context *ctx = NULL;
    cs_batch *batch = NULL;
    cs_sampler *smpl = NULL;
    cs_sampler_params sp = cs_sampler_default_params();
    sp.temp = 0.0f; /* greedy: the same text every run */
    int rc = 0;
    if ((st = cs_context_new(model, &cp, &ctx)) != CS_OK) {
        rc = fail("cs_context_new", st);
    } else if ((st = cs_batch_new(n_prompt, 1, &batch)) != CS_OK) {
        rc = fail("cs_batch_new", st);
    } else if ((st = cs_sampler_new(&sp, cs_model_n_vocab(model), &smpl)) != CS_OK) {
        rc = fail("cs_sampler_new", st);
    }

    const cs_seq seq0 = 0;
    char piece[256];
    if (rc == 0) {
        /* Echo the prompt, then decode it in one batch: logits only for its
         * last token. */
        fputs(prompt, stdout);
        for (int32_t i = 0; i < n_prompt; i++) {
            cs_batch_add(batch, tokens[i], i, &seq0, 1, i == n_prompt - 1);
        }
    }
    int n_gen = 0;
    for (cs_pos pos = n_prompt; rc == 0; pos++) {
        const int32_t ret = cs_decode(ctx, batch);
        if (ret != 0) {
            rc = fail("cs_decode", (cs_status)ret);
            break;
        }
        const float *logits = cs_get_logits_ith(ctx, cs_batch_n_tokens(batch) - 1);
        const cs_token tok = cs_sampler_sample(smpl, logits);
        if (tok < 0 || cs_token_is_eog(model, tok) || n_gen == n_predict) break;
        cs_sampler_accept(smpl, tok);
        n_gen++;
        const int32_t np = cs_token_to_piece(model, tok, piece, sizeof piece, false);
        if (np > 0) fwrite(piece, 1, (size_t)np, stdout);
        fflush(stdout);
        cs_batch_clear(batch);
        cs_batch_add(batch, tok, pos, &seq0, 1, true);
    }
    if (rc == 0) {
        printf("\n");
        fprintf(stderr, "simple: %d prompt tokens, %d generated\n", (int)n_prompt, n_gen);
    }

    cs_sampler_free(smpl);
    cs_batch_free(batch);
    cs_context_free(ctx);
    free(tokens);
    cs_model_free(model);
    return rc;
}
