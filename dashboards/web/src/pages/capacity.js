// pages/capacity.js -- the capacity reports (docs/capacity.md: GET /api/v1/capacity/{summary,nodes,
// workloads,fit}) over the page's time range: the cluster summary, per node requested vs used vs
// allocatable as bars and a table, right-sizing recommendations per workload (VPA-style), the most
// over-provisioned workloads, and a fit calculator ("how many more pods of this shape fit"). Degrades
// to a clear message when this aggregator has no capacity API (404).
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as fmt from '../fmt.js';
import * as state from '../state.js';
import { h, fill, card, errorBox, bar, table } from '../dom.js';

const F = { cpu: fmt.cores, memory: fmt.bytes };
const g = (o, ...ks) => ks.reduce((x, k) => (x === null || x === undefined ? x : x[k]), o);

function kv(pairs) {
  return h('div', { class: 'kv' }, pairs.flatMap(([k, v]) => [h('span', { class: 'muted' }, k), h('span', {}, v)]));
}

function summaryCard(s) {
  const c = s.cluster || {};
  const res = what => {
    const x = c[what] || {}, f = F[what];
    return [
      [`${what} allocatable`, f(x.allocatable)],
      [`${what} requested`, bar(x.requested_ratio, `${f(x.requests)} (${fmt.pct(x.requested_ratio)})`)],
      [`${what} used p95`, bar(x.utilization_p95, `${f(x.used_p95)} (${fmt.pct(x.utilization_p95)})`)],
      [`${what} idle`, `${f(x.idle)}, of it requested but unused ${f(x.idle_requested)}`],
    ];
  };
  return card(`Cluster over the last ${fmt.num(s.window_seconds / 60)} min`,
    kv([['nodes', c.nodes], ['pods', c.pods], ...res('cpu'), ...res('memory')]));
}

function nodeCard(n) {
  const rows = ['cpu', 'memory'].flatMap(what => {
    const x = n[what] || {}, f = F[what], a = x.allocatable;
    const frac = v => (a ? v / a : 0);
    return [
      [`${what} requested`, bar(frac(x.requests), `${f(x.requests)} of ${f(a)} allocatable`)],
      [`${what} used p95`, bar(frac(x.used_p95), `${f(x.used_p95)} (now ${f(x.used_now)}, max ${f(x.used_max)})`)],
      [`${what} limits`, bar(frac(x.limits), f(x.limits))],
    ];
  });
  return h('section', { class: 'card', dataset: { node: n.node } }, h('h2', {}, `${n.node} · ${n.pods} pods`), kv(rows));
}

function nodesTable(nodes) {
  const col = (what, key, title) => ({ key: `${what}.${key}`, title, num: true, sort: r => g(r, what, key), fmt: r => F[what](g(r, what, key)) });
  return table([
    { key: 'node', title: 'node' }, { key: 'pods', title: 'pods', num: true },
    col('cpu', 'allocatable', 'CPU alloc.'), col('cpu', 'requests', 'CPU req.'), col('cpu', 'used_p95', 'CPU p95'),
    col('cpu', 'reclaimable', 'CPU reclaimable'), col('cpu', 'free_by_requests', 'CPU free (req.)'),
    col('memory', 'allocatable', 'mem alloc.'), col('memory', 'requests', 'mem req.'), col('memory', 'used_p95', 'mem p95'),
    col('memory', 'reclaimable', 'mem reclaimable'), col('memory', 'free_by_requests', 'mem free (req.)'),
  ], nodes, { sortKey: 'node', desc: false, empty: 'no node in the window' });
}

function workloadsTable(ws) {
  const col = (what, key, title) => ({ key: `${what}.${key}`, title, num: true, sort: r => g(r, what, key), fmt: r => F[what](g(r, what, key)) });
  return table([
    { key: 'namespace', title: 'namespace' }, { key: 'workload', title: 'workload' }, { key: 'container', title: 'container' },
    { key: 'pods', title: 'pods', num: true },
    col('cpu', 'request', 'CPU request'), col('cpu', 'usage_p95', 'CPU p95'), col('cpu', 'recommended_request', 'CPU recommended'),
    col('cpu', 'over_provisioned', 'CPU over'),
    col('memory', 'request', 'mem request'), col('memory', 'usage_p95', 'mem p95'), col('memory', 'recommended_request', 'mem recommended'),
    col('memory', 'over_provisioned', 'mem over'),
    { key: 'oom_kills', title: 'OOM', num: true }, { key: 'throttled_periods', title: 'throttled periods', num: true },
  ], ws, { sortKey: 'cpu.over_provisioned', empty: 'no workload in the window' });
}

