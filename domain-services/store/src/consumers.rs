//! Event consumers' durable state: cursors over the outbox, processed event ids and dead
//! letters.
//!
//! The in-process event bus uses the outbox table as its log: a consumer's cursor is the
//! outbox `seq` of the last event it finished with. Every consumer (in-process or Kafka)
//! remembers the ids of the events it handled, so a redelivered event is recognised and
//! skipped, and records the events it gave up on as dead letters together with the error.

use crate::db::Store;
use crate::error::StoreError;
use crate::outbox::{NewEvent, OutboxRow};
use sqlx::Row;

/// An event a consumer gave up on, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Position in the dead-letter table.
    pub seq: i64,
    /// The consumer that failed to handle the event.
    pub consumer: String,
    /// The event as it was recorded in the outbox.
    pub event: NewEvent,
    /// The last error the consumer reported.
    pub error: String,
    /// How many times the consumer tried.
    pub attempts: i64,
    /// When it was dead-lettered, Unix ms.
    pub created_at: i64,
}

impl Store {
    /// The outbox `seq` of the last event `consumer` finished with (0 when it never ran).
    pub async fn consumer_position(&self, consumer: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT position FROM consumer_cursors WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => 0,
        })
    }

    /// Moves `consumer`'s cursor to `position` (forward or back: a replay).
    pub async fn consumer_seek(&self, consumer: &str, position: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        upsert_cursor(&mut tx, consumer, position, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Outbox rows with `after < seq <= up_to` on one of `topics`, oldest first, at most
    /// `limit`. This is the in-process bus's read of its log; it includes rows already sent.
    pub async fn outbox_range(
        &self,
        after: i64,
        up_to: i64,
        topics: &[String],
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..topics.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "SELECT seq, event_id, topic, event_key, event_type, payload, created_at FROM outbox \
             WHERE seq > $1 AND seq <= $2 AND topic IN ({}) ORDER BY seq LIMIT $3",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(after).bind(up_to).bind(limit);
        for t in topics {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(crate::outbox::row_to_outbox).collect()
    }

    /// The highest outbox `seq` already marked sent (0 when none): how far the relay got.
    pub async fn outbox_sent_high_water(&self) -> Result<i64, StoreError> {
        // Sent rows form a prefix of the outbox (the relay sends in seq order), so the
        // highest sent seq is the first pending seq minus one, or the last seq overall.
        let row = sqlx::query(
            "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM outbox WHERE sent_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Whether `consumer` already handled the event `event_id`.
    pub async fn consumer_is_processed(
        &self,
        consumer: &str,
        event_id: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM consumer_processed \
             WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Records that `consumer` handled `event_id` and, when given, advances its cursor to
    /// `position` — in one transaction. Returns false when the id was already recorded.
    pub async fn consumer_record(
        &self,
        consumer: &str,
        event_id: &str,
        position: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let fresh = insert_processed(&mut tx, consumer, event_id).await?;
        if let Some(p) = position {
            upsert_cursor(&mut tx, consumer, p, true).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    /// Records that `consumer` gave up on `event` after `attempts` tries with `error`: the
    /// event becomes a dead letter, counts as handled (a redelivery is skipped) and, when
    /// given, the cursor advances to `position` — in one transaction.
    pub async fn consumer_dead_letter(
        &self,
        consumer: &str,
        event: &NewEvent,
        error: &str,
        attempts: i64,
        position: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO dead_letters (consumer, event_id, topic, event_key, event_type, payload, \
             error, attempts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(consumer)
        .bind(&event.id)
        .bind(&event.topic)
        .bind(&event.key)
        .bind(&event.event_type)
        .bind(&event.payload)
        .bind(error)
        .bind(attempts)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?;
        insert_processed(&mut tx, consumer, &event.id).await?;
        if let Some(p) = position {
            upsert_cursor(&mut tx, consumer, p, true).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `consumer`'s dead letters, oldest first.
    pub async fn dead_letters(&self, consumer: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, consumer, event_id, topic, event_key, event_type, payload, error, \
             attempts, created_at FROM dead_letters WHERE consumer = $1 ORDER BY seq",
        )
        .bind(consumer)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    seq: r.try_get(0)?,
                    consumer: r.try_get(1)?,
                    event: NewEvent {
                        id: r.try_get(2)?,
                        topic: r.try_get(3)?,
                        key: r.try_get(4)?,
                        event_type: r.try_get(5)?,
                        payload: r.try_get(6)?,
                    },
                    error: r.try_get(7)?,
                    attempts: r.try_get(8)?,
                    created_at: r.try_get(9)?,
                })
            })
            .collect()
    }

    /// How many distinct events `consumer` has handled (dead letters included).
    pub async fn consumer_processed_count(&self, consumer: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM consumer_processed WHERE consumer = $1",
        )
        .bind(consumer)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Forgets processed ids older than `before` (Unix ms); returns how many were removed.
    /// Redeliveries older than the retention are no longer recognised, so keep it longer than
    /// any replay window (Kafka retention, outbox retention).
    pub async fn consumer_prune_processed(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM consumer_processed WHERE processed_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

async fn insert_processed(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    consumer: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO consumer_processed (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(crate::now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the cursor; with `forward_only` it never moves back (a late duplicate cannot rewind).
async fn upsert_cursor(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    consumer: &str,
    position: i64,
    forward_only: bool,
) -> Result<(), StoreError> {
    let sql = if forward_only {
        "INSERT INTO consumer_cursors (consumer, position, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, \
         updated_at = excluded.updated_at WHERE consumer_cursors.position < excluded.position"
    } else {
        "INSERT INTO consumer_cursors (consumer, position, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, \
         updated_at = excluded.updated_at"
    };
    sqlx::query(sql)
        .bind(consumer)
        .bind(position)
        .bind(crate::now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
