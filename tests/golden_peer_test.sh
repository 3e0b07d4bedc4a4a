#!/usr/bin/env bash
# golden_peer_test.sh: ctxshift's logits against llama.cpp's (node-llama-cpp
# 3.21.1's prebuilt libllama, bench/peer) on every model family, through two
# context shifts. Usage: golden_peer_test.sh CTXSHIFT [OUTDIR]
#  - For each preset (llama3-1b, smollm2-135m, qwen2.5-0.5b, nemo-small):
#    `ctxshift gen-model --n-layer 2` (the published shapes, 2 blocks) with
#    the bundled stories260K vocabulary (512 SentencePiece tokens: the
#    families differ in their blocks, not in how logits are compared, and a
#    small vocabulary keeps the test fast), written as F16, then quantized
#    with `ctxshift quantize` to llama:Q8_0 and Q4_K_M; then llama3-1b as
#    Q3_K_M, qwen2.5-0.5b as IQ4_XS, smollm2-135m as Q2_K, and llama3-1b in
#    every other llama.cpp mix.
#  - tests/golden_peer/llama_golden.c (compiled here against the headers of
#    the llama.cpp source node-llama-cpp bundles, as tokenizer_peer_test.sh
#    builds tokenizer_llama) decodes a 40-token prompt and 64 greedy tokens
#    on each file with llama-cli's context shift at n_past == 64 (two
#    shifts) and writes llama.cpp's logits of every step in the golden
#    format (../shared/golden/README.md).
#  - `ctxshift replay` teacher-forces the same steps and compares every row:
#    --atol 3e-2 for F16 (the golden README's tolerance), 0.5 for the
#    quantized files; the arg-max must equal llama.cpp's except where
#    llama.cpp's top two logits are within 0.1 (--tie-margin 0.1).
# Missing bench/peer node_modules skips, a failure when strict
# (tests/cli_lib.sh). Cost: about 80 s on 2 cores, most of it the 2-block llama3-1b
# (2048 wide, 245 MB as F16: generating, quantizing, decoding). Exit status: 0 all
# equal, 1 a difference, 77 skipped.
set -uo pipefail
BIN=${1:?usage: golden_peer_test.sh CTXSHIFT [OUTDIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${CS_SHARED_DIR:-$root/../shared}
# shellcheck source=tests/cli_lib.sh
. "$root/tests/cli_lib.sh"
test_outdir golden-peer "${2:-}"
out=$OUT
TMP=$out

PRESETS="llama3-1b smollm2-135m qwen2.5-0.5b nemo-small"
TYPES="f16 q8_0 q4_k_m"
ATOL_F16=3e-2
ATOL_QUANT=0.5
TIE_MARGIN=0.1
# preset=mix pairs beyond family x {F16, Q8_0, Q4_K_M}: the issue's three, then
# every other llama.cpp mix on the llama3-1b shape
EXTRA="llama3-1b=Q3_K_M qwen2.5-0.5b=llama:IQ4_XS smollm2-135m=llama:Q2_K"
for mix in llama:Q2_K Q3_K_S Q3_K_L Q4_K_S Q5_K_S Q5_K_M llama:Q6_K llama:Q4_0 llama:Q4_1 \
    llama:Q5_0 llama:Q5_1 llama:IQ4_NL llama:IQ4_XS; do
    EXTRA+=" llama3-1b=$mix"
done
vocab="$root/models/stories260K-f32.gguf"
bins=$PEER_BINS
bundle=$PEER_BUNDLE

# --- the llama.cpp side
if [ ! -f "$bins/libllama.v0.4.0.so" ] || [ ! -f "$bundle" ]; then
    skip "golden_peer: llama.cpp comparison" "bench/peer/node_modules missing; node >= 20, then make deps"
    test_exit
fi
llama_tool="${TMPDIR:-/tmp}/ctxshift-golden-peer/llama_golden"
if ! peer_build "$llama_tool" "$root/tests/golden_peer/llama_golden.c"; then
    fail "golden_peer: build llama_golden" "compile failed"
    test_exit
fi

# --- every family x type
summary=""
# compare M ATOL: llama.cpp's golden of $out/M.gguf, replayed by ctxshift.
compare() {
    local m=$1 atol=$2
    if ! "$llama_tool" "$out/$m.gguf" "$out/$m.json" "$bins" 2>"$TMP/err"; then
        fail "$m: llama_golden" "failed"
        return
    fi
    # The scenario must hold the two context shifts it is meant to test.
    if ! grep -q '"2 context shifts"' "$out/$m.json"; then
        fail "$m: scenario" "llama_golden did not shift the context twice"
        return
    fi
    "$BIN" replay "$out/$m.json" --models "$out" -q --atol "$atol" \
        --tie-margin "$TIE_MARGIN" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    local total diff
    total=$(sed -n 's/^total: //p' "$TMP/out")
    diff=$(sed -n 's/.*max |diff| \([^,]*\),.*/\1/p' <<<"$total")
    summary+=$(printf '\n  %-28s max |logit diff| %s' "$m" "${diff:-?}")
    if [ "$rc" -eq 0 ] && grep -q '^PASS$' "$TMP/out"; then
        ok "$m vs llama.cpp: atol $atol, tie margin $TIE_MARGIN ($total)"
    else
        fail "$m vs llama.cpp (atol $atol, tie margin $TIE_MARGIN)" "replay exit $rc: $total
$(grep -m 5 '^FAIL' "$TMP/out")"
    fi
}
# quantize P MIX TAG: $out/P-f16.gguf to $out/P-TAG.gguf with ctxshift quantize.
quantize() {
    "$BIN" quantize "$out/$1-f16.gguf" "$out/$1-$3.gguf" "$2" >/dev/null 2>"$TMP/err" ||
        fail "$1: quantize $2" "$(head -n 2 "$TMP/err")"
}
for p in $PRESETS; do
    if ! "$BIN" gen-model -o "$out/$p-f16.gguf" --preset "$p" --n-layer 2 --type f16 \
        --vocab "$vocab" >/dev/null 2>"$TMP/err"; then
        fail "$p: gen-model" "failed"
        continue
    fi
    quantize "$p" llama:Q8_0 q8_0
    quantize "$p" Q4_K_M q4_k_m
    for t in $TYPES; do
        m="$p-$t"
        [ -f "$out/$m.gguf" ] || continue
        atol=$ATOL_QUANT
        [ "$t" = f16 ] && atol=$ATOL_F16
        compare "$m" "$atol"
    done
done
# The issue's extra pairs, then every other llama.cpp mix on the llama3 shape.
for pm in $EXTRA; do
    p=${pm%%=*} mix=${pm#*=}
    tag=$(tr 'A-Z:' 'a-z_' <<<"$mix")
    [ -f "$out/$p-f16.gguf" ] || continue
    quantize "$p" "$mix" "$tag"
    [ -f "$out/$p-$tag.gguf" ] && compare "$p-$tag" "$ATOL_QUANT"
done
echo "max |logit diff| against llama.cpp per family and type:$summary"
test_exit
