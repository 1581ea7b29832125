//! The whole schema history on a real PostgreSQL: what the server's migrations build, and an installation of the previous release (d9cdef1, `tests/fixtures/d9cdef1`) upgrading — its database without a checksum error or a lost row, its spool replayed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::api::Api;
use common::{connect, options, spawn_app_on};
use gateway::shutdown;
use gateway::storage::{self, TimescalePreference};
use pettracker::config::StorageConfig;
use pettracker::testing::{TestDb, empty_database, fresh_database};
use reqwest::StatusCode;
use rumqttc::QoS;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/d9cdef1");

fn facts() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/facts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A new database holding what the previous release left: its dump, replayed as SQL.
async fn previous_release_database() -> TestDb {
    let db = empty_database().await;
    let dump = std::fs::read_to_string(format!("{FIXTURES}/database.sql")).unwrap();
    // `\restrict` and `\unrestrict` are psql's; everything else is SQL.
    let sql: String = dump
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(|l| format!("{l}\n"))
        .collect();
    // A connection of its own: the dump empties the session's search_path.
    let (client, connection) =
        tokio_postgres::connect(db.url.expose_secret(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    client.batch_execute(&sql).await.unwrap();
    db
}

/// Rows per table, for every table of the public schema.
async fn row_counts(db: &TestDb) -> Vec<(String, i64)> {
    let client = db.pool.get().await.unwrap();
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut counts = Vec::new();
    for row in tables {
        let table: String = row.get(0);
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        counts.push((table, n));
    }
    counts
}

/// Everything that makes up a schema, as comparable text: columns (whatever their order),
/// constraints, indexes, views, functions and triggers.
async fn schema(db: &TestDb) -> BTreeSet<String> {
    let client = db.pool.get().await.unwrap();
    let mut items = BTreeSet::new();
    for sql in [
        "SELECT format('column %s.%s %s null=%s default=%s identity=%s', table_name, column_name,
                       data_type, is_nullable, column_default, is_identity)
         FROM information_schema.columns WHERE table_schema = 'public'",
        "SELECT format('constraint %s on %s: %s', conname, conrelid::regclass,
                       pg_get_constraintdef(oid))
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
        "SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'",
        "SELECT format('view %s: %s', viewname, definition) FROM pg_views WHERE schemaname = 'public'",
        "SELECT format('function %s(%s): %s', proname, pg_get_function_arguments(oid), prosrc)
         FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
        "SELECT format('trigger %s', pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal",
    ] {
        for row in client.query(sql, &[]).await.unwrap() {
            items.insert(row.get::<_, String>(0));
        }
    }
    items
}

#[tokio::test]
async fn a_database_of_the_previous_release_upgrades_without_a_checksum_error_or_a_lost_row() {
    let db = previous_release_database().await;
    let before = row_counts(&db).await;
    assert!(
        before.iter().any(|(t, n)| t == "positions" && *n == 20),
        "{before:?}"
    );

    let report = storage::migrate(
        &db.pool,
        &pettracker::schema::history(),
        TimescalePreference::Auto,
    )
    .await
    .unwrap();
    // It was at version 10: only what came after runs.
    assert_eq!(
        report.current,
        pettracker::schema::history().latest_version()
    );
    assert!(report.applied.iter().all(|v| *v > 10), "{report:?}");
    // Every row is still there; schema_migrations has one more per version applied,
    // tracker_days (migration 13) one per tracker and day of the fixes already stored, and its
    // mark (migration 17) one.
    let mut expected = before.clone();
    for (table, n) in &mut expected {
        if table == "schema_migrations" {
            *n += report.applied.len() as i64;
        }
    }
    let days: i64 = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM (SELECT DISTINCT tracker_id, date_trunc('day', device_time, 'UTC')
             FROM positions) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(days > 0);
    expected.push(("tracker_days".to_owned(), days));
    // The daily summaries' settle mark (migration 17), and no late fix noted yet.
    expected.push(("tracker_days_mark".to_owned(), 1));
    expected.push(("tracker_days_pending".to_owned(), 0));
    // The 5-minute intervals' mark (migration 18).
    expected.push(("positions_5m_mark".to_owned(), 1));
    expected.sort();
    assert_eq!(row_counts(&db).await, expected);
    // Filled with exactly what the view computes from those fixes.
    let differing: i64 = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM (
                 SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix FROM tracker_days
                 EXCEPT SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix
                 FROM daily_summaries) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differing, 0);

    // And it is the schema a new installation gets, but for the order of columns.
    let fresh = fresh_database().await;
    let (upgraded, new) = (schema(&db).await, schema(&fresh).await);
    let only_upgraded: Vec<_> = upgraded.difference(&new).collect();
    let only_new: Vec<_> = new.difference(&upgraded).collect();
    assert!(
        only_upgraded.is_empty() && only_new.is_empty(),
        "only in the upgraded database: {only_upgraded:#?}\nonly in a new one: {only_new:#?}"
    );
}

