//! The TimescaleDB path: the whole schema history's migrations, hypertable, policies, continuous aggregate and the ingest write path.
//!
//! TimescaleDB is not packaged for the CI machine, so `.ci/timescale` serves PGlite with TimescaleDB
//! over the wire protocol and runs these with `PETTRACKER_TIMESCALE_URL` set:
//! `cargo test -p gateway --test timescale -- --ignored --test-threads=1`.
//! That server holds one database and one connection at a time, hence pool size 1 and no fresh
//! database per test.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use gateway::storage::ingest::{BatchRows, FixRow, write_batch};
use gateway::storage::{self, Backend, TimescalePreference};
use pettracker::config::StorageConfig;
use pettracker::retention::{self, Pass, RetentionSettings};
use secrecy::SecretString;

async fn pool() -> deadpool_postgres::Pool {
    let url = std::env::var("PETTRACKER_TIMESCALE_URL")
        .expect("set PETTRACKER_TIMESCALE_URL to a TimescaleDB server (see .ci/timescale)");
    storage::connect(&SecretString::from(url), 1).await.unwrap()
}

fn fix(tracker: &str, t: chrono::DateTime<Utc>, lat: f64) -> FixRow {
    FixRow {
        tracker_id: tracker.into(),
        device_time: t,
        received_at: Utc::now(),
        lat,
        lon: 13.4,
        altitude: None,
        accuracy: Some(4.0),
        speed: None,
        heading: None,
        satellites: Some(9),
        battery: Some(80),
        seq: None,
    }
}

