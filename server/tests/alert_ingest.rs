//! External CAP feeds in the real binary: a national hub (a local HTTP server serving an
//! ATOM feed and its CAP documents, allowed through the outbound guard by configuration)
//! drives local delivery. An allowlisted sender's CAP 1.1 alert, which names its area only
//! by a SAME geocode, is converted to 1.2, resolved through the geocode table and reaches
//! the subscriber inside it — once, also after repeated (conditional) polls and a restart;
//! an Update listed above the alert it updates is issued after it.
//! A sender off the allowlist is stored but never broadcast. Without the allowance, the
//! guard refuses the hub on 127.0.0.1, by IP literal and by name.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use nexus_auth::Role;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NATIONAL: &str = "hub@weather.example.gov";
const STRANGER: &str = "someone@elsewhere.example.org";

/// The hub: what it serves and what it was asked.
#[derive(Default)]
struct Hub {
    /// (entry id, CAP path, CAP XML)
    entries: Vec<(String, String, String)>,
    /// Bumped when the feed changes (the ETag).
    version: u32,
    feed_requests: u32,
    not_modified: u32,
    cap_fetches: BTreeMap<String, u32>,
}

type SharedHub = Arc<Mutex<Hub>>;

async fn start_hub() -> (u16, SharedHub) {
    let hub: SharedHub = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = hub.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            let hub = state.clone();
            async move {
                let mut h = hub.lock().unwrap();
                let path = uri.path().to_string();
                if path.ends_with(".atom") {
                    h.feed_requests += 1;
                    let etag = format!("\"v{}\"", h.version);
                    if headers
                        .get("if-none-match")
                        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
                    {
                        h.not_modified += 1;
                        return axum::http::Response::builder()
                            .status(304)
                            .header("etag", etag)
                            .body(axum::body::Body::empty())
                            .unwrap();
                    }
                    let mut xml = String::from(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n<id>urn:hub</id><title>Hub</title><updated>2026-11-26T08:00:00Z</updated>\n",
                    );
                    for (id, cap_path, _) in &h.entries {
                        xml.push_str(&format!(
                            "<entry><id>{id}</id><title>t</title><updated>2026-11-26T08:00:00Z</updated><link rel=\"alternate\" type=\"application/cap+xml\" href=\"{cap_path}\"/></entry>\n"
                        ));
                    }
                    xml.push_str("</feed>\n");
                    return axum::http::Response::builder()
                        .header("content-type", "application/atom+xml")
                        .header("etag", etag)
                        .body(axum::body::Body::from(xml))
                        .unwrap();
                }
                *h.cap_fetches.entry(path.clone()).or_default() += 1;
                match h.entries.iter().find(|e| e.1 == path) {
                    Some((_, _, cap)) => axum::http::Response::builder()
                        .header("content-type", "application/cap+xml")
                        .body(axum::body::Body::from(cap.clone()))
                        .unwrap(),
                    None => axum::http::Response::builder()
                        .status(404)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                }
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hub)
}

/// Adds an entry at the top of the feed (feeds list the newest first).
fn publish(hub: &SharedHub, id: &str, cap_path: &str, cap: String) {
    let mut h = hub.lock().unwrap();
    h.entries.insert(0, (id.into(), cap_path.into(), cap));
    h.version += 1;
}

/// An Update of `national_cap11(identifier)`, sent half an hour later.
fn national_update(identifier: &str) -> String {
    national_cap11(&format!("{identifier}-UPD"))
        .replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>")
        .replace("2026-11-26T08:00:00-00:00", "2026-11-26T08:30:00-00:00")
        .replace(
            "<scope>Public</scope>",
            &format!(
                "<scope>Public</scope>\n  <references>{NATIONAL},{identifier},2026-11-26T08:00:00-00:00</references>"
            ),
        )
}

