//! Scenarios over a real loopback WebSocket (tokio-tungstenite client).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, Closed, Transport, config, start, start_on};
use futures_util::{SinkExt, StreamExt};
use nexus_auth::{Claims, Role};
use nexus_gateway::MemoryEngine;
use nexus_gateway::{GatewayConfig, NamespaceConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn client_subscribes_and_receives_a_server_api_publication() {
    subscribe_and_receive(Transport::Direct).await;
}

#[tokio::test]
async fn client_subscribes_and_receives_a_server_api_publication_through_axum() {
    subscribe_and_receive(Transport::Axum).await;
}

async fn subscribe_and_receive(transport: Transport) {
    let srv = start_on(transport, config(), MemoryEngine::new()).await;
    let mut c = srv.client("u1", &[Role::Responder], &[]).await;
    assert_eq!(c.connect_reply["ping"], 25);
    assert_eq!(c.connect_reply["pong"], true);
    assert_eq!(c.connect_reply["expires"], true);
    let sub = c.subscribe(json!({"channel": "incidents"})).await;
    assert_eq!(sub["recoverable"], true);
    assert!(sub["epoch"].as_str().is_some_and(|e| !e.is_empty()));

    let r = srv
        .api(
            "publish",
            json!({"channel": "incidents", "data": {"title": "flood"}}),
        )
        .await;
    assert_eq!(r["result"]["offset"], 1);
    assert_eq!(r["result"]["epoch"], sub["epoch"]);
    let p = c.publication().await;
    assert_eq!(p["data"], json!({"title": "flood"}));
    assert_eq!(p["offset"], 1);

    // In-process publishers use the same path.
    srv.gw
        .publish("incidents", json!({"title": "fire"}))
        .await
        .unwrap();
    assert_eq!(c.publication().await["offset"], 2);
    let stats = srv.gw.stats();
    assert_eq!((stats.connections, stats.subscriptions), (1, 1));
    assert!(stats.messages_sent >= 4);
}

#[tokio::test]
async fn batched_commands_in_one_frame_are_answered_in_order() {
    let srv = start(config()).await;
    let mut c = Client::open(srv.addr).await;
    let token = srv.token("u1", &[], &[], 600);
    let frame = format!(
        "{}\n{}\n{}",
        json!({"id": 1, "connect": {"token": token}}),
        json!({"id": 2, "subscribe": {"channel": "alerts"}}),
        json!({"id": 3, "subscribe": {"channel": "nope"}}),
    );
    c.send_text(frame).await;
    assert!(c.reply(1).await.get("connect").is_some());
    assert!(c.reply(2).await.get("subscribe").is_some());
    assert_eq!(c.reply(3).await["error"]["code"], 102);
}

#[tokio::test]
async fn forbidden_operations_get_errors_and_disturb_nobody() {
    let srv = start(config()).await;
    let mut member = srv.client("m", &[Role::Student], &["class:42"]).await;
    let mut stranger = srv.client("s", &[Role::Student], &[]).await;
    let mut admin = srv.client("root", &[Role::Admin], &[]).await;

    // Members are subscribed server-side from the token's channels.
    assert!(member.connect_reply["subs"]["class:42"].is_object());
    let deny = |v: &Value| v["error"]["code"].clone();
    assert_eq!(
        deny(
            &stranger
                .call("subscribe", json!({"channel": "class:42"}))
                .await
        ),
        103
    );
    assert_eq!(
        deny(
            &stranger
                .call("subscribe", json!({"channel": "user#m"}))
                .await
        ),
        103
    );
    assert_eq!(
        deny(
            &stranger
                .call("publish", json!({"channel": "incidents", "data": {}}))
                .await
        ),
        103
    );
    assert_eq!(
        deny(
            &stranger
                .call("publish", json!({"channel": "class:42", "data": {}}))
                .await
        ),
        103
    );
    assert_eq!(
        deny(
            &stranger
                .call("subscribe", json!({"channel": "secret"}))
                .await
        ),
        102
    );
    assert_eq!(
        deny(
            &stranger
                .call("presence", json!({"channel": "incidents"}))
                .await
        ),
        108
    );
    assert_eq!(
        deny(&stranger.call("rpc", json!({"method": "x"})).await),
        108
    );
    assert_eq!(deny(&stranger.call("frobnicate", json!({})).await), 104);
    assert_eq!(
        deny(
            &member
                .call("subscribe", json!({"channel": "class:42"}))
                .await
        ),
        105
    );
    // The stranger is still connected and can do what it may.
    stranger.subscribe(json!({"channel": "user#s"})).await;
    admin.subscribe(json!({"channel": "class:42"})).await;

    // A member publishes; member (server-side sub) and admin receive, with publisher info.
    let r = member
        .call(
            "publish",
            json!({"channel": "class:42", "data": {"text": "hi"}}),
        )
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    let p = admin.publication().await;
    assert_eq!(p["data"]["text"], "hi");
    assert_eq!(p["info"]["user"], "m");
    assert_eq!(member.publication().await["data"]["text"], "hi");
}

#[tokio::test]
async fn recovery_after_reconnect_returns_missed_publications() {
    let srv = start(config()).await;
    let mut c = srv.client("u1", &[], &[]).await;
    let sub = c.subscribe(json!({"channel": "alerts"})).await;
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    srv.gw.publish("alerts", json!({"n": 1})).await.unwrap();
    assert_eq!(c.publication().await["offset"], 1);
    c.close().await;

    for n in 2..=4 {
        srv.gw.publish("alerts", json!({ "n": n })).await.unwrap();
    }
    let mut c = srv.client("u1", &[], &[]).await;
    let sub = c
        .subscribe(json!({"channel": "alerts", "recover": true, "offset": 1, "epoch": epoch}))
        .await;
    assert_eq!(sub["recovered"], true);
    assert_eq!(sub["was_recovering"], true);
    let offsets: Vec<_> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].clone())
        .collect();
    assert_eq!(offsets, [2, 3, 4]);
    // Live publications continue after the recovered ones, without duplicates.
    srv.gw.publish("alerts", json!({"n": 5})).await.unwrap();
    assert_eq!(c.publication().await["offset"], 5);

    // Nothing missed: recovered, nothing to replay.
    let mut d = srv.client("u2", &[], &[]).await;
    let sub = d
        .subscribe(json!({"channel": "alerts", "recover": true, "offset": 5, "epoch": epoch}))
        .await;
    assert_eq!(sub["recovered"], true);
    assert!(sub.get("publications").is_none());
}

