//! `/api/v1/alerts*`: CAP 1.2 alerts — issue (XML or JSON), lifecycle (Update and Cancel
//! supersede through `references`, expiry), lists, the ATOM feed, alert subscriptions,
//! targeting and the delivery report.
//!
//! # Issuing
//!
//! `POST /api/v1/alerts` (roles `alert_authority`, `admin`) takes CAP XML
//! (`application/cap+xml`, `application/xml`; CAP 1.0/1.1 are converted to 1.2) or the JSON
//! form of `docs/cap-json.md`, up to [`BODY_LIMIT`]. Every problem found by the codec is a
//! `/problems/validation` entry whose `pointer` is the JSON Pointer into the JSON form and
//! whose `detail` starts with `line:col` for XML. Hostile XML (DTDs, entities) is refused
//! the same way.
//!
//! An `Update` or `Cancel` must reference alerts this server knows (by CAP
//! sender/identifier/sent); an unknown reference is `409 /problems/conflict`. The referenced
//! active alerts become `superseded` (Update) or `cancelled` (Cancel, which also stops their
//! queued deliveries), in the transaction that stores the new alert and its CloudEvent
//! (`alert.issued`, `alert.updated`, `alert.cancelled`). Nothing is targeted in the request:
//! the alerting consumer of the event bus calls [`dispatch`], which targets subscribers,
//! enqueues their deliveries idempotently and publishes public alerts on the gateway.
//!
//! With the approval step on ([`AlertSettings::approval`]), an `Actual` alert is stored
//! `pending`: it supersedes nothing, has no event and reaches nobody until a second, different
//! `alert_authority` approves it (`POST /api/v1/alerts/{id}/approve`). `POST
//! /api/v1/alerts/preview` counts the recipients per channel of the same body, storing
//! nothing.
//!
//! # Who hears it
//!
//! [`Audience`]: only `Actual` alerts with scope `Public` reach the public: the `alerts`
//! gateway channel (with `geometry`, a GeoJSON MultiPolygon of the areas, so geo-filtered
//! subscribers get only alerts whose area meets their box), the ATOM feed, and every
//! subscriber in the area. `Test`, `Exercise` and `Draft` alerts reach only subscribers on
//! the allowlist ([`AlertSettings::test_allowlist`]: user ids, e-mail addresses, phone
//! numbers) and never the public channel or feed; `System` and non-public scopes reach
//! nobody. Targeting (see `docs/alerting.md`): subscriptions whose location lies inside one of
//! the alert's polygons, circles or resolved geocodes (selected by the in-memory targeting
//! index, [`AlertTargets`], then read from the store and tested exactly), whose minimum
//! severity the alert reaches, get one delivery per channel they registered an address for
//! (`email`, `sms`, `push`).
//!
//! # Ending a subscription
//!
//! Every e-mail carries a signed unsubscribe link ([`unsubscribe_url`]; `GET` ends the
//! subscription and confirms it, `POST` is RFC 8058 one-click); an SMS reply `STOP` reaches
//! `POST /api/v1/alerts/sms/inbound` (Twilio's webhook, signature checked) and ends every
//! subscription of that number; a push service's 404/410 ends a push subscription (the
//! delivery worker). Push endpoints on private or loopback addresses are refused unless
//! [`AlertSettings::push_policy`] lets their network through.

use crate::alert_targets::AlertTargets;
use crate::extract::ApiJson;
use crate::geocodes::GeocodeTable;
use crate::problem::{FieldError, Problem, ProblemKind};
use crate::rbac::{Action, Principal};
use crate::state::ApiState;
use crate::validate::Checks;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_cap::{Alert, Diagnostic, Limits, Scope, Severity, Status};
use nexus_events::{EventType, record};
use nexus_geo::Position;
use nexus_store::{AlertFilter, AlertRecord, AlertStatus, NewDelivery, SubscriptionRecord, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest CAP document accepted by `POST /api/v1/alerts`.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Gateway channel of public alerts.
pub const ALERTS_CHANNEL: &str = "alerts";
/// Default and largest `limit` of lists.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;
/// Subscriptions read from the store per page while targeting (their ids come from the
/// targeting index).
const TARGET_PAGE: usize = 5000;
/// Vertices of the polygon standing in for a CAP circle in published geometry.
const CIRCLE_VERTICES: usize = 32;
/// How long a device's last reported location targets, unless configured.
pub const DEFAULT_DEVICE_LOCATION_MAX_AGE: std::time::Duration =
    std::time::Duration::from_secs(12 * 3600);
/// The delivery channel of a user's personal gateway channel.
pub const WEBSOCKET: &str = "websocket";

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(post_alert, list_alerts))
        .routes(routes!(preview_alert))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .routes(routes!(approve_alert))
        .routes(routes!(unsubscribe_link, unsubscribe_one_click))
        .routes(routes!(sms_inbound))
        .routes(routes!(push_key))
        .routes(routes!(alert_feed))
        .routes(routes!(get_alert))
        .routes(routes!(alert_deliveries))
        .routes(routes!(create_subscription))
        .routes(routes!(delete_subscription))
        .routes(routes!(report_device_location))
        .routes(routes!(crisis_alerts))
}

// ---------------------------------------------------------------------------------------
// Views

/// An alert as the API lists it (the CAP document itself is at `links.cap`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    /// Server id.
    pub id: String,
    /// CAP identifier.
    pub identifier: String,
    /// CAP sender.
    pub sender: String,
    /// CAP sent.
    pub sent: String,
    /// Lifecycle: `pending` (approval), `active`, `superseded`, `cancelled`, `expired`.
    pub status: String,
    /// CAP status (`Actual`, `Exercise`, `System`, `Test`, `Draft`).
    pub cap_status: String,
    /// CAP msgType.
    pub msg_type: String,
    /// First info's headline (or event).
    pub headline: Option<String>,
    /// First info's severity.
    pub severity: Option<String>,
    /// Latest expiry (RFC 3339), if any.
    pub expires: Option<String>,
    /// The alert that superseded or cancelled this one.
    pub superseded_by: Option<String>,
    /// Bounds of its areas, `[minLon, minLat, maxLon, maxLat]`.
    pub bbox: Option<[f64; 4]>,
    /// Links: `self`, `cap` (XML), `deliveries`.
    #[schema(value_type = Object)]
    pub links: Value,
}

/// The answer to `POST /api/v1/alerts`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertIssued {
    /// The stored alert.
    #[serde(flatten)]
    pub alert: AlertView,
    /// Server ids of the alerts it superseded or cancelled (none while pending).
    pub supersedes: Vec<String>,
    /// The alert's geocodes that the geocode table does not know (they target nobody).
    pub unresolved_geocodes: Vec<GeocodeRef>,
}

/// The answer to `POST /api/v1/alerts/preview`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertPreview {
    /// `public` (Actual, Public scope), `allowlist` (Test, Exercise, Draft: allowlisted
    /// subscribers only) or `none`.
    pub audience: String,
    /// Deliveries it would queue per channel (`email`, `sms`, `push`, `websocket`: users'
    /// personal channels).
    #[schema(value_type = Object)]
    pub channels: BTreeMap<String, usize>,
    /// Distinct subscriptions reached.
    pub subscribers: usize,
    /// Whether it would be published on the gateway's `alerts` channel.
    pub websocket: bool,
    /// Whether it would wait for a second authority's approval.
    pub approval_required: bool,
    /// The alert's geocodes that the geocode table does not know (they target nobody).
    pub unresolved_geocodes: Vec<GeocodeRef>,
}

