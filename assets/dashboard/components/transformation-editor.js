// The transformation card of the endpoint page: the endpoint's JavaScript
// handler in a code editor, "Run on a sample event" (the server runs it in the
// same sandbox as the worker and returns the request it would make, sending
// nothing), and Save / Remove.
//
// Errors point at a line: a run's `line`, or the "at line N" at the end of a
// save's invalid-transformation problem. That line is marked in the gutter and
// the caret moved to it. Kubernetes-managed endpoints are read-only here (the
// API answers 409; the resource owns the code), but can still be run.

import { ApiError, api, isAbort } from '../api.js';
import { confirmDialog } from '../dialogs.js';
import { h } from '../dom.js';
import { announce, withBusy } from '../feedback.js';
import { field, jsonBlock, problemBox } from '../ui.js';
import { codeEditor } from './code-editor.js';

/** What a new transformation starts from. */
const STARTER_TEMPLATE = `function handler(webhook) {
  // webhook: { eventType, payload, url, method, headers }
  // Return it changed; set webhook.cancel = true to skip the delivery.
  return webhook;
}
`;

const DEFAULT_EVENT_TYPE = 'hookit.test';
const DEFAULT_PAYLOAD = '{"test": true}';

/** The sample's default event type: the first of the endpoint's types that is not a pattern. */
function sampleEventType(ep) {
  const exact = (ep.event_types || []).find((t) => !t.includes('*'));
  return exact || DEFAULT_EVENT_TYPE;
}

/** The line an engine message names ("… at line 2"), or null. */
function lineOf(message) {
  const all = [...String(message || '').matchAll(/\bat line (\d+)\b/g)];
  return all.length ? Number(all[all.length - 1][1]) : null;
}

/** Whether `e` is the API refusing code that does not compile or has no handler. */
function isInvalidTransformation(e) {
  return e instanceof ApiError && e.status === 422 && typeof e.type === 'string' && e.type.endsWith('invalid-transformation');
}

/**
 * The transformation card for endpoint `ep`. `onSaved(endpoint)` is called with
 * the API's answer after a save or remove. `update(ep)` takes a fresher copy of
 * the endpoint (from the page's polling) without disturbing unsaved edits.
 */
