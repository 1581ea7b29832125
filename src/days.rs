//! The settle pass of the kept daily summaries and of bucketed history's 5-minute intervals (plain PostgreSQL, migrations 17 and 18): every `storage.days_settle_interval_secs`, folds each tracker's new fixes into its day's row in `tracker_days` and its intervals' rows in `positions_5m`, and computes again the days and intervals that late fixes were added to.
//!
//! Batches do not keep the days themselves (it cost half of PostgreSQL's CPU per fix): a
//! batch's fixes dated before the *mark* (`tracker_days_mark`) leave a note, and every other
//! fix is later than everything its day's row holds. A pass
//! 1. moves the mark to the clock minus the interval (a fix arriving later than that after its
//!    device time is late, and noted),
//! 2. waits for every transaction that was writing when the mark moved: such a writer may have
//!    read the old mark, so it noted nothing, and its fixes must be committed before the pass
//!    reads the fixes,
//! 3. and in one transaction, holding `tracker_days` against retention's stale marks, writes
//!    `pettracker_day_settled` (the row extended by the fixes after its last, or the day from
//!    its fixes) for every day with notes and every day the mark passed of every tracker that
//!    reported since the last pass, and deletes the notes it read.
//!
//! Readers call the same function, so a day reads the same before and after a pass.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::shutdown::Shutdown;
use gateway::storage::{self, Backend, StorageError, pool_error_reason};

/// How often a pass looks again at the writers it waits for.
const WRITERS_POLL: Duration = Duration::from_millis(5);

/// Writers still running after this long are named in the log (a pass waits for them).
const WRITERS_WARN_AFTER: Duration = Duration::from_secs(10);

/// Seconds a pass took, from moving the mark to its commit (the wait for writers included).
pub const SETTLE_SECONDS: &str = "pettracker_days_settle_seconds";
/// Days written or deleted by passes.
pub const DAYS_SETTLED: &str = "pettracker_days_settled_total";
/// Notes of late fixes settled by passes.
pub const NOTES_SETTLED: &str = "pettracker_days_notes_settled_total";
/// 5-minute intervals of bucketed history (`positions_5m`) written by passes.
pub const INTERVALS_SETTLED: &str = "pettracker_days_intervals_settled_total";

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Where the mark stands now: every fix dated before it is kept or noted.
    pub mark: DateTime<Utc>,
    /// Days written (or deleted, when they had no fix left).
    pub days: u64,
    /// Notes of late fixes read and settled.
    pub notes: u64,
    /// 5-minute intervals of `positions_5m` written.
    pub intervals: u64,
}

/// Runs a pass every `interval` until shutdown, on plain PostgreSQL (on TimescaleDB, which
/// keeps its continuous aggregate, it returns after the first). Start it once the database is migrated, in one process of those
/// sharing the database (src/leadership.rs).
pub async fn run(pool: Pool, interval: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.recv() => return,
        }
        let started = std::time::Instant::now();
        tokio::select! {
            result = settle(&pool, interval) => match result {
                Ok(Some(pass)) => {
                    metrics::histogram!(SETTLE_SECONDS).record(started.elapsed().as_secs_f64());
                    metrics::counter!(DAYS_SETTLED).increment(pass.days);
                    metrics::counter!(NOTES_SETTLED).increment(pass.notes);
                    metrics::counter!(INTERVALS_SETTLED).increment(pass.intervals);
                    tracing::debug!(?pass, "daily summaries settled");
                }
                Ok(None) => return,
                Err(err) => tracing::warn!(%err, "settling the daily summaries failed; trying again next time"),
            },
            () = shutdown.recv() => return,
        }
    }
}

/// One pass, with the mark moved to the database's clock minus `behind`. Safe to run beside
/// another pass (they take turns on `tracker_days`) and beside ingest, which it never blocks.
/// On TimescaleDB, which keeps no such rows, it does nothing.
pub async fn settle(pool: &Pool, behind: Duration) -> Result<Option<Pass>, StorageError> {
    if storage::backend(pool).await? != Backend::Postgres {
        return Ok(None);
    }
    let mut client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    let behind_secs = f64::from(u32::try_from(behind.as_secs()).unwrap_or(u32::MAX));
    let moved = client
        .query_one(
            "WITH old AS (SELECT settled_through FROM tracker_days_mark)
             UPDATE tracker_days_mark m
             SET settled_through = greatest(m.settled_through, now() - make_interval(secs => $1))
             FROM old RETURNING old.settled_through, m.settled_through",
            &[&behind_secs],
        )
        .await
        .map_err(StorageError::query("moving the daily summaries' mark"))?;
    let (previous, mark): (DateTime<Utc>, DateTime<Utc>) = (moved.get(0), moved.get(1));

    // Taken after the move committed: whoever writes in it may have read the old mark.
    let writers: String = client
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await
        .map_err(StorageError::query("reading the running writers"))?
        .get(0);
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        let running: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_snapshot_xip($1::text::pg_snapshot) x
                 WHERE pg_xact_status(x) = 'in progress'",
                &[&writers],
            )
            .await
            .map_err(StorageError::query("waiting for the running writers"))?
            .get(0);
        if running == 0 {
            break;
        }
        if !warned && started.elapsed() > WRITERS_WARN_AFTER {
            warned = true;
            tracing::warn!(
                running,
                "settling the daily summaries waits for transactions that write and stay open"
            );
        }
        tokio::time::sleep(WRITERS_POLL).await;
    }

    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("settling the daily summaries"))?;
    // Retention marks days stale as it deletes their fixes: it waits for the pass, whose
    // statements then see every delete committed before.
    tx.batch_execute("LOCK TABLE tracker_days IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(StorageError::query("settling the daily summaries"))?;
    let row = tx
        .query_one(SETTLE, &[&previous, &mark])
        .await
        .map_err(StorageError::query("settling the daily summaries"))?;
    tx.commit()
        .await
        .map_err(StorageError::query("settling the daily summaries"))?;
    let (days, notes, intervals): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(Some(Pass {
        mark,
        days: u64::try_from(days).unwrap_or(0),
        notes: u64::try_from(notes).unwrap_or(0),
        intervals: u64::try_from(intervals).unwrap_or(0),
    }))
}

