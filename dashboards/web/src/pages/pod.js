// pages/pod.js -- one pod (and optionally one container): CPU vs request and limit, memory working set vs
// limit, network, block I/O, throttling, restarts and OOM events, labels, and its recent logs.
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as state from '../state.js';
import { h, fill, card, errorBox, labelPills } from '../dom.js';
import { chartCard } from '../chart.js';
import { rateBy, gaugeBy, positive, containerM, matchers, logsCard, eventsCard, page, sumResources } from './common.js';

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

function podPicker(inv, ns, pod) {
  const all = inv.flatMap(n => (n.pods || []).map(p => ({ ...p, node: n.node })));
  const sel = h('select', { 'aria-label': 'pod', onchange: e => { const [a, b] = JSON.parse(e.target.value); state.set({ ns: a, pod: b, container: null }); } },
    all.map(p => h('option', { value: JSON.stringify([p.namespace, p.name]), selected: p.namespace === ns && p.name === pod }, `${p.namespace}/${p.name}`)));
  return { all, sel };
}

async function build(box) {
  let inv;
  try { inv = await api.inventory(); } catch (e) { fill(box, errorBox(e)); return null; }
  const first = inv.flatMap(n => n.pods || [])[0];
  const ns = state.get('ns', first && first.namespace), pod = state.get('pod', first && first.name);
  const container = state.get('container', '');
  if (!pod) { fill(box, h('p', { class: 'muted' }, 'no pod has been reported yet')); return null; }
  const { all, sel } = podPicker(inv, ns, pod);
  const p = all.find(x => x.namespace === ns && x.name === pod);
  const csel = h('select', { 'aria-label': 'container', onchange: e => state.set({ container: e.target.value || null }) },
    h('option', { value: '' }, 'all containers'),
    ((p && p.containers) || []).map(c => h('option', { value: c.name, selected: c.name === container }, c.name)));
  const m = matchers({ namespace: ns, pod, container });
  const cm = containerM(m);
  const by = x => x.container || '(pod)';
  const req = p ? sumResources([{ pods: [p] }], 'requests') : { cpu: null, memory: null };
  const lim = p ? sumResources([{ pods: [p] }], 'limits') : { cpu: null, memory: null };
  const charts = [
    chartCard({ title: 'CPU', unit: 'cores', essential: true,
      targets: [rateBy('container_cpu_usage_seconds_total', cm, ['container'], by)],
      lines: container ? [] : [{ label: 'requested', value: req.cpu, color: '#d97706' }, { label: 'limit', value: lim.cpu || null, color: '#dc2626' }] }),
    chartCard({ title: 'Memory working set vs limit', unit: 'bytes', essential: true, targets: [
      gaugeBy('container_memory_working_set_bytes', cm, ['container'], x => `${by(x)} working set`),
      positive(gaugeBy('container_spec_memory_limit_bytes', cm, ['container'], x => `${by(x)} limit`, 'max'))] }),
    chartCard({ title: 'Network', unit: 'bytesPerSec', targets: [
      rateBy('container_network_receive_bytes_total', m, ['interface'], x => `${x.interface || ''} rx`),
      rateBy('container_network_transmit_bytes_total', m, ['interface'], x => `${x.interface || ''} tx`)] }),
    chartCard({ title: 'Block I/O', unit: 'bytesPerSec', targets: [
      rateBy('container_fs_reads_bytes_total', cm, ['container'], x => `${by(x)} read`),
      rateBy('container_fs_writes_bytes_total', cm, ['container'], x => `${by(x)} write`)] }),
    chartCard({ title: 'CPU throttling', unit: 'seconds', targets: [
      rateBy('container_cpu_cfs_throttled_seconds_total', cm, ['container'], by)] }),
    chartCard({ title: 'OOM kills', unit: '', targets: [gaugeBy('container_oom_events_total', cm, ['container'], by, 'max')] }),
  ];
  const info = card('Pod', h('div', { class: 'kv' },
    h('span', { class: 'muted' }, 'node'), h('span', {}, p ? p.node : '?'),
    h('span', { class: 'muted' }, 'status'), h('span', { class: p && p.ready ? 'ok' : 'bad' }, p ? p.status : 'not in the inventory'),
    h('span', { class: 'muted' }, 'IPs'), h('span', {}, p ? (p.ips || []).join(' ') : ''),
    h('span', { class: 'muted' }, 'labels'), h('span', {}, p ? labelPills(p.labels) : ''),
    h('span', { class: 'muted' }, 'containers'), h('span', {}, ((p && p.containers) || []).map(c =>
      h('div', {}, `${c.name} (${c.image}) requests cpu ${c.requests.cpu || '–'} memory ${c.requests.memory || '–'}, limits cpu ${c.limits.cpu || '–'} memory ${c.limits.memory || '–'}`)))));
  fill(box);
  return page(box, `Pod ${ns}/${pod}${container ? ' · ' + container : ''}`,
    h('div', { class: 'toolbar' }, h('label', {}, 'pod ', sel), h('label', {}, 'container ', csel)),
    h('div', { class: 'side' }, h('div', { class: 'grid' }, charts),
      h('div', {}, info, logsCard('Recent logs', `{${m}}`), eventsCard('Restarts and OOM events', { namespace: ns, pod }))));
}
