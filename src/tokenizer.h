/* tokenizer.h: the vocabulary from GGUF tokenizer.ggml.* keys and the
 * SPM (llama) and BPE (gpt2, pre-tokenizer regex through PCRE2)
 * tokenizers. Reproduces llama.cpp's llama_tokenize / llama_token_to_piece.
 * A tokenizer_vocab is immutable after load and safe to share across threads. */
#ifndef CS_TOKENIZER_H
#define CS_TOKENIZER_H

#include "common.h"
#include "gguf.h"

typedef struct tokenizer_vocab tokenizer_vocab;

/* Read the vocabulary of g: tokenizer.ggml.model ("llama" = SPM,
 * "gpt2" = BPE with tokenizer.ggml.pre selecting the pre-tokenizer),
 * tokens, scores, token_type, merges, bos/eos/unk/pad ids, add_bos/add_eos.
 * CS_ERR_FORMAT for malformed or inconsistent keys (named),
 * CS_ERR_UNSUPPORTED for another tokenizer model or pre-tokenizer (named). */
cs_status tokenizer_load(const gguf_file *g, tokenizer_vocab **out);
void tokenizer_free(tokenizer_vocab *v); /* NULL is a no-op */

int32_t tokenizer_n_tokens(const tokenizer_vocab *v);
cs_token tokenizer_bos(const tokenizer_vocab *v); /* -1 if none */
cs_token tokenizer_eos(const tokenizer_vocab *v);
cs_token tokenizer_unk(const tokenizer_vocab *v);
bool tokenizer_add_bos(const tokenizer_vocab *v);
bool tokenizer_is_eog(const tokenizer_vocab *v, cs_token t);

/* Same contracts as cs_tokenize, cs_token_to_piece and cs_detokenize in
 * ctxshift.h. */
int32_t tokenizer_encode(const tokenizer_vocab *v, const char *text, size_t len, cs_token *tokens,
                         int32_t n_max, bool add_special, bool parse_special);
/* Same contract as cs_tokenize_segments in ctxshift.h: the joined segments
 * tokenized in one pass, control tokens matched only inside is_special
 * segments. Allocates a copy of the joined text. */
int32_t tokenizer_encode_segments(const tokenizer_vocab *v, const cs_chat_segment *segs,
                                  size_t n_segs, cs_token *tokens, int32_t n_max, bool add_special);
int32_t tokenizer_token_to_piece(const tokenizer_vocab *v, cs_token t, char *buf, size_t size,
                                 bool special);
int32_t tokenizer_decode(const tokenizer_vocab *v, const cs_token *tokens, int32_t n, char *buf,
                         size_t size, bool special);

#endif /* CS_TOKENIZER_H */
