//! Web Push: VAPID-signed (RFC 8292) requests to a push service (RFC 8030) carrying the
//! alert encrypted for the subscriber's user agent (RFC 8291, `aes128gcm` of RFC 8188).
//!
//! Crypto is ring's: ECDSA P-256 for the VAPID JWT, an ephemeral ECDH P-256 key per message,
//! HKDF-SHA-256 and AES-128-GCM. [`seal`] is the pure part (given the ECDH secret) and is
//! tested against the RFC 8291 construction; [`PushChannel`] owns the HTTP side.
//!
//! The endpoint comes from a subscriber, so it is untrusted: it goes through the same
//! [`OutboundPolicy`] as every other URL from outside ([`crate::outbound`]). At registration
//! ([`PushSubscription::check`]) and again at every send ([`check_endpoint`]) an IP-literal
//! host outside the policy is refused; host names are checked after DNS resolution by the
//! policy's resolver (a name with any refused address is refused), and redirects are not
//! followed.

use crate::channel::{BoxFuture, Channel, Outgoing};
use crate::error::{ConfigError, SendError};
use crate::outbound::OutboundPolicy;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use nexus_cap::{Alert, Severity, Urgency};
use reqwest::Url;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use ring::{aead, agreement, hkdf};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Record size announced in the `aes128gcm` header (one record carries the whole message).
const RECORD_SIZE: u32 = 4096;
/// Longest plaintext that fits one record (tag and delimiter take 17 bytes).
pub const MAX_PAYLOAD: usize = RECORD_SIZE as usize - 17;
/// Lifetime of a VAPID JWT (RFC 8292 allows at most 24 hours).
const JWT_LIFETIME_SECS: i64 = 12 * 3600;
/// TTL of a push for an alert without `expires`.
const DEFAULT_TTL_SECS: i64 = 24 * 3600;
/// Longest TTL asked of a push service (four weeks, what services keep at most).
const MAX_TTL_SECS: i64 = 28 * 24 * 3600;

/// A push subscription as browsers hand it out (`PushSubscription.toJSON()`): the endpoint
/// and the user agent's keys, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSubscription {
    /// The push resource URL.
    pub endpoint: String,
    /// `p256dh` (uncompressed P-256 point, 65 bytes) and `auth` (16 bytes).
    pub keys: PushKeys,
}

/// The user agent's keys of a [`PushSubscription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// The user agent's ECDH public key, base64url.
    pub p256dh: String,
    /// The authentication secret, base64url.
    pub auth: String,
}

impl PushSubscription {
    /// Checks the keys' encoding and sizes and the endpoint's form and address (see
    /// [`check_endpoint`]). Host names are checked again when sending, after resolution.
    pub fn check(&self, policy: &OutboundPolicy) -> Result<(), String> {
        self.decoded_keys()?;
        check_endpoint(&self.endpoint, policy).map(|_| ())
    }

    fn decoded_keys(&self) -> Result<([u8; 65], [u8; 16]), String> {
        let p = B64
            .decode(self.keys.p256dh.trim_end_matches('='))
            .map_err(|_| "keys.p256dh is not base64url".to_string())?;
        let p: [u8; 65] = p
            .try_into()
            .map_err(|_| "keys.p256dh must be a 65-byte uncompressed P-256 point".to_string())?;
        if p[0] != 4 {
            return Err("keys.p256dh must be an uncompressed P-256 point (0x04…)".into());
        }
        let a = B64
            .decode(self.keys.auth.trim_end_matches('='))
            .map_err(|_| "keys.auth is not base64url".to_string())?;
        let a: [u8; 16] = a
            .try_into()
            .map_err(|_| "keys.auth must be 16 bytes".to_string())?;
        Ok((p, a))
    }
}

