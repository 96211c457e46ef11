// The "Add endpoint" form. API refusals (for example an SSRF-blocked URL) are
// shown next to the form as problem details, not as a toast, so they stay
// visible while the user fixes the URL.

import { ApiError, api, isAbort } from '../api.js';
import { h } from '../dom.js';
import { announce } from '../feedback.js';
import { problemBox } from '../ui.js';

/** The collapsible "Add endpoint" form; calls `onCreated(endpoint)` after the API accepts it. */
export function createEndpointForm(ctx, onCreated) {
  const url = h('input', { id: 'ep-url', name: 'url', class: 'input input--mono', type: 'url', required: true, placeholder: 'https://example.com/webhooks', 'data-testid': 'create-endpoint-url', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'ep-url-hint' });
  const types = h('input', { id: 'ep-types', name: 'event_types', class: 'input input--mono', type: 'text', placeholder: 'order.created, order.paid', 'data-testid': 'create-endpoint-event-types', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'ep-types-hint' });
  const desc = h('input', { id: 'ep-desc', name: 'description', class: 'input', type: 'text', placeholder: 'Order service (production)', 'data-testid': 'create-endpoint-description', autocomplete: 'off' });
  const errors = h('div', { 'data-testid': 'create-endpoint-error' });
  const submit = h('button', { type: 'submit', class: 'btn btn--primary', 'data-testid': 'create-endpoint-submit' }, 'Create endpoint');
  const form = h('form', { class: 'card__body', 'data-testid': 'create-endpoint-form', novalidate: true, 'aria-labelledby': 'create-endpoint-summary' },
    h('div', { class: 'form-grid' },
      h('div', { class: 'field field--wide' },
        h('label', { class: 'field__label', for: 'ep-url' }, 'URL'), url,
        h('p', { class: 'field__hint', id: 'ep-url-hint' }, 'Where HookIt POSTs events. Private and internal addresses are refused (SSRF protection).')),
      h('div', { class: 'field' },
        h('label', { class: 'field__label', for: 'ep-types' }, 'Event types'), types,
        h('p', { class: 'field__hint', id: 'ep-types-hint' }, 'Comma-separated. Leave empty for all events.')),
      h('div', { class: 'field' },
        h('label', { class: 'field__label', for: 'ep-desc' }, 'Description'), desc)),
    h('div', { class: 'form-actions' }, submit),
    errors);
  const details = h('details', { class: 'card', 'data-testid': 'create-endpoint' },
    h('summary', { id: 'create-endpoint-summary' }, 'Add endpoint'),
    form);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    errors.replaceChildren();
    url.removeAttribute('aria-invalid');
    const value = url.value.trim();
    if (!value) {
      url.setAttribute('aria-invalid', 'true');
      errors.append(h('div', { class: 'notice notice--error', role: 'alert' }, 'Enter the URL to deliver webhooks to.'));
      url.focus();
      return;
    }
    const body = { url: value };
    const eventTypes = types.value.split(',').map((t) => t.trim()).filter(Boolean);
    if (eventTypes.length) body.event_types = eventTypes;
    if (desc.value.trim()) body.description = desc.value.trim();
    if (submit.getAttribute('aria-disabled') === 'true') return;
    submit.setAttribute('aria-disabled', 'true');
    try {
      const ep = await api('/v1/endpoints', { method: 'POST', body, signal: ctx.signal });
      form.reset();
      onCreated(ep);
      announce(`Endpoint ${ep.url} created.`);
    } catch (e) {
      if (isAbort(e)) return;
      if (e instanceof ApiError && e.status === 401) return;
      url.setAttribute('aria-invalid', 'true');
      errors.append(problemBox(e, 'create-endpoint-problem'));
    } finally {
      submit.removeAttribute('aria-disabled');
    }
  });
  return details;
}
