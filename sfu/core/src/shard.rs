//! The shard: rooms, participants and their `str0m::Rtc`s, fed `(now, input)` and polled for
//! output. See the crate docs for the model.

use crate::error::SfuError;
use crate::ids::{ParticipantId, RoomId, SessionId, TrackId};
use crate::layer::{KeyframeThrottle, LayerInfo, RateMeter, select_layer};
use crate::load::BusyMeter;
use crate::protocol::{
    ClientMessage, Identity, JoinOptions, LeaveReason, ParticipantInfo, RoomKind, ServerMessage,
    TrackInfo, TrackKind, TrackSource,
};
use crate::relay::{Audience, Relay, RelayedRtp, RelayedTrack};
use crate::rtp::{Rewriter, starts_keyframe};
use crate::speaker::ActiveSpeaker;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Rtc, RtcConfig};

/// Largest chat line or relayed data-channel message, in bytes.
pub const MAX_CHAT_BYTES: usize = 4096;
/// Largest data-channel message relayed to the room, in bytes.
const MAX_RELAY_BYTES: usize = 16 * 1024;
/// How often active speakers are re-evaluated.
const SPEAKER_TICK: Duration = Duration::from_millis(200);
/// Frame height assumed for the top simulcast layer when nothing better is known.
const TOP_LAYER_HEIGHT: u32 = 720;
/// Bandwidth BWE probes toward for a subscriber (enough for the top layer of a 720p camera).
const DESIRED_SUBSCRIBER_BITRATE_KBPS: u64 = 2_500;
/// First wait before probing for a subscriber held below the layer it asked for; doubled after
/// every probe that does not lead to an upgrade, up to [`MAX_UPGRADE_PROBE_INTERVAL`].
const UPGRADE_PROBE_INTERVAL: Duration = Duration::from_secs(4);
/// Longest wait between two upgrade probes toward one subscriber.
const MAX_UPGRADE_PROBE_INTERVAL: Duration = Duration::from_secs(32);
/// Rounds of `handle_timeout` + `poll_output` given to one peer whose timeout is already due
/// (str0m's pacer releases one packet per round), before it waits for the shard's timer.
const MAX_IMMEDIATE_ROUNDS: usize = 64;
/// How far after its last round str0m's pacer schedules the next one.
const PACER_STEP: Duration = Duration::from_micros(1);
/// How long a shard that opens a class room waits for the other shards' part of it (their
/// [`Relay::Snapshot`]s) before it sends `joined` to room-protocol members without them.
const ROOM_SYNC_WAIT: Duration = Duration::from_secs(1);
/// Forwarded packets whose arrival time is remembered for [`Shard::take_arrival`]; past this
/// the memory is cleared (entries a driver never asks for must not pile up).
const MAX_REMEMBERED_ARRIVALS: usize = 1 << 16;

/// Settings of one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// This shard's index; the top byte of every participant id it creates.
    pub index: u8,
    /// The UDP socket's bound address (the destination of received datagrams).
    pub local_addr: SocketAddr,
    /// The address announced in ICE host candidates (public IP + bound port for 1:1 NAT).
    pub announce_addr: SocketAddr,
    /// Seed for ids, ICE credentials and resume tokens (the driver passes OS randomness).
    pub seed: u64,
    /// How long an empty room stays open.
    pub room_close_grace: Duration,
    /// How long a room-protocol participant whose signaling connection dropped may resume.
    pub reconnect_grace: Duration,
    /// At most one keyframe request per publisher track (and layer) per this interval.
    pub keyframe_interval: Duration,
    /// Capacity of a consultation.
    pub max_consultation: usize,
    /// Shortest time an active speaker is kept before a louder one takes over.
    pub speaker_hold: Duration,
    /// Busy ratio (0–1] of the shard's loop over [`ShardConfig::busy_window`] at or above which
    /// new subscribers are refused with [`SfuError::Saturated`] ([`crate::load`]); above 1
    /// never refuses.
    pub max_busy: f64,
    /// The window the busy ratio is measured over.
    pub busy_window: Duration,
    /// Shards on the node (this one included). With more than one, a class room may have
    /// members on several shards; their tracks and media travel between them as [`Relay`]s.
    pub shards: u8,
}

impl ShardConfig {
    /// Defaults for a shard bound (and announced) at `addr`.
    pub fn new(index: u8, addr: SocketAddr, seed: u64) -> Self {
        ShardConfig {
            index,
            local_addr: addr,
            announce_addr: addr,
            seed,
            room_close_grace: Duration::from_secs(30),
            reconnect_grace: Duration::from_secs(30),
            keyframe_interval: Duration::from_secs(1),
            max_consultation: 8,
            speaker_hold: Duration::from_millis(1500),
            max_busy: 0.8,
            busy_window: Duration::from_secs(2),
            shards: 1,
        }
    }
}

/// An input to [`Shard::handle_input`].
#[derive(Debug)]
pub enum Input<'a> {
    /// A UDP datagram arrived on the shard's socket.
    Receive {
        /// The sender.
        source: SocketAddr,
        /// The socket's address.
        destination: SocketAddr,
        /// The datagram.
        contents: &'a [u8],
    },
    /// Time passed (the driver's timer fired).
    Timeout,
}

/// A signaling command, handled by [`Shard::handle_command`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// WHIP: publish with the SDP offer; replies [`Reply::Session`].
    WhipOffer {
        /// The verified identity.
        identity: Identity,
        /// The SDP offer.
        offer: String,
    },
    /// WHEP: subscribe with the SDP offer; replies [`Reply::Session`].
    WhepOffer {
        /// The verified identity.
        identity: Identity,
        /// The SDP offer.
        offer: String,
        /// Receive only this publisher (default: whoever publishes).
        publisher: Option<ParticipantId>,
    },
    /// Ends a WHIP/WHEP session (or removes a room-protocol participant).
    EndSession(SessionId),
    /// Room protocol: join (or resume); replies [`Reply::Joined`].
    Join {
        /// The verified identity.
        identity: Identity,
        /// The `join` message's options.
        options: JoinOptions,
    },
    /// Room protocol: a message from a joined participant.
    Message {
        /// From whom.
        from: ParticipantId,
        /// The message.
        message: ClientMessage,
    },
    /// Room protocol: the participant's signaling connection dropped; it may resume within
    /// [`ShardConfig::reconnect_grace`].
    Disconnected(ParticipantId),
    /// Admit a waiting participant (by participant id or user id) — the healthcare API's door.
    Admit {
        /// The room.
        room: RoomId,
        /// A participant id or a user id (`sub`). A user not yet in the room is admitted in
        /// advance.
        who: String,
    },
    /// Close a room now; its participants are told to leave.
    CloseRoom(RoomId),
    /// Tell every participant to leave and refuse new sessions.
    Shutdown,
}

/// A successful command's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A WHIP/WHEP session was created.
    Session {
        /// The session (participant) id.
        id: SessionId,
        /// The SDP answer.
        answer: String,
    },
    /// A room-protocol participant joined (or resumed). Its `joined`/`waiting` message is among
    /// the outputs.
    Joined {
        /// The participant.
        participant: ParticipantId,
    },
    /// Done; nothing to return.
    Done,
}

/// An output of [`Shard::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send a datagram from the shard's socket.
    Transmit {
        /// To whom.
        destination: SocketAddr,
        /// The datagram.
        contents: Vec<u8>,
    },
    /// A room-protocol message for one participant. After a [`ServerMessage::Leave`] the driver
    /// closes that participant's connection.
    Signal {
        /// Recipient.
        to: ParticipantId,
        /// The message.
        message: ServerMessage,
    },
    /// A message for another shard of the node: pass it to that shard's
    /// [`Shard::handle_relay`].
    Relay {
        /// The shard's index.
        to: u8,
        /// The message.
        message: Relay,
    },
    /// Nothing more until this time (or the next input).
    Timeout(Instant),
}

/// Counters and gauges of one shard (monotonic counters unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Open rooms (gauge); a room spanning shards counts on the shard its tracks are published on.
    pub rooms: u64,
    /// Participants not yet left (gauge).
    pub participants: u64,
    /// Published tracks (gauge).
    pub tracks: u64,
    /// Datagrams received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Media frames forwarded to a subscriber: video packets ending a frame (RTP marker) and
    /// audio packets.
    pub frames_forwarded: u64,
    /// Media payload bytes forwarded to subscribers.
    pub bytes_forwarded: u64,
    /// Datagrams dropped: unknown sender, unparsable, or refused by the peer.
    pub dropped_packets: u64,
    /// Keyframe requests (PLI/FIR) sent to publishers.
    pub keyframe_requests: u64,
    /// Keyframe requests suppressed by the throttle.
    pub keyframe_requests_throttled: u64,
    /// NACKs received from subscribers (RTX is answered by str0m).
    pub nacks: u64,
    /// Simulcast layer switches.
    pub layer_switches: u64,
    /// Worst ingress packet loss over the last stats interval, in per mille (gauge).
    pub loss_permille: u64,
    /// New subscribers refused because the shard was saturated ([`crate::load`]).
    pub refused_saturated: u64,
}

/// A participant's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantState {
    /// Created; WHIP/WHEP sessions stay here until ICE connects.
    Joining,
    /// In a consultation's waiting room.
    Waiting,
    /// In the room.
    Connected,
    /// The signaling connection dropped; media may go on; may resume until the deadline.
    Reconnecting {
        /// When it is given up.
        deadline: Instant,
        /// Whether it was admitted (back to `Connected`) or waiting (back to `Waiting`).
        admitted: bool,
    },
    /// Gone.
    Left,
}

impl ParticipantState {
    /// Whether the participant is in the room proper (not waiting, not gone).
    pub fn is_admitted(self) -> bool {
        matches!(
            self,
            ParticipantState::Joining
                | ParticipantState::Connected
                | ParticipantState::Reconnecting { admitted: true, .. }
        )
    }
}

/// How a participant talks to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Whip,
    Whep { publisher: Option<ParticipantId> },
    Room { auto_subscribe: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    Negotiating,
    Open,
}

/// One sending m-line toward a subscriber.
#[derive(Debug)]
struct OutSlot {
    kind: MediaKind,
    track: Option<TrackId>,
    state: OutState,
    max_height: Option<u32>,
    current_rid: Option<Rid>,
    /// Sequence numbers and timestamps across the sources this slot forwarded.
    rewrite: Rewriter,
    /// The publisher's payload type last seen and ours for it.
    pt: Option<(Pt, Pt)>,
    /// The send stream's SSRC once it is known (and set unpaced): a lookup by SSRC instead of
    /// a scan of the peer's streams by mid for every forwarded packet.
    ssrc: Option<Ssrc>,
}

#[derive(Debug)]
struct Peer {
    rtc: Rtc,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    next_timeout: Option<Instant>,
    published: HashMap<Mid, TrackId>,
    outs: FxHashMap<Mid, OutSlot>,
    channels: Vec<(ChannelId, String)>,
    pending: Option<SdpPendingOffer>,
    queued_subs: Vec<(TrackId, Option<u32>)>,
    queued_stops: Vec<Mid>,
    sources: BTreeMap<String, TrackSource>,
    bwe_bps: Option<u64>,
    /// When to probe next for a subscriber held below its wanted layer, and the wait after it.
    upgrade_probe: Option<(Instant, Duration)>,
    nacks_seen: HashMap<(Mid, Option<Rid>), u64>,
    /// The latest time fed to `rtc` (it may run up to [`MAX_IMMEDIATE_ROUNDS`] µs ahead of
    /// the shard's `now`; see [`Shard::poll_peer`]).
    clock: Instant,
}

#[derive(Debug)]
struct Participant {
    id: ParticipantId,
    identity: Identity,
    state: ParticipantState,
    mode: Mode,
    can_publish: bool,
    hand_raised: bool,
    /// Its arrival was told to every member (not only to admins: see [`Audience`]), so its
    /// departure is too.
    announced_all: bool,
    resume_token: String,
    peer: Option<Peer>,
}

impl Participant {
    fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id,
            name: self.identity.name.clone(),
            can_publish: self.can_publish,
            hand_raised: self.hand_raised,
            admin: self.identity.grants.admin,
        }
    }

    fn is_room(&self) -> bool {
        matches!(self.mode, Mode::Room { .. })
    }

    /// Whether every member of a class hears of it: an admin, a publisher, or a student once
    /// introduced (see [`Audience`]); the others are quiet.
    fn is_public(&self) -> bool {
        self.announced_all || is_public(self.identity.grants.admin, self.can_publish)
    }

    /// Whether `joined` lists it: room-protocol members and WHIP publishers (not WHEP
    /// subscribers).
    fn is_listed(&self) -> bool {
        matches!(self.mode, Mode::Room { .. } | Mode::Whip)
    }
}

