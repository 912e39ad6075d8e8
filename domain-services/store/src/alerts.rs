//! CAP alerting: issued alerts and their lifecycle, alert subscriptions, and the durable
//! per-recipient delivery queue.
//!
//! # Alerts
//!
//! An [`AlertRecord`] keeps the CAP document as issued (XML and JSON), the CAP
//! identifier/sender/sent triple (unique; `sent_at` is the instant, so `-00:00` and `+02:00`
//! spellings of the same moment collide), and the lifecycle [`AlertStatus`]. Issuing an
//! Update or a Cancel ([`Store::issue_alert`]) marks the alerts it references `superseded` or
//! `cancelled` in the same transaction, with its CloudEvent. An alert that needs a second
//! authority's approval is stored `pending` and does all that only when
//! [approved](Store::approve_alert).
//!
//! # Delivery queue
//!
//! One row per (alert, recipient, channel) — the row id is the delivery's idempotency key,
//! and the unique triple makes enqueuing twice a no-op. The alerting consumer enqueues
//! them ([`Store::enqueue_deliveries`]) when it handles the alert's event. A worker
//! [claims](Store::claim_deliveries) due rows (they become [`DeliveryState::Sending`] with a
//! lease), sends, and [completes](Store::complete_deliveries) them (a batch per transaction). A worker that dies while
//! sending leaves rows whose lease runs out; they are claimed again, and the idempotency key
//! the message carries lets the receiving side drop the duplicate. A Cancel expires the
//! queued deliveries of what it cancels; deliveries past their alert's `expires` are never
//! sent.

use crate::db::{Backend, Store};
use crate::error::StoreError;
use crate::outbox::{NewEvent, insert_events};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::fmt;

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertStatus {
    /// Stored, waiting for a second alert authority's approval; not in force yet.
    Pending,
    /// Issued and in force.
    Active,
    /// Replaced by an Update that references it.
    Superseded,
    /// Withdrawn by a Cancel that references it.
    Cancelled,
    /// Past its `expires`.
    Expired,
}

impl AlertStatus {
    /// The stored (and API) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Pending => "pending",
            AlertStatus::Active => "active",
            AlertStatus::Superseded => "superseded",
            AlertStatus::Cancelled => "cancelled",
            AlertStatus::Expired => "expired",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => AlertStatus::Pending,
            "active" => AlertStatus::Active,
            "superseded" => AlertStatus::Superseded,
            "cancelled" => AlertStatus::Cancelled,
            "expired" => AlertStatus::Expired,
            _ => return None,
        })
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bounding box in degrees: `[min_lon, min_lat, max_lon, max_lat]`.
pub type BBox = [f64; 4];

/// A row of `alerts`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Server id (URL-safe, time-ordered).
    pub id: String,
    /// CAP `identifier`.
    pub identifier: String,
    /// CAP `sender`.
    pub sender: String,
    /// CAP `sent`, as written.
    pub sent: String,
    /// CAP `sent` as an instant, Unix ms.
    pub sent_at: i64,
    /// CAP `status` (`Actual`, `Exercise`, `System`, `Test`, `Draft`).
    pub cap_status: String,
    /// CAP `msgType` (`Alert`, `Update`, `Cancel`, …).
    pub msg_type: String,
    /// Lifecycle state.
    pub status: AlertStatus,
    /// The latest `expires` of its infos, Unix ms.
    pub expires_at: Option<i64>,
    /// Bounds of all its areas.
    pub bbox: Option<BBox>,
    /// The CAP 1.2 XML.
    pub cap_xml: String,
    /// The JSON form (`docs/cap-json.md`), as text.
    pub cap_json: String,
    /// The alert that superseded or cancelled this one.
    pub superseded_by: Option<String>,
    /// The issuing user.
    pub created_by: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

const ALERT_COLUMNS: &str = "id, identifier, sender, sent, sent_at, cap_status, msg_type, status, \
    expires_at, min_lon, min_lat, max_lon, max_lat, cap_xml, cap_json, superseded_by, created_by, \
    created_at, updated_at";

