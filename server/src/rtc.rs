//! WebRTC signaling over HTTP: WHIP, WHEP and the room protocol's WebSocket, in front of the
//! SFU (`nexus-sfu-net`). Tokens are verified here; the SFU checks room and grants.

use crate::turn::Turn;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nexus_api::{Problem, ProblemKind};
use nexus_auth::{AuthError, Claims, TokenKeys};
use nexus_sfu_net::{ClientMessage, ParticipantId, ServerMessage, SessionId, SfuError, SfuHandle};
use serde::Deserialize;
use std::time::Duration;

/// The minimal browser client (WHIP/WHEP and room protocol), served at `/rtc/client`.
const CLIENT_PAGE: &str = include_str!("../../web/rtc-client.html");

/// The consultation and class page, served at `/consult/{room}` and `/class/{room}`.
const ROOM_PAGE: &str = include_str!("../../web/room.html");

/// How long a WebSocket may stay open without sending `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest room-protocol message (and frame) taken from a client: room for a
/// renegotiation offer of many tracks (a browser's offer is ~5–15 KB) and a chat line, not for
/// a member who sends megabytes to be buffered and parsed. A larger one closes the socket with
/// 1009 (message too big).
const MAX_MESSAGE: usize = 256 * 1024;

#[derive(Clone)]
struct RtcState {
    sfu: SfuHandle,
    keys: TokenKeys,
    turn: Option<Turn>,
}

/// The SFU's HTTP surface: `POST/DELETE/PATCH /whip/…`, `POST/DELETE/PATCH /whep/…`,
/// `GET /rtc` (WebSocket), `GET /rtc/client` (test client page), `GET /consult/{room}` and
/// `GET /class/{room}` (the browser page), `GET /metrics/sfu`. With
/// `turn`, sessions are told the TURN servers and their credentials (see [`crate::turn`]).
pub fn routes(sfu: SfuHandle, keys: TokenKeys, turn: Option<Turn>) -> Router {
    Router::new()
        .route("/whip/{room}", post(whip))
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(end).patch(trickle),
        )
        .route("/whep/{room}", post(whep))
        .route(
            "/whep/{room}/{session}",
            axum::routing::delete(end).patch(trickle),
        )
        .route("/rtc", get(room_socket))
        .route("/rtc/client", get(client_page))
        .route("/consult/{room}", get(room_page))
        .route("/class/{room}", get(room_page))
        .route("/metrics/sfu", get(sfu_metrics))
        .with_state(RtcState { sfu, keys, turn })
}

/// Maps SFU errors to problem+json.
fn problem(e: SfuError) -> Problem {
    let detail = e.to_string();
    match e {
        SfuError::WrongRoom
        | SfuError::NotARoomToken
        | SfuError::MissingGrant(_)
        | SfuError::NotAdmitted => Problem::forbidden(detail),
        SfuError::BadSdp(_) => Problem::new(ProblemKind::MalformedBody, detail),
        SfuError::InvalidRoomName | SfuError::BadMessage(_) => {
            Problem::new(ProblemKind::Validation, detail)
        }
        SfuError::NoSuchSession
        | SfuError::NoSuchParticipant
        | SfuError::NoSuchRoom
        | SfuError::NoSuchTrack => Problem::not_found(detail),
        SfuError::NotSupported(_) => Problem::new(ProblemKind::MethodNotAllowed, detail),
        SfuError::RoomFull { .. } | SfuError::RoomKindMismatch | SfuError::InvalidState(_) => {
            Problem::conflict(detail)
        }
        SfuError::ShuttingDown | SfuError::Unavailable => {
            Problem::new(ProblemKind::Unavailable, detail)
        }
        SfuError::Saturated { retry_after_secs } => Problem {
            retry_after: Some(retry_after_secs.max(1)),
            ..Problem::new(ProblemKind::Unavailable, detail)
        },
        _ => Problem::internal(&e),
    }
}

fn verify(keys: &TokenKeys, token: &str) -> Result<Claims, Problem> {
    keys.verify(token).map_err(|e| match e {
        AuthError::Expired => Problem::unauthorized("the token has expired"),
        _ => Problem::unauthorized("invalid token"),
    })
}

fn bearer(keys: &TokenKeys, headers: &HeaderMap) -> Result<Claims, Problem> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Problem::unauthorized("missing bearer token"))?;
    verify(keys, token.trim())
}

/// The SDP body of a WHIP/WHEP request.
fn sdp_body(headers: &HeaderMap, body: &Bytes) -> Result<String, Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim().starts_with("application/sdp") {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "the offer must be sent as application/sdp",
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| Problem::new(ProblemKind::MalformedBody, "the SDP is not UTF-8"))
}

fn created(
    kind: &str,
    room: &str,
    session: SessionId,
    answer: String,
    turn: Option<&Turn>,
) -> Response {
    let location = format!("/{kind}/{room}/{session}");
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Some(turn) = turn {
        for link in crate::turn::link_headers(&turn.mint(&session.to_string())) {
            h.append(header::LINK, link);
        }
    }
    resp
}

