//! The embedded broker on its own: real MQTT clients (rumqttc) against a real listener, with a
//! recording `DeviceHooks` standing in for the ingest pipeline (the end-to-end path with the
//! database is in tests/mqtt_ingest.rs at the workspace root).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway::broker::{self, BrokerConfig, BrokerError, BrokerHandle, DeviceHooks, DevicePublish};
use gateway::broker::{Accepting, Authentication, Refused, TlsListener};
use gateway::protocol::TrackerId;
use gateway::testing::{closed_by_server, eventually};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

const SECRET: &str = "s3cret-for-tests";

/// Records what the broker tells the gateway; trackers named `bad-*` have no valid secret.
#[derive(Default)]
struct Recorder {
    publishes: Mutex<Vec<DevicePublish>>,
    events: Mutex<Vec<String>>,
    /// When set, `accept_publish` refuses, as the pipeline does when it cannot store.
    refuse: AtomicBool,
    /// How long `accept_publish` takes, to prove PUBACK waits for it.
    delay: Mutex<Duration>,
    /// How long `disconnected` takes (the pipeline's takes a database round trip).
    disconnect_delay: Mutex<Duration>,
    /// When set, each publish is recorded as handed in at once and counts as stored only when
    /// the test releases a permit: the pipeline with its database paused.
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

#[async_trait::async_trait]
impl DeviceHooks for Recorder {
    async fn authenticate(&self, tracker: &TrackerId, secret: &[u8]) -> Authentication {
        if !tracker.as_str().starts_with("bad") && secret == SECRET.as_bytes() {
            Authentication::Accepted
        } else {
            Authentication::Refused
        }
    }

    async fn accept_publish(&self, publish: DevicePublish) -> Result<(), Refused> {
        if self.gate.lock().await.is_some() {
            return self.submit_publish(publish).await?.await;
        }
        let delay = *self.delay.lock().await;
        tokio::time::sleep(delay).await;
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Refused("spool full".into()));
        }
        self.events
            .lock()
            .await
            .push(format!("accepted {}", publish.topic));
        self.publishes.lock().await.push(publish);
        Ok(())
    }

    async fn submit_publish(&self, publish: DevicePublish) -> Result<Accepting, Refused> {
        let gate = self.gate.lock().await.clone();
        let Some(gate) = gate else {
            let accepted = self.accept_publish(publish).await;
            return Ok(Box::pin(std::future::ready(accepted)));
        };
        let payload = String::from_utf8_lossy(&publish.payload).into_owned();
        self.events
            .lock()
            .await
            .push(format!("submitted {payload}"));
        Ok(Box::pin(async move {
            match gate.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    Ok(())
                }
                Err(_) => Err(Refused("closed".into())),
            }
        }))
    }

    async fn connected(&self, tracker: &TrackerId) {
        self.events
            .lock()
            .await
            .push(format!("connected {tracker}"));
    }

    async fn disconnected(&self, tracker: &TrackerId) {
        let delay = *self.disconnect_delay.lock().await;
        // Only when asked: even a zero sleep yields, and would record this event after a
        // takeover's "connected" that the broker reported after it.
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.events
            .lock()
            .await
            .push(format!("disconnected {tracker}"));
    }
}

impl Recorder {
    async fn events(&self) -> Vec<String> {
        self.events.lock().await.clone()
    }

    /// Waits until `pred` holds for the recorded events (hooks run on the broker's tasks).
    async fn wait_events(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let pred = &pred;
        eventually(what, || async move {
            let ev = self.events().await;
            if pred(&ev) {
                Ok(ev)
            } else {
                Err(format!("{ev:?}"))
            }
        })
        .await
    }
}

fn config() -> BrokerConfig {
    BrokerConfig {
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        tls: None,
        ws: None,
        open: false,
        max_packet_size: 64 * 1024,
        max_connections: 1000,
        ..BrokerConfig::default()
    }
}

async fn start(config: BrokerConfig) -> (BrokerHandle, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let handle = broker::start(config, rec.clone()).await.unwrap();
    (handle, rec)
}

fn options(handle: &BrokerHandle, id: &str, secret: Option<&str>) -> MqttOptions {
    let port = handle.tcp_addr().unwrap().port();
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    if let Some(secret) = secret {
        o.set_credentials(id, secret);
    }
    o
}

