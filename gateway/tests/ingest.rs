//! The ingest pipeline against a real PostgreSQL, driven through the same hooks the broker calls.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use gateway::broker::{DeviceHooks, DevicePublish};
use gateway::ingest::{self, IngestConfig, IngestHandle};
use gateway::protocol::TrackerId;
use gateway::shutdown::{self, ShutdownTrigger};
use gateway::storage::trackers;
use gateway::testing::{TestDb, dedicated_cluster, eventually, fresh_database};

struct Pipeline {
    handle: IngestHandle,
    trigger: ShutdownTrigger,
    spool_dir: std::path::PathBuf,
}

fn config(spool: &str) -> IngestConfig {
    IngestConfig {
        batch_size: 100,
        batch_timeout: Duration::from_millis(10),
        spool_dir: std::env::temp_dir()
            .join(format!("pettracker-spool-{spool}-{}", std::process::id())),
        ..IngestConfig::default()
    }
}

fn start(pool: &deadpool_postgres::Pool, config: IngestConfig) -> Pipeline {
    let _ = std::fs::remove_dir_all(&config.spool_dir);
    let (trigger, shutdown) = shutdown::channel();
    let spool_dir = config.spool_dir.clone();
    let handle = ingest::start(pool.clone(), config, shutdown).unwrap();
    Pipeline {
        handle,
        trigger,
        spool_dir,
    }
}

impl Pipeline {
    async fn publish(
        &self,
        tracker: &str,
        kind: &str,
        payload: impl Into<Bytes>,
        qos: u8,
    ) -> Result<(), gateway::broker::Refused> {
        self.handle
            .hooks
            .accept_publish(DevicePublish {
                tracker: TrackerId::parse(tracker).unwrap(),
                topic: format!("trackers/{tracker}/{kind}"),
                payload: payload.into(),
                qos,
                received_at: Utc::now(),
                last_will: false,
            })
            .await
    }

    async fn stop(self) -> Vec<ingest::AckDue> {
        self.trigger.trigger();
        self.handle.task.await.unwrap();
        let mut acks = self.handle.acks;
        let mut out = Vec::new();
        while let Ok(ack) = acks.try_recv() {
            out.push(ack);
        }
        let _ = std::fs::remove_dir_all(&self.spool_dir);
        out
    }
}

fn fix(ts: DateTime<Utc>, lat: f64, seq: u64) -> String {
    format!(
        r#"{{"ts":"{}","lat":{lat},"lon":13.405,"acc":5.0,"bat":80,"seq":{seq}}}"#,
        ts.to_rfc3339()
    )
}

