// HookIt dashboard: a dependency-free single-page app (ES module, no build step).
//
// All data comes from the JSON API under /v1, authenticated with the API key the
// user signs in with. The key lives in sessionStorage only (never in a URL).
// Untrusted strings (URLs, payloads, receiver responses, error messages) are only
// ever inserted with textContent, never as HTML.

const KEY_STORAGE = 'hookit.apiKey';
const PAGE_SIZE = 50;
const LIST_POLL_MS = 2000;
const ENDPOINTS_POLL_MS = 10000;
const CHART_POLL_MS = 30000;
const CHART_RANGES = [
  { minutes: 15, label: '15 min', long: '15 minutes' },
  { minutes: 60, label: '1 h', long: 'hour' },
  { minutes: 180, label: '3 h', long: '3 hours' },
  { minutes: 1440, label: '24 h', long: '24 hours' },
];
const CHART_DEFAULT_MINUTES = 60;
const CHART_RANGE_STORAGE = 'hookit.chartMinutes';
const DELIVERY_STATUSES = ['pending', 'in_flight', 'succeeded', 'dead'];
const DEMO_MODES = ['up', 'errors', 'timeouts'];

const state = {
  key: null,
  endpoints: new Map(), // id -> Endpoint, a cache used to show URLs next to ids
  demoMode: null,
  view: null, // { ctrl: AbortController }
  firstRoute: true,
};

try { state.key = sessionStorage.getItem(KEY_STORAGE); } catch { state.key = null; }

// ---------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Create an element. attrs: on* -> listeners, class, dataset via data-*, boolean attrs. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

function applyAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'text') {
      el.textContent = v;
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

function appendChildren(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const $ = (sel, root = document) => root.querySelector(sel);

/** Replace an element's children; skips null/false and flattens arrays (unlike replaceChildren). */
function setChildren(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
  return el;
}

/**
 * Keyed reconciliation of a list of rows into a container. Rows whose signature
 * is unchanged keep their DOM node; changed rows are rebuilt. Keyboard focus
 * inside a rebuilt row is moved to the matching control of the new row.
 */
function reconcile(container, items, keyOf, sigOf, build, { flashNew = false } = {}) {
  const existing = new Map();
  for (const el of container.children) if (el.dataset.key) existing.set(el.dataset.key, el);
  const active = document.activeElement;
  let focusKey = null;
  let focusTestId = null;
  if (active && container.contains(active)) {
    const row = active.closest('[data-key]');
    if (row) { focusKey = row.dataset.key; focusTestId = active.dataset.testid || null; }
  }
  const hadRows = existing.size > 0;
  const wanted = [];
  for (const item of items) {
    const key = keyOf(item);
    const sig = sigOf(item);
    let el = existing.get(key);
    if (el && el.dataset.sig === sig) {
      existing.delete(key);
    } else {
      const old = el;
      el = build(item);
      el.dataset.key = key;
      el.dataset.sig = sig;
      if (old) { old.replaceWith(el); existing.delete(key); } else if (flashNew && hadRows) el.classList.add('is-new');
    }
    wanted.push(el);
  }
  for (const el of existing.values()) el.remove();
  wanted.forEach((el, i) => {
    if (container.children[i] !== el) container.insertBefore(el, container.children[i] || null);
  });
  while (container.children.length > wanted.length) container.lastElementChild.remove();
  if (focusKey && !container.contains(document.activeElement)) {
    const row = wanted.find((el) => el.dataset.key === focusKey);
    const target = row && (focusTestId ? row.querySelector(`[data-testid="${focusTestId}"]`) : null);
    if (target && !target.disabled) target.focus();
  }
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

const numberFmt = new Intl.NumberFormat();

function fmtNum(n) { return n === null || n === undefined ? '—' : numberFmt.format(n); }

function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  // Attempt durations are whole milliseconds: 0 means under one.
  if (ms < 1) return '<1 ms';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

function fmtPct(r) {
  if (r === null || r === undefined) return '—';
  const pct = r * 100;
  if (pct === 100 || pct === 0) return `${pct}%`;
  return `${pct.toFixed(pct >= 99 ? 2 : 1)}%`;
}

function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

function fmtDateTime(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  const d = new Date(t);
  const sameDay = new Date().toDateString() === d.toDateString();
  return d.toLocaleString(undefined, sameDay
    ? { hour: '2-digit', minute: '2-digit', second: '2-digit' }
    : { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function fmtDuration(sec) {
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${sec % 60} s`;
  const hh = Math.floor(m / 60);
  if (hh < 48) return `${hh} h ${m % 60} min`;
  return `${Math.floor(hh / 24)} d`;
}

function fmtAgo(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  const sec = (Date.now() - t) / 1000;
  if (sec < 5) return 'just now';
  if (sec < 60) return `${Math.floor(sec)} s ago`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
  if (sec < 172800) return `${Math.floor(sec / 3600)} h ago`;
  return `${Math.floor(sec / 86400)} d ago`;
}

function fmtCountdown(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  const sec = (t - Date.now()) / 1000;
  if (sec <= 0.5) return 'due now';
  return `in ${fmtDuration(Math.ceil(sec))}`;
}

/** A <time> element that the 1-second ticker keeps up to date. */
function timeAgo(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: fmtDateTime(iso), 'data-ago': iso }, fmtAgo(iso));
}

function countdown(iso, testid) {
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
setInterval(tickTimes, 1000);

function shortId(id) {
  if (!id) return '—';
  if (id.length <= 20) return id;
  const us = id.indexOf('_');
  const prefix = us > 0 && us < 8 ? id.slice(0, us + 1) : '';
  return `${prefix}…${id.slice(-8)}`;
}

function endpointLabel(id) {
  const ep = state.endpoints.get(id);
  if (!ep) return shortId(id);
  try {
    const u = new URL(ep.url);
    const path = u.pathname === '/' ? '' : u.pathname;
    return `${u.host}${path}`;
  } catch {
    return ep.url;
  }
}

const DELIVERY_BADGE = {
  pending: ['badge--info', 'Pending'],
  in_flight: ['badge--warn', 'In flight'],
  succeeded: ['badge--ok', 'Succeeded'],
  dead: ['badge--bad', 'Dead'],
};

function deliveryBadge(status) {
  const [cls, label] = DELIVERY_BADGE[status] || ['', status || 'unknown'];
  return h('span', { class: `badge ${cls}`, 'data-testid': 'delivery-status' }, label);
}

function statusCodePill(code) {
  if (code === null || code === undefined) return h('span', { class: 'muted' }, '—');
  const cls = code >= 200 && code < 300 ? 'ok' : code >= 500 ? 'bad' : 'warn';
  return h('span', { class: `code-pill code-pill--${cls}` }, String(code));
}

// ---------------------------------------------------------------------------
// Status messages (aria-live) and the live indicator
// ---------------------------------------------------------------------------

let toastTimer = null;

/** Announce a message politely and show it as a toast. `link` = {href, text}. */
function announce(message, { error = false, link = null } = {}) {
  const region = $('#status-region');
  clearTimeout(toastTimer);
  region.replaceChildren(h('div', { class: `toast${error ? ' toast--error' : ''}` },
    h('span', null, message),
    link ? h('a', { href: link.href, 'data-testid': 'status-link' }, link.text) : null));
  toastTimer = setTimeout(() => region.replaceChildren(), error ? 10000 : 6000);
}

function setLive(stateName, text) {
  const el = $('#live-indicator');
  if (!el) return;
  el.dataset.state = stateName;
  $('.live-indicator__text', el).textContent = text;
  el.title = stateName === 'error' ? 'Live updates are failing; retrying' : stateName === 'paused' ? 'Live updates pause while this tab is hidden' : 'Live updates are on';
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) setLive('paused', 'Paused');
  else setLive('ok', 'Live');
});

// ---------------------------------------------------------------------------
// API client
// ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    const p = problem && typeof problem === 'object' ? problem : {};
    super(p.detail || p.title || `Request failed (HTTP ${status})`);
    this.name = 'ApiError';
    this.status = status;
    this.title = p.title || (status ? `Request failed (HTTP ${status})` : 'Request failed');
    this.detail = p.detail || '';
    this.type = p.type || null;
  }
}

async function api(path, { method = 'GET', body, signal, signOutOn401 = true } = {}) {
  if (!state.key) throw new ApiError(401, { title: 'Not signed in' });
  const headers = { Authorization: 'Bearer ' + state.key, Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, cache: 'no-store', credentials: 'omit',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Network error', detail: 'Could not reach the HookIt server.' });
  }
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  if (res.status === 401 && signOutOn401) {
    signOut('Your API key was not accepted (it may have been revoked or rotated). Please sign in again.');
    throw new ApiError(401, data || { title: 'Unauthorized' });
  }
  if (!res.ok) {
    throw new ApiError(res.status, data && typeof data === 'object' ? data : { title: res.statusText || `HTTP ${res.status}`, detail: text.slice(0, 300) });
  }
  return data;
}

function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const str = q.toString();
  return str ? `?${str}` : '';
}

/** Inline problem-details box (title + detail). */
function problemBox(err, testid = 'problem') {
  const title = err instanceof ApiError ? err.title : 'Something went wrong';
  const detail = err instanceof ApiError ? err.detail : String(err && err.message || err);
  return h('div', { class: 'notice notice--error', role: 'alert', 'data-testid': testid },
    h('div', { class: 'notice__title' }, title),
    detail && detail !== title ? h('div', null, detail) : null);
}

function isAbort(e) { return e && e.name === 'AbortError'; }

function reportError(e, what) {
  if (isAbort(e) || !state.key) return;
  if (e instanceof ApiError && e.status === 401) return;
  const msg = e instanceof ApiError ? `${e.title}${e.detail ? `: ${e.detail}` : ''}` : String(e && e.message || e);
  announce(what ? `${what} failed. ${msg}` : msg, { error: true });
}

/** Run an async action from a button: disables it while running and reports errors. */
async function withBusy(button, what, fn) {
  // aria-disabled (not `disabled`) keeps keyboard focus on the button while busy,
  // so dialogs opened from it can hand focus back.
  if (button) {
    if (button.getAttribute('aria-disabled') === 'true') return undefined;
    button.setAttribute('aria-disabled', 'true');
    button.setAttribute('aria-busy', 'true');
    button.classList.add('is-busy');
  }
  try {
    return await fn();
  } catch (e) {
    reportError(e, what);
    return undefined;
  } finally {
    if (button) { button.removeAttribute('aria-disabled'); button.removeAttribute('aria-busy'); button.classList.remove('is-busy'); }
  }
}

/** Fetch (and cache) endpoints, up to `maxPages` pages. Used to label rows and fill selects. */
async function loadEndpointsCache(signal, maxPages = 10) {
  const all = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i++) {
    const res = await api(`/v1/endpoints${qs({ limit: 100, cursor })}`, { signal });
    all.push(...(res.data || []));
    cursor = res.next_cursor;
    if (!cursor) break;
  }
  state.endpoints = new Map(all.map((ep) => [ep.id, ep]));
  return all;
}

// ---------------------------------------------------------------------------
// Polling: setTimeout chains that pause while the tab is hidden
// ---------------------------------------------------------------------------

/** Returned by a poll function to stop polling (e.g. the object no longer exists). */
const STOP_POLLING = Symbol('stop polling');

function makePoller(signal, fn, ms) {
  let timer = null;
  let running = false;
  let again = false;
  let stopped = false;
  const schedule = () => {
    clearTimeout(timer);
    timer = null;
    if (!signal.aborted && !stopped && !document.hidden) timer = setTimeout(tick, ms);
  };
  const tick = async () => {
    clearTimeout(timer);
    timer = null;
    if (signal.aborted || stopped || !state.key) return;
    if (running) { again = true; return; }
    running = true;
    try {
      if ((await fn()) === STOP_POLLING) stopped = true;
      if (!document.hidden) setLive('ok', 'Live');
    } catch (e) {
      if (!isAbort(e) && !(e instanceof ApiError && e.status === 401)) {
        setLive('error', 'Reconnecting…');
        console.warn('poll failed', e);
      }
    } finally {
      running = false;
    }
    if (again) { again = false; tick(); return; }
    schedule();
  };
  const onVisibility = () => {
    if (document.hidden) { clearTimeout(timer); timer = null; } else if (!running && !stopped) tick();
  };
  document.addEventListener('visibilitychange', onVisibility);
  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  });
  return { now: tick };
}

// ---------------------------------------------------------------------------
// Dialogs
// ---------------------------------------------------------------------------

/** Show a modal <dialog>; resolves with its returnValue. Focus returns to the opener. */
function showDialog(dialog) {
  const opener = document.activeElement;
  const openerRow = opener && opener.closest ? opener.closest('[data-key]') : null;
  const rowKey = openerRow ? openerRow.dataset.key : null;
  const openerTestId = opener && opener.dataset ? opener.dataset.testid : null;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue);
      // Return focus after the caller has re-enabled its button; if a live update
      // replaced the row meanwhile, focus the same control in the new row.
      setTimeout(() => {
        let target = opener;
        if ((!target || !target.isConnected) && rowKey && openerTestId) {
          target = document.querySelector(`[data-key="${CSS.escape(rowKey)}"] [data-testid="${CSS.escape(openerTestId)}"]`);
        }
        if (target && target.isConnected && typeof target.focus === 'function') target.focus();
      }, 0);
    }, { once: true });
    dialog.showModal();
  });
}

async function confirmDialog({ title, message, confirmLabel = 'Confirm', danger = false }) {
  const dialog = $('#confirm-dialog');
  $('#confirm-dialog-title').textContent = title;
  const msg = $('#confirm-dialog-message');
  setChildren(msg, message);
  const btn = $('#confirm-dialog-confirm');
  btn.textContent = confirmLabel;
  btn.className = `btn ${danger ? 'btn--danger' : 'btn--primary'}`;
  return (await showDialog(dialog)) === 'confirm';
}

async function secretDialog({ title, intro, secret }) {
  const dialog = $('#secret-dialog');
  $('#secret-dialog-title').textContent = title;
  $('#secret-dialog-intro').textContent = intro;
  const input = $('#secret-value');
  input.value = secret;
  const copy = $('#secret-copy');
  copy.textContent = 'Copy';
  $('#secret-status').textContent = '';
  const p = showDialog(dialog);
  input.focus();
  input.select();
  await p;
  input.value = '';
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const input = $('#secret-value');
    input.focus();
    input.select();
    try { return document.execCommand('copy'); } catch { return false; }
  }
}

// ---------------------------------------------------------------------------
// Shell: sign in / out, navigation, demo panel
// ---------------------------------------------------------------------------

function showShell(signedIn) {
  $('#app-nav').hidden = !signedIn;
  $('#header-right').hidden = !signedIn;
  if (!signedIn) $('#demo-panel').hidden = true;
}

function signOut(message) {
  state.key = null;
  state.endpoints = new Map();
  state.demoMode = null;
  try { sessionStorage.removeItem(KEY_STORAGE); } catch { /* ignore */ }
  if (state.view) state.view.ctrl.abort();
  state.view = null;
  showShell(false);
  renderSignIn(message);
}

function renderSignIn(message) {
  const main = $('#main');
  const error = h('div', { 'data-testid': 'signin-error' });
  if (message) error.append(h('div', { class: 'notice notice--warn', role: 'alert' }, message));
  const input = h('input', {
    id: 'api-key', name: 'api-key', class: 'input input--mono', type: 'password', required: true,
    autocomplete: 'current-password', spellcheck: 'false', 'data-testid': 'api-key-input',
    'aria-describedby': 'api-key-hint',
  });
  const submit = h('button', { type: 'submit', class: 'btn btn--primary', 'data-testid': 'signin-submit' }, 'Sign in');
  const form = h('form', { class: 'card__body', 'data-testid': 'signin-form', novalidate: true },
    h('h1', { id: 'signin-title', tabindex: '-1' }, 'Sign in to HookIt'),
    h('p', { class: 'lead' }, 'Use an API key to manage endpoints and inspect webhook deliveries.'),
    error,
    h('div', { class: 'field' },
      h('label', { class: 'field__label', for: 'api-key' }, 'API key'),
      input,
      h('p', { class: 'field__hint', id: 'api-key-hint' }, 'The key is kept in this browser tab only and is forgotten when you close it.')),
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    error.replaceChildren();
    if (!key) {
      input.setAttribute('aria-invalid', 'true');
      error.append(h('div', { class: 'notice notice--error', role: 'alert' }, 'Enter an API key.'));
      input.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    state.key = key;
    try {
      await api('/v1/endpoints?limit=1', { signOutOn401: false });
      try { sessionStorage.setItem(KEY_STORAGE, key); } catch { /* private mode: keep in memory */ }
      input.value = '';
      if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/endpoints');
      startSession();
    } catch (e) {
      state.key = null;
      input.setAttribute('aria-invalid', 'true');
      const notice = e instanceof ApiError && (e.status === 401 || e.status === 403)
        ? h('div', { class: 'notice notice--error', role: 'alert' }, 'That API key was not accepted. Check it and try again.')
        : problemBox(e);
      error.replaceChildren(notice);
      submit.disabled = false;
      submit.textContent = 'Sign in';
      input.focus();
    }
  });
  main.replaceChildren(h('section', { class: 'signin card', 'aria-labelledby': 'signin-title' }, form));
  document.title = 'Sign in · HookIt';
  input.focus();
}

function startSession() {
  showShell(true);
  setLive(document.hidden ? 'paused' : 'ok', document.hidden ? 'Paused' : 'Live');
  refreshDemo();
  route();
}

async function refreshDemo() {
  const panel = $('#demo-panel');
  try {
    const res = await api('/v1/demo/receiver');
    setDemoMode(res && res.mode);
    panel.hidden = false;
  } catch {
    // 404 means "not in demo mode"; anything else also hides the panel.
    panel.hidden = true;
  }
}

function setDemoMode(mode) {
  state.demoMode = mode || null;
  $('#demo-mode-current').textContent = mode || 'unknown';
  for (const btn of document.querySelectorAll('#demo-mode-group [data-mode]')) {
    btn.setAttribute('aria-pressed', String(btn.dataset.mode === mode));
  }
}

function initShell() {
  $('#signout-button').addEventListener('click', () => {
    signOut();
    announce('Signed out.');
  });
  $('#demo-mode-group').addEventListener('click', async (ev) => {
    const btn = ev.target.closest('button[data-mode]');
    if (!btn || !DEMO_MODES.includes(btn.dataset.mode)) return;
    const mode = btn.dataset.mode;
    const buttons = [...document.querySelectorAll('#demo-mode-group button')];
    if (buttons.some((b) => b.getAttribute('aria-disabled') === 'true')) return;
    buttons.forEach((b) => b.setAttribute('aria-disabled', 'true'));
    try {
      const res = await api('/v1/demo/receiver', { method: 'POST', body: { mode } });
      setDemoMode((res && res.mode) || mode);
      announce(`Demo receiver mode set to “${(res && res.mode) || mode}”.`);
    } catch (e) {
      reportError(e, 'Changing the demo receiver mode');
    } finally {
      buttons.forEach((b) => b.removeAttribute('aria-disabled'));
    }
  });
  $('#secret-copy').addEventListener('click', async (ev) => {
    const button = ev.currentTarget;
    const ok = await copyText($('#secret-value').value);
    button.textContent = ok ? 'Copied' : 'Copy failed';
    $('#secret-status').textContent = ok ? 'Secret copied to the clipboard.' : 'Could not copy; select the text and copy it manually.';
    announce(ok ? 'Secret copied to the clipboard.' : 'Could not copy; select the text and copy it manually.', { error: !ok });
  });
  window.addEventListener('hashchange', route);
}

// ---------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/endpoints';
  const qi = raw.indexOf('?');
  const path = qi >= 0 ? raw.slice(0, qi) : raw;
  const query = qi >= 0 ? raw.slice(qi + 1) : '';
  const decode = (seg) => { try { return decodeURIComponent(seg); } catch { return seg; } };
  return { parts: path.split('/').filter(Boolean).map(decode), params: new URLSearchParams(query) };
}

/** Replace the hash query without adding history entries or re-routing. */
function replaceHashQuery(base, params) {
  const str = qs(params);
  const hash = `#${base}${str}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
}

function route() {
  if (state.view) state.view.ctrl.abort();
  state.view = null;
  if (!state.key) { showShell(false); renderSignIn(); return; }
  showShell(true);
  const { parts, params } = parseHash();
  const ctrl = new AbortController();
  const main = $('#main');
  const ctx = {
    signal: ctrl.signal,
    main,
    poll: (fn, ms) => makePoller(ctrl.signal, fn, ms),
  };
  state.view = { ctrl };
  main.replaceChildren();
  let section = parts[0] || 'endpoints';
  switch (section) {
    case 'endpoints': viewEndpoints(ctx); break;
    case 'deliveries':
      if (parts[1]) viewDelivery(ctx, parts[1]); else viewDeliveries(ctx, params);
      break;
    case 'dead-letters': viewDeadLetters(ctx, params); break;
    case 'events':
      if (parts[1]) { viewEvent(ctx, parts[1]); section = 'deliveries'; break; }
    // fall through
    default:
      location.replace('#/endpoints');
      return;
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  // Move focus to the new page's heading so screen readers announce the change.
  if (!state.firstRoute) {
    const h1 = $('h1', main);
    if (h1) h1.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  state.firstRoute = false;
}

function pageHead(title, sub, ...actions) {
  document.title = `${title} · HookIt`;
  return h('div', { class: 'page-head' },
    h('div', null,
      h('h1', { tabindex: '-1' }, title),
      sub ? h('p', { class: 'page-head__sub' }, sub) : null),
    actions.length ? h('div', { class: 'page-head__actions' }, actions) : null);
}

// ---------------------------------------------------------------------------
// Charts (hand-rolled SVG)
// ---------------------------------------------------------------------------

function niceStep(max, ticks) {
  const raw = Math.max(max, 1) / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  return Math.max(1, nice * mag);
}

function sparkline(values, label) {
  const w = 100;
  const hgt = 28;
  const vals = Array.isArray(values) && values.length ? values : [];
  const max = Math.max(1, ...vals);
  const step = vals.length > 1 ? w / (vals.length - 1) : w;
  const pts = vals.map((v, i) => [i * step, hgt - 2 - (v / max) * (hgt - 4)]);
  const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
  const svg = s('svg', {
    class: 'sparkline', width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': label,
    'data-testid': 'endpoint-sparkline', focusable: 'false',
  });
  svg.append(s('title', null, label));
  svg.append(s('line', { class: 'sparkline__base', x1: 0, x2: w, y1: hgt - 1.5, y2: hgt - 1.5 }));
  if (pts.length > 1) {
    svg.append(s('polygon', { class: 'sparkline__area', points: `0,${hgt - 1.5} ${line} ${w},${hgt - 1.5}` }));
    svg.append(s('polyline', { class: 'sparkline__line', points: line }));
  }
  return svg;
}

const SERIES = [
  { key: 'delivered', label: 'Delivered' },
  { key: 'failed', label: 'Failed attempts' },
  { key: 'dead', label: 'Dead' },
];

function fmtClock(t) {
  return new Date(t).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** Minutes between x-axis ticks: the smallest clock-friendly step that fits. */
function tickMinutes(spanMinutes, maxTicks) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720];
  return steps.find((m) => spanMinutes / m <= maxTicks) || 1440;
}

function chartRange(minutes) {
  return CHART_RANGES.find((r) => r.minutes === minutes) || CHART_RANGES.find((r) => r.minutes === CHART_DEFAULT_MINUTES);
}

/** Line chart of delivered / failed / dead per minute. Re-rendered on data or size change. */
function renderTimeseries(container, buckets, range) {
  const data = (buckets || []).map((b) => ({
    t: parseTime(b.minute), delivered: b.delivered || 0, failed: b.failed || 0, dead: b.dead || 0,
  })).filter((b) => b.t !== null);
  const totals = Object.fromEntries(SERIES.map(({ key }) => [key, data.reduce((a, b) => a + b[key], 0)]));
  const peak = Math.max(0, ...data.map((b) => Math.max(b.delivered, b.failed, b.dead)));

  const W = Math.max(320, Math.floor(container.clientWidth || 900));
  const H = 240;
  const m = { l: 46, r: 14, t: 12, b: 30 };
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;
  const step = niceStep(peak, 4);
  const yMax = Math.max(step, Math.ceil(peak / step) * step);
  const n = data.length;
  const t0 = n ? data[0].t : Date.now() - range.minutes * 60000;
  const t1 = n ? data[n - 1].t : Date.now();
  const span = Math.max(60000, t1 - t0);
  const x = (t) => m.l + ((t - t0) / span) * iw;
  const y = (v) => m.t + ih - (v / yMax) * ih;

  const first = n ? fmtClock(t0) : '';
  const last = n ? fmtClock(t1) : '';
  const summary = n
    ? `Deliveries per minute from ${first} to ${last}: ${fmtNum(totals.delivered)} delivered, ${fmtNum(totals.failed)} failed attempts, ${fmtNum(totals.dead)} dead. Peak ${fmtNum(peak)} per minute.`
    : 'No delivery activity data yet.';

  const svg = s('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, focusable: 'false' });
  const grid = s('g', { class: 'grid' });
  const yAxis = s('g', { class: 'axis axis--y' });
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    const yy = y(v).toFixed(1);
    grid.append(s('line', { x1: m.l, x2: W - m.r, y1: yy, y2: yy }));
    yAxis.append(s('text', { x: m.l - 8, y: yy, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, fmtNum(v)));
  }
  const xAxis = s('g', { class: 'axis axis--x' });
  xAxis.append(s('line', { class: 'domain', x1: m.l, x2: W - m.r, y1: m.t + ih + 0.5, y2: m.t + ih + 0.5 }));
  // Ticks on round clock times, at least ~90 px apart.
  const every = tickMinutes(span / 60000, Math.max(2, Math.floor(iw / 90))) * 60000;
  for (let t = Math.ceil(t0 / every) * every; t <= t1; t += every) {
    const xx = x(t);
    xAxis.append(s('line', { class: 'domain', x1: xx, x2: xx, y1: m.t + ih, y2: m.t + ih + 4 }));
    xAxis.append(s('text', { x: xx, y: H - 10, 'text-anchor': 'middle' }, fmtClock(t)));
  }
  svg.append(grid, yAxis, xAxis);

  // The newest bucket is usually the minute in progress: its segment is dashed, so
  // a minute still filling up does not read as a sudden drop.
  const inProgress = n > 1 && data[n - 1].t + 60000 > Date.now();
  if (n) {
    const done = inProgress ? data.slice(0, n - 1) : data;
    const pts = (rows, key) => rows.map((b) => `${x(b.t).toFixed(1)},${y(b[key]).toFixed(1)}`).join(' ');
    const tEnd = done[done.length - 1].t;
    svg.append(s('polygon', { class: 'area--delivered', points: `${x(t0)},${y(0)} ${pts(done, 'delivered')} ${x(tEnd)},${y(0)}` }));
    for (const { key } of SERIES.slice().reverse()) {
      svg.append(s('polyline', { class: `series series--${key}`, points: pts(done, key) }));
      if (inProgress) svg.append(s('polyline', { class: `series series--${key} series--partial`, points: pts(data.slice(n - 2), key) }));
    }
  }

  // Pointer read-out (the hidden table below carries the same data for assistive tech).
  const guide = s('line', { class: 'guide', y1: m.t, y2: m.t + ih, visibility: 'hidden' });
  const hit = s('rect', { class: 'hit', x: m.l, y: m.t, width: iw, height: ih });
  svg.append(guide, hit);
  const tip = h('div', { class: 'chart-tooltip', hidden: true, 'aria-hidden': 'true' });
  if (n) {
    hit.addEventListener('pointermove', (ev) => {
      const rect = svg.getBoundingClientRect();
      const px = ((ev.clientX - rect.left) / rect.width) * W;
      const t = t0 + ((px - m.l) / iw) * span;
      let best = 0;
      for (let i = 1; i < n; i++) if (Math.abs(data[i].t - t) < Math.abs(data[best].t - t)) best = i;
      const b = data[best];
      const gx = x(b.t);
      guide.setAttribute('x1', gx);
      guide.setAttribute('x2', gx);
      guide.setAttribute('visibility', 'visible');
      tip.textContent = `${fmtClock(b.t)}${inProgress && best === n - 1 ? ' (so far)' : ''} · ${b.delivered} delivered · ${b.failed} failed · ${b.dead} dead`;
      tip.hidden = false;
      tip.style.left = `${(gx / W) * rect.width}px`;
      tip.style.top = `${(m.t / H) * rect.height}px`;
    });
    hit.addEventListener('pointerleave', () => { guide.setAttribute('visibility', 'hidden'); tip.hidden = true; });
  }

  const legend = h('ul', { class: 'legend', 'aria-hidden': 'true' },
    SERIES.map(({ key, label }) => h('li', null,
      h('span', { class: `legend__swatch legend__swatch--${key}` }), label, ' ', h('strong', null, fmtNum(totals[key])))));

  const table = h('table', { 'data-testid': 'activity-table' },
    h('caption', null, `Deliveries per minute, last ${range.long}`),
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Minute'), SERIES.map(({ label }) => h('th', { scope: 'col' }, label)))),
    h('tbody', null, data.map((b) => h('tr', null,
      h('th', { scope: 'row' }, fmtClock(b.t)), SERIES.map(({ key }) => h('td', null, String(b[key])))))));

  container.replaceChildren(legend, h('div', { class: 'chart' }, svg, tip), h('div', { class: 'visually-hidden' }, table));
}

function loadChartMinutes() {
  let stored = null;
  try { stored = Number(sessionStorage.getItem(CHART_RANGE_STORAGE)); } catch { stored = null; }
  return chartRange(stored).minutes;
}

function activityCard(ctx) {
  let range = chartRange(loadChartMinutes());
  const body = h('div', { class: 'card__body', 'data-testid': 'activity-chart' }, h('p', { class: 'muted' }, 'Loading activity…'));
  const sub = h('span', { class: 'card__sub' }, `per minute, last ${range.long}`);
  const rangeButtons = CHART_RANGES.map((r) => h('button', {
    type: 'button', class: 'segmented__btn', 'data-minutes': r.minutes, 'data-testid': `activity-range-${r.minutes}`,
    'aria-pressed': String(r.minutes === range.minutes), title: `Last ${r.long}`,
  }, r.label));
  const card = h('section', { class: 'card', 'aria-labelledby': 'activity-title' },
    h('div', { class: 'card__head' },
      h('h2', { id: 'activity-title' }, 'Activity ', sub),
      h('div', { class: 'segmented segmented--sm', role: 'group', 'aria-label': 'Time range' }, rangeButtons)),
    body);
  let buckets = null;
  const draw = () => { if (buckets) renderTimeseries(body, buckets, range); };
  const poller = ctx.poll(async () => {
    const want = range;
    try {
      const res = await api(`/v1/stats/timeseries${qs({ minutes: want.minutes })}`, { signal: ctx.signal });
      if (want !== range) return; // the range changed meanwhile; its own fetch follows
      buckets = (res && res.buckets) || [];
      draw();
    } catch (e) {
      if (isAbort(e)) throw e;
      if (!buckets) body.replaceChildren(problemBox(e));
      throw e;
    }
  }, CHART_POLL_MS);
  for (const btn of rangeButtons) {
    btn.addEventListener('click', () => {
      const next = chartRange(Number(btn.dataset.minutes));
      if (next === range) return;
      range = next;
      try { sessionStorage.setItem(CHART_RANGE_STORAGE, String(range.minutes)); } catch { /* keep in memory */ }
      for (const b of rangeButtons) b.setAttribute('aria-pressed', String(b === btn));
      sub.textContent = `per minute, last ${range.long}`;
      poller.now();
    });
  }
  poller.now();
  let lastWidth = 0;
  const ro = new ResizeObserver(() => {
    const w = body.clientWidth;
    if (Math.abs(w - lastWidth) > 4) { lastWidth = w; draw(); }
  });
  ro.observe(body);
  ctx.signal.addEventListener('abort', () => ro.disconnect());
  return card;
}

// ---------------------------------------------------------------------------
// Endpoints page
// ---------------------------------------------------------------------------

// Formats other than the Standard Webhooks envelope, as the endpoint list names them.
const FORMAT_LABELS = { discord: 'Discord format', slack: 'Slack format' };

function endpointBadges(ep) {
  const cls = { active: 'badge--ok', paused: 'badge--warn', disabled: 'badge--bad' }[ep.status] || '';
  const label = { active: 'Active', paused: 'Paused', disabled: 'Disabled' }[ep.status] || ep.status;
  return h('div', { class: 'badge-stack' },
    h('span', { class: `badge ${cls}`, 'data-testid': 'endpoint-status', title: ep.disabled_reason || undefined }, label),
    ep.circuit_state === 'open' ? h('span', { class: 'badge badge--bad badge--plain', 'data-testid': 'endpoint-circuit', title: 'Deliveries are held back until the endpoint recovers' }, 'Circuit open') : null,
    ep.managed_by === 'kubernetes' ? h('span', { class: 'badge badge--k8s badge--plain', 'data-testid': 'endpoint-managed' }, 'Managed by Kubernetes') : null,
    FORMAT_LABELS[ep.format] ? h('span', { class: 'badge badge--info badge--plain', 'data-testid': 'endpoint-format', title: 'Deliveries are sent as readable chat messages' }, FORMAT_LABELS[ep.format]) : null);
}

function rateClass(r) {
  if (r === null || r === undefined) return '';
  return r >= 0.99 ? 'rate--ok' : r >= 0.9 ? 'rate--warn' : 'rate--bad';
}

function viewEndpoints(ctx) {
  const { main } = ctx;
  const tbody = h('tbody');
  const tableArea = h('div', { class: 'table-wrap' });
  const foot = h('div', { class: 'card__foot' });
  const listError = h('div');
  let endpoints = [];
  let cursors = [null]; // cursor of each loaded page
  let nextCursor = null;
  let stats = new Map();

  const createDetails = createEndpointForm(ctx, (ep) => {
    endpoints = [ep, ...endpoints.filter((e) => e.id !== ep.id)];
    state.endpoints.set(ep.id, ep);
    render();
  });

  main.append(
    pageHead('Endpoints', 'Where HookIt delivers your events, and how each destination is doing over the last hour.'),
    activityCard(ctx),
    createDetails,
    h('section', { class: 'card', 'aria-labelledby': 'endpoints-title' },
      h('div', { class: 'card__head' },
        h('h2', { id: 'endpoints-title' }, 'Endpoints ', h('span', { class: 'card__sub' }, 'stats over the last hour'))),
      listError,
      tableArea,
      foot));

  const table = h('table', { class: 'table', 'data-testid': 'endpoints-table' },
    h('caption', { class: 'visually-hidden' }, 'Endpoints with delivery statistics for the last hour'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Endpoint'),
      h('th', { scope: 'col' }, 'Event types'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'num' }, 'Success'),
      h('th', { scope: 'col', class: 'num' }, h('abbr', { title: 'Average and median (p50) latency' }, 'Avg / p50')),
      h('th', { scope: 'col' }, 'Last code'),
      h('th', { scope: 'col' }, h('abbr', { title: 'Deliveries per minute over the last hour' }, 'Volume')),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    tbody);

  const onAction = async (action, ep, button) => {
    if (action === 'pause' || action === 'resume') {
      await withBusy(button, action === 'pause' ? 'Pausing the endpoint' : 'Resuming the endpoint', async () => {
        const updated = await api(`/v1/endpoints/${encodeURIComponent(ep.id)}/${action}`, { method: 'POST', body: {} });
        if (updated && updated.id) {
          endpoints = endpoints.map((e) => (e.id === updated.id ? updated : e));
          state.endpoints.set(updated.id, updated);
        }
        render();
        announce(action === 'pause' ? `Paused ${ep.url}. Deliveries are held until you resume it.` : `Resumed ${ep.url}.`);
      });
    } else if (action === 'secret') {
      await withBusy(button, 'Revealing the secret', async () => {
        const res = await api(`/v1/endpoints/${encodeURIComponent(ep.id)}/secret`);
        await secretDialog({ title: 'Signing secret', intro: `Current signing secret for ${ep.url}.`, secret: res.secret });
      });
    } else if (action === 'rotate') {
      const ok = await confirmDialog({
        title: 'Rotate signing secret?',
        message: ['A new secret will be generated for ', h('strong', null, ep.url), '. Update the receiver to verify signatures with the new secret.'],
        confirmLabel: 'Rotate secret',
        danger: true,
      });
      if (!ok) return;
      await withBusy(button, 'Rotating the secret', async () => {
        const res = await api(`/v1/endpoints/${encodeURIComponent(ep.id)}/secret/rotate`, { method: 'POST', body: {} });
        announce('Signing secret rotated.');
        await secretDialog({ title: 'New signing secret', intro: `The secret for ${ep.url} was rotated. This is the new secret.`, secret: res.secret });
      });
    } else if (action === 'test') {
      await withBusy(button, 'Sending the test event', async () => {
        const evt = await api(`/v1/endpoints/${encodeURIComponent(ep.id)}/test`, { method: 'POST', body: {} });
        announce(`Test event ${shortId(evt.id)} sent to ${ep.url}.`, { link: { href: `#/events/${encodeURIComponent(evt.id)}`, text: 'View event' } });
      });
    }
  };

  const buildRow = (ep) => {
    const st = stats.get(ep.id);
    const label = ep.url;
    const paused = ep.status === 'paused' || ep.status === 'disabled';
    const perMin = st && Array.isArray(st.per_minute) ? st.per_minute : [];
    const total = perMin.reduce((a, b) => a + b, 0);
    const peak = perMin.length ? Math.max(...perMin) : 0;
    const btn = (action, text, testid, aria) => h('button', {
      type: 'button', class: 'btn btn--sm', 'data-testid': testid, 'aria-label': `${aria} ${label}`,
      onclick: (ev) => onAction(action, ep, ev.currentTarget),
    }, text);
    return h('tr', { 'data-testid': 'endpoint-row', 'data-endpoint-id': ep.id, 'data-status': ep.status },
      h('td', { class: 'cell-url' },
        h('div', { class: 'url', 'data-testid': 'endpoint-url' }, ep.url),
        ep.description ? h('div', { class: 'desc' }, ep.description) : null,
        ep.status === 'disabled' && ep.disabled_reason ? h('div', { class: 'desc' }, `Disabled: ${ep.disabled_reason}`) : null,
        h('div', { class: 'sub-links' },
          h('a', { href: `#/deliveries${qs({ endpoint_id: ep.id })}`, 'aria-label': `Deliveries for ${label}` }, 'Deliveries'),
          h('a', { href: `#/dead-letters${qs({ endpoint_id: ep.id })}`, 'aria-label': `Dead letters for ${label}` }, 'Dead letters'))),
      h('td', null, ep.event_types && ep.event_types.length
        ? ep.event_types.map((t) => h('span', { class: 'chip' }, t))
        : h('span', { class: 'muted' }, 'All events')),
      h('td', null, endpointBadges(ep)),
      h('td', { class: 'num' }, st
        ? h('span', { class: `rate ${rateClass(st.success_rate)}`, title: `${fmtNum(st.succeeded)} succeeded, ${fmtNum(st.failed)} failed of ${fmtNum(st.attempts)} attempts` }, fmtPct(st.success_rate))
        : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'num nowrap' }, st ? `${fmtMs(st.avg_latency_ms)} / ${fmtMs(st.p50_latency_ms)}` : h('span', { class: 'muted' }, '—')),
      h('td', null, st ? statusCodePill(st.last_status_code) : h('span', { class: 'muted' }, '—')),
      h('td', null, sparkline(perMin, `Deliveries per minute over the last hour for ${label}: ${fmtNum(total)} in total, peak ${fmtNum(peak)} per minute`)),
      h('td', null, h('div', { class: 'btn-grid' },
        paused ? btn('resume', 'Resume', 'endpoint-resume', 'Resume') : btn('pause', 'Pause', 'endpoint-pause', 'Pause'),
        btn('test', 'Send test event', 'endpoint-send-test', 'Send test event to'),
        btn('secret', 'Reveal secret', 'endpoint-reveal-secret', 'Reveal secret of'),
        btn('rotate', 'Rotate secret', 'endpoint-rotate-secret', 'Rotate secret of'))));
  };

  function render() {
    if (!endpoints.length) {
      tableArea.replaceChildren(h('p', { class: 'empty', 'data-testid': 'endpoints-empty' }, 'No endpoints yet. Add one above to start receiving webhooks.'));
      createDetails.open = true;
    } else {
      if (!tableArea.contains(table)) tableArea.replaceChildren(table);
      reconcile(tbody, endpoints, (ep) => ep.id, (ep) => JSON.stringify([ep, stats.get(ep.id) || null]), buildRow);
    }
    setChildren(foot,
      h('span', null, `${fmtNum(endpoints.length)} endpoint${endpoints.length === 1 ? '' : 's'}${nextCursor ? ' shown' : ''}`),
      nextCursor ? h('button', { type: 'button', class: 'btn btn--sm', 'data-testid': 'endpoints-load-more', onclick: (ev) => loadMore(ev.currentTarget) }, 'Load more') : null);
  }

  async function loadMore(button) {
    await withBusy(button, 'Loading endpoints', async () => {
      const res = await api(`/v1/endpoints${qs({ limit: PAGE_SIZE, cursor: nextCursor })}`, { signal: ctx.signal });
      cursors.push(nextCursor);
      const seen = new Set(endpoints.map((e) => e.id));
      endpoints = endpoints.concat((res.data || []).filter((e) => !seen.has(e.id)));
      for (const ep of res.data || []) state.endpoints.set(ep.id, ep);
      nextCursor = res.next_cursor || null;
      render();
    });
  }

  let loadedOnce = false;
  ctx.poll(async () => {
    try {
      // Refresh every page that is on screen (endpoint lists are short), plus the stats.
      const statsReq = api('/v1/stats/endpoints', { signal: ctx.signal }).catch((e) => { if (isAbort(e)) throw e; return null; });
      const fresh = [];
      let next = null;
      for (const cursor of cursors) {
        const res = await api(`/v1/endpoints${qs({ limit: PAGE_SIZE, cursor })}`, { signal: ctx.signal });
        fresh.push(...(res.data || []));
        next = res.next_cursor || null;
        if (!next) break;
      }
      const st = await statsReq;
      if (st && Array.isArray(st.data)) stats = new Map(st.data.map((r) => [r.endpoint_id, r]));
      endpoints = fresh;
      nextCursor = next;
      for (const ep of fresh) state.endpoints.set(ep.id, ep);
      listError.replaceChildren();
      loadedOnce = true;
      render();
    } catch (e) {
      if (!isAbort(e) && !loadedOnce) listError.replaceChildren(h('div', { class: 'card__body' }, problemBox(e)));
      throw e;
    }
  }, ENDPOINTS_POLL_MS).now();
}

function createEndpointForm(ctx, onCreated) {
  const url = h('input', { id: 'ep-url', name: 'url', class: 'input input--mono', type: 'url', required: true, placeholder: 'https://example.com/webhooks', 'data-testid': 'create-endpoint-url', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'ep-url-hint' });
  const types = h('input', { id: 'ep-types', name: 'event_types', class: 'input input--mono', type: 'text', placeholder: 'order.created, order.paid', 'data-testid': 'create-endpoint-event-types', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'ep-types-hint' });
  const desc = h('input', { id: 'ep-desc', name: 'description', class: 'input', type: 'text', placeholder: 'Order service (production)', 'data-testid': 'create-endpoint-description', autocomplete: 'off' });
  const errors = h('div', { 'data-testid': 'create-endpoint-error' });
  const submit = h('button', { type: 'submit', class: 'btn btn--primary', 'data-testid': 'create-endpoint-submit' }, 'Create endpoint');
  const form = h('form', { class: 'card__body', 'data-testid': 'create-endpoint-form', novalidate: true, 'aria-labelledby': 'create-endpoint-summary' },
    h('div', { class: 'form-grid' },
      h('div', { class: 'field field--wide' },
        h('label', { class: 'field__label', for: 'ep-url' }, 'URL'), url,
        h('p', { class: 'field__hint', id: 'ep-url-hint' }, 'Where HookIt POSTs events. Private and internal addresses are refused (SSRF protection).')),
      h('div', { class: 'field' },
        h('label', { class: 'field__label', for: 'ep-types' }, 'Event types'), types,
        h('p', { class: 'field__hint', id: 'ep-types-hint' }, 'Comma-separated. Leave empty for all events.')),
      h('div', { class: 'field' },
        h('label', { class: 'field__label', for: 'ep-desc' }, 'Description'), desc)),
    h('div', { class: 'form-actions' }, submit),
    errors);
  const details = h('details', { class: 'card', 'data-testid': 'create-endpoint' },
    h('summary', { id: 'create-endpoint-summary' }, 'Add endpoint'),
    form);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    errors.replaceChildren();
    url.removeAttribute('aria-invalid');
    const value = url.value.trim();
    if (!value) {
      url.setAttribute('aria-invalid', 'true');
      errors.append(h('div', { class: 'notice notice--error', role: 'alert' }, 'Enter the URL to deliver webhooks to.'));
      url.focus();
      return;
    }
    const body = { url: value };
    const eventTypes = types.value.split(',').map((t) => t.trim()).filter(Boolean);
    if (eventTypes.length) body.event_types = eventTypes;
    if (desc.value.trim()) body.description = desc.value.trim();
    if (submit.getAttribute('aria-disabled') === 'true') return;
    submit.setAttribute('aria-disabled', 'true');
    try {
      const ep = await api('/v1/endpoints', { method: 'POST', body, signal: ctx.signal });
      form.reset();
      onCreated(ep);
      announce(`Endpoint ${ep.url} created.`);
    } catch (e) {
      if (isAbort(e)) return;
      if (e instanceof ApiError && e.status === 401) return;
      url.setAttribute('aria-invalid', 'true');
      errors.append(problemBox(e, 'create-endpoint-problem'));
    } finally {
      submit.removeAttribute('aria-disabled');
    }
  });
  return details;
}

// ---------------------------------------------------------------------------
// Delivery lists (Deliveries, Dead letters, Event)
// ---------------------------------------------------------------------------

function deliveryRowSig(d) {
  return JSON.stringify([d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.updated_at, state.endpoints.has(d.endpoint_id)]);
}

function buildDeliveryRow(d, { redrive } = {}) {
  const detailHref = `#/deliveries/${encodeURIComponent(d.id)}`;
  const canRedrive = d.status === 'dead' || d.status === 'succeeded';
  return h('tr', {
    'data-testid': 'delivery-row', 'data-id': d.id, 'data-status': d.status,
    'data-endpoint-id': d.endpoint_id, 'data-event-id': d.event_id, 'data-event-type': d.event_type,
  },
    h('td', { class: 'nowrap' }, h('a', { href: detailHref, class: 'mono', title: d.id, 'aria-label': `Delivery ${d.id}` }, shortId(d.id))),
    h('td', null, deliveryBadge(d.status)),
    h('td', null, h('code', null, d.event_type || '—')),
    h('td', { class: 'cell-url' }, h('span', { class: 'url url--clip', title: (state.endpoints.get(d.endpoint_id) || {}).url || d.endpoint_id }, endpointLabel(d.endpoint_id))),
    h('td', { class: 'num' }, fmtNum(d.attempts)),
    h('td', null, h('div', { class: 'last-result' }, statusCodePill(d.last_status_code),
      d.last_error ? h('span', { class: 'err', title: d.last_error }, d.last_error) : null)),
    h('td', { class: 'nowrap' }, d.status === 'pending' || d.status === 'in_flight' ? countdown(d.next_attempt_at) : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'nowrap' }, timeAgo(d.created_at)),
    redrive ? h('td', null, h('button', {
      type: 'button', class: 'btn btn--sm', 'data-testid': 'redrive-button', disabled: !canRedrive,
      'aria-label': `Redrive delivery ${d.id}`, onclick: (ev) => redrive(d, ev.currentTarget),
    }, 'Redrive')) : null);
}

function deliveriesTable(tbody, { actions = false } = {}) {
  return h('table', { class: 'table', 'data-testid': 'deliveries-table' },
    h('caption', { class: 'visually-hidden' }, 'Deliveries, newest first'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Delivery'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'Event type'),
      h('th', { scope: 'col' }, 'Endpoint'),
      h('th', { scope: 'col', class: 'num' }, 'Attempts'),
      h('th', { scope: 'col' }, 'Last result'),
      h('th', { scope: 'col' }, 'Next attempt'),
      h('th', { scope: 'col' }, 'Created'),
      actions ? h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')) : null)),
    tbody);
}

function endpointSelect(id, testid, selected, allLabel) {
  const select = h('select', { id, class: 'select', 'data-testid': testid });
  const fill = () => {
    const current = select.value || selected || '';
    const eps = [...state.endpoints.values()].sort((a, b) => a.url.localeCompare(b.url));
    const opts = [h('option', { value: '' }, allLabel)];
    for (const ep of eps) opts.push(h('option', { value: ep.id }, ep.description ? `${endpointLabel(ep.id)} — ${ep.description}` : endpointLabel(ep.id)));
    if (current && !state.endpoints.has(current)) opts.push(h('option', { value: current }, current));
    select.replaceChildren(...opts);
    select.value = current;
  };
  fill();
  return { select, fill };
}

/**
 * A paged, live-updating list of deliveries. One page (PAGE_SIZE rows) is on
 * screen at a time; the page is re-fetched every LIST_POLL_MS with its own
 * cursor, so statuses stay current without ever loading the full history.
 */
function deliveryList(ctx, { getFilters, emptyText, redrive, onPage }) {
  const tbody = h('tbody');
  const table = deliveriesTable(tbody, { actions: Boolean(redrive) });
  const area = h('div', { class: 'table-wrap' });
  const errorBox = h('div');
  const info = h('span', { 'data-testid': 'deliveries-page-info' });
  const prev = h('button', { type: 'button', class: 'btn btn--sm', 'data-testid': 'deliveries-prev-page', disabled: true }, '← Newer');
  const next = h('button', { type: 'button', class: 'btn btn--sm', 'data-testid': 'deliveries-next-page', disabled: true }, 'Older →');
  const latest = h('button', { type: 'button', class: 'btn btn--sm btn--link', 'data-testid': 'deliveries-latest', hidden: true }, 'Back to latest');
  const foot = h('div', { class: 'card__foot' }, info, h('div', { class: 'pager', role: 'group', 'aria-label': 'Pages' }, latest, prev, next));

  let cursors = [null];
  let page = 0;
  let nextCursor = null;
  let seq = 0;
  let loaded = false;
  let rows = [];

  const render = () => {
    if (!rows.length) {
      area.replaceChildren(h('p', { class: 'empty', 'data-testid': 'deliveries-empty' }, page === 0 ? emptyText : 'No more deliveries.'));
      tbody.replaceChildren();
    } else {
      if (!area.contains(table)) area.replaceChildren(table);
      reconcile(tbody, rows, (d) => d.id, deliveryRowSig, (d) => buildDeliveryRow(d, { redrive }), { flashNew: page === 0 });
    }
    const from = page * PAGE_SIZE + (rows.length ? 1 : 0);
    const to = page * PAGE_SIZE + rows.length;
    info.textContent = rows.length ? `Showing ${fmtNum(from)}–${fmtNum(to)}${nextCursor ? '' : ' (end)'} · page ${page + 1}` : '';
    prev.disabled = page === 0;
    next.disabled = !nextCursor;
    latest.hidden = page < 2;
    if (onPage) onPage({ rows, page, nextCursor });
  };

  const load = async () => {
    const my = ++seq;
    const q = { ...getFilters(), limit: PAGE_SIZE, cursor: cursors[page] };
    try {
      const res = await api(`/v1/deliveries${qs(q)}`, { signal: ctx.signal });
      if (my !== seq) return;
      rows = res.data || [];
      nextCursor = res.next_cursor || null;
      errorBox.replaceChildren();
      loaded = true;
      if (rows.some((d) => !state.endpoints.has(d.endpoint_id))) refreshEndpointCache();
      render();
    } catch (e) {
      if (my !== seq || isAbort(e)) throw e;
      if (e instanceof ApiError && e.status !== 0 && e.status !== 401) errorBox.replaceChildren(h('div', { class: 'card__body' }, problemBox(e)));
      else if (!loaded) errorBox.replaceChildren(h('div', { class: 'card__body' }, problemBox(e)));
      throw e;
    }
  };

  let cacheRefreshing = false;
  const refreshEndpointCache = () => {
    if (cacheRefreshing) return;
    cacheRefreshing = true;
    loadEndpointsCache(ctx.signal).then(() => render()).catch(() => {}).finally(() => { cacheRefreshing = false; });
  };

  const poller = ctx.poll(load, LIST_POLL_MS);
  const go = (p) => {
    page = p;
    rows = [];
    seq++;
    tbody.replaceChildren();
    area.replaceChildren(h('p', { class: 'empty' }, 'Loading…'));
    poller.now();
  };
  prev.addEventListener('click', () => go(Math.max(0, page - 1)));
  next.addEventListener('click', () => {
    if (!nextCursor) return;
    cursors = cursors.slice(0, page + 1);
    cursors.push(nextCursor);
    go(page + 1);
  });
  latest.addEventListener('click', () => { cursors = [null]; go(0); });

  area.append(h('p', { class: 'empty' }, 'Loading…'));
  poller.now();
  return {
    el: [errorBox, area, foot],
    reset() { cursors = [null]; go(0); },
    refresh() { poller.now(); },
    get rows() { return rows; },
  };
}

async function redriveOne(d, button, after) {
  await withBusy(button, 'Redriving the delivery', async () => {
    const res = await api(`/v1/deliveries/${encodeURIComponent(d.id)}/redrive`, { method: 'POST', body: {} });
    announce(`Delivery ${shortId(d.id)} redriven; it is ${res && res.status ? res.status.replace('_', ' ') : 'queued'} again.`);
    if (after) after(res);
  });
}

function viewDeliveries(ctx, params) {
  const filters = {
    status: DELIVERY_STATUSES.includes(params.get('status')) ? params.get('status') : '',
    endpoint_id: params.get('endpoint_id') || '',
    event_type: params.get('event_type') || '',
    event_id: params.get('event_id') || '',
  };
  const status = h('select', { id: 'f-status', class: 'select', 'data-testid': 'filter-status' },
    h('option', { value: '' }, 'Any status'),
    DELIVERY_STATUSES.map((st) => h('option', { value: st }, DELIVERY_BADGE[st][1])));
  status.value = filters.status;
  const { select: endpoint, fill } = endpointSelect('f-endpoint', 'filter-endpoint', filters.endpoint_id, 'All endpoints');
  const eventType = h('input', { id: 'f-event-type', class: 'input input--mono', type: 'search', value: filters.event_type, placeholder: 'order.created', 'data-testid': 'filter-event-type', autocomplete: 'off', spellcheck: 'false' });
  const clear = h('button', { type: 'button', class: 'btn', 'data-testid': 'filters-clear' }, 'Clear filters');

  const list = deliveryList(ctx, {
    getFilters: () => filters,
    emptyText: 'No deliveries match these filters.',
  });

  const apply = () => {
    filters.status = status.value;
    filters.endpoint_id = endpoint.value;
    filters.event_type = eventType.value.trim();
    replaceHashQuery('/deliveries', filters);
    list.reset();
  };
  status.addEventListener('change', apply);
  endpoint.addEventListener('change', apply);
  let typing = null;
  eventType.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(apply, 400); });
  eventType.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); clearTimeout(typing); apply(); } });
  clear.addEventListener('click', () => {
    status.value = ''; endpoint.value = ''; eventType.value = ''; filters.event_id = '';
    apply();
  });

  const filterForm = h('form', { class: 'filters', 'data-testid': 'delivery-filters', role: 'search', 'aria-label': 'Filter deliveries', onsubmit: (ev) => { ev.preventDefault(); apply(); } },
    h('div', { class: 'field' }, h('label', { class: 'field__label', for: 'f-status' }, 'Status'), status),
    h('div', { class: 'field field--grow' }, h('label', { class: 'field__label', for: 'f-endpoint' }, 'Endpoint'), endpoint),
    h('div', { class: 'field' }, h('label', { class: 'field__label', for: 'f-event-type' }, 'Event type'), eventType),
    filters.event_id ? h('p', { class: 'field__hint' }, 'Event: ', h('code', null, filters.event_id)) : null,
    clear);

  ctx.main.append(
    pageHead('Deliveries', 'Every attempt to deliver an event to an endpoint. Updates every 2 seconds.'),
    h('section', { class: 'card', 'aria-label': 'Deliveries' }, filterForm, ...list.el));

  loadEndpointsCache(ctx.signal).then(fill).catch(() => {});
}

