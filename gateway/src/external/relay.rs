//! The live relay between instances behind an external broker: what an ingest instance validated and committed reaches the live feeds and the alert engine of every API instance.
//!
//! Two kinds of message, on topics only pettracker's service user may use (collars are refused
//! by the broker's ACL and pettracker's auth endpoints):
//! - `pettracker/v1/live/{tracker}`, QoS 0: one device event (a fix, a status report, a
//!   presence change) as the decode stage validated it, before it is stored. Every API (and
//!   `all`) instance subscribes, not shared: each feeds its own WebSockets. QoS 0 because a live
//!   feed prefers the newest event to a late one, and `since` fills any gap from the database.
//! - `pettracker/v1/committed`, QoS 1: the trackers whose news a batch committed. The instance
//!   leading the alert engine reads that news back from the database and judges it, so every
//!   fix stored by any ingest instance is judged once, in one place.
//!
//! Both carry the publishing instance's client id (`origin`): an `all` instance hears its own
//! events straight from its pipeline, sooner, and skips them when the broker hands them back.
//!
//! Publishing never waits: device events go through a bounded queue (a full one drops the event
//! and counts it, `pettracker_live_relay_dropped_total`); committed trackers gather in a set that
//! is sent as one notice when the connection is free, so a slow broker makes notices larger,
//! never lost. Order per tracker holds from one ingest instance; across instances it holds when
//! the broker sends one collar's messages to one instance (EMQX `hash_clientid`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use rumqttc::{AsyncClient, EventLoop, MqttOptions, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::{Connection, ConnectionEvent};
use crate::ingest::CommittedBatches;
use crate::live::{DeviceEvent, DeviceEventSink};
use crate::protocol::TrackerId;
use crate::shutdown::Shutdown;
use crate::storage::ingest::BatchRows;

/// The prefix of every relay topic.
pub const PREFIX: &str = "pettracker/v1/";
/// What every API instance subscribes to for device events.
pub const LIVE_FILTER: &str = "pettracker/v1/live/+";
/// Committed-batch notices.
pub const COMMITTED_TOPIC: &str = "pettracker/v1/committed";

/// Device events waiting for the relay connection; beyond it they are dropped (and counted).
pub const QUEUE: usize = 8192;
/// Trackers per committed notice: keeps a notice far below any broker's packet limit.
const NOTICE_TRACKERS: usize = 512;

/// The topic a tracker's device events are relayed on.
pub fn live_topic(tracker: &TrackerId) -> String {
    format!("{PREFIX}live/{tracker}")
}

/// Whether pettracker's service user may publish on `topic` or subscribe to it (as a filter)
/// for the relay.
pub fn is_relay_topic(topic: &str) -> bool {
    topic == LIVE_FILTER
        || topic == COMMITTED_TOPIC
        || topic
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix("live/"))
            .is_some_and(|tracker| TrackerId::parse(tracker).is_ok())
}

#[derive(Debug, Serialize, Deserialize)]
struct LiveMessage {
    origin: String,
    event: DeviceEvent,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommittedMessage {
    origin: String,
    trackers: Vec<TrackerId>,
}

/// What an instance does with what the other instances relay.
pub trait RelayConsumer: Send + Sync + 'static {
    /// A device event another instance validated. Must not wait.
    fn device_event(&self, event: DeviceEvent);
    /// Trackers whose news another instance committed. Must not wait.
    fn committed(&self, trackers: Vec<TrackerId>);
    /// The subscription was (re)made: notices sent while it was down are lost, so what depends
    /// on them catches up from the database.
    fn resubscribed(&self);
}

/// The publishing side, handed to the ingest pipeline as its device-event sink and its
/// committed-batch listener.
#[derive(Debug)]
pub struct RelayPublisher {
    events: mpsc::Sender<DeviceEvent>,
    committed: Mutex<BTreeSet<TrackerId>>,
    wake: Notify,
}

impl DeviceEventSink for RelayPublisher {
    fn publish(&self, event: DeviceEvent) {
        if self.events.try_send(event).is_err() {
            metrics::counter!("pettracker_live_relay_dropped_total").increment(1);
        }
    }
}

