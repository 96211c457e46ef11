//! Delivery: signing, fan-out by event type, retries, dead letters, redrive, pause.

use std::time::Duration;

use hookit::domain::signing::{verify, Secret};
use serde_json::{json, Value};

use crate::common::{Receiver, Reply, TestApp};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn delivers_a_signed_standard_webhooks_request() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let secret = Secret::generate().expose();
    app.endpoint(
        json!({"url": rx.url("/hook"), "secret": secret, "headers": {"x-team": "payments"}}),
    )
    .await;
    let event_id = app
        .publish("order.created", json!({"order": 42, "items": ["a", "b"]}))
        .await;

    let got = rx.wait_for(1, WAIT).await;
    let req = &got[0];
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.header("webhook-id"), event_id);
    assert_eq!(req.header("x-team"), "payments");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["id"], event_id.as_str());
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["data"], json!({"order": 42, "items": ["a", "b"]}));
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    // Our own verifier and the reference Standard Webhooks library both accept it.
    let now = chrono::Utc::now().timestamp();
    let s = Secret::parse(&secret).unwrap();
    verify(
        &s,
        &req.header("webhook-id"),
        &req.header("webhook-timestamp"),
        &req.header("webhook-signature"),
        &req.body,
        now,
    )
    .unwrap();
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&req.body, &req.headers)
        .unwrap();
    // …and refuse a tampered body.
    assert!(standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(b"{}", &req.headers)
        .is_err());

    let d = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| {
            d.len() == 1 && d[0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[0]["last_status_code"], 200);
    app.stop().await;
}

