//! E-mail over SMTP with lettre.

use crate::channel::{BoxFuture, Channel, Outgoing};
use crate::error::{ConfigError, SendError};
use crate::message::email_text;
use lettre::message::Mailbox;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// SMTP connections the e-mail channel keeps open at most.
pub const SMTP_CONNECTIONS: u32 = 16;

/// Sender of alert e-mails when none is configured.
pub const DEFAULT_FROM: &str = "Nexus alerts <alerts@nexus.invalid>";

/// The e-mail channel: one pooled SMTP transport (up to [`SMTP_CONNECTIONS`] connections
/// kept open and reused: an alert to thousands of recipients does not open a connection
/// per message). Every message's `Message-ID` is
/// `<KEY@nexus-alerts>` (KEY = the delivery's idempotency key), and the body ends with it;
/// when the worker has unsubscribe links, the body and a `List-Unsubscribe` header carry
/// the recipient's.
#[derive(Clone)]
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport holds credentials: print nothing of it.
        f.debug_struct("SmtpChannel").finish_non_exhaustive()
    }
}

impl SmtpChannel {
    /// From `smtp://[user:pass@]host[:port]` (STARTTLS when the URL says `?tls=required`),
    /// or `smtps://…` (TLS from the start); `from` defaults to [`DEFAULT_FROM`].
    pub fn from_url(url: &str, from: Option<&str>) -> Result<Self, ConfigError> {
        if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
            return Err(ConfigError::Smtp("expected smtp:// or smtps://".into()));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            // lettre's message may quote the URL, password included: keep only its kind.
            .map_err(|_| ConfigError::Smtp("lettre cannot use this URL".into()))?
            .timeout(Some(Duration::from_secs(10)))
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(SMTP_CONNECTIONS))
            .build();
        let from = from
            .unwrap_or(DEFAULT_FROM)
            .parse()
            .map_err(|e| ConfigError::Smtp(format!("invalid sender address: {e}")))?;
        Ok(SmtpChannel { transport, from })
    }
}

impl Channel for SmtpChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, m: Outgoing<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let to: Mailbox = m
                .address
                .parse()
                .map_err(|_| SendError::Permanent("invalid e-mail address".into()))?;
            let (subject, mut body) = email_text(m.alert, None, m.key);
            let mut builder = Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(subject)
                .message_id(Some(format!("<{}@nexus-alerts>", m.key)));
            if let Some(url) = m.unsubscribe_url {
                body.push_str(&format!("\nTo stop receiving these alerts: {url}\n"));
                // RFC 2369 and RFC 8058 (one-click: mail clients POST to the same URL).
                builder = builder
                    .raw_header(HeaderValue::new(
                        HeaderName::new_from_ascii_str("List-Unsubscribe"),
                        format!("<{url}>"),
                    ))
                    .raw_header(HeaderValue::new(
                        HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                        "List-Unsubscribe=One-Click".into(),
                    ));
            }
            let email = builder
                .body(body)
                .map_err(|e| SendError::Permanent(format!("cannot build the e-mail: {e}")))?;
            match self.transport.send(email).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
                Err(e) => Err(SendError::Transient(format!("SMTP: {e}"))),
            }
        })
    }
}
