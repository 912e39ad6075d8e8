//! The geo engine against PostGIS on the same points, in one run (issue 6).
//!
//! Loads the same N points (default 1 000 000; `GEO_BENCH_POINTS`) into a `nexus_geo`
//! [`GeoIndex`] and into a fresh PostgreSQL/PostGIS database (COPY, then GiST indexes on
//! `geom` and on `geom::geography`, then ANALYZE), and runs the same queries on both, one
//! at a time on one connection / one thread:
//!
//! - radius 50 km (great circle; PostGIS `ST_DWithin(geography, geography, r, false)`, i.e.
//!   on the sphere as the engine), every hit's id returned in no particular order (the
//!   engine's `Query::unordered`: neither side computes distances or sorts);
//! - bbox 1° × 1° (`ST_Intersects(geom, ST_MakeEnvelope(…))`: exact, boundary included,
//!   as the engine), ids returned;
//! - 10 nearest (`ORDER BY geom::geography <-> point LIMIT 10`, index-assisted);
//! - radius 50 km nearest first: the engine's default radius query (every hit with its
//!   distance, sorted), PostGIS `ORDER BY ST_Distance(geography, point, false), id`.
//!
//! Prints a Markdown table of queries/s and the engine / PostGIS ratio, plus how many of the
//! first 100 queries of each kind gave identical id sets on both, and the load average
//! before and after. Needs `NEXUS_TEST_DATABASE_URL` (see
//! `scripts/services.sh env`).
//!
//! ```sh
//! eval "$(scripts/services.sh env)"
//! cargo bench -p nexus-store --bench geo_vs_postgis
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use nexus_geo::{
    Attributes, BBox, Budget, Filter, GeoIndex, Incident, Object, ObjectId, Position, Query,
    Severity, Status, Timestamp,
};
use sqlx::{Connection, Executor, PgConnection};
use std::time::{Duration, Instant};

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

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn wrap(lon: f64) -> f64 {
    if lon >= 180.0 {
        lon - 360.0
    } else if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    }
}

/// 70 % in 20 "cities" (a ~±0.5° bell around each), 30 % over latitudes −60…70.
fn points(n: usize) -> Vec<(f64, f64)> {
    let mut rng = Rng(42);
    let cities: Vec<(f64, f64)> = (0..20)
        .map(|_| (rng.range(-40.0, 60.0), rng.range(-180.0, 180.0)))
        .collect();
    (0..n)
        .map(|_| {
            if rng.unit() < 0.7 {
                let (lat, lon) = cities[(rng.next() % 20) as usize];
                let bell = |r: &mut Rng| (r.unit() + r.unit() + r.unit() - 1.5) / 3.0;
                let lat = (lat + bell(&mut rng)).clamp(-89.0, 89.0);
                (lat, wrap(lon + bell(&mut rng)))
            } else {
                (rng.range(-60.0, 70.0), rng.range(-180.0, 180.0))
            }
        })
        .collect()
}

fn incident(i: usize, (lat, lon): (f64, f64)) -> Object {
    Object::point(
        ObjectId(i as u64),
        Position::new(lat, lon).expect("generated inside the valid range"),
        Attributes::Incident(Incident {
            incident_type: "flood".into(),
            severity: Severity::new(1 + (i % 5) as u8).expect("1..=5"),
            status: Status::Reported,
            reported_at: Timestamp(0),
        }),
    )
}

#[derive(Clone, Copy)]
enum Kind {
    Radius,
    Bbox,
    Knn,
    RadiusSorted,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Radius => "radius 50 km (all hits)",
            Kind::Bbox => "bbox 1° × 1°",
            Kind::Knn => "k-nearest, k = 10",
            Kind::RadiusSorted => "radius 50 km, nearest first",
        }
    }
}

const RADIUS_M: f64 = 50_000.0;
const K: usize = 10;
const HALF_BOX: f64 = 0.5;

fn bbox_of((lat, lon): (f64, f64)) -> [f64; 4] {
    [
        wrap(lon - HALF_BOX),
        (lat - HALF_BOX).max(-90.0),
        wrap(lon + HALF_BOX),
        (lat + HALF_BOX).min(90.0),
    ]
}