/// A CAP geocode (`valueName`, `value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GeocodeRef {
    /// The scheme, e.g. `SAME`, `EMMA_ID`.
    #[serde(rename = "valueName")]
    pub value_name: String,
    /// The code.
    pub value: String,
}

/// The alerting policy of the API (the server fills it from its configuration).
#[derive(Clone)]
pub struct AlertSettings {
    /// The approval step: an `Actual` alert waits for a second `alert_authority`.
    pub approval: bool,
    /// Who hears `Test`, `Exercise` and `Draft` alerts: subscriptions whose user id,
    /// e-mail address or phone number is listed.
    pub test_allowlist: Vec<String>,
    /// Where Web Push endpoints may point (the outbound guard, checked at registration; the
    /// push channel checks again when sending).
    pub push_policy: nexus_alert_delivery::OutboundPolicy,
    /// HMAC key of unsubscribe links.
    pub link_key: Vec<u8>,
    /// Base URL of links in messages (`https://alerts.example.org`), no trailing slash.
    pub public_url: String,
    /// The SMS provider's auth token, which signs its inbound webhooks
    /// (`X-Twilio-Signature`); inbound SMS are refused without it.
    pub sms_auth_token: Option<String>,
    /// The VAPID public key browsers subscribe with, when Web Push is on.
    pub vapid_public_key: Option<String>,
    /// How long a device's last reported location keeps targeting its subscription.
    pub device_location_max_age: std::time::Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            approval: false,
            test_allowlist: Vec::new(),
            push_policy: nexus_alert_delivery::OutboundPolicy::default(),
            link_key: Vec::new(),
            public_url: String::new(),
            sms_auth_token: None,
            vapid_public_key: None,
            device_location_max_age: DEFAULT_DEVICE_LOCATION_MAX_AGE,
        }
    }
}

impl std::fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSettings")
            .field("approval", &self.approval)
            .field("test_allowlist", &self.test_allowlist.len())
            .field("push_policy", &self.push_policy)
            .field("public_url", &self.public_url)
            .field("device_location_max_age", &self.device_location_max_age)
            .finish_non_exhaustive()
    }
}

/// Who an alert reaches, by its CAP status and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// `Actual` with scope `Public`: the `alerts` channel, the feed, every subscriber.
    Public,
    /// `Test`, `Exercise`, `Draft`: allowlisted subscribers only, never the public.
    Allowlist,
    /// Anything else (`System`, `Restricted`/`Private` scope): nobody.
    Nobody,
}

impl Audience {
    /// The audience of `alert`.
    pub fn of(alert: &Alert) -> Audience {
        match alert.status {
            Status::Actual if alert.scope == Some(Scope::Public) => Audience::Public,
            Status::Test | Status::Exercise | Status::Draft => Audience::Allowlist,
            _ => Audience::Nobody,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Audience::Public => "public",
            Audience::Allowlist => "allowlist",
            Audience::Nobody => "none",
        }
    }
}

/// A page of alerts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub items: Vec<AlertView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// List filters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertListParams {
    /// CAP identifier.
    pub identifier: Option<String>,
    /// CAP sender.
    pub sender: Option<String>,
    /// `active`, `superseded`, `cancelled` or `expired`.
    pub status: Option<String>,
    /// Page size (default 50, max 1000).
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A subscription: where to be alerted, and how.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// The location, `{"lat", "lon"}`.
    pub location: LatLonIn,
    /// E-mail address for the `email` channel.
    #[serde(default)]
    pub email: Option<String>,
    /// E.164 phone number for the `sms` channel.
    #[serde(default)]
    pub phone: Option<String>,
    /// Web Push subscription for the `push` channel, as the browser's
    /// `PushSubscription.toJSON()` gives it: `{endpoint, keys: {p256dh, auth}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub push: Option<nexus_alert_delivery::PushSubscription>,
    /// Channels to receive on (`email`, `sms`, `push`, `websocket`); default: every channel
    /// given an address, and `websocket` (the user's personal gateway channel `user#<id>`)
    /// for a signed-in user. A listed channel needs its address (`websocket`: a user).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Preferred language (BCP 47).
    #[serde(default)]
    pub language: Option<String>,
    /// Least CAP severity to be alerted for: `Extreme`, `Severe`, `Moderate`, `Minor`.
    #[serde(default)]
    pub min_severity: Option<String>,
}

/// A point.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatLonIn {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// A created subscription.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Subscription id.
    pub id: String,
    /// Channels it receives on.
    pub channels: Vec<String>,
}

/// Delivery report of one alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryReport {
    /// Counts per channel and state (`queued`, `sending`, `delivered`, `failed`, `expired`).
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, BTreeMap<String, i64>>,
    /// Per-recipient deliveries (addresses omitted), in id order.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Optional authentication: public reads, more for authorities

/// The caller, when credentials were sent (invalid ones are still a 401).
struct MaybePrincipal(Option<Principal>);

impl FromRequestParts<ApiState> for MaybePrincipal {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION)
            || parts.headers.contains_key("x-api-key")
        {
            return Ok(MaybePrincipal(Some(
                Principal::from_request_parts(parts, state).await?,
            )));
        }
        Ok(MaybePrincipal(None))
    }
}

impl MaybePrincipal {
    /// Whether the caller may see non-public alerts (Test, Exercise, …, Restricted).
    fn is_authority(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|p| p.authorize(Action::IssueAlert, None).is_ok())
    }
}

// ---------------------------------------------------------------------------------------
// Handlers

/// Issue a CAP alert (XML or JSON); Update and Cancel supersede the alerts they reference.
/// With the approval step on, an `Actual` alert stays `pending` until another authority
/// approves it. Deliveries are queued by the alerting consumer of the alert's event.
#[utoipa::path(post, path = "/alerts", tag = "alerts",
    request_body(content = Object, description = "CAP 1.2 XML (application/cap+xml, application/xml) or its JSON form (docs/cap-json.md)",
        content_type = "application/cap+xml"),
    responses((status = 201, body = AlertIssued), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = [])))]
