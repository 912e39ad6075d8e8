//! The platform around the API: CLI, configuration, RBAC matrix, limits, observability,

#![allow(clippy::unwrap_used)]
//! OpenAPI, TLS and shutdown.

mod common;

use common::{Server, run_cli};
use nexus_auth::Role;
use serde_json::json;

#[test]
fn cli_contract_exit_codes_help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(dir.path(), &["--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "migrate", "config", "token", "admin", "apikey"] {
        assert!(help.contains(cmd), "{help}");
    }
    let out = run_cli(dir.path(), &["--version"], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nexus "));
    assert_eq!(
        run_cli(dir.path(), &["frobnicate"], None).status.code(),
        Some(2)
    );
    assert_eq!(
        run_cli(dir.path(), &["token"], None).status.code(),
        Some(2),
        "missing --sub is bad usage"
    );
    assert_eq!(
        run_cli(dir.path(), &["token", "--sub", "u", "--role", "king"], None)
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn token_prints_one_verifiable_jwt_with_the_requested_claims() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(
        dir.path(),
        &[
            "token",
            "--sub",
            "dr-who",
            "--role",
            "provider",
            "--role",
            "admin",
            "--room",
            "consult-7",
            "--room-kind",
            "consultation",
            "--grants",
            "publish,subscribe,admin",
            "--channels",
            "incidents,consult:7",
            "--ttl",
            "120",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.ends_with('\n'));
    let keys = nexus_auth::TokenKeys::new(common::JWT_SECRET.as_bytes(), &[]);
    let claims = keys.verify(stdout.trim()).unwrap();
    assert_eq!(claims.sub, "dr-who");
    assert_eq!(claims.roles, vec![Role::Provider, Role::Admin]);
    assert!(claims.has_grant("consult-7", nexus_auth::Grant::Admin));
    assert_eq!(claims.channels.unwrap(), vec!["incidents", "consult:7"]);
    assert!(claims.exp - claims.iat == 120);
}

#[test]
fn generated_secret_is_shared_by_token_and_kept_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mint = || {
        let out = std::process::Command::new(common::nexus_bin())
            .args(["token", "--sub", "u"])
            .env_clear()
            .env("NEXUS_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b) = (mint(), mint());
    let secret = std::fs::read_to_string(dir.path().join("jwt-secret")).unwrap();
    let keys = nexus_auth::TokenKeys::new(secret.trim().as_bytes(), &[]);
    assert!(keys.verify(a.trim()).is_ok() && keys.verify(b.trim()).is_ok());
}

#[test]
fn config_check_redacts_secrets_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::nexus_bin())
        .args(["config", "check"])
        .env_clear()
        .env("NEXUS_JWT_SECRET", "super-secret-value-super-secret-value")
        .env(
            "NEXUS_DATABASE_URL",
            "postgres://nexus:hunter2@db:5432/nexus",
        )
        .env("NEXUS_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Table = text.parse().expect("valid TOML");
    assert_eq!(parsed["http_addr"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(parsed["jwt"]["secret"].as_str(), Some("<redacted>"));
    assert!(
        !text.contains("super-secret-value") && !text.contains("hunter2"),
        "{text}"
    );

    let bad = std::process::Command::new(common::nexus_bin())
        .args(["config", "check"])
        .env_clear()
        .env("NEXUS_SFU_UDP_ADR", "x")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NEXUS_SFU_UDP_ADR"));
    let file = dir.path().join("n.toml");
    std::fs::write(&file, "[rate_limit]\nper_ipp = 3\n").unwrap();
    let bad = run_cli(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("per_ipp"));
}

#[tokio::test]
async fn admin_bootstrap_api_keys_and_the_rbac_matrix() {
    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "0"),
        ("NEXUS_RATE_LIMIT_PER_USER", "0"),
    ]);
    let out = s.cli(
        &[
            "admin",
            "create",
            "--email",
            "root@example.org",
            "--password-stdin",
        ],
        Some("root password!\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"email": "root@example.org", "password": "root password!"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let admin = r.json["access_token"].as_str().unwrap().to_string();
    let me = s
        .req("GET", "/api/v1/auth/profile", Some(&admin), json!(null))
        .await;
    assert_eq!(me.json["roles"], json!(["admin"]));

    // API keys: from the CLI and from the API; an admin key acts as admin, a gateway key does not.
    let out = s.cli(
        &["apikey", "create", "--name", "ops", "--scope", "admin"],
        None,
    );
    assert!(out.status.success());
    let admin_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = s
        .req(
            "POST",
            "/api/v1/admin/api-keys",
            Some(&admin),
            json!({"name": "relay", "scope": "gateway"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let gateway_key = r.json["key"].as_str().unwrap().to_string();
    let key_id = r.json["id"].as_str().unwrap().to_string();

    // The matrix: every role against every guarded endpoint, on someone else's account.
    let (victim, _, _) = s
        .register_login("victim@example.org", "victim password", "Victim")
        .await;
    for role in Role::ALL {
        let token = s.token(&format!("caller-{role}"), &[role], 300);
        let allowed = role == Role::Admin;
        let cases: Vec<(&str, String, serde_json::Value)> = vec![
            ("GET", format!("/api/v1/users/{victim}"), json!(null)),
            (
                "PUT",
                format!("/api/v1/users/{victim}"),
                json!({"name": "Renamed"}),
            ),
            (
                "POST",
                format!("/api/v1/users/{victim}/settings"),
                json!({"k": 1}),
            ),
            ("GET", format!("/api/v1/users/{victim}/export"), json!(null)),
            (
                "PUT",
                format!("/api/v1/users/{victim}/roles"),
                json!({"roles": ["patient"]}),
            ),
            (
                "POST",
                "/api/v1/admin/api-keys".to_string(),
                json!({"name": "k"}),
            ),
        ];
        for (method, path, body) in cases {
            let r = s.req(method, &path, Some(&token), body).await;
            if allowed {
                assert!(
                    r.status < 300,
                    "{role} {method} {path}: {} {}",
                    r.status,
                    r.json
                );
            } else {
                r.assert_problem(403, "forbidden");
            }
        }
        // Everyone may act on their own account.
        let own = s
            .req(
                "GET",
                &format!("/api/v1/users/caller-{role}"),
                Some(&token),
                json!(null),
            )
            .await;
        assert_eq!(
            own.status, 404,
            "{role}: own account passes RBAC, then is not found"
        );
    }

    let with_key = |key: &str| vec![("x-api-key".to_string(), key.to_string())];
    assert_eq!(
        s.raw(
            "GET",
            &format!("/api/v1/users/{victim}"),
            &with_key(&admin_key),
            None
        )
        .await
        .status,
        200
    );
    s.raw(
        "GET",
        &format!("/api/v1/users/{victim}"),
        &with_key(&gateway_key),
        None,
    )
    .await
    .assert_problem(403, "forbidden");
    s.raw(
        "GET",
        &format!("/api/v1/users/{victim}"),
        &with_key("nxk_wrong"),
        None,
    )
    .await
    .assert_problem(401, "unauthorized");
    assert_eq!(
        s.req(
            "DELETE",
            &format!("/api/v1/admin/api-keys/{key_id}"),
            Some(&admin),
            json!(null)
        )
        .await
        .status,
        204
    );
    s.raw(
        "GET",
        &format!("/api/v1/users/{victim}"),
        &with_key(&gateway_key),
        None,
    )
    .await
    .assert_problem(401, "unauthorized");

    // Role changes by an admin take effect and end the user's sessions.
    let r = s
        .req(
            "PUT",
            &format!("/api/v1/users/{victim}/roles"),
            Some(&admin),
            json!({"roles": ["provider", "teacher"]}),
        )
        .await;
    assert_eq!(r.json["roles"], json!(["provider", "teacher"]));
    s.req(
        "PUT",
        &format!("/api/v1/users/{victim}/roles"),
        Some(&admin),
        json!({"roles": ["emperor"]}),
    )
    .await
    .assert_problem(400, "validation");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_ip_and_per_user() {
    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "1"),
        ("NEXUS_RATE_LIMIT_PER_IP_BURST", "3"),
    ]);
    let mut statuses = vec![];
    for _ in 0..5 {
        statuses.push(
            s.req("GET", "/api/v1/auth/profile", None, json!(null))
                .await,
        );
    }
    assert!(statuses[..3].iter().all(|r| r.status == 401));
    let limited = &statuses[4];
    limited.assert_problem(429, "rate-limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    // Health checks are never limited.
    assert_eq!(
        s.req("GET", "/healthz", None, json!(null)).await.status,
        200
    );

    let s = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_USER", "1"),
        ("NEXUS_RATE_LIMIT_PER_USER_BURST", "2"),
    ]);
    let alice = s.token("alice", &[Role::Patient], 60);
    let bob = s.token("bob", &[Role::Patient], 60);
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            s.req("GET", "/api/v1/users/alice", Some(&alice), json!(null))
                .await,
        );
    }
    last.unwrap().assert_problem(429, "rate-limited");
    assert_eq!(
        s.req("GET", "/api/v1/users/bob", Some(&bob), json!(null))
            .await
            .status,
        404,
        "bob has his own budget"
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let xff = |ip: &str| vec![("x-forwarded-for".to_string(), ip.to_string())];
    let trusted = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "1"),
        ("NEXUS_RATE_LIMIT_PER_IP_BURST", "1"),
        ("NEXUS_TRUSTED_PROXIES", "127.0.0.1/32"),
    ]);
    for i in 0..5 {
        let r = trusted
            .raw(
                "GET",
                "/api/v1/auth/profile",
                &xff(&format!("203.0.113.{i}")),
                None,
            )
            .await;
        assert_eq!(r.status, 401, "each forwarded client has its own budget");
    }
    let untrusted = Server::start(&[
        ("NEXUS_RATE_LIMIT_PER_IP", "1"),
        ("NEXUS_RATE_LIMIT_PER_IP_BURST", "1"),
    ]);
    let mut codes = vec![];
    for i in 0..3 {
        codes.push(
            untrusted
                .raw(
                    "GET",
                    "/api/v1/auth/profile",
                    &xff(&format!("203.0.113.{i}")),
                    None,
                )
                .await
                .status,
        );
    }
    assert_eq!(
        codes,
        [401, 429, 429],
        "a spoofed header from an untrusted peer changes nothing"
    );
}

