//! The claim hands out only a FIFO endpoint's head, one at a time, whatever
//! the number of claimers; a dead head releases the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookit::domain::ids::EventId;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{Options, TestApp};

/// What one claimer saw: per endpoint, the events it was handed, in order.
type Claims = Vec<(Uuid, Uuid)>;

#[tokio::test]
async fn concurrent_claimers_only_ever_get_the_head_of_a_fifo_endpoint() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut fifo = Vec::new();
    for i in 0..3 {
        let id = app
            .endpoint(json!({"url": format!("https://93.184.216.34/f{i}"), "ordering": "fifo"}))
            .await;
        fifo.push(id);
    }
    app.endpoint(json!({"url": "https://93.184.216.34/plain"}))
        .await;
    let mut published = Vec::new();
    for i in 0..60 {
        published.push(app.publish("a.b", json!({"i": i})).await);
    }
    let endpoint_ids: HashMap<Uuid, bool> =
        sqlx::query_as::<_, (Uuid, bool)>("SELECT id, ordering = 'fifo' FROM endpoints")
            .fetch_all(app.store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();

    // Who holds each FIFO endpoint right now, as the claimers themselves see it:
    // a claimer clears its entry before it writes the outcome, so a second
    // entry for one endpoint means the queue handed out two at once.
    let holding: Arc<Mutex<HashMap<Uuid, Uuid>>> = Default::default();
    let log: Arc<Mutex<Claims>> = Default::default();
    let plain_batches = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (store, holding, log, plain_batches, fifo_of) = (
            app.store.clone(),
            holding.clone(),
            log.clone(),
            plain_batches.clone(),
            endpoint_ids.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let me = Uuid::new_v4();
            let mut rng = rand::rngs::StdRng::seed_from_u64(t);
            let mut idle = 0;
            // Bounded: 240 deliveries, each given back at most a few times.
            for _ in 0..5_000 {
                let batch = store.claim(me, 4, 60_000, &[]).await.unwrap();
                if batch.is_empty() {
                    idle += 1;
                    if idle > 50 {
                        return;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                let plain = batch.iter().filter(|c| !fifo_of[&c.endpoint_id]).count();
                if plain > 1 {
                    plain_batches.fetch_add(1, Ordering::Relaxed);
                }
                for c in &batch {
                    if fifo_of[&c.endpoint_id] {
                        let prev = holding.lock().unwrap().insert(c.endpoint_id, c.id);
                        assert!(prev.is_none(), "two deliveries of one FIFO endpoint in flight");
                    }
                }
                tokio::task::yield_now().await;
                for c in batch {
                    let fifo = fifo_of[&c.endpoint_id];
                    if fifo {
                        holding.lock().unwrap().remove(&c.endpoint_id);
                    }
                    if rng.gen_bool(0.25) {
                        // A give-back (a rate limit, an open circuit): the head
                        // stays the head.
                        store.release(me, &[c.id], Some(chrono::Utc::now())).await.unwrap();
                    } else {
                        if fifo {
                            log.lock().unwrap().push((c.endpoint_id, c.event_id));
                        }
                        sqlx::query(
                            "UPDATE deliveries SET status = 'succeeded', lease_owner = NULL,
                                lease_expires_at = NULL, finished_at = now() WHERE id = $1 AND lease_owner = $2",
                        )
                        .bind(c.id)
                        .bind(me)
                        .execute(store.pool())
                        .await
                        .unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE status <> 'succeeded'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(left, 0, "every delivery was claimed and finished");
    let log = log.lock().unwrap().clone();
    for ep in endpoint_ids.iter().filter(|(_, f)| **f).map(|(e, _)| *e) {
        let order: Vec<String> = log
            .iter()
            .filter(|(e, _)| *e == ep)
            .map(|(_, ev)| EventId::from_uuid(*ev).to_string())
            .collect();
        assert_eq!(
            order, published,
            "a FIFO endpoint's deliveries finish in publish order"
        );
    }
    assert!(
        plain_batches.load(Ordering::Relaxed) > 0,
        "an ordinary endpoint's deliveries are still claimed several at a time"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dead_head_releases_the_queue_and_a_redrive_sends_it_again() {
    let app = TestApp::spawn().await;
    let rx = crate::common::Receiver::start().await;
    rx.set_reply(crate::common::Reply::Status(500));
    app.endpoint(json!({
        "url": rx.url("/hook"), "ordering": "fifo",
        "max_attempts": 2, "retry_base_ms": 10, "retry_cap_ms": 20,
    }))
    .await;
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(app.publish("a.b", json!({"i": i})).await);
    }
    let dead = app
        .wait_deliveries("status=dead", Duration::from_secs(30), |d| d.len() == 3)
        .await;
    let seen = |rx: &crate::common::Receiver| -> Vec<u64> {
        rx.received()
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["data"]["i"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    // Each head's two attempts, and nothing behind it until it was dead.
    assert_eq!(seen(&rx), vec![0, 0, 1, 1, 2, 2]);
    rx.set_reply(crate::common::Reply::Status(200));
    let first = dead
        .iter()
        .find(|d| d["event_id"] == events[0].as_str())
        .unwrap();
    let id = first["id"].as_str().unwrap();
    let (s, body) = app
        .post(&format!("/v1/deliveries/{id}/redrive"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    rx.wait_for(7, Duration::from_secs(30)).await;
    assert_eq!(seen(&rx)[6], 0, "the redriven head is sent again");
    app.stop().await;
}
