//! Alerting inside `nexus serve`: the API's alerting policy from the configuration, the
//! alerting consumer of the event bus (`alert.issued` / `alert.updated` /
//! `alert.cancelled` → targeting → durable per-recipient deliveries, and the gateway's
//! `alerts` channel), and the delivery worker with the channels `config.smtp`,
//! `config.sms` and Web Push (`config.vapid`) configure.

use crate::config::Config;
use anyhow::{Context, Result};
use nexus_alert_delivery::{
    BoxFuture, Channel, OutboundPolicy, Outgoing, PushChannel, PushSettings, RateLimit, SendError,
    SmsChannel, SmsSettings, SmtpChannel, VapidKey, Worker, WorkerConfig,
};
use nexus_api::ApiState;
use nexus_api::alerts::{AlertSettings, Dispatched};
use nexus_events::{
    CloudEvent, Consumer, Domain, EventBus, EventType, Handler, HandlerError, Topics,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Consumer name (and Kafka group) of alerting.
pub const ALERTING: &str = "alerting";

/// Sends in flight at once per channel: enough to keep a provider with a few hundred
/// milliseconds of latency at its rate limit.
const DELIVERY_CONCURRENCY: usize = 32;
/// Deliveries a channel's lane claims at a time.
const DELIVERY_BATCH: i64 = 200;

/// A channel's rate limit from `[alerts] rate_*` (messages per second, 0 = unlimited): a
/// burst of one second's worth.
fn rate(per_sec: f64) -> RateLimit {
    RateLimit {
        per_sec,
        // At most u32::MAX by the `min`; a rate is finite and non-negative (config check).
        burst: per_sec.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
    }
}

/// The VAPID contact when none is configured (push services may refuse it; set
/// `NEXUS_VAPID_SUBJECT`).
const DEFAULT_VAPID_SUBJECT: &str = "mailto:alerts@nexus.invalid";

/// What alerting needs beyond the configuration: the VAPID key and the link key.
pub struct AlertingKeys {
    /// Web Push signing key.
    pub vapid: Arc<VapidKey>,
    /// HMAC key of unsubscribe links.
    pub link_key: Vec<u8>,
}

/// Loads (or generates) the VAPID key and derives the link key from the JWT secret.
pub fn keys(config: &Config, jwt_secret: &[u8]) -> Result<AlertingKeys> {
    let vapid = crate::secrets::vapid_key(
        config.vapid.private_key.as_ref().map(|s| s.expose()),
        &config.data_dir,
    )?;
    // A key of its own (not the JWT secret itself), stable as long as the JWT secret is.
    let link_key = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwt_secret),
        b"nexus alert unsubscribe links",
    )
    .as_ref()
    .to_vec();
    Ok(AlertingKeys {
        vapid: Arc::new(vapid),
        link_key,
    })
}

/// The API's alerting policy; `local` is the listener's address (the default base of links).
pub fn settings(
    config: &Config,
    keys: &AlertingKeys,
    local: SocketAddr,
    tls: bool,
) -> AlertSettings {
    let public_url = config
        .alerts
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{}://{local}", if tls { "https" } else { "http" }));
    AlertSettings {
        approval: config.alerts.approval,
        test_allowlist: config.alerts.test_allowlist.clone(),
        push_policy: push_policy(config),
        link_key: keys.link_key.clone(),
        public_url: public_url.trim_end_matches('/').to_string(),
        sms_auth_token: config.sms.token.as_ref().map(|t| t.expose().to_string()),
        vapid_public_key: Some(keys.vapid.public_key()),
        device_location_max_age: config.alerts.device_location_max_age,
    }
}

/// The outbound guard for Web Push endpoints: `outbound.allow` (`NEXUS_OUTBOUND_ALLOW`), as
/// for every URL from outside, plus every network when `alerts.allow_private_push`
/// (`NEXUS_ALERTS_ALLOW_PRIVATE_PUSH`, kept from before the shared guard: push only).
pub fn push_policy(config: &Config) -> OutboundPolicy {
    let mut allow = config.outbound.allow.clone();
    if config.alerts.allow_private_push {
        // The defaults are 0.0.0.0/0 and ::/0.
        allow.push(ipnet::Ipv4Net::default().into());
        allow.push(ipnet::Ipv6Net::default().into());
    }
    OutboundPolicy::allowing(allow)
}

