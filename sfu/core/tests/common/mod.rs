//! A simulated network of str0m client peers around the shards of one node (one, or several
//! that a class room spans), with a forced clock: no sockets, no sleeping. Shared by the
//! integration tests and the forwarding bench.

#![allow(dead_code, clippy::unwrap_used)]

use nexus_sfu_core::{
    ClientMessage, Command, Grants, Identity, Input, JoinOptions, Output, ParticipantId, Relay,
    Reply, RoomId, RoomKind, ServerMessage, SessionId, SfuError, Shard, ShardConfig,
};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaData, MediaKind, MediaTime, Mid, Rid, Simulcast};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Rtc};
use str0m_netem::{Netem, NetemConfig};

/// The first shard's (simulated) socket address; shard k listens on port 5000 + k.
pub const SFU_ADDR: &str = "10.0.0.1:5000";

fn shard_addr(k: usize) -> SocketAddr {
    let mut addr: SocketAddr = SFU_ADDR.parse().unwrap();
    addr.set_port(5000 + k as u16);
    addr
}

/// One browser-like client.
pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub session: Option<SessionId>,
    pub mids: Vec<(Mid, MediaKind)>,
    pub received: Vec<MediaData>,
    pub keyframe_requests: usize,
    /// The layer (rid) of every keyframe request received, in order.
    pub keyframe_rids: Vec<Option<Rid>>,
    pub connected: bool,
    /// An emulated bottleneck on the path from the SFU to this client (str0m-netem).
    pub downlink: Option<Netem<Vec<u8>>>,
    /// The shard the client's session is on.
    pub shard: usize,
    /// A room-protocol member: its participant id.
    pub participant: Option<ParticipantId>,
    /// Room-protocol messages received, in order.
    pub signals: Vec<ServerMessage>,
    /// The client's own offer in flight (room protocol).
    pub pending: Option<SdpPendingOffer>,
    /// Data-channel messages received.
    pub channel_data: Vec<Vec<u8>>,
    /// The data channel `chat` of a room-protocol member.
    pub chat: Option<ChannelId>,
    /// Keyframe requests its encoder answered ([`Net::publish_answering`]).
    pub answered_requests: usize,
}

/// The network: the shards, clients, datagrams in flight, the forced clock.
pub struct Net {
    /// Shard 0 is the room's own shard (publishers and room-protocol members go there); WHEP
    /// subscribers go to the shard with the fewest participants, as the driver places them on
    /// idle shards.
    pub shards: Vec<Shard>,
    /// Messages between shards not yet handed over: (to, message).
    relays: VecDeque<(usize, Relay)>,
    /// The shard the next WHEP client goes to, when chosen by the test.
    placed: Option<usize>,
    /// Room-protocol messages from clients not yet handed to their shard: (client, message).
    said: VecDeque<(usize, ClientMessage)>,
    /// When true, messages between shards are lost (as when a shard's relay queue is full).
    pub drop_relays: bool,
    pub clients: Vec<Client>,
    pub now: Instant,
    /// Datagrams in flight: (deliver at, source, destination, bytes).
    pub wire: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// One-way delay of every datagram.
    pub delay: Duration,
    /// Drop every n-th datagram toward clients (0 = no loss).
    pub drop_every: usize,
    sent: usize,
    /// Shard egress datagrams since the counter was reset (bench).
    pub shard_transmits: u64,
    /// When false, shard egress is counted but not delivered (bench: keeps clients idle).
    pub deliver_to_clients: bool,
    /// Per forwarded media datagram the shard could time (`Shard::take_arrival`): the delay
    /// from its packet's arrival to its transmission, on the forced clock.
    pub forward_delays: Vec<Duration>,
}

/// Declares, for each scenario `fn name(shards: usize)`, a test module `name` that runs it on
/// one shard (`one_shard`) and with the room spanning two shards (`room_over_two_shards`).
#[allow(unused_macros)] // the forwarding bench includes this module too
macro_rules! on_one_and_two_shards {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn one_shard() {
                    super::$name(1)
                }
                #[test]
                fn room_over_two_shards() {
                    super::$name(2)
                }
            }
        )*
    };
}

pub fn identity(user: &str, room: &str, kind: RoomKind, grants: Grants) -> Identity {
    Identity {
        user: user.into(),
        name: Some(user.into()),
        room: RoomId::new(room).unwrap(),
        kind,
        grants,
    }
}

pub fn all_grants() -> Grants {
    Grants {
        publish: true,
        subscribe: true,
        admin: true,
    }
}

impl Net {
    /// One shard.
    pub fn new() -> Net {
        Net::with_shards(1)
    }

