//! Alert targeting through the geo engine, on the real path (issue 7): 1 000 000
//! subscriptions inside an irregular 12-gon (plus the points of its bounding box that fall
//! outside it) stored in SQLite, then
//!
//! - **index build**: [`AlertTargets::load`] reads every active subscription's location from
//!   the store and bulk-loads the targeting index (what `nexus serve` does at start);
//! - **ids for the polygon**: [`AlertTargets::within`] — one message to the index task,
//!   `GeoIndex::ids_within`, ids mapped back to subscription ids — median of 7; target
//!   < 200 ms for 1M;
//! - **rows for the ids**: the selected subscriptions read back from the store
//!   5 000 at a time ([`nexus_store::Store::subscriptions_by_ids`]), as the alerting consumer
//!   does before enqueuing (addresses, preferences, whether still active).
//!
//! Prints one Markdown table row per figure, like `alert_scale` (`make bench`, scenario
//! `alerting`, puts them into `docs/benchmarks.md`).
//!
//! ```sh
//! cargo bench -p nexus-api --bench alert_targeting
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use nexus_api::alert_targets::AlertTargets;
use nexus_geo::{Area, Position};
use nexus_store::SubscriptionRecord;
use nexus_store::testing::sqlite_store;
use std::time::{Duration, Instant};

const INSIDE: usize = 1_000_000;
const PAGE: usize = 5_000;

/// splitmix64: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

fn row(name: &str, figure: &str, rate: &str, target: &str) {
    println!("| {name} | {figure} | {rate} | {target} |");
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    // The same irregular 12-gon as `alert_scale`, (lon, lat).
    let centre = (36.82, -1.29);
    let ring: Vec<(f64, f64)> = (0..=12)
        .map(|k| {
            let t = std::f64::consts::TAU * (k % 12) as f64 / 12.0;
            let r = if k % 2 == 0 { 0.5 } else { 0.35 };
            (centre.0 + r * t.cos(), centre.1 + r * t.sin())
        })
        .collect();
    let area = Area::polygon(&ring).unwrap();
    let b = area.bbox();
    let mut rng = Rng(7);
    let mut recs = Vec::with_capacity(INSIDE * 2);
    let mut inside = 0;
    while inside < INSIDE {
        let (lat, lon) = (
            rng.range(b.min_lat(), b.max_lat()),
            rng.range(b.min_lon(), b.max_lon()),
        );
        if area.covers(Position::new(lat, lon).unwrap()) {
            inside += 1;
        }
        recs.push(SubscriptionRecord {
            id: format!("{:032x}", rng.next()),
            user_id: None,
            lat,
            lon,
            language: None,
            min_severity: None,
            email: None,
            phone: Some("+15550000000".into()),
            push: None,
            created_at: 0,
            websocket: false,
            device: None,
        });
    }
    let total = recs.len();
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path()).await;
    let start = Instant::now();
    store.insert_subscriptions(&recs).await.unwrap();
    let insert = start.elapsed();
    drop(recs);
    eprintln!("{total} subscriptions stored in {}", ms(insert));

    let start = Instant::now();
    let targets = AlertTargets::load(&store).await.unwrap();
    assert_eq!(targets.count().await.unwrap(), total);
    let load = start.elapsed();
    row(
        &format!(
            "alert targeting index built from the store: {total} subscriptions (SQLite), `AlertTargets::load`"
        ),
        &ms(load),
        &format!(
            "{:.2} M subscriptions/s",
            total as f64 / load.as_secs_f64() / 1e6
        ),
        "(once, at start)",
    );

    let mut times = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        ids = targets.within(vec![area.clone()]).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(ids.len(), INSIDE);
    }
    times.sort();
    let median = times[times.len() / 2];
    row(
        &format!(
            "target 1M subscribers inside a 12-gon on the real path: `AlertTargets::within` (index task, `ids_within`, subscription ids; {total} indexed), median of 7"
        ),
        &ms(median),
        &format!(
            "{:.1} M subscribers/s",
            INSIDE as f64 / median.as_secs_f64() / 1e6
        ),
        "< 200 ms",
    );

    let start = Instant::now();
    let mut read = 0;
    for page in ids.chunks(PAGE) {
        let page: Vec<String> = page.iter().map(|id| id.to_string()).collect();
        read += store.subscriptions_by_ids(&page).await.unwrap().len();
    }
    let rows = start.elapsed();
    assert_eq!(read, INSIDE);
    row(
        "the 1M selected subscriptions read back from SQLite, 5 000 ids per query (`subscriptions_by_ids`)",
        &ms(rows),
        &format!("{:.2} M rows/s", INSIDE as f64 / rows.as_secs_f64() / 1e6),
        "–",
    );
    store.close().await;
}