async fn provisioned(db: &TestDb, id: &str) {
    trackers::provision(&db.pool, &TrackerId::parse(id).unwrap(), Some("Rex"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_qos1_fix_is_committed_before_its_publish_is_accepted() {
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    let p = start(&db.pool, config("qos1"));
    let now = Utc::now();
    p.publish("rex", "telemetry", fix(now, 52.52, 7), 1)
        .await
        .unwrap();
    // No waiting: acceptance of a QoS 1 publish means the row is already there.
    assert_eq!(
        db.count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'")
            .await,
        1
    );
    let acks = p.stop().await;
    assert_eq!(
        acks,
        vec![ingest::AckDue {
            tracker: "rex".into(),
            seq: 7
        }]
    );
}

#[tokio::test]
async fn every_valid_protocol_vector_is_stored_and_every_invalid_one_is_dead_lettered() {
    use gateway::protocol::vectors::{Expectation, FixOutcome};
    let db = fresh_database().await;
    provisioned(&db, "vector-collar-1").await;
    let vectors: Vec<_> = gateway::protocol::test_vectors()
        .into_iter()
        .filter(|v| v.topic.ends_with("/telemetry"))
        .collect();
    let mut cfg = config("vectors");
    // The vectors' time rules are stated against their own server clock.
    cfg.clock = ingest::Clock::manual(vectors[0].now);
    let p = start(&db.pool, cfg);
    let mut stored_times = std::collections::BTreeSet::new();
    let mut expected_dead = 0;
    for v in &vectors {
        assert_eq!(v.now, vectors[0].now, "vectors share one clock");
        match &v.expect {
            Expectation::Fixes(outcomes) => {
                for o in outcomes {
                    match o {
                        FixOutcome::Accepted(fix) => {
                            let ts: DateTime<Utc> = fix["ts"].as_str().unwrap().parse().unwrap();
                            stored_times.insert(ts);
                        }
                        FixOutcome::Rejected(_) => expected_dead += 1,
                    }
                }
            }
            Expectation::DeadLetter(_) => expected_dead += 1,
            other => panic!("unexpected telemetry expectation {other:?}"),
        }
        p.publish("vector-collar-1", "telemetry", v.payload.clone(), 1)
            .await
            .unwrap();
    }
    p.stop().await;
    // Vectors that share a device time are one fix: each (tracker, time) is stored once.
    let client = db.pool.get().await.unwrap();
    let times: std::collections::BTreeSet<DateTime<Utc>> = client
        .query("SELECT device_time FROM positions", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(times, stored_times);
    let dead = db.count("SELECT count(*) FROM dead_letters WHERE tracker_id = 'vector-collar-1' AND reason <> ''",
    )
    .await;
    assert_eq!(dead, expected_dead);
}

#[tokio::test]
async fn the_same_fix_sent_three_times_is_stored_once() {
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    let p = start(&db.pool, config("dup"));
    let t = Utc::now() - TimeDelta::minutes(1);
    for qos in [0, 1, 1] {
        p.publish("rex", "telemetry", fix(t, 52.52, 1), qos)
            .await
            .unwrap();
    }
    p.stop().await;
    assert_eq!(db.count("SELECT count(*) FROM positions").await, 1);
}

#[tokio::test]
async fn fixes_that_reach_a_free_writer_within_the_linger_share_one_transaction() {
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    // Far longer than the four pauses below, however slowly the machine runs them; the
    // writer is free the whole time.
    let p = start(
        &db.pool,
        IngestConfig {
            batch_timeout: Duration::from_secs(10),
            batch_linger: Duration::from_secs(3),
            ..config("linger")
        },
    );
    let t = Utc::now() - TimeDelta::minutes(1);
    for i in 1..=5 {
        let at = t + TimeDelta::seconds(i);
        p.publish("rex", "telemetry", fix(at, 52.52, i as u64), 0)
            .await
            .unwrap();
        // Each fix reaches the batcher alone: without the linger it would go to the free
        // writer, in a transaction of its own.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    eventually("the five fixes are stored", || async {
        match db.count("SELECT count(*) FROM positions").await {
            5 => Ok(()),
            n => Err(format!("{n} stored")),
        }
    })
    .await;
    // Rows of one transaction carry its id.
    assert_eq!(
        db.count("SELECT count(DISTINCT xmin::text) FROM positions")
            .await,
        1
    );
    p.stop().await;
}

#[tokio::test]
async fn a_batch_timeout_too_long_for_the_clock_leaves_batches_to_the_free_writer() {
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    // A library user's `IngestConfig` is not bounded as the server's config is; an `Instant`
    // this far ahead does not exist, so the batcher must set no timer rather than panic.
    let p = start(
        &db.pool,
        IngestConfig {
            batch_timeout: Duration::MAX,
            batch_linger: Duration::ZERO,
            ..config("no-timer")
        },
    );
    let t = Utc::now() - TimeDelta::minutes(1);
    for i in 1..=3 {
        p.publish(
            "rex",
            "telemetry",
            fix(t + TimeDelta::seconds(i), 52.52, i as u64),
            1,
        )
        .await
        .unwrap();
    }
    eventually("the three fixes are stored", || async {
        match db.count("SELECT count(*) FROM positions").await {
            3 => Ok(()),
            n => Err(format!("{n} stored")),
        }
    })
    .await;
    assert_eq!(p.stop().await.len(), 3, "each QoS 1 fix is acknowledged");
}

#[tokio::test]
async fn a_late_batch_of_old_fixes_is_stored_but_does_not_move_the_last_fix_back() {
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    let p = start(&db.pool, config("order"));
    let now = Utc::now();
    p.publish("rex", "telemetry", fix(now, 52.60, 10), 1)
        .await
        .unwrap();
    let old: Vec<String> = (1..=5)
        .map(|i| fix(now - TimeDelta::minutes(i), 52.50, 10 - i as u64))
        .collect();
    p.publish("rex", "telemetry", format!("[{}]", old.join(",")), 1)
        .await
        .unwrap();
    p.stop().await;
    assert_eq!(db.count("SELECT count(*) FROM positions").await, 6);
    let row = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT last_lat, last_seq, last_fix_time FROM tracker_status WHERE tracker_id = 'rex'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 52.60);
    assert_eq!(row.get::<_, i64>(1), 10);
}

#[tokio::test]
async fn one_bad_fix_in_a_batch_is_dead_lettered_and_the_others_are_stored() {
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    let p = start(&db.pool, config("mixed"));
    let now = Utc::now();
    let batch = format!(
        "[{},{},{}]",
        fix(now - TimeDelta::seconds(2), 52.5, 1),
        fix(now - TimeDelta::seconds(1), 91.0, 2),
        fix(now, 52.6, 3)
    );
    p.publish("rex", "telemetry", batch, 1).await.unwrap();
    p.publish("rex", "telemetry", "{not json", 1).await.unwrap();
    let acks = p.stop().await;
    assert_eq!(db.count("SELECT count(*) FROM positions").await, 2);
    let reasons: Vec<String> = db
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT reason FROM dead_letters ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("lat"), "{reasons:?}");
    assert!(reasons[1].to_lowercase().contains("json"), "{reasons:?}");
    assert_eq!(acks.last().unwrap().seq, 3);
}

#[tokio::test]
async fn status_and_presence_messages_update_the_tracker_status() {
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    let p = start(&db.pool, config("status"));
    p.handle
        .hooks
        .connected(&TrackerId::parse("rex").unwrap())
        .await;
    p.publish(
        "rex",
        "status",
        r#"{"bat":42,"chg":true,"fw":"1.4.2","rssi":-71}"#,
        1,
    )
    .await
    .unwrap();
    let row = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT online, battery, charging, firmware, signal_dbm FROM tracker_status WHERE tracker_id = 'rex'", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i16>(1), 42);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), "1.4.2");
    assert_eq!(row.get::<_, i16>(4), -71);
    p.publish("rex", "online", "offline", 1).await.unwrap();
    p.stop().await;
    let online: bool = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT online FROM tracker_status WHERE tracker_id = 'rex'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!online);
}

