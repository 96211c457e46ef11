//! The `ordering` and `batch_size` settings over REST.

use serde_json::{json, Value};

use crate::common::{Options, TestApp};

#[tokio::test]
async fn ordering_is_shown_validated_and_patched() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (s, ep) = app
        .post("/v1/endpoints", json!({"url": "https://93.184.216.34/a"}))
        .await;
    assert_eq!(s, 201, "{ep}");
    assert_eq!(ep["ordering"], "none", "the default");
    let (s, bad) = app
        .post(
            "/v1/endpoints",
            json!({"url": "https://93.184.216.34/a", "ordering": "lifo"}),
        )
        .await;
    assert_eq!(s, 422, "{bad}");
    assert!(
        bad["detail"].as_str().unwrap().contains("ordering"),
        "{bad}"
    );
    let id = ep["id"].as_str().unwrap();
    // Queued deliveries follow the endpoint's mode when it changes.
    app.publish("a.b", json!({})).await;
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{id}"))
        .json(&json!({"ordering": "fifo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ordering"], "fifo");
    let (_, shown) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(shown["ordering"], "fifo");
    let (fifo,): (bool,) = sqlx::query_as("SELECT bool_and(fifo) FROM deliveries")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(fifo, "the pending delivery joined the ordered queue");
    app.stop().await;
}

#[tokio::test]
async fn batch_size_is_shown_validated_and_refused_where_it_cannot_apply() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let url = "https://93.184.216.34/a";
    let refused = |body: &Value, needle: &str| {
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{needle}: {body}");
    };
    let (s, body) = app
        .post("/v1/endpoints", json!({"url": url, "batch_size": 5}))
        .await;
    assert_eq!(s, 422, "{body}");
    refused(&body, "needs `ordering: fifo`");
    let (s, body) = app
        .post(
            "/v1/endpoints",
            json!({"url": url, "ordering": "fifo", "batch_size": 101}),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    refused(&body, "batch_size must be from 1 to 100");
    let (s, body) = app
        .post(
            "/v1/endpoints",
            json!({"url": url, "ordering": "fifo", "batch_size": 5, "format": "slack"}),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    refused(&body, "`standard` format");

    let (s, plain) = app.post("/v1/endpoints", json!({"url": url})).await;
    assert_eq!(s, 201, "{plain}");
    assert_eq!(plain["batch_size"], 1, "the default");
    let (s, ep) = app
        .post(
            "/v1/endpoints",
            json!({"url": url, "ordering": "fifo", "batch_size": 50}),
        )
        .await;
    assert_eq!(s, 201, "{ep}");
    assert_eq!(ep["batch_size"], 50);
    let path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
    let patch = |body: Value| app.req(reqwest::Method::PATCH, &path).json(&body).send();
    // A PATCH of one field is checked against the endpoint it would leave.
    for (body, needle) in [
        (json!({"ordering": "none"}), "needs `ordering: fifo`"),
        (json!({"format": "discord"}), "`standard` format"),
        (
            json!({"transformation": "function handler(w) { return w; }"}),
            "transformation",
        ),
    ] {
        let r = patch(body.clone()).await.unwrap();
        assert_eq!(r.status(), 422, "{body}");
        refused(&r.json().await.unwrap(), needle);
    }
    let (_, shown) = app.get(&path).await;
    assert_eq!(
        (shown["ordering"].as_str(), shown["batch_size"].as_i64()),
        (Some("fifo"), Some(50)),
        "a refused PATCH changed nothing"
    );
    let r = patch(json!({"ordering": "none", "batch_size": 1}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let back: Value = r.json().await.unwrap();
    assert_eq!(
        (back["ordering"].as_str(), back["batch_size"].as_i64()),
        (Some("none"), Some(1))
    );
    app.stop().await;
}
