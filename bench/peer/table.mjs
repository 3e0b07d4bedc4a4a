#!/usr/bin/env node
// Merges the JSON written by compare.sh into one markdown table.
//
// usage: node table.mjs RESULTS_DIR
// RESULTS_DIR holds, per run, a pair of files
//   <id>.ctxshift.json   output of `ctxshift bench --json` (may be missing or
//                        empty when ctxshift failed; the row then says n/a)
//   <id>.llama.json      output of llama_bench.mjs
//   <id>.native.json     output of native_bench (optional)
//   <id>.model           the model path (one line)
// where <id> is "<index>-t<threads>". Both JSON files are arrays of
// llama-bench-style objects; the pp row is the object with n_gen == 0 and the
// tg row the one with n_prompt == 0.
//
// Columns: ctxshift t/s; the reference llama.cpp t/s, which is native_bench
// (prebuilt libllama with a persistent thread pool, timed like llama-bench)
// when its JSON is there, else llama.cpp's own perf counters from the node
// run (llama_decode time only); their ratio (> 1 means ctxshift is faster);
// and, for information, the node run's perf-counter and wall-clock t/s (the
// latter adds node-llama-cpp's per-call overhead).

import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { readJsonArray } from "./results.mjs";

const dir = process.argv[2];
if (!dir) {
  process.stderr.write("usage: node table.mjs RESULTS_DIR\n");
  process.exit(2);
}

function pick(arr, test) {
  if (!arr) return null;
  return arr.find((o) => (test === "pp" ? o.n_prompt > 0 && !o.n_gen : o.n_gen > 0 && !o.n_prompt)) ?? null;
}

const fmt = (avg, sd) => (Number.isFinite(avg) ? `${avg.toFixed(1)} ± ${(Number.isFinite(sd) ? sd : 0).toFixed(1)}` : "n/a");

const ids = readdirSync(dir)
  .filter((f) => f.endsWith(".model"))
  .map((f) => f.slice(0, -".model".length))
  .sort((a, b) => {
    const [ia, ta] = a.split("-t").map(Number);
    const [ib, tb] = b.split("-t").map(Number);
    return ia - ib || ta - tb;
  });

const hasNative = ids.some((id) => readJsonArray(path.join(dir, `${id}.native.json`)));
const lines = hasNative
  ? [
      "| model | test | threads | ctxshift t/s | llama.cpp t/s | ratio | llama.cpp via node: perf counters | via node: wall |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
  : [
      "| model | test | threads | ctxshift t/s | llama.cpp t/s (via node, perf counters) | ratio | via node: wall |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ];
for (const id of ids) {
  const model = path.basename(readFileSync(path.join(dir, `${id}.model`), "utf8").trim());
  const threads = Number(id.split("-t")[1]);
  const cs = readJsonArray(path.join(dir, `${id}.ctxshift.json`));
  const ll = readJsonArray(path.join(dir, `${id}.llama.json`));
  const nb = readJsonArray(path.join(dir, `${id}.native.json`));
  for (const test of ["pp", "tg"]) {
    const c = pick(cs, test);
    const l = pick(ll, test);
    const nat = pick(nb, test);
    if (!c && !l && !nat) continue;
    const any = l ?? nat ?? c;
    const n = test === "pp" ? any.n_prompt : any.n_gen;
    // The reference llama.cpp number: native_bench when it ran, else the
    // perf-counter time of the node run.
    const ref = hasNative ? nat?.avg_ts : l?.native_avg_ts;
    const ratio = c && ref > 0 ? (c.avg_ts / ref).toFixed(2) : "n/a";
    const cols = [
      model,
      `${test}${n}`,
      threads,
      c ? fmt(c.avg_ts, c.stddev_ts) : "n/a",
      hasNative ? (nat ? fmt(nat.avg_ts, nat.stddev_ts) : "n/a") : l ? fmt(l.native_avg_ts, l.native_stddev_ts) : "n/a",
      ratio,
    ];
    if (hasNative) cols.push(l ? fmt(l.native_avg_ts, l.native_stddev_ts) : "n/a");
    cols.push(l ? fmt(l.avg_ts, l.stddev_ts) : "n/a");
    lines.push(`| ${cols.join(" | ")} |`);
  }
}
process.stdout.write(lines.join("\n") + "\n");
