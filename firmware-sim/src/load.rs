//! Load mode for benchmarks: many collars multiplexed over a few tasks, publishing at a target rate or flat out, with throughput and latency figures.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use gateway::protocol::{
    Encoding, MAX_FIXES_PER_MESSAGE, RawFix, decode_ack, encode_telemetry, topics,
};
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS, SubscribeReasonCode};
use serde::Serialize;
use tokio::time::Instant;

use crate::credentials::{Broker, Credential, mqtt_options};
use crate::percentiles::{Percentiles, micros};

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub credentials: Vec<Credential>,
    /// Collars are spread over these round-robin. Several addresses of one server (it listening
    /// on 0.0.0.0, reached as 127.0.0.1, 127.0.0.2, ...) give each its own range of source ports.
    pub brokers: Vec<Broker>,
    pub messages_per_collar: u64,
    pub fixes_per_message: u64,
    pub qos: QoS,
    /// QoS 1 publishes in flight per connection.
    pub inflight: u16,
    /// Messages per second over all collars; `None`: as fast as acks allow.
    pub rate: Option<f64>,
    /// Tokio tasks the connections are multiplexed over.
    pub tasks: usize,
    /// Stop sending after this long (then wait for the acks of what is in flight), even if
    /// `messages_per_collar` is not reached: sustained-rate benchmarks run for a time, not a count.
    pub duration: Option<Duration>,
    /// Connections are opened evenly over this long instead of all at once: a fleet of tens of
    /// thousands does not boot in the same millisecond, and a burst would only measure the
    /// listen backlog.
    pub ramp: Option<Duration>,
    /// Count a message done when the server's app-level ack (`{"seq":N}` on `trackers/{id}/ack`,
    /// sent after commit) covers it, not at its PUBACK. Behind an external broker the PUBACK
    /// comes from the broker before anything is stored, so only the app-level ack says the fix
    /// is in the database; the in-flight window then counts messages not yet app-acked.
    pub await_app_ack: bool,
    /// Date fixes from an hour back, 1 ms apart, instead of by the clock (a message's fixes
    /// ending now, 1 ms apart, each after the collar's previous one): late fixes, as a fleet
    /// replaying what it buffered offline sends them.
    pub backdate: bool,
}

/// Running totals, for a progress line.
#[derive(Debug, Default)]
pub struct LoadProgress {
    pub messages_done: AtomicU64,
    pub fixes_done: AtomicU64,
    pub connected: AtomicU64,
}

/// The result of a run. `fixes` counts fixes in messages the broker acknowledged (QoS 1) or
/// that left the socket (QoS 0); with `await_app_ack`, fixes the server's app-level ack covered.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub collars: usize,
    pub messages_per_collar: u64,
    pub fixes_per_message: u64,
    pub qos: u8,
    /// What counted a message done: `puback`, `sent` (QoS 0) or `app_ack`.
    pub acknowledged_by: &'static str,
    pub messages: u64,
    pub fixes: u64,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub fixes_per_second: f64,
    /// Publish to PUBACK, QoS 1 only (the server acks once the message is durably accepted);
    /// with `await_app_ack`, publish to the app-level ack covering the message.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p90: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub latency_ms_max: Option<f64>,
    pub failed_collars: usize,
}

/// The `seq`th fix of a benchmark collar: the few fields a real fix always has, the position
/// wandering over a few hundred metres of Berlin so consecutive fixes differ.
pub(crate) fn synthetic_fix(device_time: DateTime<Utc>, seq: u64) -> RawFix {
    RawFix {
        device_time,
        // 52.5xxxx and 13.4xxx: exact decimal fractions, so the JSON stays short.
        lat: (5_250_000 + seq % 10_000) as f64 / 100_000.0,
        lon: (134_000 + seq % 1_000) as f64 / 10_000.0,
        altitude: None,
        accuracy: Some(5.0),
        speed: None,
        heading: None,
        satellites: None,
        battery: Some(80),
        seq: Some(seq),
    }
}

