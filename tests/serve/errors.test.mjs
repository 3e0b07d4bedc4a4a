// errors.test.mjs: the bad-request matrix. Every client mistake gets its
// status and {"error":{"code","message","type"}} naming the field; after
// each case the server still answers /health and a fixed greedy completion
// gives the same text as before (the cache state did not change what a
// later request sees).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, request, raw, get, greedy, SLOW } from "./lib.mjs";

const KEY = "sk-matrix";
const AUTH = { Authorization: `Bearer ${KEY}` };
const MAX_BODY = 8192;
const N_CTX = 512;
const NP = 2;
const SLOT = N_CTX / NP;
const VOCAB = 512; // stories260K
let srv;
let baseline;

before(async () => {
  // no --metrics / --slots (their 501s), no context shift (the 400 of a
  // prompt longer than a slot)
  srv = await startServer([
    "-c", String(N_CTX), "-np", String(NP), "--api-key", KEY, "--max-body", String(MAX_BODY),
    "--no-context-shift",
  ]);
  baseline = await greedy(srv.base, "Once upon a time", 16, {}, AUTH);
  assert.equal(baseline.tokens_predicted, 16);
});
after(async () => {
  await srv?.stop();
});

const chat = (extra) => ({ messages: [{ role: "user", content: "hi" }], max_tokens: 2, ...extra });
const cmpl = (extra) => ({ prompt: "Once", max_tokens: 2, ...extra });
const INV = "invalid_request_error";

