//! Bounds on password work: how many argon2 hashes run at once, and how many sign-in attempts
//! (registrations and logins together) one client address may make.
//!
//! One argon2 hash takes 19 MiB and tens of milliseconds of a core. Unbounded, a flood of
//! registrations queues thousands of them on the blocking pool, holding their memory and
//! starving every other blocking task. The [`LoginThrottle`](super::LoginThrottle) does not help
//! there: it counts failures per email and address, and a flood rotates emails and succeeds. So
//! hashing waits for one of a few permits (sized from the cores) for a short while, then answers
//! 503; and each address has a token bucket of attempts, whatever the email, answered 429 when
//! empty. Both live in memory, per process, like the login throttle.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Why a sign-in attempt was not taken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address made too many attempts; it may try again after this long (429).
    Address(Duration),
    /// Every hashing permit stayed busy for the whole wait; try again after this long (503).
    Busy(Duration),
}

/// Addresses tracked before idle buckets are forgotten; a full bucket is the same as none.
const HOUSEKEEPING_AT: usize = 10_000;

/// How soon a client refused for [`Refusal::Busy`] is told to come back.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The permits for hashing and the per-address buckets of one process.
pub struct PasswordGate {
    permits: Semaphore,
    /// Kept to report it; the semaphore does not say how many permits it started with.
    concurrency: usize,
    wait: Duration,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for PasswordGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordGate")
            .field("concurrency", &self.concurrency)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl PasswordGate {
    /// `concurrency` hashes at once (0: one per core); a request waits at most `wait` for one.
    /// Each address may make `per_minute` attempts a minute on average, `burst` at once.
    pub fn new(
        concurrency: usize,
        wait: Duration,
        per_minute: NonZeroU32,
        burst: NonZeroU32,
    ) -> PasswordGate {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        PasswordGate {
            permits: Semaphore::new(concurrency),
            concurrency,
            wait,
            per_address: DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
        }
    }

    /// Hashes that may run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Takes one attempt from the bucket of `client`'s address (no address, as in tests that
    /// call handlers directly: no bucket).
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), Refusal> {
        let Some(ip) = client else {
            return Ok(());
        };
        if self.per_address.len() > HOUSEKEEPING_AT {
            self.per_address.retain_recent();
        }
        self.per_address
            .check_key(&address_key(ip))
            .map_err(|not_until| Refusal::Address(not_until.wait_time_from(self.clock.now())))
    }

    /// A permit to hash, waiting at most the configured time for one. Hold it for as long as
    /// the hashing (and nothing much else) runs.
    pub async fn permit(&self) -> Result<SemaphorePermit<'_>, Refusal> {
        match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or closed (which this gate never does): either way, not now.
            Ok(Err(_)) | Err(_) => Err(Refusal::Busy(BUSY_RETRY)),
        }
    }
}

pub use gateway::peer::address_key;

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(concurrency: usize, burst: u32) -> PasswordGate {
        PasswordGate::new(
            concurrency,
            Duration::from_millis(50),
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )
    }

    #[test]
    fn an_address_gets_its_burst_then_waits_while_other_addresses_go_on() {
        let gate = gate(1, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(gate.admit(Some(a)), Ok(()));
        }
        match gate.admit(Some(a)) {
            Err(Refusal::Address(wait)) => assert!(wait > Duration::ZERO, "{wait:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(gate.admit(Some(b)), Ok(()));
        assert_eq!(gate.admit(None), Ok(()));
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_bucket() {
        let gate = gate(1, 1);
        assert_eq!(gate.admit(Some("2001:db8::1".parse().unwrap())), Ok(()));
        assert!(
            gate.admit(Some("2001:db8::ffff:2".parse().unwrap()))
                .is_err()
        );
        assert_eq!(gate.admit(Some("2001:db8:0:1::1".parse().unwrap())), Ok(()));
        assert_eq!(
            address_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn a_hash_waits_for_a_permit_only_so_long_then_is_refused_as_busy() {
        let gate = gate(1, 1);
        let held = gate.permit().await.unwrap();
        assert_eq!(gate.permit().await.unwrap_err(), Refusal::Busy(BUSY_RETRY));
        drop(held);
        assert!(gate.permit().await.is_ok());
    }

    #[test]
    fn zero_concurrency_means_one_permit_per_core() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(gate(0, 1).concurrency(), cores);
    }
}
