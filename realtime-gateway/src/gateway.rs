//! [`Gateway`]: the cloneable handle the server holds — publishing, server-side control of
//! connections, stats and shutdown.

use crate::channel;
use crate::config::GatewayConfig;
use crate::engine::{BoxFuture, Engine, HistoryOptions, HistoryQuery};
use crate::error::{Disconnect, GatewayError};
use crate::hub::{ConnId, EventSink, Hub};
use crate::outbox::Outbox;
use crate::protocol::{ClientInfo, HistoryResult, PresenceStats, RawJson, StreamPosition};
use crate::stats::{Stats, StatsSnapshot};
use dashmap::DashMap;
use nexus_auth::TokenKeys;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Checks server-API keys issued by the platform (e.g. hashed keys in the store).
///
/// The static [`GatewayConfig::api_key`] is tried first; this check runs for any other key.
pub trait ApiKeyCheck: Send + Sync + 'static {
    /// Whether `key` may call the server API.
    fn check<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool>;
}

/// Where a publication landed in its channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PublishResult {
    /// Offset of the publication (0 when the channel keeps no history).
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Stream epoch (empty when the channel keeps no history).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What the server API can ask a live connection to do.
#[derive(Debug)]
pub(crate) enum Control {
    Subscribe(String),
    Unsubscribe(String),
}

/// A live connection as seen from outside its task.
pub(crate) struct ConnHandle {
    pub(crate) id: ConnId,
    pub(crate) client: Arc<str>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) ctrl: mpsc::Sender<Control>,
}

