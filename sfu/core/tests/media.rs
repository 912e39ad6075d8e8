//! Media through the core between str0m peers over a simulated network, with a forced clock.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Net, all_grants, identity};
use nexus_sfu_core::{Command, Grants, JoinOptions, RoomKind, SfuError};
use std::time::Duration;

fn subscriber() -> Grants {
    Grants {
        publish: false,
        subscribe: true,
        admin: false,
    }
}

/// Publishes 30 frames a second for `secs`, a keyframe every 2 s.
fn stream(net: &mut Net, publisher: usize, from: u64, secs: u64) {
    for n in from..from + secs * 30 {
        net.publish_frame(publisher, n, n.is_multiple_of(60));
        net.run(Duration::from_millis(33));
    }
}

fn media_flows_from_a_whip_publisher_to_whep_subscribers(shards: usize) {
    let mut net = Net::with_shards(shards);
    let publisher = net.connect(
        identity("teacher", "class-1", RoomKind::Class, all_grants()),
        true,
    );
    let a = net.connect(
        identity("s1", "class-1", RoomKind::Class, subscriber()),
        false,
    );
    let b = net.connect(
        identity("s2", "class-1", RoomKind::Class, subscriber()),
        false,
    );
    net.run(Duration::from_secs(2));
    assert!(
        net.clients.iter().all(|c| c.connected),
        "ICE/DTLS did not connect"
    );
    stream(&mut net, publisher, 0, 2);
    for s in [a, b] {
        net.assert_media(s, 50);
    }
    let stats = net.stats();
    // Once, however many shards it spans.
    assert_eq!(stats.rooms, 1);
    assert_eq!(stats.participants, 3);
    assert!(stats.frames_forwarded > 200);
}

fn forwarded_packets_leave_in_the_round_they_arrive(shards: usize) {
    // Packets are forwarded as they arrive, and a subscriber's packets are sent without waiting
    // for the shard's next timer (str0m's pacer releases one per timeout; the shard serves a
    // due peer at once). On the forced clock, the delay is zero.
    let mut net = Net::with_shards(shards);
    let publisher = net.connect(
        identity("teacher", "class-4", RoomKind::Class, all_grants()),
        true,
    );
    for s in ["s1", "s2", "s3"] {
        net.connect(identity(s, "class-4", RoomKind::Class, subscriber()), false);
    }
    net.run(Duration::from_secs(2));
    stream(&mut net, publisher, 0, 2);
    let delays = &net.forward_delays;
    // 3 subscribers x (30 video frames of ~3 packets + 50 audio packets) a second, for 2 s.
    assert!(delays.len() > 3 * 2 * 100, "{} timed", delays.len());
    let late = delays.iter().filter(|d| !d.is_zero()).count();
    assert_eq!(late, 0, "{late} of {} packets waited", delays.len());
}

fn a_late_joiner_gets_a_keyframe_promptly_and_requests_are_throttled(shards: usize) {
    let mut net = Net::with_shards(shards);
    let publisher = net.connect(
        identity("teacher", "class-2", RoomKind::Class, all_grants()),
        true,
    );
    let early = net.connect(
        identity("s1", "class-2", RoomKind::Class, subscriber()),
        false,
    );
    net.run(Duration::from_secs(2));
    stream(&mut net, publisher, 0, 1);
    assert!(net.video_frames(early) > 20);
    let before = net.clients[publisher].keyframe_requests;
    // Three late joiners at once: the publisher sees one request, not three.
    for i in 0..3 {
        net.connect(
            identity(
                &format!("late{i}"),
                "class-2",
                RoomKind::Class,
                subscriber(),
            ),
            false,
        );
    }
    net.run(Duration::from_millis(300));
    let after = net.clients[publisher].keyframe_requests;
    assert!(after > before, "no keyframe request reached the publisher");
    assert!(
        after - before <= 2,
        "keyframe requests not throttled: {}",
        after - before
    );
    assert!(net.stats().keyframe_requests_throttled >= 1);
}

fn nack_and_rtx_recover_from_loss(shards: usize) {
    let mut net = Net::with_shards(shards);
    let publisher = net.connect(
        identity("teacher", "class-3", RoomKind::Class, all_grants()),
        true,
    );
    let sub = net.connect(
        identity("s1", "class-3", RoomKind::Class, subscriber()),
        false,
    );
    net.run(Duration::from_secs(2));
    // Every 20th datagram from the SFU is lost (5%).
    net.drop_every = 20;
    stream(&mut net, publisher, 0, 3);
    net.drop_every = 0;
    net.run(Duration::from_millis(500));
    let frames = net.video_frames(sub);
    // 90 frames sent; RTX fills the gaps so (nearly) all arrive.
    assert!(frames >= 85, "only {frames} of 90 video frames recovered");
    assert!(net.stats().nacks > 0, "no NACKs seen");
}

