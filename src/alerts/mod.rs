//! The alert engine: computes safe-zone, battery and offline alerts from every committed fix, status report and connection, stores them and pushes them on the live feed.
//!
//! Its input is the write path's committed batches ([`feed`]), not the live bus: the bus skips
//! events for a subscriber that falls behind, and an exit decided on a skipped fix would never
//! be raised. When the engine is behind, it reads a tracker's news back from the database.
//!
//! Behind an external broker several instances ingest, and a tracker's fixes may be committed
//! by any of them: the engine then judges only in the instance leading `Job::Alerts`
//! ([`Mode::Led`]), from its own committed batches and from the other instances' notices (the
//! live relay's `pettracker/v1/committed`), reading their news back from the database. On
//! becoming the leader, and whenever the notices may have been interrupted, it reads back every
//! tracker heard from lately. Alerts are announced by the database (NOTIFY, in the transaction
//! that stores them), so the live feeds of every instance tell them.
//!
//! Rules (docs/live.md, *Alerts*):
//! - Only fixes newer (in device time) than the newest one already used count, and only if they
//!   are at most `alerts.max_fix_age_secs` old: a late or buffered batch of old fixes never raises
//!   an alert.
//! - A zone change needs `geofence_dwell_secs` *and* `geofence_dwell_fixes` fixes on the new side;
//!   a fix outside by less than its accuracy (at least `geofence_margin_m`) decides nothing.
//! - Battery low once per crossing below the threshold; re-armed only 5 points above it.
//! - Offline once a claimed tracker has been silent longer than `offline_after_secs`; back online
//!   on the next thing it says.

pub mod egress;
pub mod feed;
pub mod store;
pub mod webhooks;
pub mod zone;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::Pool;
use gateway::shutdown::Shutdown;
use gateway::storage::ingest::FixRow;
use gateway::storage::{self, StorageError};

use feed::{Feed, Input, Work};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::config::AlertSettings;
use zone::{Place, Shape};

/// Battery percent above the threshold at which a low-battery alert re-arms.
const BATTERY_REARM: i16 = 5;
/// The newest-fix watermark is saved at least this often (in device time) even when nothing
/// else changed, so a restart forgets little of it, without a write per fix.
const WATERMARK_SAVE_EVERY: TimeDelta = TimeDelta::seconds(30);
/// A resync reads fixes at most this much older than the oldest that could still raise an
/// alert (`alerts.max_fix_age_secs` before now): the engine is never behind by more.
const RESYNC_SLACK: TimeDelta = TimeDelta::minutes(10);
/// Fixes read back per query of a resync.
const RESYNC_PAGE: i64 = 1_000;
/// Watermarks that moved alone are saved together this often, in one statement: one
/// autocommitted upsert each was 70 % of PostgreSQL's CPU in the realistic fleet, where every
/// collar's watermark moves every 30 s (BENCHMARKS.md, issue 17). A restart forgets at most
/// this much more of them; a watermark that is behind only lets a re-sent fix be judged again.
const WATERMARK_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A zone that applies to a tracker: geofence id, name, shape.
type Fence = (i64, String, Shape);

/// The engine's handle for the HTTP side: geofence changes tell it to reload zones.
#[derive(Debug, Default)]
pub struct AlertsHandle {
    fences_version: AtomicU64,
}

