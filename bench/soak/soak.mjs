// bench/soak/soak.mjs: a bounded soak of `ctxshift serve` (issue 13). Not
// part of `make test`: bench/soak/soak.sh runs it, 10 minutes by default.
//
// One server, --clients concurrent clients for --minutes, each looping over
// random requests:
//   - completions: one of a few shared prefixes plus random words, greedy,
//     plain or streamed (the prefix cache is shared and evicted);
//   - cancels: an endless stream dropped after a random 20..600 ms;
//   - long chats: a conversation that grows turn by turn past the slot's
//     positions, greedy, replies long enough to shift the context;
// the server's cache fragments (prompts and replies of every length) and
// defragments itself (-dt 0.1 in the engine).
// Checks, each a failure when it does not hold:
//   - no error: every request not cancelled on purpose answers 200 and a
//     complete body (a stream ends with its finish_reason and [DONE]);
//   - RSS (VmRSS of /proc/PID/status, sampled every 5 s): every sample after
//     --warmup minutes stays within --rss-mib MiB of the sample at --warmup;
//   - every greedy answer equals the same request run alone: after the
//     soak the server gets SIGTERM (exit 0 within 10 s is checked too), a
//     fresh one with the same flags runs a random sample of --verify of the
//     recorded requests one at a time, and the texts must be identical;
// then prints a summary (text; --json FILE writes it as JSON as well).
//
// usage: node bench/soak/soak.mjs --bin build/release/ctxshift [--minutes 10]
//        [--clients 16] [--model M] [-c 1024] [-np 8] [-t 2] [--seed 1]
//        [--warmup 2] [--rss-mib 16] [--verify 400] [--json FILE]
// No dependencies: node >= 20's fetch.
import { spawn } from "node:child_process";
import fs from "node:fs";

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i++) {
  if (!argv[i].startsWith("-")) throw new Error(`unexpected argument '${argv[i]}'`);
  opt[argv[i].replace(/^-+/, "")] = argv[i + 1];
  i++;
}
const BIN = opt.bin ?? process.env.CTXSHIFT;
if (!BIN) throw new Error("--bin CTXSHIFT is required");
const MINUTES = Number(opt.minutes ?? 10);
const CLIENTS = Number(opt.clients ?? 16);
const WARMUP = Number(opt.warmup ?? 2);
const RSS_MIB = Number(opt["rss-mib"] ?? 16);
const VERIFY = Number(opt.verify ?? 400);
const SERVER_ARGS = [
  ...(opt.model ? ["-m", opt.model] : []),
  "-c", String(opt.c ?? 1024), "-np", String(opt.np ?? 8), "-t", String(opt.t ?? 2),
  "--metrics", "--slots",
];

// Deterministic randomness (mulberry32), so a run can be repeated.
let seed = Number(opt.seed ?? 1) >>> 0;
function rnd() {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const between = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

const PREFIXES = [
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her",
  "One day, a big brown dog found a red ball in the garden. The dog was very happy and",
  "Tom and his mom went to the store to buy some milk. On the way, they saw",
  "The sun was shining and the birds were singing. A small cat sat under a tall tree and",
];
const WORDS = ("friend ball tree sky happy sad run jump play toy car boat fish bird cake " +
  "rain sun moon star park house door garden flower red blue big little").split(" ");
const words = (n) => Array.from({ length: n }, () => pick(WORDS)).join(" ");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startServer(args) {
  const proc = spawn(BIN, ["serve", "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => (stderr = (stderr + d).slice(-20000)));
  proc.stdout.setEncoding("utf8");
  const exited = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
  return new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /listening on http:\/\/[^\s]*:(\d+)/.exec(out);
      if (m) resolve({ proc, exited, base: `http://127.0.0.1:${m[1]}`, stderr: () => stderr });
    });
    exited.then((e) => reject(new Error(`serve exited (${JSON.stringify(e)}): ${stderr}`)));
  });
}

