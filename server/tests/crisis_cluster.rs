//! Two `nexus` nodes sharing one PostgreSQL database and one Kafka broker (issue 3: the
//! real-time core consumes `incident.*` into the geo index on every node). A write taken by
//! one node reaches the other node's geo index through the bus, without a restart: incidents
//! appear in its geo queries, geofences made on one node fire on the other, and a volunteer's
//! moves on either node leave both indexes agreeing on where the volunteer is. Alert
//! subscriptions made or ended, and the locations their devices report, on one node reach
//! the other node's alert targeting index the same way (issue 7).
//!
//! Needs `NEXUS_TEST_DATABASE_URL` and `NEXUS_TEST_KAFKA_BROKERS`
//! (`eval "$(scripts/services.sh env)"`); without them the test is skipped, or fails when
//! `NEXUS_TEST_REQUIRE_ENGINES=1`. Topics get a prefix of their own, so parallel tests and
//! earlier runs on the same broker never meet.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use nexus_auth::Role;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn brokers() -> Option<String> {
    match std::env::var("NEXUS_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var("NEXUS_TEST_REQUIRE_ENGINES").as_deref() == Ok("1") => {
            panic!("NEXUS_TEST_KAFKA_BROKERS is not set (NEXUS_TEST_REQUIRE_ENGINES=1)")
        }
        _ => {
            eprintln!("SKIPPED crisis cluster test: NEXUS_TEST_KAFKA_BROKERS is not set");
            None
        }
    }
}

