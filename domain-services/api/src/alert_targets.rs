//! The alert targeting index: where every active alert subscription is, in memory, so that
//! an alert's areas select their subscribers through the geo engine
//! ([`GeoIndex::ids_within`]) instead of a store scan.
//!
//! One task owns a [`GeoIndex`] of subscription locations (point objects, nothing else:
//! contact details stay in the store); handlers and the alerting consumer hold a cloneable
//! [`AlertTargets`] and talk to it by message (STYLE §3). A subscription has up to two
//! points: its registered location and its device's last known location
//! ([`AlertTargets::locate`]); an area selects the subscription when either lies inside,
//! and answers it once. It is a derived view of `alert_subscriptions`:
//!
//! - built from the store at start ([`AlertTargets::load`], one bulk load);
//! - on the node that takes a subscription write, updated right after the commit
//!   ([`AlertTargets::add`], [`AlertTargets::remove`]);
//! - on every other node, by the `alert-targets` node-scope consumer ([`AlertTargetsSync`]):
//!   `alert.subscription.created`, `alert.subscription.located` (a device reported where
//!   it is) and `alert.subscription.ended` carry the subscription id only, and the node reads
//!   the row back from the store;
//! - ends that no event announces (an SMS `STOP`, a push service's 410) are dropped
//!   lazily: targeting reads the selected rows from the store (it needs their addresses
//!   anyway), which leaves out ended subscriptions, and tells the index to forget them.
//!
//! So the index may hold a few subscriptions that have ended (never delivered to, since the
//! store decides), and device locations past their age limit (targeting tests the age on
//! the row and tells the index to drop them), but never misses one that the store has — as
//! long as the events flow.
//!
//! The index speaks numeric [`ObjectId`]s: subscription number `n` (a dense slot) is
//! `ObjectId(2n)` at its registered location and `ObjectId(2n + 1)` at its device's; the
//! owner maps slots to subscription ids. Numbers are never persisted.

use nexus_events::{CloudEvent, EventType, Handler, HandlerError};
use nexus_geo::{
    Area, Attributes, Budget, Filter, GeoIndex, Object, ObjectId, Position, Responder, Timestamp,
};
use nexus_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Consumer name of [`AlertTargetsSync`] (node scope: every node runs it).
pub const ALERT_TARGETS_SYNC: &str = "alert-targets";
/// Commands waiting for the owner task at most; senders wait beyond that (backpressure).
const QUEUE: usize = 1024;
/// Rows read per page while loading the index from the store.
const LOAD_PAGE: i64 = 50_000;

/// Why the targeting index could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetsError {
    /// The owner task is gone (shutting down).
    #[error("the alert targeting index is not running")]
    Stopped,
    /// Reading the subscriptions from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Command {
    Add {
        id: String,
        at: Position,
    },
    Locate {
        id: String,
        at: Option<Position>,
    },
    Remove {
        ids: Vec<String>,
    },
    Within {
        areas: Vec<Area>,
        reply: oneshot::Sender<Vec<Arc<str>>>,
    },
    Len {
        reply: oneshot::Sender<usize>,
    },
}

/// A handle on the targeting index task; cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertTargets {
    tx: mpsc::Sender<Command>,
}

impl AlertTargets {
    /// An empty index served by a new task. Must be called inside a tokio runtime.
    pub fn empty() -> Self {
        Self::spawn(Owner::new(GeoIndex::new(), Vec::new()))
    }

    /// Builds the index from `(subscription id, position)` pairs (R-tree bulk load) and
    /// starts its task. CPU work proportional to the number of points.
    pub fn start(points: Vec<(String, Position)>) -> Self {
        let (index, names) = build(points.into_iter().map(|(id, at)| (id, at, None)).collect());
        Self::spawn(Owner::new(index, names))
    }

