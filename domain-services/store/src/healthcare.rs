//! Healthcare: provider profiles and availability slots, appointments, consultations (the SFU
//! room of an appointment), FHIR R4 resources per patient and disease-surveillance case
//! reports.
//!
//! # No double booking
//! A slot carries the id of the appointment holding it. Booking claims the slot with a
//! conditional update (`… SET appointment_id = $1 WHERE id = $2 AND appointment_id IS NULL`)
//! in the transaction that inserts the appointment: of many concurrent bookings exactly one
//! updates a row, the others see zero rows changed and get [`StoreError::Conflict`]. On
//! PostgreSQL the losers block on the row lock and re-check the condition after the winner
//! commits; on SQLite writers are serialized (`BEGIN IMMEDIATE`). A partial unique index on
//! `hc_appointments(slot_id) WHERE status = 'booked'` backs the rule up in the schema.

use crate::db::{Backend, Store};
use crate::error::StoreError;
use crate::outbox::{NewEvent, audit_in, insert_events};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A provider's public profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// Profile id.
    pub id: String,
    /// The user who is this provider (one profile per user).
    pub user_id: String,
    /// Specialty (`general_practice`, `pediatrics`, …), lower case.
    pub specialty: String,
    /// Languages spoken (BCP 47 tags such as `en`, `fr`), lower case.
    pub languages: Vec<String>,
    /// Free-text introduction.
    pub bio: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

