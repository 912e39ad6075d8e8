//! Extractors whose rejections are problem documents.

use crate::problem::{FieldError, Problem, ProblemKind};
use crate::rbac::Principal;
use crate::state::ApiState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use nexus_auth::AuthError;
use serde::de::DeserializeOwned;

/// A JSON body, parsed strictly: wrong media type → 415, too large → 413, bad syntax or shape
/// → 400 with a JSON Pointer to the offending field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses JSON, mapping errors to problems with a pointer to the failing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let pointer = pointer_of(err.path());
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => Problem::validation(vec![FieldError {
                pointer,
                detail: strip_position(&inner.to_string()),
            }]),
            _ => Problem::new(
                ProblemKind::MalformedBody,
                format!("request body is not valid JSON: {inner}"),
            ),
        }
    })
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("/{index}")),
            serde_path_to_error::Segment::Map { key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            serde_path_to_error::Segment::Enum { variant } => {
                out.push('/');
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn body_rejection(r: BytesRejection) -> Problem {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            ProblemKind::PayloadTooLarge,
            "request body exceeds the size limit",
        )
    } else {
        Problem::new(ProblemKind::MalformedBody, r.body_text())
    }
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_header(&parts.headers)
}

/// The bearer token in `Authorization` headers, if any.
pub fn bearer_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(parts) {
            return match state.keys.verify(token) {
                Ok(claims) => Ok(Principal::from_claims(claims)),
                Err(AuthError::Expired) => Err(Problem::unauthorized("access token expired")),
                Err(_) => Err(Problem::unauthorized("invalid access token")),
            };
        }
        if let Some(key) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            let hash = nexus_auth::sha256_hex(key);
            return match state.store.api_key_by_hash(&hash).await? {
                Some(rec) => Ok(Principal::ApiKey {
                    id: rec.id,
                    scope: rec.scope,
                }),
                None => Err(Problem::unauthorized("invalid API key")),
            };
        }
        Err(Problem::unauthorized(
            "missing credentials: send Authorization: Bearer <token> or X-API-Key",
        ))
    }
}
