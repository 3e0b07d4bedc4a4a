#!/usr/bin/env bash
# make_corpus.sh: writes the committed seed corpora of the fuzz targets.
# usage: tests/fuzz/make_corpus.sh CTXSHIFT [OUTDIR]   (OUTDIR: tests/fuzz/corpus)
# gguf/: three one-layer random models (gen-model, 32 wide, the first 64
# tokens of the bundled vocabulary) in f16, q8_0 and q4_0, 11-30 KB each, so
# that libFuzzer's mutations start from files the loader accepts.
# tokenizer/: short texts with spaces, UTF-8, byte fallback and special tokens,
# each after two bytes: the vocabulary (0-6, fuzz_tokenizer.c) and the flags
# (3: add_special and parse_special for the special tokens, else 0).
# state/: seq1.bin and whole.bin are written by the fuzz_state target itself
# (CS_FUZZ_STATE_SEEDS=DIR fuzz_state -runs=0 DIR); regress-*.bin are its findings.
# serve_request/: request bodies of the server's test matrix, each after two
# bytes: the route (0 /completion, 1 /v1/completions, 2 chat) and the chat format.
# replay/: small `ctxshift replay` scenarios (the golden format, max_logit rows
# instead of whole logits rows) with every op, two runs, checks, and a few
# malformed steps.
# ops/: hand-written operation sequences for fuzz_ops (the byte layout is in
# fuzz_ops.c): a shared prefix with a shift, split, defrag and state round
# trips; a full cache with holes and automatic defrag; edge positions.
set -euo pipefail
bin=${1:?usage: make_corpus.sh CTXSHIFT [OUTDIR]}
out=${2:-$(cd "$(dirname "$0")" && pwd)/corpus}
mkdir -p "$out/gguf" "$out/tokenizer" "$out/serve_request" "$out/replay" "$out/ops"
for t in f16 q8_0 q4_0; do
    "$bin" gen-model -o "$out/gguf/tiny-$t.gguf" --type "$t" --n-embd 32 --n-layer 1 \
        --n-head 2 --n-head-kv 1 --n-ff 64 --n-ctx 64 --n-vocab 64 --seed 1 2>/dev/null
done
for k in 0 1 2 3 4 5 6; do
    t="$out/tokenizer/v$k"
    printf "\\x0${k}\\x00"'Once upon a time, there was 12 cats.' >"$t-story.bin"
    printf "\\x0${k}\\x00"'  leading spaces and trailing  \ttabs\nnewlines\n\n' >"$t-spaces.bin"
    printf "\\x0${k}\\x00"'caf\xc3\xa9 na\xc3\xafve \xf0\x9f\xa6\x99 \xe6\x88\x91 \xff\xfe bad bytes' >"$t-utf8.bin"
    printf "\\x0${k}\\x03"'<s>Hello</s><unk> <|im_start|>user<|im_end|> <|user|> <|eot_id|>' >"$t-special.bin"
