//! Property tests: on random data and random queries, the index answers exactly what a
//! brute-force scan answers — including near the antimeridian and the poles — and geofence
//! events equal a brute-force replay of the same moves.

use std::collections::BTreeMap;

use nexus_geo::*;
use proptest::prelude::*;

const T0: Timestamp = Timestamp(0);

/// Latitude/longitude pairs, biased towards the awkward places.
fn coord() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        // Anywhere.
        (-90.0..=90.0f64, -180.0..=180.0f64),
        // Either side of the antimeridian.
        (
            -60.0..60.0f64,
            prop_oneof![178.0..=180.0f64, -180.0..-178.0f64]
        ),
        // On the seam itself, stored as either +180 or -180.
        (-60.0..60.0f64, prop_oneof![Just(180.0f64), Just(-180.0f64)]),
        // Near the poles.
        (
            prop_oneof![85.0..=90.0f64, -90.0..-85.0f64],
            -180.0..=180.0f64
        ),
        // A dense city.
        (-1.5..-1.0f64, 36.5..37.0f64),
    ]
}

fn position() -> impl Strategy<Value = Position> {
    coord().prop_map(|(lat, lon)| Position::new(lat, lon).expect("strategy stays in range"))
}

fn objects() -> impl Strategy<Value = Vec<(Position, u8)>> {
    prop::collection::vec((position(), 0u8..=5), 0..250)
}

fn build(points: &[(Position, u8)]) -> GeoIndex {
    let objects = points
        .iter()
        .enumerate()
        .map(|(i, &(p, sev))| object(i as u64, p, sev));
    GeoIndex::from_objects(objects).expect("unique ids")
}

/// Severity 0 means a responder (no severity), 1..=5 an incident.
fn object(id: u64, p: Position, sev: u8) -> Object {
    let attrs = match sev {
        0 => Attributes::Responder(Responder {
            role: "volunteer".into(),
            updated_at: T0,
        }),
        s => Attributes::Incident(Incident {
            incident_type: incident_type(id).into(),
            severity: Severity::new(s).expect("1..=5"),
            status: Status::Reported,
            reported_at: T0,
        }),
    };
    Object::point(ObjectId(id), p, attrs)
}

fn incident_type(id: u64) -> &'static str {
    if id.is_multiple_of(2) {
        "flood"
    } else {
        "fire"
    }
}

/// Brute-force filter: severity 0 is a responder (type "volunteer", no severity).
fn passes(id: u64, sev: u8, min_sev: u8, ty: Option<&str>) -> bool {
    let own_type = if sev == 0 {
        "volunteer"
    } else {
        incident_type(id)
    };
    (min_sev == 0 || sev >= min_sev) && ty.is_none_or(|t| t == own_type)
}

fn filter_of(min_sev: u8, ty: Option<&str>) -> Filter {
    let mut filter = Filter::default();
    if min_sev > 0 {
        filter = filter.min_severity(Severity::new(min_sev).expect("1..=5"));
    }
    if let Some(t) = ty {
        filter = filter.type_name(t);
    }
    filter
}

fn type_filter() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop_oneof![Just("flood"), Just("fire"), Just("volunteer")])
}

fn sorted(mut ids: Vec<ObjectId>) -> Vec<ObjectId> {
    ids.sort();
    ids
}

/// Brute-force box test, written independently of the engine's.
fn in_box(p: Position, (w, s, e, n): (f64, f64, f64, f64)) -> bool {
    if p.lat() < s || p.lat() > n {
        return false;
    }
    let lons: &[f64] = if p.lon().abs() == 180.0 {
        &[180.0, -180.0]
    } else {
        &[p.lon()]
    };
    lons.iter().any(|&lon| {
        if w <= e {
            lon >= w && lon <= e
        } else {
            lon >= w || lon <= e
        }
    })
}

