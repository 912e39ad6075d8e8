//! The crate's error type.

use crate::budget::Interrupt;
use crate::fence::FenceId;
use crate::object::ObjectId;

/// Everything that can go wrong in the geo engine.
///
/// Every variant says when it happens. Input validation errors (`Invalid*`) map to a
/// `400` at the HTTP edge; `Unknown*` to `404`; `Duplicate*` to `409`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// A coordinate was NaN or infinite, or latitude was outside ±90°, or longitude outside
    /// ±180°. Returned by [`Position::new`](crate::Position::new) and every constructor that
    /// takes coordinates.
    #[error(
        "invalid coordinate (lat {lat}, lon {lon}): latitude must be finite and within ±90, \
         longitude finite and within ±180"
    )]
    InvalidCoordinate {
        /// The latitude that was given.
        lat: f64,
        /// The longitude that was given.
        lon: f64,
    },

    /// A bounding box had its minimum latitude above its maximum latitude. (A minimum
    /// longitude above the maximum longitude is valid: the box crosses the antimeridian.)
    #[error("invalid bounding box: min latitude {min_lat} is above max latitude {max_lat}")]
    InvalidBBox {
        /// The minimum latitude that was given.
        min_lat: f64,
        /// The maximum latitude that was given.
        max_lat: f64,
    },

    /// A polygon was rejected: too few points, self-intersecting rings, holes outside the
    /// shell, or an edge spanning more than 180° of longitude (areas that cross the
    /// antimeridian must be split in two, as RFC 7946 §3.1.9 asks).
    #[error("invalid area: {reason}")]
    InvalidArea {
        /// What is wrong with the polygon.
        reason: String,
    },

    /// A severity outside 1..=5.
    #[error("invalid severity {0}: must be 1 to 5")]
    InvalidSeverity(u8),

    /// A radius that is NaN, infinite or negative.
    #[error("invalid radius {0} m: must be finite and not negative")]
    InvalidRadius(f64),

    /// A map zoom above [`MAX_ZOOM`](crate::MAX_ZOOM).
    #[error("invalid zoom {0}: must be 0 to 20")]
    InvalidZoom(u8),

    /// [`GeoIndex::insert`](crate::GeoIndex::insert) was given an id that is already indexed.
    #[error("object {0} is already indexed")]
    DuplicateObject(ObjectId),

    /// An update, move or fence anchor named an object that is not indexed.
    #[error("object {0} is not indexed")]
    UnknownObject(ObjectId),

    /// [`GeoIndex::move_to`](crate::GeoIndex::move_to) was called on an area (only point
    /// objects move; replace an area with [`GeoIndex::update`](crate::GeoIndex::update)).
    #[error("object {0} is an area, not a point, and cannot be moved")]
    NotAPoint(ObjectId),

    /// [`GeoIndex::add_fence`](crate::GeoIndex::add_fence) was given an id already in use.
    #[error("fence {0} already exists")]
    DuplicateFence(FenceId),

    /// A query ran out of its [`Budget`](crate::Budget) and the caller asked for a complete
    /// answer ([`QueryResult::into_complete`](crate::QueryResult::into_complete)).
    #[error("query interrupted ({interrupt}) after {steps} steps")]
    Interrupted {
        /// Which limit stopped the query.
        interrupt: Interrupt,
        /// How many steps the query had taken.
        steps: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_bad_input() {
        let e = GeoError::InvalidCoordinate {
            lat: 91.0,
            lon: 0.0,
        };
        assert!(e.to_string().contains("lat 91"));
        assert_eq!(
            GeoError::InvalidSeverity(7).to_string(),
            "invalid severity 7: must be 1 to 5"
        );
        let e = GeoError::Interrupted {
            interrupt: Interrupt::Deadline,
            steps: 512,
        };
        assert_eq!(
            e.to_string(),
            "query interrupted (deadline) after 512 steps"
        );
    }
}
