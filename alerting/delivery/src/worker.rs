//! The queue worker: claims due deliveries from the store, sends them through their
//! channel under the channel's rate limit, and records the outcome.
//!
//! [`Worker::run`] drives one lane per channel until shutdown: each lane task owns its
//! channel's rate limiter and claims only that channel's deliveries, so a slow or
//! rate-limited channel (SMS at a provider's 30/s) never holds back another (Web Push). A
//! lane sends a claimed batch with up to [`WorkerConfig::concurrency`] sends in flight and
//! records the batch's outcomes in one store transaction. [`Worker::tick`] does one round
//! of every lane, step by step.

use crate::backoff::Backoff;
use crate::channel::{Channel, Outgoing};
use crate::error::SendError;
use crate::rate::TokenBucket;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use nexus_cap::Alert;
use nexus_store::{AlertStatus, ChannelFilter, DeliveryOutcome, DeliveryRecord, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A channel's rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained messages per second (0 = unlimited).
    pub per_sec: f64,
    /// Messages that may go at once.
    pub burst: u32,
}

/// How the worker runs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// How long a claimed delivery stays leased to this worker; a crashed worker's rows are
    /// claimed again after it. Must exceed the time a batch takes.
    pub lease: Duration,
    /// Deliveries claimed at a time.
    pub batch: i64,
    /// Wait between polls when nothing is due.
    pub idle_poll: Duration,
    /// Retry policy.
    pub backoff: Backoff,
    /// Longest one send may take before it counts as a transient failure.
    pub send_timeout: Duration,
    /// Sends in flight at once per channel.
    pub concurrency: usize,
    /// How often expired alerts are marked and their queued deliveries dropped.
    pub expiry_sweep: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease: Duration::from_secs(30),
            batch: 200,
            idle_poll: Duration::from_millis(250),
            backoff: Backoff::default(),
            send_timeout: Duration::from_secs(15),
            concurrency: 8,
            expiry_sweep: Duration::from_secs(5),
        }
    }
}

/// What one [`Worker::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Deliveries claimed.
    pub claimed: usize,
    /// Delivered.
    pub delivered: usize,
    /// Queued again for a retry.
    pub retried: usize,
    /// Failed for good.
    pub failed: usize,
    /// Dropped unsent (expired, cancelled).
    pub expired: usize,
    /// Subscriptions ended because their address is gone (Web Push 404/410).
    pub ended: usize,
}

/// Builds the unsubscribe URL of a recipient (subscription id) for the messages that carry
/// one (e-mail).
pub type UnsubscribeLinks = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A finished delivery attempt: its outcome, and the subscription to end when the
/// channel said the address is gone.
struct Done {
    id: String,
    outcome: DeliveryOutcome,
    gone: Option<String>,
}

impl Done {
    fn new(id: String, outcome: DeliveryOutcome) -> Done {
        Done {
            id,
            outcome,
            gone: None,
        }
    }
}

struct ChannelSlot {
    channel: Arc<dyn Channel>,
    bucket: TokenBucket,
    limit: RateLimit,
}

impl ChannelSlot {
    /// Deliveries to claim at once: `batch`, but no more than the rate limit lets go out in
    /// half the lease — a batch claimed must be sent before its lease runs out, or another
    /// worker claims the rest again and they go twice.
    fn claim_size(&self, config: &WorkerConfig) -> i64 {
        let rate = self.limit.per_sec;
        if !(rate.is_finite() && rate > 0.0) {
            return config.batch;
        }
        let within = rate * config.lease.as_secs_f64() / 2.0 + f64::from(self.limit.burst);
        // Saturating float-to-int conversion; at least one.
        (within.floor() as i64).clamp(1, config.batch.max(1))
    }
}

