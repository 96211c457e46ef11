// Delivery view (#/deliveries/{id}): one delivery's fields, its event's payload,
// every attempt, and a countdown to the next one. Stops polling once the
// delivery is gone (404).

import { ApiError, api, isAbort } from '../api.js';
import { $, h } from '../dom.js';
import { endpointCache, loadEndpointsCache } from '../endpoint-cache.js';
import { fmtDateTime, fmtMs, fmtNum, shortId } from '../format.js';
import { LIST_POLL_MS, STOP_POLLING } from '../poll.js';
import { countdown, deliveryBadge, field, jsonBlock, pageHead, problemBox, statusCodePill, timeAgo } from '../ui.js';
import { isRedrivable, redriveOne } from '../components/delivery-list.js';

/** Why a finished delivery has no next attempt, by status. */
const NO_NEXT_ATTEMPT = {
  succeeded: 'none — delivered',
  dead: 'none — out of attempts',
  skipped: 'none — skipped by the transformation',
};

/**
 * The status cell of an attempt: its HTTP status, or a note when nothing went on
 * the wire because the endpoint's transformation refused or cancelled the request
 * (its error says which). `sent` is absent from older servers: treat it as sent.
 */
function attemptStatus(a) {
  if (a.sent === false) return h('span', { class: 'badge badge--skip badge--plain', 'data-testid': 'attempt-not-sent' }, 'not sent (transformation)');
  return statusCodePill(a.status_code);
}

/** Render the view of delivery `id`. */
export function viewDelivery(ctx, id) {
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
    const ep = endpointCache.get(d.endpoint_id);
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
          : h('span', { class: 'muted' }, NO_NEXT_ATTEMPT[d.status] || 'not scheduled')),
        field('Last status code', statusCodePill(d.last_status_code)),
        field('Last error', d.last_error ? h('span', { class: 'err-text' }, d.last_error) : h('span', { class: 'muted' }, '—')),
        field('Created', h('span', null, fmtDateTime(d.created_at), ' ', h('span', { class: 'muted' }, '(', timeAgo(d.created_at), ')'))),
        field('Updated', h('span', null, fmtDateTime(d.updated_at), ' ', h('span', { class: 'muted' }, '(', timeAgo(d.updated_at), ')')))));
    const canRedrive = isRedrivable(d.status);
    if (canRedrive) redriveBtn.removeAttribute('aria-disabled'); else redriveBtn.setAttribute('aria-disabled', 'true');
    redriveBtn.title = canRedrive ? 'Queue this delivery again with a fresh set of attempts' : 'Only finished deliveries (succeeded, dead or skipped) can be redriven';
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
            h('td', null, attemptStatus(a)),
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
      if (!endpointCache.has(d.endpoint_id)) await loadEndpointsCache(ctx.signal).catch(() => {});
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
