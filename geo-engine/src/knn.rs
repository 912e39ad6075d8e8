//! k-nearest neighbours by great-circle distance.
//!
//! rstar's own nearest-neighbour search measures planar distance in degrees, which orders
//! results wrongly away from the equator (a degree of longitude shrinks with latitude) and
//! across the antimeridian. Instead this module walks the R-tree best-first: a priority
//! queue holds tree nodes keyed by a great-circle *lower bound* of the distance to anything
//! inside them ([`to_rect_lower_bound_m`]) and objects keyed by their exact distance. When an
//! object reaches the front of the queue nothing left can be closer, so objects come out in
//! true geodesic order and the search stops after `k` of them. An interrupted search has
//! therefore returned a correct prefix of the answer.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rstar::{ParentNode, RTreeNode};

use crate::budget::{Budget, Completion};
use crate::coord::{LonLatRect, Position, haversine_m};
use crate::distance::{to_area_m, to_rect_lower_bound_m};
use crate::filter::{Filter, Prepared};
use crate::index::{Entry, Tree};
use crate::object::Geometry;
use crate::query::{Hit, QueryResult};
use crate::slab::Slab;

enum Item<'t> {
    Node(&'t ParentNode<Entry>),
    Entry(&'t Entry),
}

struct Queued<'t> {
    distance_m: f64,
    item: Item<'t>,
}

impl Queued<'_> {
    /// Objects before nodes at equal distance, then lower ids first: deterministic order.
    fn rank(&self) -> (u8, u64) {
        match self.item {
            Item::Entry(e) => (0, e.id.0),
            Item::Node(_) => (1, 0),
        }
    }
}

impl PartialEq for Queued<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued<'_> {}

impl PartialOrd for Queued<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued<'_> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the nearest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .distance_m
            .total_cmp(&self.distance_m)
            .then_with(|| other.rank().cmp(&self.rank()))
    }
}

/// The `k` objects nearest to `center` that pass `filter`, nearest first.
pub(crate) fn nearest<'a>(
    tree: &'a Tree,
    objects: &'a Slab,
    center: Position,
    k: usize,
    filter: &Filter,
    budget: &Budget<'_>,
) -> QueryResult<'a> {
    let mut meter = budget.meter();
    let mut hits = Vec::with_capacity(k.min(1024));
    let mut heap = BinaryHeap::new();
    if k > 0 {
        heap.push(Queued {
            distance_m: 0.0,
            item: Item::Node(tree.root()),
        });
    }
    let filter = Prepared::new(filter);
    'search: while let Some(next) = heap.pop() {
        match next.item {
            Item::Entry(entry) => {
                let object = objects.at(entry.slot);
                if filter.needs_confirm() && !filter.confirm(&object.attrs) {
                    continue;
                }
                hits.push(Hit {
                    id: entry.id,
                    object,
                    distance_m: Some(next.distance_m),
                });
                if hits.len() == k {
                    break;
                }
            }
            Item::Node(node) => {
                for child in node.children() {
                    if !meter.tick() {
                        break 'search;
                    }
                    match child {
                        RTreeNode::Leaf(entry) => {
                            if !filter.pass_tags(&entry.tags) {
                                continue;
                            }
                            let distance_m = match entry.point() {
                                Some([lon, lat]) => {
                                    haversine_m(center.lat(), center.lon(), lat, lon)
                                }
                                None => match &objects.at(entry.slot).geometry {
                                    Geometry::Area(a) => to_area_m(center, a),
                                    Geometry::Point(p) => center.distance_m(*p),
                                },
                            };
                            heap.push(Queued {
                                distance_m,
                                item: Item::Entry(entry),
                            });
                        }
                        RTreeNode::Parent(parent) => {
                            let env = parent.envelope();
                            let rect = LonLatRect {
                                min: env.lower(),
                                max: env.upper(),
                            };
                            heap.push(Queued {
                                distance_m: to_rect_lower_bound_m(center, &rect),
                                item: Item::Node(parent),
                            });
                        }
                    }
                }
            }
        }
    }
    let completion = match meter.interrupted() {
        Some(i) => Completion::Interrupted(i),
        None => Completion::Complete,
    };
    QueryResult {
        hits,
        completion,
        steps: meter.steps(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::Timestamp;
    use crate::index::GeoIndex;
    use crate::object::{Attributes, Object, ObjectId, Responder};

    fn responder(id: u64, lat: f64, lon: f64) -> Object {
        Object::point(
            ObjectId(id),
            Position::new(lat, lon).unwrap(),
            Attributes::Responder(Responder {
                role: "medic".into(),
                updated_at: Timestamp(0),
            }),
        )
    }

    #[test]
    fn high_latitude_order_is_geodesic_not_planar() {
        // At 80°N a degree of longitude is ~19 km, a degree of latitude ~111 km: planar
        // degrees would call the second object nearer.
        let mut idx = GeoIndex::new();
        idx.insert(responder(1, 80.0, 3.0), Timestamp(0)).unwrap();
        idx.insert(responder(2, 80.9, 0.0), Timestamp(0)).unwrap();
        let c = Position::new(80.0, 0.0).unwrap();
        let r = idx.nearest(c, 2, &Filter::default(), &Budget::unlimited());
        assert_eq!(r.ids(), vec![ObjectId(1), ObjectId(2)]);
    }

    #[test]
    fn across_the_antimeridian() {
        let mut idx = GeoIndex::new();
        idx.insert(responder(1, 0.0, -179.9), Timestamp(0)).unwrap();
        idx.insert(responder(2, 0.0, 178.0), Timestamp(0)).unwrap();
        let c = Position::new(0.0, 179.9).unwrap();
        let r = idx.nearest(c, 1, &Filter::default(), &Budget::unlimited());
        assert_eq!(r.ids(), vec![ObjectId(1)]);
    }

    #[test]
    fn interrupted_search_returns_a_correct_prefix() {
        let mut idx = GeoIndex::new();
        for i in 0..2000u32 {
            let lat = f64::from(i % 50) * 0.01;
            let lon = f64::from(i / 50) * 0.01;
            idx.insert(responder(i.into(), lat, lon), Timestamp(0))
                .unwrap();
        }
        let c = Position::new(0.2, 0.2).unwrap();
        let full = idx.nearest(c, 50, &Filter::default(), &Budget::unlimited());
        let cut = idx.nearest(c, 50, &Filter::default(), &Budget::steps(40));
        assert!(cut.is_partial());
        let d = |r: &QueryResult<'_>| r.hits.iter().map(|h| h.distance_m).collect::<Vec<_>>();
        assert_eq!(d(&cut)[..], d(&full)[..cut.hits.len()]);
    }
}
