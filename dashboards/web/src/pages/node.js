// pages/node.js -- one node: CPU by mode, memory, network, disk I/O, container throttling, its pods,
// events, and the recent logs of its pods beside the charts.
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as fmt from '../fmt.js';
import * as state from '../state.js';
import { h, fill, card, link, errorBox, labelPills } from '../dom.js';
import { chartCard } from '../chart.js';
import { rateBy, gaugeBy, containerM, matchers, logsCard, eventsCard, page } from './common.js';

export function render(main) {
  const box = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  let inner = null;
  main.append(box);
  return {
    dispose() {},
    async refresh(r) {
      if (!inner) inner = await build(box);
      if (inner) await inner.refresh(r);
    },
  };
}

async function build(box) {
  let inv;
  try { inv = await api.inventory(); } catch (e) { fill(box, errorBox(e)); return null; }
  const names = inv.map(n => n.node);
  const node = state.get('node', names[0]);
  if (!node) { fill(box, h('p', { class: 'muted' }, 'no node has reported yet')); return null; }
  const picker = h('select', { 'aria-label': 'node', onchange: e => state.set({ node: e.target.value }) },
    names.map(n => h('option', { value: n, selected: n === node }, n)));
  const m = matchers({ node });
  const cm = containerM(m);
  const charts = [
    chartCard({ title: 'CPU by mode', unit: 'cores', stacked: true, essential: true,
      targets: [rateBy('node_cpu_seconds_total', `${m}, mode!="idle"`, ['mode'], x => x.mode)] }),
    chartCard({ title: 'Memory', unit: 'bytes', essential: true, targets: [
      gaugeBy('node_memory_MemTotal_bytes', m, null, () => 'total'),
      gaugeBy('node_memory_MemAvailable_bytes', m, null, () => 'available'),
      gaugeBy('container_memory_working_set_bytes', cm, null, () => 'containers working set')] }),
    chartCard({ title: 'Network', unit: 'bytesPerSec', targets: [
      rateBy('node_network_receive_bytes_total', `${m}, device!="lo"`, ['device'], x => `${x.device} rx`),
      rateBy('node_network_transmit_bytes_total', `${m}, device!="lo"`, ['device'], x => `${x.device} tx`)] }),
    chartCard({ title: 'Disk I/O', unit: 'bytesPerSec', targets: [
      rateBy('node_disk_read_bytes_total', m, ['device'], x => `${x.device} read`),
      rateBy('node_disk_written_bytes_total', m, ['device'], x => `${x.device} written`)] }),
    chartCard({ title: 'CPU throttling by container', unit: 'seconds', targets: [
      rateBy('container_cpu_cfs_throttled_seconds_total', cm, ['namespace', 'pod', 'container'], x => `${x.namespace}/${x.pod}/${x.container}`)] }),
  ];
  const n = inv.find(x => x.node === node) || { pods: [], facts: {} };
  const pods = card('Pods', h('div', { class: 'tablewrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ['pod', 'status', 'IPs', 'labels'].map(t => h('th', {}, t)))),
    h('tbody', {}, (n.pods || []).map(p => h('tr', {},
      h('td', {}, link('pod', { ns: p.namespace, pod: p.name }, `${p.namespace}/${p.name}`)),
      h('td', { class: p.ready ? 'ok' : 'bad' }, p.status), h('td', {}, (p.ips || []).join(' ')),
      h('td', {}, labelPills(p.labels))))))));
  const facts = card('Facts', h('div', { class: 'kv' }, Object.entries(n.facts || {}).flatMap(([k, v]) => [h('span', { class: 'muted' }, k), h('span', {}, v)]),
    h('span', { class: 'muted' }, 'last seen'), h('span', {}, fmt.ago(n.last_seen_ms))));
  fill(box);
  return page(box, `Node ${node}`, h('div', { class: 'toolbar' }, h('label', {}, 'node ', picker)),
    h('div', { class: 'side' }, h('div', { class: 'grid' }, charts),
      h('div', {}, logsCard('Recent logs on this node', `{${m}}`), eventsCard('Events', { node }), facts)), pods);
}
