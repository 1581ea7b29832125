//! History: pages of a tracker's fixes since the claim, by cursor, optionally one per time bucket (three query plans, chosen by width), or simplified for a map.

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::Pool;
use gateway::protocol::TrackerId;
use gateway::storage::StorageError;
use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::client;

/// One stored fix, in the device protocol's field names.
#[derive(Debug, Clone, Serialize)]
pub struct FixView {
    pub ts: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spd: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdg: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sat: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bat: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
}

/// One page of a tracker's history, in device-time order.
#[derive(Debug, Clone, Serialize)]
pub struct PositionsPage {
    pub tracker_id: String,
    pub positions: Vec<FixView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Default and largest page size of `GET .../positions`.
pub const DEFAULT_PAGE: i64 = 500;
pub const MAX_PAGE: i64 = 5000;

/// A position in the history: the device time of the last fix returned. Opaque to clients;
/// stable while new fixes arrive, because pages are keyed by time, not by offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub DateTime<Utc>);

impl Cursor {
    pub fn encode(self) -> String {
        format!("t{:x}", self.0.timestamp_micros())
    }

    pub fn parse(s: &str) -> Option<Cursor> {
        let micros = i64::from_str_radix(s.strip_prefix('t')?, 16).ok()?;
        DateTime::from_timestamp_micros(micros).map(Cursor)
    }
}

/// The columns of a stored fix, in the order [`fix_from_row`] reads them.
pub(crate) const HISTORY_COLUMNS: &str = "p.device_time, p.lat, p.lon, p.altitude, p.accuracy,
    p.speed, p.heading, p.satellites, p.battery, p.seq, p.received_at";

/// Fixes of tracker `$1` with `$2 <= device_time < $3`, and none from before the current claim.
/// The claim time is a scalar subquery, not a join: a constant bound lets the primary key serve
/// the device-time range instead of filtering the tracker's whole history.
pub(crate) const HISTORY_RANGE: &str = "p.tracker_id = $1
    AND p.device_time >= greatest($2, (SELECT claimed_at FROM trackers WHERE tracker_id = $1))
    AND p.device_time < $3";

/// A row selected with [`HISTORY_COLUMNS`].
pub(crate) fn fix_from_row(r: &Row) -> FixView {
    FixView {
        ts: r.get(0),
        lat: r.get(1),
        lon: r.get(2),
        alt: r.get(3),
        acc: r.get(4),
        spd: r.get(5),
        hdg: r.get(6),
        sat: r.get(7),
        bat: r.get(8),
        seq: r.get(9),
        received_at: r.get(10),
    }
}

/// Parses a bucket width such as `30s`, `5m`, `1h` or `1d` (10 seconds to 7 days).
pub fn parse_bucket(raw: &str) -> Option<TimeDelta> {
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().ok()?;
    let width = match unit {
        "s" => TimeDelta::try_seconds(n)?,
        "m" => TimeDelta::try_minutes(n)?,
        "h" => TimeDelta::try_hours(n)?,
        "d" => TimeDelta::try_days(n)?,
        _ => return None,
    };
    (TimeDelta::seconds(10)..=TimeDelta::days(7))
        .contains(&width)
        .then_some(width)
}

/// What a history request asks for.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub cursor: Option<Cursor>,
    pub limit: i64,
    /// One fix per interval (the last in each), for maps of long ranges.
    pub bucket: Option<TimeDelta>,
}

/// Bucket widths from which bucketed history uses the loose index scan (see [`positions`]).
const LOOSE_SCAN_FROM: TimeDelta = TimeDelta::minutes(5);

/// The interval of `positions_5m`: bucket widths that are whole multiples of it are read from
/// there, one row per interval, instead of from the fixes.
const ROLLUP_SECS: i64 = 300;

