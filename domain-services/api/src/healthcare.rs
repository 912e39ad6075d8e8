//! `/api/v1/healthcare/*`: provider profiles and availability slots, appointments,
//! consultations in SFU rooms with a waiting queue, and disease-surveillance case reports.
//! FHIR records are in [`crate::fhir`].
//!
//! # Consultations
//! `POST /healthcare/consultations {appointment_id}` names a `consultation` room for a booked
//! appointment (the SFU creates rooms on demand, when the first token joins).
//! `POST …/{id}/token` gives the appointment's provider a room token with grants
//! `publish, subscribe, admin` and its patient one with `publish, subscribe`: the SFU holds
//! the patient in its waiting room, and the consultation shows in the provider's
//! `GET /healthcare/queue` until `POST …/{id}/admit` admits them through the [`Rooms`] port.
//! `POST …/{id}/end` completes the appointment (`appointment.completed`), writes a FHIR
//! `Encounter` (with the provider's notes) to the patient's record and closes the room.
//!
//! [`Rooms`]: crate::rooms::Rooms

use crate::extract::ApiJson;
use crate::problem::{FieldError, Problem};
use crate::rbac::{Action, Principal};
use crate::state::ApiState;
pub(crate) use crate::time::rfc3339;
use crate::validate::Checks;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use nexus_auth::{Claims, Grant, Role, RoomKind};
use nexus_events::{EventType, record};
use nexus_store::{
    AppointmentRecord, AppointmentStatus, CaseReportRecord, ConsultationRecord, FhirRecord,
    NewEvent, ProviderQuery, ProviderRecord, SlotRecord, now_ms,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Cases of one syndrome in one region within [`SURVEILLANCE_WINDOW_MS`] that make an
/// epidemic.
pub const SURVEILLANCE_THRESHOLD: i64 = 10;
/// The surveillance window: seven days.
pub const SURVEILLANCE_WINDOW_MS: i64 = 7 * 24 * 3_600_000;
/// Size of the grid cells that group cases reported without a region, degrees.
pub const SURVEILLANCE_CELL_DEG: f64 = 0.5;

/// How long before an appointment its reminder goes out: 24 hours.
pub const REMINDER_LEAD_MS: i64 = 24 * 3_600_000;

/// Sends the due appointment reminders: an e-mail to the patient of every booked
/// appointment starting within [`REMINDER_LEAD_MS`] that has had none, and returns how many
/// went out. Each appointment is claimed in the store first, so nodes running this at once
/// never remind twice; a failed delivery gives the claim back for the next pass. The mail
/// names the time only, never the reason for the visit.
pub async fn send_due_reminders(
    state: &ApiState,
    now: i64,
) -> Result<usize, nexus_store::StoreError> {
    let due = state
        .store
        .claim_due_reminders(now, REMINDER_LEAD_MS, 100)
        .await?;
    let mut sent = 0;
    for a in due {
        let Some(user) = state.store.user_by_id(&a.patient_id).await? else {
            continue;
        };
        let mail = crate::mail::Mail {
            to: user.email,
            subject: "Reminder: your video consultation".into(),
            body: format!(
                "Hello {},\n\nyour video consultation starts at {} (UTC). Sign in a few \
                 minutes early to join: the provider admits you from the waiting room.\n\n\
                 Appointment: {}\n",
                user.name,
                rfc3339(a.start_at),
                a.id
            ),
            purpose: "appointment_reminder",
        };
        match state.mailer.send(mail).await {
            Ok(()) => sent += 1,
            Err(e) => {
                tracing::warn!(appointment = %a.id, error = %e, "reminder not sent; will retry");
                state.store.release_reminder(&a.id).await?;
            }
        }
    }
    Ok(sent)
}

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_provider, search_providers))
        .routes(routes!(get_provider))
        .routes(routes!(add_slot, list_slots))
        .routes(routes!(book, my_appointments))
        .routes(routes!(get_appointment))
        .routes(routes!(reschedule))
        .routes(routes!(cancel))
        .routes(routes!(create_consultation))
        .routes(routes!(get_consultation))
        .routes(routes!(consultation_token))
        .routes(routes!(admit))
        .routes(routes!(end))
        .routes(routes!(queue))
        .routes(routes!(report_case))
}

/// A provider's profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    /// Profile id.
    pub id: String,
    /// The provider's user id.
    pub user_id: String,
    /// Specialty.
    pub specialty: String,
    /// Languages spoken.
    pub languages: Vec<String>,
    /// Introduction.
    pub bio: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<ProviderRecord> for ProviderView {
    fn from(p: ProviderRecord) -> Self {
        ProviderView {
            id: p.id,
            user_id: p.user_id,
            specialty: p.specialty,
            languages: p.languages,
            bio: p.bio,
            created_at: rfc3339(p.created_at),
        }
    }
}

