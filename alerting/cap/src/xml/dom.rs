//! A small, safe element tree over the decoded text.
//!
//! This is the only place that talks to the XML reader. It refuses anything that could make a
//! parser do more than read: a DOCTYPE (and with it every entity declaration, external entity
//! and expansion bomb), references to undefined entities, and documents deeper or bigger than
//! the limits. Names, text and offsets borrow from the source text.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::errors::Error as XmlError;
use quick_xml::escape::{EscapeError, resolve_xml_entity};
use quick_xml::events::{BytesStart, Event};

use crate::codes::CapVersion;
use crate::error::{Location, ParseError};
use crate::xml::{Limits, line_col};

/// The XML Signature namespace.
pub(crate) const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// The namespace of an element, as far as CAP cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    Cap(CapVersion),
    Dsig,
    Other,
    None,
}

#[derive(Debug)]
pub(crate) struct Node<'a> {
    /// The qualified name as written (`cap:info`).
    pub(crate) qname: &'a str,
    /// The local part (`info`).
    pub(crate) local: &'a str,
    pub(crate) ns: Ns,
    /// Byte offset of `<` and just past the end of the element.
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) loc: Location,
    /// Character data directly inside the element, unescaped and concatenated.
    pub(crate) text: Cow<'a, str>,
    pub(crate) children: Vec<usize>,
    /// Unprefixed attributes other than `xmlns` (CAP elements have none).
    pub(crate) attrs: Vec<String>,
    /// Namespace bindings declared on this element (prefix, URI; `""` is the default).
    pub(crate) decls: Vec<(String, String)>,
}

#[derive(Debug)]
pub(crate) struct Doc<'a> {
    pub(crate) src: &'a str,
    /// Elements in document order; `nodes[0]` is the root.
    pub(crate) nodes: Vec<Node<'a>>,
    /// The namespace URI of the root element.
    pub(crate) root_ns: Option<String>,
}

/// Turns offsets into line and column in one forward pass over the text.
struct LineCursor<'a> {
    src: &'a [u8],
    offset: usize,
    line: u32,
    column: u32,
}

