//! Retention: deleting history past its window in bounded chunks, so that no statement holds its locks for long or keeps ingest waiting for more than a moment.
//!
//! A [`Rule`] names a table, the time column its window is measured on, and which rows may
//! expire at all. The device side brings its rules here ([`device_rules`]); the server adds its
//! own and runs them all in one job (`src/retention.rs`). On TimescaleDB, `positions` is a
//! hypertable and its own policy drops whole chunks ([`set_timescale_policy`]); every other table
//! is plain on both backends and is deleted from here.

use std::time::Duration;

use tokio_postgres::Client;

use super::{Backend, StorageError};
use crate::shutdown::Shutdown;

/// Rows deleted by one statement at most. Each chunk is a statement of its own (its own short
/// transaction), so the row locks it takes are released before the next one starts.
pub const CHUNK_ROWS: i64 = 5_000;

/// The key of the session advisory lock a retention run takes, so that of several processes on
/// one database only one deletes at a time (the others skip that run).
pub const ADVISORY_LOCK_KEY: i64 = 0x7065_7474_7265_7431; // "pettret1"

/// What expires in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The table, also the `table` label of the metric.
    pub table: &'static str,
    /// The time column the window is measured on.
    pub column: &'static str,
    /// A condition rows must meet to expire at all (open commands and pending deliveries never
    /// do), or `None`.
    pub only: Option<&'static str>,
    /// The window, in days (at least one: a kind kept forever has no rule).
    pub keep_days: u32,
}

impl Rule {
    /// A rule for `table`, or none when `keep_days` is 0 (kept forever).
    pub fn new(
        table: &'static str,
        column: &'static str,
        only: Option<&'static str>,
        keep_days: u32,
    ) -> Option<Rule> {
        (keep_days > 0).then_some(Rule {
            table,
            column,
            only,
            keep_days,
        })
    }

    /// One chunk: the oldest expired rows' addresses, then those rows. Physical addresses keep
    /// it to a TID scan, whatever the table's key.
    fn chunk_sql(&self) -> String {
        let (table, column) = (self.table, self.column);
        let only = self.only.map(|c| format!(" AND ({c})")).unwrap_or_default();
        format!(
            "DELETE FROM {table} WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM {table}
                 WHERE {column} < now() - make_interval(days => $1){only}
                 LIMIT $2))"
        )
    }
}

/// The windows of the device side's tables, in days; 0 keeps a kind forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceWindows {
    /// `positions` (at least 1: the same window refuses older fixes at ingest).
    pub fixes: u32,
    /// `positions_5m`, the last fix of each 5-minute interval.
    pub positions_5m: u32,
    pub dead_letters: u32,
}

/// The device side's rules. Fixes have one only on plain PostgreSQL: on TimescaleDB the
/// hypertable's own policy drops them a chunk at a time.
pub fn device_rules(backend: Backend, windows: DeviceWindows) -> Vec<Rule> {
    let fixes = match backend {
        Backend::Postgres => Rule::new("positions", "device_time", None, windows.fixes),
        Backend::TimescaleDb => None,
    };
    [
        fixes,
        Rule::new("positions_5m", "bucket", None, windows.positions_5m),
        Rule::new("dead_letters", "received_at", None, windows.dead_letters),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Sets TimescaleDB's retention policy on `positions` to `days` (replacing an earlier one).
pub async fn set_timescale_policy(client: &Client, days: u32) -> Result<(), StorageError> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    client
        .execute(
            "SELECT remove_retention_policy('positions', if_exists => true)",
            &[],
        )
        .await
        .map_err(StorageError::query("removing the retention policy"))?;
    client
        .execute(
            "SELECT add_retention_policy('positions', make_interval(days => $1))",
            &[&days],
        )
        .await
        .map_err(StorageError::query("adding the retention policy"))?;
    Ok(())
}

/// Deletes the rows of `rule` past its window, [`CHUNK_ROWS`] at a time, until none is left or
/// shutdown is asked for; `pause` between chunks leaves the database to others. Returns how
/// many were deleted.
pub async fn delete_expired(
    client: &Client,
    rule: &Rule,
    pause: Duration,
    shutdown: &Shutdown,
) -> Result<u64, StorageError> {
    let sql = rule.chunk_sql();
    let days = i32::try_from(rule.keep_days).unwrap_or(i32::MAX);
    let mut total = 0;
    loop {
        let deleted = client
            .execute(&sql, &[&days, &CHUNK_ROWS])
            .await
            .map_err(StorageError::query("deleting history past retention"))?;
        total += deleted;
        events::deleted(rule.table, deleted);
        if deleted < CHUNK_ROWS as u64 || shutdown.is_shutdown() {
            return Ok(total);
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Takes the retention lock on this connection's session; false when another process holds it.
pub async fn try_lock(client: &Client) -> Result<bool, StorageError> {
    super::advisory::try_lock(client, ADVISORY_LOCK_KEY, "taking the retention lock").await
}

/// Releases the lock [`try_lock`] took.
pub async fn unlock(client: &Client) -> Result<(), StorageError> {
    super::advisory::unlock(client, ADVISORY_LOCK_KEY, "releasing the retention lock").await
}

pub mod events {
    //! Retention telemetry: rows deleted per table (a handful of tables, never per device).
    pub const DELETED: &str = "pettracker_retention_deleted_rows_total";

    pub fn deleted(table: &'static str, rows: u64) {
        metrics::counter!(DELETED, "table" => table).increment(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_of_zero_keeps_a_kind_forever_and_timescaledb_keeps_its_own_policy_for_fixes() {
        let windows = DeviceWindows {
            fixes: 30,
            positions_5m: 0,
            dead_letters: 7,
        };
        let tables = |backend| -> Vec<&str> {
            device_rules(backend, windows)
                .iter()
                .map(|r| r.table)
                .collect()
        };
        assert_eq!(tables(Backend::Postgres), ["positions", "dead_letters"]);
        assert_eq!(tables(Backend::TimescaleDb), ["dead_letters"]);
    }
}
