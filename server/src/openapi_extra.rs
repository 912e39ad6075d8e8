//! OpenAPI entries for the routes whose handlers live outside the utoipa-annotated API — SFU
//! signaling (WHIP, WHEP, the `/rtc` room protocol) and the Centrifugo-compatible gateway — so
//! the document covers every endpoint the binary serves. These functions only carry the
//! documentation; the real handlers are in `rtc.rs` and `nexus-gateway`.
#![allow(dead_code)]

use utoipa::OpenApi;

/// WHIP ingest (RFC 9725): an SDP offer in, an SDP answer out.
#[utoipa::path(post, path = "/whip/{room}", tag = "media",
    params(("room" = String, Path, description = "Room name (must match the token's `room` claim)")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session", content_type = "application/sdp"),
        (status = 400, description = "Bad SDP", body = nexus_api::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid room token", body = nexus_api::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token for another room or without the `publish` grant", body = nexus_api::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
fn whip() {}

/// Ends a WHIP session.
#[utoipa::path(delete, path = "/whip/{room}/{session}", tag = "media",
    params(("room" = String, Path, description = "Room name"), ("session" = String, Path, description = "Session id from `Location`")),
    responses((status = 200, description = "Session ended"), (status = 404, body = nexus_api::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
fn whip_delete() {}

/// Trickle ICE: not supported (ICE-lite with host candidates in the answer).
#[utoipa::path(patch, path = "/whip/{room}/{session}", tag = "media",
    params(("room" = String, Path, description = "Room name"), ("session" = String, Path, description = "Session id")),
    responses((status = 405, description = "Trickle ICE is not supported", body = nexus_api::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
fn whip_patch() {}

/// WHEP egress: subscribe to the room's published audio and video.
#[utoipa::path(post, path = "/whep/{room}", tag = "media",
    params(("room" = String, Path, description = "Room name"),
        ("publisher" = Option<String>, Query, description = "Only this participant's tracks")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (recvonly)"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session", content_type = "application/sdp"),
        (status = 400, body = nexus_api::Problem, content_type = "application/problem+json"),
        (status = 401, body = nexus_api::Problem, content_type = "application/problem+json"),
        (status = 403, body = nexus_api::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
fn whep() {}

/// Ends a WHEP session.
#[utoipa::path(delete, path = "/whep/{room}/{session}", tag = "media",
    params(("room" = String, Path, description = "Room name"), ("session" = String, Path, description = "Session id")),
    responses((status = 200, description = "Session ended"), (status = 404, body = nexus_api::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
fn whep_delete() {}

/// The multi-party room protocol over WebSocket (JSON messages in `docs/rtc-protocol.md`).
#[utoipa::path(get, path = "/rtc", tag = "media",
    params(("token" = String, Query, description = "Room token (browsers cannot set WebSocket headers)")),
    responses((status = 101, description = "WebSocket upgrade"), (status = 401, body = nexus_api::Problem, content_type = "application/problem+json")))]
fn rtc() {}

/// A minimal browser client for rooms (publish, subscribe, waiting room).
#[utoipa::path(get, path = "/rtc/client", tag = "media",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
fn rtc_client() {}

/// The consultation page: camera and microphone preview, sign-in or `#token=…`, waiting room.
#[utoipa::path(get, path = "/consult/{room}", tag = "media",
    params(("room" = String, Path, description = "Room name (`consult-<consultation id>`)")),
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
fn consult_page() {}

/// The class page: as the consultation page, plus raise hand (students) and grant (teacher).
#[utoipa::path(get, path = "/class/{room}", tag = "media",
    params(("room" = String, Path, description = "Room name (`class-<class id>`)")),
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
fn class_page() {}

/// SFU metrics in Prometheus text format (rooms, participants, packets, loss).
#[utoipa::path(get, path = "/metrics/sfu", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
fn sfu_metrics() {}

/// The realtime gateway: Centrifugo client protocol (JSON) over WebSocket; the connection token
/// goes in the `connect` command.
#[utoipa::path(get, path = "/connection/websocket", tag = "realtime",
    responses((status = 101, description = "WebSocket upgrade")))]
fn gateway_websocket() {}

/// The gateway server API in Centrifugo's HTTP API shape (`publish`, `broadcast`, `history`,
/// `history_remove`, `presence`, `presence_stats`, `channels`, `info`, `disconnect`,
/// `subscribe`, `unsubscribe`); errors as `{"error": {"code", "message"}}`.
#[utoipa::path(post, path = "/api/{method}", tag = "realtime",
    params(("method" = String, Path, description = "API method, e.g. `publish`")),
    request_body(content = Object, description = "Centrifugo API request for the method"),
    responses(
        (status = 200, description = "`{\"result\": …}` or `{\"error\": {\"code\", \"message\"}}`", body = Object),
        (status = 401, description = "Missing or wrong API key"),
        (status = 403, description = "Server API disabled (no key configured)")),
    security(("api_key" = [])))]
fn gateway_api() {}

/// Documentation of the routes served outside the annotated API.
#[derive(OpenApi)]
#[openapi(
    paths(whip, whip_delete, whip_patch, whep, whep_delete, rtc, rtc_client, consult_page, class_page, sfu_metrics, gateway_websocket, gateway_api),
    tags(
        (name = "media", description = "WebRTC SFU signaling: WHIP, WHEP and the room protocol"),
        (name = "realtime", description = "Centrifugo-compatible WebSocket gateway and its server API"),
        (name = "health", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ExtraDoc;
