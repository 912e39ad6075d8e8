//! Spatial queries: bounding box, radius, within / intersecting an area.
//!
//! Every query runs in two phases: the R-tree yields candidates whose bounding box meets a
//! conservative planar cover of the query shape, then each candidate is tested exactly
//! (great-circle distance for radius, `geo` predicates for areas) and against the
//! [`Filter`]. Each candidate costs one step of the [`Budget`].
//!
//! Cost is dominated by the hits, so the per-hit path touches only the R-tree entry: the
//! filter runs on attributes copied into it, a point's radius test is a chord comparison of
//! unit vectors stored in it ([`CapTest`], haversine only near the edge), a subtree whose
//! box lies inside the query rectangle is taken without per-entry box tests, and a hit's
//! object is reached by slot, not by hash. Radius distances are computed (and sorted) only
//! when the query asks for nearest-first results ([`Order`]).

use std::collections::HashSet;
use std::ops::ControlFlow;

use geo::{Contains, Intersects};
use rstar::{ParentNode, RTreeNode};

use crate::budget::{Budget, Completion, Meter};
use crate::coord::{BBox, CapTest, LonLatRect, Position, cap_cover};
use crate::distance::to_area_m;
use crate::error::GeoError;
use crate::filter::{Filter, Prepared};
use crate::index::{Entry, Tree};
use crate::object::{Area, Geometry, Object, ObjectId};
use crate::slab::{Slab, Slot};

/// The region a [`Query`] looks in.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Objects intersecting a box (which may cross the antimeridian).
    BBox(BBox),
    /// Objects within `radius_m` metres (great-circle) of `center`; for areas, the distance
    /// to their closest point. Results come nearest first with their distances, unless the
    /// query asks for [`Order::Any`].
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
    /// Whether radius results come nearest first (the default) or in any order.
    pub order: Order,
}

/// The order of radius results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Nearest first, each hit with its distance; a limit keeps the nearest.
    #[default]
    NearestFirst,
    /// In index order, without distances (`distance_m` is `None`); a limit keeps the first
    /// found. The cheapest answer to "which objects are within r": most points are decided
    /// without trigonometry and nothing is sorted. Box and area queries always answer in
    /// this order.
    Any,
}

impl Query {
    /// Objects in a box.
    pub fn bbox(bbox: BBox) -> Self {
        Self::new(Shape::BBox(bbox))
    }

