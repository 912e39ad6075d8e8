//! Validated coordinates, time, bounding boxes and great-circle distance.
//!
//! All geometry in the engine is in WGS 84 degrees. Distances are great-circle distances on a
//! sphere of radius [`EARTH_RADIUS_M`] (the haversine formula), which is within 0.5 % of the
//! ellipsoidal distance everywhere.

use serde::Serialize;

use crate::error::GeoError;

/// Mean Earth radius in metres (IUGG `R1`), the sphere used for every distance.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point on the Earth: latitude and longitude in degrees, validated.
///
/// Invariant: both are finite, `|lat| <= 90` and `|lon| <= 180`. Longitudes `-180` and `180`
/// name the same meridian; queries treat them as equal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Position {
    lat: f64,
    lon: f64,
}

impl Position {
    /// Builds a position, rejecting NaN, infinities and out-of-range values with
    /// [`GeoError::InvalidCoordinate`].
    pub fn new(lat: f64, lon: f64) -> Result<Self, GeoError> {
        if lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0 {
            Ok(Self { lat, lon })
        } else {
            Err(GeoError::InvalidCoordinate { lat, lon })
        }
    }

    /// A position from computed values known to be finite, clamped into range.
    pub(crate) fn clamped(lat: f64, lon: f64) -> Self {
        Self {
            lat: lat.clamp(-90.0, 90.0),
            lon: lon.clamp(-180.0, 180.0),
        }
    }

    /// Latitude in degrees, within ±90.
    pub fn lat(self) -> f64 {
        self.lat
    }

    /// Longitude in degrees, within ±180.
    pub fn lon(self) -> f64 {
        self.lon
    }

    /// Great-circle distance to `other` in metres (haversine).
    pub fn distance_m(self, other: Position) -> f64 {
        haversine_m(self.lat, self.lon, other.lat, other.lon)
    }

    /// `[lon, lat]`, the GeoJSON and R-tree coordinate order.
    pub(crate) fn xy(self) -> [f64; 2] {
        [self.lon, self.lat]
    }
}

/// Haversine distance in metres between two `(lat, lon)` pairs given in degrees.
///
/// Longitude differences wrap around the antimeridian naturally (the formula only uses
/// `sin²(Δλ/2)`), so `(0, 179.9)` and `(0, -179.9)` are about 22 km apart.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// The unit vector of a position on the sphere, `[x, y, z]` (x towards 0°N 0°E, z towards
/// the north pole), stored in single precision: 12 bytes per R-tree entry instead of 24.
/// The straight-line (chord) distance between two unit vectors is a monotonic function of
/// their great-circle distance, so comparing chords needs no trigonometry per point once
/// the vectors are stored. Rounding to `f32` moves a vector by at most 1.1·10⁻⁷, under a
/// metre on the Earth; [`CapTest`] leaves a wider band to the haversine.
pub(crate) fn unit_vector(p: Position) -> [f32; 3] {
    let [x, y, z] = unit_vector_f64(p);
    // Rounding to the nearest f32 is the point: see above.
    #[allow(clippy::cast_possible_truncation)]
    [x as f32, y as f32, z as f32]
}

fn unit_vector_f64(p: Position) -> [f64; 3] {
    let (sin_lat, cos_lat) = p.lat.to_radians().sin_cos();
    let (sin_lon, cos_lon) = p.lon.to_radians().sin_cos();
    [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat]
}

/// Squared chord between a unit vector and a stored (single-precision) one.
fn chord_sq(a: &[f64; 3], b: &[f32; 3]) -> f64 {
    let (dx, dy, dz) = (
        a[0] - f64::from(b[0]),
        a[1] - f64::from(b[1]),
        a[2] - f64::from(b[2]),
    );
    dx * dx + dy * dy + dz * dz
}

/// Squared chord of a great-circle distance, for distances up to a quarter circumference.
fn chord_sq_of_m(distance_m: f64) -> f64 {
    let c = 2.0 * (distance_m / (2.0 * EARTH_RADIUS_M)).sin();
    c * c
}