fn engine_query(index: &GeoIndex, kind: Kind, c: (f64, f64)) -> Vec<u64> {
    let center = Position::new(c.0, c.1).unwrap();
    let budget = Budget::unlimited();
    let ids = match kind {
        Kind::Radius => index
            .query(&Query::radius(center, RADIUS_M).unordered(), &budget)
            .unwrap()
            .ids(),
        Kind::Bbox => {
            let [a, b, c, d] = bbox_of(c);
            index
                .query(&Query::bbox(BBox::new(a, b, c, d).unwrap()), &budget)
                .unwrap()
                .ids()
        }
        Kind::Knn => index.nearest(center, K, &Filter::default(), &budget).ids(),
        Kind::RadiusSorted => index
            .query(&Query::radius(center, RADIUS_M), &budget)
            .unwrap()
            .ids(),
    };
    ids.into_iter().map(|i| i.0).collect()
}

async fn postgis_query(conn: &mut PgConnection, kind: Kind, c: (f64, f64)) -> Vec<u64> {
    let (lat, lon) = c;
    let rows: Vec<i64> = match kind {
        Kind::Radius => sqlx::query_scalar(
            "SELECT id FROM bench_points WHERE ST_DWithin(geom::geography, \
             ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, $3, false)",
        )
        .bind(lon)
        .bind(lat)
        .bind(RADIUS_M)
        .fetch_all(&mut *conn)
        .await
        .unwrap(),
        Kind::Bbox => {
            let [a, b, c, d] = bbox_of(c);
            // A box across the antimeridian is two envelopes, as in the engine.
            // `&&` alone compares float4-rounded boxes and returns a few points just outside;
            // ST_Intersects confirms exactly (boundary included), as the engine does.
            let sql = if a > c {
                "SELECT id FROM bench_points WHERE \
                 ST_Intersects(geom, ST_MakeEnvelope($1, $2, 180, $4, 4326)) \
                 OR ST_Intersects(geom, ST_MakeEnvelope(-180, $2, $3, $4, 4326))"
            } else {
                "SELECT id FROM bench_points WHERE \
                 ST_Intersects(geom, ST_MakeEnvelope($1, $2, $3, $4, 4326))"
            };
            sqlx::query_scalar(sql)
                .bind(a)
                .bind(b)
                .bind(c)
                .bind(d)
                .fetch_all(&mut *conn)
                .await
                .unwrap()
        }
        Kind::Knn => sqlx::query_scalar(
            "SELECT id FROM bench_points ORDER BY geom::geography <-> \
             ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography LIMIT 10",
        )
        .bind(lon)
        .bind(lat)
        .fetch_all(&mut *conn)
        .await
        .unwrap(),
        Kind::RadiusSorted => sqlx::query_scalar(
            "SELECT id FROM bench_points WHERE ST_DWithin(geom::geography, \
             ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, $3, false) \
             ORDER BY ST_Distance(geom::geography, \
             ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, false), id",
        )
        .bind(lon)
        .bind(lat)
        .bind(RADIUS_M)
        .fetch_all(&mut *conn)
        .await
        .unwrap(),
    };
    rows.into_iter().map(|i| i as u64).collect()
}

/// Queries per second.
fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

/// The 1-minute load average, to print with the figures.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

