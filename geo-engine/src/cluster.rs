//! Server-side clustering for the crisis map.
//!
//! # Model
//!
//! Point objects are placed on the Web Mercator plane (the one map tiles use) and quantized
//! to a `2^24 × 2^24` grid. At zoom `z` the map is cut into square cells of 64 screen pixels,
//! which are exactly the tiles of level `z + 2`; every cell holding two or more matching
//! objects becomes one cluster, a cell holding one becomes that object.
//!
//! Counts per cell are kept in an aggregated quadtree (a "count pyramid"): each node covers
//! one tile and holds, for each of 28 *buckets* (incident status × severity, hazard
//! severity, responder, resource, shelter), the number of objects and the sum of their grid
//! coordinates. A node with few objects stays a leaf holding them; when a leaf outgrows
//! [`LEAF_CAPACITY`] it splits into its four quadrants, and when a subtree shrinks to half
//! that it folds back into a leaf.
//!
//! * **Insert, delete, move** touch one root-to-leaf path: `O(depth)` ≤ 25 nodes, each an
//!   add or subtract on one bucket, no rebuild.
//! * **A query** walks the tree down to level `z + 2` inside the view, pruning empty and
//!   filtered-out subtrees: `O(cells in view)`, independent of how many points each cell
//!   holds. Filters by kind, status and minimum severity are sums over bucket masks, so
//!   counts, severity breakdowns and centroids are exact under the filter.
//! * **Expansion zoom** (the zoom at which a cluster breaks apart) follows the single
//!   populated child down from the cluster's node until it forks.
//!
//! Latitudes beyond ±85.051129° (the Web Mercator limit) are drawn on the edge row, as map
//! libraries do. Areas (shelters and hazards drawn as polygons) are not clustered: fetch
//! them with a bounding-box query.

use crate::budget::{Budget, Completion};
use crate::coord::{BBox, Position};
use crate::error::GeoError;
use crate::object::{Attributes, Kind, KindSet, ObjectId, Severity, Status, StatusSet};

/// The highest zoom a cluster query accepts.
pub const MAX_ZOOM: u8 = 20;

/// Objects a quadtree leaf holds before it splits.
pub const LEAF_CAPACITY: usize = 64;

/// Cells are tiles this many levels below the zoom: 2 → 4 × 4 cells of 64 px per 256-px tile.
const CELL_SHIFT: u32 = 2;
/// Quantization depth of the grid (and the deepest tree level).
const DEPTH: u32 = 24;
const GRID: f64 = (1u64 << DEPTH) as f64;
/// Web Mercator's latitude limit.
const MAX_MERCATOR_LAT: f64 = 85.051_128_779_806_59;
const BUCKETS: usize = 28;

/// Which objects a cluster query counts. [`Default`] counts every point object.
///
/// Only the dimensions the count pyramid aggregates can be filtered; the same rules as
/// [`Filter`](crate::Filter) apply (a status restriction keeps incidents only, a minimum
/// severity keeps incidents and hazards only).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterFilter {
    /// Kinds to count.
    pub kinds: KindSet,
    /// Incident statuses to count.
    pub statuses: StatusSet,
    /// Lowest severity to count.
    pub min_severity: Option<Severity>,
}

impl ClusterFilter {
    /// The buckets this filter keeps, as a bit mask.
    fn mask(&self) -> u32 {
        (0..BUCKETS).fold(0, |mask, b| {
            let (kind, sev, status) = bucket_info(b);
            let keep = self.kinds.contains(kind)
                && self
                    .min_severity
                    .is_none_or(|min| sev.is_some_and(|s| s >= min.get()))
                && (self.statuses.is_all() || status.is_some_and(|s| self.statuses.contains(s)));
            if keep { mask | 1 << b } else { mask }
        })
    }
}

