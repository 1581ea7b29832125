//! The demo end to end: it starts on port 0, serves the API, its simulated pets' fixes arrive, and a second run reuses the data.
// The simulator is part of the binary only with the `demo` feature (on by default).
#![cfg(feature = "demo")]

use std::time::Duration;

use pettracker::config::Config;
use pettracker::demo::{self, DEMO_EMAIL, DEMO_PASSWORD, DemoOptions};
use pettracker::testing::fresh_database;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

fn config(db: &pettracker::testing::TestDb, spool: &std::path::Path) -> Config {
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

async fn login(http: &reqwest::Client, base: &str) -> String {
    let body: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": DEMO_EMAIL, "password": DEMO_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().expect("a token").to_owned()
}

#[tokio::test]
async fn the_demo_serves_the_api_and_its_simulated_pets_report_fixes_the_demo_owner_can_read() {
    let db = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("pettracker-demo-{}", db.name));
    let options = DemoOptions {
        dir: dir.clone(),
        pets: 4,
        interval: Duration::from_millis(500),
        ..DemoOptions::default()
    };
    let demo = demo::spawn(config(&db, &dir.join("spool")), options.clone())
        .await
        .unwrap();
    let ids: Vec<String> = demo.trackers.iter().map(|t| t.tracker_id.clone()).collect();
    assert_eq!(ids.len(), 4);
    let pets: Value =
        serde_json::from_slice(&std::fs::read(dir.join("pets.json")).unwrap()).unwrap();
    assert_eq!(pets.as_array().unwrap().len(), 4);
    assert!(pets[0]["home"]["safe_radius_m"].as_f64().unwrap() > 0.0);

    let base = format!("http://{}/api/v1", demo.app.http_addr);
    let http = reqwest::Client::new();
    let token = login(&http, &base).await;
    let list: Value = http
        .get(format!("{base}/trackers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for id in &ids {
        assert!(list.to_string().contains(id.as_str()), "{id} not in {list}");
    }
    // Each pet has its safe zone: a circle around its home, assigned to its collar.
    let fences: Value = http
        .get(format!("{base}/geofences"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fences = fences["geofences"].as_array().unwrap();
    assert_eq!(fences.len(), ids.len(), "{fences:?}");
    for id in &ids {
        assert!(
            fences
                .iter()
                .any(|f| f["trackers"] == serde_json::json!([id])),
            "{id} has no safe zone: {fences:?}"
        );
    }

    // Every pet's fixes arrive: poll with a deadline (a bound on waiting, not a timing claim).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let response = http
                .get(format!("{base}/trackers/{id}/latest"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                let latest: Value = response.json().await.unwrap();
                let text = latest.to_string();
                let lat = latest
                    .pointer("/status/last_fix/lat")
                    .and_then(Value::as_f64);
                if let Some(lat) = lat {
                    assert!((52.3..52.7).contains(&lat), "{id} not in Berlin: {text}");
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no fix from {id} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    demo.shutdown().await.unwrap();

    // A second run finds its collars' secrets and the account, and adds pets on request.
    let more = DemoOptions { pets: 5, ..options };
    let again = demo::spawn(config(&db, &dir.join("spool")), more)
        .await
        .unwrap();
    let again_ids: Vec<String> = again
        .trackers
        .iter()
        .map(|t| t.tracker_id.clone())
        .collect();
    assert_eq!(&again_ids[..4], &ids[..]);
    assert_eq!(again_ids.len(), 5);
    again.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