    /// `n` shards of one node.
    pub fn with_shards(n: usize) -> Net {
        str0m::crypto::from_feature_flags().install_process_default();
        let now = Instant::now();
        let shards = (0..n)
            .map(|k| {
                let mut config = ShardConfig::new(k as u8, shard_addr(k), 7 + k as u64);
                config.shards = n as u8;
                Shard::new(now, config).unwrap()
            })
            .collect();
        Net {
            shards,
            relays: VecDeque::new(),
            placed: None,
            said: VecDeque::new(),
            drop_relays: false,
            clients: vec![],
            now,
            wire: VecDeque::new(),
            delay: Duration::from_millis(5),
            drop_every: 0,
            sent: 0,
            shard_transmits: 0,
            deliver_to_clients: true,
            forward_delays: vec![],
        }
    }

    fn new_client(&mut self) -> usize {
        let n = self.clients.len() as u8 + 2;
        let addr: SocketAddr = format!("10.0.0.{n}:6000").parse().unwrap();
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.clients.push(Client {
            rtc,
            addr,
            session: None,
            mids: vec![],
            received: vec![],
            keyframe_requests: 0,
            keyframe_rids: vec![],
            connected: false,
            downlink: None,
            shard: 0,
            participant: None,
            signals: vec![],
            pending: None,
            channel_data: vec![],
            chat: None,
            answered_requests: 0,
        });
        self.clients.len() - 1
    }

    /// Counters of all shards, summed.
    pub fn stats(&self) -> nexus_sfu_core::ShardStats {
        let mut t = nexus_sfu_core::ShardStats::default();
        for s in self.shards.iter().map(Shard::stats) {
            t.rooms += s.rooms;
            t.participants += s.participants;
            t.tracks += s.tracks;
            t.frames_forwarded += s.frames_forwarded;
            t.keyframe_requests += s.keyframe_requests;
            t.keyframe_requests_throttled += s.keyframe_requests_throttled;
            t.nacks += s.nacks;
            t.layer_switches += s.layer_switches;
            t.refused_saturated += s.refused_saturated;
            t.packets_out += s.packets_out;
        }
        t
    }

    /// Where a new WHEP subscriber goes: the shard with the fewest participants.
    fn subscriber_shard(&self) -> usize {
        (0..self.shards.len())
            .min_by_key(|&k| self.shards[k].stats().participants)
            .unwrap()
    }

    /// A client that offers `dir` audio + video; `publish` picks WHIP (else WHEP).
    pub fn connect(&mut self, identity: Identity, publish: bool) -> usize {
        self.try_connect(identity, publish).unwrap()
    }

    /// A WHEP client on shard `shard` (instead of the least loaded one).
    pub fn connect_on(&mut self, identity: Identity, shard: usize) -> usize {
        self.placed = Some(shard);
        let i = self.try_connect(identity, false);
        self.placed = None;
        i.unwrap()
    }

    /// [`Net::connect`], or the shard's refusal of the offer (no client is added then).
    pub fn try_connect(&mut self, identity: Identity, publish: bool) -> Result<usize, SfuError> {
        let i = self.new_client();
        let dir = if publish {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let shard = match self.placed {
            Some(k) => k,
            None if publish => 0,
            None => self.subscriber_shard(),
        };
        let c = &mut self.clients[i];
        c.shard = shard;
        let mut api = c.rtc.sdp_api();
        let a = api.add_media(MediaKind::Audio, dir, None, None, None);
        let v = api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        c.mids = vec![(a, MediaKind::Audio), (v, MediaKind::Video)];
        let offer = offer.to_sdp_string();
        let command = if publish {
            Command::WhipOffer { identity, offer }
        } else {
            Command::WhepOffer {
                identity,
                offer,
                publisher: None,
            }
        };
        let reply = match self.shards[shard].handle_command(self.now, command) {
            Ok(reply) => reply,
            Err(e) => {
                self.clients.pop();
                return Err(e);
            }
        };
        let Reply::Session { id, answer } = reply else {
            panic!("unexpected {reply:?}")
        };
        let c = &mut self.clients[i];
        c.session = Some(id);
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
        c.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        Ok(i)
    }

    /// A WHIP client publishing one video track as simulcast layers `rids`.
    pub fn connect_simulcast(&mut self, identity: Identity, rids: &[&str]) -> usize {
        let i = self.new_client();
        let c = &mut self.clients[i];
        let mut simulcast = Simulcast::new();
        for rid in rids {
            simulcast.add_send_layer(str0m::media::SimulcastLayer::new(rid));
        }
        let mut api = c.rtc.sdp_api();
        let v = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        );
        let (offer, pending) = api.apply().unwrap();
        c.mids = vec![(v, MediaKind::Video)];
        let reply = self.shards[0]
            .handle_command(
                self.now,
                Command::WhipOffer {
                    identity,
                    offer: offer.to_sdp_string(),
                },
            )
            .unwrap();
        let Reply::Session { id, answer } = reply else {
            panic!("unexpected {reply:?}")
        };
        let c = &mut self.clients[i];
        c.session = Some(id);
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
        c.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        i
    }

