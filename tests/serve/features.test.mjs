// features.test.mjs: what a request's fields and the server's flags do to
// the output. logit_bias and the repetition penalties change greedy text as
// they should; --max-queue answers 503 with Retry-After; --timeout ends a
// request (plain and streamed); slot files save, erase and restore a slot
// and refuse missing, truncated, foreign, badly named and busy cases without
// changing the slot; --cache-reuse slides a chat's kept messages into place;
// a slot that shifts its context through a prefix it shares leaves the
// other sequences' output bit-identical; SIGTERM ends an open stream and
// exits 0; a client that leaves an endless request frees its slot. Every test is bounded by SLOW-scaled waits (ASan).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer, post, get, metrics, greedy, parseSSE, until, sleep, BIN, SLOW } from "./lib.mjs";

const run = promisify(execFile);
const PROMPT = "Once upon a time";

// Greedy /completion with the generated token ids.
async function tokens(base, extra = {}, prompt = PROMPT) {
  const r = await greedy(base, prompt, extra.n_predict ?? 8, { return_tokens: true, ...extra });
  assert.equal(r.tokens.length, r.tokens_predicted, JSON.stringify(r));
  return r;
}

// Tokens generated more than once: n - distinct.
const repeats = (ids) => ids.length - new Set(ids).size;

// A request that runs until cancelled or stopped by the server: no EOS, no
// limit short of --timeout (context shifts keep it going).
const ENDLESS = { prompt: PROMPT, n_predict: 1_000_000, ignore_eos: true, temperature: 0 };

// fetch a long request in the background; returns {ac, done} where done
// settles with {status, text} or the abort.
function background(base, route, body) {
  const ac = new AbortController();
  const done = fetch(base + route, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: ac.signal,
  }).then(
    async (r) => ({ status: r.status, headers: r.headers, text: await r.text().catch((e) => `(${e.name})`) }),
    (e) => ({ status: 0, error: e }),
  );
  return { ac, done };
}

describe("logit_bias and penalties", () => {
  let srv;
  before(async () => (srv = await startServer(["-c", "1024", "-np", "2"])));
  after(async () => srv?.stop());

  test("banning the first greedy token (false / -100) changes the first token", async () => {
    const g = await tokens(srv.base);
    const first = g.tokens[0];
    for (const bias of [{ [first]: false }, [[first, -100]], [[first, false]], { [first]: -100 }]) {
      const r = await tokens(srv.base, { logit_bias: bias });
      assert.notEqual(r.tokens[0], first, `bias ${JSON.stringify(bias)}: ${JSON.stringify(r.tokens)}`);
      assert.ok(!r.tokens.includes(first), `banned token ${first} generated: ${JSON.stringify(r.tokens)}`);
    }
    // the OpenAI route takes the object form too
    const o = await post(srv.base, "/v1/completions", {
      prompt: PROMPT, max_tokens: 8, temperature: 0, logit_bias: { [first]: -100 },
    });
    assert.equal(o.status, 200, o.text);
    assert.notEqual(o.json.choices[0].text, g.content);
    // and without a bias the greedy text is back (the bias was per request)
    assert.deepEqual((await tokens(srv.base)).tokens, g.tokens);
  });

  test("a +100 bias makes that token the one generated", async () => {
    const g = await tokens(srv.base);
    const want = [300, 100].find((t) => t !== g.tokens[0]);
    for (const bias of [{ [want]: 100 }, [[want, 100]]]) {
      const r = await tokens(srv.base, { logit_bias: bias });
      assert.deepEqual(r.tokens, Array(8).fill(want), `bias ${JSON.stringify(bias)}`);
    }
  });

  test("presence, frequency and repeat penalties reduce repetition", async () => {
    const N = 200;
    const base = await tokens(srv.base, { n_predict: N, ignore_eos: true });
    assert.equal(base.tokens.length, N);
    const r0 = repeats(base.tokens);
    // stories260K repeats itself a lot under greedy decoding (119 of 200)
    assert.ok(r0 > N / 3, `greedy text repeats only ${r0} of ${N} tokens`);
    for (const pen of [
      { presence_penalty: 1.5 },
      { frequency_penalty: 1.5 },
      { repeat_penalty: 1.5 },
      { repeat_penalty: 1.3, repeat_last_n: -1 },
    ]) {
      const r = await tokens(srv.base, { n_predict: N, ignore_eos: true, ...pen });
      assert.equal(r.tokens.length, N);
      const rn = repeats(r.tokens);
      assert.ok(rn < r0, `${JSON.stringify(pen)}: ${rn} repeated tokens, ${r0} without`);
      assert.notEqual(r.content, base.content);
      // a window of 0 turns the same penalty off: the greedy text again
      const off = await tokens(srv.base, { n_predict: N, ignore_eos: true, ...pen, repeat_last_n: 0 });
      assert.deepEqual(off.tokens, base.tokens, `${JSON.stringify(pen)} with repeat_last_n 0`);
    }
  });
});

