//! Element tree → [`Alert`], checking the schema's content model on the way.
//!
//! The content model of every CAP element is a fixed sequence, so each parent has a table of
//! slots (name, minimum, maximum) per version. Children are matched against it: unknown,
//! misplaced, repeated and missing elements and unreadable values become located diagnostics,
//! and the model is still filled (with placeholders where a value is missing) so validation
//! can run over the rest of the document.

use std::str::FromStr;

use chrono::Utc;

use crate::codes::CapVersion;
use crate::datetime::DateTime;
use crate::diagnostic::{Diagnostic, Path};
use crate::error::{Location, ValueError};
use crate::geometry::{Circle, Polygon, decimal};
use crate::model::{Alert, Area, Info, Resource, ValuePair};
use crate::xml::dom::{Doc, Node, Ns};
use crate::xml::source_map::SourceMap;

/// The CAP elements, so the mapping dispatches on an integer, not on a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum El {
    Addresses,
    Altitude,
    Area,
    AreaDesc,
    Audience,
    Category,
    Ceiling,
    Certainty,
    Circle,
    Code,
    Contact,
    DerefUri,
    Description,
    Digest,
    Effective,
    Event,
    EventCode,
    Expires,
    Geocode,
    Headline,
    Identifier,
    Incidents,
    Info,
    Instruction,
    Language,
    MimeType,
    MsgType,
    Note,
    Onset,
    Parameter,
    Password,
    Polygon,
    References,
    Resource,
    ResourceDesc,
    ResponseType,
    Restriction,
    Scope,
    Sender,
    SenderName,
    Sent,
    Severity,
    Size,
    Source,
    Status,
    Urgency,
    Uri,
    Value,
    ValueName,
    Web,
}

struct Slot {
    name: &'static str,
    el: El,
    min: usize,
    max: usize,
}

const N: usize = usize::MAX;

const fn slot(name: &'static str, el: El, min: usize, max: usize) -> Slot {
    Slot { name, el, min, max }
}

static ALERT_10: [Slot; 15] = [
    slot("identifier", El::Identifier, 1, 1),
    slot("sender", El::Sender, 1, 1),
    slot("sent", El::Sent, 1, 1),
    slot("status", El::Status, 1, 1),
    slot("msgType", El::MsgType, 1, 1),
    slot("password", El::Password, 0, 1),
    slot("source", El::Source, 0, 1),
    slot("scope", El::Scope, 0, 1),
    slot("restriction", El::Restriction, 0, 1),
    slot("addresses", El::Addresses, 0, 1),
    slot("code", El::Code, 0, N),
    slot("note", El::Note, 0, 1),
    slot("references", El::References, 0, 1),
    slot("incidents", El::Incidents, 0, 1),
    slot("info", El::Info, 0, N),
];

static ALERT_11: [Slot; 14] = [
    slot("identifier", El::Identifier, 1, 1),
    slot("sender", El::Sender, 1, 1),
    slot("sent", El::Sent, 1, 1),
    slot("status", El::Status, 1, 1),
    slot("msgType", El::MsgType, 1, 1),
    slot("source", El::Source, 0, 1),
    slot("scope", El::Scope, 0, 1),
    slot("restriction", El::Restriction, 0, 1),
    slot("addresses", El::Addresses, 0, 1),
    slot("code", El::Code, 0, N),
    slot("note", El::Note, 0, 1),
    slot("references", El::References, 0, 1),
    slot("incidents", El::Incidents, 0, 1),
    slot("info", El::Info, 0, N),
];

