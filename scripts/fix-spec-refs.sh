#!/usr/bin/env bash
# fix-spec-refs.sh: ONE-OFF MIGRATION (issue 9, part 3). Delete it once it has
# been run on the merged tree, or keep it as a record; nothing calls it.
#
# The cache specification now lives in docs/KV_CACHE_SPEC.md. This script
# rewrites the source comments that pointed outside the repository
# (../shared/design/kv-cache-spec.md, "kv-cache spec") or said "the PR"
# without naming it (llama.cpp PR #5691), and qualifies the first "spec §"
# citation of each citing file with the document's path, so that every
# "spec §n", test id (A1 ... E4) and "FIX n" in the file resolves.
#
# usage: scripts/fix-spec-refs.sh [repository root]   (default: the script's ..)
#
# Every edit is a literal (old -> new) replacement in one named file; new never
# contains old, so a second run changes nothing. An edit whose old text is gone
# is reported as "done" (new text present) or "MISSING" (neither present: the
# comment was rewritten meanwhile; fix it by hand). String literals are not
# touched: tools/cmd_replay.c prints "(spec §2.8)" and docs/CLI.md documents
# that output, and tests/passkey_test.sh's failure message is output too.
# Afterwards the C files it changed are run through clang-format (comments
# that grew past 100 columns are reflowed), and the lines that still cite the
# old location or "the PR" are listed for review. Exit status: 0, or 1 when
# an edit was MISSING or a leftover was found.
set -euo pipefail
export LC_ALL=C

ROOT=${1:-"$(cd "$(dirname "$0")/.." && pwd)"}
cd "$ROOT"

status=0
changed=()

# Escape a literal for a sed regex (BRE) and for a sed replacement.
re_esc() { printf '%s' "$1" | sed -e 's/[]\/$*.^[]/\\&/g'; }
rep_esc() { printf '%s' "$1" | sed -e 's/[\/&]/\\&/g'; }

# rep FILE OLD NEW: replace the literal OLD (which must occur on exactly one
# line) by NEW in FILE.
rep() {
    local f=$1 old=$2 new=$3 n
    case $new in *"$old"*) echo "BUG: new text contains old text in $f" >&2; exit 2 ;; esac
    if [ ! -f "$f" ]; then
        echo "MISSING  $f (file not found): $old"
        status=1
        return
    fi
    n=$(grep -cF -- "$old" "$f" || true)
    if [ "$n" -eq 0 ]; then
        if grep -qF -- "$new" "$f"; then
            echo "done     $f: $new"
        else
            echo "MISSING  $f: $old"
            status=1
        fi
        return
    fi
    if [ "$n" -ne 1 ]; then
        echo "MISSING  $f: '$old' is on $n lines, expected 1; fix by hand"
        status=1
        return
    fi
    sed -i "s/$(re_esc "$old")/$(rep_esc "$new")/" "$f"
    echo "edited   $f: $new"
    case " ${changed[*]-} " in *" $f "*) ;; *) changed+=("$f") ;; esac
}

S=docs/KV_CACHE_SPEC.md
PR="llama.cpp PR #5691"

# --- the old location of the specification
rep include/ctxshift.h \
    " * Semantics: ../shared/design/kv-cache-spec.md §2 (docs/KV_CACHE.md)." \
    " * Semantics: $S §2 (docs/KV_CACHE.md)."
rep tools/cmd_passkey.c \
    " * (spec §5 of ../shared/design/kv-cache-spec.md)." \
    " * ($S §5)."
rep tests/fixtures/kv_ref.h \
    "written from ../shared/design/kv-cache-spec.md §1, §2 and §4.2" \
    "written from $S §1, §2 and §4.2"
rep tools/cmd_run.c "examples/main/main.cpp; kv-cache spec §6.1)" "examples/main/main.cpp; $S §6.1)"
rep tests/test_kv_e2e.c "(kv-cache spec §8 part D, plus" "($S §8 part D, plus"
rep tests/fixtures/ref_forward.h "(kv-cache spec 1.5)" "($S §1.5)"

