//! Batching FIFO endpoints: what the receiver gets (JSON arrays in acceptance
//! order, signed under the batch's own `webhook-id`), and that a failed batch
//! is retried with exactly the same events while more are queued behind it.

use std::time::Duration;

use hookit::domain::signing::{verify, Secret};
use serde_json::{json, Value};

use crate::common::{Options, Receiver, Reply, TestApp};

/// The `data.seq` of each event of a batch request's array.
fn seqs(body: &[u8]) -> Vec<u64> {
    let v: Value = serde_json::from_slice(body).unwrap();
    let batch = v.as_array().expect("a batching endpoint gets a JSON array");
    batch
        .iter()
        .map(|e| e["data"]["seq"].as_u64().unwrap())
        .collect()
}

/// Publishes an event `{seq}` for each of `seqs`, one request each, in order;
/// returns their ids.
async fn publish(app: &TestApp, seqs: std::ops::Range<u64>) -> Vec<String> {
    let mut ids = Vec::new();
    for seq in seqs {
        ids.push(app.publish("order.changed", json!({ "seq": seq })).await);
    }
    ids
}

/// A FIFO endpoint to `rx`'s `/hook` with `settings`, and events `seqs`
/// queued on it while it was paused, so the first batch sees them all.
/// Returns the endpoint's id and the events' ids.
async fn queued(
    app: &TestApp,
    rx: &Receiver,
    mut settings: Value,
    seqs: std::ops::Range<u64>,
) -> (String, Vec<String>) {
    settings["url"] = json!(rx.url("/hook"));
    settings["ordering"] = json!("fifo");
    let id = app.endpoint(settings).await;
    set_paused(app, &id, true).await;
    let events = publish(app, seqs).await;
    set_paused(app, &id, false).await;
    (id, events)
}

async fn set_paused(app: &TestApp, id: &str, paused: bool) {
    let action = if paused { "pause" } else { "resume" };
    let (s, body) = app
        .post(&format!("/v1/endpoints/{id}/{action}"), json!({}))
        .await;
    assert_eq!(s, 200, "{action}: {body}");
}

