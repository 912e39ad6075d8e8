//! Active-speaker detection from RFC 6464 audio levels: a pure state machine driven by `now`.

use crate::ids::ParticipantId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Loudness (127 − level in −dBov) below which a participant counts as silent: −dBov 60.
const SILENCE: f32 = 67.0;
/// How much louder (in dB of smoothed loudness) a challenger must be to take over.
const MARGIN: f32 = 3.0;
/// Weight of a new sample in the smoothed loudness.
const ALPHA: f32 = 0.2;
/// A participant whose last sample is older than this counts as silent.
const STALE: Duration = Duration::from_millis(500);

/// Picks the dominant speaker of a room from audio-level samples.
///
/// Each sample updates a smoothed loudness per participant. The speaker changes only when a
/// challenger is louder than the current speaker by 3 dB (or the current speaker fell
/// silent), and not more often than once per `min_hold`, so the highlighted tile does not flicker
/// on every cough.
#[derive(Debug, Clone)]
pub struct ActiveSpeaker {
    min_hold: Duration,
    levels: HashMap<ParticipantId, (f32, Instant)>,
    current: Option<ParticipantId>,
    since: Option<Instant>,
}

impl ActiveSpeaker {
    /// A detector that holds a speaker for at least `min_hold`.
    pub fn new(min_hold: Duration) -> Self {
        ActiveSpeaker {
            min_hold,
            levels: HashMap::new(),
            current: None,
            since: None,
        }
    }

    /// Records an audio level (`0` = loudest, `127` = silence, as in RFC 6464) at `now`.
    pub fn observe(&mut self, now: Instant, who: ParticipantId, level: i8) {
        let loudness = 127.0 - f32::from(level.clamp(0, 127));
        let entry = self.levels.entry(who).or_insert((0.0, now));
        entry.0 += ALPHA * (loudness - entry.0);
        entry.1 = now;
    }

    /// Forgets a participant (left the room or stopped publishing audio).
    pub fn remove(&mut self, who: ParticipantId) {
        self.levels.remove(&who);
        if self.current == Some(who) {
            self.current = None;
        }
    }

    /// The current speaker.
    pub fn current(&self) -> Option<ParticipantId> {
        self.current
    }

    /// Re-evaluates at `now`; returns the new speaker when it changed.
    pub fn tick(&mut self, now: Instant) -> Option<ParticipantId> {
        let loud = |&(l, at): &(f32, Instant)| {
            if now.saturating_duration_since(at) > STALE {
                0.0
            } else {
                l
            }
        };
        let best = self
            .levels
            .iter()
            .map(|(id, v)| (*id, loud(v)))
            .filter(|(_, l)| *l >= SILENCE)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
        if self.current == Some(best.0) {
            return None;
        }
        let held = self
            .since
            .is_none_or(|s| now.saturating_duration_since(s) >= self.min_hold);
        let current_level = self
            .current
            .and_then(|c| self.levels.get(&c))
            .map(loud)
            .unwrap_or(0.0);
        let current_silent = current_level < SILENCE;
        if current_silent || (held && best.1 >= current_level + MARGIN) {
            self.current = Some(best.0);
            self.since = Some(now);
            return Some(best.0);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> ParticipantId {
        ParticipantId::new(0, n)
    }

    /// Feeds `level` for `who` every 20 ms for `ms`, ticking each time; returns the changes.
    fn talk(
        s: &mut ActiveSpeaker,
        t: &mut Instant,
        who: &[(ParticipantId, i8)],
        ms: u64,
    ) -> Vec<ParticipantId> {
        let mut changes = vec![];
        for _ in 0..ms / 20 {
            *t += Duration::from_millis(20);
            for (w, l) in who {
                s.observe(*t, *w, *l);
            }
            changes.extend(s.tick(*t));
        }
        changes
    }

    #[test]
    fn the_loud_participant_becomes_the_speaker() {
        let mut t = Instant::now();
        let mut s = ActiveSpeaker::new(Duration::from_millis(1000));
        let changes = talk(&mut s, &mut t, &[(p(1), 20), (p(2), 110)], 600);
        assert_eq!(changes, vec![p(1)]);
        assert_eq!(s.current(), Some(p(1)));
    }

    #[test]
    fn silence_elects_nobody() {
        let mut t = Instant::now();
        let mut s = ActiveSpeaker::new(Duration::from_millis(1000));
        assert!(talk(&mut s, &mut t, &[(p(1), 127), (p(2), 100)], 600).is_empty());
        assert_eq!(s.current(), None);
    }

    #[test]
    fn a_short_interjection_does_not_steal_the_floor() {
        let mut t = Instant::now();
        let mut s = ActiveSpeaker::new(Duration::from_millis(2000));
        talk(&mut s, &mut t, &[(p(1), 30)], 600);
        assert_eq!(s.current(), Some(p(1)));
        // p2 is louder, but p1 is still talking and the hold time has not passed.
        let changes = talk(&mut s, &mut t, &[(p(1), 30), (p(2), 10)], 400);
        assert!(changes.is_empty());
        // After the hold time the louder speaker takes over.
        let changes = talk(&mut s, &mut t, &[(p(1), 30), (p(2), 10)], 2000);
        assert_eq!(changes, vec![p(2)]);
    }

    #[test]
    fn when_the_speaker_stops_the_next_one_takes_over_at_once() {
        let mut t = Instant::now();
        let mut s = ActiveSpeaker::new(Duration::from_secs(10));
        talk(&mut s, &mut t, &[(p(1), 20)], 600);
        // p1 goes quiet (no more samples): after the stale time p2 takes over despite the hold.
        let changes = talk(&mut s, &mut t, &[(p(2), 40)], 1200);
        assert_eq!(changes, vec![p(2)]);
    }

    #[test]
    fn removing_the_speaker_clears_it() {
        let mut t = Instant::now();
        let mut s = ActiveSpeaker::new(Duration::from_secs(1));
        talk(&mut s, &mut t, &[(p(1), 20)], 600);
        s.remove(p(1));
        assert_eq!(s.current(), None);
    }
}