    /// A room-protocol (`/rtc`) member joining on shard `shard` (the driver puts a class
    /// member without the `publish` grant on the least busy shard, others on the room's, shard
    /// 0 here). Its `joined` and later messages collect in [`Client::signals`]; server offers
    /// are answered at once. It has no peer connection until [`Net::rtc_offer`].
    pub fn join_on(&mut self, identity: Identity, shard: usize) -> usize {
        self.try_join_on(identity, shard, JoinOptions::default())
            .unwrap()
    }

    /// [`Net::join_on`] with options (a resume), or the shard's refusal.
    pub fn try_join_on(
        &mut self,
        identity: Identity,
        shard: usize,
        options: JoinOptions,
    ) -> Result<usize, SfuError> {
        let resumed = options.resume.is_some();
        let reply =
            self.shards[shard].handle_command(self.now, Command::Join { identity, options })?;
        let Reply::Joined { participant } = reply else {
            panic!("unexpected {reply:?}")
        };
        let i = match self
            .clients
            .iter()
            .position(|c| resumed && c.participant == Some(participant))
        {
            Some(i) => i,
            None => self.new_client(),
        };
        let c = &mut self.clients[i];
        c.shard = shard;
        c.participant = Some(participant);
        self.poll_shard();
        Ok(i)
    }

    /// Room-protocol member `i` sends `message` to its shard.
    pub fn say(&mut self, i: usize, message: ClientMessage) {
        self.said.push_back((i, message));
        self.poll_shard();
    }

