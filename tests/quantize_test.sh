#!/usr/bin/env bash
# quantize_test.sh: `ctxshift quantize` end to end, optionally against
# llama.cpp (bench/peer). Usage: quantize_test.sh CTXSHIFT [OUTDIR]
# Writes a q4_K_M file of a 256-wide random model and of the bundled model,
# and checks that ctxshift's greedy tokens equal llama.cpp's (when node and
# bench/peer/node_modules are there; skipped otherwise).
set -euo pipefail
bin=${1:?usage: quantize_test.sh CTXSHIFT [OUTDIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$(mktemp -d)}
"$bin" gen-model -o "$out/g256.gguf" --n-embd 256 --n-ff 512 --n-layer 4 --n-head 4 \
    --n-head-kv 2 --seed 7 2>/dev/null
"$bin" quantize "$out/g256.gguf" "$out/g256-q4_K_M.gguf" q4_K_M
"$bin" quantize "$root/models/stories260K-f32.gguf" "$out/s-q4_K_M.gguf" q4_K_M
if ! command -v node >/dev/null || [ ! -d "$root/bench/peer/node_modules" ]; then
    echo "quantize_test: llama.cpp peer not available; skipped the comparison"
    exit 0
fi
for f in g256-q4_K_M s-q4_K_M; do
    # Random weights give byte tokens that are not valid UTF-8: decode ours the
    # way node decodes llama.cpp's (invalid bytes become U+FFFD).
    ours=$("$bin" run -m "$out/$f.gguf" -p "Once upon a time" -n 16 --temp 0 -t 1 2>/dev/null |
        node -e 'const c=[];process.stdin.on("data",d=>c.push(d)).on("end",()=>process.stdout.write(Buffer.concat(c).toString("utf8")))')
    theirs=$(cd "$root/bench/peer" && node llama_bench.mjs -m "$out/$f.gguf" --generate \
        --n-predict 16 -t 1 | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).text))')
    if [ "$ours" != "$theirs" ]; then
        echo "quantize_test: $f: ctxshift and llama.cpp differ:"
        echo "  ctxshift: $ours"
        echo "  llama.cpp: $theirs"
        exit 1
    fi
    echo "quantize_test: $f: same text as llama.cpp (16 greedy tokens)"
done
