//! `/api/v1/auth/*`: registration, login, token refresh and logout, profile, e-mail
//! verification and password reset; `/api/v1/realtime/token`.

use crate::events::event;
use crate::extract::ApiJson;
use crate::mail::Mail;
use crate::problem::{Problem, ProblemKind};
use crate::rbac::Principal;
use crate::state::ApiState;
use crate::users::UserView;
use crate::validate::Checks;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use nexus_auth::{
    Claims, Role, TokenKeys, hash_password, opaque_secret, sha256_hex, verify_password,
};
use nexus_store::{RefreshRecord, RotateOutcome, UserRecord, now_ms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(profile))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(verify_email))
        .routes(routes!(realtime_token))
}

/// Registration request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// E-mail address (the login name).
    pub email: String,
    /// Password, 8 to 1024 characters.
    pub password: String,
    /// Display name.
    pub name: String,
    /// `patient` (default), `student` or `responder`; other roles are granted by admins.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
}

/// Login request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// E-mail address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A refresh token presented for rotation or logout.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The opaque refresh token from login or the last refresh.
    pub refresh_token: String,
}

/// Issued credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// Short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque, single-use token for `/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
}

/// Request for a password-reset e-mail.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordRequest {
    /// The account's e-mail address.
    pub email: String,
}

/// Completes a password reset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The token from the reset e-mail.
    pub token: String,
    /// The new password.
    pub password: String,
}

/// Confirms an e-mail address.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    /// The token from the verification e-mail.
    pub token: String,
}

/// A gateway connection token.
#[derive(Debug, Serialize, ToSchema)]
pub struct RealtimeToken {
    /// JWT for the `connect` command of `/connection/websocket`.
    pub token: String,
}

/// Runs CPU-heavy password hashing off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Problem::internal(&e))
}

/// A hash to verify against when the account does not exist, so that a login for an unknown
/// e-mail costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("nexus-dummy-password").unwrap_or_default())
}

async fn send_one_time_mail(
    state: &ApiState,
    user: &UserRecord,
    purpose: &'static str,
) -> Result<(), Problem> {
    let token = opaque_secret("nxe_");
    let expires = now_ms() + (state.auth.one_time_ttl_secs as i64) * 1000;
    state
        .store
        .insert_one_time(&sha256_hex(&token), &user.id, purpose, expires)
        .await?;
    let (subject, action) = match purpose {
        "verify_email" => (
            "Confirm your Nexus e-mail address",
            "POST /api/v1/auth/verify-email",
        ),
        _ => (
            "Reset your Nexus password",
            "POST /api/v1/auth/reset-password",
        ),
    };
    let mail = Mail {
        to: user.email.clone(),
        subject: subject.to_string(),
        body: format!(
            "Hello,\n\nuse this code with {action} within {} hours:\n\n{token}\n\nIf you did not ask for this, ignore this message.\n",
            state.auth.one_time_ttl_secs / 3600
        ),
        purpose,
    };
    if let Err(e) = state.mailer.send(mail).await {
        // The account change stands; the user can ask again.
        tracing::warn!(user_id = %user.id, purpose, error = %e, "mail not sent");
    }
    Ok(())
}

pub(crate) async fn issue_tokens(
    state: &ApiState,
    user: &UserRecord,
) -> Result<TokenPair, Problem> {
    let roles = parse_roles(&user.roles);
    let claims = Claims::new(user.id.clone(), state.auth.access_ttl_secs).with_roles(roles);
    let access_token = state
        .keys
        .mint(&claims)
        .map_err(|e| Problem::internal(&e))?;
    let refresh_token = opaque_secret("nxr_");
    let now = now_ms();
    state
        .store
        .insert_refresh(&RefreshRecord {
            token_hash: sha256_hex(&refresh_token),
            family_id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            expires_at: now + (state.auth.refresh_ttl_secs as i64) * 1000,
            created_at: now,
        })
        .await?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: state.auth.access_ttl_secs,
    })
}

