//! The index: objects by slot, an R-tree over their bounds, the cluster pyramid and fences.

use std::collections::BTreeMap;

use rstar::{AABB, RStarInsertionStrategy, RTree, RTreeObject, RTreeParams};

use crate::budget::Budget;
use crate::cluster::{ClusterQuery, ClusterTree, Item, Member};
use crate::coord::{Position, Timestamp, unit_vector};
use crate::error::GeoError;
use crate::fence::{self, Fence, FenceEvent, FenceId, FenceShape, Fences};
use crate::filter::{Filter, Tags};
use crate::geojson::{ClusterResult, Feature, FeatureCollection};
use crate::knn;
use crate::object::{Geometry, Object, ObjectId};
use crate::query::{self, Query, QueryResult};
use crate::slab::{Slab, Slot};

/// R-tree node sizes. Wider nodes than rstar's default (6) make the tree shallower and
/// the leaves longer: a large answer is bound by memory latency, and each leaf costs a
/// cache miss before its entries stream in. Measured at a million points (criterion
/// `query_1m`), going from 12 to 24 entries per node made box and radius queries about
/// 1.3–1.5× faster while a move stayed well under 10 µs of CPU.
#[derive(Debug)]
pub(crate) struct Params;

impl RTreeParams for Params {
    const MIN_SIZE: usize = 8;
    const MAX_SIZE: usize = 24;
    const REINSERTION_COUNT: usize = 6;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

pub(crate) type Tree = RTree<Entry, Params>;

/// An R-tree entry: what queries need without touching the object. The object's id,
/// slot ([`Slab`]) and bounds, its filterable attributes, and for a point its unit vector
/// on the sphere, so a radius test is a dot product rather than trigonometry. Equality is
/// exact, so an entry can be found and removed again from one recomputed from the stored
/// object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry {
    pub(crate) id: ObjectId,
    pub(crate) slot: Slot,
    min: [f64; 2],
    max: [f64; 2],
    /// Unit vector of a point object (see [`unit_vector`]); zero for areas.
    pub(crate) xyz: [f32; 3],
    pub(crate) tags: Tags,
}

impl Entry {
    /// `[lon, lat]` when the entry is a point object.
    pub(crate) fn point(&self) -> Option<[f64; 2]> {
        (self.min == self.max).then_some(self.min)
    }

    /// The entry's box, `(min, max)` as `[lon, lat]`.
    pub(crate) fn bounds(&self) -> (&[f64; 2], &[f64; 2]) {
        (&self.min, &self.max)
    }

    fn of(o: &Object, slot: Slot) -> Self {
        let r = o.geometry.bounds();
        Self {
            id: o.id,
            slot,
            min: r.min,
            max: r.max,
            xyz: o.position().map_or([0.0; 3], unit_vector),
            tags: Tags::of(&o.attrs),
        }
    }
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners(self.min, self.max)
    }
}

/// The spatial index of crisis-map objects, with geofences and map clustering.
///
/// One owner holds it (a task, in the server) and feeds it mutations with the current time;
/// mutations return the fence events they caused. It is a derived view of the store, rebuilt
/// with [`GeoIndex::from_objects`] on start.
///
/// Invariant: the slab (objects by slot, with the id → slot map), the R-tree and the
/// cluster pyramid always describe the same set of objects, and each R-tree entry names the
/// slot of its object. Each mutation updates all three for the one object it touches (a move is a
/// remove and an insert of that object's entry, never a rebuild).
#[derive(Debug)]
pub struct GeoIndex {
    objects: Slab,
    tree: Tree,
    clusters: ClusterTree,
    fences: Fences,
}

