//! CloudEvents written by the API into the store's outbox, built from the catalogue of
//! [`nexus_events`].

use nexus_events::{CloudEvent, EventType};
use nexus_store::NewEvent;
use serde::Serialize;

pub use nexus_events::record;

/// Builds the outbox row for an event of `domain` (`users`, `crisis`, …) about `subject`.
///
/// Prefer [`nexus_events::record`] with a typed [`EventType`]; this string form stays for
/// existing call sites. A type missing from the catalogue is still recorded (with `domain`
/// as given) and logged, so a typo shows up in the logs rather than losing the event.
pub fn event<T: Serialize>(domain: &str, event_type: &str, subject: &str, data: T) -> NewEvent {
    let data = serde_json::to_value(data).unwrap_or_default();
    if let Ok(kind) = event_type.parse::<EventType>() {
        debug_assert_eq!(
            kind.domain().as_str(),
            domain,
            "{event_type} is not a {domain} event"
        );
        if let Ok(row) = record(kind, subject, &data) {
            return row;
        }
    }
    tracing::warn!(event_type, "event type missing from the catalogue");
    let mut ce = match CloudEvent::new(EventType::AuditLogged, subject, &data) {
        Ok(ce) => ce,
        // `data` is already a JSON value: converting it again cannot fail.
        Err(_) => return NewEvent::new(format!("nexus.{domain}"), subject, event_type, "{}"),
    };
    ce.event_type = event_type.to_string();
    ce.source = format!("/nexus/{domain}");
    let mut row = ce.to_outbox();
    row.topic = format!("nexus.{domain}");
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogued_and_uncatalogued_types_both_make_cloudevents() {
        let row = event(
            "users",
            "user.updated",
            "u1",
            serde_json::json!({"id": "u1"}),
        );
        assert_eq!(row.topic, "nexus.users");
        assert_eq!(row.key, "u1");
        let ce = CloudEvent::from_json(row.payload.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ce.source, "/nexus/users");
        assert_eq!(ce.id, row.id);
        let row = event("crisis", "incident.exploded", "i1", 1);
        assert_eq!(row.topic, "nexus.crisis");
        assert_eq!(row.event_type, "incident.exploded");
    }
}
