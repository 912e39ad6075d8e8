//! Ingest of external CAP ATOM feeds, so a national feed can drive local delivery.
//!
//! An [`Ingester`] polls each configured feed every `interval` with a conditional GET
//! (`If-None-Match` / `If-Modified-Since` from the last complete poll, kept in the store), reads
//! the ATOM entries ([`nexus_cap::read_atom`]) and, for each entry not handled before, fetches
//! its CAP document (CAP 1.0, 1.1 or 1.2, validated by its own version's rules and converted
//! to 1.2). Every fetch goes through the [`OutboundPolicy`] guard, with a timeout and a size
//! limit.
//!
//! Deduplication holds across restarts because it lives in the store: an entry (feed, id,
//! `updated`) once handled is not fetched again, an entry announcing a CAP
//! identifier/sender/sent this server knows is skipped without a fetch, and an alert is
//! recorded once per identifier/sender/sent ([`nexus_store::IngestRecord`]).
//!
//! Only alerts whose sender is on the allowlist are re-broadcast, through the same issue
//! path as locally issued alerts (the [`Issuer`] the server provides), so lifecycle,
//! targeting and delivery apply unchanged. Others are stored as `ignored` and go nowhere.
//! An entry that fails for a reason that may pass (a fetch error, the store) is left
//! unhandled and the feed's validators are not advanced, so the next poll tries again.

use crate::error::{FetchError, IngestError};
use crate::outbound::{OutboundPolicy, fetch};
use nexus_cap::{Alert, Limits};
use nexus_store::{FeedState, IngestOutcome, IngestRecord, Store, StoreError, now_ms};
use reqwest::Url;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What [`Ingester`] does.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The feeds' URLs.
    pub feeds: Vec<String>,
    /// Time between two polls of a feed.
    pub interval: Duration,
    /// CAP senders whose alerts are re-broadcast (exact match).
    pub senders: Vec<String>,
    /// Longest a single fetch may take.
    pub timeout: Duration,
    /// Largest feed or CAP document read, bytes.
    pub max_bytes: usize,
    /// Which addresses fetches may reach.
    pub policy: OutboundPolicy,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            feeds: Vec::new(),
            interval: Duration::from_secs(60),
            senders: Vec::new(),
            timeout: Duration::from_secs(10),
            max_bytes: 4 * 1024 * 1024,
            policy: OutboundPolicy::default(),
        }
    }
}

/// Why the issue path did not issue an ingested alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueError {
    /// The server has this identifier/sender/sent already.
    Duplicate,
    /// The alert is not acceptable (e.g. it references alerts unknown here); final.
    Rejected(String),
    /// Something that may pass (the store is down); the entry is tried again next poll.
    Failed(String),
}

/// An alert issued from a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAlert {
    /// The server id of the issued alert.
    pub alert_id: String,
    /// Notes to keep with the ingest record (e.g. unresolved geocodes).
    pub note: Option<String>,
}

/// The issue path of locally issued alerts, as the ingester needs it (the server wires
/// the API's).
pub trait Issuer: Send + Sync + 'static {
    /// Issues a valid CAP 1.2 alert (its XML alongside), as `POST /api/v1/alerts` would.
    fn issue(
        &self,
        alert: Alert,
        xml: String,
    ) -> impl Future<Output = Result<IssuedAlert, IssueError>> + Send;
}

/// What one poll of one feed did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// The feed answered 304 Not Modified.
    pub not_modified: bool,
    /// Entries in the feed.
    pub entries: usize,
    /// Entries skipped as handled before.
    pub seen: usize,
    /// Alerts issued (re-broadcast).
    pub issued: usize,
    /// Alerts stored but not broadcast (sender not allowlisted).
    pub ignored: usize,
    /// Alerts this server had already.
    pub duplicates: usize,
    /// Entries whose CAP was unusable.
    pub rejected: usize,
    /// Entries that failed for now and will be tried again.
    pub retry: usize,
}

