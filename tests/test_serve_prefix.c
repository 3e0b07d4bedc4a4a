/* test_serve_prefix: the radix tree of cached prefixes (tools/serve_prefix.c)
 * by hand-written cases, against a brute-force reference (a plain array of
 * entries, longest common prefix by linear scan) over random operations,
 * and with allocations made to fail. */
#include "test.h"

/* The module is compiled here with counting allocators, so that a test can
 * make the k-th allocation fail and check that no block outlives the tree.
 * stdlib.h is already included (test.h), so the macros only rename the
 * module's calls. */
static long alloc_fail_at = -1;    /* the allocation number that fails; -1: none */
static uint32_t alloc_fail_rate;   /* else: fail with probability rate / 65536 */
static uint64_t alloc_rng = 12345; /* for alloc_fail_rate */
static long alloc_calls, alloc_live;

static bool alloc_should_fail(void) {
    long k = alloc_calls++;
    if (alloc_fail_at >= 0) return k == alloc_fail_at;
    if (!alloc_fail_rate) return false;
    alloc_rng = alloc_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(alloc_rng >> 48) < alloc_fail_rate;
}
static void *counted_malloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    void *p = malloc(n);
    if (p) alloc_live++;
    return p;
}
static void *counted_realloc(void *p, size_t n) {
    if (alloc_should_fail()) return NULL;
    void *q = realloc(p, n);
    if (q && !p) alloc_live++;
    return q;
}
static void counted_free(void *p) {
    if (p) alloc_live--;
    free(p);
}
#define malloc  counted_malloc
#define realloc counted_realloc
#define free    counted_free
#include "serve_prefix.c"
#undef malloc
#undef realloc
#undef free

/* ------------------------------------------------------ invariants */

/* Checks x's subtree against the structure's rules; returns its node count
 * (x included unless it is the root) and its most recent entry in *best.
 * strict: every non-root node holds an entry or has two children (true
 * unless a merge was skipped for want of memory). */
static int32_t check_subtree(const prefix_tree *t, const pt_node *x, bool strict, int32_t *best) {
    int32_t nodes = x == &t->root ? 0 : 1, b = -1;
    if (x != &t->root) {
        assert_true(x->len >= 1);
        assert_int_equal(x->depth, x->parent->depth + x->len);
        if (strict) assert_true(x->first >= 0 || x->n_child >= 2);
        assert_true(x->first >= 0 || x->n_child >= 1); /* no empty leaf */
    } else {
        assert_int_equal(x->first, -1);
    }
    for (int32_t e = x->first; e >= 0; e = t->entries[e].next) {
        assert_ptr_equal(t->entries[e].node, x);
        if (t->entries[e].next >= 0) assert_int_equal(t->entries[t->entries[e].next].prev, e);
        if (newer(t, e, b)) b = e;
    }
    for (int32_t k = 0; k < x->n_child; k++) {
        assert_ptr_equal(x->child[k]->parent, x);
        for (int32_t l = 0; l < k; l++)
            assert_int_not_equal(x->child[l]->label[0], x->child[k]->label[0]);
        int32_t cb;
        nodes += check_subtree(t, x->child[k], strict, &cb);
        if (newer(t, cb, b)) b = cb;
    }
    assert_int_equal(x->best, b);
    *best = b;
    return nodes;
}

