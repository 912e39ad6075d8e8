//! [`KafkaBus`]: producing outbox rows and running consumer groups.

use crate::error::KafkaBusError;
use crate::settings::{ContentMode, KafkaSettings};
use nexus_events::consumer::{Outcome, attempt};
use nexus_events::envelope::{STRUCTURED_CONTENT_TYPE, headers as ce};
use nexus_events::{CloudEvent, Consumer, EventBus, EventError, HandlerError, Scope, Topics};
use nexus_store::{NewEvent, OutboxRow, Store};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Header with the attempt number of a message on a retry topic.
pub const ATTEMPT_HEADER: &str = "nexus_attempt";
/// Header with the last error of a retried or dead-lettered message.
pub const ERROR_HEADER: &str = "nexus_error";
/// Header naming the consumer a retried or dead-lettered message belongs to.
pub const CONSUMER_HEADER: &str = "nexus_consumer";

/// The event bus on Kafka. Cheap to share behind an `Arc`.
pub struct KafkaBus {
    settings: KafkaSettings,
    store: Store,
    /// Replaced when librdkafka reports a fatal producer error (e.g. the broker lost the
    /// idempotent producer's state); the lock is held only to clone or swap the `Arc`.
    producer: Mutex<Arc<FutureProducer>>,
}

