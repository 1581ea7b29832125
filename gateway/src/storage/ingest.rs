//! The ingest write path: one transaction per batch, with array parameters so a batch is a handful of statements.
//!
//! On plain PostgreSQL fixes go in by binary `COPY`; a batch that meets a fix already stored
//! under its (tracker, device time) is written again with `ON CONFLICT DO NOTHING`, which makes
//! every re-send harmless (TimescaleDB and the gateway's own schema always insert that way). tracker_status only moves forward in *device* time, so a late batch of old fixes
//! never replaces a newer position.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::StorageError;
use crate::protocol::{self, CommandResultStatus};

/// A validated fix as `positions` stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct FixRow {
    pub tracker_id: String,
    pub device_time: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub altitude: Option<f32>,
    pub accuracy: Option<f32>,
    pub speed: Option<f32>,
    pub heading: Option<f32>,
    pub satellites: Option<i16>,
    pub battery: Option<i16>,
    pub seq: Option<i64>,
}

impl FixRow {
    /// A validated fix in the columns' types: the measurements are REAL, as history reads them.
    pub fn new(tracker: &str, fix: &protocol::Fix, received_at: DateTime<Utc>) -> FixRow {
        FixRow {
            tracker_id: tracker.to_owned(),
            device_time: fix.device_time,
            received_at,
            lat: fix.lat.get(),
            lon: fix.lon.get(),
            altitude: fix.altitude.map(|v| v.get() as f32),
            accuracy: fix.accuracy.map(|v| v.get() as f32),
            speed: fix.speed.map(|v| v.get() as f32),
            heading: fix.heading.map(|v| v.get() as f32),
            satellites: fix.satellites.map(|v| i16::from(v.get())),
            battery: fix.battery.map(|v| i16::from(v.get())),
            seq: fix.seq.map(|v| v.get()),
        }
    }
}

/// A status report (battery, charging, firmware, signal) as `tracker_status` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub tracker_id: String,
    pub received_at: DateTime<Utc>,
    pub battery: Option<i16>,
    pub charging: Option<bool>,
    pub firmware: Option<String>,
    pub signal_dbm: Option<i16>,
}

impl StatusRow {
    pub fn new(tracker: &str, status: &protocol::Status, received_at: DateTime<Utc>) -> StatusRow {
        StatusRow {
            tracker_id: tracker.to_owned(),
            received_at,
            battery: status.battery.map(|v| i16::from(v.get())),
            charging: status.charging,
            firmware: status.firmware.as_ref().map(|f| f.as_str().to_owned()),
            signal_dbm: status.rssi.map(|v| v.get()),
        }
    }
}

/// Online or offline, from the broker's connection events, the `online` topic or a Last Will.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRow {
    pub tracker_id: String,
    pub online: bool,
    pub at: DateTime<Utc>,
}

/// A message or fix that was refused, kept with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRow {
    pub tracker_id: Option<String>,
    pub topic: String,
    pub payload: Vec<u8>,
    pub reason: String,
    pub received_at: DateTime<Utc>,
}

/// A collar's report on a command (`trackers/{id}/command-results`), for the server to apply to
/// its command in the batch's transaction (see [`CommandReports`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    pub tracker_id: String,
    pub command_id: String,
    /// How far the collar got, as it said it.
    pub status: CommandResultStatus,
    pub reason: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Kept to dead-letter the message if it names no open command of this tracker.
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchRows {
    pub fixes: Vec<FixRow>,
    pub statuses: Vec<StatusRow>,
    /// In arrival order: a connect followed by a disconnect must end offline.
    pub presence: Vec<PresenceRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub command_reports: Vec<CommandReport>,
}

impl BatchRows {
    /// The trackers the batch writes for, sorted, each once.
    pub fn trackers(&self) -> Vec<&str> {
        let mut trackers: Vec<&str> = self
            .fixes
            .iter()
            .map(|f| f.tracker_id.as_str())
            .chain(self.statuses.iter().map(|s| s.tracker_id.as_str()))
            .chain(self.presence.iter().map(|p| p.tracker_id.as_str()))
            .chain(self.command_reports.iter().map(|c| c.tracker_id.as_str()))
            .collect();
        trackers.sort_unstable();
        trackers.dedup();
        trackers
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.fixes.len()
            + self.statuses.len()
            + self.presence.len()
            + self.dead_letters.len()
            + self.command_reports.len()
    }

