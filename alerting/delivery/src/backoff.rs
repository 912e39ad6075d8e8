//! Exponential backoff with jitter (pure: the jitter is an argument).

use std::time::Duration;

/// Retry policy: delays grow by `factor` from `base` up to `max`, with "full jitter" in the
/// upper half (a delay `d` becomes a value in `[d/2, d)`), for at most `max_attempts`
/// attempts in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the second attempt (before jitter).
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Attempts before giving up (the first included).
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
            factor: 2.0,
            max_attempts: 8,
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (from 1), or `None` when that was the
    /// last one allowed. `jitter` in `[0, 1)` picks the point in the jitter window.
    ///
    /// ```
    /// use nexus_alert_delivery::Backoff;
    /// use std::time::Duration;
    /// let b = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(10), factor: 2.0, max_attempts: 4 };
    /// assert_eq!(b.delay(1, 0.0), Some(Duration::from_millis(500)));
    /// assert_eq!(b.delay(3, 0.0), Some(Duration::from_secs(2)));
    /// assert_eq!(b.delay(4, 0.5), None);
    /// ```
    pub fn delay(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exp = self
            .factor
            .powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX));
        let full = (self.base.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some(Duration::from_secs_f64(full / 2.0 + full / 2.0 * jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_then_stops() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
            factor: 2.0,
            max_attempts: 6,
        };
        let upper: Vec<_> = (1..=6).map(|a| b.delay(a, 0.999_999)).collect();
        let secs: Vec<u64> = upper
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64().round() as u64)
            .collect();
        assert_eq!(secs, [1, 2, 4, 5, 5]);
        assert_eq!(upper[5], None, "the sixth attempt was the last");
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::default();
        for j in [0.0, 0.3, 0.9, -1.0, 7.0, f64::NAN] {
            let d = b.delay(2, j).unwrap_or_default();
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{j}: {d:?}"
            );
        }
    }
}
