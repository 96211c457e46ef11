//! What a transformation sees and what it may hand back, checked: the pure half
//! of per-endpoint transformations (the engine that runs the code is
//! `crate::transform`).
//!
//! The user's JavaScript defines `function handler(webhook)`, as on Svix. It gets
//! `{eventType, payload, url, method, headers}`, where `payload` is the body the
//! endpoint's format rendered (the Standard Webhooks envelope, or the Discord or
//! Slack message): a transformation runs *after* the format. It returns the
//! object, changed: a new `payload` (any JSON, sent as the body), other
//! `headers`, a `url` or `method` (`POST` or `PUT`), or `cancel: true` to skip
//! the delivery. Everything it returns is checked here before anything is sent,
//! and the signature is computed over the body that is actually sent.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest transformation source accepted.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// Largest body a transformation may produce.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Most headers a transformation may set.
pub const MAX_HEADERS: usize = 20;

/// Headers HookIt sets itself. Neither an endpoint's settings nor its
/// transformation may set them: the signature headers must be ours, and the
/// framing ones must match the body we send.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "traceparent",
    "upgrade",
    "te",
    "keep-alive",
];

/// The content hash code is keyed by: the `transformation_sha` column, and the
/// workers' caches of source and compiled handlers.
pub fn code_sha(code: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(code.as_bytes()).into()
}

/// Whether `name` (any case) is one HookIt sets itself.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Why a transformation did not produce a request. Every variant is
/// deterministic for a given code and event, so a delivery that meets one is
/// dead-lettered at once rather than retried against the receiver. Messages
/// carry the engine's words and a line number, never the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// The source does not compile, or defines no `handler` function.
    Compile(String),
    /// The handler threw (message with its line, when known).
    Threw(String),
    /// The handler ran past its time budget.
    Timeout {
        /// The budget, in ms.
        budget_ms: u64,
    },
    /// The handler ran past its memory cap.
    OutOfMemory {
        /// The cap, in bytes.
        cap: usize,
    },
    /// The handler returned something that is not a sendable webhook.
    BadReturn(String),
    /// The engine could not run (no thread left): not the code's fault.
    Unavailable,
}

impl TransformError {
    /// Whether the same code on the same event would fail the same way, so a
    /// retry could only spend the receiver's budget (every error but
    /// [`TransformError::Unavailable`]).
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, TransformError::Unavailable)
    }

    /// The line of the user's code the message points at, when it names one.
    pub fn line(&self) -> Option<u32> {
        let (TransformError::Compile(m) | TransformError::Threw(m)) = self else {
            return None;
        };
        let at = m.rfind(" at line ")? + " at line ".len();
        m[at..].trim_end().parse().ok()
    }
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("transformation: ")?;
        match self {
            TransformError::Compile(m) => write!(f, "does not compile: {m}"),
            TransformError::Threw(m) => f.write_str(m),
            TransformError::Timeout { budget_ms } => {
                write!(f, "ran past its time budget of {budget_ms} ms")
            }
            TransformError::OutOfMemory { cap } => {
                write!(f, "ran past its memory cap of {} KiB", cap / 1024)
            }
            TransformError::BadReturn(m) => f.write_str(m),
            TransformError::Unavailable => f.write_str("the engine is not running"),
        }
    }
}

impl std::error::Error for TransformError {}

/// The JSON the handler receives, built as text around the already-rendered
/// body so the payload is parsed once, by the engine.
pub fn input_json(
    event_type: &str,
    payload: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
) -> String {
    let mut s = String::with_capacity(payload.len() + url.len() + 96);
    s.push_str("{\"eventType\":");
    s.push_str(&serde_json::to_string(event_type).expect("a string serializes"));
    s.push_str(",\"method\":\"POST\",\"url\":");
    s.push_str(&serde_json::to_string(url).expect("a string serializes"));
    s.push_str(",\"headers\":");
    s.push_str(&serde_json::to_string(headers).expect("a string map serializes"));
    s.push_str(",\"payload\":");
    s.push_str(payload);
    s.push('}');
    s
}

/// The request a transformation asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// Send this.
    Send(Request),
    /// `cancel: true`: skip this delivery (recorded as skipped, not failed).
    Cancel,
}

/// A request to send: the body and what may differ from the endpoint's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The body, compact JSON.
    pub body: String,
    /// The URL (still checked against the SSRF policy when sent).
    pub url: String,
    /// `POST` or `PUT`.
    pub method: Method,
    /// The custom headers to send (they replace the endpoint's).
    pub headers: BTreeMap<String, String>,
}

/// The methods a transformation may choose, as on Svix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// The default.
    #[default]
    Post,
    /// For receivers that take a resource.
    Put,
}

impl Method {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

#[derive(Deserialize)]
struct Returned<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    cancel: Option<bool>,
}

