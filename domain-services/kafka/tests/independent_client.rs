//! What nexus publishes, read by an independent Kafka client (PyPI's confluent-kafka, via
//! `scripts/check-cloudevents.py`): keys and `ce_` headers per the CloudEvents Kafka binding.

#![allow(clippy::unwrap_used)]

mod common;

use nexus_events::testing::Running;
use nexus_events::{CloudEvent, EventBus, EventType, record};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A python with confluent-kafka, or `None` after printing why.
fn python() -> Option<String> {
    let candidates = [
        std::env::var("NEXUS_TEST_PYTHON").ok(),
        Some("python3".to_string()),
    ];
    for py in candidates.into_iter().flatten() {
        let ok = std::process::Command::new(&py)
            .args(["-c", "import confluent_kafka"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    assert!(
        !common::engines_required(),
        "no python with confluent-kafka (NEXUS_TEST_PYTHON) but NEXUS_TEST_REQUIRE_ENGINES=1"
    );
    eprintln!(
        "note: no python with confluent-kafka; skipping (run `scripts/services.sh kafka-smoke` once, then `eval \"$(scripts/services.sh env)\"`)"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_reads_binary_mode_cloudevents() {
    let Some(brokers) = common::brokers() else {
        return;
    };
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = nexus_store::testing::sqlite_store(dir.path()).await;
    let settings = common::settings(&brokers);
    let topic = settings.topics.physical("nexus.crisis");
    let bus: Arc<dyn EventBus> = Arc::new(common::bus(&store, settings));
    let relay = Running::relay(&store, bus.clone());
    let events: Vec<_> = (0..3)
        .map(|n| {
            record(
                EventType::IncidentReported,
                "inc-42",
                json!({ "id": "inc-42", "n": n }),
            )
            .unwrap()
        })
        .collect();
    store.append_events(&events).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.outbox_lag().await.unwrap().0 > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not publish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop().await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/check-cloudevents.py"
    );
    let args = [
        script.to_string(),
        brokers.clone(),
        topic.clone(),
        "3".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&py)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got.len(), 3);
    for (msg, row) in got.iter().zip(&events) {
        let ce = CloudEvent::from_json(row.payload.as_bytes()).unwrap();
        assert_eq!(msg["key"], "inc-42");
        let h = &msg["headers"];
        assert_eq!(h["ce_id"], ce.id.as_str());
        assert_eq!(h["ce_source"], "/nexus/crisis");
        assert_eq!(h["ce_type"], "incident.reported");
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_subject"], "inc-42");
        assert_eq!(h["ce_time"], ce.time.clone().unwrap().as_str());
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(msg["value"], ce.data);
    }
}
