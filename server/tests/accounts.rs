//! A new user's journey and every way it can go wrong, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Resp, Server};
use nexus_auth::Role;
use serde_json::json;

async fn new_user_journey(s: &Server) {
    // Register, log in, read the profile.
    let (id, access, refresh) = s
        .register_login("Ada@Example.org", "correct horse battery", "Ada Lovelace")
        .await;
    let me = s
        .req("GET", "/api/v1/auth/profile", Some(&access), json!(null))
        .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json["id"], id.as_str());
    assert_eq!(me.json["email"], "ada@example.org");
    assert_eq!(me.json["roles"], json!(["patient"]));
    assert_eq!(me.json["email_verified"], false);

    // Refresh rotates: the new pair works, the old refresh token is now a reuse and kills the family.
    let r = s
        .req(
            "POST",
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["token_type"], "Bearer");
    let refresh2 = r.json["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    let access2 = r.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        s.req("GET", "/api/v1/auth/profile", Some(&access2), json!(null))
            .await
            .status,
        200
    );
    s.req(
        "POST",
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    )
    .await
    .assert_problem(401, "unauthorized");
    s.req(
        "POST",
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh2}),
    )
    .await
    .assert_problem(401, "unauthorized");

    // A fresh login, then logout revokes it.
    let r = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.org", "password": "correct horse battery"}),
        )
        .await;
    let refresh3 = r.json["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        s.req(
            "POST",
            "/api/v1/auth/logout",
            None,
            json!({"refresh_token": refresh3})
        )
        .await
        .status,
        204
    );
    s.req(
        "POST",
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh3}),
    )
    .await
    .assert_problem(401, "unauthorized");

    // Profile changes and settings.
    let r = s
        .req(
            "PUT",
            &format!("/api/v1/users/{id}"),
            Some(&access),
            json!({"name": "Ada King", "phone": "+447700900123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["name"], "Ada King");
    s.req(
        "PUT",
        &format!("/api/v1/users/{id}"),
        Some(&access),
        json!({"phone": "0800 CALL ME"}),
    )
    .await
    .assert_problem(400, "validation");
    let r = s
        .req(
            "POST",
            &format!("/api/v1/users/{id}/settings"),
            Some(&access),
            json!({"language": "en", "sms": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    s.req(
        "POST",
        &format!("/api/v1/users/{id}/settings"),
        Some(&access),
        json!([1, 2]),
    )
    .await
    .assert_problem(400, "validation");

    // Export, then erasure: the account is gone and its credentials with it.
    let r = s
        .req(
            "GET",
            &format!("/api/v1/users/{id}/export"),
            Some(&access),
            json!(null),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["user"]["settings"]["language"], "en");
    assert_eq!(
        s.req(
            "DELETE",
            &format!("/api/v1/users/{id}"),
            Some(&access),
            json!(null)
        )
        .await
        .status,
        204
    );
    s.req(
        "POST",
        "/api/v1/auth/login",
        None,
        json!({"email": "ada@example.org", "password": "correct horse battery"}),
    )
    .await
    .assert_problem(401, "invalid-credentials");
    s.req("GET", "/api/v1/auth/profile", Some(&access), json!(null))
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn new_user_journey_on_sqlite() {
    new_user_journey(&Server::start(&[])).await;
}

#[tokio::test]
async fn new_user_journey_on_postgres() {
    if let Some(s) = Server::start_postgres(&[]).await {
        new_user_journey(&s).await;
    }
}

#[tokio::test]
async fn bad_requests_get_precise_problems() {
    let s = Server::start(&[]);
    let (_, access, _) = s
        .register_login("grace@example.org", "a long password", "Grace")
        .await;

    // Wrong password and unknown account look the same.
    s.req(
        "POST",
        "/api/v1/auth/login",
        None,
        json!({"email": "grace@example.org", "password": "wrong password"}),
    )
    .await
    .assert_problem(401, "invalid-credentials");
    s.req(
        "POST",
        "/api/v1/auth/login",
        None,
        json!({"email": "nobody@example.org", "password": "wrong password"}),
    )
    .await
    .assert_problem(401, "invalid-credentials");

    // Malformed JSON, wrong shapes, unknown fields, field rules.
    let json_ct = vec![("content-type".to_string(), "application/json".to_string())];
    s.raw(
        "POST",
        "/api/v1/auth/login",
        &json_ct,
        Some(b"{\"email\": ".to_vec()),
    )
    .await
    .assert_problem(400, "malformed-body");
    let r = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"email": 42, "password": "x"}),
        )
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/email");
    s.req(
        "POST",
        "/api/v1/auth/login",
        None,
        json!({"email": "a@b.org", "password": "x", "admin": true}),
    )
    .await
    .assert_problem(400, "validation");
    let r = s
        .req(
            "POST",
            "/api/v1/auth/register",
            None,
            json!({"email": "nope", "password": "short", "name": ""}),
        )
        .await;
    r.assert_problem(400, "validation");
    let pointers: Vec<&str> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/email", "/password", "/name"]);
    let r = s
        .req(
            "POST",
            "/api/v1/auth/register",
            None,
            json!({"email": "x@y.org", "password": "long enough", "name": "X", "role": "admin"}),
        )
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/role");
    s.req(
        "POST",
        "/api/v1/auth/register",
        None,
        json!({"email": "grace@example.org", "password": "another one", "name": "G"}),
    )
    .await
    .assert_problem(409, "conflict");

    // Media type and size.
    let text_ct = vec![("content-type".to_string(), "text/plain".to_string())];
    s.raw(
        "POST",
        "/api/v1/auth/login",
        &text_ct,
        Some(b"hello".to_vec()),
    )
    .await
    .assert_problem(415, "unsupported-media-type");
    let huge = format!(
        "{{\"email\": \"{}\", \"password\": \"x\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    // The server answers 413 as soon as it sees the length and may close the connection while
    // the client is still sending, so a client can lose the answer to a reset; a real client
    // retries, and so does this test. Any answer that does arrive must be the 413 problem.
    let mut answered = false;
    for _ in 0..5 {
        if let Some(r) = s
            .try_raw(
                "POST",
                "/api/v1/auth/login",
                &json_ct,
                Some(huge.clone().into_bytes()),
            )
            .await
        {
            r.assert_problem(413, "payload-too-large");
            assert_eq!(
                r.headers["connection"], "close",
                "an unread body ends the connection"
            );
            answered = true;
            break;
        }
    }
    assert!(answered, "no answer to an oversized body in 5 attempts");

    // Tokens: missing, garbage, expired, signed by someone else.
    s.req("GET", "/api/v1/auth/profile", None, json!(null))
        .await
        .assert_problem(401, "unauthorized");
    s.req("GET", "/api/v1/auth/profile", Some("garbage"), json!(null))
        .await
        .assert_problem(401, "unauthorized");
    let keys = nexus_auth::TokenKeys::new(common::JWT_SECRET.as_bytes(), &[]);
    let mut expired = nexus_auth::Claims::new("someone", 0);
    expired.exp -= 3600;
    let r = s
        .req(
            "GET",
            "/api/v1/auth/profile",
            Some(&keys.mint(&expired).unwrap()),
            json!(null),
        )
        .await;
    r.assert_problem(401, "unauthorized");
    assert!(r.json["detail"].as_str().unwrap().contains("expired"));
    let other = nexus_auth::TokenKeys::new(b"another-secret-another-secret-another", &[]);
    s.req(
        "GET",
        "/api/v1/auth/profile",
        Some(&other.mint(&nexus_auth::Claims::new("x", 60)).unwrap()),
        json!(null),
    )
    .await
    .assert_problem(401, "unauthorized");

    // A role that does not allow the action.
    s.req(
        "PUT",
        "/api/v1/users/someone/roles",
        Some(&access),
        json!({"roles": ["admin"]}),
    )
    .await
    .assert_problem(403, "forbidden");

    // Routing errors are problems too.
    s.req("GET", "/api/v1/no/such/thing", None, json!(null))
        .await
        .assert_problem(404, "not-found");
    let r: Resp = s.req("GET", "/api/v1/auth/login", None, json!(null)).await;
    r.assert_problem(405, "method-not-allowed");
    assert!(r.headers.contains_key("allow"));

    // Nothing above crashed the server.
    assert_eq!(
        s.req("GET", "/healthz", None, json!(null)).await.status,
        200
    );
    assert!(!s.logs().contains("panicked"));
}

#[tokio::test]
async fn e_mail_verification_and_password_reset() {
    let s = Server::start(&[]);
    let (id, _, refresh) = s
        .register_login("joy@clinic.example.org", "first password", "Joy")
        .await;
    let mail_dir = s.dir.path().join("mail");
    let code = |purpose: &str| -> String {
        let mut files: Vec<_> = std::fs::read_dir(&mail_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let file = files
            .iter()
            .rev()
            .find(|p| p.to_string_lossy().contains(purpose))
            .expect("mail written");
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("To: joy@clinic.example.org"));
        text.split_whitespace()
            .find(|w| w.starts_with("nxe_"))
            .unwrap()
            .to_string()
    };
    let verify = code("verify_email");
    assert_eq!(
        s.req(
            "POST",
            "/api/v1/auth/verify-email",
            None,
            json!({"token": verify})
        )
        .await
        .status,
        204
    );
    s.req(
        "POST",
        "/api/v1/auth/verify-email",
        None,
        json!({"token": verify}),
    )
    .await
    .assert_problem(400, "validation");
    let token = s.token(&id, &[Role::Patient], 60);
    assert_eq!(
        s.req("GET", "/api/v1/auth/profile", Some(&token), json!(null))
            .await
            .json["email_verified"],
        true
    );

    // Unknown addresses get the same answer (no account enumeration).
    assert_eq!(
        s.req(
            "POST",
            "/api/v1/auth/forgot-password",
            None,
            json!({"email": "nobody@example.org"})
        )
        .await
        .status,
        202
    );
    assert_eq!(
        s.req(
            "POST",
            "/api/v1/auth/forgot-password",
            None,
            json!({"email": "joy@clinic.example.org"})
        )
        .await
        .status,
        202
    );
    let reset = code("reset_password");
    assert_eq!(
        s.req(
            "POST",
            "/api/v1/auth/reset-password",
            None,
            json!({"token": reset, "password": "second password"})
        )
        .await
        .status,
        204
    );
    // The reset signed out existing sessions and changed the password.
    s.req(
        "POST",
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    )
    .await
    .assert_problem(401, "unauthorized");
    s.req(
        "POST",
        "/api/v1/auth/login",
        None,
        json!({"email": "joy@clinic.example.org", "password": "first password"}),
    )
    .await
    .assert_problem(401, "invalid-credentials");
    assert_eq!(
        s.req(
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"email": "joy@clinic.example.org", "password": "second password"})
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn events_are_written_with_the_change() {
    let s = Server::start(&[]);
    let (id, access, _) = s
        .register_login("eve@example.org", "a long password", "Eve")
        .await;
    assert_eq!(
        s.req(
            "DELETE",
            &format!("/api/v1/users/{id}"),
            Some(&access),
            json!(null)
        )
        .await
        .status,
        204
    );
    let store =
        nexus_store::Store::connect(&format!("sqlite://{}/nexus.db", s.dir.path().display()))
            .await
            .unwrap();
    let events = store.events_for(&id).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["user.registered", "user.deleted"]);
    let ce: serde_json::Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["source"], "/nexus/users");
    assert_eq!(ce["subject"], id.as_str());
    assert_eq!(events[0].topic, "nexus.users");
    // Event data carries ids, not contact details.
    assert!(
        !events
            .iter()
            .any(|e| e.payload.contains("eve@example.org") || e.payload.contains("Eve"))
    );
}
