//! The delivery change feed: which WebhookEndpoints' status (delivery figures,
//! state, circuit) the database has moved away from, fed to the controller so
//! that exactly those are reconciled.
//!
//! Every `HOOKIT_CONTROLLER_RESYNC` (60 s) the leader asks the database which
//! managed endpoints had anything written since its last look (an attempt, a
//! new or dead-lettered delivery, a change of the endpoint row) or had an
//! attempt or dead letter leave the 24-hour window, computes the figures of
//! those few, and compares them with the status in the controller's cache. Only
//! the endpoints whose status is out of date are reconciled; with nothing
//! happening, nothing is, and an endpoint that was busy a minute ago costs one
//! figures query per look until it is quiet, not a reconcile.
//!
//! The watermark is the start of the previous successful look, moved back by
//! [`write_lag`]: an attempt's row is written when the attempt ends, carrying
//! the time it started, so it can appear up to a timeout after its start. The
//! comparison with the status makes that overlap free: what was seen before
//! and is already shown triggers nothing.
//!
//! A look that fails (database unreachable) keeps the watermark, so the next
//! one covers its span too; nothing is missed, only late. A new leader, or a
//! restart, reconciles every endpoint once from the initial list anyway, so the
//! feed starts from the time it was started.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{stream, Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::ResourceExt;
use tracing::{debug, warn};

use super::crd::WebhookEndpoint;
use super::{endpoint, Context};
use crate::db::endpoints::MAX_TIMEOUT_MS;
use crate::db::figures::{FigureChanges, ManagedEndpointRef};

/// Added to the longest attempt: the completer's batching, and clocks of the
/// worker, the database and the controller that disagree by seconds.
const LAG_SLACK: Duration = Duration::from_secs(60);

/// Endpoints whose figures one statement computes (and the feed holds) at a time.
const FIGURES_CHUNK: usize = 500;

/// How long after its start an attempt's row may be written: the longest
/// per-attempt timeout (an endpoint's own, or the server-wide one when larger),
/// plus [`LAG_SLACK`].
pub(super) fn write_lag(request_timeout: Duration) -> chrono::Duration {
    let longest = request_timeout.max(Duration::from_millis(MAX_TIMEOUT_MS as u64));
    chrono::Duration::from_std(longest + LAG_SLACK).unwrap_or(chrono::Duration::MAX)
}

/// What a look at `now` asks for, when the previous successful one was at `last`.
fn window(
    tenant: Option<String>,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    lag: chrono::Duration,
) -> FigureChanges {
    FigureChanges {
        tenant,
        after: last - lag,
        left: (endpoint::figures_since(last), endpoint::figures_since(now)),
    }
}

/// The WebhookEndpoints to reconcile, one look every `ctx.resync`, until the
/// controller stops polling it (it stops with the controller, so only the
/// leader runs it).
pub(super) fn changes(
    ctx: Arc<Context>,
    cache: Cache<WebhookEndpoint>,
) -> impl Stream<Item = ObjectRef<WebhookEndpoint>> + Send + 'static {
    let feed = Feed {
        lag: write_lag(ctx.request_timeout),
        last: Utc::now(),
        ctx,
        cache,
    };
    stream::unfold(feed, |mut feed| async move {
        tokio::time::sleep(feed.ctx.resync).await;
        let stale = feed.look().await;
        Some((stream::iter(stale), feed))
    })
    .flatten()
}

struct Feed {
    ctx: Arc<Context>,
    cache: Cache<WebhookEndpoint>,
    /// Start of the previous successful look.
    last: DateTime<Utc>,
    lag: chrono::Duration,
}

impl Feed {
    async fn look(&mut self) -> Vec<ObjectRef<WebhookEndpoint>> {
        let now = Utc::now();
        let window = window(self.ctx.namespace.clone(), self.last, now, self.lag);
        match self.stale(&window, now).await {
            Ok(stale) => {
                self.last = now;
                metrics::counter!("hookit_controller_feed_polls_total", "result" => "ok")
                    .increment(1);
                metrics::counter!("hookit_controller_feed_triggers_total")
                    .increment(stale.len() as u64);
                stale
            }
            Err(e) => {
                warn!(error = %e, "delivery change feed: look failed; the next one covers it");
                metrics::counter!("hookit_controller_feed_polls_total", "result" => "error")
                    .increment(1);
                Vec::new()
            }
        }
    }

