//! Whether the database is reachable, as this process last found out, so that
//! requests fail fast during an outage instead of each waiting out the pool's
//! connect timeout.
//!
//! States: *up* (the default) and *down*. A call that fails with an
//! "unavailable" error ([`crate::error::is_unavailable`]), or a connection that is
//! slow to come, only asks for a [probe](Availability::suspect): one fresh
//! connection outside the pool, with a short timeout. A failed probe marks the
//! database down, and the prober then keeps trying every [`PROBE_EVERY`] until a
//! connection succeeds, which marks it up again. A lone broken connection (a
//! backend killed by an administrator) therefore never fails anything fast: the
//! probe connects and nothing changes.
//!
//! While down, the API answers 503 with Retry-After without touching the pool,
//! `/readyz` says so at once, and ingestion's writers refuse queued batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;

/// How often a down database is probed (bounds the recovery delay).
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Longest one probe waits for a connection (an unreachable host, not a refusal).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The shared up/down state of one process's database.
#[derive(Clone, Debug)]
pub struct Availability {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: PgConnectOptions,
    /// `Some(since)` while down.
    state: watch::Sender<Option<Instant>>,
    probing: AtomicBool,
}

impl Availability {
    /// Up, probing with `opts` when in doubt.
    pub fn new(opts: PgConnectOptions) -> Self {
        let (state, _) = watch::channel(None);
        metrics::gauge!("hookit_database_up").set(1.0);
        Self {
            inner: Arc::new(Inner {
                opts,
                state,
                probing: AtomicBool::new(false),
            }),
        }
    }

    /// How long the database has been known down; `None` while up.
    pub fn down_for(&self) -> Option<Duration> {
        self.inner.state.borrow().map(|since| since.elapsed())
    }

    /// Whether the database is known down.
    pub fn is_down(&self) -> bool {
        self.inner.state.borrow().is_some()
    }

    /// Resolves once the database is known down (at once if it already is).
    pub async fn went_down(&self) {
        let mut rx = self.inner.state.subscribe();
        // Err only if the sender is gone, which it cannot be while `self` lives.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Reports a failed call: an "unavailable" error asks for a probe.
    pub fn report(&self, e: &crate::error::Error) {
        if matches!(e, crate::error::Error::Unavailable(_)) {
            self.suspect();
        }
    }

    /// Asks for a probe, unless one is running. Never waits: the probe runs in the
    /// background, and its verdict reaches callers through [`Self::went_down`].
    pub fn suspect(&self) {
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.probe_loop().await });
    }

    /// One probe, then (if it failed) one every [`PROBE_EVERY`] until one succeeds.
    async fn probe_loop(self) {
        loop {
            let reached = self.probe().await;
            match (reached, self.is_down()) {
                (Ok(()), true) => {
                    let down_for = self.down_for().unwrap_or_default();
                    tracing::info!(
                        down_ms = down_for.as_millis() as u64,
                        "database reachable again"
                    );
                    self.set(None);
                }
                (Ok(()), false) => {}
                (Err(e), false) => {
                    tracing::warn!(error = %e, "database unreachable; failing fast until a probe connects");
                    self.set(Some(Instant::now()));
                }
                (Err(_), true) => {}
            }
            if !self.is_down() {
                // Reports that came in while this probe ran are answered by it.
                self.inner.probing.store(false, Ordering::Release);
                return;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    async fn probe(&self) -> Result<(), sqlx::Error> {
        let connect = async {
            let mut c = self.inner.opts.connect().await?;
            sqlx::query("SELECT 1").execute(&mut c).await?;
            c.close().await
        };
        match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    fn set(&self, down: Option<Instant>) {
        metrics::gauge!("hookit_database_up").set(if down.is_some() { 0.0 } else { 1.0 });
        self.inner.state.send_replace(down);
    }
}