/// `POST /whip/{room}`: publish.
async fn whip(
    State(st): State<RtcState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let claims = bearer(&st.keys, &headers)?;
    let offer = sdp_body(&headers, &body)?;
    let (session, answer) = st
        .sfu
        .whip_publish(&room, &claims, offer)
        .await
        .map_err(problem)?;
    Ok(created("whip", &room, session, answer, st.turn.as_ref()))
}

#[derive(Deserialize)]
struct WhepQuery {
    publisher: Option<String>,
}

/// `POST /whep/{room}[?publisher=ID]`: subscribe.
async fn whep(
    State(st): State<RtcState>,
    Path(room): Path<String>,
    Query(q): Query<WhepQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let claims = bearer(&st.keys, &headers)?;
    let offer = sdp_body(&headers, &body)?;
    let publisher = q
        .publisher
        .map(|p| p.parse::<ParticipantId>())
        .transpose()
        .map_err(|e| Problem::new(ProblemKind::Validation, e))?;
    let (session, answer) = st
        .sfu
        .whep_subscribe(&room, &claims, offer, publisher)
        .await
        .map_err(problem)?;
    Ok(created("whep", &room, session, answer, st.turn.as_ref()))
}

fn session_of(
    keys: &TokenKeys,
    headers: &HeaderMap,
    room: &str,
    session: &str,
) -> Result<SessionId, Problem> {
    let claims = bearer(keys, headers)?;
    nexus_sfu_net::identity(room, &claims).map_err(problem)?;
    session
        .parse()
        .map_err(|_| Problem::not_found("no such session"))
}

/// `DELETE /whip|whep/{room}/{session}`: end the session.
async fn end(
    State(st): State<RtcState>,
    Path((room, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    let session = session_of(&st.keys, &headers, &room, &session)?;
    st.sfu.end_session(session).await.map_err(problem)?;
    Ok(StatusCode::OK)
}

/// `PATCH /whip|whep/{room}/{session}`: trickle ICE — refused with 405 (ICE-lite).
async fn trickle(
    State(st): State<RtcState>,
    Path((room, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let session = session_of(&st.keys, &headers, &room, &session)?;
    let frag = String::from_utf8_lossy(&body);
    st.sfu.trickle(session, &frag).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `GET /rtc?token=…`: the room protocol over WebSocket.
async fn room_socket(
    State(st): State<RtcState>,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, Problem> {
    let token = q
        .token
        .ok_or_else(|| Problem::unauthorized("missing token"))?;
    let claims = verify(&st.keys, &token)?;
    if claims.room.is_none() {
        return Err(problem(SfuError::NotARoomToken));
    }
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run_room_socket(socket, st.sfu, claims, st.turn)))
}

async fn send_json(socket: &mut WebSocket, msg: &ServerMessage) -> bool {
    let Ok(text) = serde_json::to_string(msg) else {
        return false;
    };
    send_text(socket, text).await
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    socket
        .send(Message::Text(Utf8Bytes::from(text)))
        .await
        .is_ok()
}

/// The close frame for a receive error: 1009 for a message over [`MAX_MESSAGE`], none (a plain
/// close) otherwise.
fn close_for(e: axum::Error) -> Option<CloseFrame> {
    let too_big = e
        .into_inner()
        .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)));
    too_big.then(|| closing(1009, "message too big"))
}

fn closing(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}

fn error_message(code: &str, message: String) -> ServerMessage {
    ServerMessage::Error {
        code: code.into(),
        message,
    }
}

/// A message for the client: `joined` gains `ice_servers` (TURN servers with credentials for
/// this participant; empty without TURN).
fn client_text(msg: &ServerMessage, turn: Option<&Turn>) -> Option<String> {
    let ServerMessage::Joined { participant, .. } = msg else {
        return serde_json::to_string(msg).ok();
    };
    let mut value = serde_json::to_value(msg).ok()?;
    let servers: Vec<_> = turn
        .map(|t| t.mint(&participant.to_string()))
        .into_iter()
        .collect();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("ice_servers".into(), serde_json::to_value(servers).ok()?);
    }
    serde_json::to_string(&value).ok()
}

