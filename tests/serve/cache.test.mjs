// cache.test.mjs: the shared KV cache seen from outside. Parallel greedy
// requests give the texts each gives alone; a cached prompt prefix is not
// evaluated again (usage, timings, /metrics); 16 clients with one system
// prompt hold its cells once; a stream longer than its slot shifts its
// context exactly as `ctxshift run` does; --no-context-shift ends a full
// slot with "length"; long prompts are truncated by llama-server's rule;
// a client that goes away frees its slot.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { startServer, post, get, metrics, greedy, parseSSE, until, BIN, SLOW } from "./lib.mjs";

const run = promisify(execFile);

const STORIES = [
  "Once upon a time",
  "The little dog",
  "Tom and Sue went to the park",
  "One day, a big bird",
  "There was a girl named Lily who",
  "The sun was hot and",
  "Ben had a red ball",
  "In a small house lived a cat",
];

// A long, fixed system text (about 140 tokens for stories260K: with the
// user text and the reply it fits a slot of 256).
const SYSTEM =
  "You are a kind teller of short stories for small children. " +
  "Every story has a happy end, simple words, a friendly animal and a lesson about sharing. ".repeat(2) +
  "Keep each story short and warm, and never say anything scary.";

async function nTokens(base, text) {
  const r = await post(base, "/tokenize", { content: text });
  assert.equal(r.status, 200, r.text);
  return r.json.tokens.length;
}

describe("parallel determinism (-np 8)", () => {
  let srv;
  before(async () => (srv = await startServer(["-c", "2048", "-np", "8", "--metrics"])));
  after(async () => srv?.stop());

  test("8 concurrent greedy requests give exactly the texts each gives alone", async () => {
    const alone = [];
    for (const p of STORIES) alone.push((await greedy(srv.base, p, 48)).content);
    assert.equal(new Set(alone).size, STORIES.length, "the prompts should give different texts");
    // twice: the second round starts from what the first left cached
    for (let round = 0; round < 2; round++) {
      const together = await Promise.all(STORIES.map((p) => greedy(srv.base, p, 48)));
      together.forEach((r, i) => assert.equal(r.content, alone[i], `round ${round}, prompt ${i}`));
      const slots = new Set(together.map((r) => r.id_slot));
      assert.ok(slots.size > 1, "the requests ran on one slot only");
    }
    // and streamed, concurrently, through the OpenAI route
    const streamed = await Promise.all(
      STORIES.map(async (p) => {
        const r = await post(srv.base, "/v1/completions", { prompt: p, max_tokens: 48, temperature: 0, stream: true });
        assert.equal(r.status, 200, r.text);
        return parseSSE(r.text)
          .filter((e) => e !== "[DONE]")
          .map((e) => e.choices[0]?.text ?? "")
          .join("");
      }),
    );
    streamed.forEach((t, i) => assert.equal(t, alone[i], `streamed prompt ${i}`));
  });
});

describe("prefix sharing", () => {
  let srv;
  before(async () => (srv = await startServer(["-c", "2048", "-np", "4", "--metrics"])));
  after(async () => srv?.stop());

  test("a second request with the same long prefix evaluates only its new tokens", async () => {
    const nPrefix = await nTokens(srv.base, SYSTEM);
    assert.ok(nPrefix > 100 && nPrefix < 180, `prefix of ${nPrefix} tokens`);
    const m0 = await metrics(srv.base);
    const a = await post(srv.base, "/v1/completions", { prompt: `${SYSTEM} Story one: the fox`, max_tokens: 8, temperature: 0 });
    assert.equal(a.status, 200, a.text);
    assert.ok(a.json.usage.prompt_tokens_details.cached_tokens <= 1, JSON.stringify(a.json.usage));
    assert.equal(a.json.timings.prompt_n, a.json.usage.prompt_tokens - a.json.usage.prompt_tokens_details.cached_tokens);
    const b = await post(srv.base, "/v1/completions", { prompt: `${SYSTEM} Story two: the owl`, max_tokens: 8, temperature: 0 });
    assert.equal(b.status, 200, b.text);
    const cached = b.json.usage.prompt_tokens_details.cached_tokens;
    // the shared part: BOS + the prefix, perhaps a token more or less at the seam
    assert.ok(cached >= nPrefix - 1, `cached ${cached} of a ${nPrefix}-token prefix`);
    assert.ok(cached < b.json.usage.prompt_tokens);
    assert.equal(b.json.timings.prompt_n, b.json.usage.prompt_tokens - cached);
    assert.ok(b.json.timings.prompt_n <= b.json.usage.prompt_tokens - nPrefix + 1);
    const m1 = await metrics(srv.base);
    assert.ok(
      m1["ctxshift:prefix_tokens_reused_total"] - m0["ctxshift:prefix_tokens_reused_total"] >= cached,
      "prefix_tokens_reused_total did not grow by the cached tokens",
    );
    assert.ok(m1["ctxshift:prefix_cache_hits_total"] > m0["ctxshift:prefix_cache_hits_total"]);
    // native route: the same numbers as llama-server names them
    const c = await post(srv.base, "/completion", { prompt: `${SYSTEM} Story three: the bee`, n_predict: 4, temperature: 0 });
    assert.ok(c.json.timings.prompt_n <= c.json.tokens_evaluated - nPrefix + 1, JSON.stringify(c.json.timings));
  });
});

