//! JWT claims and HS256 signing with key rotation.

use crate::error::AuthError;
use crate::role::{Grant, Role, RoomKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Shortest secret accepted for HS256 signing, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// Seconds of clock skew tolerated when checking `exp`.
const LEEWAY_SECS: u64 = 5;

/// The claims of every Nexus token.
///
/// Absent optional claims are omitted from the encoded token. A token is only accepted where its
/// claims allow: the product API looks at `roles`, the gateway at `channels`, the SFU at `room`,
/// `room_kind` and `grants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user (or participant) id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
    /// Platform roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// Gateway channels the connection is subscribed to server-side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// SFU room name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// SFU room kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_kind: Option<RoomKind>,
    /// What the holder may do in `room`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<Grant>>,
    /// Display name shown to other participants (room and gateway tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Claims {
    /// Claims for `sub`, issued now and valid for `ttl_secs` seconds, with a fresh `jti`.
    pub fn new(sub: impl Into<String>, ttl_secs: u64) -> Self {
        let now = unix_now();
        Claims {
            sub: sub.into(),
            exp: now.saturating_add(ttl_secs),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            roles: Vec::new(),
            channels: None,
            room: None,
            room_kind: None,
            grants: None,
            name: None,
        }
    }

    /// Sets the platform roles.
    pub fn with_roles(mut self, roles: Vec<Role>) -> Self {
        self.roles = roles;
        self
    }

    /// Sets the gateway channels.
    pub fn with_channels(mut self, channels: Vec<String>) -> Self {
        self.channels = Some(channels);
        self
    }

    /// Makes this a room token for `room`.
    pub fn with_room(
        mut self,
        room: impl Into<String>,
        kind: RoomKind,
        grants: Vec<Grant>,
    ) -> Self {
        self.room = Some(room.into());
        self.room_kind = Some(kind);
        self.grants = Some(grants);
        self
    }

    /// Whether the claims carry `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the claims grant `grant` in `room`.
    pub fn has_grant(&self, room: &str, grant: Grant) -> bool {
        self.room.as_deref() == Some(room)
            && self.grants.as_ref().is_some_and(|g| g.contains(&grant))
    }

    /// Seconds left before expiry (0 when expired).
    pub fn ttl_left(&self) -> u64 {
        self.exp.saturating_sub(unix_now())
    }
}

/// The current signing key and the previous keys that still verify.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: Vec<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("verifying_keys", &self.decoding.len())
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the current secret and previous secrets (oldest last).
    ///
    /// Use [`TokenKeys::checked`] on configuration input; this constructor accepts any length so
    /// that tests can use short literals.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Self {
        let mut decoding = vec![DecodingKey::from_secret(current)];
        decoding.extend(previous.iter().map(|p| DecodingKey::from_secret(p)));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(current),
            decoding,
            validation,
        }
    }

    /// Like [`TokenKeys::new`], refusing secrets shorter than [`MIN_SECRET_LEN`].
    pub fn checked(current: &[u8], previous: &[&[u8]]) -> Result<Self, AuthError> {
        for s in std::iter::once(&current).chain(previous.iter()) {
            if s.len() < MIN_SECRET_LEN {
                return Err(AuthError::WeakSecret {
                    min: MIN_SECRET_LEN,
                    got: s.len(),
                });
            }
        }
        Ok(Self::new(current, previous))
    }

    /// Signs `claims` with the current key.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Crypto(e.to_string()))
    }

    /// Verifies the signature (current key first, then previous ones) and the expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut last = AuthError::InvalidToken("no verifying key".into());
        for key in &self.decoding {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature => {
                        last = AuthError::InvalidToken("bad signature".into());
                    }
                    ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                    _ => return Err(AuthError::InvalidToken(describe(e.kind()))),
                },
            }
        }
        Err(last)
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidAlgorithm => "algorithm not allowed".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        ErrorKind::InvalidToken => "malformed token".into(),
        ErrorKind::Json(_) => "malformed claims".into(),
        other => format!("{other:?}"),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &[u8] = b"0123456789abcdef0123456789abcdef-one";
    const K2: &[u8] = b"0123456789abcdef0123456789abcdef-two";

    #[test]
    fn mint_then_verify_keeps_every_claim() {
        let keys = TokenKeys::new(K1, &[]);
        let claims = Claims::new("u1", 60)
            .with_roles(vec![Role::Admin, Role::Teacher])
            .with_channels(vec!["incidents".into()]);
        let back = keys.verify(&keys.mint(&claims).unwrap()).unwrap();
        assert_eq!(back, claims);
    }

    #[test]
    fn previous_secret_still_verifies_but_unknown_does_not() {
        let old = TokenKeys::new(K1, &[]);
        let token = old.mint(&Claims::new("u1", 60)).unwrap();
        let rotated = TokenKeys::new(K2, &[K1]);
        assert_eq!(rotated.verify(&token).unwrap().sub, "u1");
        let other = TokenKeys::new(K2, &[]);
        assert!(matches!(
            other.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn expired_token_is_refused_as_expired() {
        let keys = TokenKeys::new(K1, &[]);
        let mut claims = Claims::new("u1", 0);
        claims.exp = unix_now() - 3600;
        let token = keys.mint(&claims).unwrap();
        assert!(matches!(keys.verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn tampered_and_alg_none_tokens_are_refused() {
        let keys = TokenKeys::new(K1, &[]);
        let token = keys.mint(&Claims::new("u1", 60)).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"sub":"admin","exp":9999999999,"iat":1,"jti":"x","roles":["admin"]}"#,
        );
        parts[1] = &forged_claims;
        assert!(keys.verify(&parts.join(".")).is_err());
        let none_header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT"}"#,
        );
        let unsigned = format!("{none_header}.{forged_claims}.");
        assert!(keys.verify(&unsigned).is_err());
        assert!(keys.verify("not a token").is_err());
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(matches!(
            TokenKeys::checked(b"short", &[]),
            Err(AuthError::WeakSecret { .. })
        ));
        assert!(TokenKeys::checked(K1, &[b"short"]).is_err());
        assert!(TokenKeys::checked(K1, &[K2]).is_ok());
    }
}
