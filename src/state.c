/* state.c: saving and restoring the KV cache (docs/KV_CACHE_SPEC.md §4.6, §7 items 8, 21, 28;
 * format in docs/STATE.md).
 *
 * A state is a little-endian byte string: a fixed 72-byte header (magic,
 * version, kind, model fingerprint, cache types and row sizes, cell and
 * token counts), the token list (files only; empty otherwise), then one
 * record per saved cell: its position, its sequence bitset (whole-cache
 * states only) and, for every layer, the cell's K row and V row copied
 * byte for byte in the cache's own element types.
 *
 * Loading parses and checks the whole input (every count against the bytes
 * that remain, every position and sequence bit) before it changes anything,
 * so a failed load leaves the cache exactly as it was. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "context.h"
#include "cs_limits.h"
#include "kv_cells.h"
#include "model.h"
#include "state_io.h"
#include "types.h"

#define STATE_MAGIC       "CSKV"
#define STATE_VERSION     1u
#define STATE_HEADER_SIZE 72u
/* Bytes hashed at each end of the token embedding and output tensors: cheap
 * (16 KiB at most), and enough to tell apart two random-weight models of the
 * same shape or two fine-tunes of one base. */
#define STATE_HASH_SPAN 4096u

enum { STATE_KIND_WHOLE = 1, STATE_KIND_SEQ = 2 };

/* The fields that tie a state to a model and a cache layout. */
typedef struct state_header {
    uint32_t version;
    uint32_t kind;
    uint32_t n_layer;
    uint32_t n_embd_kv;
    uint32_t head_dim;
    uint32_t n_rot;
    uint32_t rope_base_bits;
    uint32_t rope_scale_bits;
    uint32_t n_vocab;
    uint64_t weights_hash;
    int32_t type_k;
    int32_t type_v;
    uint32_t row_k;
    uint32_t row_v;
    uint32_t n_cells;
    uint32_t n_tokens;
} state_header;

/* A validated state: where its tokens and cell records start. */
typedef struct state_parsed {
    state_header h;
    const uint8_t *tokens; /* n_tokens little-endian int32 */
    const uint8_t *cells;  /* n_cells records of cell_bytes */
    size_t cell_bytes;
} state_parsed;

/* ------------------------------------------------------------ helpers */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* FNV-1a over the first and last STATE_HASH_SPAN bytes of a weight's data,
 * with its byte size mixed in. O(STATE_HASH_SPAN). */
static uint64_t hash_weight(uint64_t h, const model_weight *w) {
    uint64_t row = 0, bytes = 0;
    if (!w->data || !type_row_size(w->type, w->ne0, &row) ||
        !common_mul_u64(row, (uint64_t)w->ne1, &bytes))
        return h;
    uint8_t sz[8];
    put_u64(sz, bytes);
    h = fnv1a(h, sz, sizeof sz);
    const uint8_t *d = w->data;
    size_t span = bytes < STATE_HASH_SPAN ? (size_t)bytes : STATE_HASH_SPAN;
    h = fnv1a(h, d, span);
    return fnv1a(h, d + (size_t)bytes - span, span);
}

uint64_t state_weights_hash(const cs_model *m) {
    uint64_t wh = 1469598103934665603ull; /* FNV-1a offset basis */
    wh = hash_weight(wh, &m->tok_embd);
    return hash_weight(wh, &m->output);
}

/* The header this context would write for a state of the given kind. */
static state_header header_of(const cs_context *ctx, uint32_t kind, uint32_t n_cells,
                              uint32_t n_tokens) {
    const cs_model *m = ctx->model;
    const model_hparams *hp = &m->hp;
    state_header h;
    memset(&h, 0, sizeof h);
    h.version = STATE_VERSION;
    h.kind = kind;
    h.n_layer = (uint32_t)hp->n_layer;
    h.n_embd_kv = (uint32_t)hp->n_embd_kv;
    h.head_dim = (uint32_t)hp->head_dim;
    h.n_rot = (uint32_t)hp->n_rot;
    h.rope_base_bits = f32_bits(hp->rope_freq_base);
    h.rope_scale_bits = f32_bits(hp->rope_freq_scale);
    h.n_vocab = (uint32_t)hp->n_vocab;
    h.weights_hash = m->weights_hash;
    h.type_k = ctx->kv.type_k;
    h.type_v = ctx->kv.type_v;
    h.row_k = (uint32_t)ctx->kv.row_k;
    h.row_v = (uint32_t)ctx->kv.row_v;
    h.n_cells = n_cells;
    h.n_tokens = n_tokens;
    return h;
}

