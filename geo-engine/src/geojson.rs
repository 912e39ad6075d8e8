//! GeoJSON (RFC 7946) output: what the HTTP layer serializes for query and map results.
//!
//! Every feature has an `id` (an object id as a number, or `"cluster/z/x/y"` for a cluster)
//! and `properties`. Object properties are the object's attributes with a `"kind"` tag;
//! cluster properties carry the count, the severity breakdown and the expansion zoom.
//!
//! ```json
//! {"type":"FeatureCollection","features":[
//!   {"type":"Feature","id":"cluster/3/17/30",
//!    "geometry":{"type":"Point","coordinates":[36.8,-1.3]},
//!    "properties":{"cluster":true,"count":42,"severity":[10,12,8,7,5],
//!                  "kinds":{"incident":42,"responder":0,"resource":0,"shelter":0,"hazard":0},
//!                  "expansion_zoom":5}},
//!   {"type":"Feature","id":7,
//!    "geometry":{"type":"Point","coordinates":[36.9,-1.2]},
//!    "properties":{"cluster":false,"kind":"incident","type":"flood","severity":4,
//!                  "status":"verified","time":1700000000000}}]}
//! ```

use serde::Serialize;

use crate::budget::Completion;
use crate::cluster::Cluster;
use crate::object::{Attributes, Geometry, Object, ObjectId};
use crate::query::Hit;

/// A GeoJSON FeatureCollection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureCollection {
    #[serde(rename = "type")]
    tag: CollectionTag,
    /// The features.
    pub features: Vec<Feature>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
enum CollectionTag {
    FeatureCollection,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
enum FeatureTag {
    Feature,
}

impl FeatureCollection {
    /// A collection of `features`.
    pub fn new(features: Vec<Feature>) -> Self {
        Self {
            tag: CollectionTag::FeatureCollection,
            features,
        }
    }

    /// The features for query hits, in order (with `distance_m` when the query measured it).
    pub fn from_hits(hits: &[Hit<'_>]) -> Self {
        Self::new(
            hits.iter()
                .map(|h| Feature::object(h.object, h.distance_m))
                .collect(),
        )
    }
}

/// A GeoJSON Feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feature {
    #[serde(rename = "type")]
    tag: FeatureTag,
    /// Object id, or cluster id.
    pub id: FeatureId,
    /// Where it is.
    pub geometry: GeoJsonGeometry,
    /// What it is.
    pub properties: Properties,
}

impl Feature {
    /// The feature for an object.
    pub fn object(object: &Object, distance_m: Option<f64>) -> Self {
        Self {
            tag: FeatureTag::Feature,
            id: FeatureId::Object(object.id),
            geometry: GeoJsonGeometry::from(&object.geometry),
            properties: Properties::Object(ObjectProperties {
                cluster: false,
                attrs: object.attrs.clone(),
                distance_m,
            }),
        }
    }

    /// The feature for a cluster, placed at its centroid.
    pub fn cluster(c: &Cluster) -> Self {
        let k = c.kinds;
        Self {
            tag: FeatureTag::Feature,
            id: FeatureId::Cluster(format!("cluster/{}/{}/{}", c.zoom, c.cell_x, c.cell_y)),
            geometry: GeoJsonGeometry::Point([c.centroid.lon(), c.centroid.lat()]),
            properties: Properties::Cluster(ClusterProperties {
                cluster: true,
                count: c.count,
                severity: c.severity,
                kinds: KindCounts {
                    incident: k[0],
                    responder: k[1],
                    resource: k[2],
                    shelter: k[3],
                    hazard: k[4],
                },
                expansion_zoom: c.expansion_zoom,
            }),
        }
    }
}

/// A feature id: a number for objects, a string for clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FeatureId {
    /// An object's id.
    Object(ObjectId),
    /// `cluster/{zoom}/{cell_x}/{cell_y}`.
    Cluster(String),
}

/// GeoJSON geometry, coordinates in `[lon, lat]` order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "coordinates")]
pub enum GeoJsonGeometry {
    /// A point.
    Point([f64; 2]),
    /// A polygon: exterior ring then holes.
    Polygon(Vec<Vec<[f64; 2]>>),
    /// Several polygons.
    MultiPolygon(Vec<Vec<Vec<[f64; 2]>>>),
}

