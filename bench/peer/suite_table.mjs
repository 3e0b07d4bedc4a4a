#!/usr/bin/env node
// Tables for bench/peer/suite.sh from the JSON it leaves in RESULTS_DIR:
//   mem.start.json, mem.end.json          `ctxshift bench mem --json`
//   <id>.model                            model path
//   <id>.cs.<k>.json, <id>.nb.<k>.json    round k of `ctxshift bench --json`
//                                         and of native_bench (llama.cpp)
//   <id>.pair.<k>.json                    round k of `ctxshift bench -p 0 -n 64
//                                         --mem-pair --json` (tg with a probe
//                                         pass after every token)
//   <id>.ik.<k>.json, <id>.ikr.<k>.json   ik_llama.cpp's llama-bench, default
//                                         flags and -rtr 1 (suite.sh --ik)
//   ctxshift.version                      `ctxshift --version` (its kernel table)
// where <id> is main.<shape>.<type>.t<threads> or depth.110m.<type>.d<D>[h][t<threads>]
// (no t<threads>: 2 threads, the suite's runs before 2026-12-07).
// Every cell is the median over the rounds. usage: node suite_table.mjs DIR
import { readdirSync, readFileSync, existsSync, statSync } from "node:fs";
import path from "node:path";
import { readJson } from "./results.mjs";

const dir = process.argv[2];
if (!dir) {
  process.stderr.write("usage: node suite_table.mjs RESULTS_DIR\n");
  process.exit(2);
}