static void header_write(const state_header *h, uint8_t *p) {
    memcpy(p, STATE_MAGIC, 4);
    put_u32(p + 4, h->version);
    put_u32(p + 8, h->kind);
    put_u32(p + 12, h->n_layer);
    put_u32(p + 16, h->n_embd_kv);
    put_u32(p + 20, h->head_dim);
    put_u32(p + 24, h->n_rot);
    put_u32(p + 28, h->rope_base_bits);
    put_u32(p + 32, h->rope_scale_bits);
    put_u32(p + 36, h->n_vocab);
    put_u64(p + 40, h->weights_hash);
    put_u32(p + 48, (uint32_t)h->type_k);
    put_u32(p + 52, (uint32_t)h->type_v);
    put_u32(p + 56, h->row_k);
    put_u32(p + 60, h->row_v);
    put_u32(p + 64, h->n_cells);
    put_u32(p + 68, h->n_tokens);
}

/* Bytes of one cell record of a kind: pos, the seq bitset for whole-cache
 * states, then K and V rows of every layer. */
static bool cell_bytes_of(uint32_t kind, uint32_t n_layer, uint64_t row_k, uint64_t row_v,
                          size_t *out) {
    uint64_t rows, per = 4 + (kind == STATE_KIND_WHOLE ? 8 : 0);
    if (!common_add_u64(row_k, row_v, &rows) || !common_mul_u64(rows, n_layer, &rows) ||
        !common_add_u64(per, rows, &per) || per > SIZE_MAX)
        return false;
    *out = (size_t)per;
    return true;
}

/* Total bytes of a state; false on overflow. */
static bool total_bytes(size_t cell_bytes, uint64_t n_cells, uint64_t n_tokens, size_t *out) {
    uint64_t cells, toks, total;
    if (!common_mul_u64(cell_bytes, n_cells, &cells) || !common_mul_u64(4, n_tokens, &toks) ||
        !common_add_u64(STATE_HEADER_SIZE, toks, &total) || !common_add_u64(total, cells, &total) ||
        total > SIZE_MAX)
        return false;
    *out = (size_t)total;
    return true;
}

static bool ctx_cell_bytes(const cs_context *ctx, uint32_t kind, size_t *out) {
    return cell_bytes_of(kind, (uint32_t)ctx->model->hp.n_layer, ctx->kv.row_k, ctx->kv.row_v, out);
}

/* Cells a save of seq (< 0: the whole cache) would hold. O(size). */
static uint32_t count_cells(const kv_cells *c, cs_seq seq) {
    if (seq < 0) return (uint32_t)c->used;
    uint32_t n = 0;
    const uint64_t m = (uint64_t)1 << seq;
    for (int32_t i = 0; i < c->size; i++)
        if (c->seq[i] & m) n++;
    return n;
}

/* ------------------------------------------------------------ I/O seam */

static size_t io_write_default(const void *p, size_t n, FILE *f) {
    return fwrite(p, 1, n, f);
}
static size_t io_read_default(void *p, size_t n, FILE *f) {
    return fread(p, 1, n, f);
}

static state_io_hooks g_io = {io_write_default, io_read_default, fsync};

void state_io_set_hooks(const state_io_hooks *hooks) {
    g_io.write = hooks && hooks->write ? hooks->write : io_write_default;
    g_io.read = hooks && hooks->read ? hooks->read : io_read_default;
    g_io.fsync = hooks && hooks->fsync ? hooks->fsync : fsync;
}

/* ------------------------------------------------------------ writing */

/* Where serialised bytes go: a caller buffer (capacity already checked) or
 * a file. */
typedef struct state_sink {
    uint8_t *buf;
    size_t off;
    FILE *f;
    bool failed;
    int err; /* errno of the first failed write */
} state_sink;

static void sink_put(state_sink *s, const void *p, size_t n) {
    if (n == 0 || s->failed) return;
    if (s->f) {
        errno = 0;
        const size_t put = g_io.write(p, n, s->f);
        s->off += put;
        if (put != n) {
            s->failed = true;
            s->err = errno ? errno : EIO;
        }
        return;
    }
    memcpy(s->buf + s->off, p, n);
    s->off += n;
}

/* Serialise the cells of seq (< 0: every used cell) in index order, plus
 * tokens, after the caller applied pending updates. O(size + bytes). */
