//! The Nexus realtime gateway: Centrifugo-compatible WebSocket fan-out with history,
//! recovery, presence and geo-filtered feeds.
//!
//! Clients speak the [Centrifugo client protocol](protocol) (JSON over WebSocket) at
//! `GET /connection/websocket`, so that centrifuge-js and its siblings work unchanged. The
//! server and other Nexus services publish through [`Gateway::publish`] or the
//! Centrifugo-shaped HTTP API under `/api/…` ([`router`]).
//!
//! # Model
//! - A **connection** authenticates with a connection JWT (`nexus_auth::Claims`, verified by
//!   [`nexus_auth::TokenKeys`]) in its `connect` command. The token's `channels` claim lists
//!   its server-side subscriptions and its memberships; `roles` feed the permission checks;
//!   `exp` bounds the connection unless the client sends `refresh` with a new token
//!   (an expired connection is closed with 3005).
//! - A **channel** belongs to a namespace (its name up to the first `:` or `#`); the
//!   namespace's [`NamespaceConfig`] says who may subscribe and publish, and whether the
//!   channel keeps history, presence and join/leave events, or accepts geo filters.
//!   `user#<id>` channels admit only user `<id>`.
//! - **History**: a channel keeps its last N publications with increasing `offset`s in a
//!   stream named by an `epoch`. A client resubscribing with `recover: true` and its last
//!   `offset`/`epoch` gets what it missed and `recovered: true` — or `recovered: false` when
//!   the epoch changed or the history was trimmed past its offset.
//! - **Fan-out**: a publication is encoded once; each recipient's bounded queue receives the
//!   same bytes without waiting. A client whose queue overflows is closed with 3008 (slow)
//!   and can recover on reconnect; nobody else is slowed down. Hub state is owned by shard
//!   tasks and changed by message: no lock is held on the delivery path.
//! - **Geo filters**: a subscriber of a geo namespace may pass `{"bbox": [minLon, minLat,
//!   maxLon, maxLat], "zoom": z}` as subscribe `data`; it then receives only publications
//!   whose `data.location` / `data.geometry` falls inside (and those with no location). The
//!   hub matches publications against an R-tree of subscriber boxes.
//! - **Engines** ([`engine`]) hold history and presence and carry publications between
//!   nodes: [`MemoryEngine`] for one node, [`RedisEngine`] for several.
//!
//! # Layout
//! - [`gateway`]: [`Gateway`], the handle (publish, control, stats, shutdown);
//! - [`http`]: [`router`] — WebSocket upgrade and server API;
//! - [`conn`]: one connection over any `Sink`/`Stream` ([`Gateway::serve_connection`]);
//! - [`protocol`]: wire types and codec; [`channel`]: namespaces and permissions;
//!   [`geo`]: boxes, locations and the subscriber index; [`config`]: [`GatewayConfig`];
//! - `hub` (private): subscriber sets and fan-out; `outbox` (private): per-connection queues
//!   and direct socket writes; [`wire`]: WebSocket framing for [`Gateway::serve_tcp`];
//! - [`engine`]: the [`Engine`] trait, [`MemoryEngine`], [`RedisEngine`];
//! - [`stats`]: counters; [`error`]: [`GatewayError`], [`Disconnect`] codes.
//!
//! # Example
//! A connection driven through in-memory channels instead of a socket:
//! ```
//! use futures_util::{SinkExt, StreamExt, stream, sink};
//! use nexus_auth::{Claims, TokenKeys};
//! use nexus_gateway::{Gateway, GatewayConfig, Incoming, MemoryEngine, Outgoing};
//! use tokio::sync::mpsc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keys = TokenKeys::new(b"a-secret-of-at-least-32-bytes!!!", &[]);
//! let gw = Gateway::new(GatewayConfig::default(), keys.clone(), MemoryEngine::new()).unwrap();
//!
//! // The client side of the "socket".
//! let (to_server, from_client) = mpsc::channel::<Incoming>(16);
//! let (to_client, mut from_server) = mpsc::channel::<Outgoing>(16);
//! let incoming = stream::unfold(from_client, |mut rx| async move {
//!     rx.recv().await.map(|m| (Ok::<_, std::convert::Infallible>(m), rx))
//! });
//! let outgoing = sink::unfold(to_client, |tx, m: Outgoing| async move {
//!     tx.send(m).await.map(|()| tx)
//! });
//! tokio::spawn({
//!     let gw = gw.clone();
//!     async move { gw.serve_connection(Box::pin(outgoing), Box::pin(incoming)).await }
//! });
//!
//! let token = keys.mint(&Claims::new("responder-7", 600)).unwrap();
//! let connect = format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#);
//! let subscribe = r#"{"id":2,"subscribe":{"channel":"incidents","data":{"bbox":[2,48,3,49]}}}"#;
//! to_server.send(Incoming::Text(format!("{connect}\n{subscribe}"))).await.unwrap();
//!
//! let mut lines = Vec::new();
//! while lines.len() < 2 {
//!     let Some(Outgoing::Text(frame)) = from_server.recv().await else { panic!() };
//!     lines.extend(std::str::from_utf8(&frame).unwrap().lines().map(str::to_owned));
//! }
//! assert!(lines[0].starts_with(r#"{"id":1,"connect":"#));
//! assert!(lines[1].starts_with(r#"{"id":2,"subscribe":{"recoverable":true"#));
//!
//! // Inside the box: delivered. Outside: filtered out.
//! gw.publish("incidents", serde_json::json!({"location": {"lat": 48.5, "lon": 2.5}})).await.unwrap();
//! gw.publish("incidents", serde_json::json!({"location": {"lat": 40.0, "lon": 2.5}})).await.unwrap();
//! let Some(Outgoing::Text(frame)) = from_server.recv().await else { panic!() };
//! assert!(std::str::from_utf8(&frame).unwrap().contains(r#""offset":1"#));
//! # }
//! ```

pub mod channel;
pub mod config;
pub mod conn;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod geo;
pub mod http;
mod hub;
mod outbox;
pub mod protocol;
pub mod stats;
pub mod wire;

pub use config::{ApiKey, GatewayConfig, NamespaceConfig};
pub use conn::{Incoming, Outgoing};
pub use engine::{Engine, MemoryEngine, RedisEngine, RedisEngineConfig};
pub use error::{Disconnect, ErrorCode, GatewayError};
pub use gateway::{ApiKeyCheck, Gateway, PublishResult};
pub use http::{ConnSocket, router};
pub use stats::{Stats, StatsSnapshot};
