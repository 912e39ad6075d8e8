//! The CloudEvents 1.0 envelope: structured JSON, and the Kafka binary-mode header mapping.

use crate::catalogue::EventType;
use crate::error::EventError;
use crate::topics::Topics;
use nexus_store::NewEvent;
use serde::{Deserialize, Serialize};

/// The CloudEvents spec version Nexus speaks.
pub const SPEC_VERSION: &str = "1.0";
/// `datacontenttype` of every Nexus event.
pub const JSON: &str = "application/json";
/// Content type of a structured-mode CloudEvent.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// Kafka header names of the binary content mode (CloudEvents Kafka protocol binding).
pub mod headers {
    /// `id`.
    pub const ID: &str = "ce_id";
    /// `source`.
    pub const SOURCE: &str = "ce_source";
    /// `type`.
    pub const TYPE: &str = "ce_type";
    /// `specversion`.
    pub const SPECVERSION: &str = "ce_specversion";
    /// `time`.
    pub const TIME: &str = "ce_time";
    /// `subject`.
    pub const SUBJECT: &str = "ce_subject";
    /// `datacontenttype` maps to the plain `content-type` header.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// A CloudEvents 1.0 event with JSON data. Serializes to the structured JSON form, which is
/// also what the outbox stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique id (a UUID): consumers deduplicate on it.
    pub id: String,
    /// `/nexus/<domain>`.
    pub source: String,
    /// The event type (`incident.reported`, …).
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339 time of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The aggregate id; also the Kafka key, so an aggregate's events stay ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The payload: ids and facts, never more personal data than consumers need.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// A new event of a catalogued type about the aggregate `subject`, with a fresh id and the
    /// current time.
    pub fn new(
        event_type: EventType,
        subject: impl Into<String>,
        data: impl Serialize,
    ) -> Result<CloudEvent, EventError> {
        Ok(CloudEvent {
            specversion: SPEC_VERSION.into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: event_type.domain().source(),
            event_type: event_type.as_str().into(),
            time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            subject: Some(subject.into()),
            datacontenttype: Some(JSON.into()),
            data: serde_json::to_value(data).map_err(|e| EventError::Encode(e.to_string()))?,
        })
    }

    /// The catalogued type, if the type string is known.
    pub fn kind(&self) -> Option<EventType> {
        self.event_type.parse().ok()
    }

    /// The aggregate id (the `subject`, empty when absent).
    pub fn key(&self) -> &str {
        self.subject.as_deref().unwrap_or("")
    }

    /// The structured JSON form.
    pub fn to_json(&self) -> String {
        // A struct of strings and a `serde_json::Value` always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the structured JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<CloudEvent, EventError> {
        let ce: CloudEvent =
            serde_json::from_slice(bytes).map_err(|e| EventError::Decode(e.to_string()))?;
        ce.check()?;
        Ok(ce)
    }

    /// The outbox row to write in the same transaction as the change it reports: logical
    /// topic of the type's domain (or of `source`), key = subject, payload = structured JSON.
    pub fn to_outbox(&self) -> NewEvent {
        let topic = match self.kind().map(|t| t.domain()).or_else(|| {
            self.source
                .strip_prefix("/nexus/")
                .and_then(crate::Domain::parse)
        }) {
            Some(d) => Topics::logical(d),
            None => Topics::logical(crate::Domain::System),
        };
        NewEvent {
            id: self.id.clone(),
            topic,
            key: self.key().to_string(),
            event_type: self.event_type.clone(),
            payload: self.to_json(),
        }
    }

