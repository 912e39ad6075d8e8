//! Parse + validate throughput for a typical alert (the thunderstorm warning sample: one info,
//! a polygon, three geocodes; 1.8 KB), plus the one-stop `check` and the writer.
//! Run: `cargo bench -p nexus-cap --bench cap`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nexus_cap::Limits;

const WARNING: &[u8] = include_bytes!("../tests/data/thunderstorm_polygon.xml");
const EARTHQUAKE: &[u8] = include_bytes!("../tests/data/earthquake_circle.xml");

fn parse_and_validate(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("cap");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse+validate/thunderstorm", |b| {
        b.iter(|| {
            let parsed =
                nexus_cap::parse(std::hint::black_box(WARNING), &limits).expect("sample is valid");
            assert!(parsed.validate().is_empty());
            parsed
        });
    });
    group.bench_function("parse+validate/earthquake", |b| {
        b.iter(|| {
            let parsed = nexus_cap::parse(std::hint::black_box(EARTHQUAKE), &limits)
                .expect("sample is valid");
            assert!(parsed.validate().is_empty());
            parsed
        });
    });
    group.bench_function("check/thunderstorm", |b| {
        b.iter(|| nexus_cap::check(std::hint::black_box(WARNING)));
    });
    let alert = nexus_cap::parse(WARNING, &limits)
        .expect("sample is valid")
        .alert;
    group.bench_function("to_xml/thunderstorm", |b| {
        b.iter(|| nexus_cap::to_xml(std::hint::black_box(&alert)));
    });
    group.finish();
}

criterion_group!(benches, parse_and_validate);
criterion_main!(benches);
