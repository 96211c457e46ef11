// Render helpers shared by several views: badges, pills, live times, problem
// boxes, page headings and JSON blocks. Each returns a fresh element.

import { ApiError } from './api.js';
import { h } from './dom.js';
import { fmtAgo, fmtCountdown, fmtDateTime } from './format.js';

/** A <time> element that the 1-second ticker keeps up to date. */
export function timeAgo(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: fmtDateTime(iso), 'data-ago': iso }, fmtAgo(iso));
}

/** A <time> counting down to `iso` ("in 3 s", "due now"), kept current by the ticker. */
export function countdown(iso, testid) {
  if (!iso) return h('span', { class: 'muted' }, 'not scheduled');
  return h('time', { class: 'countdown', datetime: iso, title: fmtDateTime(iso), 'data-countdown': iso, 'data-testid': testid }, fmtCountdown(iso));
}

function tickTimes() {
  for (const el of document.querySelectorAll('[data-ago]')) {
    const txt = fmtAgo(el.dataset.ago);
    if (el.textContent !== txt) el.textContent = txt;
  }
  for (const el of document.querySelectorAll('[data-countdown]')) {
    const txt = fmtCountdown(el.dataset.countdown);
    if (el.textContent !== txt) el.textContent = txt;
  }
}

/** Start the 1-second ticker that keeps timeAgo() and countdown() elements current. */
export function startTicker() {
  setInterval(tickTimes, 1000);
}

/** Badge class and label of each delivery status (also the status filter's option labels). */
export const DELIVERY_BADGE = {
  pending: ['badge--info', 'Pending'],
  in_flight: ['badge--warn', 'In flight'],
  succeeded: ['badge--ok', 'Succeeded'],
  dead: ['badge--bad', 'Dead'],
  // Cancelled by the endpoint's transformation: finished, but not a failure.
  skipped: ['badge--skip', 'Skipped'],
};

/** The badge of a delivery status. */
export function deliveryBadge(status) {
  const [cls, label] = DELIVERY_BADGE[status] || ['', status || 'unknown'];
  return h('span', { class: `badge ${cls}`, 'data-testid': 'delivery-status' }, label);
}

// Formats other than the Standard Webhooks envelope, as endpoint badges name them.
const FORMAT_LABELS = { discord: 'Discord format', slack: 'Slack format' };

/** Status badges of an endpoint: its status, plus circuit, Kubernetes and message format when they apply. */
export function endpointBadges(ep) {
  const cls = { active: 'badge--ok', paused: 'badge--warn', disabled: 'badge--bad' }[ep.status] || '';
  const label = { active: 'Active', paused: 'Paused', disabled: 'Disabled' }[ep.status] || ep.status;
  return h('div', { class: 'badge-stack' },
    h('span', { class: `badge ${cls}`, 'data-testid': 'endpoint-status', title: ep.disabled_reason || undefined }, label),
    ep.circuit_state === 'open' ? h('span', { class: 'badge badge--bad badge--plain', 'data-testid': 'endpoint-circuit', title: 'Deliveries are held back until the endpoint recovers' }, 'Circuit open') : null,
    ep.managed_by === 'kubernetes' ? h('span', { class: 'badge badge--k8s badge--plain', 'data-testid': 'endpoint-managed' }, 'Managed by Kubernetes') : null,
    FORMAT_LABELS[ep.format] ? h('span', { class: 'badge badge--info badge--plain', 'data-testid': 'endpoint-format', title: 'Deliveries are sent as readable chat messages' }, FORMAT_LABELS[ep.format]) : null);
}

/** An HTTP status code coloured by class (2xx ok, 5xx bad, others warn); "—" for none. */
export function statusCodePill(code) {
  if (code === null || code === undefined) return h('span', { class: 'muted' }, '—');
  const cls = code >= 200 && code < 300 ? 'ok' : code >= 500 ? 'bad' : 'warn';
  return h('span', { class: `code-pill code-pill--${cls}` }, String(code));
}

/** Inline problem-details box (title + detail). */
export function problemBox(err, testid = 'problem') {
  const title = err instanceof ApiError ? err.title : 'Something went wrong';
  const detail = err instanceof ApiError ? err.detail : String(err && err.message || err);
  return h('div', { class: 'notice notice--error', role: 'alert', 'data-testid': testid },
    h('div', { class: 'notice__title' }, title),
    detail && detail !== title ? h('div', null, detail) : null);
}

/** The page heading (the router focuses its <h1>) with an optional subtitle and actions; also sets the tab title. */
export function pageHead(title, sub, ...actions) {
  document.title = `${title} · HookIt`;
  return h('div', { class: 'page-head' },
    h('div', null,
      h('h1', { tabindex: '-1' }, title),
      sub ? h('p', { class: 'page-head__sub' }, sub) : null),
    actions.length ? h('div', { class: 'page-head__actions' }, actions) : null);
}

/** Pretty-printed, syntax-coloured JSON built from text nodes (never innerHTML). */
export function jsonBlock(value, testid) {
  const pre = h('pre', { class: 'json', 'data-testid': testid, tabindex: '0', 'aria-label': 'JSON payload' });
  let text;
  try { text = JSON.stringify(value, null, 2); } catch { text = String(value); }
  if (text === undefined) text = 'null';
  const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false)\b|\b(null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  let m;
  while ((m = re.exec(text))) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    if (m[1]) {
      pre.append(h('span', { class: m[2] ? 'k' : 's' }, m[1]));
      if (m[2]) pre.append(m[2]);
    } else if (m[3]) pre.append(h('span', { class: 'b' }, m[3]));
    else if (m[4]) pre.append(h('span', { class: 'z' }, m[4]));
    else pre.append(h('span', { class: 'n' }, m[5]));
    last = re.lastIndex;
  }
  if (last < text.length) pre.append(text.slice(last));
  return pre;
}

/** One label/value pair of a detail grid (<dl>). */
export function field(label, value, testid) {
  return h('div', null, h('dt', null, label), h('dd', { 'data-testid': testid }, value));
}
