// lifecycle.test.mjs: faults and stops of `ctxshift serve`.
// kill -9 in the middle of a stream, then a restart on the same
// --slot-save-path: the unfinished temporaries a crashed save leaves
// (".NAME.tmp.PID") are removed at start, a user's file that merely looks
// alike is kept, no temporary is ever restored, and the slot saved before
// the crash restores to the same tokens. SIGTERM during streams: new
// connections are refused at once (a request on a connection opened
// before gets 503), a stream that finishes within the grace
// ends normally, an endless one ends with an error event and [DONE], and
// the exit status is 0 within 10 s. Waits scale with SLOW (ASan).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { startServer, post, get, greedy, parseSSE, until, SLOW } from "./lib.mjs";

const PROMPT = "Once upon a time";
const ENDLESS = { prompt: PROMPT, n_predict: 1_000_000, ignore_eos: true, temperature: 0 };

// A streamed request: {reader, text(), readEvents(n), rest()} over fetch.
async function openStream(base, route, body) {
  const res = await fetch(base + route, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  const s = { text: "", ended: false, error: null };
  // read until at least n events arrived (or the end)
  s.readEvents = async (n) => {
    while (!s.ended && s.text.split("\n\n").length <= n) {
      const { value, done } = await reader.read();
      if (done) s.ended = true;
      else s.text += dec.decode(value, { stream: true });
    }
  };
  // read to the end, bounded; a reset is recorded, not thrown
  s.rest = async (ms) => {
    const t0 = Date.now();
    try {
      while (!s.ended) {
        const { value, done } = await reader.read();
        if (done) s.ended = true;
        else s.text += dec.decode(value, { stream: true });
        assert.ok(Date.now() - t0 < ms, `the stream went on for ${ms} ms`);
      }
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      s.error = e;
    }
  };
  return s;
}

// Whether a TCP connect to port is refused (true) or accepted (false).
function refused(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    sock.on("connect", () => {
      sock.destroy();
      resolve(false);
    });
    sock.on("error", (e) => resolve(e.code === "ECONNREFUSED"));
  });
}

const exitOf = (proc) =>
  proc.exitCode !== null || proc.signalCode !== null
    ? Promise.resolve({ code: proc.exitCode, signal: proc.signalCode })
    : new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));