    /// Appends `other`, keeping each kind in order (presence order matters).
    pub fn extend(&mut self, other: BatchRows) {
        self.fixes.extend(other.fixes);
        self.statuses.extend(other.statuses);
        self.presence.extend(other.presence);
        self.dead_letters.extend(other.dead_letters);
        self.command_reports.extend(other.command_reports);
    }
}

/// What became of a command report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The command moved, or the report repeated what the command already says (QoS 1 resends).
    Applied,
    /// The report cannot apply (no such command, or it is finished); stored as a dead letter.
    Refused(String),
}

/// The server's side of command reports. Commands are the server's (its schema, its lifecycle);
/// the gateway only carries the collars' reports to it, inside the transaction of their batch,
/// so a report is applied exactly when its batch commits and acknowledged only after.
#[async_trait::async_trait]
pub trait CommandReports: std::fmt::Debug + Send + Sync + 'static {
    async fn apply(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        report: &CommandReport,
    ) -> Result<ReportOutcome, StorageError>;
}

/// What a committed batch did, and how long its parts took (for the stage metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub fixes_stored: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    /// From BEGIN's answer to the last statement's.
    pub statements: Duration,
    /// COMMIT: where the WAL flush is waited for.
    pub commit: Duration,
    /// The batch's `COPY` met a fix already stored (a re-send) and the batch was written again
    /// with `ON CONFLICT DO NOTHING` ([`write_batch`]).
    pub rewritten: bool,
}

/// Fixes into `positions` with `ON CONFLICT DO NOTHING`: the way a batch is written when its
/// [`COPY_FIXES`] met a stored fix, and on schemas where the batch keeps the 5-minute intervals
/// itself. One round trip for the rows, however many, with a cached prepared statement.
///
/// `roll` keeps `positions_5m` (the last fix of each 5-minute interval, read by bucketed history)
/// in step from the fixes that were new; sorted by tracker, so two batches touching the same
/// trackers lock their interval rows in the same order. It writes nothing where the server's
/// settle pass keeps those rows instead (plain PostgreSQL from migration 18, whose
/// `positions_5m_mark` says so): a row per tracker and interval in every batch was 24 % of the
/// batch transaction's CPU at about one fix per tracker, and without it ingest's PostgreSQL CPU
/// per fix is 10 to 27 % lower (BENCHMARKS.md, migration 18). The test is in the statement, not
/// in this process's configuration, so every writer agrees with the schema it writes to: an
/// ingest instance of any role, a database migrated while it runs, the gateway's own schema,
/// TimescaleDB (which keeps rolling here: its hypertable's triggers cannot note late fixes for a
/// pass). The test is a one-time filter: the subquery runs once per batch, not per row.
const WRITE_FIXES: &str = "
WITH ins AS (
    INSERT INTO positions (tracker_id, device_time, received_at, lat, lon, altitude,
                           accuracy, speed, heading, satellites, battery, seq)
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::float8[],
                         $5::float8[], $6::float4[], $7::float4[], $8::float4[],
                         $9::float4[], $10::int2[], $11::int2[], $12::int8[])
    ON CONFLICT (tracker_id, device_time) DO NOTHING
    RETURNING *
), roll AS (
    INSERT INTO positions_5m AS r (tracker_id, bucket, device_time, received_at, lat, lon,
                                   altitude, accuracy, speed, heading, satellites, battery, seq)
    SELECT DISTINCT ON (i.tracker_id, b) i.tracker_id, b, i.device_time, i.received_at, i.lat,
           i.lon, i.altitude, i.accuracy, i.speed, i.heading, i.satellites, i.battery, i.seq
    FROM ins i,
         LATERAL date_bin('5 minutes', i.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') b
    WHERE (SELECT to_regclass('positions_5m_mark') IS NULL)
    ORDER BY i.tracker_id, b, i.device_time DESC
    ON CONFLICT (tracker_id, bucket) DO UPDATE SET
        device_time = excluded.device_time, received_at = excluded.received_at,
        lat = excluded.lat, lon = excluded.lon, altitude = excluded.altitude,
        accuracy = excluded.accuracy, speed = excluded.speed, heading = excluded.heading,
        satellites = excluded.satellites, battery = excluded.battery, seq = excluded.seq
    WHERE excluded.device_time > r.device_time
)
SELECT (SELECT count(*) FROM ins)";

/// Each tracker's newest fix of the batch into `tracker_status`, whether or not that fix was new
/// (a re-sent fix still says the collar was heard from).
///
/// It moves a status row only forward in device time: its CASEs compare the batch's newest fix
/// with the row as it was (the batch holds the row's lock from [`LOCK_TRACKERS`]). The
/// `= ANY($1)` repeats the join's keys as an index condition: the generic plan guesses ten rows
/// from `unnest`, and on a table of a few thousand trackers it otherwise scans and hashes the
/// whole table on every batch (BENCHMARKS.md, issue 17).
const WRITE_STATUS: &str = "
UPDATE tracker_status s SET
    last_fix_time = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) THEN u.t ELSE s.last_fix_time END,
    last_lat      = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) THEN u.lat ELSE s.last_lat END,
    last_lon      = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) THEN u.lon ELSE s.last_lon END,
    last_accuracy = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) THEN u.acc ELSE s.last_accuracy END,
    last_speed    = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) THEN u.spd ELSE s.last_speed END,
    last_heading  = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) THEN u.hdg ELSE s.last_heading END,
    last_seq      = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) THEN u.seq ELSE s.last_seq END,
    battery       = CASE WHEN (s.last_fix_time IS NULL OR u.t > s.last_fix_time) AND u.bat IS NOT NULL THEN u.bat ELSE s.battery END,
    last_seen     = greatest(s.last_seen, u.seen),
    updated_at    = now()
FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::float4[],
            $6::float4[], $7::float4[], $8::int8[], $9::int2[], $10::timestamptz[])
         AS u(tracker_id, t, lat, lon, acc, spd, hdg, seq, bat, seen)
WHERE s.tracker_id = u.tracker_id AND s.tracker_id = ANY($1::text[])";

/// A batch's fixes into `positions`, the way PostgreSQL loads rows fastest. Binary `COPY` has no
/// `ON CONFLICT`: a fix already stored fails the statement, and [`write_batch`] writes the batch
/// again with [`WRITE_FIXES`]. Collars re-send rarely (a PUBACK lost with its connection, a spool
/// replayed after a crash between commit and acknowledgement). A batch of thousands of fixes that
/// COPY stores costs PostgreSQL about half the CPU per fix of the same batch through `INSERT ...
/// ON CONFLICT`; a batch of a few fixes saves nothing and costs two more round trips
/// (BENCHMARKS.md, issue 17). Its statement trigger sees the rows as an insert's.
const COPY_FIXES: &str = "COPY positions (tracker_id, device_time, received_at, lat, lon, altitude,
    accuracy, speed, heading, satellites, battery, seq) FROM STDIN (FORMAT binary)";

/// [`COPY_FIXES`]'s columns, in its order.
const FIX_TYPES: [Type; 12] = [
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT4,
    Type::FLOAT4,
    Type::FLOAT4,
    Type::FLOAT4,
    Type::INT2,
    Type::INT2,
    Type::INT8,
];

/// Takes the status rows of a batch's trackers in tracker order (see [`write_batch`]), and says
/// whether the settle pass keeps the 5-minute intervals (migration 18's mark): only then may the
/// batch's fixes go in by [`COPY_FIXES`], which cannot roll them.
const LOCK_TRACKERS: &str = "SELECT (SELECT count(*) FROM (SELECT 1 FROM tracker_status
        WHERE tracker_id = ANY($1) ORDER BY tracker_id FOR UPDATE) locked),
    to_regclass('positions_5m_mark') IS NOT NULL";

