/* ctxshift.h: the only public header of ctxshift, a CPU inference engine for
 * Llama-family GGUF models with an application-controlled KV cache.
 *
 * Conventions (docs/ARCHITECTURE.md):
 * - Handles are opaque. Constructors return a cs_status and hand the object
 *   back through an out-parameter, which is set to NULL on failure.
 *   Destructors accept NULL.
 * - Parameter structs come from cs_*_default_params(); zero or negative is
 *   the documented "auto" value of a field.
 * - Failures return a status (< 0) and leave a message naming the field and
 *   the numbers in cs_last_error() (thread-local) and the log callback.
 * - Thread safety: a cs_model is read-only after load and may be shared by
 *   any number of threads and contexts; tokenizer functions are safe on a
 *   shared model. A cs_context, cs_batch and cs_sampler belong to one thread
 *   at a time.
 *
 * This header is C99 and includes only <stdbool.h>, <stddef.h>, <stdint.h>.
 */
#ifndef CTXSHIFT_H
#define CTXSHIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- version
 * The one place the version is written: CMakeLists.txt reads these three
 * lines (project VERSION, the shared library's soname, ctxshift.pc, the
 * CMake package version). CS_VERSION_STRING is what this header was;
 * cs_version() is what the linked library is. */
#define CS_VERSION_MAJOR    0
#define CS_VERSION_MINOR    1
#define CS_VERSION_PATCH    0
#define CS_VERSION_XSTR_(x) #x
#define CS_VERSION_STR_(x)  CS_VERSION_XSTR_(x)
#define CS_VERSION_STRING                                                                          \
    CS_VERSION_STR_(CS_VERSION_MAJOR)                                                              \
    "." CS_VERSION_STR_(CS_VERSION_MINOR) "." CS_VERSION_STR_(CS_VERSION_PATCH)
/* For #if: 10000 * major + 100 * minor + patch. */
#define CS_VERSION_NUMBER (10000 * CS_VERSION_MAJOR + 100 * CS_VERSION_MINOR + CS_VERSION_PATCH)

/* CS_API marks the functions libctxshift.so exports. The library is compiled
 * with -fvisibility=hidden, so everything else (the internal functions the
 * static archive still carries for the tests) stays out of the dynamic
 * symbol table. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define CS_API __attribute__((visibility("default")))
#else
#define CS_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ types */

typedef struct cs_model cs_model;     /* immutable after load; shareable */
typedef struct cs_context cs_context; /* owns a KV cache; one thread at a time */
typedef struct cs_batch cs_batch;     /* tokens for one cs_decode call */
typedef struct cs_sampler cs_sampler; /* token sampler with its own RNG */

typedef int32_t cs_token;
typedef int32_t cs_pos;
/* The largest position a cell holds: cs_decode and the state loads refuse
 * larger ones and seq_add saturates at it, so an open range end (p1 < 0,
 * "to infinity") covers every cell (docs/KV_CACHE_SPEC.md §2.1). */
#define CS_POS_MAX (INT32_MAX - 1)
typedef int32_t cs_seq;

typedef enum cs_status {
    CS_OK = 0,
    CS_NO_KV_SLOT = 1,       /* recoverable: the batch does not fit; cache unchanged */
    CS_ERR_INVALID_ARG = -1, /* a bad argument from the caller */
    CS_ERR_IO = -2,          /* open/read/write/mmap failed */
    CS_ERR_FORMAT = -3,      /* malformed GGUF, state file or request */
    CS_ERR_UNSUPPORTED = -4, /* well-formed but not supported (architecture, type) */
    CS_ERR_NOMEM = -5,       /* an allocation failed */
} cs_status;

/* Tensor / cache element types. The values are ggml's type ids, so they
 * mean the same as in GGUF files. Stored as int32_t in structs. */
enum {
    CS_TYPE_F32 = 0,
    CS_TYPE_F16 = 1,
    CS_TYPE_Q4_0 = 2,
    CS_TYPE_Q4_1 = 3,
    CS_TYPE_Q5_0 = 6,
    CS_TYPE_Q5_1 = 7,
    CS_TYPE_Q8_0 = 8,
    CS_TYPE_Q2_K = 10,
    CS_TYPE_Q3_K = 11,
    CS_TYPE_Q4_K = 12,
    CS_TYPE_Q5_K = 13,
    CS_TYPE_Q6_K = 14,
    CS_TYPE_IQ4_NL = 20,
    CS_TYPE_IQ4_XS = 23,
    CS_TYPE_BF16 = 30,
};

/* ------------------------------------------------------- errors, logging */

/* Static name of a status ("CS_ERR_FORMAT"); never NULL, also for unknown values. */
CS_API const char *cs_status_str(cs_status s);

/* Detail of the last failure on this thread ("gguf: tensor 'x': offset ...").
 * Borrowed; valid until the next failing call on this thread. Never NULL
 * (empty string when nothing failed yet). */
CS_API const char *cs_last_error(void);

enum { CS_LOG_ERROR = 0, CS_LOG_WARN = 1, CS_LOG_INFO = 2, CS_LOG_DEBUG = 3 };

