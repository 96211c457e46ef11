//! Per-endpoint transformations through the real API, worker and PostgreSQL:
//! the request a handler builds is what the receiver gets, signed over those
//! bytes; a handler's error dead-letters at once with its line and a fix plus a
//! redrive delivers; a cancel is skipped; an endless loop and a memory bomb are
//! stopped without holding up other endpoints.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::receiver::Receiver;
use crate::common::{Options, TestApp};

const WAIT: Duration = Duration::from_secs(60);

const RESHAPE: &str = r#"function handler(webhook) {
  const d = webhook.payload.data;
  webhook.payload = { ticket: `${webhook.eventType}: ${d.order}`, total: d.cents / 100 };
  webhook.headers["x-source"] = "hookit";
  webhook.url = webhook.url + "/tickets";
  return webhook;
}"#;

fn verify(secret: &str, got: &crate::common::receiver::Received) {
    let mut h = http::HeaderMap::new();
    for (k, v) in &got.headers {
        h.insert(k.clone(), v.clone());
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&got.body, &h)
        .expect("the signature covers the transformed body");
}

async fn secret_of(app: &TestApp, ep: &str) -> String {
    let (_, s) = app.get(&format!("/v1/endpoints/{ep}/secret")).await;
    s["secret"].as_str().unwrap().to_string()
}

