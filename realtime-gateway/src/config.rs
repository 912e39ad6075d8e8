//! [`GatewayConfig`]: the gateway's section of the Nexus configuration tree.

use crate::error::GatewayError;
use nexus_auth::Role;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

/// The static server-API key (`NEXUS_GATEWAY_API_KEY`); prints redacted.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// Compares with `candidate` in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        if a.is_empty() || a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Gateway settings. Every field has a default; unknown keys are rejected.
///
/// Durations are whole seconds. The default namespaces are described in
/// [`NamespaceConfig::defaults`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Static key accepted by the server HTTP API (`X-API-Key` or `Authorization: apikey …`).
    /// With none set, only keys accepted by an [`crate::ApiKeyCheck`] pass.
    pub api_key: Option<ApiKey>,
    /// Name of this node, reported by the `info` API.
    pub node_name: String,
    /// Interval of server pings (`{}`) to clients.
    pub ping_interval_secs: u64,
    /// Time a client has to answer a ping before it is disconnected (3012 no pong).
    pub pong_timeout_secs: u64,
    /// Time a new connection has to send `connect` (3502 stale after it).
    pub connect_timeout_secs: u64,
    /// Grace after a token's `exp` before the connection is closed with 3005.
    pub expired_close_delay_secs: u64,
    /// Outgoing queue bound per connection, in messages.
    pub client_queue_max_messages: usize,
    /// Outgoing queue bound per connection, in bytes; overflow disconnects with 3008 slow.
    pub client_queue_max_bytes: usize,
    /// Largest WebSocket frame accepted from a client.
    pub max_frame_bytes: usize,
    /// Largest frame written to a client when coalescing queued messages.
    pub max_write_batch_bytes: usize,
    /// Channels one connection may be subscribed to.
    pub max_channels_per_connection: usize,
    /// Concurrent WebSocket connections this node accepts (503 past it).
    pub max_connections: usize,
    /// Time allowed for the close frame once a connection is being closed.
    pub close_timeout_secs: u64,
    /// Presence entries expire unless refreshed within this time (Redis engine).
    pub presence_ttl_secs: u64,
    /// Most publications returned by one history or recovery request.
    pub max_history_limit: usize,
    /// Channel namespaces. A channel's namespace is its name up to the first `:` or `#`
    /// (`class:42` → `class`, `user#7` → `user`, `incidents` → `incidents`).
    pub namespaces: Vec<NamespaceConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            api_key: None,
            node_name: "nexus".into(),
            ping_interval_secs: 25,
            pong_timeout_secs: 8,
            connect_timeout_secs: 10,
            expired_close_delay_secs: 10,
            client_queue_max_messages: 4096,
            client_queue_max_bytes: 1 << 20,
            max_frame_bytes: 64 << 10,
            max_write_batch_bytes: 64 << 10,
            max_channels_per_connection: 128,
            max_connections: 50_000,
            close_timeout_secs: 5,
            presence_ttl_secs: 60,
            max_history_limit: 1000,
            namespaces: NamespaceConfig::defaults(),
        }
    }
}

impl GatewayConfig {
    /// Checks the settings; [`crate::Gateway::new`] calls it.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let bad = |m: String| Err(GatewayError::Config(m));
        if self.ping_interval_secs == 0 || self.pong_timeout_secs == 0 {
            return bad("ping_interval_secs and pong_timeout_secs must be positive".into());
        }
        if self.client_queue_max_messages == 0 || self.client_queue_max_bytes == 0 {
            return bad("client queue bounds must be positive".into());
        }
        if self.max_frame_bytes < 1024 || self.max_write_batch_bytes < 1024 {
            return bad("max_frame_bytes and max_write_batch_bytes must be at least 1024".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be positive".into());
        }
        let mut seen = HashSet::new();
        for ns in &self.namespaces {
            if ns.name.is_empty() || ns.name.contains([':', '#']) {
                return bad(format!(
                    "namespace name `{}` must be non-empty, without : or #",
                    ns.name
                ));
            }
            if !seen.insert(ns.name.as_str()) {
                return bad(format!("namespace `{}` is defined twice", ns.name));
            }
            if ns.history_size > 0 && ns.history_ttl_secs == 0 {
                return bad(format!(
                    "namespace `{}`: history_size needs a history_ttl_secs",
                    ns.name
                ));
            }
        }
        Ok(())
    }

    /// The namespace of `channel`, if one is configured.
    pub fn namespace(&self, channel: &str) -> Option<&NamespaceConfig> {
        let key = crate::channel::namespace_key(channel);
        self.namespaces.iter().find(|ns| ns.name == key)
    }

