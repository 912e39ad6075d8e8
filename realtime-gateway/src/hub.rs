//! The hub: which local connection is subscribed to which channel, and the fan-out.
//!
//! Channels are spread over shard tasks by hash. Each shard task owns its channels'
//! subscriber sets and geo indexes outright — no locks — and is told what to do by message.
//! A channel's subscribers are split over *lanes*, one shard per core (by connection id), and
//! each publication goes to every lane: the lanes sweep their parts in parallel, on all
//! cores, and each subscriber still gets the channel's publications in order (one lane owns
//! it). A publication is encoded once (in [`EventSink::deliver`]) and the same [`Bytes`] reach
//! each recipient's bounded [`Outbox`] without waiting — written straight to its socket when
//! its queue is empty, queued otherwise; a full outbox closes its connection with 3008 slow
//! instead of slowing anyone else.
//!
//! A sweep is paced: every 128 deliveries it yields, so that the runtime's other tasks — the
//! next publish request among them, and the writers of connections whose frames were
//! queued — are not kept waiting behind 10 000 deliveries. Publications of one channel that
//! arrive while a sweep runs join it where it is, as a new *round*: the subscribers still
//! ahead get the rounds under way joined in one frame (joined once, shared by all of them),
//! and the sweep wraps round to give the new round to those it had passed. Every subscriber
//! gets every round once, in order, and a publication never waits for a whole sweep.
//!
//! A subscription starts *buffering*: publications for it are kept aside while the
//! connection reads history for its subscribe reply, then [`Hub::activate`] flushes those
//! newer than the reply's position. So a subscriber never misses a publication between
//! its history read and its live stream, and never gets one twice.

use crate::config::GatewayConfig;
use crate::engine::EngineEvent;
use crate::geo::{GeoBox, GeoIndex, Location};
use crate::outbox::{Outbox, Stamps, WireFrame};
use crate::protocol::{encode_join, encode_leave, encode_publication};
use crate::stats::{Stats, Tally};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{mpsc, oneshot};

const SHARDS: usize = 16;
const SHARD_QUEUE: usize = 4096;
/// Deliveries between two yields of a sweep. Each delivery wakes a writer task; a sweep that
/// woke all 10 000 at once queued them ahead of every other task of its worker — the next
/// publish request included — until all had written (see `docs/benchmarks-gateway.md`).
const SWEEP_CHUNK: usize = 128;
/// Publications joined into one round at most.
const MAX_ROUND: usize = 64;

/// Id of a local connection.
pub(crate) type ConnId = u64;

/// One event to fan out: an encoded publication (or join/leave push) for one channel.
#[derive(Clone)]
struct Fanout {
    channel: Arc<str>,
    frame: Bytes,
    offset: u64,
    location: Option<Location>,
    /// Unix microseconds of the publish call (0: not a publication).
    published_us: u64,
}

enum HubCmd {
    Subscribe {
        channel: Arc<str>,
        conn: ConnId,
        outbox: Arc<Outbox>,
        geo: Option<GeoBox>,
        ack: oneshot::Sender<()>,
    },
    Activate {
        channel: Arc<str>,
        conn: ConnId,
        after_offset: u64,
    },
    Unsubscribe {
        channel: Arc<str>,
        conn: ConnId,
    },
    Fanout(Fanout),
    Channels {
        reply: oneshot::Sender<Vec<(String, usize)>>,
    },
}

/// The fan-outs of one channel that a part of a sweep delivers together: live subscribers
/// without a geo filter get them in one frame (newline-separated, as the JSON protocol
/// allows), joined once for all of them.
struct Round {
    fanouts: Vec<Fanout>,
    /// The joined publications as one WebSocket text frame, header included, so that a
    /// direct write sends it as it is (see `Outbox::deliver_wire`).
    wire: WireFrame,
    stamps: Stamps,
}

impl Round {
    fn new(fanouts: Vec<Fanout>) -> Round {
        let parts: Vec<&[u8]> = fanouts.iter().map(|f| &f.frame[..]).collect();
        let wire = WireFrame::text(&parts);
        let stamps = match fanouts.as_slice() {
            [one] => Stamps::one(one.published_us),
            many => Stamps::Many(Arc::new(many.iter().map(|f| f.published_us).collect())),
        };
        Round {
            wire,
            fanouts,
            stamps,
        }
    }
}

