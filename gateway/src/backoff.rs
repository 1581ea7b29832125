//! Jittered exponential backoff: the one policy every retry, re-send and reconnect loop waits by.
//!
//! A wait is the first wait doubled per failure in a row, capped, then shortened by a random
//! part (by default up to half) so that many clients that failed together do not retry together;
//! the jitter never takes a wait above the cap. A loop that keeps its own count of failures (a
//! database row's `attempts`) asks for [`Backoff::delay`]; a loop that holds the policy asks for
//! [`Backoff::next_delay`] or [`Backoff::wait`] and calls [`Backoff::reset`] after a success or a
//! good session, so one bad spell does not slow every later reconnect.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Doublings past this are the cap anyway (2^20 times even a millisecond is 17 minutes).
const MAX_DOUBLINGS: u32 = 20;

/// A backoff policy and the failures in a row it has counted.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// The largest part of a wait that may be taken off at random, 0 to 1.
    jitter: f64,
    /// Waits handed out since the last success.
    failures: u32,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`, each up to half shorter at random.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            jitter: 0.5,
            failures: 0,
        }
    }

    /// Takes up to `fraction` (clamped to 0..=1) of each wait off at random instead of half.
    pub const fn with_jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The cap: no wait is longer.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait after `failures` failures in a row (0 = the first failure) before jitter:
    /// `first` doubled `failures` times, at most the cap.
    pub fn nominal(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(MAX_DOUBLINGS);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// The jittered wait after `failures` failures in a row, for loops that count elsewhere.
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_with(failures, &mut rand::rng())
    }

    /// [`Backoff::delay`] with the caller's random numbers (a simulation that must replay).
    pub fn delay_with(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let nominal = self.nominal(failures);
        let cut: f64 = rng.random_range(0.0..=self.jitter);
        nominal.mul_f64(1.0 - cut)
    }

    /// The next wait of this loop, counted as one more failure in a row.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// [`Backoff::next_delay`] with the caller's random numbers.
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let wait = self.delay_with(self.failures, rng);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Sleeps the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// After a success or a good session: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Runs `op` until it succeeds, fails with an error `retriable` refuses (returned at once),
    /// or `attempts` tries (at least one) have failed (the last error is returned), waiting by
    /// this policy between tries.
    pub async fn retry<T, E, Fut>(
        mut self,
        attempts: u32,
        mut op: impl FnMut() -> Fut,
        retriable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut tries = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(err) if tries < attempts && retriable(&err) => {
                    tries += 1;
                    self.wait().await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use tokio::time::Instant;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Tokio's paused clock moves timers to whole milliseconds.
    fn assert_between(took: Duration, lo: Duration, hi: Duration) {
        assert!(
            took >= lo && took <= hi + MS,
            "{took:?} not in {lo:?}..={hi:?}"
        );
    }

    #[test]
    fn nominal_waits_double_from_the_first_and_stop_at_the_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let waits: Vec<u128> = (0..6).map(|n| b.nominal(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            b.nominal(u32::MAX),
            1000 * MS,
            "no overflow after very many failures"
        );
    }

    #[test]
    fn jitter_only_shortens_a_wait_by_at_most_its_fraction() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(600)).with_jitter(0.2);
        for failures in 0..12 {
            let full = b.nominal(failures);
            for _ in 0..50 {
                let wait = b.delay(failures);
                assert!(
                    wait <= full && wait >= full.mul_f64(0.8),
                    "{failures}: {wait:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_grow_to_the_cap_and_start_from_the_first_again_after_a_reset() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        for nominal in [100, 200, 400, 800, 1000, 1000, 1000] {
            let started = Instant::now();
            b.wait().await;
            assert_between(started.elapsed(), nominal / 2 * MS, nominal * MS);
        }
        b.reset();
        let started = Instant::now();
        b.wait().await;
        assert_between(started.elapsed(), 50 * MS, 100 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_between_retriable_failures_until_one_succeeds() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let result = Backoff::new(100 * MS, 150 * MS)
            .with_jitter(0.0)
            .retry(
                5,
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move { if n < 4 { Err("busy") } else { Ok(n) } }
                },
                |_| true,
            )
            .await;
        assert_eq!(result, Ok(4));
        // 100 + 150 (capped) + 150 ms between the four tries.
        assert_between(started.elapsed(), 400 * MS, 400 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_returns_an_error_that_is_not_retriable_at_once_and_gives_up_after_its_attempts()
    {
        let calls = Cell::new(0);
        let op = || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>("refused") }
        };
        let started = Instant::now();
        let result = Backoff::new(100 * MS, MS * 1000)
            .retry(5, op, |_| false)
            .await;
        assert_eq!((result, calls.get()), (Err("refused"), 1));
        assert_eq!(started.elapsed(), Duration::ZERO);

        calls.set(0);
        let result = Backoff::new(100 * MS, MS * 1000)
            .retry(3, op, |_| true)
            .await;
        assert_eq!((result, calls.get()), (Err("refused"), 3));
    }
}