static INFO_10: [Slot; 20] = [
    slot("language", El::Language, 0, 1),
    slot("category", El::Category, 0, N),
    slot("event", El::Event, 1, 1),
    slot("urgency", El::Urgency, 1, 1),
    slot("severity", El::Severity, 1, 1),
    slot("certainty", El::Certainty, 1, 1),
    slot("audience", El::Audience, 0, 1),
    slot("eventCode", El::EventCode, 0, N),
    slot("effective", El::Effective, 0, 1),
    slot("onset", El::Onset, 0, 1),
    slot("expires", El::Expires, 0, 1),
    slot("senderName", El::SenderName, 0, 1),
    slot("headline", El::Headline, 0, 1),
    slot("description", El::Description, 0, 1),
    slot("instruction", El::Instruction, 0, 1),
    slot("web", El::Web, 0, 1),
    slot("contact", El::Contact, 0, 1),
    slot("parameter", El::Parameter, 0, N),
    slot("resource", El::Resource, 0, N),
    slot("area", El::Area, 0, N),
];

static INFO_11: [Slot; 21] = [
    slot("language", El::Language, 0, 1),
    slot("category", El::Category, 0, N),
    slot("event", El::Event, 1, 1),
    slot("responseType", El::ResponseType, 0, N),
    slot("urgency", El::Urgency, 1, 1),
    slot("severity", El::Severity, 1, 1),
    slot("certainty", El::Certainty, 1, 1),
    slot("audience", El::Audience, 0, 1),
    slot("eventCode", El::EventCode, 0, N),
    slot("effective", El::Effective, 0, 1),
    slot("onset", El::Onset, 0, 1),
    slot("expires", El::Expires, 0, 1),
    slot("senderName", El::SenderName, 0, 1),
    slot("headline", El::Headline, 0, 1),
    slot("description", El::Description, 0, 1),
    slot("instruction", El::Instruction, 0, 1),
    slot("web", El::Web, 0, 1),
    slot("contact", El::Contact, 0, 1),
    slot("parameter", El::Parameter, 0, N),
    slot("resource", El::Resource, 0, N),
    slot("area", El::Area, 0, N),
];

static RESOURCE_10: [Slot; 5] = [
    slot("resourceDesc", El::ResourceDesc, 1, 1),
    slot("mimeType", El::MimeType, 0, 1),
    slot("size", El::Size, 0, 1),
    slot("uri", El::Uri, 0, 1),
    slot("digest", El::Digest, 0, 1),
];

static RESOURCE_11: [Slot; 6] = [
    slot("resourceDesc", El::ResourceDesc, 1, 1),
    slot("mimeType", El::MimeType, 0, 1),
    slot("size", El::Size, 0, 1),
    slot("uri", El::Uri, 0, 1),
    slot("derefUri", El::DerefUri, 0, 1),
    slot("digest", El::Digest, 0, 1),
];

static AREA: [Slot; 6] = [
    slot("areaDesc", El::AreaDesc, 1, 1),
    slot("polygon", El::Polygon, 0, N),
    slot("circle", El::Circle, 0, N),
    slot("geocode", El::Geocode, 0, N),
    slot("altitude", El::Altitude, 0, 1),
    slot("ceiling", El::Ceiling, 0, 1),
];

static PAIR: [Slot; 2] = [
    slot("valueName", El::ValueName, 1, 1),
    slot("value", El::Value, 1, 1),
];

/// The result of mapping: the alert (with placeholders where the document was wrong), the
/// schema-level problems, and where each mapped element is.
pub(crate) struct Mapped {
    pub(crate) alert: Alert,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) map: SourceMap,
}

/// One accepted child: its slot, its node, and its index among siblings of the same name.
struct Kid {
    slot: &'static Slot,
    node: usize,
    index: usize,
}

impl Kid {
    fn path(&self, parent: &Path) -> String {
        parent.child(self.slot.name, (self.slot.max > 1).then_some(self.index))
    }

    fn index(&self) -> Option<usize> {
        (self.slot.max > 1).then_some(self.index)
    }
}

struct Mapper<'d, 'a> {
    doc: &'d Doc<'a>,
    version: CapVersion,
    diagnostics: Vec<Diagnostic>,
    map: SourceMap,
}

pub(crate) fn map(doc: &Doc<'_>, version: CapVersion) -> Mapped {
    let mut m = Mapper {
        doc,
        version,
        diagnostics: Vec::new(),
        map: SourceMap::with_capacity(doc.nodes.len()),
    };
    let alert = m.alert();
    Mapped {
        alert,
        diagnostics: m.diagnostics,
        map: m.map,
    }
}

