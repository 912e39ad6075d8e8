//! Simulcast layer choice, keyframe-request throttling and bitrate metering: pure functions and
//! small value types, driven by `now`.

use std::time::{Duration, Instant};

/// What the SFU knows about one simulcast layer of a published video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Measured bitrate of the layer, bits per second.
    pub bitrate_bps: u64,
    /// Frame height of the layer (estimated from the publisher's declared height and the
    /// usual ¼, ½, 1 scaling when the publisher declares none).
    pub height: u32,
}

/// Headroom an estimate must have over a layer's bitrate before switching *up* to it (25%), so
/// that a subscriber does not flap between layers at the edge of its bandwidth.
pub const UP_SWITCH_HEADROOM_PCT: u64 = 125;

/// Chooses the simulcast layer for one subscriber.
///
/// `layers` are ordered from the lowest to the highest quality. The result is the highest layer
/// that (1) is no taller than `max_height` when the subscriber asked for a size, and (2) fits the
/// subscriber's bandwidth `estimate_bps`: staying on or going down to a layer needs
/// `bitrate <= estimate`, going up needs [`UP_SWITCH_HEADROOM_PCT`] of headroom. With no
/// estimate yet, the size alone decides. The lowest layer is always allowed, so a subscriber on a
/// poor link still gets video. `None` only when there are no layers.
pub fn select_layer(
    layers: &[LayerInfo],
    estimate_bps: Option<u64>,
    max_height: Option<u32>,
    current: Option<usize>,
) -> Option<usize> {
    if layers.is_empty() {
        return None;
    }
    let mut best = 0;
    for (i, layer) in layers.iter().enumerate().skip(1) {
        if max_height.is_some_and(|h| layer.height > h) {
            break;
        }
        if let Some(estimate) = estimate_bps {
            let is_up = current.is_none_or(|c| i > c);
            let needed = if is_up {
                layer.bitrate_bps.saturating_mul(UP_SWITCH_HEADROOM_PCT) / 100
            } else {
                layer.bitrate_bps
            };
            if needed > estimate {
                break;
            }
        }
        best = i;
    }
    Some(best)
}

/// Allows at most one keyframe request per interval toward one publisher track (mediasoup's
/// rule: a burst of PLIs from many subscribers becomes one request a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeThrottle {
    interval: Duration,
    last: Option<Instant>,
}

impl KeyframeThrottle {
    /// A throttle letting one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval,
            last: None,
        }
    }

    /// Whether a request at `now` may go through; records it when it does.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Bitrate of a stream over the last completed window (default one second).
#[derive(Debug, Clone, Copy)]
pub struct RateMeter {
    window: Duration,
    start: Option<Instant>,
    bytes: u64,
    last_bps: u64,
}

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter {
            window: Duration::from_secs(1),
            start: None,
            bytes: 0,
            last_bps: 0,
        }
    }
}

impl RateMeter {
    /// Counts `bytes` received at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= self.window {
            let ms = u64::try_from(elapsed.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            self.last_bps = self.bytes.saturating_mul(8000) / ms;
            self.start = Some(now);
            self.bytes = 0;
        }
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    /// Bits per second over the last completed window (0 before the first one completes).
    pub fn bps(&self) -> u64 {
        self.last_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<LayerInfo> {
        vec![
            LayerInfo {
                bitrate_bps: 150_000,
                height: 180,
            },
            LayerInfo {
                bitrate_bps: 500_000,
                height: 360,
            },
            LayerInfo {
                bitrate_bps: 1_500_000,
                height: 720,
            },
        ]
    }

    #[test]
    fn low_bandwidth_gets_the_low_layer() {
        assert_eq!(select_layer(&layers(), Some(300_000), None, None), Some(0));
        // Even below the lowest layer's bitrate the lowest layer is kept.
        assert_eq!(
            select_layer(&layers(), Some(50_000), None, Some(1)),
            Some(0)
        );
    }

    #[test]
    fn plenty_of_bandwidth_gets_the_top_layer() {
        assert_eq!(
            select_layer(&layers(), Some(5_000_000), None, None),
            Some(2)
        );
        assert_eq!(select_layer(&layers(), None, None, None), Some(2));
    }

    #[test]
    fn requested_size_caps_the_layer() {
        assert_eq!(
            select_layer(&layers(), Some(5_000_000), Some(360), None),
            Some(1)
        );
        assert_eq!(select_layer(&layers(), None, Some(100), None), Some(0));
    }

    #[test]
    fn switching_up_needs_headroom_but_staying_does_not() {
        // 1.6 Mbps covers the top layer's 1.5 Mbps but not with 25% headroom.
        assert_eq!(
            select_layer(&layers(), Some(1_600_000), None, Some(1)),
            Some(1)
        );
        assert_eq!(
            select_layer(&layers(), Some(1_600_000), None, Some(2)),
            Some(2)
        );
        // Recovery: with room to spare it goes up.
        assert_eq!(
            select_layer(&layers(), Some(2_000_000), None, Some(1)),
            Some(2)
        );
    }

    #[test]
    fn no_layers_no_choice() {
        assert_eq!(select_layer(&[], Some(1), None, None), None);
    }

    #[test]
    fn keyframe_requests_are_throttled_to_one_per_second() {
        let t0 = Instant::now();
        let mut throttle = KeyframeThrottle::new(Duration::from_secs(1));
        assert!(throttle.allow(t0));
        assert!(!throttle.allow(t0 + Duration::from_millis(10)));
        assert!(!throttle.allow(t0 + Duration::from_millis(999)));
        assert!(throttle.allow(t0 + Duration::from_millis(1000)));
        assert!(!throttle.allow(t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn rate_meter_reports_the_last_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..100 {
            m.add(t0 + Duration::from_millis(i * 10), 1250);
        }
        assert_eq!(m.bps(), 0);
        m.add(t0 + Duration::from_millis(1000), 0);
        assert_eq!(m.bps(), 1_000_000);
    }
}
