//! The live bus: every event the live feeds and the alert engine hear, in one order — what devices said (from the gateway, as it validates), alerts raised, command transitions.
//!
//! [`LiveBus`] is a bounded tokio broadcast channel inside one process. Publishing overwrites
//! the oldest event for a subscriber that is `capacity` events behind, so it never waits: a
//! consumer that falls behind loses events (counted), never slows ingest. It is the gateway's
//! [`DeviceEventSink`], so device events enter it in the order the decode stage validated them,
//! and an alert raised for a fix follows that fix.

use std::sync::Arc;

use gateway::live::{DeviceEvent, DeviceEventSink};
use tokio::sync::broadcast;

use super::events;
use crate::alerts::store::AlertView;
use crate::commands::Announced;

/// One thing that happened to a tracker, as the live feed tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// A validated fix, status report or presence change (not yet stored when it leaves).
    Device(DeviceEvent),
    /// An alert the alert engine raised and stored.
    Alert(AlertView),
    /// A command changed state (announced by the database, from any process).
    Command(Announced),
}

impl LiveEvent {
    pub fn tracker_id(&self) -> &str {
        match self {
            LiveEvent::Device(event) => event.tracker().as_str(),
            LiveEvent::Alert(alert) => &alert.tracker_id,
            LiveEvent::Command(command) => &command.tracker_id,
        }
    }

    /// Whether it is a position (the hub remembers the last few of each tracker).
    pub fn is_position(&self) -> bool {
        matches!(self, LiveEvent::Device(DeviceEvent::Position { .. }))
    }
}

/// An event on its way, stamped with when it was published (for the publish-to-send latency).
#[derive(Debug, Clone)]
pub struct Published {
    pub event: LiveEvent,
    pub published_at: std::time::Instant,
}

/// The bus of one process.
#[derive(Debug, Clone)]
pub struct LiveBus {
    tx: broadcast::Sender<Arc<Published>>,
}

impl LiveBus {
    pub fn new(capacity: usize) -> LiveBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        LiveBus { tx }
    }

    /// Hands the event to every current subscriber; never waits.
    pub fn publish(&self, event: LiveEvent) {
        events::published();
        // An error only means nobody listens right now, which is fine.
        let _ = self.tx.send(Arc::new(Published {
            event,
            published_at: std::time::Instant::now(),
        }));
    }

    /// A new subscriber that sees the events published from now on, per tracker in order.
    pub fn subscribe(&self) -> LiveSubscription {
        LiveSubscription(self.tx.subscribe())
    }
}

impl DeviceEventSink for LiveBus {
    fn publish(&self, event: DeviceEvent) {
        LiveBus::publish(self, LiveEvent::Device(event));
    }
}

/// A subscriber's end of the [`LiveBus`].
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gateway::protocol::{Fix, Latitude, Longitude, TrackerId};

    /// A position event of `tracker` at `micros` after the epoch.
    pub(crate) fn position(tracker: &str, micros: i64) -> LiveEvent {
        let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
        LiveEvent::Device(DeviceEvent::Position {
            tracker: TrackerId::parse(tracker).unwrap(),
            received_at: t,
            fix: Fix {
                device_time: t,
                lat: Latitude::parse(52.5).unwrap(),
                lon: Longitude::parse(13.4).unwrap(),
                altitude: None,
                accuracy: None,
                speed: None,
                heading: None,
                satellites: None,
                battery: None,
                seq: None,
            },
        })
    }

    #[tokio::test]
    async fn a_subscriber_gets_published_events_in_order() {
        let bus = LiveBus::new(16);
        let mut sub = bus.subscribe();
        for i in 0..5 {
            LiveBus::publish(&bus, position("collar-1", 1_000 + i));
        }
        for i in 0..5 {
            let got = sub.recv().await.unwrap();
            assert_eq!(got.event, position("collar-1", 1_000 + i));
        }
    }

    #[tokio::test]
    async fn publishing_with_a_stalled_subscriber_never_waits_and_the_subscriber_skips_ahead() {
        let bus = LiveBus::new(4);
        let mut sub = bus.subscribe();
        // Far more than the capacity: publish must return every time.
        for i in 0..100 {
            LiveBus::publish(&bus, position("c", i));
        }
        let first = sub.recv().await.unwrap();
        assert_eq!(first.event, position("c", 96));
    }

    #[tokio::test]
    async fn device_events_from_the_gateway_enter_the_bus_as_they_are() {
        let bus = LiveBus::new(4);
        let mut sub = bus.subscribe();
        let LiveEvent::Device(device) = position("rex", 7) else {
            unreachable!()
        };
        DeviceEventSink::publish(&bus, device.clone());
        assert_eq!(sub.recv().await.unwrap().event, LiveEvent::Device(device));
    }
}
