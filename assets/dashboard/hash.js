// The address bar: views live in the hash (#/path?query), so filters can be
// bookmarked and shared. Reading it, and rewriting its query in place.

import { qs } from './api.js';

/** The hash as decoded path segments and query parameters (#/deliveries/{id}?status=dead). */
export function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/endpoints';
  const qi = raw.indexOf('?');
  const path = qi >= 0 ? raw.slice(0, qi) : raw;
  const query = qi >= 0 ? raw.slice(qi + 1) : '';
  const decode = (seg) => { try { return decodeURIComponent(seg); } catch { return seg; } };
  return { parts: path.split('/').filter(Boolean).map(decode), params: new URLSearchParams(query) };
}

/** Replace the hash query without adding history entries or re-routing. */
export function replaceHashQuery(base, params) {
  const str = qs(params);
  const hash = `#${base}${str}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
}