async function stopServer(srv) {
  const t0 = Date.now();
  srv.proc.kill("SIGTERM");
  let timer;
  const res = await Promise.race([srv.exited, new Promise((r) => (timer = setTimeout(() => r(null), 10_000)))]);
  clearTimeout(timer);
  if (!res) srv.proc.kill("SIGKILL");
  return { ok: !!res && res.code === 0 && res.signal === null, ms: Date.now() - t0, res };
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

const stats = { completion: 0, stream: 0, chat: 0, chat_turns: 0, cancel: 0, tokens: 0 };
const errors = [];
const recorded = []; // {route, body, text}
const fail = (what) => {
  if (errors.length < 50) errors.push(what);
  else errors.length++;
};

// A non-stream request: its JSON (null after recording an error).
async function postJSON(base, route, body) {
  let r;
  try {
    r = await fetch(base + route, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    fail(`${route}: ${e.cause?.code ?? e.message}`);
    return null;
  }
  const text = await r.text();
  if (r.status !== 200) {
    fail(`${route}: HTTP ${r.status} ${text.slice(0, 200)}`);
    return null;
  }
  return JSON.parse(text);
}

// A streamed /completion: the concatenated content (null after an error).
// abortMs: drop it after that long (a cancel; no error expected).
async function postStream(base, body, abortMs) {
  const ac = new AbortController();
  let timer;
  if (abortMs !== undefined) timer = setTimeout(() => ac.abort(), abortMs);
  try {
    const r = await fetch(base + "/completion", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }), signal: ac.signal,
    });
    if (r.status !== 200) {
      fail(`stream: HTTP ${r.status} ${(await r.text()).slice(0, 200)}`);
      return null;
    }
    const dec = new TextDecoder();
    let buf = "", content = "", stopped = false;
    for await (const chunk of r.body) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!ev.startsWith("data: ")) continue;
        const j = JSON.parse(ev.slice(6));
        if (j.error) {
          fail(`stream: error event ${JSON.stringify(j.error).slice(0, 200)}`);
          return null;
        }
        content += j.content ?? "";
        if (j.stop) stopped = true;
      }
    }
    if (!stopped) {
      fail("stream: ended without its final event");
      return null;
    }
    return content;
  } catch (e) {
    if (ac.signal.aborted) return undefined; // the cancel itself
    fail(`stream: ${e.cause?.code ?? e.message}`);
    return null;
  } finally {
    clearTimeout(timer);
  }
}

async function client(base, deadline) {
  let chat = null; // messages of the running conversation
  while (Date.now() < deadline) {
    const x = rnd();
    if (chat || x < 0.2) {
      // a long chat: about 40 words a turn, replies of 48..96 tokens, up to
      // 8 turns: the history outgrows the slot (prompt truncation) and the
      // replies shift the context
      if (!chat) {
        chat = [{ role: "system", content: "You are a storyteller." }];
        stats.chat++;
      }
      chat.push({ role: "user", content: `${pick(PREFIXES)} ${words(between(10, 40))}` });
      const body = { messages: chat, max_tokens: between(48, 96), temperature: 0, ignore_eos: true };
      const j = await postJSON(base, "/v1/chat/completions", body);
      stats.chat_turns++;
      if (!j) {
        chat = null;
        continue;
      }
      const text = j.choices[0].message.content;
      stats.tokens += j.usage?.completion_tokens ?? 0;
      recorded.push({ route: "/v1/chat/completions", body: structuredClone(body), text });
      chat.push({ role: "assistant", content: text });
      if (chat.length > 16 || rnd() < 0.15) chat = null;
    } else if (x < 0.35) {
      stats.cancel++;
      const r = await postStream(base, { prompt: `${pick(PREFIXES)} ${words(between(0, 30))}`, n_predict: 100_000, ignore_eos: true, temperature: 0 }, between(20, 600));
      if (r !== undefined && r !== null) fail("cancel: an endless stream ended by itself");
    } else if (x < 0.6) {
      stats.stream++;
      const body = { prompt: `${pick(PREFIXES)} ${words(between(0, 20))}`, n_predict: between(8, 160), temperature: 0 };
      const text = await postStream(base, body);
      if (typeof text === "string") recorded.push({ route: "/completion", body, text });
    } else {
      stats.completion++;
      const body = { prompt: `${pick(PREFIXES)} ${words(between(0, 20))}`, n_predict: between(8, 160), temperature: 0 };
      const j = await postJSON(base, "/completion", body);
      if (j) {
        stats.tokens += j.tokens_predicted ?? 0;
        recorded.push({ route: "/completion", body, text: j.content });
      }
    }
  }
}

async function metrics(base) {
  const r = await fetch(base + "/metrics");
  const out = {};
  for (const line of (await r.text()).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const [k, v] = line.split(/\s+/);
    out[k] = Number(v);
  }
  return out;
}

const t0 = Date.now();
const srv = await startServer(SERVER_ARGS);
const pid = srv.proc.pid;
const samples = []; // [minutes, KiB]
const sampler = setInterval(() => {
  try {
    samples.push([(Date.now() - t0) / 60000, rssKiB(pid)]);
  } catch {
    /* exited */
  }
}, 5000);
samples.push([0, rssKiB(pid)]);
const deadline = t0 + MINUTES * 60000;
await Promise.all(Array.from({ length: CLIENTS }, () => client(srv.base, deadline)));
clearInterval(sampler);
samples.push([(Date.now() - t0) / 60000, rssKiB(pid)]);
const m = await metrics(srv.base);
const stop = await stopServer(srv);
if (!stop.ok) fail(`SIGTERM after the soak: ${JSON.stringify(stop.res)} after ${stop.ms} ms`);
const soakErrors = errors.length;

