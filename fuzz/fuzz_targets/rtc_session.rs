#![no_main]
//! The room protocol (`/rtc`), hostile: members of a class or a consultation send arbitrary
//! sequences of messages — well-formed ones naming real or made-up participants and tracks,
//! SDP offers and answers (a browser's, edited, or junk), raw JSON — and drop, resume, get
//! admitted, while the clock moves and rooms close. The room spans two shards, as a class does
//! on a node with two cores: members who only receive are placed on either (the input says
//! which), and the messages between the shards are handed over as the driver does. No shard
//! may panic, and no exchange may loop.
//!
//! Each step of the input is `[who][what][argument bytes…]`; ids the shards hand out (in their
//! replies and signals) are collected, so later steps can name them.

mod sfu_common;

use libfuzzer_sys::fuzz_target;
use nexus_sfu_core::protocol::{ClientMessage, JoinOptions};
use nexus_sfu_core::{
    Command, Grants, Identity, Output, ParticipantId, Reply, RoomId, RoomKind, Shard, ShardConfig,
};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The cast: (user, admin, publish).
const CAST: [(&str, bool, bool); 4] = [
    ("teacher", true, true),
    ("student-1", false, false),
    ("student-2", false, true),
    ("guest", false, false),
];

struct Session {
    /// Shard 0 is the room's home (publishers, admins, consultations).
    shards: Vec<Shard>,
    now: Instant,
    room: RoomId,
    kind: RoomKind,
    /// Participant of each cast member, once joined.
    members: [Option<ParticipantId>; CAST.len()],
    /// Strings the shard handed out (ids, tracks, resume tokens, SDP), for later steps to use.
    seen: Vec<String>,
}

impl Session {
    fn identity(&self, who: usize) -> Identity {
        let (user, admin, publish) = CAST[who];
        Identity {
            user: user.into(),
            name: None,
            room: self.room.clone(),
            kind: self.kind,
            grants: Grants {
                publish,
                subscribe: true,
                admin,
            },
        }
    }

    /// The shard a command goes to, as the driver routes it.
    fn command(&mut self, shard: usize, who: Option<usize>, command: Command) {
        match self.shards[shard].handle_command(self.now, command) {
            Ok(Reply::Joined { participant }) => {
                if let Some(who) = who {
                    self.members[who] = Some(participant);
                }
                self.seen.push(participant.to_string());
            }
            Ok(Reply::Session { id, answer }) => {
                self.seen.push(id.to_string());
                self.seen.push(answer);
            }
            Ok(_) | Err(_) => {}
        }
        self.drain();
    }

    /// Drains every shard's outputs, handing messages between shards over at once, until
    /// all are quiet (bounded, in case they never are); keeps the strings signals carry.
    fn drain(&mut self) {
        for _ in 0..1_000 {
            let mut relays = Vec::new();
            for shard in &mut self.shards {
                for _ in 0..10_000 {
                    match shard.poll_output() {
                        Output::Timeout(_) => break,
                        Output::Signal { message, .. } => {
                            if let Ok(v) = serde_json::to_value(&message) {
                                collect(&v, &mut self.seen);
                            }
                        }
                        Output::Relay { to, message } => relays.push((to, message)),
                        _ => {}
                    }
                }
            }
            if relays.is_empty() {
                return;
            }
            for (to, message) in relays {
                if let Some(shard) = self.shards.get_mut(usize::from(to)) {
                    shard.handle_relay(self.now, message);
                }
            }
        }
        panic!("the shards kept producing output");
    }

    /// Where a member's join goes: the home shard, or — a class member who only receives —
    /// the shard the input picks.
    fn placement(&self, who: usize, pick: bool) -> usize {
        let (_, _, publish) = CAST[who];
        usize::from(self.kind == RoomKind::Class && !publish && pick)
    }

