/* serve_prefix.c: the compressed radix tree of cached token prefixes
 * (serve_prefix.h explains the structure and its costs). */
#include "serve_prefix.h"

#include <stdlib.h>
#include <string.h>

typedef struct pt_node pt_node;
struct pt_node {
    pt_node *parent; /* NULL for the root */
    pt_node **child; /* n_child children (cap_child allocated), unordered */
    cs_token *label; /* the edge's len tokens; label[0] tells siblings apart */
    int32_t len;     /* 0 only for the root */
    int32_t depth;   /* tokens from the root to this node's end */
    int32_t n_child, cap_child;
    int32_t first; /* first entry whose list ends here, -1 none */
    int32_t best;  /* most recently used entry of the subtree, -1 none */
};

typedef struct {
    pt_node *node;      /* where the entry's list ends; NULL: not recorded */
    uint64_t used;      /* last use, the caller's clock */
    int32_t prev, next; /* the other entries ending at the same node */
} pt_entry;

struct prefix_tree {
    pt_node root;
    pt_entry *entries; /* max_entries records, indexed by id */
    int32_t max_entries, count, n_nodes;
};

/* Whether entry a was used more recently than entry b (-1: none): the
 * later time, then the lower id. */
static bool newer(const prefix_tree *t, int32_t a, int32_t b) {
    if (a < 0) return false;
    if (b < 0) return true;
    uint64_t ua = t->entries[a].used, ub = t->entries[b].used;
    return ua != ub ? ua > ub : a < b;
}

/* x->best from x's own entries and its children's best. O(entries at x +
 * children). */
static void recompute_best(const prefix_tree *t, pt_node *x) {
    int32_t best = -1;
    for (int32_t e = x->first; e >= 0; e = t->entries[e].next)
        if (newer(t, e, best)) best = e;
    for (int32_t k = 0; k < x->n_child; k++)
        if (newer(t, x->child[k]->best, best)) best = x->child[k]->best;
    x->best = best;
}

/* Recomputes best from x up to the root (x's subtree changed). */
static void update_path(const prefix_tree *t, pt_node *x) {
    for (; x; x = x->parent) recompute_best(t, x);
}

/* The index of x's child whose edge starts with tok, or -1. O(children). */
static int32_t find_child(const pt_node *x, cs_token tok) {
    for (int32_t k = 0; k < x->n_child; k++)
        if (x->child[k]->label[0] == tok) return k;
    return -1;
}

/* A detached node with room for len label tokens and cap_child children,
 * or NULL. */
static pt_node *node_new(int32_t len, int32_t cap_child) {
    pt_node *x = malloc(sizeof *x);
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->first = x->best = -1;
    x->label = malloc((size_t)len * sizeof *x->label);
    x->child = cap_child > 0 ? malloc((size_t)cap_child * sizeof *x->child) : NULL;
    if (!x->label || (cap_child > 0 && !x->child)) {
        free(x->label);
        free(x->child);
        free(x);
        return NULL;
    }
    x->cap_child = cap_child;
    return x;
}

static void node_free(pt_node *x) {
    free(x->label);
    free(x->child);
    free(x);
}

/* Room for one more child of x. Returns false (x unchanged) on allocation
 * failure; a grown array that ends up unused is harmless. */
static bool reserve_child(pt_node *x) {
    if (x->n_child < x->cap_child) return true;
    int32_t cap = x->cap_child ? 2 * x->cap_child : 2;
    pt_node **c = realloc(x->child, (size_t)cap * sizeof *c);
    if (!c) return false;
    x->child = c;
    x->cap_child = cap;
    return true;
}

static void replace_child(pt_node *p, const pt_node *old, pt_node *new_child) {
    for (int32_t k = 0; k < p->n_child; k++)
        if (p->child[k] == old) {
            p->child[k] = new_child;
            return;
        }
}

static void detach_child(pt_node *p, const pt_node *x) {
    for (int32_t k = 0; k < p->n_child; k++)
        if (p->child[k] == x) {
            p->child[k] = p->child[--p->n_child];
            return;
        }
}

static void entry_unlink(prefix_tree *t, int32_t id) {
    pt_entry *e = &t->entries[id];
    if (e->prev >= 0)
        t->entries[e->prev].next = e->next;
    else
        e->node->first = e->next;
    if (e->next >= 0) t->entries[e->next].prev = e->prev;
    e->node = NULL;
    e->prev = e->next = -1;
}

static void entry_link(prefix_tree *t, int32_t id, pt_node *x) {
    pt_entry *e = &t->entries[id];
    e->prev = -1;
    e->next = x->first;
    if (x->first >= 0) t->entries[x->first].prev = id;
    x->first = id;
    e->node = x;
}

