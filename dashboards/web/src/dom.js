// dom.js -- building the page from data, safely: every string becomes a text node or an attribute value.
// Nothing in the UI assigns innerHTML; data (log lines, labels, names) can never become markup.
// SPDX-License-Identifier: Apache-2.0

// h('td', {class: 'num', onclick: fn}, 'text', childNode, [more]) -> element.
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const k of kids) {
    if (k === null || k === undefined || k === false) continue;
    if (Array.isArray(k)) append(el, k);
    else el.append(k instanceof Node ? k : String(k));
  }
}

// Replaces el's children.
export function fill(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
  return el;
}

// A link inside the UI: href is always "#/page?..." built from encoded parameters, never from raw data.
export function link(page, params, ...kids) {
  const q = new URLSearchParams(params).toString();
  return h('a', { href: `#/${page}${q ? '?' + q : ''}` }, ...kids);
}

// A table from column specs {key, title, num, fmt(row) -> text|Node, sort(row) -> comparable}.
export function table(cols, rows, opts = {}) {
  let sortCol = opts.sortKey ? cols.find(c => c.key === opts.sortKey) : null, desc = opts.desc ?? true;
  const tbody = h('tbody');
  const render = () => {
    let rs = rows.slice();
    if (sortCol) {
      const f = sortCol.sort || (r => r[sortCol.key]);
      rs.sort((a, b) => cmp(f(a), f(b)) * (desc ? -1 : 1));
    }
    if (opts.limit) rs = rs.slice(0, opts.limit);
    fill(tbody, rs.map(r => h('tr', {}, cols.map(c => h('td', { class: c.num ? 'num' : null },
      c.fmt ? c.fmt(r) : r[c.key] ?? '')))));
    if (!rs.length) fill(tbody, h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, opts.empty || 'nothing')));
  };
  const head = h('tr', {}, cols.map(c => h('th', {
    class: (c.num ? 'num ' : '') + 'sort', title: 'sort',
    onclick: () => { desc = sortCol === c ? !desc : true; sortCol = c; render(); },
  }, c.title)));
  render();
  return h('div', { class: 'tablewrap' }, h('table', {}, h('thead', {}, head), tbody));
}

function cmp(a, b) {
  if (typeof a === 'number' || typeof b === 'number') return (Number.isNaN(+a) ? -Infinity : +a) - (Number.isNaN(+b) ? -Infinity : +b);
  return String(a ?? '').localeCompare(String(b ?? ''));
}

// A utilisation bar: fraction 0..1 (or more), label text.
export function bar(frac, label) {
  const pct = Math.max(0, Math.min(1, frac || 0)) * 100;
  return h('div', { class: 'bar', title: label },
    h('span', { class: frac > 0.9 ? 'hot' : null, style: `width:${pct.toFixed(1)}%` }), h('em', {}, label));
}

export function card(title, ...kids) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...kids);
}

export function errorBox(err) {
  return h('p', { class: 'error' }, String(err && err.message ? err.message : err));
}

// Label set as pills, e.g. {a="b"}.
export function labelPills(labels, skip = []) {
  return Object.entries(labels || {}).filter(([k]) => !skip.includes(k))
    .map(([k, v]) => h('span', { class: 'pill' }, `${k}=${v}`));
}
