//! One simulated collar: records fixes, uploads them over its own MQTT connection, keeps them until acked, obeys commands, and misbehaves on request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Transport};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::city::Home;
use crate::credentials::{Broker, Credential};
use crate::faults::Faults;
use crate::movement::{Fix, Pet};

/// Everything about one collar's behaviour.
#[derive(Debug, Clone)]
pub struct CollarConfig {
    pub credential: Credential,
    pub broker: Broker,
    pub home: Home,
    /// Seeds the pet's movement and the collar's dice.
    pub seed: u64,
    /// Seconds between fixes (live mode shortens it for a while).
    pub interval: Duration,
    /// MQTT keepalive; the protocol asks for 60-300 s on cellular.
    pub keep_alive: Duration,
    /// Unacknowledged fixes are sent again after this long without an ack.
    pub ack_timeout: Duration,
    /// Fixes per message when uploading a backlog (the protocol allows up to 1,000).
    pub max_batch: usize,
    /// Fixes the collar can hold; beyond it the oldest are lost, as on a full flash.
    pub buffer_limit: usize,
    pub coverage: Coverage,
    pub battery: Battery,
    pub faults: Faults,
    pub firmware: String,
}

impl CollarConfig {
    /// A well-behaved collar with the defaults firmware ships with.
    pub fn new(credential: Credential, broker: Broker, home: Home, seed: u64) -> CollarConfig {
        CollarConfig {
            credential,
            broker,
            home,
            seed,
            interval: Duration::from_secs(10),
            keep_alive: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(30),
            max_batch: 100,
            buffer_limit: 10_000,
            coverage: Coverage::default(),
            battery: Battery::default(),
            faults: Faults::default(),
            firmware: "1.4.2".to_owned(),
        }
    }
}

/// Out-of-coverage spells (a basement, a tunnel, the countryside): the collar drops its
/// connection, keeps recording, and uploads the buffer as batches when it is back.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Mean time between spells; `None`: always covered.
    pub mean_between: Option<Duration>,
    /// Mean length of a spell.
    pub mean_length: Duration,
}

/// Battery drain and charging, in percent.
#[derive(Debug, Clone)]
pub struct Battery {
    pub start: f64,
    /// Drain while idle, per hour.
    pub drain_per_hour: f64,
    /// Extra drain per GPS fix (live mode costs battery).
    pub drain_per_fix: f64,
    /// Gain per hour on the charger; the owner puts the collar on it below 20%.
    pub charge_per_hour: f64,
}

impl Default for Battery {
    fn default() -> Battery {
        Battery {
            start: 90.0,
            drain_per_hour: 1.0,
            drain_per_fix: 0.01,
            charge_per_hour: 40.0,
        }
    }
}

/// Counters a collar keeps about itself, readable while it runs (tests and progress lines).
#[derive(Debug, Default)]
pub struct CollarStats {
    pub fixes_recorded: AtomicU64,
    pub messages_sent: AtomicU64,
    pub fixes_sent: AtomicU64,
    /// Fixes sent again because no ack covered them in time, or after a reconnect.
    pub fixes_resent: AtomicU64,
    /// Messages that carried more than one fix.
    pub batches_sent: AtomicU64,
    pub acks_received: AtomicU64,
    /// Highest seq acknowledged by the server (0: none yet).
    pub acked_seq: AtomicU64,
    pub connects: AtomicU64,
    pub commands_received: AtomicU64,
    pub malformed_sent: AtomicU64,
    pub duplicates_sent: AtomicU64,
    /// Fixes held and not yet acknowledged.
    pub buffered: AtomicU64,
    /// Highest seq recorded so far.
    pub last_seq: AtomicU64,
    pub offline: AtomicBool,
    /// Milliseconds between fixes now (live mode changes it).
    pub interval_ms: AtomicU64,
}

/// The telemetry wire form (docs/protocol.md): `ts` in epoch milliseconds.
#[derive(Debug, Clone, Serialize)]
struct WireFix {
    ts: i64,
    lat: f64,
    lon: f64,
    alt: f64,
    acc: f64,
    spd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    hdg: Option<f64>,
    sat: u8,
    bat: u8,
    seq: u64,
}

#[derive(Debug, Deserialize)]
struct Command {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct CommandResult<'a> {
    id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Firmware-update progress in percent: not in the contract, so the server ignores it, but
    /// readable in the command-results stream and the dead-letter-free log.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
}

/// Something the collar will do later: finish a command, end live mode.
#[derive(Debug)]
enum Due {
    Result {
        id: String,
        status: &'static str,
        reason: Option<String>,
        progress: Option<u8>,
    },
    FirmwareInstalled(String),
    LiveEnds,
}

