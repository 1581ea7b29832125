//! Query-string parameters shared by the API routes: unknown keys refused, times and limits parsed with errors naming the key.
//!
//! Every date or time a request names, in the query or in a body, goes through [`check_time`]:
//! it must lie in [`earliest`]..=[`latest`] (documented in docs/api/openapi.yaml). chrono itself
//! accepts years from -262143 to 262142, where adding a day can overflow and PostgreSQL cannot
//! store the value; no pet was tracked before 1970, and four-digit years are what RFC 3339 writes.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use gateway::protocol::TrackerId;

use super::error::ApiError;

/// 400 naming the first query parameter the route does not know: a misspelt `form=` must not
/// silently mean "the default range".
pub fn only_known(query: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    // The smallest unknown key, so that the answer does not depend on the map's order.
    match query.keys().filter(|k| !known.contains(&k.as_str())).min() {
        Some(unknown) => Err(ApiError::bad_request(
            format!(
                "unknown query parameter {unknown:?}; known: {}",
                known.join(", ")
            ),
            Some(unknown),
        )),
        None => Ok(()),
    }
}

/// The earliest time a request may name: 1970-01-01T00:00:00Z.
pub fn earliest() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// The latest time a request may name: 9999-12-31T23:59:59.999999Z.
pub fn latest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}

/// The error for a time outside [`earliest`]..=[`latest`] or not in the expected form.
fn time_error(key: &str, form: &str) -> ApiError {
    ApiError::bad_request(
        format!("{key} must be {form} from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"),
        Some(key),
    )
}

/// `t` if it lies in [`earliest`]..=[`latest`]; else 400 naming `key`.
pub fn check_time(t: DateTime<Utc>, key: &str) -> Result<DateTime<Utc>, ApiError> {
    if (earliest()..=latest()).contains(&t) {
        Ok(t)
    } else {
        Err(time_error(key, "a time"))
    }
}

/// `t + delta`, or 400 naming `key` when the result leaves the range (or chrono's).
pub fn shift(t: DateTime<Utc>, delta: TimeDelta, key: &str) -> Result<DateTime<Utc>, ApiError> {
    t.checked_add_signed(delta)
        .ok_or_else(|| time_error(key, "a time"))
        .and_then(|t| check_time(t, key))
}

const RFC_3339: &str = "an RFC 3339 time (e.g. 2026-11-24T12:00:00Z)";
const DAY_OR_RFC_3339: &str = "a day (2026-11-24) or an RFC 3339 time";

/// Parses an RFC 3339 time query parameter.
pub fn time_param(
    query: &HashMap<String, String>,
    key: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    query
        .get(key)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map_err(|_| time_error(key, RFC_3339))
                .and_then(|t| check_time(t.with_timezone(&Utc), key))
        })
        .transpose()
}

/// A day (`2026-11-24`, meaning its midnight UTC) or an RFC 3339 time.
pub fn day_or_time_param(
    query: &HashMap<String, String>,
    key: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = query.get(key) else {
        return Ok(None);
    };
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let midnight = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        return midnight
            .ok_or_else(|| time_error(key, DAY_OR_RFC_3339))
            .and_then(|t| check_time(t, key).map_err(|_| time_error(key, DAY_OR_RFC_3339)))
            .map(Some);
    }
    time_param(query, key).map_err(|_| time_error(key, DAY_OR_RFC_3339))
}

/// A parser of one time parameter: [`time_param`] or [`day_or_time_param`].
pub type TimeParser = fn(&HashMap<String, String>, &str) -> Result<Option<DateTime<Utc>>, ApiError>;

/// A `from`/`to` range of a history-like request, both in range and `from < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Reads `from` and `to` with `parse` ([`time_param`] or [`day_or_time_param`]). Without `to`,
/// `to` is `default_to`; without `from`, `from` is `default_len` before `to`. A span longer than
/// `max_len` is refused naming `from`.
pub fn span(
    query: &HashMap<String, String>,
    parse: TimeParser,
    default_to: DateTime<Utc>,
    default_len: TimeDelta,
    max_len: TimeDelta,
) -> Result<Span, ApiError> {
    let to = match parse(query, "to")? {
        Some(to) => to,
        None => check_time(default_to, "to")?,
    };
    let from = match parse(query, "from")? {
        Some(from) => from,
        // Clamped rather than refused: the client asked for nothing before the epoch.
        None => to
            .checked_sub_signed(default_len)
            .map_or(earliest(), |t| t.max(earliest())),
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "from must be before to",
            Some("from"),
        ));
    }
    // Both lie within the range, so the difference cannot overflow.
    if to.signed_duration_since(from) > max_len {
        return Err(ApiError::bad_request(
            format!("from and to are at most {} days apart", max_len.num_days()),
            Some("from"),
        ));
    }
    Ok(Span { from, to })
}

