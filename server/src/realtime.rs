//! Wiring of the realtime gateway: engine choice (memory, or Redis when `redis_url` is set),
//! platform API keys for its server API, and its counters on `/metrics`.

use crate::config::Config;
use anyhow::{Context, Result};
use nexus_auth::TokenKeys;
use nexus_gateway::{
    ApiKeyCheck, Gateway, GatewayConfig, MemoryEngine, RedisEngine, RedisEngineConfig, Stats,
};
use nexus_store::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Platform API keys (`nexus apikey create`, scope `gateway` or `admin`) open the gateway's
/// server API.
struct StoreApiKeys(Store);

impl ApiKeyCheck for StoreApiKeys {
    fn check<'a>(&'a self, key: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            match self.0.api_key_by_hash(&nexus_auth::sha256_hex(key)).await {
                Ok(Some(rec)) => matches!(rec.scope.as_str(), "gateway" | "admin"),
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "API key lookup failed");
                    false
                }
            }
        })
    }
}

/// Starts the gateway on the configured engine.
pub async fn start(config: &Config, keys: TokenKeys, store: Store) -> Result<Gateway> {
    let gw_config = GatewayConfig {
        api_key: config
            .gateway
            .api_key
            .as_ref()
            .map(|k| nexus_gateway::ApiKey::new(k.expose())),
        ..GatewayConfig::default()
    };
    let gw_config = with_crisis_namespaces(gw_config);
    let gateway = match &config.redis_url {
        Some(url) => {
            let engine = RedisEngine::connect(RedisEngineConfig::new(url.clone()))
                .await
                .with_context(|| {
                    format!(
                        "cannot connect the gateway to Redis at {}",
                        nexus_store::db::redact_url(url)
                    )
                })?;
            tracing::info!("gateway engine: redis");
            Gateway::new(gw_config, keys, engine)?
        }
        None => Gateway::new(gw_config, keys, MemoryEngine::new())?,
    };
    gateway.set_api_key_check(StoreApiKeys(store));
    Ok(gateway)
}

/// Exposes the gateway's counters, read at scrape time: `nexus_gateway_current{what}`,
/// `nexus_gateway_total{what}` (including `queue_overflows`),
/// `nexus_gateway_disconnects_total{code}` (close codes; `other` for the rest) and the
/// `nexus_gateway_publish_write_seconds` histogram (publish call → socket write).
pub struct GatewayCollector {
    stats: Arc<Stats>,
    gauges: IntGaugeVec,
    counters: IntCounterVec,
    disconnects: IntCounterVec,
    publish_write: Desc,
}

const PUBLISH_WRITE: &str = "nexus_gateway_publish_write_seconds";
const PUBLISH_WRITE_HELP: &str =
    "Time from a gateway publish call to the socket write of the frame carrying it";

impl GatewayCollector {
    /// A collector over `stats`.
    #[allow(clippy::expect_used)]
    pub fn new(stats: Arc<Stats>) -> Self {
        GatewayCollector {
            stats,
            gauges: IntGaugeVec::new(
                Opts::new(
                    "nexus_gateway_current",
                    "Gateway connections and subscriptions now",
                ),
                &["what"],
            )
            .expect("valid gauge"),
            counters: IntCounterVec::new(
                Opts::new("nexus_gateway_total", "Gateway counters since start"),
                &["what"],
            )
            .expect("valid counter"),
            disconnects: IntCounterVec::new(
                Opts::new(
                    "nexus_gateway_disconnects_total",
                    "Gateway connections closed, by close code",
                ),
                &["code"],
            )
            .expect("valid counter"),
            publish_write: Desc::new(
                PUBLISH_WRITE.into(),
                PUBLISH_WRITE_HELP.into(),
                Vec::new(),
                Default::default(),
            )
            .expect("valid histogram"),
        }
    }
}

