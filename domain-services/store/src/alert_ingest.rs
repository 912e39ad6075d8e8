//! Ingest of external CAP ATOM feeds: what a poller must remember across restarts.
//!
//! - [`FeedState`]: per feed URL, the `ETag` / `Last-Modified` of the last complete poll
//!   (for conditional requests) and the last poll's time and error.
//! - Entries handled ([`Store::mark_ingest_entry`]): a feed entry (feed, id, `updated`)
//!   once handled is never fetched again — not after a repeated poll, not after a restart.
//!   An entry whose `updated` changes is a new entry.
//! - [`IngestRecord`]: one per CAP alert read from a feed, unique by CAP
//!   identifier/sender/sent instant, with its [`IngestOutcome`]. Alerts from senders off the
//!   allowlist are kept here (with their CAP XML) and nowhere else: never in `alerts`, so
//!   never listed, fed or delivered.

use crate::db::Store;
use crate::error::StoreError;
use sqlx::Row;
use sqlx::any::AnyRow;

/// What happened to an alert read from a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IngestOutcome {
    /// Issued locally (re-broadcast): targeting and delivery applied.
    Issued,
    /// Its sender is not on the allowlist: stored here only.
    Ignored,
    /// This server already had the alert (issued locally or from another feed).
    Duplicate,
    /// Not acceptable: invalid CAP, unknown references, unreadable document.
    Rejected,
}

impl IngestOutcome {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestOutcome::Issued => "issued",
            IngestOutcome::Ignored => "ignored",
            IngestOutcome::Duplicate => "duplicate",
            IngestOutcome::Rejected => "rejected",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "issued" => IngestOutcome::Issued,
            "ignored" => IngestOutcome::Ignored,
            "duplicate" => IngestOutcome::Duplicate,
            "rejected" => IngestOutcome::Rejected,
            _ => return None,
        })
    }
}

/// A row of `alert_feeds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedState {
    /// The feed's URL, as configured.
    pub url: String,
    /// `ETag` of the last complete poll.
    pub etag: Option<String>,
    /// `Last-Modified` of the last complete poll.
    pub last_modified: Option<String>,
    /// When it was last polled, Unix ms.
    pub polled_at: Option<i64>,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
}

/// A row of `alert_ingest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    /// Row id.
    pub id: String,
    /// The feed it came from.
    pub feed_url: String,
    /// The feed entry's id.
    pub entry_id: String,
    /// Where its CAP document was fetched.
    pub cap_url: Option<String>,
    /// CAP identifier (unknown when the document could not be read).
    pub identifier: Option<String>,
    /// CAP sender.
    pub sender: Option<String>,
    /// CAP sent, Unix ms.
    pub sent_at: Option<i64>,
    /// What happened.
    pub outcome: IngestOutcome,
    /// The issued alert (outcome `issued`, or the existing one for `duplicate`).
    pub alert_id: Option<String>,
    /// Why it was rejected, or notes (e.g. geocodes that could not be resolved).
    pub detail: Option<String>,
    /// The CAP 1.2 XML, when it could be read.
    pub cap_xml: Option<String>,
    /// When it was read, Unix ms.
    pub created_at: i64,
}

const INGEST_COLUMNS: &str = "id, feed_url, entry_id, cap_url, identifier, sender, sent_at, \
    outcome, alert_id, detail, cap_xml, created_at";