describe("one system prompt, 16 clients (-np 16, slots of 512)", () => {
  let srv;
  before(async () => (srv = await startServer(["-c", "8192", "-np", "16", "--metrics"])));
  after(async () => srv?.stop());

  test("16 concurrent chats with one system prompt hold its cells once", async () => {
    const user = (i) => `Tell story number ${i} about a ${["cat", "dog", "fox", "owl"][i % 4]}.`;
    const msgs = (i) => [{ role: "system", content: SYSTEM }, { role: "user", content: user(i) }];
    const nPrefix = await nTokens(srv.base, SYSTEM);
    // the first request puts the prefix in the cache
    const first = await post(srv.base, "/v1/chat/completions", { messages: msgs(100), max_tokens: 4, temperature: 0 });
    assert.equal(first.status, 200, first.text);
    const nPrompt = first.json.usage.prompt_tokens;
    let peak = 0;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const m = await metrics(srv.base);
        peak = Math.max(peak, m["ctxshift:kv_cells_used"]);
      }
    })();
    const MAX = 32;
    const rs = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        post(srv.base, "/v1/chat/completions", { messages: msgs(i), max_tokens: MAX, temperature: 0 }),
      ),
    );
    polling = false;
    await poller;
    let nShared = Infinity;
    let nMax = 0;
    for (const r of rs) {
      assert.equal(r.status, 200, r.text);
      const u = r.json.usage;
      // no context shift here: a shift unshares the moving range
      assert.ok(u.prompt_tokens + u.completion_tokens < 512, JSON.stringify(u));
      nShared = Math.min(nShared, u.prompt_tokens_details.cached_tokens);
      nMax = Math.max(nMax, u.prompt_tokens);
    }
    // every client found the system prompt (and the template around it) cached
    assert.ok(nShared >= nPrefix, `a client reused ${nShared} tokens of a ${nPrefix}-token system prompt`);
    // idle slots keep their cells, so the end state shows the sharing too
    const end = await metrics(srv.base);
    peak = Math.max(peak, end["ctxshift:kv_cells_used"]);
    assert.equal(end["llamacpp:kv_cache_tokens"], end["ctxshift:kv_cells_used"]);
    // one copy of the shared prefix, plus what each client has of its own
    // (and the first request's own tail)
    const bound = nShared + 16 * (nMax - nShared + MAX + 1) + (nPrompt - nShared + 4);
    assert.ok(peak <= bound, `peak ${peak} cells used, bound ${bound} (shared prefix ${nShared})`);
    assert.ok(peak < (16 * nShared) / 2, `peak ${peak} cells: the ${nShared}-token prefix is not shared`);
  });
});

// `ctxshift run`'s text for the same prompt and flags (stdout: the prompt,
// the text, then "\n\n" at the end of generation).
async function runText(prompt, n, ctx, keep) {
  const { stdout } = await run(
    BIN,
    ["run", "-p", prompt, "-n", String(n), "-c", String(ctx), "--temp", "0", "-t", "1", "--keep", String(keep)],
    { maxBuffer: 1 << 24, timeout: 120_000 * SLOW },
  );
  assert.ok(stdout.startsWith(prompt), stdout.slice(0, 80));
  assert.ok(stdout.endsWith("\n\n"), JSON.stringify(stdout.slice(-20)));
  return stdout.slice(prompt.length, -2);
}