impl KafkaBus {
    /// A bus on `settings.brokers`; `store` keeps consumers' processed ids and dead letters.
    /// Connecting is lazy: this succeeds while the broker is down.
    pub fn new(settings: KafkaSettings, store: Store) -> Result<KafkaBus, KafkaBusError> {
        if settings.brokers.trim().is_empty() {
            return Err(KafkaBusError::Settings("no brokers".into()));
        }
        let producer = Arc::new(producer(&settings)?);
        Ok(KafkaBus {
            settings,
            store,
            producer: Mutex::new(producer),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    fn client_config(&self) -> ClientConfig {
        client_config(&self.settings)
    }

    fn producer(&self) -> Arc<FutureProducer> {
        // A poisoned lock only means another thread panicked while cloning an Arc.
        self.producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the producer after a failed batch, so the relay's next attempt starts fresh.
    ///
    /// A broker that lost the idempotent producer's state (a restarted test broker, a
    /// recreated cluster) rejects its sequence numbers forever; a new producer gets a new
    /// producer id. Every message of the failed batch has already failed, so nothing in
    /// flight is lost by dropping the old one.
    fn renew_producer(&self, current: &Arc<FutureProducer>) {
        if let Some((code, reason)) = current.client().fatal_error() {
            tracing::warn!(?code, %reason, "kafka producer hit a fatal error");
        }
        match producer(&self.settings) {
            Ok(p) => {
                let mut slot = self
                    .producer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if Arc::ptr_eq(&slot, current) {
                    *slot = Arc::new(p);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot create a kafka producer"),
        }
    }

    /// Creates `topics` (physical names) unless they exist. Failures are logged, not returned:
    /// brokers that auto-create topics on produce still work.
    pub async fn ensure_topics(&self, topics: &[String]) {
        let admin: AdminClient<DefaultClientContext> = match self.client_config().create() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create kafka admin client");
                return;
            }
        };
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.settings.partitions,
                    TopicReplication::Fixed(self.settings.replication),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match admin.create_topics(new.iter(), &opts).await {
            Ok(results) => {
                for r in results {
                    if let Err((topic, code)) = r
                        && code != RDKafkaErrorCode::TopicAlreadyExists
                    {
                        tracing::warn!(%topic, ?code, "cannot create kafka topic");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot create kafka topics"),
        }
    }

    async fn send(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: &str,
        headers: OwnedHeaders,
        value: &[u8],
    ) -> Result<(), EventError> {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| EventError::Unavailable(e.to_string()))
    }

    /// Message headers and value of an outbox row in the configured content mode.
    fn encode(&self, row: &NewEvent) -> (OwnedHeaders, Vec<u8>) {
        match (
            self.settings.mode,
            CloudEvent::from_json(row.payload.as_bytes()),
        ) {
            (ContentMode::Binary, Ok(event)) => {
                let (h, body) = event.to_binary();
                let mut headers = OwnedHeaders::new_with_capacity(h.len());
                for (k, v) in &h {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    });
                }
                (headers, body)
            }
            // Structured mode, and rows that are not valid CloudEvents (consumers will
            // dead-letter those with the decode error rather than the relay stalling).
            _ => (
                OwnedHeaders::new().insert(Header {
                    key: ce::CONTENT_TYPE,
                    value: Some(STRUCTURED_CONTENT_TYPE),
                }),
                row.payload.clone().into_bytes(),
            ),
        }
    }

    async fn handle_message(
        &self,
        consumer: &Consumer,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), EventError> {
        let topic = msg.topic();
        let (origin, is_retry) = match topic.strip_suffix(".retry") {
            Some(o) => (o.to_string(), true),
            None => (topic.to_string(), false),
        };
        let headers = header_pairs(msg);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        if is_retry && header(CONSUMER_HEADER) != Some(consumer.name.as_str()) {
            return Ok(()); // another consumer group's retry
        }
        let attempt_no: u32 = header(ATTEMPT_HEADER)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1);
        let value = msg.payload().unwrap_or_default();
        let event = match CloudEvent::from_kafka(headers.iter().copied(), value) {
            Ok(e) => e,
            Err(e) => {
                let raw = undecodable(msg, &origin, &headers);
                let err = HandlerError::Permanent(e.to_string());
                return self
                    .dead_letter(consumer, &origin, &raw, &err, attempt_no, msg)
                    .await;
            }
        };
        if is_retry {
            // Wait out the backoff, counted from when the retry was produced.
            let backoff = consumer.retry.backoff(attempt_no.saturating_sub(1));
            let produced = msg.timestamp().to_millis().unwrap_or(0);
            let due = produced.saturating_add(backoff.as_millis() as i64);
            let wait = due.saturating_sub(nexus_store::now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
        }
        match attempt(&self.store, consumer, &event, None).await? {
            Outcome::Failed(err) => {
                let mut raw = event.to_outbox();
                raw.topic = origin.clone();
                if err.is_permanent() || attempt_no >= consumer.retry.max_attempts {
                    self.dead_letter(consumer, &origin, &raw, &err, attempt_no, msg)
                        .await
                } else {
                    let headers = forward_headers(msg, consumer, attempt_no + 1, &err);
                    self.send(
                        &self.producer(),
                        &Topics::retry(&origin),
                        event.key(),
                        headers,
                        value,
                    )
                    .await
                }
            }
            _ => Ok(()),
        }
    }

    /// A [`Scope::Node`] consumer: every partition of its topics, outside any group, from
    /// the first offset at or after `since_ms`; failures retried in place, then dead-lettered
    /// in the store (a retry topic is shared by the nodes, so it cannot serve one node).
    async fn consume_on_node(
        &self,
        consumer: Consumer,
        since_ms: i64,
        shutdown: CancellationToken,
    ) -> Result<(), EventError> {
        let topics: Vec<String> = consumer
            .topics
            .iter()
            .map(|t| self.settings.topics.physical(t))
            .collect();
        self.ensure_topics(&topics).await;
        let config = self.client_config();
        let start = {
            let topics = topics.clone();
            let config = config.clone();
            tokio::task::spawn_blocking(move || start_offsets(&config, &topics, since_ms))
                .await
                .map_err(|e| EventError::Unavailable(e.to_string()))??
        };
        let mut config = config;
        config
            // Required by librdkafka, never joined: the consumer assigns its partitions
            // itself and commits nothing.
            .set(
                "group.id",
                format!("{}{}", self.settings.group_prefix, consumer.name),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "20");
        let kafka: StreamConsumer = config.create().map_err(KafkaBusError::from)?;
        kafka.assign(&start).map_err(KafkaBusError::from)?;
        tracing::info!(consumer = %consumer.name, topics = ?topics, since_ms, "kafka node consumer started");
        while let Some(msg) = next_message(&kafka, &consumer.name, &shutdown).await {
            // `offsets_for_times` may fall back to the beginning; skip what is older.
            if msg.timestamp().to_millis().is_some_and(|t| t < since_ms) {
                continue;
            }
            let headers = header_pairs(&msg);
            let event =
                CloudEvent::from_kafka(headers.iter().copied(), msg.payload().unwrap_or_default());
            let raw = match &event {
                Ok(e) => e.to_outbox(),
                Err(_) => undecodable(&msg, msg.topic(), &headers),
            };
            let outcome = nexus_events::consumer::deliver(
                &self.store,
                &consumer,
                &raw,
                event,
                None,
                &shutdown,
            )
            .await?;
            if outcome == Outcome::Interrupted {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        consumer: &Consumer,
        origin: &str,
        raw: &NewEvent,
        err: &HandlerError,
        attempts: u32,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), EventError> {
        let headers = forward_headers(msg, consumer, attempts, err);
        let value = msg.payload().unwrap_or_default();
        self.send(
            &self.producer(),
            &Topics::dlq(origin),
            &raw.key,
            headers,
            value,
        )
        .await?;
        nexus_events::consumer::dead_letter(&self.store, consumer, raw, err, attempts, None).await
    }
}

/// The message's headers as (name, value) pairs.
fn header_pairs<'m>(msg: &'m BorrowedMessage<'_>) -> Vec<(&'m str, &'m [u8])> {
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// A message that is not a CloudEvent, as a dead-letter row for topic `origin`: its id and
/// type from the `ce_` headers where present, its value kept as it came.
fn undecodable(msg: &BorrowedMessage<'_>, origin: &str, headers: &[(&str, &[u8])]) -> NewEvent {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    };
    NewEvent {
        id: header(ce::ID)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        topic: origin.to_string(),
        key: msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        event_type: header(ce::TYPE).unwrap_or("unknown").to_string(),
        payload: String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned(),
    }
}

/// The next message, or `None` once `shutdown` fires; transient consumer errors are logged
/// and waited out.
async fn next_message<'c>(
    kafka: &'c StreamConsumer,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<BorrowedMessage<'c>> {
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return None,
            m = kafka.recv() => m,
        };
        match msg {
            Ok(m) => return Some(m),
            Err(e) => {
                tracing::debug!(consumer = %name, error = %e, "kafka consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Every partition of `topics` at its first offset at or after `since_ms` (the end where
/// nothing is that new; the beginning when the broker cannot look offsets up by time).
fn start_offsets(
    config: &ClientConfig,
    topics: &[String],
    since_ms: i64,
) -> Result<TopicPartitionList, EventError> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let client: BaseConsumer = config.create().map_err(KafkaBusError::from)?;
    let mut wanted = TopicPartitionList::new();
    for topic in topics {
        let meta = client
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(KafkaBusError::from)?;
        for t in meta.topics() {
            for p in t.partitions() {
                wanted
                    .add_partition_offset(t.name(), p.id(), Offset::Offset(since_ms))
                    .map_err(KafkaBusError::from)?;
            }
        }
    }
    if wanted.count() == 0 {
        return Err(EventError::Unavailable(format!(
            "no partitions found for {topics:?}"
        )));
    }
    match client.offsets_for_times(wanted.clone(), TIMEOUT) {
        Ok(found) => {
            // "Nothing that new" comes back as the logical end, which the fetcher would
            // resolve later, skipping whatever arrives in between: pin it to the current
            // high watermark instead.
            let mut pinned = TopicPartitionList::new();
            for e in found.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => {
                        let (_, high) = client
                            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
                            .map_err(KafkaBusError::from)?;
                        Offset::Offset(high)
                    }
                };
                pinned
                    .add_partition_offset(e.topic(), e.partition(), offset)
                    .map_err(KafkaBusError::from)?;
            }
            Ok(pinned)
        }
        Err(e) => {
            tracing::warn!(error = %e, "kafka cannot look offsets up by time; reading from the beginning");
            let mut all = TopicPartitionList::new();
            for e in wanted.elements() {
                all.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)
                    .map_err(KafkaBusError::from)?;
            }
            Ok(all)
        }
    }
}

/// The message's headers minus our own, plus attempt, error and consumer.
fn forward_headers(
    msg: &BorrowedMessage<'_>,
    consumer: &Consumer,
    attempt: u32,
    err: &HandlerError,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for h in h.iter() {
            if [ATTEMPT_HEADER, ERROR_HEADER, CONSUMER_HEADER].contains(&h.key) {
                continue;
            }
            out = out.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let attempt = attempt.to_string();
    let err = err.to_string();
    for (k, v) in [
        (ATTEMPT_HEADER, attempt.as_str()),
        (ERROR_HEADER, err.as_str()),
        (CONSUMER_HEADER, consumer.name.as_str()),
    ] {
        out = out.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    out
}

fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    for (k, v) in &settings.client_properties {
        c.set(k, v);
    }
    c
}

fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaBusError> {
    let mut c = client_config(settings);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            settings.message_timeout.as_millis().to_string(),
        )
        .set("reconnect.backoff.max.ms", "1000");
    Ok(c.create()?)
}

#[async_trait::async_trait]
impl EventBus for KafkaBus {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn reaches_other_nodes(&self) -> bool {
        true
    }

    async fn publish(&self, rows: &[OutboxRow]) -> Result<(), EventError> {
        let producer = self.producer();
        let topics = &self.settings.topics;
        // All sends are enqueued in order on the first poll of `join_all`; the idempotent
        // producer keeps that order per partition even across its internal retries.
        let sends = rows.iter().map(|row| {
            let (headers, value) = self.encode(&row.event);
            let topic = topics.physical(&row.event.topic);
            let producer = &producer;
            async move {
                self.send(producer, &topic, &row.event.key, headers, &value)
                    .await
            }
        });
        let results = futures_util::future::join_all(sends).await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            self.renew_producer(&producer);
            return Err(e);
        }
        Ok(())
    }

    async fn flush(&self, timeout: Duration) -> Result<(), EventError> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| EventError::Unavailable(e.to_string()))?
            .map_err(|e| EventError::Unavailable(e.to_string()))
    }

    async fn consume(
        &self,
        consumer: Consumer,
        shutdown: CancellationToken,
    ) -> Result<(), EventError> {
        if let Scope::Node { since_ms } = consumer.scope {
            return self.consume_on_node(consumer, since_ms, shutdown).await;
        }
        let topics = &self.settings.topics;
        let main: Vec<String> = consumer.topics.iter().map(|t| topics.physical(t)).collect();
        let mut all = main.clone();
        all.extend(main.iter().map(|t| Topics::retry(t)));
        let mut create = all.clone();
        create.extend(main.iter().map(|t| Topics::dlq(t)));
        self.ensure_topics(&create).await;

        let mut config = self.client_config();
        config
            .set(
                "group.id",
                format!("{}{}", self.settings.group_prefix, consumer.name),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.settings.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.settings.session_timeout.as_millis() / 4)
                    .max(100)
                    .to_string(),
            )
            // Brokers that answer a fetch only when its wait expires (tansu) would add up to
            // the default 500 ms to every delivery.
            .set("fetch.wait.max.ms", "20")
            .set("topic.metadata.refresh.interval.ms", "2000");
        let kafka: StreamConsumer = config.create().map_err(KafkaBusError::from)?;
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        kafka.subscribe(&names).map_err(KafkaBusError::from)?;
        tracing::info!(consumer = %consumer.name, topics = ?all, "kafka consumer started");
        let result = loop {
            let Some(msg) = next_message(&kafka, &consumer.name, &shutdown).await else {
                break Ok(());
            };
            if let Err(e) = self.handle_message(&consumer, &msg).await {
                // Not committed: the message comes again after the restart.
                break Err(e);
            }
            if let Err(e) = kafka.commit_message(&msg, CommitMode::Async) {
                tracing::debug!(consumer = %consumer.name, error = %e, "offset commit failed");
            }
        };
        let _ = kafka.commit_consumer_state(CommitMode::Sync);
        kafka.unsubscribe();
        result
    }
}
