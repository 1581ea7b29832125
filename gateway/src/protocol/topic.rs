//! MQTT topics of the device protocol: parsing them, building them, and deciding what a collar
//! may publish and subscribe to.

use std::fmt;

use super::node::preview;
use super::values::{TrackerId, ValueError};

/// First level of every device topic.
pub const TOPIC_ROOT: &str = "trackers";

/// Which way a topic's messages flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Collar to server.
    Uplink,
    /// Server to collar.
    Downlink,
}

/// The last level of a device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Telemetry,
    Status,
    Online,
    CommandResults,
    Ack,
    Commands,
}

impl TopicKind {
    pub const ALL: [TopicKind; 6] = [
        TopicKind::Telemetry,
        TopicKind::Status,
        TopicKind::Online,
        TopicKind::CommandResults,
        TopicKind::Ack,
        TopicKind::Commands,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Status => "status",
            TopicKind::Online => "online",
            TopicKind::CommandResults => "command-results",
            TopicKind::Ack => "ack",
            TopicKind::Commands => "commands",
        }
    }

    pub fn parse(level: &str) -> Option<TopicKind> {
        TopicKind::ALL.into_iter().find(|k| k.as_str() == level)
    }

    pub fn direction(self) -> Direction {
        match self {
            TopicKind::Telemetry
            | TopicKind::Status
            | TopicKind::Online
            | TopicKind::CommandResults => Direction::Uplink,
            TopicKind::Ack | TopicKind::Commands => Direction::Downlink,
        }
    }

    /// The filter matching this kind for every tracker, e.g. `trackers/+/telemetry`, for the
    /// server's own subscriptions.
    pub fn all_trackers_filter(self) -> String {
        format!("{TOPIC_ROOT}/+/{}", self.as_str())
    }
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a topic is not a device topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic} is not of the form trackers/{{tracker id}}/{{kind}}")]
    NotADeviceTopic { topic: String },
    #[error("topic {topic}: tracker id {problem}")]
    InvalidTrackerId { topic: String, problem: ValueError },
    #[error(
        "topic {topic}: unknown kind {kind}; expected telemetry, status, online, command-results, ack or commands"
    )]
    UnknownKind { topic: String, kind: String },
}

/// A parsed `trackers/{id}/{kind}` topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceTopic {
    pub tracker: TrackerId,
    pub kind: TopicKind,
}

impl DeviceTopic {
    pub fn new(tracker: TrackerId, kind: TopicKind) -> Self {
        Self { tracker, kind }
    }

    /// Parses a concrete topic name. Filters with wildcards are refused, since `+` and `#` are not
    /// valid in tracker ids.
    pub fn parse(topic: &str) -> Result<DeviceTopic, TopicError> {
        let mut levels = topic.split('/');
        let (Some(TOPIC_ROOT), Some(id), Some(kind), None) =
            (levels.next(), levels.next(), levels.next(), levels.next())
        else {
            return Err(TopicError::NotADeviceTopic {
                topic: preview(topic),
            });
        };
        let tracker = TrackerId::parse(id).map_err(|problem| TopicError::InvalidTrackerId {
            topic: preview(topic),
            problem,
        })?;
        let kind = TopicKind::parse(kind).ok_or_else(|| TopicError::UnknownKind {
            topic: preview(topic),
            kind: preview(kind),
        })?;
        Ok(DeviceTopic { tracker, kind })
    }
}

impl fmt::Display for DeviceTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOPIC_ROOT}/{}/{}", self.tracker, self.kind)
    }
}

/// Topic names for one tracker.
pub mod topics {
    use super::{DeviceTopic, TopicKind, TrackerId};

    fn topic(tracker: &TrackerId, kind: TopicKind) -> String {
        DeviceTopic::new(tracker.clone(), kind).to_string()
    }

    pub fn telemetry(tracker: &TrackerId) -> String {
        topic(tracker, TopicKind::Telemetry)
    }

    pub fn status(tracker: &TrackerId) -> String {
        topic(tracker, TopicKind::Status)
    }

    pub fn online(tracker: &TrackerId) -> String {
        topic(tracker, TopicKind::Online)
    }

    pub fn command_results(tracker: &TrackerId) -> String {
        topic(tracker, TopicKind::CommandResults)
    }

    pub fn ack(tracker: &TrackerId) -> String {
        topic(tracker, TopicKind::Ack)
    }

    pub fn commands(tracker: &TrackerId) -> String {
        topic(tracker, TopicKind::Commands)
    }
}

/// Whether the collar authenticated as `tracker` may publish to `topic`: only its own uplink
/// topics, so one compromised collar cannot speak for another or impersonate the server.
pub fn device_may_publish(tracker: &TrackerId, topic: &str) -> bool {
    match DeviceTopic::parse(topic) {
        Ok(t) => t.tracker == *tracker && t.kind.direction() == Direction::Uplink,
        Err(_) => false,
    }
}

