//! WHIP, WHEP and the room protocol against the real `nexus serve`: who may publish and
//! subscribe, and what hostile input gets. Every HTTP refusal is an RFC 9457 problem document
//! with the status the contract names; a mangled SDP offer is a 400, never a 5xx, a hang or a
//! dead server; junk on `/rtc` is an `error` message, and an oversized one closes the socket.

#![allow(clippy::unwrap_used)]

mod common;

use common::{JWT_SECRET, Resp, Server};
use futures_util::{SinkExt, StreamExt};
use nexus_auth::{Claims, Grant, RoomKind, TokenKeys};
use std::time::Instant;
use str0m::Rtc;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::tungstenite::Message;

fn keys() -> TokenKeys {
    TokenKeys::new(JWT_SECRET.as_bytes(), &[])
}

/// A room token for `room` with `grants`.
fn room_token(room: &str, kind: RoomKind, grants: &[Grant]) -> String {
    let claims = Claims::new("ada", 600).with_room(room, kind, grants.to_vec());
    keys().mint(&claims).unwrap()
}

/// A browser-like offer (audio + video in `dir`) from a str0m peer, and the peer waiting for
/// its answer.
fn offer(dir: Direction) -> (Rtc, str0m::change::SdpPendingOffer, String) {
    str0m::crypto::from_feature_flags().install_process_default();
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    (rtc, pending, offer.to_sdp_string())
}

async fn post_sdp(s: &Server, path: &str, token: Option<&str>, ct: &str, body: Vec<u8>) -> Resp {
    let mut headers = vec![("content-type".to_string(), ct.to_string())];
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    s.raw("POST", path, &headers, Some(body)).await
}

async fn with_token(s: &Server, method: &str, path: &str, token: &str) -> Resp {
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    s.raw(method, path, &headers, None).await
}

/// The server answers and nothing panicked on its side.
async fn assert_still_serving(s: &Server) {
    let health = s
        .req("GET", "/healthz", None, serde_json::Value::Null)
        .await;
    assert_eq!(health.status, 200);
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
}

#[tokio::test]
async fn whip_and_whep_refuse_strangers_missing_grants_and_bad_bodies_with_problem_documents() {
    let s = Server::start(&[]);
    let sdp = "application/sdp";
    let (_, _, publish_offer) = offer(Direction::SendOnly);
    let (_, _, subscribe_offer) = offer(Direction::RecvOnly);
    let teacher = room_token(
        "class-a",
        RoomKind::Class,
        &[Grant::Publish, Grant::Subscribe],
    );
    let student = room_token("class-a", RoomKind::Class, &[Grant::Subscribe]);
    let body = || publish_offer.clone().into_bytes();

    // No token, a garbage token, an expired one, one signed with another key, a platform token
    // that names no room: 401 or 403, before the offer is looked at.
    post_sdp(&s, "/whip/class-a", None, sdp, body())
        .await
        .assert_problem(401, "unauthorized");
    post_sdp(&s, "/whip/class-a", Some("not.a.jwt"), sdp, body())
        .await
        .assert_problem(401, "unauthorized");
    let mut expired =
        Claims::new("ada", 0).with_room("class-a", RoomKind::Class, vec![Grant::Publish]);
    expired.exp -= 3600;
    let expired = keys().mint(&expired).unwrap();
    post_sdp(&s, "/whip/class-a", Some(&expired), sdp, body())
        .await
        .assert_problem(401, "unauthorized");
    let forged = TokenKeys::new(b"another-secret-another-secret-0123456789", &[])
        .mint(&Claims::new("ada", 600).with_room("class-a", RoomKind::Class, vec![Grant::Publish]))
        .unwrap();
    post_sdp(&s, "/whip/class-a", Some(&forged), sdp, body())
        .await
        .assert_problem(401, "unauthorized");
    let platform = keys().mint(&Claims::new("ada", 600)).unwrap();
    post_sdp(&s, "/whip/class-a", Some(&platform), sdp, body())
        .await
        .assert_problem(403, "forbidden");

    // A valid token for another room; a grant the call needs and the token lacks.
    post_sdp(&s, "/whip/class-b", Some(&teacher), sdp, body())
        .await
        .assert_problem(403, "forbidden");
    post_sdp(&s, "/whip/class-a", Some(&student), sdp, body())
        .await
        .assert_problem(403, "forbidden");
    let publisher_only = room_token("class-a", RoomKind::Class, &[Grant::Publish]);
    post_sdp(
        &s,
        "/whep/class-a",
        Some(&publisher_only),
        sdp,
        subscribe_offer.clone().into_bytes(),
    )
    .await
    .assert_problem(403, "forbidden");

    // Bodies: not SDP by content type, not UTF-8, not SDP at all, SDP without media, larger
    // than the body limit.
    post_sdp(
        &s,
        "/whip/class-a",
        Some(&teacher),
        "application/json",
        body(),
    )
    .await
    .assert_problem(415, "unsupported-media-type");
    post_sdp(
        &s,
        "/whip/class-a",
        Some(&teacher),
        sdp,
        vec![0xff, 0xfe, 0x00, 0x80],
    )
    .await
    .assert_problem(400, "malformed-body");
    for junk in [
        "",
        "hello",
        "v=0\r\n",
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n",
    ] {
        let r = post_sdp(&s, "/whip/class-a", Some(&teacher), sdp, junk.into()).await;
        r.assert_problem(400, "malformed-body");
    }
    let huge = format!(
        "{publish_offer}{}",
        "a=x-padding:0123456789\r\n".repeat(60_000)
    );
    let r = post_sdp(&s, "/whip/class-a", Some(&teacher), sdp, huge.into_bytes()).await;
    r.assert_problem(413, "payload-too-large");

    // A room name the SFU does not accept (the token names it, so only the name is wrong).
    let long = "r".repeat(300);
    let bad_room = room_token(&long, RoomKind::Class, &[Grant::Publish]);
    post_sdp(&s, &format!("/whip/{long}"), Some(&bad_room), sdp, body())
        .await
        .assert_problem(400, "validation");

    // Sessions that do not exist, or that belong to another room's token.
    with_token(&s, "DELETE", "/whip/class-a/not-a-session", &teacher)
        .await
        .assert_problem(404, "not-found");

    assert_still_serving(&s).await;
}

