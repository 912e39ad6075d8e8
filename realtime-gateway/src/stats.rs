//! Counters the server exports to Prometheus: plain atomics, updated without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Times a connection's outgoing queue (or its subscribe buffer) was full when a message
    /// came; each closes that connection with 3008.
    pub queue_overflows: AtomicU64,
    /// Time from a publish call to the socket write of the frame that carries the
    /// publication, per delivered publication.
    pub publish_write: LatencyHistogram,
    disconnects: [AtomicU64; COUNTED_DISCONNECT_CODES.len() + 1],
}

/// Upper bounds, in microseconds, of the buckets of [`Stats::publish_write`] (a last bucket
/// takes everything above).
/// Finer around 100 ms, the fan-out target (issue 5), so that a p99 read from a scrape says
/// on which side of it the server is.
pub const PUBLISH_WRITE_BUCKETS_MICROS: [u64; 17] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets ([`PUBLISH_WRITE_BUCKETS_MICROS`]), updated with
/// relaxed atomics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; PUBLISH_WRITE_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// `(upper bound in microseconds, observations at or below it)`, cumulative, in
    /// increasing order; the `+Inf` bucket is [`HistogramSnapshot::count`].
    pub buckets: Vec<(u64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe_micros(&self, micros: u64) {
        let i = PUBLISH_WRITE_BUCKETS_MICROS.partition_point(|&b| b < micros);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Reads the buckets (each read is atomic; the whole is not, which scrapes tolerate).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(PUBLISH_WRITE_BUCKETS_MICROS.len());
        for (bound, n) in PUBLISH_WRITE_BUCKETS_MICROS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.buckets[PUBLISH_WRITE_BUCKETS_MICROS.len()].load(Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

/// Deliveries counted locally by one writer of many frames (a hub sweep) and added to the
/// shared [`Stats`] once per batch: per-delivery updates of the shared counters bounced their
/// cache lines between the cores on every write.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    frames: u64,
    buckets: [u64; PUBLISH_WRITE_BUCKETS_MICROS.len() + 1],
    sum_micros: u64,
}

impl Tally {
    /// One frame written at `now_us` carrying publications published at `stamps`.
    pub(crate) fn written(&mut self, stamps: &crate::outbox::Stamps, now_us: u64) {
        self.frames += 1;
        stamps.for_each(|t| {
            let micros = now_us.saturating_sub(t);
            let i = PUBLISH_WRITE_BUCKETS_MICROS.partition_point(|&b| b < micros);
            self.buckets[i] += 1;
            self.sum_micros += micros;
        });
    }

    /// Adds what was counted to `stats` and starts again from zero.
    pub(crate) fn flush(&mut self, stats: &Stats) {
        if self.frames == 0 {
            return;
        }
        stats.frames_written.fetch_add(self.frames, Relaxed);
        let h = &stats.publish_write;
        for (shared, n) in h.buckets.iter().zip(&self.buckets) {
            if *n > 0 {
                shared.fetch_add(*n, Relaxed);
            }
        }
        h.sum_micros.fetch_add(self.sum_micros, Relaxed);
        *self = Tally::default();
    }
}

/// Wall-clock time in microseconds since the Unix epoch: publications carry it from the
/// publishing node to every node's writers, so it must be comparable across processes.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
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
    /// See [`Stats::queue_overflows`].
    pub queue_overflows: u64,
    /// See [`Stats::publish_write`].
    pub publish_write: HistogramSnapshot,
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
            queue_overflows: self.queue_overflows.load(Relaxed),
            publish_write: self.publish_write.snapshot(),
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

    #[test]
    fn latencies_fall_into_cumulative_buckets() {
        let h = LatencyHistogram::default();
        h.observe_micros(100);
        h.observe_micros(250);
        h.observe_micros(3_000);
        h.observe_micros(60_000_000);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_micros, 60_003_350);
        assert_eq!(s.buckets[0], (250, 2), "bounds are inclusive");
        assert_eq!(s.buckets[3], (2_500, 2));
        assert_eq!(s.buckets[4], (5_000, 3));
        assert_eq!(
            s.buckets.last(),
            Some(&(10_000_000, 3)),
            "+Inf holds the rest"
        );
    }
}
