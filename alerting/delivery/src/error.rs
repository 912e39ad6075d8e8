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
