//! The crisis map in the real binary: incidents reported over HTTP reach geo-filtered
//! gateway subscriptions that cover them (and only those), crowdsourced verification,
//! resolution, RBAC, geofence events from volunteers' moves, the map, and a restart that
//! rebuilds the geo index from the store — on SQLite and on PostgreSQL/PostGIS.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use futures_util::{SinkExt, StreamExt};
use nexus_auth::Role;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const NO_LIMITS: [(&str, &str); 2] = [
    ("NEXUS_RATE_LIMIT_PER_IP", "0"),
    ("NEXUS_RATE_LIMIT_PER_USER", "0"),
];

/// Frames until `pred` matches one, or `None` after `wait`. Answers pings.
async fn wait_for(ws: &mut Ws, wait: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(msg) => msg.expect("socket open").expect("frame"),
        };
        let Message::Text(text) = msg else { continue };
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v.as_object().is_some_and(|o| o.is_empty()) {
                ws.send(Message::Text("{}".into())).await.unwrap();
                continue;
            }
            if pred(&v) {
                return Some(v);
            }
        }
    }
}

async fn command(ws: &mut Ws, cmd: Value) -> Value {
    let id = cmd["id"].clone();
    ws.send(Message::Text(cmd.to_string().into()))
        .await
        .unwrap();
    wait_for(ws, Duration::from_secs(10), |v| v["id"] == id)
        .await
        .expect("reply in time")
}

