//! Great-circle distances to rectangles, segments and areas.
//!
//! k-nearest search needs a *lower bound* of the distance from a point to everything inside
//! an R-tree node's lon/lat rectangle ([`to_rect_lower_bound_m`]); radius queries and circle
//! fences need the distance to an area and to the segment an object moved along.

use crate::coord::{EARTH_RADIUS_M, LonLatRect, Position, haversine_m, wrap_lon_delta};
use crate::object::Area;

/// Great-circle distance in metres from `p` to the closest point of the lon/lat rectangle
/// `r`, minus a hair so that rounding can never make it exceed the true distance of an
/// object inside `r`.
///
/// The closest point of a rectangle is found on its boundary: if `p`'s longitude is inside
/// the rectangle's span, straight north or south along the meridian (the latitude
/// difference is itself a lower bound of angular distance); otherwise on one of the two
/// bounding meridians, because along a parallel the distance grows with the longitude gap.
/// On a meridian edge see [`to_meridian_m`].
pub(crate) fn to_rect_lower_bound_m(p: Position, r: &LonLatRect) -> f64 {
    let (lat, lon) = (p.lat(), p.lon());
    let (min_lon, min_lat, max_lon, max_lat) = (r.min[0], r.min[1], r.max[0], r.max[1]);
    let lon_inside = (lon >= min_lon && lon <= max_lon)
        || (lon.abs() == 180.0 && (-lon >= min_lon && -lon <= max_lon));
    let exact = if lon_inside {
        if lat < min_lat {
            (min_lat - lat).to_radians() * EARTH_RADIUS_M
        } else if lat > max_lat {
            (lat - max_lat).to_radians() * EARTH_RADIUS_M
        } else {
            0.0
        }
    } else {
        to_meridian_m(p, min_lon, min_lat, max_lat).min(to_meridian_m(p, max_lon, min_lat, max_lat))
    };
    (exact * (1.0 - 1e-12) - 1e-9).max(0.0)
}

/// Distance from `p` to the meridian segment `lon = m, lat ∈ [lat_lo, lat_hi]`.
///
/// Along the great circle through the meridian, the distance from `p` grows with the angle
/// from the foot of the perpendicular, `atan2(sin φ, cos φ · cos Δλ)`, up to its antipode.
/// So the closest point of the segment is the foot if the segment holds it, else one of the
/// segment's ends.
fn to_meridian_m(p: Position, m: f64, lat_lo: f64, lat_hi: f64) -> f64 {
    let phi = p.lat().to_radians();
    let dl = wrap_lon_delta(p.lon() - m).to_radians();
    let foot = phi.sin().atan2(phi.cos() * dl.cos()).to_degrees();
    let d = |lat: f64| haversine_m(p.lat(), p.lon(), lat, m);
    let ends = d(lat_lo).min(d(lat_hi));
    if foot >= lat_lo && foot <= lat_hi {
        ends.min(d(foot))
    } else {
        ends
    }
}

/// Distance in metres from `p` to the segment `a → b`, whose points are the linear
/// interpolations of the endpoints' longitude and latitude (the edge model of [`Area`]).
///
/// The closest parameter is found in an equirectangular projection centred on `p`, then the
/// great-circle distance to that point of the segment is measured (and to both endpoints,
/// keeping the least). The result is the distance to an actual point of the segment, so it
/// never underestimates; for edges short against the Earth's radius it is the true minimum
/// to well under a metre.
pub(crate) fn to_segment_m(p: Position, a: [f64; 2], b: [f64; 2]) -> f64 {
    let k = p.lat().to_radians().cos();
    let ax = wrap_lon_delta(a[0] - p.lon()) * k;
    let ay = a[1] - p.lat();
    let dx = (b[0] - a[0]) * k;
    let dy = b[1] - a[1];
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let q = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
    let d = |c: [f64; 2]| haversine_m(p.lat(), p.lon(), c[1], c[0]);
    d(q).min(d(a)).min(d(b))
}

