//! SMS through an HTTP provider with Twilio's Messages API.

use crate::channel::{BoxFuture, Channel, Outgoing};
use crate::error::{ConfigError, SendError};
use crate::message::sms_text;
use std::time::Duration;

/// Where and as whom to send SMS.
#[derive(Clone)]
pub struct SmsSettings {
    /// Base URL of the API (`https://api.twilio.com` or a compatible provider).
    pub base_url: String,
    /// Account id (basic-auth user, part of the path).
    pub account: String,
    /// Auth token (basic-auth password).
    pub token: String,
    /// Sender number or id.
    pub from: String,
}

impl std::fmt::Debug for SmsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSettings")
            .field("base_url", &self.base_url)
            .field("account", &self.account)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The SMS channel: `POST {base}/2010-04-01/Accounts/{account}/Messages.json` with the form
/// fields `To`, `From`, `Body`, basic auth, and the delivery's idempotency key in the
/// `I-Twilio-Idempotency-Token` and `Idempotency-Key` headers. 2xx is delivered; 429, 5xx,
/// timeouts and connection errors are retried; other statuses fail the delivery.
#[derive(Debug, Clone)]
pub struct SmsChannel {
    client: reqwest::Client,
    endpoint: String,
    settings: SmsSettings,
}

impl SmsChannel {
    /// A channel for `settings`, with a 10-second request timeout.
    pub fn new(settings: SmsSettings) -> Result<Self, ConfigError> {
        let base = settings.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ConfigError::Sms(
                "the URL must be http:// or https://".into(),
            ));
        }
        if settings.account.is_empty() || settings.from.is_empty() {
            return Err(ConfigError::Sms("account and from are required".into()));
        }
        let endpoint = format!(
            "{base}/2010-04-01/Accounts/{}/Messages.json",
            settings.account
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConfigError::Sms(e.to_string()))?;
        Ok(SmsChannel {
            client,
            endpoint,
            settings,
        })
    }
}

impl Channel for SmsChannel {
    fn name(&self) -> &'static str {
        "sms"
    }

    fn send<'a>(&'a self, m: Outgoing<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let body = sms_text(m.alert, None);
            let form = [
                ("To", m.address),
                ("From", self.settings.from.as_str()),
                ("Body", body.as_str()),
            ];
            let resp = self
                .client
                .post(&self.endpoint)
                .basic_auth(&self.settings.account, Some(&self.settings.token))
                .header("I-Twilio-Idempotency-Token", m.key)
                .header("Idempotency-Key", m.key)
                .form(&form)
                .send()
                .await
                .map_err(|e| SendError::Transient(format!("SMS provider unreachable: {e}")))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else if status.as_u16() == 429 || status.is_server_error() {
                Err(SendError::Transient(format!(
                    "SMS provider answered {status}"
                )))
            } else {
                Err(SendError::Permanent(format!(
                    "SMS provider answered {status}"
                )))
            }
        })
    }
}
