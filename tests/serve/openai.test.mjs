// openai.test.mjs: `ctxshift serve` through the official openai client,
// unmodified and pinned (package.json): chat and legacy completions with and
// without streaming, the stream() helper, models.list, usage in streams,
// logprobs, stop strings, seed, max_tokens, the error classes, and no retry
// on a client error (a counting proxy sees every request the SDK sends).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import OpenAI, {
  APIError,
  AuthenticationError,
  BadRequestError,
  NotFoundError,
  InternalServerError,
} from "openai";
import { startServer, SLOW } from "./lib.mjs";

const KEY = "sk-ctxshift-test";
const MAX_BODY = 65536;
let srv;
let client;

before(async () => {
  srv = await startServer([
    "-c", "1024", "-np", "2", "--alias", "stories", "--api-key", KEY,
    "--max-body", String(MAX_BODY), "--metrics",
  ]);
  // maxRetries 0 here: a failure shows at once; the retry test sets its own.
  client = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60_000 * SLOW });
});
after(async () => {
  await srv?.stop();
});

const MSGS = [
  { role: "system", content: "You are a storyteller." },
  { role: "user", content: "Tell me about a cat." },
];

test("models.list names the --alias", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ["stories"]);
});

test("chat.completions.create, no stream: shape and usage", async () => {
  const r = await client.chat.completions.create({ model: "stories", messages: MSGS, max_tokens: 12, temperature: 0 });
  assert.equal(r.object, "chat.completion");
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, "stories");
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, "assistant");
  assert.equal(typeof c.message.content, "string");
  assert.ok(c.message.content.length > 0);
  assert.ok(["stop", "length"].includes(c.finish_reason));
  assert.ok(r.usage.prompt_tokens > 10, JSON.stringify(r.usage));
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("chat stream: role first, same text as without stream, usage with include_usage", async () => {
  const ref = await client.chat.completions.create({ model: "stories", messages: MSGS, max_tokens: 24, temperature: 0 });
  const stream = await client.chat.completions.create({
    model: "stories", messages: MSGS, max_tokens: 24, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const ch of stream) chunks.push(ch);
  assert.ok(chunks.length >= 3);
  assert.equal(chunks[0].object, "chat.completion.chunk");
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, "one id for every chunk");
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  assert.equal(text, ref.choices[0].message.content);
  const withChoice = chunks.filter((c) => c.choices.length > 0);
  assert.equal(withChoice.at(-1).choices[0].finish_reason, ref.choices[0].finish_reason);
  for (const c of withChoice.slice(0, -1)) assert.equal(c.choices[0].finish_reason, null);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, ref.usage.completion_tokens);
  assert.equal(last.usage.prompt_tokens, ref.usage.prompt_tokens);
  // without include_usage: no usage chunk
  const s2 = await client.chat.completions.create({ model: "stories", messages: MSGS, max_tokens: 4, temperature: 0, stream: true });
  for await (const ch of s2) assert.ok(!ch.usage, "usage without include_usage");
});

test("chat.completions.stream() helper: events and final completion", async () => {
  const ref = await client.chat.completions.create({ model: "stories", messages: MSGS, max_tokens: 20, temperature: 0 });
  const runner = client.chat.completions.stream({ model: "stories", messages: MSGS, max_tokens: 20, temperature: 0 });
  let deltas = "";
  runner.on("content", (d) => (deltas += d));
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.role, "assistant");
  assert.equal(final.choices[0].message.content, ref.choices[0].message.content);
  assert.equal(deltas, ref.choices[0].message.content);
  assert.equal(final.choices[0].finish_reason, ref.choices[0].finish_reason);
});

test("completions.create, stream and not, same greedy text", async () => {
  const r = await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 16, temperature: 0 });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 16);
  assert.ok(r.choices[0].text.length > 0);
  const s = await client.completions.create({
    model: "stories", prompt: "Once upon a time", max_tokens: 16, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish = null;
  let usage = null;
  for await (const ch of s) {
    if (ch.choices.length) {
      text += ch.choices[0].text;
      if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
    }
    if (ch.usage) usage = ch.usage;
  }
  assert.equal(text, r.choices[0].text);
  assert.equal(finish, "length");
  assert.equal(usage?.completion_tokens, 16);
});

test("max_tokens and max_completion_tokens bound the completion", async () => {
  for (const n of [1, 5, 17]) {
    const r = await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: n, temperature: 0 });
    assert.equal(r.usage.completion_tokens, n);
    assert.equal(r.choices[0].finish_reason, "length");
  }
  const c = await client.chat.completions.create({ model: "stories", messages: MSGS, max_completion_tokens: 3, temperature: 0 });
  assert.ok(c.usage.completion_tokens <= 3);
});

test("chat logprobs / top_logprobs: one entry per token, sorted, greedy picks the top", async () => {
  const r = await client.chat.completions.create({
    model: "stories", messages: MSGS, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3,
  });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, r.usage.completion_tokens);
  assert.equal(lp.map((t) => t.token).join(""), r.choices[0].message.content);
  for (const t of lp) {
    assert.ok(t.logprob <= 0);
    assert.deepEqual(t.bytes, [...Buffer.from(t.token, "utf8")]);
    assert.equal(t.top_logprobs.length, 3);
    for (let i = 1; i < 3; i++) assert.ok(t.top_logprobs[i - 1].logprob >= t.top_logprobs[i].logprob);
    assert.equal(t.top_logprobs[0].token, t.token);
    assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6);
  }
  // streamed: the same logprobs, chunk by chunk
  const s = await client.chat.completions.create({
    model: "stories", messages: MSGS, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3, stream: true,
  });
  const streamed = [];
  for await (const ch of s) streamed.push(...(ch.choices[0]?.logprobs?.content ?? []));
  assert.deepEqual(streamed.map((t) => t.token), lp.map((t) => t.token));
});

