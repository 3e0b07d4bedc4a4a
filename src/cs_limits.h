/* cs_limits.h: hard caps on untrusted input, one line of reason each
 * (sqliteLimit.h style). A file or request over a cap is refused with an
 * error naming the cap. */
#ifndef CS_LIMITS_H
#define CS_LIMITS_H

/* GGUF: far above any real model (Llama-3-405B has ~1.1k tensors, ~60 keys). */
#define CS_MAX_GGUF_TENSORS 65536
#define CS_MAX_GGUF_KV      65536
/* ggml tensors have at most 4 dimensions. */
#define CS_MAX_DIMS 4
/* Keys and tensor names: ggml's GGML_MAX_NAME is 64; keys stay short. */
#define CS_MAX_NAME_BYTES 256
#define CS_MAX_KEY_BYTES  65535
/* One metadata string (chat templates reach ~10 KB; allow generous room). */
#define CS_MAX_STRING_BYTES (16u << 20)
/* Elements of one metadata array (vocabularies reach 256K; merges ~300K). */
#define CS_MAX_ARRAY_ITEMS (16u << 20)
/* Vocabulary size: the largest public vocabularies are ~262K. */
#define CS_MAX_VOCAB (1 << 21)
/* One dimension of a tensor, and its element count (2^40 = 1 T elements). */
#define CS_MAX_TENSOR_DIM   ((int64_t)1 << 40)
#define CS_MAX_TENSOR_ELEMS ((int64_t)1 << 40)
/* Alignment must be a power of two no larger than this. */
#define CS_MAX_ALIGNMENT (1u << 16)
/* Context cells and batch size: 1M tokens is beyond any CPU use of this engine. */
#define CS_MAX_CTX (1 << 20)
/* Sequence ids per cache: one uint64_t bitset per cell. */
#define CS_MAX_SEQ 64
/* Model shape sanity caps (a corrupt file must not make us allocate terabytes). */
#define CS_MAX_LAYERS 4096
#define CS_MAX_HEADS  4096
#define CS_MAX_EMBD   (1 << 20)
/* Worker threads. */
#define CS_MAX_THREADS 512
/* Bytes of one token text in the vocabulary. */
#define CS_MAX_TOKEN_BYTES 4096

#endif /* CS_LIMITS_H */
