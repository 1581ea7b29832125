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
/// On plain PostgreSQL the days come from `tracker_days`, which triggers keep exactly equal to
/// the day's fixes in the transaction that writes them (migration 13). A day the range or the
/// claim cuts, and a day whose row is stale (some of its fixes were deleted), is computed from
/// its fixes in that part of the day; a day whose fixes all fall in the range is read as kept.
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

/// Days of `from..to` from `tracker_days`; the parts of days that the range cuts, and stale days,
/// from the fixes.
async fn summary_from_kept_days(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DaySummary>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT day, points, distance_m, first_fix, last_fix, moving_s, stale FROM tracker_days
             WHERE tracker_id = $1 AND day > $2::timestamptz - interval '1 day' AND day < $3
             ORDER BY day",
            &[&tracker.as_str(), &from, &to],
        )
        .await
        .map_err(StorageError::query("reading daily summaries"))?;
    let mut days = Vec::with_capacity(rows.len());
    for row in &rows {
        let day: DateTime<Utc> = row.get(0);
        let (start, end) = (day.max(from), (day + TimeDelta::days(1)).min(to));
        let stale: bool = row.get(6);
        let kept = day_summary(row);
        if !stale && kept.points > 0 && kept.first_fix >= start && kept.last_fix < end {
            days.push(kept);
        } else if stale || kept.points > 0 {
            days.extend(summary_from_fixes(pool, tracker, start, end).await?);
        }
    }
    Ok(days)
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
