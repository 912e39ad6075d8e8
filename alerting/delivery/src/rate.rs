//! Per-channel rate limits: a token bucket fed with the time (pure).

use std::time::Duration;

/// A token bucket: `rate` tokens per second, holding at most `burst`. Time is a number of
/// milliseconds from any fixed origin, passed in by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at_ms: Option<u64>,
}

impl TokenBucket {
    /// A full bucket. A non-positive or non-finite `rate` means unlimited.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate_per_sec,
            burst,
            tokens: burst,
            at_ms: None,
        }
    }

    /// Takes one token at `now_ms`; when the bucket is empty, says how long until one is
    /// there (and takes nothing).
    ///
    /// ```
    /// use nexus_alert_delivery::TokenBucket;
    /// use std::time::Duration;
    /// let mut b = TokenBucket::new(10.0, 2);
    /// assert!(b.take(0).is_ok());
    /// assert!(b.take(0).is_ok());
    /// assert_eq!(b.take(0), Err(Duration::from_millis(100)));
    /// assert!(b.take(100).is_ok());
    /// ```
    pub fn take(&mut self, now_ms: u64) -> Result<(), Duration> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Ok(());
        }
        if let Some(at) = self.at_ms {
            let elapsed = now_ms.saturating_sub(at) as f64 / 1000.0;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.at_ms = Some(now_ms.max(self.at_ms.unwrap_or(0)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_rate_is_the_configured_one() {
        let mut b = TokenBucket::new(50.0, 5);
        let mut sent = 0;
        let mut now = 0;
        while now <= 10_000 {
            match b.take(now) {
                Ok(()) => sent += 1,
                Err(wait) => now += u64::try_from(wait.as_millis()).unwrap_or(1).max(1),
            }
        }
        // 5 from the burst, then 50/s for 10 s.
        assert!((500..=506).contains(&sent), "{sent}");
    }

    #[test]
    fn zero_rate_is_unlimited_and_time_going_back_is_harmless() {
        let mut b = TokenBucket::new(0.0, 1);
        assert!((0..1000).all(|_| b.take(0).is_ok()));
        let mut b = TokenBucket::new(1.0, 1);
        assert!(b.take(5_000).is_ok());
        assert!(b.take(1_000).is_err());
        assert!(b.take(6_000).is_ok());
    }
}
