//! Competing workers, claim disjointness, and a worker killed mid-flight.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::common::{eventually, spawn_worker, Options, Receiver, Reply, TestApp};

#[tokio::test]
async fn concurrent_claims_never_take_the_same_row() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    for _ in 0..400 {
        app.publish("a.b", json!({})).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = app.store.clone();
        tasks.push(tokio::spawn(async move {
            let me = Uuid::new_v4();
            let mut mine = Vec::new();
            loop {
                let batch = store.claim(me, 17, 60_000, &[]).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 400, "every due row was claimed");
    assert_eq!(distinct.len(), 400, "no row was claimed twice");
    app.stop().await;
}

#[tokio::test]
async fn competing_workers_send_each_delivery_exactly_once() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    app.endpoint(json!({"url": rx.url("/hook")})).await;
    let workers: Vec<_> = (0..4)
        .map(|_| spawn_worker(app.cfg.clone(), app.store.clone()))
        .collect();
    let mut ids = HashSet::new();
    for i in 0..300 {
        ids.insert(app.publish("a.b", json!({"i": i})).await);
    }
    let got = rx.wait_for(300, Duration::from_secs(60)).await;
    // Give stragglers a chance to show up as duplicates before counting.
    app.wait_deliveries("status=succeeded", Duration::from_secs(30), |d| {
        d.len() == 300
    })
    .await;
    let got_now = rx.received();
    assert_eq!(
        got_now.len(),
        300,
        "no delivery was sent twice (got {})",
        got_now.len()
    );
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *per_id.entry(r.header("webhook-id")).or_default() += 1;
    }
    assert_eq!(per_id.keys().cloned().collect::<HashSet<_>>(), ids);
    assert!(per_id.values().all(|n| *n == 1));
    for w in workers {
        w.stop().await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_flight_loses_nothing() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Hang);
    app.endpoint(json!({"url": rx.url("/hook"), "timeout_ms": 60000}))
        .await;
    let mut ids = HashSet::new();
    for i in 0..20 {
        ids.insert(app.publish("a.b", json!({"i": i})).await);
    }
    // A real `hookit worker` process takes the deliveries and hangs on them.
    let mut child = crate::common::worker_process(&app);
    rx.wait_for(20, Duration::from_secs(30)).await;
    let (in_flight,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'in_flight'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(in_flight, 20);
    child.kill().await.unwrap(); // SIGKILL: no chance to release anything

    rx.set_reply(Reply::Status(200));
    let mut cfg = app.cfg.clone();
    cfg.lease = Duration::from_secs(2);
    let w = spawn_worker(cfg, app.store.clone());
    let done = app
        .wait_deliveries("status=succeeded", Duration::from_secs(30), |d| {
            d.len() == 20
        })
        .await;
    let delivered: HashSet<String> = done
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        delivered, ids,
        "every event was delivered after the lease expired"
    );
    let second_round: HashSet<String> = rx.received()[20..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        second_round, ids,
        "the retaken deliveries carry the same webhook-id"
    );
    w.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_releases_what_it_cannot_finish() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Hang);
    app.endpoint(json!({"url": rx.url("/hook"), "timeout_ms": 60000}))
        .await;
    for i in 0..5 {
        app.publish("a.b", json!({"i": i})).await;
    }
    let mut cfg = app.cfg.clone();
    cfg.shutdown_grace = Duration::from_millis(500);
    let w = spawn_worker(cfg, app.store.clone());
    rx.wait_for(5, Duration::from_secs(20)).await;
    let started = tokio::time::Instant::now();
    w.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited past the grace period"
    );
    let (pending,): (i64,) = sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'pending' AND lease_owner IS NULL AND next_attempt_at IS NOT NULL")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        pending, 5,
        "unfinished deliveries go back to the queue at once"
    );
    eventually("nothing left in flight", Duration::from_secs(1), || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'in_flight'")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        n == 0
    })
    .await;
    app.stop().await;
}