/// A gateway connection for `sub` (with `roles`) subscribed to `channel`, filtered by `bbox`
/// when given. A server-side subscription from the token is dropped first, as the map page
/// does.
async fn subscribe(
    s: &Server,
    sub: &str,
    roles: &[Role],
    channel: &str,
    bbox: Option<[f64; 4]>,
) -> Ws {
    let access = s.token(sub, roles, 600);
    let r = s
        .req("POST", "/api/v1/realtime/token", Some(&access), Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let url = s.base.replace("http://", "ws://") + "/connection/websocket";
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let reply = command(
        &mut ws,
        json!({"id": 1, "connect": {"token": r.json["token"]}}),
    )
    .await;
    assert!(reply.get("error").is_none(), "{reply}");
    command(
        &mut ws,
        json!({"id": 2, "unsubscribe": {"channel": channel}}),
    )
    .await;
    let data = bbox.map(|b| json!({"bbox": b, "zoom": 8}));
    let reply = command(
        &mut ws,
        json!({"id": 3, "subscribe": {"channel": channel, "data": data}}),
    )
    .await;
    assert!(reply.get("error").is_none(), "{reply}");
    ws
}

async fn push_on(
    ws: &mut Ws,
    channel: &str,
    wait: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    wait_for(ws, wait, |v| {
        v["push"]["channel"] == channel && pred(&v["push"]["pub"]["data"])
    })
    .await
    .map(|v| v["push"]["pub"]["data"].clone())
}

fn ids(fc: &Value) -> Vec<String> {
    let mut ids: Vec<String> = fc["features"]
        .as_array()
        .unwrap_or_else(|| panic!("not a FeatureCollection: {fc}"))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn report(s: &Server, token: &str, body: Value) -> String {
    let r = s
        .req("POST", "/api/v1/crisis/incidents", Some(token), body)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

/// Must show: an incident posted over HTTP appears on a geo-filtered WebSocket subscription
/// covering it, and not on one that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_reaches_the_subscription_covering_it_and_not_the_other() {
    let s = Server::start(&NO_LIMITS);
    let nairobi = [36.6, -1.5, 37.1, -1.1];
    let europe = [-10.0, 35.0, 30.0, 60.0];
    // A member of the public (no server-side subscription) and a responder (whose token
    // subscribes them to `incidents` unfiltered; the map page narrows it to a box).
    let mut east_africa = subscribe(
        &s,
        "watcher-1",
        &[Role::Patient],
        "incidents",
        Some(nairobi),
    )
    .await;
    let mut elsewhere = subscribe(
        &s,
        "watcher-2",
        &[Role::Responder],
        "incidents",
        Some(europe),
    )
    .await;

    let reporter = s.token("reporter", &[Role::Patient], 600);
    let id = report(
        &s,
        &reporter,
        json!({"type": "flood", "severity": 4, "lat": -1.29, "lon": 36.82, "title": "River over its banks"}),
    )
    .await;
    let got = push_on(
        &mut east_africa,
        "incidents",
        Duration::from_secs(10),
        |d| d["id"] == id,
    )
    .await
    .expect("the covering subscription gets the incident");
    assert_eq!(got["event"], "incident.reported");
    assert_eq!(got["location"], json!({"lat": -1.29, "lon": 36.82}));
    assert_eq!(got["status"], "reported");
    assert_eq!(got["severity"], 4);

    // The other subscription hears nothing of it, yet does get one inside its own box (so
    // its silence is the filter's doing, not a dead socket).
    let paris = report(
        &s,
        &reporter,
        json!({"type": "fire", "lat": 48.85, "lon": 2.35}),
    )
    .await;
    let first = push_on(&mut elsewhere, "incidents", Duration::from_secs(10), |_| {
        true
    })
    .await
    .expect("the European subscription gets the Paris incident");
    assert_eq!(
        first["id"], paris,
        "the Nairobi incident must not reach the European box"
    );
    assert!(
        push_on(
            &mut east_africa,
            "incidents",
            Duration::from_millis(800),
            |d| d["id"] == paris
        )
        .await
        .is_none()
    );
    assert!(
        !s.logs().contains("realtime publish failed"),
        "{}",
        s.logs()
    );
}

async fn crisis_api_scenarios(s: &Server) {
    let public = s.token("citizen", &[Role::Patient], 600);
    let medic_a = s.token("medic-a", &[Role::Responder], 600);
    let medic_b = s.token("medic-b", &[Role::Responder], 600);
    let coordinator = s.token("coord", &[Role::Coordinator], 600);

    // Invalid coordinates: 400 problem+json naming the field.
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/incidents",
            Some(&public),
            json!({"type": "flood", "lat": 91, "lon": 0}),
        )
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/lat", "{}", r.json);
    let feature = json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [181, 0]}, "properties": {"type": "fire"}});
    let r = s
        .req("POST", "/api/v1/crisis/incidents", Some(&public), feature)
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(
        r.json["errors"][0]["pointer"], "/geometry/coordinates/0",
        "{}",
        r.json
    );
    let r = s
        .req(
            "GET",
            "/api/v1/crisis/incidents?bbox=0,10,1,5",
            Some(&public),
            Value::Null,
        )
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/bbox");
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/incidents",
            None,
            json!({"type": "flood", "lat": 0, "lon": 0}),
        )
        .await;
    r.assert_problem(401, "unauthorized");

    // Reports in both accepted forms.
    let central = report(
        s,
        &public,
        json!({"type": "flood", "severity": 5, "lat": -1.2921, "lon": 36.8219}),
    )
    .await;
    let feature = json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [36.9, -1.3]}, "properties": {"type": "fire", "severity": 2}});
    let east = report(s, &public, feature).await;
    let far = report(
        s,
        &public,
        json!({"type": "flood", "location": {"lat": -4.04, "lon": 39.67}}),
    )
    .await;
    let seam_e = report(
        s,
        &public,
        json!({"type": "storm", "lat": -17.7, "lon": 179.5}),
    )
    .await;
    let seam_w = report(
        s,
        &public,
        json!({"type": "storm", "lat": -17.7, "lon": -179.5}),
    )
    .await;

    // bbox, near + radius, near + k, type and severity filters, antimeridian.
    let get = |q: &str| {
        let path = format!("/api/v1/crisis/incidents?{q}");
        let who = public.clone();
        async move { s.req("GET", &path, Some(&who), Value::Null).await }
    };
    let r = get("bbox=36.5,-1.6,37.2,-1.0").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["type"], "FeatureCollection");
    let mut want = vec![central.clone(), east.clone()];
    want.sort();
    assert_eq!(ids(&r.json), want);
    let r = get("near=36.8219,-1.2921&radius_m=5000").await;
    assert_eq!(
        ids(&r.json),
        std::slice::from_ref(&central),
        "east is ~9 km away: {}",
        r.json
    );
    assert!(
        r.json["features"][0]["properties"]["distance_m"]
            .as_f64()
            .unwrap()
            < 1.0
    );
    let r = get("near=39.6,-4.0&k=2").await;
    assert_eq!(
        r.json["features"][0]["id"],
        far.as_str(),
        "nearest first: {}",
        r.json
    );
    assert_eq!(r.json["features"].as_array().unwrap().len(), 2);
    let r = get("bbox=36,-2,40,0&type=fire").await;
    assert_eq!(ids(&r.json), std::slice::from_ref(&east));
    let r = get("bbox=36,-2,40,0&min_severity=4").await;
    assert_eq!(ids(&r.json), std::slice::from_ref(&central));
    let r = get("bbox=179,-18,-179,-17").await;
    let mut seam = vec![seam_e.clone(), seam_w.clone()];
    seam.sort();
    assert_eq!(
        ids(&r.json),
        seam,
        "a box across the antimeridian: {}",
        r.json
    );
    let r = get("bbox=-180,-90,180,90&limit=2").await;
    assert_eq!(r.json["features"].as_array().unwrap().len(), 2);
    assert_eq!(r.json["truncated"], true);

    // Crowdsourced verification: two trusted confirmations verify; the public and the
    // reporter cannot vote.
    let verify = |who: &str, id: &str| {
        let path = format!("/api/v1/crisis/incidents/{id}/verify");
        let who = who.to_string();
        async move {
            s.req("POST", &path, Some(&who), json!({"vote": "confirm"}))
                .await
        }
    };
    verify(&public, &central)
        .await
        .assert_problem(403, "forbidden");
    let reporter_medic = report(
        s,
        &medic_a,
        json!({"type": "injury", "lat": -1.3, "lon": 36.8}),
    )
    .await;
    verify(&medic_a, &reporter_medic)
        .await
        .assert_problem(409, "conflict");
    let r = verify(&medic_a, &central).await;
    assert_eq!(
        (
            r.status,
            r.json["status"].as_str(),
            r.json["confirmations"].as_i64()
        ),
        (200, Some("reported"), Some(1)),
        "{}",
        r.json
    );
    let r = verify(&medic_a, &central).await;
    assert_eq!(r.json["confirmations"], 1, "one vote per person");
    let r = verify(&medic_b, &central).await;
    assert_eq!(r.json["status"], "verified", "{}", r.json);
    let r = s
        .req(
            "GET",
            &format!("/api/v1/crisis/incidents/{central}"),
            Some(&public),
            Value::Null,
        )
        .await;
    assert_eq!(
        (r.json["status"].as_str(), r.json["confirmations"].as_i64()),
        (Some("verified"), Some(2))
    );
    // The index sees it at once: a status filter finds it.
    let r = get("bbox=36,-2,40,0&status=verified").await;
    assert_eq!(ids(&r.json), std::slice::from_ref(&central));
    verify(&medic_a, "no-such-incident")
        .await
        .assert_problem(404, "not-found");

    // Volunteers, assignment, resolution.
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/volunteers",
            Some(&public),
            json!({"lat": 0, "lon": 0}),
        )
        .await;
    r.assert_problem(403, "forbidden");
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/volunteers",
            Some(&medic_b),
            json!({"skills": ["first aid"], "lat": -1.29, "lon": 36.83}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let volunteer = r.json["id"].as_str().unwrap().to_string();
    let again = s
        .req(
            "POST",
            "/api/v1/crisis/volunteers",
            Some(&medic_b),
            json!({"lat": 0, "lon": 0}),
        )
        .await;
    again.assert_problem(409, "conflict");
    let patch = |who: &str, body: Value| {
        let path = format!("/api/v1/crisis/incidents/{central}");
        let who = who.to_string();
        async move { s.req("PATCH", &path, Some(&who), body).await }
    };
    patch(&medic_a, json!({"status": "resolved"}))
        .await
        .assert_problem(403, "forbidden");
    let r = patch(&coordinator, json!({"status": "closed"})).await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/status");
    let r = patch(&coordinator, json!({"assign": ["ghost"]})).await;
    assert_eq!(r.json["errors"][0]["pointer"], "/assign/0", "{}", r.json);
    let r = patch(
        &coordinator,
        json!({"status": "resolved", "assign": [volunteer]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        (r.json["status"].as_str(), &r.json["assigned"]),
        (Some("resolved"), &json!([volunteer]))
    );
    patch(&coordinator, json!({"status": "rejected"}))
        .await
        .assert_problem(409, "conflict");
    let r = get("bbox=36,-2,40,0&status=reported,verified").await;
    assert!(
        !ids(&r.json).contains(&central),
        "resolved incidents leave the open filter"
    );

    // Resources, shelters, hazards (coordinators), reports (anyone), and the RBAC edges.
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/resources",
            Some(&public),
            json!({"type": "ambulance", "lat": 0, "lon": 0}),
        )
        .await;
    r.assert_problem(403, "forbidden");
    let r = s.req("POST", "/api/v1/crisis/resources", Some(&coordinator), json!({"type": "depot", "name": "Depot 1", "lat": -1.31, "lon": 36.85, "inventory": {"water_l": 5000}})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["properties"]["inventory"]["water_l"], 5000);
    let square = json!({"type": "Polygon", "coordinates": [[[36.7, -1.4], [36.95, -1.4], [36.95, -1.2], [36.7, -1.2], [36.7, -1.4]]]});
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/hazards",
            Some(&coordinator),
            json!({"type": "flood", "severity": 4, "geometry": square}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let hazard = r.json["id"].as_str().unwrap().to_string();
    let bowtie =
        json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]});
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/hazards",
            Some(&coordinator),
            json!({"type": "flood", "geometry": bowtie}),
        )
        .await;
    r.assert_problem(400, "validation");
    assert_eq!(r.json["errors"][0]["pointer"], "/geometry/coordinates");
    let r = s.req("POST", "/api/v1/crisis/shelters", Some(&coordinator), json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [36.81, -1.28]}, "properties": {"type": "school", "capacity": 300}})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s
        .req(
            "GET",
            "/api/v1/crisis/hazards?near=36.8,-1.3&radius_m=100",
            Some(&public),
            Value::Null,
        )
        .await;
    assert_eq!(ids(&r.json), [hazard]);
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/reports",
            Some(&public),
            json!({"summary": "Water still rising", "incident_id": east}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/reports",
            Some(&public),
            json!({"summary": "x", "incident_id": "ghost"}),
        )
        .await;
    assert_eq!(r.json["errors"][0]["pointer"], "/incident_id");

    // The map: clusters at a low zoom, single features close up; responders only for
    // coordinators.
    let map = |who: &str, q: &str| {
        let path = format!("/api/v1/crisis/map?{q}");
        let who = who.to_string();
        async move { s.req("GET", &path, Some(&who), Value::Null).await }
    };
    let r = map(&public, "bbox=20,-15,50,15&zoom=3").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let cluster = r.json["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["properties"]["cluster"] == true)
        .cloned();
    let cluster = cluster.unwrap_or_else(|| panic!("a cluster at zoom 3: {}", r.json));
    assert!(
        cluster["properties"]["count"].as_u64().unwrap() >= 4,
        "{cluster}"
    );
    assert_eq!(
        cluster["properties"]["kinds"]["responder"], 0,
        "no volunteers for the public"
    );
    let r = map(&public, "bbox=36.8,-1.3,36.83,-1.28&zoom=18").await;
    assert!(ids(&r.json).contains(&central), "{}", r.json);
    map(&public, "bbox=20,-15,50,15&zoom=3&kinds=responder")
        .await
        .assert_problem(403, "forbidden");
    let r = map(
        &coordinator,
        "bbox=36.8,-1.3,36.85,-1.28&zoom=18&kinds=responder",
    )
    .await;
    assert_eq!(ids(&r.json), [volunteer]);
    map(&public, "bbox=20,-15,50,15&zoom=30")
        .await
        .assert_problem(400, "validation");
    map(&public, "zoom=3")
        .await
        .assert_problem(400, "validation");
}

