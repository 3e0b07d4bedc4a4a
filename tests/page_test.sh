#!/usr/bin/env bash
# page_test.sh: the page of `ctxshift serve` (tools/page) in headless
# Chromium: tests/page/page.test.mjs under `node --test`, with Debian's
# chromium driven by playwright-core (tests/page/node_modules, from
# scripts/install-deps.sh).
#
# usage: tests/page_test.sh <ctxshift binary> <source dir> <build dir> [shared dir]
#
# The screenshot is kept as <build dir>/page-test/page.png. Skips (a failure
# under CI, tests/cli_lib.sh) when chromium, node >= 20 or the npm packages
# are missing. Exit status: 0 passed, 1 failed, 77 skipped, 2 bad arguments.
set -u

if [ $# -lt 3 ]; then
    echo "usage: $0 <ctxshift binary> <source dir> <build dir> [shared dir]" >&2
    exit 2
fi
if [ ! -x "$1" ] || [ ! -d "$2" ]; then
    echo "error: '$1' is not an executable or '$2' not a folder" >&2
    exit 2
fi
mkdir -p "$3" || exit 2
# absolute: the test runs in tests/page
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
BUILD=$(cd "$3" && pwd)
# shellcheck disable=SC2034 # read by skip (tests/cli_lib.sh)
SHARED=${4:-}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cs-page-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

CHROMIUM=${CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}
if [ ! -x "$CHROMIUM" ]; then
    skip page "no chromium (Debian's chromium package; scripts/install-deps.sh installs it)"
elif ! command -v node >/dev/null 2>&1 ||
    ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
    skip page "node >= 20 not found"
elif [ ! -f "$SRC/tests/page/node_modules/playwright-core/package.json" ]; then
    skip page "tests/page/node_modules missing (run scripts/install-deps.sh)"
else
    out="$BUILD/page-test"
    mkdir -p "$out"
    rm -f "$out/page.png"
    if (cd "$SRC/tests/page" && CTXSHIFT=$BIN CHROMIUM=$CHROMIUM PAGE_OUT=$out TMPDIR=$TMP \
        node --test --test-reporter=spec page.test.mjs) >"$TMP/out" 2>&1; then
        cat "$TMP/out"
        ok "page (screenshot: $out/page.png)"
    else
        cat "$TMP/out"
        fail page "node --test tests/page/page.test.mjs failed"
    fi
fi
echo "$n_pass passed, $n_fail failed, $n_skip skipped"
test_exit
