// chart.js -- time-series charts with uPlot: one chart per card, several targets per chart, optional
// stacking, constant reference lines (requested, allocatable), resize with the card.
// The chart element carries data-series and data-points (the browser test reads them).
// SPDX-License-Identifier: Apache-2.0
import uPlot from './vendor/uPlot.esm.js';
import { h, fill, card } from './dom.js';
import * as fmt from './fmt.js';
import { rangeTarget } from './api.js';

const COLORS = ['#2563eb', '#16a34a', '#d97706', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#9333ea', '#ea580c'];

// legend(metric) -> series name: the target's legend function, else its label set.
function seriesName(t, metric) {
  if (t.legend) return t.legend(metric);
  const e = Object.entries(metric).filter(([k]) => k !== '__name__');
  return e.length ? e.map(([k, v]) => `${k}=${v}`).join(', ') : (t.name || metric.__name__ || 'value');
}

// spec: {title, unit, targets: [{expr, fallback, legend, name}], stacked, lines: [{label, value}], essential,
//        bars (drawn as bars), load(r) -> {named: [{name, values}], note} instead of targets}
// Returns the card; fills it as data arrives. refresh(r) re-runs with a new range.
export function chartCard(spec) {
  const body = h('div', { class: 'chart', dataset: { chart: spec.title, series: '0', points: '0', essential: spec.essential ? '1' : '0' } },
    h('p', { class: 'muted empty' }, 'loading…'));
  const note = h('p', { class: 'note' });
  const el = card(spec.title, body, note);
  let plot = null;
  const ro = new ResizeObserver(() => { if (plot) plot.setSize({ width: width(body), height: 220 }); });
  ro.observe(body);
  el.setLines = lines => { spec.lines = lines; };
  el.refresh = async r => {
    try {
      let named, browser;
      if (spec.load) {
        ({ named, note: browser } = await spec.load(r));
      } else {
        const results = await Promise.all(spec.targets.map(t => rangeTarget(t, r)));
        named = results.flatMap((res, i) => res.series.map(s => ({ name: seriesName(spec.targets[i], s.metric), values: s.values })));
        browser = results.some(x => x.computed === 'browser') &&
          'computed in the browser from raw series (this aggregator\'s PromQL answers selectors only)';
      }
      note.textContent = browser || '';
      if (plot) plot.destroy();
      plot = draw(body, spec, named, r);
    } catch (e) {
      if (plot) plot.destroy();
      plot = null;
      body.dataset.series = '0';
      fill(body, h('p', { class: 'error empty' }, e.message));
    }
  };
  return el;
}

function width(el) { return Math.max(200, el.clientWidth || 400); }

function draw(body, spec, named, r) {
  const points = named.reduce((n, s) => n + s.values.length, 0);
  body.dataset.series = String(named.filter(s => s.values.length).length);
  body.dataset.points = String(points);
  if (!points) {
    fill(body, h('p', { class: 'muted empty' }, 'no data in this range'));
    return null;
  }
  const lines = (spec.lines || []).filter(l => l.value !== null && l.value !== undefined && !Number.isNaN(l.value));
  // reference lines span the whole range
  const xs = [...new Set(named.flatMap(s => s.values.map(v => v[0])).concat(lines.length ? [r.start, r.end] : []))].sort((a, b) => a - b);
  const idx = new Map(xs.map((x, i) => [x, i]));
  let ys = named.map(s => {
    const a = new Array(xs.length).fill(null);
    for (const [t, v] of s.values) a[idx.get(t)] = v;
    return a;
  });
  if (spec.stacked) ys = stack(ys);
  for (const l of lines) ys.push(xs.map(() => l.value));
  const f = fmt.unit(spec.unit);
  const series = [{}].concat(named.map((s, i) => ({
    label: s.name, stroke: COLORS[i % COLORS.length], width: 1.5,
    fill: spec.stacked || spec.bars ? COLORS[i % COLORS.length] + (spec.bars ? 'aa' : '33') : undefined,
    paths: spec.bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined, points: spec.bars ? { show: false } : undefined,
    value: (u, v) => (v === null ? '–' : f(v)),
  })), lines.map(l => ({ label: l.label, stroke: l.color || '#888', dash: [6, 4], width: 1.5, value: (u, v) => (v === null ? '–' : f(v)) })));
  fill(body);
  const opts = {
    width: width(body), height: 220, series,
    scales: { x: { time: true, min: r.start, max: r.end } },
    axes: [{}, { values: (u, vals) => vals.map(v => f(v)), size: 70 }],
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
  };
  return new uPlot(opts, [xs, ...ys], body);
}

// Cumulative sums so each series is drawn on top of the previous ones.
function stack(ys) {
  const acc = ys.length ? ys[0].map(() => 0) : [];
  return ys.map(a => a.map((v, i) => (v === null ? null : (acc[i] += v))));
}
