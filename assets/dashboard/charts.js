// Hand-rolled SVG charts (no chart library: nothing may load from elsewhere).
// Pure rendering: callers fetch the data and decide when to redraw.

import { h, s } from './dom.js';
import { fmtNum, parseTime } from './format.js';

/** A round axis step (1, 2, 2.5 or 5 times a power of ten) for about `ticks` ticks up to `max`. */
function niceStep(max, ticks) {
  const raw = Math.max(max, 1) / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  return Math.max(1, nice * mag);
}

/** A small inline line chart of `values`, labelled for assistive tech. */
export function sparkline(values, label) {
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

/** The activity chart's lines, in legend order. */
const SERIES = [
  { key: 'delivered', label: 'Delivered' },
  { key: 'failed', label: 'Failed attempts' },
  { key: 'dead', label: 'Dead' },
];

/** Hours and minutes in the user's locale, for axis ticks and table rows. */
function fmtClock(t) {
  return new Date(t).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** Minutes between x-axis ticks: the smallest clock-friendly step that fits. */
function tickMinutes(spanMinutes, maxTicks) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720];
  return steps.find((m) => spanMinutes / m <= maxTicks) || 1440;
}

/** Line chart of delivered / failed / dead per minute. Re-rendered on data or size change. */
export function renderTimeseries(container, buckets, range) {
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
