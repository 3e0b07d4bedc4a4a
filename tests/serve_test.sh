#!/usr/bin/env bash
# serve_test.sh: end-to-end tests of `ctxshift serve` (tests/serve/*.test.mjs)
# with node's built-in test runner and the official openai client pinned in
# tests/serve/package.json (npm ci there: scripts/install-deps.sh).
# Usage: serve_test.sh CTXSHIFT [SHARED_DIR]
# Every server binds 127.0.0.1 on a free port. Without node >= 20 or
# tests/serve/node_modules the test skips, which is a failure when strict
# (env CI set, or the shared folder exists: tests/cli_lib.sh).
# CTXSHIFT_SLOW (default 1; 4 when the binary is an ASan build) scales the
# tests' own waits. Exit status: 0 pass, 1 a failure, 77 skipped.
set -uo pipefail
bin=${1:?usage: serve_test.sh CTXSHIFT [SHARED_DIR]}
SHARED=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-serve-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=tests/cli_lib.sh
. "$root/tests/cli_lib.sh"
dir="$root/tests/serve"

if ! command -v node >/dev/null 2>&1 ||
    ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
    skip "serve" "node >= 20 not found"
    test_exit
fi
if [ ! -f "$dir/node_modules/openai/package.json" ]; then
    skip "serve" "tests/serve/node_modules missing; make deps (npm ci in tests/serve)"
    test_exit
fi
slow=${CTXSHIFT_SLOW:-1}
if [ -z "${CTXSHIFT_SLOW:-}" ] && nm -D "$bin" 2>/dev/null | grep -q __asan_init; then
    slow=4
fi
# Each file is bounded: a test that hangs fails after --test-timeout, and
# the whole run is bounded by ctest's TIMEOUT.
if CTXSHIFT="$bin" CTXSHIFT_SLOW="$slow" node --test --test-concurrency=1 \
    --test-timeout=$((300000 * slow)) --test-reporter=spec "$dir"/*.test.mjs >"$TMP/out" 2>&1; then
    cat "$TMP/out"
    ok "serve: $(grep -c '^ *✔' "$TMP/out") node tests passed"
else
    cat "$TMP/out"
    fail "serve" "node --test failed (above)"
fi
test_exit
