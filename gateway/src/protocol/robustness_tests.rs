//! Fuzz-style checks that no input, however hostile, makes a decoder panic.

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_521_900, 0).unwrap()
}

/// Runs every uplink decoder (and validation, when decoding succeeds) on one payload.
fn decode_everything(payload: &[u8]) {
    let limits = ValidationLimits::default();
    if let Ok(fixes) = decode_telemetry(payload) {
        for fix in fixes {
            let _ = fix.validate(now(), &limits);
        }
    }
    if let Ok(status) = decode_status(payload) {
        let _ = status.validate(now(), &limits);
    }
    let _ = decode_online(payload);
    let _ = decode_command_result(payload);
    let _ = decode_ack(payload);
    let _ = decode_command(payload);
    let _ = detect_encoding(payload);
}

#[test]
fn decoding_random_bytes_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x9e7_7acc);
    for _ in 0..20_000 {
        let len = rng.random_range(0..300);
        let mut payload = vec![0u8; len];
        rng.fill(payload.as_mut_slice());
        // Steer most inputs past encoding detection so the parsers themselves get exercised.
        if let Some(first) = payload.first_mut() {
            *first = match rng.random_range(0..4) {
                0 => rng.random_range(0x80..=0xbf),
                1 => b'{',
                2 => b'[',
                _ => *first,
            };
        }
        decode_everything(&payload);
    }
}

#[test]
fn decoding_mutated_test_vectors_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for vector in test_vectors() {
        for _ in 0..300 {
            let mut payload = vector.payload.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=payload.len());
                match rng.random_range(0..3) {
                    0 if at < payload.len() => payload[at] = rng.random(),
                    1 if at < payload.len() => {
                        payload.remove(at);
                    }
                    _ => payload.insert(at, rng.random()),
                }
            }
            decode_everything(&payload);
        }
    }
}

#[test]
fn cbor_headers_announcing_huge_lengths_fail_without_allocating_them() {
    // A text string, a byte string, an array and a map each claiming 2^64-1 entries.
    for header in [0x7b_u8, 0x5b, 0x9b, 0xbb] {
        let mut payload = vec![0xa1, 0x62, b't', b's', header];
        payload.extend([0xff; 8]);
        decode_everything(&payload);
        let mut payload = vec![header];
        payload.extend([0xff; 8]);
        decode_everything(&payload);
    }
}

#[test]
fn random_topics_never_panic_and_are_only_allowed_when_well_formed() {
    let mut rng = StdRng::seed_from_u64(0x70b1c);
    let me = TrackerId::parse("collar-1").unwrap();
    let alphabet = b"trackers/collar-1/+#telemetry\0\xff ack-commands$";
    for _ in 0..20_000 {
        let len = rng.random_range(0..40);
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let topic = String::from_utf8_lossy(&bytes);
        let parsed = DeviceTopic::parse(&topic);
        if device_may_publish(&me, &topic) {
            assert!(parsed.is_ok(), "{topic:?}");
        }
        if device_may_subscribe(&me, &topic) {
            assert!(topic == topics::ack(&me) || topic == topics::commands(&me));
        }
    }
}