/// Polls `events` until `pick` returns something; a connection error ends the wait with `Err`.
async fn next<T>(
    events: &mut EventLoop,
    mut pick: impl FnMut(&Packet) -> Option<T>,
) -> Result<T, String> {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(p)) => {
                    if let Some(v) = pick(&p) {
                        return Ok(v);
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

async fn connect(o: MqttOptions) -> Result<(AsyncClient, EventLoop), String> {
    let (client, mut events) = AsyncClient::new(o, 16);
    let code = next(&mut events, |p| match p {
        Packet::ConnAck(a) => Some(a.code),
        _ => None,
    })
    .await?;
    if code == ConnectReturnCode::Success {
        Ok((client, events))
    } else {
        Err(format!("{code:?}"))
    }
}

/// Publishes `{}` at QoS 1 on `topic` and waits for its PUBACK; `Err` if the connection ended
/// (or nothing came) instead.
async fn publish_qos1(
    client: &AsyncClient,
    events: &mut EventLoop,
    topic: &str,
) -> Result<(), String> {
    client
        .publish(topic, QoS::AtLeastOnce, false, "{}")
        .await
        .map_err(|e| e.to_string())?;
    next(events, |p| matches!(p, Packet::PubAck(_)).then_some(())).await
}

fn id(s: &str) -> TrackerId {
    TrackerId::parse(s).unwrap()
}

/// A QoS 1 publish's outcome was no PUBACK and the broker closing the connection (not a wait
/// that ran out while the connection stayed open).
fn assert_refused_and_closed(outcome: Result<(), String>, what: &str) {
    match outcome {
        Ok(()) => panic!("{what} was acknowledged"),
        Err(e) if e == "timed out" => panic!("{what}: no PUBACK, but the connection stayed open"),
        Err(_closed) => {}
    }
}

#[tokio::test]
async fn a_collar_with_its_own_credentials_connects_and_the_gateway_is_told() {
    let (handle, rec) = start(config()).await;
    let _c = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    rec.wait_events("connected", |e| e.contains(&"connected rex".to_string()))
        .await;
    assert_eq!(handle.connected_count(), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn wrong_unknown_or_missing_credentials_are_refused_at_connack() {
    let (handle, rec) = start(config()).await;
    let wrong = connect(options(&handle, "rex", Some("nope"))).await;
    assert!(wrong.is_err(), "wrong secret connected");
    let unknown = connect(options(&handle, "bad-collar", Some(SECRET))).await;
    assert!(unknown.is_err(), "unknown tracker connected");
    let anonymous = connect(options(&handle, "rex", None)).await;
    assert!(anonymous.is_err(), "anonymous client connected");
    // The username must be the client id: a valid secret for another name is not enough.
    let mut o = options(&handle, "rex", None);
    o.set_credentials("fido", SECRET);
    assert!(connect(o).await.is_err(), "username != client id connected");
    let bad_id = connect(options(&handle, "no/slashes", Some(SECRET))).await;
    assert!(bad_id.is_err(), "invalid tracker id connected");
    assert!(rec.events().await.is_empty(), "{:?}", rec.events().await);
    handle.shutdown().await;
}

#[tokio::test]
async fn puback_is_sent_only_after_the_gateway_accepted_the_publish() {
    let (handle, rec) = start(config()).await;
    *rec.delay.lock().await = Duration::from_millis(300);
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    next(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .unwrap();
    // The hook had already recorded the message when the PUBACK arrived, although it slept first.
    let got = rec.publishes.lock().await.clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tracker, id("rex"));
    assert_eq!(got[0].topic, "trackers/rex/telemetry");
    assert_eq!(got[0].payload, Bytes::from_static(b"{}"));
    assert_eq!(got[0].qos, 1);
    assert!(!got[0].last_will);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_publish_the_gateway_refuses_gets_no_puback_and_the_connection_is_closed() {
    let (handle, rec) = start(config()).await;
    rec.refuse.store(true, Ordering::SeqCst);
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    let outcome = publish_qos1(&client, &mut events, "trackers/rex/telemetry").await;
    // A PUBACK would make the collar drop a fix that was not stored; the close makes it re-send.
    assert_refused_and_closed(outcome, "a refused publish");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_collar_cannot_publish_on_another_trackers_topic() {
    let (handle, rec) = start(config()).await;
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    let outcome = publish_qos1(&client, &mut events, "trackers/fido/telemetry").await;
    assert_refused_and_closed(outcome, "publish as another tracker");
    // Nor on a downlink topic of its own: only the server sends acks and commands.
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    let outcome = publish_qos1(&client, &mut events, "trackers/rex/commands").await;
    assert_refused_and_closed(outcome, "publish on a downlink topic");
    assert!(rec.publishes.lock().await.is_empty());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_collar_may_subscribe_only_to_its_own_downlink_topics() {
    let (handle, _rec) = start(config()).await;
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    for (filter, allowed) in [
        ("trackers/rex/commands", true),
        ("trackers/rex/ack", true),
        ("trackers/fido/commands", false),
        ("trackers/#", false),
        ("trackers/+/telemetry", false),
        ("trackers/rex/#", false),
        ("$share/g/trackers/rex/ack", false),
    ] {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let codes = next(&mut events, |p| match p {
            Packet::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("{filter}: {e}"));
        let granted = matches!(codes[..], [SubscribeReasonCode::Success(_)]);
        assert_eq!(granted, allowed, "{filter}: {codes:?}");
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn the_server_publishes_to_a_subscribed_collar() {
    let (handle, _rec) = start(config()).await;
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    client
        .subscribe("trackers/rex/commands", QoS::AtLeastOnce)
        .await
        .unwrap();
    next(&mut events, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await
    .unwrap();
    handle
        .publish(
            "trackers/rex/commands",
            Bytes::from_static(b"{\"id\":1}"),
            1,
        )
        .await
        .unwrap();
    let payload = next(&mut events, |p| match p {
        Packet::Publish(p) => Some(p.payload.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(&payload[..], b"{\"id\":1}");
    handle.shutdown().await;
}

/// Options for rex with a last will on `topic`.
fn with_will(handle: &BrokerHandle, topic: &str) -> MqttOptions {
    let mut o = options(handle, "rex", Some(SECRET));
    o.set_last_will(LastWill::new(
        topic,
        "{\"online\":false}",
        QoS::AtLeastOnce,
        false,
    ));
    o
}

/// Rex connects with a will on its own topic and vanishes; waits until the gateway has the will.
async fn vanish_with_a_will(handle: &BrokerHandle, rec: &Recorder) {
    let (client, events) = connect(with_will(handle, "trackers/rex/online"))
        .await
        .unwrap();
    // Dropping the event loop closes the socket without DISCONNECT: an ungraceful end.
    drop(events);
    drop(client);
    rec.wait_events("the will", |e| {
        e.contains(&"accepted trackers/rex/online".to_string())
    })
    .await;
}

#[tokio::test]
async fn a_last_will_reaches_the_gateway_marked_as_such_when_a_collar_vanishes() {
    let (handle, rec) = start(config()).await;
    vanish_with_a_will(&handle, &rec).await;
    let wills: Vec<_> = rec
        .publishes
        .lock()
        .await
        .iter()
        .filter(|p| p.last_will)
        .cloned()
        .collect();
    assert_eq!(wills.len(), 1);
    assert_eq!(wills[0].tracker, id("rex"));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_last_will_on_another_trackers_topic_is_refused_at_connect() {
    let (handle, rec) = start(config()).await;
    assert!(
        connect(with_will(&handle, "trackers/fido/online"))
            .await
            .is_err(),
        "a will as another tracker was accepted"
    );
    // A collar with a will on its own topic vanishes after it: its will is the only one the
    // gateway gets.
    vanish_with_a_will(&handle, &rec).await;
    let topics: Vec<String> = rec
        .publishes
        .lock()
        .await
        .iter()
        .map(|p| p.topic.clone())
        .collect();
    assert_eq!(topics, ["trackers/rex/online"]);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_collar_that_reconnects_stays_online_when_its_old_session_ends() {
    let (handle, rec) = start(config()).await;
    let (_c1, mut e1) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    let (_c2, _e2) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    // The first connection is taken over and closed by the broker; the gateway hears of the
    // second session, and the broker counts the first one's end.
    let _ = next(&mut e1, |_| None::<()>).await;
    rec.wait_events("the second connect", |e| {
        e.iter().filter(|e| *e == "connected rex").count() == 2
    })
    .await;
    eventually("one connection after the takeover", || async {
        match handle.connected_count() {
            1 => Ok(()),
            n => Err(format!("{n} connections")),
        }
    })
    .await;
    let events = rec.events().await;
    let last = events
        .iter()
        .rev()
        .find(|e| e.ends_with(" rex"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        last, "connected rex",
        "the old session's end marked a connected collar offline: {events:?}"
    );
    assert_eq!(handle.connected_count(), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_kicked_collar_is_disconnected_and_the_gateway_is_told() {
    let (handle, rec) = start(config()).await;
    let (_c, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    rec.wait_events("connected", |e| e.contains(&"connected rex".to_string()))
        .await;
    handle.kick(&id("rex")).await;
    assert!(next(&mut events, |_| None::<()>).await.is_err());
    rec.wait_events("disconnected", |e| {
        e.contains(&"disconnected rex".to_string())
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_setting_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config();
    c.tcp = Some(taken.local_addr().unwrap());
    let rec = Arc::new(Recorder::default());
    match broker::start(c, rec).await {
        Err(err @ BrokerError::Listen { setting, .. }) => {
            assert_eq!(setting, "mqtt.addr");
            let text = err.to_string();
            assert!(
                text.contains(&taken.local_addr().unwrap().port().to_string()),
                "{text}"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("started on a port in use"),
    }
}

#[tokio::test]
async fn after_shutdown_the_port_is_closed() {
    let (handle, _rec) = start(config()).await;
    let addr = handle.tcp_addr().unwrap();
    let (_c, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    handle.shutdown().await;
    assert!(next(&mut events, |_| None::<()>).await.is_err());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn open_mode_lets_any_client_in_and_hands_over_its_publishes() {
    let mut c = config();
    c.open = true;
    let (handle, rec) = start(c).await;
    let (client, mut events) = connect(options(&handle, "any-client", None)).await.unwrap();
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    next(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .unwrap();
    let got = rec.publishes.lock().await.clone();
    assert_eq!(got.len(), 1);
    // In open mode the tracker is taken from the topic.
    assert_eq!(got[0].tracker, id("rex"));
    handle.shutdown().await;
}

#[tokio::test]
async fn collars_connect_over_tls() {
    let dir = std::env::temp_dir().join(format!("pettracker-broker-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let mut c = config();
    c.tls = Some(TlsListener {
        addr: "127.0.0.1:0".parse().unwrap(),
        cert: cert_path,
        key: key_path,
    });
    let (handle, rec) = start(c).await;
    let port = handle.tls_addr().unwrap().port();
    let mut o = MqttOptions::new("rex", "localhost", port);
    o.set_credentials("rex", SECRET);
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: cert.cert.pem().into_bytes(),
        alpn: None,
        client_auth: None,
    }));
    let (client, mut events) = connect(o).await.unwrap();
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    next(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(rec.publishes.lock().await.len(), 1);
    // The same credentials rules apply on this listener.
    let mut o = MqttOptions::new("rex", "localhost", port);
    o.set_credentials("rex", "wrong");
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: cert.cert.pem().into_bytes(),
        alpn: None,
        client_auth: None,
    }));
    assert!(connect(o).await.is_err());
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn collars_connect_over_websocket() {
    let mut c = config();
    c.ws = Some("127.0.0.1:0".parse().unwrap());
    let (handle, rec) = start(c).await;
    let port = handle.ws_addr().unwrap().port();
    let mut o = MqttOptions::new("rex", format!("ws://127.0.0.1:{port}/mqtt"), port);
    o.set_credentials("rex", SECRET);
    o.set_transport(Transport::Ws);
    let (client, mut events) = connect(o).await.unwrap();
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    next(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(rec.publishes.lock().await.len(), 1);
    handle.shutdown().await;
}

// Break-it checks (issue 15): what a hostile or merely unlucky client can do to the listener.

/// Polls `cond` until it holds (the broker's tasks update what it reads), for up to 10 s.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Where the idle sockets of these tests come from: a loopback address other than the collars'
/// 127.0.0.1, so the per-address handshake limit applies to them alone.
const IDLE_HOST: [u8; 4] = [127, 0, 0, 2];

async fn connect_from(source: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// An MQTT 3.1.1 CONNECT for client id "rex" with the given connect flags, no credentials.
fn raw_connect(flags: u8) -> Vec<u8> {
    vec![
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 3, b'r', b'e', b'x',
    ]
}

#[tokio::test]
async fn sockets_that_send_nothing_or_part_of_a_connect_are_closed_while_collars_get_in() {
    let mut c = config();
    c.handshake_timeout = Duration::from_secs(1);
    let (handle, _rec) = start(c).await;
    let addr = handle.tcp_addr().unwrap();
    let mut idle = Vec::new();
    for i in 0..200 {
        // From another address than the collar's, whose handshakes they would otherwise crowd.
        let mut socket = connect_from(IDLE_HOST, addr).await;
        if i % 2 == 1 {
            // The start of a CONNECT: fixed header, then the protocol name's first bytes.
            socket.write_all(&raw_connect(0x02)[..5]).await.unwrap();
        }
        idle.push(socket);
    }
    // While they are open, a collar connects and is served.
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    publish_qos1(&client, &mut events, "trackers/rex/telemetry")
        .await
        .unwrap();
    for (i, socket) in idle.iter_mut().enumerate() {
        closed_by_server(socket)
            .await
            .unwrap_or_else(|e| panic!("idle socket {i}: {e}"));
    }
    wait_until("only the collar's socket is open", || {
        handle.open_sockets() == 1
    })
    .await;
    publish_qos1(&client, &mut events, "trackers/rex/telemetry")
        .await
        .unwrap();
    handle.shutdown().await;
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_handshakes() {
    let mut c = config();
    c.max_handshakes_per_ip = Some(10);
    c.handshake_timeout = Duration::from_secs(60);
    let (handle, _rec) = start(c).await;
    let addr = handle.tcp_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..30 {
        let mut socket = connect_from(IDLE_HOST, addr).await;
        let closed_tx = closed_tx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            // Holds the socket open until the server closes it.
            let _ = socket.read(&mut buf).await;
            let _ = closed_tx.send(());
        });
    }
    // Twenty are closed at once, long before the minute-long handshake timeout.
    for closed in 0..20 {
        tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {closed} sockets past the per-address limit closed"));
    }
    wait_until("ten handshakes are held", || handle.open_sockets() == 10).await;
    // Collars from other addresses are not held up by them.
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    publish_qos1(&client, &mut events, "trackers/rex/telemetry")
        .await
        .unwrap();
    handle.shutdown().await;
}

#[tokio::test]
async fn the_connection_cap_holds_for_collars_and_idle_sockets_alike() {
    let mut c = config();
    c.max_connections = 5;
    let (handle, _rec) = start(c).await;
    let mut collars = Vec::new();
    for i in 0..5 {
        let id = format!("collar-{i}");
        collars.push(connect(options(&handle, &id, Some(SECRET))).await.unwrap());
    }
    assert!(
        connect(options(&handle, "collar-5", Some(SECRET)))
            .await
            .is_err(),
        "a sixth collar connected with mqtt.max_connections = 5"
    );
    let mut idle = TcpStream::connect(handle.tcp_addr().unwrap())
        .await
        .unwrap();
    closed_by_server(&mut idle).await.unwrap();
    assert_eq!(handle.connected_count(), 5);
    // A slot frees up when a collar leaves.
    drop(collars.pop());
    wait_until("the leaving collar's slot is free", || {
        handle.open_sockets() < 5
    })
    .await;
    connect(options(&handle, "collar-5", Some(SECRET)))
        .await
        .unwrap();
    handle.shutdown().await;
}

#[tokio::test]
async fn a_connect_with_its_reserved_flag_set_is_closed_without_a_connack() {
    for open in [false, true] {
        let mut c = config();
        c.open = open;
        let (handle, _rec) = start(c).await;
        let mut socket = TcpStream::connect(handle.tcp_addr().unwrap())
            .await
            .unwrap();
        socket.write_all(&raw_connect(0x03)).await.unwrap();
        closed_by_server(&mut socket)
            .await
            .unwrap_or_else(|e| panic!("open mode {open}: {e}"));
        // The same CONNECT without the reserved flag gets its CONNACK.
        let mut socket = TcpStream::connect(handle.tcp_addr().unwrap())
            .await
            .unwrap();
        socket.write_all(&raw_connect(0x02)).await.unwrap();
        let mut connack = [0u8; 4];
        socket.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack[0], 0x20, "open mode {open}: {connack:02x?}");
        handle.shutdown().await;
    }
}

mod v5 {
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
    pub use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
}

fn options_v5(handle: &BrokerHandle, id: &str) -> v5::MqttOptions {
    let port = handle.tcp_addr().unwrap().port();
    let mut o = v5::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_start(true);
    o.set_credentials(id, SECRET);
    o
}

/// Like [`next`], for an MQTT 5 connection.
async fn next_v5<T>(
    events: &mut v5::EventLoop,
    mut pick: impl FnMut(&v5::Event) -> Option<T>,
) -> Result<T, String> {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(event) => {
                    if let Some(v) = pick(&event) {
                        return Ok(v);
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

async fn connect_v5(o: v5::MqttOptions) -> Result<(v5::AsyncClient, v5::EventLoop), String> {
    let (client, mut events) = v5::AsyncClient::new(o, 16);
    next_v5(&mut events, |e| {
        matches!(e, v5::Event::Incoming(v5::Packet::ConnAck(_))).then_some(())
    })
    .await?;
    Ok((client, events))
}

#[tokio::test]
async fn a_collar_that_disconnects_and_reconnects_at_once_is_never_refused() {
    let (handle, rec) = start(config()).await;
    // As with the real pipeline, telling the gateway about a disconnect takes a moment; the new
    // connection arrives while the old session is still ending.
    *rec.disconnect_delay.lock().await = Duration::from_millis(100);
    for round in 0..10 {
        let (client, mut events) = connect_v5(options_v5(&handle, "rex"))
            .await
            .unwrap_or_else(|e| panic!("MQTT 5, connection {round}: {e}"));
        client.disconnect().await.unwrap();
        next_v5(&mut events, |e| {
            matches!(e, v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)).then_some(())
        })
        .await
        .unwrap();
    }
    for round in 0..10 {
        let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
            .await
            .unwrap_or_else(|e| panic!("MQTT 3.1.1, connection {round}: {e}"));
        client.disconnect().await.unwrap();
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn qos_2_publishes_are_handled_as_connack_announced() {
    let (handle, rec) = start(config()).await;
    // MQTT 5: CONNACK says Maximum QoS 1, so a QoS 2 PUBLISH is a protocol error.
    let (client, mut events) = connect_v5(options_v5(&handle, "rex")).await.unwrap();
    client
        .publish("trackers/rex/telemetry", v5::QoS::ExactlyOnce, false, "{}")
        .await
        .unwrap();
    let outcome = next_v5(&mut events, |e| match e {
        v5::Event::Incoming(v5::Packet::PubRec(_)) => Some("PUBREC"),
        _ => None,
    })
    .await;
    assert!(
        outcome.is_err(),
        "a QoS 2 publish above the announced Maximum QoS was answered with {outcome:?}"
    );
    assert!(rec.publishes.lock().await.is_empty());
    // MQTT 3.1.1 announces no maximum: QoS 2 is taken, and handled as QoS 1.
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    client
        .publish("trackers/rex/telemetry", QoS::ExactlyOnce, false, "{}")
        .await
        .unwrap();
    next(&mut events, |p| {
        matches!(p, Packet::PubRec(_)).then_some(())
    })
    .await
    .unwrap();
    let got = rec.publishes.lock().await.clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, 1);
    handle.shutdown().await;
}

/// Whether a collar whose Last Will has this QoS and retain flag gets in: over MQTT 3.1.1, and
/// over MQTT 5.
async fn will_accepted(handle: &BrokerHandle, qos: u8, retain: bool) -> (bool, bool) {
    let topic = "trackers/rex/online";
    let mut o = options(handle, "rex", Some(SECRET));
    let v3_qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(qos)];
    o.set_last_will(LastWill::new(topic, "offline", v3_qos, retain));
    let v3 = connect(o).await.is_ok();
    let mut o = options_v5(handle, "rex");
    let v5_qos = [
        v5::QoS::AtMostOnce,
        v5::QoS::AtLeastOnce,
        v5::QoS::ExactlyOnce,
    ][usize::from(qos)];
    o.set_last_will(v5::LastWill::new(topic, "offline", v5_qos, retain, None));
    let v5 = connect_v5(o).await.is_ok();
    (v3, v5)
}

#[tokio::test]
async fn a_retained_or_qos_2_last_will_is_refused_on_both_protocol_versions() {
    for open in [false, true] {
        let mut c = config();
        c.open = open;
        let (handle, _rec) = start(c).await;
        // No retained messages: a retained will is refused alike (MQTT 5 says so in CONNACK).
        assert_eq!(
            will_accepted(&handle, 1, true).await,
            (false, false),
            "open mode {open}: retained will (MQTT 3.1.1, MQTT 5)"
        );
        // CONNACK's Maximum QoS 1 is MQTT 5 only; MQTT 3.1.1 takes QoS 2 as QoS 1.
        assert_eq!(
            will_accepted(&handle, 2, false).await,
            (true, false),
            "open mode {open}: QoS 2 will (MQTT 3.1.1, MQTT 5)"
        );
        // The will the device contract asks for is fine on both.
        assert_eq!(
            will_accepted(&handle, 1, false).await,
            (true, true),
            "open mode {open}: the contract's will (MQTT 3.1.1, MQTT 5)"
        );
        handle.shutdown().await;
    }
}

/// rmqtt runs one publish hook per connection at a time; the front door takes a collar's own
/// publishes itself so that they all reach the pipeline while the first is still being stored.
#[tokio::test]
async fn a_collars_publishes_are_all_handed_in_before_the_first_is_stored_and_acked_in_order() {
    let (handle, rec) = start(config()).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *rec.gate.lock().await = Some(gate.clone());
    let (client, mut events) = connect(options(&handle, "rex", Some(SECRET)))
        .await
        .unwrap();
    for i in 0..5 {
        client
            .publish(
                "trackers/rex/telemetry",
                QoS::AtLeastOnce,
                false,
                i.to_string(),
            )
            .await
            .unwrap();
    }
    let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = acks.clone();
    let poll = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => seen.lock().unwrap().push(ack.pkid),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let submitted: Vec<String> = (0..5).map(|i| format!("submitted {i}")).collect();
    rec.wait_events("all five handed in, none stored yet", |e| {
        e.iter().filter(|e| e.starts_with("submitted")).count() == 5
    })
    .await;
    assert_eq!(
        rec.events()
            .await
            .into_iter()
            .filter(|e| e.starts_with("submitted"))
            .collect::<Vec<_>>(),
        submitted,
        "in the order they were published"
    );
    assert!(
        acks.lock().unwrap().is_empty(),
        "no PUBACK before its message is stored"
    );
    // The first stored: its PUBACK alone.
    gate.add_permits(1);
    wait_until("the first PUBACK", || acks.lock().unwrap().len() == 1).await;
    // The rest: their PUBACKs in the order of the PUBLISHes.
    gate.add_permits(4);
    wait_until("every PUBACK", || acks.lock().unwrap().len() == 5).await;
    let got = acks.lock().unwrap().clone();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "PUBACKs in the order of the PUBLISHes");
    poll.abort();
    handle.shutdown().await;
}

/// The front door keeps rmqtt from seeing the publishes it takes, so it keeps the session's
/// keep-alive itself, and the collar never sees a PINGRESP it did not ask for.
#[tokio::test]
async fn a_collar_that_only_publishes_outlives_its_keep_alive_and_gets_no_pingresp_it_did_not_ask_for()
 {
    let (handle, _rec) = start(config()).await;
    let addr = handle.tcp_addr().unwrap();
    let mut socket = TcpStream::connect(addr).await.unwrap();
    // MQTT 3.1.1 CONNECT: client id = username = rex, keep-alive 2 s.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010, 0, 2];
    for field in ["rex", "rex", SECRET] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    socket.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    // QoS 0 publishes every half second for three keep-alives, and no PINGREQ: rmqtt alone would
    // have closed the session after 1.5 keep-alives (3 s).
    let topic = b"trackers/rex/status";
    let mut qos0 = vec![0x30, (2 + topic.len() + 2) as u8, 0, topic.len() as u8];
    qos0.extend_from_slice(topic);
    qos0.extend_from_slice(b"{}");
    for _ in 0..12 {
        socket.write_all(&qos0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Still open: a QoS 1 publish gets its PUBACK, and it is the first byte the collar reads.
    let mut qos1 = vec![0x32, (2 + topic.len() + 2 + 2) as u8, 0, topic.len() as u8];
    qos1.extend_from_slice(topic);
    qos1.extend_from_slice(&[0x00, 0x07]);
    qos1.extend_from_slice(b"{}");
    socket.write_all(&qos1).await.unwrap();
    let mut puback = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut puback))
        .await
        .expect("an answer")
        .expect("the connection is open");
    assert_eq!(puback, [0x40, 0x02, 0x00, 0x07]);
    handle.shutdown().await;
}