export function transformationEditor(ctx, ep, { onSaved } = {}) {
  let endpoint = ep;
  let stored = ep.transformation ?? null; // the code the API holds
  const managed = ep.managed_by === 'kubernetes';

  const editor = codeEditor({
    id: 'tf-code', value: stored ?? STARTER_TEMPLATE, readOnly: managed, rows: 14,
    describedBy: 'tf-code-hint', testid: 'tf-code',
  });
  const state = h('span', { class: 'tf-state', 'data-testid': 'tf-state' });

  const eventType = h('input', {
    id: 'tf-event-type', class: 'input input--mono', type: 'text', value: sampleEventType(ep),
    autocomplete: 'off', spellcheck: 'false', 'data-testid': 'tf-event-type',
  });
  const payload = h('textarea', {
    id: 'tf-payload', class: 'input input--mono tf-payload', rows: 5, spellcheck: 'false', autocomplete: 'off',
    'aria-describedby': 'tf-payload-error', 'data-testid': 'tf-payload',
  });
  payload.value = DEFAULT_PAYLOAD;
  const payloadError = h('div', { id: 'tf-payload-error', class: 'field__error', 'data-testid': 'tf-payload-error' });

  const run = h('button', { type: 'button', class: 'btn btn--primary', 'data-testid': 'tf-run' }, 'Run on a sample event');
  const save = managed ? null : h('button', { type: 'button', class: 'btn', 'data-testid': 'tf-save' }, 'Save');
  const remove = managed ? null : h('button', { type: 'button', class: 'btn btn--danger-outline', 'data-testid': 'tf-remove' }, 'Remove');
  const saveProblem = h('div', { class: 'tf-messages' });
  const output = h('div', { class: 'tf-output', role: 'region', 'aria-labelledby': 'tf-output-title', 'data-testid': 'tf-output' },
    h('p', { class: 'muted' }, 'Run the handler on a sample event to see the request it would send. Nothing is delivered.'));

  const el = h('section', { class: 'card', 'aria-labelledby': 'tf-title', 'data-testid': 'transformation-editor' },
    h('div', { class: 'card__head' },
      h('h2', { id: 'tf-title' }, 'Transformation ', h('span', { class: 'card__sub' }, 'JavaScript run on each delivery before it is signed and sent')),
      state),
    h('div', { class: 'card__body tf-body' },
      managed ? h('div', { class: 'notice notice--info', 'data-testid': 'tf-managed-note' },
        h('div', { class: 'notice__title' }, 'Read-only'),
        h('div', null, 'This endpoint is managed by a WebhookEndpoint resource; change spec.transformation with kubectl.')) : null,
      h('div', { class: 'tf-grid' },
        h('div', { class: 'field tf-code' },
          h('label', { class: 'field__label', for: 'tf-code' }, 'Handler code'),
          editor.el,
          h('p', { class: 'field__hint', id: 'tf-code-hint' },
            'Define function handler(webhook). It sees the body HookIt would send (after the endpoint\'s format) and returns the request to make. Tab moves to the next control.')),
        h('div', { class: 'tf-sample' },
          h('h3', null, 'Sample event'),
          h('div', { class: 'field' },
            h('label', { class: 'field__label', for: 'tf-event-type' }, 'Event type'), eventType),
          h('div', { class: 'field' },
            h('label', { class: 'field__label', for: 'tf-payload' }, 'Payload (JSON)'), payload, payloadError))),
      h('div', { class: 'form-actions' }, run, save, remove),
      saveProblem,
      h('h3', { class: 'tf-output__title', id: 'tf-output-title' }, 'Result'),
      output));

  // "Saved", "Unsaved changes" or "None": compares the text with what the API holds.
  const showState = () => {
    const text = editor.value;
    let label;
    let key;
    if (managed) { key = 'managed'; label = stored === null ? 'None (read-only)' : 'Read-only'; } else if (stored === null) {
      key = text === STARTER_TEMPLATE ? 'none' : 'unsaved';
      label = key === 'none' ? 'None saved: deliveries are sent as they are' : 'Not saved yet';
    } else {
      key = text === stored ? 'saved' : 'unsaved';
      label = key === 'saved' ? 'Saved: runs on every delivery' : 'Unsaved changes';
    }
    state.dataset.state = key;
    if (state.textContent !== label) state.textContent = label;
    if (remove) remove.hidden = stored === null;
  };
  editor.textarea.addEventListener('input', showState);

  // Point at the line an error names: mark it and put the caret there.
  const showLine = (line) => {
    if (line === null || line === undefined) { editor.unmark(); return; }
    editor.mark(line);
    editor.goTo(line);
  };

  const readPayload = () => {
    payloadError.replaceChildren();
    payload.removeAttribute('aria-invalid');
    const text = payload.value.trim();
    if (!text) return { ok: true, value: undefined };
    try {
      return { ok: true, value: JSON.parse(text) };
    } catch (e) {
      payload.setAttribute('aria-invalid', 'true');
      payloadError.append(h('div', { class: 'notice notice--error', role: 'alert' }, `The payload is not valid JSON: ${e.message}`));
      return { ok: false };
    }
  };

  const runOnce = () => withBusy(run, 'Running the transformation', async () => {
    const sample = readPayload();
    if (!sample.ok) { payload.focus(); return; }
    output.setAttribute('aria-busy', 'true');
    try {
      const res = await api('/v1/transformations/test', {
        method: 'POST',
        signal: ctx.signal,
        body: {
          code: editor.value,
          event_type: eventType.value.trim() || undefined,
          payload: sample.value,
          url: endpoint.url,
          format: endpoint.format || undefined,
          headers: endpoint.headers || {},
        },
      });
      showResult(res);
    } catch (e) {
      if (isAbort(e) || (e instanceof ApiError && e.status === 401)) return;
      editor.unmark();
      output.dataset.outcome = 'problem';
      output.replaceChildren(problemBox(e, 'tf-run-problem'));
      announce('The sample run was refused.', { error: true });
    } finally {
      output.removeAttribute('aria-busy');
    }
  });

  const showResult = (res) => {
    output.dataset.outcome = res.outcome;
    if (res.outcome === 'send' && res.request) {
      editor.unmark();
      output.replaceChildren(requestView(res.request));
      announce(`Ran on a sample event: it would send ${res.request.method} to ${res.request.url}.`);
    } else if (res.outcome === 'cancel') {
      editor.unmark();
      output.replaceChildren(h('div', { class: 'notice notice--info', 'data-testid': 'tf-output-skipped' },
        h('div', { class: 'notice__title' }, 'Skipped'),
        h('div', null, 'The handler set webhook.cancel, so this event would not be sent to this endpoint. Its delivery would end as skipped, not failed.')));
      announce('Ran on a sample event: the delivery would be skipped.');
    } else {
      const line = Number.isInteger(res.line) ? res.line : lineOf(res.error);
      output.replaceChildren(h('div', { class: 'notice notice--error', 'data-testid': 'tf-output-error' },
        h('div', { class: 'notice__title' }, line ? `The handler failed on line ${line}` : 'The handler failed'),
        h('div', { class: 'tf-error-text', 'data-testid': 'tf-output-error-text' }, res.error || 'Unknown error'),
        line ? h('button', { type: 'button', class: 'btn btn--sm tf-goto', onclick: () => editor.goTo(line) }, `Go to line ${line}`) : null));
      announce(line ? `The handler failed on line ${line}: ${res.error}` : `The handler failed: ${res.error}`, { error: true });
      showLine(line);
    }
  };

  const saveCode = (code, button, what) => withBusy(button, what, async () => {
    saveProblem.replaceChildren();
    try {
      const updated = await api(`/v1/endpoints/${encodeURIComponent(endpoint.id)}`, {
        method: 'PATCH', signal: ctx.signal, body: { transformation: code },
      });
      endpoint = updated;
      stored = updated.transformation ?? null;
      if (code === null) editor.value = STARTER_TEMPLATE;
      else editor.unmark();
      showState();
      announce(code === null ? 'Transformation removed: deliveries are sent as they are.' : 'Transformation saved: it runs on every new delivery attempt.');
      if (onSaved) onSaved(updated);
    } catch (e) {
      if (isAbort(e) || (e instanceof ApiError && e.status === 401)) return;
      saveProblem.replaceChildren(problemBox(e, 'tf-save-problem'));
      announce(code === null ? 'The transformation was not removed.' : 'The transformation was not saved.', { error: true });
      if (isInvalidTransformation(e)) showLine(lineOf(e.detail));
    }
  });

  run.addEventListener('click', runOnce);
  if (save) save.addEventListener('click', () => saveCode(editor.value, save, 'Saving the transformation'));
  if (remove) {
    remove.addEventListener('click', async () => {
      const ok = await confirmDialog({
        title: 'Remove the transformation?',
        message: ['Deliveries to ', h('strong', null, endpoint.url), ' will be sent as they are, without the handler. The code is not kept.'],
        confirmLabel: 'Remove transformation',
        danger: true,
      });
      if (ok) await saveCode(null, remove, 'Removing the transformation');
    });
  }
  // Ctrl/Cmd+Enter runs, from the code or the sample.
  for (const input of [editor.textarea, payload, eventType]) {
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); runOnce(); }
    });
  }
  showState();

  return {
    el,
    /** Take a fresher copy of the endpoint; replaces the code only when it has no unsaved edits. */
    update(fresh) {
      const next = fresh.transformation ?? null;
      if (next !== stored && editor.value === (stored ?? STARTER_TEMPLATE)) editor.value = next ?? STARTER_TEMPLATE;
      endpoint = fresh;
      stored = next;
      showState();
    },
  };
}

/** The request a run would make: method, URL, headers and the pretty-printed body. */
function requestView(req) {
  const headers = Object.entries(req.headers || {});
  return h('div', { class: 'tf-request', 'data-testid': 'tf-output-request' },
    h('dl', { class: 'detail-grid detail-grid--flat' },
      field('Method', h('code', null, req.method), 'tf-output-method'),
      field('URL', h('span', { class: 'mono' }, req.url), 'tf-output-url')),
    h('h4', { class: 'tf-request__label' }, 'Headers ', h('span', { class: 'card__sub' }, 'HookIt adds its signature and content headers')),
    headers.length
      ? h('table', { class: 'table table--compact', 'data-testid': 'tf-output-headers' },
        h('caption', { class: 'visually-hidden' }, 'Request headers set by the handler or the endpoint'),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Value'))),
        h('tbody', null, headers.map(([k, v]) => h('tr', null, h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, v)))))
      : h('p', { class: 'muted', 'data-testid': 'tf-output-headers' }, 'No custom headers.'),
    h('h4', { class: 'tf-request__label' }, 'Body'),
    jsonBlock(req.payload, 'tf-output-payload'));
}
