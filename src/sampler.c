/* sampler.c: the token sampler (cs_sampler_*), following the chain that
 * llama-cli builds at llama.cpp c392e509 (common/sampling.cpp defaults):
 *
 *   logit bias -> penalties -> top-k -> top-p -> min-p -> temperature -> draw
 *
 * or, when temp <= 0, logit bias -> penalties -> arg-max. The penalties are
 * llama.cpp's penalties sampler: repetition, frequency and presence.
 *
 * Candidates are ranked by one strict total order: higher logit first, and
 * among equal logits the lower token id first. Every filter keeps a prefix
 * of that order, so ties are broken the same way everywhere and the result
 * never depends on the partitioning details below.
 *
 * Cost of one cs_sampler_sample with n = n_vocab, k = top_k, W = the
 * repetition window, and r = the tokens top-p keeps:
 *   copy + NaN scrub + bias + penalties   O(n + B + W), B = tokens with a bias
 *   top-k (quickselect, no sort)          O(n) expected, O(n log n) worst case
 *   min-p (compaction on logits)          O(n) (O(k) after top-k)
 *   top-p (softmax sum + sorted prefix)   O(n) per doubling of the sorted prefix,
 *                                         plus O(r log r); O(k log k) after top-k
 *   temperature + draw                    O(survivors)
 * No allocation: every buffer is carved from one block in cs_sampler_new.
 *
 * Deliberate differences from llama.cpp (all documented at the use site):
 * - The RNG is our own (splitmix64 -> xoshiro256**), so the same seed gives
 *   other tokens than llama.cpp's mt19937; it is identical on every platform.
 * - Softmax sums, top-p cumulative sums and the draw use double.
 * - Temperature is applied inside the exponent, exp((l - max) / temp) in
 *   double, so a tiny temp cannot overflow a float to inf; it is the same
 *   distribution as llama.cpp's softmax(l / temp).
 * - Greedy (temp <= 0) uses no RNG; llama.cpp still draws from a one-token
 *   distribution.
 */
#include <math.h>
#include <string.h>

#include "common.h"
#include "cs_limits.h"

/* One candidate token; the arrays of these are (n_vocab). */
typedef struct sampler_cand {
    cs_token id;
    float logit;
} sampler_cand;

struct cs_sampler {
    cs_sampler_params params;
    int32_t n_vocab;
    sampler_cand *cand; /* (n_vocab) scratch, rebuilt by every sample */
    double *weight;     /* (n_vocab) scratch: draw weights of cand[i] */
    uint8_t *seen;      /* (n_vocab) all zero between calls; marks penalized ids */
    float *bias;        /* (n_vocab) logit bias per token, 0 when none */
    cs_token *bias_ids; /* (n_vocab) the tokens with an entry in bias, each once */
    int32_t n_bias;     /* entries in bias_ids */
    cs_token *prev;     /* (repeat_last_n) ring of accepted tokens, oldest at prev_head */
    int32_t n_prev;     /* tokens in the ring, <= repeat_last_n */
    int32_t prev_head;  /* index of the oldest token when the ring is full */
    uint64_t rng[4];    /* xoshiro256** state */
};

/* Sorted prefixes grow from this size, then double (see sampler_top_p). */
#define SAMPLER_SORT_CHUNK 64
/* Ranges at most this long are finished by heap sort in the quickselect. */
#define SAMPLER_SELECT_SMALL 16

/* ---------------------------------------------------------------- RNG */

/* splitmix64: expands the 64-bit seed into the xoshiro state, so that
 * nearby seeds (0, 1, 2) still give unrelated streams. */
static uint64_t sampler_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void sampler_seed(cs_sampler *s) {
    uint64_t x = s->params.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = sampler_splitmix64(&x);
}

static uint64_t sampler_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna), written from the published algorithm. */
static uint64_t sampler_next_u64(cs_sampler *s) {
    uint64_t *t = s->rng;
    const uint64_t result = sampler_rotl(t[1] * 5, 7) * 9;
    const uint64_t x = t[1] << 17;
    t[2] ^= t[0];
    t[3] ^= t[1];
    t[1] ^= t[2];
    t[0] ^= t[3];
    t[2] ^= x;
    t[3] = sampler_rotl(t[3], 45);
    return result;
}

/* Uniform double in [0, 1): the top 53 bits, exactly representable. */
static double sampler_next_uniform(cs_sampler *s) {
    return (double)(sampler_next_u64(s) >> 11) * 0x1.0p-53;
}

/* ----------------------------------------------------------- ordering */

