//! `/api/v1/users/*`: profiles, settings, roles, erasure and export; `/api/v1/admin/api-keys`.

use crate::auth::parse_roles;
use crate::events::event;
use crate::extract::ApiJson;
use crate::problem::Problem;
use crate::rbac::{Action, Principal};
use crate::state::ApiState;
use crate::time::rfc3339;
use crate::validate::Checks;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use nexus_auth::{Role, opaque_secret, sha256_hex};
use nexus_store::{ApiKeyRecord, UserPatch, UserRecord, now_ms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get_user, put_user, delete_user))
        .routes(routes!(post_settings))
        .routes(routes!(put_roles))
        .routes(routes!(export_user))
        .routes(routes!(create_api_key))
        .routes(routes!(revoke_api_key))
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// User id.
    pub id: String,
    /// E-mail address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Roles.
    #[schema(value_type = Vec<String>)]
    pub roles: Vec<Role>,
    /// Whether the e-mail address is confirmed.
    pub email_verified: bool,
    /// Phone number, if given.
    pub phone: Option<String>,
    /// Settings document.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            roles: parse_roles(&u.roles),
            email_verified: u.email_verified,
            phone: u.phone.clone(),
            settings: u.settings.clone(),
            created_at: rfc3339(u.created_at),
        }
    }
}

/// Profile changes; absent fields stay as they are, `phone: null` clears the phone.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New phone number in E.164 form (`+` and 8–15 digits), or null to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// New roles for a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    /// The complete new role list.
    #[schema(value_type = Vec<String>)]
    pub roles: Vec<Role>,
}

/// An API key request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    /// Human name of the caller (service) the key is for.
    pub name: String,
    /// `gateway` (publish to the realtime gateway) or `admin`.
    #[serde(default = "default_scope")]
    pub scope: String,
}

fn default_scope() -> String {
    "gateway".into()
}

/// A newly created API key; the secret is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyCreated {
    /// Key id (for revocation).
    pub id: String,
    /// The secret, for the `X-API-Key` header.
    pub key: String,
    /// Scope.
    pub scope: String,
}

/// Everything the platform holds about a user (GDPR portability).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserExport {
    /// Export time (RFC 3339).
    pub exported_at: String,
    /// The account.
    pub user: UserView,
    /// Audit entries about the user: `(time, actor, action)`.
    #[schema(value_type = Vec<Object>)]
    pub audit: Vec<serde_json::Value>,
}

async fn existing(state: &ApiState, id: &str) -> Result<UserRecord, Problem> {
    state
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| Problem::not_found("no such user"))
}

/// Read a user (the user themself or an admin).
#[utoipa::path(get, path = "/users/{id}", tag = "users", params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_user(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<UserView>, Problem> {
    who.authorize(Action::ReadUser, Some(&id))?;
    Ok(Json(UserView::from(&existing(&state, &id).await?)))
}

/// Change a user's name or phone (the user themself or an admin).
#[utoipa::path(put, path = "/users/{id}", tag = "users", params(("id" = String, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn put_user(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserView>, Problem> {
    who.authorize(Action::UpdateUser, Some(&id))?;
    let mut checks = Checks::new();
    if let Some(name) = &req.name {
        checks.name("/name", name);
    }
    if let Some(Some(phone)) = &req.phone {
        let digits = phone.strip_prefix('+').unwrap_or("");
        checks.check(
            (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
            "/phone",
            "must be an E.164 number such as +15550100",
        );
    }
    checks.finish()?;
    let patch = UserPatch {
        name: req.name.map(|n| n.trim().to_string()),
        phone: req.phone,
    };
    let ev = event("users", "user.updated", &id, serde_json::json!({"id": id}));
    match state.store.update_user(&id, &patch, &[ev]).await? {
        Some(user) => Ok(Json(UserView::from(&user))),
        None => Err(Problem::not_found("no such user")),
    }
}

/// Replace a user's settings (notification preferences, language, …).
#[utoipa::path(post, path = "/users/{id}/settings", tag = "users", params(("id" = String, Path, description = "User id")),
    request_body(content = Object, description = "Settings document (a JSON object)"),
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn post_settings(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(settings): ApiJson<serde_json::Value>,
) -> Result<Json<serde_json::Value>, Problem> {
    who.authorize(Action::UpdateUser, Some(&id))?;
    Checks::new()
        .check(settings.is_object(), "", "settings must be a JSON object")
        .check(
            settings.to_string().len() <= 16 * 1024,
            "",
            "settings must be at most 16 KiB",
        )
        .finish()?;
    let ev = event(
        "users",
        "user.updated",
        &id,
        serde_json::json!({"id": id, "fields": ["settings"]}),
    );
    if !state.store.set_settings(&id, &settings, &[ev]).await? {
        return Err(Problem::not_found("no such user"));
    }
    Ok(Json(settings))
}