/// Fixes of one tracker with `from <= ts < to`, after the cursor, at most `limit`; with a bucket,
/// the last fix of each interval (aligned to the Unix epoch, so pages and clients agree). The
/// caller must have checked that the user may see the tracker; fixes from before the current
/// claim are left out.
///
/// `date_bin` is plain PostgreSQL (14+), so the same query serves TimescaleDB and plain
/// PostgreSQL; on a hypertable it reads only the chunks of the range.
pub async fn positions(
    pool: &Pool,
    tracker: &TrackerId,
    q: HistoryQuery,
) -> Result<PositionsPage, StorageError> {
    let after = q.cursor.map(|c| c.0);
    let columns = HISTORY_COLUMNS;
    let range = format!("{HISTORY_RANGE} AND ($4::timestamptz IS NULL OR p.device_time > $4)");
    let client = client(pool).await?;
    let tracker_id = tracker.as_str();
    let sql = match q.bucket {
        None => format!(
            "SELECT {columns} FROM positions p
             WHERE {range} ORDER BY p.device_time LIMIT $5"
        ),
        Some(width) => {
            // Widths that are whole multiples of 5 minutes read pre-bucketed rows (below). For
            // the others, two plans, chosen by width. DISTINCT ON reads and sorts every fix of the range;
            // the loose index scan (a recursive CTE: from the first fix of a bucket one
            // primary-key probe to the first fix of the next non-empty bucket, one more for the
            // last fix of each) costs two probes per bucket whatever the bucket holds. Measured
            // (benchmarks/history.sh, a fix every 30 s): on a small table that fits in memory a
            // probe costs about as much as reading 14 fixes (5-minute buckets: scan 11.4 ms,
            // DISTINCT ON 8.0), but on 50 M rows, where DISTINCT ON reads each fix from a
            // different heap page, the scan wins from 5 minutes (108 against 168 ms over 30 days)
            // and by far at an hour (24 against 174 ms). Below 5 minutes buckets hold too few
            // fixes for probes to pay.
            if width.num_seconds() % ROLLUP_SECS == 0 {
                // Whole 5-minute intervals inside the range come from `positions_5m` (their
                // last fixes); the two partial ones at the ends of the range, if any, from
                // `positions`. `lo_up` is the first interval boundary at or after the range's
                // start, `hi_down` the last one at or before its end. On plain PostgreSQL the
                // settle pass keeps those rows (migration 18), so intervals from `exact` on
                // (the pass's mark, or a late fix's interval the pass has not read yet) are
                // read from `positions` too: usually the last minute, whatever the range. The
                // bounds are scalar subqueries, not a join with `lim`: as a join the planner
                // walked a tracker's whole index backwards for the LIMIT 1 probes (126 ms for
                // 30 days of fixes every 30 s; EXPLAIN in BENCHMARKS.md). A page needs at most
                // `limit` buckets, so at most `limit × width / 5 min` intervals.
                format!(
                    "WITH lim AS (
                         SELECT lo, hi, lo_up, hi_down,
                                greatest(lo, least(hi_down, exact)) AS kept_to
                         FROM (SELECT lo, hi,
                                      date_bin('5 minutes', lo - interval '1 microsecond',
                                               TIMESTAMPTZ '1970-01-01 00:00:00+00')
                                          + interval '5 minutes' AS lo_up,
                                      date_bin('5 minutes', hi, TIMESTAMPTZ '1970-01-01 00:00:00+00')
                                          AS hi_down,
                                      pettracker_5m_exact_before($1) AS exact
                               FROM (SELECT greatest($2::timestamptz,
                                                     (SELECT claimed_at FROM trackers WHERE tracker_id = $1),
                                                     $4::timestamptz + interval '1 microsecond') AS lo,
                                            $3::timestamptz AS hi) r) b
                     ), parts AS (
                         (SELECT {columns} FROM positions_5m p
                          WHERE p.tracker_id = $1 AND p.bucket >= (SELECT lo_up FROM lim)
                            AND p.bucket < (SELECT kept_to FROM lim)
                          ORDER BY p.bucket
                          LIMIT $5::bigint * ($6::float8 / {ROLLUP_SECS})::bigint)
                       UNION ALL
                         (SELECT {columns} FROM positions p
                          WHERE p.tracker_id = $1 AND p.device_time >= (SELECT lo FROM lim)
                            AND p.device_time < (SELECT least(hi, lo_up) FROM lim)
                          ORDER BY p.device_time DESC LIMIT 1)
                       UNION ALL
                         (SELECT {columns} FROM positions p
                          WHERE p.tracker_id = $1
                            AND p.device_time >= (SELECT kept_to FROM lim)
                            AND p.device_time < (SELECT greatest(lo, hi_down) FROM lim))
                       UNION ALL
                         (SELECT {columns} FROM positions p
                          WHERE p.tracker_id = $1
                            AND p.device_time >= (SELECT greatest(lo, hi_down) FROM lim)
                            AND p.device_time < (SELECT hi FROM lim)
                          ORDER BY p.device_time DESC LIMIT 1)
                     )
                     SELECT * FROM (
                         SELECT DISTINCT ON (b) *,
                                date_bin(make_interval(secs => $6), device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b
                         FROM parts
                         ORDER BY b, device_time DESC) x
                     ORDER BY b LIMIT $5::bigint"
                )
            } else if width >= LOOSE_SCAN_FROM {
                format!(
                    "WITH RECURSIVE b(start, n) AS (
                         SELECT date_bin(make_interval(secs => $6), f.device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00'), 1::bigint
                         FROM (SELECT p.device_time FROM positions p
                               WHERE {range} ORDER BY p.device_time LIMIT 1) f
                       UNION ALL
                         SELECT date_bin(make_interval(secs => $6), nxt.device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00'), b.n + 1
                         FROM b CROSS JOIN LATERAL (
                             SELECT p.device_time FROM positions p
                             WHERE p.tracker_id = $1
                               AND p.device_time >= b.start + make_interval(secs => $6)
                               AND p.device_time < $3
                             ORDER BY p.device_time LIMIT 1) nxt
                         WHERE b.n < $5::bigint
                     )
                     SELECT x.* FROM b CROSS JOIN LATERAL (
                         SELECT {columns} FROM positions p
                         WHERE {range} AND p.device_time >= b.start
                           AND p.device_time < b.start + make_interval(secs => $6)
                         ORDER BY p.device_time DESC LIMIT 1) x
                     ORDER BY b.start LIMIT $5::bigint"
                )
            } else {
                format!(
                    "SELECT * FROM (
                         SELECT DISTINCT ON (b) {columns},
                                date_bin(make_interval(secs => $6), p.device_time,
                                         TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b
                         FROM positions p
                         WHERE {range}
                         ORDER BY b, p.device_time DESC) x
                     ORDER BY b LIMIT $5::bigint"
                )
            }
        }
    };
    // One more than asked tells whether there is a next page without a count.
    let limit = q.limit + 1;
    let secs = q.bucket.map(|width| width.num_seconds() as f64);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tracker_id, &q.from, &q.to, &after, &limit];
    if let Some(secs) = &secs {
        params.push(secs);
    }
    // Cached per connection: a history page is a few statements' worth of planning otherwise.
    let failed = StorageError::query("reading positions");
    let stmt = client.prepare_cached(&sql).await.map_err(&failed)?;
    let rows = client.query(&stmt, &params).await.map_err(failed)?;
    let mut positions: Vec<FixView> = rows.iter().map(fix_from_row).collect();
    let more = positions.len() as i64 > q.limit;
    positions.truncate(q.limit.max(0) as usize);
    let next_cursor = more
        .then(|| {
            positions.last().map(|p| match q.bucket {
                None => Cursor(p.ts),
                // The next page starts with the next bucket: skip the rest of this one.
                Some(width) => {
                    let secs = width.num_seconds().max(1);
                    let start = p.ts.timestamp().div_euclid(secs) * secs;
                    let end = DateTime::from_timestamp(start + secs, 0).unwrap_or(p.ts);
                    Cursor(end - TimeDelta::microseconds(1))
                }
            })
        })
        .flatten()
        .map(Cursor::encode);
    Ok(PositionsPage {
        tracker_id: tracker.to_string(),
        positions,
        next_cursor,
    })
}