fn placeholder_time() -> DateTime {
    DateTime::from(chrono::DateTime::<Utc>::UNIX_EPOCH)
}

impl Mapper<'_, '_> {
    fn node(&self, index: usize) -> &Node<'_> {
        &self.doc.nodes[index]
    }

    fn report(&mut self, loc: Location, path: String, message: String) {
        self.diagnostics.push(Diagnostic {
            line: Some(loc.line),
            column: Some(loc.column),
            path,
            message,
        });
    }

    /// Matches the children of a complex element against its slots.
    /// Returns the accepted CAP children and the XML Signature children (alert only).
    fn children(
        &mut self,
        parent: usize,
        sm_parent: u32,
        path: &Path,
        slots: &'static [Slot],
        allow_dsig: bool,
    ) -> (Vec<(Kid, u32)>, Vec<usize>) {
        let doc = self.doc;
        let p = &doc.nodes[parent];
        let pname = p.local;
        if !p.text.trim().is_empty() {
            self.report(
                p.loc,
                path.render(),
                format!("unexpected text inside <{pname}>"),
            );
        }
        for attr in &p.attrs {
            self.report(
                p.loc,
                path.render(),
                format!("unexpected attribute '{attr}' on <{pname}>"),
            );
        }

        let mut kids = Vec::with_capacity(p.children.len());
        let mut dsig = Vec::new();
        let mut counts = [0usize; 24];
        let mut high = 0usize;
        for &c in &p.children {
            let node = &doc.nodes[c];
            match node.ns {
                Ns::Cap(v) if v == self.version => {}
                Ns::Dsig if allow_dsig => {
                    dsig.push(c);
                    continue;
                }
                Ns::Cap(v) => {
                    let msg = format!(
                        "<{}> is in the CAP {v} namespace, but this is a CAP {} document",
                        node.qname, self.version
                    );
                    self.report(node.loc, path.child(node.local, None), msg);
                    continue;
                }
                Ns::Dsig | Ns::Other | Ns::None => {
                    let msg = format!("unexpected element <{}> inside <{pname}>", node.qname);
                    self.report(node.loc, path.child(node.local, None), msg);
                    continue;
                }
            }
            let Some(at) = find_slot(slots, node.local, high) else {
                let msg = match version_note(node.local, self.version) {
                    Some(note) => format!(
                        "<{}> is not part of CAP {} ({note})",
                        node.local, self.version
                    ),
                    None => format!("unexpected element <{}> inside <{pname}>", node.local),
                };
                self.report(node.loc, path.child(node.local, None), msg);
                continue;
            };
            let slot = &slots[at];
            if counts[at] >= slot.max {
                let msg = format!("<{}> may appear only once inside <{pname}>", slot.name);
                self.report(node.loc, path.child(slot.name, None), msg);
                continue;
            }
            let kid = Kid {
                slot,
                node: c,
                index: counts[at],
            };
            if !dsig.is_empty() {
                let msg = format!("<{}> must come before the XML signature", slot.name);
                self.report(node.loc, kid.path(path), msg);
            } else if at < high {
                let msg = format!(
                    "<{}> is out of order: it must come before <{}>",
                    slot.name, slots[high].name
                );
                self.report(node.loc, kid.path(path), msg);
            } else {
                high = at;
            }
            counts[at] += 1;
            let sm = self.map.add(sm_parent, slot.name, node.loc);
            kids.push((kid, sm));
        }
        for (at, slot) in slots.iter().enumerate() {
            if counts[at] < slot.min {
                let msg = format!("missing required element <{}> inside <{pname}>", slot.name);
                let index = (slot.max > 1).then_some(0);
                self.report(p.loc, path.child(slot.name, index), msg);
            }
        }
        (kids, dsig)
    }

    /// The text of a simple element.
    fn text(&mut self, kid: &Kid, path: &Path) -> String {
        let node = self.node(kid.node);
        let (loc, text) = (node.loc, node.text.clone().into_owned());
        let child = node
            .children
            .first()
            .map(|&c| self.node(c).qname.to_owned());
        let attrs = node.attrs.clone();
        if let Some(child) = child {
            let msg = format!("unexpected element <{child}> inside <{}>", kid.slot.name);
            self.report(loc, kid.path(path), msg);
        }
        for attr in attrs {
            let msg = format!("unexpected attribute '{attr}' on <{}>", kid.slot.name);
            self.report(loc, kid.path(path), msg);
        }
        text
    }

    /// A typed value: reports the error at the element and returns `None`.
    fn value<T>(
        &mut self,
        kid: &Kid,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        let text = self.text(kid, path);
        match parse(text.trim()) {
            Ok(v) => Some(v),
            Err(e) => {
                let loc = self.node(kid.node).loc;
                let msg = match e {
                    ValueError::UnknownCode { .. } => e.to_string(),
                    other => format!("<{}>: {other}", kid.slot.name),
                };
                self.report(loc, kid.path(path), msg);
                None
            }
        }
    }

    fn code<T: FromStr<Err = ValueError>>(&mut self, kid: &Kid, path: &Path) -> Option<T> {
        self.value(kid, path, str::parse)
    }

    fn datetime(&mut self, kid: &Kid, path: &Path) -> Option<DateTime> {
        let version = self.version;
        self.value(kid, path, |t| DateTime::parse_for(t, version))
    }

    fn alert(&mut self) -> Alert {
        let path = Path::root();
        let sm = self
            .map
            .add(SourceMap::NO_PARENT, "alert", self.doc.nodes[0].loc);
        let slots: &'static [Slot] = if self.version == CapVersion::V1_0 {
            &ALERT_10
        } else {
            &ALERT_11
        };
        let (kids, dsig) = self.children(0, sm, &path, slots, true);

        let mut a = Alert {
            identifier: String::new(),
            sender: String::new(),
            sent: placeholder_time(),
            status: crate::Status::Actual,
            msg_type: crate::MsgType::Alert,
            password: None,
            source: None,
            scope: None,
            restriction: None,
            addresses: None,
            code: Vec::new(),
            note: None,
            references: None,
            incidents: None,
            info: Vec::new(),
            signatures: Vec::new(),
        };
        for (kid, sm) in &kids {
            match kid.slot.el {
                El::Identifier => a.identifier = self.text(kid, &path),
                El::Sender => a.sender = self.text(kid, &path),
                El::Sent => a.sent = self.datetime(kid, &path).unwrap_or(a.sent),
                El::Status => a.status = self.code(kid, &path).unwrap_or(a.status),
                El::MsgType => a.msg_type = self.code(kid, &path).unwrap_or(a.msg_type),
                El::Password => a.password = Some(self.text(kid, &path)),
                El::Source => a.source = Some(self.text(kid, &path)),
                El::Scope => a.scope = self.code(kid, &path),
                El::Restriction => a.restriction = Some(self.text(kid, &path)),
                El::Addresses => a.addresses = Some(self.text(kid, &path)),
                El::Code => a.code.push(self.text(kid, &path)),
                El::Note => a.note = Some(self.text(kid, &path)),
                El::References => a.references = Some(self.text(kid, &path)),
                El::Incidents => a.incidents = Some(self.text(kid, &path)),
                _ => {
                    let mut p = path.clone();
                    p.push("info", kid.index());
                    let info = self.info(kid.node, *sm, &p);
                    a.info.push(info);
                }
            }
        }
        a.signatures = dsig.into_iter().map(|n| self.signature(n)).collect();
        a
    }

    fn info(&mut self, node: usize, sm: u32, path: &Path) -> Info {
        let slots: &'static [Slot] = if self.version == CapVersion::V1_0 {
            &INFO_10
        } else {
            &INFO_11
        };
        let (kids, _) = self.children(node, sm, path, slots, false);
        let mut i = Info {
            language: None,
            category: Vec::new(),
            event: String::new(),
            response_type: Vec::new(),
            urgency: crate::Urgency::Unknown,
            severity: crate::Severity::Unknown,
            certainty: crate::Certainty::Unknown,
            audience: None,
            event_code: Vec::new(),
            effective: None,
            onset: None,
            expires: None,
            sender_name: None,
            headline: None,
            description: None,
            instruction: None,
            web: None,
            contact: None,
            parameter: Vec::new(),
            resource: Vec::new(),
            area: Vec::new(),
        };
        for (kid, sm) in &kids {
            match kid.slot.el {
                El::Language => i.language = Some(self.text(kid, path)),
                El::Category => i
                    .category
                    .push(self.code(kid, path).unwrap_or(crate::Category::Other)),
                El::Event => i.event = self.text(kid, path),
                El::ResponseType => {
                    let r = self.code(kid, path).unwrap_or(crate::ResponseType::None);
                    i.response_type.push(r);
                }
                El::Urgency => i.urgency = self.code(kid, path).unwrap_or(i.urgency),
                El::Severity => i.severity = self.code(kid, path).unwrap_or(i.severity),
                El::Certainty => i.certainty = self.code(kid, path).unwrap_or(i.certainty),
                El::Audience => i.audience = Some(self.text(kid, path)),
                El::EventCode => i.event_code.push(self.pair(kid, *sm, path)),
                El::Effective => i.effective = self.datetime(kid, path),
                El::Onset => i.onset = self.datetime(kid, path),
                El::Expires => i.expires = self.datetime(kid, path),
                El::SenderName => i.sender_name = Some(self.text(kid, path)),
                El::Headline => i.headline = Some(self.text(kid, path)),
                El::Description => i.description = Some(self.text(kid, path)),
                El::Instruction => i.instruction = Some(self.text(kid, path)),
                El::Web => i.web = Some(self.text(kid, path).trim().to_owned()),
                El::Contact => i.contact = Some(self.text(kid, path)),
                El::Parameter => i.parameter.push(self.pair(kid, *sm, path)),
                El::Resource => {
                    let mut p = path.clone();
                    p.push("resource", kid.index());
                    let r = self.resource(kid.node, *sm, &p);
                    i.resource.push(r);
                }
                _ => {
                    let mut p = path.clone();
                    p.push("area", kid.index());
                    let a = self.area(kid.node, *sm, &p);
                    i.area.push(a);
                }
            }
        }
        i
    }

    fn resource(&mut self, node: usize, sm: u32, path: &Path) -> Resource {
        let slots: &'static [Slot] = if self.version == CapVersion::V1_0 {
            &RESOURCE_10
        } else {
            &RESOURCE_11
        };
        let (kids, _) = self.children(node, sm, path, slots, false);
        let mut r = Resource::default();
        for (kid, _) in &kids {
            match kid.slot.el {
                El::ResourceDesc => r.resource_desc = self.text(kid, path),
                El::MimeType => r.mime_type = Some(self.text(kid, path)),
                El::Size => {
                    r.size = self.value(kid, path, |t| {
                        t.parse::<u64>().map_err(|_| ValueError::Number {
                            value: t.to_owned(),
                            expected: "a non-negative integer",
                        })
                    });
                }
                El::Uri => r.uri = Some(self.text(kid, path).trim().to_owned()),
                El::DerefUri => r.deref_uri = Some(self.text(kid, path)),
                _ => r.digest = Some(self.text(kid, path)),
            }
        }
        r
    }

    fn area(&mut self, node: usize, sm: u32, path: &Path) -> Area {
        let (kids, _) = self.children(node, sm, path, &AREA, false);
        let mut a = Area::default();
        for (kid, sm) in &kids {
            match kid.slot.el {
                El::AreaDesc => a.area_desc = self.text(kid, path),
                El::Polygon => {
                    let p = self.value(kid, path, str::parse::<Polygon>);
                    a.polygon.push(p.unwrap_or_default());
                }
                El::Circle => {
                    let c = self.value(kid, path, str::parse::<Circle>);
                    a.circle.push(c.unwrap_or(Circle {
                        center: crate::Point { lat: 0.0, lon: 0.0 },
                        radius_km: 0.0,
                    }));
                }
                El::Geocode => a.geocode.push(self.pair(kid, *sm, path)),
                El::Altitude => a.altitude = self.value(kid, path, number),
                _ => a.ceiling = self.value(kid, path, number),
            }
        }
        a
    }

    /// `eventCode`, `parameter`, `geocode`: child elements from CAP 1.1 on, `name=value` text
    /// in CAP 1.0.
    fn pair(&mut self, kid: &Kid, sm: u32, path: &Path) -> ValuePair {
        if self.version == CapVersion::V1_0 {
            return self
                .value(kid, path, |t| {
                    t.split_once('=')
                        .map(|(n, v)| ValuePair::new(n.trim(), v.trim()))
                        .ok_or_else(|| ValueError::ValuePair {
                            value: t.to_owned(),
                        })
                })
                .unwrap_or_default();
        }
        let mut p = path.clone();
        p.push(kid.slot.name, kid.index());
        let (kids, _) = self.children(kid.node, sm, &p, &PAIR, false);
        let mut pair = ValuePair::default();
        for (k, _) in &kids {
            match k.slot.el {
                El::ValueName => pair.value_name = self.text(k, &p),
                _ => pair.value = self.text(k, &p),
            }
        }
        pair
    }

    /// The signature element as XML text that stands on its own: namespace bindings its
    /// elements use that were declared on `<alert>` are repeated on the element.
    fn signature(&self, index: usize) -> String {
        let nodes = &self.doc.nodes;
        let node = &nodes[index];
        let raw = &self.doc.src[node.start..node.end];
        let prefix_of = |qname: &str| qname.split_once(':').map_or("", |(p, _)| p).to_owned();
        let mut needed: Vec<String> = Vec::new();
        for n in nodes[index..].iter().take_while(|n| n.start < node.end) {
            let p = prefix_of(n.qname);
            if !node.decls.iter().any(|(d, _)| *d == p) && !needed.contains(&p) {
                needed.push(p);
            }
        }
        let mut extra = String::new();
        for p in needed {
            if let Some((_, uri)) = nodes[0].decls.iter().find(|(d, _)| *d == p) {
                let name = if p.is_empty() {
                    "xmlns".to_owned()
                } else {
                    format!("xmlns:{p}")
                };
                extra.push_str(&format!(" {name}=\"{}\"", escape_attr(uri)));
            }
        }
        if extra.is_empty() {
            return raw.to_owned();
        }
        let at = 1 + node.qname.len();
        format!("{}{extra}{}", &raw[..at], &raw[at..])
    }
}

