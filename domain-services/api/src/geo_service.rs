//! The geo index as a service: one task owns the [`GeoIndex`]; handlers hold a cloneable
//! [`GeoService`] and talk to it by message (`mpsc` commands with `oneshot` replies), so the
//! index needs no lock (STYLE §3).
//!
//! The index speaks numeric [`ObjectId`]s and [`FenceId`]s; the store and the API speak text
//! ids. The owner maps between them: numbers are handed out when an object or fence is first
//! placed and are never persisted (the index is rebuilt from the store on start, and gets new
//! numbers then). Every answer leaves the service with text ids: GeoJSON features carry the
//! store id as `id`, fence transitions become [`FenceNotice`]s.
//!
//! Queries run under a [`Budget`] of [`MAX_STEPS`] steps and a [`QUERY_DEADLINE`]; an
//! interrupted query answers what it found, marked `"partial": true` in the collection (a
//! foreign member, as RFC 7946 §6.1 allows), and a query that hit its `limit` is marked
//! `"truncated": true`.

use nexus_geo::{
    Area, Budget, ClusterQuery, Completion, Fence, FenceEvent, FenceId, FenceShape, Filter,
    GeoError, GeoIndex, Kind, KindSet, Object, ObjectId, Position, Query, Timestamp, Transition,
    TransitionSet, Trigger,
};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Longest a query may run before it answers with what it found.
pub const QUERY_DEADLINE: Duration = Duration::from_millis(250);
/// Most steps (tree nodes and candidates) a query may take.
pub const MAX_STEPS: u64 = 20_000_000;
/// Commands waiting for the owner task at most; senders wait beyond that (backpressure).
const QUEUE: usize = 1024;

/// Why the geo service could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GeoServiceError {
    /// The engine refused the request (invalid input, unknown object, …).
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// The owner task is gone (shutting down).
    #[error("the geo index is not running")]
    Stopped,
}

/// A geofence transition, with store ids and without positions (volunteers' positions are
/// personal data and stay out of events and logs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FenceNotice {
    /// The fence (store id).
    pub fence_id: String,
    /// The object that moved or was swept (store id).
    pub object_id: String,
    /// Its kind.
    pub kind: Kind,
    /// What happened: `enter`, `exit`, `inside`, `outside` or `cross`.
    pub transition: Transition,
    /// `object_moved`, or `fence_moved` when a fence around a moving object swept it.
    pub trigger: &'static str,
    /// The moving anchor, for `fence_moved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_id: Option<String>,
    /// When, Unix ms.
    pub at: i64,
}

/// The region of a fence to add, with a text anchor id for fences around moving objects.
#[derive(Debug, Clone, PartialEq)]
pub enum FenceRegion {
    /// A static area.
    Area(Area),
    /// A static circle.
    Circle {
        /// Centre.
        center: Position,
        /// Radius, metres.
        radius_m: f64,
    },
    /// A circle following a point object.
    Around {
        /// Store id of the object at the centre.
        anchor: String,
        /// Radius, metres.
        radius_m: f64,
    },
}

/// A fence to add: region, watched kinds and reported transitions.
#[derive(Debug, Clone, PartialEq)]
pub struct FenceSpec {
    /// The region.
    pub region: FenceRegion,
    /// Kinds of object it reports on.
    pub watch: KindSet,
    /// Transitions it reports.
    pub detect: TransitionSet,
}

/// A GeoJSON FeatureCollection answer, features identified by store id.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoAnswer {
    /// The FeatureCollection (with `partial` / `truncated` members when they apply).
    pub collection: serde_json::Value,
    /// How the query ended.
    pub completion: Completion,
}

type Reply<T> = oneshot::Sender<T>;

enum Command {
    Upsert {
        id: String,
        object: Box<Object>,
        now: Timestamp,
        reply: Reply<Vec<FenceNotice>>,
    },
    Move {
        id: String,
        to: Position,
        now: Timestamp,
        reply: Reply<Result<Vec<FenceNotice>, GeoError>>,
    },
    Remove {
        id: String,
        reply: Reply<bool>,
    },
    Query {
        query: Box<Query>,
        reply: Reply<Result<GeoAnswer, GeoError>>,
    },
    Nearest {
        center: Position,
        k: usize,
        filter: Box<Filter>,
        reply: Reply<GeoAnswer>,
    },
    Clusters {
        query: Box<ClusterQuery>,
        reply: Reply<Result<GeoAnswer, GeoError>>,
    },
    AddFence {
        id: String,
        spec: Box<FenceSpec>,
        reply: Reply<Result<(), GeoError>>,
    },
    RemoveFence {
        id: String,
        reply: Reply<bool>,
    },
    Counts {
        reply: Reply<(usize, usize)>,
    },
}

