//! Per-credential request rate limit for the API: a token bucket per API key or per user.
//!
//! One client looping on the API must not starve the others or the database. The limit is per
//! credential, not per address: many users share a carrier-grade NAT, and one user's
//! integration has its own API key, hence its own bucket. Access tokens of one user share that
//! user's bucket, so signing in on more devices does not multiply the allowance.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Whose bucket a request takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    User(i64),
    ApiKey(i64),
}

/// Buckets kept before idle ones are forgotten; a full bucket is the same as no bucket.
const HOUSEKEEPING_AT: usize = 10_000;

pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<Bucket>,
    clock: DefaultClock,
}

impl RateLimit {
    /// `per_second` sustained, bursts of up to `burst` requests.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> RateLimit {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        RateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` if the request may go ahead, else how long to wait before the next one would.
    pub fn check(&self, bucket: Bucket) -> Result<(), Duration> {
        if self.limiter.len() > HOUSEKEEPING_AT {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&bucket)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_next_request_is_told_how_long_to_wait() {
        let limit = RateLimit::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            assert_eq!(limit.check(Bucket::User(1)), Ok(()));
        }
        let wait = limit.check(Bucket::User(1)).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Other credentials have their own buckets.
        assert_eq!(limit.check(Bucket::User(2)), Ok(()));
        assert_eq!(limit.check(Bucket::ApiKey(1)), Ok(()));
    }
}