/// The endpoint's URL when its form and host are acceptable to `policy`: `https://` (plain
/// `http://` only to an IP literal in a network the policy lets through, such as a push
/// service on a closed network or in tests), no credentials, no IP-literal host the policy
/// refuses, and no `localhost` name unless the policy lets loopback through.
pub fn check_endpoint(endpoint: &str, policy: &OutboundPolicy) -> Result<Url, String> {
    let url = Url::parse(endpoint).map_err(|e| format!("endpoint is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint must not carry credentials".into());
    }
    let host = url
        .host()
        .ok_or_else(|| "endpoint has no host".to_string())?;
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if (d == "localhost" || d.ends_with(".localhost"))
                && !policy.permits(IpAddr::from([127, 0, 0, 1]))
            {
                return Err(
                    "endpoint points at a private, loopback or otherwise non-public address".into(),
                );
            }
            None
        }
    };
    let allowed_network =
        literal.is_some_and(|ip| policy.allowed().iter().any(|n| n.contains(&ip)));
    match url.scheme() {
        "https" => {}
        "http" if allowed_network => {}
        _ => return Err("endpoint must be an https:// URL".into()),
    }
    policy.check_url(&url).map_err(|_| {
        "endpoint points at a private, loopback or otherwise non-public address".to_string()
    })?;
    Ok(url)
}

/// The server's VAPID key pair (ECDSA P-256).
pub struct VapidKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new random key.
    pub fn generate() -> Result<VapidKey, ConfigError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| ConfigError::Push("cannot generate a P-256 key".into()))?;
        VapidKey::from_pkcs8(doc.as_ref())
    }

    /// From a PKCS#8 document: PEM (`-----BEGIN PRIVATE KEY-----`) or base64url of the DER.
    pub fn parse(text: &str) -> Result<VapidKey, ConfigError> {
        let text = text.trim();
        let der = if text.starts_with("-----BEGIN") {
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .concat();
            base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .map_err(|_| ConfigError::Push("the PEM body is not base64".into()))?
        } else {
            B64.decode(text.trim_end_matches('='))
                .map_err(|_| ConfigError::Push("expected PEM or base64url PKCS#8".into()))?
        };
        VapidKey::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<VapidKey, ConfigError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| ConfigError::Push(format!("not a P-256 PKCS#8 private key: {e}")))?;
        Ok(VapidKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// The key as PEM PKCS#8 (what [`VapidKey::parse`] reads back).
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// The public key, base64url of the uncompressed point: the `applicationServerKey`
    /// browsers subscribe with, and the `k` of the `Authorization: vapid` header.
    pub fn public_key(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// A VAPID JWT (ES256) for the push service at `audience` (an origin), valid until
    /// `exp` (Unix seconds), naming the operator contact `subject`.
    pub fn jwt(&self, audience: &str, exp: i64, subject: &str) -> Result<String, SendError> {
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = B64
            .encode(serde_json::json!({"aud": audience, "exp": exp, "sub": subject}).to_string());
        let input = format!("{header}.{claims}");
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| SendError::Transient("cannot sign the VAPID token".into()))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }
}

/// `L` of HKDF-Expand, as ring wants it.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) -> Result<(), SendError> {
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| SendError::Permanent("HKDF expand failed".into()))
}

