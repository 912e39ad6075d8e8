//! The HTTP edge: client address, rate limits, metrics, timeouts, request spans, and the rule
//! that every error leaves as `application/problem+json`.

use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use nexus_api::{Problem, ProblemKind};
use nexus_auth::TokenKeys;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The address of the client, after believing trusted proxies' `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Edge configuration and shared limiters; cheap to clone.
#[derive(Clone)]
pub struct Edge {
    /// Metrics the edge updates.
    pub metrics: Metrics,
    per_ip: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    per_user: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    keys: TokenKeys,
    trusted: Arc<Vec<IpNet>>,
    timeout: Duration,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    rate: u32,
    burst: u32,
) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(rate.get())).unwrap_or(rate);
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    )))
}

impl Edge {
    /// An edge with the given limits (0 disables a limit).
    pub fn new(
        metrics: Metrics,
        keys: TokenKeys,
        limits: &crate::config::RateLimitConfig,
        trusted: Vec<IpNet>,
        timeout: Duration,
    ) -> Self {
        Edge {
            metrics,
            per_ip: limiter(limits.per_ip, limits.per_ip_burst),
            per_user: limiter(limits.per_user, limits.per_user_burst),
            keys,
            trusted: Arc::new(trusted),
            timeout,
        }
    }

    /// Drops limiter state of idle clients; call periodically so memory stays bounded.
    pub fn prune(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_user {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// The client address: the socket peer, or — when the peer is a trusted proxy — the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let Some(list) = forwarded else { return peer };
        let mut client = peer;
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

fn exempt_from_limits(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Computes [`ClientIp`] and applies the per-address and per-user rate limits.
pub async fn limits(State(edge): State<Edge>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = edge.client_ip(peer, forwarded);
    req.extensions_mut().insert(ClientIp(ip));
    if exempt_from_limits(req.uri().path()) {
        return next.run(req).await;
    }
    if let Some(l) = &edge.per_ip
        && let Err(wait) = l.check_key(&ip)
    {
        edge.metrics.rate_limited.with_label_values(&["ip"]).inc();
        let secs = wait
            .wait_time_from(DefaultClock::default().now())
            .as_secs_f64()
            .ceil() as u64;
        return Problem::rate_limited(secs).into_response();
    }
    if let Some(l) = &edge.per_user {
        let user = nexus_api::extract::bearer_header(req.headers())
            .and_then(|t| edge.keys.verify(t).ok())
            .map(|c| c.sub);
        if let Some(user) = user
            && let Err(wait) = l.check_key(&user)
        {
            edge.metrics.rate_limited.with_label_values(&["user"]).inc();
            let secs = wait
                .wait_time_from(DefaultClock::default().now())
                .as_secs_f64()
                .ceil() as u64;
            return Problem::rate_limited(secs).into_response();
        }
    }
    next.run(req).await
}

/// Whether a path answers in its own ecosystem's error format (the Centrifugo-compatible
/// server API and the WebSocket endpoints).
fn own_error_format(path: &str) -> bool {
    (path.starts_with("/api/") && !path.starts_with("/api/v1/")) || path.starts_with("/connection/")
}

/// Request span, metrics, timeout and problem+json for every error.
pub async fn observe(State(edge): State<Edge>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span =
        tracing::info_span!("request", method = %method, route = %route, request_id = %request_id);
    edge.metrics.in_flight.inc();
    let is_upgrade = req.headers().contains_key(header::UPGRADE);
    let result = if is_upgrade {
        Ok(next.run(req).instrument(span.clone()).await)
    } else {
        tokio::time::timeout(edge.timeout, next.run(req).instrument(span.clone())).await
    };
    edge.metrics.in_flight.dec();
    let mut resp = match result {
        Ok(r) => r,
        Err(_) => Problem::new(
            ProblemKind::Timeout,
            format!("request exceeded {:?}", edge.timeout),
        )
        .into_response(),
    };
    if resp.status().as_u16() >= 400 && !own_error_format(&path) {
        resp = ensure_problem(resp).await;
    }
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The body was not read, so the connection cannot carry another request: say so, or a
        // client may reuse it and lose its next request to the close.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = resp.status();
    let elapsed = started.elapsed();
    let labels = [method.as_str(), route.as_str(), status.as_str()];
    edge.metrics.requests.with_label_values(&labels).inc();
    edge.metrics
        .latency
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                latency_ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                latency_ms = elapsed.as_millis() as u64,
                "request"
            );
        }
    });
    resp
}

/// Turns an error response that is not already JSON into a problem document, keeping its
/// status and headers (e.g. `Allow` on 405).
async fn ensure_problem(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let kind = match parts.status {
        StatusCode::BAD_REQUEST => ProblemKind::MalformedBody,
        StatusCode::UNAUTHORIZED => ProblemKind::Unauthorized,
        StatusCode::FORBIDDEN => ProblemKind::Forbidden,
        StatusCode::NOT_FOUND => ProblemKind::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
        StatusCode::CONFLICT => ProblemKind::Conflict,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
        StatusCode::TOO_MANY_REQUESTS => ProblemKind::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ProblemKind::Unavailable,
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => ProblemKind::Timeout,
        s if s.is_client_error() => ProblemKind::MalformedBody,
        _ => ProblemKind::Internal,
    };
    let detail = if text.is_empty() {
        kind.title().to_string()
    } else {
        text
    };
    let mut problem = Problem::new(kind, detail);
    problem.status = parts.status.as_u16();
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(nexus_api::problem::PROBLEM_JSON),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitConfig;

    fn edge(trusted: &[&str]) -> Edge {
        Edge::new(
            Metrics::new(),
            TokenKeys::new(b"k", &[]),
            &RateLimitConfig::default(),
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let xff = Some("203.0.113.9, 10.0.0.7");
        assert_eq!(edge(&[]).client_ip(peer, xff), peer);
        let e = edge(&["10.0.0.0/8"]);
        assert_eq!(
            e.client_ip(peer, xff),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A client cannot spoof by prepending: the right-most untrusted hop wins.
        assert_eq!(
            e.client_ip(peer, Some("1.2.3.4, 203.0.113.9")),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(e.client_ip(peer, Some("garbage")), peer);
        let outside: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(e.client_ip(outside, xff), outside);
    }

    #[test]
    fn gateway_api_keeps_its_own_error_format() {
        assert!(own_error_format("/api/publish"));
        assert!(!own_error_format("/api/v1/auth/login"));
        assert!(!own_error_format("/whip/room"));
    }
}