export function render(main) {
  const box = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  main.append(h('h1', {}, 'Capacity'), box);
  const p = () => ({ window: state.get('range', '1h') });
  return {
    dispose() {},
    async refresh() {
      let nodes;
      try {
        nodes = await api.capacity('nodes', p());
      } catch (e) {
        if (e.status === 404 && e.type === 'not_found')
          return void fill(box, h('p', { class: 'note', id: 'capacity-missing' },
            'This aggregator has no capacity reports (GET /api/v1/capacity/nodes answered 404).'));
        return void fill(box, errorBox(e));
      }
      const [summary, workloads] = await Promise.all([
        api.capacity('summary', p()).catch(e => ({ error: e })), api.capacity('workloads', p()).catch(e => ({ error: e })),
      ]);
      fill(box,
        summary.error ? errorBox(summary.error) : summaryCard(summary),
        h('div', { class: 'grid', id: 'capacity-nodes' }, (nodes.nodes || []).map(nodeCard)),
        card('Nodes: requested vs used vs allocatable', nodesTable(nodes.nodes || [])),
        card('Right-sizing per workload (VPA-style recommendation: p90 × 1.15)', workloads.error ? errorBox(workloads.error) : workloadsTable(workloads.workloads || [])),
        summary.error ? null : card('Most over-provisioned', table([
          { key: 'namespace', title: 'namespace' }, { key: 'workload', title: 'workload' }, { key: 'container', title: 'container' },
          { key: 'pods', title: 'pods', num: true },
          { key: 'cpu_over_provisioned', title: 'CPU over', num: true, fmt: r => fmt.cores(r.cpu_over_provisioned) },
          { key: 'memory_over_provisioned', title: 'memory over', num: true, fmt: r => fmt.bytes(r.memory_over_provisioned) },
          { key: 'score', title: 'score', num: true, fmt: r => fmt.num(r.score) },
        ], summary.top_overprovisioned || [], { sortKey: 'score', empty: 'nothing over-provisioned' })),
        fitCard(p));
    },
  };
}

function fitCard(p) {
  const cpu = h('input', { type: 'text', value: state.get('fit_cpu', '500m'), 'aria-label': 'CPU per pod', size: 8 });
  const mem = h('input', { type: 'text', value: state.get('fit_mem', '256Mi'), 'aria-label': 'memory per pod', size: 8 });
  const reps = h('input', { type: 'text', value: state.get('fit_n', '1'), 'aria-label': 'replicas', size: 4 });
  const out = h('div', { id: 'fit-out' });
  const go = async () => {
    state.set({ fit_cpu: cpu.value, fit_mem: mem.value, fit_n: reps.value }, { replace: true });
    try {
      const d = await api.capacity('fit', { ...p(), cpu: cpu.value || undefined, memory: mem.value || undefined, replicas: reps.value || undefined });
      const yes = v => h('strong', { class: v ? 'ok' : 'bad' }, v ? 'yes' : 'no');
      fill(out, kv([
        ['more pods that fit (by requests)', `${d.total.by_requests}`], ['… by usage (p95)', `${d.total.by_usage}`],
        [`${d.replicas} replicas fit by requests`, yes(d.fits.by_requests)], ['… by usage', yes(d.fits.by_usage)],
      ]), table([
        { key: 'node', title: 'node' }, { key: 'by_requests', title: 'fit by requests', num: true }, { key: 'by_usage', title: 'fit by usage', num: true },
        { key: 'fr', title: 'free CPU / mem (requests)', fmt: r => `${fmt.cores(g(r, 'free_by_requests', 'cpu'))} / ${fmt.bytes(g(r, 'free_by_requests', 'memory'))}` },
      ], d.nodes || [], { sortKey: 'node', desc: false }));
    } catch (e) { fill(out, errorBox(e)); }
  };
  return card('Fit calculator: how many more pods of this shape fit',
    h('form', { class: 'inline', onsubmit: e => { e.preventDefault(); go(); } }, h('label', {}, 'CPU ', cpu), h('label', {}, 'memory ', mem),
      h('label', {}, 'replicas ', reps), h('button', { class: 'primary', type: 'submit' }, 'Calculate')), out);
}
