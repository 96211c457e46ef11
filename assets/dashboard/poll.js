// Polling: setTimeout chains that pause while the tab is hidden.
//
// Chains rather than setInterval, so a slow request never overlaps the next one;
// each chain stops when its view's AbortSignal fires (the user navigated away).

import { ApiError, isAbort, isSignedIn } from './api.js';
import { setLive } from './feedback.js';

/** How often lists and detail pages refresh while they are on screen. */
export const LIST_POLL_MS = 2000;

/** Returned by a poll function to stop polling (e.g. the object no longer exists). */
export const STOP_POLLING = Symbol('stop polling');

/** Call `fn` every `ms` until `signal` aborts or `fn` returns STOP_POLLING; `now()` polls at once. */
export function makePoller(signal, fn, ms) {
  let timer = null;
  let running = false;
  let again = false;
  let stopped = false;
  const schedule = () => {
    clearTimeout(timer);
    timer = null;
    if (!signal.aborted && !stopped && !document.hidden) timer = setTimeout(tick, ms);
  };
  const tick = async () => {
    clearTimeout(timer);
    timer = null;
    if (signal.aborted || stopped || !isSignedIn()) return;
    if (running) { again = true; return; }
    running = true;
    try {
      if ((await fn()) === STOP_POLLING) stopped = true;
      if (!document.hidden) setLive('ok', 'Live');
    } catch (e) {
      if (!isAbort(e) && !(e instanceof ApiError && e.status === 401)) {
        setLive('error', 'Reconnecting…');
        console.warn('poll failed', e);
      }
    } finally {
      running = false;
    }
    if (again) { again = false; tick(); return; }
    schedule();
  };
  const onVisibility = () => {
    if (document.hidden) { clearTimeout(timer); timer = null; } else if (!running && !stopped) tick();
  };
  document.addEventListener('visibilitychange', onVisibility);
  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  });
  return { now: tick };
}
