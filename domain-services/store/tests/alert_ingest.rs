//! What the CAP feed ingester remembers across restarts, on SQLite and PostgreSQL: the
//! feed's validators, the entries handled, and one record per CAP identifier/sender/sent.

#![allow(clippy::unwrap_used)]

use nexus_store::testing::{fresh_postgres_store, sqlite_store};
use nexus_store::{FeedState, IngestOutcome, IngestRecord, Store};

async fn feed_state_entries_and_the_unique_triple(store: Store) {
    let url = "https://hub.example.org/feed.atom";
    assert_eq!(store.feed_state(url).await.unwrap(), None);
    let mut state = FeedState {
        url: url.into(),
        etag: Some("\"v1\"".into()),
        last_modified: Some("Thu, 26 Nov 2026 08:00:00 GMT".into()),
        polled_at: Some(1),
        last_error: None,
    };
    store.save_feed_state(&state).await.unwrap();
    state.etag = Some("\"v2\"".into());
    state.last_error = Some("HTTP status 503".into());
    store.save_feed_state(&state).await.unwrap();
    assert_eq!(store.feed_state(url).await.unwrap(), Some(state));

    assert!(!store.ingest_entry_seen(url, "urn:e1", "t1").await.unwrap());
    store
        .mark_ingest_entry(url, "urn:e1", "t1", 5)
        .await
        .unwrap();
    store
        .mark_ingest_entry(url, "urn:e1", "t1", 6)
        .await
        .unwrap();
    assert!(store.ingest_entry_seen(url, "urn:e1", "t1").await.unwrap());
    // A changed `updated` is a new entry.
    assert!(!store.ingest_entry_seen(url, "urn:e1", "t2").await.unwrap());

    let rec = |id: &str, triple: Option<(&str, &str, i64)>, outcome| IngestRecord {
        id: id.into(),
        feed_url: url.into(),
        entry_id: format!("urn:{id}"),
        cap_url: Some(format!("https://hub.example.org/{id}.xml")),
        identifier: triple.map(|t| t.0.to_string()),
        sender: triple.map(|t| t.1.to_string()),
        sent_at: triple.map(|t| t.2),
        outcome,
        alert_id: None,
        detail: None,
        cap_xml: Some("<alert/>".into()),
        created_at: 10,
    };
    let first = rec(
        "r1",
        Some(("A-1", "hub@example.org", 100)),
        IngestOutcome::Ignored,
    );
    assert!(store.record_ingest(&first).await.unwrap());
    // The same alert again, from another entry: refused, the first record stays.
    assert!(
        !store
            .record_ingest(&rec(
                "r2",
                Some(("A-1", "hub@example.org", 100)),
                IngestOutcome::Issued
            ))
            .await
            .unwrap()
    );
    // Unreadable documents have no triple; they never collide.
    assert!(
        store
            .record_ingest(&rec("r3", None, IngestOutcome::Rejected))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_ingest(&rec("r4", None, IngestOutcome::Rejected))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .ingest_by_triple("A-1", "hub@example.org", 100)
            .await
            .unwrap(),
        Some(first)
    );
    assert_eq!(
        store
            .ingest_by_triple("A-1", "hub@example.org", 101)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.ingest_records(10).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_state_entries_and_the_unique_triple_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    feed_state_entries_and_the_unique_triple(sqlite_store(dir.path()).await).await;
    if let Some(pg) = fresh_postgres_store().await {
        feed_state_entries_and_the_unique_triple(pg).await;
    }
}
