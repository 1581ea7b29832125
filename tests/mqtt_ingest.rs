//! Collars over real MQTT into a whole app: credentials, topic rules, storage, acks, revocation.

mod common;

use std::time::Duration;

use common::{connect, fix_json, options, publish_acked, spawn_app, wait_for};
use rumqttc::{ConnectReturnCode, ConnectionError, Event, Packet, QoS};

#[tokio::test]
async fn a_collar_publishing_with_its_credentials_is_stored_and_acknowledged() {
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let (client, mut events) = connect(options(t.mqtt_port(), "rex", "rex", &secret))
        .await
        .unwrap();
    client
        .subscribe("trackers/rex/ack", QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    publish_acked(
        &client,
        &mut events,
        "trackers/rex/telemetry",
        fix_json(41, 52.52),
    )
    .await;
    // PUBACK means durably accepted: the row is there without waiting.
    assert_eq!(
        t.count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'")
            .await,
        1
    );

    let ack: serde_json::Value = wait_for(&mut events, |p| match p {
        Packet::Publish(p) if p.topic == "trackers/rex/ack" => {
            serde_json::from_slice(&p.payload).ok()
        }
        _ => None,
    })
    .await;
    assert_eq!(ack["seq"], 41);
    let row = t
        .app
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT p.lat, p.accuracy, p.battery, s.online FROM positions p JOIN tracker_status s USING (tracker_id)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 52.52);
    assert_eq!(row.get::<_, f32>(1), 4.5);
    assert_eq!(row.get::<_, i16>(2), 77);
    assert!(row.get::<_, bool>(3), "connected collar is online");
    t.stop().await;
}

#[tokio::test]
async fn wrong_unknown_and_mismatched_credentials_are_refused() {
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let port = t.mqtt_port();
    for (client_id, user, password) in [
        ("rex", "rex", "not-the-secret"),
        ("ghost", "ghost", secret.as_str()),
        ("luna", "rex", secret.as_str()),
    ] {
        let refused = connect(options(port, client_id, user, password))
            .await
            .err();
        assert!(
            matches!(
                refused,
                Some(ConnectionError::ConnectionRefused(
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
                ))
            ),
            "{client_id}/{user}: {refused:?}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn a_collar_cannot_publish_for_another_tracker() {
    let t = spawn_app().await;
    let rex = t.provision("rex").await;
    t.provision("luna").await;
    let (client, mut events) = connect(options(t.mqtt_port(), "rex", "rex", &rex))
        .await
        .unwrap();
    client
        .publish(
            "trackers/luna/telemetry",
            QoS::AtLeastOnce,
            false,
            fix_json(1, 10.0),
        )
        .await
        .unwrap();
    // The broker refuses it without a PUBACK and closes the connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return "acknowledged",
                Ok(_) => {}
                Err(_) => return "closed",
            }
        }
    })
    .await;
    assert_eq!(ended, Ok("closed"), "the refused publish's connection");
    // Rex's own fix, sent after it, is stored; nothing is for luna.
    let (client, mut events) = connect(options(t.mqtt_port(), "rex", "rex", &rex))
        .await
        .unwrap();
    publish_acked(
        &client,
        &mut events,
        "trackers/rex/telemetry",
        fix_json(2, 11.0),
    )
    .await;
    assert_eq!(
        t.count("SELECT count(*) FROM positions WHERE tracker_id IN ('rex', 'luna')")
            .await,
        1
    );
    assert_eq!(
        t.count("SELECT count(*) FROM positions WHERE tracker_id = 'luna'")
            .await,
        0
    );
    t.stop().await;
}

#[tokio::test]
async fn mosquitto_pub_at_qos_0_and_1_single_and_batched_is_stored_once_each() {
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let port = t.mqtt_port().to_string();
    let batch = format!("[{},{}]", fix_json(3, 52.3), fix_json(4, 52.4));
    for (qos, payload) in [
        ("0", fix_json(1, 52.1)),
        ("1", fix_json(2, 52.2)),
        ("1", batch.clone()),
        ("1", batch),
    ] {
        // tokio's Command: a blocking wait would stall the test runtime, which also runs the broker.
        let out = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-i",
                "rex",
                "-u",
                "rex",
                "-P",
                &secret,
            ])
            .args(["-q", qos, "-t", "trackers/rex/telemetry", "-m", &payload])
            .output()
            .await
            .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    t.wait_for_count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'", 4)
        .await;
    t.stop().await;
}

#[tokio::test]
async fn a_malformed_payload_is_dead_lettered_and_the_connection_keeps_working() {
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let (client, mut events) = connect(options(t.mqtt_port(), "rex", "rex", &secret))
        .await
        .unwrap();
    client
        .publish(
            "trackers/rex/telemetry",
            QoS::AtLeastOnce,
            false,
            "{\"lat\": oops",
        )
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    publish_acked(
        &client,
        &mut events,
        "trackers/rex/telemetry",
        fix_json(5, 1.0),
    )
    .await;
    assert_eq!(
        t.count("SELECT count(*) FROM dead_letters WHERE tracker_id = 'rex'")
            .await,
        1
    );
    assert_eq!(
        t.count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'")
            .await,
        1
    );
    t.stop().await;
}