/// The gateway's publish→write histogram as a Prometheus family (its buckets are kept by the
/// gateway, so the family is built here rather than by a `prometheus::Histogram`).
fn histogram_family(h: &nexus_gateway::stats::HistogramSnapshot) -> MetricFamily {
    let buckets = h
        .buckets
        .iter()
        .map(|&(bound, n)| {
            let mut b = proto::Bucket::default();
            b.set_upper_bound(bound as f64 / 1e6);
            b.set_cumulative_count(n);
            b
        })
        .collect();
    let mut hist = proto::Histogram::default();
    hist.set_sample_count(h.count);
    hist.set_sample_sum(h.sum_micros as f64 / 1e6);
    hist.set_bucket(buckets);
    let mut m = proto::Metric::default();
    m.set_histogram(hist);
    let mut f = MetricFamily::default();
    f.set_name(PUBLISH_WRITE.into());
    f.set_help(PUBLISH_WRITE_HELP.into());
    f.set_field_type(MetricType::HISTOGRAM);
    f.set_metric(vec![m]);
    f
}

impl Collector for GatewayCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.gauges.desc();
        d.extend(self.counters.desc());
        d.extend(self.disconnects.desc());
        d.push(&self.publish_write);
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        self.gauges
            .with_label_values(&["connections"])
            .set(s.connections.load(Relaxed) as i64);
        self.gauges
            .with_label_values(&["subscriptions"])
            .set(s.subscriptions.load(Relaxed) as i64);
        for (name, v) in [
            ("connections", &s.connections_total),
            ("messages_sent", &s.messages_sent),
            ("messages_received", &s.messages_received),
            ("publications", &s.publications),
            ("publications_delivered", &s.publications_delivered),
            ("slow_disconnects", &s.slow_disconnects),
            ("queue_overflows", &s.queue_overflows),
            ("frames_written", &s.frames_written),
        ] {
            let c = self.counters.with_label_values(&[name]);
            c.reset();
            c.inc_by(v.load(Relaxed));
        }
        let snap = s.snapshot();
        for (code, n) in &snap.disconnects {
            let label = if *code == 0 {
                "other".to_string()
            } else {
                code.to_string()
            };
            let c = self.disconnects.with_label_values(&[label.as_str()]);
            c.reset();
            c.inc_by(*n);
        }
        let mut out = self.gauges.collect();
        out.extend(self.counters.collect());
        out.extend(self.disconnects.collect());
        out.push(histogram_family(&snap.publish_write));
        out
    }
}

/// Adds the `geofences` namespace (geofence transitions from the crisis API: ids and
/// transitions, no positions) for coordinators and admins, unless configured already.
fn with_crisis_namespaces(mut config: GatewayConfig) -> GatewayConfig {
    let channel = nexus_api::crisis::GEOFENCES_CHANNEL;
    if config.namespace(channel).is_none() {
        config.namespaces.push(nexus_gateway::NamespaceConfig {
            history_size: 100,
            history_ttl_secs: 600,
            allowed_roles: vec![nexus_auth::Role::Coordinator],
            ..nexus_gateway::NamespaceConfig::new(channel)
        });
    }
    config
}

/// The crisis API's [`nexus_api::Realtime`] port, publishing through the gateway. Failures
/// are logged (channel and error only) and never fail the request that published.
pub struct GatewayRealtime(pub Gateway);

impl nexus_api::Realtime for GatewayRealtime {
    fn publish(&self, channel: &str, data: serde_json::Value) -> nexus_api::BoxFuture<'_, ()> {
        let channel = channel.to_string();
        Box::pin(async move {
            if let Err(e) = self.0.publish(&channel, data).await {
                tracing::warn!(%channel, error = %e, "realtime publish failed");
            }
        })
    }
}

/// The live crisis map page (`web/map/index.html`, embedded), served at `GET /map`.
const MAP_PAGE: &str = include_str!("../../web/map/index.html");

/// `GET /map`: the live crisis map.
pub fn map_page() -> axum::Router {
    axum::Router::new().route(
        "/map",
        axum::routing::get(|| async {
            (
                [
                    (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (
                        axum::http::header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:",
                    ),
                ],
                MAP_PAGE,
            )
        }),
    )
}
