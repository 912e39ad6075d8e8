//! The outage test: the broker goes away, domain writes keep succeeding, and when it comes
//! back every event arrives exactly once (after deduplication), in per-aggregate order.
//!
//! Runs its own tansu broker on a free port (so stopping it disturbs no other test).

#![allow(clippy::unwrap_used)]

mod common;

use nexus_events::testing::{Recorder, Running, assert_per_key_order};
use nexus_events::{Consumer, Domain, EventBus, EventType, Topics, record};
use nexus_store::{UserPatch, UserRecord};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const USERS: usize = 20;
const WRITES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_duplicates_nothing() {
    let Some(bin) = common::tansu_bin() else {
        return;
    };
    let mut broker = common::Tansu::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let store = nexus_store::testing::sqlite_store(dir.path()).await;
    let bus: Arc<dyn EventBus> = Arc::new(common::bus(&store, common::settings(&broker.addr)));
    let relay = Running::relay(&store, bus.clone());
    let rec = Recorder::new();
    let consumer = Running::consumer(
        bus.clone(),
        Consumer::new("outage", [Topics::logical(Domain::Users)], rec.clone()),
    );

    // Warm-up with the broker up: USERS registrations reach the consumer.
    let ids: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
    let mut all = HashSet::new();
    for id in &ids {
        let user = UserRecord::new(
            id,
            format!("{id}@example.org"),
            "T",
            "$argon2id$x",
            vec![],
            1,
        );
        let ev = record(EventType::UserRegistered, id, json!({ "id": id, "n": 0 })).unwrap();
        all.insert(ev.id.clone());
        store.create_user(&user, &[ev]).await.unwrap();
    }
    assert!(
        rec.wait_until(Duration::from_secs(60), |s| s.len() >= USERS)
            .await,
        "warm-up events did not arrive: {}",
        rec.seen().len()
    );

    // Outage: every domain write still commits, with its event, into the outbox.
    broker.stop();
    for i in 0..WRITES {
        let id = &ids[i % USERS];
        let n = i / USERS + 1;
        let ev = record(EventType::UserUpdated, id, json!({ "id": id, "n": n })).unwrap();
        all.insert(ev.id.clone());
        let patch = UserPatch {
            name: Some(format!("name {n}")),
            phone: None,
        };
        let updated = store.update_user(id, &patch, &[ev]).await.unwrap();
        assert!(updated.is_some());
    }
    let (pending, _) = store.outbox_lag().await.unwrap();
    assert_eq!(
        pending, WRITES as i64,
        "nothing can be sent while the broker is down"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // the relay fails and backs off

    // The broker returns, empty (memory storage): producers reconnect, consumers start over.
    broker.restart();
    let ok = rec
        .wait_until(Duration::from_secs(120), |s| {
            s.iter().map(|e| &e.id).collect::<HashSet<_>>().len() >= all.len()
        })
        .await;
    let seen = rec.seen();
    let (pending, _) = store.outbox_lag().await.unwrap();
    assert!(
        ok,
        "only {} of {} events arrived ({pending} still in the outbox)",
        seen.len(),
        all.len()
    );
    let distinct = assert_per_key_order(&seen);
    assert_eq!(distinct, all);
    assert_eq!(seen.len(), all.len(), "the handler saw a duplicate");
    assert_eq!(pending, 0);
    consumer.stop().await;
    relay.stop().await;
}
