//! Live-latency mode for benchmarks: one collar publishes fixes over MQTT while a WebSocket client watches it on the live feed; reports publish-to-delivery and publish-to-PUBACK latencies.
//!
//! Both clocks are this process's monotonic clock, so no clock sync is needed: each fix is
//! stamped just before it is handed to the MQTT client, and again when its `position` message
//! (matched by `seq`) arrives on the WebSocket, and when its PUBACK comes back. The PUBACK figure
//! is the baseline: it crosses the same loopback, broker and scheduler, and also waits for the
//! batch commit, so machine noise shows in both.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use gateway::protocol::{Encoding, TrackerId, encode_telemetry, topics};
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::credentials::{Broker, Credential, mqtt_options};
use crate::load::synthetic_fix;
pub use crate::percentiles::Percentiles;
use crate::percentiles::micros;

/// What to measure.
#[derive(Debug, Clone)]
pub struct LatencyConfig {
    pub broker: Broker,
    /// The server's API base URL, like `http://127.0.0.1:8080/api/v1`; the feed is `{api}/live`.
    pub api: String,
    /// An access token (or API key) of a user who may see the collar.
    pub token: String,
    pub credential: Credential,
    pub samples: u64,
    /// Between two publishes. A collar's QoS 1 message waits for its batch commit, so much
    /// less than the PUBACK latency would measure the collar's own queue.
    pub interval: Duration,
    /// A fix not on the feed this long after its publish counts as lost.
    pub timeout: Duration,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub tracker_id: TrackerId,
    pub samples: u64,
    pub interval_ms: f64,
    /// Fixes whose `position` message arrived within the timeout.
    pub received: u64,
    /// Fixes that did not: each is a failure of the live feed.
    pub lost: u64,
    /// Publish to WebSocket `position` message.
    pub live_ms: Percentiles,
    /// Publish to PUBACK of the same messages (the server acks after the batch commit).
    pub puback_ms: Percentiles,
    pub pubacks: u64,
    pub seconds: f64,
}

