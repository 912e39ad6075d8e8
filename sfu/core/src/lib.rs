//! The sans-IO core of the Nexus SFU: rooms, participants and media forwarding over
//! [str0m](https://docs.rs/str0m).
//!
//! # Model
//!
//! A [`Shard`] owns a set of rooms, every participant in them, and each participant's
//! `str0m::Rtc` (one peer connection per participant). It does no I/O and reads no clock: the
//! driver (`nexus-sfu-net`) owns the UDP socket and the timer and feeds the shard
//!
//! - [`Input::Receive`] for every datagram and [`Input::Timeout`] when the timer fires, via
//!   [`Shard::handle_input`];
//! - [`Command`]s from signaling (WHIP/WHEP offers, room-protocol messages, admit, close,
//!   shutdown), via [`Shard::handle_command`], which answers at once with a [`Reply`] or an
//!   [`SfuError`];
//!
//! always with the current `Instant`. After every input or command the driver calls
//! [`Shard::poll_output`] until it returns [`Output::Timeout`] — str0m's rule, and ours:
//! [`Output::Transmit`] datagrams go out of the socket, [`Output::Signal`] messages go to one
//! participant's WebSocket, and the timeout says when to call again.
//!
//! ## Invariants
//!
//! - One owner: everything lives in the shard; nothing is shared or locked. Commands that
//!   concern a session are routed to its shard (the top byte of a [`ParticipantId`]).
//! - Datagrams are routed to a peer by remote address, then by the STUN USERNAME's ufrag, then
//!   (STUN only) by asking each peer's `Rtc::accepts`. Anything else is dropped and counted;
//!   bytes from the network never panic.
//! - Forwarding works on RTP packets (str0m's RTP mode), as each arrives: no frame assembly,
//!   no depacketizing or packetizing. Per subscriber the shard chooses the simulcast layer with
//!   [`layer::select_layer`], switches only at the first packet of a keyframe of the new layer
//!   ([`rtp::starts_keyframe`]), rewrites sequence numbers and timestamps so that the
//!   subscriber sees one continuous stream ([`rtp::Rewriter`]), and hands the packet (its
//!   payload shared, not copied) to the subscriber's send stream; str0m does SRTP, RTCP,
//!   NACK/RTX from its send buffer, TWCC and pacing. A subscriber held below the layer it
//!   wants by its bandwidth estimate gets periodic BWE probes (backing off from 4 s to 32 s),
//!   so that it moves up again when its link recovers.
//! - A peer whose timeout is already due is served at once (str0m's pacer releases one packet
//!   per timeout), and the shard keeps its peers' timeouts in a heap: a wake-up touches only
//!   the peers that are due.
//! - Keyframe requests (PLI/FIR) from subscribers and from layer switches go to the publisher
//!   at most once per [`ShardConfig::keyframe_interval`] per track and layer.
//! - A class room may span the shards of a node ([`relay`]): the shard a track is published on
//!   decides once what each packet is (layer, keyframe) and hands it, payload shared, to the
//!   other shards with members in the room ([`Output::Relay`] → [`Shard::handle_relay`]),
//!   which fan it out to their own subscribers; their keyframe requests go back to its
//!   throttle. Track ids carry the shard's index, so they are unique on the node. Room-protocol
//!   members may be on any of those shards: each shard owns its members whole (signaling state
//!   and peer), and relays what the room protocol shows room-wide (events, roster, grants,
//!   data-channel messages); a shard that opens such a room sends `joined` once the others
//!   told it their part ([`relay::Relay::Snapshot`]).
//! - Participants move through [`ParticipantState`]: `Joining` (WHIP/WHEP until ICE connects),
//!   `Waiting` (consultation waiting room), `Connected`, `Reconnecting` (signaling dropped; may
//!   resume with its resume token until a deadline), `Left`. An empty room closes after
//!   [`ShardConfig::room_close_grace`].
//! - A saturated shard degrades, it does not collapse: the driver reports the loop's busy time
//!   ([`Shard::record_busy`]); while the busy ratio over [`ShardConfig::busy_window`] is at or
//!   above [`ShardConfig::max_busy`], new subscribers (WHEP, and room-protocol joins without
//!   the `publish` grant) are refused with [`SfuError::Saturated`] ([`load`]).
//!
//! # Example
//!
//! A participant joins a class over the room protocol and gets its `joined` message:
//!
//! ```
//! use nexus_sfu_core::{Command, Grants, Identity, Output, RoomId, RoomKind, ServerMessage};
//! use nexus_sfu_core::{Shard, ShardConfig};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let config = ShardConfig::new(0, "127.0.0.1:7882".parse().unwrap(), 42);
//! let mut shard = Shard::new(now, config).unwrap();
//! let identity = Identity {
//!     user: "teacher-1".into(),
//!     name: Some("Ms. Ada".into()),
//!     room: RoomId::new("class-7").unwrap(),
//!     kind: RoomKind::Class,
//!     grants: Grants { publish: true, subscribe: true, admin: true },
//! };
//! shard
//!     .handle_command(now, Command::Join { identity, options: Default::default() })
//!     .unwrap();
//! match shard.poll_output() {
//!     Output::Signal { message: ServerMessage::Joined { can_publish, .. }, .. } => {
//!         assert!(can_publish)
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert!(matches!(shard.poll_output(), Output::Timeout(_)));
//! ```
//!
//! # Layout
//! - [`shard`] — [`Shard`], its inputs, commands and outputs;
//! - [`protocol`] — the room protocol's JSON messages and the joining [`Identity`];
//! - [`relay`] — messages between the shards a class room spans;
//! - [`layer`] — simulcast layer choice, keyframe throttle, bitrate meter (pure);
//! - [`load`] — the loop's busy ratio and the admission rule on it (pure);
//! - [`speaker`] — active-speaker detection (pure);
//! - [`rtp`] — keyframe detection and sequence/timestamp rewriting for forwarded RTP (pure);
//! - [`stun`] — the ufrag of a STUN binding request (pure);
//! - [`ids`] — [`RoomId`], [`ParticipantId`], [`TrackId`];
//! - [`error`] — [`SfuError`].

pub mod error;
pub mod ids;
pub mod layer;
pub mod load;
pub mod protocol;
pub mod relay;
pub mod rtp;
pub mod shard;
pub mod speaker;
pub mod stun;

pub use error::SfuError;
pub use ids::{ParticipantId, RoomId, SessionId, TrackId};
pub use protocol::{
    ClientMessage, Grants, Identity, JoinOptions, LeaveReason, ParticipantInfo, RoomKind,
    ServerMessage, TrackInfo, TrackKind, TrackSource,
};
pub use relay::{Audience, Relay, RelayedRtp, RelayedTrack};
pub use shard::{Command, Input, Output, ParticipantState, Reply, Shard, ShardConfig, ShardStats};