fn ids(fc: &Value) -> Vec<String> {
    fc["features"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `get` until `done` holds for its JSON; panics with `what` and the node's event-bus
/// log lines after 30 s.
async fn eventually(
    what: &str,
    node: &Server,
    mut get: impl AsyncFnMut() -> Value,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get().await;
        if done(&v) {
            return;
        }
        if Instant::now() > deadline {
            let all = node.logs();
            let log: Vec<&str> = all
                .lines()
                .filter(|l| l.contains("consumer") || l.contains("kafka") || l.contains("WARN"))
                .collect();
            panic!("{what}: last answer {v}\nnode log:\n{}", log.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `node`'s map shows `volunteer` near longitude `lon`.
async fn volunteer_at(node: &str, s: &Server, who: &str, volunteer: &str, lon: f64) {
    let path = format!(
        "/api/v1/crisis/map?bbox={},0.04,{},0.06&zoom=18&kinds=responder",
        lon - 0.01,
        lon + 0.01
    );
    eventually(
        &format!("the volunteer at lon {lon} on node {node}"),
        s,
        async || s.req("GET", &path, Some(who), Value::Null).await.json,
        |fc| ids(fc).iter().any(|id| id == volunteer),
    )
    .await;
}

fn transitions(reply: &Value) -> Vec<(String, String)> {
    reply["geofence_events"]
        .as_array()
        .unwrap_or_else(|| panic!("no geofence_events in {reply}"))
        .iter()
        .map(|e| {
            (
                e["fence_id"].as_str().unwrap().to_string(),
                e["transition"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_reaches_the_other_nodes_geo_index_through_kafka() {
    let Some(brokers) = brokers() else { return };
    let Some(db) = nexus_store::testing::fresh_postgres_url().await else {
        return;
    };
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let env = [
        ("NEXUS_DATABASE_URL", db.as_str()),
        ("NEXUS_KAFKA_BROKERS", brokers.as_str()),
        ("NEXUS_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
    ];
    let a = Server::start(&env);
    let b = Server::start(&env);
    let coordinator = a.token("coord", &[Role::Coordinator], 600);
    let citizen = a.token("citizen", &[Role::Patient], 600);
    let medic = a.token("medic", &[Role::Responder], 600);

    // A geofence made on A.
    let zone = json!({"type": "Polygon", "coordinates": [[[30.0, 0.0], [30.1, 0.0], [30.1, 0.1], [30.0, 0.1], [30.0, 0.0]]]});
    let r = a
        .req(
            "POST",
            "/api/v1/geofences",
            Some(&coordinator),
            json!({"name": "Flood zone", "geometry": zone, "watch": ["responder"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let fence = r.json["id"].as_str().unwrap().to_string();

    // An incident reported on A shows up in B's geo queries.
    let r = a
        .req(
            "POST",
            "/api/v1/crisis/incidents",
            Some(&citizen),
            json!({"type": "flood", "severity": 4, "lat": 0.05, "lon": 30.05}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let incident = r.json["id"].as_str().unwrap().to_string();
    eventually(
        "the incident reported on A in B's bbox query",
        &b,
        async || {
            b.req(
                "GET",
                "/api/v1/crisis/incidents?bbox=29.9,-0.1,30.2,0.2",
                Some(&citizen),
                Value::Null,
            )
            .await
            .json
        },
        |fc| ids(fc).contains(&incident),
    )
    .await;

    // It is resolved on B; A's status-filtered query follows.
    let r = b
        .req(
            "PATCH",
            &format!("/api/v1/crisis/incidents/{incident}"),
            Some(&coordinator),
            json!({"status": "resolved"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    eventually(
        "the resolution on B in A's index",
        &a,
        async || {
            a.req(
                "GET",
                "/api/v1/crisis/incidents?bbox=29.9,-0.1,30.2,0.2&status=resolved",
                Some(&citizen),
                Value::Null,
            )
            .await
            .json
        },
        |fc| ids(fc).contains(&incident),
    )
    .await;

    // A volunteer registered on A, west of the zone; B learns of them.
    let r = a
        .req(
            "POST",
            "/api/v1/crisis/volunteers",
            Some(&medic),
            json!({"lat": 0.05, "lon": 29.95}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let volunteer = r.json["id"].as_str().unwrap().to_string();
    volunteer_at("B", &b, &coordinator, &volunteer, 29.95).await;

    // Walking into the zone through B: B knows both the fence made on A and the volunteer.
    let path = format!("/api/v1/crisis/volunteers/{volunteer}/location");
    let r = b
        .req(
            "PUT",
            &path,
            Some(&medic),
            json!({"lat": 0.05, "lon": 30.05}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(transitions(&r.json), [(fence.clone(), "enter".to_string())]);
    volunteer_at("A", &a, &coordinator, &volunteer, 30.05).await;

    // Walking out through A: A applied B's move, so it sees an exit, not a walk outside.
    let r = a
        .req(
            "PUT",
            &path,
            Some(&medic),
            json!({"lat": 0.05, "lon": 30.2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(transitions(&r.json), [(fence.clone(), "exit".to_string())]);
    volunteer_at("B", &b, &coordinator, &volunteer, 30.2).await;

    // The fence deleted on B stops firing on A.
    let r = b
        .req(
            "DELETE",
            &format!("/api/v1/geofences/{fence}"),
            Some(&coordinator),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Out and back in: once A has dropped the fence, neither move reports anything.
        let back_in = a
            .req(
                "PUT",
                &path,
                Some(&medic),
                json!({"lat": 0.05, "lon": 30.05}),
            )
            .await;
        let out = a
            .req(
                "PUT",
                &path,
                Some(&medic),
                json!({"lat": 0.05, "lon": 30.2}),
            )
            .await;
        if transitions(&back_in.json).is_empty() && transitions(&out.json).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fence deleted on B still fires on A: {} / {}",
            back_in.json,
            out.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Positions never travel in events: nothing in either log names the coordinates.
    for (node, s) in [("A", &a), ("B", &b)] {
        assert!(
            !s.logs().contains("30.05"),
            "node {node} logged a volunteer's position"
        );
    }
}

/// A flood polygon around (51.5, -0.1) for the alert targeting test.
const FLOOD_POLYGON: &str = "51.4,-0.2 51.4,0.0 51.6,0.0 51.6,-0.2 51.4,-0.2";

fn flood_cap() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>CLUSTER-FLOOD-1</identifier>
  <sender>authority@example.org</sender>
  <sent>2024-06-12T14:57:00-07:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Met</category>
    <event>Flood</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <headline>Flood warning</headline>
    <area>
      <areaDesc>Riverside</areaDesc>
      <polygon>{FLOOD_POLYGON}</polygon>
    </area>
  </info>
</alert>"#
    )
}

/// Subscribers one node's targeting index finds inside the flood polygon (the preview runs
/// on the node asked, through its own index).
async fn previewed_subscribers(s: &Server, token: &str) -> Value {
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts/preview",
            &[
                ("authorization".into(), format!("Bearer {token}")),
                ("content-type".into(), "application/cap+xml".into()),
            ],
            Some(flood_cap().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["subscribers"].clone()
}

/// Alert subscriptions made (and ended) on one node reach the other node's targeting index
/// through `alert.subscription.*` on Kafka, so whichever node's alerting consumer handles an
/// alert finds every subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_subscriptions_on_one_node_reach_the_other_nodes_targeting_index() {
    let Some(brokers) = brokers() else { return };
    let Some(db) = nexus_store::testing::fresh_postgres_url().await else {
        return;
    };
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let env = [
        ("NEXUS_DATABASE_URL", db.as_str()),
        ("NEXUS_KAFKA_BROKERS", brokers.as_str()),
        ("NEXUS_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
    ];
    let a = Server::start(&env);
    let b = Server::start(&env);
    let authority = a.token("authority", &[Role::AlertAuthority], 600);
    let mut made = Vec::new();
    for (node, name, lat, lon) in [
        (&a, "ann", 51.5, -0.1),
        (&a, "bob", 51.45, -0.05),
        (&b, "cat", 51.55, -0.15),
        (&a, "far", 48.85, 2.35),
    ] {
        let token = node.token(&format!("user-{name}"), &[Role::Patient], 600);
        let r = node
            .req(
                "POST",
                "/api/v1/alerts/subscriptions",
                Some(&token),
                json!({"location": {"lat": lat, "lon": lon}, "email": format!("{name}@example.org")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        made.push(r.json["id"].as_str().unwrap().to_string());
    }
    // Three inside, on both nodes' indexes: A's own two and B's one, B's one and A's two.
    for (name, node) in [("A", &a), ("B", &b)] {
        eventually(
            &format!("node {name} targets the three subscribers inside"),
            node,
            async || previewed_subscribers(node, &authority).await,
            |n| n == &json!(3),
        )
        .await;
    }
    // Bob ends his subscription on A: B's index forgets him too.
    let r = a
        .req(
            "DELETE",
            &format!("/api/v1/alerts/subscriptions/{}", made[1]),
            None,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    for (name, node) in [("A", &a), ("B", &b)] {
        eventually(
            &format!("node {name} no longer targets the ended subscription"),
            node,
            async || previewed_subscribers(node, &authority).await,
            |n| n == &json!(2),
        )
        .await;
    }
    // Far's phone reports (on A) that it is inside the flood area: both nodes target it
    // by its last known location (`alert.subscription.located`, ids only); it moves out
    // again: neither does.
    let far = a.token("user-far", &[Role::Patient], 600);
    for (at, expected) in [((51.5, -0.1), 3), ((48.85, 2.35), 2)] {
        let r = a
            .req(
                "PUT",
                &format!("/api/v1/alerts/subscriptions/{}/location", made[3]),
                Some(&far),
                json!({"lat": at.0, "lon": at.1}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.json);
        for (name, node) in [("A", &a), ("B", &b)] {
            eventually(
                &format!("node {name} targets {expected} after far's device reported {at:?}"),
                node,
                async || previewed_subscribers(node, &authority).await,
                |n| n == &json!(expected),
            )
            .await;
        }
    }
}
