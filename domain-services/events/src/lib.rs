//! The Nexus event backbone: CloudEvents written through a transactional outbox, relayed to a
//! bus, handed to idempotent consumers.
//!
//! # The model
//!
//! ```text
//!  domain write ──(same transaction)──▶ outbox row ──relay──▶ bus ──▶ consumer ──▶ handler
//!                                        (store)              in-process   (skips ids it
//!                                                             or Kafka      already handled)
//! ```
//!
//! 1. **Outbox.** A domain service never talks to the bus. It builds the event with
//!    [`record`] (a [`CloudEvent`] of a catalogued [`EventType`]) and passes it to the store
//!    write method that makes the change; both commit or neither does. The write succeeds
//!    whether or not the bus is up.
//! 2. **Relay.** [`Relay`] reads pending rows in outbox order (= commit order), publishes
//!    them and only then marks them sent. If the bus is down it retries with backoff; the
//!    backlog is its lag ([`RelayStats::pending`], exported as `nexus_outbox_pending_events`).
//! 3. **Bus.** [`EventBus`] has two implementations: [`InProcessBus`] (default; the outbox
//!    table *is* the log and every consumer keeps a durable cursor in it) and
//!    `nexus_kafka::KafkaBus` (one topic per [`Domain`], key = aggregate id, CloudEvents
//!    Kafka binding). Events of one aggregate stay in order on both.
//! 4. **Consumers.** A [`Consumer`] is a name, topics, a [`Handler`] and a [`RetryPolicy`].
//!    The bus records each handled event id under the consumer's name (and, in-process,
//!    moves the cursor in the same transaction) and skips ids it has seen. A handler error is
//!    retried (Kafka: via `<topic>.retry`) and finally *dead-lettered* with its message
//!    (the store's `dead_letters` table; Kafka also `<topic>.dlq`) — never dropped silently.
//!
//! # What "at least once" means here
//!
//! Every committed event reaches every consumer at least once, across relay crashes, broker
//! outages and consumer restarts: nothing is marked sent before the bus has it, and nothing
//! is marked handled before the handler returned. The price is duplicates — a batch
//! republished after a crash, a Kafka offset not yet committed — which the processed-id check
//! turns into *exactly once per consumer* for everything but the one event a consumer was
//! handling at the instant it crashed. Handlers whose effect must never repeat should make
//! that effect idempotent themselves (an upsert keyed by the event id).
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use nexus_events::*;
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//!
//! struct Print;
//! #[async_trait::async_trait]
//! impl Handler for Print {
//!     async fn handle(&self, e: &CloudEvent) -> Result<(), HandlerError> {
//!         println!("{} {}", e.event_type, e.key());
//!         Ok(())
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = nexus_store::Store::connect(&format!("sqlite://{}/n.db", dir.path().display())).await.unwrap();
//! store.migrate().await.unwrap();
//!
//! // A domain write with its event, in one transaction.
//! let event = record(EventType::IncidentReported, "inc-1", serde_json::json!({"id": "inc-1"})).unwrap();
//! store.append_events(&[event]).await.unwrap();
//!
//! // Relay and a consumer.
//! let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new(store.clone()).await.unwrap());
//! let relay = Relay::new(store.clone(), bus.clone());
//! relay.run_once().await.unwrap();
//! let shutdown = CancellationToken::new();
//! let consumer = Consumer::new("map", [Topics::logical(Domain::Crisis)], Arc::new(Print));
//! let task = spawn_consumer(bus, consumer, shutdown.clone());
//! while store.consumer_processed_count("map").await.unwrap() < 1 {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! shutdown.cancel();
//! task.await.unwrap();
//! # });
//! ```
//!
//! # Layout
//! - [`catalogue`] — [`Domain`] and [`EventType`]: every event type, its domain and topic;
//! - [`envelope`] — [`CloudEvent`]: structured JSON and Kafka binary-mode headers; [`record`];
//! - [`topics`] — [`Topics`]: `<prefix><domain>`, `<topic>.retry`, `<topic>.dlq`;
//! - [`bus`] — the [`EventBus`] port, [`Consumer`], [`Handler`], [`RetryPolicy`];
//! - [`consumer`] — the delivery steps all buses share (dedup, record, dead-letter);
//! - [`relay`] — [`Relay`], the outbox relay, and its [`RelayStats`];
//! - [`inprocess`] — [`InProcessBus`];
//! - [`error`] — [`EventError`], [`HandlerError`];
//! - `testing` (feature `test-support`) — the bus conformance suite.

pub mod bus;
pub mod catalogue;
pub mod consumer;
pub mod envelope;
pub mod error;
pub mod inprocess;
pub mod relay;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod topics;

pub use bus::{Consumer, EventBus, Handler, RetryPolicy, Scope, spawn_consumer};
pub use catalogue::{Domain, EventType, UnknownEventType};
pub use envelope::{CloudEvent, record};
pub use error::{EventError, HandlerError};
pub use inprocess::InProcessBus;
pub use relay::{Relay, RelayConfig, RelayStats};
pub use topics::Topics;
