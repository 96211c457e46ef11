// Deliveries view (#/deliveries): every delivery, newest first, filtered by
// status, endpoint and event type; the filters are kept in the address.

import { h } from '../dom.js';
import { loadEndpointsCache } from '../endpoint-cache.js';
import { replaceHashQuery } from '../hash.js';
import { DELIVERY_BADGE, pageHead } from '../ui.js';
import { deliveryList, endpointSelect } from '../components/delivery-list.js';

const DELIVERY_STATUSES = ['pending', 'in_flight', 'succeeded', 'dead', 'skipped'];

/** Render the Deliveries view; `params` are the filters from the hash. */
export function viewDeliveries(ctx, params) {
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
