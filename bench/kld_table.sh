#!/usr/bin/env bash
# Quantization agreement table: KL divergence of every quantization of one
# generated model against its F16 base, as llama-perplexity --kl-divergence
# measures it (ctxshift perplexity --kl-divergence-base / --kl-divergence).
#
#   bench/kld_table.sh [--preset 110m] [--types "llama:Q8_0 Q4_K_M ..."] [--chunks 16] [-c 512]
#
# The base is `ctxshift gen-model --preset P --type f16` with the Llama-2
# vocabulary of ../shared/models, the text docs/KV_CACHE_SPEC.md. Prints a
# markdown table: file size, mean KLD ± error, 99 % KLD, same top p, PPL ratio.
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
die() { echo "kld_table.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) preset="${2:?}"; shift 2 ;;
    --types) types="${2:?}"; shift 2 ;;
    --chunks) chunks="${2:?}"; shift 2 ;;
    -c) ctx="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
"$ctxshift" perplexity -m "$base" -f "$text" -c "$ctx" -b "$ctx" --chunks "$chunks" \
  --kl-divergence-base "$dir/base.kld" >/dev/null 2>&1 || die "base run failed"

printf '| type | MiB | mean KLD | 99 %% KLD | same top p | PPL(Q)/PPL(base) |\n'
printf '|---|---|---|---|---|---|\n'
for t in $types; do
  q="$dir/$t.gguf"
  if [[ ! -f "$q" ]]; then
    "$ctxshift" quantize "$base" "$q" "$t" >/dev/null 2>&1 || { printf '| %s | (quantize failed) |||||\n' "$t"; continue; }
  fi
  out="$("$ctxshift" perplexity -m "$q" --kl-divergence-base "$dir/base.kld" --kl-divergence 2>/dev/null)"
  mib=$(( $(stat -c %s "$q") / 1048576 ))
  kld=$(echo "$out" | sed -n 's/^Mean    KLD: *\(.*\)$/\1/p')
  k99=$(echo "$out" | sed -n 's/^99.0%   KLD: *\(.*\)$/\1/p')
  top=$(echo "$out" | sed -n 's/^Same top p: *\(.*\)$/\1/p')
  ratio=$(echo "$out" | sed -n 's/^Mean PPL(Q)\/PPL(base) *: *\(.*\)$/\1/p')
  printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$mib" "$kld" "$k99" "$top" "$ratio"
done
