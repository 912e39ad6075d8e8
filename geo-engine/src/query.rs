//! Spatial queries: bounding box, radius, within / intersecting an area.
//!
//! Every query runs in two phases: the R-tree yields candidates whose bounding box meets a
//! conservative planar cover of the query shape, then each candidate is tested exactly
//! (great-circle distance for radius, `geo` predicates for areas) and against the
//! [`Filter`]. Each candidate costs one step of the [`Budget`].

use std::collections::HashSet;
use std::ops::ControlFlow;

use geo::{Contains, Intersects};

use crate::budget::{Budget, Completion, Meter};
use crate::coord::{BBox, Position, cap_cover, haversine_m};
use crate::distance::to_area_m;
use crate::error::GeoError;
use crate::filter::{Filter, Prepared};
use crate::index::{Entry, IdMap, Tree};
use crate::object::{Area, Geometry, Object, ObjectId};

/// The region a [`Query`] looks in.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Objects intersecting a box (which may cross the antimeridian).
    BBox(BBox),
    /// Objects within `radius_m` metres (great-circle) of `center`; for areas, the distance
    /// to their closest point. Results come nearest first.
    Radius {
        /// Centre of the circle.
        center: Position,
        /// Radius in metres, finite and not negative.
        radius_m: f64,
    },
    /// Objects entirely inside the area (points on its boundary count as inside).
    Within(Area),
    /// Objects sharing at least one point with the area.
    Intersects(Area),
}

/// A spatial query with attribute filter and result limit.
///
/// ```
/// use nexus_geo::{BBox, Filter, Kind, KindSet, Query};
/// let q = Query::bbox(BBox::new(170.0, -20.0, -170.0, -10.0)?) // crosses ±180°
///     .filter(Filter::default().kinds(KindSet::only(Kind::Incident)))
///     .limit(100);
/// # let _ = q;
/// # Ok::<(), nexus_geo::GeoError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Where to look.
    pub shape: Shape,
    /// Which objects qualify.
    pub filter: Filter,
    /// At most this many results.
    pub limit: Option<usize>,
}

impl Query {
    /// Objects in a box.
    pub fn bbox(bbox: BBox) -> Self {
        Self::new(Shape::BBox(bbox))
    }

    /// Objects within `radius_m` of `center`, nearest first.
    pub fn radius(center: Position, radius_m: f64) -> Self {
        Self::new(Shape::Radius { center, radius_m })
    }

    /// Objects inside `area`.
    pub fn within(area: Area) -> Self {
        Self::new(Shape::Within(area))
    }

    /// Objects touching `area`.
    pub fn intersects(area: Area) -> Self {
        Self::new(Shape::Intersects(area))
    }

    fn new(shape: Shape) -> Self {
        Self {
            shape,
            filter: Filter::default(),
            limit: None,
        }
    }

    /// Sets the attribute filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Caps the number of results.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// One result: the object and, for radius and k-nearest queries, its distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit<'a> {
    /// The matching object.
    pub object: &'a Object,
    /// Great-circle distance from the query centre in metres (radius and k-nearest only).
    pub distance_m: Option<f64>,
}

/// What a query found and whether it finished.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult<'a> {
    /// The results (nearest first for radius and k-nearest queries).
    pub hits: Vec<Hit<'a>>,
    /// Whether the answer is complete, truncated by the limit, or cut by the budget.
    pub completion: Completion,
    /// Steps taken (candidates or tree nodes examined).
    pub steps: u64,
}

impl<'a> QueryResult<'a> {
    /// Whether the budget cut the query short (the hits are a partial answer).
    pub fn is_partial(&self) -> bool {
        matches!(self.completion, Completion::Interrupted(_))
    }

    /// The hits, or [`GeoError::Interrupted`] when the budget cut the query short.
    pub fn into_complete(self) -> Result<Vec<Hit<'a>>, GeoError> {
        match self.completion {
            Completion::Interrupted(interrupt) => Err(GeoError::Interrupted {
                interrupt,
                steps: self.steps,
            }),
            Completion::Complete | Completion::Truncated => Ok(self.hits),
        }
    }

    /// The ids of the hits, in order.
    pub fn ids(&self) -> Vec<ObjectId> {
        self.hits.iter().map(|h| h.object.id).collect()
    }
}

/// Validates a radius.
pub(crate) fn check_radius(radius_m: f64) -> Result<(), GeoError> {
    if radius_m.is_finite() && radius_m >= 0.0 {
        Ok(())
    } else {
        Err(GeoError::InvalidRadius(radius_m))
    }
}

