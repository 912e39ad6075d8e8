//! The store conformance suite: every scenario runs against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use nexus_store::testing::{fresh_postgres_store, sqlite_store};
use nexus_store::{
    ApiKeyRecord, Backend, NewEvent, RefreshRecord, RotateOutcome, Store, StoreError, UserPatch,
    UserRecord,
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

fn user(id: &str, email: &str) -> UserRecord {
    UserRecord::new(
        id,
        email,
        "Test User",
        "$argon2id$fake",
        vec!["patient".into()],
        1_000,
    )
}

async fn users_round_trip_and_email_is_unique(store: Store) {
    let ev = NewEvent::new("nexus.users", "u1", "user.registered", r#"{"id":"u1"}"#);
    store
        .create_user(&user("u1", "Ada@Example.org"), std::slice::from_ref(&ev))
        .await
        .unwrap();
    let got = store
        .user_by_email("ada@example.ORG")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, "u1");
    assert_eq!(got.email, "ada@example.org");
    assert_eq!(got.roles, vec!["patient".to_string()]);
    assert!(!got.email_verified);
    assert_eq!(store.user_by_id("u1").await.unwrap().unwrap(), got);

    let dup = store
        .create_user(
            &user("u2", "ADA@example.org"),
            &[NewEvent::new("nexus.users", "u2", "user.registered", "{}")],
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // The failed insert left no event behind: the outbox row shares the transaction.
    assert!(store.events_for("u2").await.unwrap().is_empty());
    assert_eq!(store.events_for("u1").await.unwrap(), vec![ev]);
    assert!(store.user_by_id("nope").await.unwrap().is_none());
}
on_every_backend!(
    users_round_trip_and_email_is_unique_on_every_backend,
    users_round_trip_and_email_is_unique
);

async fn users_update_roles_settings_verify_and_erase(store: Store) {
    store
        .create_user(&user("u1", "a@x.org"), &[])
        .await
        .unwrap();
    let patch = UserPatch {
        name: Some("Grace".into()),
        phone: Some(Some("+15550100".into())),
    };
    let updated = store.update_user("u1", &patch, &[]).await.unwrap().unwrap();
    assert_eq!(updated.name, "Grace");
    assert_eq!(updated.phone.as_deref(), Some("+15550100"));
    assert!(
        store
            .update_user("missing", &patch, &[])
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        store
            .set_roles("u1", &["patient".into(), "admin".into()], &[])
            .await
            .unwrap()
    );
    assert_eq!(store.count_with_role("admin").await.unwrap(), 1);
    assert_eq!(store.count_with_role("teacher").await.unwrap(), 0);
    let settings = serde_json::json!({"language": "fr", "notify": {"sms": false}});
    assert!(store.set_settings("u1", &settings, &[]).await.unwrap());
    assert!(store.mark_email_verified("u1").await.unwrap());
    let u = store.user_by_id("u1").await.unwrap().unwrap();
    assert_eq!(u.settings, settings);
    assert!(u.email_verified);
    assert!(u.roles.contains(&"admin".to_string()));

    store
        .insert_refresh(&RefreshRecord {
            token_hash: "h1".into(),
            family_id: "f1".into(),
            user_id: "u1".into(),
            expires_at: i64::MAX,
            created_at: 1,
        })
        .await
        .unwrap();
    let erased = NewEvent::new("nexus.users", "u1", "user.deleted", "{}");
    assert!(store.erase_user("u1", &[erased]).await.unwrap());
    assert!(store.user_by_id("u1").await.unwrap().is_none());
    assert!(!store.erase_user("u1", &[]).await.unwrap());
    let next = RefreshRecord {
        token_hash: "h2".into(),
        family_id: "f1".into(),
        user_id: "u1".into(),
        expires_at: i64::MAX,
        created_at: 2,
    };
    assert_eq!(
        store.rotate_refresh("h1", &next, 5).await.unwrap(),
        RotateOutcome::NotFound
    );
    let types: Vec<String> = store
        .events_for("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, vec!["user.deleted"]);
}
on_every_backend!(
    users_update_roles_settings_verify_and_erase_on_every_backend,
    users_update_roles_settings_verify_and_erase
);

async fn refresh_rotation_detects_reuse(store: Store) {
    store
        .create_user(&user("u1", "a@x.org"), &[])
        .await
        .unwrap();
    let rec = |h: &str, exp: i64| RefreshRecord {
        token_hash: h.into(),
        family_id: "fam".into(),
        user_id: "u1".into(),
        expires_at: exp,
        created_at: 10,
    };
    store.insert_refresh(&rec("t1", 1_000)).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh("t1", &rec("t2", 2_000), 100)
            .await
            .unwrap(),
        RotateOutcome::Rotated {
            user_id: "u1".into()
        }
    );
    // t1 again: reuse → the family, including t2, is revoked.
    assert_eq!(
        store
            .rotate_refresh("t1", &rec("t3", 2_000), 101)
            .await
            .unwrap(),
        RotateOutcome::Reused {
            user_id: "u1".into()
        }
    );
    assert_eq!(
        store
            .rotate_refresh("t2", &rec("t4", 2_000), 102)
            .await
            .unwrap(),
        RotateOutcome::Reused {
            user_id: "u1".into()
        }
    );
    // Expiry.
    let other = RefreshRecord {
        family_id: "fam2".into(),
        ..rec("x1", 50)
    };
    store.insert_refresh(&other).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh("x1", &rec("x2", 100), 60)
            .await
            .unwrap(),
        RotateOutcome::Expired
    );
    // Logout revokes the family.
    let fresh = RefreshRecord {
        family_id: "fam3".into(),
        ..rec("y1", 10_000)
    };
    store.insert_refresh(&fresh).await.unwrap();
    assert_eq!(
        store
            .revoke_refresh_family("y1", 70)
            .await
            .unwrap()
            .as_deref(),
        Some("u1")
    );
    assert!(matches!(
        store
            .rotate_refresh("y1", &rec("y2", 10_000), 71)
            .await
            .unwrap(),
        RotateOutcome::Reused { .. }
    ));
    assert_eq!(
        store.revoke_refresh_family("unknown", 70).await.unwrap(),
        None
    );
}
on_every_backend!(
    refresh_rotation_detects_reuse_on_every_backend,
    refresh_rotation_detects_reuse
);

async fn concurrent_rotation_of_one_token_succeeds_once(store: Store) {
    store
        .create_user(&user("u1", "a@x.org"), &[])
        .await
        .unwrap();
    let base = RefreshRecord {
        token_hash: "t0".into(),
        family_id: "f".into(),
        user_id: "u1".into(),
        expires_at: i64::MAX,
        created_at: 1,
    };
    store.insert_refresh(&base).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let next = RefreshRecord {
            token_hash: format!("n{i}"),
            ..base.clone()
        };
        tasks.push(tokio::spawn(async move {
            store.rotate_refresh("t0", &next, 5).await.unwrap()
        }));
    }
    let mut rotated = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), RotateOutcome::Rotated { .. }) {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1, "exactly one concurrent rotation may win");
}
on_every_backend!(
    concurrent_rotation_of_one_token_succeeds_once_on_every_backend,
    concurrent_rotation_of_one_token_succeeds_once
);