/* The candidate order: a ranks before b. Strict and total because ids are
 * distinct and NaN logits were replaced by -INFINITY beforehand. */
static inline bool sampler_before(const sampler_cand *a, const sampler_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static inline void sampler_swap(sampler_cand *a, sampler_cand *b) {
    sampler_cand t = *a;
    *a = *b;
    *b = t;
}

/* Heap sort of c[0, n) into candidate order. O(n log n), no recursion, no
 * allocation; qsort is avoided because glibc's may allocate. The heap keeps
 * the candidate that ranks last at the root and moves it to the end. */
static void sampler_sift_down(sampler_cand *c, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n) break;
        if (child + 1 < n && sampler_before(&c[child], &c[child + 1])) child++;
        if (!sampler_before(&c[root], &c[child])) break;
        sampler_swap(&c[root], &c[child]);
        root = child;
    }
}

static void sampler_sort(sampler_cand *c, size_t n) {
    if (n < 2) return;
    for (size_t i = n / 2; i-- > 0;) sampler_sift_down(c, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        sampler_swap(&c[0], &c[end]);
        sampler_sift_down(c, 0, end);
    }
}

/* Index of the median of c[a], c[b], c[c3] in candidate order. */
static size_t sampler_median3(const sampler_cand *c, size_t a, size_t b, size_t c3) {
    if (sampler_before(&c[a], &c[b])) {
        if (sampler_before(&c[b], &c[c3])) return b;
        return sampler_before(&c[a], &c[c3]) ? c3 : a;
    }
    if (sampler_before(&c[a], &c[c3])) return a;
    return sampler_before(&c[b], &c[c3]) ? c3 : b;
}

/* Rearrange c[0, n) so that c[0, k) holds the k first candidates in
 * candidate order (in no particular order among themselves), 0 < k <= n.
 * Quickselect with a median-of-three pivot: O(n) expected. The depth is
 * capped at 2 log2(n); past it the remaining range is heap sorted, so the
 * worst case is O(n log n) (introselect). */
static void sampler_select(sampler_cand *c, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    int depth = 0;
    for (size_t m = n; m > 1; m >>= 1) depth += 2;
    while (hi - lo > SAMPLER_SELECT_SMALL) {
        if (depth-- == 0) break;
        size_t mid = lo + (hi - lo) / 2;
        size_t p = sampler_median3(c, lo, mid, hi - 1);
        sampler_swap(&c[p], &c[hi - 1]);
        const sampler_cand pivot = c[hi - 1];
        size_t store = lo;
        for (size_t i = lo; i < hi - 1; i++) {
            if (sampler_before(&c[i], &pivot)) sampler_swap(&c[i], &c[store++]);
        }
        sampler_swap(&c[store], &c[hi - 1]);
        /* c[lo, store) rank before the pivot, c[store] is it, the rest after;
         * k == store or store + 1 means c[0, k) is already the answer. */
        if (k < store) {
            hi = store;
        } else if (k > store + 1) {
            lo = store + 1;
        } else {
            return;
        }
    }
    sampler_sort(c + lo, hi - lo);
}

/* ------------------------------------------------------------ filters */

/* Logit bias, first in the chain as in llama.cpp: logit += bias for each
 * token with an entry; a -INFINITY bias bans the token whatever its logit
 * (also +INFINITY, where the sum would be NaN). c is indexed by token id
 * here. O(n_bias). */
static void sampler_apply_bias(const cs_sampler *s, sampler_cand *c) {
    for (int32_t i = 0; i < s->n_bias; i++) {
        const cs_token t = s->bias_ids[i];
        const float b = s->bias[t];
        c[t].logit = b == -INFINITY ? -INFINITY : c[t].logit + b;
    }
}

/* llama.cpp's penalties sampler over the last repeat_last_n accepted tokens:
 * each distinct token, with count occurrences in the window, is penalized
 * once: repetition (logit > 0: divide by repeat_penalty, else multiply, so
 * it always moves down), then logit -= count * frequency_penalty +
 * presence_penalty (count > 0 always here), in float as llama.cpp computes
 * it. The counts live in the weight scratch (free until the draw) at the
 * window's ids, so no extra memory. c is indexed by token id here.
 * O(n_prev). With the defaults (repeat 1, frequency and presence 0) this
 * returns at once: the output is the unpenalized logits bit for bit. */
