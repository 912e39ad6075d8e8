//! The bus conformance suite: the same scenarios run on every [`EventBus`] implementation
//! (the in-process bus on SQLite and PostgreSQL here, Kafka in `nexus-kafka`'s tests).
//!
//! Each scenario gets a migrated [`Store`] and a bus over it, starts a [`Relay`], writes
//! events through the outbox and checks what a consumer saw. Consumer names are unique per
//! call so scenarios can share a broker. Only for tests: it panics on failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{
    CloudEvent, Consumer, Domain, EventBus, EventType, Handler, HandlerError, Relay, RelayConfig,
    RetryPolicy, Topics, record, spawn_consumer,
};
use nexus_store::{NewEvent, Store};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a scenario waits for deliveries (Kafka group joins take seconds).
pub const WAIT: Duration = Duration::from_secs(60);

/// A handler that records what it sees and fails on events whose data has `"poison": true`.
#[derive(Default)]
pub struct Recorder {
    seen: Mutex<Vec<CloudEvent>>,
    poison_attempts: Mutex<u32>,
    changed: Notify,
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// Everything handled so far, in handling order.
    pub fn seen(&self) -> Vec<CloudEvent> {
        self.seen.lock().unwrap().clone()
    }

    /// How many times a poison event was attempted.
    pub fn poison_attempts(&self) -> u32 {
        *self.poison_attempts.lock().unwrap()
    }

    /// Waits until `done(seen)` holds; false after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[CloudEvent]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if done(&self.seen.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.seen.lock().unwrap());
            }
        }
    }
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        if event.data["poison"] == json!(true) {
            *self.poison_attempts.lock().unwrap() += 1;
            return Err(HandlerError::Transient(
                "poison event: cannot be handled".into(),
            ));
        }
        self.seen.lock().unwrap().push(event.clone());
        self.changed.notify_waiters();
        Ok(())
    }
}

/// A running relay for a scenario.
pub struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a relay from `store` to `bus` with fast polling.
    pub fn relay(store: &Store, bus: Arc<dyn EventBus>) -> Running {
        let shutdown = CancellationToken::new();
        let config = RelayConfig {
            idle_poll: Duration::from_millis(5),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            ..RelayConfig::default()
        };
        let relay = Relay::with_config(store.clone(), bus, config);
        let task = tokio::spawn(relay.run(shutdown.clone()));
        Running { shutdown, task }
    }

    /// Starts `consumer` on `bus`.
    pub fn consumer(bus: Arc<dyn EventBus>, consumer: Consumer) -> Running {
        let shutdown = CancellationToken::new();
        let task = spawn_consumer(bus, consumer, shutdown.clone());
        Running { shutdown, task }
    }

    /// Stops cleanly and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A unique consumer name.
pub fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// An event about `key` carrying sequence number `n`.
pub fn numbered(key: &str, n: usize) -> NewEvent {
    record(EventType::UserUpdated, key, json!({ "n": n })).unwrap()
}

fn users() -> Vec<String> {
    vec![Topics::logical(Domain::Users)]
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

/// Asserts that for every key the `n`s arrive in increasing order, after dropping
/// duplicates (by event id), and returns the distinct ids.
pub fn assert_per_key_order(seen: &[CloudEvent]) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in seen {
        if !ids.insert(e.id.clone()) {
            continue;
        }
        let n = e.data["n"].as_i64().expect("numbered event");
        let prev = last.insert(e.key().to_string(), n);
        if let Some(p) = prev {
            assert!(p < n, "key {}: {n} arrived after {p}", e.key());
        }
    }
    ids
}

/// Events of several aggregates, interleaved, arrive in per-aggregate order.
pub async fn ordering_per_key(store: Store, bus: Arc<dyn EventBus>) {
    let relay = Running::relay(&store, bus.clone());
    let rec = Recorder::new();
    let consumer = Running::consumer(
        bus.clone(),
        Consumer::new(unique("order"), users(), rec.clone()),
    );
    let keys: Vec<String> = (0..5).map(|_| unique("agg")).collect();
    let mut all = HashSet::new();
    for n in 0..40 {
        // Some writes carry several events, some one: both keep order.
        let batch: Vec<NewEvent> = keys.iter().map(|k| numbered(k, n)).collect();
        all.extend(batch.iter().map(|e| e.id.clone()));
        if n % 2 == 0 {
            store.append_events(&batch).await.unwrap();
        } else {
            for e in batch {
                store.append_events(&[e]).await.unwrap();
            }
        }
    }
    let ok = rec
        .wait_until(WAIT, |s| {
            s.iter().map(|e| &e.id).collect::<HashSet<_>>().len() >= all.len()
        })
        .await;
    let seen = rec.seen();
    assert!(ok, "got {} of {} events", seen.len(), all.len());
    let ids = assert_per_key_order(&seen);
    assert_eq!(ids, all);
    consumer.stop().await;
    relay.stop().await;
}

