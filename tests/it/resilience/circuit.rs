//! The circuit breaker, end to end and pinned at the store level.

use std::collections::HashSet;
use std::time::Duration;

use hookit::db::Store;
use serde_json::json;
use tokio::time::Instant;

use crate::common::{eventually, Options, Receiver, Reply, TestApp};

#[tokio::test]
async fn the_circuit_opens_holds_without_spending_attempts_and_a_probe_closes_it() {
    // WorkerConfig::from_config fixes the threshold at 20 failures and the first probe at 5 s.
    const THRESHOLD: usize = 20;
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(500));
    // Retries 2.5-5 s out: the first round of THRESHOLD failures is written long
    // before any retry is due, so the streak reaches the threshold exactly.
    let ep = app
        .endpoint(json!({"url": rx.url("/cb"), "max_attempts": 100, "retry_base_ms": 5000, "retry_cap_ms": 5000}))
        .await;
    let circuit = || async {
        let (_, e) = app.get(&format!("/v1/endpoints/{ep}")).await;
        e["circuit_state"].as_str().unwrap_or("").to_string()
    };
    let mut failing = HashSet::new();
    for n in 0..THRESHOLD {
        failing.insert(app.publish("cb.test", json!({"n": n})).await);
    }
    eventually("the circuit opens", Duration::from_secs(30), || async {
        circuit().await == "open"
    })
    .await;
    let sent_when_opened = rx.received().len();
    assert_eq!(
        sent_when_opened, THRESHOLD,
        "the circuit opened after {THRESHOLD} consecutive failures"
    );

    let mut held = HashSet::new();
    for n in 0..5 {
        held.insert(app.publish("cb.test", json!({"late": n})).await);
    }
    // The new deliveries wait in the queue until the probe is due: a worker that has
    // seen the open circuit leaves them unclaimed, one that has not yet claims them
    // and puts them back; either way no attempt is spent.
    eventually(
        "the new deliveries are parked until the probe",
        Duration::from_secs(10),
        || async {
            let (_, page) = app
                .get(&format!("/v1/deliveries?endpoint_id={ep}&limit=1000"))
                .await;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            let parked = data
                .iter()
                .filter(|d| held.contains(d["event_id"].as_str().unwrap_or("")))
                .filter(|d| d["status"] == "pending" && d["attempts"] == 0)
                .count();
            parked == held.len()
        },
    )
    .await;
    let (_, e) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(e["circuit_state"], "open", "{e}");
    assert_eq!(
        rx.received().len(),
        sent_when_opened,
        "nothing is sent while the circuit is open"
    );
    let (_, page) = app.get(&format!("/v1/deliveries?endpoint_id={ep}")).await;
    for d in page["data"].as_array().unwrap() {
        let expected = if failing.contains(d["event_id"].as_str().unwrap()) {
            1
        } else {
            0
        };
        assert_eq!(
            d["attempts"], expected,
            "no attempt is spent while open: {d}"
        );
        assert_eq!(d["status"], "pending", "{d}");
    }

    rx.set_reply(Reply::Status(200));
    let recovering = Instant::now();
    eventually(
        "a probe closes the circuit",
        Duration::from_secs(30),
        || async { circuit().await == "closed" },
    )
    .await;
    let closed_after = recovering.elapsed();
    let all = THRESHOLD + held.len();
    let done = app
        .wait_deliveries(
            &format!("endpoint_id={ep}&status=succeeded"),
            Duration::from_secs(40),
            |d| d.len() == all,
        )
        .await;
    eprintln!(
        "circuit: closed {closed_after:?} after recovery; all held deliveries done {:?} after",
        recovering.elapsed()
    );
    for d in &done {
        let expected = if failing.contains(d["event_id"].as_str().unwrap()) {
            2
        } else {
            1
        };
        assert_eq!(d["attempts"], expected, "{d}");
    }
    let got: HashSet<String> = rx.received()[sent_when_opened..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        got,
        failing.union(&held).cloned().collect(),
        "every held delivery went out once recovered"
    );
    assert_eq!(
        rx.received().len(),
        sent_when_opened + all,
        "one request each after recovery"
    );
    app.stop().await;
}

// Circuit-breaker accounting, pinned at the store level.

/// Claims every due delivery for a fresh owner.
async fn claim_all(store: &Store, owner: uuid::Uuid) -> Vec<hookit::db::deliveries::Claimed> {
    store.claim(owner, 1000, 60_000, &[]).await.unwrap()
}