/// The delivery queue worker.
pub struct Worker {
    store: Store,
    config: WorkerConfig,
    channels: HashMap<&'static str, ChannelSlot>,
    origin: Instant,
    last_sweep: Option<Instant>,
    links: Option<UnsubscribeLinks>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("channels", &self.channels.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What every lane of a worker shares (read-only).
struct Shared {
    store: Store,
    config: WorkerConfig,
    origin: Instant,
    links: Option<UnsubscribeLinks>,
}

impl Worker {
    /// A worker over `store` with no channels yet.
    pub fn new(store: Store, config: WorkerConfig) -> Self {
        Worker {
            store,
            config,
            channels: HashMap::new(),
            origin: Instant::now(),
            last_sweep: None,
            links: None,
        }
    }

    /// Gives every message the unsubscribe URL `links` builds from its recipient id.
    #[must_use]
    pub fn with_unsubscribe_links(mut self, links: UnsubscribeLinks) -> Self {
        self.links = Some(links);
        self
    }

    /// Adds (or replaces) a channel with its rate limit.
    #[must_use]
    pub fn with_channel(mut self, channel: Arc<dyn Channel>, limit: RateLimit) -> Self {
        self.channels.insert(
            channel.name(),
            ChannelSlot {
                channel,
                bucket: TokenBucket::new(limit.per_sec, limit.burst),
                limit,
            },
        );
        self
    }

    /// Names of the configured channels.
    pub fn channel_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.channels.keys().copied().collect();
        names.sort_unstable();
        names
    }

    fn shared(&self) -> Shared {
        Shared {
            store: self.store.clone(),
            config: self.config.clone(),
            origin: self.origin,
            links: self.links.clone(),
        }
    }

    /// Runs until `shutdown`: one lane per channel, each claiming only its channel's
    /// deliveries (so a rate-limited channel never holds back another), a lane that fails
    /// deliveries on channels this worker does not have, and the expiry sweep. Each lane
    /// finishes the batch in hand (sends complete and their outcomes are recorded) before it
    /// returns; nothing new is claimed after.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let names = self.channel_names();
        tracing::info!(channels = ?names, "alert delivery worker started");
        let shared = Arc::new(self.shared());
        let mut lanes = Vec::new();
        for (name, slot) in std::mem::take(&mut self.channels) {
            lanes.push(tokio::spawn(lane_loop(
                shared.clone(),
                LaneKind::Channel(name, slot),
                shutdown.clone(),
            )));
        }
        lanes.push(tokio::spawn(lane_loop(
            shared.clone(),
            LaneKind::Unconfigured(names),
            shutdown.clone(),
        )));
        let sweep = {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = sweep(&shared.store).await {
                        tracing::warn!(error = %e, "alert expiry sweep failed");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(shared.config.expiry_sweep) => {}
                    }
                }
            })
        };
        for lane in lanes {
            if let Err(e) = lane.await {
                tracing::error!(error = %e, "alert delivery lane panicked");
            }
        }
        let _ = sweep.await;
        tracing::info!("alert delivery worker stopped");
    }

    /// One round: sweeps expired alerts when due, then one batch per channel (and one of
    /// deliveries on channels this worker does not have). What [`Worker::run`] does
    /// continuously, step by step.
    pub async fn tick(&mut self) -> Result<TickReport, StoreError> {
        if self
            .last_sweep
            .is_none_or(|at| at.elapsed() >= self.config.expiry_sweep)
        {
            self.last_sweep = Some(Instant::now());
            sweep(&self.store).await?;
        }
        let shared = self.shared();
        let names = self.channel_names();
        let mut report = TickReport::default();
        for name in &names {
            if let Some(slot) = self.channels.get_mut(name) {
                report.add(step(&shared, ChannelFilter::Only(name), Some(slot)).await?);
            }
        }
        report.add(step(&shared, ChannelFilter::Except(&names), None).await?);
        Ok(report)
    }
}

impl TickReport {
    fn add(&mut self, other: TickReport) {
        self.claimed += other.claimed;
        self.delivered += other.delivered;
        self.retried += other.retried;
        self.failed += other.failed;
        self.expired += other.expired;
        self.ended += other.ended;
    }
}

/// Marks expired alerts (and drops their queued deliveries).
async fn sweep(store: &Store) -> Result<(), StoreError> {
    let expired = store.expire_alerts(nexus_store::now_ms()).await?;
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "alerts expired");
    }
    Ok(())
}

