//! TURN servers announced to WebRTC clients, with short-lived credentials in the coturn
//! REST-API scheme (`use-auth-secret` / `static-auth-secret`): the username is
//! `<expiry unix time>:<participant>` and the credential is
//! `base64(HMAC-SHA1(shared secret, username))`. coturn recomputes the credential from the
//! username and refuses it after the expiry; nexus never stores one.
//!
//! They reach clients in the `/rtc` `joined` message (`ice_servers`, the shape of
//! `RTCIceServer`) and as WHIP/WHEP `Link: <turn:…>; rel="ice-server"; username=…;
//! credential=…` headers (RFC 9725 §4.6). The participant part is the SFU's opaque id, never a
//! user id, so TURN logs carry nothing personal.

use crate::config::TurnConfig;
use axum::http::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a minted credential stays valid: long enough for a consultation or a class and
/// its TURN allocation refreshes, short enough that a leaked one soon stops working.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(4 * 3600);

/// The configured TURN servers and the coturn shared secret.
#[derive(Clone)]
pub struct Turn {
    urls: Vec<String>,
    secret: String,
    ttl: Duration,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// One entry of `ice_servers`, as the browser's `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// `<expiry>:<participant>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
}

impl Turn {
    /// TURN when both `urls` and `secret` are set; `None` otherwise (host candidates only).
    pub fn from_config(config: &TurnConfig) -> Option<Turn> {
        let secret = config.secret.as_ref()?.expose().to_string();
        if config.urls.is_empty() || secret.is_empty() {
            return None;
        }
        Some(Turn {
            urls: config.urls.clone(),
            secret,
            ttl: CREDENTIAL_TTL,
        })
    }

    /// Credentials for `participant`, valid until `now_unix + ttl`.
    pub fn mint_at(&self, participant: &str, now_unix: u64) -> IceServer {
        let username = format!("{}:{participant}", now_unix + self.ttl.as_secs());
        let credential = credential(&self.secret, &username);
        IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }
    }

    /// Credentials for `participant`, valid from now.
    pub fn mint(&self, participant: &str) -> IceServer {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.mint_at(participant, now)
    }
}

/// The coturn REST-API credential of `username`.
pub fn credential(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()).as_ref())
}

/// `Link` header values for a WHIP/WHEP response (RFC 9725 §4.6), one per URL. Values that
/// cannot be a header (a URL with control characters) are left out.
pub fn link_headers(server: &IceServer) -> Vec<HeaderValue> {
    server
        .urls
        .iter()
        .filter_map(|url| {
            let v = format!(
                "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                server.username, server.credential
            );
            HeaderValue::from_str(&v).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?") =
        // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            credential("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn credentials_follow_the_coturn_rest_api() {
        let turn = Turn::from_config(&TurnConfig {
            urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
            secret: Some(Secret("north-star".into())),
        })
        .unwrap();
        let s = turn.mint_at("0100000000002a", 1_700_000_000);
        // Expires 4 h later; computed independently with Python's hmac module.
        assert_eq!(s.username, "1700014400:0100000000002a");
        assert_eq!(s.credential, "nn28bqzXJatVolmB8k1j+p2+PIs=");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["urls"][0], "turn:turn.example.org:3478?transport=udp");
        let links = link_headers(&s);
        assert_eq!(
            links[0].to_str().unwrap(),
            "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; \
             username=\"1700014400:0100000000002a\"; credential=\"nn28bqzXJatVolmB8k1j+p2+PIs=\"; \
             credential-type=\"password\""
        );
        assert!(!format!("{turn:?}").contains("north-star"));
    }

    #[test]
    fn no_turn_without_urls_and_secret() {
        assert!(Turn::from_config(&TurnConfig::default()).is_none());
        let only_urls = TurnConfig {
            urls: vec!["turn:a".into()],
            secret: None,
        };
        assert!(Turn::from_config(&only_urls).is_none());
    }
}