#[tokio::test]
async fn recovery_fails_when_the_epoch_changed_or_history_was_trimmed() {
    let mut cfg = config();
    cfg.namespaces = vec![NamespaceConfig {
        history_size: 2,
        history_ttl_secs: 60,
        ..NamespaceConfig::new("alerts")
    }];
    let srv = start(cfg).await;
    for n in 1..=5 {
        srv.gw.publish("alerts", json!({ "n": n })).await.unwrap();
    }
    let mut c = srv.client("u1", &[], &[]).await;
    let epoch = c.subscribe(json!({"channel": "alerts"})).await["epoch"].clone();
    // Offset 1 is past the trimmed history (only 4 and 5 are kept).
    let mut d = srv.client("u2", &[], &[]).await;
    let sub = d
        .subscribe(json!({"channel": "alerts", "recover": true, "offset": 1, "epoch": epoch}))
        .await;
    assert_eq!(
        (sub["recovered"].clone(), sub["was_recovering"].clone()),
        (Value::Null, json!(true))
    );
    assert_eq!(sub["offset"], 5);
    // Another epoch: the stream moved on.
    let mut e = srv.client("u3", &[], &[]).await;
    let sub = e
        .subscribe(json!({"channel": "alerts", "recover": true, "offset": 4, "epoch": "other"}))
        .await;
    assert_eq!(sub["recovered"], Value::Null);
    assert_eq!(sub["epoch"], epoch);
    // History API with a stale epoch: 112.
    let r = srv
        .api(
            "history",
            json!({"channel": "alerts", "limit": 10, "since": {"offset": 4, "epoch": "other"}}),
        )
        .await;
    assert_eq!(r["error"]["code"], 112);
}

