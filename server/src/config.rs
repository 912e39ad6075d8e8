//! The typed configuration: defaults → TOML file → `NEXUS_*` environment → flags, then checks.
//!
//! Each environment variable is `NEXUS_` + the TOML path in upper case (`[sfu] udp_addr` ⇔
//! `NEXUS_SFU_UDP_ADDR`). Unknown keys in the file and unknown `NEXUS_*` variables are refused,
//! naming them. `NEXUS_TEST_*` is reserved for the test suite and ignored here.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret value: usable by the program, printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sections whose keys become `NEXUS_<SECTION>_<KEY>`; everything else is top level.
const SECTIONS: &[&str] = &[
    "rate_limit",
    "tls",
    "jwt",
    "kafka",
    "gateway",
    "sfu",
    "turn",
    "smtp",
    "sms",
    "vapid",
    "alerts",
    "cap",
    "outbound",
];

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP and WebSocket listener.
    pub http_addr: SocketAddr,
    /// Directory for the SQLite file and generated secrets.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the data dir.
    #[serde(serialize_with = "ser_url")]
    pub database_url: Option<String>,
    /// Redis for the gateway across nodes.
    #[serde(serialize_with = "ser_url")]
    pub redis_url: Option<String>,
    /// Log filter (`info`, `nexus=debug,sqlx=warn`, …).
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Largest accepted request body (`1MiB`, `512KiB`, bytes).
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub body_limit: u64,
    /// Longest a request may take before 504.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight work.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub shutdown_grace: Duration,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed.
    #[serde(deserialize_with = "de_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Origins allowed by CORS (`*` = any).
    #[serde(deserialize_with = "de_list")]
    pub cors_origins: Vec<String>,
    /// Most concurrent connections accepted.
    #[serde(deserialize_with = "de_num")]
    pub max_connections: usize,
    /// HTTPS.
    pub tls: TlsConfig,
    /// Token signing.
    pub jwt: JwtConfig,
    /// Event bus on Kafka.
    pub kafka: KafkaConfig,
    /// Request rate limits.
    pub rate_limit: RateLimitConfig,
    /// Realtime gateway.
    pub gateway: GatewayConfig,
    /// WebRTC SFU.
    pub sfu: SfuConfig,
    /// TURN servers announced to clients.
    pub turn: TurnConfig,
    /// E-mail delivery.
    pub smtp: SmtpConfig,
    /// SMS delivery (Twilio-compatible Messages API).
    pub sms: SmsConfig,
    /// Web Push signing.
    pub vapid: VapidConfig,
    /// Alerting policy.
    pub alerts: AlertsConfig,
    /// CAP feed ingest and geocode table.
    pub cap: CapConfig,
    /// Outgoing requests to URLs from outside (feeds, push endpoints).
    pub outbound: OutboundConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./nexus-data"),
            database_url: None,
            redis_url: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            cors_origins: vec!["*".into()],
            max_connections: 10_000,
            tls: TlsConfig::default(),
            jwt: JwtConfig::default(),
            kafka: KafkaConfig::default(),
            rate_limit: RateLimitConfig::default(),
            gateway: GatewayConfig::default(),
            sfu: SfuConfig::default(),
            turn: TurnConfig::default(),
            smtp: SmtpConfig::default(),
            sms: SmsConfig::default(),
            vapid: VapidConfig::default(),
            alerts: AlertsConfig::default(),
            cap: CapConfig::default(),
            outbound: OutboundConfig::default(),
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[jwt]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 key; generated into the data dir when absent.
    pub secret: Option<Secret>,
    /// Earlier keys that still verify.
    #[serde(deserialize_with = "de_secret_list")]
    pub previous_secrets: Vec<Secret>,
    /// Access-token lifetime.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub access_ttl: Duration,
    /// Refresh-token lifetime.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub refresh_ttl: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret: None,
            previous_secrets: Vec::new(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// `[kafka]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers; unset = in-process bus.
    pub brokers: Option<String>,
    /// Topic name prefix.
    pub topic_prefix: String,
    /// CloudEvents Kafka binding mode of published events; consumers read both.
    pub content_mode: ContentMode,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            topic_prefix: "nexus.".into(),
            content_mode: ContentMode::Binary,
        }
    }
}

