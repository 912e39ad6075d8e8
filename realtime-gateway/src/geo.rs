//! Geo filters: subscriber bounding boxes, publication locations and the index that matches
//! them (pure; used by the hub).
//!
//! A subscriber's box may cross the antimeridian (`min_lon > max_lon`); it is stored as two
//! boxes. A publication's location is a point (`data.location = {"lat", "lon"}` or a GeoJSON
//! `Point` in `data.geometry`) or, for other geometries, their bounding box. Lookups ask an
//! R-tree for the subscriber boxes intersecting that location, so the cost grows with the
//! number of matches, not with the number of subscribers.

use crate::error::GatewayError;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, Envelope, RTree};
use serde::Deserialize;
use serde_json::Value;

/// A validated bounding box in degrees, GeoJSON order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoBox {
    /// Western edge.
    pub min_lon: f64,
    /// Southern edge.
    pub min_lat: f64,
    /// Eastern edge (less than `min_lon` when the box crosses the antimeridian).
    pub max_lon: f64,
    /// Northern edge.
    pub max_lat: f64,
}

impl GeoBox {
    /// Checks `[minLon, minLat, maxLon, maxLat]`.
    pub fn new(
        min_lon: f64,
        min_lat: f64,
        max_lon: f64,
        max_lat: f64,
    ) -> Result<Self, GatewayError> {
        let lon_ok = |x: f64| x.is_finite() && (-180.0..=180.0).contains(&x);
        let lat_ok = |y: f64| y.is_finite() && (-90.0..=90.0).contains(&y);
        if !(lon_ok(min_lon) && lon_ok(max_lon) && lat_ok(min_lat) && lat_ok(max_lat)) {
            return Err(GatewayError::BadRequest(
                "bbox coordinates out of range".into(),
            ));
        }
        if min_lat > max_lat {
            return Err(GatewayError::BadRequest("bbox minLat above maxLat".into()));
        }
        Ok(GeoBox {
            min_lon,
            min_lat,
            max_lon,
            max_lat,
        })
    }

    /// Whether the box crosses the antimeridian.
    pub fn crosses_antimeridian(&self) -> bool {
        self.min_lon > self.max_lon
    }

    /// The one or two plain boxes covering this box.
    pub fn parts(&self) -> impl Iterator<Item = AABB<[f64; 2]>> + use<> {
        let (a, b) = if self.crosses_antimeridian() {
            (
                AABB::from_corners([self.min_lon, self.min_lat], [180.0, self.max_lat]),
                Some(AABB::from_corners(
                    [-180.0, self.min_lat],
                    [self.max_lon, self.max_lat],
                )),
            )
        } else {
            (
                AABB::from_corners([self.min_lon, self.min_lat], [self.max_lon, self.max_lat]),
                None,
            )
        };
        std::iter::once(a).chain(b)
    }

    /// Whether `loc` falls inside (or, for an area, overlaps) this box.
    pub fn matches(&self, loc: &Location) -> bool {
        let probe = loc.envelope();
        self.parts().any(|p| p.intersects(&probe))
    }
}

/// The geo filter of a subscription: subscribe `data = {"bbox": [...], "zoom": z}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoFilter {
    /// The area of interest.
    pub bbox: GeoBox,
    /// Map zoom level, if given (kept for clients; not used for matching).
    pub zoom: Option<u8>,
}

impl GeoFilter {
    /// Reads the filter from subscribe `data`; `Ok(None)` when `data` has no `bbox`.
    pub fn from_subscribe_data(data: Option<&Value>) -> Result<Option<GeoFilter>, GatewayError> {
        let Some(obj) = data.and_then(Value::as_object) else {
            return Ok(None);
        };
        let Some(bbox) = obj.get("bbox") else {
            return Ok(None);
        };
        let nums: Vec<f64> = match bbox.as_array() {
            Some(a) if a.len() == 4 => a.iter().filter_map(Value::as_f64).collect(),
            _ => Vec::new(),
        };
        if nums.len() != 4 {
            return Err(GatewayError::BadRequest(
                "bbox must be [minLon, minLat, maxLon, maxLat]".into(),
            ));
        }
        let zoom = match obj.get("zoom") {
            None | Some(Value::Null) => None,
            Some(z) => match z.as_f64() {
                Some(z) if (0.0..=30.0).contains(&z) => Some(z as u8),
                _ => {
                    return Err(GatewayError::BadRequest(
                        "zoom must be a number 0..=30".into(),
                    ));
                }
            },
        };
        Ok(Some(GeoFilter {
            bbox: GeoBox::new(nums[0], nums[1], nums[2], nums[3])?,
            zoom,
        }))
    }
}

