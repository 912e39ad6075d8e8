//! Messages between the shards of one node, for a class room whose members are spread over
//! several shards (one per core).
//!
//! The shard a track is published on (its *home*) receives the publisher's RTP, decides what a
//! packet is (layer, keyframe) once, fans it out to its own subscribers and hands the same
//! packet — payload shared, not copied — to every other shard that declared an interest in the
//! room. Those keep a mirror of the track and fan it out to their subscribers exactly as the
//! home does (layer choice, rewriting, str0m send streams of their own peers). Keyframe requests
//! of their subscribers travel back to the home, whose throttle (one per
//! [`crate::ShardConfig::keyframe_interval`] per track and layer) covers the whole room.
//!
//! Room-protocol members may be on any shard too (a student without the `publish` grant is
//! placed like a WHEP subscriber). Each shard keeps its own members and their peers; what the
//! room protocol shows room-wide travels as messages: the signaling every member sees
//! ([`Relay::Broadcast`]: joined, left, hand raised, publish granted, muted, chat), the roster a
//! `joined` lists ([`Relay::Snapshot`] when a shard opens the room, then [`Relay::Member`] and
//! the broadcasts), data-channel messages ([`Relay::Channel`]) and an admin's grant for a
//! participant on another shard ([`Relay::GrantPublish`]). A member granted publish publishes on
//! its own shard, which becomes the home of its tracks. Active speakers are found on every shard
//! from the audio levels of the packets it fans out, so no message is needed for them.
//!
//! The shards never share state: the driver carries each [`Relay`] from the shard that output
//! it ([`crate::Output::Relay`]) to the addressed one ([`crate::Shard::handle_relay`]).

use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::protocol::{ParticipantInfo, ServerMessage, TrackSource};
use std::sync::Arc;
use std::time::Instant;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Rid};
use str0m::rtp::ExtensionValues;

/// One message from one shard to another.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Relay {
    /// Shard `shard` has members in `room` and wants its tracks (`on`), or no longer. Answered
    /// with a [`Relay::Snapshot`] when `on`.
    Interest {
        /// The room.
        room: RoomId,
        /// The shard declaring it.
        shard: u8,
        /// Wanted or no longer wanted.
        on: bool,
    },
    /// What the sending shard has of `room`, in answer to an [`Relay::Interest`]: the members
    /// others list in `joined` and the tracks published there (both may be empty).
    Snapshot {
        /// The room.
        room: RoomId,
        /// The sending shard.
        shard: u8,
        /// Its room-protocol members and WHIP publishers in the room.
        members: Vec<ParticipantInfo>,
        /// The tracks published on it.
        tracks: Vec<RelayedTrack>,
    },
    /// A participant that `joined` lists without announcing it (a WHIP publisher) came
    /// (`info`) or went (`None`) on the sending shard.
    Member {
        /// The room.
        room: RoomId,
        /// The participant.
        id: ParticipantId,
        /// Its info, or `None` when it left.
        info: Option<ParticipantInfo>,
    },
    /// A room-protocol message for every member of `room` on the receiving shard; the roster
    /// and mirrored tracks follow what it says (joined, left, hand raised, publish granted,
    /// muted).
    Broadcast {
        /// The room.
        room: RoomId,
        /// The message (boxed: it is larger than the other relays).
        message: Box<ServerMessage>,
        /// Who is told (decided by the sending shard, which holds the subject).
        audience: Audience,
    },
    /// An admin on the sending shard granted (or revoked) publishing to `participant`, a member
    /// on the receiving shard.
    GrantPublish {
        /// The room.
        room: RoomId,
        /// The member.
        participant: ParticipantId,
        /// Granted or revoked.
        granted: bool,
    },
    /// A data-channel message of a member on the sending shard, for the members on the
    /// receiving shard with a channel of the same label.
    Channel {
        /// The room.
        room: RoomId,
        /// The sender.
        from: ParticipantId,
        /// The channel's label.
        label: String,
        /// Binary or text.
        binary: bool,
        /// The message.
        data: Arc<[u8]>,
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
    /// Muted by its publisher.
    pub muted: bool,
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

/// Which members of a room a room-wide message goes to.
///
/// In a class, a member who only receives (no `admin` grant, not allowed to publish) is
/// *quiet*: its arrival, departure and raised hand go to the room's admins (the teacher), not to
/// the other students — a class of N students would otherwise send N² `participant_joined`
/// messages, and a student has no use for the others' comings and goings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every member.
    All,
    /// The admins, and this participant when given.
    Admins(Option<ParticipantId>),
    /// Every member without the `admin` grant (who did not know a quiet member yet).
    NonAdmins,
}

impl Audience {
    /// Whether a member with the `admin` grant or not, and this id, is told.
    pub fn includes(self, id: ParticipantId, admin: bool) -> bool {
        match self {
            Audience::All => true,
            Audience::Admins(also) => admin || also == Some(id),
            Audience::NonAdmins => !admin,
        }
    }
}
