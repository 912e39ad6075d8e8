//! The axum router: the WebSocket endpoint and the Centrifugo-shaped server HTTP API.

use crate::conn::{Incoming, Outgoing, VERSION};
use crate::error::{Disconnect, GatewayError};
use crate::gateway::Gateway;
use crate::protocol::{PresenceResult, StreamPosition};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tungstenite::handshake::derive_accept_key;

/// The gateway's routes: `GET /connection/websocket` and `POST /api/{method}`.
///
/// Server API methods: `publish`, `broadcast`, `presence`, `presence_stats`, `history`,
/// `history_remove`, `channels`, `info`, `disconnect`, `unsubscribe`, `subscribe`. Each takes
/// Centrifugo's JSON request body and answers `200 {"result": …}` or
/// `200 {"error": {"code", "message"}}`. The key goes in `X-API-Key` or
/// `Authorization: apikey <key>`: missing or wrong → 401; no static key configured and no
/// [`crate::ApiKeyCheck`] installed → 403 (the API is off). A body that is not the method's
/// JSON → 400; an unknown method → 404.
pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/connection/websocket", get(websocket))
        .route("/api/{method}", post(api))
        .with_state(gw)
}

/// Read buffer of one WebSocket connection.
const READ_BUFFER_BYTES: usize = 4 << 10;

/// The TCP socket of the HTTP connection a request came on (a duplicate of its descriptor),
/// for the gateway to take over on a WebSocket upgrade ([`Gateway::serve_tcp`]). The server
/// adds it to each request of a plain-TCP connection as an extension; without it (TLS,
/// HTTP/2) the upgrade goes through axum's WebSocket.
#[derive(Clone, Debug)]
pub struct ConnSocket(Arc<Mutex<Option<std::net::TcpStream>>>);

impl ConnSocket {
    /// Wraps the duplicate of an accepted connection's socket.
    pub fn new(socket: std::net::TcpStream) -> ConnSocket {
        ConnSocket(Arc::new(Mutex::new(Some(socket))))
    }

    fn take(&self) -> Option<std::net::TcpStream> {
        self.0.lock().ok()?.take()
    }
}

/// The `Sec-WebSocket-Key` of a well-formed HTTP/1.1 WebSocket upgrade request (RFC 6455
/// §4.2.1), or `None` to let axum's extractor answer (or refuse) it.
fn upgrade_key(req: &Request) -> Option<&HeaderValue> {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let ok = req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && h.get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
    ok.then(|| h.get(header::SEC_WEBSOCKET_KEY)).flatten()
}

/// Bytes the client sent after its upgrade request that hyper read along with it (a client
/// must wait for the handshake's answer, so normally none).
async fn early_bytes(upgraded: hyper::upgrade::Upgraded) -> Option<BytesMut> {
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    let mut early = BytesMut::new();
    let mut chunk = [0u8; 4096];
    while early.len() < READ_BUFFER_BYTES * 16 {
        match io.read(&mut chunk).now_or_never() {
            Some(Ok(0)) => return None,
            Some(Ok(n)) => early.extend_from_slice(&chunk[..n]),
            Some(Err(_)) => return None,
            None => break,
        }
    }
    Some(early)
}

