//! RFC 9457 problem details: the one error shape of the product API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The `type` URIs Nexus uses, as `/problems/<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// 400: the body is not well-formed JSON (or not the expected shape).
    MalformedBody,
    /// 400: well-formed input that breaks a rule; `errors` names the fields.
    Validation,
    /// 401: missing, malformed or expired credentials.
    Unauthorized,
    /// 401: wrong e-mail or password.
    InvalidCredentials,
    /// 403: valid credentials without the role or grant the action needs.
    Forbidden,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the change conflicts with the current state (taken e-mail, booked slot).
    Conflict,
    /// 413: the body exceeds the configured limit.
    PayloadTooLarge,
    /// 415: the body's media type is not accepted here.
    UnsupportedMediaType,
    /// 429: rate limit exceeded; `Retry-After` says when to come back.
    RateLimited,
    /// 500: a fault on our side; the detail is in the server log under the request id.
    Internal,
    /// 503: a dependency (store, broker) is unavailable.
    Unavailable,
    /// 504: the request took longer than the server allows.
    Timeout,
}

impl ProblemKind {
    /// Every kind, for documentation.
    pub const ALL: [ProblemKind; 14] = [
        ProblemKind::MalformedBody,
        ProblemKind::Validation,
        ProblemKind::Unauthorized,
        ProblemKind::InvalidCredentials,
        ProblemKind::Forbidden,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::Conflict,
        ProblemKind::PayloadTooLarge,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::RateLimited,
        ProblemKind::Internal,
        ProblemKind::Unavailable,
        ProblemKind::Timeout,
    ];

    /// The slug after `/problems/`.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::MalformedBody => "malformed-body",
            ProblemKind::Validation => "validation",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::InvalidCredentials => "invalid-credentials",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::Conflict => "conflict",
            ProblemKind::PayloadTooLarge => "payload-too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::Internal => "internal",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Timeout => "timeout",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::MalformedBody | ProblemKind::Validation => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthorized | ProblemKind::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::Conflict => StatusCode::CONFLICT,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short, fixed human title.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::MalformedBody => "Malformed request body",
            ProblemKind::Validation => "Validation failed",
            ProblemKind::Unauthorized => "Authentication required",
            ProblemKind::InvalidCredentials => "Invalid credentials",
            ProblemKind::Forbidden => "Forbidden",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::Conflict => "Conflict",
            ProblemKind::PayloadTooLarge => "Payload too large",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
            ProblemKind::RateLimited => "Too many requests",
            ProblemKind::Internal => "Internal server error",
            ProblemKind::Unavailable => "Service unavailable",
            ProblemKind::Timeout => "Request timed out",
        }
    }
}

/// One field-level validation failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) into the request body, e.g. `/email`.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

/// An RFC 9457 problem; `IntoResponse` renders `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<kind>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short, fixed summary of the kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What happened in this case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field-level failures (validation problems).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds until retrying makes sense (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with a detail message.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            type_: format!("/problems/{}", kind.slug()),
            title: kind.title().to_string(),
            status: kind.status().as_u16(),
            detail: Some(detail.into()),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// A validation problem naming the fields at fault.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.pointer, one.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        Problem {
            errors,
            ..Problem::new(ProblemKind::Validation, detail)
        }
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::Unauthorized, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::Forbidden, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::NotFound, detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::Conflict, detail)
    }

    /// 500; the cause goes to the log, not to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Problem::new(
            ProblemKind::Internal,
            "an internal error occurred; it has been logged with this request's id",
        )
    }

    /// 429 with a `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Problem {
            retry_after: Some(retry_after_secs.max(1)),
            ..Problem::new(ProblemKind::RateLimited, "rate limit exceeded; retry later")
        }
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<nexus_store::StoreError> for Problem {
    fn from(e: nexus_store::StoreError) -> Self {
        match e {
            nexus_store::StoreError::Conflict(what) => Problem::conflict(what),
            other => Problem::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_slug_and_error_status() {
        let mut slugs: Vec<_> = ProblemKind::ALL.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemKind::ALL.len());
        assert!(ProblemKind::ALL.iter().all(|k| k.status().as_u16() >= 400));
    }

    #[test]
    fn validation_problem_serializes_pointers() {
        let p = Problem::validation(vec![FieldError {
            pointer: "/email".into(),
            detail: "not an e-mail address".into(),
        }]);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "/problems/validation");
        assert_eq!(v["status"], 400);
        assert_eq!(v["errors"][0]["pointer"], "/email");
        assert!(v.get("retry_after").is_none());
    }
}
