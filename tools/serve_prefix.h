/* serve_prefix.h: the index of cached token prefixes for `ctxshift serve`.
 *
 * What it indexes. The server keeps idle KV sequences ("entries", ids
 * 0..max_entries-1) that each hold tokens[0, n) at positions 0..n-1. A new
 * request looks up the longest prefix of its prompt that some entry holds
 * and gets those cells by cs_kv_seq_cp (shared cells: no copy, no
 * recompute). This module only answers "which entry, how many tokens"; the
 * engine owns the cells, and frees them before it tells the index.
 *
 * Structure: a compressed radix tree over token ids (as SGLang's
 * RadixCache). Each edge carries a run of tokens (stored in the node it
 * leads to); the path from the root to a node spells a prefix; an entry is
 * recorded at the node where its token list ends (inserts split an edge so
 * that such a node exists). Every node other than the root holds an entry
 * or has at least two children (removals free empty leaves and merge a
 * node with its only child), so there are at most 2 x (distinct token
 * lists) nodes. Each node also keeps the most recently used entry of its
 * subtree, so a lookup that ends anywhere knows at once which entry to copy.
 *
 * Why a radix tree and not a list of entries: a lookup walks the prompt
 * once, comparing each token with one edge, so its cost is O(prompt tokens
 * + children scanned) whatever the number of entries, where a scan of the
 * entries costs O(entries x prefix length); and a prefix shared by many
 * entries (a system prompt) is stored and compared once, in one edge.
 * Children are found by a linear scan of the node's child array: a node
 * has at most one child per entry below it, so at most max_entries.
 *
 * Costs (n: tokens of the call, d: nodes on the path, d <= n; c: children
 * and entries scanned on that path, each <= max_entries per node):
 * insert/remove/touch O(n + c) with at most two node allocations;
 * match O(n + children scanned); lru O(max_entries); count O(1);
 * entry_tokens O(n + d). Memory: the distinct tokens of all entries plus
 * O(entries) nodes; after every entry is removed the tree holds no nodes.
 *
 * Not thread-safe: the engine calls it from its one scheduling thread.
 * Uses only cs_token from ctxshift.h. */
#ifndef CS_TOOL_SERVE_PREFIX_H
#define CS_TOOL_SERVE_PREFIX_H

#include <stdbool.h>
#include <stdint.h>

#include "ctxshift.h"

/* The longest token list an entry may hold, and the most entries a tree may
 * be created for. */
#define PREFIX_TREE_MAX_TOKENS  (1 << 20)
#define PREFIX_TREE_MAX_ENTRIES 4096

/* Results of the calls that can fail. */
enum {
    PREFIX_TREE_OK = 0,
    PREFIX_TREE_EINVAL = -1, /* bad argument (id out of range, n out of bounds, NULL) */
    PREFIX_TREE_ENOMEM = -2, /* allocation failed; the tree is as it was before the call */
};

typedef struct prefix_tree prefix_tree;

/* An empty tree for entry ids 0..max_entries-1 (1 <= max_entries <=
 * PREFIX_TREE_MAX_ENTRIES). Returns NULL on a bad argument or allocation
 * failure. Cost O(max_entries). */
prefix_tree *prefix_tree_new(int32_t max_entries);

/* Frees every node and the tree. NULL is a no-op. */
void prefix_tree_free(prefix_tree *t);

/* Records entry `id` as holding tokens[0, n) (1 <= n <= PREFIX_TREE_MAX_TOKENS,
 * tokens copied), last used at `now` (any caller clock: larger is more
 * recent). An earlier record of the same id is replaced.
 *
 * Entries other than `id` whose token list is a prefix of tokens[0, n)
 * (equal lists included) are now redundant: the new entry holds all they
 * hold. Their ids are written to redundant[0, *n_redundant) (redundant
 * needs room for prefix_tree_max_entries(t) ids; may be NULL with
 * n_redundant NULL when the caller does not want them), shortest first.
 * They stay recorded: the engine frees their cells, then calls
 * prefix_tree_remove for each. An entry that already covers the new list
 * (prefix_tree_match(t, tokens, n) == n) is not reported: the caller may
 * check that first and skip the insert.
 *
 * Returns PREFIX_TREE_OK, PREFIX_TREE_EINVAL (nothing changed) or
 * PREFIX_TREE_ENOMEM (nothing changed, the earlier record of `id`
 * included; *n_redundant is 0 on either error). */
int prefix_tree_insert(prefix_tree *t, int32_t id, const cs_token *tokens, int32_t n, uint64_t now,
                       int32_t *redundant, int32_t *n_redundant);

/* Forgets entry `id`: frees the nodes that no entry needs any more and
 * merges a node left with one child and no entry into that child. Returns
 * PREFIX_TREE_OK, or PREFIX_TREE_EINVAL when `id` is not recorded. Never
 * fails for want of memory: if the merge cannot grow the child's token
 * array, the two nodes stay apart (lookups are unaffected). */
int prefix_tree_remove(prefix_tree *t, int32_t id);

/* The length of the longest prefix of tokens[0, n) (n >= 0; tokens may be
 * NULL when n is 0) that some entry holds, a prefix of an entry's list
 * included (7 tokens of a 100-token entry count 7). *entry_id (may be
 * NULL) gets the entry holding it: of several, the most recently used; of
 * equal times, the lowest id. It gets -1 when the result is 0. Does not
 * touch the entry. */
int32_t prefix_tree_match(const prefix_tree *t, const cs_token *tokens, int32_t n,
                          int32_t *entry_id);

/* Sets the last use of entry `id` to `now`. Returns PREFIX_TREE_OK, or
 * PREFIX_TREE_EINVAL when `id` is not recorded. */
int prefix_tree_touch(prefix_tree *t, int32_t id, uint64_t now);

/* The least recently used entry into *entry_id (of equal times, the lowest
 * id): true, or false (and -1) when the tree is empty. Cost O(max_entries). */
bool prefix_tree_lru(const prefix_tree *t, int32_t *entry_id);

/* The number of recorded entries. */
int32_t prefix_tree_count(const prefix_tree *t);

/* The max_entries the tree was created for. */
int32_t prefix_tree_max_entries(const prefix_tree *t);

/* The length n of entry `id`'s token list, or -1 when `id` is not recorded;
 * when out is not NULL, its first min(n, cap) tokens are written to out. */
int32_t prefix_tree_entry_tokens(const prefix_tree *t, int32_t id, cs_token *out, int32_t cap);

/* The last use of entry `id` (0 when not recorded). */
uint64_t prefix_tree_entry_used(const prefix_tree *t, int32_t id);

/* Nodes in the tree, the root not counted: 0 when it is empty. For tests
 * and statistics. */
int32_t prefix_tree_node_count(const prefix_tree *t);

#endif /* CS_TOOL_SERVE_PREFIX_H */
