//! Fan-out and geo-index benchmarks (in memory, no sockets).
//!
//! - `fanout/10k_subscribers`: one publication through `Gateway::publish` to 10 000
//!   connections on one channel: encode once, enqueue into 10 000 outboxes, each writer
//!   drains into its (counting) sink. Time per publication until all 10 000 have it.
//! - `geo/lookup_10k_boxes`: one point lookup in an R-tree of 10 000 subscriber boxes.
//!
//! Run: `cargo bench -p nexus-gateway --bench fanout`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{sink, stream};
use nexus_auth::{Claims, TokenKeys};
use nexus_gateway::geo::{GeoBox, GeoIndex, Location};
use nexus_gateway::{Gateway, GatewayConfig, Incoming, MemoryEngine, NamespaceConfig, Outgoing};
use serde_json::json;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const SUBSCRIBERS: usize = 10_000;

struct Counter {
    delivered: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
}

fn counting_sink(c: Arc<Counter>) -> impl futures_util::Sink<Outgoing, Error = Infallible> + Unpin {
    Box::pin(sink::unfold(c, |c, m: Outgoing| async move {
        if let Outgoing::Text(frame) = m {
            let pubs = frame.windows(6).filter(|w| w == b"\"pub\":").count();
            let now = c.delivered.fetch_add(pubs, Ordering::Relaxed) + pubs;
            if pubs > 0 && now >= c.target.load(Ordering::Relaxed) {
                c.reached.notify_one();
            }
        }
        Ok::<_, Infallible>(c)
    }))
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys = TokenKeys::new(b"bench-secret-bench-secret-bench-secret", &[]);
    let cfg = GatewayConfig {
        namespaces: vec![NamespaceConfig::new("feed")],
        max_connections: SUBSCRIBERS + 10,
        ..GatewayConfig::default()
    };
    let counter = Arc::new(Counter {
        delivered: AtomicUsize::new(0),
        target: AtomicUsize::new(usize::MAX),
        reached: Notify::new(),
    });
    let gw = rt.block_on(async {
        let gw = Gateway::new(cfg, keys.clone(), MemoryEngine::new()).unwrap();
        let token = keys.mint(&Claims::new("bench", 3600)).unwrap();
        let hello = format!(
            "{}\n{}",
            json!({"id": 1, "connect": {"token": token}}),
            json!({"id": 2, "subscribe": {"channel": "feed"}})
        );
        for _ in 0..SUBSCRIBERS {
            let gw = gw.clone();
            let first = Incoming::Text(hello.clone());
            let input = Box::pin(stream::unfold(Some(first), |m| async move {
                match m {
                    Some(m) => Some((Ok::<_, Infallible>(m), None)),
                    None => std::future::pending().await,
                }
            }));
            let out = counting_sink(counter.clone());
            tokio::spawn(async move { gw.serve_connection(out, input).await });
        }
        while gw.stats().subscriptions < SUBSCRIBERS as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gw
    });
    let payload = json!({"id": "inc-1", "kind": "flood", "severity": 3,
        "location": {"lat": 48.85, "lon": 2.35}, "note": "x".repeat(96)});

    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.bench_function(BenchmarkId::new("publish_to", "10k_subscribers"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = counter.delivered.load(Ordering::Relaxed) + SUBSCRIBERS;
                    counter.target.store(target, Ordering::Relaxed);
                    gw.publish("feed", payload.clone()).await.unwrap();
                    while counter.delivered.load(Ordering::Relaxed) < target {
                        counter.reached.notified().await;
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(gw.shutdown());
}

fn geo_lookup(c: &mut Criterion) {
    // Deterministic pseudo-random boxes of 0.1°–2° around the world.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut index = GeoIndex::default();
    for id in 0..SUBSCRIBERS as u64 {
        let (w, h) = (0.1 + rnd() * 1.9, 0.1 + rnd() * 1.9);
        let lon = -180.0 + rnd() * (360.0 - w);
        let lat = -80.0 + rnd() * (160.0 - h);
        index.insert(id, &GeoBox::new(lon, lat, lon + w, lat + h).unwrap());
    }
    let points: Vec<Location> = (0..1024)
        .map(|_| Location::Point([-180.0 + rnd() * 360.0, -80.0 + rnd() * 160.0]))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut group = c.benchmark_group("geo");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("lookup_10k_boxes", |b| {
        b.iter(|| {
            i = (i + 1) % points.len();
            index.matches(black_box(&points[i]), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, fanout, geo_lookup);
criterion_main!(benches);