#[tokio::test]
async fn a_revoked_collar_is_disconnected_and_cannot_reconnect() {
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let opts = options(t.mqtt_port(), "rex", "rex", &secret);
    let (_client, mut events) = connect(opts.clone()).await.unwrap();
    gateway::storage::trackers::revoke(
        &t.app.pool,
        &gateway::protocol::TrackerId::parse("rex").unwrap(),
    )
    .await
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if events.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "revoked collar still connected after 10 s");
    assert!(connect(opts).await.is_err());
    t.wait_for_count(
        "SELECT count(*) FROM tracker_status WHERE tracker_id = 'rex' AND NOT online",
        1,
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn cbor_fixes_single_and_batched_at_qos_0_and_1_are_stored_with_their_values() {
    use gateway::protocol::{Encoding, RawFix, encode_telemetry};
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let (client, mut events) = connect(options(t.mqtt_port(), "rex", "rex", &secret))
        .await
        .unwrap();
    let base = chrono::Utc::now() - chrono::TimeDelta::minutes(5);
    let fix = |seq: u64, lat: f64| RawFix {
        device_time: base + chrono::TimeDelta::seconds(seq as i64),
        lat,
        lon: 13.405,
        altitude: Some(34.5),
        accuracy: Some(3.0),
        speed: Some(1.5),
        heading: Some(90.0),
        satellites: Some(8),
        battery: Some(66),
        seq: Some(seq),
    };
    let single = encode_telemetry(&[fix(1, 52.1)], Encoding::Cbor);
    let batch = encode_telemetry(&[fix(2, 52.2), fix(3, 52.3)], Encoding::Cbor);
    assert_ne!(single.first(), Some(&b'{'), "not CBOR");
    client
        .publish("trackers/rex/telemetry", QoS::AtMostOnce, false, single)
        .await
        .unwrap();
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, batch)
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    t.wait_for_count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'", 3)
        .await;
    let row = t
        .app
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT lat, altitude, accuracy, speed, heading, satellites, battery, seq
             FROM positions WHERE tracker_id = 'rex' AND seq = 3",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 52.3);
    assert_eq!(row.get::<_, Option<f32>>(1), Some(34.5));
    assert_eq!(row.get::<_, Option<f32>>(2), Some(3.0));
    assert_eq!(row.get::<_, Option<f32>>(3), Some(1.5));
    assert_eq!(row.get::<_, Option<f32>>(4), Some(90.0));
    assert_eq!(row.get::<_, Option<i16>>(5), Some(8));
    assert_eq!(row.get::<_, Option<i16>>(6), Some(66));
    assert_eq!(row.get::<_, Option<i64>>(7), Some(3));
    t.stop().await;
}

#[tokio::test]
async fn an_oversize_payload_is_dead_lettered_with_its_size_and_the_collar_stays_connected() {
    let t = spawn_app().await;
    let secret = t.provision("rex").await;
    let mut opts = options(t.mqtt_port(), "rex", "rex", &secret);
    // rumqttc's own limit is 10 KiB; the broker's (mqtt.max_packet_size) is 512 KiB.
    opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut events) = connect(opts).await.unwrap();
    // Larger than the protocol's limit, smaller than the MQTT packet limit: it arrives, and is refused.
    let big = vec![b' '; gateway::protocol::MAX_PAYLOAD_BYTES + 1];
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, big)
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    publish_acked(
        &client,
        &mut events,
        "trackers/rex/telemetry",
        fix_json(7, 52.7),
    )
    .await;
    t.wait_for_count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'", 1)
        .await;
    let reason: String = t
        .app
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT reason FROM dead_letters WHERE tracker_id = 'rex'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        reason.contains(&gateway::protocol::MAX_PAYLOAD_BYTES.to_string()),
        "{reason}"
    );
    t.stop().await;
}

/// Ingest has connections of its own: an API whose every connection is taken (long exports,
/// a burst of requests) must not delay a collar's authentication or its acknowledgement.
#[tokio::test]
async fn a_collar_is_authenticated_and_acknowledged_while_every_api_connection_is_held() {
    let t = common::spawn_app_with(|c| {
        c.database.api_pool_size = 2;
        c.database.ingest_pool_size = 3;
    })
    .await;
    let secret = t.provision("rex").await;
    // The API pool, all of it, held for the whole test.
    let held = [
        t.app.pool.get().await.unwrap(),
        t.app.pool.get().await.unwrap(),
    ];
    let status = t.app.pool.status();
    assert_eq!((status.size, status.available), (2, 0));

    let (client, mut events) = connect(options(t.mqtt_port(), "rex", "rex", &secret))
        .await
        .unwrap();
    client
        .publish(
            "trackers/rex/telemetry",
            QoS::AtLeastOnce,
            false,
            fix_json(7, 52.52),
        )
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    assert_eq!(
        held[0]
            .query_one(
                "SELECT count(*) FROM positions WHERE tracker_id = 'rex'",
                &[]
            )
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    drop(held);
    t.stop().await;
}