#[tokio::test]
async fn presence_join_and_leave() {
    let srv = start(config()).await;
    let member = |user: &'static str| {
        let srv = &srv;
        async move {
            let mut c = Client::open(srv.addr).await;
            let t = srv
                .keys
                .mint(&Claims::new(user, 600).with_channels(vec!["class:1".into()]))
                .unwrap();
            let r = c.call("connect", json!({"token": t})).await;
            assert!(r["connect"]["subs"]["class:1"].is_object(), "{r}");
            c
        }
    };
    // alice is subscribed server-side from her token; she sees her own join, then bob's.
    let mut a = member("alice").await;
    let j = a.push().await;
    assert_eq!(j["join"]["info"]["user"], "alice");
    let b = member("bob").await;
    let j = a.push().await;
    assert_eq!(
        (j["channel"].as_str(), j["join"]["info"]["user"].as_str()),
        (Some("class:1"), Some("bob"))
    );
    let p = a.call("presence", json!({"channel": "class:1"})).await;
    let users: Vec<_> = p["presence"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .map(|i| i["user"].clone())
        .collect();
    assert_eq!(users.len(), 2, "{p}");
    let s = srv
        .api("presence_stats", json!({"channel": "class:1"}))
        .await;
    assert_eq!(s["result"], json!({"num_clients": 2, "num_users": 2}));
    b.close().await;
    let l = a.push().await;
    assert_eq!(l["leave"]["info"]["user"], "bob");
    let s = a
        .call("presence_stats", json!({"channel": "class:1"}))
        .await;
    assert_eq!(s["presence_stats"]["num_clients"], 1);
}

#[tokio::test]
async fn geo_filtered_subscriptions() {
    let srv = start(config()).await;
    let mut paris = srv.client("p", &[], &[]).await;
    paris
        .subscribe(
            json!({"channel": "incidents", "data": {"bbox": [2.0, 48.0, 3.0, 49.0], "zoom": 9}}),
        )
        .await;
    let mut fiji = srv.client("f", &[], &[]).await;
    fiji.subscribe(
        json!({"channel": "incidents", "data": {"bbox": [170.0, -25.0, -170.0, -10.0]}}),
    )
    .await;
    let mut everyone = srv.client("e", &[], &[]).await;
    everyone.subscribe(json!({"channel": "incidents"})).await;

    let at = |lon: f64, lat: f64, id: &str| json!({"id": id, "location": {"lat": lat, "lon": lon}});
    srv.gw
        .publish("incidents", at(2.35, 48.85, "paris"))
        .await
        .unwrap();
    srv.gw
        .publish("incidents", at(13.4, 52.5, "berlin"))
        .await
        .unwrap();
    srv.gw
        .publish("incidents", at(-178.0, -17.0, "east-of-180"))
        .await
        .unwrap();
    srv.gw
        .publish(
            "incidents",
            json!({"id": "suva", "geometry": {"type": "Point", "coordinates": [178.4, -18.1]}}),
        )
        .await
        .unwrap();
    srv.gw
        .publish("incidents", json!({"id": "everywhere"}))
        .await
        .unwrap();

    let ids = |v: Vec<Value>| {
        v.iter()
            .map(|p| p["data"]["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(paris.publication().await);
    }
    assert_eq!(ids(got), ["paris", "everywhere"]);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(fiji.publication().await);
    }
    assert_eq!(ids(got), ["east-of-180", "suva", "everywhere"]);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(everyone.publication().await);
    }
    assert_eq!(ids(got).len(), 5);
    assert!(paris.quiet_for(Duration::from_millis(200)).await);

    let mut bad = srv.client("b", &[], &[]).await;
    for bbox in [
        json!([0, 0, 1]),
        json!([0, 95, 1, 96]),
        json!([0, 10, 1, 5]),
        json!("x"),
    ] {
        let r = bad
            .call(
                "subscribe",
                json!({"channel": "incidents", "data": {"bbox": bbox}}),
            )
            .await;
        assert_eq!(r["error"]["code"], 107, "{bbox}");
    }
    // A geo subscriber recovering gets only the missed publications inside its box.
    let epoch = srv
        .gw
        .history("incidents", 0, None, false)
        .await
        .unwrap()
        .epoch;
    let mut late = srv.client("l", &[], &[]).await;
    let sub = late
        .subscribe(
            json!({"channel": "incidents", "recover": true, "offset": 0, "epoch": epoch,
                          "data": {"bbox": [2.0, 48.0, 3.0, 49.0]}}),
        )
        .await;
    assert_eq!(sub["recovered"], true);
    assert_eq!(
        ids(sub["publications"].as_array().unwrap().clone()),
        ["paris", "everywhere"]
    );
}

#[tokio::test]
async fn a_slow_client_is_disconnected_while_a_fast_one_keeps_receiving() {
    slow_client(Transport::Direct).await;
}

#[tokio::test]
async fn a_slow_client_is_disconnected_while_a_fast_one_keeps_receiving_through_axum() {
    slow_client(Transport::Axum).await;
}