async fn one_time_tokens_are_single_use_and_expire(store: Store) {
    store
        .create_user(&user("u1", "a@x.org"), &[])
        .await
        .unwrap();
    store
        .insert_one_time("v1", "u1", "verify_email", 100)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_one_time("v1", "reset_password", 10)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_one_time("v1", "verify_email", 10)
            .await
            .unwrap()
            .as_deref(),
        Some("u1")
    );
    assert_eq!(
        store
            .consume_one_time("v1", "verify_email", 11)
            .await
            .unwrap(),
        None
    );
    store
        .insert_one_time("v2", "u1", "verify_email", 100)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_one_time("v2", "verify_email", 100)
            .await
            .unwrap(),
        None
    );
}
on_every_backend!(
    one_time_tokens_are_single_use_and_expire_on_every_backend,
    one_time_tokens_are_single_use_and_expire
);

async fn api_keys_by_hash_and_revocation(store: Store) {
    let rec = ApiKeyRecord {
        id: "k1".into(),
        name: "relay".into(),
        scope: "gateway".into(),
        created_at: 5,
    };
    store.insert_api_key(&rec, "hash-1").await.unwrap();
    assert_eq!(
        store.api_key_by_hash("hash-1").await.unwrap(),
        Some(rec.clone())
    );
    assert!(store.api_key_by_hash("hash-2").await.unwrap().is_none());
    assert!(matches!(
        store.insert_api_key(&rec, "hash-9").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.revoke_api_key("k1", 6).await.unwrap());
    assert!(!store.revoke_api_key("k1", 7).await.unwrap());
    assert!(store.api_key_by_hash("hash-1").await.unwrap().is_none());
}
on_every_backend!(
    api_keys_by_hash_and_revocation_on_every_backend,
    api_keys_by_hash_and_revocation
);

async fn outbox_keeps_order_and_tracks_lag(store: Store) {
    let events: Vec<NewEvent> = (0..5)
        .map(|i| {
            NewEvent::new(
                "nexus.system",
                "agg",
                "metric.recorded",
                format!("{{\"i\":{i}}}"),
            )
        })
        .collect();
    store.append_events(&events[..3]).await.unwrap();
    store.append_events(&events[3..]).await.unwrap();
    let (lag, oldest) = store.outbox_lag().await.unwrap();
    assert_eq!(lag, 5);
    assert!(oldest.is_some());
    let pending = store.outbox_pending(3).await.unwrap();
    assert_eq!(
        pending.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        events[..3].to_vec()
    );
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    store
        .outbox_mark_sent(&pending.iter().map(|r| r.seq).collect::<Vec<_>>(), 9)
        .await
        .unwrap();
    let rest = store.outbox_pending(10).await.unwrap();
    assert_eq!(
        rest.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        events[3..].to_vec()
    );
    assert_eq!(store.outbox_lag().await.unwrap().0, 2);
    // An event id is unique.
    assert!(matches!(
        store.append_events(&events[..1]).await,
        Err(StoreError::Conflict(_))
    ));
}
on_every_backend!(
    outbox_keeps_order_and_tracks_lag_on_every_backend,
    outbox_keeps_order_and_tracks_lag
);

async fn audit_log_and_migrations_are_idempotent(store: Store) {
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "second migrate applies nothing"
    );
    store.ping().await.unwrap();
    store
        .audit(
            Some("admin-1"),
            "record.read",
            Some("patient-7"),
            &serde_json::json!({"resource": "Observation"}),
        )
        .await
        .unwrap();
    store
        .audit(
            None,
            "record.write",
            Some("patient-7"),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    let entries = store.audit_for("patient-7").await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].1.as_deref(), Some("admin-1"));
    assert_eq!(entries[1].2, "record.write");
}
on_every_backend!(
    audit_log_and_migrations_are_idempotent_on_every_backend,
    audit_log_and_migrations_are_idempotent
);