    /// A string the shard handed out, or one made of the input.
    fn pick(&self, b: &[u8]) -> String {
        match b.split_first() {
            Some((&i, _)) if !self.seen.is_empty() && i < 0xe0 => {
                self.seen[usize::from(i) % self.seen.len()].clone()
            }
            _ => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

/// Every string in a JSON value, at most 64 kept.
fn collect(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if out.len() < 64 => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
        Value::Object(o) => o.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}

fn rtc_session(data: &[u8]) {
    str0m::crypto::from_feature_flags().install_process_default();
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let sfu: SocketAddr = "10.0.0.1:5000".parse().expect("address");
    let shards: Result<Vec<Shard>, _> = (0..2u8)
        .map(|k| {
            let mut addr = sfu;
            addr.set_port(5000 + u16::from(k));
            let mut config = ShardConfig::new(k, addr, 7 + u64::from(k));
            config.shards = 2;
            Shard::new(now, config)
        })
        .collect();
    let Ok(shards) = shards else {
        return;
    };
    let kind = if setup & 1 == 0 {
        RoomKind::Class
    } else {
        RoomKind::Consultation
    };
    let mut s = Session {
        shards,
        now,
        room: RoomId::new("room-f").expect("room name"),
        kind,
        members: [None; CAST.len()],
        seen: Vec::new(),
    };
    let mut steps = 0;
    while let Some(&[who, what, len]) = rest.get(..3) {
        let end = (3 + usize::from(len % 64)).min(rest.len());
        let arg = &rest[3..end];
        rest = &rest[end..];
        steps += 1;
        if steps > 64 {
            break;
        }
        let who = usize::from(who) % CAST.len();
        let flag = arg.first().is_some_and(|b| b & 1 == 1);
        let message = match what % 18 {
            0 => {
                let options = JoinOptions {
                    resume: flag.then(|| s.pick(&arg[1..])),
                    auto_subscribe: arg.get(1).map(|b| b & 1 == 0),
                };
                let identity = s.identity(who);
                // A resume goes back to the shard the token names (its first two hex digits).
                let shard = match &options.resume {
                    Some(token) => token
                        .get(..2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .map_or(0, |k| usize::from(k) % 2),
                    None => s.placement(who, setup & 2 != 0),
                };
                s.command(shard, Some(who), Command::Join { identity, options });
                continue;
            }
            1 => json!({"type": "offer", "sdp": sfu_common::offers()[usize::from(flag)]}),
            2 => {
                let sdp = sfu_common::edited(&sfu_common::offers()[usize::from(flag)], arg);
                json!({"type": "offer", "sdp": sdp, "sources": {"0": "screen", "1": "camera"}})
            }
            3 => json!({"type": "answer", "sdp": s.pick(arg)}),
            4 => json!({"type": "subscribe", "track": s.pick(arg), "max_height": arg.len() * 90}),
            5 => json!({"type": "unsubscribe", "track": s.pick(arg)}),
            6 => json!({"type": "mute", "track": s.pick(arg), "muted": flag}),
            7 => json!({"type": "raise_hand", "raised": flag}),
            8 => json!({"type": "grant_publish", "participant": s.pick(arg), "granted": !flag}),
            9 => json!({"type": "admit", "participant": s.pick(arg)}),
            10 => json!({"type": "chat", "text": String::from_utf8_lossy(arg)}),
            11 => json!({"type": "leave"}),
            12 => match serde_json::from_slice::<Value>(arg) {
                Ok(v) => v,
                Err(_) => continue,
            },
            13 => {
                if let Some(p) = s.members[who] {
                    s.command(usize::from(p.shard()) % 2, None, Command::Disconnected(p));
                }
                continue;
            }
            14 => {
                let room = s.room.clone();
                let who = s.pick(arg);
                s.command(0, None, Command::Admit { room, who });
                continue;
            }
            15 => {
                let room = s.room.clone();
                for k in 0..2 {
                    s.command(k, None, Command::CloseRoom(room.clone()));
                }
                continue;
            }
            16 => {
                let identity = s.identity(who);
                let offer = sfu_common::offers()[usize::from(!identity.grants.publish)].clone();
                let command = if flag {
                    Command::WhepOffer {
                        identity,
                        offer,
                        publisher: s.pick(&arg[1..]).parse().ok(),
                    }
                } else {
                    Command::WhipOffer { identity, offer }
                };
                s.command(usize::from(flag) & usize::from(setup >> 2), None, command);
                continue;
            }
            _ => {
                let ms = u64::from(arg.first().copied().unwrap_or(1)) * 40;
                s.now += Duration::from_millis(ms);
                for shard in &mut s.shards {
                    shard.handle_input(s.now, nexus_sfu_core::Input::Timeout);
                }
                s.drain();
                continue;
            }
        };
        // Messages come from a member, as they would over its WebSocket; those the room
        // protocol would not parse are refused before the shard sees them.
        let Some(from) = s.members[who] else {
            continue;
        };
        let Ok(message) = serde_json::from_value::<ClientMessage>(message) else {
            continue;
        };
        s.command(
            usize::from(from.shard()) % 2,
            None,
            Command::Message { from, message },
        );
    }
    for k in 0..2 {
        s.command(k, None, Command::Shutdown);
    }
}

fuzz_target!(|data: &[u8]| rtc_session(data));