/// Polls CAP ATOM feeds and issues what allowlisted senders publish.
pub struct Ingester<I> {
    store: Store,
    client: reqwest::Client,
    config: IngestConfig,
    issuer: I,
    limits: Limits,
}

/// An entry after the read phase.
enum Read {
    /// Handled before.
    Seen,
    /// Failed for now; tried again next poll.
    Retry,
    /// Settled without issuing (rejected, duplicate).
    Final(IngestRecord),
    /// A valid CAP 1.2 alert (and its XML) to issue or ignore.
    Ready(IngestRecord, Box<Alert>, String),
}

impl<I: Issuer> Ingester<I> {
    /// An ingester; fails when a feed URL is not an absolute http(s) URL.
    pub fn new(store: Store, config: IngestConfig, issuer: I) -> Result<Self, FetchError> {
        for feed in &config.feeds {
            let url = Url::parse(feed).map_err(|e| FetchError::Http(format!("{feed}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FetchError::Http(format!("{feed}: not an http(s) URL")));
            }
        }
        let client = config.policy.client(config.timeout)?;
        let limits = Limits {
            max_bytes: config.max_bytes,
            ..Limits::default()
        };
        Ok(Ingester {
            store,
            client,
            config,
            issuer,
            limits,
        })
    }

    /// Polls every feed now, then every `interval`, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            for feed in &self.config.feeds {
                let poll = self.poll(feed);
                let result = tokio::select! {
                    r = poll => r,
                    () = shutdown.cancelled() => return,
                };
                match result {
                    Ok(report) => {
                        if report.issued + report.ignored + report.rejected + report.retry > 0 {
                            tracing::info!(feed = %feed, ?report, "CAP feed polled");
                        } else {
                            tracing::debug!(feed = %feed, ?report, "CAP feed polled");
                        }
                    }
                    Err(e) => tracing::warn!(feed = %feed, error = %e, "CAP feed poll failed"),
                }
            }
        }
    }

    /// One poll of one feed.
    pub async fn poll(&self, feed: &str) -> Result<PollReport, IngestError> {
        let url = Url::parse(feed).map_err(|e| FetchError::Http(e.to_string()))?;
        let previous = self.store.feed_state(feed).await?;
        let mut headers = vec![("accept", "application/atom+xml, application/xml;q=0.9")];
        if let Some(etag) = previous.as_ref().and_then(|s| s.etag.as_deref()) {
            headers.push(("if-none-match", etag));
        }
        if let Some(lm) = previous.as_ref().and_then(|s| s.last_modified.as_deref()) {
            headers.push(("if-modified-since", lm));
        }
        let now = now_ms();
        let fetched = match fetch(
            &self.client,
            &self.config.policy,
            &url,
            &headers,
            self.config.max_bytes,
        )
        .await
        {
            Ok(f) => f,
            Err(e) => {
                let mut state = previous.unwrap_or_else(|| empty_state(feed));
                state.polled_at = Some(now);
                state.last_error = Some(e.to_string());
                self.store.save_feed_state(&state).await?;
                return Err(e.into());
            }
        };
        let mut report = PollReport::default();
        if fetched.status == 304 {
            report.not_modified = true;
            let mut state = previous.unwrap_or_else(|| empty_state(feed));
            state.polled_at = Some(now);
            state.last_error = None;
            self.store.save_feed_state(&state).await?;
            return Ok(report);
        }
        let entries = nexus_cap::read_atom(&fetched.body, &self.limits)
            .map_err(|e| IngestError::Feed(e.to_string()))?;
        report.entries = entries.len();
        // Read phase: fetch and check every new entry's CAP.
        let mut ready = Vec::new();
        for entry in &entries {
            let updated = entry.updated.clone().unwrap_or_default();
            match self.read(feed, &fetched.url, entry).await? {
                Read::Seen => report.seen += 1,
                Read::Retry => report.retry += 1,
                Read::Final(rec) => {
                    let outcome = self.settle(rec, &updated).await?;
                    report.count(outcome);
                }
                Read::Ready(rec, alert, xml) => ready.push((rec, alert, xml, updated)),
            }
        }
        // Issue phase, oldest `sent` first: feeds list newest first, and an Update must
        // find the alert it references already issued.
        ready.sort_by_key(|(_, alert, _, _)| alert.sent.to_utc());
        for (mut rec, alert, xml, updated) in ready {
            match self.issue(&mut rec, *alert, xml).await {
                Some(outcome) => {
                    rec.outcome = outcome;
                    let outcome = self.settle(rec, &updated).await?;
                    report.count(outcome);
                }
                None => report.retry += 1,
            }
        }
        // Advance the validators only when every entry was handled, so that an entry that
        // failed for now is seen again by the next (unconditional) poll.
        let complete = report.retry == 0;
        let mut state = previous.unwrap_or_else(|| empty_state(feed));
        if complete {
            state.etag = fetched.etag;
            state.last_modified = fetched.last_modified;
        } else {
            state.etag = None;
            state.last_modified = None;
        }
        state.polled_at = Some(now);
        state.last_error = None;
        self.store.save_feed_state(&state).await?;
        Ok(report)
    }

    /// The read phase of one entry: skip what was handled, fetch, parse, validate, convert.
    async fn read(
        &self,
        feed: &str,
        base: &Url,
        entry: &nexus_cap::AtomEntry,
    ) -> Result<Read, StoreError> {
        let updated = entry.updated.clone().unwrap_or_default();
        if self
            .store
            .ingest_entry_seen(feed, &entry.id, &updated)
            .await?
        {
            return Ok(Read::Seen);
        }
        // The feed may say which alert the entry is: skip known ones without a fetch.
        if let (Some(identifier), Some(sender), Some(sent)) = (
            entry.cap_identifier.as_deref(),
            entry.cap_sender.as_deref(),
            entry.cap_sent.as_deref(),
        ) && let Ok(sent) = sent.parse::<nexus_cap::DateTime>()
        {
            let sent_at = sent.to_utc().timestamp_millis();
            if self
                .store
                .ingest_by_triple(identifier, sender, sent_at)
                .await?
                .is_some()
                || self
                    .store
                    .alert_by_triple(identifier, sender, sent_at)
                    .await?
                    .is_some()
            {
                self.store
                    .mark_ingest_entry(feed, &entry.id, &updated, now_ms())
                    .await?;
                return Ok(Read::Seen);
            }
        }
        let mut rec = IngestRecord {
            id: uuid_like(),
            feed_url: feed.to_string(),
            entry_id: entry.id.clone(),
            cap_url: None,
            identifier: None,
            sender: None,
            sent_at: None,
            outcome: IngestOutcome::Rejected,
            alert_id: None,
            detail: None,
            cap_xml: None,
            created_at: now_ms(),
        };
        let Some(link) = entry.cap_link() else {
            rec.detail = Some("the entry links no CAP document".into());
            return Ok(Read::Final(rec));
        };
        let cap_url = match base.join(link) {
            Ok(u) => u,
            Err(e) => {
                rec.detail = Some(format!("CAP link {link}: {e}"));
                return Ok(Read::Final(rec));
            }
        };
        rec.cap_url = Some(cap_url.to_string());
        let accept = [(
            "accept",
            "application/cap+xml, application/xml;q=0.9, text/xml;q=0.8",
        )];
        let body = match fetch(
            &self.client,
            &self.config.policy,
            &cap_url,
            &accept,
            self.config.max_bytes,
        )
        .await
        {
            Ok(f) => f.body,
            // A refused or oversized document will be refused again: final. Others may pass.
            Err(e @ (FetchError::Refused(_) | FetchError::TooLarge { .. })) => {
                rec.detail = Some(e.to_string());
                return Ok(Read::Final(rec));
            }
            Err(e) => {
                tracing::warn!(cap = %cap_url, error = %e, "CAP document fetch failed; retrying next poll");
                return Ok(Read::Retry);
            }
        };
        let parsed = match nexus_cap::parse(&body, &self.limits) {
            Ok(p) => p,
            Err(e) => {
                rec.detail = Some(e.to_string());
                return Ok(Read::Final(rec));
            }
        };
        let problems = parsed.validate();
        let alert = parsed.into_cap12();
        let sent_at = alert.sent.to_utc().timestamp_millis();
        rec.identifier = Some(alert.identifier.clone());
        rec.sender = Some(alert.sender.clone());
        rec.sent_at = Some(sent_at);
        if !problems.is_empty() {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            rec.detail = Some(text.join("; "));
            return Ok(Read::Final(rec));
        }
        let xml = nexus_cap::to_xml(&alert);
        rec.cap_xml = Some(xml.clone());
        if let Some(known) = self
            .store
            .alert_by_triple(&alert.identifier, &alert.sender, sent_at)
            .await?
        {
            rec.alert_id = Some(known.id);
            rec.outcome = IngestOutcome::Duplicate;
            return Ok(Read::Final(rec));
        }
        Ok(Read::Ready(rec, Box::new(alert), xml))
    }

    /// The issue phase of one alert: ignored unless its sender is allowlisted, else issued
    /// through the [`Issuer`]. `None`: failed for now, tried again next poll.
    async fn issue(
        &self,
        rec: &mut IngestRecord,
        alert: Alert,
        xml: String,
    ) -> Option<IngestOutcome> {
        if !self.config.senders.contains(&alert.sender) {
            rec.detail = Some("sender not on the re-broadcast allowlist".into());
            return Some(IngestOutcome::Ignored);
        }
        match self.issuer.issue(alert, xml).await {
            Ok(issued) => {
                rec.alert_id = Some(issued.alert_id);
                rec.detail = issued.note;
                Some(IngestOutcome::Issued)
            }
            Err(IssueError::Duplicate) => Some(IngestOutcome::Duplicate),
            Err(IssueError::Rejected(why)) => {
                rec.detail = Some(why);
                Some(IngestOutcome::Rejected)
            }
            Err(IssueError::Failed(why)) => {
                tracing::warn!(entry = %rec.entry_id, error = %why, "issuing an ingested alert failed; retrying next poll");
                None
            }
        }
    }

    /// Records the outcome and marks the entry handled.
    async fn settle(
        &self,
        mut rec: IngestRecord,
        updated: &str,
    ) -> Result<IngestOutcome, StoreError> {
        if !self.store.record_ingest(&rec).await? {
            rec.outcome = IngestOutcome::Duplicate;
        }
        self.store
            .mark_ingest_entry(&rec.feed_url, &rec.entry_id, updated, now_ms())
            .await?;
        if rec.outcome == IngestOutcome::Rejected {
            tracing::warn!(feed = %rec.feed_url, entry = %rec.entry_id, detail = rec.detail.as_deref().unwrap_or(""), "CAP feed entry rejected");
        }
        Ok(rec.outcome)
    }
}

impl PollReport {
    fn count(&mut self, outcome: IngestOutcome) {
        match outcome {
            IngestOutcome::Issued => self.issued += 1,
            IngestOutcome::Ignored => self.ignored += 1,
            IngestOutcome::Duplicate => self.duplicates += 1,
            IngestOutcome::Rejected => self.rejected += 1,
        }
    }
}

fn empty_state(feed: &str) -> FeedState {
    FeedState {
        url: feed.to_string(),
        etag: None,
        last_modified: None,
        polled_at: None,
        last_error: None,
    }
}

/// A random, URL-safe row id (32 hex digits).
fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}
