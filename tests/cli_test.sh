#!/usr/bin/env bash
# cli_test.sh: end-to-end checks of the ctxshift command.
#
# usage: tests/cli_test.sh <ctxshift binary> <source dir> <shared dir>
#
# Each check prints "ok", "FAIL" (with the reason) or "skip"; the last line is
# "N passed, M failed" (plus the skipped count). Checks that need the shared
# folder (golden data, other model types) are skipped when it is missing.
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
# llama.cpp c392e509, greedy, 32 tokens (shared/models/README.md).
EXPECT_32="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw"
# llama-perplexity -c 128 -b 128 on shared/golden/tools/perplexity_story.txt (shared/golden/README.md).
EXPECT_PPL_F32=2.2991
PPL_REL_TOL=0.001

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-cli-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

# ---------------------------------------------------------------- usage
run --help
if [ "$RC" -eq 0 ] && grep -q "usage: ctxshift" "$TMP/out"; then
    ok "--help exits 0 and prints the usage"
else
    fail "--help" "exit status $RC"
fi

for cmd in run bench perplexity info tokenize gen-model; do
    run "$cmd" --help
    if [ "$RC" -eq 0 ] && grep -q "usage: ctxshift $cmd" "$TMP/out"; then
        ok "$cmd --help exits 0"
    else
        fail "$cmd --help" "exit status $RC"
    fi
done

check_rc "no command exits 2" 2 "" --
check_rc "unknown command exits 2" 2 "error: unknown command 'frobnicate'" -- frobnicate
check_rc "unknown flag exits 2" 2 "error: run: unknown flag '--bogus'" -- run --bogus
check_rc "bad integer names flag and value" 2 "error: -c: '12x' is not an integer" -- run -c 12x
check_rc "bad float names flag and value" 2 "error: --temp: 'hot' is not a number" -- run --temp hot
check_rc "out-of-range value exits 2" 2 "error: --top-p: '1.5' is out of range" -- run --top-p 1.5
check_rc "missing flag value exits 2" 2 "error: -n: missing value" -- run -n
check_rc "empty integer exits 2" 2 "error: -t: '' is not an integer" -- run -t ""
check_rc "bad cache type exits 2" 2 "error: -ctk: 'q9' is not a KV cache type" -- run -ctk q9
check_rc "bad bench list exits 2" 2 "error: -t: '1,,2'" -- bench -t 1,,2
check_rc "bad bench output exits 2" 2 "error: -o: 'xml'" -- bench -o xml
check_rc "bench --mem-pair over 256 threads exits 2" 2 "error: --mem-pair: 300 threads: the probe runs at most 256" -- bench --mem-pair -t 1,300
check_rc "perplexity without -f exits 2" 2 "error:" -- perplexity
check_rc "tokenize without text exits 2" 2 "error:" -- tokenize
check_rc "info without file exits 2" 2 "error:" -- info
check_rc "gen-model without -o exits 2" 2 "error:" -- gen-model
check_rc "gen-model bad preset exits 2" 2 "error: --preset: 'huge'" -- gen-model -o "$TMP/x.gguf" --preset huge
check_rc "gen-model bad type exits 2" 2 "error: --type: 'q9_k'" -- gen-model -o "$TMP/x.gguf" --type q9_k

# ---------------------------------------------------------------- runtime failures
check_rc "missing model exits 1 naming the path" 1 "$TMP/no-such-model.gguf" -- \
    run -m "$TMP/no-such-model.gguf" -p hi -n 1
check_rc "missing prompt file exits 1 naming the path" 1 "$TMP/no-such-prompt.txt" -- \
    run -f "$TMP/no-such-prompt.txt" -n 1
check_rc "info on a missing file exits 1" 1 "$TMP/nothing.gguf" -- info "$TMP/nothing.gguf"
printf 'not a gguf file at all' >"$TMP/junk.gguf"
check_rc "info on a non-GGUF file exits 1" 1 "error:" -- info "$TMP/junk.gguf"
check_rc "run on a non-GGUF file exits 1" 1 "error:" -- run -m "$TMP/junk.gguf" -p hi -n 1

