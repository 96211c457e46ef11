// The only module that talks to the server: the fetch wrapper for the JSON API
// under /v1, its problem-details errors, and the API key it authenticates with.
//
// The key lives in sessionStorage only (never in a URL), so it is forgotten when
// the tab closes. It is sent as a bearer token and never logged.

const KEY_STORAGE = 'hookit.apiKey';

/** Rows per page the dashboard asks the API for (lists never load the full history). */
export const PAGE_SIZE = 50;

let key = null;
try { key = sessionStorage.getItem(KEY_STORAGE); } catch { key = null; }

// What to do when the server refuses the key. The entry module signs out; it is a
// hook (not an import) so that this module knows nothing about the UI.
let onUnauthorized = () => {};

/** Set what happens when a request answers 401 (the key was revoked or rotated). */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** Whether an API key is in use (pollers and error reports stop without one). */
export function isSignedIn() { return Boolean(key); }

/** Use `k` for the following requests (null: none), without storing it yet. */
export function useKey(k) { key = k; }

/** Keep the key in use for this tab, once the server has accepted it. */
export function rememberKey() {
  try { sessionStorage.setItem(KEY_STORAGE, key); } catch { /* private mode: keep in memory */ }
}

/** Forget the key, in memory and in the tab's storage. */
export function forgetKey() {
  key = null;
  try { sessionStorage.removeItem(KEY_STORAGE); } catch { /* ignore */ }
}

/** A failed request, carrying the problem-details `title` and `detail` the API sent (RFC 9457). */
export class ApiError extends Error {
  constructor(status, problem) {
    const p = problem && typeof problem === 'object' ? problem : {};
    super(p.detail || p.title || `Request failed (HTTP ${status})`);
    this.name = 'ApiError';
    this.status = status;
    this.title = p.title || (status ? `Request failed (HTTP ${status})` : 'Request failed');
    this.detail = p.detail || '';
    this.type = p.type || null;
  }
}

/**
 * Call the API with the current key; resolves with the parsed JSON body.
 * Throws ApiError (status 0: the server could not be reached), or the AbortError
 * of `signal` untouched so views can tell "navigated away" from a failure.
 */
export async function api(path, { method = 'GET', body, signal, signOutOn401 = true } = {}) {
  if (!key) throw new ApiError(401, { title: 'Not signed in' });
  const headers = { Authorization: 'Bearer ' + key, Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, cache: 'no-store', credentials: 'omit',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Network error', detail: 'Could not reach the HookIt server.' });
  }
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  if (res.status === 401 && signOutOn401) {
    onUnauthorized();
    throw new ApiError(401, data || { title: 'Unauthorized' });
  }
  if (!res.ok) {
    throw new ApiError(res.status, data && typeof data === 'object' ? data : { title: res.statusText || `HTTP ${res.status}`, detail: text.slice(0, 300) });
  }
  return data;
}

/** A query string from `params`, leaving out empty values ("" when none are left). */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const str = q.toString();
  return str ? `?${str}` : '';
}

/** Whether `e` is a request cancelled by its view's AbortSignal (not worth reporting). */
export function isAbort(e) { return e && e.name === 'AbortError'; }
