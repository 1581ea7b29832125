//! Daily summaries: points, distance and moving time per UTC day since the claim, from the days kept at ingest (plain PostgreSQL), the continuous aggregate (TimescaleDB), or computed from the fixes.

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::Pool;
use gateway::protocol::TrackerId;
use gateway::storage::StorageError;
use serde::Serialize;
use tokio_postgres::Row;

use super::client;

/// One UTC day of a tracker's history.
#[derive(Debug, Clone, Serialize)]
pub struct DaySummary {
    pub day: DateTime<Utc>,
    pub points: i64,
    /// Length of the day's track in device-time order, great circle between consecutive fixes.
    pub distance_m: f64,
    /// Seconds between consecutive fixes at most 5 minutes apart that were covered at 0.5 m/s or
    /// faster (the `moving_time_s` aggregate of migration 7).
    pub moving_s: f64,
    pub first_fix: DateTime<Utc>,
    pub last_fix: DateTime<Utc>,
}

/// Per-day summaries of the fixes in `from..to` since the claim, one per UTC day that has any.
///
/// On plain PostgreSQL whole days come from `tracker_days`, which a background pass keeps
/// (src/days.rs), extended by the fixes the pass has not reached; a day whose row cannot be
/// extended (stale, or a late fix noted) and a day the range or the claim cuts are computed
/// from their fixes.
/// On TimescaleDB, days after the claim day come from the `daily_summaries` continuous aggregate
/// (materialized, plus real-time for the newest data); the claim day is computed from the fixes
/// after the claim.
pub async fn summary(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DaySummary>, StorageError> {
    let client = client(pool).await?;
    let claim = client
        .query_opt(
            "SELECT claimed_at, date_trunc('day', claimed_at, 'UTC') FROM trackers
             WHERE tracker_id = $1 AND claimed_at IS NOT NULL",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("reading daily summaries"))?;
    let Some(claim) = claim else {
        return Ok(Vec::new());
    };
    let (claimed_at, claim_day): (DateTime<Utc>, DateTime<Utc>) = (claim.get(0), claim.get(1));
    let from = from.max(claimed_at);
    if from >= to {
        return Ok(Vec::new());
    }
    drop(client);
    let mut days = Vec::new();
    match gateway::storage::backend(pool).await? {
        gateway::storage::Backend::Postgres => {
            days.extend(summary_from_kept_days(pool, tracker, from, to).await?);
        }
        gateway::storage::Backend::TimescaleDb => {
            let claim_day_end = claim_day + TimeDelta::days(1);
            if from < claim_day_end {
                days.extend(summary_from_fixes(pool, tracker, from, to.min(claim_day_end)).await?);
            }
            let rows = self::client(pool)
                .await?
                .query(
                    "SELECT day, points, distance_m, first_fix, last_fix, moving_s FROM daily_summaries
                     WHERE tracker_id = $1 AND day >= $2 AND day < $3 ORDER BY day",
                    &[&tracker.as_str(), &from.max(claim_day_end), &to],
                )
                .await
                .map_err(StorageError::query("reading daily summaries"))?;
            days.extend(rows.iter().map(day_summary));
        }
    }
    Ok(days)
}

fn day_summary(r: &Row) -> DaySummary {
    DaySummary {
        day: r.get(0),
        points: r.get(1),
        distance_m: r.get(2),
        first_fix: r.get(3),
        last_fix: r.get(4),
        moving_s: r.get(5),
    }
}

/// Days of `from..to` from `tracker_days`: each whole day as the settle pass keeps it, extended
/// by the fixes it has not folded yet, or from its fixes where it cannot be extended
/// (`pettracker_day_settled`, migration 17); the parts of days the range cuts from the fixes.
async fn summary_from_kept_days(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DaySummary>, StorageError> {
    let first_whole = day_start(from)
        .filter(|start| *start == from)
        .or_else(|| day_start(from).map(|start| start + TimeDelta::days(1)))
        .unwrap_or(from);
    let last_whole_end = day_start(to).unwrap_or(to);
    if first_whole >= last_whole_end {
        return summary_from_fixes(pool, tracker, from, to).await;
    }
    let mut days = Vec::new();
    if from < first_whole {
        days.extend(summary_from_fixes(pool, tracker, from, first_whole).await?);
    }
    let rows = client(pool)
        .await?
        .query(
            "SELECT g.day, s.points, s.distance_m, s.first_fix, s.last_fix, s.moving_s
             FROM generate_series($2::timestamptz, $3::timestamptz - interval '24 hours',
                                  interval '24 hours') g(day)
             CROSS JOIN LATERAL pettracker_day_settled($1, g.day, 'infinity') s
             ORDER BY g.day",
            &[&tracker.as_str(), &first_whole, &last_whole_end],
        )
        .await
        .map_err(StorageError::query("reading daily summaries"))?;
    days.extend(rows.iter().map(day_summary));
    if last_whole_end < to {
        days.extend(summary_from_fixes(pool, tracker, last_whole_end, to).await?);
    }
    Ok(days)
}

/// The start of the UTC day holding `t`.
fn day_start(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    t.date_naive().and_hms_opt(0, 0, 0).map(|d| d.and_utc())
}

/// Days of `from..to` computed from the fixes themselves (great circle between consecutive fixes).
async fn summary_from_fixes(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DaySummary>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT day, count(*),
                    coalesce(sum(haversine_m(prev_lat, prev_lon, lat, lon))
                        FILTER (WHERE prev_lat IS NOT NULL), 0),
                    min(device_time), max(device_time),
                    coalesce(sum(moving_segment_s(prev_time, prev_lat, prev_lon,
                                                  device_time, lat, lon)), 0)
             FROM (SELECT device_time, lat, lon, date_trunc('day', device_time, 'UTC') AS day,
                          lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon,
                          lag(device_time) OVER w AS prev_time
                   FROM positions
                   WHERE tracker_id = $1 AND device_time >= $2 AND device_time < $3
                   WINDOW w AS (PARTITION BY date_trunc('day', device_time, 'UTC')
                                ORDER BY device_time)) fixes
             GROUP BY day ORDER BY day",
            &[&tracker.as_str(), &from, &to],
        )
        .await
        .map_err(StorageError::query("reading daily summaries"))?;
    Ok(rows.iter().map(day_summary).collect())
}
