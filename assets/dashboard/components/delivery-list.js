// Delivery rows and the paged, live-updating delivery list, shared by the
// Deliveries, Dead letters, Delivery and Event views.

import { ApiError, PAGE_SIZE, api, isAbort, qs } from '../api.js';
import { h, reconcile } from '../dom.js';
import { endpointCache, endpointLabel, loadEndpointsCache } from '../endpoint-cache.js';
import { announce, withBusy } from '../feedback.js';
import { fmtNum, shortId } from '../format.js';
import { LIST_POLL_MS } from '../poll.js';
import { countdown, deliveryBadge, problemBox, statusCodePill, timeAgo } from '../ui.js';

/** Whether a delivery in `status` can be redriven: finished, whether delivered, dead or skipped by a transformation. */
export function isRedrivable(status) {
  return status === 'dead' || status === 'succeeded' || status === 'skipped';
}

/** What a delivery row shows; the row is rebuilt only when this changes. */
export function deliveryRowSig(d) {
  return JSON.stringify([d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.updated_at, endpointCache.has(d.endpoint_id)]);
}

/** One delivery row; with `redrive`, a Redrive button that calls it. */
export function buildDeliveryRow(d, { redrive } = {}) {
  const detailHref = `#/deliveries/${encodeURIComponent(d.id)}`;
  const canRedrive = isRedrivable(d.status);
  return h('tr', {
    'data-testid': 'delivery-row', 'data-id': d.id, 'data-status': d.status,
    'data-endpoint-id': d.endpoint_id, 'data-event-id': d.event_id, 'data-event-type': d.event_type,
  },
    h('td', { class: 'nowrap' }, h('a', { href: detailHref, class: 'mono', title: d.id, 'aria-label': `Delivery ${d.id}` }, shortId(d.id))),
    h('td', null, deliveryBadge(d.status)),
    h('td', null, h('code', null, d.event_type || '—')),
    h('td', { class: 'cell-url' }, h('span', { class: 'url url--clip', title: (endpointCache.get(d.endpoint_id) || {}).url || d.endpoint_id }, endpointLabel(d.endpoint_id))),
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

/** The deliveries table around `tbody`, with an actions column when asked. */
export function deliveriesTable(tbody, { actions = false } = {}) {
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

/** An endpoint filter <select> filled from the endpoint cache; `fill()` refills it after the cache loads. */
export function endpointSelect(id, testid, selected, allLabel) {
  const select = h('select', { id, class: 'select', 'data-testid': testid });
  const fill = () => {
    const current = select.value || selected || '';
    const eps = [...endpointCache.values()].sort((a, b) => a.url.localeCompare(b.url));
    const opts = [h('option', { value: '' }, allLabel)];
    for (const ep of eps) opts.push(h('option', { value: ep.id }, ep.description ? `${endpointLabel(ep.id)} — ${ep.description}` : endpointLabel(ep.id)));
    if (current && !endpointCache.has(current)) opts.push(h('option', { value: current }, current));
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
export function deliveryList(ctx, { getFilters, emptyText, redrive, onPage }) {
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
      if (rows.some((d) => !endpointCache.has(d.endpoint_id))) refreshEndpointCache();
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

/** Redrive one delivery from `button`, announce its new status, then call `after(response)`. */
export async function redriveOne(d, button, after) {
  await withBusy(button, 'Redriving the delivery', async () => {
    const res = await api(`/v1/deliveries/${encodeURIComponent(d.id)}/redrive`, { method: 'POST', body: {} });
    announce(`Delivery ${shortId(d.id)} redriven; it is ${res && res.status ? res.status.replace('_', ' ') : 'queued'} again.`);
    if (after) after(res);
  });
}
