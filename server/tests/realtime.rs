//! The realtime gateway inside `nexus`: a user's token from the API opens a Centrifugo-protocol
//! connection, and a service with a platform API key publishes to it.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn next_json(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Vec<Value> {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
    }
}

#[tokio::test]
async fn responder_receives_an_incident_published_with_a_platform_api_key() {
    let s = Server::start(&[("NEXUS_RATE_LIMIT_PER_IP", "0")]);
    let (id, _, _) = s
        .register_login("medic@example.org", "a long password", "Medic")
        .await;
    let responder = s.token(&id, &[nexus_auth::Role::Responder], 300);
    let r = s
        .req(
            "POST",
            "/api/v1/realtime/token",
            Some(&responder),
            json!(null),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let token = r.json["token"].as_str().unwrap();

    let url = s.base.replace("http://", "ws://") + "/connection/websocket";
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(
        json!({"id": 1, "connect": {"token": token}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply[0]["id"], 1, "{reply:?}");
    let subs = &reply[0]["connect"]["subs"];
    assert!(
        subs.get("incidents").is_some(),
        "server-side subscription from the token: {reply:?}"
    );
    assert!(subs.get(format!("user#{id}")).is_some());

    // Without a key the server API is closed; with a platform key it publishes.
    let body = json!({"channel": "incidents", "data": {"type": "flood", "location": {"lat": 51.5, "lon": -0.12}}});
    let none = s
        .raw(
            "POST",
            "/api/publish",
            &[("content-type".into(), "application/json".into())],
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert!(none.status == 401 || none.status == 403, "{}", none.status);
    let out = s.cli(&["apikey", "create", "--name", "crisis-service"], None);
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let hdr = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-api-key".to_string(), key),
    ];
    let r = s
        .raw(
            "POST",
            "/api/publish",
            &hdr,
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json.get("error").is_none(), "{}", r.json);

    let push = loop {
        let frames = next_json(&mut ws).await;
        if let Some(p) = frames
            .into_iter()
            .find(|f| f["push"]["channel"] == "incidents")
        {
            break p;
        }
    };
    assert_eq!(push["push"]["pub"]["data"]["type"], "flood");

    let metrics = String::from_utf8(
        s.req("GET", "/metrics", None, json!(null))
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains(r#"nexus_gateway_current{what="connections"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"nexus_gateway_total{what="publications"} 1"#),
        "{metrics}"
    );
    // Issue 5 item 9: overflows, disconnects by close code, publish→write latency.
    for line in [
        r#"nexus_gateway_total{what="queue_overflows"} 0"#,
        r#"nexus_gateway_disconnects_total{code="3008"} 0"#,
        "# TYPE nexus_gateway_publish_write_seconds histogram",
        r#"nexus_gateway_publish_write_seconds_bucket{le="0.1"}"#,
        "nexus_gateway_publish_write_seconds_count",
    ] {
        assert!(metrics.contains(line), "{line} missing in {metrics}");
    }
}

#[tokio::test]
async fn a_detected_epidemic_reaches_the_crisis_map_through_the_event_bus() {
    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
    ]);
    let responder = s.token("watcher", &[nexus_auth::Role::Responder], 300);
    let r = s
        .req(
            "POST",
            "/api/v1/realtime/token",
            Some(&responder),
            json!(null),
        )
        .await;
    let token = r.json["token"].as_str().unwrap().to_string();
    let url = s.base.replace("http://", "ws://") + "/connection/websocket";
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(
        json!({"id": 1, "connect": {"token": token}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    next_json(&mut ws).await;

    let doc = s.token("doc-e", &[nexus_auth::Role::Provider], 300);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for i in 0..10 {
        let body = json!({"syndrome": "cholera", "location": {"lat": -1.28 + f64::from(i) * 0.001, "lon": 36.82}, "date": today});
        let r = s
            .req(
                "POST",
                "/api/v1/healthcare/data-collection",
                Some(&doc),
                body,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let push = loop {
        let frames = next_json(&mut ws).await;
        if let Some(p) = frames
            .into_iter()
            .find(|f| f["push"]["pub"]["data"]["event"] == "epidemic.detected")
        {
            break p;
        }
    };
    let data = &push["push"]["pub"]["data"];
    assert_eq!(push["push"]["channel"], "incidents");
    assert_eq!(data["type"], "epidemic.detected");
    assert_eq!(data["syndrome"], "cholera");
    assert_eq!(data["cases"], 10);
    assert!(data["location"]["lat"].is_number());
}