#[tokio::test]
async fn health_metrics_request_ids_cors_and_openapi() {
    let s = Server::start(&[]);
    assert_eq!(
        s.req("GET", "/healthz", None, json!(null)).await.status,
        200
    );
    let ready = s.req("GET", "/readyz", None, json!(null)).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json["checks"]["store"], "ok");
    let r = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            json!({"email": "x@y.org", "password": "nope nope"}),
        )
        .await;
    assert!(r.headers.contains_key("x-request-id"));
    let given = vec![("x-request-id".to_string(), "trace-me-123".to_string())];
    assert_eq!(
        s.raw("GET", "/healthz", &given, None).await.headers["x-request-id"],
        "trace-me-123"
    );
    let preflight = vec![
        ("origin".to_string(), "https://app.example.org".to_string()),
        (
            "access-control-request-method".to_string(),
            "POST".to_string(),
        ),
    ];
    let r = s
        .raw("OPTIONS", "/api/v1/auth/login", &preflight, None)
        .await;
    assert!(r.status < 300);
    assert_eq!(r.headers["access-control-allow-origin"], "*");

    let metrics = String::from_utf8(
        s.req("GET", "/metrics", None, json!(null))
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains(
            r#"nexus_http_requests_total{method="POST",route="/api/v1/auth/login",status="401"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("nexus_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("process_resident_memory_bytes"));

    // The OpenAPI document is 3.1, and every operation it lists is routed (never the 404
    // fallback or a 405).
    let doc = s
        .req("GET", "/api/v1/openapi.json", None, json!(null))
        .await
        .json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(
        doc["components"]["schemas"]["Problem"]["description"]
            .as_str()
            .unwrap()
            .contains("/problems/validation")
    );
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let concrete = fill_path_params(path);
            let r = s.raw(&method.to_uppercase(), &concrete, &[], None).await;
            let documents_405 = item[method]["responses"].get("405").is_some();
            assert!(
                r.status != 405 || documents_405,
                "{method} {path} documented but not routed"
            );
            assert!(
                !(r.status == 404 && r.json["detail"] == "no such route"),
                "{method} {path} documented but not routed"
            );
        }
    }
    assert!(operations >= 29, "{operations}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let mut s = Server::start(&[("NEXUS_RATE_LIMIT_PER_IP", "0")]);
    let base = std::sync::Arc::new(s.base.clone());
    // Registrations take tens of milliseconds (argon2id): start several, then SIGTERM.
    let mut tasks = vec![];
    for i in 0..6 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            let body = json!({"email": format!("u{i}@example.org"), "password": "a long password", "name": "U"}).to_string();
            let req = hyper::Request::post(format!("{base}/api/v1/auth/register"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                .unwrap();
            client.request(req).await.map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, log, dir) = tokio::task::spawn_blocking(move || {
        let st = s.terminate();
        let log = s.logs();
        let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
        (st, log, dir)
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}; log: {log}");
    // What the server took on, it finished: a request that failed never created its
    // account. (A connection the kernel had queued but the server had not accepted yet is
    // reset when the listener closes — on a loaded machine that can be any of them; the
    // client retries it, and nothing was done.)
    let store = nexus_store::testing::sqlite_store(dir.path()).await;
    let mut finished = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let created = store
            .user_by_email(&format!("u{i}@example.org"))
            .await
            .unwrap()
            .is_some();
        match t.await.unwrap() {
            Ok(code) => {
                assert_eq!(code, 201, "an accepted request was finished, not dropped");
                assert!(created);
                finished += 1;
            }
            Err(e) => assert!(
                !created,
                "request {i} was carried out but its answer was lost: {e}"
            ),
        }
    }
    assert!(log.contains("draining"));
    assert!(
        finished > 0,
        "no registration was in flight at SIGTERM: {log}"
    );
}

#[tokio::test]
async fn https_when_certificate_and_key_are_configured() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
        || std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_err()
    {
        assert!(
            !nexus_store::testing::engines_required(),
            "openssl and curl are needed for the TLS test"
        );
        eprintln!("note: openssl or curl missing; skipping the TLS test");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let s = Server::start(&[
        ("NEXUS_TLS_CERT", cert.to_str().unwrap()),
        ("NEXUS_TLS_KEY", key.to_str().unwrap()),
    ]);
    assert!(s.logs().contains("\"scheme\":\"https\""));
    let url = s.base.replace("http://", "https://") + "/healthz";
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cert)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"status":"ok"}"#);
    let plain = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(s.base.clone() + "/healthz")
        .output()
        .unwrap();
    assert!(
        !plain.status.success() || !String::from_utf8_lossy(&plain.stdout).contains("ok"),
        "plain HTTP must not be served"
    );
}

/// `/users/{id}/export` → `/users/x/export` (the gateway's `{method}` becomes `info`).
fn fill_path_params(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str(if &rest[open..close] == "{method}" {
            "info"
        } else {
            "x"
        });
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}
