//! Local fakes of the chat webhooks HookIt's formats target, enforcing their
//! documented contracts: a fake Discord (execute webhook: body shape and limits,
//! 400 `Invalid Form Body` otherwise; 5 requests per 2 s per webhook, answered
//! 429 with `Retry-After`, `X-RateLimit-*` and a JSON `retry_after`, and
//! `X-RateLimit-*` on every response) and a fake Slack (incoming webhook: text
//! or blocks within Block Kit's limits; 429 with `Retry-After`). The fake
//! Discord can also be switched into an outage, answering 500 as Discord does
//! when it has one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Discord's per-webhook bucket: this many requests…
pub const DISCORD_LIMIT: u32 = 5;
/// …per this window.
pub const DISCORD_WINDOW: Duration = Duration::from_secs(2);

/// What a fake saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Accepted messages: headers and body.
    pub accepted: Vec<(HeaderMap, Bytes)>,
    /// Requests refused with 429.
    pub rate_limited: usize,
    /// Requests refused with 400, with the error body.
    pub rejected: Vec<Value>,
    /// Requests answered 500 during an outage.
    pub failed_in_outage: usize,
}

#[derive(Default)]
struct Bucket {
    window_start: Option<Instant>,
    used: u32,
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    /// Slack: answer this many requests with 429 before accepting.
    slack_refusals: Arc<Mutex<u32>>,
    /// Discord: answer every request with 500.
    outage: Arc<Mutex<bool>>,
}

/// A running fake.
pub struct ChatFake {
    /// `http://127.0.0.1:port`
    pub base: String,
    shared: Shared,
}

impl ChatFake {
    /// A fake Discord: `POST /api/webhooks/{id}/{token}`.
    pub async fn discord() -> Self {
        Self::start(Router::new().route("/api/webhooks/{id}/{token}", post(discord))).await
    }

    /// A fake Slack: `POST /services/{team}/{bot}/{token}`; answers the first
    /// `refusals` requests with 429 and `Retry-After: 1`.
    pub async fn slack(refusals: u32) -> Self {
        let fake = Self::start(Router::new().route("/services/{t}/{b}/{x}", post(slack))).await;
        *fake.shared.slack_refusals.lock().unwrap() = refusals;
        fake
    }

