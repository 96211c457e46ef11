// Endpoint view (#/endpoints/{id}): one endpoint's settings, Pause/Resume,
// links to its deliveries, and its transformation editor. The settings refresh
// while the page is open (status and circuit change on their own); the editor
// is built once and only takes fresh data that does not overwrite an edit.

import { ApiError, api, isAbort, qs } from '../api.js';
import { $, h } from '../dom.js';
import { endpointCache } from '../endpoint-cache.js';
import { fmtMs, fmtNum, shortId } from '../format.js';
import { STOP_POLLING } from '../poll.js';
import { endpointBadges, field, pageHead, problemBox, timeAgo } from '../ui.js';
import { isHeld, setEndpointPaused } from '../components/endpoint-pause.js';
import { transformationEditor } from '../components/transformation-editor.js';

// Settings change rarely; the circuit and a disable by the worker are what moves.
const ENDPOINT_POLL_MS = 5000;

const FORMAT_NAMES = { standard: 'Standard Webhooks', discord: 'Discord', slack: 'Slack' };

/** Render the page of endpoint `id`. */
export function viewEndpoint(ctx, id) {
  const head = h('div');
  const errorBox = h('div');
  const settings = h('section', { class: 'card', 'aria-labelledby': 'ep-settings-title', 'data-testid': 'endpoint-settings' },
    h('div', { class: 'card__head' }, h('h2', { id: 'ep-settings-title' }, 'Settings')),
    h('p', { class: 'card__body muted' }, 'Loading…'));
  const editorSlot = h('div');
  ctx.main.append(
    h('p', { class: 'breadcrumbs' }, h('a', { href: '#/endpoints' }, 'Endpoints'), ' / ', shortId(id)),
    head, errorBox, settings, editorSlot);
  head.append(pageHead('Endpoint', null));
  $('h1', head).append(' ', h('code', { class: 'mono' }, id));

  const pauseBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'endpoint-pause-toggle', hidden: true });
  const deliveriesLink = h('a', { class: 'btn', href: `#/deliveries${qs({ endpoint_id: id })}`, 'data-testid': 'endpoint-deliveries-link' }, 'Deliveries');
  const deadLink = h('a', { class: 'btn', href: `#/dead-letters${qs({ endpoint_id: id })}` }, 'Dead letters');
  $('.page-head', head).append(h('div', { class: 'page-head__actions' }, deliveriesLink, deadLink, pauseBtn));

  let endpoint = null;
  let editor = null;
  let lastSig = null;

  const render = (ep) => {
    // A poll sent before a save or pause may answer after it: never go back to older settings.
    if (endpoint && Date.parse(ep.updated_at) < Date.parse(endpoint.updated_at)) return;
    endpoint = ep;
    endpointCache.set(ep.id, ep);
    const sig = JSON.stringify(ep);
    if (sig === lastSig) return;
    lastSig = sig;
    const sub = $('.page-head__sub', head);
    if (ep.description) {
      if (sub) sub.textContent = ep.description;
      else $('h1', head).after(h('p', { class: 'page-head__sub' }, ep.description));
    } else if (sub) sub.remove();
    pauseBtn.hidden = false;
    pauseBtn.textContent = isHeld(ep) ? 'Resume' : 'Pause';
    pauseBtn.dataset.action = isHeld(ep) ? 'resume' : 'pause';
    settings.replaceChildren(
      h('div', { class: 'card__head' }, h('h2', { id: 'ep-settings-title' }, 'Settings'), endpointBadges(ep)),
      h('dl', { class: 'detail-grid' },
        field('URL', h('span', { class: 'mono' }, ep.url), 'endpoint-detail-url'),
        field('Status', h('span', null, statusText(ep)), 'endpoint-detail-status'),
        field('Format', FORMAT_NAMES[ep.format] || ep.format || 'Standard Webhooks', 'endpoint-detail-format'),
        field('Delivery order', orderText(ep), 'endpoint-detail-order'),
        field('Event types', ep.event_types && ep.event_types.length
          ? ep.event_types.map((t) => h('span', { class: 'chip' }, t))
          : h('span', { class: 'muted' }, 'All events'), 'endpoint-detail-event-types'),
        field('Circuit', ep.circuit_state === 'open'
          ? h('span', { class: 'err-text' }, `Open: deliveries are held back (${fmtNum(ep.consecutive_failures)} failures in a row)`)
          : `Closed${ep.consecutive_failures ? ` (${fmtNum(ep.consecutive_failures)} recent failures)` : ''}`, 'endpoint-detail-circuit'),
        field('Managed by', ep.managed_by === 'kubernetes' ? 'Kubernetes (WebhookEndpoint resource)' : 'API', 'endpoint-detail-managed'),
        field('Headers', headerList(ep.headers), 'endpoint-detail-headers'),
        field('Retries', retriesText(ep)),
        field('Updated', h('span', null, timeAgo(ep.updated_at)))));
    if (!editor) {
      editor = transformationEditor(ctx, ep, { onSaved: (updated) => render(updated) });
      editorSlot.replaceChildren(editor.el);
    } else {
      editor.update(ep);
    }
  };

  pauseBtn.addEventListener('click', async () => {
    if (!endpoint) return;
    const updated = await setEndpointPaused(endpoint, !isHeld(endpoint), pauseBtn);
    if (updated) render(updated);
  });

  ctx.poll(async () => {
    try {
      const ep = await api(`/v1/endpoints/${encodeURIComponent(id)}`, { signal: ctx.signal });
      errorBox.replaceChildren();
      render(ep);
    } catch (e) {
      if (isAbort(e)) throw e;
      if (e instanceof ApiError && e.status === 404) {
        errorBox.replaceChildren(problemBox(e, 'not-found'));
        settings.hidden = true;
        editorSlot.replaceChildren();
        pauseBtn.hidden = true;
        return STOP_POLLING;
      }
      if (!endpoint) errorBox.replaceChildren(problemBox(e));
      throw e;
    }
  }, ENDPOINT_POLL_MS).now();
}

/** The status in words, with why a disabled endpoint was disabled. */
function statusText(ep) {
  if (ep.status === 'paused') return 'Paused: deliveries are held until it is resumed';
  if (ep.status === 'disabled') return `Disabled${ep.disabled_reason ? `: ${ep.disabled_reason}` : ''}`;
  return 'Active';
}

/** Custom headers as name: value lines; values are shown as text, never markup. */
function headerList(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return h('span', { class: 'muted' }, 'None');
  return h('ul', { class: 'kv-list' }, entries.map(([k, v]) => h('li', { class: 'mono' }, h('span', { class: 'kv-list__key' }, `${k}: `), v)));
}

/** How the endpoint's deliveries go out (docs/fifo.md). */
function orderText(ep) {
  if (ep.ordering !== 'fifo') return 'Concurrent (no ordering)';
  if (ep.batch_size > 1) return `FIFO: in publish order, up to ${fmtNum(ep.batch_size)} events per request`;
  return 'FIFO: one at a time, in publish order';
}

/** The retry settings that differ from the server's defaults, or "Server defaults". */
function retriesText(ep) {
  const parts = [];
  if (ep.max_attempts) parts.push(`${fmtNum(ep.max_attempts)} attempts`);
  if (ep.timeout_ms) parts.push(`${fmtMs(ep.timeout_ms)} timeout`);
  if (ep.rate_limit) parts.push(`${fmtNum(ep.rate_limit)}/s rate limit`);
  return parts.length ? parts.join(' · ') : h('span', { class: 'muted' }, 'Server defaults');
}