async fn geofence_scenarios(s: &Server) {
    let coordinator = s.token("coord", &[Role::Coordinator], 600);
    let medic = s.token("medic-g", &[Role::Responder], 600);
    let other = s.token("medic-h", &[Role::Responder], 600);
    let mut feed = subscribe(s, "coord", &[Role::Coordinator], "geofences", None).await;

    let zone = json!({"type": "Polygon", "coordinates": [[[30.0, 0.0], [30.1, 0.0], [30.1, 0.1], [30.0, 0.1], [30.0, 0.0]]]});
    let body = json!({"name": "Flood zone", "geometry": zone, "watch": ["responder"]});
    s.req("POST", "/api/v1/geofences", Some(&medic), body.clone())
        .await
        .assert_problem(403, "forbidden");
    let r = s
        .req(
            "POST",
            "/api/v1/geofences",
            Some(&coordinator),
            json!({"name": "bad", "circle": {"center": {"lat": 0, "lon": 0}, "radius_m": -5}}),
        )
        .await;
    assert_eq!(
        r.json["errors"][0]["pointer"], "/circle/radius_m",
        "{}",
        r.json
    );
    let r = s
        .req("POST", "/api/v1/geofences", Some(&coordinator), body)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let fence = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .req(
            "GET",
            &format!("/api/v1/geofences/{fence}"),
            Some(&coordinator),
            Value::Null,
        )
        .await;
    assert_eq!(
        (r.json["name"].as_str(), &r.json["watch"]),
        (Some("Flood zone"), &json!(["responder"]))
    );
    let r = s
        .req("GET", "/api/v1/geofences", Some(&coordinator), Value::Null)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1, "{}", r.json);

    // A volunteer west of the zone walks into it: `enter`, in the reply, on the
    // `geofences` channel, with ids only.
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/volunteers",
            Some(&medic),
            json!({"lat": 0.05, "lon": 29.95}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let volunteer = r.json["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/crisis/volunteers/{volunteer}/location");
    s.req(
        "PUT",
        &path,
        Some(&other),
        json!({"lat": 0.05, "lon": 30.05}),
    )
    .await
    .assert_problem(403, "forbidden");
    let r = s
        .req(
            "PUT",
            &path,
            Some(&medic),
            json!({"lat": 0.05, "lon": 30.05}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let events = r.json["geofence_events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", r.json);
    assert_eq!(
        (
            events[0]["transition"].as_str(),
            events[0]["fence_id"].as_str()
        ),
        (Some("enter"), Some(fence.as_str()))
    );
    assert_eq!(events[0]["object_id"], volunteer.as_str());
    let pushed = push_on(&mut feed, "geofences", Duration::from_secs(10), |d| {
        d["transition"] == "enter"
    })
    .await
    .expect("enter published on the geofences channel");
    assert_eq!(pushed["object_id"], volunteer.as_str());
    assert!(
        pushed.get("position").is_none() && !pushed.to_string().contains("30.05"),
        "{pushed}"
    );
    let r = s
        .req(
            "PUT",
            &path,
            Some(&medic),
            json!({"lat": 0.05, "lon": 30.2}),
        )
        .await;
    assert_eq!(
        r.json["geofence_events"][0]["transition"], "exit",
        "{}",
        r.json
    );
    let r = s
        .req("PUT", &path, Some(&medic), json!({"lat": 95, "lon": 30.2}))
        .await;
    assert_eq!(r.json["errors"][0]["pointer"], "/lat");
    // Volunteers' positions stay out of the logs.
    assert!(
        !s.logs().contains("30.05"),
        "a volunteer's position reached the log"
    );

    s.req(
        "DELETE",
        &format!("/api/v1/geofences/{fence}"),
        Some(&coordinator),
        Value::Null,
    )
    .await;
    let r = s
        .req(
            "GET",
            &format!("/api/v1/geofences/{fence}"),
            Some(&coordinator),
            Value::Null,
        )
        .await;
    r.assert_problem(404, "not-found");
    let r = s
        .req(
            "PUT",
            &path,
            Some(&medic),
            json!({"lat": 0.05, "lon": 30.05}),
        )
        .await;
    assert_eq!(
        r.json["geofence_events"],
        json!([]),
        "a deleted fence reports nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crisis_api_on_sqlite() {
    let s = Server::start(&NO_LIMITS);
    crisis_api_scenarios(&s).await;
    geofence_scenarios(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crisis_api_on_postgres() {
    let Some(s) = Server::start_postgres(&NO_LIMITS).await else {
        return;
    };
    crisis_api_scenarios(&s).await;
    geofence_scenarios(&s).await;
}

/// Stops the server and starts another on the same store: incidents and geofences survive,
/// and the rebuilt index answers geo queries and fence transitions.
async fn restart_rebuilds_the_index(env: &[(&str, &str)]) {
    let mut s = Server::start(env);
    let public = s.token("citizen", &[Role::Patient], 600);
    let coordinator = s.token("coord", &[Role::Coordinator], 600);
    let medic = s.token("medic", &[Role::Responder], 600);
    let a = report(
        &s,
        &public,
        json!({"type": "flood", "lat": 10.0, "lon": 10.0}),
    )
    .await;
    let b = report(
        &s,
        &public,
        json!({"type": "fire", "lat": 10.01, "lon": 10.01}),
    )
    .await;
    let r = s
        .req(
            "POST",
            "/api/v1/geofences",
            Some(&coordinator),
            json!({"name": "ring", "circle": {"center": {"lat": 20, "lon": 20}, "radius_m": 1000}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s
        .req(
            "POST",
            "/api/v1/crisis/volunteers",
            Some(&medic),
            json!({"lat": 19.9, "lon": 20.0}),
        )
        .await;
    let volunteer = r.json["id"].as_str().unwrap().to_string();
    assert!(s.terminate().success());

    let s = Server::start(env);
    assert!(
        s.logs().contains("geo index rebuilt from the store"),
        "{}",
        s.logs()
    );
    let r = s
        .req(
            "GET",
            "/api/v1/crisis/incidents?near=10,10&k=5",
            Some(&public),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["features"][0]["id"], a.as_str());
    assert_eq!(r.json["features"][1]["id"], b.as_str());
    let r = s
        .req(
            "GET",
            &format!("/api/v1/crisis/incidents/{a}"),
            Some(&public),
            Value::Null,
        )
        .await;
    assert_eq!(r.json["type"], "flood");
    let r = s
        .req(
            "PUT",
            &format!("/api/v1/crisis/volunteers/{volunteer}/location"),
            Some(&medic),
            json!({"lat": 20.0, "lon": 20.0}),
        )
        .await;
    assert_eq!(
        r.json["geofence_events"][0]["transition"], "enter",
        "the fence came back: {}",
        r.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_incidents_and_rebuilds_the_index_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let mut env = NO_LIMITS.to_vec();
    env.push(("NEXUS_DATA_DIR", &data));
    restart_rebuilds_the_index(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_incidents_and_rebuilds_the_index_on_postgres() {
    let Some(url) = nexus_store::testing::fresh_postgres_url().await else {
        return;
    };
    let mut env = NO_LIMITS.to_vec();
    env.push(("NEXUS_DATABASE_URL", &url));
    restart_rebuilds_the_index(&env).await;
}
