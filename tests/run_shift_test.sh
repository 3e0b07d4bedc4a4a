#!/usr/bin/env bash
# run_shift_test.sh: end-to-end checks of long generation in `ctxshift run`:
# the context shift (--keep, --no-context-shift, -n -2), self-extend
# (--grp-attn-n/-w) and the KV map (--kv-map, --kv-map-svg).
#
# usage: tests/run_shift_test.sh <ctxshift binary> <source dir> [shared dir]
#
# Each check prints "ok", "FAIL" (with the reason) or "skip"; the last line is
# "N passed, M failed" (plus the skipped count). The golden llama-cli
# transcript needs the shared folder; those checks are skipped (and counted)
# when it is missing. The hidden flag --check-shift makes `run` verify the
# cache after every shift (pos_max + 1 == n_past, one cell per position,
# the first n_keep cells untouched, every moved cell owing -n_discard) and
# print "shift-check ok (N shifts, ...)".
# Exit status: 0 when nothing failed, 1 otherwise, 77 when a check was
# skipped (tests/cli_lib.sh), 2 for bad arguments.
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
PROMPT="Once upon a time"
# The llama-cli golden command (shared/golden/README.md, tools/transcripts.json).
GOLDEN_ARGS=(-p "$PROMPT" -n 400 -c 128 --temp 0 -t 1)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-shift-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

# The value of "n_keep = N" on the "generate:" line of $TMP/err.
generate_n_keep() { sed -n 's/^generate:.*n_keep = \([0-9]*\).*/\1/p' "$TMP/err" | head -n 1; }

# Number of prompt tokens (BOS included), from `ctxshift tokenize --ids`.
"$BIN" tokenize -m "$MODEL" -p "$PROMPT" --ids >"$TMP/ids" 2>/dev/null
N_PROMPT=$(tr -cd ',' <"$TMP/ids" | wc -c)
N_PROMPT=$((N_PROMPT + 1))

# ------------------------------------------------ golden llama-cli transcript
GOLDEN_DIR="$SHARED/golden/tools"
if have_shared && [ -f "$GOLDEN_DIR/llama-cli_stdout.txt" ] && [ -f "$SHARED/models/stories260K-f32.gguf" ]; then
    GMODEL="$SHARED/models/stories260K-f32.gguf"
    # llama-cli echoes the detokenized prompt, which starts with a space
    # (SentencePiece); `run` echoes the prompt as given. Everything after
    # that first byte must be identical.
    tail -c +2 "$GOLDEN_DIR/llama-cli_stdout.txt" >"$TMP/golden.txt"
    if [ "$(head -c 1 "$GOLDEN_DIR/llama-cli_stdout.txt")" != " " ]; then
        fail "golden transcript" "llama-cli_stdout.txt does not start with the echoed space"
    fi
    for cache in "f16 (default)" "f32"; do
        extra=()
        [ "$cache" = "f32" ] && extra=(-ctk f32 -ctv f32)
        run run -m "$GMODEL" "${GOLDEN_ARGS[@]}" "${extra[@]}"
        if [ "$RC" -eq 0 ] && cmp -s "$TMP/out" "$TMP/golden.txt"; then
            ok "golden: llama-cli text byte for byte, $cache KV cache (5 context shifts)"
        else
            fail "golden ($cache cache)" "exit status $RC; first difference: $(cmp "$TMP/out" "$TMP/golden.txt" 2>&1 | head -n 1)"
        fi
    done
    run run -m "$GMODEL" "${GOLDEN_ARGS[@]}" --ignore-eos -t 2
    if [ "$RC" -eq 0 ] && cmp -s "$TMP/out" "$TMP/golden.txt"; then
        ok "golden: same text with --ignore-eos and 2 threads"
    else
        fail "golden --ignore-eos -t 2" "exit status $RC; $(cmp "$TMP/out" "$TMP/golden.txt" 2>&1 | head -n 1)"
    fi

    # The shifts themselves: llama.cpp's list ("context shift i: n_past=P,
    # n_keep=K, n_discard=D") against ours (-v prints "context shift:
    # n_keep = K, n_discard = D (n_past P -> P-D)").
    grep -o 'context shift [0-9]*: n_past=[0-9]*, n_keep=[0-9]*, n_discard=[0-9]*' \
        "$GOLDEN_DIR/transcripts.json" |
        sed 's/.*n_past=\([0-9]*\), n_keep=\([0-9]*\), n_discard=\([0-9]*\)/\1 \2 \3/' >"$TMP/want_shifts"
    run run -m "$GMODEL" "${GOLDEN_ARGS[@]}" -v --check-shift
    sed -n 's/^context shift: n_keep = \([0-9]*\), n_discard = \([0-9]*\) (n_past \([0-9]*\) .*/\3 \1 \2/p' \
        "$TMP/err" >"$TMP/got_shifts"
    n_want=$(wc -l <"$TMP/want_shifts")
    if [ "$RC" -eq 0 ] && [ "$n_want" -gt 0 ] && cmp -s "$TMP/want_shifts" "$TMP/got_shifts"; then
        ok "golden: the $n_want shifts have llama-cli's n_past, n_keep and n_discard"
    else
        fail "golden shifts" "exit status $RC; llama-cli: $(tr '\n' ';' <"$TMP/want_shifts") ours: $(tr '\n' ';' <"$TMP/got_shifts")"
    fi
    if [ "$RC" -eq 0 ] && grep -q "^shift-check ok ($n_want shifts" "$TMP/err"; then
        ok "golden: --check-shift holds at every shift"
    else
        fail "golden --check-shift" "exit status $RC, no 'shift-check ok ($n_want shifts' line"
    fi