/* Receives one complete message (no trailing newline) per call. */
typedef void (*cs_log_fn)(int32_t level, const char *msg, void *user);

/* Install a log callback (NULL restores the default, which writes ERROR and
 * WARN to stderr) and the most verbose level delivered. Not thread-safe with
 * respect to concurrent logging; call it at start-up. */
CS_API void cs_log_set(cs_log_fn fn, void *user, int32_t max_level);

/* Name of an element type ("f32", "q8_0", "q4_K", ...), or "unknown". Static. */
CS_API const char *cs_type_name(int32_t type);

/* Parse the name of a type listed by cs_weight_types ("f32", "f16", "q4_0",
 * "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "bf16"; case-insensitive). Returns the
 * type id, or -1 for any other name (also for types that exist in ggml but
 * that the engine does not compute with). Callers that need a narrower set
 * (KV cache types: f32, f16, q8_0) check the id. */
CS_API int32_t cs_type_from_name(const char *name);

/* The weight types the engine computes with, in table order: writes up to cap ids to types
 * (types may be NULL when cap is 0) and returns how many there are. Thread-safe, no allocation. */
CS_API int32_t cs_weight_types(int32_t *types, int32_t cap);

/* The version of the linked library ("0.1.0"): CS_VERSION_STRING as the
 * library was built. Static; never NULL. Compare with CS_VERSION_STRING to
 * catch a header / library mismatch. */
CS_API const char *cs_version(void);

/* Static description of the kernels chosen at run time
 * ("kernels = avx512 | AVX512 = 1 | AVX2 = 1"); the first field names the
 * kernel table in use (CS_KERNELS=ref|avx2|avx512 in the environment forces one). */
CS_API const char *cs_system_info(void);

/* ------------------------------------------------------------------ model */

typedef struct cs_model_params {
    bool vocab_only; /* load only metadata and tokenizer (vocab-only GGUF files) */
    bool use_mmap;   /* map the file (default); false reads it into memory */
    /* Reorder the weight matrices (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
     * IQ4_NL, IQ4_XS, Q2_K..Q6_K) in groups of 16 rows at load when the CPU's
     * kernel table has micro-kernels for that layout (AVX-512 and AVX2),
     * default true. Packed into one arena of transparent huge pages (a
     * decode step streams every weight; 4 KiB pages cost bandwidth), each
     * weight's file pages given back once packed: memory stays at about the
     * file's size, and the file is never written. The packed kernels compute each type's
     * packed reference dot bit for bit (for most types the row-major
     * reference dot itself; F16 / BF16 and Q4_K..Q6_K sum in an order of their
     * own); the row-major SIMD dots used without packing agree with them
     * within the kernels' rounding. */
    bool repack;
} cs_model_params;

CS_API cs_model_params cs_model_default_params(void);

/* Load a GGUF file. Every byte of it is validated (docs/GGUF.md). Errors:
 * CS_ERR_IO (cannot open/map), CS_ERR_FORMAT (malformed; the message names
 * the field and the numbers), CS_ERR_UNSUPPORTED (architecture or tensor type
 * not supported, named), CS_ERR_NOMEM. *out is NULL on failure. */
CS_API cs_status cs_model_load(const char *path, const cs_model_params *params, cs_model **out);

/* Free a model. NULL is a no-op. All contexts made from it must be freed first. */
CS_API void cs_model_free(cs_model *model);

CS_API int32_t cs_model_n_vocab(const cs_model *model);
CS_API int32_t cs_model_n_ctx_train(const cs_model *model);
CS_API int32_t cs_model_n_embd(const cs_model *model);
CS_API int32_t cs_model_n_layer(const cs_model *model);
CS_API int32_t cs_model_n_head(const cs_model *model);
CS_API int32_t cs_model_n_head_kv(const cs_model *model);
/* Number of weight parameters and bytes of weight data (0 for vocab-only). */
CS_API uint64_t cs_model_n_params(const cs_model *model);
CS_API uint64_t cs_model_size(const cs_model *model);
/* Bytes of weight data one single-token decode reads: every weight except
 * the token embedding, of which it reads one row (the embedding counts in
 * full when it doubles as the output matrix). Memory bandwidth divided by
 * this bounds generation speed. 0 for vocab-only models. */
CS_API uint64_t cs_model_decode_bytes(const cs_model *model);
/* Writes a short description ("llama 292K F32") into buf (always NUL-terminated
 * when size > 0); returns the length it wanted, snprintf-style. */
CS_API int32_t cs_model_desc(const cs_model *model, char *buf, size_t size);

/* -------------------------------------------------------------- tokenizer */

CS_API cs_token cs_token_bos(const cs_model *model); /* -1 if the vocabulary has none */
CS_API cs_token cs_token_eos(const cs_model *model);
CS_API cs_token cs_token_unk(const cs_model *model);
/* tokenizer.ggml.add_bos_token (or the type's default) */
CS_API bool cs_vocab_add_bos(const cs_model *model);
CS_API bool cs_token_is_eog(const cs_model *model, cs_token t); /* end of generation (EOS, EOT) */

