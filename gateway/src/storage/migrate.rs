//! Versioned schema migrations: applied in order under an advisory lock, recorded in `schema_migrations`.
//!
//! Some steps differ between TimescaleDB and plain PostgreSQL. Which backend a database uses is decided
//! once, by the first migration run, and recorded, so that later migrations never mix the two.

use tokio_postgres::Client;

use super::{Backend, StorageError, TimescalePreference};

/// One schema version.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    /// Statements for a TimescaleDB database, each sent on its own.
    pub timescale: &'static [&'static str],
    /// Statements for plain PostgreSQL, each sent on its own.
    pub postgres: &'static [&'static str],
    /// Continuous aggregates cannot be created inside a transaction block.
    pub transactional: bool,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "base",
        timescale: &[include_str!("migrations/0001_base.sql")],
        postgres: &[include_str!("migrations/0001_base.sql")],
        transactional: true,
    },
    Migration {
        version: 2,
        name: "positions storage",
        timescale: &[include_str!("migrations/0002_positions_timescaledb.sql")],
        postgres: &[include_str!("migrations/0002_positions_postgres.sql")],
        transactional: true,
    },
    Migration {
        version: 3,
        name: "daily summaries",
        // Separate statements: the aggregate's functions, then the view, which on TimescaleDB
        // may not share an (implicit) transaction with anything.
        timescale: &[
            include_str!("migrations/0003_path_length.sql"),
            include_str!("migrations/0003_daily_summaries_timescaledb.sql"),
        ],
        postgres: &[
            include_str!("migrations/0003_path_length.sql"),
            include_str!("migrations/0003_daily_summaries_postgres.sql"),
        ],
        transactional: false,
    },
    Migration {
        version: 4,
        name: "daily summaries refresh policy",
        timescale: &[include_str!(
            "migrations/0004_daily_summaries_policy_timescaledb.sql"
        )],
        postgres: &[],
        transactional: true,
    },
    Migration {
        version: 5,
        name: "accounts",
        timescale: &[include_str!("migrations/0005_accounts.sql")],
        postgres: &[include_str!("migrations/0005_accounts.sql")],
        transactional: true,
    },
    Migration {
        version: 6,
        name: "tracker sharing",
        timescale: &[include_str!("migrations/0006_tracker_members.sql")],
        postgres: &[include_str!("migrations/0006_tracker_members.sql")],
        transactional: true,
    },
    Migration {
        version: 7,
        name: "time moving in daily summaries",
        // The continuous aggregate is dropped and created again, which TimescaleDB allows only
        // outside a transaction, one statement at a time.
        timescale: &[
            include_str!("migrations/0007_moving_time.sql"),
            include_str!("migrations/0007_daily_summaries_timescaledb.sql"),
            include_str!("migrations/0007_daily_summaries_view_timescaledb.sql"),
            include_str!("migrations/0004_daily_summaries_policy_timescaledb.sql"),
        ],
        postgres: &[
            include_str!("migrations/0007_moving_time.sql"),
            include_str!("migrations/0007_daily_summaries_postgres.sql"),
        ],
        transactional: false,
    },
    Migration {
        version: 8,
        name: "safe zones and alerts",
        timescale: &[include_str!("migrations/0008_live.sql")],
        postgres: &[include_str!("migrations/0008_live.sql")],
        transactional: true,
    },
    Migration {
        version: 9,
        name: "commands and dead-letter retries",
        timescale: &[include_str!("migrations/0009_commands.sql")],
        postgres: &[include_str!("migrations/0009_commands.sql")],
        transactional: true,
    },
    Migration {
        version: 10,
        name: "last fix of every 5 minutes, for bucketed history",
        timescale: &[include_str!("migrations/0010_position_buckets.sql")],
        postgres: &[include_str!("migrations/0010_position_buckets.sql")],
        transactional: true,
    },
];

/// The newest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub backend: Backend,
    /// Versions applied by this run, oldest first; empty when the schema was current.
    pub applied: Vec<i32>,
    pub current: i32,
}

/// Any 64-bit constant works as long as every pettracker process uses the same one.
const MIGRATION_LOCK: i64 = 0x7065_7474_7261_636b; // "pettrack"

