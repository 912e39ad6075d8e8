//! Messages between the shards of one node, for a class room whose subscribers are spread over
//! several shards (one per core) while its publishers stay on one.
//!
//! The shard a track is published on (its *home*) receives the publisher's RTP, decides what a
//! packet is (layer, keyframe) once, fans it out to its own subscribers and hands the same
//! packet — payload shared, not copied — to every other shard that declared an interest in the
//! room. Those keep a mirror of the track and fan it out to their subscribers exactly as the
//! home does (layer choice, rewriting, str0m send streams of their own peers). Keyframe requests
//! of their subscribers travel back to the home, whose throttle (one per
//! [`crate::ShardConfig::keyframe_interval`] per track and layer) covers the whole room.
//!
//! The shards never share state: the driver carries each [`Relay`] from the shard that output
//! it ([`crate::Output::Relay`]) to the addressed one ([`crate::Shard::handle_relay`]).

use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::protocol::TrackSource;
use std::sync::Arc;
use std::time::Instant;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Rid};
use str0m::rtp::ExtensionValues;

/// One message from one shard to another.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Relay {
    /// Shard `shard` has members in `room` and wants its tracks (`on`), or no longer.
    Interest {
        /// The room.
        room: RoomId,
        /// The shard declaring it.
        shard: u8,
        /// Wanted or no longer wanted.
        on: bool,
    },
    /// A track was published on its home shard.
    TrackPublished(RelayedTrack),
    /// A track of `room` was unpublished on its home shard.
    TrackUnpublished {
        /// The room.
        room: RoomId,
        /// The track.
        track: TrackId,
    },
    /// One RTP packet of a track, as its home shard received it.
    Rtp(Arc<RelayedRtp>),
    /// A subscriber on the sending shard needs a keyframe of `track` (layer `rid`; `None` with
    /// simulcast: every layer).
    KeyframeRequest {
        /// The track (on the receiving shard).
        track: TrackId,
        /// The layer.
        rid: Option<Rid>,
        /// PLI or FIR.
        kind: KeyframeRequestKind,
    },
}

/// A published track as the other shards mirror it.
#[derive(Debug, Clone)]
pub struct RelayedTrack {
    /// The room.
    pub room: RoomId,
    /// The track's id (unique on the node: the home shard's index is in it).
    pub id: TrackId,
    /// The publisher.
    pub owner: ParticipantId,
    /// The home shard.
    pub home: u8,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, screen, microphone.
    pub source: TrackSource,
    /// The simulcast layers (none without simulcast).
    pub rids: Vec<Rid>,
}

/// One forwarded RTP packet, as every shard's fan-out needs it.
#[derive(Debug, Clone)]
pub struct RelayedRtp {
    /// The room.
    pub room: RoomId,
    /// The track.
    pub track: TrackId,
    /// The simulcast layer it belongs to.
    pub rid: Option<Rid>,
    /// The publisher's payload parameters (subscribers' payload types are matched to them).
    pub params: PayloadParams,
    /// Extended sequence number on the publisher's stream.
    pub seq: u64,
    /// RTP timestamp on the publisher's stream.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// Header extensions passed on (audio level, voice activity, video orientation).
    pub ext_vals: ExtensionValues,
    /// str0m's wallclock of the packet.
    pub wallclock: Instant,
    /// The payload, shared.
    pub payload: Arc<[u8]>,
    /// Whether it is the first packet of a keyframe.
    pub keyframe: bool,
    /// When the home shard received the publisher's datagram (the added latency is measured
    /// from here, hop between shards included).
    pub arrived: Instant,
}
