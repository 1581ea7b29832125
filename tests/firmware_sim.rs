//! The simulator against a real server: collars stay near home, upload what they buffered offline, re-send until acked, and their faults are handled.
// The simulator is part of the binary only with the `demo` feature (on by default).
#![cfg(feature = "demo")]

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{TestApp, spawn_app};
use firmware_sim::latency::{self, LatencyConfig};
use firmware_sim::load::{self, LoadConfig};
use firmware_sim::movement::max_range_m;
use firmware_sim::{
    BERLIN, Broker, CollarConfig, CollarStats, Coverage, Credential, Faults, Fleet,
};
use futures::{SinkExt, StreamExt};
use gateway::protocol::TrackerId;
use tokio_tungstenite::tungstenite::Message;

async fn collar(app: &TestApp, id: &str, seed: u64) -> CollarConfig {
    let secret = app.provision(id).await;
    let home = BERLIN.homes(seed as usize + 1, 11)[seed as usize];
    let mut c = CollarConfig::new(
        Credential {
            tracker_id: TrackerId::parse(id).unwrap(),
            secret,
        },
        Broker::plain("127.0.0.1", app.mqtt_port()),
        home,
        seed,
    );
    c.interval = Duration::from_millis(100);
    c.ack_timeout = Duration::from_millis(500);
    c
}

/// Waits until `done` holds for the collar's counters, looking again whenever the collar has
/// handled something; fails the test after 30 s.
async fn until(stats: &CollarStats, what: &str, done: impl Fn(&CollarStats) -> bool) {
    if tokio::time::timeout(Duration::from_secs(30), stats.wait_until(done))
        .await
        .is_err()
    {
        panic!("not within 30 s: {what}; {stats:?}");
    }
}