enum SubState {
    /// Kept aside until activation: (offset, frame, publish time).
    Buffering(Vec<(u64, Bytes, u64)>),
    Live,
}

struct Sub {
    outbox: Arc<Outbox>,
    state: SubState,
}

impl Sub {
    /// Delivers one fan-out; `true` when it was queued for the connection.
    fn deliver(&mut self, f: &Fanout, limit: usize, tally: &mut Tally) -> bool {
        match &mut self.state {
            SubState::Live => {
                self.outbox
                    .deliver(f.frame.clone(), Stamps::one(f.published_us), tally)
            }
            SubState::Buffering(buf) => {
                if buf.len() >= limit {
                    self.outbox.overflow();
                    return false;
                }
                buf.push((f.offset, f.frame.clone(), f.published_us));
                false
            }
        }
    }

    /// Delivers a whole round; returns how many of its fan-outs were queued.
    fn deliver_round(&mut self, round: &Round, limit: usize, tally: &mut Tally) -> u64 {
        if let SubState::Live = self.state {
            let queued = self.outbox.deliver_wire(&round.wire, &round.stamps, tally);
            return if queued {
                round.fanouts.len() as u64
            } else {
                0
            };
        }
        round
            .fanouts
            .iter()
            .map(|f| u64::from(self.deliver(f, limit, tally)))
            .sum()
    }
}

#[derive(Default)]
struct ChannelSubs {
    /// Subscribers without a geo filter, in a dense list that a sweep walks by index.
    plain: Vec<(ConnId, Sub)>,
    /// Where each of them is in `plain`.
    slots: HashMap<ConnId, usize>,
    geo: HashMap<ConnId, (Sub, GeoBox)>,
    index: GeoIndex,
}

impl ChannelSubs {
    fn len(&self) -> usize {
        self.plain.len() + self.geo.len()
    }

    fn insert_plain(&mut self, conn: ConnId, sub: Sub) {
        match self.slots.get(&conn) {
            Some(&i) => self.plain[i].1 = sub,
            None => {
                self.slots.insert(conn, self.plain.len());
                self.plain.push((conn, sub));
            }
        }
    }

    fn remove_plain(&mut self, conn: ConnId) -> bool {
        let Some(i) = self.slots.remove(&conn) else {
            return false;
        };
        self.plain.swap_remove(i);
        if let Some((moved, _)) = self.plain.get(i) {
            self.slots.insert(*moved, i);
        }
        true
    }

    fn get_mut(&mut self, conn: ConnId) -> Option<&mut Sub> {
        match self.slots.get(&conn) {
            Some(&i) => self.plain.get_mut(i).map(|(_, s)| s),
            None => self.geo.get_mut(&conn).map(|(s, _)| s),
        }
    }
}

struct Shard {
    channels: HashMap<Arc<str>, ChannelSubs>,
    stats: Arc<Stats>,
    buffer_limit: usize,
    /// Bytes of joined frames in one round at most.
    max_round_bytes: usize,
    scratch: Vec<u64>,
}

/// Counts deliveries and yields to the runtime every [`SWEEP_CHUNK`] of them, so that the
/// writers just woken run (on both workers) and other tasks get their turn mid-sweep. The
/// frames the sweep wrote itself (direct writes) are counted in its [`Tally`], added to the
/// shared stats at each yield.
struct Pacer<'a> {
    n: usize,
    tally: Tally,
    stats: &'a Stats,
}

