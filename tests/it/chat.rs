//! Chat destinations: the `discord` and `slack` formats against local fakes
//! that enforce those services' documented request shape and rate limits.

use std::time::{Duration, Instant};

use hookit::domain::signing::Secret;
use serde_json::{json, Value};

use crate::common::chat::{ChatFake, DISCORD_LIMIT, DISCORD_WINDOW};
use crate::common::TestApp;

const WAIT: Duration = Duration::from_secs(60);

/// Checks the Standard Webhooks signature over the body as received.
fn assert_signed(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) {
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(body, &h)
        .expect("the signature covers the body actually sent");
}

/// Publishes `payload` as written (a `json!` value would sort its members).
async fn publish_raw(app: &TestApp, event_type: &str, payload: &str) {
    let r = app
        .req(reqwest::Method::POST, "/v1/events")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"event_type": "{event_type}", "payload": {payload}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
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

async fn all_succeeded(app: &TestApp, ep: &str, n: usize) -> Vec<Value> {
    app.wait_deliveries(&format!("endpoint_id={ep}"), WAIT, |d| {
        d.len() == n && d.iter().all(|x| x["status"] == "succeeded")
    })
    .await
}

#[tokio::test]
async fn format_is_set_shown_and_changed_through_the_api_and_bad_values_name_the_field() {
    let app = TestApp::spawn_with(crate::common::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (status, ep) = app
        .post("/v1/endpoints", json!({"url": "http://127.0.0.1:9/x"}))
        .await;
    assert_eq!((status, ep["format"].as_str()), (201, Some("standard")));
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            json!({"url": "http://127.0.0.1:9/y", "format": "discord"}),
        )
        .await;
    assert_eq!((status, ep["format"].as_str()), (201, Some("discord")));
    let id = ep["id"].as_str().unwrap();
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{id}"))
        .json(&json!({"format": "slack"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, shown) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(shown["format"], "slack");
    for body in [
        json!({"url": "http://127.0.0.1:9/z", "format": "teams"}),
        json!({"url": "http://127.0.0.1:9/z", "format": "Discord"}),
    ] {
        let r = app
            .req(reqwest::Method::POST, "/v1/endpoints")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let p: Value = r.json().await.unwrap();
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .starts_with("format must be one of"),
            "{p}"
        );
    }
    let r = app
        .req(reqwest::Method::PATCH, &format!("/v1/endpoints/{id}"))
        .json(&json!({"format": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a format that is not a string is a bad body"
    );
    let (_, spec) = app.get("/openapi.json").await;
    assert_eq!(
        spec["components"]["schemas"]["FormatName"]["enum"],
        json!(["standard", "discord", "slack"])
    );
    app.stop().await;
}

#[tokio::test]
async fn the_standard_envelope_is_refused_by_discord_as_the_issue_says() {
    let app = TestApp::spawn().await;
    let discord = ChatFake::discord().await;
    let ep = app
        .endpoint(json!({"url": discord.url("/api/webhooks/1/t"), "max_attempts": 1}))
        .await;
    app.publish("order.created", json!({"id": 1})).await;
    let d = app
        .wait_deliveries(&format!("endpoint_id={ep}"), WAIT, |d| {
            d.len() == 1 && d[0]["status"] == "dead"
        })
        .await;
    assert_eq!(d[0]["last_status_code"], 400);
    assert_eq!(discord.seen().rejected[0]["code"], 50006);
    app.stop().await;
}

#[tokio::test]
async fn a_discord_feed_arrives_readable_within_limits_and_paced_below_the_rate_limit() {
    let app = TestApp::spawn().await;
    let discord = ChatFake::discord().await;
    let secret = Secret::generate().expose();
    let ep = app
        .endpoint(json!({
            "url": discord.url("/api/webhooks/42/feed-token"),
            "format": "discord",
            "secret": secret,
            "max_attempts": 1,
        }))
        .await;
    let n = 3 * DISCORD_LIMIT as usize;
    let started = Instant::now();
    for i in 0..n {
        let payload = format!(
            r#"{{"symbol": "BTC", "price": {}, "note": "{}", "nested": {{"a": [{i}]}}}}"#,
            97000 + i,
            "é".repeat(3000)
        );
        publish_raw(&app, "price.updated", &payload).await;
    }
    let seen = discord.wait_accepted(n, WAIT).await;
    let took = started.elapsed();
    let deliveries = all_succeeded(&app, &ep, n).await;
    assert!(
        seen.rejected.is_empty(),
        "bodies refused: {:?}",
        seen.rejected
    );
    for (headers, body) in &seen.accepted {
        assert_signed(&secret, headers, body);
        let m: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(m["content"], "**price.updated**");
        let fields = m["embeds"][0]["fields"].as_array().unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["symbol", "price", "note", "nested"],
            "publication order"
        );
        assert_eq!(fields[0]["value"], "BTC");
        let note = fields[2]["value"].as_str().unwrap();
        assert_eq!(note.chars().count(), 1024);
        assert!(note.ends_with('…'));
        assert!(headers["webhook-id"].to_str().unwrap().starts_with("evt_"));
    }
    eprintln!(
        "discord feed: {n} messages in {took:?}, {} answered 429",
        seen.rate_limited
    );
    // One request at a time, each paced by the previous response's headers:
    // the feed meets Discord's limit instead of its 429s…
    assert!(
        seen.rate_limited <= 1,
        "{} requests were answered 429",
        seen.rate_limited
    );
    // …and takes the windows it needs, no fewer.
    let windows = (n as u32).div_ceil(DISCORD_LIMIT) - 1;
    assert!(took >= DISCORD_WINDOW * windows, "{took:?}");
    for d in &deliveries {
        assert_eq!(
            d["attempts"].as_i64().unwrap(),
            1 + d["rate_limited"].as_i64().unwrap()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_to_discord_meet_429s_that_spend_no_attempt() {
    let app = TestApp::spawn().await;
    let discord = ChatFake::discord().await;
    let ep = app
        .endpoint(json!({
            "url": discord.url("/api/webhooks/7/burst"),
            "format": "discord",
            "max_attempts": 1,
            "max_in_flight": 4,
        }))
        .await;
    let n = 3 * DISCORD_LIMIT as usize;
    for i in 0..n {
        app.publish("price.updated", json!({"symbol": "ETH", "price": i}))
            .await;
    }
    let seen = discord.wait_accepted(n, WAIT).await;
    let deliveries = all_succeeded(&app, &ep, n).await;
    assert!(seen.rejected.is_empty());
    eprintln!(
        "discord, 4 in flight: {n} messages, {} answered 429",
        seen.rate_limited
    );
    let deferred: i64 = deliveries
        .iter()
        .map(|d| d["rate_limited"].as_i64().unwrap())
        .sum();
    assert_eq!(
        deferred as usize, seen.rate_limited,
        "every 429 was deferred, none spent"
    );
    // With 4 in flight, only requests already on their way when a response
    // empties the bucket can meet a 429: at most 3 per window, not one per
    // delivery per window.
    let windows = n.div_ceil(DISCORD_LIMIT as usize) + 1;
    assert!(
        seen.rate_limited <= 3 * windows,
        "{} requests were answered 429",
        seen.rate_limited
    );
    app.stop().await;
}

#[tokio::test]
async fn a_discord_429_spends_no_attempt_even_with_a_budget_of_one() {
    let app = TestApp::spawn().await;
    let discord = ChatFake::discord().await;
    let url = discord.url("/api/webhooks/9/shared");
    // Another sender has just used this webhook's whole bucket.
    let http = reqwest::Client::new();
    for _ in 0..DISCORD_LIMIT {
        let r = http
            .post(&url)
            .json(&json!({"content": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let ep = app
        .endpoint(json!({"url": url, "format": "discord", "max_attempts": 1}))
        .await;
    app.publish("order.created", json!({"id": 1001})).await;
    let d = all_succeeded(&app, &ep, 1).await;
    let d = detail(&app, &d[0]).await;
    assert_eq!(
        (d["attempts"].as_i64(), d["rate_limited"].as_i64()),
        (Some(2), Some(1))
    );
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(
        (
            log[0]["status_code"].as_i64(),
            log[0]["rate_limited"].as_bool()
        ),
        (Some(429), Some(true))
    );
    assert_eq!(
        (
            log[1]["status_code"].as_i64(),
            log[1]["rate_limited"].as_bool()
        ),
        (Some(204), Some(false))
    );
    // The retry waited for the bucket, as the 429 asked.
    let at = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(log[i]["started_at"].as_str().unwrap()).unwrap()
    };
    assert!((at(1) - at(0)).num_milliseconds() >= 1000, "{log:?}");
    assert_eq!(discord.seen().rate_limited, 1);
    // The endpoint's figures show the 429 as a rate limit, not a failure.
    let (_, stats) = app.get("/v1/stats/endpoints").await;
    let s = &stats["data"][0];
    assert_eq!(
        (
            s["attempts"].as_i64(),
            s["succeeded"].as_i64(),
            s["rate_limited"].as_i64(),
            s["failed"].as_i64(),
            s["success_rate"].as_f64()
        ),
        (Some(2), Some(1), Some(1), Some(0), Some(1.0)),
        "{s}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_slack_endpoint_gets_text_and_blocks_and_its_429s_spend_no_attempt() {
    let app = TestApp::spawn().await;
    let slack = ChatFake::slack(2).await;
    let secret = Secret::generate().expose();
    let ep = app
        .endpoint(json!({
            "url": slack.url("/services/T0/B0/xyz"),
            "format": "slack",
            "secret": secret,
            "max_attempts": 1,
        }))
        .await;
    let payload = r#"{"id": 1001, "customer": "<!channel> & co"}"#;
    publish_raw(&app, "order.created", payload).await;
    let seen = slack.wait_accepted(1, WAIT).await;
    let d = all_succeeded(&app, &ep, 1).await;
    let d = detail(&app, &d[0]).await;
    assert_eq!(
        (d["attempts"].as_i64(), d["rate_limited"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(seen.rate_limited, 2);
    let (headers, body) = &seen.accepted[0];
    assert_signed(&secret, headers, body);
    let m: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        m["text"],
        "order.created: id 1001, customer &lt;!channel&gt; &amp; co"
    );
    assert_eq!(m["blocks"][0]["text"]["text"], "order.created");
    assert_eq!(m["blocks"][1]["fields"][0]["text"], "*id*\n1001");
    let log = d["attempt_log"].as_array().unwrap();
    let rl: Vec<bool> = log
        .iter()
        .map(|a| a["rate_limited"].as_bool().unwrap())
        .collect();
    assert_eq!(rl, [true, true, false]);
    app.stop().await;
}
