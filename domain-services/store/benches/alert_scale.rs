//! Alerting at scale (issue 7), one run, three figures:
//!
//! - **CAP parse + validate per core**: the thunderstorm warning sample (1.8 KB, one info, a
//!   polygon, three geocodes) parsed and validated in a loop on one thread for ~2 s
//!   (`nexus_cap::parse` + `Parsed::validate`, as `POST /api/v1/alerts` does); target ≥ 50 000
//!   alerts/s.
//! - **Targeting 1M subscribers inside a polygon through the geo engine**: 1 000 000
//!   subscriber points inside an irregular 12-gon (plus the points of its bounding box that
//!   fall outside it), bulk-loaded into a [`GeoIndex`]; the time of one
//!   `GeoIndex::ids_within(polygon)` that returns every one of them (and, for comparison in
//!   the same run, of the general `Query::within`); target < 200 ms.
//!   For scale, the issue path as it runs today on a tenth of the points (SQLite alert
//!   subscriptions read through the store's bounding-box prefilter in pages, then tested).
//! - **Queued deliveries per second into the durable queue**: [`Store::issue_alert`] with
//!   `ALERT_BENCH_DELIVERIES` deliveries (default 200 000) in its one transaction, on SQLite
//!   and on PostgreSQL (a fresh database; needs `NEXUS_TEST_DATABASE_URL`, see
//!   `scripts/services.sh env`); target ≥ 100 000/s on both.
//!
//! Prints one Markdown table row per figure (`make bench` puts them into
//! `docs/benchmarks.md`).
//!
//! ```sh
//! eval "$(scripts/services.sh env)"
//! cargo bench -p nexus-store --bench alert_scale
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use nexus_geo::{
    Area, Attributes, Budget, Filter, GeoIndex, Object, ObjectId, Position, Query, Responder,
    Timestamp,
};
use nexus_store::testing::{fresh_postgres_store, sqlite_store};
use nexus_store::{AlertRecord, AlertStatus, NewDelivery, Store};
use std::time::{Duration, Instant};

const WARNING: &[u8] = include_bytes!("../../../alerting/cap/tests/data/thunderstorm_polygon.xml");

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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn row(name: &str, figure: &str, rate: &str, target: &str) {
    println!("| {name} | {figure} | {rate} | {target} |");
}

/// Time this thread has spent on a CPU (Linux `schedstat`), so the per-core rate holds on a
/// shared machine where wall time includes waiting for a core.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn cap_parse_validate() {
    let limits = nexus_cap::Limits::default();
    // Warm up, then count whole passes for about two seconds.
    for _ in 0..2_000 {
        let parsed = nexus_cap::parse(std::hint::black_box(WARNING), &limits).unwrap();
        assert!(parsed.validate().is_empty());
    }
    let start = Instant::now();
    let cpu_start = thread_cpu();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..1_000 {
            let parsed = nexus_cap::parse(std::hint::black_box(WARNING), &limits).unwrap();
            assert!(parsed.validate().is_empty());
            std::hint::black_box(parsed);
        }
        n += 1_000;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => wall,
    };
    row(
        "CAP parse + validate, one core (thunderstorm sample, 1.8 KB), CPU time",
        &format!("{:.1} µs/alert", cpu * 1e6 / n as f64),
        &format!(
            "{:.0} alerts/s per core ({:.0}/s wall clock)",
            n as f64 / cpu,
            n as f64 / wall
        ),
        "≥ 50 000 alerts/s",
    );
}

fn targeting_1m() -> (Vec<(f64, f64)>, Area) {
    const INSIDE: usize = 1_000_000;
    // An irregular 12-gon around a city, (lon, lat).
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
    let now = Timestamp(1_700_000_000_000);
    let mut objects = Vec::with_capacity(INSIDE * 2);
    let mut inside = 0;
    let mut id = 0u64;
    while inside < INSIDE {
        let p = Position::new(
            rng.range(b.min_lat(), b.max_lat()),
            rng.range(b.min_lon(), b.max_lon()),
        )
        .unwrap();
        if area.covers(p) {
            inside += 1;
        }
        id += 1;
        objects.push(Object::point(
            ObjectId(id),
            p,
            Attributes::Responder(Responder {
                role: "subscriber".into(),
                updated_at: now,
            }),
        ));
    }
    let total = objects.len();
    let points: Vec<(f64, f64)> = objects
        .iter()
        .filter_map(|o| o.position())
        .map(|p| (p.lat(), p.lon()))
        .collect();
    let index = GeoIndex::from_objects(objects).unwrap();
    let filter = Filter::default();
    let mut fast = Vec::new();
    let mut general = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let found = index.ids_within(&area, &filter, &Budget::unlimited());
        fast.push(start.elapsed());
        assert_eq!(found.ids.len(), INSIDE);
        let start = Instant::now();
        let hits = index
            .query(&Query::within(area.clone()), &Budget::unlimited())
            .unwrap()
            .into_complete()
            .unwrap();
        let ids: Vec<u64> = hits.iter().map(|h| h.object.id.0).collect();
        general.push(start.elapsed());
        assert_eq!(ids.len(), INSIDE);
    }
    let (fast, general) = (median(fast), median(general));
    row(
        &format!(
            "target 1M subscribers inside a 12-gon: `GeoIndex::ids_within` ({total} points indexed)"
        ),
        &format!("{:.0} ms", fast.as_secs_f64() * 1e3),
        &format!(
            "{:.1} M subscribers/s",
            INSIDE as f64 / fast.as_secs_f64() / 1e6
        ),
        "< 200 ms",
    );
    row(
        "same, general `Query::within` (every point tested and looked up), same run",
        &format!("{:.0} ms", general.as_secs_f64() * 1e3),
        &format!(
            "{:.1} M subscribers/s ({:.1}× slower)",
            INSIDE as f64 / general.as_secs_f64() / 1e6,
            general.as_secs_f64() / fast.as_secs_f64()
        ),
        "–",
    );
    (points, area)
}

