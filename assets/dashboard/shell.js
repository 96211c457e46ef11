// The page chrome around the views: which header parts show when signed in or
// out, and which main-nav link is marked as the current page.

import { $ } from './dom.js';

/** Show the nav and header controls only when signed in. */
export function showShell(signedIn) {
  $('#app-nav').hidden = !signedIn;
  $('#header-right').hidden = !signedIn;
  if (!signedIn) $('#demo-panel').hidden = true;
}

/** Mark the nav link of `section` as the current page (aria-current). */
export function markNav(section) {
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}