/// `kafka.content_mode`: how events are laid out in Kafka messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    /// Attributes in `ce_*` headers, the data as the value (the default).
    Binary,
    /// The whole event as JSON (`application/cloudevents+json`) in the value.
    Structured,
}

/// `[rate_limit]`: requests per second and bursts; 0 disables a limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Per client address, per second.
    #[serde(deserialize_with = "de_num")]
    pub per_ip: u32,
    /// Per authenticated user, per second.
    #[serde(deserialize_with = "de_num")]
    pub per_user: u32,
    /// Burst per client address.
    #[serde(deserialize_with = "de_num")]
    pub per_ip_burst: u32,
    /// Burst per user.
    #[serde(deserialize_with = "de_num")]
    pub per_user_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_ip: 50,
            per_user: 20,
            per_ip_burst: 100,
            per_user_burst: 40,
        }
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Key for the gateway server API.
    pub api_key: Option<Secret>,
}

/// `[sfu]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SfuConfig {
    /// First shard's UDP socket.
    pub udp_addr: SocketAddr,
    /// Number of shards (default: number of cores).
    #[serde(deserialize_with = "de_opt_num")]
    pub shards: Option<usize>,
    /// Address announced in ICE candidates.
    pub public_ip: Option<IpAddr>,
    /// A shard whose loop was busy at least this percentage of the last 2 s refuses new
    /// subscribers (WHEP 503 + `Retry-After`, room protocol `saturated`); above 100 never.
    #[serde(deserialize_with = "de_num")]
    pub max_busy_percent: u32,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            udp_addr: SocketAddr::from(([127, 0, 0, 1], 7882)),
            shards: None,
            public_ip: None,
            max_busy_percent: 80,
        }
    }
}

/// `[turn]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs.
    #[serde(deserialize_with = "de_list")]
    pub urls: Vec<String>,
    /// coturn REST-API shared secret.
    pub secret: Option<Secret>,
}

/// `[smtp]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// `smtp://` or `smtps://user:pass@host:port`.
    pub url: Option<Secret>,
}

/// `[sms]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Messages API base URL.
    pub url: Option<String>,
    /// Account id.
    pub account: Option<String>,
    /// Auth token.
    pub token: Option<Secret>,
    /// Sender number.
    pub from: Option<String>,
}

/// `[vapid]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VapidConfig {
    /// Web Push signing key: P-256 PKCS#8, PEM or base64url of the DER; generated into
    /// `<data dir>/vapid-private-key.pem` when absent.
    pub private_key: Option<Secret>,
    /// `mailto:` or `https:` contact.
    pub subject: Option<String>,
}

/// `[alerts]`: who hears what, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The approval step: an `Actual` alert waits for a second `alert_authority`.
    #[serde(deserialize_with = "de_bool")]
    pub approval: bool,
    /// Who hears `Test`, `Exercise` and `Draft` alerts: user ids, e-mail addresses or
    /// phone numbers of subscriptions.
    #[serde(deserialize_with = "de_list")]
    pub test_allowlist: Vec<String>,
    /// Accept Web Push endpoints on private and loopback addresses (and `http://`).
    #[serde(deserialize_with = "de_bool")]
    pub allow_private_push: bool,
    /// Base URL of links in messages (unsubscribe) and of the inbound SMS webhook's
    /// signature; default: `http(s)://` + the listener's address.
    pub public_url: Option<String>,
    /// E-mails sent per second by this node's delivery worker (0: unlimited).
    #[serde(deserialize_with = "de_rate")]
    pub rate_email: f64,
    /// SMS sent per second (a provider account's usual limit; 0: unlimited).
    #[serde(deserialize_with = "de_rate")]
    pub rate_sms: f64,
    /// Web Push messages sent per second (0: unlimited).
    #[serde(deserialize_with = "de_rate")]
    pub rate_push: f64,
    /// Personal-channel (`user#<id>`) WebSocket publications per second (0: unlimited).
    #[serde(deserialize_with = "de_rate")]
    pub rate_websocket: f64,
    /// How long a device's last reported location keeps targeting its subscription.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub device_location_max_age: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            approval: false,
            test_allowlist: Vec::new(),
            allow_private_push: false,
            public_url: None,
            rate_email: 50.0,
            rate_sms: 30.0,
            rate_push: 200.0,
            rate_websocket: 1000.0,
            device_location_max_age: Duration::from_secs(12 * 3600),
        }
    }
}