static void state_write(const cs_context *ctx, cs_seq seq, uint32_t n_cells, const cs_token *tokens,
                        uint32_t n_tokens, state_sink *s) {
    const kv_cells *c = &ctx->cells;
    const uint32_t kind = seq < 0 ? STATE_KIND_WHOLE : STATE_KIND_SEQ;
    const state_header h = header_of(ctx, kind, n_cells, n_tokens);
    uint8_t hdr[STATE_HEADER_SIZE];
    header_write(&h, hdr);
    sink_put(s, hdr, sizeof hdr);
    for (uint32_t t = 0; t < n_tokens; t++) {
        uint8_t b[4];
        put_u32(b, (uint32_t)tokens[t]);
        sink_put(s, b, sizeof b);
    }
    const int32_t n_layer = ctx->model->hp.n_layer;
    const uint64_t mask = seq < 0 ? ~(uint64_t)0 : (uint64_t)1 << seq;
    uint32_t written = 0;
    for (int32_t i = 0; i < c->size; i++) {
        if (!(c->seq[i] & mask)) continue;
        uint8_t meta[12];
        put_u32(meta, (uint32_t)c->pos[i]);
        size_t nm = 4;
        if (kind == STATE_KIND_WHOLE) {
            put_u64(meta + 4, c->seq[i]);
            nm = 12;
        }
        sink_put(s, meta, nm);
        /* the cell's rows, head after head (kv_cache.h: the store is head-major) */
        const kv_store *kv = &ctx->kv;
        for (int32_t il = 0; il < n_layer; il++) {
            for (int32_t hk = 0; hk < kv->n_head_kv; hk++)
                sink_put(s, (const uint8_t *)kv->k[il] + kv_store_off(kv, false, hk, i),
                         kv->head_k);
            for (int32_t hk = 0; hk < kv->n_head_kv; hk++)
                sink_put(s, (const uint8_t *)kv->v[il] + kv_store_off(kv, true, hk, i), kv->head_v);
        }
        written++;
    }
    CS_ASSERT(written == n_cells);
}

static cs_status save_to_buffer(cs_context *ctx, cs_seq seq, void *buf, size_t size,
                                size_t *written, const char *fn) {
    if (written) *written = 0;
    if (!ctx || (!buf && size > 0))
        return error_fail(CS_ERR_INVALID_ARG, "%s: context and buffer must be set", fn);
    if (seq >= (cs_seq)ctx->n_seq_max)
        return error_fail(CS_ERR_INVALID_ARG, "%s: sequence id %d outside [0, %u)", fn, seq,
                          ctx->n_seq_max);
    const uint32_t kind = seq < 0 ? STATE_KIND_WHOLE : STATE_KIND_SEQ;
    const uint32_t n_cells = count_cells(&ctx->cells, seq);
    size_t cell_bytes = 0, need = 0;
    if (!ctx_cell_bytes(ctx, kind, &cell_bytes) || !total_bytes(cell_bytes, n_cells, 0, &need))
        return error_fail(CS_ERR_INVALID_ARG, "%s: state size overflows", fn);
    if (size < need)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: buffer of %zu bytes is too small: the state needs %zu", fn, size,
                          need);
    /* spec §7 item 28: apply pending shifts (and defrag) so that the saved K
     * matches the saved positions. Does not change the cell count. */
    cs_status st = cs_kv_update(ctx);
    if (st != CS_OK) return st;
    CS_ASSERT(count_cells(&ctx->cells, seq) == n_cells);
    state_sink s = {buf, 0, NULL, false, 0};
    state_write(ctx, seq, n_cells, NULL, 0, &s);
    CS_ASSERT(s.off == need);
    if (written) *written = need;
    return CS_OK;
}

/* ------------------------------------------------------------ parsing */

static cs_status truncated(const char *fn, const char *field, size_t off, size_t need,
                           size_t have) {
    return error_fail(CS_ERR_FORMAT,
                      "%s: truncated state: field '%s' at offset %zu needs %zu bytes, %zu remain",
                      fn, field, off, need, have);
}

static cs_status mismatch_u(const char *fn, const char *field, uint64_t saved, uint64_t here) {
    return error_fail(CS_ERR_INVALID_ARG,
                      "%s: model fingerprint mismatch: %s is %llu in the state, %llu in this "
                      "context's model",
                      fn, field, (unsigned long long)saved, (unsigned long long)here);
}

/* Read and check the header fields of data[0, size) against ctx: the
 * magic, version and kind, the model fingerprint, the cache types; and
 * compute the exact byte size the counts imply (*need). Reads at most
 * STATE_HEADER_SIZE bytes; changes nothing. */
