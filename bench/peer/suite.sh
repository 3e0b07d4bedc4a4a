#!/usr/bin/env bash
# The side-by-side speed suite: ctxshift vs llama.cpp (the prebuilt libllama
# that node-llama-cpp 3.21.1 ships, driven by bench/peer/native_bench the
# way llama-bench drives it) on the same generated models, same threads,
# interleaved, with the memory bandwidth ceiling measured in the same run.
#
#   bench/peer/suite.sh [-r 5] [-t "1 2"] [--shapes "110m 1.1b"]
#                       [--types "f16 q8_0 q4_0 q4_K_M Q3_K_M Q2_K IQ4_XS Q5_0"] [--no-depth] [--out DIR]
#                       [--isa best|avx2|avxvnni] [--ik PATH/llama-bench] [--no-pair]
#
# --isa avx2: both engines on their AVX2 paths (run it as its own invocation):
# ctxshift with CS_KERNELS=avx2 (its AVX2 kernel table; the suite checks
# `ctxshift --version` says so), llama.cpp with only libggml-cpu-haswell.so
# loaded (native_bench --ggml-cpu haswell: AVX2 + FMA + F16C, no AVX-512).
# --isa avxvnni: ctxshift's "avxvnni" table (AVX2 + AVX-VNNI prompt tiles)
# against llama.cpp's alderlake variant where the CPU has AVX-VNNI; on a
# CPU without it (this Zen 4) ctxshift runs the same kernels EVEX-encoded
# ("avxvnni_evex") and llama.cpp haswell, which the note and the table's
# last column say.
# The default, best, lets each engine pick its best path for this CPU.
# Either way the table's last column says what each engine ran: ctxshift's
# kernel table and llama.cpp's CPU features from llama_print_system_info.
#
# --ik PATH: the second peer, ik_llama.cpp's llama-bench (built outside the
# project from a snapshot, see docs/BENCH.md), run in the same rounds twice:
# with its default flags and with -rtr 1 (run-time repacking into its
# interleaved layouts); a second table compares ctxshift with both. Only
# with --isa best (it is built for this CPU).
#
# Steps:
#  1. models: `ctxshift gen-model --preset SHAPE --type T` (deterministic
#     random weights, Llama-2's 32000-token vocabulary from
#     ../shared/models/ggml-vocab-llama-spm.gguf) for f16 / q8_0 / q4_0, and
#     `ctxshift quantize F16 OUT q4_K_M` for q4_K_M (an upper-case name such as
#     Q3_K_M, Q2_K, IQ4_XS, Q5_0: llama.cpp's mix, `quantize ... llama:NAME`); written once to
#     $CS_TMP/ctxshift-suite (default /tmp; 1.1B needs about 4.5 GB).
#  2. `ctxshift bench mem -t 1,2`: read bandwidth (5 passes).
#  3. for every model and thread count, r rounds; each round runs ctxshift
#     bench and native_bench once each (pp512 then tg128, one repetition
#     after a 32-token warm-up), in alternating order, so both see the same
#     machine state, then `bench mem` at the row's thread count (3 passes).
#     Then (unless --no-pair) `ctxshift bench -p 0 -n 64 --mem-pair`: a
#     bench mem pass of the token's bytes after every generated token, each
#     token paired with the bandwidth of its own moment.
#     The table shows medians over the rounds; a row's tg ceiling uses the
#     best bandwidth pass of its own rounds.
#  4. speed at depth (110M Q4_0 and Q8_0, at each thread count): pp512 / tg128 with
#     2048 and 4096 tokens already cached, and ctxshift with 2048 live cells
#     spread over a 4096-cell window (every other cell a hole).
#  5. bandwidth again at the end (start and end are shown for reference).
# Output: markdown tables on stdout (bench/peer/suite_table.mjs), raw JSON
# kept in --out DIR (default: a temporary folder, removed).
#
# Needs: build/release/ctxshift (`make`), bench/peer/node_modules (`npm ci`
# in bench/peer, npm registry once), gcc + git (native_bench is built from
# one C file against the prebuilt libraries, see compare.sh), jq, node.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ctxshift="${CTXSHIFT:-$root/build/release/ctxshift}"
node_bin="${NODE:-node}"
shared="${SHARED_MODELS:-$root/../shared/models}"
tmp_root="${CS_TMP:-/tmp}"
models_dir="$tmp_root/ctxshift-suite"