describe("queue full (-np 1, --max-queue 1)", () => {
  let srv;
  before(async () => {
    srv = await startServer(["-c", "256", "-np", "1", "--max-queue", "1", "--metrics"]);
  });
  after(async () => srv?.stop());

  test("a third concurrent request is 503 with Retry-After; the others complete", async () => {
    // long enough (context shifts; about 0.5 s in Release) that the first
    // still runs while the second queues and the third is refused
    const long = { prompt: PROMPT, n_predict: 2000, ignore_eos: true, temperature: 0 };
    const a = background(srv.base, "/completion", long);
    assert.ok(
      await until(async () => (await metrics(srv.base))["llamacpp:requests_processing"] === 1),
      "the first request never started",
    );
    const b = background(srv.base, "/completion", long);
    assert.ok(
      await until(async () => (await metrics(srv.base))["llamacpp:requests_deferred"] === 1),
      "the second request was not queued",
    );
    const c = await post(srv.base, "/v1/completions", { ...long, max_tokens: 400 });
    assert.equal(c.status, 503, c.text);
    assert.equal(c.headers.get("retry-after"), "1");
    assert.equal(c.json.error.type, "unavailable_error");
    assert.equal(c.json.error.code, 503);
    for (const r of [await a.done, await b.done]) {
      assert.equal(r.status, 200, r.text);
      assert.equal(JSON.parse(r.text).tokens_predicted, 2000);
    }
    // the server keeps serving
    assert.equal((await greedy(srv.base, "The little dog", 8)).tokens_predicted, 8);
  });

  test("a client gone from an endless non-streamed request frees the slot", async () => {
    // events keep coming (one per token): the server must still notice
    const bg = background(srv.base, "/completion", ENDLESS);
    assert.ok(
      await until(async () => (await metrics(srv.base))["llamacpp:requests_processing"] === 1),
      "the request never started",
    );
    await sleep(200);
    bg.ac.abort();
    await bg.done;
    assert.ok(
      await until(async () => (await metrics(srv.base))["llamacpp:requests_processing"] === 0),
      "the slot stayed busy after its client left",
    );
    assert.equal((await greedy(srv.base, "The little dog", 8)).tokens_predicted, 8);
  });

  test("slot save without --slot-save-path is 501", async () => {
    for (const action of ["save", "restore"]) {
      const r = await post(srv.base, `/slots/0?action=${action}`, { filename: "x.bin" });
      assert.equal(r.status, 501, r.text);
      assert.equal(r.json.error.type, "not_supported_error");
    }
  });
});

