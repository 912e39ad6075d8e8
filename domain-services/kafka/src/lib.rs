//! The Kafka implementation of Nexus's [`EventBus`](nexus_events::EventBus), on `rdkafka`.
//!
//! This is the only crate that links librdkafka. It maps the event backbone of
//! [`nexus_events`] onto Kafka:
//!
//! - **Topics**: one per domain, `<prefix><domain>` (`nexus.users`, `nexus.crisis`, …), plus
//!   `<topic>.retry` and `<topic>.dlq`; the bus creates the topics its consumers read.
//! - **Producing**: the outbox relay calls [`EventBus::publish`](nexus_events::EventBus::publish); the producer is idempotent
//!   (`enable.idempotence=true`, `acks=all`), the message key is the aggregate id (the
//!   CloudEvents `subject`), so an aggregate's events land on one partition in order. Events
//!   are written in the CloudEvents Kafka binding's **binary mode** (`ce_id`, `ce_source`,
//!   `ce_type`, `ce_specversion`, `ce_time`, `ce_subject` headers, `content-type`, data as
//!   the value) or, when selected, **structured mode** (the JSON event as the value).
//! - **Consuming**: each [`Consumer`](nexus_events::Consumer) is a consumer group named after
//!   it. Offsets are committed manually, after the event was handled and its id recorded in
//!   the store, so a crash means redelivery, which the processed-id check absorbs. A handler
//!   failure is re-produced to `<topic>.retry` with an attempt count (and the consumer's
//!   name, so other groups ignore it); when the attempts are used up it goes to
//!   `<topic>.dlq` with the error, and into the store's dead-letter table.
//!
//! Delivery is at least once: see [`nexus_events`] for what that means for handlers.
//!
//! # Example
//! ```no_run
//! # async fn demo(store: nexus_store::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use nexus_kafka::{KafkaBus, KafkaSettings};
//! use std::sync::Arc;
//! let bus = Arc::new(KafkaBus::new(KafkaSettings::new("127.0.0.1:9092"), store.clone())?);
//! let relay = nexus_events::Relay::new(store, bus);
//! relay.run(tokio_util::sync::CancellationToken::new()).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`bus`] — [`KafkaBus`];
//! - [`settings`] — [`KafkaSettings`], [`ContentMode`];
//! - [`error`] — [`KafkaBusError`].

pub mod bus;
pub mod error;
pub mod settings;

pub use bus::KafkaBus;
pub use error::KafkaBusError;
pub use settings::{ContentMode, KafkaSettings};
