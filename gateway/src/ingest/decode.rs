//! Decode and validate stage: turns raw publishes into the rows to store and the events to report live, and anything refused into dead letters with the reason.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::broker::DevicePublish;
use crate::live::DeviceEvent;
use crate::protocol::{
    self, DeviceTopic, Presence, RawFix, TopicKind, TrackerId, ValidationLimits,
};
use crate::storage::ingest::{
    BatchRows, CommandReport, DeadLetterRow, FixRow, PresenceRow, StatusRow,
};

use super::events;

/// What enters the pipeline.
#[derive(Debug)]
pub enum Inbound {
    Publish(DevicePublish),
    /// From the broker's connect and disconnect events.
    Presence {
        tracker: TrackerId,
        online: bool,
        at: DateTime<Utc>,
    },
}

/// One inbound item with the means to tell its publisher it is safe.
#[derive(Debug)]
pub struct Envelope {
    pub inbound: Inbound,
    /// Fired once the item is committed or spooled, with when that was; present only for QoS 1
    /// publishes.
    pub done: Option<oneshot::Sender<Instant>>,
}

/// The rows one message produced, its live events, the highest `seq` it carried, and its
/// publisher's notifier.
#[derive(Debug, Default)]
pub struct Decoded {
    pub rows: BatchRows,
    /// What the live feeds hear of the message, in the order it held them.
    pub live: Vec<DeviceEvent>,
    pub ack: Option<(String, i64)>,
    pub done: Option<oneshot::Sender<Instant>>,
}

impl Decoded {
    /// The tracker this message concerns (one envelope is about one tracker), if it named a valid one.
    pub fn tracker(&self) -> Option<&str> {
        let r = &self.rows;
        r.fixes
            .first()
            .map(|f| f.tracker_id.as_str())
            .or_else(|| r.statuses.first().map(|x| x.tracker_id.as_str()))
            .or_else(|| r.presence.first().map(|x| x.tracker_id.as_str()))
            .or_else(|| self.ack.as_ref().map(|(t, _)| t.as_str()))
            .or_else(|| r.dead_letters.first().and_then(|d| d.tracker_id.as_deref()))
    }
}

impl Decoded {
    fn presence(&mut self, tracker: TrackerId, online: bool, at: DateTime<Utc>) {
        self.rows.presence.push(PresenceRow {
            tracker_id: tracker.to_string(),
            online,
            at,
        });
        self.live.push(DeviceEvent::Presence {
            tracker,
            online,
            at,
        });
    }
}

/// Decodes and validates one envelope. Never fails: what cannot be used becomes a dead letter.
pub fn decode(envelope: Envelope, now: DateTime<Utc>, limits: &ValidationLimits) -> Decoded {
    let mut out = Decoded {
        done: envelope.done,
        ..Decoded::default()
    };
    let publish = match envelope.inbound {
        Inbound::Presence {
            tracker,
            online,
            at,
        } => {
            out.presence(tracker, online, at);
            return out;
        }
        Inbound::Publish(publish) => publish,
    };
    let tracker = publish.tracker.to_string();
    let dead = |reason: String, payload: Vec<u8>| DeadLetterRow {
        tracker_id: Some(tracker.clone()),
        topic: publish.topic.clone(),
        payload,
        reason,
        received_at: publish.received_at,
    };
    let kind = match DeviceTopic::parse(&publish.topic) {
        Ok(topic) => topic.kind,
        Err(err) => {
            events::message_received(None);
            out.rows
                .dead_letters
                .push(dead(format!("topic: {err}"), publish.payload.to_vec()));
            return out;
        }
    };
    events::message_received(Some(kind));
    match kind {
        TopicKind::Telemetry => match protocol::decode_telemetry(&publish.payload) {
            Ok(raw_fixes) => {
                let mut max_seq: Option<u64> = None;
                for raw in raw_fixes {
                    max_seq = max_seq.max(raw.seq);
                    match raw.validate(now, limits) {
                        Ok(fix) => {
                            out.rows
                                .fixes
                                .push(FixRow::new(&tracker, &fix, publish.received_at));
                            out.live.push(DeviceEvent::Position {
                                tracker: publish.tracker.clone(),
                                received_at: publish.received_at,
                                fix,
                            });
                        }
                        Err(rejection) => out
                            .rows
                            .dead_letters
                            .push(dead(rejection.to_string(), raw_fix_json(&raw))),
                    }
                }
                // Refused fixes are acknowledged too: they are kept as dead letters, and
                // re-sending them would be refused again.
                if let Some(seq) = max_seq.and_then(|s| i64::try_from(s).ok()) {
                    out.ack = Some((tracker.clone(), seq));
                }
            }
            Err(err) => out
                .rows
                .dead_letters
                .push(dead(err.to_string(), publish.payload.to_vec())),
        },
        TopicKind::Status => match protocol::decode_status(&publish.payload)
            .map_err(|e| e.to_string())
            .and_then(|raw| raw.validate(now, limits).map_err(|e| e.to_string()))
        {
            Ok(status) => {
                out.rows
                    .statuses
                    .push(StatusRow::new(&tracker, &status, publish.received_at));
                out.live.push(DeviceEvent::Status {
                    tracker: publish.tracker.clone(),
                    received_at: publish.received_at,
                    status,
                });
            }
            Err(reason) => out
                .rows
                .dead_letters
                .push(dead(reason, publish.payload.to_vec())),
        },
        TopicKind::Online => match protocol::decode_online(&publish.payload) {
            Ok(presence) => out.presence(
                publish.tracker.clone(),
                presence == Presence::Online,
                publish.received_at,
            ),
            Err(err) => out
                .rows
                .dead_letters
                .push(dead(err.to_string(), publish.payload.to_vec())),
        },
        TopicKind::CommandResults => match protocol::decode_command_result(&publish.payload) {
            Ok(result) => out.rows.command_reports.push(CommandReport {
                tracker_id: tracker.clone(),
                command_id: result.command_id.as_str().to_owned(),
                status: result.status,
                reason: result.reason,
                received_at: publish.received_at,
                topic: publish.topic.clone(),
                payload: publish.payload.to_vec(),
            }),
            Err(err) => out
                .rows
                .dead_letters
                .push(dead(err.to_string(), publish.payload.to_vec())),
        },
        // Downlink topics are the server's to publish; in open mode they are only routed.
        TopicKind::Ack | TopicKind::Commands => {}
    }
    out
}

fn raw_fix_json(raw: &RawFix) -> Vec<u8> {
    serde_json::to_vec(raw).unwrap_or_default()
}
