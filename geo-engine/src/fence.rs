//! Geofences and the transitions they report when objects move.
//!
//! A fence is an area, a static circle, or a circle around a moving object (its *anchor*).
//! Each time a point object is inserted, moved or updated, the engine compares its old and
//! new position against every fence that could care and reports one [`Transition`] per
//! fence, following Tile38's rules:
//!
//! | before  | after   | segment old → new meets the fence | transition |
//! |---------|---------|-----------------------------------|------------|
//! | outside | inside  | –                                 | `Enter`    |
//! | inside  | outside | –                                 | `Exit`     |
//! | inside  | inside  | –                                 | `Inside`   |
//! | outside | outside | yes                               | `Cross`    |
//! | outside | outside | no                                | `Outside`  |
//!
//! A newly inserted object has no "before" and counts as outside before. A fence reports
//! only the transitions in its [`TransitionSet`]; as in Tile38, when it does not report
//! `Enter` it reports `Inside` instead (if asked), and `Outside` in place of `Exit` or
//! `Cross`; when it reports `Enter` and also `Inside`, both are emitted (and `Exit`/`Cross`
//! are followed by `Outside` likewise). Boundaries count as inside.
//!
//! When an anchor moves, its circle moves: objects it sweeps over get `Enter`, objects it
//! leaves get `Exit`, objects in both the old and the new circle get `Inside` (with
//! [`Trigger::FenceMoved`]); `Outside` and `Cross` are reported only for moves of the object
//! itself. Fences watch point objects only, and never their own anchor.
//!
//! Fences live in their own R-tree, so a move costs a lookup of the fences near the segment
//! it travelled, not a scan of every fence. The exception is a fence that reports `Outside`:
//! it must hear about every move anywhere, so each such fence costs a test per move.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use geo::Intersects;
use rstar::{AABB, RTree, RTreeObject};
use serde::Serialize;

use crate::coord::{Position, Timestamp, cap_cover};
use crate::distance::{move_segments, to_segment_m};
use crate::error::GeoError;
use crate::object::{Area, Kind, KindSet, ObjectId};
use crate::query::check_radius;

/// Identifies a geofence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FenceId(pub u64);

impl std::fmt::Display for FenceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The region a fence encloses.
#[derive(Debug, Clone, PartialEq)]
pub enum FenceShape {
    /// A static area (e.g. a flood zone).
    Area(Area),
    /// A static circle.
    Circle {
        /// Centre.
        center: Position,
        /// Radius in metres (great-circle).
        radius_m: f64,
    },
    /// A circle that follows a point object as it moves. While the anchor is not indexed
    /// (or is an area) the fence encloses nothing.
    Around {
        /// The object at the centre.
        anchor: ObjectId,
        /// Radius in metres (great-circle).
        radius_m: f64,
    },
}

impl FenceShape {
    /// Whether `p` is inside the fence or on its boundary. `anchor_at` is the anchor's
    /// position for [`FenceShape::Around`] (ignored otherwise; `None` means dormant).
    pub fn covers(&self, p: Position, anchor_at: Option<Position>) -> bool {
        match self {
            FenceShape::Area(a) => a.covers(p),
            FenceShape::Circle { center, radius_m } => center.distance_m(p) <= *radius_m,
            FenceShape::Around { radius_m, .. } => {
                anchor_at.is_some_and(|c| c.distance_m(p) <= *radius_m)
            }
        }
    }

    /// Whether the straight move `from → to` (in longitude/latitude, taking the short way
    /// across the antimeridian) touches the fence.
    pub fn crossed_by(&self, from: Position, to: Position, anchor_at: Option<Position>) -> bool {
        let center = match self {
            FenceShape::Area(_) => None,
            FenceShape::Circle { center, .. } => Some(*center),
            FenceShape::Around { .. } => anchor_at,
        };
        move_segments(from, to)
            .into_iter()
            .any(|(a, b)| match self {
                FenceShape::Area(area) => {
                    let line = geo::Line::new(
                        geo::coord! { x: a[0], y: a[1] },
                        geo::coord! { x: b[0], y: b[1] },
                    );
                    area.polygons().intersects(&line)
                }
                FenceShape::Circle { radius_m, .. } | FenceShape::Around { radius_m, .. } => {
                    center.is_some_and(|c| to_segment_m(c, a, b) <= *radius_m)
                }
            })
    }
}

