//! Two `nexus` nodes sharing one Redis (issue 5, must-show): a client on node A receives a
//! publication made through node B's server API, and history and recovery work across nodes.
//!
//! Needs `NEXUS_TEST_REDIS_URL` (`eval "$(scripts/services.sh env)"`); without it the test is
//! skipped, or fails when `NEXUS_TEST_REQUIRE_ENGINES=1`. Each test uses its own channel, so
//! tests running in parallel on the shared Redis (same key prefix) never see each other's data.

#![allow(clippy::unwrap_used)]

mod common;

use common::{JWT_SECRET, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const API_KEY: &str = "cluster-test-api-key-0123456789";

fn redis_url() -> Option<String> {
    match std::env::var("NEXUS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("NEXUS_TEST_REQUIRE_ENGINES").as_deref() == Ok("1") => {
            panic!("NEXUS_TEST_REDIS_URL is not set (NEXUS_TEST_REQUIRE_ENGINES=1)")
        }
        _ => {
            eprintln!(
                "SKIPPED gateway cluster test: NEXUS_TEST_REDIS_URL is not set \
                 (set NEXUS_TEST_REQUIRE_ENGINES=1 to fail instead)"
            );
            None
        }
    }
}

/// A channel no other test (or earlier run) uses, in the `incidents` namespace (history on).
fn unique_channel(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("incidents:{what}-{}-{nanos}", std::process::id())
}

fn node(redis: &str) -> Server {
    Server::start(&[
        ("NEXUS_REDIS_URL", redis),
        ("NEXUS_GATEWAY_API_KEY", API_KEY),
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
    ])
}

fn connection_token(user: &str, channel: &str) -> String {
    let keys = nexus_auth::TokenKeys::new(JWT_SECRET.as_bytes(), &[]);
    keys.mint(&nexus_auth::Claims::new(user, 300).with_channels(vec![channel.to_string()]))
        .unwrap()
}

async fn frames(ws: &mut Ws) -> Vec<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = msg {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
    }
}

/// Connects to `server` with a token subscribing to `channel` server-side; `subs` is the
/// connect request's recovery map. Returns the socket and the connect result.
async fn connect(server: &Server, token: &str, subs: Value) -> (Ws, Value) {
    let url = server.base.replace("http://", "ws://") + "/connection/websocket";
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let cmd = json!({"id": 1, "connect": {"token": token, "subs": subs}});
    ws.send(Message::Text(cmd.to_string().into()))
        .await
        .unwrap();
    loop {
        for f in frames(&mut ws).await {
            if f["id"] == 1 {
                assert!(f.get("error").is_none(), "connect refused: {f}");
                return (ws, f["connect"].clone());
            }
        }
    }
}

/// The next publication pushed for `channel`.
async fn next_publication(ws: &mut Ws, channel: &str) -> Value {
    loop {
        for f in frames(ws).await {
            if f["push"]["channel"] == channel && f["push"].get("pub").is_some() {
                return f["push"]["pub"].clone();
            }
        }
    }
}

async fn api(server: &Server, method: &str, body: Value) -> Value {
    let hdr = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-api-key".to_string(), API_KEY.to_string()),
    ];
    let r = server
        .raw(
            "POST",
            &format!("/api/{method}"),
            &hdr,
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json.get("error").is_none(), "{method}: {}", r.json);
    r.json
}

#[tokio::test]
async fn two_nodes_sharing_redis_deliver_each_others_publications_and_recover_across_nodes() {
    let Some(redis) = redis_url() else { return };
    let a = node(&redis);
    let b = node(&redis);
    let channel = unique_channel("cluster");
    let token = connection_token("responder-1", &channel);

    // A client on node A, subscribed server-side by its token.
    let (mut on_a, connected) = connect(&a, &token, json!({})).await;
    let sub = &connected["subs"][&channel];
    assert_eq!(sub["recoverable"], true, "{connected}");
    let epoch = sub["epoch"].as_str().unwrap().to_string();

    // Published through node B's server API → delivered on node A.
    let published = api(
        &b,
        "publish",
        json!({"channel": channel, "data": {"n": 1, "via": "node-b"}}),
    )
    .await;
    assert_eq!(published["result"]["offset"], 1, "{published}");
    assert_eq!(published["result"]["epoch"], epoch.as_str(), "one stream");
    let p = next_publication(&mut on_a, &channel).await;
    assert_eq!(p["data"], json!({"n": 1, "via": "node-b"}));
    assert_eq!(p["offset"], 1);

    // And the other way round: published through A, received by a client on B.
    let (mut on_b, _) = connect(&b, &connection_token("responder-2", &channel), json!({})).await;
    api(&a, "publish", json!({"channel": channel, "data": {"n": 2}})).await;
    assert_eq!(next_publication(&mut on_b, &channel).await["offset"], 2);
    assert_eq!(next_publication(&mut on_a, &channel).await["offset"], 2);

    // The client on A goes away having seen offset 2; two more are published through B.
    on_a.close(None).await.unwrap();
    for n in 3..=4 {
        api(&b, "publish", json!({"channel": channel, "data": {"n": n}})).await;
    }

    // History written through B is read through A.
    let history = api(&a, "history", json!({"channel": channel, "limit": -1})).await;
    let offsets: Vec<u64> = history["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4], "{history}");
    assert_eq!(history["result"]["epoch"], epoch.as_str());

    // It reconnects to node B and recovers what it missed, from the shared stream.
    let recover = json!({ channel.clone(): {"recover": true, "offset": 2, "epoch": epoch} });
    let (mut again, connected) = connect(&b, &token, recover).await;
    let sub = &connected["subs"][&channel];
    assert_eq!(sub["recovered"], true, "{connected}");
    let missed: Vec<Value> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].clone())
        .collect();
    assert_eq!(missed, [json!(3), json!(4)], "{connected}");

    // Live delivery continues on the new node after recovery.
    api(&a, "publish", json!({"channel": channel, "data": {"n": 5}})).await;
    assert_eq!(next_publication(&mut again, &channel).await["offset"], 5);
}

#[tokio::test]
async fn a_recovery_from_another_epoch_is_refused_across_nodes() {
    let Some(redis) = redis_url() else { return };
    let a = node(&redis);
    let b = node(&redis);
    let channel = unique_channel("epoch");
    let token = connection_token("responder-3", &channel);
    api(&a, "publish", json!({"channel": channel, "data": {"n": 1}})).await;

    let recover = json!({ channel.clone(): {"recover": true, "offset": 1, "epoch": "stale"} });
    let (_ws, connected) = connect(&b, &token, recover).await;
    let sub = &connected["subs"][&channel];
    assert_eq!(sub["was_recovering"], true, "{connected}");
    assert_ne!(sub["recovered"], true, "{connected}");
    assert_eq!(
        sub["offset"], 1,
        "the shared stream's position: {connected}"
    );
}
