//! Alert delivery wiring: the queue worker with the channels `config.smtp` and `config.sms`
//! configure. Web Push (`config.vapid`) is not implemented yet: a push key is accepted and
//! ignored, with a log line.

use crate::config::Config;
use anyhow::{Context, Result};
use nexus_alert_delivery::{RateLimit, SmsChannel, SmsSettings, SmtpChannel, Worker, WorkerConfig};
use nexus_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// E-mail: sustained messages per second and burst.
const EMAIL_RATE: RateLimit = RateLimit {
    per_sec: 50.0,
    burst: 50,
};
/// SMS: sustained messages per second and burst (a provider account's usual limit).
const SMS_RATE: RateLimit = RateLimit {
    per_sec: 30.0,
    burst: 30,
};

/// Starts the delivery worker on `background`; it stops claiming on `shutdown` and
/// finishes the batch in hand (the server waits for `background` within its grace).
pub fn start(
    config: &Config,
    store: &Store,
    shutdown: &CancellationToken,
    background: &TaskTracker,
) -> Result<()> {
    let worker_config = WorkerConfig {
        // Short enough that a crashed node's leased deliveries are resumed soon after a
        // restart, long enough for a batch at the channels' rates.
        lease: Duration::from_secs(10),
        batch: 100,
        ..WorkerConfig::default()
    };
    let mut worker = Worker::new(store.clone(), worker_config);
    if let Some(url) = &config.smtp.url {
        let email =
            SmtpChannel::from_url(url.expose(), None).context("smtp.url (NEXUS_SMTP_URL)")?;
        worker = worker.with_channel(Arc::new(email), EMAIL_RATE);
    }
    if let Some(url) = &config.sms.url {
        let sms = SmsChannel::new(SmsSettings {
            base_url: url.clone(),
            account: config.sms.account.clone().unwrap_or_default(),
            token: config
                .sms
                .token
                .as_ref()
                .map(|t| t.expose().to_string())
                .unwrap_or_default(),
            from: config.sms.from.clone().unwrap_or_default(),
        })
        .context("sms (NEXUS_SMS_URL, NEXUS_SMS_ACCOUNT, NEXUS_SMS_TOKEN, NEXUS_SMS_FROM)")?;
        worker = worker.with_channel(Arc::new(sms), SMS_RATE);
    }
    if config.vapid.private_key.is_some() {
        tracing::warn!("vapid is configured but Web Push delivery is not implemented yet");
    }
    background.spawn(worker.run(shutdown.clone()));
    Ok(())
}
