#!/usr/bin/env bash
# parallel_test.sh: end-to-end checks of `ctxshift parallel` (docs/CLI.md#parallel).
#
# usage: tests/parallel_test.sh <ctxshift binary> <source dir> [shared dir]
#
# The central property: with greedy sampling the text of every request is
# the same whatever the batching (-np 1 or 4, -b), with defragmentation on or
# off (-dt 0.1 / -dt -1), and equals `ctxshift run` on the concatenated
# prompt. The row results of our kernels do not depend on the batch
# composition or on where a sequence's cells lie, so equality is exact.
#
# Each check prints "ok", "FAIL" (with the reason) or "skip"; the last line is
# "N passed, M failed" (the skipped count on the line before it). Exit status: 0 when nothing
# failed, 1 otherwise, 77 when a check was skipped (tests/cli_lib.sh), 2 for bad arguments.
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 <ctxshift binary> <source dir> [shared dir]" >&2
    exit 2
fi
BIN=$1
SRC=$2
SHARED=${3:-}
if [ ! -x "$BIN" ]; then
    echo "error: '$BIN' is not an executable" >&2
    exit 2
fi

MODEL="$SRC/models/stories260K-f32.gguf"
# The built-in system prompt and first request prompt (tools/cmd_parallel.c),
# for the comparison with `ctxshift run`.
SYSTEM="Once upon a time, in a small town, there lived many happy children."
PROMPT0="Lily went to the park with her mom."
# A setup whose cache fragments: 4 clients, requests ending in different
# steps (prompt lengths differ), cells reused in a 320-cell cache, and
# cell_max above the library's 256-cell minimum for automatic defrag.
FRAG=(-m "$MODEL" -np 4 -ns 16 -c 320 -n 64 --temp 0)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-parallel-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

# texts FILE: the "texts in request order" section of a run's stdout.
texts() { sed -n '/^texts in request order:$/,$p' "$1"; }

# summary_field FILE LINE_PREFIX KEY: the number after "KEY = " on the
# summary line that starts with LINE_PREFIX.
summary_field() {
    grep "^$2" "$1" | sed -n "s/.*[ ,]$3 = \([0-9.]*\).*/\1/p" | head -n 1
}

# run_case NAME ARGS...: run parallel, keep stdout as $TMP/NAME.out; fails
# the check NAME when the exit status is not 0 or the texts are missing.
run_case() {
    local name=$1
    shift
    run parallel "$@"
    cp "$TMP/out" "$TMP/$name.out"
    local n_req
    n_req=$(texts "$TMP/out" | grep -c '^request [0-9]*: "')
    if [ "$RC" -ne 0 ]; then
        fail "parallel $name" "exit status $RC"
        return 1
    fi
    ok "parallel $name runs ($n_req texts)"
    return 0
}

# same_texts NAME A B: the texts of runs A and B are identical.
same_texts() {
    if [ ! -s "$TMP/$2.out" ] || [ ! -s "$TMP/$3.out" ]; then
        fail "$1" "a run is missing"
    elif ! texts "$TMP/$2.out" | grep -q '^request 0: '; then
        fail "$1" "run $2 printed no texts"
    elif diff <(texts "$TMP/$2.out") <(texts "$TMP/$3.out") >"$TMP/diff"; then
        ok "$1"
    else
        fail "$1" "texts differ: $(head -n 4 "$TMP/diff" | tr '\n' ' ')"
    fi
}

# ---------------------------------------------------------------- usage
check_rc "--help exits 0" 0 "" -- parallel --help
if grep -q "usage: ctxshift parallel" "$TMP/out"; then
    ok "--help prints the usage on stdout"
else
    fail "--help prints the usage on stdout" "no usage line"
fi
if "$BIN" --help 2>/dev/null | grep -q "^  parallel "; then
    ok "parallel is listed by ctxshift --help"
else
    fail "parallel is listed by ctxshift --help" "missing"
fi
check_rc "unknown flag exits 2" 2 "unknown flag '--bogus'" -- parallel --bogus
check_rc "-np 0 exits 2" 2 "-np: '0' is out of range" -- parallel -np 0
check_rc "-np 64 exits 2 (sequence ids 0..63)" 2 "-np: '64' is out of range" -- parallel -np 64
check_rc "-ns 0 exits 2" 2 "-ns" -- parallel -ns 0
check_rc "-n 0 exits 2" 2 "-n" -- parallel -n 0
check_rc "-np without a value exits 2" 2 "missing value" -- parallel -np
check_rc "-np 4x exits 2" 2 "not an integer" -- parallel -np 4x
check_rc "-dt 2 exits 2" 2 "-dt" -- parallel -dt 2
check_rc "--temp abc exits 2" 2 "--temp" -- parallel --temp abc
check_rc "-ctk q4_1 exits 2" 2 "KV cache type" -- parallel -ctk q4_1
check_rc "a missing model exits 1" 1 "" -- parallel -m "$TMP/none.gguf"
check_rc "a missing --prompts file exits 1" 1 "none.txt" -- parallel --prompts "$TMP/none.txt"
printf '\n\n' >"$TMP/empty.txt"
check_rc "a --prompts file without prompts exits 1" 1 "no prompts" -- \
    parallel -m "$MODEL" --prompts "$TMP/empty.txt"
