//! One simulated collar: its configuration and its connection loop (connect, report, reconnect
//! with backoff, drop out of coverage), over the parts that each do one job: `outbox` keeps
//! fixes until acked, `battery` drains and charges, `schedule` says when to take a fix,
//! `commands` answers the server, and `crate::faults` misbehaves on request. Every payload and
//! topic comes from `gateway::protocol`.

mod battery;
mod commands;
mod outbox;
mod schedule;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use gateway::backoff::Backoff;
use gateway::protocol::{
    DeviceTopic, Encoding, MAX_FIXES_PER_MESSAGE, Presence, RawFix, RawStatus, TopicKind,
    decode_ack, decode_command, encode_online, encode_status, encode_telemetry, topics,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::sync::watch;
use tokio::time::Instant;

pub use battery::{Battery, Charge};
pub use stats::CollarStats;

use crate::city::Home;
use crate::credentials::{Broker, Credential, mqtt_options};
use crate::faults::Faults;
use crate::movement::Pet;
use battery::StatusReports;
use commands::{Agenda, Later, Report};
use outbox::Outbox;
use schedule::Schedule;

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

/// Why a connection ended.
enum Ended {
    Stop,
    Lost,
    OutOfCoverage,
}

/// Reconnecting after a lost connection: from half a second, doubling up to a minute; a
/// CONNACK starts it over.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));

pub(crate) struct Collar {
    cfg: CollarConfig,
    stats: Arc<CollarStats>,
    pet: Pet,
    rng: StdRng,
    outbox: Outbox,
    charge: Charge,
    status_reports: StatusReports,
    schedule: Schedule,
    agenda: Agenda,
    connected: bool,
}

impl Collar {
    pub(crate) fn new(cfg: CollarConfig, stats: Arc<CollarStats>) -> Collar {
        let now = Instant::now();
        // seq never goes down across restarts: start from the clock (protocol: "use the fix time
        // in epoch milliseconds as seq if nothing else survives a reboot").
        let first_seq = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        let collar = Collar {
            pet: Pet::new(cfg.home, cfg.seed),
            rng: StdRng::seed_from_u64(cfg.seed ^ 0x5eed_c011a5),
            outbox: Outbox::new(first_seq, cfg.buffer_limit),
            charge: Charge::new(cfg.battery.start),
            status_reports: StatusReports::default(),
            schedule: Schedule::new(cfg.interval, now),
            agenda: Agenda::default(),
            connected: false,
            cfg,
            stats,
        };
        collar.update_stats();
        collar
    }

    /// Runs until `stop` turns true: connects, reports, reconnects with backoff.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = RECONNECT;
        let mut next_outage = self.schedule_outage();
        let id = self.cfg.credential.tracker_id.clone();
        loop {
            if *stop.borrow() {
                return;
            }
            let mut options =
                mqtt_options(&self.cfg.credential, &self.cfg.broker, self.cfg.keep_alive);
            options.set_max_packet_size(1 << 20, 1 << 20);
            let (client, events) = AsyncClient::new(options, 256);
            let _ = client.try_subscribe(topics::ack(&id), QoS::AtLeastOnce);
            let _ = client.try_subscribe(topics::commands(&id), QoS::AtLeastOnce);
            self.say(&client, Presence::Online);
            let ended = self
                .connection(&client, events, &mut stop, next_outage, &mut backoff)
                .await;
            self.connected = false;
            let wait = match ended {
                Ended::Stop => return,
                Ended::Lost => backoff.next_delay_with(&mut self.rng),
                Ended::OutOfCoverage => {
                    let mean = self.cfg.coverage.mean_length.as_secs_f64();
                    next_outage = self.schedule_outage();
                    Duration::from_secs_f64(mean * self.rng.random_range(0.5..1.5))
                }
            };
            tracing::debug!(%id, ?wait, "offline");
            self.stats.offline.store(true, Ordering::Relaxed);
            self.stats.changed();
            // Still a collar while offline: it keeps recording into its buffer.
            let until = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(self.schedule.next_fix()) => self.record(),
                    _ = tokio::time::sleep_until(until) => break,
                    _ = stop.changed() => return,
                }
                self.update_stats();
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

    /// One connection, from CONNECT until it is lost, stopped, or the collar leaves coverage.
    async fn connection(
        &mut self,
        client: &AsyncClient,
        mut events: EventLoop,
        stop: &mut watch::Receiver<bool>,
        outage: Option<Instant>,
        backoff: &mut Backoff,
    ) -> Ended {
        let flap = self
            .cfg
            .faults
            .flap_after(&mut self.rng)
            .map(|d| Instant::now() + d);
        let far = Instant::now() + Duration::from_secs(365 * 86_400);
        loop {
            let resend_at = self
                .outbox
                .resend_at(self.cfg.ack_timeout)
                .filter(|_| self.connected)
                .unwrap_or(far);
            let due_at = self.agenda.next_at().unwrap_or(far);
            tokio::select! {
                _ = stop.changed() => {
                    self.say(client, Presence::Offline);
                    let _ = client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while events.poll().await.is_ok() {}
                    }).await;
                    return Ended::Stop;
                }
                _ = tokio::time::sleep_until(self.schedule.next_fix()) => {
                    self.record();
                    if self.connected {
                        self.send_new(client);
                    }
                }
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        self.connected = true;
                        backoff.reset();
                        CollarStats::add(&self.stats.connects, 1);
                        self.report_status(client, true);
                        self.resend_all(client);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        match DeviceTopic::parse(&p.topic).map(|t| t.kind) {
                            Ok(TopicKind::Ack) => self.on_ack(&p.payload),
                            Ok(TopicKind::Commands) => self.on_command(client, &p.payload),
                            _ => {}
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
            self.update_stats();
        }
    }

    /// The gauges in [`CollarStats`], then a wake-up for whoever waits on them.
    fn update_stats(&self) {
        let s = &self.stats;
        s.buffered
            .store(self.outbox.len() as u64, Ordering::Relaxed);
        s.last_seq.store(self.outbox.last_seq(), Ordering::Relaxed);
        s.acked_seq.store(self.outbox.acked(), Ordering::Relaxed);
        s.interval_ms.store(
            u64::try_from(self.schedule.interval().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        s.changed();
    }

    fn publish(&self, client: &AsyncClient, topic: String, payload: Vec<u8>) -> bool {
        client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_ok()
    }

    /// `online` after connecting, `offline` before a clean disconnect.
    fn say(&self, client: &AsyncClient, presence: Presence) {
        let topic = topics::online(&self.cfg.credential.tracker_id);
        self.publish(client, topic, encode_online(presence).to_vec());
    }

    /// Takes a fix and keeps it until acked.
    fn record(&mut self) {
        let dt = self.schedule.fix_taken(Instant::now()).as_secs_f64();
        let fix = self.pet.step(dt);
        self.charge.step(&self.cfg.battery, dt, fix.doing);
        self.outbox.record(RawFix {
            device_time: self.cfg.faults.device_time(Utc::now()),
            lat: round(fix.lat, 7),
            lon: round(fix.lon, 7),
            altitude: Some(round(fix.alt, 1)),
            accuracy: Some(fix.acc),
            speed: Some(round(fix.spd, 2)),
            heading: fix.hdg.map(|h| round(h, 1) % 360.0),
            satellites: Some(i64::from(fix.sat)),
            battery: Some(self.charge.percent()),
            seq: None,
        });
        CollarStats::add(&self.stats.fixes_recorded, 1);
    }

    /// Status when connecting, on charging changes and every 5% of battery.
    fn report_status(&mut self, client: &AsyncClient, force: bool) {
        if !self.status_reports.due(&self.charge, force) {
            return;
        }
        let status = RawStatus {
            device_time: None,
            battery: Some(self.charge.percent()),
            charging: Some(self.charge.charging),
            firmware: Some(self.cfg.firmware.clone()),
            rssi: Some(self.rng.random_range(-105..-55)),
        };
        let topic = topics::status(&self.cfg.credential.tracker_id);
        self.publish(client, topic, encode_status(&status, Encoding::Json));
    }

    /// Sends fixes recorded since the last send: singly as they come, as arrays after a gap.
    fn send_new(&mut self, client: &AsyncClient) {
        self.report_status(client, false);
        let fresh = self.outbox.fresh(Instant::now());
        self.publish_fixes(client, &fresh, false);
    }

    /// Sends everything still held: after a reconnect, or when no ack came in time.
    fn resend_all(&mut self, client: &AsyncClient) {
        let all = self.outbox.all(Instant::now());
        self.publish_fixes(client, &all, true);
    }

    fn publish_fixes(&mut self, client: &AsyncClient, fixes: &[RawFix], again: bool) {
        let topic = topics::telemetry(&self.cfg.credential.tracker_id);
        let resent: Vec<bool> = fixes.iter().map(|f| self.outbox.was_sent(f)).collect();
        let per_message = self.cfg.max_batch.clamp(1, MAX_FIXES_PER_MESSAGE);
        for (chunk, chunk_resent) in fixes.chunks(per_message).zip(resent.chunks(per_message)) {
            let n = chunk.len() as u64;
            let payload = encode_telemetry(chunk, Encoding::Json);
            let faults = &self.cfg.faults;
            if let Some(bad) = faults.garbage(&mut self.rng, &payload)
                && self.publish(client, topic.clone(), bad)
            {
                CollarStats::add(&self.stats.malformed_sent, 1);
            }
            let copies = faults.copies(&mut self.rng);
            for copy in 0..copies {
                if !self.publish(client, topic.clone(), payload.clone()) {
                    // The request queue is full: the resend timer will try again.
                    return;
                }
                let s = &self.stats;
                CollarStats::add(&s.messages_sent, 1);
                CollarStats::add(&s.fixes_sent, n);
                if copy == 1 {
                    CollarStats::add(&s.duplicates_sent, 1);
                }
                if again {
                    let repeats = chunk_resent.iter().filter(|r| **r).count();
                    CollarStats::add(&s.fixes_resent, repeats as u64);
                }
                if n > 1 {
                    CollarStats::add(&s.batches_sent, 1);
                }
            }
            self.outbox.sent(chunk);
        }
    }

    fn on_ack(&mut self, payload: &[u8]) {
        let Ok(ack) = decode_ack(payload) else {
            tracing::debug!(id = %self.cfg.credential.tracker_id, "unreadable ack");
            return;
        };
        if self.cfg.faults.loses_ack(&mut self.rng) {
            return;
        }
        CollarStats::add(&self.stats.acks_received, 1);
        self.outbox.ack(ack.seq.as_u64(), Instant::now());
    }

    fn on_command(&mut self, client: &AsyncClient, payload: &[u8]) {
        let command = match decode_command(payload) {
            Ok(command) => command,
            Err(error) => {
                tracing::debug!(id = %self.cfg.credential.tracker_id, %error, "unreadable command");
                return;
            }
        };
        CollarStats::add(&self.stats.commands_received, 1);
        let reports = commands::obey(
            &command,
            Instant::now(),
            self.charge.level,
            &mut self.schedule,
            &mut self.agenda,
        );
        for report in reports {
            self.send_report(client, &report);
        }
    }

    fn send_report(&self, client: &AsyncClient, report: &Report) {
        let topic = topics::command_results(&self.cfg.credential.tracker_id);
        self.publish(client, topic, report.payload());
    }

    fn run_due(&mut self, client: &AsyncClient) {
        let now = Instant::now();
        for item in self.agenda.due(now) {
            match item {
                Later::Report(report) => self.send_report(client, &report),
                Later::FirmwareInstalled(version) => {
                    self.cfg.firmware = version;
                    self.report_status(client, true);
                }
                Later::LiveEnds => self.schedule.end_live_if_over(now),
            }
        }
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
