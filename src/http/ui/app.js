// The live view of LLM Analytics Hub: recent events, continuous queries and a live chart of
// events per second, fed by GET /api/v1/stream (Server-Sent Events read with fetch(), because
// EventSource cannot send an API key). No dependencies; served from the binary.
'use strict';

(() => {
  const KEY_STORAGE = 'llm-analytics-hub.api-key';
  const WINDOW_SECS = 60;
  const EVENTS_LIMIT = 20;
  const $ = (id) => document.getElementById(id);

  let apiKey = localStorage.getItem(KEY_STORAGE) || '';
  // The resume token of the last row received: sent as `after=` when reconnecting.
  let lastId = null;
  let liveCount = 0;
  let retryMs = 1000;
  // Bumped whenever the stream is restarted; an older connection's callbacks then do nothing.
  let generation = 0;
  let controller = null;
  // Rows received per second (client clock), for the chart.
  const perSecond = new Map();
  const errors = new Map();

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    if (apiKey) headers.Authorization = 'Bearer ' + apiKey;
    return headers;
  }

  function showError(source, message) {
    if (message) errors.set(source, message);
    else errors.delete(source);
    const el = $('error');
    el.textContent = Array.from(errors.values()).join(' · ');
    el.hidden = errors.size === 0;
  }

  async function getJson(path) {
    const res = await fetch(path, { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      // Not JSON: the status says enough.
    }
    if (!res.ok) {
      const err = new Error(`${res.status} ${body && body.error ? body.error.message : res.statusText}`);
      err.status = res.status;
      err.code = body && body.error ? body.error.code : null;
      throw err;
    }
    return body;
  }

  function cell(value, className) {
    const td = document.createElement('td');
    td.textContent = value === null || value === undefined ? '' : String(value);
    if (className) td.className = className;
    return td;
  }

  function num(value) {
    if (value === null || value === undefined || value === '') return '';
    const n = Number(value);
    return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: 1 }) : String(value);
  }

  // ---- recent events ----

  let eventsTimer = null;
  let eventsLoading = false;

  async function loadEvents() {
    eventsTimer = null;
    if (eventsLoading) return;
    eventsLoading = true;
    try {
      const page = await getJson(`/api/v1/events?limit=${EVENTS_LIMIT}`);
      renderEvents(page.events || []);
      showError('events', null);
    } catch (e) {
      showError('events', `events: ${e.message}`);
    } finally {
      eventsLoading = false;
    }
  }

  // Rows arriving live reload the table, at most once a second.
  function scheduleEvents() {
    if (eventsTimer === null) eventsTimer = setTimeout(loadEvents, 1000);
  }

  function renderEvents(events) {
    const rows = events.map((ev) => {
      const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
      const tr = document.createElement('tr');
      tr.dataset.eventId = ev.event_id;
      tr.append(
        cell(ev.timestamp),
        cell(ev.event_id, 'id'),
        cell(ev.source_module),
        cell(ev.event_type),
        cell(ev.severity, 'sev-' + ev.severity),
        cell(p.model ?? p['gen_ai.request.model'] ?? ''),
        cell(num(p.latency_ms), 'num'),
        cell(p.status ?? ''),
      );
      return tr;
    });
    $('events-body').replaceChildren(...rows);
    $('events-note').textContent = `(newest ${events.length}, ${new Date().toLocaleTimeString()})`;
  }

  // ---- continuous queries ----

  async function loadQueries() {
    try {
      const body = await getJson('/api/v1/continuous-queries');
      renderQueries(body.continuous_queries || []);
      $('cq-note').textContent = `(${new Date().toLocaleTimeString()})`;
      showError('cq', null);
    } catch (e) {
      if (e.code === 'disabled') {
        $('cq-body').replaceChildren();
        $('cq-note').textContent = '(disabled: stream.enabled = false)';
        showError('cq', null);
      } else {
        showError('cq', `continuous queries: ${e.message}`);
      }
    }
  }

  function renderQueries(queries) {
    const rows = queries
      .slice()
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((q) => {
        const tr = document.createElement('tr');
        tr.dataset.name = q.name;
        tr.append(
          cell(q.name, 'id'),
          cell(q.window),
          cell(q.status),
          cell(q.watermark ?? '—'),
          cell(num(q.open_windows), 'num'),
          cell(num(q.rows_in), 'num'),
          cell(num(q.rows_emitted), 'num'),
          cell(num(q.late_events), 'num'),
          cell(q.last_error ?? '', 'err'),
        );
        return tr;
      });
    $('cq-body').replaceChildren(...rows);
  }

  // ---- the live stream ----

  function setState(state, text) {
    const el = $('conn');
    el.dataset.state = state;
    el.textContent = text || state;
  }

  // One Server-Sent Event block; returns the number of rows it carried.
  function handleBlock(block, closed) {
    let event = 'message';
    let id = null;
    const data = [];
    for (const raw of block.split('\n')) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
    }
    if (event === 'row') {
      if (id) lastId = id;
      const second = Math.floor(Date.now() / 1000);
      perSecond.set(second, (perSecond.get(second) || 0) + 1);
      return 1;
    }
    if (event === 'gap') {
      showError('gap', 'some events were not held any more when the stream resumed');
    } else if (event === 'close') {
      try {
        const body = JSON.parse(data.join('\n'));
        if (body.token) lastId = body.token;
        closed.reason = body.reason;
      } catch (_) {
        closed.reason = 'closed by the server';
      }
    }
    return 0;
  }

  async function readStream(body, gen) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const closed = { reason: null };
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (gen !== generation) {
        reader.cancel().catch(() => {});
        return null;
      }
      if (done) return closed.reason || 'the server ended the stream';
      buf += decoder.decode(value, { stream: true });
      let rows = 0;
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        rows += handleBlock(buf.slice(0, end), closed);
        buf = buf.slice(end + 2);
      }
      if (rows > 0) {
        liveCount += rows;
        $('live-count').textContent = String(liveCount);
        drawChart();
        scheduleEvents();
      }
    }
  }

  function retry(gen, why) {
    if (gen !== generation) return;
    setState('reconnecting', `reconnecting in ${Math.round(retryMs / 1000)} s`);
    showError('stream', `live stream: ${why}`);
    setTimeout(() => {
      if (gen === generation) follow();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 15000);
  }

  async function follow() {
    const gen = ++generation;
    if (controller) controller.abort();
    controller = new AbortController();
    const params = new URLSearchParams({ topic: 'events' });
    if (lastId) params.set('after', lastId);
    const conn = $('conn');
    conn.dataset.connects = String(Number(conn.dataset.connects || 0) + 1);
    conn.dataset.after = lastId || '';
    setState('connecting');
    let res;
    try {
      res = await fetch('/api/v1/stream?' + params.toString(), {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal: controller.signal,
      });
    } catch (e) {
      retry(gen, e.message);
      return;
    }
    if (gen !== generation) return;
    if (res.status === 401 || res.status === 403) {
      setState('unauthorized', res.status === 401 ? 'needs an API key' : 'key lacks the read role');
      showError('stream', `live stream: ${res.status}; enter an API key with the read role`);
      return;
    }
    if (res.status === 400 && lastId) {
      // The resume token is not valid here (another server?): start from now.
      lastId = null;
      retry(gen, 'resume token refused; starting over');
      return;
    }
    if (!res.ok || !res.body) {
      retry(gen, `${res.status} ${res.statusText}`);
      return;
    }
    setState('live');
    showError('stream', null);
    retryMs = 1000;
    try {
      const reason = await readStream(res.body, gen);
      if (reason !== null) retry(gen, reason);
    } catch (e) {
      retry(gen, e.message);
    }
  }

  // ---- the chart ----

  function drawChart() {
    const canvas = $('chart');
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const now = Math.floor(Date.now() / 1000);
    for (const second of perSecond.keys()) {
      if (second <= now - WINDOW_SECS) perSecond.delete(second);
    }
    const series = [];
    for (let s = now - WINDOW_SECS + 1; s <= now; s++) series.push(perSecond.get(s) || 0);
    // Four gridlines at a round whole step (1, 2 or 5 times a power of ten) reaching the peak.
    const peak = Math.max(1, ...series);
    const magnitude = Math.max(1, Math.pow(10, Math.floor(Math.log10(peak / 4))));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((v) => v * 4 >= peak);
    const top = step * 4;

    const left = 44, right = 8, upper = 10, lower = 22;
    const w = width - left - right;
    const h = height - upper - lower;
    const x = (i) => left + (w * i) / (WINDOW_SECS - 1);
    const y = (v) => upper + h - (h * v) / top;

    // Grid and axes.
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#59636e';
    ctx.strokeStyle = '#d1d9e0';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let k = 0; k <= 4; k++) {
      const v = step * k;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y(v)) + 0.5);
      ctx.lineTo(left + w, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillText(num(v), left - 6, y(v));
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const ago of [60, 45, 30, 15, 0]) {
      ctx.fillText(ago === 0 ? 'now' : `-${ago}s`, x(Math.min(WINDOW_SECS - 1, WINDOW_SECS - ago)), upper + h + 6);
    }

    // The line, and a dot for every second with events.
    ctx.strokeStyle = '#1f6feb';
    ctx.lineWidth = 2;
    ctx.beginPath();
    series.forEach((v, i) => (i === 0 ? ctx.moveTo(x(i), y(v)) : ctx.lineTo(x(i), y(v))));
    ctx.stroke();
    ctx.fillStyle = '#1f6feb';
    let points = 0;
    series.forEach((v, i) => {
      if (v === 0) return;
      ctx.beginPath();
      ctx.arc(x(i), y(v), 3, 0, 2 * Math.PI);
      ctx.fill();
      points += 1;
    });
    $('chart-points').textContent = String(points);
    canvas.dataset.points = String(points);
  }

  // ---- start ----

  function restart() {
    retryMs = 1000;
    follow();
    loadEvents();
    loadQueries();
  }

  // For tests and the curious: drop the stream as a network error would (it reconnects with
  // `after=` the last row received).
  window.hubLiveView = {
    dropStream() {
      if (controller) controller.abort();
    },
  };

  document.addEventListener('DOMContentLoaded', () => {
    const input = $('api-key');
    input.value = apiKey;
    $('key-form').addEventListener('submit', (e) => {
      e.preventDefault();
      apiKey = input.value.trim();
      if (apiKey) localStorage.setItem(KEY_STORAGE, apiKey);
      else localStorage.removeItem(KEY_STORAGE);
      restart();
    });
    restart();
    setInterval(loadQueries, 5000);
    setInterval(loadEvents, 15000);
    setInterval(drawChart, 1000);
    drawChart();
  });
})();
