//! The broker's client events (`$SYS/brokers/{node}/clients/{clientid}/connected` and `.../disconnected`, published by EMQX and rmqtt) read as collars' presence.
//!
//! A collar signs in with its tracker id as both client id and username (docs/protocol.md), so
//! an event whose username differs (pettracker's own connections, anything else) is no collar's
//! and is passed over. The event's own time (`ts`, milliseconds) is the presence's time, capped at
//! now: a broker clock ahead must not move `last_seen` into the future.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::broker::DevicePublish;
use crate::protocol::{Presence, TrackerId};

/// The shared subscriptions to the client events, one per kind.
pub fn filters(group: &str) -> Vec<String> {
    ["connected", "disconnected"]
        .into_iter()
        .map(|kind| format!("$share/{group}/$SYS/brokers/+/clients/+/{kind}"))
        .collect()
}

/// Whether `topic` is a client event (the filters' topics).
pub fn is_event_topic(topic: &str) -> bool {
    event_kind(topic).is_some()
}

/// `Some(true)` for connected, `Some(false)` for disconnected.
fn event_kind(topic: &str) -> Option<bool> {
    let rest = topic.strip_prefix("$SYS/brokers/")?;
    let mut levels = rest.split('/');
    let (_node, clients, _client, kind) = (
        levels.next()?,
        levels.next()?,
        levels.next()?,
        levels.next()?,
    );
    if clients != "clients" || levels.next().is_some() {
        return None;
    }
    match kind {
        "connected" => Some(true),
        "disconnected" => Some(false),
        _ => None,
    }
}

/// A collar's presence told by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPresence {
    pub tracker: TrackerId,
    pub presence: Presence,
    pub at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Event {
    clientid: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    ts: Option<i64>,
}

/// Reads a client event: `Ok(None)` when it is not a collar's, `Err` with the reason when it
/// cannot be read.
pub fn parse(
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<BrokerPresence>, String> {
    let online = event_kind(topic).ok_or_else(|| format!("{topic} is no client event"))?;
    let event: Event =
        serde_json::from_slice(payload).map_err(|e| format!("unreadable client event: {e}"))?;
    if event.username.as_deref() != Some(event.clientid.as_str()) {
        return Ok(None);
    }
    let Ok(tracker) = TrackerId::parse(&event.clientid) else {
        return Ok(None);
    };
    let at = event
        .ts
        .and_then(DateTime::from_timestamp_millis)
        .map_or(now, |at| at.min(now));
    Ok(Some(BrokerPresence {
        tracker,
        presence: if online {
            Presence::Online
        } else {
            Presence::Offline
        },
        at,
    }))
}

/// The collar's `online` message a client event stands for (what the pipeline takes), `Ok(None)`
/// when it is not a collar's, `Err` with the reason when it cannot be read.
pub fn device_publish(
    topic: &str,
    payload: &[u8],
    qos: u8,
    now: DateTime<Utc>,
) -> Result<Option<DevicePublish>, String> {
    Ok(parse(topic, payload, now)?.map(|event| DevicePublish {
        topic: crate::protocol::topics::online(&event.tracker),
        tracker: event.tracker,
        payload: event.presence.as_str().as_bytes().to_vec().into(),
        qos,
        received_at: event.at,
        last_will: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
    }

    #[test]
    fn a_collars_connect_and_disconnect_events_are_its_presence_at_the_brokers_time() {
        let connected = parse(
            "$SYS/brokers/emqx@10.0.0.1/clients/rex/connected",
            br#"{"clientid":"rex","username":"rex","ts":1799999999000,"connack":0}"#,
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(connected.tracker.as_str(), "rex");
        assert_eq!(connected.presence, Presence::Online);
        assert_eq!(connected.at.timestamp_millis(), 1_799_999_999_000);
        let gone = parse(
            "$SYS/brokers/n1/clients/rex/disconnected",
            br#"{"clientid":"rex","username":"rex","reason":"tcp_closed"}"#,
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(gone.presence, Presence::Offline);
        assert_eq!(gone.at, now());
    }

    #[test]
    fn a_broker_clock_ahead_does_not_date_presence_in_the_future() {
        let event = parse(
            "$SYS/brokers/n1/clients/rex/connected",
            br#"{"clientid":"rex","username":"rex","ts":1900000000000}"#,
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(event.at, now());
    }

    #[test]
    fn events_of_clients_that_are_not_collars_are_passed_over_and_broken_ones_are_errors() {
        let topic = "$SYS/brokers/n1/clients/x/connected";
        for other in [
            r#"{"clientid":"ingest-0","username":"pettracker.server"}"#,
            r#"{"clientid":"rex","username":"undefined"}"#,
            r#"{"clientid":"rex"}"#,
            r#"{"clientid":"a/b","username":"a/b"}"#,
        ] {
            assert_eq!(parse(topic, other.as_bytes(), now()), Ok(None), "{other}");
        }
        assert!(parse(topic, b"not json", now()).is_err());
        assert!(parse(topic, br#"{"username":"rex"}"#, now()).is_err());
    }

    #[test]
    fn only_connected_and_disconnected_under_a_node_are_client_events() {
        assert!(is_event_topic("$SYS/brokers/n1/clients/rex/connected"));
        assert!(is_event_topic("$SYS/brokers/n1/clients/rex/disconnected"));
        for other in [
            "$SYS/brokers/n1/clients/rex/subscribed",
            "$SYS/brokers/n1/stats/connections/count",
            "$SYS/brokers/n1/clients/rex/connected/more",
            "trackers/rex/online",
        ] {
            assert!(!is_event_topic(other), "{other}");
        }
        assert_eq!(
            filters("ingest"),
            [
                "$share/ingest/$SYS/brokers/+/clients/+/connected",
                "$share/ingest/$SYS/brokers/+/clients/+/disconnected"
            ]
        );
    }
}
