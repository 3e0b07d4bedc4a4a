#!/usr/bin/env bash
# Quantization agreement table: KL divergence of every quantization of one
# generated model against its F16 base, as llama-perplexity --kl-divergence
# measures it (ctxshift perplexity --kl-divergence-base / --kl-divergence).
#
#   bench/kld_table.sh [--preset 110m] [--types "llama:Q8_0 Q4_K_M ..."] [--chunks 16] [-c 512] [-t 2]
#
# The base is `ctxshift gen-model --preset P --type f16` with the Llama-2
# vocabulary of ../shared/models, the text docs/KV_CACHE_SPEC.md. Prints a
# markdown table: file size, mean KLD ± error, 99 % KLD, same top p, PPL ratio,
# then llama.cpp's mean KLD, same top p and PPL ratio for the same files:
# bench/peer/llama_kld.c (llama-perplexity's algorithm on node-llama-cpp's
# prebuilt libllama, built here with tests/cli_lib.sh peer_build) writes its
# own F16 base file and compares each file with it. Without bench/peer
# node_modules those columns read "n/a". Both engines run with -t THREADS.
# On random-weight models this measures how closely each quantization follows
# the F16 computation (agreement), not the quality a trained model keeps.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
ctxshift="${CTXSHIFT:-$root/build/release/ctxshift}"
shared="${SHARED_MODELS:-$root/../shared/models}"
tmp_root="${CS_TMP:-/tmp}"
preset=110m
types="llama:Q8_0 llama:Q6_K Q5_K_M Q5_K_S llama:Q5_1 llama:Q5_0 Q4_K_M Q4_K_S llama:Q4_1 llama:Q4_0 llama:IQ4_NL llama:IQ4_XS Q3_K_L Q3_K_M Q3_K_S llama:Q2_K"
chunks=16
ctx=512
threads=2
die() { echo "kld_table.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) preset="${2:?}"; shift 2 ;;
    --types) types="${2:?}"; shift 2 ;;
    --chunks) chunks="${2:?}"; shift 2 ;;
    -c) ctx="${2:?}"; shift 2 ;;
    -t) threads="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
[[ -x "$ctxshift" ]] || die "$ctxshift not found: run 'make' first"
vocab="$shared/ggml-vocab-llama-spm.gguf"
[[ -f "$vocab" ]] || die "the Llama vocabulary $vocab is missing (set SHARED_MODELS)"
dir="$tmp_root/ctxshift-kld-$preset"
mkdir -p "$dir"
base="$dir/f16.gguf"
[[ -f "$base" ]] || "$ctxshift" gen-model --preset "$preset" --type f16 --vocab "$vocab" -o "$base" >&2
text="$root/docs/KV_CACHE_SPEC.md"
"$ctxshift" perplexity -m "$base" -f "$text" -c "$ctx" -b "$ctx" --chunks "$chunks" -t "$threads" \
  --kl-divergence-base "$dir/base.kld" >/dev/null 2>&1 || die "base run failed"

# llama.cpp's side: llama_kld built against the bundled headers, its own base.
TMP="$dir"
# shellcheck source=tests/cli_lib.sh
. "$root/tests/cli_lib.sh"
llama_kld="$dir/llama_kld"
have_peer=0
if [[ -f "$PEER_BINS/libllama.v0.4.0.so" && -f "$PEER_BUNDLE" ]] &&
  peer_build "$llama_kld" "$root/bench/peer/llama_kld.c"; then
  "$llama_kld" "$PEER_BINS" -m "$base" -f "$text" -c "$ctx" -b "$ctx" --chunks "$chunks" \
    -t "$threads" --kl-divergence-base "$dir/base-llama.kld" >/dev/null 2>&1 ||
    die "llama_kld base run failed"
  have_peer=1
else
  echo "kld_table.sh: bench/peer/node_modules or the llama_kld build missing: no llama.cpp columns" >&2
fi

# field OUTPUT: mean KLD, 99 % KLD, same top p, PPL ratio of one --kl-divergence run
field() {
  sed -n "s/^$1 *\(.*\)\$/\1/p" <<<"$2"
}
printf '| type | MiB | mean KLD | 99 %% KLD | same top p | PPL(Q)/PPL(base) | llama.cpp mean KLD | llama.cpp same top p | llama.cpp PPL(Q)/PPL(base) |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for t in $types; do
  q="$dir/$t.gguf"
  if [[ ! -f "$q" ]]; then
    "$ctxshift" quantize "$base" "$q" "$t" >/dev/null 2>&1 || { printf '| %s | (quantize failed) ||||||||\n' "$t"; continue; }
  fi
  out="$("$ctxshift" perplexity -m "$q" -t "$threads" --kl-divergence-base "$dir/base.kld" --kl-divergence 2>/dev/null)"
  mib=$(( $(stat -c %s "$q") / 1048576 ))
  kld=$(field 'Mean    KLD:' "$out")
  k99=$(field '99.0%   KLD:' "$out")
  top=$(field 'Same top p:' "$out")
  ratio=$(field 'Mean PPL(Q)\/PPL(base) *:' "$out")
  l_kld=n/a l_top=n/a l_ratio=n/a
  if [[ $have_peer == 1 ]]; then
    out="$("$llama_kld" "$PEER_BINS" -m "$q" -t "$threads" -b "$ctx" \
      --kl-divergence-base "$dir/base-llama.kld" --kl-divergence 2>/dev/null)"
    l_kld=$(field 'Mean    KLD:' "$out")
    l_top=$(field 'Same top p:' "$out")
    l_ratio=$(field 'Mean PPL(Q)\/PPL(base) *:' "$out")
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$mib" "$kld" "$k99" "$top" "$ratio" \
    "$l_kld" "$l_top" "$l_ratio"
done