fn bbox() -> impl Strategy<Value = (f64, f64, f64, f64)> {
    (coord(), coord())
        .prop_map(|((lat1, lon1), (lat2, lon2))| (lon1, lat1.min(lat2), lon2, lat1.max(lat2)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn bbox_equals_brute_force(points in objects(), b in bbox()) {
        let index = build(&points);
        let query = BBox::new(b.0, b.1, b.2, b.3).expect("valid box");
        let got = index.query(&Query::bbox(query), &Budget::unlimited()).expect("query");
        prop_assert_eq!(got.completion, Completion::Complete);
        let expected: Vec<ObjectId> = points
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| in_box(*p, b))
            .map(|(i, _)| ObjectId(i as u64))
            .collect();
        prop_assert_eq!(sorted(got.ids()), expected);
    }

    #[test]
    fn radius_equals_brute_force(
        points in objects(),
        center in position(),
        radius_m in prop_oneof![0.0..50_000.0f64, 0.0..3_000_000.0f64, 0.0..25_000_000.0f64],
        min_sev in 0u8..=5,
        ty in type_filter(),
        limit in prop::option::of(0usize..20),
    ) {
        let index = build(&points);
        let mut q = Query::radius(center, radius_m).filter(filter_of(min_sev, ty));
        if let Some(l) = limit {
            q = q.limit(l);
        }
        let got = index.query(&q, &Budget::unlimited()).expect("query");
        let mut expected: Vec<(f64, ObjectId)> = points
            .iter()
            .enumerate()
            .filter(|(i, (_, sev))| passes(*i as u64, *sev, min_sev, ty))
            .map(|(i, (p, _))| (haversine_m(center.lat(), center.lon(), p.lat(), p.lon()), ObjectId(i as u64)))
            .filter(|(d, _)| *d <= radius_m)
            .collect();
        expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if let Some(l) = limit {
            expected.truncate(l);
        }
        let got_pairs: Vec<(f64, ObjectId)> =
            got.hits.iter().map(|h| (h.distance_m.unwrap_or(f64::NAN), h.object.id)).collect();
        prop_assert_eq!(got_pairs, expected);
    }

    #[test]
    fn unordered_radius_equals_brute_force_even_at_the_edge(
        points in objects(),
        center in position(),
        radius_m in prop_oneof![0.0..50_000.0f64, 0.0..3_000_000.0f64, 0.0..25_000_000.0f64],
        // Put the edge on one of the points, a hair inside or outside, or exactly on it.
        edge in prop::option::of((any::<prop::sample::Index>(), prop_oneof![Just(0.0f64), -1e-6..1e-6f64])),
        min_sev in 0u8..=5,
        ty in type_filter(),
    ) {
        let index = build(&points);
        let radius_m = match edge {
            Some((i, dr)) if !points.is_empty() => {
                let p = points[i.index(points.len())].0;
                (center.distance_m(p) + dr).max(0.0)
            }
            _ => radius_m,
        };
        let q = Query::radius(center, radius_m)
            .filter(filter_of(min_sev, ty))
            .unordered();
        let got = index.query(&q, &Budget::unlimited()).expect("query");
        prop_assert_eq!(got.completion, Completion::Complete);
        prop_assert!(got.hits.iter().all(|h| h.distance_m.is_none() && h.id == h.object.id));
        let expected: Vec<ObjectId> = points
            .iter()
            .enumerate()
            .filter(|(i, (p, sev))| {
                passes(*i as u64, *sev, min_sev, ty)
                    && haversine_m(center.lat(), center.lon(), p.lat(), p.lon()) <= radius_m
            })
            .map(|(i, _)| ObjectId(i as u64))
            .collect();
        prop_assert_eq!(sorted(got.ids()), expected);
    }

    #[test]
    fn knn_equals_brute_force(
        points in objects(),
        center in position(),
        k in 1usize..40,
        min_sev in 0u8..=5,
        ty in type_filter(),
    ) {
        let index = build(&points);
        let got = index.nearest(center, k, &filter_of(min_sev, ty), &Budget::unlimited());
        prop_assert_eq!(got.completion, Completion::Complete);
        let mut brute: Vec<f64> = points
            .iter()
            .enumerate()
            .filter(|(i, (_, sev))| passes(*i as u64, *sev, min_sev, ty))
            .map(|(_, (p, _))| center.distance_m(*p))
            .collect();
        brute.sort_by(f64::total_cmp);
        brute.truncate(k);
        let got: Vec<f64> = got.hits.iter().map(|h| h.distance_m.unwrap_or(f64::NAN)).collect();
        prop_assert_eq!(got.len(), brute.len());
        for (g, b) in got.iter().zip(&brute) {
            prop_assert!((g - b).abs() < 1e-6, "{} vs {}", g, b);
        }
    }

    #[test]
    fn polygon_queries_equal_brute_force(
        points in objects(),
        (lat, lon) in coord(),
        w in 0.01..20.0f64,
        h in 0.01..20.0f64,
        skew in -0.5..0.5f64,
    ) {
        // A quadrilateral that stays on one side of the seam and inside ±90°.
        let lon = lon.clamp(-180.0, 180.0 - w);
        let lat = lat.clamp(-90.0, 90.0 - h);
        let area = Area::polygon(&[
            (lon, lat),
            (lon + w, lat),
            (lon + w, lat + h),
            ((lon + w * skew.abs()).min(lon + w), lat + h),
        ]);
        prop_assume!(area.is_ok());
        let area = area.expect("checked");
        let index = build(&points);
        let got = index.query(&Query::intersects(area.clone()), &Budget::unlimited()).expect("query");
        let expected: Vec<ObjectId> = points
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| area.covers(*p))
            .map(|(i, _)| ObjectId(i as u64))
            .collect();
        prop_assert_eq!(sorted(got.ids()), expected.clone());
        let got = index.query(&Query::within(area), &Budget::unlimited()).expect("query");
        prop_assert_eq!(sorted(got.ids()), expected);
    }

    #[test]
    fn cluster_counts_add_up_after_random_edits(
        points in objects(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::option::of(position())), 0..60),
        zoom in 0u8..=20,
        view in bbox(),
    ) {
        let mut index = build(&points);
        let mut live: BTreeMap<u64, Position> =
            points.iter().enumerate().map(|(i, (p, _))| (i as u64, *p)).collect();
        for (which, to) in edits {
            if points.is_empty() {
                break;
            }
            let id = which.index(points.len()) as u64;
            match (to, live.contains_key(&id)) {
                (Some(p), true) => {
                    index.move_to(ObjectId(id), p, T0).expect("indexed point");
                    live.insert(id, p);
                }
                (Some(p), false) => {
                    index.insert(object(id, p, points[id as usize].1), T0).expect("new id");
                    live.insert(id, p);
                }
                (None, _) => {
                    index.remove(ObjectId(id));
                    live.remove(&id);
                }
            }
        }
        let count = |map: &ClusterResult| -> u64 {
            map.features.features.iter().map(|f| match &f.properties {
                Properties::Cluster(c) => u64::from(c.count),
                Properties::Object(_) => 1,
            }).sum()
        };
        let world = index
            .clusters(&ClusterQuery::new(BBox::world(), zoom), &Budget::unlimited())
            .expect("valid zoom");
        prop_assert_eq!(count(&world), live.len() as u64);
        // A view never shows more than the objects in it… plus those in the partial cells at
        // its edges, and never misses one inside it.
        let b = BBox::new(view.0, view.1, view.2, view.3).expect("valid box");
        let map = index.clusters(&ClusterQuery::new(b, zoom), &Budget::unlimited()).expect("zoom");
        let inside = live.values().filter(|p| in_box(**p, view)).count() as u64;
        prop_assert!(count(&map) >= inside, "{} < {}", count(&map), inside);
    }
}

