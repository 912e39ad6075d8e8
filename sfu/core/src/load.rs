//! A shard's load, and the admission rule built on it.
//!
//! The driver reports how long each piece of work took ([`crate::Shard::record_busy`]: reading
//! and handling datagrams, firing timers, sending what the shard produced, serving commands);
//! [`BusyMeter`] keeps those times in slots over a sliding window and gives the **busy ratio**:
//! the share of the last window's wall time that the shard's loop spent working. A ratio near 1
//! means the loop never waits for input any more: datagrams queue in the socket buffer, every
//! peer's STUN, RTCP and media wait behind the backlog, and each further subscriber makes that
//! worse for everyone in the shard.
//!
//! Why the busy ratio and not a packet budget: what a shard can carry depends on the machine,
//! on what else runs on it, on codecs and packet sizes and on the crypto backend; a budget of
//! datagrams per second would have to be tuned per deployment and would still be wrong when a
//! neighbour takes the CPU. The busy ratio measures exactly what fails under saturation — the
//! loop's spare time — wherever the shard runs. It is wall time, so time the loop lost to other
//! processes counts as busy: right, since the peers wait for it all the same.
//!
//! The rule ([`BusyMeter::saturated`]): a shard whose busy ratio over the window is at or above
//! [`crate::ShardConfig::max_busy`] refuses *new* subscribers ([`crate::SfuError::Saturated`]);
//! everyone already admitted stays, publishers may still publish, and a participant may still
//! resume its session.

use std::time::{Duration, Instant};

/// Slots the window is cut into.
const SLOTS: usize = 8;

/// Busy time over a sliding window of wall time, fed by the driver with the shard's clock.
#[derive(Debug, Clone)]
pub struct BusyMeter {
    slot_len: Duration,
    epoch: Instant,
    /// Busy time per slot, indexed by slot number modulo [`SLOTS`], with the slot number it
    /// holds.
    slots: [(u64, Duration); SLOTS],
}

impl BusyMeter {
    /// A meter over `window` (at least 8 ms), starting at `now` with no load.
    pub fn new(now: Instant, window: Duration) -> Self {
        let slot_len = (window / SLOTS as u32).max(Duration::from_millis(1));
        BusyMeter {
            slot_len,
            epoch: now,
            slots: [(u64::MAX, Duration::ZERO); SLOTS],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos() / self.slot_len.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// Adds `busy` worked up to `now`.
    pub fn record(&mut self, now: Instant, busy: Duration) {
        let n = self.slot(now);
        let entry = &mut self.slots[(n % SLOTS as u64) as usize];
        if entry.0 != n {
            *entry = (n, Duration::ZERO);
        }
        entry.1 += busy;
    }

    /// The share of the window before `now` spent busy, 0.0 to 1.0 (the current, partial
    /// slot counts with its share of time elapsed).
    pub fn busy_ratio(&self, now: Instant) -> f64 {
        let n = self.slot(now);
        let oldest = n.saturating_sub(SLOTS as u64 - 1);
        let busy: Duration = self
            .slots
            .iter()
            .filter(|(slot, _)| *slot != u64::MAX && *slot >= oldest && *slot <= n)
            .map(|(_, d)| *d)
            .sum();
        // Wall time covered: the full slots before this one plus what passed of this one.
        let since = now.saturating_duration_since(self.epoch);
        let into_slot = Duration::from_nanos(
            u64::try_from(since.as_nanos() % self.slot_len.as_nanos().max(1)).unwrap_or(0),
        );
        let full_slots = (n - oldest) as u32;
        let wall = (self.slot_len * full_slots + into_slot).max(Duration::from_millis(1));
        (busy.as_secs_f64() / wall.as_secs_f64()).min(1.0)
    }

    /// Whether the busy ratio is at or above `max_busy` (a `max_busy` above 1 never is).
    pub fn saturated(&self, now: Instant, max_busy: f64) -> bool {
        self.busy_ratio(now) >= max_busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_shard_is_not_saturated() {
        let t0 = Instant::now();
        let m = BusyMeter::new(t0, 800 * MS);
        assert_eq!(m.busy_ratio(t0 + 5 * 800 * MS), 0.0);
        assert!(!m.saturated(t0 + 5 * 800 * MS, 0.8));
    }

    #[test]
    fn a_loop_busy_nine_tenths_of_the_window_is_saturated_and_recovers_when_load_stops() {
        let t0 = Instant::now();
        let mut m = BusyMeter::new(t0, 800 * MS);
        // 100 ms slots; 90 ms of work in each for two windows.
        for i in 1..=16u32 {
            m.record(t0 + i * 100 * MS - MS, 90 * MS);
        }
        let now = t0 + 1600 * MS - MS;
        assert!(
            (m.busy_ratio(now) - 0.9).abs() < 0.02,
            "{}",
            m.busy_ratio(now)
        );
        assert!(m.saturated(now, 0.8));
        // Half the work: below the bar.
        for i in 17..=24u32 {
            m.record(t0 + i * 100 * MS - MS, 45 * MS);
        }
        let now = t0 + 2400 * MS - MS;
        assert!(!m.saturated(now, 0.8), "{}", m.busy_ratio(now));
        // No work for a window: idle again.
        assert_eq!(m.busy_ratio(t0 + 3300 * MS), 0.0);
    }

    #[test]
    fn a_limit_above_one_never_refuses() {
        let t0 = Instant::now();
        let mut m = BusyMeter::new(t0, 800 * MS);
        m.record(t0 + 50 * MS, 5000 * MS);
        assert_eq!(m.busy_ratio(t0 + 60 * MS), 1.0);
        assert!(!m.saturated(t0 + 60 * MS, 1.01));
    }
}
