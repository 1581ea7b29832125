//! The embedded broker on its own: real MQTT clients (rumqttc) against a real listener, with a
//! recording `DeviceHooks` standing in for the ingest pipeline (the end-to-end path with the
//! database is in tests/mqtt_ingest.rs at the workspace root).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway::broker::{self, BrokerConfig, BrokerError, BrokerHandle, DeviceHooks, DevicePublish};
use gateway::broker::{Refused, TlsListener};
use gateway::protocol::TrackerId;
use gateway::testing::eventually;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
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
}

#[async_trait::async_trait]
impl DeviceHooks for Recorder {
    async fn authenticate(&self, tracker: &TrackerId, secret: &[u8]) -> bool {
        !tracker.as_str().starts_with("bad") && secret == SECRET.as_bytes()
    }

    async fn accept_publish(&self, publish: DevicePublish) -> Result<(), Refused> {
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

    async fn connected(&self, tracker: &TrackerId) {
        self.events
            .lock()
            .await
            .push(format!("connected {tracker}"));
    }

    async fn disconnected(&self, tracker: &TrackerId) {
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
