//! Errors of the event backbone.

use nexus_store::StoreError;

/// Why an event operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The store (outbox, cursors, processed ids, dead letters) failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An event could not be serialized into a CloudEvent.
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// Bytes on the bus or in the outbox are not a valid CloudEvent.
    #[error("cannot decode event: {0}")]
    Decode(String),
    /// The bus refused or could not take the events (broker down, timeout, …). The relay
    /// retries with backoff.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus is misconfigured (bad broker address, bad client option, …).
    #[error("bus configuration: {0}")]
    Config(String),
}

/// Why a consumer's handler failed to handle an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Worth retrying (a dependency was briefly unavailable); dead-lettered once the retry
    /// policy's attempts are used up.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (the event is invalid for this consumer): dead-lettered at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    /// Whether the event should be dead-lettered without further attempts.
    pub fn is_permanent(&self) -> bool {
        matches!(self, HandlerError::Permanent(_))
    }
}
