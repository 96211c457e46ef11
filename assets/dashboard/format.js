// Text formatting for numbers, durations, times and ids. Pure functions (no DOM),
// so every view labels the same value the same way.

const numberFmt = new Intl.NumberFormat();

/** A count with the locale's grouping; "—" when absent. */
export function fmtNum(n) { return n === null || n === undefined ? '—' : numberFmt.format(n); }

/** A duration in milliseconds, in the largest fitting unit. */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  // Attempt durations are whole milliseconds: 0 means under one.
  if (ms < 1) return '<1 ms';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

/** A ratio (0..1) as a percentage, with more decimals close to 100%. */
export function fmtPct(r) {
  if (r === null || r === undefined) return '—';
  const pct = r * 100;
  if (pct === 100 || pct === 0) return `${pct}%`;
  return `${pct.toFixed(pct >= 99 ? 2 : 1)}%`;
}

/** Milliseconds since the epoch of an ISO time, or null. */
export function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

/** A local date and time; only the time when it is today. */
export function fmtDateTime(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  const d = new Date(t);
  const sameDay = new Date().toDateString() === d.toDateString();
  return d.toLocaleString(undefined, sameDay
    ? { hour: '2-digit', minute: '2-digit', second: '2-digit' }
    : { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** A number of seconds as "5 s", "3 min 20 s", "2 h 5 min" or "3 d". */
export function fmtDuration(sec) {
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${sec % 60} s`;
  const hh = Math.floor(m / 60);
  if (hh < 48) return `${hh} h ${m % 60} min`;
  return `${Math.floor(hh / 24)} d`;
}

/** How long ago an ISO time was ("12 s ago"). */
export function fmtAgo(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  const sec = (Date.now() - t) / 1000;
  if (sec < 5) return 'just now';
  if (sec < 60) return `${Math.floor(sec)} s ago`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
  if (sec < 172800) return `${Math.floor(sec / 3600)} h ago`;
  return `${Math.floor(sec / 86400)} d ago`;
}

/** How long until an ISO time ("in 4 s", "due now"). */
export function fmtCountdown(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  const sec = (t - Date.now()) / 1000;
  if (sec <= 0.5) return 'due now';
  return `in ${fmtDuration(Math.ceil(sec))}`;
}

/** A long prefixed id shortened to its prefix and last 8 characters ("dlv_…a1b2c3d4"). */
export function shortId(id) {
  if (!id) return '—';
  if (id.length <= 20) return id;
  const us = id.indexOf('_');
  const prefix = us > 0 && us < 8 ? id.slice(0, us + 1) : '';
  return `${prefix}…${id.slice(-8)}`;
}