// [name, method, path, body (object, or string sent as is), status, type, message regex, headers]
const cases = [
  // bodies
  ["malformed JSON", "POST", "/v1/chat/completions", '{"messages": [', 400, INV, /invalid JSON/],
  ["empty body", "POST", "/v1/completions", "", 400, INV, /empty/],
  ["array body", "POST", "/v1/completions", "[1,2]", 400, INV, /JSON object/],
  ["string body", "POST", "/completion", '"Once"', 400, INV, /JSON object/],
  ["null body", "POST", "/v1/chat/completions", "null", 400, INV, /JSON object/],
  ["duplicate keys", "POST", "/completion", '{"prompt":"a","prompt":"b"}', 400, INV, /invalid JSON.*duplicate/i],
  ["trailing garbage", "POST", "/completion", '{"prompt":"a"} x', 400, INV, /invalid JSON/],
  // generation fields: wrong types and ranges
  ["temperature string", "POST", "/v1/completions", cmpl({ temperature: "hot" }), 400, INV, /'temperature' must be a number/],
  ["temperature negative", "POST", "/v1/completions", cmpl({ temperature: -1 }), 400, INV, /'temperature'.*outside/],
  ["top_k string", "POST", "/completion", cmpl({ top_k: "5" }), 400, INV, /'top_k' must be an integer/],
  ["top_k negative", "POST", "/completion", cmpl({ top_k: -1 }), 400, INV, /'top_k'.*outside/],
  ["top_p above 1", "POST", "/v1/completions", cmpl({ top_p: 2 }), 400, INV, /'top_p'.*outside/],
  ["min_p string", "POST", "/v1/completions", cmpl({ min_p: "x" }), 400, INV, /'min_p' must be a number/],
  ["n_predict string", "POST", "/completion", { prompt: "a", n_predict: "10" }, 400, INV, /'n_predict' must be an integer/],
  ["n_predict below -1", "POST", "/completion", { prompt: "a", n_predict: -5 }, 400, INV, /'n_predict'.*outside/],
  ["max_tokens fractional", "POST", "/v1/completions", cmpl({ max_tokens: 1.5 }), 400, INV, /'max_tokens' must be an integer/],
  ["max_completion_tokens bool", "POST", "/v1/chat/completions", chat({ max_completion_tokens: true }), 400, INV, /'max_completion_tokens' must be an integer/],
  ["repeat_penalty 0", "POST", "/v1/completions", cmpl({ repeat_penalty: 0 }), 400, INV, /'repeat_penalty'/],
  ["repeat_last_n -2", "POST", "/v1/completions", cmpl({ repeat_last_n: -2 }), 400, INV, /'repeat_last_n'.*outside/],
  ["presence_penalty 3", "POST", "/v1/chat/completions", chat({ presence_penalty: 3 }), 400, INV, /'presence_penalty'.*outside/],
  ["frequency_penalty string", "POST", "/v1/chat/completions", chat({ frequency_penalty: "a" }), 400, INV, /'frequency_penalty' must be a number/],
  ["seed string", "POST", "/v1/completions", cmpl({ seed: "abc" }), 400, INV, /'seed' must be an integer/],
  ["stream string", "POST", "/v1/chat/completions", chat({ stream: "yes" }), 400, INV, /'stream' must be a boolean/],
  ["stream_options number", "POST", "/v1/chat/completions", chat({ stream: true, stream_options: 5 }), 400, INV, /'stream_options' must be an object/],
  ["include_usage string", "POST", "/v1/chat/completions", chat({ stream: true, stream_options: { include_usage: "x" } }), 400, INV, /'include_usage' must be a boolean/],
  ["n = 2", "POST", "/v1/chat/completions", chat({ n: 2 }), 400, INV, /'n' = 2/],
  ["n = 0", "POST", "/v1/completions", cmpl({ n: 0 }), 400, INV, /'n' = 0/],
  ["unknown id_slot", "POST", "/completion", { prompt: "a", id_slot: 99 }, 400, INV, /'id_slot' = 99/],
  ["id_slot string", "POST", "/completion", { prompt: "a", id_slot: "0" }, 400, INV, /'id_slot' must be an integer/],
  ["cache_prompt number", "POST", "/completion", { prompt: "a", cache_prompt: 1 }, 400, INV, /'cache_prompt' must be a boolean/],
  ["n_keep -2", "POST", "/completion", { prompt: "a", n_keep: -2 }, 400, INV, /'n_keep'.*outside/],
  ["n_discard negative", "POST", "/completion", { prompt: "a", n_discard: -1 }, 400, INV, /'n_discard'.*outside/],
  ["ignore_eos string", "POST", "/completion", { prompt: "a", ignore_eos: "no" }, 400, INV, /'ignore_eos' must be a boolean/],
  ["model number", "POST", "/v1/chat/completions", chat({ model: 5 }), 400, INV, /'model' must be a string/],
  // logprobs
  ["chat logprobs string", "POST", "/v1/chat/completions", chat({ logprobs: "x" }), 400, INV, /'logprobs' must be a boolean/],
  ["top_logprobs 50", "POST", "/v1/chat/completions", chat({ logprobs: true, top_logprobs: 50 }), 400, INV, /'top_logprobs'.*outside/],
  ["top_logprobs without logprobs", "POST", "/v1/chat/completions", chat({ top_logprobs: 3 }), 400, INV, /'top_logprobs' requires 'logprobs'/],
  ["legacy logprobs 99", "POST", "/v1/completions", cmpl({ logprobs: 99 }), 400, INV, /'logprobs'.*outside/],
  ["n_probs string", "POST", "/completion", { prompt: "a", n_probs: "3" }, 400, INV, /'n_probs' must be an integer/],
  // logit_bias
  ["logit_bias string", "POST", "/v1/completions", cmpl({ logit_bias: "x" }), 400, INV, /'logit_bias' must be an object or an array/],
  ["logit_bias key not an id", "POST", "/v1/completions", cmpl({ logit_bias: { abc: 1 } }), 400, INV, /'logit_bias' key 'abc'/],
  ["logit_bias id outside vocab", "POST", "/v1/completions", cmpl({ logit_bias: { 999999: 1 } }), 400, INV, /token 999999 is outside the vocabulary/],
  ["logit_bias negative id", "POST", "/v1/completions", cmpl({ logit_bias: { "-1": 1 } }), 400, INV, /token -1 is outside the vocabulary/],
  ["logit_bias value string", "POST", "/v1/completions", cmpl({ logit_bias: { 5: "x" } }), 400, INV, /'logit_bias' of token 5 must be a number/],
  ["logit_bias value 1000", "POST", "/v1/completions", cmpl({ logit_bias: { 5: 1000 } }), 400, INV, /'logit_bias' of token 5.*outside/],
  ["logit_bias pair malformed", "POST", "/completion", { prompt: "a", logit_bias: [[1]] }, 400, INV, /'logit_bias'\[0\]/],
  // stop
  ["stop number", "POST", "/v1/completions", cmpl({ stop: 5 }), 400, INV, /'stop' must be a string or an array/],
  ["stop empty string", "POST", "/v1/completions", cmpl({ stop: [""] }), 400, INV, /'stop' strings must not be empty/],
  ["stop array of numbers", "POST", "/v1/completions", cmpl({ stop: ["a", 1] }), 400, INV, /'stop' must be a string/],
  ["too many stop strings", "POST", "/v1/completions", cmpl({ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }), 400, INV, /'stop' has more than 16/],
  ["stop string too long", "POST", "/v1/completions", cmpl({ stop: "x".repeat(2000) }), 400, INV, /'stop' string of 2000 bytes exceeds 1024/],
  ["stop with NUL", "POST", "/v1/completions", cmpl({ stop: "a\u0000b" }), 400, INV, /NUL/],
  // messages
  ["messages missing", "POST", "/v1/chat/completions", { max_tokens: 2 }, 400, INV, /'messages' is required/],
  ["messages empty", "POST", "/v1/chat/completions", { messages: [] }, 400, INV, /'messages' is empty/],
  ["messages string", "POST", "/v1/chat/completions", { messages: "hi" }, 400, INV, /'messages' must be an array/],
  ["message not an object", "POST", "/v1/chat/completions", { messages: ["hi"] }, 400, INV, /'messages'\[0\] must be an object/],
  ["message role missing", "POST", "/v1/chat/completions", { messages: [{ content: "x" }] }, 400, INV, /'messages'\[0\]\.role must be a string/],
  ["message bad role", "POST", "/v1/chat/completions", { messages: [{ role: "user", content: "a" }, { role: "wizard", content: "x" }] }, 400, INV, /'messages'\[1\]\.role 'wizard'/],
  ["message content number", "POST", "/v1/chat/completions", { messages: [{ role: "user", content: 5 }] }, 400, INV, /'messages'\[0\]\.content must be/],
  ["message content missing", "POST", "/v1/chat/completions", { messages: [{ role: "user" }] }, 400, INV, /'messages'\[0\]\.content must be/],
  ["content part image", "POST", "/v1/chat/completions", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }] }] }, 400, INV, /'messages'\[0\]\.content\[0\]/],
  ["content part without text", "POST", "/v1/chat/completions", { messages: [{ role: "user", content: [{ type: "text", text: "a" }, { type: "text" }] }] }, 400, INV, /'messages'\[0\]\.content\[1\]/],
  ["content part not an object", "POST", "/v1/chat/completions", { messages: [{ role: "user", content: ["a"] }] }, 400, INV, /'messages'\[0\]\.content\[0\]/],
  ["content with NUL", "POST", "/v1/chat/completions", { messages: [{ role: "user", content: "a\u0000b" }] }, 400, INV, /NUL/],
  // prompts
  ["prompt missing", "POST", "/v1/completions", { max_tokens: 2 }, 400, INV, /'prompt' is required/],
  ["prompt number", "POST", "/v1/completions", { prompt: 5 }, 400, INV, /'prompt' must be a string or an array/],
  ["prompt token outside vocab", "POST", "/completion", { prompt: [1, 99999] }, 400, INV, new RegExp(`token 99999 is outside the vocabulary \\[0, ${VOCAB}\\)`)],
  ["prompt negative token", "POST", "/completion", { prompt: [-1] }, 400, INV, /token -1 is outside the vocabulary/],
  ["several prompts", "POST", "/v1/completions", { prompt: ["a", "b"] }, 400, INV, /several prompts/],
  ["prompt element object", "POST", "/completion", { prompt: [{}] }, 400, INV, /'prompt'\[0\] must be a string or a token id/],
  ["prompt longer than a slot, no context shift", "POST", "/completion", { prompt: Array.from({ length: 300 }, (_, i) => 10 + (i % 200)), n_predict: 2 }, 400, INV, new RegExp(`\\b30[01]\\b.*\\b${SLOT}\\b`)],
  // other routes
  ["tokenize content number", "POST", "/tokenize", { content: 5 }, 400, INV, /'content' must be a string/],
  ["detokenize id outside vocab", "POST", "/detokenize", { tokens: [1, 99999] }, 400, INV, /'tokens'\[1\]/],
  ["apply-template no messages", "POST", "/apply-template", {}, 400, INV, /'messages' is required/],
  // limits, routes, methods, keys
  ["body over --max-body", "POST", "/v1/completions", { prompt: "x".repeat(MAX_BODY) }, 413, INV, /exceeds 8192 bytes/],
  ["unknown route", "POST", "/v1/nope", cmpl({}), 404, "not_found_error", /no route POST \/v1\/nope/],
  ["unknown GET route", "GET", "/v2/models", undefined, 404, "not_found_error", /no route/],
  ["GET on a POST route", "GET", "/v1/chat/completions", undefined, 405, INV, /takes POST/],
  ["POST on a GET route", "POST", "/health", {}, 405, INV, /takes GET/],
  ["DELETE on a route", "DELETE", "/v1/models", undefined, 405, INV, /takes GET/],
  ["wrong API key", "POST", "/v1/completions", cmpl({}), 401, "authentication_error", /API Key/i, { Authorization: "Bearer sk-nope" }],
  ["no API key", "POST", "/v1/chat/completions", chat({}), 401, "authentication_error", /API Key/i, {}],
  ["API key not Bearer", "GET", "/props", undefined, 401, "authentication_error", /API Key/i, { Authorization: KEY }],
  ["/metrics disabled", "GET", "/metrics", undefined, 501, "not_supported_error", /--metrics/],
  ["/slots disabled", "GET", "/slots", undefined, 501, "not_supported_error", /--slots/],
];

