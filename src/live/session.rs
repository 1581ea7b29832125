//! One WebSocket live-feed session: the client's subscribe/unsubscribe messages, snapshots and `since` replays from the database, live events from the hub, pings, and the reasons a session is closed.
//!
//! The protocol is in docs/live.md. A session only ever subscribes to trackers its user may see
//! (owner or member, checked with the same query as the REST API); anything else is answered
//! with an `error` message naming the tracker, exactly like an unknown tracker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use gateway::live::DeviceEvent;
use gateway::protocol::TrackerId;
use gateway::storage::ingest::FixRow;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use warp::ws::{Message, WebSocket};

use super::{Hub, LiveEvent, Outbox, Published, events};
use crate::trackers::{self, Cursor, FixView, HistoryQuery};

/// Close codes the server ends a session with (the 4000-4999 range is the application's).
pub mod close {
    /// The server is shutting down; reconnect (to another instance) with `since`.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent something that is not a WebSocket text message of the protocol.
    pub const UNSUPPORTED: u16 = 1003;
    /// The access token expired while connected; reconnect with a fresh one.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Nothing heard from the client, not even a pong, for `live.idle_timeout_secs`.
    pub const IDLE_TIMEOUT: u16 = 4002;
    /// The client kept falling behind after an overflow signal; reconnect with `since`.
    pub const TOO_SLOW: u16 = 4008;
}

/// Most positions one `since` replay sends per tracker; beyond it the client gets a
/// `replay_truncated` message and pages the rest from the history API.
const MAX_REPLAY: i64 = trackers::MAX_PAGE;

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe {
        /// Absent: every tracker the user may see now.
        #[serde(default)]
        trackers: Option<Vec<String>>,
        /// Per tracker, the cursor of the last position the client has.
        #[serde(default)]
        since: BTreeMap<String, String>,
    },
    Unsubscribe {
        trackers: Vec<String>,
    },
}

/// Why a session ended, when the server ended it.
struct Closing {
    code: u16,
    reason: &'static str,
    metric: &'static str,
}

/// Who the session is for, as authenticated before the upgrade.
#[derive(Debug, Clone, Copy)]
pub struct SessionAuth {
    pub user_id: i64,
    /// When the access token expires; `None` for API keys, which are checked only at connect.
    pub expires_at: Option<std::time::SystemTime>,
}

struct Session {
    hub: Arc<Hub>,
    pool: deadpool_postgres::Pool,
    user: i64,
    id: u64,
    outbox: Arc<Outbox>,
    ws: WebSocket,
    subscribed: HashSet<String>,
    /// Cursors already sent by a `since` replay, per tracker, so the same fix arriving from the
    /// hub is not sent again.
    replayed: HashMap<String, HashSet<String>>,
    /// Set after an overflow signal until the queue has been emptied once.
    behind: bool,
}

/// Runs a session until the client leaves, the token expires, or the server closes it.
pub async fn run(ws: WebSocket, hub: Arc<Hub>, pool: deadpool_postgres::Pool, auth: SessionAuth) {
    events::connected();
    let (id, mut queue, outbox) = hub.attach();
    let mut session = Session {
        hub: hub.clone(),
        pool,
        user: auth.user_id,
        id,
        outbox,
        ws,
        subscribed: HashSet::new(),
        replayed: HashMap::new(),
        behind: false,
    };
    let closing = session.serve(&mut queue, auth.expires_at).await;
    if let Some(closing) = closing {
        events::closed(closing.metric);
        // Best effort, bounded: a client that does not read will not get it anyway.
        let frame = Message::close_with(closing.code, closing.reason);
        let _ = tokio::time::timeout(Duration::from_secs(2), session.ws.send(frame)).await;
    }
    for tracker in std::mem::take(&mut session.subscribed) {
        hub.unsubscribe(id, &tracker);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), session.ws.close()).await;
    events::disconnected();
}

