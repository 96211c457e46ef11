// Pausing and resuming an endpoint, shared by the endpoint list and the
// endpoint page so both say the same thing and keep the endpoint cache current.

import { api } from '../api.js';
import { endpointCache } from '../endpoint-cache.js';
import { announce, withBusy } from '../feedback.js';

/** Whether the endpoint is held (paused or disabled), so its action is Resume. */
export function isHeld(ep) {
  return ep.status === 'paused' || ep.status === 'disabled';
}

/** Pause (`pause` true) or resume `ep` from `button`; resolves with the updated endpoint, or undefined when it failed (reported). */
export async function setEndpointPaused(ep, pause, button) {
  return withBusy(button, pause ? 'Pausing the endpoint' : 'Resuming the endpoint', async () => {
    const updated = await api(`/v1/endpoints/${encodeURIComponent(ep.id)}/${pause ? 'pause' : 'resume'}`, { method: 'POST', body: {} });
    if (updated && updated.id) endpointCache.set(updated.id, updated);
    announce(pause ? `Paused ${ep.url}. Deliveries are held until you resume it.` : `Resumed ${ep.url}.`);
    return updated && updated.id ? updated : ep;
  });
}
