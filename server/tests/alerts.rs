//! CAP alerting in the real binary: a flood warning issued over HTTP reaches the geo-filtered
//! WebSocket subscription covering it (and not the other), e-mail arrives at a real SMTP
//! server (aiosmtpd), SMS at a provider stand-in; Update supersedes, Cancel cancels, the
//! ATOM feed lists only active alerts; hostile and invalid CAP is a located 400; RBAC; and a
//! server killed (SIGKILL) in the middle of delivering resumes after a restart so that every
//! recipient ends with exactly one message per channel after deduplication by idempotency
//! key.
//!
//! aiosmtpd comes from the project venv (`scripts/install-aiosmtpd.sh`; `NEXUS_TEST_PYTHON`
//! from `scripts/services.sh env`). Without it the e-mail checks are skipped with a note, or
//! fail when `NEXUS_TEST_REQUIRE_ENGINES=1`.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use futures_util::{SinkExt, StreamExt};
use nexus_auth::Role;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---------------------------------------------------------------------------------------
// The SMTP server: aiosmtpd writing a Maildir.

struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    /// Starts aiosmtpd, or `None` (after a note) when it is not installed.
    fn start() -> Option<Smtp> {
        let required = nexus_store::testing::engines_required();
        let python = std::env::var("NEXUS_TEST_PYTHON").ok().filter(|p| {
            Command::new(p)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|s| s.success())
        });
        let Some(python) = python else {
            assert!(
                !required,
                "aiosmtpd missing: run scripts/install-aiosmtpd.sh and eval \"$(scripts/services.sh env)\""
            );
            eprintln!("note: aiosmtpd unavailable; skipping the e-mail half of this test");
            return None;
        };
        let port = free_port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Smtp {
            child,
            port,
            maildir,
        })
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every received message: (To, Message-ID, raw text).
    fn messages(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir: PathBuf = self.maildir.path().join("mail").join(sub);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let header = |name: &str| {
                    text.lines()
                        .find_map(|l| {
                            l.strip_prefix(name)
                                .and_then(|r| r.strip_prefix(':'))
                                .map(|v| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                out.push((header("To"), header("Message-ID"), text));
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------
// The SMS provider stand-in: Twilio's Messages API shape.

#[derive(Debug, Clone)]
struct Sms {
    to: String,
    body: String,
    key: String,
    auth: String,
    path: String,
}

#[derive(Clone, Default)]
struct Provider {
    received: Arc<Mutex<Vec<Sms>>>,
    /// Requests to answer 500 before accepting.
    fail_first: Arc<Mutex<usize>>,
    delay: Duration,
}

fn form_decode(body: &str) -> BTreeMap<String, String> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

impl Provider {
    async fn start(self) -> (String, Provider) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    {
                        let mut fail = me.fail_first.lock().unwrap();
                        if *fail > 0 {
                            *fail -= 1;
                            return (
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                "{}".to_string(),
                            );
                        }
                    }
                    let form = form_decode(&body);
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    me.received.lock().unwrap().push(Sms {
                        to: form.get("To").cloned().unwrap_or_default(),
                        body: form.get("Body").cloned().unwrap_or_default(),
                        key: h("i-twilio-idempotency-token"),
                        auth: h("authorization"),
                        path: uri.path().to_string(),
                    });
                    tokio::time::sleep(me.delay).await;
                    (
                        axum::http::StatusCode::CREATED,
                        json!({"sid": "SM1", "status": "queued"}).to_string(),
                    )
                }
            },
        );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}"), self)
    }

    fn received(&self) -> Vec<Sms> {
        self.received.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------
// Gateway helpers (as in tests/crisis.rs).

async fn wait_for(ws: &mut Ws, wait: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(msg) => msg.expect("socket open").expect("frame"),
        };
        let Message::Text(text) = msg else { continue };
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v.as_object().is_some_and(|o| o.is_empty()) {
                ws.send(Message::Text("{}".into())).await.unwrap();
                continue;
            }
            if pred(&v) {
                return Some(v);
            }
        }
    }
}

