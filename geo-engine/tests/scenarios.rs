//! Crisis-map scenarios, driven through the public API the server uses.

use std::cell::Cell;
use std::collections::BTreeMap;

use nexus_geo::*;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn pos(lat: f64, lon: f64) -> Position {
    Position::new(lat, lon).expect("valid test coordinate")
}

fn responder(id: u64, at: Position) -> Object {
    Object::point(
        ObjectId(id),
        at,
        Attributes::Responder(Responder {
            role: "paramedic".into(),
            updated_at: T0,
        }),
    )
}

fn incident(id: u64, at: Position, kind: &str, severity: u8, status: Status, t: i64) -> Object {
    Object::point(
        ObjectId(id),
        at,
        Attributes::Incident(Incident {
            incident_type: kind.into(),
            severity: Severity::new(severity).expect("1..=5"),
            status,
            reported_at: Timestamp(t),
        }),
    )
}

fn flood_zone() -> Area {
    // A 0.02° square east of Nairobi's centre.
    Area::polygon(&[
        (36.80, -1.30),
        (36.82, -1.30),
        (36.82, -1.28),
        (36.80, -1.28),
    ])
    .expect("valid square")
}

fn sorted(mut ids: Vec<ObjectId>) -> Vec<ObjectId> {
    ids.sort();
    ids
}

#[test]
fn responder_crosses_the_flood_zone_then_enters_and_exits_it() {
    let mut index = GeoIndex::new();
    index
        .add_fence(
            Fence::new(FenceId(1), FenceShape::Area(flood_zone()))
                .watch(KindSet::only(Kind::Responder))
                .detect(TransitionSet::ALL),
        )
        .unwrap();
    let events = index.insert(responder(7, pos(-1.29, 36.79)), T0).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].transition, Transition::Outside);

    // West of the zone to east of it in one GPS fix: never seen inside, but it crossed.
    let events = index.move_to(ObjectId(7), pos(-1.29, 36.83), T0).unwrap();
    let seen: Vec<_> = events.iter().map(|e| e.transition).collect();
    assert_eq!(seen, vec![Transition::Cross, Transition::Outside]);
    assert_eq!(events[0].fence, FenceId(1));
    assert_eq!(events[0].previous, Some(pos(-1.29, 36.79)));
    assert_eq!(events[0].trigger, Trigger::ObjectMoved);

    // Into the zone, around in it, out again.
    let t = |e: Vec<FenceEvent>| e.into_iter().map(|e| e.transition).collect::<Vec<_>>();
    let moved = |index: &mut GeoIndex, lat, lon| index.move_to(ObjectId(7), pos(lat, lon), T0);
    assert_eq!(
        t(moved(&mut index, -1.29, 36.81).unwrap()),
        vec![Transition::Enter, Transition::Inside]
    );
    assert_eq!(
        t(moved(&mut index, -1.285, 36.815).unwrap()),
        vec![Transition::Inside]
    );
    assert_eq!(
        t(moved(&mut index, -1.27, 36.815).unwrap()),
        vec![Transition::Exit, Transition::Outside]
    );

    // Incidents are not watched by this fence.
    let events = index
        .insert(
            incident(8, pos(-1.29, 36.81), "flood", 4, Status::Reported, 0),
            T0,
        )
        .unwrap();
    assert!(events.is_empty());
}

#[test]
fn a_fence_reporting_only_changes_is_quiet_while_the_responder_stays_put() {
    let mut index = GeoIndex::new();
    index
        .add_fence(Fence::new(FenceId(1), FenceShape::Area(flood_zone())))
        .unwrap();
    index.insert(responder(1, pos(-1.29, 36.81)), T0).unwrap();
    let events = index.move_to(ObjectId(1), pos(-1.291, 36.811), T0).unwrap();
    assert!(events.is_empty(), "Inside is not in TransitionSet::CHANGES");
    let events = index.move_to(ObjectId(1), pos(-1.35, 36.81), T0).unwrap();
    assert_eq!(events[0].transition, Transition::Exit);
}

