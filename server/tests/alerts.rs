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

/// An aiosmtpd handler for many messages: one line per recipient (`To<TAB>Message-ID`)
/// appended to one file, instead of a Maildir file per message (whose creation, and
/// removal, dominates at 10 000 messages).
const SMTP_LEDGER: &str = r#"
import email.parser


class Ledger:
    def __init__(self, path):
        self.out = open(path, "a", buffering=1)
        self.parser = email.parser.BytesHeaderParser()

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        headers = self.parser.parsebytes(envelope.original_content or envelope.content)
        message_id = (headers.get("Message-ID") or "").strip()
        for rcpt in envelope.rcpt_tos:
            self.out.write(f"{rcpt}\t{message_id}\n")
        return "250 OK"
"#;

impl Smtp {
    /// Starts aiosmtpd writing a Maildir, or `None` (after a note) when it is not installed.
    fn start() -> Option<Smtp> {
        Smtp::start_with(false)
    }

    /// Starts aiosmtpd writing one line per message to a ledger file ([`SMTP_LEDGER`]), or
    /// `None` as [`Smtp::start`].
    fn start_ledger() -> Option<Smtp> {
        Smtp::start_with(true)
    }

    fn start_with(ledger: bool) -> Option<Smtp> {
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
        let mut cmd = Command::new(python);
        cmd.args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"));
        if ledger {
            std::fs::write(maildir.path().join("nexus_ledger.py"), SMTP_LEDGER).unwrap();
            cmd.env("PYTHONPATH", maildir.path())
                .args(["-c", "nexus_ledger.Ledger"])
                .arg(maildir.path().join("ledger.tsv"));
        } else {
            cmd.args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(maildir.path().join("mail"));
        }
        let child = cmd
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

    /// Every (recipient, Message-ID) of a ledger server ([`Smtp::start_ledger`]).
    fn ledger(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.maildir.path().join("ledger.tsv"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(to, id)| (to.to_string(), id.to_string()))
            .collect()
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

async fn wait_for(
    ws: &mut Ws,
    wait: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> Option<Value> {
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

/// A gateway connection made with the connection token that `access` gets from the API;
/// returns it with the connect reply.
async fn connect_gateway(s: &Server, access: &str) -> (Ws, Value) {
    let r = s
        .req("POST", "/api/v1/realtime/token", Some(access), Value::Null)
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
    (ws, reply)
}

/// A member of the public watching `alerts` inside `bbox`.
async fn watch_alerts(s: &Server, sub: &str, bbox: [f64; 4]) -> Ws {
    let access = s.token(sub, &[Role::Patient], 600);
    let (mut ws, _) = connect_gateway(s, &access).await;
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
    post_cap_to(s, "/api/v1/alerts", token, xml).await
}

async fn post_cap_to(s: &Server, path: &str, token: &str, xml: &str) -> common::Resp {
    s.raw(
        "POST",
        path,
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
/// cancels; the ATOM feed lists only active alerts. Alerting is a consumer of the event bus
/// (in-process here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_warning_reaches_people_in_the_area_on_every_channel_then_update_and_cancel() {
    flood_warning_flow(&[], "in-process").await;
}

/// The same flow with the event bus on Kafka (the tansu test broker): `alert.issued`,
/// `alert.updated` and `alert.cancelled` travel through Kafka to the alerting consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_warning_travels_through_kafka_to_the_alerting_consumer() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    flood_warning_flow(
        &[
            ("NEXUS_KAFKA_BROKERS", brokers.as_str()),
            ("NEXUS_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ],
        "kafka",
    )
    .await;
}

/// The shared test broker, or `None` (after a note) when the environment has none.
fn kafka_brokers() -> Option<String> {
    match std::env::var("NEXUS_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                !nexus_store::testing::engines_required(),
                "NEXUS_TEST_KAFKA_BROKERS is unset but NEXUS_TEST_REQUIRE_ENGINES=1"
            );
            eprintln!("note: NEXUS_TEST_KAFKA_BROKERS unset; skipping the Kafka flow");
            None
        }
    }
}

async fn flood_warning_flow(bus_env: &[(&str, &str)], bus: &str) {
    let smtp = Smtp::start();
    let smtp_url = smtp.as_ref().map(Smtp::url).unwrap_or_default();
    let (sms_url, provider) = Provider::default().start().await;
    let mut env = server_env(&smtp, &smtp_url, &sms_url);
    env.extend_from_slice(bus_env);
    let s = Server::start(&env);
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
    // The issuer previews the recipients first: nothing is stored or sent.
    let preview = post_cap_to(
        &s,
        "/api/v1/alerts/preview",
        &authority,
        &cap("FLOOD-1", sent1, "Alert", None),
    )
    .await;
    assert_eq!(preview.status, 200, "{}", preview.json);
    assert_eq!(
        preview.json,
        json!({"audience": "public", "channels": {"email": 3, "sms": 3, "push": 0, "websocket": 3},
               "subscribers": 3, "websocket": true, "approval_required": false,
               "unresolved_geocodes": []})
    );
    let nothing = s
        .req(
            "GET",
            "/api/v1/alerts?identifier=FLOOD-1",
            Some(&authority),
            Value::Null,
        )
        .await;
    assert_eq!(nothing.json["items"], json!([]), "a preview stores nothing");

    let r = post_cap(&s, &authority, &cap("FLOOD-1", sent1, "Alert", None)).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id1 = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"], format!("/api/v1/alerts/{id1}"));
    assert_eq!(r.json["status"], "active");

    // WebSocket: inside yes, outside no. (The first event over Kafka waits for the
    // consumer group to form.)
    let got = wait_for(&mut inside, Duration::from_secs(60), |v| {
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
    eventually("3 SMS", Duration::from_secs(60), || {
        provider.received().len() >= 3
    })
    .await;
    // The events went through the bus under test.
    assert!(
        s.logs().contains(&format!(r#""bus":"{bus}""#)),
        "{}",
        s.logs()
    );
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
    wait_for(&mut inside, Duration::from_secs(30), |v| {
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
    wait_for(&mut inside, Duration::from_secs(30), |v| {
        v["push"]["pub"]["data"]["id"] == id3.as_str()
            && v["push"]["pub"]["data"]["msg_type"] == "Cancel"
    })
    .await
    .expect("the cancellation is published");
    // Every message went to the three inside once per channel: one queue row per
    // (alert, recipient, channel), whatever the bus redelivered.
    for id in [&id1, &id2, &id3] {
        let rows = loop {
            let r = s
                .req(
                    "GET",
                    &format!("/api/v1/alerts/{id}/deliveries?limit=100"),
                    Some(&authority),
                    Value::Null,
                )
                .await;
            let rows = r.json["items"].as_array().unwrap().clone();
            if rows.len() >= 3 {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
        for row in &rows {
            *per.entry((
                row["recipient_id"].as_str().unwrap().to_string(),
                row["channel"].as_str().unwrap().to_string(),
            ))
            .or_default() += 1;
        }
        assert!(per.values().all(|n| *n == 1), "{per:?}");
        let people: BTreeSet<_> = per
            .keys()
            .filter(|k| k.1 != "websocket")
            .map(|k| k.0.clone())
            .collect();
        assert_eq!(people.len(), 3, "{per:?}");
        // And each one's personal WebSocket channel, once per user.
        let users: BTreeSet<_> = per
            .keys()
            .filter(|k| k.1 == "websocket")
            .map(|k| k.0.clone())
            .collect();
        assert_eq!(users.len(), 3, "{per:?}");
    }
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

    // The OpenAPI document lists the alerting endpoints.
    let doc = s
        .req("GET", "/api/v1/openapi.json", None, Value::Null)
        .await;
    for path in [
        "/api/v1/alerts/preview",
        "/api/v1/alerts/{id}/approve",
        "/api/v1/alerts/unsubscribe",
        "/api/v1/alerts/sms/inbound",
        "/api/v1/alerts/push/key",
    ] {
        assert!(
            doc.json["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }

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

/// Must show, at the issue's scale: a server killed (SIGKILL) in the middle of delivering
/// one alert to 10 000 recipients — each with e-mail (aiosmtpd), SMS (the provider
/// stand-in, whose first answers are 500s), Web Push (the push service stand-in; payloads
/// decrypted here) and their personal WebSocket channel — is restarted on the same data,
/// and every recipient ends with exactly one message per channel after deduplication by
/// the delivery's idempotency key, and one `delivered` row per recipient and channel.
///
/// The 10 000 subscriptions are seeded through the store API the server itself uses
/// (`Store::insert_subscriptions`, the bulk import) before it starts — 10 000 HTTP
/// subscriptions would only measure the subscription endpoint, which other tests cover —
/// and the server builds its targeting index from them at start. The per-channel rate
/// limits (`NEXUS_ALERTS_RATE_*`) make the kill land mid-delivery whatever the machine's
/// speed: at RATE messages per second a channel cannot finish 10 000 before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_resumes_and_every_recipient_gets_one_message() {
    const PEOPLE: usize = 10_000;
    /// Messages per second per channel.
    const RATE: &str = "500";
    /// SMS seen before the kill.
    const KILL_AFTER: usize = 1_000;
    let smtp = Smtp::start_ledger();
    let smtp_url = smtp.as_ref().map(Smtp::url).unwrap_or_default();
    // The provider's first answers are 500s, so retries happen too.
    let provider = Provider {
        fail_first: Arc::new(Mutex::new(3)),
        ..Provider::default()
    };
    let (sms_url, provider) = provider.start().await;
    let (origin, push) = PushService::default().start().await;
    // One key pair for every "browser": the receiving side stays cheap.
    let browser = webpush::Browser::new();

    let dir = tempfile::tempdir().unwrap();
    let people: Vec<nexus_store::SubscriptionRecord> = (0..PEOPLE)
        .map(|i| nexus_store::SubscriptionRecord {
            id: format!("sub-{i:05}"),
            user_id: Some(format!("user-{i:05}")),
            lat: 51.01 + 0.18 * (i as f64 / PEOPLE as f64),
            lon: -1.19 + 0.18 * ((i * 7919 % PEOPLE) as f64 / PEOPLE as f64),
            language: None,
            min_severity: None,
            email: Some(format!("p{i:05}@example.org")),
            phone: Some(format!("+1555{i:07}")),
            push: Some(
                browser
                    .subscription(&format!("{origin}/push/p{i:05}"))
                    .to_string(),
            ),
            created_at: 1,
            websocket: true,
            device: None,
        })
        .collect();
    {
        let store =
            nexus_store::Store::connect(&format!("sqlite://{}/nexus.db", dir.path().display()))
                .await
                .unwrap();
        store.migrate().await.unwrap();
        store.insert_subscriptions(&people).await.unwrap();
        store.close().await;
    }
    let mut env = server_env(&smtp, &smtp_url, &sms_url);
    env.extend([
        ("NEXUS_ALERTS_ALLOW_PRIVATE_PUSH", "true"),
        ("NEXUS_ALERTS_RATE_SMS", RATE),
        ("NEXUS_ALERTS_RATE_EMAIL", RATE),
        ("NEXUS_ALERTS_RATE_PUSH", RATE),
        ("NEXUS_ALERTS_RATE_WEBSOCKET", RATE),
    ]);
    let started = std::time::Instant::now();
    let s = Server::start_in(dir, &env);
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);
    let r = post_cap(
        &s,
        &authority,
        &cap("CRASH-1", "2024-06-12T14:57:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();

    eventually("the first SMS", Duration::from_secs(60), || {
        provider.received.lock().unwrap().len() >= KILL_AFTER
    })
    .await;
    // SIGKILL (Drop kills the child) and restart on the same data dir.
    let mut s = s;
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let before = (
        provider.received.lock().unwrap().len(),
        push.received.lock().unwrap().len(),
    );
    assert!(
        before.0 > 0 && before.0 < PEOPLE && before.1 < PEOPLE,
        "the kill must land mid-delivery: {before:?} (SMS, push) sent"
    );
    let s = Server::start_in(dir, &env);

    // Every recipient, on every channel: at least one message, one idempotency key.
    let distinct = |keys: &BTreeMap<String, BTreeSet<String>>, what: &str| {
        assert_eq!(keys.len(), PEOPLE, "{what}: every recipient");
        let twice: Vec<_> = keys.iter().filter(|(_, k)| k.len() != 1).collect();
        assert!(twice.is_empty(), "{what}: one key per recipient: {twice:?}");
    };
    eventually("every SMS", Duration::from_secs(120), || {
        let got: BTreeSet<String> = provider.received().into_iter().map(|m| m.to).collect();
        got.len() == PEOPLE
    })
    .await;
    let mut sms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in provider.received() {
        sms.entry(m.to).or_default().insert(m.key);
    }
    distinct(&sms, "SMS");

    eventually("every push", Duration::from_secs(120), || {
        let received = push.received.lock().unwrap();
        received.len() >= PEOPLE
            && received
                .iter()
                .map(|r| r.path.as_str())
                .collect::<BTreeSet<_>>()
                .len()
                == PEOPLE
    })
    .await;
    let requests = push.received.lock().unwrap().clone();
    let mut pushed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for req in &requests {
        let msg: Value = serde_json::from_slice(&browser.decrypt(&req.body)).unwrap();
        assert_eq!(msg["alert_id"], id.as_str());
        pushed
            .entry(req.path.clone())
            .or_default()
            .insert(msg["key"].as_str().unwrap().to_string());
    }
    distinct(&pushed, "Web Push");

    if let Some(smtp) = &smtp {
        eventually("every e-mail", Duration::from_secs(120), || {
            let got: BTreeSet<String> = smtp.ledger().into_iter().map(|m| m.0).collect();
            got.len() == PEOPLE
        })
        .await;
        let mut mails: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (to, message_id) in smtp.ledger() {
            mails.entry(to).or_default().insert(message_id);
        }
        distinct(&mails, "e-mail");
    }

    // The store agrees: one row per recipient and channel, every one delivered — the
    // personal WebSocket channel's too (one per user).
    let channels: &[&str] = if smtp.is_some() {
        &["email", "push", "sms", "websocket"]
    } else {
        &["push", "sms", "websocket"]
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let r = s
            .req(
                "GET",
                &format!("/api/v1/alerts/{id}/deliveries?limit=1"),
                Some(&authority),
                Value::Null,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        let done = channels
            .iter()
            .all(|c| r.json["counts"][c]["delivered"] == PEOPLE);
        if done {
            break r.json["counts"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries not all delivered: {}",
            r.json["counts"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let expected: Value = channels
        .iter()
        .map(|c| (c.to_string(), json!({"delivered": PEOPLE})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    assert_eq!(counts, expected, "nothing queued, failed or twice");
    // Row by row, read through the store API the endpoint pages with (straight from the
    // server's database: 40 000 rows are 40 pages over HTTP).
    let store =
        nexus_store::Store::connect(&format!("sqlite://{}/nexus.db", s.dir.path().display()))
            .await
            .unwrap();
    let mut rows = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .deliveries_page(&id, after.as_deref(), 10_000)
            .await
            .unwrap();
        for d in &page {
            assert_eq!(d.state, nexus_store::DeliveryState::Delivered, "{d:?}");
            assert!(
                rows.insert((d.recipient_id.clone(), d.channel.clone())),
                "two rows for {d:?}"
            );
        }
        match page.last() {
            Some(d) => after = Some(d.id.clone()),
            None => break,
        }
    }
    store.close().await;
    assert_eq!(rows.len(), PEOPLE * channels.len());
    eprintln!(
        "crash test: {PEOPLE} recipients × {} channels in {:.1} s; before the kill {} SMS and {} pushes were sent; \
         requests after deduplication: SMS {} (+{} resent), push {} (+{} resent)",
        channels.len(),
        started.elapsed().as_secs_f64(),
        before.0,
        before.1,
        PEOPLE,
        provider.received().len() - PEOPLE,
        PEOPLE,
        requests.len() - PEOPLE,
    );
}

// ---------------------------------------------------------------------------------------
// Last known device location, and the user's personal channel.

/// Subscribers the preview of `doc` counts.
async fn previewed(s: &Server, token: &str, doc: &str) -> Value {
    let r = post_cap_to(s, "/api/v1/alerts/preview", token, doc).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json
}

/// Must show: targeting selects subscribers whose registered location *or last known
/// device location* lies inside. Ann registered in London; her phone reports it is in
/// Riverside and she gets the flood warning there; it moves to Paris and the next one
/// passes her by; back in Riverside, the report targets her only until it is older than
/// `NEXUS_ALERTS_DEVICE_LOCATION_MAX_AGE`. Only her own token may report for her
/// subscription; bad coordinates are a 400 problem; the position reaches no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reporting_its_location_inside_the_area_gets_the_alert_until_it_moves_or_ages() {
    let (sms_url, provider) = Provider::default().start().await;
    let mut env = server_env(&None, "", &sms_url);
    env.push(("NEXUS_ALERTS_DEVICE_LOCATION_MAX_AGE", "2s"));
    let s = Server::start(&env);
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);
    // Bob lives in Riverside: the witness that each alert has been delivered.
    subscribe_people(&s, &[("bob", 51.1, -1.1)]).await;
    let ann = s.token("user-ann", &[Role::Patient], 600);
    let ann_phone = "+447700900123";
    let r = s
        .req(
            "POST",
            "/api/v1/alerts/subscriptions",
            Some(&ann),
            json!({"location": {"lat": 51.5, "lon": -0.12}, "phone": ann_phone}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let sub = r.json["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/alerts/subscriptions/{sub}/location");
    let doc = |n: u32| {
        cap(
            &format!("DEVICE-{n}"),
            &format!("2024-06-12T14:5{n}:00-07:00"),
            "Alert",
            None,
        )
    };
    assert_eq!(previewed(&s, &authority, &doc(0)).await["subscribers"], 1);

    // Bad reports: coordinates out of range or not numbers, someone else's token, no token.
    for bad in [
        json!({"lat": 91.0, "lon": -1.1}),
        json!({"lat": 51.1, "lon": -181.0}),
        json!({"lat": "51.1", "lon": -1.1}),
        json!({"lat": 51.1}),
        json!({"lat": 51.1, "lon": -1.1, "accuracy": 5}),
    ] {
        let r = s.req("PUT", &path, Some(&ann), bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.json);
        assert_eq!(r.content_type(), "application/problem+json", "{bad}");
    }
    let r = s
        .req("PUT", &path, Some(&ann), json!({"lat": 91.0, "lon": -1.1}))
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/lat", "{}", r.json);
    let mallory = s.token("user-mallory", &[Role::Patient], 600);
    let inside = json!({"lat": 51.123456, "lon": -1.098765});
    s.req("PUT", &path, Some(&mallory), inside.clone())
        .await
        .assert_problem(404, "not-found");
    s.req(
        "PUT",
        "/api/v1/alerts/subscriptions/no-such-thing/location",
        Some(&ann),
        inside.clone(),
    )
    .await
    .assert_problem(404, "not-found");
    let r = s.req("PUT", &path, None, inside.clone()).await;
    assert_eq!(r.status, 401, "{}", r.json);

    // Her phone is in Riverside: she is targeted, and the warning reaches her.
    let r = s.req("PUT", &path, Some(&ann), inside.clone()).await;
    assert_eq!(r.status, 204, "{}", r.json);
    assert_eq!(previewed(&s, &authority, &doc(1)).await["subscribers"], 2);
    let r = post_cap(&s, &authority, &doc(1)).await;
    assert_eq!(r.status, 201, "{}", r.json);
    eventually(
        "the warning on ann's phone",
        Duration::from_secs(30),
        || provider.received().iter().any(|m| m.to == ann_phone),
    )
    .await;

    // It moves to Paris (overwriting Riverside): the next warning passes her by.
    let r = s
        .req("PUT", &path, Some(&ann), json!({"lat": 48.85, "lon": 2.35}))
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    assert_eq!(previewed(&s, &authority, &doc(2)).await["subscribers"], 1);
    let r = post_cap(&s, &authority, &doc(2)).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id2 = r.json["id"].as_str().unwrap().to_string();
    let bob_phone = phone_of("bob");
    eventually("the second warning to bob", Duration::from_secs(30), || {
        provider
            .received()
            .iter()
            .filter(|m| m.to == bob_phone)
            .count()
            == 2
    })
    .await;
    let report = s
        .req(
            "GET",
            &format!("/api/v1/alerts/{id2}/deliveries"),
            Some(&authority),
            Value::Null,
        )
        .await;
    let recipients: BTreeSet<_> = report.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["recipient_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!recipients.contains(&sub), "{}", report.json);
    assert_eq!(
        provider
            .received()
            .iter()
            .filter(|m| m.to == ann_phone)
            .count(),
        1
    );

    // Back in Riverside, but the report ages past the limit: it targets no more.
    let r = s.req("PUT", &path, Some(&ann), inside.clone()).await;
    assert_eq!(r.status, 204, "{}", r.json);
    assert_eq!(previewed(&s, &authority, &doc(3)).await["subscribers"], 2);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(previewed(&s, &authority, &doc(3)).await["subscribers"], 1);

    // Positions are private: never in the logs.
    let logs = s.logs();
    assert!(
        !logs.contains("51.123456") && !logs.contains("1.098765"),
        "a device position leaked into the logs"
    );
}

/// Must show: WebSocket delivery reaches the user's personal channel (`user#<id>`) as well as
/// the `alerts` channel. Dan, signed in, subscribes twice inside the area (home and work)
/// and watches his personal channel with a real WebSocket client on his connection token:
/// each alert arrives there once, carrying the idempotency key of his `websocket` delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_subscriber_gets_each_alert_once_on_the_personal_channel() {
    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
    ]);
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);
    let dan = s.token("user-dan", &[Role::Patient], 600);
    for (lat, lon) in [(51.1, -1.1), (51.15, -1.05)] {
        let r = s
            .req(
                "POST",
                "/api/v1/alerts/subscriptions",
                Some(&dan),
                json!({"location": {"lat": lat, "lon": lon}, "channels": ["websocket"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        assert_eq!(r.json["channels"], json!(["websocket"]));
    }
    // A caller without a user has no personal channel: `websocket` needs a signed-in user
    // (an admin API key may subscribe, but not to that).
    let out = s.cli(
        &["apikey", "create", "--name", "kiosk", "--scope", "admin"],
        None,
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts/subscriptions",
            &[
                ("x-api-key".into(), key),
                ("content-type".into(), "application/json".into()),
            ],
            Some(
                json!({"location": {"lat": 51.1, "lon": -1.1}, "channels": ["websocket"]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/channels/0", "{}", r.json);

    // Dan's app: his connection token subscribes him to `user#user-dan` on the server side.
    let (mut ws, reply) = connect_gateway(&s, &dan).await;
    assert!(
        reply["connect"]["subs"].get("user#user-dan").is_some(),
        "{reply}"
    );

    // The preview counts both subscriptions, and one personal delivery for their user.
    let preview = previewed(
        &s,
        &authority,
        &cap("PERSONAL-P", "2024-06-12T14:00:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(preview["subscribers"], 2, "{preview}");
    assert_eq!(preview["channels"]["websocket"], 1, "{preview}");

    let personal = |id: &str| {
        let id = id.to_string();
        move |v: &Value| {
            v["push"]["channel"] == "user#user-dan"
                && v["push"]["pub"]["data"]["alert_id"] == id.as_str()
        }
    };
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for n in 0..2 {
        let r = post_cap(
            &s,
            &authority,
            &cap(
                &format!("PERSONAL-{n}"),
                &format!("2024-06-12T14:5{n}:00-07:00"),
                "Alert",
                None,
            ),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.json);
        let id = r.json["id"].as_str().unwrap().to_string();
        // Everything the socket receives until this alert's personal message: a second
        // copy of an earlier alert would be among it (one lane publishes in queue order).
        let mut seen = Vec::new();
        let got = wait_for(&mut ws, Duration::from_secs(30), |v| {
            if v["push"]["channel"] == "user#user-dan" {
                seen.push(v["push"]["pub"]["data"]["alert_id"].clone());
            }
            personal(&id)(v)
        })
        .await
        .expect("the alert on dan's personal channel");
        let data = &got["push"]["pub"]["data"];
        assert_eq!(data["type"], "alert");
        assert_eq!(data["headline"], "Flood warning for Riverside");
        assert_eq!(
            seen,
            vec![json!(id)],
            "each alert once on the personal channel, nothing else"
        );
        keys.push(data["key"].as_str().unwrap().to_string());
        ids.push(id);
    }
    // The key is the personal delivery's id: one `websocket` row per alert for dan.
    for (id, key) in ids.iter().zip(&keys) {
        let report = s
            .req(
                "GET",
                &format!("/api/v1/alerts/{id}/deliveries"),
                Some(&authority),
                Value::Null,
            )
            .await;
        let items = report.json["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{}", report.json);
        assert_eq!(items[0]["id"], key.as_str());
        assert_eq!(items[0]["channel"], "websocket");
        assert_eq!(items[0]["recipient_id"], "user#user-dan");
    }
    assert_ne!(keys[0], keys[1]);
}

// ---------------------------------------------------------------------------------------
// Unsubscribing: the link in every e-mail, and an SMS reply STOP.

/// Twilio's webhook signature (base64 HMAC-SHA1 of the URL and the sorted form fields),
/// computed here with OpenSSL.
fn twilio_signature(token: &str, url: &str, form: &[(&str, &str)]) -> String {
    use base64::Engine;
    let mut fields = form.to_vec();
    fields.sort();
    let mut data = url.to_string();
    for (k, v) in fields {
        data.push_str(k);
        data.push_str(v);
    }
    let key = openssl::pkey::PKey::hmac(token.as_bytes()).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &key).unwrap();
    signer.update(data.as_bytes()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(signer.sign_to_vec().unwrap())
}

fn form_encode(form: &[(&str, &str)]) -> String {
    fn esc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    form.iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes a quoted-printable body (RFC 2045 §6.7): soft line breaks and `=XX`.
fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The phone number `subscribe_people` gives `name`.
fn phone_of(name: &str) -> String {
    let phone: String = name.bytes().map(|b| b.to_string()).collect();
    format!("+{:0<12}", &phone[..phone.len().min(15)])
}

/// Must show: the unsubscribe link in an e-mail and an SMS reply STOP end the subscription;
/// the next alert reaches only who is left. Push endpoints on loopback or private
/// addresses are refused when not allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_link_and_an_sms_stop_end_subscriptions() {
    let smtp = Smtp::start();
    let smtp_url = smtp.as_ref().map(Smtp::url).unwrap_or_default();
    let (sms_url, provider) = Provider::default().start().await;
    let s = Server::start(&server_env(&smtp, &smtp_url, &sms_url));
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);

    // Push endpoints pointing inside are refused (this server does not allow them).
    let someone = s.token("user-eve", &[Role::Patient], 600);
    for endpoint in [
        "http://127.0.0.1:9/push",
        "https://127.0.0.1/push",
        "https://10.0.0.7/push",
        "https://[::1]/push",
        "https://localhost/push",
    ] {
        let r = s
            .req(
                "POST",
                "/api/v1/alerts/subscriptions",
                Some(&someone),
                json!({"location": {"lat": 51.1, "lon": -1.1}, "push": {"endpoint": endpoint,
                       "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                                "auth": "tBHItJI5svbpez7KI4CCXg"}}}),
            )
            .await;
        r.assert_problem(400, "validation");
        assert_eq!(
            r.json["errors"][0]["pointer"], "/push",
            "{endpoint}: {}",
            r.json
        );
    }

    subscribe_people(
        &s,
        &[
            ("ann", 51.1, -1.1),
            ("bob", 51.05, -1.15),
            ("cyd", 51.15, -1.05),
        ],
    )
    .await;
    let r = post_cap(
        &s,
        &authority,
        &cap("UNSUB-1", "2024-06-12T14:57:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    eventually("3 SMS", Duration::from_secs(30), || {
        provider.received().len() >= 3
    })
    .await;

    // Ann follows the link in her e-mail.
    if let Some(smtp) = &smtp {
        eventually("3 e-mails", Duration::from_secs(30), || {
            smtp.messages().len() >= 3
        })
        .await;
        let mails = smtp.messages();
        let (_, _, raw) = mails
            .iter()
            .find(|m| m.0 == "ann@example.org")
            .expect("ann's e-mail");
        let (head, body) = raw.split_once("\n\n").unwrap();
        let head = head.replace("\n ", " ").replace("\n\t", " ");
        assert!(
            head.lines().any(|l| l.starts_with("List-Unsubscribe: <")
                && l.contains("/api/v1/alerts/unsubscribe?token=")),
            "{head}"
        );
        let text = if head.contains("quoted-printable") {
            quoted_printable(body)
        } else {
            body.to_string()
        };
        let url = text
            .lines()
            .find_map(|l| l.strip_prefix("To stop receiving these alerts: "))
            .expect("an unsubscribe link in the body")
            .trim()
            .to_string();
        let path = url
            .strip_prefix(&s.base)
            .unwrap_or_else(|| panic!("{url} is not on {}", s.base))
            .to_string();
        let tampered = format!("{}x", &path[..path.len() - 1]);
        s.req("GET", &tampered, None, Value::Null)
            .await
            .assert_problem(400, "validation");
        let page = s.req("GET", &path, None, Value::Null).await;
        assert_eq!(page.status, 200);
        assert!(page.content_type().starts_with("text/html"));
        assert!(String::from_utf8_lossy(&page.body).contains("You are unsubscribed"));
        let again = s.req("GET", &path, None, Value::Null).await;
        assert!(String::from_utf8_lossy(&again.body).contains("already ended"));
    } else {
        // Without an SMTP server, end ann's subscription by STOP as well.
        provider_stop(&s, &phone_of("ann")).await;
    }

    // Bob replies STOP (any case, with spaces); an unsigned webhook is refused.
    let url = format!("{}/api/v1/alerts/sms/inbound", s.base);
    let bob = phone_of("bob");
    let form = [
        ("From", bob.as_str()),
        ("To", "+15550000000"),
        ("Body", " Stop "),
    ];
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts/sms/inbound",
            &[(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            Some(form_encode(&form).into_bytes()),
        )
        .await;
    r.assert_problem(403, "forbidden");
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts/sms/inbound",
            &[
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                (
                    "x-twilio-signature".into(),
                    twilio_signature("sms-secret", &url, &form),
                ),
            ],
            Some(form_encode(&form).into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/xml"));
    assert!(String::from_utf8_lossy(&r.body).contains("<Message>"));

    // The next alert reaches cyd only.
    let r = post_cap(
        &s,
        &authority,
        &cap("UNSUB-2", "2024-06-12T15:57:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id2 = r.json["id"].as_str().unwrap().to_string();
    let report = loop {
        let r = s
            .req(
                "GET",
                &format!("/api/v1/alerts/{id2}/deliveries"),
                Some(&authority),
                Value::Null,
            )
            .await;
        if r.json["counts"]["sms"]["delivered"] == 1 {
            break r.json;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Subscriptions, that is: the personal channel's recipient is the user.
    let people: BTreeSet<_> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["channel"] != "websocket")
        .map(|d| d["recipient_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(people.len(), 1, "{report}");
    let cyd = phone_of("cyd");
    let second: Vec<_> = provider
        .received()
        .into_iter()
        .skip(3)
        .map(|m| m.to)
        .collect();
    assert_eq!(second, [cyd]);
    let logs = s.logs();
    for leak in [phone_of("bob").as_str(), "ann@example.org", "token="] {
        assert!(!logs.contains(leak), "{leak} leaked into the logs");
    }
}

/// Sends a signed STOP from `phone` to the inbound webhook.
async fn provider_stop(s: &Server, phone: &str) {
    let url = format!("{}/api/v1/alerts/sms/inbound", s.base);
    let form = [("From", phone), ("Body", "STOP")];
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts/sms/inbound",
            &[
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                (
                    "x-twilio-signature".into(),
                    twilio_signature("sms-secret", &url, &form),
                ),
            ],
            Some(form_encode(&form).into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------
// The approval step, and Test/Exercise/Draft alerts for the allowlist only.

fn exercise(identifier: &str, sent: &str) -> String {
    cap(identifier, sent, "Alert", None)
        .replace("<status>Actual</status>", "<status>Exercise</status>")
}

/// Must show: with the approval step on, an Actual alert from one authority is delivered
/// to nobody until a second, different authority approves it; an Exercise reaches only
/// the allowlisted subscriber, never the public channel or feed.
async fn approval_and_allowlist(s: Server, provider: Provider) {
    let issuer = s.token("authority-1", &[Role::AlertAuthority], 600);
    let second = s.token("authority-2", &[Role::AlertAuthority], 600);
    subscribe_people(&s, &[("ann", 51.1, -1.1), ("bob", 51.05, -1.15)]).await;
    let mut inside = watch_alerts(&s, "watcher-in", [-1.3, 50.9, -0.9, 51.3]).await;

    let doc = cap("GATE-1", "2024-06-12T14:57:00-07:00", "Alert", None);
    let preview = post_cap_to(&s, "/api/v1/alerts/preview", &issuer, &doc).await;
    assert_eq!(preview.json["approval_required"], true, "{}", preview.json);
    assert_eq!(preview.json["channels"]["sms"], 2);
    let r = post_cap(&s, &issuer, &doc).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["status"], "pending");
    let id = r.json["id"].as_str().unwrap().to_string();
    // Not public, not queued, not published.
    s.req("GET", &format!("/api/v1/alerts/{id}"), None, Value::Null)
        .await
        .assert_problem(404, "not-found");
    let public = s.req("GET", "/api/v1/alerts", None, Value::Null).await;
    assert_eq!(public.json["items"], json!([]));
    assert!(!feed(&s).await.contains(&id));
    let listed = s
        .req(
            "GET",
            "/api/v1/alerts?status=pending",
            Some(&issuer),
            Value::Null,
        )
        .await;
    assert_eq!(
        listed.json["items"][0]["id"],
        id.as_str(),
        "{}",
        listed.json
    );
    assert!(
        wait_for(
            &mut inside,
            Duration::from_secs(2),
            |v| v["push"]["channel"] == "alerts"
        )
        .await
        .is_none(),
        "nothing is published before the approval"
    );
    let report = s
        .req(
            "GET",
            &format!("/api/v1/alerts/{id}/deliveries"),
            Some(&issuer),
            Value::Null,
        )
        .await;
    assert_eq!(
        report.json["counts"],
        json!({}),
        "nothing is queued before the approval"
    );
    assert!(provider.received().is_empty());

    // Not by the issuer, not by other roles.
    let approve = format!("/api/v1/alerts/{id}/approve");
    s.req("POST", &approve, Some(&issuer), Value::Null)
        .await
        .assert_problem(403, "forbidden");
    for roles in [&[Role::Admin][..], &[Role::Coordinator], &[Role::Patient]] {
        let t = s.token("someone-else", roles, 600);
        s.req("POST", &approve, Some(&t), Value::Null)
            .await
            .assert_problem(403, "forbidden");
    }
    let r = s.req("POST", &approve, Some(&second), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "active");
    s.req("POST", &approve, Some(&second), Value::Null)
        .await
        .assert_problem(409, "conflict");
    wait_for(&mut inside, Duration::from_secs(30), |v| {
        v["push"]["pub"]["data"]["id"] == id.as_str()
    })
    .await
    .expect("published once approved");
    eventually("2 SMS", Duration::from_secs(30), || {
        provider.received().len() >= 2
    })
    .await;

    // An Exercise needs no approval and reaches the allowlisted ann only.
    let doc = exercise("EX-1", "2024-06-12T15:57:00-07:00");
    let preview = post_cap_to(&s, "/api/v1/alerts/preview", &issuer, &doc).await;
    assert_eq!(
        preview.json,
        json!({"audience": "allowlist", "channels": {"email": 1, "sms": 1, "push": 0, "websocket": 1},
               "subscribers": 1, "websocket": false, "approval_required": false,
               "unresolved_geocodes": []})
    );
    let r = post_cap(&s, &issuer, &doc).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["status"], "active");
    let ex = r.json["id"].as_str().unwrap().to_string();
    eventually("the exercise SMS", Duration::from_secs(30), || {
        provider.received().len() >= 3
    })
    .await;
    let last = provider.received().pop().unwrap();
    assert_eq!(last.to, phone_of("ann"));
    assert!(
        last.body.starts_with("EXERCISE: Flood warning"),
        "{}",
        last.body
    );
    assert!(
        wait_for(&mut inside, Duration::from_secs(2), |v| {
            v["push"]["pub"]["data"]["id"] == ex.as_str()
        })
        .await
        .is_none(),
        "an exercise never reaches the public channel"
    );
    assert!(!feed(&s).await.contains(&ex));
    let public = s.req("GET", "/api/v1/alerts", None, Value::Null).await;
    assert!(!public.json.to_string().contains(&ex));
    assert_eq!(provider.received().len(), 3, "bob got no exercise");
}

fn gate_env(sms_url: &str) -> Vec<(&str, &str)> {
    let mut env = server_env(&None, "", sms_url);
    env.push(("NEXUS_ALERTS_APPROVAL", "true"));
    env.push(("NEXUS_ALERTS_TEST_ALLOWLIST", "user-ann"));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actual_alert_waits_for_a_second_authority_and_exercises_reach_the_allowlist() {
    let (sms_url, provider) = Provider::default().start().await;
    let s = Server::start(&gate_env(&sms_url));
    approval_and_allowlist(s, provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actual_alert_waits_for_a_second_authority_on_postgres() {
    let (sms_url, provider) = Provider::default().start().await;
    let Some(s) = Server::start_postgres(&gate_env(&sms_url)).await else {
        return;
    };
    approval_and_allowlist(s, provider).await;
}

// ---------------------------------------------------------------------------------------
// Web Push: a local HTTP server is both the push service (it checks the VAPID token) and
// the browser (it decrypts the message with the subscription's private key). Its crypto is
// OpenSSL's, independent of the server's (ring).

mod webpush {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::derive::Deriver;
    use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::sign::Signer;
    use serde_json::{Value, json};

    fn group() -> EcGroup {
        EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()
    }

    fn hmac(key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        let key = PKey::hmac(key).unwrap();
        let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
        for d in data {
            s.update(d).unwrap();
        }
        s.sign_to_vec().unwrap()
    }

    /// A browser's push subscription keys.
    pub struct Browser {
        key: EcKey<Private>,
        public: Vec<u8>,
        auth: [u8; 16],
    }

    impl Browser {
        pub fn new() -> Browser {
            let key = EcKey::generate(&group()).unwrap();
            let mut ctx = BigNumContext::new().unwrap();
            let public = key
                .public_key()
                .to_bytes(&group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
                .unwrap();
            let mut auth = [0u8; 16];
            openssl::rand::rand_bytes(&mut auth).unwrap();
            Browser { key, public, auth }
        }

        /// `PushSubscription.toJSON()` for `endpoint`.
        pub fn subscription(&self, endpoint: &str) -> Value {
            json!({"endpoint": endpoint,
                   "keys": {"p256dh": B64.encode(&self.public), "auth": B64.encode(self.auth)}})
        }

        /// RFC 8291 / RFC 8188 `aes128gcm`, the user agent's side.
        pub fn decrypt(&self, body: &[u8]) -> Vec<u8> {
            let salt = &body[..16];
            let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
            assert!(rs >= 18);
            let idlen = body[20] as usize;
            assert_eq!(idlen, 65, "the key id is the sender's public key");
            let as_public = &body[21..21 + idlen];
            let ciphertext = &body[21 + idlen..];
            assert!(ciphertext.len() <= rs as usize, "one record");
            let mut ctx = BigNumContext::new().unwrap();
            let point = EcPoint::from_bytes(&group(), as_public, &mut ctx).unwrap();
            let peer =
                PKey::from_ec_key(EcKey::from_public_key(&group(), &point).unwrap()).unwrap();
            let mine = PKey::from_ec_key(self.key.clone()).unwrap();
            let mut deriver = Deriver::new(&mine).unwrap();
            deriver.set_peer(&peer).unwrap();
            let ecdh = deriver.derive_to_vec().unwrap();
            // HKDF-SHA-256 with one output block (L ≤ 32): T(1) = HMAC(PRK, info ‖ 0x01).
            let prk_key = hmac(&self.auth, &[&ecdh]);
            let ikm = hmac(
                &prk_key,
                &[b"WebPush: info\0", &self.public, as_public, &[1]],
            );
            let prk = hmac(salt, &[&ikm]);
            let cek = &hmac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]])[..16];
            let nonce = &hmac(&prk, &[b"Content-Encoding: nonce\0", &[1]])[..12];
            let (ct, tag) = ciphertext.split_at(ciphertext.len() - 16);
            let mut plain = openssl::symm::decrypt_aead(
                openssl::symm::Cipher::aes_128_gcm(),
                cek,
                Some(nonce),
                &[],
                ct,
                tag,
            )
            .expect("the payload decrypts with the subscription's key");
            while plain.last() == Some(&0) {
                plain.pop();
            }
            assert_eq!(plain.pop(), Some(2), "last-record delimiter");
            plain
        }
    }

    /// Checks `Authorization: vapid t=JWT, k=KEY` (RFC 8292): ES256 under `k`, `aud` the
    /// endpoint's origin, `exp` in the future and within 24 hours; returns (claims, k).
    pub fn verify_vapid(authorization: &str, origin: &str) -> (Value, String) {
        let rest = authorization.strip_prefix("vapid ").expect("vapid scheme");
        let mut t = None;
        let mut k = None;
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("t=") {
                t = Some(v.to_string());
            } else if let Some(v) = part.strip_prefix("k=") {
                k = Some(v.to_string());
            }
        }
        let (t, k) = (t.expect("t="), k.expect("k="));
        let (input, sig) = t.rsplit_once('.').unwrap();
        let (header, claims) = input.split_once('.').unwrap();
        let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        let sig = B64.decode(sig).unwrap();
        assert_eq!(sig.len(), 64);
        let sig = EcdsaSig::from_private_components(
            BigNum::from_slice(&sig[..32]).unwrap(),
            BigNum::from_slice(&sig[32..]).unwrap(),
        )
        .unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = EcPoint::from_bytes(&group(), &B64.decode(&k).unwrap(), &mut ctx).unwrap();
        let public = EcKey::from_public_key(&group(), &point).unwrap();
        let digest = openssl::sha::sha256(input.as_bytes());
        assert!(sig.verify(&digest, &public).unwrap(), "VAPID signature");
        let claims: Value = serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["aud"], origin);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let exp = claims["exp"].as_i64().unwrap();
        assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}, now {now}");
        (claims, k)
    }
}

#[derive(Debug, Clone)]
struct PushRequest {
    path: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

/// The push service stand-in: `/push/gone*` answers 410, `/push/flaky*` first answers 429
/// then 503 then accepts, anything else 201 Created.
#[derive(Clone, Default)]
struct PushService {
    received: Arc<Mutex<Vec<PushRequest>>>,
    flaky_failures: Arc<Mutex<usize>>,
}

impl PushService {
    async fn start(self) -> (String, PushService) {
        *self.flaky_failures.lock().unwrap() = 2;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    let path = uri.path().to_string();
                    me.received.lock().unwrap().push(PushRequest {
                        path: path.clone(),
                        headers,
                        body: body.to_vec(),
                    });
                    if path.starts_with("/push/gone") {
                        return axum::http::StatusCode::GONE;
                    }
                    if path.starts_with("/push/flaky") {
                        let mut left = me.flaky_failures.lock().unwrap();
                        if *left > 0 {
                            *left -= 1;
                            return if *left == 1 {
                                axum::http::StatusCode::TOO_MANY_REQUESTS
                            } else {
                                axum::http::StatusCode::SERVICE_UNAVAILABLE
                            };
                        }
                    }
                    axum::http::StatusCode::CREATED
                }
            },
        );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}"), self)
    }

    fn to(&self, prefix: &str) -> Vec<PushRequest> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Must show: a Web Push receiver decrypts the payload. The push service sees a VAPID token
/// for its origin, TTL, Urgency and an `aes128gcm` body; the browser decrypts the alert
/// with its idempotency key; 429/5xx are retried; 410 ends the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_is_signed_encrypted_retried_and_a_gone_subscription_ends() {
    let (origin, service) = PushService::default().start().await;
    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
        ("NEXUS_ALERTS_ALLOW_PRIVATE_PUSH", "true"),
        ("NEXUS_VAPID_SUBJECT", "mailto:ops@example.org"),
    ]);
    let authority = s.token("authority-1", &[Role::AlertAuthority], 600);
    let key = s
        .req("GET", "/api/v1/alerts/push/key", None, Value::Null)
        .await;
    assert_eq!(key.status, 200, "{}", key.json);
    let server_key = key.json["public_key"].as_str().unwrap().to_string();

    let browsers: Vec<(&str, webpush::Browser)> = ["ok", "flaky", "gone"]
        .into_iter()
        .map(|n| (n, webpush::Browser::new()))
        .collect();
    let mut subscription_ids = BTreeMap::new();
    for (name, browser) in &browsers {
        let token = s.token(&format!("user-{name}"), &[Role::Patient], 600);
        let r = s
            .req(
                "POST",
                "/api/v1/alerts/subscriptions",
                Some(&token),
                json!({"location": {"lat": 51.1, "lon": -1.1}, "channels": ["push"],
                       "push": browser.subscription(&format!("{origin}/push/{name}"))}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        assert_eq!(r.json["channels"], json!(["push"]));
        subscription_ids.insert(*name, r.json["id"].as_str().unwrap().to_string());
    }
    // A listed channel needs its address.
    let t = s.token("user-x", &[Role::Patient], 600);
    let r = s
        .req(
            "POST",
            "/api/v1/alerts/subscriptions",
            Some(&t),
            json!({"location": {"lat": 51.1, "lon": -1.1}, "channels": ["push"], "email": "x@example.org"}),
        )
        .await;
    r.assert_problem(400, "validation");

    let r = post_cap(
        &s,
        &authority,
        &cap("PUSH-1", "2024-06-12T14:57:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();

    eventually("pushes to every browser", Duration::from_secs(60), || {
        !service.to("/push/ok").is_empty()
            && !service.to("/push/gone").is_empty()
            && service.to("/push/flaky").len() >= 3
    })
    .await;
    let mut keys = BTreeMap::new();
    for (name, browser) in &browsers {
        let requests = service.to(&format!("/push/{name}"));
        for req in &requests {
            let h = |n: &str| req.headers.get(n).unwrap().to_str().unwrap().to_string();
            let (claims, k) = webpush::verify_vapid(&h("authorization"), &origin);
            assert_eq!(claims["sub"], "mailto:ops@example.org");
            assert_eq!(k, server_key, "the key browsers subscribed with");
            assert_eq!(h("content-encoding"), "aes128gcm");
            assert_eq!(h("urgency"), "high", "Immediate and Severe");
            let ttl: i64 = h("ttl").parse().unwrap();
            assert!(ttl > 0 && ttl <= 28 * 24 * 3600, "{ttl}");
            let plain = browser.decrypt(&req.body);
            let msg: Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(msg["alert_id"], id.as_str());
            assert_eq!(msg["headline"], "Flood warning for Riverside");
            assert_eq!(msg["instruction"], "Move to higher ground now.");
            assert_eq!(msg["area"], "Riverside");
            assert_eq!(msg["severity"], "Severe");
            keys.entry(*name)
                .or_insert_with(BTreeSet::new)
                .insert(msg["key"].as_str().unwrap().to_string());
        }
    }
    assert!(
        keys.values().all(|k| k.len() == 1),
        "one idempotency key per delivery, also across retries: {keys:?}"
    );
    let report = loop {
        let r = s
            .req(
                "GET",
                &format!("/api/v1/alerts/{id}/deliveries"),
                Some(&authority),
                Value::Null,
            )
            .await;
        if r.json["counts"]["push"]["delivered"] == 2 && r.json["counts"]["push"]["failed"] == 1 {
            break r.json;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gone = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["recipient_id"] == subscription_ids["gone"].as_str())
        .unwrap();
    assert!(
        gone["last_error"].as_str().unwrap().contains("410"),
        "{gone}"
    );

    // The next alert: the gone subscription has ended and hears nothing more.
    let r = post_cap(
        &s,
        &authority,
        &cap("PUSH-2", "2024-06-12T15:57:00-07:00", "Alert", None),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    eventually("the second push", Duration::from_secs(30), || {
        service.to("/push/ok").len() >= 2
    })
    .await;
    let id2 = r.json["id"].as_str().unwrap().to_string();
    let report = s
        .req(
            "GET",
            &format!("/api/v1/alerts/{id2}/deliveries"),
            Some(&authority),
            Value::Null,
        )
        .await;
    assert!(
        report.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["recipient_id"] != subscription_ids["gone"].as_str()),
        "{}",
        report.json
    );
    assert_eq!(service.to("/push/gone").len(), 1);
    // Endpoints are capabilities: they stay out of the logs.
    let logs = s.logs();
    assert!(
        !logs.contains("/push/"),
        "a push endpoint leaked into the logs"
    );
}
