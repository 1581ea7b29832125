//! Query-string parameters shared by the API routes: unknown keys refused, times and limits parsed with errors naming the key.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gateway::protocol::TrackerId;

use super::error::ApiError;

/// 400 naming the first query parameter the route does not know: a misspelt `form=` must not
/// silently mean "the default range".
pub fn only_known(query: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !known.contains(&k.as_str())) {
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

/// Parses an RFC 3339 time query parameter.
pub fn time_param(
    query: &HashMap<String, String>,
    key: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    query
        .get(key)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(
                        format!("{key} must be an RFC 3339 time, e.g. 2026-11-24T12:00:00Z"),
                        Some(key),
                    )
                })
        })
        .transpose()
}

/// The `tracker` filter of a list: `Some(None)` when absent. A malformed id names no tracker
/// the caller sees, so it is `None`: the list is empty, as for any other tracker not theirs.
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
