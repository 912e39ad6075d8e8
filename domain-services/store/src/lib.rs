//! The durable store of Nexus: one API over SQLite (embedded default) and PostgreSQL.
//!
//! The store is the source of truth; indexes elsewhere (the geo engine, gateway history) are
//! derived views rebuilt from it. Every state change that other parts of the platform must hear
//! about writes its event into the `outbox` table **in the same transaction** — write methods
//! take the events to record alongside the change — and a relay publishes the outbox later, so
//! an event is never lost when the bus is down and never published for a change that rolled
//! back.
//!
//! Both backends run through sqlx's `Any` driver with one portable schema per backend under
//! `migrations/` (text ids, integer timestamps in Unix milliseconds, JSON as text). SQL uses
//! `$1`-style placeholders, which SQLite and PostgreSQL both understand. PostgreSQL gets the
//! PostGIS extension when it is installed.
//!
//! # Layout
//! - [`db`] — [`Store`], connecting, migrations, health;
//! - [`users`] — user accounts, roles, settings, erasure;
//! - [`credentials`] — refresh-token families, one-time tokens, API keys;
//! - [`outbox`] — the transactional outbox and the audit log;
//! - [`consumers`] — event consumers' cursors, processed ids and dead letters;
//! - [`crisis`] — crisis-map objects, verification votes, geofences, reports (PostGIS
//!   columns when available);
//! - [`alerts`] — CAP alerts and their lifecycle, alert subscriptions, the durable
//!   per-recipient delivery queue;
//! - [`alert_ingest`] — external CAP feeds: poll validators, entries handled, alerts read
//!   (deduplicated by CAP identifier/sender/sent);
//! - [`healthcare`] — providers, slots, appointments (no double booking), consultations,
//!   FHIR resources, disease-surveillance case reports;
//! - [`education`] — courses, enrollments, live classes, assessments, certificates;
//! - [`error`] — [`StoreError`].
//!
//! # Example
//! ```
//! # tokio_test_block(async {
//! use nexus_store::{NewEvent, Store, UserRecord};
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("sqlite://{}/nexus.db", dir.path().display());
//! let store = Store::connect(&url).await.unwrap();
//! store.migrate().await.unwrap();
//! let user = UserRecord::new("u1", "ada@example.org", "Ada", "$argon2id$…", vec!["patient".into()], 1);
//! let event = NewEvent::new("nexus.users", "u1", "user.registered", "{}");
//! store.create_user(&user, &[event]).await.unwrap();
//! assert_eq!(store.user_by_email("ada@example.org").await.unwrap().unwrap().id, "u1");
//! assert_eq!(store.outbox_pending(10).await.unwrap().len(), 1);
//! # });
//! # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

pub mod alert_ingest;
pub mod alerts;
pub mod consumers;
pub mod credentials;
pub mod crisis;
pub mod db;
pub mod education;
pub mod error;
pub mod healthcare;
pub mod outbox;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod users;

pub use alert_ingest::{FeedState, IngestOutcome, IngestRecord};
pub use alerts::{
    AlertFilter, AlertRecord, AlertStatus, ChannelFilter, DeliveryOutcome, DeliveryRecord,
    DeliveryState, DeviceLocation, NewDelivery, SubscriptionPoint, SubscriptionRecord,
};
pub use consumers::DeadLetter;
pub use credentials::{ApiKeyRecord, RefreshRecord, RotateOutcome};
pub use crisis::{CrisisObjectRecord, GeofenceRecord, ReportRecord, Vote, VoteOutcome};
pub use db::{Backend, Store};
pub use education::{
    AssessmentRecord, CertificateRecord, ClassRecord, CourseRecord, EnrollmentRecord, Standing,
    SubmissionRecord,
};
pub use error::StoreError;
pub use healthcare::{
    AppointmentRecord, AppointmentStatus, CaseOutcome, CaseReportRecord, ConsultationRecord,
    FhirRecord, ProviderQuery, ProviderRecord, SlotRecord,
};
pub use outbox::{NewEvent, OutboxRow};
pub use users::{UserPatch, UserRecord};

/// Current time in Unix milliseconds, the store's timestamp unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