#[test]
fn ambulance_coverage_circle_follows_the_ambulance() {
    let mut index = GeoIndex::new();
    let ambulance = Object::point(
        ObjectId(1),
        pos(0.0, 0.0),
        Attributes::Resource(Resource {
            resource_type: "ambulance".into(),
            inventory: BTreeMap::from([("stretcher".to_string(), 2)]),
            updated_at: T0,
        }),
    );
    index.insert(ambulance, T0).unwrap();
    index
        .insert(
            incident(2, pos(0.0, 0.1), "injury", 5, Status::Verified, 0),
            T0,
        )
        .unwrap();
    index
        .add_fence(
            Fence::new(
                FenceId(9),
                FenceShape::Around {
                    anchor: ObjectId(1),
                    radius_m: 5_000.0,
                },
            )
            .watch(KindSet::only(Kind::Incident)),
        )
        .unwrap();
    // 11 km away: drive 7 km towards it → the incident enters the coverage circle.
    let events = index.move_to(ObjectId(1), pos(0.0, 0.063), T0).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object, ObjectId(2));
    assert_eq!(events[0].transition, Transition::Enter);
    assert_eq!(
        events[0].trigger,
        Trigger::FenceMoved {
            anchor: ObjectId(1)
        }
    );
    // Ambulance removed: fence goes dormant, no events; moves of others report nothing.
    assert!(index.remove(ObjectId(1)).is_some());
    assert!(
        index
            .move_to(ObjectId(2), pos(0.0, 0.2), T0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn radius_edge_is_exact_against_a_hand_computed_haversine() {
    // One degree of latitude on the 6 371 008.8 m sphere: R·π/180 = 111 195.080 233 532 9 m.
    const ONE_DEGREE_M: f64 = 111_195.080_233_532_92;
    // Big Ben (51.5007, -0.1246) → Eiffel Tower (48.8584, 2.2945), haversine worked out
    // step by step: a = sin²(Δφ/2) + cos φ1 cos φ2 sin²(Δλ/2) = 7.1428e-4, d = 2R·asin(√a).
    const BIG_BEN_EIFFEL_M: f64 = 340_539.390_444_269_6;

    let mut index = GeoIndex::new();
    index
        .insert(
            incident(1, pos(1.0, 0.0), "fire", 3, Status::Reported, 0),
            T0,
        )
        .unwrap();
    index
        .insert(
            incident(2, pos(48.8584, 2.2945), "fire", 3, Status::Reported, 0),
            T0,
        )
        .unwrap();

    let origin = pos(0.0, 0.0);
    let d = origin.distance_m(pos(1.0, 0.0));
    assert!((d - ONE_DEGREE_M).abs() < 1e-6, "{d}");
    let big_ben = pos(51.5007, -0.1246);
    assert!((big_ben.distance_m(pos(48.8584, 2.2945)) - BIG_BEN_EIFFEL_M).abs() < 1e-4);

    let within = |center: Position, r: f64| {
        index
            .query(&Query::radius(center, r), &Budget::unlimited())
            .unwrap()
            .ids()
    };
    // Exactly on the edge is inside; a micrometre less is outside.
    assert_eq!(within(origin, d), vec![ObjectId(1)]);
    assert_eq!(within(origin, d - 1e-6), vec![]);
    let d2 = big_ben.distance_m(pos(48.8584, 2.2945));
    assert_eq!(within(big_ben, d2), vec![ObjectId(2)]);
    assert_eq!(within(big_ben, d2 - 1e-6), vec![]);
    // Distances are reported.
    let hit = index
        .query(&Query::radius(origin, 200_000.0), &Budget::unlimited())
        .unwrap();
    assert_eq!(hit.hits[0].distance_m, Some(d));
}

#[test]
fn antimeridian_bbox_radius_and_nearest() {
    let mut index = GeoIndex::new();
    let fiji_east = pos(-17.0, 179.9);
    let fiji_west = pos(-17.0, -179.9);
    index.insert(responder(1, fiji_east), T0).unwrap();
    index.insert(responder(2, fiji_west), T0).unwrap();
    index.insert(responder(3, pos(-17.0, 0.0)), T0).unwrap();
    index.insert(responder(4, pos(-17.0, 180.0)), T0).unwrap();
    index.insert(responder(5, pos(-17.0, -180.0)), T0).unwrap();

    // minLon > maxLon: the box spans the antimeridian (RFC 7946 §5.2).
    let b = BBox::new(179.0, -18.0, -179.0, -16.0).unwrap();
    let found = index.query(&Query::bbox(b), &Budget::unlimited()).unwrap();
    assert_eq!(
        sorted(found.ids()),
        vec![ObjectId(1), ObjectId(2), ObjectId(4), ObjectId(5)]
    );
    // A box ending at 180 also holds objects stored at -180.
    let east_only = BBox::new(179.0, -18.0, 180.0, -16.0).unwrap();
    let found = index
        .query(&Query::bbox(east_only), &Budget::unlimited())
        .unwrap();
    assert_eq!(
        sorted(found.ids()),
        vec![ObjectId(1), ObjectId(4), ObjectId(5)]
    );

    // 25 km around a point just east of the seam reaches across it.
    let found = index
        .query(&Query::radius(fiji_west, 25_000.0), &Budget::unlimited())
        .unwrap();
    assert_eq!(found.ids()[0], ObjectId(2));
    assert_eq!(found.hits.len(), 4, "{:?}", found.ids());

    let nearest = index.nearest(fiji_east, 3, &Filter::default(), &Budget::unlimited());
    assert_eq!(nearest.ids()[0], ObjectId(1));
    assert!(!nearest.ids().contains(&ObjectId(3)));
}

#[test]
fn poles_are_reachable_from_every_longitude() {
    let mut index = GeoIndex::new();
    // Four stations 0.5° from the North Pole, 90° of longitude apart, and one at the pole.
    for (i, lon) in [0.0, 90.0, 180.0, -90.0].into_iter().enumerate() {
        index
            .insert(responder(i as u64 + 1, pos(89.5, lon)), T0)
            .unwrap();
    }
    index.insert(responder(9, pos(90.0, 45.0)), T0).unwrap();
    // From the station at lon 0, the one at lon 180 is 1° away over the pole (111 km),
    // a planar box around lon 0 would never contain it.
    let here = pos(89.5, 0.0);
    let found = index
        .query(&Query::radius(here, 112_000.0), &Budget::unlimited())
        .unwrap();
    assert_eq!(found.hits.len(), 5, "{:?}", found.ids());
    let nearest = index.nearest(here, 5, &Filter::default(), &Budget::unlimited());
    let ids = nearest.ids();
    assert_eq!(ids[0], ObjectId(1));
    assert_eq!(
        ids[1],
        ObjectId(9),
        "the pole (55 km) before the side stations (78 km)"
    );
    assert_eq!(ids[4], ObjectId(3), "the far side (111 km) last");
    // A bbox touching the pole.
    let cap = BBox::new(-180.0, 89.9, 180.0, 90.0).unwrap();
    let found = index
        .query(&Query::bbox(cap), &Budget::unlimited())
        .unwrap();
    assert_eq!(found.ids(), vec![ObjectId(9)]);
}

#[test]
fn knn_order_matches_brute_force_at_high_latitude() {
    let mut index = GeoIndex::new();
    let mut all = Vec::new();
    let mut seed = 42u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    for id in 0..3_000u64 {
        let p = pos(60.0 + next() * 25.0, -180.0 + next() * 360.0);
        index.insert(responder(id, p), T0).unwrap();
        all.push((id, p));
    }
    let center = pos(78.0, 179.0);
    let mut brute: Vec<f64> = all.iter().map(|(_, p)| center.distance_m(*p)).collect();
    brute.sort_by(f64::total_cmp);
    let got = index.nearest(center, 25, &Filter::default(), &Budget::unlimited());
    let got: Vec<f64> = got.hits.iter().filter_map(|h| h.distance_m).collect();
    assert_eq!(got.len(), 25);
    for (g, b) in got.iter().zip(&brute) {
        assert!((g - b).abs() < 1e-6, "{g} vs {b}");
    }
}

#[test]
fn filters_apply_to_every_query_kind() {
    let mut index = GeoIndex::new();
    let here = pos(10.0, 10.0);
    index
        .insert(incident(1, here, "flood", 2, Status::Reported, 100), T0)
        .unwrap();
    index
        .insert(incident(2, here, "flood", 4, Status::Verified, 200), T0)
        .unwrap();
    index
        .insert(incident(3, here, "fire", 5, Status::Resolved, 300), T0)
        .unwrap();
    index.insert(responder(4, here), T0).unwrap();
    let f = Filter::default()
        .type_name("flood")
        .min_severity(Severity::new(3).unwrap())
        .statuses(StatusSet::OPEN)
        .since(Timestamp(150))
        .until(Timestamp(250));
    let b = BBox::new(9.0, 9.0, 11.0, 11.0).unwrap();
    let by_box = index
        .query(&Query::bbox(b).filter(f.clone()), &Budget::unlimited())
        .unwrap();
    assert_eq!(by_box.ids(), vec![ObjectId(2)]);
    let by_radius = index
        .query(
            &Query::radius(here, 10.0).filter(f.clone()),
            &Budget::unlimited(),
        )
        .unwrap();
    assert_eq!(by_radius.ids(), vec![ObjectId(2)]);
    assert_eq!(
        index.nearest(here, 3, &f, &Budget::unlimited()).ids(),
        vec![ObjectId(2)]
    );
    let zone = Area::polygon(&[(9.0, 9.0), (11.0, 9.0), (11.0, 11.0), (9.0, 11.0)]).unwrap();
    let by_area = index
        .query(&Query::intersects(zone).filter(f), &Budget::unlimited())
        .unwrap();
    assert_eq!(by_area.ids(), vec![ObjectId(2)]);
    // Limit: three of four, and the result says it was truncated.
    let limited = index
        .query(&Query::bbox(b).limit(3), &Budget::unlimited())
        .unwrap();
    assert_eq!(limited.hits.len(), 3);
    assert_eq!(limited.completion, Completion::Truncated);
}

#[test]
fn shelters_inside_the_district_and_hazards_touching_it() {
    let mut index = GeoIndex::new();
    let district = Area::polygon(&[(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0)]).unwrap();
    let school = Area::polygon(&[(1.0, 1.0), (1.1, 1.0), (1.1, 1.1), (1.0, 1.1)]).unwrap();
    let river_flood = Area::polygon(&[(3.5, 3.5), (5.0, 3.5), (5.0, 5.0), (3.5, 5.0)]).unwrap();
    index
        .insert(
            Object::area(
                ObjectId(1),
                school,
                Attributes::Shelter(Shelter {
                    shelter_type: "school".into(),
                    capacity: Some(400),
                    updated_at: T0,
                }),
            ),
            T0,
        )
        .unwrap();
    index
        .insert(
            Object::area(
                ObjectId(2),
                river_flood,
                Attributes::Hazard(Hazard {
                    hazard_type: "flood".into(),
                    severity: Severity::new(5).unwrap(),
                    updated_at: T0,
                }),
            ),
            T0,
        )
        .unwrap();
    let within = index
        .query(&Query::within(district.clone()), &Budget::unlimited())
        .unwrap();
    assert_eq!(within.ids(), vec![ObjectId(1)]);
    let touching = index
        .query(&Query::intersects(district), &Budget::unlimited())
        .unwrap();
    assert_eq!(sorted(touching.ids()), vec![ObjectId(1), ObjectId(2)]);
    // Which hazard covers this responder? A zero radius around the point.
    let hazards = Filter::default().kinds(KindSet::only(Kind::Hazard));
    let covering = index
        .query(
            &Query::radius(pos(4.5, 4.5), 0.0).filter(hazards),
            &Budget::unlimited(),
        )
        .unwrap();
    assert_eq!(covering.ids(), vec![ObjectId(2)]);
}

#[test]
fn deadline_cuts_a_long_query_and_says_so() {
    let mut index = GeoIndex::new();
    for i in 0..5_000u32 {
        let p = pos(f64::from(i % 100) * 0.001, f64::from(i / 100) * 0.001);
        index.insert(responder(u64::from(i), p), T0).unwrap();
    }
    // A fake clock that advances 1 ms per reading: the deadline passes at the third check.
    let clock_ms = Cell::new(0i64);
    let clock = || {
        clock_ms.set(clock_ms.get() + 1);
        Timestamp(clock_ms.get())
    };
    let budget = Budget::unlimited().with_deadline(Timestamp(3), &clock);
    let b = BBox::new(-1.0, -1.0, 1.0, 1.0).unwrap();
    let result = index.query(&Query::bbox(b), &budget).unwrap();
    assert_eq!(
        result.completion,
        Completion::Interrupted(Interrupt::Deadline)
    );
    assert!(result.is_partial());
    assert_eq!(result.steps, 3 * CHECK_INTERVAL);
    assert!(matches!(
        result.into_complete(),
        Err(GeoError::Interrupted {
            interrupt: Interrupt::Deadline,
            ..
        })
    ));
    let capped = index.query(&Query::bbox(b), &Budget::steps(100)).unwrap();
    assert_eq!(capped.completion, Completion::Interrupted(Interrupt::Steps));
    assert_eq!(capped.hits.len(), 100);
    let all = index
        .query(&Query::bbox(b), &Budget::steps(1_000_000))
        .unwrap();
    assert_eq!(all.hits.len(), 5_000);
    assert_eq!(all.completion, Completion::Complete);
}

#[test]
fn invalid_coordinates_are_rejected_with_typed_errors() {
    for (lat, lon) in [
        (91.0, 0.0),
        (0.0, -180.5),
        (f64::NAN, 0.0),
        (0.0, f64::NEG_INFINITY),
    ] {
        assert!(matches!(
            Position::new(lat, lon),
            Err(GeoError::InvalidCoordinate { .. })
        ));
    }
    assert!(matches!(
        BBox::new(0.0, 5.0, 1.0, 4.0),
        Err(GeoError::InvalidBBox { .. })
    ));
    assert!(matches!(
        BBox::new(f64::NAN, 0.0, 1.0, 1.0),
        Err(GeoError::InvalidCoordinate { .. })
    ));
    let index = GeoIndex::new();
    assert!(matches!(
        index.query(&Query::radius(pos(0.0, 0.0), f64::NAN), &Budget::unlimited()),
        Err(GeoError::InvalidRadius(r)) if r.is_nan()
    ));
    assert!(matches!(
        index.query(&Query::radius(pos(0.0, 0.0), -1.0), &Budget::unlimited()),
        Err(GeoError::InvalidRadius(_))
    ));
    assert!(matches!(
        index.clusters(&ClusterQuery::new(BBox::world(), 21), &Budget::unlimited()),
        Err(GeoError::InvalidZoom(21))
    ));
}

#[test]
fn crisis_map_clusters_at_low_zoom_and_shows_singles_up_close() {
    let mut index = GeoIndex::new();
    // 2 000 incidents around Nairobi, 2 000 around Mombasa (~440 km apart).
    let mut id = 0;
    for (lat0, lon0) in [(-1.29, 36.82), (-4.04, 39.67)] {
        for i in 0..2_000u32 {
            let lat = lat0 + f64::from(i % 50) * 0.0004;
            let lon = lon0 + f64::from(i / 50) * 0.0004;
            let sev = (i % 5 + 1) as u8;
            index
                .insert(
                    incident(id, pos(lat, lon), "flood", sev, Status::Reported, 0),
                    T0,
                )
                .unwrap();
            id += 1;
        }
    }
    let kenya = BBox::new(33.0, -5.0, 42.0, 5.0).unwrap();
    let map = index
        .clusters(&ClusterQuery::new(kenya, 3), &Budget::unlimited())
        .unwrap();
    assert_eq!(map.completion, Completion::Complete);
    let json = serde_json::to_value(&map.features).unwrap();
    assert_eq!(json["type"], "FeatureCollection");
    let features = json["features"].as_array().unwrap();
    assert!(
        features.len() <= 2,
        "two cities at zoom 3: {}",
        features.len()
    );
    let total: u64 = features
        .iter()
        .map(|f| f["properties"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 4_000);
    for f in features {
        assert!(f["id"].as_str().unwrap().starts_with("cluster/3/"));
        assert_eq!(f["properties"]["severity"].as_array().unwrap().len(), 5);
        assert!(f["properties"]["expansion_zoom"].as_u64().unwrap() > 3);
    }
    // Street level in Nairobi: single incidents with their ids and attributes.
    let street = BBox::new(36.819, -1.291, 36.823, -1.288).unwrap();
    let map = index
        .clusters(&ClusterQuery::new(street, 19), &Budget::unlimited())
        .unwrap();
    let json = serde_json::to_value(&map.features).unwrap();
    let f = &json["features"][0];
    assert!(f["id"].is_u64());
    assert_eq!(f["properties"]["kind"], "incident");
    assert_eq!(f["properties"]["cluster"], false);
    // Moving an incident out of town updates the map without a rebuild.
    index.move_to(ObjectId(0), pos(2.0, 35.0), T0).unwrap();
    let map = index
        .clusters(&ClusterQuery::new(kenya, 3), &Budget::unlimited())
        .unwrap();
    let counts: u32 = map
        .features
        .features
        .iter()
        .map(|f| match &f.properties {
            Properties::Cluster(c) => c.count,
            Properties::Object(_) => 1,
        })
        .sum();
    assert_eq!(counts, 4_000);
}

#[test]
fn query_results_serialize_as_geojson_with_ids() {
    let mut index = GeoIndex::new();
    index
        .insert(
            incident(42, pos(-1.2921, 36.8219), "fire", 3, Status::Verified, 5),
            T0,
        )
        .unwrap();
    let result = index
        .query(
            &Query::radius(pos(-1.2864, 36.8172), 1_000.0),
            &Budget::unlimited(),
        )
        .unwrap();
    let fc = FeatureCollection::from_hits(&result.hits);
    let json = serde_json::to_value(&fc).unwrap();
    let f = &json["features"][0];
    assert_eq!(f["id"], 42);
    assert_eq!(
        f["geometry"],
        serde_json::json!({"type": "Point", "coordinates": [36.8219, -1.2921]})
    );
    assert_eq!(f["properties"]["type"], "fire");
    assert_eq!(f["properties"]["status"], "verified");
    // 821.406 m, worked out by hand with the haversine formula.
    let d = f["properties"]["distance_m"].as_f64().unwrap();
    assert!((d - 821.405_946_516_265_3).abs() < 1e-6, "{d}");
}