    /// Reads every active subscription's location from `store` (paged by id) and builds the
    /// index from them. Rows with an invalid position (none are stored) are skipped.
    pub async fn load(store: &Store) -> Result<Self, TargetsError> {
        let mut points = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .subscription_locations(after.as_deref(), LOAD_PAGE)
                .await?;
            let full = i64::try_from(page.len()).unwrap_or(i64::MAX) == LOAD_PAGE;
            after = page.last().map(|p| p.id.clone());
            points.extend(page.into_iter().filter_map(|p| {
                let home = Position::new(p.lat, p.lon).ok()?;
                let device = p.device.and_then(|d| Position::new(d.lat, d.lon).ok());
                Some((p.id, home, device))
            }));
            if !full {
                break;
            }
        }
        let count = points.len();
        let (index, names) = tokio::task::spawn_blocking(move || build(points))
            .await
            .map_err(|_| TargetsError::Stopped)?;
        tracing::info!(subscriptions = count, "alert targeting index built");
        Ok(Self::spawn(Owner::new(index, names)))
    }

    fn spawn(owner: Owner) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        // Its own thread, not a tokio task: a 1M-subscriber `ids_within` takes tens of
        // milliseconds of CPU, which must not stall a runtime worker (and the requests,
        // WebSocket writes and consumers queued behind it).
        let spawned = std::thread::Builder::new()
            .name("alert-targets".into())
            .spawn(move || owner.run(rx));
        if let Err(e) = spawned {
            // The handle's calls then answer `Stopped`.
            tracing::error!(error = %e, "cannot start the alert targeting thread");
        }
        AlertTargets { tx }
    }

    /// Places (or moves) subscription `id` at `at`.
    pub async fn add(&self, id: &str, at: Position) -> Result<(), TargetsError> {
        self.tx
            .send(Command::Add {
                id: id.to_string(),
                at,
            })
            .await
            .map_err(|_| TargetsError::Stopped)
    }

    /// Places (or moves) the last known location of subscription `id`'s device at `at`;
    /// `None` forgets it (too old). A subscription the index does not have is ignored.
    pub async fn locate(&self, id: &str, at: Option<Position>) -> Result<(), TargetsError> {
        self.tx
            .send(Command::Locate {
                id: id.to_string(),
                at,
            })
            .await
            .map_err(|_| TargetsError::Stopped)
    }

    /// Forgets subscriptions (ended, or gone from the store).
    pub async fn remove(&self, ids: Vec<String>) -> Result<(), TargetsError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Command::Remove { ids })
            .await
            .map_err(|_| TargetsError::Stopped)
    }

    /// Ids of the subscriptions inside any of `areas` (boundary included), each once, in
    /// no particular order. Complete: targeting must not miss anyone. (Shared strings: a
    /// million answers cost a million reference-count increments, not allocations.)
    pub async fn within(&self, areas: Vec<Area>) -> Result<Vec<Arc<str>>, TargetsError> {
        if areas.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Within { areas, reply })
            .await
            .map_err(|_| TargetsError::Stopped)?;
        rx.await.map_err(|_| TargetsError::Stopped)
    }

    /// Subscriptions in the index.
    pub async fn count(&self) -> Result<usize, TargetsError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Len { reply })
            .await
            .map_err(|_| TargetsError::Stopped)?;
        rx.await.map_err(|_| TargetsError::Stopped)
    }
}

/// The index of `points` — (subscription id, registered location, device location) —
/// bulk-loaded, and the subscription id of each slot.
fn build(points: Vec<(String, Position, Option<Position>)>) -> (GeoIndex, Vec<String>) {
    let mut names = Vec::with_capacity(points.len());
    let mut objects = Vec::with_capacity(points.len());
    for (slot, (id, home, device)) in (0u64..).zip(points) {
        names.push(id);
        objects.push(point(home_id(slot), home));
        if let Some(at) = device {
            objects.push(point(device_id(slot), at));
        }
    }
    // Numbered here, two per slot, so no id repeats and the bulk load cannot fail.
    (GeoIndex::from_objects(objects).unwrap_or_default(), names)
}

/// The object at subscription `slot`'s registered location.
fn home_id(slot: u64) -> ObjectId {
    ObjectId(slot * 2)
}

/// The object at subscription `slot`'s device location.
fn device_id(slot: u64) -> ObjectId {
    ObjectId(slot * 2 + 1)
}

fn point(id: ObjectId, at: Position) -> Object {
    Object::point(
        id,
        at,
        Attributes::Responder(Responder {
            role: "subscriber".into(),
            updated_at: Timestamp(0),
        }),
    )
}

