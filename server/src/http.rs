//! The HTTP router: the product API, health, metrics and the OpenAPI document, behind the edge.

use crate::edge::{self, Edge};
use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use nexus_api::{ApiState, Problem};
use serde::Serialize;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Everything the router needs.
#[derive(Clone)]
pub struct AppState {
    /// API handlers' state.
    pub api: ApiState,
    /// The edge (limits, metrics).
    pub edge: Edge,
    /// The OpenAPI document, rendered once.
    pub openapi: Arc<String>,
}

/// Readiness of one dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// Each checked engine: `ok` or the reason it failed.
    #[schema(value_type = Object)]
    pub checks: serde_json::Map<String, serde_json::Value>,
}

/// Process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// The store (and every configured engine) is reachable.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    let store =
        tokio::time::timeout(std::time::Duration::from_secs(2), state.api.store.ping()).await;
    let verdict = match store {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => {
            ok = false;
            e.to_string()
        }
        Err(_) => {
            ok = false;
            "timed out".to_string()
        }
    };
    checks.insert("store".into(), verdict.into());
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ok { "ready" } else { "unavailable" },
            checks,
        }),
    )
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.edge.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_owned(),
    )
}

async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

/// Health, metrics and the OpenAPI document.
fn operational_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// Every route, split into routers per state and the merged OpenAPI document.
fn parts() -> (
    axum::Router<ApiState>,
    axum::Router<AppState>,
    utoipa::openapi::OpenApi,
) {
    let (api, mut doc) = nexus_api::router().split_for_parts();
    let (ops, ops_doc) = operational_routes().split_for_parts();
    doc.merge(ops_doc);
    doc.merge(<crate::openapi_extra::ExtraDoc as utoipa::OpenApi>::openapi());
    (api, ops, doc)
}

/// The complete application; `rtc` is the SFU's signaling router (`crate::rtc::routes`).
pub fn app(
    api: ApiState,
    edge: Edge,
    config: &crate::config::Config,
    rtc: axum::Router,
) -> axum::Router {
    let (api_routes, ops_routes, doc) = parts();
    let openapi = Arc::new(doc.to_pretty_json().unwrap_or_default());
    let state = AppState {
        api: api.clone(),
        edge: edge.clone(),
        openapi,
    };
    let cors = if config.cors_origins.iter().any(|o| o == "*") {
        CorsLayer::new().allow_origin(Any)
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        CorsLayer::new().allow_origin(AllowOrigin::list(origins))
    }
    .allow_methods(Any)
    .allow_headers(Any)
    .expose_headers([
        HeaderName::from_static("x-request-id"),
        header::LOCATION,
        header::RETRY_AFTER,
    ]);
    let request_id = HeaderName::from_static("x-request-id");
    api_routes
        .with_state(api)
        .merge(ops_routes.with_state(state))
        .merge(rtc)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            edge.clone(),
            edge::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(edge, edge::limits))
        .layer(DefaultBodyLimit::max(
            usize::try_from(config.body_limit).unwrap_or(usize::MAX),
        ))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