async fn websocket(State(gw): State<Gateway>, mut req: Request) -> Response {
    if gw.is_shutting_down() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let direct = match (upgrade_key(&req), req.extensions().get::<ConnSocket>()) {
        (Some(key), Some(socket)) => socket
            .take()
            .map(|s| (s, derive_accept_key(key.as_bytes()))),
        _ => None,
    };
    let Ok(permit) = gw.inner.conn_limit.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "connection limit").into_response();
    };
    if let Some((socket, accept)) = direct {
        // Our own handshake, then the socket is the gateway's: it frames and writes it
        // itself, so that deliveries write straight to it (see `Gateway::serve_tcp`).
        let on_upgrade = hyper::upgrade::on(&mut req);
        let tracker = gw.inner.tracker.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let Some(early) = early_bytes(upgraded).await else {
                return;
            };
            let tcp = match socket
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(socket))
            {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take over an upgraded connection");
                    return;
                }
            };
            gw.serve_tcp(tcp, early.freeze()).await;
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(axum::body::Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let ws = match WebSocketUpgrade::from_request(req, &gw).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let max = gw.config().max_frame_bytes;
    // tungstenite reserves (and touches) its whole read buffer per connection: the 128 KiB
    // default made an idle connection cost ~140 KiB. Client frames are small commands, and
    // larger ones still arrive, over several reads.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let tracker = gw.inner.tracker.clone();
            tracker.track_future(async move {
                let _permit = permit;
                let (sink, stream) = socket.split();
                let sink = sink.with(|out: Outgoing| std::future::ready(to_message(out)));
                let stream = stream.filter_map(|m| std::future::ready(from_message(m)));
                gw.serve_connection(sink, stream).await;
            })
        })
}

fn to_message(out: Outgoing) -> Result<Message, axum::Error> {
    Ok(match out {
        Outgoing::Text(b) => Message::Text(Utf8Bytes::try_from(b).map_err(axum::Error::new)?),
        Outgoing::Close { code, reason } => Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    })
}

fn from_message(m: Result<Message, axum::Error>) -> Option<Result<Incoming, axum::Error>> {
    match m {
        Err(e) => Some(Err(e)),
        Ok(Message::Text(t)) => Some(Ok(Incoming::Text(t.as_str().to_owned()))),
        Ok(Message::Binary(b)) => Some(Ok(Incoming::Binary(b))),
        Ok(Message::Close(_)) => Some(Ok(Incoming::Close)),
        Ok(Message::Ping(_) | Message::Pong(_)) => None,
    }
}

fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("apikey").then(|| key.trim())
}

fn error_body(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn authorized(gw: &Gateway, headers: &HeaderMap) -> Result<(), Response> {
    let static_key = gw.config().api_key.as_ref();
    let check = gw.inner.api_check.get();
    if static_key.is_none() && check.is_none() {
        return Err(error_body(
            StatusCode::FORBIDDEN,
            103,
            "server API disabled: no API key configured",
        ));
    }
    let Some(key) = api_key(headers).filter(|k| !k.is_empty()) else {
        return Err(error_body(StatusCode::UNAUTHORIZED, 101, "unauthorized"));
    };
    if static_key.is_some_and(|k| k.matches(key)) {
        return Ok(());
    }
    if let Some(check) = check
        && check.check(key).await
    {
        return Ok(());
    }
    Err(error_body(StatusCode::UNAUTHORIZED, 101, "unauthorized"))
}

fn result(v: impl serde::Serialize) -> Response {
    axum::Json(json!({ "result": v })).into_response()
}

fn failure(e: GatewayError) -> Response {
    if matches!(e, GatewayError::Engine(_) | GatewayError::Internal(_)) {
        tracing::warn!(error = %e, "server API call failed");
    }
    axum::Json(json!({"error": {"code": e.code(), "message": e.wire_message()}})).into_response()
}

fn reply<T: serde::Serialize>(r: Result<T, GatewayError>) -> Response {
    match r {
        Ok(v) => result(v),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
struct PublishReq {
    channel: String,
    data: Value,
}

#[derive(Deserialize)]
struct BroadcastReq {
    channels: Vec<String>,
    data: Value,
}

#[derive(Deserialize)]
struct ChannelReq {
    channel: String,
}

#[derive(Deserialize)]
struct HistoryReq {
    channel: String,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize, Default)]
struct ChannelsReq {
    #[serde(default)]
    pattern: String,
}

#[derive(Deserialize)]
struct DisconnectAdvice {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct DisconnectReq {
    user: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    whitelist: Vec<String>,
    #[serde(default)]
    disconnect: Option<DisconnectAdvice>,
}

#[derive(Deserialize)]
struct UserChannelReq {
    user: String,
    channel: String,
    #[serde(default)]
    client: String,
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_body(
            StatusCode::BAD_REQUEST,
            107,
            &format!("bad request: {e}"),
        ))
    })
}

