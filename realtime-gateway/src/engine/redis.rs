//! The Redis engine, modelled on Centrifugo's: history in a stream per channel plus a meta
//! hash holding the top offset and the epoch; publications fanned out to every node through
//! pub/sub; presence in a hash (client → info) and a sorted set (client → expiry).
//!
//! Keys, with `P` the configured prefix and `C` the channel:
//! - `P.stream.C` — stream; entry id `<offset>-0`, field `d` = publication JSON;
//! - `P.meta.C` — hash: `s` top offset, `e` epoch;
//! - `P.pub.C` — pub/sub channel; messages `{"k":"p","o":offset,"t":publish_time_us,
//!   "p":publication}` or `{"k":"j"|"l","i":client_info}`;
//! - `P.presence.data.C`, `P.presence.expire.C` — presence.
//!
//! Offsets are assigned and publications appended and announced by one Lua script, so every
//! node sees a channel's publications in offset order.

use super::{
    BoxFuture, Engine, EngineEvent, EventSink, HistoryOptions, HistoryPage, HistoryQuery, new_epoch,
};
use crate::error::GatewayError;
use crate::protocol::{ClientInfo, Publication, RawJson, StreamPosition};
use futures_util::StreamExt;
use nexus_auth::token::unix_now;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Settings of [`RedisEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEngineConfig {
    /// Redis URL (`NEXUS_REDIS_URL`), e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// Key prefix, shared by the nodes of one deployment.
    pub prefix: String,
    /// How long a channel's offset and epoch survive without publications.
    pub history_meta_ttl: Duration,
}

impl RedisEngineConfig {
    /// Defaults for `url`: prefix `nexus-gw`, meta TTL 30 days.
    pub fn new(url: impl Into<String>) -> Self {
        RedisEngineConfig {
            url: url.into(),
            prefix: "nexus-gw".into(),
            history_meta_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Multi-node engine on Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    meta_ttl: u64,
    sink: Arc<OnceLock<EventSink>>,
    subs: mpsc::Sender<SubCmd>,
    publish: Script,
    history: Script,
    presence: Script,
}

enum SubCmd {
    Subscribe(String, oneshot::Sender<Result<(), GatewayError>>),
    Unsubscribe(String),
    /// The pub/sub connection was lost: open a new one, subscribe it to every channel with
    /// local interest, and hand its stream to the reader.
    Reconnect,
}

/// Delays between attempts to reopen a lost pub/sub connection.
const RECONNECT_BACKOFF: [Duration; 5] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

const PUBLISH_LUA: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('hset', KEYS[2], 'e', epoch)
  redis.call('del', KEYS[1])
end
local offset = redis.call('hincrby', KEYS[2], 's', 1)
if tonumber(ARGV[5]) > 0 then redis.call('expire', KEYS[2], ARGV[5]) end
redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-0', 'd', ARGV[1])
redis.call('expire', KEYS[1], ARGV[3])
redis.call('publish', KEYS[3], '{"k":"p","o":' .. offset .. ',"t":' .. ARGV[6] .. ',"p":' .. ARGV[1] .. '}')
return {tostring(offset), epoch}
"#;

const HISTORY_LUA: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', KEYS[2], 'e', epoch)
  redis.call('del', KEYS[1])
  if tonumber(ARGV[2]) > 0 then redis.call('expire', KEYS[2], ARGV[2]) end
end
local top = redis.call('hget', KEYS[2], 's') or '0'
local entries = {}
if tonumber(ARGV[4]) > 0 then
  local from = (tonumber(ARGV[3]) + 1) .. '-0'
  if ARGV[5] == '1' then
    entries = redis.call('xrevrange', KEYS[1], '+', from, 'COUNT', ARGV[4])
  else
    entries = redis.call('xrange', KEYS[1], from, '+', 'COUNT', ARGV[4])
  end
end
return {top, epoch, entries}
"#;

const PRESENCE_LUA: &str = r#"
local expired = redis.call('zrangebyscore', KEYS[2], '0', ARGV[1])
for _, c in ipairs(expired) do redis.call('hdel', KEYS[1], c) end
redis.call('zremrangebyscore', KEYS[2], '0', ARGV[1])
return redis.call('hgetall', KEYS[1])
"#;

/// A publication as stored and announced (its offset lives in the stream id / message).
#[derive(Serialize)]
struct StoredPub<'a> {
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a ClientInfo>,
}

#[derive(Deserialize)]
struct WireMessage {
    k: String,
    #[serde(default)]
    o: u64,
    /// Publish time, Unix microseconds (absent from older nodes).
    #[serde(default)]
    t: u64,
    #[serde(default)]
    p: Option<Publication>,
    #[serde(default)]
    i: Option<ClientInfo>,
}

fn engine_err(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Engine(e.to_string())
}

impl RedisEngine {
    /// Connects (command connection and pub/sub connection) and starts the pub/sub tasks.
    pub async fn connect(config: RedisEngineConfig) -> Result<RedisEngine, GatewayError> {
        let client = redis::Client::open(config.url.as_str()).map_err(engine_err)?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(engine_err)?;
        let (sub_sink, stream) = client.get_async_pubsub().await.map_err(engine_err)?.split();
        let sink: Arc<OnceLock<EventSink>> = Arc::new(OnceLock::new());
        let (tx, rx) = mpsc::channel(1024);
        let (streams_tx, streams_rx) = mpsc::channel(1);
        tokio::spawn(subscriptions(client, sub_sink, rx, streams_tx));
        let prefix = config.prefix.clone();
        tokio::spawn(read_pubsub(
            stream,
            streams_rx,
            tx.downgrade(),
            sink.clone(),
            format!("{}.pub.", config.prefix),
        ));
        Ok(RedisEngine {
            inner: Arc::new(Inner {
                conn,
                prefix,
                meta_ttl: config.history_meta_ttl.as_secs(),
                sink,
                subs: tx,
                publish: Script::new(PUBLISH_LUA),
                history: Script::new(HISTORY_LUA),
                presence: Script::new(PRESENCE_LUA),
            }),
        })
    }

    fn key(&self, kind: &str, channel: &str) -> String {
        format!("{}.{kind}.{channel}", self.inner.prefix)
    }
}

/// Reads the node's pub/sub stream into the hub. When the connection drops, asks the
/// subscription owner to reconnect and goes on with the new stream; publications made while
/// no connection was up are not delivered live (clients get them by recovery).
async fn read_pubsub(
    mut stream: PubSubStream,
    mut streams: mpsc::Receiver<PubSubStream>,
    subs: mpsc::WeakSender<SubCmd>,
    sink: Arc<OnceLock<EventSink>>,
    pub_prefix: String,
) {
    loop {
        while let Some(msg) = stream.next().await {
            let Some(channel) = msg.get_channel_name().strip_prefix(&pub_prefix) else {
                continue;
            };
            let Some(event) = decode_message(channel, msg.get_payload_bytes()) else {
                tracing::warn!(%channel, "undecodable message from Redis");
                continue;
            };
            if let Some(sink) = sink.get() {
                sink.deliver(event).await;
            }
        }
        // The engine is gone when its command sender is: nothing to reconnect for.
        let Some(subs) = subs.upgrade() else { return };
        tracing::warn!("Redis pub/sub connection lost: reconnecting");
        if subs.send(SubCmd::Reconnect).await.is_err() {
            return;
        }
        drop(subs);
        match streams.recv().await {
            Some(s) => stream = s,
            None => return,
        }
    }
}

/// Opens a pub/sub connection subscribed to `keys`, retrying with backoff until it works;
/// `None` once the engine is dropped (`rx` closed).
async fn reopen(
    client: &redis::Client,
    keys: impl Iterator<Item = String> + Clone,
    rx: &mpsc::Receiver<SubCmd>,
) -> Option<(PubSubSink, PubSubStream)> {
    let mut attempt = 0;
    loop {
        if rx.is_closed() {
            return None;
        }
        let opened = async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            for key in keys.clone() {
                sink.subscribe(&key).await?;
            }
            Ok::<_, redis::RedisError>((sink, stream))
        }
        .await;
        match opened {
            Ok(pair) => {
                tracing::info!(attempt, "Redis pub/sub connection restored");
                return Some(pair);
            }
            Err(e) => {
                let delay = RECONNECT_BACKOFF[attempt.min(RECONNECT_BACKOFF.len() - 1)];
                tracing::warn!(error = %e, ?delay, "Redis pub/sub reconnect failed");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// The pub/sub subscription owner: counts local interest per channel and (un)subscribes the
/// node's pub/sub connection when the count leaves or reaches zero; reopens the connection
/// when the reader reports it lost.
async fn subscriptions(
    client: redis::Client,
    mut sink: PubSubSink,
    mut rx: mpsc::Receiver<SubCmd>,
    streams: mpsc::Sender<PubSubStream>,
) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            SubCmd::Subscribe(key, ack) => {
                let n = counts.entry(key.clone()).or_insert(0);
                let result = if *n == 0 {
                    sink.subscribe(&key).await.map_err(engine_err)
                } else {
                    Ok(())
                };
                if result.is_ok() {
                    *n += 1;
                } else if *n == 0 {
                    counts.remove(&key);
                }
                let _ = ack.send(result);
            }
            SubCmd::Unsubscribe(key) => {
                let Some(n) = counts.get_mut(&key) else {
                    continue;
                };
                *n -= 1;
                if *n == 0 {
                    counts.remove(&key);
                    if let Err(e) = sink.unsubscribe(&key).await {
                        tracing::warn!(error = %e, "Redis unsubscribe failed");
                    }
                }
            }
            SubCmd::Reconnect => {
                let Some((new_sink, stream)) = reopen(&client, counts.keys().cloned(), &rx).await
                else {
                    return;
                };
                sink = new_sink;
                if streams.send(stream).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn decode_message(channel: &str, payload: &[u8]) -> Option<EngineEvent> {
    let m: WireMessage = serde_json::from_slice(payload).ok()?;
    let channel = channel.to_owned();
    match m.k.as_str() {
        "p" => {
            let mut publication = m.p?;
            publication.offset = m.o;
            Some(EngineEvent::Publication {
                channel,
                publication,
                published_us: m.t,
            })
        }
        "j" => Some(EngineEvent::Join {
            channel,
            info: m.i?,
        }),
        "l" => Some(EngineEvent::Leave {
            channel,
            info: m.i?,
        }),
        _ => None,
    }
}

fn stored_json(data: &RawJson, info: Option<&ClientInfo>) -> Result<String, GatewayError> {
    let raw: &RawValue = serde_json::from_str(data.as_str()).map_err(engine_err)?;
    serde_json::to_string(&StoredPub { data: raw, info }).map_err(engine_err)
}

type Entries = Vec<(String, Vec<String>)>;

fn parse_entries(entries: Entries) -> Vec<Publication> {
    entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let offset: u64 = id.split('-').next()?.parse().ok()?;
            let payload = fields.chunks(2).find(|kv| kv[0] == "d")?.get(1)?;
            let mut p: Publication = serde_json::from_str(payload).ok()?;
            p.offset = offset;
            Some(p)
        })
        .collect()
}

impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn attach(&self, sink: EventSink) {
        let _ = self.inner.sink.set(sink);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: RawJson,
        info: Option<ClientInfo>,
        history: HistoryOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, GatewayError>> {
        let published_us = crate::stats::unix_micros();
        Box::pin(async move {
            let stored = stored_json(&data, info.as_ref())?;
            let mut conn = self.inner.conn.clone();
            if !history.enabled() {
                let msg = format!("{{\"k\":\"p\",\"o\":0,\"t\":{published_us},\"p\":{stored}}}");
                let _: i64 = conn
                    .publish(self.key("pub", channel), msg)
                    .await
                    .map_err(engine_err)?;
                return Ok(StreamPosition::default());
            }
            let (offset, epoch): (String, String) = self
                .inner
                .publish
                .key(self.key("stream", channel))
                .key(self.key("meta", channel))
                .key(self.key("pub", channel))
                .arg(stored)
                .arg(history.size)
                .arg(history.ttl.as_secs().max(1))
                .arg(new_epoch())
                .arg(self.inner.meta_ttl)
                .arg(published_us)
                .invoke_async(&mut conn)
                .await
                .map_err(engine_err)?;
            Ok(StreamPosition {
                offset: offset.parse().map_err(engine_err)?,
                epoch,
            })
        })
    }

    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        join: bool,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let info = serde_json::to_string(&info).map_err(engine_err)?;
            let kind = if join { "j" } else { "l" };
            let msg = format!("{{\"k\":\"{kind}\",\"i\":{info}}}");
            let mut conn = self.inner.conn.clone();
            let _: i64 = conn
                .publish(self.key("pub", channel), msg)
                .await
                .map_err(engine_err)?;
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
        _history: HistoryOptions,
    ) -> BoxFuture<'a, Result<HistoryPage, GatewayError>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let (top, epoch, entries): (String, String, Entries) = self
                .inner
                .history
                .key(self.key("stream", channel))
                .key(self.key("meta", channel))
                .arg(new_epoch())
                .arg(self.inner.meta_ttl)
                .arg(query.since.unwrap_or(0))
                .arg(query.limit)
                .arg(if query.reverse { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await
                .map_err(engine_err)?;
            Ok(HistoryPage {
                publications: parse_entries(entries),
                position: StreamPosition {
                    offset: top.parse().map_err(engine_err)?,
                    epoch,
                },
            })
        })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let _: i64 = conn
                .del(self.key("stream", channel))
                .await
                .map_err(engine_err)?;
            Ok(())
        })
    }

    fn subscribe_node<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let (ack, rx) = oneshot::channel();
            self.inner
                .subs
                .send(SubCmd::Subscribe(self.key("pub", channel), ack))
                .await
                .map_err(|_| GatewayError::Shutdown)?;
            rx.await.map_err(|_| GatewayError::Shutdown)?
        })
    }

    fn unsubscribe_node<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            self.inner
                .subs
                .send(SubCmd::Unsubscribe(self.key("pub", channel)))
                .await
                .map_err(|_| GatewayError::Shutdown)
        })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let json = serde_json::to_string(&info).map_err(engine_err)?;
            let (data, expire) = (
                self.key("presence.data", channel),
                self.key("presence.expire", channel),
            );
            let ttl = ttl.as_secs().max(1);
            let mut conn = self.inner.conn.clone();
            redis::pipe()
                .atomic()
                .zadd(&expire, &info.client, unix_now() + ttl)
                .ignore()
                .hset(&data, &info.client, json)
                .ignore()
                .expire(&data, ttl as i64)
                .ignore()
                .expire(&expire, ttl as i64)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(engine_err)
        })
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            redis::pipe()
                .atomic()
                .hdel(self.key("presence.data", channel), client)
                .ignore()
                .zrem(self.key("presence.expire", channel), client)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(engine_err)
        })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, GatewayError>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let flat: Vec<String> = self
                .inner
                .presence
                .key(self.key("presence.data", channel))
                .key(self.key("presence.expire", channel))
                .arg(unix_now())
                .invoke_async(&mut conn)
                .await
                .map_err(engine_err)?;
            Ok(flat
                .chunks(2)
                .filter_map(|kv| {
                    let info: ClientInfo = serde_json::from_str(kv.get(1)?).ok()?;
                    Some((kv[0].clone(), info))
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_messages_decode() {
        let ev = decode_message(
            "c",
            br#"{"k":"p","o":7,"t":42,"p":{"data":{"a":1},"info":{"user":"u","client":"x"}}}"#,
        );
        match ev {
            Some(EngineEvent::Publication {
                channel,
                publication,
                published_us,
            }) => {
                assert_eq!(channel, "c");
                assert_eq!(published_us, 42);
                assert_eq!(publication.offset, 7);
                assert_eq!(publication.data.as_str(), r#"{"a":1}"#);
                assert_eq!(publication.info.map(|i| i.user), Some("u".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_message("c", br#"{"k":"l","i":{"user":"u","client":"x"}}"#),
            Some(EngineEvent::Leave { .. })
        ));
        assert!(decode_message("c", b"garbage").is_none());
        let entries = vec![(
            "3-0".to_owned(),
            vec!["d".to_owned(), r#"{"data":[1]}"#.to_owned()],
        )];
        assert_eq!(parse_entries(entries)[0].offset, 3);
        let stored = stored_json(
            &RawJson::parse(r#"{"x":1}"#).unwrap_or_else(|_| unreachable!()),
            None,
        );
        assert_eq!(stored.ok().as_deref(), Some(r#"{"data":{"x":1}}"#));
    }
}
