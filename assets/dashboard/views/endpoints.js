// Endpoints view (#/endpoints): the activity chart, the "Add endpoint" form, and
// one row per endpoint with its last-hour stats and its actions. Each row links
// to the endpoint's page (views/endpoint.js).

import { PAGE_SIZE, api, isAbort, qs } from '../api.js';
import { sparkline } from '../charts.js';
import { h, reconcile, setChildren } from '../dom.js';
import { confirmDialog, secretDialog } from '../dialogs.js';
import { endpointCache } from '../endpoint-cache.js';
import { announce, withBusy } from '../feedback.js';
import { fmtMs, fmtNum, fmtPct, shortId } from '../format.js';
import { endpointBadges, pageHead, problemBox, statusCodePill } from '../ui.js';
import { activityCard } from '../components/activity.js';
import { createEndpointForm } from '../components/endpoint-form.js';
import { isHeld, setEndpointPaused } from '../components/endpoint-pause.js';

const ENDPOINTS_POLL_MS = 10000;

/** Colour class of a success rate (99% and up ok, 90% and up warn). */
function rateClass(r) {
  if (r === null || r === undefined) return '';
  return r >= 0.99 ? 'rate--ok' : r >= 0.9 ? 'rate--warn' : 'rate--bad';
}

/** Render the Endpoints view into ctx.main. */
export function viewEndpoints(ctx) {
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
    endpointCache.set(ep.id, ep);
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
      const updated = await setEndpointPaused(ep, action === 'pause', button);
      if (updated) endpoints = endpoints.map((e) => (e.id === updated.id ? updated : e));
      render();
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
    const paused = isHeld(ep);
    const perMin = st && Array.isArray(st.per_minute) ? st.per_minute : [];
    const total = perMin.reduce((a, b) => a + b, 0);
    const peak = perMin.length ? Math.max(...perMin) : 0;
    const btn = (action, text, testid, aria) => h('button', {
      type: 'button', class: 'btn btn--sm', 'data-testid': testid, 'aria-label': `${aria} ${label}`,
      onclick: (ev) => onAction(action, ep, ev.currentTarget),
    }, text);
    return h('tr', { 'data-testid': 'endpoint-row', 'data-endpoint-id': ep.id, 'data-status': ep.status },
      h('td', { class: 'cell-url' },
        h('a', { class: 'url', href: `#/endpoints/${encodeURIComponent(ep.id)}`, 'data-testid': 'endpoint-url', title: 'Settings, transformation and deliveries of this endpoint' }, ep.url),
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
      for (const ep of res.data || []) endpointCache.set(ep.id, ep);
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
      for (const ep of fresh) endpointCache.set(ep.id, ep);
      listError.replaceChildren();
      loadedOnce = true;
      render();
    } catch (e) {
      if (!isAbort(e) && !loadedOnce) listError.replaceChildren(h('div', { class: 'card__body' }, problemBox(e)));
      throw e;
    }
  }, ENDPOINTS_POLL_MS).now();
}
