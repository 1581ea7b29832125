//! Scale-out behind a real Mosquitto 2: `ingest` instances sharing the collars' messages through a shared subscription, one killed with SIGKILL and restarted under the same identity, `api` instances whose commands reach a collar through the broker, whose live feeds tell what any instance ingested and whose alerts are raised once, by whichever instance leads them.
//!
//! Collars here talk to Mosquitto only (anonymous: the broker's device authentication is not
//! what these tests are about); "acknowledged" is the app-level ack on `trackers/{id}/ack`,
//! which pettracker publishes through the broker after commit.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::api::Api;
use common::serve::ServeProcess;
use common::{eventually, live};
use gateway::protocol::TrackerId;
use gateway::storage::trackers::provision;
use pettracker::config::{Config, Role};
use pettracker::leadership::Job;
use pettracker::testing::{TestDb, fresh_database};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// A Mosquitto 2 process on a free port of 127.0.0.1, with a generated configuration.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Mosquitto {
    async fn start(name: &str) -> Mosquitto {
        // Generous queues: an ingest instance that is down keeps its share of the messages
        // queued in its persistent session until it comes back.
        Mosquitto::start_with(name, |port, _| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\nmax_inflight_messages 100\nlog_dest stderr\n\
                 log_type error\nlog_type warning\n"
            )
        })
        .await
    }

    /// Mosquitto with the configuration and ACL shipped in broker-config/mosquitto/, on a free
    /// port, with a password file holding `users` (user name, password).
    async fn start_shipped(name: &str, users: &[(&str, &str)]) -> Mosquitto {
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/broker-config/mosquitto");
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        Mosquitto::start_with(name, move |port, dir| {
            let passwd = dir.join("passwd");
            for (i, (user, password)) in users.iter().enumerate() {
                let mut cmd = Command::new("/usr/bin/mosquitto_passwd");
                if i == 0 {
                    cmd.arg("-c");
                }
                let status = cmd
                    .arg("-b")
                    .arg(&passwd)
                    .arg(user)
                    .arg(password)
                    .status()
                    .expect("mosquitto_passwd is installed with mosquitto");
                assert!(status.success());
            }
            // Mosquitto started as root drops to its own user, which must reach these.
            let data = dir.join("data");
            std::fs::create_dir_all(&data).unwrap();
            for path in [dir, &data] {
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .unwrap();
            }
            std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            // A copy: the checkout may be where Mosquitto's user cannot read (under /root).
            let acl = dir.join("acl");
            std::fs::copy(format!("{shipped}/acl"), &acl).unwrap();
            std::fs::set_permissions(&acl, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            std::fs::read_to_string(format!("{shipped}/mosquitto.conf"))
                .unwrap()
                .replace("listener 1883", &format!("listener {port} 127.0.0.1"))
                .replace("/mosquitto/config/passwd", passwd.to_str().unwrap())
                .replace("/mosquitto/config/acl", acl.to_str().unwrap())
                .replace("/mosquitto/data/", &format!("{}/", data.display()))
                + "log_dest stderr\nlog_type error\nlog_type warning\n"
        })
        .await
    }

    /// Mosquitto with the configuration `config(port, dir)` returns.
    async fn start_with(
        name: &str,
        config: impl FnOnce(u16, &std::path::Path) -> String,
    ) -> Mosquitto {
        let dir = std::env::temp_dir().join(format!("pettracker-mosquitto-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = dir.join("mosquitto.conf");
        std::fs::write(&file, config(port, &dir)).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        eventually("mosquitto listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
        Mosquitto { child, port, dir }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real `pettracker serve --role ingest` process.
struct Instance {
    process: ServeProcess,
    http: String,
}

impl Instance {
    async fn start(db: &TestDb, broker: &Mosquitto, client_id: &str) -> Instance {
        let spool = std::env::temp_dir().join(format!("pettracker-spool-{}-{client_id}", db.name));
        let url = broker.url();
        let process = ServeProcess::start(
            &[
                "--role",
                "ingest",
                "--http-addr",
                "127.0.0.1:0",
                "--external-broker",
                &url,
            ],
            &[
                ("DATABASE_URL", db.url.expose_secret().as_ref()),
                ("PETTRACKER_EXTERNAL_BROKER_CLIENT_ID", client_id.as_ref()),
                ("PETTRACKER_EXTERNAL_BROKER_GROUP", "ingest".as_ref()),
                ("PETTRACKER_INGEST_SPOOL_DIR", spool.as_os_str()),
                ("PETTRACKER_INGEST_BATCH_TIMEOUT_MS", "5".as_ref()),
                ("PETTRACKER_DATABASE_API_POOL_SIZE", "2".as_ref()),
                ("PETTRACKER_DATABASE_INGEST_POOL_SIZE", "4".as_ref()),
            ],
        );
        let instance = Instance {
            http: process.http(),
            process,
        };
        // Ready = database there and the shared subscriptions granted.
        let readyz = format!("{}/readyz", instance.http);
        eventually(&format!("{client_id} is ready"), || async {
            let response = reqwest::get(&readyz).await.map_err(|e| e.to_string())?;
            match response.status() {
                StatusCode::OK => Ok(()),
                status => Err(format!(
                    "{status}: {}",
                    response.text().await.unwrap_or_default()
                )),
            }
        })
        .await;
        instance
    }

    /// Telemetry messages this process took, from its own /metrics.
    async fn telemetry_received(&self) -> u64 {
        let metrics = reqwest::get(format!("{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find(|l| l.starts_with("pettracker_messages_received_total{topic=\"telemetry\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        self.process.signal(signal);
    }

    async fn wait(self) -> std::process::ExitStatus {
        self.process.wait().await
    }
}

/// A collar on Mosquitto: publishes fixes at QoS 1 and remembers the highest app-level ack.
struct Collar {
    id: String,
    client: AsyncClient,
    /// The highest `seq` acknowledged on `trackers/{id}/ack`.
    acked: Arc<AtomicU64>,
    /// Downlink commands received, as JSON.
    commands: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl Collar {
    async fn connect(broker: &Mosquitto, id: &str) -> Collar {
        Collar::connect_as(broker, id, None).await
    }

    /// A collar signing in with its tracker id and `secret` (anonymous without).
    async fn connect_as(broker: &Mosquitto, id: &str, secret: Option<&str>) -> Collar {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some(secret) = secret {
            options.set_credentials(id, secret);
        }
        let (client, mut events) = AsyncClient::new(options, 1000);
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let (command_tx, commands) = tokio::sync::mpsc::unbounded_channel();
        let acked = Arc::new(AtomicU64::new(0));
        let seen = acked.clone();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) if p.topic.ends_with("/ack") => {
                        let ack: Value = serde_json::from_slice(&p.payload).unwrap();
                        seen.fetch_max(ack["seq"].as_u64().unwrap(), Ordering::SeqCst);
                    }
                    Event::Incoming(Packet::Publish(p)) if p.topic.ends_with("/commands") => {
                        let _ = command_tx.send(serde_json::from_slice(&p.payload).unwrap());
                    }
                    _ => {}
                }
            }
        });
        // As docs/protocol.md says: both downlink topics, then `online`.
        client
            .subscribe_many([
                rumqttc::SubscribeFilter::new(format!("trackers/{id}/ack"), QoS::AtLeastOnce),
                rumqttc::SubscribeFilter::new(format!("trackers/{id}/commands"), QoS::AtLeastOnce),
            ])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("no SUBACK from mosquitto")
            .unwrap();
        Collar {
            id: id.to_owned(),
            client,
            acked,
            commands,
        }
    }

    async fn publish(&self, kind: &str, payload: String) {
        self.client
            .publish(
                format!("trackers/{}/{kind}", self.id),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }

    async fn fix(&self, base: DateTime<Utc>, seq: u64) {
        let ts = base + TimeDelta::seconds(seq as i64);
        self.publish(
            "telemetry",
            format!(
                r#"{{"ts":"{}","lat":52.5,"lon":13.4,"seq":{seq}}}"#,
                ts.to_rfc3339()
            ),
        )
        .await;
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }
}

/// Provisions `count` trackers `{prefix}-{i}` (fixes of unknown trackers are dead letters).
async fn trackers(db: &TestDb, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("{prefix}-{i}");
        provision(&db.pool, &TrackerId::parse(&id).unwrap(), None)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// How often each (tracker, seq) is stored.
async fn stored(db: &TestDb) -> BTreeMap<(String, i64), i64> {
    db.pool
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
        .collect()
}

/// Every collar's fixes 1..=`per_collar` are stored exactly once, and nothing else is.
async fn assert_each_stored_once(db: &TestDb, collars: &[Collar], per_collar: u64) {
    let stored = stored(db).await;
    for collar in collars {
        for seq in 1..=per_collar {
            assert_eq!(
                stored.get(&(collar.id.clone(), seq as i64)),
                Some(&1),
                "{} seq {seq} was acknowledged: it must be stored exactly once",
                collar.id
            );
        }
    }
    assert!(stored.values().all(|n| *n == 1), "duplicates: {stored:?}");
    assert_eq!(stored.len() as u64, collars.len() as u64 * per_collar);
}

/// Waits until every collar's fixes 1..=`per_collar` are stored. An ack only says so for the
/// instance that sent it: a collar's earlier fix may still be on its way through the other
/// instance, which holds it (unacknowledged to the broker) until it is committed.
async fn wait_all_stored(db: &TestDb, collars: &[Collar], per_collar: u64) {
    let want = collars.len() as i64 * per_collar as i64;
    eventually("every acknowledged fix is stored", || async {
        let stored = stored(db).await.len() as i64;
        (stored >= want)
            .then_some(())
            .ok_or(format!("{stored} of {want}"))
    })
    .await;
}

async fn wait_all_acked(collars: &[Collar], per_collar: u64) {
    eventually("every fix is acknowledged", || async {
        let behind: Vec<_> = collars
            .iter()
            .filter(|c| c.acked() < per_collar)
            .map(|c| format!("{} at {}", c.id, c.acked()))
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(behind.join(", "))
        }
    })
    .await;
}

#[tokio::test]
async fn two_ingest_instances_store_every_fix_exactly_once() {
    const PER_COLLAR: u64 = 150;
    let db = fresh_database().await;
    let broker = Mosquitto::start(&db.name).await;
    let a = Instance::start(&db, &broker, "ingest-a").await;
    let b = Instance::start(&db, &broker, "ingest-b").await;
    let base = Utc::now() - TimeDelta::hours(1);
    let mut collars = Vec::new();
    for id in trackers(&db, "pair", 4).await {
        collars.push(Collar::connect(&broker, &id).await);
    }
    for seq in 1..=PER_COLLAR {
        for collar in &collars {
            collar.fix(base, seq).await;
        }
    }
    wait_all_acked(&collars, PER_COLLAR).await;
    wait_all_stored(&db, &collars, PER_COLLAR).await;
    assert_each_stored_once(&db, &collars, PER_COLLAR).await;
    // The broker shared the messages between both instances.
    let (by_a, by_b) = (a.telemetry_received().await, b.telemetry_received().await);
    assert!(by_a > 0 && by_b > 0, "a took {by_a}, b took {by_b}");
    assert_eq!(
        by_a + by_b,
        4 * PER_COLLAR,
        "each message went to one instance"
    );

    for instance in [a, b] {
        instance.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(instance.wait().await.success());
    }
}

#[tokio::test]
async fn an_ingest_instance_killed_mid_stream_and_restarted_with_the_same_identity_loses_no_acknowledged_fix()
 {
    const PER_COLLAR: u64 = 300;
    let db = fresh_database().await;
    let broker = Mosquitto::start(&db.name).await;
    let a = Instance::start(&db, &broker, "ingest-a").await;
    let b = Instance::start(&db, &broker, "ingest-b").await;
    let base = Utc::now() - TimeDelta::hours(1);
    let mut collars = Vec::new();
    for id in trackers(&db, "kill", 4).await {
        collars.push(Arc::new(Collar::connect(&broker, &id).await));
    }
    // The collars publish steadily while b is killed under them.
    let mut publishers = Vec::new();
    for collar in &collars {
        let collar = collar.clone();
        publishers.push(tokio::spawn(async move {
            for seq in 1..=PER_COLLAR {
                collar.fix(base, seq).await;
                if seq % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    eventually("some fixes are acknowledged before the kill", || async {
        let acked: u64 = collars.iter().map(|c| c.acked()).sum();
        if acked >= 100 {
            Ok(())
        } else {
            Err(acked.to_string())
        }
    })
    .await;
    b.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(!b.wait().await.success(), "b was killed");
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let acked_at_kill: Vec<u64> = collars.iter().map(|c| c.acked()).collect();

    // Back under the same client id: its persistent session hands it what it had not
    // acknowledged, and what was queued for it meanwhile.
    let b = Instance::start(&db, &broker, "ingest-b").await;
    let collars: Vec<Collar> = collars
        .into_iter()
        .map(|c| Arc::try_unwrap(c).ok().unwrap())
        .collect();
    wait_all_acked(&collars, PER_COLLAR).await;
    wait_all_stored(&db, &collars, PER_COLLAR).await;
    assert_each_stored_once(&db, &collars, PER_COLLAR).await;
    // What b got after its restart came from its session at the broker (the collars sent
    // every fix once, before the restart).
    let redelivered = b.telemetry_received().await;
    assert!(redelivered > 0, "b's session kept nothing for it");
    println!(
        "acknowledged when b was killed: {acked_at_kill:?}; {redelivered} delivered to b after \
         its restart; all {} stored once",
        4 * PER_COLLAR
    );

    for instance in [a, b] {
        instance.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(instance.wait().await.success());
    }
}

/// An in-process instance of `role` on `db`, behind `broker`.
async fn spawn(db: &TestDb, broker: &Mosquitto, role: Role, client_id: &str) -> common::TestApp {
    spawn_with(db, broker, role, client_id, |_| {}).await
}

/// [`spawn`], with its configuration changed by `adjust` first.
async fn spawn_with(
    db: &TestDb,
    broker: &Mosquitto,
    role: Role,
    client_id: &str,
    adjust: impl FnOnce(&mut Config),
) -> common::TestApp {
    let spool = std::env::temp_dir().join(format!("pettracker-spool-{}-{client_id}", db.name));
    let mut config: Config = common::test_config(db, &spool);
    config.role = role;
    config.external_broker.url = Some(broker.url());
    config.external_broker.client_id = client_id.to_owned();
    config.commands.resend_after_ms = 300;
    // As in a deployment: every instance signs and checks access tokens with one key.
    config.auth.token_secret = Some(SecretString::from(
        "scale-out-test-token-secret-0123456789abcdef",
    ));
    adjust(&mut config);
    let app = pettracker::app::spawn(config).await.unwrap();
    let readyz = format!("http://{}/readyz", app.http_addr);
    eventually(&format!("{client_id} is ready"), || async {
        let response = reqwest::get(&readyz).await.map_err(|e| e.to_string())?;
        (response.status() == StatusCode::OK)
            .then_some(())
            .ok_or(response.status().to_string())
    })
    .await;
    common::TestApp {
        app,
        db: TestDb {
            name: db.name.clone(),
            url: SecretString::from(db.url.expose_secret().to_owned()),
            pool: db.pool.clone(),
        },
        spool,
    }
}

#[tokio::test]
async fn an_api_instance_publishes_a_command_that_reaches_the_collar_through_the_external_broker() {
    let db = fresh_database().await;
    let broker = Mosquitto::start(&db.name).await;
    let ingest = spawn(&db, &broker, Role::Ingest, "ingest-0").await;
    let api_instance = spawn(&db, &broker, Role::Api, "api-0").await;
    assert!(ingest.app.live.is_none() && ingest.app.mqtt_addr.is_none());

    // The ingest instance serves health and metrics only.
    let owners_route = reqwest::get(format!("http://{}/api/v1/trackers", ingest.app.http_addr))
        .await
        .unwrap();
    assert_eq!(owners_route.status(), StatusCode::NOT_FOUND);

    let api = Api::new(&api_instance);
    let collar = provision(&db.pool, &TrackerId::parse("rex").unwrap(), None)
        .await
        .unwrap();
    let token = api.owner_of("ada@example.com", &[&collar]).await;
    let mut rex = Collar::connect(&broker, "rex").await;
    // Online comes through the ingest instance from the collar's own message.
    rex.publish("online", "online".to_owned()).await;
    api_instance
        .wait_for_count(
            "SELECT count(*) FROM tracker_status WHERE tracker_id = 'rex' AND online",
            1,
        )
        .await;

    let (status, created) = api
        .post(
            "/trackers/rex/commands",
            Some(&token),
            json!({"type": "buzzer", "params": {"seconds": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let command = tokio::time::timeout(gateway::testing::EVENTUALLY, rex.commands.recv())
        .await
        .expect("the command reached the collar")
        .unwrap();
    assert_eq!(command["id"], id.as_str());
    assert_eq!(command["type"], "buzzer");

    // The collar's result goes back through the broker and the ingest instance.
    rex.publish(
        "command-results",
        json!({"id": id, "status": "done"}).to_string(),
    )
    .await;
    eventually("the command succeeded", || async {
        let (_, body) = api.get(&format!("/commands/{id}"), &token).await;
        (body["status"] == "succeeded")
            .then_some(())
            .ok_or(body.to_string())
    })
    .await;

    api_instance.stop().await;
    ingest.stop().await;
}

fn telemetry(ts: DateTime<Utc>, lat: f64) -> String {
    json!([{"ts": ts.to_rfc3339(), "lat": lat, "lon": 13.4, "acc": 5.0}]).to_string()
}

#[tokio::test]
async fn api_instances_show_live_fixes_and_raise_one_alert_for_fixes_an_ingest_instance_stored() {
    let db = fresh_database().await;
    let broker = Mosquitto::start(&db.name).await;
    let dwell = |c: &mut Config| {
        c.alerts.geofence_dwell_secs = 20;
        c.alerts.geofence_dwell_fixes = 2;
    };
    let ingest = spawn_with(&db, &broker, Role::Ingest, "ingest-a", dwell).await;
    let api_a = spawn_with(&db, &broker, Role::Api, "api-a", dwell).await;
    let api_b = spawn_with(&db, &broker, Role::Api, "api-b", dwell).await;

    let api = Api::new(&api_a);
    let collar = provision(&db.pool, &TrackerId::parse("rex").unwrap(), None)
        .await
        .unwrap();
    let token = api.owner_of("ada@example.com", &[&collar]).await;
    let (status, fence) = api
        .post(
            "/geofences",
            Some(&token),
            json!({"name": "home", "shape": {"type": "circle", "center": [13.4, 52.5], "radius_m": 200}, "trackers": ["rex"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fence}");
    // Whichever instance leads the alert engine, both feeds must tell what the ingest
    // instance stored.
    let mut feed_a = live::open(&api_a, &token, None).await;
    let mut feed_b = live::open(&api_b, &token, None).await;

    let rex = Collar::connect(&broker, "rex").await;
    let base = DateTime::from_timestamp(Utc::now().timestamp() - 120, 0).unwrap();
    let at = |s: i64| base + TimeDelta::seconds(s);
    rex.publish("telemetry", telemetry(at(0), 52.5)).await;
    for feed in [&mut feed_a, &mut feed_b] {
        let position = live::next(feed, |m| m["type"] == "position").await;
        assert_eq!(position["tracker"], "rex");
        assert_eq!(position["fix"]["lat"], 52.5);
    }

    // Out of the zone for 30 s and three fixes: one exit, raised by the one instance judging.
    for s in [10, 20, 30, 40] {
        rex.publish("telemetry", telemetry(at(s), 52.52)).await;
    }
    for feed in [&mut feed_a, &mut feed_b] {
        let alert = live::next(feed, |m| m["type"] == "alert").await;
        assert_eq!(alert["alert"]["kind"], "geofence_exit");
        assert_eq!(alert["alert"]["geofence_id"], fence["id"]);
    }
    // Once the judge has used a later fix (back home: a change pending its dwell, which saves
    // the engine's state), still exactly one exit.
    rex.publish("telemetry", telemetry(at(50), 52.5)).await;
    api_a
        .wait_for_count(
            &format!(
                "SELECT count(*) FROM alert_state WHERE tracker_id = 'rex' AND last_fix_time >= '{}'",
                at(50).to_rfc3339()
            ),
            1,
        )
        .await;
    assert_eq!(
        api_a
            .count("SELECT count(*) FROM alerts WHERE tracker_id = 'rex'")
            .await,
        1
    );

    // The instance judging goes away; the other takes over from the state it saved, and the
    // return home (20 s and 2 fixes after 50 s) is raised there.
    let (leader, mut survivor) = if api_a.app.standing(Job::Alerts).leading {
        (api_a, (api_b, feed_b))
    } else {
        (api_b, (api_a, feed_a))
    };
    leader.stop().await;
    for s in [60, 70, 80] {
        rex.publish("telemetry", telemetry(at(s), 52.5)).await;
    }
    let alert = live::next(&mut survivor.1, |m| m["type"] == "alert").await;
    assert_eq!(alert["alert"]["kind"], "geofence_enter");
    assert_eq!(alert["alert"]["at"], json!(at(70)));
    assert!(survivor.0.app.standing(Job::Alerts).leading);

    survivor.0.stop().await;
    ingest.stop().await;
}

#[tokio::test]
async fn an_all_instance_behind_an_external_broker_tells_its_own_feed_each_fix_once_and_the_api_instance_too()
 {
    let db = fresh_database().await;
    let broker = Mosquitto::start(&db.name).await;
    let all = spawn(&db, &broker, Role::All, "all-a").await;
    let api_instance = spawn(&db, &broker, Role::Api, "api-a").await;
    let api = Api::new(&api_instance);
    let collar = provision(&db.pool, &TrackerId::parse("rex").unwrap(), None)
        .await
        .unwrap();
    let token = api.owner_of("ada@example.com", &[&collar]).await;
    let mut own = live::open(&all, &token, None).await;
    let mut other = live::open(&api_instance, &token, None).await;

    let rex = Collar::connect(&broker, "rex").await;
    let base = DateTime::from_timestamp(Utc::now().timestamp() - 60, 0).unwrap();
    for s in 0..5 {
        rex.publish("telemetry", telemetry(base + TimeDelta::seconds(s), 52.5))
            .await;
    }
    all.wait_for_count("SELECT count(*) FROM positions", 5)
        .await;
    for feed in [&mut own, &mut other] {
        let mut times: Vec<DateTime<Utc>> = live::drain(feed, Duration::from_millis(1500))
            .await
            .into_iter()
            .filter(|m| m["type"] == "position")
            .map(|m| m["fix"]["ts"].as_str().unwrap().parse().unwrap())
            .collect();
        times.sort();
        // Each fix once: the `all` instance hears its own from its pipeline and skips the
        // relayed copy.
        let want: Vec<DateTime<Utc>> = (0..5).map(|s| base + TimeDelta::seconds(s)).collect();
        assert_eq!(times.len(), 5, "{times:?}");
        assert_eq!(times, want);
    }

    api_instance.stop().await;
    all.stop().await;
}

/// Mosquitto keeps delivering a collar revoked while connected (nothing asks it to disconnect
/// the collar): the ingest instance passes over its messages from the moment of revocation.
#[tokio::test]
async fn messages_of_a_collar_revoked_while_connected_to_the_broker_are_not_stored() {
    let db = fresh_database().await;
    let broker = Mosquitto::start(&db.name).await;
    let ingest = spawn(&db, &broker, Role::Ingest, "ingest-a").await;
    let ids = trackers(&db, "rev", 2).await;
    let (rex, fido) = (
        Collar::connect(&broker, &ids[0]).await,
        Collar::connect(&broker, &ids[1]).await,
    );
    let base = Utc::now() - TimeDelta::hours(1);
    rex.fix(base, 1).await;
    ingest
        .wait_for_count(
            "SELECT count(*) FROM positions WHERE tracker_id = 'rev-0'",
            1,
        )
        .await;
    gateway::storage::trackers::revoke(&db.pool, &TrackerId::parse("rev-0").unwrap())
        .await
        .unwrap();
    // The revocation reaches the instance by a notification; once one message was passed over,
    // every later one is.
    let mut seq = 1;
    eventually("a message of the revoked collar is passed over", || {
        seq += 1;
        let (seq, rex, ingest) = (seq, &rex, &ingest);
        async move {
            rex.fix(base, seq).await;
            let dropped = metric(ingest, "pettracker_external_revoked_dropped_total").await;
            (dropped > 0.0).then_some(()).ok_or(format!("{dropped}"))
        }
    })
    .await;
    let stored = ingest
        .count("SELECT count(*) FROM positions WHERE tracker_id = 'rev-0'")
        .await;
    for more in 1..=3 {
        rex.fix(base, 100 + more).await;
    }
    // One instance takes the messages in order: once fido's is stored, rex's were handled.
    fido.fix(base, 1).await;
    ingest
        .wait_for_count(
            "SELECT count(*) FROM positions WHERE tracker_id = 'rev-1'",
            1,
        )
        .await;
    assert_eq!(
        ingest
            .count("SELECT count(*) FROM positions WHERE tracker_id = 'rev-0'")
            .await,
        stored
    );
    ingest.stop().await;
}

/// The value of `series` on an in-process instance's /metrics (0 when absent).
async fn metric(instance: &common::TestApp, series: &str) -> f64 {
    reqwest::get(format!("http://{}/metrics", instance.app.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// broker-config/mosquitto/ as shipped (password file, ACL on the username, no anonymous
/// clients): pettracker's instances sign in as the service user with several connections each,
/// a collar with its own secret, and everything flows: fix stored, app-level ack, live relay.
#[tokio::test]
async fn the_shipped_mosquitto_configuration_carries_a_collars_fix_its_ack_and_the_live_relay() {
    const SERVICE_PASSWORD: &str = "service-password-for-the-test";
    let db = fresh_database().await;
    let rex = provision(&db.pool, &TrackerId::parse("rex").unwrap(), None)
        .await
        .unwrap();
    let broker = Mosquitto::start_shipped(
        &db.name,
        &[
            ("pettracker.server", SERVICE_PASSWORD),
            ("rex", &rex.secret),
        ],
    )
    .await;
    let service = |c: &mut Config| {
        c.external_broker.username = Some("pettracker.server".to_owned());
        c.external_broker.password = Some(SecretString::from(SERVICE_PASSWORD));
    };
    let ingest = spawn_with(&db, &broker, Role::Ingest, "ingest-a", service).await;
    let api_instance = spawn_with(&db, &broker, Role::Api, "api-a", service).await;
    let api = Api::new(&api_instance);
    let token = api.owner_of("ada@example.com", &[&rex]).await;
    let mut feed = live::open(&api_instance, &token, None).await;

    let collar = Collar::connect_as(&broker, "rex", Some(&rex.secret)).await;
    collar.fix(Utc::now() - TimeDelta::minutes(5), 1).await;
    eventually("the collar's fix is acknowledged", || async {
        (collar.acked() == 1)
            .then_some(())
            .ok_or(collar.acked().to_string())
    })
    .await;
    assert_eq!(
        ingest
            .count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'")
            .await,
        1
    );
    let position = live::next(&mut feed, |m| m["type"] == "position").await;
    assert_eq!(position["fix"]["seq"], 1);

    api_instance.stop().await;
    ingest.stop().await;
}

/// A rolling update or a scale-down stops an ingest instance with SIGTERM: it leaves the shared
/// subscriptions first, so the broker gives the other instance every message meanwhile instead
/// of queueing half of them in the stopped instance's session.
#[tokio::test]
async fn an_ingest_instance_that_stops_cleanly_leaves_its_share_to_the_others() {
    const PER_COLLAR: u64 = 20;
    let db = fresh_database().await;
    let broker = Mosquitto::start(&db.name).await;
    let a = Instance::start(&db, &broker, "ingest-a").await;
    let b = Instance::start(&db, &broker, "ingest-b").await;
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(b.wait().await.success());

    let base = Utc::now() - TimeDelta::hours(1);
    let mut collars = Vec::new();
    for id in trackers(&db, "left", 3).await {
        collars.push(Collar::connect(&broker, &id).await);
    }
    for seq in 1..=PER_COLLAR {
        for collar in &collars {
            collar.fix(base, seq).await;
        }
    }
    wait_all_stored(&db, &collars, PER_COLLAR).await;
    assert_each_stored_once(&db, &collars, PER_COLLAR).await;
    assert_eq!(a.telemetry_received().await, 3 * PER_COLLAR);

    a.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(a.wait().await.success());
}