#[derive(Debug)]
struct Track {
    id: TrackId,
    owner: ParticipantId,
    mid: Mid,
    kind: MediaKind,
    source: TrackSource,
    muted: bool,
    rids: Vec<Rid>,
    meters: Vec<RateMeter>,
    throttles: Vec<(Option<Rid>, KeyframeThrottle)>,
    subscribers: Vec<(ParticipantId, Mid)>,
    /// Per layer (one without simulcast): the newest packet's extended sequence number and
    /// timestamp, to tell the first packet of a frame.
    newest: Vec<Option<(u64, u32)>>,
    /// `None` when published on this shard; else the shard it is published on, which relays
    /// its packets here ([`crate::relay`]).
    home: Option<u8>,
}

impl Track {
    fn info(&self) -> TrackInfo {
        TrackInfo {
            id: self.id,
            participant: self.owner,
            kind: track_kind(self.kind),
            source: self.source,
            muted: self.muted,
            layers: self.rids.len(),
        }
    }

    /// The layers from low to high: ordered by measured bitrate (ties keep SDP order), heights
    /// halving from the top layer down. Returns the rid order and the infos.
    fn layers(&self) -> (Vec<Rid>, Vec<LayerInfo>) {
        let mut order: Vec<usize> = (0..self.rids.len()).collect();
        order.sort_by_key(|&i| self.meters[i].bps());
        let n = order.len();
        let rids = order.iter().map(|&i| self.rids[i]).collect();
        let infos = order
            .iter()
            .enumerate()
            .map(|(pos, &i)| LayerInfo {
                bitrate_bps: self.meters[i].bps(),
                height: TOP_LAYER_HEIGHT >> (n - 1 - pos).min(8),
            })
            .collect();
        (rids, infos)
    }
}

#[derive(Debug)]
struct Room {
    id: RoomId,
    kind: RoomKind,
    members: Vec<ParticipantId>,
    tracks: BTreeMap<TrackId, Track>,
    admitted_users: HashSet<String>,
    empty_since: Option<Instant>,
    speaker: ActiveSpeaker,
    /// Members on other shards that `joined` lists (room-protocol members, WHIP publishers).
    remote: BTreeMap<ParticipantId, ParticipantInfo>,
    /// Other shards whose [`Relay::Snapshot`] of the room has not come yet, and until when it
    /// is waited for.
    syncing: Vec<u8>,
    sync_deadline: Option<Instant>,
    /// Room-protocol members whose `joined` waits for the snapshots: they are not announced
    /// (nor sent room events) before it.
    unannounced: Vec<ParticipantId>,
}

/// Work found while polling peers, handled after the poll (so that one peer's output can touch
/// other peers).
#[derive(Debug)]
enum Propagated {
    Connected(ParticipantId),
    Failed(ParticipantId),
    TrackAdded {
        from: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        rids: Vec<Rid>,
    },
    SlotAdded {
        to: ParticipantId,
        mid: Mid,
        kind: MediaKind,
    },
    Rtp {
        from: ParticipantId,
        mid: Mid,
        rid: Option<Rid>,
        packet: Box<RtpPacket>,
    },
    Keyframe {
        from: ParticipantId,
        mid: Mid,
        kind: KeyframeRequestKind,
    },
    Channel {
        from: ParticipantId,
        label: String,
        binary: bool,
        data: Vec<u8>,
    },
}