static void check_tree(const prefix_tree *t, bool strict) {
    int32_t best, count = 0;
    assert_int_equal(check_subtree(t, &t->root, strict, &best), prefix_tree_node_count(t));
    for (int32_t e = 0; e < t->max_entries; e++) count += t->entries[e].node != NULL;
    assert_int_equal(count, prefix_tree_count(t));
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Inserts and checks the sorted redundant ids (want: sorted, -1 ends). */
static void insert_expect(prefix_tree *t, int32_t id, const cs_token *tok, int32_t n, uint64_t now,
                          const int32_t *want) {
    int32_t red[64], nred = -1, nwant = 0;
    assert_int_equal(prefix_tree_insert(t, id, tok, n, now, red, &nred), PREFIX_TREE_OK);
    qsort(red, (size_t)nred, sizeof *red, cmp_i32);
    while (want[nwant] >= 0) nwant++;
    assert_int_equal(nred, nwant);
    for (int32_t k = 0; k < nwant; k++) assert_int_equal(red[k], want[k]);
    check_tree(t, true);
}

static const int32_t NONE[] = {-1};

/* ------------------------------------------------------ hand-written */

static void test_empty(void **state) {
    (void)state;
    prefix_tree *t = prefix_tree_new(64);
    assert_non_null(t);
    cs_token q[] = {1, 2, 3};
    int32_t id = 7;
    assert_int_equal(prefix_tree_match(t, q, 3, &id), 0);
    assert_int_equal(id, -1);
    assert_int_equal(prefix_tree_match(t, NULL, 0, &id), 0);
    assert_false(prefix_tree_lru(t, &id));
    assert_int_equal(id, -1);
    assert_int_equal(prefix_tree_count(t), 0);
    assert_int_equal(prefix_tree_node_count(t), 0);
    assert_int_equal(prefix_tree_remove(t, 3), PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_touch(t, 3, 1), PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_entry_tokens(t, 3, NULL, 0), -1);
    check_tree(t, true);
    prefix_tree_free(t);
    prefix_tree_free(NULL);
    assert_null(prefix_tree_new(0));
    assert_null(prefix_tree_new(PREFIX_TREE_MAX_ENTRIES + 1));
    assert_int_equal(alloc_live, 0);
}

static void test_bad_arguments(void **state) {
    (void)state;
    prefix_tree *t = prefix_tree_new(4);
    cs_token q[] = {1, 2, 3};
    int32_t red[4], nred = 9;
    assert_int_equal(prefix_tree_insert(t, 4, q, 3, 1, red, &nred), PREFIX_TREE_EINVAL);
    assert_int_equal(nred, 0);
    assert_int_equal(prefix_tree_insert(t, -1, q, 3, 1, red, &nred), PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_insert(t, 0, q, 0, 1, red, &nred), PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_insert(t, 0, NULL, 3, 1, red, &nred), PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_insert(t, 0, q, PREFIX_TREE_MAX_TOKENS + 1, 1, red, &nred),
                     PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_insert(t, 0, q, 3, 1, red, NULL), PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_count(t), 0);
    assert_int_equal(prefix_tree_node_count(t), 0);
    /* Without the redundant report. */
    assert_int_equal(prefix_tree_insert(t, 0, q, 3, 1, NULL, NULL), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_insert(t, 1, q, 3, 1, NULL, NULL), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_remove(t, 4), PREFIX_TREE_EINVAL);
    assert_int_equal(prefix_tree_touch(t, -1, 1), PREFIX_TREE_EINVAL);
    check_tree(t, true);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
}

static void test_exact_and_partial_match(void **state) {
    (void)state;
    prefix_tree *t = prefix_tree_new(64);
    cs_token a[] = {1, 2, 3, 4, 5};
    insert_expect(t, 5, a, 5, 10, NONE);
    assert_int_equal(prefix_tree_node_count(t), 1);
    int32_t id;
    assert_int_equal(prefix_tree_match(t, a, 5, &id), 5); /* exact */
    assert_int_equal(id, 5);
    cs_token longer[] = {1, 2, 3, 4, 5, 6, 7};
    assert_int_equal(prefix_tree_match(t, longer, 7, &id), 5); /* the whole entry */
    assert_int_equal(id, 5);
    cs_token part[] = {1, 2, 9};
    assert_int_equal(prefix_tree_match(t, part, 3, &id), 2); /* inside the edge */
    assert_int_equal(id, 5);
    assert_int_equal(prefix_tree_match(t, a, 1, &id), 1); /* query shorter than the edge */
    assert_int_equal(id, 5);
    cs_token other[] = {9, 1, 2};
    assert_int_equal(prefix_tree_match(t, other, 3, &id), 0);
    assert_int_equal(id, -1);
    cs_token back[8] = {0};
    assert_int_equal(prefix_tree_entry_tokens(t, 5, back, 8), 5);
    assert_memory_equal(back, a, sizeof a);
    cs_token two[2] = {0};
    assert_int_equal(prefix_tree_entry_tokens(t, 5, two, 2), 5); /* clipped to cap */
    assert_memory_equal(two, a, sizeof two);
    assert_int_equal(prefix_tree_entry_used(t, 5), 10);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
}

static void test_split_and_merge(void **state) {
    (void)state;
    prefix_tree *t = prefix_tree_new(64);
    cs_token a[] = {1, 2, 3, 4}, b[] = {1, 2, 5, 6}, c[] = {1, 2};
    insert_expect(t, 0, a, 4, 1, NONE);
    insert_expect(t, 1, b, 4, 2, NONE); /* "1234" splits: "12" -> "34", "56" */
    assert_int_equal(prefix_tree_node_count(t), 3);
    int32_t id;
    assert_int_equal(prefix_tree_match(t, a, 4, &id), 4);
    assert_int_equal(id, 0);
    assert_int_equal(prefix_tree_match(t, b, 4, &id), 4);
    assert_int_equal(id, 1);
    assert_int_equal(prefix_tree_match(t, c, 2, &id), 2); /* both hold it: the newer */
    assert_int_equal(id, 1);
    cs_token back[4];
    assert_int_equal(prefix_tree_entry_tokens(t, 0, back, 4), 4);
    assert_memory_equal(back, a, sizeof a);
    assert_int_equal(prefix_tree_entry_tokens(t, 1, back, 4), 4);
    assert_memory_equal(back, b, sizeof b);

    /* Removing b leaves "12" with one child: merged back into "1234". */
    assert_int_equal(prefix_tree_remove(t, 1), PREFIX_TREE_OK);
    check_tree(t, true);
    assert_int_equal(prefix_tree_node_count(t), 1);
    assert_int_equal(prefix_tree_match(t, b, 4, &id), 2);
    assert_int_equal(id, 0);

    /* A list ending inside an edge splits it without a new leaf; removing
     * the longer entry then merges nothing (the split node holds c). */
    insert_expect(t, 2, c, 2, 3, NONE);
    assert_int_equal(prefix_tree_node_count(t), 2);
    assert_int_equal(prefix_tree_remove(t, 0), PREFIX_TREE_OK);
    check_tree(t, true);
    assert_int_equal(prefix_tree_node_count(t), 1);
    assert_int_equal(prefix_tree_match(t, a, 4, &id), 2);
    assert_int_equal(id, 2);
    assert_int_equal(prefix_tree_remove(t, 2), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_node_count(t), 0);
    assert_int_equal(prefix_tree_count(t), 0);
    check_tree(t, true);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
}

static void test_redundant(void **state) {
    (void)state;
    prefix_tree *t = prefix_tree_new(64);
    cs_token l[] = {1, 2, 3, 4, 5, 6};
    insert_expect(t, 0, l, 2, 1, NONE);                              /* 12 */
    insert_expect(t, 1, l, 4, 2, (const int32_t[]){0, -1});          /* 1234 covers 12 */
    insert_expect(t, 2, l, 3, 3, (const int32_t[]){0, -1});          /* 123: not 1234 */
    insert_expect(t, 3, l, 5, 4, (const int32_t[]){0, 1, 2, -1});    /* 12345 */
    insert_expect(t, 4, l, 5, 5, (const int32_t[]){0, 1, 2, 3, -1}); /* equal list */
    insert_expect(t, 3, l, 6, 6, (const int32_t[]){0, 1, 2, 4, -1}); /* not itself */
    cs_token other[] = {1, 2, 7};
    insert_expect(t, 5, other, 3, 7, (const int32_t[]){0, -1});
    /* Reported entries stay until removed. */
    assert_int_equal(prefix_tree_count(t), 6);
    int32_t id;
    assert_int_equal(prefix_tree_match(t, l, 6, &id), 6);
    assert_int_equal(id, 3);
    /* The engine's order: free the cells, then remove. */
    const int32_t gone[] = {0, 1, 2, 4};
    for (int k = 0; k < 4; k++) assert_int_equal(prefix_tree_remove(t, gone[k]), PREFIX_TREE_OK);
    check_tree(t, true);
    assert_int_equal(prefix_tree_node_count(t), 3); /* 12 -> 3456, 7 */
    assert_int_equal(prefix_tree_remove(t, 3), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_remove(t, 5), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_node_count(t), 0);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
}

static void test_replace_same_id(void **state) {
    (void)state;
    prefix_tree *t = prefix_tree_new(8);
    cs_token a[] = {1, 2, 3, 4}, b[] = {1, 2, 9};
    insert_expect(t, 0, a, 4, 1, NONE);
    insert_expect(t, 0, b, 3, 2, NONE); /* replaces: "1234" is gone */
    assert_int_equal(prefix_tree_count(t), 1);
    assert_int_equal(prefix_tree_node_count(t), 1);
    int32_t id;
    assert_int_equal(prefix_tree_match(t, a, 4, &id), 2);
    assert_int_equal(id, 0);
    insert_expect(t, 0, a, 2, 3, NONE); /* a prefix of its own old list */
    assert_int_equal(prefix_tree_node_count(t), 1);
    assert_int_equal(prefix_tree_match(t, b, 3, &id), 2);
    insert_expect(t, 0, a, 4, 4, NONE); /* an extension of it: merged */
    assert_int_equal(prefix_tree_node_count(t), 1);
    assert_int_equal(prefix_tree_match(t, a, 4, &id), 4);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
}

static void test_lru_and_ties(void **state) {
    (void)state;
    prefix_tree *t = prefix_tree_new(64);
    cs_token a[] = {1, 2, 3}, b[] = {1, 2, 4}, c[] = {5};
    insert_expect(t, 10, a, 3, 5, NONE);
    insert_expect(t, 20, b, 3, 7, NONE);
    insert_expect(t, 30, c, 1, 6, NONE);
    int32_t id;
    assert_true(prefix_tree_lru(t, &id));
    assert_int_equal(id, 10);
    assert_int_equal(prefix_tree_match(t, a, 2, &id), 2);
    assert_int_equal(id, 20); /* 10 and 20 hold "12": 20 is newer */
    assert_int_equal(prefix_tree_touch(t, 10, 8), PREFIX_TREE_OK);
    check_tree(t, true);
    assert_int_equal(prefix_tree_match(t, a, 2, &id), 2);
    assert_int_equal(id, 10);
    assert_true(prefix_tree_lru(t, &id));
    assert_int_equal(id, 30);
    /* Equal times: the lowest id, for the most and the least recent. */
    assert_int_equal(prefix_tree_touch(t, 20, 8), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_touch(t, 30, 8), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_match(t, b, 2, &id), 2);
    assert_int_equal(id, 10);
    assert_true(prefix_tree_lru(t, &id));
    assert_int_equal(id, 10);
    /* A clock going back is taken as given. */
    assert_int_equal(prefix_tree_touch(t, 10, 1), PREFIX_TREE_OK);
    check_tree(t, true);
    assert_int_equal(prefix_tree_match(t, b, 2, &id), 2);
    assert_int_equal(id, 20);
    assert_true(prefix_tree_lru(t, &id));
    assert_int_equal(id, 10);
    /* Eviction order: remove the LRU until empty. */
    int32_t order[3], k = 0;
    while (prefix_tree_lru(t, &id)) {
        order[k++] = id;
        assert_int_equal(prefix_tree_remove(t, id), PREFIX_TREE_OK);
        check_tree(t, true);
    }
    assert_int_equal(k, 3);
    assert_int_equal(order[0], 10);
    assert_int_equal(order[1], 20);
    assert_int_equal(order[2], 30);
    assert_int_equal(prefix_tree_node_count(t), 0);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
}

/* Each allocation of an insert fails in turn: the call reports
 * PREFIX_TREE_ENOMEM and the tree answers as before. */
static void test_allocation_failure(void **state) {
    (void)state;
    cs_token base[] = {1, 2, 3, 4, 5, 6}, split[] = {1, 2, 3, 9, 9}, mid[] = {1, 2};
    cs_token fresh[] = {7, 7};
    const cs_token *lists[] = {split, mid, fresh, base};
    const int32_t lens[] = {5, 2, 2, 3};
    const int32_t ids[] = {1, 2, 3, 0}; /* the last replaces id 0 */
    for (int li = 0; li < 4; li++) {
        for (long fail = 0;; fail++) {
            prefix_tree *t = prefix_tree_new(8);
            insert_expect(t, 0, base, 6, 1, NONE);
            alloc_calls = 0;
            alloc_fail_at = fail;
            int32_t red[8], nred = -1;
            int rc = prefix_tree_insert(t, ids[li], lists[li], lens[li], 2, red, &nred);
            alloc_fail_at = -1;
            bool failed = alloc_calls > fail;
            if (!failed) {
                assert_int_equal(rc, PREFIX_TREE_OK);
                check_tree(t, true);
                prefix_tree_free(t);
                assert_int_equal(alloc_live, 0);
                break;
            }
            /* The only allocation that may fail without an error is the
             * shrink of a split edge (it keeps the old block). */
            if (rc == PREFIX_TREE_OK) {
                check_tree(t, true);
            } else {
                assert_int_equal(rc, PREFIX_TREE_ENOMEM);
                assert_int_equal(nred, 0);
                check_tree(t, true);
                assert_int_equal(prefix_tree_count(t), 1);
                assert_int_equal(prefix_tree_node_count(t), 1);
                int32_t id;
                assert_int_equal(prefix_tree_match(t, base, 6, &id), 6);
                assert_int_equal(id, 0);
                assert_int_equal(prefix_tree_entry_used(t, 0), 1);
            }
            prefix_tree_free(t);
            assert_int_equal(alloc_live, 0);
        }
    }
    /* A merge that cannot grow its child's label leaves two nodes; the
     * tree still answers, and removing everything still empties it. */
    prefix_tree *t = prefix_tree_new(8);
    cs_token a[] = {1, 2, 3, 4}, b[] = {1, 2, 5};
    insert_expect(t, 0, a, 4, 1, NONE);
    insert_expect(t, 1, b, 3, 2, NONE);
    alloc_calls = 0;
    alloc_fail_at = 0;
    assert_int_equal(prefix_tree_remove(t, 1), PREFIX_TREE_OK);
    alloc_fail_at = -1;
    check_tree(t, false);
    assert_int_equal(prefix_tree_node_count(t), 2);
    int32_t id;
    assert_int_equal(prefix_tree_match(t, a, 4, &id), 4);
    assert_int_equal(id, 0);
    cs_token back[4];
    assert_int_equal(prefix_tree_entry_tokens(t, 0, back, 4), 4);
    assert_memory_equal(back, a, sizeof a);
    assert_int_equal(prefix_tree_remove(t, 0), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_node_count(t), 0);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
}

/* ------------------------------------------------ brute-force reference */

#define REF_ENTRIES 16
#define REF_LEN     12

typedef struct {
    bool on;
    cs_token tok[REF_LEN];
    int32_t n;
    uint64_t used;
} ref_entry;

static bool ref_newer(const ref_entry *r, int32_t a, int32_t b) {
    if (b < 0) return true;
    return r[a].used != r[b].used ? r[a].used > r[b].used : a < b;
}

static int32_t ref_lcp(const ref_entry *e, const cs_token *q, int32_t n) {
    int32_t l = 0;
    while (l < e->n && l < n && e->tok[l] == q[l]) l++;
    return l;
}

static int32_t ref_match(const ref_entry *r, const cs_token *q, int32_t n, int32_t *id) {
    int32_t best = 0;
    *id = -1;
    for (int32_t e = 0; e < REF_ENTRIES; e++) {
        if (!r[e].on) continue;
        int32_t l = ref_lcp(&r[e], q, n);
        if (l > 0 && (l > best || (l == best && ref_newer(r, e, *id)))) {
            best = l;
            *id = e;
        }
    }
    return best;
}

static int32_t ref_lru(const ref_entry *r) {
    int32_t lru = -1;
    for (int32_t e = 0; e < REF_ENTRIES; e++)
        if (r[e].on && (lru < 0 || r[e].used < r[lru].used)) lru = e;
    return lru;
}

/* Whether some entry's list starts with p[0, k), and whether one equals it;
 * the distinct tokens that follow it in the entries go to next[]. */
static int32_t ref_follow(const ref_entry *r, const cs_token *p, int32_t k, bool *is_list,
                          bool *seen) {
    int32_t n_next = 0;
    cs_token next[REF_ENTRIES];
    *is_list = *seen = false;
    for (int32_t e = 0; e < REF_ENTRIES; e++) {
        if (!r[e].on || r[e].n < k || memcmp(r[e].tok, p, (size_t)k * sizeof *p) != 0) continue;
        *seen = true;
        if (r[e].n == k) {
            *is_list = true;
            continue;
        }
        bool dup = false;
        for (int32_t j = 0; j < n_next; j++) dup |= next[j] == r[e].tok[k];
        if (!dup) next[n_next++] = r[e].tok[k];
    }
    return n_next;
}

/* The nodes of the compressed tree of the reference's lists: the distinct
 * non-empty prefixes that are a list or are followed by two tokens. */
static int32_t ref_nodes(const ref_entry *r) {
    int32_t nodes = 0;
    for (int32_t e = 0; e < REF_ENTRIES; e++) {
        if (!r[e].on) continue;
        for (int32_t k = 1; k <= r[e].n; k++) {
            bool counted = false; /* by a lower entry with the same prefix */
            for (int32_t f = 0; f < e && !counted; f++)
                counted = r[f].on && r[f].n >= k &&
                          memcmp(r[f].tok, r[e].tok, (size_t)k * sizeof(cs_token)) == 0;
            if (counted) continue;
            bool is_list, seen;
            if (ref_follow(r, r[e].tok, k, &is_list, &seen) >= 2 || is_list) nodes++;
        }
    }
    return nodes;
}

static uint32_t rnd(uint64_t *s, uint32_t n) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)((*s >> 33) % n);
}

