//! Shared helpers of the Kafka tests: broker discovery (skip or fail when missing), a
//! private tansu broker for outage tests, unique topic prefixes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use nexus_kafka::{KafkaBus, KafkaSettings};
use nexus_store::Store;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether missing engines must fail tests instead of skipping them.
pub fn engines_required() -> bool {
    std::env::var("NEXUS_TEST_REQUIRE_ENGINES").is_ok_and(|v| v == "1")
}

/// The shared test broker, or `None` (after printing why) when it is not configured.
pub fn brokers() -> Option<String> {
    match std::env::var("NEXUS_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                !engines_required(),
                "NEXUS_TEST_KAFKA_BROKERS is unset but NEXUS_TEST_REQUIRE_ENGINES=1"
            );
            eprintln!(
                "note: NEXUS_TEST_KAFKA_BROKERS unset; skipping this Kafka test (run `eval \"$(scripts/services.sh env)\"`)"
            );
            None
        }
    }
}

/// Settings for a test: a unique topic prefix and a short session timeout.
pub fn settings(brokers: &str) -> KafkaSettings {
    let mut s = KafkaSettings::new(brokers).with_prefix(format!(
        "t{}.",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    s.session_timeout = Duration::from_secs(2);
    s.message_timeout = Duration::from_secs(5);
    s
}

/// A bus for a test.
pub fn bus(store: &Store, settings: KafkaSettings) -> KafkaBus {
    KafkaBus::new(settings, store.clone()).unwrap()
}

/// The tansu binary (from `NEXUS_TEST_TANSU_BIN`, which `scripts/services.sh env` prints), or
/// `None` after printing why.
pub fn tansu_bin() -> Option<String> {
    match std::env::var("NEXUS_TEST_TANSU_BIN") {
        Ok(b) if std::path::Path::new(&b).is_file() => Some(b),
        _ => {
            assert!(
                !engines_required(),
                "NEXUS_TEST_TANSU_BIN is unset but NEXUS_TEST_REQUIRE_ENGINES=1"
            );
            eprintln!(
                "note: NEXUS_TEST_TANSU_BIN unset; skipping this outage test (run `eval \"$(scripts/services.sh env)\"`)"
            );
            None
        }
    }
}

/// A private tansu broker (memory storage) on its own port, killed on drop.
pub struct Tansu {
    bin: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Option<Child>,
}

impl Tansu {
    /// Starts tansu on a free port and waits until it accepts connections.
    pub fn start(bin: &str) -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut t = Tansu {
            bin: bin.to_string(),
            addr: format!("127.0.0.1:{port}"),
            child: None,
        };
        t.restart();
        t
    }

    /// Stops the broker (SIGKILL: it loses everything, like any restart of it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://{}", self.addr);
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "nexus-outage-test",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}
