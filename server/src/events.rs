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
use nexus_api::alert_targets::{ALERT_TARGETS_SYNC, AlertTargets, AlertTargetsSync};
use nexus_api::index_sync::{GEO_INDEX_SYNC, GeoIndexSync};
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

/// How far back, before this node rebuilt its geo index, the index consumer starts reading:
/// covers clock skew between the nodes' producers and this node (re-applying an event is
/// harmless).
const INDEX_SKEW_MARGIN_MS: i64 = 30_000;

/// What the real-time core's consumers feed.
pub struct Core {
    /// The gateway (incidents on the map channel).
    pub gateway: nexus_gateway::Gateway,
    /// This node's geo index.
    pub geo: nexus_api::geo_service::GeoService,
    /// This node's alert targeting index (subscription locations).
    pub targets: AlertTargets,
    /// When the geo index (and targeting index) rebuild from the store began (Unix ms).
    pub index_since: i64,
}

/// Starts the relay, the lag gauge and the real-time core's consumers on `tasks`: the
/// `realtime-core` group (once per cluster: map publications) and, on every node, the geo
/// index and alert targeting consumers (other nodes' crisis writes and alert subscriptions
/// into this node's indexes); returns the bus for
/// the other consumers (alerting).
pub async fn start(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
    core: Core,
) -> Result<Arc<dyn EventBus>> {
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
    // `incident.*` and `epidemic.detected` → the crisis map; `alert.*` → alerting is its own
    // consumer (`crate::alerting`).
    let map = Consumer::new(
        REALTIME_CORE,
        [Domain::Crisis, Domain::Healthcare].map(Topics::logical),
        Arc::new(RealtimeCore {
            gateway: core.gateway,
        }),
    );
    let mut consumers = vec![map];
    // On the in-process bus every write was taken by this node, which indexed it in the
    // request; across nodes each one applies the others' writes.
    if bus.reaches_other_nodes() {
        consumers.push(
            Consumer::new(
                GEO_INDEX_SYNC,
                [Topics::logical(Domain::Crisis)],
                Arc::new(GeoIndexSync::new(store.clone(), core.geo)),
            )
            .on_every_node(core.index_since - INDEX_SKEW_MARGIN_MS),
        );
        consumers.push(
            Consumer::new(
                ALERT_TARGETS_SYNC,
                [Topics::logical(Domain::Crisis)],
                Arc::new(AlertTargetsSync::new(store.clone(), core.targets)),
            )
            .on_every_node(core.index_since - INDEX_SKEW_MARGIN_MS),
        );
    }
    for consumer in consumers {
        let consumer = spawn_consumer(bus.clone(), consumer, shutdown.clone());
        tasks.spawn(async move {
            let _ = consumer.await;
        });
    }
    Ok(bus)
}

async fn bus(config: &Config, store: &Store) -> Result<Arc<dyn EventBus>> {
    let Some(brokers) = config.kafka.brokers.as_deref().filter(|b| !b.is_empty()) else {
        return Ok(Arc::new(
            InProcessBus::new(store.clone())
                .await
                .context("cannot start the in-process event bus")?,
        ));
    };
    kafka_bus(brokers, config, store)
}

#[cfg(feature = "kafka")]
fn kafka_bus(brokers: &str, config: &Config, store: &Store) -> Result<Arc<dyn EventBus>> {
    let mode = match config.kafka.content_mode {
        crate::config::ContentMode::Binary => nexus_kafka::ContentMode::Binary,
        crate::config::ContentMode::Structured => nexus_kafka::ContentMode::Structured,
    };
    let mut settings = nexus_kafka::KafkaSettings::new(brokers)
        .with_prefix(&config.kafka.topic_prefix)
        .with_mode(mode);
    // Consumer groups live in the same namespace as the topics, so that deployments (or
    // test runs) sharing a broker under different prefixes do not share groups.
    settings.group_prefix = config.kafka.topic_prefix.clone();
    Ok(Arc::new(
        nexus_kafka::KafkaBus::new(settings, store.clone())
            .context("cannot set up the Kafka event bus")?,
    ))
}

#[cfg(not(feature = "kafka"))]
fn kafka_bus(_brokers: &str, _config: &Config, _store: &Store) -> Result<Arc<dyn EventBus>> {
    anyhow::bail!("kafka.brokers is set but this nexus was built without the `kafka` feature")
}

/// The real-time core's consumer of domain events: incidents (`incident.*`) and outbreaks
/// (`epidemic.detected`) go to the gateway's `incidents` channel, located, so geo-filtered crisis-map subscribers get exactly
/// the ones inside their box. Delivery is at least once; the consumer remembers processed event
/// ids, so a redelivered event is not published twice.
struct RealtimeCore {
    gateway: nexus_gateway::Gateway,
}

/// The gateway channel of the live crisis map.
const INCIDENTS_CHANNEL: &str = "incidents";

/// The public map payload of an incident (`incident.*`) or outbreak (`epidemic.detected`)
/// event: its data without the reporter, plus the event type.
fn incident_publication(event: &CloudEvent) -> Option<serde_json::Value> {
    let epidemic = event.event_type == "epidemic.detected";
    if !epidemic && !event.event_type.starts_with("incident.") {
        return None;
    }
    let mut data = event.data.clone();
    let obj = data.as_object_mut()?;
    obj.remove("reporter_id");
    obj.insert("event".into(), event.event_type.clone().into());
    if epidemic {
        // Map clients tell outbreaks from incidents by `type`.
        obj.insert("type".into(), "epidemic.detected".into());
    }
    Some(data)
}

#[async_trait::async_trait]
impl Handler for RealtimeCore {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        tracing::debug!(r#type = %event.event_type, subject = event.key(), id = %event.id, "event received");
        if let Some(data) = incident_publication(event) {
            self.gateway
                .publish(INCIDENTS_CHANNEL, data)
                .await
                .map_err(|e| HandlerError::Transient(format!("gateway publish: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: serde_json::Value) -> CloudEvent {
        serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": "e1", "source": "/nexus/crisis", "type": kind,
            "subject": "i1", "data": data,
        }))
        .unwrap()
    }

    #[test]
    fn incidents_reach_the_map_without_their_reporter() {
        let e = event(
            "incident.reported",
            serde_json::json!({"id": "i1", "location": {"lat": 1.0, "lon": 2.0}, "reporter_id": "u9"}),
        );
        let p = incident_publication(&e).unwrap();
        assert_eq!(p["event"], "incident.reported");
        assert_eq!(p["location"]["lon"], 2.0);
        assert!(p.get("reporter_id").is_none());
        assert!(
            incident_publication(&event("appointment.created", serde_json::json!({}))).is_none()
        );
    }
}