// RSS: the first sample at or after the warm-up, and the later ones
const warm = samples.find(([t]) => t >= WARMUP);
const after = warm ? samples.filter(([t]) => t >= warm[0]) : [];
const maxAfter = after.reduce((a, [, k]) => Math.max(a, k), 0);
const minAfter = after.reduce((a, [, k]) => Math.min(a, k), Infinity);
const rssOk = !!warm && maxAfter - warm[1] <= RSS_MIB * 1024 && warm[1] - minAfter <= RSS_MIB * 1024;

// greedy answers alone, on a fresh server
const sample = [...recorded];
for (let i = sample.length - 1; i > 0; i--) {
  const j = Math.floor(rnd() * (i + 1));
  [sample[i], sample[j]] = [sample[j], sample[i]];
}
sample.length = Math.min(sample.length, VERIFY);
const fresh = await startServer(SERVER_ARGS);
let same = 0;
const diffs = [];
for (const r of sample) {
  const j = await postJSON(fresh.base, r.route, r.body);
  if (!j) continue;
  const text = r.route === "/completion" ? j.content : j.choices[0].message.content;
  if (text === r.text) same++;
  else if (diffs.length < 5) diffs.push({ route: r.route, body: r.body, soak: r.text, alone: text });
}
const stop2 = await stopServer(fresh);
if (!stop2.ok) fail(`SIGTERM of the fresh server: ${JSON.stringify(stop2.res)}`);

const mib = (k) => (k / 1024).toFixed(1);
const summary = {
  minutes: MINUTES, clients: CLIENTS, server: SERVER_ARGS.join(" "),
  requests: stats, recorded: recorded.length,
  server_counters: {
    tokens_predicted: m["llamacpp:tokens_predicted_total"],
    prompt_tokens: m["llamacpp:prompt_tokens_total"],
    context_shifts: m["ctxshift:context_shifts_total"],
    kshift_passes: m["ctxshift:kshift_passes_total"],
    defrag_passes: m["ctxshift:defrag_passes_total"],
    defrag_cells_moved: m["ctxshift:defrag_cells_moved_total"],
    prefix_cache_hits: m["ctxshift:prefix_cache_hits_total"],
    prefix_cache_evictions: m["ctxshift:prefix_cache_evictions_total"],
  },
  rss_mib: {
    start: Number(mib(samples[0][1])),
    at_warmup: warm ? Number(mib(warm[1])) : null,
    warmup_minute: warm ? Number(warm[0].toFixed(2)) : null,
    min_after: after.length ? Number(mib(minAfter)) : null,
    max_after: after.length ? Number(mib(maxAfter)) : null,
    end: Number(mib(samples.at(-1)[1])),
    limit: RSS_MIB, ok: rssOk,
  },
  errors: { soak: soakErrors, total: errors.length, first: errors.slice(0, 5) },
  sigterm_exit_ms: stop.ms,
  verify: { run: sample.length, equal: same, different: sample.length - same, first_diffs: diffs },
};
const pass = rssOk && errors.length === 0 && same === sample.length && sample.length > 0;
summary.pass = pass;
if (opt.json) fs.writeFileSync(opt.json, JSON.stringify(summary, null, 2) + "\n");

const c = summary.server_counters;
console.log(`soak: ${MINUTES} min, ${CLIENTS} clients, serve ${summary.server}`);
console.log(`  requests: ${stats.completion} completions, ${stats.stream} streams, ${stats.cancel} cancels, ` +
  `${stats.chat} chats (${stats.chat_turns} turns); ${recorded.length} greedy answers recorded`);
console.log(`  server: ${c.tokens_predicted} tokens generated, ${c.prompt_tokens} prompt tokens evaluated, ` +
  `${c.context_shifts} context shifts (${c.kshift_passes} K-shift passes), ${c.defrag_passes} defrags ` +
  `(${c.defrag_cells_moved} cells moved), ${c.prefix_cache_hits} prefix hits, ${c.prefix_cache_evictions} evictions`);
const r = summary.rss_mib;
console.log(`  RSS MiB: start ${r.start}, minute ${r.warmup_minute} ${r.at_warmup}, after: min ${r.min_after} ` +
  `max ${r.max_after}, end ${r.end} (limit +-${RSS_MIB} MiB): ${rssOk ? "ok" : "FAIL"}`);
console.log(`  errors: ${errors.length}${errors.length ? ": " + errors.slice(0, 5).join(" | ") : ""}`);
console.log(`  SIGTERM after the soak: ${stop.ok ? "exit 0" : "FAIL"} in ${stop.ms} ms`);
console.log(`  greedy answers alone on a fresh server: ${same}/${sample.length} equal`);
for (const d of diffs) console.log(`  DIFF ${JSON.stringify(d).slice(0, 600)}`);
console.log(`soak: ${pass ? "PASS" : "FAIL"} (${((Date.now() - t0) / 60000).toFixed(1)} min in all)`);
process.exit(pass ? 0 : 1);
