/* chat.c: a chat loop that keeps going past the end of the context, with
 * libctxshift's KV-cache operations (llama.cpp's context shift).
 *
 *   chat -m MODEL [-c N_CTX] [-n N_REPLY] [-k N_KEEP]
 *
 * Each line of stdin is a user turn: it is decoded after the conversation so
 * far and answered with up to N_REPLY greedily sampled tokens. When the next
 * batch would not fit in the N_CTX cells, the first N_KEEP tokens (the BOS
 * and whatever the application wants to pin) stay, half of the rest is
 * dropped with cs_kv_seq_rm, and the tokens after the hole move back with
 * cs_kv_seq_add; decoding then continues at the lowered position. Each shift
 * prints a "[context shift: ...]" line on stderr; the last line on stderr
 * counts turns, tokens and shifts.
 *
 * Uses only ctxshift.h. Exit status 0 on success, 1 on a failure, 2 on bad
 * arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxshift.h>

typedef struct chat {
    cs_model *model;
    cs_context *ctx;
    cs_batch *batch;
    cs_sampler *smpl;
    int32_t n_ctx;
    int32_t n_keep;  /* tokens at the start that a shift never drops */
    cs_pos n_past;   /* next position = tokens in the cache */
    long n_decoded;  /* tokens decoded in all (grows past n_ctx) */
    int32_t n_shift; /* context shifts done */
} chat;

static int fail(const char *what, cs_status st) {
    fprintf(stderr, "chat: %s: %s: %s\n", what, cs_status_str(st), cs_last_error());
    return 1;
}

/* Make room for n more tokens: drop half of the tokens after n_keep (more
 * halvings if one is not enough) and move the rest back. */
static int chat_make_room(chat *c, int32_t n) {
    if (c->n_keep + n > c->n_ctx) {
        fprintf(stderr, "chat: %d tokens do not fit after the %d kept ones in %d cells\n", (int)n,
                (int)c->n_keep, (int)c->n_ctx);
        return 1;
    }
    while (c->n_past + n > c->n_ctx) {
        const int32_t n_left = c->n_past - c->n_keep;
        const int32_t n_discard = n_left / 2 > 0 ? n_left / 2 : n_left;
        cs_status st = cs_kv_seq_rm(c->ctx, 0, c->n_keep, c->n_keep + n_discard);
        if (st != CS_OK) return fail("cs_kv_seq_rm", st);
        st = cs_kv_seq_add(c->ctx, 0, c->n_keep + n_discard, c->n_past, -n_discard);
        if (st != CS_OK) return fail("cs_kv_seq_add", st);
        c->n_past -= n_discard;
        c->n_shift++;
        fprintf(stderr, "[context shift: kept %d, discarded %d, n_past %d -> %d of n_ctx %d]\n",
                (int)c->n_keep, (int)n_discard, (int)(c->n_past + n_discard), (int)c->n_past,
                (int)c->n_ctx);
    }
    return 0;
}

/* Decode tokens[0, n) at the end of the conversation, in batches of at most
 * n_batch, shifting the context first when needed. The logits of the last
 * token are then at batch row cs_batch_n_tokens - 1. */
static int chat_feed(chat *c, const cs_token *tokens, int32_t n) {
    const cs_seq seq0 = 0;
    const int32_t n_batch = (int32_t)cs_n_batch(c->ctx);
    for (int32_t i = 0; i < n; i += n_batch) {
        const int32_t m = n - i < n_batch ? n - i : n_batch;
        if (chat_make_room(c, m) != 0) return 1;
        cs_batch_clear(c->batch);
        for (int32_t k = 0; k < m; k++) {
            cs_batch_add(c->batch, tokens[i + k], c->n_past + k, &seq0, 1, i + k == n - 1);
        }
        const int32_t ret = cs_decode(c->ctx, c->batch);
        if (ret != 0) return fail("cs_decode", (cs_status)ret);
        c->n_past += m;
        c->n_decoded += m;
    }
    return 0;
}

