// pages/logs.js -- logs: LogQL box with history, histogram of matching lines over the time range (Loki
// metric query count_over_time when the aggregator answers it, else counted here from the lines),
// lines with the query's filter strings highlighted, context around a clicked line, live tail over the
// Loki tail WebSocket. Every line is rendered as text (dom.js), never as markup.
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as fmt from '../fmt.js';
import * as state from '../state.js';
import { h, fill, card, errorBox, labelPills } from '../dom.js';
import { chartCard } from '../chart.js';

const HISTORY_KEY = 'corral.logql.history';
const LIMIT = 500;

function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]'); } catch { return []; }
}
function remember(q) {
  const hs = [q, ...history().filter(x => x !== q)].slice(0, 20);
  try { localStorage.setItem(HISTORY_KEY, JSON.stringify(hs)); } catch { /* private mode */ }
}

// The line filters of a LogQL query (|= "x", |~ "re") as JS RegExps for highlighting.
export function highlighters(q) {
  const out = [];
  const re = /\|([=~])\s*("(?:[^"\\]|\\.)*"|`[^`]*`)/g;
  for (let m; (m = re.exec(q));) {
    let s;
    try { s = m[2][0] === '`' ? m[2].slice(1, -1) : JSON.parse(m[2]); } catch { continue; }
    if (!s) continue;
    try { out.push(new RegExp(m[1] === '=' ? s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : s, 'g')); } catch { /* not a JS regex */ }
  }
  return out;
}