/// EMQX and rmqtt announce every client's connect and disconnect on `$SYS` topics; an ingest
/// instance behind them takes a collar's as its presence (Mosquitto has no such events and
/// drops clients' publishes to `$SYS`, so the broker's part is played by the event itself).
#[tokio::test]
async fn a_brokers_client_events_are_the_collars_presence_and_other_clients_are_passed_over() {
    use gateway::external::presence::device_publish;
    let db = fresh_database().await;
    provisioned(&db, "rex").await;
    let p = start(&db.pool, config("broker-presence"));
    // The broker's clock, a second behind ours (a realistic time: the silence sweep would take
    // a presence dated long ago for a collar gone silent).
    let ts = Utc::now().timestamp_millis() - 1_000;
    let event = |kind: &str, username: &str| {
        device_publish(
            &format!("$SYS/brokers/emqx@10.0.0.1/clients/rex/{kind}"),
            format!(r#"{{"clientid":"rex","username":"{username}","ts":{ts}}}"#).as_bytes(),
            1,
            Utc::now(),
        )
        .unwrap()
    };
    // Not the collar: its client id, another username.
    assert!(event("connected", "pettracker.server").is_none());
    let online = || async {
        db.pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT online, online_changed_at FROM tracker_status WHERE tracker_id = 'rex'",
                &[],
            )
            .await
            .unwrap()
    };
    p.handle
        .hooks
        .accept_publish(event("connected", "rex").unwrap())
        .await
        .unwrap();
    let row = online().await;
    assert!(row.get::<_, bool>(0));
    // Dated by the broker's clock.
    assert_eq!(
        row.get::<_, DateTime<Utc>>(1),
        DateTime::from_timestamp_millis(ts).unwrap()
    );
    p.handle
        .hooks
        .accept_publish(event("disconnected", "rex").unwrap())
        .await
        .unwrap();
    assert!(!online().await.get::<_, bool>(0));
    p.stop().await;
}

/// A migrated database on a cluster of the test's own (outage tests stop and start it), with these
/// collars provisioned.
async fn own_database(
    label: &'static str,
    collars: &[&str],
) -> (gateway::testing::DedicatedCluster, deadpool_postgres::Pool) {
    let pg = tokio::task::spawn_blocking(move || dedicated_cluster(label))
        .await
        .unwrap();
    let pool = gateway::storage::connect(&pg.url(), 4).await.unwrap();
    gateway::storage::migrate(
        &pool,
        &gateway::storage::History::device(),
        gateway::storage::TimescalePreference::Auto,
    )
    .await
    .unwrap();
    for id in collars {
        trackers::provision(&pool, &TrackerId::parse(id).unwrap(), None)
            .await
            .unwrap();
    }
    (pg, pool)
}