/// The task state: the index and the id maps.
struct Owner {
    index: GeoIndex,
    /// Subscription id → slot.
    ids: HashMap<Arc<str>, u64>,
    /// `names[slot]`: the subscription id of a slot (`None` once removed). Slots are dense,
    /// so the answer to a targeting query is mapped (and deduplicated) by array access.
    names: Vec<Option<Arc<str>>>,
}

impl Owner {
    /// `names[slot]` is the subscription id of a slot.
    fn new(index: GeoIndex, names: Vec<String>) -> Self {
        let names: Vec<Option<Arc<str>>> =
            names.into_iter().map(|id| Some(Arc::from(id))).collect();
        let ids = (0u64..)
            .zip(&names)
            .filter_map(|(n, id)| Some((id.clone()?, n)))
            .collect();
        Owner { index, ids, names }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            self.handle(cmd);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add { id, at } => {
                let slot = match self.ids.get(id.as_str()) {
                    Some(slot) => *slot,
                    None => {
                        let slot = self.names.len() as u64;
                        let id: Arc<str> = Arc::from(id);
                        self.ids.insert(id.clone(), slot);
                        self.names.push(Some(id));
                        slot
                    }
                };
                let _ = self.index.upsert(point(home_id(slot), at), Timestamp(0));
            }
            Command::Locate { id, at } => {
                let Some(slot) = self.ids.get(id.as_str()).copied() else {
                    return;
                };
                match at {
                    Some(at) => {
                        let _ = self.index.upsert(point(device_id(slot), at), Timestamp(0));
                    }
                    None => {
                        self.index.remove(device_id(slot));
                    }
                }
            }
            Command::Remove { ids } => {
                for id in ids {
                    if let Some(slot) = self.ids.remove(id.as_str()) {
                        if let Some(name) = usize::try_from(slot)
                            .ok()
                            .and_then(|i| self.names.get_mut(i))
                        {
                            *name = None;
                        }
                        self.index.remove(home_id(slot));
                        self.index.remove(device_id(slot));
                    }
                }
            }
            Command::Within { areas, reply } => {
                let _ = reply.send(self.within(&areas));
            }
            Command::Len { reply } => {
                let _ = reply.send(self.ids.len());
            }
        }
    }

    /// Each subscription with a point inside any area, once: a bitset over the slots drops
    /// the second point of a subscription and the repeats across areas without sorting.
    fn within(&self, areas: &[Area]) -> Vec<Arc<str>> {
        let filter = Filter::default();
        let mut seen = vec![0u64; self.names.len().div_ceil(64)];
        let mut out = Vec::new();
        for area in areas {
            for ObjectId(n) in self
                .index
                .ids_within(area, &filter, &Budget::unlimited())
                .ids
            {
                let Ok(slot) = usize::try_from(n / 2) else {
                    continue;
                };
                let (word, bit) = (slot / 64, 1u64 << (slot % 64));
                let Some(w) = seen.get_mut(word) else {
                    continue;
                };
                if *w & bit != 0 {
                    continue;
                }
                *w |= bit;
                if let Some(Some(name)) = self.names.get(slot) {
                    out.push(name.clone());
                }
            }
        }
        out
    }
}

/// The event handler that applies other nodes' subscription writes to this node's
/// targeting index: `alert.subscription.created` and `alert.subscription.located` read the
/// row back (both locations; an ended or missing one is removed),
/// `alert.subscription.ended` removes it. Idempotent.
#[derive(Debug, Clone)]
pub struct AlertTargetsSync {
    store: Store,
    targets: AlertTargets,
}

impl AlertTargetsSync {
    /// A handler reading from `store` into `targets`.
    pub fn new(store: Store, targets: AlertTargets) -> Self {
        AlertTargetsSync { store, targets }
    }
}