/* Tokenize text[0, len) (need not be NUL-terminated; any bytes accepted,
 * invalid UTF-8 included). add_special adds BOS when the vocabulary asks for
 * it; parse_special turns the text of control tokens into those tokens.
 * Returns the number of tokens written to tokens[0, n_max), or, when n_max
 * is too small, minus the number needed (nothing useful is written then).
 * Returns INT32_MIN on an invalid argument (message in cs_last_error()). */
CS_API int32_t cs_tokenize(const cs_model *model, const char *text, size_t len, cs_token *tokens,
                           int32_t n_max, bool add_special, bool parse_special);

/* The bytes of one token's text (SPM "▁" becomes a space, byte tokens
 * become their byte, control tokens give "" unless special is true). Not
 * NUL-terminated. Returns the byte count, minus the size needed when size is
 * too small, or INT32_MIN for a token id outside the vocabulary. A piece may
 * hold an incomplete UTF-8 sequence: see cs_utf8_complete_len. */
CS_API int32_t cs_token_to_piece(const cs_model *model, cs_token token, char *buf, size_t size,
                                 bool special);

/* Detokenize tokens[0, n): the concatenated pieces, with the leading space
 * of the first piece removed when the vocabulary adds one (SPM), as
 * llama.cpp does: when the first token is BOS its piece is empty, so the
 * space of the following word stays. Not NUL-terminated. Returns the byte
 * count, or minus the size needed. */
CS_API int32_t cs_detokenize(const cs_model *model, const cs_token *tokens, int32_t n, char *buf,
                             size_t size, bool special);

/* For streaming output: the length of the longest prefix of buf[0, len)
 * that does not end inside an incomplete UTF-8 sequence. Print that prefix
 * and keep the rest until more bytes arrive. */
CS_API size_t cs_utf8_complete_len(const char *buf, size_t len);

/* ---------------------------------------------------------------- context */

typedef struct cs_context_params {
    uint32_t n_ctx;           /* KV cells; 0 = the model's training context */
    uint32_t n_batch;         /* max tokens per cs_decode call; 0 = min(n_ctx, 512) */
    uint32_t n_seq_max;       /* sequence ids are [0, n_seq_max), at most 64; 0 = 1 */
    int32_t n_threads;        /* <= 0 = number of online cores */
    int32_t type_k;           /* CS_TYPE_F32, CS_TYPE_F16 (default) or CS_TYPE_Q8_0
                                 (Q8_0 needs a head size that is a multiple of 32) */
    int32_t type_v;           /* same choices as type_k */
    bool contiguous_slots;    /* place each batch in consecutive free cells, as llama.cpp
                                 c392e509 did (spec §1.6); default false: any free cells */
    float defrag_thold;       /* schedule a defrag after a decode when 1 - used/cell_max
                                 exceeds it; <= 0 = never (default -1) */
    int32_t defrag_min_cells; /* no automatic defrag while cell_max is below this (256) */
    int32_t defrag_max_moves; /* block moves per defrag pass; 0 = unlimited (passes
                                 repeat until compact) */
} cs_context_params;

CS_API cs_context_params cs_context_default_params(void);

/* Create a context with an empty KV cache. The model must outlive it.
 * Memory: the KV cache, n_batch rows of activations, and per thread about
 * 5 * n_ctx floats of attention scratch plus, with an F16 K and V cache,
 * head size 64, 128, 192 or 256 and an AVX-512 CPU, a transposed copy of one
 * head's keys for prompts: min(n_ctx, 4 MiB / (4 * head size)) cells of
 * head size floats, at most 4 MiB.
 * Errors: CS_ERR_INVALID_ARG (a parameter out of range, named),
 * CS_ERR_UNSUPPORTED (a vocab-only model), CS_ERR_NOMEM. */
CS_API cs_status cs_context_new(const cs_model *model, const cs_context_params *params,
                                cs_context **out);

/* NULL is a no-op. */
CS_API void cs_context_free(cs_context *ctx);

CS_API uint32_t cs_n_ctx(const cs_context *ctx);     /* KV cells */
CS_API uint32_t cs_n_batch(const cs_context *ctx);   /* max tokens per decode */
CS_API uint32_t cs_n_seq_max(const cs_context *ctx); /* sequence ids are [0, n_seq_max) */
CS_API int32_t cs_n_threads(const cs_context *ctx);
/* Change the number of worker threads (>= 1). Results do not depend on it. */
CS_API cs_status cs_set_n_threads(cs_context *ctx, int32_t n_threads);

/* ------------------------------------------------------------------ batch */

/* Create an empty batch for up to n_tokens_max tokens, each in up to
 * n_seq_per_token_max sequences. */
CS_API cs_status cs_batch_new(int32_t n_tokens_max, int32_t n_seq_per_token_max, cs_batch **out);
CS_API void cs_batch_free(cs_batch *batch); /* NULL is a no-op */
CS_API void cs_batch_clear(cs_batch *batch);
CS_API int32_t cs_batch_n_tokens(const cs_batch *batch);