/// A consumer stopped part way and restarted under the same name gets every event at least
/// once (and, thanks to processed ids, hands each to its handler once).
pub async fn at_least_once_across_restart(store: Store, bus: Arc<dyn EventBus>) {
    let relay = Running::relay(&store, bus.clone());
    let name = unique("restart");
    let key = unique("agg");
    let first = Recorder::new();
    let consumer = Running::consumer(bus.clone(), Consumer::new(&name, users(), first.clone()));
    let mut all = Vec::new();
    for n in 0..40 {
        let e = numbered(&key, n);
        all.push(e.id.clone());
        store.append_events(&[e]).await.unwrap();
    }
    assert!(
        first.wait_until(WAIT, |s| s.len() >= 10).await,
        "first consumer got nothing"
    );
    // Stopped part way (a process crash is covered by the server's SIGKILL test: aborting a
    // task inside a SQLite transaction is not a faithful crash, it can leave the write lock
    // held by the pooled connection).
    consumer.stop().await;
    for n in 40..80 {
        let e = numbered(&key, n);
        all.push(e.id.clone());
        store.append_events(&[e]).await.unwrap();
    }
    let second = Recorder::new();
    let consumer = Running::consumer(bus.clone(), Consumer::new(&name, users(), second.clone()));
    let seen_first: HashSet<String> = first.seen().into_iter().map(|e| e.id).collect();
    let ok = second
        .wait_until(WAIT, |s| {
            let mut u = seen_first.clone();
            u.extend(s.iter().map(|e| e.id.clone()));
            all.iter().all(|id| u.contains(id))
        })
        .await;
    assert!(
        ok,
        "after the restart: first saw {}, second saw {}, of {}",
        seen_first.len(),
        second.seen().len(),
        all.len()
    );
    assert_per_key_order(&second.seen());
    // The handler returns before the id is recorded: give the last record a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.consumer_processed_count(&name).await.unwrap() < all.len() as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "processed ids not recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.consumer_processed_count(&name).await.unwrap(),
        all.len() as i64
    );
    consumer.stop().await;
    relay.stop().await;
}

/// Events delivered again (republished and replayed) are not handed to the handler twice.
pub async fn idempotent_redelivery(store: Store, bus: Arc<dyn EventBus>) {
    let relay = Running::relay(&store, bus.clone());
    let name = unique("idem");
    let key = unique("agg");
    let rec = Recorder::new();
    let consumer = Running::consumer(bus.clone(), Consumer::new(&name, users(), rec.clone()));
    let events: Vec<NewEvent> = (0..10).map(|n| numbered(&key, n)).collect();
    store.append_events(&events).await.unwrap();
    assert!(rec.wait_until(WAIT, |s| s.len() >= 10).await);
    consumer.stop().await;

    // Redeliver: republish the same rows (Kafka) and rewind the cursor (in-process).
    let rows: Vec<_> = {
        let mut rows = Vec::new();
        let mut after = 0;
        loop {
            let batch = store
                .outbox_range(after, i64::MAX, &users(), 1000)
                .await
                .unwrap();
            let Some(last) = batch.last() else { break };
            after = last.seq;
            rows.extend(batch.into_iter().filter(|r| r.event.key == key));
        }
        rows
    };
    assert_eq!(rows.len(), 10);
    bus.publish(&rows).await.unwrap();
    bus.flush(Duration::from_secs(10)).await.unwrap();
    store.consumer_seek(&name, 0).await.unwrap();

    let consumer = Running::consumer(bus.clone(), Consumer::new(&name, users(), rec.clone()));
    let marker = numbered(&key, 10);
    let marker_id = marker.id.clone();
    store.append_events(&[marker]).await.unwrap();
    assert!(
        rec.wait_until(WAIT, |s| s.iter().any(|e| e.id == marker_id))
            .await,
        "marker never arrived"
    );
    // Give stragglers a moment, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = rec.seen();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in &seen {
        *count.entry(e.id.as_str()).or_default() += 1;
    }
    for e in &events {
        assert_eq!(
            count.get(e.id.as_str()),
            Some(&1),
            "event {} handled twice or never",
            e.id
        );
    }
    assert_eq!(seen.len(), 11);
    consumer.stop().await;
    relay.stop().await;
}