/// Checks what the handler returned (`JSON.stringify` of it; `None` when it
/// returned `undefined` or a function).
pub fn parse_output(json: Option<&str>) -> Result<Rewritten, TransformError> {
    let bad = |m: &str| TransformError::BadReturn(m.to_string());
    let json = json.ok_or_else(|| bad("handler returned nothing; return the webhook object"))?;
    if !json.starts_with('{') {
        return Err(bad("handler must return the webhook object"));
    }
    let r: Returned = serde_json::from_str(json).map_err(|e| {
        // serde's words name the field and the type, never the value.
        TransformError::BadReturn(format!("the returned webhook is malformed: {e}"))
    })?;
    if r.cancel == Some(true) {
        return Ok(Rewritten::Cancel);
    }
    let payload = r
        .payload
        .ok_or_else(|| bad("the returned webhook has no payload"))?;
    let body = payload.get();
    if body.len() > MAX_OUTPUT_BYTES {
        return Err(TransformError::BadReturn(format!(
            "the payload is {} bytes; at most {MAX_OUTPUT_BYTES} are sent",
            body.len()
        )));
    }
    let method = match r.method.as_deref() {
        None => Method::Post,
        Some(m) if m.eq_ignore_ascii_case("POST") => Method::Post,
        Some(m) if m.eq_ignore_ascii_case("PUT") => Method::Put,
        Some(_) => return Err(bad("method must be POST or PUT")),
    };
    let url = r
        .url
        .ok_or_else(|| bad("the returned webhook has no url"))?;
    let headers = r.headers.unwrap_or_default();
    if headers.len() > MAX_HEADERS {
        return Err(TransformError::BadReturn(format!(
            "at most {MAX_HEADERS} headers"
        )));
    }
    for (k, v) in &headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(TransformError::BadReturn(format!(
                "`{}` is not a valid header name",
                k.chars().take(64).collect::<String>()
            )));
        }
        if is_reserved_header(k) {
            return Err(TransformError::BadReturn(format!(
                "header `{k}` is set by HookIt and cannot be changed"
            )));
        }
        if v.len() > 4096 || http::HeaderValue::from_str(v).is_err() {
            return Err(TransformError::BadReturn(format!(
                "the value of header `{k}` is not a valid header value"
            )));
        }
    }
    Ok(Rewritten::Send(Request {
        body: body.to_string(),
        url,
        method,
        headers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(json: &str) -> Request {
        match parse_output(Some(json)).unwrap() {
            Rewritten::Send(r) => r,
            Rewritten::Cancel => panic!("cancelled"),
        }
    }

    #[test]
    fn the_input_is_valid_json_around_the_rendered_body() {
        let mut h = BTreeMap::new();
        h.insert("x-team".to_string(), "a\"b".to_string());
        let s = input_json(
            "order.paid",
            r#"{"a":[1,2]}"#,
            "https://r.example/x?y=\"",
            &h,
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["eventType"], "order.paid");
        assert_eq!(v["payload"]["a"][1], 2);
        assert_eq!(v["headers"]["x-team"], "a\"b");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["url"], "https://r.example/x?y=\"");
    }

    #[test]
    fn the_payload_is_sent_as_the_handler_serialized_it() {
        let r = send(
            r#"{"eventType":"x","payload":{"content":"hi","n":[1]},"url":"https://a.example/","method":"put","headers":{"X-A":"1"}}"#,
        );
        assert_eq!(r.body, r#"{"content":"hi","n":[1]}"#);
        assert_eq!(r.method, Method::Put);
        assert_eq!(r.headers["X-A"], "1");
        // Any JSON is a payload, a string or a number too.
        assert_eq!(send(r#"{"payload":"plain","url":"u"}"#).body, "\"plain\"");
    }

    #[test]
    fn cancel_skips_whatever_else_came_back() {
        assert_eq!(
            parse_output(Some(r#"{"cancel":true}"#)).unwrap(),
            Rewritten::Cancel
        );
        assert!(matches!(
            parse_output(Some(r#"{"cancel":false,"payload":1,"url":"u"}"#)).unwrap(),
            Rewritten::Send(_)
        ));
    }

    #[test]
    fn bad_returns_are_refused_with_a_reason() {
        let err = |j: Option<&str>| match parse_output(j) {
            Err(TransformError::BadReturn(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(None).contains("returned nothing"));
        assert!(err(Some("[1]")).contains("webhook object"));
        assert!(err(Some(r#"{"url":"u"}"#)).contains("no payload"));
        assert!(err(Some(r#"{"payload":1,"url":"u","method":"DELETE"}"#)).contains("POST or PUT"));
        assert!(err(Some(
            r#"{"payload":1,"url":"u","headers":{"webhook-signature":"v1,x"}}"#
        ))
        .contains("set by HookIt"));
        assert!(err(Some(r#"{"payload":1,"url":"u","headers":{"x":1}}"#)).contains("malformed"));
        assert!(err(Some(
            r#"{"payload":1,"url":"u","headers":{"bad name":"1"}}"#
        ))
        .contains("not a valid header name"));
        assert!(
            err(Some(r#"{"payload":1,"url":"u","headers":{"x":"a\nb"}}"#))
                .contains("not a valid header value")
        );
        let big = format!(
            r#"{{"payload":"{}","url":"u"}}"#,
            "x".repeat(MAX_OUTPUT_BYTES)
        );
        assert!(err(Some(&big)).contains("at most"));
    }

    #[test]
    fn errors_say_they_come_from_the_transformation() {
        let e = TransformError::Threw("TypeError: x is undefined at line 3".into());
        assert_eq!(
            e.to_string(),
            "transformation: TypeError: x is undefined at line 3"
        );
        assert!(e.is_deterministic());
        assert_eq!(e.line(), Some(3));
        assert_eq!(TransformError::Threw("Error: no line".into()).line(), None);
        assert!(!TransformError::Unavailable.is_deterministic());
        assert_eq!(
            TransformError::Timeout { budget_ms: 50 }.to_string(),
            "transformation: ran past its time budget of 50 ms"
        );
    }
}
