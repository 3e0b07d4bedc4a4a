#!/usr/bin/env bash
# replay_test.sh: end-to-end checks of `ctxshift replay` against llama.cpp's
# golden KV-cache scenarios (shared/golden/*.json, see its README.md).
#
# usage: tests/replay_test.sh <ctxshift binary> <shared dir>
#
# Every scenario must replay with exit status 0 (its time is printed; a file
# slower than SLOW_SECONDS gets a warning line). --out must write valid JSON
# with the same runs, steps and row shapes; replaying that output against
# itself must pass with --atol 1e-6 (the output keeps 9 digits). A copy with one logit changed by 1.0, one
# with a wrong counter, a truncated file, a malformed step and an unknown op
# must fail with exit status 1 (2 allowed for the truncated file) and a
# message naming the step or position, never a crash.
#
# Each check prints "ok", "FAIL" (with the reason) or "skip"; checks that need
# the shared folder (or python3) are skipped when it is missing. The last line
# is "N passed, M failed". Exit status: 0 when nothing failed, 1 otherwise, 77
# when a check was skipped (tests/cli_lib.sh), 2 for bad arguments.
set -u

if [ $# -lt 1 ]; then
    echo "usage: $0 <ctxshift binary> <shared dir>" >&2
    exit 2
fi
BIN=$1
SHARED=${2:-}
if [ ! -x "$BIN" ]; then
    echo "error: '$BIN' is not an executable" >&2
    exit 2
fi
GOLDEN="$SHARED/golden"
MODELS="$SHARED/models"
# Release-build budget per scenario (passkey_grp4 is the largest).
SLOW_SECONDS=60

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-replay-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

# As cli_lib.sh's fail, with the last lines of stdout too.
fail() {
    n_fail=$((n_fail + 1))
    echo "FAIL $1: $2"
    local f
    for f in "$TMP/out" "$TMP/err"; do
        if [ -s "$f" ]; then
            echo "     $(basename "$f") (last lines):"
            tail -n 5 "$f" | sed 's/^/       /'
        fi
    done
}

have_shared() { [ -n "$SHARED" ] && [ -d "$GOLDEN" ] && [ -d "$MODELS" ]; }
have_python() { command -v python3 >/dev/null 2>&1; }

# ---------------------------------------------------------------- usage
run replay --help
if [ "$RC" -eq 0 ] && grep -q "usage: ctxshift replay" "$TMP/out"; then
    ok "replay --help exits 0"
else
    fail "replay --help" "exit status $RC"
fi
run replay
if [ "$RC" -eq 2 ] && grep -q "error: replay: a scenario FILE.json is required" "$TMP/err"; then
    ok "replay without a file exits 2"
else
    fail "replay without a file" "exit status $RC"
fi
run replay x.json --bogus
if [ "$RC" -eq 2 ] && grep -qF "unknown flag '--bogus'" "$TMP/err"; then
    ok "replay unknown flag exits 2"
else
    fail "replay unknown flag" "exit status $RC"
fi
run replay x.json --tie-margin -1
if [ "$RC" -eq 2 ] && grep -qF "error: --tie-margin: '-1'" "$TMP/err"; then
    ok "replay negative --tie-margin exits 2"
else
    fail "replay negative --tie-margin" "exit status $RC"
fi
run replay x.json --atol abc
if [ "$RC" -eq 2 ] && grep -qF "error: --atol: 'abc'" "$TMP/err"; then
    ok "replay bad --atol exits 2"
else
    fail "replay bad --atol" "exit status $RC"
fi
run replay "$TMP/no-such-file.json"
if [ "$RC" -eq 1 ] && grep -qF "$TMP/no-such-file.json" "$TMP/err"; then
    ok "replay of a missing file exits 1 naming it"
else
    fail "replay of a missing file" "exit status $RC"
fi

if ! have_shared; then
    for what in "golden scenarios" "--out JSON" "self-replay of --out" "tampered logit" \
        "tampered counter" "truncated JSON" "malformed step" "unknown op" "missing model" \
        "--no-contiguous" "-t 2" "--tie-margin"; do
        skip "$what" "no shared folder at '$SHARED'"
    done
else
    # ------------------------------------------------------------ every scenario
    n_files=0
    for f in "$GOLDEN"/*.json; do
        [ -e "$f" ] || continue
        n_files=$((n_files + 1))
        name=$(basename "$f" .json)
        t0=$(date +%s.%N)
        run replay "$f" --models "$MODELS" -q --out "$TMP/$name.out.json"
        t1=$(date +%s.%N)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
        if [ "$RC" -eq 0 ] && grep -q "^PASS$" "$TMP/out"; then
            ok "replay $name ($secs s; $(grep '^total:' "$TMP/out" | sed 's/^total: //'))"
        else
            fail "replay $name" "exit status $RC ($secs s); first failures:
$(grep -m 5 '^FAIL' "$TMP/out")"
        fi
        if awk -v s="$secs" -v lim="$SLOW_SECONDS" 'BEGIN { exit !(s > lim) }'; then
            echo "     warning: $name took $secs s (over $SLOW_SECONDS s)"
        fi
        # --out: valid JSON, same runs/steps/ops, same row shapes.
        if ! have_python; then
            skip "--out $name" "no python3"
        elif [ ! -s "$TMP/$name.out.json" ]; then
            fail "--out $name" "no output file"
        elif python3 - "$f" "$TMP/$name.out.json" >"$TMP/py" 2>&1 <<'EOF'; then
import json, sys
ref = json.load(open(sys.argv[1]))
ours = json.load(open(sys.argv[2]))
assert len(ours["runs"]) == len(ref["runs"]), "run count"
for ra, rb in zip(ours["runs"], ref["runs"]):
    assert len(ra["steps"]) == len(rb["steps"]), "step count in run %s" % rb["name"]
    for i, (sa, sb) in enumerate(zip(ra["steps"], rb["steps"])):
        where = "run %s step %d" % (rb["name"], i)
        assert sa["op"] == sb["op"], where + ": op"
        if "result" not in sb:
            continue
        assert set(sa["result"]) == set(sb["result"]), where + ": result keys"
        if sb["op"] == "decode":
            assert len(sa["result"]["rows"]) == len(sb["result"]["rows"]), where + ": rows"
            for x, y in zip(sa["result"]["rows"], sb["result"]["rows"]):
                assert set(x) == set(y) and x["row"] == y["row"], where + ": row keys"
                if "logits" in y:
                    assert len(x["logits"]) == len(y["logits"]), where + ": logits"
EOF
            ok "--out $name is valid JSON with the same shape"
        else
            fail "--out $name" "$(tail -n 2 "$TMP/py")"
        fi
    done
    if [ "$n_files" -eq 0 ]; then
        fail "golden scenarios" "no *.json in $GOLDEN"
    fi

    BASIC="$GOLDEN/basic_f32.json"
    MULTI="$GOLDEN/multi_seq.json"

    # ------------------------------------------------------------ self-replay
    if [ -s "$TMP/basic_f32.out.json" ]; then
        # %.9g keeps every float exactly; the reading as double leaves < 1e-7.
        run replay "$TMP/basic_f32.out.json" --models "$MODELS" -q --atol 1e-6
        if [ "$RC" -eq 0 ]; then
            ok "replaying our own --out passes with --atol 1e-6"
        else
            fail "self-replay of --out" "exit status $RC; $(grep '^total:' "$TMP/out")"
        fi
    else
        skip "self-replay of --out" "no basic_f32 output"
    fi

    # ------------------------------------------------------------ --tie-margin
    # Our own basic_f32 output with llama.cpp's arg-max of the last row moved
    # to our second-best token, 0.3 above our best: a flip with a recorded
    # top-two margin of 0.3, inside the atol printed by the script. It is a
    # near-tie under the default margin (2 * atol >= 0.42), and a failure
    # with --tie-margin 0.1.
    if [ -s "$TMP/basic_f32.out.json" ] && have_python; then
        atol=$(python3 - "$TMP/basic_f32.out.json" "$TMP/flipped.json" <<'EOF2'
import json, sys
d = json.load(open(sys.argv[1]))
steps = d["runs"][0]["steps"]
k = max(i for i, s in enumerate(steps) if s["op"] == "decode")
row = steps[k]["result"]["rows"][-1]
lg = row["logits"]
a, b = sorted(range(len(lg)), key=lambda i: -lg[i])[:2]
gap = lg[a] - lg[b]
lg[b] = lg[a] + 0.3
row["argmax"] = b
json.dump(d, open(sys.argv[2], "w"))
print("%.4f %d" % (max(gap + 0.3, 0.2) + 0.01, k))
EOF2
        )
        read -r atol fstep <<<"$atol"
        run replay "$TMP/flipped.json" --models "$MODELS" -q --atol "$atol"
        if [ "$RC" -eq 0 ] && grep -q "^near-tie: run 'main' step $fstep (decode): .*(margin 0.3 <=" "$TMP/out"; then
            ok "an arg-max flip with llama.cpp margin 0.3 is a near-tie at atol $atol"
        else
            fail "--tie-margin default" "exit status $RC"
        fi
        run replay "$TMP/flipped.json" --models "$MODELS" -q --atol "$atol" --tie-margin 0.1
        if [ "$RC" -eq 1 ] &&
            grep -q "^FAIL: run 'main' step $fstep (decode): .*llama.cpp margin 0.3 > 0.1" "$TMP/out"; then
            ok "the same flip fails with --tie-margin 0.1"
        else
            fail "--tie-margin 0.1" "exit status $RC"
        fi
    else
        skip "--tie-margin" "no basic_f32 output or no python3"
    fi

    # ------------------------------------------------------------ variants
    run replay "$MULTI" --models "$MODELS" -q --no-contiguous
    if [ "$RC" -eq 0 ]; then
        ok "multi_seq passes with --no-contiguous"
    else
        fail "--no-contiguous" "exit status $RC"
    fi
    run replay "$BASIC" --models "$MODELS" -q -t 2
    if [ "$RC" -eq 0 ]; then
        ok "basic_f32 passes with -t 2"
    else
        fail "-t 2" "exit status $RC"
    fi
    run replay "$BASIC" --models "$TMP"
    if [ "$RC" -eq 1 ] && grep -qF "$TMP/stories260K-f32.gguf" "$TMP/err"; then
        ok "a missing model exits 1 naming the path"
    else
        fail "missing model" "exit status $RC"
    fi

    # ------------------------------------------------------------ tampered and malformed
    if ! have_python; then
        for what in "tampered logit" "tampered counter" "malformed step" "unknown op"; do
            skip "$what" "no python3"
        done
    else
        python3 - "$BASIC" "$MULTI" "$TMP" <<'EOF'
import json, sys
basic, multi, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(basic))
# one logit of the 3rd decode step's row changed by 1.0
step = d["runs"][0]["steps"][2]
step["result"]["rows"][0]["logits"][100] += 1.0
json.dump(d, open(tmp + "/tampered_logit.json", "w"))
d = json.load(open(multi))
for i, s in enumerate(d["runs"][0]["steps"]):
    if s["op"] == "used_cells":
        s["result"]["value"] += 1
        open(tmp + "/tampered_counter.step", "w").write(str(i))
        break
json.dump(d, open(tmp + "/tampered_counter.json", "w"))
d = json.load(open(basic))
d["runs"][0]["steps"][1]["tokens"] = "not a list"
json.dump(d, open(tmp + "/malformed_step.json", "w"))
d = json.load(open(basic))
d["runs"][0]["steps"].insert(1, {"op": "frobnicate"})
json.dump(d, open(tmp + "/unknown_op.json", "w"))
EOF
        run replay "$TMP/tampered_logit.json" --models "$MODELS" -q
        if [ "$RC" -eq 1 ] && grep -q "^FAIL: run 'main' step 2 (decode): row 0: max |logit diff| 1" "$TMP/out"; then
            ok "a logit changed by 1.0 fails, naming the step and row"
        else
            fail "tampered logit" "exit status $RC"
        fi
        cstep=$(cat "$TMP/tampered_counter.step" 2>/dev/null)
        run replay "$TMP/tampered_counter.json" --models "$MODELS" -q
        if [ "$RC" -eq 1 ] && grep -q "^FAIL: run 'multi' step $cstep (used_cells)" "$TMP/out"; then
            ok "a wrong used_cells value fails, naming the step"
        else
            fail "tampered counter" "exit status $RC"
        fi
        run replay "$TMP/malformed_step.json" --models "$MODELS" -q
        if [ "$RC" -eq 1 ] && grep -q "^FAIL: run 'main' step 1 (decode): malformed step" "$TMP/out"; then
            ok "a malformed step fails with exit 1, naming the step"
        else
            fail "malformed step" "exit status $RC"
        fi
        run replay "$TMP/unknown_op.json" --models "$MODELS" -q
        if [ "$RC" -eq 1 ] && grep -qF "unknown op 'frobnicate'" "$TMP/out"; then
            ok "an unknown op fails, naming it"
        else
            fail "unknown op" "exit status $RC"
        fi
    fi
    head -c 3000 "$BASIC" >"$TMP/truncated.json"
    run replay "$TMP/truncated.json" --models "$MODELS"
    if { [ "$RC" -eq 1 ] || [ "$RC" -eq 2 ]; } && grep -q "error: replay: .*truncated.json: line" "$TMP/err"; then
        ok "a truncated JSON file exits $RC with the position"
    else
        fail "truncated JSON" "exit status $RC"
    fi
    echo '{"format": "llama-kv-golden/1", "model": 5, "runs": []}' >"$TMP/bad_model.json"
    run replay "$TMP/bad_model.json" --models "$MODELS"
    if [ "$RC" -eq 1 ] && grep -q "error: replay:" "$TMP/err"; then
        ok "a scenario with a bad \"model\" field exits 1"
    else
        fail "bad model field" "exit status $RC"
    fi
fi

echo
if [ "$n_skip" -gt 0 ]; then
    echo "($n_skip skipped)"
fi
echo "$n_pass passed, $n_fail failed"
test_exit
