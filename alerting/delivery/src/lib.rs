//! `nexus-alert-delivery`: getting CAP alerts to people — the durable per-recipient queue
//! worker and the channels it sends through.
//!
//! # Model
//!
//! The alerting consumer enqueues one delivery per (alert, recipient, channel) in the store
//! when it handles the alert's event (`nexus_store::Store::enqueue_deliveries`, idempotent:
//! a redelivered event adds nothing). A [`Worker`] claims
//! due deliveries in batches with a lease, sends each through its [`Channel`] under that
//! channel's [`RateLimit`], and records the outcome: delivered, a retry at a time chosen by
//! [`Backoff`] (exponential with jitter), failed, or expired (the alert expired or was
//! cancelled first). Delivery states are `nexus_store::DeliveryState`:
//! `Queued → Sending{attempt} → Delivered | Queued (retry) | Failed | Expired`.
//!
//! # Invariants
//!
//! - At most one delivery per (alert, recipient, channel), also across restarts: the store's
//!   unique index, not memory, says so.
//! - At-least-once sending, exactly-once after deduplication: a worker that dies between
//!   sending and recording leaves a leased row that is claimed again after the lease; the
//!   message it sends again carries the same idempotency key (the delivery id) — in the
//!   e-mail's `Message-ID` and body, in the SMS request's `I-Twilio-Idempotency-Token` and
//!   `Idempotency-Key` headers, in the Web Push payload's `key` — so the receiving side
//!   drops it.
//! - A push service's 404/410 ends the subscription ([`SendError::Gone`]); push endpoints on
//!   private or loopback addresses are refused by the [`OutboundPolicy`] (at registration
//!   and at sending, after DNS) unless its networks allow them.
//! - Nothing is sent after the alert's `expires`, or after a Cancel of it.
//! - Addresses and message text never reach the logs; delivery ids do.
//! - The pure parts — [`Backoff`], [`TokenBucket`], [`sms_text`] — take time and
//!   randomness as arguments and are tested without sleeping.
//!
//! # Example
//!
//! ```no_run
//! use nexus_alert_delivery::{RateLimit, SmsChannel, SmsSettings, SmtpChannel, Worker, WorkerConfig};
//! use std::sync::Arc;
//! # async fn run(store: nexus_store::Store) -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let email = SmtpChannel::from_url("smtp://127.0.0.1:2525", None)?;
//! let sms = SmsChannel::new(SmsSettings {
//!     base_url: "https://api.twilio.com".into(),
//!     account: "AC123".into(),
//!     token: "secret".into(),
//!     from: "+15550100".into(),
//! })?;
//! let worker = Worker::new(store, WorkerConfig::default())
//!     .with_channel(Arc::new(email), RateLimit { per_sec: 50.0, burst: 50 })
//!     .with_channel(Arc::new(sms), RateLimit { per_sec: 30.0, burst: 30 });
//! let task = tokio::spawn(worker.run(shutdown.clone()));
//! shutdown.cancel(); // on SIGTERM: the batch in hand is finished, then it stops
//! task.await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `worker`: [`Worker`], [`WorkerConfig`], [`RateLimit`], [`TickReport`].
//! - `channel`: the [`Channel`] port and [`Outgoing`] message; `email`: [`SmtpChannel`]
//!   (lettre); `sms`: [`SmsChannel`] (reqwest, Twilio-compatible form API); `push`:
//!   [`PushChannel`], [`VapidKey`], [`PushSubscription`] (VAPID, RFC 8291 encryption).
//! - `message`: [`sms_text`], [`email_text`], [`realtime_message`] (a user's personal
//!   gateway channel; the server implements that channel over its gateway); `backoff`: [`Backoff`]; `rate`:
//!   [`TokenBucket`]; `error`: [`SendError`], [`ConfigError`], [`FetchError`], [`IngestError`].
//! - [`outbound`]: the [`OutboundPolicy`] guard against requests to private, loopback,
//!   link-local and multicast addresses (after DNS resolution and on redirects), and
//!   [`outbound::fetch`] with a size limit — for every URL that comes from outside (CAP
//!   feeds, Web Push endpoints).
//! - [`ingest`]: the [`Ingester`] of external CAP ATOM feeds (conditional polling,
//!   deduplication in the store, re-broadcast of allowlisted senders through an [`Issuer`]).

mod backoff;
mod channel;
mod email;
mod error;
pub mod ingest;
mod message;
pub mod outbound;
mod push;
mod rate;
mod sms;
mod worker;

pub use backoff::Backoff;
pub use channel::{BoxFuture, Channel, Outgoing};
pub use email::{DEFAULT_FROM, SMTP_CONNECTIONS, SmtpChannel};
pub use error::{ConfigError, FetchError, IngestError, SendError};
pub use ingest::{IngestConfig, Ingester, IssueError, IssuedAlert, Issuer, PollReport};
pub use message::{SMS_MAX_CHARS, email_text, realtime_message, sms_text};
pub use outbound::OutboundPolicy;
pub use push::{
    MAX_PAYLOAD, PushChannel, PushKeys, PushSettings, PushSubscription, VapidKey, check_endpoint,
};
pub use rate::TokenBucket;
pub use sms::{SmsChannel, SmsSettings};
pub use worker::{RateLimit, TickReport, UnsubscribeLinks, Worker, WorkerConfig};