/* Append one token at position pos in the sequences seqs[0, n_seq);
 * want_logits asks for its logits row. Checks only the batch's own
 * capacity (CS_ERR_INVALID_ARG when full or n_seq is out of range);
 * cs_decode validates ids against the model and context. */
CS_API cs_status cs_batch_add(cs_batch *batch, cs_token token, cs_pos pos, const cs_seq *seqs,
                              int32_t n_seq, bool want_logits);

/* ----------------------------------------------------------------- decode */

/* Run the model on a batch: every token gets a KV cell (its position and
 * sequences recorded, its K and V written), attends to the cells of its
 * first sequence at positions <= its own (spec §1.5), and rows with
 * want_logits get logits.
 * Returns 0 when done; 1 (CS_NO_KV_SLOT) when the cache has no room, with
 * the cache unchanged; < 0 on error (a token id outside the vocabulary, a
 * sequence id outside [0, n_seq_max), a token with no sequence, a negative
 * position, more tokens than n_batch, an empty batch), with the cache unchanged.
 * Logits of an earlier decode are invalidated by any call. */
CS_API int32_t cs_decode(cs_context *ctx, const cs_batch *batch);

/* Logits (n_vocab floats) of batch row i of the last successful decode, or
 * NULL when row i did not ask for logits or is out of range. Borrowed: valid
 * until the next cs_decode on this context. */
CS_API const float *cs_get_logits_ith(cs_context *ctx, int32_t i);

/* ------------------------------------------------------------ KV cache
 * Semantics: docs/KV_CACHE_SPEC.md §2 (docs/KV_CACHE.md).
 * Ranges are half-open [p0, p1); p0 < 0 means 0, p1 < 0 means infinity; an
 * empty range is a no-op. A cell belongs to a set of sequences: a cell
 * shared by several sequences (after seq_cp) is moved by seq_add/seq_div on
 * ANY of them, for all of them (as in llama.cpp; shift every sharing
 * sequence alike, only unshared ranges, or first cs_kv_seq_own the range). Positions change at
 * once; the rotation of the cached K ("K-shift") is applied by cs_kv_update, at the start of the
 * next cs_decode, or before a state save, whichever comes first. Every operation either succeeds or
 * leaves the cache unchanged. */

/* Empty the cache: every cell free, pending shift and defrag dropped. */
CS_API void cs_kv_clear(cs_context *ctx);

/* Remove positions [p0, p1) of sequence seq (seq < 0: every sequence).
 * Cells left with no sequence are freed. CS_ERR_INVALID_ARG for
 * seq >= n_seq_max. */
CS_API cs_status cs_kv_seq_rm(cs_context *ctx, cs_seq seq, cs_pos p0, cs_pos p1);

/* Add dst to the cells of src in [p0, p1): the cells become shared, no
 * data is copied. src == dst is a no-op. If dst already has cells at those
 * positions both stay (duplicate positions; callers usually seq_rm dst
 * first). CS_ERR_INVALID_ARG for ids outside [0, n_seq_max). */
CS_API cs_status cs_kv_seq_cp(cs_context *ctx, cs_seq src, cs_seq dst, cs_pos p0, cs_pos p1);

/* Free every cell without seq; reduce the others to {seq}. */
CS_API cs_status cs_kv_seq_keep(cs_context *ctx, cs_seq seq);

/* Move positions [p0, p1) of seq by delta (pos += delta; the pending
 * rotation accumulates). A cell whose position becomes negative is freed
 * with all its sequences. delta 0 is a no-op. CS_ERR_INVALID_ARG for
 * seq < 0 or out of range; CS_ERR_UNSUPPORTED when !cs_kv_can_shift. */
CS_API cs_status cs_kv_seq_add(cs_context *ctx, cs_seq seq, cs_pos p0, cs_pos p1, cs_pos delta);

/* Divide positions [p0, p1) of seq by d (integer division; the pending
 * rotation accumulates new - old). d == 1 is a no-op. CS_ERR_INVALID_ARG
 * for d < 1 or a bad seq; CS_ERR_UNSUPPORTED when !cs_kv_can_shift. */
CS_API cs_status cs_kv_seq_div(cs_context *ctx, cs_seq seq, cs_pos p0, cs_pos p1, int32_t d);

/* ctxshift's extension (not in llama.cpp): give seq cells of its own for
 * [p0, p1), so that a following seq_add/seq_div on seq cannot move another
 * sequence's cells. Each cell of seq in range that also belongs to another
 * sequence is split: seq leaves it, and a free cell (the lowest free ones,
 * whatever contiguous_slots says) gets an exact copy of its K and V rows in
 * every layer (bytes as stored, any cache type) and of its position and
 * pending rotation, with seq alone; the other sequences keep the original
 * cell. Cells held by seq alone are untouched. All or nothing:
 * CS_NO_KV_SLOT, cache unchanged, when fewer cells are free than cells to
 * split (the caller may then recompute seq's range instead).
 * CS_ERR_INVALID_ARG for seq outside [0, n_seq_max). O(size + split cells
 * * n_layer * row bytes). */
CS_API cs_status cs_kv_seq_own(cs_context *ctx, cs_seq seq, cs_pos p0, cs_pos p1);