describe("kill -9 and restart with --slot-save-path", () => {
  test("saved slots restore, unfinished temporaries are removed and never used", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cs-life-"));
    const args = ["-c", "512", "-np", "2", "--slots", "--cache-entries", "0", "--slot-save-path", dir];
    try {
      const srv = await startServer(args);
      const out0 = await greedy(srv.base, PROMPT, 16, { id_slot: 0, return_tokens: true });
      const s = await post(srv.base, "/slots/0?action=save", { filename: "a.bin" });
      assert.equal(s.status, 200, s.text);
      const nSaved = s.json.n_saved;
      assert.ok(nSaved > 0);
      const saved = fs.readFileSync(path.join(dir, "a.bin"));
      // a stream on the other slot, killed in the middle
      const st = await openStream(srv.base, "/completion", { ...ENDLESS, id_slot: 1 });
      await st.readEvents(4);
      assert.ok(!st.ended, "the endless stream ended before the kill");
      const pid = srv.proc.pid;
      srv.proc.kill("SIGKILL");
      assert.deepEqual(await exitOf(srv.proc), { code: null, signal: "SIGKILL" });
      // the client sees the connection end (a reset or an early end)
      await st.rest(10_000 * SLOW);

      // what a save killed between write and rename leaves: partial
      // temporaries (one beside an existing file, one of a file never
      // renamed into place), and a user's file named like a temporary
      const tmpA = path.join(dir, `.a.bin.tmp.${pid}`);
      const tmpB = path.join(dir, `.b.bin.tmp.${pid}`);
      const lookalike = path.join(dir, `keep.tmp.${pid}`);
      fs.writeFileSync(tmpA, Buffer.alloc(saved.length >> 1, 0x5a));
      fs.writeFileSync(tmpB, saved.subarray(0, saved.length >> 1));
      fs.writeFileSync(lookalike, "a user's file");

      const srv2 = await startServer(args);
      try {
        const note = /removed 2 unfinished slot file temporaries/;
        assert.match(await srv2.waitStderr(note), note);
        assert.equal(fs.existsSync(tmpA), false, "a stale temporary was left");
        assert.equal(fs.existsSync(tmpB), false, "a stale temporary was left");
        assert.equal(fs.readFileSync(lookalike, "utf8"), "a user's file");
        assert.deepEqual(fs.readFileSync(path.join(dir, "a.bin")), saved, "the saved file changed");
        // the file whose save never finished does not exist; a temporary
        // cannot be named by a request
        const b = await post(srv2.base, "/slots/0?action=restore", { filename: "b.bin" });
        assert.equal(b.status, 404, b.text);
        const t = await post(srv2.base, "/slots/0?action=restore", { filename: `.b.bin.tmp.${pid}` });
        assert.equal(t.status, 400, t.text);
        // the saved slot restores to the same tokens
        const r = await post(srv2.base, "/slots/0?action=restore", { filename: "a.bin" });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.n_restored, nSaved);
        const sl = (await get(srv2.base, "/slots")).json.find((x) => x.id === 0);
        assert.equal(sl.n_cached_tokens, nSaved);
        const again = await greedy(srv2.base, PROMPT, 16, { id_slot: 0, return_tokens: true });
        assert.deepEqual(again.tokens, out0.tokens);
        assert.equal(again.content, out0.content);
        assert.ok(again.timings.prompt_n <= 1, `prompt_n ${again.timings.prompt_n}: the restore was not used`);
      } finally {
        await srv2.stop();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("SIGTERM", () => {
  test("refuses new connections, ends streams cleanly, exits 0 within 10 s", async () => {
    const srv = await startServer(["-c", "512", "-np", "2"]);
    const exited = exitOf(srv.proc);
    const endless = await openStream(srv.base, "/v1/completions", { ...ENDLESS, max_tokens: 1_000_000 });
    await endless.readEvents(4);
    // a stream that finishes within the grace: started, then SIGTERM
    const short = await openStream(srv.base, "/v1/completions", {
      prompt: "The little dog", max_tokens: 48, ignore_eos: true, temperature: 0,
    });
    await short.readEvents(2);
    // a keep-alive connection that the server has taken (one request
    // answered: a connection still in the kernel's backlog would be reset
    // with the listening socket), its next request sent after the signal
    const early = net.connect(srv.port, "127.0.0.1");
    await new Promise((r, j) => early.on("connect", r).on("error", j));
    let earlyText = "";
    early.setEncoding("latin1");
    early.on("data", (d) => (earlyText += d));
    early.on("error", () => {});
    early.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.ok(await until(() => /\r\n\r\n.*\}/s.test(earlyText), 5000 * SLOW), `no /health answer: ${earlyText}`);
    assert.match(earlyText, /^HTTP\/1\.1 200/);
    earlyText = "";
    const t0 = Date.now();
    srv.proc.kill("SIGTERM");
    // refused once the signal is handled (ms), while the grace still runs
    assert.ok(await until(() => refused(srv.port), 3000 * SLOW, 20), "new connections are still accepted");
    assert.equal(srv.alive(), true, "the server exited before its streams ended");
    const body = JSON.stringify({ prompt: PROMPT, n_predict: 4 });
    early.write(`POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${body}`);
    assert.ok(await until(() => /\r\n\r\n.*\}/s.test(earlyText), 5000 * SLOW), `no answer: ${earlyText}`);
    assert.match(earlyText, /^HTTP\/1\.1 503/);
    assert.match(earlyText, /shutting down/);
    early.destroy();

    await short.rest(15_000 * SLOW);
    assert.equal(short.error, null, `the short stream was cut: ${short.error}`);
    const se = parseSSE(short.text);
    assert.equal(se.at(-1), "[DONE]");
    assert.equal(se.at(-2).choices[0].finish_reason, "length", JSON.stringify(se.at(-2)));

    await endless.rest(15_000 * SLOW);
    assert.equal(endless.error, null, `the endless stream was cut: ${endless.error}`);
    const ee = parseSSE(endless.text);
    assert.equal(ee.at(-1), "[DONE]");
    assert.equal(ee.at(-2).error?.code, 503, JSON.stringify(ee.at(-2)));
    assert.match(ee.at(-2).error.message, /shutting down/);

    let timer;
    const limit = 10_000 * SLOW;
    const res = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r(null), limit)))]);
    clearTimeout(timer);
    if (!res) srv.proc.kill("SIGKILL");
    assert.deepEqual(res, { code: 0, signal: null }, `no clean exit in ${limit} ms; stderr:\n${srv.stderr().slice(-2000)}`);
    const ms = Date.now() - t0;
    assert.ok(ms < limit, `exit ${ms} ms after SIGTERM`);
  });
});
