//! Request limits.

use serde_json::{json, Value};

use crate::common::{Options, TestApp};

#[tokio::test]
async fn limits_refuse_clearly_and_store_nothing() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        configure: Box::new(|c| c.max_endpoints_per_tenant = 3),
    })
    .await;
    let count = || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM endpoints WHERE tenant = 'acme' AND deleted_at IS NULL",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        n
    };
    // Concurrent creations cannot overshoot the cap.
    let attempts = (0..6).map(|i| {
        app.post(
            "/v1/endpoints",
            json!({"url": format!("https://93.184.216.34/{i}")}),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 3, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(
            body["type"],
            "https://hookit.dev/problems/too-many-endpoints"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("at most 3"),
            "{body}"
        );
    }
    assert_eq!(count().await, 3);
    // Another tenant has its own allowance; a deleted endpoint frees a place.
    let other = app.key_for("other").await;
    let r = app
        .req_as(&other, reqwest::Method::POST, "/v1/endpoints")
        .json(&json!({"url": "https://93.184.216.34/o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let gone = created[0]["id"].as_str().unwrap();
    assert_eq!(
        app.req(reqwest::Method::DELETE, &format!("/v1/endpoints/{gone}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        app.post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/again"})
        )
        .await
        .0,
        201
    );
    assert_eq!(count().await, 3);

    // Endpoint URLs longer than 2048 bytes, on create and on change.
    let long_url = format!("https://93.184.216.34/{}", "a".repeat(2048));
    let (status, body) = app.post("/v1/endpoints", json!({"url": long_url})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("2048"), "{body}");
    let keep = created[1]["id"].as_str().unwrap();
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{keep}"))
        .json(&json!({"url": long_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let (_, shown) = app.get(&format!("/v1/endpoints/{keep}")).await;
    assert_eq!(
        shown["url"], created[1]["url"],
        "a refused change changes nothing"
    );

    // Oversized request heads: a 64 KiB header, and a 16 KiB request target.
    let events_before = count_rows(&app, "events").await;
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("x-padding", "p".repeat(64 * 1024))
        .json(&json!({"event_type": "a.b", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("idempotency-key", "k".repeat(64 * 1024))
        .json(&json!({"event_type": "a.b", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = app
        .req(
            reqwest::Method::GET,
            &format!("/v1/deliveries?event_type={}", "t".repeat(16 * 1024)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Query strings that do not parse are problems too (not axum's plain text), and
    // the spec says that errors are problem+json.
    let r = app
        .req(reqwest::Method::GET, "/v1/deliveries?limit=lots")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let (_, spec) = app.get("/openapi.json").await;
    let refused = &spec["paths"]["/v1/events"]["post"]["responses"]["503"]["content"];
    assert!(refused["application/problem+json"].is_object(), "{refused}");
    assert_eq!(
        count_rows(&app, "events").await,
        events_before,
        "refused requests store nothing"
    );
    app.stop().await;
}

async fn count_rows(app: &TestApp, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    n
}