/// Runs `query` over the tree.
pub(crate) fn run<'a>(
    tree: &'a Tree,
    objects: &'a IdMap<Object>,
    query: &Query,
    budget: &Budget<'_>,
) -> Result<QueryResult<'a>, GeoError> {
    let mut meter = budget.meter();
    let limit = query.limit.unwrap_or(usize::MAX);
    let (parts, exact) = match &query.shape {
        Shape::BBox(b) => {
            let rects = b.parts().iter().map(|r| r.to_geo()).collect();
            (b.parts(), Exact::BBox(*b, rects))
        }
        Shape::Radius { center, radius_m } => {
            check_radius(*radius_m)?;
            (
                cap_cover(*center, *radius_m),
                Exact::Radius(*center, *radius_m),
            )
        }
        Shape::Within(area) => (BBox::from_rect(area.bounds()).parts(), Exact::Within(area)),
        Shape::Intersects(area) => (
            BBox::from_rect(area.bounds()).parts(),
            Exact::Intersects(area),
        ),
    };

    let filter = Prepared::new(&query.filter);
    // Radius results are sorted nearest first before the limit applies: collect ids and
    // distances, and look objects up only for the results that survive.
    let sorted = matches!(query.shape, Shape::Radius { .. });
    let mut seen = (parts.len() > 1).then(HashSet::new);
    let mut hits = Vec::new();
    let mut found: Vec<(f64, ObjectId)> = Vec::new();
    let mut truncated = false;
    for rect in parts.iter() {
        let flow = scan(tree, rect.aabb(), &mut meter, |entry| {
            if !filter.pass_tags(&entry.tags) {
                return ControlFlow::Continue(());
            }
            // Points are decided from the entry alone; areas need their polygons.
            let mut object = None;
            let distance_m = match entry.point() {
                Some(xy) => exact.test_point(xy),
                None => objects.get(&entry.id).and_then(|o| {
                    object = Some(o);
                    exact.test(o)
                }),
            };
            let Some(distance_m) = distance_m else {
                return ControlFlow::Continue(());
            };
            if !sorted || filter.needs_confirm() {
                let Some(o) = object.or_else(|| objects.get(&entry.id)) else {
                    return ControlFlow::Continue(());
                };
                if !filter.confirm(&o.attrs) {
                    return ControlFlow::Continue(());
                }
                object = Some(o);
            }
            if let Some(seen) = seen.as_mut()
                && !seen.insert(entry.id)
            {
                return ControlFlow::Continue(());
            }
            match object {
                Some(object) if !sorted => {
                    if hits.len() == limit {
                        truncated = true;
                        return ControlFlow::Break(());
                    }
                    hits.push(Hit { object, distance_m });
                }
                _ => found.push((distance_m.unwrap_or(0.0), entry.id)),
            }
            ControlFlow::Continue(())
        });
        if flow.is_break() {
            break;
        }
    }
    if sorted {
        let nearest_first =
            |a: &(f64, ObjectId), b: &(f64, ObjectId)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if found.len() > limit {
            // Select the nearest `limit` in linear time, then sort only those.
            if limit > 0 {
                found.select_nth_unstable_by(limit - 1, nearest_first);
            }
            found.truncate(limit);
            truncated = true;
        }
        found.sort_unstable_by(nearest_first);
        hits = found
            .into_iter()
            .filter_map(|(d, id)| {
                objects.get(&id).map(|object| Hit {
                    object,
                    distance_m: Some(d),
                })
            })
            .collect();
    }
    let completion = match meter.interrupted() {
        Some(i) => Completion::Interrupted(i),
        None if truncated => Completion::Truncated,
        None => Completion::Complete,
    };
    Ok(QueryResult {
        hits,
        completion,
        steps: meter.steps(),
    })
}

/// The exact test of a query shape.
enum Exact<'q> {
    BBox(BBox, Vec<geo::Rect<f64>>),
    Radius(Position, f64),
    Within(&'q Area),
    Intersects(&'q Area),
}

impl Exact<'_> {
    /// [`Exact::test`] for a point object at `[lon, lat]`.
    fn test_point(&self, [lon, lat]: [f64; 2]) -> Option<Option<f64>> {
        match self {
            Exact::BBox(b, _) => b.contains_lon_lat(lon, lat).then_some(None),
            Exact::Radius(c, r) => {
                let d = haversine_m(c.lat(), c.lon(), lat, lon);
                (d <= *r).then_some(Some(d))
            }
            Exact::Within(area) | Exact::Intersects(area) => {
                area.covers(Position::clamped(lat, lon)).then_some(None)
            }
        }
    }

    /// `None` when `o` does not match; `Some(distance)` when it does.
    fn test(&self, o: &Object) -> Option<Option<f64>> {
        match (self, &o.geometry) {
            (Exact::BBox(b, _), Geometry::Point(p)) => b.contains(*p).then_some(None),
            (Exact::BBox(_, rects), Geometry::Area(a)) => rects
                .iter()
                .any(|r| a.polygons().intersects(r))
                .then_some(None),
            (Exact::Radius(c, r), g) => {
                let d = match g {
                    Geometry::Point(p) => c.distance_m(*p),
                    Geometry::Area(a) => to_area_m(*c, a),
                };
                (d <= *r).then_some(Some(d))
            }
            (Exact::Within(area) | Exact::Intersects(area), Geometry::Point(p)) => {
                area.covers(*p).then_some(None)
            }
            (Exact::Within(area), Geometry::Area(a)) => {
                area.polygons().contains(a.polygons()).then_some(None)
            }
            (Exact::Intersects(area), Geometry::Area(a)) => {
                area.polygons().intersects(a.polygons()).then_some(None)
            }
        }
    }
}

/// Visits the entries whose envelope meets `aabb`, one budget step each. Breaks when
/// `visit` breaks or the budget runs out.
fn scan(
    tree: &Tree,
    aabb: rstar::AABB<[f64; 2]>,
    meter: &mut Meter<'_, '_>,
    mut visit: impl FnMut(&Entry) -> ControlFlow<()>,
) -> ControlFlow<()> {
    tree.locate_in_envelope_intersecting_int(&aabb, |entry| {
        if !meter.tick() {
            return ControlFlow::Break(());
        }
        visit(entry)
    })
}