/// Runs the load; `on_progress` is called every `progress_every` while it lasts.
pub async fn run(
    cfg: LoadConfig,
    progress_every: Duration,
    mut on_progress: impl FnMut(&LoadProgress, Duration),
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(!cfg.brokers.is_empty(), "no broker address given");
    anyhow::ensure!(!cfg.credentials.is_empty(), "no collar credentials given");
    anyhow::ensure!(
        (1..=MAX_FIXES_PER_MESSAGE as u64).contains(&cfg.fixes_per_message),
        "fixes per message must be 1..={MAX_FIXES_PER_MESSAGE} (the protocol's limit)"
    );
    let progress = Arc::new(LoadProgress::default());
    let collars = cfg.credentials.len();
    // Device times must be unique per tracker: one millisecond apart, ending before now.
    // A timed run does not know its count: an hour back leaves room for 3.6 million fixes each.
    let per_collar_fixes = match cfg.duration {
        Some(_) => 3_600_000,
        None => cfg
            .messages_per_collar
            .saturating_mul(cfg.fixes_per_message),
    };
    let back = i64::try_from(per_collar_fixes.saturating_add(1_000)).unwrap_or(i64::MAX);
    let base = Utc::now()
        .checked_sub_signed(TimeDelta::milliseconds(back))
        .unwrap_or(DateTime::UNIX_EPOCH);
    let period = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(collars as f64 / r));
    let tasks = cfg.tasks.clamp(1, collars);
    let mut groups: Vec<Vec<(Credential, Broker)>> = vec![Vec::new(); tasks];
    for (i, cred) in cfg.credentials.iter().enumerate() {
        let broker = cfg.brokers[i % cfg.brokers.len()].clone();
        groups[i % tasks].push((cred.clone(), broker));
    }
    let started = Instant::now();
    let stop_at = cfg.duration.map(|d| started + d);
    let mut handles = Vec::new();
    for (g, group) in groups.into_iter().enumerate() {
        let (progress, cfg) = (progress.clone(), cfg.clone());
        handles.push(tokio::spawn(async move {
            let conns = group.into_iter().enumerate().map(|(i, (cred, broker))| {
                // Spread the first sends over one period so a rated run does not pulse.
                let offset = period.map(|p| p.mul_f64((i as f64 * 0.618_034).fract()));
                let start = cfg
                    .ramp
                    .map(|r| started + r.mul_f64((i * tasks + g) as f64 / collars.max(1) as f64));
                let (progress, cfg) = (&progress, &cfg);
                async move {
                    if let Some(t) = start {
                        tokio::time::sleep_until(t).await;
                    }
                    collar_load(cred, broker, cfg, base, period, offset, stop_at, progress).await
                }
            });
            futures::future::join_all(conns).await
        }));
    }
    let all = futures::future::join_all(handles);
    tokio::pin!(all);
    let mut ticker = tokio::time::interval(progress_every);
    ticker.tick().await;
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = ticker.tick() => on_progress(&progress, started.elapsed()),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for group in results {
        for r in group.context("a load task panicked")? {
            match r {
                Ok(mut l) => latencies.append(&mut l),
                Err(err) => {
                    failed += 1;
                    tracing::warn!(err = format!("{err:#}"), "collar failed");
                }
            }
        }
    }
    let latency = Percentiles::of_micros(latencies);
    let messages = progress.messages_done.load(Ordering::Relaxed);
    let fixes = progress.fixes_done.load(Ordering::Relaxed);
    Ok(LoadReport {
        collars,
        messages_per_collar: cfg.messages_per_collar,
        fixes_per_message: cfg.fixes_per_message,
        qos: cfg.qos as u8,
        acknowledged_by: if cfg.await_app_ack {
            "app_ack"
        } else if cfg.qos == QoS::AtMostOnce {
            "sent"
        } else {
            "puback"
        },
        messages,
        fixes,
        seconds,
        messages_per_second: messages as f64 / seconds,
        fixes_per_second: fixes as f64 / seconds,
        latency_ms_p50: latency.p50,
        latency_ms_p90: latency.p90,
        latency_ms_p99: latency.p99,
        latency_ms_max: latency.max,
        failed_collars: failed,
    })
}

/// How long a collar waits for an app-level ack while it has messages out before it gives up
/// (and counts as failed): a lost ack would otherwise hang the run at its end.
const APP_ACK_SILENCE: Duration = Duration::from_secs(30);

