//! Break-it: the real `pettracker serve` killed with SIGKILL while collars publish, restarted on the same database and spool; every fix that got a PUBACK is stored, exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::serve::ServeProcess;
use gateway::protocol::TrackerId;
use gateway::storage::trackers::provision;
use pettracker::testing::fresh_database;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use secrecy::ExposeSecret;

const COLLARS: usize = 6;
/// Acknowledged fixes (all collars together) before the kill: a few seconds of load.
const ACKED_BEFORE_KILL: usize = 150;
/// Fixes each collar sends after the restart, beyond its re-sends.
const AFTER_RESTART: u64 = 5;

/// `pettracker serve` on `database_url` and `spool`, with its embedded broker on a free port.
fn serve(database_url: &str, spool: &std::path::Path) -> ServeProcess {
    ServeProcess::start(
        &["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", database_url.as_ref()),
            ("PETTRACKER_INGEST_SPOOL_DIR", spool.as_os_str()),
            ("PETTRACKER_INGEST_BATCH_TIMEOUT_MS", "5".as_ref()),
            ("PETTRACKER_DATABASE_API_POOL_SIZE", "4".as_ref()),
            ("PETTRACKER_DATABASE_INGEST_POOL_SIZE", "4".as_ref()),
        ],
    )
}

/// One collar's fixes: device time and payload of each seq.
fn fix(base: DateTime<Utc>, seq: u64) -> String {
    let ts = base + TimeDelta::seconds(seq as i64);
    format!(
        r#"{{"ts":"{}","lat":52.5,"lon":13.4,"seq":{seq}}}"#,
        ts.to_rfc3339()
    )
}

/// What the collars know: per collar, the seqs sent and those acknowledged with a PUBACK.
#[derive(Default)]
struct Ledger {
    sent: BTreeMap<String, BTreeSet<u64>>,
    acked: BTreeMap<String, BTreeSet<u64>>,
}

impl Ledger {
    fn acked_total(&self) -> usize {
        self.acked.values().map(BTreeSet::len).sum()
    }
}

async fn connect(port: u16, id: &str, secret: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_credentials(id, secret);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("no CONNACK within 10 s");
    (client, events)
}

/// Publishes `seq` at QoS 1 and waits for its PUBACK; false when the connection ended first.
async fn publish(
    client: &AsyncClient,
    events: &mut EventLoop,
    id: &str,
    base: DateTime<Utc>,
    seq: u64,
    ledger: &Mutex<Ledger>,
) -> bool {
    ledger
        .lock()
        .unwrap()
        .sent
        .entry(id.to_owned())
        .or_default()
        .insert(seq);
    let topic = format!("trackers/{id}/telemetry");
    if client
        .publish(topic, QoS::AtLeastOnce, false, fix(base, seq))
        .await
        .is_err()
    {
        return false;
    }
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                ledger
                    .lock()
                    .unwrap()
                    .acked
                    .entry(id.to_owned())
                    .or_default()
                    .insert(seq);
                return true;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn every_fix_acknowledged_before_a_kill_9_is_stored_exactly_once_after_the_restart() {
    let db = fresh_database().await;
    let url = db.url.expose_secret().to_owned();
    let spool = std::env::temp_dir().join(format!("pettracker-crash-spool-{}", db.name));
    let _ = std::fs::remove_dir_all(&spool);
    let mut collars = Vec::new();
    for i in 0..COLLARS {
        let id = format!("crash-{i}");
        let secret = provision(&db.pool, &TrackerId::parse(&id).unwrap(), None)
            .await
            .unwrap()
            .secret;
        collars.push((id, secret));
    }
    let base = Utc::now() - TimeDelta::hours(1);
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    // Collars publish one fix after the other until the server dies under them.
    let server = serve(&url, &spool);
    let mut tasks = Vec::new();
    for (id, secret) in collars.clone() {
        let (port, ledger) = (server.mqtt_port(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let (client, mut events) = connect(port, &id, &secret).await;
            for seq in 1.. {
                if !publish(&client, &mut events, &id, base, seq, &ledger).await {
                    return;
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while ledger.lock().unwrap().acked_total() < ACKED_BEFORE_KILL {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the collars were not acknowledged in time");
    server.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(!server.wait().await.success(), "the server was killed");
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a collar did not notice the server died")
            .unwrap();
    }
    let acked_before: usize = ledger.lock().unwrap().acked_total();

    // Restarted on the same database and spool: each collar re-sends what was never
    // acknowledged (the fix in flight at the kill), then goes on.
    let server = serve(&url, &spool);
    let mut tasks = Vec::new();
    for (id, secret) in collars.clone() {
        let (port, ledger) = (server.mqtt_port(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let (client, mut events) = connect(port, &id, &secret).await;
            let (unacked, last) = {
                let ledger = ledger.lock().unwrap();
                let sent = ledger.sent.get(&id).cloned().unwrap_or_default();
                let acked = ledger.acked.get(&id).cloned().unwrap_or_default();
                let last = sent.last().copied().unwrap_or(0);
                (sent.difference(&acked).copied().collect::<Vec<_>>(), last)
            };
            for seq in unacked.into_iter().chain(last + 1..=last + AFTER_RESTART) {
                assert!(
                    publish(&client, &mut events, &id, base, seq, &ledger).await,
                    "{id} lost its connection to the restarted server"
                );
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the collars were not acknowledged after the restart")
            .unwrap();
    }

    let stored: BTreeMap<(String, i64), i64> = db
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT tracker_id, seq, count(*) FROM positions GROUP BY tracker_id, seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut acked = 0;
    for (id, seqs) in &ledger.acked {
        for seq in seqs {
            acked += 1;
            assert_eq!(
                stored.get(&(id.clone(), *seq as i64)),
                Some(&1),
                "{id} seq {seq} was acknowledged: it must be stored exactly once"
            );
        }
    }
    // Every fix that was sent is acknowledged by now, and nothing is stored twice.
    assert_eq!(
        acked,
        ledger.sent.values().map(BTreeSet::len).sum::<usize>()
    );
    assert!(stored.values().all(|n| *n == 1), "{stored:?}");
    assert_eq!(stored.len(), acked);
    println!("{acked_before} fixes acknowledged before the kill, {acked} in all, each stored once");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait().await;
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&spool);
}