static void sampler_penalize(cs_sampler *s, sampler_cand *c) {
    const float penalty = s->params.repeat_penalty;
    const float freq = s->params.frequency_penalty, presence = s->params.presence_penalty;
    if (s->n_prev == 0 || (penalty == 1.0f && freq == 0.0f && presence == 0.0f)) return;
    double *count = s->weight;
    for (int32_t i = 0; i < s->n_prev; i++) count[s->prev[i]] = 0.0;
    for (int32_t i = 0; i < s->n_prev; i++) count[s->prev[i]] += 1.0;
    for (int32_t i = 0; i < s->n_prev; i++) {
        const cs_token t = s->prev[i];
        if (s->seen[t]) continue;
        s->seen[t] = 1;
        if (penalty != 1.0f)
            c[t].logit = c[t].logit > 0.0f ? c[t].logit / penalty : c[t].logit * penalty;
        if (freq != 0.0f || presence != 0.0f) c[t].logit -= (float)count[t] * freq + presence;
    }
    for (int32_t i = 0; i < s->n_prev; i++) s->seen[s->prev[i]] = 0;
}

/* Weight of a logit relative to the maximum, exp(l - max) in double. The
 * maximum itself weighs exactly 1, which also covers max = +inf (the +inf
 * logits share the mass) without forming inf - inf. */
static inline double sampler_weight(float logit, float max, double inv_temp) {
    if (logit == max) return 1.0;
    return exp(((double)logit - (double)max) * inv_temp);
}

/* min-p on logits as llama.cpp computes it: keep the candidates with
 * logit >= max + logf(min_p), i.e. p >= min_p * p_max. The maximum always
 * passes (min_p <= 1 is validated), so at least one stays. Stable
 * compaction, O(n). Returns the new count. */
static size_t sampler_min_p(sampler_cand *c, size_t n, float max, float min_p) {
    const float min_logit = max + logf(min_p);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].logit >= min_logit) c[kept++] = c[i];
    }
    return kept;
}

/* top-p: with p_i = exp(l_i - max) / z (z summed over the candidates that
 * top-k left, before min-p), keep the shortest prefix in candidate order
 * whose cumulative probability reaches top_p, and at least one token
 * (llama.cpp's min_keep = 1). c[0, n) are what min-p left; min-p keeps a
 * prefix of the same order, so cutting at min(top-p's, min-p's) prefix here
 * equals running top-p before min-p as llama.cpp does.
 *
 * Only the prefix the walk reaches is sorted: it starts as the first
 * SAMPLER_SORT_CHUNK candidates and doubles whenever the walk runs past it,
 * each time selecting the next block from the unsorted rest (O(n)) and heap
 * sorting it. Returns the new count; c[0, result) is then sorted. */
static size_t sampler_top_p(sampler_cand *c, size_t n, float max, double z, float top_p) {
    size_t n_sorted = 0;
    double cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (i == n_sorted) {
            size_t want = n_sorted < SAMPLER_SORT_CHUNK ? SAMPLER_SORT_CHUNK : 2 * n_sorted;
            if (want > n) want = n;
            /* Everything in c[n_sorted, n) ranks after c[0, n_sorted). */
            if (want < n) sampler_select(c + n_sorted, n - n_sorted, want - n_sorted);
            sampler_sort(c + n_sorted, want - n_sorted);
            n_sorted = want;
        }
        cum += sampler_weight(c[i].logit, max, 1.0) / z;
        if (cum >= (double)top_p) return i + 1;
    }
    return n;
}

/* ----------------------------------------------------------------- API */

cs_sampler_params cs_sampler_default_params(void) {
    cs_sampler_params p = {
        .seed = 0,
        .temp = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
    };
    return p;
}

