// lib.mjs: helpers of the `ctxshift serve` tests (tests/serve/*.test.mjs).
//
// startServer spawns the binary named by env CTXSHIFT as
// `ctxshift serve --port 0 ARGS...`, reads the port from its stdout line
// "serve: listening on http://HOST:PORT" and collects stderr; stop() sends
// SIGTERM and asserts a clean shutdown (exit status 0, no signal). Time
// limits are generous: the suite also runs under ASan (tests/serve_test.sh).
import { spawn } from "node:child_process";
import net from "node:net";
import assert from "node:assert/strict";

export const BIN = process.env.CTXSHIFT;
// ASan builds are several times slower: every wait scales with this.
export const SLOW = Number(process.env.CTXSHIFT_SLOW || 1);

const START_MS = 60_000 * SLOW;
const STOP_MS = 30_000 * SLOW;

export async function startServer(args = []) {
  assert.ok(BIN, "env CTXSHIFT must name the ctxshift binary");
  const proc = spawn(BIN, ["serve", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  let stdout = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => (stderr += d));
  proc.stdout.setEncoding("utf8");
  const exited = new Promise((resolve) =>
    proc.on("exit", (code, signal) => resolve({ code, signal })),
  );
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`serve did not start in ${START_MS} ms; stderr:\n${stderr}`));
    }, START_MS);
    proc.stdout.on("data", (d) => {
      stdout += d;
      const m = /serve: listening on http:\/\/[^\s]*:(\d+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited (${code ?? signal}) before listening; stderr:\n${stderr}`));
    });
  });
  const base = `http://127.0.0.1:${port}`;
  let stopped = false;
  return {
    port,
    base,
    proc,
    stderr: () => stderr,
    // stderr once it matches re: the server writes its start-up notes to
    // stderr before the stdout line startServer waits for, but the two
    // pipes arrive independently, so a note may land after that line.
    async waitStderr(re, ms = 5_000 * SLOW) {
      const t0 = Date.now();
      while (!re.test(stderr) && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 10));
      return stderr;
    },
    alive: () => proc.exitCode === null && proc.signalCode === null,
    // SIGTERM, then exit status 0 within STOP_MS.
    async stop() {
      if (stopped) return;
      stopped = true;
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      let timer;
      const res = await Promise.race([
        exited,
        new Promise((r) => (timer = setTimeout(() => r(null), STOP_MS))),
      ]);
      clearTimeout(timer);
      if (!res) {
        proc.kill("SIGKILL");
        assert.fail(`serve did not exit within ${STOP_MS} ms of SIGTERM; stderr:\n${stderr}`);
      }
      assert.deepEqual(
        res,
        { code: 0, signal: null },
        `serve did not shut down cleanly; stderr:\n${stderr.slice(-4000)}`,
      );
    },
  };
}

// JSON request through fetch: {status, headers, text, json (or undefined)}.
export async function request(base, method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    if (!init.headers["Content-Type"]) init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(base + path, init);
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, text, json };
}

export const post = (base, path, body, headers) => request(base, "POST", path, body, headers);
export const get = (base, path, headers) => request(base, "GET", path, undefined, headers);

// Raw bytes over a socket, for requests fetch refuses to send. Reads until
// the server closes or the response is complete (Content-Length); returns
// {status, head, body, raw}. status 0: the server closed without answering.
export function raw(port, data, { timeoutMs = 20_000 * SLOW } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    const chunks = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const all = Buffer.concat(chunks).toString("latin1");
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(all);
      const sep = all.indexOf("\r\n\r\n");
      resolve({
        status: m ? Number(m[1]) : 0,
        head: sep >= 0 ? all.slice(0, sep) : all,
        body: sep >= 0 ? all.slice(sep + 4) : "",
        raw: all,
      });
    };
    const timer = setTimeout(() => {
      if (chunks.length) finish();
      else {
        sock.destroy();
        reject(new Error(`raw request: no answer in ${timeoutMs} ms`));
      }
    }, timeoutMs);
    sock.on("data", (d) => {
      chunks.push(d);
      const all = Buffer.concat(chunks).toString("latin1");
      const sep = all.indexOf("\r\n\r\n");
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(all.slice(0, sep >= 0 ? sep : all.length));
      if (sep >= 0 && cl && Buffer.byteLength(all.slice(sep + 4), "latin1") >= Number(cl[1])) finish();
    });
    sock.on("end", finish);
    sock.on("close", finish);
    sock.on("error", (e) => {
      if (chunks.length) finish();
      else if (!done) {
        done = true;
        clearTimeout(timer);
        // a reset before any answer: reported as status 0
        resolve({ status: 0, head: "", body: "", raw: "", error: e.code });
      }
    });
    sock.write(data);
  });
}

// Prometheus text into {name: value}.
export async function metrics(base, headers) {
  const r = await get(base, "/metrics", headers);
  assert.equal(r.status, 200, r.text);
  const out = {};
  for (const line of r.text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const [name, value] = line.split(/\s+/);
    out[name] = Number(value);
  }
  return out;
}

// A greedy /completion: its content (asserts 200).
export async function greedy(base, prompt, n_predict = 16, extra = {}, headers) {
  const r = await post(
    base,
    "/completion",
    { prompt, n_predict, temperature: 0, ...extra },
    headers,
  );
  assert.equal(r.status, 200, r.text);
  return r.json;
}

// The body of an SSE response: the JSON of every "data:" event (the string
// "[DONE]" as is), asserting the framing (only "data: " lines, blank-line
// separated).
export function parseSSE(text) {
  const events = [];
  for (const block of text.split("\n\n")) {
    if (block === "") continue;
    assert.ok(block.startsWith("data: "), `SSE event not a data line: ${JSON.stringify(block)}`);
    assert.ok(!block.includes("\n"), `SSE event of several lines: ${JSON.stringify(block)}`);
    const payload = block.slice(6);
    events.push(payload === "[DONE]" ? payload : JSON.parse(payload));
  }
  return events;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll fn until it returns a truthy value or ms pass; returns the last value.
export async function until(fn, ms = 10_000 * SLOW, step = 50) {
  const end = Date.now() + ms;
  let v;
  while (!(v = await fn()) && Date.now() < end) await sleep(step);
  return v;
}
