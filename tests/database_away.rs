//! A server started while its PostgreSQL is down: it runs, says it is not ready, refuses collars until it can check their credentials, and migrates and serves once the database comes.

mod common;

use std::time::Duration;

use common::{connect, fix_json, options, wait_for};
use gateway::protocol::TrackerId;
use gateway::testing::dedicated_cluster;
use pettracker::config::Config;
use rumqttc::{ConnectReturnCode, ConnectionError, Packet, QoS};
use serde_json::Value;

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_server_started_before_its_database_is_alive_but_not_ready_and_serves_once_it_comes() {
    let mut pg = tokio::task::spawn_blocking(|| dedicated_cluster("away"))
        .await
        .unwrap();
    let url = pg.url();
    pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();

    let spool = std::env::temp_dir().join(format!("pettracker-away-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let mut config = Config::default();
    config.http.addr = "127.0.0.1:0".parse().unwrap();
    config.mqtt.addr = "127.0.0.1:0".parse().unwrap();
    config.database.url = Some(url);
    config.ingest.spool_dir = spool.clone();
    let app = pettracker::app::spawn(config)
        .await
        .expect("the server starts without its database");
    let http = format!("http://{}", app.http_addr);
    let mqtt = app.mqtt_addr.unwrap().port();

    let (status, _) = get(&format!("{http}/healthz")).await;
    assert_eq!(status, 200);
    let (status, ready) = get(&format!("{http}/readyz")).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["database"], false, "{ready}");
    assert!(
        ready["missing"][0]
            .as_str()
            .unwrap()
            .starts_with("database"),
        "{ready}"
    );
    let (status, body) = get(&format!("{http}/api/v1/trackers")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // Credentials cannot be checked: the collar is refused as not authorized (5), which it
    // retries, not told that its credentials are wrong (4).
    let refused = connect(options(mqtt, "rex", "rex", "any-secret"))
        .await
        .err();
    assert!(
        matches!(
            refused,
            Some(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized
            ))
        ),
        "{refused:?}"
    );

    pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = get(&format!("{http}/readyz")).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Migrated: a collar provisioned now connects, and its fix is stored and acknowledged.
    let secret =
        gateway::storage::trackers::provision(&app.pool, &TrackerId::parse("rex").unwrap(), None)
            .await
            .unwrap()
            .secret;
    let (client, mut events) = connect(options(mqtt, "rex", "rex", &secret)).await.unwrap();
    client
        .publish(
            "trackers/rex/telemetry",
            QoS::AtLeastOnce,
            false,
            fix_json(1, 52.5),
        )
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    let stored: i64 = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM positions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);

    app.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&spool);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}
