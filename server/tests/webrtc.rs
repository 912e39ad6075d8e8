//! The SFU end to end with a real browser: the `nexus` binary and headless Chromium (fake
//! camera and microphone, driven by `tests-e2e/rtc/webrtc.mjs` through playwright-core) run
//! inside a private network namespace with a veth pair (10.77.0.1/24, 10.77.0.2/24), because
//! Chromium gathers no ICE candidates on loopback alone.
//!
//! One page publishes over WHIP, two pages subscribe over WHEP (one to everyone, one to the
//! publisher by id) and must decode more than 30 video frames and receive audio; then a doctor
//! and a patient join a consultation over `/rtc`, the doctor admits the patient from the waiting
//! room, and each decodes the other's video.
//!
//! A second test plays telemedicine and a live class as their users do: accounts, a booked
//! slot, a consultation and a class set up through the API; the provider and the patient (then
//! a teacher and three students) in browser pages of one Chromium (`tests-e2e/rtc/people.mjs`)
//! on the consultation and class page, signing in, joining, admitting, raising a hand and
//! granting it; decoded video and audio read from `getStats`; the record and the events
//! checked in the store and on the bus — on SQLite with the in-process bus, and on PostgreSQL
//! (over its Unix socket) with Kafka (a private tansu broker read with confluent-kafka).
//!
//! Needs root, `unshare`, `ip`, Debian's `chromium`, Node.js and `tests-e2e/node_modules`
//! (`scripts/install-chromium.sh`). Without them the test prints a note and passes, unless
//! `NEXUS_TEST_REQUIRE_ENGINES=1`, when it fails.

#![allow(clippy::unwrap_used)]

mod common;