#[tokio::test]
async fn the_server_runs_on_an_upgraded_database_with_its_accounts_trackers_history_and_commands() {
    let facts = facts();
    let db = previous_release_database().await;
    // The fixture's rows must not age out of their windows, however long after it runs.
    let app = spawn_app_on(db, |c| {
        c.storage = StorageConfig {
            retention_days: 100 * 365,
            positions_5m_retention_days: 0,
            dead_letter_retention_days: 0,
            command_retention_days: 0,
            alert_retention_days: 0,
            webhook_delivery_retention_days: 0,
            ..StorageConfig::default()
        }
    })
    .await;
    let api = Api::new(&app);

    // The accounts of the previous release log in, with their refresh tokens and API key.
    let (ada, _) = api.login("ada@example.com").await;
    let (bob, _) = api.login("bob@example.com").await;
    let key = facts["read_api_key"].as_str().unwrap();
    for token in [ada.as_str(), bob.as_str(), key] {
        let (status, body) = api.get("/trackers", token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids: Vec<_> = body["trackers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["rex"], "{body}");
    }
    // Its commands kept their lifecycle: the succeeded one with its history.
    let succeeded = facts["commands"]["succeeded"].as_str().unwrap();
    let (status, command) = api.get(&format!("/commands/{succeeded}"), &ada).await;
    assert_eq!(status, StatusCode::OK, "{command}");
    assert_eq!(command["status"], "succeeded");
    let steps: Vec<_> = command["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["queued", "sent", "delivered", "succeeded"]);
    let cancelled = facts["commands"]["cancelled"].as_str().unwrap();
    let (status, body) = api
        .post(
            &format!("/commands/{cancelled}/retry"),
            Some(&ada),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["attempt"].as_i64()),
        (Some("queued"), Some(2))
    );

    // The unclaimed tracker is claimed with the claim code printed for it back then.
    let (status, body) = api
        .post(
            "/trackers/claim",
            Some(&bob),
            json!({"tracker_id": "fido", "claim_code": facts["fido_claim_code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The collar connects with the secret it was provisioned with, and its fixes are stored.
    let secret = facts["rex_secret"].as_str().unwrap();
    let (client, mut events) = connect(options(app.mqtt_port(), "rex", "rex", secret))
        .await
        .unwrap();
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
        .publish(
            "trackers/rex/telemetry",
            QoS::AtLeastOnce,
            false,
            common::fix_json(900, 52.52),
        )
        .await
        .unwrap();
    app.wait_for_count(
        "SELECT count(*) FROM positions WHERE tracker_id = 'rex'",
        21,
    )
    .await;
    // History shows it (the fixture's own fixes predate the claim, so they are not the
    // owner's to see).
    let (status, page) = api.get("/trackers/rex/positions", &ada).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["positions"].as_array().unwrap().len(), 1, "{page}");
    // A revoked tracker stays revoked.
    assert!(
        connect(options(app.mqtt_port(), "old-collar", "old-collar", secret))
            .await
            .is_err()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_spool_left_by_the_previous_release_is_replayed_into_the_upgraded_database() {
    let facts = facts();
    let db = previous_release_database().await;
    storage::migrate(
        &db.pool,
        &pettracker::schema::history(),
        TimescalePreference::Auto,
    )
    .await
    .unwrap();
    // A copy: replaying removes the files.
    let spool = std::env::temp_dir().join(format!("pettracker-old-spool-{}", db.name));
    let _ = std::fs::remove_dir_all(&spool);
    std::fs::create_dir_all(&spool).unwrap();
    for entry in std::fs::read_dir(format!("{FIXTURES}/spool")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, spool.join(path.file_name().unwrap())).unwrap();
    }

    let (trigger, stop) = shutdown::channel();
    let config = gateway::ingest::IngestConfig {
        spool_dir: spool.clone(),
        commands: Some(std::sync::Arc::new(pettracker::commands::reports::Reports)),
        ..gateway::ingest::IngestConfig::default()
    };
    let mut pipeline = gateway::ingest::start(db.pool.clone(), config, stop).unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(20), async {
        let mut highest = 0;
        while highest < 103 {
            let ack = pipeline.acks.recv().await.expect("acks until replayed");
            assert_eq!(ack.tracker, "rex");
            highest = highest.max(ack.seq);
        }
        highest
    })
    .await
    .expect("the old spool replayed within 20 s");
    assert_eq!(acked, 103);
    trigger.trigger();
    pipeline.task.await.unwrap();

    assert_eq!(
        db.count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'")
            .await,
        23
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM tracker_status WHERE firmware = '1.4.3' AND signal_dbm = -80"
        )
        .await,
        1
    );
    // The result the collar sent for the unanswered command moved it on, as "done" does.
    let sent = facts["commands"]["sent"].as_str().unwrap();
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM commands WHERE id = '{sent}' AND status = 'succeeded'"
        ))
        .await,
        1
    );
    assert_eq!(
        db.count(
            &format!(
                "SELECT count(*) FROM command_events WHERE command_id = '{sent}' AND status = 'succeeded'"
            )
        )
        .await,
        1
    );
    // The one naming no command, and the spooled dead letter, are dead letters with reasons.
    assert_eq!(
        db.count(
            "SELECT count(*) FROM dead_letters
             WHERE reason = 'no command with id cmd-unknown was sent to this tracker'"
        )
        .await,
        1
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM dead_letters
             WHERE reason = 'spooled dead letter' AND payload = '\\x7b226c6174223aff7d'::bytea"
        )
        .await,
        1
    );
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool emptied"
    );
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn daily_summaries_count_points_and_measure_the_distance_in_device_time_order() {
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    // Inserted out of order: the distance must follow device time, not arrival.
    client
        .batch_execute(
            "INSERT INTO positions (tracker_id, device_time, lat, lon) VALUES
               ('rex', '2026-11-20 10:00Z', 52.51, 13.4),
               ('rex', '2026-11-20 08:00Z', 52.50, 13.4),
               ('rex', '2026-11-20 12:00Z', 52.50, 13.4),
               ('rex', '2026-11-21 09:00Z', 52.60, 13.4)",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT points, first_lat, last_lat, distance_m FROM daily_summaries
             WHERE tracker_id = 'rex' ORDER BY day",
            &[],
        )
        .await
        .unwrap();
    let days: Vec<(i64, f64, f64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(days.len(), 2, "{days:?}");
    assert_eq!((days[0].0, days[0].1, days[0].2), (3, 52.50, 52.50));
    // There and back: twice 0.01 degree of latitude, 1,111.95 m each way.
    assert!((days[0].3 - 2223.9).abs() < 1.0, "{days:?}");
    assert_eq!((days[1].0, days[1].3), (1, 0.0));
}