impl AlertRecord {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let status: String = row.try_get("status")?;
        let bbox = match (
            row.try_get::<Option<f64>, _>("min_lon")?,
            row.try_get::<Option<f64>, _>("min_lat")?,
            row.try_get::<Option<f64>, _>("max_lon")?,
            row.try_get::<Option<f64>, _>("max_lat")?,
        ) {
            (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
            _ => None,
        };
        Ok(AlertRecord {
            id: row.try_get("id")?,
            identifier: row.try_get("identifier")?,
            sender: row.try_get("sender")?,
            sent: row.try_get("sent")?,
            sent_at: row.try_get("sent_at")?,
            cap_status: row.try_get("cap_status")?,
            msg_type: row.try_get("msg_type")?,
            status: AlertStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("alerts.status '{status}'")))?,
            expires_at: row.try_get("expires_at")?,
            bbox,
            cap_xml: row.try_get("cap_xml")?,
            cap_json: row.try_get("cap_json")?,
            superseded_by: row.try_get("superseded_by")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Which alerts [`Store::alerts_page`] returns, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// CAP identifier equals.
    pub identifier: Option<String>,
    /// CAP sender equals.
    pub sender: Option<String>,
    /// Lifecycle state equals.
    pub status: Option<AlertStatus>,
    /// CAP status equals (`Actual` for the public feed).
    pub cap_status: Option<String>,
    /// Only alerts not expired at this instant (Unix ms).
    pub unexpired_at: Option<i64>,
    /// Only ids less than this one (the cursor: the last id of the previous page).
    pub before_id: Option<String>,
    /// Most rows.
    pub limit: i64,
}

/// A delivery's state. `Sending` carries the attempt in progress (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Queued,
    /// A worker is sending it.
    Sending {
        /// The attempt under way, from 1.
        attempt: u32,
    },
    /// The channel accepted it.
    Delivered,
    /// Given up (permanent error, or attempts exhausted).
    Failed,
    /// Not sent: the alert expired or was cancelled first.
    Expired,
}

impl DeliveryState {
    /// The stored (and API) name of the state, without the attempt.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sending { .. } => "sending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Expired => "expired",
        }
    }

    /// Reads a stored state; `attempt` is the row's attempt counter.
    pub fn parse(name: &str, attempt: u32) -> Option<Self> {
        Some(match name {
            "queued" => DeliveryState::Queued,
            "sending" => DeliveryState::Sending { attempt },
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            "expired" => DeliveryState::Expired,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to the delivery.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::Failed | DeliveryState::Expired
        )
    }
}

/// A delivery to enqueue with an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Who receives it (a subscription id).
    pub recipient_id: String,
    /// `email`, `sms`, `push`, …
    pub channel: String,
    /// Where: an e-mail address, a phone number, a push subscription (JSON).
    pub address: String,
}

/// A row of `alert_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Delivery id: the idempotency key every message carries.
    pub id: String,
    /// The alert.
    pub alert_id: String,
    /// The recipient (subscription id).
    pub recipient_id: String,
    /// The channel.
    pub channel: String,
    /// The address on that channel.
    pub address: String,
    /// State.
    pub state: DeliveryState,
    /// Attempts started so far.
    pub attempt: u32,
    /// Earliest time of the next attempt, Unix ms.
    pub next_attempt_at: i64,
    /// Not to be sent after this, Unix ms.
    pub expires_at: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, alert_id, recipient_id, channel, address, state, attempt, \
    next_attempt_at, expires_at, last_error, updated_at";

impl DeliveryRecord {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let state: String = row.try_get("state")?;
        let attempt = u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(u32::MAX);
        Ok(DeliveryRecord {
            id: row.try_get("id")?,
            alert_id: row.try_get("alert_id")?,
            recipient_id: row.try_get("recipient_id")?,
            channel: row.try_get("channel")?,
            address: row.try_get("address")?,
            state: DeliveryState::parse(&state, attempt)
                .ok_or_else(|| StoreError::Corrupt(format!("alert_deliveries.state '{state}'")))?,
            attempt,
            next_attempt_at: row.try_get("next_attempt_at")?,
            expires_at: row.try_get("expires_at")?,
            last_error: row.try_get("last_error")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// How an attempt ended, for [`Store::complete_delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Accepted by the channel.
    Delivered,
    /// Failed for now; try again at `at` (Unix ms).
    Retry {
        /// Next attempt, Unix ms.
        at: i64,
        /// Why this attempt failed.
        error: String,
    },
    /// Failed for good.
    Failed {
        /// Why.
        error: String,
    },
    /// Dropped unsent (expired or cancelled alert).
    Expired {
        /// Why.
        reason: String,
    },
}

/// Which channels' deliveries a claim takes ([`Store::claim_deliveries_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFilter<'a> {
    /// Every channel.
    Any,
    /// This channel only.
    Only(&'a str),
    /// Every channel but these (the ones no lane of the worker serves).
    Except(&'a [&'a str]),
}

/// A row of `alert_subscriptions`: someone to alert at a place, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRecord {
    /// Subscription id (the recipient id of its deliveries).
    pub id: String,
    /// The user who registered it, if any.
    pub user_id: Option<String>,
    /// Latitude of the registered location.
    pub lat: f64,
    /// Longitude of the registered location.
    pub lon: f64,
    /// Preferred language (BCP 47), if any.
    pub language: Option<String>,
    /// Least CAP severity to be alerted for (`Extreme` … `Minor`), if any.
    pub min_severity: Option<String>,
    /// E-mail address, for the e-mail channel.
    pub email: Option<String>,
    /// Phone number (E.164), for the SMS channel.
    pub phone: Option<String>,
    /// Web Push subscription (JSON text), for the push channel.
    pub push: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// For a subscription owned by a user: whether it is also delivered on that user's
    /// personal gateway channel (`user#<id>`).
    pub websocket: bool,
    /// Where the subscriber's device last said it was, if it did (read only: written by
    /// [`Store::set_device_location`], never by the inserts).
    pub device: Option<DeviceLocation>,
}

