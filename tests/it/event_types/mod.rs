//! The event-type catalog: its routes, schema checks at publish (single and
//! batch), the strict switch, deprecation, endpoint subscription warnings, and
//! how quickly a change reaches the validators of this and another API process.
//!
//! - `catalog`: the routes, their problems, and the OpenAPI document;
//! - `publish`: schema checks at publish, the strict switch, deprecation;
//! - `propagation`: how soon a change reaches this and another API process;
//! - `subscriptions`: warnings about endpoints' subscriptions.

mod catalog;
mod propagation;
mod publish;
mod subscriptions;

use serde_json::{json, Value};

use crate::common::{Options, TestApp};

pub fn no_worker() -> Options {
    Options {
        worker: false,
        ..Default::default()
    }
}

pub async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    n
}

pub async fn patch(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.send_json(reqwest::Method::PATCH, path, body).await
}

/// The schema most tests use: an order with a string id and a whole amount.
pub fn order_schema() -> Value {
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

pub async fn create_order_type(app: &TestApp) {
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

pub fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://hookit.dev/problems/")
}

pub fn pointers(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["pointer"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}
