//! `nexus-cap`: the Common Alerting Protocol (OASIS CAP 1.2, and 1.0/1.1 for reading) as a
//! sans-IO codec: bytes in, a typed [`Alert`] and located [`Diagnostic`]s out. No sockets, no
//! runtime, no clock — where time matters ([`is_expired`]) `now` is an argument.
//!
//! # The model
//!
//! A CAP message is one [`Alert`] (who sent what, when, how to handle it) holding zero or more
//! [`Info`] blocks (one per language or audience: the event, its [`Urgency`], [`Severity`] and
//! [`Certainty`], what to do), each with [`Resource`]s (attached files) and [`Area`]s (where:
//! a description plus [`Polygon`]s, [`Circle`]s and geocode [`ValuePair`]s). Every CAP code list
//! is an enum ([`Status`], [`MsgType`], [`Scope`], [`Category`], [`ResponseType`], …) spelled
//! exactly as CAP spells it; date-times are [`DateTime`]s with an explicit offset.
//!
//! Field names are the CAP element names in snake_case, and the serde form of the model is the
//! JSON form of CAP used by the API (`docs/cap-json.md`).
//!
//! # Invariants
//!
//! - [`parse`] never expands anything: a DOCTYPE, an undefined entity, a document past the
//!   [`Limits`] (size, depth, element count) is refused. Arbitrary bytes never panic it.
//! - `parse` accepts a document that is well-formed and fits its version's schema (element
//!   names, order, cardinality, readable values); [`validate`] / [`Parsed::validate`] apply the
//!   rules the schema cannot express; [`check`] does both and locates every problem.
//! - Writing is stable: `parse(to_xml(a))` gives back `a`.
//! - A CAP 1.0 or 1.1 document keeps its own version's meaning ([`Parsed::version`]) and is
//!   validated by that version's rules; [`to_cap12`] converts it.
//! - XML signatures are kept verbatim ([`Alert::signatures`]), never verified here.
//!
//! # Example
//!
//! ```
//! use nexus_cap::{Limits, MsgType, Severity};
//!
//! let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
//! <alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
//!   <identifier>NWS-2024-0612-001</identifier>
//!   <sender>w-nws.webmaster@noaa.gov</sender>
//!   <sent>2024-06-12T14:57:00-07:00</sent>
//!   <status>Actual</status>
//!   <msgType>Alert</msgType>
//!   <scope>Public</scope>
//!   <info>
//!     <category>Met</category>
//!     <event>Severe Thunderstorm</event>
//!     <urgency>Immediate</urgency>
//!     <severity>Severe</severity>
//!     <certainty>Observed</certainty>
//!     <expires>2024-06-12T15:57:00-07:00</expires>
//!     <headline>SEVERE THUNDERSTORM WARNING</headline>
//!     <area>
//!       <areaDesc>Extreme north central Tuolumne County</areaDesc>
//!       <polygon>38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.47,-120.14</polygon>
//!     </area>
//!   </info>
//! </alert>"#;
//!
//! // Parse (safe, bounded) and apply the specification's rules.
//! let parsed = nexus_cap::parse(xml, &Limits::default())?;
//! assert!(parsed.validate().is_empty());
//! let alert = parsed.alert;
//! assert_eq!(alert.msg_type, MsgType::Alert);
//! assert_eq!(alert.info[0].severity, Severity::Severe);
//!
//! // Shapes for the geo engine: polygons as (lon, lat) rings.
//! let geometry = alert.info[0].area[0].geometry();
//! assert_eq!(geometry.polygons[0][0], (-120.14, 38.47));
//!
//! // Write it back (and as JSON); the round trip is stable.
//! let again = nexus_cap::parse(nexus_cap::to_xml(&alert).as_bytes(), &Limits::default())?;
//! assert_eq!(again.alert, alert);
//! let json = serde_json::to_string(&alert).unwrap();
//! assert!(json.contains(r#""msg_type":"Alert""#));
//!
//! // A broken document: every problem, located, ready for `nexus cap validate`.
//! let broken = String::from_utf8_lossy(xml).replace("-120.14</polygon>", "-120.15</polygon>");
//! let problems = nexus_cap::check(broken.as_bytes());
//! assert_eq!(problems[0].render("warning.xml"),
//!     "warning.xml:19:7: error: <polygon> is not closed: the first pair (38.47,-120.14) \
//!      and the last pair (38.47,-120.15) differ");
//! # Ok::<(), nexus_cap::ParseError>(())
//! ```
//!
//! # Layout
//!
//! - `model`: [`Alert`], [`Info`], [`Resource`], [`Area`], [`ValuePair`].
//! - `codes`: the code lists and [`CapVersion`].
//! - `datetime`, `geometry`: [`DateTime`]; [`Point`], [`Polygon`], [`Circle`], [`AreaGeometry`].
//! - `xml`: [`parse`], [`check`], [`to_xml`] — the safe reader, the schema step, the writer.
//! - `validate`: [`validate`], [`validate_version`]; `diagnostic`: [`Diagnostic`].
//! - `lifecycle`: [`Reference`], [`parse_references`], [`is_expired`]; `convert`: [`to_cap12`];
//!   `atom`: [`atom_feed`]; `atom_read`: [`read_atom`] (feeds of other hubs, for ingest).
//! - `error`: [`ParseError`], [`ValueError`], [`Location`].

mod atom;
mod atom_read;
mod codes;
mod convert;
mod datetime;
mod diagnostic;
mod error;
mod geometry;
mod lifecycle;
mod model;
mod validate;
mod xml;

pub use atom::{Feed, FeedEntry, atom_feed};
pub use atom_read::{ATOM_NS, AtomEntry, AtomLink, read_atom};
pub use codes::{
    CapVersion, Category, Certainty, MsgType, ResponseType, Scope, Severity, Status, Urgency,
};
pub use convert::{DEFAULT_MIME_TYPE, to_cap12};
pub use datetime::DateTime;
pub use diagnostic::Diagnostic;
pub use error::{Location, ParseError, ValueError};
pub use geometry::{AreaGeometry, Circle, Point, Polygon};
pub use lifecycle::{Reference, is_expired, is_valid_id, parse_references, split_group};
pub use model::{Alert, Area, Info, Resource, ValuePair};
pub use validate::{validate, validate_version};
pub use xml::{Limits, Parsed, check, check_with, parse, to_xml, to_xml_version};