describe("context shift (slot of 128)", () => {
  const SLOT = 128;
  let srv;
  before(async () => (srv = await startServer(["-c", String(2 * SLOT), "-np", "2", "-t", "1", "--metrics"])));
  after(async () => srv?.stop());

  for (const keep of [0, 3]) {
    test(`a stream of 400 tokens equals ctxshift run -c ${SLOT} --keep ${keep}`, async () => {
      const prompt = "Once upon a time";
      const want = await runText(prompt, 400, SLOT, keep);
      const m0 = await metrics(srv.base);
      const r = await post(srv.base, "/completion", { prompt, n_predict: 400, temperature: 0, n_keep: keep, stream: true, cache_prompt: false });
      assert.equal(r.status, 200, r.text);
      const ev = parseSSE(r.text);
      const last = ev.at(-1);
      assert.equal(last.stop, true);
      const text = ev.map((e) => e.content).join("");
      assert.equal(last.tokens_predicted, 400, `stopped at ${last.tokens_predicted} (${last.stop_type})`);
      assert.equal(text, want);
      assert.equal(last.truncated, true, "a shifted context reports truncated");
      const m1 = await metrics(srv.base);
      assert.ok(m1["ctxshift:context_shifts_total"] - m0["ctxshift:context_shifts_total"] >= 3);
    });
  }

  test("a prompt longer than the slot is truncated by llama-server's rule", async () => {
    const ids = Array.from({ length: 300 }, (_, i) => 20 + ((i * 7) % 400));
    const r = await post(srv.base, "/completion", { prompt: ids, n_predict: 8, temperature: 0 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.truncated, true);
    // BOS + 300 ids; n_keep 0: blocks of (SLOT - 0) / 2 erased after n_keep
    const n = 301;
    const block = SLOT / 2;
    const erased = Math.floor((n - block) / block) * block;
    assert.equal(r.json.tokens_evaluated, n - erased);
    assert.ok(r.json.tokens_evaluated < SLOT);
    assert.equal(r.json.tokens_predicted, 8);
  });
});

describe("--no-context-shift", () => {
  const SLOT = 128;
  let srv;
  before(async () => (srv = await startServer(["-c", String(2 * SLOT), "-np", "2", "-t", "1", "--no-context-shift"])));
  after(async () => srv?.stop());

  test('a full slot ends with finish_reason "length" and the text so far', async () => {
    const prompt = "Once upon a time";
    const want = await runText(prompt, 400, 4 * SLOT, 0);
    const r = await post(srv.base, "/v1/completions", { prompt, max_tokens: 400, temperature: 0 });
    assert.equal(r.status, 200, r.text);
    const c = r.json.choices[0];
    assert.equal(c.finish_reason, "length");
    const used = r.json.usage.prompt_tokens + r.json.usage.completion_tokens;
    assert.ok(used >= SLOT - 1 && used <= SLOT, `prompt + completion = ${used}, slot ${SLOT}`);
    assert.ok(c.text.length > 100);
    assert.ok(want.startsWith(c.text), "the text so far differs from run's");
    // streamed: the same text, then "length"
    const s = await post(srv.base, "/v1/completions", { prompt, max_tokens: 400, temperature: 0, stream: true });
    const ev = parseSSE(s.text).filter((e) => e !== "[DONE]");
    assert.equal(ev.map((e) => e.choices[0]?.text ?? "").join(""), c.text);
    assert.equal(ev.at(-1).choices[0].finish_reason, "length");
  });
});

describe("client disconnect (-np 1)", () => {
  let srv;
  before(async () => (srv = await startServer(["-c", "256", "-np", "1", "--slots", "--metrics"])));
  after(async () => srv?.stop());

  const busy = async () => (await get(srv.base, "/slots")).json.some((s) => s.is_processing);

  for (const stream of [true, false]) {
    test(`a client gone mid-${stream ? "stream" : "request"} frees the slot`, async () => {
      const ac = new AbortController();
      // endless: ignore_eos, no limit but the server's cap (context shifts)
      const p = fetch(`${srv.base}/completion`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "Once upon a time", n_predict: -1, ignore_eos: true, stream }),
        signal: ac.signal,
      });
      if (stream) {
        const res = await p;
        const reader = res.body.getReader();
        let got = 0;
        while (got < 200) got += (await reader.read()).value?.length ?? 0;
      } else {
        assert.ok(await until(busy), "the request never started");
        p.catch(() => {});
      }
      assert.equal(await busy(), true);
      ac.abort();
      assert.ok(await until(async () => !(await busy())), "the slot stayed busy after the client left");
      // the one slot serves the next request
      const t0 = Date.now();
      const r = await greedy(srv.base, "The little dog", 8);
      assert.equal(r.tokens_predicted, 8);
      assert.ok(Date.now() - t0 < 10_000 * SLOW);
      const m = await metrics(srv.base);
      assert.equal(m["llamacpp:requests_processing"], 0);
    });
  }
});