# --- "the PR" is llama.cpp PR #5691 (spec, first paragraph)
rep src/kv_cells.c "/* The PR's contiguous search (spec §1.6)" "/* $PR's contiguous search (spec §1.6)"
rep src/kv_cells.c "/* The PR's heuristic: plenty of room" "/* $PR's heuristic: plenty of room"
rep src/kv_cells.c "/* the PR's side effect (spec §1.7) */" "/* $PR's side effect (spec §1.7) */"
rep src/kv_cells.c "/* the PR counts every cell without seq */" "/* $PR counts every cell without seq */"
rep src/kv_cells.h "First the PR's heuristic: if head >" "First $PR's heuristic: if head >"
rep src/kv_cells.h "head with the PR's wrap rule (spec §1.6)" "head with $PR's wrap rule (spec §1.6)"
rep src/kv_cells.h "otherwise head = 0 (the PR's side effect)." "otherwise head = 0 ($PR's side effect)."
rep src/kv_cells.h "already empty ones included, as in the PR)." "already empty ones included, as in $PR)."
rep tools/cmd_passkey.c "/* the PR's fixed n_keep */" "/* $PR's fixed n_keep */"
rep tools/cmd_passkey.c "/* the PR's n_batch */" "/* $PR's n_batch */"
rep tests/fixtures/kv_ref.h "/* the PR's search hint (spec §1.7) */" "/* $PR's search hint (spec §1.7) */"
rep tests/fixtures/kv_ref.h "then a contiguous (PR) or scattered ([NOW]) search" \
    "then a contiguous ([PR]) or scattered ([NOW]) search"
rep tests/fixtures/kv_ref.c "/* §1.6, the PR's loop, literally. */" "/* §1.6, $PR's loop, literally. */"
rep tests/fixtures/kv_ref.c "/* §2.5, head as in the PR: the first cell without seq */" \
    "/* §2.5, head as in $PR: the first cell without seq */"
rep tests/test_kv_cells.c "/* the PR's side effect */" "/* $PR's side effect */"
rep tests/test_kv_cells.c "empty (the PR): cells 0 and 3" "empty ($PR): cells 0 and 3"

# --- the first citation in each citing file names the document
rep src/context.c "/* Spec §4.5 [R]: frag = 1 - used / cell_max" "/* $S §4.5 [R]: frag = 1 - used / cell_max"
rep src/forward.c "over the cells visible to it (spec §1.5)" "over the cells visible to it ($S §1.5)"
rep src/kernels/kernels.h "(ggml's YaRN formulation, spec §3.1)" "(ggml's YaRN formulation, $S §3.1)"
rep src/kv_cache.h "batch's rows, the K-shift (spec §3) and" "batch's rows, the K-shift ($S §3) and"
rep src/kv_cache.c "(upstream's drift, spec §3.2 obs.)" "(upstream's drift, $S §3.2 obs.)"
rep src/kv_cells.c "/* kv_cells.c: KV metadata operations (spec §1, §2, §4.2)." \
    "/* kv_cells.c: KV metadata operations ($S §1, §2, §4.2)."
rep src/kv_cells.h "/* kv_cells.h: pure KV-cache metadata (spec §1):" "/* kv_cells.h: pure KV-cache metadata ($S §1):"
rep src/state.c "the KV cache (spec §4.6, §7 items 8, 21, 28;" "the KV cache ($S §4.6, §7 items 8, 21, 28;"
rep tools/cmd_parallel.c " * examples/parallel, spec §6.3)." " * examples/parallel, $S §6.3)."
rep tests/fixtures/kv_ref.c "Every rule cites the spec section it comes from." \
    "Every rule cites the section of $S it comes from."
rep tests/test_kv_cache.c "numerics without a model (spec §8 part C," "numerics without a model ($S §8 part C,"
rep tests/test_kv_cells.c "KV cache metadata (spec §1, §2, §4.2)," "KV cache metadata ($S §1, §2, §4.2),"
rep tests/test_state.c "save and restore (spec §4.6, §7 items 8, 21, 28," "save and restore ($S §4.6, §7 items 8, 21, 28,"
rep tests/test_context.c "/* A14: seq_add/seq_div on cells shared" "/* $S test A14: seq_add/seq_div on cells shared"
rep tests/passkey_test.sh "# The text of spec §5.2, written out" "# The text of $S §5.2, written out"

# --- reformat the C files that changed (reflows comments past 100 columns)
c_files=()
for f in "${changed[@]-}"; do
    case $f in *.c | *.h) c_files+=("$f") ;; esac
done
if [ ${#c_files[@]} -gt 0 ]; then
    if command -v clang-format >/dev/null 2>&1; then
        clang-format -i "${c_files[@]}"
        echo "clang-format: ${c_files[*]}"
    else
        echo "clang-format not found: run it on ${c_files[*]}"
    fi
fi

# --- what is left for a person to look at
dirs=(src tools tests include bench)
left=$(grep -rnE "kv-cache-spec|shared/design/kv|kv-cache spec|\b[Tt]he PR\b" "${dirs[@]}" 2>/dev/null || true)
if [ -n "$left" ]; then
    echo "left (old location or unnamed PR; review by hand):"
    printf '%s\n' "$left"
    status=1
fi
for f in $(grep -rlE "[Ss]pec §|spec (FIX|[A-E][0-9])" "${dirs[@]}" 2>/dev/null || true); do
    case $f in tools/cmd_replay.c) continue ;; esac # "(spec §2.8)" there is program output
    grep -qF "KV_CACHE_SPEC.md" "$f" || echo "note: $f cites the spec without naming $S"
done
exit $status