async fn post_alert(
    State(state): State<ApiState>,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    who.authorize(Action::IssueAlert, None)?;
    let (alert, xml) = decode(&headers, &body)?;
    let issued = issue(&state, alert, xml, who.user_id().map(str::to_string)).await?;
    let id = issued.alert.id.clone();
    let mut resp = (StatusCode::CREATED, Json(issued)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/alerts/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The issue path shared by `POST /api/v1/alerts` and the feed ingester: supersedes what
/// the alert references, targets its areas (polygons, circles, geocodes from the
/// [`GeocodeTable`]), stores it with its event and deliveries, and publishes it when public.
/// `alert` must be valid CAP 1.2 and `xml` its CAP 1.2 XML.
pub async fn issue(
    state: &ApiState,
    alert: Alert,
    xml: String,
    created_by: Option<String>,
) -> Result<AlertIssued, Problem> {
    let now = now_ms();
    let supersedes = referenced_alerts(state, &alert).await?;
    let expires_at = alert.expires_at().map(|e| e.to_utc().timestamp_millis());
    let expired = expires_at.is_some_and(|e| e <= now);
    let pending = !expired && needs_approval(&state.alerting, &alert);
    let shapes = Shapes::of(&alert, &state.geocodes);
    if !shapes.unresolved.is_empty() {
        tracing::warn!(identifier = %alert.identifier, unresolved = ?shapes.unresolved, "alert geocodes missing from the geocode table");
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let cap_json = serde_json::to_string(&alert).map_err(|e| Problem::internal(&e))?;
    let rec = AlertRecord {
        id: id.clone(),
        identifier: alert.identifier.clone(),
        sender: alert.sender.clone(),
        sent: alert.sent.to_string(),
        sent_at: alert.sent.to_utc().timestamp_millis(),
        cap_status: alert.status.as_str().to_string(),
        msg_type: alert.msg_type.as_str().to_string(),
        status: if expired {
            AlertStatus::Expired
        } else if pending {
            AlertStatus::Pending
        } else {
            AlertStatus::Active
        },
        expires_at,
        bbox: shapes.bbox,
        cap_xml: xml,
        cap_json,
        superseded_by: None,
        created_by,
        created_at: now,
        updated_at: now,
    };
    if pending {
        // Nothing is superseded, published or delivered before the approval.
        state.store.issue_alert(&rec, &[], &[], &[]).await?;
    } else {
        let event = alert_event(&rec, &supersedes)?;
        state
            .store
            .issue_alert(&rec, &supersedes, &[], &[event])
            .await?;
    }
    tracing::info!(alert = %id, msg_type = %rec.msg_type, status = %rec.status, "alert issued");
    Ok(AlertIssued {
        alert: view(&rec),
        supersedes: if pending { Vec::new() } else { supersedes },
        unresolved_geocodes: shapes.unresolved,
    })
}

/// Server ids of the alerts `alert` references (Update, Cancel); 409 when one is unknown.
async fn referenced_alerts(state: &ApiState, alert: &Alert) -> Result<Vec<String>, Problem> {
    let refs = alert.referenced().map_err(|e| {
        Problem::validation(vec![FieldError {
            pointer: "/references".into(),
            detail: e.to_string(),
        }])
    })?;
    let mut supersedes = Vec::new();
    for r in &refs {
        let found = state
            .store
            .alert_by_triple(&r.identifier, &r.sender, r.sent.to_utc().timestamp_millis())
            .await?;
        match found {
            Some(rec) => supersedes.push(rec.id),
            None => {
                return Err(Problem::conflict(format!(
                    "references: no alert {r} is known to this server"
                )));
            }
        }
    }
    Ok(supersedes)
}

/// Whether `alert` waits for a second authority: the step is on and it is `Actual`.
fn needs_approval(settings: &AlertSettings, alert: &Alert) -> bool {
    settings.approval && alert.status == Status::Actual
}

/// The CloudEvent of an alert that comes into force: `alert.issued`, `alert.updated` or
/// `alert.cancelled` by msgType. Its data names the alert; the alerting consumer reads the
/// rest from the store.
fn alert_event(
    rec: &AlertRecord,
    supersedes: &[String],
) -> Result<nexus_store::outbox::NewEvent, Problem> {
    let event_type = match rec.msg_type.as_str() {
        "Update" => EventType::AlertUpdated,
        "Cancel" => EventType::AlertCancelled,
        _ => EventType::AlertIssued,
    };
    record(
        event_type,
        &rec.id,
        json!({
            "id": rec.id,
            "identifier": rec.identifier,
            "sender": rec.sender,
            "sent": rec.sent,
            "cap_status": rec.cap_status,
            "msg_type": rec.msg_type,
            "supersedes": supersedes,
        }),
    )
    .map_err(|e| Problem::internal(&e))
}

/// Approve a pending alert (the approval step): another `alert_authority` than its issuer.
/// It then comes into force exactly as if issued now: it supersedes or cancels what it
/// references, and its event reaches the alerting consumer.
#[utoipa::path(post, path = "/alerts/{id}/approve", tag = "alerts", params(("id" = String, Path, description = "Server id")),
    responses((status = 200, body = AlertIssued), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn approve_alert(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<AlertIssued>, Problem> {
    who.authorize(Action::ApproveAlert, None)?;
    let Some(approver) = who.user_id().map(str::to_string) else {
        return Err(Problem::forbidden(
            "approvals are made by a person, not an API key",
        ));
    };
    let Some(rec) = state.store.alert(&id).await? else {
        return Err(Problem::not_found("no such alert"));
    };
    if rec.status != AlertStatus::Pending {
        return Err(Problem::conflict(format!(
            "the alert is {}, not pending approval",
            rec.status
        )));
    }
    if rec.created_by.as_deref() == Some(approver.as_str()) {
        return Err(Problem::forbidden(
            "a second alert authority, not the issuer, must approve",
        ));
    }
    let now = now_ms();
    if rec.expires_at.is_some_and(|e| e <= now) {
        return Err(Problem::conflict(
            "the alert expired before it was approved",
        ));
    }
    let alert = stored_alert(&rec)?;
    let supersedes = referenced_alerts(&state, &alert).await?;
    let event = alert_event(&rec, &supersedes)?;
    let Some(rec) = state
        .store
        .approve_alert(&id, &approver, &supersedes, &[event], now)
        .await?
    else {
        return Err(Problem::conflict("the alert was approved meanwhile"));
    };
    tracing::info!(alert = %id, "alert approved");
    Ok(Json(AlertIssued {
        alert: view(&rec),
        supersedes,
        unresolved_geocodes: Shapes::of(&alert, &state.geocodes).unresolved,
    }))
}

/// Who would receive an alert, per channel, without issuing it: the same body as
/// `POST /alerts`; nothing is stored or sent.
#[utoipa::path(post, path = "/alerts/preview", tag = "alerts",
    request_body(content = Object, description = "CAP 1.2 XML or its JSON form, as for POST /alerts",
        content_type = "application/cap+xml"),
    responses((status = 200, body = AlertPreview), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = [])))]
async fn preview_alert(
    State(state): State<ApiState>,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AlertPreview>, Problem> {
    who.authorize(Action::PreviewAlert, None)?;
    let (alert, _) = decode(&headers, &body)?;
    let audience = Audience::of(&alert);
    let shapes = Shapes::of(&alert, &state.geocodes);
    let mut channels: BTreeMap<String, usize> = ["email", "sms", "push", WEBSOCKET]
        .into_iter()
        .map(|c| (c.to_string(), 0))
        .collect();
    let mut subscribers = 0;
    let mut targeting = Targeting::new(&state, &alert, &shapes, audience);
    while let Some(page) = targeting.next_page().await? {
        for d in &page {
            *channels.entry(d.channel.clone()).or_default() += 1;
        }
        subscribers += targeting.matched;
    }
    Ok(Json(AlertPreview {
        audience: audience.as_str().to_string(),
        channels,
        subscribers,
        websocket: audience == Audience::Public,
        approval_required: needs_approval(&state.alerting, &alert),
        unresolved_geocodes: shapes.unresolved,
    }))
}

/// List alerts, newest first. Without authority credentials only public `Actual` alerts.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertListParams),
    responses((status = 200, body = AlertPage), (status = 400, body = Problem)))]
async fn list_alerts(
    State(state): State<ApiState>,
    who: MaybePrincipal,
    Query(params): Query<AlertListParams>,
) -> Result<Json<AlertPage>, Problem> {
    list(&state, &who, params).await.map(Json)
}

/// The platform description's path for the alert list (same as `GET /api/v1/alerts`).
#[utoipa::path(get, path = "/crisis/alerts", tag = "alerts", params(AlertListParams),
    responses((status = 200, body = AlertPage), (status = 400, body = Problem)))]
async fn crisis_alerts(
    State(state): State<ApiState>,
    who: MaybePrincipal,
    Query(params): Query<AlertListParams>,
) -> Result<Json<AlertPage>, Problem> {
    list(&state, &who, params).await.map(Json)
}

/// Active public alerts as an ATOM feed; each entry links its CAP XML.
#[utoipa::path(get, path = "/alerts/feed.atom", tag = "alerts",
    responses((status = 200, description = "ATOM 1.0 feed", content_type = "application/atom+xml")))]