impl AlertsHandle {
    /// Geofences changed: zones are re-read before the next fix is checked.
    pub fn fences_changed(&self) {
        self.fences_version.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per zone: which side the tracker is on, and a change waiting for its dwell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ZoneState {
    inside: Option<bool>,
    pending_since: Option<DateTime<Utc>>,
    pending_fixes: u32,
}

struct TrackerState {
    last_fix_time: Option<DateTime<Utc>>,
    /// The watermark as last saved.
    saved_fix_time: Option<DateTime<Utc>>,
    battery_low: bool,
    offline_alerted: bool,
    zones: HashMap<i64, ZoneState>,
    /// The zones that apply, and the geofence version they were read at.
    fences: Option<(u64, Vec<Fence>)>,
    last_heard: Instant,
}

/// What one event changed: alerts to raise and whether the state must be saved.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    alerts: Vec<NewAlert>,
    /// Saved at once: a decision (a zone, the battery, offline) that must outlive a restart.
    changed: bool,
    /// Only the newest-fix watermark moved: saved with the others of its second.
    watermark: bool,
}

#[derive(Debug, PartialEq)]
struct NewAlert {
    kind: &'static str,
    geofence_id: Option<i64>,
    at: DateTime<Utc>,
    details: Value,
}

impl TrackerState {
    fn from_stored(stored: store::StoredState) -> TrackerState {
        TrackerState {
            last_fix_time: stored.last_fix_time,
            saved_fix_time: stored.last_fix_time,
            battery_low: stored.battery_low,
            offline_alerted: stored.offline_alerted,
            zones: serde_json::from_value::<HashMap<String, ZoneState>>(stored.zones)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
                .collect(),
            fences: None,
            last_heard: Instant::now(),
        }
    }

    fn to_stored(&self) -> store::StoredState {
        let zones: HashMap<String, &ZoneState> =
            self.zones.iter().map(|(k, v)| (k.to_string(), v)).collect();
        store::StoredState {
            last_fix_time: self.last_fix_time,
            battery_low: self.battery_low,
            offline_alerted: self.offline_alerted,
            zones: serde_json::to_value(zones).unwrap_or_else(|_| json!({})),
        }
    }

    fn battery(&mut self, percent: i16, at: DateTime<Utc>, s: &AlertSettings, out: &mut Outcome) {
        if percent <= s.battery_low() && !self.battery_low {
            self.battery_low = true;
            out.changed = true;
            out.alerts.push(NewAlert {
                kind: "battery_low",
                geofence_id: None,
                at,
                details: json!({"battery": percent, "threshold": s.battery_low()}),
            });
        } else if percent > s.battery_low() + BATTERY_REARM && self.battery_low {
            self.battery_low = false;
            out.changed = true;
        }
    }

    fn heard(&mut self, at: DateTime<Utc>, out: &mut Outcome) {
        self.last_heard = Instant::now();
        if self.offline_alerted {
            self.offline_alerted = false;
            out.changed = true;
            out.alerts.push(NewAlert {
                kind: "online",
                geofence_id: None,
                at,
                details: json!({}),
            });
        }
    }

    /// A fix, with the zones that apply to the tracker.
    #[allow(clippy::too_many_arguments)]
    fn fix(
        &mut self,
        device_time: DateTime<Utc>,
        lat: f64,
        lon: f64,
        accuracy: Option<f32>,
        battery: Option<i16>,
        now: DateTime<Utc>,
        fences: &[(i64, String, Shape)],
        s: &AlertSettings,
        out: &mut Outcome,
    ) {
        if self.last_fix_time.is_some_and(|t| device_time <= t) {
            return;
        }
        self.last_fix_time = Some(device_time);
        if self
            .saved_fix_time
            .is_none_or(|saved| device_time - saved >= WATERMARK_SAVE_EVERY)
        {
            out.watermark = true;
        }
        let max_age = TimeDelta::from_std(s.max_fix_age()).unwrap_or(TimeDelta::MAX);
        if now - device_time > max_age {
            // Old news: it moves the watermark, so nothing older counts either, but decides nothing.
            return;
        }
        if let Some(percent) = battery {
            self.battery(percent, device_time, s, out);
        }
        let margin = f64::from(accuracy.unwrap_or(0.0)).max(s.margin_m());
        let dwell = TimeDelta::from_std(s.dwell()).unwrap_or(TimeDelta::MAX);
        self.zones.retain(|id, _| fences.iter().any(|f| f.0 == *id));
        for (id, name, shape) in fences {
            let zone = self.zones.entry(*id).or_default();
            let inside = match shape.place(lat, lon, margin) {
                Place::Inside => true,
                Place::Outside => false,
                Place::Unsure => continue,
            };
            match zone.inside {
                None => {
                    // The first fix tells where it is; nothing changed yet.
                    zone.inside = Some(inside);
                    out.changed = true;
                }
                Some(current) if current == inside => {
                    if zone.pending_since.is_some() {
                        zone.pending_since = None;
                        zone.pending_fixes = 0;
                        out.changed = true;
                    }
                }
                Some(_) => {
                    let since = *zone.pending_since.get_or_insert(device_time);
                    zone.pending_fixes += 1;
                    out.changed = true;
                    if device_time - since >= dwell && zone.pending_fixes >= s.dwell_fixes() {
                        zone.inside = Some(inside);
                        zone.pending_since = None;
                        zone.pending_fixes = 0;
                        out.alerts.push(NewAlert {
                            kind: if inside { "geofence_enter" } else { "geofence_exit" },
                            geofence_id: Some(*id),
                            at: device_time,
                            details: json!({"geofence": name, "lat": lat, "lon": lon, "since": since}),
                        });
                    }
                }
            }
        }
    }
}

/// The running engine: its handle for the HTTP side, and its feed for the write path.
pub struct Alerts {
    pub handle: Arc<AlertsHandle>,
    /// The gateway's `CommittedBatches`: plug it into the ingest pipeline.
    pub feed: Arc<Feed>,
    /// Tells the engine its notices may have been interrupted (the live relay resubscribed):
    /// it reads back every tracker heard from lately.
    pub catch_up: Arc<tokio::sync::Notify>,
}

/// Where the engine judges fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In every instance, from its own committed batches: each instance ingests its own
    /// collars (the embedded broker).
    Local,
    /// Only in the instance leading `Job::Alerts` (behind an external broker, where any
    /// instance may commit any tracker's fixes).
    Led,
}