#[tokio::test]
async fn a_batching_endpoint_gets_arrays_in_order_signed_under_the_batch_id() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let secret = Secret::generate();
    let settings = json!({"batch_size": 4, "secret": secret.expose()});
    queued(&app, &rx, settings, 0..10).await;
    let got = rx.wait_for(3, Duration::from_secs(30)).await;
    let batches: Vec<Vec<u64>> = got.iter().map(|r| seqs(&r.body)).collect();
    assert_eq!(
        batches,
        [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]],
        "batches of up to 4, in publish order, one request after the other"
    );
    let mut ids = std::collections::HashSet::new();
    for r in &got {
        let msg_id = r.header("webhook-id");
        assert!(msg_id.starts_with("batch_"), "{msg_id}");
        assert!(ids.insert(msg_id.clone()), "each batch has its own id");
        // Signed like any body: over exactly the array that was sent.
        verify(
            &secret,
            &msg_id,
            &r.header("webhook-timestamp"),
            &r.header("webhook-signature"),
            &r.body,
            chrono::Utc::now().timestamp(),
        )
        .expect("the batch's signature verifies");
        assert_eq!(r.header("content-type"), "application/json");
    }
    // Every member is recorded as delivered, with its own attempt.
    let done = app
        .wait_deliveries("status=succeeded", Duration::from_secs(10), |d| {
            d.len() == 10
        })
        .await;
    for d in &done {
        assert_eq!(d["attempts"], 1, "{d}");
        let (_, detail) = app
            .get(&format!("/v1/deliveries/{}", d["id"].as_str().unwrap()))
            .await;
        let attempts = detail["attempt_log"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{detail}");
        assert_eq!(attempts[0]["status_code"], 200, "{detail}");
    }
    assert_eq!(rx.received().len(), 3, "nothing was sent twice");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_batch_is_retried_with_the_same_events_while_more_queue_behind_it() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(503));
    // Retries 0.5-1 s apart: time to queue more behind the batch.
    let settings = json!({
        "batch_size": 10, "retry_base_ms": 1000, "retry_cap_ms": 1000, "max_attempts": 10,
    });
    queued(&app, &rx, settings, 0..2).await;
    let first = rx.wait_for(1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(seqs(&first.body), [0, 1]);
    // Queued while the batch of two waits for its retry: room for 8 more in a
    // batch of 10, but a formed batch never grows (a receiver that saw its id
    // could drop the newcomers as duplicates).
    publish(&app, 2..5).await;
    let retry = rx.wait_for(2, Duration::from_secs(30)).await.remove(1);
    assert_eq!(retry.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(retry.body, first.body, "the same bytes, the same events");
    rx.set_reply(Reply::Status(200));
    app.wait_deliveries("status=succeeded", Duration::from_secs(30), |d| {
        d.len() == 5
    })
    .await;
    let got = rx.received();
    let last = got.last().unwrap();
    assert_eq!(
        seqs(&last.body),
        [2, 3, 4],
        "the newcomers went next, together"
    );
    assert_ne!(last.header("webhook-id"), first.header("webhook-id"));
    // Each member of the retried batch counts the batch's attempts.
    let (_, page) = app.get("/v1/deliveries?limit=10&status=succeeded").await;
    let mut attempts: Vec<(u64, i64)> = Vec::new();
    for d in page["data"].as_array().unwrap() {
        let (_, detail) = app
            .get(&format!("/v1/deliveries/{}", d["id"].as_str().unwrap()))
            .await;
        let n = detail["attempt_log"].as_array().unwrap().len() as i64;
        assert_eq!(d["attempts"].as_i64().unwrap(), n, "{detail}");
        attempts.push((d["attempts"].as_u64().unwrap(), n));
    }
    let retried = attempts.iter().filter(|(a, _)| *a >= 3).count();
    assert_eq!(retried, 2, "the first batch's two members: {attempts:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_redriven_batch_goes_again_as_a_new_batch() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(500));
    let settings = json!({"batch_size": 5, "max_attempts": 1});
    queued(&app, &rx, settings, 0..3).await;
    app.wait_deliveries("status=dead", Duration::from_secs(30), |d| d.len() == 3)
        .await;
    let dead = rx.received().remove(0);
    assert_eq!(seqs(&dead.body), [0, 1, 2], "dead-lettered as a whole");
    rx.set_reply(Reply::Status(200));
    let (s, body) = app.post("/v1/dead-letters/redrive", json!({})).await;
    assert_eq!(s, 200, "{body}");
    app.wait_deliveries("status=succeeded", Duration::from_secs(30), |d| {
        d.len() == 3
    })
    .await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "one request for the redriven three");
    assert_eq!(seqs(&got[1].body), [0, 1, 2]);
    // A redrive is a new round with a new id: the receiver may have recorded
    // the old one (its 500 may have come after it acted), and must not drop
    // this as a duplicate of something it never confirmed.
    assert_ne!(got[1].header("webhook-id"), dead.header("webhook-id"));
    app.stop().await;
}

#[tokio::test]
async fn every_event_of_a_dead_batch_gets_its_operational_webhook() {
    let ops = Receiver::start().await;
    let ops_url = ops.url("/ops");
    let app = TestApp::spawn_with(Options {
        worker: true,
        configure: Box::new(move |c| c.ops_webhook_url = Some(ops_url)),
    })
    .await;
    app.store
        .ensure_ops_endpoint(&ops.url("/ops"), None, &app.cfg.ssrf_policy())
        .await
        .unwrap();
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(500));
    let settings = json!({"batch_size": 5, "max_attempts": 1});
    let (_, mut published) = queued(&app, &rx, settings, 0..3).await;
    let got = ops.wait_for(3, Duration::from_secs(30)).await;
    let mut dead: Vec<String> = got
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .filter(|v| v["type"] == "delivery.dead")
        .map(|v| v["data"]["event_id"].as_str().unwrap().to_string())
        .collect();
    dead.sort();
    published.sort();
    assert_eq!(dead, published, "one delivery.dead per event of the batch");
    assert_eq!(rx.received().len(), 1, "the three went in one request");
    app.stop().await;
}
