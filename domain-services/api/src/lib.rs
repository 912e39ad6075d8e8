//! The Nexus product API under `/api/v1`: accounts, users and the rules for who may do what.
//!
//! Handlers are plain axum functions over [`ApiState`] (store, token keys, mailer). Every
//! failure is a [`Problem`] (RFC 9457 `application/problem+json` with a stable `/problems/<kind>`
//! type); request bodies go through [`ApiJson`], whose rejections are problems too. The caller is
//! a [`Principal`] — a user with a bearer JWT or a service with an API key — and
//! [`rbac::POLICY`] decides what each role may do. Every state change writes its CloudEvent to
//! the store's outbox in the same transaction ([`events::event`]).
//!
//! [`router`] returns the routes together with their OpenAPI 3.1 description, generated from
//! the handlers' annotations, so the document cannot drift from the code.
//!
//! # Layout
//! - [`problem`] — [`Problem`], [`ProblemKind`];
//! - [`extract`] — [`ApiJson`], bearer and API-key authentication;
//! - [`rbac`] — [`Principal`], [`rbac::Action`], the policy table;
//! - [`alerts`] — CAP alerts: issue, lifecycle, lists, ATOM feed, subscriptions,
//!   targeting, delivery reports; [`geocodes`] — the CAP geocode → polygon table;
//!   [`alert_targets`] — the in-memory index of subscription locations alerts target
//!   through, and its per-node event consumer;
//! - [`auth`] — register, login, refresh, logout, profile, password reset, e-mail verification,
//!   realtime tokens;
//! - [`users`] — profiles, settings, roles, erasure, export, API keys;
//! - [`crisis`] — incidents, verification, resources, volunteers, reports, shelters, hazards
//!   and the clustered map; [`geofences`] — geofence CRUD;
//! - [`geo_service`] — the task that owns the geo index, and its handle [`GeoService`];
//!   [`index_sync`] — the per-node event consumer that applies other nodes' crisis writes to
//!   it;
//! - [`realtime`] — the [`Realtime`] port to the gateway;
//! - [`healthcare`] — providers, slots, appointments, consultations in SFU rooms, the
//!   waiting queue, disease surveillance; [`fhir`] — FHIR R4 health records
//!   (`OperationOutcome` errors); [`education`] — courses, enrollments, live classes;
//! - [`rooms`] — the [`Rooms`] port to the SFU;
//! - [`events`], [`mail`], [`validate`], [`state`], [`time`] — the
//!   pieces handlers share.
//!
//! # Example
//! ```
//! use nexus_api::{Problem, ProblemKind};
//! let p = Problem::new(ProblemKind::Conflict, "slot already booked");
//! assert_eq!(p.status, 409);
//! assert_eq!(p.type_, "/problems/conflict");
//! ```

pub mod alert_targets;
pub mod alerts;
pub mod auth;
pub mod crisis;
pub mod education;
pub mod events;
pub mod extract;
pub mod fhir;
pub mod geo_service;
pub mod geocodes;
pub mod geofences;
pub mod healthcare;
pub mod index_sync;
pub mod mail;
pub mod problem;
pub mod rbac;
pub mod realtime;
pub mod rooms;
pub mod state;
pub mod time;
pub mod users;
pub mod validate;

pub use extract::ApiJson;
pub use geo_service::GeoService;
pub use problem::{FieldError, Problem, ProblemKind};
pub use rbac::Principal;
pub use realtime::{BoxFuture, NoRealtime, Realtime};
pub use rooms::{NoRooms, Rooms};
pub use state::{ApiState, AuthSettings};

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// The base document; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Nexus API", description = "Real-time crisis response and telemedicine platform. Errors are RFC 9457 problem documents whose `type` is one of the `/problems/<kind>` URIs listed in the `Problem` schema."),
    components(schemas(Problem, FieldError)),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Accounts and credentials"),
        (name = "users", description = "Profiles, settings, roles, GDPR erasure and export"),
        (name = "admin", description = "Administration"),
        (name = "crisis", description = "Crisis map: incidents, verification, volunteers, resources, shelters, hazards, geofences; geo results are GeoJSON"),
        (name = "healthcare", description = "Providers, slots, appointments, consultations in SFU rooms, the waiting queue, disease surveillance; FHIR R4 records answer errors as OperationOutcome"),
        (name = "alerts", description = "CAP 1.2 alerts: issue, lifecycle, ATOM feed, subscriptions, deliveries"),
        (name = "education", description = "Courses, enrollments and live classes in SFU rooms"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(obj))) =
            components.schemas.get_mut("Problem")
        {
            {
                let kinds: Vec<String> = ProblemKind::ALL
                    .iter()
                    .map(|k| {
                        format!(
                            "`/problems/{}` ({}: {})",
                            k.slug(),
                            k.status().as_u16(),
                            k.title()
                        )
                    })
                    .collect();
                obj.description = Some(format!(
                    "RFC 9457 problem details. Types: {}.",
                    kinds.join(", ")
                ));
            }
        }
    }
}

/// The `/api/v1` routes and their OpenAPI document (paths include the `/api/v1` prefix).
pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        "/api/v1",
        auth::routes()
            .merge(users::routes())
            .merge(crisis::routes())
            .merge(geofences::routes())
            .merge(healthcare::routes())
            .merge(fhir::routes())
            .merge(education::routes())
            .merge(alerts::routes()),
    )
}
