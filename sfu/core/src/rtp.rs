//! Forwarding RTP packets rather than frames: which packet starts a keyframe (so that a
//! subscriber changes simulcast layer only there), and the per-subscriber rewriting of sequence
//! numbers and timestamps that makes the packets of several sources (simulcast layers, or the
//! next publisher bound to a WHEP slot) one continuous stream for the subscriber. Pure: no
//! str0m state, `now` passed in.
//!
//! This is what mediasoup and LiveKit do: packets are forwarded as they arrive, with no frame
//! assembly and no depacketize/repacketize. str0m still does SRTP, RTCP, NACK/RTX from its send
//! buffer, TWCC and bandwidth estimation for every subscriber.

use std::time::Instant;
use str0m::format::Codec;
use str0m::rtp::Vp8Descriptor;

/// Whether an RTP payload of `codec` is the first packet of a keyframe.
///
/// `first_of_frame` says that no earlier packet with this RTP timestamp was seen on the same
/// source (H264 needs it: its parameter sets and IDR slices may span several packets, and the
/// switch must happen at the first of them).
///
/// - VP8 (RFC 7741): start of partition 0 (`S=1`, `PID=0`) whose VP8 header has `P=0`.
/// - H264 (RFC 6184): a sequence parameter set (NAL 7) or an IDR slice (NAL 5), alone, in a
///   STAP-A, or at the start of an FU-A.
/// - VP9 (RFC 9628 draft): beginning of a frame (`B=1`) that is not inter-predicted (`P=0`).
/// - Other codecs: never (a subscriber of them does not change layers).
pub fn starts_keyframe(codec: Codec, payload: &[u8], first_of_frame: bool) -> bool {
    match codec {
        Codec::Vp8 => Vp8Descriptor::parse(payload).is_ok_and(|d| d.starts_keyframe(payload)),
        Codec::H264 => first_of_frame && h264_has_keyframe_nal(payload),
        Codec::Vp9 => payload
            .first()
            .is_some_and(|b| b & 0x08 != 0 && b & 0x40 == 0),
        _ => false,
    }
}

/// NAL unit types that open a decodable H264 access unit: SPS and IDR slice.
fn is_keyframe_nal(nal_header: u8) -> bool {
    matches!(nal_header & 0x1f, 5 | 7)
}

fn h264_has_keyframe_nal(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        1..=23 => is_keyframe_nal(first),
        // STAP-A: 16-bit sizes, each followed by a NAL unit.
        24 => {
            let mut at = 1;
            while let Some(size) = payload.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                let Some(&nal) = payload.get(at + 2).filter(|_| size > 0) else {
                    return false;
                };
                if is_keyframe_nal(nal) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        // FU-A: only the start fragment names the NAL type.
        28 => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && is_keyframe_nal(fu)),
        _ => false,
    }
}

/// Where a subscriber's packets come from: a published track and its simulcast layer (an
/// index the caller chooses; `None` without simulcast).
pub type Source = (u64, Option<u8>);

/// The rewriting state of one subscriber's outgoing stream (one m-line).
///
/// Sequence numbers are str0m's extended (64-bit) ones. The first source starts the outgoing
/// sequence at its own 16-bit value and keeps its timestamps; each later source is re-anchored
/// so that its first packet follows the last one sent (sequence + 1), and its timestamps
/// continue from the last sent one by the wall-clock time elapsed (unless the new source's own
/// timestamps already follow on, as simulcast layers with a common timestamp base do).
#[derive(Debug, Clone, Default)]
pub struct Rewriter {
    source: Option<Source>,
    /// Added (wrapping) to incoming sequence numbers.
    seq_offset: u64,
    /// Added (wrapping) to incoming timestamps.
    ts_offset: u32,
    /// The first incoming sequence number of the current source; older ones are dropped.
    first_seq: u64,
    /// The highest outgoing sequence number sent, its timestamp, and when.
    last: Option<(u64, u32, Instant)>,
}

/// The longest timestamp step (in seconds of media) kept when changing source without
/// re-anchoring; beyond it the new source's timestamps are taken to have another base.
const MAX_KEPT_STEP_SECS: u32 = 5;

impl Rewriter {
    /// The current source, if any packet was forwarded.
    pub fn source(&self) -> Option<Source> {
        self.source
    }

