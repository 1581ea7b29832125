//! Storage against a real PostgreSQL: migrations, their safety rules, retention and the private
//! cluster. The batch write's handling of fixes already stored is tested on both schemas in the
//! server's tests/ingest_write.rs.

use std::time::Duration;

use gateway::storage::{self, Backend, History, StorageError, TimescalePreference, retention};
use gateway::testing::{dedicated_cluster, eventually, fresh_database};

#[tokio::test]
async fn migrating_a_migrated_database_changes_nothing() {
    let db = fresh_database().await;
    let report = storage::migrate(&db.pool, &History::device(), TimescalePreference::Auto)
        .await
        .unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.current, History::device().latest_version());
}

#[tokio::test]
async fn every_pool_opens_its_connections_with_jit_off_and_ingest_takes_generic_plans() {
    let db = fresh_database().await;
    let show = |pool: deadpool_postgres::Pool| async move {
        let client = pool.get().await.unwrap();
        let row = client
            .query_one(
                "SELECT current_setting('jit'), current_setting('plan_cache_mode')",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, String>(1))
    };
    let api = storage::connect(&db.url, 1).await.unwrap();
    assert_eq!(show(api).await, ("off".to_owned(), "auto".to_owned()));
    let ingest = storage::ingest_pool(&db.url, 1).unwrap();
    assert_eq!(
        show(ingest).await,
        ("off".to_owned(), "force_generic_plan".to_owned())
    );
}

#[tokio::test]
async fn a_fresh_database_gets_every_device_table_keyed_by_tracker_id_and_none_of_the_servers() {
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    for table in [
        "trackers",
        "positions",
        "positions_5m",
        "tracker_status",
        "dead_letters",
    ] {
        let row = client
            .query_one(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = 'tracker_id'",
                &[&table],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "{table} has no tracker_id column");
    }
    // Accounts, summaries, alerts and commands are the server's (its own migrations).
    let server_tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_name IN ('users', 'daily_summaries', 'alerts', 'commands')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(server_tables, 0);
}

#[tokio::test]
async fn two_processes_migrating_an_empty_database_at_once_both_succeed() {
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {}_empty", db.name))
        .await
        .unwrap();
    let url = secrecy::SecretString::from(
        secrecy::ExposeSecret::expose_secret(&db.url)
            .replace(&db.name, &format!("{}_empty", db.name)),
    );
    let a = storage::connect(&url, 2).await.unwrap();
    let b = storage::connect(&url, 2).await.unwrap();
    let history = History::device();
    let (ra, rb) = tokio::join!(
        storage::migrate(&a, &history, TimescalePreference::Auto),
        storage::migrate(&b, &history, TimescalePreference::Auto)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // Exactly one of them applied the migrations; the other found them done.
    let mut applied = [ra.applied.len(), rb.applied.len()];
    applied.sort();
    assert_eq!(applied, [0, storage::migrate::MIGRATIONS.len()]);
    a.close();
    b.close();
    client
        .batch_execute(&format!("DROP DATABASE {}_empty WITH (FORCE)", db.name))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, backend, checksum) VALUES (999, 'future', 'postgres', 'x')",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let err = storage::migrate(&db.pool, &History::device(), TimescalePreference::Auto)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SchemaTooNew { database: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn requiring_timescaledb_on_plain_postgres_fails_clearly() {
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {}_ts", db.name))
        .await
        .unwrap();
    let url = secrecy::SecretString::from(
        secrecy::ExposeSecret::expose_secret(&db.url).replace(&db.name, &format!("{}_ts", db.name)),
    );
    let pool = storage::connect(&url, 1).await.unwrap();
    let err = storage::migrate(&pool, &History::device(), TimescalePreference::Required)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::TimescaleMissing), "{err}");
    pool.close();
    client
        .batch_execute(&format!("DROP DATABASE {}_ts WITH (FORCE)", db.name))
        .await
        .unwrap();
}

