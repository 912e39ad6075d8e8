//! The SFU end to end with a real browser: the `nexus` binary and headless Chromium (fake
//! camera and microphone, driven by `tests-e2e/rtc/webrtc.mjs` through playwright-core) run
//! inside a private network namespace with a veth pair (10.77.0.1/24, 10.77.0.2/24), because
//! Chromium gathers no ICE candidates on loopback alone.
//!
//! One page publishes over WHIP, two pages subscribe over WHEP (one to everyone, one to the
//! publisher by id) and must decode more than 30 video frames and receive audio; then a doctor
//! and a patient join a consultation over `/rtc`, the doctor admits the patient from the waiting
//! room, and each decodes the other's video.
//!
//! Needs root, `unshare`, `ip`, Debian's `chromium`, Node.js and `tests-e2e/node_modules`
//! (`scripts/install-chromium.sh`). Without them the test prints a note and passes, unless
//! `NEXUS_TEST_REQUIRE_ENGINES=1`, when it fails.

#![allow(clippy::unwrap_used)]

mod common;

use common::{JWT_SECRET, Server};
use nexus_auth::{Claims, Grant, RoomKind, TokenKeys};
use std::path::PathBuf;
use std::process::Command;

/// Set in the re-executed test process that runs inside the namespace.
const INNER: &str = "NEXUS_WEBRTC_TEST_INNER";
const TEST: &str = "browser_publishes_over_whip_and_subscribers_decode_over_whep";

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests-e2e")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (prints why) or, with `NEXUS_TEST_REQUIRE_ENGINES=1`, fails.
fn skip(why: &str) {
    if std::env::var("NEXUS_TEST_REQUIRE_ENGINES").as_deref() == Ok("1") {
        panic!("webrtc browser test cannot run: {why}");
    }
    eprintln!(
        "SKIPPED webrtc browser test: {why} (set NEXUS_TEST_REQUIRE_ENGINES=1 to fail instead)"
    );
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn browser_publishes_over_whip_and_subscribers_decode_over_whep() {
    if std::env::var_os(INNER).is_some() {
        return inside_namespace();
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        return skip("not root (network namespaces need it)");
    }
    for cmd in ["unshare", "ip", "chromium", "node"] {
        if !have(cmd) {
            return skip(&format!("`{cmd}` is missing (scripts/install-chromium.sh)"));
        }
    }
    if !e2e_dir().join("node_modules/playwright-core").exists() {
        return skip("tests-e2e/node_modules is missing (scripts/install-chromium.sh)");
    }
    // Re-run this very test inside a fresh network namespace.
    let exe = std::env::current_exe().unwrap();
    let probe = Command::new("unshare").args(["-n", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip("`unshare -n` is not permitted here");
    }
    let status = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the browser test failed inside its namespace"
    );
}

fn inside_namespace() {
    run("ip", &["link", "set", "lo", "up"]);
    run(
        "ip",
        &["link", "add", "nx0", "type", "veth", "peer", "name", "nx1"],
    );
    run("ip", &["addr", "add", "10.77.0.1/24", "dev", "nx0"]);
    run("ip", &["addr", "add", "10.77.0.2/24", "dev", "nx1"]);
    run("ip", &["link", "set", "nx0", "up"]);
    run("ip", &["link", "set", "nx1", "up"]);

    let server = Server::start(&[
        ("NEXUS_HTTP_ADDR", "10.77.0.1:0"),
        ("NEXUS_SFU_UDP_ADDR", "10.77.0.1:0"),
        ("NEXUS_SFU_SHARDS", "2"),
    ]);
    let keys = TokenKeys::new(JWT_SECRET.as_bytes(), &[]);
    let token = |sub: &str, room: &str, kind: RoomKind, grants: Vec<Grant>| {
        keys.mint(&Claims::new(sub, 600).with_room(room, kind, grants))
            .unwrap()
    };
    let out = Command::new("node")
        .arg(e2e_dir().join("rtc/webrtc.mjs"))
        .current_dir(e2e_dir())
        .env("NEXUS_BASE", &server.base)
        .env("ROOM", "class-e2e")
        .env(
            "PUB_TOKEN",
            token(
                "teacher",
                "class-e2e",
                RoomKind::Class,
                vec![Grant::Publish],
            ),
        )
        .env(
            "SUB_TOKEN",
            token(
                "student",
                "class-e2e",
                RoomKind::Class,
                vec![Grant::Subscribe],
            ),
        )
        .env(
            "CONSULT_TOKEN_A",
            token(
                "doctor",
                "consult-e2e",
                RoomKind::Consultation,
                vec![Grant::Publish, Grant::Subscribe, Grant::Admin],
            ),
        )
        .env(
            "CONSULT_TOKEN_B",
            token(
                "patient",
                "consult-e2e",
                RoomKind::Consultation,
                vec![Grant::Publish, Grant::Subscribe],
            ),
        )
        .env("CLASS_ROOM", "class-page")
        .env(
            "CLASS_TEACHER_TOKEN",
            token(
                "teacher",
                "class-page",
                RoomKind::Class,
                vec![Grant::Publish, Grant::Subscribe, Grant::Admin],
            ),
        )
        .env(
            "CLASS_STUDENT_TOKEN",
            token(
                "student",
                "class-page",
                RoomKind::Class,
                vec![Grant::Subscribe],
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!("browser figures: {stdout}");
    let line = stdout.lines().last().unwrap_or("{}");
    let figures: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    assert!(
        out.status.success() && figures["ok"] == true,
        "browser test failed: {stdout}\nserver log:\n{}",
        server.logs()
    );
    for sub in figures["subscribers"].as_array().unwrap() {
        assert!(sub["framesDecoded"].as_u64().unwrap() > 30, "{sub}");
        assert!(sub["audioPackets"].as_u64().unwrap() > 0, "{sub}");
    }
}
