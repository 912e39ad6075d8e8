//! The transactional outbox and the audit log.

use crate::db::Store;
use crate::error::StoreError;
use sqlx::Row;

/// An event to record in the outbox together with a state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event id (the CloudEvents `id`); unique.
    pub id: String,
    /// Destination topic (`nexus.users`, …).
    pub topic: String,
    /// Partition key: the aggregate id, so an aggregate's events stay ordered.
    pub key: String,
    /// Event type (`user.registered`, …).
    pub event_type: String,
    /// The serialized event (a CloudEvents JSON document).
    pub payload: String,
}

impl NewEvent {
    /// An event with a fresh id.
    pub fn new(
        topic: impl Into<String>,
        key: impl Into<String>,
        event_type: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        NewEvent {
            id: uuid::Uuid::new_v4().to_string(),
            topic: topic.into(),
            key: key.into(),
            event_type: event_type.into(),
            payload: payload.into(),
        }
    }
}

/// A pending outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Position in the outbox; increasing in commit order per backend.
    pub seq: i64,
    /// The event.
    pub event: NewEvent,
    /// When it was written, Unix ms.
    pub created_at: i64,
}

/// Decodes `seq, event_id, topic, event_key, event_type, payload, created_at`.
pub(crate) fn row_to_outbox(r: &sqlx::any::AnyRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        seq: r.try_get(0)?,
        event: NewEvent {
            id: r.try_get(1)?,
            topic: r.try_get(2)?,
            key: r.try_get(3)?,
            event_type: r.try_get(4)?,
            payload: r.try_get(5)?,
        },
        created_at: r.try_get(6)?,
    })
}

/// Appends to the audit log inside a write transaction, so the entry commits with the change
/// it records (and costs no commit of its own). Call it before [`insert_events`].
pub(crate) async fn audit_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    actor: Option<&str>,
    action: &str,
    target: Option<&str>,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(crate::now_ms())
    .bind(actor.map(str::to_string))
    .bind(action)
    .bind(target.map(str::to_string))
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Arbitrary constant for PostgreSQL's advisory lock ordering outbox commits.
const OUTBOX_ORDER_LOCK: i64 = 0x006e_6578_6f62;

pub(crate) async fn insert_events(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // PostgreSQL hands out `seq` at insert time, not at commit: without this lock a
    // transaction could commit seq 7 while seq 6 is still open, and a reader of the log
    // (the in-process bus's cursors, the relay) would pass 6 by. Holding a transaction-scoped
    // lock from the first outbox insert to commit makes seq order equal commit order. SQLite
    // has one writer at a time and needs nothing. Callers insert events last, so the lock is
    // held only for the end of a transaction.
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(OUTBOX_ORDER_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    let now = crate::now_ms();
    for e in events {
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, event_key, event_type, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&e.id)
        .bind(&e.topic)
        .bind(&e.key)
        .bind(&e.event_type)
        .bind(&e.payload)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|err| StoreError::from_write(err, "duplicate event id"))?;
    }
    Ok(())
}

impl Store {
    /// Records events that accompany no other state change.
    pub async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The oldest unsent events, in outbox order.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, topic, event_key, event_type, payload, created_at FROM outbox \
             WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_outbox).collect()
    }

    /// Marks outbox rows as sent.
    pub async fn outbox_mark_sent(&self, seqs: &[i64], now: i64) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for seq in seqs {
            sqlx::query("UPDATE outbox SET sent_at = $1 WHERE seq = $2")
                .bind(now)
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Number of unsent events and the creation time of the oldest (Unix ms).
    pub async fn outbox_lag(&self) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT), MIN(created_at) FROM outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Every event recorded for an aggregate, oldest first (for tests and exports).
    pub async fn events_for(&self, key: &str) -> Result<Vec<NewEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, topic, event_key, event_type, payload FROM outbox \
             WHERE event_key = $1 ORDER BY seq",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NewEvent {
                    id: r.try_get(0)?,
                    topic: r.try_get(1)?,
                    key: r.try_get(2)?,
                    event_type: r.try_get(3)?,
                    payload: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Appends to the audit log. `detail` must not hold personal data beyond ids.
    pub async fn audit(
        &self,
        actor: Option<&str>,
        action: &str,
        target: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(crate::now_ms())
        .bind(actor.map(str::to_string))
        .bind(action)
        .bind(target.map(str::to_string))
        .bind(detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit entries about `target`, oldest first, as `(at, actor, action)`.
    pub async fn audit_for(
        &self,
        target: &str,
    ) -> Result<Vec<(i64, Option<String>, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT at, actor, action FROM audit_log WHERE target = $1 ORDER BY seq")
                .bind(target)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }
}