/// One shard: the rooms pinned to it, their participants and every participant's `Rtc`.
///
/// Sans-IO: feed it [`Input`]s and [`Command`]s with the current time, then call
/// [`Shard::poll_output`] until it returns [`Output::Timeout`].
pub struct Shard {
    config: ShardConfig,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    rng: u64,
    next_track: u64,
    rooms: HashMap<RoomId, Room>,
    /// Looked up for every subscriber of every forwarded packet: a fast hash (the ids are the
    /// server's own random numbers, not chosen by peers).
    participants: FxHashMap<ParticipantId, Participant>,
    by_addr: HashMap<SocketAddr, ParticipantId>,
    by_ufrag: HashMap<String, ParticipantId>,
    dirty: Vec<ParticipantId>,
    /// Peer timeouts and reconnect deadlines, earliest first. Entries go stale when a peer's
    /// timeout moves; they are checked against the participant when they come up.
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    /// When each forwarded media packet, by outgoing (SSRC, sequence number), was received.
    arrivals: FxHashMap<(u32, u16), Instant>,
    propagated: VecDeque<Propagated>,
    outputs: VecDeque<Output>,
    stats: ShardStats,
    shutting_down: bool,
    next_speaker_tick: Option<Instant>,
    /// The latest `now` seen; "never" is a day after it (the core reads no clock).
    last_now: Option<Instant>,
    /// The `now` the shard was created at.
    epoch: Instant,
    /// The loop's busy time over a sliding window, reported by the driver.
    load: BusyMeter,
    /// Per room, the other shards that have members in it (they get its tracks' packets).
    interest: HashMap<RoomId, Vec<u8>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.config.index)
            .field("rooms", &self.rooms.len())
            .field("participants", &self.participants.len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// A shard with no rooms. Generates the DTLS certificate all its peers share.
    pub fn new(now: Instant, config: ShardConfig) -> Result<Shard, SfuError> {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| SfuError::Rtc("cannot generate a DTLS certificate".into()))?;
        let rng = config.seed ^ 0x9e37_79b9_7f4a_7c15;
        let config_window = config.busy_window;
        Ok(Shard {
            config,
            crypto,
            cert,
            rng,
            next_track: 1,
            rooms: HashMap::new(),
            participants: FxHashMap::default(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            arrivals: FxHashMap::default(),
            propagated: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: ShardStats::default(),
            shutting_down: false,
            next_speaker_tick: None,
            last_now: None,
            epoch: now,
            load: BusyMeter::new(now, config_window),
            interest: HashMap::new(),
        })
    }

    /// The shard's settings.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The retransmission (RTX) payload types negotiated with the peer at `destination`, as a
    /// bit mask (bit *n* = payload type *n*; payload types are 7 bits). Drivers use it to tell
    /// first sends of forwarded media from resends and padding, which carry old timestamps.
    /// Zero for an unknown address.
    pub fn resend_payload_types(&self, destination: SocketAddr) -> u128 {
        let Some(peer) = self
            .by_addr
            .get(&destination)
            .and_then(|id| self.participants.get(id))
            .and_then(|p| p.peer.as_ref())
        else {
            return 0;
        };
        // After negotiation the session's payload parameters carry the numbers both sides use.
        peer.rtc
            .codec_config()
            .params()
            .iter()
            .filter_map(|p| p.resend())
            .fold(0u128, |mask, rtx| mask | 1u128 << (*rtx & 0x7f))
    }

    /// When the media packet sent as (`ssrc`, `seq`) toward a subscriber was received from its
    /// publisher (the `now` of that [`Input::Receive`]); asked once per sent datagram, so the
    /// entry is forgotten. `None` for anything else: RTCP, resends and padding (on the RTX
    /// SSRC), or a packet forwarded too long ago. Drivers use it to measure the added
    /// forwarding latency.
    pub fn take_arrival(&mut self, ssrc: u32, seq: u16) -> Option<Instant> {
        self.arrivals.remove(&(ssrc, seq))
    }

    /// Reports that the shard's loop worked `busy` (reading and handling input, firing
    /// timers, sending outputs, serving commands), ending at `now`. The admission rule reads
    /// the busy ratio this gives ([`crate::load`]).
    pub fn record_busy(&mut self, now: Instant, busy: Duration) {
        self.load.record(now, busy);
    }

    /// The share of the last [`ShardConfig::busy_window`] before `now` the loop spent busy.
    pub fn busy_ratio(&self, now: Instant) -> f64 {
        self.load.busy_ratio(now)
    }

    /// Refuses a new subscriber while the shard is saturated.
    fn admit_subscriber(&mut self, now: Instant) -> Result<(), SfuError> {
        if self.load.saturated(now, self.config.max_busy) {
            self.stats.refused_saturated += 1;
            return Err(SfuError::Saturated {
                retry_after_secs: self.config.busy_window.as_secs().max(1),
            });
        }
        Ok(())
    }

    /// Current counters.
    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats;
        // A room spanning shards is counted once, by the lowest-numbered shard it is open on,
        // so that the node's total is the rooms it has.
        let index = self.config.index;
        s.rooms = self
            .rooms
            .keys()
            .filter(|r| {
                self.interest
                    .get(*r)
                    .is_none_or(|shards| shards.iter().all(|k| *k > index))
            })
            .count() as u64;
        s.participants = self.participants.len() as u64;
        s.tracks = self
            .rooms
            .values()
            .map(|r| r.tracks.values().filter(|t| t.home.is_none()).count() as u64)
            .sum();
        s
    }

    /// The state of a participant, if it is on this shard.
    pub fn participant_state(&self, id: ParticipantId) -> Option<ParticipantState> {
        self.participants.get(&id).map(|p| p.state)
    }

    /// Whether a room is open on this shard.
    pub fn has_room(&self, room: &RoomId) -> bool {
        self.rooms.contains_key(room)
    }

    /// Feeds a datagram or a timeout.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.last_now = Some(self.last_now.map_or(now, |l| l.max(now)));
        match input {
            Input::Receive {
                source,
                destination,
                contents,
            } => self.receive(now, source, destination, contents),
            Input::Timeout => self.timeout(now),
        }
        // The work it causes is done by `poll_output`, a peer at a time.
    }

    /// Handles a signaling command.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> Result<Reply, SfuError> {
        self.last_now = Some(self.last_now.map_or(now, |l| l.max(now)));
        let result = match command {
            Command::WhipOffer { identity, offer } => self.whip(now, identity, &offer),
            Command::WhepOffer {
                identity,
                offer,
                publisher,
            } => self.whep(now, identity, &offer, publisher),
            Command::EndSession(id) => {
                if self.participants.contains_key(&id) {
                    self.remove_participant(now, id, LeaveReason::Requested);
                    Ok(Reply::Done)
                } else {
                    Err(SfuError::NoSuchSession)
                }
            }
            Command::Join { identity, options } => self.join(now, identity, options),
            Command::Message { from, message } => self.message(now, from, message),
            Command::Disconnected(id) => {
                self.disconnected(now, id);
                Ok(Reply::Done)
            }
            Command::Admit { room, who } => self.admit(now, &room, &who),
            Command::CloseRoom(room) => self.close_room(now, &room),
            Command::Shutdown => {
                self.shutting_down = true;
                let ids: Vec<_> = self.participants.keys().copied().collect();
                for id in ids {
                    self.remove_participant(now, id, LeaveReason::ServerShutdown);
                }
                self.rooms.clear();
                Ok(Reply::Done)
            }
        };
        self.drive(now);
        result
    }

    /// The next output; [`Output::Timeout`] when there is nothing more for now.
    ///
    /// The work an input caused is done here, one peer at a time: a forwarded packet's first
    /// subscriber's datagram comes out before the last subscriber is served, so that the driver
    /// can send each datagram as it is produced.
    pub fn poll_output(&mut self) -> Output {
        loop {
            if let Some(o) = self.outputs.pop_front() {
                return o;
            }
            let now = self.last_now.unwrap_or(self.epoch);
            if let Some(p) = self.propagated.pop_front() {
                self.handle_propagated(now, p);
            } else if let Some(id) = self.dirty.pop() {
                self.poll_peer(id);
            } else {
                return Output::Timeout(self.next_timeout());
            }
        }
    }

    /// Whether a timer entry still stands for something: the participant's peer timeout or its
    /// reconnect deadline.
    fn timer_is_live(&self, at: Instant, id: ParticipantId) -> bool {
        self.participants.get(&id).is_some_and(|p| {
            p.peer.as_ref().and_then(|peer| peer.next_timeout) == Some(at)
                || matches!(p.state, ParticipantState::Reconnecting { deadline, .. } if deadline == at)
        })
    }

    fn next_timeout(&mut self) -> Instant {
        // Stale entries on top are dropped; a heap much larger than the participants (peers
        // whose timeouts keep moving earlier) is rebuilt.
        if self.timers.len() > 4 * self.participants.len() + 1024 {
            self.rebuild_timers();
        }
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if self.timer_is_live(at, id) {
                break;
            }
            self.timers.pop();
        }
        let mut next: Option<Instant> = self.timers.peek().map(|Reverse((at, _))| *at);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for r in self.rooms.values() {
            if let Some(since) = r.empty_since {
                consider(since + self.config.room_close_grace);
            }
            if let Some(deadline) = r.sync_deadline {
                consider(deadline);
            }
        }
        if let Some(t) = self.next_speaker_tick {
            consider(t);
        }
        next.unwrap_or_else(|| self.far_future())
    }

    fn rebuild_timers(&mut self) {
        self.timers.clear();
        for p in self.participants.values() {
            if let Some(t) = p.peer.as_ref().and_then(|peer| peer.next_timeout) {
                self.timers.push(Reverse((t, p.id)));
            }
            if let ParticipantState::Reconnecting { deadline, .. } = p.state {
                self.timers.push(Reverse((deadline, p.id)));
            }
        }
    }

    /// "Never": a day after the latest `now`.
    fn far_future(&self) -> Instant {
        self.last_now.unwrap_or(self.epoch) + Duration::from_secs(86_400)
    }

    // ---- datagrams and time -------------------------------------------------------------

    fn receive(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, buf: &[u8]) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += buf.len() as u64;
        let Ok(recv) = Receive::new(Protocol::Udp, source, destination, buf) else {
            self.stats.dropped_packets += 1;
            return;
        };
        let input = str0m::Input::Receive(now, recv);
        let by_addr = self.by_addr.get(&source).copied();
        let by_ufrag = crate::stun::local_ufrag(buf).and_then(|u| self.by_ufrag.get(u).copied());
        let accepts = |s: &Self, id: ParticipantId| {
            s.participants
                .get(&id)
                .and_then(|p| p.peer.as_ref())
                .is_some_and(|peer| peer.rtc.accepts(&input))
        };
        let mut target = by_addr
            .filter(|id| accepts(self, *id))
            .or(by_ufrag.filter(|id| accepts(self, *id)));
        if target.is_none() && crate::stun::local_ufrag(buf).is_some() {
            // Last resort for STUN only (ICE restarts, races): ask every peer.
            target = self
                .participants
                .values()
                .filter(|p| p.peer.as_ref().is_some_and(|pe| pe.rtc.accepts(&input)))
                .map(|p| p.id)
                .next();
        }
        let Some(id) = target else {
            self.stats.dropped_packets += 1;
            return;
        };
        let Some(peer) = self.participants.get_mut(&id).and_then(|p| p.peer.as_mut()) else {
            return;
        };
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(participant = %id, error = %e, "peer refused input");
            self.stats.dropped_packets += 1;
            self.propagated.push_back(Propagated::Failed(id));
            return;
        }
        if by_addr != Some(id) {
            if !peer.addrs.contains(&source) {
                peer.addrs.push(source);
            }
            self.by_addr.insert(source, id);
        }
        // Polled now, not lazily: in RTP mode str0m holds one received packet until the next
        // poll, and the driver may feed this peer another datagram first.
        self.poll_peer(id);
    }

    fn timeout(&mut self, now: Instant) {
        // Only the participants whose timer is due, not all of them: with a thousand peers and
        // str0m's pacer waking each of them every 40 ms, a scan per wake-up would cost more
        // than the forwarding.
        let mut due = vec![];
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push(id);
        }
        due.sort_unstable();
        due.dedup();
        let mut expired = vec![];
        for id in due {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            if matches!(p.state, ParticipantState::Reconnecting { deadline, .. } if deadline <= now)
            {
                // Its signaling did not come back in time.
                expired.push(id);
            }
            let Some(peer) = p.peer.as_mut() else {
                continue;
            };
            if peer.next_timeout.is_none_or(|t| t <= now) {
                peer.clock = peer.clock.max(now);
                if let Err(e) = peer.rtc.handle_input(str0m::Input::Timeout(peer.clock)) {
                    tracing::debug!(participant = %p.id, error = %e, "peer timeout failed");
                    self.propagated.push_back(Propagated::Failed(p.id));
                }
                // Polled (and its next timeout queued) by `drive`.
                peer.next_timeout = None;
                self.dirty.push(p.id);
            }
        }
        for id in expired {
            self.remove_participant(now, id, LeaveReason::ConnectionLost);
        }
        // Rooms whose other shards did not answer in time: their members are announced with
        // what is known (the rest follows as events).
        let late: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| r.sync_deadline.is_some_and(|d| d <= now))
            .map(|r| r.id.clone())
            .collect();
        for room in late {
            self.room_synced(&room);
        }
        // Empty rooms past their grace period.
        let grace = self.config.room_close_grace;
        let closing: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| r.members.is_empty() && r.empty_since.is_some_and(|s| s + grace <= now))
            .map(|r| r.id.clone())
            .collect();
        for room in closing {
            if self
                .rooms
                .remove(&room)
                .is_some_and(|r| r.kind == RoomKind::Class)
            {
                self.declare_interest(&room, false);
            }
        }
        if self.next_speaker_tick.is_some_and(|t| t <= now) {
            self.speaker_tick(now);
        }
    }

    fn speaker_tick(&mut self, now: Instant) {
        let mut changes = vec![];
        for room in self.rooms.values_mut() {
            if let Some(who) = room.speaker.tick(now) {
                changes.push((room.id.clone(), who));
            }
        }
        for (room, who) in changes {
            self.broadcast(
                &room,
                None,
                ServerMessage::ActiveSpeaker {
                    participant: Some(who),
                },
            );
        }
        let any_audio = self
            .rooms
            .values()
            .any(|r| r.tracks.values().any(|t| t.kind == MediaKind::Audio));
        self.next_speaker_tick = any_audio.then(|| now + SPEAKER_TICK);
    }

    // ---- polling --------------------------------------------------------------------------

    /// Polls every touched peer until it times out, then handles what they propagated, until
    /// the shard is quiet.
    fn drive(&mut self, now: Instant) {
        loop {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for id in dirty {
                self.poll_peer(id);
            }
            if self.propagated.is_empty() {
                break;
            }
            while let Some(p) = self.propagated.pop_front() {
                self.handle_propagated(now, p);
            }
        }
    }

    fn poll_peer(&mut self, id: ParticipantId) {
        let never = self.far_future();
        let now = self.last_now.unwrap_or(self.epoch);
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let is_room = p.is_room();
        let Some(peer) = p.peer.as_mut() else {
            return;
        };
        let mut rounds = 0;
        // The pacer asks for its next round 1 µs after the last ("to ensure time advances
        // between packets"); the peer's clock may run that much ahead of the shard's for the
        // packets it sends now (at most MAX_IMMEDIATE_ROUNDS µs per poll). It continues from
        // where the last poll left it: a second packet for the same peer at the same `now`
        // (audio and video read in one batch) finds the pacer's step beyond `now` and would
        // otherwise wait for the shard's timer.
        let mut clock = now.max(peer.clock);
        loop {
            if !peer.rtc.is_alive() {
                self.propagated.push_back(Propagated::Failed(id));
                peer.next_timeout = Some(never);
                return;
            }
            let out = match peer.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(participant = %id, error = %e, "peer failed");
                    self.propagated.push_back(Propagated::Failed(id));
                    peer.next_timeout = Some(never);
                    return;
                }
            };
            match out {
                str0m::Output::Timeout(t)
                    if t <= clock + PACER_STEP && rounds < MAX_IMMEDIATE_ROUNDS =>
                {
                    // Due already: str0m's pacer hands out one packet per `handle_timeout`, and
                    // queued media waits for one. Going round here sends a subscriber's packets
                    // now, instead of one per wake-up of the shard's timer.
                    rounds += 1;
                    clock = clock.max(t);
                    peer.clock = clock;
                    if let Err(e) = peer.rtc.handle_input(str0m::Input::Timeout(clock)) {
                        tracing::debug!(participant = %id, error = %e, "peer timeout failed");
                        self.propagated.push_back(Propagated::Failed(id));
                        peer.next_timeout = Some(never);
                        return;
                    }
                }
                str0m::Output::Timeout(t) => {
                    if peer.next_timeout != Some(t) || t <= now {
                        self.timers.push(Reverse((t, id)));
                    }
                    peer.next_timeout = Some(t);
                    return;
                }
                str0m::Output::Transmit(t) => {
                    self.stats.packets_out += 1;
                    self.stats.bytes_out += t.contents.len() as u64;
                    self.outputs.push_back(Output::Transmit {
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                str0m::Output::Event(e) => {
                    let propagated = on_event(id, is_room, peer, e, &mut self.stats);
                    self.propagated.extend(propagated);
                }
            }
        }
    }

    fn handle_propagated(&mut self, now: Instant, p: Propagated) {
        match p {
            Propagated::Connected(id) => {
                if let Some(p) = self.participants.get_mut(&id)
                    && p.state == ParticipantState::Joining
                {
                    p.state = ParticipantState::Connected;
                }
            }
            Propagated::Failed(id) => {
                let Some(p) = self.participants.get_mut(&id) else {
                    return;
                };
                if p.is_room() {
                    // The participant may restart ICE over its signaling connection; drop the
                    // dead peer connection so that its next offer builds a new one.
                    let stale = self.clear_peer(id);
                    for t in stale {
                        self.remove_track(now, t);
                    }
                } else {
                    self.remove_participant(now, id, LeaveReason::ConnectionLost);
                }
            }
            Propagated::TrackAdded {
                from,
                mid,
                kind,
                rids,
            } => self.track_added(now, from, mid, kind, rids),
            Propagated::SlotAdded { to, mid, kind } => {
                if let Some(peer) = self.participants.get_mut(&to).and_then(|p| p.peer.as_mut()) {
                    peer.outs.insert(
                        mid,
                        OutSlot {
                            kind,
                            track: None,
                            state: OutState::Open,
                            max_height: None,
                            current_rid: None,
                            rewrite: Rewriter::default(),
                            pt: None,
                            ssrc: None,
                        },
                    );
                }
                if let Some(room) = self.participants.get(&to).map(|p| p.identity.room.clone()) {
                    self.bind_whep_slots(now, &room);
                }
            }
            Propagated::Rtp {
                from,
                mid,
                rid,
                packet,
            } => self.forward(now, from, mid, rid, *packet),
            Propagated::Keyframe { from, mid, kind } => {
                let Some(peer) = self.participants.get(&from).and_then(|p| p.peer.as_ref()) else {
                    return;
                };
                let Some(slot) = peer.outs.get(&mid) else {
                    return;
                };
                if let Some(track) = slot.track {
                    let rid = slot.current_rid;
                    self.request_keyframe(now, track, rid, kind);
                }
            }
            Propagated::Channel {
                from,
                label,
                binary,
                data,
            } => self.relay_channel(from, &label, binary, &data),
        }
    }

    // ---- sessions -------------------------------------------------------------------------

    fn admission(
        &mut self,
        now: Instant,
        identity: &Identity,
        creating: bool,
    ) -> Result<(), SfuError> {
        if self.shutting_down {
            return Err(SfuError::ShuttingDown);
        }
        let max = self.config.max_consultation;
        let spans = identity.kind == RoomKind::Class && self.config.shards > 1;
        if spans && !self.rooms.contains_key(&identity.room) {
            // Its tracks and members may be on other shards of the node.
            self.declare_interest(&identity.room, true);
        }
        let (index, shards) = (self.config.index, self.config.shards);
        let room = self
            .rooms
            .entry(identity.room.clone())
            .or_insert_with(|| Room {
                id: identity.room.clone(),
                kind: identity.kind,
                members: Vec::new(),
                tracks: BTreeMap::new(),
                admitted_users: HashSet::new(),
                empty_since: Some(now),
                speaker: ActiveSpeaker::new(self.config.speaker_hold),
                remote: BTreeMap::new(),
                syncing: if spans {
                    (0..shards).filter(|k| *k != index).collect()
                } else {
                    Vec::new()
                },
                sync_deadline: spans.then_some(now + ROOM_SYNC_WAIT),
                unannounced: Vec::new(),
            });
        if room.kind != identity.kind {
            return Err(SfuError::RoomKindMismatch);
        }
        if creating && room.kind == RoomKind::Consultation && room.members.len() >= max {
            return Err(SfuError::RoomFull { max });
        }
        Ok(())
    }

    fn new_id(&mut self) -> ParticipantId {
        loop {
            let id = ParticipantId::new(self.config.index, self.random());
            if !self.participants.contains_key(&id) {
                return id;
            }
        }
    }

    fn random(&mut self) -> u64 {
        // splitmix64: the seed comes from the driver (OS randomness); this only stretches it.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(ALPHABET[(self.random() % ALPHABET.len() as u64) as usize]))
            .collect()
    }

    /// A resume token: the shard's index in two hex digits (so that a driver can route a
    /// resuming `join` to this shard, see [`JoinOptions::resume_shard`]), then random letters.
    fn new_resume_token(&mut self) -> String {
        let random = self.random_token(22);
        format!("{:02x}{random}", self.config.index)
    }

    fn new_peer(&mut self, now: Instant) -> Result<Peer, SfuError> {
        let ufrag = self.random_token(8);
        let pass = self.random_token(24);
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            })
            .enable_bwe(Some(Bitrate::kbps(800)))
            // Forward packets, not frames (see `crate::rtp`).
            .set_rtp_mode(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let candidate = Candidate::host(self.config.announce_addr, "udp")
            .map_err(|e| SfuError::Rtc(format!("host candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        Ok(Peer {
            rtc,
            ufrag,
            addrs: Vec::new(),
            next_timeout: None,
            published: HashMap::new(),
            outs: FxHashMap::default(),
            channels: Vec::new(),
            pending: None,
            queued_subs: Vec::new(),
            queued_stops: Vec::new(),
            sources: BTreeMap::new(),
            bwe_bps: None,
            upgrade_probe: None,
            nacks_seen: HashMap::new(),
            clock: now,
        })
    }

    fn admitted_up_front(&self, identity: &Identity) -> bool {
        identity.kind == RoomKind::Class
            || identity.grants.admin
            || self
                .rooms
                .get(&identity.room)
                .is_some_and(|r| r.admitted_users.contains(&identity.user))
    }

    /// Creates a WHIP or WHEP participant around an accepted offer.
    fn http_session(
        &mut self,
        now: Instant,
        identity: Identity,
        offer: &str,
        mode: Mode,
    ) -> Result<Reply, SfuError> {
        if !self.admitted_up_front(&identity) {
            return Err(SfuError::NotAdmitted);
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        self.admission(now, &identity, true)?;
        let mut peer = self.new_peer(now)?;
        if matches!(mode, Mode::Whep { .. }) {
            peer.rtc
                .bwe()
                .set_desired_bitrate(Bitrate::kbps(DESIRED_SUBSCRIBER_BITRATE_KBPS));
        }
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let id = self.new_id();
        self.by_ufrag.insert(peer.ufrag.clone(), id);
        let room_id = identity.room.clone();
        let can_publish = matches!(mode, Mode::Whip);
        let resume_token = self.new_resume_token();
        self.participants.insert(
            id,
            Participant {
                id,
                identity,
                state: ParticipantState::Joining,
                mode,
                can_publish,
                hand_raised: false,
                announced_all: false,
                resume_token,
                peer: Some(peer),
            },
        );
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.members.push(id);
            room.empty_since = None;
        }
        if let Some(p) = self.participants.get(&id).filter(|p| p.mode == Mode::Whip) {
            // Listed in `joined` on the other shards too.
            let info = Some(p.info());
            self.relay_to_room(
                &room_id,
                &Relay::Member {
                    room: room_id.clone(),
                    id,
                    info,
                },
            );
        }
        self.dirty.push(id);
        self.drive(now);
        Ok(Reply::Session {
            id,
            answer: answer.to_sdp_string(),
        })
    }

    fn whip(&mut self, now: Instant, identity: Identity, offer: &str) -> Result<Reply, SfuError> {
        if !identity.grants.publish {
            return Err(SfuError::MissingGrant("publish"));
        }
        self.http_session(now, identity, offer, Mode::Whip)
    }

    fn whep(
        &mut self,
        now: Instant,
        identity: Identity,
        offer: &str,
        publisher: Option<ParticipantId>,
    ) -> Result<Reply, SfuError> {
        if !identity.grants.subscribe {
            return Err(SfuError::MissingGrant("subscribe"));
        }
        if let Some(p) = publisher {
            let in_room = self
                .participants
                .get(&p)
                .is_some_and(|p| p.identity.room == identity.room);
            if !in_room {
                return Err(SfuError::NoSuchParticipant);
            }
        }
        self.admit_subscriber(now)?;
        self.http_session(now, identity, offer, Mode::Whep { publisher })
    }

    fn join(
        &mut self,
        now: Instant,
        identity: Identity,
        options: JoinOptions,
    ) -> Result<Reply, SfuError> {
        if self.shutting_down {
            return Err(SfuError::ShuttingDown);
        }
        if let Some(token) = options.resume.as_deref() {
            return self.resume(now, &identity, token);
        }
        if !identity.grants.publish {
            // A new participant that only receives adds fan-out work and nothing others wait
            // for; publishers (teachers, providers) are still let in.
            self.admit_subscriber(now)?;
        }
        self.admission(now, &identity, true)?;
        let id = self.new_id();
        let waiting = !self.admitted_up_front(&identity);
        let resume_token = self.new_resume_token();
        let participant = Participant {
            id,
            can_publish: identity.grants.publish,
            identity,
            state: if waiting {
                ParticipantState::Waiting
            } else {
                ParticipantState::Connected
            },
            mode: Mode::Room {
                auto_subscribe: options.auto_subscribe.unwrap_or(true),
            },
            hand_raised: false,
            announced_all: false,
            resume_token,
            peer: None,
        };
        let room_id = participant.identity.room.clone();
        self.participants.insert(id, participant);
        let mut syncing = false;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.members.push(id);
            room.empty_since = None;
            if !room.syncing.is_empty() {
                // The room was just opened here: its members and tracks on the other shards
                // are on their way; `joined` shows them.
                room.unannounced.push(id);
                syncing = true;
            }
        }
        if !syncing {
            self.announce_arrival(id);
        }
        Ok(Reply::Joined { participant: id })
    }

    /// Announces the members that waited for the room's snapshots (all came, or the wait is
    /// over), in the order they joined.
    fn room_synced(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.syncing.clear();
        room.sync_deadline = None;
        // One at a time: the later ones stay unannounced until their turn, and see the earlier
        // ones in their `joined`.
        while let Some(room) = self.rooms.get_mut(room_id)
            && !room.unannounced.is_empty()
        {
            let id = room.unannounced.remove(0);
            self.announce_arrival(id);
        }
    }

    /// Tells a newly joined (or admitted, or resumed) participant where it stands, and the room
    /// about it.
    fn announce_arrival(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let room_id = p.identity.room.clone();
        let info = p.info();
        if p.state == ParticipantState::Waiting {
            let msg = ServerMessage::Waiting {
                participant: id,
                resume_token: p.resume_token.clone(),
            };
            self.signal(id, msg);
            let admins: Vec<_> = self.room_members(&room_id, |m| {
                m.identity.grants.admin && m.state.is_admitted() && m.is_room()
            });
            for a in admins {
                self.signal(
                    a,
                    ServerMessage::ParticipantWaiting {
                        participant: info.clone(),
                    },
                );
            }
            return;
        }
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        // Room-protocol members and WHIP publishers, here and on the other shards (WHEP
        // subscribers are not listed: a class may have thousands). A class's quiet members are
        // listed to its admins only.
        let sees_all = p.identity.grants.admin || room.kind != RoomKind::Class;
        let participants = room
            .members
            .iter()
            .filter(|m| **m != id && !room.unannounced.contains(m))
            .filter_map(|m| self.participants.get(m))
            .filter(|m| m.state.is_admitted() && m.is_listed())
            .filter(|m| sees_all || m.is_public())
            .map(Participant::info)
            .chain(
                room.remote
                    .values()
                    .filter(|i| sees_all || is_public(i.admin, i.can_publish))
                    .cloned(),
            )
            .collect();
        let tracks = room.tracks.values().map(Track::info).collect();
        let is_admin = p.identity.grants.admin;
        let auto = matches!(
            p.mode,
            Mode::Room {
                auto_subscribe: true
            }
        ) && p.identity.grants.subscribe;
        let existing: Vec<TrackId> = room
            .tracks
            .values()
            .filter(|t| t.owner != id)
            .map(|t| t.id)
            .collect();
        let joined = ServerMessage::Joined {
            participant: id,
            room: room_id.clone(),
            kind: room.kind,
            resume_token: p.resume_token.clone(),
            can_publish: p.can_publish,
            participants,
            tracks,
        };
        self.signal(id, joined);
        let audience = if self.is_quiet(id) {
            Audience::Admins(None)
        } else {
            if let Some(p) = self.participants.get_mut(&id) {
                p.announced_all = true;
            }
            Audience::All
        };
        self.broadcast_room_to(
            &room_id,
            Some(id),
            ServerMessage::ParticipantJoined { participant: info },
            audience,
        );
        // Admins also learn who waits.
        if is_admin {
            let waiting: Vec<_> = self
                .room_members(&room_id, |m| m.state == ParticipantState::Waiting)
                .into_iter()
                .filter_map(|w| self.participants.get(&w).map(Participant::info))
                .collect();
            for w in waiting {
                self.signal(id, ServerMessage::ParticipantWaiting { participant: w });
            }
        }
        // Subscribe to what is already published (without a peer connection yet, the first
        // offer does it; see `offer`).
        if auto {
            if let Some(peer) = self.participants.get_mut(&id).and_then(|p| p.peer.as_mut()) {
                for t in existing {
                    if !peer.queued_subs.iter().any(|(q, _)| *q == t)
                        && !peer.outs.values().any(|s| s.track == Some(t))
                    {
                        peer.queued_subs.push((t, None));
                    }
                }
            }
            self.negotiate(id);
        }
    }

    fn resume(
        &mut self,
        now: Instant,
        identity: &Identity,
        token: &str,
    ) -> Result<Reply, SfuError> {
        let found = self.participants.values_mut().find(|p| {
            p.identity.room == identity.room
                && p.identity.user == identity.user
                && p.is_room()
                && p.resume_token == token
        });
        let Some(p) = found else {
            return Err(SfuError::NoSuchSession);
        };
        p.state = match p.state {
            ParticipantState::Reconnecting {
                admitted: false, ..
            }
            | ParticipantState::Waiting => ParticipantState::Waiting,
            ParticipantState::Left => return Err(SfuError::NoSuchSession),
            _ => ParticipantState::Connected,
        };
        let id = p.id;
        let resume_token = self.new_resume_token();
        if let Some(p) = self.participants.get_mut(&id) {
            p.resume_token = resume_token;
        }
        let _ = now;
        // Re-send the whole picture: the client may have missed events while away.
        self.announce_arrival(id);
        Ok(Reply::Joined { participant: id })
    }

    fn disconnected(&mut self, now: Instant, id: ParticipantId) {
        let deadline = now + self.config.reconnect_grace;
        if let Some(p) = self.participants.get_mut(&id) {
            p.state = match p.state {
                ParticipantState::Waiting => ParticipantState::Reconnecting {
                    deadline,
                    admitted: false,
                },
                ParticipantState::Joining | ParticipantState::Connected => {
                    ParticipantState::Reconnecting {
                        deadline,
                        admitted: true,
                    }
                }
                other => other,
            };
            if matches!(p.state, ParticipantState::Reconnecting { deadline: d, .. } if d == deadline)
            {
                self.timers.push(Reverse((deadline, id)));
            }
        }
    }

    fn admit(&mut self, _now: Instant, room_id: &RoomId, who: &str) -> Result<Reply, SfuError> {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return Err(SfuError::NoSuchRoom);
        };
        let by_id: Option<ParticipantId> = who.parse().ok();
        let targets: Vec<ParticipantId> = room
            .members
            .iter()
            .copied()
            .filter(|m| {
                self.participants
                    .get(m)
                    .is_some_and(|p| Some(p.id) == by_id || p.identity.user == who)
            })
            .collect();
        let users: Vec<String> = targets
            .iter()
            .filter_map(|t| self.participants.get(t).map(|p| p.identity.user.clone()))
            .collect();
        if targets.is_empty() {
            if by_id.is_some() {
                return Err(SfuError::NoSuchParticipant);
            }
            // A user id not yet present: admit in advance.
            room.admitted_users.insert(who.to_string());
            return Ok(Reply::Done);
        }
        room.admitted_users.extend(users);
        for t in targets {
            let Some(p) = self.participants.get_mut(&t) else {
                continue;
            };
            match p.state {
                ParticipantState::Waiting => {
                    p.state = ParticipantState::Connected;
                    self.announce_arrival(t);
                }
                ParticipantState::Reconnecting {
                    deadline,
                    admitted: false,
                } => {
                    p.state = ParticipantState::Reconnecting {
                        deadline,
                        admitted: true,
                    };
                }
                _ => {}
            }
        }
        Ok(Reply::Done)
    }

    fn close_room(&mut self, now: Instant, room_id: &RoomId) -> Result<Reply, SfuError> {
        let Some(room) = self.rooms.get(room_id) else {
            return Err(SfuError::NoSuchRoom);
        };
        for id in room.members.clone() {
            self.remove_participant(now, id, LeaveReason::RoomClosed);
        }
        if self
            .rooms
            .remove(room_id)
            .is_some_and(|r| r.kind == RoomKind::Class)
        {
            self.declare_interest(room_id, false);
        }
        Ok(Reply::Done)
    }

    /// Removes a participant: its tracks are unpublished, the room is told, its peer closed.
    fn remove_participant(&mut self, now: Instant, id: ParticipantId, reason: LeaveReason) {
        let stale = self.clear_peer(id);
        for t in stale {
            self.remove_track(now, t);
        }
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        p.state = ParticipantState::Left;
        let room_id = p.identity.room.clone();
        let mut announced = true;
        // Subscriptions of this participant.
        if let Some(room) = self.rooms.get_mut(&room_id) {
            for t in room.tracks.values_mut() {
                t.subscribers.retain(|(s, _)| *s != id);
            }
            room.members.retain(|m| *m != id);
            room.speaker.remove(id);
            if room.members.is_empty() {
                room.empty_since = Some(now);
            }
            announced = !room.unannounced.contains(&id);
            room.unannounced.retain(|m| *m != id);
        }
        if p.is_room() {
            self.outputs.push_back(Output::Signal {
                to: id,
                message: ServerMessage::Leave { reason },
            });
            if p.state != ParticipantState::Waiting && announced {
                let audience = if p.announced_all {
                    Audience::All
                } else {
                    Audience::Admins(None)
                };
                self.broadcast_room_to(
                    &room_id,
                    None,
                    ServerMessage::ParticipantLeft { participant: id },
                    audience,
                );
            }
        } else if p.mode == Mode::Whip {
            self.relay_to_room(
                &room_id,
                &Relay::Member {
                    room: room_id.clone(),
                    id,
                    info: None,
                },
            );
        }
    }

    /// Closes and forgets a participant's peer connection; returns the tracks it published.
    fn clear_peer(&mut self, id: ParticipantId) -> Vec<TrackId> {
        let Some(p) = self.participants.get_mut(&id) else {
            return vec![];
        };
        let Some(mut peer) = p.peer.take() else {
            return vec![];
        };
        let room_id = p.identity.room.clone();
        for a in &peer.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        self.by_ufrag.remove(&peer.ufrag);
        // Let str0m say goodbye (DTLS close_notify) before dropping it.
        if peer.rtc.is_alive() {
            let _ = peer.rtc.close();
            while let Ok(str0m::Output::Transmit(t)) = peer.rtc.poll_output() {
                self.outputs.push_back(Output::Transmit {
                    destination: t.destination,
                    contents: t.contents.into(),
                });
            }
        }
        if let Some(room) = self.rooms.get_mut(&room_id) {
            for (mid, slot) in &peer.outs {
                if let Some(t) = slot.track.and_then(|t| room.tracks.get_mut(&t)) {
                    t.subscribers.retain(|(s, m)| !(*s == id && m == mid));
                }
            }
        }
        peer.published.into_values().collect()
    }

    // ---- room protocol messages ------------------------------------------------------------

    fn message(
        &mut self,
        now: Instant,
        from: ParticipantId,
        message: ClientMessage,
    ) -> Result<Reply, SfuError> {
        let Some(p) = self.participants.get(&from) else {
            return Err(SfuError::NoSuchSession);
        };
        let state = p.state;
        let admin = p.identity.grants.admin;
        let room_id = p.identity.room.clone();
        let admitted = state.is_admitted();
        let refuse = |this: &mut Self, code: &str, message: String| {
            this.signal(
                from,
                ServerMessage::Error {
                    code: code.into(),
                    message,
                },
            );
            Ok(Reply::Done)
        };
        match message {
            ClientMessage::Join(_) => refuse(self, "bad_message", "already joined".into()),
            ClientMessage::Leave => {
                self.remove_participant(now, from, LeaveReason::Requested);
                Ok(Reply::Done)
            }
            _ if !admitted => refuse(self, "waiting", "waiting to be admitted".into()),
            ClientMessage::Offer { sdp, sources } => self.offer(now, from, &sdp, sources),
            ClientMessage::Answer { sdp } => self.answer(now, from, &sdp),
            ClientMessage::Subscribe { track, max_height } => {
                self.subscribe(from, track, max_height)
            }
            ClientMessage::Unsubscribe { track } => {
                self.unsubscribe(from, track);
                Ok(Reply::Done)
            }
            ClientMessage::Mute { track, muted } => {
                let Some(room) = self.rooms.get_mut(&room_id) else {
                    return Err(SfuError::NoSuchRoom);
                };
                match room.tracks.get_mut(&track) {
                    Some(t) if t.owner == from => {
                        t.muted = muted;
                        if !muted && t.kind == MediaKind::Video {
                            self.request_keyframe(now, track, None, KeyframeRequestKind::Pli);
                        }
                        self.broadcast_room(
                            &room_id,
                            None,
                            ServerMessage::TrackMuted { track, muted },
                        );
                        Ok(Reply::Done)
                    }
                    _ => refuse(self, "no_such_track", format!("no own track {track}")),
                }
            }
            ClientMessage::RaiseHand { raised } => {
                if let Some(p) = self.participants.get_mut(&from) {
                    p.hand_raised = raised;
                }
                let audience = if self.is_quiet(from) {
                    Audience::Admins(Some(from))
                } else {
                    Audience::All
                };
                self.broadcast_room_to(
                    &room_id,
                    None,
                    ServerMessage::HandRaised {
                        participant: from,
                        raised,
                    },
                    audience,
                );
                Ok(Reply::Done)
            }
            ClientMessage::GrantPublish {
                participant,
                granted,
            } => {
                if !admin {
                    return refuse(self, "forbidden", "granting publish needs `admin`".into());
                }
                let remote = self
                    .rooms
                    .get(&room_id)
                    .is_some_and(|r| r.remote.contains_key(&participant));
                if remote {
                    // Its shard (named in its id) changes it and tells the room.
                    self.outputs.push_back(Output::Relay {
                        to: participant.shard(),
                        message: Relay::GrantPublish {
                            room: room_id,
                            participant,
                            granted,
                        },
                    });
                    return Ok(Reply::Done);
                }
                if !self.grant_publish(now, &room_id, participant, granted) {
                    return refuse(self, "no_such_participant", participant.to_string());
                }
                Ok(Reply::Done)
            }
            ClientMessage::Admit { participant } => {
                if !admin {
                    return refuse(self, "forbidden", "admitting needs `admin`".into());
                }
                match self.admit(now, &room_id, &participant.to_string()) {
                    Ok(r) => Ok(r),
                    Err(e) => refuse(self, "no_such_participant", e.to_string()),
                }
            }
            ClientMessage::Chat { text } => {
                if text.len() > MAX_CHAT_BYTES {
                    return refuse(self, "bad_message", "chat line too long".into());
                }
                let name = self
                    .participants
                    .get(&from)
                    .and_then(|p| p.identity.name.clone());
                self.broadcast_room(&room_id, None, ServerMessage::Chat { from, name, text });
                Ok(Reply::Done)
            }
        }
    }

    /// Lets a participant of this shard publish (or no longer: its tracks are unpublished) and
    /// tells the room. False when it is not in `room_id` here.
    fn grant_publish(
        &mut self,
        now: Instant,
        room_id: &RoomId,
        participant: ParticipantId,
        granted: bool,
    ) -> bool {
        let Some(target) = self
            .participants
            .get_mut(&participant)
            .filter(|t| t.identity.room == *room_id)
        else {
            return false;
        };
        let quiet = !target.is_public();
        target.can_publish = granted;
        if granted {
            target.hand_raised = false;
            target.announced_all = true;
        }
        let info = target.info();
        if !granted {
            let tracks: Vec<TrackId> = target
                .peer
                .as_mut()
                .map(|peer| peer.published.drain().map(|(_, t)| t).collect())
                .unwrap_or_default();
            for t in tracks {
                self.remove_track(now, t);
            }
        }
        if granted && quiet {
            // A quiet student becomes a publisher: the others learn of it now (admins knew).
            self.broadcast_room_to(
                room_id,
                Some(participant),
                ServerMessage::ParticipantJoined { participant: info },
                Audience::NonAdmins,
            );
        }
        self.broadcast_room(
            room_id,
            None,
            ServerMessage::PublishGranted {
                participant,
                granted,
            },
        );
        true
    }

    fn offer(
        &mut self,
        now: Instant,
        from: ParticipantId,
        sdp: &str,
        sources: BTreeMap<String, TrackSource>,
    ) -> Result<Reply, SfuError> {
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => {
                self.signal(from, error_msg("bad_sdp", e.to_string()));
                return Ok(Reply::Done);
            }
        };
        let needs_peer = self
            .participants
            .get(&from)
            .is_some_and(|p| p.peer.is_none());
        if needs_peer {
            let mut peer = self.new_peer(now)?;
            peer.rtc
                .bwe()
                .set_desired_bitrate(Bitrate::kbps(DESIRED_SUBSCRIBER_BITRATE_KBPS));
            self.by_ufrag.insert(peer.ufrag.clone(), from);
            if let Some(p) = self.participants.get_mut(&from) {
                p.peer = Some(peer);
            }
        }
        let Some(peer) = self
            .participants
            .get_mut(&from)
            .and_then(|p| p.peer.as_mut())
        else {
            return Err(SfuError::NoSuchSession);
        };
        peer.sources.extend(sources);
        // The client's offer wins over one of ours in flight ("polite server"): ours is
        // dropped and its subscriptions go back to the queue.
        if peer.pending.take().is_some() {
            let back: Vec<(Mid, TrackId, Option<u32>)> = peer
                .outs
                .iter()
                .filter(|(_, s)| s.state == OutState::Negotiating)
                .filter_map(|(m, s)| Some((*m, s.track?, s.max_height)))
                .collect();
            for (mid, t, h) in back {
                peer.outs.remove(&mid);
                peer.queued_subs.push((t, h));
            }
        }
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                self.signal(from, error_msg("bad_sdp", e.to_string()));
                return Ok(Reply::Done);
            }
        };
        let answer = answer.to_sdp_string();
        // An ICE restart gives the peer a new local ufrag; keep the routing table current.
        if let Some(ufrag) = sdp_ufrag(&answer)
            && ufrag != peer.ufrag
        {
            let old = std::mem::replace(&mut peer.ufrag, ufrag.to_string());
            self.by_ufrag.remove(&old);
            self.by_ufrag.insert(ufrag.to_string(), from);
        }
        self.signal(from, ServerMessage::Answer { sdp: answer });
        self.dirty.push(from);
        self.drive(now);
        // The first offer: subscribe to what the room already publishes.
        let queue_existing = self.participants.get(&from).is_some_and(|p| {
            needs_peer
                && matches!(
                    p.mode,
                    Mode::Room {
                        auto_subscribe: true
                    }
                )
                && p.identity.grants.subscribe
        });
        if queue_existing {
            let room_id = self
                .participants
                .get(&from)
                .map(|p| p.identity.room.clone());
            let existing: Vec<TrackId> = room_id
                .and_then(|r| self.rooms.get(&r))
                .map(|r| {
                    r.tracks
                        .values()
                        .filter(|t| t.owner != from)
                        .map(|t| t.id)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(peer) = self
                .participants
                .get_mut(&from)
                .and_then(|p| p.peer.as_mut())
            {
                for t in existing {
                    if !peer.queued_subs.iter().any(|(q, _)| *q == t)
                        && !peer.outs.values().any(|s| s.track == Some(t))
                    {
                        peer.queued_subs.push((t, None));
                    }
                }
            }
        }
        self.negotiate(from);
        Ok(Reply::Done)
    }

    fn answer(&mut self, now: Instant, from: ParticipantId, sdp: &str) -> Result<Reply, SfuError> {
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                self.signal(from, error_msg("bad_sdp", e.to_string()));
                return Ok(Reply::Done);
            }
        };
        let Some(p) = self.participants.get_mut(&from) else {
            return Err(SfuError::NoSuchSession);
        };
        let room_id = p.identity.room.clone();
        let Some(peer) = p.peer.as_mut() else {
            self.signal(from, error_msg("bad_message", "no offer pending".into()));
            return Ok(Reply::Done);
        };
        let Some(pending) = peer.pending.take() else {
            self.signal(from, error_msg("bad_message", "no offer pending".into()));
            return Ok(Reply::Done);
        };
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending, answer) {
            self.signal(from, error_msg("bad_sdp", e.to_string()));
            return Ok(Reply::Done);
        }
        let mut opened = vec![];
        for (mid, slot) in peer.outs.iter_mut() {
            if slot.state == OutState::Negotiating {
                slot.state = OutState::Open;
                if let Some(t) = slot.track {
                    opened.push((*mid, t, slot.kind));
                }
            }
        }
        let stopped = std::mem::take(&mut peer.queued_stops);
        for mid in &stopped {
            peer.outs.remove(mid);
        }
        let mut keyframes = vec![];
        if let Some(room) = self.rooms.get_mut(&room_id) {
            for (mid, t, kind) in &opened {
                if let Some(track) = room.tracks.get_mut(t) {
                    track.subscribers.push((from, *mid));
                    if *kind == MediaKind::Video {
                        keyframes.push(*t);
                    }
                }
            }
        }
        for (mid, t, _) in opened {
            self.signal(
                from,
                ServerMessage::Subscribed {
                    track: t,
                    mid: mid.to_string(),
                },
            );
        }
        for t in keyframes {
            self.request_keyframe(now, t, None, KeyframeRequestKind::Pli);
        }
        self.dirty.push(from);
        self.negotiate(from);
        Ok(Reply::Done)
    }

    fn subscribe(
        &mut self,
        from: ParticipantId,
        track: TrackId,
        max_height: Option<u32>,
    ) -> Result<Reply, SfuError> {
        let Some(p) = self.participants.get_mut(&from) else {
            return Err(SfuError::NoSuchSession);
        };
        if !p.identity.grants.subscribe {
            self.signal(
                from,
                error_msg("forbidden", "subscribing needs `subscribe`".into()),
            );
            return Ok(Reply::Done);
        }
        let exists = self
            .rooms
            .get(&p.identity.room)
            .is_some_and(|r| r.tracks.get(&track).is_some_and(|t| t.owner != from));
        if !exists {
            self.signal(from, error_msg("no_such_track", track.to_string()));
            return Ok(Reply::Done);
        }
        let Some(peer) = p.peer.as_mut() else {
            self.signal(from, error_msg("bad_message", "send an offer first".into()));
            return Ok(Reply::Done);
        };
        if let Some(slot) = peer.outs.values_mut().find(|s| s.track == Some(track)) {
            slot.max_height = max_height;
            return Ok(Reply::Done);
        }
        if let Some(q) = peer.queued_subs.iter_mut().find(|(t, _)| *t == track) {
            q.1 = max_height;
        } else {
            peer.queued_subs.push((track, max_height));
        }
        self.negotiate(from);
        Ok(Reply::Done)
    }

    fn unsubscribe(&mut self, from: ParticipantId, track: TrackId) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        let room_id = p.identity.room.clone();
        let Some(peer) = p.peer.as_mut() else {
            return;
        };
        peer.queued_subs.retain(|(t, _)| *t != track);
        let mids: Vec<Mid> = peer
            .outs
            .iter()
            .filter(|(_, s)| s.track == Some(track))
            .map(|(m, _)| *m)
            .collect();
        for mid in &mids {
            if let Some(slot) = peer.outs.get_mut(mid) {
                slot.track = None;
            }
            peer.queued_stops.push(*mid);
        }
        if let Some(t) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.tracks.get_mut(&track))
        {
            t.subscribers
                .retain(|(s, m)| !(*s == from && mids.contains(m)));
        }
        self.negotiate(from);
    }

    /// Sends a server offer for queued subscriptions and stops, unless one is in flight.
    fn negotiate(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let room_id = p.identity.room.clone();
        let Some(peer) = p.peer.as_mut() else {
            return;
        };
        if peer.pending.is_some() || (peer.queued_subs.is_empty() && peer.queued_stops.is_empty()) {
            return;
        }
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let mut api = peer.rtc.sdp_api();
        let mut added = vec![];
        for (t, max_height) in std::mem::take(&mut peer.queued_subs) {
            let Some(track) = room.tracks.get(&t) else {
                continue;
            };
            let mid = api.add_media(
                track.kind,
                Direction::SendOnly,
                Some(track.owner.to_string()),
                Some(track.id.to_string()),
                None,
            );
            added.push((
                mid,
                OutSlot {
                    kind: track.kind,
                    track: Some(t),
                    state: OutState::Negotiating,
                    max_height,
                    current_rid: None,
                    rewrite: Rewriter::default(),
                    pt: None,
                    ssrc: None,
                },
            ));
        }
        for mid in &peer.queued_stops {
            api.stop_media(*mid);
        }
        let applied = api.apply();
        peer.outs.extend(added);
        if let Some((offer, pending)) = applied {
            peer.pending = Some(pending);
            let sdp = offer.to_sdp_string();
            self.signal(id, ServerMessage::Offer { sdp });
        }
        self.dirty.push(id);
    }

    // ---- tracks and forwarding -------------------------------------------------------------

    fn track_added(
        &mut self,
        now: Instant,
        from: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        rids: Vec<Rid>,
    ) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        if !p.can_publish {
            self.signal(
                from,
                error_msg("forbidden", "publishing needs the `publish` grant".into()),
            );
            return;
        }
        let room_id = p.identity.room.clone();
        let Some(peer) = p.peer.as_mut() else {
            return;
        };
        let source = peer
            .sources
            .get(&mid.to_string())
            .copied()
            .unwrap_or(match kind {
                MediaKind::Audio => TrackSource::Microphone,
                MediaKind::Video => TrackSource::Camera,
            });
        // Unique on the node: the shard's index above the counter (ids stay below 2^53, exact
        // in JavaScript).
        let id = TrackId(u64::from(self.config.index) << 40 | self.next_track);
        self.next_track += 1;
        peer.published.insert(mid, id);
        let track = Track {
            id,
            owner: from,
            mid,
            kind,
            source,
            muted: false,
            meters: vec![RateMeter::default(); rids.len()],
            newest: vec![None; rids.len().max(1)],
            rids,
            throttles: Vec::new(),
            subscribers: Vec::new(),
            home: None,
        };
        let info = track.info();
        let relayed = RelayedTrack {
            room: room_id.clone(),
            id,
            owner: from,
            home: self.config.index,
            kind,
            source,
            rids: track.rids.clone(),
            muted: false,
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        room.tracks.insert(id, track);
        self.relay_to_room(&room_id, &Relay::TrackPublished(relayed));
        self.track_announced(now, &room_id, info);
    }

    /// Tells this shard's members of `room_id` about a track published here or mirrored from
    /// another shard, subscribes those that subscribe to everything, and binds WHEP sessions.
    fn track_announced(&mut self, now: Instant, room_id: &RoomId, info: TrackInfo) {
        let (id, from) = (info.id, info.participant);
        if info.kind == TrackKind::Audio && self.next_speaker_tick.is_none() {
            self.next_speaker_tick = Some(now + SPEAKER_TICK);
        }
        // The publisher too: it learns its track ids (for `mute`).
        self.broadcast(room_id, None, ServerMessage::TrackPublished { track: info });
        let unannounced = self
            .rooms
            .get(room_id)
            .map(|r| r.unannounced.clone())
            .unwrap_or_default();
        let auto: Vec<ParticipantId> = self.room_members(room_id, |m| {
            m.id != from
                && !unannounced.contains(&m.id)
                && m.state.is_admitted()
                && m.identity.grants.subscribe
                && matches!(
                    m.mode,
                    Mode::Room {
                        auto_subscribe: true
                    }
                )
                && m.peer.is_some()
        });
        for m in auto {
            if let Some(peer) = self.participants.get_mut(&m).and_then(|p| p.peer.as_mut()) {
                peer.queued_subs.push((id, None));
            }
            self.negotiate(m);
        }
        self.bind_whep_slots(now, room_id);
    }

    fn remove_track(&mut self, now: Instant, track: TrackId) {
        let Some(room) = self
            .rooms
            .values_mut()
            .find(|r| r.tracks.contains_key(&track))
        else {
            return;
        };
        let room_id = room.id.clone();
        let Some(t) = room.tracks.remove(&track) else {
            return;
        };
        if t.home.is_none() {
            self.relay_to_room(
                &room_id,
                &Relay::TrackUnpublished {
                    room: room_id.clone(),
                    track,
                },
            );
        }
        for (sub, mid) in t.subscribers {
            let Some(p) = self.participants.get_mut(&sub) else {
                continue;
            };
            let is_room = p.is_room();
            let Some(peer) = p.peer.as_mut() else {
                continue;
            };
            if let Some(slot) = peer.outs.get_mut(&mid) {
                slot.track = None;
                slot.current_rid = None;
            }
            if is_room {
                peer.queued_stops.push(mid);
                self.negotiate(sub);
            }
        }
        // Queued (not yet negotiated) subscriptions to it.
        for p in self.participants.values_mut() {
            if let Some(peer) = p.peer.as_mut() {
                peer.queued_subs.retain(|(q, _)| *q != track);
            }
        }
        self.broadcast(&room_id, None, ServerMessage::TrackUnpublished { track });
        self.bind_whep_slots(now, &room_id);
    }

    /// Binds free m-lines of WHEP subscribers to published tracks of the same kind (the
    /// requested publisher's, or anyone's), oldest track first.
    fn bind_whep_slots(&mut self, now: Instant, room_id: &RoomId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let mut keyframes = vec![];
        for member in room.members.clone() {
            let Some(p) = self.participants.get_mut(&member) else {
                continue;
            };
            let Mode::Whep { publisher } = p.mode else {
                continue;
            };
            let Some(peer) = p.peer.as_mut() else {
                continue;
            };
            let mut mids: Vec<Mid> = peer
                .outs
                .iter()
                .filter(|(_, s)| s.track.is_none() && s.state == OutState::Open)
                .map(|(m, _)| *m)
                .collect();
            mids.sort();
            for mid in mids {
                let bound: Vec<TrackId> = peer.outs.values().filter_map(|s| s.track).collect();
                let Some(slot) = peer.outs.get_mut(&mid) else {
                    continue;
                };
                let candidate = room.tracks.values_mut().find(|t| {
                    t.kind == slot.kind
                        && t.owner != member
                        && publisher.is_none_or(|p| p == t.owner)
                        && !bound.contains(&t.id)
                });
                if let Some(t) = candidate {
                    slot.track = Some(t.id);
                    slot.current_rid = None;
                    slot.pt = None;
                    t.subscribers.push((member, mid));
                    if t.kind == MediaKind::Video {
                        keyframes.push(t.id);
                    }
                }
            }
        }
        for t in keyframes {
            self.request_keyframe(now, t, None, KeyframeRequestKind::Pli);
        }
    }

    /// Asks a publisher for a keyframe on `track` (layer `rid`), throttled per track and layer.
    fn request_keyframe(
        &mut self,
        now: Instant,
        track: TrackId,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let Some(t) = self
            .rooms
            .values_mut()
            .find_map(|r| r.tracks.get_mut(&track))
        else {
            return;
        };
        if let Some(home) = t.home {
            // The home shard throttles for the whole room.
            self.outputs.push_back(Output::Relay {
                to: home,
                message: Relay::KeyframeRequest { track, rid, kind },
            });
            return;
        }
        // Without a chosen layer, ask every layer (a subscriber starting on any of them).
        let rids: Vec<Option<Rid>> = if rid.is_none() && !t.rids.is_empty() {
            t.rids.iter().copied().map(Some).collect()
        } else {
            vec![rid]
        };
        let interval = self.config.keyframe_interval;
        let mut allowed = vec![];
        for r in rids {
            let throttle = match t.throttles.iter_mut().find(|(x, _)| *x == r) {
                Some((_, th)) => th,
                None => {
                    t.throttles.push((r, KeyframeThrottle::new(interval)));
                    let last = t.throttles.len() - 1;
                    &mut t.throttles[last].1
                }
            };
            if throttle.allow(now) {
                allowed.push(r);
            } else {
                self.stats.keyframe_requests_throttled += 1;
            }
        }
        let (owner, mid) = (t.owner, t.mid);
        let Some(peer) = self
            .participants
            .get_mut(&owner)
            .and_then(|p| p.peer.as_mut())
        else {
            return;
        };
        let mut api = peer.rtc.direct_api();
        for r in allowed {
            // The layer's receive stream exists once its first packet came.
            if let Some(stream) = api.stream_rx_by_mid(mid, r) {
                stream.request_keyframe(kind);
                self.stats.keyframe_requests += 1;
            }
        }
        self.dirty.push(owner);
    }

    /// Forwards one RTP packet of a publisher's track, as it arrives: what the packet is
    /// (layer, keyframe) is decided once here, then the packet goes to the other shards with
    /// members in the room ([`crate::relay`]) and to this shard's subscribers
    /// ([`Shard::fan_out`]).
    fn forward(
        &mut self,
        now: Instant,
        from: ParticipantId,
        mid: Mid,
        rid: Option<Rid>,
        packet: RtpPacket,
    ) {
        let Some(p) = self.participants.get(&from) else {
            return;
        };
        let Some(peer) = p.peer.as_ref() else {
            return;
        };
        let Some(&track_id) = peer.published.get(&mid) else {
            return;
        };
        let pt_in = packet.header.payload_type;
        let Some(params) = peer.rtc.codec_config().find(|c| c.pt() == pt_in).copied() else {
            self.stats.dropped_packets += 1;
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.identity.room) else {
            return;
        };
        let Some(track) = room.tracks.get_mut(&track_id) else {
            return;
        };
        if track.muted {
            return;
        }
        let header = &packet.header;
        let layer_index = rid.and_then(|r| track.rids.iter().position(|x| *x == r));
        let seq = *packet.seq_no;
        let ts = header.timestamp;
        let first_of_frame = match track.newest.get_mut(layer_index.unwrap_or(0)) {
            Some(newest) => match *newest {
                Some((s, _)) if seq <= s => false,
                previous => {
                    *newest = Some((seq, ts));
                    previous.is_none_or(|(_, t)| t != ts)
                }
            },
            None => false,
        };
        let keyframe = track.kind == MediaKind::Video
            && starts_keyframe(params.spec().codec, &packet.payload, first_of_frame);
        let rtp = RelayedRtp {
            room: room.id.clone(),
            track: track_id,
            rid,
            params,
            seq,
            timestamp: ts,
            marker: header.marker,
            ext_vals: ExtensionValues {
                audio_level: header.ext_vals.audio_level,
                voice_activity: header.ext_vals.voice_activity,
                video_orientation: header.ext_vals.video_orientation,
                ..Default::default()
            },
            wallclock: packet.timestamp,
            payload: packet.payload,
            keyframe,
            arrived: now,
        };
        if self.interest.get(&rtp.room).is_some_and(|s| !s.is_empty()) {
            // Handed over first, so that the other shards fan out while this one does.
            let rtp = Arc::new(rtp);
            self.relay_to_room(&rtp.room.clone(), &Relay::Rtp(Arc::clone(&rtp)));
            self.fan_out(now, &rtp);
        } else {
            self.fan_out(now, &rtp);
        }
    }

    /// Sends one packet of a track to this shard's subscribers of it: per subscriber, choose
    /// the simulcast layer (switching on a keyframe only), rewrite sequence number and
    /// timestamp, and hand the packet (payload shared, not copied) to the subscriber's send
    /// stream; str0m encrypts and keeps it for NACKs.
    fn fan_out(&mut self, now: Instant, rtp: &RelayedRtp) {
        let Some(room) = self.rooms.get_mut(&rtp.room) else {
            return;
        };
        let Some(track) = room.tracks.get_mut(&rtp.track) else {
            return;
        };
        if track.kind == MediaKind::Audio
            && let Some(level) = rtp.ext_vals.audio_level
        {
            // Every shard the room spans finds its active speaker from what it fans out.
            room.speaker
                .observe(now, track.owner, level.saturating_neg().max(0));
        }
        let rid = rtp.rid;
        let layer_index = rid.and_then(|r| track.rids.iter().position(|x| *x == r));
        if let Some(i) = layer_index {
            track.meters[i].add(now, rtp.payload.len());
        }
        let simulcast = !track.rids.is_empty();
        let (order, layers) = if simulcast {
            track.layers()
        } else {
            (vec![], vec![])
        };
        let source = (rtp.track.0, layer_index.map(|i| i as u8));
        let params = rtp.params;
        let pt_in = params.pt();
        let clock_rate = params.spec().clock_rate.get();
        let nackable = track.kind == MediaKind::Video;
        let ends_frame = rtp.marker || track.kind == MediaKind::Audio;
        let is_keyframe = rtp.keyframe;
        let mut keyframes: Vec<Option<Rid>> = vec![];
        for (sub, out_mid) in &track.subscribers {
            let Some(peer) = self.participants.get_mut(sub).and_then(|p| p.peer.as_mut()) else {
                continue;
            };
            let Some(slot) = peer.outs.get_mut(out_mid) else {
                continue;
            };
            if slot.state != OutState::Open {
                continue;
            }
            if simulcast {
                let current = slot
                    .current_rid
                    .and_then(|r| order.iter().position(|x| *x == r));
                let target_index = select_layer(&layers, peer.bwe_bps, slot.max_height, current);
                let wanted_index = select_layer(&layers, None, slot.max_height, current);
                if wanted_index > target_index && current == target_index {
                    probe_for_upgrade(&mut peer.rtc, &mut peer.upgrade_probe, peer.bwe_bps, now);
                }
                let target = target_index.and_then(|i| order.get(i).copied());
                if rid != slot.current_rid {
                    // Switch only on a keyframe of the target layer.
                    if rid == target && is_keyframe {
                        if slot.current_rid.is_some() {
                            self.stats.layer_switches += 1;
                        }
                        if current.is_some_and(|c| target_index > Some(c)) {
                            // Upgraded: probe again soon if it still wants more.
                            peer.upgrade_probe = None;
                        } else if let Some((_, wait)) = peer.upgrade_probe {
                            // Downgraded: no probe while the link is congested.
                            peer.upgrade_probe = Some((now + wait, wait));
                        }
                        slot.current_rid = target;
                    } else {
                        if rid == target && !keyframes.contains(&target) {
                            keyframes.push(target);
                        }
                        continue;
                    }
                } else if target != slot.current_rid && !keyframes.contains(&target) {
                    keyframes.push(target);
                }
            }
            let pt_out = match slot.pt {
                Some((i, o)) if i == pt_in => o,
                _ => {
                    let Some(o) = peer.rtc.codec_config().match_params(params).map(|c| c.pt())
                    else {
                        continue;
                    };
                    slot.pt = Some((pt_in, o));
                    o
                }
            };
            let Some((out_seq, out_ts)) =
                slot.rewrite
                    .map(source, rtp.seq, rtp.timestamp, clock_rate, now)
            else {
                continue;
            };
            let mut api = peer.rtc.direct_api();
            let cached = slot
                .ssrc
                .and_then(|ssrc| api.stream_tx(&ssrc).map(|_| ssrc));
            let ssrc = match cached {
                Some(ssrc) => ssrc,
                None => {
                    let Some(stream) = api.stream_tx_by_mid(*out_mid, None) else {
                        continue;
                    };
                    // Not paced again: forwarded packet by packet, the stream keeps the
                    // publisher's own pacing, and a second pacer here only adds delay
                    // (mediasoup does not pace forwarded media either). BWE still runs on
                    // TWCC and probes with padding.
                    stream.set_unpaced(true);
                    let ssrc = stream.ssrc();
                    slot.ssrc = Some(ssrc);
                    ssrc
                }
            };
            let Some(stream) = api.stream_tx(&ssrc) else {
                continue;
            };
            stream.write_rtp(
                RtpWrite::new(
                    pt_out,
                    out_seq.into(),
                    out_ts,
                    rtp.wallclock,
                    Arc::clone(&rtp.payload),
                )
                .marker(rtp.marker)
                .ext_vals(rtp.ext_vals.clone())
                .nackable(nackable),
            );
            if self.arrivals.len() >= MAX_REMEMBERED_ARRIVALS {
                self.arrivals.clear();
            }
            self.arrivals.insert((*ssrc, out_seq as u16), rtp.arrived);
            if ends_frame {
                self.stats.frames_forwarded += 1;
            }
            self.stats.bytes_forwarded += rtp.payload.len() as u64;
            self.dirty.push(*sub);
        }
        for rid in keyframes {
            self.request_keyframe(now, rtp.track, rid, KeyframeRequestKind::Pli);
        }
    }

    // ---- rooms over several shards ----------------------------------------------------------

    /// Handles a message from another shard of the node ([`crate::relay`]). Its work is done,
    /// like an input's, by [`Shard::poll_output`].
    pub fn handle_relay(&mut self, now: Instant, message: Relay) {
        self.last_now = Some(self.last_now.map_or(now, |l| l.max(now)));
        if self.shutting_down {
            return;
        }
        let other_kind = relay_room(&message)
            .and_then(|r| self.rooms.get(r))
            .is_some_and(|r| r.kind != RoomKind::Class);
        if other_kind {
            // Only class rooms span shards: a consultation of the same name here has nothing
            // to do with that class, and tells it nothing.
            if let Relay::Interest {
                room,
                shard,
                on: true,
            } = message
            {
                let message = Relay::Snapshot {
                    room,
                    shard: self.config.index,
                    members: vec![],
                    tracks: vec![],
                };
                self.outputs.push_back(Output::Relay { to: shard, message });
            }
            return;
        }
        match message {
            Relay::Interest { room, shard, on } => {
                let shards = self.interest.entry(room.clone()).or_default();
                shards.retain(|s| *s != shard);
                if on {
                    shards.push(shard);
                    // What the room has here already (possibly nothing).
                    let message = self.snapshot(&room);
                    self.outputs.push_back(Output::Relay { to: shard, message });
                } else {
                    if shards.is_empty() {
                        self.interest.remove(&room);
                    }
                    // Its members left with it.
                    if let Some(r) = self.rooms.get_mut(&room) {
                        r.remote.retain(|id, _| id.shard() != shard);
                    }
                }
            }
            Relay::Snapshot {
                room,
                shard,
                members,
                tracks,
            } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                for m in members {
                    r.remote.insert(m.id, m);
                }
                for t in tracks {
                    self.mirror_track(now, t);
                }
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                let was_syncing = !r.syncing.is_empty();
                r.syncing.retain(|k| *k != shard);
                if was_syncing && r.syncing.is_empty() {
                    self.room_synced(&room);
                }
            }
            Relay::Member { room, id, info } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    match info {
                        Some(info) => {
                            r.remote.insert(id, info);
                        }
                        None => {
                            r.remote.remove(&id);
                        }
                    }
                }
            }
            Relay::Broadcast {
                room,
                message,
                audience,
            } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                // The roster and the mirrors follow what the room is told.
                match &*message {
                    ServerMessage::ParticipantJoined { participant } => {
                        r.remote.insert(participant.id, participant.clone());
                    }
                    ServerMessage::ParticipantLeft { participant } => {
                        r.remote.remove(participant);
                        r.speaker.remove(*participant);
                    }
                    ServerMessage::HandRaised {
                        participant,
                        raised,
                    } => {
                        if let Some(info) = r.remote.get_mut(participant) {
                            info.hand_raised = *raised;
                        }
                    }
                    ServerMessage::PublishGranted {
                        participant,
                        granted,
                    } => {
                        if let Some(info) = r.remote.get_mut(participant) {
                            info.can_publish = *granted;
                            info.hand_raised &= !*granted;
                        }
                    }
                    ServerMessage::TrackMuted { track, muted } => {
                        if let Some(t) = r.tracks.get_mut(track).filter(|t| t.home.is_some()) {
                            t.muted = *muted;
                        }
                    }
                    _ => {}
                }
                self.broadcast_to(&room, None, *message, audience);
            }
            Relay::GrantPublish {
                room,
                participant,
                granted,
            } => {
                self.grant_publish(now, &room, participant, granted);
            }
            Relay::Channel {
                room,
                from,
                label,
                binary,
                data,
            } => self.deliver_channel(&room, from, &label, binary, &data),
            Relay::TrackPublished(t) => self.mirror_track(now, t),
            Relay::TrackUnpublished { room, track } => {
                let mirrored = self
                    .rooms
                    .get(&room)
                    .and_then(|r| r.tracks.get(&track))
                    .is_some_and(|t| t.home.is_some());
                if mirrored {
                    self.remove_track(now, track);
                }
            }
            Relay::Rtp(rtp) => {
                let mirrored = self
                    .rooms
                    .get(&rtp.room)
                    .and_then(|r| r.tracks.get(&rtp.track))
                    .is_some_and(|t| t.home.is_some());
                if mirrored {
                    self.fan_out(now, &rtp);
                }
            }
            Relay::KeyframeRequest { track, rid, kind } => {
                self.request_keyframe(now, track, rid, kind);
            }
        }
    }

    /// What this shard has of `room`, for a shard that just opened it: its listed members
    /// (announced) and the tracks published here.
    fn snapshot(&self, room_id: &RoomId) -> Relay {
        let (mut members, mut tracks) = (vec![], vec![]);
        if let Some(room) = self.rooms.get(room_id) {
            members = room
                .members
                .iter()
                .filter(|m| !room.unannounced.contains(m))
                .filter_map(|m| self.participants.get(m))
                .filter(|m| m.state.is_admitted() && m.is_listed())
                .map(Participant::info)
                .collect();
            tracks = room
                .tracks
                .values()
                .filter(|t| t.home.is_none())
                .map(|t| RelayedTrack {
                    room: room_id.clone(),
                    id: t.id,
                    owner: t.owner,
                    home: self.config.index,
                    kind: t.kind,
                    source: t.source,
                    rids: t.rids.clone(),
                    muted: t.muted,
                })
                .collect();
        }
        Relay::Snapshot {
            room: room_id.clone(),
            shard: self.config.index,
            members,
            tracks,
        }
    }

    /// Mirrors a track published on another shard, which relays its packets here.
    fn mirror_track(&mut self, now: Instant, t: RelayedTrack) {
        let Some(room) = self.rooms.get_mut(&t.room) else {
            return;
        };
        if room.tracks.contains_key(&t.id) {
            return;
        }
        let track = Track {
            id: t.id,
            owner: t.owner,
            mid: Mid::from("relay"),
            kind: t.kind,
            source: t.source,
            muted: t.muted,
            meters: vec![RateMeter::default(); t.rids.len()],
            newest: vec![None; t.rids.len().max(1)],
            rids: t.rids,
            throttles: Vec::new(),
            subscribers: Vec::new(),
            home: Some(t.home),
        };
        let info = track.info();
        room.tracks.insert(t.id, track);
        self.track_announced(now, &t.room, info);
    }

    /// Tells the other shards that this one has members in `room` (`on`), or no longer. Only
    /// class rooms span shards.
    fn declare_interest(&mut self, room: &RoomId, on: bool) {
        for shard in 0..self.config.shards {
            if shard != self.config.index {
                self.outputs.push_back(Output::Relay {
                    to: shard,
                    message: Relay::Interest {
                        room: room.clone(),
                        shard: self.config.index,
                        on,
                    },
                });
            }
        }
    }

    /// Sends `message` to every other shard with members in `room`.
    fn relay_to_room(&mut self, room: &RoomId, message: &Relay) {
        let Some(shards) = self.interest.get(room) else {
            return;
        };
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.kind != RoomKind::Class)
        {
            // The interest is a class's of the same name (only classes span shards).
            return;
        }
        for &to in shards {
            self.outputs.push_back(Output::Relay {
                to,
                message: message.clone(),
            });
        }
    }

    fn relay_channel(&mut self, from: ParticipantId, label: &str, binary: bool, data: &[u8]) {
        if data.len() > MAX_RELAY_BYTES {
            return;
        }
        let Some(room_id) = self
            .participants
            .get(&from)
            .map(|p| p.identity.room.clone())
        else {
            return;
        };
        if self.interest.get(&room_id).is_some_and(|s| !s.is_empty()) {
            self.relay_to_room(
                &room_id,
                &Relay::Channel {
                    room: room_id.clone(),
                    from,
                    label: label.to_string(),
                    binary,
                    data: data.into(),
                },
            );
        }
        self.deliver_channel(&room_id, from, label, binary, data);
    }

    /// Writes a data-channel message of `from` to this shard's members of the room that have a
    /// channel labelled `label`.
    fn deliver_channel(
        &mut self,
        room_id: &RoomId,
        from: ParticipantId,
        label: &str,
        binary: bool,
        data: &[u8],
    ) {
        if data.len() > MAX_RELAY_BYTES {
            return;
        }
        for m in self.room_members(room_id, |m| m.id != from && m.state.is_admitted()) {
            let Some(peer) = self.participants.get_mut(&m).and_then(|p| p.peer.as_mut()) else {
                continue;
            };
            let Some(cid) = peer
                .channels
                .iter()
                .find(|(_, l)| l == label)
                .map(|(c, _)| *c)
            else {
                continue;
            };
            if let Some(mut ch) = peer.rtc.channel(cid) {
                let _ = ch.write(binary, data);
                self.dirty.push(m);
            }
        }
    }

    // ---- helpers --------------------------------------------------------------------------

    fn signal(&mut self, to: ParticipantId, message: ServerMessage) {
        let is_room = self.participants.get(&to).is_some_and(Participant::is_room);
        if is_room {
            self.outputs.push_back(Output::Signal { to, message });
        }
    }

    /// Sends to every admitted room-protocol member of this shard except `except` (and those
    /// whose `joined` has not gone out yet).
    fn broadcast(&mut self, room: &RoomId, except: Option<ParticipantId>, message: ServerMessage) {
        self.broadcast_to(room, except, message, Audience::All);
    }

    /// [`Shard::broadcast`] to the members `audience` includes.
    fn broadcast_to(
        &mut self,
        room: &RoomId,
        except: Option<ParticipantId>,
        message: ServerMessage,
        audience: Audience,
    ) {
        let unannounced = self
            .rooms
            .get(room)
            .map(|r| r.unannounced.clone())
            .unwrap_or_default();
        let to = self.room_members(room, |m| {
            Some(m.id) != except
                && m.is_room()
                && m.state.is_admitted()
                && !unannounced.contains(&m.id)
                && audience.includes(m.id, m.identity.grants.admin)
        });
        for id in to {
            self.outputs.push_back(Output::Signal {
                to: id,
                message: message.clone(),
            });
        }
    }

    /// [`Shard::broadcast`], and the same to the members on the other shards the room spans.
    fn broadcast_room(
        &mut self,
        room: &RoomId,
        except: Option<ParticipantId>,
        message: ServerMessage,
    ) {
        self.broadcast_room_to(room, except, message, Audience::All);
    }

    /// [`Shard::broadcast_room`] to the members `audience` includes.
    fn broadcast_room_to(
        &mut self,
        room: &RoomId,
        except: Option<ParticipantId>,
        message: ServerMessage,
        audience: Audience,
    ) {
        self.relay_to_room(
            room,
            &Relay::Broadcast {
                room: room.clone(),
                message: Box::new(message.clone()),
                audience,
            },
        );
        self.broadcast_to(room, except, message, audience);
    }

    /// Whether `id` is a quiet member of a class: one that only receives and was never
    /// announced to everyone (see [`Audience`]).
    fn is_quiet(&self, id: ParticipantId) -> bool {
        self.participants.get(&id).is_some_and(|p| {
            !p.is_public()
                && self
                    .rooms
                    .get(&p.identity.room)
                    .is_some_and(|r| r.kind == RoomKind::Class)
        })
    }

    fn room_members(
        &self,
        room: &RoomId,
        filter: impl Fn(&Participant) -> bool,
    ) -> Vec<ParticipantId> {
        self.rooms
            .get(room)
            .map(|r| {
                r.members
                    .iter()
                    .filter_map(|m| self.participants.get(m))
                    .filter(|m| filter(m))
                    .map(|m| m.id)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether every member of a class hears of a participant by what it is: an admin, or allowed
/// to publish. (A student introduced once stays known: [`Participant::is_public`].)
fn is_public(admin: bool, can_publish: bool) -> bool {
    admin || can_publish
}

/// The room a message between shards is about, for the check that it is a class here. `None`
/// for a keyframe request (it names a track) and for a packet: a packet names a track, which
/// this shard mirrors only in a class, so it needs no check — and it is the hot path.
fn relay_room(message: &Relay) -> Option<&RoomId> {
    match message {
        Relay::Interest { room, .. }
        | Relay::Snapshot { room, .. }
        | Relay::Member { room, .. }
        | Relay::Broadcast { room, .. }
        | Relay::GrantPublish { room, .. }
        | Relay::Channel { room, .. }
        | Relay::TrackUnpublished { room, .. } => Some(room),
        Relay::TrackPublished(t) => Some(&t.room),
        Relay::Rtp(_) | Relay::KeyframeRequest { .. } => None,
    }
}

/// Handles one str0m event of a peer; what concerns other peers is returned.
fn on_event(
    id: ParticipantId,
    is_room: bool,
    peer: &mut Peer,
    event: Event,
    stats: &mut ShardStats,
) -> Option<Propagated> {
    match event {
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            Some(Propagated::Failed(id))
        }
        Event::IceConnectionStateChange(
            IceConnectionState::Connected | IceConnectionState::Completed,
        ) => Some(Propagated::Connected(id)),
        Event::MediaAdded(m) => {
            if m.direction.is_receiving() {
                let rids = m
                    .simulcast
                    .map(|s| s.recv.iter().map(|l| l.rid).collect())
                    .unwrap_or_default();
                Some(Propagated::TrackAdded {
                    from: id,
                    mid: m.mid,
                    kind: m.kind,
                    rids,
                })
            } else if m.direction == Direction::SendOnly && !is_room {
                Some(Propagated::SlotAdded {
                    to: id,
                    mid: m.mid,
                    kind: m.kind,
                })
            } else {
                None
            }
        }
        Event::RtpPacket(packet) => {
            let mut api = peer.rtc.direct_api();
            let stream = api.stream_rx(&packet.header.ssrc)?;
            Some(Propagated::Rtp {
                from: id,
                mid: stream.mid(),
                rid: stream.rid(),
                packet: Box::new(packet),
            })
        }
        Event::KeyframeRequest(r) => Some(Propagated::Keyframe {
            from: id,
            mid: r.mid,
            kind: r.kind,
        }),
        Event::ChannelOpen(cid, label) => {
            peer.channels.push((cid, label));
            None
        }
        Event::ChannelClose(cid) => {
            peer.channels.retain(|(c, _)| *c != cid);
            None
        }
        Event::ChannelData(d) => {
            let label = peer
                .channels
                .iter()
                .find(|(c, _)| *c == d.id)
                .map(|(_, l)| l.clone())?;
            Some(Propagated::Channel {
                from: id,
                label,
                binary: d.binary,
                data: d.data,
            })
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            // Layer choice reads the estimate on the next packet.
            peer.bwe_bps = Some(estimate.as_u64());
            None
        }
        Event::MediaIngressStats(s) => {
            if let Some(loss) = s.loss {
                stats.loss_permille = (f64::from(loss) * 1000.0).clamp(0.0, 1000.0) as u64;
            }
            None
        }
        Event::MediaEgressStats(s) => {
            let seen = peer.nacks_seen.entry((s.mid, s.rid)).or_insert(0);
            stats.nacks += s.nacks.saturating_sub(*seen);
            *seen = s.nacks.max(*seen);
            None
        }
        _ => None,
    }
}

/// Called when bandwidth (not size) holds a subscriber below the layer it wants.
///
/// str0m's BWE probes for capacity at start, in the application-limited region, or after 15 s
/// of a stagnant estimate. A subscriber held on a low layer sends too little for the estimate to
/// grow (it is capped at 1.5x the observed rate) but often too much for ALR, so after its link
/// recovers it could stay low for a long time. Restarting the estimator from the current
/// estimate triggers its initial probes (3x and 6x the estimate); a failed probe leaves the
/// estimate where it was, and the wait until the next one doubles.
fn probe_for_upgrade(
    rtc: &mut Rtc,
    schedule: &mut Option<(Instant, Duration)>,
    estimate: Option<u64>,
    now: Instant,
) {
    let (due, wait) =
        *schedule.get_or_insert((now + UPGRADE_PROBE_INTERVAL, UPGRADE_PROBE_INTERVAL));
    let Some(estimate) = estimate.filter(|_| now >= due) else {
        return;
    };
    let mut bwe = rtc.bwe();
    bwe.reset(Bitrate::bps(estimate));
    bwe.set_desired_bitrate(Bitrate::kbps(DESIRED_SUBSCRIBER_BITRATE_KBPS));
    let wait = (wait * 2).min(MAX_UPGRADE_PROBE_INTERVAL);
    *schedule = Some((now + wait, wait));
}

fn track_kind(kind: MediaKind) -> TrackKind {
    match kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    }
}

fn error_msg(code: &str, message: String) -> ServerMessage {
    ServerMessage::Error {
        code: code.into(),
        message,
    }
}

/// The `a=ice-ufrag:` of an SDP.
fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}