async fn slow_client(transport: Transport) {
    let mut cfg = config();
    cfg.client_queue_max_messages = 64;
    cfg.client_queue_max_bytes = 256 << 10;
    cfg.namespaces = vec![NamespaceConfig {
        history_size: 10,
        history_ttl_secs: 60,
        ..NamespaceConfig::new("feed")
    }];
    cfg.close_timeout_secs = 20;
    let srv = start_on(transport, cfg, MemoryEngine::new()).await;
    let mut slow = srv.client("slow", &[], &[]).await;
    let epoch = slow.subscribe(json!({"channel": "feed"})).await["epoch"].clone();
    let mut fast = srv.client("fast", &[], &[]).await;
    fast.subscribe(json!({"channel": "feed"})).await;

    // The slow client stops reading. 1500 × 16 KiB ≈ 24 MiB overflows the socket buffers and
    // then its 256 KiB queue; the publisher never waits.
    let payload = "x".repeat(16 << 10);
    let total = 1500u64;
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < total {
            last = fast.publication().await["offset"].as_u64().unwrap();
        }
        fast
    });
    let started = std::time::Instant::now();
    for n in 0..total {
        srv.gw
            .publish("feed", json!({ "n": n, "pad": payload }))
            .await
            .unwrap();
    }
    let publish_time = started.elapsed();
    let mut fast = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        publish_time < Duration::from_secs(30),
        "publishing stalled: {publish_time:?}"
    );
    assert_eq!(srv.gw.stats().slow_disconnects, 1);

    // Now the slow client reads what the kernel buffered, then the close frame: 3008.
    assert_eq!(slow.closed().await, Closed(3008, "slow".into()));
    // The fast client is still served.
    srv.gw
        .publish("feed", json!({"after": true}))
        .await
        .unwrap();
    assert_eq!(fast.publication().await["data"]["after"], true);

    // The slow client reconnects and recovers what history still holds.
    let mut again = srv.client("slow", &[], &[]).await;
    let sub = again
        .subscribe(json!({"channel": "feed", "recover": true, "offset": total - 5, "epoch": epoch}))
        .await;
    assert_eq!(sub["recovered"], true);
    assert_eq!(sub["publications"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn expired_tokens_refresh_and_connection_expiry() {
    let mut cfg = config();
    cfg.expired_close_delay_secs = 0;
    let srv = start(cfg).await;

    // Connecting with an expired token: error 109 (the client fetches a new token).
    let mut c = Client::open(srv.addr).await;
    let mut old = Claims::new("u1", 0);
    old.exp -= 3600;
    let r = c
        .call("connect", json!({"token": srv.keys.mint(&old).unwrap()}))
        .await;
    assert_eq!(r["error"], json!({"code": 109, "message": "token expired"}));
    // A bad token is terminal: 3500.
    c.send("connect", json!({"token": "garbage"})).await;
    assert_eq!(c.closed().await.0, 3500);

    // A 2-second connection that refreshes stays; one that doesn't is closed with 3005.
    let mut keeps = Client::open(srv.addr).await;
    keeps
        .call("connect", json!({"token": srv.token("u1", &[], &[], 2)}))
        .await;
    let mut lapses = Client::open(srv.addr).await;
    let r = lapses
        .call("connect", json!({"token": srv.token("u2", &[], &[], 2)}))
        .await;
    assert!(r["connect"]["ttl"].as_u64().unwrap() <= 2);
    let r = keeps
        .call("refresh", json!({"token": srv.token("u1", &[], &[], 600)}))
        .await;
    assert_eq!(r["refresh"]["expires"], true);
    assert!(r["refresh"]["ttl"].as_u64().unwrap() > 500);
    // Refreshing as someone else is refused (terminal).
    assert_eq!(
        lapses.closed().await,
        Closed(3005, "connection expired".into())
    );
    let r = keeps.call("subscribe", json!({"channel": "alerts"})).await;
    assert!(r.get("subscribe").is_some());
    keeps
        .send(
            "refresh",
            json!({"token": srv.token("mallory", &[], &[], 600)}),
        )
        .await;
    assert_eq!(keeps.closed().await.0, 3500);
}

#[tokio::test]
async fn pings_are_sent_and_a_missing_pong_disconnects() {
    let mut cfg = config();
    cfg.ping_interval_secs = 1;
    cfg.pong_timeout_secs = 1;
    let srv = start(cfg).await;
    let mut polite = srv.client("a", &[], &[]).await;
    let mut mute = srv.client("b", &[], &[]).await;
    mute.answer_pings = false;
    let (closed, quiet) =
        tokio::join!(mute.closed(), polite.quiet_for(Duration::from_millis(3500)));
    assert_eq!(closed, Closed(3012, "no pong".into()));
    assert!(quiet);
    assert!(polite.pings_seen >= 2, "pings seen: {}", polite.pings_seen);
    assert!(
        polite
            .call("history", json!({"channel": "alerts"}))
            .await
            .get("history")
            .is_some()
    );
}

#[tokio::test]
async fn protocol_violations_close_with_bad_request() {
    let srv = start(config()).await;
    let mut c = Client::open(srv.addr).await;
    c.send("subscribe", json!({"channel": "alerts"})).await;
    assert_eq!(c.closed().await, Closed(3501, "bad request".into()));
    let mut c = srv.client("u", &[], &[]).await;
    c.send_text("{not json".into()).await;
    assert_eq!(c.closed().await.0, 3501);
}

#[tokio::test]
async fn server_api_controls_connections() {
    let srv = start(config()).await;
    let (status, _) = srv.api_raw("info", json!({}), None).await;
    assert_eq!(status, 401);
    let (status, _) = srv.api_raw("info", json!({}), Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = srv.api_raw("nope", json!({}), Some(common::API_KEY)).await;
    assert_eq!(status, 404);
    let (status, _) = srv
        .api_raw("publish", json!({"data": 1}), Some(common::API_KEY))
        .await;
    assert_eq!(status, 400);

    let mut c = srv.client("u1", &[], &[]).await;
    c.subscribe(json!({"channel": "alerts"})).await;
    let info = srv.api("info", json!({})).await;
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 1);
    assert_eq!(info["result"]["nodes"][0]["num_users"], 1);
    let ch = srv.api("channels", json!({"pattern": "al*"})).await;
    assert_eq!(ch["result"]["channels"]["alerts"]["num_clients"], 1);

    // Server-side subscribe and unsubscribe push to the client.
    srv.api("subscribe", json!({"user": "u1", "channel": "incidents"}))
        .await;
    let p = c.push().await;
    assert_eq!(
        (
            p["channel"].as_str(),
            p["subscribe"]["recoverable"].as_bool()
        ),
        (Some("incidents"), Some(true))
    );
    srv.api("unsubscribe", json!({"user": "u1", "channel": "alerts"}))
        .await;
    let p = c.push().await;
    assert_eq!(p["unsubscribe"]["code"], 2000);

    let b = srv
        .api(
            "broadcast",
            json!({"channels": ["incidents", "alerts", "nope"], "data": {"x": 1}}),
        )
        .await;
    let responses = b["result"]["responses"].as_array().unwrap();
    assert_eq!(responses[0]["result"]["offset"], 1);
    assert_eq!(responses[2]["error"]["code"], 102);
    assert_eq!(c.publication().await["data"]["x"], 1);

    let h = srv
        .api("history", json!({"channel": "incidents", "limit": -1}))
        .await;
    assert_eq!(h["result"]["publications"].as_array().unwrap().len(), 1);
    srv.api("history_remove", json!({"channel": "incidents"}))
        .await;
    let h = srv
        .api("history", json!({"channel": "incidents", "limit": 10}))
        .await;
    assert_eq!(h["result"]["publications"], json!([]));
    assert_eq!(h["result"]["offset"], 1);

    srv.api("disconnect", json!({"user": "u1"})).await;
    assert_eq!(c.closed().await, Closed(3503, "force disconnect".into()));
}

#[tokio::test]
async fn server_api_is_off_without_any_key() {
    let srv = start(GatewayConfig::default()).await;
    let (status, _) = srv.api_raw("info", json!({}), Some("anything")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn shutdown_disconnects_everyone_with_3001() {
    shutdown(Transport::Direct).await;
}

#[tokio::test]
async fn shutdown_disconnects_everyone_with_3001_through_axum() {
    shutdown(Transport::Axum).await;
}

async fn shutdown(transport: Transport) {
    let srv = start_on(transport, config(), MemoryEngine::new()).await;
    let mut a = srv.client("a", &[], &[]).await;
    let mut b = srv.client("b", &[], &[]).await;
    let gw = srv.gw.clone();
    let done = tokio::spawn(async move { gw.shutdown().await });
    assert_eq!(a.closed().await, Closed(3001, "shutdown".into()));
    assert_eq!(b.closed().await.0, 3001);
    done.await.unwrap();
    assert_eq!(srv.gw.stats().connections, 0);
    assert!(srv.gw.publish("alerts", json!({})).await.is_err());
}

#[tokio::test]
async fn binary_frames_are_refused() {
    let srv = start(config()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/connection/websocket", srv.addr))
            .await
            .unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 3501),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_late_reader_gets_every_publication_whole_and_in_order() {
    // The client reads nothing while 3000 publications of 4 KiB (12 MiB) are published: the
    // socket fills, direct writes stop part-way through frames and hand the rest to the
    // writer task, frames queue behind it. Then it reads: every frame whole, every offset
    // once and in order.
    let mut cfg = config();
    cfg.client_queue_max_messages = 10_000;
    cfg.client_queue_max_bytes = 64 << 20;
    let srv = start(cfg).await;
    let mut c = srv.client("late", &[], &[]).await;
    c.subscribe(json!({"channel": "incidents"})).await;
    let payload = "y".repeat(4 << 10);
    let total = 3000u64;
    for n in 1..=total {
        srv.gw
            .publish("incidents", json!({ "n": n, "pad": payload }))
            .await
            .unwrap();
    }
    for n in 1..=total {
        let p = c.publication().await;
        assert_eq!(p["offset"], n);
        assert_eq!(p["data"]["n"], n);
        assert_eq!(p["data"]["pad"].as_str().map(str::len), Some(4 << 10));
    }
    assert!(c.quiet_for(Duration::from_millis(200)).await);
    assert_eq!(srv.gw.stats().slow_disconnects, 0);
}

#[tokio::test]
async fn client_pings_get_pongs_and_fragmented_commands_are_joined() {
    let srv = start(config()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/connection/websocket", srv.addr))
            .await
            .unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("{other:?}"),
    }
    // A connect command split over two frames (text + continuation).
    let token = srv.token("frag", &[], &[], 600);
    let cmd = format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#);
    let (a, b) = cmd.split_at(10);
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    let part = |fin: bool, opcode: Data, bytes: &str| {
        Message::Frame(Frame::from_payload(
            FrameHeader {
                is_final: fin,
                opcode: OpCode::Data(opcode),
                ..FrameHeader::default()
            },
            bytes.as_bytes().to_vec().into(),
        ))
    };
    ws.send(part(false, Data::Text, a)).await.unwrap();
    ws.send(part(true, Data::Continue, b)).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert!(t.starts_with(r#"{"id":1,"connect":"#), "{t}"),
        other => panic!("{other:?}"),
    }
}

/// Opens a WebSocket by hand (no client library) and returns the socket after the 101.
async fn raw_upgrade(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            tcp.read(&mut b).await.unwrap(),
            1,
            "closed during the handshake"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455 §1.3's example key and its accept value.
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    tcp
}

/// Reads server frames until a close frame; returns its code.
async fn close_code(tcp: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed without a close frame");
            buf.extend_from_slice(&chunk[..n]);
            // Server frames are unmasked; the ones before the close are short here.
            while buf.len() >= 2 {
                let len = usize::from(buf[1] & 0x7f);
                assert!(len < 126);
                if buf.len() < 2 + len {
                    break;
                }
                if buf[0] & 0x0f == 0x8 {
                    return u16::from_be_bytes([buf[2], buf[3]]);
                }
                buf.drain(..2 + len);
            }
        }
    })
    .await
    .expect("no close frame")
}

#[tokio::test]
async fn frames_that_break_rfc_6455_close_with_bad_request() {
    use tokio::io::AsyncWriteExt;
    let srv = start(config()).await;
    // An unmasked client frame.
    let mut tcp = raw_upgrade(srv.addr).await;
    tcp.write_all(&[0x81, 0x02, b'{', b'}']).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 3501);
    // A frame announcing 2^40 bytes: refused from its header.
    let mut tcp = raw_upgrade(srv.addr).await;
    let mut huge = vec![0x81, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&huge).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 3501);
    // A client's close is answered with a normal close.
    let mut tcp = raw_upgrade(srv.addr).await;
    tcp.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, 1000);
    // All three connections end (each session's cleanup follows its close frame).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while srv.gw.stats().connections != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections left open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