static cs_status header_parse(const cs_context *ctx, const uint8_t *data, size_t size,
                              uint32_t want_kind, const char *fn, state_header *out,
                              size_t *cell_bytes, size_t *need) {
    static const struct {
        const char *name;
        uint32_t off, len;
    } fields[] = {{"magic", 0, 4},    {"version", 4, 4},         {"kind", 8, 4},
                  {"n_layer", 12, 4}, {"n_embd_kv", 16, 4},      {"head_dim", 20, 4},
                  {"n_rot", 24, 4},   {"rope_freq_base", 28, 4}, {"rope_freq_scale", 32, 4},
                  {"n_vocab", 36, 4}, {"weights_hash", 40, 8},   {"type_k", 48, 4},
                  {"type_v", 52, 4},  {"row_k", 56, 4},          {"row_v", 60, 4},
                  {"n_cells", 64, 4}, {"n_tokens", 68, 4}};
    if (!data && size > 0) return error_fail(CS_ERR_INVALID_ARG, "%s: buffer is NULL", fn);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (size < (size_t)fields[i].off + fields[i].len)
            return truncated(fn, fields[i].name, fields[i].off, fields[i].len,
                             size > fields[i].off ? size - fields[i].off : 0);
    if (memcmp(data, STATE_MAGIC, 4) != 0)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: magic is %02x %02x %02x %02x, expected \"%s\": not a ctxshift state",
                          fn, data[0], data[1], data[2], data[3], STATE_MAGIC);
    state_header h;
    h.version = get_u32(data + 4);
    h.kind = get_u32(data + 8);
    h.n_layer = get_u32(data + 12);
    h.n_embd_kv = get_u32(data + 16);
    h.head_dim = get_u32(data + 20);
    h.n_rot = get_u32(data + 24);
    h.rope_base_bits = get_u32(data + 28);
    h.rope_scale_bits = get_u32(data + 32);
    h.n_vocab = get_u32(data + 36);
    h.weights_hash = get_u64(data + 40);
    h.type_k = (int32_t)get_u32(data + 48);
    h.type_v = (int32_t)get_u32(data + 52);
    h.row_k = get_u32(data + 56);
    h.row_v = get_u32(data + 60);
    h.n_cells = get_u32(data + 64);
    h.n_tokens = get_u32(data + 68);

    if (h.version != STATE_VERSION)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: state format version is %u, this library reads %u", fn, h.version,
                          STATE_VERSION);
    if (h.kind != STATE_KIND_WHOLE && h.kind != STATE_KIND_SEQ)
        return error_fail(CS_ERR_FORMAT, "%s: kind is %u at offset 8, expected %d or %d", fn,
                          h.kind, STATE_KIND_WHOLE, STATE_KIND_SEQ);
    if (h.kind != want_kind)
        return error_fail(CS_ERR_INVALID_ARG, "%s: the state holds %s, this call loads %s", fn,
                          h.kind == STATE_KIND_WHOLE ? "a whole cache" : "one sequence",
                          want_kind == STATE_KIND_WHOLE ? "a whole cache (cs_state_load)"
                                                        : "one sequence (cs_state_seq_load)");

    const state_header e = header_of(ctx, want_kind, 0, 0);
    if (h.n_layer != e.n_layer) return mismatch_u(fn, "n_layer", h.n_layer, e.n_layer);
    if (h.n_embd_kv != e.n_embd_kv) return mismatch_u(fn, "n_embd_kv", h.n_embd_kv, e.n_embd_kv);
    if (h.head_dim != e.head_dim) return mismatch_u(fn, "head_dim", h.head_dim, e.head_dim);
    if (h.n_rot != e.n_rot) return mismatch_u(fn, "n_rot", h.n_rot, e.n_rot);
    if (h.rope_base_bits != e.rope_base_bits)
        return mismatch_u(fn, "rope_freq_base bits", h.rope_base_bits, e.rope_base_bits);
    if (h.rope_scale_bits != e.rope_scale_bits)
        return mismatch_u(fn, "rope_freq_scale bits", h.rope_scale_bits, e.rope_scale_bits);
    if (h.n_vocab != e.n_vocab) return mismatch_u(fn, "n_vocab", h.n_vocab, e.n_vocab);
    if (h.weights_hash != e.weights_hash)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: model fingerprint mismatch: weights_hash is %016llx in the state, "
                          "%016llx in this context's model (different weights)",
                          fn, (unsigned long long)h.weights_hash,
                          (unsigned long long)e.weights_hash);
    if (h.type_k != e.type_k || h.type_v != e.type_v)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: cache types mismatch: the state has type_k %s (%d), type_v %s (%d); "
                          "this context has type_k %s (%d), type_v %s (%d)",
                          fn, cs_type_name(h.type_k), h.type_k, cs_type_name(h.type_v), h.type_v,
                          cs_type_name(e.type_k), e.type_k, cs_type_name(e.type_v), e.type_v);
    if (h.row_k != e.row_k || h.row_v != e.row_v)
        return error_fail(CS_ERR_FORMAT,
                          "%s: row sizes row_k %u, row_v %u at offset 56 do not match the cache "
                          "types (%u, %u)",
                          fn, h.row_k, h.row_v, e.row_k, e.row_v);
    if (!cell_bytes_of(h.kind, h.n_layer, h.row_k, h.row_v, cell_bytes) ||
        !total_bytes(*cell_bytes, h.n_cells, h.n_tokens, need))
        return error_fail(CS_ERR_FORMAT, "%s: n_cells %u and n_tokens %u overflow the state size",
                          fn, h.n_cells, h.n_tokens);
    *out = h;
    return CS_OK;
}