/// Where a publication is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Location {
    /// A point, `[lon, lat]`.
    Point([f64; 2]),
    /// The bounding box of a line or area: lower-left and upper-right corners.
    Area([f64; 2], [f64; 2]),
}

impl Location {
    fn envelope(&self) -> AABB<[f64; 2]> {
        match *self {
            Location::Point(p) => AABB::from_point(p),
            Location::Area(a, b) => AABB::from_corners(a, b),
        }
    }

    /// Locates publication data: `data.location = {"lat", "lon"}`, else `data.geometry`
    /// (GeoJSON). `None` when absent or invalid: such publications reach every subscriber.
    pub fn of_data(data: &Value) -> Option<Location> {
        let obj = data.as_object()?;
        if let Some(loc) = obj.get("location") {
            let lat = loc.get("lat")?.as_f64()?;
            let lon = loc.get("lon")?.as_f64()?;
            return valid_point(lon, lat).then_some(Location::Point([lon, lat]));
        }
        geometry_location(obj.get("geometry")?)
    }

    /// Like [`Location::of_data`], from JSON text (publications arriving from another node).
    pub fn of_json(data: &str) -> Option<Location> {
        #[derive(Deserialize)]
        struct Located {
            #[serde(default)]
            location: Option<Value>,
            #[serde(default)]
            geometry: Option<Value>,
        }
        let located: Located = serde_json::from_str(data).ok()?;
        let mut obj = serde_json::Map::new();
        if let Some(l) = located.location {
            obj.insert("location".into(), l);
        }
        if let Some(g) = located.geometry {
            obj.insert("geometry".into(), g);
        }
        Location::of_data(&Value::Object(obj))
    }
}

fn valid_point(lon: f64, lat: f64) -> bool {
    lon.is_finite()
        && lat.is_finite()
        && (-180.0..=180.0).contains(&lon)
        && (-90.0..=90.0).contains(&lat)
}

fn geometry_location(geometry: &Value) -> Option<Location> {
    let coords = geometry.get("coordinates")?;
    if geometry.get("type").and_then(Value::as_str) == Some("Point") {
        let a = coords.as_array()?;
        let (lon, lat) = (a.first()?.as_f64()?, a.get(1)?.as_f64()?);
        return valid_point(lon, lat).then_some(Location::Point([lon, lat]));
    }
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    let mut stack = vec![(coords, 0u8)];
    while let Some((v, depth)) = stack.pop() {
        let arr = v.as_array()?;
        if depth > 4 {
            return None;
        }
        match (
            arr.first().and_then(Value::as_f64),
            arr.get(1).and_then(Value::as_f64),
        ) {
            (Some(lon), Some(lat)) => {
                if !valid_point(lon, lat) {
                    return None;
                }
                lo = [lo[0].min(lon), lo[1].min(lat)];
                hi = [hi[0].max(lon), hi[1].max(lat)];
            }
            _ => stack.extend(arr.iter().map(|c| (c, depth + 1))),
        }
    }
    (lo[0] <= hi[0]).then_some(Location::Area(lo, hi))
}

type Entry = GeomWithData<Rectangle<[f64; 2]>, u64>;

/// An R-tree of subscriber boxes keyed by subscriber id.
///
/// ```
/// use nexus_gateway::geo::{GeoBox, GeoIndex, Location};
/// let mut index = GeoIndex::default();
/// index.insert(1, &GeoBox::new(2.0, 48.0, 3.0, 49.0).unwrap());      // Paris
/// index.insert(2, &GeoBox::new(170.0, -50.0, -170.0, -30.0).unwrap()); // across 180°
/// let mut hits = Vec::new();
/// index.matches(&Location::Point([2.35, 48.85]), &mut hits);
/// assert_eq!(hits, [1]);
/// index.matches(&Location::Point([-175.0, -40.0]), &mut hits);
/// assert_eq!(hits, [2]);
/// ```
#[derive(Default)]
pub struct GeoIndex {
    tree: RTree<Entry>,
    len: usize,
}