# 8 clients of up to 64 tokens each over a 29-token system prompt need more
# than 400 cells: halving the batch down to 1 cannot help.
check_rc "a full cache fails with a clear message" 1 "the KV cache is full" -- \
    parallel -m "$MODEL" -np 8 -ns 16 -c 400 --temp 0

# ---------------------------------------------------------------- equality
run_case dt "${FRAG[@]}" -dt 0.1
defrags=$(summary_field "$TMP/dt.out" "defrag:" passes)
moved=$(summary_field "$TMP/dt.out" "defrag:" "cells moved")
if [ -n "$defrags" ] && [ "$defrags" -gt 0 ] && [ -n "$moved" ] && [ "$moved" -gt 0 ]; then
    ok "-dt 0.1 defragments a fragmenting run ($defrags passes, $moved cells moved)"
else
    fail "-dt 0.1 defragments a fragmenting run" "passes '$defrags', cells moved '$moved'"
fi
n_texts=$(texts "$TMP/dt.out" | grep -c '^request [0-9]*: "')
n_lines=$(grep -c '^request [0-9]* (client [0-3]): prompt [0-9]* t, generated [0-9]* t' "$TMP/dt.out")
if [ "$n_texts" -eq 16 ] && [ "$n_lines" -eq 16 ]; then
    ok "16 request lines and 16 texts"
else
    fail "16 request lines and 16 texts" "$n_lines request lines, $n_texts texts"
fi
sys_tokens=$(grep '^summary:' "$TMP/dt.out" | sed -n 's/.*system prompt = \([0-9]*\) tokens.*/\1/p')
end_used=$(summary_field "$TMP/dt.out" "cache:" "used at end")
if [ -n "$sys_tokens" ] && [ "$end_used" = "$sys_tokens" ]; then
    ok "the cache holds only the system prompt at the end ($end_used cells)"
else
    fail "the cache holds only the system prompt at the end" "used '$end_used', system '$sys_tokens'"
fi
if grep -q '^throughput: prompt [0-9]* tokens (.* t/s), generated [0-9]* tokens (.* t/s)' "$TMP/dt.out"; then
    ok "the summary reports throughput"
else
    fail "the summary reports throughput" "no throughput line"
fi

run_case nodt "${FRAG[@]}" -dt -1
nodefrags=$(summary_field "$TMP/nodt.out" "defrag:" passes)
if [ "$nodefrags" = "0" ]; then
    ok "-dt -1 never defragments"
else
    fail "-dt -1 never defragments" "passes '$nodefrags'"
fi
same_texts "greedy texts equal with -dt 0.1 and -dt -1" dt nodt

run_case np1 "${FRAG[@]}" -np 1 -dt -1
same_texts "greedy texts equal with -np 1 and -np 4" np1 dt

run_case np8 -m "$MODEL" -np 8 -ns 16 -c 512 --temp 0 -dt 0.1
same_texts "greedy texts equal with -np 8 (-c 512)" np8 np1

run_case b3 "${FRAG[@]}" -b 3 -dt 0.1
same_texts "greedy texts equal with -b 3 (prompts split over decodes)" b3 np1

run_case f32 "${FRAG[@]}" -ctk f32 -ctv f32 -dt 0.1
run_case f32np1 "${FRAG[@]}" -np 1 -ctk f32 -ctv f32
same_texts "greedy texts equal with an f32 cache, -np 1 and -np 4" f32 f32np1

# Sampling: request r uses seed + r, so the texts do not depend on -np. This
# needs bit-identical logits, hence an attention that sums over a sequence's
# cells in position order: after cells are reused (or defragmented) the cell
# order differs from the position order, and summing in cell order changes
# the last bits of the logits, which flips a sampled token in request 6.
run_case temp4 -m "$MODEL" -np 4 -ns 8 -c 320 --temp 0.8 -s 7
run_case temp1 -m "$MODEL" -np 1 -ns 8 -c 320 --temp 0.8 -s 7
same_texts "sampled texts (--temp 0.8 -s 7) equal with -np 1 and -np 4" temp1 temp4