/// Why a connection ended.
enum Ended {
    Stop,
    Lost,
    OutOfCoverage,
}

pub(crate) struct Collar {
    cfg: CollarConfig,
    stats: Arc<CollarStats>,
    pet: Pet,
    rng: StdRng,
    buffer: VecDeque<(u64, String)>,
    /// Highest seq handed to the connection (fixes above it have not been sent yet).
    sent_up_to: u64,
    seq: u64,
    battery: f64,
    charging: bool,
    last_reported_battery: i64,
    last_reported_charging: bool,
    next_fix: Instant,
    interval: Duration,
    live_until: Option<Instant>,
    due: Vec<(Instant, Due)>,
    last_progress: Instant,
    connected: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Collar {
    pub(crate) fn new(cfg: CollarConfig, stats: Arc<CollarStats>) -> Collar {
        let pet = Pet::new(cfg.home, cfg.seed);
        let rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed_c011a5);
        let interval = cfg.interval.max(Duration::from_millis(50));
        stats
            .interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
        Collar {
            battery: cfg.battery.start.clamp(0.0, 100.0),
            // seq never goes down across restarts: start from the clock (protocol: "use the
            // fix time in epoch milliseconds as seq if nothing else survives a reboot").
            seq: now_ms().max(1) as u64,
            cfg,
            stats,
            pet,
            rng,
            buffer: VecDeque::new(),
            sent_up_to: 0,
            charging: false,
            last_reported_battery: -100,
            last_reported_charging: false,
            next_fix: Instant::now() + interval,
            interval,
            live_until: None,
            due: Vec::new(),
            last_progress: Instant::now(),
            connected: false,
        }
    }

    fn topic(&self, kind: &str) -> String {
        format!("trackers/{}/{kind}", self.cfg.credential.tracker_id)
    }

    fn options(&self) -> MqttOptions {
        let id = &self.cfg.credential.tracker_id;
        let mut o = MqttOptions::new(id, &self.cfg.broker.host, self.cfg.broker.port);
        o.set_credentials(id, &self.cfg.credential.secret);
        o.set_keep_alive(self.cfg.keep_alive);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_last_will(LastWill::new(
            self.topic("online"),
            "offline",
            QoS::AtLeastOnce,
            false,
        ));
        if let Some(ca) = &self.cfg.broker.tls_ca {
            o.set_transport(Transport::tls(ca.clone(), None, None));
        }
        o
    }