reps=5
threads_list="1 2"
shapes="110m 1.1b"
types="f16 q8_0 q4_0 q4_K_M Q3_K_M Q2_K IQ4_XS Q5_0"
depth=1
out=""
isa=best
ik_bin=""
pair=1

die() { echo "suite.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -r) reps="${2:?}"; shift 2 ;;
    -t) threads_list="${2:?}"; shift 2 ;;
    --shapes) shapes="${2:?}"; shift 2 ;;
    --types) types="${2:?}"; shift 2 ;;
    --no-depth) depth=0; shift ;;
    --out) out="${2:?}"; shift 2 ;;
    --isa) isa="${2:?}"; shift 2 ;;
    --ik) ik_bin="${2:?}"; shift 2 ;;
    --no-pair) pair=0; shift ;;
    -h|--help) sed -n '2,51p' "$0"; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done

[[ -x "$ctxshift" ]] || die "$ctxshift not found: run 'make' first"
[[ -d "$here/node_modules/node-llama-cpp" ]] ||
  die "node-llama-cpp is not installed: run 'cd bench/peer && npm ci' (needs the npm registry once)"
vocab="$shared/ggml-vocab-llama-spm.gguf"
[[ -f "$vocab" ]] || die "the Llama vocabulary $vocab is missing (set SHARED_MODELS)"
command -v jq >/dev/null || die "jq is needed"
nb_isa=()
case "$isa" in
  best) ;;
  avx2)
    export CS_KERNELS=avx2
    nb_isa=(--ggml-cpu haswell)
    # CS_KERNELS falls back to the best table (with a warning) on a CPU
    # without AVX2; that run would be mislabelled, so stop instead
    "$ctxshift" --version | grep -q 'kernels = avx2' ||
      die "ctxshift does not run its avx2 table here: $("$ctxshift" --version)" ;;
  avxvnni)
    # ctxshift's AVX-VNNI table where the CPU has AVX-VNNI, else its EVEX
    # twin (the same kernels; AVX-512 VNNI CPUs such as Zen 4); llama.cpp's
    # alderlake variant (AVX2 + AVX-VNNI) where it loads, else haswell
    if grep -qw avx_vnni /proc/cpuinfo; then
      export CS_KERNELS=avxvnni
      nb_isa=(--ggml-cpu alderlake)
    else
      export CS_KERNELS=avxvnni_evex
      nb_isa=(--ggml-cpu haswell)
      echo "note: no AVX-VNNI on this CPU: ctxshift runs avxvnni_evex, llama.cpp haswell" >&2
    fi
    "$ctxshift" --version | grep -q "kernels = $CS_KERNELS " ||
      die "ctxshift does not run its $CS_KERNELS table here: $("$ctxshift" --version)" ;;
  *) die "--isa must be best, avx2 or avxvnni" ;;
esac
if [[ -n "$ik_bin" ]]; then
  [[ -x "$ik_bin" ]] || die "--ik: '$ik_bin' is not an executable llama-bench"
  [[ "$isa" == best ]] || die "--ik runs only with --isa best (ik_llama.cpp is built for this CPU)"
fi

export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true NODE_LLAMA_CPP_GPU=false
bins="$here/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
native_bin="$tmp_root/ctxshift-peer-native/native_bench"
if [[ ! -x "$native_bin" || "$here/native_bench.c" -nt "$native_bin" ]]; then
  # compare.sh knows how to build it; ask it for nothing but the build
  bash "$here/compare.sh" --build-native-only
fi
[[ -x "$native_bin" ]] || die "native_bench could not be built"

