// The sign-in page: asks for an API key and checks it against the API before
// keeping it, so a wrong key is reported here instead of on the first view.

import { ApiError, api, rememberKey, useKey } from './api.js';
import { $, h } from './dom.js';
import { problemBox } from './ui.js';

/** Show the sign-in form; `onSignedIn` runs once the server has accepted a key. */
export function renderSignIn(message, onSignedIn) {
  const main = $('#main');
  const error = h('div', { 'data-testid': 'signin-error' });
  if (message) error.append(h('div', { class: 'notice notice--warn', role: 'alert' }, message));
  const input = h('input', {
    id: 'api-key', name: 'api-key', class: 'input input--mono', type: 'password', required: true,
    autocomplete: 'current-password', spellcheck: 'false', 'data-testid': 'api-key-input',
    'aria-describedby': 'api-key-hint',
  });
  const submit = h('button', { type: 'submit', class: 'btn btn--primary', 'data-testid': 'signin-submit' }, 'Sign in');
  const form = h('form', { class: 'card__body', 'data-testid': 'signin-form', novalidate: true },
    h('h1', { id: 'signin-title', tabindex: '-1' }, 'Sign in to HookIt'),
    h('p', { class: 'lead' }, 'Use an API key to manage endpoints and inspect webhook deliveries.'),
    error,
    h('div', { class: 'field' },
      h('label', { class: 'field__label', for: 'api-key' }, 'API key'),
      input,
      h('p', { class: 'field__hint', id: 'api-key-hint' }, 'The key is kept in this browser tab only and is forgotten when you close it.')),
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    error.replaceChildren();
    if (!key) {
      input.setAttribute('aria-invalid', 'true');
      error.append(h('div', { class: 'notice notice--error', role: 'alert' }, 'Enter an API key.'));
      input.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    useKey(key);
    try {
      await api('/v1/endpoints?limit=1', { signOutOn401: false });
      rememberKey();
      input.value = '';
      if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/endpoints');
      onSignedIn();
    } catch (e) {
      useKey(null);
      input.setAttribute('aria-invalid', 'true');
      const notice = e instanceof ApiError && (e.status === 401 || e.status === 403)
        ? h('div', { class: 'notice notice--error', role: 'alert' }, 'That API key was not accepted. Check it and try again.')
        : problemBox(e);
      error.replaceChildren(notice);
      submit.disabled = false;
      submit.textContent = 'Sign in';
      input.focus();
    }
  });
  main.replaceChildren(h('section', { class: 'signin card', 'aria-labelledby': 'signin-title' }, form));
  document.title = 'Sign in · HookIt';
  input.focus();
}
