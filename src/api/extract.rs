//! Extractors that answer problems instead of axum's plain-text rejections: the
//! tenant from the API key, and JSON bodies with size and nesting limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::Problem;
use super::AppState;
use crate::db::keys::hash_key;

/// Deepest accepted JSON nesting.
pub const MAX_JSON_DEPTH: usize = 32;

/// How long a key → tenant answer is reused before asking the database again
/// (bounds how long a revoked key keeps working on this process).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Caches API-key lookups by hash, so ingestion needs no extra round trip per request.
#[derive(Default, Clone)]
pub struct KeyCache(Arc<Mutex<HashMap<[u8; 32], CachedKey>>>);

/// When a key was looked up, and the tenant it belonged to (None: invalid).
type CachedKey = (Instant, Option<String>);

/// The authenticated tenant of a request.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or_else(Problem::unauthorized)?;
        let hash = hash_key(key);
        if let Ok(cache) = state.keys.0.lock() {
            if let Some((at, tenant)) = cache.get(&hash) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return tenant.clone().map(Tenant).ok_or_else(Problem::unauthorized);
                }
            }
        }
        let tenant = state
            .store
            .tenant_for_key(key)
            .await
            .map_err(Problem::from)?;
        if let Ok(mut cache) = state.keys.0.lock() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(hash, (Instant::now(), tenant.clone()));
        }
        tenant.map(Tenant).ok_or_else(Problem::unauthorized)
    }
}

/// Query parameters, answering a 400 problem instead of axum's plain-text rejection
/// when they do not parse (a number that is not one, an id of the wrong kind).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|rej| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-query",
                    "The query string is invalid",
                    rej.body_text(),
                )
            })
    }
}

/// A JSON body, limited in size (by the router's body limit) and nesting depth.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        read_json(req, state, state.body_limit).await.map(ApiJson)
    }
}

/// Reads and parses a JSON body whose route allows `limit` bytes (the router's
/// `DefaultBodyLimit` for that route; named in the 413).
pub async fn read_json<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
    limit: usize,
) -> Result<T, Problem> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large(limit)
        } else {
            Problem::bad_request(rej.body_text())
        }
    })?;
    parse_json(&bytes)
}

/// Parses JSON with the nesting limit and a problem for every failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if json_depth(bytes) > MAX_JSON_DEPTH {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "json-too-deep",
            "JSON nested too deeply",
            format!("JSON may nest at most {MAX_JSON_DEPTH} levels"),
        ));
    }
    // Every request body is an object, but serde also fills a struct from an
    // array, by position: `[]` would be an empty patch, or a redrive of everything.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Problem::bad_request(
            "the request body must be a JSON object, not an array",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))
}

/// Deepest nesting of arrays and objects, ignoring brackets inside strings.
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_strings() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":"[[[[\"]]"}]}"#), 3);
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth("[".repeat(40).as_bytes()), 40);
    }
}
