//! Shared test support: a whole app on port 0 with a fresh database, and real MQTT clients.
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod collar;
pub mod live;
pub mod serve;

use std::time::Duration;

use gateway::ingest::Clock;
use gateway::protocol::TrackerId;
pub use gateway::testing::eventually;
use pettracker::app::RunningApp;
use pettracker::config::Config;
use pettracker::testing::{TestDb, fresh_database};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use secrecy::{ExposeSecret, SecretString};

pub struct TestApp {
    pub app: RunningApp,
    pub db: TestDb,
    pub spool: std::path::PathBuf,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// What every test server starts from: free ports on 127.0.0.1, the test's own database, small
/// pools, and batches written within 5 ms.
pub fn test_config(db: &TestDb, spool: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.http.addr = "127.0.0.1:0".parse().unwrap();
    config.mqtt.addr = "127.0.0.1:0".parse().unwrap();
    config.database.url = Some(SecretString::from(db.url.expose_secret().to_owned()));
    config.database.api_pool_size = 4;
    config.database.ingest_pool_size = 4;
    config.ingest.spool_dir = spool.to_owned();
    config.ingest.batch_timeout_ms = 5;
    config
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(fresh_database().await, adjust).await
}

/// The app with its device-time clock in the test's hands (`Clock::manual`, then `advance`).
pub async fn spawn_app_with_clock(clock: Clock, adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(fresh_database().await, clock, adjust).await
}

/// The app on a database of the test's own making (an upgraded one, say).
pub async fn spawn_app_on(db: TestDb, adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(db, Clock::System, adjust).await
}

async fn spawn_app_at(db: TestDb, clock: Clock, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let spool = std::env::temp_dir().join(format!("pettracker-app-spool-{}", db.name));
    let mut config = test_config(&db, &spool);
    adjust(&mut config);
    let app = pettracker::app::spawn_with_clock(config, clock)
        .await
        .unwrap();
    TestApp { app, db, spool }
}

/// Another app process on the database of `first`, as a second server of one deployment.
pub async fn spawn_app_beside(first: &TestApp, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb {
        name: first.db.name.clone(),
        url: first.db.url.clone(),
        pool: first.db.pool.clone(),
    };
    let spool = std::env::temp_dir().join(format!("pettracker-app-spool-{}-2", db.name));
    let mut config = test_config(&db, &spool);
    adjust(&mut config);
    let app = pettracker::app::spawn(config).await.unwrap();
    TestApp { app, db, spool }
}

impl TestApp {
    pub fn mqtt_port(&self) -> u16 {
        self.app.mqtt_addr.expect("MQTT listener").port()
    }

    pub async fn provision(&self, id: &str) -> String {
        gateway::storage::trackers::provision(&self.app.pool, &TrackerId::parse(id).unwrap(), None)
            .await
            .unwrap()
            .secret
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.app
            .pool
            .get()
            .await
            .unwrap()
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Polls `sql` until it returns `want`.
    pub async fn wait_for_count(&self, sql: &str, want: i64) {
        eventually(&format!("{sql} = {want}"), || async {
            match self.count(sql).await {
                got if got == want => Ok(()),
                got => Err(got.to_string()),
            }
        })
        .await;
    }

    pub async fn stop(self) {
        self.app.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

pub fn options(port: u16, client_id: &str, user: &str, password: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects and waits for the broker's answer: the client, or the refusal.
pub async fn connect(opts: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut events) = AsyncClient::new(opts, 100);
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, async {
        loop {
            match events.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => return Ok::<(), ConnectionError>(()),
                _ => continue,
            }
        }
    })
    .await
    .expect("no CONNACK within 10 s")?;
    Ok((client, events))
}

/// Drives the event loop until `want` matches an incoming packet; fails the test after 10 s.
pub async fn wait_for<T>(events: &mut EventLoop, mut want: impl FnMut(&Packet) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = want(&p) {
                        return t;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("connection ended while waiting: {e}"),
            }
        }
    })
    .await
    .expect("not seen within 10 s")
}

/// Publishes at QoS 1 and waits for the PUBACK (the message is then committed or spooled).
pub async fn publish_acked(
    client: &AsyncClient,
    events: &mut EventLoop,
    topic: &str,
    payload: impl Into<Vec<u8>>,
) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    wait_for(events, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;
}

pub fn fix_json(seq: u64, lat: f64) -> String {
    let ts = chrono::Utc::now() - chrono::TimeDelta::seconds(1000 - seq as i64);
    format!(
        r#"{{"ts":"{}","lat":{lat},"lon":13.405,"acc":4.5,"bat":77,"seq":{seq}}}"#,
        ts.to_rfc3339()
    )
}
