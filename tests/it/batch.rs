//! Batch publishing (`POST /v1/events/batch`): per-item outcomes, idempotency
//! inside and across batches, limits, tenancy, fan-out, and an unavailable
//! database.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{Options, Receiver, TestApp};

fn no_worker() -> Options {
    Options {
        worker: false,
        ..Default::default()
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    n
}

/// Posts a batch with `key`; returns status and body.
async fn batch_as(app: &TestApp, key: &str, events: Value) -> (u16, Value) {
    let r = app
        .req_as(key, reqwest::Method::POST, "/v1/events/batch")
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn batch(app: &TestApp, events: Value) -> (u16, Value) {
    batch_as(app, &app.key, events).await
}

fn statuses(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn one_bad_item_does_not_refuse_the_others() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        configure: Box::new(|c| c.max_payload = 2048),
    })
    .await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let (status, body) = batch(
        &app,
        json!([
            {"event_type": "order.created", "payload": {"id": 1}},
            {"event_type": "order created", "payload": {"id": 2}},
            {"event_type": "order.created", "payload": [1, 2]},
            {"event_type": "order.created", "payload": {"big": "x".repeat(3000)}},
            {"event_type": "order.created", "payload": {"id": 5}, "idempotency_key": "has space"},
            {"event_type": "order.updated", "payload": {"id": 6}, "idempotency_key": "ok-6"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        statuses(&body),
        ["accepted", "refused", "refused", "refused", "refused", "accepted"]
    );
    assert_eq!(
        (&body["accepted"], &body["replayed"], &body["refused"]),
        (&json!(2), &json!(0), &json!(4))
    );
    let r = &body["results"];
    // Each refusal carries the problem a single publish of that item would get.
    for (i, slug, code) in [
        (1, "invalid-event-type", 422),
        (2, "invalid-payload", 422),
        (3, "payload-too-large", 413),
        (4, "invalid-idempotency-key", 422),
    ] {
        let p = &r[i]["problem"];
        assert_eq!(
            p["type"],
            format!("https://hookit.dev/problems/{slug}"),
            "item {i}: {p}"
        );
        assert_eq!(p["status"], code, "item {i}");
        assert!(!p["detail"].as_str().unwrap().is_empty());
        assert!(r[i].get("id").is_none(), "a refused item has no event id");
    }
    for i in [0, 5] {
        assert!(r[i]["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(r[i]["deliveries"], 1);
        assert!(r[i].get("problem").is_none());
    }
    assert_eq!(r[5]["event_type"], "order.updated");
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    assert_eq!(count(&app, "SELECT count(*) FROM deliveries").await, 2);
    // The accepted items are real events, with the payload as published.
    let (s, ev) = app
        .get(&format!("/v1/events/{}", r[5]["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(ev["payload"], json!({"id": 6}));
    app.stop().await;
}

#[tokio::test]
async fn a_key_repeated_inside_a_batch_stores_one_event() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    app.endpoint(json!({"url": "https://93.184.216.34/b"}))
        .await;
    let item = json!({"event_type": "pay.done", "payload": {"n": 1}, "idempotency_key": "k1"});
    let (status, body) = batch(
        &app,
        json!([
            item,
            {"event_type": "pay.done", "payload": {"n": 2}},
            item,
            {"event_type": "pay.done", "payload": {"n": 3}, "idempotency_key": "k1"},
            item,
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        statuses(&body),
        ["accepted", "accepted", "replayed", "refused", "replayed"]
    );
    let r = &body["results"];
    assert_eq!(r[2]["id"], r[0]["id"]);
    assert_eq!(r[4]["id"], r[0]["id"]);
    assert_eq!(r[2]["created_at"], r[0]["created_at"]);
    assert_eq!(r[2]["deliveries"], 2);
    assert_eq!(
        r[3]["problem"]["type"],
        "https://hookit.dev/problems/idempotency-key-reused"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await,
        1
    );
    assert_eq!(count(&app, "SELECT count(*) FROM deliveries").await, 4);
    app.stop().await;
}

#[tokio::test]
async fn keys_replay_across_batches_and_single_publishes() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let a =
        json!({"event_type": "order.created", "payload": {"id": 1}, "idempotency_key": "order-1"});
    let (_, first) = batch(&app, json!([a])).await;
    assert_eq!(statuses(&first), ["accepted"]);
    let id = first["results"][0]["id"].clone();

    // The same item in a later batch: the original event, nothing new stored.
    let (status, again) = batch(
        &app,
        json!([{"event_type": "order.created", "payload": {"id": 2}}, a]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(statuses(&again), ["accepted", "replayed"]);
    assert_eq!(again["results"][1]["id"], id);
    assert_eq!(
        again["results"][1]["created_at"],
        first["results"][0]["created_at"]
    );
    assert_eq!(again["results"][1]["deliveries"], 1);

    // Keys are shared with single publish, both ways.
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "order-1")
        .json(&json!({"event_type": "order.created", "payload": {"id": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let single: Value = r.json().await.unwrap();
    assert_eq!(single["id"], id);
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "order-9")
        .json(&json!({"event_type": "order.created", "payload": {"id": 9}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let single: Value = r.json().await.unwrap();
    let (_, b) = batch(
        &app,
        json!([{"event_type": "order.created", "payload": {"id": 9}, "idempotency_key": "order-9"}]),
    )
    .await;
    assert_eq!(statuses(&b), ["replayed"]);
    assert_eq!(b["results"][0]["id"], single["id"]);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused() {
    let app = TestApp::spawn_with(no_worker()).await;
    let (_, first) = batch(
        &app,
        json!([{"event_type": "order.created", "payload": {"id": 1}, "idempotency_key": "order-1"}]),
    )
    .await;
    assert_eq!(statuses(&first), ["accepted"]);
    for other in [
        json!({"event_type": "order.created", "payload": {"id": 2}, "idempotency_key": "order-1"}),
        json!({"event_type": "order.updated", "payload": {"id": 1}, "idempotency_key": "order-1"}),
    ] {
        let (status, body) = batch(
            &app,
            json!([other, {"event_type": "order.created", "payload": {"id": 3}}]),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(statuses(&body), ["refused", "accepted"]);
        let p = &body["results"][0]["problem"];
        assert_eq!(
            p["type"],
            "https://hookit.dev/problems/idempotency-key-reused"
        );
        assert_eq!(p["status"], 422);
    }
    // Two refused, the originals and the two unkeyed ones stored.
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn empty_oversized_and_malformed_batches_are_problems() {
    let app = TestApp::spawn_with(no_worker()).await;
    let one = json!({"event_type": "a.b", "payload": {}});
    let problem = |status: u16, body: &Value, slug: &str| {
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["type"], format!("https://hookit.dev/problems/{slug}"));
    };

    let (status, body) = batch(&app, json!([])).await;
    assert_eq!(status, 400);
    problem(400, &body, "batch-empty");
    assert!(body["detail"].as_str().unwrap().contains("1000"));

    let (status, body) = batch(&app, Value::Array(vec![one.clone(); 1001])).await;
    assert_eq!(status, 413);
    problem(413, &body, "batch-too-large");
    assert!(body["detail"].as_str().unwrap().contains("1000"));

    // A shape error anywhere refuses the request as a whole (it is a client bug,
    // not data), with nothing stored.
    for bad in [
        json!({"events": [one, {"event_type": "a.b"}]}),
        json!({"events": [one, {"event_type": "a.b", "payload": {}, "extra": 1}]}),
        json!({"events": [one, {"event_type": 7, "payload": {}}]}),
        json!({"events": [one, "a.b"]}),
        json!({"events": one}),
        json!({"items": [one]}),
    ] {
        let r = app
            .req(reqwest::Method::POST, "/v1/events/batch")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = app
        .req(reqwest::Method::POST, "/v1/events/batch")
        .header("content-type", "text/plain")
        .body(json!({"events": [one]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // The body limit is the batch one (8 MiB by default), not the single one.
    let big = json!({"event_type": "a.b", "payload": {"pad": "x".repeat(9000)}});
    let (status, body) = batch(&app, Value::Array(vec![big; 1000])).await;
    assert_eq!(status, 413);
    problem(413, &body, "payload-too-large");
    assert!(body["detail"].as_str().unwrap().contains("8388608"));
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 0);

    // A full batch of 1,000 events of ~1 KiB (4 times the single-publish body
    // limit) is accepted whole.
    let item = json!({"event_type": "a.b", "payload": {"pad": "x".repeat(1000)}});
    let (status, body) = batch(&app, Value::Array(vec![item; 1000])).await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 1000);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 1000);
    app.stop().await;
}

#[tokio::test]
async fn batches_are_scoped_to_the_key_tenant() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let other = app.key_for("globex").await;
    let item =
        json!({"event_type": "order.created", "payload": {"id": 1}, "idempotency_key": "order-1"});
    let (_, ours) = batch(&app, json!([item])).await;
    let (status, theirs) = batch_as(&app, &other, json!([item])).await;
    assert_eq!(status, 200);
    // The same key in another tenant is another event, which fans out to none of
    // our endpoints.
    assert_eq!(statuses(&theirs), ["accepted"]);
    assert_ne!(theirs["results"][0]["id"], ours["results"][0]["id"]);
    assert_eq!(theirs["results"][0]["deliveries"], 0);
    let theirs_id = theirs["results"][0]["id"].as_str().unwrap();
    let (s, _) = app.get(&format!("/v1/events/{theirs_id}")).await;
    assert_eq!(s, 404, "we cannot see their event");
    assert_eq!(
        count(&app, "SELECT count(*) FROM events WHERE tenant = 'globex'").await,
        1
    );
    // No key, a wrong key: 401 problem.
    for key in ["", "hk_wrong"] {
        let mut req = app
            .http
            .post(format!("{}/v1/events/batch", app.base))
            .json(&json!({"events": [item]}));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn batch_items_fan_out_and_deliver_like_single_events() {
    let rx = Receiver::start().await;
    let app = TestApp::spawn().await;
    let all = app.endpoint(json!({"url": rx.url("/all")})).await;
    let orders = app
        .endpoint(json!({"url": rx.url("/orders"), "event_types": ["order.*"]}))
        .await;
    let created = app
        .endpoint(json!({"url": rx.url("/created"), "event_types": ["order.created"]}))
        .await;
    let paused = app.endpoint(json!({"url": rx.url("/paused")})).await;
    let (s, _) = app
        .post(&format!("/v1/endpoints/{paused}/pause"), json!({}))
        .await;
    assert_eq!(s, 200);

    let types = ["order.created", "order.shipped", "user.signed_up"];
    let mut singles = Vec::new();
    for t in types {
        singles.push(app.publish(t, json!({"via": "single"})).await);
    }
    let (status, body) = batch(
        &app,
        Value::Array(
            types
                .iter()
                .map(|t| json!({"event_type": t, "payload": {"via": "batch"}}))
                .collect(),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let batched: Vec<String> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["deliveries"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [4, 3, 2],
        "all + orders + created + paused (held), then fewer"
    );

    // Each batched event has deliveries to exactly the endpoints its single twin has.
    let endpoints_of = |id: String| {
        let app = &app;
        async move {
            let (s, ev) = app.get(&format!("/v1/events/{id}")).await;
            assert_eq!(s, 200);
            ev["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["endpoint_id"].as_str().unwrap().to_string())
                .collect::<BTreeSet<_>>()
        }
    };
    for (single, batched) in singles.iter().zip(&batched) {
        assert_eq!(
            endpoints_of(single.clone()).await,
            endpoints_of(batched.clone()).await
        );
    }
    assert!(endpoints_of(batched[0].clone()).await.contains(&created));
    assert!(!endpoints_of(batched[2].clone()).await.contains(&orders));

    // And the worker delivers them, signed, with the event id as webhook-id:
    // all 3 + orders 2 + created 1, twice (single and batch); paused holds its 6.
    let got = rx.wait_for(12, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 12);
    let delivered: HashSet<String> = got
        .iter()
        .filter(|r| r.body.windows(5).any(|w| w == b"batch"))
        .map(|r| format!("{} {}", r.path, r.header("webhook-id")))
        .collect();
    let expect: HashSet<String> = [
        ("/all", 0),
        ("/all", 1),
        ("/all", 2),
        ("/orders", 0),
        ("/orders", 1),
        ("/created", 0),
    ]
    .iter()
    .map(|(p, i)| format!("{p} {}", batched[*i]))
    .collect();
    assert_eq!(delivered, expect);
    assert!(got
        .iter()
        .all(|r| r.header("webhook-signature").starts_with("v1,")));
    assert!(got.iter().all(|r| r.path != "/paused"));
    let _ = all;
    app.stop().await;
}

#[tokio::test]
async fn an_unavailable_database_refuses_the_whole_batch() {
    let app = TestApp::spawn_with(no_worker()).await;
    let url = app.cfg.database_url.clone().unwrap();
    // One batch while the database is up (it also caches the API key, so the
    // refusal below comes from the write, not from authentication).
    let (status, _) = batch(&app, json!([{"event_type": "a.b", "payload": {"n": 0}}])).await;
    assert_eq!(status, 200);
    // Every connection of the app's pool is gone: no statement can run.
    app.store.pool().close().await;
    let (status, body) = batch(
        &app,
        json!([
            {"event_type": "a.b", "payload": {"n": 1}},
            {"event_type": "a.b", "payload": {"n": 2}, "idempotency_key": "k"},
        ]),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "https://hookit.dev/problems/unavailable");
    let pool = hookit::db::connect(&url, 1).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "nothing of the refused batch was written");
    pool.close().await;
    app.stop().await;
}
