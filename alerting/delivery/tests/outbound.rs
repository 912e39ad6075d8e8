//! The outbound guard against real local servers: loopback is refused by IP literal, by
//! name (after DNS resolution) and on a redirect from an allowed host; an allowed network
//! is reached; bodies over the limit are cut off.

#![allow(clippy::unwrap_used)]

use nexus_alert_delivery::FetchError;
use nexus_alert_delivery::outbound::{OutboundPolicy, fetch};
use reqwest::Url;
use std::net::SocketAddr;
use std::time::Duration;

/// Serves `/ok` (a small body), `/big` (2 MiB) and `/hop?to=URL` (a 302 to `URL`) on `ip`.
async fn serve(ip: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let resp = axum::http::Response::builder();
        match uri.path() {
            "/ok" => resp.body(axum::body::Body::from("hello")).unwrap(),
            "/big" => resp
                .body(axum::body::Body::from(vec![b'x'; 2 << 20]))
                .unwrap(),
            "/hop" => {
                let to = uri
                    .query()
                    .unwrap_or("")
                    .trim_start_matches("to=")
                    .to_string();
                resp.status(302)
                    .header("location", to)
                    .body(axum::body::Body::empty())
                    .unwrap()
            }
            _ => resp.status(404).body(axum::body::Body::empty()).unwrap(),
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn get(policy: &OutboundPolicy, url: &str) -> Result<Vec<u8>, FetchError> {
    let client = policy.client(Duration::from_secs(5)).unwrap();
    fetch(&client, policy, &Url::parse(url).unwrap(), &[], 1 << 20)
        .await
        .map(|f| f.body)
}

#[tokio::test]
async fn loopback_is_refused_by_literal_and_by_name_unless_allowed() {
    let addr = serve("127.0.0.1").await;
    let strict = OutboundPolicy::default();
    let by_ip = get(&strict, &format!("http://{addr}/ok")).await;
    assert!(matches!(by_ip, Err(FetchError::Refused(_))), "{by_ip:?}");
    let by_name = get(&strict, &format!("http://localhost:{}/ok", addr.port())).await;
    match by_name {
        Err(FetchError::Refused(why)) => assert!(why.contains("localhost resolves to"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let allowed = OutboundPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()]);
    assert_eq!(
        get(&allowed, &format!("http://{addr}/ok")).await.unwrap(),
        b"hello"
    );
    assert_eq!(
        get(&allowed, &format!("http://localhost:{}/ok", addr.port()))
            .await
            .unwrap_or_default(),
        b"hello"
    );
}

#[tokio::test]
async fn a_redirect_into_a_refused_network_is_refused() {
    // 127.0.0.1 is allowed; 127.0.0.2 (also loopback on Linux) is not.
    let allowed_host = serve("127.0.0.1").await;
    let target = serve("127.0.0.2").await;
    let policy = OutboundPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()]);
    let direct = get(&policy, &format!("http://{target}/ok")).await;
    assert!(matches!(direct, Err(FetchError::Refused(_))), "{direct:?}");
    let via = get(
        &policy,
        &format!("http://{allowed_host}/hop?to=http://{target}/ok"),
    )
    .await;
    assert!(matches!(via, Err(FetchError::Refused(_))), "{via:?}");
    // A redirect inside the allowed network is followed.
    let inside = get(
        &policy,
        &format!("http://{allowed_host}/hop?to=http://{allowed_host}/ok"),
    )
    .await;
    assert_eq!(inside.unwrap(), b"hello");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let addr = serve("127.0.0.1").await;
    let policy = OutboundPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
    let big = get(&policy, &format!("http://{addr}/big")).await;
    assert!(
        matches!(big, Err(FetchError::TooLarge { limit }) if limit == 1 << 20),
        "{big:?}"
    );
    let missing = get(&policy, &format!("http://{addr}/nope")).await;
    assert!(
        matches!(missing, Err(FetchError::Status { status: 404 })),
        "{missing:?}"
    );
}