/// A CAP 1.1 warning that names its area only by SAME code 020001 (in the geocode table)
/// and 020999 (not in it).
fn national_cap11(identifier: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.1">
  <identifier>{identifier}</identifier>
  <sender>{NATIONAL}</sender>
  <sent>2026-11-26T08:00:00-00:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Met</category>
    <event>Blizzard</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <expires>2099-01-01T00:00:00-00:00</expires>
    <headline>Blizzard warning</headline>
    <area>
      <areaDesc>Plains county</areaDesc>
      <geocode><valueName>SAME</valueName><value>020001</value></geocode>
      <geocode><valueName>SAME</valueName><value>020999</value></geocode>
    </area>
  </info>
</alert>"#
    )
}

fn stranger_cap12() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>STRANGER-1</identifier>
  <sender>{STRANGER}</sender>
  <sent>2026-11-26T08:00:00-00:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Met</category>
    <event>Hoax</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <expires>2099-01-01T00:00:00-00:00</expires>
    <area>
      <areaDesc>Everywhere near</areaDesc>
      <polygon>39,-101 42,-101 42,-98 39,-98 39,-101</polygon>
    </area>
  </info>
</alert>"#
    )
}

/// SAME 020001: lat 40..41, lon -100..-99.
const GEOCODES: &str = r#"{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"valueName": "SAME", "value": "020001"},
   "geometry": {"type": "Polygon", "coordinates": [[[-100, 40], [-99, 40], [-99, 41], [-100, 41], [-100, 40]]]}}]}"#;

async fn eventually(what: &str, wait: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + wait;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alerts_from(s: &Server, token: &str, sender: &str) -> Vec<Value> {
    let r = s
        .req(
            "GET",
            &format!("/api/v1/alerts?sender={sender}"),
            Some(token),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["items"].as_array().unwrap().clone()
}

/// Deliveries of alert `id` on `channel`, in any state.
async fn queued(s: &Server, token: &str, id: &str, channel: &str) -> i64 {
    let d = s
        .req(
            "GET",
            &format!("/api/v1/alerts/{id}/deliveries"),
            Some(token),
            Value::Null,
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.json);
    d.json["counts"][channel]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_i64).sum())
        .unwrap_or(0)
}

async fn ingest_records(s: &Server) -> Vec<nexus_store::IngestRecord> {
    let url = format!("sqlite://{}/nexus.db", s.dir.path().display());
    let store = nexus_store::Store::connect(&url).await.unwrap();
    let recs = store.ingest_records(100).await.unwrap();
    store.close().await;
    recs
}