/// Replace a user's roles (admins only). The user's sessions end so new tokens carry the roles.
#[utoipa::path(put, path = "/users/{id}/roles", tag = "users", params(("id" = String, Path, description = "User id")),
    request_body = RolesRequest,
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn put_roles(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RolesRequest>,
) -> Result<Json<UserView>, Problem> {
    who.authorize(Action::ManageRoles, None)?;
    let mut roles = req.roles;
    roles.sort_unstable();
    roles.dedup();
    let names: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let ev = event(
        "users",
        "user.updated",
        &id,
        serde_json::json!({"id": id, "roles": roles}),
    );
    if !state.store.set_roles(&id, &names, &[ev]).await? {
        return Err(Problem::not_found("no such user"));
    }
    state.store.revoke_user_refresh(&id, now_ms()).await?;
    state
        .store
        .audit(
            who.user_id(),
            "user.roles",
            Some(&id),
            &serde_json::json!({"roles": names}),
        )
        .await?;
    Ok(Json(UserView::from(&existing(&state, &id).await?)))
}

/// Erase a user's personal data (GDPR art. 17). Emits `user.deleted`.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn delete_user(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.authorize(Action::EraseUser, Some(&id))?;
    let ev = event("users", "user.deleted", &id, serde_json::json!({"id": id}));
    if !state.store.erase_user(&id, &[ev]).await? {
        return Err(Problem::not_found("no such user"));
    }
    state
        .store
        .audit(
            who.user_id(),
            "user.erased",
            Some(&id),
            &serde_json::json!({}),
        )
        .await?;
    tracing::info!(user_id = %id, "user erased");
    Ok(StatusCode::NO_CONTENT)
}

/// Export a user's data (GDPR art. 20).
#[utoipa::path(get, path = "/users/{id}/export", tag = "users", params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserExport), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn export_user(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<UserExport>, Problem> {
    who.authorize(Action::ExportUser, Some(&id))?;
    let user = existing(&state, &id).await?;
    let audit = state
        .store
        .audit_for(&id)
        .await?
        .into_iter()
        .map(|(at, actor, action)| serde_json::json!({"at": rfc3339(at), "actor": actor, "action": action}))
        .collect();
    state
        .store
        .audit(
            who.user_id(),
            "user.exported",
            Some(&id),
            &serde_json::json!({}),
        )
        .await?;
    Ok(Json(UserExport {
        exported_at: rfc3339(now_ms()),
        user: UserView::from(&user),
        audit,
    }))
}

/// Create an API key for a server-to-server caller (admins only).
#[utoipa::path(post, path = "/admin/api-keys", tag = "admin", request_body = ApiKeyRequest,
    responses((status = 201, body = ApiKeyCreated), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
async fn create_api_key(
    State(state): State<ApiState>,
    who: Principal,
    ApiJson(req): ApiJson<ApiKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), Problem> {
    who.authorize(Action::ManageApiKeys, None)?;
    Checks::new()
        .name("/name", &req.name)
        .check(
            matches!(req.scope.as_str(), "gateway" | "admin"),
            "/scope",
            "must be gateway or admin",
        )
        .finish()?;
    let created = create_key(&state.store, &req.name, &req.scope).await?;
    state
        .store
        .audit(
            who.user_id(),
            "apikey.created",
            Some(&created.id),
            &serde_json::json!({"scope": req.scope}),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates and stores an API key, returning its secret once.
pub async fn create_key(
    store: &nexus_store::Store,
    name: &str,
    scope: &str,
) -> Result<ApiKeyCreated, Problem> {
    let key = opaque_secret("nxk_");
    let rec = ApiKeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        scope: scope.to_string(),
        created_at: now_ms(),
    };
    store.insert_api_key(&rec, &sha256_hex(&key)).await?;
    Ok(ApiKeyCreated {
        id: rec.id,
        key,
        scope: rec.scope,
    })
}

/// Revoke an API key (admins only).
#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "admin", params(("id" = String, Path, description = "Key id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn revoke_api_key(
    State(state): State<ApiState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.authorize(Action::ManageApiKeys, None)?;
    if !state.store.revoke_api_key(&id, now_ms()).await? {
        return Err(Problem::not_found("no such API key"));
    }
    state
        .store
        .audit(
            who.user_id(),
            "apikey.revoked",
            Some(&id),
            &serde_json::json!({}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
