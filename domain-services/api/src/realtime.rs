//! The realtime-publisher port: how handlers push to the gateway's channels after a write.
//!
//! The API does not depend on the gateway; the binary implements [`Realtime`] over it and
//! puts it in [`ApiState`](crate::ApiState). Publishing is best effort and happens after the
//! store has committed: a failed publish is logged by the implementation and never fails the
//! request (clients recover from channel history or by re-querying).

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future (what [`Realtime::publish`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Publishes JSON to a gateway channel (`incidents`, `geofences`, …).
pub trait Realtime: Send + Sync + 'static {
    /// Publishes `data` on `channel`; errors are the implementation's to log.
    fn publish(&self, channel: &str, data: serde_json::Value) -> BoxFuture<'_, ()>;
}

/// Publishes nothing: for tests and tools that run the API without a gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRealtime;

impl Realtime for NoRealtime {
    fn publish(&self, _channel: &str, _data: serde_json::Value) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}
