//! The room protocol (JSON over WebSocket, documented in `docs/rtc-protocol.md`) and the
//! identity a participant joins with.

use crate::ids::{ParticipantId, RoomId, TrackId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The two kinds of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Private consultation: 2–8 participants, a waiting room in front.
    Consultation,
    /// Live class: one or a few publishers, many subscribers, raise hand to speak.
    Class,
}

/// What a participant may do in its room (the token's `grants`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// May send media.
    pub publish: bool,
    /// May receive media.
    pub subscribe: bool,
    /// Moderates: admits from the waiting room, grants publish, is never kept waiting.
    pub admin: bool,
}

/// Who is joining, taken from a verified room token by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user (token `sub`).
    pub user: String,
    /// Display name shown to others.
    pub name: Option<String>,
    /// The room (token `room`).
    pub room: RoomId,
    /// The room kind (token `room_kind`).
    pub kind: RoomKind,
    /// The grants (token `grants`).
    pub grants: Grants,
}

/// What a published track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A camera (the default for video).
    #[default]
    Camera,
    /// A microphone (the default for audio).
    Microphone,
    /// A shared screen (a second video track).
    Screen,
}

/// `audio` or `video`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Opus audio.
    Audio,
    /// VP8 / H264 video.
    Video,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Participant (session) id.
    pub id: ParticipantId,
    /// Display name, when the token had one.
    pub name: Option<String>,
    /// May publish now (token grant, or granted by the teacher).
    pub can_publish: bool,
    /// Has a raised hand (classes).
    pub hand_raised: bool,
    /// Holds the `admin` grant.
    pub admin: bool,
}

/// A published track as subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Track id, used in `subscribe` / `unsubscribe` / `mute`.
    pub id: TrackId,
    /// The publisher.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Camera, microphone or screen.
    pub source: TrackSource,
    /// Muted by its publisher.
    pub muted: bool,
    /// Number of simulcast layers (0 = no simulcast).
    pub layers: usize,
}

/// Options of a `join`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinOptions {
    /// Resume token from an earlier `joined`/`waiting`: reattach to the same participant after a
    /// network change instead of joining anew.
    #[serde(default)]
    pub resume: Option<String>,
    /// Subscribe to every track of the room as it is published (default `true`).
    #[serde(default)]
    pub auto_subscribe: Option<bool>,
}

impl JoinOptions {
    /// The shard that issued the resume token (its first two hex digits), so that a driver
    /// with several shards routes a resuming `join` to the participant's shard. `None` without a
    /// token or for one no shard made.
    pub fn resume_shard(&self) -> Option<u8> {
        let token = self.resume.as_deref()?;
        u8::from_str_radix(token.get(..2)?, 16).ok()
    }
}

/// Client → server messages. JSON objects tagged by `type` (snake_case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on a connection: join the token's room (or resume).
    Join(JoinOptions),
    /// An SDP offer: the first one creates the participant's peer connection; later ones
    /// renegotiate (publish a track, stop one, restart ICE after a network change).
    Offer {
        /// The SDP.
        sdp: String,
        /// What each sending m-line carries, by mid (default: camera / microphone).
        #[serde(default)]
        sources: BTreeMap<String, TrackSource>,
    },
    /// The answer to a server `offer` (new subscriptions).
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// Receive a track (also changes the size asked for when already subscribed).
    Subscribe {
        /// The track.
        track: TrackId,
        /// Largest video height wanted; picks the simulcast layer together with bandwidth.
        #[serde(default)]
        max_height: Option<u32>,
    },
    /// Stop receiving a track.
    Unsubscribe {
        /// The track.
        track: TrackId,
    },
    /// Mute or unmute one of one's own tracks (forwarding stops while muted).
    Mute {
        /// The track.
        track: TrackId,
        /// Muted or not.
        muted: bool,
    },
    /// Raise or lower one's hand (classes).
    RaiseHand {
        /// Raised or not.
        raised: bool,
    },
    /// Admin: let a participant publish (or take it back).
    GrantPublish {
        /// Whom.
        participant: ParticipantId,
        /// Granted or revoked.
        granted: bool,
    },
    /// Admin: admit a participant from the waiting room.
    Admit {
        /// Whom.
        participant: ParticipantId,
    },
    /// A chat line to everyone in the room.
    Chat {
        /// The text (at most 4096 bytes).
        text: String,
    },
    /// Leave the room for good.
    Leave,
}