#[tokio::test]
async fn a_whip_session_is_created_answered_and_ended_through_its_location() {
    let s = Server::start(&[]);
    let teacher = room_token(
        "class-c",
        RoomKind::Class,
        &[Grant::Publish, Grant::Subscribe],
    );
    let (mut rtc, pending, offer) = offer(Direction::SendOnly);

    let r = post_sdp(
        &s,
        "/whip/class-c",
        Some(&teacher),
        "application/sdp",
        offer.into(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.content_type().starts_with("application/sdp"), "{r:?}");
    let location = r.headers["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/whip/class-c/"), "{location}");
    // The answer is one our own WebRTC stack accepts.
    let answer = SdpAnswer::from_sdp_string(std::str::from_utf8(&r.body).unwrap()).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();

    // The session's own room token is needed to end it.
    let other = room_token("class-d", RoomKind::Class, &[Grant::Publish]);
    with_token(&s, "DELETE", &location, &other)
        .await
        .assert_problem(403, "forbidden");
    // Trickle ICE: ICE-lite, so refused cleanly (the contract allows 204 or 405).
    let headers = vec![
        ("authorization".to_string(), format!("Bearer {teacher}")),
        (
            "content-type".to_string(),
            "application/trickle-ice-sdpfrag".to_string(),
        ),
    ];
    let patch = s
        .raw(
            "PATCH",
            &location,
            &headers,
            Some(b"a=end-of-candidates\r\n".to_vec()),
        )
        .await;
    if patch.status != 204 {
        patch.assert_problem(405, "method-not-allowed");
    }
    assert_eq!(
        with_token(&s, "DELETE", &location, &teacher).await.status,
        200
    );
    with_token(&s, "DELETE", &location, &teacher)
        .await
        .assert_problem(404, "not-found");
}

