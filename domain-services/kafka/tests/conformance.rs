//! The bus conformance suite of `nexus-events`, on Kafka (the tansu test broker).

#![allow(clippy::unwrap_used)]

mod common;

use nexus_events::{EventBus, testing};
use nexus_kafka::ContentMode;
use std::sync::Arc;

macro_rules! on_kafka {
    ($name:ident, $scenario:path, $mode:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(brokers) = common::brokers() else {
                return;
            };
            let dir = tempfile::tempdir().unwrap();
            let store = nexus_store::testing::sqlite_store(dir.path()).await;
            let bus: Arc<dyn EventBus> = Arc::new(common::bus(
                &store,
                common::settings(&brokers).with_mode($mode),
            ));
            $scenario(store, bus).await;
        }
    };
}

on_kafka!(
    kafka_keeps_order_per_key,
    testing::ordering_per_key,
    ContentMode::Binary
);
on_kafka!(
    kafka_keeps_order_per_key_in_structured_mode,
    testing::ordering_per_key,
    ContentMode::Structured
);
on_kafka!(
    kafka_delivers_at_least_once_across_a_consumer_restart,
    testing::at_least_once_across_restart,
    ContentMode::Binary
);
on_kafka!(
    kafka_handles_a_redelivered_event_once,
    testing::idempotent_redelivery,
    ContentMode::Binary
);
on_kafka!(
    kafka_dead_letters_a_poison_event,
    testing::dead_letters_poison,
    ContentMode::Binary
);
on_kafka!(
    kafka_node_consumers_each_see_events_since_their_start,
    testing::every_node_sees_events_since,
    ContentMode::Binary
);
