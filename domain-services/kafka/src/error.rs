//! Errors of the Kafka adapter.

use nexus_events::EventError;

/// Why setting up or using the Kafka bus failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaBusError {
    /// librdkafka refused the client configuration or could not create the client.
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The settings are invalid (no brokers, …).
    #[error("kafka settings: {0}")]
    Settings(String),
}

impl From<KafkaBusError> for EventError {
    fn from(e: KafkaBusError) -> Self {
        match e {
            KafkaBusError::Settings(s) => EventError::Config(s),
            KafkaBusError::Client(k) => EventError::Unavailable(k.to_string()),
        }
    }
}