fn leaving_ends_the_session_and_the_empty_room_closes_after_the_grace(shards: usize) {
    let mut net = Net::with_shards(shards);
    let publisher = net.connect(
        identity("teacher", "class-4", RoomKind::Class, all_grants()),
        true,
    );
    net.run(Duration::from_secs(1));
    let session = net.clients[publisher].session.unwrap();
    let room = nexus_sfu_core::RoomId::new("class-4").unwrap();
    net.shards[0]
        .handle_command(net.now, nexus_sfu_core::Command::EndSession(session))
        .unwrap();
    assert!(net.shards[0].has_room(&room));
    net.run(Duration::from_secs(29));
    assert!(net.shards[0].has_room(&room));
    net.run(Duration::from_secs(2));
    assert!(!net.shards[0].has_room(&room));
}

/// Reports the shard's loop busy for `share` of each 100 ms while the class streams for
/// `secs` (the injected load of a saturated shard; the forced clock makes it exact).
fn stream_under_load(net: &mut Net, publisher: usize, from: u64, secs: u64, share: f64) {
    for n in from..from + secs * 30 {
        net.publish_frame(publisher, n, n.is_multiple_of(60));
        net.run(Duration::from_millis(33));
        net.shards[0].record_busy(net.now, Duration::from_millis(33).mul_f64(share));
    }
}

#[test]
fn a_saturated_shard_refuses_new_subscribers_and_keeps_feeding_the_admitted_ones() {
    let mut net = Net::new();
    let class = |user: &str, grants| identity(user, "class-1", RoomKind::Class, grants);
    let publisher = net.connect(class("teacher", all_grants()), true);
    let admitted = net.connect(class("s1", subscriber()), false);
    net.run(Duration::from_secs(2));
    assert!(net.clients.iter().all(|c| c.connected));

    // The loop busy 90% of the time for 3 s (over the 80% bar of the 2 s window).
    stream_under_load(&mut net, publisher, 0, 3, 0.9);
    let before = net.video_frames(admitted);
    let refused = net.try_connect(class("s2", subscriber()), false);
    assert_eq!(
        refused.err(),
        Some(SfuError::Saturated {
            retry_after_secs: 2
        })
    );
    // Over the room protocol too, for a joiner that only receives; a publisher still gets in.
    let join = |user: &str, grants| Command::Join {
        identity: class(user, grants),
        options: JoinOptions::default(),
    };
    assert!(matches!(
        net.shards[0].handle_command(net.now, join("s3", subscriber())),
        Err(SfuError::Saturated { .. })
    ));
    assert!(
        net.shards[0]
            .handle_command(net.now, join("assistant", all_grants()))
            .is_ok()
    );
    assert_eq!(net.shards[0].stats().refused_saturated, 2);

    // The admitted subscriber keeps receiving while the shard stays saturated.
    stream_under_load(&mut net, publisher, 90, 1, 0.9);
    assert!(
        net.video_frames(admitted) >= before + 25,
        "video frames {before} → {}",
        net.video_frames(admitted)
    );

    // Load halves: within a window the shard admits again.
    stream_under_load(&mut net, publisher, 120, 3, 0.4);
    let late = net
        .try_connect(class("s2", subscriber()), false)
        .expect("admitted once the load fell");
    net.run(Duration::from_secs(1));
    stream(&mut net, publisher, 210, 1);
    assert!(net.video_frames(late) > 0);
}

/// Publishes 30 frames a second for `secs` like an encoder: a keyframe when the publisher was
/// asked for one since the last frame (PLI), otherwise every 10 s only.
fn stream_answering_requests(net: &mut Net, publisher: usize, from: u64, secs: u64) {
    let mut seen = net.clients[publisher].keyframe_requests;
    for n in from..from + secs * 30 {
        let asked = net.clients[publisher].keyframe_requests > seen;
        seen = net.clients[publisher].keyframe_requests;
        net.publish_frame(publisher, n, asked || n.is_multiple_of(300));
        net.run(Duration::from_millis(33));
    }
}