async function assertUnchanged(name) {
  const h = await get(srv.base, "/health");
  assert.equal(h.status, 200, `${name}: /health after the case`);
  const g = await greedy(srv.base, "Once upon a time", 16, {}, AUTH);
  assert.equal(g.content, baseline.content, `${name}: greedy text changed`);
  assert.ok(srv.alive(), `${name}: the server exited`);
}

test(`bad-request matrix (${cases.length} cases over fetch)`, async (t) => {
  assert.ok(cases.length >= 40);
  for (const [name, method, path, body, status, type, re, headers] of cases) {
    await t.test(name, async () => {
      const r = await request(srv.base, method, path, body, headers ?? AUTH);
      assert.equal(r.status, status, `${name}: ${r.text}`);
      assert.ok(r.json && typeof r.json.error === "object", `${name}: not an error object: ${r.text}`);
      assert.deepEqual(Object.keys(r.json.error).sort(), ["code", "message", "type"]);
      assert.equal(r.json.error.code, status);
      assert.equal(r.json.error.type, type);
      assert.match(r.json.error.message, re);
      assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
      if (status === 405) assert.ok(r.headers.get("allow"), "405 without Allow");
      await assertUnchanged(name);
    });
  }
});

test("the stream flag does not change a 400 into an event stream", async () => {
  const r = await request(srv.base, "POST", "/v1/chat/completions", chat({ stream: true, temperature: "x" }), AUTH);
  assert.equal(r.status, 400);
  assert.equal(r.json.error.type, INV);
  await assertUnchanged("stream 400");
});

