//! The event backbone in the real binary: a crash of `nexus` while the relay is publishing
//! loses nothing.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use std::time::{Duration, Instant};

const REALTIME_CORE: &str = "realtime-core";
const EVENTS: usize = 30_000;

/// SIGKILL `nexus` mid-publish; after a restart every event is published and handled by the
/// real-time core's consumer, none dead-lettered, and the lag gauge reads 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_the_relay_publishes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = nexus_store::testing::sqlite_store(dir.path()).await;
    // A backlog the relay needs a while to publish (as after an outage).
    let mut ids = Vec::with_capacity(EVENTS);
    for chunk in 0..EVENTS / 1000 {
        let events: Vec<_> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                nexus_events::record(
                    nexus_events::EventType::IncidentReported,
                    &format!("inc-{}", n % 50),
                    serde_json::json!({ "n": n }),
                )
                .unwrap()
            })
            .collect();
        ids.extend(events.iter().map(|e| e.id.clone()));
        store.append_events(&events).await.unwrap();
    }

    let mut server = Server::start_in(dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (pending, handled) = loop {
        let (pending, _) = store.outbox_lag().await.unwrap();
        let handled = store.consumer_processed_count(REALTIME_CORE).await.unwrap();
        if pending < EVENTS as i64 || handled > 0 {
            break (pending, handled);
        }
        assert!(Instant::now() < deadline, "the relay never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // SIGKILL (the harness kills on drop); keep the data dir.
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    drop(server);
    assert!(
        pending > 0 || handled < EVENTS as i64,
        "killed too late to be mid-publish"
    );
    eprintln!("killed with {pending} pending and {handled} handled");

    let server = Server::start_in(dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (pending, _) = store.outbox_lag().await.unwrap();
        let handled = store.consumer_processed_count(REALTIME_CORE).await.unwrap();
        if pending == 0 && handled == EVENTS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart: {pending} pending, {handled} of {EVENTS} handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ids.iter().step_by(997) {
        assert!(
            store
                .consumer_is_processed(REALTIME_CORE, id)
                .await
                .unwrap(),
            "{id} missing"
        );
    }
    assert!(store.dead_letters(REALTIME_CORE).await.unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = server
            .req("GET", "/metrics", None, serde_json::Value::Null)
            .await;
        let body = String::from_utf8_lossy(&metrics.body).to_string();
        if body.contains("nexus_outbox_pending_events 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag gauge never reached 0:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