fn escape_attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    crate::xml::escape_into(&mut out, text);
    out
}

/// The slot named `name`, searching from `from` (children usually come in order) and then
/// from the start. Compares bytes in a plain loop: these names are short, and a libc `memcmp`
/// call per comparison showed up as the biggest cost of parsing.
fn find_slot(slots: &[Slot], name: &str, from: usize) -> Option<usize> {
    let name = name.as_bytes();
    let same = |s: &Slot| {
        let candidate = s.name.as_bytes();
        candidate.len() == name.len() && candidate.iter().zip(name).all(|(a, b)| a == b)
    };
    (from..slots.len())
        .chain(0..from.min(slots.len()))
        .find(|&i| same(&slots[i]))
}

fn number(text: &str) -> Result<f64, ValueError> {
    decimal(text).ok_or_else(|| ValueError::Number {
        value: text.to_owned(),
        expected: "a decimal number",
    })
}

/// Why an element known to another CAP version is not accepted in this one.
fn version_note(name: &str, version: CapVersion) -> Option<&'static str> {
    match (name, version) {
        ("password", CapVersion::V1_1 | CapVersion::V1_2) => Some("it was removed in CAP 1.1"),
        ("responseType" | "derefUri", CapVersion::V1_0) => Some("it was added in CAP 1.1"),
        _ => None,
    }
}