else
    for what in "golden f16" "golden f32" "golden --ignore-eos" "golden shifts" "golden --check-shift"; do
        skip "$what" "no shared folder"
    done
fi

# ------------------------------------------------ context shift, bundled model
# Small context, many shifts: invariants checked at every shift.
SHIFT_ARGS=(-m "$MODEL" -p "$PROMPT" -n 300 -c 64 --temp 0 --ignore-eos -t 1)
run run "${SHIFT_ARGS[@]}" --check-shift
cp "$TMP/out" "$TMP/shift_text"
if [ "$RC" -eq 0 ] && grep -q "^shift-check ok" "$TMP/err" &&
    ! grep -q "^shift-check ok (0 shifts" "$TMP/err"; then
    ok "run -c 64 -n 300 shifts and keeps its invariants ($(grep -o '^shift-check ok ([0-9]* shifts' "$TMP/err" | grep -o '[0-9]* shifts'))"
else
    fail "run -c 64 -n 300 --check-shift" "exit status $RC"
fi
if [ "$(wc -c <"$TMP/shift_text")" -gt 600 ]; then
    ok "generation goes on past the context (300 tokens in 64 cells)"
else
    fail "generation past the context" "only $(wc -c <"$TMP/shift_text") bytes of text"
fi

# --keep: llama.cpp's meaning (N prompt tokens after BOS, BOS always kept,
# -1 or more than the prompt = the whole prompt).
for keep in -1 0 3 100 2147483647; do
    if [ "$keep" -lt 0 ] || [ "$keep" -ge "$N_PROMPT" ]; then
        want=$N_PROMPT
    else
        want=$((keep + 1))
        [ "$want" -gt "$N_PROMPT" ] && want=$N_PROMPT
    fi
    run run "${SHIFT_ARGS[@]}" --keep "$keep" --check-shift
    got=$(generate_n_keep)
    if [ "$RC" -eq 0 ] && [ "$got" = "$want" ] && grep -q "^shift-check ok" "$TMP/err" &&
        grep -q "^context shift: [1-9][0-9]* shifts, .* n_keep = $want\$" "$TMP/err"; then
        ok "--keep $keep: n_keep = $want of a $N_PROMPT-token prompt, kept cells untouched"
    else
        fail "--keep $keep" "exit status $RC, n_keep '$got', expected $want"
    fi
done
check_rc "--keep -2 is a usage error" 2 "error: --keep: '-2' is out of range" -- \
    run -m "$MODEL" -p "$PROMPT" --keep -2 -n 1
check_rc "--keep x is a usage error" 2 "error: --keep: 'x' is not an integer" -- \
    run -m "$MODEL" -p "$PROMPT" --keep x -n 1

# A kept prompt that fills the context: a clear error, before generating.
LONG_PROMPT=$(for i in $(seq 7); do printf '%s ' "$PROMPT"; done)
run run -m "$MODEL" -p "$LONG_PROMPT" --keep -1 -c 32 -n 50 -t 1
if [ "$RC" -eq 1 ] && grep -q "^error: --keep: n_keep = .* leaves nothing to discard" "$TMP/err" &&
    [ ! -s "$TMP/out" ]; then
    ok "--keep -1 with a prompt filling the context exits 1 with a message"
else
    fail "--keep -1 with a context-filling prompt" "exit status $RC"
fi
# ... but it is fine when no shift is needed, or shifting is off.
check_rc "the same with -n 2 (no shift needed) exits 0" 0 "" -- \
    run -m "$MODEL" -p "$LONG_PROMPT" --keep -1 -c 32 -n 2 -t 1
check_rc "the same with --no-context-shift exits 0" 0 "(--no-context-shift)" -- \
    run -m "$MODEL" -p "$LONG_PROMPT" --keep -1 -c 32 -n 50 -t 1 --no-context-shift --ignore-eos
