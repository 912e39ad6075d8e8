//! Conformance of the alerting tables: lifecycle, the unique CAP triple, targeting
//! candidates, devices' last known locations, and the delivery queue (claim — per channel —,
//! lease, retry, batched completion, idempotency, cancel, expiry) on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use nexus_store::testing::{fresh_postgres_store, sqlite_store};
use nexus_store::{
    AlertFilter, AlertRecord, AlertStatus, Backend, ChannelFilter, DeliveryOutcome, DeliveryState,
    DeviceLocation, NewDelivery, NewEvent, Store, StoreError, SubscriptionPoint,
    SubscriptionRecord,
};

/// Runs `scenario` on a fresh SQLite store and, when configured, a fresh PostgreSQL store.
macro_rules! on_every_backend {
    ($name:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let sqlite = sqlite_store(dir.path()).await;
            assert_eq!(sqlite.backend(), Backend::Sqlite);
            $scenario(sqlite).await;
            if let Some(pg) = fresh_postgres_store().await {
                assert_eq!(pg.backend(), Backend::Postgres);
                $scenario(pg).await;
            }
        }
    };
}

fn alert(id: &str, identifier: &str, msg_type: &str, expires_at: Option<i64>) -> AlertRecord {
    AlertRecord {
        id: id.into(),
        identifier: identifier.into(),
        sender: "authority@example.org".into(),
        sent: "2024-06-12T14:57:00-07:00".into(),
        sent_at: 1_718_229_420_000,
        cap_status: "Actual".into(),
        msg_type: msg_type.into(),
        status: AlertStatus::Active,
        expires_at,
        bbox: Some([-1.0, 50.0, 1.0, 52.0]),
        cap_xml: "<alert/>".into(),
        cap_json: "{}".into(),
        superseded_by: None,
        created_by: Some("u1".into()),
        created_at: 1_000,
        updated_at: 1_000,
    }
}

fn to(recipient: &str, channel: &str) -> NewDelivery {
    NewDelivery {
        recipient_id: recipient.into(),
        channel: channel.into(),
        address: format!("{recipient}@example.org"),
    }
}

