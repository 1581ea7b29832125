//! Who a broker client is and which topics it may touch: the one set of rules the embedded broker's hooks and the HTTP endpoints an external broker calls (`src/http/broker_auth.rs`) both apply.
//!
//! Keeping the rules here, and nowhere else, means a collar gets the same answer whichever
//! broker it reached: a rule changed for one changes for both.

use crate::protocol::{Direction, TopicKind, TrackerId, device_may_publish, device_may_subscribe};

/// What a client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

/// Why a CONNECT does not name a tracker the way the device contract requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("client id is not a tracker id")]
    ClientIdNotATracker,
    #[error("no username")]
    NoUsername,
    #[error("username differs from client id")]
    UsernameDiffers,
}

/// The tracker a collar's CONNECT speaks for: client id = username = tracker id
/// (docs/protocol.md). Its secret is checked separately, against the database.
pub fn device_identity(
    client_id: &str,
    username: Option<&str>,
) -> Result<TrackerId, IdentityError> {
    let tracker = TrackerId::parse(client_id).map_err(|_| IdentityError::ClientIdNotATracker)?;
    match username {
        None => Err(IdentityError::NoUsername),
        Some(u) if u != tracker.as_str() => Err(IdentityError::UsernameDiffers),
        Some(_) => Ok(tracker),
    }
}

/// Whether the collar authenticated as `tracker` may do `action` on `topic`: publish on its own
/// uplink topics, subscribe to exactly its own `ack` and `commands` topics.
pub fn device_may(tracker: &TrackerId, action: Action, topic: &str) -> bool {
    match action {
        Action::Publish => device_may_publish(tracker, topic),
        Action::Subscribe => device_may_subscribe(tracker, topic),
    }
}

/// Whether pettracker's own client on an external broker (ingest and API instances, signed in
/// with the configured service credentials) may do `action` on `topic`.
///
/// It subscribes to every tracker's uplink topics, plain (`trackers/+/telemetry`) or shared
/// among instances (`$share/{group}/trackers/+/telemetry`), to the brokers' client
/// connected/disconnected events (`$SYS/brokers/+/clients/+/connected`, presence), and
/// publishes on any tracker's downlink topics (acks, commands); it publishes and subscribes on
/// the live relay between instances (`pettracker/v1/...`, [`crate::external::relay`]). Nothing
/// else: it never publishes for a collar, so a leaked service password cannot forge fixes.
pub fn service_may(action: Action, topic: &str) -> bool {
    use crate::external::relay;
    match action {
        Action::Publish => {
            crate::protocol::DeviceTopic::parse(topic)
                .is_ok_and(|t| t.kind.direction() == Direction::Downlink)
                || (relay::is_relay_topic(topic) && !topic.contains('+'))
        }
        Action::Subscribe => {
            let filter = unshared(topic);
            TopicKind::ALL
                .into_iter()
                .filter(|k| k.direction() == Direction::Uplink)
                .any(|k| filter == k.all_trackers_filter())
                || is_presence_filter(filter)
                || relay::is_relay_topic(topic)
        }
    }
}

/// The filter of a shared subscription (`$share/{group}/{filter}`), or `topic` itself.
fn unshared(topic: &str) -> &str {
    let Some(rest) = topic.strip_prefix("$share/") else {
        return topic;
    };
    match rest.split_once('/') {
        Some((group, filter))
            if !group.is_empty() && !group.contains(['+', '#']) && !filter.is_empty() =>
        {
            filter
        }
        // A malformed share is refused by what follows: it is no uplink filter.
        _ => topic,
    }
}

/// `$SYS/brokers/+/clients/+/connected` and `.../disconnected`: where EMQX and rmqtt announce
/// client sessions.
fn is_presence_filter(filter: &str) -> bool {
    matches!(
        filter,
        "$SYS/brokers/+/clients/+/connected" | "$SYS/brokers/+/clients/+/disconnected"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TrackerId {
        TrackerId::parse(s).unwrap()
    }

    #[test]
    fn a_device_is_named_by_equal_client_id_and_username() {
        assert_eq!(device_identity("rex", Some("rex")), Ok(id("rex")));
        assert_eq!(
            device_identity("rex", Some("fido")),
            Err(IdentityError::UsernameDiffers)
        );
        assert_eq!(device_identity("rex", None), Err(IdentityError::NoUsername));
        assert_eq!(
            device_identity("a b", Some("a b")),
            Err(IdentityError::ClientIdNotATracker)
        );
    }

    #[test]
    fn a_device_may_only_touch_its_own_topics() {
        let rex = id("rex");
        assert!(device_may(&rex, Action::Publish, "trackers/rex/telemetry"));
        assert!(!device_may(
            &rex,
            Action::Publish,
            "trackers/fido/telemetry"
        ));
        assert!(!device_may(&rex, Action::Publish, "trackers/rex/commands"));
        assert!(device_may(&rex, Action::Subscribe, "trackers/rex/commands"));
        assert!(!device_may(
            &rex,
            Action::Subscribe,
            "trackers/fido/commands"
        ));
        assert!(!device_may(
            &rex,
            Action::Subscribe,
            "trackers/rex/telemetry"
        ));
    }

    #[test]
    fn the_service_subscribes_to_uplink_plain_or_shared_and_to_presence() {
        for filter in [
            "trackers/+/telemetry",
            "trackers/+/status",
            "trackers/+/online",
            "trackers/+/command-results",
            "$share/pettracker/trackers/+/telemetry",
            "$SYS/brokers/+/clients/+/connected",
            "$SYS/brokers/+/clients/+/disconnected",
        ] {
            assert!(service_may(Action::Subscribe, filter), "{filter}");
        }
        for filter in [
            "#",
            "trackers/#",
            "trackers/+/commands",
            "trackers/+/ack",
            "$share//trackers/+/telemetry",
            "$share/g+/trackers/+/telemetry",
            "$share/g",
            "$SYS/#",
        ] {
            assert!(!service_may(Action::Subscribe, filter), "{filter}");
        }
    }

    #[test]
    fn the_service_publishes_downlink_only() {
        assert!(service_may(Action::Publish, "trackers/rex/ack"));
        assert!(service_may(Action::Publish, "trackers/rex/commands"));
        assert!(!service_may(Action::Publish, "trackers/rex/telemetry"));
        assert!(!service_may(Action::Publish, "trackers/+/commands"));
        assert!(!service_may(Action::Publish, "elsewhere"));
    }

    #[test]
    fn the_service_relays_live_events_between_instances_and_collars_may_not() {
        assert!(service_may(Action::Publish, "pettracker/v1/live/rex"));
        assert!(service_may(Action::Publish, "pettracker/v1/committed"));
        assert!(!service_may(Action::Publish, "pettracker/v1/live/+"));
        assert!(service_may(Action::Subscribe, "pettracker/v1/live/+"));
        assert!(service_may(Action::Subscribe, "pettracker/v1/committed"));
        assert!(!service_may(Action::Subscribe, "pettracker/v1/#"));
        assert!(!service_may(
            Action::Subscribe,
            "$share/g/pettracker/v1/live/+"
        ));
        for (action, topic) in [
            (Action::Publish, "pettracker/v1/live/rex"),
            (Action::Publish, "pettracker/v1/committed"),
            (Action::Subscribe, "pettracker/v1/live/+"),
            (Action::Subscribe, "pettracker/v1/committed"),
        ] {
            assert!(!device_may(&id("rex"), action, topic), "{topic}");
        }
    }
}