/// Offers cut, shuffled and corrupted line by line: each gets 201 or a 400 problem document,
/// and the server keeps answering.
#[tokio::test]
async fn mangled_offers_get_400_or_a_session_and_never_break_the_server() {
    // Hundreds of offers from one client: no rate limit in the way.
    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
    ]);
    let teacher = room_token(
        "class-m",
        RoomKind::Class,
        &[Grant::Publish, Grant::Subscribe],
    );
    let (_, _, offer) = offer(Direction::SendOnly);
    let lines: Vec<&str> = offer.split("\r\n").filter(|l| !l.is_empty()).collect();

    let mut mangled: Vec<String> = Vec::new();
    // Cut after each line, and in the middle of each line.
    for i in 0..lines.len() {
        mangled.push(lines[..i].join("\r\n") + "\r\n");
        let half = &lines[i][..lines[i].len() / 2];
        mangled.push(format!("{}\r\n{half}", lines[..i].join("\r\n")));
    }
    // Each line dropped, doubled, or with its value replaced by hostile text.
    let hostile = [
        "",
        "-1",
        "99999999999999999999999",
        "\u{0}\u{7f}\u{ffff}",
        "a=rtpmap:96 VP8/0",
        "m=video 0 RTP/AVP 256",
        "x=",
    ];
    for i in 0..lines.len() {
        let mut without = lines.clone();
        without.remove(i);
        mangled.push(without.join("\r\n") + "\r\n");
        let mut doubled = lines.clone();
        doubled.insert(i, lines[i]);
        mangled.push(doubled.join("\r\n") + "\r\n");
        let key = lines[i].split_once('=').map_or("", |(k, _)| k);
        let junk = hostile[i % hostile.len()];
        let mut replaced: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        replaced[i] = format!("{key}={junk}");
        mangled.push(replaced.join("\r\n") + "\r\n");
    }
    // Line endings a sloppy client sends.
    mangled.push(offer.replace("\r\n", "\n"));

    let (mut created, mut refused) = (0, 0);
    for body in mangled {
        let r = post_sdp(
            &s,
            "/whip/class-m",
            Some(&teacher),
            "application/sdp",
            body.into(),
        )
        .await;
        match r.status {
            201 => {
                created += 1;
                let location = r.headers["location"].to_str().unwrap().to_string();
                assert_eq!(
                    with_token(&s, "DELETE", &location, &teacher).await.status,
                    200
                );
            }
            _ => {
                r.assert_problem(400, "malformed-body");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0 && created > 0,
        "{refused} refused, {created} created"
    );
    assert_still_serving(&s).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next frame within 10 s (`None` once the socket has ended).
async fn next(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("the server answers within 10 s")
        .map(|m| m.unwrap())
}

/// The next room-protocol message, as JSON.
async fn next_json(ws: &mut Ws) -> serde_json::Value {
    match next(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_room_protocol_answers_junk_with_errors_and_closes_on_oversized_messages() {
    let s = Server::start(&[]);
    let token = room_token(
        "class-r",
        RoomKind::Class,
        &[Grant::Publish, Grant::Subscribe],
    );
    let url = format!("{}/rtc?token={token}", s.base.replace("http://", "ws://"));

    // The first message must be `join`: anything else is an error, then the socket closes.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::Text(r#"{"type":"chat","text":"hi"}"#.into()))
        .await
        .unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_message"))
    );
    assert!(matches!(
        next(&mut ws).await,
        Some(Message::Close(_)) | None
    ));

    // A member: junk, an unknown type, wrong types, unknown fields — each an error, and the
    // socket stays open (a chat line afterwards reaches the room, the sender included).
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::Text(r#"{"type":"join"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "joined");
    for junk in [
        "{",
        "[]",
        "null",
        r#"{"type":"fly"}"#,
        r#"{"type":"mute","track":7,"muted":"yes"}"#,
        r#"{"type":"raise_hand","raised":true,"also":1}"#,
        r#"{"type":"subscribe","track":"t-nowhere","max_height":-1}"#,
    ] {
        ws.send(Message::Text(junk.into())).await.unwrap();
        let e = next_json(&mut ws).await;
        assert_eq!(e["type"], "error", "{junk} → {e}");
        assert_eq!(e["code"], "bad_message", "{junk} → {e}");
    }
    ws.send(Message::Text(
        r#"{"type":"chat","text":"still here"}"#.into(),
    ))
    .await
    .unwrap();
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "chat" {
            assert_eq!(m["text"], "still here");
            break;
        }
    }

    // A message over the limit (256 KiB) is not buffered: the socket closes with 1009.
    let huge = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(300 * 1024));
    ws.send(Message::Text(huge.into())).await.unwrap();
    loop {
        match next(&mut ws).await {
            Some(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
                break;
            }
            Some(Message::Text(_)) => continue,
            other => panic!("expected a close frame with 1009, got {other:?}"),
        }
    }
    assert_still_serving(&s).await;
}