/// A poison event is retried, then dead-lettered with the error, and does not block the
/// events behind it.
pub async fn dead_letters_poison(store: Store, bus: Arc<dyn EventBus>) {
    let relay = Running::relay(&store, bus.clone());
    let name = unique("dlq");
    let key = unique("agg");
    let rec = Recorder::new();
    let consumer = Running::consumer(
        bus.clone(),
        Consumer::new(&name, users(), rec.clone()).with_retry(fast_retry()),
    );
    let mut good = Vec::new();
    for n in 0..5 {
        let e = if n == 2 {
            record(
                EventType::UserUpdated,
                &key,
                json!({ "n": n, "poison": true }),
            )
            .unwrap()
        } else {
            numbered(&key, n)
        };
        if n != 2 {
            good.push(e.id.clone());
        }
        store.append_events(&[e]).await.unwrap();
    }
    let poison_id = store.events_for(&key).await.unwrap()[2].id.clone();
    assert!(
        rec.wait_until(WAIT, |s| s.len() >= 4).await,
        "good events blocked behind the poison one: {:?}",
        rec.seen().len()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let letters = loop {
        let letters = store.dead_letters(&name).await.unwrap();
        if !letters.is_empty() || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].event.id, poison_id);
    assert!(
        letters[0].error.contains("poison event"),
        "{}",
        letters[0].error
    );
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(rec.poison_attempts(), 3);
    let seen: Vec<String> = rec.seen().into_iter().map(|e| e.id).collect();
    assert_eq!(seen, good);
    consumer.stop().await;
    relay.stop().await;
}

/// Two nodes running the same [`Scope::Node`](crate::Scope::Node) consumer each get every
/// event published after they started, and none of those published before `since_ms`.
pub async fn every_node_sees_events_since(store: Store, bus: Arc<dyn EventBus>) {
    let relay = Running::relay(&store, bus.clone());
    let key = unique("agg");
    let old: Vec<NewEvent> = (0..5).map(|n| numbered(&key, n)).collect();
    store.append_events(&old).await.unwrap();
    // The old events reach the bus before the nodes start.
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.outbox_lag().await.unwrap().0 > 0 {
        assert!(tokio::time::Instant::now() < deadline, "relay stuck");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bus.flush(Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = nexus_store::now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let name = unique("node");
    let nodes: Vec<Arc<Recorder>> = (0..2).map(|_| Recorder::new()).collect();
    let running: Vec<Running> = nodes
        .iter()
        .map(|rec| {
            Running::consumer(
                bus.clone(),
                Consumer::new(&name, users(), rec.clone()).on_every_node(since),
            )
        })
        .collect();
    // Kafka: the consumers look their start offsets up before anything new is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new: Vec<NewEvent> = (5..25).map(|n| numbered(&key, n)).collect();
    let new_ids: HashSet<String> = new.iter().map(|e| e.id.clone()).collect();
    for e in &new {
        store.append_events(std::slice::from_ref(e)).await.unwrap();
    }
    for (i, rec) in nodes.iter().enumerate() {
        let ok = rec
            .wait_until(WAIT, |s| {
                let got: HashSet<&String> = s.iter().map(|e| &e.id).collect();
                new_ids.iter().all(|id| got.contains(id))
            })
            .await;
        assert!(ok, "node {i} got {} of {}", rec.seen().len(), new.len());
        let seen = rec.seen();
        assert_per_key_order(&seen);
        for e in &old {
            assert!(
                !seen.iter().any(|s| s.id == e.id),
                "node {i} got an event published before it started"
            );
        }
    }
    // Nothing is recorded for a node-scope consumer.
    assert_eq!(store.consumer_processed_count(&name).await.unwrap(), 0);
    for r in running {
        r.stop().await;
    }
    relay.stop().await;
}
