//! Status reports: battery, charging, firmware and signal, sent whenever they change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::encode::encode;
use super::error::DecodeError;
use super::node::{self, Encoding, Location, Node};
use super::validate::{Rejection, ValidationLimits, check_time, field};
use super::values::{Battery, FirmwareVersion, Rssi};

const FIELDS: [&str; 5] = ["ts", "bat", "chg", "fw", "rssi"];

/// A status report as the collar sent it, types checked but not ranges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawStatus {
    #[serde(rename = "ts", skip_serializing_if = "Option::is_none")]
    pub device_time: Option<DateTime<Utc>>,
    #[serde(rename = "bat", skip_serializing_if = "Option::is_none")]
    pub battery: Option<i64>,
    #[serde(rename = "chg", skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
    #[serde(rename = "fw", skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i64>,
}

/// A validated status report. At least one of the optional values is present.
///
/// Serializes to the canonical JSON form of the wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The device's time when it sent one, otherwise the time the server received the report.
    #[serde(rename = "ts")]
    pub time: DateTime<Utc>,
    #[serde(rename = "bat", skip_serializing_if = "Option::is_none")]
    pub battery: Option<Battery>,
    #[serde(rename = "chg", skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
    #[serde(rename = "fw", skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwareVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<Rssi>,
}

/// Decodes a status payload (a JSON object or CBOR map).
pub fn decode_status(payload: &[u8]) -> Result<RawStatus, DecodeError> {
    let (_, root) = node::parse(payload)?;
    let Node::Map(entries) = root else {
        return Err(DecodeError::WrongShape {
            expected: "a status object",
            found: root.describe(),
        });
    };
    let at = Location::TOP;
    let [ts, bat, chg, fw, rssi] = node::pick(&entries, FIELDS, at)?;
    // A report that says nothing is a firmware bug worth seeing, not a heartbeat: liveness is
    // what the `online` topic and MQTT keepalive are for.
    if bat.is_none() && chg.is_none() && fw.is_none() && rssi.is_none() {
        return Err(DecodeError::EmptyStatus);
    }
    Ok(RawStatus {
        device_time: ts.map(|n| node::timestamp(n, "ts", at)).transpose()?,
        battery: bat.map(|n| node::integer(n, "bat", at)).transpose()?,
        charging: chg.map(|n| node::boolean(n, "chg", at)).transpose()?,
        firmware: fw
            .map(|n| node::text(n, "fw", at).map(str::to_owned))
            .transpose()?,
        rssi: rssi.map(|n| node::integer(n, "rssi", at)).transpose()?,
    })
}

impl RawStatus {
    /// Checks ranges and, when the collar sent a time, that it is plausible; without one the
    /// report is dated `now`, the time the server received it.
    pub fn validate(
        self,
        now: DateTime<Utc>,
        limits: &ValidationLimits,
    ) -> Result<Status, Rejection> {
        Ok(Status {
            time: match self.device_time {
                Some(t) => check_time("ts", t, now, limits)?,
                None => now,
            },
            battery: field("bat", self.battery.map(Battery::parse).transpose())?,
            charging: self.charging,
            firmware: field(
                "fw",
                self.firmware.map(FirmwareVersion::try_from).transpose(),
            )?,
            rssi: field("rssi", self.rssi.map(Rssi::parse).transpose())?,
        })
    }
}