describe("--timeout 1", () => {
  let srv;
  before(async () => (srv = await startServer(["-c", "256", "-np", "1", "--timeout", "1", "--slots"])));
  after(async () => srv?.stop());

  test("a request over --timeout ends with 503 (plain) or an error event (stream)", async () => {
    const t0 = Date.now();
    const r = await post(srv.base, "/completion", ENDLESS);
    assert.equal(r.status, 503, r.text.slice(0, 200));
    assert.equal(r.json.error.type, "unavailable_error");
    assert.match(r.json.error.message, /--timeout 1/);
    assert.ok(Date.now() - t0 < 30_000 * SLOW, "the timeout took too long");
    // streamed on the OpenAI route: data: {"error":...}, then [DONE]
    const s = await post(srv.base, "/v1/completions", { ...ENDLESS, max_tokens: 1_000_000, stream: true });
    assert.equal(s.status, 200);
    const ev = parseSSE(s.text);
    assert.equal(ev.at(-1), "[DONE]");
    const err = ev.at(-2);
    assert.ok(err.error, `no error event before [DONE]: ${JSON.stringify(err)}`);
    assert.equal(err.error.code, 503);
    assert.equal(err.error.type, "unavailable_error");
    assert.match(err.error.message, /--timeout/);
    assert.ok(ev.length > 3, "the stream sent no text before the timeout");
    // native stream: the error event ends it
    const n = await post(srv.base, "/completion", { ...ENDLESS, stream: true });
    const nev = parseSSE(n.text);
    assert.equal(nev.at(-1).error?.code, 503, JSON.stringify(nev.at(-1)));
    // the server still serves, the slot is free
    assert.equal((await greedy(srv.base, "The little dog", 8)).tokens_predicted, 8);
    const slots = (await get(srv.base, "/slots")).json;
    assert.equal(slots[0].is_processing, false);
  });

});

// The /slots entry of slot id.
async function slot(base, id) {
  const r = await get(base, "/slots");
  assert.equal(r.status, 200, r.text);
  return r.json.find((s) => s.id === id);
}

