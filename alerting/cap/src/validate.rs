//! The specification's rules that a schema cannot express, per CAP version.
//!
//! [`validate`] applies the CAP 1.2 rules to an [`Alert`] however it was made (XML, JSON, code);
//! [`validate_version`] applies an older version's. Each problem is a [`Diagnostic`] with the
//! path of the element concerned; [`crate::Parsed::validate`] and [`crate::check`] add the line
//! and column.

use crate::codes::{self, CapVersion, Certainty, MsgType, Scope};
use crate::datetime::DateTime;
use crate::diagnostic::{Diagnostic, Path};
use crate::lifecycle::{is_valid_id, parse_references_for, split_group};
use crate::model::{Alert, Area, Info, Resource};

/// Checks an alert against the CAP 1.2 rules. Empty when valid.
///
/// ```
/// let json = r#"{"identifier": "A1", "sender": "ops@example.org",
///   "sent": "2024-05-01T10:00:00-00:00", "status": "Actual", "msg_type": "Cancel",
///   "scope": "Public"}"#;
/// let alert: nexus_cap::Alert = serde_json::from_str(json).unwrap();
/// let problems = nexus_cap::validate(&alert);
/// assert_eq!(problems[0].path, "/alert/msgType");
/// assert_eq!(problems[0].message, "<references> is required when <msgType> is Cancel");
/// ```
pub fn validate(alert: &Alert) -> Vec<Diagnostic> {
    validate_version(alert, CapVersion::V1_2)
}

/// Checks an alert against the rules of `version`: which elements and code values exist,
/// which are required, and the date-time, identifier, reference and geometry rules.
pub fn validate_version(alert: &Alert, version: CapVersion) -> Vec<Diagnostic> {
    let mut v = Validator {
        version,
        out: Vec::new(),
        path: Path::root(),
    };
    v.alert(alert);
    v.out
}

struct Validator {
    version: CapVersion,
    out: Vec<Diagnostic>,
    path: Path,
}

impl Validator {
    fn err(&mut self, name: &'static str, index: Option<usize>, message: String) {
        let path = self.path.child(name, index);
        self.out.push(Diagnostic::new(path, message));
    }

    fn id(&mut self, name: &'static str, value: &str) {
        if value.is_empty() {
            self.err(name, None, format!("<{name}> must not be empty"));
        } else if !is_valid_id(value) {
            self.err(
                name,
                None,
                format!("<{name}> '{value}' must not contain whitespace, commas, '<' or '&'"),
            );
        }
    }

    fn time(&mut self, name: &'static str, value: Option<DateTime>) {
        if self.version == CapVersion::V1_2 && value.is_some_and(|v| v.has_fraction()) {
            self.err(
                name,
                None,
                format!("<{name}> must not have fractional seconds in CAP 1.2"),
            );
        }
    }

    fn not_in_version(&mut self, name: &'static str, index: Option<usize>, value: &str) {
        let v = self.version;
        let hint = if value == Certainty::VeryLikely.as_str() {
            " (use Likely)"
        } else {
            ""
        };
        self.err(
            name,
            index,
            format!("<{name}> value '{value}' is not defined in CAP {v}{hint}"),
        );
    }

    fn alert(&mut self, a: &Alert) {
        let v = self.version;
        self.id("identifier", &a.identifier);
        self.id("sender", &a.sender);
        self.time("sent", Some(a.sent));
        if !codes::status_in(v, a.status) {
            self.not_in_version("status", None, a.status.as_str());
        }
        if a.password.is_some() && v != CapVersion::V1_0 {
            self.err(
                "password",
                None,
                format!("<password> is not part of CAP {v} (it was removed in CAP 1.1)"),
            );
        }
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        match a.scope {
            None if v != CapVersion::V1_0 => {
                self.err(
                    "scope",
                    None,
                    "missing required element <scope> inside <alert>".into(),
                );
            }
            Some(Scope::Restricted) if blank(&a.restriction) => {
                self.err(
                    "scope",
                    None,
                    "<restriction> is required when <scope> is Restricted".into(),
                );
            }
            Some(Scope::Private) if blank(&a.addresses) => {
                self.err(
                    "scope",
                    None,
                    "<addresses> is required when <scope> is Private".into(),
                );
            }
            _ => {}
        }
        if a.restriction.is_some() && a.scope != Some(Scope::Restricted) {
            self.err(
                "restriction",
                None,
                "<restriction> is only used when <scope> is Restricted".into(),
            );
        }
        if let Some(addresses) = &a.addresses
            && let Err(e) = split_group(addresses)
        {
            self.err("addresses", None, format!("<addresses>: {e}"));
        }
        if let Some(incidents) = &a.incidents
            && let Err(e) = split_group(incidents)
        {
            self.err("incidents", None, format!("<incidents>: {e}"));
        }
        if matches!(
            a.msg_type,
            MsgType::Update | MsgType::Cancel | MsgType::Ack | MsgType::Error
        ) && blank(&a.references)
        {
            let msg = format!("<references> is required when <msgType> is {}", a.msg_type);
            self.err("msgType", None, msg);
        }
        if let Some(references) = &a.references {
            self.references(references);
        }
        for (i, info) in a.info.iter().enumerate() {
            self.path.push("info", Some(i));
            self.info(info);
            self.path.pop();
        }
    }

