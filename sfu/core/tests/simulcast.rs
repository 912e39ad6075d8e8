//! Simulcast through the core: a publisher sends three RID layers, a subscriber behind an
//! emulated bottleneck (str0m-netem) gets the layer its bandwidth estimate allows, and moves
//! up when the bottleneck goes away — switching only on keyframes. Forced clock, no sockets.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Net, all_grants, identity};
use nexus_sfu_core::{Grants, RoomKind};
use std::time::Duration;
use str0m::format::Codec;
use str0m::media::Rid;
use str0m_netem::{Bitrate, DataSize, NetemConfig};

/// The layers, low to high: rid, payload bytes per frame (at 30 fps: ~60, ~240, ~960 kbps).
const LAYERS: [(&str, usize); 3] = [("q", 250), ("h", 1000), ("f", 4000)];

/// A publisher that behaves like an encoder: a keyframe on a layer when asked for one (PLI
/// with that rid, or without a rid for all layers), otherwise a keyframe every 10 s only.
struct Encoder {
    publisher: usize,
    frame: u64,
    requests_seen: usize,
}

impl Encoder {
    fn run(&mut self, net: &mut Net, secs: u64) {
        for _ in 0..secs * 30 {
            let requested: Vec<Option<Rid>> =
                net.clients[self.publisher].keyframe_rids[self.requests_seen..].to_vec();
            self.requests_seen += requested.len();
            for (layer, (rid, len)) in LAYERS.iter().enumerate() {
                let asked = requested
                    .iter()
                    .any(|r| r.is_none_or(|r| r == Rid::from(*rid)));
                let key = asked || self.frame.is_multiple_of(300);
                net.publish_layer(self.publisher, rid, self.frame, key, layer as u8, *len);
            }
            self.frame += 1;
            net.run(Duration::from_millis(33));
        }
    }
}

/// (layer marker, keyframe) of every video frame the client received, in order. Asserts that
/// none was lost, so the sequence is exactly what the SFU sent.
fn received_layers(net: &Net, client: usize) -> Vec<(u8, bool)> {
    let frames: Vec<_> = net.clients[client]
        .received
        .iter()
        .filter(|d| d.params.spec().codec == Codec::Vp8)
        .collect();
    assert!(
        frames.iter().all(|d| d.contiguous),
        "a frame was lost on the way to the subscriber"
    );
    frames
        .iter()
        .map(|d| (d.data[1], d.is_keyframe()))
        .collect()
}

/// A bottleneck of `kbps` with a deep buffer: congestion shows as queueing delay (which the
/// delay-based estimator reacts to) rather than tail drops.
fn bottleneck(kbps: u64) -> NetemConfig {
    NetemConfig::new()
        .link(Bitrate::kbps(kbps), DataSize::kbytes(300))
        .seed(7)
}

fn a_subscriber_with_low_bandwidth_gets_the_low_layer_and_switches_up_on_recovery(shards: usize) {
    let mut net = Net::with_shards(shards);
    let publisher = net.connect_simulcast(
        identity("teacher", "class-sim", RoomKind::Class, all_grants()),
        &LAYERS.map(|(rid, _)| rid),
    );
    let subscriber = net.connect(
        identity(
            "student",
            "class-sim",
            RoomKind::Class,
            Grants {
                publish: false,
                subscribe: true,
                admin: false,
            },
        ),
        false,
    );
    // 150 kbps: the low layer fits, the middle one (~240 kbps) does not. The subscriber starts
    // on the top layer (no estimate yet) and must come down.
    net.set_downlink(subscriber, bottleneck(150));
    net.run(Duration::from_secs(2));
    assert!(
        net.clients.iter().all(|c| c.connected),
        "ICE/DTLS did not connect"
    );
    let mut encoder = Encoder {
        publisher,
        frame: 0,
        requests_seen: 0,
    };

    // Phase 1: constrained for 20 s (longer than str0m's 15 s stagnation probe), so recovery
    // relies on the SFU's own upgrade probes. The subscriber ends on the low layer.
    encoder.run(&mut net, 20);
    let phase1 = received_layers(&net, subscriber);
    let settled: Vec<u8> = phase1[phase1.len().saturating_sub(60)..]
        .iter()
        .map(|(layer, _)| *layer)
        .collect();
    assert!(
        settled.len() >= 50,
        "the constrained subscriber stalled: {} frames in its last 2 s",
        settled.len()
    );
    assert!(
        settled.iter().all(|l| *l == 0),
        "constrained subscriber is not on the low layer: {settled:?}"
    );

    // Phase 2: the bottleneck goes away; BWE probes up and the subscriber reaches the top.
    net.set_downlink(subscriber, bottleneck(10_000));
    encoder.run(&mut net, 20);
    let all = received_layers(&net, subscriber);
    let recovered: Vec<u8> = all[all.len() - 60..].iter().map(|(l, _)| *l).collect();
    assert!(
        recovered.iter().all(|l| *l == 2),
        "recovered subscriber is not on the top layer: {recovered:?}"
    );

    // Every change of layer seen by the subscriber starts with a keyframe of the new layer.
    let mut switches = 0;
    for pair in all.windows(2) {
        let ((from, _), (to, key)) = (pair[0], pair[1]);
        if from != to {
            switches += 1;
            assert!(key, "switched from layer {from} to {to} on a delta frame");
        }
    }
    assert!(
        switches >= 2,
        "expected a switch down and up, saw {switches}"
    );
    assert_eq!(net.stats().layer_switches, switches);
    // Keyframes came on request (the encoder's own interval is 10 s), per layer.
    assert!(
        net.clients[publisher]
            .keyframe_rids
            .iter()
            .any(|r| *r == Some(Rid::from("q")))
    );
}

on_one_and_two_shards!(
    a_subscriber_with_low_bandwidth_gets_the_low_layer_and_switches_up_on_recovery,
);
