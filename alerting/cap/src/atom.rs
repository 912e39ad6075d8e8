//! An ATOM feed of alerts, each entry linking its CAP document, as public alert hubs publish
//! them. Pure string generation: the caller says when the feed was updated and where each
//! alert's CAP XML lives.

use std::fmt::Write as _;

use chrono::SecondsFormat;

use crate::datetime::DateTime;
use crate::model::Alert;
use crate::xml::escape_into;

/// The `cap:` namespace used for the optional per-entry CAP elements.
const CAP_NS: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// The feed-level fields.
#[derive(Debug, Clone, Copy)]
pub struct Feed<'a> {
    /// The feed's permanent IRI (`<id>`), e.g. its own URL.
    pub id: &'a str,
    /// Human-readable title.
    pub title: &'a str,
    /// When the feed last changed (the caller's clock; this crate reads none).
    pub updated: DateTime,
    /// The feed's own URL (`<link rel="self">`), if any.
    pub self_link: Option<&'a str>,
    /// Whether entries carry `cap:` summary elements (event, status, msgType, urgency,
    /// severity, certainty, effective, expires, areaDesc) as many national feeds do.
    pub cap_elements: bool,
}

/// One alert in the feed and the URL of its CAP XML.
#[derive(Debug, Clone, Copy)]
pub struct FeedEntry<'a> {
    /// The alert.
    pub alert: &'a Alert,
    /// Where its CAP XML can be fetched; also used as the entry `<id>`.
    pub link: &'a str,
}

/// Writes an ATOM 1.0 feed (RFC 4287) of the given alerts.
///
/// Each entry's title is the first info's headline (else its event, else the identifier),
/// its summary the first info's description (else headline), its `updated` the alert's
/// `sent`, its author the first `senderName` (else the sender), and its alternate link the
/// CAP XML (`type="application/cap+xml"`).
///
/// ```
/// # let alert = nexus_cap::parse(include_bytes!("../tests/data/thunderstorm_polygon.xml"),
/// #     &nexus_cap::Limits::default()).unwrap().alert;
/// let feed = nexus_cap::Feed {
///     id: "https://nexus.example.org/api/v1/alerts/feed.atom",
///     title: "Nexus active alerts",
///     updated: alert.sent,
///     self_link: Some("https://nexus.example.org/api/v1/alerts/feed.atom"),
///     cap_elements: true,
/// };
/// let entries = [nexus_cap::FeedEntry { alert: &alert, link: "https://nexus.example.org/a/1" }];
/// let xml = nexus_cap::atom_feed(&feed, &entries);
/// assert!(xml.contains("<link rel=\"alternate\" type=\"application/cap+xml\""));
/// assert!(xml.contains("<cap:severity>Severe</cap:severity>"));
/// ```
pub fn atom_feed(feed: &Feed<'_>, entries: &[FeedEntry<'_>]) -> String {
    let mut out = String::with_capacity(512 + entries.len() * 1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\"");
    if feed.cap_elements {
        let _ = write!(out, " xmlns:cap=\"{CAP_NS}\"");
    }
    out.push_str(">\n");
    text_element(&mut out, 1, "id", feed.id);
    text_element(&mut out, 1, "title", feed.title);
    text_element(&mut out, 1, "updated", &rfc3339(feed.updated));
    if let Some(link) = feed.self_link {
        out.push_str("  <link rel=\"self\" type=\"application/atom+xml\" href=\"");
        escape_into(&mut out, link);
        out.push_str("\"/>\n");
    }
    for entry in entries {
        write_entry(&mut out, feed, entry);
    }
    out.push_str("</feed>\n");
    out
}

fn write_entry(out: &mut String, feed: &Feed<'_>, entry: &FeedEntry<'_>) {
    let alert = entry.alert;
    let info = alert.info.first();
    let title = info
        .and_then(|i| i.headline.as_deref().or(Some(i.event.as_str())))
        .filter(|t| !t.is_empty())
        .unwrap_or(&alert.identifier);
    out.push_str("  <entry>\n");
    text_element(out, 2, "id", entry.link);
    text_element(out, 2, "title", title);
    text_element(out, 2, "updated", &rfc3339(alert.sent));
    out.push_str("    <author>\n");
    let author = info
        .and_then(|i| i.sender_name.as_deref())
        .unwrap_or(&alert.sender);
    text_element(out, 3, "name", author);
    out.push_str("    </author>\n");
    out.push_str("    <link rel=\"alternate\" type=\"application/cap+xml\" href=\"");
    escape_into(out, entry.link);
    out.push_str("\"/>\n");
    if let Some(summary) = info.and_then(|i| i.description.as_deref().or(i.headline.as_deref())) {
        text_element(out, 2, "summary", summary);
    }
    if feed.cap_elements {
        text_element(out, 2, "cap:identifier", &alert.identifier);
        text_element(out, 2, "cap:sender", &alert.sender);
        text_element(out, 2, "cap:sent", &alert.sent.to_string());
        text_element(out, 2, "cap:status", alert.status.as_str());
        text_element(out, 2, "cap:msgType", alert.msg_type.as_str());
        if let Some(i) = info {
            text_element(out, 2, "cap:event", &i.event);
            text_element(out, 2, "cap:urgency", i.urgency.as_str());
            text_element(out, 2, "cap:severity", i.severity.as_str());
            text_element(out, 2, "cap:certainty", i.certainty.as_str());
            if let Some(t) = i.effective {
                text_element(out, 2, "cap:effective", &t.to_string());
            }
            if let Some(t) = i.expires {
                text_element(out, 2, "cap:expires", &t.to_string());
            }
            let areas: Vec<&str> = i.area.iter().map(|a| a.area_desc.as_str()).collect();
            if !areas.is_empty() {
                text_element(out, 2, "cap:areaDesc", &areas.join("; "));
            }
        }
    }
    out.push_str("  </entry>\n");
}

fn text_element(out: &mut String, depth: usize, name: &str, text: &str) {
    for _ in 0..depth {
        out.push_str("  ");
    }
    let _ = write!(out, "<{name}>");
    escape_into(out, text);
    let _ = writeln!(out, "</{name}>");
}

/// ATOM dates are RFC 3339; written in UTC with `Z`.
fn rfc3339(t: DateTime) -> String {
    t.to_utc().to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        let t: DateTime = "2003-06-17T14:57:00-07:00".parse().unwrap();
        assert_eq!(rfc3339(t), "2003-06-17T21:57:00Z");
        let _: chrono::DateTime<chrono::Utc> = t.to_utc();
    }
}