/* Smallest / largest position of seq, -1 when it has no cell (or seq is
 * out of range). O(1). */
CS_API cs_pos cs_kv_seq_pos_min(const cs_context *ctx, cs_seq seq);
CS_API cs_pos cs_kv_seq_pos_max(const cs_context *ctx, cs_seq seq);

/* Schedule a defragmentation (hole filling, spec §4) for the next update. */
CS_API void cs_kv_defrag(cs_context *ctx);

/* Apply the pending K-shift (rotating only cells whose position changed),
 * then the scheduled defrag. Errors: CS_ERR_INVALID_ARG for NULL;
 * CS_ERR_NOMEM when the K-shift's scratch cannot be allocated (then nothing
 * was rotated, the shift stays pending and the cache is unchanged). */
CS_API cs_status cs_kv_update(cs_context *ctx);

/* Whether positions can be changed (seq_add/seq_div): true for RoPE llama models. */
CS_API bool cs_kv_can_shift(const cs_context *ctx);

/* Cells holding at least one sequence. */
CS_API int32_t cs_kv_used_cells(const cs_context *ctx);
/* Sum over cells of the number of sequences each holds. */
CS_API int32_t cs_kv_token_count(const cs_context *ctx);

typedef struct cs_kv_info {
    int32_t size;             /* cells */
    int32_t used;             /* non-empty cells */
    int32_t cell_max;         /* 1 + highest non-empty index, 0 when empty */
    int32_t n_window;         /* cells attention scans: cell_max */
    int32_t holes;            /* empty cells below cell_max */
    int32_t n_pending_shift;  /* cells whose K still owes a rotation */
    float fragmentation;      /* 1 - used / cell_max (0 when empty) */
    bool defrag_pending;      /* a defrag is scheduled */
    uint64_t n_shift_passes;  /* updates that rotated something */
    uint64_t n_cells_shifted; /* cell rotations applied (all layers count once) */
    uint64_t n_defrag_passes;
    uint64_t n_cells_moved;
    uint64_t n_blocks_moved;  /* coalesced block moves (per pass, not per layer) */
    uint64_t n_bytes_moved;   /* K and V bytes moved, all layers */
    uint64_t n_bytes_shifted; /* K bytes read and written by K-shift, all layers */
    uint64_t n_cells_owned;   /* shared cells split by cs_kv_seq_own */
    uint64_t n_bytes_owned;   /* K and V bytes copied by cs_kv_seq_own, all layers */
} cs_kv_info;

/* Fill *out with the cache's current figures and totals since creation. */
CS_API cs_status cs_kv_stats(const cs_context *ctx, cs_kv_info *out);

typedef struct cs_kv_cell {
    cs_pos pos;   /* -1 when empty */
    cs_pos delta; /* rotation still owed (0 when none pending) */
    uint64_t seq; /* bit s set: the cell belongs to sequence s */
} cs_kv_cell;

/* Copy the metadata of cells [0, min(size, n_max)) into cells; returns the
 * cache size (call with n_max 0 to learn it). For tests and pictures. */
CS_API int32_t cs_kv_view(const cs_context *ctx, cs_kv_cell *cells, int32_t n_max);

/* ------------------------------------------------------------------ state
 * A state holds the cache metadata and the K/V rows of used cells, with a
 * header (magic, version, a fingerprint of the model's shape and weights,
 * cache types, sizes). Pending shifts are applied before saving. Loading
 * checks every field and every size before changing anything: a failed load
 * (CS_ERR_FORMAT naming the field, CS_ERR_INVALID_ARG for a mismatch with
 * this context) leaves the cache exactly as it was. */

/* Bytes a whole-cache save needs now. */
CS_API size_t cs_state_size(cs_context *ctx);
/* Save the whole cache into buf[0, size); *written gets the byte count.
 * CS_ERR_INVALID_ARG when size is too small. */
CS_API cs_status cs_state_save(cs_context *ctx, void *buf, size_t size, size_t *written);
/* Replace the whole cache with a saved one. */
CS_API cs_status cs_state_load(cs_context *ctx, const void *buf, size_t size);

/* Bytes a save of sequence seq needs now. */
CS_API size_t cs_state_seq_size(cs_context *ctx, cs_seq seq);
/* Save the cells of one sequence (as single-sequence cells). */
CS_API cs_status cs_state_seq_save(cs_context *ctx, cs_seq seq, void *buf, size_t size,
                                   size_t *written);
/* Add a saved sequence to the cache as sequence dst (its cells placed in
 * any free cells: works in a fragmented cache). dst must have no cells.
 * CS_NO_KV_SLOT when there is no room, cache unchanged. */
CS_API cs_status cs_state_seq_load(cs_context *ctx, cs_seq dst, const void *buf, size_t size);

