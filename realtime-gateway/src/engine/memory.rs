//! The in-memory engine: channels are spread over shard tasks; each task owns the streams and
//! presence of its channels and delivers their events to the hub in offset order.

use super::{
    BoxFuture, Engine, EngineEvent, EventSink, HistoryOptions, HistoryPage, HistoryQuery, new_epoch,
};
use crate::error::GatewayError;
use crate::protocol::{ClientInfo, Publication, RawJson, StreamPosition};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const SHARDS: usize = 8;
const SHARD_QUEUE: usize = 1024;

/// Single-node engine keeping history and presence in this process.
///
/// Create it inside a Tokio runtime: it spawns its shard tasks.
#[derive(Clone)]
pub struct MemoryEngine {
    shards: Arc<[mpsc::Sender<Cmd>]>,
    hasher: RandomState,
    sink: Arc<OnceLock<EventSink>>,
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEngine").finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, GatewayError>>;

enum Cmd {
    Publish {
        channel: String,
        data: RawJson,
        info: Option<ClientInfo>,
        history: HistoryOptions,
        published_us: u64,
        reply: Reply<StreamPosition>,
    },
    JoinLeave {
        channel: String,
        info: ClientInfo,
        join: bool,
        reply: Reply<()>,
    },
    History {
        channel: String,
        query: HistoryQuery,
        history: HistoryOptions,
        reply: Reply<HistoryPage>,
    },
    RemoveHistory {
        channel: String,
        reply: Reply<()>,
    },
    AddPresence {
        channel: String,
        info: ClientInfo,
        reply: Reply<()>,
    },
    RemovePresence {
        channel: String,
        client: String,
        reply: Reply<()>,
    },
    Presence {
        channel: String,
        reply: Reply<HashMap<String, ClientInfo>>,
    },
}

struct Stream {
    epoch: String,
    top: u64,
    pubs: VecDeque<Publication>,
    expires: Instant,
}

#[derive(Default)]
struct Shard {
    streams: HashMap<String, Stream>,
    presence: HashMap<String, HashMap<String, ClientInfo>>,
}

impl Shard {
    fn stream(&mut self, channel: &str, history: HistoryOptions) -> &mut Stream {
        let now = Instant::now();
        let s = self
            .streams
            .entry(channel.to_owned())
            .or_insert_with(|| Stream {
                epoch: new_epoch(),
                top: 0,
                pubs: VecDeque::new(),
                expires: now + history.ttl,
            });
        if now >= s.expires {
            // History lives `ttl` after the last publication; the position stays.
            s.pubs.clear();
        }
        s
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, sink: Arc<OnceLock<EventSink>>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Publish {
                    channel,
                    data,
                    info,
                    history,
                    published_us,
                    reply,
                } => {
                    let mut publication = Publication {
                        offset: 0,
                        data,
                        info,
                    };
                    let position = if history.enabled() {
                        let s = self.stream(&channel, history);
                        s.top += 1;
                        publication.offset = s.top;
                        s.pubs.push_back(publication.clone());
                        while s.pubs.len() > history.size {
                            s.pubs.pop_front();
                        }
                        s.expires = Instant::now() + history.ttl;
                        StreamPosition {
                            offset: s.top,
                            epoch: s.epoch.clone(),
                        }
                    } else {
                        StreamPosition::default()
                    };
                    let _ = reply.send(Ok(position));
                    if let Some(sink) = sink.get() {
                        sink.deliver(EngineEvent::Publication {
                            channel,
                            publication,
                            published_us,
                        })
                        .await;
                    }
                }
                Cmd::JoinLeave {
                    channel,
                    info,
                    join,
                    reply,
                } => {
                    let _ = reply.send(Ok(()));
                    if let Some(sink) = sink.get() {
                        let ev = if join {
                            EngineEvent::Join { channel, info }
                        } else {
                            EngineEvent::Leave { channel, info }
                        };
                        sink.deliver(ev).await;
                    }
                }
                Cmd::History {
                    channel,
                    query,
                    history,
                    reply,
                } => {
                    let s = self.stream(&channel, history);
                    let since = query.since.unwrap_or(0);
                    let mut pubs: Vec<Publication> = if query.reverse {
                        s.pubs
                            .iter()
                            .rev()
                            .filter(|p| p.offset > since)
                            .take(query.limit)
                            .cloned()
                            .collect()
                    } else {
                        s.pubs
                            .iter()
                            .filter(|p| p.offset > since)
                            .take(query.limit)
                            .cloned()
                            .collect()
                    };
                    pubs.shrink_to_fit();
                    let page = HistoryPage {
                        publications: pubs,
                        position: StreamPosition {
                            offset: s.top,
                            epoch: s.epoch.clone(),
                        },
                    };
                    let _ = reply.send(Ok(page));
                }
                Cmd::RemoveHistory { channel, reply } => {
                    if let Some(s) = self.streams.get_mut(&channel) {
                        s.pubs.clear();
                    }
                    let _ = reply.send(Ok(()));
                }
                Cmd::AddPresence {
                    channel,
                    info,
                    reply,
                } => {
                    self.presence
                        .entry(channel)
                        .or_default()
                        .insert(info.client.clone(), info);
                    let _ = reply.send(Ok(()));
                }
                Cmd::RemovePresence {
                    channel,
                    client,
                    reply,
                } => {
                    if let Some(p) = self.presence.get_mut(&channel) {
                        p.remove(&client);
                        if p.is_empty() {
                            self.presence.remove(&channel);
                        }
                    }
                    let _ = reply.send(Ok(()));
                }
                Cmd::Presence { channel, reply } => {
                    let p = self.presence.get(&channel).cloned().unwrap_or_default();
                    let _ = reply.send(Ok(p));
                }
            }
        }
    }
}

