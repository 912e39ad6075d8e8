//! `/api/v1/geofences`: static areas and circles, and circles around moving objects, that
//! report `enter` / `exit` / `inside` / `outside` / `cross` transitions of the objects they
//! watch (coordinators and admins).
//!
//! A fence is one of (exactly one member):
//! - `geometry`: a GeoJSON `Polygon` or `MultiPolygon`;
//! - `circle: {"center": {"lat", "lon"}, "radius_m"}`;
//! - `around: {"object_id", "radius_m"}` — follows a point object (a volunteer, a resource).
//!
//! with `watch` (kinds, default all) and `detect` (transitions, default
//! `["enter", "exit", "cross"]`). Transitions are returned by the write that caused them,
//! recorded as `geofence.triggered` events and published on the gateway's `geofences`
//! channel (ids only, no positions).

use crate::crisis::{
    Input, event, geo_problem, kind_str, parse_geometry, parse_kind, parse_transition,
};
use crate::extract::ApiJson;
use crate::geo_service::{FenceRegion, FenceSpec};
use crate::problem::{FieldError, Problem};
use crate::rbac::{Action, Principal};
use crate::state::ApiState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use nexus_events::EventType;
use nexus_geo::{Geometry, KindSet, Position, Transition, TransitionSet};
use nexus_store::{GeofenceRecord, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_geofence, list_geofences))
        .routes(routes!(get_geofence, delete_geofence))
}

/// A geofence to create (give exactly one of `geometry`, `circle`, `around`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGeofenceRequest {
    /// Name, 1–200 characters.
    pub name: String,
    /// GeoJSON `Polygon` or `MultiPolygon`.
    #[schema(value_type = Option<Object>)]
    pub geometry: Option<Value>,
    /// `{"center": {"lat", "lon"}, "radius_m"}`.
    #[schema(value_type = Option<Object>)]
    pub circle: Option<Value>,
    /// `{"object_id", "radius_m"}`: a circle following a point object.
    #[schema(value_type = Option<Object>)]
    pub around: Option<Value>,
    /// Kinds watched (`incident`, `responder`, `resource`, `shelter`, `hazard`); default all.
    pub watch: Option<Vec<String>>,
    /// Transitions reported (`enter`, `exit`, `inside`, `outside`, `cross`); default
    /// `enter`, `exit`, `cross`.
    pub detect: Option<Vec<String>>,
}

