//! The WebSocket live feed end to end: a whole app on port 0 with a fresh database, collars
//! publishing over real MQTT (rumqttc), owners watching over real WebSockets (tokio-tungstenite).

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::api::Api;
use common::{TestApp, connect, eventually, options, spawn_app, spawn_app_with};
use futures::{SinkExt, StreamExt};
use gateway::protocol::TrackerId;
use gateway::storage::trackers::{Provisioned, provision};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn collar(app: &TestApp, id: &str) -> Provisioned {
    provision(&app.app.pool, &TrackerId::parse(id).unwrap(), None)
        .await
        .unwrap()
}

/// Registers, logs in, and claims the given collars; returns the access token.
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

/// A connected collar whose event loop runs in the background.
async fn device(app: &TestApp, c: &Provisioned) -> AsyncClient {
    let opts = options(app.mqtt_port(), &c.tracker_id, &c.tracker_id, &c.secret);
    let (client, mut events) = connect(opts).await.unwrap();
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
}

/// The device time of fix `seq`: an hour ago plus `seq` seconds, so fixes are in order.
fn device_time(base: DateTime<Utc>, seq: u64) -> DateTime<Utc> {
    base + TimeDelta::seconds(seq as i64)
}

/// A time `ago` before now, in whole seconds (the protocol keeps milliseconds).
fn whole_seconds_ago(ago: TimeDelta) -> DateTime<Utc> {
    DateTime::from_timestamp((Utc::now() - ago).timestamp(), 0).unwrap()
}

fn fix(base: DateTime<Utc>, seq: u64) -> Value {
    json!({"ts": device_time(base, seq).to_rfc3339(), "lat": 52.5, "lon": 13.4, "acc": 5.0, "seq": seq})
}

async fn publish(client: &AsyncClient, tracker: &str, fixes: Vec<Value>) {
    let payload = if fixes.len() == 1 {
        fixes[0].to_string()
    } else {
        Value::Array(fixes).to_string()
    };
    client
        .publish(
            format!("trackers/{tracker}/telemetry"),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .unwrap();
}

fn live_url(app: &TestApp) -> String {
    format!("ws://{}/api/v1/live", app.app.http_addr)
}

async fn ws_connect(app: &TestApp, token: &str) -> Ws {
    let mut request = live_url(app).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next JSON message, skipping pings; fails the test after 10 s or on close.
async fn next_json(ws: &mut Ws) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("feed ended while waiting for a message: {other:?}"),
            }
        }
    })
    .await
    .expect("no message within 10 s")
}

