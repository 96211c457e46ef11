//! SSRF: registration refuses internal targets in every spelling, with a problem
//! naming the reason; delivery re-checks what it connects to.

use std::time::Duration;

use serde_json::json;

use crate::common::{spawn_worker, Options, Receiver, TestApp};

#[tokio::test]
async fn registration_refuses_internal_targets_in_every_spelling() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        configure: Box::new(|c| c.allow_private_targets.clear()),
    })
    .await;
    let cases = [
        ("http://127.0.0.1/", "ssrf-loopback"),
        ("http://127.1/", "ssrf-loopback"),
        ("http://0x7f.1/", "ssrf-loopback"),
        ("http://2130706433/", "ssrf-loopback"),
        ("http://[::1]/", "ssrf-loopback"),
        ("http://[::ffff:127.0.0.1]/", "ssrf-loopback"),
        ("http://[64:ff9b::7f00:1]/", "ssrf-loopback"),
        ("http://localhost./", "ssrf-loopback"),
        ("http://localhost:8080/", "ssrf-loopback"),
        ("http://10.0.0.1/", "ssrf-private"),
        ("http://192.168.0.10/", "ssrf-private"),
        ("http://169.254.169.254/latest/meta-data", "ssrf-link-local"),
        ("http://100.64.1.1/", "ssrf-CGNAT"),
        ("http://0.0.0.0/", "ssrf-unspecified"),
        ("http://[fd00::1]/", "ssrf-unique-local"),
        ("http://224.0.0.1/", "ssrf-multicast"),
        ("ftp://example.com/", "url-scheme"),
        ("http://user:pw@93.184.216.34/", "url-userinfo"),
        ("http://no-such-host.invalid/", "url-unresolvable"),
    ];
    for (url, slug) in cases {
        let (status, p) = app.post("/v1/endpoints", json!({"url": url})).await;
        assert_eq!(status, 422, "{url} -> {p}");
        assert_eq!(
            p["type"],
            format!("https://hookit.dev/problems/{slug}"),
            "{url}"
        );
        assert!(p["detail"].as_str().unwrap().len() > 10);
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM endpoints")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    let (status, _) = app
        .post("/v1/endpoints", json!({"url": "https://93.184.216.34/ok"}))
        .await;
    assert_eq!(status, 201);
    app.stop().await;
}

#[tokio::test]
async fn delivery_rechecks_the_target_at_send_time() {
    // Registered while 127.0.0.0/8 was allowed; the worker runs without the
    // exemption and must refuse to connect.
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    app.endpoint(json!({"url": rx.url("/hook"), "max_attempts": 1}))
        .await;
    let ev = app.publish("a.b", json!({})).await;
    let mut cfg = app.cfg.clone();
    cfg.allow_private_targets.clear();
    let w = spawn_worker(cfg, app.store.clone());
    let d = app
        .wait_deliveries(&format!("event_id={ev}"), Duration::from_secs(20), |d| {
            d[0]["status"] == "dead"
        })
        .await;
    assert!(
        d[0]["last_error"].as_str().unwrap().contains("SSRF"),
        "{}",
        d[0]
    );
    assert!(
        rx.received().is_empty(),
        "nothing may reach the refused address"
    );
    w.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn host_names_are_resolved_and_checked_at_send_time() {
    // `localhost` resolves to loopback: allowed only while exempted.
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    let port = rx.base.rsplit(':').next().unwrap().to_string();
    app.endpoint(json!({"url": format!("http://localhost:{port}/hook"), "max_attempts": 1}))
        .await;
    let ev = app.publish("a.b", json!({})).await;
    let mut cfg = app.cfg.clone();
    cfg.allow_private_targets = vec!["10.0.0.0/8".parse().unwrap()];
    let w = spawn_worker(cfg, app.store.clone());
    let d = app
        .wait_deliveries(&format!("event_id={ev}"), Duration::from_secs(20), |d| {
            d[0]["status"] == "dead"
        })
        .await;
    assert!(
        d[0]["last_error"].as_str().unwrap().contains("loopback"),
        "{}",
        d[0]
    );
    assert!(rx.received().is_empty());
    w.stop().await;
    app.stop().await;
}