/// Starts the engine; it waits for the database (`ready`), and stops at shutdown. Stored
/// alerts are announced by the database (see [`store::insert_alert`]).
pub fn start(
    pool: Pool,
    settings: AlertSettings,
    mode: Mode,
    ready: storage::Ready,
    leadership: tokio::sync::watch::Receiver<crate::leadership::Standing>,
    mut shutdown: Shutdown,
) -> Alerts {
    let handle = Arc::new(AlertsHandle::default());
    let feed = Arc::new(Feed::new(settings.queue_capacity));
    let catch_up = Arc::new(tokio::sync::Notify::new());
    let engine = Engine {
        pool,
        settings,
        mode,
        handle: handle.clone(),
        feed: feed.clone(),
        catch_up: catch_up.clone(),
        trackers: HashMap::new(),
        unsaved: std::collections::BTreeSet::new(),
        leadership,
    };
    tokio::spawn(async move {
        tokio::select! {
            () = ready.wait() => engine.run(shutdown).await,
            () = shutdown.recv() => {}
        }
    });
    Alerts {
        handle,
        feed,
        catch_up,
    }
}

struct Engine {
    pool: Pool,
    settings: AlertSettings,
    mode: Mode,
    handle: Arc<AlertsHandle>,
    feed: Arc<Feed>,
    catch_up: Arc<tokio::sync::Notify>,
    trackers: HashMap<String, TrackerState>,
    /// Trackers whose watermark moved since it was saved, saved by [`Engine::flush`]; in
    /// tracker order, so the statement takes their rows in one order.
    unsaved: std::collections::BTreeSet<String>,
    /// The sweep for silent trackers scans the whole fleet: only the process leading
    /// `Job::Alerts` runs it, or every process would raise the same offline alert. In
    /// [`Mode::Led`] that process alone judges fixes too.
    leadership: tokio::sync::watch::Receiver<crate::leadership::Standing>,
}

