//! Webhooks end to end: an alert raised from a real MQTT fix is POSTed, signed, to a local
//! receiver on 127.0.0.1 port 0 that fails twice, and is retried until it succeeds; internal
//! targets are refused at creation and at delivery; two servers on one database send each
//! delivery once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::api::{Api, assert_error};
use common::{TestApp, connect, options, spawn_app_beside, spawn_app_with};
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
    let app = spawn_app_with(|c| {
        c.alerts.webhook_retry_base_ms = 200;
        c.alerts.webhook_allow_loopback = true;
    })
    .await;
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

/// Claims `rex` for a new user `ada` and returns her token and the tracker's device secret.
async fn ada_with_rex(app: &TestApp, api: &Api) -> (String, String) {
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
    (ada, rex.secret)
}

/// A low battery fix from `rex`, which raises one alert.
async fn raise_battery_alert(app: &TestApp, secret: &str) {
    let opts = options(app.mqtt_port(), "rex", "rex", secret);
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
}

#[tokio::test]
async fn webhooks_pointing_at_internal_addresses_are_refused_when_created() {
    let app = common::spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let ada = api.login("ada@example.com").await.0;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://2130706433/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
    ] {
        let (status, body) = api.post("/webhooks", Some(&ada), json!({"url": url})).await;
        assert_error(status, &body, 400, "bad_request");
        assert_eq!(body["field"], "url", "{url}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM webhooks").await, 0);
    app.stop().await;

    // The development switch opens loopback, and only loopback.
    let app = spawn_app_with(|c| c.alerts.webhook_allow_loopback = true).await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let ada = api.login("ada@example.com").await.0;
    let (status, body) = api
        .post(
            "/webhooks",
            Some(&ada),
            json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api
        .post(
            "/webhooks",
            Some(&ada),
            json!({"url": "http://10.0.0.1/hook"}),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_whose_name_resolves_to_loopback_is_refused_at_delivery() {
    let app = common::spawn_app().await;
    let api = Api::new(&app);
    let (ada, secret) = ada_with_rex(&app, &api).await;
    // A receiver that must never be called, stored under a name (as if it had resolved to a
    // public address when created): the check at delivery is what stops it.
    let (url, received) = receiver(0).await;
    let url = url.replace("127.0.0.1", "localhost");
    app.app
        .pool
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO webhooks (user_id, url, secret)
             SELECT id, $1, 'secret' FROM users WHERE email = 'ada@example.com'",
            &[&url],
        )
        .await
        .unwrap();
    raise_battery_alert(&app, &secret).await;

    let (_, hooks) = api.get("/webhooks", &ada).await;
    let deliveries_path = format!("/webhooks/{}/deliveries", hooks["webhooks"][0]["id"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        let (_, body) = api.get(&deliveries_path, &ada).await;
        if let Some(d) = body["deliveries"].as_array().and_then(|d| d.first())
            && d["attempts"].as_i64() >= Some(1)
        {
            break d.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["status"], "pending", "{delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("refused"), "{error}");
    assert!(received.lock().unwrap().is_empty());
    app.stop().await;
}

/// A receiver that takes `delay` to answer 200, and logs the delivery id of every request.
async fn slow_receiver(delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = log.clone();
    let route = warp::post()
        .and(warp::header::<String>("x-pettracker-delivery"))
        .then(move |id: String| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(id);
                tokio::time::sleep(delay).await;
                StatusCode::OK
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/hook"), log)
}

#[tokio::test]
async fn two_servers_on_one_database_send_each_delivery_exactly_once() {
    // Slow receivers: one after another, a batch would outlast its lease (twice the timeout)
    // and the other server would claim and send the rest again.
    let settings = |c: &mut pettracker::config::Config| {
        c.alerts.webhook_allow_loopback = true;
        c.alerts.webhook_timeout_ms = 1_000;
        c.alerts.webhook_concurrency = 16;
    };
    let first = spawn_app_with(settings).await;
    let second = spawn_app_beside(&first, settings).await;
    let api = Api::new(&first);
    let (ada, secret) = ada_with_rex(&first, &api).await;
    let (url, log) = slow_receiver(Duration::from_millis(400)).await;
    const HOOKS: i64 = 40;
    for _ in 0..HOOKS {
        let (status, body) = api.post("/webhooks", Some(&ada), json!({"url": url})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    raise_battery_alert(&first, &secret).await;
    first
        .wait_for_count(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'",
            HOOKS,
        )
        .await;
    let log = log.lock().unwrap().clone();
    let unique: std::collections::BTreeSet<&String> = log.iter().collect();
    assert_eq!(unique.len() as i64, HOOKS, "{log:?}");
    assert_eq!(
        log.len() as i64,
        HOOKS,
        "some deliveries were sent twice: {log:?}"
    );
    assert_eq!(
        first
            .count("SELECT count(*) FROM webhook_deliveries WHERE attempts <> 1")
            .await,
        0
    );
    second.stop().await;
    first.stop().await;
}