async fn alert_feed(State(state): State<ApiState>) -> Result<Response, Problem> {
    let now = now_ms();
    let recs = state
        .store
        .alerts_page(&AlertFilter {
            status: Some(AlertStatus::Active),
            cap_status: Some("Actual".into()),
            unexpired_at: Some(now),
            limit: MAX_LIMIT,
            ..AlertFilter::default()
        })
        .await?;
    let mut alerts = Vec::with_capacity(recs.len());
    for rec in &recs {
        let alert = stored_alert(rec)?;
        if alert.scope == Some(Scope::Public) {
            alerts.push((format!("/api/v1/alerts/{}", rec.id), alert));
        }
    }
    let updated = recs.iter().map(|r| r.updated_at).max().unwrap_or(now);
    let updated = chrono::DateTime::from_timestamp_millis(updated)
        .unwrap_or_default()
        .fixed_offset();
    let entries: Vec<nexus_cap::FeedEntry<'_>> = alerts
        .iter()
        .map(|(link, alert)| nexus_cap::FeedEntry { alert, link })
        .collect();
    let feed = nexus_cap::atom_feed(
        &nexus_cap::Feed {
            id: "urn:nexus:alerts",
            title: "Nexus active alerts",
            updated: nexus_cap::DateTime::new(updated),
            self_link: Some("/api/v1/alerts/feed.atom"),
            cap_elements: true,
        },
        &entries,
    );
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        feed,
    )
        .into_response())
}

/// One alert: CAP XML for `Accept: application/cap+xml` or `application/xml`, else the JSON
/// form with the server's view under `nexus`.
#[utoipa::path(get, path = "/alerts/{id}", tag = "alerts", params(("id" = String, Path, description = "Server id")),
    responses((status = 200, description = "CAP XML or JSON", body = Object), (status = 404, body = Problem)))]
async fn get_alert(
    State(state): State<ApiState>,
    who: MaybePrincipal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let Some(rec) = state.store.alert(&id).await? else {
        return Err(Problem::not_found("no such alert"));
    };
    let alert = stored_alert(&rec)?;
    if (!is_public(&alert) || rec.status == AlertStatus::Pending) && !who.is_authority() {
        return Err(Problem::not_found("no such alert"));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/cap+xml") || accept.contains("application/xml") {
        let ct = if accept.contains("application/cap+xml") {
            "application/cap+xml; charset=utf-8"
        } else {
            "application/xml; charset=utf-8"
        };
        return Ok(([(header::CONTENT_TYPE, ct)], rec.cap_xml).into_response());
    }
    let mut body = serde_json::to_value(&alert).map_err(|e| Problem::internal(&e))?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "nexus".into(),
            serde_json::to_value(view(&rec)).map_err(|e| Problem::internal(&e))?,
        );
    }
    Ok(Json(body).into_response())
}

/// Delivery counts per channel and state, and per-recipient deliveries (no addresses).
#[utoipa::path(get, path = "/alerts/{id}/deliveries", tag = "alerts",
    params(("id" = String, Path, description = "Server id"), ("cursor" = Option<String>, Query, description = "From next_cursor"),
        ("limit" = Option<i64>, Query, description = "Page size (default 50, max 1000)")),
    responses((status = 200, body = DeliveryReport), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn alert_deliveries(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<DeliveryReport>, Problem> {
    who.authorize(Action::ReadAlertDeliveries, None)?;
    if state.store.alert(&id).await?.is_none() {
        return Err(Problem::not_found("no such alert"));
    }
    let limit = parse_limit(q.get("limit").map(String::as_str))?;
    let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (channel, st, n) in state.store.delivery_counts(&id).await? {
        counts.entry(channel).or_default().insert(st, n);
    }
    let rows = state
        .store
        .deliveries_page(&id, q.get("cursor").map(String::as_str), limit + 1)
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    let rows = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
    let next_cursor = more.then(|| rows.last().map(|d| d.id.clone())).flatten();
    let items = rows
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "recipient_id": d.recipient_id,
                "channel": d.channel,
                "state": d.state.name(),
                "attempt": d.attempt,
                "last_error": d.last_error,
                "updated_at": rfc3339(d.updated_at),
            })
        })
        .collect();
    Ok(Json(DeliveryReport {
        counts,
        items,
        next_cursor,
    }))
}

/// Subscribe a location to public alerts by e-mail, SMS and/or Web Push.
#[utoipa::path(post, path = "/alerts/subscriptions", tag = "alerts", request_body = SubscriptionRequest,
    responses((status = 201, body = SubscriptionView), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn create_subscription(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<SubscriptionRequest>,
) -> Result<(StatusCode, Json<SubscriptionView>), Problem> {
    who.authorize(Action::SubscribeAlerts, None)?;
    let mut checks = Checks::new();
    checks.check(
        Position::new(req.location.lat, req.location.lon).is_ok(),
        "/location",
        "lat must be within ±90 and lon within ±180",
    );
    if let Some(e) = &req.email {
        checks.email("/email", e);
    }
    if let Some(p) = &req.phone {
        let digits = p.strip_prefix('+').unwrap_or("");
        checks.check(
            (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
            "/phone",
            "must be an E.164 phone number (+ and 8 to 15 digits)",
        );
    }
    if let Some(s) = &req.min_severity {
        checks.check(
            severity_rank(s).is_some_and(|r| r > 0),
            "/min_severity",
            "must be Extreme, Severe, Moderate or Minor",
        );
    }
    if let Some(p) = &req.push
        && let Err(e) = p.check(&state.alerting.push_policy)
    {
        checks.check(false, "/push", &e);
    }
    let mut req = req;
    // The personal channel needs a user to address; by default every user's subscription
    // has it.
    let mut websocket = who.user_id().is_some();
    if let Some(channels) = req.channels.take() {
        for (i, c) in channels.iter().enumerate() {
            let given = match c.as_str() {
                "email" => req.email.is_some(),
                "sms" => req.phone.is_some(),
                "push" => req.push.is_some(),
                WEBSOCKET => who.user_id().is_some(),
                _ => {
                    checks.check(
                        false,
                        &format!("/channels/{i}"),
                        "must be email, sms, push or websocket",
                    );
                    continue;
                }
            };
            checks.check(
                given,
                &format!("/channels/{i}"),
                "this channel needs its address (email, phone, push, or a signed-in user for websocket)",
            );
        }
        let wants = |c: &str| channels.iter().any(|x| x == c);
        websocket = wants(WEBSOCKET);
        if !wants("email") {
            req.email = None;
        }
        if !wants("sms") {
            req.phone = None;
        }
        if !wants("push") {
            req.push = None;
        }
    }
    checks.check(
        req.email.is_some() || req.phone.is_some() || req.push.is_some() || websocket,
        "",
        "give an email, a phone or a push subscription",
    );
    checks.finish()?;
    let push = match &req.push {
        Some(p) => Some(serde_json::to_string(p).map_err(|e| Problem::internal(&e))?),
        None => None,
    };
    let rec = SubscriptionRecord {
        id: uuid::Uuid::now_v7().simple().to_string(),
        user_id: who.user_id().map(str::to_string),
        lat: req.location.lat,
        lon: req.location.lon,
        language: req.language,
        min_severity: req.min_severity,
        email: req.email,
        phone: req.phone,
        push,
        created_at: now_ms(),
        websocket,
        device: None,
    };
    let event = record(
        EventType::AlertSubscriptionCreated,
        &rec.id,
        json!({"id": rec.id}),
    )
    .map_err(|e| Problem::internal(&e))?;
    state
        .store
        .insert_subscription_with_events(&rec, &[event])
        .await?;
    // This node's targeting index at once; other nodes through the event (ids only: the
    // location and addresses stay in the store).
    if let Ok(at) = Position::new(rec.lat, rec.lon)
        && let Err(e) = state.targets.add(&rec.id, at).await
    {
        tracing::warn!(error = %e, "alert subscription not placed in the targeting index");
    }
    let mut channels = Vec::new();
    if rec.email.is_some() {
        channels.push("email".to_string());
    }
    if rec.phone.is_some() {
        channels.push("sms".to_string());
    }
    if rec.push.is_some() {
        channels.push("push".to_string());
    }
    if rec.websocket {
        channels.push(WEBSOCKET.to_string());
    }
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionView {
            id: rec.id,
            channels,
        }),
    ))
}