/* Check all of data[0, size) against ctx: the header, the exact size the
 * counts imply, every token id, position and sequence bitset. On success *p
 * describes the tokens and cells. Changes nothing. O(size of the header +
 * n_tokens + n_cells). */
static cs_status state_parse(const cs_context *ctx, const uint8_t *data, size_t size,
                             uint32_t want_kind, const char *fn, state_parsed *p) {
    memset(p, 0, sizeof *p);
    state_header h;
    size_t cell_bytes = 0, need = 0;
    cs_status st = header_parse(ctx, data, size, want_kind, fn, &h, &cell_bytes, &need);
    if (st != CS_OK) return st;

    /* Every count against the bytes that remain: the size must be exact. */
    const size_t tok_end = STATE_HEADER_SIZE + (size_t)h.n_tokens * 4;
    if (size < tok_end)
        return truncated(fn, "tokens", STATE_HEADER_SIZE, (size_t)h.n_tokens * 4,
                         size - STATE_HEADER_SIZE);
    if (size < need) {
        /* name the first cell record that is cut off */
        const size_t cut = (size - tok_end) / cell_bytes;
        char field[48];
        snprintf(field, sizeof field, "cell %zu of %u", cut, h.n_cells);
        return truncated(fn, field, tok_end + cut * cell_bytes, cell_bytes,
                         size - tok_end - cut * cell_bytes);
    }
    if (size > need)
        return error_fail(CS_ERR_FORMAT,
                          "%s: %zu trailing bytes after the last cell at offset %zu (n_cells %u)",
                          fn, size - need, need, h.n_cells);
    if (h.n_cells > ctx->n_ctx)
        return error_fail(CS_ERR_INVALID_ARG, "%s: the state holds %u cells, this context has %u",
                          fn, h.n_cells, ctx->n_ctx);

    const int32_t n_vocab = ctx->model->hp.n_vocab;
    for (uint32_t t = 0; t < h.n_tokens; t++) {
        const size_t off = STATE_HEADER_SIZE + (size_t)t * 4;
        const int32_t tok = (int32_t)get_u32(data + off);
        if (tok < 0 || tok >= n_vocab)
            return error_fail(CS_ERR_FORMAT, "%s: token %u at offset %zu is %d, outside [0, %d)",
                              fn, t, off, tok, n_vocab);
    }
    const uint64_t seq_ok =
        ctx->n_seq_max >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << ctx->n_seq_max) - 1;
    for (uint32_t i = 0; i < h.n_cells; i++) {
        const size_t off = tok_end + (size_t)i * cell_bytes;
        const int32_t pos = (int32_t)get_u32(data + off);
        if (pos < 0 || pos > CS_POS_MAX)
            return error_fail(CS_ERR_FORMAT,
                              "%s: cell %u: position %d at offset %zu is outside [0, %d]", fn, i,
                              pos, off, CS_POS_MAX);
        if (h.kind != STATE_KIND_WHOLE) continue;
        const uint64_t bits = get_u64(data + off + 4);
        if (bits == 0)
            return error_fail(CS_ERR_FORMAT, "%s: cell %u: empty sequence set at offset %zu", fn, i,
                              off + 4);
        if (bits & ~seq_ok)
            return error_fail(CS_ERR_INVALID_ARG,
                              "%s: cell %u: sequence bits %#llx at offset %zu name ids outside "
                              "[0, %u) of this context",
                              fn, i, (unsigned long long)bits, off + 4, ctx->n_seq_max);
    }
    p->h = h;
    p->tokens = data + STATE_HEADER_SIZE;
    p->cells = data + tok_end;
    p->cell_bytes = cell_bytes;
    return CS_OK;
}

/* Copy the K and V rows of a parsed record into cell idx. */
static void copy_rows(cs_context *ctx, const uint8_t *rec, size_t meta, int32_t idx) {
    const uint8_t *src = rec + meta;
    for (int32_t il = 0; il < ctx->model->hp.n_layer; il++) {
        kv_store_put_row(&ctx->kv, false, ctx->kv.k[il], idx, src);
        src += ctx->kv.row_k;
        kv_store_put_row(&ctx->kv, true, ctx->kv.v[il], idx, src);
        src += ctx->kv.row_v;
    }
}

/* Replace the cache with a parsed whole-cache state: cells compacted to
 * indices [0, n_cells) in saved order. Cannot fail. */
static void apply_whole(cs_context *ctx, const state_parsed *p) {
    cs_kv_clear(ctx);
    for (uint32_t i = 0; i < p->h.n_cells; i++) {
        const uint8_t *rec = p->cells + (size_t)i * p->cell_bytes;
        kv_cells_assign(&ctx->cells, (int32_t)i, (cs_pos)get_u32(rec), get_u64(rec + 4));
        copy_rows(ctx, rec, 12, (int32_t)i);
    }
}