/// One of Tile38's five geofence transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// Was outside, is inside.
    Enter,
    /// Was inside, is outside.
    Exit,
    /// Was and is inside.
    Inside,
    /// Was and is outside, and the move did not pass through the fence.
    Outside,
    /// Was and is outside, but the straight move from the old to the new position passed
    /// through the fence.
    Cross,
}

impl Transition {
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// What is reported in place of a transition the fence does not report.
    fn fallback(self) -> Option<Transition> {
        match self {
            Transition::Enter => Some(Transition::Inside),
            Transition::Exit | Transition::Cross => Some(Transition::Outside),
            Transition::Inside | Transition::Outside => None,
        }
    }
}

/// A set of [`Transition`]s a fence reports. [`Default`] is [`TransitionSet::CHANGES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransitionSet(u8);

impl TransitionSet {
    /// All five.
    pub const ALL: TransitionSet = TransitionSet(0b1_1111);
    /// `Enter`, `Exit` and `Cross`: the moves that change something.
    pub const CHANGES: TransitionSet = TransitionSet(0b1_0011);
    /// Nothing.
    pub const EMPTY: TransitionSet = TransitionSet(0);

    /// This set plus `t`.
    pub fn with(self, t: Transition) -> Self {
        TransitionSet(self.0 | t.bit())
    }

    /// Whether `t` is in the set.
    pub fn contains(self, t: Transition) -> bool {
        self.0 & t.bit() != 0
    }

    /// The transitions actually emitted for `primary` under this set (zero, one or two).
    fn emitted(self, primary: Transition) -> impl Iterator<Item = Transition> {
        let (first, second) = if self.contains(primary) {
            (
                Some(primary),
                primary.fallback().filter(|f| self.contains(*f)),
            )
        } else {
            (primary.fallback().filter(|f| self.contains(*f)), None)
        };
        first.into_iter().chain(second)
    }
}

impl Default for TransitionSet {
    fn default() -> Self {
        Self::CHANGES
    }
}

impl FromIterator<Transition> for TransitionSet {
    fn from_iter<I: IntoIterator<Item = Transition>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

/// A geofence: shape, which object kinds it watches and which transitions it reports.
///
/// ```
/// use nexus_geo::{Area, Fence, FenceId, FenceShape, Kind, KindSet, Transition, TransitionSet};
/// let zone = Area::polygon(&[(30.0, 0.0), (30.1, 0.0), (30.1, 0.1), (30.0, 0.1)])?;
/// let fence = Fence::new(FenceId(1), FenceShape::Area(zone))
///     .watch(KindSet::only(Kind::Responder))
///     .detect([Transition::Enter, Transition::Exit, Transition::Cross].into_iter().collect());
/// # let _ = fence;
/// # Ok::<(), nexus_geo::GeoError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    /// Unique id.
    pub id: FenceId,
    /// The enclosed region.
    pub shape: FenceShape,
    /// Kinds of object the fence reports on.
    pub watch: KindSet,
    /// Transitions the fence reports.
    pub detect: TransitionSet,
}

impl Fence {
    /// A fence watching every kind and reporting [`TransitionSet::CHANGES`].
    pub fn new(id: FenceId, shape: FenceShape) -> Self {
        Self {
            id,
            shape,
            watch: KindSet::ALL,
            detect: TransitionSet::default(),
        }
    }

    /// Sets the watched kinds.
    pub fn watch(mut self, kinds: KindSet) -> Self {
        self.watch = kinds;
        self
    }

    /// Sets the reported transitions.
    pub fn detect(mut self, transitions: TransitionSet) -> Self {
        self.detect = transitions;
        self
    }
}

/// What caused a [`FenceEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Trigger {
    /// The object was inserted, moved or updated.
    ObjectMoved,
    /// The fence moved with its anchor.
    FenceMoved {
        /// The anchor that moved.
        anchor: ObjectId,
    },
}