/// The `tracker` filter of a list: `Some(None)` when absent. A malformed id names no tracker
/// the caller sees, so it is `None`: the list is empty, as for any other tracker not theirs.
/// Check every other parameter first, so that a bad one is refused whatever `tracker` says.
pub fn tracker_filter(query: &HashMap<String, String>) -> Option<Option<TrackerId>> {
    match query.get("tracker") {
        None => Some(None),
        Some(raw) => TrackerId::parse(raw).ok().map(Some),
    }
}

/// A page size: absent gives `default`, otherwise a whole number from 1 to `max`.
pub fn limit_param(
    query: &HashMap<String, String>,
    default: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    format!("limit must be a whole number from 1 to {max}"),
                    Some("limit"),
                )
            }),
    }
}

/// A whole-number query parameter (an id to continue after), at least 0.
pub fn id_param(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    query
        .get(key)
        .map(|raw| {
            raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request(format!("{key} must be a whole number >= 0"), Some(key))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn field(err: ApiError) -> Option<String> {
        match err {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn times_outside_the_documented_range_are_refused_naming_the_key() {
        for raw in [
            "1969-12-31T23:59:59Z",
            "+10000-01-01T00:00:00Z",
            "-262143-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
        ] {
            let err = time_param(&query(&[("since", raw)]), "since").unwrap_err();
            assert_eq!(field(err).as_deref(), Some("since"), "{raw}");
        }
        assert!(time_param(&query(&[("since", "1970-01-01T00:00:00Z")]), "since").is_ok());
        assert!(time_param(&query(&[("since", "9999-12-31T23:59:59Z")]), "since").is_ok());
    }

    #[test]
    fn extreme_days_are_refused_instead_of_overflowing_the_default_range() {
        let now = Utc::now();
        for raw in [
            "-262143-01-01",
            "262142-12-31",
            "+99999-01-01",
            "1969-12-31",
        ] {
            let q = query(&[("to", raw)]);
            let err = span(
                &q,
                day_or_time_param,
                now,
                TimeDelta::days(31),
                TimeDelta::days(366),
            )
            .unwrap_err();
            assert_eq!(field(err).as_deref(), Some("to"), "{raw}");
        }
        // The earliest day: the default `from` would be before the epoch, so it is clamped.
        let q = query(&[("to", "1970-01-02")]);
        let s = span(
            &q,
            day_or_time_param,
            now,
            TimeDelta::days(31),
            TimeDelta::days(366),
        )
        .unwrap();
        assert_eq!(s.from, earliest());
    }

    #[test]
    fn a_span_must_be_ordered_and_not_too_long() {
        let now = Utc::now();
        let q = query(&[("from", "2026-01-02"), ("to", "2026-01-01")]);
        let err = span(
            &q,
            day_or_time_param,
            now,
            TimeDelta::days(1),
            TimeDelta::days(9),
        )
        .unwrap_err();
        assert_eq!(field(err).as_deref(), Some("from"));
        let q = query(&[("from", "2020-01-01"), ("to", "2026-01-01")]);
        let err = span(
            &q,
            day_or_time_param,
            now,
            TimeDelta::days(1),
            TimeDelta::days(9),
        )
        .unwrap_err();
        assert_eq!(field(err).as_deref(), Some("from"));
    }

    #[test]
    fn the_unknown_key_named_is_the_same_whatever_the_map_order() {
        let q = query(&[("zz", "1"), ("aa", "1"), ("limit", "1")]);
        assert_eq!(
            field(only_known(&q, &["limit"]).unwrap_err()).as_deref(),
            Some("aa")
        );
    }
}
