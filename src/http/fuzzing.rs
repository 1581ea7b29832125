//! The query parsers of the API as one function over arbitrary input, with the properties every
//! answer must have: for the fuzz targets under `fuzz/` and the randomized test below.
//!
//! Not part of the API: public only so that the fuzz crate can reach it.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::error::ApiError;
use super::query::{
    self, check_time, day_or_time_param, earliest, id_param, latest, limit_param, time_param,
    tracker_filter,
};
use super::trackers::{PositionsRequest, positions_request, summary_span};
use crate::trackers::{Cursor, MAX_PAGE, parse_bucket};

/// A fixed "now", so that a failure found once reproduces.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_521_900, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Decodes `raw` as warp does a query string, runs every query parser on it, and panics if an
/// answer breaks a rule: a time out of range, an empty or backwards span, a limit out of
/// bounds, a 400 that names no field. Malformed query strings are what warp refuses first.
pub fn query_string(raw: &[u8]) {
    let Ok(query) = serde_urlencoded::from_bytes::<HashMap<String, String>>(raw) else {
        return;
    };
    check_query(&query);
}

/// The rules of [`query_string`] on an already decoded query.
pub fn check_query(query: &HashMap<String, String>) {
    let in_range = |t: DateTime<Utc>| (earliest()..=latest()).contains(&t);
    for key in ["from", "to", "since"] {
        if let Ok(Some(t)) = answer(time_param(query, key), query) {
            assert!(in_range(t), "{key}={t}");
        }
        if let Ok(Some(t)) = answer(day_or_time_param(query, key), query) {
            assert!(in_range(t), "{key}={t}");
        }
    }
    if let Ok(limit) = answer(limit_param(query, 100, 1000), query) {
        assert!((1..=1000).contains(&limit));
    }
    if let Ok(Some(id)) = answer(id_param(query, "after"), query) {
        assert!(id >= 0);
    }
    let _ = tracker_filter(query);
    let _ = answer(query::only_known(query, &["from", "to", "limit"]), query);
    match answer(positions_request(query, now()), query) {
        Ok(PositionsRequest::Page(q)) => {
            assert!(q.from < q.to && in_range(q.from) && in_range(q.to));
            assert!((1..=MAX_PAGE).contains(&q.limit));
            if let Some(c) = q.cursor {
                assert!(in_range(c.0));
                assert_eq!(Cursor::parse(&c.encode()), Some(c));
            }
            check_bucket(q.bucket);
        }
        Ok(PositionsRequest::Simplified {
            span,
            bucket,
            tolerance_m,
        }) => {
            assert!(span.from < span.to && in_range(span.from) && in_range(span.to));
            assert!((1.0..=5_000.0).contains(&tolerance_m));
            check_bucket(bucket);
        }
        Ok(PositionsRequest::Export { span, .. }) => {
            assert!(span.from < span.to && in_range(span.from) && in_range(span.to));
            assert!(span.to.signed_duration_since(span.from) <= TimeDelta::days(366));
        }
        Err(_) => {}
    }
    if let Ok(span) = answer(summary_span(query, now()), query) {
        assert!(span.from < span.to && in_range(span.from) && in_range(span.to));
        assert!(span.to.signed_duration_since(span.from) <= TimeDelta::days(366));
    }
    for value in query.values() {
        check_bucket(parse_bucket(value));
        if let Some(c) = Cursor::parse(value) {
            let _ = check_time(c.0, "cursor");
        }
    }
}

fn check_bucket(bucket: Option<TimeDelta>) {
    if let Some(b) = bucket {
        assert!(
            (TimeDelta::seconds(10)..=TimeDelta::days(7)).contains(&b),
            "{b}"
        );
    }
}

/// Checks an error's shape (a 400 naming a key of the query, or `from` for a range) and that it
/// turns into a response; passes the result on.
fn answer<T>(result: Result<T, ApiError>, query: &HashMap<String, String>) -> Result<T, ApiError> {
    if let Err(err) = &result {
        match err {
            ApiError::BadRequest {
                field: Some(field), ..
            } => assert!(
                query.contains_key(field) || field == "from",
                "{err:?} names a field not in the query"
            ),
            other => panic!("a query parser answered {other:?}"),
        }
        assert_eq!(err.to_response().status(), 400);
    }
    result
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Pieces that steer random queries into the parsers' corners.
    const KEYS: [&str; 10] = [
        "from", "to", "since", "limit", "cursor", "bucket", "format", "simplify", "after",
        "tracker",
    ];
    const VALUES: [&str; 16] = [
        "2026-11-24",
        "2026-11-24T12:00:00Z",
        "-262143-01-01",
        "+262142-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999999Z",
        "1970-01-01T00:00:00+23:59",
        "t7fffffffffffffff",
        "t-8000000000000000",
        "9223372036854775807d",
        "10s",
        "0",
        "-1",
        "NaN",
        "1e309",
        "csv",
        "%00",
    ];

    fn random_query(rng: &mut StdRng) -> String {
        let pairs = rng.random_range(0..6);
        (0..pairs)
            .map(|_| {
                let key = KEYS[rng.random_range(0..KEYS.len())];
                let value = if rng.random_bool(0.7) {
                    VALUES[rng.random_range(0..VALUES.len())].to_owned()
                } else {
                    let len = rng.random_range(0..24);
                    (0..len)
                        .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
                        .collect()
                };
                format!("{key}={}", value.replace('&', "%26").replace('+', "%2B"))
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `PETTRACKER_FUZZ_CASES` runs more (CI runs a longer pass); the seed changes with it.
    #[test]
    fn random_queries_never_panic_and_every_answer_keeps_the_rules() {
        let cases: u64 = std::env::var("PETTRACKER_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000);
        let mut rng = StdRng::seed_from_u64(0x9_0e5 ^ cases);
        for _ in 0..cases {
            let raw = random_query(&mut rng);
            let outcome = std::panic::catch_unwind(|| query_string(raw.as_bytes()));
            assert!(outcome.is_ok(), "query {raw:?} broke a rule");
        }
    }

    #[test]
    fn the_summary_of_the_break_it_report_is_a_400_not_a_panic() {
        query_string(b"to=-262143-01-01");
        let q: HashMap<String, String> = [("to".to_owned(), "-262143-01-01".to_owned())].into();
        assert!(summary_span(&q, now()).is_err());
    }
}