impl ProviderRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        let languages: String = r.try_get("languages")?;
        Ok(ProviderRecord {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            specialty: r.try_get("specialty")?,
            languages: serde_json::from_str(&languages)
                .map_err(|e| StoreError::Corrupt(format!("hc_providers.languages: {e}")))?,
            bio: r.try_get("bio")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// Filters of the provider search; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderQuery {
    /// Exact specialty.
    pub specialty: Option<String>,
    /// A language the provider speaks.
    pub language: Option<String>,
    /// Only providers with a free slot starting at or after this time (Unix ms).
    pub available_from: Option<i64>,
    /// Providers with ids after this one (the page cursor).
    pub after: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// A bookable period of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    /// Slot id.
    pub id: String,
    /// The provider profile.
    pub provider_id: String,
    /// Start, Unix ms.
    pub start_at: i64,
    /// End, Unix ms (after `start_at`).
    pub end_at: i64,
    /// The appointment holding the slot; `None` while it is free.
    pub appointment_id: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

impl SlotRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        Ok(SlotRecord {
            id: r.try_get("id")?,
            provider_id: r.try_get("provider_id")?,
            start_at: r.try_get("start_at")?,
            end_at: r.try_get("end_at")?,
            appointment_id: r.try_get("appointment_id")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// Where an appointment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppointmentStatus {
    /// Holds its slot; a consultation may take place.
    Booked,
    /// Cancelled; the slot is free again.
    Cancelled,
    /// The consultation ended.
    Completed,
}

impl AppointmentStatus {
    /// The stored and serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::Cancelled => "cancelled",
            AppointmentStatus::Completed => "completed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "booked" => Ok(AppointmentStatus::Booked),
            "cancelled" => Ok(AppointmentStatus::Cancelled),
            "completed" => Ok(AppointmentStatus::Completed),
            other => Err(StoreError::Corrupt(format!(
                "hc_appointments.status `{other}`"
            ))),
        }
    }
}

/// An appointment of a patient in a provider's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentRecord {
    /// Appointment id.
    pub id: String,
    /// The slot it holds (or held).
    pub slot_id: String,
    /// The provider profile.
    pub provider_id: String,
    /// The patient (user id).
    pub patient_id: String,
    /// Why the patient comes.
    pub reason: String,
    /// Life-cycle state.
    pub status: AppointmentStatus,
    /// Triage priority, 1 (most urgent) to 5.
    pub triage_priority: i64,
    /// Start (copied from the slot), Unix ms.
    pub start_at: i64,
    /// End (copied from the slot), Unix ms.
    pub end_at: i64,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

const APPOINTMENT_COLUMNS: &str = "a.id, a.slot_id, a.provider_id, a.patient_id, a.reason, \
    a.status, a.triage_priority, a.start_at, a.end_at, a.created_at, a.updated_at";

impl AppointmentRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        let status: String = r.try_get("status")?;
        Ok(AppointmentRecord {
            id: r.try_get("id")?,
            slot_id: r.try_get("slot_id")?,
            provider_id: r.try_get("provider_id")?,
            patient_id: r.try_get("patient_id")?,
            reason: r.try_get("reason")?,
            status: AppointmentStatus::parse(&status)?,
            triage_priority: r.try_get("triage_priority")?,
            start_at: r.try_get("start_at")?,
            end_at: r.try_get("end_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// The consultation of an appointment: its SFU room and who is waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsultationRecord {
    /// Consultation id.
    pub id: String,
    /// The appointment (one consultation each).
    pub appointment_id: String,
    /// SFU room name (kind `consultation`).
    pub room: String,
    /// When the patient took a room token and started waiting, Unix ms.
    pub waiting_since: Option<i64>,
    /// When the patient was admitted, Unix ms.
    pub admitted_at: Option<i64>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// When it ended, Unix ms; `None` while open.
    pub ended_at: Option<i64>,
}

const CONSULTATION_COLUMNS: &str = "c.id AS c_id, c.appointment_id, c.room, c.waiting_since, c.admitted_at, \
     c.created_at AS c_created_at, c.ended_at";

impl ConsultationRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        Ok(ConsultationRecord {
            id: r.try_get("c_id")?,
            appointment_id: r.try_get("appointment_id")?,
            room: r.try_get("room")?,
            waiting_since: r.try_get("waiting_since")?,
            admitted_at: r.try_get("admitted_at")?,
            created_at: r.try_get("c_created_at")?,
            ended_at: r.try_get("ended_at")?,
        })
    }
}

/// A stored FHIR R4 resource of a patient.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirRecord {
    /// Resource id (also `resource.id`).
    pub id: String,
    /// The patient (user id) whose record holds it.
    pub patient_id: String,
    /// `Patient`, `Condition`, `Observation`, …
    pub resource_type: String,
    /// The resource as JSON.
    pub resource: serde_json::Value,
    /// Version, from 1; each update adds one.
    pub version: i64,
    /// Who wrote the current version.
    pub author_id: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Time of the current version, Unix ms.
    pub updated_at: i64,
}

