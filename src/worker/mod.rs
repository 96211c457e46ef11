//! The delivery worker: claim → dispatch → transition → write.
//!
//! One claim loop per process leases batches of due deliveries (sized by free
//! in-flight slots), a task per delivery sends it, and one completer writes the
//! outcomes back in batches. A process-wide in-flight permit is only freed once
//! its outcome is durable, so a slow database pushes back on claiming instead of
//! piling up work; an endpoint's own slot (see [`gate`]) is freed as soon as its
//! request ends, since it only bounds requests open at that receiver.

mod background;
pub mod client;
mod completer;
mod delivery;
pub mod dispatch;
pub mod gate;
pub mod lease;
pub mod prepare;
pub mod resolver;
mod trace;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::config::Config;
use crate::db::deliveries::Completion;
use crate::db::Store;
use crate::domain::retry::RetryPolicy;
use crate::telemetry::otel::{self, SpanContext};
use crate::transform::Transformer;
use dispatch::Dispatcher;
use gate::Gates;

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
    /// The other deliveries of a FIFO batch, with their event ids: they take
    /// this outcome, and get its operational webhooks too.
    members: Vec<(Uuid, Uuid)>,
    /// The attempt's span, for the completion's span to link to.
    attempt_span: Option<SpanContext>,
    tenant: String,
    round_base: i32,
    _permit: OwnedSemaphorePermit,
}

/// A running worker.
pub struct Worker {
    id: Uuid,
    store: Store,
    dispatcher: Dispatcher,
    preparer: prepare::Preparer,
    cfg: WorkerConfig,
    gates: Gates,
    wake: Arc<Notify>,
    /// Endpoints this worker saw with an open circuit, and until when it leaves
    /// their rows in the queue (see [`Worker::skipped_endpoints`]).
    open_circuits: std::sync::Mutex<std::collections::HashMap<Uuid, chrono::DateTime<Utc>>>,
    /// Deliveries leased to this worker and not yet written back or given back.
    held: lease::Held,
}

/// Longest a worker trusts its own memory of an open circuit: another worker's
/// successful probe may have closed it since.
const OPEN_CIRCUIT_MEMORY: Duration = Duration::from_secs(30);

impl Worker {
    /// A worker with a fresh identity (its lease owner id).
    pub fn new(
        store: Store,
        dispatcher: Dispatcher,
        transformer: Transformer,
        cfg: WorkerConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            preparer: prepare::Preparer::new(store.clone(), transformer),
            store,
            dispatcher,
            gates: Gates::new(cfg.endpoint_concurrency),
            cfg,
            wake,
            open_circuits: Default::default(),
            held: Default::default(),
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
        let completer = tokio::spawn(this.clone().complete_loop(done_rx, sem.clone()));
        let listener = tokio::spawn(this.clone().listen_loop(background.clone()));
        let rescuer = tokio::spawn(this.clone().rescue_loop(background.clone()));
        let renewer = tokio::spawn(this.clone().renew_loop(background.clone()));
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
            let claimed_at = std::time::Instant::now();
            let span = trace::claim(this.id, wanted);
            let claimed = this
                .store
                .claim(
                    this.id,
                    wanted as i64,
                    this.cfg.lease.as_millis() as i64,
                    &skip,
                )
                .instrument(span.clone())
                .await;
            if let Ok(c) = &claimed {
                span.record("hookit.claim.got", c.len());
            }
            let claimed = match claimed {
                Ok(c) => {
                    db_backoff = Duration::from_millis(100);
                    this.held
                        .track(c.iter().map(|d| d.id), claimed_at, this.cfg.lease);
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
            // Each attempt links to the claim that leased its delivery.
            let claim_span = otel::span_context(&span);
            for (d, permit) in claimed.into_iter().zip(permits.drain(..)) {
                let this = this.clone();
                let tx = done_tx.clone();
                let claim_span = claim_span.clone();
                tasks.spawn(async move { this.handle(d, permit, tx, claim_span).await });
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
        let _ = renewer.await;
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
}

/// Runs a worker with the given configuration until `shutdown`.
pub async fn run(
    cfg: &Config,
    store: Store,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let dispatcher = Dispatcher::new(cfg.ssrf_policy(), cfg.connect_timeout, cfg.request_timeout)?;
    let worker = Worker::new(
        store,
        dispatcher,
        cfg.transformer()?,
        WorkerConfig::from_config(cfg),
        wake,
    );
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
