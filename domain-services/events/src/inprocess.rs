//! The in-process bus: the outbox table is the log.

use crate::bus::{Consumer, EventBus, Scope};
use crate::consumer::{Outcome, deliver};
use crate::envelope::CloudEvent;
use crate::error::EventError;
use nexus_store::{OutboxRow, Store};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Rows a consumer reads per query.
const READ_BATCH: i64 = 500;

/// The default bus: no broker, the outbox itself is the log.
///
/// "Publishing" raises a high-water mark (the highest published outbox `seq`) and wakes the
/// consumers; each consumer keeps a durable cursor (an outbox `seq`) in the store and reads
/// the rows between its cursor and the mark. Because the cursor advances in the same
/// transaction that records the handled event id, a consumer restarted after a crash resumes
/// where it stopped, and replay is a cursor move ([`Store::consumer_seek`]).
///
/// The log reaches every consumer of this process only; across nodes use Kafka.
pub struct InProcessBus {
    store: Store,
    published: watch::Sender<i64>,
}

impl InProcessBus {
    /// A bus over `store`'s outbox; rows the relay already marked sent are visible to
    /// consumers at once (replay after a restart).
    pub async fn new(store: Store) -> Result<InProcessBus, EventError> {
        let high = store.outbox_sent_high_water().await?;
        Ok(InProcessBus {
            store,
            published: watch::Sender::new(high),
        })
    }

    /// The highest published outbox `seq`.
    pub fn high_water(&self) -> i64 {
        *self.published.borrow()
    }
}

#[async_trait::async_trait]
impl EventBus for InProcessBus {
    fn name(&self) -> &'static str {
        "in-process"
    }

    fn reaches_other_nodes(&self) -> bool {
        false
    }

    async fn publish(&self, rows: &[OutboxRow]) -> Result<(), EventError> {
        if let Some(max) = rows.iter().map(|r| r.seq).max() {
            self.published.send_if_modified(|v| {
                let raise = max > *v;
                if raise {
                    *v = max;
                }
                raise
            });
        }
        Ok(())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), EventError> {
        Ok(())
    }

    async fn consume(
        &self,
        consumer: Consumer,
        shutdown: CancellationToken,
    ) -> Result<(), EventError> {
        let mut rx = self.published.subscribe();
        // A node-scope consumer keeps no cursor: it starts at the current mark (see
        // `Scope::Node` for why that is enough in one process).
        let durable = consumer.scope == Scope::Group;
        let mut cursor = if durable {
            self.store.consumer_position(&consumer.name).await?
        } else {
            *rx.borrow()
        };
        tracing::info!(consumer = %consumer.name, cursor, durable, "in-process consumer started");
        loop {
            let high = *rx.borrow_and_update();
            if cursor < high {
                let rows = self
                    .store
                    .outbox_range(cursor, high, &consumer.topics, READ_BATCH)
                    .await?;
                let full = rows.len() as i64 >= READ_BATCH;
                for row in &rows {
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    let event = CloudEvent::from_json(row.event.payload.as_bytes());
                    let outcome = deliver(
                        &self.store,
                        &consumer,
                        &row.event,
                        event,
                        durable.then_some(row.seq),
                        &shutdown,
                    )
                    .await?;
                    if outcome == Outcome::Interrupted {
                        return Ok(());
                    }
                    cursor = row.seq;
                }
                if !full && cursor < high {
                    // Rows of other topics up to `high`: move the cursor past them.
                    if durable {
                        self.store.consumer_seek(&consumer.name, high).await?;
                    }
                    cursor = high;
                }
                continue;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(()) },
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}