/// End a subscription (its id is the capability; it is what unsubscribe links carry).
#[utoipa::path(delete, path = "/alerts/subscriptions/{id}", tag = "alerts", params(("id" = String, Path, description = "Subscription id")),
    responses((status = 204, description = "ended"), (status = 404, body = Problem)))]
async fn delete_subscription(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if end_subscription(&state, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no such active subscription"))
    }
}

/// Where the subscriber's device is now (`PUT /alerts/subscriptions/{id}/location`).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceLocationIn {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// A subscriber's device reports where it is: its last known location, which targets the
/// subscription as its registered location does until the next report or until it is older
/// than the configured age. Only the subscription's owner (the signed-in user who made it)
/// may; the position overwrites the last one, and neither events nor logs carry it.
#[utoipa::path(put, path = "/alerts/subscriptions/{id}/location", tag = "alerts",
    params(("id" = String, Path, description = "Subscription id")), request_body = DeviceLocationIn,
    responses((status = 204, description = "recorded"), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn report_device_location(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DeviceLocationIn>,
) -> Result<StatusCode, Problem> {
    who.authorize(Action::SubscribeAlerts, None)?;
    let Ok(at) = Position::new(req.lat, req.lon) else {
        let mut checks = Checks::new();
        checks.check(
            req.lat.is_finite() && (-90.0..=90.0).contains(&req.lat),
            "/lat",
            "must be within ±90",
        );
        checks.check(
            req.lon.is_finite() && (-180.0..=180.0).contains(&req.lon),
            "/lon",
            "must be within ±180",
        );
        checks.finish()?;
        return Err(Problem::validation(vec![FieldError {
            pointer: String::new(),
            detail: "not a valid position".into(),
        }]));
    };
    // Subscriptions made with an API key have no owner, so no device reports for them.
    let Some(owner) = who.user_id() else {
        return Err(Problem::not_found("no such active subscription of yours"));
    };
    let event = record(EventType::AlertSubscriptionLocated, &id, json!({"id": id}))
        .map_err(|e| Problem::internal(&e))?;
    let location = nexus_store::DeviceLocation {
        lat: req.lat,
        lon: req.lon,
        at: now_ms(),
    };
    if !state
        .store
        .set_device_location(&id, Some(owner), location, &[event])
        .await?
    {
        return Err(Problem::not_found("no such active subscription of yours"));
    }
    if let Err(e) = state.targets.locate(&id, Some(at)).await {
        tracing::warn!(error = %e, "device location not placed in the targeting index");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ends an active subscription with its `alert.subscription.ended` event, and takes it out
/// of this node's targeting index; false when there was none active.
async fn end_subscription(state: &ApiState, id: &str) -> Result<bool, Problem> {
    let event = record(EventType::AlertSubscriptionEnded, id, json!({"id": id}))
        .map_err(|e| Problem::internal(&e))?;
    let ended = state
        .store
        .deactivate_subscription_with_events(id, &[event])
        .await?;
    if ended && let Err(e) = state.targets.remove(vec![id.to_string()]).await {
        tracing::warn!(error = %e, "ended alert subscription not taken out of the targeting index");
    }
    Ok(ended)
}

/// The signed token of a subscription's unsubscribe link: `ID.MAC`, MAC = base64url
/// HMAC-SHA-256 of the id under the link key (no expiry: a link in an old e-mail still works).
pub fn unsubscribe_token(key: &[u8], subscription_id: &str) -> String {
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        format!("nexus-unsubscribe:{subscription_id}").as_bytes(),
    );
    format!("{subscription_id}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
}

/// The unsubscribe URL every e-mail to `subscription_id` carries.
pub fn unsubscribe_url(settings: &AlertSettings, subscription_id: &str) -> String {
    format!(
        "{}/api/v1/alerts/unsubscribe?token={}",
        settings.public_url,
        unsubscribe_token(&settings.link_key, subscription_id)
    )
}

/// The subscription id of a genuine token.
fn verify_unsubscribe_token(key: &[u8], token: &str) -> Option<String> {
    let (id, mac) = token.rsplit_once('.')?;
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        format!("nexus-unsubscribe:{id}").as_bytes(),
        &mac,
    )
    .ok()?;
    Some(id.to_string())
}

/// The `token` of an unsubscribe link.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnsubscribeParams {
    /// The signed token from the link.
    pub token: String,
}

async fn unsubscribe(state: &ApiState, token: &str) -> Result<bool, Problem> {
    let Some(id) = verify_unsubscribe_token(&state.alerting.link_key, token) else {
        return Err(Problem::validation(vec![FieldError {
            pointer: "/token".into(),
            detail: "this unsubscribe link is not valid".into(),
        }]));
    };
    let ended = end_subscription(state, &id).await?;
    if ended {
        tracing::info!(subscription = %id, "alert subscription ended by its unsubscribe link");
    }
    Ok(ended)
}

/// The unsubscribe link of alert e-mails: ends the subscription and confirms it (HTML).
#[utoipa::path(get, path = "/alerts/unsubscribe", tag = "alerts", params(UnsubscribeParams),
    responses((status = 200, description = "confirmation page", content_type = "text/html"), (status = 400, body = Problem)))]
async fn unsubscribe_link(
    State(state): State<ApiState>,
    Query(q): Query<UnsubscribeParams>,
) -> Result<Response, Problem> {
    let ended = unsubscribe(&state, &q.token).await?;
    let text = if ended {
        "You are unsubscribed: you will receive no more alerts for this subscription."
    } else {
        "This subscription had already ended: you will receive no more alerts for it."
    };
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Unsubscribed</title></head><body><h1>Unsubscribed</h1><p>{text}</p></body></html>\n"
        ),
    )
        .into_response())
}

/// One-click unsubscribe (RFC 8058): mail clients POST to the `List-Unsubscribe` URL.
#[utoipa::path(post, path = "/alerts/unsubscribe", tag = "alerts", params(UnsubscribeParams),
    responses((status = 204, description = "ended (or had ended)"), (status = 400, body = Problem)))]