impl FhirRecord {
    fn from_row(r: &AnyRow) -> Result<Self, StoreError> {
        let resource: String = r.try_get("resource")?;
        Ok(FhirRecord {
            id: r.try_get("id")?,
            patient_id: r.try_get("patient_id")?,
            resource_type: r.try_get("resource_type")?,
            resource: serde_json::from_str(&resource)
                .map_err(|e| StoreError::Corrupt(format!("hc_records.resource: {e}")))?,
            version: r.try_get("version")?,
            author_id: r.try_get("author_id")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// A disease-surveillance case report.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReportRecord {
    /// Report id.
    pub id: String,
    /// Syndrome code (`cholera`, `ili`, …), lower case.
    pub syndrome: String,
    /// Region the case counts toward (an area code, or a grid cell).
    pub region: String,
    /// Latitude of the case.
    pub lat: f64,
    /// Longitude of the case.
    pub lon: f64,
    /// Symptom onset, Unix ms.
    pub onset_at: i64,
    /// Reporting user.
    pub reported_by: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

/// What a case report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseOutcome {
    /// Cases of the syndrome in the region within the window ending at the report's onset.
    pub cases_in_window: i64,
    /// Whether this report crossed the threshold (and its events were recorded).
    pub epidemic_detected: bool,
}

impl Store {
    /// Creates a provider profile; a user with a profile already → [`StoreError::Conflict`].
    pub async fn create_provider(
        &self,
        p: &ProviderRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let languages = serde_json::to_string(&p.languages)
            .map_err(|e| StoreError::Corrupt(format!("languages: {e}")))?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO hc_providers (id, user_id, specialty, languages, bio, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&p.id)
        .bind(&p.user_id)
        .bind(&p.specialty)
        .bind(languages)
        .bind(p.bio.clone())
        .bind(p.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "this user already has a provider profile"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A provider profile by id.
    pub async fn provider(&self, id: &str) -> Result<Option<ProviderRecord>, StoreError> {
        sqlx::query("SELECT * FROM hc_providers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ProviderRecord::from_row)
            .transpose()
    }

    /// The provider profile of a user.
    pub async fn provider_of_user(
        &self,
        user_id: &str,
    ) -> Result<Option<ProviderRecord>, StoreError> {
        sqlx::query("SELECT * FROM hc_providers WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ProviderRecord::from_row)
            .transpose()
    }

    /// Providers matching `q`, by id.
    pub async fn search_providers(
        &self,
        q: &ProviderQuery,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        // Languages are a JSON array of validated tags, so a quoted substring match is exact.
        let language = q.language.as_ref().map(|l| format!("%\"{l}\"%"));
        let rows = sqlx::query(
            "SELECT * FROM hc_providers p WHERE ($1 IS NULL OR p.specialty = $1) \
             AND ($2 IS NULL OR p.languages LIKE $2) \
             AND ($3 IS NULL OR EXISTS (SELECT 1 FROM hc_slots s WHERE s.provider_id = p.id \
                  AND s.appointment_id IS NULL AND s.start_at >= $3)) \
             AND ($4 IS NULL OR p.id > $4) ORDER BY p.id LIMIT $5",
        )
        .bind(q.specialty.clone())
        .bind(language)
        .bind(q.available_from)
        .bind(q.after.clone())
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ProviderRecord::from_row).collect()
    }

    /// Adds a slot; one overlapping another slot of the provider → [`StoreError::Conflict`].
    pub async fn add_slot(&self, s: &SlotRecord, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            // Serializes slot changes per provider, so two overlapping inserts cannot both
            // pass the check below (SQLite's single writer already does).
            sqlx::query("SELECT id FROM hc_providers WHERE id = $1 FOR UPDATE")
                .bind(&s.provider_id)
                .execute(&mut *tx)
                .await?;
        }
        // A provider's slots never overlap (this check keeps it so), so ordered by start they
        // are ordered by end too: of the slots starting before the new one ends, only the
        // last can reach past its start. One index probe instead of a walk over every
        // earlier slot of the provider.
        let previous_end: Option<i64> = sqlx::query(
            "SELECT end_at FROM hc_slots WHERE provider_id = $1 AND start_at < $2 \
             ORDER BY start_at DESC LIMIT 1",
        )
        .bind(&s.provider_id)
        .bind(s.end_at)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        if previous_end.is_some_and(|end| end > s.start_at) {
            return Err(StoreError::Conflict(
                "the slot overlaps another slot of this provider".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO hc_slots (id, provider_id, start_at, end_at, appointment_id, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5)",
        )
        .bind(&s.id)
        .bind(&s.provider_id)
        .bind(s.start_at)
        .bind(s.end_at)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "slot id taken"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A slot by id.
    pub async fn slot(&self, id: &str) -> Result<Option<SlotRecord>, StoreError> {
        sqlx::query("SELECT * FROM hc_slots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(SlotRecord::from_row)
            .transpose()
    }

    /// A provider's slots starting at or after `from`, by start; only free ones when `free`.
    pub async fn slots_of(
        &self,
        provider_id: &str,
        from: i64,
        free: bool,
        limit: i64,
    ) -> Result<Vec<SlotRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM hc_slots WHERE provider_id = $1 AND start_at >= $2 \
             AND ($3 = 0 OR appointment_id IS NULL) ORDER BY start_at LIMIT $4",
        )
        .bind(provider_id)
        .bind(from)
        .bind(i64::from(free))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(SlotRecord::from_row).collect()
    }

    /// Books `a.slot_id` for `a` (status must be `booked`). The slot taken already (also by a
    /// concurrent booking) → [`StoreError::Conflict`]; nothing is written then.
    pub async fn book_appointment(
        &self,
        a: &AppointmentRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        claim_slot(&mut tx, &a.slot_id, &a.id).await?;
        sqlx::query(
            "INSERT INTO hc_appointments (id, slot_id, provider_id, patient_id, reason, status, \
             triage_priority, start_at, end_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&a.id)
        .bind(&a.slot_id)
        .bind(&a.provider_id)
        .bind(&a.patient_id)
        .bind(&a.reason)
        .bind(a.status.as_str())
        .bind(a.triage_priority)
        .bind(a.start_at)
        .bind(a.end_at)
        .bind(a.created_at)
        .bind(a.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "slot already booked"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An appointment by id.
    pub async fn appointment(&self, id: &str) -> Result<Option<AppointmentRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM hc_appointments a WHERE a.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(AppointmentRecord::from_row)
        .transpose()
    }

    /// Appointments where `user_id` is the patient or the provider, by start time.
    pub async fn appointments_of(
        &self,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<AppointmentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM hc_appointments a \
             LEFT JOIN hc_providers p ON p.id = a.provider_id \
             WHERE a.patient_id = $1 OR p.user_id = $1 ORDER BY a.start_at, a.id LIMIT $2"
        ))
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AppointmentRecord::from_row).collect()
    }

    /// Cancels a `booked` appointment and frees its slot. `None` when there is no booked
    /// appointment `id`.
    pub async fn cancel_appointment(
        &self,
        id: &str,
        now: i64,
        events: &[NewEvent],
    ) -> Result<Option<AppointmentRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE hc_appointments SET status = 'cancelled', updated_at = $2 \
             WHERE id = $1 AND status = 'booked'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query("UPDATE hc_slots SET appointment_id = NULL WHERE appointment_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let a = appointment_in(&mut tx, id).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(a)
    }

    /// Moves a `booked` appointment to the free slot `slot`, freeing the old one. `None` when
    /// there is no booked appointment `id`; the new slot taken → [`StoreError::Conflict`].
    pub async fn reschedule_appointment(
        &self,
        id: &str,
        slot: &SlotRecord,
        now: i64,
        events: &[NewEvent],
    ) -> Result<Option<AppointmentRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(old) = appointment_in(&mut tx, id).await? else {
            return Ok(None);
        };
        if old.status != AppointmentStatus::Booked {
            return Ok(None);
        }
        claim_slot(&mut tx, &slot.id, id).await?;
        sqlx::query("UPDATE hc_slots SET appointment_id = NULL WHERE id = $1")
            .bind(&old.slot_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE hc_appointments SET slot_id = $2, provider_id = $3, start_at = $4, \
             end_at = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(&slot.id)
        .bind(&slot.provider_id)
        .bind(slot.start_at)
        .bind(slot.end_at)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "slot already booked"))?;
        let a = appointment_in(&mut tx, id).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(a)
    }

    /// Whether the user `provider_user_id` is (or was) a treating provider of `patient_id`: has
    /// a booked or completed appointment with them.
    pub async fn treats(
        &self,
        provider_user_id: &str,
        patient_id: &str,
    ) -> Result<bool, StoreError> {
        // One probe of hc_appointments_care (patient, provider, status), whatever the
        // number of appointments either of them has; stops at the first match.
        let n: i64 = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT 1 FROM hc_appointments \
             WHERE patient_id = $2 \
             AND provider_id = (SELECT id FROM hc_providers WHERE user_id = $1) \
             AND status IN ('booked', 'completed') LIMIT 1) t",
        )
        .bind(provider_user_id)
        .bind(patient_id)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(n > 0)
    }

    /// Creates the consultation of an appointment; one exists already →
    /// [`StoreError::Conflict`].
    pub async fn create_consultation(
        &self,
        c: &ConsultationRecord,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO hc_consultations (id, appointment_id, room, status, waiting_since, \
             admitted_at, created_at, ended_at) VALUES ($1, $2, $3, 'open', NULL, NULL, $4, NULL)",
        )
        .bind(&c.id)
        .bind(&c.appointment_id)
        .bind(&c.room)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "this appointment has a consultation already"))?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A consultation by id.
    pub async fn consultation(&self, id: &str) -> Result<Option<ConsultationRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {CONSULTATION_COLUMNS} FROM hc_consultations c WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(ConsultationRecord::from_row)
        .transpose()
    }

    /// The consultation of an appointment.
    pub async fn consultation_of(
        &self,
        appointment_id: &str,
    ) -> Result<Option<ConsultationRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {CONSULTATION_COLUMNS} FROM hc_consultations c WHERE c.appointment_id = $1"
        ))
        .bind(appointment_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(ConsultationRecord::from_row)
        .transpose()
    }

    /// Notes that the patient took a room token and waits (kept from the first time).
    pub async fn consultation_waiting(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hc_consultations SET waiting_since = $2 \
             WHERE id = $1 AND waiting_since IS NULL AND admitted_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Notes that the patient was admitted.
    pub async fn consultation_admitted(
        &self,
        id: &str,
        now: i64,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE hc_consultations SET admitted_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends an open consultation and completes its appointment, with `events` (and the
    /// `records`, such as the encounter, written to the patient's record). `false` when it
    /// had ended already (nothing is written then).
    pub async fn end_consultation(
        &self,
        id: &str,
        now: i64,
        records: &[FhirRecord],
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE hc_consultations SET status = 'ended', ended_at = $2 \
             WHERE id = $1 AND status = 'open'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE hc_appointments SET status = 'completed', updated_at = $2 \
             WHERE id = (SELECT appointment_id FROM hc_consultations WHERE id = $1) \
             AND status = 'booked'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for r in records {
            put_record_in(&mut tx, r).await?;
        }
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The waiting room of a provider (user id): open consultations whose patient waits and
    /// is not admitted yet, most urgent triage priority first, then by appointment time.
    pub async fn provider_queue(
        &self,
        provider_user_id: &str,
    ) -> Result<Vec<(ConsultationRecord, AppointmentRecord)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONSULTATION_COLUMNS}, {APPOINTMENT_COLUMNS} FROM hc_consultations c \
             JOIN hc_appointments a ON a.id = c.appointment_id \
             JOIN hc_providers p ON p.id = a.provider_id \
             WHERE p.user_id = $1 AND c.status = 'open' AND c.waiting_since IS NOT NULL \
             AND c.admitted_at IS NULL \
             ORDER BY a.triage_priority, a.start_at, c.waiting_since LIMIT 1000"
        ))
        .bind(provider_user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    ConsultationRecord::from_row(r)?,
                    AppointmentRecord::from_row(r)?,
                ))
            })
            .collect()
    }

    /// Creates or updates a FHIR resource, setting its version (1, or the stored one plus
    /// one) and returning the stored record. The id belonging to another patient or type →
    /// [`StoreError::Conflict`].
    pub async fn put_record(
        &self,
        r: &FhirRecord,
        events: &[NewEvent],
    ) -> Result<FhirRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let stored = put_record_in(&mut tx, r).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// [`Store::put_record`] by `actor`, with its `record.write` audit entry (resource type,
    /// id and stored version; no clinical content) in the same transaction: the write and its
    /// audit trail commit together, at the cost of one commit.
    pub async fn put_record_audited(
        &self,
        r: &FhirRecord,
        events: &[NewEvent],
        actor: Option<&str>,
    ) -> Result<FhirRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let stored = put_record_in(&mut tx, r).await?;
        let detail = serde_json::json!({
            "resource_type": stored.resource_type, "id": stored.id, "version": stored.version,
        });
        audit_in(
            &mut tx,
            actor,
            "record.write",
            Some(&stored.patient_id),
            &detail,
        )
        .await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// A patient's resources (of one type when given), oldest first.
    pub async fn records_of(
        &self,
        patient_id: &str,
        resource_type: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FhirRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM hc_records WHERE patient_id = $1 \
             AND ($2 IS NULL OR resource_type = $2) ORDER BY created_at, id LIMIT $3",
        )
        .bind(patient_id)
        .bind(resource_type.map(str::to_string))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(FhirRecord::from_row).collect()
    }

    /// Records a case report and counts the cases of its syndrome in its region whose onset
    /// falls within `window_ms` before the report's onset. When that count reaches
    /// `threshold` and no epidemic of the syndrome was detected in the region within the
    /// window, an epidemic is recorded together with `on_detect(count)`'s events.
    pub async fn report_case(
        &self,
        c: &CaseReportRecord,
        window_ms: i64,
        threshold: i64,
        on_detect: impl FnOnce(i64) -> Vec<NewEvent>,
    ) -> Result<CaseOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO hc_case_reports (id, syndrome, region, lat, lon, onset_at, reported_by, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.syndrome)
        .bind(&c.region)
        .bind(c.lat)
        .bind(c.lon)
        .bind(c.onset_at)
        .bind(c.reported_by.clone())
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_write(e, "report id taken"))?;
        let since = c.onset_at.saturating_sub(window_ms);
        if self.backend() == Backend::Postgres {
            // One detector at a time per database, so two reports crossing the threshold
            // together record one epidemic.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(EPIDEMIC_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let cases: i64 = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM hc_case_reports WHERE syndrome = $1 \
             AND region = $2 AND onset_at > $3 AND onset_at <= $4",
        )
        .bind(&c.syndrome)
        .bind(&c.region)
        .bind(since)
        .bind(c.onset_at)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let mut detected = false;
        if cases >= threshold {
            let recent: i64 = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM hc_epidemics WHERE syndrome = $1 \
                 AND region = $2 AND detected_at > $3",
            )
            .bind(&c.syndrome)
            .bind(&c.region)
            .bind(c.created_at.saturating_sub(window_ms))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            if recent == 0 {
                sqlx::query(
                    "INSERT INTO hc_epidemics (id, syndrome, region, case_count, detected_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(&c.syndrome)
                .bind(&c.region)
                .bind(cases)
                .bind(c.created_at)
                .execute(&mut *tx)
                .await?;
                insert_events(&mut tx, &on_detect(cases)).await?;
                detected = true;
            }
        }
        tx.commit().await?;
        Ok(CaseOutcome {
            cases_in_window: cases,
            epidemic_detected: detected,
        })
    }
}