async fn api(
    State(gw): State<Gateway>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = authorized(&gw, &headers).await {
        return denied;
    }
    run(&gw, &method, &body).await.unwrap_or_else(|r| *r)
}

async fn run(gw: &Gateway, method: &str, body: &Bytes) -> Result<Response, Box<Response>> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(match method {
        "publish" => {
            let r: PublishReq = parse(body)?;
            reply(gw.publish(&r.channel, r.data).await)
        }
        "broadcast" => {
            let r: BroadcastReq = parse(body)?;
            let mut responses = Vec::with_capacity(r.channels.len());
            for ch in &r.channels {
                responses.push(match gw.publish(ch, r.data.clone()).await {
                    Ok(p) => json!({ "result": p }),
                    Err(e) => json!({"error": {"code": e.code(), "message": e.wire_message()}}),
                });
            }
            result(json!({ "responses": responses }))
        }
        "presence" => {
            let r: ChannelReq = parse(body)?;
            reply(
                gw.presence(&r.channel)
                    .await
                    .map(|presence| PresenceResult { presence }),
            )
        }
        "presence_stats" => {
            let r: ChannelReq = parse(body)?;
            reply(gw.presence_stats(&r.channel).await)
        }
        "history" => {
            let r: HistoryReq = parse(body)?;
            reply(gw.history(&r.channel, r.limit, r.since, r.reverse).await)
        }
        "history_remove" => {
            let r: ChannelReq = parse(body)?;
            reply(gw.remove_history(&r.channel).await.map(|()| json!({})))
        }
        "channels" => {
            let r: ChannelsReq = parse(body)?;
            let channels: BTreeMap<String, Value> = gw
                .channels(non_empty(&r.pattern).as_deref())
                .await
                .into_iter()
                .map(|(name, n)| (name, json!({ "num_clients": n })))
                .collect();
            result(json!({ "channels": channels }))
        }
        "info" => {
            let stats = gw.stats();
            let num_channels = gw.channels(None).await.len();
            result(json!({"nodes": [{
                "uid": gw.config().node_name,
                "name": gw.config().node_name,
                "version": VERSION,
                "num_clients": stats.connections,
                "num_users": gw.num_users(),
                "num_channels": num_channels,
                "num_subs": stats.subscriptions,
                "uptime": gw.uptime().as_secs(),
            }]}))
        }
        "disconnect" => {
            let r: DisconnectReq = parse(body)?;
            let advice = r
                .disconnect
                .map(|d| Disconnect::custom(d.code, d.reason))
                .unwrap_or(Disconnect::FORCE_NO_RECONNECT);
            if r.client.is_empty() && r.whitelist.is_empty() {
                gw.disconnect_user(&r.user, None, advice);
            } else if !r.client.is_empty() {
                gw.disconnect_user(&r.user, Some(&r.client), advice);
            } else {
                for c in gw.clients_of(&r.user) {
                    if !r.whitelist.contains(&c) {
                        gw.disconnect_user(&r.user, Some(&c), advice.clone());
                    }
                }
            }
            result(json!({}))
        }
        "unsubscribe" => {
            let r: UserChannelReq = parse(body)?;
            gw.unsubscribe_user(&r.user, &r.channel, non_empty(&r.client).as_deref());
            result(json!({}))
        }
        "subscribe" => {
            let r: UserChannelReq = parse(body)?;
            reply(
                gw.subscribe_user(&r.user, &r.channel, non_empty(&r.client).as_deref())
                    .map(|_| json!({})),
            )
        }
        _ => error_body(StatusCode::NOT_FOUND, 104, "method not found"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn api_key_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static(" k1 "));
        assert_eq!(api_key(&h), Some("k1"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("apikey k2"));
        assert_eq!(api_key(&h), Some("k2"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k2"));
        assert_eq!(api_key(&h), None);
    }
}
