//! Turns what the database announces (alerts raised, command transitions, from this or any other instance) into live events.
//!
//! The live feed depends on the alert and command modules for these types, never the other way:
//! those modules write to the database, and the database's `NOTIFY` is what reaches here.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{LiveBus, LiveEvent};
use crate::alerts::store::{ALERT_CHANNEL, AlertView};
use crate::commands::{Announced, NOTIFY_CHANNEL};

/// Passes the alerts announced on [`ALERT_CHANNEL`] to this instance's live feeds.
pub async fn alerts(announcements: mpsc::Receiver<String>, bus: Arc<LiveBus>) {
    forward::<AlertView>(announcements, &bus, ALERT_CHANNEL, LiveEvent::Alert).await;
}

/// Passes the command transitions announced on [`NOTIFY_CHANNEL`] to this instance's live feeds.
pub async fn commands(announcements: mpsc::Receiver<String>, bus: Arc<LiveBus>) {
    forward::<Announced>(announcements, &bus, NOTIFY_CHANNEL, LiveEvent::Command).await;
}

async fn forward<T: serde::de::DeserializeOwned>(
    mut announcements: mpsc::Receiver<String>,
    bus: &LiveBus,
    channel: &'static str,
    event: fn(T) -> LiveEvent,
) {
    while let Some(raw) = announcements.recv().await {
        match serde_json::from_str::<T>(&raw) {
            Ok(announced) => bus.publish(event(announced)),
            // A payload this version cannot read (another release's, during an upgrade) is
            // skipped: the live feed is a hint, the database stays the record.
            Err(err) => tracing::warn!(channel, %raw, %err, "unreadable announcement"),
        }
    }
}
