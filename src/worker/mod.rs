//! The delivery worker: claim → dispatch → transition → write.
//!
//! One claim loop per process leases batches of due deliveries (sized by free
//! in-flight slots), a task per delivery sends it, and one completer writes the
//! outcomes back in batches. A process-wide in-flight permit is only freed once
//! its outcome is durable, so a slow database pushes back on claiming instead of
//! piling up work; an endpoint's own slot (see [`gate`]) is freed as soon as its
//! request ends, since it only bounds requests open at that receiver.

pub mod client;
pub mod dispatch;
pub mod gate;
pub mod resolver;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, instrument, warn, Instrument};
use uuid::Uuid;

use crate::config::Config;
use crate::db::deliveries::{Claimed, Completion};
use crate::db::ops::OPS_TENANT;
use crate::db::{Store, WORK_CHANNEL};
use crate::domain::ids::{DeliveryId, EndpointId};
use crate::domain::retry::RetryPolicy;
use crate::domain::state::{transition, Transition};
use dispatch::{Attempted, Dispatcher};
use gate::{Admission, Gates};

/// Largest batch one claim takes.
const MAX_CLAIM: usize = 128;
/// Under load, the smallest claim worth a transaction (see [`GATHER`]).
const MIN_CLAIM: usize = 32;
/// How long a busy claim loop (or the completer) waits to gather a bigger batch.
const GATHER: Duration = Duration::from_millis(2);
/// Longest sleep without new work (fallback if a notification is lost).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Deliveries in flight.
    pub concurrency: usize,
    /// Default in-flight cap per endpoint.
    pub endpoint_concurrency: usize,
    /// Lease length.
    pub lease: Duration,
    /// Default retry policy.
    pub retry: RetryPolicy,
    /// Grace period on shutdown.
    pub shutdown_grace: Duration,
    /// Consecutive failures that open an endpoint's circuit.
    pub circuit_threshold: i32,
    /// First probe interval of an open circuit.
    pub circuit_probe: Duration,
    /// Whether to send operational webhooks (an ops endpoint is configured).
    pub ops: bool,
}

impl WorkerConfig {
    /// From the process configuration.
    pub fn from_config(c: &Config) -> Self {
        Self {
            concurrency: c.worker_concurrency,
            endpoint_concurrency: c.endpoint_concurrency,
            lease: c.lease,
            retry: c.retry,
            shutdown_grace: c.shutdown_grace,
            circuit_threshold: c.circuit_threshold,
            circuit_probe: c.circuit_probe,
            ops: c.ops_webhook_url.is_some(),
        }
    }
}

/// A finished attempt on its way to the completer, holding its slot until written.
struct Done {
    completion: Completion,
    gone: bool,
    endpoint_id: Uuid,
    event_id: Uuid,
    tenant: String,
    round_base: i32,
    _permit: OwnedSemaphorePermit,
}

/// A running worker.
pub struct Worker {
    id: Uuid,
    store: Store,
    dispatcher: Dispatcher,
    cfg: WorkerConfig,
    gates: Gates,
    wake: Arc<Notify>,
    /// Endpoints this worker saw with an open circuit, and until when it leaves
    /// their rows in the queue (see [`Worker::skipped_endpoints`]).
    open_circuits: std::sync::Mutex<std::collections::HashMap<Uuid, chrono::DateTime<Utc>>>,
}

/// Longest a worker trusts its own memory of an open circuit: another worker's
/// successful probe may have closed it since.
const OPEN_CIRCUIT_MEMORY: Duration = Duration::from_secs(30);

impl Worker {
    /// A worker with a fresh identity (its lease owner id).
    pub fn new(store: Store, dispatcher: Dispatcher, cfg: WorkerConfig, wake: Arc<Notify>) -> Self {
        Self {
            id: Uuid::new_v4(),
            store,
            dispatcher,
            gates: Gates::new(cfg.endpoint_concurrency),
            cfg,
            wake,
            open_circuits: Default::default(),
        }
    }

    /// This worker's lease owner id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Runs until `shutdown`, then stops claiming, lets in-flight deliveries finish
    /// within the grace period, and gives back whatever is still leased.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let this = Arc::new(self);
        info!(worker_id = %this.id, concurrency = this.cfg.concurrency, "worker started");
        let sem = Arc::new(Semaphore::new(this.cfg.concurrency));
        let (done_tx, done_rx) = mpsc::channel::<Done>(this.cfg.concurrency + 1);
        let background = CancellationToken::new();
        let completer = tokio::spawn(this.clone().complete_loop(done_rx));
        let listener = tokio::spawn(this.clone().listen_loop(background.clone()));
        let rescuer = tokio::spawn(this.clone().rescue_loop(background.clone()));
        let mut tasks = JoinSet::new();
        let mut db_backoff = Duration::from_millis(100);
        let mut busy = false;

