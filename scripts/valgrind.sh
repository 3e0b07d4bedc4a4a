#!/usr/bin/env bash
# valgrind.sh: memcheck over the CLI paths of ctxshift (run, passkey,
# parallel, replay, perplexity) on the stories260K models. A long run, not
# part of `make test` (several minutes on 2 cores). docs/FUZZING.md, "Long
# runs", has its last summary.
#
# usage: scripts/valgrind.sh [SHARED_DIR]   (default: ../shared beside the
#        source, as CMake's CS_SHARED_DIR)
# env:   BUILD (default build/valgrind): the build folder, configured here
#        as RelWithDebInfo (-O2 -g) without sanitizers or -march=native.
#
# The AVX2 kernel table is forced (CS_KERNELS=avx2) and checked through
# `ctxshift --version`: valgrind 3.19 does not decode AVX-512, and an
# unsupported CS_KERNELS silently falls back to the best table.
#
# A command passes with exit status 0 and no memcheck error, leaks of the
# kinds definite, indirect and possible counted as errors
# (--errors-for-leak-kinds); "still reachable" is reported, not failed.
# Exit status: 0 all pass, 1 a failure, 2 setup error.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${1:-$root/../shared}
BUILD=${BUILD:-$root/build/valgrind}
MODELS=$SHARED/models
MODEL=$MODELS/stories260K-f32.gguf
STORY=$SHARED/golden/tools/perplexity_story.txt

command -v valgrind >/dev/null || { echo "error: valgrind not found" >&2; exit 2; }
for f in "$MODEL" "$STORY" "$SHARED/golden/context_shift_f32.json"; do
    [ -f "$f" ] || { echo "error: $f missing (SHARED_DIR: $SHARED)" >&2; exit 2; }
done

cmake -S "$root" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCS_SANITIZE=OFF -DCS_NATIVE=OFF \
    -DCS_BUILD_TESTS=OFF -DCS_BUILD_BENCH=OFF >/dev/null || exit 2
cmake --build "$BUILD" -j2 --target ctxshift >/dev/null || exit 2
BIN=$BUILD/ctxshift
export CS_KERNELS=avx2
if ! "$BIN" --version | grep -q "kernels = avx2"; then
    echo "error: CS_KERNELS=avx2 not honoured: $("$BIN" --version)" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-valgrind.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
n_fail=0

# check NAME ARGS...: ctxshift ARGS under memcheck; one summary line.
check() {
    local name=$1
    shift
    local log=$TMP/$name.vg t0 t1 rc
    t0=$(date +%s)
    valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect,possible \
        --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=1 --track-origins=yes \
        --log-file="$log" "$BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    rc=$?
    t1=$(date +%s)
    local errors definite indirect possible reachable
    errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$log" | tail -n 1)
    definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
    indirect=$(sed -n 's/.*indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
    possible=$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
    reachable=$(sed -n 's/.*still reachable: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
    # no "LEAK SUMMARY" at all: every block was freed
    if grep -q "All heap blocks were freed" "$log"; then
        definite=0 indirect=0 possible=0 reachable=0
    fi
    local line
    line=$(printf '%-11s exit %d, %s errors, lost: definitely %s, indirectly %s, possibly %s bytes; still reachable %s bytes (%ds)' \
        "$name" "$rc" "${errors:-?}" "${definite:-?}" "${indirect:-?}" "${possible:-?}" "${reachable:-?}" $((t1 - t0)))
    if [ "$rc" -eq 0 ] && [ "${errors:-x}" = 0 ]; then
        echo "ok   $line"
    else
        n_fail=$((n_fail + 1))
        echo "FAIL $line"
        grep -A 12 -m 3 "^==[0-9]*== [A-Z].*\(Invalid\|uninitialised\|definitely\|indirectly\|possibly\|Mismatched\|overlap\)" "$log" | head -n 40
        tail -n 3 "$TMP/$name.err"
    fi
}

echo "valgrind $(valgrind --version | sed 's/valgrind-//'), $("$BIN" --version)"
# long generation through context shifts
check run run -m "$MODEL" -p "Once upon a time" -n 200 -c 64 --temp 0 -t 2
# a passkey prompt shifted by --keep, and self-extend
check passkey passkey -m "$MODEL" -t 2 --key 11 --junk 30 --pos 2 -c 256 -b 64 --keep 16
check passkey-ga passkey -m "$MODEL" -t 2 --key 11 --junk 30 --pos 2 -c 256 -b 64 --keep 16 --grp-attn-n 2
# 4 clients, a fragmenting cache with defrag (tests/parallel_test.sh FRAG)
check parallel parallel -m "$MODEL" -np 4 -ns 16 -c 320 -n 64 --temp 0 -t 2
# golden scenarios: shifts, defrag, several sequences, quantized cache
for g in context_shift_f32 context_shift_q8_0 defrag multi_seq; do
    check "replay-$g" replay "$SHARED/golden/$g.json" --models "$MODELS" -q -t 2
done
check perplexity perplexity -m "$MODEL" -f "$STORY" -c 128 -b 128 -t 2
if [ "$n_fail" -eq 0 ]; then
    echo "valgrind: all commands clean"
    exit 0
fi
echo "valgrind: $n_fail command(s) failed"
exit 1
