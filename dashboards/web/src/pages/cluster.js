// pages/cluster.js -- the cluster at a glance: CPU and memory used vs requested vs allocatable per
// namespace (stacked), nodes with utilisation bars, top containers by CPU, memory, throttling, OOM.
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as fmt from '../fmt.js';
import { h, fill, card, table, bar, link, errorBox } from '../dom.js';
import { chartCard } from '../chart.js';
import { rateBy, gaugeBy, containerM, sumResources, page } from './common.js';

const byNs = m => m.namespace || '(none)';

export function render(main) {
  const cpu = chartCard({
    title: 'CPU used by namespace (stacked) vs requested and allocatable', unit: 'cores', stacked: true, essential: true,
    targets: [rateBy('container_cpu_usage_seconds_total', containerM('namespace!=""'), ['namespace'], byNs)],
  });
  const mem = chartCard({
    title: 'Memory working set by namespace (stacked) vs requested and allocatable', unit: 'bytes', stacked: true, essential: true,
    targets: [gaugeBy('container_memory_working_set_bytes', containerM('namespace!=""'), ['namespace'], byNs)],
  });
  const nodesBox = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  const nodes = card('Nodes', nodesBox);
  const topBox = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  const top = card('Top containers', topBox);
  const pg = page(main, 'Cluster', h('div', { class: 'grid' }, cpu, mem), nodes, top);
  return {
    dispose: pg.dispose,
    async refresh(r) {
      let inv = [];
      try { inv = await api.inventory(); } catch (e) { fill(nodesBox, errorBox(e)); }
      const req = sumResources(inv, 'requests');
      const alloc = await Promise.all([
        api.lastTarget(gaugeBy('machine_cpu_cores', '', null)), api.lastTarget(gaugeBy('machine_memory_bytes', '', null)),
      ]).catch(() => [null, null]);
      const a = alloc.map(x => (x && x.series.length ? x.series[0].value : null));
      setLines(cpu, [{ label: 'requested', value: req.cpu, color: '#d97706' }, { label: 'allocatable', value: a[0], color: '#888' }]);
      setLines(mem, [{ label: 'requested', value: req.memory, color: '#d97706' }, { label: 'allocatable', value: a[1], color: '#888' }]);
      await Promise.all([cpu.refresh(r), mem.refresh(r), nodeTable(nodesBox, inv), topTable(topBox, r)]);
    },
  };
}

function setLines(c, lines) { c.setLines(lines); }

async function nodeTable(box, inv) {
  const M = 'mode!="idle", mode!="iowait", mode!="steal"';
  const [cpuUsed, cores, memTotal, memAvail] = await Promise.all([
    api.lastTarget(rateBy('node_cpu_seconds_total', M, ['node'])),
    api.lastTarget(gaugeBy('machine_cpu_cores', '', ['node'])),
    api.lastTarget(gaugeBy('node_memory_MemTotal_bytes', '', ['node'])),
    api.lastTarget(gaugeBy('node_memory_MemAvailable_bytes', '', ['node'])),
  ].map(p => p.catch(() => ({ series: [] }))));
  const val = (res, node) => { const s = res.series.find(x => x.metric.node === node); return s ? s.value : null; };
  const rows = inv.map(n => {
    const req = sumResources([n], 'requests');
    const c = val(cores, n.node), mt = val(memTotal, n.node);
    return {
      node: n.node, pods: (n.pods || []).length, seen: n.last_seen_ms,
      cpu: c ? val(cpuUsed, n.node) / c : null, cpuReq: c ? req.cpu / c : null,
      mem: mt ? (mt - val(memAvail, n.node)) / mt : null, memReq: mt ? req.memory / mt : null, cores: c, memTotal: mt,
    };
  });
  fill(box, table([
    { key: 'node', title: 'node', fmt: r => link('node', { node: r.node }, r.node) },
    { key: 'pods', title: 'pods', num: true },
    { key: 'cpu', title: 'CPU used', fmt: r => bar(r.cpu, `${fmt.pct(r.cpu)} of ${fmt.num(r.cores)} cores`) },
    { key: 'cpuReq', title: 'CPU requested', fmt: r => bar(r.cpuReq, fmt.pct(r.cpuReq)) },
    { key: 'mem', title: 'memory used', fmt: r => bar(r.mem, `${fmt.pct(r.mem)} of ${fmt.bytes(r.memTotal)}`) },
    { key: 'memReq', title: 'memory requested', fmt: r => bar(r.memReq, fmt.pct(r.memReq)) },
    { key: 'seen', title: 'last seen', fmt: r => fmt.ago(r.seen) },
  ], rows, { empty: 'no node has reported yet' }));
}

async function topTable(box, r) {
  const m = containerM('namespace!=""'), by = ['namespace', 'pod', 'container'];
  const [cpu, mem, thr, oom] = await Promise.all([
    api.lastTarget(rateBy('container_cpu_usage_seconds_total', m, by)),
    api.lastTarget(gaugeBy('container_memory_working_set_bytes', m, by)),
    api.lastTarget(rateBy('container_cpu_cfs_throttled_seconds_total', m, by)),
    api.lastTarget(gaugeBy('container_oom_events_total', m, by, null, 'max')),
  ].map(p => p.catch(() => ({ series: [] }))));
  const rows = new Map();
  const put = (res, k) => {
    for (const s of res.series) {
      const key = by.map(l => s.metric[l]).join('/');
      if (!rows.has(key)) rows.set(key, { ...Object.fromEntries(by.map(l => [l, s.metric[l] || ''])) });
      rows.get(key)[k] = s.value;
    }
  };
  put(cpu, 'cpu'), put(mem, 'mem'), put(thr, 'thr'), put(oom, 'oom');
  void r;
  fill(box, table([
    { key: 'namespace', title: 'namespace' },
    { key: 'pod', title: 'pod', fmt: x => link('pod', { ns: x.namespace, pod: x.pod }, x.pod) },
    { key: 'container', title: 'container' },
    { key: 'cpu', title: 'CPU', num: true, fmt: x => fmt.cores(x.cpu) },
    { key: 'mem', title: 'memory', num: true, fmt: x => fmt.bytes(x.mem) },
    { key: 'thr', title: 'throttled', num: true, fmt: x => `${fmt.num(x.thr ?? 0)} s/s` },
    { key: 'oom', title: 'OOM kills', num: true, fmt: x => fmt.num(x.oom ?? 0) },
  ], [...rows.values()], { sortKey: 'cpu', limit: 15, empty: 'no container series yet' }));
}
