//! `/api/v1/crisis/*`: incidents (report, query, verify, resolve / reject / assign),
//! resources, volunteers and their locations, situation reports, shelters, hazard areas and
//! the clustered map.
//!
//! Every write is stored first (with its CloudEvents in the outbox, same transaction); only
//! then is the geo index updated, so reads see the change at once, and the change published
//! to the gateway: incidents on [`INCIDENTS_CHANNEL`] with `location: {lat, lon}` (so
//! geo-filtered subscribers get them), geofence transitions on [`GEOFENCES_CHANNEL`] and as
//! `geofence.triggered` events. Fence transitions come out of the index, after the commit,
//! so their events are written in a second transaction right after the first.
//!
//! Bodies locate things as GeoJSON (a `Feature` whose `properties` hold the attributes, or a
//! `geometry` member) or as `{"lat", "lon"}` (flat, or under `location`). Invalid
//! coordinates are a `400` validation problem whose `errors[].pointer` names the field.
//! Query results are GeoJSON FeatureCollections whose features carry the store id.
//!
//! Volunteers' positions are personal data: they appear in no event, no log line, and on the
//! map only for roles allowed [`Action::ViewResponders`].

use crate::extract::ApiJson;
use crate::geo_service::{FenceNotice, GeoService, GeoServiceError};
use crate::problem::{FieldError, Problem, ProblemKind};
use crate::rbac::{Action, Principal, allowed};
use crate::state::ApiState;
use crate::time::rfc3339;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use nexus_events::{EventType, record};
use nexus_geo::{
    Area, Attributes, BBox, ClusterFilter, ClusterQuery, Filter, GeoError, GeoJsonGeometry,
    Geometry, Hazard, Incident, Kind, KindSet, MAX_ZOOM, Object, ObjectId, Position, Resource,
    Responder, Severity, Shelter, Status, StatusSet, Timestamp, Transition,
};
use nexus_store::{
    CrisisObjectRecord, NewEvent, ReportRecord, Store, StoreError, Vote, VoteOutcome, now_ms,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Distinct confirmations from trusted roles (other than the reporter) that verify an
/// incident.
pub const VERIFY_THRESHOLD: i64 = 2;
/// Gateway channel of incident publications.
pub const INCIDENTS_CHANNEL: &str = "incidents";
/// Gateway channel of geofence transitions.
pub const GEOFENCES_CHANNEL: &str = "geofences";
/// Default and largest `limit` of list queries.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// Default and largest number of map features.
const DEFAULT_MAP_LIMIT: usize = 2000;
const MAX_MAP_LIMIT: usize = 10_000;
/// Most vertices in one geometry.
const MAX_VERTICES: usize = 10_000;
/// Largest radius of a query or circle, metres (half the Earth's circumference).
const MAX_RADIUS_M: f64 = 20_037_508.0;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(report_incident, list_incidents))
        .routes(routes!(get_incident, patch_incident))
        .routes(routes!(verify_incident))
        .routes(routes!(create_resource, list_resources))
        .routes(routes!(register_volunteer))
        .routes(routes!(move_volunteer))
        .routes(routes!(file_report))
        .routes(routes!(crisis_map))
        .routes(routes!(create_shelter, list_shelters))
        .routes(routes!(create_hazard, list_hazards))
}

// ---------------------------------------------------------------------------------------
// Views and request documents

/// A point as `{"lat", "lon"}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatLon {
    /// Latitude, degrees (−90 to 90).
    pub lat: f64,
    /// Longitude, degrees (−180 to 180).
    pub lon: f64,
}

/// An incident as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentView {
    /// Incident id.
    pub id: String,
    /// Incident type (`flood`, `fire`, …).
    #[serde(rename = "type")]
    pub incident_type: String,
    /// Severity 1 (lowest) to 5.
    pub severity: u8,
    /// `reported`, `verified`, `resolved` or `rejected`.
    pub status: String,
    /// Short title.
    pub title: Option<String>,
    /// Free-text description.
    pub description: Option<String>,
    /// Where it is.
    pub location: LatLon,
    /// Who reported it (user id).
    pub reporter_id: Option<String>,
    /// Volunteers assigned to it (ids).
    pub assigned: Vec<String>,
    /// Distinct confirmations.
    pub confirmations: i64,
    /// Distinct disputes.
    pub disputes: i64,
    /// Report time (RFC 3339).
    pub reported_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

/// Report an incident: a flat object like this, or a GeoJSON `Feature` with a `Point`
/// geometry and these fields (without `lat`/`lon`) in `properties`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReportIncidentRequest {
    /// Incident type (`flood`, `fire`, `injury`, …), 1–64 characters.
    #[serde(rename = "type")]
    pub incident_type: String,
    /// Severity 1 to 5 (default 3).
    pub severity: Option<u8>,
    /// Latitude (or give `location: {lat, lon}` or a GeoJSON `geometry`).
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Short title, up to 200 characters.
    pub title: Option<String>,
    /// Description, up to 4000 characters.
    pub description: Option<String>,
}

/// Change an incident (coordinators): resolve or reject it, assign volunteers, re-grade it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIncidentRequest {
    /// `resolved` or `rejected`.
    pub status: Option<String>,
    /// Volunteer ids to assign (replaces the list).
    pub assign: Option<Vec<String>>,
    /// New severity 1 to 5.
    pub severity: Option<u8>,
}

/// A verification vote.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// `confirm` (default) or `dispute`.
    #[serde(default)]
    pub vote: Option<String>,
}

/// The tally after a vote.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResult {
    /// Incident id.
    pub id: String,
    /// Status after the vote.
    pub status: String,
    /// Distinct confirmations.
    pub confirmations: i64,
    /// Distinct disputes.
    pub disputes: i64,
    /// Confirmations needed to verify.
    pub threshold: i64,
}

/// Register a resource (vehicle, depot, …) at a point.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateResourceRequest {
    /// Resource type (`ambulance`, `depot`, …).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Name.
    pub name: Option<String>,
    /// Latitude (or `location` / GeoJSON).
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Item → quantity on hand.
    pub inventory: Option<BTreeMap<String, u32>>,
}

/// Register yourself as a volunteer at your current position.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterVolunteerRequest {
    /// Role on the ground (default `volunteer`).
    #[serde(rename = "type")]
    pub role: Option<String>,
    /// Skills (`first aid`, `driver`, …).
    pub skills: Option<Vec<String>>,
    /// Latitude (or `location` / GeoJSON).
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
}

/// A volunteer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VolunteerView {
    /// Volunteer id.
    pub id: String,
    /// The user.
    pub user_id: Option<String>,
    /// Role on the ground.
    #[serde(rename = "type")]
    pub role: String,
    /// Skills.
    pub skills: Vec<String>,
    /// Current position.
    pub location: LatLon,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

/// A volunteer's new position and the geofence transitions it caused.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocationUpdate {
    /// Volunteer id.
    pub id: String,
    /// The new position.
    pub location: LatLon,
    /// Transitions (`enter`, `exit`, `cross`, …) per fence.
    #[schema(value_type = Vec<Object>)]
    pub geofence_events: Vec<FenceNotice>,
}

/// A situation report.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FileReportRequest {
    /// One-line summary, 1–500 characters.
    pub summary: String,
    /// The incident it is about.
    pub incident_id: Option<String>,
    /// Further structured details (a JSON object, up to 16 KiB).
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// Latitude, when located.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
}