fn failed(c: &hookit::db::deliveries::Claimed) -> hookit::db::deliveries::Completion {
    hookit::db::deliveries::Completion {
        id: c.id,
        attempt: c.attempts + 1,
        status: "pending",
        next_attempt_at: Some(chrono::Utc::now() + chrono::Duration::seconds(60)),
        succeeded: false,
        status_code: Some(500),
        error: Some("HTTP 500".into()),
        response_body: None,
        started_at: chrono::Utc::now(),
        duration_ms: 1,
        probe: false,
        rate_limited: c.rate_limited,
        deferred: false,
        sent: true,
        members: Vec::new(),
    }
}

async fn probe_ms(app: &TestApp) -> Option<i64> {
    let (ms,): (Option<i64>,) = sqlx::query_as("SELECT circuit_probe_ms FROM endpoints")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    ms
}

#[tokio::test]
async fn failures_in_flight_when_the_circuit_opens_do_not_push_the_probe_back() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.endpoint(json!({"url": "https://93.184.216.34/a", "max_attempts": 100}))
        .await;
    for n in 0..24 {
        app.publish("a.b", json!({ "n": n })).await;
    }
    let owner = uuid::Uuid::new_v4();
    let claimed = claim_all(&app.store, owner).await;
    assert_eq!(claimed.len(), 24, "all 24 are in flight at once");
    // The first 20 failures open the circuit with a 5 s probe interval...
    let first: Vec<_> = claimed[..20].iter().map(failed).collect();
    app.store.complete(owner, &first, 20, 5000).await.unwrap();
    assert_eq!(probe_ms(&app).await, Some(5000));
    // ...and the 4 attempts that were already in flight fail afterwards, one
    // completion batch each. None of them was a probe: the interval must not grow.
    for c in &claimed[20..] {
        app.store
            .complete(owner, &[failed(c)], 20, 5000)
            .await
            .unwrap();
    }
    assert_eq!(
        probe_ms(&app).await,
        Some(5000),
        "stale failures doubled the probe interval (5 s -> 80 s after 4 batches)"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_successful_probe_makes_the_parked_deliveries_due() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let ep = app
        .endpoint(json!({"url": "https://93.184.216.34/a", "max_attempts": 100}))
        .await;
    let ep = ep
        .parse::<hookit::domain::ids::EndpointId>()
        .unwrap()
        .uuid();
    for n in 0..20 {
        app.publish("a.b", json!({ "n": n })).await;
    }
    let owner = uuid::Uuid::new_v4();
    let claimed = claim_all(&app.store, owner).await;
    let failures: Vec<_> = claimed.iter().map(failed).collect();
    app.store
        .complete(owner, &failures, 20, 5000)
        .await
        .unwrap();
    // Make the probe due now, and queue three more deliveries behind it.
    sqlx::query("UPDATE endpoints SET circuit_open_until = now()")
        .execute(app.store.pool())
        .await
        .unwrap();
    for n in 0..3 {
        app.publish("a.b", json!({ "late": n })).await;
    }
    let claimed = claim_all(&app.store, owner).await;
    assert_eq!(claimed.len(), 3);
    // What the worker does: one wins the probe, the others are parked until the next one.
    assert_eq!(
        app.store.take_probe(ep, 5000).await.unwrap(),
        None,
        "the probe slot"
    );
    let next = app
        .store
        .take_probe(ep, 5000)
        .await
        .unwrap()
        .expect("taken");
    let parked: Vec<_> = claimed[1..].iter().map(|c| c.id).collect();
    app.store.release(owner, &parked, Some(next)).await.unwrap();
    // The probe succeeds: the circuit closes...
    let mut ok = failed(&claimed[0]);
    (
        ok.status,
        ok.next_attempt_at,
        ok.succeeded,
        ok.status_code,
        ok.error,
    ) = ("succeeded", None, true, Some(200), None);
    app.store.complete(owner, &[ok], 20, 5000).await.unwrap();
    let (_, e) = app
        .get(&format!(
            "/v1/endpoints/{}",
            hookit::domain::ids::EndpointId::from_uuid(ep)
        ))
        .await;
    assert_eq!(e["circuit_state"], "closed");
    // ...and what it held back should go now, not at the probe time that no longer applies.
    let (waiting,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at > now() + interval '1 second'
           AND attempts = 0",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        waiting, 0,
        "parked deliveries still wait for a probe after the circuit closed"
    );
    app.stop().await;
}
