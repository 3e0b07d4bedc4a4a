#!/usr/bin/env bash
# passkey_test.sh: end-to-end checks of `ctxshift passkey` and its --kv-map,
# --kv-map-svg and --sweep outputs.
#
# usage: tests/passkey_test.sh <ctxshift binary> <source dir> [shared dir]
#
# Each check prints "ok", "FAIL" (with the reason) or "skip"; the last line is
# "N passed, M failed" (plus the skipped count). The golden comparisons need
# the shared folder (../shared/golden) and are skipped when it is missing.
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
THREADS=2

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-passkey-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

# shared/ counts as present only with the transcripts this script reads
have_shared() { [ -n "$SHARED" ] && [ -f "$SHARED/golden/tools/transcripts.json" ]; }

# --------------------------------------------------------------- golden runs
# llama-passkey --junk 250 --pos 90 --keep 32 (b4748: n_batch 2048, key 39384
# from its unseeded rand()), F32 cache as the golden replicas. The expected
# lines, counts and answer are read from shared/golden/tools/transcripts.json.
golden() {
    local name=$1 index=$2
    shift 2
    if ! have_shared; then
        skip "$name" "no shared folder"
        return
    fi
    run passkey -m "$SHARED/models/stories260K-f32.gguf" --junk 250 --pos 90 --keep 32 -b 2048 \
        --key 39384 -ctk f32 -ctv f32 -t "$THREADS" "$@"
    if [ "$RC" -ne 0 ]; then
        fail "$name" "exit status $RC"
        return
    fi
    local msg
    msg=$(python3 - "$SHARED/golden/tools/transcripts.json" "$index" "$TMP/out" <<'EOF'
import json, re, sys
ref = json.load(open(sys.argv[1]))["llama_passkey"][int(sys.argv[2])]
out = open(sys.argv[3], encoding="utf-8").read().split("\n")
pat = re.compile(r"^(main: n_len|prefix tokens|prompt tokens|main: processed|main: shifting|main: passkey =)")
got = [l for l in out if pat.match(l)]
if got != ref["log_lines"]:
    for i, (a, b) in enumerate(zip(got + [""] * 99, ref["log_lines"])):
        if a != b:
            print("log line %d: got %r, want %r" % (i, a, b)); sys.exit(0)
    print("got %d log lines, want %d" % (len(got), len(ref["log_lines"]))); sys.exit(0)
if "prompt tokens: %d" % ref["prompt_tokens"] not in got or "prefix tokens: %d" % ref["prefix_tokens"] not in got:
    print("token counts differ"); sys.exit(0)
# the answer is the line after the suffix line
try:
    i = out.index(ref["suffix_printed"])
except ValueError:
    print("no suffix line %r" % ref["suffix_printed"]); sys.exit(0)
if out[i + 1] != ref["answer"]:
    print("answer %r, want %r" % (out[i + 1], ref["answer"])); sys.exit(0)
if out[i + 2] != "passkey not found":
    print("verdict line %r" % out[i + 2]); sys.exit(0)
EOF
)
    if [ -n "$msg" ]; then
        fail "$name" "$msg"
    else
        ok "$name"
    fi
}

golden "golden_grp1_answer_and_lines" 0
golden "golden_grp4_answer_and_lines" 1 --grp-attn-n 4

# ----------------------------------------------------------- prompt builder
# The text of docs/KV_CACHE_SPEC.md §5.2, written out here independently of the tool.
P="There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
J=" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
S=" What is the pass key? The pass key is"
key_sentence() { printf ' The pass key is %s. Remember it. %s is the pass key.' "$1" "$1"; }

check_prompt() {
    local name=$1 junk=$2 pos=$3 key=$4
    local want="$P" i
    for ((i = 0; i < junk; i++)); do
        if [ "$i" -eq "$pos" ]; then want="$want$(key_sentence "$key")"; fi
        want="$want$J"
    done
    want="$want$S"
    printf '%s' "$want" >"$TMP/want"
    run passkey --junk "$junk" --pos "$pos" --key "$key" --print-prompt
    if [ "$RC" -ne 0 ]; then
        fail "$name" "exit status $RC"
    elif ! cmp -s "$TMP/out" "$TMP/want"; then
        fail "$name" "prompt differs from spec §5.2 ($(wc -c <"$TMP/out") vs $(wc -c <"$TMP/want") bytes)"
    else
        ok "$name"
    fi
}
check_prompt "prompt_junk2_pos1" 2 1 123
check_prompt "prompt_junk2_pos0" 2 0 50000
check_prompt "prompt_junk5_pos4" 5 4 7

