//! One claimed delivery, from admission to the outcome handed to the completer:
//! endpoint state and circuit checks, the endpoint's slot, the signed attempt, and
//! the state transition it leads to.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{debug, error, info, instrument, warn};
use uuid::Uuid;

use crate::db::deliveries::{Claimed, Completion};
use crate::domain::ids::{DeliveryId, EndpointId};
use crate::domain::retry::RetryPolicy;
use crate::domain::state::{transition, Count, Outcome, Transition};
use crate::telemetry::otel::SpanContext;

use super::dispatch::Attempted;
use super::gate::Admission;
use super::{Done, Worker, OPEN_CIRCUIT_MEMORY};

impl Worker {
    /// Everything that happens to one claimed delivery.
    #[instrument(skip_all, fields(delivery_id = %DeliveryId::from_uuid(d.id), endpoint_id = %EndpointId::from_uuid(d.endpoint_id), attempt = d.attempts + 1))]
    pub(super) async fn handle(
        self: Arc<Self>,
        d: Claimed,
        permit: OwnedSemaphorePermit,
        done: mpsc::Sender<Done>,
        claim_span: Option<SpanContext>,
    ) {
        let now = Utc::now();
        match d.endpoint_state.as_str() {
            "active" => {}
            "paused" => return self.give_back(&d, None, "endpoint paused").await,
            state => {
                let _ = self
                    .store
                    .bury(self.id, d.id, &format!("endpoint {state}"))
                    .await;
                self.held.forget([d.id]);
                return;
            }
        }
        let mut probe = false;
        if let Some(until) = d.circuit_open_until {
            // Open circuit: wait without spending an attempt, except for the one
            // delivery that wins the probe slot.
            if until > now {
                self.remember_open_circuit(d.endpoint_id, until);
                return self.give_back(&d, Some(until), "circuit open").await;
            }
            match self
                .store
                .take_probe(d.endpoint_id, self.cfg.circuit_probe.as_millis() as i64)
                .await
            {
                Ok(None) => probe = true,
                Ok(Some(next)) => {
                    self.remember_open_circuit(d.endpoint_id, next);
                    return self
                        .give_back(&d, Some(next), "circuit open, probe taken")
                        .await;
                }
                Err(e) => {
                    warn!(error = %e, "probe slot check failed");
                    return self
                        .give_back(
                            &d,
                            Some(now + chrono::Duration::seconds(1)),
                            "probe check failed",
                        )
                        .await;
                }
            }
        }
        // Chat formats default to one request at a time (see Format::default_in_flight).
        let cap = d.max_in_flight.or_else(|| {
            d.format()
                .ok()
                .and_then(|f| f.default_in_flight())
                .map(|n| n as i32)
        });
        let slot = match self.gates.admit(d.endpoint_id, cap, d.rate_limit).await {
            Admission::Go(slot) => slot,
            Admission::Later(at) => {
                return self
                    .give_back(
                        &d,
                        Some(at),
                        "endpoint at its in-flight or rate limit, or paced by the receiver",
                    )
                    .await
            }
        };
        let secrets = match self.store.signing_secrets(
            d.endpoint_id,
            &d.secret_enc,
            d.prev_secret_enc.as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                // Fail closed: never send unsigned. Retry later; an operator must fix the key.
                error!(error = %e, "cannot decrypt the endpoint secret");
                return self
                    .give_back(
                        &d,
                        Some(now + chrono::Duration::seconds(60)),
                        "secret does not decrypt",
                    )
                    .await;
            }
        };
        // A FIFO head of a batching endpoint takes the deliveries queued right
        // behind it (docs/fifo.md); they share this attempt's outcome.
        let batch = match d.batched() {
            false => None,
            true => match self.store.fifo_batch(self.id, &d).await {
                Ok(Some(b)) => Some(b),
                Ok(None) => {
                    // The lease was rescued meanwhile: another worker owns it now.
                    self.held.forget([d.id]);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "could not form the FIFO batch");
                    return self
                        .give_back(
                            &d,
                            Some(now + chrono::Duration::seconds(1)),
                            "batch not formed",
                        )
                        .await;
                }
            },
        };
        let attempted = match self.preparer.prepare(&d, batch.as_ref()).await {
            Ok(out) => {
                self.dispatcher
                    .send(&d, &out, &secrets, claim_span.as_ref())
                    .await
            }
            // Nothing to send: the outcome is decided here (see domain::state).
            Err(outcome) => Attempted::without_request(outcome, now),
        };
        if let Some(wait) = attempted.pause {
            // The receiver's bucket is empty (or it answered 429): hold this
            // endpoint's next requests here until it refills, before this slot
            // is freed, so the next one cannot slip out first.
            self.gates.pace(d.endpoint_id, wait);
        }
        // The endpoint's slot bounds requests open at the receiver, and this one
        // is over: free it now. The process-wide permit, which bounds deliveries
        // whose outcome is not yet durable, travels on to the completer. (Holding
        // the slot until the completion commits capped one endpoint at
        // max_in_flight per commit latency: about 1,600/s draining a 1 M backlog.)
        drop(slot);
        let attempt_span = attempted.span.clone();
        let mut completion = self.decide(&d, attempted);
        completion.probe = probe;
        let members = batch.map(|b| b.members(d.id)).unwrap_or_default();
        completion.members = members.iter().map(|(id, _)| *id).collect();
        let gone = completion.status == "dead" && completion.status_code == Some(410);
        let _ = done
            .send(Done {
                completion,
                gone,
                endpoint_id: d.endpoint_id,
                event_id: d.event_id,
                members,
                attempt_span,
                tenant: d.tenant,
                round_base: d.round_base,
                _permit: permit,
            })
            .await;
    }

    /// Endpoints whose rows the next claim leaves alone: those at their in-flight
    /// cap here, and those whose circuit is open (their rows would only be claimed
    /// and put back, two writes each, until the next probe is due).
    pub(super) fn skipped_endpoints(&self) -> Vec<Uuid> {
        let mut skip = self.gates.saturated();
        if let Ok(mut open) = self.open_circuits.lock() {
            let now = Utc::now();
            open.retain(|_, until| *until > now);
            skip.extend(open.keys().copied());
        }
        skip
    }

    fn remember_open_circuit(&self, endpoint: Uuid, until: chrono::DateTime<Utc>) {
        let cap = Utc::now() + chrono::Duration::from_std(OPEN_CIRCUIT_MEMORY).unwrap_or_default();
        if let Ok(mut open) = self.open_circuits.lock() {
            open.insert(endpoint, until.min(cap));
        }
    }

    fn policy_for(&self, d: &Claimed) -> RetryPolicy {
        let base = self.cfg.retry;
        RetryPolicy {
            base: d
                .retry_base_ms
                .map(|ms| Duration::from_millis(ms as u64))
                .unwrap_or(base.base),
            cap: d
                .retry_cap_ms
                .map(|ms| Duration::from_millis(ms as u64))
                .unwrap_or(base.cap),
            max_attempts: d
                .max_attempts
                .map(|m| m as u32)
                .unwrap_or(base.max_attempts),
        }
    }

    fn decide(&self, d: &Claimed, a: Attempted) -> Completion {
        let attempt = d.attempts + 1;
        let policy = self.policy_for(d);
        let unit: f64 = rand::thread_rng().gen();
        let count = Count {
            attempts: attempt as u32,
            round_base: d.round_base as u32,
            rate_limited: d.rate_limited as u32,
        };
        let t = transition(count, &a.outcome, &policy, Utc::now(), unit);
        let (status, next_attempt_at) = match t {
            Transition::Succeeded => ("succeeded", None),
            Transition::Skipped => ("skipped", None),
            Transition::Retry { at } | Transition::Deferred { at } => ("pending", Some(at)),
            Transition::Dead | Transition::Gone => ("dead", None),
        };
        let (code, error) = match &a.outcome {
            Outcome::Delivered { status } => (Some(*status as i32), None),
            Outcome::Failed { status, error, .. } => {
                (status.map(|s| s as i32), Some(error.clone()))
            }
            Outcome::RateLimited { status, error, .. } => {
                (Some(*status as i32), Some(error.clone()))
            }
            Outcome::Refused { error } => (None, Some(error.clone())),
            Outcome::Cancelled => (None, Some("transformation: cancelled (skipped)".into())),
        };
        let deferred = matches!(t, Transition::Deferred { .. });
        let outcome_label = match t {
            Transition::Succeeded => "succeeded",
            Transition::Skipped => "skipped",
            Transition::Retry { .. } => "retrying",
            Transition::Deferred { .. } => "rate_limited",
            Transition::Dead | Transition::Gone => "dead",
        };
        metrics::counter!("hookit_deliveries_total", "outcome" => outcome_label, "endpoint_id" => EndpointId::from_uuid(d.endpoint_id).to_string()).increment(1);
        metrics::histogram!("hookit_attempt_duration_seconds").record(a.duration.as_secs_f64());
        match t {
            Transition::Succeeded => debug!(status = ?code, "delivered"),
            Transition::Skipped => debug!("cancelled by the endpoint's transformation; skipped"),
            // The error is the engine's words and a line number, never the payload.
            Transition::Dead if !a.outcome.was_sent() => {
                warn!(
                    error = error.as_deref().unwrap_or(""),
                    "transformation failed; dead-lettered without sending"
                )
            }
            Transition::Retry { at } => {
                warn!(status = ?code, error = error.as_deref().unwrap_or(""), next_attempt_at = %at, "attempt failed; will retry")
            }
            // A state transition that spends nothing: pending again at the
            // receiver's retry-after (see domain::state).
            Transition::Deferred { at } => {
                info!(next_attempt_at = %at, rate_limited = d.rate_limited + 1, "rate limited; rescheduled without spending an attempt")
            }
            Transition::Dead => {
                error!(status = ?code, error = error.as_deref().unwrap_or(""), "attempts exhausted; dead-lettered")
            }
            Transition::Gone => {
                error!("receiver answered 410 Gone; dead-lettered and disabling the endpoint")
            }
        }
        Completion {
            id: d.id,
            attempt,
            status,
            next_attempt_at,
            succeeded: a.outcome.is_success(),
            status_code: code,
            error,
            response_body: a.response_excerpt,
            started_at: a.started_at,
            duration_ms: a.duration.as_millis().min(i32::MAX as u128) as i32,
            probe: false,
            rate_limited: d.rate_limited + i32::from(deferred),
            deferred,
            sent: a.outcome.was_sent(),
            members: Vec::new(),
        }
    }

    async fn give_back(&self, d: &Claimed, at: Option<chrono::DateTime<Utc>>, why: &'static str) {
        debug!(reason = why, "released without an attempt");
        let released = self.store.release(self.id, &[d.id], at).await;
        // Given back, or (if that failed) left to its lease: not ours to renew.
        self.held.forget([d.id]);
        match released {
            // The claim loop may be asleep past this new due time: let it recompute.
            Ok(_) if at.is_some() => self.wake.notify_one(),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "release failed; the lease will expire and be rescued"),
        }
    }
}