/// A page of providers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderPage {
    /// Providers, by id.
    pub items: Vec<ProviderView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Creating one's provider profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderRequest {
    /// Specialty, e.g. `general_practice` (letters, digits, `_`, `-`; stored lower case).
    pub specialty: String,
    /// Languages spoken, BCP 47 tags such as `en` or `pt-BR` (1 to 20).
    pub languages: Vec<String>,
    /// Introduction (at most 2000 characters).
    #[serde(default)]
    pub bio: Option<String>,
}

/// An availability slot.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotView {
    /// Slot id.
    pub id: String,
    /// Provider profile id.
    pub provider_id: String,
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: String,
    /// Whether it can still be booked.
    pub available: bool,
}

impl From<SlotRecord> for SlotView {
    fn from(s: SlotRecord) -> Self {
        SlotView {
            id: s.id,
            provider_id: s.provider_id,
            start: rfc3339(s.start_at),
            end: rfc3339(s.end_at),
            available: s.appointment_id.is_none(),
        }
    }
}

/// A list of slots.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotPage {
    /// Slots by start time.
    pub items: Vec<SlotView>,
    /// Always null: narrow with `from`.
    pub next_cursor: Option<String>,
}

/// A new slot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotRequest {
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339), after the start and at most 12 hours later.
    pub end: String,
}

/// An appointment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentView {
    /// Appointment id.
    pub id: String,
    /// `booked`, `cancelled` or `completed`.
    pub status: String,
    /// The slot.
    pub slot_id: String,
    /// Provider profile id.
    pub provider_id: String,
    /// Patient user id.
    pub patient_id: String,
    /// Reason for the visit.
    pub reason: String,
    /// Triage priority, 1 (most urgent) to 5.
    pub triage_priority: i64,
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: String,
    /// Booking time (RFC 3339).
    pub created_at: String,
}

impl From<AppointmentRecord> for AppointmentView {
    fn from(a: AppointmentRecord) -> Self {
        AppointmentView {
            id: a.id,
            status: a.status.as_str().to_string(),
            slot_id: a.slot_id,
            provider_id: a.provider_id,
            patient_id: a.patient_id,
            reason: a.reason,
            triage_priority: a.triage_priority,
            start: rfc3339(a.start_at),
            end: rfc3339(a.end_at),
            created_at: rfc3339(a.created_at),
        }
    }
}

/// A list of appointments.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentPage {
    /// The caller's appointments (as patient or provider), by start time.
    pub items: Vec<AppointmentView>,
    /// Always null (at most 1000 are listed).
    pub next_cursor: Option<String>,
}

/// Booking a slot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    /// The slot to book.
    pub slot_id: String,
    /// Reason for the visit (1 to 2000 characters).
    pub reason: String,
    /// Triage priority, 1 (most urgent) to 5; default 3.
    #[serde(default)]
    pub triage_priority: Option<i64>,
}

/// Moving an appointment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// A free slot of the same provider.
    pub slot_id: String,
}

/// Starting a consultation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsultationRequest {
    /// The booked appointment.
    pub appointment_id: String,
}

/// A consultation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsultationView {
    /// Consultation id.
    pub id: String,
    /// SFU room name (kind `consultation`).
    pub room: String,
    /// The appointment.
    pub appointment_id: String,
    /// `waiting_for_patient`, `patient_waiting`, `in_progress` or `ended`.
    pub status: String,
}

impl From<ConsultationRecord> for ConsultationView {
    fn from(c: ConsultationRecord) -> Self {
        let status = if c.ended_at.is_some() {
            "ended"
        } else if c.admitted_at.is_some() {
            "in_progress"
        } else if c.waiting_since.is_some() {
            "patient_waiting"
        } else {
            "waiting_for_patient"
        };
        ConsultationView {
            id: c.id,
            room: c.room,
            appointment_id: c.appointment_id,
            status: status.to_string(),
        }
    }
}

/// A room token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomToken {
    /// The JWT, for `/rtc?token=`, WHIP and WHEP.
    pub token: String,
    /// The room it opens.
    pub room: String,
    /// `consultation` or `class`.
    pub room_kind: String,
    /// What it allows: `publish`, `subscribe`, `admin`.
    pub grants: Vec<String>,
    /// Lifetime, seconds.
    pub expires_in: u64,
}

/// Ending a consultation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    /// The provider's notes, kept in the encounter written to the patient's record.
    #[serde(default)]
    pub notes: Option<String>,
}