#[async_trait::async_trait]
impl Handler for AlertTargetsSync {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let id = event.key();
        let result = match event.kind() {
            Some(EventType::AlertSubscriptionCreated | EventType::AlertSubscriptionLocated) => {
                match self.store.subscription(id).await {
                    Ok(Some((rec, true))) => match Position::new(rec.lat, rec.lon) {
                        Ok(at) => {
                            let device = rec.device.and_then(|d| Position::new(d.lat, d.lon).ok());
                            let placed = self.targets.add(id, at).await;
                            match placed {
                                Ok(()) => self.targets.locate(id, device).await,
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => {
                            return Err(HandlerError::Permanent(format!(
                                "subscription {id} has an invalid position: {e}"
                            )));
                        }
                    },
                    Ok(_) => self.targets.remove(vec![id.to_string()]).await,
                    Err(e) => return Err(HandlerError::Transient(e.to_string())),
                }
            }
            Some(EventType::AlertSubscriptionEnded) => {
                self.targets.remove(vec![id.to_string()]).await
            }
            _ => return Ok(()),
        };
        result.map_err(|e| HandlerError::Transient(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lon: f64) -> Position {
        Position::new(lat, lon).unwrap_or_else(|e| panic!("{e}"))
    }

    fn square(lon0: f64, lat0: f64, side: f64) -> Area {
        Area::polygon(&[
            (lon0, lat0),
            (lon0 + side, lat0),
            (lon0 + side, lat0 + side),
            (lon0, lat0 + side),
            (lon0, lat0),
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn sorted(targets: &AlertTargets, areas: Vec<Area>) -> Vec<String> {
        let ids = targets
            .within(areas)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn subscribers_inside_the_areas_are_selected_once_and_follow_adds_and_removes() {
        let targets = AlertTargets::start(vec![
            ("in-a".into(), at(0.5, 0.5)),
            ("in-both".into(), at(1.5, 1.5)),
            ("outside".into(), at(5.0, 5.0)),
        ]);
        let a = square(0.0, 0.0, 2.0);
        let b = square(1.0, 1.0, 2.0);
        assert_eq!(
            sorted(&targets, vec![a.clone(), b.clone()]).await,
            ["in-a", "in-both"]
        );
        assert_eq!(sorted(&targets, vec![b.clone()]).await, ["in-both"]);

        targets
            .add("new", at(2.5, 2.5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        targets
            .add("outside", at(1.2, 1.2))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sorted(&targets, vec![b.clone()]).await,
            ["in-both", "new", "outside"]
        );

        targets
            .remove(vec!["in-both".into(), "never-there".into()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sorted(&targets, vec![a, b]).await,
            ["in-a", "new", "outside"]
        );
        assert_eq!(targets.count().await.unwrap_or_else(|e| panic!("{e}")), 3);
        assert!(
            targets
                .within(Vec::new())
                .await
                .unwrap_or_default()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_device_location_targets_its_subscription_once_until_it_moves_away() {
        let targets = AlertTargets::start(vec![
            ("home-inside".into(), at(0.5, 0.5)),
            ("far-away".into(), at(40.0, 40.0)),
        ]);
        let a = square(0.0, 0.0, 2.0);
        let ok = |r: Result<(), TargetsError>| r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sorted(&targets, vec![a.clone()]).await, ["home-inside"]);
        // The far-away subscriber's phone is in the area now; the other's is too (once).
        ok(targets.locate("far-away", Some(at(1.0, 1.0))).await);
        ok(targets.locate("home-inside", Some(at(1.5, 1.5))).await);
        ok(targets.locate("never-there", Some(at(1.0, 1.0))).await);
        assert_eq!(
            sorted(&targets, vec![a.clone(), square(0.9, 0.9, 0.2)]).await,
            ["far-away", "home-inside"]
        );
        // Its phone moves out: only its registered location counts again.
        ok(targets.locate("far-away", Some(at(10.0, 10.0))).await);
        assert_eq!(sorted(&targets, vec![a.clone()]).await, ["home-inside"]);
        ok(targets.locate("far-away", Some(at(1.0, 1.0))).await);
        ok(targets.locate("far-away", None).await);
        assert_eq!(sorted(&targets, vec![a.clone()]).await, ["home-inside"]);
        // Removing a subscription removes both of its points.
        ok(targets.locate("far-away", Some(at(1.0, 1.0))).await);
        ok(targets.remove(vec!["far-away".into()]).await);
        assert_eq!(sorted(&targets, vec![a]).await, ["home-inside"]);
        assert_eq!(targets.count().await.unwrap_or_else(|e| panic!("{e}")), 1);
    }
}
