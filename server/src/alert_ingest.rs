//! Wiring of CAP feed ingest and the geocode table: `config.cap.feeds` are polled by a
//! [`nexus_alert_delivery::Ingester`] whose alerts go through the API's issue path
//! ([`nexus_api::alerts::issue`]), guarded by `config.outbound`; `config.cap.geocodes` is
//! loaded once at start.

use crate::config::Config;
use anyhow::{Context, Result};
use nexus_alert_delivery::{
    IngestConfig, Ingester, IssueError, IssuedAlert, Issuer, OutboundPolicy,
};
use nexus_api::ApiState;
use nexus_api::geocodes::GeocodeTable;
use nexus_cap::Alert;
use std::future::Future;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The guard for requests to URLs from outside (feeds, push endpoints), from
/// `config.outbound`.
pub fn outbound_policy(config: &Config) -> OutboundPolicy {
    OutboundPolicy::allowing(config.outbound.allow.clone())
}

/// The geocode table of `config.cap.geocodes` (empty when unset); a bad file stops the start.
pub fn geocode_table(config: &Config) -> Result<GeocodeTable> {
    let Some(path) = &config.cap.geocodes else {
        return Ok(GeocodeTable::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cap.geocodes (NEXUS_CAP_GEOCODES): cannot read {}",
            path.display()
        )
    })?;
    let table = GeocodeTable::from_geojson(&text)
        .with_context(|| format!("cap.geocodes (NEXUS_CAP_GEOCODES): {}", path.display()))?;
    tracing::info!(codes = table.len(), "geocode table loaded");
    Ok(table)
}

/// Starts the feed ingester on `background` when feeds are configured.
pub fn start(
    config: &Config,
    api: &ApiState,
    shutdown: &CancellationToken,
    background: &TaskTracker,
) -> Result<()> {
    if config.cap.feeds.is_empty() {
        return Ok(());
    }
    let ingest = IngestConfig {
        feeds: config.cap.feeds.clone(),
        interval: config.cap.feed_interval,
        senders: config.cap.feed_senders.clone(),
        timeout: config.cap.feed_timeout,
        max_bytes: usize::try_from(config.cap.feed_max_bytes).unwrap_or(usize::MAX),
        policy: outbound_policy(config),
    };
    if ingest.senders.is_empty() {
        tracing::warn!(
            "cap.feeds is set but cap.feed_senders is empty: ingested alerts are stored, never re-broadcast"
        );
    }
    let ingester = Ingester::new(api.store.clone(), ingest, ApiIssuer(api.clone()))
        .context("cap.feeds (NEXUS_CAP_FEEDS)")?;
    tracing::info!(feeds = config.cap.feeds.len(), "CAP feed ingest started");
    background.spawn(ingester.run(shutdown.clone()));
    Ok(())
}

/// Issues ingested alerts exactly as `POST /api/v1/alerts` does.
struct ApiIssuer(ApiState);

impl Issuer for ApiIssuer {
    fn issue(
        &self,
        alert: Alert,
        xml: String,
    ) -> impl Future<Output = Result<IssuedAlert, IssueError>> + Send {
        let state = self.0.clone();
        async move {
            match nexus_api::alerts::issue(&state, alert, xml, None).await {
                Ok(issued) => {
                    let note = (!issued.unresolved_geocodes.is_empty()).then(|| {
                        let codes: Vec<String> = issued
                            .unresolved_geocodes
                            .iter()
                            .map(|g| format!("{}={}", g.value_name, g.value))
                            .collect();
                        format!("unresolved geocodes: {}", codes.join(", "))
                    });
                    Ok(IssuedAlert {
                        alert_id: issued.alert.id,
                        note,
                    })
                }
                Err(p) => {
                    let detail = p.detail.clone().unwrap_or_else(|| p.title.clone());
                    match p.status {
                        409 if detail.contains("identifier, sender and sent exists") => {
                            Err(IssueError::Duplicate)
                        }
                        400..=499 => Err(IssueError::Rejected(detail)),
                        _ => Err(IssueError::Failed(detail)),
                    }
                }
            }
        }
    }
}
