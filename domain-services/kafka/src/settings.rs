//! Kafka bus settings.

use nexus_events::Topics;
use std::time::Duration;

/// How CloudEvents are laid out in Kafka messages (CloudEvents Kafka protocol binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentMode {
    /// Attributes in `ce_*` headers, the data alone as the value (the default).
    #[default]
    Binary,
    /// The whole event as JSON in the value, `content-type: application/cloudevents+json`.
    Structured,
}

/// Settings of a [`KafkaBus`](crate::KafkaBus).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic naming (prefix).
    pub topics: Topics,
    /// Content mode for published events (consumers read both).
    pub mode: ContentMode,
    /// Prepended to consumer names to form group ids.
    pub group_prefix: String,
    /// Consumer group `session.timeout.ms` (tests use ≈2 s so group joins are quick).
    pub session_timeout: Duration,
    /// Producer `message.timeout.ms`: how long librdkafka retries one batch before the
    /// relay sees an error and retries it itself.
    pub message_timeout: Duration,
    /// Partitions of topics this bus creates.
    pub partitions: i32,
    /// Replication factor of topics this bus creates.
    pub replication: i32,
    /// Extra librdkafka properties for every client (`security.protocol`, …).
    pub client_properties: Vec<(String, String)>,
}

impl KafkaSettings {
    /// Defaults for `brokers` with the `nexus.` prefix.
    pub fn new(brokers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            topics: Topics::default(),
            mode: ContentMode::Binary,
            group_prefix: String::new(),
            session_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(10),
            partitions: 4,
            replication: 1,
            client_properties: Vec::new(),
        }
    }

    /// The same settings with another topic prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> KafkaSettings {
        self.topics = Topics::new(prefix);
        self
    }

    /// The same settings with another content mode.
    pub fn with_mode(mut self, mode: ContentMode) -> KafkaSettings {
        self.mode = mode;
        self
    }
}
