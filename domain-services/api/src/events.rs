//! CloudEvents written by the API into the store's outbox.

use nexus_store::NewEvent;
use serde::Serialize;

/// The CloudEvents 1.0 envelope (structured JSON form).
#[derive(Debug, Clone, Serialize)]
pub struct CloudEvent<T: Serialize> {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// UUID.
    pub id: String,
    /// `/nexus/<domain>`.
    pub source: String,
    /// Event type, e.g. `user.registered`.
    #[serde(rename = "type")]
    pub type_: String,
    /// RFC 3339 time of the change.
    pub time: String,
    /// The aggregate id.
    pub subject: String,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// Event payload: ids and facts, never more personal data than consumers need.
    pub data: T,
}

/// Builds the outbox row for an event of `domain` (`users`, `crisis`, …) about `subject`.
pub fn event<T: Serialize>(domain: &str, event_type: &str, subject: &str, data: T) -> NewEvent {
    let id = uuid::Uuid::new_v4().to_string();
    let ce = CloudEvent {
        specversion: "1.0",
        id: id.clone(),
        source: format!("/nexus/{domain}"),
        type_: event_type.to_string(),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        subject: subject.to_string(),
        datacontenttype: "application/json",
        data,
    };
    NewEvent {
        id,
        topic: format!("nexus.{domain}"),
        key: subject.to_string(),
        event_type: event_type.to_string(),
        // Serializing plain data structs cannot fail.
        payload: serde_json::to_string(&ce).unwrap_or_default(),
    }
}