/// "Within `radius_m` of `center`", decided for most points by comparing squared chords
/// of stored unit vectors, and by [`haversine_m`] only near the edge, so the answer is
/// exactly that of `haversine_m(…) <= radius_m`.
///
/// The chord test is trusted only outside a band of ±(8 m + 10⁻⁶·r) around the radius:
/// the stored vectors are within 1.1·10⁻⁷ of the true ones, which moves a chord by at most
/// that and a distance below a quarter circumference by at most 1.1·10⁻⁷·R·√2 ≈ 1 m, well
/// inside the band. Above a quarter circumference (10 000 km) chords lose resolution near
/// the antipode, so larger radii always use the haversine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CapTest {
    center: Position,
    xyz: [f64; 3],
    radius_m: f64,
    /// A squared chord at or below this is surely within the radius.
    inside_sq: f64,
    /// A squared chord above this is surely outside.
    outside_sq: f64,
}

impl CapTest {
    pub(crate) fn new(center: Position, radius_m: f64) -> Self {
        let margin_m = 8.0 + radius_m * 1e-6;
        let quarter_m = std::f64::consts::FRAC_PI_2 * EARTH_RADIUS_M;
        let (inside_sq, outside_sq) = if radius_m + margin_m > quarter_m {
            (-1.0, f64::INFINITY)
        } else if radius_m > margin_m {
            (
                chord_sq_of_m(radius_m - margin_m),
                chord_sq_of_m(radius_m + margin_m),
            )
        } else {
            (-1.0, chord_sq_of_m(radius_m + margin_m))
        };
        Self {
            center,
            xyz: unit_vector_f64(center),
            radius_m,
            inside_sq,
            outside_sq,
        }
    }

    /// Whether the point at `[lon, lat]` with unit vector `xyz` is within the radius.
    pub(crate) fn contains(&self, xyz: &[f32; 3], [lon, lat]: [f64; 2]) -> bool {
        let d2 = chord_sq(&self.xyz, xyz);
        if d2 <= self.inside_sq {
            true
        } else if d2 > self.outside_sq {
            false
        } else {
            self.distance_m(lon, lat) <= self.radius_m
        }
    }

    /// Whether the point with unit vector `xyz` is surely beyond the radius (no haversine
    /// needed to reject it).
    pub(crate) fn surely_outside(&self, xyz: &[f32; 3]) -> bool {
        chord_sq(&self.xyz, xyz) > self.outside_sq
    }

    /// The exact (haversine) distance from the centre.
    pub(crate) fn distance_m(&self, lon: f64, lat: f64) -> f64 {
        haversine_m(self.center.lat, self.center.lon, lat, lon)
    }

    pub(crate) fn radius_m(&self) -> f64 {
        self.radius_m
    }

    pub(crate) fn center(&self) -> Position {
        self.center
    }
}

/// A point in time: milliseconds since the Unix epoch.
///
/// The engine never reads a clock; the caller passes `now` in (sans-IO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A longitude/latitude box, `[min_lon, min_lat, max_lon, max_lat]` as in GeoJSON.
///
/// Invariant: all four values are valid coordinates and `min_lat <= max_lat`. When
/// `min_lon > max_lon` the box crosses the antimeridian (RFC 7946 §5.2): it spans from
/// `min_lon` east to 180° and on from -180° to `max_lon`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    min_lon: f64,
    min_lat: f64,
    max_lon: f64,
    max_lat: f64,
}

