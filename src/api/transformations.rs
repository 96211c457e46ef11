//! `/v1/transformations/test`: runs a transformation on a sample event and
//! returns the request it would make, with no delivery; and the compile check
//! that endpoint writes go through.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use super::extract::{ApiJson, Tenant};
use super::problem::Problem;
use super::AppState;
use crate::db::events::envelope;
use crate::domain::formats::{self, Format};
use crate::domain::ids::EventId;
use crate::domain::patterns::validate_event_type;
use crate::domain::transform::{input_json, Rewritten, TransformError};
use crate::error::Error;
use crate::transform::key_for;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/transformations/test", post(test))
}

/// Refuses code that does not compile or defines no `handler`, naming the line.
pub(super) async fn check(s: &AppState, tenant: &str, code: &str) -> Result<(), Problem> {
    s.transformer
        .check(key_for(tenant), code)
        .await
        .map_err(|e| refused(&e))
}

fn refused(e: &TransformError) -> Problem {
    match e {
        TransformError::Unavailable => {
            Problem::unavailable("the transformation engine is not running".to_string())
        }
        e => Error::invalid("invalid-transformation", e.to_string()).into(),
    }
}

/// A transformation to try.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformationTest {
    /// JavaScript defining `function handler(webhook)`.
    pub code: String,
    /// The sample event's type (default `hookit.test`).
    #[serde(default)]
    pub event_type: Option<String>,
    /// The sample event's payload (default `{"test": true}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
    /// The endpoint URL the handler sees (default `https://example.com/webhook`).
    #[serde(default)]
    pub url: Option<String>,
    /// The endpoint's format, rendered before the handler runs (default `standard`).
    #[serde(default)]
    #[schema(value_type = Option<crate::db::endpoints::FormatName>)]
    pub format: Option<String>,
    /// The endpoint's custom headers, as the handler sees them.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// What the handler would make of the sample event.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransformationResult {
    /// `send`, `cancel` or `error`.
    pub outcome: String,
    /// The request it would send (`send` only).
    pub request: Option<TransformedRequest>,
    /// Why it failed (`error` only): the engine's message and the line, as a
    /// delivery's attempt log would show it.
    pub error: Option<String>,
    /// The line of the user's code the error points at, when known.
    pub line: Option<u32>,
}

/// A request as a transformation made it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransformedRequest {
    /// `POST` or `PUT`.
    pub method: String,
    /// Target URL.
    pub url: String,
    /// Custom headers (HookIt adds the signature and its own).
    pub headers: BTreeMap<String, String>,
    /// The body, as sent (and signed).
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
}

#[utoipa::path(post, path = "/v1/transformations/test", tag = "transformations", request_body = TransformationTest,
    responses((status = 200, body = TransformationResult, description = "The request the code would make, or its error"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 415, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])))]
async fn test(
    State(s): State<AppState>,
    Tenant(t): Tenant,
    ApiJson(body): ApiJson<TransformationTest>,
) -> Result<Json<TransformationResult>, Problem> {
    let event_type = body.event_type.unwrap_or_else(|| "hookit.test".into());
    validate_event_type(&event_type)
        .map_err(|e| Error::invalid("invalid-event-type", format!("event_type {e}")))?;
    let payload = match body.payload {
        Some(p) => p,
        None => RawValue::from_string(r#"{"test":true}"#.into())
            .map_err(|e| Problem::bad_request(e.to_string()))?,
    };
    super::events::check_payload(&payload, s.max_payload)?;
    let format: Format = match body.format.as_deref() {
        None => Format::default(),
        Some(f) => f
            .parse()
            .map_err(|e: formats::UnknownFormat| Error::invalid("invalid-format", e.to_string()))?,
    };
    let url = body
        .url
        .unwrap_or_else(|| "https://example.com/webhook".into());
    let envelope = envelope(&EventId::new(), &event_type, Utc::now(), &payload);
    let rendered = formats::render(format, &envelope).map_err(|e| {
        Error::invalid(
            "invalid-payload",
            format!("cannot render the {format} format: {e}"),
        )
    })?;
    let input = input_json(
        &event_type,
        &rendered,
        &url,
        &body.headers.unwrap_or_default(),
    );
    let result = match s.transformer.try_once(key_for(&t), &body.code, input).await {
        Ok(Rewritten::Send(r)) => TransformationResult {
            outcome: "send".into(),
            request: Some(TransformedRequest {
                method: r.method.as_str().into(),
                url: r.url,
                headers: r.headers,
                payload: RawValue::from_string(r.body)
                    .map_err(|e| Problem::bad_request(e.to_string()))?,
            }),
            error: None,
            line: None,
        },
        Ok(Rewritten::Cancel) => TransformationResult {
            outcome: "cancel".into(),
            request: None,
            error: None,
            line: None,
        },
        Err(TransformError::Unavailable) => return Err(refused(&TransformError::Unavailable)),
        Err(e) => TransformationResult {
            outcome: "error".into(),
            line: e.line(),
            error: Some(e.to_string()),
            request: None,
        },
    };
    Ok(Json(result))
}