use common::{JWT_SECRET, Server};
use nexus_auth::{Claims, Grant, RoomKind, TokenKeys};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Set in the re-executed test process that runs inside the namespace.
const INNER: &str = "NEXUS_WEBRTC_TEST_INNER";
const TEST: &str = "browser_publishes_over_whip_and_subscribers_decode_over_whep";

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests-e2e")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (prints why) or, with `NEXUS_TEST_REQUIRE_ENGINES=1`, fails.
fn skip(why: &str) {
    if std::env::var("NEXUS_TEST_REQUIRE_ENGINES").as_deref() == Ok("1") {
        panic!("webrtc browser test cannot run: {why}");
    }
    eprintln!(
        "SKIPPED webrtc browser test: {why} (set NEXUS_TEST_REQUIRE_ENGINES=1 to fail instead)"
    );
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Browser tests run one at a time: each drives one Chromium with several pages, and two at
/// once on a small machine would starve the encoders.
static ONE_BROWSER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` again inside a fresh network namespace, or skips when the machine cannot.
/// Returns true when this process is the re-executed one, which then does the test's work.
fn in_namespace(test: &str) -> bool {
    if std::env::var(INNER).as_deref() == Ok(test) {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        skip("not root (network namespaces need it)");
        return false;
    }
    for cmd in ["unshare", "ip", "chromium", "node"] {
        if !have(cmd) {
            skip(&format!("`{cmd}` is missing (scripts/install-chromium.sh)"));
            return false;
        }
    }
    if !e2e_dir().join("node_modules/playwright-core").exists() {
        skip("tests-e2e/node_modules is missing (scripts/install-chromium.sh)");
        return false;
    }
    let probe = Command::new("unshare").args(["-n", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        skip("`unshare -n` is not permitted here");
        return false;
    }
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Re-run this very test inside a fresh network namespace.
    let mut inner = Command::new("unshare");
    inner
        .arg("-n")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, test);
    if let Some(url) = postgres_socket_url() {
        inner.env("NEXUS_TEST_DATABASE_URL", url);
    }
    let status = inner.status().unwrap();
    assert!(status.success(), "{test} failed inside its namespace");
    false
}

/// Inside the namespace: loopback plus a veth pair, 10.77.0.1/24 and 10.77.0.2/24, so that
/// Chromium gathers host candidates (it ignores loopback-only machines).
fn network_up() {
    run("ip", &["link", "set", "lo", "up"]);
    run(
        "ip",
        &["link", "add", "nx0", "type", "veth", "peer", "name", "nx1"],
    );
    run("ip", &["addr", "add", "10.77.0.1/24", "dev", "nx0"]);
    run("ip", &["addr", "add", "10.77.0.2/24", "dev", "nx1"]);
    run("ip", &["link", "set", "nx0", "up"]);
    run("ip", &["link", "set", "nx1", "up"]);
}

#[test]
fn browser_publishes_over_whip_and_subscribers_decode_over_whep() {
    if in_namespace(TEST) {
        inside_namespace();
    }
}

fn inside_namespace() {
    network_up();

    let server = Server::start(&[
        ("NEXUS_HTTP_ADDR", "10.77.0.1:0"),
        ("NEXUS_SFU_UDP_ADDR", "10.77.0.1:0"),
        ("NEXUS_SFU_SHARDS", "2"),
    ]);
    let keys = TokenKeys::new(JWT_SECRET.as_bytes(), &[]);
    let token = |sub: &str, room: &str, kind: RoomKind, grants: Vec<Grant>| {
        keys.mint(&Claims::new(sub, 600).with_room(room, kind, grants))
            .unwrap()
    };
    let out = Command::new("node")
        .arg(e2e_dir().join("rtc/webrtc.mjs"))
        .current_dir(e2e_dir())
        .env("NEXUS_BASE", &server.base)
        .env("ROOM", "class-e2e")
        .env(
            "PUB_TOKEN",
            token(
                "teacher",
                "class-e2e",
                RoomKind::Class,
                vec![Grant::Publish],
            ),
        )
        .env(
            "SUB_TOKEN",
            token(
                "student",
                "class-e2e",
                RoomKind::Class,
                vec![Grant::Subscribe],
            ),
        )
        .env(
            "CONSULT_TOKEN_A",
            token(
                "doctor",
                "consult-e2e",
                RoomKind::Consultation,
                vec![Grant::Publish, Grant::Subscribe, Grant::Admin],
            ),
        )
        .env(
            "CONSULT_TOKEN_B",
            token(
                "patient",
                "consult-e2e",
                RoomKind::Consultation,
                vec![Grant::Publish, Grant::Subscribe],
            ),
        )
        .env("CLASS_ROOM", "class-page")
        .env(
            "CLASS_TEACHER_TOKEN",
            token(
                "teacher",
                "class-page",
                RoomKind::Class,
                vec![Grant::Publish, Grant::Subscribe, Grant::Admin],
            ),
        )
        .env(
            "CLASS_STUDENT_TOKEN",
            token(
                "student",
                "class-page",
                RoomKind::Class,
                vec![Grant::Subscribe],
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!("browser figures: {stdout}");
    let line = stdout.lines().last().unwrap_or("{}");
    let figures: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    assert!(
        out.status.success() && figures["ok"] == true,
        "browser test failed: {stdout}\nserver log:\n{}",
        server.logs()
    );
    for sub in figures["subscribers"].as_array().unwrap() {
        assert!(sub["framesDecoded"].as_u64().unwrap() > 30, "{sub}");
        assert!(sub["audioPackets"].as_u64().unwrap() > 0, "{sub}");
    }
}

// ---------------------------------------------------------------------------------------------
// Telemedicine and a live class, as their users live them: accounts and bookings through the
// API, the calls in browsers on the consultation and class page (web/room.html), the record and
// the events checked in the store and on the bus.

const PEOPLE: &str = "consultation_and_class_in_browsers_booked_through_the_api";
const PASSWORD: &str = "a long password";
/// Decoded video frames that count as "sees the other" (about a second of the fake camera).
const FRAMES: u64 = 30;

#[test]
fn consultation_and_class_in_browsers_booked_through_the_api() {
    if in_namespace(PEOPLE) {
        people_inside_namespace();
    }
}

fn people_inside_namespace() {
    network_up();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let on_the_veth = [
            ("NEXUS_HTTP_ADDR", "10.77.0.1:0"),
            ("NEXUS_SFU_UDP_ADDR", "10.77.0.1:0"),
            // Two shards: students of the class who only listen are placed on the idle one,
            // the teacher on the room's.
            ("NEXUS_SFU_SHARDS", "2"),
            ("NEXUS_RATE_LIMIT_PER_IP", "0"),
            ("NEXUS_RATE_LIMIT_PER_USER", "0"),
        ];
        // SQLite with the in-process bus.
        let sqlite = Server::start(&on_the_veth);
        let sqlite_db = format!("sqlite://{}/nexus.db", sqlite.dir.path().display());
        // PostgreSQL through its Unix socket (the host's 127.0.0.1 is not reachable from this
        // namespace) with Kafka: a private broker on the namespace's own loopback.
        let pg_db = postgres_over_socket().await;
        let kafka = pg_db.as_ref().map(|_| Tansu::start());
        let pg = pg_db.as_ref().map(|url| {
            let mut env = on_the_veth.to_vec();
            env.push(("NEXUS_DATABASE_URL", url));
            env.push(("NEXUS_KAFKA_BROKERS", &kafka.as_ref().unwrap().addr));
            Server::start(&env)
        });
        let mut origins = vec![sqlite.base.clone()];
        origins.extend(pg.iter().map(|s| s.base.clone()));
        let mut people = People::launch(&origins);

        consultation(&sqlite, &mut people, &sqlite_db, None).await;
        if let (Some(pg), Some(db)) = (&pg, &pg_db) {
            consultation(pg, &mut people, db, kafka.as_ref()).await;
        }
        class_of_three(&sqlite, &mut people).await;
        people.quit();
    });
}

/// A provider publishes a slot, a patient books it, both sign in on the consultation page and
/// see and hear each other once the provider admits the patient from the queue, the provider
/// writes an Observation and ends the consultation, and the appointment's events arrive on
/// the bus in order.
async fn consultation(s: &Server, people: &mut People, db_url: &str, kafka: Option<&Tansu>) {
    let (doc_email, pat_email) = (format!("doc@{}", host(s)), format!("pat@{}", host(s)));
    let doc_id = register(s, &doc_email, "Dr Ada", None).await;
    grant_roles(s, &doc_id, &["provider"]).await;
    let doc = login(s, &doc_email).await;
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/providers",
            Some(&doc),
            json!({"specialty": "general_practice", "languages": ["en"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let provider = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .req(
            "POST",
            &format!("/api/v1/healthcare/providers/{provider}/slots"),
            Some(&doc),
            json!({"start": in_minutes(5), "end": in_minutes(35)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let slot = r.json["id"].as_str().unwrap().to_string();

    let pat_id = register(s, &pat_email, "Pat", None).await;
    let pat = login(s, &pat_email).await;
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/appointments",
            Some(&pat),
            json!({"slot_id": slot, "reason": "persistent cough"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let appointment = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/consultations",
            Some(&pat),
            json!({"appointment_id": appointment}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let consultation = r.json["id"].as_str().unwrap().to_string();
    let room = r.json["room"].as_str().unwrap().to_string();

    // Both open the consultation page and sign in; the page fetches their room tokens.
    let url = format!("{}/consult/{room}", s.base);
    let (d, p) = (
        format!("doctor@{}", host(s)),
        format!("patient@{}", host(s)),
    );
    people.call(json!({"op": "open", "who": d, "url": url}));
    people.call(json!({"op": "sign_in", "who": d, "email": doc_email, "password": PASSWORD}));
    people.call(json!({"op": "wait_state", "who": d, "what": "joined"}));
    people.call(json!({"op": "open", "who": p, "url": url}));
    people.call(json!({"op": "sign_in", "who": p, "email": pat_email, "password": PASSWORD}));
    people.call(json!({"op": "wait_state", "who": p, "what": "waiting"}));

    // The provider finds the patient in the queue and admits them.
    let r = s
        .req("GET", "/api/v1/healthcare/queue", Some(&doc), Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["items"][0]["patient_id"],
        pat_id.as_str(),
        "{}",
        r.json
    );
    let r = s
        .req(
            "POST",
            &format!("/api/v1/healthcare/consultations/{consultation}/admit"),
            Some(&doc),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let media = people.call(json!({"op": "wait_media", "who": [d, p],
        "min_frames": FRAMES, "audio": true, "ms": 45000}));
    println!("consultation on {}: {media}", host(s));
    for who in [&d, &p] {
        assert!(
            media[who]["framesDecoded"].as_u64().unwrap() > FRAMES,
            "{media}"
        );
        assert!(media[who]["audioPackets"].as_u64().unwrap() > 0, "{media}");
    }

    // During the call the provider writes an Observation; then ends the consultation, which
    // completes the appointment and closes the room under both of them.
    let record = format!("/api/v1/healthcare/records/{pat_id}");
    let r = s
        .req(
            "POST",
            &record,
            Some(&doc),
            json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": format!("Patient/{pat_id}")},
                "valueQuantity": {"value": 72, "unit": "beats/minute"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s
        .req(
            "POST",
            &format!("/api/v1/healthcare/consultations/{consultation}/end"),
            Some(&doc),
            json!({"notes": "Viral; rest and fluids."}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    for who in [&d, &p] {
        let v = people.call(json!({"op": "wait_state", "who": who, "what": "left"}));
        assert_eq!(v["left"], "room_closed", "{v}");
        assert_eq!(v["status"], "left (room_closed)", "{v}");
        people.call(json!({"op": "close", "who": who}));
    }
    let r = s
        .req(
            "GET",
            &format!("/api/v1/healthcare/appointments/{appointment}"),
            Some(&pat),
            Value::Null,
        )
        .await;
    assert_eq!(r.json["status"], "completed", "{}", r.json);

    // The events, in the order they happened: in the outbox, then on the bus.
    let expected = [
        ("appointment.created", appointment.as_str()),
        ("consultation.started", appointment.as_str()),
        ("record.updated", pat_id.as_str()),
        ("consultation.ended", appointment.as_str()),
        ("appointment.completed", appointment.as_str()),
        // The Encounter the end wrote to the record.
        ("record.updated", pat_id.as_str()),
    ];
    let store = nexus_store::Store::connect(db_url).await.unwrap();
    let outbox: Vec<_> = store
        .outbox_range(0, i64::MAX, &["nexus.healthcare".to_string()], 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.key == appointment || e.key == pat_id)
        .collect();
    let seen: Vec<(&str, &str)> = outbox
        .iter()
        .map(|e| (e.event_type.as_str(), e.key.as_str()))
        .collect();
    assert_eq!(seen, expected, "outbox");
    match kafka {
        None => {
            // In-process bus: the real-time core's consumer received every one of them.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            for e in &outbox {
                while !store
                    .consumer_is_processed("realtime-core", &e.id)
                    .await
                    .unwrap()
                {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{} never reached the bus's consumer",
                        e.event_type
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Some(kafka) => {
            // Kafka: an independent client (confluent-kafka) reads the topic. Each key's
            // events are in partition order; across keys the CloudEvents times give the order.
            let total = store
                .outbox_range(0, i64::MAX, &["nexus.healthcare".to_string()], 10_000)
                .await
                .unwrap()
                .len();
            let got = kafka.read("nexus.healthcare", total);
            let mine: Vec<&Value> = got
                .iter()
                .filter(|m| m["key"] == appointment.as_str() || m["key"] == pat_id.as_str())
                .collect();
            for key in [&appointment, &pat_id] {
                let ids: Vec<&str> = mine
                    .iter()
                    .filter(|m| m["key"] == key.as_str())
                    .map(|m| m["headers"]["ce_id"].as_str().unwrap())
                    .collect();
                let want: Vec<&str> = outbox
                    .iter()
                    .filter(|e| e.key == *key)
                    .map(|e| e.id.as_str())
                    .collect();
                assert_eq!(ids, want, "order of {key}'s events on Kafka");
            }
            // Across the two keys (two partitions, maybe) the CloudEvents times order them:
            // the Observation came between the booking and the completion.
            let time = |ty: &str, nth: usize| {
                let m = mine
                    .iter()
                    .filter(|m| m["headers"]["ce_type"] == ty)
                    .nth(nth);
                let t = m.unwrap_or_else(|| panic!("no {ty} on Kafka"))["headers"]["ce_time"]
                    .as_str()
                    .unwrap();
                chrono::DateTime::parse_from_rfc3339(t).unwrap()
            };
            assert!(time("appointment.created", 0) <= time("record.updated", 0));
            assert!(time("record.updated", 0) <= time("appointment.completed", 0));
        }
    }
    store.close().await;
}

/// A teacher schedules a class; three students enrol and sign in on the class page; all three
/// see and hear the teacher; one raises a hand, the teacher grants it, and the teacher then
/// sees that student. The server has two SFU shards: students without the `publish` grant are
/// placed on the least busy one, so the class spans both (asserted from the participant ids,
/// whose first byte names the shard).
async fn class_of_three(s: &Server, people: &mut People) {
    let teacher_id = register(s, "teacher@class.example", "Ms Grace", None).await;
    grant_roles(s, &teacher_id, &["teacher"]).await;
    let teacher = login(s, "teacher@class.example").await;
    let r = s
        .req(
            "POST",
            "/api/v1/education/courses",
            Some(&teacher),
            json!({"title": "First aid", "description": "Bleeding, burns, CPR"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let course = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .req(
            "POST",
            "/api/v1/education/classes",
            Some(&teacher),
            json!({"course_id": course, "starts_at": in_minutes(0)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let room = r.json["room"].as_str().unwrap().to_string();
    let students = ["ana", "ben", "chen"];
    for name in students {
        let email = format!("{name}@class.example");
        register(s, &email, name, Some("student")).await;
        let token = login(s, &email).await;
        let r = s
            .req(
                "POST",
                "/api/v1/education/enrollments",
                Some(&token),
                json!({"course_id": course}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }

    let url = format!("{}/class/{room}", s.base);
    people.call(json!({"op": "open", "who": "teacher", "url": url}));
    people.call(json!({"op": "sign_in", "who": "teacher", "email": "teacher@class.example", "password": PASSWORD}));
    people.call(json!({"op": "wait_state", "who": "teacher", "what": "joined"}));
    let mut ids = Vec::new();
    for name in students {
        people.call(json!({"op": "open", "who": name, "url": url}));
        people.call(json!({"op": "sign_in", "who": name, "email": format!("{name}@class.example"), "password": PASSWORD}));
        let v = people.call(json!({"op": "wait_state", "who": name, "what": "joined"}));
        ids.push(v["me"].as_str().unwrap().to_string());
    }
    let shards: std::collections::BTreeSet<&str> = ids.iter().map(|id| &id[..2]).collect();
    assert_eq!(
        shards.len(),
        2,
        "the students are not on both shards: {ids:?}"
    );
    let media = people.call(json!({"op": "wait_media", "who": students,
        "min_frames": FRAMES, "audio": true, "ms": 45000}));
    println!("class, students: {media}");
    for name in students {
        assert!(
            media[name]["framesDecoded"].as_u64().unwrap() > FRAMES,
            "{media}"
        );
        assert!(media[name]["audioPackets"].as_u64().unwrap() > 0, "{media}");
    }

    // Ana raises her hand; the teacher sees it and grants; the teacher then sees Ana.
    people.call(json!({"op": "click", "who": "ana", "selector": "#hand"}));
    people.call(
        json!({"op": "wait_state", "who": "teacher", "what": format!("hand_raised:{}", ids[0])}),
    );
    people.call(json!({"op": "click", "who": "teacher",
        "selector": "#people li:has-text('✋') button", "text": "Grant"}));
    let media = people.call(json!({"op": "wait_media", "who": ["teacher"],
        "from": {"teacher": [ids[0]]}, "min_frames": FRAMES, "audio": true, "ms": 45000}));
    println!("class, teacher after the grant: {media}");
    assert!(
        media["teacher"]["videoFrom"][&ids[0]].as_u64().unwrap() > FRAMES,
        "{media}"
    );
    for who in ["teacher", "ana", "ben", "chen"] {
        people.call(json!({"op": "close", "who": who}));
    }
}

fn host(s: &Server) -> String {
    s.base.rsplit(':').next().unwrap().to_string() + ".example"
}

fn in_minutes(m: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(m))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn register(s: &Server, email: &str, name: &str, role: Option<&str>) -> String {
    let mut body = json!({"email": email, "password": PASSWORD, "name": name});
    if let Some(role) = role {
        body["role"] = role.into();
    }
    let r = s.req("POST", "/api/v1/auth/register", None, body).await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

async fn grant_roles(s: &Server, id: &str, roles: &[&str]) {
    let admin = s.token("admin", &[nexus_auth::Role::Admin], 300);
    let r = s
        .req(
            "PUT",
            &format!("/api/v1/users/{id}/roles"),
            Some(&admin),
            json!({"roles": roles}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}

async fn login(s: &Server, email: &str) -> String {
    let r = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["access_token"].as_str().unwrap().to_string()
}

/// A fresh PostgreSQL database, reached over the server's Unix socket (see
/// [`postgres_socket_url`]); `None` when the environment has no PostgreSQL.
async fn postgres_over_socket() -> Option<String> {
    if std::env::var_os("NEXUS_TEST_DATABASE_SOCKET_DIR").is_none() {
        assert!(
            std::env::var("NEXUS_TEST_REQUIRE_ENGINES").as_deref() != Ok("1"),
            "NEXUS_TEST_DATABASE_SOCKET_DIR is unset but NEXUS_TEST_REQUIRE_ENGINES=1"
        );
        eprintln!("note: no PostgreSQL socket; the browser test runs on SQLite only");
        return None;
    }
    nexus_store::testing::fresh_postgres_url().await
}

/// `NEXUS_TEST_DATABASE_URL` rewritten to go through the Unix socket in
/// `NEXUS_TEST_DATABASE_SOCKET_DIR` (a network namespace cannot reach the host's 127.0.0.1):
/// `postgres://user:pass@host:port/db` → `postgres://user:pass@localhost/db?host=%2F…`.
fn postgres_socket_url() -> Option<String> {
    let url = std::env::var("NEXUS_TEST_DATABASE_URL").ok()?;
    let dir = std::env::var("NEXUS_TEST_DATABASE_SOCKET_DIR").ok()?;
    let (creds, rest) = url.rsplit_once('@')?;
    let db = rest.split_once('/')?.1.split('?').next()?;
    Some(format!(
        "{creds}@localhost/{db}?host={}",
        dir.replace('/', "%2F")
    ))
}

/// The browser people (`tests-e2e/rtc/people.mjs`): one Chromium, one page per person,
/// one command per line.
struct People {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    answers: std::sync::mpsc::Receiver<String>,
}

impl People {
    fn launch(origins: &[String]) -> People {
        let mut node = Command::new("node");
        node.arg(e2e_dir().join("rtc/people.mjs"))
            .current_dir(e2e_dir())
            .env("ORIGINS", origins.join(","));
        // The script's default is Debian's path, as for webrtc.mjs; playwright wants a path,
        // not a command name.
        if let Ok(path) = std::env::var("NEXUS_CHROMIUM") {
            node.env("CHROMIUM", path);
        }
        let mut child = node
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        People {
            child,
            stdin,
            answers,
        }
    }

    /// Sends one command and returns its answer; fails the test on an error answer.
    fn call(&mut self, cmd: Value) -> Value {
        use std::io::Write;
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{cmd}").unwrap();
            let line = self
                .answers
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("no answer to {cmd}: {e}"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad answer to {cmd}: {line}: {e}"));
            assert!(v.get("error").is_none(), "{cmd}: {}", v["error"]);
            v
        })
    }

    fn quit(mut self) {
        use std::io::Write;
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.answers.recv_timeout(Duration::from_secs(30));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for People {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Kafka-protocol broker (tansu, memory storage) on the namespace's loopback, and
/// an independent client to read it.
struct Tansu {
    addr: String,
    child: std::process::Child,
}

impl Tansu {
    fn start() -> Tansu {
        let bin = std::env::var("NEXUS_TEST_TANSU_BIN")
            .expect("NEXUS_TEST_TANSU_BIN (scripts/services.sh env) for the Kafka half");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "nexus-browser-test",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { addr, child }
    }

    /// The first `n` messages of `topic`, read with confluent-kafka
    /// (`scripts/check-cloudevents.py`), ordered by partition and offset.
    fn read(&self, topic: &str, n: usize) -> Vec<Value> {
        let python = std::env::var("NEXUS_TEST_PYTHON")
            .expect("NEXUS_TEST_PYTHON (scripts/services.sh env) for the Kafka half");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-cloudevents.py");
        let out = tokio::task::block_in_place(|| {
            Command::new(python)
                .arg(script)
                .args([&self.addr, topic, &n.to_string()])
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "reading {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