/// Starts the alerting consumer on `bus` and the delivery worker, both on `background`;
/// they stop on `shutdown` (the worker finishes the batch in hand first).
pub fn start(
    config: &Config,
    api: &ApiState,
    keys: &AlertingKeys,
    gateway: &nexus_gateway::Gateway,
    bus: Arc<dyn EventBus>,
    shutdown: &CancellationToken,
    background: &TaskTracker,
) -> Result<()> {
    let consumer = Consumer::new(
        ALERTING,
        [Topics::logical(Domain::Crisis)],
        Arc::new(AlertingConsumer { api: api.clone() }),
    );
    let consumer = nexus_events::spawn_consumer(bus, consumer, shutdown.clone());
    background.spawn(async move {
        let _ = consumer.await;
    });

    let worker_config = WorkerConfig {
        // Short enough that a crashed node's leased deliveries are resumed soon after a
        // restart, long enough for a batch at the channels' rates.
        lease: Duration::from_secs(10),
        batch: DELIVERY_BATCH,
        concurrency: DELIVERY_CONCURRENCY,
        ..WorkerConfig::default()
    };
    let settings = api.alerting.clone();
    let mut worker = Worker::new(api.store.clone(), worker_config).with_unsubscribe_links(
        Arc::new(move |recipient: &str| nexus_api::alerts::unsubscribe_url(&settings, recipient)),
    );
    if let Some(url) = &config.smtp.url {
        let email =
            SmtpChannel::from_url(url.expose(), None).context("smtp.url (NEXUS_SMTP_URL)")?;
        worker = worker.with_channel(Arc::new(email), rate(config.alerts.rate_email));
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
        worker = worker.with_channel(Arc::new(sms), rate(config.alerts.rate_sms));
    }
    let subject = config.vapid.subject.clone().unwrap_or_else(|| {
        tracing::warn!(
            "vapid.subject (NEXUS_VAPID_SUBJECT) unset; push services may refuse Web Push"
        );
        DEFAULT_VAPID_SUBJECT.to_string()
    });
    let push = PushChannel::new(PushSettings {
        vapid: keys.vapid.clone(),
        subject,
        policy: push_policy(config),
    })
    .context("Web Push (NEXUS_VAPID_SUBJECT)")?;
    worker = worker.with_channel(Arc::new(push), rate(config.alerts.rate_push));
    worker = worker.with_channel(
        Arc::new(PersonalChannel(gateway.clone())),
        rate(config.alerts.rate_websocket),
    );
    background.spawn(worker.run(shutdown.clone()));
    Ok(())
}

/// The `websocket` delivery channel: a publication on the user's personal gateway channel
/// (`user#<id>`, the delivery's address) carrying the delivery's idempotency key. Through
/// the gateway's engine it reaches the user's connections on every node; delivered means
/// the gateway took it (a user with no connection open misses it: the personal namespace
/// keeps no history, and the other channels are the durable ones).
struct PersonalChannel(nexus_gateway::Gateway);

impl Channel for PersonalChannel {
    fn name(&self) -> &'static str {
        nexus_api::alerts::WEBSOCKET
    }

    fn send<'a>(&'a self, message: Outgoing<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            if !message.address.starts_with("user#") {
                return Err(SendError::Permanent("not a personal channel".into()));
            }
            let data = nexus_alert_delivery::realtime_message(&message);
            match self.0.publish(message.address, data).await {
                Ok(_) => Ok(()),
                Err(e @ nexus_gateway::GatewayError::UnknownChannel) => {
                    Err(SendError::Permanent(e.to_string()))
                }
                Err(e) => Err(SendError::Transient(e.to_string())),
            }
        })
    }
}

/// The alerting consumer: an alert that comes into force (issued, or approved) is targeted
/// and its deliveries queued. Idempotent twice over: the bus skips event ids it has seen,
/// and the queue's unique (alert, recipient, channel) makes a redelivered event add nothing.
struct AlertingConsumer {
    api: ApiState,
}

#[async_trait::async_trait]
impl Handler for AlertingConsumer {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        if !matches!(
            event.kind(),
            Some(EventType::AlertIssued | EventType::AlertUpdated | EventType::AlertCancelled)
        ) {
            return Ok(());
        }
        let Some(id) = event.data.get("id").and_then(|v| v.as_str()) else {
            return Err(HandlerError::Permanent(
                "alert event without data.id".into(),
            ));
        };
        let supersedes: Vec<String> = event
            .data
            .get("supersedes")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        match nexus_api::alerts::dispatch(&self.api, id, &supersedes).await {
            Ok(Dispatched::Unknown) => Err(HandlerError::Permanent(format!(
                "alert {id} is not in this store"
            ))),
            Ok(_) => Ok(()),
            Err(p) => Err(HandlerError::Transient(format!(
                "{}: {}",
                p.title,
                p.detail.unwrap_or_default()
            ))),
        }
    }
}
