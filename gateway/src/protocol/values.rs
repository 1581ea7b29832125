//! Validated values of the device protocol: once built, a value is known to be in range.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a raw value cannot become a domain value. Field-agnostic: callers prefix the field name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("{value} is not a finite number")]
    NotFinite { value: f64 },
    #[error("{value} is out of range {range}")]
    OutOfRange { value: String, range: &'static str },
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, found {len}")]
    TooLong { len: usize, max: usize },
    #[error("must only contain {allowed}, found {found:?} at index {index}")]
    InvalidChar {
        found: char,
        index: usize,
        allowed: &'static str,
    },
}

/// Defines a newtype over `f64` that only holds finite values inside an inclusive range.
macro_rules! bounded_f64 {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr, $range:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
        #[serde(transparent)]
        pub struct $name(f64);

        impl $name {
            pub const MIN: f64 = $min;
            pub const MAX: f64 = $max;

            pub fn parse(value: f64) -> Result<Self, ValueError> {
                if !value.is_finite() {
                    return Err(ValueError::NotFinite { value });
                }
                if !(Self::MIN..=Self::MAX).contains(&value) {
                    return Err(ValueError::OutOfRange {
                        value: format!("{value:?}"),
                        range: $range,
                    });
                }
                Ok(Self(value))
            }

            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = ValueError;
            fn try_from(value: f64) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for f64 {
            fn from(value: $name) -> f64 {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::parse(f64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

bounded_f64!(
    /// Degrees north, WGS 84.
    Latitude, -90.0, 90.0, "-90..=90"
);
bounded_f64!(
    /// Degrees east, WGS 84.
    Longitude, -180.0, 180.0, "-180..=180"
);
bounded_f64!(
    /// Metres above sea level. The range spans the Dead Sea shore to above anywhere a pet walks;
    /// readings outside it are receiver glitches.
    Altitude, -500.0, 9000.0, "-500..=9000"
);
bounded_f64!(
    /// Horizontal accuracy radius in metres. Cell-tower fallbacks can be kilometres wide, so the cap
    /// is generous; beyond 100 km the fix is worthless.
    Accuracy, 0.0, 100_000.0, "0..=100000"
);
bounded_f64!(
    /// Ground speed in m/s. A pet in a car stays under 60 m/s; 100 leaves headroom for a train.
    Speed, 0.0, 100.0, "0..=100"
);

/// Course over ground in degrees clockwise from true north, `0 <= h < 360`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Heading(f64);

impl Heading {
    pub fn parse(value: f64) -> Result<Self, ValueError> {
        if !value.is_finite() {
            return Err(ValueError::NotFinite { value });
        }
        // Some receivers round 359.6 up to 360; it is the same direction as 0.
        if value == 360.0 {
            return Ok(Self(0.0));
        }
        if !(0.0..360.0).contains(&value) {
            return Err(ValueError::OutOfRange {
                value: format!("{value:?}"),
                range: "0..360",
            });
        }
        Ok(Self(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Heading {
    type Error = ValueError;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Heading> for f64 {
    fn from(value: Heading) -> f64 {
        value.0
    }
}

impl fmt::Display for Heading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for Heading {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(f64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Defines a newtype over a small integer that only holds values inside an inclusive range.
macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident, $repr:ty, $min:expr, $max:expr, $range:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name($repr);

        impl $name {
            pub const MIN: $repr = $min;
            pub const MAX: $repr = $max;

            pub fn parse(value: i64) -> Result<Self, ValueError> {
                match <$repr>::try_from(value) {
                    Ok(v) if (Self::MIN..=Self::MAX).contains(&v) => Ok(Self(v)),
                    _ => Err(ValueError::OutOfRange {
                        value: value.to_string(),
                        range: $range,
                    }),
                }
            }

            pub fn get(self) -> $repr {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = ValueError;
            fn try_from(value: i64) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::parse(i64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

bounded_int!(
    /// Satellites used in the fix. Receivers tracking every constellation top out well below 64.
    Satellites, u8, 0, 64, "0..=64"
);
bounded_int!(
    /// Battery charge in percent.
    Battery, u8, 0, 100, "0..=100"
);
bounded_int!(
    /// Received signal strength in dBm. Radios report negative values; anything at or above 0 dBm
    /// or below -150 dBm is not a real reading.
    Rssi, i16, -150, 0, "-150..=0"
);

/// The collar's monotonically increasing message counter, which acks refer back to.
///
/// Collars send it as an unsigned integer, but storage keeps it in a PostgreSQL `bigint`, so values
/// above `i64::MAX` cannot be acknowledged and are refused here rather than wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Seq(i64);

impl Seq {
    pub const MAX: i64 = i64::MAX;

    pub fn parse(value: u64) -> Result<Self, ValueError> {
        i64::try_from(value)
            .map(Self)
            .map_err(|_| ValueError::OutOfRange {
                value: value.to_string(),
                range: "0..=9223372036854775807",
            })
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The same value as the wire's unsigned integer.
    pub fn as_u64(self) -> u64 {
        // Never negative by construction, so the absolute value is the value.
        self.0.unsigned_abs()
    }
}

impl TryFrom<u64> for Seq {
    type Error = ValueError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<i64> for Seq {
    type Error = ValueError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        u64::try_from(value)
            .map_err(|_| ValueError::OutOfRange {
                value: value.to_string(),
                range: "0..=9223372036854775807",
            })
            .and_then(Self::parse)
    }
}

impl From<Seq> for i64 {
    fn from(value: Seq) -> i64 {
        value.0
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for Seq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

const TOKEN_CHARS: &str = "A-Z, a-z, 0-9, '_' and '-'";

fn check_token(value: &str, max: usize) -> Result<(), ValueError> {
    check_length(value, max)?;
    match value
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some((index, found)) => Err(ValueError::InvalidChar {
            found,
            index,
            allowed: TOKEN_CHARS,
        }),
        None => Ok(()),
    }
}

fn check_printable(value: &str, max: usize) -> Result<(), ValueError> {
    check_length(value, max)?;
    // Control characters would corrupt logs and dashboards that show these strings verbatim.
    match value.chars().enumerate().find(|(_, c)| c.is_control()) {
        Some((index, found)) => Err(ValueError::InvalidChar {
            found,
            index,
            allowed: "printable characters",
        }),
        None => Ok(()),
    }
}

fn check_length(value: &str, max: usize) -> Result<(), ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValueError::TooLong { len, max });
    }
    Ok(())
}

/// Defines a newtype over `String` whose content passed `$check`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, ValueError> {
                $check(value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValueError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $check(&value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::try_from(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Longest tracker id, in characters.
pub const MAX_TRACKER_ID_CHARS: usize = 64;
/// Longest command id, in characters.
pub const MAX_COMMAND_ID_CHARS: usize = 64;
/// Longest command type, in characters.
pub const MAX_COMMAND_TYPE_CHARS: usize = 32;
/// Longest firmware version, in characters.
pub const MAX_FIRMWARE_VERSION_CHARS: usize = 32;

checked_string!(
    /// A collar's identity: 1..=64 characters of `[A-Za-z0-9_-]`.
    ///
    /// The alphabet keeps ids safe inside MQTT topics (no `/`, `+`, `#`), URLs and log lines, and
    /// it doubles as the MQTT client id and username.
    TrackerId,
    |v: &str| check_token(v, MAX_TRACKER_ID_CHARS)
);
checked_string!(
    /// Identifies one command sent to a collar, echoed back in its results: 1..=64 printable characters.
    CommandId,
    |v: &str| check_printable(v, MAX_COMMAND_ID_CHARS)
);
checked_string!(
    /// What a command asks the collar to do, e.g. `buzzer`: 1..=32 characters of `[A-Za-z0-9_-]`.
    CommandType,
    |v: &str| check_token(v, MAX_COMMAND_TYPE_CHARS)
);
checked_string!(
    /// The collar's firmware version as it reports it, e.g. `1.4.2`: 1..=32 printable characters.
    FirmwareVersion,
    |v: &str| check_printable(v, MAX_FIRMWARE_VERSION_CHARS)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latitudes_from_minus_90_to_90_are_accepted() {
        for v in [-90.0, -0.0, 0.0, 52.52, 90.0] {
            assert_eq!(Latitude::parse(v).map(Latitude::get), Ok(v));
        }
    }

    #[test]
    fn a_latitude_of_91_is_rejected_with_the_range_in_the_message() {
        let err = Latitude::parse(91.0).unwrap_err();
        assert_eq!(err.to_string(), "91.0 is out of range -90..=90");
    }

    #[test]
    fn non_finite_coordinates_are_rejected() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                Latitude::parse(v),
                Err(ValueError::NotFinite { .. })
            ));
            assert!(matches!(
                Longitude::parse(v),
                Err(ValueError::NotFinite { .. })
            ));
        }
        assert_eq!(
            Longitude::parse(f64::NAN).unwrap_err().to_string(),
            "NaN is not a finite number"
        );
    }

    #[test]
    fn longitudes_beyond_180_either_way_are_rejected() {
        assert!(Longitude::parse(180.0).is_ok());
        assert!(Longitude::parse(-180.0).is_ok());
        assert!(Longitude::parse(180.000001).is_err());
        assert!(Longitude::parse(-180.5).is_err());
    }

    #[test]
    fn altitude_is_limited_to_minus_500_through_9000_metres() {
        assert!(Altitude::parse(-500.0).is_ok());
        assert!(Altitude::parse(9000.0).is_ok());
        assert!(Altitude::parse(-500.1).is_err());
        assert!(Altitude::parse(9000.1).is_err());
    }

    #[test]
    fn accuracy_must_be_between_zero_and_100_km() {
        assert!(Accuracy::parse(0.0).is_ok());
        assert!(Accuracy::parse(100_000.0).is_ok());
        assert!(Accuracy::parse(-0.1).is_err());
        assert!(Accuracy::parse(100_000.1).is_err());
    }

    #[test]
    fn speed_must_be_between_zero_and_100_metres_per_second() {
        assert!(Speed::parse(0.0).is_ok());
        assert!(Speed::parse(100.0).is_ok());
        assert!(Speed::parse(-1.0).is_err());
        assert!(Speed::parse(100.5).is_err());
    }

    #[test]
    fn a_heading_of_360_means_north() {
        assert_eq!(Heading::parse(360.0).map(Heading::get), Ok(0.0));
    }

    #[test]
    fn headings_outside_0_to_360_are_rejected() {
        assert!(Heading::parse(0.0).is_ok());
        assert!(Heading::parse(359.9).is_ok());
        assert!(Heading::parse(-0.5).is_err());
        assert_eq!(
            Heading::parse(360.5).unwrap_err().to_string(),
            "360.5 is out of range 0..360"
        );
    }

    #[test]
    fn satellites_battery_and_rssi_have_their_ranges() {
        assert!(Satellites::parse(0).is_ok());
        assert!(Satellites::parse(64).is_ok());
        assert!(Satellites::parse(65).is_err());
        assert!(Satellites::parse(-1).is_err());
        assert!(Battery::parse(100).is_ok());
        assert_eq!(
            Battery::parse(101).unwrap_err().to_string(),
            "101 is out of range 0..=100"
        );
        assert!(Battery::parse(i64::MIN).is_err());
        assert!(Rssi::parse(-150).is_ok());
        assert!(Rssi::parse(0).is_ok());
        assert!(Rssi::parse(1).is_err());
        assert!(Rssi::parse(-151).is_err());
    }

    #[test]
    fn a_seq_above_i64_max_is_rejected() {
        assert_eq!(Seq::parse(i64::MAX as u64).map(Seq::get), Ok(i64::MAX));
        assert_eq!(
            Seq::parse(i64::MAX as u64 + 1).unwrap_err().to_string(),
            "9223372036854775808 is out of range 0..=9223372036854775807"
        );
        assert!(Seq::try_from(-1_i64).is_err());
    }

    #[test]
    fn a_tracker_id_of_letters_digits_dash_and_underscore_is_accepted() {
        let id = TrackerId::parse("Collar_07-b").unwrap();
        assert_eq!(id.as_ref(), "Collar_07-b");
        assert_eq!(id.to_string(), "Collar_07-b");
    }

    #[test]
    fn a_tracker_id_with_mqtt_special_characters_is_rejected() {
        for bad in ["a/b", "a+b", "a#b", "a b", "é", "a\0"] {
            assert!(
                matches!(TrackerId::parse(bad), Err(ValueError::InvalidChar { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            TrackerId::parse("ab+").unwrap_err().to_string(),
            "must only contain A-Z, a-z, 0-9, '_' and '-', found '+' at index 2"
        );
    }

    #[test]
    fn a_tracker_id_must_have_1_to_64_characters() {
        assert_eq!(TrackerId::parse(""), Err(ValueError::Empty));
        assert!(TrackerId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            TrackerId::parse(&"a".repeat(65)),
            Err(ValueError::TooLong { len: 65, max: 64 })
        );
    }

    #[test]
    fn a_tracker_id_round_trips_through_serde_as_a_string() {
        let id = TrackerId::parse("collar-1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"collar-1\"");
        assert_eq!(serde_json::from_str::<TrackerId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TrackerId>("\"a/b\"").is_err());
    }

    #[test]
    fn firmware_versions_longer_than_32_characters_are_rejected() {
        assert!(FirmwareVersion::parse("1.4.2-rc.1+build.77").is_ok());
        assert!(FirmwareVersion::parse(&"9".repeat(33)).is_err());
        assert!(FirmwareVersion::parse("1.4\n").is_err());
    }

    #[test]
    fn length_limits_count_characters_not_bytes() {
        assert!(FirmwareVersion::parse(&"ü".repeat(32)).is_ok());
        assert!(CommandId::parse(&"ü".repeat(64)).is_ok());
    }

    #[test]
    fn domain_values_refuse_invalid_input_when_deserialized() {
        assert!(serde_json::from_str::<Latitude>("91").is_err());
        assert!(serde_json::from_str::<Battery>("87").is_ok());
        assert!(serde_json::from_str::<Seq>("9223372036854775808").is_err());
    }
}