impl Engine {
    async fn run(mut self, mut shutdown: Shutdown) {
        let period = (self.settings.offline_after() / 2)
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        let mut offline_check = tokio::time::interval(period);
        let mut flush = tokio::time::interval(WATERMARK_FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let feed = self.feed.clone();
        let catch_up = self.catch_up.clone();
        let mut was_leading = false;
        loop {
            tokio::select! {
                work = feed.next() => {
                    if self.mode == Mode::Led && !self.leadership.borrow().leading {
                        // Another instance judges; when this one takes over, it catches up.
                        self.flush().await;
                        self.trackers.clear();
                        continue;
                    }
                    let result = match work {
                        Work::Input(input) => self.on_input(&input).await,
                        Work::Resync(tracker) => self.resync(&tracker).await,
                    };
                    if let Err(err) = result {
                        tracing::warn!(%err, "alert engine could not handle a tracker's news");
                    }
                }
                changed = self.leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let leading = self.leadership.borrow_and_update().leading;
                    if self.mode == Mode::Led && leading && !was_leading {
                        self.catch_up().await;
                    }
                    was_leading = leading;
                }
                () = catch_up.notified() => {
                    if self.mode == Mode::Led && self.leadership.borrow().leading {
                        self.catch_up().await;
                    }
                }
                _ = offline_check.tick() => {
                    if !self.leadership.borrow().leading {
                        continue;
                    }
                    if let Err(err) = self.check_offline().await {
                        tracing::warn!(%err, "alert engine could not check for offline trackers");
                    }
                }
                _ = flush.tick() => self.flush().await,
                () = shutdown.recv() => {
                    self.flush().await;
                    return;
                }
            }
        }
    }

    /// Saves the watermarks that moved alone since the last flush.
    async fn flush(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let unsaved = std::mem::take(&mut self.unsaved);
        let states: Vec<(&str, store::StoredState)> = unsaved
            .iter()
            .filter_map(|t| self.trackers.get(t).map(|s| (t.as_str(), s.to_stored())))
            .collect();
        if let Err(err) = store::save_states(&self.pool, &states).await {
            // Kept for the next flush: the in-memory state is still the newest.
            tracing::warn!(%err, trackers = states.len(), "alert engine could not save watermarks");
            self.unsaved = unsaved;
        }
    }

    /// Reads back every tracker heard from lately (as far back as a fix can still raise an
    /// alert): this instance has just started to judge, or may have missed notices.
    async fn catch_up(&mut self) {
        // What another leader decided is in the database: state is read afresh, once this
        // one's unsaved watermarks are in it.
        self.flush().await;
        self.trackers.clear();
        let window = self.settings.max_fix_age().as_secs_f64() + RESYNC_SLACK.as_seconds_f64();
        match store::heard_since(&self.pool, window).await {
            Ok(trackers) => {
                tracing::info!(
                    trackers = trackers.len(),
                    "alert engine catching up with trackers heard from lately"
                );
                self.feed.resync(trackers);
            }
            Err(err) => tracing::warn!(%err, "alert engine could not catch up"),
        }
    }

    async fn state(&mut self, tracker: &str) -> Result<&mut TrackerState, StorageError> {
        if !self.trackers.contains_key(tracker) {
            let stored = store::load_state(&self.pool, tracker).await?;
            self.trackers
                .insert(tracker.to_owned(), TrackerState::from_stored(stored));
        }
        self.trackers
            .get_mut(tracker)
            .ok_or_else(|| StorageError::Pool("alert state vanished".to_owned()))
    }

    async fn on_input(&mut self, input: &Input) -> Result<(), StorageError> {
        let tracker = input.tracker().to_owned();
        let settings = self.settings;
        let mut out = Outcome::default();
        match input {
            Input::Fix(fix) => self.on_fix(fix, &mut out).await?,
            Input::Status { at, battery, .. } => {
                let state = self.state(&tracker).await?;
                state.heard(*at, &mut out);
                if let Some(percent) = battery {
                    state.battery(*percent, *at, &settings, &mut out);
                }
            }
            Input::Online { at, .. } => self.state(&tracker).await?.heard(*at, &mut out),
        }
        self.finish(&tracker, out).await
    }

