//! The HTTP API: auth, tenancy, problem details, validation, pagination, spec.

use serde_json::{json, Value};

use crate::common::{Options, TestApp};

async fn count(app: &TestApp, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    n
}

fn no_worker() -> Options {
    Options {
        worker: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_v1_route_requires_a_valid_key() {
    let app = TestApp::spawn_with(no_worker()).await;
    for (method, path) in [
        ("GET", "/v1/endpoints"),
        ("POST", "/v1/events"),
        ("GET", "/v1/deliveries"),
        ("POST", "/v1/dead-letters/redrive"),
    ] {
        let m: reqwest::Method = method.parse().unwrap();
        let r = app
            .http
            .request(m.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without a key");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], 401);
        assert!(p["type"].as_str().unwrap().starts_with("https://"));
        let r = app.req_as("hk_wrong", m, path).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a wrong key");
    }
    app.stop().await;
}

#[tokio::test]
async fn tenants_see_only_their_own_objects() {
    let app = TestApp::spawn_with(no_worker()).await;
    let ep = app
        .endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let event = app.publish("a.b", json!({})).await;
    let other = app.key_for("globex").await;
    for path in [
        format!("/v1/endpoints/{ep}"),
        format!("/v1/events/{event}"),
        format!("/v1/endpoints/{ep}/secret"),
    ] {
        let r = app
            .req_as(&other, reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = app
        .req_as(&other, reqwest::Method::GET, "/v1/deliveries")
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 0);
    // Another tenant's events do not fan out to our endpoints.
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "a.b", "payload": {}}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["deliveries"], 0);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_stores_nothing() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        configure: Box::new(|c| c.max_payload = 2048),
    })
    .await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let post_raw = |body: String, ct: &'static str| {
        app.req(reqwest::Method::POST, "/v1/events")
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(String, &str, u16)> = vec![
        ("{not json".into(), "application/json", 400),
        (r#"{"payload": {}}"#.into(), "application/json", 400),
        (r#"{"event_type": "a.b"}"#.into(), "application/json", 400),
        (
            r#"{"event_type": "a.b", "payload": {}, "extra": 1}"#.into(),
            "application/json",
            400,
        ),
        (
            r#"{"event_type": "a b", "payload": {}}"#.into(),
            "application/json",
            422,
        ),
        (
            format!(
                r#"{{"event_type": "{}", "payload": {{}}}}"#,
                "a".repeat(200)
            ),
            "application/json",
            422,
        ),
        (
            r#"{"event_type": "a.b", "payload": {}}"#.into(),
            "text/plain",
            415,
        ),
        (
            format!(
                r#"{{"event_type": "a.b", "payload": "{}"}}"#,
                "x".repeat(3000)
            ),
            "application/json",
            413,
        ),
        (
            format!(
                r#"{{"event_type": "a.b", "payload": "{}"}}"#,
                "x".repeat(100_000)
            ),
            "application/json",
            413,
        ),
        (
            format!(
                r#"{{"event_type": "a.b", "payload": {}{}}}"#,
                "[".repeat(40),
                "]".repeat(40)
            ),
            "application/json",
            422,
        ),
    ];
    for (body, ct, want) in cases {
        let r = post_raw(body.clone(), ct).await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{body:.60}"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(status, want, "{body:.60} -> {p}");
        assert_eq!(p["status"], want);
        assert!(p["title"].is_string() && p["detail"].is_string() && p["type"].is_string());
    }
    let (status, p) = app.get("/v1/deliveries?status=bogus").await;
    assert_eq!(status, 422, "{p}");
    let (status, _) = app.get("/v1/deliveries?cursor=nonsense").await;
    assert_eq!(status, 422);
    assert_eq!(count(&app, "events").await, 0);
    assert_eq!(count(&app, "deliveries").await, 0);

    for bad in [
        json!({"url": "https://93.184.216.34/a", "event_types": ["bad pattern"]}),
        json!({"url": "https://93.184.216.34/a", "max_attempts": 0}),
        json!({"url": "https://93.184.216.34/a", "headers": {"webhook-id": "x"}}),
        json!({"url": "https://93.184.216.34/a", "secret": "nope"}),
    ] {
        let (status, p) = app.post("/v1/endpoints", bad.clone()).await;
        assert_eq!(status, 422, "{bad} -> {p}");
    }
    assert_eq!(count(&app, "endpoints").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn endpoints_crud_never_shows_the_secret() {
    let app = TestApp::spawn_with(no_worker()).await;
    let (status, ep) = app.post("/v1/endpoints", json!({"url": "https://93.184.216.34/a", "description": "orders", "event_types": ["order.*"]})).await;
    assert_eq!(status, 201);
    assert!(ep["id"].as_str().unwrap().starts_with("ep_"));
    assert_eq!(ep["event_types"], json!(["order.*"]));
    assert!(ep.get("secret").is_none() && !ep.to_string().contains("whsec_"));
    let id = ep["id"].as_str().unwrap();
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{id}"))
        .json(&json!({"description": "all orders", "max_attempts": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(
        (
            patched["description"].as_str(),
            patched["max_attempts"].as_i64()
        ),
        (Some("all orders"), Some(9))
    );
    let (_, secret) = app.get(&format!("/v1/endpoints/{id}/secret")).await;
    assert!(secret["secret"].as_str().unwrap().starts_with("whsec_"));
    let (status, _) = app.get("/v1/endpoints/ep_nonsense").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn lists_paginate_with_cursors() {
    let app = TestApp::spawn_with(no_worker()).await;
    for i in 0..5 {
        app.endpoint(json!({"url": format!("https://93.184.216.34/{i}")}))
            .await;
    }
    for _ in 0..7 {
        app.publish("a.b", json!({})).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (_, page) = app.get(&format!("/v1/deliveries?limit=10{q}")).await;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 35);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, no repeats");
    sorted.dedup();
    assert_eq!(sorted.len(), 35);
    let (_, page) = app.get("/v1/endpoints?limit=2").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn event_detail_shows_payload_and_deliveries() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let id = app
        .publish("order.created", json!({"total": 12.5, "currency": "EUR"}))
        .await;
    let (status, ev) = app.get(&format!("/v1/events/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(ev["payload"], json!({"total": 12.5, "currency": "EUR"}));
    assert_eq!(ev["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(ev["deliveries"][0]["status"], "pending");
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let app = TestApp::spawn_with(no_worker()).await;
    let get = |p: &str| app.http.get(format!("{}{p}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let spec: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    for path in [
        "/v1/endpoints",
        "/v1/events",
        "/v1/deliveries",
        "/v1/dead-letters/redrive",
        "/v1/endpoints/{id}/secret/rotate",
    ] {
        assert!(spec["paths"][path].is_object(), "spec lacks {path}");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    let html = get("/").await.unwrap();
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    app.stop().await;
}

#[tokio::test]
async fn a_payload_must_be_an_object_and_a_limit_within_its_range() {
    let app = TestApp::spawn_with(no_worker()).await;
    let ep = app
        .endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    for (payload, kind) in [
        (json!(true), "a boolean"),
        (json!([1, 2]), "an array"),
        (json!("text"), "a string"),
        (json!(42), "a number"),
        (json!(null), "null"),
    ] {
        let (status, p) = app
            .post(
                "/v1/events",
                json!({"event_type": "a.b", "payload": payload}),
            )
            .await;
        assert_eq!(status, 422, "{payload}: {p}");
        assert!(
            p["type"].as_str().unwrap().ends_with("invalid-payload")
                && p["detail"].as_str().unwrap().contains(kind),
            "{payload}: {p}"
        );
        if payload.is_null() {
            continue; // the test event's payload is optional: null means its default
        }
        let (status, _) = app
            .post(
                &format!("/v1/endpoints/{ep}/test"),
                json!({"payload": payload}),
            )
            .await;
        assert_eq!(status, 422, "test event with {payload}");
    }
    let (status, _) = app
        .post("/v1/events", json!({"event_type": "a.b", "payload": {}}))
        .await;
    assert_eq!(status, 202, "an empty object is a payload");

    for path in ["/v1/endpoints", "/v1/deliveries"] {
        for bad in ["-5", "0", "1001", "ten"] {
            let (status, p) = app.get(&format!("{path}?limit={bad}")).await;
            assert_eq!(status, 400, "{path}?limit={bad}: {p}");
            assert!(
                p["detail"].as_str().unwrap().contains("limit"),
                "the problem names the parameter: {p}"
            );
        }
        let (status, _) = app.get(&format!("{path}?limit=1000")).await;
        assert_eq!(status, 200, "{path}?limit=1000");
    }
    app.stop().await;
}