/// The next message of type `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let message = next_json(ws).await;
        if message["type"] == kind {
            return message;
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// Subscribes and waits for the `subscribed` answer and one snapshot per tracker subscribed.
async fn subscribe(ws: &mut Ws, message: Value) -> Vec<Value> {
    send(ws, message).await;
    let subscribed = next_of(ws, "subscribed").await;
    let n = subscribed["trackers"].as_array().unwrap().len();
    let mut snapshots = Vec::new();
    for _ in 0..n {
        snapshots.push(next_of(ws, "snapshot").await);
    }
    snapshots
}

/// How the feed ended: the close code, or `None` if the connection just dropped.
async fn close_code(ws: &mut Ws, within: Duration) -> Option<CloseCode> {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the feed was not closed in time")
}

#[tokio::test]
async fn live_positions_arrive_in_order_and_a_user_never_receives_another_users_tracker() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let bello = collar(&app, "bello").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    let bob = owner(&api, "bob@example.com", &[&bello]).await;
    // Cy is a member of rex: she sees it too.
    api.register("cy@example.com").await;
    let cy = api.login("cy@example.com").await.0;
    let (status, body) = api
        .post(
            "/trackers/rex/members",
            Some(&ada),
            json!({"email": "cy@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut ada_ws = ws_connect(&app, &ada).await;
    // All of ada's trackers (only rex), then bob's tracker by name: refused like an unknown one.
    let snapshots = subscribe(&mut ada_ws, json!({"type": "subscribe"})).await;
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["tracker"], "rex");
    send(
        &mut ada_ws,
        json!({"type": "subscribe", "trackers": ["bello"]}),
    )
    .await;
    let refused = next_of(&mut ada_ws, "error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["tracker"].as_str()),
        (Some("not_found"), Some("bello"))
    );
    let mut cy_ws = ws_connect(&app, &cy).await;
    subscribe(
        &mut cy_ws,
        json!({"type": "subscribe", "trackers": ["rex"]}),
    )
    .await;
    let mut bob_ws = ws_connect(&app, &bob).await;
    subscribe(
        &mut bob_ws,
        json!({"type": "subscribe", "trackers": ["bello"]}),
    )
    .await;

    let base = whole_seconds_ago(TimeDelta::hours(1));
    let rex_device = device(&app, &rex).await;
    let bello_device = device(&app, &bello).await;
    for seq in 1..=20 {
        publish(&rex_device, "rex", vec![fix(base, seq)]).await;
        publish(&bello_device, "bello", vec![fix(base, seq)]).await;
    }

    for ws in [&mut ada_ws, &mut cy_ws] {
        for seq in 1..=20u64 {
            let position = next_of(ws, "position").await;
            assert_eq!(position["tracker"], "rex", "{position}");
            assert_eq!(position["fix"]["seq"], seq, "{position}");
            let ts: DateTime<Utc> = position["fix"]["ts"].as_str().unwrap().parse().unwrap();
            assert_eq!(ts, device_time(base, seq));
            assert_eq!(position["cursor"], format!("t{:x}", ts.timestamp_micros()));
        }
    }
    for seq in 1..=20u64 {
        let position = next_of(&mut bob_ws, "position").await;
        assert_eq!(
            (
                position["tracker"].as_str(),
                position["fix"]["seq"].as_u64()
            ),
            (Some("bello"), Some(seq))
        );
    }
    // Nothing about bello reached ada: after a marker fix on rex, the next position is that fix.
    publish(&rex_device, "rex", vec![fix(base, 21)]).await;
    let next = next_of(&mut ada_ws, "position").await;
    assert_eq!(
        (next["tracker"].as_str(), next["fix"]["seq"].as_u64()),
        (Some("rex"), Some(21))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_invalid_token_is_refused_before_the_upgrade_and_browsers_can_pass_it_in_the_query_or_subprotocol()
 {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;

    for url in [
        live_url(&app),
        format!("{}?token=not-a-token", live_url(&app)),
    ] {
        match tokio_tungstenite::connect_async(url).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
            }
            other => panic!("expected a 401 before the upgrade, got {other:?}"),
        }
    }

    let (mut by_query, _) =
        tokio_tungstenite::connect_async(format!("{}?token={ada}", live_url(&app)))
            .await
            .unwrap();
    assert_eq!(
        subscribe(&mut by_query, json!({"type": "subscribe"}))
            .await
            .len(),
        1
    );

    let mut request = live_url(&app).into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("pettracker.v1, bearer.{ada}").parse().unwrap(),
    );
    let (mut by_protocol, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "pettracker.v1"
    );
    assert_eq!(
        subscribe(&mut by_protocol, json!({"type": "subscribe"}))
            .await
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_reconnects_with_since_gets_exactly_the_positions_it_missed() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    let rex_device = device(&app, &rex).await;
    let base = whole_seconds_ago(TimeDelta::hours(1));

    let mut ws = ws_connect(&app, &ada).await;
    subscribe(&mut ws, json!({"type": "subscribe", "trackers": ["rex"]})).await;
    for seq in 1..=5 {
        publish(&rex_device, "rex", vec![fix(base, seq)]).await;
    }
    let mut last_cursor = String::new();
    for seq in 1..=5u64 {
        let position = next_of(&mut ws, "position").await;
        assert_eq!(position["fix"]["seq"], seq);
        last_cursor = position["cursor"].as_str().unwrap().to_owned();
    }
    ws.close(None).await.unwrap();

    // Missed while away: some already stored, the last ones perhaps still on their way.
    for seq in 6..=10 {
        publish(&rex_device, "rex", vec![fix(base, seq)]).await;
    }
    let mut ws = ws_connect(&app, &ada).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "trackers": ["rex"], "since": {"rex": last_cursor}}),
    )
    .await;
    publish(&rex_device, "rex", vec![fix(base, 11)]).await;
    let mut seqs = Vec::new();
    for _ in 6..=11 {
        let position = next_of(&mut ws, "position").await;
        seqs.push(position["fix"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (6..=11).collect::<Vec<_>>());
    // And nothing twice: the next position is a new one.
    publish(&rex_device, "rex", vec![fix(base, 12)]).await;
    assert_eq!(next_of(&mut ws, "position").await["fix"]["seq"], 12);

    // A cursor that is not one is refused with a message, not a dropped connection.
    send(
        &mut ws,
        json!({"type": "subscribe", "trackers": ["rex"], "since": {"rex": "yesterday"}}),
    )
    .await;
    let error = next_of(&mut ws, "error").await;
    assert_eq!(error["code"], "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_delays_neither_other_clients_nor_ingest() {
    let app = spawn_app_with(|c| {
        // Room for the whole burst: the collar has many messages in flight, so its 4,000 fixes
        // reach the bus within moments, faster than a debug-built test client reads them.
        c.live.queue_capacity = 8192;
        c.live.ping_interval_secs = 1;
        c.live.idle_timeout_secs = 3;
    })
    .await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;

    // The stalled client has a tiny receive buffer, so the server's writes back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.app.http_addr).await.unwrap();
    let mut request = live_url(&app).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {ada}").parse().unwrap());
    let (mut stalled, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    subscribe(
        &mut stalled,
        json!({"type": "subscribe", "trackers": ["rex"]}),
    )
    .await;
    let mut reader = ws_connect(&app, &ada).await;
    subscribe(
        &mut reader,
        json!({"type": "subscribe", "trackers": ["rex"]}),
    )
    .await;

    let rex_device = device(&app, &rex).await;
    let base = whole_seconds_ago(TimeDelta::hours(2));
    let total = 4000u64;
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < total as usize {
            let position = next_of(&mut reader, "position").await;
            seqs.push(position["fix"]["seq"].as_u64().unwrap());
        }
        seqs
    });
    // 40 fixes a message stay below rumqttc's default packet size limit.
    for chunk in 0..(total / 40) {
        let fixes = (1..=40).map(|i| fix(base, chunk * 40 + i)).collect();
        publish(&rex_device, "rex", fixes).await;
    }
    // Ingest went on: every fix is stored while the stalled client still reads nothing.
    app.wait_for_count("SELECT count(*) FROM positions", total as i64)
        .await;
    // The reading client got every one, in order.
    assert_eq!(reading.await.unwrap(), (1..=total).collect::<Vec<_>>());

    // The stalled client, which answers no ping, is closed as idle (4002), as too slow (4008),
    // or dropped when a write stays stuck: the server ends its session while it still reads
    // nothing (the reading client, done, has left too, so nobody is subscribed to rex)...
    eventually("the server ending the stalled client's session", || async {
        match app.app.live.as_ref().unwrap().subscribers("rex") {
            0 => Ok(()),
            n => Err(format!("{n} sessions subscribed to rex")),
        }
    })
    .await;
    // ...and when it reads again, its feed is over.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the stalled client's feed was never ended");
    assert!(
        matches!(ended, None | Some(CloseCode::Library(4002 | 4008))),
        "{ended:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_token_that_expires_while_connected_ends_the_session_with_close_code_4001() {
    let app = spawn_app_with(|c| c.auth.access_token_ttl_secs = 2).await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    let mut ws = ws_connect(&app, &ada).await;
    subscribe(&mut ws, json!({"type": "subscribe"})).await;
    let code = close_code(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Library(4001)));
    app.stop().await;
}

#[tokio::test]
async fn server_pings_keep_a_reading_client_connected_past_the_idle_timeout() {
    let app = spawn_app_with(|c| {
        c.live.ping_interval_secs = 1;
        c.live.idle_timeout_secs = 2;
    })
    .await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    let mut ws = ws_connect(&app, &ada).await;
    subscribe(&mut ws, json!({"type": "subscribe"})).await;
    // Reading answers the pings (tungstenite replies with pongs); count a few of them.
    let mut pings = 0;
    while pings < 4 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(_)))) => {}
            other => panic!("feed ended: {other:?}"),
        }
    }
    // Still open: a subscribe is answered.
    send(&mut ws, json!({"type": "subscribe", "trackers": ["rex"]})).await;
    next_of(&mut ws, "subscribed").await;
    app.stop().await;
}