/// The next JSON message on a live feed; fails the test after 30 s or when the feed ends.
async fn next_event(
    feed: &mut (impl futures::Stream<Item = tokio_tungstenite::tungstenite::Result<Message>> + Unpin),
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, feed.next())
            .await
            .expect("a live event within 30 s")
            .expect("the live feed stays open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Ada, signed in, with a new collar `id` she has claimed: she may watch it and command it.
async fn ada_with_collar(app: &TestApp, id: &str) -> (common::api::Api, String, Credential) {
    let api = common::api::Api::new(app);
    api.register("ada@example.com").await;
    let (ada, _) = api.login("ada@example.com").await;
    let tracker_id = TrackerId::parse(id).unwrap();
    let provisioned = gateway::storage::trackers::provision(&app.app.pool, &tracker_id, None)
        .await
        .unwrap();
    let claim = serde_json::json!({"tracker_id": id, "claim_code": provisioned.claim_code});
    let (status, body) = api.post("/trackers/claim", Some(&ada), claim).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let credential = Credential {
        tracker_id,
        secret: provisioned.secret,
    };
    (api, ada, credential)
}

async fn positions(app: &TestApp, id: &str) -> Vec<(f64, f64, i64)> {
    app.app
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT lat, lon, seq FROM positions WHERE tracker_id = $1 ORDER BY seq",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn every_fix_a_collar_records_is_stored_near_its_home_without_gaps() {
    let app = spawn_app().await;
    let cfg = collar(&app, "sim-bounds", 1).await;
    let home = cfg.home;
    let fleet = Fleet::start(vec![cfg]);
    let stats = fleet.stats[0].clone();
    until(&stats, "30 fixes acked", |s| {
        s.fixes_recorded.load(Ordering::Relaxed) >= 30 && s.acked_seq.load(Ordering::Relaxed) > 0
    })
    .await;
    fleet.stop().await;
    let recorded = stats.fixes_recorded.load(Ordering::Relaxed) as i64;
    app.wait_for_count(
        "SELECT count(*) FROM positions WHERE tracker_id = 'sim-bounds'",
        recorded,
    )
    .await;
    let stored = positions(&app, "sim-bounds").await;
    let (first, last) = (stored[0].2, stored[stored.len() - 1].2);
    assert_eq!(last - first + 1, recorded, "seq has gaps");
    for (lat, lon, _) in stored {
        // Indoor fixes can be off by a few accuracy radii (at most 60 m each).
        assert!(home.distance_m(lat, lon) <= max_range_m(&home) + 400.0);
    }
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_collar_out_of_coverage_uploads_its_buffered_fixes_as_batches_when_back() {
    let app = spawn_app().await;
    let mut cfg = collar(&app, "sim-tunnel", 2).await;
    cfg.coverage = Coverage {
        mean_between: Some(Duration::from_millis(700)),
        mean_length: Duration::from_millis(1_500),
    };
    cfg.max_batch = 5;
    let fleet = Fleet::start(vec![cfg]);
    let stats = fleet.stats[0].clone();
    until(&stats, "a batch after a spell offline", |s| {
        s.batches_sent.load(Ordering::Relaxed) >= 2 && s.connects.load(Ordering::Relaxed) >= 2
    })
    .await;
    let target = stats.last_seq.load(Ordering::Relaxed);
    until(&stats, "the batch acked", |s| {
        s.acked_seq.load(Ordering::Relaxed) >= target
    })
    .await;
    fleet.stop().await;
    let stored = positions(&app, "sim-tunnel").await;
    let upto: Vec<_> = stored.iter().filter(|p| p.2 as u64 <= target).collect();
    let first = upto[0].2 as u64;
    assert_eq!(upto.len() as u64, target - first + 1, "fixes lost offline");
    app.stop().await;
}

#[tokio::test]
async fn a_collar_whose_acks_are_lost_sends_its_fixes_again_and_the_server_stores_each_once() {
    let app = spawn_app().await;
    let mut cfg = collar(&app, "sim-deaf", 3).await;
    cfg.faults = Faults {
        lose_ack_rate: 1.0,
        ..Faults::default()
    };
    cfg.ack_timeout = Duration::from_millis(300);
    let fleet = Fleet::start(vec![cfg]);
    let stats = fleet.stats[0].clone();
    until(&stats, "fixes re-sent", |s| {
        s.fixes_resent.load(Ordering::Relaxed) >= 20
    })
    .await;
    fleet.stop().await;
    let recorded = stats.fixes_recorded.load(Ordering::Relaxed);
    assert!(stats.fixes_sent.load(Ordering::Relaxed) > recorded);
    // Nothing acked, so everything recorded is still buffered: none was forgotten.
    assert_eq!(stats.buffered.load(Ordering::Relaxed), recorded);
    app.wait_for_count(
        "SELECT count(*) FROM positions WHERE tracker_id = 'sim-deaf'",
        recorded as i64,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_faulty_collars_garbage_is_dead_lettered_and_its_duplicates_are_stored_once() {
    let app = spawn_app().await;
    let mut cfg = collar(&app, "sim-faulty", 4).await;
    cfg.faults = Faults {
        malformed_rate: 0.3,
        duplicate_rate: 0.5,
        ..Faults::default()
    };
    let fleet = Fleet::start(vec![cfg]);
    let stats = fleet.stats[0].clone();
    until(&stats, "garbage and duplicates sent", |s| {
        s.malformed_sent.load(Ordering::Relaxed) >= 3
            && s.duplicates_sent.load(Ordering::Relaxed) >= 3
    })
    .await;
    fleet.stop().await;
    let recorded = stats.fixes_recorded.load(Ordering::Relaxed) as i64;
    app.wait_for_count(
        "SELECT count(*) FROM positions WHERE tracker_id = 'sim-faulty'",
        recorded,
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM dead_letters WHERE tracker_id = 'sim-faulty'",
        stats.malformed_sent.load(Ordering::Relaxed) as i64,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_collar_obeys_live_mode_and_answers_buzzer_firmware_and_unknown_commands() {
    // Open mode lets the test publish downlink commands and read the results, as the server
    // side of commands will.
    let app = common::spawn_app_with(|c| c.mqtt.open = true).await;
    let mut cfg = collar(&app, "sim-obedient", 5).await;
    cfg.interval = Duration::from_secs(5);
    let fleet = Fleet::start(vec![cfg]);
    let stats = fleet.stats[0].clone();
    until(&stats, "connected", |s| {
        s.connects.load(Ordering::Relaxed) >= 1
    })
    .await;

    let (client, mut events) =
        common::connect(common::options(app.mqtt_port(), "console", "console", "x"))
            .await
            .unwrap();
    client
        .subscribe(
            "trackers/sim-obedient/command-results",
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    common::wait_for(&mut events, |p| {
        matches!(p, rumqttc::Packet::SubAck(_)).then_some(())
    })
    .await;
    let send = |body: serde_json::Value| {
        let client = client.clone();
        async move {
            client
                .publish(
                    "trackers/sim-obedient/commands",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    body.to_string(),
                )
                .await
                .unwrap();
        }
    };
    // The console's connection is driven by its own task; command results come out of it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload)
            {
                let _ = tx.send(v);
            }
        }
    });
    let mut results = Vec::new();

    // `duration_s` (not in the server's contract, which counts minutes) keeps the test short.
    send(serde_json::json!({"id": "live-1", "type": "live_mode", "params": {"interval_secs": 1, "duration_s": 2}})).await;
    until(&stats, "live interval", |s| {
        s.interval_ms.load(Ordering::Relaxed) == 1_000
    })
    .await;
    until(&stats, "back to normal", |s| {
        s.interval_ms.load(Ordering::Relaxed) == 5_000
    })
    .await;

    send(serde_json::json!({"id": "buzz-1", "type": "buzzer", "params": {"seconds": 1}})).await;
    send(serde_json::json!({"id": "fw-1", "type": "firmware_update", "params": {"version": "2.0.0"}})).await;
    send(serde_json::json!({"id": "odd-1", "type": "teleport", "params": {}})).await;
    while !results
        .iter()
        .filter(|r: &&serde_json::Value| r["status"] != "accepted")
        .any(|r| r["id"] == "fw-1")
    {
        let result = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        results.push(
            result
                .expect("a command result within 30 s")
                .expect("connection open"),
        );
    }
    let statuses = |id: &str| -> Vec<String> {
        results
            .iter()
            .filter(|r| r["id"] == id)
            .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(statuses("live-1"), ["accepted", "done"]);
    assert_eq!(statuses("buzz-1"), ["accepted", "done"]);
    assert_eq!(statuses("odd-1"), ["failed"]);
    let fw = statuses("fw-1");
    assert_eq!(fw.first().map(String::as_str), Some("accepted"));
    assert_eq!(fw.last().map(String::as_str), Some("done"));
    let progress: Vec<u64> = results
        .iter()
        .filter(|r| r["id"] == "fw-1")
        .filter_map(|r| r["progress"].as_u64())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] < w[1]) && progress.last() == Some(&100));
    driver.abort();
    fleet.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_collar_asked_for_tls_reports_over_the_tls_listener() {
    let dir = std::env::temp_dir().join(format!("pettracker-sim-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let app = common::spawn_app_with(|c| {
        c.mqtt.tls_addr = Some("127.0.0.1:0".parse().unwrap());
        c.mqtt.tls_cert = Some(cert_path.clone());
        c.mqtt.tls_key = Some(key_path.clone());
    })
    .await;
    let mut cfg = collar(&app, "sim-secure", 6).await;
    cfg.broker = Broker {
        host: "localhost".to_owned(),
        port: app.app.mqtt_tls_addr.unwrap().port(),
        tls_ca: Some(cert.cert.pem().into_bytes()),
    };
    let fleet = Fleet::start(vec![cfg]);
    let stats = fleet.stats[0].clone();
    until(&stats, "fixes acked over TLS", |s| {
        s.acked_seq.load(Ordering::Relaxed) > 0
    })
    .await;
    fleet.stop().await;
    assert!(
        app.count("SELECT count(*) FROM positions WHERE tracker_id = 'sim-secure'")
            .await
            > 0
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn commands_sent_through_the_api_are_carried_out_by_a_simulated_collar() {
    let app = spawn_app().await;
    let (api, ada, credential) = ada_with_collar(&app, "sim-pet").await;
    let mut cfg = CollarConfig::new(
        credential,
        Broker::plain("127.0.0.1", app.mqtt_port()),
        BERLIN.homes(1, 11)[0],
        7,
    );
    cfg.interval = Duration::from_secs(5);
    let fleet = Fleet::start(vec![cfg]);
    let stats = fleet.stats[0].clone();
    // Ada watches the collar on the live feed, where every command transition is announced.
    let live = format!("ws://{}/api/v1/live?token={ada}", app.app.http_addr);
    let (mut feed, _) = tokio_tungstenite::connect_async(live).await.unwrap();
    let subscribe = serde_json::json!({"type": "subscribe", "trackers": ["sim-pet"]});
    feed.send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    while next_event(&mut feed).await["type"] != "snapshot" {}

    let mut ids = Vec::new();
    for body in [
        serde_json::json!({"type": "set_interval", "params": {"seconds": 7}}),
        serde_json::json!({"type": "buzzer", "params": {"seconds": 1}}),
        serde_json::json!({"type": "locate_now"}),
    ] {
        let (status, created) = api
            .post("/trackers/sim-pet/commands", Some(&ada), body)
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut pending: HashSet<String> = ids.iter().cloned().collect();
    while !pending.is_empty() {
        let event = next_event(&mut feed).await;
        if event["type"] != "command" {
            continue;
        }
        let command = &event["command"];
        assert_ne!(command["status"], "failed", "{event}");
        if command["status"] == "succeeded" {
            pending.remove(command["id"].as_str().unwrap_or_default());
        }
    }
    for id in &ids {
        let (_, command) = api.get(&format!("/commands/{id}"), &ada).await;
        assert_eq!(command["status"], "succeeded", "{command}");
    }
    assert_eq!(stats.interval_ms.load(Ordering::Relaxed), 7_000);
    fleet.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn collars_provisioned_through_the_admin_api_connect_and_report() {
    let app =
        common::spawn_app_with(|c| c.auth.admin_emails = vec!["root@example.com".into()]).await;
    let api = common::api::Api::new(&app);
    api.register("root@example.com").await;
    let (root, _) = api.login("root@example.com").await;
    let creds = firmware_sim::provision_via_api(&api.base, &root, "fleet", 2)
        .await
        .unwrap();
    let ids: Vec<&str> = creds.iter().map(|c| c.tracker_id.as_str()).collect();
    assert_eq!(ids, ["fleet-00001", "fleet-00002"]);
    // The same names again: the server refuses, and the error says why.
    let again = firmware_sim::provision_via_api(&api.base, &root, "fleet", 1).await;
    assert!(format!("{:#}", again.unwrap_err()).contains("409"));

    let configs = creds
        .iter()
        .enumerate()
        .map(|(i, credential)| {
            let mut c = CollarConfig::new(
                credential.clone(),
                Broker::plain("127.0.0.1", app.mqtt_port()),
                BERLIN.homes(2, 3)[i],
                i as u64,
            );
            c.interval = Duration::from_millis(100);
            c
        })
        .collect();
    let fleet = Fleet::start(configs);
    for id in ids {
        app.wait_for_count(
            &format!("SELECT least(count(*), 3) FROM positions WHERE tracker_id = '{id}'"),
            3,
        )
        .await;
    }
    fleet.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn every_fix_the_load_generator_sends_is_acknowledged_and_stored() {
    let app = spawn_app().await;
    let mut credentials = Vec::new();
    for id in ["load-1", "load-2"] {
        credentials.push(Credential {
            tracker_id: TrackerId::parse(id).unwrap(),
            secret: app.provision(id).await,
        });
    }
    let cfg = LoadConfig {
        credentials,
        brokers: vec![Broker::plain("127.0.0.1", app.mqtt_port())],
        messages_per_collar: 5,
        fixes_per_message: 3,
        qos: rumqttc::QoS::AtLeastOnce,
        inflight: 2,
        rate: None,
        tasks: 1,
        duration: None,
        ramp: None,
        await_app_ack: false,
        backdate: false,
    };
    let report = load::run(cfg, Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (report.messages, report.fixes, report.failed_collars),
        (10, 30, 0)
    );
    assert!(report.latency_ms_max.is_some() && report.latency_ms_p50 <= report.latency_ms_max);
    app.wait_for_count(
        "SELECT count(*) FROM positions WHERE tracker_id IN ('load-1', 'load-2')",
        30,
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn with_await_app_ack_every_fix_counted_is_already_stored_when_the_load_returns() {
    let app = spawn_app().await;
    let mut credentials = Vec::new();
    for id in ["appack-1", "appack-2", "appack-3"] {
        credentials.push(Credential {
            tracker_id: TrackerId::parse(id).unwrap(),
            secret: app.provision(id).await,
        });
    }
    let cfg = LoadConfig {
        credentials,
        brokers: vec![Broker::plain("127.0.0.1", app.mqtt_port())],
        messages_per_collar: 20,
        fixes_per_message: 2,
        qos: rumqttc::QoS::AtLeastOnce,
        inflight: 3,
        rate: None,
        tasks: 1,
        duration: None,
        ramp: None,
        await_app_ack: true,
        backdate: false,
    };
    let report = load::run(cfg, Duration::from_secs(60), |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.acknowledged_by, "app_ack");
    assert_eq!(
        (report.messages, report.fixes, report.failed_collars),
        (60, 120, 0)
    );
    assert!(report.latency_ms_max.is_some() && report.latency_ms_p50 <= report.latency_ms_max);
    // No waiting: an app-level ack is sent only after the commit.
    assert_eq!(
        app.count("SELECT count(*) FROM positions WHERE tracker_id LIKE 'appack-%'")
            .await,
        120
    );
    app.stop().await;
}

#[tokio::test]
async fn live_latency_sees_each_fix_of_its_collar_on_the_owners_live_feed() {
    let app = spawn_app().await;
    let (api, ada, credential) = ada_with_collar(&app, "sim-watched").await;
    let report = latency::run(LatencyConfig {
        broker: Broker::plain("127.0.0.1", app.mqtt_port()),
        api: api.base.clone(),
        token: ada,
        credential,
        samples: 5,
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(10),
    })
    .await
    .unwrap();
    assert_eq!((report.received, report.lost, report.pubacks), (5, 0, 5));
    assert!(report.live_ms.max.is_some() && report.puback_ms.max.is_some());
    app.stop().await;
}