if [[ -z "$out" ]]; then
  out="$(mktemp -d "$tmp_root/ctxshift-suite-res.XXXXXX")"
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out" "$models_dir"
"$ctxshift" --version >"$out/ctxshift.version"
echo "$isa" >"$out/isa"

# ---- 1. models
model_path() { echo "$models_dir/$1-$2.gguf"; }
for s in $shapes; do
  f16="$(model_path "$s" f16)"
  for ty in $types; do
    m="$(model_path "$s" "$ty")"
    [[ -f "$m" ]] && continue
    echo "generating $m ..." >&2
    case "$ty" in
      f16|q8_0|q4_0|bf16|f32)
        "$ctxshift" gen-model --preset "$s" --type "$ty" --vocab "$vocab" -o "$m.part" >&2 ;;
      *)
        if [[ ! -f "$f16" ]]; then
          "$ctxshift" gen-model --preset "$s" --type f16 --vocab "$vocab" -o "$f16.part" >&2
          mv "$f16.part" "$f16"
        fi
        # An upper-case name is llama.cpp's mix of that name (Q2_K: the
        # Q2_K file type with its per-tensor rules), lower case the type.
        mix="$ty"
        [[ "$ty" =~ ^[A-Z] ]] && mix="llama:$ty"
        "$ctxshift" quantize "$f16" "$m.part" "$mix" >&2 ;;
    esac
    mv "$m.part" "$m"
  done
done

# ---- 2. bandwidth
tcsv="$(echo $threads_list | tr ' ' ',')"
"$ctxshift" bench mem -t "$tcsv,2" -r 5 --json >"$out/mem.start.json"

# ---- 3. pp512 / tg128, interleaved rounds
run_cs() { "$ctxshift" bench -m "$1" -t "$2" -r 1 --warmup-tokens 32 --json "${@:4}" >"$3"; }
run_nb() { "$native_bin" -m "$1" -t "$2" -r 1 --warmup-tokens 32 --backend-dir "$bins" \
  ${nb_isa[@]+"${nb_isa[@]}"} "${@:4}" >"$3"; }