/* ------------------------------------------------------------ public API */

size_t cs_state_size(cs_context *ctx) {
    size_t cb = 0, total = 0;
    if (!ctx || !ctx_cell_bytes(ctx, STATE_KIND_WHOLE, &cb) ||
        !total_bytes(cb, (uint64_t)ctx->cells.used, 0, &total))
        return 0;
    return total;
}

cs_status cs_state_save(cs_context *ctx, void *buf, size_t size, size_t *written) {
    return save_to_buffer(ctx, -1, buf, size, written, "cs_state_save");
}

cs_status cs_state_load(cs_context *ctx, const void *buf, size_t size) {
    if (!ctx) return error_fail(CS_ERR_INVALID_ARG, "cs_state_load: context is NULL");
    state_parsed p;
    cs_status st = state_parse(ctx, buf, size, STATE_KIND_WHOLE, "cs_state_load", &p);
    if (st != CS_OK) return st;
    apply_whole(ctx, &p);
    return CS_OK;
}

size_t cs_state_seq_size(cs_context *ctx, cs_seq seq) {
    size_t cb = 0, total = 0;
    if (!ctx || seq < 0 || seq >= (cs_seq)ctx->n_seq_max ||
        !ctx_cell_bytes(ctx, STATE_KIND_SEQ, &cb) ||
        !total_bytes(cb, count_cells(&ctx->cells, seq), 0, &total))
        return 0;
    return total;
}

cs_status cs_state_seq_save(cs_context *ctx, cs_seq seq, void *buf, size_t size, size_t *written) {
    if (seq < 0) {
        if (written) *written = 0;
        return error_fail(CS_ERR_INVALID_ARG, "cs_state_seq_save: sequence id %d is negative", seq);
    }
    return save_to_buffer(ctx, seq, buf, size, written, "cs_state_seq_save");
}

cs_status cs_state_seq_load(cs_context *ctx, cs_seq dst, const void *buf, size_t size) {
    const char *fn = "cs_state_seq_load";
    if (!ctx) return error_fail(CS_ERR_INVALID_ARG, "%s: context is NULL", fn);
    if (dst < 0 || dst >= (cs_seq)ctx->n_seq_max)
        return error_fail(CS_ERR_INVALID_ARG, "%s: sequence id %d outside [0, %u)", fn, dst,
                          ctx->n_seq_max);
    if (kv_cells_seq_pos_max(&ctx->cells, dst) >= 0)
        return error_fail(CS_ERR_INVALID_ARG,
                          "%s: sequence %d already has cells (positions %d..%d); remove them first",
                          fn, dst, kv_cells_seq_pos_min(&ctx->cells, dst),
                          kv_cells_seq_pos_max(&ctx->cells, dst));
    state_parsed p;
    cs_status st = state_parse(ctx, buf, size, STATE_KIND_SEQ, fn, &p);
    if (st != CS_OK) return st;
    const int32_t n = (int32_t)p.h.n_cells;
    if (n == 0) return CS_OK;
    if (n > ctx->cells.size - ctx->cells.used) return CS_NO_KV_SLOT;
    int32_t *idx = mem_malloc((size_t)n * sizeof *idx);
    if (!idx) return error_fail(CS_ERR_NOMEM, "%s: out of memory for %d cell indices", fn, n);
    /* spec §7 item 21: any free cells, so that a fragmented cache works */
    const int32_t head = ctx->cells.head;
    if (!kv_cells_find_slot(&ctx->cells, n, false, idx)) {
        ctx->cells.head = head; /* the search may move the hint; restore it */
        mem_free(idx);
        return CS_NO_KV_SLOT;
    }
    const uint64_t bit = (uint64_t)1 << dst;
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *rec = p.cells + (size_t)i * p.cell_bytes;
        kv_cells_assign(&ctx->cells, idx[i], (cs_pos)get_u32(rec), bit);
        copy_rows(ctx, rec, 4, idx[i]);
    }
    mem_free(idx);
    return CS_OK;
}

/* ------------------------------------------------------------ files */

/* The temporary a save of path writes: path + STATE_TMP_TAG + decimal PID
 * of the saving process. */
#define STATE_TMP_TAG ".tmp-"

/* Names derived from a state file's path: the directory (for the stale
 * scan and the directory fsync) and the temporary. One allocation. */
typedef struct state_names {
    char *dir; /* "." when path has no '/' */
    const char *base;
    char *tmp; /* path.tmp-PID */
    char *block;
} state_names;

