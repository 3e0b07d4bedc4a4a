#!/usr/bin/env bash
# run_fuzz.sh: one libFuzzer target for a bounded time over its seed corpus,
# as a ctest test (label fuzz, registered by the CS_FUZZ build).
# usage: tests/fuzz/run_fuzz.sh FUZZER SEEDS SECONDS ARTIFACTS [shared dir] [-- libFuzzer flags]
# FUZZER empty: the build found no libFuzzer runtime (clang with
# libclang-rt-14-dev): a reference skip (tests/cli_lib.sh: a failure when CI
# is set or the shared folder exists). New inputs go to a scratch folder, the
# committed seeds stay as they are; a crashing input is kept in ARTIFACTS.
# Exit status: 0 no crash, 1 a crash or a bad argument, 77 skipped.
set -u
FUZZER=${1-}
SEEDS=${2:?usage: run_fuzz.sh FUZZER SEEDS SECONDS ARTIFACTS [shared dir] [-- flags]}
SECONDS_MAX=${3:?seconds}
ARTIFACTS=${4:?artifact folder}
SHARED=${5:-}
shift $(($# < 5 ? $# : 5))
[ "${1:-}" = "--" ] && shift
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-fuzz.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/../cli_lib.sh"

if [ -z "$FUZZER" ] || [ ! -x "$FUZZER" ]; then
    skip "fuzz $(basename "$SEEDS")" "no libFuzzer: the fuzz build needs clang and libclang-rt-14-dev (make deps)"
    test_exit
fi
mkdir -p "$TMP/new" "$ARTIFACTS"
# -rss_limit_mb bounds what a hostile size field may allocate before the
# loader rejects it; -timeout catches a hang on one input.
if "$FUZZER" -max_total_time="$SECONDS_MAX" -timeout=30 -rss_limit_mb=2048 \
    -artifact_prefix="$ARTIFACTS/" -print_final_stats=1 "$@" "$TMP/new" "$SEEDS" >"$TMP/log" 2>&1; then
    runs=$(grep -m1 -o 'number_of_executed_units: *[0-9]*' "$TMP/log" | grep -o '[0-9]*$')
    ok "$(basename "$FUZZER"): ${runs:-?} inputs in ${SECONDS_MAX}s, no crash"
else
    tail -n 40 "$TMP/log"
    fail "$(basename "$FUZZER")" "crashed; the input is in $ARTIFACTS/ (rerun: $FUZZER FILE)"
fi
test_exit
