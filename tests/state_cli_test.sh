#!/usr/bin/env bash
# state_cli_test.sh: end-to-end checks of `ctxshift run --prompt-cache FILE`
# (KV state reuse across runs, docs/STATE.md).
#
# usage: tests/state_cli_test.sh <ctxshift binary> <source dir> [shared dir]
#
# Each check prints "ok" or "FAIL" (with the reason); the last line is
# "N passed, M failed". Exit status: 0 when nothing failed, 1 otherwise,
# 2 for bad arguments. Needs only the bundled model.
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 <ctxshift binary> <source dir> [shared dir]" >&2
    exit 2
fi
BIN=$1
SRC=$2
if [ ! -x "$BIN" ]; then
    echo "error: '$BIN' is not an executable" >&2
    exit 2
fi

MODEL="$SRC/models/stories260K-f32.gguf"
PROMPT="Once upon a time"
LONGER="Once upon a time there was"
# Greedy and single-threaded so that two runs can be compared byte for byte.
GEN=(-m "$MODEL" -n 24 --temp 0 -s 1 -t 1)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-state-cli-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
CACHE="$TMP/prompt.cskv"

n_pass=0
n_fail=0
ok() { n_pass=$((n_pass + 1)); echo "ok   $1"; }
fail() {
    n_fail=$((n_fail + 1))
    echo "FAIL $1: $2"
    if [ -s "$TMP/err" ]; then
        echo "     stderr (last lines):"
        tail -n 5 "$TMP/err" | sed 's/^/       /'
    fi
}

# Run the binary: stdout in $TMP/out, stderr in $TMP/err, exit status in RC.
RC=0
run() {
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    RC=$?
}

# The number N of "prompt cache: reused N of M prompt tokens" in $TMP/err, or "none".
reused() {
    local n
    n=$(sed -n 's/^prompt cache: reused \([0-9]*\) of [0-9]* prompt tokens.*/\1/p' "$TMP/err")
    echo "${n:-none}"
}

# --------------------------------------------------------------- usage
run run --help
if [ "$RC" -eq 0 ] && grep -q -- "--prompt-cache FILE" "$TMP/out"; then
    ok "run --help lists --prompt-cache"
else
    fail "run --help" "exit status $RC or no --prompt-cache line"
fi
run run --prompt-cache
if [ "$RC" -eq 2 ] && grep -q "error:" "$TMP/err"; then
    ok "--prompt-cache without a value exits 2"
else
    fail "--prompt-cache without a value" "exit status $RC, expected 2"
fi

# ------------------------------------------------------------ baselines
run run "${GEN[@]}" -p "$PROMPT"
cp "$TMP/out" "$TMP/base"
run run "${GEN[@]}" -p "$LONGER"
cp "$TMP/out" "$TMP/base_longer"

# ------------------------------------------------------- first and second run
run run "${GEN[@]}" -p "$PROMPT" --prompt-cache "$CACHE"
if [ "$RC" -eq 0 ] && [ "$(reused)" = "0" ] && [ -s "$CACHE" ]; then
    ok "first run reuses nothing and writes the cache"
else
    fail "first run" "exit status $RC, reused '$(reused)', cache file $(ls -l "$CACHE" 2>&1)"
fi
if cmp -s "$TMP/out" "$TMP/base"; then
    ok "first run prints what a run without the cache prints"
else
    fail "first run output" "differs from the run without --prompt-cache"
fi
ls "$TMP" | grep -q "\.tmp-" && fail "temporary files" "left in $TMP" || ok "no temporary file left"

run run "${GEN[@]}" -p "$PROMPT" --prompt-cache "$CACHE"
n=$(reused)
if [ "$RC" -eq 0 ] && [ "$n" != "none" ] && [ "$n" -gt 0 ]; then
    ok "second run reuses $n prompt tokens"
else
    fail "second run" "exit status $RC, reused '$n'"
fi
if cmp -s "$TMP/out" "$TMP/base"; then
    ok "second run prints the same text (greedy)"
else
    fail "second run output" "differs from the first run"
fi
if grep -q "prompt eval time = .* /     1 tokens" "$TMP/err"; then
    ok "second run evaluates only the last prompt token"
else
    fail "second run prompt eval" "$(grep 'prompt eval' "$TMP/err")"
fi

# A longer prompt sharing the cached prefix: the whole old prompt is reused.
n_old=$(sed -n 's/^prompt cache: reused [0-9]* of \([0-9]*\) prompt tokens.*/\1/p' "$TMP/err")
run run "${GEN[@]}" -p "$LONGER" --prompt-cache "$CACHE"
if [ "$RC" -eq 0 ] && [ "$(reused)" = "$n_old" ] && cmp -s "$TMP/out" "$TMP/base_longer"; then
    ok "a longer prompt reuses the cached $n_old tokens and prints the same text"
else
    fail "longer prompt" "exit status $RC, reused '$(reused)' (want $n_old), or output differs"
fi

# ------------------------------------------------------- unusable cache files
head -c 100 "$CACHE" >"$TMP/cut" && mv "$TMP/cut" "$CACHE"
run run "${GEN[@]}" -p "$PROMPT" --prompt-cache "$CACHE"
size=$(wc -c <"$CACHE")
if [ "$RC" -eq 0 ] && grep -q "prompt cache: cannot use" "$TMP/err" && [ "$(reused)" = "0" ] &&
    cmp -s "$TMP/out" "$TMP/base" && [ "$size" -gt 100 ]; then
    ok "a truncated cache is reported, ignored and rewritten"
else
    fail "truncated cache" "exit status $RC, reused '$(reused)', size $size"
fi

run run "${GEN[@]}" -p "$PROMPT" -ctk f32 -ctv f32 --prompt-cache "$CACHE"
if [ "$RC" -eq 0 ] && grep -q "cannot use.*type" "$TMP/err" && [ "$(reused)" = "0" ]; then
    ok "a cache of other KV types is refused by name and ignored"
else
    fail "other cache types" "exit status $RC, reused '$(reused)'"
fi

TINY="$TMP/tiny.gguf"
if "$BIN" gen-model -o "$TINY" --preset tiny >/dev/null 2>&1; then
    run run -m "$TINY" -n 4 --temp 0 -t 1 -p "$PROMPT" --prompt-cache "$CACHE"
    if [ "$RC" -eq 0 ] && grep -q "cannot use.*fingerprint" "$TMP/err" && [ "$(reused)" = "0" ]; then
        ok "a cache of another model is refused by its fingerprint"
    else
        fail "other model" "exit status $RC, reused '$(reused)'"
    fi
else
    fail "gen-model tiny" "could not write $TINY"
fi

run run "${GEN[@]}" -p "$PROMPT" --prompt-cache "$TMP/no-such-dir/cache.cskv"
if [ "$RC" -eq 1 ] && grep -q "error:.*no-such-dir" "$TMP/err"; then
    ok "an unwritable cache path exits 1 naming it"
else
    fail "unwritable cache path" "exit status $RC, expected 1"
fi

echo
echo "$n_pass passed, $n_fail failed"
[ "$n_fail" -eq 0 ]