impl CommittedBatches for RelayPublisher {
    fn committed(&self, rows: &BatchRows) {
        let ids = rows
            .fixes
            .iter()
            .map(|f| f.tracker_id.as_str())
            .chain(rows.statuses.iter().map(|s| s.tracker_id.as_str()))
            .chain(rows.presence.iter().map(|p| p.tracker_id.as_str()))
            .filter_map(|id| TrackerId::parse(id).ok());
        let mut pending = self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = pending.len();
        pending.extend(ids);
        let grew = pending.len() > before;
        drop(pending);
        if grew {
            self.wake.notify_one();
        }
    }
}

/// Hands events to two sinks (the local live bus and the relay, in an `all` instance).
pub struct Tee<A, B>(pub A, pub B);

impl<A: DeviceEventSink, B: DeviceEventSink> DeviceEventSink for Tee<Arc<A>, Arc<B>> {
    fn publish(&self, event: DeviceEvent) {
        self.0.publish(event.clone());
        self.1.publish(event);
    }
}

impl<A: CommittedBatches + ?Sized, B: CommittedBatches + ?Sized> CommittedBatches
    for Tee<Arc<A>, Arc<B>>
{
    fn committed(&self, rows: &BatchRows) {
        self.0.committed(rows);
        self.1.committed(rows);
    }
}

impl<A, B> std::fmt::Debug for Tee<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tee")
    }
}

/// The relay's connections: `{client_id}-live-out` publishes (instances that ingest),
/// `{client_id}-live-in` subscribes (instances that serve owners). Two, so that a flood of
/// outgoing events never queues in front of a SUBSCRIBE.
pub struct Relay {
    outgoing: Option<Connection>,
    incoming: Option<Connection>,
}

impl Relay {
    /// Starts the connections asked for: `publish` for an instance that ingests, `consumer` for
    /// one that serves owners. Returns the publisher to plug into the pipeline.
    pub(super) fn start(
        options: impl Fn(&str) -> MqttOptions,
        origin: &str,
        publish: bool,
        consumer: Option<Arc<dyn RelayConsumer>>,
        shutdown: Shutdown,
    ) -> (Relay, Option<Arc<RelayPublisher>>) {
        let (outgoing, publisher) = if publish {
            let (tx, rx) = mpsc::channel(QUEUE);
            let publisher = Arc::new(RelayPublisher {
                events: tx,
                committed: Mutex::new(BTreeSet::new()),
                wake: Notify::new(),
            });
            let mut options = options("live-out");
            options.set_clean_session(true);
            let (client, events) = AsyncClient::new(options, 1024);
            let connection = Connection::spawn(client.clone(), events, "live-out", None);
            tokio::spawn(send(
                client,
                rx,
                publisher.clone(),
                origin.to_owned(),
                shutdown.clone(),
            ));
            (Some(connection), Some(publisher))
        } else {
            (None, None)
        };
        let incoming = consumer.map(|consumer| {
            let mut options = options("live-in");
            options.set_clean_session(true);
            let (client, events): (AsyncClient, EventLoop) = AsyncClient::new(options, 64);
            let (events_to, events_from) = mpsc::channel(1024);
            let connection = Connection::spawn(client.clone(), events, "live-in", Some(events_to));
            tokio::spawn(receive(
                client,
                events_from,
                consumer,
                origin.to_owned(),
                shutdown,
            ));
            connection
        });
        (Relay { outgoing, incoming }, publisher)
    }

    pub(super) fn is_connected(&self) -> bool {
        [&self.outgoing, &self.incoming]
            .into_iter()
            .flatten()
            .all(Connection::is_connected)
    }

    pub(super) async fn disconnect(self) {
        for connection in [self.outgoing, self.incoming].into_iter().flatten() {
            connection.disconnect().await;
        }
    }
}