    async fn start(router: Router<Shared>) -> Self {
        let shared = Shared::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router.with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, shared }
    }

    /// URL of a path on this fake.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts (true) or ends (false) an outage: Discord answers 500 meanwhile.
    pub fn set_outage(&self, on: bool) {
        *self.shared.outage.lock().unwrap() = on;
    }

    /// What it saw so far.
    pub fn seen(&self) -> Seen {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` messages were accepted.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Seen {
        crate::common::eventually(&format!("{n} messages accepted"), timeout, || async {
            self.seen().accepted.len() >= n
        })
        .await;
        self.seen()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn discord(
    State(s): State<Shared>,
    Path((id, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if *s.outage.lock().unwrap() {
        s.seen.lock().unwrap().failed_in_outage += 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"message": "500: Internal Server Error", "code": 0})),
        )
            .into_response();
    }
    // The bucket, like Discord's: a window opens with its first request.
    let (remaining, reset_after) = {
        let mut buckets = s.buckets.lock().unwrap();
        let b = buckets.entry(format!("{id}/{token}")).or_default();
        let now = Instant::now();
        let start = match b.window_start {
            Some(w) if now.duration_since(w) < DISCORD_WINDOW => w,
            _ => {
                b.used = 0;
                b.window_start = Some(now);
                now
            }
        };
        let reset_after = DISCORD_WINDOW.saturating_sub(now.duration_since(start));
        if b.used >= DISCORD_LIMIT {
            drop(buckets);
            s.seen.lock().unwrap().rate_limited += 1;
            let secs = reset_after.as_secs_f64();
            let limit_headers = rate_headers(0, reset_after);
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"message": "You are being rate limited.", "retry_after": (secs * 1000.0).ceil() / 1000.0, "global": false})),
            )
                .into_response();
            resp.headers_mut().extend(limit_headers);
            resp.headers_mut().insert(
                "retry-after",
                secs.ceil().max(1.0).to_string().parse().unwrap(),
            );
            resp.headers_mut()
                .insert("x-ratelimit-scope", "user".parse().unwrap());
            return resp;
        }
        b.used += 1;
        (DISCORD_LIMIT - b.used, reset_after)
    };
    let mut resp = match validate_discord(&body) {
        Ok(()) => {
            s.seen.lock().unwrap().accepted.push((headers, body));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            s.seen.lock().unwrap().rejected.push(e.clone());
            (StatusCode::BAD_REQUEST, Json(e)).into_response()
        }
    };
    resp.headers_mut()
        .extend(rate_headers(remaining, reset_after));
    resp
}

fn rate_headers(remaining: u32, reset_after: Duration) -> HeaderMap {
    let mut h = HeaderMap::new();
    let ra = reset_after.as_secs_f64();
    h.insert("x-ratelimit-limit", DISCORD_LIMIT.into());
    h.insert("x-ratelimit-remaining", remaining.into());
    h.insert(
        "x-ratelimit-reset",
        format!("{:.3}", unix_now() + ra).parse().unwrap(),
    );
    h.insert(
        "x-ratelimit-reset-after",
        format!("{ra:.3}").parse().unwrap(),
    );
    h.insert("x-ratelimit-bucket", "f4k3bucket".parse().unwrap());
    h
}

/// Discord's execute-webhook body rules; an error is Discord's 400 body.
fn validate_discord(body: &[u8]) -> Result<(), Value> {
    let invalid = |path: &str, msg: &str| json!({"code": 50035, "message": "Invalid Form Body", "errors": {path: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": msg}]}}});
    let v: Value = serde_json::from_slice(body).map_err(
        |_| json!({"code": 50109, "message": "The request body contains invalid JSON."}),
    )?;
    let m = v.as_object().ok_or_else(|| invalid("_", "not an object"))?;
    let len = |v: &Value| v.as_str().map(|s| s.chars().count());
    let content = m.get("content").filter(|c| !c.is_null());
    if let Some(c) = content {
        let n = len(c).ok_or_else(|| invalid("content", "not a string"))?;
        if n > 2000 {
            return Err(invalid("content", "Must be 2000 or fewer in length."));
        }
    }
    let embeds = match m.get("embeds").filter(|e| !e.is_null()) {
        Some(e) => e
            .as_array()
            .ok_or_else(|| invalid("embeds", "not an array"))?
            .clone(),
        None => vec![],
    };
    if content.and_then(len).unwrap_or(0) == 0 && embeds.is_empty() {
        return Err(json!({"code": 50006, "message": "Cannot send an empty message"}));
    }
    if embeds.len() > 10 {
        return Err(invalid("embeds", "Must be 10 or fewer in length."));
    }
    let mut total = 0;
    for (i, e) in embeds.iter().enumerate() {
        let at = |f: &str| format!("embeds.{i}.{f}");
        let e = e
            .as_object()
            .ok_or_else(|| invalid(&at(""), "not an object"))?;
        for (f, max) in [("title", 256), ("description", 4096)] {
            if let Some(v) = e.get(f) {
                let n = len(v).ok_or_else(|| invalid(&at(f), "not a string"))?;
                if n > max {
                    return Err(invalid(
                        &at(f),
                        &format!("Must be {max} or fewer in length."),
                    ));
                }
                total += n;
            }
        }
        if let Some(f) = e.get("footer") {
            let n = len(&f["text"]).ok_or_else(|| invalid(&at("footer.text"), "required"))?;
            if n > 2048 {
                return Err(invalid(
                    &at("footer.text"),
                    "Must be 2048 or fewer in length.",
                ));
            }
            total += n;
        }
        if let Some(t) = e.get("timestamp") {
            let ok = t
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
            if !ok {
                return Err(invalid(&at("timestamp"), "Could not parse timestamp."));
            }
        }
        let fields = match e.get("fields") {
            Some(f) => f
                .as_array()
                .ok_or_else(|| invalid(&at("fields"), "not an array"))?
                .clone(),
            None => vec![],
        };
        if fields.len() > 25 {
            return Err(invalid(&at("fields"), "Must be 25 or fewer in length."));
        }
        for (j, f) in fields.iter().enumerate() {
            for (k, max) in [("name", 256), ("value", 1024)] {
                let n = len(&f[k])
                    .ok_or_else(|| invalid(&at(&format!("fields.{j}.{k}")), "required"))?;
                if n == 0 || n > max {
                    return Err(invalid(
                        &at(&format!("fields.{j}.{k}")),
                        &format!("Must be between 1 and {max} in length."),
                    ));
                }
                total += n;
            }
            if !f.get("inline").is_none_or(Value::is_boolean) {
                return Err(invalid(&at(&format!("fields.{j}.inline")), "not a boolean"));
            }
        }
    }
    if total > 6000 {
        return Err(invalid("embeds", "Embed size exceeds maximum size of 6000"));
    }
    Ok(())
}

async fn slack(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    {
        let mut left = s.slack_refusals.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            s.seen.lock().unwrap().rate_limited += 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "rate_limited",
            )
                .into_response();
        }
    }
    match validate_slack(&body) {
        Ok(()) => {
            s.seen.lock().unwrap().accepted.push((headers, body));
            (StatusCode::OK, "ok").into_response()
        }
        Err(e) => {
            s.seen
                .lock()
                .unwrap()
                .rejected
                .push(Value::String(e.into()));
            (StatusCode::BAD_REQUEST, e).into_response()
        }
    }
}

/// Slack's incoming-webhook rules; an error is Slack's plain-text answer.
fn validate_slack(body: &[u8]) -> Result<(), &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "invalid_payload")?;
    let len = |v: &Value| v.as_str().map(|s| s.chars().count());
    let text = v.get("text").and_then(len).unwrap_or(0);
    let blocks = match v.get("blocks") {
        Some(b) => b.as_array().ok_or("invalid_blocks")?.clone(),
        None => vec![],
    };
    if text == 0 && blocks.is_empty() {
        return Err("no_text");
    }
    if blocks.len() > 50 {
        return Err("invalid_blocks");
    }
    let text_obj = |t: &Value, max: usize| -> bool {
        matches!(t["type"].as_str(), Some("plain_text" | "mrkdwn"))
            && len(&t["text"]).is_some_and(|n| (1..=max).contains(&n))
    };
    for b in &blocks {
        let ok = match b["type"].as_str() {
            Some("header") => b["text"]["type"] == "plain_text" && text_obj(&b["text"], 150),
            Some("section") => {
                let t = b.get("text").map(|t| text_obj(t, 3000));
                let f = b.get("fields").map(|f| {
                    f.as_array().is_some_and(|f| {
                        (1..=10).contains(&f.len()) && f.iter().all(|x| text_obj(x, 2000))
                    })
                });
                t.unwrap_or(true) && f.unwrap_or(true) && (t.is_some() || f.is_some())
            }
            Some("context") => b["elements"].as_array().is_some_and(|e| {
                (1..=10).contains(&e.len()) && e.iter().all(|x| text_obj(x, 3000))
            }),
            Some("divider") => true,
            _ => false,
        };
        if !ok {
            return Err("invalid_blocks");
        }
    }
    Ok(())
}