/* A random list: often an existing entry's prefix with a random tail, so
 * that lists share prefixes and end inside each other's edges. */
static int32_t random_list(const ref_entry *r, uint64_t *s, cs_token *q, uint32_t alphabet) {
    int32_t n = 1 + (int32_t)rnd(s, REF_LEN), k = 0;
    int32_t from = (int32_t)rnd(s, REF_ENTRIES);
    if (rnd(s, 3) != 0 && r[from].on) {
        k = (int32_t)rnd(s, (uint32_t)r[from].n + 1);
        if (k > n) n = k;
        memcpy(q, r[from].tok, (size_t)k * sizeof *q);
    }
    for (int32_t i = k; i < n; i++) q[i] = (cs_token)rnd(s, alphabet) - 1; /* -1 is a token too */
    return n;
}

/* Random operations against the reference. fail_rate: allocations that
 * fail, out of 65536 (then merges may be skipped: the node count is only a
 * lower bound). */
static void random_run(uint64_t seed, int ops, uint32_t alphabet, uint32_t fail_rate) {
    ref_entry ref[REF_ENTRIES];
    memset(ref, 0, sizeof ref);
    prefix_tree *t = prefix_tree_new(REF_ENTRIES);
    assert_non_null(t);
    uint64_t s = seed, clock = 1;
    int n_inserts = 0, n_enomem = 0, n_redundant = 0, n_hits = 0;
    alloc_fail_rate = fail_rate;
    for (int op = 0; op < ops; op++) {
        cs_token q[REF_LEN];
        int32_t id = (int32_t)rnd(&s, REF_ENTRIES), got, want;
        clock += rnd(&s, 2);                                                /* equal times happen */
        uint64_t now = rnd(&s, 16) == 0 ? rnd(&s, (uint32_t)clock) : clock; /* and go back */
        uint32_t kind = rnd(&s, 20);
        if (kind < 8) { /* insert */
            int32_t n = random_list(ref, &s, q, alphabet), red[REF_ENTRIES], nred;
            int rc = prefix_tree_insert(t, id, q, n, now, red, &nred);
            if (rc == PREFIX_TREE_ENOMEM) {
                assert_true(fail_rate > 0);
                n_enomem++;
                continue;
            }
            assert_int_equal(rc, PREFIX_TREE_OK);
            n_inserts++;
            bool want_red[REF_ENTRIES] = {false};
            int32_t n_want = 0;
            for (int32_t e = 0; e < REF_ENTRIES; e++)
                if (e != id && ref[e].on && ref[e].n <= n &&
                    memcmp(ref[e].tok, q, (size_t)ref[e].n * sizeof *q) == 0) {
                    want_red[e] = true;
                    n_want++;
                }
            assert_int_equal(nred, n_want);
            for (int32_t k = 0; k < nred; k++) {
                assert_true(want_red[red[k]]);
                want_red[red[k]] = false; /* each once */
            }
            n_redundant += nred;
            ref[id].on = true;
            ref[id].n = n;
            ref[id].used = now;
            memcpy(ref[id].tok, q, (size_t)n * sizeof *q);
            /* Mostly the engine frees them; sometimes they linger. */
            if (rnd(&s, 4) != 0)
                for (int32_t k = 0; k < nred; k++) {
                    assert_int_equal(prefix_tree_remove(t, red[k]), PREFIX_TREE_OK);
                    ref[red[k]].on = false;
                }
        } else if (kind < 12) { /* remove */
            assert_int_equal(prefix_tree_remove(t, id),
                             ref[id].on ? PREFIX_TREE_OK : PREFIX_TREE_EINVAL);
            ref[id].on = false;
        } else if (kind < 14) { /* touch */
            assert_int_equal(prefix_tree_touch(t, id, now),
                             ref[id].on ? PREFIX_TREE_OK : PREFIX_TREE_EINVAL);
            if (ref[id].on) ref[id].used = now;
        } else { /* match */
            int32_t n = random_list(ref, &s, q, alphabet);
            n = (int32_t)rnd(&s, (uint32_t)n + 1); /* 0 included */
            int32_t want_id;
            want = ref_match(ref, q, n, &want_id);
            got = prefix_tree_match(t, q, n, &id);
            assert_int_equal(got, want);
            assert_int_equal(id, want_id);
            n_hits += got > 0;
        }
        check_tree(t, fail_rate == 0);
        int32_t count = 0;
        for (int32_t e = 0; e < REF_ENTRIES; e++) count += ref[e].on;
        assert_int_equal(prefix_tree_count(t), count);
        bool any = prefix_tree_lru(t, &got);
        assert_int_equal(got, ref_lru(ref));
        assert_int_equal(any, count > 0);
        if (fail_rate == 0)
            assert_int_equal(prefix_tree_node_count(t), ref_nodes(ref));
        else
            assert_true(prefix_tree_node_count(t) >= ref_nodes(ref));
        if (op % 16 == 0)
            for (int32_t e = 0; e < REF_ENTRIES; e++) {
                cs_token back[REF_LEN];
                assert_int_equal(prefix_tree_entry_tokens(t, e, back, REF_LEN),
                                 ref[e].on ? ref[e].n : -1);
                if (ref[e].on) assert_memory_equal(back, ref[e].tok, (size_t)ref[e].n * 4);
            }
    }
    alloc_fail_rate = 0;
    /* Removing everything leaves no node. */
    for (int32_t e = 0; e < REF_ENTRIES; e++)
        if (ref[e].on) assert_int_equal(prefix_tree_remove(t, e), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_count(t), 0);
    assert_int_equal(prefix_tree_node_count(t), 0);
    check_tree(t, true);
    prefix_tree_free(t);
    assert_int_equal(alloc_live, 0);
    print_message("seed %llu alphabet %u fail %u/65536: %d inserts, %d ENOMEM, %d redundant, "
                  "%d matches > 0\n",
                  (unsigned long long)seed, alphabet, fail_rate, n_inserts, n_enomem, n_redundant,
                  n_hits);
    /* The run must have exercised what it checks. */
    assert_true(n_inserts > ops / 10 && n_redundant > 0 && n_hits > 0);
    if (fail_rate) assert_true(n_enomem > 0);
}