# Drawn key and position: reproducible from --seed, key in 1..50000, position in [0, junk).
run passkey --junk 40 --seed 99 --print-prompt
cp "$TMP/out" "$TMP/seed_a"
run passkey --junk 40 --seed 99 --print-prompt
if [ "$RC" -ne 0 ] || ! cmp -s "$TMP/out" "$TMP/seed_a"; then
    fail "prompt_seeded_draw_reproducible" "two runs with --seed 99 differ (rc $RC)"
else
    key=$(grep -o 'The pass key is [0-9]*\.' "$TMP/out" | head -1 | tr -dc '0-9')
    before=$(python3 -c 'import sys; s=open(sys.argv[1]).read(); print(s[:s.index(" The pass key is")].count(" The grass is green."))' "$TMP/out")
    if [ -z "$key" ] || [ "$key" -lt 1 ] || [ "$key" -gt 50000 ] || [ "$before" -ge 40 ]; then
        fail "prompt_seeded_draw_reproducible" "key '$key', position $before"
    else
        ok "prompt_seeded_draw_reproducible"
    fi
fi

# --------------------------------------- settings where llama-passkey fails
# check_exit NAME WANT_RC STDERR_SUBSTRING ARGS...: no crash (status < 128),
# the wanted status, a message naming the problem.
check_exit() {
    local name=$1 want=$2 needle=$3
    shift 3
    run passkey -m "$MODEL" -t "$THREADS" "$@"
    if [ "$RC" -ge 128 ]; then
        fail "$name" "crashed (status $RC)"
    elif [ "$RC" -ne "$want" ]; then
        fail "$name" "exit status $RC, want $want"
    elif ! grep -q "^error: .*$needle" "$TMP/err"; then
        fail "$name" "stderr lacks an error naming '$needle'"
    else
        ok "$name"
    fi
}
check_exit "bad_junk_zero" 2 "junk" --junk 0
check_exit "bad_pos_outside_junk" 2 "pos" --junk 5 --pos 5
check_exit "bad_batch_not_multiple_of_grp" 2 "multiple" -b 6 --grp-attn-n 4
check_exit "bad_keep_larger_than_context" 2 "keep" --keep 600 -c 512
check_exit "bad_batch_larger_than_context" 2 "larger than the context" -b 1024 -c 512
check_exit "bad_cache_type" 2 "cache type" -ctk q5_k

# check_works NAME ARGS...: settings that break llama.cpp's loop run to the end here.
check_works() {
    local name=$1
    shift
    run passkey -m "$MODEL" -t "$THREADS" --key 4242 "$@"
    if [ "$RC" -ne 0 ]; then
        fail "$name" "exit status $RC"
    elif ! grep -qx 'passkey \(not \)\?found' "$TMP/out"; then
        fail "$name" "no verdict line"
    elif ! grep -q '^main: passkey = 4242, inserted at position' "$TMP/out"; then
        fail "$name" "no passkey line"
    else
        ok "$name"
    fi
}
check_works "works_keep_not_multiple_of_batch" --junk 20 --pos 3 -c 256 -b 100 --keep 7
check_works "works_prompt_shorter_than_batch" --junk 3 --pos 1 -b 512
check_works "works_keep_zero" --junk 20 --pos 3 -c 128 -b 64 --keep 0
check_works "works_keep_almost_context" --junk 20 --pos 3 -c 128 -b 128 --keep 127
check_works "works_self_extend_with_shifts" --junk 20 --pos 3 -c 128 -b 64 --keep 60 --grp-attn-n 4
check_works "works_keep_prefix" --junk 20 --pos 3 -c 256 -b 64 --keep -1

# A shift moves the remaining prompt down: n_past stays below the context.
run passkey -m "$MODEL" -t "$THREADS" --key 11 --junk 30 --pos 2 -c 256 -b 64 --keep 16
n_shift=$(grep -c '^main: shifting KV cache with 64$' "$TMP/out")
n_proc=$(grep -c '^main: processed: ' "$TMP/out")
last=$(grep '^main: processed: ' "$TMP/out" | tail -1)
n_tok=$(sed -n 's/^prompt tokens: //p' "$TMP/out")
if [ "$RC" -ne 0 ] || [ "$n_shift" -lt 1 ] || [ "$n_proc" -ne $((n_shift + 4)) ] ||
    ! echo "$last" | grep -q ", *$n_tok)\$"; then
    fail "shift_phase_lines" "rc $RC, $n_shift shifts, $n_proc batches, last '$last', $n_tok tokens"
