//! One attempt on the wire: the request [`super::prepare`] decided on, signed
//! over exactly the bytes sent, and its typed outcome with what the response
//! said about the endpoint's rate limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection};
use tracing::{warn, Instrument};

use super::client::{self, HttpClient};
use super::prepare::Outgoing;
use super::resolver::CheckedResolver;
use super::trace;
use crate::db::deliveries::{excerpt, Claimed, RESPONSE_EXCERPT};
use crate::domain::formats::Format;
use crate::domain::ratelimit;
use crate::domain::signing::{signature_header, Secret};
use crate::domain::ssrf::SsrfPolicy;
use crate::domain::state::Outcome;
use crate::domain::transform::Method;
use crate::telemetry::otel::{self, SpanContext};

/// What an attempt came to, with what the attempt log records.
#[derive(Debug)]
pub struct Attempted {
    /// The typed outcome.
    pub outcome: Outcome,
    /// First bytes of the response body.
    pub response_excerpt: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// How long the endpoint's next request must wait, by the response's
    /// rate-limit headers (bucket empty) or a 429's retry-after.
    pub pause: Option<Duration>,
    /// The attempt's span, when spans are exported.
    pub span: Option<SpanContext>,
}

impl Attempted {
    /// The outcome of an attempt that sent nothing (see [`super::prepare`]).
    pub fn without_request(outcome: Outcome, started_at: DateTime<Utc>) -> Self {
        Attempted {
            outcome,
            response_excerpt: None,
            started_at,
            duration: (Utc::now() - started_at).to_std().unwrap_or_default(),
            pause: None,
            span: None,
        }
    }
}

/// Sends webhook requests through one pooled, keep-alive HTTP client.
#[derive(Clone)]
pub struct Dispatcher {
    client: HttpClient,
    ssrf: Arc<SsrfPolicy>,
    default_timeout: Duration,
    user_agent: HeaderValue,
}