/// The issue path as it runs today (`nexus_api::alerts` targeting): the store's bounding-box
/// prefilter read in 5 000-row pages, each candidate tested exactly against the polygon.
async fn targeting_store_path(all_points: &[(f64, f64)], area: &Area) {
    // Every 10th point: ~100k subscribers inside. (At 1M the paged prefilter did not finish
    // within minutes: each page re-reads the whole box to sort by id.)
    let points: Vec<(f64, f64)> = all_points.iter().step_by(10).copied().collect();
    let expected = points
        .iter()
        .filter(|(lat, lon)| area.covers(Position::new(*lat, *lon).unwrap()))
        .count();
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path()).await;
    let url = format!("sqlite://{}/nexus.db", dir.path().display());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    for (n, chunk) in points.chunks(50_000).enumerate() {
        let rows: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, (lat, lon))| format!("[\"{:08}{:08}\",{lat},{lon}]", n, i))
            .collect();
        let json = format!("[{}]", rows.join(","));
        sqlx::query(
            "INSERT INTO alert_subscriptions (id, lat, lon, phone, created_at) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
             json_extract(value, '$[2]'), '+15550000000', 0 FROM json_each($1)",
        )
        .bind(json)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let b = area.bbox();
    let bbox = [b.min_lon(), b.min_lat(), b.max_lon(), b.max_lat()];
    let start = Instant::now();
    let mut after: Option<String> = None;
    let mut inside = 0usize;
    loop {
        let page = store
            .subscriptions_in_bbox(bbox, after.as_deref(), 5_000)
            .await
            .unwrap();
        let full = page.len() == 5_000;
        after = page.last().map(|s| s.id.clone());
        inside += page
            .iter()
            .filter(|s| area.covers(Position::new(s.lat, s.lon).unwrap()))
            .count();
        if !full {
            break;
        }
    }
    let took = start.elapsed();
    assert_eq!(inside, expected);
    row(
        &format!(
            "for scale, the issue path today: {expected} subscribers inside ({} in SQLite), bbox prefilter in 5 000-row pages + exact test",
            points.len()
        ),
        &format!("{:.0} ms", took.as_secs_f64() * 1e3),
        &format!(
            "{:.2} M subscribers/s",
            expected as f64 / took.as_secs_f64() / 1e6
        ),
        "(1M: < 200 ms)",
    );
    store.close().await;
}

fn alert(id: &str) -> AlertRecord {
    AlertRecord {
        id: id.into(),
        identifier: format!("bench-{id}"),
        sender: "bench@example.org".into(),
        sent: "2026-11-26T08:00:00+00:00".into(),
        sent_at: 1_795_680_000_000,
        cap_status: "Actual".into(),
        msg_type: "Alert".into(),
        status: AlertStatus::Active,
        expires_at: None,
        bbox: None,
        cap_xml: "<alert/>".into(),
        cap_json: "{}".into(),
        superseded_by: None,
        created_by: None,
        created_at: 1_795_680_000_000,
        updated_at: 1_795_680_000_000,
    }
}

async fn enqueue(store: &Store, backend: &str, n: usize) {
    let deliveries: Vec<NewDelivery> = (0..n)
        .map(|i| NewDelivery {
            recipient_id: format!("{i:032x}"),
            channel: if i % 2 == 0 { "email" } else { "sms" }.into(),
            address: if i % 2 == 0 {
                format!("person{i}@example.org")
            } else {
                format!("+2547{i:08}")
            },
        })
        .collect();
    let mut times = Vec::new();
    for run in 0..3 {
        let rec = alert(&format!("alert{run}"));
        let start = Instant::now();
        store
            .issue_alert(&rec, &[], &deliveries, &[])
            .await
            .unwrap();
        times.push(start.elapsed());
        let counts = store.delivery_counts(&rec.id).await.unwrap();
        let total: i64 = counts.iter().map(|c| c.2).sum();
        assert_eq!(total, n as i64);
    }
    let m = median(times);
    row(
        &format!("enqueue {n} deliveries with one alert ({backend})"),
        &format!("{:.2} s", m.as_secs_f64()),
        &format!("{:.0} deliveries/s", n as f64 / m.as_secs_f64()),
        "≥ 100 000/s",
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n: usize = std::env::var("ALERT_BENCH_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!("| benchmark | figure | rate | target |");
    println!("|---|---|---|---|");
    cap_parse_validate();
    let (points, area) = targeting_1m();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        targeting_store_path(&points, &area).await;
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        enqueue(&store, "SQLite", n).await;
        store.close().await;
        match fresh_postgres_store().await {
            Some(store) => {
                enqueue(&store, "PostgreSQL", n).await;
                store.close().await;
            }
            None => row(
                "enqueue (PostgreSQL)",
                "skipped: NEXUS_TEST_DATABASE_URL unset",
                "–",
                "≥ 100 000/s",
            ),
        }
    });
}