/// A fence transition, returned by mutations for the caller to publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FenceEvent {
    /// The fence.
    pub fence: FenceId,
    /// The object.
    pub object: ObjectId,
    /// The object's kind.
    pub kind: Kind,
    /// What happened.
    pub transition: Transition,
    /// The object's position now.
    pub position: Position,
    /// Its position before the move, if it had one.
    pub previous: Option<Position>,
    /// Why this was evaluated.
    pub trigger: Trigger,
    /// The `now` passed to the mutation.
    pub at: Timestamp,
}

/// One R-tree entry of a fence (a fence may need several, e.g. a circle across ±180°).
#[derive(Debug, Clone, Copy, PartialEq)]
struct FenceEntry {
    fence: FenceId,
    min: [f64; 2],
    max: [f64; 2],
}

impl RTreeObject for FenceEntry {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners(self.min, self.max)
    }
}

#[derive(Debug)]
struct Slot {
    fence: Fence,
    /// Current centre of a circle fence (`None` for areas, and for dormant anchored fences).
    center: Option<Position>,
    entries: Vec<FenceEntry>,
}

impl Slot {
    fn radius_m(&self) -> f64 {
        match self.fence.shape {
            FenceShape::Circle { radius_m, .. } | FenceShape::Around { radius_m, .. } => radius_m,
            FenceShape::Area(_) => 0.0,
        }
    }

    fn covers(&self, p: Position) -> bool {
        self.fence.shape.covers(p, self.center)
    }

    fn crossed_by(&self, from: Position, to: Position) -> bool {
        self.fence.shape.crossed_by(from, to, self.center)
    }

    fn anchor(&self) -> Option<ObjectId> {
        match self.fence.shape {
            FenceShape::Around { anchor, .. } => Some(anchor),
            _ => None,
        }
    }

    fn build_entries(&mut self) {
        let id = self.fence.id;
        let entry = |r: &crate::coord::LonLatRect| FenceEntry {
            fence: id,
            min: r.min,
            max: r.max,
        };
        self.entries = match (&self.fence.shape, self.center) {
            (FenceShape::Area(a), _) => vec![entry(&a.bounds())],
            (_, Some(c)) => cap_cover(c, self.radius_m()).iter().map(entry).collect(),
            (_, None) => Vec::new(),
        };
    }
}

/// A fence whose circle moved with its anchor, as told by [`Fences::move_anchor`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct MovedFence {
    pub(crate) fence: FenceId,
    pub(crate) old_center: Option<Position>,
    pub(crate) new_center: Option<Position>,
    pub(crate) radius_m: f64,
    pub(crate) watch: KindSet,
    pub(crate) detect: TransitionSet,
}

/// All fences, with their own R-tree.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    slots: BTreeMap<FenceId, Slot>,
    tree: RTree<FenceEntry>,
    outside_watchers: BTreeSet<FenceId>,
    anchored: HashMap<ObjectId, Vec<FenceId>>,
}

impl Fences {
    /// Adds a fence; `anchor_at` is the anchor's current position for `Around` fences.
    pub(crate) fn insert(
        &mut self,
        fence: Fence,
        anchor_at: Option<Position>,
    ) -> Result<(), GeoError> {
        if self.slots.contains_key(&fence.id) {
            return Err(GeoError::DuplicateFence(fence.id));
        }
        let center = match &fence.shape {
            FenceShape::Area(_) => None,
            FenceShape::Circle { center, radius_m } => {
                check_radius(*radius_m)?;
                Some(*center)
            }
            FenceShape::Around { radius_m, .. } => {
                check_radius(*radius_m)?;
                anchor_at
            }
        };
        let mut slot = Slot {
            fence,
            center,
            entries: Vec::new(),
        };
        slot.build_entries();
        let id = slot.fence.id;
        for e in &slot.entries {
            self.tree.insert(*e);
        }
        if slot.fence.detect.contains(Transition::Outside) {
            self.outside_watchers.insert(id);
        }
        if let Some(anchor) = slot.anchor() {
            self.anchored.entry(anchor).or_default().push(id);
        }
        self.slots.insert(id, slot);
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: FenceId) -> Option<Fence> {
        let slot = self.slots.remove(&id)?;
        for e in &slot.entries {
            self.tree.remove(e);
        }
        self.outside_watchers.remove(&id);
        if let Some(anchor) = slot.anchor()
            && let Some(list) = self.anchored.get_mut(&anchor)
        {
            list.retain(|f| *f != id);
            if list.is_empty() {
                self.anchored.remove(&anchor);
            }
        }
        Some(slot.fence)
    }

