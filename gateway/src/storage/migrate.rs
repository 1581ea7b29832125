//! The schema's history: versioned migrations applied in order under an advisory lock, each recorded with its checksum in `schema_migrations`, and the device side's own migrations.
//!
//! One history serves one database, but its migrations are owned by the crates whose code uses
//! their tables: this crate's [`MIGRATIONS`] (trackers and their credentials, status, fixes, dead
//! letters) and the server's (accounts, sharing, summaries, alerts, commands). The server merges
//! them with [`History::merge`]; this crate's tests run its migrations alone.
//!
//! Some steps differ between TimescaleDB and plain PostgreSQL. Which backend a database uses is decided
//! once, by the first migration run, and recorded, so that later migrations never mix the two.

use tokio_postgres::Client;

use super::{Backend, StorageError, TimescalePreference};

/// One schema version.
#[derive(Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    /// Statements for a TimescaleDB database, each sent on its own.
    pub timescale: &'static [&'static str],
    /// Statements for plain PostgreSQL, each sent on its own.
    pub postgres: &'static [&'static str],
    /// Continuous aggregates cannot be created inside a transaction block.
    pub transactional: bool,
    /// Checksums an earlier text of this version was recorded with, when statements were moved
    /// between versions without changing the schema they build together (migrations 1 and 5 at
    /// the gateway/server split). A database that recorded one of them is up to date for this
    /// version; `tests/schema.rs` proves it on a database of the release before.
    pub earlier_checksums: &'static [&'static str],
}

impl Migration {
    /// The statements for `backend`.
    pub fn statements(&self, backend: Backend) -> &'static [&'static str] {
        match backend {
            Backend::TimescaleDb => self.timescale,
            Backend::Postgres => self.postgres,
        }
    }

    /// What a database records for this version, to notice the migration changing after it ran.
    pub fn checksum(&self, backend: Backend) -> String {
        checksum(self.statements(backend))
    }

    fn accepts(&self, backend: Backend, recorded: &str) -> bool {
        recorded == self.checksum(backend) || self.earlier_checksums.contains(&recorded)
    }
}

/// The device side's migrations: the tables the ingest path writes. Versions 3 to 9, 12 and
/// 13 are the server's (`src/schema.rs`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "base",
        timescale: &[include_str!("migrations/0001_base.sql")],
        postgres: &[include_str!("migrations/0001_base.sql")],
        transactional: true,
        // d9cdef1 and before: the same tables plus `users` and `trackers.owner_id`, which
        // migration 5 creates now.
        earlier_checksums: &["445ac418840221c0"],
    },
    Migration {
        version: 2,
        name: "positions storage",
        timescale: &[include_str!("migrations/0002_positions_timescaledb.sql")],
        postgres: &[include_str!("migrations/0002_positions_postgres.sql")],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 10,
        name: "last fix of every 5 minutes, for bucketed history",
        timescale: &[include_str!("migrations/0010_position_buckets.sql")],
        postgres: &[include_str!("migrations/0010_position_buckets.sql")],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 11,
        name: "retention index on the 5-minute intervals",
        timescale: &[include_str!("migrations/0011_retention_indexes.sql")],
        postgres: &[include_str!("migrations/0011_retention_indexes.sql")],
        transactional: true,
        earlier_checksums: &[],
    },
];

/// The migrations one database gets, in version order.
#[derive(Debug, Clone)]
pub struct History(Vec<&'static Migration>);

impl History {
    /// The device side's migrations alone (this crate's tests).
    pub fn device() -> History {
        History::merge(&[MIGRATIONS])
    }

    /// The migrations of several crates as one history, ordered by version. Panics when two
    /// crates claim the same version: that is a bug in the binary, found by every test that
    /// migrates, never by a user.
    pub fn merge(parts: &[&'static [Migration]]) -> History {
        let mut all: Vec<&'static Migration> = parts.iter().flat_map(|p| p.iter()).collect();
        all.sort_by_key(|m| m.version);
        if let Some(pair) = all.windows(2).find(|w| w[0].version == w[1].version) {
            panic!(
                "two migrations claim version {}: {:?} and {:?}",
                pair[0].version, pair[0].name, pair[1].name
            );
        }
        History(all)
    }

    pub fn migrations(&self) -> &[&'static Migration] {
        &self.0
    }

    /// The newest version of this history.
    pub fn latest_version(&self) -> i32 {
        self.0.last().map_or(0, |m| m.version)
    }

    /// One checksum over every statement of the history, for both backends: names the schema
    /// it builds (the test support keeps one template database per fingerprint).
    pub fn fingerprint(&self) -> String {
        let statements: Vec<&str> = self
            .0
            .iter()
            .flat_map(|m| m.postgres.iter().chain(m.timescale.iter()).copied())
            .collect();
        checksum(&statements)
    }
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
    history: &History,
    preference: TimescalePreference,
) -> Result<MigrationReport, StorageError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StorageError::query("taking the migration lock"))?;
    let result = run_locked(client, history, preference).await;
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
    history: &History,
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
        && *newest > history.latest_version()
    {
        return Err(StorageError::SchemaTooNew {
            database: *newest,
            binary: history.latest_version(),
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
    for migration in history.migrations() {
        if let Some((_, _, recorded)) = applied.iter().find(|a| a.0 == migration.version) {
            if !migration.accepts(backend, recorded) {
                return Err(StorageError::MigrationChanged {
                    version: migration.version,
                });
            }
            continue;
        }
        let statements = migration.statements(backend);
        apply(
            client,
            migration,
            backend,
            statements,
            &migration.checksum(backend),
        )
        .await?;
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
pub fn checksum(statements: &[&str]) -> String {
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
    fn the_device_migrations_are_in_version_order_and_merge_with_others_by_version() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        const OTHER: &[Migration] = &[Migration {
            version: 3,
            name: "other",
            timescale: &["SELECT 1"],
            postgres: &["SELECT 1"],
            transactional: true,
            earlier_checksums: &[],
        }];
        let merged = History::merge(&[MIGRATIONS, OTHER]);
        let versions: Vec<i32> = merged.migrations().iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 10, 11]);
        assert_eq!(merged.latest_version(), 11);
        assert_ne!(merged.fingerprint(), History::device().fingerprint());
    }

    #[test]
    #[should_panic(expected = "two migrations claim version 2")]
    fn two_crates_claiming_one_version_is_refused() {
        const CLASH: &[Migration] = &[Migration {
            version: 2,
            name: "clash",
            timescale: &[],
            postgres: &[],
            transactional: true,
            earlier_checksums: &[],
        }];
        History::merge(&[MIGRATIONS, CLASH]);
    }

    #[test]
    fn an_earlier_checksum_of_a_version_is_accepted_and_any_other_is_not() {
        let base = &MIGRATIONS[0];
        assert!(base.accepts(Backend::Postgres, &base.checksum(Backend::Postgres)));
        assert!(base.accepts(Backend::TimescaleDb, "445ac418840221c0"));
        assert!(!base.accepts(Backend::Postgres, "0000000000000000"));
    }

    #[test]
    fn checksum_changes_when_a_statement_changes() {
        assert_ne!(checksum(&["SELECT 1"]), checksum(&["SELECT 2"]));
        assert_eq!(checksum(&["SELECT 1"]), checksum(&["SELECT 1\n"]));
    }
}