// line -> [text, <mark>, text, ...] for the matches of the highlighters.
export function highlight(line, hs) {
  const ranges = [];
  for (const re of hs) {
    re.lastIndex = 0;
    for (let m, n = 0; (m = re.exec(line)) && n < 100; n++) {
      if (!m[0].length) { re.lastIndex++; continue; }
      ranges.push([m.index, m.index + m[0].length]);
    }
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const parts = [];
  let at = 0;
  for (const [a, b] of ranges) {
    if (b <= at) continue;
    const s = Math.max(a, at);
    if (s > at) parts.push(line.slice(at, s));
    parts.push(h('mark', {}, line.slice(s, b)));
    at = b;
  }
  if (at < line.length) parts.push(line.slice(at));
  return parts;
}

function streamSelector(stream) {
  return `{${Object.entries(stream).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}}`;
}

export function render(main) {
  const q0 = state.get('q', '{namespace=~".+"}');
  const input = h('input', { type: 'text', class: 'query', value: q0, list: 'logql-history', 'aria-label': 'LogQL query', spellcheck: 'false' });
  const dl = h('datalist', { id: 'logql-history' }, history().map(x => h('option', { value: x })));
  const run = () => { remember(input.value); state.set({ q: input.value }); };
  const form = h('form', { class: 'inline', onsubmit: e => { e.preventDefault(); run(); } },
    input, dl, h('button', { class: 'primary', type: 'submit' }, 'Run'));
  const liveBtn = h('button', { type: 'button', id: 'live' }, 'Live tail');
  form.append(liveBtn);
  const hs = highlighters(q0);
  let lastLines = [];
  const hist = chartCard({ title: 'Matching lines over time', unit: '', essential: true, bars: true, load: r => histogram(q0, r, () => lastLines) });
  const list = h('div', { class: 'logs', id: 'loglines' });
  const summary = h('p', { class: 'muted' });
  const liveList = h('div', { class: 'logs', id: 'livelines' });
  const liveCard = card('Live tail', liveList);
  liveCard.hidden = true;
  main.append(h('h1', {}, 'Logs'), form, hist, liveCard, card('Lines', summary, list));
  let ws = null;
  const stopLive = () => { if (ws) ws.close(); ws = null; liveBtn.textContent = 'Live tail'; };
  liveBtn.addEventListener('click', () => {
    if (ws) return stopLive();
    liveCard.hidden = false;
    fill(liveList, h('p', { class: 'muted' }, 'waiting for new lines…'));
    ws = tail(q0, liveList, hs);
    liveBtn.textContent = 'Stop';
  });
  return {
    dispose: stopLive,
    async refresh(r) {
      try {
        const d = await api.lokiRange(q0, r, LIMIT, 'backward');
        if (d.resultType !== 'streams') throw new Error(`a ${d.resultType} query: use a log query here, or Explore for metrics`);
        lastLines = (d.result || []).flatMap(s => s.values.map(([ts, line]) => ({ ns: ts, ts: +ts / 1e6, line, stream: s.stream })))
          .sort((a, b) => b.ts - a.ts);
        summary.textContent = `${lastLines.length}${lastLines.length >= LIMIT ? '+' : ''} lines, newest first; click a line for its context`;
        fill(list, lastLines.map(x => lineEl(x, hs, true)));
      } catch (e) {
        lastLines = [];
        summary.textContent = '';
        fill(list, errorBox(e));
      }
      await hist.refresh(r);
    },
  };
}

function lineEl(x, hs, withContext) {
  const el = h('div', { class: 'logline', dataset: { ts: x.ns } }, h('span', { class: 'ts' }, fmt.time(x.ts)),
    h('span', { class: 'msg' }, highlight(x.line, hs), ' ', h('span', { class: 'lbl' }, labelPills(x.stream, ['pod_uid', 'container_id']))));
  if (withContext) el.addEventListener('click', () => context(el, x, hs));
  return el;
}

// Shows up to 10 lines of the same stream before and after x around its element.
async function context(el, x, hs) {
  if (el.dataset.ctx) return;
  el.dataset.ctx = '1';
  el.classList.add('focus');
  const sel = streamSelector(x.stream), t = BigInt(x.ns);
  try {
    const [before, after] = await Promise.all([
      api.lokiRange(sel, { start: `${t - 3600n * 1000000000n}`, end: `${t}` }, 11, 'backward'),
      api.lokiRange(sel, { start: `${t + 1n}`, end: `${t + 3600n * 1000000000n}` }, 10, 'forward'),
    ]);
    const rows = d => (d.result || []).flatMap(s => s.values.map(([ts, line]) => ({ ns: ts, ts: +ts / 1e6, line, stream: s.stream })));
    const b = rows(before).filter(y => y.ns !== x.ns || y.line !== x.line).sort((p, q) => p.ts - q.ts).slice(-10);
    const a = rows(after).sort((p, q) => p.ts - q.ts).slice(0, 10);
    // Newest first, like the list: later lines above, earlier below.
    el.before(...a.reverse().map(y => { const e = lineEl(y, hs, false); e.classList.add('ctx'); return e; }));
    el.after(...b.reverse().map(y => { const e = lineEl(y, hs, false); e.classList.add('ctx'); return e; }));
  } catch (e) {
    el.after(errorBox(e));
  }
}

// Histogram: Loki's sum(count_over_time(q [step])) when answered, else the fetched lines by bucket.
async function histogram(q, r, lines) {
  const step = Math.max(r.step, Math.ceil(r.seconds / 120));
  try {
    const d = await api.lokiRange(`sum(count_over_time(${q} [${step}s]))`, r, LIMIT, 'backward', `${step}s`);
    if (d.resultType === 'matrix') {
      // zero-filled: empty buckets are absent from Loki's answer
      const all = new Map(buckets(r, step).map(t => [t, 0]));
      for (const [t, v] of d.result[0] ? d.result[0].values : []) all.set(+t, +v);
      return { named: [{ name: 'lines', values: [...all].sort((a, b) => a[0] - b[0]) }], note: '' };
    }
  } catch { /* count here */ }
  const counts = new Map(buckets(r, step).map(t => [t, 0]));
  for (const x of lines()) {
    const t = Math.floor(x.ts / 1000);
    const b = t - (t % step);
    if (counts.has(b)) counts.set(b, counts.get(b) + 1);
  }
  return { named: [{ name: 'lines', values: [...counts] }], note: `counted from the newest ${LIMIT} lines in the browser` };
}

// Loki's step grid: start, start + step, ... up to end.
function buckets(r, step) {
  const out = [];
  for (let t = r.start; t <= r.end; t += step) out.push(t);
  return out;
}

function tail(q, list, hs) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const start = `${BigInt(Date.now()) * 1000000n}`;
  const ws = new WebSocket(`${proto}//${location.host}/loki/api/v1/tail?${new URLSearchParams({ query: q, start, limit: '100' })}`,
    api.wsProtocols());
  let first = true;
  ws.onmessage = ev => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    const rows = (msg.streams || []).flatMap(s => s.values.map(([ts, line]) => ({ ns: ts, ts: +ts / 1e6, line, stream: s.stream })))
      .sort((a, b) => b.ts - a.ts);
    if (!rows.length) return;
    if (first) list.replaceChildren(), first = false;
    list.prepend(...rows.map(x => lineEl(x, hs, false)));
    while (list.childElementCount > 1000) list.lastElementChild.remove();
  };
  ws.onerror = () => list.prepend(h('p', { class: 'error' }, 'live tail: connection error'));
  ws.onclose = ev => { if (ev.code !== 1000 && ev.code !== 1005) list.prepend(h('p', { class: 'muted' }, `live tail closed (${ev.code})`)); };
  return ws;
}
