//! The connection handler driven through in-memory `Sink`/`Stream`s: no socket, virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{sink, stream};
use nexus_auth::{Claims, TokenKeys};
use nexus_gateway::{Gateway, GatewayConfig, Incoming, MemoryEngine, NamespaceConfig, Outgoing};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

const SECRET: &[u8] = b"sans-io-secret-sans-io-secret-sans!";

fn gateway(cfg: GatewayConfig) -> (Gateway, TokenKeys) {
    let keys = TokenKeys::new(SECRET, &[]);
    (
        Gateway::new(cfg, keys.clone(), MemoryEngine::new()).unwrap(),
        keys,
    )
}

fn hello(keys: &TokenKeys, user: &str) -> Incoming {
    let token = keys.mint(&Claims::new(user, 600)).unwrap();
    Incoming::Text(format!(
        "{}\n{}",
        json!({"id": 1, "connect": {"token": token}}),
        json!({"id": 2, "subscribe": {"channel": "feed"}})
    ))
}

/// A client whose socket accepts `accept` frames and then never drains again.
fn stalled_after(accept: usize) -> impl futures_util::Sink<Outgoing, Error = Infallible> + Unpin {
    let seen = Arc::new(AtomicUsize::new(0));
    Box::pin(sink::unfold(seen, move |seen, _m: Outgoing| async move {
        if seen.fetch_add(1, Ordering::SeqCst) >= accept {
            std::future::pending::<()>().await;
        }
        Ok::<_, Infallible>(seen)
    }))
}

fn script(
    first: Incoming,
) -> impl futures_util::Stream<Item = Result<Incoming, Infallible>> + Unpin {
    // Sends `first`, then stays open without sending anything else.
    Box::pin(stream::unfold(Some(first), |m| async move {
        match m {
            Some(m) => Some((Ok(m), None)),
            None => std::future::pending().await,
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_stalled_socket_ends_with_slow_and_the_publisher_never_waits() {
    let cfg = GatewayConfig {
        client_queue_max_messages: 16,
        close_timeout_secs: 1,
        namespaces: vec![NamespaceConfig::new("feed")],
        ..GatewayConfig::default()
    };
    let (gw, keys) = gateway(cfg);

    let stalled = tokio::spawn({
        let gw = gw.clone();
        let hello = hello(&keys, "slow");
        async move { gw.serve_connection(stalled_after(1), script(hello)).await }
    });
    // A healthy connection on the same channel.
    let (tx, mut rx) = mpsc::channel::<Outgoing>(1024);
    let healthy_sink = Box::pin(sink::unfold(tx, |tx, m: Outgoing| async move {
        tx.send(m).await.map(|()| tx)
    }));
    let healthy = tokio::spawn({
        let gw = gw.clone();
        let hello = hello(&keys, "fast");
        async move { gw.serve_connection(healthy_sink, script(hello)).await }
    });
    while gw.stats().subscriptions < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;

    for n in 0..100 {
        gw.publish("feed", json!({ "n": n })).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), stalled)
        .await
        .expect("the stalled connection ends")
        .unwrap();
    let stats = gw.stats();
    assert_eq!(stats.slow_disconnects, 1);
    assert_eq!(stats.queue_overflows, 1);
    assert!(stats.disconnects.contains(&(3008, 1)));

    let mut seen = 0;
    while seen < 100 {
        let Some(Outgoing::Text(frame)) = rx.recv().await else {
            panic!("healthy closed")
        };
        seen += std::str::from_utf8(&frame)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"pub\""))
            .count();
    }
    assert_eq!(gw.stats().connections, 1);
    gw.shutdown().await;
    healthy.await.unwrap();
    // Every publication written to the healthy socket was timed from its publish call.
    let latency = gw.stats().publish_write;
    assert!(latency.count >= 100, "{latency:?}");
    assert!(
        latency
            .buckets
            .last()
            .is_some_and(|&(_, n)| n == latency.count)
    );
    let mut last = None;
    while let Ok(m) = rx.try_recv() {
        last = Some(m);
    }
    assert_eq!(
        last,
        Some(Outgoing::Close {
            code: 3001,
            reason: "shutdown".into()
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_says_connect_goes_stale() {
    let (gw, _) = gateway(GatewayConfig::default());
    let (tx, mut rx) = mpsc::channel::<Outgoing>(8);
    let out = Box::pin(sink::unfold(tx, |tx, m: Outgoing| async move {
        tx.send(m).await.map(|()| tx)
    }));
    let silent = Box::pin(stream::pending::<Result<Incoming, Infallible>>());
    gw.serve_connection(out, silent).await;
    assert_eq!(
        rx.recv().await,
        Some(Outgoing::Close {
            code: 3502,
            reason: "stale".into()
        })
    );
}
