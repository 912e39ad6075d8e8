//! Everyone inside an area, fast: the ids of the point objects an area covers, for alert
//! targeting over a million subscribers.
//!
//! [`GeoIndex::query`](crate::GeoIndex::query) with [`Shape::Within`](crate::Shape) tests
//! every candidate point against the polygons and looks every hit up in the object map. For
//! an area holding most of the index that is most of the cost. [`ids_within`] walks the
//! R-tree itself instead and classifies each node's bounding box against the area once:
//!
//! - **outside** (no overlap with the area's bounds, or no boundary edge crosses the box and
//!   a corner is outside): skipped;
//! - **inside** (no boundary edge crosses the box — exterior or hole — and a corner is
//!   covered): every point below is inside without a test;
//! - **crossing**: descended, and its points tested one by one.
//!
//! Only the nodes along the area's boundary need point tests, so the cost is close to one
//! vector push per hit. Results are ids (no object look-up unless the filter needs one),
//! under the same [`Budget`] as other queries (one step per node or entry visited).

use std::ops::ControlFlow;

use geo::Intersects;
use rstar::{AABB, Envelope, ParentNode, RTreeNode};

use crate::budget::{Budget, Completion, Meter};
use crate::coord::Position;
use crate::filter::{Filter, Prepared};
use crate::index::{Entry, Tree};
use crate::object::{Area, ObjectId};
use crate::slab::Slab;

/// The answer of [`GeoIndex::ids_within`](crate::GeoIndex::ids_within).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsWithin {
    /// Ids of the point objects inside the area (boundary included), in no particular order.
    pub ids: Vec<ObjectId>,
    /// Complete, or interrupted by the budget (then `ids` is a subset of the answer).
    pub completion: Completion,
    /// Nodes and entries visited.
    pub steps: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Outside,
    Inside,
    Crossing,
}

struct Walk<'a, 'm, 'c> {
    area: &'a Area,
    edges: Vec<geo::Line<f64>>,
    bounds: AABB<[f64; 2]>,
    filter: Prepared<'a>,
    objects: &'a Slab,
    meter: &'m mut Meter<'a, 'c>,
    ids: Vec<ObjectId>,
}

pub(crate) fn ids_within(
    tree: &Tree,
    objects: &Slab,
    area: &Area,
    filter: &Filter,
    budget: &Budget<'_>,
) -> IdsWithin {
    let mut meter = budget.meter();
    let edges = area
        .polygons()
        .iter()
        .flat_map(|p| {
            std::iter::once(p.exterior())
                .chain(p.interiors())
                .flat_map(|ring| ring.lines())
        })
        .collect();
    let b = area.bounds();
    let mut walk = Walk {
        area,
        edges,
        bounds: AABB::from_corners(b.min, b.max),
        filter: Prepared::new(filter),
        objects,
        meter: &mut meter,
        ids: Vec::new(),
    };
    let _ = walk.node(tree.root(), false);
    let ids = std::mem::take(&mut walk.ids);
    let completion = match meter.interrupted() {
        Some(i) => Completion::Interrupted(i),
        None => Completion::Complete,
    };
    IdsWithin {
        ids,
        completion,
        steps: meter.steps(),
    }
}

impl Walk<'_, '_, '_> {
    fn node(&mut self, node: &ParentNode<Entry>, inside: bool) -> ControlFlow<()> {
        for child in node.children() {
            if !self.meter.tick() {
                return ControlFlow::Break(());
            }
            match child {
                RTreeNode::Leaf(entry) => self.leaf(entry, inside),
                RTreeNode::Parent(parent) => {
                    let side = if inside {
                        Side::Inside
                    } else {
                        self.side(&parent.envelope())
                    };
                    match side {
                        Side::Outside => {}
                        Side::Inside => self.node(parent, true)?,
                        Side::Crossing => self.node(parent, false)?,
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn leaf(&mut self, entry: &Entry, inside: bool) {
        let Some([lon, lat]) = entry.point() else {
            return; // areas are not targets
        };
        if !self.filter.pass_tags(&entry.tags) {
            return;
        }
        if !inside && !self.area.covers(Position::clamped(lat, lon)) {
            return;
        }
        if self.filter.needs_confirm() && !self.filter.confirm(&self.objects.at(entry.slot).attrs) {
            return;
        }
        self.ids.push(entry.id);
    }

    /// Where a node's box lies relative to the area.
    fn side(&self, env: &AABB<[f64; 2]>) -> Side {
        if !env.intersects(&self.bounds) {
            return Side::Outside;
        }
        let [x0, y0] = env.lower();
        let [x1, y1] = env.upper();
        let rect = geo::Rect::new(geo::coord! { x: x0, y: y0 }, geo::coord! { x: x1, y: y1 });
        let crossed = self.edges.iter().any(|e| {
            // Cheap box test first; the exact segment/box test only for edges near the box.
            e.start.x.max(e.end.x) >= x0
                && e.start.x.min(e.end.x) <= x1
                && e.start.y.max(e.end.y) >= y0
                && e.start.y.min(e.end.y) <= y1
                && e.intersects(&rect)
        });
        if crossed {
            Side::Crossing
        } else if self.area.covers(Position::clamped(y0, x0)) {
            Side::Inside
        } else {
            Side::Outside
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        Attributes, Budget, Filter, GeoIndex, Object, ObjectId, Position, Query, Responder,
        Timestamp,
    };

    #[test]
    fn the_same_ids_as_a_within_query_including_holes_and_the_boundary() {
        // A concave area with a hole; a grid of points over and around it, some exactly on
        // edges.
        let outer = geo::LineString::from(vec![
            (0.0, 0.0),
            (10.0, 0.0),
            (10.0, 10.0),
            (5.0, 4.0),
            (0.0, 10.0),
            (0.0, 0.0),
        ]);
        let hole = geo::LineString::from(vec![
            (2.0, 1.0),
            (4.0, 1.0),
            (4.0, 3.0),
            (2.0, 3.0),
            (2.0, 1.0),
        ]);
        let area =
            crate::Area::from_multi_polygon(geo::MultiPolygon::new(vec![geo::Polygon::new(
                outer,
                vec![hole],
            )]))
            .unwrap();
        let now = Timestamp(0);
        let mut objects = Vec::new();
        let mut id = 0;
        for i in 0..=240 {
            for j in 0..=240 {
                id += 1;
                let p = Position::new(-1.0 + j as f64 * 0.05, -1.0 + i as f64 * 0.05).unwrap();
                objects.push(Object::point(
                    ObjectId(id),
                    p,
                    Attributes::Responder(Responder {
                        role: "subscriber".into(),
                        updated_at: now,
                    }),
                ));
            }
        }
        let index = GeoIndex::from_objects(objects).unwrap();
        let mut fast = index
            .ids_within(&area, &Filter::default(), &Budget::unlimited())
            .ids;
        let mut slow = index
            .query(&Query::within(area.clone()), &Budget::unlimited())
            .unwrap()
            .ids();
        fast.sort();
        slow.sort();
        assert!(slow.len() > 10_000, "{}", slow.len());
        assert_eq!(fast, slow);
        let cut = index.ids_within(&area, &Filter::default(), &Budget::steps(100));
        assert!(matches!(cut.completion, crate::Completion::Interrupted(_)));
        assert!(cut.ids.len() < slow.len());
    }
}
