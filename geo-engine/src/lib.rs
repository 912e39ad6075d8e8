//! Sans-IO spatial engine for the Nexus crisis map: an index of incidents, responders,
//! resources, shelters and hazard areas; bounding-box, radius, k-nearest and area queries;
//! geofences with Tile38's five transitions; and map clustering for a million points.
//!
//! # Model
//!
//! * An [`Object`] is an [`ObjectId`], a [`Geometry`] (a [`Position`] or an [`Area`]) and
//!   kind-specific [`Attributes`] (an incident's type, [`Severity`], [`Status`] and time; a
//!   resource's inventory; …). Values are validated when built: a `Position` is always a
//!   finite latitude within ±90° and longitude within ±180°, an `Area` is always a valid
//!   polygon set, a `Severity` is 1 to 5. Bad input is a typed [`GeoError`], never a panic.
//! * A [`GeoIndex`] owns the objects. It keeps three structures in step: a slab of objects
//!   (with an id → slot map), an R-tree ([`rstar`]) over each object's bounds whose entries
//!   carry the slot and the filterable attributes, and a count pyramid for clustering.
//!   Insert, update, move and remove touch only the one object's entries; nothing is rebuilt.
//! * Geometry is WGS 84 degrees. Distances are great-circle (haversine) metres on a sphere
//!   of radius [`EARTH_RADIUS_M`]. Area edges are straight lines in longitude/latitude, as in
//!   GeoJSON and PostGIS `geometry`; an area crossing the antimeridian is given as two
//!   polygons. Longitudes ±180° are the same meridian.
//!
//! # Queries
//!
//! [`GeoIndex::query`] answers a [`Query`]: a [`Shape`] ([`BBox`], which may cross the
//! antimeridian when `min_lon > max_lon`; a radius, exact at the edge, with a conservative
//! prefilter that handles the poles and ±180°; or within / intersecting an area), an
//! attribute [`Filter`] and a limit. [`GeoIndex::nearest`] returns the k nearest objects in
//! true great-circle order (a best-first walk of the R-tree with spherical lower bounds,
//! not rstar's planar nearest neighbour).
//!
//! Every query runs under a [`Budget`]: a step limit, a deadline checked against a
//! caller-supplied clock every [`CHECK_INTERVAL`] steps (as Tile38 does), or both. A query
//! that runs out returns what it found with [`Completion::Interrupted`];
//! [`QueryResult::into_complete`] turns that into [`GeoError::Interrupted`].
//!
//! # Geofences
//!
//! A [`Fence`] is an area, a circle, or a circle around a moving object. Every mutation
//! returns the [`FenceEvent`]s it caused ([`Transition::Enter`], `Exit`, `Inside`,
//! `Outside`, `Cross`), computed from the object's old and new position; see [`fence`] for
//! the exact rules. The engine publishes nothing itself: the caller does.
//!
//! # Clustering
//!
//! [`GeoIndex::clusters`] answers a [`ClusterQuery`] (view, zoom 0 to [`MAX_ZOOM`]) with a
//! GeoJSON [`FeatureCollection`] of clusters (centroid, count, severity breakdown,
//! expansion zoom) and single objects, in time proportional to the cells in view, not to the
//! points; see [`cluster`].
//!
//! # Sans-IO
//!
//! No clock, no threads, no sockets: time comes in as a [`Timestamp`] argument, deadlines as
//! a clock callback, and results go out as return values. The crate depends on no async
//! runtime and is driven by one owner.
//!
//! # Example
//!
//! ```
//! use nexus_geo::*;
//!
//! let now = Timestamp(1_700_000_000_000);
//! let mut index = GeoIndex::new();
//!
//! // A flood zone, watched for responders crossing or entering it.
//! let flood = Area::polygon(&[(36.80, -1.30), (36.82, -1.30), (36.82, -1.28), (36.80, -1.28)])?;
//! index.add_fence(
//!     Fence::new(FenceId(1), FenceShape::Area(flood))
//!         .watch(KindSet::only(Kind::Responder)),
//! )?;
//!
//! // A responder west of the zone drives straight through it to the east side.
//! let medic = Attributes::Responder(Responder { role: "paramedic".into(), updated_at: now });
//! index.insert(Object::point(ObjectId(7), Position::new(-1.29, 36.79)?, medic), now)?;
//! let events = index.move_to(ObjectId(7), Position::new(-1.29, 36.83)?, now)?;
//! assert_eq!(events[0].transition, Transition::Cross);
//!
//! // An incident 1 km north of the responder: found by radius and by k-nearest.
//! let flood_report = Attributes::Incident(Incident {
//!     incident_type: "flood".into(),
//!     severity: Severity::new(4)?,
//!     status: Status::Reported,
//!     reported_at: now,
//! });
//! let north = Position::new(-1.29 + 1_000.0 / 111_195.0, 36.83)?;
//! index.insert(Object::point(ObjectId(8), north, flood_report), now)?;
//!
//! let here = Position::new(-1.29, 36.83)?;
//! let incidents = Filter::default().kinds(KindSet::only(Kind::Incident));
//! let found = index
//!     .query(&Query::radius(here, 1_500.0).filter(incidents.clone()), &Budget::steps(10_000))?
//!     .into_complete()?;
//! assert_eq!(found[0].object.id, ObjectId(8));
//! assert!((found[0].distance_m.unwrap_or_default() - 1_000.0).abs() < 1.0);
//! let nearest = index.nearest(here, 1, &incidents, &Budget::steps(10_000));
//! assert_eq!(nearest.ids(), vec![ObjectId(8)]);
//!
//! // The map at zoom 3 over East Africa, ready for serde_json.
//! let view = ClusterQuery::new(BBox::new(20.0, -15.0, 50.0, 15.0)?, 3);
//! let map = index.clusters(&view, &Budget::steps(100_000))?;
//! assert_eq!(map.features.features.len(), 1); // both objects share one 64-px cell
//! let json = serde_json::to_value(&map.features).unwrap_or_default();
//! assert_eq!(json["features"][0]["properties"]["count"], 2);
//! # Ok::<(), GeoError>(())
//! ```
//!
//! # Layout
//!
//! * `coord` — [`Position`], [`BBox`], [`Timestamp`], haversine distance.
//! * `object` — ids, kinds, attributes, [`Area`], [`Object`].
//! * `filter` — attribute [`Filter`].
//! * `budget` — [`Budget`], [`Completion`].
//! * `query` — [`Query`], [`Shape`], [`QueryResult`]; `knn` — k-nearest search;
//!   `target` — [`GeoIndex::ids_within`], everyone inside an area (alert targeting).
//! * [`fence`] — geofences and transitions.
//! * [`cluster`] — the count pyramid behind the map.
//! * `geojson` — GeoJSON output types.
//! * `slab` — objects stored by slot, reached from R-tree entries without hashing.
//! * `index` — [`GeoIndex`], which ties them together.
//! * `error` — [`GeoError`].

mod budget;
pub mod cluster;
mod coord;
mod distance;
mod error;
pub mod fence;
mod filter;
mod geojson;
mod index;
mod knn;
mod object;
mod query;
mod slab;
mod target;

pub use budget::{Budget, CHECK_INTERVAL, Completion, Interrupt};
pub use cluster::{Cluster, ClusterFilter, ClusterQuery, LEAF_CAPACITY, MAX_ZOOM};
pub use coord::{BBox, EARTH_RADIUS_M, Position, Timestamp, haversine_m};
pub use error::GeoError;
pub use fence::{Fence, FenceEvent, FenceId, FenceShape, Transition, TransitionSet, Trigger};
pub use filter::Filter;
pub use geojson::{
    ClusterProperties, ClusterResult, Feature, FeatureCollection, FeatureId, GeoJsonGeometry,
    KindCounts, ObjectProperties, Properties,
};
pub use index::GeoIndex;
pub use object::{
    Area, Attributes, Geometry, Hazard, Incident, Kind, KindSet, Object, ObjectId, Resource,
    Responder, Severity, Shelter, Status, StatusSet,
};
pub use query::{Hit, Order, Query, QueryResult, Shape};
pub use target::IdsWithin;
