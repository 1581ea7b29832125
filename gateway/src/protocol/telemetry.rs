//! Telemetry: decoding a collar's fixes, one or a buffered batch, and validating each on its own.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::encode::{Writer, encode};
use super::error::DecodeError;
use super::node::{self, Encoding, Location, Node};
use super::validate::{Rejection, ValidationLimits, check_time, field};
use super::values::{
    Accuracy, Altitude, Battery, Heading, Latitude, Longitude, Satellites, Seq, Speed,
};

/// Most fixes one telemetry message may carry. A day of buffered fixes at one a minute is 1,440;
/// collars out of coverage that long should send several messages, each acked on its own.
pub const MAX_FIXES_PER_MESSAGE: usize = 1000;

/// Wire names, in the order fields are validated and encoded.
const FIELDS: [&str; 10] = [
    "ts", "lat", "lon", "alt", "acc", "spd", "hdg", "sat", "bat", "seq",
];

/// One fix as the collar sent it: the right types, not yet checked against ranges or the clock.
///
/// It serializes back to the wire's JSON field names, which makes it a readable dead-letter record
/// for a fix that [`RawFix::validate`] refused. It is `Copy`, so validating it keeps the caller's
/// copy for that purpose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RawFix {
    #[serde(rename = "ts")]
    pub device_time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    #[serde(rename = "alt", skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    #[serde(rename = "acc", skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(rename = "spd", skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    #[serde(rename = "hdg", skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    #[serde(rename = "sat", skip_serializing_if = "Option::is_none")]
    pub satellites: Option<i64>,
    #[serde(rename = "bat", skip_serializing_if = "Option::is_none")]
    pub battery: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A position fix that passed validation: every value is in range and the time is plausible.
///
/// Serializes to the canonical JSON form of the wire format (RFC 3339 `ts`, absent fields omitted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    #[serde(rename = "ts")]
    pub device_time: DateTime<Utc>,
    pub lat: Latitude,
    pub lon: Longitude,
    #[serde(rename = "alt", skip_serializing_if = "Option::is_none")]
    pub altitude: Option<Altitude>,
    #[serde(rename = "acc", skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Accuracy>,
    #[serde(rename = "spd", skip_serializing_if = "Option::is_none")]
    pub speed: Option<Speed>,
    #[serde(rename = "hdg", skip_serializing_if = "Option::is_none")]
    pub heading: Option<Heading>,
    #[serde(rename = "sat", skip_serializing_if = "Option::is_none")]
    pub satellites: Option<Satellites>,
    #[serde(rename = "bat", skip_serializing_if = "Option::is_none")]
    pub battery: Option<Battery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
}

/// Decodes a telemetry payload, JSON or CBOR, one fix or an array of them.
///
/// Fails as a whole only for structural problems; range and clock checks are left to
/// [`RawFix::validate`] so that one bad fix never costs the rest of the batch.
pub fn decode_telemetry(payload: &[u8]) -> Result<Vec<RawFix>, DecodeError> {
    let (_, root) = node::parse(payload)?;
    match root {
        Node::Map(entries) => Ok(vec![raw_fix(&entries, Location::TOP)?]),
        Node::Array(items) => {
            if items.is_empty() {
                return Err(DecodeError::EmptyBatch);
            }
            if items.len() > MAX_FIXES_PER_MESSAGE {
                return Err(DecodeError::TooManyFixes {
                    count: items.len(),
                    max: MAX_FIXES_PER_MESSAGE,
                });
            }
            items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let at = Location { index: Some(index) };
                    match item {
                        Node::Map(entries) => raw_fix(entries, at),
                        other => Err(DecodeError::WrongShape {
                            expected: "each element of a telemetry array to be an object (one fix)",
                            found: format!("{} at [{index}]", other.describe()),
                        }),
                    }
                })
                .collect()
        }
        other => Err(DecodeError::WrongShape {
            expected: "a telemetry object or an array of them",
            found: other.describe(),
        }),
    }
}

