// The two modal dialogs declared in index.html: "Are you sure?" and the signing
// secret with its copy button. Native <dialog> elements, so the browser handles
// the focus trap and Escape; this module hands focus back to the opener.

import { $, setChildren } from './dom.js';
import { announce } from './feedback.js';

/** Show a modal <dialog>; resolves with its returnValue. Focus returns to the opener. */
function showDialog(dialog) {
  const opener = document.activeElement;
  const openerRow = opener && opener.closest ? opener.closest('[data-key]') : null;
  const rowKey = openerRow ? openerRow.dataset.key : null;
  const openerTestId = opener && opener.dataset ? opener.dataset.testid : null;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue);
      // Return focus after the caller has re-enabled its button; if a live update
      // replaced the row meanwhile, focus the same control in the new row.
      setTimeout(() => {
        let target = opener;
        if ((!target || !target.isConnected) && rowKey && openerTestId) {
          target = document.querySelector(`[data-key="${CSS.escape(rowKey)}"] [data-testid="${CSS.escape(openerTestId)}"]`);
        }
        if (target && target.isConnected && typeof target.focus === 'function') target.focus();
      }, 0);
    }, { once: true });
    dialog.showModal();
  });
}

/** Ask before a consequential action; resolves true when the user confirms. */
export async function confirmDialog({ title, message, confirmLabel = 'Confirm', danger = false }) {
  const dialog = $('#confirm-dialog');
  $('#confirm-dialog-title').textContent = title;
  const msg = $('#confirm-dialog-message');
  setChildren(msg, message);
  const btn = $('#confirm-dialog-confirm');
  btn.textContent = confirmLabel;
  btn.className = `btn ${danger ? 'btn--danger' : 'btn--primary'}`;
  return (await showDialog(dialog)) === 'confirm';
}

/** Show a signing secret, selected for copying; it is cleared from the input on close. */
export async function secretDialog({ title, intro, secret }) {
  const dialog = $('#secret-dialog');
  $('#secret-dialog-title').textContent = title;
  $('#secret-dialog-intro').textContent = intro;
  const input = $('#secret-value');
  input.value = secret;
  const copy = $('#secret-copy');
  copy.textContent = 'Copy';
  $('#secret-status').textContent = '';
  const p = showDialog(dialog);
  input.focus();
  input.select();
  await p;
  input.value = '';
}

/** Copy to the clipboard, falling back to execCommand where the Clipboard API is refused. */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const input = $('#secret-value');
    input.focus();
    input.select();
    try { return document.execCommand('copy'); } catch { return false; }
  }
}

/** Wire the secret dialog's Copy button (once, at boot). */
export function initSecretCopy() {
  $('#secret-copy').addEventListener('click', async (ev) => {
    const button = ev.currentTarget;
    const ok = await copyText($('#secret-value').value);
    button.textContent = ok ? 'Copied' : 'Copy failed';
    $('#secret-status').textContent = ok ? 'Secret copied to the clipboard.' : 'Could not copy; select the text and copy it manually.';
    announce(ok ? 'Secret copied to the clipboard.' : 'Could not copy; select the text and copy it manually.', { error: !ok });
  });
}
