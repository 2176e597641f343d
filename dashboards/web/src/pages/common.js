// pages/common.js -- what several pages share: the chart targets for cAdvisor and node_exporter series
// (PromQL the kubernetes-mixin way, with the browser fallback of api.js), inventory helpers, the
// recent-logs panel.
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as fmt from '../fmt.js';
import { h, fill, card, errorBox } from '../dom.js';

// A label matcher list from {k: v}: k="v" with v escaped as a PromQL/LogQL string.
export function matchers(sel) {
  return Object.entries(sel).filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${k}=${JSON.stringify(String(v))}`).join(', ');
}

function withM(m, extra) { return [m, extra].filter(Boolean).join(', '); }

// rate(metric{m}[5m]) summed by `by`; fallback computes the same from the raw counter.
export function rateBy(metric, m, by, legend) {
  const sel = `${metric}{${m}}`;
  return {
    expr: by ? `sum by (${by.join(', ')}) (rate(${sel}[5m]))` : `sum(rate(${sel}[5m]))`,
    fallback: { sel, fn: 'rate', by: by || [], agg: 'sum' }, legend,
  };
}

export function gaugeBy(metric, m, by, legend, agg = 'sum') {
  const sel = `${metric}{${m}}`;
  return {
    expr: by ? `${agg} by (${by.join(', ')}) (${sel})` : `${agg}(${sel})`,
    fallback: { sel, fn: 'value', by: by || [], agg }, legend,
  };
}

// Only the values above 0 (a limit of 0 means none): `expr > 0`, and the same in the fallback.
export function positive(t) {
  return { ...t, expr: `${t.expr} > 0`, fallback: { ...t.fallback, positive: true } };
}

export const containerM = m => withM(m, 'container!="", container!="POD"');

// Sum of the requests (or limits) of the pods in an inventory answer: {cpu: cores, memory: bytes}.
export function sumResources(nodes, which = 'requests', filter = () => true) {
  let cpu = 0, memory = 0;
  for (const n of nodes) for (const p of n.pods || []) if (filter(p, n)) for (const c of p.containers || []) {
    cpu += fmt.quantity(c[which] && c[which].cpu) || 0;
    memory += fmt.quantity(c[which] && c[which].memory) || 0;
  }
  return { cpu, memory };
}

// Recent log lines of a LogQL selector, newest first, as a card.
export function logsCard(title, logql, limit = 50) {
  const list = h('div', { class: 'logs' }, h('p', { class: 'muted' }, 'loading…'));
  const el = card(title, list, h('p', {}, h('a', { href: `#/logs?${new URLSearchParams({ q: logql })}` }, 'open in Logs')));
  el.refresh = async r => {
    try {
      const d = await api.lokiRange(logql, r, limit, 'backward');
      const rows = (d.result || []).flatMap(s => s.values.map(([ts, line]) => ({ ts: +ts / 1e6, line, stream: s.stream })))
        .sort((a, b) => b.ts - a.ts).slice(0, limit);
      fill(list, rows.length ? rows.map(x => h('div', { class: 'logline' }, h('span', { class: 'ts' }, fmt.time(x.ts)),
        h('span', { class: 'msg' }, x.line))) : h('p', { class: 'muted' }, 'no log lines in this range'));
    } catch (e) {
      fill(list, errorBox(e));
    }
  };
  return el;
}

// Events (start, stop, OOM) as a card.
export function eventsCard(title, params) {
  const box = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  const el = card(title, box);
  el.refresh = async r => {
    try {
      const ev = await api.events({ ...params, since: r.start * 1000, limit: 200 });
      ev.sort((a, b) => b.time_ms - a.time_ms);
      fill(box, ev.length ? h('div', { class: 'tablewrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['time', 'type', 'namespace', 'pod', 'container', 'count'].map(t => h('th', {}, t)))),
        h('tbody', {}, ev.slice(0, 50).map(e => h('tr', {}, h('td', {}, fmt.time(e.time_ms)),
          h('td', { class: /oom/i.test(e.type) ? 'bad' : null }, e.type), h('td', {}, e.namespace), h('td', {}, e.pod),
          h('td', {}, e.container), h('td', { class: 'num' }, e.count))))))
        : h('p', { class: 'muted' }, 'no events in this range'));
    } catch (e) {
      fill(box, errorBox(e));
    }
  };
  return el;
}

// A page made of cards with refresh(r): refreshes them all in parallel.
export function page(main, title, ...sections) {
  main.append(h('h1', {}, title), ...sections);
  const cards = [...main.querySelectorAll('.card')].filter(c => c.refresh);
  return {
    refresh: r => Promise.all(cards.map(c => c.refresh(r))),
    dispose() {},
  };
}