    async fn on_fix(&mut self, fix: &FixRow, out: &mut Outcome) -> Result<(), StorageError> {
        let tracker = fix.tracker_id.as_str();
        let settings = self.settings;
        let version = self.handle.fences_version.load(Ordering::Relaxed);
        let stale = self
            .state(tracker)
            .await?
            .fences
            .as_ref()
            .is_none_or(|(v, _)| *v != version);
        if stale {
            let fences = store::fences_for(&self.pool, tracker).await?;
            self.state(tracker).await?.fences = Some((version, fences));
        }
        let state = self.state(tracker).await?;
        state.heard(fix.device_time.max(fix.received_at), out);
        let fences = state.fences.take().unwrap_or_default();
        // Its age is judged as it arrived: a fix committed late (from the spool) still counts.
        state.fix(
            fix.device_time,
            fix.lat,
            fix.lon,
            fix.accuracy,
            fix.battery,
            fix.received_at,
            &fences.1,
            &settings,
            out,
        );
        state.fences = Some(fences);
        Ok(())
    }

    /// Catches up with a tracker whose news did not fit in the feed: its committed fixes newer
    /// than the watermark, in device-time order, then its status as stored.
    async fn resync(&mut self, tracker: &str) -> Result<(), StorageError> {
        let max_age = TimeDelta::from_std(self.settings.max_fix_age()).unwrap_or(TimeDelta::MAX);
        let horizon = Utc::now()
            .checked_sub_signed(max_age + RESYNC_SLACK)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut after = self
            .state(tracker)
            .await?
            .last_fix_time
            .map_or(horizon, |t| t.max(horizon));
        loop {
            let fixes = store::fixes_after(&self.pool, tracker, after, RESYNC_PAGE).await?;
            for fix in &fixes {
                let mut out = Outcome::default();
                self.on_fix(fix, &mut out).await?;
                self.finish(tracker, out).await?;
            }
            match fixes.last() {
                Some(last) if fixes.len() as i64 == RESYNC_PAGE => after = last.device_time,
                _ => break,
            }
        }
        if let Some(status) = store::status_of(&self.pool, tracker).await? {
            let settings = self.settings;
            let mut out = Outcome::default();
            let state = self.state(tracker).await?;
            if status.online {
                state.heard(status.last_seen, &mut out);
            }
            if let Some(percent) = status.battery {
                state.battery(percent, status.last_seen, &settings, &mut out);
            }
            self.finish(tracker, out).await?;
        }
        Ok(())
    }

    /// Saves the state if it changed, then stores and pushes the alerts.
    async fn finish(&mut self, tracker: &str, out: Outcome) -> Result<(), StorageError> {
        if out.changed {
            let state = self.state(tracker).await?;
            state.saved_fix_time = state.last_fix_time;
            let stored = state.to_stored();
            store::save_states(&self.pool, &[(tracker, stored)]).await?;
            self.unsaved.remove(tracker);
        } else if out.watermark {
            let state = self.state(tracker).await?;
            state.saved_fix_time = state.last_fix_time;
            self.unsaved.insert(tracker.to_owned());
        }
        for alert in out.alerts {
            let view = store::insert_alert(
                &self.pool,
                tracker,
                alert.kind,
                alert.geofence_id,
                alert.at,
                &alert.details,
            )
            .await?;
            events::raised(alert.kind);
            webhooks::enqueue(&self.pool, view.id, tracker).await?;
        }
        Ok(())
    }

    async fn check_offline(&mut self) -> Result<(), StorageError> {
        let after = self.settings.offline_after();
        for (tracker, last_seen) in store::due_offline(&self.pool, after.as_secs_f64()).await? {
            let state = self.state(&tracker).await?;
            // Heard from in this process since: the database has not caught up yet.
            if state.last_heard.elapsed() < after || state.offline_alerted {
                continue;
            }
            state.offline_alerted = true;
            let out = Outcome {
                alerts: vec![NewAlert {
                    kind: "offline",
                    geofence_id: None,
                    at: Utc::now(),
                    details: json!({"last_seen": last_seen, "after_secs": after.as_secs()}),
                }],
                changed: true,
                watermark: false,
            };
            self.finish(&tracker, out).await?;
        }
        Ok(())
    }
}

pub(crate) mod events {
    //! Alert telemetry as small typed events.
    pub const RAISED: &str = "pettracker_alerts_raised_total";

    pub const WEBHOOK_ATTEMPTS: &str = "pettracker_webhook_attempts_total";

    pub fn raised(kind: &'static str) {
        metrics::counter!(RAISED, "kind" => kind).increment(1);
    }