impl LineCursor<'_> {
    fn advance(&mut self, to: usize) -> Location {
        let to = to.min(self.src.len());
        if to > self.offset {
            // Counting loops without early exit, so the compiler can vectorise them.
            let span = &self.src[self.offset..to];
            let newlines = span.iter().filter(|&&b| b == b'\n').count();
            let chars = |bytes: &[u8]| bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count();
            let tail = match span.iter().rposition(|&b| b == b'\n') {
                Some(last) => {
                    self.line = self.line.saturating_add(to_u32(newlines));
                    self.column = 1;
                    &span[last + 1..]
                }
                None => span,
            };
            self.column = self.column.saturating_add(to_u32(chars(tail)));
            self.offset = to;
        }
        Location {
            line: self.line,
            column: self.column,
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A namespace binding, with what it means to CAP worked out once.
#[derive(Debug, Clone)]
struct Binding {
    prefix: String,
    uri: String,
    ns: Ns,
}

impl Binding {
    fn new(prefix: String, uri: String) -> Self {
        let ns = match uri.as_str() {
            "" => Ns::None,
            DSIG_NS => Ns::Dsig,
            u => CapVersion::from_namespace(u).map_or(Ns::Other, Ns::Cap),
        };
        Binding { prefix, uri, ns }
    }
}

struct Builder<'a> {
    src: &'a str,
    limits: &'a Limits,
    nodes: Vec<Node<'a>>,
    open: Vec<usize>,
    /// In-scope namespace bindings; prefix `""` is the default namespace.
    bindings: Vec<Binding>,
    /// `bindings.len()` when each open element started.
    marks: Vec<usize>,
    cursor: LineCursor<'a>,
    root_ns: Option<String>,
    root_closed: bool,
}

pub(crate) fn build<'a>(src: &'a str, limits: &'a Limits) -> Result<Doc<'a>, ParseError> {
    check_chars(src)?;
    let mut reader = Reader::from_str(src);
    let config = reader.config_mut();
    config.check_comments = true;
    config.check_end_names = true;
    config.trim_text(false);
    config.expand_empty_elements = false;

    let mut b = Builder {
        src,
        limits,
        nodes: Vec::with_capacity(64),
        open: Vec::with_capacity(8),
        bindings: Vec::new(),
        marks: Vec::new(),
        cursor: LineCursor {
            src: src.as_bytes(),
            offset: 0,
            line: 1,
            column: 1,
        },
        root_ns: None,
        root_closed: false,
    };

    loop {
        let pos = to_usize(reader.buffer_position());
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                return Err(b.reader_error(e, to_usize(reader.error_position()).max(pos), None));
            }
        };
        match event {
            Event::Start(e) => b.open(&e, pos)?,
            Event::Empty(e) => {
                // An empty element closes where its tag ends.
                b.open(&e, pos)?;
                b.close(to_usize(reader.buffer_position()));
            }
            Event::End(_) => b.close(to_usize(reader.buffer_position())),
            Event::Text(t) => {
                if b.open.is_empty() {
                    if !t.iter().all(u8::is_ascii_whitespace) {
                        return Err(b.xml_error("text outside the root element", pos));
                    }
                    continue;
                }
                // Only the five XML entities, whatever features other crates turn on.
                let text = t
                    .unescape_with(resolve_xml_entity)
                    .map_err(|e| b.reader_error(e, pos, Some(pos)))?;
                if let Cow::Owned(expanded) = &text
                    && let Some(c) = expanded.chars().find(|c| forbidden(*c))
                {
                    let message = format!(
                        "character reference to U+{:04X} is not allowed in XML",
                        u32::from(c)
                    );
                    return Err(b.xml_error(&message, pos));
                }
                b.push_text(text);
            }
            Event::CData(c) => {
                if b.open.is_empty() {
                    return Err(b.xml_error("CDATA outside the root element", pos));
                }
                let text = c
                    .decode()
                    .map_err(|e| b.reader_error(e.into(), pos, None))?;
                b.push_text(text);
            }
            Event::DocType(_) => {
                return Err(ParseError::Doctype {
                    location: line_col(src, pos),
                });
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }

    if let Some(&unclosed) = b.open.last() {
        let name = b.nodes[unclosed].qname;
        return Err(b.xml_error(&format!("end of document inside <{name}>"), src.len()));
    }
    if b.nodes.is_empty() {
        return Err(b.xml_error("document has no root element", src.len()));
    }
    Ok(Doc {
        src,
        nodes: b.nodes,
        root_ns: b.root_ns,
    })
}

/// Refuses characters XML 1.0 does not allow anywhere: C0 controls other than tab, line
/// feed and carriage return, and U+FFFE / U+FFFF.
fn check_chars(src: &str) -> Result<(), ParseError> {
    let bytes = src.as_bytes();
    // Fast pass in blocks (vectorisable: no early exit inside a block). A block is looked at
    // closely only if it has a control byte or 0xEF, the lead byte of U+FFFE and U+FFFF.
    let suspect = |b: u8| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) | (b == 0xEF);
    for (n, block) in bytes.chunks(64).enumerate() {
        if !block.iter().fold(false, |acc, &b| acc | suspect(b)) {
            continue;
        }
        let start = n * 64;
        for (i, _) in block.iter().enumerate() {
            let at = start + i;
            let Some(c) = src.get(at..).and_then(|rest| rest.chars().next()) else {
                continue;
            };
            if forbidden(c) {
                return Err(ParseError::Xml {
                    message: format!("character U+{:04X} is not allowed in XML", u32::from(c)),
                    location: line_col(src, at),
                });
            }
        }
    }
    Ok(())
}