done
r="$out/serve_request"
printf '\x00\x00{"prompt":"Once upon a time","n_predict":8,"temperature":0}' >"$r/native.bin"
printf '\x01\x00{"prompt":[1,2,3,"text",4],"max_tokens":4,"logprobs":3,"stop":["a","bb"],"seed":7}' >"$r/completion.bin"
printf '\x02\x00{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi <|im_end|>"}],"max_tokens":8,"logit_bias":{"12":-100},"top_logprobs":2,"logprobs":true}' >"$r/chat_chatml.bin"
printf '\x02\x17{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null},{"role":"developer","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}' >"$r/chat_parts.bin"
printf '\x00\x00{"prompt":"x","n":2}' >"$r/bad_n.bin"
printf '\x01\x00{"prompt":"x","temperature":"hot","top_p":2}' >"$r/bad_types.bin"
printf '\x02\x05{"messages":[{"role":"tool","content":"x"}]}' >"$r/bad_role.bin"
printf '\x00\x00{"prompt":"x","logit_bias":[[1,false],[2,3.5]],"id_slot":9,"n_keep":-1}' >"$r/bias_pairs.bin"
p="$out/replay"
H='{"format":"llama-kv-golden/1","name":"fuzz","model":"stories260K-f32.gguf","runs":['
printf '%s' "$H"'{"name":"main","context":{"n_ctx":32,"n_batch":8,"n_ubatch":4,"n_seq_max":2},"steps":[
{"op":"decode","tokens":[1,403,407,261,378],"pos":[0,1,2,3,4],"seq":[[0],[0],[0],[0],[0]],"out":[0,4],"logits":false,"result":{"ret":0,"rows":[{"row":0,"argmax":403,"max_logit":9.5},{"row":4,"argmax":432,"max_logit":11.25}]}},
{"op":"decode","tokens":[432],"pos":[5],"seq":[[0]],"out":[0],"greedy":[0],"logits":false,"result":{"ret":0,"rows":[{"row":0,"argmax":383,"max_logit":10}]}},
{"op":"pos_max","seq":0,"result":{"value":5}},{"op":"used_cells","result":{"value":6}},{"op":"token_count","result":{"value":6}},
{"op":"seq_rm","seq":0,"p0":4,"p1":-1,"result":{"ret":true}},
{"op":"seq_add","seq":0,"p0":2,"p1":-1,"delta":-1},{"op":"update"},
{"op":"cells","result":{"n_cells":32,"pos":[0,1,1,2,-1,-1],"seqs":[[0],[0],[0],[0],[],[]]}}]},
{"name":"other","context":{"n_ctx":16,"type_k":"f16","type_v":"q8_0"},"steps":[{"op":"decode","tokens":[1,2],"pos":[0,1],"seq":[[0],[0]],"out":[1],"result":{"ret":0,"rows":[{"row":1,"argmax":2,"logits":[0.5,1.5,2.5]}]}}]}],
"checks":[{"what":"same row","a":{"run":0,"step":0,"row_index":1},"b":{"run":0,"step":1,"row_index":0},"max_abs_diff":0}]}' >"$p/basic.json"
printf '%s' "$H"'{"name":"multi","context":{"n_ctx":64,"n_batch":16,"n_seq_max":4},"steps":[
{"op":"decode","tokens":[1,10,20,30,40,50,60,70],"pos":[0,1,2,3,4,5,6,7],"seq":[[0,1,2,3],[0,1,2,3],[0,1,2,3],[0,1,2,3],[0],[0],[0],[0]],"out":[3,7],"logits":false,"result":{"ret":0,"rows":[{"row":3,"argmax":1,"max_logit":1},{"row":7,"argmax":1,"max_logit":1}]}},
{"op":"seq_cp","src":0,"dst":1,"p0":4,"p1":-1},{"op":"seq_cp","src":0,"dst":2,"p0":-1,"p1":-1},
{"op":"decode","tokens":[5,6,7],"pos":[8,8,4],"seq":[[1],[2],[3]],"out":[0,1,2],"logits":false,"result":{"ret":0,"rows":[{"row":0,"argmax":1,"max_logit":1},{"row":1,"argmax":1,"max_logit":1},{"row":2,"argmax":1,"max_logit":1}]}},
{"op":"seq_div","seq":1,"p0":0,"p1":-1,"d":2},{"op":"seq_keep","seq":1},{"op":"defrag"},{"op":"update"},
{"op":"pos_max","seq":3,"result":{"value":0}},{"op":"pos_max","seq":1,"result":{"value":4}},
{"op":"cells","result":{"n_cells":64,"pos":[0,0,1,1,2,2,3,3,4],"seqs":[[1],[1],[1],[1],[1],[1],[1],[1],[1]]}},
{"op":"decode","tokens":[9],"pos":[5],"seq":[[1]],"out":[0],"greedy":[0],"logits":false,"result":{"ret":0,"rows":[{"row":0,"argmax":1,"max_logit":1}]}}]}]}' >"$p/multi.json"
printf '%s' "$H"'{"name":"bad","context":{"n_ctx":8},"steps":[{"op":"decode","tokens":[1,2,3],"pos":[0,1],"seq":[[0],[0],[0]],"out":[0]},{"op":"frobnicate"}]},
{"context":{"n_ctx":8},"steps":[{"op":"decode","tokens":[1],"pos":[0],"seq":[[70]],"out":[0]}]},
{"context":{"n_ctx":8},"steps":[{"op":"decode","tokens":[1,2],"pos":[0,1],"seq":[[0],[0]],"out":[1,0]}]},
{"context":{"n_ctx":8,"n_seq_max":1},"steps":[{"op":"decode","tokens":[600],"pos":[2147483647],"seq":[[5]],"out":[0]},{"op":"seq_add","seq":0,"p0":0,"p1":5,"delta":2147483647},{"op":"seq_rm","seq":9,"p0":-1,"p1":-1},{"op":"cells","result":{"n_cells":8,"pos":[0],"seqs":[[63]]}},{"op":"pos_max","seq":-1,"result":{"value":-1}}]},
{"context":{"n_ctx":4},"steps":[{"op":"decode","tokens":[1,2,3,4,5,6],"pos":[0,1,2,3,4,5],"seq":[[0],[0],[0],[0],[0],[0]],"out":[5],"result":{"ret":1}}]}]}' >"$p/malformed.json"
o="$out/ops"
# ctx 0: decode seq 0 x8; seq_cp 0->1; decode seq 1 x4; seq_rm 0 [2,5); seq_add 1 [4,inf) -2;
# update; seq_own 1; defrag; seq state 1 -> 2 (cleared); whole state; seq_div 1 /2; seq_keep 1
printf '\x00\x00\x07\x01\x02\x03\x04\x05\x06\x07\x08\x04\x01\x02\x00\x00\x00\x0b\x09\x0a\x0b\x0c\x03\x01\x03\x06\x06\x02\x05\x00\x12\x0b\x09\x02\x00\x00\x0a\x0c\x19\x0e\x08\x02\x00\x00\x03\x05\x02' >"$o/shared_prefix.bin"
# ctx 1: 4 rows in chosen sets; fill with 3 x 8 of seqs 1-3; no room for 8 more; holes; decode again
printf '\x01\x00\x23\x05\x01\x03\x06\x02\x05\x07\x03\x0f\x08\x04\x01\x00\x0f\x01\x01\x01\x01\x01\x01\x01\x01\x00\x17\x02\x02\x02\x02\x02\x02\x02\x02\x00\x1f\x03\x03\x03\x03\x03\x03\x03\x03\x00\x07\x09\x09\x09\x09\x09\x09\x09\x09\x03\x03\x03\x0a\x03\x04\x00\x00\x00\x07\x04\x04\x04\x04\x04\x04\x04\x04\x0b\x0a' >"$o/full_holes.bin"
# ctx 0: a token at CS_POS_MAX; seq_add +big; position INT32_MAX refused; seq state; seq_rm all
printf '\x00\x00\x20\x05\xf2\x01\x06\x01\x00\x00\xfa\x00\x20\x05\xf4\x01\x0c\x00\x0d\x14\x03\x00\x00\x00\x0e' >"$o/edges.bin"
