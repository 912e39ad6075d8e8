//! The CAP data model: [`Alert`] → [`Info`] → [`Resource`] / [`Area`], and [`ValuePair`].
//!
//! Field names are the CAP element names in snake_case (`msgType` → `msg_type`); repeatable
//! elements are `Vec`s named like the element (`info`, `category`, `polygon`). Elements that are
//! optional in any CAP version are `Option`s, so a CAP 1.0 document (no `scope`, no `category`)
//! and a JSON alert both fit; validation enforces what each version requires. The serde form
//! is the JSON form of `docs/cap-json.md`.

use serde::{Deserialize, Serialize};

use crate::codes::{Category, Certainty, MsgType, ResponseType, Scope, Severity, Status, Urgency};
use crate::datetime::DateTime;
use crate::geometry::{Circle, Polygon};

/// `<alert>`: the message envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Unique id of this message, assigned by the sender (no spaces, commas, `<` or `&`).
    pub identifier: String,
    /// Globally unique id of the originator, e.g. based on a domain name (same character rules).
    pub sender: String,
    /// When the message was sent.
    pub sent: DateTime,
    /// How the message is to be handled (`Actual`, `Exercise`, `System`, `Test`, `Draft`).
    pub status: Status,
    /// What the message is (`Alert`, `Update`, `Cancel`, `Ack`, `Error`).
    pub msg_type: MsgType,
    /// CAP 1.0 only (removed in 1.1); dropped when converting to 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The particular source of the message (operator or device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Intended distribution; required from CAP 1.1 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Who may receive a `Restricted` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<String>,
    /// Space-delimited recipients of a `Private` message (quoted when they contain spaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<String>,
    /// User-defined flags or special codes for special handling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<String>,
    /// Text describing the purpose or significance of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Earlier messages referred to, as whitespace-separated `sender,identifier,sent` triples
    /// (see [`crate::parse_references`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// Space-delimited names of the incidents the message refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incidents: Option<String>,
    /// The information blocks, one per language or audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<Info>,
    /// XML signatures (elements of the `http://www.w3.org/2000/09/xmldsig#` namespace that end
    /// the alert), kept verbatim as XML text and written back unchanged; not verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
}

/// `<info>`: the event, its urgency, severity and certainty, what to do, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Info {
    /// RFC 3066 language tag; absent means `en-US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Categories of the event; at least one from CAP 1.1 on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<Category>,
    /// The type of event, as text.
    pub event: String,
    /// Recommended actions (CAP 1.1+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_type: Vec<ResponseType>,
    /// How soon to act.
    pub urgency: Urgency,
    /// How bad it is.
    pub severity: Severity,
    /// How sure it is.
    pub certainty: Certainty,
    /// The intended audience, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// System-specific codes for the event type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_code: Vec<ValuePair>,
    /// When the information becomes effective (absent: `sent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<DateTime>,
    /// Expected time of the beginning of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset: Option<DateTime>,
    /// When the information is no longer in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime>,
    /// Human-readable name of the issuing agency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// A brief headline (160 characters or fewer is recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    /// Extended description of the hazard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Recommended action, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Absolute URI of additional information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<String>,
    /// Contact for follow-up and confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// System-specific additional parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameter: Vec<ValuePair>,
    /// Supplemental files (images, audio, documents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<Resource>,
    /// The affected areas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub area: Vec<Area>,
}

/// `<resource>`: a file that supplements the info.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// What the resource is (e.g. "map", "photo").
    pub resource_desc: String,
    /// MIME type (RFC 2046); required in CAP 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Approximate size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Where to get it (absolute URI, or relative when `deref_uri` holds the content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The content itself, base64 (CAP 1.1+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deref_uri: Option<String>,
    /// SHA-1 digest of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// `<area>`: a described place, with optional shapes and codes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    /// Text description of the area.
    pub area_desc: String,
    /// Polygons delineating the area.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub polygon: Vec<Polygon>,
    /// Circles delineating the area.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub circle: Vec<Circle>,
    /// Geographic codes (e.g. `SAME` = `006109`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub geocode: Vec<ValuePair>,
    /// Altitude, or minimum altitude with `ceiling`, in feet above mean sea level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    /// Maximum altitude in feet; only together with `altitude`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<f64>,
}

/// A `valueName`/`value` pair (`eventCode`, `parameter`, `geocode`).
///
/// CAP 1.0 writes these as one text `valueName=value`; they are read into the same type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuePair {
    /// The code system (e.g. `SAME`, `FIPS6`, `UGC`).
    pub value_name: String,
    /// The value in that system.
    pub value: String,
}

impl ValuePair {
    /// A pair from its two parts.
    pub fn new(value_name: impl Into<String>, value: impl Into<String>) -> Self {
        ValuePair {
            value_name: value_name.into(),
            value: value.into(),
        }
    }
}

impl Alert {
    /// Every area of every info block.
    pub fn areas(&self) -> impl Iterator<Item = &Area> {
        self.info.iter().flat_map(|i| i.area.iter())
    }
}

impl Info {
    /// The language, with the CAP default `en-US` when absent.
    pub fn language_or_default(&self) -> &str {
        self.language.as_deref().unwrap_or("en-US")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_omits_absent_fields_and_rejects_unknown_ones() {
        let json = r#"{
            "identifier": "X1", "sender": "s@example.org", "sent": "2020-01-01T00:00:00-00:00",
            "status": "Actual", "msg_type": "Alert", "scope": "Public",
            "info": [{"category": ["Met"], "event": "Storm", "urgency": "Expected",
                      "severity": "Severe", "certainty": "Likely",
                      "area": [{"area_desc": "Coast", "circle": ["1,2 3"]}]}]
        }"#;
        let alert: Alert = serde_json::from_str(json).unwrap();
        assert_eq!(alert.info[0].area[0].circle[0].radius_km, 3.0);
        assert_eq!(alert.info[0].language_or_default(), "en-US");
        let out = serde_json::to_string(&alert).unwrap();
        assert!(!out.contains("null"), "{out}");
        assert!(!out.contains("signatures"), "{out}");
        let back: Alert = serde_json::from_str(&out).unwrap();
        assert_eq!(back, alert);
        let bad = json.replace("\"scope\"", "\"scoop\"");
        assert!(serde_json::from_str::<Alert>(&bad).is_err());
    }
}
