//! A worker process SIGKILLed over and over.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::common::{eventually, Options, Receiver, Reply, TestApp};

fn worker_process(app: &TestApp) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hookit"))
        .arg("worker")
        .env("DATABASE_URL", app.cfg.database_url.as_ref().unwrap())
        .env("HOOKIT_MASTER_KEY", app.cfg_master_key_b64())
        .env("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8")
        .env("HOOKIT_LEASE", "2s")
        .env("HOOKIT_LOG_FORMAT", "text")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sigkilled_repeatedly_loses_nothing() {
    const EVENTS: usize = 500;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    // Slow enough that every kill lands on deliveries in flight.
    rx.set_reply(Reply::Delay(Duration::from_millis(100)));
    app.endpoint(json!({"url": rx.url("/hook")})).await;

    let publishing = async {
        let mut ids = HashSet::new();
        for i in 0..EVENTS {
            ids.insert(app.publish("a.b", json!({"i": i})).await);
        }
        ids
    };
    let killing = async {
        // Fixed, varied lifetimes (300-700 ms): deterministic, and not in step with anything.
        for life_ms in [300u64, 700, 450, 600, 350] {
            let mut child = worker_process(&app);
            tokio::time::sleep(Duration::from_millis(life_ms)).await;
            child.start_kill().unwrap(); // SIGKILL
            child.wait().await.unwrap();
        }
    };
    let (ids, ()) = tokio::join!(publishing, killing);
    let killed_in_flight: (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE status = 'in_flight'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();

    let mut survivor = worker_process(&app);
    eventually(
        "every event reaches the receiver",
        Duration::from_secs(90),
        || async {
            let seen: HashSet<String> = rx
                .received()
                .iter()
                .map(|r| r.header("webhook-id"))
                .collect();
            seen.len() >= EVENTS
        },
    )
    .await;
    let seen: HashSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(seen, ids, "exactly the published events were delivered");
    app.wait_deliveries("status=succeeded", Duration::from_secs(30), |d| {
        d.len() == EVENTS
    })
    .await;
    eprintln!(
        "sigkill loop: {} requests for {EVENTS} events, {} leases orphaned by the last kill",
        rx.received().len(),
        killed_in_flight.0
    );
    survivor.start_kill().unwrap();
    survivor.wait().await.unwrap();
    app.stop().await;
}