impl Pacer<'_> {
    async fn delivered(&mut self, n: usize) {
        self.n += n;
        if self.n >= SWEEP_CHUNK {
            self.n = 0;
            self.tally.flush(self.stats);
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Pacer<'_> {
    fn drop(&mut self) {
        self.tally.flush(self.stats);
    }
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::Receiver<HubCmd>) {
        let mut next: Option<HubCmd> = None;
        loop {
            let cmd = match next.take() {
                Some(cmd) => cmd,
                None => match rx.recv().await {
                    Some(cmd) => cmd,
                    None => return,
                },
            };
            let Some(first) = self.handle(cmd) else {
                continue;
            };
            let channel = first.channel.clone();
            let room = self.max_round_bytes.saturating_sub(first.frame.len());
            let mut fanouts = vec![first];
            pull(
                &channel,
                &mut rx,
                &mut next,
                &mut fanouts,
                MAX_ROUND - 1,
                room,
            );
            self.sweep(fanouts, Some(&mut rx), &mut next).await;
        }
    }

    /// Delivers `fanouts` (one channel's) to the channel's subscribers, yielding every
    /// [`SWEEP_CHUNK`] deliveries.
    ///
    /// Fan-outs of the same channel that arrive during the sweep (read from `rx` at each
    /// yield) join it where it is: from there on, subscribers get the rounds under way in one
    /// frame, and the sweep goes round the subscriber list until each round has visited every
    /// subscriber once. So each subscriber gets every round once and in order, and a
    /// publication does not wait for the whole previous sweep. The shard handles no other
    /// command meanwhile (the first one read is left in `next`), so the lists do not change.
    async fn sweep(
        &mut self,
        fanouts: Vec<Fanout>,
        mut rx: Option<&mut mpsc::Receiver<HubCmd>>,
        next: &mut Option<HubCmd>,
    ) {
        let Some(channel) = fanouts.first().map(|f| f.channel.clone()) else {
            return;
        };
        let Shard {
            channels,
            stats,
            buffer_limit,
            max_round_bytes,
            scratch,
        } = self;
        let (limit, max_bytes) = (*buffer_limit, *max_round_bytes);
        let Some(ch) = channels.get_mut(&channel) else {
            return;
        };
        let mut pace = Pacer {
            n: 0,
            tally: Tally::default(),
            stats: stats.as_ref(),
        };
        let mut sent = deliver_geo(ch, &fanouts, scratch, limit, &mut pace).await;
        let n = ch.plain.len();
        // Rounds under way: where each started in `plain`, and its fan-outs.
        let mut rounds: VecDeque<(usize, Vec<Fanout>)> = VecDeque::from([(0, fanouts)]);
        let mut round = Round::new(rounds[0].1.clone());
        let mut pos = 0;
        while n > 0 && !rounds.is_empty() {
            let end = (pos + SWEEP_CHUNK).min(n);
            for (_, sub) in &mut ch.plain[pos..end] {
                sent += sub.deliver_round(&round, limit, &mut pace.tally);
            }
            pace.delivered(end - pos).await;
            pos = if end == n { 0 } else { end };
            let before = rounds.len();
            rounds.retain(|(start, _)| *start != pos);
            if rounds.is_empty() {
                break;
            }
            let mut changed = rounds.len() != before;
            let mut more = Vec::new();
            if let Some(rx) = rx.as_deref_mut() {
                let count: usize = rounds.iter().map(|r| r.1.len()).sum();
                let bytes: usize = rounds
                    .iter()
                    .flat_map(|r| &r.1)
                    .map(|f| f.frame.len() + 1)
                    .sum();
                let (room_n, room_bytes) = (
                    MAX_ROUND.saturating_sub(count),
                    max_bytes.saturating_sub(bytes),
                );
                pull(&channel, rx, next, &mut more, room_n, room_bytes);
            }
            if !more.is_empty() {
                sent += deliver_geo(ch, &more, scratch, limit, &mut pace).await;
                rounds.push_back((pos, more));
                changed = true;
            }
            // (A round may end and another start at the same place: compare contents, not
            // the number of rounds.)
            if changed {
                round = Round::new(rounds.iter().flat_map(|r| r.1.iter().cloned()).collect());
            }
        }
        stats.messages_sent.fetch_add(sent, Relaxed);
    }

    /// Handles a command; a fan-out is handed back, for the caller to sweep.
    fn handle(&mut self, cmd: HubCmd) -> Option<Fanout> {
        match cmd {
            HubCmd::Subscribe {
                channel,
                conn,
                outbox,
                geo,
                ack,
            } => {
                let ch = self.channels.entry(channel).or_default();
                let sub = Sub {
                    outbox,
                    state: SubState::Buffering(Vec::new()),
                };
                match geo {
                    Some(bbox) => {
                        ch.index.insert(conn, &bbox);
                        ch.geo.insert(conn, (sub, bbox));
                    }
                    None => ch.insert_plain(conn, sub),
                }
                let _ = ack.send(());
            }
            HubCmd::Activate {
                channel,
                conn,
                after_offset,
            } => {
                let sub = self
                    .channels
                    .get_mut(&channel)
                    .and_then(|c| c.get_mut(conn))?;
                if let SubState::Buffering(buf) = std::mem::replace(&mut sub.state, SubState::Live)
                {
                    let mut sent = 0;
                    for (offset, frame, published_us) in buf {
                        if (offset == 0 || offset > after_offset)
                            && sub.outbox.push_publication(frame, published_us)
                        {
                            sent += 1;
                        }
                    }
                    self.stats.messages_sent.fetch_add(sent, Relaxed);
                }
            }
            HubCmd::Unsubscribe { channel, conn } => {
                let ch = self.channels.get_mut(&channel)?;
                if !ch.remove_plain(conn)
                    && let Some((_, bbox)) = ch.geo.remove(&conn)
                {
                    ch.index.remove(conn, &bbox);
                }
                if ch.len() == 0 {
                    self.channels.remove(&channel);
                }
            }
            HubCmd::Fanout(f) => return Some(f),
            HubCmd::Channels { reply } => {
                let list = self
                    .channels
                    .iter()
                    .map(|(name, c)| (name.to_string(), c.len()))
                    .collect();
                let _ = reply.send(list);
            }
        }
        None
    }
}