    /// Maps an incoming packet (extended sequence number, RTP timestamp) of `source` received at
    /// `now` to the outgoing sequence number and timestamp. A packet of another source than the
    /// current one re-anchors the stream on it (the caller switches only at keyframes). `None`
    /// for a packet older than the current source's first one (a late retransmission from
    /// before a switch).
    pub fn map(
        &mut self,
        source: Source,
        seq: u64,
        ts: u32,
        clock_rate: u32,
        now: Instant,
    ) -> Option<(u64, u32)> {
        if self.source != Some(source) {
            self.anchor(source, seq, ts, clock_rate, now);
        }
        if seq < self.first_seq {
            return None;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        if self.last.is_none_or(|(s, ..)| out_seq > s) {
            self.last = Some((out_seq, out_ts, now));
        }
        Some((out_seq, out_ts))
    }

    fn anchor(&mut self, source: Source, seq: u64, ts: u32, clock_rate: u32, now: Instant) {
        self.source = Some(source);
        self.first_seq = seq;
        let Some((last_seq, last_ts, last_at)) = self.last else {
            // The first source: its own 16-bit sequence numbers (no rollover counter to signal),
            // its own timestamps.
            self.seq_offset = (seq & 0xffff).wrapping_sub(seq);
            self.ts_offset = 0;
            return;
        };
        self.seq_offset = (last_seq + 1).wrapping_sub(seq);
        let kept = ts.wrapping_add(self.ts_offset);
        let step = kept.wrapping_sub(last_ts);
        if step == 0 || step > clock_rate.saturating_mul(MAX_KEPT_STEP_SECS) {
            let elapsed = now.saturating_duration_since(last_at);
            let ticks = (elapsed.as_micros() * u128::from(clock_rate) / 1_000_000) as u32;
            let next = last_ts.wrapping_add(ticks.max(1));
            self.ts_offset = next.wrapping_sub(ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn vp8_keyframes_are_told_from_delta_frames_and_continuations() {
        // Descriptor with X=1, I=1 (15-bit picture id), S=1, PID=0; then the VP8 header byte.
        let key = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        let delta = [0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00];
        let continuation = [0x80, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        assert!(starts_keyframe(Codec::Vp8, &key, true));
        assert!(!starts_keyframe(Codec::Vp8, &delta, true));
        assert!(!starts_keyframe(Codec::Vp8, &continuation, false));
        // The minimal descriptor the tests' publisher writes.
        assert!(starts_keyframe(Codec::Vp8, &[0x10, 0x10, 0x42], true));
        assert!(!starts_keyframe(Codec::Vp8, &[0x10, 0x11, 0x42], true));
        assert!(!starts_keyframe(Codec::Vp8, &[], true));
        assert!(!starts_keyframe(Codec::Vp8, &[0x90], true));
    }

    #[test]
    fn h264_keyframes_start_at_the_parameter_sets_or_the_idr() {
        let sps = [0x67, 0x42, 0x00];
        let idr = [0x65, 0x88, 0x80];
        let slice = [0x41, 0x9a, 0x00];
        let stap_a = [0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
        let fu_a_start = [0x7c, 0x85, 0x88];
        let fu_a_middle = [0x7c, 0x05, 0x88];
        let fu_a_delta = [0x7c, 0x81, 0x9a];
        for p in [&sps[..], &idr, &stap_a, &fu_a_start] {
            assert!(starts_keyframe(Codec::H264, p, true), "{p:02x?}");
            assert!(!starts_keyframe(Codec::H264, p, false), "{p:02x?}");
        }
        for p in [&slice[..], &fu_a_middle, &fu_a_delta, &[], &[0x18, 0x00]] {
            assert!(!starts_keyframe(Codec::H264, p, true), "{p:02x?}");
        }
        // A STAP-A whose size runs past the end is not read past it.
        assert!(!starts_keyframe(Codec::H264, &[0x18, 0xff, 0xff], true));
    }

    #[test]
    fn the_first_source_keeps_its_numbers_within_16_bits() {
        let now = Instant::now();
        let mut r = Rewriter::default();
        let seq = 3 * 65_536 + 100;
        assert_eq!(
            r.map((1, None), seq, 9_000, 90_000, now),
            Some((100, 9_000))
        );
        assert_eq!(
            r.map((1, None), seq + 1, 12_000, 90_000, now),
            Some((101, 12_000))
        );
        // A retransmission from before the first packet is not forwarded.
        assert_eq!(r.map((1, None), seq - 1, 6_000, 90_000, now), None);
    }

    #[test]
    fn a_layer_switch_continues_the_sequence_and_the_timestamps() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(
            r.map((1, Some(0)), 500, 1_000, 90_000, t0),
            Some((500, 1_000))
        );
        assert_eq!(
            r.map((1, Some(0)), 501, 1_000, 90_000, t0),
            Some((501, 1_000))
        );
        // Another layer with an unrelated timestamp base, 33 ms later.
        let t1 = t0 + Duration::from_millis(33);
        let (seq, ts) = r.map((1, Some(2)), 70_000, 4_000_000, 90_000, t1).unwrap();
        assert_eq!(seq, 502);
        assert_eq!(ts, 1_000 + 2_970);
        assert_eq!(
            r.map((1, Some(2)), 70_001, 4_000_000, 90_000, t1),
            Some((503, ts))
        );
        assert_eq!(r.map((1, Some(2)), 69_999, 3_997_000, 90_000, t1), None);
        // Back to the first layer (another base again): re-anchored after the last sent.
        let t2 = t1 + Duration::from_millis(33);
        let (seq, ts2) = r.map((1, Some(0)), 510, 1_000 + 6_000, 90_000, t2).unwrap();
        assert_eq!(seq, 504);
        assert!(ts2 > ts, "{ts2} after {ts}");
    }

    #[test]
    fn simulcast_layers_with_a_common_timestamp_base_keep_their_timestamps() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.map((1, Some(0)), 10, 3_000, 90_000, t0);
        let t1 = t0 + Duration::from_millis(33);
        assert_eq!(
            r.map((1, Some(1)), 40_000, 6_000, 90_000, t1),
            Some((11, 6_000))
        );
    }
}