impl Default for GeoIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl GeoIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            objects: Slab::default(),
            tree: RTree::new_with_params(),
            clusters: ClusterTree::default(),
            fences: Fences::default(),
        }
    }

    /// Builds an index in one pass (R-tree bulk loading), e.g. from the store on start.
    /// No fence events are produced. Fails with [`GeoError::DuplicateObject`] on a repeated
    /// id.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Result<Self, GeoError> {
        let mut index = Self::new();
        let mut entries = Vec::new();
        for o in objects {
            if index.objects.contains(o.id) {
                return Err(GeoError::DuplicateObject(o.id));
            }
            if let Some(p) = o.position() {
                index.clusters.insert(Member::new(o.id, p, &o.attrs));
            }
            let (id, at) = (o.id, Entry::of(&o, 0));
            let slot = index.objects.insert(o);
            debug_assert_eq!(index.objects.at(slot).id, id);
            entries.push(Entry { slot, ..at });
        }
        index.tree = RTree::bulk_load_with_params(entries);
        Ok(index)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the index holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.len() == 0
    }

    /// The object with this id.
    pub fn get(&self, id: ObjectId) -> Option<&Object> {
        self.objects.get(id)
    }

    /// Every object, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.iter()
    }

    /// Adds a new object and returns the fence events its appearance causes (it counts as
    /// coming from outside every fence). Fails with [`GeoError::DuplicateObject`] if the id
    /// is taken.
    pub fn insert(&mut self, object: Object, now: Timestamp) -> Result<Vec<FenceEvent>, GeoError> {
        if self.objects.contains(object.id) {
            return Err(GeoError::DuplicateObject(object.id));
        }
        Ok(self.replace(None, object, now))
    }

    /// Replaces an object's geometry and attributes. A point that stays a point is treated
    /// as a move for the fences. Fails with [`GeoError::UnknownObject`] if the id is not
    /// indexed.
    pub fn update(&mut self, object: Object, now: Timestamp) -> Result<Vec<FenceEvent>, GeoError> {
        let Some(old) = self.unplace(object.id) else {
            return Err(GeoError::UnknownObject(object.id));
        };
        Ok(self.replace(Some(old), object, now))
    }

    /// Inserts or updates.
    pub fn upsert(&mut self, object: Object, now: Timestamp) -> Vec<FenceEvent> {
        let old = self.unplace(object.id);
        self.replace(old, object, now)
    }

    /// Moves a point object to `to` and returns the fence transitions of the move: those of
    /// the object against every fence, then those of objects swept by fences anchored on it.
    ///
    /// Cost: one R-tree removal and insertion, one cluster-pyramid path update, a fence
    /// lookup along the travelled segment.
    pub fn move_to(
        &mut self,
        id: ObjectId,
        to: Position,
        now: Timestamp,
    ) -> Result<Vec<FenceEvent>, GeoError> {
        let Some((slot, object)) = self.objects.get_mut(id) else {
            return Err(GeoError::UnknownObject(id));
        };
        let Geometry::Point(from) = object.geometry else {
            return Err(GeoError::NotAPoint(id));
        };
        self.tree.remove(&Entry::of(object, slot));
        self.clusters.remove(&Member::new(id, from, &object.attrs));
        object.geometry = Geometry::Point(to);
        self.tree.insert(Entry::of(object, slot));
        self.clusters.insert(Member::new(id, to, &object.attrs));
        let kind = object.kind();
        let mut events = Vec::new();
        self.fences
            .object_moved(id, kind, Some(from), to, now, &mut events);
        self.sweep(id, Some(to), now, &mut events);
        Ok(events)
    }

    /// Removes an object. Fences produce no events for removals (the caller publishes the
    /// deletion itself); fences anchored on the object go dormant until it returns.
    pub fn remove(&mut self, id: ObjectId) -> Option<Object> {
        let old = self.unplace(id)?;
        self.fences.move_anchor(id, None);
        Some(old)
    }

    /// Runs a bounding-box, radius or area query. Errors only for an invalid radius; running
    /// out of budget is reported in [`QueryResult::completion`].
    pub fn query(&self, query: &Query, budget: &Budget<'_>) -> Result<QueryResult<'_>, GeoError> {
        query::run(&self.tree, &self.objects, query, budget)
    }

    /// Ids of the point objects inside `area` (boundary included) that pass `filter`, in no
    /// particular order: the targeting query. Same answer as [`GeoIndex::query`] with
    /// [`Query::within`] restricted to points, much faster when the area holds many of them:
    /// R-tree nodes wholly inside the area are taken without testing their points.
    pub fn ids_within(
        &self,
        area: &crate::object::Area,
        filter: &crate::filter::Filter,
        budget: &Budget<'_>,
    ) -> crate::target::IdsWithin {
        crate::target::ids_within(&self.tree, &self.objects, area, filter, budget)
    }

    /// The `k` objects nearest to `center` by great-circle distance that pass `filter`,
    /// nearest first (areas measured to their closest point).
    pub fn nearest(
        &self,
        center: Position,
        k: usize,
        filter: &Filter,
        budget: &Budget<'_>,
    ) -> QueryResult<'_> {
        knn::nearest(&self.tree, &self.objects, center, k, filter, budget)
    }

    /// Clusters and single objects for a map view, as GeoJSON. Errors with
    /// [`GeoError::InvalidZoom`] above [`MAX_ZOOM`](crate::MAX_ZOOM).
    pub fn clusters(
        &self,
        query: &ClusterQuery,
        budget: &Budget<'_>,
    ) -> Result<ClusterResult, GeoError> {
        let (items, completion, steps) = self.clusters.query(query, budget)?;
        let features = items
            .iter()
            .filter_map(|item| match item {
                Item::Cluster(c) => Some(Feature::cluster(c)),
                Item::Single(id) => self.objects.get(*id).map(|o| Feature::object(o, None)),
            })
            .collect();
        Ok(ClusterResult {
            features: FeatureCollection::new(features),
            completion,
            steps,
        })
    }

    /// Adds a geofence. An [`FenceShape::Around`] fence needs its anchor indexed as a point
    /// ([`GeoError::UnknownObject`], [`GeoError::NotAPoint`]). Adding a fence reports
    /// nothing; the next moves do.
    pub fn add_fence(&mut self, fence: Fence) -> Result<(), GeoError> {
        let anchor_at = match fence.shape {
            FenceShape::Around { anchor, .. } => {
                let Some(o) = self.objects.get(anchor) else {
                    return Err(GeoError::UnknownObject(anchor));
                };
                Some(o.position().ok_or(GeoError::NotAPoint(anchor))?)
            }
            FenceShape::Area(_) | FenceShape::Circle { .. } => None,
        };
        self.fences.insert(fence, anchor_at)
    }

    /// Removes a geofence.
    pub fn remove_fence(&mut self, id: FenceId) -> Option<Fence> {
        self.fences.remove(id)
    }

    /// The fence with this id.
    pub fn fence(&self, id: FenceId) -> Option<&Fence> {
        self.fences.get(id)
    }

    /// Every fence, by id.
    pub fn fences(&self) -> impl Iterator<Item = &Fence> {
        self.fences.iter()
    }

    /// Number of fences.
    pub fn fence_count(&self) -> usize {
        self.fences.len()
    }

    /// Number of point objects counted by the cluster pyramid.
    pub fn clustered_len(&self) -> usize {
        self.clusters.len() as usize
    }

    /// Places `object` (whose id is not indexed) and reports fence events relative to
    /// `old`, the object it replaces.
    fn replace(&mut self, old: Option<Object>, object: Object, now: Timestamp) -> Vec<FenceEvent> {
        let id = object.id;
        let kind = object.kind();
        let from = old.as_ref().and_then(Object::position);
        let to = object.position();
        self.place(object);
        let mut events = Vec::new();
        if let Some(to) = to {
            self.fences
                .object_moved(id, kind, from, to, now, &mut events);
        }
        match to {
            Some(_) => self.sweep(id, to, now, &mut events),
            // An anchor that became an area leaves its fences dormant, silently, as on removal.
            None => {
                self.fences.move_anchor(id, None);
            }
        }
        events
    }

    fn place(&mut self, object: Object) {
        if let Some(p) = object.position() {
            self.clusters
                .insert(Member::new(object.id, p, &object.attrs));
        }
        let entry = Entry::of(&object, 0);
        let slot = self.objects.insert(object);
        self.tree.insert(Entry { slot, ..entry });
    }

    fn unplace(&mut self, id: ObjectId) -> Option<Object> {
        let (slot, object) = self.objects.remove(id)?;
        self.tree.remove(&Entry::of(&object, slot));
        if let Some(p) = object.position() {
            self.clusters.remove(&Member::new(id, p, &object.attrs));
        }
        Some(object)
    }

    /// Moves the fences anchored on `anchor` to `to` and reports the objects they swept.
    fn sweep(
        &mut self,
        anchor: ObjectId,
        to: Option<Position>,
        now: Timestamp,
        out: &mut Vec<FenceEvent>,
    ) {
        for moved in self.fences.move_anchor(anchor, to) {
            let mut near = BTreeMap::new();
            for center in [moved.old_center, moved.new_center].into_iter().flatten() {
                let q = Query::radius(center, moved.radius_m)
                    .filter(Filter::default().kinds(moved.watch))
                    .unordered();
                let Ok(found) = query::run(&self.tree, &self.objects, &q, &Budget::unlimited())
                else {
                    continue;
                };
                for hit in found.hits {
                    if let Some(p) = hit.object.position() {
                        near.insert(hit.object.id, (hit.object.kind(), p));
                    }
                }
            }
            for (object, (kind, p)) in near {
                fence::swept(&moved, anchor, object, kind, p, now, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::BBox;
    use crate::fence::{Transition, TransitionSet, Trigger};
    use crate::object::{Area, Attributes, Incident, Responder, Severity, Status};

    fn pos(lat: f64, lon: f64) -> Position {
        Position::new(lat, lon).unwrap()
    }

    fn responder(id: u64, p: Position) -> Object {
        Object::point(
            ObjectId(id),
            p,
            Attributes::Responder(Responder {
                role: "medic".into(),
                updated_at: Timestamp(0),
            }),
        )
    }

    fn incident(id: u64, p: Position, sev: u8) -> Object {
        Object::point(
            ObjectId(id),
            p,
            Attributes::Incident(Incident {
                incident_type: "flood".into(),
                severity: Severity::new(sev).unwrap(),
                status: Status::Reported,
                reported_at: Timestamp(0),
            }),
        )
    }

    fn in_box(idx: &GeoIndex, b: BBox) -> Vec<ObjectId> {
        let mut ids = idx
            .query(&Query::bbox(b), &Budget::unlimited())
            .unwrap()
            .ids();
        ids.sort();
        ids
    }

    #[test]
    fn insert_move_remove_keep_tree_map_and_pyramid_in_step() {
        let mut idx = GeoIndex::new();
        idx.insert(responder(1, pos(0.0, 0.0)), Timestamp(0))
            .unwrap();
        assert_eq!(
            idx.insert(responder(1, pos(0.0, 0.0)), Timestamp(0)),
            Err(GeoError::DuplicateObject(ObjectId(1)))
        );
        let near_origin = BBox::new(-1.0, -1.0, 1.0, 1.0).unwrap();
        let far = BBox::new(9.0, 9.0, 11.0, 11.0).unwrap();
        assert_eq!(in_box(&idx, near_origin), vec![ObjectId(1)]);
        idx.move_to(ObjectId(1), pos(10.0, 10.0), Timestamp(1))
            .unwrap();
        assert_eq!(in_box(&idx, near_origin), vec![]);
        assert_eq!(in_box(&idx, far), vec![ObjectId(1)]);
        assert_eq!(idx.clustered_len(), 1);
        assert!(idx.remove(ObjectId(1)).is_some());
        assert!(idx.is_empty());
        assert_eq!(idx.clustered_len(), 0);
        assert_eq!(in_box(&idx, far), vec![]);
        assert_eq!(
            idx.move_to(ObjectId(1), pos(0.0, 0.0), Timestamp(2)),
            Err(GeoError::UnknownObject(ObjectId(1)))
        );
    }

    #[test]
    fn areas_cannot_be_moved_but_can_be_updated() {
        let mut idx = GeoIndex::new();
        let square = Area::polygon(&[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]).unwrap();
        let hazard = Object::area(
            ObjectId(5),
            square,
            Attributes::Hazard(crate::object::Hazard {
                hazard_type: "flood".into(),
                severity: Severity::new(4).unwrap(),
                updated_at: Timestamp(0),
            }),
        );
        idx.insert(hazard.clone(), Timestamp(0)).unwrap();
        assert_eq!(
            idx.move_to(ObjectId(5), pos(3.0, 3.0), Timestamp(0)),
            Err(GeoError::NotAPoint(ObjectId(5)))
        );
        let mut moved = hazard;
        moved.geometry = Geometry::Area(
            Area::polygon(&[(5.0, 5.0), (6.0, 5.0), (6.0, 6.0), (5.0, 6.0)]).unwrap(),
        );
        idx.update(moved, Timestamp(1)).unwrap();
        assert_eq!(
            in_box(&idx, BBox::new(5.5, 5.5, 5.6, 5.6).unwrap()),
            vec![ObjectId(5)]
        );
        assert_eq!(in_box(&idx, BBox::new(0.2, 0.2, 0.3, 0.3).unwrap()), vec![]);
    }

    #[test]
    fn bulk_load_matches_incremental() {
        let objects: Vec<Object> = (0..500u32)
            .map(|i| incident(i.into(), pos(f64::from(i % 25), f64::from(i / 25)), 3))
            .collect();
        let bulk = GeoIndex::from_objects(objects.clone()).unwrap();
        let mut inc = GeoIndex::new();
        for o in objects {
            inc.insert(o, Timestamp(0)).unwrap();
        }
        let b = BBox::new(3.0, 2.0, 7.5, 11.0).unwrap();
        assert_eq!(in_box(&bulk, b), in_box(&inc, b));
        assert_eq!(bulk.clustered_len(), 500);
        assert!(matches!(
            GeoIndex::from_objects([incident(1, pos(0.0, 0.0), 1), incident(1, pos(0.0, 0.0), 1)]),
            Err(GeoError::DuplicateObject(_))
        ));
    }

    #[test]
    fn circle_around_a_moving_responder_sweeps_incidents() {
        let mut idx = GeoIndex::new();
        idx.insert(responder(1, pos(0.0, 0.0)), Timestamp(0))
            .unwrap();
        idx.insert(incident(2, pos(0.0, 0.05), 3), Timestamp(0))
            .unwrap(); // ~5.6 km east
        idx.insert(incident(3, pos(0.0, -0.05), 3), Timestamp(0))
            .unwrap(); // ~5.6 km west
        let shape = FenceShape::Around {
            anchor: ObjectId(1),
            radius_m: 6_000.0,
        };
        idx.add_fence(Fence::new(FenceId(1), shape).detect(TransitionSet::ALL))
            .unwrap();
        // Responder drives 0.04° east: incident 2 stays inside, 3 falls out of reach.
        let events = idx
            .move_to(ObjectId(1), pos(0.0, 0.04), Timestamp(5))
            .unwrap();
        let seen: Vec<_> = events.iter().map(|e| (e.object.0, e.transition)).collect();
        assert_eq!(
            seen,
            vec![
                (2, Transition::Inside),
                (3, Transition::Exit),
                (3, Transition::Outside)
            ]
        );
        assert!(events.iter().all(|e| e.trigger
            == Trigger::FenceMoved {
                anchor: ObjectId(1)
            }));
        // An incident reported next to the responder enters its circle.
        let events = idx
            .insert(incident(4, pos(0.0, 0.041), 5), Timestamp(6))
            .unwrap();
        assert_eq!(events[0].transition, Transition::Enter);
        // Unknown anchor is rejected.
        let bad = FenceShape::Around {
            anchor: ObjectId(99),
            radius_m: 1.0,
        };
        assert_eq!(
            idx.add_fence(Fence::new(FenceId(2), bad)),
            Err(GeoError::UnknownObject(ObjectId(99)))
        );
    }
}
