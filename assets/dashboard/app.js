// HookIt dashboard entry: a dependency-free single-page app, loaded as native ES
// modules (no build step, no bundler, no CDN). This module only boots the page,
// signs in and out, and routes the hash (#/section/id?query) to a view.
//
// All data comes from the JSON API under /v1 (api.js), authenticated with the API
// key the user signs in with. Untrusted strings (URLs, payloads, receiver
// responses, error messages) are only ever inserted as text, never as HTML (dom.js).
//
// How to add a view:
//   1. Create views/<name>.js exporting a function (ctx, params) for its list page
//      and/or (ctx, id, params) for its item page. ctx = { main, signal, poll }:
//      append to ctx.main, pass ctx.signal to api(), and refresh with
//      ctx.poll(fn, ms) so polling stops when the user navigates away.
//   2. Import it below and add an entry to VIEWS under its hash section.
//   3. Add the file to ASSETS in src/api/dashboard.rs (a unit test there fails
//      when an imported module is not served).
//   4. For a nav link, add <a data-nav="<section>"> to index.html.

import { isSignedIn, forgetKey, setUnauthorizedHandler } from './api.js';
import { refreshDemo, initDemoPanel } from './demo.js';
import { initSecretCopy } from './dialogs.js';
import { $ } from './dom.js';
import { endpointCache } from './endpoint-cache.js';
import { announce, initLiveIndicator, setLive } from './feedback.js';
import { parseHash } from './hash.js';
import { makePoller } from './poll.js';
import { markNav, showShell } from './shell.js';
import { renderSignIn } from './signin.js';
import { startTicker } from './ui.js';
import { viewDeadLetters } from './views/dead-letters.js';
import { viewDeliveries } from './views/deliveries.js';
import { viewDelivery } from './views/delivery.js';
import { viewEndpoint } from './views/endpoint.js';
import { viewEndpoints } from './views/endpoints.js';
import { viewEvent } from './views/event.js';
import { viewEventTypes } from './views/event-types.js';

/**
 * The views, by the first hash segment. `list` renders #/section, `item` renders
 * #/section/{id}; without an `item`, #/section/{id} shows the list. `nav` is the
 * nav link to mark as current (default: the section itself). A section or page
 * that is not here redirects to #/endpoints.
 */
const VIEWS = {
  endpoints: { list: viewEndpoints, item: viewEndpoint },
  deliveries: { list: viewDeliveries, item: viewDelivery },
  'dead-letters': { list: viewDeadLetters },
  events: { item: viewEvent, nav: 'deliveries' },
  'event-types': { list: viewEventTypes },
};

let currentView = null; // { ctrl: AbortController } of the view on screen
let firstRoute = true;

function route() {
  if (currentView) currentView.ctrl.abort();
  currentView = null;
  if (!isSignedIn()) { showSignIn(); return; }
  showShell(true);
  const { parts, params } = parseHash();
  const ctrl = new AbortController();
  const main = $('#main');
  const ctx = {
    signal: ctrl.signal,
    main,
    poll: (fn, ms) => makePoller(ctrl.signal, fn, ms),
  };
  currentView = { ctrl };
  main.replaceChildren();
  const section = parts[0] || 'endpoints';
  const view = Object.hasOwn(VIEWS, section) ? VIEWS[section] : null;
  if (view && parts[1] && view.item) view.item(ctx, parts[1], params);
  else if (view && view.list) view.list(ctx, params);
  else { location.replace('#/endpoints'); return; }
  markNav(view.nav || section);
  // Move focus to the new page's heading so screen readers announce the change.
  if (!firstRoute) {
    const h1 = $('h1', main);
    if (h1) h1.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  firstRoute = false;
}

function showSignIn(message) {
  showShell(false);
  renderSignIn(message, startSession);
}

function startSession() {
  showShell(true);
  setLive(document.hidden ? 'paused' : 'ok', document.hidden ? 'Paused' : 'Live');
  refreshDemo();
  route();
}

function signOut(message) {
  forgetKey();
  endpointCache.clear();
  if (currentView) currentView.ctrl.abort();
  currentView = null;
  showSignIn(message);
}

function boot() {
  startTicker();
  initLiveIndicator();
  setUnauthorizedHandler(() => signOut('Your API key was not accepted (it may have been revoked or rotated). Please sign in again.'));
  $('#signout-button').addEventListener('click', () => {
    signOut();
    announce('Signed out.');
  });
  initDemoPanel();
  initSecretCopy();
  window.addEventListener('hashchange', route);
  if (isSignedIn()) startSession(); else showSignIn();
}

// Module scripts run after parsing, so the DOM is normally ready already.
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot); else boot();