/// What a lane serves: one channel, or the deliveries on channels the worker lacks.
enum LaneKind {
    Channel(&'static str, ChannelSlot),
    Unconfigured(Vec<&'static str>),
}

/// A lane: claims and processes batches until shutdown; idle, it polls every
/// `idle_poll` (the unconfigured lane ten times less often).
async fn lane_loop(shared: Arc<Shared>, mut kind: LaneKind, shutdown: CancellationToken) {
    let idle = match &kind {
        LaneKind::Channel(..) => shared.config.idle_poll,
        LaneKind::Unconfigured(_) => shared.config.idle_poll * 10,
    };
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let result = match &mut kind {
            LaneKind::Channel(name, slot) => {
                step(&shared, ChannelFilter::Only(name), Some(slot)).await
            }
            LaneKind::Unconfigured(names) => {
                step(&shared, ChannelFilter::Except(names), None).await
            }
        };
        match result {
            Ok(report) if report.claimed > 0 => {
                tracing::debug!(?report, "alert deliveries processed");
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "alert delivery queue unavailable"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(idle) => {}
        }
    }
}

/// Claims one batch of `filter`'s deliveries, sends them through `slot` (or fails them
/// when there is no channel for them), and records every outcome in one transaction.
async fn step(
    shared: &Shared,
    filter: ChannelFilter<'_>,
    slot: Option<&mut ChannelSlot>,
) -> Result<TickReport, StoreError> {
    let now = nexus_store::now_ms();
    let lease = i64::try_from(shared.config.lease.as_millis()).unwrap_or(i64::MAX / 2);
    let size = slot
        .as_ref()
        .map_or(shared.config.batch, |s| s.claim_size(&shared.config));
    let batch = shared
        .store
        .claim_deliveries_on(filter, now, lease, size)
        .await?;
    let mut report = TickReport {
        claimed: batch.len(),
        ..TickReport::default()
    };
    if batch.is_empty() {
        return Ok(report);
    }
    let outcomes = match slot {
        Some(slot) => {
            let alerts = load_alerts(&shared.store, &batch).await?;
            run_lane(
                slot,
                batch,
                &alerts,
                &shared.config,
                shared.origin,
                shared.links.as_ref(),
            )
            .await
        }
        None => batch
            .into_iter()
            .map(|d| {
                let error = format!("channel '{}' is not configured", d.channel);
                Done::new(d.id, DeliveryOutcome::Failed { error })
            })
            .collect(),
    };
    let mut records = Vec::with_capacity(outcomes.len());
    for Done { id, outcome, gone } in outcomes {
        if let Some(recipient) = gone
            && shared.store.deactivate_subscription(&recipient).await?
        {
            report.ended += 1;
            tracing::info!(delivery = %id, subscription = %recipient, "push subscription gone; subscription ended");
        }
        match &outcome {
            DeliveryOutcome::Delivered => report.delivered += 1,
            DeliveryOutcome::Retry { .. } => report.retried += 1,
            DeliveryOutcome::Failed { .. } => report.failed += 1,
            DeliveryOutcome::Expired { .. } => report.expired += 1,
        }
        records.push((id, outcome));
    }
    shared
        .store
        .complete_deliveries(&records, nexus_store::now_ms())
        .await?;
    Ok(report)
}

/// The alerts of a batch, decoded once each; `None` for an alert that is gone or
/// cancelled (its deliveries are dropped).
async fn load_alerts(
    store: &Store,
    batch: &[DeliveryRecord],
) -> Result<HashMap<String, Option<Arc<Alert>>>, StoreError> {
    let mut alerts = HashMap::new();
    for d in batch {
        if alerts.contains_key(&d.alert_id) {
            continue;
        }
        let alert = match store.alert(&d.alert_id).await? {
            Some(rec) if rec.status != AlertStatus::Cancelled => {
                match serde_json::from_str::<Alert>(&rec.cap_json) {
                    Ok(a) => Some(Arc::new(a)),
                    Err(e) => {
                        tracing::error!(alert = %rec.id, error = %e, "stored alert JSON unreadable");
                        None
                    }
                }
            }
            _ => None,
        };
        alerts.insert(d.alert_id.clone(), alert);
    }
    Ok(alerts)
}

/// Sends one channel's share of a batch: each send waits for a rate-limit token, at most
/// `config.concurrency` are in flight.
async fn run_lane(
    slot: &mut ChannelSlot,
    deliveries: Vec<DeliveryRecord>,
    alerts: &HashMap<String, Option<Arc<Alert>>>,
    config: &WorkerConfig,
    origin: Instant,
    links: Option<&UnsubscribeLinks>,
) -> Vec<Done> {
    let mut out = Vec::with_capacity(deliveries.len());
    let mut in_flight = FuturesUnordered::new();
    let channel = slot.channel.clone();
    for d in deliveries {
        let now = nexus_store::now_ms();
        if d.expires_at.is_some_and(|e| e <= now) {
            out.push(Done::new(
                d.id,
                DeliveryOutcome::Expired {
                    reason: "alert expired".into(),
                },
            ));
            continue;
        }
        let Some(Some(alert)) = alerts.get(&d.alert_id).cloned() else {
            out.push(Done::new(
                d.id,
                DeliveryOutcome::Expired {
                    reason: "alert cancelled or gone".into(),
                },
            ));
            continue;
        };
        while in_flight.len() >= config.concurrency.max(1) {
            if let Some(done) = in_flight.next().await {
                out.push(done);
            }
        }
        loop {
            let elapsed = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
            match slot.bucket.take(elapsed) {
                Ok(()) => break,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
        let channel = channel.clone();
        let backoff = config.backoff;
        let timeout = config.send_timeout;
        let unsubscribe = links.map(|f| f(&d.recipient_id));
        in_flight.push(async move {
            let message = Outgoing {
                key: &d.id,
                address: &d.address,
                alert: &alert,
                alert_id: &d.alert_id,
                recipient_id: &d.recipient_id,
                unsubscribe_url: unsubscribe.as_deref(),
            };
            let result = match tokio::time::timeout(timeout, channel.send(message)).await {
                Ok(r) => r,
                Err(_) => Err(SendError::Transient("send timed out".into())),
            };
            let gone = matches!(result, Err(SendError::Gone(_)));
            let outcome = verdict(result, d.attempt, &backoff);
            if let DeliveryOutcome::Retry { error, .. } | DeliveryOutcome::Failed { error } =
                &outcome
            {
                tracing::info!(delivery = %d.id, channel = channel.name(), attempt = d.attempt, %error, "alert delivery attempt failed");
            }
            Done {
                id: d.id,
                outcome,
                gone: gone.then_some(d.recipient_id),
            }
        });
    }
    while let Some(done) = in_flight.next().await {
        out.push(done);
    }
    out
}

fn verdict(result: Result<(), SendError>, attempt: u32, backoff: &Backoff) -> DeliveryOutcome {
    match result {
        Ok(()) => DeliveryOutcome::Delivered,
        Err(SendError::Permanent(error)) => DeliveryOutcome::Failed { error },
        Err(SendError::Gone(error)) => DeliveryOutcome::Failed {
            error: format!("subscription gone: {error}"),
        },
        Err(SendError::Transient(error)) => match backoff.delay(attempt, rand::random::<f64>()) {
            Some(wait) => DeliveryOutcome::Retry {
                at: nexus_store::now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2),
                error,
            },
            None => DeliveryOutcome::Failed {
                error: format!("gave up after {attempt} attempts: {error}"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    impl Channel for Nowhere {
        fn name(&self) -> &'static str {
            "nowhere"
        }

        fn send<'a>(&'a self, _: Outgoing<'a>) -> crate::BoxFuture<'a, Result<(), SendError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn slot(per_sec: f64, burst: u32) -> ChannelSlot {
        let limit = RateLimit { per_sec, burst };
        ChannelSlot {
            channel: Arc::new(Nowhere),
            bucket: TokenBucket::new(per_sec, burst),
            limit,
        }
    }

    #[test]
    fn a_lane_claims_no_more_than_it_can_send_within_half_its_lease() {
        let config = WorkerConfig {
            lease: Duration::from_secs(10),
            batch: 200,
            ..WorkerConfig::default()
        };
        assert_eq!(slot(0.0, 1).claim_size(&config), 200, "unlimited");
        assert_eq!(slot(500.0, 500).claim_size(&config), 200);
        assert_eq!(slot(30.0, 30).claim_size(&config), 180);
        assert_eq!(slot(2.0, 2).claim_size(&config), 12);
        assert_eq!(slot(0.01, 1).claim_size(&config), 1);
    }
}