        'claiming: loop {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                p = sem.clone().acquire_owned() => p?,
                _ = shutdown.cancelled() => break 'claiming,
            };
            let mut permits = vec![first];
            take_permits(&sem, &mut permits);
            if busy && permits.len() < MIN_CLAIM {
                // Under load, slots come back a few at a time; waiting a moment for
                // more turns many tiny claims (a transaction each) into a few big ones.
                let gather = tokio::time::Instant::now() + GATHER;
                while permits.len() < MIN_CLAIM {
                    match tokio::time::timeout_at(gather, sem.clone().acquire_owned()).await {
                        Ok(Ok(p)) => {
                            permits.push(p);
                            take_permits(&sem, &mut permits);
                        }
                        _ => break,
                    }
                }
            }
            let wanted = permits.len();
            let skip = this.skipped_endpoints();
            let claimed = match this
                .store
                .claim(
                    this.id,
                    wanted as i64,
                    this.cfg.lease.as_millis() as i64,
                    &skip,
                )
                .await
            {
                Ok(c) => {
                    db_backoff = Duration::from_millis(100);
                    c
                }
                Err(e) => {
                    this.store.availability().report(&e);
                    warn!(error = %e, "claim failed; backing off");
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(db_backoff) => {}
                        _ = shutdown.cancelled() => break 'claiming,
                    }
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let got = claimed.len();
            metrics::histogram!("hookit_claim_batch_size").record(got as f64);
            for (d, permit) in claimed.into_iter().zip(permits.drain(..)) {
                let this = this.clone();
                let tx = done_tx.clone();
                tasks.spawn(async move { this.handle(d, permit, tx).await });
            }
            drop(permits);
            busy = got == wanted;
            if got > 0 && got < wanted {
                // Nearly caught up: nap briefly (or until new work is announced)
                // rather than spend a query on the next due time.
                tokio::select! {
                    _ = this.wake.notified() => {}
                    _ = tokio::time::sleep(GATHER * 10) => {}
                    _ = shutdown.cancelled() => break 'claiming,
                }
            } else if got == 0 {
                // Caught up: sleep until new work is announced, the next retry is
                // due, or the idle poll fires (in case a notification was lost).
                let sleep = match this.store.next_due_at().await {
                    Ok(Some(at)) => (at - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::from_millis(50))
                        .clamp(Duration::from_millis(5), IDLE_POLL),
                    _ => IDLE_POLL,
                };
                tokio::select! {
                    _ = this.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                    _ = shutdown.cancelled() => break 'claiming,
                }
            }
        }

        info!(worker_id = %this.id, in_flight = tasks.len(), "worker stopping: no new claims");
        let drained = tokio::time::timeout(this.cfg.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            warn!(worker_id = %this.id, "grace period over; abandoning in-flight attempts");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        drop(done_tx);
        let _ = completer.await;
        background.cancel();
        let _ = listener.await;
        let _ = rescuer.await;
        match this.store.release_all(this.id).await {
            Ok(n) if n > 0 => info!(released = n, "released leased deliveries back to the queue"),
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "could not release leases; they will expire and be rescued")
            }
        }
        info!(worker_id = %this.id, "worker stopped");
        Ok(())
    }

    /// Everything that happens to one claimed delivery.
    #[instrument(skip_all, fields(delivery_id = %DeliveryId::from_uuid(d.id), endpoint_id = %EndpointId::from_uuid(d.endpoint_id), attempt = d.attempts + 1))]
    async fn handle(
        self: Arc<Self>,
        d: Claimed,
        permit: OwnedSemaphorePermit,
        done: mpsc::Sender<Done>,
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
        let slot = match self
            .gates
            .admit(d.endpoint_id, d.max_in_flight, d.rate_limit)
            .await
        {
            Admission::Go(slot) => slot,
            Admission::Later(at) => {
                return self
                    .give_back(&d, Some(at), "endpoint at its in-flight or rate limit")
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
        let attempted = self.dispatcher.send(&d, &secrets).await;
        // The endpoint's slot bounds requests open at the receiver, and this one
        // is over: free it now. The process-wide permit, which bounds deliveries
        // whose outcome is not yet durable, travels on to the completer. (Holding
        // the slot until the completion commits capped one endpoint at
        // max_in_flight per commit latency: about 1,600/s draining a 1 M backlog.)
        drop(slot);
        let mut completion = self.decide(&d, attempted);
        completion.probe = probe;
        let gone = completion.status == "dead" && completion.status_code == Some(410);
        let _ = done
            .send(Done {
                completion,
                gone,
                endpoint_id: d.endpoint_id,
                event_id: d.event_id,
                tenant: d.tenant,
                round_base: d.round_base,
                _permit: permit,
            })
            .await;
    }

    /// Endpoints whose rows the next claim leaves alone: those at their in-flight
    /// cap here, and those whose circuit is open (their rows would only be claimed
    /// and put back, two writes each, until the next probe is due).
    fn skipped_endpoints(&self) -> Vec<Uuid> {
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
        let t = transition(
            attempt as u32,
            d.round_base as u32,
            &a.outcome,
            &policy,
            Utc::now(),
            unit,
        );
        let (status, next_attempt_at) = match t {
            Transition::Succeeded => ("succeeded", None),
            Transition::Retry { at } => ("pending", Some(at)),
            Transition::Dead | Transition::Gone => ("dead", None),
        };
        let (code, error) = match &a.outcome {
            crate::domain::state::Outcome::Delivered { status } => (Some(*status as i32), None),
            crate::domain::state::Outcome::Failed { status, error, .. } => {
                (status.map(|s| s as i32), Some(error.clone()))
            }
        };
        let outcome_label = match t {
            Transition::Succeeded => "succeeded",
            Transition::Retry { .. } => "retrying",
            Transition::Dead | Transition::Gone => "dead",
        };
        metrics::counter!("hookit_deliveries_total", "outcome" => outcome_label, "endpoint_id" => EndpointId::from_uuid(d.endpoint_id).to_string()).increment(1);
        metrics::histogram!("hookit_attempt_duration_seconds").record(a.duration.as_secs_f64());
        match t {
            Transition::Succeeded => debug!(status = ?code, "delivered"),
            Transition::Retry { at } => {
                warn!(status = ?code, error = error.as_deref().unwrap_or(""), next_attempt_at = %at, "attempt failed; will retry")
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
        }
    }

    async fn give_back(&self, d: &Claimed, at: Option<chrono::DateTime<Utc>>, why: &'static str) {
        debug!(reason = why, "released without an attempt");
        match self.store.release(self.id, &[d.id], at).await {
            // The claim loop may be asleep past this new due time: let it recompute.
            Ok(_) if at.is_some() => self.wake.notify_one(),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "release failed; the lease will expire and be rescued"),
        }
    }

    /// Writes outcomes in batches: whatever has arrived by the time the previous
    /// write finished goes into the next statement.
    async fn complete_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Done>) {
        let mut batch: Vec<Done> = Vec::with_capacity(512);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let gather = tokio::time::Instant::now() + GATHER;
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    // A small batch waits a moment for company: one statement
                    // for many outcomes is what keeps Postgres CPU per delivery low.
                    Err(_) if batch.len() < MIN_CLAIM => {
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
            loop {
                match self
                    .store
                    .complete(
                        self.id,
                        &completions,
                        self.cfg.circuit_threshold,
                        self.cfg.circuit_probe.as_millis() as i64,
                    )
                    .await
                {
                    Ok(done) => {
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
            let base = serde_json::json!({
                "tenant": d.tenant,
                "delivery_id": DeliveryId::from_uuid(c.id).to_string(),
                "event_id": crate::domain::ids::EventId::from_uuid(d.event_id).to_string(),
                "endpoint_id": EndpointId::from_uuid(d.endpoint_id).to_string(),
                "attempts": c.attempt,
                "last_status_code": c.status_code,
                "last_error": c.error,
            });
            if c.status == "dead" {
                events.push(("delivery.dead", base.clone()));
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
            // Recovered: delivered after at least one failed attempt in this round.
            if c.succeeded && c.attempt > d.round_base + 1 {
                events.push(("delivery.recovered", base));
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

    /// Wakes the claim loop on `NOTIFY hookit_work`.
    async fn listen_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(self.store.pool())
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    debug!(error = %e, "LISTEN connection failed; retrying");
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
                }
            };
            if listener.listen(WORK_CHANNEL).await.is_err() {
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
            }
            loop {
                tokio::select! {
                    r = listener.recv() => match r {
                        Ok(_) => self.wake.notify_one(),
                        Err(_) => {
                            // Notifications may have been lost while disconnected.
                            self.wake.notify_one();
                            break;
                        }
                    },
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// Periodically returns expired leases to the queue and un-holds resumed
    /// endpoints' deliveries.
    async fn rescue_loop(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.cfg.lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
            match self.store.rescue_expired().await {
                Ok(n) if n > 0 => {
                    warn!(rescued = n, "rescued deliveries whose lease expired");
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "lease rescue failed"),
            }
            if let Ok(n) = self.store.unhold_active().await {
                if n > 0 {
                    self.wake.notify_one();
                }
            }
        }
    }
}

/// Runs a worker with the given configuration until `shutdown`.
pub async fn run(
    cfg: &Config,
    store: Store,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let dispatcher = Dispatcher::new(cfg.ssrf_policy(), cfg.connect_timeout, cfg.request_timeout)?;
    let worker = Worker::new(store, dispatcher, WorkerConfig::from_config(cfg), wake);
    worker
        .run(shutdown)
        .instrument(tracing::info_span!("worker"))
        .await
}

/// Adds every immediately available permit, up to a claim's size.
fn take_permits(sem: &Arc<Semaphore>, permits: &mut Vec<OwnedSemaphorePermit>) {
    while permits.len() < MAX_CLAIM {
        match sem.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
}