impl Session {
    async fn serve(
        &mut self,
        queue: &mut tokio::sync::mpsc::Receiver<Arc<Published>>,
        expires_at: Option<std::time::SystemTime>,
    ) -> Option<Closing> {
        let options = self.hub.options;
        let mut shutdown = self.hub.shutdown.clone();
        let expiry = expires_at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Instant::now() + left
        });
        let token_expired = async move {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(token_expired);
        let mut ping = tokio::time::interval(options.ping_interval);
        ping.reset();
        let mut last_heard = Instant::now();
        loop {
            let result = tokio::select! {
                () = shutdown.recv() => return Some(Closing {
                    code: close::GOING_AWAY, reason: "server shutting down", metric: "shutdown",
                }),
                () = &mut token_expired => return Some(Closing {
                    code: close::TOKEN_EXPIRED, reason: "token expired", metric: "token_expired",
                }),
                incoming = self.ws.next() => {
                    let Some(Ok(message)) = incoming else { return None };
                    last_heard = Instant::now();
                    self.on_client_message(message).await
                }
                event = queue.recv() => match event {
                    Some(published) => self.on_event(&published, queue.is_empty()).await,
                    None => return None,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > options.idle_timeout {
                        return Some(Closing {
                            code: close::IDLE_TIMEOUT, reason: "idle timeout", metric: "idle",
                        });
                    }
                    self.send(Message::ping(Vec::new())).await
                }
            };
            if let Err(closing) = result {
                return closing;
            }
        }
    }

    /// Sends one message; a client that does not take it within the idle timeout is dropped
    /// without a close frame (it would not read one either).
    async fn send(&mut self, message: Message) -> Result<(), Option<Closing>> {
        match tokio::time::timeout(self.hub.options.idle_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => {
                events::closed("send_timeout");
                Err(None)
            }
        }
    }

    async fn send_json(&mut self, value: &Value) -> Result<(), Option<Closing>> {
        self.send(Message::text(value.to_string())).await
    }

    async fn error(
        &mut self,
        code: &str,
        message: &str,
        tracker: Option<&str>,
    ) -> Result<(), Option<Closing>> {
        let mut body = json!({"type": "error", "code": code, "message": message});
        if let Some(tracker) = tracker {
            body["tracker"] = json!(tracker);
        }
        self.send_json(&body).await
    }

    async fn on_event(
        &mut self,
        published: &Published,
        queue_empty: bool,
    ) -> Result<(), Option<Closing>> {
        let dropped = self.outbox.take_dropped();
        if dropped > 0 {
            if self.behind {
                return Err(Some(Closing {
                    code: close::TOO_SLOW,
                    reason: "too slow: overflowed twice",
                    metric: "too_slow",
                }));
            }
            self.behind = true;
            events::overflow_signalled();
            self.send_json(&json!({"type": "overflow", "dropped": dropped}))
                .await?;
        }
        let tracker = published.event.tracker_id();
        if !self.subscribed.contains(tracker) {
            // Unsubscribed while the event was queued.
            return Ok(());
        }
        if let Some(fix) = position(&published.event)
            && let Some(seen) = self.replayed.get(tracker)
            && seen.contains(&Cursor(fix.ts).encode())
        {
            return Ok(());
        }
        let body = event_json(&published.event);
        self.send_json(&body).await?;
        events::sent(published.published_at.elapsed());
        if queue_empty {
            self.behind = false;
        }
        Ok(())
    }

    async fn on_client_message(&mut self, message: Message) -> Result<(), Option<Closing>> {
        if message.is_close() {
            return Err(None);
        }
        if message.is_ping() || message.is_pong() {
            return Ok(());
        }
        let Ok(text) = message.to_str() else {
            return Err(Some(Closing {
                code: close::UNSUPPORTED,
                reason: "only JSON text messages are accepted",
                metric: "unsupported",
            }));
        };
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Subscribe { trackers, since }) => {
                self.subscribe(trackers, since).await
            }
            Ok(ClientMessage::Unsubscribe { trackers }) => {
                for tracker in &trackers {
                    if self.subscribed.remove(tracker) {
                        self.hub.unsubscribe(self.id, tracker);
                        self.replayed.remove(tracker);
                    }
                }
                self.send_json(&json!({"type": "unsubscribed", "trackers": trackers}))
                    .await
            }
            Err(err) => {
                self.error("bad_request", &format!("invalid message: {err}"), None)
                    .await
            }
        }
    }

    async fn subscribe(
        &mut self,
        requested: Option<Vec<String>>,
        since: BTreeMap<String, String>,
    ) -> Result<(), Option<Closing>> {
        let mut wanted: Vec<(TrackerId, trackers::TrackerView)> = Vec::new();
        match requested {
            None => match trackers::list(&self.pool, self.user).await {
                Ok(list) => {
                    for view in list {
                        if let Ok(id) = TrackerId::parse(&view.id) {
                            wanted.push((id, view));
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "live feed cannot list trackers");
                    return self
                        .error("internal", "cannot list trackers now; retry", None)
                        .await;
                }
            },
            Some(ids) => {
                for raw in ids {
                    let Ok(id) = TrackerId::parse(&raw) else {
                        self.error("bad_request", "not a valid tracker id", Some(&raw))
                            .await?;
                        continue;
                    };
                    match trackers::get(&self.pool, self.user, &id).await {
                        Ok(Some(view)) => wanted.push((id, view)),
                        // Unknown and not-yours look the same, as in the REST API.
                        Ok(None) => {
                            self.error("not_found", "no such tracker", Some(&raw))
                                .await?
                        }
                        Err(err) => {
                            tracing::warn!(%err, "live feed cannot check a tracker");
                            self.error(
                                "internal",
                                "cannot check this tracker now; retry",
                                Some(&raw),
                            )
                            .await?;
                        }
                    }
                }
            }
        }
        let mut cursors = HashMap::new();
        for (tracker, raw) in &since {
            match Cursor::parse(raw) {
                Some(cursor) if wanted.iter().any(|(id, _)| id.as_str() == tracker) => {
                    cursors.insert(tracker.clone(), cursor);
                }
                Some(_) => {
                    self.error(
                        "bad_request",
                        "`since` names a tracker that is not being subscribed",
                        Some(tracker),
                    )
                    .await?
                }
                None => {
                    self.error(
                        "bad_request",
                        "`since` is not a cursor from this feed",
                        Some(tracker),
                    )
                    .await?
                }
            }
        }
        let names: Vec<&str> = wanted.iter().map(|(id, _)| id.as_str()).collect();
        self.send_json(&json!({"type": "subscribed", "trackers": names}))
            .await?;
        for (id, view) in wanted {
            // Subscribe before reading the database: an event arriving meanwhile waits in the
            // queue, and one that left just before is among `recent`.
            let recent = self.hub.subscribe(self.id, &self.outbox, id.as_str());
            self.subscribed.insert(id.to_string());
            self.send_snapshot(&view, &recent).await?;
            if let Some(cursor) = cursors.get(id.as_str()) {
                self.replay(&id, *cursor, &recent).await?;
            }
        }
        Ok(())
    }

    async fn send_snapshot(
        &mut self,
        view: &trackers::TrackerView,
        recent: &[Arc<Published>],
    ) -> Result<(), Option<Closing>> {
        let mut status = view.status.clone();
        // The newest position may be on its way to the database still.
        let newest_recent = recent
            .iter()
            .filter_map(|p| position(&p.event))
            .max_by_key(|fix| fix.ts);
        if let Some(fix) = newest_recent
            && status.last_fix.as_ref().is_none_or(|f| f.ts < fix.ts)
        {
            status.last_fix = Some(fix);
        }
        let cursor = status.last_fix.as_ref().map(|f| Cursor(f.ts).encode());
        let body = json!({
            "type": "snapshot",
            "tracker": view.id,
            "cursor": cursor,
            "status": status,
        });
        self.send_json(&body).await
    }

    /// Sends the positions after `since`: the database's and the remembered ones not stored yet,
    /// each once, in device-time order.
    async fn replay(
        &mut self,
        tracker: &TrackerId,
        since: Cursor,
        recent: &[Arc<Published>],
    ) -> Result<(), Option<Closing>> {
        let query = HistoryQuery {
            from: since.0,
            to: Utc::now() + TimeDelta::days(1),
            cursor: Some(since),
            limit: MAX_REPLAY,
            bucket: None,
        };
        let page = match trackers::positions(&self.pool, tracker, query).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(%err, "live feed cannot replay positions");
                return self
                    .error(
                        "internal",
                        "cannot replay positions now; retry",
                        Some(tracker.as_str()),
                    )
                    .await;
            }
        };
        let mut fixes: BTreeMap<String, FixView> = BTreeMap::new();
        let mut by_time: Vec<(chrono::DateTime<Utc>, String)> = Vec::new();
        for fix in page.positions {
            let cursor = Cursor(fix.ts).encode();
            by_time.push((fix.ts, cursor.clone()));
            fixes.insert(cursor, fix);
        }
        if page.next_cursor.is_none() {
            for fix in recent.iter().filter_map(|p| position(&p.event)) {
                if fix.ts > since.0 {
                    let cursor = Cursor(fix.ts).encode();
                    if let std::collections::btree_map::Entry::Vacant(slot) =
                        fixes.entry(cursor.clone())
                    {
                        by_time.push((fix.ts, cursor));
                        slot.insert(fix);
                    }
                }
            }
        }
        by_time.sort();
        let seen = self.replayed.entry(tracker.to_string()).or_default();
        seen.extend(by_time.iter().map(|(_, c)| c.clone()));
        for (_, cursor) in by_time {
            if let Some(fix) = fixes.remove(&cursor) {
                let body = json!({
                    "type": "position", "tracker": tracker.as_str(), "cursor": cursor,
                    "replay": true, "fix": fix,
                });
                self.send_json(&body).await?;
            }
        }
        if let Some(next) = page.next_cursor {
            let body = json!({
                "type": "replay_truncated", "tracker": tracker.as_str(), "next_cursor": next,
            });
            self.send_json(&body).await?;
        }
        Ok(())
    }
}

