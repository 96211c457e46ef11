//! Leases without any crash: a worker that holds a delivery longer than its lease
//! (a slow receiver, or a wait for the endpoint's slot) renews it, so no other
//! claim takes the delivery again and the receiver sees it once.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::common::{Options, Receiver, Reply, TestApp};

/// A worker with a 1 s lease (rescues every 250 ms).
async fn short_lease_app() -> TestApp {
    TestApp::spawn_with(Options {
        worker: true,
        configure: Box::new(|c| c.lease = Duration::from_secs(1)),
    })
    .await
}

/// Publishes `n` events, waits until all succeeded, and returns how many requests
/// the receiver got and for how many distinct events.
async fn deliver_all(app: &TestApp, rx: &Receiver, n: usize, within: Duration) -> (usize, usize) {
    for i in 0..n {
        app.publish("lease.test", json!({"i": i})).await;
    }
    app.wait_deliveries("status=succeeded", within, |d| d.len() == n)
        .await;
    let requests = rx.received();
    let distinct: HashSet<String> = requests.iter().map(|r| r.header("webhook-id")).collect();
    (requests.len(), distinct.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_lease_is_sent_once() {
    let app = short_lease_app().await;
    let rx = Receiver::start().await;
    // Each request takes 2.5 leases.
    rx.set_reply(Reply::Delay(Duration::from_millis(2500)));
    app.endpoint(json!({"url": rx.url("/slow"), "timeout_ms": 10000}))
        .await;
    let (requests, distinct) = deliver_all(&app, &rx, 20, Duration::from_secs(30)).await;
    assert_eq!(distinct, 20);
    assert_eq!(
        requests, 20,
        "a delivery whose request outlived the lease was sent again"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waiting_for_its_endpoints_slot_is_sent_once() {
    let app = short_lease_app().await;
    let rx = Receiver::start().await;
    // One request at a time, 300 ms each: claimed deliveries wait in memory for the
    // slot, most of them longer than the lease.
    rx.set_reply(Reply::Delay(Duration::from_millis(300)));
    app.endpoint(json!({"url": rx.url("/one"), "max_in_flight": 1}))
        .await;
    let (requests, distinct) = deliver_all(&app, &rx, 12, Duration::from_secs(40)).await;
    assert_eq!(distinct, 12);
    assert_eq!(
        requests, 12,
        "a delivery that waited past its lease for the endpoint's slot was sent again"
    );
    app.stop().await;
}
