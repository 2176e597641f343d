// api.js -- the aggregator's HTTP APIs as the UI uses them: Prometheus (query, query_range, series,
// labels, label values), Loki (query_range, labels, tail WebSocket), services, inventory, events,
// capacity, DNS resolve. All same-origin; errors carry the API's errorType and message.
//
// Read token: when the aggregator runs with --read-token-file, the UI files are open but every API answers
// 401 without a token. The token the user typed into the shell's form (app.js) is kept for the tab in
// sessionStorage and sent as "Authorization: Bearer"; a WebSocket cannot carry that header, so the tail
// offers it as the subprotocol "bearer.<base64url>" beside "corral" (docs/security.md). A 401 fires the
// window event "corral:unauthorized", which opens the form.
//
// PromQL fallback: a chart target names the PromQL it wants (expr) and, optionally, how to compute the
// same thing in the browser from one plain selector (fallback: {sel, fn: 'rate'|'value', by: [labels],
// agg: 'sum'|'max', positive: keep only values > 0}). When the aggregator answers bad_data (a PromQL engine that only knows selectors),
// the fallback runs instead and the result says so (computed: 'browser').
// SPDX-License-Identifier: Apache-2.0

export class ApiError extends Error {
  constructor(status, message, type) { super(message); this.status = status; this.type = type; }
}

const TOKEN_KEY = 'corral-read-token';
export const token = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = t => t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY);

// The subprotocols of a WebSocket to the aggregator (undefined without a token).
export function wsProtocols() {
  const t = token();
  if (!t) return undefined;
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(t)));
  return ['corral', 'bearer.' + b64.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')];
}

async function call(path, params) {
  const u = new URL(path, location.href);
  for (const [k, v] of Object.entries(params || {})) {
    for (const x of Array.isArray(v) ? v : [v]) if (x !== undefined && x !== null) u.searchParams.append(k, x);
  }
  const t = token();
  const r = await fetch(u, t ? { headers: { Authorization: `Bearer ${t}` } } : undefined);
  // a 401 for a token the user has replaced meanwhile (a request still out when they typed the new one)
  // must not ask again
  if (r.status === 401 && t === token()) window.dispatchEvent(new Event('corral:unauthorized'));
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  if (!r.ok || !body || body.status !== 'success')
    throw new ApiError(r.status, body && body.error ? body.error : `${path}: HTTP ${r.status}`, body && body.errorType);
  return body.data;
}

export const query = (q, time) => call('/api/v1/query', { query: q, time });
export const queryRange = (q, r) => call('/api/v1/query_range', { query: q, start: r.start, end: r.end, step: r.step });
export const series = (match, r) => call('/api/v1/series', { 'match[]': match, start: r && r.start, end: r && r.end });
export const labels = () => call('/api/v1/labels');
export const labelValues = name => call(`/api/v1/label/${encodeURIComponent(name)}/values`);
// A page's range (state.range(): Unix seconds) ends at the current second rounded down; log lines of
// that second count too (a line written just before the page opened was left out). Ranges given in
// nanoseconds as strings (log context) go as they are.
export const lokiRange = (q, r, limit = 200, direction = 'backward', step) =>
  call('/loki/api/v1/query_range', {
    query: q, start: `${r.start}`, end: `${typeof r.end === 'number' ? r.end + 1 : r.end}`, limit, direction, step,
  });
export const lokiLabels = () => call('/loki/api/v1/labels');
export const services = () => call('/api/v1/services');
export const inventory = node => call('/api/v1/inventory', { node });
export const events = p => call('/api/v1/events', p);
export const resolve = (name, type) => call('/api/v1/dns/resolve', { name, type });
export const capacity = (what, p) => call(`/api/v1/capacity/${what}`, p);

// Metric names: the label values API, else the series API over the range.
export async function metricNames(r) {
  try { return await labelValues('__name__'); } catch (e) { if (e.status !== 404 && e.status !== 400) throw e; }
  const s = await series('{__name__=~".+"}', r);
  return [...new Set(s.map(x => x.__name__))].sort();
}

