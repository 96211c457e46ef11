//! A receiver for the FIFO proofs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// A receiver per path that records the `data.seq` of every event in arrival
/// order, fails a seeded random share of them with 500, and counts requests
/// open at once per path.
#[derive(Clone)]
pub struct Recorder {
    log: Arc<Mutex<HashMap<String, Vec<u64>>>>,
    open: Arc<Mutex<HashMap<String, usize>>>,
    pub most_open: Arc<AtomicUsize>,
    /// Requests received.
    pub total: Arc<AtomicUsize>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    fail: f64,
    delay: Duration,
}

/// Decrements a path's open count however the request ends (a killed worker's
/// connection drops the handler mid-way).
struct OpenGuard(Recorder, String);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        *self.0.open.lock().unwrap().get_mut(&self.1).unwrap() -= 1;
    }
}

/// The `data.seq` of each event a request carried: one, or a batch's array.
fn seqs(body: &[u8]) -> Vec<u64> {
    let v: Value = serde_json::from_slice(body).unwrap();
    let seq = |e: &Value| e["data"]["seq"].as_u64().unwrap();
    match v.as_array() {
        Some(batch) => batch.iter().map(seq).collect(),
        None => vec![seq(&v)],
    }
}

async fn record(State(r): State<Recorder>, Path(path): Path<String>, body: Bytes) -> StatusCode {
    let seqs = seqs(&body);
    let _guard = {
        let mut open = r.open.lock().unwrap();
        let n = open.entry(path.clone()).or_default();
        *n += 1;
        r.most_open.fetch_max(*n, Ordering::Relaxed);
        r.log
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .extend(seqs);
        OpenGuard(r.clone(), path)
    };
    r.total.fetch_add(1, Ordering::Relaxed);
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    if r.rng.lock().unwrap().gen_bool(r.fail) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl Recorder {
    pub async fn start(fail: f64, seed: u64, delay: Duration) -> (Self, String) {
        let r = Recorder {
            log: Default::default(),
            open: Default::default(),
            most_open: Default::default(),
            total: Default::default(),
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
            fail,
            delay,
        };
        let app = Router::new()
            .route("/{path}", post(record))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, base)
    }

    /// Events received (a batch counts each of its events).
    pub fn events(&self) -> usize {
        self.log.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Each event's first arrival, per path, in arrival order.
    pub fn firsts(&self) -> HashMap<String, Vec<u64>> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(p, seqs)| {
                let mut seen = HashSet::new();
                let f = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
                (p.clone(), f)
            })
            .collect()
    }
}