/// An entry of a provider's waiting queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueEntry {
    /// Consultation id (for `…/admit`).
    pub consultation_id: String,
    /// The appointment.
    pub appointment_id: String,
    /// The waiting patient's user id.
    pub patient_id: String,
    /// SFU room.
    pub room: String,
    /// Triage priority, 1 (most urgent) to 5.
    pub triage_priority: i64,
    /// Appointment start (RFC 3339).
    pub start: String,
    /// Waiting since (RFC 3339).
    pub waiting_since: String,
}

/// The waiting queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePage {
    /// Waiting patients: most urgent triage priority first, then by appointment time.
    pub items: Vec<QueueEntry>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// A point.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatLon {
    /// Latitude, −90 to 90.
    pub lat: f64,
    /// Longitude, −180 to 180.
    pub lon: f64,
}

/// A disease-surveillance case report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseReportRequest {
    /// Syndrome code (`cholera`, `ili`, `measles`, …; letters, digits, `_`, `-`).
    pub syndrome: String,
    /// Where the case is.
    pub location: LatLon,
    /// Symptom onset: RFC 3339 or `YYYY-MM-DD`.
    pub date: String,
    /// Region code to count the case toward; default: the 0.5° grid cell of `location`.
    #[serde(default)]
    pub region: Option<String>,
}

/// The stored case report and what it changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseReportView {
    /// Report id.
    pub id: String,
    /// Region the case counts toward.
    pub region: String,
    /// Cases of the syndrome in the region within the surveillance window.
    pub cases_in_window: i64,
    /// Whether this report crossed the threshold (`epidemic.detected` was published).
    pub epidemic_detected: bool,
}

/// Parses RFC 3339 into Unix ms, recording a failure at `pointer`.
pub(crate) fn parse_time(checks: &mut Checks, pointer: &str, value: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.timestamp_millis());
    checks.check(
        t.is_some(),
        pointer,
        "must be an RFC 3339 time such as 2030-01-02T09:00:00Z",
    );
    t
}

fn is_code(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn user_of(who: &Principal) -> Result<&str, Problem> {
    who.user_id()
        .ok_or_else(|| Problem::forbidden("this endpoint is for users, not API keys"))
}

fn is_admin(who: &Principal) -> bool {
    who.roles().contains(&Role::Admin)
}

pub(crate) fn event(
    kind: EventType,
    subject: &str,
    data: serde_json::Value,
) -> Result<NewEvent, Problem> {
    record(kind, subject, data).map_err(|e| Problem::internal(&e))
}

fn limit_of(params: &HashMap<String, String>) -> Result<i64, Problem> {
    match params.get("limit") {
        None => Ok(50),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                Problem::validation(vec![FieldError {
                    pointer: "/limit".into(),
                    detail: "must be 1 to 1000".into(),
                }])
            }),
    }
}

async fn existing_appointment(state: &ApiState, id: &str) -> Result<AppointmentRecord, Problem> {
    state
        .store
        .appointment(id)
        .await?
        .ok_or_else(|| Problem::not_found("no such appointment"))
}

/// The user id of the provider of an appointment.
async fn provider_user(state: &ApiState, a: &AppointmentRecord) -> Result<String, Problem> {
    Ok(state
        .store
        .provider(&a.provider_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such provider"))?
        .user_id)
}

/// Who the caller is in an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Patient,
    Provider,
    Other,
}

async fn party(state: &ApiState, who: &Principal, a: &AppointmentRecord) -> Result<Party, Problem> {
    let Some(me) = who.user_id() else {
        return Ok(Party::Other);
    };
    if me == a.patient_id {
        return Ok(Party::Patient);
    }
    if provider_user(state, a).await? == me {
        return Ok(Party::Provider);
    }
    Ok(Party::Other)
}

