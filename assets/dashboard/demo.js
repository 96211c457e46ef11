// The demo receiver bar: shown only when the server runs as `hookit demo`
// (GET /v1/demo/receiver answers 200), it switches how the built-in receiver
// answers deliveries.

import { api } from './api.js';
import { $ } from './dom.js';
import { announce, reportError } from './feedback.js';

const DEMO_MODES = ['up', 'errors', 'timeouts'];

/** Show the bar with the receiver's current mode, or hide it when the server is not in demo mode. */
export async function refreshDemo() {
  const panel = $('#demo-panel');
  try {
    const res = await api('/v1/demo/receiver');
    setDemoMode(res && res.mode);
    panel.hidden = false;
  } catch {
    // 404 means "not in demo mode"; anything else also hides the panel.
    panel.hidden = true;
  }
}

/** Show `mode` as the current one and press its button. */
function setDemoMode(mode) {
  $('#demo-mode-current').textContent = mode || 'unknown';
  for (const btn of document.querySelectorAll('#demo-mode-group [data-mode]')) {
    btn.setAttribute('aria-pressed', String(btn.dataset.mode === mode));
  }
}

/** Wire the mode buttons (once, at boot). */
export function initDemoPanel() {
  $('#demo-mode-group').addEventListener('click', async (ev) => {
    const btn = ev.target.closest('button[data-mode]');
    if (!btn || !DEMO_MODES.includes(btn.dataset.mode)) return;
    const mode = btn.dataset.mode;
    const buttons = [...document.querySelectorAll('#demo-mode-group button')];
    if (buttons.some((b) => b.getAttribute('aria-disabled') === 'true')) return;
    buttons.forEach((b) => b.setAttribute('aria-disabled', 'true'));
    try {
      const res = await api('/v1/demo/receiver', { method: 'POST', body: { mode } });
      setDemoMode((res && res.mode) || mode);
      announce(`Demo receiver mode set to “${(res && res.mode) || mode}”.`);
    } catch (e) {
      reportError(e, 'Changing the demo receiver mode');
    } finally {
      buttons.forEach((b) => b.removeAttribute('aria-disabled'));
    }
  });
}