/// A handle on the geo index task; cheap to clone.
#[derive(Debug, Clone)]
pub struct GeoService {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Commands may carry volunteers' positions: print only what they are.
        f.write_str(match self {
            Command::Upsert { .. } => "Upsert",
            Command::Move { .. } => "Move",
            Command::Remove { .. } => "Remove",
            Command::Query { .. } => "Query",
            Command::Nearest { .. } => "Nearest",
            Command::Clusters { .. } => "Clusters",
            Command::AddFence { .. } => "AddFence",
            Command::RemoveFence { .. } => "RemoveFence",
            Command::Counts { .. } => "Counts",
        })
    }
}

impl GeoService {
    /// An empty index served by a new task (tests, fresh installs).
    pub fn empty() -> Self {
        Self::spawn(Owner::new(GeoIndex::new(), Vec::new()))
    }

    /// Builds the index from `objects` (R-tree bulk load; ids are store ids, the objects'
    /// own [`ObjectId`]s are ignored), adds `fences`, and starts the owner task. A fence the
    /// index refuses (e.g. around an object that no longer exists) is skipped and returned
    /// with the reason.
    ///
    /// Must be called inside a tokio runtime. Building is CPU work proportional to the
    /// number of objects: call it from `spawn_blocking` for large stores.
    pub fn start(
        objects: Vec<(String, Object)>,
        fences: Vec<(String, FenceSpec)>,
    ) -> Result<(Self, Vec<(String, GeoError)>), GeoError> {
        let mut names = Vec::with_capacity(objects.len());
        let mut placed = Vec::with_capacity(objects.len());
        for (n, (id, mut object)) in (0u64..).zip(objects) {
            object.id = ObjectId(n);
            names.push(id);
            placed.push(object);
        }
        let index = GeoIndex::from_objects(placed)?;
        let mut owner = Owner::new(index, names);
        let mut refused = Vec::new();
        for (id, spec) in fences {
            if let Err(e) = owner.add_fence(id.clone(), spec) {
                refused.push((id, e));
            }
        }
        Ok((Self::spawn(owner), refused))
    }

    fn spawn(owner: Owner) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(owner.run(rx));
        GeoService { tx }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, GeoServiceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| GeoServiceError::Stopped)?;
        rx.await.map_err(|_| GeoServiceError::Stopped)
    }

    /// Inserts or replaces the object with store id `id`; returns the fence transitions.
    /// `now_ms` should be the stored row's `updated_at`: a mutation older than the last one
    /// applied to the object is ignored (it lost a race to the index, not to the store).
    pub async fn upsert(
        &self,
        id: &str,
        object: Object,
        now_ms: i64,
    ) -> Result<Vec<FenceNotice>, GeoServiceError> {
        let id = id.to_string();
        self.call(|reply| Command::Upsert {
            id,
            object: Box::new(object),
            now: Timestamp(now_ms),
            reply,
        })
        .await
    }

    /// Moves a point object; returns the fence transitions.
    pub async fn move_to(
        &self,
        id: &str,
        to: Position,
        now_ms: i64,
    ) -> Result<Vec<FenceNotice>, GeoServiceError> {
        let id = id.to_string();
        Ok(self
            .call(|reply| Command::Move {
                id,
                to,
                now: Timestamp(now_ms),
                reply,
            })
            .await??)
    }

    /// Removes an object; false when it was not indexed.
    pub async fn remove(&self, id: &str) -> Result<bool, GeoServiceError> {
        let id = id.to_string();
        self.call(|reply| Command::Remove { id, reply }).await
    }

    /// Runs a bbox, radius or area query.
    pub async fn query(&self, query: Query) -> Result<GeoAnswer, GeoServiceError> {
        Ok(self
            .call(|reply| Command::Query {
                query: Box::new(query),
                reply,
            })
            .await??)
    }

    /// The `k` objects nearest to `center` that pass `filter`, nearest first.
    pub async fn nearest(
        &self,
        center: Position,
        k: usize,
        filter: Filter,
    ) -> Result<GeoAnswer, GeoServiceError> {
        self.call(|reply| Command::Nearest {
            center,
            k,
            filter: Box::new(filter),
            reply,
        })
        .await
    }

    /// Clusters and single objects for a map view.
    pub async fn clusters(&self, query: ClusterQuery) -> Result<GeoAnswer, GeoServiceError> {
        Ok(self
            .call(|reply| Command::Clusters {
                query: Box::new(query),
                reply,
            })
            .await??)
    }

    /// Adds a geofence with store id `id`.
    pub async fn add_fence(&self, id: &str, spec: FenceSpec) -> Result<(), GeoServiceError> {
        let id = id.to_string();
        Ok(self
            .call(|reply| Command::AddFence {
                id,
                spec: Box::new(spec),
                reply,
            })
            .await??)
    }

    /// Removes a geofence; false when it was not there.
    pub async fn remove_fence(&self, id: &str) -> Result<bool, GeoServiceError> {
        let id = id.to_string();
        self.call(|reply| Command::RemoveFence { id, reply }).await
    }

    /// Number of indexed objects and fences.
    pub async fn counts(&self) -> Result<(usize, usize), GeoServiceError> {
        self.call(|reply| Command::Counts { reply }).await
    }
}