/// A map request: the view, the zoom and what to count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterQuery {
    /// The visible area (may cross the antimeridian).
    pub bbox: BBox,
    /// Map zoom, 0 to [`MAX_ZOOM`].
    pub zoom: u8,
    /// Which objects to count.
    pub filter: ClusterFilter,
    /// At most this many features (clusters plus single objects).
    pub limit: Option<usize>,
}

impl ClusterQuery {
    /// Everything in `bbox` at `zoom`, no limit.
    pub fn new(bbox: BBox, zoom: u8) -> Self {
        Self {
            bbox,
            zoom,
            filter: ClusterFilter::default(),
            limit: None,
        }
    }
}

/// One cluster as computed by the pyramid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Zoom the cluster was computed for.
    pub zoom: u8,
    /// Cell column at level `zoom + 2` (Web Mercator tile numbering).
    pub cell_x: u32,
    /// Cell row at level `zoom + 2`.
    pub cell_y: u32,
    /// Mean position of its objects (in Web Mercator).
    pub centroid: Position,
    /// Number of objects.
    pub count: u32,
    /// Objects by severity 1..=5 (index 0 is severity 1); objects without severity are not
    /// in the breakdown.
    pub severity: [u32; 5],
    /// Objects by kind, in [`Kind::ALL`] order.
    pub kinds: [u32; 5],
    /// The zoom at which this cluster splits in two or more, or `None` when its objects
    /// coincide even at [`MAX_ZOOM`] (show them as a list).
    pub expansion_zoom: Option<u8>,
}

/// What a cell in view turned out to hold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Single(ObjectId),
    Cluster(Cluster),
}

/// Where an object sits in the pyramid. Derived from its position and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    id: ObjectId,
    qx: u32,
    qy: u32,
    bucket: u8,
}

impl Member {
    pub(crate) fn new(id: ObjectId, at: Position, attrs: &Attributes) -> Self {
        let (qx, qy) = quantize(at);
        Self {
            id,
            qx,
            qy,
            bucket: bucket_of(attrs),
        }
    }

    /// Which child of a node at `level` this member falls in.
    fn quadrant(&self, level: u32) -> usize {
        let bit = DEPTH - 1 - level;
        (((self.qx >> bit) & 1) | (((self.qy >> bit) & 1) << 1)) as usize
    }

    fn cell(&self, level: u32) -> (u32, u32) {
        (self.qx >> (DEPTH - level), self.qy >> (DEPTH - level))
    }
}

fn bucket_of(attrs: &Attributes) -> u8 {
    match attrs {
        Attributes::Incident(i) => i.status as u8 * 5 + (i.severity.get() - 1),
        Attributes::Hazard(h) => 20 + (h.severity.get() - 1),
        Attributes::Responder(_) => 25,
        Attributes::Resource(_) => 26,
        Attributes::Shelter(_) => 27,
    }
}

/// `(kind, severity, status)` of a bucket.
fn bucket_info(b: usize) -> (Kind, Option<u8>, Option<Status>) {
    match b {
        0..20 => (
            Kind::Incident,
            Some((b % 5) as u8 + 1),
            Some(Status::ALL[b / 5]),
        ),
        20..25 => (Kind::Hazard, Some((b - 20) as u8 + 1), None),
        25 => (Kind::Responder, None, None),
        26 => (Kind::Resource, None, None),
        _ => (Kind::Shelter, None, None),
    }
}

/// Web Mercator grid coordinates of a position.
fn quantize(p: Position) -> (u32, u32) {
    let x = (p.lon() + 180.0) / 360.0;
    let y = mercator_y(p.lat());
    let q = |v: f64| ((v * GRID).floor().max(0.0) as u32).min((1 << DEPTH) - 1);
    (q(x), q(y))
}

/// Position of the centre of grid point `(qx, qy)` (fractional for means).
fn dequantize(qx: f64, qy: f64) -> Position {
    let lon = (qx + 0.5) / GRID * 360.0 - 180.0;
    let n = std::f64::consts::PI * (1.0 - 2.0 * (qy + 0.5) / GRID);
    let lat = n.sinh().atan().to_degrees();
    Position::clamped(lat, lon)
}

