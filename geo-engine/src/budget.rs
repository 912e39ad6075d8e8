//! Bounding the work a query may do.
//!
//! The engine has no clock, so a deadline comes with a clock callback supplied by the
//! caller. Like Tile38, a query counts its steps (index entries or tree nodes it looks at)
//! and consults the clock only once every [`CHECK_INTERVAL`] steps, which keeps the cost of
//! the check negligible.

use std::fmt;

use crate::coord::Timestamp;

/// How many steps pass between two looks at the caller's clock.
pub const CHECK_INTERVAL: u64 = 256;

/// The limits one query runs under: a maximum number of steps, a deadline, both or neither.
///
/// ```
/// use nexus_geo::{Budget, Timestamp};
/// let now = || Timestamp(1_000);
/// let budget = Budget::steps(100_000).with_deadline(Timestamp(1_050), &now);
/// # let _ = budget;
/// ```
#[derive(Clone, Copy)]
pub struct Budget<'c> {
    max_steps: Option<u64>,
    deadline: Option<(Timestamp, &'c dyn Fn() -> Timestamp)>,
}

impl fmt::Debug for Budget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("max_steps", &self.max_steps)
            .field("deadline", &self.deadline.map(|(at, _)| at))
            .finish()
    }
}

impl<'c> Budget<'c> {
    /// No limit at all. Meant for tests and trusted internal callers.
    pub fn unlimited() -> Self {
        Self {
            max_steps: None,
            deadline: None,
        }
    }

    /// At most `max` steps.
    pub fn steps(max: u64) -> Self {
        Self {
            max_steps: Some(max),
            deadline: None,
        }
    }

    /// Also stop once `clock()` reaches `at`. The clock is called once every
    /// [`CHECK_INTERVAL`] steps, never more often.
    pub fn with_deadline(self, at: Timestamp, clock: &'c dyn Fn() -> Timestamp) -> Self {
        Self {
            deadline: Some((at, clock)),
            ..self
        }
    }

    pub(crate) fn meter(&self) -> Meter<'_, 'c> {
        Meter {
            budget: self,
            steps: 0,
            interrupted: None,
        }
    }
}

/// Why a query stopped before it was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interrupt {
    /// It took the maximum number of steps.
    Steps,
    /// The caller's clock passed the deadline.
    Deadline,
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interrupt::Steps => "step limit",
            Interrupt::Deadline => "deadline",
        })
    }
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Completion {
    /// Every match was returned.
    Complete,
    /// The result limit was reached; more matches may exist.
    Truncated,
    /// The budget ran out: the result holds what was found so far (for k-nearest, a correct
    /// prefix of the true answer).
    Interrupted(Interrupt),
}

/// Counts steps against a [`Budget`].
pub(crate) struct Meter<'b, 'c> {
    budget: &'b Budget<'c>,
    steps: u64,
    interrupted: Option<Interrupt>,
}

impl Meter<'_, '_> {
    /// Takes one step; returns `false` once the budget is exhausted (and from then on).
    pub(crate) fn tick(&mut self) -> bool {
        if self.interrupted.is_some() {
            return false;
        }
        self.steps += 1;
        if let Some(max) = self.budget.max_steps
            && self.steps > max
        {
            self.interrupted = Some(Interrupt::Steps);
            return false;
        }
        if self.steps.is_multiple_of(CHECK_INTERVAL)
            && let Some((at, clock)) = self.budget.deadline
            && clock() >= at
        {
            self.interrupted = Some(Interrupt::Deadline);
            return false;
        }
        true
    }

    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    pub(crate) fn interrupted(&self) -> Option<Interrupt> {
        self.interrupted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn step_limit_stops_after_max() {
        let b = Budget::steps(3);
        let mut m = b.meter();
        assert!(m.tick() && m.tick() && m.tick());
        assert!(!m.tick());
        assert_eq!(m.interrupted(), Some(Interrupt::Steps));
        assert!(!m.tick(), "stays stopped");
    }

    #[test]
    fn clock_is_read_once_every_256_steps() {
        let calls = Cell::new(0u32);
        let clock = || {
            calls.set(calls.get() + 1);
            Timestamp(i64::from(calls.get()) * 10)
        };
        let b = Budget::unlimited().with_deadline(Timestamp(30), &clock);
        let mut m = b.meter();
        let mut taken = 0;
        while m.tick() {
            taken += 1;
        }
        assert_eq!(calls.get(), 3);
        assert_eq!(taken, 3 * 256 - 1);
        assert_eq!(m.interrupted(), Some(Interrupt::Deadline));
    }
}
