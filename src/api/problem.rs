//! RFC 9457 problem details: every API error is `application/problem+json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::event_schema::Violation;
use crate::error::Error;

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://hookit.dev/problems/";

/// A problem-details body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI naming the kind of problem, e.g. `https://hookit.dev/problems/ssrf-loopback`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Each fault in the request, by JSON pointer from the root of the body
    /// (RFC 9457 §3 extension member), when there are several to point at:
    /// e.g. every place a payload breaks its event type's schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Violation>>,
    #[serde(skip)]
    retry_after: Option<u32>,
}

impl Problem {
    /// A problem with a status, a type slug, a title and a detail.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
            retry_after: None,
        }
    }
    /// The same problem, with the faults listed in `errors`.
    pub fn with_errors(mut self, errors: Vec<Violation>) -> Self {
        self.errors = Some(errors);
        self
    }
    /// 400 for a body that is not valid JSON or does not fit the schema.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "The request body is invalid",
            detail,
        )
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }
    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no such {what}"),
        )
    }
    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }
    /// 503 with a Retry-After.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        p.retry_after = Some(2);
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut resp = (status, axum::Json(self)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(what) => Problem::not_found(what),
            Error::Conflict { slug, detail } => Problem::new(StatusCode::CONFLICT, slug, "Conflict", detail),
            Error::Invalid { slug, detail } => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, "Unprocessable request", detail),
            Error::Ssrf(s) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                &s.slug(),
                "Endpoint URL refused",
                format!("{s}. Webhook targets must be public http(s) addresses; operators can exempt ranges with HOOKIT_ALLOW_PRIVATE_TARGETS."),
            ),
            Error::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                // Not "nothing was stored": a commit whose answer was lost with the
                // connection may have gone through. A 2xx always means committed.
                Problem::unavailable(
                    "the database is unavailable, so the request may not have been stored; retry later \
                     (with the same Idempotency-Key, a retry cannot create a duplicate)",
                )
            }
            Error::DatabaseDown(for_how_long) => Problem::unavailable(format!(
                "the database has been unreachable for {} s; nothing was stored. Retry later",
                for_how_long.as_secs()
            )),
            Error::Db(source) => {
                tracing::error!(error = %source, "database error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "an internal error occurred")
            }
            Error::Crypto(source) => {
                tracing::error!(error = %source, "secret decryption failed");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "an internal error occurred")
            }
        }
    }
}