#[tokio::test]
async fn fixes_sent_while_the_database_is_down_are_spooled_and_stored_exactly_once_when_it_returns()
{
    let (mut pg, pool) = own_database("outage", &["rex"]).await;
    let mut p = start(&pool, config("outage"));
    let base = Utc::now() - TimeDelta::minutes(10);
    let mut seq = 0u64;
    let mut send = async |n: usize, p: &Pipeline| {
        for _ in 0..n {
            seq += 1;
            p.publish(
                "rex",
                "telemetry",
                fix(base + TimeDelta::seconds(seq as i64), 52.5, seq),
                1,
            )
            .await
            .unwrap();
        }
    };
    send(50, &p).await;
    pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    // Accepted while the database is down: they are durable in the spool.
    send(50, &p).await;
    let spool_files = std::fs::read_dir(&config("outage").spool_dir)
        .unwrap()
        .count();
    assert!(spool_files > 0, "nothing was spooled");
    // Spooled is durable but not committed: no collar may be told to drop those fixes yet.
    let mut acked_so_far = Vec::new();
    while let Ok(ack) = p.handle.acks.try_recv() {
        acked_so_far.push(ack.seq);
    }
    assert!(
        acked_so_far.iter().all(|&s| s <= 50),
        "acked spooled fixes: {acked_so_far:?}"
    );
    pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    send(50, &p).await;
    let acks = p.stop().await;
    let stored = positions_count(&pool).await;
    assert_eq!(stored, 150);
    assert_eq!(acks.iter().map(|a| a.seq).max(), Some(150));
    pool.close();
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
}

/// Replaying a long outage's backlog takes far longer than the accept timeout; publishes arriving
/// meanwhile must still be taken (spooled behind the backlog), not refused because the replay
/// holds the spool or a writer. Here the replay is held up by a lock on `positions`.
#[tokio::test]
async fn publishes_are_accepted_while_a_slow_replay_of_the_spool_is_under_way() {
    let collars = ["rex", "fido", "bello"];
    let (mut pg, pool) = own_database("slowreplay", &collars).await;
    let config = IngestConfig {
        accept_timeout: Duration::from_secs(2),
        ..config("slowreplay")
    };
    let base = Utc::now() - TimeDelta::minutes(10);
    let mut seq = 0u64;
    let mut send = async |p: &Pipeline| {
        seq += 1;
        let at = base + TimeDelta::seconds(seq as i64);
        for id in collars {
            p.publish(id, "telemetry", fix(at, 52.5, seq), 1).await?;
        }
        Ok::<(), gateway::broker::Refused>(())
    };

    // A first run spools its fixes while the database is down and stops with them spooled.
    let first = start(&pool, config.clone());
    pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    for _ in 0..5 {
        send(&first).await.unwrap();
    }
    first.trigger.trigger();
    first.handle.task.await.unwrap();
    pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();

    // The next run replays them first, but this connection holds the lock the replay waits for.
    let mut blocker = pool.get().await.unwrap();
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE positions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (trigger, shutdown) = shutdown::channel();
    let second = Pipeline {
        handle: ingest::start(pool.clone(), config.clone(), shutdown).unwrap(),
        trigger,
        spool_dir: config.spool_dir.clone(),
    };
    wait_for_a_backend_waiting_on_a_lock(&pool).await;
    for _ in 0..5 {
        send(&second)
            .await
            .expect("a publish during the replay was refused");
    }
    tx.rollback().await.unwrap();
    drop(blocker);
    let acks = second.stop().await;
    let stored = positions_count(&pool).await;
    assert_eq!(stored, 30);
    for id in collars {
        let max = acks.iter().filter(|a| a.tracker == id).map(|a| a.seq).max();
        assert_eq!(max, Some(10), "{id}");
    }
    pool.close();
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
}

/// Waits until a session of the database waits for a lock (the replay, held up by the test's own
/// lock).
async fn wait_for_a_backend_waiting_on_a_lock(pool: &deadpool_postgres::Pool) {
    eventually("the replay waiting for the test's lock", || async {
        let waiting: i64 = pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            Ok(())
        } else {
            Err("no session waits for a lock".to_owned())
        }
    })
    .await;
}

async fn positions_count(pool: &deadpool_postgres::Pool) -> i64 {
    pool.get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM positions", &[])
        .await
        .unwrap()
        .get(0)
}
