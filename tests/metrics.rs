//! `/metrics` counts what ingest did, exactly. The recorder is global to a process, so these
//! tests have a test binary of their own: no other test's fixes move the counters they read.

mod common;

use common::{connect, fix_json, options, spawn_app, wait_for};
use rumqttc::{AsyncClient, EventLoop, Packet, QoS};

/// The value of one series (`name` with its labels, as exposed), 0 when it is not there yet.
async fn metric(app: &common::TestApp, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", app.app.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn publish(client: &AsyncClient, events: &mut EventLoop, payload: String) {
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    wait_for(events, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;
}

#[tokio::test]
async fn metrics_count_received_messages_stored_fixes_duplicates_and_dead_letters() {
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let series = [
        "pettracker_messages_received_total{topic=\"telemetry\"}",
        "pettracker_fixes_stored_total",
        "pettracker_fixes_duplicate_total",
        "pettracker_dead_letters_total",
    ];
    let mut before = Vec::new();
    for s in series {
        before.push(metric(&t, s).await);
    }
    let (client, mut events) = connect(options(t.mqtt_port(), "rex", "rex", &secret))
        .await
        .unwrap();
    // Two fixes, one of them again (a re-send the database keeps once), and a broken message.
    let again = fix_json(9, 3.1);
    publish(&client, &mut events, fix_json(8, 3.0)).await;
    publish(&client, &mut events, again.clone()).await;
    publish(&client, &mut events, again).await;
    publish(&client, &mut events, "{\"lat\": oops".to_owned()).await;
    // Each PUBACK came after its batch was committed, and the counters moved before that.
    let mut moved = Vec::new();
    for (s, before) in series.iter().zip(before) {
        moved.push(metric(&t, s).await - before);
    }
    assert_eq!(moved, [4.0, 2.0, 1.0, 1.0], "{series:?}");
    t.stop().await;
}
