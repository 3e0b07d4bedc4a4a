#!/usr/bin/env bash
# make_corpus.sh: writes the committed seed corpora of the fuzz targets.
# usage: tests/fuzz/make_corpus.sh CTXSHIFT [OUTDIR]   (OUTDIR: tests/fuzz/corpus)
# gguf/: three one-layer random models (gen-model, 32 wide, the first 64
# tokens of the bundled vocabulary) in f16, q8_0 and q4_0, 11-30 KB each, so
# that libFuzzer's mutations start from files the loader accepts.
# tokenizer/: short texts with spaces, UTF-8, byte fallback and special tokens.
set -euo pipefail
bin=${1:?usage: make_corpus.sh CTXSHIFT [OUTDIR]}
out=${2:-$(cd "$(dirname "$0")" && pwd)/corpus}
mkdir -p "$out/gguf" "$out/tokenizer"
for t in f16 q8_0 q4_0; do
    "$bin" gen-model -o "$out/gguf/tiny-$t.gguf" --type "$t" --n-embd 32 --n-layer 1 \
        --n-head 2 --n-head-kv 1 --n-ff 64 --n-ctx 64 --n-vocab 64 --seed 1 2>/dev/null
done
printf 'Once upon a time' >"$out/tokenizer/story.txt"
printf '  leading spaces and trailing  \ttabs\nnewlines\n\n' >"$out/tokenizer/spaces.txt"
printf 'caf\xc3\xa9 na\xc3\xafve \xf0\x9f\xa6\x99 \xe6\x88\x91 \xff\xfe bad bytes' >"$out/tokenizer/utf8.txt"
printf '<s>Hello</s><unk> <s> </s>' >"$out/tokenizer/special.txt"