/// Most fixes one `simplify=` request reads: a month at one fix every 13 seconds. Longer
/// ranges are refused rather than held in memory; `bucket` first thins them on the database.
pub const MAX_SIMPLIFY_INPUT: i64 = 200_000;

/// A track simplified for a map.
#[derive(Debug, Clone, Serialize)]
pub struct SimplifiedTrack {
    pub tracker_id: String,
    pub positions: Vec<FixView>,
    pub simplified: SimplifyStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimplifyStats {
    /// No dropped fix is farther than this from the returned line.
    pub tolerance_m: f64,
    pub input_points: usize,
    pub output_points: usize,
}

/// The range's fixes (after bucketing, if asked), simplified with Douglas-Peucker to
/// `tolerance_m` metres. `None` when the range holds more than [`MAX_SIMPLIFY_INPUT`] fixes.
pub async fn simplified(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Option<TimeDelta>,
    tolerance_m: f64,
) -> Result<Option<SimplifiedTrack>, StorageError> {
    let q = HistoryQuery {
        from,
        to,
        cursor: None,
        limit: MAX_SIMPLIFY_INPUT,
        bucket,
    };
    let page = positions(pool, tracker, q).await?;
    if page.next_cursor.is_some() {
        return Ok(None);
    }
    let fixes = page.positions;
    let input_points = fixes.len();
    // CPU work of up to a few hundred milliseconds: off the async workers.
    let kept = tokio::task::spawn_blocking(move || {
        let points: Vec<(f64, f64)> = fixes.iter().map(|f| (f.lat, f.lon)).collect();
        let keep = crate::simplify::keep(&points, tolerance_m);
        let mut fixes = fixes.into_iter().map(Some).collect::<Vec<_>>();
        keep.into_iter()
            .filter_map(|i| fixes.get_mut(i).and_then(Option::take))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| StorageError::Pool(format!("simplification failed: {e}")))?;
    Ok(Some(SimplifiedTrack {
        tracker_id: tracker.to_string(),
        simplified: SimplifyStats {
            tolerance_m,
            input_points,
            output_points: kept.len(),
        },
        positions: kept,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_the_round_trip_to_the_microsecond() {
        let t = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let c = Cursor(t);
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
    }

    #[test]
    fn bucket_widths_parse_within_ten_seconds_and_seven_days() {
        assert_eq!(parse_bucket("5m"), Some(TimeDelta::minutes(5)));
        assert_eq!(parse_bucket("30s"), Some(TimeDelta::seconds(30)));
        assert_eq!(parse_bucket("1h"), Some(TimeDelta::hours(1)));
        assert_eq!(parse_bucket("7d"), Some(TimeDelta::days(7)));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "9s",
            "8d",
            "-5m",
            "5 m",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_bucket(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_forged_or_damaged_cursor_is_refused() {
        for bad in ["", "t", "tzz", "123", "t-", "tffffffffffffffffff"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