    fn references(&mut self, text: &str) {
        if self.version == CapVersion::V1_0 {
            // CAP 1.0 references are a plain list of message identifiers.
            if let Some(bad) = text.split_whitespace().find(|r| r.contains(['<', '&'])) {
                let msg = format!("<references> entry '{bad}' must not contain '<' or '&'");
                self.err("references", None, msg);
            }
            return;
        }
        match parse_references_for(text, self.version) {
            Ok(refs) if refs.is_empty() => {
                self.err("references", None, "<references> must not be empty".into());
            }
            Ok(_) => {}
            Err(e) => self.err("references", None, format!("<references>: {e}")),
        }
    }

    fn info(&mut self, i: &Info) {
        let v = self.version;
        if let Some(language) = &i.language
            && !is_language_tag(language)
        {
            let msg = format!("<language> '{language}' is not an RFC 3066 language tag");
            self.err("language", None, msg);
        }
        if i.category.is_empty() && v != CapVersion::V1_0 {
            self.err(
                "category",
                Some(0),
                "missing required element <category> inside <info>".into(),
            );
        }
        for (n, c) in i.category.iter().enumerate() {
            if !codes::category_in(v, *c) {
                self.not_in_version("category", Some(n), c.as_str());
            }
        }
        for (n, r) in i.response_type.iter().enumerate() {
            if v == CapVersion::V1_0 {
                let msg = "<responseType> is not part of CAP 1.0 (it was added in CAP 1.1)";
                self.err("responseType", Some(n), msg.into());
                break;
            }
            if !codes::response_type_in(v, *r) {
                self.not_in_version("responseType", Some(n), r.as_str());
            }
        }
        if !codes::certainty_in(v, i.certainty) {
            self.not_in_version("certainty", None, i.certainty.as_str());
        }
        self.time("effective", i.effective);
        self.time("onset", i.onset);
        self.time("expires", i.expires);
        if let Some(expires) = i.expires {
            for (name, other) in [("effective", i.effective), ("onset", i.onset)] {
                if let Some(other) = other
                    && expires <= other
                {
                    let msg =
                        format!("<expires> ({expires}) must be later than <{name}> ({other})");
                    self.err("expires", None, msg);
                }
            }
        }
        if let Some(web) = &i.web
            && !is_absolute_uri(web)
        {
            self.err("web", None, format!("<web> '{web}' is not an absolute URI"));
        }
        for (n, r) in i.resource.iter().enumerate() {
            self.path.push("resource", Some(n));
            self.resource(r);
            self.path.pop();
        }
        for (n, a) in i.area.iter().enumerate() {
            self.path.push("area", Some(n));
            self.area(a);
            self.path.pop();
        }
    }

    fn resource(&mut self, r: &Resource) {
        let v = self.version;
        match &r.mime_type {
            None if v == CapVersion::V1_2 => {
                let msg = "missing required element <mimeType> inside <resource>";
                self.err("mimeType", None, msg.into());
            }
            Some(m) if !is_mime_type(m) => {
                self.err(
                    "mimeType",
                    None,
                    format!("<mimeType> '{m}' is not a MIME type (type/subtype)"),
                );
            }
            _ => {}
        }
        if let Some(deref) = &r.deref_uri {
            if v == CapVersion::V1_0 {
                let msg = "<derefUri> is not part of CAP 1.0 (it was added in CAP 1.1)";
                self.err("derefUri", None, msg.into());
            } else if !is_base64(deref) {
                self.err(
                    "derefUri",
                    None,
                    "<derefUri> is not base64-encoded data".into(),
                );
            }
        }
        if let Some(uri) = &r.uri
            && r.deref_uri.is_none()
            && !is_absolute_uri(uri)
        {
            let msg =
                format!("<uri> '{uri}' is not an absolute URI (a relative URI needs <derefUri>)");
            self.err("uri", None, msg);
        }
    }