/* Checks every field; the message names the field and its value. */
static cs_status sampler_check_params(const cs_sampler_params *p, int32_t n_vocab) {
    if (n_vocab <= 0 || n_vocab > CS_MAX_VOCAB) {
        return error_fail(CS_ERR_INVALID_ARG, "sampler: n_vocab = %d is outside [1, %d]",
                          (int)n_vocab, (int)CS_MAX_VOCAB);
    }
    if (!isfinite(p->temp)) {
        return error_fail(CS_ERR_INVALID_ARG, "sampler: temp = %g is not finite", (double)p->temp);
    }
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        return error_fail(CS_ERR_INVALID_ARG, "sampler: top_p = %g is outside (0, 1]",
                          (double)p->top_p);
    }
    if (isnan(p->min_p) || p->min_p > 1.0f) {
        return error_fail(CS_ERR_INVALID_ARG, "sampler: min_p = %g is NaN or above 1",
                          (double)p->min_p);
    }
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty)) {
        return error_fail(CS_ERR_INVALID_ARG,
                          "sampler: repeat_penalty = %g must be finite and > 0 (1 = off)",
                          (double)p->repeat_penalty);
    }
    if (p->repeat_last_n < 0 || p->repeat_last_n > CS_MAX_CTX) {
        return error_fail(CS_ERR_INVALID_ARG, "sampler: repeat_last_n = %d is outside [0, %d]",
                          (int)p->repeat_last_n, (int)CS_MAX_CTX);
    }
    /* OpenAI documents [-2, 2] for both; llama.cpp accepts any float, but a
     * value outside the documented range is far more likely a mistake than
     * a wish (a penalty of 10 per occurrence bans a token after one use). */
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f)) {
        return error_fail(CS_ERR_INVALID_ARG,
                          "sampler: frequency_penalty = %g is outside [-2, 2] (0 = off)",
                          (double)p->frequency_penalty);
    }
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f)) {
        return error_fail(CS_ERR_INVALID_ARG,
                          "sampler: presence_penalty = %g is outside [-2, 2] (0 = off)",
                          (double)p->presence_penalty);
    }
    return CS_OK;
}

/* One block: the struct, then weight (n_vocab), cand (n_vocab), bias
 * (n_vocab), bias_ids (n_vocab), prev (repeat_last_n) and seen (n_vocab),
 * each offset a multiple of its alignment. 25 bytes per vocabulary entry
 * plus 4 per window slot, bounded by CS_MAX_VOCAB and CS_MAX_CTX (about
 * 60 MiB at most, no overflow). */
cs_status cs_sampler_new(const cs_sampler_params *params, int32_t n_vocab, cs_sampler **out) {
    cs_status st = CS_OK;
    cs_sampler *s = NULL;
    char *block = NULL;
    size_t off_weight = 0, off_cand = 0, off_bias = 0, off_bias_ids = 0, off_prev = 0, off_seen = 0,
           total = 0;
    if (out) *out = NULL;
    if (!params || !out) {
        st = error_fail(CS_ERR_INVALID_ARG, "sampler: %s is NULL", params ? "out" : "params");
        goto fail;
    }
    st = sampler_check_params(params, n_vocab);
    if (st != CS_OK) goto fail;

    off_weight = (sizeof(cs_sampler) + 7) & ~(size_t)7;
    off_cand = off_weight + (size_t)n_vocab * sizeof(double);
    off_bias = off_cand + (size_t)n_vocab * sizeof(sampler_cand);
    off_bias_ids = off_bias + (size_t)n_vocab * sizeof(float);
    off_prev = off_bias_ids + (size_t)n_vocab * sizeof(cs_token);
    off_seen = off_prev + (size_t)params->repeat_last_n * sizeof(cs_token);
    total = off_seen + (size_t)n_vocab;
    block = mem_malloc(total);
    if (!block) {
        st = error_fail(CS_ERR_NOMEM, "sampler: cannot allocate %zu bytes for n_vocab = %d", total,
                        (int)n_vocab);
        goto fail;
    }
    s = (cs_sampler *)(void *)block;
    memset(s, 0, sizeof(*s));
    s->params = *params;
    s->n_vocab = n_vocab;
    s->weight = (double *)(void *)(block + off_weight);
    s->cand = (sampler_cand *)(void *)(block + off_cand);
    s->bias = (float *)(void *)(block + off_bias);
    s->bias_ids = (cs_token *)(void *)(block + off_bias_ids);
    for (int32_t i = 0; i < n_vocab; i++) s->bias[i] = 0.0f;
    s->prev = (cs_token *)(void *)(block + off_prev);
    s->seen = (uint8_t *)(block + off_seen);
    memset(s->seen, 0, (size_t)n_vocab);
    sampler_seed(s);
    *out = s;
    return CS_OK;

fail:
    mem_free(block);
    return st;
}

void cs_sampler_free(cs_sampler *s) {
    mem_free(s);
}

/* Record a token for the repetition penalty: O(1). Ids outside
 * [0, n_vocab) are ignored (they can never be sampled or penalized). */
void cs_sampler_accept(cs_sampler *s, cs_token token) {
    if (!s || token < 0 || token >= s->n_vocab) return;
    const int32_t cap = s->params.repeat_last_n;
    if (cap == 0) return;
    if (s->n_prev < cap) {
        s->prev[s->n_prev++] = token;
    } else {
        s->prev[s->prev_head] = token;
        s->prev_head = (s->prev_head + 1) % cap;
    }
}