# ---------------------------------------------------------------- run
run run -m "$MODEL" -p "$PROMPT" -n 16 --temp 0 -t 1
if [ "$RC" -ne 0 ]; then
    fail "run -n 16 --temp 0" "exit status $RC"
elif [ "$(head -c ${#PROMPT} "$TMP/out")" != "$PROMPT" ]; then
    fail "run -n 16 --temp 0" "stdout does not start with the prompt: '$(head -c 80 "$TMP/out")'"
elif [ "$(wc -c <"$TMP/out")" -le $((${#PROMPT} + 2)) ]; then
    fail "run -n 16 --temp 0" "no generated text"
else
    ok "run -n 16 --temp 0 prints the prompt then text"
fi
if grep -q "prompt eval time" "$TMP/err" && grep -q "eval time" "$TMP/err" && ! grep -q "eval time" "$TMP/out"; then
    ok "run timings go to stderr, not stdout"
else
    fail "run timings" "no 'prompt eval time' line on stderr (or timings on stdout)"
fi

# check_story NAME MODEL_FILE
check_story() {
    local name=$1 model=$2 got
    run run -m "$model" -c 2048 --temp 0 -n 32 -p "$PROMPT" -t 1
    got=$(cat "$TMP/out")
    if [ "$RC" -ne 0 ]; then
        fail "$name" "exit status $RC"
    elif [ "$got" != "$EXPECT_32" ]; then
        fail "$name" "stdout differs from llama.cpp's greedy text:
       got:      '$got'
       expected: '$EXPECT_32'"
    else
        ok "$name"
    fi
}
check_story "run greedy 32 tokens (bundled f32) matches llama.cpp" "$MODEL"
for type in f16 q8_0; do
    if have_shared && [ -f "$SHARED/models/stories260K-$type.gguf" ]; then
        check_story "run greedy 32 tokens ($type) matches llama.cpp" "$SHARED/models/stories260K-$type.gguf"
    else
        skip "run greedy 32 tokens ($type)" "no shared models"
    fi
done

printf '%s' "$PROMPT" >"$TMP/prompt.txt"
run run -m "$MODEL" -f "$TMP/prompt.txt" -c 2048 --temp 0 -n 32 -t 1
if [ "$RC" -eq 0 ] && [ "$(cat "$TMP/out")" = "$EXPECT_32" ]; then
    ok "run -f FILE equals run -p TEXT"
else
    fail "run -f FILE" "exit status $RC, stdout '$(head -c 200 "$TMP/out")'"
fi

run run -m "$MODEL" -p "$PROMPT" -n 0 -t 1
if [ "$RC" -eq 0 ] && [ "$(cat "$TMP/out")" = "$PROMPT" ]; then
    ok "run -n 0 prints only the prompt"
else
    fail "run -n 0" "exit status $RC, stdout '$(head -c 200 "$TMP/out")'"
fi

run run -m "$MODEL" -p "$PROMPT" -n 24 -s 1234 --temp 0.8 -t 1
first=$(cat "$TMP/out")
run run -m "$MODEL" -p "$PROMPT" -n 24 -s 1234 --temp 0.8 -t 2
if [ "$RC" -eq 0 ] && [ "$first" = "$(cat "$TMP/out")" ] && [ -n "$first" ]; then
    ok "run with a fixed seed is reproducible (1 and 2 threads)"
else
    fail "run -s 1234" "two runs with the same seed differ"
fi

run run -m "$MODEL" -p "$PROMPT" -c 32 -n 64 --temp 0 --ignore-eos -t 1
if [ "$RC" -eq 0 ] && [ "$(head -c ${#PROMPT} "$TMP/out")" = "$PROMPT" ] &&
    grep -qiE "context (full|shift)" "$TMP/err"; then
    ok "run -c 32 --ignore-eos stops (or shifts) at a full context"
else
    fail "run -c 32 --ignore-eos" "exit status $RC or no context message on stderr"
fi

LONG_PROMPT=$(for i in $(seq 20); do printf '%s ' "$PROMPT"; done)
check_rc "run with a prompt longer than the context exits 1" 1 "error:" -- \
    run -m "$MODEL" -p "$LONG_PROMPT" -c 32 -n 1

# ---------------------------------------------------------------- tokenize
run tokenize -m "$MODEL" -p "$PROMPT" --ids
if [ "$RC" -eq 0 ] && [ "$(cat "$TMP/out")" = "[1, 403, 407, 261, 378]" ]; then
    ok "tokenize --ids matches llama-tokenize"
else
    fail "tokenize --ids" "exit status $RC, stdout '$(cat "$TMP/out")'"
fi
run tokenize -m "$MODEL" -p "$PROMPT" --no-bos --ids
if [ "$RC" -eq 0 ] && [ "$(cat "$TMP/out")" = "[403, 407, 261, 378]" ]; then
    ok "tokenize --no-bos --ids"
else
    fail "tokenize --no-bos --ids" "exit status $RC, stdout '$(cat "$TMP/out")'"
fi
run tokenize -m "$MODEL" -p "$PROMPT"
if [ "$RC" -eq 0 ] && [ "$(wc -l <"$TMP/out")" -eq 5 ] && grep -qF "   403 -> ' Once'" "$TMP/out"; then
    ok "tokenize prints one 'id -> piece' line per token"
else
    fail "tokenize" "exit status $RC, stdout '$(head -c 200 "$TMP/out")'"
fi
VOCAB="$SHARED/models/ggml-vocab-llama-spm.gguf"
if have_shared && [ -f "$VOCAB" ]; then
    run tokenize -m "$VOCAB" -p "Hello world" --no-bos --ids
    if [ "$RC" -eq 0 ] && [ "$(cat "$TMP/out")" = "[15043, 3186]" ]; then
        ok "tokenize on a vocab-only file (llama-spm)"
    else
        fail "tokenize on a vocab-only file" "exit status $RC, stdout '$(cat "$TMP/out")'"
    fi
else
    skip "tokenize on a vocab-only file" "no shared models"
fi

# ---------------------------------------------------------------- info
run info "$MODEL"
if [ "$RC" -eq 0 ] && grep -qE "(^|[^0-9])48 tensors" "$TMP/out" && grep -q "token_embd.weight" "$TMP/out"; then
    ok "info prints the tensor count and tensors"
else
    fail "info" "exit status $RC, stdout '$(head -n 2 "$TMP/out")'"
fi
if [ "$RC" -eq 0 ] && grep -q "^tensor types: f32 48$" "$TMP/out" &&
    grep -q "^model: family llama, 5 layers, .*head size k 8 v 8" "$TMP/out" &&
    grep -q "^  rope: norm, n_rot 8, freq_base 10000, scaling none$" "$TMP/out"; then
    ok "info prints the per-type counts, the family, head sizes and RoPE"
else
    fail "info model summary" "exit status $RC, stdout tail '$(tail -n 4 "$TMP/out")'"
fi
QWEN="$TMP/qwen2.gguf"
"$BIN" gen-model -o "$QWEN" --preset qwen2.5-0.5b --vocab "$MODEL" --n-layer 1 --n-embd 64 \
    --n-head 4 --n-head-kv 2 --n-ff 128 >/dev/null 2>&1
run info "$QWEN"
if [ "$RC" -eq 0 ] && grep -q "^model: family qwen2, 1 layers" "$TMP/out" &&
    grep -q "^  rope: neox, n_rot 16, freq_base 1e+06, scaling none$" "$TMP/out" &&
    grep -q "^  attention biases: q, k, v; output: tied" "$TMP/out" &&
    grep -q "^tensor types: f32 14$" "$TMP/out"; then
    ok "info on a qwen2 file: neox RoPE, biases, tied output"
else
    fail "info qwen2" "exit status $RC, stdout tail '$(tail -n 4 "$TMP/out")'"
fi
check_rc "info --max-array bad value exits 2" 2 "error: --max-array: 'x'" -- info "$MODEL" --max-array x

# ---------------------------------------------------------------- perplexity
STORY="$SHARED/golden/tools/perplexity_story.txt"
if have_shared && [ -f "$STORY" ] && [ -f "$SHARED/models/stories260K-f32.gguf" ]; then
    run perplexity -m "$SHARED/models/stories260K-f32.gguf" -f "$STORY" -c 128 -b 128 -t 1
    ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$TMP/out" | head -n 1)
    if [ "$RC" -ne 0 ] || [ -z "$ppl" ]; then
        fail "perplexity f32" "exit status $RC, no 'Final estimate' on stdout"
    elif awk -v got="$ppl" -v want="$EXPECT_PPL_F32" -v tol="$PPL_REL_TOL" \
        'BEGIN { d = (got - want) / want; if (d < 0) d = -d; exit !(d <= tol) }'; then
        ok "perplexity f32 = $ppl (llama.cpp: $EXPECT_PPL_F32)"
    else
        fail "perplexity f32" "PPL $ppl is not within $PPL_REL_TOL of $EXPECT_PPL_F32"
    fi
    if grep -q '^\[1\][0-9.]*,\[2\][0-9.]*,\[3\][0-9.]*,\[4\][0-9.]*,' "$TMP/out"; then
        ok "perplexity prints 4 running chunk values"
    else
        fail "perplexity chunks" "no '[1]..,[4]..' line on stdout"
    fi
    # Two chunks per decode as two sequences must give the same estimate.
    run perplexity -m "$SHARED/models/stories260K-f32.gguf" -f "$STORY" -c 128 -b 256 -t 1
    ppl2=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$TMP/out" | head -n 1)
    if [ "$RC" -eq 0 ] && [ -n "$ppl2" ] && [ -n "$ppl" ] && awk -v a="$ppl" -v b="$ppl2" \
        'BEGIN { d = (a - b) / a; if (d < 0) d = -d; exit !(d <= 0.0001) }'; then
        ok "perplexity -b 256 (2 sequences per decode) = $ppl2"
    else
        fail "perplexity -b 256" "exit status $RC, PPL '$ppl2' vs '$ppl'"
    fi
else
    skip "perplexity f32" "no shared golden data"
    skip "perplexity chunks" "no shared golden data"
    skip "perplexity -b 256" "no shared golden data"
fi
printf 'Once upon a time.' >"$TMP/short.txt"
check_rc "perplexity on a too short text exits 1" 1 "error:" -- \
    perplexity -m "$MODEL" -f "$TMP/short.txt" -c 128

# ---------------------------------------------------------------- KL divergence
# Base file of the bundled model on README.md (4 chunks of 64: 124 scored
# positions, enough for the statistics), then the same model against it.
KTEXT="$SRC/README.md"
KBASE="$TMP/base.kld"
run perplexity -m "$MODEL" -f "$KTEXT" -c 64 -b 64 --chunks 4 -t 1 --kl-divergence-base "$KBASE"
kppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$TMP/out" | head -n 1)
# llama.cpp's layout: magic, n_ctx, n_vocab, n_chunk, 4 * 64 tokens, then 4 * 31 rows of
# (2 floats + 512 uint16).
ksize=$((8 + 12 + 4 * 4 * 64 + 4 * 31 * 2 * (4 + 512)))
if [ "$RC" -eq 0 ] && [ -n "$kppl" ] && [ "$(wc -c <"$KBASE")" -eq "$ksize" ]; then
    ok "perplexity --kl-divergence-base writes llama.cpp's layout ($ksize bytes)"
else
    fail "kl-divergence-base" "exit status $RC, PPL '$kppl', $(wc -c <"$KBASE" 2>/dev/null) bytes (want $ksize)"
fi
# The same model: identical logits, so the only difference is the base file's 16-bit
# steps: every position's |KLD| stays under half a step of the 16-nat range plus the
# rounding of sum p (16 / 65535 / 2 = 1.22e-4 plus a few 1e-6), and every arg-max agrees.
run perplexity -m "$MODEL" -b 64 -t 1 --kl-divergence-base "$KBASE" --kl-divergence
kmax=$(sed -n 's/^Maximum KLD: *\([-0-9.]*\)$/\1/p' "$TMP/out")
kmin=$(sed -n 's/^Minimum KLD: *\([-0-9.]*\)$/\1/p' "$TMP/out")
kq=$(sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\) .*/\1/p' "$TMP/out")
if [ "$RC" -eq 0 ] && grep -q '^Same top p: 100.000 ± 0.000 %$' "$TMP/out" &&
    [ -n "$kmax" ] && [ -n "$kmin" ] && awk -v a="$kmax" -v b="$kmin" \
    'BEGIN { exit !(a <= 0.000125 && b >= -0.000125) }'; then
    ok "kl-divergence of the same model: same top 100%, KLD in [$kmin, $kmax]"
else
    fail "kl-divergence same model" "exit status $RC, KLD [$kmin, $kmax], stdout tail '$(tail -n 2 "$TMP/out")'"
fi
if [ -n "$kq" ] && [ "$(awk -v q="$kq" 'BEGIN { printf "%.4f", q }')" = "$kppl" ]; then
    ok "kl-divergence PPL(Q) $kq = the base run's PPL $kppl"
else
    fail "kl-divergence PPL(Q)" "'$kq' vs the base run's '$kppl'"
fi
check_rc "kl-divergence with the text checks its tokens" 0 "" -- \
    perplexity -m "$MODEL" -f "$KTEXT" -t 1 --kl-divergence-base "$KBASE" --kl-divergence
check_rc "kl-divergence of another text: tokens mismatch" 1 "tokens mismatch at token" -- \
    perplexity -m "$MODEL" -f "$SRC/docs/CLI.md" -t 1 --kl-divergence-base "$KBASE" --kl-divergence
check_rc "kl-divergence -c other than the base's: n_ctx mismatch" 1 \
    "n_ctx mismatch: the base file was computed with -c 64, this run has -c 32" -- \
    perplexity -m "$MODEL" -c 32 -t 1 --kl-divergence-base "$KBASE" --kl-divergence
"$BIN" gen-model -o "$TMP/v256.gguf" --preset tiny --n-layer 1 --n-vocab 256 >/dev/null 2>&1
check_rc "kl-divergence of a model with another vocabulary: n_vocab mismatch" 1 \
    "n_vocab mismatch: the base file has 512, the model 256" -- \
    perplexity -m "$TMP/v256.gguf" -t 1 --kl-divergence-base "$KBASE" --kl-divergence
head -c 50000 "$KBASE" >"$TMP/trunc.kld"
check_rc "kl-divergence of a truncated base file exits 1" 1 "truncated or padded base file: 50000 bytes" -- \
    perplexity -m "$MODEL" -t 1 --kl-divergence-base "$TMP/trunc.kld" --kl-divergence
head -c 14 "$KBASE" >"$TMP/trunc.kld"
check_rc "kl-divergence of a truncated header exits 1" 1 "truncated or unreadable base file" -- \
    perplexity -m "$MODEL" -t 1 --kl-divergence-base "$TMP/trunc.kld" --kl-divergence
check_rc "kl-divergence of a text as base file exits 1" 1 "no '_logits_' magic" -- \
    perplexity -m "$MODEL" -t 1 --kl-divergence-base "$KTEXT" --kl-divergence
cp "$KBASE" "$TMP/badtok.kld"
printf '\017\047\000\000' | dd of="$TMP/badtok.kld" bs=1 seek=40 conv=notrunc 2>/dev/null
check_rc "kl-divergence of a base file with token 9999 exits 1" 1 \
    "token 5 is 9999, outside the model's vocabulary [0, 512)" -- \
    perplexity -m "$MODEL" -t 1 --kl-divergence-base "$TMP/badtok.kld" --kl-divergence
check_rc "kl-divergence without a base file exits 2" 2 "needs --kl-divergence-base" -- \
    perplexity -m "$MODEL" --kl-divergence
check_rc "kl-divergence of a missing base file exits 1" 1 "cannot open" -- \
    perplexity -m "$MODEL" --kl-divergence-base "$TMP/none.kld" --kl-divergence

# Quantized models against the f32 base on the golden story: a positive KLD that grows
# from Q8_0 to Q4_0, and Q4_0 changes some arg-maxes.
if have_shared && [ -f "$STORY" ] && [ -f "$SHARED/models/stories260K-q4_0.gguf" ] &&
    [ -f "$SHARED/models/stories260K-q8_0.gguf" ]; then
    run perplexity -m "$MODEL" -f "$STORY" -c 128 -b 128 -t 1 --kl-divergence-base "$TMP/story.kld"
    kl8=""
    kl4=""
    top4=""
    if [ "$RC" -eq 0 ]; then
        run perplexity -m "$SHARED/models/stories260K-q8_0.gguf" -f "$STORY" -t 1 \
            --kl-divergence-base "$TMP/story.kld" --kl-divergence
        kl8=$(sed -n 's/^Mean    KLD: *\([-0-9.]*\) .*/\1/p' "$TMP/out")
        run perplexity -m "$SHARED/models/stories260K-q4_0.gguf" -f "$STORY" -t 1 \
            --kl-divergence-base "$TMP/story.kld" --kl-divergence
        kl4=$(sed -n 's/^Mean    KLD: *\([-0-9.]*\) .*/\1/p' "$TMP/out")
        top4=$(sed -n 's/^Same top p: *\([0-9.]*\) .*/\1/p' "$TMP/out")
    fi
    if [ -n "$kl8" ] && [ -n "$kl4" ] && [ -n "$top4" ] && awk -v a="$kl8" -v b="$kl4" -v t="$top4" \
        'BEGIN { exit !(a > 0 && b > a && t < 100) }'; then
        ok "kl-divergence Q8_0 $kl8 < Q4_0 $kl4 (same top $top4%)"
    else
        fail "kl-divergence quantized" "Q8_0 '$kl8', Q4_0 '$kl4', same top '$top4'"
    fi
else
    skip "kl-divergence quantized" "no shared models"
fi

# ---------------------------------------------------------------- bench
run bench -m "$MODEL" -p 16 -n 4 -r 1 -t 1 --json
if [ "$RC" -ne 0 ]; then
    fail "bench --json" "exit status $RC"
elif ! command -v python3 >/dev/null 2>&1; then
    skip "bench --json is valid JSON" "no python3"
elif python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert isinstance(d, list) and len(d) == 2, "expected 2 tests"
assert [(t["n_prompt"], t["n_gen"]) for t in d] == [(16, 0), (0, 4)], "tests"
for t in d:
    for k in ("model_filename", "model_type", "model_size", "model_n_params", "n_threads",
              "n_batch", "type_k", "type_v", "test_time", "avg_ns", "stddev_ns", "avg_ts",
              "stddev_ts", "samples_ns", "samples_ts"):
        assert k in t, "missing " + k
    assert t["avg_ts"] > 0 and len(t["samples_ts"]) == 1
' "$TMP/out" 2>"$TMP/err"; then
    ok "bench --json is valid JSON with avg_ts"
else
    fail "bench --json" "invalid JSON or fields"
fi
# depth, a fragmented cache, the peak-memory fields and the issue-5 budget:
# peak RSS <= file + KV cache + 64 MiB (not under AddressSanitizer, whose
# shadow memory counts in the RSS)
ASAN_BUILD=0
if grep -q __asan_init "$BIN" 2>/dev/null; then ASAN_BUILD=1; fi
run bench -m "$MODEL" -p 32 -n 8 -r 1 -t 2 -d 64 --fragment --json
if [ "$RC" -ne 0 ]; then
    fail "bench -d --fragment" "exit status $RC"
elif ! command -v python3 >/dev/null 2>&1; then
    skip "bench -d --fragment fields and peak memory" "no python3"
elif python3 -c '
import json, os, sys
d = json.load(open(sys.argv[1]))
assert [(t["n_prompt"], t["n_gen"], t["n_depth"]) for t in d] == [(32, 0, 64), (0, 8, 64)], "tests"
for t in d:
    assert t["fragmented"] is True, "fragmented"
    # 2 x 64 cells filled, one sequence removed: 64 live cells plus the test tokens
    assert t["kv_window"] > t["kv_cells_used"] >= 64, "window %d used %d" % (t["kv_window"], t["kv_cells_used"])
    limit = os.path.getsize(sys.argv[2]) + t["kv_bytes"] + 64 * 1024 * 1024
    assert t["peak_rss_bytes"] > 0, "peak RSS"
    if sys.argv[3] == "0":
        assert t["peak_rss_bytes"] <= limit, "peak %d > limit %d" % (t["peak_rss_bytes"], limit)
    assert 0 < t["model_decode_bytes"] <= t["model_size"] + 4096, "decode bytes"
 ' "$TMP/out" "$MODEL" "$ASAN_BUILD" 2>"$TMP/err"; then
    ok "bench -d 64 --fragment: depth fields, holes, peak RSS within file + KV + 64 MiB"
else
    fail "bench -d --fragment" "$(cat "$TMP/err")"
fi
run bench -m "$MODEL" -p 16 -n 4 -r 2 -t 1
if [ "$RC" -eq 0 ] && grep -q "| model" "$TMP/out" && grep -q " pp16 |" "$TMP/out" && grep -q " tg4 |" "$TMP/out"; then
    ok "bench prints a markdown table with pp16 and tg4"
else
    fail "bench markdown" "exit status $RC, stdout '$(cat "$TMP/out")'"
fi
# --mem-pair: every timed token followed by one probe pass of decode_bytes;
# the pair fields are consistent with the samples (t/s counts tokens only)
run bench -m "$MODEL" -p 8 -n 6 -r 2 -t 1,2 --mem-pair --json
if [ "$RC" -ne 0 ]; then
    fail "bench --mem-pair" "exit status $RC, stderr '$(cat "$TMP/err")'"
elif ! command -v python3 >/dev/null 2>&1; then
    skip "bench --mem-pair fields" "no python3"
elif python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert [(t["n_prompt"], t["n_gen"], t["n_threads"]) for t in d] == [(8, 0, 1), (0, 6, 1), (8, 0, 2), (0, 6, 2)], "tests"
for t in d:
    assert t["peak_rss_bytes"] is None, "peak RSS is null with the probe buffer"
    if t["n_gen"] == 0:
        assert "mem_pair_ratio" not in t, "pp tests are not paired"
        continue
    assert t["mem_pair_tokens"] == 12, "tokens %d" % t["mem_pair_tokens"]
    assert t["mem_pair_probe_bytes"] == t["model_decode_bytes"] // 8 * 8, "probe bytes"
    assert 0 <= t["mem_pair_huge_page_fraction"] <= 1, "huge fraction"
    assert t["mem_pair_loop"] in ("avx2 4x32B", "sse2 4x16B", "scalar 4x8B"), "loop"
    dec, probe = t["mem_pair_decode_gbs"], t["mem_pair_probe_gbs"]
    assert dec > 0 and probe > 0 and t["mem_pair_ratio_median"] > 0, "positive"
    assert abs(t["mem_pair_ratio"] - dec / probe) <= 1e-3 * t["mem_pair_ratio"] + 1e-4, "ratio"
    want = t["model_decode_bytes"] * 12 / sum(t["samples_ns"])
    assert abs(dec - want) <= 2e-3 * want + 1e-3, "decode GB/s %f vs samples %f" % (dec, want)
    for ns, ts in zip(t["samples_ns"], t["samples_ts"]):
        assert abs(ts - 6e9 / ns) <= 1e-3 * ts, "t/s from token time"
' "$TMP/out" 2>"$TMP/err"; then
    ok "bench --mem-pair: paired fields match the token samples, pp untouched, peak RSS null"
else
    fail "bench --mem-pair" "$(cat "$TMP/err")"
fi
# bench mem: every pass checks its sum against the buffer's contents (a
# read loop that drops a share's tail fails), 3 threads split 1 MiB unevenly
run bench mem --size 1 -t 1,3 -r 2 --json
if [ "$RC" -ne 0 ]; then
    fail "bench mem --json" "exit status $RC, stderr '$(cat "$TMP/err")'"
elif ! command -v python3 >/dev/null 2>&1; then
    skip "bench mem fields" "no python3"
elif python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert [t["n_threads"] for t in d] == [1, 3], "threads"
for t in d:
    assert t["test"] == "mem_read" and t["bytes"] == 1 << 20 and t["reps"] == 2, "fields"
    assert 0 < t["median_gbs"] <= t["best_gbs"], "median %f best %f" % (t["median_gbs"], t["best_gbs"])
    assert t["loop"] in ("avx2 4x32B", "sse2 4x16B", "scalar 4x8B"), "loop " + t["loop"]
' "$TMP/out" 2>"$TMP/err"; then
    ok "bench mem --json: fields, the loop named, sums checked on uneven shares"
else
    fail "bench mem --json" "$(cat "$TMP/err")"
fi
check_rc "bench mem over 256 threads exits 2" 2 "error: -t: '300' is out of range [1, 256]" -- bench mem -t 300
run bench -m "$MODEL" -p 0 -n 3 -r 1 -t 1 --mem-pair
if [ "$RC" -eq 0 ] && grep -q "decode / probe" "$TMP/out" && grep -q " tg3 |.*%" "$TMP/out"; then
    ok "bench --mem-pair markdown has the paired columns"
else
    fail "bench --mem-pair markdown" "exit status $RC, stdout '$(cat "$TMP/out")'"
fi

# ---------------------------------------------------------------- gen-model
TINY="$TMP/tiny.gguf"
run gen-model -o "$TINY" --preset tiny --seed 7
if [ "$RC" -eq 0 ] && [ -s "$TINY" ]; then
    ok "gen-model tiny writes a file"
    run info "$TINY"
    if [ "$RC" -eq 0 ] && grep -q "tensors" "$TMP/out"; then
        ok "info accepts the generated model"
    else
        fail "info on the generated model" "exit status $RC"
    fi
    run run -m "$TINY" -p "$PROMPT" -n 8 --temp 0 -t 1
    if [ "$RC" -eq 0 ] && [ "$(head -c ${#PROMPT} "$TMP/out")" = "$PROMPT" ]; then
        ok "run accepts the generated model"
    else
        fail "run on the generated model" "exit status $RC"
    fi
else
    fail "gen-model tiny" "exit status $RC or empty file"
fi
run gen-model -o "$TMP/tiny-q8.gguf" --preset tiny --type q8_0 --n-layer 1
if [ "$RC" -eq 0 ] && "$BIN" info "$TMP/tiny-q8.gguf" 2>/dev/null | grep -q "q8_0"; then
    ok "gen-model --type q8_0 --n-layer 1"
else
    fail "gen-model --type q8_0" "exit status $RC or no q8_0 tensor"
fi

echo
if [ "$n_skip" -gt 0 ]; then
    echo "($n_skip skipped)"
fi
echo "$n_pass passed, $n_fail failed"
test_exit
