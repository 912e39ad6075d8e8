#![no_main]
//! What the SFU takes from the network and from signaling, hostile: arbitrary SDP offers over
//! WHIP and WHEP, and arbitrary datagrams — from strangers, from a session's address, and
//! dressed as STUN binding requests carrying a live session's ufrag, so that they get past the
//! shard's routing into the session's peer. The shard must never panic; an offer is answered
//! or refused with `BadSdp`-like errors; every datagram is handled or dropped.
//!
//! The check lives here rather than in `src/lib.rs`, which the CAP crate's stable tests
//! include; `server/tests/media_access.rs` sends mangled offers through the real server.

mod sfu_common;

use libfuzzer_sys::fuzz_target;
use nexus_sfu_core::{
    Command, Grants, Identity, Input, Output, Reply, RoomId, RoomKind, Shard, ShardConfig,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SFU: &str = "10.0.0.1:5000";

fn identity(publish: bool) -> Identity {
    Identity {
        user: "fuzz".into(),
        name: None,
        room: RoomId::new("class-f").expect("room name"),
        kind: RoomKind::Class,
        grants: Grants {
            publish,
            subscribe: true,
            admin: false,
        },
    }
}

/// Drains the shard's outputs (bounded, in case something loops).
fn drain(shard: &mut Shard) {
    for _ in 0..10_000 {
        if let Output::Timeout(_) = shard.poll_output() {
            return;
        }
    }
    panic!("the shard kept producing output");
}

/// A STUN binding request whose USERNAME starts with `ufrag`, followed by `rest` as further
/// attributes (the length field covers them, truncated to what fits).
fn stun_with_ufrag(ufrag: &str, rest: &[u8]) -> Vec<u8> {
    let name = format!("{ufrag}:peer");
    let mut attrs = vec![0x00, 0x06];
    attrs.extend_from_slice(&(name.len() as u16).to_be_bytes());
    attrs.extend_from_slice(name.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&rest[..rest.len().min(1000)]);
    let mut p = vec![0x00, 0x01];
    p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    p.extend_from_slice(&[7; 12]);
    p.extend_from_slice(&attrs);
    p
}

fn sfu_input(data: &[u8]) {
    str0m::crypto::from_feature_flags().install_process_default();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sfu: SocketAddr = SFU.parse().expect("address");
    let mut now = Instant::now();
    let Ok(mut shard) = Shard::new(now, ShardConfig::new(0, sfu, 7)) else {
        return;
    };
    match mode % 6 {
        // An arbitrary offer, or a browser's offer edited byte by byte, to publish or to
        // subscribe.
        0 | 1 | 4 | 5 => {
            let offer = if mode % 6 < 2 {
                String::from_utf8_lossy(rest).into_owned()
            } else {
                sfu_common::edited(&sfu_common::offers()[0], rest)
            };
            let command = if mode % 2 == 0 {
                Command::WhipOffer {
                    identity: identity(true),
                    offer,
                }
            } else {
                Command::WhepOffer {
                    identity: identity(false),
                    offer,
                    publisher: None,
                }
            };
            let _ = shard.handle_command(now, command);
            drain(&mut shard);
        }
        // Datagrams after a real session was opened: raw from two addresses, or as STUN
        // requests naming the session's ufrag.
        _ => {
            let reply = shard.handle_command(
                now,
                Command::WhipOffer {
                    identity: identity(true),
                    offer: sfu_common::offers()[0].clone(),
                },
            );
            let Ok(Reply::Session { answer, .. }) = reply else {
                panic!("a valid offer was refused: {reply:?}");
            };
            drain(&mut shard);
            let ufrag = answer
                .lines()
                .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
                .expect("the answer has an ICE ufrag")
                .to_string();
            let stun = mode % 6 == 3;
            // Each datagram: [length][source selector][bytes].
            let mut at = 0;
            while let Some(&[len, from]) = rest.get(at..at + 2) {
                let body =
                    &rest[(at + 2).min(rest.len())..(at + 2 + usize::from(len)).min(rest.len())];
                at += 2 + usize::from(len);
                let source: SocketAddr = match from % 3 {
                    0 => "10.0.0.2:6000",
                    1 => "10.0.0.3:6000",
                    _ => "[2001:db8::1]:6000",
                }
                .parse()
                .expect("address");
                let contents = if stun {
                    stun_with_ufrag(&ufrag, body)
                } else {
                    body.to_vec()
                };
                shard.handle_input(
                    now,
                    Input::Receive {
                        source,
                        destination: sfu,
                        contents: &contents,
                    },
                );
                drain(&mut shard);
                if from & 0x80 != 0 {
                    now += Duration::from_millis(u64::from(from & 0x3f) * 50);
                    shard.handle_input(now, Input::Timeout);
                    drain(&mut shard);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| sfu_input(data));