    /// Kafka binary content mode: the attributes as `ce_*` headers (plus `content-type`) and
    /// the data alone as the message value.
    pub fn to_binary(&self) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let mut h = vec![
            (headers::ID, self.id.clone()),
            (headers::SOURCE, self.source.clone()),
            (headers::TYPE, self.event_type.clone()),
            (headers::SPECVERSION, self.specversion.clone()),
        ];
        if let Some(t) = &self.time {
            h.push((headers::TIME, t.clone()));
        }
        if let Some(s) = &self.subject {
            h.push((headers::SUBJECT, s.clone()));
        }
        h.push((
            headers::CONTENT_TYPE,
            self.datacontenttype.clone().unwrap_or_else(|| JSON.into()),
        ));
        // Serializing a `serde_json::Value` cannot fail.
        let body = serde_json::to_vec(&self.data).unwrap_or_default();
        (h, body)
    }

    /// Decodes a Kafka message in either content mode: structured when `content-type` is
    /// `application/cloudevents+json` (or there are no `ce_` headers), binary otherwise.
    pub fn from_kafka<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        value: &[u8],
    ) -> Result<CloudEvent, EventError> {
        let mut ce = CloudEvent {
            specversion: String::new(),
            id: String::new(),
            source: String::new(),
            event_type: String::new(),
            time: None,
            subject: None,
            datacontenttype: None,
            data: serde_json::Value::Null,
        };
        let mut binary = false;
        let mut content_type = None;
        for (name, raw) in headers {
            let text = || {
                std::str::from_utf8(raw)
                    .map(str::to_string)
                    .map_err(|_| EventError::Decode(format!("header {name} is not UTF-8")))
            };
            match name {
                headers::ID => ce.id = text()?,
                headers::SOURCE => ce.source = text()?,
                headers::TYPE => ce.event_type = text()?,
                headers::SPECVERSION => ce.specversion = text()?,
                headers::TIME => ce.time = Some(text()?),
                headers::SUBJECT => ce.subject = Some(text()?),
                headers::CONTENT_TYPE => content_type = Some(text()?),
                _ => continue,
            }
            binary |= name.starts_with("ce_");
        }
        if !binary
            || content_type
                .as_deref()
                .is_some_and(|c| c.starts_with(STRUCTURED_CONTENT_TYPE))
        {
            return CloudEvent::from_json(value);
        }
        ce.datacontenttype = content_type;
        ce.data = if value.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(value).map_err(|e| EventError::Decode(e.to_string()))?
        };
        ce.check()?;
        Ok(ce)
    }

    fn check(&self) -> Result<(), EventError> {
        if self.specversion != SPEC_VERSION {
            return Err(EventError::Decode(format!(
                "specversion `{}`, expected {SPEC_VERSION}",
                self.specversion
            )));
        }
        for (what, v) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.event_type),
        ] {
            if v.is_empty() {
                return Err(EventError::Decode(format!("missing `{what}`")));
            }
        }
        Ok(())
    }
}

/// Builds the outbox row for a catalogued event about `subject`: the one call a domain
/// service needs. Pass the result to the store write method that makes the change.
///
/// ```
/// use nexus_events::{EventType, record};
/// let row = record(EventType::IncidentReported, "inc-1", serde_json::json!({"id": "inc-1"})).unwrap();
/// assert_eq!(row.topic, "nexus.crisis");
/// assert_eq!(row.key, "inc-1");
/// ```
pub fn record(
    event_type: EventType,
    subject: &str,
    data: impl Serialize,
) -> Result<NewEvent, EventError> {
    Ok(CloudEvent::new(event_type, subject, data)?.to_outbox())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structured_and_binary_forms_round_trip() {
        let ce = CloudEvent::new(EventType::IncidentReported, "inc-9", json!({"sev": 3})).unwrap();
        let row = ce.to_outbox();
        assert_eq!(row.topic, "nexus.crisis");
        assert_eq!(row.id, ce.id);
        let back = CloudEvent::from_json(row.payload.as_bytes()).unwrap();
        assert_eq!(back, ce);
        let v: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        assert_eq!(v["type"], "incident.reported");
        assert_eq!(v["source"], "/nexus/crisis");
        assert_eq!(v["specversion"], "1.0");

        let (h, body) = ce.to_binary();
        let names: Vec<_> = h.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_specversion",
                "ce_time",
                "ce_subject",
                "content-type"
            ]
        );
        let back =
            CloudEvent::from_kafka(h.iter().map(|(k, v)| (*k, v.as_bytes())), &body).unwrap();
        assert_eq!(back, ce);
        // Structured mode on Kafka.
        let back = CloudEvent::from_kafka(
            [("content-type", STRUCTURED_CONTENT_TYPE.as_bytes())],
            row.payload.as_bytes(),
        )
        .unwrap();
        assert_eq!(back, ce);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(CloudEvent::from_json(b"{").is_err());
        assert!(
            CloudEvent::from_json(br#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#)
                .is_err()
        );
        assert!(CloudEvent::from_kafka([("ce_id", &b"\xff"[..])], b"{}").is_err());
        assert!(CloudEvent::from_kafka([("ce_specversion", &b"1.0"[..])], b"{}").is_err());
    }
}
