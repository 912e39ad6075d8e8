//! The SFU's error type, shared by the core and the driver.

/// Why a signaling command failed.
///
/// The HTTP layer maps these to problem+json: `WrongRoom`, `MissingGrant`, `NotARoomToken` and
/// `NotAdmitted` → 403; `BadSdp`, `InvalidRoomName`, `BadMessage` → 400; `NoSuch*` → 404;
/// `NotSupported` → 405; `RoomFull`, `RoomKindMismatch`, `InvalidState` → 409;
/// `ShuttingDown`, `Unavailable`, `Saturated` → 503 (`Saturated` with `Retry-After`); `Rtc` → 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// The token is for another room than the one addressed.
    #[error("the token is for another room")]
    WrongRoom,
    /// The token carries no `room`/`room_kind` claims.
    #[error("not a room token")]
    NotARoomToken,
    /// The token lacks the grant the action needs.
    #[error("the token lacks the `{0}` grant")]
    MissingGrant(&'static str),
    /// A consultation participant without `admin` was not admitted from the waiting room yet.
    #[error("not admitted to the consultation yet")]
    NotAdmitted,
    /// The room name is empty, too long or has characters outside `A-Za-z0-9-_.:`.
    #[error("invalid room name")]
    InvalidRoomName,
    /// The SDP offer or answer could not be parsed or negotiated.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// A room-protocol message that does not fit the participant's state or grants.
    #[error("bad message: {0}")]
    BadMessage(String),
    /// No session (participant) with that id on this server.
    #[error("no such session")]
    NoSuchSession,
    /// No such participant in the room.
    #[error("no such participant")]
    NoSuchParticipant,
    /// No room with that name is open.
    #[error("no such room")]
    NoSuchRoom,
    /// No such track in the room.
    #[error("no such track")]
    NoSuchTrack,
    /// A consultation already has its maximum number of participants.
    #[error("the room is full ({max} participants)")]
    RoomFull {
        /// The room's capacity.
        max: usize,
    },
    /// The room exists with the other kind (`consultation` vs `class`).
    #[error("the room exists with another kind")]
    RoomKindMismatch,
    /// The operation is not supported (e.g. trickle ICE on an ICE-lite server).
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// The participant is not in a state that allows this (e.g. still waiting).
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// The SFU is shutting down and takes no new sessions.
    #[error("the SFU is shutting down")]
    ShuttingDown,
    /// The shard is saturated (its loop's busy ratio is at or above the limit, see
    /// [`crate::load`]) and admits no new subscribers for now; retry after `retry_after_secs`.
    #[error("the SFU is saturated and admits no new subscribers; retry in {retry_after_secs} s")]
    Saturated {
        /// Seconds after which the load has been measured again.
        retry_after_secs: u64,
    },
    /// The shard task is gone or overloaded (driver only).
    #[error("the SFU is unavailable")]
    Unavailable,
    /// str0m refused an operation.
    #[error("WebRTC error: {0}")]
    Rtc(String),
}
