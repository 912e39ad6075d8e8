//! The outbox relay: publishes pending outbox rows to the bus in order and marks them sent.

use crate::bus::EventBus;
use crate::error::EventError;
use nexus_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Relay tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Rows per publish.
    pub batch: i64,
    /// How often to look for new rows when the outbox is drained (a [`Relay::waker`]
    /// notification wakes it earlier).
    pub idle_poll: Duration,
    /// First wait after a failed publish; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between publish attempts while the bus is down.
    pub max_backoff: Duration,
    /// How often the lag (pending count) is re-read from the store.
    pub lag_refresh: Duration,
    /// At shutdown, how long to keep draining the outbox and flushing the bus.
    pub drain_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 500,
            idle_poll: Duration::from_millis(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            lag_refresh: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters the relay keeps; read them for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayStats {
    pending: AtomicI64,
    published: AtomicU64,
    failures: AtomicU64,
}

impl RelayStats {
    /// Events in the outbox not yet published (the lag), as of the last refresh.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }
    /// Events published since start.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Failed publish attempts since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Publishes the outbox to a bus. Run one per node; with several nodes on one PostgreSQL
/// database each publishes the same rows (duplicates that consumers drop), so prefer one.
///
/// Order: rows are read by outbox `seq`, which follows commit order, and published batch by
/// batch; a batch is marked sent only after the bus acknowledged all of it, so a crash or an
/// outage between the two means republishing, never losing.
pub struct Relay {
    store: Store,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    stats: Arc<RelayStats>,
    wake: Arc<Notify>,
}

impl Relay {
    /// A relay from `store`'s outbox to `bus` with default tuning.
    pub fn new(store: Store, bus: Arc<dyn EventBus>) -> Relay {
        Relay::with_config(store, bus, RelayConfig::default())
    }

    /// A relay with explicit tuning.
    pub fn with_config(store: Store, bus: Arc<dyn EventBus>, config: RelayConfig) -> Relay {
        Relay {
            store,
            bus,
            config,
            stats: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The relay's counters (shared; they stay valid after [`Relay::run`] took the relay).
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Notify it after committing events to publish them without waiting for the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publishes one batch of pending rows; returns how many were published.
    pub async fn run_once(&self) -> Result<usize, EventError> {
        let rows = self.store.outbox_pending(self.config.batch).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        self.bus.publish(&rows).await?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        self.store
            .outbox_mark_sent(&seqs, nexus_store::now_ms())
            .await?;
        self.stats
            .published
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(rows.len())
    }

    /// Re-reads the lag from the store.
    pub async fn refresh_lag(&self) -> Result<i64, EventError> {
        let (pending, _) = self.store.outbox_lag().await?;
        self.stats.pending.store(pending, Ordering::Relaxed);
        Ok(pending)
    }

    /// Publishes until `shutdown`, retrying with backoff while the bus or store is down; then
    /// drains what is pending (bounded by `drain_timeout`) and flushes the bus.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.config.initial_backoff;
        let mut last_lag = tokio::time::Instant::now() - self.config.lag_refresh;
        loop {
            if last_lag.elapsed() >= self.config.lag_refresh {
                last_lag = tokio::time::Instant::now();
                if let Err(e) = self.refresh_lag().await {
                    tracing::warn!(error = %e, "cannot read outbox lag");
                }
            }
            let wait = match self.run_once().await {
                Ok(n) if n as i64 >= self.config.batch => {
                    backoff = self.config.initial_backoff;
                    continue;
                }
                Ok(_) => {
                    backoff = self.config.initial_backoff;
                    self.config.idle_poll
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(bus = self.bus.name(), error = %e, retry_in = ?backoff, "outbox relay: publish failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.drain().await;
    }

    async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                match self.run_once().await {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Err(e) = self.bus.flush(left).await {
            tracing::warn!(error = %e, "bus flush at shutdown failed");
        }
        let _ = self.refresh_lag().await;
        tracing::info!(
            drained,
            pending = self.stats.pending(),
            published = self.stats.published(),
            "outbox relay stopped"
        );
    }
}
