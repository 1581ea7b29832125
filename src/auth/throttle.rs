//! Slowing down password guessing: after a few failed logins for one email from one address, that
//! pair must wait, longer after each further failure.
//!
//! Kept in memory (a bounded map) rather than in the database: a failed login then costs no
//! write, and a guesser cannot grow a table. The price is that several server processes each
//! count on their own, and a restart forgets; argon2 still makes every guess slow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before waiting is required.
pub const FREE_FAILURES: u32 = 5;
/// Failures are forgotten once none happened for this long.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first wait; each further failure doubles it, up to [`MAX_DELAY`].
pub const BASE_DELAY: Duration = Duration::from_secs(30);
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Most (email, address) pairs tracked; beyond it the stalest are forgotten first.
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Counts failed logins per (lower-cased email, client address).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<String, Failures>>,
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self::default()
    }

    /// The key for an email (already normalized) and the client address, when known.
    pub fn key(normalized_email: &str, client: Option<IpAddr>) -> String {
        match client {
            Some(ip) => format!("{normalized_email}|{ip}"),
            None => normalized_email.to_owned(),
        }
    }

    /// `Err(wait)` while this key must wait before trying again.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    pub fn record_failure(&self, key: &str) {
        self.record_failure_at(key, Instant::now());
    }

    /// A successful login forgets the failures.
    pub fn record_success(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        // A panic while holding the lock leaves only counters behind: still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.lock().get(key).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    fn record_failure_at(&self, key: &str, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY && !entries.contains_key(key) {
            evict(&mut entries, now);
        }
        let entry = entries.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: None,
        });
        if now.duration_since(entry.last) > WINDOW {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count >= FREE_FAILURES {
            let doublings = (entry.count - FREE_FAILURES).min(16);
            let delay = BASE_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
            entry.blocked_until = Some(now + delay);
        }
    }
}

/// Drops forgotten entries; if none are, the stalest tenth, so one insert never scans often.
fn evict(entries: &mut HashMap<String, Failures>, now: Instant) {
    let live = |f: &Failures| {
        now.duration_since(f.last) <= WINDOW || f.blocked_until.is_some_and(|u| u > now)
    };
    entries.retain(|_, f| live(f));
    if entries.len() >= CAPACITY {
        let mut ages: Vec<(Instant, String)> =
            entries.iter().map(|(k, f)| (f.last, k.clone())).collect();
        ages.sort_unstable();
        for (_, key) in ages.into_iter().take(CAPACITY / 10) {
            entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_then_a_wait_that_doubles_with_each_further_failure() {
        let throttle = LoginThrottle::new();
        let t0 = Instant::now();
        for i in 0..4 {
            throttle.record_failure_at("k", t0 + Duration::from_secs(i));
            assert!(throttle.check_at("k", t0 + Duration::from_secs(i)).is_ok());
        }
        throttle.record_failure_at("k", t0 + Duration::from_secs(4));
        let wait = throttle
            .check_at("k", t0 + Duration::from_secs(4))
            .unwrap_err();
        assert_eq!(wait, BASE_DELAY);
        let later = t0 + Duration::from_secs(4) + BASE_DELAY;
        assert!(throttle.check_at("k", later).is_ok());
        throttle.record_failure_at("k", later);
        assert_eq!(throttle.check_at("k", later).unwrap_err(), BASE_DELAY * 2);
        // Other keys are unaffected.
        assert!(throttle.check_at("other", later).is_ok());
    }

    #[test]
    fn the_wait_never_exceeds_the_maximum() {
        let throttle = LoginThrottle::new();
        let t0 = Instant::now();
        for _ in 0..40 {
            throttle.record_failure_at("k", t0);
        }
        assert_eq!(throttle.check_at("k", t0).unwrap_err(), MAX_DELAY);
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_window_or_a_success() {
        let throttle = LoginThrottle::new();
        let t0 = Instant::now();
        for _ in 0..4 {
            throttle.record_failure_at("k", t0);
        }
        let quiet = t0 + WINDOW + Duration::from_secs(1);
        throttle.record_failure_at("k", quiet);
        assert!(throttle.check_at("k", quiet).is_ok());
        for _ in 0..4 {
            throttle.record_failure_at("k", quiet);
        }
        assert!(throttle.check_at("k", quiet).is_err());
        throttle.record_success("k");
        assert!(throttle.check_at("k", quiet).is_ok());
    }

    #[test]
    fn the_key_includes_the_client_address_when_known() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(LoginThrottle::key("a@b.c", Some(ip)), "a@b.c|192.0.2.1");
        assert_eq!(LoginThrottle::key("a@b.c", None), "a@b.c");
    }
}
