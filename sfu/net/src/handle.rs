//! The cloneable handle that signaling code uses to reach the shards.

use crate::config::SfuConfig;
use crate::latency::LatencyHistogram;
use crate::task::{self, Links, ShardCmd, ShardLoad};
use nexus_auth::{Claims, Grant};
use nexus_sfu_core::{
    ClientMessage, Command, Grants, Identity, JoinOptions, ParticipantId, Reply, RoomId, RoomKind,
    ServerMessage, SessionId, SfuError, ShardStats,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{mpsc, oneshot};

/// Capacity of each shard's command queue; a full queue answers [`SfuError::Unavailable`].
const COMMAND_QUEUE: usize = 1024;

/// The SFU as seen by signaling: cheap to clone, every method talks to a shard task by message.
#[derive(Clone, Debug)]
pub struct SfuHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Vec<mpsc::Sender<ShardCmd>>,
    addrs: Vec<SocketAddr>,
    /// What each shard publishes about its load.
    loads: Vec<Arc<ShardLoad>>,
}

/// Totals over all shards, plus each shard's own.
#[derive(Debug, Clone, Default)]
pub struct SfuStats {
    /// Sum over shards (gauges summed too).
    pub total: ShardStats,
    /// Per shard: its counters and its loop time (nanoseconds spent handling inputs).
    pub shards: Vec<(ShardStats, u64)>,
    /// Added forwarding latency over all shards ([`crate::latency`]).
    pub forward_latency: LatencyHistogram,
}

/// Name (after `nexus_sfu_`) and help of the forwarding latency histogram.
pub const FORWARD_LATENCY_METRIC: (&str, &str) = (
    "forward_latency_seconds",
    "Added forwarding latency: a publisher's datagram received to each datagram forwarded from it sent",
);

/// One exported series of [`SfuStats::rows`]: the name after `nexus_sfu_`, the Prometheus type
/// (`gauge` or `counter`), the value and the help text.
pub type MetricRow = (&'static str, &'static str, u64, &'static str);

/// Name (after `nexus_sfu_`) and help of the per-shard loop time counter, labelled `shard`.
pub const SHARD_BUSY_METRIC: (&str, &str) = (
    "shard_busy_seconds_total",
    "Time each shard loop spent handling input",
);

impl SfuStats {
    /// The totals as `nexus_sfu_*` series (the names dashboards and alerts rely on).
    pub fn rows(&self) -> [MetricRow; 16] {
        let t = &self.total;
        [
            ("rooms", "gauge", t.rooms, "Open SFU rooms"),
            ("participants", "gauge", t.participants, "SFU participants"),
            ("tracks", "gauge", t.tracks, "Published tracks"),
            (
                "packets_in_total",
                "counter",
                t.packets_in,
                "UDP datagrams received",
            ),
            (
                "bytes_in_total",
                "counter",
                t.bytes_in,
                "UDP bytes received",
            ),
            (
                "packets_out_total",
                "counter",
                t.packets_out,
                "UDP datagrams sent",
            ),
            ("bytes_out_total", "counter", t.bytes_out, "UDP bytes sent"),
            (
                "frames_forwarded_total",
                "counter",
                t.frames_forwarded,
                "Media frames forwarded",
            ),
            (
                "bytes_forwarded_total",
                "counter",
                t.bytes_forwarded,
                "Media bytes forwarded",
            ),
            (
                "dropped_packets_total",
                "counter",
                t.dropped_packets,
                "Datagrams dropped",
            ),
            (
                "keyframe_requests_total",
                "counter",
                t.keyframe_requests,
                "PLI/FIR sent to publishers",
            ),
            (
                "keyframe_requests_throttled_total",
                "counter",
                t.keyframe_requests_throttled,
                "PLI/FIR suppressed",
            ),
            (
                "nacks_total",
                "counter",
                t.nacks,
                "NACKs received from subscribers",
            ),
            (
                "layer_switches_total",
                "counter",
                t.layer_switches,
                "Simulcast layer switches",
            ),
            (
                "ingress_loss_permille",
                "gauge",
                t.loss_permille,
                "Worst ingress loss, per mille",
            ),
            (
                "refused_saturated_total",
                "counter",
                t.refused_saturated,
                "New subscribers refused by a saturated shard",
            ),
        ]
    }

    /// Per shard: its index and loop time in seconds ([`SHARD_BUSY_METRIC`]).
    pub fn shard_busy_seconds(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, (_, busy))| (i, *busy as f64 / 1e9))
    }

    /// The counters in Prometheus text format (`nexus_sfu_*`), for `/metrics/sfu`.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for (name, kind, value, help) in self.rows() {
            out.push_str(&format!(
                "# HELP nexus_sfu_{name} {help}\n# TYPE nexus_sfu_{name} {kind}\nnexus_sfu_{name} {value}\n"
            ));
        }
        let (busy, help) = SHARD_BUSY_METRIC;
        out.push_str(&format!(
            "# HELP nexus_sfu_{busy} {help}\n# TYPE nexus_sfu_{busy} counter\n"
        ));
        for (i, secs) in self.shard_busy_seconds() {
            out.push_str(&format!("nexus_sfu_{busy}{{shard=\"{i}\"}} {secs:.6}\n"));
        }
        let (name, help) = FORWARD_LATENCY_METRIC;
        out.push_str(&format!(
            "# HELP nexus_sfu_{name} {help}\n# TYPE nexus_sfu_{name} histogram\n"
        ));
        for (le, count) in self.forward_latency.cumulative() {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                format!("{le}")
            };
            out.push_str(&format!("nexus_sfu_{name}_bucket{{le=\"{le}\"}} {count}\n"));
        }
        let h = &self.forward_latency;
        out.push_str(&format!(
            "nexus_sfu_{name}_sum {:.9}\nnexus_sfu_{name}_count {}\n",
            h.sum_ns as f64 / 1e9,
            h.count()
        ));
        out
    }
}