/// A device's last reported position: one per subscription, overwritten by each report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceLocation {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// When it was reported, Unix ms.
    pub at: i64,
}

/// Where an active subscription is: what the targeting index is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionPoint {
    /// Subscription id.
    pub id: String,
    /// Latitude of the registered location.
    pub lat: f64,
    /// Longitude of the registered location.
    pub lon: f64,
    /// The device's last reported location, if any (of any age).
    pub device: Option<DeviceLocation>,
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, user_id, lat, lon, language, min_severity, email, phone, push, created_at, websocket";
/// What is read back: the written columns and the device's last location.
const SUBSCRIPTION_READ: &str = "id, user_id, lat, lon, language, min_severity, email, phone, \
    push, created_at, websocket, device_lat, device_lon, device_at";

fn device_of(row: &AnyRow) -> Result<Option<DeviceLocation>, StoreError> {
    let lat: Option<f64> = row.try_get("device_lat")?;
    let lon: Option<f64> = row.try_get("device_lon")?;
    let at: Option<i64> = row.try_get("device_at")?;
    Ok(match (lat, lon, at) {
        (Some(lat), Some(lon), Some(at)) => Some(DeviceLocation { lat, lon, at }),
        _ => None,
    })
}

impl SubscriptionRecord {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(SubscriptionRecord {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
            language: row.try_get("language")?,
            min_severity: row.try_get("min_severity")?,
            email: row.try_get("email")?,
            phone: row.try_get("phone")?,
            push: row.try_get("push")?,
            created_at: row.try_get("created_at")?,
            websocket: row.try_get::<i64, _>("websocket")? != 0,
            device: device_of(row)?,
        })
    }
}

/// Deliveries per INSERT when enqueuing: they travel as one JSON array parameter, so the
/// statement and its parameter count stay the same whatever the batch.
const INSERT_BATCH: usize = 20_000;

/// Where a batch of deliveries goes: the alert, the instant they are queued, when they
/// expire, and whether the alert is new in this transaction (no rows of it can exist).
struct Batch<'a> {
    alert_id: &'a str,
    now: i64,
    expires_at: Option<i64>,
    fresh: bool,
}

/// Inserts queued deliveries: one `INSERT … SELECT` per [`INSERT_BATCH`] rows, reading the
/// rows from a JSON array parameter (`json_each` on SQLite, `json_to_recordset` on
/// PostgreSQL) — the portable equivalent of `UNNEST` through sqlx's `Any` driver, which binds
/// no arrays. A delivery listed twice is queued once; for an alert that is not
/// [`fresh`](Batch::fresh), (alert, recipient, channel) triples that exist are skipped
/// (`ON CONFLICT DO NOTHING`), which makes the consumer's enqueue idempotent. Returns the rows
/// added.
async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    batch: Batch<'_>,
    deliveries: &[NewDelivery],
) -> Result<u64, StoreError> {
    const COLUMNS: &str = "INSERT INTO alert_deliveries (id, alert_id, recipient_id, channel, \
        address, state, next_attempt_at, expires_at, created_at, updated_at) ";
    let select = match backend {
        Backend::Sqlite => {
            "SELECT json_extract(value, '$.i'), CAST($1 AS TEXT), json_extract(value, '$.r'), \
             json_extract(value, '$.c'), json_extract(value, '$.a'), 'queued', \
             CAST($2 AS BIGINT), CAST($3 AS BIGINT), CAST($2 AS BIGINT), CAST($2 AS BIGINT) \
             FROM json_each($4) WHERE true"
        }
        Backend::Postgres => {
            "SELECT d.i, CAST($1 AS TEXT), d.r, d.c, d.a, 'queued', CAST($2 AS BIGINT), \
             CAST($3 AS BIGINT), CAST($2 AS BIGINT), CAST($2 AS BIGINT) \
             FROM json_to_recordset(CAST($4 AS JSON)) AS d(i TEXT, r TEXT, c TEXT, a TEXT)"
        }
    };
    // Repeats inside `deliveries` are dropped here. When the alert is new in this
    // transaction nothing else can collide, which spares PostgreSQL the speculative
    // insertion of `ON CONFLICT`; the unique index still guarantees one row per (alert,
    // recipient, channel). (`WHERE true` keeps SQLite's parser from reading `ON` as a join
    // constraint of `json_each`.)
    let mut seen = std::collections::HashSet::with_capacity(deliveries.len());
    let deliveries: Vec<&NewDelivery> = deliveries
        .iter()
        .filter(|d| seen.insert((d.recipient_id.as_str(), d.channel.as_str())))
        .collect();
    let conflict = if batch.fresh {
        ""
    } else {
        " ON CONFLICT (alert_id, recipient_id, channel) DO NOTHING"
    };
    let sql = format!("{COLUMNS}{select}{conflict}");
    #[derive(serde::Serialize)]
    struct Row<'a> {
        i: String,
        r: &'a str,
        c: &'a str,
        a: &'a str,
    }
    let mut added = 0;
    for chunk in deliveries.chunks(INSERT_BATCH) {
        let rows: Vec<Row<'_>> = chunk
            .iter()
            .map(|d| Row {
                i: uuid::Uuid::now_v7().simple().to_string(),
                r: &d.recipient_id,
                c: &d.channel,
                a: &d.address,
            })
            .collect();
        let json = serde_json::to_string(&rows)
            .map_err(|e| StoreError::Corrupt(format!("delivery batch as JSON: {e}")))?;
        added += sqlx::query(&sql)
            .bind(batch.alert_id)
            .bind(batch.now)
            .bind(batch.expires_at)
            .bind(json)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(added)
}