    /// The endpoints whose status the database has moved away from.
    ///
    /// The figures are asked for [`FIGURES_CHUNK`] endpoints at a time: after a
    /// mass change (10,000 resources applied, every one of them in the window
    /// for the next minutes) one statement for all of them held every row and
    /// its figures at once, which set the controller's peak memory.
    async fn stale(
        &self,
        window: &FigureChanges,
        now: DateTime<Utc>,
    ) -> crate::error::Result<Vec<ObjectRef<WebhookEndpoint>>> {
        let changed = self.ctx.store.figures_changed(window).await?;
        let candidates: Vec<_> = changed.into_iter().filter_map(|c| self.cached(c)).collect();
        let since = endpoint::figures_since(now);
        let mut stale = Vec::new();
        for chunk in candidates.chunks(FIGURES_CHUNK) {
            let keys: Vec<_> = chunk
                .iter()
                .map(|(_, _, c)| (c.tenant.clone(), c.id))
                .collect();
            let mut figures: HashMap<_, _> = self
                .ctx
                .store
                .delivery_summaries(&keys, since)
                .await?
                .into_iter()
                .collect();
            stale.extend(
                chunk
                    .iter()
                    .filter(|(_, we, c)| {
                        let shown = we.status.as_ref().zip(figures.remove(&c.id));
                        !shown.is_some_and(|(st, f)| {
                            endpoint::shows(st, &c.state, &c.circuit_state, f)
                        })
                    })
                    .map(|(r, _, _)| r.clone()),
            );
        }
        debug!(
            looked = candidates.len(),
            stale = stale.len(),
            "delivery change feed"
        );
        Ok(stale)
    }

    /// The cached resource of a changed row, when the feed is to compare it: the
    /// same object (UID), with the status of an applied spec. Others are the
    /// watches' business (new, deleted, refused).
    fn cached(
        &self,
        c: ManagedEndpointRef,
    ) -> Option<(
        ObjectRef<WebhookEndpoint>,
        Arc<WebhookEndpoint>,
        ManagedEndpointRef,
    )> {
        let (ns, name) = c.k8s_name.split_once('/')?;
        let r = ObjectRef::new(name).within(ns);
        let we = self.cache.get(&r)?;
        let applied = we.uid().as_deref() == Some(c.k8s_uid.as_str())
            && we.status.as_ref().is_some_and(endpoint::follows_deliveries);
        applied.then_some((r, we, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_lag_covers_the_longest_attempt_however_the_server_is_set() {
        assert_eq!(
            write_lag(Duration::from_secs(15)),
            chrono::Duration::seconds(360)
        );
        assert_eq!(
            write_lag(Duration::from_secs(900)),
            chrono::Duration::seconds(960)
        );
    }

    #[test]
    fn a_look_covers_the_span_since_the_last_good_one_moved_back_by_the_lag() {
        let lag = chrono::Duration::seconds(360);
        let w = window(
            Some("shop".into()),
            at("2025-06-01T12:00:00Z"),
            at("2025-06-01T12:01:00Z"),
            lag,
        );
        assert_eq!(w.tenant.as_deref(), Some("shop"));
        assert_eq!(w.after, at("2025-06-01T11:54:00Z"));
        // What left the 24-hour window between the two looks.
        assert_eq!(
            w.left,
            (at("2025-05-31T12:00:00Z"), at("2025-05-31T12:01:00Z"))
        );
        // Consecutive looks leave no gap in what leaves the window.
        let next = window(
            None,
            at("2025-06-01T12:01:00Z"),
            at("2025-06-01T12:02:00Z"),
            lag,
        );
        assert_eq!(next.left.0, w.left.1);
    }
}