fn hub_env<'a>(feed: &'a str, geocodes: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
        ("NEXUS_CAP_FEEDS", feed),
        ("NEXUS_CAP_FEED_INTERVAL", "1s"),
        ("NEXUS_CAP_FEED_SENDERS", NATIONAL),
        ("NEXUS_CAP_GEOCODES", geocodes),
        ("NEXUS_OUTBOUND_ALLOW", "127.0.0.0/8"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_national_feed_drives_local_delivery_once_and_only_for_allowlisted_senders() {
    let (port, hub) = start_hub().await;
    let tables = tempfile::tempdir().unwrap();
    let geocodes = tables.path().join("geocodes.json");
    std::fs::write(&geocodes, GEOCODES).unwrap();
    let feed = format!("http://127.0.0.1:{port}/feed.atom");
    let geocodes = geocodes.display().to_string();
    let env = hub_env(&feed, &geocodes);
    let mut s = Server::start(&env);
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);

    // One person inside SAME 020001, one outside it (but inside the stranger's polygon).
    for (name, lat, lon) in [("inside", 40.5, -99.5), ("outside", 41.5, -99.5)] {
        let token = s.token(&format!("user-{name}"), &[Role::Patient], 600);
        let r = s
            .req(
                "POST",
                "/api/v1/alerts/subscriptions",
                Some(&token),
                json!({"location": {"lat": lat, "lon": lon}, "phone": if name == "inside" { "+15550000001" } else { "+15550000002" }}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }

    publish(
        &hub,
        "urn:hub:nat-1",
        "/cap/nat-1.xml",
        national_cap11("NAT-1"),
    );
    publish(
        &hub,
        "urn:hub:stranger-1",
        "/cap/stranger-1.xml",
        stranger_cap12(),
    );

    let mut national = Vec::new();
    eventually("the national alert", Duration::from_secs(30), async || {
        national = alerts_from(&s, &authority, NATIONAL).await;
        !national.is_empty()
    })
    .await;
    let id = national[0]["id"].as_str().unwrap().to_string();
    assert_eq!(national[0]["identifier"], "NAT-1");
    // Converted to CAP 1.2 on the way in.
    let xml = s
        .raw(
            "GET",
            &format!("/api/v1/alerts/{id}"),
            &[("accept".into(), "application/cap+xml".into())],
            None,
        )
        .await;
    assert!(
        String::from_utf8_lossy(&xml.body).contains("urn:oasis:names:tc:emergency:cap:1.2"),
        "{:?}",
        xml.body
    );
    // Targeted through the geocode table by the alerting consumer: only the person inside
    // SAME 020001.
    eventually(
        "the consumer queues the SMS",
        Duration::from_secs(30),
        async || queued(&s, &authority, &id, "sms").await >= 1,
    )
    .await;
    assert_eq!(queued(&s, &authority, &id, "sms").await, 1);

    // Repeated polls: conditional, and nothing new.
    let polls = hub.lock().unwrap().feed_requests;
    eventually("three more polls", Duration::from_secs(30), async || {
        let h = hub.lock().unwrap();
        h.feed_requests >= polls + 3 && h.not_modified >= 2
    })
    .await;
    assert_eq!(alerts_from(&s, &authority, NATIONAL).await.len(), 1);
    assert!(alerts_from(&s, &authority, STRANGER).await.is_empty());
    assert_eq!(
        queued(&s, &authority, &id, "sms").await,
        1,
        "re-polls queue nothing again"
    );
    {
        let h = hub.lock().unwrap();
        assert_eq!(h.cap_fetches.get("/cap/nat-1.xml"), Some(&1));
        assert_eq!(h.cap_fetches.get("/cap/stranger-1.xml"), Some(&1));
    }
    let recs = ingest_records(&s).await;
    let by_sender = |sender: &str| {
        recs.iter()
            .find(|r| r.sender.as_deref() == Some(sender))
            .unwrap_or_else(|| panic!("no ingest record for {sender}: {recs:?}"))
            .clone()
    };
    let nat = by_sender(NATIONAL);
    assert_eq!(nat.outcome, nexus_store::IngestOutcome::Issued);
    assert_eq!(nat.alert_id.as_deref(), Some(id.as_str()));
    assert!(
        nat.detail
            .as_deref()
            .is_some_and(|d| d.contains("SAME=020999")),
        "the unknown geocode is reported: {nat:?}"
    );
    let stranger = by_sender(STRANGER);
    assert_eq!(stranger.outcome, nexus_store::IngestOutcome::Ignored);
    assert!(stranger.cap_xml.is_some() && stranger.alert_id.is_none());

    // A restart (SIGKILL), and meanwhile the feed changed: a new alert and, above it, its
    // Update. The old entries are not fetched or issued again; the new alert is issued
    // before its Update (oldest `sent` first), which supersedes it.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    publish(
        &hub,
        "urn:hub:nat-2",
        "/cap/nat-2.xml",
        national_cap11("NAT-2"),
    );
    publish(
        &hub,
        "urn:hub:nat-2-upd",
        "/cap/nat-2-upd.xml",
        national_update("NAT-2"),
    );
    let s = Server::start_in(dir, &env);
    eventually(
        "the new national alert and its update",
        Duration::from_secs(30),
        async || alerts_from(&s, &authority, NATIONAL).await.len() == 3,
    )
    .await;
    let polls = hub.lock().unwrap().feed_requests;
    eventually("two more polls", Duration::from_secs(30), async || {
        hub.lock().unwrap().feed_requests >= polls + 2
    })
    .await;
    let national = alerts_from(&s, &authority, NATIONAL).await;
    let status: BTreeMap<&str, &str> = national
        .iter()
        .map(|a| {
            (
                a["identifier"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        status,
        BTreeMap::from([
            ("NAT-1", "active"),
            ("NAT-2", "superseded"),
            ("NAT-2-UPD", "active")
        ]),
        "{national:?}"
    );
    assert!(alerts_from(&s, &authority, STRANGER).await.is_empty());
    let h = hub.lock().unwrap();
    assert_eq!(h.cap_fetches.get("/cap/nat-1.xml"), Some(&1));
    assert_eq!(h.cap_fetches.get("/cap/stranger-1.xml"), Some(&1));
    assert_eq!(h.cap_fetches.get("/cap/nat-2.xml"), Some(&1));
    assert_eq!(h.cap_fetches.get("/cap/nat-2-upd.xml"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_guard_refuses_loopback_hubs_unless_allowed() {
    let (port, hub) = start_hub().await;
    publish(
        &hub,
        "urn:hub:nat-1",
        "/cap/nat-1.xml",
        national_cap11("NAT-1"),
    );
    let feeds = format!("http://127.0.0.1:{port}/feed.atom,http://localhost:{port}/other.atom");
    let s = Server::start(&[
        ("NEXUS_CAP_FEEDS", feeds.as_str()),
        ("NEXUS_CAP_FEED_INTERVAL", "1s"),
        ("NEXUS_CAP_FEED_SENDERS", NATIONAL),
    ]);
    eventually("both refusals", Duration::from_secs(30), async || {
        let log = s.logs();
        log.contains("refused by the outbound guard: 127.0.0.1 is a private")
            && log.contains("localhost resolves to")
    })
    .await;
    assert_eq!(hub.lock().unwrap().feed_requests, 0);
    assert!(hub.lock().unwrap().cap_fetches.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_naming_an_unknown_geocode_says_so_when_issued() {
    let tables = tempfile::tempdir().unwrap();
    let geocodes = tables.path().join("geocodes.json");
    std::fs::write(&geocodes, GEOCODES).unwrap();
    let geocodes = geocodes.display().to_string();
    let s = Server::start(&[("NEXUS_CAP_GEOCODES", geocodes.as_str())]);
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);
    let token = s.token("user-inside", &[Role::Patient], 600);
    let r = s
        .req(
            "POST",
            "/api/v1/alerts/subscriptions",
            Some(&token),
            json!({"location": {"lat": 40.2, "lon": -99.8}, "email": "inside@example.org"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let cap = national_cap11("NAT-LOCAL").replace(
        "urn:oasis:names:tc:emergency:cap:1.1",
        "urn:oasis:names:tc:emergency:cap:1.2",
    );
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts",
            &[
                ("authorization".into(), format!("Bearer {authority}")),
                ("content-type".into(), "application/cap+xml".into()),
            ],
            Some(cap.into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(
        r.json["unresolved_geocodes"],
        json!([{"valueName": "SAME", "value": "020999"}])
    );
    // The resolved code's polygon bounds the alert, and the consumer targets it.
    assert_eq!(r.json["bbox"], json!([-100.0, 40.0, -99.0, 41.0]));
    let id = r.json["id"].as_str().unwrap().to_string();
    eventually(
        "the consumer queues the e-mail",
        Duration::from_secs(30),
        async || queued(&s, &authority, &id, "email").await == 1,
    )
    .await;
}

#[test]
fn a_bad_geocode_table_stops_the_start_naming_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geocodes.json");
    std::fs::write(
        &path,
        r#"{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"value": "1"}, "geometry": null}]}"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::nexus_bin())
        .arg("serve")
        .env_clear()
        .env("NEXUS_DATA_DIR", dir.path())
        .env("NEXUS_HTTP_ADDR", "127.0.0.1:0")
        .env("NEXUS_SFU_UDP_ADDR", "127.0.0.1:0")
        .env("NEXUS_CAP_GEOCODES", &path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("geocode table feature 0") && err.contains("valueName"),
        "{err}"
    );
}