/// Publishes `samples` fixes from one collar, one every 200 ms, and returns for each the time
/// from just before the MQTT publish to the WebSocket message arriving at a subscribed client.
/// The spacing matters: a collar has one QoS 1 message in flight until its batch is committed,
/// so faster publishing would measure the collar's own queue, not the live path.
async fn publish_to_websocket_latencies(
    app: &TestApp,
    collar: &Provisioned,
    token: &str,
    samples: u64,
    first_seq: u64,
) -> Vec<Duration> {
    let mut ws = ws_connect(app, token).await;
    subscribe(
        &mut ws,
        json!({"type": "subscribe", "trackers": [collar.tracker_id]}),
    )
    .await;
    let client = device(app, collar).await;
    let base = whole_seconds_ago(TimeDelta::hours(3));
    let receiving = tokio::spawn(async move {
        let mut arrived = Vec::new();
        while arrived.len() < samples as usize {
            let position = next_of(&mut ws, "position").await;
            arrived.push((
                position["fix"]["seq"].as_u64().unwrap(),
                std::time::Instant::now(),
            ));
        }
        arrived
    });
    let mut sent = std::collections::HashMap::new();
    for seq in first_seq..first_seq + samples {
        sent.insert(seq, std::time::Instant::now());
        publish(&client, &collar.tracker_id, vec![fix(base, seq)]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrived = receiving.await.unwrap();
    let mut latencies: Vec<Duration> = arrived
        .into_iter()
        .map(|(seq, at)| at.duration_since(sent[&seq]))
        .collect();
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Prints the publish-to-WebSocket latency, idle and under a background MQTT load. A measurement,
/// not a test: `cargo test --release --test live_feed -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn live_latency() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let watched = collar(&app, "watched").await;
    let ada = owner(&api, "ada@example.com", &[&watched]).await;

    let idle = publish_to_websocket_latencies(&app, &watched, &ada, 100, 1).await;

    // Background load: collars publishing batches of 10 fixes as fast as the pipeline takes them.
    let load_collars = 20;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaders = Vec::new();
    for i in 0..load_collars {
        let c = collar(&app, &format!("load-{i}")).await;
        let client = device(&app, &c).await;
        let stop = stop.clone();
        loaders.push(tokio::spawn(async move {
            let base = whole_seconds_ago(TimeDelta::hours(5));
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let fixes = (0..10)
                    .map(|k| {
                        let ts = base + TimeDelta::milliseconds(n * 10 + k);
                        json!({"ts": ts.to_rfc3339(), "lat": 52.5, "lon": 13.4, "seq": n * 10 + k})
                    })
                    .collect();
                publish(&client, &c.tracker_id, fixes).await;
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = app.count("SELECT count(*) FROM positions").await;
    let started = std::time::Instant::now();
    let loaded = publish_to_websocket_latencies(&app, &watched, &ada, 100, 1001).await;
    let took = started.elapsed();
    let stored = app.count("SELECT count(*) FROM positions").await - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        let _ = l.await;
    }
    for (name, l) in [("idle", &idle), ("under load", &loaded)] {
        println!(
            "publish-to-WebSocket latency {name}: n={} median={:?} p99={:?} max={:?}",
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.99),
            l[l.len() - 1]
        );
    }
    println!(
        "background load: {load_collars} collars, {stored} fixes stored in {took:?} ({:.0} fixes/s)",
        stored as f64 / took.as_secs_f64()
    );
    app.stop().await;
}
