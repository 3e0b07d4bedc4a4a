#!/usr/bin/env bash
# shift_peer_test.sh: the tokens of `ctxshift run` and `ctxshift passkey`
# against llama.cpp's (node-llama-cpp 3.21.1's prebuilt libllama,
# bench/peer), step by step, through context shifts and self-extend.
# Usage: shift_peer_test.sh CTXSHIFT [OUTDIR]
#  - Models: `ctxshift gen-model --n-layer 2 --n-ctx 256` of the llama3-1b
#    (rope_freqs, llama3 scaling) and qwen2.5-0.5b (NEOX rotation) shapes,
#    F16 weights, the bundled stories260K vocabulary (as golden_peer_test.sh).
#  - tests/golden_peer/llama_passkey.c (built with peer_build) runs
#    llama.cpp's examples/passkey procedure and llama-cli's context-shift
#    generation and prints every generated token with llama.cpp's top-2
#    logit margin; `ctxshift passkey --print-ids` / `ctxshift run
#    --print-ids` print ours.
#  - run: a 16-token prompt, -c 48, n_keep 5 (--keep 4), 96 greedy tokens
#    (--ignore-eos): shifts before steps 32, 53, 74 and 95; F32 and F16 cache.
#    passkey: --junk 8 --pos 2 --key 4242 --keep 32 -b 64 (554 prompt
#    tokens): with G = 1 five shifts of 64 after the 256-position fill; with
#    --grp-attn-n 2 seven self-extend compressions and one shift; the 16
#    answer tokens follow all of them. The peer divides positions with the
#    rotation sign of the kv-cache spec (§2.7): this libllama's seq_div
#    rotates K the wrong way (llama_passkey.c), which makes its answer differ
#    from the first token on.
#  - The progress lines (passkey's "main: processed / shifting", run's
#    "context shift: ...") must be equal; the token ids must be equal step by
#    step. The one difference allowed is a first divergence at a step where
#    llama.cpp's top two logits are within TIE_MARGIN (random weights have
#    near-ties; F16 logits differ by ~1e-3 between the engines); the
#    comparison of that run ends there, and the run fails unless at least
#    MIN_RUN (run: past two shifts) or MIN_PASSKEY (passkey: the whole answer)
#    steps were equal.
# Missing bench/peer node_modules skips, a failure when strict
# (tests/cli_lib.sh). Cost: about 1-2 min on 2 cores, most of it llama.cpp's
# 96 single-token decodes on the 2048-wide llama3 shape. Exit status: 0 all
# equal, 1 a difference, 77 skipped.
set -uo pipefail
BIN=${1:?usage: shift_peer_test.sh CTXSHIFT [OUTDIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${CS_SHARED_DIR:-$root/../shared}
# shellcheck source=tests/cli_lib.sh
. "$root/tests/cli_lib.sh"
test_outdir shift-peer "${2:-}"
out=$OUT
TMP=$out

PRESETS="llama3-1b qwen2.5-0.5b"
TIE_MARGIN=0.1
MIN_RUN=64     # steps 32 and 53 follow the first two shifts
MIN_PASSKEY=16 # the whole answer, after every shift of the prompt
PROMPT="Once upon a time, there was a little girl named Lily."
RUN_CTX=48 RUN_KEEP=5 RUN_N=96
PK_JUNK=8 PK_POS=2 PK_KEY=4242 PK_KEEP=32 PK_BATCH=64
vocab="$root/models/stories260K-f32.gguf"
bins=$PEER_BINS

if [ ! -f "$bins/libllama.v0.4.0.so" ] || [ ! -f "$PEER_BUNDLE" ]; then
    skip "shift_peer: llama.cpp comparison" "bench/peer/node_modules missing; node >= 20, then make deps"
    test_exit
fi
peer="${TMPDIR:-/tmp}/ctxshift-golden-peer/llama_passkey"
if ! peer_build "$peer" "$root/tests/golden_peer/llama_passkey.c"; then
    fail "shift_peer: build llama_passkey" "compile failed"
    test_exit
fi

summary=""
# compare NAME MIN PEER_OUT OURS_IDS: the step lines of PEER_OUT ("step I id
# T margin M[ eog]") against the ids in OURS_IDS (one line, space separated;
# ours end before an end-of-generation token). Passes when at least MIN
# steps are equal and any difference is a first divergence at a near-tie.
compare() {
    local name=$1 min=$2 peer_out=$3 ours=$4 verdict
    verdict=$(awk -v ours="$ours" -v tie="$TIE_MARGIN" '
        BEGIN { n = split(ours, o, " ") }
        /^step / {
            i = $2; t = $4; m = $6; eog = ($7 == "eog")
            if (i < n && !eog && o[i + 1] == t) { eq++; next }
            if (i == n && eog) { eq++; done = 1; exit }
            got = i < n ? o[i + 1] : "none (ended)"
            printf "%s %d step %d: llama.cpp id %s%s margin %s, ctxshift id %s\n", \
                (m + 0 < tie ? "tie" : "diff"), eq, i, t, (eog ? " (eog)" : ""), m, got
            done = 1; exit
        }
        END {
            if (!done) {
                if (eq < n) printf "diff %d ctxshift generated %d tokens, llama.cpp %d\n", eq, n, eq
                else printf "equal %d\n", eq
            }
        }' "$peer_out")
    local kind=${verdict%% *} rest=${verdict#* }
    local eq=${rest%% *} what=${rest#* }
    summary+=$(printf '\n  %-40s %3s steps equal' "$name" "$eq")
    case $kind in
    equal) ;;
    tie)
        summary+=" (then a near-tie: $what)"
        echo "     $name: first divergence at a near-tie: $what"
        ;;
    *)
        fail "$name: tokens" "$what"
        return
        ;;
    esac
    if [ "$eq" -ge "$min" ]; then
        ok "$name: $eq steps equal to llama.cpp's (at least $min)"
    else
        fail "$name: tokens" "only $eq steps equal, at least $min required ($what)"
    fi
}

for p in $PRESETS; do
    m="$out/$p.gguf"
    if ! "$BIN" gen-model -o "$m" --preset "$p" --n-layer 2 --n-ctx 256 --type f16 \
        --vocab "$vocab" >/dev/null 2>"$TMP/err"; then
        fail "$p: gen-model" "failed"
        continue
    fi
    # --- llama-cli's context shift: `ctxshift run`
    for cache in f32 f16; do
        name="$p run -c $RUN_CTX (cache $cache)"
        if ! "$peer" run "$m" "$bins" "$cache" "$PROMPT" "$RUN_CTX" "$RUN_KEEP" "$RUN_N" \
            >"$TMP/peer" 2>"$TMP/err"; then
            fail "$name: llama_passkey run" "failed"
            continue
        fi
        "$BIN" run -m "$m" -p "$PROMPT" -c "$RUN_CTX" --keep $((RUN_KEEP - 1)) -n "$RUN_N" \
            --temp 0 --ignore-eos -ctk "$cache" -ctv "$cache" -t 2 -v --print-ids \
            >/dev/null 2>"$TMP/err"
        rc=$?
        if [ "$rc" -ne 0 ]; then
            fail "$name: ctxshift run" "exit status $rc"
            continue
        fi
        grep '^context shift: n_keep' "$TMP/peer" >"$TMP/want"
        grep '^context shift: n_keep' "$TMP/err" >"$TMP/got"
        if [ "$(wc -l <"$TMP/want")" -ge 2 ] && cmp -s "$TMP/want" "$TMP/got"; then
            ok "$name: the $(wc -l <"$TMP/want") shifts are llama-cli's"
        else
            fail "$name: shifts" "llama.cpp: $(tr '\n' ';' <"$TMP/want") ours: $(tr '\n' ';' <"$TMP/got")"
        fi
        compare "$name" "$MIN_RUN" "$TMP/peer" "$(sed -n 's/^id //p' "$TMP/err" | tr '\n' ' ')"
    done
    # --- llama-passkey: context shift (G = 1), self-extend then a shift (G = 2)
    for grp in 1 2; do
        name="$p passkey --grp-attn-n $grp"
        if ! "$peer" passkey "$m" "$bins" f32 "$PK_JUNK" "$PK_POS" "$PK_KEY" "$PK_KEEP" "$grp" \
            "$PK_BATCH" >"$TMP/peer" 2>"$TMP/err"; then
            fail "$name: llama_passkey passkey" "failed"
            continue
        fi
        "$BIN" passkey -m "$m" --junk "$PK_JUNK" --pos "$PK_POS" --key "$PK_KEY" \
            --keep "$PK_KEEP" --grp-attn-n "$grp" -b "$PK_BATCH" -ctk f32 -ctv f32 -t 2 \
            --print-ids >"$TMP/ours" 2>"$TMP/err"
        rc=$?
        if [ "$rc" -ne 0 ]; then
            fail "$name: ctxshift passkey" "exit status $rc"
            continue
        fi
        grep -E '^(prompt tokens|main: (processed|shifting))' "$TMP/peer" >"$TMP/want"
        grep -E '^(prompt tokens|main: (processed|shifting))' "$TMP/ours" >"$TMP/got"
        n_shift=$(grep -c '^main: shifting' "$TMP/want")
        if cmp -s "$TMP/want" "$TMP/got"; then
            ok "$name: llama-passkey's batches and shifts ($n_shift shifts)"
        else
            fail "$name: progress lines" "$(diff "$TMP/want" "$TMP/got" | head -n 6 | tr '\n' ';')"
        fi
        compare "$name" "$MIN_PASSKEY" "$TMP/peer" "$(sed -n 's/^answer ids: //p' "$TMP/ours")"
    done
done
echo "tokens equal to llama.cpp's, step by step (tie margin $TIE_MARGIN):$summary"
test_exit