/// Why the server ends a participant's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The participant asked.
    Requested,
    /// The room was closed (by an admin API or because it emptied).
    RoomClosed,
    /// The server is shutting down; reconnect (possibly elsewhere).
    ServerShutdown,
    /// The media connection failed and was not resumed in time.
    ConnectionLost,
}

/// Server → client messages. JSON objects tagged by `type` (snake_case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Joined (or resumed, or admitted from the waiting room).
    Joined {
        /// Own id.
        participant: ParticipantId,
        /// The room.
        room: RoomId,
        /// Its kind.
        kind: RoomKind,
        /// Token for `join {resume}` after a network change.
        resume_token: String,
        /// May publish now.
        can_publish: bool,
        /// Everyone else in the room.
        participants: Vec<ParticipantInfo>,
        /// Every published track.
        tracks: Vec<TrackInfo>,
    },
    /// In the waiting room until an admin admits.
    Waiting {
        /// Own id.
        participant: ParticipantId,
        /// Token for `join {resume}` after a network change.
        resume_token: String,
    },
    /// To admins: someone is in the waiting room.
    ParticipantWaiting {
        /// Who.
        participant: ParticipantInfo,
    },
    /// The answer to the client's `offer`.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A server offer (new subscriptions); reply with `answer`.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// A subscribed track now arrives on this m-line (`RTCRtpTransceiver.mid`).
    Subscribed {
        /// The track.
        track: TrackId,
        /// The mid of the m-line carrying it.
        mid: String,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant: ParticipantId,
    },
    /// A track was published.
    TrackPublished {
        /// The track.
        track: TrackInfo,
    },
    /// A track was unpublished.
    TrackUnpublished {
        /// The track.
        track: TrackId,
    },
    /// A track was muted or unmuted.
    TrackMuted {
        /// The track.
        track: TrackId,
        /// Muted or not.
        muted: bool,
    },
    /// The dominant speaker changed.
    ActiveSpeaker {
        /// Who speaks (none when the room fell silent).
        participant: Option<ParticipantId>,
    },
    /// A hand was raised or lowered.
    HandRaised {
        /// Whose.
        participant: ParticipantId,
        /// Raised or not.
        raised: bool,
    },
    /// Publishing was granted or revoked.
    PublishGranted {
        /// To whom.
        participant: ParticipantId,
        /// Granted or revoked.
        granted: bool,
    },
    /// A chat line.
    Chat {
        /// From whom.
        from: ParticipantId,
        /// Their display name.
        name: Option<String>,
        /// The text.
        text: String,
    },
    /// A message was refused; the session goes on.
    Error {
        /// Short machine-readable code (`forbidden`, `bad_sdp`, `bad_message`, …).
        code: String,
        /// Human-readable detail.
        message: String,
    },
    /// The session ends; the server closes the connection after this.
    Leave {
        /// Why.
        reason: LeaveReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_json_shape() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"join","resume":"abc"}"#).expect("join");
        assert_eq!(
            m,
            ClientMessage::Join(JoinOptions {
                resume: Some("abc".into()),
                auto_subscribe: None
            })
        );
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"subscribe","track":7}"#).expect("subscribe");
        assert_eq!(
            m,
            ClientMessage::Subscribe {
                track: TrackId(7),
                max_height: None
            }
        );
        let s = serde_json::to_string(&ServerMessage::TrackMuted {
            track: TrackId(3),
            muted: true,
        })
        .expect("json");
        assert_eq!(s, r#"{"type":"track_muted","track":3,"muted":true}"#);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
    }
}
