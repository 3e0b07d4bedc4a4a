// The page of `ctxshift serve`: a chat (POST /v1/chat/completions, streamed)
// and a live map of the one KV cache all slots share (GET /cache/events, an
// SSE stream the engine publishes at most 10 times a second). No framework,
// no external resource: this file is embedded in the binary.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);

  // ----------------------------------------------------------- API key
  // Sent as "Authorization: Bearer" on fetches and as ?api_key= on the
  // EventSource (which cannot send headers); kept in localStorage.
  const KEY_STORE = 'ctxshift.apiKey';
  let apiKey = '';
  try {
    apiKey = localStorage.getItem(KEY_STORE) || '';
  } catch (_) {
    /* storage disabled: the key lives for this page only */
  }
  const keyInput = $('api-key');
  keyInput.value = apiKey;
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault(); // Enter in the key field: the change event below does the work
    keyInput.blur();
  });
  keyInput.addEventListener('change', () => {
    apiKey = keyInput.value.trim();
    try {
      if (apiKey) localStorage.setItem(KEY_STORE, apiKey);
      else localStorage.removeItem(KEY_STORE);
    } catch (_) {
      /* not persisted */
    }
    connectMap();
  });
  const authHeaders = () => (apiKey ? { Authorization: 'Bearer ' + apiKey } : {});

  fetch('/v1/models', { headers: authHeaders() })
    .then((r) => (r.ok ? r.json() : null))
    .then((j) => {
      const id = j && j.data && j.data[0] && j.data[0].id;
      if (id) $('model').textContent = id.split('/').pop();
    })
    .catch(() => {});

  // -------------------------------------------------------------- chat
  const messages = $('messages');
  const input = $('input');
  const sendBtn = $('send');
  const stopBtn = $('stop');
  let history = []; // {role, content} of the finished turns
  let abort = null; // the AbortController of the reply being streamed

  function addMessage(role, text) {
    const div = document.createElement('div');
    div.className = 'msg ' + role;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = role === 'error' ? 'error' : role;
    const body = document.createElement('span');
    body.className = 'body';
    body.textContent = text;
    div.append(who, body);
    messages.append(div);
    messages.scrollTop = messages.scrollHeight;
    return div;
  }

  function addNote(div, text) {
    const n = document.createElement('span');
    n.className = 'note';
    n.textContent = ' — ' + text;
    div.append(n);
  }

  // The data fields of a Server-Sent Events stream, one string per event.
  async function* sseData(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf = (buf + value).replace(/\r\n/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data) yield data;
      }
    }
  }

  async function send(text) {
    const sys = $('system').value.trim();
    const turn = { role: 'user', content: text };
    const msgs = (sys ? [{ role: 'system', content: sys }] : []).concat(history, [turn]);
    const maxTokens = Math.max(1, Math.min(4096, parseInt($('max-tokens').value, 10) || 96));
    addMessage('user', text);
    const out = addMessage('assistant', '');
    out.classList.add('streaming');
    const body = out.querySelector('.body');
    abort = new AbortController();
    sendBtn.disabled = true;
    stopBtn.disabled = false;
    let reply = '';
    let finish = null;
    try {
      const res = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: Object.assign({ 'Content-Type': 'application/json' }, authHeaders()),
        body: JSON.stringify({ messages: msgs, stream: true, max_tokens: maxTokens }),
        signal: abort.signal,
      });
      if (!res.ok) {
        const j = await res.json().catch(() => null);
        throw new Error((j && j.error && j.error.message) || 'HTTP ' + res.status);
      }
      for await (const data of sseData(res.body)) {
        if (data === '[DONE]') break;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message || 'error');
        const c = j.choices && j.choices[0];
        if (c && c.delta && typeof c.delta.content === 'string') {
          reply += c.delta.content;
          body.textContent = reply;
          messages.scrollTop = messages.scrollHeight;
        }
        if (c && c.finish_reason) finish = c.finish_reason;
      }
      history.push(turn, { role: 'assistant', content: reply });
      if (finish === 'length') addNote(out, 'max tokens reached');
    } catch (e) {
      if (e.name === 'AbortError') {
        addNote(out, 'stopped');
        history.push(turn, { role: 'assistant', content: reply });
      } else {
        out.classList.remove('assistant');
        out.classList.add('error');
        out.querySelector('.who').textContent = 'error';
        body.textContent = e.message;
      }
    } finally {
      out.classList.remove('streaming');
      out.dataset.done = 'true';
      abort = null;
      sendBtn.disabled = false;
      stopBtn.disabled = true;
    }
  }

  $('chat-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || abort) return;
    input.value = '';
    send(text);
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('chat-form').requestSubmit();
    }
  });
  stopBtn.addEventListener('click', () => abort && abort.abort());
  $('clear').addEventListener('click', () => {
    if (abort) abort.abort();
    history = [];
    messages.textContent = '';
    input.focus();
  });

  // --------------------------------------------------------- cache map
  // cells: one character per KV cell: '.' empty, ALPHA[seq] for a cell of
  // one sequence (slots first, then cached-prefix entries, then the
  // scratch sequence), '*' for a cell several sequences share.
  const ALPHA = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+=';
  const SLOT_COLORS = ['#4ea1ff', '#ff7a59', '#54d19b', '#c792ea', '#ffcb6b', '#5fd7e0', '#f78fb3', '#a3e048'];
  const COLOR = {
    shared: '#d9d2f0',
    sharedMark: '#5b4f86',
    hole: '#4a2327',
    holeMark: '#a14a52',
    free: '#1c2029',
    scratch: '#8a93a3',
  };
  const slotColor = (i) =>
    i < SLOT_COLORS.length ? SLOT_COLORS[i] : `hsl(${(i * 67) % 360}, 75%, 62%)`;
  const entryColor = (i) => `hsl(${(200 + i * 53) % 360}, 16%, 40%)`;

  const canvas = $('map');
  const wrap = $('map-wrap');
  const COUNTERS = [
    'holes', 'prefix_hits', 'tokens_reused', 'cached_prefixes', 'context_shifts',
    'kshift_passes', 'cells_rotated', 'defrags', 'cells_moved',
  ];
  let map = null; // the last event
  let updates = 0;
  let es = null;

  function setConn(state, text) {
    const c = $('conn');
    c.className = 'conn ' + state;
    c.textContent = text;
  }

  function connectMap() {
    if (es) es.close();
    const url = '/cache/events' + (apiKey ? '?api_key=' + encodeURIComponent(apiKey) : '');
    es = new EventSource(url);
    es.onopen = () => setConn('live', '● live');
    es.onerror = () => setConn('down', es.readyState === 2 ? 'map refused (API key?)' : 'reconnecting…');
    es.onmessage = (ev) => {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch (_) {
        return; // not a map event
      }
      onMap(m);
    };
  }

  function logEvent(kind, text) {
    const log = $('log');
    const li = document.createElement('li');
    li.className = kind;
    const t = document.createElement('span');
    t.className = 't';
    t.textContent = new Date().toLocaleTimeString([], { hour12: false });
    li.append(t, text);
    log.prepend(li);
    while (log.children.length > 60) log.lastChild.remove();
  }

  let flashTimer = 0;
  function flash() {
    wrap.classList.add('flash');
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => wrap.classList.remove('flash'), 180);
  }

  function onMap(m) {
    const prev = map;
    map = m;
    updates++;
    const d = (k) => (prev ? (m[k] || 0) - (prev[k] || 0) : 0);
    if (!prev) {
      logEvent('info', `map: ${m.size} cells, ${m.n_slots} slots, ${m.n_entries} prefix entries`);
    } else {
      let big = false;
      if (d('context_shifts') > 0) {
        logEvent('shift', `context shift ×${d('context_shifts')}`);
        big = true;
      }
      if (d('kshift_passes') > 0) {
        logEvent('kshift', `K-shift pass ×${d('kshift_passes')}, ${d('cells_rotated')} cells rotated`);
        big = true;
      }
      if (d('defrags') > 0) {
        logEvent('defrag', `defrag ×${d('defrags')}, ${d('cells_moved')} cells moved`);
        big = true;
      }
      if (d('prefix_hits') > 0) {
        logEvent('prefix', `prefix hit ×${d('prefix_hits')}, ${d('tokens_reused')} tokens reused`);
      }
      if (big) flash();
    }
    $('c-used').textContent = `${m.used} / ${m.size}`;
    for (const k of COUNTERS) {
      const el = $('c-' + k);
      el.textContent = String(m[k]);
      if (prev && m[k] !== prev[k]) {
        el.classList.add('changed');
        setTimeout(() => el.classList.remove('changed'), 1200);
      }
    }
    $('cache-size').textContent = `${m.size} cells · ${m.n_slots} slots · ${m.n_entries} prefix entries`;
    canvas.dataset.used = String(m.used);
    canvas.dataset.size = String(m.size);
    canvas.dataset.updates = String(updates);
    canvas.dataset.busy = String(m.slots.filter((s) => s.busy).length);
    canvas.setAttribute(
      'aria-label',
      `cache map: ${m.used} of ${m.size} cells used, ${m.holes} holes, ` +
        m.slots.map((s) => `slot ${s.id} ${s.busy ? 'busy' : 'idle'} with ${s.n_cache} tokens`).join(', ')
    );
    legend(m);
    draw();
  }

  function legend(m) {
    const ul = $('legend');
    const items = m.slots.map((s) => [
      slotColor(s.id),
      `slot ${s.id}${s.busy ? ' ●' : ''} · ${s.n_cache} tok`,
    ]);
    items.push([entryColor(0), 'cached prefix'], [COLOR.shared, 'shared'],
      [COLOR.hole, 'hole'], [COLOR.free, 'free']);
    ul.textContent = '';
    for (const [color, text] of items) {
      const li = document.createElement('li');
      const sw = document.createElement('span');
      sw.className = 'sw';
      sw.style.background = color;
      li.append(sw, text);
      ul.append(li);
    }
  }

  function cellColor(ch, m) {
    const id = ALPHA.indexOf(ch);
    if (id < 0) return COLOR.scratch;
    if (id < m.n_slots) return slotColor(id);
    if (id < m.n_slots + m.n_entries) return entryColor(id - m.n_slots);
    return COLOR.scratch;
  }

  // One square per cell (or per group of cells when the cache is larger
  // than the canvas has pixels); the grid fills the width, at most MAX_H
  // CSS pixels high.
  const MAX_H = 320;
  function draw() {
    if (!map) return;
    const cells = map.cells || '';
    const n = cells.length;
    const W = Math.max(100, canvas.parentElement.clientWidth - 12);
    let pitch = 2;
    let group = 1;
    for (let p = 22; p >= 2; p--) {
      if (Math.ceil(n / Math.floor(W / p)) * p <= MAX_H) {
        pitch = p;
        break;
      }
    }
    let cols = Math.floor(W / pitch);
    if (Math.ceil(n / cols) * pitch > MAX_H) group = Math.ceil(n / (cols * Math.floor(MAX_H / pitch)));
    const blocks = Math.ceil(n / group);
    const rows = Math.max(1, Math.ceil(blocks / cols));
    if (rows === 1) cols = Math.max(1, blocks);
    const H = rows * pitch;
    const dpr = window.devicePixelRatio || 1;
    canvas.style.height = H + 'px';
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    let hi = -1; // the highest used cell: empty cells below it are holes
    for (let i = n - 1; i >= 0; i--) {
      if (cells[i] !== '.') {
        hi = i;
        break;
      }
    }
    const gap = pitch >= 5 ? 1 : 0;
    const x0 = Math.floor((W - cols * pitch + gap) / 2); // centred
    const s = pitch - gap;
    for (let b = 0; b < blocks; b++) {
      // a group shows a shared cell when it has one, else its first used cell
      let ch = '.';
      for (let i = b * group, e = Math.min(n, (b + 1) * group); i < e; i++) {
        if (cells[i] === '*') {
          ch = '*';
          break;
        }
        if (ch === '.' && cells[i] !== '.') ch = cells[i];
      }
      const x = x0 + (b % cols) * pitch;
      const y = Math.floor(b / cols) * pitch;
      if (ch === '.') {
        const hole = b * group < hi;
        g.fillStyle = hole ? COLOR.hole : COLOR.free;
        g.fillRect(x, y, s, s);
        if (hole && s >= 6) {
          g.fillStyle = COLOR.holeMark; // a dot tells a hole from free space without colour
          g.fillRect(x + s / 2 - 1, y + s / 2 - 1, 2, 2);
        }
      } else if (ch === '*') {
        g.fillStyle = COLOR.shared;
        g.fillRect(x, y, s, s);
        if (s >= 6) {
          g.strokeStyle = COLOR.sharedMark; // a diagonal marks sharing without colour
          g.lineWidth = 1.5;
          g.beginPath();
          g.moveTo(x + 1, y + s - 1);
          g.lineTo(x + s - 1, y + 1);
          g.stroke();
        }
      } else {
        g.fillStyle = cellColor(ch, map);
        g.fillRect(x, y, s, s);
      }
    }
  }

  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(draw, 100);
  });

  connectMap();
  input.focus();
})();