impl IngestRecord {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let outcome: String = row.try_get("outcome")?;
        Ok(IngestRecord {
            id: row.try_get("id")?,
            feed_url: row.try_get("feed_url")?,
            entry_id: row.try_get("entry_id")?,
            cap_url: row.try_get("cap_url")?,
            identifier: row.try_get("identifier")?,
            sender: row.try_get("sender")?,
            sent_at: row.try_get("sent_at")?,
            outcome: IngestOutcome::parse(&outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("alert_ingest.outcome '{outcome}'")))?,
            alert_id: row.try_get("alert_id")?,
            detail: row.try_get("detail")?,
            cap_xml: row.try_get("cap_xml")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Store {
    /// The stored state of a feed.
    pub async fn feed_state(&self, url: &str) -> Result<Option<FeedState>, StoreError> {
        let row = sqlx::query(
            "SELECT url, etag, last_modified, polled_at, last_error FROM alert_feeds WHERE url = $1",
        )
        .bind(url)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(FeedState {
                url: r.try_get("url")?,
                etag: r.try_get("etag")?,
                last_modified: r.try_get("last_modified")?,
                polled_at: r.try_get("polled_at")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .transpose()
    }

    /// Stores a feed's state (insert or replace).
    pub async fn save_feed_state(&self, state: &FeedState) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_feeds (url, etag, last_modified, polled_at, last_error) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (url) DO UPDATE SET etag = $2, \
             last_modified = $3, polled_at = $4, last_error = $5",
        )
        .bind(&state.url)
        .bind(state.etag.clone())
        .bind(state.last_modified.clone())
        .bind(state.polled_at)
        .bind(state.last_error.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether this feed entry (id and `updated`) was handled already.
    pub async fn ingest_entry_seen(
        &self,
        feed_url: &str,
        entry_id: &str,
        entry_updated: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 FROM alert_ingest_entries WHERE feed_url = $1 AND entry_id = $2 \
             AND entry_updated = $3",
        )
        .bind(feed_url)
        .bind(entry_id)
        .bind(entry_updated)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Remembers that a feed entry was handled (a no-op the second time).
    pub async fn mark_ingest_entry(
        &self,
        feed_url: &str,
        entry_id: &str,
        entry_updated: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_ingest_entries (feed_url, entry_id, entry_updated, seen_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (feed_url, entry_id, entry_updated) DO NOTHING",
        )
        .bind(feed_url)
        .bind(entry_id)
        .bind(entry_updated)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The ingest record of the CAP alert with this identifier, sender and sent instant.
    pub async fn ingest_by_triple(
        &self,
        identifier: &str,
        sender: &str,
        sent_at: i64,
    ) -> Result<Option<IngestRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {INGEST_COLUMNS} FROM alert_ingest WHERE identifier = $1 AND sender = $2 \
             AND sent_at = $3"
        ))
        .bind(identifier)
        .bind(sender)
        .bind(sent_at)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(IngestRecord::from_row)
        .transpose()
    }

    /// Stores an ingest record; false (and nothing changes) when one with the same CAP
    /// identifier/sender/sent exists.
    pub async fn record_ingest(&self, rec: &IngestRecord) -> Result<bool, StoreError> {
        let n = sqlx::query(&format!(
            "INSERT INTO alert_ingest ({INGEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
             $8, $9, $10, $11, $12) ON CONFLICT (identifier, sender, sent_at) DO NOTHING"
        ))
        .bind(&rec.id)
        .bind(&rec.feed_url)
        .bind(&rec.entry_id)
        .bind(rec.cap_url.clone())
        .bind(rec.identifier.clone())
        .bind(rec.sender.clone())
        .bind(rec.sent_at)
        .bind(rec.outcome.as_str())
        .bind(rec.alert_id.clone())
        .bind(rec.detail.clone())
        .bind(rec.cap_xml.clone())
        .bind(rec.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The latest ingest records, newest first.
    pub async fn ingest_records(&self, limit: i64) -> Result<Vec<IngestRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {INGEST_COLUMNS} FROM alert_ingest ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(IngestRecord::from_row)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_names() {
        for o in [
            IngestOutcome::Issued,
            IngestOutcome::Ignored,
            IngestOutcome::Duplicate,
            IngestOutcome::Rejected,
        ] {
            assert_eq!(IngestOutcome::parse(o.as_str()), Some(o));
        }
        assert!(IngestOutcome::parse("lost").is_none());
    }
}