/// The task state: the index and the id maps.
struct Owner {
    index: GeoIndex,
    ids: HashMap<String, ObjectId>,
    names: HashMap<ObjectId, String>,
    next: u64,
    fence_ids: HashMap<String, FenceId>,
    fence_names: HashMap<FenceId, String>,
    next_fence: u64,
    /// The `now` of the last mutation applied to each object: a mutation with an older
    /// `now` (a request that committed first but reached the index last) is not applied.
    versions: HashMap<ObjectId, i64>,
}

impl Owner {
    /// `names[n]` is the store id of `ObjectId(n)`.
    fn new(index: GeoIndex, names: Vec<String>) -> Self {
        let next = names.len() as u64;
        let names: HashMap<ObjectId, String> = (0u64..)
            .zip(names)
            .map(|(n, id)| (ObjectId(n), id))
            .collect();
        let ids = names.iter().map(|(n, id)| (id.clone(), *n)).collect();
        Owner {
            index,
            ids,
            names,
            next,
            fence_ids: HashMap::new(),
            fence_names: HashMap::new(),
            next_fence: 0,
            versions: HashMap::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd);
        }
    }

    fn handle(&mut self, cmd: Command) {
        // A dropped reply means the caller went away (request cancelled): nothing to do.
        match cmd {
            Command::Upsert {
                id,
                mut object,
                now,
                reply,
            } => {
                object.id = self.intern(id);
                if self.stale(object.id, now) {
                    let _ = reply.send(Vec::new());
                    return;
                }
                let events = self.index.upsert(*object, now);
                let _ = reply.send(self.notices(&events));
            }
            Command::Move { id, to, now, reply } => {
                let result = match self.ids.get(&id).copied() {
                    Some(n) if self.stale(n, now) => Ok(Vec::new()),
                    Some(n) => self
                        .index
                        .move_to(n, to, now)
                        .map(|events| self.notices(&events)),
                    None => Err(GeoError::UnknownObject(ObjectId(u64::MAX))),
                };
                let _ = reply.send(result);
            }
            Command::Remove { id, reply } => {
                let removed = match self.ids.remove(&id) {
                    Some(n) => {
                        self.names.remove(&n);
                        self.versions.remove(&n);
                        self.index.remove(n).is_some()
                    }
                    None => false,
                };
                let _ = reply.send(removed);
            }
            Command::Query { query, reply } => {
                let result = with_budget(|budget| {
                    self.index.query(&query, budget).map(|r| {
                        self.answer(
                            &nexus_geo::FeatureCollection::from_hits(&r.hits),
                            r.completion,
                        )
                    })
                });
                let _ = reply.send(result);
            }
            Command::Nearest {
                center,
                k,
                filter,
                reply,
            } => {
                let answer = with_budget(|budget| {
                    let r = self.index.nearest(center, k, &filter, budget);
                    self.answer(
                        &nexus_geo::FeatureCollection::from_hits(&r.hits),
                        r.completion,
                    )
                });
                let _ = reply.send(answer);
            }
            Command::Clusters { query, reply } => {
                let result = with_budget(|budget| {
                    self.index
                        .clusters(&query, budget)
                        .map(|r| self.answer(&r.features, r.completion))
                });
                let _ = reply.send(result);
            }
            Command::AddFence { id, spec, reply } => {
                let _ = reply.send(self.add_fence(id, *spec));
            }
            Command::RemoveFence { id, reply } => {
                let removed = match self.fence_ids.remove(&id) {
                    Some(n) => {
                        self.fence_names.remove(&n);
                        self.index.remove_fence(n).is_some()
                    }
                    None => false,
                };
                let _ = reply.send(removed);
            }
            Command::Counts { reply } => {
                let _ = reply.send((self.index.len(), self.index.fence_count()));
            }
        }
    }

    /// Whether a mutation at `now` is older than the last one applied to `n`; records `now`
    /// otherwise.
    fn stale(&mut self, n: ObjectId, now: Timestamp) -> bool {
        let last = self.versions.entry(n).or_insert(now.0);
        if *last > now.0 {
            return true;
        }
        *last = now.0;
        false
    }

    fn intern(&mut self, id: String) -> ObjectId {
        if let Some(&n) = self.ids.get(&id) {
            return n;
        }
        let n = ObjectId(self.next);
        self.next += 1;
        self.names.insert(n, id.clone());
        self.ids.insert(id, n);
        n
    }

    fn add_fence(&mut self, id: String, spec: FenceSpec) -> Result<(), GeoError> {
        let shape = match spec.region {
            FenceRegion::Area(a) => FenceShape::Area(a),
            FenceRegion::Circle { center, radius_m } => FenceShape::Circle { center, radius_m },
            FenceRegion::Around { anchor, radius_m } => FenceShape::Around {
                anchor: *self
                    .ids
                    .get(&anchor)
                    .ok_or(GeoError::UnknownObject(ObjectId(u64::MAX)))?,
                radius_m,
            },
        };
        if self.fence_ids.contains_key(&id) {
            return Err(GeoError::DuplicateFence(self.fence_ids[&id]));
        }
        let n = FenceId(self.next_fence);
        self.index
            .add_fence(Fence::new(n, shape).watch(spec.watch).detect(spec.detect))?;
        self.next_fence += 1;
        self.fence_names.insert(n, id.clone());
        self.fence_ids.insert(id, n);
        Ok(())
    }

    fn notices(&self, events: &[FenceEvent]) -> Vec<FenceNotice> {
        events
            .iter()
            .filter_map(|e| {
                let (trigger, anchor_id) = match e.trigger {
                    Trigger::ObjectMoved => ("object_moved", None),
                    Trigger::FenceMoved { anchor } => {
                        ("fence_moved", self.names.get(&anchor).cloned())
                    }
                };
                Some(FenceNotice {
                    fence_id: self.fence_names.get(&e.fence)?.clone(),
                    object_id: self.names.get(&e.object)?.clone(),
                    kind: e.kind,
                    transition: e.transition,
                    trigger,
                    anchor_id,
                    at: e.at.0,
                })
            })
            .collect()
    }

    /// Serializes a collection with store ids in place of index numbers.
    fn answer(&self, fc: &nexus_geo::FeatureCollection, completion: Completion) -> GeoAnswer {
        let mut collection = serde_json::to_value(fc)
            .unwrap_or_else(|_| serde_json::json!({"type": "FeatureCollection", "features": []}));
        if let Some(features) = collection
            .get_mut("features")
            .and_then(serde_json::Value::as_array_mut)
        {
            features.retain_mut(|f| match f.get("id").and_then(serde_json::Value::as_u64) {
                Some(n) => match self.names.get(&ObjectId(n)) {
                    Some(name) => {
                        f["id"] = serde_json::Value::String(name.clone());
                        true
                    }
                    None => false,
                },
                None => true,
            });
        }
        match completion {
            Completion::Interrupted(_) => collection["partial"] = true.into(),
            Completion::Truncated => collection["truncated"] = true.into(),
            Completion::Complete => {}
        }
        GeoAnswer {
            collection,
            completion,
        }
    }
}