describe("slot save / restore / erase", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-slots-"));
  const other = path.join(dir, "other");
  let srv;
  let out0; // greedy output of PROMPT on slot 0, fresh
  let nSaved;
  before(async () => {
    fs.mkdirSync(other);
    // no cached prefixes besides the slots' own: what a request finds
    // cached came from the slot (or its restore)
    srv = await startServer([
      "-c", "512", "-np", "2", "--slots", "--metrics", "--cache-entries", "0", "--slot-save-path", dir,
    ]);
  });
  after(async () => {
    await srv?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const action = (id, act, filename) => post(srv.base, `/slots/${id}?action=${act}`, filename === undefined ? {} : { filename });
  // restore "a.bin" and check the slot holds it; then a greedy request on
  // slot 0 with PROMPT evaluates one token and gives out0
  async function restoreA() {
    const r = await action(0, "restore", "a.bin");
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.n_restored, nSaved);
    assert.equal((await slot(srv.base, 0)).n_cached_tokens, nSaved);
  }
  async function checkCached() {
    const r = await greedy(srv.base, PROMPT, 16, { id_slot: 0 });
    assert.equal(r.content, out0.content);
    assert.ok(r.timings.prompt_n <= 1, `prompt_n ${r.timings.prompt_n} after a restore`);
    assert.equal(r.tokens_cached >= out0.tokens_evaluated - 1, true, JSON.stringify(r));
  }

  test("save, erase, restore", async () => {
    out0 = await greedy(srv.base, PROMPT, 16, { id_slot: 0 });
    assert.ok(out0.timings.prompt_n >= out0.tokens_evaluated - 1);
    const n = (await slot(srv.base, 0)).n_cached_tokens;
    assert.ok(n >= out0.tokens_evaluated, `slot 0 caches ${n} tokens`);
    const s = await action(0, "save", "a.bin");
    assert.equal(s.status, 200, s.text);
    nSaved = s.json.n_saved;
    assert.equal(nSaved, n);
    assert.ok(nSaved > 0);
    assert.equal(s.json.filename, "a.bin");
    assert.equal(fs.statSync(path.join(dir, "a.bin")).size, s.json.n_written);
    const e = await action(0, "erase");
    assert.equal(e.status, 200, e.text);
    assert.equal(e.json.n_erased, nSaved);
    assert.equal((await slot(srv.base, 0)).n_cached_tokens, 0);
    // erased: the prompt is evaluated again (and gives the same text)
    const again = await greedy(srv.base, PROMPT, 16, { id_slot: 0 });
    assert.equal(again.content, out0.content);
    assert.ok(again.timings.prompt_n >= out0.tokens_evaluated - 1, JSON.stringify(again.timings));
    await action(0, "erase");
    await restoreA();
    await checkCached();
    // into the other slot too
    const r1 = await action(1, "restore", "a.bin");
    assert.equal(r1.status, 200, r1.text);
    assert.equal((await slot(srv.base, 1)).n_cached_tokens, nSaved);
  });

  test("refused restores change nothing", async () => {
    assert.ok(nSaved > 0, "the save test did not run");
    const buf = fs.readFileSync(path.join(dir, "a.bin"));
    fs.writeFileSync(path.join(dir, "trunc.bin"), buf.subarray(0, Math.floor(buf.length / 2)));
    fs.writeFileSync(path.join(dir, "head.bin"), buf.subarray(0, 20));
    fs.writeFileSync(path.join(dir, "junk.bin"), Buffer.alloc(buf.length, 0x41));
    // a slot file of another model (same shape, other weights)
    const model = path.join(other, "other.gguf");
    await run(BIN, ["gen-model", "-o", model, "--preset", "tiny", "--seed", "7"], { timeout: 120_000 * SLOW });
    const srv2 = await startServer(["-m", model, "-c", "512", "-np", "1", "--slot-save-path", other]);
    try {
      await greedy(srv2.base, PROMPT, 16);
      const s2 = await post(srv2.base, "/slots/0?action=save", { filename: "foreign.bin" });
      assert.equal(s2.status, 200, s2.text);
    } finally {
      await srv2.stop();
    }
    fs.copyFileSync(path.join(other, "foreign.bin"), path.join(dir, "foreign.bin"));

    const cases = [
      ["missing", "nope.bin", 404, /cannot open/],
      ["truncated", "trunc.bin", 400, /does not match its header/],
      ["shorter than a header", "head.bin", 400, /not a ctxshift slot file/],
      ["not a slot file", "junk.bin", 400, /not a ctxshift slot file/],
      ["another model", "foreign.bin", 400, /fingerprint|different weights/],
      ["a '/' in the name", "sub/a.bin", 400, /'filename'/],
      ["'..'", "..", 400, /'filename'/],
      ["'../' escape", "../a.bin", 400, /'filename'/],
      ["a dot file", ".a.bin", 400, /'filename'/],
      ["empty name", "", 400, /'filename'/],
    ];
    for (const [name, file, status, re] of cases) {
      await restoreA();
      const r = await action(0, "restore", file);
      assert.equal(r.status, status, `${name}: ${r.text}`);
      assert.match(r.json.error.message, re, name);
      assert.equal((await slot(srv.base, 0)).n_cached_tokens, nSaved, `${name}: the slot changed`);
      await checkCached();
    }
    // a bad name is refused for save as well, and writes nothing outside
    const bad = await action(0, "save", "../escape.bin");
    assert.equal(bad.status, 400, bad.text);
    assert.equal(fs.existsSync(path.join(path.dirname(dir), "escape.bin")), false);
    const none = await action(0, "restore");
    assert.equal(none.status, 400, none.text);
  });

  test("a busy slot is 409", async () => {
    assert.ok(nSaved > 0, "the save test did not run");
    await restoreA();
    const bg = background(srv.base, "/completion", { ...ENDLESS, id_slot: 1 });
    try {
      assert.ok(await until(async () => (await slot(srv.base, 1)).is_processing), "slot 1 never started");
      for (const [act, file] of [["save", "b.bin"], ["restore", "a.bin"], ["erase", undefined]]) {
        const r = await action(1, act, file);
        assert.equal(r.status, 409, `${act}: ${r.text}`);
        assert.match(r.json.error.message, /busy/);
      }
      assert.equal(fs.existsSync(path.join(dir, "b.bin")), false);
      // the idle slot still works meanwhile
      assert.equal((await slot(srv.base, 0)).n_cached_tokens, nSaved);
      await checkCached();
    } finally {
      bg.ac.abort();
      await bg.done;
    }
    assert.ok(await until(async () => !(await slot(srv.base, 1)).is_processing), "slot 1 stayed busy");
  });
});