// ---- Geofence replay --------------------------------------------------------------------

#[derive(Debug, Clone)]
enum FenceSpec {
    Circle(Position, f64),
    Rect(f64, f64, f64, f64),
    Around(f64),
}

/// Positions in a 2° × 2° patch straddling the antimeridian.
fn patch() -> impl Strategy<Value = Position> {
    (-1.0..1.0f64, 179.0..181.0f64).prop_map(|(lat, lon)| {
        let lon = if lon > 180.0 { lon - 360.0 } else { lon };
        Position::new(lat, lon).expect("in range")
    })
}

fn fence_spec() -> impl Strategy<Value = FenceSpec> {
    prop_oneof![
        (patch(), 1_000.0..80_000.0f64).prop_map(|(c, r)| FenceSpec::Circle(c, r)),
        (
            -1.0..0.8f64,
            0.05..0.6f64,
            any::<bool>(),
            0.0..0.8f64,
            0.05..0.2f64
        )
            .prop_map(|(lat, h, east, off, w)| {
                let west = if east {
                    179.0 + off.min(0.79)
                } else {
                    -180.0 + off
                };
                FenceSpec::Rect(
                    west,
                    lat,
                    (west + w).min(if east { 180.0 } else { -179.0 }),
                    lat + h,
                )
            }),
        (1_000.0..60_000.0f64).prop_map(FenceSpec::Around),
    ]
}

