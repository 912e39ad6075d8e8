//! The healthcare API's [`nexus_api::Rooms`] port over the SFU.

use nexus_api::{BoxFuture, Rooms};
use nexus_sfu_net::SfuHandle;

/// Admits and closes rooms on the SFU of this node.
pub struct SfuRooms(pub SfuHandle);

impl Rooms for SfuRooms {
    fn admit(&self, room: &str, participant: &str) -> BoxFuture<'_, Result<(), String>> {
        let (room, participant) = (room.to_string(), participant.to_string());
        Box::pin(async move {
            self.0
                .admit(&room, &participant)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn close(&self, room: &str) -> BoxFuture<'_, ()> {
        let room = room.to_string();
        Box::pin(async move {
            // A room nobody joined does not exist on the SFU: nothing to close then.
            if let Err(e) = self.0.close_room(&room).await {
                tracing::debug!(%room, error = %e, "room not closed");
            }
        })
    }
}
