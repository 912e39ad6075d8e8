//! The event backbone inside `nexus serve`: the outbox relay to the configured bus and the
//! real-time core's consumers.
//!
//! Bus: in-process by default; Kafka when `kafka.brokers` (`NEXUS_KAFKA_BROKERS`) is set and
//! the binary was built with the `kafka` feature (default on). Everything started here runs
//! on the server's background task tracker and stops on the shutdown token: the relay then
//! drains what is pending and flushes the bus.

use crate::config::Config;
use crate::metrics::Metrics;
use anyhow::{Context, Result};
use nexus_events::{
    CloudEvent, Consumer, Domain, EventBus, Handler, HandlerError, InProcessBus, Relay, Topics,
    spawn_consumer,
};
use nexus_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Consumer name (and Kafka group) of the real-time core.
pub const REALTIME_CORE: &str = "realtime-core";

/// Starts the relay, the lag gauge and the real-time core's consumer on `tasks`.
pub async fn start(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<()> {
    let bus = bus(config, store).await?;
    tracing::info!(bus = bus.name(), "event bus ready");
    let relay = Relay::new(store.clone(), bus.clone());
    let stats = relay.stats();
    tasks.spawn(relay.run(shutdown.clone()));
    {
        let shutdown = shutdown.clone();
        let gauge = metrics.outbox_pending.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => gauge.set(stats.pending()),
                    () = shutdown.cancelled() => break,
                }
            }
        });
    }
    // The real-time core's view of the domains. For now it records what it receives;
    // `incident.reported` → geo index and gateway, `alert.issued` → alerting and
    // `epidemic.detected` → crisis map are wired here as those components land.
    let core = Consumer::new(
        REALTIME_CORE,
        [Domain::Crisis, Domain::Healthcare].map(Topics::logical),
        Arc::new(RealtimeCore),
    );
    let consumer = spawn_consumer(bus, core, shutdown.clone());
    tasks.spawn(async move {
        let _ = consumer.await;
    });
    Ok(())
}

async fn bus(config: &Config, store: &Store) -> Result<Arc<dyn EventBus>> {
    let Some(brokers) = config.kafka.brokers.as_deref().filter(|b| !b.is_empty()) else {
        return Ok(Arc::new(
            InProcessBus::new(store.clone())
                .await
                .context("cannot start the in-process event bus")?,
        ));
    };
    kafka_bus(brokers, &config.kafka.topic_prefix, store)
}

#[cfg(feature = "kafka")]
fn kafka_bus(brokers: &str, prefix: &str, store: &Store) -> Result<Arc<dyn EventBus>> {
    let settings = nexus_kafka::KafkaSettings::new(brokers).with_prefix(prefix);
    Ok(Arc::new(
        nexus_kafka::KafkaBus::new(settings, store.clone())
            .context("cannot set up the Kafka event bus")?,
    ))
}

#[cfg(not(feature = "kafka"))]
fn kafka_bus(_brokers: &str, _prefix: &str, _store: &Store) -> Result<Arc<dyn EventBus>> {
    anyhow::bail!("kafka.brokers is set but this nexus was built without the `kafka` feature")
}

/// The real-time core's handler: records (logs) what it receives.
struct RealtimeCore;

#[async_trait::async_trait]
impl Handler for RealtimeCore {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        tracing::debug!(r#type = %event.event_type, subject = event.key(), id = %event.id, "event received");
        Ok(())
    }
}
