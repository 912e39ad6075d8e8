//! Newtype identifiers: rooms, participants (and their sessions), tracks.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest accepted room name, in bytes.
pub const MAX_ROOM_NAME: usize = 128;

/// A room's name, as carried in the `room` claim of a room token.
///
/// Names are 1–128 characters of `A-Z a-z 0-9 - _ . :` so that they are safe in URLs and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    /// Checks and wraps a room name; `None` when it is empty, too long or has other characters.
    pub fn new(name: impl Into<String>) -> Option<RoomId> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_ROOM_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        ok.then_some(RoomId(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RoomId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        RoomId::new(value).ok_or_else(|| "invalid room name".to_string())
    }
}

impl From<RoomId> for String {
    fn from(value: RoomId) -> Self {
        value.0
    }
}

/// One participant of a room: a room-protocol member, a WHIP publisher or a WHEP subscriber.
///
/// The id is also the participant's session id (the last segment of a WHIP/WHEP `Location`).
/// The top 8 bits name the shard that owns the participant, so a driver can route commands for
/// a session without a lookup table; the rest is random, so ids cannot be guessed.
/// Written as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(u64);

/// A WHIP or WHEP session; the same value as the participant that the session created.
pub type SessionId = ParticipantId;

impl ParticipantId {
    /// The id on `shard` with the given random bits (the top 8 bits of `random` are replaced).
    pub fn new(shard: u8, random: u64) -> ParticipantId {
        ParticipantId((u64::from(shard) << 56) | (random & 0x00ff_ffff_ffff_ffff))
    }

    /// The index of the shard that owns this participant.
    pub fn shard(self) -> u8 {
        // The shift leaves exactly 8 bits.
        (self.0 >> 56) as u8
    }

    /// The raw value.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P({self})")
    }
}

impl FromStr for ParticipantId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err("participant id: 16 hex digits expected".into());
        }
        u64::from_str_radix(s, 16)
            .map(ParticipantId)
            .map_err(|_| "participant id: 16 hex digits expected".into())
    }
}

impl Serialize for ParticipantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A published track (one incoming audio or video m-line of a publisher), unique in its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(pub u64);

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_id_round_trips_and_names_its_shard() {
        let id = ParticipantId::new(3, 0xffff_1234_5678_9abc);
        assert_eq!(id.shard(), 3);
        let text = id.to_string();
        assert_eq!(text, "03ff123456789abc");
        assert_eq!(text.parse::<ParticipantId>(), Ok(id));
        assert!("xyz".parse::<ParticipantId>().is_err());
    }

    #[test]
    fn room_names_are_checked() {
        assert!(RoomId::new("consult-42").is_some());
        assert!(RoomId::new("").is_none());
        assert!(RoomId::new("a/b").is_none());
        assert!(RoomId::new("x".repeat(129)).is_none());
    }
}
