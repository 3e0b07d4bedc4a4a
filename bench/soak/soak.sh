#!/usr/bin/env bash
# bench/soak/soak.sh: the bounded soak of `ctxshift serve` (soak.mjs: 16
# clients, shared prefixes, cancels, long chats through context shifts and
# defrags; RSS, errors and greedy answers checked). Not part of `make test`.
#
# usage: bash bench/soak/soak.sh [--minutes 10] [other soak.mjs options]
# env:   CTXSHIFT (default build/release/ctxshift, built here when missing)
# Exit status: soak.mjs's (0 pass, 1 a check failed), 2 setup error.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CTXSHIFT:-$root/build/release/ctxshift}
if ! command -v node >/dev/null 2>&1 ||
    ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
    echo "error: node >= 20 is needed" >&2
    exit 2
fi
if [ ! -x "$bin" ]; then
    cmake -S "$root" -B "$root/build/release" -DCMAKE_BUILD_TYPE=Release >/dev/null &&
        cmake --build "$root/build/release" -j2 --target ctxshift >/dev/null || exit 2
fi
exec node "$root/bench/soak/soak.mjs" --bin "$bin" "$@"