impl Store {
    /// Claims up to `limit` booked appointments starting after `now` and at most `lead_ms`
    /// later whose reminder has not gone out, marking them reminded. Each is claimed by one
    /// caller only (a conditional update), so several nodes may run reminders at once.
    pub async fn claim_due_reminders(
        &self,
        now: i64,
        lead_ms: i64,
        limit: i64,
    ) -> Result<Vec<AppointmentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM hc_appointments a WHERE a.status = 'booked' \
             AND a.reminded_at IS NULL AND a.start_at > $1 AND a.start_at <= $2 \
             ORDER BY a.start_at LIMIT $3"
        ))
        .bind(now)
        .bind(now.saturating_add(lead_ms))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::new();
        for a in rows.iter().map(AppointmentRecord::from_row) {
            let a = a?;
            let n = sqlx::query(
                "UPDATE hc_appointments SET reminded_at = $2 WHERE id = $1 AND reminded_at IS NULL",
            )
            .bind(&a.id)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n == 1 {
                claimed.push(a);
            }
        }
        Ok(claimed)
    }

    /// Gives a claimed reminder back (its delivery failed), so a later pass retries it.
    pub async fn release_reminder(&self, appointment_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE hc_appointments SET reminded_at = NULL WHERE id = $1")
            .bind(appointment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Erases a user's health and learning data inside the account-erasure transaction: their
/// FHIR resources, the reasons given for their appointments, their enrollments, submissions
/// and certificates. Appointment rows stay (without the reason) so providers' calendars keep
/// their history.
pub(crate) async fn erase_person_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM hc_records WHERE patient_id = $1",
        "UPDATE hc_appointments SET reason = '' WHERE patient_id = $1",
        "DELETE FROM ed_enrollments WHERE student_id = $1",
        "DELETE FROM ed_submissions WHERE student_id = $1",
        "DELETE FROM ed_certificates WHERE student_id = $1",
    ] {
        sqlx::query(sql).bind(user_id).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Arbitrary constant for PostgreSQL's advisory lock serializing epidemic detection.
const EPIDEMIC_LOCK: i64 = 0x006e_6578_6570;

/// Claims a free slot for `appointment_id` or fails with a conflict (or not found).
async fn claim_slot(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    slot_id: &str,
    appointment_id: &str,
) -> Result<(), StoreError> {
    let claimed = sqlx::query(
        "UPDATE hc_slots SET appointment_id = $1 WHERE id = $2 AND appointment_id IS NULL",
    )
    .bind(appointment_id)
    .bind(slot_id)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict("slot already booked".into()))
    }
}