#[derive(Debug, Clone)]
struct Agg {
    total: u32,
    count: [u32; BUCKETS],
    sum_x: [u64; BUCKETS],
    sum_y: [u64; BUCKETS],
}

impl Default for Agg {
    fn default() -> Self {
        Self {
            total: 0,
            count: [0; BUCKETS],
            sum_x: [0; BUCKETS],
            sum_y: [0; BUCKETS],
        }
    }
}

impl Agg {
    fn add(&mut self, m: &Member) {
        let b = usize::from(m.bucket);
        self.total += 1;
        self.count[b] += 1;
        self.sum_x[b] += u64::from(m.qx);
        self.sum_y[b] += u64::from(m.qy);
    }

    fn sub(&mut self, m: &Member) {
        let b = usize::from(m.bucket);
        self.total -= 1;
        self.count[b] -= 1;
        self.sum_x[b] -= u64::from(m.qx);
        self.sum_y[b] -= u64::from(m.qy);
    }

    fn filtered(&self, mask: u32) -> u32 {
        if mask == (1 << BUCKETS) - 1 {
            return self.total;
        }
        masked(mask).map(|b| self.count[b]).sum()
    }
}

fn masked(mask: u32) -> impl Iterator<Item = usize> {
    (0..BUCKETS).filter(move |b| mask & (1 << b) != 0)
}

#[derive(Debug, Clone)]
enum Body {
    Leaf(Vec<Member>),
    /// Child node indexes by quadrant; 0 means no child (the root is never a child).
    Inner([u32; 4]),
}

#[derive(Debug, Clone)]
struct Node {
    agg: Agg,
    body: Body,
}

impl Node {
    fn leaf() -> Self {
        Self {
            agg: Agg::default(),
            body: Body::Leaf(Vec::new()),
        }
    }
}

/// The count pyramid. Node 0 is the root (level 0, the whole world).
#[derive(Debug, Clone)]
pub(crate) struct ClusterTree {
    nodes: Vec<Node>,
    free: Vec<u32>,
}

impl Default for ClusterTree {
    fn default() -> Self {
        Self {
            nodes: vec![Node::leaf()],
            free: Vec::new(),
        }
    }
}