fn forbidden(c: char) -> bool {
    (c < '\u{20}' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
}

fn to_usize(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

impl<'a> Builder<'a> {
    fn open(&mut self, e: &BytesStart<'_>, pos: usize) -> Result<(), ParseError> {
        if self.root_closed {
            return Err(self.xml_error("a second root element", pos));
        }
        if self.open.len() >= self.limits.max_depth {
            return Err(ParseError::TooDeep {
                limit: self.limits.max_depth,
                location: line_col(self.src, pos),
            });
        }
        if self.nodes.len() >= self.limits.max_elements {
            return Err(ParseError::TooManyElements {
                limit: self.limits.max_elements,
                location: line_col(self.src, pos),
            });
        }
        let loc = self.cursor.advance(pos);
        // The reader stands on `<` when a tag starts, so the name follows it in the text.
        let name_len = e.name().as_ref().len();
        let qname = self
            .src
            .get(pos + 1..pos + 1 + name_len)
            .unwrap_or_default();

        let mark = self.bindings.len();
        self.marks.push(mark);
        let mut attrs = Vec::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|err| self.reader_error(err.into(), pos, None))?;
            let value = attr
                .unescape_value_with(resolve_xml_entity)
                .map_err(|err| self.reader_error(err, pos, None))?;
            let key = attr.key.as_ref();
            if key == b"xmlns" {
                self.bindings
                    .push(Binding::new(String::new(), value.into_owned()));
            } else if let Some(prefix) = key.strip_prefix(b"xmlns:") {
                let prefix = String::from_utf8_lossy(prefix).into_owned();
                self.bindings.push(Binding::new(prefix, value.into_owned()));
            } else if !key.contains(&b':') {
                attrs.push(String::from_utf8_lossy(key).into_owned());
            }
        }

        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (p, l),
            None => ("", qname),
        };
        // Compare lengths first: nearly every lookup is for the default namespace.
        let binding = self.bindings.iter().rev().find(|b| {
            if prefix.is_empty() {
                b.prefix.is_empty()
            } else {
                b.prefix == prefix
            }
        });
        let ns = match binding {
            Some(b) => b.ns,
            None if prefix.is_empty() || prefix == "xml" => Ns::None,
            None => {
                return Err(
                    self.xml_error(&format!("namespace prefix '{prefix}' is not declared"), pos)
                );
            }
        };
        if self.nodes.is_empty() {
            self.root_ns = binding.map(|b| b.uri.clone()).filter(|u| !u.is_empty());
        }

        let decls = self.bindings[mark..]
            .iter()
            .map(|b| (b.prefix.clone(), b.uri.clone()))
            .collect();
        let index = self.nodes.len();
        if let Some(&parent) = self.open.last() {
            self.nodes[parent].children.push(index);
        }
        self.nodes.push(Node {
            qname,
            local,
            ns,
            start: pos,
            end: pos,
            loc,
            text: Cow::Borrowed(""),
            children: Vec::new(),
            attrs,
            decls,
        });
        self.open.push(index);
        Ok(())
    }

    fn close(&mut self, end: usize) {
        if let Some(index) = self.open.pop() {
            self.nodes[index].end = end;
        }
        if let Some(mark) = self.marks.pop() {
            self.bindings.truncate(mark);
        }
        if self.open.is_empty() {
            self.root_closed = true;
        }
    }

    fn push_text(&mut self, piece: Cow<'a, str>) {
        if let Some(&index) = self.open.last() {
            let text = &mut self.nodes[index].text;
            if text.is_empty() {
                *text = piece;
            } else {
                text.to_mut().push_str(&piece);
            }
        }
    }

    fn xml_error(&self, message: &str, offset: usize) -> ParseError {
        ParseError::Xml {
            message: message.to_owned(),
            location: line_col(self.src, offset),
        }
    }

    /// Maps a reader error. `text_at` is the offset of the character data the error is in,
    /// when the error carries a range inside it; otherwise `at` is used.
    fn reader_error(&self, e: XmlError, at: usize, text_at: Option<usize>) -> ParseError {
        let inside = |start: usize| text_at.map_or(at, |t| t + start);
        match e {
            XmlError::Escape(EscapeError::UnrecognizedEntity(range, name)) => {
                // The range starts after the '&'.
                let location = line_col(self.src, inside(range.start.saturating_sub(1)));
                ParseError::UndefinedEntity { name, location }
            }
            XmlError::Escape(EscapeError::UnterminatedEntity(range)) => self.xml_error(
                "'&' must start an entity reference ending with ';' (write &amp; for a literal '&')",
                inside(range.start),
            ),
            other => self.xml_error(&other.to_string(), at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_ok(src: &str) -> Doc<'_> {
        // Leaked so the borrow outlives the helper; tests only.
        let limits: &'static Limits = Box::leak(Box::new(Limits::default()));
        build(src, limits).unwrap()
    }

    fn build_err(src: &str) -> ParseError {
        build(src, &Limits::default()).unwrap_err()
    }

    #[test]
    fn tree_offsets_and_namespaces() {
        let src = "<?xml version=\"1.0\"?>\n<a xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n  <b>x &amp; y<![CDATA[<z>]]></b><c/>\n</a>";
        let doc = build_ok(src);
        assert_eq!(doc.nodes.len(), 3);
        assert_eq!(doc.nodes[0].ns, Ns::Cap(CapVersion::V1_2));
        assert_eq!(doc.nodes[1].text, "x & y<z>");
        assert_eq!(doc.nodes[1].loc, Location { line: 3, column: 3 });
        assert_eq!(&src[doc.nodes[2].start..doc.nodes[2].end], "<c/>");
        assert_eq!(
            &src[doc.nodes[1].start..doc.nodes[1].end],
            "<b>x &amp; y<![CDATA[<z>]]></b>"
        );
    }

    #[test]
    fn prefixed_names_resolve() {
        let doc = build_ok(
            "<cap:alert xmlns:cap=\"urn:oasis:names:tc:emergency:cap:1.1\"><ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/></cap:alert>",
        );
        assert_eq!(doc.nodes[0].local, "alert");
        assert_eq!(doc.nodes[0].ns, Ns::Cap(CapVersion::V1_1));
        assert_eq!(doc.nodes[1].ns, Ns::Dsig);
        assert!(matches!(build_err("<p:a/>"), ParseError::Xml { .. }));
    }

    #[test]
    fn doctype_is_refused_before_anything_is_expanded() {
        let err = build_err("<?xml version=\"1.0\"?>\n<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>");
        assert_eq!(
            err,
            ParseError::Doctype {
                location: Location { line: 2, column: 1 }
            }
        );
    }

    #[test]
    fn undefined_entities_are_refused() {
        let err = build_err("<a>\n  <b>x &nbsp;</b></a>");
        assert_eq!(
            err,
            ParseError::UndefinedEntity {
                name: "nbsp".into(),
                location: Location { line: 2, column: 8 }
            }
        );
        assert!(matches!(
            build_err("<a b=\"&ext;\"/>"),
            ParseError::UndefinedEntity { .. }
        ));
    }

    #[test]
    fn malformed_documents_are_refused() {
        for src in [
            "<a>\u{1}</a>",
            "<a>&#1;</a>",
            "<a>&#xFFFE;</a>",
            "<a>\u{FFFF}</a>",
            "",
            "   ",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "x<a/>",
            "<a>&amp</a>",
            "<a><!-- -- --></a>",
            "<a x='1' x='2'/>",
        ] {
            assert!(matches!(build_err(src), ParseError::Xml { .. }), "{src:?}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let err = build("<a><b><c><d/></c></b></a>", &limits).unwrap_err();
        assert!(matches!(err, ParseError::TooDeep { limit: 3, .. }));
        let limits = Limits {
            max_elements: 2,
            ..Limits::default()
        };
        let err = build("<a><b/><c/></a>", &limits).unwrap_err();
        assert!(matches!(err, ParseError::TooManyElements { limit: 2, .. }));
    }

    #[test]
    fn columns_count_characters() {
        let doc = build_ok("<a>\n  éé<b/></a>");
        assert_eq!(doc.nodes[1].loc, Location { line: 2, column: 5 });
    }
}