/// RFC 8291 §3.4 + RFC 8188: the `aes128gcm` body for `plaintext`, given the ECDH secret
/// between the sender's key `as_public` and the user agent's `ua_public`, the
/// subscription's `auth` secret and a random `salt`. One record: header (salt, record size,
/// key id = `as_public`), then the ciphertext of `plaintext ‖ 0x02` with its tag.
pub fn seal(
    plaintext: &[u8],
    ecdh_secret: &[u8],
    ua_public: &[u8; 65],
    as_public: &[u8; 65],
    auth: &[u8; 16],
    salt: &[u8; 16],
) -> Result<Vec<u8>, SendError> {
    if plaintext.len() > MAX_PAYLOAD {
        return Err(SendError::Permanent(format!(
            "push payload of {} bytes exceeds {MAX_PAYLOAD}",
            plaintext.len()
        )));
    }
    // IKM = HKDF(auth, ecdh_secret, "WebPush: info" ‖ 0 ‖ ua_public ‖ as_public, 32)
    let prk_key = hkdf::Salt::new(hkdf::HKDF_SHA256, auth).extract(ecdh_secret);
    let mut ikm = [0u8; 32];
    hkdf_expand(
        &prk_key,
        &[b"WebPush: info\0", ua_public, as_public],
        &mut ikm,
    )?;
    // CEK and NONCE from HKDF(salt, IKM, …) (RFC 8188 §2.2, §2.3).
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
    let mut cek = [0u8; 16];
    hkdf_expand(&prk, &[b"Content-Encoding: aes128gcm\0"], &mut cek)?;
    let mut nonce = [0u8; 12];
    hkdf_expand(&prk, &[b"Content-Encoding: nonce\0"], &mut nonce)?;
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek)
            .map_err(|_| SendError::Permanent("bad content-encryption key".into()))?,
    );
    let mut record = Vec::with_capacity(plaintext.len() + 17);
    record.extend_from_slice(plaintext);
    record.push(0x02); // last record, no padding
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(|_| SendError::Permanent("AES-GCM sealing failed".into()))?;
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// Encrypts `plaintext` for `subscription` with a fresh ephemeral key and salt.
pub fn encrypt(plaintext: &[u8], subscription: &PushSubscription) -> Result<Vec<u8>, SendError> {
    let (ua_public, auth) = subscription.decoded_keys().map_err(SendError::Permanent)?;
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&rng, &mut salt)
        .map_err(|_| SendError::Transient("no randomness for the salt".into()))?;
    let private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| SendError::Transient("cannot generate an ECDH key".into()))?;
    let as_public: [u8; 65] = private
        .compute_public_key()
        .map_err(|_| SendError::Transient("cannot compute the ECDH public key".into()))?
        .as_ref()
        .try_into()
        .map_err(|_| SendError::Permanent("unexpected ECDH public key size".into()))?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public);
    agreement::agree_ephemeral(private, &peer, |secret| {
        seal(plaintext, secret, &ua_public, &as_public, &auth, &salt)
    })
    .map_err(|_| SendError::Permanent("keys.p256dh is not a point on P-256".into()))?
}

/// The `Urgency` header (RFC 8030 §5.3) for an alert: `high` for Immediate urgency or
/// Extreme/Severe severity, `normal` for Expected or Moderate, `low` for Future or Minor,
/// else `very-low`.
pub fn urgency(alert: &Alert) -> &'static str {
    let mut level = 0;
    for i in &alert.info {
        let l = match (i.urgency, i.severity) {
            (Urgency::Immediate, _) | (_, Severity::Extreme | Severity::Severe) => 3,
            (Urgency::Expected, _) | (_, Severity::Moderate) => 2,
            (Urgency::Future, _) | (_, Severity::Minor) => 1,
            _ => 0,
        };
        level = level.max(l);
    }
    ["very-low", "low", "normal", "high"][level]
}