/// `[cap]`: external CAP ATOM feeds to ingest, and the geocode table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapConfig {
    /// ATOM feeds of CAP alerts to poll (http/https URLs).
    #[serde(deserialize_with = "de_list")]
    pub feeds: Vec<String>,
    /// Time between two polls of a feed.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub feed_interval: Duration,
    /// CAP senders whose ingested alerts are re-broadcast (others are stored only).
    #[serde(deserialize_with = "de_list")]
    pub feed_senders: Vec<String>,
    /// Longest one fetch (a feed, a CAP document) may take.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub feed_timeout: Duration,
    /// Largest feed or CAP document read.
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub feed_max_bytes: u64,
    /// GeoJSON FeatureCollection mapping CAP geocodes to polygons (`docs/alerting.md`).
    pub geocodes: Option<PathBuf>,
}

impl Default for CapConfig {
    fn default() -> Self {
        CapConfig {
            feeds: Vec::new(),
            feed_interval: Duration::from_secs(60),
            feed_senders: Vec::new(),
            feed_timeout: Duration::from_secs(10),
            feed_max_bytes: 4 * 1024 * 1024,
            geocodes: None,
        }
    }
}

/// `[outbound]`: the guard on requests to URLs from outside.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Networks (CIDRs) that may be reached although private, loopback or link-local.
    #[serde(deserialize_with = "de_list")]
    pub allow: Vec<ipnet::IpNet>,
}