async fn unsubscribe_one_click(
    State(state): State<ApiState>,
    Query(q): Query<UnsubscribeParams>,
) -> Result<StatusCode, Problem> {
    unsubscribe(&state, &q.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replies that end SMS alerts (the keywords carriers and Twilio honour).
const STOP_WORDS: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

/// The SMS provider's inbound-message webhook (Twilio form fields `From`, `Body`, signed
/// with `X-Twilio-Signature`): a reply STOP ends every subscription of that number. Answers
/// TwiML.
#[utoipa::path(post, path = "/alerts/sms/inbound", tag = "alerts",
    request_body(content = String, description = "application/x-www-form-urlencoded: From, Body, …",
        content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "TwiML", content_type = "text/xml"), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
async fn sms_inbound(
    State(state): State<ApiState>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let Some(token) = state.alerting.sms_auth_token.as_deref() else {
        return Err(Problem::not_found("inbound SMS are not configured"));
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let url = format!(
        "{}{}",
        state.alerting.public_url,
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !twilio_signature_ok(token, &url, &form, signature) {
        return Err(Problem::forbidden("X-Twilio-Signature does not match"));
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let from = field("From");
    let word = field("Body").to_ascii_uppercase();
    let reply = if STOP_WORDS.contains(&word.as_str()) && !from.is_empty() {
        let ended = state.store.deactivate_subscriptions_by_phone(&from).await?;
        tracing::info!(ended, "alert subscriptions ended by an SMS STOP");
        "<Message>You will receive no more Nexus alerts on this number.</Message>"
    } else {
        ""
    };
    Ok((
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{reply}</Response>"),
    )
        .into_response())
}

/// Twilio's webhook signature: base64 HMAC-SHA1, under the auth token, of the URL followed
/// by every POST parameter's name and value in name order.
fn twilio_signature_ok(token: &str, url: &str, form: &[(String, String)], signature: &str) -> bool {
    let mut params: Vec<&(String, String)> = form.iter().collect();
    params.sort();
    let mut data = url.to_string();
    for (k, v) in params {
        data.push_str(k);
        data.push_str(v);
    }
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes()),
        data.as_bytes(),
        &sig,
    )
    .is_ok()
}

/// The server's VAPID public key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PushKey {
    /// Base64url uncompressed P-256 point: `applicationServerKey` for
    /// `PushManager.subscribe`.
    pub public_key: String,
}

/// The key browsers subscribe to Web Push with.
#[utoipa::path(get, path = "/alerts/push/key", tag = "alerts",
    responses((status = 200, body = PushKey), (status = 404, body = Problem)))]
async fn push_key(State(state): State<ApiState>) -> Result<Json<PushKey>, Problem> {
    match &state.alerting.vapid_public_key {
        Some(k) => Ok(Json(PushKey {
            public_key: k.clone(),
        })),
        None => Err(Problem::not_found("Web Push is not configured")),
    }
}

// ---------------------------------------------------------------------------------------
// Decoding and validation

/// The alert (CAP 1.2) and its CAP 1.2 XML, from an XML or JSON body.
fn decode(headers: &HeaderMap, body: &[u8]) -> Result<(Alert, String), Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/cap+xml" | "application/xml" | "text/xml" => {
            let parsed = nexus_cap::parse(body, &Limits::default())
                .map_err(|e| cap_problem(e.into_diagnostics()))?;
            let problems = parsed.validate();
            if !problems.is_empty() {
                return Err(cap_problem(problems));
            }
            let alert = parsed.into_cap12();
            let xml = nexus_cap::to_xml(&alert);
            Ok((alert, xml))
        }
        "application/json" => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            let alert: Alert = serde_path_to_error::deserialize(de).map_err(|e| {
                let pointer = e.path().iter().map(|s| format!("/{s}")).collect::<String>();
                let inner = e.into_inner();
                Problem::validation(vec![FieldError {
                    pointer,
                    detail: inner.to_string(),
                }])
            })?;
            let problems = nexus_cap::validate(&alert);
            if !problems.is_empty() {
                return Err(cap_problem(problems));
            }
            let xml = nexus_cap::to_xml(&alert);
            Ok((alert, xml))
        }
        _ => Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "send CAP as application/cap+xml, application/xml or application/json",
        )),
    }
}

/// A validation problem with one entry per diagnostic: the JSON Pointer, and the
/// `line:col` of XML input at the start of the detail.
fn cap_problem(diagnostics: Vec<Diagnostic>) -> Problem {
    let errors: Vec<FieldError> = diagnostics
        .iter()
        .map(|d| FieldError {
            pointer: d.json_pointer(),
            detail: match (d.line, d.column) {
                (Some(l), Some(c)) => format!("{l}:{c}: {}", d.message),
                _ => d.message.clone(),
            },
        })
        .collect();
    let mut p = Problem::validation(errors);
    if let Some(first) = diagnostics.first() {
        let place = match (first.line, first.column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: "),
            _ => String::new(),
        };
        p.detail = Some(format!(
            "{place}{}{}",
            first.message,
            match diagnostics.len() {
                1 => String::new(),
                n => format!(" (and {} more problems)", n - 1),
            }
        ));
    }
    p
}

fn is_public(alert: &Alert) -> bool {
    alert.status == Status::Actual && alert.scope == Some(Scope::Public)
}

fn stored_alert(rec: &AlertRecord) -> Result<Alert, Problem> {
    serde_json::from_str(&rec.cap_json).map_err(|e| Problem::internal(&e))
}

// ---------------------------------------------------------------------------------------
// Geometry and targeting

/// The alert's shapes for the geo engine, with their overall bounds.
struct Shapes {
    areas: Vec<nexus_geo::Area>,
    circles: Vec<(Position, f64)>,
    /// GeoJSON MultiPolygon rings (circles as polygons), `[lon, lat]`.
    rings: Vec<Vec<[f64; 2]>>,
    bbox: Option<[f64; 4]>,
    /// Geocodes the table does not know.
    unresolved: Vec<GeocodeRef>,
}

impl Shapes {
    fn of(alert: &Alert, geocodes: &GeocodeTable) -> Shapes {
        let mut shapes = Shapes {
            areas: Vec::new(),
            circles: Vec::new(),
            rings: Vec::new(),
            bbox: None,
            unresolved: Vec::new(),
        };
        for area in alert.info.iter().flat_map(|i| i.area.iter()) {
            shapes.add_geocodes(area, geocodes);
            let g = area.geometry();
            for ring in g.polygons {
                match nexus_geo::Area::polygon(&ring) {
                    Ok(a) => {
                        shapes.extend(a.bbox().min_lon(), a.bbox().min_lat());
                        shapes.extend(a.bbox().max_lon(), a.bbox().max_lat());
                        shapes.areas.push(a);
                        shapes
                            .rings
                            .push(ring.iter().map(|&(lon, lat)| [lon, lat]).collect());
                    }
                    Err(e) => tracing::warn!(error = %e, "alert polygon unusable for targeting"),
                }
            }
            for (lat, lon, radius_m) in g.circles {
                let Ok(center) = Position::new(lat, lon) else {
                    continue;
                };
                let ring = circle_ring(lat, lon, radius_m);
                for p in &ring {
                    shapes.extend(p[0], p[1]);
                }
                shapes.circles.push((center, radius_m));
                shapes.rings.push(ring);
            }
        }
        shapes
    }

    /// Geocodes resolve to the table's polygons, which then target like the alert's own.
    fn add_geocodes(&mut self, area: &nexus_cap::Area, geocodes: &GeocodeTable) {
        for code in &area.geocode {
            let Some(found) = geocodes.resolve(&code.value_name, &code.value) else {
                let r = GeocodeRef {
                    value_name: code.value_name.clone(),
                    value: code.value.clone(),
                };
                if !self.unresolved.contains(&r) {
                    self.unresolved.push(r);
                }
                continue;
            };
            for g in found {
                let b = g.area.bbox();
                self.extend(b.min_lon(), b.min_lat());
                self.extend(b.max_lon(), b.max_lat());
                self.areas.push(g.area.clone());
                self.rings.extend(g.rings.iter().cloned());
            }
        }
    }

    fn extend(&mut self, lon: f64, lat: f64) {
        let b = self.bbox.get_or_insert([lon, lat, lon, lat]);
        b[0] = b[0].min(lon);
        b[1] = b[1].min(lat);
        b[2] = b[2].max(lon);
        b[3] = b[3].max(lat);
    }

