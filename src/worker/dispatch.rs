//! One attempt on the wire: a signed POST, and its typed outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use super::resolver::CheckedResolver;
use crate::db::deliveries::{excerpt, Claimed, RESPONSE_EXCERPT};
use crate::domain::ids::EventId;
use crate::domain::signing::{signature_header, Secret};
use crate::domain::ssrf::SsrfPolicy;
use crate::domain::state::{parse_retry_after, Outcome};

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
}

/// Sends webhook requests through one pooled, keep-alive HTTP client.
#[derive(Clone)]
pub struct Dispatcher {
    client: reqwest::Client,
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
        let client = reqwest::Client::builder()
            // Redirects are failures: following one could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(CheckedResolver::new(ssrf.clone())))
            // No ambient proxy: a proxy would bypass the address checks.
            .no_proxy()
            .build()?;
        Ok(Self {
            client,
            ssrf: Arc::new(ssrf),
            default_timeout,
            user_agent: HeaderValue::from_static(concat!("HookIt/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Sends one attempt of `d`, signed with every secret in `secrets`.
    pub async fn send(&self, d: &Claimed, secrets: &[Secret]) -> Attempted {
        let started_at = Utc::now();
        let clock = Instant::now();
        let finish = |outcome: Outcome, response_excerpt: Option<String>| Attempted {
            outcome,
            response_excerpt,
            started_at,
            duration: clock.elapsed(),
        };
        // Literal IP hosts never reach the resolver, so check the URL here too. The
        // URL parsed for the check is the one sent (parsed once per attempt).
        let url = match self.ssrf.check_url(&d.url) {
            Ok(url) => url,
            Err(e) => {
                return finish(
                    Outcome::Failed {
                        status: None,
                        error: format!("refused by SSRF policy: {e}"),
                        retry_after: None,
                    },
                    None,
                )
            }
        };
        let timeout = d
            .timeout_ms
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(self.default_timeout);
        let msg_id = EventId::from_uuid(d.event_id).to_string();
        let timestamp = started_at.timestamp();
        let refs: Vec<&Secret> = secrets.iter().collect();
        let signature = signature_header(&refs, &msg_id, timestamp, d.body.as_bytes());

        let mut headers = HeaderMap::with_capacity(8 + d.headers.len());
        for (k, v) in d.headers.iter() {
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
            HeaderValue::from_str(&msg_id).expect("ids are ASCII"),
        );
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&signature).expect("base64 is ASCII"),
        );
        if let Some(tp) = d
            .traceparent
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            headers.insert("traceparent", tp);
        }

        let req = self
            .client
            .post(url)
            .headers(headers)
            .timeout(timeout)
            .body(d.body.clone());
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return finish(
                    Outcome::Failed {
                        status: None,
                        error: describe(&e, timeout),
                        retry_after: None,
                    },
                    None,
                )
            }
        };
        let status = resp.status().as_u16();
        let retry_after = match status {
            429 | 502 | 503 | 504 => resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now())),
            _ => None,
        };
        // Read at most RESPONSE_EXCERPT bytes; a huge or endless body is cut off and
        // the connection dropped, and a slow drip is bounded by the request timeout.
        let mut resp = resp;
        let mut buf: Vec<u8> = Vec::new();
        let mut body_error = None;
        while buf.len() < RESPONSE_EXCERPT {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_EXCERPT - buf.len())])
                }
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(describe(&e, timeout));
                    break;
                }
            }
        }
        let body = (!buf.is_empty()).then(|| excerpt(&buf));
        // A 2xx whose body then failed or timed out still counts as delivered: the
        // receiver accepted the event with its status line.
        let outcome = if (200..300).contains(&status) {
            Outcome::Delivered { status }
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
        finish(outcome, body)
    }
}

/// A short, secret-free description of a transport error (no URL: it may carry tokens).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    let mut msg = if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
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