/// The ingestion query's overlap rule (SQL) agrees with the Rust rule and with
/// the per-row function it replaced, on every pattern shape.
#[tokio::test]
async fn the_sql_fan_out_rule_is_the_pattern_rule() {
    let app = TestApp::spawn_with(crate::common::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let pool = app.store.pool();
    let types = ["a", "a.b", "a.b.c", "order.item.added", "x-y_z.q"];
    let patterns = [
        "*",
        "a",
        "a.*",
        "a.b",
        "a.b.*",
        "a.b.c",
        "a.b.c.*",
        "b.*",
        "order.*",
        "order.item.*",
        "order.item.added",
        "orders.*",
        "x-y_z.*",
        "x.*",
    ];
    for t in types {
        let sql: Vec<String> = sqlx::query_scalar("SELECT hookit_event_type_patterns($1)")
            .bind(t)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(sql, hookit::domain::patterns::candidates(t), "{t}");
        for p in patterns {
            let (overlap, old): (bool, bool) = sqlx::query_as(
                "SELECT ARRAY[$1] && hookit_event_type_patterns($2), hookit_event_type_matches(ARRAY[$1], $2)",
            )
            .bind(p)
            .bind(t)
            .fetch_one(pool)
            .await
            .unwrap();
            let rust = hookit::domain::patterns::matches(p, t);
            assert_eq!((overlap, old), (rust, rust), "{p} vs {t}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn fans_out_by_event_type_pattern() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    app.endpoint(json!({"url": rx.url("/orders"), "event_types": ["order.*"]}))
        .await;
    app.endpoint(json!({"url": rx.url("/all"), "event_types": ["*"]}))
        .await;
    app.endpoint(json!({"url": rx.url("/users"), "event_types": ["user.created"]}))
        .await;
    let (status, ev) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.shipped", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(ev["deliveries"], 2);
    let got = rx.wait_for(2, WAIT).await;
    let mut paths: Vec<String> = got.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, vec!["/all", "/orders"]);
    let (_, ev) = app
        .post(
            "/v1/events",
            json!({"event_type": "invoice.paid", "payload": {}}),
        )
        .await;
    assert_eq!(ev["deliveries"], 1);
    app.stop().await;
}

#[tokio::test]
async fn failures_retry_with_backoff_then_dead_letter_and_redrive_keeps_history() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(500));
    app.endpoint(json!({"url": rx.url("/hook")})).await;
    let event_id = app.publish("order.created", json!({"n": 1})).await;

    let dead = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| {
            d.len() == 1 && d[0]["status"] == "dead"
        })
        .await;
    assert_eq!(dead[0]["attempts"], 3, "max_attempts=3 in the test config");
    assert_eq!(dead[0]["last_status_code"], 500);
    let id = dead[0]["id"].as_str().unwrap().to_string();
    let got = rx.received();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|r| r.header("webhook-id") == event_id),
        "webhook-id is stable across retries"
    );

    let (_, detail) = app.get(&format!("/v1/deliveries/{id}")).await;
    let log = detail["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    // Backoff: attempts are spaced by at least base/2 (50 ms) and growing ceilings.
    let t = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(log[i]["started_at"].as_str().unwrap()).unwrap()
    };
    assert!(
        (t(1) - t(0)).num_milliseconds() >= 45,
        "first retry too early"
    );
    assert!(
        (t(2) - t(1)).num_milliseconds() >= 95,
        "second retry too early"
    );

    // Redriving a pending delivery is refused; a dead one gets a fresh budget.
    rx.set_reply(Reply::Status(204));
    let (status, d) = app
        .post(&format!("/v1/deliveries/{id}/redrive"), json!({}))
        .await;
    assert_eq!(status, 200, "{d}");
    let done = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| {
            d[0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(done[0]["attempts"], 4);
    let (_, detail) = app.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(
        detail["attempt_log"].as_array().unwrap().len(),
        4,
        "history is kept across a redrive"
    );
    app.stop().await;
}

#[tokio::test]
async fn redrive_of_an_unfinished_delivery_is_a_conflict() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let ep = app.endpoint(json!({"url": rx.url("/hook")})).await;
    app.post(&format!("/v1/endpoints/{ep}/pause"), json!({}))
        .await;
    let event_id = app.publish("a.b", json!({})).await;
    let d = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| d.len() == 1)
        .await;
    let (status, problem) = app
        .post(
            &format!("/v1/deliveries/{}/redrive", d[0]["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 409);
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("delivery-not-finished"));
    app.stop().await;
}

#[tokio::test]
async fn bulk_redrive_filters_and_counts_dead_letters() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(503));
    let a = app
        .endpoint(json!({"url": rx.url("/a"), "max_attempts": 1}))
        .await;
    let _b = app
        .endpoint(json!({"url": rx.url("/b"), "max_attempts": 1}))
        .await;
    for i in 0..3 {
        app.publish("order.created", json!({"i": i})).await;
    }
    app.publish("user.created", json!({})).await;
    app.wait_deliveries("status=dead", WAIT, |d| d.len() == 8)
        .await;

    let (_, n) = app
        .post(
            "/v1/dead-letters/redrive",
            json!({"endpoint_id": a, "event_type": "order.created", "dry_run": true}),
        )
        .await;
    assert_eq!(n["redriven"], 3);
    assert_eq!(
        app.wait_deliveries("status=dead", WAIT, |d| d.len() == 8)
            .await
            .len(),
        8,
        "a dry run changes nothing"
    );

    rx.set_reply(Reply::Status(200));
    let (_, n) = app
        .post(
            "/v1/dead-letters/redrive",
            json!({"endpoint_id": a, "event_type": "order.created"}),
        )
        .await;
    assert_eq!(n["redriven"], 3);
    app.wait_deliveries("status=succeeded", WAIT, |d| d.len() == 3)
        .await;
    let dead = app
        .wait_deliveries("status=dead", WAIT, |d| d.len() == 5)
        .await;
    assert!(dead
        .iter()
        .all(|d| d["endpoint_id"] != a.as_str() || d["event_type"] != "order.created"));

    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, n) = app
        .post("/v1/dead-letters/redrive", json!({"since": future}))
        .await;
    assert_eq!(n["redriven"], 0);
    let (_, n) = app.post("/v1/dead-letters/redrive", json!({})).await;
    assert_eq!(n["redriven"], 5);
    app.wait_deliveries("status=succeeded", WAIT, |d| d.len() == 8)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_paused_endpoint_holds_deliveries_without_spending_attempts() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let ep = app.endpoint(json!({"url": rx.url("/hook")})).await;
    let (status, paused) = app
        .post(&format!("/v1/endpoints/{ep}/pause"), json!({}))
        .await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    let event_id = app.publish("x.y", json!({})).await;
    let held = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| d.len() == 1)
        .await;
    assert_eq!(held[0]["status"], "pending");
    assert_eq!(held[0]["attempts"], 0);
    assert!(
        held[0]["next_attempt_at"].is_null(),
        "held deliveries are not scheduled"
    );
    assert!(rx.received().is_empty());

    app.post(&format!("/v1/endpoints/{ep}/resume"), json!({}))
        .await;
    rx.wait_for(1, WAIT).await;
    let d = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| {
            d[0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(d[0]["attempts"], 1);
    app.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_when_longer_than_the_backoff() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::RetryAfter(429, 3));
    app.endpoint(json!({"url": rx.url("/hook")})).await;
    let event_id = app.publish("x.y", json!({})).await;
    let d = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| {
            d.len() == 1 && d[0]["attempts"] == 1 && d[0]["status"] == "pending"
        })
        .await;
    let next =
        chrono::DateTime::parse_from_rfc3339(d[0]["next_attempt_at"].as_str().unwrap()).unwrap();
    let updated =
        chrono::DateTime::parse_from_rfc3339(d[0]["updated_at"].as_str().unwrap()).unwrap();
    let wait = (next - updated).num_milliseconds();
    assert!(
        (2800..=3500).contains(&wait),
        "Retry-After: 3 should schedule ~3 s later, got {wait} ms"
    );
    app.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_dead_letters_its_queue() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(410));
    let ep = app.endpoint(json!({"url": rx.url("/hook")})).await;
    let event_id = app.publish("x.y", json!({})).await;
    let d = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| {
            d[0]["status"] == "dead"
        })
        .await;
    assert_eq!(d[0]["attempts"], 1, "410 is not retried");
    crate::common::eventually("endpoint disabled", WAIT, || async {
        let (_, e) = app.get(&format!("/v1/endpoints/{ep}")).await;
        e["status"] == "disabled"
    })
    .await;
    let (_, e) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert!(e["disabled_reason"].as_str().unwrap().contains("410"));
    // New events no longer fan out to a disabled endpoint.
    let (_, ev) = app
        .post("/v1/events", json!({"event_type": "x.y", "payload": {}}))
        .await;
    assert_eq!(ev["deliveries"], 0);
    app.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(302));
    app.endpoint(json!({"url": rx.url("/hook"), "max_attempts": 1}))
        .await;
    let event_id = app.publish("x.y", json!({})).await;
    let d = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| {
            d[0]["status"] == "dead"
        })
        .await;
    assert_eq!(d[0]["last_status_code"], 302);
    assert!(d[0]["last_error"].as_str().unwrap().contains("redirect"));
    assert_eq!(rx.received().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_alongside_the_new_one() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let ep = app.endpoint(json!({"url": rx.url("/hook")})).await;
    let (_, old) = app.get(&format!("/v1/endpoints/{ep}/secret")).await;
    let (status, new) = app
        .post(&format!("/v1/endpoints/{ep}/secret/rotate"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_ne!(old["secret"], new["secret"]);
    let (_, current) = app.get(&format!("/v1/endpoints/{ep}/secret")).await;
    assert_eq!(current["secret"], new["secret"]);
    app.publish("x.y", json!({})).await;
    let got = rx.wait_for(1, WAIT).await;
    let sig = got[0].header("webhook-signature");
    assert_eq!(
        sig.split(' ').count(),
        2,
        "both secrets sign during the overlap: {sig}"
    );
    for s in [&old["secret"], &new["secret"]] {
        standardwebhooks::Webhook::new(s.as_str().unwrap())
            .unwrap()
            .verify(&got[0].body, &got[0].headers)
            .unwrap();
    }
    app.stop().await;
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest() {
    let app = TestApp::spawn().await;
    let secret = Secret::generate();
    app.endpoint(json!({"url": "https://93.184.216.34/hook", "secret": secret.expose()}))
        .await;
    let (blob,): (Vec<u8>,) = sqlx::query_as("SELECT secret_enc FROM endpoints")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(
        !blob
            .windows(secret.as_bytes().len())
            .any(|w| w == secret.as_bytes()),
        "plaintext secret in the table"
    );
    let dump: (String,) = sqlx::query_as("SELECT row_to_json(e)::text FROM endpoints e")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(!dump.0.contains(&secret.expose()[6..]));
    app.stop().await;
}

#[tokio::test]
async fn deleting_an_endpoint_dead_letters_its_pending_deliveries() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let ep = app.endpoint(json!({"url": rx.url("/hook")})).await;
    app.post(&format!("/v1/endpoints/{ep}/pause"), json!({}))
        .await;
    let event_id = app.publish("x.y", json!({})).await;
    let r = app
        .req(reqwest::Method::DELETE, &format!("/v1/endpoints/{ep}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let d = app
        .wait_deliveries(&format!("event_id={event_id}"), WAIT, |d| d.len() == 1)
        .await;
    assert_eq!(d[0]["status"], "dead");
    assert_eq!(d[0]["last_error"], "endpoint deleted");
    let (status, _) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn dead_letters_can_be_purged_explicitly() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.set_reply(Reply::Status(500));
    let a = app
        .endpoint(json!({"url": rx.url("/a"), "max_attempts": 1}))
        .await;
    let b = app
        .endpoint(json!({"url": rx.url("/b"), "max_attempts": 1}))
        .await;
    for i in 0..2 {
        app.publish("order.created", json!({"i": i})).await;
    }
    app.wait_deliveries("status=dead", WAIT, |d| d.len() == 4)
        .await;
    let (_, n) = app
        .post(
            "/v1/dead-letters/purge",
            json!({"endpoint_id": a, "dry_run": true}),
        )
        .await;
    assert_eq!(n["purged"], 2);
    let (status, n) = app
        .post("/v1/dead-letters/purge", json!({"endpoint_id": a}))
        .await;
    assert_eq!((status, n["purged"].as_u64()), (200, Some(2)));
    let left = app
        .wait_deliveries("status=dead", WAIT, |d| d.len() == 2)
        .await;
    assert!(left.iter().all(|d| d["endpoint_id"] == b.as_str()));
    let (attempts,): (i64,) = sqlx::query_as("SELECT count(*) FROM delivery_attempts")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        attempts, 2,
        "the purged deliveries' attempt logs went with them"
    );
    // A deleted endpoint's dead letters cannot be redriven, but can be purged.
    app.req(reqwest::Method::DELETE, &format!("/v1/endpoints/{b}"))
        .send()
        .await
        .unwrap();
    let (_, n) = app.post("/v1/dead-letters/redrive", json!({})).await;
    assert_eq!(n["redriven"], 0);
    let (_, n) = app.post("/v1/dead-letters/purge", json!({})).await;
    assert_eq!(n["purged"], 2);
    app.stop().await;
}

#[tokio::test]
async fn operational_webhooks_report_dead_letters_recoveries_and_disabled_endpoints() {
    let ops = Receiver::start().await;
    let ops_url = ops.url("/ops");
    let app = TestApp::spawn_with(crate::common::Options {
        worker: true,
        configure: Box::new(move |c| c.ops_webhook_url = Some(ops_url)),
    })
    .await;
    let secret = Secret::generate();
    app.store
        .ensure_ops_endpoint(&ops.url("/ops"), Some(&secret), &app.cfg.ssrf_policy())
        .await
        .unwrap();
    let rx = Receiver::start().await;
    rx.set_path_reply("/dies", Reply::Status(500));
    rx.set_path_reply("/gone", Reply::Status(410));
    app.endpoint(json!({"url": rx.url("/dies"), "max_attempts": 1}))
        .await;
    app.endpoint(json!({"url": rx.url("/gone")})).await;
    let ev = app.publish("order.created", json!({})).await;

    let got = ops.wait_for(3, WAIT).await;
    let mut kinds: Vec<String> = got
        .iter()
        .map(|r| {
            standardwebhooks::Webhook::new(&secret.expose())
                .unwrap()
                .verify(&r.body, &r.headers)
                .expect("ops webhooks are signed");
            serde_json::from_slice::<Value>(&r.body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec!["delivery.dead", "delivery.dead", "endpoint.disabled"]
    );
    let dead: Value = serde_json::from_slice(
        &got.iter()
            .find(|r| r.body.windows(13).any(|w| w == b"delivery.dead"))
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(dead["data"]["event_id"], ev.as_str());
    assert_eq!(dead["data"]["tenant"], "acme");
    app.stop().await;
}