fn raw_fix(entries: &[(Option<String>, Node)], at: Location) -> Result<RawFix, DecodeError> {
    let [ts, lat, lon, alt, acc, spd, hdg, sat, bat, seq] = node::pick(entries, FIELDS, at)?;
    let number = |n: Option<&Node>, name| n.map(|n| node::number(n, name, at)).transpose();
    let integer = |n: Option<&Node>, name| n.map(|n| node::integer(n, name, at)).transpose();
    Ok(RawFix {
        device_time: node::timestamp(node::required(ts, "ts", at)?, "ts", at)?,
        lat: node::number(node::required(lat, "lat", at)?, "lat", at)?,
        lon: node::number(node::required(lon, "lon", at)?, "lon", at)?,
        altitude: number(alt, "alt")?,
        accuracy: number(acc, "acc")?,
        speed: number(spd, "spd")?,
        heading: number(hdg, "hdg")?,
        satellites: integer(sat, "sat")?,
        battery: integer(bat, "bat")?,
        seq: seq.map(|n| node::unsigned(n, "seq", at)).transpose()?,
    })
}

impl RawFix {
    /// Checks every value against its range and the device time against the server clock `now`.
    ///
    /// The first failing field is reported; fields are checked in wire order (`ts`, `lat`, ...).
    pub fn validate(self, now: DateTime<Utc>, limits: &ValidationLimits) -> Result<Fix, Rejection> {
        Ok(Fix {
            device_time: check_time("ts", self.device_time, now, limits)?,
            lat: field("lat", Latitude::parse(self.lat))?,
            lon: field("lon", Longitude::parse(self.lon))?,
            altitude: field("alt", self.altitude.map(Altitude::parse).transpose())?,
            accuracy: field("acc", self.accuracy.map(Accuracy::parse).transpose())?,
            speed: field("spd", self.speed.map(Speed::parse).transpose())?,
            heading: field("hdg", self.heading.map(Heading::parse).transpose())?,
            satellites: field("sat", self.satellites.map(Satellites::parse).transpose())?,
            battery: field("bat", self.battery.map(Battery::parse).transpose())?,
            seq: field("seq", self.seq.map(Seq::parse).transpose())?,
        })
    }
}

impl From<Fix> for RawFix {
    fn from(fix: Fix) -> Self {
        RawFix {
            device_time: fix.device_time,
            lat: fix.lat.get(),
            lon: fix.lon.get(),
            altitude: fix.altitude.map(f64::from),
            accuracy: fix.accuracy.map(f64::from),
            speed: fix.speed.map(f64::from),
            heading: fix.heading.map(f64::from),
            satellites: fix.satellites.map(|v| i64::from(v.get())),
            battery: fix.battery.map(|v| i64::from(v.get())),
            seq: fix.seq.map(Seq::as_u64),
        }
    }
}

/// Encodes fixes the way a collar would publish them: one fix as an object, several as an array.
///
/// Fields in wire order, `ts` as integer epoch milliseconds, every number in its shortest lossless
/// form (see [`super::encode`]). Used by the firmware simulator and by tests.
pub fn encode_telemetry(fixes: &[RawFix], encoding: Encoding) -> Vec<u8> {
    encode(encoding, |w| match fixes {
        [one] => write_fix(w, one),
        many => {
            w.array(many.len());
            for fix in many {
                write_fix(w, fix);
            }
        }
    })
}