/// A room-protocol participant's side of the connection: send its messages with
/// [`ParticipantHandle::send`]. Dropping it tells the shard the signaling connection is gone
/// (the participant may resume within the reconnect grace).
#[derive(Debug)]
pub struct ParticipantHandle {
    id: ParticipantId,
    conn: u64,
    shard: mpsc::Sender<ShardCmd>,
}

impl ParticipantHandle {
    /// The participant's id.
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// Hands a client message to the shard. Refusals of the message itself come back as
    /// `error` server messages; `Err` means the SFU is gone or the participant left.
    pub async fn send(&self, message: ClientMessage) -> Result<(), SfuError> {
        let (tx, rx) = oneshot::channel();
        let cmd = ShardCmd::Core {
            command: Command::Message {
                from: self.id,
                message,
            },
            reply: tx,
        };
        self.shard
            .send(cmd)
            .await
            .map_err(|_| SfuError::Unavailable)?;
        rx.await.map_err(|_| SfuError::Unavailable)?.map(|_| ())
    }
}

impl Drop for ParticipantHandle {
    fn drop(&mut self) {
        // Best effort: when the queue is full the reconnect timer still ends the participant.
        let _ = self.shard.try_send(ShardCmd::ConnectionClosed {
            participant: self.id,
            conn: self.conn,
        });
    }
}

/// The identity a room token gives in `room`, after checking that the token is a room token
/// for that very room.
pub fn identity(room: &str, claims: &Claims) -> Result<Identity, SfuError> {
    let (Some(token_room), Some(kind)) = (claims.room.as_deref(), claims.room_kind) else {
        return Err(SfuError::NotARoomToken);
    };
    if token_room != room {
        return Err(SfuError::WrongRoom);
    }
    let room = RoomId::new(room).ok_or(SfuError::InvalidRoomName)?;
    let has = |g: Grant| claims.grants.as_ref().is_some_and(|gs| gs.contains(&g));
    Ok(Identity {
        user: claims.sub.clone(),
        name: claims.name.clone(),
        room,
        kind: match kind {
            nexus_auth::RoomKind::Consultation => RoomKind::Consultation,
            nexus_auth::RoomKind::Class => RoomKind::Class,
        },
        grants: Grants {
            publish: has(Grant::Publish),
            subscribe: has(Grant::Subscribe),
            admin: has(Grant::Admin),
        },
    })
}