impl ClusterTree {
    fn alloc(&mut self, node: Node) -> u32 {
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    fn release(&mut self, i: u32) {
        self.nodes[i as usize] = Node::leaf();
        self.free.push(i);
    }

    /// Number of objects counted.
    pub(crate) fn len(&self) -> u32 {
        self.nodes[0].agg.total
    }

    pub(crate) fn insert(&mut self, m: Member) {
        let mut idx = 0usize;
        let mut level = 0u32;
        loop {
            let node = &mut self.nodes[idx];
            node.agg.add(&m);
            match &mut node.body {
                Body::Leaf(members) => {
                    members.push(m);
                    if members.len() > LEAF_CAPACITY && level < DEPTH {
                        self.split(idx, level);
                    }
                    return;
                }
                Body::Inner(children) => {
                    let q = m.quadrant(level);
                    let child = children[q];
                    let child = if child == 0 {
                        let c = self.alloc(Node::leaf());
                        if let Body::Inner(children) = &mut self.nodes[idx].body {
                            children[q] = c;
                        }
                        c
                    } else {
                        child
                    };
                    idx = child as usize;
                    level += 1;
                }
            }
        }
    }

    /// Turns the over-full leaf `idx` at `level` into an inner node, recursively.
    fn split(&mut self, idx: usize, level: u32) {
        let Body::Leaf(members) = std::mem::replace(&mut self.nodes[idx].body, Body::Inner([0; 4]))
        else {
            return;
        };
        let mut kids = [0u32; 4];
        for m in members {
            let q = m.quadrant(level);
            if kids[q] == 0 {
                kids[q] = self.alloc(Node::leaf());
            }
            let kid = &mut self.nodes[kids[q] as usize];
            kid.agg.add(&m);
            if let Body::Leaf(v) = &mut kid.body {
                v.push(m);
            }
        }
        self.nodes[idx].body = Body::Inner(kids);
        for kid in kids.into_iter().filter(|k| *k != 0) {
            let over =
                matches!(&self.nodes[kid as usize].body, Body::Leaf(v) if v.len() > LEAF_CAPACITY);
            if over && level + 1 < DEPTH {
                self.split(kid as usize, level + 1);
            }
        }
    }

    /// Removes `m` (as it was inserted). Returns `false` if it was not there.
    pub(crate) fn remove(&mut self, m: &Member) -> bool {
        // Find the path first so that a missing member leaves the counts untouched.
        let mut path = Vec::with_capacity(DEPTH as usize + 1);
        let mut idx = 0usize;
        let mut level = 0u32;
        let slot = loop {
            path.push(idx);
            match &self.nodes[idx].body {
                Body::Leaf(members) => match members.iter().position(|x| x.id == m.id) {
                    Some(slot) => break slot,
                    None => return false,
                },
                Body::Inner(children) => {
                    let child = children[m.quadrant(level)];
                    if child == 0 {
                        return false;
                    }
                    idx = child as usize;
                    level += 1;
                }
            }
        };
        for &n in &path {
            self.nodes[n].agg.sub(m);
        }
        if let Body::Leaf(members) = &mut self.nodes[idx].body {
            members.swap_remove(slot);
        }
        // Fold the shallowest inner node that became small back into a leaf.
        if let Some(&n) = path.iter().find(|&&n| {
            matches!(self.nodes[n].body, Body::Inner(_))
                && (self.nodes[n].agg.total as usize) <= LEAF_CAPACITY / 2
        }) {
            self.collapse(n);
            return true;
        }
        // Otherwise drop the leaf if it emptied (the root stays).
        if path.len() > 1 && self.nodes[idx].agg.total == 0 {
            let parent = path[path.len() - 2];
            if let Body::Inner(children) = &mut self.nodes[parent].body {
                for c in children.iter_mut().filter(|c| **c as usize == idx) {
                    *c = 0;
                }
            }
            self.release(idx as u32);
        }
        true
    }

    fn collapse(&mut self, n: usize) {
        let mut members = Vec::with_capacity(self.nodes[n].agg.total as usize);
        let mut stack = match &self.nodes[n].body {
            Body::Inner(children) => children.iter().copied().filter(|c| *c != 0).collect(),
            Body::Leaf(_) => Vec::new(),
        };
        while let Some(c) = stack.pop() {
            match std::mem::replace(&mut self.nodes[c as usize].body, Body::Leaf(Vec::new())) {
                Body::Leaf(v) => members.extend(v),
                Body::Inner(children) => stack.extend(children.into_iter().filter(|c| *c != 0)),
            }
            self.release(c);
        }
        self.nodes[n].body = Body::Leaf(members);
    }

    /// The clusters and single objects in view.
    pub(crate) fn query(
        &self,
        q: &ClusterQuery,
        budget: &Budget<'_>,
    ) -> Result<(Vec<Item>, Completion, u64), GeoError> {
        if q.zoom > MAX_ZOOM {
            return Err(GeoError::InvalidZoom(q.zoom));
        }
        let level = u32::from(q.zoom) + CELL_SHIFT;
        let view = View::new(&q.bbox, level);
        let mask = q.filter.mask();
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut meter = budget.meter();
        let mut out = Vec::new();
        let mut truncated = false;
        let mut stack = vec![(0usize, 0u32, 0u32, 0u32)];
        'walk: while let Some((idx, l, cx, cy)) = stack.pop() {
            if !meter.tick() {
                break;
            }
            let node = &self.nodes[idx];
            if node.agg.filtered(mask) == 0 || !view.meets(l, cx, cy) {
                continue;
            }
            if l == level {
                if out.len() == limit {
                    truncated = true;
                    break;
                }
                out.push(self.cell_item(idx, q.zoom, cx, cy, mask));
                continue;
            }
            match &node.body {
                Body::Inner(children) => {
                    for qd in (0..4).rev() {
                        let c = children[qd];
                        if c != 0 {
                            let (dx, dy) = ((qd & 1) as u32, (qd >> 1) as u32);
                            stack.push((c as usize, l + 1, cx * 2 + dx, cy * 2 + dy));
                        }
                    }
                }
                Body::Leaf(members) => {
                    let mut in_view: Vec<((u32, u32), &Member)> = Vec::new();
                    for m in members {
                        if !meter.tick() {
                            break 'walk;
                        }
                        if mask & (1 << m.bucket) == 0 {
                            continue;
                        }
                        let cell = m.cell(level);
                        if view.meets(level, cell.0, cell.1) {
                            in_view.push((cell, m));
                        }
                    }
                    in_view.sort_unstable_by_key(|(cell, m)| (cell.1, cell.0, m.id));
                    for group in in_view.chunk_by(|a, b| a.0 == b.0) {
                        if out.len() == limit {
                            truncated = true;
                            break 'walk;
                        }
                        let ((x, y), _) = group[0];
                        let members: Vec<&Member> = group.iter().map(|(_, m)| *m).collect();
                        out.push(group_item(&members, q.zoom, x, y));
                    }
                }
            }
        }
        let completion = match meter.interrupted() {
            Some(i) => Completion::Interrupted(i),
            None if truncated => Completion::Truncated,
            None => Completion::Complete,
        };
        Ok((out, completion, meter.steps()))
    }

