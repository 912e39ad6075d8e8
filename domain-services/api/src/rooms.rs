//! The SFU-rooms port: how the healthcare API admits a waiting patient and closes a finished
//! consultation's room.
//!
//! The API does not depend on the SFU. Rooms are created on demand by the first room token
//! that joins them (the API only mints tokens), so the port needs just the two moderation
//! calls; the binary implements [`Rooms`] over the SFU handle and puts it in
//! [`ApiState`](crate::ApiState).

use crate::realtime::BoxFuture;

/// Moderation of SFU rooms.
pub trait Rooms: Send + Sync {
    /// Admits `participant` (a user id or an SFU participant id) from the waiting room of
    /// `room`; a user who has not arrived yet is admitted in advance. `Err` says why not
    /// (no such room, no such participant, SFU unavailable).
    fn admit(&self, room: &str, participant: &str) -> BoxFuture<'_, Result<(), String>>;

    /// Closes `room`: its participants are told to leave. Best effort; errors are the
    /// implementation's to log.
    fn close(&self, room: &str) -> BoxFuture<'_, ()>;
}

/// A port with no SFU behind it: admitting fails, closing does nothing. For tests and tools
/// that run the API without media.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRooms;

impl Rooms for NoRooms {
    fn admit(&self, _room: &str, _participant: &str) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(Err("no SFU is configured".to_string())))
    }

    fn close(&self, _room: &str) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}