// Label names (and for one name its values): the labels API, else the series API.
export async function labelNames(r) {
  try { return await labels(); } catch (e) { if (e.status !== 404 && e.status !== 400) throw e; }
  const s = await series('{__name__=~".+"}', r);
  return [...new Set(s.flatMap(x => Object.keys(x)))].sort();
}

export async function valuesOf(name, r) {
  try { return await labelValues(name); } catch (e) { if (e.status !== 404 && e.status !== 400) throw e; }
  const s = await series(`{${name}=~".+"}`, r);
  return [...new Set(s.map(x => x[name]))].sort();
}

// ---- targets with a fallback ------------------------------------------------------------------------

// Runs a target over r: {series: [{metric, values: [[t, v]]}], computed: 'server'|'browser'}.
export async function rangeTarget(t, r, forced) {
  if (!forced) {
    try {
      return { series: toSeries((await queryRange(t.expr, r)).result), computed: 'server' };
    } catch (e) {
      if (!t.fallback || e.type !== 'bad_data') throw e;
    }
  }
  const fb = forced || t.fallback;
  const data = await queryRange(fb.sel, r);
  let ss = toSeries(data.result);
  if (fb.fn === 'rate') ss = ss.map(s => ({ metric: s.metric, values: rate(s.values, r.step) }));
  if (fb.by) ss = aggregate(ss, fb.by, fb.agg || 'sum');
  if (fb.positive) ss = ss.map(s => ({ metric: s.metric, values: s.values.filter(v => v[1] > 0) })).filter(s => s.values.length);
  return { series: ss, computed: 'browser' };
}

// The newest value of each series of a target: an instant query, or the fallback over the last two
// minutes at a 2 s step (enough points for a rate even right after a start).
export async function lastTarget(t) {
  try {
    const d = await query(t.expr);
    return { computed: 'server', series: toSeries(d.result).map(s => ({ metric: s.metric, value: s.values.length ? s.values[0][1] : null })) };
  } catch (e) {
    if (!t.fallback || e.type !== 'bad_data') throw e;
  }
  const end = Math.floor(Date.now() / 1000);
  const { series: ss } = await rangeTarget(t, { start: end - 120, end, step: 2 }, t.fallback);
  return {
    computed: 'browser',
    series: ss.map(s => ({ metric: s.metric, value: s.values.length ? s.values[s.values.length - 1][1] : null }))
      .filter(s => s.value !== null),
  };
}

function toSeries(result) {
  return (result || []).map(s => ({ metric: s.metric || {}, values: (s.values || [s.value]).map(([t, v]) => [+t, +v]) }));
}

// Per-second rate of a counter sampled every step, over a window of at least 60 s, resets counted as
// increases from 0 (what rate() does).
function rate(values, step) {
  const k = Math.max(1, Math.ceil(60 / step)), inc = [0];
  for (let i = 1; i < values.length; i++) {
    const d = values[i][1] - values[i - 1][1];
    inc.push(d >= 0 ? d : values[i][1]);
  }
  const out = [];
  for (let i = 1; i < values.length; i++) {
    const j = Math.max(1, i - k + 1), dt = values[i][0] - values[j - 1][0];
    let sum = 0;
    for (let x = j; x <= i; x++) sum += inc[x];
    if (dt > 0) out.push([values[i][0], sum / dt]);
  }
  return out;
}

function aggregate(ss, by, agg) {
  const groups = new Map();
  for (const s of ss) {
    const metric = Object.fromEntries(by.filter(l => s.metric[l] !== undefined).map(l => [l, s.metric[l]]));
    const key = JSON.stringify(metric);
    if (!groups.has(key)) groups.set(key, { metric, points: new Map() });
    const g = groups.get(key);
    for (const [t, v] of s.values) {
      const prev = g.points.get(t);
      g.points.set(t, prev === undefined ? v : agg === 'max' ? Math.max(prev, v) : prev + v);
    }
  }
  return [...groups.values()].map(g => ({ metric: g.metric, values: [...g.points].sort((a, b) => a[0] - b[0]) }));
}
