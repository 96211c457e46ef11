//! The catalog's routes, their problems, and the OpenAPI document.

use serde_json::{json, Value};

use super::*;
use crate::common::TestApp;

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
