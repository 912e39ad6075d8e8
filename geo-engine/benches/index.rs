//! Geo engine benchmarks over one million points.
//!
//! Data: 1 000 000 point objects (70 % incidents, 30 % responders), deterministic: 70 % in
//! 20 "cities" (each a ~0.3° spread around a centre), 30 % spread over latitudes -60..70.
//! Run: `cargo bench -p nexus-geo --bench index -- --quick`.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use nexus_geo::*;

const N: usize = 1_000_000;
const T0: Timestamp = Timestamp(1_700_000_000_000);

/// splitmix64: tiny deterministic generator, no extra dependency.
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

fn cities() -> Vec<(f64, f64)> {
    let mut rng = Rng(7);
    (0..20)
        .map(|_| (rng.range(-40.0, 55.0), rng.range(-170.0, 170.0)))
        .collect()
}

fn pos(lat: f64, lon: f64) -> Position {
    Position::new(lat.clamp(-90.0, 90.0), lon.clamp(-180.0, 180.0)).expect("clamped into range")
}

fn random_position(rng: &mut Rng, cities: &[(f64, f64)]) -> Position {
    if rng.unit() < 0.7 {
        let (lat, lon) = cities[(rng.next() % cities.len() as u64) as usize];
        // Sum of three uniforms: a bell of about ±0.3°.
        let d = |rng: &mut Rng| (rng.unit() + rng.unit() + rng.unit() - 1.5) * 0.35;
        pos(lat + d(rng), lon + d(rng))
    } else {
        pos(rng.range(-60.0, 70.0), rng.range(-180.0, 180.0))
    }
}

fn dataset() -> Vec<Object> {
    let cities = cities();
    let mut rng = Rng(42);
    (0..N as u64)
        .map(|id| {
            let at = random_position(&mut rng, &cities);
            let attrs = if rng.unit() < 0.7 {
                Attributes::Incident(Incident {
                    incident_type: "flood".into(),
                    severity: Severity::new((rng.next() % 5) as u8 + 1).expect("1..=5"),
                    status: Status::Reported,
                    reported_at: T0,
                })
            } else {
                Attributes::Responder(Responder {
                    role: "volunteer".into(),
                    updated_at: T0,
                })
            };
            Object::point(ObjectId(id), at, attrs)
        })
        .collect()
}