    /// Runs until `stop` turns true: connects, reports, reconnects with backoff.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(500);
        let mut next_outage = self.schedule_outage();
        loop {
            if *stop.borrow() {
                return;
            }
            let (client, events) = AsyncClient::new(self.options(), 256);
            let _ = client.try_subscribe(self.topic("ack"), QoS::AtLeastOnce);
            let _ = client.try_subscribe(self.topic("commands"), QoS::AtLeastOnce);
            let _ = client.try_publish(self.topic("online"), QoS::AtLeastOnce, false, "online");
            let ended = self
                .connection(&client, events, &mut stop, next_outage, &mut backoff)
                .await;
            self.connected = false;
            let wait = match ended {
                Ended::Stop => return,
                Ended::Lost => {
                    let wait = backoff.mul_f64(0.5 + self.rng.random::<f64>());
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    wait
                }
                Ended::OutOfCoverage => {
                    let mean = self.cfg.coverage.mean_length.as_secs_f64();
                    next_outage = self.schedule_outage();
                    Duration::from_secs_f64(mean * self.rng.random_range(0.5..1.5))
                }
            };
            tracing::debug!(id = %self.cfg.credential.tracker_id, ?wait, "offline");
            self.stats.offline.store(true, Ordering::Relaxed);
            // Still a collar while offline: it keeps recording into its buffer.
            let until = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(self.next_fix) => self.record(),
                    _ = tokio::time::sleep_until(until) => break,
                    _ = stop.changed() => return,
                }
            }
            self.stats.offline.store(false, Ordering::Relaxed);
        }
    }

    fn schedule_outage(&mut self) -> Option<Instant> {
        let mean = self.cfg.coverage.mean_between?.as_secs_f64();
        // Exponential gaps: spells arrive at random, as dead spots do.
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        Some(Instant::now() + Duration::from_secs_f64(-mean * u.ln()))
    }

    async fn connection(
        &mut self,
        client: &AsyncClient,
        mut events: EventLoop,
        stop: &mut watch::Receiver<bool>,
        outage: Option<Instant>,
        backoff: &mut Duration,
    ) -> Ended {
        let flap = self
            .cfg
            .faults
            .flap_every
            .map(|d| Instant::now() + d.mul_f64(self.rng.random_range(0.5..1.5)));
        let far = Instant::now() + Duration::from_secs(365 * 86_400);
        loop {
            let resend_at = if self.connected && !self.buffer.is_empty() {
                self.last_progress + self.cfg.ack_timeout
            } else {
                far
            };
            let due_at = self.due.iter().map(|d| d.0).min().unwrap_or(far);
            tokio::select! {
                _ = stop.changed() => {
                    let _ = client.try_publish(self.topic("online"), QoS::AtLeastOnce, false, "offline");
                    let _ = client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while events.poll().await.is_ok() {}
                    }).await;
                    return Ended::Stop;
                }
                _ = tokio::time::sleep_until(self.next_fix) => {
                    self.record();
                    if self.connected {
                        self.send_new(client);
                    }
                }
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        self.connected = true;
                        *backoff = Duration::from_millis(500);
                        self.stats.connects.fetch_add(1, Ordering::Relaxed);
                        self.report_status(client, true);
                        self.resend_all(client);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.ends_with("/ack") {
                            self.on_ack(&p.payload);
                        } else if p.topic.ends_with("/commands") {
                            self.on_command(client, &p.payload);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(id = %self.cfg.credential.tracker_id, %error, "connection lost");
                        return Ended::Lost;
                    }
                },
                _ = tokio::time::sleep_until(resend_at) => self.resend_all(client),
                _ = tokio::time::sleep_until(due_at) => self.run_due(client),
                // Dropping the connection without DISCONNECT makes the broker publish the Will.
                _ = tokio::time::sleep_until(outage.unwrap_or(far)) => return Ended::OutOfCoverage,
                _ = tokio::time::sleep_until(flap.unwrap_or(far)) => return Ended::Lost,
            }
        }
    }

    /// Takes a fix and keeps it until acked.
    fn record(&mut self) {
        let now = Instant::now();
        self.next_fix += self.interval;
        if self.next_fix < now {
            self.next_fix = now + self.interval;
        }
        if let Some(until) = self.live_until
            && Instant::now() >= until
        {
            self.end_live();
        }
        let dt = self.interval.as_secs_f64();
        let fix: Fix = self.pet.step(dt);
        self.update_battery(dt, fix);
        self.seq += 1;
        let wire = WireFix {
            ts: now_ms() + self.cfg.faults.clock_skew_ms,
            lat: round(fix.lat, 7),
            lon: round(fix.lon, 7),
            alt: round(fix.alt, 1),
            acc: fix.acc,
            spd: round(fix.spd, 2),
            hdg: fix.hdg.map(|h| round(h, 1) % 360.0),
            sat: fix.sat,
            bat: self.battery.round().clamp(0.0, 100.0) as u8,
            seq: self.seq,
        };
        let Ok(json) = serde_json::to_string(&wire) else {
            return;
        };
        self.buffer.push_back((self.seq, json));
        while self.buffer.len() > self.cfg.buffer_limit.max(1) {
            self.buffer.pop_front();
        }
        self.stats.fixes_recorded.fetch_add(1, Ordering::Relaxed);
        self.stats.last_seq.store(self.seq, Ordering::Relaxed);
        self.stats
            .buffered
            .store(self.buffer.len() as u64, Ordering::Relaxed);
    }

    fn update_battery(&mut self, dt: f64, fix: Fix) {
        let b = &self.cfg.battery;
        if self.charging {
            self.battery += b.charge_per_hour * dt / 3600.0;
            if self.battery >= 100.0 {
                self.battery = 100.0;
                self.charging = false;
            }
        } else {
            self.battery -= b.drain_per_hour * dt / 3600.0 + b.drain_per_fix;
            // The owner charges it when it is low and the pet is home.
            if self.battery < 20.0 && fix.doing == crate::movement::Doing::Resting {
                self.charging = true;
            }
        }
        self.battery = self.battery.clamp(0.0, 100.0);
    }

    /// Status when connecting, on charging changes and every 5% of battery.
    fn report_status(&mut self, client: &AsyncClient, force: bool) {
        let bat = self.battery.round() as i64;
        if !force
            && (bat - self.last_reported_battery).abs() < 5
            && self.charging == self.last_reported_charging
        {
            return;
        }
        self.last_reported_battery = bat;
        self.last_reported_charging = self.charging;
        let status = serde_json::json!({
            "bat": bat,
            "chg": self.charging,
            "fw": self.cfg.firmware,
            "rssi": self.rng.random_range(-105..-55),
        });
        let _ = client.try_publish(
            self.topic("status"),
            QoS::AtLeastOnce,
            false,
            status.to_string(),
        );
    }

    /// Sends fixes recorded since the last send: singly as they come, as arrays after a gap.
    fn send_new(&mut self, client: &AsyncClient) {
        self.report_status(client, false);
        let fresh: Vec<(u64, String)> = self
            .buffer
            .iter()
            .filter(|(seq, _)| *seq > self.sent_up_to)
            .cloned()
            .collect();
        // The ack timeout runs from the oldest send still unanswered.
        let outstanding = self.buffer.iter().any(|(seq, _)| *seq <= self.sent_up_to);
        if !fresh.is_empty() && !outstanding {
            self.last_progress = Instant::now();
        }
        self.publish_fixes(client, &fresh, false);
    }

    /// Sends everything still held: after a reconnect, or when no ack came in time.
    fn resend_all(&mut self, client: &AsyncClient) {
        let all: Vec<(u64, String)> = self.buffer.iter().cloned().collect();
        self.last_progress = Instant::now();
        self.publish_fixes(client, &all, true);
    }

    fn publish_fixes(&mut self, client: &AsyncClient, fixes: &[(u64, String)], again: bool) {
        let topic = self.topic("telemetry");
        let sent_before = self.sent_up_to;
        for chunk in fixes.chunks(self.cfg.max_batch.clamp(1, 1_000)) {
            let (payload, n) = if chunk.len() == 1 {
                (chunk[0].1.clone(), 1)
            } else {
                let body: Vec<&str> = chunk.iter().map(|f| f.1.as_str()).collect();
                (format!("[{}]", body.join(",")), chunk.len())
            };
            if self.rng.random::<f64>() < self.cfg.faults.malformed_rate {
                let bad = self.cfg.faults.malformed_payload(&mut self.rng, &payload);
                if client
                    .try_publish(&topic, QoS::AtLeastOnce, false, bad)
                    .is_ok()
                {
                    self.stats.malformed_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            let copies = if self.rng.random::<f64>() < self.cfg.faults.duplicate_rate {
                2
            } else {
                1
            };
            for copy in 0..copies {
                if client
                    .try_publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .is_err()
                {
                    // The request queue is full: the resend timer will try again.
                    return;
                }
                self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                self.stats.fixes_sent.fetch_add(n as u64, Ordering::Relaxed);
                if copy == 1 {
                    self.stats.duplicates_sent.fetch_add(1, Ordering::Relaxed);
                }
                if again {
                    let repeats = chunk.iter().filter(|f| f.0 <= sent_before).count();
                    self.stats
                        .fixes_resent
                        .fetch_add(repeats as u64, Ordering::Relaxed);
                }
                if n > 1 {
                    self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(last) = chunk.last() {
                self.sent_up_to = self.sent_up_to.max(last.0);
            }
        }
    }

    fn on_ack(&mut self, payload: &[u8]) {
        #[derive(Deserialize)]
        struct Ack {
            seq: u64,
        }
        let Ok(ack) = serde_json::from_slice::<Ack>(payload) else {
            tracing::debug!(id = %self.cfg.credential.tracker_id, "unreadable ack");
            return;
        };
        if self.rng.random::<f64>() < self.cfg.faults.lose_ack_rate {
            return;
        }
        self.stats.acks_received.fetch_add(1, Ordering::Relaxed);
        if ack.seq <= self.stats.acked_seq.load(Ordering::Relaxed) {
            return;
        }
        self.stats.acked_seq.store(ack.seq, Ordering::Relaxed);
        self.buffer.retain(|(seq, _)| *seq > ack.seq);
        self.stats
            .buffered
            .store(self.buffer.len() as u64, Ordering::Relaxed);
        self.last_progress = Instant::now();
    }

    fn on_command(&mut self, client: &AsyncClient, payload: &[u8]) {
        let Ok(cmd) = serde_json::from_slice::<Command>(payload) else {
            tracing::debug!(id = %self.cfg.credential.tracker_id, "unreadable command");
            return;
        };
        self.stats.commands_received.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let secs = |names: &[&str], default: f64| {
            names
                .iter()
                .find_map(|n| cmd.params.get(*n).and_then(|v| v.as_f64()))
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(default)
        };
        let done_after = |after: f64| {
            (
                now + Duration::from_secs_f64(after.min(3_600.0)),
                Due::Result {
                    id: cmd.id.clone(),
                    status: "done",
                    reason: None,
                    progress: None,
                },
            )
        };
        match cmd.kind.as_str() {
            "live" | "live_mode" | "live-mode" => {
                // The server's parameters (docs/protocol.md): `minutes`, `interval_secs`.
                let interval = secs(&["interval_secs", "interval_s", "interval"], 5.0);
                let duration = match cmd.params.get("minutes").and_then(|v| v.as_f64()) {
                    Some(m) if m.is_finite() && m >= 0.0 => m * 60.0,
                    _ => secs(&["duration_s", "duration", "seconds"], 300.0),
                };
                self.result(client, &cmd.id, "accepted", None, None);
                self.set_interval(Duration::from_secs_f64(interval.max(1.0)));
                self.live_until = Some(now + Duration::from_secs_f64(duration));
                self.due.push((
                    now + Duration::from_secs_f64(duration.min(86_400.0)),
                    Due::LiveEnds,
                ));
                self.result(client, &cmd.id, "done", None, None);
            }
            "set_interval" => {
                let seconds = secs(&["seconds"], 0.0);
                if seconds < 1.0 {
                    let reason = "set_interval needs seconds".to_owned();
                    self.result(client, &cmd.id, "failed", Some(reason), None);
                } else {
                    self.cfg.interval = Duration::from_secs_f64(seconds);
                    if self.live_until.is_none() {
                        self.set_interval(self.cfg.interval);
                    }
                    self.result(client, &cmd.id, "done", None, None);
                }
            }
            "locate_now" => {
                self.result(client, &cmd.id, "accepted", None, None);
                // The next fix is taken at once; the regular rhythm goes on from it.
                self.next_fix = now;
                self.due.push(done_after(0.5));
            }
            "buzzer" | "light" | "beep" | "led" => {
                let seconds = secs(&["seconds", "duration_s", "duration"], 3.0);
                if self.battery < 3.0 {
                    let reason = format!("{} disabled: battery too low", cmd.kind);
                    self.result(client, &cmd.id, "failed", Some(reason), None);
                } else {
                    self.result(client, &cmd.id, "accepted", None, None);
                    self.due.push(done_after(seconds));
                }
            }
            "firmware_update" | "firmware-update" | "fw_update" | "update_firmware" => {
                let version = cmd
                    .params
                    .get("version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("1.5.0")
                    .chars()
                    .take(32)
                    .collect::<String>();
                self.result(client, &cmd.id, "accepted", None, Some(0));
                for (i, p) in [25u8, 50, 75].into_iter().enumerate() {
                    self.due.push((
                        now + Duration::from_millis(500 * (i as u64 + 1)),
                        Due::Result {
                            id: cmd.id.clone(),
                            status: "accepted",
                            reason: Some(format!("downloading {p}%")),
                            progress: Some(p),
                        },
                    ));
                }
                self.due.push((
                    now + Duration::from_millis(2_000),
                    Due::FirmwareInstalled(version),
                ));
                let mut done = done_after(2.0);
                done.0 += Duration::from_millis(1);
                if let Due::Result { progress, .. } = &mut done.1 {
                    *progress = Some(100);
                }
                self.due.push(done);
            }
            other => {
                let reason = format!("unknown command type {other:?}");
                self.result(client, &cmd.id, "failed", Some(reason), None);
            }
        }
    }

    fn result(
        &mut self,
        client: &AsyncClient,
        id: &str,
        status: &str,
        reason: Option<String>,
        progress: Option<u8>,
    ) {
        let body = CommandResult {
            id,
            status,
            reason,
            progress,
        };
        if let Ok(json) = serde_json::to_string(&body) {
            let _ =
                client.try_publish(self.topic("command-results"), QoS::AtLeastOnce, false, json);
        }
    }

    fn run_due(&mut self, client: &AsyncClient) {
        let now = Instant::now();
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.due)
            .into_iter()
            .partition(|d| d.0 <= now);
        self.due = later;
        let mut ready = ready;
        ready.sort_by_key(|d| d.0);
        for (_, due) in ready {
            match due {
                Due::Result {
                    id,
                    status,
                    reason,
                    progress,
                } => self.result(client, &id, status, reason, progress),
                Due::FirmwareInstalled(version) => {
                    self.cfg.firmware = version;
                    self.report_status(client, true);
                }
                Due::LiveEnds => {
                    if self.live_until.is_some_and(|t| t <= now) {
                        self.end_live();
                    }
                }
            }
        }
    }

    fn set_interval(&mut self, interval: Duration) {
        self.interval = interval.max(Duration::from_millis(50));
        self.next_fix = self.next_fix.min(Instant::now() + self.interval);
        self.stats
            .interval_ms
            .store(self.interval.as_millis() as u64, Ordering::Relaxed);
    }

    fn end_live(&mut self) {
        self.live_until = None;
        self.set_interval(self.cfg.interval);
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