async fn lifecycle_supersede_cancel_and_the_unique_triple(store: Store) {
    let ev = NewEvent::new("nexus.crisis", "a1", "alert.issued", "{}");
    store
        .issue_alert(&alert("a1", "FLOOD-1", "Alert", None), &[], &[], &[ev])
        .await
        .unwrap();
    assert_eq!(store.events_for("a1").await.unwrap().len(), 1);
    let dup = store
        .issue_alert(&alert("a2", "FLOOD-1", "Alert", None), &[], &[], &[])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let found = store
        .alert_by_triple("FLOOD-1", "authority@example.org", 1_718_229_420_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "a1");
    assert_eq!(found.bbox, Some([-1.0, 50.0, 1.0, 52.0]));

    let mut update = alert("a3", "FLOOD-2", "Update", None);
    update.sent_at += 60_000;
    store
        .issue_alert(&update, &["a1".into()], &[], &[])
        .await
        .unwrap();
    let a1 = store.alert("a1").await.unwrap().unwrap();
    assert_eq!(a1.status, AlertStatus::Superseded);
    assert_eq!(a1.superseded_by.as_deref(), Some("a3"));

    let mut cancel = alert("a4", "FLOOD-3", "Cancel", None);
    cancel.sent_at += 120_000;
    store
        .issue_alert(&cancel, &["a3".into()], &[], &[])
        .await
        .unwrap();
    assert_eq!(
        store.alert("a3").await.unwrap().unwrap().status,
        AlertStatus::Cancelled
    );

    // Lists: newest first, filters, cursor.
    let all = store
        .alerts_page(&AlertFilter {
            limit: 10,
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = all.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a4", "a3", "a1"]);
    let active = store
        .alerts_page(&AlertFilter {
            status: Some(AlertStatus::Active),
            limit: 10,
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, "a4");
    let page = store
        .alerts_page(&AlertFilter {
            before_id: Some("a4".into()),
            limit: 1,
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id, "a3");
    let by_identifier = store
        .alerts_page(&AlertFilter {
            identifier: Some("FLOOD-2".into()),
            sender: Some("authority@example.org".into()),
            limit: 10,
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_identifier.len(), 1);
}
on_every_backend!(
    lifecycle_supersede_cancel_and_the_unique_triple_on_every_backend,
    lifecycle_supersede_cancel_and_the_unique_triple
);

async fn delivery_queue_claims_leases_retries_and_is_idempotent(store: Store) {
    let deliveries = vec![to("r1", "email"), to("r1", "sms"), to("r2", "email")];
    store
        .issue_alert(
            &alert("a1", "X", "Alert", Some(1_000_000)),
            &[],
            &deliveries,
            &[],
        )
        .await
        .unwrap();
    let counts = store.delivery_counts("a1").await.unwrap();
    assert_eq!(
        counts.iter().map(|c| c.2).sum::<i64>(),
        3,
        "one row per (alert, recipient, channel): {counts:?}"
    );

    // A claim leases every due row; nothing is due again until the lease runs out.
    let claimed = store.claim_deliveries(2_000, 10_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        claimed
            .iter()
            .all(|d| d.state == DeliveryState::Sending { attempt: 1 })
    );
    assert!(
        store
            .claim_deliveries(3_000, 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Outcomes: delivered, retry later, failed.
    let [a, b, c] = [&claimed[0], &claimed[1], &claimed[2]];
    assert!(
        store
            .complete_delivery(&a.id, &DeliveryOutcome::Delivered, 3_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_delivery(&a.id, &DeliveryOutcome::Delivered, 3_000)
            .await
            .unwrap(),
        "only a sending row completes"
    );
    let retry = DeliveryOutcome::Retry {
        at: 5_000,
        error: "503".into(),
    };
    store.complete_delivery(&b.id, &retry, 3_000).await.unwrap();
    store
        .complete_delivery(
            &c.id,
            &DeliveryOutcome::Failed {
                error: "400".into(),
            },
            3_000,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(4_000, 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_deliveries(5_000, 1_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, b.id, "the retry keeps its idempotency key");
    assert_eq!(again[0].state, DeliveryState::Sending { attempt: 2 });
    assert_eq!(again[0].last_error.as_deref(), Some("503"));

    // The worker dies: its lease runs out and the row is claimed again, same key.
    let reclaimed = store.claim_deliveries(6_001, 1_000, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, b.id);
    assert_eq!(reclaimed[0].state, DeliveryState::Sending { attempt: 3 });

    let page = store.deliveries_page("a1", None, 10).await.unwrap();
    assert_eq!(page.len(), 3);
    let states: Vec<_> = page.iter().map(|d| d.state.name()).collect();
    assert!(states.contains(&"delivered") && states.contains(&"failed"));
}
on_every_backend!(
    delivery_queue_claims_leases_retries_and_is_idempotent_on_every_backend,
    delivery_queue_claims_leases_retries_and_is_idempotent
);

async fn cancel_and_expiry_stop_pending_deliveries(store: Store) {
    store
        .issue_alert(
            &alert("a1", "X", "Alert", Some(10_000)),
            &[],
            &[to("r1", "email"), to("r2", "email")],
            &[],
        )
        .await
        .unwrap();
    let mut cancel = alert("a2", "Y", "Cancel", None);
    cancel.sent_at += 1;
    store
        .issue_alert(&cancel, &["a1".into()], &[], &[])
        .await
        .unwrap();
    let page = store.deliveries_page("a1", None, 10).await.unwrap();
    assert!(page.iter().all(|d| d.state == DeliveryState::Expired));
    assert!(
        store
            .claim_deliveries(2_000, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let mut later = alert("a3", "Z", "Alert", Some(10_000));
    later.sent_at += 2;
    store
        .issue_alert(&later, &[], &[to("r1", "sms")], &[])
        .await
        .unwrap();
    assert!(store.expire_alerts(9_999).await.unwrap().is_empty());
    assert_eq!(store.expire_alerts(10_000).await.unwrap(), ["a3"]);
    assert_eq!(
        store.alert("a3").await.unwrap().unwrap().status,
        AlertStatus::Expired
    );
    let page = store.deliveries_page("a3", None, 10).await.unwrap();
    assert_eq!(page[0].state, DeliveryState::Expired);
    let unexpired = store
        .alerts_page(&AlertFilter {
            unexpired_at: Some(10_000),
            limit: 10,
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert!(unexpired.iter().all(|a| a.id == "a2"), "{unexpired:?}");
}
on_every_backend!(
    cancel_and_expiry_stop_pending_deliveries_on_every_backend,
    cancel_and_expiry_stop_pending_deliveries
);

async fn subscriptions_are_found_by_bounding_box(store: Store) {
    for (id, lat, lon) in [("s1", 51.5, -0.1), ("s2", 48.8, 2.3), ("s3", -40.0, 179.5)] {
        store
            .insert_subscription(&SubscriptionRecord {
                id: id.into(),
                user_id: None,
                lat,
                lon,
                language: None,
                min_severity: None,
                email: Some(format!("{id}@example.org")),
                phone: None,
                push: None,
                created_at: 1,
                websocket: false,
                device: None,
            })
            .await
            .unwrap();
    }
    let london = store
        .subscriptions_in_bbox([-1.0, 51.0, 1.0, 52.0], None, 10)
        .await
        .unwrap();
    assert_eq!(london.len(), 1);
    assert_eq!(london[0].id, "s1");
    let across = store
        .subscriptions_in_bbox([179.0, -41.0, -179.0, -39.0], None, 10)
        .await
        .unwrap();
    assert_eq!(across[0].id, "s3");
    let europe = store
        .subscriptions_in_bbox([-5.0, 40.0, 5.0, 55.0], Some("s1"), 10)
        .await
        .unwrap();
    assert_eq!(europe.len(), 1, "paged after s1");
    assert!(store.deactivate_subscription("s2").await.unwrap());
    assert!(
        store
            .subscriptions_in_bbox([-5.0, 40.0, 5.0, 55.0], None, 10)
            .await
            .unwrap()
            .iter()
            .all(|s| s.id == "s1")
    );
}
on_every_backend!(
    subscriptions_are_found_by_bounding_box_on_every_backend,
    subscriptions_are_found_by_bounding_box
);

/// The alerting consumer's enqueue: a redelivered event adds nothing, and an alert no longer
/// in force (cancelled meanwhile, expired) gets no deliveries.
async fn enqueue_is_idempotent_and_only_for_alerts_in_force(store: Store) {
    store
        .issue_alert(&alert("a1", "FLOOD-1", "Alert", None), &[], &[], &[])
        .await
        .unwrap();
    let batch = [to("r1", "email"), to("r1", "sms"), to("r2", "push")];
    assert_eq!(
        store.enqueue_deliveries("a1", &batch, 2_000).await.unwrap(),
        3
    );
    assert_eq!(
        store.enqueue_deliveries("a1", &batch, 3_000).await.unwrap(),
        0,
        "the same event handled again queues nothing new"
    );
    let more = [to("r1", "email"), to("r3", "email")];
    assert_eq!(
        store.enqueue_deliveries("a1", &more, 3_000).await.unwrap(),
        1
    );
    assert_eq!(
        store.deliveries_page("a1", None, 10).await.unwrap().len(),
        4
    );
    assert_eq!(
        store
            .enqueue_deliveries("nope", &batch, 3_000)
            .await
            .unwrap(),
        0
    );

    // Cancelled before its event was handled (a lagging consumer): nothing is queued.
    store
        .issue_alert(&alert("a2", "FLOOD-2", "Alert", None), &[], &[], &[])
        .await
        .unwrap();
    let mut cancel = alert("a3", "FLOOD-3", "Cancel", None);
    cancel.created_at = 4_000;
    store
        .issue_alert(&cancel, &["a2".into()], &[], &[])
        .await
        .unwrap();
    assert_eq!(
        store.enqueue_deliveries("a2", &batch, 5_000).await.unwrap(),
        0
    );
    // Expired: nothing either.
    store
        .issue_alert(&alert("a4", "FLOOD-4", "Alert", Some(6_000)), &[], &[], &[])
        .await
        .unwrap();
    assert_eq!(
        store.enqueue_deliveries("a4", &batch, 6_000).await.unwrap(),
        0
    );
}
on_every_backend!(
    enqueue_is_idempotent_and_only_for_alerts_in_force_on_every_backend,
    enqueue_is_idempotent_and_only_for_alerts_in_force
);

/// A pending alert supersedes nothing until approved; the approval activates it, applies
/// its references and writes its event in one go, once.
async fn approval_activates_a_pending_alert_once(store: Store) {
    store
        .issue_alert(&alert("a1", "FLOOD-1", "Alert", None), &[], &[], &[])
        .await
        .unwrap();
    store
        .enqueue_deliveries("a1", &[to("r1", "sms"), to("r2", "sms")], 2_000)
        .await
        .unwrap();
    let mut cancel = alert("a2", "FLOOD-2", "Cancel", None);
    cancel.status = AlertStatus::Pending;
    store.issue_alert(&cancel, &[], &[], &[]).await.unwrap();
    assert_eq!(
        store.alert("a1").await.unwrap().unwrap().status,
        AlertStatus::Active,
        "a pending Cancel cancels nothing"
    );
    assert_eq!(
        store
            .enqueue_deliveries("a2", &[to("r1", "sms")], 2_500)
            .await
            .unwrap(),
        0,
        "a pending alert gets no deliveries"
    );
    let before = store.outbox_pending(100).await.unwrap().len();
    let ev = NewEvent::new("nexus.crisis", "a2", "alert.cancelled", "{}");
    let approved = store
        .approve_alert("a2", "u2", &["a1".into()], std::slice::from_ref(&ev), 3_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.status, AlertStatus::Active);
    assert_eq!(
        store.alert_approval("a2").await.unwrap(),
        Some(("u2".to_string(), 3_000))
    );
    assert_eq!(
        store.alert("a1").await.unwrap().unwrap().status,
        AlertStatus::Cancelled
    );
    assert!(
        store
            .deliveries_page("a1", None, 10)
            .await
            .unwrap()
            .iter()
            .all(|d| d.state == DeliveryState::Expired),
        "the approved Cancel stops what was queued"
    );
    assert_eq!(store.outbox_pending(100).await.unwrap().len(), before + 1);
    assert!(
        store
            .approve_alert("a2", "u3", &[], &[ev], 4_000)
            .await
            .unwrap()
            .is_none(),
        "approved once"
    );
    assert_eq!(store.outbox_pending(100).await.unwrap().len(), before + 1);
    assert!(store.alert_approval("a1").await.unwrap().is_none());
}
on_every_backend!(
    approval_activates_a_pending_alert_once_on_every_backend,
    approval_activates_a_pending_alert_once
);

/// An SMS reply STOP ends every subscription registered with that number.
async fn stop_by_phone_ends_that_numbers_subscriptions(store: Store) {
    for (id, phone) in [
        ("s1", "+447700900001"),
        ("s2", "+447700900001"),
        ("s3", "+447700900002"),
    ] {
        store
            .insert_subscription(&SubscriptionRecord {
                id: id.into(),
                user_id: None,
                lat: 51.0,
                lon: 0.0,
                language: None,
                min_severity: None,
                email: None,
                phone: Some(phone.into()),
                push: None,
                created_at: 1,
                websocket: false,
                device: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .deactivate_subscriptions_by_phone("+447700900001")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .deactivate_subscriptions_by_phone("+447700900001")
            .await
            .unwrap(),
        0
    );
    let (s1, active) = store.subscription("s1").await.unwrap().unwrap();
    assert!(!active && s1.phone.as_deref() == Some("+447700900001"));
    assert!(store.subscription("s3").await.unwrap().unwrap().1);
    assert!(store.subscription("nope").await.unwrap().is_none());
}
on_every_backend!(
    stop_by_phone_ends_that_numbers_subscriptions_on_every_backend,
    stop_by_phone_ends_that_numbers_subscriptions
);

/// Enqueuing moved from multi-row VALUES to one JSON array per batch: addresses with
/// characters JSON escapes arrive intact, a delivery listed twice is queued once, batches
/// larger than one statement all land, and an alert without `expires` queues rows without
/// one.
async fn batched_enqueue_keeps_addresses_and_is_idempotent(store: Store) {
    let mut deliveries: Vec<NewDelivery> = (0..45_000)
        .map(|i| {
            to(
                &format!("r{i:05}"),
                if i % 2 == 0 { "email" } else { "sms" },
            )
        })
        .collect();
    deliveries.push(NewDelivery {
        recipient_id: "odd".into(),
        channel: "email".into(),
        address: "\"quoted\\back\"\n<é@example.org>".into(),
    });
    deliveries.push(to("r00000", "email"));
    store
        .issue_alert(&alert("big", "BIG", "Alert", None), &[], &deliveries, &[])
        .await
        .unwrap();
    let counts = store.delivery_counts("big").await.unwrap();
    assert_eq!(
        counts.iter().map(|c| c.2).sum::<i64>(),
        45_001,
        "{counts:?}"
    );
    let mut after = None;
    let mut found = None;
    loop {
        let page = store
            .deliveries_page("big", after.as_deref(), 10_000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        if let Some(d) = page.iter().find(|d| d.recipient_id == "odd") {
            found = Some(d.clone());
        }
    }
    let odd = found.expect("the odd address was queued");
    assert_eq!(odd.address, "\"quoted\\back\"\n<é@example.org>");
    assert_eq!(odd.state, DeliveryState::Queued);
    assert_eq!(odd.expires_at, None);
    assert_eq!(
        store
            .enqueue_deliveries("big", &deliveries, 2_000)
            .await
            .unwrap(),
        0,
        "the consumer's batched enqueue skips what is queued already"
    );
}
on_every_backend!(
    batched_enqueue_keeps_addresses_and_is_idempotent_on_every_backend,
    batched_enqueue_keeps_addresses_and_is_idempotent
);

fn subscriber(id: &str, lat: f64, lon: f64) -> SubscriptionRecord {
    SubscriptionRecord {
        id: id.into(),
        user_id: None,
        lat,
        lon,
        language: None,
        min_severity: Some("Severe".into()),
        email: Some(format!("{id}@example.org")),
        phone: None,
        push: None,
        created_at: 1,
        websocket: false,
        device: None,
    }
}

/// What the targeting index is built from and reads back: locations of active
/// subscriptions (paged by id), and rows by id — ended and unknown ones left out. Bulk
/// import and the create/end events travel with their writes.
async fn targeting_reads_locations_and_rows_of_active_subscriptions(store: Store) {
    let bulk: Vec<SubscriptionRecord> = (0..1_500)
        .map(|i| subscriber(&format!("s{i:04}"), 50.0 + i as f64 / 1_000.0, 0.5))
        .collect();
    store.insert_subscriptions(&bulk).await.unwrap();
    let created = NewEvent::new("nexus.crisis", "t1", "alert.subscription.created", "{}");
    let before = store.outbox_pending(100).await.unwrap().len();
    store
        .insert_subscription_with_events(&subscriber("t1", 51.0, 0.0), &[created])
        .await
        .unwrap();
    assert_eq!(store.outbox_pending(100).await.unwrap().len(), before + 1);
    let ended = NewEvent::new("nexus.crisis", "s0001", "alert.subscription.ended", "{}");
    assert!(
        store
            .deactivate_subscription_with_events("s0001", std::slice::from_ref(&ended))
            .await
            .unwrap()
    );
    assert!(
        !store
            .deactivate_subscription_with_events("s0001", &[ended])
            .await
            .unwrap(),
        "ended once"
    );
    assert_eq!(store.outbox_pending(100).await.unwrap().len(), before + 2);

    let mut points = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .subscription_points(after.as_deref(), 400)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.0.clone());
        points.extend(page);
    }
    assert_eq!(points.len(), 1_500, "1 500 imported + t1 - s0001");
    assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(!points.iter().any(|p| p.0 == "s0001"));
    let s0002 = points.iter().find(|p| p.0 == "s0002").unwrap();
    assert_eq!((s0002.1, s0002.2), (50.0 + 2.0 / 1_000.0, 0.5));

    let ids: Vec<String> = ["t1", "s0001", "nope", "s1499", "s0000"]
        .map(String::from)
        .to_vec();
    let rows = store.subscriptions_by_ids(&ids).await.unwrap();
    let got: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, ["s0000", "s1499", "t1"]);
    assert_eq!(rows[0].email.as_deref(), Some("s0000@example.org"));
    assert_eq!(rows[0].min_severity.as_deref(), Some("Severe"));
    assert!(store.subscriptions_by_ids(&[]).await.unwrap().is_empty());
}
on_every_backend!(
    targeting_reads_locations_and_rows_of_active_subscriptions_on_every_backend,
    targeting_reads_locations_and_rows_of_active_subscriptions
);

/// What a worker's channel lanes do: each claims its own channel only (or every channel
/// but those served), and records a whole batch's outcomes in one transaction.
async fn lanes_claim_their_channel_and_complete_a_batch_at_once(store: Store) {
    let deliveries = vec![
        to("r1", "email"),
        to("r1", "sms"),
        to("r2", "sms"),
        to("r2", "fax"),
        to("r3", "sms"),
    ];
    store
        .issue_alert(&alert("a1", "X", "Alert", None), &[], &deliveries, &[])
        .await
        .unwrap();
    let sms = store
        .claim_deliveries_on(ChannelFilter::Only("sms"), 2_000, 10_000, 10)
        .await
        .unwrap();
    assert_eq!(sms.len(), 3);
    assert!(sms.iter().all(|d| d.channel == "sms"));
    let stray = store
        .claim_deliveries_on(ChannelFilter::Except(&["sms", "email"]), 2_000, 10_000, 10)
        .await
        .unwrap();
    assert_eq!(
        stray.iter().map(|d| d.channel.as_str()).collect::<Vec<_>>(),
        ["fax"]
    );
    let retry = DeliveryOutcome::Retry {
        at: 9_000,
        error: "503".into(),
    };
    let outcomes = vec![
        (sms[0].id.clone(), DeliveryOutcome::Delivered),
        (sms[1].id.clone(), DeliveryOutcome::Delivered),
        (sms[2].id.clone(), retry),
        (
            stray[0].id.clone(),
            DeliveryOutcome::Failed {
                error: "no fax".into(),
            },
        ),
    ];
    assert_eq!(
        store.complete_deliveries(&outcomes, 3_000).await.unwrap(),
        4
    );
    assert_eq!(
        store.complete_deliveries(&outcomes, 3_000).await.unwrap(),
        0,
        "only sending rows complete"
    );
    let mut counts = store.delivery_counts("a1").await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("email".to_string(), "queued".to_string(), 1),
            ("fax".to_string(), "failed".to_string(), 1),
            ("sms".to_string(), "delivered".to_string(), 2),
            ("sms".to_string(), "queued".to_string(), 1),
        ]
    );
    // The e-mail lane still finds its row; the retry waits for its time.
    let email = store
        .claim_deliveries_on(ChannelFilter::Only("email"), 3_000, 10_000, 10)
        .await
        .unwrap();
    assert_eq!(email.len(), 1);
    assert!(
        store
            .claim_deliveries_on(ChannelFilter::Only("sms"), 8_999, 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_deliveries_on(ChannelFilter::Only("sms"), 9_000, 10_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

on_every_backend!(
    lanes_claim_their_channel_and_complete_a_batch_at_once_on_every_backend,
    lanes_claim_their_channel_and_complete_a_batch_at_once
);

/// A device's last known location: written only for the owner's active subscription, with
/// its event, overwritten by the next report, read back with the row and the index's
/// locations.
async fn device_locations_overwrite_and_belong_to_the_owner(store: Store) {
    let mut ann = subscriber("s-ann", 51.5, -0.1);
    ann.user_id = Some("u-ann".into());
    ann.websocket = true;
    store.insert_subscription(&ann).await.unwrap();
    store
        .insert_subscription(&subscriber("s-bob", 51.0, -1.0))
        .await
        .unwrap();
    let (row, _) = store.subscription("s-ann").await.unwrap().unwrap();
    assert!(row.websocket && row.device.is_none());
    let here = DeviceLocation {
        lat: 51.1,
        lon: -1.1,
        at: 5_000,
    };
    let ev = || {
        vec![NewEvent::new(
            "nexus.crisis",
            "s-ann",
            "alert.subscription.located",
            r#"{"id":"s-ann"}"#,
        )]
    };
    assert!(
        !store
            .set_device_location("s-ann", Some("u-mallory"), here, &ev())
            .await
            .unwrap(),
        "someone else's subscription"
    );
    assert!(
        !store
            .set_device_location("s-none", Some("u-ann"), here, &ev())
            .await
            .unwrap()
    );
    assert!(
        store
            .set_device_location("s-ann", Some("u-ann"), here, &ev())
            .await
            .unwrap()
    );
    let there = DeviceLocation {
        lat: 48.85,
        lon: 2.35,
        at: 6_000,
    };
    assert!(
        store
            .set_device_location("s-ann", Some("u-ann"), there, &ev())
            .await
            .unwrap()
    );
    let (row, _) = store.subscription("s-ann").await.unwrap().unwrap();
    assert_eq!(row.device, Some(there), "the last report, not a history");
    let by_id = store
        .subscriptions_by_ids(&["s-ann".into(), "s-bob".into()])
        .await
        .unwrap();
    assert_eq!(by_id[0].device, Some(there));
    assert_eq!(by_id[1].device, None);
    let points = store.subscription_locations(None, 10).await.unwrap();
    assert_eq!(
        points,
        [
            SubscriptionPoint {
                id: "s-ann".into(),
                lat: 51.5,
                lon: -0.1,
                device: Some(there),
            },
            SubscriptionPoint {
                id: "s-bob".into(),
                lat: 51.0,
                lon: -1.0,
                device: None,
            },
        ]
    );
    // Ended: no more reports.
    store.deactivate_subscription("s-ann").await.unwrap();
    assert!(
        !store
            .set_device_location("s-ann", Some("u-ann"), here, &ev())
            .await
            .unwrap()
    );
}

on_every_backend!(
    device_locations_overwrite_and_belong_to_the_owner_on_every_backend,
    device_locations_overwrite_and_belong_to_the_owner
);