    /// Room-protocol member `i` sends an offer with a data channel `chat` and, when `publish`,
    /// sendonly audio and video (its first offer creates its peer connection on its shard).
    pub fn rtc_offer(&mut self, i: usize, publish: bool) {
        let c = &mut self.clients[i];
        let mut api = c.rtc.sdp_api();
        if c.chat.is_none() {
            c.chat = Some(api.add_channel("chat".into()));
        }
        let mut mids = vec![];
        if publish {
            mids.push((
                api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None),
                MediaKind::Audio,
            ));
            mids.push((
                api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None),
                MediaKind::Video,
            ));
        }
        let (offer, pending) = api.apply().unwrap();
        c.mids.extend(mids);
        c.pending = Some(pending);
        let sdp = offer.to_sdp_string();
        self.say(
            i,
            ClientMessage::Offer {
                sdp,
                sources: BTreeMap::new(),
            },
        );
    }

    /// Client `i` writes `data` on its data channel `chat` (once open).
    pub fn chat_channel(&mut self, i: usize, data: &[u8]) -> bool {
        let c = &mut self.clients[i];
        let Some(id) = c.chat else {
            return false;
        };
        c.rtc
            .channel(id)
            .is_some_and(|mut ch| ch.write(true, data).is_ok())
    }

    /// The room-protocol messages client `i` received that `f` picks.
    pub fn signals_of<T>(&self, i: usize, f: impl Fn(&ServerMessage) -> Option<T>) -> Vec<T> {
        self.clients[i].signals.iter().filter_map(f).collect()
    }

    /// Hands what room-protocol clients said to their shards; plays the client's side of what
    /// the shards told them (accepts answers, answers offers). True if anything was done.
    fn play_signaling(&mut self) -> bool {
        let mut any = false;
        while let Some((i, message)) = self.said.pop_front() {
            any = true;
            let (shard, from) = (self.clients[i].shard, self.clients[i].participant.unwrap());
            let _ = self.shards[shard].handle_command(self.now, Command::Message { from, message });
        }
        any
    }

    /// Client side of one server message for member `i`.
    fn on_signal(&mut self, i: usize, message: &ServerMessage) {
        let c = &mut self.clients[i];
        match message {
            ServerMessage::Answer { sdp } => {
                if let Some(pending) = c.pending.take() {
                    let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
                    c.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                }
            }
            // The server drops its offer when ours is in flight (the client wins).
            ServerMessage::Offer { sdp } if c.pending.is_none() => {
                let offer = SdpOffer::from_sdp_string(sdp).unwrap();
                let answer = c.rtc.sdp_api().accept_offer(offer).unwrap();
                self.said.push_back((
                    i,
                    ClientMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    },
                ));
            }
            _ => {}
        }
    }

    /// Makes every datagram of client `i` now in flight arrive at the same instant (the latest
    /// of their arrival times), as a driver reads a burst in one `recvmmsg` with one `now`.
    pub fn bunch_from(&mut self, i: usize) {
        let src = self.clients[i].addr;
        let Some(at) = self.wire.iter().filter(|w| w.1 == src).map(|w| w.0).max() else {
            return;
        };
        for w in self.wire.iter_mut().filter(|w| w.1 == src) {
            w.0 = at;
        }
        // Delivery takes the wire in order of arrival time.
        self.wire.make_contiguous().sort_by_key(|w| w.0);
    }

    /// Puts an emulated bottleneck (or none) on the path from the SFU to client `i`.
    pub fn set_downlink(&mut self, i: usize, config: NetemConfig) {
        let c = &mut self.clients[i];
        match c.downlink.as_mut() {
            Some(netem) => netem.set_config(config),
            None => c.downlink = Some(Netem::new(config)),
        }
    }

    /// Writes one VP8 frame of `len` bytes on simulcast layer `rid` of publisher `i`; the
    /// payload carries `marker` in byte 1 and `n` in bytes 2..10, so receivers can tell which
    /// layer a frame came from.
    pub fn publish_layer(
        &mut self,
        i: usize,
        rid: &str,
        n: u64,
        key: bool,
        marker: u8,
        len: usize,
    ) {
        let now = self.now;
        let c = &mut self.clients[i];
        let (mid, _) = c.mids[0];
        let writer = c.rtc.writer(mid).unwrap();
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
            .unwrap();
        let mut d = vec![0x42u8; len.max(10)];
        d[0] = if key { 0x10 } else { 0x11 };
        d[1] = marker;
        d[2..10].copy_from_slice(&n.to_be_bytes());
        writer
            .rid(Rid::from(rid))
            .write(pt, now, MediaTime::from_90khz(n * 3000), d)
            .unwrap();
    }

    /// Writes frame `n` of each kind from publisher `i` like an encoder: video is a keyframe
    /// when a keyframe request came since the last keyframe it sent so, or every 300 frames
    /// (10 s at 30 fps; frame 0 is one).
    pub fn publish_answering(&mut self, i: usize, n: u64) {
        let c = &mut self.clients[i];
        let asked = c.keyframe_requests > c.answered_requests;
        c.answered_requests = c.keyframe_requests;
        self.publish_frame(i, n, asked || n.is_multiple_of(300));
    }

    /// Writes one frame of each kind from publisher `i` (video: a keyframe when `key`).
    pub fn publish_frame(&mut self, i: usize, n: u64, key: bool) {
        let now = self.now;
        let c = &mut self.clients[i];
        for (mid, kind) in c.mids.clone() {
            let Some(writer) = c.rtc.writer(mid) else {
                continue;
            };
            let codec = match kind {
                MediaKind::Audio => Codec::Opus,
                MediaKind::Video => Codec::Vp8,
            };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
            else {
                continue;
            };
            let (time, data) = match kind {
                MediaKind::Audio => (MediaTime::from_micros(n * 20_000), vec![0xfc; 80]),
                MediaKind::Video => {
                    // VP8: bit 0 of the first byte clear = keyframe. ~3 packets per frame.
                    let mut d = vec![0x42u8; 3000];
                    d[0] = if key { 0x10 } else { 0x11 };
                    (MediaTime::from_90khz(n * 3000), d)
                }
            };
            writer.write(pt, now, time, data).unwrap();
        }
    }

    /// Moves time on by `d` in steps of 1 ms, delivering datagrams and polling everything.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            self.step();
        }
    }

    /// One round at the current time.
    pub fn step(&mut self) {
        let now = self.now;
        // Deliver what has arrived.
        while self.wire.front().is_some_and(|(t, ..)| *t <= now) {
            let (_, src, dst, bytes) = self.wire.pop_front().unwrap();
            if let Some(k) = (0..self.shards.len()).find(|&k| shard_addr(k) == dst) {
                self.shards[k].handle_input(
                    now,
                    Input::Receive {
                        source: src,
                        destination: dst,
                        contents: &bytes,
                    },
                );
                self.poll_shard();
            } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == dst) {
                let recv = Receive::new(Protocol::Udp, src, dst, &bytes).unwrap();
                let _ = c.rtc.handle_input(str0m::Input::Receive(now, recv));
            }
        }
        for shard in &mut self.shards {
            shard.handle_input(now, Input::Timeout);
        }
        self.poll_shard();
        for c in &mut self.clients {
            if let Some(netem) = c.downlink.as_mut() {
                netem.handle_input(str0m_netem::Input::Timeout(now));
                while let Some(out) = netem.poll_output() {
                    if let str0m_netem::Output::Packet(bytes) = out {
                        self.wire
                            .push_back((now + self.delay, shard_addr(c.shard), c.addr, bytes));
                    }
                }
            }
        }
        self.step_clients();
    }

    /// The clients' round at the current time: timers, and what they send put on the wire.
    pub fn step_clients(&mut self) {
        let now = self.now;
        for c in &mut self.clients {
            let _ = c.rtc.handle_input(str0m::Input::Timeout(now));
            loop {
                match c.rtc.poll_output().unwrap() {
                    str0m::Output::Timeout(_) => break,
                    str0m::Output::Transmit(t) => {
                        self.wire.push_back((
                            now + self.delay,
                            c.addr,
                            t.destination,
                            t.contents.into(),
                        ));
                    }
                    str0m::Output::Event(e) => match e {
                        Event::Connected => c.connected = true,
                        Event::MediaData(d) => c.received.push(d),
                        Event::ChannelData(d) => c.channel_data.push(d.data),
                        Event::KeyframeRequest(r) => {
                            c.keyframe_requests += 1;
                            c.keyframe_rids.push(r.rid);
                        }
                        _ => {}
                    },
                }
            }
        }
    }

    /// Drains every shard's outputs onto the wire (or counts them), handing messages between
    /// shards over at once (the same instant on the forced clock), until all are quiet.
    pub fn poll_shard(&mut self) {
        loop {
            for k in 0..self.shards.len() {
                self.poll_one(k);
            }
            let said = self.play_signaling();
            if self.drop_relays {
                self.relays.clear();
            }
            if self.relays.is_empty() && !said {
                break;
            }
            while let Some((to, message)) = self.relays.pop_front() {
                self.shards[to].handle_relay(self.now, message);
            }
        }
    }

    fn poll_one(&mut self, k: usize) {
        let sfu = shard_addr(k);
        loop {
            match self.shards[k].poll_output() {
                Output::Timeout(_) => break,
                Output::Relay { to, message } => self.relays.push_back((usize::from(to), message)),
                Output::Transmit {
                    destination,
                    contents,
                } => {
                    self.shard_transmits += 1;
                    self.sent += 1;
                    if let Some((ssrc, seq)) = rtp_id(&contents)
                        && let Some(arrived) = self.shards[k].take_arrival(ssrc, seq)
                    {
                        self.forward_delays.push(self.now - arrived);
                    }
                    if !self.deliver_to_clients
                        || (self.drop_every > 0 && self.sent.is_multiple_of(self.drop_every))
                    {
                        continue;
                    }
                    let now = self.now;
                    let downlink = self
                        .clients
                        .iter_mut()
                        .find(|c| c.addr == destination)
                        .and_then(|c| c.downlink.as_mut());
                    match downlink {
                        Some(netem) => {
                            netem.handle_input(str0m_netem::Input::Packet(now, contents));
                        }
                        None => self
                            .wire
                            .push_back((now + self.delay, sfu, destination, contents)),
                    }
                }
                Output::Signal { to, message } => {
                    if let Some(i) = self.clients.iter().position(|c| c.participant == Some(to)) {
                        self.on_signal(i, &message);
                        self.clients[i].signals.push(message);
                    }
                }
            }
        }
    }

    pub fn video_frames(&self, i: usize) -> usize {
        self.clients[i]
            .received
            .iter()
            .filter(|d| d.params.spec().codec == Codec::Vp8)
            .count()
    }

    pub fn audio_frames(&self, i: usize) -> usize {
        self.clients[i]
            .received
            .iter()
            .filter(|d| d.params.spec().codec == Codec::Opus)
            .count()
    }

    /// Asserts that client `i` received more than `min` video and `min` audio frames.
    pub fn assert_media(&self, i: usize, min: usize) {
        let (video, audio) = (self.video_frames(i), self.audio_frames(i));
        assert!(video > min, "client {i}: {video} video frames");
        assert!(audio > min, "client {i}: {audio} audio frames");
    }
}

/// SSRC and sequence number of an RTP (not RTCP) datagram; the header is not encrypted.
fn rtp_id(d: &[u8]) -> Option<(u32, u16)> {
    let h = d.get(..12)?;
    let is_rtp = h[0] & 0xc0 == 0x80 && !(64..96).contains(&(h[1] & 0x7f));
    is_rtp.then(|| {
        (
            u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            u16::from_be_bytes([h[2], h[3]]),
        )
    })
}