impl Store {
    /// Stores a new alert with its events and deliveries, in one transaction.
    ///
    /// `supersedes` are ids of the alerts it references: they become `cancelled` when the
    /// new alert is a `Cancel` (and their queued deliveries `expired`), `superseded`
    /// otherwise. [`StoreError::Conflict`] when the identifier/sender/sent triple exists.
    pub async fn issue_alert(
        &self,
        alert: &AlertRecord,
        supersedes: &[String],
        deliveries: &[NewDelivery],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let [min_lon, min_lat, max_lon, max_lat] = match alert.bbox {
            Some(b) => b.map(Some),
            None => [None; 4],
        };
        crate::db::nullable_floats(&format!(
            "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ))
        .bind(&alert.id)
        .bind(&alert.identifier)
        .bind(&alert.sender)
        .bind(&alert.sent)
        .bind(alert.sent_at)
        .bind(&alert.cap_status)
        .bind(&alert.msg_type)
        .bind(alert.status.as_str())
        .bind(alert.expires_at)
        .bind(min_lon)
        .bind(min_lat)
        .bind(max_lon)
        .bind(max_lat)
        .bind(&alert.cap_xml)
        .bind(&alert.cap_json)
        .bind(alert.superseded_by.clone())
        .bind(alert.created_by.clone())
        .bind(alert.created_at)
        .bind(alert.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            StoreError::from_write(e, "an alert with this identifier, sender and sent exists")
        })?;
        supersede(
            &mut tx,
            &alert.id,
            alert.msg_type == "Cancel",
            supersedes,
            alert.created_at,
        )
        .await?;
        insert_deliveries(
            &mut tx,
            self.backend(),
            Batch {
                alert_id: &alert.id,
                now: alert.created_at,
                expires_at: alert.expires_at,
                fresh: true,
            },
            deliveries,
        )
        .await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Approves a `pending` alert: it becomes `active` (recording `approver` and `now`),
    /// supersedes or cancels what it references (`supersedes`, as in [`Store::issue_alert`])
    /// and its `events` are written, in one transaction. `None` (and no change) when the
    /// alert is not pending (unknown, or approved already).
    pub async fn approve_alert(
        &self,
        id: &str,
        approver: &str,
        supersedes: &[String],
        events: &[NewEvent],
        now: i64,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 AND status = 'pending'{}",
            self.lock_clause()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut rec = AlertRecord::from_row(&row)?;
        sqlx::query(
            "UPDATE alerts SET status = 'active', approved_by = $1, approved_at = $2, \
             updated_at = $2 WHERE id = $3",
        )
        .bind(approver)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        supersede(&mut tx, id, rec.msg_type == "Cancel", supersedes, now).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        rec.status = AlertStatus::Active;
        rec.updated_at = now;
        Ok(Some(rec))
    }

    /// Who approved an alert, and when (Unix ms); `None` when nobody has.
    pub async fn alert_approval(&self, id: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT approved_by, approved_at FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => match (
                r.try_get::<Option<String>, _>(0)?,
                r.try_get::<Option<i64>, _>(1)?,
            ) {
                (Some(by), Some(at)) => Some((by, at)),
                _ => None,
            },
            None => None,
        })
    }