async fn command(ws: &mut Ws, cmd: Value) -> Value {
    let id = cmd["id"].clone();
    ws.send(Message::Text(cmd.to_string().into()))
        .await
        .unwrap();
    wait_for(ws, Duration::from_secs(10), |v| v["id"] == id)
        .await
        .expect("reply in time")
}

/// A member of the public watching `alerts` inside `bbox`.
async fn watch_alerts(s: &Server, sub: &str, bbox: [f64; 4]) -> Ws {
    let access = s.token(sub, &[Role::Patient], 600);
    let r = s
        .req("POST", "/api/v1/realtime/token", Some(&access), Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let url = s.base.replace("http://", "ws://") + "/connection/websocket";
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let reply = command(
        &mut ws,
        json!({"id": 1, "connect": {"token": r.json["token"]}}),
    )
    .await;
    assert!(reply.get("error").is_none(), "{reply}");
    // The token subscribes everyone to `alerts` unfiltered; narrow it to the box.
    command(
        &mut ws,
        json!({"id": 2, "unsubscribe": {"channel": "alerts"}}),
    )
    .await;
    let reply = command(
        &mut ws,
        json!({"id": 3, "subscribe": {"channel": "alerts", "data": {"bbox": bbox}}}),
    )
    .await;
    assert!(reply.get("error").is_none(), "{reply}");
    ws
}

// ---------------------------------------------------------------------------------------
// CAP documents

const SENDER: &str = "flood-authority@example.org";
/// Riverside: a box around 51.0–51.2 N, 1.2–1.0 W.
const POLYGON: &str = "51.0,-1.2 51.0,-1.0 51.2,-1.0 51.2,-1.2 51.0,-1.2";

fn cap(identifier: &str, sent: &str, msg_type: &str, references: Option<&str>) -> String {
    let references = references
        .map(|r| format!("<references>{r}</references>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{SENDER}</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
  {references}
  <info>
    <category>Met</category>
    <event>Flood</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <expires>2099-01-01T00:00:00-00:00</expires>
    <headline>Flood warning for Riverside</headline>
    <instruction>Move to higher ground now.</instruction>
    <area>
      <areaDesc>Riverside</areaDesc>
      <polygon>{POLYGON}</polygon>
    </area>
  </info>
</alert>"#
    )
}

async fn post_cap(s: &Server, token: &str, xml: &str) -> common::Resp {
    s.raw(
        "POST",
        "/api/v1/alerts",
        &[
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/cap+xml".into()),
        ],
        Some(xml.as_bytes().to_vec()),
    )
    .await
}

async fn subscribe_people(s: &Server, who: &[(&str, f64, f64)]) {
    for (name, lat, lon) in who {
        let token = s.token(&format!("user-{name}"), &[Role::Patient], 600);
        let phone: String = name.bytes().map(|b| b.to_string()).collect();
        let phone = format!("+{:0<12}", &phone[..phone.len().min(15)]);
        let r = s
            .req(
                "POST",
                "/api/v1/alerts/subscriptions",
                Some(&token),
                json!({"location": {"lat": lat, "lon": lon}, "email": format!("{name}@example.org"), "phone": phone}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
}

async fn feed(s: &Server) -> String {
    let r = s
        .req("GET", "/api/v1/alerts/feed.atom", None, Value::Null)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("application/atom+xml"));
    String::from_utf8(r.body.to_vec()).unwrap()
}

async fn eventually(what: &str, wait: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + wait;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn server_env<'a>(
    smtp: &'a Option<Smtp>,
    smtp_url: &'a str,
    sms_url: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
        ("NEXUS_SMS_URL", sms_url),
        ("NEXUS_SMS_ACCOUNT", "AC0123"),
        ("NEXUS_SMS_TOKEN", "sms-secret"),
        ("NEXUS_SMS_FROM", "+15550000000"),
    ];
    if smtp.is_some() {
        env.push(("NEXUS_SMTP_URL", smtp_url));
    }
    env
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// Must show: flood warning for a polygon → the subscriber whose box intersects receives it
/// over WebSocket and the other does not; e-mail and SMS arrive; Update supersedes; Cancel
/// cancels; the ATOM feed lists only active alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_warning_reaches_people_in_the_area_on_every_channel_then_update_and_cancel() {
    let smtp = Smtp::start();
    let smtp_url = smtp.as_ref().map(Smtp::url).unwrap_or_default();
    let (sms_url, provider) = Provider::default().start().await;
    let s = Server::start(&server_env(&smtp, &smtp_url, &sms_url));
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);

    subscribe_people(
        &s,
        &[
            ("ann", 51.1, -1.1),
            ("bob", 51.05, -1.15),
            ("cyd", 51.15, -1.05),
            ("far", 52.5, 0.5),
        ],
    )
    .await;
    let mut inside = watch_alerts(&s, "watcher-in", [-1.3, 50.9, -0.9, 51.3]).await;
    let mut outside = watch_alerts(&s, "watcher-out", [10.0, 40.0, 11.0, 41.0]).await;

    let sent1 = "2024-06-12T14:57:00-07:00";
    let r = post_cap(&s, &authority, &cap("FLOOD-1", sent1, "Alert", None)).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id1 = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"], format!("/api/v1/alerts/{id1}"));
    assert_eq!(r.json["status"], "active");
    assert_eq!(r.json["recipients"], json!({"email": 3, "sms": 3}));

    // WebSocket: inside yes, outside no.
    let got = wait_for(&mut inside, Duration::from_secs(10), |v| {
        v["push"]["channel"] == "alerts" && v["push"]["pub"]["data"]["id"] == id1.as_str()
    })
    .await
    .expect("the subscriber inside receives the alert");
    assert_eq!(
        got["push"]["pub"]["data"]["headline"],
        "Flood warning for Riverside"
    );
    assert_eq!(
        got["push"]["pub"]["data"]["geometry"]["type"],
        "MultiPolygon"
    );
    assert!(
        wait_for(
            &mut outside,
            Duration::from_secs(2),
            |v| v["push"]["channel"] == "alerts"
        )
        .await
        .is_none(),
        "the subscriber outside receives nothing"
    );

    // SMS at the provider: Twilio's path, basic auth, the idempotency key, the text.
    eventually("3 SMS", Duration::from_secs(20), || {
        provider.received().len() >= 3
    })
    .await;
    let sms = provider.received();
    assert_eq!(sms.len(), 3, "{sms:?}");
    for m in &sms {
        assert_eq!(m.path, "/2010-04-01/Accounts/AC0123/Messages.json");
        assert!(m.auth.starts_with("Basic "), "{m:?}");
        assert!(!m.key.is_empty());
        assert_eq!(
            m.body,
            "Flood warning for Riverside. Area: Riverside. Move to higher ground now."
        );
    }
    // E-mail at aiosmtpd, to the three inside, each with its key as Message-ID.
    if let Some(smtp) = &smtp {
        eventually("3 e-mails", Duration::from_secs(20), || {
            smtp.messages().len() >= 3
        })
        .await;
        let mails = smtp.messages();
        let to: BTreeSet<_> = mails.iter().map(|m| m.0.clone()).collect();
        assert_eq!(
            to,
            ["ann@example.org", "bob@example.org", "cyd@example.org"]
                .map(String::from)
                .into()
        );
        assert!(mails.iter().all(|m| m.1.ends_with("@nexus-alerts>")));
        assert!(mails[0].2.contains("Move to higher ground now."));
    }
    // The delivery report.
    let report = loop {
        let r = s
            .req(
                "GET",
                &format!("/api/v1/alerts/{id1}/deliveries"),
                Some(&authority),
                Value::Null,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        let done = r.json["counts"]["sms"]["delivered"] == 3
            && (smtp.is_none() || r.json["counts"]["email"]["delivered"] == 3);
        if done {
            break r.json;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        report["items"][0].get("address").is_none(),
        "no addresses in the report"
    );

    // Reads: by triple, both list paths, XML by Accept.
    let q = format!("/api/v1/alerts?identifier=FLOOD-1&sender={SENDER}");
    let r = s.req("GET", &q, None, Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["items"][0]["id"], id1.as_str());
    let r2 = s
        .req("GET", "/api/v1/crisis/alerts", None, Value::Null)
        .await;
    assert_eq!(r2.json["items"][0]["id"], id1.as_str());
    let xml = s
        .raw(
            "GET",
            &format!("/api/v1/alerts/{id1}"),
            &[("accept".into(), "application/cap+xml".into())],
            None,
        )
        .await;
    assert!(xml.content_type().starts_with("application/cap+xml"));
    assert!(String::from_utf8_lossy(&xml.body).contains("<identifier>FLOOD-1</identifier>"));
    let js = s
        .req("GET", &format!("/api/v1/alerts/{id1}"), None, Value::Null)
        .await;
    assert_eq!(js.json["msg_type"], "Alert");
    assert!(feed(&s).await.contains(&format!("/api/v1/alerts/{id1}")));

    // An Update supersedes it.
    let reference = format!("{SENDER},FLOOD-1,{sent1}");
    let sent2 = "2024-06-12T15:30:00-07:00";
    let r = post_cap(
        &s,
        &authority,
        &cap("FLOOD-2", sent2, "Update", Some(&reference)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id2 = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["supersedes"], json!([id1]));
    let old = s
        .req("GET", &format!("/api/v1/alerts/{id1}"), None, Value::Null)
        .await;
    assert_eq!(old.json["nexus"]["status"], "superseded");
    assert_eq!(old.json["nexus"]["superseded_by"], id2.as_str());
    let f = feed(&s).await;
    assert!(
        f.contains(&format!("/api/v1/alerts/{id2}")) && !f.contains(&id1),
        "{f}"
    );
    wait_for(&mut inside, Duration::from_secs(10), |v| {
        v["push"]["pub"]["data"]["id"] == id2.as_str()
            && v["push"]["pub"]["data"]["msg_type"] == "Update"
    })
    .await
    .expect("the update is published");

    // A Cancel cancels the update; the feed then shows the cancellation only.
    let reference = format!("{SENDER},FLOOD-2,{sent2}");
    let r = post_cap(
        &s,
        &authority,
        &cap(
            "FLOOD-3",
            "2024-06-12T16:00:00-07:00",
            "Cancel",
            Some(&reference),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id3 = r.json["id"].as_str().unwrap().to_string();
    let cancelled = s
        .req("GET", "/api/v1/alerts?status=cancelled", None, Value::Null)
        .await;
    assert_eq!(cancelled.json["items"][0]["id"], id2.as_str());
    let f = feed(&s).await;
    assert!(
        !f.contains(&id1) && !f.contains(&id2) && f.contains(&id3),
        "{f}"
    );
    let active = s
        .req("GET", "/api/v1/alerts?status=active", None, Value::Null)
        .await;
    let ids: Vec<_> = active.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(ids, [json!(id3)]);

    // Pagination.
    let page = s
        .req("GET", "/api/v1/alerts?limit=2", None, Value::Null)
        .await;
    assert_eq!(page.json["items"].as_array().unwrap().len(), 2);
    let cursor = page.json["next_cursor"].as_str().unwrap();
    let page2 = s
        .req(
            "GET",
            &format!("/api/v1/alerts?limit=2&cursor={cursor}"),
            None,
            Value::Null,
        )
        .await;
    assert_eq!(page2.json["items"][0]["id"], id1.as_str());
    assert!(page2.json["next_cursor"].is_null());

    // An Update of an alert the server never saw: 409.
    let r = post_cap(
        &s,
        &authority,
        &cap(
            "FLOOD-9",
            "2024-06-12T17:00:00-07:00",
            "Update",
            Some(&format!("{SENDER},NOPE,{sent1}")),
        ),
    )
    .await;
    r.assert_problem(409, "conflict");
    // The same triple twice: 409.
    let r = post_cap(&s, &authority, &cap("FLOOD-1", sent1, "Alert", None)).await;
    r.assert_problem(409, "conflict");
}

/// Hostile XML and broken CAP are located 400s; JSON works; RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_invalid_cap_is_refused_and_only_authorities_issue() {
    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
    ]);
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerting/cap/tests/data");

    for hostile in [
        "hostile_billion_laughs.xml",
        "hostile_xxe.xml",
        "hostile_deep.xml",
    ] {
        let xml = std::fs::read_to_string(data.join(hostile)).unwrap();
        let r = post_cap(&s, &authority, &xml).await;
        r.assert_problem(400, "validation");
        assert!(
            !r.json["errors"].as_array().unwrap().is_empty(),
            "{hostile}: {}",
            r.json
        );
    }
    let xml = std::fs::read_to_string(data.join("broken_rules.xml")).unwrap();
    let r = post_cap(&s, &authority, &xml).await;
    r.assert_problem(400, "validation");
    let errors = r.json["errors"].as_array().unwrap();
    assert!(errors.len() > 3, "{}", r.json);
    assert!(
        errors
            .iter()
            .any(|e| e["pointer"] == "/identifier"
                && e["detail"].as_str().unwrap().starts_with("3:3: ")),
        "{}",
        r.json
    );
    assert!(r.json["detail"].as_str().unwrap().starts_with("line "));

    // JSON form: a broken polygon is pointed at.
    let mut alert = json!({
        "identifier": "J-1", "sender": SENDER, "sent": "2024-06-12T14:57:00-07:00",
        "status": "Actual", "msg_type": "Alert", "scope": "Public",
        "info": [{"category": ["Met"], "event": "Flood", "urgency": "Immediate",
                  "severity": "Severe", "certainty": "Observed",
                  "area": [{"area_desc": "x", "polygon": ["51.0,-1.2 51.0,-1.0 51.2,-1.0 51.2,-1.3"]}]}]
    });
    let r = s
        .req("POST", "/api/v1/alerts", Some(&authority), alert.clone())
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(
        r.json["errors"][0]["pointer"], "/info/0/area/0/polygon/0",
        "{}",
        r.json
    );
    alert["info"][0]["area"][0]["polygon"] = json!([POLYGON]);
    let r = s
        .req("POST", "/api/v1/alerts", Some(&authority), alert.clone())
        .await;
    assert_eq!(r.status, 201, "{}", r.json);

    // Not JSON, not XML: 415.
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts",
            &[
                ("authorization".into(), format!("Bearer {authority}")),
                ("content-type".into(), "text/plain".into()),
            ],
            Some(b"hello".to_vec()),
        )
        .await;
    r.assert_problem(415, "unsupported-media-type");

    // RBAC: a patient or a responder cannot issue; nobody anonymous.
    for roles in [&[Role::Patient][..], &[Role::Responder, Role::Coordinator]] {
        let t = s.token("someone", roles, 600);
        let r = post_cap(
            &s,
            &t,
            &cap("R-1", "2024-06-12T14:57:00-07:00", "Alert", None),
        )
        .await;
        r.assert_problem(403, "forbidden");
        let r = s
            .req("GET", "/api/v1/alerts/x/deliveries", Some(&t), Value::Null)
            .await;
        r.assert_problem(403, "forbidden");
    }
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts",
            &[("content-type".into(), "application/cap+xml".into())],
            Some(cap("R-1", "2024-06-12T14:57:00-07:00", "Alert", None).into_bytes()),
        )
        .await;
    r.assert_problem(401, "unauthorized");
    let admin = s.token("admin-1", &[Role::Admin], 600);
    let r = post_cap(
        &s,
        &admin,
        &cap("R-1", "2024-06-12T14:57:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);

    // Bigger than the global 1 MiB body limit but within the CAP route's 4 MiB: not a 413.
    let mut big = cap("BIG-1", "2024-06-12T14:57:00-07:00", "Alert", None);
    let pad = format!("<note>{}</note>", "x".repeat(2 * 1024 * 1024));
    big = big.replace(
        "<scope>Public</scope>",
        &format!("<scope>Public</scope>\n  {pad}"),
    );
    let r = post_cap(&s, &authority, &big).await;
    assert_eq!(
        r.status,
        201,
        "{}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(400)])
    );
}

/// Must show: SIGKILL in the middle of delivering, restart on the same data dir, and every
/// recipient ends with exactly one message per channel after deduplication by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_resumes_and_every_recipient_gets_one_message() {
    const PEOPLE: usize = 60;
    let smtp = Smtp::start();
    let smtp_url = smtp.as_ref().map(Smtp::url).unwrap_or_default();
    // A slow provider, so the kill lands in the middle; its first answers are 500s, so
    // retries happen too.
    let provider = Provider {
        delay: Duration::from_millis(400),
        fail_first: Arc::new(Mutex::new(3)),
        ..Provider::default()
    };
    let (sms_url, provider) = provider.start().await;
    let mut s = Server::start(&server_env(&smtp, &smtp_url, &sms_url));
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);
    let names: Vec<String> = (0..PEOPLE).map(|i| format!("p{i:03}")).collect();
    let people: Vec<(&str, f64, f64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), 51.01 + 0.003 * i as f64, -1.1))
        .collect();
    subscribe_people(&s, &people).await;
    let r = post_cap(
        &s,
        &authority,
        &cap("CRASH-1", "2024-06-12T14:57:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["recipients"]["sms"], PEOPLE);

    eventually("some SMS", Duration::from_secs(30), || {
        provider.received().len() >= 10
    })
    .await;
    let before = provider.received().len();
    assert!(
        before < PEOPLE,
        "the kill must land mid-delivery ({before} sent)"
    );
    // SIGKILL (Drop kills the child) and restart on the same data dir.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let s = Server::start_in(dir, &server_env(&smtp, &smtp_url, &sms_url));

    let phones: BTreeSet<String> = {
        let done = || {
            let got: BTreeSet<_> = provider.received().into_iter().map(|m| m.to).collect();
            got.len() == PEOPLE
        };
        eventually("every SMS after the restart", Duration::from_secs(90), done).await;
        provider.received().into_iter().map(|m| m.to).collect()
    };
    assert_eq!(phones.len(), PEOPLE);
    // Exactly one message per recipient after deduplication by idempotency key.
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in provider.received() {
        keys.entry(m.to).or_default().insert(m.key);
    }
    assert!(
        keys.values().all(|k| k.len() == 1),
        "one key per recipient: {keys:?}"
    );
    let raw = provider.received().len();
    eprintln!(
        "SMS: {raw} requests for {PEOPLE} recipients ({} resent after the crash)",
        raw - PEOPLE
    );

    if let Some(smtp) = &smtp {
        eventually("every e-mail", Duration::from_secs(60), || {
            smtp.messages()
                .iter()
                .map(|m| m.0.clone())
                .collect::<BTreeSet<_>>()
                .len()
                == PEOPLE
        })
        .await;
        let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (to, message_id, _) in smtp.messages() {
            ids.entry(to).or_default().insert(message_id);
        }
        assert_eq!(ids.len(), PEOPLE);
        assert!(ids.values().all(|k| k.len() == 1), "{ids:?}");
    }
    // The store agrees: every delivery delivered, none twice.
    let r = loop {
        let r = s
            .req(
                "GET",
                &format!("/api/v1/alerts/{id}/deliveries?limit=1000"),
                Some(&authority),
                Value::Null,
            )
            .await;
        if r.json["counts"]["sms"]["delivered"] == PEOPLE {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        r.json["items"].as_array().unwrap().len(),
        PEOPLE * 2,
        "one row per recipient and channel"
    );
}