# Request 0 of the defrag run continues the shared system prompt exactly as
# `ctxshift run` continues the concatenated text.
if command -v python3 >/dev/null 2>&1; then
    n_gen0=$(grep '^request 0 (client' "$TMP/dt.out" | sed -n 's/.*generated \([0-9]*\) t.*/\1/p')
    text0=$(texts "$TMP/dt.out" | grep '^request 0: ' | sed 's/^request 0: //' |
        python3 -c 'import json,sys; sys.stdout.write(json.loads(sys.stdin.read()))')
    run run -m "$MODEL" -p "$SYSTEM $PROMPT0" -n "${n_gen0:-0}" --temp 0
    want="$SYSTEM $text0"
    got=$(cat "$TMP/out")
    if [ "$RC" -eq 0 ] && [ -n "$n_gen0" ] && [ "$got" = "$want" ]; then
        ok "request 0 equals 'ctxshift run' on the concatenated prompt ($n_gen0 tokens)"
    else
        fail "request 0 equals 'ctxshift run'" "run: '${got:0:120}...' parallel: '${want:0:120}...'"
    fi
else
    skip "request 0 equals 'ctxshift run'" "python3 missing"
fi

# ---------------------------------------------------------------- prompts
printf 'Tom saw a dog.\r\n\nThe cat was sad.\nA bird sang.' >"$TMP/prompts.txt"
run_case prompts -m "$MODEL" -np 2 -ns 5 -n 24 --temp 0 --prompts "$TMP/prompts.txt"
if texts "$TMP/prompts.out" | grep -q '^request 3: "Tom saw a dog\.' &&
    texts "$TMP/prompts.out" | grep -q '^request 4: "The cat was sad\.' &&
    texts "$TMP/prompts.out" | grep -q '^request 2: "A bird sang\.'; then
    ok "--prompts: one prompt per line (CR and empty lines dropped), cycled"
else
    fail "--prompts: one prompt per line, cycled" "$(texts "$TMP/prompts.out" | head -n 6 | tr '\n' ' ')"
fi
run_case sys -m "$MODEL" -np 2 -ns 2 -n 24 --temp 0 -p "The dog ran."
sys_n=$(grep '^summary:' "$TMP/sys.out" | sed -n 's/.*system prompt = \([0-9]*\) tokens.*/\1/p')
if [ -n "$sys_n" ] && [ "$sys_n" -lt 10 ]; then
    ok "-p sets the system prompt ($sys_n tokens)"
else
    fail "-p sets the system prompt" "system prompt '$sys_n' tokens"
fi

# ---------------------------------------------------------------- kv map
run_case kvmap "${FRAG[@]}" -ns 8 -dt 0.1 --kv-map --kv-map-svg "$TMP/map.svg"
n_end_maps=$(grep -c '^\[kv-map\] request [0-9]* ended' "$TMP/kvmap.out")
n_defrag_maps=$(grep -c '^\[kv-map\] defrag' "$TMP/kvmap.out")
if [ "$n_end_maps" -eq 8 ] && [ "$n_defrag_maps" -gt 0 ]; then
    ok "--kv-map prints a map per request end (8) and per defrag ($n_defrag_maps)"
else
    fail "--kv-map prints maps" "$n_end_maps end maps, $n_defrag_maps defrag maps"
fi
if [ -s "$TMP/map.svg" ] && grep -q '<svg' "$TMP/map.svg" && grep -q '</svg>' "$TMP/map.svg"; then
    ok "--kv-map-svg writes an SVG"
else
    fail "--kv-map-svg writes an SVG" "no <svg>...</svg> in the file"
fi
run_case nomap "${FRAG[@]}" -ns 8 -dt 0.1
if ! grep -q '^\[kv-map\]' "$TMP/nomap.out"; then
    ok "no map without --kv-map"
else
    fail "no map without --kv-map" "map lines printed"
fi
same_texts "texts equal with and without --kv-map" kvmap nomap

# ---------------------------------------------------------------- other models
if [ -n "$SHARED" ] && [ -f "$SHARED/models/stories260K-q8_0.gguf" ]; then
    Q8="$SHARED/models/stories260K-q8_0.gguf"
    run_case q8np4 -m "$Q8" -np 4 -ns 8 -c 320 --temp 0 -dt 0.1
    run_case q8np1 -m "$Q8" -np 1 -ns 8 -c 320 --temp 0 -dt -1
    same_texts "q8_0 model: greedy texts equal with -np 1 and -np 4" q8np1 q8np4
else
    skip "q8_0 model checks" "no shared folder"
fi

if [ "$n_skip" -gt 0 ]; then
    echo "($n_skip skipped)"
fi
echo "$n_pass passed, $n_fail failed"
test_exit
