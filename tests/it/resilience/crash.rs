//! A worker process SIGKILLed over and over.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::common::{eventually, worker_process, Options, Receiver, Reply, TestApp};

/// What one SIGKILL left behind: leases of the dead worker, and how many of those
/// deliveries the receivers had already got (sent, but not yet committed).
#[derive(Debug, Default, Clone, Copy)]
struct Orphans {
    leased: usize,
    sent: usize,
}

/// The deliveries the killed worker held, read right after the kill: every row
/// still `in_flight` with a lease owner not seen at an earlier kill (the worker
/// killed before may still hold rows whose lease has not run out).
async fn orphans_of_kill(
    app: &TestApp,
    rx: &Receiver,
    seen_owners: &mut HashSet<uuid::Uuid>,
) -> Orphans {
    let rows: Vec<(uuid::Uuid, uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT lease_owner, event_id, endpoint_id FROM deliveries WHERE status = 'in_flight'",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let received: HashSet<(String, String)> = rx
        .received()
        .iter()
        .map(|r| (r.header("webhook-id"), r.path.clone()))
        .collect();
    let endpoints: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, url FROM endpoints")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    let path_of = |ep: uuid::Uuid| {
        let url = &endpoints.iter().find(|(id, _)| *id == ep).unwrap().1;
        url::Url::parse(url).unwrap().path().to_string()
    };
    let fresh: Vec<_> = rows
        .iter()
        .filter(|(o, _, _)| !seen_owners.contains(o))
        .collect();
    let mut o = Orphans::default();
    for (_, event, ep) in &fresh {
        o.leased += 1;
        let id = hookit::domain::ids::EventId::from_uuid(*event).to_string();
        if received.contains(&(id, path_of(*ep))) {
            o.sent += 1;
        }
    }
    seen_owners.extend(fresh.iter().map(|(o, _, _)| *o));
    o
}

/// `events` events to `endpoints` endpoints while a real `hookit worker` process is
/// SIGKILLed once per lifetime in `lives_ms`; then a survivor finishes. Every event
/// must arrive, and the receivers may see again only what the dead workers held.
async fn sigkill_loop(events: usize, endpoints: usize, delay: Duration, lives_ms: &[u64]) {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Delay(delay));
    for i in 0..endpoints {
        app.endpoint(json!({"url": rx.url(&format!("/hook{i}"))}))
            .await;
    }

    let publishing = async {
        let mut ids = HashSet::new();
        for i in 0..events {
            ids.insert(app.publish("a.b", json!({"i": i})).await);
        }
        ids
    };
    let killing = async {
        let mut seen_owners = HashSet::new();
        let mut orphans = Vec::new();
        for life_ms in lives_ms {
            let mut child = worker_process(&app);
            tokio::time::sleep(Duration::from_millis(*life_ms)).await;
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
            orphans.push(orphans_of_kill(&app, &rx, &mut seen_owners).await);
        }
        orphans
    };
    let (ids, orphans) = tokio::join!(publishing, killing);

    let mut survivor = worker_process(&app);
    let expected = events * endpoints;
    eventually(
        "every delivery succeeds",
        Duration::from_secs(120),
        || async {
            let (n,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
                    .fetch_one(app.store.pool())
                    .await
                    .unwrap();
            n as usize == expected
        },
    )
    .await;
    let received = rx.received();
    let distinct: HashSet<(String, String)> = received
        .iter()
        .map(|r| (r.header("webhook-id"), r.path.clone()))
        .collect();
    let seen: HashSet<String> = distinct.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen, ids, "exactly the published events were delivered");
    assert_eq!(distinct.len(), expected, "every delivery arrived");
    let duplicates = received.len() - distinct.len();
    let leased: usize = orphans.iter().map(|o| o.leased).sum();
    let sent: usize = orphans.iter().map(|o| o.sent).sum();
    eprintln!(
        "sigkill loop: {events} events x {endpoints} endpoints, {} kills: {} requests, {duplicates} duplicates; \
         per kill (leased by the dead worker / of those already received): {:?}; total {leased} / {sent}",
        lives_ms.len(),
        received.len(),
        orphans.iter().map(|o| (o.leased, o.sent)).collect::<Vec<_>>(),
    );
    // The bound: only what a dead worker had sent and not yet written back is
    // sent again (a request in flight at the kill, or an outcome awaiting its
    // commit). Nothing a live worker held, nothing already committed.
    assert!(
        duplicates <= sent,
        "{duplicates} duplicates, but the killed workers had only {sent} sent-and-unwritten deliveries"
    );
    survivor.start_kill().unwrap();
    survivor.wait().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sigkilled_repeatedly_loses_nothing() {
    // Slow enough that every kill lands on deliveries in flight; fixed, varied
    // lifetimes (300-700 ms): deterministic, and not in step with anything.
    sigkill_loop(
        500,
        1,
        Duration::from_millis(100),
        &[300, 700, 450, 600, 350],
    )
    .await;
}

/// The outside run's shape, for the figures in docs/resilience.md:
/// `cargo test --test it crash::at_scale -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about a minute), not a CI test"]
async fn at_scale_2000_events_2_endpoints_5_kills() {
    sigkill_loop(
        2000,
        2,
        Duration::from_millis(20),
        &[900, 1300, 1100, 1500, 1000],
    )
    .await;
}