/// Role names from the store, ignoring any this build does not know.
pub(crate) fn parse_roles(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Register a new account.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserView), (status = 400, body = Problem), (status = 409, body = Problem)))]
async fn register(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, Problem> {
    let role = req.role.unwrap_or(Role::Patient);
    Checks::new()
        .email("/email", &req.email)
        .password("/password", &req.password)
        .name("/name", &req.name)
        .check(
            Role::SELF_SERVICE.contains(&role),
            "/role",
            "must be patient, student or responder; other roles are granted by an admin",
        )
        .finish()?;
    if state.store.user_by_email(&req.email).await?.is_some() {
        return Err(Problem::conflict(
            "an account with this e-mail already exists",
        ));
    }
    let password = req.password;
    let hash = blocking(move || hash_password(&password))
        .await?
        .map_err(|e| Problem::internal(&e))?;
    let id = uuid::Uuid::now_v7().to_string();
    let user = UserRecord::new(
        &id,
        req.email.trim(),
        req.name.trim(),
        hash,
        vec![role.to_string()],
        now_ms(),
    );
    let ev = event(
        "users",
        "user.registered",
        &id,
        serde_json::json!({"id": id, "roles": [role]}),
    );
    state.store.create_user(&user, &[ev]).await?;
    tracing::info!(user_id = %id, role = %role, "user registered");
    send_one_time_mail(&state, &user, "verify_email").await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// Log in with e-mail and password.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
async fn login(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenPair>, Problem> {
    let user = state.store.user_by_email(&req.email).await?;
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let password = req.password;
    let ok = blocking(move || verify_password(&password, &hash)).await?;
    let Some(user) = user.filter(|_| ok) else {
        return Err(Problem::new(
            ProblemKind::InvalidCredentials,
            "wrong e-mail or password",
        ));
    };
    tracing::info!(user_id = %user.id, "login");
    Ok(Json(issue_tokens(&state, &user).await?))
}

/// Exchange a refresh token for new credentials (the old one becomes invalid).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
async fn refresh(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, Problem> {
    let next_token = opaque_secret("nxr_");
    let now = now_ms();
    let next = RefreshRecord {
        token_hash: sha256_hex(&next_token),
        family_id: String::new(),
        user_id: String::new(),
        expires_at: now + (state.auth.refresh_ttl_secs as i64) * 1000,
        created_at: now,
    };
    match state
        .store
        .rotate_refresh(&sha256_hex(&req.refresh_token), &next, now)
        .await?
    {
        RotateOutcome::Rotated { user_id } => {
            let Some(user) = state.store.user_by_id(&user_id).await? else {
                return Err(Problem::unauthorized("account no longer exists"));
            };
            let claims = Claims::new(user.id.clone(), state.auth.access_ttl_secs)
                .with_roles(parse_roles(&user.roles));
            Ok(Json(TokenPair {
                access_token: state
                    .keys
                    .mint(&claims)
                    .map_err(|e| Problem::internal(&e))?,
                refresh_token: next_token,
                token_type: "Bearer",
                expires_in: state.auth.access_ttl_secs,
            }))
        }
        RotateOutcome::Reused { user_id } => {
            tracing::warn!(user_id = %user_id, "refresh token reused; session family revoked");
            Err(Problem::unauthorized(
                "refresh token was already used; sign in again",
            ))
        }
        RotateOutcome::Expired => Err(Problem::unauthorized("refresh token expired")),
        RotateOutcome::NotFound => Err(Problem::unauthorized("unknown refresh token")),
    }
}

/// Log out: revoke the refresh token and every token rotated from the same login.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204), (status = 400, body = Problem)))]
async fn logout(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, Problem> {
    if let Some(user_id) = state
        .store
        .revoke_refresh_family(&sha256_hex(&req.refresh_token), now_ms())
        .await?
    {
        tracing::info!(user_id = %user_id, "logout");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own profile.
#[utoipa::path(get, path = "/auth/profile", tag = "auth",
    responses((status = 200, body = UserView), (status = 401, body = Problem)), security(("bearer" = [])))]
async fn profile(State(state): State<ApiState>, who: Principal) -> Result<Json<UserView>, Problem> {
    let Some(id) = who.user_id() else {
        return Err(Problem::forbidden("API keys have no profile"));
    };
    match state.store.user_by_id(id).await? {
        Some(user) => Ok(Json(UserView::from(&user))),
        None => Err(Problem::unauthorized("account no longer exists")),
    }
}

/// Ask for a password-reset e-mail. Always 202, whether or not the account exists.
#[utoipa::path(post, path = "/auth/forgot-password", tag = "auth", request_body = ForgotPasswordRequest,
    responses((status = 202), (status = 400, body = Problem)))]
async fn forgot_password(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<ForgotPasswordRequest>,
) -> Result<StatusCode, Problem> {
    Checks::new().email("/email", &req.email).finish()?;
    if let Some(user) = state.store.user_by_email(&req.email).await? {
        send_one_time_mail(&state, &user, "reset_password").await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// Set a new password with the token from the reset e-mail; signs out every session.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetPasswordRequest,
    responses((status = 204), (status = 400, body = Problem)))]
async fn reset_password(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> Result<StatusCode, Problem> {
    Checks::new()
        .password("/password", &req.password)
        .finish()?;
    let now = now_ms();
    let Some(user_id) = state
        .store
        .consume_one_time(&sha256_hex(&req.token), "reset_password", now)
        .await?
    else {
        return Err(Problem::validation(vec![crate::problem::FieldError {
            pointer: "/token".into(),
            detail: "invalid, used or expired reset token".into(),
        }]));
    };
    let password = req.password;
    let hash = blocking(move || hash_password(&password))
        .await?
        .map_err(|e| Problem::internal(&e))?;
    state.store.set_password_hash(&user_id, &hash).await?;
    state.store.revoke_user_refresh(&user_id, now).await?;
    tracing::info!(user_id = %user_id, "password reset");
    Ok(StatusCode::NO_CONTENT)
}

/// Confirm the e-mail address with the token from the verification e-mail.
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = VerifyEmailRequest,
    responses((status = 204), (status = 400, body = Problem)))]
async fn verify_email(
    State(state): State<ApiState>,
    ApiJson(req): ApiJson<VerifyEmailRequest>,
) -> Result<StatusCode, Problem> {
    let Some(user_id) = state
        .store
        .consume_one_time(&sha256_hex(&req.token), "verify_email", now_ms())
        .await?
    else {
        return Err(Problem::validation(vec![crate::problem::FieldError {
            pointer: "/token".into(),
            detail: "invalid, used or expired verification token".into(),
        }]));
    };
    state.store.mark_email_verified(&user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Channels a user's roles let them receive on the gateway.
pub fn realtime_channels(user_id: &str, roles: &[Role]) -> Vec<String> {
    let mut channels = vec![format!("user#{user_id}"), "alerts".to_string()];
    if roles.iter().any(|r| {
        matches!(
            r,
            Role::Responder | Role::Coordinator | Role::AlertAuthority | Role::Admin
        )
    }) {
        channels.push("incidents".to_string());
    }
    channels
}

/// A connection token for the realtime gateway, with the channels the caller's roles allow.
#[utoipa::path(post, path = "/realtime/token", tag = "auth",
    responses((status = 200, body = RealtimeToken), (status = 401, body = Problem)), security(("bearer" = [])))]
async fn realtime_token(
    State(state): State<ApiState>,
    who: Principal,
) -> Result<Json<RealtimeToken>, Problem> {
    let Some(id) = who.user_id() else {
        return Err(Problem::forbidden("realtime tokens are for users"));
    };
    let token = mint_realtime(&state.keys, id, who.roles(), state.auth.realtime_ttl_secs)?;
    Ok(Json(RealtimeToken { token }))
}

fn mint_realtime(keys: &TokenKeys, id: &str, roles: &[Role], ttl: u64) -> Result<String, Problem> {
    let claims = Claims::new(id, ttl)
        .with_roles(roles.to_vec())
        .with_channels(realtime_channels(id, roles));
    keys.mint(&claims).map_err(|e| Problem::internal(&e))
}
