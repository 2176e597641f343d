// pages/explore.js -- Explore: a PromQL box with autocomplete of metric names, label names and label
// values (from the labels / label values API, else the series API), history, chart of query_range and
// a table of the newest value per series.
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as fmt from '../fmt.js';
import * as state from '../state.js';
import { h, fill, card, errorBox, labelPills } from '../dom.js';
import { chartCard } from '../chart.js';

const HISTORY_KEY = 'corral.promql.history';
const FUNCS = ['rate', 'irate', 'increase', 'delta', 'sum', 'avg', 'min', 'max', 'count', 'topk', 'bottomk', 'quantile',
  'histogram_quantile', 'label_replace', 'avg_over_time', 'max_over_time', 'min_over_time', 'sum_over_time',
  'count_over_time', 'quantile_over_time', 'last_over_time', 'abs', 'clamp_min', 'clamp_max', 'by', 'without', 'offset'];

function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]'); } catch { return []; }
}
function remember(q) {
  try { localStorage.setItem(HISTORY_KEY, JSON.stringify([q, ...history().filter(x => x !== q)].slice(0, 20))); } catch { /* */ }
}

// What to complete at the cursor: {kind: 'metric'|'label'|'value', prefix, label}.
export function context(text, pos) {
  const before = text.slice(0, pos);
  const inBraces = before.lastIndexOf('{') > before.lastIndexOf('}');
  const v = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)$/.exec(before);
  if (inBraces && v) return { kind: 'value', label: v[1], prefix: v[3] };
  const w = /([a-zA-Z_:][a-zA-Z0-9_:]*)$/.exec(before);
  const prefix = w ? w[1] : '';
  if (inBraces || /\b(by|without|on|ignoring)\s*\([^)]*$/.test(before)) return { kind: 'label', prefix };
  return { kind: 'metric', prefix };
}

function autocomplete(ta, onRun) {
  const list = h('ul', { class: 'aclist', role: 'listbox', hidden: true });
  const cache = { metric: null, label: null, values: new Map() };
  let items = [], sel = 0, ctx = null;
  const r = () => state.range();
  // Each list is asked for once (the promise is cached, so fast typing does not repeat requests).
  async function candidates(c) {
    if (c.kind === 'metric') return (await (cache.metric ||= api.metricNames(r()).catch(() => []))).concat(FUNCS);
    if (c.kind === 'label') return cache.label ||= api.labelNames(r()).catch(() => []);
    if (!cache.values.has(c.label)) cache.values.set(c.label, api.valuesOf(c.label, r()).catch(() => []));
    return cache.values.get(c.label);
  }
  let seq = 0;
  async function update() {
    const mine = ++seq, c = context(ta.value, ta.selectionStart);
    const all = await candidates(c);
    if (mine !== seq) return; // a later keystroke has its own answer
    ctx = c;
    const p = ctx.prefix.toLowerCase();
    items = all.filter(x => x.toLowerCase().startsWith(p) && x !== ctx.prefix).slice(0, 50);
    if (ctx.kind === 'metric' && !p) items = [];
    sel = 0;
    fill(list, items.map((x, i) => h('li', { role: 'option', class: i === sel ? 'sel' : null, onmousedown: e => { e.preventDefault(); pick(i); } }, x)));
    list.hidden = !items.length;
  }
  function pick(i) {
    const x = items[i];
    if (x === undefined) return;
    const pos = ta.selectionStart, start = pos - ctx.prefix.length;
    ta.value = ta.value.slice(0, start) + x + ta.value.slice(pos);
    ta.selectionStart = ta.selectionEnd = start + x.length;
    list.hidden = true;
    ta.focus();
  }
  function move(d) {
    sel = (sel + d + items.length) % items.length;
    [...list.children].forEach((li, i) => li.classList.toggle('sel', i === sel));
  }
  ta.addEventListener('input', update);
  ta.addEventListener('blur', () => { list.hidden = true; });
  ta.addEventListener('keydown', e => {
    if (!list.hidden && items.length) {
      if (e.key === 'ArrowDown') { e.preventDefault(); return move(1); }
      if (e.key === 'ArrowUp') { e.preventDefault(); return move(-1); }
      if (e.key === 'Tab' || e.key === 'Enter') { e.preventDefault(); return pick(sel); }
      if (e.key === 'Escape') { list.hidden = true; return; }
    }
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); onRun(); }
  });
  return h('div', { class: 'acwrap' }, ta, list);
}

export function render(main) {
  const q = state.get('q', '');
  const ta = h('textarea', { class: 'query', rows: 2, 'aria-label': 'PromQL query', spellcheck: 'false', placeholder: 'PromQL, e.g. container_memory_working_set_bytes{namespace="demo"}' }, q);
  const run = () => { if (ta.value.trim()) { remember(ta.value.trim()); state.set({ q: ta.value.trim() }); } };
  const hist = h('select', { 'aria-label': 'history', onchange: e => { if (e.target.value) { ta.value = e.target.value; run(); } } },
    h('option', { value: '' }, 'history…'), history().map(x => h('option', { value: x }, x.length > 80 ? x.slice(0, 77) + '…' : x)));
  const form = h('div', { class: 'toolbar' }, autocomplete(ta, run), h('button', { class: 'primary', type: 'button', onclick: run }, 'Run'), hist);
  main.append(h('h1', {}, 'Explore'), form);
  if (!q) {
    main.append(h('p', { class: 'muted' }, 'Type a query; Tab or Enter completes metric and label names and values.'));
    return { refresh: async () => {}, dispose() {} };
  }
  // a unit from the metric name when the query does not turn it into a rate
  const unit = /_bytes\b/.test(q) && !/\b(rate|irate|increase|deriv)\(/.test(q) ? 'bytes' : '';
  const chart = chartCard({ title: q, unit, essential: true, targets: [{ expr: q }] });
  const tbl = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  main.append(chart, card('Newest values', tbl));
  return {
    dispose() {},
    async refresh(r) {
      await Promise.all([chart.refresh(r), (async () => {
        try {
          const d = await api.query(q, r.end);
          const rows = d.resultType === 'scalar' || d.resultType === 'string' ? [{ metric: {}, value: d.result }]
            : d.resultType === 'matrix' ? d.result.map(s => ({ metric: s.metric, value: s.values[s.values.length - 1] })) : d.result;
          fill(tbl, h('div', { class: 'tablewrap' }, h('table', {},
            h('thead', {}, h('tr', {}, h('th', {}, 'series'), h('th', { class: 'num' }, 'value'), h('th', {}, 'time'))),
            h('tbody', {}, rows.map(s => h('tr', {}, h('td', {}, s.metric.__name__ || '', ' ', labelPills(s.metric, ['__name__'])),
              h('td', { class: 'num' }, s.value ? s.value[1] : ''), h('td', {}, s.value ? fmt.time(s.value[0] * 1000) : '')))))),
            h('p', { class: 'muted' }, `${rows.length} series`));
        } catch (e) {
          fill(tbl, errorBox(e));
        }
      })()]);
    },
  };
}