    /// The item for the node `idx` that is exactly one cell at the query level.
    fn cell_item(&self, idx: usize, zoom: u8, cx: u32, cy: u32, mask: u32) -> Item {
        let agg = &self.nodes[idx].agg;
        let count = agg.filtered(mask);
        if count == 1
            && let Some(id) = self.single(idx, mask)
        {
            return Item::Single(id);
        }
        let (mut sx, mut sy) = (0u64, 0u64);
        let mut severity = [0u32; 5];
        let mut kinds = [0u32; 5];
        for b in masked(mask) {
            sx += agg.sum_x[b];
            sy += agg.sum_y[b];
            tally(b, agg.count[b], &mut severity, &mut kinds);
        }
        let n = f64::from(count.max(1));
        Item::Cluster(Cluster {
            zoom,
            cell_x: cx,
            cell_y: cy,
            centroid: dequantize(sx as f64 / n, sy as f64 / n),
            count,
            severity,
            kinds,
            expansion_zoom: self.expansion_zoom(idx, u32::from(zoom) + CELL_SHIFT, mask),
        })
    }

    /// The one member under `idx` that passes `mask`.
    fn single(&self, mut idx: usize, mask: u32) -> Option<ObjectId> {
        loop {
            match &self.nodes[idx].body {
                Body::Leaf(members) => {
                    return members
                        .iter()
                        .find(|m| mask & (1 << m.bucket) != 0)
                        .map(|m| m.id);
                }
                Body::Inner(children) => {
                    idx = *children
                        .iter()
                        .find(|&&c| c != 0 && self.nodes[c as usize].agg.filtered(mask) > 0)?
                        as usize;
                }
            }
        }
    }