/// A geofence: id, name, creator, and its shape / watch / detect members as created.
#[derive(Debug, Serialize, ToSchema)]
pub struct GeofenceView {
    /// Fence id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creator (user id).
    pub created_by: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// `geometry`, `circle` or `around`, plus `watch` and `detect`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// A page of geofences.
#[derive(Debug, Serialize, ToSchema)]
pub struct GeofencePage {
    /// The fences, by id.
    pub items: Vec<GeofenceView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size (default 50, max 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Create a geofence (coordinators and admins).
#[utoipa::path(post, path = "/geofences", tag = "crisis",
    request_body = CreateGeofenceRequest,
    responses((status = 201, body = GeofenceView), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn create_geofence(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<GeofenceView>), Problem> {
    who.authorize(Action::ManageGeofences, None)?;
    let mut input = Input::new(&body)?;
    let name = input.string("name", true, 200);
    let mut errors = std::mem::take(&mut input.errors);
    let mut spec = body.clone();
    if let Some(obj) = spec.as_object_mut() {
        obj.retain(|k, _| {
            matches!(
                k.as_str(),
                "geometry" | "circle" | "around" | "watch" | "detect"
            )
        });
    }
    let fence = match spec_to_fence(&spec) {
        Ok(f) => Some(f),
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };
    if let Some(FenceSpec {
        region: FenceRegion::Around { anchor, .. },
        ..
    }) = &fence
    {
        let ok = state
            .store
            .crisis_object(anchor)
            .await?
            .is_some_and(|r| r.lat.is_some());
        if !ok {
            errors.push(FieldError {
                pointer: "/around/object_id".into(),
                detail: "no such point object".into(),
            });
        }
    }
    let (Some(name), Some(fence), true) = (name, fence, errors.is_empty()) else {
        return Err(Problem::validation(errors));
    };
    let rec = GeofenceRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        spec,
        created_by: who.user_id().map(str::to_string),
        created_at: now_ms(),
    };
    let created = event(
        EventType::GeofenceCreated,
        &rec.id,
        json!({"id": rec.id, "name": rec.name}),
    );
    state.store.insert_geofence(&rec, &[created]).await?;
    state
        .geo
        .add_fence(&rec.id, fence)
        .await
        .map_err(geo_problem)?;
    Ok((StatusCode::CREATED, Json(view(rec))))
}

/// Geofences, by id, a page at a time.
#[utoipa::path(get, path = "/geofences", tag = "crisis", params(PageParams),
    responses((status = 200, body = GeofencePage), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn list_geofences(
    State(state): State<ApiState>,
    who: Principal,
    Query(params): Query<PageParams>,
) -> Result<Json<GeofencePage>, Problem> {
    who.authorize(Action::ManageGeofences, None)?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::validation(vec![FieldError {
            pointer: "/limit".into(),
            detail: "must be 1 to 1000".into(),
        }]));
    }
    let page = state
        .store
        .geofences_page(params.cursor.as_deref(), i64::from(limit))
        .await?;
    let next_cursor = (page.len() == limit as usize)
        .then(|| page.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(GeofencePage {
        items: page.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// One geofence.
#[utoipa::path(get, path = "/geofences/{id}", tag = "crisis", params(("id" = String, Path, description = "Fence id")),
    responses((status = 200, body = GeofenceView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_geofence(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<GeofenceView>, Problem> {
    who.authorize(Action::ManageGeofences, None)?;
    match state.store.geofence(&id).await? {
        Some(rec) => Ok(Json(view(rec))),
        None => Err(Problem::not_found("no such geofence")),
    }
}

/// Delete a geofence.
#[utoipa::path(delete, path = "/geofences/{id}", tag = "crisis", params(("id" = String, Path, description = "Fence id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn delete_geofence(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.authorize(Action::ManageGeofences, None)?;
    let deleted = event(EventType::GeofenceDeleted, &id, json!({"id": id}));
    if !state.store.delete_geofence(&id, &[deleted]).await? {
        return Err(Problem::not_found("no such geofence"));
    }
    if let Err(e) = state.geo.remove_fence(&id).await {
        tracing::warn!(fence = %id, error = %e, "geofence not removed from the index");
    }
    Ok(StatusCode::NO_CONTENT)
}

fn view(rec: GeofenceRecord) -> GeofenceView {
    GeofenceView {
        id: rec.id,
        name: rec.name,
        created_by: rec.created_by,
        created_at: chrono::DateTime::from_timestamp_millis(rec.created_at)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        spec: rec.spec,
    }
}

fn err(pointer: &str, detail: &str) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        detail: detail.into(),
    }
}

fn radius(v: &Value, pointer: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    match v.get("radius_m").and_then(Value::as_f64) {
        Some(r) if r.is_finite() && r > 0.0 && r <= 20_037_508.0 => Some(r),
        _ => {
            errors.push(err(pointer, "must be a radius in metres, above 0"));
            None
        }
    }
}

/// Reads a stored or requested fence description (see the module docs).
pub(crate) fn spec_to_fence(spec: &Value) -> Result<FenceSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    let given: Vec<&str> = ["geometry", "circle", "around"]
        .into_iter()
        .filter(|k| spec.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    let region = match given.as_slice() {
        ["geometry"] => match parse_geometry(&spec["geometry"], "/geometry") {
            Ok(Geometry::Area(a)) => Some(FenceRegion::Area(a)),
            Ok(Geometry::Point(_)) => {
                errors.push(err(
                    "/geometry/type",
                    "must be Polygon or MultiPolygon (use `circle` for a point and radius)",
                ));
                None
            }
            Err(e) => {
                errors.push(e);
                None
            }
        },
        ["circle"] => {
            let c = &spec["circle"];
            let center = c.get("center").and_then(|p| {
                let lat = p.get("lat").and_then(Value::as_f64);
                let lon = p.get("lon").and_then(Value::as_f64);
                match (lat, lon) {
                    (Some(lat), Some(lon)) => Position::new(lat, lon).ok(),
                    _ => None,
                }
            });
            if center.is_none() {
                errors.push(err(
                    "/circle/center",
                    "must be {\"lat\", \"lon\"} with |lat| ≤ 90 and |lon| ≤ 180",
                ));
            }
            let r = radius(c, "/circle/radius_m", &mut errors);
            center
                .zip(r)
                .map(|(center, radius_m)| FenceRegion::Circle { center, radius_m })
        }
        ["around"] => {
            let a = &spec["around"];
            let anchor = a
                .get("object_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            if anchor.is_none() {
                errors.push(err("/around/object_id", "is required"));
            }
            let r = radius(a, "/around/radius_m", &mut errors);
            anchor
                .zip(r)
                .map(|(anchor, radius_m)| FenceRegion::Around { anchor, radius_m })
        }
        _ => {
            errors.push(err(
                "",
                "give exactly one of `geometry`, `circle`, `around`",
            ));
            None
        }
    };
    let watch = match spec.get("watch") {
        None | Some(Value::Null) => KindSet::ALL,
        Some(v) => {
            let mut set = KindSet::EMPTY;
            for (i, k) in v.as_array().into_iter().flatten().enumerate() {
                match k.as_str().and_then(parse_kind) {
                    Some(kind) => set = set.with(kind),
                    None => errors.push(err(&format!("/watch/{i}"), "unknown kind")),
                }
            }
            if !v.is_array() {
                errors.push(err("/watch", "must be an array of kinds"));
            }
            set
        }
    };
    let detect = match spec.get("detect") {
        None | Some(Value::Null) => TransitionSet::default(),
        Some(v) => {
            let mut set = TransitionSet::EMPTY;
            for (i, t) in v.as_array().into_iter().flatten().enumerate() {
                match t.as_str().and_then(parse_transition) {
                    Some(tr) => set = set.with(tr),
                    None => errors.push(err(&format!("/detect/{i}"), "unknown transition")),
                }
            }
            if !v.is_array() {
                errors.push(err("/detect", "must be an array of transitions"));
            }
            set
        }
    };
    match region {
        Some(region) if errors.is_empty() => Ok(FenceSpec {
            region,
            watch,
            detect,
        }),
        _ => Err(errors),
    }
}

/// The transitions of a set, for documentation and tests.
pub fn transitions(set: TransitionSet) -> Vec<Transition> {
    [
        Transition::Enter,
        Transition::Exit,
        Transition::Inside,
        Transition::Outside,
        Transition::Cross,
    ]
    .into_iter()
    .filter(|t| set.contains(*t))
    .collect()
}

/// The kinds of a set, by name.
pub fn kinds(set: KindSet) -> Vec<&'static str> {
    nexus_geo::Kind::ALL
        .into_iter()
        .filter(|k| set.contains(*k))
        .map(kind_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults_and_errors_name_fields() {
        let f =
            spec_to_fence(&json!({"circle": {"center": {"lat": 1, "lon": 2}, "radius_m": 500}}))
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            transitions(f.detect),
            [Transition::Enter, Transition::Exit, Transition::Cross]
        );
        assert_eq!(kinds(f.watch).len(), 5);
        let f = spec_to_fence(&json!({"around": {"object_id": "v1", "radius_m": 50}, "watch": ["incident"], "detect": ["inside"]}))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(kinds(f.watch), ["incident"]);
        assert_eq!(transitions(f.detect), [Transition::Inside]);
        let bad = spec_to_fence(&json!({"circle": {"center": {"lat": 100, "lon": 0}, "radius_m": -1}, "watch": ["cats"]}))
            .err()
            .unwrap_or_default();
        let pointers: Vec<_> = bad.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/circle/center", "/circle/radius_m", "/watch/0"]);
        assert!(spec_to_fence(&json!({})).is_err());
        assert!(
            spec_to_fence(&json!({"geometry": {"type": "Point", "coordinates": [0, 0]}})).is_err()
        );
    }
}
