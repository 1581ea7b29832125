//! The retention job: at start and then every `storage.retention_interval_secs`, deletes the history past its window, table by table, in bounded chunks (docs/storage.md, *Retention*).
//!
//! One run holds a session advisory lock on one connection, so of several processes on one
//! database only one deletes at a time; the others skip that run. [`run`] is the whole loop,
//! [`run_once`] one pass, for wrapping (a fleet-wide scheduler) and for tests.

use std::time::Duration;

use deadpool_postgres::Pool;
use gateway::shutdown::Shutdown;
use gateway::storage::retention::{self, DeviceWindows, Rule};
use gateway::storage::{self, Backend, StorageError, pool_error_reason};

use crate::commands::lifecycle::CommandStatus;
use crate::config::StorageConfig;

/// Pause between two chunks of one table: row locks are released in between, and ingest's
/// statements get the database's attention.
const CHUNK_PAUSE: Duration = Duration::from_millis(20);

/// A kept day whose fixes were all deleted: it is stale (a delete touched it) and no fix of the
/// day is left.
const EMPTIED_DAY: &str = "stale AND NOT EXISTS (SELECT 1 FROM positions p
     WHERE p.tracker_id = tracker_days.tracker_id AND p.device_time >= tracker_days.day
       AND p.device_time < tracker_days.day + interval '1 day')";

/// The windows of every kind of history, and how often to apply them.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub device: DeviceWindows,
    /// Finished commands (and their events), in days; 0 keeps them.
    pub commands: u32,
    pub alerts: u32,
    /// Finished webhook deliveries.
    pub webhook_deliveries: u32,
    pub interval: Duration,
}

impl RetentionSettings {
    pub fn from_config(storage: &StorageConfig) -> RetentionSettings {
        RetentionSettings {
            device: DeviceWindows {
                fixes: storage.retention_days,
                positions_5m: storage.positions_5m_retention_days,
                dead_letters: storage.dead_letter_retention_days,
            },
            commands: storage.command_retention_days,
            alerts: storage.alert_retention_days,
            webhook_deliveries: storage.webhook_delivery_retention_days,
            interval: Duration::from_secs(storage.retention_interval_secs.max(1)),
        }
    }

    /// Every table's rule for `backend`: the device side's, then the server's. Alerts go after
    /// their deliveries' own rule, and take the deliveries they still have with them.
    pub fn rules(&self, backend: Backend) -> Vec<Rule> {
        let server = [
            Rule::new(
                "commands",
                "updated_at",
                Some(CommandStatus::TERMINAL_SQL),
                self.commands,
            ),
            Rule::new(
                "webhook_deliveries",
                "created_at",
                Some("status <> 'pending'"),
                self.webhook_deliveries,
            ),
            Rule::new("alerts", "created_at", None, self.alerts),
        ];
        // After the fixes' own rule: the kept days (plain PostgreSQL only, migration 13) that
        // their deletes emptied. A day they only cut stays, stale, and is read from its fixes.
        let days = match backend {
            Backend::Postgres => {
                Rule::new("tracker_days", "day", Some(EMPTIED_DAY), self.device.fixes)
            }
            Backend::TimescaleDb => None,
        };
        retention::device_rules(backend, self.device)
            .into_iter()
            .chain(server.into_iter().flatten())
            .chain(days)
            .collect()
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Rows deleted per table.
    Done(Vec<(&'static str, u64)>),
    /// Another process holds the retention lock and is doing it.
    Skipped,
}

/// Runs a pass now and then every `settings.interval` until shutdown. Sets TimescaleDB's own
/// policy for fixes first, where `positions` is a hypertable. Start it once the database is
/// migrated.
pub async fn run(pool: Pool, settings: RetentionSettings, mut shutdown: Shutdown) {
    if let Err(err) = set_timescale_policy(&pool, &settings).await {
        tracing::warn!(%err, "could not set TimescaleDB's retention policy for fixes");
    }
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.recv() => return,
        }
        match run_once(&pool, &settings, &shutdown).await {
            Ok(Pass::Done(deleted)) => {
                let total: u64 = deleted.iter().map(|(_, n)| n).sum();
                if total > 0 {
                    tracing::info!(?deleted, "retention: deleted history past its window");
                }
            }
            Ok(Pass::Skipped) => {
                tracing::debug!("retention: another process is applying it");
            }
            Err(err) => tracing::warn!(%err, "retention pass failed; trying again next time"),
        }
    }
}

/// Sets TimescaleDB's own retention policy for fixes, where `positions` is a hypertable.
pub async fn set_timescale_policy(
    pool: &Pool,
    settings: &RetentionSettings,
) -> Result<(), StorageError> {
    if storage::backend(pool).await? == Backend::TimescaleDb {
        let client = pool
            .get()
            .await
            .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
        retention::set_timescale_policy(&client, settings.device.fixes).await?;
    }
    Ok(())
}

/// One pass over every table, under the retention lock.
pub async fn run_once(
    pool: &Pool,
    settings: &RetentionSettings,
    shutdown: &Shutdown,
) -> Result<Pass, StorageError> {
    // Asked before taking the connection of the pass: `backend` takes one of its own, and
    // holding ours while it waits would deadlock a pool of one.
    let rules = settings.rules(storage::backend(pool).await?);
    let client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    if !retention::try_lock(&client).await? {
        return Ok(Pass::Skipped);
    }
    let mut deleted = Vec::new();
    let mut result = Ok(());
    for rule in &rules {
        match retention::delete_expired(&client, rule, CHUNK_PAUSE, shutdown).await {
            Ok(n) => deleted.push((rule.table, n)),
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    // A session lock stays with the connection, and the pool hands the connection on: release
    // it, or drop a connection that cannot (which ends the session and its locks).
    if retention::unlock(&client).await.is_err() {
        let _ = deadpool_postgres::Object::take(client);
    }
    result.map(|()| Pass::Done(deleted))
}