/// A live position as history will show it once stored: at the database's precision.
fn position(event: &LiveEvent) -> Option<FixView> {
    let LiveEvent::Device(DeviceEvent::Position {
        tracker,
        received_at,
        fix,
    }) = event
    else {
        return None;
    };
    let row = FixRow::new(tracker.as_str(), fix, *received_at);
    Some(FixView {
        ts: row.device_time,
        lat: row.lat,
        lon: row.lon,
        alt: row.altitude,
        acc: row.accuracy,
        spd: row.speed,
        hdg: row.heading,
        sat: row.satellites,
        bat: row.battery,
        seq: row.seq,
        received_at: Some(row.received_at),
    })
}

/// The feed message for an event (docs/live.md).
fn event_json(event: &LiveEvent) -> Value {
    let tracker = event.tracker_id();
    match event {
        LiveEvent::Device(DeviceEvent::Position { .. }) => {
            let fix = position(event);
            let cursor = fix.as_ref().map(|f| Cursor(f.ts).encode());
            json!({"type": "position", "tracker": tracker, "cursor": cursor, "fix": fix})
        }
        LiveEvent::Device(DeviceEvent::Status {
            received_at,
            status,
            ..
        }) => json!({
            "type": "status", "tracker": tracker, "at": received_at,
            "battery": status.battery.map(|b| i16::from(b.get())), "charging": status.charging,
            "firmware": status.firmware.as_ref().map(|f| f.as_str()),
        }),
        LiveEvent::Device(DeviceEvent::Presence { online, at, .. }) => {
            json!({"type": "status", "tracker": tracker, "at": at, "online": online})
        }
        LiveEvent::Alert(alert) => json!({"type": "alert", "tracker": tracker, "alert": alert}),
        LiveEvent::Command(command) => {
            json!({"type": "command", "tracker": tracker, "command": command})
        }
    }
}
