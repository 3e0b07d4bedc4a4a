#!/usr/bin/env bash
# bench/serve/compare.sh: ctxshift serve and llama-server side by side, same
# model, same flags, same client (client.mjs), at several concurrencies.
# Outside `make test` (minutes per run).
#
# usage: bash bench/serve/compare.sh [--llama-server PATH] [-m MODEL] [-c N] [-np N]
#            [-t N] [--requests N] [--max-tokens N] [--concurrency "1 4 8 16"]
# Without --llama-server only ctxshift is measured. llama-server comes from a
# llama.cpp checkout built outside this project, e.g. the source that
# node-llama-cpp bundles:
#   git clone bench/peer/node_modules/node-llama-cpp/llama/gitRelease.bundle /tmp/llama.cpp
#   cmake -S /tmp/llama.cpp -B /tmp/llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF
#   cmake --build /tmp/llama.cpp/build --target llama-server -j
# Prints a markdown table (requests/s, tokens/s, TTFT and inter-token latency
# p50/p95, cache hit rate) with ctxshift / llama-server ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
ctxshift="${CTXSHIFT:-$root/build/release/ctxshift}"
llama_server=""
model="$root/models/stories260K-f32.gguf"
ctx=4096 np=16 threads=2 requests=64 max_tokens=64 conc="1 4 8 16"
while [ $# -gt 0 ]; do
    case "$1" in
    --llama-server) llama_server=$2; shift 2 ;;
    -m) model=$2; shift 2 ;;
    -c) ctx=$2; shift 2 ;;
    -np) np=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --concurrency) conc=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$ctxshift" ] || { echo "compare.sh: $ctxshift not built (make)" >&2; exit 1; }
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

port_free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_health() {
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "compare.sh: server on port $1 did not come up" >&2
    return 1
}

run_one() { # name cmd...
    local name=$1; shift
    local port; port=$(port_free)
    "$@" --port "$port" >"$out/$name.log" 2>&1 &
    local pid=$!
    wait_health "$port"
    for c in $conc; do
        node "$root/bench/serve/client.mjs" --url "http://127.0.0.1:$port" --concurrency "$c" \
            --requests "$requests" --max-tokens "$max_tokens" --label "$name" >>"$out/$name.jsonl"
    done
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

run_one ctxshift "$ctxshift" serve -m "$model" -c "$ctx" -np "$np" -t "$threads" -b 512
if [ -n "$llama_server" ]; then
    run_one llama-server "$llama_server" -m "$model" -c "$ctx" -np "$np" -t "$threads" -b 512 \
        -ub 512 --host 127.0.0.1
fi
node - "$out" <<'JS'
const fs = require("fs");
const dir = process.argv[2];
const read = (n) => fs.existsSync(`${dir}/${n}.jsonl`)
  ? fs.readFileSync(`${dir}/${n}.jsonl`, "utf8").trim().split("\n").map(JSON.parse) : [];
const a = read("ctxshift"), b = read("llama-server");
const cols = ["requests_per_s", "tokens_per_s", "ttft_ms_p50", "ttft_ms_p95", "itl_ms_p50", "itl_ms_p95", "cache_hit_rate", "connection_retries"];
console.log(`| clients | engine | ${cols.join(" | ")} |`);
console.log(`| ---: | --- | ${cols.map(() => "---:").join(" | ")} |`);
for (const r of a) {
  const o = b.find((x) => x.concurrency === r.concurrency);
  console.log(`| ${r.concurrency} | ctxshift | ${cols.map((c) => r[c]).join(" | ")} |`);
  if (!o) continue;
  console.log(`| ${r.concurrency} | llama-server | ${cols.map((c) => o[c]).join(" | ")} |`);
  const ratio = (c) => (o[c] && r[c] !== null ? (c.startsWith("requests") || c.startsWith("tokens") ? r[c] / o[c] : o[c] / r[c]) : null);
  console.log(`| ${r.concurrency} | ratio (>1: ctxshift better) | ${cols.map((c) => c === "cache_hit_rate" || c === "connection_retries" ? "" : (ratio(c)?.toFixed(2) ?? "")).join(" | ")} |`);
}
JS
