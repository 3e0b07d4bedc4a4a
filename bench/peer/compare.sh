#!/usr/bin/env bash
# Side-by-side CPU speed: ctxshift vs llama.cpp (prebuilt, via node-llama-cpp
# 3.21.1) on the same models, in the same run, as ratios.
#
#   bench/peer/compare.sh [-r R] [-p P] [-n N] [-t "1 2"] [--fa off|on|auto]
#                         [--no-native] [--with-110m] [MODEL.gguf ...]
#   bench/peer/compare.sh --generate
#   bench/peer/compare.sh --build-native-only   (used by suite.sh)
#
# Bench mode: for every model and thread count, runs `ctxshift bench --json`,
# bench/peer/native_bench (llama-bench's loop on node-llama-cpp's prebuilt
# libllama, persistent thread pool) and bench/peer/llama_bench.mjs (the same
# libllama through node-llama-cpp's JS API) back to back; the order rotates
# from one set to the next so no side always runs on a warmer machine. Then
# prints one markdown table (bench/peer/table.mjs). The ratio is ctxshift /
# native_bench. native_bench is compiled here from one C file against the
# headers of the llama.cpp source node-llama-cpp bundles (gcc and git needed,
# no network); --no-native skips it and the ratio uses the node run's
# llama.cpp perf counters instead. Why native_bench matters: node-llama-cpp
# attaches no thread pool, so at 2+ threads every decode spawns threads, which
# on this VM makes its tg 50-100x slower than llama.cpp really is.
#
# Default models: the bundled models/stories260K-f32.gguf plus the f16/q8_0/q4_0 variants in
# /work/shared/models when present; --with-110m adds a generated 110M-parameter
# Q8_0 model (ctxshift gen-model, Llama-2 SPM vocab), written once to
# $CS_TMP (default /tmp). Positional arguments replace the default list.
#
# --generate: prints node-llama-cpp's greedy (temperature 0) 32-token
# continuation of "Once upon a time" for each stories260K file and checks it
# against the reference text in /work/shared/models/README.md.
#
# Environment: CTXSHIFT (default build/release/ctxshift), NODE (default node),
# SHARED_MODELS (default /work/shared/models), CS_TMP (default /tmp),
# KEEP_RESULTS=DIR to keep the raw JSON in DIR.
# Needs `npm ci` in bench/peer once (npm registry only); after that nothing
# touches the network.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ctxshift="${CTXSHIFT:-$root/build/release/ctxshift}"
node_bin="${NODE:-node}"
shared="${SHARED_MODELS:-/work/shared/models}"
tmp_root="${CS_TMP:-/tmp}"

reps=5
n_prompt=512
n_gen=128
threads_list="1 2"
fa=off
native=1
with_110m=0
generate=0
build_only=0
models=()

die() { echo "compare.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -r) reps="${2:?}"; shift 2 ;;
    -p) n_prompt="${2:?}"; shift 2 ;;
    -n) n_gen="${2:?}"; shift 2 ;;
    -t) threads_list="${2:?}"; shift 2 ;;
    --fa) fa="${2:?}"; shift 2 ;;
    --no-native) native=0; shift ;;
    --with-110m) with_110m=1; shift ;;
    --generate) generate=1; shift ;;
    --build-native-only) build_only=1; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    -*) die "unknown option '$1'" ;;
    *) models+=("$1"); shift ;;
  esac
done

[[ -d "$here/node_modules/node-llama-cpp" ]] ||
  die "node-llama-cpp is not installed: run 'cd bench/peer && npm ci' (needs the npm registry once)"

# Keep node-llama-cpp from ever trying to download or build llama.cpp; the
# script also passes build: "never", skipDownload: true to getLlama().
export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
export NODE_LLAMA_CPP_GPU=false

stories_files() {
  local f
  [[ -f "$root/models/stories260K-f32.gguf" ]] && echo "$root/models/stories260K-f32.gguf"
  for f in f16 q8_0 q4_0; do
    [[ -f "$shared/stories260K-$f.gguf" ]] && echo "$shared/stories260K-$f.gguf"
  done
  return 0
}

# Build native_bench once per node-llama-cpp install: headers come from the
# llama.cpp git bundle inside the npm package, libraries are the prebuilt ones.
bins="$here/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
native_dir="$tmp_root/ctxshift-peer-native"
native_bin="$native_dir/native_bench"
if [[ $native -eq 1 && ( ! -x "$native_bin" || "$here/native_bench.c" -nt "$native_bin" ) ]]; then
  echo "building $native_bin ..." >&2
  rm -rf "$native_dir/src"
  mkdir -p "$native_dir"
  if git clone -q --no-checkout "$here/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$native_dir/src" &&
     git -C "$native_dir/src" -c advice.detachedHead=false checkout -q HEAD -- include ggml/include &&
     ${CC:-gcc} -std=c11 -O2 -Wall -Wextra -Werror -I"$native_dir/src/include" -I"$native_dir/src/ggml/include" \
       "$here/native_bench.c" -o "$native_bin" "$bins/libllama.v0.4.0.so" "$bins/libggml.v0.4.0.so" \
       "$bins/libggml-base.so" -Wl,-rpath,"$bins" -lm; then
    rm -rf "$native_dir/src"
  else
    echo "compare.sh: could not build native_bench; falling back to node-only numbers" >&2
    native=0
  fi