/// Distance in metres from `p` to an area: zero inside or on the boundary, otherwise the
/// least [`to_segment_m`] over every ring edge.
pub(crate) fn to_area_m(p: Position, area: &Area) -> f64 {
    if area.covers(p) {
        return 0.0;
    }
    let mut best = f64::INFINITY;
    for polygon in area.polygons() {
        for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
            for line in ring.lines() {
                let d = to_segment_m(p, [line.start.x, line.start.y], [line.end.x, line.end.y]);
                best = best.min(d);
            }
        }
    }
    best
}

/// The segment an object moved along, split at the antimeridian when the move took the
/// short way across it (a longitude jump of more than 180°).
pub(crate) fn move_segments(from: Position, to: Position) -> Vec<([f64; 2], [f64; 2])> {
    let (a, b) = (from.xy(), to.xy());
    let jump = b[0] - a[0];
    if jump.abs() <= 180.0 {
        return vec![(a, b)];
    }
    // Unwrap the destination so the step is short, cut where it meets the seam.
    let (seam, b_unwrapped) = if jump < 0.0 {
        (180.0, b[0] + 360.0)
    } else {
        (-180.0, b[0] - 360.0)
    };
    let t = (seam - a[0]) / (b_unwrapped - a[0]);
    let lat = a[1] + t * (b[1] - a[1]);
    vec![(a, [seam, lat]), ([-seam, lat], b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lat: f64, lon: f64) -> Position {
        Position::new(lat, lon).unwrap()
    }

    /// Brute-force minimum over a dense grid of the rectangle.
    fn grid_min(p: Position, r: &LonLatRect) -> f64 {
        let n = 200;
        let mut best = f64::INFINITY;
        for i in 0..=n {
            for j in 0..=n {
                let lon = r.min[0] + (r.max[0] - r.min[0]) * f64::from(i) / f64::from(n);
                let lat = r.min[1] + (r.max[1] - r.min[1]) * f64::from(j) / f64::from(n);
                best = best.min(haversine_m(p.lat(), p.lon(), lat, lon));
            }
        }
        best
    }

    #[test]
    fn rect_bound_never_exceeds_the_true_minimum() {
        let rects = [
            LonLatRect::new(10.0, 40.0, 20.0, 50.0),
            LonLatRect::new(-180.0, 80.0, 180.0, 90.0),
            LonLatRect::new(170.0, -10.0, 180.0, 10.0),
            LonLatRect::new(-5.0, -89.0, 5.0, -60.0),
        ];
        let points = [
            pos(45.0, 15.0),
            pos(0.0, 0.0),
            pos(60.0, 100.0),
            pos(-70.0, -175.0),
            pos(89.0, -90.0),
            pos(0.0, -179.0),
        ];
        for r in &rects {
            for &p in &points {
                let lb = to_rect_lower_bound_m(p, r);
                let brute = grid_min(p, r);
                assert!(lb <= brute + 1e-6, "{p:?} {r:?}: {lb} > {brute}");
                // And it is tight: the grid is within ~1 % of the rectangle's size.
                assert!(brute - lb < 60_000.0, "{p:?} {r:?}: {lb} << {brute}");
            }
        }
    }

    #[test]
    fn segment_distance_finds_the_interior_point() {
        // Segment along the equator from lon 0 to 2; point 1° north of its middle.
        let d = to_segment_m(pos(1.0, 1.0), [0.0, 0.0], [2.0, 0.0]);
        let expected = 1f64.to_radians() * EARTH_RADIUS_M;
        assert!((d - expected).abs() < 1.0, "{d} vs {expected}");
    }

    #[test]
    fn area_distance_is_zero_inside() {
        let a = Area::polygon(&[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]).unwrap();
        assert_eq!(to_area_m(pos(0.5, 0.5), &a), 0.0);
        let d = to_area_m(pos(0.5, 2.0), &a);
        assert!((d - haversine_m(0.5, 2.0, 0.5, 1.0)).abs() < 1.0);
    }

    #[test]
    fn moves_across_the_seam_are_split() {
        let parts = move_segments(pos(0.0, 179.0), pos(2.0, -179.0));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, [180.0, 1.0]);
        assert_eq!(parts[1].0, [-180.0, 1.0]);
        assert_eq!(move_segments(pos(0.0, 10.0), pos(1.0, 11.0)).len(), 1);
    }
}
