//! The event-type catalog: its routes, schema checks at publish (single and
//! batch), the strict switch, deprecation, endpoint subscription warnings, and
//! how quickly a change reaches the validators of this and another API process.

use std::sync::Arc;
use std::time::Duration;

use hookit::api::{self, AppState};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, Options, TestApp};

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

async fn patch(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .req(reqwest::Method::PATCH, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The schema most tests use: an order with a string id and a whole amount.
fn order_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "amount"],
        "properties": {
            "id": {"type": "string"},
            "amount": {"type": "integer", "minimum": 0},
            "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
        }
    })
}

async fn create_order_type(app: &TestApp) {
    let (status, body) = app
        .post(
            "/v1/event-types",
            json!({
                "name": "order.created",
                "description": "An order was placed.",
                "schema": order_schema(),
                "example": {"id": "o-1", "amount": 1999}
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://hookit.dev/problems/")
}

fn pointers(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["pointer"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_catalog_is_created_listed_shown_changed_and_deprecated() {
    let app = TestApp::spawn_with(no_worker()).await;
    create_order_type(&app).await;
    let (status, body) = app
        .post("/v1/event-types", json!({"name": "order.created"}))
        .await;
    assert_eq!((status, problem_type(&body)), (409, "event-type-exists"));
    for name in ["invoice.paid", "customer.updated"] {
        let (status, body) = app.post("/v1/event-types", json!({"name": name})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["schema"], Value::Null);
        assert_eq!(body["deprecated"], false);
    }

    // Shown as written: the schema and the example keep their keys' order.
    let (status, et) = app.get("/v1/event-types/order.created").await;
    assert_eq!(status, 200);
    assert_eq!(et["description"], "An order was placed.");
    assert_eq!(et["schema"], order_schema());
    assert_eq!(et["example"], json!({"id": "o-1", "amount": 1999}));
    let (status, _) = app.get("/v1/event-types/order.nope").await;
    assert_eq!(status, 404);

    // Listed in name order, in cursor pages.
    let (_, page) = app.get("/v1/event-types?limit=2").await;
    let names: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["customer.updated", "invoice.paid"]);
    assert_eq!(page["next_cursor"], "invoice.paid");
    let (_, page) = app.get("/v1/event-types?limit=2&cursor=invoice.paid").await;
    assert_eq!(page["data"][0]["name"], "order.created");
    assert_eq!(page["next_cursor"], Value::Null);

    // Another tenant has a catalog of its own.
    let other = app.key_for("globex").await;
    let r = app
        .req_as(
            &other,
            reqwest::Method::GET,
            "/v1/event-types/order.created",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A change keeps what it does not name; null removes.
    let (status, et) = patch(
        &app,
        "/v1/event-types/order.created",
        json!({"description": "Placed.", "example": null}),
    )
    .await;
    assert_eq!(status, 200, "{et}");
    assert_eq!(et["description"], "Placed.");
    assert_eq!(et["schema"], order_schema());
    assert_eq!(et["example"], Value::Null);

    // Deprecation is idempotent and keeps its first time; PATCH can restore.
    let (status, first) = app
        .post("/v1/event-types/invoice.paid/deprecate", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(first["deprecated"], true);
    let (_, again) = app
        .post("/v1/event-types/invoice.paid/deprecate", json!({}))
        .await;
    assert_eq!(again["deprecated_at"], first["deprecated_at"]);
    let (_, restored) = patch(
        &app,
        "/v1/event-types/invoice.paid",
        json!({"deprecated": false}),
    )
    .await;
    assert_eq!(
        (&restored["deprecated"], &restored["deprecated_at"]),
        (&json!(false), &Value::Null)
    );
    let (status, _) = app
        .post("/v1/event-types/nope.nope/deprecate", json!({}))
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_name_schema_or_example_gets_a_problem_that_points_at_it() {
    let app = TestApp::spawn_with(no_worker()).await;
    let cases = [
        (json!({"name": "order created"}), 422, "invalid-event-type"),
        (json!({"name": "order.*"}), 422, "invalid-event-type"),
        (
            json!({"name": "a.b", "schema": {"type": "integr"}}),
            422,
            "invalid-schema",
        ),
        (
            json!({"name": "a.b", "schema": {"properties": {"n": {"minimum": "zero"}}}}),
            422,
            "invalid-schema",
        ),
        (
            json!({"name": "a.b", "schema": [1, 2]}),
            422,
            "invalid-schema",
        ),
        // Never fetched: a reference outside the schema does not compile.
        (
            json!({"name": "a.b", "schema": {"$ref": "http://127.0.0.1:9/s.json"}}),
            422,
            "invalid-schema",
        ),
        (
            json!({"name": "a.b", "example": [1]}),
            422,
            "invalid-example",
        ),
        (
            json!({"name": "a.b", "schema": order_schema(), "example": {"id": 5, "amount": -1, "lines": [{}]}}),
            422,
            "example-schema-mismatch",
        ),
        (json!({"name": "a.b", "colour": "red"}), 400, "invalid-body"),
        (
            json!({"name": "a.b", "description": "x".repeat(4097)}),
            422,
            "invalid-event-type",
        ),
    ];
    for (body, status, kind) in cases {
        let (s, p) = app.post("/v1/event-types", body.clone()).await;
        assert_eq!((s, problem_type(&p)), (status, kind), "{body} → {p}");
    }
    // Pointers lead to the fault from the root of the request body.
    let (_, p) = app
        .post(
            "/v1/event-types",
            json!({"name": "a.b", "schema": {"properties": {"n": {"minimum": "zero"}}}}),
        )
        .await;
    assert!(pointers(&p).iter().all(|p| p.starts_with("/schema")), "{p}");
    let (_, p) = app
        .post(
            "/v1/event-types",
            json!({"name": "a.b", "schema": order_schema(), "example": {"id": 5, "amount": -1, "lines": [{}]}}),
        )
        .await;
    let mut got = pointers(&p);
    got.sort();
    assert_eq!(got, ["/example/amount", "/example/id", "/example/lines/0"]);
    assert_eq!(count(&app, "SELECT count(*) FROM event_types").await, 0);

    // A change is checked as a whole: a new schema must accept the kept example.
    create_order_type(&app).await;
    let (s, p) = patch(
        &app,
        "/v1/event-types/order.created",
        json!({"schema": {"type": "object", "required": ["currency"]}}),
    )
    .await;
    assert_eq!((s, problem_type(&p)), (422, "example-schema-mismatch"));
    assert_eq!(pointers(&p), ["/example"]);
    let r = app
        .req(reqwest::Method::POST, "/v1/event-types")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let (s, _) = patch(&app, "/v1/event-types/nope.nope", json!({})).await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_payload_that_breaks_its_schema_is_refused_with_pointers() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let (_, _) = app
        .post("/v1/event-types", json!({"name": "order.note"}))
        .await;

    let (status, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": 7, "amount": -3, "lines": [{"sku": "a"}, {"qty": 1}]}}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(problem_type(&p), "payload-schema-mismatch");
    let mut got = pointers(&p);
    got.sort();
    assert_eq!(got, ["/payload/amount", "/payload/id", "/payload/lines/1"]);
    assert!(p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| !e["detail"].as_str().unwrap().is_empty()));
    let (_, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": "o-2"}}),
        )
        .await;
    assert_eq!(pointers(&p), ["/payload"]);
    assert!(p["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("amount"));
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 0);

    // Valid payloads, types without a schema and unknown types are accepted.
    app.publish("order.created", json!({"id": "o-1", "amount": 5}))
        .await;
    app.publish("order.note", json!({"anything": [1, "two"]}))
        .await;
    app.publish("never.heard.of", json!({"x": 1})).await;
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 3);

    // The schema is the tenant's: another tenant's order.created is unchecked.
    let other = app.key_for("globex").await;
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {"id": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_refuses_only_the_items_that_break_their_schema() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let (status, body) = app
        .post(
            "/v1/events/batch",
            json!({"events": [
                {"event_type": "order.created", "payload": {"id": "o-1", "amount": 1}},
                {"event_type": "order.created", "payload": {"id": "o-2", "amount": "ten"}, "idempotency_key": "k2"},
                {"event_type": "other.thing", "payload": {"id": 3}},
                {"event_type": "order.created", "payload": {"amount": 4}},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "refused", "accepted", "refused"]);
    let second = &body["results"][1]["problem"];
    assert_eq!(problem_type(second), "payload-schema-mismatch");
    assert_eq!(pointers(second), ["/payload/amount"]);
    assert_eq!(pointers(&body["results"][3]["problem"]), ["/payload"]);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    // A refused item leaves its idempotency key unused.
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_strict_tenant_refuses_unknown_types_and_only_it() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let (status, s) = app.get("/v1/settings").await;
    assert_eq!(status, 200);
    assert_eq!(s["strict_event_types"], false);
    create_order_type(&app).await;
    app.publish("unlisted.type", json!({})).await;

    let (status, s) = patch(&app, "/v1/settings", json!({"strict_event_types": true})).await;
    assert_eq!((status, &s["strict_event_types"]), (200, &json!(true)));
    let (status, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "unlisted.type", "payload": {}}),
        )
        .await;
    assert_eq!((status, problem_type(&p)), (422, "unknown-event-type"));
    app.publish("order.created", json!({"id": "o", "amount": 1}))
        .await;
    let (_, body) = app
        .post(
            "/v1/events/batch",
            json!({"events": [
                {"event_type": "unlisted.type", "payload": {}},
                {"event_type": "order.created", "payload": {"id": "o", "amount": 2}},
            ]}),
        )
        .await;
    assert_eq!(body["results"][0]["status"], "refused");
    assert_eq!(
        problem_type(&body["results"][0]["problem"]),
        "unknown-event-type"
    );
    assert_eq!(body["results"][1]["status"], "accepted");

    // Other tenants are not strict.
    let other = app.key_for("globex").await;
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "unlisted.type", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Unknown fields are a bad request; off again, unknown types pass again.
    let (status, _) = patch(&app, "/v1/settings", json!({"strict": true})).await;
    assert_eq!(status, 400);
    // serde would fill the patch from an array by position: refused instead.
    let (status, p) = patch(&app, "/v1/settings", json!([false])).await;
    assert_eq!((status, problem_type(&p)), (400, "invalid-body"));
    let (_, s) = app.get("/v1/settings").await;
    assert_eq!(s["strict_event_types"], true);
    patch(&app, "/v1/settings", json!({"strict_event_types": false})).await;
    app.publish("unlisted.type", json!({})).await;
    app.stop().await;
}

#[tokio::test]
async fn a_deprecated_type_is_accepted_and_flagged() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {"id": "o", "amount": 1}}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("deprecation").is_none());

    let (_, et) = app
        .post("/v1/event-types/order.created/deprecate", json!({}))
        .await;
    let at = chrono::DateTime::parse_from_rfc3339(et["deprecated_at"].as_str().unwrap()).unwrap();
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .json(&json!({"event_type": "order.created", "payload": {"id": "o", "amount": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // RFC 9745: `@` and the Unix time of the deprecation.
    assert_eq!(
        r.headers()["deprecation"].to_str().unwrap(),
        format!("@{}", at.timestamp())
    );
    assert!(r.headers()["link"]
        .to_str()
        .unwrap()
        .contains("/v1/event-types/order.created>; rel=\"deprecation\""));

    // Still checked against its schema.
    let (status, _) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": 1}}),
        )
        .await;
    assert_eq!(status, 422);

    let (_, body) = app
        .post(
            "/v1/events/batch",
            json!({"events": [
                {"event_type": "order.created", "payload": {"id": "o", "amount": 3}},
                {"event_type": "other.type", "payload": {}},
            ]}),
        )
        .await;
    assert_eq!(body["results"][0]["status"], "accepted");
    assert_eq!(
        body["results"][0]["warnings"][0]["kind"],
        "deprecated-event-type"
    );
    assert!(body["results"][1].get("warnings").is_none(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_change_reaches_this_process_at_its_next_publish() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    let payload = json!({"id": "o-1", "amount": 5});
    // No type yet: accepted (and the empty catalog is now cached).
    app.publish("order.created", payload.clone()).await;
    create_order_type(&app).await;
    app.publish("order.created", payload.clone()).await;
    let (status, _) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": {"id": 1}}),
        )
        .await;
    assert_eq!(status, 422);

    // A stricter schema (and a matching example) applies at once...
    let (status, body) = patch(
        &app,
        "/v1/event-types/order.created",
        json!({"schema": {"type": "object", "required": ["id", "amount", "currency"]},
               "example": {"id": "o", "amount": 1, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, p) = app
        .post(
            "/v1/events",
            json!({"event_type": "order.created", "payload": payload}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert!(p["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("currency"));
    // ...and so does its removal.
    patch(
        &app,
        "/v1/event-types/order.created",
        json!({"schema": null}),
    )
    .await;
    app.publish("order.created", json!({"id": 1})).await;
    app.stop().await;
}

/// A second API process on the same database, with a validator cache of its own.
struct SecondApi {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SecondApi {
    async fn start(app: &TestApp) -> Self {
        let state = AppState::new(&app.cfg, app.store.clone(), Arc::new(Notify::new()), None)
            .expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(api::serve_on(listener, state, stop.clone()));
        Self { base, stop, task }
    }

    async fn publish(&self, app: &TestApp, body: Value) -> u16 {
        app.http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(&app.key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_change_reaches_another_api_process_within_the_revalidation_interval() {
    let app = TestApp::spawn_with(no_worker()).await;
    app.endpoint(json!({"url": "https://93.184.216.34/a"}))
        .await;
    create_order_type(&app).await;
    let other = SecondApi::start(&app).await;
    let bad =
        json!({"event_type": "order.created", "payload": {"id": "o", "amount": 1, "currency": 1}});
    // The other process compiles the current schema: this payload passes there.
    assert_eq!(other.publish(&app, bad.clone()).await, 202);

    let (status, _) = patch(
        &app,
        "/v1/event-types/order.created",
        json!({"schema": {"type": "object", "properties": {"currency": {"type": "string"}}}}),
    )
    .await;
    assert_eq!(status, 200);
    // This process knows at once; the other within its revalidation interval.
    let (status, _) = app.post("/v1/events", bad.clone()).await;
    assert_eq!(status, 422);
    let limit = hookit::api::catalog::REVALIDATE + Duration::from_secs(2);
    eventually(
        "the other API process to apply the new schema",
        limit,
        || {
            let bad = bad.clone();
            let other = &other;
            let app = &app;
            async move { other.publish(app, bad).await == 422 }
        },
    )
    .await;
    // And the strict switch the same way.
    patch(&app, "/v1/settings", json!({"strict_event_types": true})).await;
    let unknown = json!({"event_type": "un.known", "payload": {}});
    eventually("the other API process to apply strict mode", limit, || {
        let unknown = unknown.clone();
        let other = &other;
        let app = &app;
        async move { other.publish(app, unknown).await == 422 }
    })
    .await;
    other.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn endpoints_are_warned_about_subscriptions_the_catalog_lacks() {
    let app = TestApp::spawn_with(no_worker()).await;
    // No catalog: the tenant has not opted in, nothing to warn about.
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/a", "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(ep.get("warnings").is_none(), "{ep}");

    create_order_type(&app).await;
    app.post("/v1/event-types", json!({"name": "invoice.legacy"}))
        .await;
    app.post("/v1/event-types/invoice.legacy/deprecate", json!({}))
        .await;
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/b",
                   "event_types": ["order.*", "order.created", "refund.*", "customer.deleted", "invoice.legacy", "*"]}),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    let warned: Vec<(&str, &str)> = ep["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["kind"].as_str().unwrap(), w["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        warned,
        [
            ("unknown-event-type", "refund.*"),
            ("unknown-event-type", "customer.deleted"),
            ("deprecated-event-type", "invoice.legacy"),
        ]
    );
    // The endpoint itself is as created, with every subscription.
    assert_eq!(ep["event_types"].as_array().unwrap().len(), 6);

    let id = ep["id"].as_str().unwrap();
    let (status, ep) = patch(
        &app,
        &format!("/v1/endpoints/{id}"),
        json!({"event_types": ["order.created", "order.paid"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ep["warnings"][0]["subject"], "order.paid");
    assert_eq!(ep["warnings"].as_array().unwrap().len(), 1);
    let (_, ep) = patch(
        &app,
        &format!("/v1/endpoints/{id}"),
        json!({"event_types": ["order.*"]}),
    )
    .await;
    assert!(ep.get("warnings").is_none(), "{ep}");
    // Reads carry no warnings.
    let (_, shown) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert!(shown.get("warnings").is_none());
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_spec_documents_the_catalog() {
    let app = TestApp::spawn_with(no_worker()).await;
    let (_, spec) = app.get("/openapi.json").await;
    for (path, method) in [
        ("/v1/event-types", "post"),
        ("/v1/event-types", "get"),
        ("/v1/event-types/{name}", "get"),
        ("/v1/event-types/{name}", "patch"),
        ("/v1/event-types/{name}/deprecate", "post"),
        ("/v1/settings", "get"),
        ("/v1/settings", "patch"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "{method} {path}");
    }
    let problem = &spec["components"]["schemas"]["Problem"]["properties"];
    assert!(problem["errors"].is_object(), "{problem}");
    assert!(spec["components"]["schemas"]["Warning"].is_object());
    app.stop().await;
}
