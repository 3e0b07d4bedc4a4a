// page.test.mjs: the page of `ctxshift serve` (tools/page, embedded in the
// binary) in headless Chromium: Debian's chromium driven by playwright-core.
//
// Starts `ctxshift serve --port 0 -c 512 -np 2 --api-key K` on the default
// model, opens GET / (public), sees the map refused without the key, types
// the key (then the chat and the map's EventSource authenticate with it), sends a chat message and waits for a
// streamed reply, checks the cache map shows used cells (its data attributes
// and its pixels), sends a second message and sees the counters change,
// takes a screenshot, and reloads to see the key kept in localStorage. Any
// console error or page error after the key is typed fails the test.
//
// env: CTXSHIFT (the binary, required), CHROMIUM (default /usr/bin/chromium),
// PAGE_OUT (where page.png goes; default $TMPDIR).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.CTXSHIFT;
const BROWSER = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.PAGE_OUT || tmpdir();
const KEY = 'page-test-key';

// Start the server; resolves with its base URL once it prints it.
function startServer() {
  const proc = spawn(BIN, ['serve', '--port', '0', '-c', '512', '-np', '2', '--api-key', KEY], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const url = new Promise((resolve, reject) => {
    const onData = (b) => {
      log += b.toString();
      const m = log.match(/listening on (http:\/\/[^\s]+)/);
      if (m) resolve(m[1].replace(/\/$/, ''));
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => reject(new Error(`ctxshift serve exited (${code}):\n${log}`)));
    const timer = setTimeout(() => reject(new Error(`ctxshift serve did not start in 30 s:\n${log}`)), 30000);
    timer.unref(); // the test ends without waiting for it
  });
  return { proc, url, log: () => log };
}

test('the page chats and maps the cache', { timeout: 180000 }, async (t) => {
  assert.ok(BIN, 'set CTXSHIFT to the ctxshift binary');
  const srv = startServer();
  let browser = null;
  // The browser first: a server gone under a live EventSource is an error.
  t.after(async () => {
    if (browser) await browser.close();
    srv.proc.kill('SIGTERM');
  });
  const base = await srv.url;

  // The page and its assets are served with no key and the right types;
  // the API still needs the key (so the page's key handling is exercised).
  for (const [path, type] of [
    ['/', 'text/html'],
    ['/page.js', 'text/javascript'],
    ['/page.css', 'text/css'],
  ]) {
    const r = await fetch(base + path);
    assert.equal(r.status, 200, path);
    assert.match(r.headers.get('content-type'), new RegExp('^' + type), path);
    assert.ok((await r.text()).length > 100, path);
  }
  assert.equal((await fetch(base + '/nope.html')).status, 404);
  const unauth = await fetch(base + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: '{"messages":[{"role":"user","content":"hi"}]}',
  });
  assert.equal(unauth.status, 401);

  browser = await chromium.launch({
    executablePath: BROWSER,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

  // Without the key the map is refused (401) and the page says so; the
  // browser itself logs the refused request as a console error, the only
  // one allowed, and only in this phase.
  await page.goto(base + '/');
  assert.equal(await page.title(), 'ctxshift serve');
  await page.waitForFunction(() => document.getElementById('conn').textContent.includes('API key'));
  assert.ok(problems.length > 0 && problems.every((p) => p.includes('status of 401')), problems.join('\n'));
  problems.length = 0;

  await page.fill('#api-key', KEY);
  await page.press('#api-key', 'Tab'); // change event: stored, map reconnects
  await page.waitForFunction(() => document.getElementById('conn').classList.contains('live'));
  await page.waitForFunction(() => +document.getElementById('map').dataset.updates > 0);

  const reply = (i) => page.locator('.msg.assistant').nth(i);
  const send = async (text, i) => {
    await page.fill('#input', text);
    await page.click('#send');
    await page.waitForFunction(
      (n) => document.querySelectorAll('.msg.assistant[data-done="true"]').length > n,
      i,
      { timeout: 60000 }
    );
    const body = (await reply(i).locator('.body').textContent()) || '';
    assert.ok(body.trim().length > 0, `reply ${i} is empty`);
    return body;
  };
  const counters = () =>
    page.$$eval('#counters dd', (dds) => dds.map((d) => d.id + '=' + d.textContent).join(' '));

  const first = await send('Tell me a story about a cat.', 0);
  // The slot keeps the conversation in the cache: used cells appear.
  await page.waitForFunction(() => +document.getElementById('map').dataset.used > 0, null, {
    timeout: 10000,
  });
  // both read in one evaluation: a map event between two reads would change
  // the second (the counters follow the cache while the slot finishes)
  const [usedAttr, usedText] = await page.evaluate(() => [
    document.getElementById('map').dataset.used,
    document.getElementById('c-used').textContent,
  ]);
  const used1 = +usedAttr;
  assert.match(usedText, new RegExp(`^${used1} / 512$`));
  // ... and the canvas shows them: some pixels are not the free/hole/gap shades.
  const painted = await page.evaluate(() => {
    const c = document.getElementById('map');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] && Math.max(d[i], d[i + 1], d[i + 2]) > 100) n++;
    return n;
  });
  assert.ok(painted > 0, 'the map paints no used cell');

  const before = await counters();
  // 200 more tokens overflow the slot's 256 positions: a context shift.
  await page.fill('#max-tokens', '200');
  const second = await send('What did the cat do next?', 1);
  await page.waitForFunction(
    (b) =>
      [...document.querySelectorAll('#counters dd')].map((d) => d.id + '=' + d.textContent).join(' ') !== b,
    before,
    { timeout: 10000 }
  );
  // The map catches up with the end of the reply: every slot idle again.
  await page.waitForFunction(() => document.getElementById('map').dataset.busy === '0', null, {
    timeout: 10000,
  });
  await page.waitForTimeout(300); // two more publications: the final counters
  const after = await counters();
  assert.notEqual(after, before);
  // The second prompt repeats the first turn: that prefix is in the cache.
  const reused = +(await page.textContent('#c-tokens_reused'));
  const used2 = +(await page.getAttribute('#map', 'data-used'));
  assert.ok(used2 > 0);
  // A context shift must happen and show in the event log. The chat's reply
  // may end (end of story) before the slot fills, so one more request that
  // cannot end early (ignore_eos, 400 tokens in a 256-position slot) makes
  // sure: the log is then checked unconditionally.
  if (+(await page.textContent('#c-context_shifts')) === 0) {
    const r = await fetch(`${base}/completion`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ prompt: 'Once upon a time', n_predict: 400, ignore_eos: true }),
    });
    assert.equal(r.status, 200);
    await page.waitForFunction(() => +document.getElementById('c-context_shifts').textContent > 0,
                               null, { timeout: 10000 });
  }
  // Each shift the counters report is in the event log, as it happened.
  const shifts = +(await page.textContent('#c-context_shifts'));
  const kshifts = +(await page.textContent('#c-kshift_passes'));
  const defrags = +(await page.textContent('#c-defrags'));
  assert.ok(shifts > 0 && kshifts > 0, `shifts ${shifts}, K-shift passes ${kshifts}`);
  await page.waitForFunction(() => document.querySelectorAll('#log li.shift').length > 0 &&
                                   document.querySelectorAll('#log li.kshift').length > 0,
                             null, { timeout: 5000 });
  if (defrags > 0) assert.ok(await page.locator('#log li.defrag').count() > 0, 'no defrag logged');
  t.diagnostic(`replies: ${JSON.stringify(first.slice(0, 60))} / ${JSON.stringify(second.slice(0, 60))}`);
  t.diagnostic(`counters before: ${before}`);
  t.diagnostic(`counters after:  ${after} (tokens reused ${reused}, used ${used1} -> ${used2})`);

  mkdirSync(OUT, { recursive: true });
  const shot = join(OUT, 'page.png');
  await page.screenshot({ path: shot });
  const png = readFileSync(shot);
  assert.ok(statSync(shot).size > 5000, 'the screenshot is too small');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  t.diagnostic(`screenshot: ${shot}`);

  // Stop aborts the streamed reply; the server sees the client go and frees
  // the slot.
  // The tiny model can finish a reply before a click from here arrives, so
  // the page clicks Stop itself on the reply's first text.
  await page.fill('#max-tokens', '4000');
  await page.evaluate(() => {
    const obs = new MutationObserver(() => {
      const m = document.querySelectorAll('.msg.assistant');
      if (m.length === 3 && m[2].querySelector('.body').textContent.length > 0) {
        obs.disconnect();
        document.getElementById('stop').click();
      }
    });
    obs.observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
  });
  await page.fill('#input', 'And then?');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelectorAll('.msg.assistant')[2].dataset.done === 'true');
  assert.match(await reply(2).textContent(), /stopped/);
  await page.waitForFunction(() => document.getElementById('map').dataset.busy === '0', null, {
    timeout: 10000,
  });

  // The key survives a reload (localStorage) and the map reconnects with it.
  await page.reload();
  assert.equal(await page.inputValue('#api-key'), KEY);
  await page.waitForFunction(() => document.getElementById('conn').classList.contains('live'));

  assert.deepEqual([...problems], [], 'console or page errors');
});
