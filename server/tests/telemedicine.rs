//! Telemedicine and live classes through the real `nexus` binary, on SQLite and PostgreSQL:
//! the flow of INTERFACES.md "Healthcare and education" — a provider publishes slots, a
//! patient books, a second booking and 49 of 50 concurrent ones are refused, both parties get
//! consultation tokens (nobody else does), the patient waits in the SFU waiting room over the
//! `/rtc` room protocol until the provider admits them through the API, the provider writes
//! an Observation, ends the consultation, and the appointment's events are in the outbox in
//! order. Then FHIR access control and validation (OperationOutcome), audit entries, and a
//! class with a teacher and a student. Media itself is the SFU browser test's business.

#![allow(clippy::unwrap_used)]

mod common;

use common::{JWT_SECRET, Server};
use futures_util::{SinkExt, StreamExt};
use nexus_auth::{Grant, Role, RoomKind, TokenKeys};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const NO_LIMITS: [(&str, &str); 2] = [
    ("NEXUS_RATE_LIMIT_PER_IP", "0"),
    ("NEXUS_RATE_LIMIT_PER_USER", "0"),
];

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn login(s: &Server, email: &str, password: &str) -> String {
    let r = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["access_token"].as_str().unwrap().to_string()
}

/// Registers a user, lets an admin give them `roles`, and logs in again for a token
/// carrying them.
async fn user_with_roles(s: &Server, email: &str, roles: &[&str]) -> (String, String) {
    let (id, _, _) = s.register_login(email, "a long password", email).await;
    let admin = s.token("admin", &[Role::Admin], 300);
    let r = s
        .req(
            "PUT",
            &format!("/api/v1/users/{id}/roles"),
            Some(&admin),
            json!({"roles": roles}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    (id, login(s, email, "a long password").await)
}

async fn rtc_join(s: &Server, token: &str) -> Ws {
    let url = format!("{}/rtc?token={token}", s.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(json!({"type": "join"}).to_string().into()))
        .await
        .unwrap();
    ws
}

/// The next room-protocol message of type `kind`, skipping others.
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` message within 10 s"))
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == kind {
                return v;
            }
        }
    }
}

fn rfc3339_in(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn assert_outcome(r: &common::Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type(), "application/fhir+json");
    assert_eq!(r.json["resourceType"], "OperationOutcome", "{}", r.json);
    assert_eq!(r.json["issue"][0]["code"], code, "{}", r.json);
}

async fn consultation_journey(s: &Server, db_url: &str) {
    // A provider publishes a profile and slots.
    let (doc_id, doc) = user_with_roles(s, "doc@example.org", &["provider"]).await;
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/providers",
            Some(&doc),
            json!({"specialty": "general_practice", "languages": ["en", "fr"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let provider = r.json["id"].as_str().unwrap().to_string();
    let mut slots = Vec::new();
    for h in [24, 25] {
        let r = s
            .req(
                "POST",
                &format!("/api/v1/healthcare/providers/{provider}/slots"),
                Some(&doc),
                json!({"start": rfc3339_in(h), "end": rfc3339_in(h)}),
            )
            .await;
        // start == end: refused with a pointer to /end.
        r.assert_problem(400, "validation");
        assert_eq!(r.json["errors"][0]["pointer"], "/end");
        let r = s
            .req(
                "POST",
                &format!("/api/v1/healthcare/providers/{provider}/slots"),
                Some(&doc),
                json!({"start": rfc3339_in(h), "end": rfc3339_in(h + 1)}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        assert_eq!(r.json["available"], true);
        slots.push(r.json["id"].as_str().unwrap().to_string());
    }
    let r = s
        .req(
            "GET",
            &format!(
                "/api/v1/healthcare/providers?specialty=general_practice&language=fr&available_from={}",
                rfc3339_in(0).replace('+', "%2B")
            ),
            Some(&doc),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["items"][0]["id"], provider.as_str(), "{}", r.json);
    let r = s
        .req(
            "GET",
            "/api/v1/healthcare/providers?language=de",
            Some(&doc),
            Value::Null,
        )
        .await;
    assert_eq!(r.json["items"], json!([]));

    // A patient books; the slot cannot be booked twice; a provider cannot book.
    let (pat_id, pat, _) = s
        .register_login("pat@example.org", "a long password", "Pat")
        .await;
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/appointments",
            Some(&pat),
            json!({"slot_id": slots[0], "reason": "persistent cough"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["status"], "booked");
    let appointment = r.json["id"].as_str().unwrap().to_string();
    let (other_id, other, _) = s
        .register_login("other@example.org", "a long password", "Other")
        .await;
    let again = s
        .req(
            "POST",
            "/api/v1/healthcare/appointments",
            Some(&other),
            json!({"slot_id": slots[0], "reason": "me too"}),
        )
        .await;
    again.assert_problem(409, "conflict");
    s.req(
        "POST",
        "/api/v1/healthcare/appointments",
        Some(&doc),
        json!({"slot_id": slots[1], "reason": "x"}),
    )
    .await
    .assert_problem(403, "forbidden");

    // 50 patients at once on the other slot: exactly one 201, every other a 409.
    let tokens: Vec<String> = (0..50)
        .map(|i| s.token(&format!("crowd-{i}"), &[Role::Patient], 300))
        .collect();
    let answers = futures_util::future::join_all(tokens.iter().map(|t| {
        s.req(
            "POST",
            "/api/v1/healthcare/appointments",
            Some(t),
            json!({"slot_id": slots[1], "reason": "crowd"}),
        )
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|&&c| c == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 409).count(),
        49,
        "{statuses:?}"
    );

    // A consultation for the appointment: tokens for its two parties only.
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
    let token_path = format!("/api/v1/healthcare/consultations/{consultation}/token");
    s.req("POST", &token_path, Some(&other), Value::Null)
        .await
        .assert_problem(403, "forbidden");
    let admin = s.token("admin", &[Role::Admin], 300);
    s.req("POST", &token_path, Some(&admin), Value::Null)
        .await
        .assert_problem(403, "forbidden");
    let keys = TokenKeys::new(JWT_SECRET.as_bytes(), &[]);
    let r = s.req("POST", &token_path, Some(&pat), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["room"], room.as_str());
    let pat_room = r.json["token"].as_str().unwrap().to_string();
    let claims = keys.verify(&pat_room).unwrap();
    assert_eq!(claims.sub, pat_id);
    assert_eq!(claims.room.as_deref(), Some(room.as_str()));
    assert_eq!(claims.room_kind, Some(RoomKind::Consultation));
    assert_eq!(claims.grants, Some(vec![Grant::Publish, Grant::Subscribe]));
    let r = s.req("POST", &token_path, Some(&doc), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let claims = keys.verify(r.json["token"].as_str().unwrap()).unwrap();
    assert_eq!(
        claims.grants,
        Some(vec![Grant::Publish, Grant::Subscribe, Grant::Admin])
    );
    assert_eq!(r.json["grants"], json!(["publish", "subscribe", "admin"]));

    // The patient joins the room and waits; the provider's queue lists them.
    let mut ws = rtc_join(s, &pat_room).await;
    let waiting = expect(&mut ws, "waiting").await;
    assert!(waiting["participant"].is_string(), "{waiting}");
    let r = s
        .req("GET", "/api/v1/healthcare/queue", Some(&doc), Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["items"][0]["consultation_id"], consultation.as_str());
    assert_eq!(r.json["items"][0]["patient_id"], pat_id.as_str());
    s.req("GET", "/api/v1/healthcare/queue", Some(&pat), Value::Null)
        .await
        .assert_problem(403, "forbidden");

    // Only the provider admits, through the API; the SFU then lets the patient in.
    let admit = format!("/api/v1/healthcare/consultations/{consultation}/admit");
    s.req("POST", &admit, Some(&pat), Value::Null)
        .await
        .assert_problem(403, "forbidden");
    let r = s.req("POST", &admit, Some(&doc), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "in_progress");
    let joined = expect(&mut ws, "joined").await;
    assert_eq!(joined["room"], room.as_str(), "{joined}");
    assert_eq!(joined["can_publish"], true, "{joined}");
    let r = s
        .req("GET", "/api/v1/healthcare/queue", Some(&doc), Value::Null)
        .await;
    assert_eq!(r.json["items"], json!([]));

    // The provider writes an Observation to the patient's record; bad ones are refused with
    // an OperationOutcome naming the element.
    let record = format!("/api/v1/healthcare/records/{pat_id}");
    let obs = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{pat_id}")},
        "valueQuantity": {"value": 72, "unit": "beats/minute"}});
    let r = s.req("POST", &record, Some(&doc), obs.clone()).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.content_type(), "application/fhir+json");
    assert_eq!(r.json["meta"]["versionId"], "1");
    let bad = json!({"resourceType": "Observation", "status": "done",
        "subject": {"reference": "Patient/someone-else"}});
    let r = s.req("POST", &record, Some(&doc), bad).await;
    assert_outcome(&r, 400, "value");
    let paths: Vec<&str> = r.json["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["expression"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "Observation.status",
            "Observation.code",
            "Observation.subject"
        ]
    );
    let r = s
        .req(
            "POST",
            &record,
            Some(&doc),
            json!({"resourceType": "Claim"}),
        )
        .await;
    assert_outcome(&r, 400, "not-supported");

    // Ending completes the appointment, closes the room and writes the encounter.
    let end = format!("/api/v1/healthcare/consultations/{consultation}/end");
    s.req("POST", &end, Some(&pat), Value::Null)
        .await
        .assert_problem(403, "forbidden");
    let r = s
        .req(
            "POST",
            &end,
            Some(&doc),
            json!({"notes": "Viral; rest and fluids."}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "completed");
    let left = expect(&mut ws, "leave").await;
    assert_eq!(left["reason"], "room_closed", "{left}");
    s.req("POST", &end, Some(&doc), Value::Null)
        .await
        .assert_problem(409, "conflict");
    s.req("POST", &token_path, Some(&pat), Value::Null)
        .await
        .assert_problem(409, "conflict");
    let r = s
        .req(
            "GET",
            &format!("/api/v1/healthcare/appointments/{appointment}"),
            Some(&pat),
            Value::Null,
        )
        .await;
    assert_eq!(r.json["status"], "completed", "{}", r.json);
    s.req(
        "GET",
        &format!("/api/v1/healthcare/appointments/{appointment}"),
        Some(&other),
        Value::Null,
    )
    .await
    .assert_problem(403, "forbidden");

    // Record access: the patient and the treating provider read; another patient and
    // anonymous callers get OperationOutcomes.
    let r = s.req("GET", &record, Some(&pat), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["resourceType"], "Bundle");
    let types: Vec<&str> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Observation", "Encounter"]);
    let r = s
        .req(
            "GET",
            &format!("{record}?_type=Encounter"),
            Some(&doc),
            Value::Null,
        )
        .await;
    assert_eq!(r.json["total"], 1, "{}", r.json);
    assert!(
        r.json["entry"][0]["resource"]["text"]["div"]
            .as_str()
            .unwrap()
            .contains("rest and fluids")
    );
    assert_outcome(
        &s.req("GET", &record, Some(&other), Value::Null).await,
        403,
        "forbidden",
    );
    assert_outcome(
        &s.req("GET", &record, None, Value::Null).await,
        401,
        "login",
    );
    assert_outcome(
        &s.req(
            "POST",
            &format!("/api/v1/healthcare/records/{other_id}"),
            Some(&doc),
            obs,
        )
        .await,
        403,
        "forbidden",
    );

    // The store saw it all: events in order, in the outbox, and the audit trail.
    let store = nexus_store::Store::connect(db_url).await.unwrap();
    let types: Vec<String> = store
        .events_for(&appointment)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "appointment.created",
            "consultation.started",
            "consultation.ended",
            "appointment.completed"
        ]
    );
    let record_events: Vec<_> = store
        .events_for(&pat_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "record.updated")
        .collect();
    // The Observation and the Encounter; ids only, no clinical content.
    assert_eq!(record_events.len(), 2);
    assert!(
        record_events
            .iter()
            .all(|e| e.topic == "nexus.healthcare" && !e.payload.contains("beats"))
    );
    let audit: Vec<(Option<String>, String)> = store
        .audit_for(&pat_id)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, actor, action)| (actor, action))
        .collect();
    for expected in [
        (Some(doc_id.clone()), "record.write"),
        (Some(pat_id.clone()), "record.read"),
        (Some(doc_id.clone()), "record.read"),
        (Some(other_id.clone()), "record.read.denied"),
    ] {
        assert!(
            audit
                .iter()
                .any(|(a, act)| *a == expected.0 && act == expected.1),
            "{expected:?} missing from {audit:?}"
        );
    }
    store.close().await;

    // A booked appointment starting within 24 h gets its reminder by e-mail from the
    // server's reminder pass: the time, not the reason for the visit.
    let r = s
        .req(
            "POST",
            &format!("/api/v1/healthcare/providers/{provider}/slots"),
            Some(&doc),
            json!({"start": rfc3339_in(2), "end": rfc3339_in(3)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/appointments",
            Some(&pat),
            json!({"slot_id": r.json["id"], "reason": "follow-up of the cough"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let appointment = r.json["id"].as_str().unwrap().to_string();
    let mail_dir = s.dir.path().join("mail");
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    let reminder = loop {
        let found = std::fs::read_dir(&mail_dir).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .contains("appointment_reminder")
                })
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                // The journey's first appointment (booked 24 h ahead) may come within the
                // reminder window while a slow run goes on: look for this one's.
                .find(|m| m.contains("To: pat@example.org") && m.contains(&appointment))
        });
        if let Some(m) = found {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "no reminder mail");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reminder.contains(&appointment), "{reminder}");
    assert!(!reminder.contains("cough"), "{reminder}");
}

async fn class_journey(s: &Server) {
    let teacher = s.token("teacher-1", &[Role::Teacher], 300);
    let student = s.token("student-1", &[Role::Student], 300);
    let lurker = s.token("student-2", &[Role::Student], 300);
    let patient = s.token("patient-9", &[Role::Patient], 300);
    s.req(
        "POST",
        "/api/v1/education/courses",
        Some(&student),
        json!({"title": "First aid"}),
    )
    .await
    .assert_problem(403, "forbidden");
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
            json!({"course_id": course, "starts_at": rfc3339_in(1)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let class = r.json["id"].as_str().unwrap().to_string();
    let room = r.json["room"].as_str().unwrap().to_string();
    let r = s
        .req(
            "POST",
            "/api/v1/education/enrollments",
            Some(&student),
            json!({"course_id": course}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    s.req(
        "POST",
        "/api/v1/education/enrollments",
        Some(&student),
        json!({"course_id": course}),
    )
    .await
    .assert_problem(409, "conflict");

    let join = format!("/api/v1/education/classes/{class}/join");
    let keys = TokenKeys::new(JWT_SECRET.as_bytes(), &[]);
    let r = s.req("POST", &join, Some(&teacher), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["room"], room.as_str());
    let claims = keys.verify(r.json["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.room_kind, Some(RoomKind::Class));
    assert_eq!(
        claims.grants,
        Some(vec![Grant::Publish, Grant::Subscribe, Grant::Admin])
    );
    let r = s.req("POST", &join, Some(&student), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let student_room = r.json["token"].as_str().unwrap().to_string();
    let claims = keys.verify(&student_room).unwrap();
    assert_eq!(claims.room.as_deref(), Some(room.as_str()));
    assert_eq!(claims.grants, Some(vec![Grant::Subscribe]));
    s.req("POST", &join, Some(&lurker), Value::Null)
        .await
        .assert_problem(403, "forbidden");
    s.req("POST", &join, Some(&patient), Value::Null)
        .await
        .assert_problem(403, "forbidden");

    // A student enters a class directly (no waiting room) and may not publish.
    let mut ws = rtc_join(s, &student_room).await;
    let joined = expect(&mut ws, "joined").await;
    assert_eq!(joined["kind"], "class", "{joined}");
    assert_eq!(joined["can_publish"], false, "{joined}");

    // An auto-graded quiz: failing leaves progress at 0; passing completes the course and
    // issues a certificate that verifies offline with the published key.
    let r = s
        .req(
            "POST",
            &format!("/api/v1/education/courses/{course}/assessments"),
            Some(&teacher),
            json!({"title": "Quiz 1", "questions": [
                {"prompt": "Compressions per minute?", "choices": ["60", "110", "200"], "answer": 1},
                {"prompt": "Cool a burn with?", "choices": ["ice", "running water"], "answer": 1}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert!(r.json["questions"][0].get("answer").is_none(), "{}", r.json);
    let submit = format!(
        "/api/v1/education/assessments/{}/submit",
        r.json["id"].as_str().unwrap()
    );
    s.req("POST", &submit, Some(&lurker), json!({"answers": [1, 1]}))
        .await
        .assert_problem(403, "forbidden");
    let r = s
        .req("POST", &submit, Some(&student), json!({"answers": [0, 1]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        (r.json["score"].as_i64(), r.json["passed"].as_bool()),
        (Some(50), Some(false))
    );
    assert_eq!(r.json["progress"], 0);
    let r = s
        .req("POST", &submit, Some(&student), json!({"answers": [1, 1]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["course_completed"], true, "{}", r.json);
    assert!(r.json["certificate_id"].is_string(), "{}", r.json);
    let r = s
        .req(
            "GET",
            "/api/v1/education/certificates",
            Some(&student),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let cert = r.json["items"][0].clone();
    let key = s
        .req(
            "GET",
            "/api/v1/education/certificates/public-key",
            None,
            Value::Null,
        )
        .await;
    assert_eq!(key.status, 200, "{}", key.json);
    let (payload, signature) = (
        cert["payload"].as_str().unwrap(),
        cert["signature"].as_str().unwrap(),
    );
    let public = key.json["public_key"].as_str().unwrap();
    assert!(nexus_api::education::verify_certificate(
        public, payload, signature
    ));
    assert!(!nexus_api::education::verify_certificate(
        public,
        &payload.replace("student-1", "student-2"),
        signature
    ));
    assert!(
        payload.contains("\"student_id\":\"student-1\""),
        "{payload}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consultation_from_slot_to_completed_appointment_on_sqlite() {
    let s = Server::start(&NO_LIMITS);
    let url = format!("sqlite://{}/nexus.db", s.dir.path().display());
    consultation_journey(&s, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consultation_from_slot_to_completed_appointment_on_postgres() {
    let Some(url) = nexus_store::testing::fresh_postgres_url().await else {
        return;
    };
    let mut env = NO_LIMITS.to_vec();
    env.push(("NEXUS_DATABASE_URL", url.as_str()));
    let s = Server::start(&env);
    consultation_journey(&s, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_tokens_give_the_teacher_publish_and_students_subscribe() {
    class_journey(&Server::start(&NO_LIMITS)).await;
    if let Some(s) = Server::start_postgres(&NO_LIMITS).await {
        class_journey(&s).await;
    }
}

/// Role checks of the healthcare and education endpoints, as a matrix: every role against
/// every role-gated endpoint. Bodies are built to fail *after* the role check (404 for a
/// missing slot or course, 400 for bad input), so "allowed" shows as anything but 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_of_healthcare_and_education() {
    use Role::*;
    let s = Server::start(&NO_LIMITS);
    let cases: [(&str, &str, Value, &[Role]); 11] = [
        (
            "POST",
            "/api/v1/healthcare/providers",
            json!({"specialty": "", "languages": []}),
            &[Provider, Admin],
        ),
        (
            "GET",
            "/api/v1/healthcare/providers",
            Value::Null,
            &Role::ALL,
        ),
        (
            "POST",
            "/api/v1/healthcare/providers/nope/slots",
            json!({"start": "x", "end": "y"}),
            &[Provider, Admin],
        ),
        (
            "POST",
            "/api/v1/healthcare/appointments",
            json!({"slot_id": "nope", "reason": "x"}),
            &[Patient],
        ),
        (
            "GET",
            "/api/v1/healthcare/queue",
            Value::Null,
            &[Provider, Admin],
        ),
        (
            "POST",
            "/api/v1/healthcare/data-collection",
            json!({"syndrome": "", "location": {"lat": 0, "lon": 0}, "date": "x"}),
            &[Provider, Admin],
        ),
        (
            "POST",
            "/api/v1/education/courses",
            json!({"title": ""}),
            &[Teacher, Admin],
        ),
        ("GET", "/api/v1/education/courses", Value::Null, &Role::ALL),
        (
            "POST",
            "/api/v1/education/enrollments",
            json!({"course_id": "nope"}),
            &[Student],
        ),
        (
            "POST",
            "/api/v1/education/classes",
            json!({"course_id": "nope", "starts_at": "x"}),
            &[Teacher, Admin],
        ),
        (
            "POST",
            "/api/v1/education/classes/nope/join",
            Value::Null,
            &[Teacher, Student, Admin],
        ),
    ];
    let mut wrong = Vec::new();
    for role in Role::ALL {
        let token = s.token(&format!("u-{}", role.as_str()), &[role], 300);
        for (method, path, body, allowed) in &cases {
            let r = s.req(method, path, Some(&token), body.clone()).await;
            let expected_allowed = allowed.contains(&role);
            if (r.status != 403) != expected_allowed {
                wrong.push(format!("{} {method} {path} -> {}", role.as_str(), r.status));
            }
            assert!(
                r.status != 401 && r.status < 500,
                "{method} {path}: {}",
                r.json
            );
        }
    }
    assert!(wrong.is_empty(), "unexpected role decisions: {wrong:#?}");
    // Without a token: 401 problem+json.
    s.req("GET", "/api/v1/healthcare/queue", None, Value::Null)
        .await
        .assert_problem(401, "unauthorized");
}

/// Cases of one syndrome in one region: the threshold-th report within the window detects
/// an epidemic (`epidemic.detected` in the outbox), later ones do not repeat it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surveillance_reports_detect_an_epidemic_once() {
    let s = Server::start(&NO_LIMITS);
    let doc = s.token("doc-s", &[Role::Provider], 300);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut detected = Vec::new();
    for i in 0..12 {
        let r = s
            .req(
                "POST",
                "/api/v1/healthcare/data-collection",
                Some(&doc),
                json!({"syndrome": "cholera", "location": {"lat": -1.28 + f64::from(i) * 0.001, "lon": 36.82}, "date": today}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        assert_eq!(r.json["region"], "cell_-3_73");
        assert_eq!(r.json["cases_in_window"], i + 1);
        detected.push(r.json["epidemic_detected"].as_bool().unwrap());
    }
    let expected: Vec<bool> = (1..=12).map(|n| n == 10).collect();
    assert_eq!(detected, expected);
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/data-collection",
            Some(&doc),
            json!({"syndrome": "cholera", "location": {"lat": 95, "lon": 0}, "date": "tomorrow"}),
        )
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"].as_array().unwrap().len(), 2, "{}", r.json);
    let store =
        nexus_store::Store::connect(&format!("sqlite://{}/nexus.db", s.dir.path().display()))
            .await
            .unwrap();
    let events = store.events_for("cholera:cell_-3_73").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "epidemic.detected");
    assert!(
        events[0].payload.contains("\"cases\":10"),
        "{}",
        events[0].payload
    );
}

/// A patient moves and cancels their appointment; freed slots are bookable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_and_cancel_free_slots() {
    let s = Server::start(&NO_LIMITS);
    let doc = s.token("doc-r", &[Role::Provider], 300);
    let pat = s.token("pat-r", &[Role::Patient], 300);
    let other = s.token("pat-o", &[Role::Patient], 300);
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/providers",
            Some(&doc),
            json!({"specialty": "pediatrics", "languages": ["sw"]}),
        )
        .await;
    let provider = r.json["id"].as_str().unwrap().to_string();
    let mut slots = Vec::new();
    for h in [48, 49] {
        let r = s
            .req(
                "POST",
                &format!("/api/v1/healthcare/providers/{provider}/slots"),
                Some(&doc),
                json!({"start": rfc3339_in(h), "end": rfc3339_in(h + 1)}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        slots.push(r.json["id"].as_str().unwrap().to_string());
    }
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/appointments",
            Some(&pat),
            json!({"slot_id": slots[0], "reason": "fever", "triage_priority": 2}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["triage_priority"], 2);
    let id = r.json["id"].as_str().unwrap().to_string();
    s.req(
        "POST",
        &format!("/api/v1/healthcare/appointments/{id}/cancel"),
        Some(&other),
        Value::Null,
    )
    .await
    .assert_problem(403, "forbidden");
    let r = s
        .req(
            "POST",
            &format!("/api/v1/healthcare/appointments/{id}/reschedule"),
            Some(&pat),
            json!({"slot_id": slots[1]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["slot_id"], slots[1].as_str());
    let r = s
        .req(
            "GET",
            &format!("/api/v1/healthcare/providers/{provider}/slots"),
            Some(&other),
            Value::Null,
        )
        .await;
    let free: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(free, [slots[0].as_str()]);
    let r = s
        .req(
            "POST",
            &format!("/api/v1/healthcare/appointments/{id}/cancel"),
            Some(&doc),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "cancelled");
    s.req(
        "POST",
        &format!("/api/v1/healthcare/appointments/{id}/cancel"),
        Some(&pat),
        Value::Null,
    )
    .await
    .assert_problem(409, "conflict");
    let r = s
        .req(
            "POST",
            "/api/v1/healthcare/appointments",
            Some(&other),
            json!({"slot_id": slots[1], "reason": "rash"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s
        .req(
            "GET",
            "/api/v1/healthcare/appointments",
            Some(&pat),
            Value::Null,
        )
        .await;
    assert_eq!(r.json["items"][0]["status"], "cancelled", "{}", r.json);
}