/* Whole-cache state in a file, with tokens[0, n_tokens) alongside (the
 * prompt a cache holds, for prompt caching). Atomic and durable: the state
 * goes to the temporary PATH.tmp-PID (PID of the saving process), which is
 * flushed and fsynced, renamed over PATH, and the directory fsynced; so
 * PATH is always the old file or the whole new one. On failure (CS_ERR_IO
 * naming the file and strerror, e.g. ENOSPC; CS_ERR_NOMEM) the temporary
 * is removed and PATH is untouched. A temporary left by a process that
 * crashed mid-save is recognised by its PID no longer running: every
 * cs_state_save_file and cs_state_load_file of PATH removes such
 * PATH.tmp-PID files (never one of a live process, nor its own) and never
 * reads them (PIDs of this PID namespace: a saver in another container
 * sharing the directory may fail with CS_ERR_IO; PATH is never damaged).
 * Two threads of one process must not save to one PATH at once (they would
 * share the temporary). Cost: the state's bytes, two fsyncs, one pass over
 * the directory's entries. */
CS_API cs_status cs_state_save_file(cs_context *ctx, const char *path, const cs_token *tokens,
                                    int32_t n_tokens);
/* Load a file saved by cs_state_save_file; its tokens go to tokens[0, n_max)
 * and their count to *n_tokens (CS_ERR_INVALID_ARG when n_max is too small,
 * nothing changed). */
CS_API cs_status cs_state_load_file(cs_context *ctx, const char *path, cs_token *tokens,
                                    int32_t n_max, int32_t *n_tokens);

/* ---------------------------------------------------------------- sampler */

typedef struct cs_sampler_params {
    uint64_t seed;           /* RNG seed; the same seed gives the same tokens */
    float temp;              /* <= 0: greedy (arg-max, ties to the lowest id) */
    int32_t top_k;           /* <= 0: off */
    float top_p;             /* in (0, 1]; 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off */
    int32_t repeat_last_n;   /* tokens considered by the penalties; 0: off */
    float frequency_penalty; /* in [-2, 2]; logit -= count in the window * this; 0: off */
    float presence_penalty;  /* in [-2, 2]; logit -= this if the token is in the window; 0: off */
} cs_sampler_params;

/* llama.cpp's defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0, repeat_last_n 64, frequency_penalty 0,
 * presence_penalty 0, seed 0. */
CS_API cs_sampler_params cs_sampler_default_params(void);

/* Errors: CS_ERR_INVALID_ARG for a NaN or out-of-range field, CS_ERR_NOMEM. */
CS_API cs_status cs_sampler_new(const cs_sampler_params *params, int32_t n_vocab, cs_sampler **out);
CS_API void cs_sampler_free(cs_sampler *s); /* NULL is a no-op */

/* Choose a token from logits[0, n_vocab) (not modified). The chain is (as
 * llama.cpp's): logit bias; the penalties over the last repeat_last_n
 * accepted tokens, each distinct token once (repetition: a positive logit
 * divided by repeat_penalty, another multiplied; then logit -= count *
 * frequency_penalty + presence_penalty); then greedy if temp <= 0, else
 * top-k, top-p, min-p, temperature, and a draw. Returns the token, or -1
 * for invalid arguments. */
CS_API cs_token cs_sampler_sample(cs_sampler *s, const float *logits);

/* Record a token as generated (or as prompt) for the repetition penalty. */
CS_API void cs_sampler_accept(cs_sampler *s, cs_token token);
/* Forget accepted tokens and reseed the RNG with the original seed (the
 * logit biases stay). */
CS_API void cs_sampler_reset(cs_sampler *s);

/* Add bias to token's logit before every other step (OpenAI's logit_bias;
 * llama.cpp's logit-bias sampler). Setting a token again replaces its bias;
 * 0 removes it; -INFINITY bans the token. CS_ERR_INVALID_ARG, naming it,
 * for a token outside [0, n_vocab) or a NaN or +INFINITY bias (nothing
 * changed). At most one entry per token: memory is fixed at creation
 * (8 bytes per vocabulary entry); a sample costs O(tokens with a bias). */
CS_API cs_status cs_sampler_set_logit_bias(cs_sampler *s, cs_token token, float bias);
/* Remove every logit bias. NULL is a no-op. */
CS_API void cs_sampler_clear_logit_bias(cs_sampler *s);

/* --------------------------------------------------------- chat templates
 * A GGUF's tokenizer.chat_template (Jinja) is never executed: it is matched
 * to a table of well-known formats by marker substrings, as llama.cpp's
 * llama_chat_apply_template does, and the format is rendered by C code.
 * Format names are llama.cpp's ("chatml", "llama2", "llama3", "mistral-v7",
 * "gemma", ...; cs_chat_template_name lists them). Thread-safe; no
 * allocation anywhere in this section. */

/* One message. role is "system", "user" or "assistant" (any other is
 * CS_ERR_INVALID_ARG); content is NUL-terminated UTF-8 (not checked). */
typedef struct cs_chat_message {
    const char *role;
    const char *content;
} cs_chat_message;

/* One piece of a rendered chat: text[0, len), not NUL-terminated.
 * is_special: text of the template (markers such as "<|im_start|>user\n"),
 * to be tokenized with special-token parsing; false: bytes of a message's
 * content, which must never be parsed for special tokens (a user who types
 * "<|im_end|>" gets those characters, not the control token). text points
 * into static storage (template text) or into the content of the messages
 * passed in (valid while they are). Tokenize them with
 * cs_tokenize_segments (one pass over the joined text, as llama.cpp does),
 * not segment by segment with cs_tokenize, which splits tokens differently
 * at segment boundaries (BPE merges across them; SPM adds its space prefix
 * per call). */