fn write_fix(w: &mut dyn Writer, fix: &RawFix) {
    let optional_numbers = [
        ("alt", fix.altitude),
        ("acc", fix.accuracy),
        ("spd", fix.speed),
        ("hdg", fix.heading),
    ];
    let optional_integers = [("sat", fix.satellites), ("bat", fix.battery)];
    let len = 3
        + optional_numbers.iter().filter(|(_, v)| v.is_some()).count()
        + optional_integers
            .iter()
            .filter(|(_, v)| v.is_some())
            .count()
        + usize::from(fix.seq.is_some());
    w.map(len);
    w.key("ts");
    w.time(fix.device_time);
    w.key("lat");
    w.number(fix.lat);
    w.key("lon");
    w.number(fix.lon);
    for (name, value) in optional_numbers {
        if let Some(v) = value {
            w.key(name);
            w.number(v);
        }
    }
    for (name, value) in optional_integers {
        if let Some(v) = value {
            w.key(name);
            w.integer(v);
        }
    }
    if let Some(seq) = fix.seq {
        w.key("seq");
        w.unsigned(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::validate::RejectReason;
    use crate::protocol::values::ValueError;

    fn now() -> DateTime<Utc> {
        at("2026-11-24T12:05:00Z")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn one(payload: &str) -> RawFix {
        let mut fixes = decode_telemetry(payload.as_bytes()).unwrap();
        assert_eq!(fixes.len(), 1);
        fixes.remove(0)
    }

    fn error(payload: &str) -> String {
        decode_telemetry(payload.as_bytes())
            .unwrap_err()
            .to_string()
    }

    fn validated(payload: &str) -> Result<Fix, Rejection> {
        one(payload).validate(now(), &ValidationLimits::default())
    }

    const FULL: &str = r#"{"ts":"2026-11-24T12:00:00Z","lat":52.5200,"lon":13.4050,"alt":34.0,"acc":5.0,"spd":1.2,"hdg":270,"sat":9,"bat":87,"seq":1234}"#;

    #[test]
    fn a_fix_with_every_field_decodes_and_validates() {
        let fix = validated(FULL).unwrap();
        assert_eq!(fix.device_time, at("2026-11-24T12:00:00Z"));
        assert_eq!(fix.lat.get(), 52.52);
        assert_eq!(fix.lon.get(), 13.405);
        assert_eq!(fix.altitude.map(f64::from), Some(34.0));
        assert_eq!(fix.accuracy.map(f64::from), Some(5.0));
        assert_eq!(fix.speed.map(f64::from), Some(1.2));
        assert_eq!(fix.heading.map(f64::from), Some(270.0));
        assert_eq!(fix.satellites.map(|s| s.get()), Some(9));
        assert_eq!(fix.battery.map(|b| b.get()), Some(87));
        assert_eq!(fix.seq.map(|s| s.get()), Some(1234));
    }

    #[test]
    fn only_ts_lat_and_lon_are_required() {
        let fix = validated(r#"{"ts":1795521600000,"lat":0,"lon":0}"#).unwrap();
        assert_eq!(fix.device_time, at("2026-11-24T12:00:00Z"));
        assert_eq!(fix.altitude, None);
        assert_eq!(fix.seq, None);
    }

    #[test]
    fn a_fix_without_lat_is_a_decode_error() {
        assert_eq!(
            error(r#"{"ts":1795521600000,"lon":0}"#),
            "lat: required field is missing"
        );
        assert_eq!(
            error(r#"{"lat":1,"lon":0}"#),
            "ts: required field is missing"
        );
    }

    #[test]
    fn a_null_required_field_counts_as_missing() {
        assert_eq!(
            error(r#"{"ts":1795521600000,"lat":null,"lon":0}"#),
            "lat: required field is missing"
        );
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let fix = one(r#"{"ts":1795521600000,"lat":1,"lon":2,"alt":null,"seq":null}"#);
        assert_eq!(fix.altitude, None);
        assert_eq!(fix.seq, None);
    }

    #[test]
    fn a_latitude_given_as_a_string_is_the_wrong_type() {
        assert_eq!(
            error(r#"{"ts":1795521600000,"lat":"52.52","lon":0}"#),
            r#"lat: expected a number, found the string "52.52""#
        );
    }

    #[test]
    fn integer_fields_refuse_fractions() {
        assert_eq!(
            error(r#"{"ts":1795521600000,"lat":1,"lon":2,"sat":9.0}"#),
            "sat: expected an integer, found the number 9.0"
        );
        assert_eq!(
            error(r#"{"ts":1795521600000,"lat":1,"lon":2,"seq":1.5}"#),
            "seq: expected an unsigned integer, found the number 1.5"
        );
    }

    #[test]
    fn a_negative_seq_is_a_decode_error() {
        assert_eq!(
            error(r#"{"ts":1795521600000,"lat":1,"lon":2,"seq":-1}"#),
            "seq: -1 is out of range 0..=18446744073709551615"
        );
    }

    #[test]
    fn a_seq_above_i64_max_decodes_but_is_rejected_by_validation() {
        let err = validated(
            r#"{"ts":"2026-11-24T12:00:00Z","lat":1,"lon":2,"seq":18446744073709551615}"#,
        )
        .unwrap_err();
        assert_eq!(err.field, "seq");
        assert_eq!(
            err.to_string(),
            "seq: 18446744073709551615 is out of range 0..=9223372036854775807"
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let fix = one(r#"{"ts":1795521600000,"lat":1,"lon":2,"hdop":0.9,"extra":{"a":[1]}}"#);
        assert_eq!(fix.lat, 1.0);
    }

    #[test]
    fn a_field_sent_twice_is_a_decode_error() {
        assert_eq!(
            error(r#"{"ts":1795521600000,"lat":1,"lat":2,"lon":2}"#),
            "lat: field appears more than once"
        );
    }

    #[test]
    fn a_batch_decodes_to_one_raw_fix_per_element() {
        let fixes = decode_telemetry(
            br#"[{"ts":1795521600000,"lat":1,"lon":2},{"ts":1795521601000,"lat":3,"lon":4}]"#,
        )
        .unwrap();
        assert_eq!(fixes.len(), 2);
        assert_eq!(fixes[1].lat, 3.0);
    }

    #[test]
    fn errors_inside_a_batch_name_the_element() {
        assert_eq!(
            error(r#"[{"ts":1795521600000,"lat":1,"lon":2},{"ts":1795521601000,"lat":3}]"#),
            "[1].lon: required field is missing"
        );
        assert_eq!(
            error(r#"[{"ts":1795521600000,"lat":1,"lon":2},7]"#),
            "expected each element of a telemetry array to be an object (one fix), found the integer 7 at [1]"
        );
    }

    #[test]
    fn an_empty_batch_is_a_decode_error() {
        assert_eq!(decode_telemetry(b"[]"), Err(DecodeError::EmptyBatch));
    }

    #[test]
    fn a_batch_of_more_than_1000_fixes_is_a_decode_error() {
        let fix = r#"{"ts":1795521600000,"lat":1,"lon":2}"#;
        let batch = |n: usize| format!("[{}]", vec![fix; n].join(","));
        assert_eq!(
            decode_telemetry(batch(1000).as_bytes()).unwrap().len(),
            1000
        );
        assert_eq!(
            decode_telemetry(batch(1001).as_bytes()),
            Err(DecodeError::TooManyFixes {
                count: 1001,
                max: 1000
            })
        );
    }

    #[test]
    fn a_scalar_payload_is_the_wrong_shape() {
        assert_eq!(
            decode_telemetry(b"\"x\"").unwrap_err().kind(),
            "unknown_encoding"
        );
        assert_eq!(
            decode_telemetry(&[0x9f, 0xff]).unwrap_err(),
            DecodeError::EmptyBatch
        );
    }

    #[test]
    fn malformed_json_is_reported_with_its_position() {
        assert_eq!(
            error(r#"{"ts":1795521600000,"lat":1,"lon":"#),
            "malformed JSON: EOF while parsing a value at line 1 column 34"
        );
    }

    #[test]
    fn a_fix_with_latitude_91_is_rejected() {
        let err = validated(r#"{"ts":"2026-11-24T12:00:00Z","lat":91.0,"lon":0}"#).unwrap_err();
        assert_eq!(err.field, "lat");
        assert_eq!(err.to_string(), "lat: 91.0 is out of range -90..=90");
    }

    #[test]
    fn every_optional_field_is_range_checked() {
        let cases = [
            (r#""alt":-501"#, "alt"),
            (r#""acc":-1"#, "acc"),
            (r#""spd":150"#, "spd"),
            (r#""hdg":400"#, "hdg"),
            (r#""sat":65"#, "sat"),
            (r#""bat":101"#, "bat"),
            (r#""bat":-1"#, "bat"),
        ];
        for (extra, field) in cases {
            let payload = format!(r#"{{"ts":"2026-11-24T12:00:00Z","lat":1,"lon":2,{extra}}}"#);
            let err = validated(&payload).unwrap_err();
            assert_eq!(err.field, field, "{payload}");
            assert!(matches!(
                err.reason,
                RejectReason::Value(ValueError::OutOfRange { .. })
            ));
        }
    }

    #[test]
    fn a_fix_from_more_than_five_minutes_in_the_future_is_rejected() {
        let err = validated(r#"{"ts":"2026-11-24T12:10:01Z","lat":1,"lon":2}"#).unwrap_err();
        assert_eq!(err.field, "ts");
        assert!(matches!(err.reason, RejectReason::InFuture { .. }));
    }

    #[test]
    fn a_fix_older_than_retention_is_rejected() {
        let err = validated(r#"{"ts":"2025-11-01T00:00:00Z","lat":1,"lon":2}"#).unwrap_err();
        assert!(matches!(err.reason, RejectReason::TooOld { .. }));
    }

    #[test]
    fn limits_are_configurable() {
        let limits = ValidationLimits {
            max_future_skew: chrono::TimeDelta::zero(),
            max_age: chrono::TimeDelta::days(1),
        };
        let fix = one(r#"{"ts":"2026-11-24T12:05:01Z","lat":1,"lon":2}"#);
        assert!(fix.validate(now(), &limits).is_err());
        let fix = one(r#"{"ts":"2026-11-22T12:05:01Z","lat":1,"lon":2}"#);
        assert!(fix.validate(now(), &limits).is_err());
    }

    #[test]
    fn one_bad_fix_in_a_batch_does_not_block_the_others() {
        let fixes = decode_telemetry(
            br#"[{"ts":"2026-11-24T12:00:00Z","lat":1,"lon":2},
                {"ts":"2026-11-24T12:00:01Z","lat":91,"lon":2},
                {"ts":"2026-11-24T12:00:02Z","lat":3,"lon":4}]"#,
        )
        .unwrap();
        let results: Vec<_> = fixes
            .into_iter()
            .map(|f| f.validate(now(), &ValidationLimits::default()))
            .collect();
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
        assert!(results[2].is_ok());
    }

    #[test]
    fn a_rejected_raw_fix_serializes_with_wire_names_for_the_dead_letter_table() {
        let raw = one(r#"{"ts":"2026-11-24T12:00:00Z","lat":91.5,"lon":2,"seq":7}"#);
        assert_eq!(
            serde_json::to_string(&raw).unwrap(),
            r#"{"ts":"2026-11-24T12:00:00Z","lat":91.5,"lon":2.0,"seq":7}"#
        );
    }

    #[test]
    fn a_valid_fix_serializes_to_the_canonical_json_form() {
        let fix = validated(FULL).unwrap();
        assert_eq!(
            serde_json::to_value(fix).unwrap(),
            serde_json::json!({"ts":"2026-11-24T12:00:00Z","lat":52.52,"lon":13.405,"alt":34.0,"acc":5.0,"spd":1.2,"hdg":270.0,"sat":9,"bat":87,"seq":1234})
        );
    }

    #[test]
    fn encoded_fixes_decode_to_the_same_fixes_in_both_encodings() {
        let fixes = decode_telemetry(
            format!(r#"[{FULL},{{"ts":"2026-11-24T12:00:00.5Z","lat":-33.8688,"lon":151.2093}}]"#)
                .as_bytes(),
        )
        .unwrap();
        for encoding in [Encoding::Json, Encoding::Cbor] {
            assert_eq!(
                decode_telemetry(&encode_telemetry(&fixes, encoding)).unwrap(),
                fixes,
                "{encoding}"
            );
            assert_eq!(
                decode_telemetry(&encode_telemetry(&fixes[..1], encoding)).unwrap(),
                fixes[..1],
                "{encoding}"
            );
        }
    }

    #[test]
    fn a_valid_fix_converts_back_to_the_raw_fix_it_came_from() {
        let raw = one(FULL);
        let fix = raw.validate(now(), &ValidationLimits::default()).unwrap();
        assert_eq!(RawFix::from(fix), raw);
    }
}