/// Publishes `samples` fixes and measures each until it is on the feed (or timed out).
pub async fn run(cfg: LatencyConfig) -> anyhow::Result<LatencyReport> {
    anyhow::ensure!(cfg.samples > 0, "--samples must be at least 1");
    let id = cfg.credential.tracker_id.clone();
    let (mut ws_tx, mut ws_rx) = open_feed(&cfg).await?;

    // The feed reader stamps each position of the collar as it arrives, on its own task so that
    // publishing never delays a stamp.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(u64, Instant)>();
    let watched = id.clone();
    let reader = tokio::spawn(async move {
        while let Some(message) = ws_rx.next().await {
            let at = Instant::now();
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => anyhow::bail!("the live feed was closed: {frame:?}"),
                Ok(_) => continue,
                Err(err) => return Err(err).context("live feed"),
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            match value["type"].as_str() {
                Some("position") if value["tracker"] == watched.as_str() => {
                    if let Some(seq) = value["fix"]["seq"].as_u64()
                        && arrived_tx.send((seq, at)).is_err()
                    {
                        return Ok(());
                    }
                }
                Some("overflow" | "error") => tracing::warn!(%value, "live feed"),
                _ => {}
            }
        }
        anyhow::bail!("the live feed ended")
    });

    // The collar. Its event loop runs on its own task and stamps PUBACKs; the publisher hands it
    // (seq, sent-at) in publish order, which is the order the publishes leave in.
    let sent_order: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let (client, pubacks) = connect_collar(&cfg, sent_order.clone()).await?;

    let topic = topics::telemetry(&id);
    let started = Instant::now();
    // Unique per run and tracker: seq and device time both come from the wall clock.
    let first_seq = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    let mut last_ts = chrono::DateTime::UNIX_EPOCH;
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut live = Vec::with_capacity(cfg.samples as usize);
    let mut next_send = Instant::now();
    let mut seq = first_seq;
    let mut publishing = true;
    let mut deadline = None;
    while live.len() < cfg.samples as usize {
        tokio::select! {
            () = tokio::time::sleep_until(next_send), if publishing => {
                let ts = Utc::now().max(last_ts + TimeDelta::milliseconds(1));
                last_ts = ts;
                let payload = encode_telemetry(&[synthetic_fix(ts, seq)], Encoding::Json);
                let at = Instant::now();
                sent.insert(seq, at);
                lock(&sent_order).push_back((seq, at));
                client
                    .publish(&topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .context("collar request queue")?;
                seq += 1;
                next_send += cfg.interval;
                if seq - first_seq == cfg.samples {
                    publishing = false;
                    deadline = Some(Instant::now() + cfg.timeout);
                }
            }
            got = arrived.recv() => {
                let Some((s, at)) = got else { break };
                if let Some(t0) = sent.remove(&s) {
                    live.push(at.duration_since(t0));
                }
            }
            () = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await },
                if deadline.is_some() => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // A fix not seen yet had at least the timeout (the last one sent) to arrive; one seen later
    // than the timeout is lost too, for a feed that slow is broken for a user.
    let late = live.iter().filter(|d| **d > cfg.timeout).count() as u64;
    live.retain(|d| *d <= cfg.timeout);
    let received = live.len() as u64;
    if !reader.is_finished() {
        reader.abort();
    } else if let Ok(Err(err)) = reader.await {
        tracing::warn!(%err, "live feed reader stopped");
    }
    // The last PUBACKs: bounded, they are a baseline, not the point.
    let _ = tokio::time::timeout(cfg.timeout, async {
        while lock(&pubacks).len() < cfg.samples as usize {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let _ = client.disconnect().await;
    let _ = ws_tx.close().await;
    let acks = std::mem::take(&mut *lock(&pubacks));
    if late > 0 {
        tracing::warn!(late, "positions arrived after the timeout; counted as lost");
    }
    if received < cfg.samples {
        tracing::warn!(
            lost = cfg.samples - received,
            "positions not on the live feed within the timeout"
        );
    }
    Ok(LatencyReport {
        tracker_id: id,
        samples: cfg.samples,
        interval_ms: cfg.interval.as_secs_f64() * 1_000.0,
        received,
        lost: cfg.samples - received,
        live_ms: Percentiles::of_micros(live.into_iter().map(micros).collect()),
        pubacks: acks.len() as u64,
        puback_ms: Percentiles::of_micros(acks.into_iter().map(micros).collect()),
        seconds,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only plain pushes and pops happen under these locks; a poisoned one is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `{api}/live`, subscribes to the collar and waits for its snapshot, so that every
/// fix published afterwards is delivered live.
async fn open_feed(
    cfg: &LatencyConfig,
) -> anyhow::Result<(
    futures::stream::SplitSink<WsStream, Message>,
    futures::stream::SplitStream<WsStream>,
)> {
    let base = cfg.api.trim_end_matches('/');
    let url = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}/live")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}/live")
    } else {
        anyhow::bail!("--api must start with http:// or https://, got {base:?}");
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("bad live feed URL {url}"))?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", cfg.token)
            .parse()
            .context("the token is not a valid header value")?,
    );
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .with_context(|| format!("no answer from {url} within 10 s"))?
    .with_context(|| format!("cannot open the live feed at {url}"))?;
    let (mut tx, mut rx) = ws.split();
    let id = &cfg.credential.tracker_id;
    tx.send(Message::text(
        json!({"type": "subscribe", "trackers": [id]}).to_string(),
    ))
    .await
    .context("cannot send the subscribe message")?;
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = rx.next().await {
            let Message::Text(text) = message.context("live feed")? else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).context("live feed: not JSON")?;
            match value["type"].as_str() {
                Some("snapshot") if value["tracker"] == id.as_str() => return Ok(()),
                Some("error") => anyhow::bail!("subscribing to {id}: {value}"),
                _ => {}
            }
        }
        anyhow::bail!("the live feed ended before the snapshot of {id}")
    })
    .await
    .with_context(|| format!("no snapshot of {id} within 10 s"))??;
    Ok((tx, rx))
}

/// Connects the collar (client id = username = tracker id) and returns its client and the
/// PUBACK latencies its event loop collects.
async fn connect_collar(
    cfg: &LatencyConfig,
    sent_order: Arc<Mutex<VecDeque<(u64, Instant)>>>,
) -> anyhow::Result<(AsyncClient, Arc<Mutex<Vec<Duration>>>)> {
    let id = &cfg.credential.tracker_id;
    let broker = &cfg.broker;
    let o = mqtt_options(&cfg.credential, broker, Duration::from_secs(60));
    let (client, mut events) = AsyncClient::new(o, 64);
    // Wait for the CONNACK here, so a refused collar is an error and not a run of lost samples.
    let connack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
    })
    .await;
    match connack {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            return Err(err).with_context(|| {
                format!("{id}: cannot connect to {}:{}", broker.host, broker.port)
            });
        }
        Err(_) => anyhow::bail!("{id}: no CONNACK within 10 s"),
    }
    let pubacks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let acks = pubacks.clone();
    let tracker = id.clone();
    tokio::spawn(async move {
        let mut in_flight: HashMap<u16, Instant> = HashMap::new();
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some((_, at)) = lock(&sent_order).pop_front() {
                        in_flight.insert(pkid, at);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(at) = in_flight.remove(&ack.pkid) {
                        lock(&acks).push(at.elapsed());
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    // The disconnect at the end also lands here.
                    tracing::debug!(%err, %tracker, "collar connection ended");
                    return;
                }
            }
        }
    });
    Ok((client, pubacks))
}
