// app.js -- the UI's router and shell: picks the page from the URL (#/<page>?...), wires the time range
// picker and auto-refresh (both kept in the URL), and re-renders on navigation.
//
// A page module exports render(main) -> {refresh(range) -> Promise, dispose()}. The shell calls refresh
// once, then every `refresh` seconds and on the reload button; when the first refresh has finished it
// marks the Performance timeline ("corral:rendered") and sets body[data-rendered] to the page name,
// which the browser test uses to measure the first render.
//
// When an API answers 401 (the aggregator wants a read token), the shell shows a form above the page;
// the token typed there is kept for the tab (api.js) and the page is rendered again.
// SPDX-License-Identifier: Apache-2.0
import * as state from './state.js';
import { h, fill } from './dom.js';
import * as api from './api.js';

const PAGES = {
  cluster: () => import('./pages/cluster.js'),
  node: () => import('./pages/node.js'),
  pod: () => import('./pages/pod.js'),
  logs: () => import('./pages/logs.js'),
  services: () => import('./pages/services.js'),
  capacity: () => import('./pages/capacity.js'),
  explore: () => import('./pages/explore.js'),
};

let active = null, timer = null, renderKey = '';

async function route() {
  const { page, params } = state.current();
  syncControls();
  // Parameters that only the shell uses (range, refresh) do not rebuild the page.
  const p = new URLSearchParams(params);
  p.delete('refresh');
  const key = `${page}?${p}`;
  if (key === renderKey && active) return schedule();
  renderKey = key;
  if (active && active.dispose) active.dispose();
  active = null;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  const main = document.getElementById('main');
  const load = PAGES[page];
  if (!load) {
    fill(main, h('p', { class: 'error' }, `no page "${page}"`));
    return;
  }
  fill(main);
  const mod = await load();
  if (key !== renderKey) return;
  active = mod.render(main);
  document.title = `corral · ${page}`;
  await refresh();
  if (key === renderKey && document.body.dataset.rendered !== page) {
    performance.mark('corral:rendered');
    document.body.dataset.rendered = page;
  }
  schedule();
}

async function refresh() {
  if (!active) return;
  try { await active.refresh(state.range()); } catch (e) { console.warn('refresh:', e.message); }
}

function schedule() {
  clearInterval(timer);
  const s = +state.get('refresh', '0');
  if (s > 0) timer = setInterval(refresh, s * 1000);
}

function syncControls() {
  document.getElementById('range').value = state.get('range', '1h');
  document.getElementById('refresh').value = state.get('refresh', '0');
}

function askToken() {
  if (document.getElementById('tokenform')) return;
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', 'aria-label': 'read token' });
  const form = h('form', { id: 'tokenform', class: 'card' },
    h('p', {}, api.token() ? 'The aggregator refused this token.' : 'The aggregator needs a read token.'),
    h('label', {}, 'Read token ', input), h('button', { type: 'submit' }, 'Use token'));
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    api.setToken(input.value.trim());
    form.remove();
    delete document.body.dataset.rendered; // the page renders again, now with data
    renderKey = '';
    route();
  });
  document.getElementById('top').after(form);
  input.focus();
}

window.addEventListener('corral:unauthorized', askToken);
document.getElementById('range').addEventListener('change', e => state.set({ range: e.target.value }));
document.getElementById('refresh').addEventListener('change', e => state.set({ refresh: e.target.value === '0' ? null : e.target.value }));
document.getElementById('reload').addEventListener('click', refresh);
window.addEventListener('hashchange', route);
if (!location.hash) history.replaceState(null, '', '#/cluster');
route();
