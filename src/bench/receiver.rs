//! The benchmark's own receiver: answers fast, counts distinct deliveries and
//! records ingest-to-delivery latency from the envelope's `timestamp`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};

/// Counters shared with the benchmark driver.
#[derive(Default)]
pub struct Tally {
    /// Requests received (including duplicates and hung ones).
    pub requests: AtomicU64,
    /// Distinct (event, path) pairs answered 2xx.
    pub delivered: AtomicU64,
    /// Requests for a pair already delivered (at-least-once duplicates).
    pub duplicates: AtomicU64,
    seen: Mutex<HashSet<(String, String)>>,
    /// Flow control of a closed-loop case: every fresh delivery returns one credit.
    credits: Mutex<Option<Arc<Semaphore>>>,
    latencies_ms: Mutex<Vec<f64>>,
    per_path: Mutex<std::collections::HashMap<String, u64>>,
}

impl Tally {
    /// Takes the latencies recorded so far.
    pub fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Deliveries per path so far.
    pub fn per_path(&self) -> std::collections::HashMap<String, u64> {
        self.per_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// Starts a closed loop: publishers take credits from the returned semaphore
    /// (`window` of them to begin with) and every fresh delivery gives one back, so
    /// at most `window` deliveries are ever outstanding.
    pub fn credit_window(&self, window: usize) -> Arc<Semaphore> {
        let sem = Arc::new(Semaphore::new(window));
        *self.credits.lock().unwrap_or_else(|p| p.into_inner()) = Some(sem.clone());
        sem
    }
    /// Forgets everything.
    pub fn reset(&self) {
        *self.credits.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.requests.store(0, Ordering::Relaxed);
        self.delivered.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.latencies_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.per_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Starts the receiver on 127.0.0.1; returns its base URL. Paths under `/hang`
/// never answer (the noisy-neighbour endpoint).
pub async fn start(tally: Arc<Tally>) -> anyhow::Result<String> {
    let app = Router::new().fallback(post(handle)).with_state(tally);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

pub(super) fn envelope_time(body: &[u8]) -> Option<DateTime<Utc>> {
    // The envelope is `{"id":…,"type":…,"timestamp":"…","data":…}`; find the
    // timestamp without parsing the payload.
    let s = std::str::from_utf8(body).ok()?;
    let i = s.find("\"timestamp\":\"")? + 13;
    let j = s[i..].find('"')? + i;
    DateTime::parse_from_rfc3339(&s[i..j])
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

async fn handle(
    State(t): State<Arc<Tally>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    t.requests.fetch_add(1, Ordering::Relaxed);
    if uri.path().starts_with("/hang") {
        std::future::pending::<()>().await;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = uri.path().to_string();
    let fresh = t
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((id, path.clone()));
    if fresh {
        t.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &*t.credits.lock().unwrap_or_else(|p| p.into_inner()) {
            c.add_permits(1);
        }
        *t.per_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(path)
            .or_default() += 1;
        if let Some(at) = envelope_time(&body) {
            let ms = (Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            t.latencies_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ms);
        }
    } else {
        t.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}
