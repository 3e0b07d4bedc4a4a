#!/usr/bin/env bash
# quantize_test.sh: `ctxshift quantize` end to end, optionally against
# llama.cpp (bench/peer). Usage: quantize_test.sh CTXSHIFT [OUTDIR]
# Writes a q4_K_M file of a 256-wide random model and of the bundled model,
# and checks that ctxshift's greedy tokens equal llama.cpp's (when node and
# bench/peer/node_modules are there; skipped otherwise, a failure when CI is
# set or the shared folder, CS_SHARED_DIR or ../shared, exists: see
# tests/cli_lib.sh). `make deps` runs `npm ci` in bench/peer when node is there.
# Exit status: 0 same text, 1 a difference or error, 77 skipped.
set -euo pipefail
bin=${1:?usage: quantize_test.sh CTXSHIFT [OUTDIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${2:-}" ]; then
    out=$2
else
    out=$(mktemp -d "${TMPDIR:-/tmp}/cs-quantize-test.XXXXXX")
    trap 'rm -rf "$out"' EXIT
fi
SHARED=${CS_SHARED_DIR:-$root/../shared}
TMP=$out
# shellcheck source=tests/cli_lib.sh
. "$root/tests/cli_lib.sh"
"$bin" gen-model -o "$out/g256.gguf" --n-embd 256 --n-ff 512 --n-layer 4 --n-head 4 \
    --n-head-kv 2 --seed 7 2>/dev/null
"$bin" quantize "$out/g256.gguf" "$out/g256-q4_K_M.gguf" q4_K_M
"$bin" quantize "$root/models/stories260K-f32.gguf" "$out/s-q4_K_M.gguf" q4_K_M
if ! command -v node >/dev/null || [ ! -d "$root/bench/peer/node_modules" ]; then
    skip "quantize_test: comparison with llama.cpp" \
        "node or bench/peer/node_modules missing; node >= 20, then make deps"
    test_exit
fi
for f in g256-q4_K_M s-q4_K_M; do
    # Random weights give byte tokens that are not valid UTF-8: decode ours the
    # way node decodes llama.cpp's (invalid bytes become U+FFFD).
    ours=$("$bin" run -m "$out/$f.gguf" -p "Once upon a time" -n 16 --temp 0 -t 1 2>/dev/null |
        node -e 'const c=[];process.stdin.on("data",d=>c.push(d)).on("end",()=>process.stdout.write(Buffer.concat(c).toString("utf8")))')
    # node-llama-cpp rejects a CI value other than true/false/1/0 (CI= included).
    theirs=$(cd "$root/bench/peer" && env -u CI node llama_bench.mjs -m "$out/$f.gguf" --generate \
        --n-predict 16 -t 1 | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).text))')
    if [ "$ours" != "$theirs" ]; then
        echo "quantize_test: $f: ctxshift and llama.cpp differ:"
        echo "  ctxshift: $ours"
        echo "  llama.cpp: $theirs"
        exit 1
    fi
    echo "quantize_test: $f: same text as llama.cpp (16 greedy tokens)"
done