function viewDeadLetters(ctx, params) {
  const filters = { status: 'dead', endpoint_id: params.get('endpoint_id') || '', event_type: params.get('event_type') || '' };
  const { select: endpoint, fill } = endpointSelect('dl-endpoint', 'dead-letters-endpoint', filters.endpoint_id, 'All endpoints');
  const eventType = h('input', { id: 'dl-event-type', class: 'input input--mono', type: 'search', value: filters.event_type, placeholder: 'any', 'data-testid': 'dead-letters-event-type', autocomplete: 'off', spellcheck: 'false' });
  const redriveAll = h('button', { type: 'button', class: 'btn btn--primary', 'data-testid': 'redrive-all' }, 'Redrive all matching');

  const list = deliveryList(ctx, {
    getFilters: () => filters,
    emptyText: 'No dead letters. Every delivery matching these filters either succeeded or is still being retried.',
    redrive: (d, button) => redriveOne(d, button, () => list.refresh()),
  });

  const apply = () => {
    filters.endpoint_id = endpoint.value;
    filters.event_type = eventType.value.trim();
    replaceHashQuery('/dead-letters', { endpoint_id: filters.endpoint_id, event_type: filters.event_type });
    list.reset();
  };
  endpoint.addEventListener('change', apply);
  let typing = null;
  eventType.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(apply, 400); });
  eventType.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); clearTimeout(typing); apply(); } });

  redriveAll.addEventListener('click', async () => {
    const body = {};
    if (filters.endpoint_id) body.endpoint_id = filters.endpoint_id;
    if (filters.event_type) body.event_type = filters.event_type;
    await withBusy(redriveAll, 'Redriving dead letters', async () => {
      const dry = await api('/v1/dead-letters/redrive', { method: 'POST', body: { ...body, dry_run: true }, signal: ctx.signal });
      const n = (dry && dry.redriven) || 0;
      if (!n) { announce('There are no dead letters matching these filters.'); return; }
      const scope = filters.endpoint_id ? ['for ', h('strong', null, (state.endpoints.get(filters.endpoint_id) || {}).url || filters.endpoint_id)] : ['across ', h('strong', null, 'all endpoints')];
      const ok = await confirmDialog({
        title: `Redrive ${fmtNum(n)} dead deliver${n === 1 ? 'y' : 'ies'}?`,
        message: [
          h('strong', { 'data-testid': 'redrive-count' }, fmtNum(n)), ` dead deliver${n === 1 ? 'y' : 'ies'} `, ...scope,
          filters.event_type ? [' with event type ', h('code', null, filters.event_type)] : '',
          ' will be redriven: each is queued for delivery again with a fresh set of attempts.',
        ],
        confirmLabel: `Redrive ${fmtNum(n)}`,
      });
      if (!ok) return;
      const res = await api('/v1/dead-letters/redrive', { method: 'POST', body: { ...body, dry_run: false }, signal: ctx.signal });
      const done = (res && res.redriven) || 0;
      announce(`${fmtNum(done)} dead deliver${done === 1 ? 'y was' : 'ies were'} redriven.`, { link: { href: `#/deliveries${qs({ endpoint_id: filters.endpoint_id, event_type: filters.event_type })}`, text: 'View deliveries' } });
      list.refresh();
    });
  });

  const filterForm = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter dead letters', 'data-testid': 'dead-letters-filters', onsubmit: (ev) => { ev.preventDefault(); apply(); } },
    h('div', { class: 'field field--grow' }, h('label', { class: 'field__label', for: 'dl-endpoint' }, 'Endpoint'), endpoint),
    h('div', { class: 'field' }, h('label', { class: 'field__label', for: 'dl-event-type' }, 'Event type'), eventType),
    h('div', { class: 'field' }, redriveAll));

  ctx.main.append(
    pageHead('Dead letters', 'Deliveries that used up all their attempts. Fix the receiver, then redrive them.'),
    h('section', { class: 'card', 'aria-label': 'Dead letters' }, filterForm, ...list.el));

  loadEndpointsCache(ctx.signal).then(fill).catch(() => {});
}

