// Event types view (#/event-types): the tenant's event-type catalog, as its
// consumers read it: each type's description, JSON Schema and example payload,
// deprecated types marked, and whether the tenant refuses types not listed.
//
// Loaded once per visit rather than polled: the catalog changes by hand, rarely,
// and a full catalog (up to 1,000 types with their schemas) is too much to fetch
// every two seconds.

import { ApiError, api, isAbort, qs } from '../api.js';
import { h } from '../dom.js';
import { fmtDateTime, fmtNum } from '../format.js';
import { jsonBlock, pageHead, problemBox } from '../ui.js';

/** Largest page the API gives; the catalog holds at most 1,000 types. */
const PAGE = 1000;

/** Every type of the catalog, following the cursor. */
async function loadCatalog(signal) {
  const types = [];
  let cursor = '';
  do {
    const page = await api(`/v1/event-types${qs({ limit: PAGE, cursor })}`, { signal });
    types.push(...(page.data || []));
    cursor = page.next_cursor || '';
  } while (cursor);
  return types;
}

/** One type: name, state, description, then its schema and example side by side. */
function typeCard(t) {
  const id = `et-${t.name.replace(/[^A-Za-z0-9_-]/g, '-')}`;
  return h('section', { class: 'card', 'aria-labelledby': id, 'data-testid': 'event-type', 'data-name': t.name },
    h('div', { class: 'card__head' },
      h('h2', { id }, h('code', { class: 'mono' }, t.name)),
      t.deprecated
        ? h('span', { class: 'badge badge--warn', 'data-testid': 'event-type-deprecated', title: `Deprecated ${fmtDateTime(t.deprecated_at)}` }, 'Deprecated')
        : null),
    h('div', { class: 'card__body event-type' },
    t.description
      ? h('p', { 'data-testid': 'event-type-description' }, t.description)
      : h('p', { class: 'muted' }, 'No description.'),
    h('div', { class: 'event-type__columns' },
      h('div', null,
        h('h3', null, 'Schema'),
        t.schema === null || t.schema === undefined
          ? h('p', { class: 'muted', 'data-testid': 'event-type-no-schema' }, 'No schema: any payload object is accepted.')
          : jsonBlock(t.schema, 'event-type-schema')),
      h('div', null,
        h('h3', null, 'Example'),
        t.example === null || t.example === undefined
          ? h('p', { class: 'muted' }, 'No example.')
          : jsonBlock(t.example, 'event-type-example')))));
}

/** Render the Event types view. */
export function viewEventTypes(ctx) {
  const strictNote = h('p', { class: 'muted', 'data-testid': 'event-types-strict' });
  const body = h('div', { class: 'event-types', 'data-testid': 'event-types' }, h('p', { class: 'muted' }, 'Loading…'));
  ctx.main.append(
    pageHead('Event types', 'What this tenant publishes: each type with its payload schema and an example. Payloads are checked against their type’s schema when they are published.'),
    strictNote,
    body);

  api('/v1/settings', { signal: ctx.signal }).then((s) => {
    strictNote.textContent = s.strict_event_types
      ? 'Strict: events of a type not listed here are refused.'
      : 'Not strict: events of a type not listed here are accepted unchecked.';
  }).catch(() => {});

  loadCatalog(ctx.signal).then((types) => {
    if (!types.length) {
      body.replaceChildren(h('div', { class: 'card empty', 'data-testid': 'event-types-empty' },
        h('p', null, 'No event types yet.'),
        h('p', { class: 'muted' }, 'Create them with POST /v1/event-types: a name, a description, a JSON Schema and an example.')));
      return;
    }
    const deprecated = types.filter((t) => t.deprecated).length;
    body.replaceChildren(
      h('p', { class: 'muted', 'data-testid': 'event-types-count' },
        `${fmtNum(types.length)} type${types.length === 1 ? '' : 's'}`,
        deprecated ? `, ${fmtNum(deprecated)} deprecated` : ''),
      ...types.map(typeCard));
  }).catch((e) => {
    if (isAbort(e)) return;
    body.replaceChildren(problemBox(e instanceof ApiError ? e : new Error(String(e))));
  });
}
