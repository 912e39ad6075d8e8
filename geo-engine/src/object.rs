//! What the index holds: ids, kinds, attributes, areas and objects.

use std::collections::BTreeMap;
use std::fmt;

use geo::{BoundingRect, Intersects, MultiPolygon, Validation};
use serde::Serialize;

use crate::coord::{BBox, LonLatRect, Position, Timestamp};
use crate::error::GeoError;

/// Identifies an indexed object (incident, responder, resource, shelter or hazard area).
///
/// The store assigns ids; the index only requires them to be unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ObjectId(pub u64);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The five kinds of object on the crisis map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A reported incident (a point).
    Incident,
    /// A person or team responding (a moving point).
    Responder,
    /// A vehicle, depot or other resource, possibly carrying an inventory (a moving point).
    Resource,
    /// A shelter (usually an area, may be a point).
    Shelter,
    /// A hazard area such as a flood zone (usually an area, may be a point).
    Hazard,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 5] = [
        Kind::Incident,
        Kind::Responder,
        Kind::Resource,
        Kind::Shelter,
        Kind::Hazard,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Kind`]s, used by filters and fences. [`Default`] is every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KindSet(u8);

impl KindSet {
    /// Every kind.
    pub const ALL: KindSet = KindSet(0b1_1111);
    /// No kind.
    pub const EMPTY: KindSet = KindSet(0);

    /// Just `kind`.
    pub fn only(kind: Kind) -> Self {
        KindSet(kind.bit())
    }

    /// This set plus `kind`.
    pub fn with(self, kind: Kind) -> Self {
        KindSet(self.0 | kind.bit())
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether every kind is in the set.
    pub fn is_all(self) -> bool {
        self == Self::ALL
    }
}

impl Default for KindSet {
    fn default() -> Self {
        Self::ALL
    }
}

impl FromIterator<Kind> for KindSet {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

/// Severity 1 (lowest) to 5 (highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Severity(u8);

impl Severity {
    /// Builds a severity, rejecting values outside 1..=5 with [`GeoError::InvalidSeverity`].
    pub fn new(value: u8) -> Result<Self, GeoError> {
        if (1..=5).contains(&value) {
            Ok(Self(value))
        } else {
            Err(GeoError::InvalidSeverity(value))
        }
    }

    /// The value, 1 to 5.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// Where an incident is in its verification life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Reported, not yet confirmed.
    Reported,
    /// Confirmed by enough trusted people.
    Verified,
    /// Dealt with.
    Resolved,
    /// Found to be false or a duplicate.
    Rejected,
}

impl Status {
    /// Every status, in declaration order.
    pub const ALL: [Status; 4] = [
        Status::Reported,
        Status::Verified,
        Status::Resolved,
        Status::Rejected,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Status`]es. [`Default`] is every status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusSet(u8);

impl StatusSet {
    /// Every status.
    pub const ALL: StatusSet = StatusSet(0b1111);
    /// No status.
    pub const EMPTY: StatusSet = StatusSet(0);
    /// Reported or verified: what a live map usually shows.
    pub const OPEN: StatusSet = StatusSet(0b0011);

    /// Just `status`.
    pub fn only(status: Status) -> Self {
        StatusSet(status.bit())
    }

    /// This set plus `status`.
    pub fn with(self, status: Status) -> Self {
        StatusSet(self.0 | status.bit())
    }

    /// Whether `status` is in the set.
    pub fn contains(self, status: Status) -> bool {
        self.0 & status.bit() != 0
    }

    /// Whether every status is in the set.
    pub fn is_all(self) -> bool {
        self == Self::ALL
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::ALL
    }
}

impl FromIterator<Status> for StatusSet {
    fn from_iter<I: IntoIterator<Item = Status>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

/// Attributes of an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Incident type, e.g. `"flood"`, `"fire"`, `"injury"`.
    #[serde(rename = "type")]
    pub incident_type: String,
    /// How bad it is.
    pub severity: Severity,
    /// Verification status.
    pub status: Status,
    /// When it was reported.
    #[serde(rename = "time")]
    pub reported_at: Timestamp,
}

/// Attributes of a responder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Responder {
    /// Role, e.g. `"paramedic"`, `"volunteer"`.
    #[serde(rename = "type")]
    pub role: String,
    /// When its position or attributes last changed.
    #[serde(rename = "time")]
    pub updated_at: Timestamp,
}

/// Attributes of a resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    /// Resource type, e.g. `"ambulance"`, `"depot"`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Item name → quantity on hand (empty for resources without stock).
    pub inventory: BTreeMap<String, u32>,
    /// When its position or attributes last changed.
    #[serde(rename = "time")]
    pub updated_at: Timestamp,
}

/// Attributes of a shelter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shelter {
    /// Shelter type, e.g. `"school"`, `"stadium"`.
    #[serde(rename = "type")]
    pub shelter_type: String,
    /// How many people it can take, when known.
    pub capacity: Option<u32>,
    /// When it was last updated.
    #[serde(rename = "time")]
    pub updated_at: Timestamp,
}