/// Flag overrides (`nexus serve --http-addr …`), applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--http-addr`.
    pub http_addr: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--log`.
    pub log: Option<String>,
}

impl Config {
    /// Loads defaults, then `file`, then the `NEXUS_*` variables of `env`, then `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config> {
        let mut tree = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            tree = text
                .parse::<toml::Table>()
                .map_err(|e| anyhow!("{}: {}", path.display(), e.message()))?;
            let probe: Result<Config, _> = toml::Value::Table(tree.clone()).try_into();
            if let Err(e) = probe {
                bail!("{}: {}", path.display(), e.message());
            }
        }
        let mut from_env = BTreeMap::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("NEXUS_") else {
                continue;
            };
            if rest.starts_with("TEST_") {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            let (section, key) = match SECTIONS
                .iter()
                .find(|s| lower.starts_with(&format!("{s}_")))
            {
                Some(s) => (Some(*s), lower[s.len() + 1..].to_string()),
                None => (None, lower),
            };
            let target = match section {
                Some(s) => tree
                    .entry(s)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| anyhow!("config section `{s}` is not a table"))?,
                None => &mut tree,
            };
            target.insert(key, toml::Value::String(value));
            from_env.insert(name.clone(), ());
            let probe: Result<Config, _> = toml::Value::Table(tree.clone()).try_into();
            if let Err(e) = probe {
                bail!("environment variable {name}: {}", e.message());
            }
        }
        let mut config: Config = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("{}", e.message()))?;
        if let Some(a) = flags.http_addr {
            config.http_addr = a;
        }
        if let Some(d) = &flags.data_dir {
            config.data_dir.clone_from(d);
        }
        if let Some(u) = &flags.database_url {
            config.database_url = Some(u.clone());
        }
        if let Some(l) = &flags.log {
            config.log.clone_from(l);
        }
        config.check()?;
        Ok(config)
    }

    /// Cross-field checks.
    fn check(&self) -> Result<()> {
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            bail!("tls.cert and tls.key (NEXUS_TLS_CERT, NEXUS_TLS_KEY) must be set together");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            bail!("database_url (NEXUS_DATABASE_URL) must start with sqlite:// or postgres://");
        }
        if self.body_limit == 0 {
            bail!("body_limit (NEXUS_BODY_LIMIT) must be positive");
        }
        for feed in &self.cap.feeds {
            if !(feed.starts_with("http://") || feed.starts_with("https://")) {
                bail!("cap.feeds (NEXUS_CAP_FEEDS): `{feed}` is not an http:// or https:// URL");
            }
        }
        if self.cap.feed_interval < Duration::from_secs(1) {
            bail!("cap.feed_interval (NEXUS_CAP_FEED_INTERVAL) must be at least 1s");
        }
        if self.cap.feed_timeout.is_zero() || self.cap.feed_max_bytes == 0 {
            bail!(
                "cap.feed_timeout and cap.feed_max_bytes (NEXUS_CAP_FEED_TIMEOUT, NEXUS_CAP_FEED_MAX_BYTES) must be positive"
            );
        }
        if self.max_connections == 0 {
            bail!("max_connections (NEXUS_MAX_CONNECTIONS) must be positive");
        }
        if self.sfu.max_busy_percent == 0 {
            bail!(
                "sfu.max_busy_percent (NEXUS_SFU_MAX_BUSY_PERCENT) must be positive (above 100 never refuses)"
            );
        }
        if let Some(s) = &self.jwt.secret
            && s.expose().len() < nexus_auth::token::MIN_SECRET_LEN
        {
            bail!(
                "jwt.secret (NEXUS_JWT_SECRET) must be at least {} bytes",
                nexus_auth::token::MIN_SECRET_LEN
            );
        }
        if let Some(u) = &self.alerts.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!(
                "alerts.public_url (NEXUS_ALERTS_PUBLIC_URL) must start with http:// or https://"
            );
        }
        if self.alerts.device_location_max_age.is_zero() {
            bail!(
                "alerts.device_location_max_age (NEXUS_ALERTS_DEVICE_LOCATION_MAX_AGE) must be positive"
            );
        }
        if let Some(s) = &self.vapid.subject
            && !(s.starts_with("mailto:") || s.starts_with("https://"))
        {
            bail!("vapid.subject (NEXUS_VAPID_SUBJECT) must be a mailto: or https: URI");
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| anyhow!("log (NEXUS_LOG) `{}`: {e}", self.log))?;
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/nexus.db", self.data_dir.display()))
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

fn ser_url<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(url) => s.serialize_str(&nexus_store::db::redact_url(url)),
        None => s.serialize_none(),
    }
}

/// Accepts a TOML number or a string holding one (environment values are strings).
fn de_num<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
where
    T: std::str::FromStr + TryFrom<i64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(i64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => {
            T::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
        }
        NumOrStr::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a valid number"))),
    }
}

/// A rate (messages per second): a non-negative TOML number or a string holding one.
fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }
    let rate = match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => n,
        NumOrStr::Str(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("`{s}` is not a number of messages per second"))
        })?,
    };
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(serde::de::Error::custom(format!(
            "{rate} is not a rate (a number of messages per second, 0 for unlimited)"
        )));
    }
    Ok(rate)
}

/// Accepts a TOML boolean or `true`/`false`/`1`/`0`/`yes`/`no` (environment values).
fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrStr {
        Bool(bool),
        Str(String),
    }
    match BoolOrStr::deserialize(d)? {
        BoolOrStr::Bool(b) => Ok(b),
        BoolOrStr::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "`{s}` is not true or false"
            ))),
        },
    }
}

fn de_opt_num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    de_num::<D, usize>(d).map(Some)
}

/// Accepts a TOML array or a comma-separated string.
fn de_list<'de, D: Deserializer<'de>, T>(d: D) -> Result<Vec<T>, D::Error>
where
    T: std::str::FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrStr<T> {
        List(Vec<T>),
        Str(String),
    }
    match ListOrStr::<T>::deserialize(d)? {
        ListOrStr::List(v) => Ok(v),
        ListOrStr::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse()
                    .map_err(|e| serde::de::Error::custom(format!("`{p}`: {e}")))
            })
            .collect(),
    }
}

