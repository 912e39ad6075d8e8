//! The bus port: [`EventBus`] (publish and consume) and the [`Handler`] a consumer supplies.

use crate::envelope::CloudEvent;
use crate::error::{EventError, HandlerError};
use nexus_store::OutboxRow;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where events go after the outbox, and where consumers read them from.
///
/// Implementations: [`InProcessBus`](crate::InProcessBus) (the outbox is the log) and
/// `nexus_kafka::KafkaBus`. Both deliver at least once; [`Consumer`]s deduplicate by event id.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// A short name for logs and metrics (`in-process`, `kafka`).
    fn name(&self) -> &'static str;

    /// Whether events published here reach consumers in other processes (Kafka) or only
    /// this one (the in-process bus).
    fn reaches_other_nodes(&self) -> bool;

    /// Publishes outbox rows, in the given order, and returns once the bus holds them
    /// durably (Kafka: acknowledged by all in-sync replicas). On error nothing is assumed
    /// published: the relay retries the whole batch, so consumers may see duplicates.
    async fn publish(&self, rows: &[OutboxRow]) -> Result<(), EventError>;

    /// Waits up to `timeout` for anything buffered to reach the bus (used at shutdown).
    async fn flush(&self, timeout: Duration) -> Result<(), EventError>;

    /// Runs `consumer` until `shutdown` is cancelled: reads its topics, skips events it has
    /// already handled, calls its handler, retries failures and dead-letters what still
    /// fails, and records progress durably after each handled event.
    async fn consume(
        &self,
        consumer: Consumer,
        shutdown: CancellationToken,
    ) -> Result<(), EventError>;
}

/// What a consumer does with an event.
///
/// Handlers see an event at least once; the bus already skips ids the consumer recorded as
/// handled, but an event whose handling completed right before a crash (before its id was
/// recorded) is handed over again, so handlers should be idempotent in their own effects too
/// where that matters.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one event. An error is retried per the consumer's [`RetryPolicy`] and then
    /// dead-lettered with its message.
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError>;
}

/// How often and how patiently a consumer retries a failing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the event is dead-lettered.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles per attempt.
    pub initial_backoff: Duration,
    /// Upper bound of the wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Which nodes of a cluster handle an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Scope {
    /// One member of the consumer group, on whichever node, handles each event, once: the
    /// group's progress and handled ids are durable in the store (and, on Kafka, in the
    /// group's committed offsets). For effects that must happen once per cluster:
    /// publishing to the gateway, enqueuing deliveries.
    #[default]
    Group,
    /// Every node handles every event published from `since_ms` (Unix milliseconds) on, and
    /// records nothing: no cursor, no handled ids, no committed offsets. For node-local state
    /// that the node rebuilds from the store when it starts (the geo index): pass the time the
    /// rebuild began, less a margin for clock skew between nodes, and make the handler
    /// idempotent — it may see an event whose effect the rebuild already contains.
    ///
    /// On Kafka the consumer reads every partition of its topics from the first offset at or
    /// after `since_ms`, outside any consumer group. The in-process bus reaches this process
    /// only, so it starts at its current high-water mark: what was published before came from
    /// this node, whose own writes the rebuild or the writing request already applied.
    /// Failures are retried in place and then dead-lettered in the store, like a group's.
    Node {
        /// Handle events published at or after this instant.
        since_ms: i64,
    },
}

/// A named consumer: its name keys its cursor, its processed ids and its dead letters (and
/// is its Kafka consumer group); its [`Scope`] says whether the cluster handles an event
/// once or every node does.
#[derive(Clone)]
pub struct Consumer {
    /// Stable name (`realtime-core`, `alerting`, …): progress is kept under it.
    pub name: String,
    /// Logical topics to read (`nexus.crisis`, …; see [`Topics`](crate::Topics)).
    pub topics: Vec<String>,
    /// Failure handling.
    pub retry: RetryPolicy,
    /// Once per cluster, or on every node.
    pub scope: Scope,
    /// The handler.
    pub handler: Arc<dyn Handler>,
}

impl Consumer {
    /// A consumer of `topics` with the default retry policy.
    pub fn new(
        name: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        handler: Arc<dyn Handler>,
    ) -> Consumer {
        Consumer {
            name: name.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            retry: RetryPolicy::default(),
            scope: Scope::Group,
            handler,
        }
    }

    /// The same consumer running on every node from `since_ms` on ([`Scope::Node`]).
    pub fn on_every_node(mut self, since_ms: i64) -> Consumer {
        self.scope = Scope::Node { since_ms };
        self
    }

    /// The same consumer with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Consumer {
        self.retry = retry;
        self
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .field("retry", &self.retry)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Runs `consumer` on `bus` in a task, restarting it with a pause if it stops with an error
/// before `shutdown` (a store or broker outage must not end consumption for good).
pub fn spawn_consumer(
    bus: Arc<dyn EventBus>,
    consumer: Consumer,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match bus.consume(consumer.clone(), shutdown.clone()).await {
                Ok(()) if shutdown.is_cancelled() => return,
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(consumer = %consumer.name, error = %e, "consumer stopped; restarting");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(500));
        assert_eq!(p.backoff(40), Duration::from_millis(500));
    }
}