/// Moves the fan-outs of `channel` queued at the front of `rx` into `out`, at most `room_n`
/// of them and about `room_bytes`; the first other command read is left in `next` (and
/// nothing is read while `next` holds one).
fn pull(
    channel: &Arc<str>,
    rx: &mut mpsc::Receiver<HubCmd>,
    next: &mut Option<HubCmd>,
    out: &mut Vec<Fanout>,
    room_n: usize,
    room_bytes: usize,
) {
    let (mut n, mut bytes) = (0, 0);
    while next.is_none() && n < room_n && bytes < room_bytes {
        match rx.try_recv() {
            Ok(HubCmd::Fanout(f)) if f.channel == *channel => {
                n += 1;
                bytes += f.frame.len() + 1;
                out.push(f);
            }
            Ok(other) => *next = Some(other),
            Err(_) => break,
        }
    }
}

/// Delivers `fanouts` to the channel's geo-filtered subscribers, each by its location.
async fn deliver_geo(
    ch: &mut ChannelSubs,
    fanouts: &[Fanout],
    scratch: &mut Vec<u64>,
    limit: usize,
    pace: &mut Pacer<'_>,
) -> u64 {
    let mut sent = 0;
    if ch.geo.is_empty() {
        return sent;
    }
    for f in fanouts {
        scratch.clear();
        match &f.location {
            None => scratch.extend(ch.geo.keys().copied()),
            Some(loc) => ch.index.matches(loc, scratch),
        }
        for id in scratch.iter() {
            if let Some((sub, _)) = ch.geo.get_mut(id) {
                sent += u64::from(sub.deliver(f, limit, &mut pace.tally));
            }
            pace.delivered(1).await;
        }
    }
    sent
}

/// Handle to the hub's shard tasks.
#[derive(Clone)]
pub(crate) struct Hub {
    shards: Arc<[mpsc::Sender<HubCmd>]>,
    hasher: RandomState,
    /// Shards each channel's subscribers are spread over (one per core): a publication is
    /// swept by that many shard tasks in parallel, each over its part of the subscribers.
    lanes: usize,
}

