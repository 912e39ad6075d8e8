//! CAP `<geocode>` resolution: an operator-provided table from (`valueName`, `value`) to
//! polygons, so alerts that name their areas by code (SAME/FIPS6 county codes, EMMA_ID
//! regions, UGC zones, any scheme) are targeted exactly like alerts that carry polygons.
//!
//! # Format
//!
//! A GeoJSON `FeatureCollection` (RFC 7946, WGS 84 `[lon, lat]`). Each feature's
//! `geometry` is a `Polygon` or `MultiPolygon` (holes allowed); its `properties` name the
//! code, either once — `{"valueName": "SAME", "value": "006109"}` — or several times for
//! one shape — `{"geocodes": [{"valueName": "SAME", "value": "006109"},
//! {"valueName": "FIPS6", "value": "006109"}]}`. `valueName` matches case-insensitively,
//! `value` exactly (both trimmed). A code listed by several features resolves to all of
//! their polygons. Features that break these rules make loading fail, naming the feature,
//! so a bad table is found at start rather than when an alert needs it.
//!
//! ```
//! use nexus_api::geocodes::GeocodeTable;
//! let table = GeocodeTable::from_geojson(r#"{"type": "FeatureCollection", "features": [
//!   {"type": "Feature", "properties": {"valueName": "SAME", "value": "006109"},
//!    "geometry": {"type": "Polygon", "coordinates":
//!      [[[-120.6, 37.8], [-119.2, 37.8], [-119.2, 38.4], [-120.6, 38.4], [-120.6, 37.8]]]}}]}"#)?;
//! assert!(table.resolve("same", "006109").is_some());
//! assert!(table.resolve("SAME", "006110").is_none());
//! # Ok::<(), nexus_api::geocodes::GeocodeTableError>(())
//! ```

use serde_json::Value;
use std::collections::HashMap;

/// The polygons of one code: the area for targeting, and its exterior rings (`[lon, lat]`)
/// for published geometry.
#[derive(Debug, Clone)]
pub struct GeocodeArea {
    /// For targeting (exact point-in-polygon, holes respected).
    pub area: nexus_geo::Area,
    /// Exterior rings, `[lon, lat]`, for the GeoJSON published with the alert.
    pub rings: Vec<Vec<[f64; 2]>>,
}

/// Codes → areas. [`Default`] is the empty table (every geocode unresolved).
#[derive(Debug, Clone, Default)]
pub struct GeocodeTable {
    codes: HashMap<(String, String), Vec<GeocodeArea>>,
}

/// Why a geocode table could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeocodeTableError {
    /// Not JSON, or not a GeoJSON FeatureCollection.
    #[error("geocode table is not a GeoJSON FeatureCollection: {0}")]
    NotGeoJson(String),
    /// A feature breaks the rules of the format.
    #[error("geocode table feature {index}: {reason}")]
    Feature {
        /// 0-based index in `features`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

impl GeocodeTable {
    /// Reads the GeoJSON format described in the module docs.
    pub fn from_geojson(text: &str) -> Result<Self, GeocodeTableError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| GeocodeTableError::NotGeoJson(e.to_string()))?;
        if doc["type"] != "FeatureCollection" {
            return Err(GeocodeTableError::NotGeoJson(
                "\"type\" must be \"FeatureCollection\"".into(),
            ));
        }
        let Some(features) = doc["features"].as_array() else {
            return Err(GeocodeTableError::NotGeoJson(
                "\"features\" must be an array".into(),
            ));
        };
        let mut table = GeocodeTable::default();
        for (index, feature) in features.iter().enumerate() {
            let bad = |reason: String| GeocodeTableError::Feature { index, reason };
            let codes = codes_of(&feature["properties"]).map_err(bad)?;
            let area = area_of(&feature["geometry"]).map_err(bad)?;
            for code in codes {
                table.codes.entry(code).or_default().push(area.clone());
            }
        }
        Ok(table)
    }

    /// The areas of a code, if the table has it.
    pub fn resolve(&self, value_name: &str, value: &str) -> Option<&[GeocodeArea]> {
        self.codes.get(&key(value_name, value)).map(Vec::as_slice)
    }

    /// Number of distinct codes.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether the table has no code.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

fn key(value_name: &str, value: &str) -> (String, String) {
    (
        value_name.trim().to_ascii_uppercase(),
        value.trim().to_string(),
    )
}

