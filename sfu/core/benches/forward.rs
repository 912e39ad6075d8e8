//! RTP forwarding throughput of the core: one publisher (VP8 ~3 packets per frame at 30 fps,
//! Opus 50 packets/s) to N WHEP subscribers, all str0m peers over a simulated network. Only
//! the shard's work is timed: receiving the publisher's SRTP datagrams, fanning each RTP
//! packet out (rewrite, SRTP) toward every subscriber, and RTCP/STUN for all peers.
//!
//! `cargo bench -p nexus-sfu-core --bench forward`

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Net, all_grants, identity};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nexus_sfu_core::{Grants, Input, Output, RoomKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SETTLE_FRAMES: u64 = 90;

fn setup(n: usize) -> (Net, usize) {
    let mut net = Net::new();
    let publisher = net.connect(
        identity("pub", "bench", RoomKind::Class, all_grants()),
        true,
    );
    let sub = Grants {
        publish: false,
        subscribe: true,
        admin: false,
    };
    for i in 0..n {
        net.connect(
            identity(&format!("s{i}"), "bench", RoomKind::Class, sub),
            false,
        );
    }
    net.run(Duration::from_secs(3));
    assert!(net.clients.iter().all(|c| c.connected));
    (net, publisher)
}

/// Client side, untimed: publishes one frame of each kind, delivers what the shard sent to the
/// clients (so that ICE consent, RTCP and BWE feedback keep flowing), and returns every
/// client's datagrams toward the shard.
fn frame(net: &mut Net, publisher: usize, n: u64) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    net.publish_frame(publisher, n, n.is_multiple_of(60));
    let now = net.now;
    for (_, src, dst, bytes) in std::mem::take(&mut net.wire) {
        if let Some(c) = net.clients.iter_mut().find(|c| c.addr == dst) {
            let recv =
                str0m::net::Receive::new(str0m::net::Protocol::Udp, src, dst, &bytes).unwrap();
            let _ = c.rtc.handle_input(str0m::Input::Receive(now, recv));
        }
    }
    let mut out = vec![];
    for c in &mut net.clients {
        let _ = c.rtc.handle_input(str0m::Input::Timeout(now));
        while let Ok(o) = c.rtc.poll_output() {
            match o {
                str0m::Output::Timeout(_) => break,
                str0m::Output::Transmit(t) => out.push((c.addr, t.destination, t.contents.into())),
                str0m::Output::Event(_) => {}
            }
        }
    }
    out
}

/// Feeds the datagrams and runs the shard for one frame interval; returns datagrams sent.
fn forward(net: &mut Net, datagrams: &[(SocketAddr, SocketAddr, Vec<u8>)]) -> u64 {
    net.delay = Duration::ZERO;
    let before = net.shard_transmits;
    for (src, dst, bytes) in datagrams {
        net.shards[0].handle_input(
            net.now,
            Input::Receive {
                source: *src,
                destination: *dst,
                contents: bytes,
            },
        );
        net.poll_shard();
    }
    let end = net.now + Duration::from_millis(33);
    loop {
        let next = match net.shards[0].poll_output() {
            Output::Timeout(t) => t,
            _ => unreachable!("drained above"),
        };
        if next > end {
            break;
        }
        net.now = next.max(net.now);
        net.shards[0].handle_input(net.now, Input::Timeout);
        net.poll_shard();
    }
    net.now = end;
    net.shard_transmits - before
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for n in [10usize, 50, 200] {
        let (mut net, publisher) = setup(n);
        // Warm up and measure packets per frame interval for the throughput figure.
        let mut frame_no = 0u64;
        let (mut packets, mut busy) = (0u64, Duration::ZERO);
        for _ in 0..SETTLE_FRAMES {
            let d = frame(&mut net, publisher, frame_no);
            frame_no += 1;
            let t = Instant::now();
            packets += forward(&mut net, &d);
            busy += t.elapsed();
        }
        let per_frame = packets / SETTLE_FRAMES;
        println!(
            "forward/{n}: {per_frame} datagrams out per 33 ms frame interval, {:.0} packets/s through the core on one core",
            packets as f64 / busy.as_secs_f64()
        );
        group.throughput(Throughput::Elements(per_frame));
        group.bench_function(format!("1_publisher_to_{n}_subscribers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = frame(&mut net, publisher, frame_no);
                    frame_no += 1;
                    let t = Instant::now();
                    forward(&mut net, &d);
                    total += t.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
