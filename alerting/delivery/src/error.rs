//! Errors of the delivery crate.

/// Why a channel could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The SMTP URL is not `smtp://…` or `smtps://…`, or lettre refused it.
    #[error("invalid SMTP URL: {0}")]
    Smtp(String),
    /// The SMS provider settings are incomplete or invalid.
    #[error("invalid SMS provider settings: {0}")]
    Sms(String),
    /// The VAPID key or the push settings are unusable.
    #[error("invalid Web Push settings: {0}")]
    Push(String),
}

/// Why one send attempt failed; decides between retrying and giving up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Worth retrying: timeouts, connection failures, 5xx, 429, SMTP 4xx.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Retrying cannot help: rejected address, 4xx other than 429, SMTP 5xx.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The address is gone for good (a push service's 404 or 410): the delivery fails and
    /// the worker ends the subscription.
    #[error("address gone: {0}")]
    Gone(String),
}

/// Why an outgoing fetch (a CAP feed, a CAP document) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The outbound guard refused the destination (a non-public address, before or after
    /// DNS resolution or on a redirect, or a scheme other than http/https).
    #[error("refused by the outbound guard: {0}")]
    Refused(String),
    /// The server answered with a status other than 2xx or 304.
    #[error("HTTP status {status}")]
    Status {
        /// The status code.
        status: u16,
    },
    /// The body is larger than the limit.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The request failed: timeout, connection refused, TLS, malformed response.
    #[error("request failed: {0}")]
    Http(String),
}

/// Why a poll failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The feed could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The feed is not a readable ATOM document.
    #[error("not a readable ATOM feed: {0}")]
    Feed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] nexus_store::StoreError),
}
