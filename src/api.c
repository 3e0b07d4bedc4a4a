/* api.c: exported tokenizer entry points on a model (argument checks only;
 * the work is in tokenizer.c) and small utilities (version, system info). */
#include <limits.h>
#include <stdio.h>

#include "kernels/kernels.h"
#include "model.h"

cs_token cs_token_bos(const cs_model *m) {
    return tokenizer_bos(m->vocab);
}
cs_token cs_token_eos(const cs_model *m) {
    return tokenizer_eos(m->vocab);
}
cs_token cs_token_unk(const cs_model *m) {
    return tokenizer_unk(m->vocab);
}
bool cs_vocab_add_bos(const cs_model *m) {
    return tokenizer_add_bos(m->vocab);
}
bool cs_token_is_eog(const cs_model *m, cs_token t) {
    return tokenizer_is_eog(m->vocab, t);
}

int32_t cs_tokenize(const cs_model *m, const char *text, size_t len, cs_token *tokens,
                    int32_t n_max, bool add_special, bool parse_special) {
    if (!m || (!text && len > 0) || n_max < 0 || (!tokens && n_max > 0)) {
        error_fail(CS_ERR_INVALID_ARG, "cs_tokenize: bad arguments");
        return INT32_MIN;
    }
    return tokenizer_encode(m->vocab, text ? text : "", len, tokens, n_max, add_special,
                            parse_special);
}

int32_t cs_tokenize_segments(const cs_model *m, const cs_chat_segment *segs, size_t n_segs,
                             cs_token *tokens, int32_t n_max, bool add_special) {
    if (!m) {
        error_fail(CS_ERR_INVALID_ARG, "cs_tokenize_segments: NULL model");
        return INT32_MIN;
    }
    return tokenizer_encode_segments(m->vocab, segs, n_segs, tokens, n_max, add_special);
}

int32_t cs_token_to_piece(const cs_model *m, cs_token t, char *buf, size_t size, bool special) {
    if (!m || (!buf && size > 0)) {
        error_fail(CS_ERR_INVALID_ARG, "cs_token_to_piece: bad arguments");
        return INT32_MIN;
    }
    return tokenizer_token_to_piece(m->vocab, t, buf, size, special);
}

int32_t cs_detokenize(const cs_model *m, const cs_token *tokens, int32_t n, char *buf, size_t size,
                      bool special) {
    if (!m || n < 0 || (!tokens && n > 0) || (!buf && size > 0)) {
        error_fail(CS_ERR_INVALID_ARG, "cs_detokenize: bad arguments");
        return INT32_MIN;
    }
    return tokenizer_decode(m->vocab, tokens, n, buf, size, special);
}

size_t cs_utf8_complete_len(const char *buf, size_t len) {
    /* Look back at most 3 bytes for the lead byte of the last sequence. */
    size_t back = 0;
    while (back < len && back < 4) {
        unsigned char ch = (unsigned char)buf[len - 1 - back];
        if ((ch & 0xC0) != 0x80) { /* a lead byte or ASCII */
            size_t need = ch < 0x80             ? 1
                          : (ch & 0xE0) == 0xC0 ? 2
                          : (ch & 0xF0) == 0xE0 ? 3
                          : (ch & 0xF8) == 0xF0 ? 4
                                                : 1;
            return back + 1 >= need ? len : len - back - 1;
        }
        back++;
    }
    return len; /* only continuation bytes: not ours to hold back */
}

const char *cs_version(void) {
    return CS_VERSION_STRING;
}

const char *cs_system_info(void) {
    static char buf[128];
    const kernels_table *k = kernels_best();
    snprintf(buf, sizeof buf, "kernels = %s | AVX512 = %d | AVX_VNNI = %d | AVX2 = %d", k->name,
             kernels_by_name("avx512") != NULL, kernels_by_name("avxvnni") != NULL,
             kernels_by_name("avx2") != NULL);
    return buf;
}
