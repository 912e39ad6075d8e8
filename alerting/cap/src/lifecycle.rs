//! Alert lifecycle: the `sender,identifier,sent` key, `references`, group listings, expiry.
//!
//! An `Update` or `Cancel` names the messages it supersedes in `references`, as
//! whitespace-separated `sender,identifier,sent` triples; the triple of an alert is its
//! [`Reference`] ([`Alert::reference`]). None of this reads a clock: `now` is passed in.

use std::fmt;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::codes::{CapVersion, MsgType};
use crate::datetime::{self, DateTime, Lexical};
use crate::error::ValueError;
use crate::model::Alert;

/// The `sender,identifier,sent` triple that names one CAP message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    /// The `sender` of the referenced message.
    pub sender: String,
    /// The `identifier` of the referenced message.
    pub identifier: String,
    /// The `sent` time of the referenced message.
    pub sent: DateTime,
}

impl fmt::Display for Reference {
    /// `sender,identifier,sent`, the form used in `references`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.sender, self.identifier, self.sent)
    }
}

/// Whether `text` is a valid `identifier` or `sender`: not empty, and no whitespace, commas or
/// the restricted characters `<` and `&`.
pub fn is_valid_id(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ',' | '<' | '&'))
}

/// Reads a `references` value into its triples (CAP 1.1/1.2 form).
///
/// ```
/// let refs = nexus_cap::parse_references(
///     "hsas@dhs.gov,43b080713727,2003-04-02T14:39:01-05:00 \
///      hsas@dhs.gov,43b080713728,2003-04-02T15:00:00-05:00").unwrap();
/// assert_eq!(refs.len(), 2);
/// assert_eq!(refs[0].identifier, "43b080713727");
/// assert_eq!(refs[1].to_string(), "hsas@dhs.gov,43b080713728,2003-04-02T15:00:00-05:00");
/// ```
pub fn parse_references(text: &str) -> Result<Vec<Reference>, ValueError> {
    parse_references_with(
        text,
        Lexical {
            fraction: true,
            zulu: false,
        },
    )
}

pub(crate) fn parse_references_for(
    text: &str,
    version: CapVersion,
) -> Result<Vec<Reference>, ValueError> {
    parse_references_with(text, Lexical::for_version(version))
}

fn parse_references_with(text: &str, rules: Lexical) -> Result<Vec<Reference>, ValueError> {
    text.split_whitespace()
        .enumerate()
        .map(|(i, item)| {
            let bad = |reason: String| ValueError::Reference {
                index: i + 1,
                value: item.to_owned(),
                reason,
            };
            let mut parts = item.split(',');
            let (Some(sender), Some(identifier), Some(sent), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected sender,identifier,sent".to_owned()));
            };
            if !is_valid_id(sender) {
                return Err(bad(
                    "the sender must not be empty or contain '<' or '&'".to_owned()
                ));
            }
            if !is_valid_id(identifier) {
                return Err(bad(
                    "the identifier must not be empty or contain '<' or '&'".to_owned(),
                ));
            }
            let sent = match datetime::parse(sent, rules) {
                Ok(sent) => sent,
                Err(ValueError::DateTime { reason, .. }) => {
                    return Err(bad(format!("sent '{sent}': {reason}")));
                }
                Err(other) => return Err(bad(other.to_string())),
            };
            Ok(Reference {
                sender: sender.to_owned(),
                identifier: identifier.to_owned(),
                sent,
            })
        })
        .collect()
}

/// Splits a CAP group listing (`addresses`, `incidents`): items separated by whitespace, an
/// item containing whitespace enclosed in double quotes.
///
/// ```
/// let items = nexus_cap::split_group(r#"ops@example.org "Fire Dept 3" 112"#).unwrap();
/// assert_eq!(items, ["ops@example.org", "Fire Dept 3", "112"]);
/// ```
pub fn split_group(text: &str) -> Result<Vec<String>, ValueError> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut pending = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                pending = true;
            }
            c if c.is_whitespace() && !quoted => {
                if pending {
                    items.push(std::mem::take(&mut current));
                    pending = false;
                }
            }
            c => {
                current.push(c);
                pending = true;
            }
        }
    }
    if quoted {
        return Err(ValueError::UnterminatedQuote);
    }
    if pending {
        items.push(current);
    }
    Ok(items)
}

