//! Storage of what devices send: connecting to PostgreSQL, the schema's migration runner, and the device side's tables and queries.

pub mod advisory;
pub mod ingest;
pub mod migrate;
pub mod notify;
pub mod retention;
pub mod trackers;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, PoolBuilder, RecyclingMethod, Runtime,
};
use secrecy::{ExposeSecret, SecretString};

pub use migrate::{History, MigrationReport};

/// Which flavour of PostgreSQL the schema was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    TimescaleDb,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::TimescaleDb => "timescaledb",
            Backend::Postgres => "postgres",
        }
    }
}

impl FromStr for Backend {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "timescaledb" => Ok(Backend::TimescaleDb),
            "postgres" => Ok(Backend::Postgres),
            other => Err(StorageError::UnknownBackend(other.to_owned())),
        }
    }
}

/// Whether to use TimescaleDB when the server offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescalePreference {
    /// Use it when `pg_available_extensions` lists it.
    #[default]
    Auto,
    /// Refuse to start without it.
    Required,
    /// Plain PostgreSQL even when TimescaleDB is there.
    Off,
}

/// Whether the database is there and migrated. Parts that need it wait for it, device
/// authentication answers "server unavailable" until then, and `/readyz` reports it: a server
/// started while PostgreSQL is down keeps running and connects when it comes.
#[derive(Debug, Clone)]
pub struct Ready(tokio::sync::watch::Receiver<bool>);

/// The side that says the database is ready (once migrated).
#[derive(Debug)]
pub struct SetReady(tokio::sync::watch::Sender<bool>);

impl Ready {
    /// A database known to be ready from the start.
    pub fn now() -> Ready {
        readiness(true).1
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the database is ready; never, if whoever would say so is gone first.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|ready| *ready).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl SetReady {
    pub fn ready(&self) {
        self.0.send_replace(true);
    }
}

/// A readiness pair, ready or not yet.
pub fn readiness(ready: bool) -> (SetReady, Ready) {
    let (tx, rx) = tokio::sync::watch::channel(ready);
    (SetReady(tx), Ready(rx))
}

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the database URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error(
        "the database schema is version {database}, newer than this pettracker knows ({binary}); \
         upgrade pettracker or point it at another database"
    )]
    SchemaTooNew { database: i32, binary: i32 },
    #[error(
        "migration {version} was changed after it was applied to this database; restore it or use a new database"
    )]
    MigrationChanged { version: i32 },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "storage.timescaledb is \"required\" but the server does not offer the timescaledb extension"
    )]
    TimescaleMissing,
    #[error("schema_migrations names an unknown backend {0:?}")]
    UnknownBackend(String),
    #[error("database error while {context}: {}", pg_reason(.source))]
    Query {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no database connection available: {0}")]
    Pool(String),
}

/// What PostgreSQL said (its SQLSTATE and message: "40P01 deadlock detected"), where the
/// client's own text would only say "db error".
fn pg_reason(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => err.to_string(),
    }
}

impl StorageError {
    /// Adapter for `map_err` that names what was being done.
    pub fn query(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StorageError {
        move |source| StorageError::Query { context, source }
    }

    /// Whether retrying later may succeed (the server is down or restarting), as opposed to a bad statement.
    pub fn is_retriable(&self) -> bool {
        match self {
            StorageError::Unreachable { .. } | StorageError::Pool(_) => true,
            StorageError::Query { source, .. } | StorageError::Migration { source, .. } => {
                is_retriable_pg(source)
            }
            _ => false,
        }
    }
}

/// Connection loss, server shutdown and serialization failures are worth retrying; bad data is not.
pub fn is_retriable_pg(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => {
            let c = code.code();
            // 08: connection exception, 40: transaction rollback, 53: insufficient resources,
            // 57P: operator intervention (admin shutdown, crash shutdown, cannot connect now).
            c.starts_with("08")
                || c.starts_with("40")
                || c.starts_with("53")
                || c.starts_with("57P")
        }
        // No SQLSTATE: an I/O error talking to the server.
        None => true,
    }
}

/// Parses a URL and says where it points without revealing the password.
pub fn describe_url(url: &SecretString) -> Result<(tokio_postgres::Config, String), StorageError> {
    let config = tokio_postgres::Config::from_str(url.expose_secret())
        .map_err(|e| StorageError::InvalidUrl(e.to_string()))?;
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres")
        .to_owned();
    Ok((config, format!("{host}:{port}/{db}")))
}