/// Whether the collar authenticated as `tracker` may subscribe to `filter`: exactly its own
/// `ack` and `commands` topics, nothing else.
///
/// Wildcards are refused even inside the collar's own subtree (`trackers/{id}/#`,
/// `trackers/{id}/+`): they would also match its own uplink topics, echoing every fix back over a
/// metered link, and would silently grow to cover any downlink topic added later. Exact matching
/// keeps the ACL auditable; a collar subscribes to both topics in one SUBSCRIBE packet anyway.
/// Shared subscriptions (`$share/...`) are refused by the same rule.
pub fn device_may_subscribe(tracker: &TrackerId, filter: &str) -> bool {
    filter == topics::ack(tracker) || filter == topics::commands(tracker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TrackerId {
        TrackerId::parse(s).unwrap()
    }

    #[test]
    fn every_kind_of_device_topic_parses() {
        for kind in TopicKind::ALL {
            let topic = format!("trackers/collar-1/{kind}");
            assert_eq!(
                DeviceTopic::parse(&topic),
                Ok(DeviceTopic::new(id("collar-1"), kind))
            );
        }
    }

    #[test]
    fn a_device_topic_displays_as_the_topic_it_was_parsed_from() {
        let topic = "trackers/collar-1/command-results";
        assert_eq!(DeviceTopic::parse(topic).unwrap().to_string(), topic);
    }

    #[test]
    fn topics_outside_the_tracker_tree_are_refused() {
        for topic in [
            "",
            "trackers",
            "trackers/collar-1",
            "trackers/collar-1/telemetry/extra",
            "trackers/collar-1/telemetry/",
            "/trackers/collar-1/telemetry",
            "Trackers/collar-1/telemetry",
            "devices/collar-1/telemetry",
        ] {
            assert!(
                matches!(
                    DeviceTopic::parse(topic),
                    Err(TopicError::NotADeviceTopic { .. })
                ),
                "{topic:?}"
            );
        }
    }

    #[test]
    fn a_topic_with_an_invalid_tracker_id_is_refused() {
        for topic in [
            "trackers//telemetry",
            "trackers/+/telemetry",
            "trackers/#/telemetry",
            "trackers/a b/telemetry",
        ] {
            assert!(
                matches!(
                    DeviceTopic::parse(topic),
                    Err(TopicError::InvalidTrackerId { .. })
                ),
                "{topic:?}"
            );
        }
        assert_eq!(
            DeviceTopic::parse("trackers/a+b/status")
                .unwrap_err()
                .to_string(),
            r#"topic "trackers/a+b/status": tracker id must only contain A-Z, a-z, 0-9, '_' and '-', found '+' at index 1"#
        );
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        assert_eq!(
            DeviceTopic::parse("trackers/collar-1/position")
                .unwrap_err()
                .to_string(),
            r#"topic "trackers/collar-1/position": unknown kind "position"; expected telemetry, status, online, command-results, ack or commands"#
        );
        assert!(DeviceTopic::parse("trackers/collar-1/Telemetry").is_err());
    }

    #[test]
    fn topic_helpers_build_each_topic_for_a_tracker() {
        let t = id("collar-1");
        assert_eq!(topics::telemetry(&t), "trackers/collar-1/telemetry");
        assert_eq!(topics::status(&t), "trackers/collar-1/status");
        assert_eq!(topics::online(&t), "trackers/collar-1/online");
        assert_eq!(
            topics::command_results(&t),
            "trackers/collar-1/command-results"
        );
        assert_eq!(topics::ack(&t), "trackers/collar-1/ack");
        assert_eq!(topics::commands(&t), "trackers/collar-1/commands");
        assert_eq!(
            TopicKind::Telemetry.all_trackers_filter(),
            "trackers/+/telemetry"
        );
    }

    #[test]
    fn a_device_may_publish_only_to_its_own_uplink_topics() {
        let me = id("collar-1");
        for kind in ["telemetry", "status", "online", "command-results"] {
            assert!(device_may_publish(
                &me,
                &format!("trackers/collar-1/{kind}")
            ));
            assert!(!device_may_publish(
                &me,
                &format!("trackers/collar-2/{kind}")
            ));
        }
    }

    #[test]
    fn a_device_may_not_publish_to_downlink_topics() {
        let me = id("collar-1");
        assert!(!device_may_publish(&me, "trackers/collar-1/ack"));
        assert!(!device_may_publish(&me, "trackers/collar-1/commands"));
    }

    #[test]
    fn a_device_may_not_publish_outside_the_tracker_tree() {
        let me = id("collar-1");
        assert!(!device_may_publish(&me, "$SYS/broker/load"));
        assert!(!device_may_publish(&me, "trackers/collar-1/telemetry/x"));
        assert!(!device_may_publish(&me, "trackers/collar-1/#"));
    }

    #[test]
    fn a_device_may_subscribe_to_its_own_ack_and_commands_topics() {
        let me = id("collar-1");
        assert!(device_may_subscribe(&me, "trackers/collar-1/ack"));
        assert!(device_may_subscribe(&me, "trackers/collar-1/commands"));
    }

    #[test]
    fn a_device_may_not_subscribe_with_wildcards_or_to_other_topics() {
        let me = id("collar-1");
        for filter in [
            "#",
            "trackers/#",
            "trackers/+/commands",
            "trackers/collar-1/#",
            "trackers/collar-1/+",
            "trackers/collar-2/commands",
            "trackers/collar-1/telemetry",
            "$share/g/trackers/collar-1/commands",
            "trackers/collar-1/commands/",
        ] {
            assert!(!device_may_subscribe(&me, filter), "{filter:?}");
        }
    }
}