/* p (not the root, no entry, one child c) and c become one node: c's label
 * gets p's in front and c takes p's place. Returns c, or p when c's label
 * cannot grow (both stay, still a correct tree). */
static pt_node *merge_into_child(prefix_tree *t, pt_node *p) {
    pt_node *c = p->child[0];
    cs_token *label = realloc(c->label, (size_t)(p->len + c->len) * sizeof *label);
    if (!label) return p;
    memmove(label + p->len, label, (size_t)c->len * sizeof *label);
    memcpy(label, p->label, (size_t)p->len * sizeof *label);
    c->label = label;
    c->len += p->len;
    c->parent = p->parent;
    replace_child(p->parent, p, c);
    node_free(p);
    t->n_nodes--;
    return c;
}

/* After x lost an entry: frees the entry-less leaves from x up, merges the
 * first surviving node if it has no entry and one child, and recomputes
 * best up to the root. O(path + children scanned). */
static void cleanup(prefix_tree *t, pt_node *x) {
    while (x != &t->root && x->first < 0 && x->n_child == 0) {
        pt_node *p = x->parent;
        detach_child(p, x);
        node_free(x);
        t->n_nodes--;
        x = p;
    }
    if (x != &t->root && x->first < 0 && x->n_child == 1) x = merge_into_child(t, x);
    update_path(t, x);
}

