//! A hanging receiver next to healthy ones.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::raw::*;
use crate::common::{eventually, Options, Receiver, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_starve_healthy_ones() {
    const CAP: usize = 8;
    let app = TestApp::spawn_with(Options {
        worker: true,
        configure: Box::new(|c| {
            // Without the per-endpoint cap the hanging endpoint would take every slot.
            c.worker_concurrency = 32;
            c.endpoint_concurrency = CAP;
            c.shutdown_grace = Duration::from_secs(1);
        }),
    })
    .await;
    let (hang_url, hang) = raw_receiver(Misbehaviour::BlackHole).await;
    let hang_ep = app
        .endpoint(json!({"url": hang_url, "event_types": ["noisy.hang"], "timeout_ms": 2000}))
        .await;
    let rx = Receiver::start().await;
    let mut healthy = Vec::new();
    for i in 1..=9 {
        healthy.push(
            app.endpoint(
                json!({"url": rx.url(&format!("/h{i}")), "event_types": [format!("noisy.h{i}")]}),
            )
            .await,
        );
    }

    let started = Instant::now();
    // The hanging endpoint's events go first, so they sit at the head of the queue.
    for i in 0..40 {
        app.publish("noisy.hang", json!({"i": i})).await;
    }
    for round in 0..20 {
        for i in 1..=9 {
            app.publish(&format!("noisy.h{i}"), json!({"round": round}))
                .await;
        }
    }
    for ep in &healthy {
        app.wait_deliveries(
            &format!("endpoint_id={ep}&status=succeeded"),
            Duration::from_secs(20),
            |d| d.len() == 20,
        )
        .await;
    }
    let healthy_done = started.elapsed();
    let (unfinished,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status IN ('pending', 'in_flight')")
            .bind(hang_ep.parse::<hookit::domain::ids::EndpointId>().unwrap().uuid())
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(
        unfinished > 0,
        "the hanging endpoint was still stuck while the healthy ones finished"
    );
    // The cap must hold while slots turn over: each timed-out request frees a slot
    // that the next delivery takes at once. Wait for two full turnovers.
    eventually(
        "the hanging endpoint's slots turn over twice",
        Duration::from_secs(20),
        || async { hang.connections.load(Ordering::SeqCst) > 2 * CAP },
    )
    .await;
    let max_open = hang.max_open.load(Ordering::SeqCst);
    eprintln!("noisy neighbour: 180 healthy deliveries in {healthy_done:?}; hanging endpoint: {unfinished} unfinished, at most {max_open} in flight");
    assert!(
        (1..=CAP).contains(&max_open),
        "the hanging endpoint held {max_open} requests in flight; its cap is {CAP}"
    );
    assert_eq!(
        rx.received().len(),
        180,
        "each healthy delivery was sent once"
    );
    app.stop().await;
}