/// The `TTL` header (seconds the push service keeps the message): until the alert
/// expires (0 once it has), a day without `expires`, at most four weeks.
pub fn ttl(alert: &Alert, now_ms: i64) -> i64 {
    match alert.expires_at() {
        Some(e) => ((e.to_utc().timestamp_millis() - now_ms) / 1000).clamp(0, MAX_TTL_SECS),
        None => DEFAULT_TTL_SECS,
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What the user agent decrypts: JSON with the delivery's idempotency key (`key`), the
/// alert's ids and a summary of its first info. Long texts are cut (instruction first, then
/// the area and the headline) so that it always fits one record ([`MAX_PAYLOAD`] bytes).
pub fn payload(message: &Outgoing<'_>) -> Vec<u8> {
    // (headline, area, instruction) character budgets, tried in order until one fits.
    const BUDGETS: [(usize, usize, usize); 4] =
        [(300, 500, 1500), (200, 300, 400), (120, 120, 0), (60, 0, 0)];
    let mut out = Vec::new();
    for (headline, area, instruction) in BUDGETS {
        out = payload_within(message, headline, area, instruction);
        if out.len() <= MAX_PAYLOAD {
            break;
        }
    }
    out
}

fn payload_within(
    message: &Outgoing<'_>,
    headline: usize,
    area: usize,
    instruction: usize,
) -> Vec<u8> {
    let alert = message.alert;
    let info = alert.info.first();
    let areas = info
        .map(|i| {
            i.area
                .iter()
                .map(|a| a.area_desc.trim())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let short = |text: &str, max: usize| (max > 0).then(|| cut(text, max));
    serde_json::json!({
        "key": message.key,
        "alert_id": message.alert_id,
        "identifier": cut(&alert.identifier, 200),
        "sender": cut(&alert.sender, 200),
        "sent": alert.sent.to_string(),
        "msg_type": alert.msg_type.as_str(),
        "status": alert.status.as_str(),
        "event": info.map(|i| cut(&i.event, 100)),
        "headline": info.and_then(|i| i.headline.as_deref()).and_then(|h| short(h, headline)),
        "severity": info.map(|i| i.severity.as_str()),
        "urgency": info.map(|i| i.urgency.as_str()),
        "area": short(&areas, area),
        "instruction": info.and_then(|i| i.instruction.as_deref()).and_then(|t| short(t, instruction)),
        "expires": alert.expires_at().map(|e| e.to_string()),
    })
    .to_string()
    .into_bytes()
}

/// Settings of the [`PushChannel`].
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The VAPID key.
    pub vapid: Arc<VapidKey>,
    /// The operator contact in every JWT (`mailto:…` or `https://…`).
    pub subject: String,
    /// Where push requests may go (the outbound guard; see [`check_endpoint`]).
    pub policy: OutboundPolicy,
}

/// The Web Push channel: `POST endpoint` with `Content-Encoding: aes128gcm`, `TTL`,
/// `Urgency`, `Topic` and `Authorization: vapid t=JWT, k=KEY`. 2xx is delivered; 404 and
/// 410 mean the subscription is gone ([`SendError::Gone`]: the worker ends it); 429, 5xx,
/// timeouts and connection errors are retried; other statuses fail the delivery.
#[derive(Debug, Clone)]
pub struct PushChannel {
    client: reqwest::Client,
    settings: PushSettings,
}

impl PushChannel {
    /// A channel with a 10-second request timeout and no redirects.
    pub fn new(settings: PushSettings) -> Result<PushChannel, ConfigError> {
        if !(settings.subject.starts_with("mailto:") || settings.subject.starts_with("https://")) {
            return Err(ConfigError::Push(
                "the VAPID subject must be a mailto: or https: URI".into(),
            ));
        }
        let client = settings
            .policy
            .client_without_redirects(Duration::from_secs(10))
            .map_err(|e| ConfigError::Push(e.to_string()))?;
        Ok(PushChannel { client, settings })
    }
}

impl Channel for PushChannel {
    fn name(&self) -> &'static str {
        "push"
    }

    fn send<'a>(&'a self, m: Outgoing<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let sub: PushSubscription = serde_json::from_str(m.address)
                .map_err(|_| SendError::Permanent("stored push subscription unreadable".into()))?;
            let url = check_endpoint(&sub.endpoint, &self.settings.policy)
                .map_err(SendError::Permanent)?;
            let now = nexus_store::now_ms();
            let ttl = ttl(m.alert, now);
            if ttl == 0 {
                return Err(SendError::Permanent("alert expired".into()));
            }
            let body = encrypt(&payload(&m), &sub)?;
            let audience = url.origin().ascii_serialization();
            let jwt = self.settings.vapid.jwt(
                &audience,
                now / 1000 + JWT_LIFETIME_SECS,
                &self.settings.subject,
            )?;
            // Topic (RFC 8030 §5.4): a newer message of the same alert replaces an undelivered
            // older one; ≤ 32 base64url characters.
            let topic: String = m
                .alert_id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(32)
                .collect();
            let resp = self
                .client
                .post(url)
                .header("TTL", ttl.to_string())
                .header("Urgency", urgency(m.alert))
                .header("Topic", topic)
                .header("Content-Encoding", "aes128gcm")
                .header("Content-Type", "application/octet-stream")
                .header(
                    "Authorization",
                    format!("vapid t={jwt}, k={}", self.settings.vapid.public_key()),
                )
                .body(body)
                .send()
                .await
                // The endpoint is the subscriber's capability: keep it out of errors and logs.
                .map_err(|e| {
                    SendError::Transient(format!("push service unreachable: {}", e.without_url()))
                })?;
            let status = resp.status();
            match status.as_u16() {
                200..=299 => Ok(()),
                404 | 410 => Err(SendError::Gone(format!("push service answered {status}"))),
                429 | 500..=599 => Err(SendError::Transient(format!(
                    "push service answered {status}"
                ))),
                _ => Err(SendError::Permanent(format!(
                    "push service answered {status}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(endpoint: &str) -> PushSubscription {
        PushSubscription {
            endpoint: endpoint.into(),
            keys: PushKeys {
                p256dh: B64.encode([4u8; 65]),
                auth: B64.encode([1u8; 16]),
            },
        }
    }

    #[test]
    fn private_and_loopback_endpoints_are_refused_unless_allowed() {
        let strict = OutboundPolicy::default();
        for bad in [
            "https://127.0.0.1/push",
            "https://10.1.2.3/push",
            "https://192.168.0.9/push",
            "https://169.254.169.254/latest",
            "https://[::1]/push",
            "https://[fd00::1]/push",
            "https://[::ffff:10.0.0.1]/push",
            "https://[64:ff9b::a00:1]/push",
            "https://localhost/push",
            "https://100.64.0.1/push",
            "https://user:pw@push.example.com/x",
            "http://push.example.com/x",
            "ftp://push.example.com/x",
        ] {
            assert!(subscription(bad).check(&strict).is_err(), "{bad}");
        }
        assert!(
            subscription("https://push.example.com/x")
                .check(&strict)
                .is_ok()
        );
        assert!(subscription("https://8.8.8.8/x").check(&strict).is_ok());

        let loopback = OutboundPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(
            subscription("http://127.0.0.1:9/x")
                .check(&loopback)
                .is_ok()
        );
        assert!(subscription("https://localhost/x").check(&loopback).is_ok());
        assert!(
            subscription("http://push.example.com/x")
                .check(&loopback)
                .is_err(),
            "plain http only to an allowed network"
        );
        assert!(
            subscription("https://10.1.2.3/push")
                .check(&loopback)
                .is_err()
        );
    }

    #[test]
    fn keys_must_have_their_sizes() {
        let mut s = subscription("https://push.example.com/x");
        s.keys.auth = B64.encode([1u8; 15]);
        assert!(
            s.check(&OutboundPolicy::default())
                .unwrap_err()
                .contains("auth")
        );
        let mut s = subscription("https://push.example.com/x");
        s.keys.p256dh = "not base64!".into();
        assert!(
            s.check(&OutboundPolicy::default())
                .unwrap_err()
                .contains("p256dh")
        );
    }

    /// The user agent's side of RFC 8291, written from the RFC: what `seal` produced
    /// decrypts with a CEK and nonce derived from the same inputs.
    #[test]
    fn sealed_records_open_with_the_rfc_8291_derivation() {
        let rng = SystemRandom::new();
        let ua = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).unwrap();
        let ua_public: [u8; 65] = ua
            .compute_public_key()
            .unwrap()
            .as_ref()
            .try_into()
            .unwrap();
        let sub = PushSubscription {
            endpoint: "https://push.example.com/x".into(),
            keys: PushKeys {
                p256dh: B64.encode(ua_public),
                auth: B64.encode([7u8; 16]),
            },
        };
        let body = encrypt(b"When I grow up, I want to be a watermelon", &sub).unwrap();
        let salt: [u8; 16] = body[..16].try_into().unwrap();
        assert_eq!(u32::from_be_bytes(body[16..20].try_into().unwrap()), 4096);
        assert_eq!(body[20], 65);
        let as_public: [u8; 65] = body[21..86].try_into().unwrap();
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, as_public);
        let plain = agreement::agree_ephemeral(ua, &peer, |secret| {
            let prk_key = hkdf::Salt::new(hkdf::HKDF_SHA256, &[7u8; 16]).extract(secret);
            let mut ikm = [0u8; 32];
            hkdf_expand(
                &prk_key,
                &[b"WebPush: info\0", &ua_public, &as_public],
                &mut ikm,
            )
            .unwrap();
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&ikm);
            let mut cek = [0u8; 16];
            hkdf_expand(&prk, &[b"Content-Encoding: aes128gcm\0"], &mut cek).unwrap();
            let mut nonce = [0u8; 12];
            hkdf_expand(&prk, &[b"Content-Encoding: nonce\0"], &mut nonce).unwrap();
            let key =
                aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
            let mut record = body[86..].to_vec();
            let plain = key
                .open_in_place(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::empty(),
                    &mut record,
                )
                .unwrap();
            plain.to_vec()
        })
        .unwrap();
        assert_eq!(plain.last(), Some(&0x02));
        assert_eq!(
            &plain[..plain.len() - 1],
            b"When I grow up, I want to be a watermelon"
        );
    }

    fn flood(urgency: &str, severity: &str, instruction: &str) -> Alert {
        serde_json::from_value(serde_json::json!({
            "identifier": "F1", "sender": "a@b", "sent": "2024-06-12T14:57:00-07:00",
            "status": "Actual", "msg_type": "Alert", "scope": "Public",
            "info": [{"category": ["Met"], "event": "Flood", "urgency": urgency,
                      "severity": severity, "certainty": "Observed",
                      "expires": "2024-06-13T14:57:00-07:00",
                      "headline": "Flood warning", "instruction": instruction,
                      "area": [{"area_desc": "Riverside"}]}]}))
        .unwrap()
    }

    #[test]
    fn urgency_follows_cap_urgency_and_severity_and_ttl_the_expiry() {
        assert_eq!(urgency(&flood("Immediate", "Minor", "")), "high");
        assert_eq!(urgency(&flood("Future", "Extreme", "")), "high");
        assert_eq!(urgency(&flood("Expected", "Minor", "")), "normal");
        assert_eq!(urgency(&flood("Future", "Minor", "")), "low");
        assert_eq!(urgency(&flood("Past", "Unknown", "")), "very-low");
        let a = flood("Immediate", "Severe", "");
        let expires = a.expires_at().unwrap().to_utc().timestamp_millis();
        assert_eq!(ttl(&a, expires - 3_600_000), 3600);
        assert_eq!(ttl(&a, expires + 1), 0, "nothing to keep once expired");
        assert_eq!(ttl(&a, expires - 100 * 86_400_000), MAX_TTL_SECS);
    }

    #[test]
    fn the_payload_always_fits_one_record() {
        let long = "Évacuez immédiatement vers les hauteurs. ".repeat(200);
        let alert = flood("Immediate", "Severe", &long);
        let m = Outgoing {
            key: "k-1",
            address: "",
            alert: &alert,
            alert_id: "a-1",
            recipient_id: "r-1",
            unsubscribe_url: None,
        };
        let p = payload(&m);
        assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["key"], "k-1");
        assert_eq!(v["headline"], "Flood warning");
        assert!(v["instruction"].as_str().unwrap().ends_with('…'));
        let short = flood("Immediate", "Severe", "Go up.");
        let v: serde_json::Value =
            serde_json::from_slice(&payload(&Outgoing { alert: &short, ..m })).unwrap();
        assert_eq!(v["instruction"], "Go up.");
    }

    #[test]
    fn vapid_tokens_verify_with_the_public_key() {
        let key = VapidKey::generate().unwrap();
        let again = VapidKey::parse(&key.to_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let jwt = key
            .jwt(
                "https://push.example.com",
                2_000_000_000,
                "mailto:ops@example.org",
            )
            .unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let public = B64.decode(key.public_key()).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(input.as_bytes(), &B64.decode(sig).unwrap())
            .unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(input.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.com");
        assert_eq!(claims["exp"], 2_000_000_000);
    }
}
