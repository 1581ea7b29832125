//! Fault modes for tests: collars that send garbage, send twice, run wrong clocks, lose acks or keep dropping their connection.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use rand::rngs::StdRng;

/// How a collar misbehaves; the default is a healthy collar.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Chance per telemetry message of also sending a malformed payload (dead-lettered).
    pub malformed_rate: f64,
    /// Chance per telemetry message of sending it twice (the server stores it once).
    pub duplicate_rate: f64,
    /// Added to every fix time; beyond +5 min the server rejects the fixes (and still acks).
    pub clock_skew_ms: i64,
    /// Drop the connection abruptly about this often (no DISCONNECT: the Will fires).
    pub flap_every: Option<Duration>,
    /// Chance of ignoring an ack as if it never arrived: the collar re-sends on its timeout.
    pub lose_ack_rate: f64,
}

impl Faults {
    /// The time a collar with this clock stamps on a fix taken at `now`.
    pub(crate) fn device_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_add_signed(TimeDelta::milliseconds(self.clock_skew_ms))
            .unwrap_or(now)
    }

    /// A broken payload to send before `good`, as often as `malformed_rate` says.
    pub(crate) fn garbage(&self, rng: &mut StdRng, good: &[u8]) -> Option<Vec<u8>> {
        (rng.random::<f64>() < self.malformed_rate).then(|| malformed_payload(rng, good))
    }

    /// How many times to send a message: twice as often as `duplicate_rate` says.
    pub(crate) fn copies(&self, rng: &mut StdRng) -> usize {
        if rng.random::<f64>() < self.duplicate_rate {
            2
        } else {
            1
        }
    }

    /// Whether an ack that arrived goes unheard.
    pub(crate) fn loses_ack(&self, rng: &mut StdRng) -> bool {
        rng.random::<f64>() < self.lose_ack_rate
    }

    /// When the next connection drops of itself, if this collar flaps: about `flap_every` on.
    pub(crate) fn flap_after(&self, rng: &mut StdRng) -> Option<Duration> {
        self.flap_every
            .map(|d| d.mul_f64(rng.random_range(0.5..1.5)))
    }
}

/// A broken version of the JSON payload `good`, in one of the ways firmware bugs break payloads;
/// every one is dead-lettered by the server.
fn malformed_payload(rng: &mut StdRng, good: &[u8]) -> Vec<u8> {
    let good = String::from_utf8_lossy(good);
    match rng.random_range(0..4) {
        // Cut off mid-message, as a lost packet tail would.
        0 => good.as_bytes()[..good.len() / 2].to_vec(),
        // A number sent as a string.
        1 => good
            .replacen("\"lat\":", "\"lat\":\"", 1)
            .replacen(",\"lon\"", "\",\"lon\"", 1)
            .into_bytes(),
        // Not JSON or CBOR at all.
        2 => b"\x00\x01garbage".to_vec(),
        // A required field missing.
        _ => good.replacen("\"lat\":", "\"latitude\":", 1).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use gateway::protocol::{Encoding, decode_telemetry, encode_telemetry};
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn every_kind_of_garbage_is_refused_by_the_servers_decoder() {
        let fix =
            crate::load::synthetic_fix(Utc.timestamp_millis_opt(1_795_521_600_000).unwrap(), 7);
        let faults = Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        for fixes in [vec![fix], vec![fix, fix]] {
            let good = encode_telemetry(&fixes, Encoding::Json);
            for _ in 0..40 {
                let bad = faults.garbage(&mut rng, &good).unwrap();
                assert!(
                    decode_telemetry(&bad).is_err(),
                    "decoded: {}",
                    String::from_utf8_lossy(&bad)
                );
            }
        }
    }

    #[test]
    fn a_healthy_collar_sends_once_hears_every_ack_and_never_flaps() {
        let healthy = Faults::default();
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..100 {
            assert_eq!(healthy.copies(&mut rng), 1);
            assert!(!healthy.loses_ack(&mut rng));
            assert_eq!(healthy.garbage(&mut rng, b"{}"), None);
        }
        assert_eq!(healthy.flap_after(&mut rng), None);
        let now = Utc::now();
        assert_eq!(healthy.device_time(now), now);
    }
}
