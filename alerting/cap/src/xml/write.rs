//! [`Alert`] → CAP XML text.

use std::fmt::Write as _;

use crate::codes::CapVersion;
use crate::model::{Alert, Area, Info, Resource, ValuePair};

/// Writes the alert as a CAP 1.2 document (UTF-8, indented, namespace
/// `urn:oasis:names:tc:emergency:cap:1.2`).
///
/// Parsing the output gives back an equal [`Alert`]. Signatures are written back verbatim as
/// the last children of `<alert>` (a signature made over other bytes will not verify after a
/// rewrite; forward the original bytes when the signature matters).
pub fn to_xml(alert: &Alert) -> String {
    to_xml_version(alert, CapVersion::V1_2)
}

/// Writes the alert in the syntax of `version`: its namespace, `name=value` pairs in CAP 1.0,
/// `<password>` only in 1.0, `<responseType>` and `<derefUri>` only from 1.1 on. Fields the
/// version cannot carry are left out; validate with [`crate::validate_version`] first to hear
/// about them.
pub fn to_xml_version(alert: &Alert, version: CapVersion) -> String {
    let mut w = Writer {
        out: String::with_capacity(2048),
        version,
    };
    w.out
        .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(w.out, "<alert xmlns=\"{}\">", version.namespace());
    w.alert(alert);
    w.out.push_str("</alert>\n");
    w.out
}

struct Writer {
    out: String,
    version: CapVersion,
}

impl Writer {
    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    fn element(&mut self, depth: usize, name: &str, text: &str) {
        self.indent(depth);
        let _ = write!(self.out, "<{name}>");
        escape_into(&mut self.out, text);
        let _ = writeln!(self.out, "</{name}>");
    }

    fn optional(&mut self, depth: usize, name: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.element(depth, name, text);
        }
    }

    fn open(&mut self, depth: usize, name: &str) {
        self.indent(depth);
        let _ = writeln!(self.out, "<{name}>");
    }

    fn close(&mut self, depth: usize, name: &str) {
        self.indent(depth);
        let _ = writeln!(self.out, "</{name}>");
    }

    fn alert(&mut self, a: &Alert) {
        self.element(1, "identifier", &a.identifier);
        self.element(1, "sender", &a.sender);
        self.element(1, "sent", &a.sent.to_string());
        self.element(1, "status", a.status.as_str());
        self.element(1, "msgType", a.msg_type.as_str());
        if self.version == CapVersion::V1_0 {
            self.optional(1, "password", a.password.as_deref());
        }
        self.optional(1, "source", a.source.as_deref());
        self.optional(1, "scope", a.scope.map(|s| s.as_str()));
        self.optional(1, "restriction", a.restriction.as_deref());
        self.optional(1, "addresses", a.addresses.as_deref());
        for code in &a.code {
            self.element(1, "code", code);
        }
        self.optional(1, "note", a.note.as_deref());
        self.optional(1, "references", a.references.as_deref());
        self.optional(1, "incidents", a.incidents.as_deref());
        for info in &a.info {
            self.info(info);
        }
        for signature in &a.signatures {
            self.indent(1);
            self.out.push_str(signature.trim());
            self.out.push('\n');
        }
    }

    fn info(&mut self, i: &Info) {
        self.open(1, "info");
        self.optional(2, "language", i.language.as_deref());
        for c in &i.category {
            self.element(2, "category", c.as_str());
        }
        self.element(2, "event", &i.event);
        if self.version != CapVersion::V1_0 {
            for r in &i.response_type {
                self.element(2, "responseType", r.as_str());
            }
        }
        self.element(2, "urgency", i.urgency.as_str());
        self.element(2, "severity", i.severity.as_str());
        self.element(2, "certainty", i.certainty.as_str());
        self.optional(2, "audience", i.audience.as_deref());
        for pair in &i.event_code {
            self.pair(2, "eventCode", pair);
        }
        self.optional(
            2,
            "effective",
            i.effective.map(|d| d.to_string()).as_deref(),
        );
        self.optional(2, "onset", i.onset.map(|d| d.to_string()).as_deref());
        self.optional(2, "expires", i.expires.map(|d| d.to_string()).as_deref());
        self.optional(2, "senderName", i.sender_name.as_deref());
        self.optional(2, "headline", i.headline.as_deref());
        self.optional(2, "description", i.description.as_deref());
        self.optional(2, "instruction", i.instruction.as_deref());
        self.optional(2, "web", i.web.as_deref());
        self.optional(2, "contact", i.contact.as_deref());
        for pair in &i.parameter {
            self.pair(2, "parameter", pair);
        }
        for r in &i.resource {
            self.resource(r);
        }
        for a in &i.area {
            self.area(a);
        }
        self.close(1, "info");
    }

    fn resource(&mut self, r: &Resource) {
        self.open(2, "resource");
        self.element(3, "resourceDesc", &r.resource_desc);
        self.optional(3, "mimeType", r.mime_type.as_deref());
        self.optional(3, "size", r.size.map(|s| s.to_string()).as_deref());
        self.optional(3, "uri", r.uri.as_deref());
        if self.version != CapVersion::V1_0 {
            self.optional(3, "derefUri", r.deref_uri.as_deref());
        }
        self.optional(3, "digest", r.digest.as_deref());
        self.close(2, "resource");
    }

    fn area(&mut self, a: &Area) {
        self.open(2, "area");
        self.element(3, "areaDesc", &a.area_desc);
        for p in &a.polygon {
            self.element(3, "polygon", &p.to_string());
        }
        for c in &a.circle {
            self.element(3, "circle", &c.to_string());
        }
        for g in &a.geocode {
            self.pair(3, "geocode", g);
        }
        self.optional(3, "altitude", a.altitude.map(|v| v.to_string()).as_deref());
        self.optional(3, "ceiling", a.ceiling.map(|v| v.to_string()).as_deref());
        self.close(2, "area");
    }

    fn pair(&mut self, depth: usize, name: &str, pair: &ValuePair) {
        if self.version == CapVersion::V1_0 {
            self.element(depth, name, &format!("{}={}", pair.value_name, pair.value));
            return;
        }
        self.open(depth, name);
        self.element(depth + 1, "valueName", &pair.value_name);
        self.element(depth + 1, "value", &pair.value);
        self.close(depth, name);
    }
}

/// Escapes character data. `\r` is written as a character reference so it survives the XML
/// end-of-line normalisation of other readers; characters XML 1.0 cannot carry at all become
/// U+FFFD.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_carriage_returns() {
        let mut s = String::new();
        escape_into(&mut s, "a<b & c>\"d\"\r\n\u{1}");
        assert_eq!(s, "a&lt;b &amp; c&gt;&quot;d&quot;&#13;\n\u{FFFD}");
    }
}
