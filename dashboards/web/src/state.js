// state.js -- the URL holds the state: #/<page>?range=1h&refresh=10&<page params>. Shareable links.
// SPDX-License-Identifier: Apache-2.0

export function current() {
  const hash = location.hash.replace(/^#\/?/, '');
  const i = hash.indexOf('?');
  const page = (i < 0 ? hash : hash.slice(0, i)) || 'cluster';
  return { page, params: new URLSearchParams(i < 0 ? '' : hash.slice(i + 1)) };
}

export function get(key, def) {
  const v = current().params.get(key);
  return v === null ? def : v;
}

// Merges patch into the current page's parameters (null deletes); replace: no new history entry.
export function set(patch, { replace = false, page } = {}) {
  const cur = current();
  for (const [k, v] of Object.entries(patch)) {
    if (v === null || v === undefined || v === '') cur.params.delete(k);
    else cur.params.set(k, v);
  }
  const q = cur.params.toString();
  const url = `#/${page || cur.page}${q ? '?' + q : ''}`;
  if (replace) history.replaceState(null, '', url);
  else location.hash = url;
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
// "15m" -> seconds.
export function durSec(s) {
  const m = /^(\d+)([smhdw])$/.exec(s || '');
  return m ? +m[1] * UNITS[m[2]] : 3600;
}

// The time range of the page: {start, end, step} in Unix seconds; step gives about 240 points.
export function range() {
  const r = durSec(get('range', '1h'));
  const end = Math.floor(Date.now() / 1000);
  const step = Math.max(1, Math.round(r / 240));
  return { start: end - r, end, step, seconds: r };
}