static void test_random_against_reference(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 4; seed++) random_run(seed, 3000, 2 + (uint32_t)seed % 3, 0);
}

static void test_random_with_failing_allocations(void **state) {
    (void)state;
    random_run(99, 3000, 3, 3000); /* ~5% of allocations fail */
}

/* A long list: bounded by PREFIX_TREE_MAX_TOKENS, split deep inside. */
static void test_long_list(void **state) {
    (void)state;
    int32_t n = PREFIX_TREE_MAX_TOKENS;
    cs_token *a = malloc((size_t)n * sizeof *a), *back = malloc((size_t)n * sizeof *a);
    assert_non_null(a);
    assert_non_null(back);
    for (int32_t i = 0; i < n; i++) a[i] = i % 1000;
    prefix_tree *t = prefix_tree_new(64);
    insert_expect(t, 0, a, n, 1, NONE);
    a[n / 2] = -5;
    insert_expect(t, 1, a, n, 2, NONE);
    assert_int_equal(prefix_tree_node_count(t), 3);
    int32_t id;
    assert_int_equal(prefix_tree_match(t, a, n, &id), n);
    assert_int_equal(id, 1);
    assert_int_equal(prefix_tree_entry_tokens(t, 0, back, n), n);
    a[n / 2] = (n / 2) % 1000;
    assert_memory_equal(back, a, (size_t)n * sizeof *a);
    assert_int_equal(prefix_tree_remove(t, 1), PREFIX_TREE_OK);
    assert_int_equal(prefix_tree_node_count(t), 1);
    prefix_tree_free(t);
    free(a);
    free(back);
    assert_int_equal(alloc_live, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_exact_and_partial_match),
        cmocka_unit_test(test_split_and_merge),
        cmocka_unit_test(test_redundant),
        cmocka_unit_test(test_replace_same_id),
        cmocka_unit_test(test_lru_and_ties),
        cmocka_unit_test(test_allocation_failure),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_random_with_failing_allocations),
        cmocka_unit_test(test_long_list),
    };
    return test_run(tests, NULL, NULL);
}
