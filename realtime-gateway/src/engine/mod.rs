//! Engines: where publications, history and presence live, and how publications reach every
//! node.
//!
//! [`MemoryEngine`] keeps everything in this process (one node). [`RedisEngine`] keeps
//! history in Redis streams, presence in Redis hashes and sorted sets, and fans publications
//! out to every node through Redis pub/sub, as Centrifugo's Redis engine does. Both deliver
//! publications, joins and leaves to the local hub through the [`EventSink`] they are
//! attached to, in offset order per channel.

mod memory;
mod redis;

pub use self::memory::MemoryEngine;
pub use self::redis::{RedisEngine, RedisEngineConfig};

use crate::error::GatewayError;
use crate::protocol::{ClientInfo, PresenceStats, Publication, RawJson, StreamPosition};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use crate::hub::EventSink;

/// A boxed future, so that [`Engine`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a channel keeps history (from its namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Publications kept (0: none; publications then get no offset).
    pub size: usize,
    /// Lifetime of the history after the last publication.
    pub ttl: Duration,
}

impl HistoryOptions {
    /// No history.
    pub const NONE: HistoryOptions = HistoryOptions {
        size: 0,
        ttl: Duration::ZERO,
    };

    /// Whether history is kept.
    pub fn enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// What to read from a channel's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Only publications with an offset above this one.
    pub since: Option<u64>,
    /// Most publications returned (0: only the stream position).
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

/// Publications read from history, with the stream's current position.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Matching publications.
    pub publications: Vec<Publication>,
    /// Top of the stream (offset of its last publication) and its epoch.
    pub position: StreamPosition,
}

/// Something that happened in a channel, delivered to every node's hub.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A publication.
    Publication {
        /// Channel name.
        channel: String,
        /// The publication (with its offset when the channel keeps history).
        publication: Publication,
        /// Wall-clock time of the publish call, in microseconds since the Unix epoch (0:
        /// unknown); writers measure publish→write latency from it.
        published_us: u64,
    },
    /// A client subscribed to a presence channel.
    Join {
        /// Channel name.
        channel: String,
        /// Who joined.
        info: ClientInfo,
    },
    /// A client left a presence channel.
    Leave {
        /// Channel name.
        channel: String,
        /// Who left.
        info: ClientInfo,
    },
}

/// Storage and cross-node delivery of channel data.
///
/// Implementations must deliver the events of one channel to the sink in the order of their
/// offsets, and must never block on clients (the hub does not).
pub trait Engine: Send + Sync + 'static {
    /// Short name for logs (`memory`, `redis`).
    fn name(&self) -> &'static str;

    /// Connects the engine to this node's hub. Called once by [`crate::Gateway::new`].
    fn attach(&self, sink: EventSink);

    /// Appends a publication to history (when `history.enabled()`) and delivers it to every
    /// node; returns its position (offset 0 and empty epoch without history).
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: RawJson,
        info: Option<ClientInfo>,
        history: HistoryOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, GatewayError>>;

    /// Delivers a join (`join = true`) or leave event to every node.
    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        join: bool,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Reads history; creates the stream (and its epoch) if it does not exist yet, so that
    /// a subscriber learns the epoch its later publications will carry.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        history: HistoryOptions,
    ) -> BoxFuture<'a, Result<HistoryPage, GatewayError>>;

    /// Drops a channel's publications (the epoch and offset stay).
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Declares that this node has (one more) subscriber on `channel`; returns once the node
    /// receives the channel's publications. Counted: call [`Engine::unsubscribe_node`] once
    /// per call.
    fn subscribe_node<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Undoes one [`Engine::subscribe_node`].
    fn unsubscribe_node<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Adds or refreshes a presence entry that expires after `ttl` unless refreshed.
    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Removes a presence entry.
    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Who is in the channel: connection id → info.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, GatewayError>>;

    /// Counts of [`Engine::presence`].
    fn presence_stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, GatewayError>> {
        Box::pin(async move {
            let p = self.presence(channel).await?;
            let users: std::collections::HashSet<&str> =
                p.values().map(|i| i.user.as_str()).collect();
            Ok(PresenceStats {
                num_clients: p.len() as u64,
                num_users: users.len() as u64,
            })
        })
    }
}

/// A fresh random stream epoch.
pub(crate) fn new_epoch() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(8)
        .map(char::from)
        .collect()
}