else
    ok "shift_phase_lines"
fi

# ------------------------------------------------------------------ kv-map
run passkey -m "$MODEL" -t "$THREADS" --key 11 --junk 30 --pos 2 -c 256 -b 64 --keep 16 \
    --grp-attn-n 2 --kv-map --kv-map-svg "$TMP/map.svg"
if [ "$RC" -ne 0 ]; then
    fail "kv_map_text" "exit status $RC"
elif [ "$(grep -c '^\[kv-map\] legend:' "$TMP/out")" -ne 1 ] ||
    ! grep -q '^\[kv-map\] self-extend: batch 0 grouped by 2: used [0-9]*/[0-9]*, holes [0-9]*, frag [0-9.]*, pending shift [0-9]*' "$TMP/out" ||
    ! grep -q '^\[kv-map\] context shift: discard 64: used ' "$TMP/out" ||
    ! grep -q '^ *[0-9]* |A*a' "$TMP/out"; then
    fail "kv_map_text" "missing legend, event lines or map rows"
else
    ok "kv_map_text"
fi
if [ "$RC" -eq 0 ] && python3 - "$TMP/map.svg" "$TMP/out" <<'EOF'; then
import re, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
assert root.tag == ns + "svg", root.tag
n_events = sum(1 for l in open(sys.argv[2]) if re.match(r"^\[kv-map\] (?!legend)", l))
titles = [t.text for t in root.iter(ns + "title")]
assert len(titles) == n_events, (len(titles), n_events)
assert len(list(root.iter(ns + "rect"))) > n_events
EOF
    ok "kv_map_svg_valid_one_row_per_event"
else
    fail "kv_map_svg_valid_one_row_per_event" "SVG missing or not as expected"
fi

# ------------------------------------------------------------------- sweep
run passkey -m "$MODEL" -t "$THREADS" --sweep --sweep-junk 3,12 --sweep-depths 3 -c 256 -b 64 \
    --seed 5 --sweep-csv "$TMP/sweep.csv" --sweep-svg "$TMP/sweep.svg"
if [ "$RC" -ne 0 ]; then
    fail "sweep_csv_rows" "exit status $RC"
elif python3 - "$TMP/sweep.csv" <<'EOF'; then
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
assert rows[0] == ["junk", "n_tokens", "pos", "depth", "key", "found", "answer"], rows[0]
body = rows[1:]
assert len(body) == 6, len(body)
# junk 3: positions 0, 1, 2; junk 12: 0, 6 (5.5 rounded), 11; depths 0, 50, 100
want = [(3, 0, 0.0), (3, 1, 50.0), (3, 2, 100.0), (12, 0, 0.0), (12, 6, 50.0), (12, 11, 100.0)]
for r, (junk, pos, depth) in zip(body, want):
    assert int(r[0]) == junk and int(r[2]) == pos and float(r[3]) == depth, r
    assert int(r[1]) > 0 and 1 <= int(r[4]) <= 50000 and r[5] in ("0", "1"), r
    assert (r[5] == "1") == (r[4] in r[6]), r
assert len({r[4] for r in body}) > 1, "one key per cell expected"
EOF
    ok "sweep_csv_rows"
else
    fail "sweep_csv_rows" "CSV not as expected"
fi
if [ "$RC" -eq 0 ] && python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
cells = [r for r in root.iter(ns + "rect") if r.get("fill") in ("#2e9e44", "#d0393e")]
assert len(cells) == 6 + 2, len(cells)  # six cells and two legend swatches
text = " ".join(t.text or "" for t in root.iter(ns + "text"))
assert "key depth" in text and "prompt length" in text
' "$TMP/sweep.svg"; then
    ok "sweep_svg_valid"
else
    fail "sweep_svg_valid" "SVG missing or not as expected"
fi
run passkey -m "$MODEL" --sweep --kv-map
if [ "$RC" -eq 2 ] && grep -q '^error: .*sweep' "$TMP/err"; then
    ok "sweep_rejects_kv_map"
else
    fail "sweep_rejects_kv_map" "exit status $RC"
fi

echo "$n_pass passed, $n_fail failed ($n_skip skipped)"
test_exit