// A chat of several turns; `drop` removes message index drop (a client that
// trims its history in the middle).
const SYSTEM =
  "You are a kind teller of short stories for small children. " +
  "Every story has a happy end, simple words and a friendly animal. Keep it short.";
const TURNS = [
  { role: "system", content: SYSTEM },
  { role: "user", content: "Tell me about a cat who found a red ball in the garden." },
  { role: "assistant", content: "The cat played with the red ball all day and was very happy." },
  { role: "user", content: "What did the dog do when he saw the cat with the ball?" },
  { role: "assistant", content: "The dog asked to play too, and the cat shared the ball with him." },
  { role: "user", content: "And then?" },
];

describe("--cache-reuse", () => {
  // the same two requests on a server with and without the flag
  async function twoRequests(flags) {
    const srv = await startServer(["-c", "1024", "-np", "1", "--metrics", ...flags]);
    try {
      const first = await post(srv.base, "/v1/chat/completions", { messages: TURNS, max_tokens: 8, temperature: 0 });
      assert.equal(first.status, 200, first.text);
      const m0 = await metrics(srv.base);
      const msgs = TURNS.filter((_, i) => i !== 1 && i !== 2);
      const second = await post(srv.base, "/v1/chat/completions", { messages: msgs, max_tokens: 8, temperature: 0 });
      assert.equal(second.status, 200, second.text);
      const m1 = await metrics(srv.base);
      return {
        first: first.json,
        second: second.json,
        reused: m1["ctxshift:cache_reuse_tokens_total"] - m0["ctxshift:cache_reuse_tokens_total"],
      };
    } finally {
      await srv.stop();
    }
  }

  test("a chat that drops a middle turn reuses the rest with --cache-reuse 8, not without", async () => {
    const off = await twoRequests([]);
    const on = await twoRequests(["--cache-reuse", "8"]);
    assert.equal(off.reused, 0);
    // the first request is the same on both servers
    assert.equal(on.first.choices[0].message.content, off.first.choices[0].message.content);
    assert.equal(on.first.usage.prompt_tokens, off.first.usage.prompt_tokens);
    const nDropped = off.first.usage.prompt_tokens - off.second.usage.prompt_tokens;
    assert.ok(nDropped > 20, `the dropped turns are ${nDropped} tokens`);
    // the kept later turns (at least the second user/assistant pair) come
    // from the cache
    assert.ok(on.reused >= 30, `--cache-reuse 8 slid ${on.reused} tokens into place`);
    assert.ok(
      on.second.timings.prompt_n <= off.second.timings.prompt_n - 30,
      `prompt_n ${on.second.timings.prompt_n} with reuse, ${off.second.timings.prompt_n} without`,
    );
    assert.equal(on.second.usage.prompt_tokens_details.cached_tokens,
      on.second.usage.prompt_tokens - on.second.timings.prompt_n);
    // reused chunks sit at other positions than a fresh evaluation would
    // give them (llama-server's approximation): sane, not bit-identical
    assert.ok(on.second.choices[0].message.content.length > 0, "empty text after reuse");
    assert.equal(on.second.usage.completion_tokens, 8);
  });
});