/// Builds a pool and checks that the server answers, so a bad URL fails at start, not at first use.
pub async fn connect(url: &SecretString, pool_size: usize) -> Result<Pool, StorageError> {
    let (pool, target) = build_pool(url, pool_size)?;
    let client = pool.get().await.map_err(|e| StorageError::Unreachable {
        target: target.clone(),
        reason: pool_error_reason(&e),
    })?;
    drop(client);
    Ok(pool)
}

/// Builds a pool without connecting: its connections are opened when first needed, so a server
/// can start while the database is away.
pub fn pool(url: &SecretString, pool_size: usize) -> Result<Pool, StorageError> {
    build_pool(url, pool_size).map(|(pool, _)| pool)
}

/// [`pool`] for ingest's connections (its writers, the spool's replay, device authentication),
/// whose statements have one shape each and run hundreds of times a second: they always take
/// the cached generic plan. By default PostgreSQL plans again on every execution while a custom
/// plan looks cheaper than the generic one, which it does for the batch statement's small
/// batches (one collar's fix, the common case below saturation): 25 % of PostgreSQL's CPU in the
/// realistic fleet went to planning it (BENCHMARKS.md, issue 17). The generic plan is right for
/// every batch size: each row is found by key (see `WRITE_FIXES` in `storage::ingest`).
pub fn ingest_pool(url: &SecretString, pool_size: usize) -> Result<Pool, StorageError> {
    // A generic plan does not know how many keys an array holds (it assumes ten), and with the
    // default random_page_cost of 4 it then reads a table of a few thousand trackers whole
    // rather than probe its key ten times. Ingest's tables are small and hot, in memory: a
    // random read costs about what a sequential one does (the value usual for SSDs).
    const INGEST_SESSION: &str =
        "SET plan_cache_mode = force_generic_plan; SET random_page_cost = 1.1";
    let (pool, _) = build_pool_with(url, pool_size, |builder| {
        builder.post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute(INGEST_SESSION)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
    })?;
    Ok(pool)
}

fn build_pool(url: &SecretString, pool_size: usize) -> Result<(Pool, String), StorageError> {
    build_pool_with(url, pool_size, |builder| builder)
}

fn build_pool_with(
    url: &SecretString,
    pool_size: usize,
    hooks: impl FnOnce(PoolBuilder) -> PoolBuilder,
) -> Result<(Pool, String), StorageError> {
    let (mut config, target) = describe_url(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("pettracker");
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let builder = Pool::builder(manager)
        .max_size(pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)));
    // JIT compiles a plan with LLVM once its estimated cost passes `jit_above_cost`, on every
    // execution. pettracker's statements find their rows by key and run in milliseconds, where
    // compiling never pays, and their estimates mislead the test: the settle pass's statement
    // (src/days.rs), estimated at 40 million because PostgreSQL guesses 1,000 rows from each
    // per-tracker function call, was compiled with inlining and optimisation on every pass,
    // a second of a core each time in the realistic fleet (BENCHMARKS.md, issue 17).
    let builder = builder.post_create(Hook::async_fn(|client, _| {
        Box::pin(async move {
            client
                .batch_execute("SET jit = off")
                .await
                .map_err(HookError::Backend)
        })
    }));
    let pool = hooks(builder)
        .build()
        .map_err(|e| StorageError::Pool(e.to_string()))?;
    Ok((pool, target))
}

/// The innermost cause of a pool error: "connection refused" beats "backend error: error connecting".
pub fn pool_error_reason(err: &deadpool_postgres::PoolError) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

/// Applies the pending migrations of `history` using one pooled connection.
pub async fn migrate(
    pool: &Pool,
    history: &History,
    preference: TimescalePreference,
) -> Result<MigrationReport, StorageError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    migrate::run(&mut client, history, preference).await
}

/// The backend recorded by the migrations.
pub async fn backend(pool: &Pool) -> Result<Backend, StorageError> {
    let client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    let row = client
        .query_one(
            "SELECT backend FROM schema_migrations ORDER BY version LIMIT 1",
            &[],
        )
        .await
        .map_err(StorageError::query("reading the storage backend"))?;
    row.get::<_, String>(0).parse()
}
