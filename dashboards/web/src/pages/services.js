// pages/services.js -- services with selectors, ports, cluster IPs and live endpoints, and a resolve box
// that asks the aggregator's own cluster DNS (GET /api/v1/dns/resolve).
// SPDX-License-Identifier: Apache-2.0
import * as api from '../api.js';
import * as state from '../state.js';
import { h, fill, card, errorBox } from '../dom.js';

const DOMAIN = 'cluster.local';

export function render(main) {
  const name = h('input', { type: 'text', class: 'query', id: 'resolve-name', 'aria-label': 'name to resolve', value: state.get('name', ''), placeholder: `web.demo.svc.${DOMAIN}` });
  const type = h('select', { id: 'resolve-type', 'aria-label': 'record type' },
    ['A', 'AAAA', 'SRV', 'PTR', 'TXT', 'CNAME', 'SOA'].map(t => h('option', { value: t, selected: t === state.get('type', 'A') }, t)));
  const out = h('div', { id: 'resolve-out' });
  const go = async () => {
    state.set({ name: name.value, type: type.value }, { replace: true });
    fill(out, h('p', { class: 'muted' }, 'asking the cluster DNS…'));
    try { fill(out, answer(await api.resolve(name.value, type.value))); } catch (e) { fill(out, errorBox(e)); }
  };
  const form = h('form', { class: 'inline', onsubmit: e => { e.preventDefault(); go(); } }, name, type, h('button', { class: 'primary', type: 'submit' }, 'Resolve'));
  const listBox = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  main.append(h('h1', {}, 'Services'), card('Resolve (cluster DNS)', form, out), card('Services', listBox));
  if (name.value) go();
  const use = (n, t) => { name.value = n; type.value = t; go(); };
  return {
    dispose() {},
    async refresh() {
      try { fill(listBox, servicesTable(await api.services(), use)); } catch (e) { fill(listBox, errorBox(e)); }
    },
  };
}

function answer(d) {
  const rows = [...d.answers.map(a => ({ ...a, section: 'answer' })), ...d.authority.map(a => ({ ...a, section: 'authority' }))];
  return h('div', {},
    h('p', {}, h('strong', { class: d.rcode === 'NOERROR' && d.answers.length ? 'ok' : 'bad', id: 'resolve-rcode' }, d.rcode),
      ` ${d.name} ${d.type} from ${d.server} in ${d.ms.toFixed(2)} ms${d.aa ? ', authoritative' : ''}${d.tc ? ', truncated' : ''}`),
    rows.length ? h('table', {}, h('thead', {}, h('tr', {}, ['section', 'name', 'type', 'TTL', 'data'].map(t => h('th', {}, t)))),
      h('tbody', { id: 'resolve-answers' }, rows.map(a => h('tr', {}, h('td', {}, a.section), h('td', {}, a.name), h('td', {}, a.type),
        h('td', { class: 'num' }, a.ttl), h('td', {}, a.data))))) : h('p', { class: 'muted' }, 'no records'));
}

function servicesTable(svcs, use) {
  if (!svcs.length) return h('p', { class: 'muted' }, 'no services registered (--services, or POST /api/v1/services)');
  svcs.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  return h('div', { class: 'tablewrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ['namespace', 'name', 'type', 'selector', 'cluster IPs', 'ports', 'endpoints', ''].map(t => h('th', {}, t)))),
    h('tbody', {}, svcs.map(s => {
      const fqdn = `${s.name}.${s.namespace}.svc.${DOMAIN}`;
      return h('tr', {}, h('td', {}, s.namespace), h('td', {}, s.name), h('td', {}, s.type),
        h('td', {}, Object.entries(s.selector || {}).map(([k, v]) => h('div', {}, `${k}=${v}`))),
        h('td', {}, (s.clusterIPs || []).join(' ') || (s.externalName ? `→ ${s.externalName}` : '–')),
        h('td', {}, (s.ports || []).map(p => h('div', {}, `${p.name ? p.name + ' ' : ''}${p.port}/${p.protocol}`))),
        h('td', {}, (s.endpoints || []).length ? s.endpoints.map(e => h('div', { class: e.ready ? 'ok' : 'bad' }, `${e.ip}${e.hostname ? ' (' + e.hostname + ')' : ''}${e.ready ? '' : ' not ready'}`))
          : h('span', { class: 'muted' }, s.type === 'Headless' ? 'no ready endpoints' : '–')),
        h('td', {}, h('button', { type: 'button', onclick: () => use(fqdn, 'A') }, 'resolve'),
          (s.ports || []).some(p => p.name) ? h('button', { type: 'button', onclick: () => use(`_${s.ports.find(p => p.name).name}._${(s.ports.find(p => p.name).protocol || 'tcp').toLowerCase()}.${fqdn}`, 'SRV') }, 'SRV') : null));
    }))));
}
