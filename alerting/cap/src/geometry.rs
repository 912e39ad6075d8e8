//! Area shapes: [`Point`], [`Polygon`], [`Circle`], and [`AreaGeometry`] for targeting.
//!
//! CAP writes coordinates as WGS 84 `lat,lon` pairs in decimal degrees; a polygon is a
//! whitespace-separated list of pairs, a circle is a pair, one space and a radius in
//! kilometres. The text is read here (syntax only); ranges, closure and the number of pairs
//! are checked by validation, so a JSON alert gets the same checks as an XML one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValueError;
use crate::model::{Area, ValuePair};

/// A WGS 84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

impl Point {
    /// Whether both coordinates are finite and in range.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.lat, self.lon)
    }
}

/// `area/polygon`: a closed ring of at least four `lat,lon` pairs, first equal to last.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Polygon {
    /// The pairs, in document order (`lat,lon`).
    pub points: Vec<Point>,
}

/// `area/circle`: a centre and a radius in kilometres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    /// The centre.
    pub center: Point,
    /// The radius in kilometres (0 for a point).
    pub radius_km: f64,
}

/// Reads a decimal number as CAP writes it: digits, an optional sign and an optional point.
/// Exponents, `inf` and `NaN` are refused.
pub(crate) fn decimal(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let mut digits = 0;
    let mut points = 0;
    for c in body.bytes() {
        match c {
            b'0'..=b'9' => digits += 1,
            b'.' => points += 1,
            _ => return None,
        }
    }
    if digits == 0 || points > 1 {
        return None;
    }
    text.parse().ok().filter(|v: &f64| v.is_finite())
}

/// Reads `lat,lon`; `which` names the pair in messages (only built on error).
fn pair(text: &str, which: impl Fn() -> String) -> Result<Point, ValueError> {
    let bad = |why: &str| ValueError::Geometry {
        reason: format!("{} '{text}' {why}", which()),
    };
    let (lat, lon) = text
        .split_once(',')
        .ok_or_else(|| bad("is not a 'lat,lon' pair"))?;
    let lat = decimal(lat).ok_or_else(|| bad("has a latitude that is not a decimal number"))?;
    let lon = decimal(lon).ok_or_else(|| bad("has a longitude that is not a decimal number"))?;
    Ok(Point { lat, lon })
}

impl FromStr for Polygon {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let points = s
            .split_ascii_whitespace()
            .enumerate()
            .map(|(i, p)| pair(p, || format!("pair {}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Polygon { points })
    }
}

impl fmt::Display for Polygon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.points.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl FromStr for Circle {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_ascii_whitespace();
        let (Some(center), Some(radius), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ValueError::Geometry {
                reason: format!("'{}' is not 'lat,lon radius'", s.trim()),
            });
        };
        let center = pair(center, || "centre".to_owned())?;
        let radius_km = decimal(radius).ok_or_else(|| ValueError::Geometry {
            reason: format!("radius '{radius}' is not a decimal number of kilometres"),
        })?;
        Ok(Circle { center, radius_km })
    }
}

impl fmt::Display for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.center, self.radius_km)
    }
}

macro_rules! serde_as_text {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_text!(Polygon);
serde_as_text!(Circle);

/// An area's shapes in the forms the geo engine takes: polygons as rings of `(lon, lat)`
/// (GeoJSON order), circles as `(lat, lon, radius_m)`, and the geocodes (which need a lookup
/// table to become shapes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AreaGeometry {
    /// Each polygon as `(lon, lat)` pairs, closing pair included.
    pub polygons: Vec<Vec<(f64, f64)>>,
    /// Each circle as `(lat, lon, radius_m)`.
    pub circles: Vec<(f64, f64, f64)>,
    /// The geocodes, unresolved.
    pub geocodes: Vec<ValuePair>,
}