async fn one(pool: &deadpool_postgres::Pool, sql: &str) -> i64 {
    pool.get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
#[ignore = "needs a TimescaleDB server: run by .ci/timescale"]
async fn migrations_build_the_timescaledb_schema_once_and_the_write_path_and_summaries_work() {
    let pool = pool().await;
    let first = storage::migrate(
        &pool,
        &pettracker::schema::history(),
        TimescalePreference::Required,
    )
    .await
    .unwrap();
    println!("first migration run: {first:?}");
    assert_eq!(first.backend, Backend::TimescaleDb);
    let second = storage::migrate(
        &pool,
        &pettracker::schema::history(),
        TimescalePreference::Required,
    )
    .await
    .unwrap();
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );

    let hypertables = one(
        &pool,
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'positions'",
    )
    .await;
    assert_eq!(hypertables, 1, "positions is a hypertable");
    let segment_by = one(
        &pool,
        "SELECT count(*) FROM timescaledb_information.compression_settings
         WHERE hypertable_name = 'positions' AND attname = 'tracker_id' AND segmentby_column_index = 1",
    )
    .await;
    assert_eq!(segment_by, 1, "compressed segments are per tracker");
    let caggs = one(
        &pool,
        "SELECT count(*) FROM timescaledb_information.continuous_aggregates WHERE view_name = 'daily_summaries'",
    )
    .await;
    assert_eq!(caggs, 1, "daily_summaries is a continuous aggregate");

    let retention = RetentionSettings::from_config(&StorageConfig {
        retention_days: 30,
        ..StorageConfig::default()
    });
    retention::set_timescale_policy(&pool, &retention)
        .await
        .unwrap();
    retention::set_timescale_policy(&pool, &retention)
        .await
        .unwrap();
    let jobs = one(
        &pool,
        "SELECT count(*) FROM timescaledb_information.jobs
         WHERE hypertable_name = 'positions' AND proc_name IN ('policy_retention', 'policy_compression')",
    )
    .await;
    assert_eq!(jobs, 2, "one retention and one compression policy");

    // Two days of fixes, one of them sent twice.
    let day1 = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
    let day2 = day1 + TimeDelta::days(1);
    let rows = BatchRows {
        fixes: vec![
            fix("ts-rex", day1, 52.50),
            fix("ts-rex", day1 + TimeDelta::minutes(1), 52.51),
            fix("ts-rex", day1 + TimeDelta::minutes(1), 52.51),
            fix("ts-rex", day2, 52.60),
        ],
        ..BatchRows::default()
    };
    let outcome = {
        let mut client = pool.get().await.unwrap();
        write_batch(&mut client, &rows, None).await.unwrap()
    };
    assert_eq!((outcome.fixes_stored, outcome.duplicates), (3, 1));
    let again = {
        let mut client = pool.get().await.unwrap();
        write_batch(&mut client, &rows, None).await.unwrap()
    };
    assert_eq!(
        (again.fixes_stored, again.duplicates),
        (0, 4),
        "re-sent batch stored nothing"
    );

    let client = pool.get().await.unwrap();
    // Real-time aggregation: the days show before any refresh has materialized them.
    let live: i64 = client
        .query_one(
            "SELECT sum(points)::int8 FROM daily_summaries WHERE tracker_id = 'ts-rex'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 3, "summaries are live before the refresh policy runs");
    client
        .batch_execute("CALL refresh_continuous_aggregate('daily_summaries', NULL, NULL)")
        .await
        .unwrap();
    let days = client
        .query(
            "SELECT day, points, first_lat, last_lat FROM daily_summaries WHERE tracker_id = 'ts-rex' ORDER BY day",
            &[],
        )
        .await
        .unwrap();
    let days: Vec<(i64, f64, f64)> = days
        .iter()
        .map(|r| (r.get(1), r.get(2), r.get(3)))
        .collect();
    println!("daily summaries: {days:?}");
    assert_eq!(days, vec![(2, 52.50, 52.51), (1, 52.60, 52.60)]);
    let rows = client
        .query(
            "SELECT distance_m, moving_s FROM daily_summaries WHERE tracker_id = 'ts-rex' ORDER BY day",
            &[],
        )
        .await
        .unwrap();
    let distances: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
    let moving: Vec<f64> = rows.iter().map(|r| r.get(1)).collect();
    println!("daily distances (m): {distances:?}, time moving (s): {moving:?}");
    // 1,112 m in the minute between the first two fixes: moving all of it.
    assert_eq!(moving, vec![60.0, 0.0]);
    // 0.01 degree of latitude is 1,111.95 m on the mean-radius sphere; one fix moves nowhere.
    assert!((distances[0] - 1111.95).abs() < 1.0, "{distances:?}");
    assert_eq!(distances[1], 0.0);

    let buckets: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT time_bucket(INTERVAL '5 minutes', device_time) b
             FROM positions WHERE tracker_id = 'ts-rex' GROUP BY b) x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(buckets, 2);
    // The batch's statement keeps the 5-minute intervals here (no settle pass on TimescaleDB),
    // and readers trust every row.
    let intervals: Vec<(f64, DateTime<Utc>)> = client
        .query(
            "SELECT lat, device_time FROM positions_5m WHERE tracker_id = 'ts-rex' ORDER BY bucket",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        intervals,
        vec![(52.51, day1 + TimeDelta::minutes(1)), (52.60, day2)]
    );
    let exact_before: String = client
        .query_one("SELECT pettracker_5m_exact_before('ts-rex')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(exact_before, "infinity");

    // The retention job leaves fixes to the hypertable's policy and deletes the rest itself.
    client
        .batch_execute(
            "INSERT INTO positions_5m (tracker_id, bucket, device_time, received_at, lat, lon)
             VALUES ('ts-old', now() - interval '400 days', now() - interval '400 days', now(), 52.5, 13.4)",
        )
        .await
        .unwrap();
    // The bridge serves one connection at a time.
    drop(client);
    let (_stop, shutdown) = gateway::shutdown::channel();
    let pass = retention::run_once(&pool, &retention, &shutdown)
        .await
        .unwrap();
    println!("retention pass: {pass:?}");
    let Pass::Done(deleted) = pass else {
        panic!("the pass was skipped: {pass:?}")
    };
    assert!(deleted.contains(&("positions_5m", 1)), "{deleted:?}");
    assert!(deleted.iter().all(|(table, _)| *table != "positions"));
    assert_eq!(
        one(
            &pool,
            "SELECT count(*) FROM positions WHERE tracker_id = 'ts-rex'"
        )
        .await,
        3
    );
}
