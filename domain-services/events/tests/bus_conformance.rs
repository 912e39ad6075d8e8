//! The bus conformance suite on the in-process bus, over SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use nexus_events::testing;
use nexus_events::{EventBus, InProcessBus};
use nexus_store::Store;
use nexus_store::testing::{fresh_postgres_store, sqlite_store};
use std::sync::Arc;

async fn bus(store: &Store) -> Arc<dyn EventBus> {
    Arc::new(InProcessBus::new(store.clone()).await.unwrap())
}

macro_rules! on_every_backend {
    ($name:ident, $scenario:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let sqlite = sqlite_store(dir.path()).await;
            $scenario(sqlite.clone(), bus(&sqlite).await).await;
            if let Some(pg) = fresh_postgres_store().await {
                $scenario(pg.clone(), bus(&pg).await).await;
            }
        }
    };
}

on_every_backend!(in_process_keeps_order_per_key, testing::ordering_per_key);
on_every_backend!(
    in_process_delivers_at_least_once_across_a_consumer_restart,
    testing::at_least_once_across_restart
);
on_every_backend!(
    in_process_handles_a_redelivered_event_once,
    testing::idempotent_redelivery
);
on_every_backend!(
    in_process_dead_letters_a_poison_event,
    testing::dead_letters_poison
);
on_every_backend!(
    in_process_node_consumers_each_see_events_since_their_start,
    testing::every_node_sees_events_since
);
