// A cache of endpoints by id, shared by the views, so that delivery rows, filters
// and detail pages can show an endpoint's URL where the API only gives its id.

import { api, qs } from './api.js';
import { shortId } from './format.js';

/** id -> Endpoint. Views update it as they load endpoints; sign-out clears it. */
export const endpointCache = new Map();

/** Fetch (and cache) endpoints, up to `maxPages` pages. Used to label rows and fill selects. */
export async function loadEndpointsCache(signal, maxPages = 10) {
  const all = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i++) {
    const res = await api(`/v1/endpoints${qs({ limit: 100, cursor })}`, { signal });
    all.push(...(res.data || []));
    cursor = res.next_cursor;
    if (!cursor) break;
  }
  // Refilled in place (not replaced), so every importer sees the same Map.
  endpointCache.clear();
  for (const ep of all) endpointCache.set(ep.id, ep);
  return all;
}

/** A short label for an endpoint id: host and path of its URL once cached, else the short id. */
export function endpointLabel(id) {
  const ep = endpointCache.get(id);
  if (!ep) return shortId(id);
  try {
    const u = new URL(ep.url);
    const path = u.pathname === '/' ? '' : u.pathname;
    return `${u.host}${path}`;
  } catch {
    return ep.url;
  }
}