    /// Follows the only populated child down from `idx` (at `level`) until the matching
    /// objects fork.
    fn expansion_zoom(&self, mut idx: usize, mut level: u32, mask: u32) -> Option<u8> {
        loop {
            match &self.nodes[idx].body {
                Body::Leaf(members) => {
                    let members: Vec<&Member> = members
                        .iter()
                        .filter(|m| mask & (1 << m.bucket) != 0)
                        .collect();
                    return fork_zoom(&members);
                }
                Body::Inner(children) => {
                    let mut live = children
                        .iter()
                        .filter(|&&c| c != 0 && self.nodes[c as usize].agg.filtered(mask) > 0);
                    let first = *live.next()?;
                    if live.next().is_some() {
                        return zoom_of_split_level(level + 1);
                    }
                    idx = first as usize;
                    level += 1;
                }
            }
        }
    }
}

fn tally(bucket: usize, n: u32, severity: &mut [u32; 5], kinds: &mut [u32; 5]) {
    let (kind, sev, _) = bucket_info(bucket);
    kinds[kind as usize] += n;
    if let Some(s) = sev {
        severity[usize::from(s) - 1] += n;
    }
}

/// The item for a group of leaf members sharing one cell.
fn group_item(members: &[&Member], zoom: u8, x: u32, y: u32) -> Item {
    if let [only] = members {
        return Item::Single(only.id);
    }
    let (mut sx, mut sy) = (0u64, 0u64);
    let mut severity = [0u32; 5];
    let mut kinds = [0u32; 5];
    for m in members {
        sx += u64::from(m.qx);
        sy += u64::from(m.qy);
        tally(usize::from(m.bucket), 1, &mut severity, &mut kinds);
    }
    let n = members.len() as f64;
    Item::Cluster(Cluster {
        zoom,
        cell_x: x,
        cell_y: y,
        centroid: dequantize(sx as f64 / n, sy as f64 / n),
        count: members.len() as u32,
        severity,
        kinds,
        expansion_zoom: fork_zoom(members),
    })
}

/// The zoom at which members first fall into different cells.
fn fork_zoom(members: &[&Member]) -> Option<u8> {
    let first = members.first()?;
    let diff = members
        .iter()
        .fold(0u32, |d, m| d | (m.qx ^ first.qx) | (m.qy ^ first.qy));
    if diff == 0 {
        return None;
    }
    let highest_bit = 31 - diff.leading_zeros();
    zoom_of_split_level(DEPTH - highest_bit)
}

fn zoom_of_split_level(level: u32) -> Option<u8> {
    let zoom = level.checked_sub(CELL_SHIFT)?;
    u8::try_from(zoom).ok().filter(|z| *z <= MAX_ZOOM)
}

/// The query view as cell ranges at the query level.
struct View {
    level: u32,
    xs: Vec<(u32, u32)>,
    ys: (u32, u32),
}

impl View {
    fn new(b: &BBox, level: u32) -> Self {
        let n = 1u32 << level;
        let cell = |v: f64| ((v * f64::from(n)).floor().max(0.0) as u32).min(n - 1);
        let top = mercator_y(b.max_lat());
        let bottom = mercator_y(b.min_lat());
        let x0 = cell((b.min_lon() + 180.0) / 360.0);
        let x1 = cell((b.max_lon() + 180.0) / 360.0);
        let mut xs = if !b.crosses_antimeridian() {
            vec![(x0, x1)]
        } else if x1 >= x0 {
            vec![(0, n - 1)]
        } else {
            vec![(x0, n - 1), (0, x1)]
        };
        // ±180° is one meridian: a view touching one edge column also sees the other.
        if xs.iter().any(|r| r.0 == 0) && !xs.iter().any(|r| r.1 == n - 1) {
            xs.push((n - 1, n - 1));
        } else if xs.iter().any(|r| r.1 == n - 1) && !xs.iter().any(|r| r.0 == 0) {
            xs.push((0, 0));
        }
        Self {
            level,
            xs,
            ys: (cell(top), cell(bottom)),
        }
    }