impl MemoryEngine {
    /// Starts the engine's shard tasks (needs a Tokio runtime).
    pub fn new() -> Self {
        let sink = Arc::new(OnceLock::new());
        let shards: Vec<_> = (0..SHARDS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(SHARD_QUEUE);
                tokio::spawn(Shard::default().run(rx, sink.clone()));
                tx
            })
            .collect();
        MemoryEngine {
            shards: shards.into(),
            hasher: RandomState::new(),
            sink,
        }
    }

    async fn call<T>(
        &self,
        channel: &str,
        make: impl FnOnce(Reply<T>) -> Cmd,
    ) -> Result<T, GatewayError> {
        let i = (self.hasher.hash_one(channel) as usize) % self.shards.len();
        let (tx, rx) = oneshot::channel();
        self.shards[i]
            .send(make(tx))
            .await
            .map_err(|_| GatewayError::Shutdown)?;
        rx.await.map_err(|_| GatewayError::Shutdown)?
    }
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn attach(&self, sink: EventSink) {
        let _ = self.sink.set(sink);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: RawJson,
        info: Option<ClientInfo>,
        history: HistoryOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, GatewayError>> {
        let published_us = crate::stats::unix_micros();
        Box::pin(self.call(channel, move |reply| Cmd::Publish {
            channel: channel.to_owned(),
            data,
            info,
            history,
            published_us,
            reply,
        }))
    }

    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        join: bool,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(self.call(channel, move |reply| Cmd::JoinLeave {
            channel: channel.to_owned(),
            info,
            join,
            reply,
        }))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        history: HistoryOptions,
    ) -> BoxFuture<'a, Result<HistoryPage, GatewayError>> {
        Box::pin(self.call(channel, move |reply| Cmd::History {
            channel: channel.to_owned(),
            query,
            history,
            reply,
        }))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(self.call(channel, move |reply| Cmd::RemoveHistory {
            channel: channel.to_owned(),
            reply,
        }))
    }

    fn subscribe_node<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>> {
        // One node: every publication already reaches the local hub.
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe_node<'a>(
        &'a self,
        _channel: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async { Ok(()) })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        _ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        // Entries leave with their connection; in one process nothing is left behind.
        Box::pin(self.call(channel, move |reply| Cmd::AddPresence {
            channel: channel.to_owned(),
            info,
            reply,
        }))
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(self.call(channel, move |reply| Cmd::RemovePresence {
            channel: channel.to_owned(),
            client: client.to_owned(),
            reply,
        }))
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, GatewayError>> {
        Box::pin(self.call(channel, move |reply| Cmd::Presence {
            channel: channel.to_owned(),
            reply,
        }))
    }
}