    fn area(&mut self, a: &Area) {
        for (n, p) in a.polygon.iter().enumerate() {
            let count = p.points.len();
            if count < 4 {
                let msg =
                    format!("<polygon> has {count} coordinate pair(s); at least 4 are required");
                self.err("polygon", Some(n), msg);
            }
            if let Some((k, bad)) = p.points.iter().enumerate().find(|(_, pt)| !pt.is_valid()) {
                let msg = format!("<polygon> pair {} ({bad}) {}", k + 1, RANGE);
                self.err("polygon", Some(n), msg);
            }
            if let (Some(first), Some(last)) = (p.points.first(), p.points.last())
                && count >= 2
                && first != last
            {
                let msg = format!(
                    "<polygon> is not closed: the first pair ({first}) and the last pair ({last}) differ"
                );
                self.err("polygon", Some(n), msg);
            }
        }
        for (n, c) in a.circle.iter().enumerate() {
            if !c.center.is_valid() {
                self.err(
                    "circle",
                    Some(n),
                    format!("<circle> centre ({}) {RANGE}", c.center),
                );
            }
            if !(c.radius_km.is_finite() && c.radius_km >= 0.0) {
                let msg = format!("<circle> radius {} km must not be negative", c.radius_km);
                self.err("circle", Some(n), msg);
            }
        }
        for (n, g) in a.geocode.iter().enumerate() {
            self.path.push("geocode", Some(n));
            if g.value_name.trim().is_empty() {
                self.err(
                    "valueName",
                    None,
                    "<geocode> <valueName> must not be empty".into(),
                );
            }
            if g.value.trim().is_empty() {
                self.err("value", None, "<geocode> <value> must not be empty".into());
            }
            self.path.pop();
        }
        match (a.altitude, a.ceiling) {
            (None, Some(_)) => {
                self.err(
                    "ceiling",
                    None,
                    "<ceiling> must not be used without <altitude>".into(),
                );
            }
            (Some(alt), Some(ceiling)) if ceiling < alt => {
                let msg = format!("<ceiling> ({ceiling}) must not be below <altitude> ({alt})");
                self.err("ceiling", None, msg);
            }
            _ => {}
        }
    }
}

const RANGE: &str = "is out of range (latitude -90..90, longitude -180..180)";

/// `xs:language`: `[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*`.
fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    primary_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `scheme:rest` with an RFC 3986 scheme and no whitespace.
fn is_absolute_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !uri.chars().any(char::is_whitespace)
}

/// RFC 2045 `type/subtype`, optionally followed by `;` parameters.
fn is_mime_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s))
}

fn is_base64(text: &str) -> bool {
    let mut padding = 0;
    let mut count = 0;
    for b in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        match b {
            b'=' => padding += 1,
            _ if padding > 0 => return false,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => {}
            _ => return false,
        }
        count += 1;
    }
    padding <= 2 && count % 4 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        for ok in ["en", "en-US", "fr-CA", "es-419", "zh-Hant-TW"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "en_US", "englishlanguage", "-en", "en-", "123"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn uris_and_mime_types() {
        assert!(is_absolute_uri("http://www.nws.noaa.gov/"));
        assert!(is_absolute_uri("urn:oid:2.49.0.1.840"));
        assert!(!is_absolute_uri("map.png"));
        assert!(!is_absolute_uri("http://a b"));
        assert!(is_mime_type("image/png"));
        assert!(is_mime_type("text/plain; charset=utf-8"));
        assert!(!is_mime_type("png"));
        assert!(!is_mime_type("image/"));
    }

    #[test]
    fn base64_alphabet() {
        assert!(is_base64("aGVsbG8="));
        assert!(is_base64("aGVs\n bG8h"));
        assert!(!is_base64("aGVsbG8"));
        assert!(!is_base64("aGV*bG8="));
        assert!(!is_base64("aG=sbG8="));
    }
}