// ---------------------------------------------------------------------------
// Delivery detail and event views
// ---------------------------------------------------------------------------

/** Pretty-printed, syntax-coloured JSON built from text nodes (never innerHTML). */
function jsonBlock(value, testid) {
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

function field(label, value, testid) {
  return h('div', null, h('dt', null, label), h('dd', { 'data-testid': testid }, value));
}

function viewDelivery(ctx, id) {
  const head = h('div');
  const summary = h('section', { class: 'card', 'aria-labelledby': 'dlv-summary-title' });
  const payloadCard = h('section', { class: 'card', 'aria-labelledby': 'dlv-payload-title' },
    h('div', { class: 'card__head' }, h('h2', { id: 'dlv-payload-title' }, 'Event payload')),
    h('div', { class: 'card__body muted' }, 'Loading…'));
  const attemptsCard = h('section', { class: 'card', 'aria-labelledby': 'dlv-attempts-title' });
  const errorBox = h('div');
  ctx.main.append(
    h('p', { class: 'breadcrumbs' }, h('a', { href: '#/deliveries' }, 'Deliveries'), ' / ', shortId(id)),
    head, errorBox, summary, payloadCard, attemptsCard);
  head.append(pageHead('Delivery', null));
  $('h1', head).append(' ', h('code', { class: 'mono' }, id));

  let delivery = null;
  let payloadFor = null;
  let lastSig = null;

  const redriveBtn = h('button', { type: 'button', class: 'btn btn--primary', 'data-testid': 'delivery-redrive' }, 'Redrive');
  redriveBtn.addEventListener('click', () => delivery && redriveOne(delivery, redriveBtn, (res) => {
    if (res && res.id) { delivery = { ...delivery, ...res }; }
    poller.now();
  }));
  $('.page-head', head).append(h('div', { class: 'page-head__actions' }, redriveBtn));

  const renderSummary = (d) => {
    const ep = state.endpoints.get(d.endpoint_id);
    summary.replaceChildren(
      h('div', { class: 'card__head' },
        h('h2', { id: 'dlv-summary-title' }, 'Summary'),
        h('div', { 'data-testid': 'delivery-detail', 'data-status': d.status }, deliveryBadge(d.status))),
      h('dl', { class: 'detail-grid' },
        field('Status', deliveryBadge(d.status)),
        field('Event', h('a', { href: `#/events/${encodeURIComponent(d.event_id)}`, class: 'mono' }, d.event_id)),
        field('Event type', h('code', null, d.event_type || '—')),
        field('Endpoint', ep ? h('span', { class: 'mono' }, ep.url) : h('span', { class: 'mono' }, d.endpoint_id)),
        field('Attempts', ep && ep.max_attempts ? `${fmtNum(d.attempts)} of ${fmtNum(ep.max_attempts)}` : fmtNum(d.attempts), 'delivery-attempts'),
        field('Next attempt', d.next_attempt_at
          ? h('span', null, countdown(d.next_attempt_at, 'next-attempt-countdown'), h('span', { class: 'muted' }, ` · ${fmtDateTime(d.next_attempt_at)}`))
          : h('span', { class: 'muted' }, d.status === 'succeeded' ? 'none — delivered' : d.status === 'dead' ? 'none — out of attempts' : 'not scheduled')),
        field('Last status code', statusCodePill(d.last_status_code)),
        field('Last error', d.last_error ? h('span', { class: 'err-text' }, d.last_error) : h('span', { class: 'muted' }, '—')),
        field('Created', h('span', null, fmtDateTime(d.created_at), ' ', h('span', { class: 'muted' }, '(', timeAgo(d.created_at), ')'))),
        field('Updated', h('span', null, fmtDateTime(d.updated_at), ' ', h('span', { class: 'muted' }, '(', timeAgo(d.updated_at), ')')))));
    const canRedrive = d.status === 'dead' || d.status === 'succeeded';
    if (canRedrive) redriveBtn.removeAttribute('aria-disabled'); else redriveBtn.setAttribute('aria-disabled', 'true');
    redriveBtn.title = canRedrive ? 'Queue this delivery again with a fresh set of attempts' : 'Only succeeded or dead deliveries can be redriven';
  };

  const renderAttempts = (d) => {
    const log = Array.isArray(d.attempt_log) ? d.attempt_log : [];
    attemptsCard.replaceChildren(
      h('div', { class: 'card__head' }, h('h2', { id: 'dlv-attempts-title' }, 'Attempts ', h('span', { class: 'card__sub' }, `${log.length}`))),
      log.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', 'data-testid': 'attempts-table' },
          h('caption', { class: 'visually-hidden' }, 'Delivery attempts, oldest first'),
          h('thead', null, h('tr', null,
            h('th', { scope: 'col', class: 'num' }, '#'),
            h('th', { scope: 'col' }, 'Started'),
            h('th', { scope: 'col', class: 'num' }, 'Duration'),
            h('th', { scope: 'col' }, 'Status'),
            h('th', { scope: 'col' }, 'Error'),
            h('th', { scope: 'col' }, 'Response'))),
          h('tbody', null, log.map((a) => h('tr', { 'data-testid': 'attempt-row' },
            h('td', { class: 'num' }, String(a.attempt)),
            h('td', { class: 'nowrap' }, fmtDateTime(a.started_at)),
            h('td', { class: 'num nowrap' }, fmtMs(a.duration_ms)),
            h('td', null, statusCodePill(a.status_code)),
            h('td', null, a.error ? h('span', { class: 'err-text' }, a.error) : h('span', { class: 'muted' }, '—')),
            h('td', null, a.response_body ? h('pre', { class: 'body', tabindex: '0', 'aria-label': `Response body of attempt ${a.attempt}` }, a.response_body) : h('span', { class: 'muted' }, '—')))))))
        : h('p', { class: 'empty' }, 'No attempts yet.'));
  };

  const loadPayload = async (d) => {
    if (payloadFor === d.event_id) return;
    payloadFor = d.event_id;
    try {
      const evt = await api(`/v1/events/${encodeURIComponent(d.event_id)}`, { signal: ctx.signal });
      payloadCard.replaceChildren(
        h('div', { class: 'card__head' }, h('h2', { id: 'dlv-payload-title' }, 'Event payload'),
          h('a', { href: `#/events/${encodeURIComponent(d.event_id)}` }, 'View event')),
        jsonBlock(evt.payload, 'event-payload'));
    } catch (e) {
      if (isAbort(e)) return;
      payloadFor = null;
      payloadCard.replaceChildren(h('div', { class: 'card__head' }, h('h2', { id: 'dlv-payload-title' }, 'Event payload')), h('div', { class: 'card__body' }, problemBox(e)));
    }
  };

  const poller = ctx.poll(async () => {
    try {
      const d = await api(`/v1/deliveries/${encodeURIComponent(id)}`, { signal: ctx.signal });
      delivery = d;
      errorBox.replaceChildren();
      if (!state.endpoints.has(d.endpoint_id)) await loadEndpointsCache(ctx.signal).catch(() => {});
      const sig = JSON.stringify(d);
      if (sig !== lastSig) {
        lastSig = sig;
        renderSummary(d);
        renderAttempts(d);
      }
      loadPayload(d);
    } catch (e) {
      if (isAbort(e)) throw e;
      if (e instanceof ApiError && e.status === 404) {
        errorBox.replaceChildren(problemBox(e, 'not-found'));
        summary.replaceChildren();
        payloadCard.hidden = true;
        attemptsCard.replaceChildren();
        redriveBtn.hidden = true;
        return STOP_POLLING;
      }
      if (!delivery) errorBox.replaceChildren(problemBox(e));
      throw e;
    }
  }, LIST_POLL_MS);
  poller.now();
}

