//! Finding the database: the configured server, or a private cluster started for this process; and migrating it with the whole schema history.

use deadpool_postgres::Pool;
use gateway::storage::{self, MigrationReport, StorageError};
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

/// An open database, and the private cluster behind it when pettracker started one.
pub struct Database {
    pub pool: Pool,
    pub private: Option<PrivatePostgres>,
    /// The URL the pool uses, for components that open their own connections.
    pub url: SecretString,
}

impl Database {
    /// Connects to `database.url`, or starts the private cluster under `database.data_dir`.
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
        let pool = storage::connect(&url, config.database.pool_size).await?;
        Ok(Database { pool, private, url })
    }

    /// Applies the pending migrations of the device side and the server.
    pub async fn migrate(&self, config: &Config) -> Result<MigrationReport, DatabaseError> {
        let history = crate::schema::history();
        Ok(storage::migrate(&self.pool, &history, config.database.timescaledb).await?)
    }

    /// Closes the pool and stops the private cluster, if any.
    pub async fn close(self) {
        self.pool.close();
        if let Some(private) = self.private.filter(PrivatePostgres::started_here) {
            match tokio::task::spawn_blocking(move || private.stop()).await {
                Ok(Ok(())) => tracing::info!("stopped private PostgreSQL"),
                Ok(Err(err)) => tracing::warn!(%err, "could not stop private PostgreSQL"),
                Err(err) => tracing::warn!(%err, "could not stop private PostgreSQL"),
            }
        }
    }
}