#[test]
fn a_room_over_two_shards_feeds_both_and_a_late_joiner_on_the_second_gets_a_keyframe() {
    // The publisher is on shard 0; its packets are relayed to shard 1, which fans them out to
    // its own subscribers. Keyframe requests from shard 1 travel back to shard 0, whose
    // throttle covers the whole room.
    let mut net = Net::with_shards(2);
    let class = |user: &str, grants| identity(user, "class-9", RoomKind::Class, grants);
    let publisher = net.connect(class("teacher", all_grants()), true);
    let on_first = net.connect_on(class("s0", subscriber()), 0);
    let on_second = net.connect_on(class("s1", subscriber()), 1);
    net.run(Duration::from_secs(2));
    assert!(net.clients.iter().all(|c| c.connected));
    // The first keyframe (frame 0) comes from the periodic interval.
    stream_answering_requests(&mut net, publisher, 0, 2);
    for s in [on_first, on_second] {
        net.assert_media(s, 50);
    }
    assert_eq!(net.clients[on_second].shard, 1);
    assert!(net.shards[1].stats().frames_forwarded > 100);

    // Two late joiners at once, one on each shard; the next periodic keyframe is 8 s away.
    let requests_before = net.clients[publisher].keyframe_requests;
    let late_second = net.connect_on(class("late1", subscriber()), 1);
    let late_first = net.connect_on(class("late0", subscriber()), 0);
    stream_answering_requests(&mut net, publisher, 60, 1);
    for late in [late_first, late_second] {
        let video: Vec<_> = net.clients[late]
            .received
            .iter()
            .filter(|d| d.params.spec().codec == str0m::format::Codec::Vp8)
            .collect();
        assert!(video.len() >= 10, "late joiner got {} frames", video.len());
        assert!(video[0].is_keyframe(), "the first frame is not a keyframe");
    }
    // The publisher was asked once for both (throttled on the publisher's shard); the second
    // shard sent no request of its own.
    let requests = net.clients[publisher].keyframe_requests - requests_before;
    assert!((1..=2).contains(&requests), "{requests} keyframe requests");
    assert!(net.shards[0].stats().keyframe_requests_throttled >= 1);
    assert_eq!(net.shards[1].stats().keyframe_requests, 0);
}

#[test]
fn a_whep_session_on_another_shard_taken_before_anyone_publishes_fills_in() {
    // The room exists only on shard 1 when the subscriber arrives; the publisher's shard learns
    // of the interest and relays the track once it is published.
    let mut net = Net::with_shards(2);
    let class = |user: &str, grants| identity(user, "class-10", RoomKind::Class, grants);
    let early = net.connect_on(class("s1", subscriber()), 1);
    net.run(Duration::from_secs(1));
    let publisher = net.connect(class("teacher", all_grants()), true);
    net.run(Duration::from_secs(2));
    assert!(net.clients.iter().all(|c| c.connected));
    stream(&mut net, publisher, 0, 2);
    net.assert_media(early, 50);

    // The publisher leaves and another one comes: its tracks fill the same WHEP session.
    let session = net.clients[publisher].session.unwrap();
    net.shards[0]
        .handle_command(net.now, nexus_sfu_core::Command::EndSession(session))
        .unwrap();
    net.run(Duration::from_millis(500));
    let before = net.video_frames(early);
    let next = net.connect(class("assistant", all_grants()), true);
    net.run(Duration::from_secs(2));
    stream(&mut net, next, 0, 2);
    assert!(
        net.video_frames(early) > before + 50,
        "video {before} → {}",
        net.video_frames(early)
    );
}

#[test]
fn regression_packets_read_together_for_one_subscriber_do_not_wait_for_the_timer() {
    // str0m's pacer asks for its next round 1 µs after its last; a peer's rounds ran from the
    // shard's `now`, so a second packet for the same subscriber at the same `now` (a burst read
    // in one batch) found the pacer's step beyond `now + 1 µs` and waited for the shard's timer.
    let mut net = Net::new();
    let publisher = net.connect(
        identity("teacher", "class-11", RoomKind::Class, all_grants()),
        true,
    );
    net.connect(
        identity("s1", "class-11", RoomKind::Class, subscriber()),
        false,
    );
    net.run(Duration::from_secs(2));
    stream(&mut net, publisher, 0, 1);
    net.forward_delays.clear();
    for n in 30..60 {
        net.publish_frame(publisher, n, false);
        // The publisher sends a frame's datagrams a millisecond apart; they reach the shard
        // together.
        for _ in 0..6 {
            net.now += Duration::from_millis(1);
            net.step_clients();
        }
        net.bunch_from(publisher);
        net.run(Duration::from_millis(27));
    }
    let delays = &net.forward_delays;
    assert!(delays.len() >= 30 * 3, "{} timed", delays.len());
    let late = delays.iter().filter(|d| !d.is_zero()).count();
    assert_eq!(late, 0, "{late} of {} packets waited", delays.len());
}

on_one_and_two_shards!(
    media_flows_from_a_whip_publisher_to_whep_subscribers,
    forwarded_packets_leave_in_the_round_they_arrive,
    a_late_joiner_gets_a_keyframe_promptly_and_requests_are_throttled,
    nack_and_rtx_recover_from_loss,
    leaving_ends_the_session_and_the_empty_room_closes_after_the_grace,
);
