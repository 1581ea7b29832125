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
/// On plain PostgreSQL days come from `tracker_days`, which a background pass keeps
/// (src/days.rs), extended by the fixes the pass has not reached; a day whose row cannot be
/// extended (stale, or a late fix noted) is computed from its fixes, and so is the part of a
/// day that the range or the claim cut off some of its fixes from.
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

/// Days of `from..to` from `tracker_days`: each day as the settle pass keeps it, extended by
/// the fixes it has not folded yet, or from its fixes where it cannot be extended
/// (`pettracker_day_settled`, migration 17). A day the range cuts is read so too when all its
/// fixes fall in the range (today, up to now), else from its fixes in the range.
async fn summary_from_kept_days(
    pool: &Pool,
    tracker: &TrackerId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DaySummary>, StorageError> {
    let (Some(first_day), Some(last_day)) =
        (day_start(from), day_start(to - TimeDelta::microseconds(1)))
    else {
        return summary_from_fixes(pool, tracker, from, to).await;
    };
    let rows = client(pool)
        .await?
        .query(KEPT_DAYS, &[&tracker.as_str(), &first_day, &last_day])
        .await
        .map_err(StorageError::query("reading daily summaries"))?;
    let mut days = Vec::with_capacity(rows.len());
    for row in &rows {
        let kept = day_summary(row);
        let (start, end) = (kept.day.max(from), (kept.day + TimeDelta::days(1)).min(to));
        if kept.first_fix >= start && kept.last_fix < end {
            days.push(kept);
        } else {
            days.extend(summary_from_fixes(pool, tracker, start, end).await?);
        }
    }
    Ok(days)
}

/// Each day of `$2..=$3` of tracker `$1` that has fixes. A day's row is read as it is when it
/// holds the whole day: not stale, no note of a late fix, no fix after its last (the common
/// case: every day but today, once the settle pass has reached it), which costs three key
/// probes; any other day is `pettracker_day_settled`, which extends the row or computes the day
/// from its fixes. Both give what the function gives: one read path, one arithmetic.
const KEPT_DAYS: &str = "
WITH days AS (
    SELECT g.day, d.points, d.distance_m, d.first_fix, d.last_fix, d.moving_s,
           (d.points > 0 AND NOT d.stale
            AND NOT EXISTS (SELECT 1 FROM tracker_days_pending n
                            WHERE n.tracker_id = $1 AND n.day = g.day)
            AND NOT EXISTS (SELECT 1 FROM positions p
                            WHERE p.tracker_id = $1 AND p.device_time > d.last_fix
                              AND p.device_time < g.day + interval '24 hours')) IS TRUE AS whole,
           d.tracker_id IS NOT NULL
           OR EXISTS (SELECT 1 FROM positions p
                      WHERE p.tracker_id = $1 AND p.device_time >= g.day
                        AND p.device_time < g.day + interval '24 hours') AS any_fix
    FROM generate_series($2::timestamptz, $3::timestamptz, interval '24 hours') g(day)
    LEFT JOIN tracker_days d ON d.tracker_id = $1 AND d.day = g.day
)
SELECT day, points, distance_m, first_fix, last_fix, moving_s FROM days WHERE whole
UNION ALL
SELECT k.day, s.points, s.distance_m, s.first_fix, s.last_fix, s.moving_s
FROM days k CROSS JOIN LATERAL pettracker_day_settled($1, k.day, 'infinity') s
WHERE NOT k.whole AND k.any_fix
ORDER BY 1";

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