    /// Whether the tile `(cx, cy)` at level `l` (≤ the view level) overlaps the view.
    fn meets(&self, l: u32, cx: u32, cy: u32) -> bool {
        let shift = self.level - l;
        let (lo_x, hi_x) = (cx << shift, ((cx + 1) << shift) - 1);
        let (lo_y, hi_y) = (cy << shift, ((cy + 1) << shift) - 1);
        lo_y <= self.ys.1
            && hi_y >= self.ys.0
            && self.xs.iter().any(|&(a, b)| lo_x <= b && hi_x >= a)
    }
}

/// Web Mercator `y` in `[0, 1]` of a latitude.
fn mercator_y(lat: f64) -> f64 {
    let s = lat
        .clamp(-MAX_MERCATOR_LAT, MAX_MERCATOR_LAT)
        .to_radians()
        .sin();
    0.5 - ((1.0 + s) / (1.0 - s)).ln() / (4.0 * std::f64::consts::PI)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::Timestamp;
    use crate::object::{Incident, Responder};

    fn incident(sev: u8) -> Attributes {
        Attributes::Incident(Incident {
            incident_type: "flood".into(),
            severity: Severity::new(sev).unwrap(),
            status: Status::Reported,
            reported_at: Timestamp(0),
        })
    }

    fn member(id: u64, lat: f64, lon: f64, attrs: &Attributes) -> Member {
        Member::new(ObjectId(id), Position::new(lat, lon).unwrap(), attrs)
    }

    fn all(tree: &ClusterTree, zoom: u8) -> Vec<Item> {
        let q = ClusterQuery::new(BBox::world(), zoom);
        tree.query(&q, &Budget::unlimited()).unwrap().0
    }

    fn total(items: &[Item]) -> u32 {
        items
            .iter()
            .map(|i| match i {
                Item::Single(_) => 1,
                Item::Cluster(c) => c.count,
            })
            .sum()
    }

    /// Brute-force invariant check: every node's aggregate equals the sum over its members.
    fn check(tree: &ClusterTree) {
        fn walk(t: &ClusterTree, idx: usize, level: u32) -> Agg {
            let mut agg = Agg::default();
            match &t.nodes[idx].body {
                Body::Leaf(members) => {
                    assert!(idx == 0 || !members.is_empty(), "empty non-root leaf");
                    assert!(members.len() <= LEAF_CAPACITY || level == DEPTH);
                    members.iter().for_each(|m| agg.add(m));
                }
                Body::Inner(children) => {
                    assert!(t.nodes[idx].agg.total as usize > LEAF_CAPACITY / 2);
                    for &c in children.iter().filter(|c| **c != 0) {
                        let a = walk(t, c as usize, level + 1);
                        agg.total += a.total;
                        for b in 0..BUCKETS {
                            agg.count[b] += a.count[b];
                            agg.sum_x[b] += a.sum_x[b];
                            agg.sum_y[b] += a.sum_y[b];
                        }
                    }
                }
            }
            let own = &t.nodes[idx].agg;
            assert_eq!(
                (own.total, own.count, own.sum_x),
                (agg.total, agg.count, agg.sum_x)
            );
            agg
        }
        walk(tree, 0, 0);
    }

    #[test]
    fn counts_survive_splits_moves_and_collapses() {
        let mut t = ClusterTree::default();
        let a = incident(3);
        let mut members = Vec::new();
        for i in 0..1000u32 {
            let m = member(
                i.into(),
                f64::from(i % 40) * 0.01,
                f64::from(i / 40) * 0.01,
                &a,
            );
            t.insert(m);
            members.push(m);
        }
        check(&t);
        assert_eq!(t.len(), 1000);
        for zoom in [0, 5, 10, 15, 20] {
            assert_eq!(total(&all(&t, zoom)), 1000, "zoom {zoom}");
        }
        for m in members.iter().step_by(3) {
            assert!(t.remove(m));
        }
        check(&t);
        assert!(!t.remove(&members[0]), "already removed");
        for m in members.iter().skip(1).step_by(3) {
            assert!(t.remove(m));
        }
        check(&t);
        assert_eq!(total(&all(&t, 12)), t.len());
    }

    #[test]
    fn world_view_at_zoom_0_is_at_most_16_cells() {
        let mut t = ClusterTree::default();
        let a = incident(2);
        for i in 0..500u32 {
            let lat = f64::from(i % 100) * 1.6 - 80.0;
            let lon = f64::from(i) * 0.7 - 175.0;
            t.insert(member(i.into(), lat, lon, &a));
        }
        let items = all(&t, 0);
        assert!(items.len() <= 16);
        assert_eq!(total(&items), 500);
    }

    #[test]
    fn filter_counts_and_severity_breakdown_are_exact() {
        let mut t = ClusterTree::default();
        for i in 0..100u32 {
            let sev = (i % 5 + 1) as u8;
            t.insert(member(i.into(), 10.0, 10.0, &incident(sev)));
        }
        let medic = Attributes::Responder(Responder {
            role: "medic".into(),
            updated_at: Timestamp(0),
        });
        t.insert(member(1000, 10.0, 10.0, &medic));
        let mut q = ClusterQuery::new(BBox::world(), 3);
        q.filter.min_severity = Some(Severity::new(4).unwrap());
        let (items, _, _) = t.query(&q, &Budget::unlimited()).unwrap();
        let [Item::Cluster(c)] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(c.count, 40);
        assert_eq!(c.severity, [0, 0, 0, 20, 20]);
        assert_eq!(c.kinds, [40, 0, 0, 0, 0]);
        assert_eq!(c.expansion_zoom, None, "identical positions never split");
        q.filter = ClusterFilter {
            kinds: KindSet::only(Kind::Responder),
            ..ClusterFilter::default()
        };
        let (items, _, _) = t.query(&q, &Budget::unlimited()).unwrap();
        assert_eq!(items, vec![Item::Single(ObjectId(1000))]);
    }

    #[test]
    fn expansion_zoom_is_where_the_cluster_forks() {
        let mut t = ClusterTree::default();
        let a = incident(1);
        // Two points ~1.1 km apart: one 64-px cell until cells are smaller than that.
        t.insert(member(1, 0.0, 0.0, &a));
        t.insert(member(2, 0.0, 0.01, &a));
        let items = all(&t, 5);
        let [Item::Cluster(c)] = &items[..] else {
            panic!("{items:?}")
        };
        let z = c.expansion_zoom.unwrap();
        assert_eq!(all(&t, z).len(), 2);
        assert_eq!(all(&t, z - 1).len(), 1);
    }

    #[test]
    fn antimeridian_view_sees_both_sides() {
        let mut t = ClusterTree::default();
        let a = incident(1);
        t.insert(member(1, 0.0, 179.5, &a));
        t.insert(member(2, 0.0, -179.5, &a));
        t.insert(member(3, 0.0, 0.0, &a));
        let q = ClusterQuery::new(BBox::new(170.0, -10.0, -170.0, 10.0).unwrap(), 8);
        let (items, _, _) = t.query(&q, &Budget::unlimited()).unwrap();
        let mut ids: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                Item::Single(id) => Some(id.0),
                Item::Cluster(_) => None,
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn rejects_zoom_above_max() {
        let t = ClusterTree::default();
        let q = ClusterQuery::new(BBox::world(), 21);
        assert_eq!(
            t.query(&q, &Budget::unlimited()).unwrap_err(),
            GeoError::InvalidZoom(21)
        );
    }

    #[test]
    fn mercator_round_trip() {
        for (lat, lon) in [(0.0, 0.0), (51.5, -0.12), (-33.9, 151.2), (85.0, 179.9)] {
            let (qx, qy) = quantize(Position::new(lat, lon).unwrap());
            let p = dequantize(f64::from(qx), f64::from(qy));
            assert!((p.lat() - lat).abs() < 1e-4 && (p.lon() - lon).abs() < 1e-4);
        }
    }
}