function viewEvent(ctx, id) {
  const body = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(
    h('p', { class: 'breadcrumbs' }, h('a', { href: `#/deliveries${qs({ event_id: id })}` }, 'Deliveries'), ' / ', shortId(id)),
    pageHead('Event', null),
    body);
  $('h1', ctx.main).append(' ', h('code', { class: 'mono' }, id));
  const tbody = h('tbody');
  let built = false;
  const summary = h('dl', { class: 'detail-grid' });
  ctx.poll(async () => {
    try {
      const evt = await api(`/v1/events/${encodeURIComponent(id)}`, { signal: ctx.signal });
      const deliveries = evt.deliveries || [];
      if (deliveries.some((d) => !state.endpoints.has(d.endpoint_id))) await loadEndpointsCache(ctx.signal).catch(() => {});
      summary.replaceChildren(
        field('Event type', h('code', null, evt.event_type)),
        field('Created', fmtDateTime(evt.created_at)),
        field('Deliveries', fmtNum(deliveries.length)));
      if (!built) {
        built = true;
        body.replaceChildren(
          h('section', { class: 'card', 'aria-labelledby': 'evt-summary' }, h('div', { class: 'card__head' }, h('h2', { id: 'evt-summary' }, 'Summary')), summary),
          h('section', { class: 'card', 'aria-labelledby': 'evt-deliveries' },
            h('div', { class: 'card__head' }, h('h2', { id: 'evt-deliveries' }, 'Deliveries')),
            h('div', { class: 'table-wrap' }, deliveriesTable(tbody))),
          h('section', { class: 'card', 'aria-labelledby': 'evt-payload' },
            h('div', { class: 'card__head' }, h('h2', { id: 'evt-payload' }, 'Payload')),
            jsonBlock(evt.payload, 'event-payload')));
      }
      reconcile(tbody, deliveries, (d) => d.id, deliveryRowSig, (d) => buildDeliveryRow(d));
    } catch (e) {
      if (isAbort(e)) throw e;
      if (e instanceof ApiError && e.status === 404) {
        body.replaceChildren(problemBox(e, 'not-found'));
        return STOP_POLLING;
      }
      if (!built) body.replaceChildren(problemBox(e));
      throw e;
    }
  }, LIST_POLL_MS).now();
}

// ---------------------------------------------------------------------------
// Boot
// ---------------------------------------------------------------------------

function boot() {
  initShell();
  if (state.key) startSession(); else { showShell(false); renderSignIn(); }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot); else boot();