/* Invariant: a token is in bias_ids iff bias[token] != 0, so a list never
 * outgrows n_vocab. Setting a non-zero bias is O(1); setting 0 removes the
 * entry, O(entries). */
cs_status cs_sampler_set_logit_bias(cs_sampler *s, cs_token token, float bias) {
    if (!s) return error_fail(CS_ERR_INVALID_ARG, "sampler: sampler is NULL");
    if (token < 0 || token >= s->n_vocab)
        return error_fail(CS_ERR_INVALID_ARG, "sampler: logit bias token %d is outside [0, %d)",
                          (int)token, (int)s->n_vocab);
    if (isnan(bias) || bias == INFINITY)
        return error_fail(CS_ERR_INVALID_ARG,
                          "sampler: logit bias %g for token %d must be finite or -inf",
                          (double)bias, (int)token);
    if (bias == 0.0f) {
        if (s->bias[token] != 0.0f) {
            int32_t i = 0;
            while (s->bias_ids[i] != token) i++;
            s->bias_ids[i] = s->bias_ids[--s->n_bias];
        }
    } else if (s->bias[token] == 0.0f) {
        s->bias_ids[s->n_bias++] = token;
    }
    s->bias[token] = bias == 0.0f ? 0.0f : bias;
    return CS_OK;
}

void cs_sampler_clear_logit_bias(cs_sampler *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->n_bias; i++) s->bias[s->bias_ids[i]] = 0.0f;
    s->n_bias = 0;
}

/* Forget the history and restart the RNG stream from the original seed, so
 * that a reset sampler repeats its first run exactly. O(1). */
void cs_sampler_reset(cs_sampler *s) {
    if (!s) return;
    s->n_prev = 0;
    s->prev_head = 0;
    sampler_seed(s);
}

/* See ctxshift.h. Degenerate rows: NaN logits count as -INFINITY; when
 * every logit is -INFINITY (or NaN) there is nothing to choose by, and the
 * result is token 0, the lowest id, in both modes (sampling mode still
 * consumes its one draw). Logits of +INFINITY win outright and share the
 * probability equally. In sampling mode exactly one uniform is drawn per
 * call, so the stream stays aligned whatever the filters keep. */
cs_token cs_sampler_sample(cs_sampler *s, const float *logits) {
    if (!s || !logits) {
        error_fail(CS_ERR_INVALID_ARG, "sampler: %s is NULL", s ? "logits" : "sampler");
        return -1;
    }
    const cs_sampler_params *p = &s->params;
    sampler_cand *c = s->cand;
    const size_t n_vocab = (size_t)s->n_vocab;

    for (size_t i = 0; i < n_vocab; i++) {
        c[i].id = (cs_token)i;
        c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
    }
    sampler_apply_bias(s, c);
    sampler_penalize(s, c);

    if (p->temp <= 0.0f) {
        /* Arg-max; the strict > keeps the lowest id among equal maxima. */
        size_t best = 0;
        for (size_t i = 1; i < n_vocab; i++) {
            if (c[i].logit > c[best].logit) best = i;
        }
        return (cs_token)best;
    }

    const double u = sampler_next_uniform(s);
    size_t n = n_vocab;

    if (p->top_k > 0 && (size_t)p->top_k < n) {
        n = (size_t)p->top_k;
        sampler_select(c, n_vocab, n);
    }

    float max = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (c[i].logit > max) max = c[i].logit;
    }
    if (max == -INFINITY) return 0;

    const bool use_top_p = p->top_p < 1.0f;
    double z = 0.0;
    if (use_top_p) {
        for (size_t i = 0; i < n; i++) z += sampler_weight(c[i].logit, max, 1.0);
    }
    if (p->min_p > 0.0f) n = sampler_min_p(c, n, max, p->min_p);
    if (use_top_p) n = sampler_top_p(c, n, max, z, p->top_p);

    /* Temperature and the draw: softmax(l / temp) over c[0, n) in array
     * order; pick the first candidate whose cumulative weight exceeds
     * u * total. Zero-weight candidates are never picked. */
    const double inv_temp = 1.0 / (double)p->temp;
    double *weight = s->weight;
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        weight[i] = sampler_weight(c[i].logit, max, inv_temp);
        total += weight[i];
    }
    const double target = u * total;
    double cum = 0.0;
    size_t last_positive = 0;
    for (size_t i = 0; i < n; i++) {
        const double w = weight[i];
        if (w <= 0.0) continue;
        cum += w;
        last_positive = i;
        if (cum > target) return c[i].id;
    }
    /* Only reached when u * total rounds up to total. */
    return c[last_positive].id;
}