    /// Objects within `radius_m` of `center`, nearest first (see [`Query::unordered`]).
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
            order: Order::NearestFirst,
        }
    }

    /// Asks for radius results in any order and without distances ([`Order::Any`]).
    pub fn unordered(mut self) -> Self {
        self.order = Order::Any;
        self
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
    /// The object's id (also `object.id`, kept here so that listing ids reads no object).
    pub id: ObjectId,
    /// The matching object.
    pub object: &'a Object,
    /// Great-circle distance from the query centre in metres (k-nearest, and radius queries
    /// in [`Order::NearestFirst`]).
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
        self.hits.iter().map(|h| h.id).collect()
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
    objects: &'a Slab,
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
                Exact::Radius(CapTest::new(*center, *radius_m)),
            )
        }
        Shape::Within(area) => (BBox::from_rect(area.bounds()).parts(), Exact::Within(area)),
        Shape::Intersects(area) => (
            BBox::from_rect(area.bounds()).parts(),
            Exact::Intersects(area),
        ),
    };

    let filter = Prepared::new(&query.filter);
    // Nearest-first radius results need every distance before the limit applies: collect
    // (distance, id, slot) and build hits only for the results that survive.
    let sorted = matches!(query.shape, Shape::Radius { .. }) && query.order == Order::NearestFirst;
    let mut seen = (parts.len() > 1).then(HashSet::new);
    let mut hits = Vec::new();
    let mut found: Vec<(f64, ObjectId, Slot)> = Vec::new();
    let mut truncated = false;
    for rect in parts.iter() {
        let flow = walk(tree, rect, &mut meter, &mut |entry, inside| {
            if !filter.pass_tags(&entry.tags) {
                return ControlFlow::Continue(());
            }
            // Points are decided from the entry alone; areas need their polygons.
            let decided = match entry.point() {
                Some(xy) => exact.test_point(xy, &entry.xyz, inside, sorted),
                None => exact.test(objects.at(entry.slot), sorted),
            };
            let Some(distance_m) = decided else {
                return ControlFlow::Continue(());
            };
            if filter.needs_confirm() && !filter.confirm(&objects.at(entry.slot).attrs) {
                return ControlFlow::Continue(());
            }
            if let Some(seen) = seen.as_mut()
                && !seen.insert(entry.slot)
            {
                return ControlFlow::Continue(());
            }
            if sorted {
                found.push((distance_m.unwrap_or(0.0), entry.id, entry.slot));
                return ControlFlow::Continue(());
            }
            if hits.len() == limit {
                truncated = true;
                return ControlFlow::Break(());
            }
            hits.push(Hit {
                id: entry.id,
                object: objects.at(entry.slot),
                distance_m,
            });
            ControlFlow::Continue(())
        });
        if flow.is_break() {
            break;
        }
    }
    if sorted {
        type Found = (f64, ObjectId, Slot);
        let nearest_first = |a: &Found, b: &Found| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
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
            .map(|(d, id, slot)| Hit {
                id,
                object: objects.at(slot),
                distance_m: Some(d),
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
    Radius(CapTest),
    Within(&'q Area),
    Intersects(&'q Area),
}

impl Exact<'_> {
    /// [`Exact::test`] for a point object at `[lon, lat]` with unit vector `xyz`.
    /// `inside`: the walk already knows the point lies in one of the query's rectangles.
    /// `distance`: whether a radius hit needs its distance.
    fn test_point(
        &self,
        [lon, lat]: [f64; 2],
        xyz: &[f32; 3],
        inside: bool,
        distance: bool,
    ) -> Option<Option<f64>> {
        match self {
            // The rectangles are the box itself (split at ±180°): a point in one is in it.
            Exact::BBox(..) if inside => Some(None),
            Exact::BBox(b, _) => b.contains_lon_lat(lon, lat).then_some(None),
            Exact::Radius(cap) if distance => {
                if cap.surely_outside(xyz) {
                    return None;
                }
                let d = cap.distance_m(lon, lat);
                (d <= cap.radius_m()).then_some(Some(d))
            }
            Exact::Radius(cap) => cap.contains(xyz, [lon, lat]).then_some(None),
            Exact::Within(area) | Exact::Intersects(area) => {
                area.covers(Position::clamped(lat, lon)).then_some(None)
            }
        }
    }

    /// `None` when `o` does not match; `Some(distance)` when it does (the distance for
    /// radius queries when `distance` is asked for).
    fn test(&self, o: &Object, distance: bool) -> Option<Option<f64>> {
        match (self, &o.geometry) {
            (Exact::BBox(b, _), Geometry::Point(p)) => b.contains(*p).then_some(None),
            (Exact::BBox(_, rects), Geometry::Area(a)) => rects
                .iter()
                .any(|r| a.polygons().intersects(r))
                .then_some(None),
            (Exact::Radius(cap), g) => {
                let d = match g {
                    Geometry::Point(p) => cap.center().distance_m(*p),
                    Geometry::Area(a) => to_area_m(cap.center(), a),
                };
                (d <= cap.radius_m()).then_some(distance.then_some(d))
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

/// Visits the entries whose box meets `rect`, one budget step each: `visit` gets the entry
/// and whether its box is known to lie inside `rect`. A subtree whose box lies inside
/// `rect` is visited without testing its entries (they are passed with `inside = true`). Breaks when `visit` breaks or the budget runs out.
fn walk(
    tree: &Tree,
    rect: &LonLatRect,
    meter: &mut Meter<'_, '_>,
    visit: &mut impl FnMut(&Entry, bool) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let root = tree.root();
    if tree.size() == 0 {
        return ControlFlow::Continue(());
    }
    let env = root.envelope();
    if contains(rect, &env.lower(), &env.upper()) {
        walk_all(root, meter, visit)
    } else {
        walk_some(root, rect, meter, visit)
    }
}

fn walk_some(
    node: &ParentNode<Entry>,
    rect: &LonLatRect,
    meter: &mut Meter<'_, '_>,
    visit: &mut impl FnMut(&Entry, bool) -> ControlFlow<()>,
) -> ControlFlow<()> {
    touch_grandchildren(node);
    for child in node.children() {
        match child {
            RTreeNode::Leaf(entry) => {
                let (lo, hi) = entry.bounds();
                if meets(rect, lo, hi) {
                    if !meter.tick() {
                        return ControlFlow::Break(());
                    }
                    visit(entry, contains(rect, lo, hi))?;
                }
            }
            RTreeNode::Parent(parent) => {
                let env = parent.envelope();
                let (lo, hi) = (env.lower(), env.upper());
                if contains(rect, &lo, &hi) {
                    walk_all(parent, meter, visit)?;
                } else if meets(rect, &lo, &hi) {
                    walk_some(parent, rect, meter, visit)?;
                }
            }
        }
    }
    ControlFlow::Continue(())
}

fn walk_all(
    node: &ParentNode<Entry>,
    meter: &mut Meter<'_, '_>,
    visit: &mut impl FnMut(&Entry, bool) -> ControlFlow<()>,
) -> ControlFlow<()> {
    touch_grandchildren(node);
    for child in node.children() {
        match child {
            RTreeNode::Leaf(entry) => {
                if !meter.tick() {
                    return ControlFlow::Break(());
                }
                visit(entry, true)?;
            }
            RTreeNode::Parent(parent) => walk_all(parent, meter, visit)?,
        }
    }
    ControlFlow::Continue(())
}

/// Reads a few cache lines of every child node's entries before the walk descends into
/// the first one. The reads are independent, so the CPU overlaps their cache misses; walking
/// the children one by one would otherwise wait for each node's memory in turn (the walk of
/// a large answer is bound by memory latency, not by computation).
fn touch_grandchildren(node: &ParentNode<Entry>) {
    for child in node.children() {
        if let RTreeNode::Parent(parent) = child {
            for grandchild in parent.children().iter().step_by(4) {
                std::hint::black_box(matches!(grandchild, RTreeNode::Leaf(_)));
            }
        }
    }
}

/// Whether the box `lo`–`hi` shares a point with `rect` (boundaries included).
fn meets(rect: &LonLatRect, lo: &[f64; 2], hi: &[f64; 2]) -> bool {
    lo[0] <= rect.max[0] && lo[1] <= rect.max[1] && hi[0] >= rect.min[0] && hi[1] >= rect.min[1]
}

/// Whether the box `lo`–`hi` lies inside `rect` (boundaries included).
fn contains(rect: &LonLatRect, lo: &[f64; 2], hi: &[f64; 2]) -> bool {
    lo[0] >= rect.min[0] && lo[1] >= rect.min[1] && hi[0] <= rect.max[0] && hi[1] <= rect.max[1]
}