#[tokio::test]
async fn retention_deletes_only_fixes_and_intervals_older_than_the_window() {
    let db = fresh_database().await;
    assert_eq!(storage::backend(&db.pool).await.unwrap(), Backend::Postgres);
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO positions (tracker_id, device_time, lat, lon)
             SELECT 'tr-1', now() - make_interval(days => d), 52.5, 13.4 FROM generate_series(0, 39) d;
             INSERT INTO positions_5m (tracker_id, bucket, device_time, received_at, lat, lon)
             SELECT tracker_id, date_bin('5 minutes', device_time, TIMESTAMPTZ 'epoch'),
                    device_time, now(), lat, lon
             FROM positions",
        )
        .await
        .unwrap();
    let windows = retention::DeviceWindows {
        fixes: 30,
        positions_5m: 30,
        dead_letters: 30,
    };
    let (_trigger, shutdown) = gateway::shutdown::channel();
    let mut deleted = 0;
    for rule in retention::device_rules(Backend::Postgres, windows) {
        let n = retention::delete_expired(&client, &rule, Duration::ZERO, &shutdown)
            .await
            .unwrap();
        if rule.table == "positions" {
            deleted = n;
        }
    }
    // Days 31..=39 are past the window; day 30 is a few milliseconds older than the cut, so 9 or 10.
    assert!((9..=10).contains(&deleted), "deleted {deleted}");
    let left: i64 = client
        .query_one("SELECT count(*) FROM positions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left as u64 + deleted, 40);
    // Each fix is the last of its interval, and the intervals go with the fixes (the day-30
    // fix's interval starts up to 5 minutes before it, so it may be past the cut while it is not).
    let intervals: i64 = client
        .query_one("SELECT count(*) FROM positions_5m", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        (left - 1..=left).contains(&intervals),
        "{intervals} intervals left for {left} fixes"
    );
}

#[tokio::test]
async fn the_private_cluster_stops_and_restarts_on_the_same_port_with_its_data() {
    let mut pg = tokio::task::spawn_blocking(|| dedicated_cluster("restart"))
        .await
        .unwrap();
    let pool = storage::connect(&pg.url(), 1).await.unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    pool.close();
    let port = pg.port();
    pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    let down = storage::connect(&pg.url(), 1).await.unwrap_err();
    assert!(down.is_retriable(), "{down}");
    pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    assert_eq!(pg.port(), port);
    let pool = storage::connect(&pg.url(), 1).await.unwrap();
    let x: i32 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT x FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 7);
    pool.close();
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = secrecy::SecretString::from(format!("postgres://u:secretpw@127.0.0.1:{port}/db"));
    let err = storage::connect(&url, 1).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}/db")), "{err}");
    assert!(!err.contains("secretpw"), "{err}");
}

/// The pid of the session that has LISTENed on `channel` in `db`, once it is idle (listening),
/// other than `not`.
async fn listening_session(db: &gateway::testing::TestDb, channel: &str, not: Option<i32>) -> i32 {
    let listen = format!("LISTEN {channel}");
    eventually("a new session listening", || async {
        db.pool
            .get()
            .await
            .unwrap()
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND state = 'idle' AND query = $1
                   AND pid IS DISTINCT FROM $2",
                &[&listen, &not],
            )
            .await
            .unwrap()
            .map(|row| row.get(0))
            .ok_or_else(|| format!("no session but {not:?} ran `{listen}`"))
    })
    .await
}

#[tokio::test]
async fn a_listener_whose_connection_is_killed_listens_again_and_hears_what_comes_after() {
    use gateway::storage::notify;
    const CHANNEL: &str = "pettracker_test_channel";
    let db = fresh_database().await;
    let (_stop, shutdown) = gateway::shutdown::channel();
    let mut heard = notify::listen(db.url.clone(), CHANNEL, shutdown);
    let client = db.pool.get().await.unwrap();
    let mut pid = None;
    // Several times in a row: the listener comes back after each loss, not only the first.
    for round in 0..3 {
        let now = listening_session(&db, CHANNEL, pid).await;
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &format!("round {round}")],
            )
            .await
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv()).await;
        assert_eq!(got, Ok(Some(format!("round {round}"))));
        client
            .execute("SELECT pg_terminate_backend($1)", &[&now])
            .await
            .unwrap();
        pid = Some(now);
    }
}