/* One turn: the user's line, then up to n_reply tokens of answer. */
static int chat_turn(chat *c, const char *line, bool first, int n_reply) {
    const size_t len = strlen(line);
    const int32_t need = -cs_tokenize(c->model, line, len, NULL, 0, first, false);
    if (need <= 0) return 0; /* an empty line */
    cs_token *tokens = malloc(sizeof(cs_token) * (size_t)need);
    if (!tokens) return 1;
    int rc = cs_tokenize(c->model, line, len, tokens, need, first, false) == need ? 0 : 1;
    if (rc == 0) rc = chat_feed(c, tokens, need);
    free(tokens);
    char piece[256];
    for (int i = 0; rc == 0 && i < n_reply; i++) {
        const float *logits = cs_get_logits_ith(c->ctx, cs_batch_n_tokens(c->batch) - 1);
        const cs_token tok = cs_sampler_sample(c->smpl, logits);
        if (tok < 0 || cs_token_is_eog(c->model, tok)) break;
        cs_sampler_accept(c->smpl, tok);
        const int32_t np = cs_token_to_piece(c->model, tok, piece, sizeof piece, false);
        if (np > 0) fwrite(piece, 1, (size_t)np, stdout);
        fflush(stdout);
        rc = chat_feed(c, &tok, 1);
    }
    printf("\n");
    return rc;
}

int main(int argc, char **argv) {
    const char *model_path = NULL;
    int n_ctx = 128, n_reply = 48, n_keep = 1;
    for (int i = 1; i < argc; i++) {
        int *val = strcmp(argv[i], "-c") == 0   ? &n_ctx
                   : strcmp(argv[i], "-n") == 0 ? &n_reply
                   : strcmp(argv[i], "-k") == 0 ? &n_keep
                                                : NULL;
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            model_path = argv[++i];
        } else if (val && i + 1 < argc) {
            *val = atoi(argv[++i]);
        } else {
            model_path = NULL;
            break;
        }
    }
    if (!model_path || n_ctx < 8 || n_reply < 1 || n_keep < 0 || n_keep >= n_ctx / 2) {
        fprintf(stderr, "usage: %s -m MODEL [-c N_CTX >= 8] [-n N_REPLY] [-k N_KEEP < N_CTX/2]\n",
                argv[0]);
        return 2;
    }

    chat c = {0};
    c.n_ctx = n_ctx;
    c.n_keep = n_keep;
    cs_model_params mp = cs_model_default_params();
    cs_status st = cs_model_load(model_path, &mp, &c.model);
    if (st != CS_OK) return fail("cs_model_load", st);
    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cs_sampler_params sp = cs_sampler_default_params();
    sp.temp = 0.0f;           /* greedy: the same conversation every run */
    sp.repeat_penalty = 1.1f; /* a little variety for a tiny model */
    int rc = 0;
    if ((st = cs_context_new(c.model, &cp, &c.ctx)) != CS_OK) {
        rc = fail("cs_context_new", st);
    } else if (!cs_kv_can_shift(c.ctx)) {
        fprintf(stderr, "chat: this model's positions cannot be shifted\n");
        rc = 1;
    } else if ((st = cs_batch_new((int32_t)cs_n_batch(c.ctx), 1, &c.batch)) != CS_OK) {
        rc = fail("cs_batch_new", st);
    } else if ((st = cs_sampler_new(&sp, cs_model_n_vocab(c.model), &c.smpl)) != CS_OK) {
        rc = fail("cs_sampler_new", st);
    }

    char line[4096];
    int n_turns = 0;
    while (rc == 0 && fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        printf("> %s\n", line);
        rc = chat_turn(&c, line, n_turns == 0, n_reply);
        n_turns++;
    }
    if (rc == 0) {
        fprintf(stderr, "chat: %d turns, %ld tokens decoded, n_ctx %d, %d context shifts\n",
                n_turns, c.n_decoded, (int)c.n_ctx, (int)c.n_shift);
    }

    cs_sampler_free(c.smpl);
    cs_batch_free(c.batch);
    cs_context_free(c.ctx);
    cs_model_free(c.model);
    return rc;
}
