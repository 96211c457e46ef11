// Dead letters view (#/dead-letters): deliveries that used up their attempts,
// with per-row redrive and "Redrive all matching" (counted by a dry run first,
// then confirmed with that number).

import { api, qs } from '../api.js';
import { confirmDialog } from '../dialogs.js';
import { h } from '../dom.js';
import { endpointCache, loadEndpointsCache } from '../endpoint-cache.js';
import { announce, withBusy } from '../feedback.js';
import { fmtNum } from '../format.js';
import { replaceHashQuery } from '../hash.js';
import { pageHead } from '../ui.js';
import { deliveryList, endpointSelect, redriveOne } from '../components/delivery-list.js';

/** Render the Dead letters view; `params` are the filters from the hash. */
export function viewDeadLetters(ctx, params) {
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
      const scope = filters.endpoint_id ? ['for ', h('strong', null, (endpointCache.get(filters.endpoint_id) || {}).url || filters.endpoint_id)] : ['across ', h('strong', null, 'all endpoints')];
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