# The largest n_keep that still discards one token per shift.
run run -m "$MODEL" -p "$LONG_PROMPT" --keep -1 -c 33 -n 40 --temp 0 --ignore-eos -t 1 --check-shift -v
if [ "$RC" -eq 0 ] && grep -q "^context shift: n_keep = 30, n_discard = 1 " "$TMP/err" &&
    grep -q "^shift-check ok" "$TMP/err"; then
    ok "n_keep = n_ctx - 3 shifts one token at a time"
else
    fail "n_keep = n_ctx - 3" "exit status $RC"
fi
check_rc "a prompt longer than the context exits 1" 1 "error: the prompt is" -- \
    run -m "$MODEL" -p "$(for i in $(seq 20); do printf '%s ' "$PROMPT"; done)" -c 32 -n 1

# --no-context-shift and -n -2 stop at the full context with exit 0; the
# text is the beginning of the shifting run's text.
for mode in "--no-context-shift" "-n -2"; do
    if [ "$mode" = "-n -2" ]; then
        run run -m "$MODEL" -p "$PROMPT" -n -2 -c 64 --temp 0 --ignore-eos -t 1
        needle="stopping (-n -2)"
    else
        run run "${SHIFT_ARGS[@]}" --no-context-shift
        needle="(--no-context-shift)"
    fi
    head -c -2 "$TMP/out" >"$TMP/stopped"
    n_stopped=$(wc -c <"$TMP/stopped")
    if [ "$RC" -eq 0 ] && grep -q "^context full (63 of 64 cells); stopping" "$TMP/err" &&
        grep -qF -- "$needle" "$TMP/err" && [ "$(tail -c 2 "$TMP/out" | od -An -c | tr -d ' ')" = '\n\n' ] &&
        [ "$n_stopped" -gt 100 ] && cmp -s "$TMP/stopped" <(head -c "$n_stopped" "$TMP/shift_text"); then
        ok "$mode stops at the full context with a message, exit 0, text = the shifting run's start"
    else
        fail "$mode" "exit status $RC or stderr/stdout not as expected"
    fi
done

# --kv-map: maps on stderr only (stdout unchanged), one per shift and at the end.
run run "${SHIFT_ARGS[@]}" --kv-map --kv-map-svg "$TMP/map.svg" -v
n_shift=$(grep -c "^context shift: n_keep" "$TMP/err")
n_map=$(grep -c "^\[kv-map\] context shift [0-9]*:" "$TMP/err")
if [ "$RC" -eq 0 ] && cmp -s "$TMP/out" "$TMP/shift_text" && [ "$n_shift" -gt 0 ] &&
    [ "$n_map" -eq "$n_shift" ] && grep -q "^\[kv-map\] end:" "$TMP/err" &&
    grep -qE "^ +0 \|A" "$TMP/err"; then
    ok "--kv-map prints a map after each of the $n_shift shifts and at the end; stdout unchanged"
else
    fail "--kv-map" "exit status $RC, $n_shift shifts, $n_map shift maps"
fi
if [ -s "$TMP/map.svg" ] && grep -q "<svg" "$TMP/map.svg" && grep -q "</svg>" "$TMP/map.svg"; then
    if command -v python3 >/dev/null 2>&1; then
        if python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$TMP/map.svg" 2>/dev/null; then
            ok "--kv-map-svg writes well-formed SVG"
        else
            fail "--kv-map-svg" "the SVG is not well-formed XML"
        fi
    else
        ok "--kv-map-svg writes an SVG (python3 missing: not parsed)"
    fi
else
    fail "--kv-map-svg" "no SVG written"
fi
check_rc "--kv-map-svg to an unwritable path exits 1" 1 "error:" -- \
    run "${SHIFT_ARGS[@]}" --kv-map-svg "$TMP/no-such-dir/map.svg"

# --prompt-cache together with shifts: the second run reuses the prompt and
# gives the same text.
run run "${SHIFT_ARGS[@]}" --prompt-cache "$TMP/prompt.bin"
cp "$TMP/out" "$TMP/pc1"
run run "${SHIFT_ARGS[@]}" --prompt-cache "$TMP/prompt.bin"
if [ "$RC" -eq 0 ] && cmp -s "$TMP/out" "$TMP/pc1" && cmp -s "$TMP/out" "$TMP/shift_text" &&
    grep -q "prompt cache: reused $((N_PROMPT - 1)) of $N_PROMPT" "$TMP/err"; then
    ok "--prompt-cache with context shifts: same text, prompt reused"
else
    fail "--prompt-cache with shifts" "exit status $RC"
