//! Finding the database: the configured server, or a private cluster started for this process; and migrating it with the whole schema history.

use deadpool_postgres::Pool;
use gateway::storage::{self, MigrationReport, StorageError, TimescalePreference};
use private_postgres::{PrivateDbError, PrivateDbOptions, PrivatePostgres};
use secrecy::SecretString;

use crate::config::Config;

/// Errors getting to a usable, migrated database.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Private(#[from] PrivateDbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the private database task failed: {0}")]
    Join(String),
}

impl DatabaseError {
    /// Whether the database may come later (unreachable, starting up), as opposed to a fault
    /// waiting will not mend (a schema too new, a changed migration, a private cluster that
    /// cannot start).
    pub fn is_retriable(&self) -> bool {
        matches!(self, DatabaseError::Storage(err) if err.is_retriable())
    }
}

/// An open database, and the private cluster behind it when pettracker started one.
pub struct Database {
    /// The HTTP API's and the background jobs' connections.
    pub pool: Pool,
    /// Ingest's own connections (`database.ingest_pool_size`): its writers, the spool's replay
    /// and device authentication never wait behind an export or a burst of API requests.
    pub ingest_pool: Pool,
    pub private: Option<PrivatePostgres>,
    /// The URL the pool uses, for components that open their own connections.
    pub url: SecretString,
}

impl Database {
    /// Starts the private cluster under `database.data_dir` when `database.url` is unset, and
    /// makes the pools. No connection is opened yet: a configured database may still be away.
    pub async fn open(config: &Config) -> Result<Database, DatabaseError> {
        let (url, private) = match &config.database.url {
            Some(url) => (url.clone(), None),
            None => {
                let opts = PrivateDbOptions::new(&config.database.data_dir);
                let private = tokio::task::spawn_blocking(move || PrivatePostgres::start(opts))
                    .await
                    .map_err(|e| DatabaseError::Join(e.to_string()))??;
                tracing::info!(
                    data_dir = %config.database.data_dir.display(),
                    port = private.port(),
                    "started private PostgreSQL"
                );
                (private.url(), Some(private))
            }
        };
        let pool = storage::pool(&url, config.database.api_pool_size)?;
        let ingest_pool = storage::ingest_pool(&url, config.database.ingest_pool_size)?;
        Ok(Database {
            pool,
            ingest_pool,
            private,
            url,
        })
    }

    /// Applies the pending migrations of the device side and the server.
    pub async fn migrate(&self, config: &Config) -> Result<MigrationReport, DatabaseError> {
        self.migrator(config).migrate().await
    }

    /// What migrates this database, to keep trying while it is away.
    pub fn migrator(&self, config: &Config) -> Migrator {
        Migrator {
            pool: self.pool.clone(),
            url: self.url.clone(),
            timescaledb: config.database.timescaledb,
        }
    }

    /// Closes the pools and stops the private cluster, if any.
    pub async fn close(self) {
        self.pool.close();
        self.ingest_pool.close();
        if let Some(private) = self.private.filter(PrivatePostgres::started_here) {
            match tokio::task::spawn_blocking(move || private.stop()).await {
                Ok(Ok(())) => tracing::info!("stopped private PostgreSQL"),
                Ok(Err(err)) => tracing::warn!(%err, "could not stop private PostgreSQL"),
                Err(err) => tracing::warn!(%err, "could not stop private PostgreSQL"),
            }
        }
    }
}

/// Migrates one database; cheap to keep in a task that waits for the database to come.
pub struct Migrator {
    pool: Pool,
    url: SecretString,
    timescaledb: TimescalePreference,
}

impl Migrator {
    /// Applies the pending migrations of the device side and the server. An unreachable server
    /// is a retriable [`StorageError::Unreachable`] naming where it was looked for.
    pub async fn migrate(&self) -> Result<MigrationReport, DatabaseError> {
        let (_, target) = storage::describe_url(&self.url)?;
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StorageError::Unreachable {
                target,
                reason: storage::pool_error_reason(&e),
            })?;
        drop(client);
        let history = crate::schema::history();
        Ok(storage::migrate(&self.pool, &history, self.timescaledb).await?)
    }
}