impl Alert {
    /// This alert's own `sender,identifier,sent` triple, as others reference it.
    pub fn reference(&self) -> Reference {
        Reference {
            sender: self.sender.clone(),
            identifier: self.identifier.clone(),
            sent: self.sent,
        }
    }

    /// The triples in `references` (empty when there is none).
    pub fn referenced(&self) -> Result<Vec<Reference>, ValueError> {
        self.references
            .as_deref()
            .map_or(Ok(Vec::new()), parse_references)
    }

    /// Whether this alert is an `Update` or `Cancel` that names `earlier` in its references.
    pub fn supersedes(&self, earlier: &Alert) -> bool {
        matches!(self.msg_type, MsgType::Update | MsgType::Cancel)
            && self
                .referenced()
                .is_ok_and(|refs| refs.contains(&earlier.reference()))
    }

    /// When the whole alert stops being in effect: the latest `expires` of its info blocks,
    /// if every block has one. `None` when there is no info or some block never expires
    /// (the specification leaves that to each recipient's policy).
    pub fn expires_at(&self) -> Option<DateTime> {
        let mut latest: Option<DateTime> = None;
        for info in &self.info {
            let expires = info.expires?;
            latest = Some(latest.map_or(expires, |l| l.max(expires)));
        }
        latest
    }
}

/// Whether the alert is no longer in effect at `now`: every info block has an `expires` and
/// all of them are at or before `now`.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let doc = br#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
///   <identifier>W1</identifier><sender>w@example.org</sender>
///   <sent>2024-05-01T10:00:00-00:00</sent><status>Actual</status><msgType>Alert</msgType>
///   <scope>Public</scope>
///   <info><category>Met</category><event>Heat</event><urgency>Expected</urgency>
///     <severity>Moderate</severity><certainty>Likely</certainty>
///     <expires>2024-05-01T18:00:00-00:00</expires></info>
/// </alert>"#;
/// let alert = nexus_cap::parse(doc, &nexus_cap::Limits::default()).unwrap().alert;
/// assert!(!nexus_cap::is_expired(&alert, Utc.with_ymd_and_hms(2024, 5, 1, 17, 59, 59).unwrap()));
/// assert!(nexus_cap::is_expired(&alert, Utc.with_ymd_and_hms(2024, 5, 1, 18, 0, 0).unwrap()));
/// ```
pub fn is_expired(alert: &Alert, now: chrono::DateTime<Utc>) -> bool {
    alert.expires_at().is_some_and(|e| e.to_utc() <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_character_rule() {
        assert!(is_valid_id("KSTO1055887203"));
        assert!(is_valid_id("w-nws.webmaster@noaa.gov"));
        for bad in ["", "a b", "a,b", "a<b", "a&b", "a\tb"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn reference_errors_name_the_entry() {
        let err = parse_references("a,b,2003-04-02T14:39:01-05:00 a,b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "reference 2 'a,b': expected sender,identifier,sent"
        );
        let err = parse_references("a,b,2003-04-02T14:39:01Z").unwrap_err();
        assert_eq!(
            err.to_string(),
            "reference 1 'a,b,2003-04-02T14:39:01Z': sent '2003-04-02T14:39:01Z': the 'Z' time \
             zone designator is not allowed; write -00:00 for UTC"
        );
        let err = parse_references("a,b,c,d").unwrap_err();
        assert!(err.to_string().contains("expected sender,identifier,sent"));
        assert_eq!(parse_references("  ").unwrap(), vec![]);
    }

    #[test]
    fn strict_references_for_cap12() {
        assert!(parse_references_for("a,b,2003-04-02T14:39:01.5-05:00", CapVersion::V1_2).is_err());
        assert!(parse_references_for("a,b,2003-04-02T14:39:01.5-05:00", CapVersion::V1_1).is_ok());
    }

    #[test]
    fn groups_honour_quotes() {
        assert_eq!(split_group("").unwrap(), Vec::<String>::new());
        assert_eq!(split_group(" a  \"\" b ").unwrap(), ["a", "", "b"]);
        assert_eq!(
            split_group("\"a b").unwrap_err(),
            ValueError::UnterminatedQuote
        );
    }
}