const median = (xs) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
};
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : "n/a");
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(0)} %` : "n/a");
const mib = (x) => (Number.isFinite(x) ? (x / 1048576).toFixed(1) : "n/a");

// bandwidth per thread count: the best pass of the start and end runs (a
// ceiling is an upper bound; the median pass sits a few % lower and the
// engines' own weight streams were seen to beat it)
const bw = {};
for (const f of ["mem.start.json", "mem.end.json"]) {
  for (const o of readJson(path.join(dir, f)) ?? []) (bw[o.n_threads] ??= []).push(o.best_gbs);
}
const bwOf = (t) => (bw[t] ? Math.max(...bw[t]) : NaN);
// a row's bandwidth per round: the best pass of the `bench mem` run after
// round k at the row's thread count (suite.sh step 3; undefined where a
// round has none)
function roundMem(id, t) {
  const r = [];
  for (let k = 0; existsSync(path.join(dir, `${id}.cs.${k}.json`)); k++)
    r.push((readJson(path.join(dir, `${id}.mem.${k}.json`)) ?? []).find((o) => o.n_threads === t)?.best_gbs);
  return r;
}
// a row's own bandwidth: the best of its rounds; runs made before the
// suite measured per round fall back to the start and end runs
function rowBw(id, t) {
  const best = roundMem(id, t).filter((x) => x);
  return best.length ? { gbs: Math.max(...best), own: true } : { gbs: bwOf(t), own: false };
}
const files = readdirSync(dir);
const ids = [...new Set(files.filter((f) => f.endsWith(".model")).map((f) => f.slice(0, -6)))];

// an engine's generation against the bandwidth measured right after the
// same round: the median over rounds of tg_k / (mem_k * 1e9 / size); NaN
// without per-round bandwidth
function perRound(id, eng, t, size) {
  const r = [];
  roundMem(id, t).forEach((gbs, k) => {
    const e = readJson(path.join(dir, `${id}.${eng}.${k}.json`)) ?? [];
    const tg = e.find((o) => o.n_gen > 0 && !o.n_prompt)?.avg_ts;
    if (gbs && tg) r.push(tg / ((gbs * 1e9) / size));
  });
  return r.length ? median(r) : NaN;
}

// ctxshift's decode against the probe pass after each of its tokens
// (`bench --mem-pair`), the median over rounds of the ratio of the sums
// (every token) and of the per-token median; NaN without pair files
function paired(id) {
  const sum = [], med = [];
  for (let k = 0; existsSync(path.join(dir, `${id}.cs.${k}.json`)); k++) {
    const o = (readJson(path.join(dir, `${id}.pair.${k}.json`)) ?? []).find((x) => x.mem_pair_ratio);
    if (o) sum.push(o.mem_pair_ratio), med.push(o.mem_pair_ratio_median);
  }
  return { sum: sum.length ? median(sum) : NaN, med: med.length ? median(med) : NaN };
}

// rounds of one engine: {pp: [t/s], tg: [t/s], objs: [...]}
function rounds(id, eng) {
  const r = { pp: [], tg: [], objs: [] };
  const re = new RegExp(`^${id.replace(/[.]/g, "\\.")}\\.${eng}\\.\\d+\\.json$`);
  for (const f of files.filter((x) => re.test(x))) {
    const arr = readJson(path.join(dir, f));
    if (!Array.isArray(arr)) continue;
    for (const o of arr) {
      r.objs.push(o);
      if (o.n_prompt > 0 && !o.n_gen) r.pp.push(o.avg_ts);
      if (o.n_gen > 0 && !o.n_prompt) r.tg.push(o.avg_ts);
    }
  }
  return r;
}

// What each engine ran, for the "CPU paths" column. ctxshift: the kernel
// table `ctxshift --version` names (one per process, so one per run).
// llama.cpp: the CPU features llama_print_system_info lists as "= 1" for the
// loaded libggml-cpu variant (SSE3/SSSE3 left out: every x86-64 variant
// here has them), plus the variant name when native_bench was told one.
const verFile = path.join(dir, "ctxshift.version");
const csTable = existsSync(verFile)
  ? (/kernels = ([a-z0-9_]+)/.exec(readFileSync(verFile, "utf8"))?.[1] ?? "?")
  : "?";
function llamaPaths(objs) {
  const seen = new Set();
  for (const o of objs) {
    if (typeof o.system_info !== "string") continue;
    const feats = [...o.system_info.matchAll(/([A-Z0-9_]+) = 1/g)]
      .map((m) => m[1])
      .filter((f) => f !== "SSE3" && f !== "SSSE3");
    seen.add(`${o.ggml_cpu && o.ggml_cpu !== "best" ? `${o.ggml_cpu}: ` : ""}${feats.join(" ")}`);
  }
  return seen.size ? [...seen].join(" / ") : "?";
}

const typeOrder = ["f16", "bf16", "q8_0", "q4_0", "q4_K_M", "Q4_K_M", "Q5_K_M", "q5_K", "q6_K", "Q6_K", "Q3_K_M", "Q2_K", "IQ4_XS", "Q5_0", "IQ4_NL", "Q4_1", "Q5_1"];
// ids: main.<shape>.<type>.t<threads>, depth.<shape>.<type>.d<D>[h]; shapes
// may contain dots (1.1b), types do not
function parseId(id) {
  const m = /^(main|depth)\.(.+)\.([^.]+)\.([td]\d+h?(?:t\d+)?)$/.exec(id);
  return m ? { kind: m[1], shape: m[2], type: m[3], last: m[4] } : null;
}
const key = (id) => {
  const p = parseId(id);
  return [p.shape === "110m" ? 0 : 1, typeOrder.indexOf(p.type), p.last];
};
const main = ids.filter((i) => parseId(i)?.kind === "main").sort((a, b) => {
  const ka = key(a), kb = key(b);
  return ka[0] - kb[0] || ka[1] - kb[1] || ka[2].localeCompare(kb[2]);
});

const out = [];
out.push(
  `memory read bandwidth (ctxshift bench mem, best pass of the start and end runs, for reference): ` +
    Object.keys(bw)
      .sort()
      .map((t) => `${t} thread${t > 1 ? "s" : ""} ${f1(bwOf(t))} GB/s`)
      .join(", "),
);
out.push("");
out.push(
  "| model | threads | pp512 ctxshift | pp512 llama.cpp | pp ratio | tg128 ctxshift | tg128 llama.cpp | tg ratio | row GB/s | tg ceiling | ctxshift / ceiling | llama.cpp / ceiling | best round / ceiling: ctxshift, llama.cpp | ctxshift / round's | llama.cpp / round's | ctxshift / paired probe: all tokens (median token) | CPU paths (ctxshift table; llama.cpp variant: features) |",
);
out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
let anyGlobal = false;
const mem = [];
for (const id of main) {
  const { shape, type, last } = parseId(id);
  const t = Number(last.slice(1));
  const cs = rounds(id, "cs"), nb = rounds(id, "nb");
  const cpp = median(cs.pp), ctg = median(cs.tg), lpp = median(nb.pp), ltg = median(nb.tg);
  const size = cs.objs[0]?.model_decode_bytes ?? cs.objs[0]?.model_size ?? nb.objs[0]?.model_size;
  const rb = rowBw(id, t);
  anyGlobal ||= !rb.own;
  const ceil = (rb.gbs * 1e9) / size;
  const pr = paired(id);
  out.push(
    `| ${shape} ${type} | ${t} | ${f1(cpp)} | ${f1(lpp)} | ${f2(cpp / lpp)} | ${f1(ctg)} | ${f1(ltg)} | ${f2(ctg / ltg)} | ${f1(rb.gbs)}${rb.own ? "" : "*"} | ${f1(ceil)} | ${pct(ctg / ceil)} | ${pct(ltg / ceil)} | ${pct(Math.max(...cs.tg) / ceil)} / ${pct(Math.max(...nb.tg) / ceil)} | ${pct(perRound(id, "cs", t, size))} | ${pct(perRound(id, "nb", t, size))} | ${pct(pr.sum)} (${pct(pr.med)}) | ${csTable}; ${llamaPaths(nb.objs)} |`,
  );
  const modelFile = readFileSync(path.join(dir, `${id}.model`), "utf8").trim();
  const fileBytes = existsSync(modelFile) ? statSync(modelFile).size : NaN;
  const peak = Math.max(...cs.objs.map((o) => o.peak_rss_bytes ?? NaN));
  const kv = Math.max(...cs.objs.map((o) => o.kv_bytes ?? NaN));
  if (t === 1 || !mem.some((m) => m.name === `${shape} ${type}`))
    mem.push({ name: `${shape} ${type}`, fileBytes, kv, peak });
}
out.push("");
out.push(
  "tg ceiling = row GB/s / bytes a token reads (`cs_model_decode_bytes`: every weight once, the token embedding one row); both engines read the same bytes, the KV cache of tg128 adds under 1 %. row GB/s = the best `bench mem` pass at the row's thread count over the runs after each of its rounds; '/ round\'s': the median over rounds of the round's tg128 against the ceiling from the bandwidth measured right after it (on a host whose bandwidth drifts, the fairer pairing; one high pass can set the row's best); 'best round / ceiling': each engine's fastest tg128 round against the same ceiling, extreme against extreme (the ceiling is the best of 3 passes per round, so it still favours the probe); 'paired probe': `ctxshift bench -p 0 -n 64 --mem-pair`, each token's weight stream against a `bench mem` pass of the same bytes run right after it, same threads, as the ratio of the sums over all tokens and as the median token's ratio, median over rounds (the tightest pairing; llama.cpp cannot be paired this way)" +
    (anyGlobal ? " (* : none recorded, the start and end runs' best)." : "."),
);
out.push("");
out.push("peak memory of `ctxshift bench` (peak RSS over its pp512 and tg128 runs) against the target file + KV cache + 64 MiB:");
out.push("");
out.push("| model | file MiB | KV cache MiB | peak RSS MiB | limit MiB | within |");
out.push("| --- | ---: | ---: | ---: | ---: | --- |");
for (const m of mem) {
  const limit = m.fileBytes + m.kv + 64 * 1048576;
  out.push(
    `| ${m.name} | ${mib(m.fileBytes)} | ${mib(m.kv)} | ${mib(m.peak)} | ${mib(limit)} | ${m.peak <= limit ? "yes" : "NO"} |`,
  );
}

// ik_llama.cpp (suite.sh --ik): a second table, ctxshift against its
// default flags and its run-time repacking (-rtr 1)
const withIk = main.filter((id) => rounds(id, "ik").objs.length || rounds(id, "ikr").objs.length);
if (withIk.length) {
  out.push("");
  out.push(
    "ik_llama.cpp, same rounds (ratio = ctxshift / ik_llama.cpp; -rtr 1 repacks the weights at load into its interleaved layouts):",
  );
  out.push("");
  out.push(
    "| model | threads | pp512 ctxshift | pp512 ik | pp ratio | pp512 ik -rtr 1 | pp ratio -rtr | tg128 ctxshift | tg128 ik | tg ratio | tg128 ik -rtr 1 | tg ratio -rtr |",
  );
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const id of withIk) {
    const { shape, type, last } = parseId(id);
    const cs = rounds(id, "cs"), ik = rounds(id, "ik"), ikr = rounds(id, "ikr");
    const cpp = median(cs.pp), ctg = median(cs.tg);
    const ipp = median(ik.pp), itg = median(ik.tg), rpp = median(ikr.pp), rtg = median(ikr.tg);
    out.push(
      `| ${shape} ${type} | ${last.slice(1)} | ${f1(cpp)} | ${f1(ipp)} | ${f2(cpp / ipp)} | ${f1(rpp)} | ${f2(cpp / rpp)} | ${f1(ctg)} | ${f1(itg)} | ${f2(ctg / itg)} | ${f1(rtg)} | ${f2(ctg / rtg)} |`,
    );
  }
}

// depth ids: the depth (d2048, d4096, d2048h) and the threads (t1, t2; none: 2)
const depthOf = (id) => {
  const m = /^d(\d+h?)(?:t(\d+))?$/.exec(parseId(id).last);
  return { d: m[1], t: m[2] ? Number(m[2]) : 2 };
};
const depth = ids
  .filter((i) => parseId(i)?.kind === "depth")
  .sort((a, b) => {
    const pa = parseId(a), pb = parseId(b), da = depthOf(a), db = depthOf(b);
    return (
      typeOrder.indexOf(pa.type) - typeOrder.indexOf(pb.type) ||
      da.t - db.t ||
      da.d.localeCompare(db.d)
    );
  });
if (depth.length) {
  out.push("");
  out.push("speed at depth (dD: D tokens cached before the timed run; d2048h: 2048 live cells in a 4096-cell window, every other cell a hole; llama.cpp has no such case):");
  out.push("");
  out.push("| model | threads | depth | pp512 ctxshift | pp512 llama.cpp | pp ratio | tg128 ctxshift | tg128 llama.cpp | tg ratio |");
  out.push("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const id of depth) {
    const { shape, type } = parseId(id);
    const { d, t } = depthOf(id);
    const cs = rounds(id, "cs"), nb = rounds(id, "nb");
    const cpp = median(cs.pp), ctg = median(cs.tg), lpp = median(nb.pp), ltg = median(nb.tg);
    out.push(
      `| ${shape} ${type} | ${t} | ${d} | ${f1(cpp)} | ${f1(lpp)} | ${f2(cpp / lpp)} | ${f1(ctg)} | ${f1(ltg)} | ${f2(ctg / ltg)} |`,
    );
  }
}
process.stdout.write(out.join("\n") + "\n");