/// Runs `f` with the service's budget: [`MAX_STEPS`] and [`QUERY_DEADLINE`] from now.
fn with_budget<T>(f: impl FnOnce(&Budget<'_>) -> T) -> T {
    let start = Instant::now();
    // Microseconds since the query started; the deadline is on the same scale.
    let clock = move || Timestamp(i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX));
    let deadline = Timestamp(i64::try_from(QUERY_DEADLINE.as_micros()).unwrap_or(i64::MAX));
    f(&Budget::steps(MAX_STEPS).with_deadline(deadline, &clock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_geo::{Attributes, BBox, Incident, Responder, Severity, Status};

    fn incident(lat: f64, lon: f64) -> Object {
        Object::point(
            ObjectId(0),
            Position::new(lat, lon).unwrap_or_else(|e| panic!("{e}")),
            Attributes::Incident(Incident {
                incident_type: "flood".into(),
                severity: Severity::new(3).unwrap_or_else(|e| panic!("{e}")),
                status: Status::Reported,
                reported_at: Timestamp(0),
            }),
        )
    }

    fn pos(lat: f64, lon: f64) -> Position {
        Position::new(lat, lon).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn answers_carry_store_ids_and_fence_notices_name_fence_and_object() {
        let (geo, refused) = GeoService::start(
            vec![
                ("inc-a".into(), incident(0.0, 0.0)),
                ("inc-b".into(), incident(5.0, 5.0)),
            ],
            vec![(
                "around-gone".into(),
                FenceSpec {
                    region: FenceRegion::Around {
                        anchor: "nobody".into(),
                        radius_m: 10.0,
                    },
                    watch: KindSet::ALL,
                    detect: TransitionSet::ALL,
                },
            )],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refused.len(), 1);
        let bbox = BBox::new(-1.0, -1.0, 1.0, 1.0).unwrap_or_else(|e| panic!("{e}"));
        let a = geo
            .query(Query::bbox(bbox))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.collection["features"][0]["id"], "inc-a");
        assert_eq!(a.collection["features"].as_array().map(Vec::len), Some(1));

        let zone = Area::polygon(&[(0.9, -0.1), (1.1, -0.1), (1.1, 0.1), (0.9, 0.1)])
            .unwrap_or_else(|e| panic!("{e}"));
        geo.add_fence(
            "zone",
            FenceSpec {
                region: FenceRegion::Area(zone),
                watch: KindSet::only(Kind::Responder),
                detect: TransitionSet::CHANGES,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let medic = Object::point(
            ObjectId(0),
            pos(0.0, 0.5),
            Attributes::Responder(Responder {
                role: "volunteer".into(),
                updated_at: Timestamp(0),
            }),
        );
        assert!(
            geo.upsert("vol-1", medic, 1)
                .await
                .unwrap_or_default()
                .is_empty()
        );
        let moved = geo
            .move_to("vol-1", pos(0.0, 1.0), 2)
            .await
            .unwrap_or_default();
        assert_eq!(moved.len(), 1);
        assert_eq!(
            (moved[0].fence_id.as_str(), moved[0].object_id.as_str()),
            ("zone", "vol-1")
        );
        assert_eq!(moved[0].transition, Transition::Enter);
        let json = serde_json::to_value(&moved[0]).unwrap_or_default();
        assert!(
            json.get("position").is_none(),
            "no positions in notices: {json}"
        );

        let near = geo
            .nearest(
                pos(4.0, 4.0),
                1,
                Filter::default().kinds(KindSet::only(Kind::Incident)),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(near.collection["features"][0]["id"], "inc-b");
        assert!(geo.remove("inc-b").await.unwrap_or_default());
        assert!(!geo.remove("inc-b").await.unwrap_or(true));
        assert!(matches!(
            geo.move_to("inc-b", pos(0.0, 0.0), 3).await,
            Err(GeoServiceError::Geo(GeoError::UnknownObject(_)))
        ));
        assert_eq!(geo.counts().await.unwrap_or_default(), (2, 1));
        assert!(geo.remove_fence("zone").await.unwrap_or_default());
    }
}
