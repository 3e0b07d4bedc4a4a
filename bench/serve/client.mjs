// bench/serve/client.mjs: N concurrent streaming clients against one
// OpenAI-compatible server (ctxshift serve or llama-server), a fixed number
// of requests in total. Prints one JSON object: requests/s, generated
// tokens/s, time to first token and inter-token latency (p50, p95), and the
// prompt-cache hit rate (prompt tokens not evaluated / prompt tokens).
//
// usage: node client.mjs --url http://127.0.0.1:8080 --concurrency 4 --requests 64
//        [--max-tokens 64] [--system TEXT] [--label NAME]
// Every request shares one system prompt (the case a shared cache is for)
// and has its own user turn; sampling is greedy so both servers do the same
// work. No dependencies: node >= 20's fetch.
const args = Object.fromEntries(
  process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith("--") ? a.concat([[v.slice(2), all[i + 1]]]) : a), []));
const url = args.url ?? "http://127.0.0.1:8080";
const concurrency = +(args.concurrency ?? 4);
const total = +(args.requests ?? 64);
const maxTokens = +(args["max-tokens"] ?? 64);
const system = args.system ??
  "You are a storyteller. Tell short, happy stories about children, animals and their friends, " +
  "with simple words, a beginning, a middle and an end.";
const topics = ["a cat", "a red ball", "a little boat", "the park", "a big tree", "a birthday",
  "the rain", "a lost dog", "a tall tower", "the sea", "a garden", "a new friend"];

function quantile(xs, q) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

// A kept-alive connection that the server closed between two requests
// makes fetch fail before any response (llama-server's HTTP library closes
// them after a few requests): such a request is sent again, as the openai
// SDK does for connection errors, and counted.
let retries = 0;
async function post(body) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetch(`${url}/v1/chat/completions`, body);
    } catch (e) {
      if (attempt >= 3 || e?.cause?.code !== "UND_ERR_SOCKET") throw e;
      retries++;
    }
  }
}

async function one(i) {
  const t0 = performance.now();
  const res = await post({
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      model: "bench", stream: true, max_tokens: maxTokens, temperature: 0,
      stream_options: { include_usage: true },
      messages: [{ role: "system", content: system },
                 { role: "user", content: `Tell me a story about ${topics[i % topics.length]}.` }],
    }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const dec = new TextDecoder();
  let buf = "", first = null, last = null, tokens = 0, usage = null, timings = null;
  const gaps = [];
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let k;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const j = JSON.parse(ev.slice(6));
      if (j.error) throw new Error(JSON.stringify(j.error));
      if (j.usage) usage = j.usage;
      if (j.timings) timings = j.timings;
      const content = j.choices?.[0]?.delta?.content;
      if (content) {
        const now = performance.now();
        if (first === null) first = now;
        else gaps.push(now - last);
        last = now;
        tokens++;
      }
    }
  }
  return { ttft: first === null ? null : first - t0, gaps, tokens, usage, timings, ms: performance.now() - t0 };
}

const results = [];
let next = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (next < total) results.push(await one(next++));
}));
const wall = (performance.now() - t0) / 1000;
const gaps = results.flatMap((r) => r.gaps);
const ttft = results.map((r) => r.ttft).filter((x) => x !== null);
const gen = results.reduce((a, r) => a + (r.usage?.completion_tokens ?? r.tokens), 0);
let promptTokens = 0, cached = 0, withCache = 0;
for (const r of results) {
  const pt = r.usage?.prompt_tokens;
  if (pt === undefined) continue;
  promptTokens += pt;
  const c = r.usage?.prompt_tokens_details?.cached_tokens ??
            (r.timings?.prompt_n !== undefined ? pt - r.timings.prompt_n : undefined);
  if (c !== undefined) { cached += c; withCache++; }
}
console.log(JSON.stringify({
  label: args.label ?? url, concurrency, requests: total, max_tokens: maxTokens,
  seconds: +wall.toFixed(3), requests_per_s: +(total / wall).toFixed(2),
  tokens_per_s: +(gen / wall).toFixed(1),
  ttft_ms_p50: +quantile(ttft, 0.5).toFixed(1), ttft_ms_p95: +quantile(ttft, 0.95).toFixed(1),
  itl_ms_p50: gaps.length ? +quantile(gaps, 0.5).toFixed(2) : null,
  itl_ms_p95: gaps.length ? +quantile(gaps, 0.95).toFixed(2) : null,
  cache_hit_rate: withCache ? +(cached / promptTokens).toFixed(3) : null,
  connection_retries: retries,
}));
