/* libFuzzer entry point: state bytes from outside loaded into a live,
 * fragmented cache. Byte 0 picks the call: even, cs_state_seq_load into
 * an empty sequence; odd, cs_state_load of the whole cache. The rest is the
 * state. The cache holds three sequences with holes and a shared prefix
 * (the bundled stories260K model, 64 cells) built once.
 * Invariants: a refused load leaves the cache exactly as it was (cell
 * metadata and the state bytes of every sequence); an accepted one is
 * undone (seq_rm, or the whole state loaded back) and checked the same way.
 * Finding 1 (fixed; regression seed corpus/state/regress-pos-int32max.bin,
 * test_state_position_limit): a cell loaded at position INT32_MAX, which
 * seq_rm(s, -1, -1) could not remove; positions now stop at CS_POS_MAX.
 * With CS_FUZZ_STATE_SEEDS=DIR set, the first call writes valid seeds (a
 * sequence state and a whole-cache state) into DIR (make_corpus.sh). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxshift.h"

#ifndef CS_FUZZ_MODEL
#define CS_FUZZ_MODEL "models/stories260K-f32.gguf"
#endif

enum { N_CTX = 64, SEQ_FREE = 3 };

static cs_model *model;
static cs_context *ctx;
static unsigned char *whole; /* the cache as built, for checks and undo */
static size_t whole_len;

static void decode_seq(cs_seq s, int32_t p0, int32_t n, cs_token first) {
    cs_batch *b = NULL;
    if (cs_batch_new(n, 1, &b) != CS_OK) abort();
    for (int32_t i = 0; i < n; i++) cs_batch_add(b, first + i, p0 + i, &s, 1, i == n - 1);
    if (cs_decode(ctx, b) != 0) abort();
    cs_batch_free(b);
}

static void write_file(const char *dir, const char *name, unsigned char tag, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(&tag, 1, 1, f) != 1 || fwrite(p, 1, n, f) != n || fclose(f) != 0) abort();
}

static void setup(void) {
    cs_model_params mp = cs_model_default_params();
    if (cs_model_load(CS_FUZZ_MODEL, &mp, &model) != CS_OK) abort();
    cs_context_params cp = cs_context_default_params();
    cp.n_ctx = N_CTX;
    cp.n_seq_max = 4;
    cp.n_threads = 1;
    if (cs_context_new(model, &cp, &ctx) != CS_OK) abort();
    /* seq 0: 20 tokens; seq 1 shares its first 8 and adds 6; seq 2: 12
     * tokens, then positions 4..8 removed (holes), seq 0 shifted by -2 */
    decode_seq(0, 0, 20, 10);
    cs_kv_seq_cp(ctx, 0, 1, 0, 8);
    decode_seq(1, 8, 6, 40);
    decode_seq(2, 0, 12, 70);
    cs_kv_seq_rm(ctx, 2, 4, 9);
    cs_kv_seq_rm(ctx, 0, 10, 12);
    cs_kv_seq_add(ctx, 0, 12, 20, -2);
    if (cs_kv_update(ctx) != CS_OK) abort();
    whole_len = cs_state_size(ctx);
    whole = malloc(whole_len);
    size_t w = 0;
    if (!whole || cs_state_save(ctx, whole, whole_len, &w) != CS_OK) abort();
    whole_len = w;
    const char *dir = getenv("CS_FUZZ_STATE_SEEDS");
    if (dir) {
        const size_t n = cs_state_seq_size(ctx, 1);
        unsigned char *s = malloc(n);
        size_t sw = 0;
        if (!s || cs_state_seq_save(ctx, 1, s, n, &sw) != CS_OK) abort();
        write_file(dir, "seq1.bin", 0, s, sw);
        write_file(dir, "whole.bin", 1, whole, whole_len);
        free(s);
    }
}

/* The cache must equal the one built by setup. */
static void check_unchanged(void) {
    const size_t n = cs_state_size(ctx);
    unsigned char *now = malloc(n ? n : 1);
    size_t w = 0;
    if (!now || cs_state_save(ctx, now, n, &w) != CS_OK) abort();
    if (w != whole_len || memcmp(now, whole, w) != 0) abort();
    free(now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx) setup();
    if (size < 1) return 0;
    const uint8_t *blob = data + 1;
    const size_t n = size - 1;
    if ((data[0] & 1) == 0) {
        const cs_status st = cs_state_seq_load(ctx, SEQ_FREE, blob, n);
        if (st == CS_OK) cs_kv_seq_rm(ctx, SEQ_FREE, -1, -1);
        else if (st != CS_ERR_FORMAT && st != CS_ERR_INVALID_ARG && st != CS_NO_KV_SLOT) abort();
    } else {
        const cs_status st = cs_state_load(ctx, blob, n);
        if (st == CS_OK) {
            if (cs_state_load(ctx, whole, whole_len) != CS_OK) abort();
        } else if (st != CS_ERR_FORMAT && st != CS_ERR_INVALID_ARG) {
            abort();
        }
    }
    check_unchanged();
    return 0;
}
