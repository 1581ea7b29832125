//! Test support: a fresh, migrated database per test, cloned from a template in a shared test cluster.
//!
//! With `PETTRACKER_TEST_DATABASE_URL` (or `DATABASE_URL`) set, that server is used; otherwise a
//! private cluster is started under the temp directory and left running for the next test process
//! (nextest runs each test in its own process, so starting one per process would be slow).
//! Each database is cloned from a template migrated once per schema history, so tests run in
//! parallel. This crate's tests get the device side's schema ([`fresh_database`]); the server's
//! tests pass the whole history ([`fresh_database_with`]). And [`eventually`]: how a test waits
//! for what it cannot be told of directly, instead of sleeping.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use private_postgres::{PrivateDbOptions, PrivatePostgres};

use crate::storage::{self, History, TimescalePreference};

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: SecretString,
    pub pool: deadpool_postgres::Pool,
}

impl TestDb {
    /// The number a `SELECT count(*) ...` returns.
    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.pool.get().await.expect("a test database connection");
        client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

struct Server {
    /// URL of the maintenance database, with `{db}` where a database name goes.
    url_template: String,
}

impl Server {
    fn url(&self, db: &str) -> SecretString {
        SecretString::from(self.url_template.replace("{db}", db))
    }
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Settings that make a throwaway cluster fast: nothing in it needs to survive a power cut.
pub fn fast_settings() -> Vec<(String, String)> {
    [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            let external = std::env::var("PETTRACKER_TEST_DATABASE_URL")
                .or_else(|_| std::env::var("DATABASE_URL"))
                .ok()
                .filter(|u| !u.is_empty());
            let url_template = match external {
                Some(url) => rebuild_url(&url, "{db}"),
                None => {
                    let root = shared_cluster_dir();
                    let mut opts = PrivateDbOptions::new(root);
                    opts.settings = fast_settings();
                    opts.database = "postgres".to_owned();
                    let pg = tokio::task::spawn_blocking(move || PrivatePostgres::start(opts))
                        .await
                        .expect("starting the test cluster panicked")
                        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
                    pg.url_for("{db}").expose_secret().to_owned()
                }
            };
            Server { url_template }
        })
        .await
}

/// Replaces the database name (the path) of a postgres URL.
fn rebuild_url(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host_part = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Where the shared test cluster lives: one per user, outside the source tree.
pub fn shared_cluster_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pettracker-test-pg-{}", nix::unistd::geteuid()))
}

async fn admin_client(server: &Server) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        server.url("postgres").expose_secret(),
        tokio_postgres::NoTls,
    )
    .await
    .expect("cannot connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// The prefix of the templates of one kind of schema (`label`); a new history of that kind gets a
/// new template, and the old one is swept.
fn template_prefix(label: &str) -> String {
    format!("pettracker_template_{label}_")
}

/// A new database with the device side's schema that no other test uses.
pub async fn fresh_database() -> TestDb {
    fresh_database_with("device", &History::device()).await
}

/// A new database migrated with `history` that no other test uses; `label` names the kind of
/// schema (one template of each kind is kept in the shared cluster).
pub async fn fresh_database_with(label: &str, history: &History) -> TestDb {
    let server = server().await;
    let admin = admin_client(server).await;
    let fingerprint = history.fingerprint();
    let template = format!(
        "{}{}",
        template_prefix(label),
        &fingerprint[..12.min(fingerprint.len())]
    );

    // One process builds the template; the others wait on the lock and then find it.
    admin
        .execute("SELECT pg_advisory_lock(4242)", &[])
        .await
        .expect("advisory lock");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .expect("query pg_database")
        .is_some();
    // Once per process: databases of test processes that are gone would otherwise pile up in
    // the shared cluster (gigabytes after a few hundred runs on a developer's machine).
    if !SWEPT.swap(true, Ordering::Relaxed) {
        drop_stale_databases(&admin, &template_prefix(label), &template).await;
    }
    if !exists {
        let building = format!("{template}_building");
        // Separate statements: a multi-statement string runs as one transaction, which these refuse.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
            .await
            .expect("drop half-built template database");
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("create template database");
        {
            let pool = storage::connect(&server.url(&building), 1)
                .await
                .expect("connect to template");
            storage::migrate(&pool, history, TimescalePreference::Auto)
                .await
                .expect("migrating the template database");
            pool.close();
        }
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}"))
            .await
            .expect("rename template");
    }
    admin
        .execute("SELECT pg_advisory_unlock(4242)", &[])
        .await
        .expect("advisory unlock");

    let name = format!(
        "test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    create_database(&admin, &name, Some(&template)).await;
    let url = server.url(&name);
    let pool = storage::connect(&url, 8)
        .await
        .expect("connect to test database");
    TestDb { name, url, pool }
}

/// A new database with no schema at all, for tests of migrating from scratch.
pub async fn empty_database() -> TestDb {
    let server = server().await;
    let admin = admin_client(server).await;
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    create_database(&admin, &name, None).await;
    let url = server.url(&name);
    let pool = storage::connect(&url, 4)
        .await
        .expect("connect to test database");
    TestDb { name, url, pool }
}

/// Creates a test database named after this process. One of the same name can only be left from
/// an earlier process that had the same PID (PIDs are reused), so it is dropped first.
async fn create_database(admin: &tokio_postgres::Client, name: &str, template: Option<&str>) {
    let template = template
        .map(|t| format!(" TEMPLATE {t}"))
        .unwrap_or_default();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}{template}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

/// Set once this process has swept the databases of gone test processes.
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drops test databases of processes that are gone, and the templates of kind `prefix` other
/// than `keep` (those of other kinds may be in use by another test process right now), and
/// those of before there were kinds.
async fn drop_stale_databases(admin: &tokio_postgres::Client, prefix: &str, keep: &str) {
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%' OR datname LIKE 'pettracker\\_template\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let stale = match name.strip_prefix("test_").and_then(|r| r.split('_').next()) {
            Some(pid) => !PathBuf::from(format!("/proc/{pid}")).exists(),
            None => {
                let unlabelled = name
                    .strip_prefix("pettracker_template_")
                    .is_some_and(|rest| !rest.contains('_'));
                (name.starts_with(prefix) && name != keep) || unlabelled
            }
        };
        if stale {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// A private cluster for one test that needs to stop and start the server (outage tests).
/// Dropping it stops the server and deletes its files.
pub struct DedicatedCluster(Option<PrivatePostgres>, PathBuf);

impl std::ops::Deref for DedicatedCluster {
    type Target = PrivatePostgres;
    fn deref(&self) -> &PrivatePostgres {
        self.0.as_ref().expect("cluster present until drop")
    }
}

impl std::ops::DerefMut for DedicatedCluster {
    fn deref_mut(&mut self) -> &mut PrivatePostgres {
        self.0.as_mut().expect("cluster present until drop")
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        if let Some(pg) = self.0.take() {
            let _ = pg.stop();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

pub fn dedicated_cluster(label: &str) -> DedicatedCluster {
    let root = std::env::temp_dir().join(format!(
        "pettracker-{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&root);
    let mut opts = PrivateDbOptions::new(&root);
    opts.settings = fast_settings();
    let pg = PrivatePostgres::start(opts)
        .unwrap_or_else(|e| panic!("cannot start a dedicated PostgreSQL: {e}"));
    DedicatedCluster(Some(pg), root)
}

/// Waits until the server closes `socket` without sending a byte: a read ends (EOF or reset).
/// `Err` if the server answered instead, or kept the socket open for 10 s.
pub async fn closed_by_server(socket: &mut tokio::net::TcpStream) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
        Ok(Ok(n)) => Err(format!("the server answered {:02x?}", &buf[..n])),
        Err(_) => Err("still open after 10 s".into()),
    }
}

/// How long [`eventually`] waits: far longer than anything takes on a loaded machine, so that only
/// a real failure runs out of it.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks `probe` every 20 ms until it gives `Ok`, and returns that; after [`EVENTUALLY`] the test
/// fails naming `what` and what the probe last saw (its `Err`).
pub async fn eventually<T, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not after {EVENTUALLY:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}