typedef struct cs_chat_segment {
    const char *text;
    size_t len;
    bool is_special;
} cs_chat_segment;

/* The name of the i-th known format, in table order; NULL when i is out of
 * range (count them by calling until NULL). Static storage. */
CS_API const char *cs_chat_template_name(int32_t i);

/* Match a chat template to a known format. tmpl is either a format name
 * (returned as is) or a Jinja template string (tokenizer.chat_template),
 * matched by llama.cpp's marker substrings in llama.cpp's order (for example
 * "<|im_start|>" is chatml, "<|start_header_id|>" with "<|end_header_id|>"
 * is llama3). On CS_OK *name is the static name of the format, or NULL when
 * no format this library renders matches (the unknown answer: the caller
 * chooses a fallback, llama-server's being chatml, and says so). Errors:
 * CS_ERR_INVALID_ARG for a NULL argument. Cost: O(len * markers). */
CS_API cs_status cs_chat_template_detect(const char *tmpl, const char **name);

/* The model's tokenizer.chat_template: borrowed from the model (valid until
 * cs_model_free), or NULL when the file has none (or it is not a string),
 * or for a NULL model. */
CS_API const char *cs_model_chat_template(const cs_model *model);

/* Render msgs[0, n) with the format called name (a name from
 * cs_chat_template_name, not a Jinja string: detect it first), and, when
 * add_assistant, the prompt that opens the assistant's reply (formats that
 * have none ignore it, as llama.cpp does: llama2, mistral-*, orion,
 * minicpm). Writes up to n_max segments to segs (segs may be NULL when
 * n_max is 0) and returns how many there are; when that is > n_max the
 * caller retries with a larger array (what was written is then a prefix).
 * Empty pieces are left out, so concatenating the segments gives exactly
 * what cs_chat_apply_template writes. Errors (a negative cs_status, message
 * in cs_last_error()): CS_ERR_INVALID_ARG for a NULL name or msgs (msgs may
 * be NULL when n is 0), an unknown name, a NULL role or content, a role
 * other than system/user/assistant (naming the message), n_max < 0, or a
 * rendering longer than INT32_MAX - 1 bytes. Cost: O(total content). */
CS_API int32_t cs_chat_apply_segments(const char *name, const cs_chat_message *msgs, size_t n,
                                      bool add_assistant, cs_chat_segment *segs, int32_t n_max);

/* The same rendering as one string, the llama_chat_apply_template way (for
 * display and /apply-template; to tokenize, use the segments, which tell
 * template text from content). Returns its length in bytes (without the
 * NUL); it was written, NUL-terminated, only when that length is < size
 * (otherwise buf[0] is set to NUL when size > 0; retry with length + 1).
 * buf may be NULL when size is 0. Errors: a negative cs_status, as for
 * cs_chat_apply_segments. */
CS_API int32_t cs_chat_apply_template(const char *name, const cs_chat_message *msgs, size_t n,
                                      bool add_assistant, char *buf, size_t size);

/* Tokenize a rendered chat: segs[0, n_segs) joined into one text and
 * tokenized in one pass, exactly as cs_tokenize(joined, parse_special =
 * true) and llama.cpp's llama_tokenize do (raw text that runs across
 * segments is one fragment: BPE merges and SPM's space prefix see it whole),
 * except that a control token (or the unknown token) is matched only where
 * all its bytes lie in is_special segments: text of a content segment is
 * never turned into a control token. User-defined tokens match anywhere,
 * as with cs_tokenize(parse_special = false). So one segment equals
 * cs_tokenize(text, add_special, is_special), and all-special segments equal
 * cs_tokenize of the joined text with parse_special. add_special adds BOS
 * (and EOS) when the vocabulary asks for them; chat formats write no BOS.
 * Returns the number of tokens written to tokens[0, n_max), or, when n_max
 * is too small, minus the number needed (nothing useful is written then).
 * Returns INT32_MIN on an invalid argument (NULL model; NULL segs with
 * n_segs > 0; a segment with NULL text and len > 0; tokens NULL with
 * n_max > 0; n_max < 0; more than INT32_MAX bytes in all), message in
 * cs_last_error(). Allocates a copy of the joined text; cost as
 * cs_tokenize of it. */
CS_API int32_t cs_tokenize_segments(const cs_model *model, const cs_chat_segment *segs,
                                    size_t n_segs, cs_token *tokens, int32_t n_max,
                                    bool add_special);

/* ------------------------------------------------------------- GGUF tools */

/* Receives text chunks (NUL-terminated). */
typedef void (*cs_write_fn)(const char *text, void *user);

/* Describe a GGUF file: version, metadata (arrays longer than max_array_items
 * summarized), then each tensor's name, type, shape and offset. Validates
 * the file as cs_model_load does; on error nothing after the error is written. */