    pub(crate) fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
}

/// Rules for the channels of one namespace.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Namespace name (`incidents`, `class`, `user`).
    pub name: String,
    /// Publications kept per channel for history and recovery (0 = no history).
    #[serde(default)]
    pub history_size: usize,
    /// How long a channel's history lives after its last publication.
    #[serde(default)]
    pub history_ttl_secs: u64,
    /// Keep a presence list (who is subscribed).
    #[serde(default)]
    pub presence: bool,
    /// Push join and leave events to subscribers (needs `presence`).
    #[serde(default)]
    pub join_leave: bool,
    /// Clients may publish (subscribe permission required too); otherwise only the server
    /// API and in-process publishers can.
    #[serde(default)]
    pub allow_publish: bool,
    /// Only members may subscribe: the channel is in the token's `channels` claim, or the
    /// user has the `admin` role.
    #[serde(default)]
    pub members_only: bool,
    /// Roles allowed to subscribe (empty: any authenticated user). `admin` always passes.
    #[serde(default)]
    pub allowed_roles: Vec<Role>,
    /// Subscribers may pass a bounding box in the subscribe `data` to receive only
    /// publications located inside it.
    #[serde(default)]
    pub geo_filter: bool,
}

impl NamespaceConfig {
    /// A namespace with everything off.
    pub fn new(name: impl Into<String>) -> Self {
        NamespaceConfig {
            name: name.into(),
            history_size: 0,
            history_ttl_secs: 0,
            presence: false,
            join_leave: false,
            allow_publish: false,
            members_only: false,
            allowed_roles: Vec::new(),
            geo_filter: false,
        }
    }

    /// The Nexus namespaces:
    /// - `incidents`, `alerts`: anyone may subscribe (with an optional geo filter), only the
    ///   server publishes; history 100 for 10 minutes.
    /// - `class:<id>`, `consult:<id>`: members only, clients publish, presence with
    ///   join/leave; history 100 for 10 minutes.
    /// - `user#<id>`: personal, only user `<id>` subscribes; no history.
    pub fn defaults() -> Vec<NamespaceConfig> {
        let feed = |name: &str| NamespaceConfig {
            history_size: 100,
            history_ttl_secs: 600,
            geo_filter: true,
            ..NamespaceConfig::new(name)
        };
        let room = |name: &str| NamespaceConfig {
            history_size: 100,
            history_ttl_secs: 600,
            presence: true,
            join_leave: true,
            allow_publish: true,
            members_only: true,
            ..NamespaceConfig::new(name)
        };
        vec![
            feed("incidents"),
            feed("alerts"),
            room("class"),
            room("consult"),
            NamespaceConfig::new("user"),
        ]
    }

    /// Whether the namespace keeps history (and so supports recovery).
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && self.history_ttl_secs > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_resolve() {
        let c = GatewayConfig::default();
        c.validate().unwrap();
        assert_eq!(c.namespace("incidents").unwrap().history_size, 100);
        assert!(c.namespace("class:42").unwrap().members_only);
        assert_eq!(c.namespace("user#7").unwrap().name, "user");
        assert!(c.namespace("nope").is_none());
    }

    #[test]
    fn unknown_keys_are_rejected_and_defaults_fill_in() {
        let c: GatewayConfig = serde_json::from_str(r#"{"ping_interval_secs": 5}"#).unwrap();
        assert_eq!(c.ping_interval_secs, 5);
        assert_eq!(c.namespaces.len(), 5);
        assert!(serde_json::from_str::<GatewayConfig>(r#"{"ping": 5}"#).is_err());
        let ns = r#"{"namespaces": [{"name": "x", "history": 3}]}"#;
        assert!(serde_json::from_str::<GatewayConfig>(ns).is_err());
    }

    #[test]
    fn duplicate_or_malformed_namespaces_are_refused() {
        let mut c = GatewayConfig::default();
        c.namespaces.push(NamespaceConfig::new("class"));
        assert!(c.validate().is_err());
        c.namespaces = vec![NamespaceConfig::new("a:b")];
        assert!(c.validate().is_err());
    }

    #[test]
    fn api_key_compares_and_prints_redacted() {
        let k = ApiKey::new("s3cret");
        assert!(k.matches("s3cret"));
        assert!(!k.matches("s3cre"));
        assert!(!ApiKey::new("").matches(""));
        assert_eq!(format!("{k:?}"), "ApiKey(***)");
    }
}