async fn appointment_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> Result<Option<AppointmentRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {APPOINTMENT_COLUMNS} FROM hc_appointments a WHERE a.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .as_ref()
    .map(AppointmentRecord::from_row)
    .transpose()
}

async fn put_record_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    r: &FhirRecord,
) -> Result<FhirRecord, StoreError> {
    let existing = sqlx::query("SELECT * FROM hc_records WHERE id = $1")
        .bind(&r.id)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(FhirRecord::from_row)
        .transpose()?;
    let mut stored = r.clone();
    match existing {
        Some(old) if old.patient_id != r.patient_id || old.resource_type != r.resource_type => {
            return Err(StoreError::Conflict(
                "a resource with this id belongs to another record".into(),
            ));
        }
        Some(old) => {
            stored.version = old.version + 1;
            stored.created_at = old.created_at;
            set_meta(&mut stored);
            sqlx::query(
                "UPDATE hc_records SET resource = $2, version = $3, author_id = $4, \
                 updated_at = $5 WHERE id = $1 AND version = $6",
            )
            .bind(&stored.id)
            .bind(stored.resource.to_string())
            .bind(stored.version)
            .bind(stored.author_id.clone())
            .bind(stored.updated_at)
            .bind(old.version)
            .execute(&mut **tx)
            .await?;
        }
        None => {
            stored.version = 1;
            set_meta(&mut stored);
            sqlx::query(
                "INSERT INTO hc_records (id, patient_id, resource_type, resource, version, \
                 author_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&stored.id)
            .bind(&stored.patient_id)
            .bind(&stored.resource_type)
            .bind(stored.resource.to_string())
            .bind(stored.version)
            .bind(stored.author_id.clone())
            .bind(stored.created_at)
            .bind(stored.updated_at)
            .execute(&mut **tx)
            .await
            .map_err(|e| StoreError::from_write(e, "resource id taken"))?;
        }
    }
    Ok(stored)
}

/// Sets the resource's `id` and `meta.versionId` / `meta.lastUpdated` from the record.
fn set_meta(r: &mut FhirRecord) {
    if let Some(obj) = r.resource.as_object_mut() {
        obj.insert("id".into(), r.id.clone().into());
        let updated = chrono::DateTime::from_timestamp_millis(r.updated_at)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        obj.insert(
            "meta".into(),
            serde_json::json!({"versionId": r.version.to_string(), "lastUpdated": updated}),
        );
    }
}
