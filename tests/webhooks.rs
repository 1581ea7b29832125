//! Webhooks end to end: an alert raised from a real MQTT fix is POSTed, signed, to a local
//! receiver on 127.0.0.1 port 0 that fails twice, and is retried until it succeeds.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::api::{Api, assert_error};
use common::{connect, options, spawn_app_with};
use gateway::protocol::TrackerId;
use gateway::storage::trackers::provision;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use rumqttc::QoS;
use serde_json::{Value, json};
use sha2::Sha256;
use warp::Filter;

/// What the receiver got: (signature header, body) of every request, in order.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTP receiver on 127.0.0.1 port 0 that answers 500 to the first `failures` requests.
async fn receiver(failures: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let route = warp::post()
        .and(warp::header::<String>("x-pettracker-signature"))
        .and(warp::body::bytes())
        .map(move |signature: String, body: warp::hyper::body::Bytes| {
            let mut log = log.lock().unwrap();
            log.push((signature, body.to_vec()));
            if log.len() <= failures {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/hook"), received)
}

#[tokio::test]
async fn an_alert_webhook_is_signed_and_retried_with_backoff_until_the_receiver_accepts_it() {
    let app = spawn_app_with(|c| c.alerts.webhook_retry_base_ms = 200).await;
    let api = Api::new(&app);
    let rex = provision(&app.app.pool, &TrackerId::parse("rex").unwrap(), None)
        .await
        .unwrap();
    api.register("ada@example.com").await;
    let ada = api.login("ada@example.com").await.0;
    let (status, body) = api
        .post(
            "/trackers/claim",
            Some(&ada),
            json!({"tracker_id": "rex", "claim_code": rex.claim_code}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (url, received) = receiver(2).await;
    let (status, hook) = api.post("/webhooks", Some(&ada), json!({"url": url})).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let (status, body) = api
        .post(
            "/webhooks",
            Some(&ada),
            json!({"url": "ftp://example.com/x"}),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");

    // A low battery raises an alert.
    let opts = options(app.mqtt_port(), "rex", "rex", &rex.secret);
    let (client, mut events) = connect(opts).await.unwrap();
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let ts: DateTime<Utc> = Utc::now() - chrono::TimeDelta::seconds(5);
    let fix = json!({"ts": ts.to_rfc3339(), "lat": 52.5, "lon": 13.4, "bat": 5});
    client
        .publish(
            "trackers/rex/telemetry",
            QoS::AtLeastOnce,
            false,
            fix.to_string(),
        )
        .await
        .unwrap();

    // Delivered on the third attempt; the status says so.
    let deliveries_path = format!("/webhooks/{}/deliveries", hook["id"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        let (status, body) = api.get(&deliveries_path, &ada).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(d) = body["deliveries"].as_array().and_then(|d| d.first())
            && d["status"] == "delivered"
        {
            break d.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(delivery["last_status"], 200, "{delivery}");

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    for (signature, body) in &received {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(signature, &format!("sha256={want}"));
    }
    let body: Value = serde_json::from_slice(&received[2].1).unwrap();
    assert_eq!(body["type"], "alert");
    assert_eq!(body["alert"]["kind"], "battery_low");
    assert_eq!(body["alert"]["tracker_id"], "rex");

    // Another user cannot see the webhook's deliveries; the secret is not listed again.
    api.register("bob@example.com").await;
    let bob = api.login("bob@example.com").await.0;
    let (status, body) = api.get(&deliveries_path, &bob).await;
    assert_error(status, &body, 404, "not_found");
    let (_, list) = api.get("/webhooks", &ada).await;
    assert!(list["webhooks"][0].get("secret").is_none(), "{list}");
    app.stop().await;
}