impl Hub {
    /// Spawns the shard tasks. `buffer_limit`: publications kept aside per buffering
    /// subscription; `max_round_bytes`: size of the frame joining one round's publications.
    pub(crate) fn start(stats: Arc<Stats>, buffer_limit: usize, max_round_bytes: usize) -> Hub {
        let shards: Vec<_> = (0..SHARDS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(SHARD_QUEUE);
                let shard = Shard {
                    channels: HashMap::new(),
                    stats: stats.clone(),
                    buffer_limit,
                    max_round_bytes,
                    scratch: Vec::new(),
                };
                tokio::spawn(shard.run(rx));
                tx
            })
            .collect();
        let lanes = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
        Hub {
            shards: shards.into(),
            hasher: RandomState::new(),
            lanes,
        }
    }

    /// The shard holding `conn`'s subscription to `channel`: one of the channel's lanes.
    fn shard(&self, channel: &str, conn: ConnId) -> &mpsc::Sender<HubCmd> {
        let lane = (conn % self.lanes as u64) as usize;
        &self.shards[(self.hasher.hash_one(channel) as usize + lane) % self.shards.len()]
    }

    /// The shards of all of `channel`'s lanes.
    fn lanes(&self, channel: &str) -> impl Iterator<Item = &mpsc::Sender<HubCmd>> {
        let base = self.hasher.hash_one(channel) as usize;
        (0..self.lanes).map(move |lane| &self.shards[(base + lane) % self.shards.len()])
    }

    /// Adds a buffering subscription; returns once the hub has it.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: Arc<Outbox>,
        geo: Option<GeoBox>,
    ) -> Result<(), crate::GatewayError> {
        let (ack, rx) = oneshot::channel();
        self.shard(channel, conn)
            .send(HubCmd::Subscribe {
                channel: channel.into(),
                conn,
                outbox,
                geo,
                ack,
            })
            .await
            .map_err(|_| crate::GatewayError::Shutdown)?;
        rx.await.map_err(|_| crate::GatewayError::Shutdown)
    }

    /// Ends buffering: publications above `after_offset` (and unpositioned ones) kept aside
    /// are delivered, and later ones go straight to the connection.
    pub(crate) async fn activate(&self, channel: &str, conn: ConnId, after_offset: u64) {
        let _ = self
            .shard(channel, conn)
            .send(HubCmd::Activate {
                channel: channel.into(),
                conn,
                after_offset,
            })
            .await;
    }

    pub(crate) async fn unsubscribe(&self, channel: &str, conn: ConnId) {
        let _ = self
            .shard(channel, conn)
            .send(HubCmd::Unsubscribe {
                channel: channel.into(),
                conn,
            })
            .await;
    }

    async fn fanout(
        &self,
        channel: &str,
        frame: Bytes,
        offset: u64,
        location: Option<Location>,
        published_us: u64,
    ) {
        let fanout = Fanout {
            channel: channel.into(),
            frame,
            offset,
            location,
            published_us,
        };
        for shard in self.lanes(channel) {
            let _ = shard.send(HubCmd::Fanout(fanout.clone())).await;
        }
    }

    /// Every channel with local subscribers, with their number (summed over its lanes).
    pub(crate) async fn channels(&self) -> Vec<(String, usize)> {
        let mut all: HashMap<String, usize> = HashMap::new();
        for shard in self.shards.iter() {
            let (reply, rx) = oneshot::channel();
            if shard.send(HubCmd::Channels { reply }).await.is_ok()
                && let Ok(list) = rx.await
            {
                for (name, n) in list {
                    *all.entry(name).or_default() += n;
                }
            }
        }
        all.into_iter().collect()
    }
}

/// Where an engine delivers channel events: this node's hub (or, for engine tests, a plain
/// channel from [`EventSink::channel`]).
#[derive(Clone)]
pub struct EventSink {
    inner: SinkInner,
}

#[derive(Clone)]
enum SinkInner {
    Hub {
        hub: Hub,
        config: Arc<GatewayConfig>,
        stats: Arc<Stats>,
    },
    Channel(mpsc::Sender<EngineEvent>),
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

impl EventSink {
    pub(crate) fn hub(hub: Hub, config: Arc<GatewayConfig>, stats: Arc<Stats>) -> Self {
        EventSink {
            inner: SinkInner::Hub { hub, config, stats },
        }
    }

    /// A sink that forwards every event into a bounded channel (to test engines alone).
    pub fn channel(capacity: usize) -> (EventSink, mpsc::Receiver<EngineEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            EventSink {
                inner: SinkInner::Channel(tx),
            },
            rx,
        )
    }

