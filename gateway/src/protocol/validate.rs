//! Judges decoded values against the domain's ranges and the server's clock.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use super::values::ValueError;

/// How far device clocks may stray from the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationLimits {
    /// Device times further ahead of the server clock than this are refused. GPS time is accurate,
    /// so a fix from the future means a broken clock rather than clock drift.
    pub max_future_skew: TimeDelta,
    /// Device times older than this are refused; it matches position retention, since a fix that
    /// would be deleted at once is not worth storing.
    pub max_age: TimeDelta,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        Self {
            max_future_skew: TimeDelta::minutes(5),
            max_age: TimeDelta::days(365),
        }
    }
}

/// Why one value of a decoded message was refused: `field` is the wire name (`lat`, `ts`, ...).
///
/// Its `Display` form (`lat: 91.0 is out of range -90..=90`) is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Rejection {
    pub field: &'static str,
    pub reason: RejectReason,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error(
        "{} is {} ahead of the server clock; at most {} is allowed",
        rfc3339(time), human(*ahead), human(*allowed)
    )]
    InFuture {
        time: DateTime<Utc>,
        ahead: TimeDelta,
        allowed: TimeDelta,
    },
    #[error(
        "{} is {} old; nothing older than {} is kept{}",
        rfc3339(time), human(*age), human(*max_age), seconds_hint(time)
    )]
    TooOld {
        time: DateTime<Utc>,
        age: TimeDelta,
        max_age: TimeDelta,
    },
}

impl Rejection {
    pub(crate) fn new(field: &'static str, reason: impl Into<RejectReason>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Helper so validation reads as one line per field.
pub(crate) fn field<T>(name: &'static str, result: Result<T, ValueError>) -> Result<T, Rejection> {
    result.map_err(|e| Rejection::new(name, e))
}

pub(crate) fn check_time(
    field: &'static str,
    time: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &ValidationLimits,
) -> Result<DateTime<Utc>, Rejection> {
    let ahead = time - now;
    if ahead > limits.max_future_skew {
        return Err(Rejection::new(
            field,
            RejectReason::InFuture {
                time,
                ahead,
                allowed: limits.max_future_skew,
            },
        ));
    }
    let age = now - time;
    if age > limits.max_age {
        return Err(Rejection::new(
            field,
            RejectReason::TooOld {
                time,
                age,
                max_age: limits.max_age,
            },
        ));
    }
    Ok(time)
}

fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A collar sending epoch seconds where milliseconds are expected lands in January 1970; say so.
fn seconds_hint(time: &DateTime<Utc>) -> &'static str {
    let millis = time.timestamp_millis();
    if (0..100_000_000_000).contains(&millis) {
        " (integer times are epoch milliseconds, not seconds)"
    } else {
        ""
    }
}

/// Shows a duration in whole units, e.g. "5 min 1 s", "365 days", "2 days 3 h"; every nonzero
/// unit is kept so that a limit and a value just past it never print the same.
fn human(d: TimeDelta) -> String {
    let total = d.num_seconds().unsigned_abs();
    let parts = [
        (total / 86_400, "days"),
        (total % 86_400 / 3600, "h"),
        (total % 3600 / 60, "min"),
        (total % 60, "s"),
    ];
    let Some(first) = parts.iter().position(|(n, _)| *n > 0) else {
        return "0 s".to_owned();
    };
    parts[first..]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| match (*n, *unit) {
            (1, "days") => "1 day".to_owned(),
            (n, unit) => format!("{n} {unit}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_time_up_to_five_minutes_ahead_is_accepted() {
        let now = at("2026-11-24T12:00:00Z");
        let limits = ValidationLimits::default();
        assert!(check_time("ts", at("2026-11-24T12:05:00Z"), now, &limits).is_ok());
    }

    #[test]
    fn a_time_more_than_five_minutes_ahead_is_rejected() {
        let now = at("2026-11-24T12:00:00Z");
        let err = check_time(
            "ts",
            at("2026-11-24T12:05:01Z"),
            now,
            &ValidationLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ts: 2026-11-24T12:05:01Z is 5 min 1 s ahead of the server clock; at most 5 min is allowed"
        );
    }

    #[test]
    fn a_time_older_than_retention_is_rejected() {
        let now = at("2026-11-24T12:00:00Z");
        let limits = ValidationLimits::default();
        assert!(check_time("ts", at("2025-11-24T12:00:00Z"), now, &limits).is_ok());
        let err = check_time("ts", at("2025-11-24T11:59:59Z"), now, &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ts: 2025-11-24T11:59:59Z is 365 days 1 s old; nothing older than 365 days is kept"
        );
    }

    #[test]
    fn a_time_in_1970_hints_at_seconds_sent_as_milliseconds() {
        let now = at("2026-11-24T12:00:00Z");
        let time = DateTime::from_timestamp_millis(1_795_000_000).unwrap();
        let err = check_time("ts", time, now, &ValidationLimits::default()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(integer times are epoch milliseconds, not seconds)"),
            "{err}"
        );
    }

    #[test]
    fn durations_are_shown_in_their_largest_sensible_unit() {
        assert_eq!(human(TimeDelta::zero()), "0 s");
        assert_eq!(human(TimeDelta::seconds(42)), "42 s");
        assert_eq!(human(TimeDelta::seconds(301)), "5 min 1 s");
        assert_eq!(human(TimeDelta::minutes(17)), "17 min");
        assert_eq!(
            human(TimeDelta::hours(5) + TimeDelta::seconds(9)),
            "5 h 9 s"
        );
        assert_eq!(human(TimeDelta::days(1)), "1 day");
        assert_eq!(
            human(TimeDelta::days(400) + TimeDelta::hours(3)),
            "400 days 3 h"
        );
    }
}