/// Attributes of a hazard area.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hazard {
    /// Hazard type, e.g. `"flood"`, `"chemical"`.
    #[serde(rename = "type")]
    pub hazard_type: String,
    /// How dangerous it is.
    pub severity: Severity,
    /// When it was last updated.
    #[serde(rename = "time")]
    pub updated_at: Timestamp,
}

/// Kind-specific attributes; the variant decides the object's [`Kind`].
///
/// Serializes as a flat JSON object with a `"kind"` tag, which is what GeoJSON features
/// carry in `properties`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Attributes {
    /// An incident.
    Incident(Incident),
    /// A responder.
    Responder(Responder),
    /// A resource.
    Resource(Resource),
    /// A shelter.
    Shelter(Shelter),
    /// A hazard area.
    Hazard(Hazard),
}

impl Attributes {
    /// The kind these attributes describe.
    pub fn kind(&self) -> Kind {
        match self {
            Attributes::Incident(_) => Kind::Incident,
            Attributes::Responder(_) => Kind::Responder,
            Attributes::Resource(_) => Kind::Resource,
            Attributes::Shelter(_) => Kind::Shelter,
            Attributes::Hazard(_) => Kind::Hazard,
        }
    }

    /// The type string the `type=` filter matches (incident type, role, resource type…).
    pub fn type_name(&self) -> &str {
        match self {
            Attributes::Incident(a) => &a.incident_type,
            Attributes::Responder(a) => &a.role,
            Attributes::Resource(a) => &a.resource_type,
            Attributes::Shelter(a) => &a.shelter_type,
            Attributes::Hazard(a) => &a.hazard_type,
        }
    }

    /// Severity, for incidents and hazards.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            Attributes::Incident(a) => Some(a.severity),
            Attributes::Hazard(a) => Some(a.severity),
            _ => None,
        }
    }

    /// Status, for incidents.
    pub fn status(&self) -> Option<Status> {
        match self {
            Attributes::Incident(a) => Some(a.status),
            _ => None,
        }
    }

    /// The time the time-window filter looks at: reported time for incidents, last update
    /// otherwise.
    pub fn time(&self) -> Timestamp {
        match self {
            Attributes::Incident(a) => a.reported_at,
            Attributes::Responder(a) => a.updated_at,
            Attributes::Resource(a) => a.updated_at,
            Attributes::Shelter(a) => a.updated_at,
            Attributes::Hazard(a) => a.updated_at,
        }
    }
}

/// One or more polygons in `[lon, lat]` degrees, validated.
///
/// Edges are straight lines in longitude/latitude (as in PostGIS `geometry` and Tile38),
/// which is what map clients draw. Invariants: every vertex is a valid coordinate, the
/// polygons pass OGC validity (`geo::Validation`: closed rings of at least three distinct
/// points, no self-intersection, holes inside shells) and no edge spans more than 180° of
/// longitude: an area crossing the antimeridian is given as two polygons, one each side.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    polygons: MultiPolygon<f64>,
    bounds: LonLatRect,
}

impl Area {
    /// Builds a single polygon from its exterior ring, given as `(lon, lat)` pairs (GeoJSON
    /// order). The ring is closed for you when the last point differs from the first.
    pub fn polygon(exterior: &[(f64, f64)]) -> Result<Self, GeoError> {
        let ring: Vec<geo::Coord<f64>> = exterior
            .iter()
            .map(|&(x, y)| geo::coord! { x: x, y: y })
            .collect();
        Self::from_multi_polygon(MultiPolygon::new(vec![geo::Polygon::new(
            geo::LineString::new(ring),
            vec![],
        )]))
    }

    /// Builds an area from `geo` polygons (x = longitude, y = latitude), validating it.
    pub fn from_multi_polygon(polygons: MultiPolygon<f64>) -> Result<Self, GeoError> {
        let mut points = 0usize;
        for polygon in &polygons {
            for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
                for c in ring.coords() {
                    Position::new(c.y, c.x)?;
                    points += 1;
                }
                for line in ring.lines() {
                    if (line.end.x - line.start.x).abs() > 180.0 {
                        return Err(GeoError::InvalidArea {
                            reason: "an edge spans more than 180° of longitude; split areas \
                                     crossing the antimeridian into one polygon per side"
                                .into(),
                        });
                    }
                }
            }
        }
        if points == 0 {
            return Err(GeoError::InvalidArea {
                reason: "no polygon given".into(),
            });
        }
        polygons
            .check_validation()
            .map_err(|e| GeoError::InvalidArea {
                reason: e.to_string(),
            })?;
        let Some(rect) = polygons.bounding_rect() else {
            return Err(GeoError::InvalidArea {
                reason: "no polygon given".into(),
            });
        };
        let bounds = LonLatRect::new(rect.min().x, rect.min().y, rect.max().x, rect.max().y);
        Ok(Self { polygons, bounds })
    }

    /// The polygons.
    pub fn polygons(&self) -> &MultiPolygon<f64> {
        &self.polygons
    }

    /// Bounding box of the area.
    pub fn bbox(&self) -> BBox {
        BBox::from_rect(self.bounds)
    }

    /// Whether `p` is inside the area or on its boundary.
    pub fn covers(&self, p: Position) -> bool {
        let c = geo::coord! { x: p.lon(), y: p.lat() };
        if !self.polygons.intersects(&c) {
            // The ±180° seam: a point at -180 lies on an area edge drawn at 180.
            let lon = p.lon();
            if lon.abs() == 180.0 {
                return self
                    .polygons
                    .intersects(&geo::coord! { x: -lon, y: p.lat() });
            }
            return false;
        }
        true
    }

    pub(crate) fn bounds(&self) -> LonLatRect {
        self.bounds
    }
}