    /// Hands an event to the hub: encodes it once, locates it for geo namespaces, and queues
    /// it for fan-out. Waits only for room in the hub's queue, never for clients.
    pub async fn deliver(&self, event: EngineEvent) {
        let (hub, config, stats) = match &self.inner {
            SinkInner::Channel(tx) => {
                let _ = tx.send(event).await;
                return;
            }
            SinkInner::Hub { hub, config, stats } => (hub, config, stats),
        };
        match event {
            EngineEvent::Publication {
                channel,
                publication,
                published_us,
            } => {
                let ns = config.namespace(&channel);
                let location = match ns {
                    Some(ns) if ns.geo_filter => Location::of_json(publication.data.as_str()),
                    _ => None,
                };
                let frame = encode_publication(&channel, &publication);
                stats.publications_delivered.fetch_add(1, Relaxed);
                hub.fanout(&channel, frame, publication.offset, location, published_us)
                    .await;
            }
            EngineEvent::Join { channel, info } | EngineEvent::Leave { channel, info }
                if !config.namespace(&channel).is_some_and(|ns| ns.join_leave) =>
            {
                tracing::trace!(%channel, client = %info.client, "join/leave off for namespace");
            }
            EngineEvent::Join { channel, info } => {
                let frame = encode_join(&channel, &info);
                hub.fanout(&channel, frame, 0, None, 0).await;
            }
            EngineEvent::Leave { channel, info } => {
                let frame = encode_leave(&channel, &info);
                hub.fanout(&channel, frame, 0, None, 0).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Queued;

    /// Runs a shard's future (a sweep, its loop) to completion on a runtime of its own.
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(f)
    }

    fn shard(limit: usize) -> Shard {
        Shard {
            channels: HashMap::new(),
            stats: Arc::new(Stats::default()),
            buffer_limit: limit,
            max_round_bytes: 64 << 10,
            scratch: Vec::new(),
        }
    }

    fn sub(s: &mut Shard, ch: &str, conn: ConnId, geo: Option<GeoBox>) -> mpsc::Receiver<Queued> {
        let (outbox, rx) = Outbox::new(8, 1 << 20, s.stats.clone());
        let (ack, _) = oneshot::channel();
        s.handle(HubCmd::Subscribe {
            channel: ch.into(),
            conn,
            outbox,
            geo,
            ack,
        });
        rx
    }

    fn fanout(ch: &str, body: &'static str, offset: u64, location: Option<Location>) -> Fanout {
        Fanout {
            channel: ch.into(),
            frame: Bytes::from_static(body.as_bytes()),
            offset,
            location,
            published_us: offset * 10,
        }
    }

    /// Sweeps one round to completion.
    fn sweep(s: &mut Shard, round: Vec<Fanout>) {
        block_on(s.sweep(round, None, &mut None));
    }

    fn fan(s: &mut Shard, ch: &str, body: &'static str, offset: u64, location: Option<Location>) {
        let f = s.handle(HubCmd::Fanout(fanout(ch, body, offset, location)));
        sweep(s, f.into_iter().collect());
    }

    fn drain(rx: &mut mpsc::Receiver<Queued>) -> Vec<Bytes> {
        std::iter::from_fn(|| rx.try_recv().ok().map(|q| q.frame)).collect()
    }

    #[test]
    fn buffered_publications_are_flushed_after_the_reply_position() {
        let mut s = shard(100);
        let mut rx = sub(&mut s, "c", 1, None);
        fan(&mut s, "c", "p4", 4, None);
        fan(&mut s, "c", "p5", 5, None);
        fan(&mut s, "c", "join", 0, None);
        assert!(drain(&mut rx).is_empty(), "nothing before activation");
        s.handle(HubCmd::Activate {
            channel: "c".into(),
            conn: 1,
            after_offset: 4,
        });
        assert_eq!(drain(&mut rx), ["p5", "join"]);
        fan(&mut s, "c", "p6", 6, None);
        assert_eq!(drain(&mut rx), ["p6"]);
    }

    #[test]
    fn geo_subscribers_get_only_located_publications_inside_their_box() {
        let mut s = shard(100);
        let paris = GeoBox::new(2.0, 48.0, 3.0, 49.0).ok();
        let mut a = sub(&mut s, "incidents", 1, paris);
        let mut all = sub(&mut s, "incidents", 2, None);
        for conn in [1, 2] {
            s.handle(HubCmd::Activate {
                channel: "incidents".into(),
                conn,
                after_offset: 0,
            });
        }
        fan(
            &mut s,
            "incidents",
            "in",
            1,
            Some(Location::Point([2.5, 48.5])),
        );
        fan(
            &mut s,
            "incidents",
            "out",
            2,
            Some(Location::Point([20.0, 48.5])),
        );
        fan(&mut s, "incidents", "nowhere", 3, None);
        assert_eq!(drain(&mut a), ["in", "nowhere"]);
        assert_eq!(drain(&mut all), ["in", "out", "nowhere"]);
        s.handle(HubCmd::Unsubscribe {
            channel: "incidents".into(),
            conn: 1,
        });
        s.handle(HubCmd::Unsubscribe {
            channel: "incidents".into(),
            conn: 2,
        });
        assert!(s.channels.is_empty());
    }

    #[test]
    fn an_overflowing_buffer_closes_only_that_subscriber() {
        let mut s = shard(1);
        let _slow = sub(&mut s, "c", 1, None);
        let mut fast = sub(&mut s, "c", 2, None);
        s.handle(HubCmd::Activate {
            channel: "c".into(),
            conn: 2,
            after_offset: 0,
        });
        fan(&mut s, "c", "a", 1, None);
        fan(&mut s, "c", "b", 2, None);
        assert_eq!(drain(&mut fast), ["a", "b"]);
        let slow = s
            .channels
            .get_mut("c")
            .and_then(|c| c.get_mut(1))
            .map(|s| s.outbox.clone());
        assert_eq!(slow.and_then(|o| o.reason().map(|r| r.code)), Some(3008));
    }

    fn live(s: &mut Shard, ch: &str, conn: ConnId) -> mpsc::Receiver<Queued> {
        let rx = sub(s, ch, conn, None);
        s.handle(HubCmd::Activate {
            channel: ch.into(),
            conn,
            after_offset: 0,
        });
        rx
    }

    #[test]
    fn publications_queued_behind_each_other_reach_a_subscriber_in_one_frame() {
        let mut s = shard(100);
        let mut plain = live(&mut s, "c", 1);
        let mut late = sub(&mut s, "c", 2, None);
        let (tx, rx) = mpsc::channel(16);
        for (body, offset) in [("a", 1), ("b", 2), ("c", 3)] {
            let _ = tx.try_send(HubCmd::Fanout(fanout("c", body, offset, None)));
        }
        drop(tx);
        let stats = s.stats.clone();
        block_on(s.run(rx));
        let q = plain.try_recv().expect("one frame");
        assert_eq!(q.frame, "a\nb\nc");
        let mut stamps = Vec::new();
        q.stamps.extend_into(&mut stamps);
        assert_eq!(
            stamps,
            [10, 20, 30],
            "each publication keeps its publish time"
        );
        assert!(plain.try_recv().is_err(), "one write for the whole round");
        assert_eq!(stats.snapshot().messages_sent, 3);
        assert!(
            drain(&mut late).is_empty(),
            "a buffering subscriber got nothing yet"
        );
    }

    #[test]
    fn a_round_is_kept_aside_publication_by_publication_for_a_buffering_subscriber() {
        let mut s = shard(100);
        let mut plain = live(&mut s, "c", 1);
        let mut late = sub(&mut s, "c", 2, None);
        sweep(
            &mut s,
            vec![
                fanout("c", "p1", 1, None),
                fanout("c", "p2", 2, None),
                fanout("c", "p3", 3, None),
            ],
        );
        assert_eq!(drain(&mut plain), ["p1\np2\np3"]);
        s.handle(HubCmd::Activate {
            channel: "c".into(),
            conn: 2,
            after_offset: 1,
        });
        assert_eq!(
            drain(&mut late),
            ["p2", "p3"],
            "only those after its reply's offset"
        );
    }

    #[test]
    fn unsubscribing_from_the_middle_of_a_channel_keeps_everyone_else() {
        let mut s = shard(100);
        let mut rxs: Vec<_> = (1..=5).map(|c| live(&mut s, "c", c)).collect();
        for conn in [2, 4] {
            s.handle(HubCmd::Unsubscribe {
                channel: "c".into(),
                conn,
            });
        }
        fan(&mut s, "c", "x", 1, None);
        let got: Vec<usize> = rxs.iter_mut().map(|rx| drain(rx).len()).collect();
        assert_eq!(got, [1, 0, 1, 0, 1]);
        assert_eq!(s.channels.get("c").map(ChannelSubs::len), Some(3));
    }

    #[test]
    fn a_publication_arriving_mid_sweep_joins_it_and_each_subscriber_gets_both_in_order() {
        let mut s = shard(100);
        let n = SWEEP_CHUNK + SWEEP_CHUNK / 2;
        let mut rxs: Vec<_> = (0..n as u64).map(|c| live(&mut s, "c", c)).collect();
        let (tx, mut rx) = mpsc::channel(4);
        let _ = tx.try_send(HubCmd::Fanout(fanout("c", "B", 2, None)));
        let mut next = None;
        block_on(s.sweep(vec![fanout("c", "A", 1, None)], Some(&mut rx), &mut next));
        // Read at the first yield: the first chunk had A alone, the rest get both at once,
        // then the sweep wraps round and gives B to the first chunk.
        for (i, rx) in rxs.iter_mut().enumerate() {
            let want: &[&str] = if i < SWEEP_CHUNK {
                &["A", "B"]
            } else {
                &["A\nB"]
            };
            assert_eq!(drain(rx), want, "subscriber {i}");
        }
        assert_eq!(s.stats.snapshot().messages_sent, 2 * n as u64);
        assert!(next.is_none());
    }

    #[test]
    fn another_command_stops_a_sweep_from_taking_more_publications() {
        let mut s = shard(100);
        let n = SWEEP_CHUNK * 2;
        let mut rxs: Vec<_> = (0..n as u64).map(|c| live(&mut s, "c", c)).collect();
        let (tx, mut rx) = mpsc::channel(4);
        let (reply, _) = oneshot::channel();
        let _ = tx.try_send(HubCmd::Channels { reply });
        let _ = tx.try_send(HubCmd::Fanout(fanout("c", "B", 2, None)));
        let mut next = None;
        block_on(s.sweep(vec![fanout("c", "A", 1, None)], Some(&mut rx), &mut next));
        assert!(
            matches!(next, Some(HubCmd::Channels { .. })),
            "kept for after the sweep"
        );
        assert!(
            matches!(rx.try_recv(), Ok(HubCmd::Fanout(_))),
            "B waits its turn"
        );
        assert!(rxs.iter_mut().all(|rx| drain(rx) == ["A"]));
    }

    #[test]
    fn a_round_ending_where_another_starts_is_not_delivered_twice() {
        // The rounds under way hold MAX_ROUND publications at most: B joins after the first
        // chunk, C only once the first round has ended, where the sweep wrapped round.
        let mut s = shard(100);
        let n = SWEEP_CHUNK * 3;
        let mut rxs: Vec<_> = (0..n as u64).map(|c| live_deep(&mut s, "c", c)).collect();
        let first: Vec<Fanout> = (1..MAX_ROUND as u64)
            .map(|o| fanout("c", "A", o, None))
            .collect();
        let (tx, mut rx) = mpsc::channel(4);
        let _ = tx.try_send(HubCmd::Fanout(fanout("c", "B", 100, None)));
        let _ = tx.try_send(HubCmd::Fanout(fanout("c", "C", 101, None)));
        block_on(s.sweep(first, Some(&mut rx), &mut None));
        let mut want = vec!["A"; MAX_ROUND - 1];
        want.extend(["B", "C"]);
        for (i, rx) in rxs.iter_mut().enumerate() {
            let frames = drain(rx);
            let got: Vec<&str> = frames
                .iter()
                .flat_map(|f| std::str::from_utf8(f).unwrap_or("?").split('\n'))
                .collect();
            assert_eq!(got, want, "subscriber {i}: each publication once, in order");
        }
    }

    /// A live subscriber whose queue takes a few hundred messages.
    fn live_deep(s: &mut Shard, ch: &str, conn: ConnId) -> mpsc::Receiver<Queued> {
        let (outbox, rx) = Outbox::new(512, 1 << 20, s.stats.clone());
        let (ack, _) = oneshot::channel();
        s.handle(HubCmd::Subscribe {
            channel: ch.into(),
            conn,
            outbox,
            geo: None,
            ack,
        });
        s.handle(HubCmd::Activate {
            channel: ch.into(),
            conn,
            after_offset: 0,
        });
        rx
    }
}
