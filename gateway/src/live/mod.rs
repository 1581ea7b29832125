//! Live events: what the ingest side tells the live hub the moment a message is validated, and the one interface ([`LiveBus`]) they travel through.
//!
//! The decode stage publishes here right after validation, before the batch is written: live
//! feeds do not wait for the database. Publishing never blocks and never fails the pipeline; a
//! consumer that falls behind loses events (counted), never slows ingest.
//!
//! [`LiveBus`] is the seam for running several server processes later: [`InProcessBus`] is a
//! tokio broadcast channel inside one process; an MQTT- or LISTEN/NOTIFY-backed bus would
//! implement the same two methods, which is why events are plain serializable data.

pub mod events;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::storage::ingest::{BatchRows, FixRow};

/// The cursor of a position: its device time in microseconds since the Unix epoch, as lower-case
/// hex after a `t`. The same format as the positions history cursor, so a live event's cursor can
/// be passed to the history API and back to the live feed as `since`.
pub fn position_cursor(device_time: DateTime<Utc>) -> String {
    format!("t{:x}", device_time.timestamp_micros())
}

/// One thing that happened to a tracker, as the live feed tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A validated fix (not yet stored when the event leaves).
    Position { fix: FixRow },
    /// A status report: battery, charging, firmware.
    Status {
        tracker_id: String,
        at: DateTime<Utc>,
        battery: Option<i16>,
        charging: Option<bool>,
        firmware: Option<String>,
    },
    /// Connected or disconnected (broker events, the `online` topic, a Last Will).
    Presence {
        tracker_id: String,
        online: bool,
        at: DateTime<Utc>,
    },
    /// An alert raised by the server (geofence, battery, offline); `body` is what the feed sends.
    Alert {
        tracker_id: String,
        body: serde_json::Value,
    },
    /// A command to the collar changed state (see the commands API); `body` is the transition.
    Command {
        tracker_id: String,
        body: serde_json::Value,
    },
}

impl LiveEvent {
    pub fn tracker_id(&self) -> &str {
        match self {
            LiveEvent::Position { fix } => &fix.tracker_id,
            LiveEvent::Status { tracker_id, .. }
            | LiveEvent::Presence { tracker_id, .. }
            | LiveEvent::Alert { tracker_id, .. }
            | LiveEvent::Command { tracker_id, .. } => tracker_id,
        }
    }

    /// The live events of one decoded message, in the order the message held them.
    pub fn from_rows(rows: &BatchRows) -> impl Iterator<Item = LiveEvent> + '_ {
        let fixes = rows
            .fixes
            .iter()
            .map(|fix| LiveEvent::Position { fix: fix.clone() });
        let statuses = rows.statuses.iter().map(|s| LiveEvent::Status {
            tracker_id: s.tracker_id.clone(),
            at: s.received_at,
            battery: s.battery,
            charging: s.charging,
            firmware: s.firmware.clone(),
        });
        let presence = rows.presence.iter().map(|p| LiveEvent::Presence {
            tracker_id: p.tracker_id.clone(),
            online: p.online,
            at: p.at,
        });
        fixes.chain(statuses).chain(presence)
    }
}

/// An event on its way, stamped with when it was published (for the publish-to-send latency).
#[derive(Debug, Clone)]
pub struct Published {
    pub event: LiveEvent,
    pub published_at: std::time::Instant,
}

/// Where live events go and where the hub reads them from. Implementations must not block in
/// [`LiveBus::publish`]: it runs on the ingest path.
pub trait LiveBus: Send + Sync + 'static {
    /// Hands the event to every current subscriber; drops it (counted) rather than wait.
    fn publish(&self, event: LiveEvent);
    /// A new subscriber that sees the events published from now on, per tracker in order.
    fn subscribe(&self) -> LiveSubscription;
}

/// A subscriber's end of a [`LiveBus`].
#[derive(Debug)]
pub struct LiveSubscription(broadcast::Receiver<Arc<Published>>);

impl LiveSubscription {
    /// The next event; `None` once the bus is gone. A subscriber that fell behind skips what it
    /// missed (counted in `pettracker_live_bus_lagged_total`) and goes on with the oldest kept.
    pub async fn recv(&mut self) -> Option<Arc<Published>> {
        loop {
            match self.0.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(n)) => events::bus_lagged(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The bus inside one process: a bounded broadcast channel. Publishing overwrites the oldest
/// event when a subscriber is `capacity` events behind, so it never waits.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    tx: broadcast::Sender<Arc<Published>>,
}

impl InProcessBus {
    pub fn new(capacity: usize) -> InProcessBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        InProcessBus { tx }
    }
}

impl LiveBus for InProcessBus {
    fn publish(&self, event: LiveEvent) {
        events::published();
        // An error only means nobody listens right now, which is fine.
        let _ = self.tx.send(Arc::new(Published {
            event,
            published_at: std::time::Instant::now(),
        }));
    }

    fn subscribe(&self) -> LiveSubscription {
        LiveSubscription(self.tx.subscribe())
    }
}

/// The ingest pipeline's handle on the bus: none by default (tests of the pipeline alone).
#[derive(Clone, Default)]
pub struct LivePublisher(Option<Arc<dyn LiveBus>>);

impl LivePublisher {
    pub fn new(bus: Arc<dyn LiveBus>) -> LivePublisher {
        LivePublisher(Some(bus))
    }

    /// Publishes the live events of one decoded message.
    pub fn publish_rows(&self, rows: &BatchRows) {
        if let Some(bus) = &self.0 {
            for event in LiveEvent::from_rows(rows) {
                bus.publish(event);
            }
        }
    }
}

impl std::fmt::Debug for LivePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "LivePublisher(bus)"
        } else {
            "LivePublisher(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(tracker: &str, micros: i64) -> FixRow {
        let t = DateTime::from_timestamp_micros(micros).unwrap();
        FixRow {
            tracker_id: tracker.to_owned(),
            device_time: t,
            received_at: t,
            lat: 52.0,
            lon: 13.0,
            altitude: None,
            accuracy: None,
            speed: None,
            heading: None,
            satellites: None,
            battery: None,
            seq: None,
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_published_events_in_order() {
        let bus = InProcessBus::new(16);
        let mut sub = bus.subscribe();
        for i in 0..5 {
            bus.publish(LiveEvent::Position {
                fix: fix("collar-1", 1_000 + i),
            });
        }
        for i in 0..5 {
            let got = sub.recv().await.unwrap();
            assert_eq!(
                got.event,
                LiveEvent::Position {
                    fix: fix("collar-1", 1_000 + i)
                }
            );
        }
    }

    #[tokio::test]
    async fn publishing_with_a_stalled_subscriber_never_waits_and_the_subscriber_skips_ahead() {
        let bus = InProcessBus::new(4);
        let mut sub = bus.subscribe();
        // Far more than the capacity: publish must return every time.
        for i in 0..100 {
            bus.publish(LiveEvent::Position { fix: fix("c", i) });
        }
        let first = sub.recv().await.unwrap();
        assert_eq!(first.event, LiveEvent::Position { fix: fix("c", 96) });
    }

    #[test]
    fn a_position_cursor_is_the_history_cursor_format() {
        let t = DateTime::from_timestamp_micros(0x1234_5678).unwrap();
        assert_eq!(position_cursor(t), "t12345678");
    }
}