    /// The areas the targeting index selects from: the polygons (the alert's own and its
    /// geocodes') and, for each circle, the polygon around it (slightly outside; the exact
    /// distance test follows in [`Shapes::covers`]).
    fn target_areas(&self) -> Vec<nexus_geo::Area> {
        let mut areas = self.areas.clone();
        for (c, r) in &self.circles {
            let ring: Vec<(f64, f64)> = circle_ring(c.lat(), c.lon(), *r)
                .into_iter()
                .map(|[lon, lat]| (lon, lat))
                .collect();
            match nexus_geo::Area::polygon(&ring) {
                Ok(a) => areas.push(a),
                Err(e) => tracing::warn!(error = %e, "alert circle unusable for targeting"),
            }
        }
        areas
    }

    fn covers(&self, p: Position) -> bool {
        self.areas.iter().any(|a| a.covers(p))
            || self.circles.iter().any(|(c, r)| c.distance_m(p) <= *r)
    }
}

/// A polygon around a circle (for publication and the bounding box; targeting uses the
/// exact great-circle distance), slightly outside it, clamped to valid coordinates.
fn circle_ring(lat: f64, lon: f64, radius_m: f64) -> Vec<[f64; 2]> {
    let dlat = (radius_m / 111_195.0) * 1.02;
    let dlon = dlat / lat.to_radians().cos().abs().max(0.01);
    let mut ring: Vec<[f64; 2]> = (0..CIRCLE_VERTICES)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / CIRCLE_VERTICES as f64;
            [
                (lon + dlon * t.cos()).clamp(-180.0, 180.0),
                (lat + dlat * t.sin()).clamp(-90.0, 90.0),
            ]
        })
        .collect();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    ring
}

fn severity_rank(s: &str) -> Option<u8> {
    Some(match s {
        "Extreme" => 4,
        "Severe" => 3,
        "Moderate" => 2,
        "Minor" => 1,
        "Unknown" => 0,
        _ => return None,
    })
}

/// The deliveries of an alert, a page of subscriptions at a time: the targeting index
/// ([`AlertTargets`], the geo engine's `ids_within`) selects the subscriptions inside the
/// alert's areas, and each page of them is read from the store (addresses, preferences; ended
/// subscriptions are left out there, and forgotten by the index), tested exactly against the
/// areas, and kept if of the audience and if the alert reaches their minimum severity: one
/// delivery per channel with an address. Paging keeps memory and (in [`dispatch`]) each
/// queue transaction bounded, however many people live in the area.
struct Targeting<'a> {
    store: &'a nexus_store::Store,
    targets: &'a AlertTargets,
    settings: &'a AlertSettings,
    shapes: &'a Shapes,
    audience: Audience,
    severity: u8,
    /// Selected by the index and not read yet; `None` before the selection.
    selected: Option<std::collections::VecDeque<std::sync::Arc<str>>>,
    done: bool,
    /// Device locations reported at or after this instant (Unix ms) target.
    fresh_since: i64,
    /// Users given their personal-channel delivery already (one per user per alert, however
    /// many of their subscriptions are in the area).
    users: std::collections::HashSet<String>,
    /// Subscriptions that matched in the last page (what the preview counts).
    matched: usize,
}

impl<'a> Targeting<'a> {
    fn new(state: &'a ApiState, alert: &Alert, shapes: &'a Shapes, audience: Audience) -> Self {
        let severity = alert
            .info
            .iter()
            .map(|i| severity_rank(severity_name(i.severity)).unwrap_or(0))
            .max()
            .unwrap_or(0);
        Targeting {
            store: &state.store,
            targets: &state.targets,
            settings: &state.alerting,
            shapes,
            audience,
            severity,
            selected: None,
            done: shapes.bbox.is_none() || audience == Audience::Nobody,
            fresh_since: now_ms().saturating_sub(
                i64::try_from(state.alerting.device_location_max_age.as_millis())
                    .unwrap_or(i64::MAX),
            ),
            users: std::collections::HashSet::new(),
            matched: 0,
        }
    }

    fn listed(&self, s: &SubscriptionRecord) -> bool {
        self.settings.test_allowlist.iter().any(|a| {
            Some(a.as_str()) == s.user_id.as_deref()
                || Some(a.as_str()) == s.phone.as_deref()
                || s.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(a))
        })
    }

    /// The deliveries of the next page of subscriptions (possibly none); `None` when done.
    async fn next_page(&mut self) -> Result<Option<Vec<NewDelivery>>, Problem> {
        if self.done {
            return Ok(None);
        }
        let selected = match &mut self.selected {
            Some(s) => s,
            None => {
                let ids = self
                    .targets
                    .within(self.shapes.target_areas())
                    .await
                    .map_err(|e| Problem::internal(&e))?;
                self.selected.insert(ids.into())
            }
        };
        if selected.is_empty() {
            self.done = true;
            return Ok(None);
        }
        let take = selected.len().min(TARGET_PAGE);
        // Pages hold disjoint ids and the store answers each in id order, so a
        // subscription's deliveries stay together (what the preview counts by).
        let page: Vec<String> = selected.drain(..take).map(|id| id.to_string()).collect();
        let rows = self.store.subscriptions_by_ids(&page).await?;
        if rows.len() < page.len() {
            // Ended (STOP, a push service's 410) or gone: the index forgets them.
            let found: std::collections::HashSet<&str> =
                rows.iter().map(|r| r.id.as_str()).collect();
            let gone: Vec<String> = page
                .iter()
                .filter(|id| !found.contains(id.as_str()))
                .cloned()
                .collect();
            if let Err(e) = self.targets.remove(gone).await {
                tracing::warn!(error = %e, "targeting index not told of ended subscriptions");
            }
        }
        let mut out = Vec::new();
        let mut stale = Vec::new();
        self.matched = 0;
        for s in rows {
            let Ok(at) = Position::new(s.lat, s.lon) else {
                continue;
            };
            let device = match s.device {
                Some(d) if d.at >= self.fresh_since => Position::new(d.lat, d.lon).ok(),
                Some(_) => {
                    stale.push(s.id.clone());
                    None
                }
                None => None,
            };
            let inside = self.shapes.covers(at) || device.is_some_and(|d| self.shapes.covers(d));
            if !inside
                || (self.audience == Audience::Allowlist && !self.listed(&s))
                || s.min_severity
                    .as_deref()
                    .and_then(severity_rank)
                    .is_some_and(|min| self.severity < min)
            {
                continue;
            }
            self.matched += 1;
            for (channel, address) in [("email", s.email), ("sms", s.phone), ("push", s.push)] {
                if let Some(address) = address {
                    out.push(NewDelivery {
                        recipient_id: s.id.clone(),
                        channel: channel.into(),
                        address,
                    });
                }
            }
            // The personal channel's recipient is the user: one delivery per user per
            // alert (the queue's unique index holds it across pages and redelivered events).
            if s.websocket
                && let Some(user) = s.user_id
                && self.users.insert(user.clone())
            {
                let channel = personal_channel(&user);
                out.push(NewDelivery {
                    recipient_id: channel.clone(),
                    channel: WEBSOCKET.into(),
                    address: channel,
                });
            }
        }
        // Device locations past the age limit: the index forgets them (the row keeps the
        // last report until the next one overwrites it).
        for id in stale {
            if let Err(e) = self.targets.locate(&id, None).await {
                tracing::warn!(error = %e, "targeting index not told of a stale device location");
            }
        }
        Ok(Some(out))
    }
}

