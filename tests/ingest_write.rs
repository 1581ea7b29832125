//! The batch write on a real PostgreSQL, on both schemas it meets: the server's, where a batch's
//! fixes go in by binary COPY and a batch that meets a stored fix is written again with `ON
//! CONFLICT`, and the device side's own, where the batch keeps the 5-minute intervals itself and
//! always inserts with `ON CONFLICT`. Either way a re-sent fix is stored once.

use chrono::{DateTime, TimeDelta, Utc};
use gateway::protocol::TrackerId;
use gateway::storage::ingest::{BatchRows, FixRow, WriteOutcome, write_batch};
use gateway::storage::trackers;
use gateway::testing::{TestDb, eventually};

/// The two schemas, and whether a batch meeting a stored fix is written twice on it.
#[derive(Clone, Copy, Debug)]
enum Schema {
    /// pettracker's (the settle pass keeps the intervals): fixes by COPY.
    Server,
    /// The gateway's alone: fixes by `INSERT ... ON CONFLICT DO NOTHING`.
    Device,
}

impl Schema {
    async fn database(self) -> TestDb {
        let db = match self {
            Schema::Server => pettracker::testing::fresh_database().await,
            Schema::Device => gateway::testing::fresh_database().await,
        };
        trackers::provision(&db.pool, &TrackerId::parse("rex").unwrap(), None)
            .await
            .unwrap();
        db
    }

    /// Whether a batch that meets a stored fix is rolled back and written again.
    fn rewrites(self) -> bool {
        matches!(self, Schema::Server)
    }
}

fn fix_row(tracker: &str, device_time: DateTime<Utc>, lat: f64, seq: i64) -> FixRow {
    FixRow {
        tracker_id: tracker.to_owned(),
        device_time,
        received_at: Utc::now(),
        lat,
        lon: 13.4,
        altitude: Some(34.0),
        accuracy: Some(5.0),
        speed: Some(1.25),
        heading: None,
        satellites: Some(9),
        battery: Some(80),
        seq: Some(seq),
    }
}

fn batch(fixes: Vec<FixRow>) -> BatchRows {
    BatchRows {
        fixes,
        ..BatchRows::default()
    }
}

