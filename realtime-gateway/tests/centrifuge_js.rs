//! The real client: npm `centrifuge` (centrifuge-js) under Node drives the gateway.
//!
//! Needs `node` and `tests-e2e/node_modules/centrifuge` (`npm ci` in `tests-e2e/`). Skips
//! with a note when either is missing, and fails instead when `NEXUS_TEST_REQUIRE_ENGINES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config, start};
use nexus_auth::Claims;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests-e2e")
}

fn required() -> bool {
    std::env::var("NEXUS_TEST_REQUIRE_ENGINES").is_ok_and(|v| v == "1")
}

/// `Some(extra node flags)` when node and the package are usable.
fn node_available() -> Option<Vec<&'static str>> {
    let pkg = e2e_dir().join("node_modules/centrifuge/package.json");
    let has_ws = |flags: &[&str]| {
        std::process::Command::new("node")
            .args(flags)
            .args([
                "-e",
                "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let why = if !pkg.exists() {
        format!("{} missing (run `npm ci` in tests-e2e)", pkg.display())
    } else if has_ws(&[]) {
        return Some(vec![]);
    } else if has_ws(&["--experimental-websocket"]) {
        return Some(vec!["--experimental-websocket"]);
    } else {
        "node with a WebSocket global not found".to_owned()
    };
    assert!(!required(), "centrifuge-js test required but {why}");
    eprintln!("note: skipping the centrifuge-js test: {why}");
    None
}

async fn event(lines: &mut Lines<BufReader<ChildStdout>>, name: &str) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for `{name}`"))
            .unwrap()
            .unwrap_or_else(|| panic!("node exited before `{name}`"));
        let v: Value =
            serde_json::from_str(&line).unwrap_or(json!({ "event": "log", "line": line }));
        eprintln!("node: {v}");
        if v["event"] == name {
            return v;
        }
        assert!(
            !["timeout", "error", "sub_error", "disconnected"]
                .contains(&v["event"].as_str().unwrap_or("")),
            "unexpected {v} while waiting for `{name}`"
        );
    }
}

#[tokio::test]
async fn centrifuge_js_subscribes_with_a_bbox_receives_and_recovers() {
    let Some(flags) = node_available() else {
        return;
    };
    let srv = start(config()).await;
    let token = srv
        .keys
        .mint(&Claims::new("js-user", 600).with_channels(vec!["class:1".into()]))
        .unwrap();
    let mut child = Command::new("node")
        .args(&flags)
        .arg(e2e_dir().join("gateway/centrifuge_client.mjs"))
        .arg(format!("ws://{}/connection/websocket", srv.addr))
        .arg(&token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    event(&mut lines, "connected").await;
    let sub = event(&mut lines, "subscribed").await;
    assert_eq!(
        (sub["recoverable"].as_bool(), sub["wasRecovering"].as_bool()),
        (Some(true), Some(false))
    );

    let at = |lon: f64, lat: f64, n: u32| json!({"n": n, "location": {"lat": lat, "lon": lon}});
    for data in [
        at(2.35, 48.85, 1),
        at(13.4, 52.5, 2),
        json!({"n": 3}),
        at(2.5, 48.5, 4),
    ] {
        srv.api("publish", json!({"channel": "incidents", "data": data}))
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(event(&mut lines, "publication").await["data"]["n"].clone());
    }
    assert_eq!(
        got,
        [1, 3, 4],
        "the publication outside the bbox is filtered out"
    );

    stdin.write_all(b"presence\n").await.unwrap();
    assert_eq!(event(&mut lines, "presence").await["clients"], 1);
    let h = event(&mut lines, "history").await;
    assert_eq!(
        (h["count"].as_u64(), h["offset"].as_u64()),
        (Some(4), Some(4))
    );

    // Forced reconnect: the server closes the connection with a reconnect code; what is
    // published meanwhile is recovered on resubscribe.
    srv.api(
        "disconnect",
        json!({"user": "js-user", "disconnect": {"code": 3011, "reason": "force reconnect"}}),
    )
    .await;
    event(&mut lines, "connecting").await;
    for n in [5, 6] {
        srv.api(
            "publish",
            json!({"channel": "incidents", "data": at(2.2, 48.2, n)}),
        )
        .await;
    }
    event(&mut lines, "connected").await;
    let sub = event(&mut lines, "subscribed").await;
    assert_eq!(
        (sub["wasRecovering"].as_bool(), sub["recovered"].as_bool()),
        (Some(true), Some(true)),
        "{sub}"
    );
    let p5 = event(&mut lines, "publication").await;
    let p6 = event(&mut lines, "publication").await;
    assert_eq!(
        (p5["data"]["n"].as_u64(), p5["offset"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(
        (p6["data"]["n"].as_u64(), p6["offset"].as_u64()),
        (Some(6), Some(6))
    );

    stdin.write_all(b"done\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "node exited with {status}");
}
