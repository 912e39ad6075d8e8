//! Reading an ATOM feed of alerts (RFC 4287), as national alert hubs publish them: each
//! entry's id, its `updated` time, its links, and — when the feed carries them, as ours and
//! many national feeds do — the CAP `identifier`, `sender` and `sent` of the alert it
//! announces, so a reader can skip alerts it already has without fetching them.
//!
//! The same safety rules as CAP parsing hold: the document is decoded from its declared
//! encoding, a DOCTYPE (and with it every entity declaration) is refused, only the five
//! predefined entities and character references are resolved, and size, depth and element
//! count are bounded by [`Limits`].

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesStart, Event};

use crate::error::ParseError;
use crate::xml::{Limits, decode, line_col};

/// The ATOM namespace.
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";

/// One `<link>` of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomLink {
    /// `href`, as written (possibly relative to the feed's URL).
    pub href: String,
    /// `rel`, if given (`alternate` when absent, per RFC 4287).
    pub rel: Option<String>,
    /// `type`, if given (`application/cap+xml` for a CAP document).
    pub media_type: Option<String>,
}

/// One `<entry>` of a feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtomEntry {
    /// `<id>`.
    pub id: String,
    /// `<updated>`, as written.
    pub updated: Option<String>,
    /// Every `<link>`.
    pub links: Vec<AtomLink>,
    /// `<cap:identifier>`, when the feed carries CAP summary elements.
    pub cap_identifier: Option<String>,
    /// `<cap:sender>`, likewise.
    pub cap_sender: Option<String>,
    /// `<cap:sent>`, likewise.
    pub cap_sent: Option<String>,
}

impl AtomEntry {
    /// Where the entry's CAP document is: the first link typed `…cap+xml`, else the first
    /// `alternate` link (or link without `rel`), else the id when it is an `http(s)` URL.
    ///
    /// ```
    /// let feed = br#"<feed xmlns="http://www.w3.org/2005/Atom"><id>f</id>
    ///   <entry><id>urn:x</id><link rel="self" href="/e/1"/>
    ///   <link rel="alternate" type="application/cap+xml" href="/cap/1.xml"/></entry></feed>"#;
    /// let entries = nexus_cap::read_atom(feed, &nexus_cap::Limits::default()).unwrap();
    /// assert_eq!(entries[0].cap_link(), Some("/cap/1.xml"));
    /// ```
    pub fn cap_link(&self) -> Option<&str> {
        let typed = self.links.iter().find(|l| {
            l.media_type
                .as_deref()
                .is_some_and(|t| t.to_ascii_lowercase().contains("cap+xml"))
        });
        let alternate = || {
            self.links
                .iter()
                .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        };
        typed
            .or_else(alternate)
            .map(|l| l.href.as_str())
            .or_else(|| {
                (self.id.starts_with("http://") || self.id.starts_with("https://"))
                    .then_some(self.id.as_str())
            })
    }
}

