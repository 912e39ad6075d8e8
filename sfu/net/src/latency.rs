//! Added forwarding latency inside the SFU, measured by the shard task on the wall clock: from
//! the moment the last datagram of a media frame was read from the socket to the moment each
//! datagram forwarded from it was handed to the kernel. This includes the shard's depacketizing,
//! the copy to every subscriber, packetizing, SRTP, str0m's pacing queue and the wait behind the
//! other datagrams of the same batch.
//!
//! Datagrams are matched by their RTP timestamp, which str0m carries through unchanged (RTP
//! headers are not encrypted by SRTP). Resends and padding on the subscriber's RTX payload types
//! (and padding-only packets) carry old timestamps and are not sampled.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Upper bounds of the histogram buckets, in microseconds (Prometheus `le`); one more bucket
/// counts everything above.
pub const LATENCY_BUCKETS_US: [u64; 22] = [
    10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000,
    25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// How many recent ingress timestamps are remembered per shard.
const REMEMBERED: usize = 4096;
/// How long a destination's RTX payload types are cached (renegotiation may change them).
const RESEND_CACHE: Duration = Duration::from_secs(1);

/// A latency histogram with [`LATENCY_BUCKETS_US`] bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last is the overflow bucket.
    pub counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of all samples, nanoseconds.
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; LATENCY_BUCKETS_US.len() + 1],
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    /// Records one sample.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_ns = self
            .sum_ns
            .saturating_add(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another histogram's samples (summing shards).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Cumulative counts per bound in seconds, ending with `+Inf` (Prometheus buckets).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c;
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            out.push((le, total));
        }
        out
    }
}

/// RTP (not RTCP, RFC 5761), without padding: version 2, payload type outside 64..96.
fn rtp_header(datagram: &[u8]) -> Option<(u8, u32)> {
    let (&b0, &b1) = (datagram.first()?, datagram.get(1)?);
    let is_rtp = (b0 & 0xc0) == 0x80 && !(64..96).contains(&(b1 & 0x7f));
    if !is_rtp || datagram.len() < 12 || b0 & 0x20 != 0 {
        return None;
    }
    let ts = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    Some((b1 & 0x7f, ts))
}

/// The per-shard matcher of ingress and egress datagrams.
#[derive(Debug, Default)]
pub(crate) struct ForwardClock {
    arrivals: HashMap<u32, Instant>,
    order: VecDeque<u32>,
    resend: HashMap<SocketAddr, (u128, Instant)>,
    pub(crate) histogram: LatencyHistogram,
}

impl ForwardClock {
    /// Notes a datagram read at `at`.
    pub(crate) fn ingress(&mut self, datagram: &[u8], at: Instant) {
        let Some((_, ts)) = rtp_header(datagram) else {
            return;
        };
        if self.arrivals.insert(ts, at).is_none() {
            self.order.push_back(ts);
            if self.order.len() > REMEMBERED
                && let Some(old) = self.order.pop_front()
            {
                self.arrivals.remove(&old);
            }
        }
    }

    /// Notes a datagram sent to `destination` at `at`; `resend_pts` looks up the destination's
    /// RTX payload types when they are not cached.
    pub(crate) fn egress(
        &mut self,
        datagram: &[u8],
        destination: SocketAddr,
        at: Instant,
        resend_pts: impl FnOnce() -> u128,
    ) {
        let Some((pt, ts)) = rtp_header(datagram) else {
            return;
        };
        let Some(&arrived) = self.arrivals.get(&ts) else {
            return;
        };
        let mask = match self.resend.get(&destination) {
            Some(&(mask, since)) if at.saturating_duration_since(since) < RESEND_CACHE => mask,
            _ => {
                let mask = resend_pts();
                if self.resend.len() > 4 * REMEMBERED {
                    self.resend.clear();
                }
                self.resend.insert(destination, (mask, at));
                mask
            }
        };
        if mask & (1u128 << pt) != 0 {
            return;
        }
        self.histogram.record(at.saturating_duration_since(arrived));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, ts: u32) -> Vec<u8> {
        let mut d = vec![0x80, pt, 0, 1];
        d.extend_from_slice(&ts.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 9]);
        d.extend_from_slice(&[0xaa; 100]);
        d
    }

    #[test]
    fn a_forwarded_datagram_is_timed_from_the_last_arrival_of_its_frame() {
        let t0 = Instant::now();
        let sub: SocketAddr = "10.0.0.2:5000".parse().unwrap_or_else(|_| unreachable!());
        let mut clock = ForwardClock::default();
        clock.ingress(&rtp(96, 3000), t0);
        clock.ingress(&rtp(96, 3000), t0 + Duration::from_micros(100));
        clock.egress(&rtp(100, 3000), sub, t0 + Duration::from_micros(400), || 0);
        assert_eq!(clock.histogram.count(), 1);
        // 300 µs falls in the (200, 300] bucket.
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| b == 300)
            .unwrap_or(0);
        assert_eq!(clock.histogram.counts[i], 1);
    }

    #[test]
    fn resends_rtcp_and_unknown_timestamps_are_not_sampled() {
        let t0 = Instant::now();
        let sub: SocketAddr = "10.0.0.2:5000".parse().unwrap_or_else(|_| unreachable!());
        let mut clock = ForwardClock::default();
        clock.ingress(&rtp(96, 3000), t0);
        // RTX payload type 97 toward this subscriber.
        clock.egress(&rtp(97, 3000), sub, t0, || 1u128 << 97);
        // An RTCP sender report (PT 200 → second byte 200).
        let mut sr = rtp(0, 3000);
        sr[1] = 200;
        clock.egress(&sr, sub, t0, || 0);
        // A timestamp never received.
        clock.egress(&rtp(96, 9999), sub, t0, || 0);
        assert_eq!(clock.histogram.count(), 0);
    }

    #[test]
    fn buckets_are_cumulative_and_end_with_inf() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(5));
        h.record(Duration::from_secs(5));
        let c = h.cumulative();
        assert_eq!(c[0], (10e-6, 1));
        assert_eq!(c.last().copied(), Some((f64::INFINITY, 2)));
    }
}