impl AreaGeometry {
    /// Whether the area has no polygon, circle or geocode (only a description).
    pub fn is_empty(&self) -> bool {
        self.polygons.is_empty() && self.circles.is_empty() && self.geocodes.is_empty()
    }
}

impl Area {
    /// The area's shapes for targeting. Shapes with invalid coordinates are left out
    /// (validate the alert to hear about them).
    pub fn geometry(&self) -> AreaGeometry {
        AreaGeometry {
            polygons: self
                .polygon
                .iter()
                .filter(|p| p.points.len() >= 4 && p.points.iter().all(Point::is_valid))
                .map(|p| p.points.iter().map(|pt| (pt.lon, pt.lat)).collect())
                .collect(),
            circles: self
                .circle
                .iter()
                .filter(|c| c.center.is_valid() && c.radius_km.is_finite() && c.radius_km >= 0.0)
                .map(|c| (c.center.lat, c.center.lon, c.radius_km * 1000.0))
                .collect(),
            geocodes: self.geocode.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_text_round_trips() {
        let text = "38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.47,-120.14";
        let p: Polygon = text.parse().unwrap();
        assert_eq!(p.points.len(), 5);
        assert_eq!(
            p.points[0],
            Point {
                lat: 38.47,
                lon: -120.14
            }
        );
        assert_eq!(p.to_string(), text);
    }

    #[test]
    fn polygon_syntax_errors_name_the_pair() {
        let err = "1,2 3;4 5,6".parse::<Polygon>().unwrap_err();
        assert_eq!(err.to_string(), "pair 2 '3;4' is not a 'lat,lon' pair");
        let err = "1,2 3,x".parse::<Polygon>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "pair 2 '3,x' has a longitude that is not a decimal number"
        );
        assert!("1e5,2".parse::<Polygon>().is_err());
        assert!("NaN,2".parse::<Polygon>().is_err());
        assert_eq!("".parse::<Polygon>().unwrap().points.len(), 0);
    }

    #[test]
    fn circle_reads_centre_and_radius() {
        let c: Circle = "32.9525,-115.5527 0".parse().unwrap();
        assert_eq!(
            c.center,
            Point {
                lat: 32.9525,
                lon: -115.5527
            }
        );
        assert_eq!(c.radius_km, 0.0);
        assert_eq!(c.to_string(), "32.9525,-115.5527 0");
        assert_eq!(
            "32.9525,-115.5527"
                .parse::<Circle>()
                .unwrap_err()
                .to_string(),
            "'32.9525,-115.5527' is not 'lat,lon radius'"
        );
        assert_eq!(
            "32.9525,-115.5527 ten"
                .parse::<Circle>()
                .unwrap_err()
                .to_string(),
            "radius 'ten' is not a decimal number of kilometres"
        );
    }

    #[test]
    fn decimals_are_plain() {
        assert_eq!(decimal("+1.5"), Some(1.5));
        assert_eq!(decimal("-.5"), Some(-0.5));
        assert_eq!(decimal("5."), Some(5.0));
        let huge = "9".repeat(400);
        for bad in [
            "",
            "-",
            ".",
            "1.2.3",
            "1e3",
            "inf",
            "0x10",
            " 1",
            huge.as_str(),
        ] {
            assert_eq!(decimal(bad), None, "{bad}");
        }
    }

    #[test]
    fn geometry_swaps_to_lon_lat_and_metres() {
        let area = Area {
            area_desc: "x".into(),
            polygon: vec![
                "1,2 1,3 2,3 1,2".parse().unwrap(),
                "1,2 1,3".parse().unwrap(),
            ],
            circle: vec!["10,20 1.5".parse().unwrap()],
            ..Area::default()
        };
        let g = area.geometry();
        assert_eq!(
            g.polygons,
            vec![vec![(2.0, 1.0), (3.0, 1.0), (3.0, 2.0), (2.0, 1.0)]]
        );
        assert_eq!(g.circles, vec![(10.0, 20.0, 1500.0)]);
        assert!(!g.is_empty());
    }
}