test("legacy completions logprobs: tokens, token_logprobs, top_logprobs, text_offset", async () => {
  const r = await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 6, temperature: 0, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 6);
  assert.equal(lp.tokens.join(""), r.choices[0].text);
  assert.equal(lp.token_logprobs.length, 6);
  assert.equal(lp.top_logprobs.length, 6);
  for (const top of lp.top_logprobs) assert.equal(Object.keys(top).length, 2);
  let off = 0;
  for (let i = 0; i < 6; i++) {
    assert.equal(lp.text_offset[i], off);
    off += lp.tokens[i].length;
  }
});

test("stop strings cut the text before the stop and finish with 'stop'", async () => {
  const ref = await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 40, temperature: 0 });
  const full = ref.choices[0].text;
  const word = full.slice(20, 26);
  assert.equal(word.length, 6);
  const at = full.indexOf(word);
  for (const stop of [word, [word, "zzzzqqq"]]) {
    const r = await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 40, temperature: 0, stop });
    assert.equal(r.choices[0].text, full.slice(0, at));
    assert.equal(r.choices[0].finish_reason, "stop");
  }
  // streamed: the held-back text never shows the stop string
  const s = await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 40, temperature: 0, stop: word, stream: true });
  let text = "";
  for await (const ch of s) text += ch.choices[0]?.text ?? "";
  assert.equal(text, full.slice(0, at));
});

test("seed: the same seed gives the same sampled text, seeds differ", async () => {
  const gen = async (seed) =>
    (await client.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 24, temperature: 1.5, seed })).choices[0].text;
  const a = await gen(42);
  assert.equal(await gen(42), a);
  const others = new Set();
  for (const seed of [1, 2, 3, 4]) others.add(await gen(seed));
  others.add(a);
  assert.ok(others.size >= 2, "five seeds gave one text");
});

test("error classes: 400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "stories", messages: MSGS, temperature: "hot" }),
    (e) => {
      assert.ok(e instanceof BadRequestError, e.constructor.name);
      assert.equal(e.status, 400);
      assert.equal(e.error.type, "invalid_request_error");
      assert.match(e.message, /temperature/);
      return true;
    },
  );
  const bad = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: "stories", messages: MSGS }), (e) => {
    assert.ok(e instanceof AuthenticationError, e.constructor.name);
    assert.equal(e.status, 401);
    assert.equal(e.error.type, "authentication_error");
    return true;
  });
  const wrongPath = new OpenAI({ baseURL: `${srv.base}/v2`, apiKey: KEY, maxRetries: 0 });
  await assert.rejects(wrongPath.chat.completions.create({ model: "stories", messages: MSGS }), (e) => {
    assert.ok(e instanceof NotFoundError, e.constructor.name);
    assert.equal(e.status, 404);
    return true;
  });
  const big = [{ role: "user", content: "x".repeat(MAX_BODY + 1) }];
  await assert.rejects(client.chat.completions.create({ model: "stories", messages: big }), (e) => {
    assert.ok(e instanceof APIError, e.constructor.name);
    assert.equal(e.status, 413);
    assert.match(e.message, /--max-body/);
    return true;
  });
  // a 400 inside the SDK's stream call (the request fails before any event)
  await assert.rejects(
    client.chat.completions.create({ model: "stories", messages: [], stream: true }),
    (e) => e instanceof BadRequestError && /messages/.test(e.message),
  );
});

// A proxy in front of the server that counts the requests it forwards, and
// answers 500 itself on /v1/fail (to show that it sees the SDK's retries).
async function countingProxy(target) {
  const counts = new Map();
  const server = http.createServer((req, res) => {
    counts.set(req.url, (counts.get(req.url) ?? 0) + 1);
    if (req.url.startsWith("/v1/fail")) {
      res.writeHead(500, { "content-type": "application/json", "retry-after-ms": "10" });
      res.end(JSON.stringify({ error: { code: 500, message: "proxy says no", type: "server_error" } }));
      return;
    }
    const up = http.request(
      target + req.url,
      { method: req.method, headers: req.headers },
      (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, counts, close: () => new Promise((r) => server.close(r)) };
}

test("no retry on a client error (the SDK retries 5xx: the proxy counts those)", async () => {
  const proxy = await countingProxy(srv.base);
  try {
    const c = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: KEY, maxRetries: 2 });
    // the control: a 500 is retried twice, so the counter sees 3
    await assert.rejects(c.post("/fail", { body: {} }), (e) => e instanceof InternalServerError);
    assert.equal(proxy.counts.get("/v1/fail"), 3);
    await assert.rejects(
      c.chat.completions.create({ model: "stories", messages: MSGS, top_p: 7 }),
      (e) => e instanceof BadRequestError,
    );
    assert.equal(proxy.counts.get("/v1/chat/completions"), 1);
    const bad = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "nope", maxRetries: 2 });
    await assert.rejects(bad.completions.create({ model: "stories", prompt: "a" }), (e) => e instanceof AuthenticationError);
    assert.equal(proxy.counts.get("/v1/completions"), 1);
    // a body far over the limit: the 413 must arrive (not a reset, which
    // the SDK would retry as a connection error)
    for (const [i, size] of [MAX_BODY * 2, 4 << 20].entries()) {
      const big = [{ role: "user", content: "y".repeat(size) }];
      await assert.rejects(c.chat.completions.create({ model: "stories", messages: big }), (e) => e.status === 413);
      assert.equal(proxy.counts.get("/v1/chat/completions"), 2 + i, `a ${size}-byte body`);
    }
  } finally {
    await proxy.close();
  }
});
