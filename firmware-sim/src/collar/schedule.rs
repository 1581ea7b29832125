//! When the collar takes its next fix: its normal interval, live mode's shorter one for a while,
//! or at once when asked to locate.

use std::time::Duration;

use tokio::time::Instant;

/// No interval is shorter, whatever a command asks: a fix takes the GPS some time.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(crate) struct Schedule {
    /// The interval outside live mode (`set_interval` changes it).
    normal: Duration,
    /// The interval now.
    current: Duration,
    next_fix: Instant,
    /// Live mode is on until then.
    live_until: Option<Instant>,
}

impl Schedule {
    pub fn new(normal: Duration, now: Instant) -> Schedule {
        let current = normal.max(MIN_INTERVAL);
        Schedule {
            normal,
            current,
            next_fix: now + current,
            live_until: None,
        }
    }

    pub fn next_fix(&self) -> Instant {
        self.next_fix
    }

    pub fn interval(&self) -> Duration {
        self.current
    }

    /// A fix is taken `now`: schedules the next (from the rhythm, or from now if the collar fell
    /// behind) and ends live mode when its time is up. Returns the interval the fix covers.
    pub fn fix_taken(&mut self, now: Instant) -> Duration {
        self.next_fix += self.current;
        if self.next_fix < now {
            self.next_fix = now + self.current;
        }
        if self.live_until.is_some_and(|until| now >= until) {
            self.end_live(now);
        }
        self.current
    }

    /// Live mode: a fix every `interval` until `until`.
    pub fn start_live(&mut self, interval: Duration, until: Instant, now: Instant) {
        self.set_current(interval, now);
        self.live_until = Some(until);
    }

    /// Ends live mode if its time is up.
    pub fn end_live_if_over(&mut self, now: Instant) {
        if self.live_until.is_some_and(|until| until <= now) {
            self.end_live(now);
        }
    }

    /// A new normal interval; live mode, if on, keeps its own until it ends.
    pub fn set_normal(&mut self, interval: Duration, now: Instant) {
        self.normal = interval;
        if self.live_until.is_none() {
            self.set_current(interval, now);
        }
    }

    /// The next fix is taken at once; the rhythm goes on from it.
    pub fn fix_now(&mut self, now: Instant) {
        self.next_fix = now;
    }

    fn set_current(&mut self, interval: Duration, now: Instant) {
        self.current = interval.max(MIN_INTERVAL);
        self.next_fix = self.next_fix.min(now + self.current);
    }

    fn end_live(&mut self, now: Instant) {
        self.live_until = None;
        self.set_current(self.normal, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn fixes_follow_the_interval_and_a_late_collar_restarts_from_now() {
        let t0 = Instant::now();
        let mut s = Schedule::new(10 * SEC, t0);
        assert_eq!(s.next_fix(), t0 + 10 * SEC);
        assert_eq!(s.fix_taken(t0 + 10 * SEC), 10 * SEC);
        assert_eq!(s.next_fix(), t0 + 20 * SEC);
        s.fix_taken(t0 + 45 * SEC);
        assert_eq!(s.next_fix(), t0 + 55 * SEC);
    }

    #[test]
    fn live_mode_shortens_the_interval_until_it_ends() {
        let t0 = Instant::now();
        let mut s = Schedule::new(10 * SEC, t0);
        s.start_live(SEC, t0 + 5 * SEC, t0);
        assert_eq!(s.interval(), SEC);
        assert_eq!(s.next_fix(), t0 + SEC, "the next fix moves closer");
        s.end_live_if_over(t0 + 4 * SEC);
        assert_eq!(s.interval(), SEC);
        assert_eq!(s.fix_taken(t0 + 5 * SEC), 10 * SEC, "ended by the fix");
    }

    #[test]
    fn a_new_normal_interval_waits_for_live_mode_to_end() {
        let t0 = Instant::now();
        let mut s = Schedule::new(10 * SEC, t0);
        s.start_live(SEC, t0 + 5 * SEC, t0);
        s.set_normal(7 * SEC, t0);
        assert_eq!(s.interval(), SEC);
        s.end_live_if_over(t0 + 5 * SEC);
        assert_eq!(s.interval(), 7 * SEC);
        s.set_normal(Duration::ZERO, t0);
        assert_eq!(s.interval(), MIN_INTERVAL);
    }

    #[test]
    fn locate_now_takes_the_next_fix_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(10 * SEC, t0);
        s.fix_now(t0 + SEC);
        assert_eq!(s.next_fix(), t0 + SEC);
    }
}