/// Writes a batch atomically, in one transaction. Command reports go to `commands`; without one
/// (a process that does not run the server) they are dead letters.
///
/// A batch of fixes alone would be atomic as one autocommitted statement, but an explicit COMMIT
/// costs one round trip per batch and tells the statements' time from the WAL flush's, which is
/// what an operator needs to know where an acknowledgement's time goes.
pub async fn write_batch(
    client: &mut deadpool_postgres::ClientWrapper,
    rows: &BatchRows,
    commands: Option<&dyn CommandReports>,
) -> Result<WriteOutcome, StorageError> {
    let mut wasted = Duration::ZERO;
    let mut by_copy = true;
    loop {
        match write_transaction(client, rows, commands, by_copy).await? {
            Ok(mut outcome) => {
                outcome.rewritten = !by_copy;
                outcome.statements += wasted;
                return Ok(outcome);
            }
            // The COPY met a fix already stored and its transaction was rolled back: the batch
            // is written again the way that skips stored fixes.
            Err(spent) => {
                wasted = spent;
                by_copy = false;
            }
        }
    }
}

/// One try at [`write_batch`]: `Err` with the time spent when `by_copy` and the COPY met a fix
/// already stored (the transaction is rolled back).
async fn write_transaction(
    client: &mut deadpool_postgres::ClientWrapper,
    rows: &BatchRows,
    commands: Option<&dyn CommandReports>,
    by_copy: bool,
) -> Result<Result<WriteOutcome, Duration>, StorageError> {
    let q = StorageError::query;
    let mut outcome = WriteOutcome::default();
    // Cached: each is prepared once per connection, not parsed, planned and described again (one
    // more round trip) on every batch.
    let statements = if rows.fixes.is_empty() {
        None
    } else {
        let copy = client
            .prepare_cached(COPY_FIXES)
            .await
            .map_err(q("preparing the fix copy"))?;
        let insert = client
            .prepare_cached(WRITE_FIXES)
            .await
            .map_err(q("preparing the fix insert"))?;
        let status = client
            .prepare_cached(WRITE_STATUS)
            .await
            .map_err(q("preparing the status update"))?;
        Some((copy, insert, status))
    };
    let lock = client
        .prepare_cached(LOCK_TRACKERS)
        .await
        .map_err(q("preparing the tracker lock"))?;
    let tx = client.transaction().await.map_err(q("starting a batch"))?;
    let started = Instant::now();
    // Two transactions may write the same trackers: behind an external broker whose shared
    // subscription hands one collar's messages to two ingest instances, or a spool replay beside
    // the live writer. Each row they touch belongs to a tracker, so taking the trackers' status
    // rows first, in one order, makes them queue instead of deadlocking (statements below
    // would take a tracker's rows in different orders: its 5-minute row before its status in
    // the fix insert, its status first in the status update).
    let trackers = rows.trackers();
    let mut settled = false;
    if !trackers.is_empty() {
        let row = tx
            .query_one(&lock, &[&trackers])
            .await
            .map_err(q("locking the batch's trackers"))?;
        settled = row
            .try_get(1)
            .map_err(q("reading whether intervals are settled"))?;
    }
    if let Some((copy, insert, status)) = &statements {
        outcome.fixes_stored = if by_copy && settled {
            match copy_fixes(&tx, copy, &rows.fixes).await? {
                Some(stored) => stored,
                None => {
                    tx.rollback().await.map_err(q("rolling back a batch"))?;
                    return Ok(Err(started.elapsed()));
                }
            }
        } else {
            insert_fixes(&*tx, insert, &rows.fixes).await?
        };
        outcome.duplicates = (rows.fixes.len() as u64).saturating_sub(outcome.fixes_stored);
        write_status(&*tx, status, &rows.fixes).await?;
    }

    for status in &rows.statuses {
        tx.execute(
            "UPDATE tracker_status SET
                 battery = coalesce($2, battery), charging = coalesce($3, charging),
                 firmware = coalesce($4, firmware), signal_dbm = coalesce($5, signal_dbm),
                 last_seen = greatest(last_seen, $6), updated_at = now()
             WHERE tracker_id = $1",
            &[
                &status.tracker_id,
                &status.battery,
                &status.charging,
                &status.firmware,
                &status.signal_dbm,
                &status.received_at,
            ],
        )
        .await
        .map_err(q("updating tracker status"))?;
    }

    for p in &rows.presence {
        tx.execute(
            "UPDATE tracker_status SET
                 online_changed_at = CASE WHEN online IS DISTINCT FROM $2 THEN $3 ELSE online_changed_at END,
                 online = $2,
                 last_seen = CASE WHEN $2 THEN greatest(last_seen, $3) ELSE last_seen END,
                 updated_at = now()
             WHERE tracker_id = $1",
            &[&p.tracker_id, &p.online, &p.at],
        )
        .await
        .map_err(q("updating presence"))?;
    }

    // Reports that cannot apply become dead letters, with the reason.
    let mut dead_letters = rows.dead_letters.clone();
    for report in &rows.command_reports {
        let outcome = match commands {
            Some(commands) => commands.apply(&tx, report).await?,
            None => ReportOutcome::Refused("this process does not handle commands".to_owned()),
        };
        if let ReportOutcome::Refused(reason) = outcome {
            dead_letters.push(report.dead_letter(reason));
        }
    }

    if !dead_letters.is_empty() {
        let d = &dead_letters;
        let tracker: Vec<Option<&str>> = d.iter().map(|r| r.tracker_id.as_deref()).collect();
        let topic: Vec<&str> = d.iter().map(|r| r.topic.as_str()).collect();
        let payload: Vec<&[u8]> = d.iter().map(|r| r.payload.as_slice()).collect();
        let reason: Vec<&str> = d.iter().map(|r| r.reason.as_str()).collect();
        let received: Vec<DateTime<Utc>> = d.iter().map(|r| r.received_at).collect();
        outcome.dead_letters = tx
            .execute(
                "INSERT INTO dead_letters (tracker_id, topic, payload, reason, received_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::timestamptz[])",
                &[&tracker, &topic, &payload, &reason, &received],
            )
            .await
            .map_err(q("storing dead letters"))?;
    }

    outcome.statements = started.elapsed();
    let committing = Instant::now();
    tx.commit().await.map_err(q("committing a batch"))?;
    outcome.commit = committing.elapsed();
    Ok(Ok(outcome))
}