    /// Enqueues deliveries of an `active` alert — the alerting consumer's step after an
    /// `alert.issued` / `alert.updated` / `alert.cancelled` event. Idempotent: a delivery
    /// already queued for the same (alert, recipient, channel) is left as it is, so a
    /// redelivered event adds nothing. An alert that is no longer active (cancelled,
    /// superseded, expired meanwhile) gets nothing. Returns the rows added.
    pub async fn enqueue_deliveries(
        &self,
        alert_id: &str,
        deliveries: &[NewDelivery],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT status, expires_at FROM alerts WHERE id = $1{}",
            self.lock_clause()
        ))
        .bind(alert_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(0);
        };
        let status: String = row.try_get(0)?;
        let expires_at: Option<i64> = row.try_get(1)?;
        if status != AlertStatus::Active.as_str() || expires_at.is_some_and(|e| e <= now) {
            return Ok(0);
        }
        let added = insert_deliveries(
            &mut tx,
            self.backend(),
            Batch {
                alert_id,
                now,
                expires_at,
                fresh: false,
            },
            deliveries,
        )
        .await?;
        tx.commit().await?;
        Ok(added)
    }

    /// ` FOR UPDATE` on PostgreSQL (SQLite's write transactions are exclusive already).
    fn lock_clause(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// The alert with this server id.
    pub async fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(AlertRecord::from_row)
            .transpose()
    }

    /// The alert with this CAP identifier, sender and sent instant (Unix ms).
    pub async fn alert_by_triple(
        &self,
        identifier: &str,
        sender: &str,
        sent_at: i64,
    ) -> Result<Option<AlertRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE identifier = $1 AND sender = $2 \
             AND sent_at = $3"
        ))
        .bind(identifier)
        .bind(sender)
        .bind(sent_at)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(AlertRecord::from_row)
        .transpose()
    }

    /// Alerts matching `filter`, newest (highest id) first.
    pub async fn alerts_page(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1");
        let mut texts: Vec<String> = Vec::new();
        let mut push = |sql: &mut String, column: &str, value: String| {
            texts.push(value);
            sql.push_str(&format!(" AND {column} = ${}", texts.len()));
        };
        if let Some(v) = &filter.identifier {
            push(&mut sql, "identifier", v.clone());
        }
        if let Some(v) = &filter.sender {
            push(&mut sql, "sender", v.clone());
        }
        if let Some(v) = filter.status {
            push(&mut sql, "status", v.as_str().to_string());
        }
        if let Some(v) = &filter.cap_status {
            push(&mut sql, "cap_status", v.clone());
        }
        if let Some(v) = &filter.before_id {
            texts.push(v.clone());
            sql.push_str(&format!(" AND id < ${}", texts.len()));
        }
        let mut n = texts.len();
        if filter.unexpired_at.is_some() {
            n += 1;
            sql.push_str(&format!(" AND (expires_at IS NULL OR expires_at > ${n})"));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql);
        for t in texts {
            q = q.bind(t);
        }
        if let Some(at) = filter.unexpired_at {
            q = q.bind(at);
        }
        q.bind(filter.limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(AlertRecord::from_row)
            .collect()
    }

    /// Marks active alerts whose `expires_at` is at or before `now` as expired, and expires
    /// their still-queued deliveries; returns the alerts' ids.
    pub async fn expire_alerts(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM alerts WHERE status = 'active' AND expires_at IS NOT NULL \
             AND expires_at <= $1",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
        for id in &ids {
            sqlx::query("UPDATE alerts SET status = 'expired', updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE alert_deliveries SET state = 'expired', last_error = 'alert expired', \
             updated_at = $1 WHERE state = 'queued' AND expires_at IS NOT NULL \
             AND expires_at <= $1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Claims up to `limit` due deliveries for one worker: queued rows whose
    /// `next_attempt_at` has come, and sending rows whose lease ran out (their worker died).
    /// They become `sending`, their attempt counter goes up by one and they are leased
    /// until `now + lease_ms`. On PostgreSQL concurrent workers skip each other's rows.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.claim_deliveries_on(ChannelFilter::Any, now, lease_ms, limit)
            .await
    }

    /// [`Store::claim_deliveries`] restricted to the channels `filter` selects: a worker
    /// runs one claim loop per channel, so that a slow or rate-limited channel (SMS) never
    /// holds back the others.
    pub async fn claim_deliveries_on(
        &self,
        filter: ChannelFilter<'_>,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let (channel_sql, channels): (String, Vec<&str>) = match filter {
            ChannelFilter::Any => (String::new(), Vec::new()),
            ChannelFilter::Only(c) => (" AND channel = $3".into(), vec![c]),
            ChannelFilter::Except([]) => (String::new(), Vec::new()),
            ChannelFilter::Except(cs) => (
                format!(
                    " AND channel NOT IN ({})",
                    (0..cs.len())
                        .map(|i| format!("${}", i + 3))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                cs.to_vec(),
            ),
        };
        let due = format!(
            "((state = 'queued' AND next_attempt_at <= $1) \
             OR (state = 'sending' AND lease_until <= $1)){channel_sql}"
        );
        // Idle lanes poll several times a second: look without the write lock first (on
        // SQLite a write transaction locks out every other writer while it lasts).
        let probe = format!("SELECT id FROM alert_deliveries WHERE {due} LIMIT $2");
        let mut q = sqlx::query(&probe).bind(now).bind(1_i64);
        for c in &channels {
            q = q.bind(*c);
        }
        if q.fetch_optional(&self.pool).await?.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT id FROM alert_deliveries WHERE {due} ORDER BY next_attempt_at, id \
             LIMIT $2{lock}"
        );
        let mut q = sqlx::query(&sql).bind(now).bind(limit);
        for c in channels {
            q = q.bind(c);
        }
        let ids: Vec<String> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let json = serde_json::to_string(&ids)
            .map_err(|e| StoreError::Corrupt(format!("ids as JSON: {e}")))?;
        let list = self.json_id_list("$3");
        sqlx::query(&format!(
            "UPDATE alert_deliveries SET state = 'sending', attempt = attempt + 1, \
             lease_until = $1, updated_at = $2 WHERE id IN ({list})"
        ))
        .bind(now + lease_ms)
        .bind(now)
        .bind(&json)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE id IN ({}) \
             ORDER BY next_attempt_at, id",
            self.json_id_list("$1")
        ))
        .bind(&json)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(DeliveryRecord::from_row)
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The rows of a JSON array of text parameter `param`, for `id IN (…)`.
    fn json_id_list(&self, param: &str) -> String {
        match self.backend() {
            Backend::Sqlite => format!("SELECT value FROM json_each({param})"),
            Backend::Postgres => format!("SELECT json_array_elements_text(CAST({param} AS JSON))"),
        }
    }

    /// Records how an attempt ended. Only a delivery still `sending` changes (a delivery
    /// cancelled or reclaimed meanwhile is left alone); returns whether it changed.
    pub async fn complete_delivery(
        &self,
        id: &str,
        outcome: &DeliveryOutcome,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .complete_deliveries(&[(id.to_string(), outcome.clone())], now)
            .await?
            == 1)
    }

    /// Records the outcomes of a batch of attempts in one transaction (what a worker does
    /// after each batch: one commit instead of one per delivery). As
    /// [`Store::complete_delivery`], only deliveries still `sending` change; returns how
    /// many did.
    pub async fn complete_deliveries(
        &self,
        outcomes: &[(String, DeliveryOutcome)],
        now: i64,
    ) -> Result<u64, StoreError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        // The common case, everything delivered, is one statement over the ids.
        let (delivered, others): (Vec<_>, Vec<_>) = outcomes
            .iter()
            .partition(|(_, o)| matches!(o, DeliveryOutcome::Delivered));
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        if !delivered.is_empty() {
            let ids: Vec<&str> = delivered.iter().map(|(id, _)| id.as_str()).collect();
            let json = serde_json::to_string(&ids)
                .map_err(|e| StoreError::Corrupt(format!("ids as JSON: {e}")))?;
            changed += sqlx::query(&format!(
                "UPDATE alert_deliveries SET state = 'delivered', last_error = NULL, \
                 lease_until = NULL, updated_at = $1 WHERE state = 'sending' AND id IN ({})",
                self.json_id_list("$2")
            ))
            .bind(now)
            .bind(json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for (id, outcome) in others {
            let (state, next, error): (&str, Option<i64>, Option<&str>) = match outcome {
                DeliveryOutcome::Delivered => ("delivered", None, None),
                DeliveryOutcome::Retry { at, error } => ("queued", Some(*at), Some(error)),
                DeliveryOutcome::Failed { error } => ("failed", None, Some(error)),
                DeliveryOutcome::Expired { reason } => ("expired", None, Some(reason)),
            };
            changed += sqlx::query(
                "UPDATE alert_deliveries SET state = $1, \
                 next_attempt_at = COALESCE($2, next_attempt_at), last_error = $3, \
                 lease_until = NULL, updated_at = $4 WHERE id = $5 AND state = 'sending'",
            )
            .bind(state)
            .bind(next)
            .bind(error.map(str::to_string))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Number of an alert's deliveries per state name (`queued`, `sending`, …), by channel.
    pub async fn delivery_counts(
        &self,
        alert_id: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        sqlx::query(
            "SELECT channel, state, CAST(COUNT(*) AS BIGINT) FROM alert_deliveries \
             WHERE alert_id = $1 GROUP BY channel, state ORDER BY channel, state",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
    }

    /// An alert's deliveries with ids greater than `after`, in id order.
    pub async fn deliveries_page(
        &self,
        alert_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE alert_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(alert_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(DeliveryRecord::from_row)
        .collect()
    }

    /// Stores a subscription.
    pub async fn insert_subscription(&self, rec: &SubscriptionRecord) -> Result<(), StoreError> {
        self.insert_subscription_with_events(rec, &[]).await
    }

    /// Stores a new subscription and its `events` (e.g. `alert.subscription.created`, which
    /// tells the other nodes' targeting indexes) in one transaction.
    pub async fn insert_subscription_with_events(
        &self,
        rec: &SubscriptionRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO alert_subscriptions ({SUBSCRIPTION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&rec.id)
        .bind(rec.user_id.clone())
        .bind(rec.lat)
        .bind(rec.lon)
        .bind(rec.language.clone())
        .bind(rec.min_severity.clone())
        .bind(rec.email.clone())
        .bind(rec.phone.clone())
        .bind(rec.push.clone())
        .bind(rec.created_at)
        .bind(i64::from(rec.websocket))
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "subscription exists"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores many new subscriptions at once (a bulk import): one `INSERT … SELECT` per
    /// 20 000 rows from a JSON array parameter, all in one transaction.
    pub async fn insert_subscriptions(
        &self,
        recs: &[SubscriptionRecord],
    ) -> Result<(), StoreError> {
        let select = match self.backend() {
            Backend::Sqlite => {
                "SELECT json_extract(value, '$.id'), json_extract(value, '$.user_id'), \
                 json_extract(value, '$.lat'), json_extract(value, '$.lon'), \
                 json_extract(value, '$.language'), json_extract(value, '$.min_severity'), \
                 json_extract(value, '$.email'), json_extract(value, '$.phone'), \
                 json_extract(value, '$.push'), json_extract(value, '$.created_at'), \
                 json_extract(value, '$.websocket') FROM json_each($1)"
            }
            Backend::Postgres => {
                "SELECT d.id, d.user_id, d.lat, d.lon, d.language, d.min_severity, d.email, \
                 d.phone, d.push, d.created_at, d.websocket FROM \
                 json_to_recordset(CAST($1 AS JSON)) AS \
                 d(id TEXT, user_id TEXT, lat DOUBLE PRECISION, lon DOUBLE PRECISION, \
                 language TEXT, min_severity TEXT, email TEXT, phone TEXT, push TEXT, \
                 created_at BIGINT, websocket BIGINT)"
            }
        };
        let sql = format!("INSERT INTO alert_subscriptions ({SUBSCRIPTION_COLUMNS}) {select}");
        #[derive(serde::Serialize)]
        struct Row<'a> {
            id: &'a str,
            user_id: Option<&'a str>,
            lat: f64,
            lon: f64,
            language: Option<&'a str>,
            min_severity: Option<&'a str>,
            email: Option<&'a str>,
            phone: Option<&'a str>,
            push: Option<&'a str>,
            created_at: i64,
            websocket: i64,
        }
        let mut tx = self.begin_write().await?;
        for chunk in recs.chunks(INSERT_BATCH) {
            let rows: Vec<Row<'_>> = chunk
                .iter()
                .map(|r| Row {
                    id: &r.id,
                    user_id: r.user_id.as_deref(),
                    lat: r.lat,
                    lon: r.lon,
                    language: r.language.as_deref(),
                    min_severity: r.min_severity.as_deref(),
                    email: r.email.as_deref(),
                    phone: r.phone.as_deref(),
                    push: r.push.as_deref(),
                    created_at: r.created_at,
                    websocket: i64::from(r.websocket),
                })
                .collect();
            let json = serde_json::to_string(&rows)
                .map_err(|e| StoreError::Corrupt(format!("subscriptions as JSON: {e}")))?;
            sqlx::query(&sql)
                .bind(json)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::from_write(e, "subscription exists"))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Locations of active subscriptions with ids greater than `after`, in id order, `limit`
    /// at a time: `(id, lat, lon)`, what the targeting index is built from.
    pub async fn subscription_points(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, f64, f64)>, StoreError> {
        sqlx::query(
            "SELECT id, lat, lon FROM alert_subscriptions WHERE active = 1 AND id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
    }

    /// Locations of active subscriptions — registered, and the device's last one — with
    /// ids greater than `after`, in id order, `limit` at a time: what the targeting index is
    /// built from.
    pub async fn subscription_locations(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SubscriptionPoint>, StoreError> {
        sqlx::query(
            "SELECT id, lat, lon, device_lat, device_lon, device_at FROM alert_subscriptions \
             WHERE active = 1 AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(SubscriptionPoint {
                id: r.try_get("id")?,
                lat: r.try_get("lat")?,
                lon: r.try_get("lon")?,
                device: device_of(r)?,
            })
        })
        .collect()
    }

    /// Records where the device of active subscription `id` is now (overwriting the last
    /// report: positions are not kept), with `events` in the same transaction; false when
    /// there is no such active subscription. `owner`, when given, must be the subscription's
    /// user (a subscription of someone else is "not found").
    pub async fn set_device_location(
        &self,
        id: &str,
        owner: Option<&str>,
        location: DeviceLocation,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let owner_sql = if owner.is_some() {
            " AND user_id = $5"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE alert_subscriptions SET device_lat = $1, device_lon = $2, device_at = $3 \
             WHERE id = $4 AND active = 1{owner_sql}"
        );
        let mut q = sqlx::query(&sql)
            .bind(location.lat)
            .bind(location.lon)
            .bind(location.at)
            .bind(id);
        if let Some(o) = owner {
            q = q.bind(o);
        }
        let changed = q.execute(&mut *tx).await?.rows_affected() == 1;
        if changed {
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The active subscriptions among `ids` (ended and unknown ones are left out), in id
    /// order; the ids travel as one JSON array parameter.
    pub async fn subscriptions_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = match self.backend() {
            Backend::Sqlite => "SELECT value FROM json_each($1)",
            Backend::Postgres => "SELECT json_array_elements_text(CAST($1 AS JSON))",
        };
        let json = serde_json::to_string(ids)
            .map_err(|e| StoreError::Corrupt(format!("ids as JSON: {e}")))?;
        sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_READ} FROM alert_subscriptions WHERE active = 1 \
             AND id IN ({list}) ORDER BY id"
        ))
        .bind(json)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(SubscriptionRecord::from_row)
        .collect()
    }

    /// Ends a subscription (STOP, unsubscribe link); false when there is none active.
    pub async fn deactivate_subscription(&self, id: &str) -> Result<bool, StoreError> {
        self.deactivate_subscription_with_events(id, &[]).await
    }

    /// Ends a subscription and, when it was active, writes `events` (e.g.
    /// `alert.subscription.ended`) in the same transaction; false when there is none active.
    pub async fn deactivate_subscription_with_events(
        &self,
        id: &str,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let ended =
            sqlx::query("UPDATE alert_subscriptions SET active = 0 WHERE id = $1 AND active = 1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if ended {
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(ended)
    }

    /// Ends every active subscription registered with `phone` (an SMS reply STOP from it);
    /// returns how many ended.
    pub async fn deactivate_subscriptions_by_phone(&self, phone: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query(
                "UPDATE alert_subscriptions SET active = 0 WHERE phone = $1 AND active = 1",
            )
            .bind(phone)
            .execute(&self.pool)
            .await?
            .rows_affected(),
        )
    }

    /// A subscription and whether it is still active.
    pub async fn subscription(
        &self,
        id: &str,
    ) -> Result<Option<(SubscriptionRecord, bool)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_READ}, active FROM alert_subscriptions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((
                SubscriptionRecord::from_row(&r)?,
                r.try_get::<i64, _>("active")? == 1,
            ))),
            None => Ok(None),
        }
    }

    /// Active subscriptions located inside `bbox` (`min_lon > max_lon` crosses the
    /// antimeridian) with ids greater than `after`, in id order: the candidates targeting
    /// then tests against the alert's exact areas.
    pub async fn subscriptions_in_bbox(
        &self,
        bbox: BBox,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let [min_lon, min_lat, max_lon, max_lat] = bbox;
        let lon = if min_lon <= max_lon {
            "lon >= $3 AND lon <= $4"
        } else {
            "(lon >= $3 OR lon <= $4)"
        };
        sqlx::query(&format!(
            "SELECT {SUBSCRIPTION_READ} FROM alert_subscriptions WHERE active = 1 \
             AND lat >= $1 AND lat <= $2 AND {lon} AND id > $5 ORDER BY id LIMIT $6"
        ))
        .bind(min_lat)
        .bind(max_lat)
        .bind(min_lon)
        .bind(max_lon)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(SubscriptionRecord::from_row)
        .collect()
    }
}