fn loaded() -> GeoIndex {
    GeoIndex::from_objects(dataset()).expect("unique ids")
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("insert_1m_points", |b| {
        b.iter_batched(
            dataset,
            |objects| {
                let mut index = GeoIndex::new();
                for o in objects {
                    let _ = index.insert(o, T0);
                }
                index
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("bulk_load_1m_points", |b| {
        b.iter_batched(
            dataset,
            |objects| GeoIndex::from_objects(objects).expect("unique ids"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn queries(c: &mut Criterion) {
    let mut index = loaded();
    let cities = cities();
    let budget = Budget::steps(10_000_000);
    print_result_sizes(&index, &cities);
    let mut g = c.benchmark_group("query_1m");

    let mut rng = Rng(1);
    g.bench_function("bbox_0.5deg", |b| {
        b.iter(|| {
            let p = random_position(&mut rng, &cities);
            let (w, s) = (p.lon().min(179.5), p.lat().min(89.5));
            let q = Query::bbox(BBox::new(w, s, w + 0.5, s + 0.5).expect("valid box"));
            black_box(index.query(&q, &budget).map(|r| r.hits.len()))
        })
    });

    let mut rng = Rng(2);
    g.bench_function("radius_50km", |b| {
        b.iter(|| {
            let q = Query::radius(random_position(&mut rng, &cities), 50_000.0);
            black_box(index.query(&q, &budget).map(|r| r.hits.len()))
        })
    });

    let mut rng = Rng(2);
    g.bench_function("radius_50km_unordered", |b| {
        b.iter(|| {
            let q = Query::radius(random_position(&mut rng, &cities), 50_000.0).unordered();
            black_box(index.query(&q, &budget).map(|r| r.hits.len()))
        })
    });

    let mut rng = Rng(3);
    g.bench_function("radius_50km_limit_100", |b| {
        b.iter(|| {
            let q = Query::radius(random_position(&mut rng, &cities), 50_000.0).limit(100);
            black_box(index.query(&q, &budget).map(|r| r.hits.len()))
        })
    });

    let mut rng = Rng(4);
    let any = Filter::default();
    g.bench_function("knn_k10", |b| {
        b.iter(|| {
            let r = index.nearest(random_position(&mut rng, &cities), 10, &any, &budget);
            black_box(r.hits.len())
        })
    });

    let world = ClusterQuery::new(BBox::world(), 3);
    g.bench_function("cluster_zoom3_world", |b| {
        b.iter(|| {
            black_box(
                index
                    .clusters(&world, &budget)
                    .map(|m| m.features.features.len()),
            )
        })
    });

    // A 1920 × 1080 px screen at zoom 12 is about 0.66° × 0.37°; centre it on a city.
    let mut rng = Rng(5);
    g.bench_function("cluster_zoom12_city_view", |b| {
        b.iter(|| {
            let (lat, lon) = cities[(rng.next() % 20) as usize];
            let view = BBox::new(lon - 0.33, lat - 0.185, lon + 0.33, lat + 0.185)
                .expect("cities are away from the poles and the seam");
            let q = ClusterQuery::new(view, 12);
            black_box(
                index
                    .clusters(&q, &budget)
                    .map(|m| m.features.features.len()),
            )
        })
    });

    let mut rng = Rng(6);
    g.bench_function("move_point", |b| {
        b.iter(|| {
            let id = ObjectId(rng.next() % N as u64);
            let to = random_position(&mut rng, &cities);
            black_box(index.move_to(id, to, T0).map(|e| e.len()))
        })
    });

    // 10 000 polygon fences (≈1 km squares) in the cities; responders move ~100 m per fix.
    for i in 0..10_000u64 {
        let (lat, lon) = cities[(i % 20) as usize];
        let (lat, lon) = (lat + rng.range(-0.5, 0.5), lon + rng.range(-0.5, 0.5));
        let square = Area::polygon(&[
            (lon, lat),
            (lon + 0.01, lat),
            (lon + 0.01, lat + 0.01),
            (lon, lat + 0.01),
        ])
        .expect("valid square");
        let _ = index.add_fence(Fence::new(FenceId(i), FenceShape::Area(square)));
    }
    print_move_cpu_time(&mut index);
    let mut rng = Rng(8);
    g.bench_function("move_point_10k_fences", |b| {
        b.iter(|| {
            let id = ObjectId(rng.next() % N as u64);
            let Some(from) = index.get(id).and_then(Object::position) else {
                return 0;
            };
            let to = pos(
                from.lat() + rng.range(-0.001, 0.001),
                from.lon() + rng.range(-0.001, 0.001),
            );
            black_box(index.move_to(id, to, T0).map(|e| e.len()).unwrap_or(0))
        })
    });
    g.finish();
}

/// The ~100 m move against 10 000 fences of `move_point_10k_fences`, timed in this
/// thread's CPU time (Linux `/proc/thread-self/schedstat`) as well as wall time: on a
/// machine shared with other work, CPU time is the figure for "updates per second on one
/// core", since wall time also counts the time the thread waited for a core.
fn print_move_cpu_time(index: &mut GeoIndex) {
    fn cpu_ns() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        s.split_whitespace().next()?.parse().ok()
    }
    const MOVES: u32 = 200_000;
    let mut rng = Rng(9);
    let moves: Vec<(ObjectId, Position)> = (0..MOVES)
        .filter_map(|_| {
            let id = ObjectId(rng.next() % N as u64);
            let from = index.get(id).and_then(Object::position)?;
            let to = pos(
                from.lat() + rng.range(-0.001, 0.001),
                from.lon() + rng.range(-0.001, 0.001),
            );
            Some((id, to))
        })
        .collect();
    let (Some(cpu0), wall0) = (cpu_ns(), std::time::Instant::now()) else {
        return;
    };
    let mut events = 0;
    for &(id, to) in &moves {
        events += index.move_to(id, to, T0).map_or(0, |e| e.len());
    }
    let wall = wall0.elapsed().as_nanos() as f64 / moves.len() as f64;
    let cpu = cpu_ns().map_or(f64::NAN, |c| (c - cpu0) as f64 / moves.len() as f64);
    eprintln!(
        "move_point_10k_fences: {} moves, {events} fence events; per move {:.2} µs CPU \
         ({:.0} moves per CPU-second), {:.2} µs wall",
        moves.len(),
        cpu / 1e3,
        1e9 / cpu,
        wall / 1e3
    );
}

/// Mean result sizes of the query mixes, so the timings can be read per result.
fn print_result_sizes(index: &GeoIndex, cities: &[(f64, f64)]) {
    let budget = Budget::unlimited();
    let mean = |seed: u64, f: &dyn Fn(&mut Rng) -> usize| {
        let mut rng = Rng(seed);
        (0..200).map(|_| f(&mut rng)).sum::<usize>() as f64 / 200.0
    };
    let bbox = mean(1, &|rng| {
        let p = random_position(rng, cities);
        let (w, s) = (p.lon().min(179.5), p.lat().min(89.5));
        let q = Query::bbox(BBox::new(w, s, w + 0.5, s + 0.5).expect("valid box"));
        index.query(&q, &budget).map_or(0, |r| r.hits.len())
    });
    let radius = mean(2, &|rng| {
        let q = Query::radius(random_position(rng, cities), 50_000.0);
        index.query(&q, &budget).map_or(0, |r| r.hits.len())
    });
    let city = mean(5, &|rng| {
        let (lat, lon) = cities[(rng.next() % 20) as usize];
        let view = BBox::new(lon - 0.33, lat - 0.185, lon + 0.33, lat + 0.185).expect("valid");
        let q = ClusterQuery::new(view, 12);
        index
            .clusters(&q, &budget)
            .map_or(0, |m| m.features.features.len())
    });
    let (world, world_steps) = index
        .clusters(&ClusterQuery::new(BBox::world(), 3), &budget)
        .map_or((0, 0), |m| (m.features.features.len(), m.steps));
    eprintln!(
        "mean results: bbox_0.5deg {bbox:.0} hits, radius_50km {radius:.0} hits, \
         cluster_zoom12_city_view {city:.0} features, \
         cluster_zoom3_world {world} features in {world_steps} steps"
    );
}

criterion_group!(benches, build, queries);
criterion_main!(benches);