/// The latitudes of `tracker`'s stored fixes, oldest first.
async fn stored_lats(client: &tokio_postgres::Client, tracker: &str) -> Vec<f64> {
    client
        .query(
            "SELECT lat FROM positions WHERE tracker_id = $1 ORDER BY device_time",
            &[&tracker],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// rex's status row: last fix time, latitude and seq.
async fn status(
    client: &tokio_postgres::Client,
) -> (Option<DateTime<Utc>>, Option<f64>, Option<i64>) {
    let row = client
        .query_one(
            "SELECT last_fix_time, last_lat, last_seq FROM tracker_status WHERE tracker_id = 'rex'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn write(db: &TestDb, rows: BatchRows) -> WriteOutcome {
    let mut client = db.pool.get().await.unwrap();
    write_batch(&mut client, &rows, None).await.unwrap()
}

#[tokio::test]
async fn a_batch_of_new_fixes_is_stored_whole_by_copy_with_every_column_and_the_newest_in_the_status()
 {
    let db = Schema::Server.database().await;
    let t = Utc::now() - TimeDelta::minutes(10);
    // Out of device-time order within the batch: the status takes the newest, not the last.
    let rows = batch(vec![
        fix_row("rex", t + TimeDelta::seconds(20), 52.52, 3),
        fix_row("rex", t + TimeDelta::seconds(30), 52.53, 4),
        fix_row("rex", t, 52.50, 1),
    ]);
    let outcome = write(&db, rows.clone()).await;

    assert_eq!((outcome.fixes_stored, outcome.duplicates), (3, 0));
    assert!(!outcome.rewritten, "nothing was stored before: one COPY");
    let client = db.pool.get().await.unwrap();
    let stored: Vec<FixRow> = client
        .query(
            "SELECT tracker_id, device_time, received_at, lat, lon, altitude, accuracy, speed,
                    heading, satellites, battery, seq
             FROM positions ORDER BY device_time",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| FixRow {
            tracker_id: r.get(0),
            device_time: r.get(1),
            received_at: r.get(2),
            lat: r.get(3),
            lon: r.get(4),
            altitude: r.get(5),
            accuracy: r.get(6),
            speed: r.get(7),
            heading: r.get(8),
            satellites: r.get(9),
            battery: r.get(10),
            seq: r.get(11),
        })
        .collect();
    let mut want = rows.fixes;
    want.sort_by_key(|f| f.device_time);
    // PostgreSQL keeps microseconds.
    for f in &mut want {
        f.received_at = DateTime::from_timestamp_micros(f.received_at.timestamp_micros()).unwrap();
        f.device_time = DateTime::from_timestamp_micros(f.device_time.timestamp_micros()).unwrap();
    }
    assert_eq!(stored, want);
    assert_eq!(
        status(&client).await,
        (Some(want[2].device_time), Some(52.53), Some(4))
    );

    // An older fix later does not move the status back.
    let late = write(
        &db,
        batch(vec![fix_row("rex", t - TimeDelta::minutes(1), 51.0, 0)]),
    )
    .await;
    assert_eq!((late.fixes_stored, late.rewritten), (1, false));
    assert_eq!(status(&client).await.2, Some(4));
}

async fn a_fix_sent_twice_in_one_batch_and_one_already_stored_are_each_kept_once(schema: Schema) {
    let db = schema.database().await;
    let t = Utc::now() - TimeDelta::minutes(5);
    let later = t + TimeDelta::seconds(30);
    write(&db, batch(vec![fix_row("rex", t, 52.50, 1)])).await;

    // The stored fix again, and a new one twice: the copies differ, so which one is kept shows.
    let again = batch(vec![
        fix_row("rex", t, 52.90, 1),
        fix_row("rex", later, 52.51, 2),
        fix_row("rex", later, 52.99, 2),
    ]);
    let outcome = write(&db, again).await;

    assert_eq!((outcome.fixes_stored, outcome.duplicates), (1, 2));
    assert_eq!(outcome.rewritten, schema.rewrites(), "{schema:?}");
    let client = db.pool.get().await.unwrap();
    assert_eq!(
        stored_lats(&client, "rex").await,
        [52.50, 52.51],
        "the first copy of each fix is the one kept"
    );
    assert_eq!(status(&client).await.1, Some(52.51));
}

#[tokio::test]
async fn on_the_servers_schema_a_fix_sent_twice_in_one_batch_and_one_already_stored_are_each_kept_once()
 {
    a_fix_sent_twice_in_one_batch_and_one_already_stored_are_each_kept_once(Schema::Server).await;
}

#[tokio::test]
async fn on_the_device_schema_a_fix_sent_twice_in_one_batch_and_one_already_stored_are_each_kept_once()
 {
    a_fix_sent_twice_in_one_batch_and_one_already_stored_are_each_kept_once(Schema::Device).await;
}

async fn a_fix_another_writer_commits_while_a_batch_waits_on_its_key_is_not_doubled_and_the_batch_still_commits(
    schema: Schema,
) {
    let db = schema.database().await;
    let t = Utc::now() - TimeDelta::minutes(5);
    let later = t + TimeDelta::seconds(30);

    // A writer that does not take the tracker's status row (raw SQL) holds the first fix,
    // uncommitted: the batch's insert cannot see it, and waits on its key until it commits.
    let mut other = db.pool.get().await.unwrap();
    let tx = other.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO positions (tracker_id, device_time, lat, lon) VALUES ('rex', $1, 51.0, 13.4)",
        &[&t],
    )
    .await
    .unwrap();
    let pool = db.pool.clone();
    let writing = tokio::spawn(async move {
        let mut client = pool.get().await.unwrap();
        let rows = batch(vec![
            fix_row("rex", t, 52.50, 1),
            fix_row("rex", later, 52.51, 2),
        ]);
        write_batch(&mut client, &rows, None).await
    });
    eventually(
        "the batch's insert to wait on the other writer's key",
        || async {
            // This database's sessions only: the test cluster is shared with other tests.
            match db
                .count(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .await
            {
                0 => Err("no session waits on a lock".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;
    tx.commit().await.unwrap();

    let outcome = writing.await.unwrap().expect("the batch commits");
    assert_eq!((outcome.fixes_stored, outcome.duplicates), (1, 1));
    assert_eq!(outcome.rewritten, schema.rewrites(), "{schema:?}");
    let client = db.pool.get().await.unwrap();
    assert_eq!(
        stored_lats(&client, "rex").await,
        [51.0, 52.51],
        "the other writer's fix stays, the new one is stored once"
    );
    assert_eq!(status(&client).await.2, Some(2));
}

#[tokio::test]
async fn on_the_servers_schema_a_fix_another_writer_commits_while_a_batch_waits_on_its_key_is_not_doubled_and_the_batch_still_commits()
 {
    a_fix_another_writer_commits_while_a_batch_waits_on_its_key_is_not_doubled_and_the_batch_still_commits(Schema::Server).await;
}

#[tokio::test]
async fn on_the_device_schema_a_fix_another_writer_commits_while_a_batch_waits_on_its_key_is_not_doubled_and_the_batch_still_commits()
 {
    a_fix_another_writer_commits_while_a_batch_waits_on_its_key_is_not_doubled_and_the_batch_still_commits(Schema::Device).await;
}
