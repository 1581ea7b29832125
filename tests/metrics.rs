//! `/metrics` counts what ingest did, exactly. The recorder is global to a process, so these
//! tests have a test binary of their own: no other test's fixes move the counters they read.

mod common;

use common::{connect, fix_json, options, publish_acked, spawn_app};

/// The tests of this binary run on parallel threads but read the same global counters: each
/// holds this lock for its whole run, so no other test's fixes move the counters it reads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

#[tokio::test]
async fn metrics_count_received_messages_stored_fixes_duplicates_rewritten_batches_and_dead_letters()
 {
    let _serial = SERIAL.lock().await;
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let series = [
        "pettracker_messages_received_total{topic=\"telemetry\"}",
        "pettracker_fixes_stored_total",
        "pettracker_fixes_duplicate_total",
        "pettracker_dead_letters_total",
        "pettracker_batches_rewritten_total",
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
    publish_acked(
        &client,
        &mut events,
        "trackers/rex/telemetry",
        fix_json(8, 3.0),
    )
    .await;
    publish_acked(
        &client,
        &mut events,
        "trackers/rex/telemetry",
        again.clone(),
    )
    .await;
    publish_acked(&client, &mut events, "trackers/rex/telemetry", again).await;
    publish_acked(
        &client,
        &mut events,
        "trackers/rex/telemetry",
        "{\"lat\": oops".to_owned(),
    )
    .await;
    // Each PUBACK came after its batch was committed, and the counters moved before that. The
    // re-send's batch met its stored fix in the COPY and was written again.
    let mut moved = Vec::new();
    for (s, before) in series.iter().zip(before) {
        moved.push(metric(&t, s).await - before);
    }
    assert_eq!(moved, [4.0, 2.0, 1.0, 1.0, 1.0], "{series:?}");
    t.stop().await;
}

#[tokio::test]
async fn every_stage_of_a_fix_on_its_way_to_the_puback_is_timed() {
    let _serial = SERIAL.lock().await;
    let t = spawn_app().await;
    let secret = t.provision("fido").await;
    let stages = [
        "decode_queue",
        "batch",
        "writer_wait",
        "statement",
        "commit",
        "ack",
    ];
    let mut series: Vec<String> = stages
        .iter()
        .map(|s| format!("pettracker_ingest_stage_seconds_count{{stage=\"{s}\"}}"))
        .collect();
    series.push("pettracker_puback_wait_seconds_count".to_owned());
    let mut before = Vec::new();
    for s in &series {
        before.push(metric(&t, s).await);
    }
    let (client, mut events) = connect(options(t.mqtt_port(), "fido", "fido", &secret))
        .await
        .unwrap();
    publish_acked(
        &client,
        &mut events,
        "trackers/fido/telemetry",
        fix_json(8, 3.0),
    )
    .await;
    // The ack stage is recorded when the publish hook wakes, just before the broker sends the
    // PUBACK the client saw: it is there by now, as is every stage before it.
    let mut not_moved = Vec::new();
    for (s, before) in series.iter().zip(before) {
        if metric(&t, s).await <= before {
            not_moved.push(s.clone());
        }
    }
    assert!(not_moved.is_empty(), "stages not timed: {not_moved:?}");
    t.stop().await;
}