impl CommandReport {
    /// The report as a dead letter with `reason`.
    pub fn dead_letter(&self, reason: String) -> DeadLetterRow {
        DeadLetterRow {
            tracker_id: Some(self.tracker_id.clone()),
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            reason,
            received_at: self.received_at,
        }
    }
}

/// Runs [`COPY_FIXES`]; returns how many fixes it stored (all of them), or `None` when one was
/// already stored, which fails the COPY and with it the transaction.
async fn copy_fixes(
    tx: &tokio_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    f: &[FixRow],
) -> Result<Option<u64>, StorageError> {
    let q = StorageError::query;
    let sink = tx.copy_in(stmt).await.map_err(q("starting the fix copy"))?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &FIX_TYPES));
    for r in f {
        let row: [&(dyn ToSql + Sync); 12] = [
            &r.tracker_id,
            &r.device_time,
            &r.received_at,
            &r.lat,
            &r.lon,
            &r.altitude,
            &r.accuracy,
            &r.speed,
            &r.heading,
            &r.satellites,
            &r.battery,
            &r.seq,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(q("copying fixes"))?;
    }
    match writer.as_mut().finish().await {
        Ok(stored) => Ok(Some(stored)),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
        Err(e) => Err(q("copying fixes")(e)),
    }
}

/// Runs [`WRITE_FIXES`]; returns how many fixes were new.
async fn insert_fixes(
    client: &impl tokio_postgres::GenericClient,
    stmt: &tokio_postgres::Statement,
    f: &[FixRow],
) -> Result<u64, StorageError> {
    let tracker: Vec<&str> = f.iter().map(|r| r.tracker_id.as_str()).collect();
    let device_time: Vec<DateTime<Utc>> = f.iter().map(|r| r.device_time).collect();
    let received: Vec<DateTime<Utc>> = f.iter().map(|r| r.received_at).collect();
    let lat: Vec<f64> = f.iter().map(|r| r.lat).collect();
    let lon: Vec<f64> = f.iter().map(|r| r.lon).collect();
    let alt: Vec<Option<f32>> = f.iter().map(|r| r.altitude).collect();
    let acc: Vec<Option<f32>> = f.iter().map(|r| r.accuracy).collect();
    let spd: Vec<Option<f32>> = f.iter().map(|r| r.speed).collect();
    let hdg: Vec<Option<f32>> = f.iter().map(|r| r.heading).collect();
    let sat: Vec<Option<i16>> = f.iter().map(|r| r.satellites).collect();
    let bat: Vec<Option<i16>> = f.iter().map(|r| r.battery).collect();
    let seq: Vec<Option<i64>> = f.iter().map(|r| r.seq).collect();
    let row = client
        .query_one(
            stmt,
            &[
                &tracker,
                &device_time,
                &received,
                &lat,
                &lon,
                &alt,
                &acc,
                &spd,
                &hdg,
                &sat,
                &bat,
                &seq,
            ],
        )
        .await
        .map_err(StorageError::query("writing fixes"))?;
    let inserted: i64 = row
        .try_get(0)
        .map_err(StorageError::query("counting the fixes written"))?;
    Ok(inserted.max(0) as u64)
}

