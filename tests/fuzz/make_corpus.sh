#!/usr/bin/env bash
# make_corpus.sh: writes the committed seed corpora of the fuzz targets.
# usage: tests/fuzz/make_corpus.sh CTXSHIFT [OUTDIR]   (OUTDIR: tests/fuzz/corpus)
# gguf/: three one-layer random models (gen-model, 32 wide, the first 64
# tokens of the bundled vocabulary) in f16, q8_0 and q4_0, 11-30 KB each, so
# that libFuzzer's mutations start from files the loader accepts.
# tokenizer/: short texts with spaces, UTF-8, byte fallback and special tokens.
# state/: seq1.bin and whole.bin are written by the fuzz_state target itself
# (CS_FUZZ_STATE_SEEDS=DIR fuzz_state -runs=0 DIR); regress-*.bin are its findings.
# serve_request/: request bodies of the server's test matrix, each after two
# bytes: the route (0 /completion, 1 /v1/completions, 2 chat) and the chat format.
set -euo pipefail
bin=${1:?usage: make_corpus.sh CTXSHIFT [OUTDIR]}
out=${2:-$(cd "$(dirname "$0")" && pwd)/corpus}
mkdir -p "$out/gguf" "$out/tokenizer" "$out/serve_request"
for t in f16 q8_0 q4_0; do
    "$bin" gen-model -o "$out/gguf/tiny-$t.gguf" --type "$t" --n-embd 32 --n-layer 1 \
        --n-head 2 --n-head-kv 1 --n-ff 64 --n-ctx 64 --n-vocab 64 --seed 1 2>/dev/null
done
printf 'Once upon a time' >"$out/tokenizer/story.txt"
printf '  leading spaces and trailing  \ttabs\nnewlines\n\n' >"$out/tokenizer/spaces.txt"
printf 'caf\xc3\xa9 na\xc3\xafve \xf0\x9f\xa6\x99 \xe6\x88\x91 \xff\xfe bad bytes' >"$out/tokenizer/utf8.txt"
printf '<s>Hello</s><unk> <s> </s>' >"$out/tokenizer/special.txt"
r="$out/serve_request"
printf '\x00\x00{"prompt":"Once upon a time","n_predict":8,"temperature":0}' >"$r/native.bin"
printf '\x01\x00{"prompt":[1,2,3,"text",4],"max_tokens":4,"logprobs":3,"stop":["a","bb"],"seed":7}' >"$r/completion.bin"
printf '\x02\x00{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi <|im_end|>"}],"max_tokens":8,"logit_bias":{"12":-100},"top_logprobs":2,"logprobs":true}' >"$r/chat_chatml.bin"
printf '\x02\x17{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null},{"role":"developer","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}' >"$r/chat_parts.bin"
printf '\x00\x00{"prompt":"x","n":2}' >"$r/bad_n.bin"
printf '\x01\x00{"prompt":"x","temperature":"hot","top_p":2}' >"$r/bad_types.bin"
printf '\x02\x05{"messages":[{"role":"tool","content":"x"}]}' >"$r/bad_role.bin"
printf '\x00\x00{"prompt":"x","logit_bias":[[1,false],[2,3.5]],"id_slot":9,"n_keep":-1}' >"$r/bias_pairs.bin"
