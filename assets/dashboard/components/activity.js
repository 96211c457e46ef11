// The activity card on the Endpoints page: delivered / failed / dead per minute,
// with a time-range switch that is kept for the tab's session.

import { api, isAbort, qs } from '../api.js';
import { renderTimeseries } from '../charts.js';
import { h } from '../dom.js';
import { problemBox } from '../ui.js';

const CHART_POLL_MS = 30000;
const CHART_RANGES = [
  { minutes: 15, label: '15 min', long: '15 minutes' },
  { minutes: 60, label: '1 h', long: 'hour' },
  { minutes: 180, label: '3 h', long: '3 hours' },
  { minutes: 1440, label: '24 h', long: '24 hours' },
];
const CHART_DEFAULT_MINUTES = 60;
const CHART_RANGE_STORAGE = 'hookit.chartMinutes';

/** The range of `minutes`, or the default range for anything else. */
function chartRange(minutes) {
  return CHART_RANGES.find((r) => r.minutes === minutes) || CHART_RANGES.find((r) => r.minutes === CHART_DEFAULT_MINUTES);
}

/** The range chosen earlier in this tab, if any. */
function loadChartMinutes() {
  let stored = null;
  try { stored = Number(sessionStorage.getItem(CHART_RANGE_STORAGE)); } catch { stored = null; }
  return chartRange(stored).minutes;
}

/** The activity card; polls the time series while the view is on screen and redraws on resize. */
export function activityCard(ctx) {
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