describe("a slot shifting through a shared prefix (-np 2, slots of 256)", () => {
  const args = ["-c", "512", "-np", "2", "-t", "1", "--metrics"];
  const SYS =
    "You are a kind teller of short stories for small children. " +
    "Every story has a happy end, simple words, a friendly animal and a lesson about sharing. ".repeat(2) +
    "Keep each story short and warm, and never say anything scary.";
  const A1 = `${SYS} Story one: the fox`;
  // A's two requests: the first, then a follow-up that extends it
  async function clientA(base) {
    const r1 = await greedy(base, A1, 16);
    const r2 = await greedy(base, `${A1}${r1.content} Then the fox`, 24);
    return [r1, r2];
  }

  test("the other sequences' output is bit-identical to a fresh server's", async () => {
    const fresh = await startServer(args);
    let want;
    try {
      want = await clientA(fresh.base);
    } finally {
      await fresh.stop();
    }
    const srv = await startServer(args);
    try {
      const a1 = await greedy(srv.base, A1, 16);
      assert.equal(a1.content, want[0].content);
      const m0 = await metrics(srv.base);
      // B shares the system prefix and streams far past its slot: its
      // shifts (n_keep 0: only BOS kept) move cells it shares with A's
      // slot and the cached prefix
      const b = await post(srv.base, "/completion", {
        prompt: `${SYS} Story two: the owl`, n_predict: 600, ignore_eos: true, temperature: 0, stream: true,
      });
      assert.equal(b.status, 200, b.text);
      const last = parseSSE(b.text).at(-1);
      assert.equal(last.stop, true);
      assert.equal(last.tokens_predicted, 600);
      assert.ok(last.tokens_cached > 0 || last.timings.prompt_n < last.tokens_evaluated, "B did not share the prefix");
      const m1 = await metrics(srv.base);
      assert.ok(m1["ctxshift:context_shifts_total"] - m0["ctxshift:context_shifts_total"] >= 3);
      assert.ok(m1["ctxshift:cells_owned_total"] > 0, "no shared cell was made own before a shift");
      // A's follow-up starts from its cached prefix and must see exactly
      // the keys a fresh server computes
      const a2 = await greedy(srv.base, `${A1}${a1.content} Then the fox`, 24);
      assert.ok(a2.timings.prompt_n < a2.tokens_evaluated / 2, `A's follow-up evaluated ${a2.timings.prompt_n} tokens`);
      assert.equal(a2.content, want[1].content);
      // and while B shifts (concurrently)
      const bg = post(srv.base, "/completion", {
        prompt: `${SYS} Story three: the bee`, n_predict: 600, ignore_eos: true, temperature: 0,
      });
      assert.ok(await until(async () => (await metrics(srv.base))["ctxshift:context_shifts_total"] > m1["ctxshift:context_shifts_total"]));
      const a3 = await greedy(srv.base, `${A1}${a1.content} Then the fox`, 24);
      assert.equal(a3.content, want[1].content);
      assert.equal((await bg).status, 200);
    } finally {
      await srv.stop();
    }
  });
});

describe("shutdown while streaming", () => {
  test("SIGTERM with an open stream: the stream ends, exit status 0", async () => {
    const srv = await startServer(["-c", "256", "-np", "2"]);
    const exited = new Promise((r) => srv.proc.on("exit", (code, signal) => r({ code, signal })));
    const res = await fetch(`${srv.base}/v1/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...ENDLESS, max_tokens: 1_000_000, stream: true }),
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let text = "";
    while (text.split("\n\n").length < 5) {
      const { value, done } = await reader.read();
      assert.ok(!done, "the stream ended before SIGTERM");
      text += dec.decode(value, { stream: true });
    }
    srv.proc.kill("SIGTERM");
    // the rest of the stream, bounded
    const t0 = Date.now();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      assert.ok(Date.now() - t0 < 30_000 * SLOW, "the stream went on after SIGTERM");
    }
    const ev = parseSSE(text);
    const tail = ev.at(-1) === "[DONE]" ? ev.at(-2) : ev.at(-1);
    assert.ok(tail.error, `the stream ended without an error event: ${JSON.stringify(tail)}`);
    assert.equal(tail.error.code, 503);
    let timer;
    const st = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r(null), 30_000 * SLOW)))]);
    clearTimeout(timer);
    assert.deepEqual(st, { code: 0, signal: null }, srv.stderr().slice(-2000));
    await srv.stop(); // already exited: asserts the status once more
  });
});