/// The days to settle: every day with notes, and of each tracker whose newest fix is at or
/// after the previous mark, the days from the previous mark's to the new one's. A day that did
/// not change is not written again. In the same statement (one snapshot, so a note is read by
/// both or neither), the 5-minute intervals of `positions_5m` the same fixes fall in (migration
/// 18), and that table's mark moved to the new one.
const SETTLE: &str = "
WITH notes AS (
    DELETE FROM tracker_days_pending RETURNING tracker_id, day, first_fix
), candidates AS (
    SELECT tracker_id, day FROM notes
    UNION
    SELECT s.tracker_id, g.day
    FROM tracker_status s
    CROSS JOIN generate_series(date_bin('1 day', $1::timestamptz, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
                               date_bin('1 day', $2::timestamptz, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
                               interval '24 hours') g(day)
    WHERE s.last_fix_time >= $1::timestamptz
), settled AS (
    SELECT c.tracker_id, c.day, r.points, r.distance_m, r.moving_s, r.first_fix, r.last_fix,
           r.last_lat, r.last_lon
    FROM candidates c
    LEFT JOIN LATERAL pettracker_day_settled(c.tracker_id, c.day, $2::timestamptz) r ON true
), written AS (
    INSERT INTO tracker_days AS d (tracker_id, day, points, distance_m, moving_s, first_fix,
                                   last_fix, last_lat, last_lon, stale)
    SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix, last_lat, last_lon,
           false
    FROM settled WHERE points IS NOT NULL ORDER BY tracker_id, day
    ON CONFLICT (tracker_id, day) DO UPDATE SET
        points = excluded.points, distance_m = excluded.distance_m, moving_s = excluded.moving_s,
        first_fix = excluded.first_fix, last_fix = excluded.last_fix,
        last_lat = excluded.last_lat, last_lon = excluded.last_lon, stale = false
    WHERE (d.points, d.last_fix, d.stale) IS DISTINCT FROM (excluded.points, excluded.last_fix, false)
    RETURNING 1
), emptied AS (
    DELETE FROM tracker_days d USING settled s
    WHERE s.points IS NULL AND d.tracker_id = s.tracker_id AND d.day = s.day
    RETURNING 1
), rolled_from AS (
    SELECT rolled_through FROM positions_5m_mark
), spans AS (
    -- The fixes that may change a row: of every tracker with fixes since the last pass, those
    -- from the last pass's mark to the new one; of every noted day, those from its first late
    -- fix on.
    SELECT s.tracker_id, r.rolled_through AS lo, $2::timestamptz AS hi
    FROM tracker_status s, rolled_from r
    WHERE s.last_fix_time >= r.rolled_through
  UNION ALL
    SELECT tracker_id, min(first_fix), least(day + interval '24 hours', $2::timestamptz)
    FROM notes GROUP BY tracker_id, day
), intervals AS (
    -- Their intervals, each once.
    SELECT DISTINCT sp.tracker_id, g.bucket
    FROM spans sp,
         generate_series(date_bin('5 minutes', sp.lo, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
                         sp.hi - interval '1 microsecond', interval '5 minutes') g(bucket)
), rolled AS (
    -- One primary-key probe per interval for its newest fix before the mark, not a read of
    -- every fix (a collar reporting every second has 300 an interval). Fixes are only ever
    -- added to an interval (retention deletes the intervals' rows by its own window), so a row
    -- moves only to a newer fix.
    INSERT INTO positions_5m AS r (tracker_id, bucket, device_time, received_at, lat, lon,
                                   altitude, accuracy, speed, heading, satellites, battery, seq)
    SELECT i.tracker_id, i.bucket, x.device_time, x.received_at, x.lat, x.lon, x.altitude,
           x.accuracy, x.speed, x.heading, x.satellites, x.battery, x.seq
    FROM intervals i
    CROSS JOIN LATERAL (
        SELECT * FROM positions p
        WHERE p.tracker_id = i.tracker_id AND p.device_time >= i.bucket
          AND p.device_time < least(i.bucket + interval '5 minutes', $2::timestamptz)
        ORDER BY p.device_time DESC LIMIT 1) x
    ON CONFLICT (tracker_id, bucket) DO UPDATE SET
        device_time = excluded.device_time, received_at = excluded.received_at,
        lat = excluded.lat, lon = excluded.lon, altitude = excluded.altitude,
        accuracy = excluded.accuracy, speed = excluded.speed, heading = excluded.heading,
        satellites = excluded.satellites, battery = excluded.battery, seq = excluded.seq
    WHERE excluded.device_time > r.device_time
    RETURNING 1
), rolled_mark AS (
    UPDATE positions_5m_mark SET rolled_through = greatest(rolled_through, $2::timestamptz)
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) + (SELECT count(*) FROM emptied), (SELECT count(*) FROM notes),
       (SELECT count(*) FROM rolled)";

/// Every day settled up to now: for `pettracker seed` and tests, which write history and read
/// it at once.
pub async fn settle_now(pool: &Pool) -> Result<Option<Pass>, StorageError> {
    settle(pool, Duration::ZERO).await
}
