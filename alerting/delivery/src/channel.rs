//! The channel port: how the worker hands one message to e-mail, SMS or push.

use crate::error::SendError;
use nexus_cap::Alert;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future (what [`Channel::send`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message to send: a delivery of an alert to one address.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The delivery id: the idempotency key the message must carry, so that the receiving
    /// side can drop a duplicate sent again after a crash.
    pub key: &'a str,
    /// The address on this channel (e-mail address, E.164 number, push subscription).
    pub address: &'a str,
    /// The alert.
    pub alert: &'a Alert,
    /// The alert's server id.
    pub alert_id: &'a str,
    /// The recipient (subscription id).
    pub recipient_id: &'a str,
    /// Where the recipient ends the subscription, when the server builds such links.
    pub unsubscribe_url: Option<&'a str>,
}

/// A delivery channel. Implementations classify failures as [`SendError::Transient`]
/// (retried with backoff) or [`SendError::Permanent`] (the delivery fails), and never log
/// addresses or message text.
pub trait Channel: Send + Sync + 'static {
    /// The channel name the queue uses (`email`, `sms`, `push`).
    fn name(&self) -> &'static str;

    /// Sends one message.
    fn send<'a>(&'a self, message: Outgoing<'a>) -> BoxFuture<'a, Result<(), SendError>>;
}
