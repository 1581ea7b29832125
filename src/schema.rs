//! The server's schema migrations (accounts, sharing, daily summaries, alerts, commands), and the one ordered history they make with the device side's.
//!
//! Each migration lives in the crate whose code uses its tables: versions 1, 2, 10 and 11 are
//! `gateway`'s (trackers, their status, fixes, dead letters), 3 to 9 and 12 to 18 are these. One runner
//! (`gateway::storage::migrate`) applies the merged history, in version order, with checksums.
//!
//! Migrations 1 and 5 were rearranged at the gateway/server split: `users` and
//! `trackers.owner_id` moved from 1 (now the device side's) to 5 (accounts). Together they build
//! the same schema as before, so a database migrated by an earlier release, which recorded the
//! older texts, keeps its checksums valid (`earlier_checksums`); `tests/schema.rs` proves it on a
//! database of the release before.

use gateway::storage::migrate::{History, MIGRATIONS as DEVICE_MIGRATIONS, Migration};

/// The server's migrations.
pub const MIGRATIONS: &[Migration] = &[
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
        earlier_checksums: &[],
    },
    Migration {
        version: 4,
        name: "daily summaries refresh policy",
        timescale: &[include_str!(
            "migrations/0004_daily_summaries_policy_timescaledb.sql"
        )],
        postgres: &[],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 5,
        name: "accounts",
        timescale: &[include_str!("migrations/0005_accounts.sql")],
        postgres: &[include_str!("migrations/0005_accounts.sql")],
        transactional: true,
        // d9cdef1 and before: refresh tokens and API keys only (`users` and
        // `trackers.owner_id` were in migration 1).
        earlier_checksums: &["4710bddb22e5ecc1"],
    },
    Migration {
        version: 6,
        name: "tracker sharing",
        timescale: &[include_str!("migrations/0006_tracker_members.sql")],
        postgres: &[include_str!("migrations/0006_tracker_members.sql")],
        transactional: true,
        earlier_checksums: &[],
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
        earlier_checksums: &[],
    },
    Migration {
        version: 8,
        name: "safe zones and alerts",
        timescale: &[include_str!("migrations/0008_live.sql")],
        postgres: &[include_str!("migrations/0008_live.sql")],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 9,
        name: "commands and dead-letter retries",
        timescale: &[include_str!("migrations/0009_commands.sql")],
        postgres: &[include_str!("migrations/0009_commands.sql")],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 12,
        name: "retention indexes on commands, alerts and webhook deliveries",
        timescale: &[include_str!("migrations/0012_retention_indexes.sql")],
        postgres: &[include_str!("migrations/0012_retention_indexes.sql")],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 13,
        name: "daily summaries kept at ingest on plain PostgreSQL",
        // TimescaleDB keeps its continuous aggregate: hypertables take no triggers with
        // transition tables.
        timescale: &[],
        postgres: &[include_str!("migrations/0013_tracker_days_postgres.sql")],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 14,
        name: "daily summaries' trigger finds its rows by key",
        timescale: &[],
        postgres: &[include_str!(
            "migrations/0014_tracker_days_probes_postgres.sql"
        )],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 15,
        name: "daily summaries' trigger in one pass",
        timescale: &[],
        postgres: &[include_str!(
            "migrations/0015_tracker_days_one_pass_postgres.sql"
        )],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 16,
        name: "daily summaries' trigger in one statement",
        timescale: &[],
        postgres: &[include_str!(
            "migrations/0016_tracker_days_one_statement_postgres.sql"
        )],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 17,
        name: "daily summaries settled by a background pass",
        timescale: &[],
        postgres: &[include_str!(
            "migrations/0017_tracker_days_settled_postgres.sql"
        )],
        transactional: true,
        earlier_checksums: &[],
    },
    Migration {
        version: 18,
        name: "5-minute intervals kept by the settle pass",
        timescale: &[include_str!(
            "migrations/0018_positions_5m_settled_timescaledb.sql"
        )],
        postgres: &[include_str!(
            "migrations/0018_positions_5m_settled_postgres.sql"
        )],
        transactional: true,
        earlier_checksums: &[],
    },
];

/// Every migration of a pettracker database, the device side's and the server's, in order.
pub fn history() -> History {
    History::merge(&[DEVICE_MIGRATIONS, MIGRATIONS])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_every_version_from_one_without_a_gap() {
        let versions: Vec<i32> = history().migrations().iter().map(|m| m.version).collect();
        let expected: Vec<i32> = (1..=history().latest_version()).collect();
        assert_eq!(versions, expected);
    }
}