impl GeoIndex {
    /// Adds subscriber `id` with its box.
    pub fn insert(&mut self, id: u64, bbox: &GeoBox) {
        for part in bbox.parts() {
            self.tree
                .insert(GeomWithData::new(Rectangle::from_aabb(part), id));
        }
        self.len += 1;
    }

    /// Removes subscriber `id`, inserted with `bbox`.
    pub fn remove(&mut self, id: u64, bbox: &GeoBox) {
        let mut removed = false;
        for part in bbox.parts() {
            removed |= self
                .tree
                .remove(&GeomWithData::new(Rectangle::from_aabb(part), id))
                .is_some();
        }
        if removed {
            self.len -= 1;
        }
    }

    /// Number of subscribers indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no subscriber is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replaces `out` with the ids of the subscribers whose box contains `loc`, sorted, each once.
    pub fn matches(&self, loc: &Location, out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            self.tree
                .locate_in_envelope_intersecting(&loc.envelope())
                .map(|e| e.data),
        );
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bbox_parsing_and_validation() {
        let ok =
            GeoFilter::from_subscribe_data(Some(&json!({"bbox": [-10, 40, 5, 52], "zoom": 6})))
                .unwrap()
                .unwrap();
        assert_eq!(ok.zoom, Some(6));
        assert!(
            GeoFilter::from_subscribe_data(Some(&json!({"other": 1})))
                .unwrap()
                .is_none()
        );
        assert!(GeoFilter::from_subscribe_data(None).unwrap().is_none());
        for bad in [
            json!({"bbox": [1, 2, 3]}),
            json!({"bbox": [0, 91, 1, 92]}),
            json!({"bbox": [-181, 0, 1, 1]}),
            json!({"bbox": [0, 10, 1, 5]}),
            json!({"bbox": "0,0,1,1"}),
            json!({"bbox": [0, 0, 1, 1], "zoom": "x"}),
        ] {
            assert!(GeoFilter::from_subscribe_data(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn locations_from_data() {
        assert_eq!(
            Location::of_data(&json!({"location": {"lat": 48.8, "lon": 2.3}})),
            Some(Location::Point([2.3, 48.8]))
        );
        assert_eq!(
            Location::of_data(&json!({"geometry": {"type": "Point", "coordinates": [2.3, 48.8]}})),
            Some(Location::Point([2.3, 48.8]))
        );
        let poly = json!({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 3], [0, 0]]]}});
        assert_eq!(
            Location::of_data(&poly),
            Some(Location::Area([0.0, 0.0], [2.0, 3.0]))
        );
        assert_eq!(
            Location::of_data(&json!({"location": {"lat": 95, "lon": 0}})),
            None
        );
        assert_eq!(Location::of_data(&json!({"title": "no place"})), None);
        assert_eq!(
            Location::of_json(r#"{"x":1,"location":{"lat":1,"lon":2}}"#),
            Some(Location::Point([2.0, 1.0]))
        );
    }

    #[test]
    fn index_inside_outside_antimeridian_and_removal() {
        let mut idx = GeoIndex::default();
        let paris = GeoBox::new(2.0, 48.0, 3.0, 49.0).unwrap();
        let fiji = GeoBox::new(170.0, -30.0, -170.0, -10.0).unwrap();
        idx.insert(1, &paris);
        idx.insert(2, &fiji);
        let mut hits = Vec::new();
        idx.matches(&Location::Point([2.5, 48.5]), &mut hits);
        assert_eq!(hits, [1]);
        idx.matches(&Location::Point([10.0, 48.5]), &mut hits);
        assert!(hits.is_empty());
        idx.matches(&Location::Point([178.0, -18.0]), &mut hits);
        assert_eq!(hits, [2]);
        idx.matches(&Location::Point([-175.0, -18.0]), &mut hits);
        assert_eq!(hits, [2]);
        idx.matches(&Location::Point([180.0, -18.0]), &mut hits);
        assert_eq!(hits, [2], "deduplicated across both halves");
        idx.matches(&Location::Area([0.0, 40.0], [2.1, 48.1]), &mut hits);
        assert_eq!(hits, [1], "an area overlapping the box matches");
        assert_eq!(idx.len(), 2);
        idx.remove(2, &fiji);
        idx.matches(&Location::Point([178.0, -18.0]), &mut hits);
        assert!(hits.is_empty());
        assert_eq!(idx.len(), 1);
        assert!(fiji.matches(&Location::Point([-179.0, -20.0])));
        assert!(!paris.matches(&Location::Point([-179.0, -20.0])));
    }
}