fn codes_of(props: &Value) -> Result<Vec<(String, String)>, String> {
    let pair = |v: &Value| -> Result<(String, String), String> {
        let name = v["valueName"].as_str().filter(|s| !s.trim().is_empty());
        let value = match &v["value"] {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        match (name, value) {
            (Some(n), Some(v)) => Ok(key(n, &v)),
            _ => Err("properties need a non-empty \"valueName\" and \"value\"".into()),
        }
    };
    if let Some(list) = props["geocodes"].as_array() {
        if list.is_empty() {
            return Err("\"geocodes\" is empty".into());
        }
        return list.iter().map(pair).collect();
    }
    Ok(vec![pair(props)?])
}

fn area_of(geometry: &Value) -> Result<GeocodeArea, String> {
    let polygons: Vec<&Value> = match geometry["type"].as_str() {
        Some("Polygon") => vec![&geometry["coordinates"]],
        Some("MultiPolygon") => geometry["coordinates"]
            .as_array()
            .ok_or("MultiPolygon coordinates must be an array")?
            .iter()
            .collect(),
        _ => return Err("geometry must be a Polygon or MultiPolygon".into()),
    };
    let mut geo_polygons = Vec::new();
    let mut rings_out = Vec::new();
    for polygon in polygons {
        let rings = polygon
            .as_array()
            .ok_or("polygon coordinates must be an array of rings")?;
        let mut parsed = Vec::new();
        for ring in rings {
            let points = ring
                .as_array()
                .ok_or("a ring must be an array of [lon, lat] positions")?;
            let mut coords = Vec::with_capacity(points.len());
            for p in points {
                match (p[0].as_f64(), p[1].as_f64()) {
                    (Some(lon), Some(lat)) => coords.push([lon, lat]),
                    _ => return Err("a position must be [lon, lat] numbers".into()),
                }
            }
            if coords.len() < 4 || coords.first() != coords.last() {
                return Err("a ring must be closed and have at least 4 positions".into());
            }
            parsed.push(coords);
        }
        let Some((exterior, holes)) = parsed.split_first() else {
            return Err("a polygon needs an exterior ring".into());
        };
        let line = |r: &Vec<[f64; 2]>| {
            geo::LineString::new(r.iter().map(|&[x, y]| geo::coord! { x: x, y: y }).collect())
        };
        geo_polygons.push(geo::Polygon::new(
            line(exterior),
            holes.iter().map(line).collect(),
        ));
        rings_out.push(exterior.clone());
    }
    let area = nexus_geo::Area::from_multi_polygon(geo::MultiPolygon::new(geo_polygons))
        .map_err(|e| e.to_string())?;
    Ok(GeocodeArea {
        area,
        rings: rings_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(props: &str, geometry: &str) -> String {
        format!(
            r#"{{"type": "FeatureCollection", "features": [{{"type": "Feature", "properties": {props}, "geometry": {geometry}}}]}}"#
        )
    }

    const SQUARE: &str =
        r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}"#;

    #[test]
    fn codes_resolve_case_insensitively_by_name_and_exactly_by_value() {
        let t = GeocodeTable::from_geojson(&feature(
            r#"{"geocodes": [{"valueName": "EMMA_ID", "value": "FR433"}, {"valueName": "NUTS3", "value": "FR433"}]}"#,
            SQUARE,
        ))
        .unwrap();
        assert_eq!(t.len(), 2);
        let a = t.resolve("emma_id", " FR433 ").unwrap();
        assert_eq!(a.len(), 1);
        let inside = nexus_geo::Position::new(0.5, 0.5).unwrap();
        assert!(a[0].area.covers(inside));
        assert!(t.resolve("EMMA_ID", "fr433").is_none());
    }

    #[test]
    fn holes_are_respected() {
        let t = GeocodeTable::from_geojson(&feature(
            r#"{"valueName": "UGC", "value": 1}"#,
            r#"{"type": "MultiPolygon", "coordinates": [[[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], [[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]]}"#,
        ))
        .unwrap();
        let a = &t.resolve("UGC", "1").unwrap()[0];
        assert!(a.area.covers(nexus_geo::Position::new(0.5, 0.5).unwrap()));
        assert!(!a.area.covers(nexus_geo::Position::new(2.0, 2.0).unwrap()));
    }

    #[test]
    fn bad_tables_name_the_feature() {
        for (props, geometry, expect) in [
            (r#"{"value": "1"}"#, SQUARE, "valueName"),
            (
                r#"{"valueName": "SAME", "value": "1"}"#,
                r#"{"type": "Point", "coordinates": [0, 0]}"#,
                "Polygon",
            ),
            (
                r#"{"valueName": "SAME", "value": "1"}"#,
                r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}"#,
                "closed",
            ),
            (
                r#"{"valueName": "SAME", "value": "1"}"#,
                r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 100], [0, 1], [0, 0]]]}"#,
                "",
            ),
        ] {
            let err = GeocodeTable::from_geojson(&feature(props, geometry)).unwrap_err();
            assert!(
                matches!(err, GeocodeTableError::Feature { index: 0, .. }),
                "{err}"
            );
            assert!(err.to_string().contains(expect), "{err}");
        }
        assert!(matches!(
            GeocodeTable::from_geojson("[]"),
            Err(GeocodeTableError::NotGeoJson(_))
        ));
    }
}