async fn detail(app: &TestApp, delivery: &Value) -> Value {
    let (status, d) = app
        .get(&format!(
            "/v1/deliveries/{}",
            delivery["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    d
}

async fn settled(app: &TestApp, ep: &str, n: usize, status: &str) -> Vec<Value> {
    app.wait_deliveries(&format!("endpoint_id={ep}"), WAIT, |d| {
        d.len() == n && d.iter().all(|x| x["status"] == status)
    })
    .await
}

#[tokio::test]
async fn the_receiver_gets_the_request_the_handler_built_signed_over_its_bytes() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let ep = app
        .endpoint(json!({"url": rx.url("/hooks"), "transformation": RESHAPE,
                         "headers": {"x-team": "payments"}}))
        .await;
    let (_, shown) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(shown["transformation"], RESHAPE);
    app.publish("order.paid", json!({"order": "A-17", "cents": 1250}))
        .await;
    let got = rx.wait_for(1, WAIT).await;
    let got = &got[0];
    assert_eq!(got.path, "/hooks/tickets");
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body, json!({"ticket": "order.paid: A-17", "total": 12.5}));
    assert_eq!(got.header("x-source"), "hookit");
    // The endpoint's own headers reach the handler, which kept them.
    assert_eq!(got.header("x-team"), "payments");
    verify(&secret_of(&app, &ep).await, got);
    let d = settled(&app, &ep, 1, "succeeded").await;
    let log = detail(&app, &d[0]).await["attempt_log"].clone();
    assert_eq!(log[0]["sent"], true);
    app.stop().await;
}

#[tokio::test]
async fn the_method_is_what_the_handler_chose() {
    // The receiver helper answers POST only, so PUT is seen from its 405.
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let ep = app
        .endpoint(json!({"url": rx.url("/m"), "transformation": "function handler(w) { w.method = 'PUT'; return w }"}))
        .await;
    app.publish("order.paid", json!({"n": 1})).await;
    let d = app
        .wait_deliveries(&format!("endpoint_id={ep}"), WAIT, |d| {
            d.len() == 1 && d[0]["last_status_code"] == 405
        })
        .await;
    assert!(rx.received().is_empty(), "the POST route never saw it");
    assert_eq!(d[0]["last_status_code"], 405);
    app.stop().await;
}

#[tokio::test]
async fn code_that_does_not_compile_is_refused_with_its_line_and_null_removes_a_transformation() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (status, p) = app
        .post(
            "/v1/endpoints",
            json!({"url": "http://127.0.0.1:9/x", "transformation": "function handler(w) {\n  return w +;\n}"}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("invalid-transformation"),
        "{p}"
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("SyntaxError") && detail.contains("line 2"),
        "{detail}"
    );
    let (status, p) = app
        .post(
            "/v1/endpoints",
            json!({"url": "http://127.0.0.1:9/x", "transformation": "function notTheHandler(w) { return w }"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("function handler(webhook)"),
        "{p}"
    );
    let (status, _) = app
        .post(
            "/v1/endpoints",
            json!({"url": "http://127.0.0.1:9/x", "transformation": "x".repeat(70_000)}),
        )
        .await;
    assert_eq!(status, 422);

    let ep = app
        .endpoint(json!({"url": "http://127.0.0.1:9/x", "transformation": RESHAPE}))
        .await;
    let patch = |body: Value| {
        app.req(reqwest::Method::PATCH, &format!("/v1/endpoints/{ep}"))
            .json(&body)
            .send()
    };
    // A bad patch changes nothing.
    let r = patch(json!({"transformation": "function handler( {"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let (_, shown) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(shown["transformation"], RESHAPE);
    // Another field alone leaves it; null removes it.
    let r = patch(json!({"description": "d"})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["transformation"], RESHAPE);
    let r = patch(json!({"transformation": null})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["transformation"],
        Value::Null
    );
    app.stop().await;
}

#[tokio::test]
async fn a_throwing_handler_dead_letters_at_once_with_its_line_and_a_fix_plus_redrive_delivers() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let broken = "function handler(webhook) {\n  const d = webhook.payload.data;\n  webhook.payload = { n: d.missing.deeper };\n  return webhook;\n}";
    let ep = app
        .endpoint(json!({"url": rx.url("/t"), "transformation": broken, "max_attempts": 5}))
        .await;
    app.publish("order.paid", json!({"n": 1})).await;
    let d = settled(&app, &ep, 1, "dead").await;
    // Dead on the first attempt: the budget of 5 was not spent on it.
    assert_eq!(d[0]["attempts"], 1, "{d:?}");
    let error = d[0]["last_error"].as_str().unwrap();
    assert!(error.starts_with("transformation: TypeError: "), "{error}");
    assert!(error.ends_with("at line 3"), "{error}");
    let log = detail(&app, &d[0]).await["attempt_log"].clone();
    assert_eq!(
        (log[0]["sent"].clone(), log[0]["status_code"].clone()),
        (json!(false), Value::Null)
    );
    assert!(rx.received().is_empty(), "nothing reached the receiver");
    // The receiver's health is not blamed: no failure streak, no failures counted.
    let (_, ep_now) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(ep_now["consecutive_failures"], 0);
    let (_, stats) = app.get("/v1/stats/endpoints").await;
    let mine = stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["endpoint_id"] == ep.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (mine["attempts"].clone(), mine["failed"].clone()),
        (json!(0), json!(0)),
        "{mine}"
    );

    let fixed = "function handler(webhook) {\n  webhook.payload = { n: webhook.payload.data.n };\n  return webhook;\n}";
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{ep}"))
        .json(&json!({"transformation": fixed}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = app
        .post(
            &format!("/v1/deliveries/{}/redrive", d[0]["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap(),
        json!({"n": 1})
    );
    settled(&app, &ep, 1, "succeeded").await;
    app.stop().await;
}

#[tokio::test]
async fn a_cancel_is_skipped_not_failed() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let only_paid = "function handler(w) {\n  if (w.eventType !== 'order.paid') w.cancel = true;\n  return w;\n}";
    let ep = app
        .endpoint(json!({"url": rx.url("/c"), "transformation": only_paid}))
        .await;
    app.publish("order.created", json!({"n": 1})).await;
    app.publish("order.paid", json!({"n": 2})).await;
    let d = app
        .wait_deliveries(&format!("endpoint_id={ep}"), WAIT, |d| {
            d.len() == 2
                && d.iter()
                    .all(|x| x["status"] == "skipped" || x["status"] == "succeeded")
        })
        .await;
    let skipped: Vec<&Value> = d.iter().filter(|x| x["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["event_type"], "order.created");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap()["type"],
        "order.paid"
    );
    // Skipped deliveries are listed by their own status.
    let (_, page) = app.get("/v1/deliveries?status=skipped").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_endless_loop_and_a_memory_bomb_are_stopped_and_other_endpoints_keep_going() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| {
            c.transform_timeout = Duration::from_millis(50);
            c.transform_memory = 8 << 20;
        }),
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    let looping = app
        .endpoint(json!({"url": rx.url("/loop"), "event_types": ["loop.*"],
                         "transformation": "function handler(w) { for (;;) {} }"}))
        .await;
    let bomb = app
        .endpoint(json!({"url": rx.url("/bomb"), "event_types": ["bomb.*"],
                         "transformation": "function handler(w) { const a = []; for (;;) a.push('x'.repeat(1 << 16) + a.length); }"}))
        .await;
    let healthy = app
        .endpoint(json!({"url": rx.url("/ok"), "event_types": ["ok.*"],
                         "transformation": "function handler(w) { w.payload = w.payload.data; return w }"}))
        .await;
    // 40 looping events hold one engine thread for 40 budgets (2 s); the
    // healthy endpoint's events, published after them, must not wait for them.
    let batch: Vec<Value> = (0..40)
        .map(|i| json!({"event_type": "loop.tick", "payload": {"i": i}}))
        .collect();
    let (status, _) = app.post("/v1/events/batch", json!({"events": batch})).await;
    assert_eq!(status, 200);
    app.publish("bomb.go", json!({})).await;
    for i in 0..5 {
        app.publish("ok.tick", json!({"i": i})).await;
    }
    let ok = settled(&app, &healthy, 5, "succeeded").await;
    let loops = settled(&app, &looping, 40, "dead").await;
    let bombs = settled(&app, &bomb, 1, "dead").await;
    for d in &loops {
        assert_eq!(
            d["last_error"],
            "transformation: ran past its time budget of 50 ms"
        );
    }
    assert_eq!(
        bombs[0]["last_error"],
        "transformation: ran past its memory cap of 8192 KiB"
    );
    // Ordering, not timing: every healthy delivery finished before the last
    // looping one did, although all the looping ones were queued first.
    let last_loop = loops
        .iter()
        .map(|d| d["updated_at"].as_str().unwrap().to_string())
        .max()
        .unwrap();
    let last_ok = ok
        .iter()
        .map(|d| d["updated_at"].as_str().unwrap().to_string())
        .max()
        .unwrap();
    assert!(
        last_ok < last_loop,
        "healthy done at {last_ok}, loops at {last_loop}"
    );
    assert_eq!(
        rx.received().len(),
        5,
        "only the healthy endpoint's requests went out"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_test_route_shows_the_request_a_cancel_or_the_error_with_its_line() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (status, r) = app
        .post(
            "/v1/transformations/test",
            json!({"code": RESHAPE, "event_type": "order.paid", "payload": {"order": "B-2", "cents": 99},
                   "url": "https://tickets.example/api"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["outcome"], "send");
    assert_eq!(r["request"]["method"], "POST");
    assert_eq!(r["request"]["url"], "https://tickets.example/api/tickets");
    assert_eq!(r["request"]["headers"]["x-source"], "hookit");
    assert_eq!(
        r["request"]["payload"],
        json!({"ticket": "order.paid: B-2", "total": 0.99})
    );

    // The handler sees what the format rendered: a Slack message here.
    let (_, r) = app
        .post(
            "/v1/transformations/test",
            json!({"code": "function handler(w) { w.payload = { seen: typeof w.payload.text }; return w }", "format": "slack"}),
        )
        .await;
    assert_eq!(r["request"]["payload"], json!({"seen": "string"}));

    let (_, r) = app
        .post(
            "/v1/transformations/test",
            json!({"code": "function handler(w) { w.cancel = true; return w }"}),
        )
        .await;
    assert_eq!(
        (r["outcome"].as_str(), r["request"].is_null()),
        (Some("cancel"), true)
    );

    let (status, r) = app
        .post(
            "/v1/transformations/test",
            json!({"code": "function handler(w) {\n  return w.payload.data.nope.x;\n}"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (r["outcome"].as_str(), r["line"].as_u64()),
        (Some("error"), Some(2)),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("transformation: TypeError"),
        "{r}"
    );

    let (_, r) = app
        .post(
            "/v1/transformations/test",
            json!({"code": "function handler(w) { return 42 }"}),
        )
        .await;
    assert_eq!(
        r["error"],
        "transformation: handler must return the webhook object"
    );

    let (status, p) = app
        .post(
            "/v1/transformations/test",
            json!({"code": "function handler(w) { return w }", "format": "fax"}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    app.stop().await;
}