prefix_tree *prefix_tree_new(int32_t max_entries) {
    if (max_entries < 1 || max_entries > PREFIX_TREE_MAX_ENTRIES) return NULL;
    prefix_tree *t = malloc(sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->root.first = t->root.best = -1;
    t->entries = malloc((size_t)max_entries * sizeof *t->entries);
    if (!t->entries) {
        free(t);
        return NULL;
    }
    for (int32_t i = 0; i < max_entries; i++)
        t->entries[i] = (pt_entry){.node = NULL, .used = 0, .prev = -1, .next = -1};
    t->max_entries = max_entries;
    return t;
}

void prefix_tree_free(prefix_tree *t) {
    if (!t) return;
    /* Post-order without a stack: descend to a last child, free leaves on
     * the way back up through the parent pointers. */
    pt_node *x = &t->root;
    while (x) {
        if (x->n_child > 0) {
            x = x->child[x->n_child - 1];
            continue;
        }
        pt_node *p = x->parent;
        if (!p) break; /* the root, embedded in t */
        p->n_child--;
        node_free(x);
        x = p;
    }
    free(t->root.child);
    free(t->entries);
    free(t);
}

int prefix_tree_insert(prefix_tree *t, int32_t id, const cs_token *tokens, int32_t n, uint64_t now,
                       int32_t *redundant, int32_t *n_redundant) {
    if (n_redundant) *n_redundant = 0;
    if (!t || id < 0 || id >= t->max_entries || !tokens || n < 1 || n > PREFIX_TREE_MAX_TOKENS ||
        (redundant == NULL) != (n_redundant == NULL))
        return PREFIX_TREE_EINVAL;

    /* Walk: x is the deepest node reached, j the tokens of its edge that
     * match (j == x->len: the walk stopped at x itself), i the tokens of
     * the list matched. Entries ending at the nodes fully passed hold a
     * prefix of the list: redundant, unless it is id itself. */
    pt_node *x = &t->root;
    int32_t i = 0, j = 0, nred = 0;
    while (i < n) {
        int32_t k = find_child(x, tokens[i]);
        if (k < 0) break;
        pt_node *c = x->child[k];
        int32_t m = 1;
        while (m < c->len && i + m < n && c->label[m] == tokens[i + m]) m++;
        i += m;
        x = c;
        j = m;
        if (m < c->len) break;
        for (int32_t e = c->first; e >= 0 && redundant; e = t->entries[e].next)
            if (e != id) redundant[nred++] = e;
    }
    bool at_node = j == x->len;

    /* Allocate everything first, so that a failure changes nothing: the
     * upper half of a split edge (two children: x and maybe the leaf) and
     * the leaf for the tokens past the walk. */
    pt_node *upper = NULL, *leaf = NULL;
    if (!at_node && !(upper = node_new(j, 2))) return PREFIX_TREE_ENOMEM;
    if (i < n && !(leaf = node_new(n - i, 0))) {
        if (upper) node_free(upper);
        return PREFIX_TREE_ENOMEM;
    }
    if (leaf && at_node && !reserve_child(x)) {
        node_free(leaf);
        return PREFIX_TREE_ENOMEM;
    }

    pt_node *end = x; /* where the list ends */
    if (upper) {
        /* x's edge splits at j: upper takes label[0, j) and x's place. */
        pt_node *p = x->parent;
        memcpy(upper->label, x->label, (size_t)j * sizeof *upper->label);
        upper->len = j;
        upper->depth = x->depth - x->len + j;
        upper->parent = p;
        replace_child(p, x, upper);
        upper->child[0] = x;
        upper->n_child = 1;
        upper->best = x->best;
        x->parent = upper;
        memmove(x->label, x->label + j, (size_t)(x->len - j) * sizeof *x->label);
        x->len -= j;
        /* Give back the moved tokens' room; a failed shrink keeps the old
         * (larger) block, which is still correct. */
        cs_token *shrunk = realloc(x->label, (size_t)x->len * sizeof *shrunk);
        if (shrunk) x->label = shrunk;
        t->n_nodes++;
        end = upper;
    }
    if (leaf) {
        memcpy(leaf->label, tokens + i, (size_t)(n - i) * sizeof *leaf->label);
        leaf->len = n - i;
        leaf->depth = n;
        leaf->parent = end;
        end->child[end->n_child++] = leaf;
        t->n_nodes++;
        end = leaf;
    }

    /* Record id at end; an earlier record of id (elsewhere) is dropped after,
     * so that its cleanup cannot free or merge away end (which now holds an
     * entry, and merges keep the child). */
    pt_node *old = t->entries[id].node;
    if (old)
        entry_unlink(t, id);
    else
        t->count++;
    entry_link(t, id, end);
    t->entries[id].used = now;
    if (old && old != end) cleanup(t, old);
    update_path(t, end);
    if (n_redundant) *n_redundant = nred;
    return PREFIX_TREE_OK;
}

int prefix_tree_remove(prefix_tree *t, int32_t id) {
    if (!t || id < 0 || id >= t->max_entries || !t->entries[id].node) return PREFIX_TREE_EINVAL;
    pt_node *x = t->entries[id].node;
    entry_unlink(t, id);
    t->entries[id].used = 0;
    t->count--;
    cleanup(t, x);
    return PREFIX_TREE_OK;
}

int32_t prefix_tree_match(const prefix_tree *t, const cs_token *tokens, int32_t n,
                          int32_t *entry_id) {
    if (entry_id) *entry_id = -1;
    if (!t || !tokens || n <= 0) return 0;
    const pt_node *x = &t->root;
    int32_t i = 0;
    while (i < n) {
        int32_t k = find_child(x, tokens[i]);
        if (k < 0) break;
        const pt_node *c = x->child[k];
        int32_t m = 1;
        while (m < c->len && i + m < n && c->label[m] == tokens[i + m]) m++;
        i += m;
        x = c;
        if (m < c->len) break; /* ends inside c's edge: c's subtree holds it */
    }
    if (i > 0 && entry_id) *entry_id = x->best;
    return i;
}

int prefix_tree_touch(prefix_tree *t, int32_t id, uint64_t now) {
    if (!t || id < 0 || id >= t->max_entries || !t->entries[id].node) return PREFIX_TREE_EINVAL;
    t->entries[id].used = now;
    update_path(t, t->entries[id].node);
    return PREFIX_TREE_OK;
}

bool prefix_tree_lru(const prefix_tree *t, int32_t *entry_id) {
    int32_t lru = -1;
    for (int32_t e = 0; t && e < t->max_entries; e++)
        if (t->entries[e].node && (lru < 0 || t->entries[e].used < t->entries[lru].used))
            lru = e; /* ascending ids: of equal times, the lowest stays */
    if (entry_id) *entry_id = lru;
    return lru >= 0;
}

int32_t prefix_tree_count(const prefix_tree *t) {
    return t ? t->count : 0;
}

int32_t prefix_tree_max_entries(const prefix_tree *t) {
    return t ? t->max_entries : 0;
}

int32_t prefix_tree_entry_tokens(const prefix_tree *t, int32_t id, cs_token *out, int32_t cap) {
    if (!t || id < 0 || id >= t->max_entries || !t->entries[id].node) return -1;
    const pt_node *end = t->entries[id].node;
    if (out) {
        /* Each edge fills out[depth - len, depth), clipped to cap. */
        for (const pt_node *x = end; x != &t->root; x = x->parent) {
            int32_t lo = x->depth - x->len, hi = x->depth < cap ? x->depth : cap;
            if (hi > lo) memcpy(out + lo, x->label, (size_t)(hi - lo) * sizeof *out);
        }
    }
    return end->depth;
}

uint64_t prefix_tree_entry_used(const prefix_tree *t, int32_t id) {
    if (!t || id < 0 || id >= t->max_entries || !t->entries[id].node) return 0;
    return t->entries[id].used;
}

int32_t prefix_tree_node_count(const prefix_tree *t) {
    return t ? t->n_nodes : 0;
}