/// Where an object is: a point or an area.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    /// A point (incidents, responders, resources; shelters may be points too).
    Point(Position),
    /// An area (shelters, hazard zones).
    Area(Area),
}

impl Geometry {
    /// The point, if this is one.
    pub fn as_point(&self) -> Option<Position> {
        match self {
            Geometry::Point(p) => Some(*p),
            Geometry::Area(_) => None,
        }
    }

    pub(crate) fn bounds(&self) -> LonLatRect {
        match self {
            Geometry::Point(p) => LonLatRect::new(p.lon(), p.lat(), p.lon(), p.lat()),
            Geometry::Area(a) => a.bounds(),
        }
    }
}

/// An indexed object: id, geometry and attributes.
///
/// Every field is already validated by its type, so any `Object` value is indexable.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Unique id.
    pub id: ObjectId,
    /// Point or area.
    pub geometry: Geometry,
    /// Kind-specific attributes.
    pub attrs: Attributes,
}

impl Object {
    /// An object at a point.
    pub fn point(id: ObjectId, at: Position, attrs: Attributes) -> Self {
        Self {
            id,
            geometry: Geometry::Point(at),
            attrs,
        }
    }

    /// An object covering an area.
    pub fn area(id: ObjectId, area: Area, attrs: Attributes) -> Self {
        Self {
            id,
            geometry: Geometry::Area(area),
            attrs,
        }
    }

    /// The object's kind (from its attributes).
    pub fn kind(&self) -> Kind {
        self.attrs.kind()
    }

    /// The position, for point objects.
    pub fn position(&self) -> Option<Position> {
        self.geometry.as_point()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_status_sets() {
        let s: KindSet = [Kind::Incident, Kind::Hazard].into_iter().collect();
        assert!(s.contains(Kind::Incident) && s.contains(Kind::Hazard));
        assert!(!s.contains(Kind::Responder));
        assert!(KindSet::default().is_all());
        assert!(StatusSet::OPEN.contains(Status::Verified));
        assert!(!StatusSet::OPEN.contains(Status::Resolved));
    }

    #[test]
    fn severity_is_one_to_five() {
        assert!(Severity::new(0).is_err());
        assert!(Severity::new(6).is_err());
        assert_eq!(Severity::new(5).unwrap().get(), 5);
    }

    #[test]
    fn area_rejects_bad_polygons() {
        let bowtie = Area::polygon(&[(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]);
        assert!(matches!(bowtie, Err(GeoError::InvalidArea { .. })));
        let too_few = Area::polygon(&[(0.0, 0.0), (1.0, 1.0)]);
        assert!(matches!(too_few, Err(GeoError::InvalidArea { .. })));
        let bad_coord = Area::polygon(&[(0.0, 0.0), (1.0, 95.0), (1.0, 0.0)]);
        assert!(matches!(bad_coord, Err(GeoError::InvalidCoordinate { .. })));
        let across = Area::polygon(&[(170.0, 0.0), (-170.0, 0.0), (-170.0, 5.0), (170.0, 5.0)]);
        assert!(matches!(across, Err(GeoError::InvalidArea { .. })));
    }

    #[test]
    fn area_covers_its_boundary() {
        let a = Area::polygon(&[(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)]).unwrap();
        assert!(a.covers(Position::new(1.0, 1.0).unwrap()));
        assert!(a.covers(Position::new(0.0, 1.0).unwrap()));
        assert!(!a.covers(Position::new(3.0, 1.0).unwrap()));
        assert_eq!(a.bbox().max_lon(), 2.0);
    }

    #[test]
    fn attributes_serialize_flat_with_kind_tag() {
        let a = Attributes::Incident(Incident {
            incident_type: "flood".into(),
            severity: Severity::new(4).unwrap(),
            status: Status::Verified,
            reported_at: Timestamp(1_700_000_000_000),
        });
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"incident","type":"flood","severity":4,"status":"verified","time":1700000000000}"#
        );
    }
}
