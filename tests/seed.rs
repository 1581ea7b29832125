//! `pettracker seed` fills the database with exactly the history asked for, with valid values, and gives it to an owner.
// The simulator is part of the binary only with the `demo` feature (on by default).
#![cfg(feature = "demo")]

mod common;

use chrono::{DateTime, Utc};
use common::api::Api;
use common::spawn_app;
use pettracker::seed::{self, SeedOptions};

#[tokio::test]
async fn seed_writes_exactly_the_requested_history_with_valid_values_for_distinct_trackers() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("owner@example.com").await;
    let mut opts = SeedOptions::new(3, 0.25, 60);
    opts.owner = Some("owner@example.com".to_owned());
    opts.connections = 2;
    opts.batch_rows = 100;
    opts.end = Some(Utc::now());
    let report = seed::run(&app.app.pool, &opts, |_, _| {}).await.unwrap();
    let per = 6 * 60; // a quarter of a day at one fix a minute
    assert_eq!(opts.fixes_per_tracker(), per);
    assert_eq!(report.rows_written, 3 * per);
    assert_eq!(report.rows_stored, 3 * per);
    assert_eq!(report.trackers_created, 3);

    let client = app.app.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT tracker_id, count(*), min(lat), max(lat), min(lon), max(lon),
                    count(DISTINCT device_time), min(device_time), max(device_time),
                    bool_and(accuracy > 0 AND battery BETWEEN 0 AND 100 AND speed >= 0
                             AND (heading IS NULL OR (heading >= 0 AND heading < 360)))
             FROM positions GROUP BY tracker_id ORDER BY tracker_id",
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, ["seed-0001", "seed-0002", "seed-0003"]);
    for r in &rows {
        let count: i64 = r.get(1);
        assert_eq!(count as u64, per);
        let (lat0, lat1, lon0, lon1): (f64, f64, f64, f64) =
            (r.get(2), r.get(3), r.get(4), r.get(5));
        // Berlin, where the pets live.
        assert!(
            lat0 > 52.3 && lat1 < 52.7 && lon0 > 13.0 && lon1 < 13.7,
            "{lat0} {lat1} {lon0} {lon1}"
        );
        let distinct: i64 = r.get(6);
        assert_eq!(distinct, count);
        let (first, last): (DateTime<Utc>, DateTime<Utc>) = (r.get(7), r.get(8));
        // Evenly spaced: n distinct times from first to last, a minute apart.
        assert_eq!((last - first).num_seconds(), (per as i64 - 1) * 60);
        assert!(last <= Utc::now());
        assert!(r.get::<_, bool>(9));
    }
    let steps: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT device_time - lag(device_time) OVER
                 (PARTITION BY tracker_id ORDER BY device_time) AS step FROM positions) s
             WHERE step IS NOT NULL AND step <> interval '60 seconds'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(steps, 0);
    let owned: i64 = client
        .query_one(
            "SELECT count(*) FROM trackers t JOIN users u ON u.id = t.owner_id
             WHERE u.email = 'owner@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 3);

    // Seeding the same range again reuses the trackers and stores nothing twice.
    let again = seed::run(&app.app.pool, &opts, |_, _| {}).await.unwrap();
    assert_eq!(again.trackers_created, 0);
    assert_eq!(again.rows_written, 3 * per);
    assert_eq!(again.rows_stored, 0);
    app.stop().await;
}