async fn run_room_socket(
    mut socket: WebSocket,
    sfu: SfuHandle,
    claims: Claims,
    turn: Option<Turn>,
) {
    // The first message must be `join`.
    let options = match tokio::time::timeout(JOIN_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientMessage>(&t) {
            Ok(ClientMessage::Join(o)) => o,
            _ => {
                let _ = send_json(
                    &mut socket,
                    &error_message("bad_message", "the first message must be `join`".into()),
                )
                .await;
                let _ = socket
                    .send(Message::Close(Some(closing(1008, "expected join"))))
                    .await;
                return;
            }
        },
        Ok(Some(Err(e))) => {
            let _ = socket.send(Message::Close(close_for(e))).await;
            return;
        }
        _ => return,
    };
    let (handle, mut messages) = match sfu.join_room(&claims, options).await {
        Ok(pair) => pair,
        Err(e) => {
            let status = problem(e.clone()).status;
            let code = match status {
                _ if matches!(e, SfuError::Saturated { .. }) => "saturated",
                403 => "forbidden",
                404 => "no_such_session",
                409 => "conflict",
                503 => "unavailable",
                _ => "error",
            };
            let _ = send_json(&mut socket, &error_message(code, e.to_string())).await;
            // 1013 (try again later) where HTTP would say 503, 1008 (policy) otherwise.
            let frame = if status == 503 {
                closing(1013, "try again later")
            } else {
                closing(1008, "refused")
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
    };
    let mut close = None;
    loop {
        tokio::select! {
            out = messages.recv() => {
                let Some(msg) = out else { break };
                let leaving = matches!(msg, ServerMessage::Leave { .. });
                let Some(text) = client_text(&msg, turn.as_ref()) else { break };
                if !send_text(&mut socket, text).await || leaving {
                    break;
                }
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(e)) => {
                        close = close_for(e);
                        break;
                    }
                    _ => break,
                };
                match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(msg) => {
                        if handle.send(msg).await.is_err() {
                            // The participant is gone (the room closed, the server stops):
                            // the shard queued its `leave` before refusing this message, so
                            // deliver what is queued rather than drop the reason.
                            while let Ok(msg) = messages.try_recv() {
                                let leaving = matches!(msg, ServerMessage::Leave { .. });
                                let Some(text) = client_text(&msg, turn.as_ref()) else { break };
                                if !send_text(&mut socket, text).await || leaving {
                                    break;
                                }
                            }
                            break;
                        }
                    }
                    Err(e) => {
                        let msg = error_message("bad_message", e.to_string());
                        if !send_json(&mut socket, &msg).await {
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = socket.send(Message::Close(close)).await;
    drop(handle);
}

/// `GET /rtc/client`: the minimal browser client.
async fn client_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        CLIENT_PAGE,
    )
}

/// `GET /consult/{room}`, `GET /class/{room}`: the browser page (the path tells it the kind).
async fn room_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        ROOM_PAGE,
    )
}

/// `GET /metrics/sfu`: the SFU's counters in Prometheus text format.
async fn sfu_metrics(State(st): State<RtcState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.sfu.stats().await.prometheus(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, TurnConfig};
    use nexus_sfu_net::{RoomId, RoomKind};

    fn turn() -> Turn {
        Turn::from_config(&TurnConfig {
            urls: vec![
                "turn:turn.example.org:3478".into(),
                "turns:turn.example.org:5349".into(),
            ],
            secret: Some(Secret("s3cret".into())),
        })
        .unwrap()
    }

    #[test]
    fn a_saturated_shard_answers_503_with_retry_after() {
        let p = problem(SfuError::Saturated {
            retry_after_secs: 2,
        });
        assert_eq!(p.status, 503);
        assert_eq!(p.retry_after, Some(2));
        assert!(
            p.detail.as_deref().is_some_and(|d| d.contains("saturated")),
            "{p:?}"
        );
    }

    #[test]
    fn whip_answers_announce_turn_servers_in_link_headers() {
        let session = ParticipantId::new(0, 42);
        let resp = created("whip", "r", session, "v=0".into(), Some(&turn()));
        let links: Vec<_> = resp.headers().get_all(header::LINK).iter().collect();
        assert_eq!(links.len(), 2);
        let first = links[0].to_str().unwrap();
        assert!(first.starts_with("<turn:turn.example.org:3478>; rel=\"ice-server\"; username=\""));
        assert!(first.contains(&format!(":{session}\"; credential=\"")));
        let resp = created("whip", "r", session, "v=0".into(), None);
        assert!(resp.headers().get(header::LINK).is_none());
    }

    #[test]
    fn the_joined_message_carries_ice_servers() {
        let participant = ParticipantId::new(0, 7);
        let joined = ServerMessage::Joined {
            participant,
            room: RoomId::new("consult-1").unwrap(),
            kind: RoomKind::Consultation,
            resume_token: "t".into(),
            can_publish: true,
            participants: vec![],
            tracks: vec![],
        };
        let v: serde_json::Value =
            serde_json::from_str(&client_text(&joined, Some(&turn())).unwrap()).unwrap();
        let server = &v["ice_servers"][0];
        assert_eq!(server["urls"].as_array().unwrap().len(), 2);
        let username = server["username"].as_str().unwrap();
        assert!(username.ends_with(&format!(":{participant}")));
        assert_eq!(
            server["credential"].as_str().unwrap(),
            crate::turn::credential("s3cret", username)
        );
        let v: serde_json::Value =
            serde_json::from_str(&client_text(&joined, None).unwrap()).unwrap();
        assert_eq!(v["ice_servers"], serde_json::json!([]));
    }
}
