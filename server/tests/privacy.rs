//! Personal data never reaches the logs: a full account flow at debug level (an alert
//! subscription and its device's location included), and the log is
//! searched for every identifying value the flow used.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn no_personal_data_in_logs_during_a_full_account_flow() {
    let s = Server::start(&[
        ("NEXUS_LOG", "debug"),
        ("NEXUS_TRUSTED_PROXIES", "127.0.0.1/32"),
    ]);
    let email = "florence.nightingale@example.org";
    let name = "Florence Nightingale";
    let phone = "+447700900461";
    let client_ip = "198.51.100.77";
    let password = "lady with the lamp";
    let hdr = |token: Option<&str>| {
        let mut h = vec![
            ("x-forwarded-for".to_string(), client_ip.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        if let Some(t) = token {
            h.push(("authorization".to_string(), format!("Bearer {t}")));
        }
        h
    };
    let body = |v: serde_json::Value| Some(v.to_string().into_bytes());
    let r = s
        .raw(
            "POST",
            "/api/v1/auth/register",
            &hdr(None),
            body(json!({"email": email, "password": password, "name": name})),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = r.json["id"].as_str().unwrap().to_string();
    s.raw(
        "POST",
        "/api/v1/auth/login",
        &hdr(None),
        body(json!({"email": email, "password": "wrong password"})),
    )
    .await;
    let r = s
        .raw(
            "POST",
            "/api/v1/auth/login",
            &hdr(None),
            body(json!({"email": email, "password": password})),
        )
        .await;
    let access = r.json["access_token"].as_str().unwrap().to_string();
    let refresh = r.json["refresh_token"].as_str().unwrap().to_string();
    s.raw("GET", "/api/v1/auth/profile", &hdr(Some(&access)), None)
        .await;
    s.raw(
        "PUT",
        &format!("/api/v1/users/{id}"),
        &hdr(Some(&access)),
        body(json!({"phone": phone})),
    )
    .await;
    // An alert subscription, and her phone reporting where it is.
    let r = s
        .raw(
            "POST",
            "/api/v1/alerts/subscriptions",
            &hdr(Some(&access)),
            body(json!({"location": {"lat": 51.234567, "lon": -1.345678}, "phone": phone})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let subscription = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .raw(
            "PUT",
            &format!("/api/v1/alerts/subscriptions/{subscription}/location"),
            &hdr(Some(&access)),
            body(json!({"lat": 51.765432, "lon": -1.876543})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    s.raw(
        "POST",
        "/api/v1/auth/forgot-password",
        &hdr(None),
        body(json!({"email": email})),
    )
    .await;
    let r = s
        .raw(
            "POST",
            "/api/v1/auth/refresh",
            &hdr(None),
            body(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(r.status, 200);
    s.raw(
        "POST",
        "/api/v1/auth/refresh",
        &hdr(None),
        body(json!({"refresh_token": refresh})),
    )
    .await;
    s.raw(
        "POST",
        "/api/v1/auth/logout",
        &hdr(None),
        body(json!({"refresh_token": refresh})),
    )
    .await;
    s.raw(
        "GET",
        &format!("/api/v1/users/{id}/export"),
        &hdr(Some(&access)),
        None,
    )
    .await;
    s.raw(
        "DELETE",
        &format!("/api/v1/users/{id}"),
        &hdr(Some(&access)),
        None,
    )
    .await;

    // Erased with the account: the subscription, its addresses and the device's position.
    let store =
        nexus_store::Store::connect(&format!("sqlite://{}/nexus.db", s.dir.path().display()))
            .await
            .unwrap();
    assert!(store.subscription(&subscription).await.unwrap().is_none());
    store.close().await;

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = s.logs();
    assert!(log.contains(&id), "the log should still name users by id");
    assert!(log.contains("user registered") && log.contains("login"));
    for secret in [
        email,
        "florence",
        "Nightingale",
        phone,
        "7700900461",
        client_ip,
        password,
        &access,
        &refresh,
        "51.234567",
        "1.345678",
        "51.765432",
        "1.876543",
    ] {
        assert!(
            !log.to_lowercase().contains(&secret.to_lowercase()),
            "log leaks `{secret}`:\n{}",
            log.lines()
                .filter(|l| l.to_lowercase().contains(&secret.to_lowercase()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
