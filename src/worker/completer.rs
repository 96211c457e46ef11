//! The completer: writes attempts' outcomes back in batches, and sends the
//! operational webhooks a written batch calls for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tracing::{error, warn, Instrument};
use uuid::Uuid;

use crate::db::deliveries::Completion;
use crate::db::ops::OPS_TENANT;
use crate::domain::ids::{DeliveryId, EndpointId};

use super::{Done, Worker, GATHER, MIN_CLAIM};

/// Most links a completion span carries (the OpenTelemetry SDK's default
/// `max_links_per_span`).
const MAX_LINKS: usize = 128;

impl Worker {
    /// Whether attempts other than the `waiting` outcomes are still running: every
    /// slot taken that is not one of those belongs to a claim, a request or an
    /// outcome on its way here.
    fn others_running(&self, slots: &Semaphore, waiting: usize) -> bool {
        self.cfg.concurrency - slots.available_permits() > waiting
    }

    /// Writes outcomes in batches: whatever has arrived by the time the previous
    /// write finished goes into the next statement.
    pub(super) async fn complete_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Done>,
        slots: Arc<Semaphore>,
    ) {
        let mut batch: Vec<Done> = Vec::with_capacity(512);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let gather = tokio::time::Instant::now() + GATHER;
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    // A small batch waits a moment for company: one statement
                    // for many outcomes is what keeps Postgres CPU per delivery low.
                    // Not when no other attempt is running: none will come, and
                    // every outcome not yet durable is one a crash would repeat.
                    Err(_)
                        if batch.len() < MIN_CLAIM
                            && self.others_running(&slots, batch.len() + rx.len()) =>
                    {
                        match tokio::time::timeout_at(gather, rx.recv()).await {
                            Ok(Some(d)) => batch.push(d),
                            _ => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            let completions: Vec<Completion> = batch.iter().map(|d| d.completion.clone()).collect();
            if let Ok(mut open) = self.open_circuits.lock() {
                for d in batch.iter().filter(|d| d.completion.succeeded) {
                    open.remove(&d.endpoint_id);
                }
            }
            let deadline = tokio::time::Instant::now() + self.cfg.lease;
            let mut backoff = Duration::from_millis(50);
            let span = super::trace::completion(self.id, completions.len());
            // The batch's span links to the attempts it writes (each in its
            // publisher's trace, sampled ones only), up to the SDK's default
            // limit of links per span: more would be dropped at export anyway.
            if !span.is_disabled() {
                for cx in batch
                    .iter()
                    .filter_map(|d| d.attempt_span.as_ref())
                    .take(MAX_LINKS)
                {
                    crate::telemetry::otel::link(&span, Some(cx));
                }
            }
            loop {
                match self
                    .store
                    .complete(
                        self.id,
                        &completions,
                        self.cfg.circuit_threshold,
                        self.cfg.circuit_probe.as_millis() as i64,
                    )
                    .instrument(span.clone())
                    .await
                {
                    Ok(done) => {
                        span.record("hookit.completion.written", done.written);
                        if (done.written as usize) < completions.len() {
                            warn!(
                                lost = completions.len() - done.written as usize,
                                "some leases were rescued by another worker before completion"
                            );
                        }
                        // New due times (retries, or deliveries a closed circuit
                        // released): the claim loop may be asleep past them.
                        if done.unheld > 0 || completions.iter().any(|c| c.status == "pending") {
                            self.wake.notify_one();
                        }
                        if done.fifo_advanced > 0 {
                            // A FIFO endpoint's next delivery is due now. Every
                            // worker may be asleep until a later retry (or the idle
                            // poll): wake this one, and the others through NOTIFY,
                            // so an ordered endpoint runs at its receiver's pace.
                            self.wake.notify_one();
                            if let Err(e) = self.store.notify_work().await {
                                warn!(error = %e, "NOTIFY after a FIFO completion failed; other workers poll");
                            }
                        }
                        if self.cfg.ops {
                            self.emit_ops(&batch, &done.opened).await;
                        }
                        break;
                    }
                    Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                        warn!(error = %e, "completion write failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => {
                        // The leases are about to expire: the deliveries will be rescued
                        // and sent again (at-least-once), never lost.
                        error!(error = %e, n = completions.len(), "giving up on a completion batch; leases will be rescued");
                        break;
                    }
                }
            }
            for d in batch.iter().filter(|d| d.gone) {
                if let Err(e) = self
                    .store
                    .disable_endpoint(d.endpoint_id, "the receiver answered 410 Gone")
                    .await
                {
                    warn!(error = %e, "could not disable endpoint after 410");
                }
            }
            // Written, lost to a rescue, or given up on: not ours to renew any more.
            self.held.forget(completions.iter().map(|c| c.id));
            // Dropping the batch frees the in-flight slots.
            batch.clear();
        }
    }

    /// Sends the operational webhooks a written batch calls for. Deliveries of the
    /// operational tenant itself never produce any (no feedback loop).
    async fn emit_ops(&self, batch: &[Done], opened: &[Uuid]) {
        let mut events = Vec::new();
        for d in batch.iter().filter(|d| d.tenant != OPS_TENANT) {
            let c = &d.completion;
            // A FIFO batch's members share its outcome, so each gets its own
            // delivery.dead / delivery.recovered, like the head.
            let deliveries = std::iter::once((c.id, d.event_id)).chain(d.members.iter().copied());
            let bases: Vec<serde_json::Value> = deliveries
                .map(|(delivery, event)| {
                    serde_json::json!({
                        "tenant": d.tenant,
                        "delivery_id": DeliveryId::from_uuid(delivery).to_string(),
                        "event_id": crate::domain::ids::EventId::from_uuid(event).to_string(),
                        "endpoint_id": EndpointId::from_uuid(d.endpoint_id).to_string(),
                        "attempts": c.attempt,
                        "last_status_code": c.status_code,
                        "last_error": c.error,
                    })
                })
                .collect();
            if c.status == "dead" {
                events.extend(bases.iter().map(|b| ("delivery.dead", b.clone())));
            }
            if d.gone {
                events.push((
                    "endpoint.disabled",
                    serde_json::json!({
                        "tenant": d.tenant,
                        "endpoint_id": EndpointId::from_uuid(d.endpoint_id).to_string(),
                        "reason": "the receiver answered 410 Gone",
                    }),
                ));
            }
            // Recovered: delivered after at least one failed attempt in this round
            // (rate-limited requests are not failures).
            if c.succeeded && c.attempt - c.rate_limited > d.round_base + 1 {
                events.extend(bases.into_iter().map(|b| ("delivery.recovered", b)));
            }
        }
        for id in opened {
            if let Some(d) = batch
                .iter()
                .find(|d| d.endpoint_id == *id && d.tenant != OPS_TENANT)
            {
                events.push((
                    "endpoint.circuit_opened",
                    serde_json::json!({
                        "tenant": d.tenant,
                        "endpoint_id": EndpointId::from_uuid(*id).to_string(),
                        "probe_in_ms": self.cfg.circuit_probe.as_millis() as u64,
                    }),
                ));
            }
        }
        for (kind, payload) in events {
            if let Err(e) = self.store.emit_ops(kind, payload).await {
                warn!(error = %e, kind, "could not emit an operational webhook");
            }
        }
    }
}