/// Brings the schema up to date. Safe to run concurrently from several processes.
pub async fn run(
    client: &mut Client,
    preference: TimescalePreference,
) -> Result<MigrationReport, StorageError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StorageError::query("taking the migration lock"))?;
    let result = run_locked(client, preference).await;
    // Unlock even after a failure: the session may be pooled and outlive this call.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = result?;
    unlock.map_err(StorageError::query("releasing the migration lock"))?;
    Ok(report)
}

async fn run_locked(
    client: &mut Client,
    preference: TimescalePreference,
) -> Result<MigrationReport, StorageError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 backend    TEXT NOT NULL,
                 checksum   TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(StorageError::query("creating schema_migrations"))?;

    let rows = client
        .query(
            "SELECT version, backend, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(StorageError::query("reading schema_migrations"))?;
    let applied: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();

    if let Some((newest, _, _)) = applied.last()
        && *newest > latest_version()
    {
        return Err(StorageError::SchemaTooNew {
            database: *newest,
            binary: latest_version(),
        });
    }

    let backend = match applied.first() {
        Some((_, backend, _)) => backend.parse()?,
        None => choose_backend(client, preference).await?,
    };

    let mut report = MigrationReport {
        backend,
        applied: Vec::new(),
        current: applied.last().map_or(0, |a| a.0),
    };
    for migration in MIGRATIONS {
        let statements = match backend {
            Backend::TimescaleDb => migration.timescale,
            Backend::Postgres => migration.postgres,
        };
        let checksum = checksum(statements);
        if let Some((_, _, recorded)) = applied.iter().find(|a| a.0 == migration.version) {
            if *recorded != checksum {
                return Err(StorageError::MigrationChanged {
                    version: migration.version,
                });
            }
            continue;
        }
        apply(client, migration, backend, statements, &checksum).await?;
        report.applied.push(migration.version);
        report.current = migration.version;
    }
    Ok(report)
}

async fn choose_backend(
    client: &Client,
    preference: TimescalePreference,
) -> Result<Backend, StorageError> {
    let available: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await
        .map_err(StorageError::query("checking for TimescaleDB"))?
        .get(0);
    match (preference, available) {
        (TimescalePreference::Off, _) | (TimescalePreference::Auto, false) => Ok(Backend::Postgres),
        (_, true) => Ok(Backend::TimescaleDb),
        (TimescalePreference::Required, false) => Err(StorageError::TimescaleMissing),
    }
}

async fn apply(
    client: &mut Client,
    migration: &Migration,
    backend: Backend,
    statements: &[&str],
    checksum: &str,
) -> Result<(), StorageError> {
    let failed = |source| StorageError::Migration {
        version: migration.version,
        name: migration.name,
        source,
    };
    let record =
        "INSERT INTO schema_migrations (version, name, backend, checksum) VALUES ($1, $2, $3, $4)";
    let backend_name = backend.as_str();
    if migration.transactional {
        let tx = client.transaction().await.map_err(failed)?;
        for sql in statements {
            tx.batch_execute(sql).await.map_err(failed)?;
        }
        tx.execute(
            record,
            &[
                &migration.version,
                &migration.name,
                &backend_name,
                &checksum,
            ],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
    } else {
        for sql in statements {
            client.batch_execute(sql).await.map_err(failed)?;
        }
        client
            .execute(
                record,
                &[
                    &migration.version,
                    &migration.name,
                    &backend_name,
                    &checksum,
                ],
            )
            .await
            .map_err(failed)?;
    }
    tracing::info!(
        version = migration.version,
        name = migration.name,
        backend = backend_name,
        "applied migration"
    );
    Ok(())
}

/// FNV-1a over the statements: stable across Rust versions, unlike `DefaultHasher`.
fn checksum(statements: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in statements.iter().flat_map(|s| s.trim().bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_versions_are_strictly_increasing_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "migration {}", m.name);
        }
    }

    #[test]
    fn checksum_changes_when_a_statement_changes() {
        assert_ne!(checksum(&["SELECT 1"]), checksum(&["SELECT 2"]));
        assert_eq!(checksum(&["SELECT 1"]), checksum(&["SELECT 1\n"]));
    }
}