/// What the alerting consumer did with one alert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// Deliveries queued (0 when a redelivered event found them queued already) and
    /// whether the alert was published on the `alerts` channel.
    Queued {
        /// Rows added to the delivery queue.
        added: u64,
        /// Published on the gateway's `alerts` channel.
        published: bool,
    },
    /// The alert is not in force (pending, superseded, cancelled, expired): nothing to do.
    NotActive,
    /// No such alert in this store.
    Unknown,
}

/// The alerting consumer's work for an `alert.issued` / `alert.updated` /
/// `alert.cancelled` event: target the alert's subscribers (per its [`Audience`]) and
/// enqueue their deliveries idempotently, then publish a public alert on the gateway's
/// `alerts` channel. `supersedes` comes from the event (what the publication reports).
pub async fn dispatch(
    state: &ApiState,
    alert_id: &str,
    supersedes: &[String],
) -> Result<Dispatched, Problem> {
    let Some(rec) = state.store.alert(alert_id).await? else {
        return Ok(Dispatched::Unknown);
    };
    if rec.status != AlertStatus::Active {
        return Ok(Dispatched::NotActive);
    }
    let alert = stored_alert(&rec)?;
    let audience = Audience::of(&alert);
    let shapes = Shapes::of(&alert, &state.geocodes);
    let mut targeted = 0;
    let mut added = 0;
    let mut targeting = Targeting::new(state, &alert, &shapes, audience);
    while let Some(page) = targeting.next_page().await? {
        targeted += page.len();
        // One transaction per page: a crash in between leaves a prefix queued, and handling
        // the event again queues the rest (the unique index skips what is there).
        added += state
            .store
            .enqueue_deliveries(alert_id, &page, now_ms())
            .await?;
    }
    let published = audience == Audience::Public;
    if published {
        state
            .realtime
            .publish(
                ALERTS_CHANNEL,
                publication(&rec, &alert, &shapes, supersedes),
            )
            .await;
    }
    tracing::info!(alert = %alert_id, targeted, added, published, "alert dispatched");
    Ok(Dispatched::Queued { added, published })
}

/// The gateway's personal channel of a user (`user#<id>`, see the gateway's namespaces).
pub fn personal_channel(user_id: &str) -> String {
    format!("user#{user_id}")
}

fn severity_name(s: Severity) -> &'static str {
    s.as_str()
}

// ---------------------------------------------------------------------------------------
// Views and helpers

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn view(rec: &AlertRecord) -> AlertView {
    let alert: Option<Alert> = serde_json::from_str(&rec.cap_json).ok();
    let info = alert.as_ref().and_then(|a| a.info.first());
    AlertView {
        id: rec.id.clone(),
        identifier: rec.identifier.clone(),
        sender: rec.sender.clone(),
        sent: rec.sent.clone(),
        status: rec.status.as_str().to_string(),
        cap_status: rec.cap_status.clone(),
        msg_type: rec.msg_type.clone(),
        headline: info.map(|i| i.headline.clone().unwrap_or_else(|| i.event.clone())),
        severity: info.map(|i| i.severity.as_str().to_string()),
        expires: rec.expires_at.map(rfc3339),
        superseded_by: rec.superseded_by.clone(),
        bbox: rec.bbox,
        links: json!({
            "self": format!("/api/v1/alerts/{}", rec.id),
            "cap": format!("/api/v1/alerts/{}", rec.id),
            "deliveries": format!("/api/v1/alerts/{}/deliveries", rec.id),
        }),
    }
}

/// What subscribers of the `alerts` channel receive: the alert's summary and its areas as
/// a GeoJSON MultiPolygon in `geometry` (what the gateway's geo filter reads).
fn publication(rec: &AlertRecord, alert: &Alert, shapes: &Shapes, supersedes: &[String]) -> Value {
    let info = alert.info.first();
    let mut data = json!({
        "id": rec.id,
        "identifier": rec.identifier,
        "sender": rec.sender,
        "sent": rec.sent,
        "msg_type": rec.msg_type,
        "status": rec.status.as_str(),
        "supersedes": supersedes,
        "event": info.map(|i| i.event.clone()),
        "headline": info.and_then(|i| i.headline.clone()),
        "severity": info.map(|i| i.severity.as_str()),
        "urgency": info.map(|i| i.urgency.as_str()),
        "instruction": info.and_then(|i| i.instruction.clone()),
        "area_desc": info.map(|i| i.area.iter().map(|a| a.area_desc.clone()).collect::<Vec<_>>()),
        "expires": rec.expires_at.map(rfc3339),
        "links": {"cap": format!("/api/v1/alerts/{}", rec.id)},
    });
    if !shapes.rings.is_empty()
        && let Some(obj) = data.as_object_mut()
    {
        let polygons: Vec<Value> = shapes.rings.iter().map(|r| json!([r])).collect();
        obj.insert(
            "geometry".into(),
            json!({"type": "MultiPolygon", "coordinates": polygons}),
        );
    }
    data
}

fn parse_limit(raw: Option<&str>) -> Result<i64, Problem> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Problem::validation(vec![FieldError {
                pointer: "/limit".into(),
                detail: format!("must be an integer from 1 to {MAX_LIMIT}"),
            }])),
        },
    }
}

async fn list(
    state: &ApiState,
    who: &MaybePrincipal,
    params: AlertListParams,
) -> Result<AlertPage, Problem> {
    let status = match params.status.as_deref() {
        None => None,
        Some(s) => Some(AlertStatus::parse(s).ok_or_else(|| {
            Problem::validation(vec![FieldError {
                pointer: "/status".into(),
                detail: "must be pending, active, superseded, cancelled or expired".into(),
            }])
        })?),
    };
    let limit = parse_limit(params.limit.map(|n| n.to_string()).as_deref())?;
    let authority = who.is_authority();
    let filter = AlertFilter {
        identifier: params.identifier,
        sender: params.sender,
        status,
        cap_status: (!authority).then(|| "Actual".to_string()),
        unexpired_at: None,
        before_id: params.cursor,
        limit: limit + 1,
    };
    let mut recs = state.store.alerts_page(&filter).await?;
    let more = recs.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    recs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more.then(|| recs.last().map(|r| r.id.clone())).flatten();
    let items = recs
        .iter()
        .filter(|r| {
            authority
                || (r.status != AlertStatus::Pending
                    && serde_json::from_str::<Alert>(&r.cap_json)
                        .is_ok_and(|a| a.scope == Some(Scope::Public)))
        })
        .map(view)
        .collect();
    Ok(AlertPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circles_become_closed_rings_around_the_centre() {
        let ring = circle_ring(51.5, -0.1, 10_000.0);
        assert_eq!(ring.len(), CIRCLE_VERTICES + 1);
        assert_eq!(ring.first(), ring.last());
        let centre = Position::new(51.5, -0.1).unwrap_or_else(|e| panic!("{e}"));
        for p in &ring {
            let at = Position::new(p[1], p[0]).unwrap_or_else(|e| panic!("{e}"));
            let d = centre.distance_m(at);
            assert!((10_000.0..11_000.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn diagnostics_become_pointers_with_line_and_column() {
        let mut d = Diagnostic::new("/alert/info[0]/area[0]/polygon[0]", "not closed");
        d.line = Some(12);
        d.column = Some(7);
        let p = cap_problem(vec![d]);
        assert_eq!(p.errors[0].pointer, "/info/0/area/0/polygon/0");
        assert_eq!(p.errors[0].detail, "12:7: not closed");
        assert_eq!(p.detail.as_deref(), Some("line 12, column 7: not closed"));
    }
}