impl BBox {
    /// Builds a box in GeoJSON order. Errors with [`GeoError::InvalidCoordinate`] for a bad
    /// corner and [`GeoError::InvalidBBox`] when `min_lat > max_lat`.
    pub fn new(min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> Result<Self, GeoError> {
        Position::new(min_lat, min_lon)?;
        Position::new(max_lat, max_lon)?;
        if min_lat > max_lat {
            return Err(GeoError::InvalidBBox { min_lat, max_lat });
        }
        Ok(Self {
            min_lon,
            min_lat,
            max_lon,
            max_lat,
        })
    }

    /// The whole world.
    pub fn world() -> Self {
        Self {
            min_lon: -180.0,
            min_lat: -90.0,
            max_lon: 180.0,
            max_lat: 90.0,
        }
    }

    /// A box from a rectangle built out of valid coordinates.
    pub(crate) fn from_rect(r: LonLatRect) -> Self {
        Self {
            min_lon: r.min[0],
            min_lat: r.min[1],
            max_lon: r.max[0],
            max_lat: r.max[1],
        }
    }

    /// Western edge in degrees.
    pub fn min_lon(&self) -> f64 {
        self.min_lon
    }

    /// Southern edge in degrees.
    pub fn min_lat(&self) -> f64 {
        self.min_lat
    }

    /// Eastern edge in degrees.
    pub fn max_lon(&self) -> f64 {
        self.max_lon
    }

    /// Northern edge in degrees.
    pub fn max_lat(&self) -> f64 {
        self.max_lat
    }

    /// Whether the box crosses the antimeridian (`min_lon > max_lon`).
    pub fn crosses_antimeridian(&self) -> bool {
        self.min_lon > self.max_lon
    }

    /// Whether `p` lies in the box, edges included, honouring the antimeridian.
    pub fn contains(&self, p: Position) -> bool {
        self.contains_lon_lat(p.lon, p.lat)
    }

    /// [`BBox::contains`] on raw (valid) coordinates, without building the parts.
    pub(crate) fn contains_lon_lat(&self, lon: f64, lat: f64) -> bool {
        if lat < self.min_lat || lat > self.max_lat {
            return false;
        }
        let in_span = |lon: f64| {
            if self.crosses_antimeridian() {
                lon >= self.min_lon || lon <= self.max_lon
            } else {
                lon >= self.min_lon && lon <= self.max_lon
            }
        };
        in_span(lon) || (lon.abs() == 180.0 && in_span(-lon))
    }

    /// The box as one or two non-crossing planar rectangles (plus degenerate rectangles on
    /// the ±180° seam so that a point stored at -180 is found by a box ending at 180 and the
    /// other way round).
    pub(crate) fn parts(&self) -> Parts {
        let mut parts = Parts::default();
        if self.crosses_antimeridian() {
            parts.push(LonLatRect::new(
                self.min_lon,
                self.min_lat,
                180.0,
                self.max_lat,
            ));
            parts.push(LonLatRect::new(
                -180.0,
                self.min_lat,
                self.max_lon,
                self.max_lat,
            ));
        } else {
            parts.push(LonLatRect::new(
                self.min_lon,
                self.min_lat,
                self.max_lon,
                self.max_lat,
            ));
        }
        parts.add_seam_twins();
        parts
    }
}

/// A planar rectangle in `[lon, lat]` degrees that does not cross the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LonLatRect {
    pub(crate) min: [f64; 2],
    pub(crate) max: [f64; 2],
}

impl LonLatRect {
    pub(crate) fn new(min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> Self {
        Self {
            min: [min_lon, min_lat],
            max: [max_lon, max_lat],
        }
    }

    pub(crate) fn to_geo(self) -> geo::Rect<f64> {
        geo::Rect::new(
            geo::coord! { x: self.min[0], y: self.min[1] },
            geo::coord! { x: self.max[0], y: self.max[1] },
        )
    }
}

/// Up to four planar rectangles covering one logical region.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parts {
    rects: Vec<LonLatRect>,
}

impl Parts {
    fn push(&mut self, r: LonLatRect) {
        self.rects.push(r);
    }

    pub(crate) fn full_world() -> Self {
        let mut p = Self::default();
        p.push(LonLatRect::new(-180.0, -90.0, 180.0, 90.0));
        p
    }