fi

# ------------------------------------------------ self-extend
check_rc "--grp-attn-w not a multiple of --grp-attn-n exits 2" 2 \
    "error: --grp-attn-w: 100 is not a multiple of --grp-attn-n 3" -- \
    run -m "$MODEL" -p "$PROMPT" --grp-attn-n 3 --grp-attn-w 100 -n 1
check_rc "--grp-attn-n 0 exits 2" 2 "error: --grp-attn-n: '0' is out of range" -- \
    run -m "$MODEL" -p "$PROMPT" --grp-attn-n 0 -n 1
check_rc "--grp-attn-w 0 exits 2" 2 "error: --grp-attn-w: '0' is out of range" -- \
    run -m "$MODEL" -p "$PROMPT" --grp-attn-n 2 --grp-attn-w 0 -n 1

# --grp-attn-n 1 is off: the golden-style run is unchanged.
run run "${SHIFT_ARGS[@]}" --grp-attn-n 1 --grp-attn-w 7
if [ "$RC" -eq 0 ] && cmp -s "$TMP/out" "$TMP/shift_text"; then
    ok "--grp-attn-n 1 is off (same text as without it)"
else
    fail "--grp-attn-n 1" "exit status $RC or different text"
fi

# Past the model's training context (2048) with positions compressed 4x;
# every compression checked. Stops cleanly when the cells run out.
N_CTX_TRAIN=$("$BIN" run -m "$MODEL" -n 0 2>&1 >/dev/null | sed -n 's/.*n_ctx_train = \([0-9]*\).*/\1/p')
N_SE=$((N_CTX_TRAIN + 300))
run run -m "$MODEL" -p "$PROMPT" -c $((N_SE + 200)) -n "$N_SE" --grp-attn-n 4 --grp-attn-w 256 \
    --temp 0 --ignore-eos -t 1 --check-shift --kv-map
pos_last=$(sed -n 's/^self-extend: .* cached at positions 0\.\.\([0-9]*\)$/\1/p' "$TMP/err")
n_cached=$(sed -n 's/^self-extend: .* \([0-9]*\) tokens cached .*/\1/p' "$TMP/err")
if [ "$RC" -eq 0 ] && grep -q "^shift-check ok (0 shifts, [1-9][0-9]* self-extend" "$TMP/err" &&
    [ -n "$pos_last" ] && [ -n "$n_cached" ] && [ "$n_cached" -gt "$N_CTX_TRAIN" ] &&
    [ "$pos_last" -lt "$N_CTX_TRAIN" ] && grep -q "^\[kv-map\] self-extend 1:" "$TMP/err"; then
    ok "self-extend: $n_cached tokens (> n_ctx_train $N_CTX_TRAIN) at positions 0..$pos_last, invariants hold"
else
    fail "self-extend past n_ctx_train" "exit status $RC, cached '$n_cached', last position '$pos_last'"
fi
run run -m "$MODEL" -p "$PROMPT" -c 512 --grp-attn-n 2 --grp-attn-w 64 --temp 0 --ignore-eos -t 1 --check-shift
if [ "$RC" -eq 0 ] && grep -q "^context full (511 of 512 cells); self-extend keeps every token" "$TMP/err" &&
    grep -q "^shift-check ok" "$TMP/err"; then
    ok "self-extend stops with a message when the cells run out (exit 0)"
else
    fail "self-extend at a full cache" "exit status $RC"
fi
# The prompt too: compressed between batches (-b 64), as llama-cli does.
for i in $(seq 24); do printf 'Once upon a time, there was a little girl named Lily. She loved to play outside. '; done >"$TMP/long_prompt.txt"
run run -m "$MODEL" -f "$TMP/long_prompt.txt" -b 64 -c 1024 -n 40 \
    --grp-attn-n 2 --grp-attn-w 64 --temp 0 -t 1 --check-shift -v
n_prompt=$(sed -n 's/^generate:.*n_prompt = \([0-9]*\).*/\1/p' "$TMP/err")
first=$(grep -m 1 "^self-extend: \[" "$TMP/err")
if [ "$RC" -eq 0 ] && [ -n "$n_prompt" ] && [ "$n_prompt" -gt 256 ] &&
    [ "$first" = "self-extend: [0, 64) + 0; [0, 64) / 2; [64, 64) + -32; n_past 64 -> 32, ga_i 0 -> 32" ] &&
    grep -q "^shift-check ok" "$TMP/err"; then
    ok "self-extend compresses a $n_prompt-token prompt between its 64-token batches"
else
    fail "self-extend during the prompt" "exit status $RC, first step '$first'"
fi

echo
echo "$n_pass passed, $n_fail failed ($n_skip skipped)"
test_exit