/// Marks the `supersedes` alerts (still active) `cancelled` (by a Cancel) or `superseded`
/// by `by`; a Cancel also expires their queued deliveries.
async fn supersede(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    by: &str,
    cancel: bool,
    supersedes: &[String],
    now: i64,
) -> Result<(), StoreError> {
    let new_status = if cancel {
        AlertStatus::Cancelled
    } else {
        AlertStatus::Superseded
    };
    for old in supersedes {
        sqlx::query(
            "UPDATE alerts SET status = $1, superseded_by = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'active'",
        )
        .bind(new_status.as_str())
        .bind(by)
        .bind(now)
        .bind(old)
        .execute(&mut **tx)
        .await?;
        if cancel {
            sqlx::query(
                "UPDATE alert_deliveries SET state = 'expired', last_error = 'cancelled', \
                 updated_at = $1 WHERE alert_id = $2 AND state = 'queued'",
            )
            .bind(now)
            .bind(old)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [
            DeliveryState::Queued,
            DeliveryState::Sending { attempt: 3 },
            DeliveryState::Delivered,
            DeliveryState::Failed,
            DeliveryState::Expired,
        ] {
            assert_eq!(DeliveryState::parse(s.name(), 3), Some(s));
        }
        assert!(DeliveryState::parse("lost", 0).is_none());
        for s in [
            AlertStatus::Pending,
            AlertStatus::Active,
            AlertStatus::Superseded,
            AlertStatus::Cancelled,
            AlertStatus::Expired,
        ] {
            assert_eq!(AlertStatus::parse(s.as_str()), Some(s));
        }
    }
}
