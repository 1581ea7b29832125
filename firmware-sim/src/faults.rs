//! Fault modes for tests: collars that send garbage, send twice, run wrong clocks, lose acks or keep dropping their connection.

use std::time::Duration;

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
    /// A broken version of `good`, in one of the ways firmware bugs break payloads.
    pub(crate) fn malformed_payload(&self, rng: &mut StdRng, good: &str) -> Vec<u8> {
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
}
