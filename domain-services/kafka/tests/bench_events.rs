//! Throughput and latency of the event backbone, in-process and over Kafka. Ignored by
//! default; run it with the command in `docs/benchmarks-events.md`:
//!
//! `cargo test -p nexus-kafka --test bench_events -- --ignored --nocapture --test-threads 1`

#![allow(clippy::unwrap_used)]

mod common;

use nexus_events::testing::Running;
use nexus_events::{
    CloudEvent, Consumer, Domain, EventBus, EventType, Handler, HandlerError, InProcessBus, Topics,
    record,
};
use nexus_store::Store;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BACKLOG: usize = 10_000;
const PACED: usize = 2_000;
const RATE_PER_S: u64 = 200;

#[derive(Default)]
struct Stamps(Mutex<HashMap<String, Instant>>);

#[async_trait::async_trait]
impl Handler for Stamps {
    async fn handle(&self, e: &CloudEvent) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .entry(e.id.clone())
            .or_insert_with(Instant::now);
        Ok(())
    }
}

impl Stamps {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n}", self.len());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn event(n: usize) -> nexus_store::NewEvent {
    record(
        EventType::IncidentReported,
        &format!("inc-{}", n % 100),
        json!({ "n": n }),
    )
    .unwrap()
}

async fn run(label: &str, store: Store, bus: Arc<dyn EventBus>) {
    let stamps = Arc::new(Stamps::default());
    let consumer = Running::consumer(
        bus.clone(),
        Consumer::new("bench", [Topics::logical(Domain::Crisis)], stamps.clone()),
    );
    let relay = Running::relay(&store, bus.clone());
    // Warm-up: the consumer is attached (Kafka group joined).
    store.append_events(&[event(0)]).await.unwrap();
    stamps.wait_for(1).await;

    // Throughput: a backlog written in transactions of 100, drained through relay → bus →
    // consumer (which records each id in the store).
    let t0 = Instant::now();
    for chunk in 0..BACKLOG / 100 {
        let batch: Vec<_> = (0..100).map(|i| event(chunk * 100 + i)).collect();
        store.append_events(&batch).await.unwrap();
    }
    stamps.wait_for(1 + BACKLOG).await;
    let secs = t0.elapsed().as_secs_f64();
    let throughput = BACKLOG as f64 / secs;

    // Latency: one event per transaction at a steady rate; committed → handled.
    let mut committed = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_S));
    for n in 0..PACED {
        tick.tick().await;
        let e = event(n);
        let id = e.id.clone();
        store.append_events(&[e]).await.unwrap();
        committed.insert(id, Instant::now());
    }
    stamps.wait_for(1 + BACKLOG + PACED).await;
    let mut lat: Vec<f64> = {
        let got = stamps.0.lock().unwrap();
        committed
            .iter()
            .map(|(id, t)| got[id].saturating_duration_since(*t).as_secs_f64() * 1000.0)
            .collect()
    };
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "BENCH {label}: throughput {throughput:.0} events/s ({BACKLOG} events in {secs:.2} s); \
         latency committed→handled at {RATE_PER_S}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p(0.50),
        p(0.99),
        p(1.0)
    );
    consumer.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_in_process_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = nexus_store::testing::sqlite_store(dir.path()).await;
    let bus = Arc::new(InProcessBus::new(store.clone()).await.unwrap());
    run("in-process (SQLite)", store, bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_kafka_sqlite() {
    let Some(brokers) = common::brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = nexus_store::testing::sqlite_store(dir.path()).await;
    let bus = Arc::new(common::bus(&store, common::settings(&brokers)));
    run("Kafka/tansu (SQLite outbox)", store, bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_kafka_postgres() {
    let Some(brokers) = common::brokers() else {
        return;
    };
    let Some(store) = nexus_store::testing::fresh_postgres_store().await else {
        return;
    };
    let bus = Arc::new(common::bus(&store, common::settings(&brokers)));
    run("Kafka/tansu (PostgreSQL outbox)", store, bus).await;
}