    /// A rectangle touching +180 also matches objects stored at -180 (same meridian), and the
    /// other way round.
    fn add_seam_twins(&mut self) {
        let mut twins = Vec::new();
        for r in &self.rects {
            let covers_west = self.rects.iter().any(|o| o.min[0] <= -180.0);
            let covers_east = self.rects.iter().any(|o| o.max[0] >= 180.0);
            if r.max[0] >= 180.0 && !covers_west {
                twins.push(LonLatRect::new(-180.0, r.min[1], -180.0, r.max[1]));
            }
            if r.min[0] <= -180.0 && !covers_east {
                twins.push(LonLatRect::new(180.0, r.min[1], 180.0, r.max[1]));
            }
        }
        self.rects.extend(twins);
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, LonLatRect> {
        self.rects.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.rects.len()
    }
}

/// A conservative lon/lat cover of the spherical cap of `radius_m` around `center`: every
/// point within `radius_m` (great-circle) lies in one of the returned rectangles.
///
/// Near the poles (the cap contains a pole) the cover spans every longitude; across ±180°
/// it is split in two. The bounds follow from spherical trigonometry: the largest longitude
/// offset on a cap of angular radius `δ` around latitude `φ` is `asin(sin δ / cos φ)`.
pub(crate) fn cap_cover(center: Position, radius_m: f64) -> Parts {
    // Margin absorbs rounding so the cover stays conservative: about 1 cm.
    const MARGIN_DEG: f64 = 1e-7;
    let delta = radius_m / EARTH_RADIUS_M;
    if delta >= std::f64::consts::PI {
        return Parts::full_world();
    }
    let delta_deg = delta.to_degrees();
    let lat_min = center.lat - delta_deg - MARGIN_DEG;
    let lat_max = center.lat + delta_deg + MARGIN_DEG;
    if lat_max >= 90.0 || lat_min <= -90.0 {
        let mut p = Parts::default();
        p.push(LonLatRect::new(
            -180.0,
            lat_min.max(-90.0),
            180.0,
            lat_max.min(90.0),
        ));
        return p;
    }
    let s = delta.sin() / center.lat.to_radians().cos();
    if s >= 1.0 {
        let mut p = Parts::default();
        p.push(LonLatRect::new(-180.0, lat_min, 180.0, lat_max));
        return p;
    }
    let dlon = s.asin().to_degrees() * (1.0 + 1e-9) + MARGIN_DEG;
    lon_span(center.lon - dlon, center.lon + dlon, lat_min, lat_max)
}

/// Splits a longitude span that may run past ±180° into non-crossing rectangles.
pub(crate) fn lon_span(west: f64, east: f64, lat_min: f64, lat_max: f64) -> Parts {
    let mut p = Parts::default();
    if east - west >= 360.0 {
        p.push(LonLatRect::new(-180.0, lat_min, 180.0, lat_max));
    } else if west < -180.0 {
        p.push(LonLatRect::new(west + 360.0, lat_min, 180.0, lat_max));
        p.push(LonLatRect::new(-180.0, lat_min, east, lat_max));
    } else if east > 180.0 {
        p.push(LonLatRect::new(west, lat_min, 180.0, lat_max));
        p.push(LonLatRect::new(-180.0, lat_min, east - 360.0, lat_max));
    } else {
        p.push(LonLatRect::new(west, lat_min, east, lat_max));
    }
    p.add_seam_twins();
    p
}

/// Maps a longitude difference into `[-180, 180]`.
pub(crate) fn wrap_lon_delta(d: f64) -> f64 {
    if d > 180.0 {
        d - 360.0
    } else if d < -180.0 {
        d + 360.0
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lat: f64, lon: f64) -> Position {
        Position::new(lat, lon).unwrap()
    }

    #[test]
    fn rejects_out_of_range_and_non_finite() {
        for (lat, lon) in [
            (90.1, 0.0),
            (-90.1, 0.0),
            (0.0, 180.01),
            (0.0, -181.0),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            assert!(matches!(
                Position::new(lat, lon),
                Err(GeoError::InvalidCoordinate { .. })
            ));
        }
        assert!(Position::new(90.0, -180.0).is_ok());
    }

    #[test]
    fn one_degree_of_latitude_is_r_times_pi_over_180() {
        let d = pos(10.0, 20.0).distance_m(pos(11.0, 20.0));
        let expected = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        assert!((d - expected).abs() < 1e-6, "{d} vs {expected}");
    }

    #[test]
    fn distance_wraps_the_antimeridian() {
        let d = pos(0.0, 179.9).distance_m(pos(0.0, -179.9));
        assert!((d - 0.2f64.to_radians() * EARTH_RADIUS_M).abs() < 1e-6);
    }

    #[test]
    fn bbox_rejects_inverted_latitudes_but_accepts_inverted_longitudes() {
        assert!(matches!(
            BBox::new(0.0, 10.0, 1.0, 5.0),
            Err(GeoError::InvalidBBox { .. })
        ));
        let b = BBox::new(170.0, -10.0, -170.0, 10.0).unwrap();
        assert!(b.crosses_antimeridian());
        assert!(b.contains(pos(0.0, 175.0)));
        assert!(b.contains(pos(0.0, -175.0)));
        assert!(!b.contains(pos(0.0, 0.0)));
    }

    #[test]
    fn seam_twins_make_minus_180_and_180_equal() {
        let b = BBox::new(170.0, -1.0, 180.0, 1.0).unwrap();
        assert!(b.contains(pos(0.0, -180.0)));
        let b = BBox::new(-180.0, -1.0, -170.0, 1.0).unwrap();
        assert!(b.contains(pos(0.0, 180.0)));
    }

    #[test]
    fn cap_cover_spans_all_longitudes_when_it_holds_a_pole() {
        let p = cap_cover(pos(89.0, 10.0), 200_000.0);
        assert_eq!(p.len(), 1);
        let r = p.iter().next().unwrap();
        assert_eq!((r.min[0], r.max[0], r.max[1]), (-180.0, 180.0, 90.0));
    }

    #[test]
    fn cap_cover_splits_at_the_antimeridian() {
        let p = cap_cover(pos(0.0, 179.9), 50_000.0);
        assert!(p.iter().any(|r| r.max[0] == 180.0));
        assert!(p.iter().any(|r| r.min[0] == -180.0 && r.max[0] > -180.0));
    }

    #[test]
    fn cap_cover_is_conservative_on_the_circle() {
        // Walk the circle: every point at exactly the radius must be covered.
        let c = pos(60.0, 30.0);
        let r = 500_000.0;
        let cover = cap_cover(c, r);
        for i in 0..360 {
            let bearing = f64::from(i).to_radians();
            let (lat, lon) = destination(c, bearing, r);
            let inside = cover.iter().any(|rect| {
                lon >= rect.min[0] && lon <= rect.max[0] && lat >= rect.min[1] && lat <= rect.max[1]
            });
            assert!(inside, "bearing {i}: ({lat}, {lon}) not covered");
        }
    }

    #[test]
    fn cap_test_agrees_with_haversine_at_the_edge() {
        // Points just inside and just outside the radius, on every bearing, at several
        // radii (including 0 and beyond a quarter circumference): the chord shortcut must
        // give exactly the haversine answer.
        for (c, r) in [
            (pos(0.0, 179.99), 50_000.0),
            (pos(60.0, 30.0), 500_000.0),
            (pos(89.9, 0.0), 20_000.0),
            (pos(-33.0, 151.0), 1.0),
            (pos(10.0, 10.0), 0.0),
            (pos(10.0, -170.0), 12_000_000.0),
        ] {
            let cap = CapTest::new(c, r);
            for i in 0..720 {
                let bearing = f64::from(i).to_radians() / 2.0;
                for dr in [
                    -20.0, -9.0, -2.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 2.0, 9.0, 20.0, 1e3,
                ] {
                    let (lat, lon) = destination(c, bearing, (r + dr).max(0.0));
                    let p = Position::clamped(lat, lon);
                    let want = haversine_m(c.lat, c.lon, p.lat, p.lon) <= r;
                    assert_eq!(
                        cap.contains(&unit_vector(p), p.xy()),
                        want,
                        "{c:?} r={r} {p:?}"
                    );
                    if cap.surely_outside(&unit_vector(p)) {
                        assert!(!want);
                    }
                }
            }
        }
    }

    /// Spherical destination point, for tests.
    fn destination(c: Position, bearing: f64, dist: f64) -> (f64, f64) {
        let d = dist / EARTH_RADIUS_M;
        let (p1, l1) = (c.lat.to_radians(), c.lon.to_radians());
        let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * bearing.cos()).asin();
        let l2 = l1 + (bearing.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
        (p2.to_degrees(), wrap_lon_delta(l2.to_degrees()))
    }
}