/// A filed situation report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportView {
    /// Report id.
    pub id: String,
    /// The incident it is about.
    pub incident_id: Option<String>,
    /// Author (user id).
    pub author_id: Option<String>,
    /// Summary.
    pub summary: String,
    /// Details.
    #[schema(value_type = Object)]
    pub details: Value,
    /// Where, when located.
    pub location: Option<LatLon>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// Create a shelter or hazard area: a flat object with a GeoJSON `geometry` (`Polygon`,
/// `MultiPolygon`, or for shelters a `Point`), or a GeoJSON `Feature`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateAreaRequest {
    /// Type (`school`, `flood`, …).
    #[serde(rename = "type")]
    pub area_type: String,
    /// Name.
    pub name: Option<String>,
    /// Shelters: how many people fit.
    pub capacity: Option<u32>,
    /// Hazards: severity 1 to 5 (default 3).
    pub severity: Option<u8>,
    /// GeoJSON geometry.
    #[schema(value_type = Object)]
    pub geometry: Value,
}

/// Query parameters of geo lists (GeoJSON order: `near=lon,lat`,
/// `bbox=minLon,minLat,maxLon,maxLat`; a minLon above maxLon crosses the antimeridian).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GeoListParams {
    /// `minLon,minLat,maxLon,maxLat`.
    pub bbox: Option<String>,
    /// `lon,lat`: with `radius_m` (radius query) or `k` (k nearest).
    pub near: Option<String>,
    /// Radius in metres (great-circle).
    pub radius_m: Option<f64>,
    /// Number of nearest objects, 1–1000.
    pub k: Option<u32>,
    /// Type filter.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub object_type: Option<String>,
    /// Lowest severity, 1–5.
    pub min_severity: Option<u8>,
    /// Comma-separated incident statuses.
    pub status: Option<String>,
    /// Earliest time (RFC 3339).
    pub since: Option<String>,
    /// Latest time (RFC 3339).
    pub until: Option<String>,
    /// Most features (default 50, max 1000).
    pub limit: Option<u32>,
}

/// Query parameters of the map.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MapParams {
    /// The view: `minLon,minLat,maxLon,maxLat`.
    pub bbox: String,
    /// Map zoom, 0–20.
    pub zoom: u8,
    /// Comma-separated kinds (default `incident,resource,shelter,hazard`; `responder`
    /// needs the coordinator or admin role).
    pub kinds: Option<String>,
    /// Comma-separated incident statuses.
    pub status: Option<String>,
    /// Lowest severity, 1–5.
    pub min_severity: Option<u8>,
    /// Most features (default 2000, max 10000).
    pub limit: Option<u32>,
}

// ---------------------------------------------------------------------------------------
// Handlers

