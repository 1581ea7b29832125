//! What the other instances relay through the external broker, into this instance: device events onto its live bus, committed notices into its alert engine.

use std::sync::Arc;

use gateway::external::relay::RelayConsumer;
use gateway::live::DeviceEvent;
use gateway::protocol::TrackerId;

use super::{LiveBus, LiveEvent};
use crate::alerts::Alerts;

/// The consumer end of the live relay in an instance that serves owners.
pub struct FromOtherInstances {
    pub bus: Arc<LiveBus>,
    pub alerts_feed: Arc<crate::alerts::feed::Feed>,
    pub alerts_catch_up: Arc<tokio::sync::Notify>,
}

impl FromOtherInstances {
    pub fn new(bus: Arc<LiveBus>, alerts: &Alerts) -> FromOtherInstances {
        FromOtherInstances {
            bus,
            alerts_feed: alerts.feed.clone(),
            alerts_catch_up: alerts.catch_up.clone(),
        }
    }
}

impl RelayConsumer for FromOtherInstances {
    fn device_event(&self, event: DeviceEvent) {
        self.bus.publish(LiveEvent::Device(event));
    }

    fn committed(&self, trackers: Vec<TrackerId>) {
        // Only the instance leading the alert engine acts on them; the others drop them there.
        self.alerts_feed
            .resync(trackers.into_iter().map(String::from));
    }

    fn resubscribed(&self) {
        self.alerts_catch_up.notify_one();
    }
}
