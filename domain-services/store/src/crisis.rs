//! The crisis map: incidents, responders (volunteers), resources, shelters and hazard areas,
//! incident verification votes, geofences and situation reports.
//!
//! Every object the geo index shows is one row of `crisis_objects`: a kind, a type, optional
//! severity and status, its GeoJSON geometry (text, the source of truth for its shape), the
//! `lat`/`lon` of point objects, and kind-specific `details` (JSON text). The geo index in
//! the API server is a derived view rebuilt from these rows on start
//! ([`Store::crisis_objects_page`]).
//!
//! On PostgreSQL with PostGIS, [`Store::migrate`] also gives `crisis_objects` a `geom`
//! column generated from `geometry` (SRID 4326) with GiST indexes on it and on its
//! `geography` cast, so SQL clients and the benchmark can query it spatially. Without
//! PostGIS the portable columns are all there is, and nothing else changes.

use crate::db::Store;
use crate::error::StoreError;
use crate::outbox::{NewEvent, insert_events};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A row of `crisis_objects`: one object on the crisis map.
#[derive(Debug, Clone, PartialEq)]
pub struct CrisisObjectRecord {
    /// Object id (text, URL-safe).
    pub id: String,
    /// `incident`, `responder`, `resource`, `shelter` or `hazard`.
    pub kind: String,
    /// Type within the kind (`flood`, `paramedic`, `ambulance`, `school`, …).
    pub object_type: String,
    /// Severity 1–5, for incidents and hazards.
    pub severity: Option<i64>,
    /// Incident status (`reported`, `verified`, `resolved`, `rejected`).
    pub status: Option<String>,
    /// Latitude of a point object.
    pub lat: Option<f64>,
    /// Longitude of a point object.
    pub lon: Option<f64>,
    /// GeoJSON geometry (text).
    pub geometry: String,
    /// Kind-specific attributes.
    pub details: serde_json::Value,
    /// The user who reported, registered or created it.
    pub owner_id: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

const OBJECT_COLUMNS: &str = "id, kind, object_type, severity, status, lat, lon, geometry, \
                              details, owner_id, created_at, updated_at";

impl CrisisObjectRecord {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let details: String = row.try_get("details")?;
        Ok(CrisisObjectRecord {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            object_type: row.try_get("object_type")?,
            severity: row.try_get("severity")?,
            status: row.try_get("status")?,
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
            geometry: row.try_get("geometry")?,
            details: serde_json::from_str(&details)
                .map_err(|e| StoreError::Corrupt(format!("crisis_objects.details: {e}")))?,
            owner_id: row.try_get("owner_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A verification vote on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote<'a> {
    /// The incident.
    pub incident_id: &'a str,
    /// The voter (user id); a later vote of the same user replaces the earlier one.
    pub user_id: &'a str,
    /// `confirm` or `dispute`.
    pub vote: &'a str,
    /// Confirmations that verify a `reported` incident.
    pub threshold: i64,
    /// Vote time, Unix ms (also the incident's `updated_at` when it becomes verified).
    pub now: i64,
}

/// The incident and its tally after a vote.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteOutcome {
    /// The incident after the vote.
    pub incident: CrisisObjectRecord,
    /// Distinct users confirming.
    pub confirmations: i64,
    /// Distinct users disputing.
    pub disputes: i64,
    /// Whether this vote moved the incident from `reported` to `verified`.
    pub newly_verified: bool,
}

/// A stored geofence; `spec` is the API's JSON description of shape, kinds and transitions.
#[derive(Debug, Clone, PartialEq)]
pub struct GeofenceRecord {
    /// Fence id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Shape, watched kinds and reported transitions (JSON).
    pub spec: serde_json::Value,
    /// Who created it.
    pub created_by: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

/// A situation report from the field, optionally about an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRecord {
    /// Report id.
    pub id: String,
    /// The incident it is about, if any.
    pub incident_id: Option<String>,
    /// Author (user id).
    pub author_id: Option<String>,
    /// One-line summary.
    pub summary: String,
    /// Further structured details (JSON).
    pub details: serde_json::Value,
    /// Latitude, when the report is located.
    pub lat: Option<f64>,
    /// Longitude, when the report is located.
    pub lon: Option<f64>,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

impl Store {
    /// Inserts a map object and its events. [`StoreError::Conflict`] when the id is taken or
    /// the user already has a volunteer (`responder`) profile.
    pub async fn insert_crisis_object(
        &self,
        rec: &CrisisObjectRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        crate::db::nullable_floats(&format!(
            "INSERT INTO crisis_objects ({OBJECT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&rec.id)
        .bind(&rec.kind)
        .bind(&rec.object_type)
        .bind(rec.severity)
        .bind(rec.status.clone())
        .bind(rec.lat)
        .bind(rec.lon)
        .bind(&rec.geometry)
        .bind(json_text(&rec.details))
        .bind(rec.owner_id.clone())
        .bind(rec.created_at)
        .bind(rec.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "object already exists"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The map object with this id.
    pub async fn crisis_object(&self, id: &str) -> Result<Option<CrisisObjectRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM crisis_objects WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(CrisisObjectRecord::from_row)
        .transpose()
    }

    /// The volunteer (`responder` object) registered by `user_id`.
    pub async fn volunteer_of(
        &self,
        user_id: &str,
    ) -> Result<Option<CrisisObjectRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM crisis_objects WHERE owner_id = $1 AND kind = 'responder'"
        ))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(CrisisObjectRecord::from_row)
        .transpose()
    }

    /// Up to `limit` map objects with ids greater than `after`, in id order: the pages the
    /// geo index is rebuilt from.
    pub async fn crisis_objects_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CrisisObjectRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM crisis_objects WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(CrisisObjectRecord::from_row)
        .collect()
    }

    /// Replaces the mutable fields of an object (type, severity, status, position, geometry,
    /// details, `updated_at`) if it still has `expected_updated_at`; false when the object
    /// is gone or was changed meanwhile (optimistic concurrency: reload and retry).
    pub async fn update_crisis_object(
        &self,
        rec: &CrisisObjectRecord,
        expected_updated_at: i64,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = crate::db::nullable_floats(
            "UPDATE crisis_objects SET object_type = $1, severity = $2, status = $3, lat = $4, \
             lon = $5, geometry = $6, details = $7, updated_at = $8 \
             WHERE id = $9 AND updated_at = $10",
        )
        .bind(&rec.object_type)
        .bind(rec.severity)
        .bind(rec.status.clone())
        .bind(rec.lat)
        .bind(rec.lon)
        .bind(&rec.geometry)
        .bind(json_text(&rec.details))
        .bind(rec.updated_at)
        .bind(&rec.id)
        .bind(expected_updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !done {
            return Ok(false);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a point object; `geometry` is its new GeoJSON point. False when there is no
    /// such object.
    pub async fn move_crisis_object(
        &self,
        id: &str,
        lat: f64,
        lon: f64,
        geometry: &str,
        now: i64,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE crisis_objects SET lat = $1, lon = $2, geometry = $3, updated_at = $4 \
             WHERE id = $5 AND lat IS NOT NULL",
        )
        .bind(lat)
        .bind(lon)
        .bind(geometry)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !done {
            return Ok(false);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a vote (`confirm` or `dispute`) on an incident, replacing any earlier vote of
    /// the same user, and marks the incident `verified` when it is `reported` and has at
    /// least `threshold` confirmations; `None` when there is no such incident. `events` are recorded with every vote, `if_verified`
    /// only with the vote that verifies (exactly once, even under concurrent votes).
    pub async fn vote_incident(
        &self,
        vote: &Vote<'_>,
        events: &[NewEvent],
        if_verified: &[NewEvent],
    ) -> Result<Option<VoteOutcome>, StoreError> {
        let Vote {
            incident_id,
            user_id,
            vote,
            threshold,
            now,
        } = *vote;
        let mut tx = self.begin_write().await?;
        let exists =
            sqlx::query("SELECT id FROM crisis_objects WHERE id = $1 AND kind = 'incident'")
                .bind(incident_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !exists {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO crisis_votes (incident_id, user_id, vote, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (incident_id, user_id) DO UPDATE SET vote = excluded.vote, \
             created_at = excluded.created_at",
        )
        .bind(incident_id)
        .bind(user_id)
        .bind(vote)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (confirmations, disputes) = tally(&mut tx, incident_id).await?;
        let mut newly_verified = false;
        if confirmations >= threshold {
            // Conditional update: of concurrent verifying votes exactly one changes the row.
            newly_verified = sqlx::query(
                "UPDATE crisis_objects SET status = 'verified', updated_at = $1 \
                 WHERE id = $2 AND status = 'reported'",
            )
            .bind(now)
            .bind(incident_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        }
        let row = sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM crisis_objects WHERE id = $1"
        ))
        .bind(incident_id)
        .fetch_one(&mut *tx)
        .await?;
        let incident = CrisisObjectRecord::from_row(&row)?;
        insert_events(&mut tx, events).await?;
        if newly_verified {
            insert_events(&mut tx, if_verified).await?;
        }
        tx.commit().await?;
        Ok(Some(VoteOutcome {
            incident,
            confirmations,
            disputes,
            newly_verified,
        }))
    }

    /// Distinct confirmations and disputes of an incident.
    pub async fn incident_votes(&self, incident_id: &str) -> Result<(i64, i64), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query(VOTE_TALLY)
            .bind(incident_id)
            .fetch_one(&mut *conn)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Inserts a geofence and its events; [`StoreError::Conflict`] when the id is taken.
    pub async fn insert_geofence(
        &self,
        rec: &GeofenceRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO crisis_geofences (id, name, spec, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&rec.id)
        .bind(&rec.name)
        .bind(json_text(&rec.spec))
        .bind(rec.created_by.clone())
        .bind(rec.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "geofence already exists"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The geofence with this id.
    pub async fn geofence(&self, id: &str) -> Result<Option<GeofenceRecord>, StoreError> {
        sqlx::query(
            "SELECT id, name, spec, created_by, created_at FROM crisis_geofences WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(geofence_from_row)
        .transpose()
    }

    /// Up to `limit` geofences with ids greater than `after`, in id order.
    pub async fn geofences_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GeofenceRecord>, StoreError> {
        sqlx::query(
            "SELECT id, name, spec, created_by, created_at FROM crisis_geofences \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(geofence_from_row)
        .collect()
    }

    /// Deletes a geofence; false when there was none.
    pub async fn delete_geofence(&self, id: &str, events: &[NewEvent]) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM crisis_geofences WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !done {
            return Ok(false);
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Inserts a situation report and its events.
    pub async fn insert_report(
        &self,
        rec: &ReportRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        crate::db::nullable_floats(
            "INSERT INTO crisis_reports (id, incident_id, author_id, summary, details, lat, lon, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&rec.id)
        .bind(rec.incident_id.clone())
        .bind(rec.author_id.clone())
        .bind(&rec.summary)
        .bind(json_text(&rec.details))
        .bind(rec.lat)
        .bind(rec.lon)
        .bind(rec.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "report already exists"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The reports about an incident, oldest first (at most `limit`).
    pub async fn reports_for(
        &self,
        incident_id: &str,
        limit: i64,
    ) -> Result<Vec<ReportRecord>, StoreError> {
        sqlx::query(
            "SELECT id, incident_id, author_id, summary, details, lat, lon, created_at \
             FROM crisis_reports WHERE incident_id = $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(incident_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let details: String = r.try_get("details")?;
            Ok(ReportRecord {
                id: r.try_get("id")?,
                incident_id: r.try_get("incident_id")?,
                author_id: r.try_get("author_id")?,
                summary: r.try_get("summary")?,
                details: serde_json::from_str(&details)
                    .map_err(|e| StoreError::Corrupt(format!("crisis_reports.details: {e}")))?,
                lat: r.try_get("lat")?,
                lon: r.try_get("lon")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
    }
}

impl Store {
    /// Ids of the map objects within `radius_m` metres (geodesic, on the WGS 84 spheroid) of
    /// a point, in id order, answered by PostGIS from the GiST index on `geom::geography`.
    /// PostgreSQL with PostGIS only (a database error otherwise); the API answers spatial
    /// queries from its geo index, this is for SQL-side checks and comparisons.
    pub async fn crisis_ids_within_m(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "SELECT id FROM crisis_objects WHERE ST_DWithin(geom::geography, \
             ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, $3) ORDER BY id",
        )
        .bind(lon)
        .bind(lat)
        .bind(radius_m)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<String, _>(0)?))
        .collect()
    }
}

const VOTE_TALLY: &str = "SELECT \
     CAST(COALESCE(SUM(CASE WHEN vote = 'confirm' THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN vote = 'dispute' THEN 1 ELSE 0 END), 0) AS BIGINT) \
     FROM crisis_votes WHERE incident_id = $1";

async fn tally(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    incident_id: &str,
) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(VOTE_TALLY)
        .bind(incident_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

fn geofence_from_row(r: &AnyRow) -> Result<GeofenceRecord, StoreError> {
    let spec: String = r.try_get("spec")?;
    Ok(GeofenceRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::Corrupt(format!("crisis_geofences.spec: {e}")))?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The PostGIS step run after migrations on PostgreSQL: a `geom` column generated from the
/// GeoJSON `geometry` and GiST indexes on `geom` and on `geom::geography` (for metre-radius
/// and k-nearest queries). Idempotent; does nothing without PostGIS.
pub(crate) async fn postgis_step(conn: &mut sqlx::AnyConnection) -> Result<bool, StoreError> {
    use sqlx::Executor;
    let row =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM pg_extension WHERE extname = 'postgis'")
            .fetch_one(&mut *conn)
            .await?;
    if row.try_get::<i64, _>(0)? == 0 {
        return Ok(false);
    }
    conn.execute(
        "ALTER TABLE crisis_objects ADD COLUMN IF NOT EXISTS geom geometry(Geometry, 4326) \
         GENERATED ALWAYS AS (ST_SetSRID(ST_GeomFromGeoJSON(geometry), 4326)) STORED; \
         CREATE INDEX IF NOT EXISTS crisis_objects_geom ON crisis_objects USING GIST (geom); \
         CREATE INDEX IF NOT EXISTS crisis_objects_geog ON crisis_objects \
         USING GIST ((geom::geography));",
    )
    .await?;
    Ok(true)
}