fn transitions(detect: TransitionSet, primary: Transition) -> Vec<Transition> {
    use Transition::*;
    let follow = match primary {
        Enter => Some(Inside),
        Exit | Cross => Some(Outside),
        Inside | Outside => None,
    };
    if detect.contains(primary) {
        std::iter::once(primary)
            .chain(follow.filter(|f| detect.contains(*f)))
            .collect()
    } else {
        follow.filter(|f| detect.contains(*f)).into_iter().collect()
    }
}

fn kinds_from(bits: u8) -> KindSet {
    Kind::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, k)| k)
        .collect()
}

fn detect_from(bits: u8) -> TransitionSet {
    use Transition::*;
    [Enter, Exit, Inside, Outside, Cross]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, t)| t)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn fence_events_equal_a_brute_force_replay(
        start in prop::collection::vec((patch(), 0u8..=5), 2..10),
        specs in prop::collection::vec((fence_spec(), 0u8..32, 1u8..32), 1..8),
        moves in prop::collection::vec((any::<prop::sample::Index>(), patch()), 1..30),
    ) {
        let mut index = GeoIndex::new();
        let mut at: BTreeMap<u64, Position> = BTreeMap::new();
        let mut kind_of: BTreeMap<u64, Kind> = BTreeMap::new();
        for (i, (p, sev)) in start.iter().enumerate() {
            let o = object(i as u64, *p, *sev);
            kind_of.insert(i as u64, o.kind());
            index.insert(o, T0).expect("new id");
            at.insert(i as u64, *p);
        }
        // Object 0 anchors every Around fence.
        let mut fences = Vec::new();
        for (i, (spec, detect_bits, watch_bits)) in specs.iter().enumerate() {
            let shape = match *spec {
                FenceSpec::Circle(center, radius_m) => FenceShape::Circle { center, radius_m },
                FenceSpec::Rect(w, s, e, n) => FenceShape::Area(
                    Area::polygon(&[(w, s), (e, s), (e, n), (w, n)]).expect("valid rectangle"),
                ),
                FenceSpec::Around(radius_m) => FenceShape::Around { anchor: ObjectId(0), radius_m },
            };
            let fence = Fence::new(FenceId(i as u64), shape)
                .detect(detect_from(*detect_bits))
                .watch(kinds_from(*watch_bits));
            index.add_fence(fence.clone()).expect("valid fence");
            fences.push(fence);
        }

        for (which, to) in moves {
            let id = which.index(start.len()) as u64;
            let from = at[&id];
            let kind = kind_of[&id];
            let got: Vec<(u64, u64, Transition)> = index
                .move_to(ObjectId(id), to, T0)
                .expect("indexed point")
                .into_iter()
                .map(|e| (e.fence.0, e.object.0, e.transition))
                .collect();

            // Brute force: every fence, in id order, for the mover…
            let mut expected = Vec::new();
            let anchor_at = at[&0];
            for f in &fences {
                let is_anchor = matches!(f.shape, FenceShape::Around { anchor, .. } if anchor.0 == id);
                if !f.watch.contains(kind) || is_anchor {
                    continue;
                }
                let was = f.shape.covers(from, Some(anchor_at));
                let is = f.shape.covers(to, Some(anchor_at));
                let primary = match (was, is) {
                    (true, true) => Transition::Inside,
                    (true, false) => Transition::Exit,
                    (false, true) => Transition::Enter,
                    (false, false) if f.shape.crossed_by(from, to, Some(anchor_at)) => Transition::Cross,
                    (false, false) => Transition::Outside,
                };
                for t in transitions(f.detect, primary) {
                    expected.push((f.id.0, id, t));
                }
            }
            // …then, if the mover anchors fences, every other object against the moved circle.
            if id == 0 {
                for f in &fences {
                    let FenceShape::Around { radius_m, .. } = f.shape else { continue };
                    for (&other, &p) in &at {
                        if other == 0 || !f.watch.contains(kind_of[&other]) {
                            continue;
                        }
                        let was = from.distance_m(p) <= radius_m;
                        let is = to.distance_m(p) <= radius_m;
                        let primary = match (was, is) {
                            (true, true) => Transition::Inside,
                            (true, false) => Transition::Exit,
                            (false, true) => Transition::Enter,
                            (false, false) => continue,
                        };
                        for t in transitions(f.detect, primary) {
                            expected.push((f.id.0, other, t));
                        }
                    }
                }
            }
            at.insert(id, to);
            prop_assert_eq!(got, expected);
        }
    }
}