    pub(crate) fn get(&self, id: FenceId) -> Option<&Fence> {
        self.slots.get(&id).map(|s| &s.fence)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Fence> {
        self.slots.values().map(|s| &s.fence)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Transitions of object `id` (of `kind`) moving from `old` to `new`, appended to `out`.
    pub(crate) fn object_moved(
        &self,
        id: ObjectId,
        kind: Kind,
        old: Option<Position>,
        new: Position,
        at: Timestamp,
        out: &mut Vec<FenceEvent>,
    ) {
        if self.slots.is_empty() {
            return;
        }
        let segments = match old {
            Some(o) => move_segments(o, new),
            None => vec![(new.xy(), new.xy())],
        };
        let mut candidates: Vec<FenceId> = self.outside_watchers.iter().copied().collect();
        for &(a, b) in &segments {
            let env = AABB::from_corners(a, b);
            candidates.extend(
                self.tree
                    .locate_in_envelope_intersecting(&env)
                    .map(|e| e.fence),
            );
        }
        candidates.sort_unstable();
        candidates.dedup();
        for fid in candidates {
            let Some(slot) = self.slots.get(&fid) else {
                continue;
            };
            if !slot.fence.watch.contains(kind) || slot.anchor() == Some(id) {
                continue;
            }
            let was = old.is_some_and(|o| slot.covers(o));
            let is = slot.covers(new);
            let primary = match (was, is) {
                (true, true) => Transition::Inside,
                (true, false) => Transition::Exit,
                (false, true) => Transition::Enter,
                (false, false) if old.is_some_and(|o| slot.crossed_by(o, new)) => Transition::Cross,
                (false, false) => Transition::Outside,
            };
            for transition in slot.fence.detect.emitted(primary) {
                out.push(FenceEvent {
                    fence: fid,
                    object: id,
                    kind,
                    transition,
                    position: new,
                    previous: old,
                    trigger: Trigger::ObjectMoved,
                    at,
                });
            }
        }
    }

    /// Re-centres every fence anchored on `anchor` (at `new`, or dormant when `None`) and
    /// says which fences moved, so the index can find the objects they swept.
    pub(crate) fn move_anchor(
        &mut self,
        anchor: ObjectId,
        new: Option<Position>,
    ) -> Vec<MovedFence> {
        let Some(ids) = self.anchored.get(&anchor) else {
            return Vec::new();
        };
        let mut moved = Vec::with_capacity(ids.len());
        for fid in ids {
            let Some(slot) = self.slots.get_mut(fid) else {
                continue;
            };
            for e in &slot.entries {
                self.tree.remove(e);
            }
            let old_center = slot.center;
            slot.center = new;
            slot.build_entries();
            for e in &slot.entries {
                self.tree.insert(*e);
            }
            moved.push(MovedFence {
                fence: *fid,
                old_center,
                new_center: new,
                radius_m: slot.radius_m(),
                watch: slot.fence.watch,
                detect: slot.fence.detect,
            });
        }
        moved
    }
}

/// Transitions of an object at `p` (not itself moving) when fence `m` moved, appended to
/// `out`. Objects outside both circles get nothing.
pub(crate) fn swept(
    m: &MovedFence,
    anchor: ObjectId,
    object: ObjectId,
    kind: Kind,
    p: Position,
    at: Timestamp,
    out: &mut Vec<FenceEvent>,
) {
    if object == anchor || !m.watch.contains(kind) {
        return;
    }
    let within = |c: Option<Position>| c.is_some_and(|c| c.distance_m(p) <= m.radius_m);
    let primary = match (within(m.old_center), within(m.new_center)) {
        (true, true) => Transition::Inside,
        (true, false) => Transition::Exit,
        (false, true) => Transition::Enter,
        (false, false) => return,
    };
    for transition in m.detect.emitted(primary) {
        out.push(FenceEvent {
            fence: m.fence,
            object,
            kind,
            transition,
            position: p,
            previous: Some(p),
            trigger: Trigger::FenceMoved { anchor },
            at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lat: f64, lon: f64) -> Position {
        Position::new(lat, lon).unwrap()
    }

    fn square() -> Area {
        Area::polygon(&[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]).unwrap()
    }

    fn run(fences: &Fences, old: Option<Position>, new: Position) -> Vec<Transition> {
        let mut out = Vec::new();
        fences.object_moved(
            ObjectId(7),
            Kind::Responder,
            old,
            new,
            Timestamp(0),
            &mut out,
        );
        out.into_iter().map(|e| e.transition).collect()
    }

    fn with(detect: TransitionSet) -> Fences {
        let mut f = Fences::default();
        f.insert(
            Fence::new(FenceId(1), FenceShape::Area(square())).detect(detect),
            None,
        )
        .unwrap();
        f
    }

    #[test]
    fn the_five_transitions() {
        let f = with(TransitionSet::ALL);
        let inside = pos(0.5, 0.5);
        let west = pos(0.5, -1.0);
        let east = pos(0.5, 2.0);
        let north = pos(3.0, -1.0);
        use Transition::*;
        assert_eq!(run(&f, Some(west), inside), vec![Enter, Inside]);
        assert_eq!(run(&f, Some(inside), east), vec![Exit, Outside]);
        assert_eq!(run(&f, Some(inside), pos(0.6, 0.6)), vec![Inside]);
        assert_eq!(run(&f, Some(west), east), vec![Cross, Outside]);
        assert_eq!(run(&f, Some(west), north), vec![Outside]);
        assert_eq!(
            run(&f, None, inside),
            vec![Enter, Inside],
            "insert counts as entering"
        );
    }

    #[test]
    fn unreported_transitions_fall_back_like_tile38() {
        use Transition::*;
        let f = with([Inside, Outside].into_iter().collect());
        assert_eq!(run(&f, Some(pos(0.5, -1.0)), pos(0.5, 0.5)), vec![Inside]);
        assert_eq!(run(&f, Some(pos(0.5, -1.0)), pos(0.5, 2.0)), vec![Outside]);
        let f = with(TransitionSet::CHANGES);
        assert_eq!(run(&f, Some(pos(0.5, 0.2)), pos(0.5, 0.5)), vec![]);
        assert_eq!(run(&f, Some(pos(0.5, -1.0)), pos(0.5, 2.0)), vec![Cross]);
    }

    #[test]
    fn kinds_not_watched_are_ignored() {
        let mut f = Fences::default();
        f.insert(
            Fence::new(FenceId(1), FenceShape::Area(square())).watch(KindSet::only(Kind::Incident)),
            None,
        )
        .unwrap();
        assert!(run(&f, Some(pos(0.5, -1.0)), pos(0.5, 0.5)).is_empty());
    }

    #[test]
    fn circle_cross_uses_the_segment_distance() {
        let mut f = Fences::default();
        let shape = FenceShape::Circle {
            center: pos(0.0, 0.0),
            radius_m: 10_000.0,
        };
        f.insert(Fence::new(FenceId(2), shape), None).unwrap();
        // Passes 0.05° (~5.6 km) north of the centre.
        assert_eq!(
            run(&f, Some(pos(0.05, -1.0)), pos(0.05, 1.0)),
            vec![Transition::Cross]
        );
        // Passes 0.2° (~22 km) north.
        assert!(run(&f, Some(pos(0.2, -1.0)), pos(0.2, 1.0)).is_empty());
    }

    #[test]
    fn duplicate_and_bad_radius_are_rejected() {
        let mut f = with(TransitionSet::ALL);
        let dup = Fence::new(FenceId(1), FenceShape::Area(square()));
        assert_eq!(
            f.insert(dup, None),
            Err(GeoError::DuplicateFence(FenceId(1)))
        );
        let bad = FenceShape::Circle {
            center: pos(0.0, 0.0),
            radius_m: -1.0,
        };
        assert_eq!(
            f.insert(Fence::new(FenceId(9), bad), None),
            Err(GeoError::InvalidRadius(-1.0))
        );
        assert!(f.remove(FenceId(1)).is_some());
        assert_eq!(f.len(), 0);
    }
}