impl Dispatcher {
    /// A dispatcher enforcing `ssrf`, with the given timeouts.
    pub fn new(
        ssrf: SsrfPolicy,
        connect_timeout: Duration,
        default_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = client::build(CheckedResolver::new(ssrf.clone()), connect_timeout);
        Ok(Self {
            client,
            ssrf: Arc::new(ssrf),
            default_timeout,
            user_agent: HeaderValue::from_static(concat!("HookIt/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Sends `out`, one attempt of `d`, signed with every secret in `secrets`.
    /// Returns once the receiver no longer holds the request: an abandoned
    /// request's connection is closed first (see [`client`]).
    /// `claim` is the span of the claim that leased `d`, which the attempt's
    /// span links to.
    pub async fn send(
        &self,
        d: &Claimed,
        out: &Outgoing,
        secrets: &[Secret],
        claim: Option<&SpanContext>,
    ) -> Attempted {
        let span = trace::attempt(d, out);
        otel::link(&span, claim);
        let context = otel::context_of(&span);
        let traceparent = trace::traceparent_to_send(context.as_ref(), d);
        let mut attempted = self
            .attempt(d, out, secrets, traceparent.as_deref())
            .instrument(span.clone())
            .await;
        trace::outcome(&span, &attempted.outcome);
        attempted.span = context.and_then(|cx| cx.sampled());
        attempted
    }

    async fn attempt(
        &self,
        d: &Claimed,
        out: &Outgoing,
        secrets: &[Secret],
        traceparent: Option<&str>,
    ) -> Attempted {
        let started_at = Utc::now();
        let clock = Instant::now();
        let finish = |outcome: Outcome, response_excerpt: Option<String>| Attempted {
            outcome,
            response_excerpt,
            started_at,
            duration: clock.elapsed(),
            pause: None,
            span: None,
        };
        let failed = |error: String| Outcome::Failed {
            status: None,
            error,
            retry_after: None,
        };
        // Literal IP hosts never reach the resolver, so check the URL here too. The
        // URL parsed for the check is the one sent (parsed once per attempt).
        let uri: Uri = match self.ssrf.check_url(&out.url) {
            Ok(url) => match url.as_str().parse() {
                Ok(uri) => uri,
                Err(e) => return finish(failed(format!("the URL is not a valid URI: {e}")), None),
            },
            // A URL the transformation chose is refused the same way on every
            // retry: dead at once, like any other transformation error.
            Err(e) if out.url != d.url => {
                let error =
                    format!("transformation: the url it chose is refused by SSRF policy: {e}");
                return finish(Outcome::Refused { error }, None);
            }
            Err(e) => return finish(failed(format!("refused by SSRF policy: {e}")), None),
        };
        let body: Bytes = out.body.clone();
        let timeout = d
            .timeout_ms
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(self.default_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || format!("timed out after {} ms", timeout.as_millis());
        // Signed over the body actually sent, whatever its format or transformation.
        let custom = out.headers.as_ref().unwrap_or(&d.headers);
        let headers = self.headers(
            &out.webhook_id,
            custom,
            &body,
            started_at.timestamp(),
            secrets,
            traceparent,
        );
        let builder = match out.method {
            Method::Post => Request::post(uri),
            Method::Put => Request::put(uri),
        };
        let mut req = builder
            .body(Full::new(body))
            .expect("a request with a checked URI is valid");
        *req.headers_mut() = headers;
        let capture = capture_connection(&mut req);

        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let outcome = failed(describe(&e));
                self.wait_closed(&capture).await;
                return finish(outcome, None);
            }
            Err(_) => {
                let outcome = failed(timed_out());
                self.wait_closed(&capture).await;
                return finish(outcome, None);
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let retry_after = match status {
            429 | 502 | 503 | 504 => header(RETRY_AFTER.as_str())
                .and_then(|v| ratelimit::parse_retry_after(v, Utc::now())),
            _ => None,
        };
        let mut pause = ratelimit::pause(
            ratelimit::Headers {
                remaining: header("x-ratelimit-remaining"),
                reset_after: header("x-ratelimit-reset-after"),
                reset: header("x-ratelimit-reset"),
            },
            Utc::now(),
        );
        // Read at most RESPONSE_EXCERPT bytes; a huge or endless body is cut off and
        // the connection closed, and a slow drip is bounded by the request timeout.
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut body_error = None;
        let mut complete = false;
        while buf.len() < RESPONSE_EXCERPT {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(chunk) = frame.into_data() {
                        buf.extend_from_slice(
                            &chunk[..chunk.len().min(RESPONSE_EXCERPT - buf.len())],
                        )
                    }
                }
                Ok(None) => {
                    complete = true;
                    break;
                }
                Ok(Some(Err(e))) => {
                    body_error = Some(describe_body(&e));
                    break;
                }
                Err(_) => {
                    body_error = Some(timed_out());
                    break;
                }
            }
        }
        if !complete {
            // The excerpt is full: at most one more frame says whether the body ends.
            complete = buf.len() >= RESPONSE_EXCERPT && body.is_end_stream();
        }
        let excerpt_body = (!buf.is_empty()).then(|| excerpt(&buf));
        // A 2xx whose body then failed or timed out still counts as delivered: the
        // receiver accepted the event with its status line.
        let outcome = if (200..300).contains(&status) {
            Outcome::Delivered { status }
        } else if status == 429 {
            // Discord's body carries the precise, fractional wait; its header is
            // rounded. Other receivers' bodies are not trusted for it.
            let retry_after = match d.format() {
                Ok(Format::Discord) => excerpt_body
                    .as_deref()
                    .and_then(ratelimit::body_retry_after)
                    .or(retry_after),
                _ => retry_after,
            };
            if let Some(wait) = retry_after {
                // Everything this process sends the endpoint waits too.
                pause = Some(
                    pause
                        .unwrap_or_default()
                        .max(wait.min(ratelimit::MAX_PAUSE)),
                );
            }
            Outcome::RateLimited {
                status,
                error: "HTTP 429: rate limited (no attempt spent)".into(),
                retry_after,
            }
        } else {
            let mut error = match (300..400).contains(&status) {
                true => format!("HTTP {status} (redirects are not followed)"),
                false => format!("HTTP {status}"),
            };
            if let Some(e) = body_error {
                error.push_str("; reading the response body: ");
                error.push_str(&e);
            }
            Outcome::Failed {
                status: Some(status),
                error,
                retry_after,
            }
        };
        let mut attempted = finish(outcome, excerpt_body);
        attempted.pause = pause;
        if !complete {
            drop(body);
            self.wait_closed(&capture).await;
        }
        attempted
    }

    /// The request headers: the endpoint's own, then the signature and ours.
    fn headers(
        &self,
        msg_id: &str,
        custom: &std::collections::BTreeMap<String, String>,
        body: &[u8],
        timestamp: i64,
        secrets: &[Secret],
        traceparent: Option<&str>,
    ) -> HeaderMap {
        let refs: Vec<&Secret> = secrets.iter().collect();
        let signature = signature_header(&refs, msg_id, timestamp, body);
        let mut headers = HeaderMap::with_capacity(8 + custom.len());
        for (k, v) in custom.iter() {
            // Validated on write; skip anything that no longer parses rather than fail.
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(
            "webhook-id",
            HeaderValue::from_str(msg_id).expect("ids are ASCII"),
        );
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&signature).expect("base64 is ASCII"),
        );
        if let Some(tp) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert("traceparent", tp);
        }
        headers
    }

    /// Waits (bounded) until the connection of an abandoned request is closed, so
    /// that the receiver no longer holds it when the endpoint's slot is freed.
    async fn wait_closed(&self, capture: &CaptureConnection) {
        let Some(closed) = client::abandon(capture) else {
            return;
        };
        if tokio::time::timeout(client::CLOSE_BOUND, closed.wait())
            .await
            .is_err()
        {
            warn!(
                bound_ms = client::CLOSE_BOUND.as_millis() as u64,
                "an abandoned request's connection was not closed in time; freeing its slot anyway"
            );
        }
    }
}

/// A short, secret-free description of a transport error (no URL: it may carry tokens).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let head = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    with_sources(head, std::error::Error::source(e))
}

/// The same for an error while reading the response body.
fn describe_body(e: &hyper::Error) -> String {
    with_sources(&e.to_string(), std::error::Error::source(e))
}

fn with_sources(head: &str, mut src: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut msg = head.to_string();
    let mut depth = 0;
    while let Some(s) = src {
        if depth >= 3 {
            break;
        }
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
        depth += 1;
    }
    msg.truncate(500);
    msg
}