CS_API cs_status cs_gguf_describe(const char *path, int32_t max_array_items, cs_write_fn write,
                                  void *user);

/* Summarize a GGUF file as a model (after cs_gguf_describe in `ctxshift
 * info`): the count of tensors of each type, then, for a file with
 * general.architecture, what cs_model_load makes of it: the family
 * ("llama", "qwen2"), shape, head sizes (k, v), RoPE kind (norm, neox) and
 * scaling (none, linear, llama3 factors), attention biases and output; or
 * the loader's refusal (a line, still CS_OK). Errors: those of opening the
 * GGUF (CS_ERR_IO, CS_ERR_FORMAT), CS_ERR_INVALID_ARG. Cost: a model load
 * without packing. */
CS_API cs_status cs_model_describe(const char *path, cs_write_fn write, void *user);

typedef struct cs_gen_model_params {
    int32_t n_embd;      /* model width */
    int32_t n_layer;     /* blocks */
    int32_t n_head;      /* query heads */
    int32_t n_head_kv;   /* K/V heads (GQA); divides n_head */
    int32_t n_ff;        /* FFN hidden size */
    int32_t n_ctx_train; /* llama.context_length */
    int32_t n_vocab;     /* 0 = the whole vocabulary of vocab_path; else its first n_vocab tokens */
    int32_t type;        /* weight type of the 2-D tensors (norms stay F32) */
    float rope_freq_base;
    float norm_eps;
    bool tied_embeddings;   /* write no output.weight */
    uint64_t seed;          /* weights are a deterministic function of the seed */
    const char *vocab_path; /* a GGUF whose tokenizer.* keys are copied */
    /* Family features; all zero / NULL is the plain llama above. */
    const char *arch; /* general.architecture: "llama" (NULL) or "qwen2" (F32 Q/K/V biases,
                         NEOX RoPE) */
    int32_t head_dim; /* <arch>.attention.key_length = value_length; 0: n_embd / n_head */
    bool rope_freqs;  /* write rope_freqs.weight: Llama 3's "llama3" factors (factor 32,
                         low 1, high 4, original context 8192) */
} cs_gen_model_params;

/* Presets: "tiny" (tests), "110m" (dim 768, 12 layers, 12 heads, FFN 2048),
 * "1.1b" (TinyLlama: dim 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632),
 * and the families' shapes: "llama3-1b" (Llama 3.2 1B: dim 2048, 16 layers,
 * 32 heads, 8 KV heads, FFN 8192, base 5e5, rope_freqs, tied), "smollm2-135m"
 * (dim 576, 30 layers, 9 heads, 3 KV heads, FFN 1536, tied), "qwen2.5-0.5b"
 * (qwen2: dim 896, 24 layers, 14 heads, 2 KV heads, FFN 4864, base 1e6, tied),
 * "nemo-small" (Mistral Nemo's key_length 128 != n_embd / n_head at a small
 * width: dim 320, 2 layers, 8 heads, 2 KV heads, FFN 512, base 1e6).
 * Returns false for an unknown name (params untouched). */
CS_API bool cs_gen_model_preset(const char *name, cs_gen_model_params *params);

/* Write a random-weight llama GGUF that llama.cpp can load. */
CS_API cs_status cs_gen_model_write(const cs_gen_model_params *params, const char *path);

/* Quantize the weights of a llama or qwen2 GGUF file into a new file. TYPE
 * (case-insensitive): a plain weight type ("f16", "bf16", "q8_0", "q4_0",
 * "q4_1", "q5_0", "q5_1", "q2_K" ... "q6_K", "iq4_nl", "iq4_xs"), every 2-D
 * weight in it like `llama-quantize --pure`; or "llama:" and one of
 * llama.cpp's file types (cs_quantize_mix_name: "llama:Q4_K_M",
 * "llama:Q4_0"), each tensor in the type llama-quantize gives it without an
 * importance matrix (a mix whose name is no type's also works bare:
 * "Q4_K_M"). Norms and 1-D tensors stay as they are; a tensor whose row
 * length does not fit the type's block falls back as llama.cpp's does.
 * Metadata copied, general.file_type set. Streams tensor by tensor. Errors:
 * CS_ERR_INVALID_ARG (unknown type, named), CS_ERR_IO, CS_ERR_FORMAT /
 * CS_ERR_UNSUPPORTED from loading IN (another architecture; a mix on a
 * file with experts). */
CS_API cs_status cs_model_quantize(const char *in_path, const char *out_path, const char *type);
/* As cs_model_quantize with n_threads workers (0 = one per online CPU); the
 * output does not depend on n_threads. */
CS_API cs_status cs_model_quantize_threads(const char *in_path, const char *out_path,
                                           const char *type, int32_t n_threads);
/* The name of cs_model_quantize's i-th mix (after "llama:"): "Q4_0", ...,
 * "IQ4_XS", in llama_ftype order; NULL when i is out of range. Static
 * storage. */
CS_API const char *cs_quantize_mix_name(int32_t i);

#ifdef __cplusplus
}
#endif

#endif /* CTXSHIFT_H */