impl From<&Geometry> for GeoJsonGeometry {
    fn from(g: &Geometry) -> Self {
        match g {
            Geometry::Point(p) => GeoJsonGeometry::Point([p.lon(), p.lat()]),
            Geometry::Area(a) => {
                let ring = |r: &geo::LineString<f64>| r.coords().map(|c| [c.x, c.y]).collect();
                let mut polygons: Vec<Vec<Vec<[f64; 2]>>> = a
                    .polygons()
                    .iter()
                    .map(|p| {
                        std::iter::once(p.exterior())
                            .chain(p.interiors())
                            .map(ring)
                            .collect()
                    })
                    .collect();
                if polygons.len() == 1 {
                    GeoJsonGeometry::Polygon(polygons.remove(0))
                } else {
                    GeoJsonGeometry::MultiPolygon(polygons)
                }
            }
        }
    }
}

/// Feature properties: an object's or a cluster's.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Properties {
    /// A single object.
    Object(ObjectProperties),
    /// A cluster.
    Cluster(ClusterProperties),
}

/// Properties of a single object: `cluster: false` plus its attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectProperties {
    /// Always `false`, so clients can tell objects from clusters.
    pub cluster: bool,
    /// The attributes, flattened (`kind`, `type`, `severity`, …).
    #[serde(flatten)]
    pub attrs: Attributes,
    /// Distance from the query centre, for radius and k-nearest queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
}

/// Properties of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterProperties {
    /// Always `true`.
    pub cluster: bool,
    /// Number of objects.
    pub count: u32,
    /// Counts of severity 1..=5 (index 0 is severity 1).
    pub severity: [u32; 5],
    /// Counts by kind.
    pub kinds: KindCounts,
    /// Zoom at which the cluster splits (`null` when its objects coincide).
    pub expansion_zoom: Option<u8>,
}

/// Object counts by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// Incidents.
    pub incident: u32,
    /// Responders.
    pub responder: u32,
    /// Resources.
    pub resource: u32,
    /// Shelters.
    pub shelter: u32,
    /// Hazards.
    pub hazard: u32,
}

/// The map for one view: clusters and single objects, ready to serialize.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterResult {
    /// The features.
    pub features: FeatureCollection,
    /// Whether every cell in view was visited.
    pub completion: Completion,
    /// Steps taken (tree nodes and leaf objects examined).
    pub steps: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::{Position, Timestamp};
    use crate::object::{Area, Hazard, Severity};

    #[test]
    fn area_feature_is_a_polygon_with_id_and_properties() {
        let area = Area::polygon(&[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]).unwrap();
        let o = Object::area(
            ObjectId(9),
            area,
            Attributes::Hazard(Hazard {
                hazard_type: "flood".into(),
                severity: Severity::new(5).unwrap(),
                updated_at: Timestamp(1),
            }),
        );
        let json = serde_json::to_value(Feature::object(&o, None)).unwrap();
        assert_eq!(json["type"], "Feature");
        assert_eq!(json["id"], 9);
        assert_eq!(json["geometry"]["type"], "Polygon");
        assert_eq!(
            json["geometry"]["coordinates"][0][3],
            serde_json::json!([0.0, 0.0])
        );
        assert_eq!(json["properties"]["kind"], "hazard");
        assert_eq!(json["properties"]["cluster"], false);
    }

    #[test]
    fn cluster_feature_has_string_id_and_counts() {
        let c = Cluster {
            zoom: 3,
            cell_x: 17,
            cell_y: 30,
            centroid: Position::new(-1.3, 36.8).unwrap(),
            count: 3,
            severity: [1, 2, 0, 0, 0],
            kinds: [3, 0, 0, 0, 0],
            expansion_zoom: Some(5),
        };
        let fc = FeatureCollection::new(vec![Feature::cluster(&c)]);
        let json = serde_json::to_value(&fc).unwrap();
        assert_eq!(json["type"], "FeatureCollection");
        let f = &json["features"][0];
        assert_eq!(f["id"], "cluster/3/17/30");
        assert_eq!(
            f["geometry"]["coordinates"],
            serde_json::json!([36.8, -1.3])
        );
        assert_eq!(f["properties"]["count"], 3);
        assert_eq!(
            f["properties"]["severity"],
            serde_json::json!([1, 2, 0, 0, 0])
        );
        assert_eq!(f["properties"]["kinds"]["incident"], 3);
        assert_eq!(f["properties"]["expansion_zoom"], 5);
    }
}
