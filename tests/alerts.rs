//! Alerts end to end: collars publishing over real MQTT, the alert engine on the live bus, alerts
//! stored, listed, acknowledged over HTTP and pushed on a real WebSocket feed.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::api::{Api, assert_error};
use common::{TestApp, connect, eventually, live, options, spawn_app_with};
use gateway::protocol::TrackerId;
use gateway::storage::trackers::{Provisioned, provision};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};

/// A time `ago` seconds before now, in whole seconds (the protocol keeps milliseconds).
fn whole_seconds_ago(ago: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp() - ago, 0).unwrap()
}

async fn collar(app: &TestApp, id: &str) -> Provisioned {
    provision(&app.app.pool, &TrackerId::parse(id).unwrap(), None)
        .await
        .unwrap()
}

async fn owner(api: &Api, email: &str, collars: &[&Provisioned]) -> String {
    api.register(email).await;
    let token = api.login(email).await.0;
    for c in collars {
        let (status, body) = api
            .post(
                "/trackers/claim",
                Some(&token),
                json!({"tracker_id": c.tracker_id, "claim_code": c.claim_code}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    token
}

async fn device(app: &TestApp, c: &Provisioned) -> AsyncClient {
    let opts = options(app.mqtt_port(), &c.tracker_id, &c.tracker_id, &c.secret);
    let (client, mut events) = connect(opts).await.unwrap();
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
}

/// A fix `secs` after `base` at `lat` (longitude 13.4), with an optional battery level.
fn fix(base: DateTime<Utc>, secs: i64, lat: f64, battery: Option<u8>) -> Value {
    let mut fix = json!({"ts": (base + TimeDelta::seconds(secs)).to_rfc3339(), "lat": lat, "lon": 13.4, "acc": 5.0});
    if let Some(b) = battery {
        fix["bat"] = json!(b);
    }
    fix
}

async fn publish(client: &AsyncClient, tracker: &str, fixes: Vec<Value>) {
    client
        .publish(
            format!("trackers/{tracker}/telemetry"),
            QoS::AtLeastOnce,
            false,
            Value::Array(fixes).to_string(),
        )
        .await
        .unwrap();
}

/// Polls the alert list until it has `want` alerts.
async fn alerts_until(api: &Api, token: &str, query: &str, want: usize) -> Vec<Value> {
    eventually(&format!("{want} alerts{query}"), || async {
        let (status, body) = api.get(&format!("/alerts{query}"), token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let alerts = body["alerts"].as_array().unwrap().clone();
        if alerts.len() >= want {
            Ok(alerts)
        } else {
            Err(body.to_string())
        }
    })
    .await
}

/// Publishes a marker fix far in the zone and waits until the engine has used it (its position
/// is stored and a later poll cannot race it): after this, the absence of an alert is real.
async fn settle(
    app: &TestApp,
    client: &AsyncClient,
    tracker: &str,
    base: DateTime<Utc>,
    secs: i64,
) {
    publish(client, tracker, vec![fix(base, secs, 52.5, None)]).await;
    let t = base + TimeDelta::seconds(secs);
    let sql = format!(
        "SELECT count(*) FROM alert_state WHERE tracker_id = '{tracker}' AND last_fix_time >= '{}'",
        t.to_rfc3339()
    );
    app.wait_for_count(&sql, 1).await;
}

fn home_circle() -> Value {
    json!({"type": "circle", "center": [13.4, 52.5], "radius_m": 200})
}

/// The live bus drops events for a subscriber that falls behind; a geofence exit decided on a
/// dropped fix would never be alerted. The engine computes from committed batches instead, and
/// reads a tracker's fixes back from the database when they do not fit in its queue. Here the
/// bus keeps one event and the engine's queue two, and one message carries the whole exit and a
/// return home: a bus subscriber sees the last fix only (home: nothing happened), and the
/// engine's queue cannot take the batch.
#[tokio::test]
async fn a_geofence_exit_is_alerted_when_its_fixes_come_faster_than_the_bus_and_the_engine_queue_hold()
 {
    let app = spawn_app_with(|c| {
        c.live.bus_capacity = 1;
        c.alerts.queue_capacity = 2;
        c.alerts.geofence_dwell_secs = 20;
        c.alerts.geofence_dwell_fixes = 2;
    })
    .await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    let (status, fence) = api
        .post(
            "/geofences",
            Some(&ada),
            json!({"name": "home", "shape": home_circle(), "trackers": ["rex"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fence}");

    let base = whole_seconds_ago(120);
    let client = device(&app, &rex).await;
    let away = 52.52;
    let mut fixes = vec![fix(base, 0, 52.5, None), fix(base, 10, 52.5, None)];
    fixes.extend((0..40).map(|i| fix(base, 20 + i, away, None)));
    fixes.push(fix(base, 70, 52.5, None));
    publish(&client, "rex", fixes).await;

    let alerts = alerts_until(&api, &ada, "?tracker=rex", 1).await;
    assert_eq!(alerts[0]["kind"], "geofence_exit", "{alerts:?}");
    assert_eq!(alerts[0]["geofence_id"], fence["id"]);
    let exit_at: DateTime<Utc> = alerts[0]["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(exit_at, base + TimeDelta::seconds(40));
    app.stop().await;
}

#[tokio::test]
async fn a_geofence_exit_fires_once_after_the_dwell_and_a_late_batch_of_old_fixes_fires_nothing() {
    let app = spawn_app_with(|c| {
        c.alerts.geofence_dwell_secs = 20;
        c.alerts.geofence_dwell_fixes = 2;
    })
    .await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    let (status, fence) = api
        .post(
            "/geofences",
            Some(&ada),
            json!({"name": "home", "shape": home_circle(), "trackers": ["rex"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fence}");

    // The feed hears the alert too.
    let mut ws = live::open(&app, &ada, None).await;

    let base = whole_seconds_ago(120);
    let client = device(&app, &rex).await;
    let away = 52.52; // about 2 km north
    // Home, then out for 10 s (two fixes: not yet), then out for 30 s: one exit, not three.
    publish(
        &client,
        "rex",
        vec![fix(base, 0, 52.5, None), fix(base, 10, 52.5, None)],
    )
    .await;
    publish(
        &client,
        "rex",
        vec![fix(base, 20, away, None), fix(base, 30, away, None)],
    )
    .await;
    publish(
        &client,
        "rex",
        vec![
            fix(base, 40, away, None),
            fix(base, 50, away, None),
            fix(base, 60, away, None),
        ],
    )
    .await;
    let alerts = alerts_until(&api, &ada, "?tracker=rex", 1).await;
    assert_eq!(alerts[0]["kind"], "geofence_exit");
    assert_eq!(alerts[0]["geofence_id"], fence["id"]);
    let exit_at: DateTime<Utc> = alerts[0]["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(exit_at, base + TimeDelta::seconds(40));

    // A late batch of old fixes, at home, from before the newest fix: no "enter" alert.
    publish(
        &client,
        "rex",
        (1..9).map(|i| fix(base, 30 + i, 52.5, None)).collect(),
    )
    .await;
    // Still away at 75 s: no second exit.
    publish(&client, "rex", vec![fix(base, 75, away, None)]).await;
    let t = base + TimeDelta::seconds(75);
    app.wait_for_count(
        &format!(
            "SELECT count(*) FROM alert_state WHERE last_fix_time >= '{}'",
            t.to_rfc3339()
        ),
        1,
    )
    .await;
    let (_, body) = api.get("/alerts?tracker=rex", &ada).await;
    assert_eq!(body["alerts"].as_array().unwrap().len(), 1, "{body}");

    let pushed = live::next(&mut ws, |m| m["type"] == "alert").await;
    assert_eq!(pushed["tracker"], "rex");
    assert_eq!(pushed["alert"]["id"], alerts[0]["id"]);
    app.stop().await;
}

#[tokio::test]
async fn battery_low_fires_once_per_crossing_and_only_the_owner_may_acknowledge_it() {
    let app = spawn_app_with(|c| c.alerts.battery_low_percent = 20).await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    api.register("cy@example.com").await;
    let cy = api.login("cy@example.com").await.0;
    api.post(
        "/trackers/rex/members",
        Some(&ada),
        json!({"email": "cy@example.com"}),
    )
    .await;
    let bob = owner(&api, "bob@example.com", &[]).await;

    let base = whole_seconds_ago(120);
    let client = device(&app, &rex).await;
    let levels = [40, 25, 20, 18, 15, 21, 24, 19, 30, 26, 12];
    let fixes = levels
        .iter()
        .enumerate()
        .map(|(i, b)| fix(base, i as i64, 52.5, Some(*b)))
        .collect();
    publish(&client, "rex", fixes).await;
    settle(&app, &client, "rex", base, 60).await;
    // 20 crosses; 21 and 24 do not re-arm; 19 does not fire again; 30 re-arms; 12 crosses again.
    let alerts = alerts_until(&api, &ada, "", 2).await;
    let kinds: Vec<_> = alerts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["battery_low", "battery_low"]);
    assert_eq!(alerts[0]["details"]["battery"], 20);
    assert_eq!(alerts[1]["details"]["battery"], 12);

    // The member sees them and cannot acknowledge; another user cannot even see them.
    let id = alerts[0]["id"].as_i64().unwrap();
    assert_eq!(alerts_until(&api, &cy, "?tracker=rex", 2).await.len(), 2);
    let (status, body) = api
        .post(&format!("/alerts/{id}/ack"), Some(&cy), json!({}))
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = api
        .post(&format!("/alerts/{id}/ack"), Some(&bob), json!({}))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = api.get("/alerts?tracker=rex", &bob).await;
    assert_error(status, &body, 404, "not_found");
    let (_, body) = api.get("/alerts", &bob).await;
    assert_eq!(body["alerts"], json!([]));

    let (status, acked) = api
        .post(&format!("/alerts/{id}/ack"), Some(&ada), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert!(acked["acked_at"].is_string(), "{acked}");
    // `since` pages: only the second is after the first.
    let (_, body) = api.get(&format!("/alerts?since={id}"), &ada).await;
    assert_eq!(body["alerts"].as_array().unwrap().len(), 1, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_tracker_silent_past_the_timeout_raises_offline_then_online_when_it_speaks_again() {
    let app = spawn_app_with(|c| c.alerts.offline_after_secs = 1).await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;

    let client = device(&app, &rex).await;
    publish(&client, "rex", vec![fix(Utc::now(), -1, 52.5, None)]).await;
    client.disconnect().await.unwrap();
    let alerts = alerts_until(&api, &ada, "?tracker=rex", 1).await;
    assert_eq!(alerts[0]["kind"], "offline");

    let client = device(&app, &rex).await;
    publish(&client, "rex", vec![fix(Utc::now(), -1, 52.5, None)]).await;
    let alerts = alerts_until(&api, &ada, "?tracker=rex", 2).await;
    assert_eq!(alerts[1]["kind"], "online");
    app.stop().await;
}