/// Publishes queued device events (QoS 0) and pending committed notices (QoS 1) until shutdown.
async fn send(
    client: AsyncClient,
    mut events: mpsc::Receiver<DeviceEvent>,
    publisher: Arc<RelayPublisher>,
    origin: String,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let topic = live_topic(event.tracker());
                let message = LiveMessage { origin: origin.clone(), event };
                match serde_json::to_vec(&message) {
                    // Waits only while rumqttc's request queue is full: the events queue
                    // above it fills and drops instead, so ingest never waits.
                    Ok(payload) => {
                        if client.publish(topic, QoS::AtMostOnce, false, payload).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => tracing::warn!(%err, "a device event could not be encoded for the relay"),
                }
            }
            () = publisher.wake.notified() => {
                loop {
                    let trackers: Vec<TrackerId> = {
                        let mut pending = publisher.committed.lock().unwrap_or_else(PoisonError::into_inner);
                        std::iter::from_fn(|| pending.pop_first()).take(NOTICE_TRACKERS).collect()
                    };
                    if trackers.is_empty() {
                        break;
                    }
                    let message = CommittedMessage { origin: origin.clone(), trackers };
                    let Ok(payload) = serde_json::to_vec(&message) else { break };
                    if client.publish(COMMITTED_TOPIC, QoS::AtLeastOnce, false, payload).await.is_err() {
                        return;
                    }
                }
            }
            () = shutdown.recv() => return,
        }
    }
}

/// Subscribes on every (re)connection and hands what others relayed to `consumer`.
async fn receive(
    client: AsyncClient,
    mut events: mpsc::Receiver<ConnectionEvent>,
    consumer: Arc<dyn RelayConsumer>,
    origin: String,
    mut shutdown: Shutdown,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
            () = shutdown.recv() => return,
        };
        match event {
            ConnectionEvent::Connected => {
                let filters = [
                    rumqttc::SubscribeFilter::new(LIVE_FILTER.to_owned(), QoS::AtMostOnce),
                    rumqttc::SubscribeFilter::new(COMMITTED_TOPIC.to_owned(), QoS::AtLeastOnce),
                ];
                if let Err(err) = client.try_subscribe_many(filters) {
                    tracing::warn!(%err, "could not subscribe to the live relay");
                }
            }
            ConnectionEvent::SubAck(_) => consumer.resubscribed(),
            ConnectionEvent::Publish(publish) => deliver(&publish, &origin, consumer.as_ref()),
            ConnectionEvent::Lost => {}
        }
    }
}

fn deliver(publish: &rumqttc::Publish, origin: &str, consumer: &dyn RelayConsumer) {
    if publish.topic == COMMITTED_TOPIC {
        match serde_json::from_slice::<CommittedMessage>(&publish.payload) {
            Ok(m) if m.origin == origin => {}
            Ok(m) => consumer.committed(m.trackers),
            Err(err) => unreadable(&publish.topic, &err),
        }
        return;
    }
    match serde_json::from_slice::<LiveMessage>(&publish.payload) {
        Ok(m) if m.origin == origin => {}
        Ok(m) => consumer.device_event(m.event),
        Err(err) => unreadable(&publish.topic, &err),
    }
}

fn unreadable(topic: &str, err: &serde_json::Error) {
    metrics::counter!("pettracker_live_relay_unreadable_total").increment(1);
    tracing::warn!(%topic, %err, "unreadable live relay message (another pettracker version?)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_topics_are_the_two_filters_and_one_topic_per_valid_tracker() {
        let rex = TrackerId::parse("rex").unwrap();
        assert_eq!(live_topic(&rex), "pettracker/v1/live/rex");
        assert!(is_relay_topic(&live_topic(&rex)));
        assert!(is_relay_topic(LIVE_FILTER));
        assert!(is_relay_topic(COMMITTED_TOPIC));
        for other in [
            "pettracker/v1/live/#",
            "pettracker/v1/#",
            "pettracker/v1/live/rex/more",
            "pettracker/v1/live/",
            "trackers/rex/telemetry",
        ] {
            assert!(!is_relay_topic(other), "{other}");
        }
    }
}