    /// One webhook delivery attempt, and whether the receiver took it.
    pub fn webhook_attempt(delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        metrics::counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AlertSettings {
        AlertSettings {
            battery_low_percent: 20,
            offline_after_secs: 600,
            geofence_dwell_secs: 30,
            geofence_dwell_fixes: 2,
            geofence_margin_m: 10,
            max_fix_age_secs: 300,
            queue_capacity: 100,
            ..AlertSettings::default()
        }
    }

    fn fresh() -> TrackerState {
        TrackerState::from_stored(store::StoredState::default())
    }

    fn home() -> Vec<(i64, String, Shape)> {
        let shape =
            Shape::parse(&json!({"type": "circle", "center": [13.4, 52.5], "radius_m": 100}))
                .unwrap();
        vec![(1, "home".to_owned(), shape)]
    }

    /// Feeds (seconds after `t0`, latitude) fixes; returns the kinds of the alerts raised.
    fn feed(
        state: &mut TrackerState,
        t0: DateTime<Utc>,
        fixes: &[(i64, f64)],
    ) -> Vec<&'static str> {
        let mut out = Outcome::default();
        for (s, lat) in fixes {
            let t = t0 + TimeDelta::seconds(*s);
            state.fix(
                t,
                *lat,
                13.4,
                Some(5.0),
                None,
                t0 + TimeDelta::seconds(200),
                &home(),
                &settings(),
                &mut out,
            );
        }
        out.alerts.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn an_exit_fires_once_only_after_the_dwell_time_and_fix_count() {
        let t0 = Utc::now() - TimeDelta::seconds(200);
        let mut s = fresh();
        assert!(feed(&mut s, t0, &[(0, 52.5), (10, 52.5)]).is_empty());
        // One fix out, then back in: a GPS jump, no alert.
        assert!(feed(&mut s, t0, &[(20, 52.51), (25, 52.5)]).is_empty());
        // Out for 10 s only (two fixes), not yet; at 30 s it fires, and only once.
        assert!(feed(&mut s, t0, &[(40, 52.51), (50, 52.51)]).is_empty());
        assert_eq!(
            feed(&mut s, t0, &[(70, 52.51), (80, 52.51), (90, 52.51)]),
            ["geofence_exit"]
        );
    }

    #[test]
    fn late_and_old_fixes_never_fire() {
        let t0 = Utc::now() - TimeDelta::seconds(200);
        let mut s = fresh();
        assert!(feed(&mut s, t0, &[(100, 52.5)]).is_empty());
        // A late batch from before the newest fix: ignored however far out it was.
        assert!(
            feed(
                &mut s,
                t0,
                &[(10, 52.51), (20, 52.51), (50, 52.51), (90, 52.51)]
            )
            .is_empty()
        );
        // Fixes older than max_fix_age (now is t0+200 s): ignored too.
        assert!(feed(&mut s, t0, &[(-500, 52.51), (-400, 52.51)]).is_empty());
    }

    #[test]
    fn a_fix_outside_by_less_than_its_accuracy_decides_nothing() {
        let t0 = Utc::now() - TimeDelta::seconds(200);
        let mut s = fresh();
        feed(&mut s, t0, &[(0, 52.5)]);
        // ~11 m outside a 100 m circle, with a 10 m margin and 5 m accuracy: outside by > margin.
        // ~3 m outside: unsure, so even many such fixes never fire.
        let near = 52.5 + 103.0 / 111_195.0;
        assert!(feed(&mut s, t0, &[(40, near), (80, near), (120, near)]).is_empty());
    }

    #[test]
    fn battery_low_fires_once_per_crossing() {
        let mut s = fresh();
        let mut out = Outcome::default();
        for percent in [30, 21, 20, 15, 10, 22, 24, 19, 26, 20] {
            s.battery(percent, Utc::now(), &settings(), &mut out);
        }
        // 20 crosses; 22 and 24 do not re-arm (threshold + 5 = 25); 26 re-arms; 20 crosses again.
        assert_eq!(out.alerts.len(), 2);
    }
}
