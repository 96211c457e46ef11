// Telling the user what happened: the polite status region (also shown as a
// toast), the live-updates indicator in the header, and reporting a failed
// action from a button.

import { ApiError, isAbort, isSignedIn } from './api.js';
import { $, h } from './dom.js';

let toastTimer = null;

/** Announce a message politely and show it as a toast. `link` = {href, text}. */
export function announce(message, { error = false, link = null } = {}) {
  const region = $('#status-region');
  clearTimeout(toastTimer);
  region.replaceChildren(h('div', { class: `toast${error ? ' toast--error' : ''}` },
    h('span', null, message),
    link ? h('a', { href: link.href, 'data-testid': 'status-link' }, link.text) : null));
  toastTimer = setTimeout(() => region.replaceChildren(), error ? 10000 : 6000);
}

/** Set the header's live indicator: "ok", "paused" or "error", with its visible text. */
export function setLive(stateName, text) {
  const el = $('#live-indicator');
  if (!el) return;
  el.dataset.state = stateName;
  $('.live-indicator__text', el).textContent = text;
  el.title = stateName === 'error' ? 'Live updates are failing; retrying' : stateName === 'paused' ? 'Live updates pause while this tab is hidden' : 'Live updates are on';
}

/** Show "Paused" while the tab is hidden (pollers stop then, see poll.js). */
export function initLiveIndicator() {
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) setLive('paused', 'Paused');
    else setLive('ok', 'Live');
  });
}

/** Announce a failed action, unless it was cancelled or the key was refused (sign-out says why). */
export function reportError(e, what) {
  if (isAbort(e) || !isSignedIn()) return;
  if (e instanceof ApiError && e.status === 401) return;
  const msg = e instanceof ApiError ? `${e.title}${e.detail ? `: ${e.detail}` : ''}` : String(e && e.message || e);
  announce(what ? `${what} failed. ${msg}` : msg, { error: true });
}

/** Run an async action from a button: disables it while running and reports errors. */
export async function withBusy(button, what, fn) {
  // aria-disabled (not `disabled`) keeps keyboard focus on the button while busy,
  // so dialogs opened from it can hand focus back.
  if (button) {
    if (button.getAttribute('aria-disabled') === 'true') return undefined;
    button.setAttribute('aria-disabled', 'true');
    button.setAttribute('aria-busy', 'true');
    button.classList.add('is-busy');
  }
  try {
    return await fn();
  } catch (e) {
    reportError(e, what);
    return undefined;
  } finally {
    if (button) { button.removeAttribute('aria-disabled'); button.removeAttribute('aria-busy'); button.classList.remove('is-busy'); }
  }
}