/// Encodes a status report the way a collar would publish it (for the simulator and tests):
/// fields in wire order, `ts` as integer epoch milliseconds.
pub fn encode_status(status: &RawStatus, encoding: Encoding) -> Vec<u8> {
    encode(encoding, |w| {
        let len = usize::from(status.device_time.is_some())
            + usize::from(status.battery.is_some())
            + usize::from(status.charging.is_some())
            + usize::from(status.firmware.is_some())
            + usize::from(status.rssi.is_some());
        w.map(len);
        if let Some(t) = status.device_time {
            w.key("ts");
            w.time(t);
        }
        if let Some(v) = status.battery {
            w.key("bat");
            w.integer(v);
        }
        if let Some(v) = status.charging {
            w.key("chg");
            w.boolean(v);
        }
        if let Some(v) = &status.firmware {
            w.key("fw");
            w.text(v);
        }
        if let Some(v) = status.rssi {
            w.key("rssi");
            w.integer(v);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn status(payload: &str) -> Result<Status, String> {
        decode_status(payload.as_bytes())
            .map_err(|e| e.to_string())?
            .validate(at("2026-11-24T12:05:00Z"), &ValidationLimits::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_status_report_is_accepted() {
        let s =
            status(r#"{"bat":87,"chg":false,"fw":"1.4.2","rssi":-71,"ts":"2026-11-24T12:00:00Z"}"#)
                .unwrap();
        assert_eq!(s.time, at("2026-11-24T12:00:00Z"));
        assert_eq!(s.battery.map(Battery::get), Some(87));
        assert_eq!(s.charging, Some(false));
        assert_eq!(
            s.firmware.as_ref().map(FirmwareVersion::as_str),
            Some("1.4.2")
        );
        assert_eq!(s.rssi.map(Rssi::get), Some(-71));
    }

    #[test]
    fn a_status_without_ts_is_dated_when_it_was_received() {
        let s = status(r#"{"chg":true}"#).unwrap();
        assert_eq!(s.time, at("2026-11-24T12:05:00Z"));
    }

    #[test]
    fn a_status_reporting_nothing_is_a_decode_error() {
        assert_eq!(
            status("{}").unwrap_err(),
            "status reports none of bat, chg, fw, rssi"
        );
        assert_eq!(
            status(r#"{"ts":1795521600000,"mood":"happy"}"#).unwrap_err(),
            "status reports none of bat, chg, fw, rssi"
        );
    }

    #[test]
    fn status_values_are_range_checked() {
        assert_eq!(
            status(r#"{"bat":150}"#).unwrap_err(),
            "bat: 150 is out of range 0..=100"
        );
        assert_eq!(
            status(r#"{"rssi":5}"#).unwrap_err(),
            "rssi: 5 is out of range -150..=0"
        );
        assert_eq!(
            status(&format!(r#"{{"fw":"{}"}}"#, "1".repeat(33))).unwrap_err(),
            "fw: must be at most 32 characters, found 33"
        );
        assert_eq!(status(r#"{"fw":""}"#).unwrap_err(), "fw: must not be empty");
    }

    #[test]
    fn status_fields_of_the_wrong_type_are_decode_errors() {
        assert_eq!(
            status(r#"{"chg":"yes"}"#).unwrap_err(),
            r#"chg: expected true or false, found the string "yes""#
        );
        assert_eq!(
            status(r#"{"fw":142}"#).unwrap_err(),
            "fw: expected a string, found the integer 142"
        );
    }

    #[test]
    fn a_status_from_the_future_is_rejected() {
        assert!(
            status(r#"{"bat":1,"ts":"2026-11-24T13:00:00Z"}"#)
                .unwrap_err()
                .starts_with("ts: ")
        );
    }

    #[test]
    fn a_status_array_is_the_wrong_shape() {
        assert_eq!(
            status(r#"[{"bat":1}]"#).unwrap_err(),
            "expected a status object, found an array of 1 item"
        );
    }

    #[test]
    fn encoded_status_reports_decode_to_the_same_report() {
        let raw = decode_status(
            br#"{"bat":87,"chg":false,"fw":"1.4.2","rssi":-71,"ts":"2026-11-24T12:00:00Z"}"#,
        )
        .unwrap();
        for encoding in [Encoding::Json, Encoding::Cbor] {
            assert_eq!(decode_status(&encode_status(&raw, encoding)).unwrap(), raw);
        }
    }
}
