//! Counters the server exports to Prometheus: plain atomics, updated without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Disconnect codes counted one by one; others are counted together.
pub const COUNTED_DISCONNECT_CODES: [u16; 14] = [
    3000, 3001, 3004, 3005, 3008, 3009, 3010, 3011, 3012, 3500, 3501, 3502, 3503, 3504,
];

/// Live counters of one gateway node.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now (connected or connecting).
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Subscriptions (connection × channel) live now.
    pub subscriptions: AtomicU64,
    /// Messages (replies and pushes) enqueued to clients.
    pub messages_sent: AtomicU64,
    /// WebSocket frames written to clients (several messages coalesce into one frame).
    pub frames_written: AtomicU64,
    /// Commands received from clients.
    pub messages_received: AtomicU64,
    /// Publications accepted (API, in-process and clients).
    pub publications: AtomicU64,
    /// Publications delivered to this node's hub (local and from other nodes).
    pub publications_delivered: AtomicU64,
    /// Connections closed because their outgoing queue overflowed (3008).
    pub slow_disconnects: AtomicU64,
    disconnects: [AtomicU64; COUNTED_DISCONNECT_CODES.len() + 1],
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// See [`Stats::connections`].
    pub connections: u64,
    /// See [`Stats::connections_total`].
    pub connections_total: u64,
    /// See [`Stats::subscriptions`].
    pub subscriptions: u64,
    /// See [`Stats::messages_sent`].
    pub messages_sent: u64,
    /// See [`Stats::frames_written`].
    pub frames_written: u64,
    /// See [`Stats::messages_received`].
    pub messages_received: u64,
    /// See [`Stats::publications`].
    pub publications: u64,
    /// See [`Stats::publications_delivered`].
    pub publications_delivered: u64,
    /// See [`Stats::slow_disconnects`].
    pub slow_disconnects: u64,
    /// Disconnects by close code (`0` = any other code).
    pub disconnects: Vec<(u16, u64)>,
}

impl Stats {
    /// Counts a closed connection by its close code.
    pub fn record_disconnect(&self, code: u16) {
        let i = COUNTED_DISCONNECT_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(COUNTED_DISCONNECT_CODES.len());
        self.disconnects[i].fetch_add(1, Relaxed);
        if code == 3008 {
            self.slow_disconnects.fetch_add(1, Relaxed);
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let disconnects = COUNTED_DISCONNECT_CODES
            .iter()
            .copied()
            .chain([0])
            .zip(&self.disconnects)
            .map(|(c, n)| (c, n.load(Relaxed)))
            .collect();
        StatsSnapshot {
            connections: self.connections.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            frames_written: self.frames_written.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            publications: self.publications.load(Relaxed),
            publications_delivered: self.publications_delivered.load(Relaxed),
            slow_disconnects: self.slow_disconnects.load(Relaxed),
            disconnects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnects_are_counted_by_code() {
        let s = Stats::default();
        s.record_disconnect(3008);
        s.record_disconnect(4321);
        let snap = s.snapshot();
        assert_eq!(snap.slow_disconnects, 1);
        assert!(snap.disconnects.contains(&(3008, 1)));
        assert!(snap.disconnects.contains(&(0, 1)));
    }
}