/// Create one's provider profile (providers).
#[utoipa::path(post, path = "/healthcare/providers", tag = "healthcare", request_body = CreateProviderRequest,
    responses((status = 201, body = ProviderView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn create_provider(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<CreateProviderRequest>,
) -> Result<(StatusCode, Json<ProviderView>), Problem> {
    who.authorize(Action::ManageProviderProfile, None)?;
    let me = user_of(&who)?;
    let mut checks = Checks::new();
    checks.check(
        is_code(&req.specialty, 64),
        "/specialty",
        "must be 1 to 64 letters, digits, `_` or `-`",
    );
    checks.check(
        (1..=20).contains(&req.languages.len()),
        "/languages",
        "must list 1 to 20 languages",
    );
    for (i, l) in req.languages.iter().enumerate() {
        checks.check(
            is_code(l, 35) && !l.contains('_'),
            &format!("/languages/{i}"),
            "must be a BCP 47 language tag such as `en` or `pt-BR`",
        );
    }
    if let Some(bio) = &req.bio {
        checks.check(
            bio.chars().count() <= 2000,
            "/bio",
            "must be at most 2000 characters",
        );
    }
    checks.finish()?;
    let mut languages: Vec<String> = req
        .languages
        .iter()
        .map(|l| l.to_ascii_lowercase())
        .collect();
    languages.dedup();
    let p = ProviderRecord {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: me.to_string(),
        specialty: req.specialty.to_ascii_lowercase(),
        languages,
        bio: req.bio,
        created_at: now_ms(),
    };
    // The catalogue has no provider event: a profile is reference data, not a state change
    // other services react to.
    state.store.create_provider(&p, &[]).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

/// Search providers by specialty, language and availability (any signed-in user).
#[utoipa::path(get, path = "/healthcare/providers", tag = "healthcare",
    params(("specialty" = Option<String>, Query, description = "Exact specialty"),
        ("language" = Option<String>, Query, description = "A language spoken"),
        ("available_from" = Option<String>, Query, description = "RFC 3339: only providers with a free slot starting then or later"),
        ("limit" = Option<u32>, Query, description = "Page size, default 50, max 1000"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = ProviderPage), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn search_providers(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ProviderPage>, Problem> {
    who.authorize(Action::SearchProviders, None)?;
    let limit = limit_of(&params)?;
    let mut checks = Checks::new();
    let available_from = params
        .get("available_from")
        .and_then(|v| parse_time(&mut checks, "/available_from", v));
    checks.finish()?;
    let q = ProviderQuery {
        specialty: params
            .get("specialty")
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase()),
        language: params
            .get("language")
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase()),
        available_from,
        after: params.get("cursor").cloned(),
        limit,
    };
    if q.language.as_deref().is_some_and(|l| !is_code(l, 35)) {
        return Err(Problem::validation(vec![FieldError {
            pointer: "/language".into(),
            detail: "must be a BCP 47 language tag".into(),
        }]));
    }
    let page = state.store.search_providers(&q).await?;
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|p| p.id.clone()))
        .flatten();
    Ok(Json(ProviderPage {
        items: page.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One provider's profile (any signed-in user).
#[utoipa::path(get, path = "/healthcare/providers/{id}", tag = "healthcare",
    params(("id" = String, Path, description = "Provider profile id")),
    responses((status = 200, body = ProviderView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_provider(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ProviderView>, Problem> {
    who.authorize(Action::SearchProviders, None)?;
    let p = state
        .store
        .provider(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such provider"))?;
    Ok(Json(p.into()))
}

/// Publish an availability slot (the provider themself, or an admin).
#[utoipa::path(post, path = "/healthcare/providers/{id}/slots", tag = "healthcare",
    params(("id" = String, Path, description = "Provider profile id")), request_body = SlotRequest,
    responses((status = 201, body = SlotView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn add_slot(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SlotRequest>,
) -> Result<(StatusCode, Json<SlotView>), Problem> {
    who.authorize(Action::ManageProviderProfile, None)?;
    let p = state
        .store
        .provider(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such provider"))?;
    if who.user_id() != Some(p.user_id.as_str()) && !is_admin(&who) {
        return Err(Problem::forbidden(
            "only the provider publishes their slots",
        ));
    }
    let mut checks = Checks::new();
    let start = parse_time(&mut checks, "/start", &req.start);
    let end = parse_time(&mut checks, "/end", &req.end);
    if let (Some(s), Some(e)) = (start, end) {
        checks.check(
            e > s && e - s <= 12 * 3_600_000,
            "/end",
            "must be after the start and at most 12 hours later",
        );
    }
    checks.finish()?;
    let (Some(start_at), Some(end_at)) = (start, end) else {
        return Err(Problem::new(crate::ProblemKind::Validation, "bad times"));
    };
    let slot = SlotRecord {
        id: uuid::Uuid::now_v7().to_string(),
        provider_id: p.id,
        start_at,
        end_at,
        appointment_id: None,
        created_at: now_ms(),
    };
    state.store.add_slot(&slot, &[]).await?;
    Ok((StatusCode::CREATED, Json(slot.into())))
}

/// A provider's slots from a time on (any signed-in user).
#[utoipa::path(get, path = "/healthcare/providers/{id}/slots", tag = "healthcare",
    params(("id" = String, Path, description = "Provider profile id"),
        ("from" = Option<String>, Query, description = "RFC 3339; default now"),
        ("available" = Option<bool>, Query, description = "Only free slots (default true)"),
        ("limit" = Option<u32>, Query, description = "At most this many, default 50, max 1000")),
    responses((status = 200, body = SlotPage), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn list_slots(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SlotPage>, Problem> {
    who.authorize(Action::SearchProviders, None)?;
    let limit = limit_of(&params)?;
    let mut checks = Checks::new();
    let from = params
        .get("from")
        .and_then(|v| parse_time(&mut checks, "/from", v))
        .unwrap_or_else(now_ms);
    checks.finish()?;
    let free = params.get("available").is_none_or(|v| v != "false");
    if state.store.provider(&id).await?.is_none() {
        return Err(Problem::not_found("no such provider"));
    }
    let slots = state.store.slots_of(&id, from, free, limit).await?;
    Ok(Json(SlotPage {
        items: slots.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

/// Book a slot (patients). A slot taken already — also by a concurrent booking — is 409.
#[utoipa::path(post, path = "/healthcare/appointments", tag = "healthcare", request_body = BookRequest,
    responses((status = 201, body = AppointmentView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn book(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<BookRequest>,
) -> Result<(StatusCode, Json<AppointmentView>), Problem> {
    who.authorize(Action::BookAppointment, None)?;
    let me = user_of(&who)?;
    let priority = req.triage_priority.unwrap_or(3);
    Checks::new()
        .check(
            (1..=2000).contains(&req.reason.trim().chars().count()),
            "/reason",
            "must be 1 to 2000 characters",
        )
        .check(
            (1..=5).contains(&priority),
            "/triage_priority",
            "must be 1 to 5",
        )
        .finish()?;
    let slot = state
        .store
        .slot(&req.slot_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such slot"))?;
    if slot.appointment_id.is_some() {
        return Err(Problem::conflict("slot already booked"));
    }
    let now = now_ms();
    let a = AppointmentRecord {
        id: uuid::Uuid::now_v7().to_string(),
        slot_id: slot.id,
        provider_id: slot.provider_id,
        patient_id: me.to_string(),
        reason: req.reason.trim().to_string(),
        status: AppointmentStatus::Booked,
        triage_priority: priority,
        start_at: slot.start_at,
        end_at: slot.end_at,
        created_at: now,
        updated_at: now,
    };
    let ev = event(
        EventType::AppointmentCreated,
        &a.id,
        json!({"id": a.id, "provider_id": a.provider_id, "patient_id": a.patient_id,
               "slot_id": a.slot_id, "start": rfc3339(a.start_at)}),
    )?;
    state.store.book_appointment(&a, &[ev]).await?;
    Ok((StatusCode::CREATED, Json(a.into())))
}

/// The caller's appointments, as patient or provider.
#[utoipa::path(get, path = "/healthcare/appointments", tag = "healthcare",
    responses((status = 200, body = AppointmentPage), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn my_appointments(
    State(state): State<ApiState>,
    who: Principal,
) -> Result<Json<AppointmentPage>, Problem> {
    let me = user_of(&who)?;
    let items = state.store.appointments_of(me, 1000).await?;
    Ok(Json(AppointmentPage {
        items: items.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

/// One appointment (its patient, its provider, or an admin).
#[utoipa::path(get, path = "/healthcare/appointments/{id}", tag = "healthcare",
    params(("id" = String, Path, description = "Appointment id")),
    responses((status = 200, body = AppointmentView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_appointment(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<AppointmentView>, Problem> {
    let a = existing_appointment(&state, &id).await?;
    let owner = (party(&state, &who, &a).await? != Party::Other)
        .then(|| who.user_id())
        .flatten();
    who.authorize(Action::ReadAppointment, owner)?;
    Ok(Json(a.into()))
}

/// Move a booked appointment to another free slot of the same provider (its patient, its
/// provider, or an admin).
#[utoipa::path(post, path = "/healthcare/appointments/{id}/reschedule", tag = "healthcare",
    params(("id" = String, Path, description = "Appointment id")), request_body = RescheduleRequest,
    responses((status = 200, body = AppointmentView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn reschedule(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RescheduleRequest>,
) -> Result<Json<AppointmentView>, Problem> {
    let a = existing_appointment(&state, &id).await?;
    let owner = (party(&state, &who, &a).await? != Party::Other)
        .then(|| who.user_id())
        .flatten();
    who.authorize(Action::ChangeAppointment, owner)?;
    let slot = state
        .store
        .slot(&req.slot_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such slot"))?;
    if slot.provider_id != a.provider_id {
        return Err(Problem::validation(vec![FieldError {
            pointer: "/slot_id".into(),
            detail: "must be a slot of the same provider".into(),
        }]));
    }
    let ev = event(
        EventType::AppointmentRescheduled,
        &id,
        json!({"id": id, "slot_id": slot.id, "start": rfc3339(slot.start_at)}),
    )?;
    match state
        .store
        .reschedule_appointment(&id, &slot, now_ms(), &[ev])
        .await?
    {
        Some(a) => Ok(Json(a.into())),
        None => Err(Problem::conflict(
            "only a booked appointment can be rescheduled",
        )),
    }
}

/// Cancel a booked appointment, freeing its slot (its patient, its provider, or an admin).
#[utoipa::path(post, path = "/healthcare/appointments/{id}/cancel", tag = "healthcare",
    params(("id" = String, Path, description = "Appointment id")),
    responses((status = 200, body = AppointmentView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn cancel(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<AppointmentView>, Problem> {
    let a = existing_appointment(&state, &id).await?;
    let owner = (party(&state, &who, &a).await? != Party::Other)
        .then(|| who.user_id())
        .flatten();
    who.authorize(Action::ChangeAppointment, owner)?;
    let ev = event(EventType::AppointmentCancelled, &id, json!({"id": id}))?;
    match state.store.cancel_appointment(&id, now_ms(), &[ev]).await? {
        Some(a) => Ok(Json(a.into())),
        None => Err(Problem::conflict(
            "only a booked appointment can be cancelled",
        )),
    }
}

/// Open the consultation of a booked appointment (its patient, its provider, or an admin);
/// asking again returns the same consultation with 200.
#[utoipa::path(post, path = "/healthcare/consultations", tag = "healthcare", request_body = ConsultationRequest,
    responses((status = 201, body = ConsultationView), (status = 200, body = ConsultationView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn create_consultation(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<ConsultationRequest>,
) -> Result<(StatusCode, Json<ConsultationView>), Problem> {
    let a = existing_appointment(&state, &req.appointment_id).await?;
    let owner = (party(&state, &who, &a).await? != Party::Other)
        .then(|| who.user_id())
        .flatten();
    who.authorize(Action::OpenConsultation, owner)?;
    if let Some(c) = state.store.consultation_of(&a.id).await? {
        return Ok((StatusCode::OK, Json(c.into())));
    }
    if a.status != AppointmentStatus::Booked {
        return Err(Problem::conflict(format!(
            "the appointment is {}",
            a.status.as_str()
        )));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let c = ConsultationRecord {
        room: format!("consult-{id}"),
        id,
        appointment_id: a.id.clone(),
        waiting_since: None,
        admitted_at: None,
        created_at: now_ms(),
        ended_at: None,
    };
    let ev = event(
        EventType::ConsultationStarted,
        &a.id,
        json!({"id": c.id, "appointment_id": a.id, "room": c.room}),
    )?;
    match state.store.create_consultation(&c, &[ev]).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(c.into()))),
        // A concurrent request created it first: answer with that one.
        Err(nexus_store::StoreError::Conflict(_)) => {
            match state.store.consultation_of(&a.id).await? {
                Some(c) => Ok((StatusCode::OK, Json(c.into()))),
                None => Err(Problem::conflict("the consultation could not be created")),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn existing_consultation(
    state: &ApiState,
    id: &str,
) -> Result<(ConsultationRecord, AppointmentRecord), Problem> {
    let c = state
        .store
        .consultation(id)
        .await?
        .ok_or_else(|| Problem::not_found("no such consultation"))?;
    let a = existing_appointment(state, &c.appointment_id).await?;
    Ok((c, a))
}

/// One consultation (its patient, its provider, or an admin).
#[utoipa::path(get, path = "/healthcare/consultations/{id}", tag = "healthcare",
    params(("id" = String, Path, description = "Consultation id")),
    responses((status = 200, body = ConsultationView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_consultation(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConsultationView>, Problem> {
    let (c, a) = existing_consultation(&state, &id).await?;
    let owner = (party(&state, &who, &a).await? != Party::Other)
        .then(|| who.user_id())
        .flatten();
    who.authorize(Action::ReadAppointment, owner)?;
    Ok(Json(c.into()))
}

/// A room token for the caller: the appointment's provider gets `publish, subscribe,
/// admin`; its patient `publish, subscribe` and waits in the SFU's waiting room until
/// admitted. Nobody else gets one (403).
#[utoipa::path(post, path = "/healthcare/consultations/{id}/token", tag = "healthcare",
    params(("id" = String, Path, description = "Consultation id")),
    responses((status = 200, body = RoomToken), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn consultation_token(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<RoomToken>, Problem> {
    let (c, a) = existing_consultation(&state, &id).await?;
    let me = user_of(&who)?;
    let grants = match party(&state, &who, &a).await? {
        Party::Provider => vec![Grant::Publish, Grant::Subscribe, Grant::Admin],
        Party::Patient => vec![Grant::Publish, Grant::Subscribe],
        Party::Other => {
            return Err(Problem::forbidden(
                "only the appointment's patient and provider join its consultation",
            ));
        }
    };
    who.authorize(Action::JoinConsultation, Some(me))?;
    if c.ended_at.is_some() {
        return Err(Problem::conflict("the consultation has ended"));
    }
    if !grants.contains(&Grant::Admin) {
        state.store.consultation_waiting(&c.id, now_ms()).await?;
    }
    room_token(&state, me, &c.room, RoomKind::Consultation, grants).await
}

/// Mints a room token named after the user's display name.
pub(crate) async fn room_token(
    state: &ApiState,
    user: &str,
    room: &str,
    kind: RoomKind,
    grants: Vec<Grant>,
) -> Result<Json<RoomToken>, Problem> {
    let ttl = state.auth.realtime_ttl_secs;
    let mut claims = Claims::new(user, ttl).with_room(room, kind, grants.clone());
    claims.name = state.store.user_by_id(user).await?.map(|u| u.name);
    let token = state
        .keys
        .mint(&claims)
        .map_err(|e| Problem::internal(&e))?;
    let name = |g: &Grant| match g {
        Grant::Publish => "publish",
        Grant::Subscribe => "subscribe",
        Grant::Admin => "admin",
    };
    Ok(Json(RoomToken {
        token,
        room: room.to_string(),
        room_kind: match kind {
            RoomKind::Consultation => "consultation",
            RoomKind::Class => "class",
        }
        .to_string(),
        grants: grants.iter().map(|g| name(g).to_string()).collect(),
        expires_in: ttl,
    }))
}

async fn moderate(
    state: &ApiState,
    who: &Principal,
    id: &str,
) -> Result<(ConsultationRecord, AppointmentRecord), Problem> {
    who.authorize(Action::ModerateConsultation, None)?;
    let (c, a) = existing_consultation(state, id).await?;
    if !is_admin(who) && party(state, who, &a).await? != Party::Provider {
        return Err(Problem::forbidden(
            "only the appointment's provider moderates its consultation",
        ));
    }
    if c.ended_at.is_some() {
        return Err(Problem::conflict("the consultation has ended"));
    }
    Ok((c, a))
}

/// Admit the patient from the SFU waiting room (the appointment's provider, or an admin).
/// A patient who has not joined yet is admitted in advance when the room exists; with no
/// room yet (nobody joined) the answer is 409.
#[utoipa::path(post, path = "/healthcare/consultations/{id}/admit", tag = "healthcare",
    params(("id" = String, Path, description = "Consultation id")),
    responses((status = 200, body = ConsultationView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn admit(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConsultationView>, Problem> {
    let (mut c, a) = moderate(&state, &who, &id).await?;
    state
        .rooms
        .admit(&c.room, &a.patient_id)
        .await
        .map_err(|why| Problem::conflict(format!("the SFU could not admit the patient: {why}")))?;
    let now = now_ms();
    state.store.consultation_admitted(&c.id, now, &[]).await?;
    c.admitted_at = Some(now);
    Ok(Json(c.into()))
}

/// End the consultation (the appointment's provider, or an admin): the appointment
/// completes, an `Encounter` with the notes goes to the patient's record, the room closes.
#[utoipa::path(post, path = "/healthcare/consultations/{id}/end", tag = "healthcare",
    params(("id" = String, Path, description = "Consultation id")), request_body(content = EndRequest, description = "Optional notes"),
    responses((status = 200, body = AppointmentView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn end(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<AppointmentView>, Problem> {
    let (c, a) = moderate(&state, &who, &id).await?;
    // The body is optional: no body means no notes.
    let req: EndRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EndRequest::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    if let Some(n) = &req.notes {
        Checks::new()
            .check(
                n.chars().count() <= 20_000,
                "/notes",
                "must be at most 20000 characters",
            )
            .finish()?;
    }
    let now = now_ms();
    let author = who.user_id().map(str::to_string);
    let encounter = crate::fhir::consultation_encounter(&c, &a, now, req.notes.as_deref());
    let enc = FhirRecord {
        id: format!("enc-{}", c.id),
        patient_id: a.patient_id.clone(),
        resource_type: "Encounter".into(),
        resource: encounter,
        version: 0,
        author_id: author.clone(),
        created_at: now,
        updated_at: now,
    };
    let events = [
        event(
            EventType::ConsultationEnded,
            &a.id,
            json!({"id": c.id, "appointment_id": a.id}),
        )?,
        event(
            EventType::AppointmentCompleted,
            &a.id,
            json!({"id": a.id, "provider_id": a.provider_id, "patient_id": a.patient_id}),
        )?,
        event(
            EventType::RecordUpdated,
            &a.patient_id,
            json!({"patient_id": a.patient_id, "resource_type": "Encounter", "id": enc.id}),
        )?,
    ];
    if !state
        .store
        .end_consultation(&c.id, now, &[enc], &events)
        .await?
    {
        return Err(Problem::conflict("the consultation has ended"));
    }
    state
        .store
        .audit(
            author.as_deref(),
            "record.write",
            Some(&a.patient_id),
            &json!({"resource_type": "Encounter", "consultation": c.id}),
        )
        .await?;
    state.rooms.close(&c.room).await;
    let a = existing_appointment(&state, &a.id).await?;
    Ok(Json(a.into()))
}

/// The caller's waiting room (providers): patients holding a room token for an open
/// consultation and not yet admitted, most urgent triage priority first, then by
/// appointment time.
#[utoipa::path(get, path = "/healthcare/queue", tag = "healthcare",
    responses((status = 200, body = QueuePage), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn queue(State(state): State<ApiState>, who: Principal) -> Result<Json<QueuePage>, Problem> {
    who.authorize(Action::ModerateConsultation, None)?;
    let me = user_of(&who)?;
    let items = state
        .store
        .provider_queue(me)
        .await?
        .into_iter()
        .map(|(c, a)| QueueEntry {
            consultation_id: c.id,
            appointment_id: a.id,
            patient_id: a.patient_id,
            room: c.room,
            triage_priority: a.triage_priority,
            start: rfc3339(a.start_at),
            waiting_since: rfc3339(c.waiting_since.unwrap_or_default()),
        })
        .collect();
    Ok(Json(QueuePage {
        items,
        next_cursor: None,
    }))
}

/// Report a case for disease surveillance (providers and admins). When the cases of one
/// syndrome in one region within seven days reach the threshold, `epidemic.detected` is
/// published (once per window).
#[utoipa::path(post, path = "/healthcare/data-collection", tag = "healthcare", request_body = CaseReportRequest,
    responses((status = 201, body = CaseReportView), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn report_case(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<CaseReportRequest>,
) -> Result<(StatusCode, Json<CaseReportView>), Problem> {
    who.authorize(Action::ReportCase, None)?;
    let mut checks = Checks::new();
    checks
        .check(
            is_code(&req.syndrome, 64),
            "/syndrome",
            "must be 1 to 64 letters, digits, `_` or `-`",
        )
        .check(
            req.location.lat.is_finite() && req.location.lat.abs() <= 90.0,
            "/location/lat",
            "must be -90 to 90",
        )
        .check(
            req.location.lon.is_finite() && req.location.lon.abs() <= 180.0,
            "/location/lon",
            "must be -180 to 180",
        );
    if let Some(r) = &req.region {
        checks.check(
            is_code(r, 64),
            "/region",
            "must be 1 to 64 letters, digits, `_` or `-`",
        );
    }
    let onset = chrono::DateTime::parse_from_rfc3339(&req.date)
        .map(|t| t.timestamp_millis())
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(&req.date, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
        });
    let now = now_ms();
    checks.check(
        onset.is_some_and(|t| t <= now + 86_400_000),
        "/date",
        "must be an RFC 3339 time or YYYY-MM-DD, not in the future",
    );
    checks.finish()?;
    let onset_at = onset.unwrap_or(now);
    let region = req.region.clone().unwrap_or_else(|| {
        let cell = |v: f64| (v / SURVEILLANCE_CELL_DEG).floor() as i64;
        format!("cell_{}_{}", cell(req.location.lat), cell(req.location.lon))
    });
    let syndrome = req.syndrome.to_ascii_lowercase();
    let c = CaseReportRecord {
        id: uuid::Uuid::now_v7().to_string(),
        syndrome: syndrome.clone(),
        region: region.clone(),
        lat: req.location.lat,
        lon: req.location.lon,
        onset_at,
        reported_by: who.user_id().map(str::to_string),
        created_at: now,
    };
    let subject = format!("{syndrome}:{region}");
    let data = json!({"syndrome": syndrome, "region": region,
        "threshold": SURVEILLANCE_THRESHOLD, "window_days": SURVEILLANCE_WINDOW_MS / 86_400_000,
        "location": {"lat": req.location.lat, "lon": req.location.lon}});
    let out = state
        .store
        .report_case(
            &c,
            SURVEILLANCE_WINDOW_MS,
            SURVEILLANCE_THRESHOLD,
            |cases| {
                let mut data = data;
                data["cases"] = cases.into();
                // `data` is a JSON value already: building the event cannot fail.
                record(EventType::EpidemicDetected, &subject, data)
                    .into_iter()
                    .collect()
            },
        )
        .await?;
    // A detected epidemic reaches the crisis map through the event bus: the real-time core
    // consumes `epidemic.detected` from the outbox and publishes it, located, on `incidents`.
    Ok((
        StatusCode::CREATED,
        Json(CaseReportView {
            id: c.id,
            region,
            cases_in_window: out.cases_in_window,
            epidemic_detected: out.epidemic_detected,
        }),
    ))
}