/// FNV-1a: a stable hash, so a room lands on the same shard in every process.
fn room_hash(room: &str) -> u64 {
    room.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SfuHandle {
    /// Binds the shards' sockets and starts one thread per shard, each running its task on a
    /// runtime of its own.
    pub async fn start(config: SfuConfig) -> std::io::Result<SfuHandle> {
        let count = config.shards.clamp(1, 255);
        let mut shards = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        let mut loads = Vec::with_capacity(count);
        let (relay_txs, relay_rxs): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::channel(task::RELAY_QUEUE)).unzip();
        for (k, inbox) in relay_rxs.into_iter().enumerate() {
            let mut addr = config.udp_addr;
            if addr.port() != 0 {
                let port = u16::try_from(usize::from(addr.port()) + k).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "shard port above 65535")
                })?;
                addr.set_port(port);
            }
            let socket = std::net::UdpSocket::bind(addr)?;
            let local = socket.local_addr()?;
            let announce_ip = match config.public_ip {
                Some(ip) => ip,
                None if local.ip().is_unspecified() => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the SFU binds an unspecified address: set a public IP to announce",
                    ));
                }
                None => local.ip(),
            };
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            // `count` is at most 255, so `k` fits.
            let index = u8::try_from(k).unwrap_or(u8::MAX);
            let load = Arc::new(ShardLoad::default());
            task::spawn(
                index,
                socket,
                SocketAddr::new(announce_ip, local.port()),
                &config,
                rx,
                Links {
                    inbox,
                    shards: relay_txs.clone(),
                    load: Arc::clone(&load),
                },
            )?;
            tracing::info!(shard = k, addr = %local, announce = %announce_ip, "SFU shard bound");
            shards.push(tx);
            addrs.push(local);
            loads.push(load);
        }
        Ok(SfuHandle {
            inner: Arc::new(Inner {
                shards,
                addrs,
                loads,
            }),
        })
    }

    /// The bound UDP address of each shard.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.inner.addrs
    }

    fn shard_for_room(&self, room: &RoomId) -> &mpsc::Sender<ShardCmd> {
        let n = self.inner.shards.len() as u64;
        // `n` is at least 1 and the remainder is below it.
        &self.inner.shards[(room_hash(room.as_str()) % n) as usize]
    }

    /// Where a new WHEP subscriber of a class room goes: the least busy shard of the node
    /// (busy ratio in steps of 5%, then fewest participants, then the room's own shard). Its
    /// tracks are relayed there from the shard they are published on
    /// (`nexus_sfu_core::relay`). Other rooms stay on their room's shard.
    fn shard_for_subscriber(&self, room: &RoomId, kind: RoomKind) -> &mpsc::Sender<ShardCmd> {
        let n = self.inner.shards.len();
        let home = (room_hash(room.as_str()) % n as u64) as usize;
        if kind != RoomKind::Class || n == 1 {
            return &self.inner.shards[home];
        }
        let score = |k: usize| {
            let load = &self.inner.loads[k];
            (
                load.busy_permille.load(Relaxed) / 50,
                load.participants.load(Relaxed),
                k != home,
            )
        };
        let best = (0..n).min_by_key(|&k| score(k)).unwrap_or(home);
        &self.inner.shards[best]
    }

    fn shard_for_session(&self, id: SessionId) -> Result<&mpsc::Sender<ShardCmd>, SfuError> {
        self.inner
            .shards
            .get(usize::from(id.shard()))
            .ok_or(SfuError::NoSuchSession)
    }

    async fn call(shard: &mpsc::Sender<ShardCmd>, command: Command) -> Result<Reply, SfuError> {
        let (tx, rx) = oneshot::channel();
        shard
            .try_send(ShardCmd::Core { command, reply: tx })
            .map_err(|_| SfuError::Unavailable)?;
        rx.await.map_err(|_| SfuError::Unavailable)?
    }

    /// WHIP: publishes into `room` with an SDP offer; returns the session id and the SDP answer.
    /// Needs the `publish` grant (and, in a consultation, `admin` or a prior admission).
    pub async fn whip_publish(
        &self,
        room: &str,
        claims: &Claims,
        offer_sdp: String,
    ) -> Result<(SessionId, String), SfuError> {
        let identity = identity(room, claims)?;
        let shard = self.shard_for_room(&identity.room);
        match Self::call(
            shard,
            Command::WhipOffer {
                identity,
                offer: offer_sdp,
            },
        )
        .await?
        {
            Reply::Session { id, answer } => Ok((id, answer)),
            _ => Err(SfuError::Rtc("unexpected reply".into())),
        }
    }

    /// WHEP: subscribes to `room` (everyone, or only `publisher`) with an SDP offer of recvonly
    /// m-lines; returns the session id and the SDP answer. The m-lines are bound to publishers'
    /// tracks as they are published, so a session taken before anyone publishes fills in later.
    pub async fn whep_subscribe(
        &self,
        room: &str,
        claims: &Claims,
        offer_sdp: String,
        publisher: Option<ParticipantId>,
    ) -> Result<(SessionId, String), SfuError> {
        let identity = identity(room, claims)?;
        let shard = match publisher {
            // The named publisher's shard checks that it is in the room.
            Some(p) => self
                .shard_for_session(p)
                .map_err(|_| SfuError::NoSuchParticipant)?,
            None => self.shard_for_subscriber(&identity.room, identity.kind),
        };
        match Self::call(
            shard,
            Command::WhepOffer {
                identity,
                offer: offer_sdp,
                publisher,
            },
        )
        .await?
        {
            Reply::Session { id, answer } => Ok((id, answer)),
            _ => Err(SfuError::Rtc("unexpected reply".into())),
        }
    }

    /// Ends a WHIP/WHEP session (the `DELETE` of its `Location`).
    pub async fn end_session(&self, session: SessionId) -> Result<(), SfuError> {
        Self::call(
            self.shard_for_session(session)?,
            Command::EndSession(session),
        )
        .await
        .map(|_| ())
    }

    /// Trickle ICE for a session (`PATCH`). The SFU is ICE-lite with host candidates, so the
    /// client's candidates are not needed: always [`SfuError::NotSupported`] (→ 405).
    pub async fn trickle(&self, session: SessionId, _sdp_fragment: &str) -> Result<(), SfuError> {
        let _ = session;
        Err(SfuError::NotSupported("trickle ICE (the SFU is ICE-lite)"))
    }

    /// Room protocol: joins the token's room (or resumes with `options.resume`). Server messages
    /// arrive on the returned receiver, starting with `joined` or `waiting`; the receiver ends
    /// after a `leave`. A class member without the `publish` grant goes to the least busy
    /// shard, like a WHEP subscriber; others go to the room's shard; a resume goes back to the
    /// participant's shard.
    pub async fn join_room(
        &self,
        claims: &Claims,
        options: JoinOptions,
    ) -> Result<(ParticipantHandle, mpsc::Receiver<ServerMessage>), SfuError> {
        let room = claims.room.clone().ok_or(SfuError::NotARoomToken)?;
        let identity = identity(&room, claims)?;
        let shard = if options.resume.is_some() {
            // Back to the shard the participant is on (its token names it).
            match options
                .resume_shard()
                .and_then(|k| self.inner.shards.get(usize::from(k)))
            {
                Some(shard) => shard,
                None => self.shard_for_room(&identity.room),
            }
        } else if identity.grants.publish {
            self.shard_for_room(&identity.room)
        } else {
            // A class member that only receives (until granted publish) is placed like a WHEP
            // subscriber; its shard relays the room's signaling, tracks and media.
            self.shard_for_subscriber(&identity.room, identity.kind)
        }
        .clone();
        let queue = if identity.grants.admin {
            task::ADMIN_SIGNAL_QUEUE
        } else {
            task::SIGNAL_QUEUE
        };
        let (msg_tx, msg_rx) = mpsc::channel(queue);
        let (tx, rx) = oneshot::channel();
        shard
            .try_send(ShardCmd::Join {
                identity,
                options,
                messages: msg_tx,
                reply: tx,
            })
            .map_err(|_| SfuError::Unavailable)?;
        let (id, conn) = rx.await.map_err(|_| SfuError::Unavailable)??;
        Ok((ParticipantHandle { id, conn, shard }, msg_rx))
    }

    /// Admits a waiting participant (participant id or user id) of `room` — the healthcare
    /// API's admit. A user not in the room yet is admitted in advance.
    pub async fn admit(&self, room: &str, who: &str) -> Result<(), SfuError> {
        let room = RoomId::new(room).ok_or(SfuError::InvalidRoomName)?;
        let shard = self.shard_for_room(&room);
        Self::call(
            shard,
            Command::Admit {
                room,
                who: who.to_string(),
            },
        )
        .await
        .map(|_| ())
    }

    /// Closes a room (on every shard it has members on): its participants are told to leave.
    pub async fn close_room(&self, room: &str) -> Result<(), SfuError> {
        let room = RoomId::new(room).ok_or(SfuError::InvalidRoomName)?;
        let mut result = Err(SfuError::NoSuchRoom);
        for shard in &self.inner.shards {
            match Self::call(shard, Command::CloseRoom(room.clone())).await {
                Ok(_) => result = Ok(()),
                Err(SfuError::NoSuchRoom) => {}
                Err(e) => return Err(e),
            }
        }
        result
    }

    /// Counters of every shard.
    pub async fn stats(&self) -> SfuStats {
        let mut out = SfuStats::default();
        for shard in &self.inner.shards {
            let (tx, rx) = oneshot::channel();
            if shard.send(ShardCmd::Stats(tx)).await.is_err() {
                continue;
            }
            let Ok((s, busy, latency)) = rx.await else {
                continue;
            };
            out.forward_latency.merge(&latency);
            let t = &mut out.total;
            t.rooms += s.rooms;
            t.participants += s.participants;
            t.tracks += s.tracks;
            t.packets_in += s.packets_in;
            t.bytes_in += s.bytes_in;
            t.packets_out += s.packets_out;
            t.bytes_out += s.bytes_out;
            t.frames_forwarded += s.frames_forwarded;
            t.bytes_forwarded += s.bytes_forwarded;
            t.dropped_packets += s.dropped_packets;
            t.keyframe_requests += s.keyframe_requests;
            t.keyframe_requests_throttled += s.keyframe_requests_throttled;
            t.nacks += s.nacks;
            t.layer_switches += s.layer_switches;
            t.loss_permille = t.loss_permille.max(s.loss_permille);
            t.refused_saturated += s.refused_saturated;
            out.shards.push((s, busy));
        }
        out
    }

    /// Tells every participant to leave, closes every peer and stops the shard tasks. Returns
    /// when all shards have flushed their goodbyes.
    pub async fn shutdown(&self) {
        let mut waits = vec![];
        for shard in &self.inner.shards {
            let (tx, rx) = oneshot::channel();
            if shard.send(ShardCmd::Shutdown(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(room: Option<&str>, grants: Vec<Grant>) -> Claims {
        let c = Claims::new("user-1", 60);
        match room {
            Some(r) => c.with_room(r, nexus_auth::RoomKind::Consultation, grants),
            None => c,
        }
    }

    #[test]
    fn identity_checks_the_room_and_reads_grants() {
        let c = claims(Some("r1"), vec![Grant::Publish]);
        assert_eq!(identity("r2", &c), Err(SfuError::WrongRoom));
        assert_eq!(
            identity("r1", &claims(None, vec![])),
            Err(SfuError::NotARoomToken)
        );
        let id = identity("r1", &c).unwrap_or_else(|e| panic!("{e}"));
        assert!(id.grants.publish && !id.grants.subscribe && !id.grants.admin);
        assert_eq!(id.kind, RoomKind::Consultation);
    }

    #[test]
    fn room_hash_is_stable() {
        assert_eq!(room_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(room_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// The next message of a participant, within 5 s.
    async fn next(rx: &mut mpsc::Receiver<ServerMessage>) -> ServerMessage {
        let wait = std::time::Duration::from_secs(5);
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(m)) => m,
            other => panic!("no message: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_class_member_who_only_receives_goes_to_the_least_busy_shard_and_resumes_there() {
        let mut config = SfuConfig::new("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()));
        config.shards = 2;
        let sfu = SfuHandle::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let room = "class-placed";
        let home = (room_hash(room) % 2) as u8;
        let class = |user: &str, grants: Vec<Grant>| {
            Claims::new(user, 60).with_room(room, nexus_auth::RoomKind::Class, grants)
        };
        let teacher_claims = class(
            "teacher",
            vec![Grant::Publish, Grant::Subscribe, Grant::Admin],
        );
        let (teacher, mut teacher_rx) = sfu
            .join_room(&teacher_claims, JoinOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(teacher.id().shard(), home);
        assert!(matches!(
            next(&mut teacher_rx).await,
            ServerMessage::Joined { .. }
        ));

        // The other shard is idle: the student goes there, and its `joined` lists the teacher.
        let student_claims = class("ana", vec![Grant::Subscribe]);
        let (student, mut rx) = sfu
            .join_room(&student_claims, JoinOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let student_id = student.id();
        assert_ne!(student_id.shard(), home);
        let ServerMessage::Joined {
            participants,
            resume_token,
            ..
        } = next(&mut rx).await
        else {
            panic!("no joined")
        };
        assert_eq!(
            participants.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![teacher.id()]
        );
        assert!(matches!(
            next(&mut teacher_rx).await,
            ServerMessage::ParticipantJoined { participant } if participant.id == student_id
        ));

        // The connection drops; the resume finds the student on its shard.
        drop(student);
        let options = JoinOptions {
            resume: Some(resume_token),
            auto_subscribe: None,
        };
        let (again, mut rx) = sfu
            .join_room(&student_claims, options)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.id(), student_id);
        assert!(matches!(next(&mut rx).await, ServerMessage::Joined { .. }));
        sfu.shutdown().await;
    }

    #[tokio::test]
    async fn a_rush_of_students_does_not_overflow_the_teachers_queue() {
        let mut config = SfuConfig::new("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()));
        config.shards = 2;
        let sfu = SfuHandle::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let class = |user: &str, grants: Vec<Grant>| {
            Claims::new(user, 60).with_room("class-rush", nexus_auth::RoomKind::Class, grants)
        };
        let (teacher, mut teacher_rx) = sfu
            .join_room(
                &class("teacher", vec![Grant::Publish, Grant::Admin]),
                JoinOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // 600 students join while the teacher's connection reads nothing (a busy writer): each
        // is announced to the teacher alone, more than a member's ordinary queue holds.
        let mut students = Vec::new();
        for n in 0..600 {
            let joined = sfu
                .join_room(
                    &class(&format!("s{n}"), vec![Grant::Subscribe]),
                    JoinOptions::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            students.push(joined);
        }
        assert!(matches!(
            next(&mut teacher_rx).await,
            ServerMessage::Joined { .. }
        ));
        let mut told = 0;
        while told < 600 {
            match next(&mut teacher_rx).await {
                ServerMessage::ParticipantJoined { .. } => told += 1,
                ServerMessage::Leave { reason } => panic!("the teacher was dropped: {reason:?}"),
                _ => {}
            }
        }
        drop(teacher);
        sfu.shutdown().await;
    }

    #[tokio::test]
    async fn shards_bind_consecutive_ports_and_shut_down() {
        let mut config = SfuConfig::new("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()));
        config.shards = 2;
        let sfu = SfuHandle::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sfu.local_addrs().len(), 2);
        let c = claims(Some("r1"), vec![Grant::Publish]);
        let err = sfu.whip_publish("r1", &c, "not sdp".into()).await;
        // Not admitted: a consultation without admin.
        assert_eq!(err, Err(SfuError::NotAdmitted));
        sfu.shutdown().await;
        assert_eq!(
            sfu.whip_publish("r1", &c, "x".into()).await,
            Err(SfuError::Unavailable)
        );
    }
}