fn de_secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    let list: Vec<String> = de_list(d)?;
    Ok(list.into_iter().map(Secret).collect())
}

/// Parses `1MiB`, `512KiB`, `2MB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 1MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1_000_000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit `{other}` (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn ser_size<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    if (*v).is_multiple_of(1024 * 1024) {
        s.serialize_str(&format!("{}MiB", v / (1024 * 1024)))
    } else if (*v).is_multiple_of(1024) {
        s.serialize_str(&format!("{}KiB", v / 1024))
    } else {
        s.serialize_str(&v.to_string())
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        other => return Err(format!("unknown duration unit `{other}` (ms, s, m, h, d)")),
    })
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(Duration::from_secs(n)),
        NumOrStr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn ser_duration<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if v.subsec_millis() != 0 {
        s.serialize_str(&format!("{}ms", v.as_millis()))
    } else {
        s.serialize_str(&format!("{}s", v.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The configuration from these variables alone (no file, no flags).
    fn from_env(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        Config::load(None, env(pairs), &Overrides::default())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = from_env(&[]).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./nexus-data"));
        assert_eq!(c.database_url(), "sqlite://./nexus-data/nexus.db");
        assert_eq!(c.body_limit, 1024 * 1024);
        assert_eq!(c.rate_limit.per_ip, 50);
        assert_eq!(c.sfu.udp_addr.to_string(), "127.0.0.1:7882");
        assert_eq!(c.kafka.topic_prefix, "nexus.");
        assert_eq!(c.kafka.content_mode, ContentMode::Binary);
    }

    #[test]
    fn the_sfu_admission_limit_is_a_positive_percentage() {
        let c = from_env(&[]).unwrap();
        assert_eq!(c.sfu.max_busy_percent, 80);
        let c = from_env(&[("NEXUS_SFU_MAX_BUSY_PERCENT", "95")]).unwrap();
        assert_eq!(c.sfu.max_busy_percent, 95);
        let err = from_env(&[("NEXUS_SFU_MAX_BUSY_PERCENT", "0")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("NEXUS_SFU_MAX_BUSY_PERCENT"),
            "{err:#}"
        );
    }

    #[test]
    fn kafka_structured_mode_is_selectable_and_typos_are_named() {
        let c = from_env(&[("NEXUS_KAFKA_CONTENT_MODE", "structured")]).unwrap();
        assert_eq!(c.kafka.content_mode, ContentMode::Structured);
        let err = from_env(&[("NEXUS_KAFKA_CONTENT_MODE", "xml")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("NEXUS_KAFKA_CONTENT_MODE"),
            "{err:#}"
        );
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nexus.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9000\"\nlog = \"debug\"\n[rate_limit]\nper_ip = 7\n",
        )
        .unwrap();
        let e = env(&[
            ("NEXUS_LOG", "warn"),
            ("NEXUS_RATE_LIMIT_PER_USER", "3"),
            ("NEXUS_SFU_UDP_ADDR", "127.0.0.1:0"),
        ]);
        let flags = Overrides {
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load(Some(&file), e, &flags).unwrap();
        assert_eq!(c.http_addr.port(), 0, "flag beats file");
        assert_eq!(c.log, "warn", "env beats file");
        assert_eq!(c.rate_limit.per_ip, 7, "file beats default");
        assert_eq!(c.rate_limit.per_user, 3);
        assert_eq!(c.sfu.udp_addr.port(), 0);
    }

    #[test]
    fn unknown_keys_and_variables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[sfu]\nudp_adr = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("udp_adr"), "{err}");
        let err = from_env(&[("NEXUS_HTTP_ADR", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NEXUS_HTTP_ADR"), "{err}");
        let err = from_env(&[("NEXUS_RATE_LIMIT_PER_IP", "lots")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NEXUS_RATE_LIMIT_PER_IP") && err.contains("lots"),
            "{err}"
        );
        // Reserved for tests, so tests can run the binary with their own variables set.
        assert!(from_env(&[("NEXUS_TEST_DATABASE_URL", "x")]).is_ok());
    }

    #[test]
    fn lists_sizes_durations_and_secrets() {
        let e = env(&[
            ("NEXUS_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1/32"),
            ("NEXUS_BODY_LIMIT", "4MiB"),
            ("NEXUS_SHUTDOWN_GRACE", "1500ms"),
            ("NEXUS_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            (
                "NEXUS_JWT_PREVIOUS_SECRETS",
                "old-one-0123456789abcdef01234567,old-two-0123456789abcdef01234567",
            ),
            ("NEXUS_DATABASE_URL", "postgres://nexus:pw@db/nexus"),
        ]);
        let c = Config::load(None, e, &Overrides::default()).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.body_limit, 4 * 1024 * 1024);
        assert_eq!(c.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(c.jwt.previous_secrets.len(), 2);
        let printed = c.to_redacted_toml().unwrap();
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(!printed.contains(":pw@"), "{printed}");
        assert!(printed.contains("<redacted>"));
        let back: toml::Table = printed.parse().unwrap();
        assert_eq!(back["body_limit"].as_str(), Some("4MiB"));
    }

    #[test]
    fn alerting_policy_from_the_environment() {
        let c = from_env(&[
            ("NEXUS_ALERTS_APPROVAL", "true"),
            (
                "NEXUS_ALERTS_TEST_ALLOWLIST",
                "user-1, +447700900123,ops@example.org",
            ),
            ("NEXUS_ALERTS_ALLOW_PRIVATE_PUSH", "1"),
            ("NEXUS_ALERTS_PUBLIC_URL", "https://alerts.example.org"),
            ("NEXUS_VAPID_SUBJECT", "mailto:ops@example.org"),
            ("NEXUS_ALERTS_RATE_SMS", "400"),
            ("NEXUS_ALERTS_RATE_PUSH", "0"),
            ("NEXUS_ALERTS_RATE_EMAIL", "2.5"),
            ("NEXUS_ALERTS_DEVICE_LOCATION_MAX_AGE", "30m"),
        ])
        .unwrap();
        assert!(c.alerts.approval && c.alerts.allow_private_push);
        assert_eq!(
            (c.alerts.rate_sms, c.alerts.rate_push, c.alerts.rate_email),
            (400.0, 0.0, 2.5)
        );
        assert_eq!(c.alerts.device_location_max_age, Duration::from_secs(1800));
        assert_eq!(
            c.alerts.test_allowlist,
            ["user-1", "+447700900123", "ops@example.org"]
        );
        let defaults = from_env(&[]).unwrap();
        assert!(
            !defaults.alerts.approval,
            "the approval step is off by default"
        );
        assert_eq!(
            (defaults.alerts.rate_email, defaults.alerts.rate_sms),
            (50.0, 30.0)
        );
        for bad in [
            ("NEXUS_ALERTS_APPROVAL", "maybe"),
            ("NEXUS_ALERTS_RATE_SMS", "-1"),
            ("NEXUS_ALERTS_RATE_PUSH", "fast"),
            ("NEXUS_ALERTS_DEVICE_LOCATION_MAX_AGE", "0s"),
            ("NEXUS_ALERTS_PUBLIC_URL", "alerts.example.org"),
            ("NEXUS_VAPID_SUBJECT", "ops@example.org"),
        ] {
            assert!(from_env(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cross_field_checks() {
        assert!(from_env(&[("NEXUS_TLS_CERT", "c.pem")]).is_err());
        assert!(from_env(&[("NEXUS_JWT_SECRET", "short")]).is_err());
        assert!(from_env(&[("NEXUS_DATABASE_URL", "mysql://x")]).is_err());
        assert!(from_env(&[("NEXUS_LOG", "nexus=loud")]).is_err());
        assert_eq!(parse_size("512KiB").unwrap(), 512 * 1024);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    }
}