const head = (extra = "") => `Host: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer ${KEY}\r\n${extra}`;

// Requests fetch refuses to send; answered at once (not after a timeout).
const rawCases = [
  ["URI too long: 414 at once", () => `GET /${"a".repeat(100_000)} HTTP/1.1\r\n${head()}\r\n`, 414],
  ["header too large: 431 at once", () => `GET /health HTTP/1.1\r\n${head(`X-Big: ${"b".repeat(100_000)}\r\n`)}\r\n`, 431],
  ["many headers: 431 at once", () => `GET /health HTTP/1.1\r\n${head(Array.from({ length: 3000 }, (_, i) => `X-H${i}: ${"v".repeat(20)}\r\n`).join(""))}\r\n`, 431],
  [
    "Expect: 100-continue with a body over --max-body: 413 at once, before the body",
    () => `POST /v1/completions HTTP/1.1\r\n${head(`Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${MAX_BODY * 4}\r\n`)}\r\n`,
    413,
  ],
  [
    "a 1 MiB body over --max-body, sent at once: read, then 413",
    () => `POST /v1/completions HTTP/1.1\r\n${head(`Content-Type: application/json\r\nContent-Length: ${1 << 20}\r\n`)}\r\n${" ".repeat(1 << 20)}`,
    413,
  ],
  [
    "invalid UTF-8 in the body: 400",
    () => Buffer.concat([
      Buffer.from(`POST /completion HTTP/1.1\r\n${head("Content-Type: application/json\r\nContent-Length: 15\r\n")}\r\n`),
      Buffer.from('{"prompt":"\xff\xfe"}', "latin1"),
    ]),
    400,
  ],
  ["not HTTP at all: 400", () => "HELLO THERE\r\n\r\n", 400],
];

for (const [name, make, status] of rawCases) {
  test(name, async () => {
    const t0 = Date.now();
    const r = await raw(srv.port, make(), { timeoutMs: 10_000 * SLOW });
    const ms = Date.now() - t0;
    assert.equal(r.status, status, `${name}: ${r.raw.slice(0, 300)}`);
    // the idle timeout is 60 s: "at once" is well below it, even under ASan
    assert.ok(ms < 5000 * SLOW, `${name}: answered after ${ms} ms`);
    if (status === 413 || (status === 400 && r.body.startsWith("{"))) {
      const j = JSON.parse(r.body);
      assert.equal(j.error.code, status);
    }
    await assertUnchanged(name);
  });
}