static cs_status names_of(const char *path, const char *fn, state_names *nm) {
    memset(nm, 0, sizeof *nm);
    const char *slash = strrchr(path, '/');
    const size_t plen = strlen(path);
    const size_t dlen = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    size_t need;
    /* dir + NUL, path + tag + up to 20 digits + NUL */
    if (!common_add_size(plen, dlen + sizeof STATE_TMP_TAG + 22, &need) ||
        !(nm->block = mem_malloc(need)))
        return error_fail(CS_ERR_NOMEM, "%s: out of memory for the names of '%s'", fn, path);
    nm->dir = nm->block;
    if (!slash)
        memcpy(nm->dir, ".", 2);
    else if (slash == path)
        memcpy(nm->dir, "/", 2);
    else {
        memcpy(nm->dir, path, dlen);
        nm->dir[dlen] = '\0';
    }
    nm->base = slash ? slash + 1 : path;
    nm->tmp = nm->dir + dlen + 1;
    snprintf(nm->tmp, need - dlen - 1, "%s" STATE_TMP_TAG "%ld", path, (long)getpid());
    return CS_OK;
}

/* Remove the temporaries of base in dir that a process which no longer
 * exists left behind (it crashed between creating and renaming): entries
 * named base.tmp-PID, PID all digits, not this process, and kill(PID, 0)
 * answering ESRCH. A live process's temporary (a save in progress) is left
 * alone; a reused PID keeps its stale file until that process ends. PIDs
 * are this PID namespace's: a saver in another container sharing the
 * directory may lose its temporary, and its rename then fails with
 * CS_ERR_IO; PATH is never damaged. Best effort: errors are ignored (a
 * temporary is never read). Cost: one pass over the directory's entries. */
static void remove_stale_temporaries(const state_names *nm) {
    DIR *d = opendir(nm->dir);
    if (!d) return;
    const size_t blen = strlen(nm->base), tlen = strlen(STATE_TMP_TAG);
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, nm->base, blen) != 0 || strncmp(name + blen, STATE_TMP_TAG, tlen) != 0)
            continue;
        const char *digits = name + blen + tlen;
        char *end = NULL;
        errno = 0;
        const long pid = strtol(digits, &end, 10);
        if (digits[0] < '0' || digits[0] > '9' || *end != '\0' || errno != 0 || pid <= 0 ||
            pid != (long)(pid_t)pid || (pid_t)pid == getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        unlinkat(dirfd(d), name, 0);
    }
    closedir(d);
}

cs_status cs_state_save_file(cs_context *ctx, const char *path, const cs_token *tokens,
                             int32_t n_tokens) {
    const char *fn = "cs_state_save_file";
    if (!ctx || !path || n_tokens < 0 || (n_tokens > 0 && !tokens))
        return error_fail(CS_ERR_INVALID_ARG, "%s: context, path and tokens must be set", fn);
    const int32_t n_vocab = ctx->model->hp.n_vocab;
    for (int32_t t = 0; t < n_tokens; t++)
        if (tokens[t] < 0 || tokens[t] >= n_vocab)
            return error_fail(CS_ERR_INVALID_ARG, "%s: token %d is %d, outside [0, %d)", fn, t,
                              tokens[t], n_vocab);
    /* the names first: an allocation failure must come before the pending
     * shift is applied, so that a failed save changes nothing */
    state_names nm;
    cs_status st = names_of(path, fn, &nm);
    if (st != CS_OK) return st;
    if ((st = cs_kv_update(ctx)) != CS_OK) {
        mem_free(nm.block);
        return st;
    }
    remove_stale_temporaries(&nm);
    const uint32_t n_cells = (uint32_t)ctx->cells.used;

    const char *tmp = nm.tmp;
    bool created = false;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = error_fail(CS_ERR_IO, "%s: cannot create '%s': %s", fn, tmp, strerror(errno));
        goto fail;
    }
    created = true;
    state_sink s = {NULL, 0, f, false, 0};
    state_write(ctx, -1, n_cells, tokens, (uint32_t)n_tokens, &s);
    if (s.failed) {
        st = error_fail(CS_ERR_IO, "%s: cannot write '%s' (%zu bytes written): %s", fn, tmp, s.off,
                        strerror(s.err));
        goto fail;
    }
    /* durable: the data reaches the disk before the rename makes it the
     * file, so a crash leaves the old file or the new one, never a torn one */
    if (fflush(f) != 0 || g_io.fsync(fileno(f)) != 0) {
        st = error_fail(CS_ERR_IO, "%s: cannot flush '%s' to disk: %s", fn, tmp, strerror(errno));
        goto fail;
    }
    const int close_rc = fclose(f);
    f = NULL;
    if (close_rc != 0) {
        st = error_fail(CS_ERR_IO, "%s: cannot close '%s': %s", fn, tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        st = error_fail(CS_ERR_IO, "%s: cannot rename '%s' to '%s': %s", fn, tmp, path,
                        strerror(errno));
        goto fail;
    }
    created = false;
    /* and the rename itself: fsync the directory (EINVAL: a file system
     * that cannot sync directories; the rename is then as durable as it
     * gets) */
    const int dfd = open(nm.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || (g_io.fsync(dfd) != 0 && errno != EINVAL)) {
        st = error_fail(CS_ERR_IO,
                        "%s: '%s' was written but its directory '%s' cannot be synced: %s", fn,
                        path, nm.dir, strerror(errno));
        if (dfd >= 0) close(dfd);
        goto fail;
    }
    close(dfd);
    mem_free(nm.block);
    return CS_OK;
fail:
    if (f) fclose(f);
    if (created) remove(tmp);
    mem_free(nm.block);
    return st;
}

