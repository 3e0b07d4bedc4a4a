#!/usr/bin/env bash
# A/B speed check of two commits of ctxshift in the same run: both are built
# (Release, in temporary worktrees), then for every model and thread count
# they run `ctxshift bench` (pp512 and tg128) in alternating order, r rounds,
# so both see the same machine state. Prints medians and the ratio B/A.
# A structure-only change should keep every ratio within 0.95 .. 1.05.
#
#   bench/ab.sh [-r 5] [-t "1 2"] [--types "f16 q8_0 q4_0 q4_K_M"] A B
#
# A, B: commits (e.g. HEAD~3 HEAD). Models: the 110M shape from
# `ctxshift gen-model --preset 110m` with the Llama-2 vocabulary of
# ../shared/models (q4_K_M through `ctxshift quantize`), written once to
# $CS_TMP/ctxshift-ab (default /tmp). Needs git, cmake, jq.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
shared="${SHARED_MODELS:-$root/../shared/models}"
tmp_root="${CS_TMP:-/tmp}"
reps=5
threads_list="1 2"
types="f16 q8_0 q4_0 q4_K_M"
die() { echo "ab.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -r) reps="${2:?}"; shift 2 ;;
    -t) threads_list="${2:?}"; shift 2 ;;
    --types) types="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) die "unknown flag '$1'" ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || die "usage: bench/ab.sh [flags] A B"
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
vocab="$shared/ggml-vocab-llama-spm.gguf"
[[ -f "$vocab" ]] || die "the Llama vocabulary $vocab is missing (set SHARED_MODELS)"

work="$(mktemp -d "$tmp_root/ctxshift-ab.XXXXXX")"
cleanup() {
  for s in a b; do git -C "$root" worktree remove --force "$work/$s" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
declare -A bin
for s in a b; do
  rev="$1"; shift
  git -C "$root" worktree add -q --detach "$work/$s" "$rev"
  # the worktree sits in $work, so point CMake at the real shared folder
  cmake -S "$work/$s" -B "$work/$s/build" -DCMAKE_BUILD_TYPE=Release -DCS_BUILD_TESTS=OFF \
    -DCS_BUILD_BENCH=OFF -DCS_SHARED_DIR="$root/../shared" >/dev/null
  cmake --build "$work/$s/build" -j "$(nproc)" >/dev/null
  bin[$s]="$work/$s/build/ctxshift"
  echo "$s = $(git -C "$root" rev-parse --short "$rev") $(git -C "$root" log -1 --format=%s "$rev" | cut -c1-60)"
done

models="$tmp_root/ctxshift-ab-models"
mkdir -p "$models"
for t in $types; do
  f="$models/110m-$t.gguf"
  [[ -f "$f" ]] && continue
  if [[ "$t" == q4_K_M ]]; then
    [[ -f "$models/110m-f16.gguf" ]] ||
      "${bin[a]}" gen-model --preset 110m --type f16 --vocab "$vocab" -o "$models/110m-f16.gguf"
    "${bin[a]}" quantize "$models/110m-f16.gguf" "$f" q4_K_M >/dev/null
  else
    "${bin[a]}" gen-model --preset 110m --type "$t" --vocab "$vocab" -o "$f"
  fi
done

res="$work/res"
mkdir -p "$res"
for t in $types; do
  for th in $threads_list; do
    for ((r = 0; r < reps; r++)); do
      order="a b"
      ((r % 2)) && order="b a"
      for s in $order; do
        "${bin[$s]}" bench -m "$models/110m-$t.gguf" -t "$th" -r 1 -o json \
          >"$res/$t-$th-$s-$r.json"
      done
    done
  done
done

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
printf '| model | threads | test | A t/s | B t/s | B/A |\n|---|---|---|---|---|---|\n'
for t in $types; do
  for th in $threads_list; do
    for test in pp tg; do
      sel='.[] | select(.n_prompt > 0) | .avg_ts'
      [[ $test == tg ]] && sel='.[] | select(.n_gen > 0) | .avg_ts'
      ma=$(cat "$res/$t-$th-a-"*.json | jq -r "$sel" | median)
      mb=$(cat "$res/$t-$th-b-"*.json | jq -r "$sel" | median)
      printf '| %s | %s | %s | %.1f | %.1f | %.3f |\n' "$t" "$th" "$test" "$ma" "$mb" \
        "$(echo "$mb / $ma" | bc -l)"
    done
  done
done
