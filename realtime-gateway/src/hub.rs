//! The hub: which local connection is subscribed to which channel, and the fan-out.
//!
//! Channels are spread over shard tasks by hash. Each shard task owns its channels'
//! subscriber sets and geo indexes outright — no locks — and is told what to do by message.
//! A publication is encoded once (in [`EventSink::deliver`]) and the same [`Bytes`] are pushed
//! into each recipient's bounded [`Outbox`] without waiting: a full outbox closes its
//! connection with 3008 slow instead of slowing anyone else.
//!
//! A subscription starts *buffering*: publications for it are kept aside while the
//! connection reads history for its subscribe reply, then [`Hub::activate`] flushes those
//! newer than the reply's position. So a subscriber never misses a publication between
//! its history read and its live stream, and never gets one twice.

use crate::config::GatewayConfig;
use crate::engine::EngineEvent;
use crate::geo::{GeoBox, GeoIndex, Location};
use crate::outbox::Outbox;
use crate::protocol::{encode_join, encode_leave, encode_publication};
use crate::stats::Stats;
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{mpsc, oneshot};

const SHARDS: usize = 16;
const SHARD_QUEUE: usize = 4096;

/// Id of a local connection.
pub(crate) type ConnId = u64;

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
    Fanout {
        channel: Arc<str>,
        frame: Bytes,
        offset: u64,
        location: Option<Location>,
        /// Unix microseconds of the publish call (0: not a publication).
        published_us: u64,
    },
    Channels {
        reply: oneshot::Sender<Vec<(String, usize)>>,
    },
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
    fn deliver(&mut self, frame: &Bytes, offset: u64, published_us: u64, limit: usize) -> bool {
        match &mut self.state {
            SubState::Live => self.outbox.push_publication(frame.clone(), published_us),
            SubState::Buffering(buf) => {
                if buf.len() >= limit {
                    self.outbox.overflow();
                    return false;
                }
                buf.push((offset, frame.clone(), published_us));
                false
            }
        }
    }
}

#[derive(Default)]
struct ChannelSubs {
    plain: HashMap<ConnId, Sub>,
    geo: HashMap<ConnId, (Sub, GeoBox)>,
    index: GeoIndex,
}

impl ChannelSubs {
    fn len(&self) -> usize {
        self.plain.len() + self.geo.len()
    }

    fn get_mut(&mut self, conn: ConnId) -> Option<&mut Sub> {
        match self.plain.get_mut(&conn) {
            Some(s) => Some(s),
            None => self.geo.get_mut(&conn).map(|(s, _)| s),
        }
    }
}

struct Shard {
    channels: HashMap<Arc<str>, ChannelSubs>,
    stats: Arc<Stats>,
    buffer_limit: usize,
    scratch: Vec<u64>,
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::Receiver<HubCmd>) {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd);
        }
    }

    fn handle(&mut self, cmd: HubCmd) {
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
                    None => {
                        ch.plain.insert(conn, sub);
                    }
                }
                let _ = ack.send(());
            }
            HubCmd::Activate {
                channel,
                conn,
                after_offset,
            } => {
                let Some(sub) = self
                    .channels
                    .get_mut(&channel)
                    .and_then(|c| c.get_mut(conn))
                else {
                    return;
                };
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
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                if ch.plain.remove(&conn).is_none()
                    && let Some((_, bbox)) = ch.geo.remove(&conn)
                {
                    ch.index.remove(conn, &bbox);
                }
                if ch.len() == 0 {
                    self.channels.remove(&channel);
                }
            }
            HubCmd::Fanout {
                channel,
                frame,
                offset,
                location,
                published_us,
            } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                let limit = self.buffer_limit;
                let mut sent = 0u64;
                for sub in ch.plain.values_mut() {
                    sent += u64::from(sub.deliver(&frame, offset, published_us, limit));
                }
                match location {
                    None => {
                        for (sub, _) in ch.geo.values_mut() {
                            sent += u64::from(sub.deliver(&frame, offset, published_us, limit));
                        }
                    }
                    Some(loc) if !ch.geo.is_empty() => {
                        ch.index.matches(&loc, &mut self.scratch);
                        for id in &self.scratch {
                            if let Some((sub, _)) = ch.geo.get_mut(id) {
                                sent += u64::from(sub.deliver(&frame, offset, published_us, limit));
                            }
                        }
                    }
                    Some(_) => {}
                }
                self.stats.messages_sent.fetch_add(sent, Relaxed);
            }
            HubCmd::Channels { reply } => {
                let list = self
                    .channels
                    .iter()
                    .map(|(name, c)| (name.to_string(), c.len()))
                    .collect();
                let _ = reply.send(list);
            }
        }
    }
}

/// Handle to the hub's shard tasks.
#[derive(Clone)]
pub(crate) struct Hub {
    shards: Arc<[mpsc::Sender<HubCmd>]>,
    hasher: RandomState,
}

impl Hub {
    /// Spawns the shard tasks.
    pub(crate) fn start(stats: Arc<Stats>, buffer_limit: usize) -> Hub {
        let shards: Vec<_> = (0..SHARDS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(SHARD_QUEUE);
                let shard = Shard {
                    channels: HashMap::new(),
                    stats: stats.clone(),
                    buffer_limit,
                    scratch: Vec::new(),
                };
                tokio::spawn(shard.run(rx));
                tx
            })
            .collect();
        Hub {
            shards: shards.into(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, channel: &str) -> &mpsc::Sender<HubCmd> {
        &self.shards[(self.hasher.hash_one(channel) as usize) % self.shards.len()]
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
        self.shard(channel)
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
            .shard(channel)
            .send(HubCmd::Activate {
                channel: channel.into(),
                conn,
                after_offset,
            })
            .await;
    }

    pub(crate) async fn unsubscribe(&self, channel: &str, conn: ConnId) {
        let _ = self
            .shard(channel)
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
        let _ = self
            .shard(channel)
            .send(HubCmd::Fanout {
                channel: channel.into(),
                frame,
                offset,
                location,
                published_us,
            })
            .await;
    }

    /// Every channel with local subscribers, with their number.
    pub(crate) async fn channels(&self) -> Vec<(String, usize)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let (reply, rx) = oneshot::channel();
            if shard.send(HubCmd::Channels { reply }).await.is_ok()
                && let Ok(list) = rx.await
            {
                all.extend(list);
            }
        }
        all
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

    fn shard(limit: usize) -> Shard {
        Shard {
            channels: HashMap::new(),
            stats: Arc::new(Stats::default()),
            buffer_limit: limit,
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

    fn fan(s: &mut Shard, ch: &str, body: &'static str, offset: u64, location: Option<Location>) {
        s.handle(HubCmd::Fanout {
            channel: ch.into(),
            frame: Bytes::from_static(body.as_bytes()),
            offset,
            location,
            published_us: 0,
        });
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
}
