//! What the ingest side reports the moment a message is validated, before it is stored: typed device events, and the sink ([`DeviceEventSink`]) the server subscribes with.
//!
//! The decode stage publishes here right after validation, before the batch is written: live
//! feeds do not wait for the database. Publishing never blocks and never fails the pipeline.
//!
//! This is the device side's whole interface to the live feeds and the alert engine: the server
//! implements the sink (its live bus) and adds its own events (alerts, command transitions)
//! there. Events are plain serializable data, so the sink can later be a bus between an ingest
//! process and API processes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::protocol::{Fix, Status, TrackerId};

/// One thing a tracker told the device side, validated and not yet stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// A validated fix.
    Position {
        tracker: TrackerId,
        received_at: DateTime<Utc>,
        fix: Fix,
    },
    /// A validated status report: battery, charging, firmware, signal.
    Status {
        tracker: TrackerId,
        received_at: DateTime<Utc>,
        status: Status,
    },
    /// Connected or disconnected (broker events, the `online` topic, a Last Will).
    Presence {
        tracker: TrackerId,
        online: bool,
        at: DateTime<Utc>,
    },
}

impl DeviceEvent {
    pub fn tracker(&self) -> &TrackerId {
        match self {
            DeviceEvent::Position { tracker, .. }
            | DeviceEvent::Status { tracker, .. }
            | DeviceEvent::Presence { tracker, .. } => tracker,
        }
    }
}

/// Where device events go. Implementations must not block in [`DeviceEventSink::publish`]: it
/// runs on the ingest path, once per validated message part.
pub trait DeviceEventSink: Send + Sync + 'static {
    fn publish(&self, event: DeviceEvent);
}

/// The ingest pipeline's handle on the sink: none by default (tests of the pipeline alone).
#[derive(Clone, Default)]
pub struct LivePublisher(Option<Arc<dyn DeviceEventSink>>);

impl LivePublisher {
    pub fn new(sink: Arc<dyn DeviceEventSink>) -> LivePublisher {
        LivePublisher(Some(sink))
    }

    /// Publishes the events of one decoded message, in the order the message held them.
    pub fn publish(&self, events: Vec<DeviceEvent>) {
        if let Some(sink) = &self.0 {
            for event in events {
                sink.publish(event);
            }
        }
    }
}

impl std::fmt::Debug for LivePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "LivePublisher(sink)"
        } else {
            "LivePublisher(none)"
        })
    }
}