/// A collar's messages waiting for the server's app-level ack, in the order they were published.
/// Acks are cumulative (docs/protocol.md): `{"seq":N}` covers every message whose highest
/// `seq` is ≤ N, so one ack may settle several messages, and a stale one settles none.
#[derive(Debug, Default)]
pub(crate) struct AwaitingAcks {
    /// (highest `seq` in the message, when it was published)
    sent: VecDeque<(u64, Instant)>,
}

impl AwaitingAcks {
    pub(crate) fn published(&mut self, last_seq: u64, at: Instant) {
        self.sent.push_back((last_seq, at));
    }

    /// The ack `seq` arrived at `now`: the publish-to-ack times of the messages it settles.
    pub(crate) fn acked(&mut self, seq: u64, now: Instant) -> Vec<Duration> {
        let mut settled = Vec::new();
        while let Some(&(last, at)) = self.sent.front()
            && last <= seq
        {
            settled.push(now.saturating_duration_since(at));
            self.sent.pop_front();
        }
        settled
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// One collar's connection: publishes its messages and returns publish-to-PUBACK latencies in µs
/// (publish-to-app-ack with `await_app_ack`).
// Each argument is one collar's share of the run (its identity, schedule, shared counters);
// a struct bundling them would exist only for this one call.
#[allow(clippy::too_many_arguments)]
async fn collar_load(
    cred: Credential,
    broker: Broker,
    cfg: &LoadConfig,
    base: DateTime<Utc>,
    period: Option<Duration>,
    offset: Option<Duration>,
    stop_at: Option<Instant>,
    progress: &LoadProgress,
) -> anyhow::Result<Vec<u32>> {
    let id = &cred.tracker_id;
    let mut o = mqtt_options(&cred, &broker, Duration::from_secs(60));
    o.set_inflight(cfg.inflight.max(1));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let cap = cfg.inflight as usize * 2 + 8;
    let (client, mut events) = AsyncClient::new(o, cap);
    let topic = topics::telemetry(id);
    let ack_topic = topics::ack(id);
    let app_ack = cfg.await_app_ack;
    let mut awaiting = AwaitingAcks::default();
    let mut last_heard = Instant::now();
    let want = cfg.messages_per_collar;
    let per = cfg.fixes_per_message;
    let (mut requested, mut done) = (0u64, 0u64);
    let mut connected = false;
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(want.min(4_096) as usize);
    let mut want = want;
    let mut next_send = Instant::now() + offset.unwrap_or_default();
    let mut last_time = DateTime::<Utc>::UNIX_EPOCH;
    let mut seq = 0u64;
    while done < want {
        if stop_at.is_some_and(|t| Instant::now() >= t) && want > requested {
            // Time is up: finish what is in flight.
            want = requested;
            continue;
        }
        let window = if cfg.qos == QoS::AtMostOnce {
            cap as u64 / 2
        } else {
            cfg.inflight.max(1) as u64
        };
        let may_send = connected && requested < want && requested - done < window;
        tokio::select! {
            event = events.poll() => match event.with_context(|| format!("{id}: connection"))? {
                Event::Incoming(Packet::ConnAck(_)) if app_ack => {
                    // Acks published before the subscription is in place would be lost: send
                    // only once it is granted.
                    client
                        .try_subscribe(&ack_topic, QoS::AtLeastOnce)
                        .with_context(|| format!("{id}: request queue"))?;
                }
                Event::Incoming(Packet::ConnAck(_)) => {
                    connected = true;
                    progress.connected.fetch_add(1, Ordering::Relaxed);
                }
                Event::Incoming(Packet::SubAck(ack)) if app_ack && !connected => {
                    anyhow::ensure!(
                        ack.return_codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                        "{id}: the broker refused the subscription to {ack_topic}: {:?}",
                        ack.return_codes
                    );
                    connected = true;
                    last_heard = Instant::now();
                    progress.connected.fetch_add(1, Ordering::Relaxed);
                }
                Event::Incoming(Packet::Publish(p)) if app_ack && p.topic == ack_topic => {
                    let seq = decode_ack(&p.payload)
                        .with_context(|| format!("{id}: a malformed ack"))?
                        .seq
                        .get();
                    let now = Instant::now();
                    last_heard = now;
                    for latency in awaiting.acked(u64::try_from(seq).unwrap_or(0), now) {
                        latencies.push(micros(latency));
                        done += 1;
                        progress.messages_done.fetch_add(1, Ordering::Relaxed);
                        progress.fixes_done.fetch_add(per, Ordering::Relaxed);
                    }
                }
                Event::Outgoing(Outgoing::Publish(_)) if app_ack => {}
                Event::Incoming(Packet::PubAck(_)) if app_ack => {}
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    if cfg.qos == QoS::AtMostOnce {
                        done += 1;
                        progress.messages_done.fetch_add(1, Ordering::Relaxed);
                        progress.fixes_done.fetch_add(per, Ordering::Relaxed);
                    } else {
                        sent_at.insert(pkid, Instant::now());
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    if let Some(t) = sent_at.remove(&ack.pkid) {
                        latencies.push(micros(t.elapsed()));
                    }
                    done += 1;
                    progress.messages_done.fetch_add(1, Ordering::Relaxed);
                    progress.fixes_done.fetch_add(per, Ordering::Relaxed);
                }
                _ => {}
            },
            _ = tokio::time::sleep_until(stop_at.map_or(next_send, |t| t.min(next_send))), if may_send => {
                if stop_at.is_some_and(|t| Instant::now() >= t) {
                    continue;
                }
                // Device times at least a millisecond apart: unique per tracker, so all are
                // stored.
                let now = Utc::now();
                let fixes: Vec<RawFix> = (0..per)
                    .map(|i| {
                        seq += 1;
                        let ms = TimeDelta::milliseconds(i64::try_from(seq).unwrap_or(i64::MAX));
                        let at = if cfg.backdate {
                            base.checked_add_signed(ms).unwrap_or(base)
                        } else {
                            let behind = i64::try_from(per - 1 - i).unwrap_or(0);
                            (now - TimeDelta::milliseconds(behind))
                                .max(last_time + TimeDelta::milliseconds(1))
                        };
                        last_time = at;
                        synthetic_fix(at, seq)
                    })
                    .collect();
                let payload = encode_telemetry(&fixes, Encoding::Json);
                client
                    .try_publish(&topic, cfg.qos, false, payload)
                    .with_context(|| format!("{id}: request queue"))?;
                requested += 1;
                if app_ack {
                    if awaiting.is_empty() {
                        last_heard = Instant::now();
                    }
                    awaiting.published(seq, Instant::now());
                }
                if let Some(p) = period {
                    next_send += p;
                }
            }
            _ = tokio::time::sleep_until(last_heard + APP_ACK_SILENCE), if app_ack && !awaiting.is_empty() => {
                anyhow::bail!(
                    "{id}: no app-level ack for {} s; {} published messages not acknowledged",
                    APP_ACK_SILENCE.as_secs(),
                    requested - done
                );
            }
        }
    }
    // Let the last QoS 0 packets leave the socket before disconnecting.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_settles_every_message_up_to_its_seq_and_no_later_one() {
        let t0 = Instant::now();
        let mut awaiting = AwaitingAcks::default();
        // Three messages of 2 fixes each: highest seqs 2, 4, 6.
        for (i, last) in [2u64, 4, 6].into_iter().enumerate() {
            awaiting.published(last, t0 + Duration::from_millis(10 * i as u64));
        }
        // Cumulative: ack 4 settles the first two, with their own publish-to-ack times.
        let settled = awaiting.acked(4, t0 + Duration::from_millis(50));
        assert_eq!(
            settled,
            vec![Duration::from_millis(50), Duration::from_millis(40)]
        );
        // A stale or partial ack settles nothing (seq 5 is inside the third message).
        assert!(awaiting.acked(3, t0 + Duration::from_millis(60)).is_empty());
        assert!(awaiting.acked(5, t0 + Duration::from_millis(60)).is_empty());
        assert!(!awaiting.is_empty());
        assert_eq!(
            awaiting.acked(6, t0 + Duration::from_millis(70)),
            vec![Duration::from_millis(50)]
        );
        assert!(awaiting.is_empty());
    }
}