cs_status cs_state_load_file(cs_context *ctx, const char *path, cs_token *tokens, int32_t n_max,
                             int32_t *n_tokens) {
    const char *fn = "cs_state_load_file";
    if (n_tokens) *n_tokens = 0;
    if (!ctx || !path || !n_tokens || n_max < 0 || (n_max > 0 && !tokens))
        return error_fail(CS_ERR_INVALID_ARG, "%s: context, path, tokens and n_tokens must be set",
                          fn);
    state_names nm;
    cs_status st = names_of(path, fn, &nm);
    if (st != CS_OK) return st;
    remove_stale_temporaries(&nm);
    mem_free(nm.block);
    uint8_t *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return error_fail(CS_ERR_IO, "%s: cannot open '%s': %s", fn, path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 0) {
        st = error_fail(CS_ERR_IO, "%s: '%s' is not a readable regular file", fn, path);
        goto done;
    }
    const uint64_t fsize = (uint64_t)sb.st_size;
    char who[512]; /* messages about the contents name the file */
    snprintf(who, sizeof who, "%s '%s'", fn, path);
    /* The header first (bounded read), so that the counts can be checked
     * against this context and the caller's buffer before anything larger
     * is allocated. */
    uint8_t hdr[STATE_HEADER_SIZE];
    const size_t want_hdr = fsize < sizeof hdr ? (size_t)fsize : sizeof hdr;
    const size_t got = g_io.read(hdr, sizeof hdr, f);
    if (got < want_hdr) {
        /* the file has the bytes (fstat) but the read did not give them: an
         * I/O error, not a truncated state */
        st = error_fail(CS_ERR_IO, "%s: short read of '%s': expected %zu bytes, read %zu", fn, path,
                        want_hdr, got);
        goto done;
    }
    state_header h;
    size_t cb = 0, need = 0;
    if ((st = header_parse(ctx, hdr, got, STATE_KIND_WHOLE, who, &h, &cb, &need)) != CS_OK)
        goto done;
    if (h.n_cells > ctx->n_ctx) {
        st = error_fail(CS_ERR_INVALID_ARG, "%s: '%s' holds %u cells, this context has %u", fn,
                        path, h.n_cells, ctx->n_ctx);
        goto done;
    }
    if (h.n_tokens > (uint32_t)n_max) {
        st = error_fail(CS_ERR_INVALID_ARG, "%s: '%s' holds %u tokens, the buffer has room for %d",
                        fn, path, h.n_tokens, n_max);
        goto done;
    }
    if (fsize > need) {
        st = error_fail(CS_ERR_FORMAT, "%s: '%s' is %llu bytes, %llu more than its counts imply",
                        fn, path, (unsigned long long)fsize, (unsigned long long)(fsize - need));
        goto done;
    }
    const size_t n = (size_t)fsize;
    data = mem_malloc(n ? n : 1);
    if (!data) {
        st = error_fail(CS_ERR_NOMEM, "%s: out of memory for %zu bytes of '%s'", fn, n, path);
        goto done;
    }
    if (n < got) {
        st = error_fail(CS_ERR_IO, "%s: '%s' changed while being read", fn, path);
        goto done;
    }
    memcpy(data, hdr, got);
    const size_t rest = g_io.read(data + got, n - got, f);
    if (rest != n - got) {
        st = error_fail(CS_ERR_IO, "%s: short read of '%s': expected %zu bytes, read %zu", fn, path,
                        n, got + rest);
        goto done;
    }
    state_parsed p;
    if ((st = state_parse(ctx, data, n, STATE_KIND_WHOLE, who, &p)) != CS_OK) goto done;
    apply_whole(ctx, &p);
    for (uint32_t t = 0; t < p.h.n_tokens; t++)
        tokens[t] = (cs_token)get_u32(p.tokens + (size_t)t * 4);
    *n_tokens = (int32_t)p.h.n_tokens;
done:
    fclose(f);
    mem_free(data);
    return st;
}