/// The entries of an ATOM feed, in document order.
///
/// Errors are the CAP parser's: [`ParseError::TooLarge`], [`ParseError::Doctype`],
/// [`ParseError::UndefinedEntity`], [`ParseError::TooDeep`], [`ParseError::TooManyElements`],
/// and [`ParseError::Xml`] for malformed XML or a root element other than ATOM's `<feed>`.
pub fn read_atom(bytes: &[u8], limits: &Limits) -> Result<Vec<AtomEntry>, ParseError> {
    if bytes.len() > limits.max_bytes {
        return Err(ParseError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let text = decode(bytes)?;
    let src: &str = &text;
    let mut reader = Reader::from_str(src);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.trim_text(false);

    let mut entries = Vec::new();
    let mut entry: Option<AtomEntry> = None;
    // Local names of the open elements.
    let mut open: Vec<String> = Vec::new();
    let mut elements = 0usize;
    let mut buf = String::new();
    let xml_error = |message: String, at: u64| ParseError::Xml {
        message,
        location: line_col(
            src,
            usize::try_from(at).unwrap_or(usize::MAX).min(src.len()),
        ),
    };
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| xml_error(e.to_string(), reader.error_position().max(pos)))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > limits.max_elements {
                    return Err(ParseError::TooManyElements {
                        limit: limits.max_elements,
                        location: line_col(src, usize::try_from(pos).unwrap_or(0)),
                    });
                }
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if open.is_empty() && local != "feed" {
                    return Err(xml_error(
                        format!("not an ATOM feed: root element is <{local}>"),
                        pos,
                    ));
                }
                if open.len() >= limits.max_depth {
                    return Err(ParseError::TooDeep {
                        limit: limits.max_depth,
                        location: line_col(src, usize::try_from(pos).unwrap_or(0)),
                    });
                }
                if open.len() == 1 && local == "entry" {
                    entry = Some(AtomEntry::default());
                }
                if open.len() == 2
                    && local == "link"
                    && let Some(en) = entry.as_mut()
                {
                    en.links.push(link(e, src, pos)?);
                }
                buf.clear();
                if !empty {
                    open.push(local);
                } else if open.len() == 1 && local == "entry" {
                    entries.extend(entry.take());
                }
            }
            Event::End(_) => {
                let Some(local) = open.pop() else {
                    return Err(xml_error("unexpected end tag".into(), pos));
                };
                if open.len() == 2
                    && let Some(en) = entry.as_mut()
                {
                    let value = Some(buf.trim().to_string());
                    match local.as_str() {
                        "id" => en.id = buf.trim().to_string(),
                        "updated" => en.updated = value,
                        "identifier" => en.cap_identifier = value,
                        "sender" => en.cap_sender = value,
                        "sent" => en.cap_sent = value,
                        _ => {}
                    }
                }
                if open.len() == 1 && local == "entry" {
                    entries.extend(entry.take());
                }
                buf.clear();
            }
            Event::Text(t) => {
                if open.len() == 3 && entry.is_some() {
                    let text = t
                        .unescape_with(resolve_xml_entity)
                        .map_err(|e| reader_error(e, src, usize::try_from(pos).unwrap_or(0)))?;
                    buf.push_str(&text);
                }
            }
            Event::CData(c) => {
                if open.len() == 3 && entry.is_some() {
                    buf.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::DocType(_) => {
                return Err(ParseError::Doctype {
                    location: line_col(src, usize::try_from(pos).unwrap_or(0)),
                });
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(xml_error(
            format!("end of document inside <{unclosed}>"),
            src.len() as u64,
        ));
    }
    if elements == 0 {
        return Err(xml_error(
            "document has no root element".into(),
            src.len() as u64,
        ));
    }
    Ok(entries)
}

fn reader_error(e: quick_xml::Error, src: &str, at: usize) -> ParseError {
    match e {
        quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(_, name)) => {
            ParseError::UndefinedEntity {
                name,
                location: line_col(src, at),
            }
        }
        other => ParseError::Xml {
            message: other.to_string(),
            location: line_col(src, at),
        },
    }
}

fn link(e: &BytesStart<'_>, src: &str, pos: u64) -> Result<AtomLink, ParseError> {
    let at = usize::try_from(pos).unwrap_or(0);
    let mut out = AtomLink {
        href: String::new(),
        rel: None,
        media_type: None,
    };
    for attr in e.attributes() {
        let attr = attr.map_err(|err| ParseError::Xml {
            message: err.to_string(),
            location: line_col(src, at),
        })?;
        let value: Cow<'_, str> = attr
            .unescape_value_with(resolve_xml_entity)
            .map_err(|err| reader_error(err, src, at))?;
        match attr.key.as_ref() {
            b"href" => out.href = value.trim().to_string(),
            b"rel" => out.rel = Some(value.trim().to_string()),
            b"type" => out.media_type = Some(value.trim().to_string()),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:cap="urn:oasis:names:tc:emergency:cap:1.2">
  <id>urn:feed</id>
  <title>Alerts &amp; warnings</title>
  <entry>
    <id>https://hub.example.org/cap/1.xml</id>
    <updated>2026-11-26T08:00:00Z</updated>
    <link rel="alternate" type="application/cap+xml" href="https://hub.example.org/cap/1.xml?a=1&amp;b=2"/>
    <cap:identifier>A-1</cap:identifier>
    <cap:sender>hub@example.org</cap:sender>
    <cap:sent>2026-11-26T09:00:00+01:00</cap:sent>
  </entry>
  <entry>
    <id>https://hub.example.org/cap/2.xml</id>
    <updated>2026-11-26T08:05:00Z</updated>
  </entry>
</feed>"#;

    #[test]
    fn entries_with_links_and_cap_summaries_are_read() {
        let entries = read_atom(FEED.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].cap_link(),
            Some("https://hub.example.org/cap/1.xml?a=1&b=2")
        );
        assert_eq!(entries[0].cap_identifier.as_deref(), Some("A-1"));
        assert_eq!(entries[0].cap_sender.as_deref(), Some("hub@example.org"));
        assert_eq!(
            entries[0].cap_sent.as_deref(),
            Some("2026-11-26T09:00:00+01:00")
        );
        assert_eq!(entries[0].updated.as_deref(), Some("2026-11-26T08:00:00Z"));
        // No link: the id is the CAP document's URL.
        assert_eq!(
            entries[1].cap_link(),
            Some("https://hub.example.org/cap/2.xml")
        );
    }

    #[test]
    fn our_own_feed_reads_back() {
        let alert = crate::parse(
            include_bytes!("../tests/data/thunderstorm_polygon.xml"),
            &Limits::default(),
        )
        .unwrap()
        .alert;
        let feed = crate::atom_feed(
            &crate::Feed {
                id: "urn:nexus:alerts",
                title: "t",
                updated: alert.sent,
                self_link: Some("/api/v1/alerts/feed.atom"),
                cap_elements: true,
            },
            &[crate::FeedEntry {
                alert: &alert,
                link: "/api/v1/alerts/abc",
            }],
        );
        let entries = read_atom(feed.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].cap_link(), Some("/api/v1/alerts/abc"));
        assert_eq!(
            entries[0].cap_identifier.as_deref(),
            Some(alert.identifier.as_str())
        );
        assert_eq!(
            entries[0].cap_sender.as_deref(),
            Some(alert.sender.as_str())
        );
    }

    #[test]
    fn hostile_and_foreign_documents_are_refused() {
        let dtd = r#"<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x "boom">]><feed xmlns="http://www.w3.org/2005/Atom"><entry><id>&x;</id></entry></feed>"#;
        assert!(matches!(
            read_atom(dtd.as_bytes(), &Limits::default()),
            Err(ParseError::Doctype { .. })
        ));
        let entity =
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>&x;</id></entry></feed>"#;
        assert!(matches!(
            read_atom(entity.as_bytes(), &Limits::default()),
            Err(ParseError::UndefinedEntity { .. })
        ));
        let rss = r#"<rss version="2.0"><channel/></rss>"#;
        let err = read_atom(rss.as_bytes(), &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("not an ATOM feed"), "{err}");
        let small = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            read_atom(FEED.as_bytes(), &small),
            Err(ParseError::TooLarge { .. })
        ));
        let unclosed = r#"<feed xmlns="http://www.w3.org/2005/Atom"><entry></feed>"#;
        assert!(read_atom(unclosed.as_bytes(), &Limits::default()).is_err());
    }
}