const KINDS: [Kind; 4] = [Kind::Radius, Kind::Bbox, Kind::Knn, Kind::RadiusSorted];
const AGREE: usize = 100;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("GEO_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_kind_secs: u64 = std::env::var("GEO_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let load_before = load();
    let data = points(n);
    let mut rng = Rng(7);
    let centers: Vec<(f64, f64)> = (0..1000)
        .map(|_| data[(rng.next() % n as u64) as usize])
        .collect();

    let t = Instant::now();
    let index =
        GeoIndex::from_objects(data.iter().enumerate().map(|(i, p)| incident(i, *p))).unwrap();
    let engine_load = t.elapsed();
    eprintln!("engine: {n} points bulk-loaded in {engine_load:.2?}");

    let Some(url) = nexus_store::testing::fresh_postgres_url().await else {
        eprintln!("NEXUS_TEST_DATABASE_URL unset: no PostGIS to compare with");
        return;
    };
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let version: String = sqlx::query_scalar("SELECT postgis_lib_version()")
        .fetch_one(&mut conn)
        .await
        .expect("PostGIS is installed in the test database");
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.execute(
        "CREATE TABLE bench_points (id BIGINT PRIMARY KEY, geom geometry(Point, 4326) NOT NULL)",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY bench_points (id, geom) FROM STDIN")
        .await
        .unwrap();
    for (c, chunk) in data.chunks(50_000).enumerate() {
        let mut buf = String::with_capacity(chunk.len() * 48);
        for (j, (lat, lon)) in chunk.iter().enumerate() {
            use std::fmt::Write;
            let _ = writeln!(buf, "{}\tSRID=4326;POINT({lon} {lat})", c * 50_000 + j);
        }
        copy.send(buf.into_bytes()).await.unwrap();
    }
    copy.finish().await.unwrap();
    let copied = t.elapsed();
    conn.execute("CREATE INDEX bench_points_geom ON bench_points USING GIST (geom)")
        .await
        .unwrap();
    conn.execute("CREATE INDEX bench_points_geog ON bench_points USING GIST ((geom::geography))")
        .await
        .unwrap();
    conn.execute("ANALYZE bench_points").await.unwrap();
    let pg_load = t.elapsed();
    eprintln!(
        "PostGIS {version} on PostgreSQL {pg_version}: COPY {copied:.2?}, with indexes and ANALYZE {pg_load:.2?}"
    );

    // Same answers? Compare id sets of the first queries of each kind.
    let mut agree = Vec::new();
    for kind in KINDS {
        let mut same = 0;
        let mut hits = 0usize;
        for c in centers.iter().take(AGREE) {
            let mut e = engine_query(&index, kind, *c);
            let mut p = postgis_query(&mut conn, kind, *c).await;
            hits += e.len();
            e.sort_unstable();
            p.sort_unstable();
            same += usize::from(e == p);
        }
        agree.push((same, hits / AGREE));
    }

    // Warm both, then time each kind for `per_kind_secs`, alternating 100 ms slices of
    // engine queries and of PostGIS queries (at least one per slice), so that both sides
    // run under the same machine load even when it changes during the run.
    let slice = Duration::from_millis(100);
    let mut rows = Vec::new();
    for (k, kind) in KINDS.into_iter().enumerate() {
        for c in centers.iter().take(10) {
            engine_query(&index, kind, *c);
            postgis_query(&mut conn, kind, *c).await;
        }
        let mut checksum = 0usize;
        let (mut engine_n, mut engine_t) = (0, Duration::ZERO);
        let (mut done, mut postgis_t) = (0, Duration::ZERO);
        let end = Instant::now() + Duration::from_secs(per_kind_secs);
        while Instant::now() < end {
            let t = Instant::now();
            while t.elapsed() < slice {
                checksum += engine_query(&index, kind, centers[engine_n % centers.len()]).len();
                engine_n += 1;
            }
            engine_t += t.elapsed();
            let t = Instant::now();
            loop {
                checksum += postgis_query(&mut conn, kind, centers[done % centers.len()])
                    .await
                    .len();
                done += 1;
                if t.elapsed() >= slice {
                    break;
                }
            }
            postgis_t += t.elapsed();
        }
        let engine = rate(engine_n, engine_t);
        let postgis = rate(done, postgis_t);
        std::hint::black_box(checksum);
        rows.push((kind, engine, engine_n, postgis, done, agree[k]));
    }

    println!(
        "| query | mean hits | engine q/s (n) | PostGIS q/s (n) | engine ÷ PostGIS | same ids (of {AGREE}) |"
    );
    println!("|---|---|---|---|---|---|");
    for (kind, engine, en, postgis, pn, (same, hits)) in rows {
        println!(
            "| {} | {hits} | {engine:.0} ({en}) | {postgis:.1} ({pn}) | {:.0}× | {same} |",
            kind.name(),
            engine / postgis
        );
    }
    println!(
        "\nload: engine bulk load {engine_load:.2?}; PostGIS COPY {copied:.2?}, + GiST indexes and ANALYZE {pg_load:.2?}"
    );
    println!(
        "load average (1 min): {load_before} before, {} after",
        load()
    );
}
