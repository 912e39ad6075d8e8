//! The tokio driver of the Nexus SFU: one thread per shard, each running one task that owns one
//! UDP socket and one [`nexus_sfu_core::Shard`], and a cloneable [`SfuHandle`] that signaling
//! code (the HTTP layer) calls.
//!
//! # Model
//!
//! [`SfuHandle::start`] binds one UDP socket per shard — the first at
//! [`SfuConfig::udp_addr`], shard *k* at port + *k* (port 0 binds free ports) — and starts one
//! OS thread per shard running a current-thread tokio runtime with that shard's task and nothing
//! else, so a shard never waits behind other tasks or moves between threads. A task is the only
//! owner of its shard: it reads datagrams, feeds them with the current time into the shard, sends
//! what the shard outputs, sleeps until the shard's next timeout, takes signaling commands from a
//! bounded channel (replying on a oneshot), and passes messages between shards
//! ([`nexus_sfu_core::relay`]) over bounded channels. Nothing is locked; each task publishes its
//! busy ratio and participant count in two atomics for the handle's placement.
//!
//! The socket I/O is batched (quinn-udp): reads take up to 8 datagrams per `recvmmsg` (GRO
//! reads are split by their stride), and the outputs of one poll are queued and sent with UDP
//! GSO, one `sendmsg` per run of equal-sized datagrams to one destination — a subscriber's
//! packets of one frame. Measured on loopback, the kernel's per-datagram path costs far more
//! than the system call, so GSO pays and `sendmmsg` would not (`docs/benchmarks-sfu.md`).
//! Normally each received datagram's outputs are sent before the next datagram is handled (the
//! first subscribers do not wait for the rest of a read); when a read fills every buffer the
//! shard is behind, and the whole read is handled before its outputs are taken, so that a
//! subscriber's packets of a burst come out back to back and form GSO runs (likewise for a
//! backlog of packets relayed from another shard). Each task also times what it forwards
//! ([`latency`]).
//!
//! A room has a home shard, chosen by a hash of its name: publishers, room-protocol members with
//! the `publish` grant and consultations go there. A WHEP subscriber of a class room, and a
//! room-protocol member of a class without the `publish` grant, go to the least busy shard of
//! the node (busy ratio in steps of 5%, then fewest participants); the shard a track is
//! published on relays it and every packet to the shards with members, and their keyframe
//! requests come back to its throttle, so a class's fan-out is spread over the cores; the room
//! protocol's room-wide messages travel between the shards too (`nexus_sfu_core::relay`). A
//! session's id names its shard, so later calls about it go straight there, and a resume token
//! names its participant's shard. ICE is
//! lite with host candidates only: each socket's address (or [`SfuConfig::public_ip`] with the
//! bound port, for 1:1 NAT) is the one candidate in every answer.
//!
//! Tokens are verified by the caller; this crate checks that a token's `room` matches the
//! addressed room and that its grants allow the call ([`identity`]).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(claims: nexus_auth::Claims, offer: String) -> Result<(), Box<dyn std::error::Error>> {
//! use nexus_sfu_net::{SfuConfig, SfuHandle};
//!
//! let sfu = SfuHandle::start(SfuConfig::new("127.0.0.1:0".parse()?)).await?;
//! let (session, answer_sdp) = sfu.whip_publish("consult-42", &claims, offer).await?;
//! println!("{session}: {answer_sdp}");
//! sfu.end_session(session).await?;
//! sfu.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`] — [`SfuConfig`];
//! - [`handle`] — [`SfuHandle`], [`ParticipantHandle`], [`SfuStats`], [`identity`];
//! - [`latency`] — the added-forwarding-latency histogram each shard keeps;
//! - `task` — the per-shard loop (private).

pub mod config;
pub mod handle;
pub mod latency;
mod task;

pub use config::SfuConfig;
pub use handle::{
    FORWARD_LATENCY_METRIC, MetricRow, ParticipantHandle, SHARD_BUSY_METRIC, SfuHandle, SfuStats,
    identity,
};
pub use latency::LatencyHistogram;
pub use nexus_sfu_core::{
    ClientMessage, JoinOptions, LeaveReason, ParticipantId, RoomId, RoomKind, ServerMessage,
    SessionId, SfuError, ShardStats,
};