/// The realtime gateway of one node. Cheap to clone; all clones share one gateway.
///
/// Create it inside a Tokio runtime (it spawns the hub's tasks). Mount it with
/// [`crate::router`], publish with [`Gateway::publish`], stop it with
/// [`Gateway::shutdown`].
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) keys: TokenKeys,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) hub: Hub,
    /// user → live connections of that user.
    pub(crate) registry: DashMap<Arc<str>, HashMap<ConnId, Arc<ConnHandle>>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) api_check: OnceLock<Arc<dyn ApiKeyCheck>>,
    pub(crate) conn_limit: Arc<Semaphore>,
    pub(crate) started: Instant,
    pub(crate) next_conn: AtomicU64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("engine", &self.inner.engine.name())
            .field("node", &self.inner.config.node_name)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates `config`, starts the hub and attaches `engine` to it.
    pub fn new(
        config: GatewayConfig,
        keys: TokenKeys,
        engine: impl Engine,
    ) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let config = Arc::new(config);
        let stats = Arc::new(Stats::default());
        let hub = Hub::start(
            stats.clone(),
            config.client_queue_max_messages,
            config.max_write_batch_bytes,
        );
        engine.attach(EventSink::hub(hub.clone(), config.clone(), stats.clone()));
        let inner = Inner {
            conn_limit: Arc::new(Semaphore::new(config.max_connections)),
            config,
            keys,
            engine: Arc::new(engine),
            hub,
            registry: DashMap::new(),
            stats,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            api_check: OnceLock::new(),
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
        };
        Ok(Gateway {
            inner: Arc::new(inner),
        })
    }

    /// Installs the check for platform-issued API keys; `false` if one was installed already.
    pub fn set_api_key_check(&self, check: impl ApiKeyCheck) -> bool {
        self.inner.api_check.set(Arc::new(check)).is_ok()
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The counters, live (for a Prometheus collector).
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// A copy of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Publishes `data` into `channel` for in-process publishers (incidents, alerts).
    ///
    /// No permission check: the caller is the server. Subscribers of geo-filtered namespaces
    /// get it only if `data.location`/`data.geometry` falls in their box (or is absent).
    pub async fn publish(
        &self,
        channel: &str,
        data: serde_json::Value,
    ) -> Result<PublishResult, GatewayError> {
        self.publish_raw(channel, RawJson::from_value(&data), None)
            .await
    }

    pub(crate) async fn publish_raw(
        &self,
        channel: &str,
        data: RawJson,
        info: Option<ClientInfo>,
    ) -> Result<PublishResult, GatewayError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(GatewayError::Shutdown);
        }
        let ns = channel::resolve(&self.inner.config, channel)?;
        let pos = self
            .inner
            .engine
            .publish(channel, data, info, history_options(ns))
            .await?;
        self.inner.stats.publications.fetch_add(1, Relaxed);
        Ok(PublishResult {
            offset: pos.offset,
            epoch: pos.epoch,
        })
    }

    /// Reads a channel's history. `limit`: 0 for the position only, negative for all kept
    /// (capped by [`GatewayConfig::max_history_limit`]). With `since`, only publications after
    /// it; a `since` from another epoch is [`GatewayError::UnrecoverablePosition`].
    pub async fn history(
        &self,
        channel: &str,
        limit: i64,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> Result<HistoryResult, GatewayError> {
        let ns = channel::resolve(&self.inner.config, channel)?;
        if !ns.history_enabled() {
            return Err(GatewayError::NotAvailable);
        }
        let max = self.inner.config.max_history_limit;
        let limit = if limit < 0 {
            max
        } else {
            (limit as usize).min(max)
        };
        let query = HistoryQuery {
            since: since.as_ref().map(|s| s.offset),
            limit,
            reverse,
        };
        let page = self
            .inner
            .engine
            .history(channel, query, history_options(ns))
            .await?;
        if let Some(s) = &since
            && !s.epoch.is_empty()
            && s.epoch != page.position.epoch
        {
            return Err(GatewayError::UnrecoverablePosition);
        }
        Ok(HistoryResult {
            publications: page.publications,
            epoch: page.position.epoch,
            offset: page.position.offset,
        })
    }

    /// Drops a channel's kept publications.
    pub async fn remove_history(&self, channel: &str) -> Result<(), GatewayError> {
        channel::resolve(&self.inner.config, channel)?;
        self.inner.engine.remove_history(channel).await
    }

    /// Who is in a presence-enabled channel: connection id → info.
    pub async fn presence(
        &self,
        channel: &str,
    ) -> Result<BTreeMap<String, ClientInfo>, GatewayError> {
        let ns = channel::resolve(&self.inner.config, channel)?;
        if !ns.presence {
            return Err(GatewayError::NotAvailable);
        }
        Ok(self
            .inner
            .engine
            .presence(channel)
            .await?
            .into_iter()
            .collect())
    }

    /// Counts of [`Gateway::presence`].
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, GatewayError> {
        let ns = channel::resolve(&self.inner.config, channel)?;
        if !ns.presence {
            return Err(GatewayError::NotAvailable);
        }
        self.inner.engine.presence_stats(channel).await
    }

    /// Channels with subscribers on this node matching `pattern` (`*` globs), with counts.
    pub async fn channels(&self, pattern: Option<&str>) -> Vec<(String, usize)> {
        let mut list = self.inner.hub.channels().await;
        if let Some(p) = pattern.filter(|p| !p.is_empty()) {
            list.retain(|(name, _)| channel::glob_match(p, name));
        }
        list.sort();
        list
    }

    fn connections_of(&self, user: &str, client: Option<&str>) -> Vec<Arc<ConnHandle>> {
        self.inner
            .registry
            .get(user)
            .map(|conns| {
                conns
                    .values()
                    .filter(|c| client.is_none_or(|id| &*c.client == id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes the connections of `user` on this node (only `client` if given); returns how
    /// many.
    pub fn disconnect_user(&self, user: &str, client: Option<&str>, reason: Disconnect) -> usize {
        let conns = self.connections_of(user, client);
        for c in &conns {
            c.outbox.close(reason.clone());
        }
        conns.len()
    }

    /// Unsubscribes `user`'s connections on this node from `channel` (they get an
    /// `unsubscribe` push).
    pub fn unsubscribe_user(&self, user: &str, channel: &str, client: Option<&str>) -> usize {
        self.control(user, client, || Control::Unsubscribe(channel.to_owned()))
    }

    /// Subscribes `user`'s connections on this node to `channel` server-side (they get a
    /// `subscribe` push).
    pub fn subscribe_user(
        &self,
        user: &str,
        channel: &str,
        client: Option<&str>,
    ) -> Result<usize, GatewayError> {
        channel::resolve(&self.inner.config, channel)?;
        Ok(self.control(user, client, || Control::Subscribe(channel.to_owned())))
    }

    fn control(&self, user: &str, client: Option<&str>, make: impl Fn() -> Control) -> usize {
        let conns = self.connections_of(user, client);
        let mut n = 0;
        for c in conns {
            if c.ctrl.try_send(make()).is_ok() {
                n += 1;
            } else {
                // A connection that can't take a control message is not keeping up.
                c.outbox.close(Disconnect::SLOW);
            }
        }
        n
    }

    /// Connection ids of `user` on this node.
    pub fn clients_of(&self, user: &str) -> Vec<String> {
        self.connections_of(user, None)
            .iter()
            .map(|c| c.client.to_string())
            .collect()
    }

    /// Distinct users connected to this node.
    pub fn num_users(&self) -> usize {
        self.inner.registry.len()
    }

    /// Time since the gateway started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Closes every connection with 3001 shutdown, refuses new ones, and waits (at most the
    /// close timeout plus a second) for the connection tasks to finish.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let limit = Duration::from_secs(self.inner.config.close_timeout_secs + 1);
        let _ = tokio::time::timeout(limit, self.inner.tracker.wait()).await;
    }

    /// Whether [`Gateway::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    pub(crate) fn register(&self, user: &Arc<str>, handle: Arc<ConnHandle>) {
        self.inner
            .registry
            .entry(user.clone())
            .or_default()
            .insert(handle.id, handle);
    }

    pub(crate) fn unregister(&self, user: &str, id: ConnId) {
        self.inner.registry.remove_if_mut(user, |_, conns| {
            conns.remove(&id);
            conns.is_empty()
        });
    }
}

/// The history settings of a namespace.
pub(crate) fn history_options(ns: &crate::config::NamespaceConfig) -> HistoryOptions {
    if ns.history_enabled() {
        HistoryOptions {
            size: ns.history_size,
            ttl: Duration::from_secs(ns.history_ttl_secs),
        }
    } else {
        HistoryOptions::NONE
    }
}