fi

if [[ $build_only -eq 1 ]]; then
  [[ $native -eq 1 ]] || exit 1
  exit 0
fi

if [[ $generate -eq 1 ]]; then
  # Reference continuations, from /work/shared/models/README.md (llama.cpp
  # build 4748, greedy, 32 tokens).
  ref_full='Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw'
  ref_q4='Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, she fou'
  status=0
  while IFS= read -r m; do
    out="$("$node_bin" "$here/llama_bench.mjs" -m "$m" --generate --prompt "Once upon a time" --n-predict 32 -t 1)"
    text="$(printf '%s' "$out" | jq -r .text)"
    ref="$ref_full"
    [[ "$m" == *q4_0* ]] && ref="$ref_q4"
    verdict="matches README"
    [[ "$text" == "$ref" ]] || { verdict="DIFFERS from README: $ref"; status=1; }
    printf '%s\n  tokens: %s\n  text:   %s\n  %s\n' "$(basename "$m")" \
      "$(printf '%s' "$out" | jq -c '.prompt_tokens + .tokens')" "$text" "$verdict"
  done < <(stories_files)
  exit $status
fi

if [[ ${#models[@]} -eq 0 ]]; then
  mapfile -t models < <(stories_files)
  if [[ $with_110m -eq 1 ]]; then
    big="$tmp_root/ctxshift-110m-q8_0.gguf"
    if [[ ! -f "$big" ]]; then
      echo "generating $big ..." >&2
      "$ctxshift" gen-model --preset 110m --type q8_0 \
        --vocab "$shared/ggml-vocab-llama-spm.gguf" -o "$big.part" && mv "$big.part" "$big" ||
        echo "compare.sh: gen-model failed; skipping the 110M model" >&2
    fi
    [[ -f "$big" ]] && models+=("$big")
  fi
fi
[[ ${#models[@]} -gt 0 ]] || die "no models found"

have_ctxshift=1
[[ -x "$ctxshift" ]] || { have_ctxshift=0; echo "compare.sh: $ctxshift not found; ctxshift column will be n/a" >&2; }

results="${KEEP_RESULTS:-}"
if [[ -z "$results" ]]; then
  results="$(mktemp -d "$tmp_root/ctxshift-peer.XXXXXX")"
  trap 'rm -rf "$results"' EXIT
else
  mkdir -p "$results"
fi

run_ctxshift() { # model threads outfile
  [[ $have_ctxshift -eq 1 ]] || return 0
  "$ctxshift" bench -m "$1" -p "$n_prompt" -n "$n_gen" -t "$2" -r "$reps" --json >"$3" ||
    echo "compare.sh: ctxshift bench failed on $(basename "$1") t=$2" >&2
}
run_llama() { # model threads outfile
  "$node_bin" "$here/llama_bench.mjs" -m "$1" -p "$n_prompt" -n "$n_gen" -t "$2" -r "$reps" --fa "$fa" >"$3" ||
    echo "compare.sh: llama_bench.mjs failed on $(basename "$1") t=$2" >&2
}
run_native() { # model threads outfile
  [[ $native -eq 1 ]] || return 0
  "$native_bin" -m "$1" -p "$n_prompt" -n "$n_gen" -t "$2" -r "$reps" --fa "$fa" --backend-dir "$bins" >"$3" ||
    echo "compare.sh: native_bench failed on $(basename "$1") t=$2" >&2
}

pair=0
for i in "${!models[@]}"; do
  m="${models[$i]}"
  [[ -f "$m" ]] || die "model not found: $m"
  for t in $threads_list; do
    id="$i-t$t"
    echo "$m" >"$results/$id.model"
    echo "[$((pair + 1))] $(basename "$m") t=$t" >&2
    case $((pair % 3)) in
      0) run_ctxshift "$m" "$t" "$results/$id.ctxshift.json"
         run_native "$m" "$t" "$results/$id.native.json"
         run_llama "$m" "$t" "$results/$id.llama.json" ;;
      1) run_native "$m" "$t" "$results/$id.native.json"
         run_llama "$m" "$t" "$results/$id.llama.json"
         run_ctxshift "$m" "$t" "$results/$id.ctxshift.json" ;;
      2) run_llama "$m" "$t" "$results/$id.llama.json"
         run_ctxshift "$m" "$t" "$results/$id.ctxshift.json"
         run_native "$m" "$t" "$results/$id.native.json" ;;
    esac
    pair=$((pair + 1))
  done
done

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); pp$n_prompt / tg$n_gen, $reps reps, mean ± sd"
ref="native_bench (persistent thread pool, like llama-bench)"
[[ $native -eq 1 ]] || ref="llama.cpp perf counters of the node run"
echo "llama.cpp: node-llama-cpp $(jq -r .version "$here/node_modules/node-llama-cpp/package.json") prebuilt CPU binaries, flash attention $fa; ratio = ctxshift / $ref (> 1: ctxshift faster)"
echo
"$node_bin" "$here/table.mjs" "$results"
