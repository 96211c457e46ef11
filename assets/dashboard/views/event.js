// Event view (#/events/{id}): an event's payload and its deliveries.

import { ApiError, api, isAbort, qs } from '../api.js';
import { $, h, reconcile } from '../dom.js';
import { endpointCache, loadEndpointsCache } from '../endpoint-cache.js';
import { fmtDateTime, fmtNum, shortId } from '../format.js';
import { LIST_POLL_MS, STOP_POLLING } from '../poll.js';
import { field, jsonBlock, pageHead, problemBox } from '../ui.js';
import { buildDeliveryRow, deliveriesTable, deliveryRowSig } from '../components/delivery-list.js';

/** Render the view of event `id`. */
export function viewEvent(ctx, id) {
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
      if (deliveries.some((d) => !endpointCache.has(d.endpoint_id))) await loadEndpointsCache(ctx.signal).catch(() => {});
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
