//! Added forwarding latency inside the SFU, measured by the shard task on the wall clock: from
//! the moment a publisher's media datagram was read from the socket to the moment each datagram
//! forwarded from it was handed to the kernel. This includes the shard's routing, the rewrite
//! and SRTP for every subscriber, str0m's pacing queue and the wait behind the other datagrams
//! of the same batch.
//!
//! The core remembers when it received each packet it forwards, by the outgoing SSRC and
//! sequence number (`Shard::take_arrival`); the task reads both from the sent datagram's RTP
//! header (not encrypted by SRTP). Resends and padding go out on the RTX SSRC and are not
//! sampled, nor is RTCP.

use std::time::Duration;

/// Upper bounds of the histogram buckets, in microseconds (Prometheus `le`); one more bucket
/// counts everything above.
pub const LATENCY_BUCKETS_US: [u64; 22] = [
    10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000,
    25_000, 50_000, 100_000, 250_000, 1_000_000,
];

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

/// The SSRC and sequence number of an RTP datagram (not RTCP, RFC 5761).
pub(crate) fn rtp_id(datagram: &[u8]) -> Option<(u32, u16)> {
    let header = datagram.get(..12)?;
    let is_rtp = (header[0] & 0xc0) == 0x80 && !(64..96).contains(&(header[1] & 0x7f));
    if !is_rtp {
        return None;
    }
    let seq = u16::from_be_bytes([header[2], header[3]]);
    let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    Some((ssrc, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
        let mut d = vec![0x80, pt];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&3000u32.to_be_bytes());
        d.extend_from_slice(&ssrc.to_be_bytes());
        d.extend_from_slice(&[0xaa; 100]);
        d
    }

    #[test]
    fn rtp_datagrams_are_identified_by_ssrc_and_sequence_number() {
        assert_eq!(rtp_id(&rtp(96, 7, 0xdead_beef)), Some((0xdead_beef, 7)));
        // With the marker bit set.
        assert_eq!(rtp_id(&rtp(96 | 0x80, 8, 1)), Some((1, 8)));
    }

    #[test]
    fn rtcp_stun_and_short_datagrams_are_not_rtp() {
        // An RTCP sender report (PT 200 → second byte 200).
        assert_eq!(rtp_id(&rtp(200, 1, 1)), None);
        // A STUN binding request starts with 0x00 0x01.
        let mut stun = rtp(0, 1, 1);
        stun[0] = 0x00;
        assert_eq!(rtp_id(&stun), None);
        assert_eq!(rtp_id(&[0x80, 96, 0, 1]), None);
    }

    #[test]
    fn a_latency_falls_in_its_bucket() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(300));
        // 300 µs falls in the (200, 300] bucket.
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| b == 300)
            .unwrap_or(0);
        assert_eq!(h.counts[i], 1);
        assert_eq!(h.count(), 1);
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