/// Report an incident (any signed-in user). It is stored, indexed, and published on the
/// gateway's `incidents` channel with its location.
#[utoipa::path(post, path = "/crisis/incidents", tag = "crisis",
    request_body = ReportIncidentRequest,
    responses((status = 201, body = IncidentView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn report_incident(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<IncidentView>), Problem> {
    who.authorize(Action::ReportIncident, None)?;
    let mut input = Input::new(&body)?;
    let incident_type = input.string("type", true, 64);
    let severity = input.severity("severity").unwrap_or(3);
    let title = input.string("title", false, 200);
    let description = input.string("description", false, 4000);
    let at = input.position();
    input.finish()?;
    let (Some(incident_type), Some(at)) = (incident_type, at) else {
        return Err(Problem::validation(vec![]));
    };
    let now = now_ms();
    let rec = CrisisObjectRecord {
        id: new_id(),
        kind: "incident".into(),
        object_type: incident_type,
        severity: Some(i64::from(severity)),
        status: Some("reported".into()),
        lat: Some(at.lat()),
        lon: Some(at.lon()),
        geometry: geometry_text(&Geometry::Point(at)),
        details: json!({"title": title, "description": description, "assigned": []}),
        owner_id: who.user_id().map(str::to_string),
        created_at: now,
        updated_at: now,
    };
    let event = incident_event(EventType::IncidentReported, &rec);
    state.store.insert_crisis_object(&rec, &[event]).await?;
    let view = incident_view(&rec, (0, 0))?;
    after_incident_write(&state, &rec).await;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Incidents in a bounding box, within a radius of a point, or the k nearest to it, as a
/// GeoJSON FeatureCollection.
#[utoipa::path(get, path = "/crisis/incidents", tag = "crisis", params(GeoListParams),
    responses((status = 200, description = "GeoJSON FeatureCollection", body = Object), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn list_incidents(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    geo_list(&state, &who, &params, Kind::Incident).await
}

/// One incident, with its verification tally.
#[utoipa::path(get, path = "/crisis/incidents/{id}", tag = "crisis", params(("id" = String, Path, description = "Incident id")),
    responses((status = 200, body = IncidentView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_incident(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<IncidentView>, Problem> {
    who.authorize(Action::ReadCrisisMap, None)?;
    let rec = existing(&state.store, &id, "incident").await?;
    let tally = state.store.incident_votes(&id).await?;
    Ok(Json(incident_view(&rec, tally)?))
}

/// Resolve or reject an incident, assign volunteers to it, or change its severity
/// (coordinators and admins). A closed (resolved or rejected) incident cannot change status.
#[utoipa::path(patch, path = "/crisis/incidents/{id}", tag = "crisis", params(("id" = String, Path, description = "Incident id")),
    request_body = PatchIncidentRequest,
    responses((status = 200, body = IncidentView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn patch_incident(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PatchIncidentRequest>,
) -> Result<Json<IncidentView>, Problem> {
    who.authorize(Action::ManageIncidents, None)?;
    let mut errors = Vec::new();
    let status = match req.status.as_deref() {
        None => None,
        Some(s @ ("resolved" | "rejected")) => Some(s.to_string()),
        Some(_) => {
            errors.push(field("/status", "must be `resolved` or `rejected`"));
            None
        }
    };
    if let Some(s) = req.severity
        && Severity::new(s).is_err()
    {
        errors.push(field("/severity", "must be 1 to 5"));
    }
    if let Some(assign) = &req.assign {
        if assign.len() > 100 {
            errors.push(field("/assign", "at most 100 volunteers"));
        }
        for (i, v) in assign.iter().enumerate().take(100) {
            let ok = state
                .store
                .crisis_object(v)
                .await?
                .is_some_and(|r| r.kind == "responder");
            if !ok {
                errors.push(field(&format!("/assign/{i}"), "no such volunteer"));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let old = existing(&state.store, &id, "incident").await?;
    let current = old.status.clone().unwrap_or_default();
    if status.is_some() && matches!(current.as_str(), "resolved" | "rejected") {
        return Err(Problem::conflict(format!(
            "the incident is already {current}"
        )));
    }
    let mut rec = old.clone();
    if let Some(s) = &status {
        rec.status = Some(s.clone());
    }
    if let Some(s) = req.severity {
        rec.severity = Some(i64::from(s));
    }
    if let Some(assign) = &req.assign {
        rec.details["assigned"] = json!(assign);
    }
    rec.updated_at = now_ms().max(old.updated_at + 1);
    let kind = match status.as_deref() {
        Some("resolved") => EventType::IncidentResolved,
        _ => EventType::IncidentUpdated,
    };
    let event = incident_event(kind, &rec);
    if !state
        .store
        .update_crisis_object(&rec, old.updated_at, &[event])
        .await?
    {
        return Err(Problem::conflict(
            "the incident changed while this request was processed; retry",
        ));
    }
    let tally = state.store.incident_votes(&id).await?;
    let view = incident_view(&rec, tally)?;
    after_incident_write(&state, &rec).await;
    Ok(Json(view))
}

/// Confirm or dispute an incident (responders, coordinators, admins; not its reporter). The
/// incident becomes `verified` once [`VERIFY_THRESHOLD`] distinct users confirm it.
#[utoipa::path(post, path = "/crisis/incidents/{id}/verify", tag = "crisis", params(("id" = String, Path, description = "Incident id")),
    request_body = VerifyRequest,
    responses((status = 200, body = VerifyResult), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn verify_incident(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Json<VerifyResult>, Problem> {
    who.authorize(Action::VerifyIncident, None)?;
    let Some(user) = who.user_id() else {
        return Err(Problem::forbidden("votes are cast by users"));
    };
    let vote = match req.vote.as_deref() {
        None | Some("confirm") => "confirm",
        Some("dispute") => "dispute",
        Some(_) => {
            return Err(Problem::validation(vec![field(
                "/vote",
                "must be `confirm` or `dispute`",
            )]));
        }
    };
    let old = existing(&state.store, &id, "incident").await?;
    if old.owner_id.as_deref() == Some(user) {
        return Err(Problem::conflict(
            "reporters cannot verify their own incident",
        ));
    }
    if matches!(old.status.as_deref(), Some("resolved" | "rejected")) {
        return Err(Problem::conflict("the incident is closed"));
    }
    let now = now_ms().max(old.updated_at + 1);
    let voted = event(
        EventType::IncidentUpdated,
        &id,
        json!({"id": id, "vote": vote, "voter_id": user}),
    );
    let mut verified = old.clone();
    verified.status = Some("verified".into());
    verified.updated_at = now;
    let on_verified = incident_event(EventType::IncidentVerified, &verified);
    let vote = Vote {
        incident_id: &id,
        user_id: user,
        vote,
        threshold: VERIFY_THRESHOLD,
        now,
    };
    let Some(outcome) = state
        .store
        .vote_incident(&vote, &[voted], &[on_verified])
        .await?
    else {
        return Err(Problem::not_found("no such incident"));
    };
    let VoteOutcome {
        incident,
        confirmations,
        disputes,
        newly_verified,
    } = outcome;
    if newly_verified {
        after_incident_write(&state, &incident).await;
    }
    Ok(Json(VerifyResult {
        id,
        status: incident.status.unwrap_or_default(),
        confirmations,
        disputes,
        threshold: VERIFY_THRESHOLD,
    }))
}

/// Register a resource (coordinators and admins).
#[utoipa::path(post, path = "/crisis/resources", tag = "crisis",
    request_body = CreateResourceRequest,
    responses((status = 201, description = "The resource as a GeoJSON Feature", body = Object), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn create_resource(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    who.authorize(Action::ManageCrisisAssets, None)?;
    let mut input = Input::new(&body)?;
    let resource_type = input.string("type", true, 64);
    let name = input.string("name", false, 200);
    let inventory = input.inventory("inventory");
    let at = input.position();
    input.finish()?;
    let (Some(resource_type), Some(at)) = (resource_type, at) else {
        return Err(Problem::validation(vec![]));
    };
    let now = now_ms();
    let rec = CrisisObjectRecord {
        id: new_id(),
        kind: "resource".into(),
        object_type: resource_type,
        severity: None,
        status: None,
        lat: Some(at.lat()),
        lon: Some(at.lon()),
        geometry: geometry_text(&Geometry::Point(at)),
        details: json!({"name": name, "inventory": inventory}),
        owner_id: who.user_id().map(str::to_string),
        created_at: now,
        updated_at: now,
    };
    create_object(&state, rec).await
}

/// Resources as a GeoJSON FeatureCollection (same parameters as incidents).
#[utoipa::path(get, path = "/crisis/resources", tag = "crisis", params(GeoListParams),
    responses((status = 200, description = "GeoJSON FeatureCollection", body = Object), (status = 400, body = Problem)),
    security(("bearer" = [])))]
async fn list_resources(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    geo_list(&state, &who, &params, Kind::Resource).await
}

/// Register yourself as a volunteer (responders; one profile per user).
#[utoipa::path(post, path = "/crisis/volunteers", tag = "crisis",
    request_body = RegisterVolunteerRequest,
    responses((status = 201, body = VolunteerView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn register_volunteer(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<VolunteerView>), Problem> {
    who.authorize(Action::RegisterVolunteer, None)?;
    let Some(user) = who.user_id() else {
        return Err(Problem::forbidden("volunteers are users"));
    };
    let mut input = Input::new(&body)?;
    let role = input
        .string("type", false, 64)
        .unwrap_or_else(|| "volunteer".into());
    let skills = input.strings("skills", 20, 64);
    let at = input.position();
    input.finish()?;
    let Some(at) = at else {
        return Err(Problem::validation(vec![]));
    };
    let now = now_ms();
    let rec = CrisisObjectRecord {
        id: new_id(),
        kind: "responder".into(),
        object_type: role,
        severity: None,
        status: None,
        lat: Some(at.lat()),
        lon: Some(at.lon()),
        geometry: geometry_text(&Geometry::Point(at)),
        details: json!({"skills": skills}),
        owner_id: Some(user.to_string()),
        created_at: now,
        updated_at: now,
    };
    let ev = event(
        EventType::VolunteerRegistered,
        &rec.id,
        json!({"id": rec.id, "user_id": user}),
    );
    match state.store.insert_crisis_object(&rec, &[ev]).await {
        Err(StoreError::Conflict(_)) => {
            return Err(Problem::conflict(
                "you are already registered as a volunteer",
            ));
        }
        other => other?,
    }
    let notices = index_record(&state, &rec).await;
    after_fences(&state, notices).await;
    Ok((StatusCode::CREATED, Json(volunteer_view(&rec, at))))
}

/// Update a volunteer's position (the volunteer, or a coordinator). Geofence transitions it
/// causes are returned, recorded as `geofence.triggered` events and published on the
/// `geofences` channel.
#[utoipa::path(put, path = "/crisis/volunteers/{id}/location", tag = "crisis", params(("id" = String, Path, description = "Volunteer id")),
    request_body = LatLon,
    responses((status = 200, body = LocationUpdate), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn move_volunteer(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<LocationUpdate>, Problem> {
    let rec = existing(&state.store, &id, "responder").await?;
    who.authorize(Action::UpdateVolunteer, rec.owner_id.as_deref())?;
    let mut input = Input::new(&body)?;
    let at = input.position();
    input.finish()?;
    let Some(at) = at else {
        return Err(Problem::validation(vec![]));
    };
    let now = now_ms().max(rec.updated_at + 1);
    let geometry = geometry_text(&Geometry::Point(at));
    // The position is personal data: the event names the volunteer only; other nodes'
    // indexes read the position from the store.
    let moved = event(EventType::VolunteerMoved, &id, json!({"id": id}));
    if !state
        .store
        .move_crisis_object(&id, at.lat(), at.lon(), &geometry, now, &[moved])
        .await?
    {
        return Err(Problem::not_found("no such volunteer"));
    }
    let notices = match state.geo.move_to(&id, at, now).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(volunteer = %id, error = %e, "geo index not updated");
            Vec::new()
        }
    };
    after_fences(&state, notices.clone()).await;
    Ok(Json(LocationUpdate {
        id,
        location: LatLon {
            lat: at.lat(),
            lon: at.lon(),
        },
        geofence_events: notices,
    }))
}

/// File a situation report, optionally about an incident (any signed-in user).
#[utoipa::path(post, path = "/crisis/reports", tag = "crisis",
    request_body = FileReportRequest,
    responses((status = 201, body = ReportView), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn file_report(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ReportView>), Problem> {
    who.authorize(Action::ReportIncident, None)?;
    let mut input = Input::new(&body)?;
    let summary = input.string("summary", true, 500);
    let incident_id = input.string("incident_id", false, 64);
    let details = match input.get("details") {
        None => json!({}),
        Some(d) if d.is_object() && d.to_string().len() <= 16 * 1024 => d.clone(),
        Some(_) => {
            input.err("details", "must be a JSON object of at most 16 KiB");
            json!({})
        }
    };
    let located = input.has_location();
    let at = if located { input.position() } else { None };
    if let Some(incident) = &incident_id
        && state
            .store
            .crisis_object(incident)
            .await?
            .is_none_or(|r| r.kind != "incident")
    {
        input.err("incident_id", "no such incident");
    }
    input.finish()?;
    let Some(summary) = summary else {
        return Err(Problem::validation(vec![]));
    };
    let rec = ReportRecord {
        id: new_id(),
        incident_id,
        author_id: who.user_id().map(str::to_string),
        summary,
        details,
        lat: at.map(Position::lat),
        lon: at.map(Position::lon),
        created_at: now_ms(),
    };
    let events: Vec<NewEvent> = rec
        .incident_id
        .iter()
        .map(|i| {
            event(
                EventType::IncidentUpdated,
                i,
                json!({"id": i, "report_id": rec.id}),
            )
        })
        .collect();
    state.store.insert_report(&rec, &events).await?;
    Ok((
        StatusCode::CREATED,
        Json(ReportView {
            id: rec.id,
            incident_id: rec.incident_id,
            author_id: rec.author_id,
            summary: rec.summary,
            details: rec.details,
            location: at.map(|p| LatLon {
                lat: p.lat(),
                lon: p.lon(),
            }),
            created_at: rfc3339(rec.created_at),
        }),
    ))
}

/// The map: clusters (count, severity breakdown, expansion zoom) and single objects in a
/// view at a zoom level, as a GeoJSON FeatureCollection. Areas (shelters and hazards drawn
/// as polygons) are not clustered: fetch them with `GET /crisis/hazards?bbox=…`.
#[utoipa::path(get, path = "/crisis/map", tag = "crisis", params(MapParams),
    responses((status = 200, description = "GeoJSON FeatureCollection", body = Object), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn crisis_map(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    who.authorize(Action::ReadCrisisMap, None)?;
    let mut errors = Vec::new();
    let bbox = match params.get("bbox") {
        Some(b) => parse_bbox(b, &mut errors),
        None => {
            errors.push(field("/bbox", "is required"));
            None
        }
    };
    let zoom = match params.get("zoom").map(|z| z.parse::<u8>()) {
        Some(Ok(z)) if z <= MAX_ZOOM => Some(z),
        Some(_) => {
            errors.push(field("/zoom", &format!("must be 0 to {MAX_ZOOM}")));
            None
        }
        None => {
            errors.push(field("/zoom", "is required"));
            None
        }
    };
    let may_see_responders = allowed(who.roles(), Action::ViewResponders);
    let kinds = match params.get("kinds") {
        None => KindSet::ALL.without_responders(),
        Some(list) => {
            let mut set = KindSet::EMPTY;
            for k in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                match parse_kind(k) {
                    Some(Kind::Responder) if !may_see_responders => {
                        return Err(Problem::forbidden(
                            "your roles do not allow seeing responders' positions",
                        ));
                    }
                    Some(kind) => set = set.with(kind),
                    None => errors.push(field("/kinds", &format!("unknown kind `{k}`"))),
                }
            }
            set
        }
    };
    let statuses = parse_statuses(params.get("status"), &mut errors);
    let min_severity = parse_severity_param(params.get("min_severity"), &mut errors);
    let limit = parse_limit(
        params.get("limit"),
        DEFAULT_MAP_LIMIT,
        MAX_MAP_LIMIT,
        &mut errors,
    );
    let (Some(bbox), Some(zoom), true) = (bbox, zoom, errors.is_empty()) else {
        return Err(Problem::validation(errors));
    };
    let query = ClusterQuery {
        bbox,
        zoom,
        filter: ClusterFilter {
            kinds,
            statuses,
            min_severity,
        },
        limit: Some(limit),
    };
    let answer = state.geo.clusters(query).await.map_err(geo_problem)?;
    Ok(Json(answer.collection))
}

/// Create a shelter (coordinators and admins): a polygon, multipolygon or point.
#[utoipa::path(post, path = "/crisis/shelters", tag = "crisis",
    request_body = CreateAreaRequest,
    responses((status = 201, description = "The shelter as a GeoJSON Feature", body = Object), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn create_shelter(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    create_area(&state, &who, &body, Kind::Shelter).await
}

/// Shelters as a GeoJSON FeatureCollection (same parameters as incidents).
#[utoipa::path(get, path = "/crisis/shelters", tag = "crisis", params(GeoListParams),
    responses((status = 200, description = "GeoJSON FeatureCollection", body = Object), (status = 400, body = Problem)),
    security(("bearer" = [])))]
async fn list_shelters(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    geo_list(&state, &who, &params, Kind::Shelter).await
}

/// Create a hazard area (coordinators and admins): a polygon or multipolygon with a
/// severity.
#[utoipa::path(post, path = "/crisis/hazards", tag = "crisis",
    request_body = CreateAreaRequest,
    responses((status = 201, description = "The hazard as a GeoJSON Feature", body = Object), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn create_hazard(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    create_area(&state, &who, &body, Kind::Hazard).await
}

/// Hazard areas as a GeoJSON FeatureCollection (same parameters as incidents).
#[utoipa::path(get, path = "/crisis/hazards", tag = "crisis", params(GeoListParams),
    responses((status = 200, description = "GeoJSON FeatureCollection", body = Object), (status = 400, body = Problem)),
    security(("bearer" = [])))]
async fn list_hazards(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    geo_list(&state, &who, &params, Kind::Hazard).await
}

// ---------------------------------------------------------------------------------------
// Shared steps

async fn create_area(
    state: &ApiState,
    who: &Principal,
    body: &Value,
    kind: Kind,
) -> Result<(StatusCode, Json<Value>), Problem> {
    who.authorize(Action::ManageCrisisAssets, None)?;
    let mut input = Input::new(body)?;
    let area_type = input.string("type", true, 64);
    let name = input.string("name", false, 200);
    let (severity, capacity) = match kind {
        Kind::Hazard => (Some(input.severity("severity").unwrap_or(3)), None),
        _ => (None, input.u32("capacity")),
    };
    let geometry = input.geometry();
    if kind == Kind::Hazard && matches!(geometry, Some(Geometry::Point(_))) {
        input.errors.push(field(
            &format!("{}/type", input.geometry_pointer()),
            "a hazard is a Polygon or MultiPolygon",
        ));
    }
    input.finish()?;
    let (Some(area_type), Some(geometry)) = (area_type, geometry) else {
        return Err(Problem::validation(vec![]));
    };
    let now = now_ms();
    let point = geometry.as_point();
    let rec = CrisisObjectRecord {
        id: new_id(),
        kind: kind_str(kind).into(),
        object_type: area_type,
        severity: severity.map(i64::from),
        status: None,
        lat: point.map(Position::lat),
        lon: point.map(Position::lon),
        geometry: geometry_text(&geometry),
        details: json!({"name": name, "capacity": capacity}),
        owner_id: who.user_id().map(str::to_string),
        created_at: now,
        updated_at: now,
    };
    create_object(state, rec).await
}

/// Stores a resource, shelter or hazard, indexes it, and answers its Feature.
async fn create_object(
    state: &ApiState,
    rec: CrisisObjectRecord,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let kind = match rec.kind.as_str() {
        "shelter" => EventType::ShelterOpened,
        "hazard" => EventType::HazardDeclared,
        _ => EventType::ResourceRegistered,
    };
    // Who registered it is not the consumers' business.
    let ev = event(
        kind,
        &rec.id,
        json!({"id": rec.id, "kind": rec.kind, "type": rec.object_type, "severity": rec.severity}),
    );
    state.store.insert_crisis_object(&rec, &[ev]).await?;
    let notices = index_record(state, &rec).await;
    after_fences(state, notices).await;
    Ok((StatusCode::CREATED, Json(feature_view(&rec)?)))
}

async fn geo_list(
    state: &ApiState,
    who: &Principal,
    params: &HashMap<String, String>,
    kind: Kind,
) -> Result<Json<Value>, Problem> {
    who.authorize(Action::ReadCrisisMap, None)?;
    let mut errors = Vec::new();
    let mut filter = Filter::default().kinds(KindSet::only(kind));
    if let Some(t) = params.get("type").filter(|t| !t.is_empty()) {
        filter = filter.type_name(t.clone());
    }
    if let Some(s) = parse_severity_param(params.get("min_severity"), &mut errors) {
        filter = filter.min_severity(s);
    }
    filter = filter.statuses(parse_statuses(params.get("status"), &mut errors));
    for (name, since) in [("since", true), ("until", false)] {
        let Some(v) = params.get(name) else { continue };
        match chrono::DateTime::parse_from_rfc3339(v) {
            Ok(t) if since => filter = filter.since(Timestamp(t.timestamp_millis())),
            Ok(t) => filter = filter.until(Timestamp(t.timestamp_millis())),
            Err(_) => errors.push(field(&format!("/{name}"), "must be an RFC 3339 time")),
        }
    }
    let limit = parse_limit(params.get("limit"), DEFAULT_LIMIT, MAX_LIMIT, &mut errors);
    let bbox = params.get("bbox").and_then(|b| parse_bbox(b, &mut errors));
    let near = params.get("near").and_then(|n| parse_near(n, &mut errors));
    let radius = params.get("radius_m").and_then(|r| match r.parse::<f64>() {
        Ok(r) if (0.0..=MAX_RADIUS_M).contains(&r) => Some(r),
        _ => {
            errors.push(field(
                "/radius_m",
                "must be a distance in metres, 0 to 20037508",
            ));
            None
        }
    });
    let k = params.get("k").and_then(|k| match k.parse::<usize>() {
        Ok(k) if (1..=MAX_LIMIT).contains(&k) => Some(k),
        _ => {
            errors.push(field("/k", "must be 1 to 1000"));
            None
        }
    });
    if params.contains_key("bbox") && params.contains_key("near") {
        errors.push(field("/near", "give either bbox or near, not both"));
    }
    if params.contains_key("near") && !params.contains_key("radius_m") && !params.contains_key("k")
    {
        errors.push(field("/near", "needs radius_m or k"));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let answer = match (near, radius, k) {
        (Some(center), Some(r), _) => {
            let q = nexus_geo::Query::radius(center, r)
                .filter(filter)
                .limit(k.unwrap_or(limit));
            state.geo.query(q).await
        }
        (Some(center), None, Some(k)) => state.geo.nearest(center, k, filter).await,
        _ => {
            let q = nexus_geo::Query::bbox(bbox.unwrap_or_else(BBox::world))
                .filter(filter)
                .limit(limit);
            state.geo.query(q).await
        }
    }
    .map_err(geo_problem)?;
    Ok(Json(answer.collection))
}

/// After an incident write committed: index it (so this node's reads see it at once) and
/// handle fence transitions. The live map hears of it through the event bus: the real-time
/// core consumes the incident's outbox event and publishes it on the gateway's `incidents`
/// channel (server `events.rs`), so a publication never happens for a write that rolled back
/// and is retried until the gateway takes it.
async fn after_incident_write(state: &ApiState, rec: &CrisisObjectRecord) {
    let notices = index_record(state, rec).await;
    after_fences(state, notices).await;
}

/// Puts a stored record into the index; returns the fence transitions.
async fn index_record(state: &ApiState, rec: &CrisisObjectRecord) -> Vec<FenceNotice> {
    let object = match record_to_object(rec) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(id = %rec.id, error = %e, "stored object cannot be indexed");
            return Vec::new();
        }
    };
    match state.geo.upsert(&rec.id, object, rec.updated_at).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(id = %rec.id, error = %e, "geo index not updated");
            Vec::new()
        }
    }
}

/// Records and publishes fence transitions (after the write they came from committed).
pub(crate) async fn after_fences(state: &ApiState, notices: Vec<FenceNotice>) {
    if notices.is_empty() {
        return;
    }
    let rows: Vec<NewEvent> = notices
        .iter()
        .map(|n| event(EventType::GeofenceTriggered, &n.fence_id, n))
        .collect();
    if let Err(e) = state.store.append_events(&rows).await {
        tracing::error!(error = %e, "geofence events not recorded");
    }
    for n in notices {
        let data = serde_json::to_value(&n).unwrap_or_default();
        state.realtime.publish(GEOFENCES_CHANNEL, data).await;
    }
}

/// Rebuilds the geo index from the store (every map object, then every geofence) and
/// starts its owner task. Rows that cannot be indexed are logged and skipped.
pub async fn start_geo_service(store: &Store) -> Result<GeoService, LoadError> {
    const PAGE: i64 = 10_000;
    let mut objects = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.crisis_objects_page(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for rec in page {
            match record_to_object(&rec) {
                Ok(o) => objects.push((rec.id, o)),
                Err(e) => tracing::warn!(id = %rec.id, error = %e, "crisis object not indexed"),
            }
        }
    }
    let mut fences = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.geofences_page(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for rec in page {
            match crate::geofences::spec_to_fence(&rec.spec) {
                Ok(spec) => fences.push((rec.id, spec)),
                Err(e) => tracing::warn!(id = %rec.id, error = ?e, "geofence not indexed"),
            }
        }
    }
    let count = objects.len();
    let (geo, refused) = tokio::task::spawn_blocking(move || GeoService::start(objects, fences))
        .await
        .map_err(|_| LoadError::Panicked)??;
    for (id, e) in refused {
        tracing::warn!(fence = %id, error = %e, "geofence not indexed");
    }
    tracing::info!(objects = count, "geo index rebuilt from the store");
    Ok(geo)
}

/// Why the geo index could not be rebuilt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading the store failed.
    #[error("cannot read the crisis map from the store: {0}")]
    Store(#[from] StoreError),
    /// The engine refused the objects (a repeated id).
    #[error("cannot build the geo index: {0}")]
    Geo(#[from] GeoError),
    /// The build task panicked.
    #[error("the geo index build panicked")]
    Panicked,
}

// ---------------------------------------------------------------------------------------
// Conversions

/// The index object for a stored record (its [`ObjectId`] is assigned by the service).
pub fn record_to_object(rec: &CrisisObjectRecord) -> Result<Object, String> {
    let g: Value = serde_json::from_str(&rec.geometry).map_err(|e| e.to_string())?;
    let geometry = parse_geometry(&g, "").map_err(|e| e.detail)?;
    let severity = || {
        rec.severity
            .and_then(|s| u8::try_from(s).ok())
            .and_then(|s| Severity::new(s).ok())
            .ok_or_else(|| format!("bad severity {:?}", rec.severity))
    };
    let updated_at = Timestamp(rec.updated_at);
    let attrs = match rec.kind.as_str() {
        "incident" => Attributes::Incident(Incident {
            incident_type: rec.object_type.clone(),
            severity: severity()?,
            status: rec
                .status
                .as_deref()
                .and_then(parse_status)
                .ok_or_else(|| format!("bad status {:?}", rec.status))?,
            reported_at: Timestamp(rec.created_at),
        }),
        "responder" => Attributes::Responder(Responder {
            role: rec.object_type.clone(),
            updated_at,
        }),
        "resource" => Attributes::Resource(Resource {
            resource_type: rec.object_type.clone(),
            inventory: serde_json::from_value(rec.details["inventory"].clone()).unwrap_or_default(),
            updated_at,
        }),
        "shelter" => Attributes::Shelter(Shelter {
            shelter_type: rec.object_type.clone(),
            capacity: rec.details["capacity"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok()),
            updated_at,
        }),
        "hazard" => Attributes::Hazard(Hazard {
            hazard_type: rec.object_type.clone(),
            severity: severity()?,
            updated_at,
        }),
        other => return Err(format!("unknown kind `{other}`")),
    };
    Ok(Object {
        id: ObjectId(0),
        geometry,
        attrs,
    })
}

fn incident_view(
    rec: &CrisisObjectRecord,
    (confirmations, disputes): (i64, i64),
) -> Result<IncidentView, Problem> {
    let (Some(lat), Some(lon)) = (rec.lat, rec.lon) else {
        return Err(Problem::internal(&format!(
            "incident {} has no position",
            rec.id
        )));
    };
    let text = |k: &str| rec.details[k].as_str().map(str::to_string);
    Ok(IncidentView {
        id: rec.id.clone(),
        incident_type: rec.object_type.clone(),
        severity: rec.severity.and_then(|s| u8::try_from(s).ok()).unwrap_or(3),
        status: rec.status.clone().unwrap_or_default(),
        title: text("title"),
        description: text("description"),
        location: LatLon { lat, lon },
        reporter_id: rec.owner_id.clone(),
        assigned: serde_json::from_value(rec.details["assigned"].clone()).unwrap_or_default(),
        confirmations,
        disputes,
        reported_at: rfc3339(rec.created_at),
        updated_at: rfc3339(rec.updated_at),
    })
}

fn volunteer_view(rec: &CrisisObjectRecord, at: Position) -> VolunteerView {
    VolunteerView {
        id: rec.id.clone(),
        user_id: rec.owner_id.clone(),
        role: rec.object_type.clone(),
        skills: serde_json::from_value(rec.details["skills"].clone()).unwrap_or_default(),
        location: LatLon {
            lat: at.lat(),
            lon: at.lon(),
        },
        updated_at: rfc3339(rec.updated_at),
    }
}

/// A resource, shelter or hazard as a GeoJSON Feature with its store id.
fn feature_view(rec: &CrisisObjectRecord) -> Result<Value, Problem> {
    let geometry: Value = serde_json::from_str(&rec.geometry).map_err(|e| Problem::internal(&e))?;
    let mut properties = Map::new();
    properties.insert("kind".into(), rec.kind.clone().into());
    properties.insert("type".into(), rec.object_type.clone().into());
    if let Some(s) = rec.severity {
        properties.insert("severity".into(), s.into());
    }
    if let Some(d) = rec.details.as_object() {
        for (k, v) in d.iter().filter(|(_, v)| !v.is_null()) {
            properties.insert(k.clone(), v.clone());
        }
    }
    properties.insert("created_at".into(), rfc3339(rec.created_at).into());
    Ok(json!({"type": "Feature", "id": rec.id, "geometry": geometry, "properties": properties}))
}

fn incident_event(kind: EventType, rec: &CrisisObjectRecord) -> NewEvent {
    event(
        kind,
        &rec.id,
        json!({
            "id": rec.id,
            "type": rec.object_type,
            "severity": rec.severity,
            "status": rec.status,
            "location": {"lat": rec.lat, "lon": rec.lon},
            "reporter_id": rec.owner_id,
            "assigned": rec.details["assigned"],
        }),
    )
}

/// A catalogued event for the outbox.
pub(crate) fn event(kind: EventType, subject: &str, data: impl Serialize) -> NewEvent {
    match record(kind, subject, data) {
        Ok(row) => row,
        // Only a value that cannot become JSON fails; ours are plain JSON already.
        Err(e) => {
            tracing::error!(error = %e, event = %kind, "event data not serializable");
            NewEvent::new(
                format!("nexus.{}", kind.domain()),
                subject,
                kind.as_str(),
                "{}",
            )
        }
    }
}

async fn existing(store: &Store, id: &str, kind: &str) -> Result<CrisisObjectRecord, Problem> {
    store
        .crisis_object(id)
        .await?
        .filter(|r| r.kind == kind)
        .ok_or_else(|| {
            Problem::not_found(match kind {
                "incident" => "no such incident",
                "responder" => "no such volunteer",
                _ => "no such object",
            })
        })
}

/// Maps geo-service failures to problems.
pub(crate) fn geo_problem(e: GeoServiceError) -> Problem {
    match e {
        GeoServiceError::Stopped => Problem::new(ProblemKind::Unavailable, e.to_string()),
        GeoServiceError::Geo(GeoError::UnknownObject(_)) => Problem::not_found("no such object"),
        GeoServiceError::Geo(GeoError::DuplicateFence(_)) => Problem::conflict(e.to_string()),
        GeoServiceError::Geo(GeoError::Interrupted { .. }) => {
            Problem::new(ProblemKind::Timeout, e.to_string())
        }
        GeoServiceError::Geo(other) => Problem::validation(vec![field("", &other.to_string())]),
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn geometry_text(g: &Geometry) -> String {
    serde_json::to_string(&GeoJsonGeometry::from(g)).unwrap_or_default()
}

fn field(pointer: &str, detail: &str) -> FieldError {
    FieldError {
        pointer: pointer.to_string(),
        detail: detail.to_string(),
    }
}

pub(crate) fn kind_str(kind: Kind) -> &'static str {
    match kind {
        Kind::Incident => "incident",
        Kind::Responder => "responder",
        Kind::Resource => "resource",
        Kind::Shelter => "shelter",
        Kind::Hazard => "hazard",
    }
}

pub(crate) fn parse_kind(s: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_str(*k) == s)
}

fn parse_status(s: &str) -> Option<Status> {
    Some(match s {
        "reported" => Status::Reported,
        "verified" => Status::Verified,
        "resolved" => Status::Resolved,
        "rejected" => Status::Rejected,
        _ => return None,
    })
}

pub(crate) fn parse_transition(s: &str) -> Option<Transition> {
    Some(match s {
        "enter" => Transition::Enter,
        "exit" => Transition::Exit,
        "inside" => Transition::Inside,
        "outside" => Transition::Outside,
        "cross" => Transition::Cross,
        _ => return None,
    })
}

/// Every kind but responders: what the map shows by default.
trait WithoutResponders {
    fn without_responders(self) -> KindSet;
}

impl WithoutResponders for KindSet {
    fn without_responders(self) -> KindSet {
        Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Responder && self.contains(*k))
            .collect()
    }
}

fn parse_statuses(param: Option<&String>, errors: &mut Vec<FieldError>) -> StatusSet {
    let Some(list) = param else {
        return StatusSet::ALL;
    };
    let mut set = StatusSet::EMPTY;
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match parse_status(s) {
            Some(st) => set = set.with(st),
            None => errors.push(field("/status", &format!("unknown status `{s}`"))),
        }
    }
    set
}

fn parse_severity_param(param: Option<&String>, errors: &mut Vec<FieldError>) -> Option<Severity> {
    let s = param?;
    match s.parse::<u8>().ok().and_then(|v| Severity::new(v).ok()) {
        Some(s) => Some(s),
        None => {
            errors.push(field("/min_severity", "must be 1 to 5"));
            None
        }
    }
}

fn parse_limit(
    param: Option<&String>,
    default: usize,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> usize {
    match param.map(|l| l.parse::<usize>()) {
        None => default,
        Some(Ok(l)) if (1..=max).contains(&l) => l,
        Some(_) => {
            errors.push(field("/limit", &format!("must be 1 to {max}")));
            default
        }
    }
}

fn numbers(s: &str) -> Option<Vec<f64>> {
    s.split(',').map(|p| p.trim().parse::<f64>().ok()).collect()
}

/// `minLon,minLat,maxLon,maxLat`; minLon > maxLon crosses the antimeridian.
pub(crate) fn parse_bbox(s: &str, errors: &mut Vec<FieldError>) -> Option<BBox> {
    match numbers(s).as_deref() {
        Some(&[a, b, c, d]) => match BBox::new(a, b, c, d) {
            Ok(bbox) => Some(bbox),
            Err(e) => {
                errors.push(field("/bbox", &e.to_string()));
                None
            }
        },
        _ => {
            errors.push(field("/bbox", "must be minLon,minLat,maxLon,maxLat"));
            None
        }
    }
}

/// `lon,lat`.
fn parse_near(s: &str, errors: &mut Vec<FieldError>) -> Option<Position> {
    match numbers(s).as_deref() {
        Some(&[lon, lat]) => match Position::new(lat, lon) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(field("/near", &e.to_string()));
                None
            }
        },
        _ => {
            errors.push(field("/near", "must be lon,lat"));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Body reading

/// A body in either accepted form: a GeoJSON `Feature` (attributes under `properties`,
/// location in `geometry`) or a flat object (`lat`/`lon`, `location: {lat, lon}` or
/// `geometry`). Collects every field error with its JSON Pointer.
pub(crate) struct Input<'a> {
    props: Option<&'a Map<String, Value>>,
    prefix: &'static str,
    geometry: Option<&'a Value>,
    pub(crate) errors: Vec<FieldError>,
}

impl<'a> Input<'a> {
    pub(crate) fn new(body: &'a Value) -> Result<Self, Problem> {
        let Some(obj) = body.as_object() else {
            return Err(Problem::validation(vec![field(
                "",
                "must be a JSON object",
            )]));
        };
        let input = if obj.get("type").and_then(Value::as_str) == Some("Feature") {
            let mut input = Input {
                props: None,
                prefix: "/properties",
                geometry: obj.get("geometry").filter(|g| !g.is_null()),
                errors: Vec::new(),
            };
            match obj.get("properties") {
                None | Some(Value::Null) => {}
                Some(Value::Object(p)) => input.props = Some(p),
                Some(_) => input.errors.push(field("/properties", "must be an object")),
            }
            if input.geometry.is_none() {
                input.errors.push(field("/geometry", "is required"));
            }
            input
        } else {
            Input {
                props: Some(obj),
                prefix: "",
                geometry: obj.get("geometry").filter(|g| !g.is_null()),
                errors: Vec::new(),
            }
        };
        Ok(input)
    }

    pub(crate) fn err(&mut self, name: &str, detail: &str) {
        self.errors
            .push(field(&format!("{}/{name}", self.prefix), detail));
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.props?.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&mut self, name: &str, required: bool, max: usize) -> Option<String> {
        match self.get(name) {
            None => {
                if required {
                    self.err(name, "is required");
                }
                None
            }
            Some(Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() && required {
                    self.err(name, "must not be empty");
                    None
                } else if t.chars().count() > max || t.chars().any(|c| c.is_control() && c != '\n')
                {
                    self.err(name, &format!("must be at most {max} printable characters"));
                    None
                } else {
                    (!t.is_empty()).then(|| t.to_string())
                }
            }
            Some(_) => {
                self.err(name, "must be a string");
                None
            }
        }
    }

    fn strings(&mut self, name: &str, max_items: usize, max_len: usize) -> Vec<String> {
        match self.get(name) {
            None => Vec::new(),
            Some(Value::Array(items))
                if items.len() <= max_items
                    && items.iter().all(|i| {
                        i.as_str()
                            .is_some_and(|s| !s.trim().is_empty() && s.chars().count() <= max_len)
                    }) =>
            {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(|s| s.trim().to_string()))
                    .collect()
            }
            Some(_) => {
                self.err(
                    name,
                    &format!("must be at most {max_items} strings of 1 to {max_len} characters"),
                );
                Vec::new()
            }
        }
    }

    fn severity(&mut self, name: &str) -> Option<u8> {
        let v = self.get(name)?;
        match v
            .as_u64()
            .and_then(|s| u8::try_from(s).ok())
            .filter(|s| Severity::new(*s).is_ok())
        {
            Some(s) => Some(s),
            None => {
                self.err(name, "must be an integer from 1 to 5");
                None
            }
        }
    }

    fn u32(&mut self, name: &str) -> Option<u32> {
        let v = self.get(name)?;
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.err(name, "must be a non-negative integer");
                None
            }
        }
    }

    fn inventory(&mut self, name: &str) -> BTreeMap<String, u32> {
        match self
            .get(name)
            .map(|v| serde_json::from_value::<BTreeMap<String, u32>>(v.clone()))
        {
            None => BTreeMap::new(),
            Some(Ok(m)) if m.len() <= 200 => m,
            Some(_) => {
                self.err(
                    name,
                    "must map item names to quantities (at most 200 items)",
                );
                BTreeMap::new()
            }
        }
    }

    /// Whether any location member is present.
    fn has_location(&self) -> bool {
        self.geometry.is_some()
            || self.get("location").is_some()
            || self.get("lat").is_some()
            || self.get("lon").is_some()
    }

    pub(crate) fn geometry_pointer(&self) -> &'static str {
        "/geometry"
    }

    /// A point: the GeoJSON geometry, `location: {lat, lon}`, or `lat` and `lon`.
    pub(crate) fn position(&mut self) -> Option<Position> {
        if let Some(g) = self.geometry {
            return match parse_geometry(g, "/geometry") {
                Ok(Geometry::Point(p)) => Some(p),
                Ok(Geometry::Area(_)) => {
                    self.errors.push(field("/geometry/type", "must be Point"));
                    None
                }
                Err(e) => {
                    self.errors.push(e);
                    None
                }
            };
        }
        let (lat, lon, base) = match self.get("location") {
            Some(loc) => (
                loc.get("lat"),
                loc.get("lon"),
                format!("{}/location", self.prefix),
            ),
            None => (self.get("lat"), self.get("lon"), self.prefix.to_string()),
        };
        match parse_latlon(lat, lon, &base) {
            Ok(p) => Some(p),
            Err(mut e) => {
                self.errors.append(&mut e);
                None
            }
        }
    }

    /// A geometry: the GeoJSON `geometry`, else a point as in [`Input::position`].
    pub(crate) fn geometry(&mut self) -> Option<Geometry> {
        match self.geometry {
            Some(g) => match parse_geometry(g, "/geometry") {
                Ok(geometry) => Some(geometry),
                Err(e) => {
                    self.errors.push(e);
                    None
                }
            },
            None if self.has_location() => self.position().map(Geometry::Point),
            None => {
                self.errors.push(field("/geometry", "is required"));
                None
            }
        }
    }

    pub(crate) fn finish(&mut self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(std::mem::take(&mut self.errors)))
        }
    }
}

fn coordinate(
    v: Option<&Value>,
    pointer: &str,
    limit: f64,
    what: &str,
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    match v.and_then(Value::as_f64) {
        Some(x) if x.is_finite() && x.abs() <= limit => Some(x),
        Some(_) => {
            errors.push(field(
                pointer,
                &format!("{what} must be between -{limit} and {limit}"),
            ));
            None
        }
        None if v.is_none_or(Value::is_null) => {
            errors.push(field(pointer, "is required"));
            None
        }
        None => {
            errors.push(field(pointer, &format!("{what} must be a number")));
            None
        }
    }
}

/// `lat` and `lon` of an object at `base`.
fn parse_latlon(
    lat: Option<&Value>,
    lon: Option<&Value>,
    base: &str,
) -> Result<Position, Vec<FieldError>> {
    let mut errors = Vec::new();
    let lat = coordinate(lat, &format!("{base}/lat"), 90.0, "latitude", &mut errors);
    let lon = coordinate(lon, &format!("{base}/lon"), 180.0, "longitude", &mut errors);
    match (lat, lon) {
        (Some(lat), Some(lon)) => {
            Position::new(lat, lon).map_err(|e| vec![field(base, &e.to_string())])
        }
        _ => Err(errors),
    }
}

/// A GeoJSON `[lon, lat]` position at `pointer`.
fn parse_position(v: &Value, pointer: &str) -> Result<Position, FieldError> {
    let mut errors = Vec::new();
    let pair = v.as_array().filter(|a| a.len() == 2 || a.len() == 3);
    let Some(pair) = pair else {
        return Err(field(pointer, "must be a [lon, lat] position"));
    };
    let lon = coordinate(
        pair.first(),
        &format!("{pointer}/0"),
        180.0,
        "longitude",
        &mut errors,
    );
    let lat = coordinate(
        pair.get(1),
        &format!("{pointer}/1"),
        90.0,
        "latitude",
        &mut errors,
    );
    match (lat, lon) {
        (Some(lat), Some(lon)) => {
            Position::new(lat, lon).map_err(|e| field(pointer, &e.to_string()))
        }
        _ => Err(errors.remove(0)),
    }
}

fn parse_ring(
    v: &Value,
    pointer: &str,
    budget: &mut usize,
) -> Result<geo::LineString<f64>, FieldError> {
    let Some(points) = v.as_array() else {
        return Err(field(pointer, "must be an array of positions"));
    };
    if points.len() > *budget {
        return Err(field(pointer, &format!("at most {MAX_VERTICES} vertices")));
    }
    *budget -= points.len();
    let coords = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            parse_position(p, &format!("{pointer}/{i}"))
                .map(|p| geo::coord! { x: p.lon(), y: p.lat() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(geo::LineString::new(coords))
}

fn parse_polygon(
    v: &Value,
    pointer: &str,
    budget: &mut usize,
) -> Result<geo::Polygon<f64>, FieldError> {
    let Some(rings) = v.as_array().filter(|r| !r.is_empty()) else {
        return Err(field(pointer, "must be an array of linear rings"));
    };
    let exterior = parse_ring(&rings[0], &format!("{pointer}/0"), budget)?;
    let holes = rings[1..]
        .iter()
        .enumerate()
        .map(|(i, r)| parse_ring(r, &format!("{pointer}/{}", i + 1), budget))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(geo::Polygon::new(exterior, holes))
}

/// A GeoJSON `Point`, `Polygon` or `MultiPolygon` at `pointer`.
pub(crate) fn parse_geometry(g: &Value, pointer: &str) -> Result<Geometry, FieldError> {
    let coords = g.get("coordinates");
    let cp = format!("{pointer}/coordinates");
    let mut budget = MAX_VERTICES;
    let area = |polygons: Vec<geo::Polygon<f64>>| {
        Area::from_multi_polygon(geo::MultiPolygon::new(polygons))
            .map(Geometry::Area)
            .map_err(|e| field(&cp, &e.to_string()))
    };
    match (g.get("type").and_then(Value::as_str), coords) {
        (Some("Point"), Some(c)) => parse_position(c, &cp).map(Geometry::Point),
        (Some("Polygon"), Some(c)) => area(vec![parse_polygon(c, &cp, &mut budget)?]),
        (Some("MultiPolygon"), Some(c)) => {
            let Some(polys) = c.as_array().filter(|p| !p.is_empty()) else {
                return Err(field(&cp, "must be an array of polygons"));
            };
            let polygons = polys
                .iter()
                .enumerate()
                .map(|(i, p)| parse_polygon(p, &format!("{cp}/{i}"), &mut budget))
                .collect::<Result<Vec<_>, _>>()?;
            area(polygons)
        }
        (Some("Point" | "Polygon" | "MultiPolygon"), None) => Err(field(&cp, "is required")),
        _ => Err(field(
            &format!("{pointer}/type"),
            "must be Point, Polygon or MultiPolygon",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(p: &Problem) -> Vec<&str> {
        p.errors.iter().map(|e| e.pointer.as_str()).collect()
    }

    #[test]
    fn flat_location_and_feature_forms_read_the_same_point() {
        for body in [
            json!({"lat": -1.29, "lon": 36.82}),
            json!({"location": {"lat": -1.29, "lon": 36.82}}),
            json!({"geometry": {"type": "Point", "coordinates": [36.82, -1.29]}}),
            json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [36.82, -1.29]}, "properties": {}}),
        ] {
            let mut input = Input::new(&body).unwrap_or_else(|e| panic!("{e:?}"));
            let p = input
                .position()
                .unwrap_or_else(|| panic!("{body}: {:?}", input.errors));
            assert_eq!((p.lat(), p.lon()), (-1.29, 36.82));
        }
    }

    #[test]
    fn bad_coordinates_name_their_field() {
        let cases = [
            (json!({"lat": 91, "lon": 0}), vec!["/lat"]),
            (json!({"lat": 0, "lon": -180.5}), vec!["/lon"]),
            (json!({"lat": "x", "lon": 0}), vec!["/lat"]),
            (json!({"lon": 0}), vec!["/lat"]),
            (
                json!({"location": {"lat": 0, "lon": 200}}),
                vec!["/location/lon"],
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 95]}}),
                vec!["/geometry/coordinates/1"],
            ),
            (
                json!({"geometry": {"type": "Line", "coordinates": []}}),
                vec!["/geometry/type"],
            ),
        ];
        for (body, want) in cases {
            let mut input = Input::new(&body).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(input.position().is_none(), "{body}");
            let err = input.finish().err().unwrap_or_else(|| panic!("{body}"));
            assert_eq!(pointers(&err), want, "{body}");
        }
    }

    #[test]
    fn polygons_parse_and_bad_ones_are_refused() {
        let square =
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]});
        assert!(matches!(
            parse_geometry(&square, "/geometry"),
            Ok(Geometry::Area(_))
        ));
        let bowtie =
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]});
        assert_eq!(
            parse_geometry(&bowtie, "/geometry")
                .err()
                .map(|e| e.pointer),
            Some("/geometry/coordinates".to_string())
        );
        let off =
            json!({"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 100], [0, 0]]]]});
        assert_eq!(
            parse_geometry(&off, "/geometry").err().map(|e| e.pointer),
            Some("/geometry/coordinates/0/0/2/1".to_string())
        );
    }

    #[test]
    fn query_parameters_parse_with_antimeridian_boxes() {
        let mut errors = Vec::new();
        let b = parse_bbox("170,-10,-170,10", &mut errors).unwrap_or_else(|| panic!("{errors:?}"));
        assert!(b.crosses_antimeridian());
        assert!(parse_bbox("0,10,1,5", &mut errors).is_none());
        assert!(parse_bbox("0,1,2", &mut errors).is_none());
        assert!(parse_near("200,0", &mut errors).is_none());
        assert_eq!(errors.len(), 3);
        assert!(
            errors
                .iter()
                .all(|e| e.pointer == "/bbox" || e.pointer == "/near")
        );
    }
}
