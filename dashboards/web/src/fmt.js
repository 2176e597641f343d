// fmt.js -- numbers and times for people: bytes, cores, rates, durations, timestamps.
// SPDX-License-Identifier: Apache-2.0

export function bytes(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0, x = Math.abs(v);
  while (x >= 1024 && i < u.length - 1) x /= 1024, i++;
  return `${v < 0 ? '-' : ''}${x >= 100 || i === 0 ? x.toFixed(0) : x.toFixed(1)} ${u[i]}`;
}

const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumSignificantDigits: 3 });

export function num(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (v !== 0 && Math.abs(v) < 0.001) return v.toExponential(1);
  if (Math.abs(v) >= 1e4) return compact.format(v);
  return (+v.toPrecision(digits)).toLocaleString('en');
}

export const cores = v => (v === null || v === undefined ? '–' : `${num(v)} ${v === 1 ? 'core' : 'cores'}`);
export const bytesPerSec = v => `${bytes(v)}/s`;
export const pct = v => (v === null || v === undefined || Number.isNaN(v) ? '–' : `${(v * 100).toFixed(1)} %`);
export const perSec = v => `${num(v)}/s`;

// Unit name -> formatter.
export function unit(name) {
  return { bytes, cores, bytesPerSec, pct, perSec, seconds: v => `${num(v)} s` }[name] || (v => num(v));
}

export function time(ms) {
  const d = new Date(ms);
  const p = n => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function ago(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// Kubernetes quantities ("200m", "32M", "1Gi", "2") -> number (cores or bytes).
export function quantity(s) {
  if (s === null || s === undefined || s === '') return null;
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(String(s).trim());
  if (!m) return null;
  const mult = { '': 1, m: 1e-3, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 }[m[2]];
  return mult === undefined ? null : +m[1] * mult;
}