/// Runs [`WRITE_STATUS`] with each tracker's newest fix of the batch (by device time) and when
/// it was last heard from.
async fn write_status(
    client: &impl tokio_postgres::GenericClient,
    stmt: &tokio_postgres::Statement,
    f: &[FixRow],
) -> Result<(), StorageError> {
    let mut newest: std::collections::HashMap<&str, (&FixRow, DateTime<Utc>)> =
        std::collections::HashMap::new();
    for fix in f {
        let entry = newest
            .entry(fix.tracker_id.as_str())
            .or_insert((fix, fix.received_at));
        if fix.device_time > entry.0.device_time {
            entry.0 = fix;
        }
        entry.1 = entry.1.max(fix.received_at);
    }
    let rows: Vec<(&FixRow, DateTime<Utc>)> = newest.into_values().collect();
    let s_tracker: Vec<&str> = rows.iter().map(|r| r.0.tracker_id.as_str()).collect();
    let s_time: Vec<DateTime<Utc>> = rows.iter().map(|r| r.0.device_time).collect();
    let s_lat: Vec<f64> = rows.iter().map(|r| r.0.lat).collect();
    let s_lon: Vec<f64> = rows.iter().map(|r| r.0.lon).collect();
    let s_acc: Vec<Option<f32>> = rows.iter().map(|r| r.0.accuracy).collect();
    let s_spd: Vec<Option<f32>> = rows.iter().map(|r| r.0.speed).collect();
    let s_hdg: Vec<Option<f32>> = rows.iter().map(|r| r.0.heading).collect();
    let s_seq: Vec<Option<i64>> = rows.iter().map(|r| r.0.seq).collect();
    let s_bat: Vec<Option<i16>> = rows.iter().map(|r| r.0.battery).collect();
    let s_seen: Vec<DateTime<Utc>> = rows.iter().map(|r| r.1).collect();
    client
        .execute(
            stmt,
            &[
                &s_tracker, &s_time, &s_lat, &s_lon, &s_acc, &s_spd, &s_hdg, &s_seq, &s_bat,
                &s_seen,
            ],
        )
        .await
        .map_err(StorageError::query("updating the trackers' last fixes"))?;
    Ok(())
}

/// Marks trackers offline that have said nothing for `silence` (a collar that lost power sends no Last Will
/// if the broker has not noticed the dead connection yet).
pub async fn mark_silent_offline(
    client: &Client,
    silence: std::time::Duration,
) -> Result<u64, StorageError> {
    let secs = silence.as_secs_f64();
    client
        .execute(
            "UPDATE tracker_status SET online = false, online_changed_at = now(), updated_at = now()
             WHERE online AND last_seen < now() - make_interval(secs => $1)",
            &[&secs],
        )
        .await
        .map_err(StorageError::query("marking silent trackers offline"))
}