#[tokio::test]
async fn unsupported_urls_are_refused_without_leaking_passwords() {
    let err = Store::connect("mysql://root:hunter2@db/x")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unsupported"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

async fn consumers_cursors_processed_ids_and_dead_letters(store: Store) {
    let events: Vec<NewEvent> = (0..3)
        .map(|i| {
            NewEvent::new(
                "nexus.crisis",
                "inc-1",
                "incident.reported",
                format!("{{\"n\":{i}}}"),
            )
        })
        .collect();
    store.append_events(&events).await.unwrap();
    store
        .append_events(&[NewEvent::new("nexus.users", "u1", "user.updated", "{}")])
        .await
        .unwrap();
    assert_eq!(store.consumer_position("c").await.unwrap(), 0);
    assert_eq!(store.outbox_sent_high_water().await.unwrap(), 0);
    let crisis = vec!["nexus.crisis".to_string()];
    let rows = store.outbox_range(0, i64::MAX, &crisis, 10).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| &r.event).collect::<Vec<_>>(),
        events.iter().collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .outbox_range(0, rows[1].seq, &crisis, 10)
            .await
            .unwrap()
            .len(),
        2
    );

    // Handled ids are remembered once; the cursor only moves forward with them.
    assert!(
        store
            .consumer_record("c", &events[0].id, Some(rows[0].seq))
            .await
            .unwrap()
    );
    assert!(
        !store
            .consumer_record("c", &events[0].id, Some(rows[0].seq))
            .await
            .unwrap()
    );
    assert!(
        store
            .consumer_is_processed("c", &events[0].id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .consumer_is_processed("other", &events[0].id)
            .await
            .unwrap()
    );
    assert!(
        store
            .consumer_record("c", &events[1].id, Some(rows[1].seq))
            .await
            .unwrap()
    );
    store
        .consumer_record("c", "late", Some(rows[0].seq))
        .await
        .unwrap();
    assert_eq!(store.consumer_position("c").await.unwrap(), rows[1].seq);
    store.consumer_seek("c", 0).await.unwrap();
    assert_eq!(store.consumer_position("c").await.unwrap(), 0);

    // A dead letter keeps the event and the error, and counts as handled.
    store
        .consumer_dead_letter("c", &events[2], "boom", 3, Some(rows[2].seq))
        .await
        .unwrap();
    let letters = store.dead_letters("c").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event, events[2]);
    assert_eq!(
        (letters[0].error.as_str(), letters[0].attempts),
        ("boom", 3)
    );
    assert!(
        store
            .consumer_is_processed("c", &events[2].id)
            .await
            .unwrap()
    );
    assert_eq!(store.consumer_position("c").await.unwrap(), rows[2].seq);
    assert_eq!(store.consumer_processed_count("c").await.unwrap(), 4);

    let seqs: Vec<i64> = store
        .outbox_pending(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    store.outbox_mark_sent(&seqs[..2], 1).await.unwrap();
    assert_eq!(store.outbox_sent_high_water().await.unwrap(), seqs[1]);
    assert_eq!(store.consumer_prune_processed(i64::MAX).await.unwrap(), 4);
    assert_eq!(store.consumer_processed_count("c").await.unwrap(), 0);
}
on_every_backend!(
    consumers_cursors_processed_ids_and_dead_letters_on_every_backend,
    consumers_cursors_processed_ids_and_dead_letters
);