# ik_llama.cpp's llama-bench: pp512 and tg128 in one process, one repetition
# after its own warm-up run; stdout is its JSON array (same fields as ours)
run_ik() { "$ik_bin" -m "$1" -t "$2" -p 512 -n 128 -r 1 -o json "${@:4}" >"$3" 2>/dev/null; }
round_ik() { # model threads id k: default flags and -rtr 1, order alternating
  local m="$1" t="$2" id="$3" k="$4"
  [[ -n "$ik_bin" ]] || return 0
  if (( k % 2 == 0 )); then
    run_ik "$m" "$t" "$out/$id.ik.$k.json" || echo "ik_llama.cpp failed: $id" >&2
    run_ik "$m" "$t" "$out/$id.ikr.$k.json" -rtr 1 || echo "ik_llama.cpp -rtr 1 failed: $id" >&2
  else
    run_ik "$m" "$t" "$out/$id.ikr.$k.json" -rtr 1 || echo "ik_llama.cpp -rtr 1 failed: $id" >&2
    run_ik "$m" "$t" "$out/$id.ik.$k.json" || echo "ik_llama.cpp failed: $id" >&2
  fi
}
round() { # model threads id k [extra ctxshift args] -- [extra native args]
  local m="$1" t="$2" id="$3" k="$4"; shift 4
  local cs_extra=() nb_extra=() side=cs
  for a in "$@"; do
    if [[ "$a" == "--" ]]; then side=nb; continue; fi
    if [[ $side == cs ]]; then cs_extra+=("$a"); else nb_extra+=("$a"); fi
  done
  if (( k % 2 == 0 )); then
    run_cs "$m" "$t" "$out/$id.cs.$k.json" "${cs_extra[@]}" || echo "ctxshift failed: $id" >&2
    [[ ${#nb_extra[@]} -eq 1 && "${nb_extra[0]}" == "none" ]] ||
      run_nb "$m" "$t" "$out/$id.nb.$k.json" "${nb_extra[@]}" || echo "native_bench failed: $id" >&2
  else
    [[ ${#nb_extra[@]} -eq 1 && "${nb_extra[0]}" == "none" ]] ||
      run_nb "$m" "$t" "$out/$id.nb.$k.json" "${nb_extra[@]}" || echo "native_bench failed: $id" >&2
    run_cs "$m" "$t" "$out/$id.cs.$k.json" "${cs_extra[@]}" || echo "ctxshift failed: $id" >&2
  fi
}

for s in $shapes; do
  for ty in $types; do
    m="$(model_path "$s" "$ty")"
    for t in $threads_list; do
      id="main.$s.$ty.t$t"
      echo "$m" >"$out/$id.model"
      for ((k = 0; k < reps; k++)); do
        echo "[$id round $((k + 1))/$reps]" >&2
        # the ik_llama.cpp runs go first in odd rounds, last in even ones
        if (( k % 2 == 1 )); then round_ik "$m" "$t" "$id" "$k"; fi
        round "$m" "$t" "$id" "$k"
        if (( k % 2 == 0 )); then round_ik "$m" "$t" "$id" "$k"; fi
        # the row's own ceiling: this host's bandwidth drifts by a third
        # within minutes, so a start / end figure misjudges the rows between
        "$ctxshift" bench mem -t "$t" -r 3 --json >"$out/$id.mem.$k.json" ||
          echo "bench mem failed: $id" >&2
        if (( pair )); then
          "$ctxshift" bench -m "$m" -t "$t" -r 1 -p 0 -n 64 --mem-pair --json \
            >"$out/$id.pair.$k.json" || echo "bench --mem-pair failed: $id" >&2
        fi
      done
    done
  done
done

# ---- 4. depth
if [[ $depth -eq 1 && " $shapes " == *" 110m "* ]]; then
  for ty in q4_0 q8_0; do
    [[ " $types " == *" $ty "* ]] || continue
    m="$(model_path 110m "$ty")"
    for t in $threads_list; do
      for d in 2048 4096; do
        id="depth.110m.$ty.d${d}t$t"
        echo "$m" >"$out/$id.model"
        for ((k = 0; k < reps; k++)); do
          echo "[$id round $((k + 1))/$reps]" >&2
          round "$m" "$t" "$id" "$k" -d "$d" -- -d "$d"
        done
      done
      id="depth.110m.$ty.d2048ht$t"
      echo "$m" >"$out/$id.model"
      for ((k = 0; k < reps; k++)); do
        echo "[$id round $((k + 1))/$reps]" >&2
        round "$m" "$t" "$id" "$k" -d 2048 --fragment -- none
      done
    done
  done
fi

# ---- 5. bandwidth again
"$ctxshift" bench mem -t "$tcsv,2" -r 5 --json >"$out/mem.end.json"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "llama.cpp: node-llama-cpp $(jq -r .version "$here/node_modules/node-llama-cpp/package.json") prebuilt CPU libllama via bench/peer/native_bench (persistent thread pool, flash attention off, like llama-bench)"
echo "engines' CPU paths (--isa $isa): ctxshift $(sed -n 's/.*(\(kernels = [a-z0-9_]*\).*/\1/p' "$out/ctxshift.version")${CS_KERNELS:+ (CS_KERNELS=$CS_KERNELS)}; llama.cpp ${nb_isa[*]:-ggml_backend_load_all (best variant)}"
if [[ -n "$ik_bin" ]]; then
  ik_ver="$(jq -r '.[0].build_commit // "?"' "$(ls "$out"/*.ik.0.json | head -1)" 2>/dev/null || echo "?")"
  echo "ik_llama.cpp: $ik_bin (build commit $ik_ver), its llama-bench -p 512 -n 128 -r 1, default flags and -rtr 1"
fi
echo "medians of $reps interleaved rounds; ratio = ctxshift / llama.cpp (> 1: ctxshift faster)"
echo
"$node_bin" "$here/suite_table.mjs" "$out"
