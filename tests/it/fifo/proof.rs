//! The proof: order holds across worker processes, failing receivers
//! and a SIGKILL; and the throughput figures of docs/fifo.md.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::recorder::Recorder;
use crate::common::{eventually, worker_process, Options, TestApp};

/// The proof, sized by the caller: `events` events, each to all of
/// `endpoints` FIFO endpoints, published in batches of 100 while 4 worker
/// processes deliver them; receivers fail 20 % of requests at random; one worker
/// is SIGKILLed halfway. With `batch_size` above 1 the endpoints batch, and
/// the order is that of the events in the requests, one after the other.
/// Returns the wall time of the delivery.
async fn proof(
    events: u64,
    endpoints: usize,
    fail: f64,
    delay: Duration,
    kill: bool,
    batch_size: u32,
) -> Duration {
    let app = TestApp::spawn_with(Options {
        worker: false,
        configure: Box::new(|c| c.max_payload = 1 << 20),
    })
    .await;
    let (rx, base) = Recorder::start(fail, 12, delay).await;
    for i in 0..endpoints {
        app.endpoint(json!({
            "url": format!("{base}/r{i}"),
            "ordering": "fifo",
            "batch_size": batch_size,
            "max_attempts": 50,
            "retry_base_ms": 5,
            "retry_cap_ms": 40,
        }))
        .await;
    }
    let mut workers: Vec<_> = (0..4).map(|_| worker_process(&app)).collect();
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|seq| json!({"event_type": "order.changed", "payload": {"seq": seq}}))
            .collect();
        let r = app
            .req(reqwest::Method::POST, "/v1/events/batch")
            .json(&json!({ "events": items }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let total = events as usize * endpoints;
    let limit = Duration::from_secs(60 + events / 20);
    if kill {
        eventually("half the deliveries arrived", limit, || {
            let n = rx.events();
            async move { n >= total / 2 }
        })
        .await;
        // SIGKILL: its leases are left to expire and be rescued.
        workers[0].kill().await.unwrap();
    }
    eventually("every delivery succeeded", limit, || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        n as usize == total
    })
    .await;
    let took = started.elapsed();
    for w in workers.iter_mut() {
        let _ = w.kill().await;
    }
    let firsts = rx.firsts();
    assert_eq!(firsts.len(), endpoints);
    for (path, seqs) in &firsts {
        assert_eq!(seqs.len() as u64, events, "{path}: every event arrived");
        if let Some(w) = seqs.windows(2).find(|w| w[0] >= w[1]) {
            panic!(
                "{path}: first deliveries out of order: {} then {}",
                w[0], w[1]
            );
        }
    }
    assert_eq!(
        rx.most_open.load(Ordering::Relaxed),
        1,
        "never two requests open at one FIFO receiver"
    );
    let requests = rx.total.load(Ordering::Relaxed);
    eprintln!(
        "fifo proof: {events} events x {endpoints} endpoints, batch size {batch_size}, {requests} requests in {took:?} ({:.0} deliveries/s)",
        total as f64 / took.as_secs_f64()
    );
    app.stop().await;
    took
}

#[tokio::test]
async fn fifo_order_holds_across_worker_processes_failures_and_a_kill() {
    proof(1_000, 5, 0.2, Duration::ZERO, true, 1).await;
}

/// The same with batches of up to 7 events: a failed batch is retried whole,
/// a batch that was in flight at the kill is sent again, and still every
/// receiver's first deliveries are in order.
#[tokio::test]
async fn fifo_batches_keep_the_order_across_worker_processes_failures_and_a_kill() {
    proof(1_000, 5, 0.2, Duration::ZERO, true, 7).await;
}

/// The full size (10,000 events); run by hand for the figures.
#[tokio::test]
#[ignore]
async fn fifo_proof_full_size() {
    proof(10_000, 5, 0.2, Duration::ZERO, true, 1).await;
}

/// The full size with batches of up to 50; run by hand for the figures.
#[tokio::test]
#[ignore]
async fn fifo_batches_full_size() {
    proof(10_000, 5, 0.2, Duration::ZERO, true, 50).await;
}

/// FIFO throughput against a receiver answering in 5 ms, never failing, one
/// event per request and batches of 50 (the figures in docs/fifo.md); run by
/// hand.
#[tokio::test]
#[ignore]
async fn fifo_throughput_5ms_receiver() {
    let one = proof(2_000, 1, 0.0, Duration::from_millis(5), false, 1).await;
    let fifty = proof(20_000, 1, 0.0, Duration::from_millis(5), false, 50).await;
    eprintln!(
        "fifo throughput, 5 ms receiver: batch size 1: {:.0}/s; batch size 50: {:.0}/s",
        2_000.0 / one.as_secs_f64(),
        20_000.0 / fifty.as_secs_f64()
    );
}
