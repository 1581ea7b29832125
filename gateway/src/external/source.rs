//! The ingest session's job: every uplink message the external broker hands this instance goes into the pipeline the embedded broker feeds, and is acknowledged to the broker only once stored, in the order it came.
//!
//! MQTT wants PUBACKs in the order the PUBLISHes came [MQTT-4.6.0-2], and rumqttc sends them in
//! the order `ack` is called (it keeps no order of its own), so messages wait here in a queue in
//! arrival order and the front is acknowledged once the pipeline has committed or spooled it.
//! A message the pipeline could not store is handed in again (its place in the queue kept); one
//! taken on a connection that has since dropped is stored but not acknowledged: the broker sends
//! it again on the new connection (the session is persistent), and storing twice is harmless.
//!
//! Neither side waits for the other in a circle: the connection's loop waits only for this
//! worker to take an event, and the worker waits only for the pipeline; PUBACKs are handed to
//! rumqttc without waiting (`try_ack`) and kept here while its queue is full.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, MqttOptions, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Connection, ConnectionEvent};
use crate::backoff::Backoff;
use crate::broker::{DevicePublish, Refused};
use crate::ingest::{Ingest, Pending};
use crate::protocol::{DeviceTopic, Direction, TopicKind};
use crate::shutdown::Shutdown;

/// Messages taken and not yet stored; past it the worker stops taking more, and the broker
/// keeps them (its inflight window fills, then its queue for this session).
const MAX_WAITING: usize = 10_000;

/// Requests (PUBACKs, SUBSCRIBE) waiting for the connection's loop.
const REQUESTS: usize = 1024;

/// How soon PUBACKs that did not fit rumqttc's queue are offered again.
const ACK_RETRY: Duration = Duration::from_millis(5);

/// The shared subscriptions of an ingest instance: one per uplink topic of the device protocol.
pub fn filters(group: &str) -> Vec<String> {
    TopicKind::ALL
        .into_iter()
        .filter(|kind| kind.direction() == Direction::Uplink)
        .map(|kind| format!("$share/{group}/{}", kind.all_trackers_filter()))
        .collect()
}

/// The ingest session and its worker.
pub(super) struct Source {
    connection: Connection,
    /// The broker granted the subscriptions on the current connection.
    subscribed: Arc<AtomicBool>,
    worker: JoinHandle<()>,
}

impl Source {
    pub(super) fn start(
        options: MqttOptions,
        group: &str,
        presence_events: bool,
        ingest: Arc<Ingest>,
        revoked: Arc<super::revoked::Revoked>,
        shutdown: Shutdown,
    ) -> Source {
        let (client, events) = AsyncClient::new(options, REQUESTS);
        let (events_to, events_from) = mpsc::channel(64);
        let connection = Connection::spawn(client.clone(), events, "ingest", Some(events_to));
        let subscribed = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            client,
            subscribed: subscribed.clone(),
            ingest,
            revoked,
            filters: filters(group),
            presence_filters: if presence_events {
                super::presence::filters(group)
            } else {
                Vec::new()
            },
            subscribing: VecDeque::new(),
            generation: 0,
            waiting: VecDeque::new(),
            ready: VecDeque::new(),
            shutting_down: false,
            resubmit: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        };
        let worker = tokio::spawn(worker.run(events_from, shutdown));
        Source {
            connection,
            subscribed,
            worker,
        }
    }

    /// Connected, with the shared subscriptions in place: messages can come.
    pub(super) fn is_connected(&self) -> bool {
        self.connection.is_connected() && self.subscribed.load(Ordering::Acquire)
    }

    /// Waits until what was taken is stored and its PUBACKs handed over, then disconnects.
    pub(super) async fn shutdown(self) {
        let _ = self.worker.await;
        self.connection.disconnect().await;
    }
}

/// A message in the pipeline, waiting to be acknowledged.
struct InFlight {
    publish: rumqttc::Publish,
    /// What went into the pipeline, to hand in again if it could not be stored.
    device: DevicePublish,
    pending: Pending,
    /// The connection it came on; PUBACKs go only on that one.
    generation: u64,
}

struct Worker {
    client: AsyncClient,
    subscribed: Arc<AtomicBool>,
    ingest: Arc<Ingest>,
    /// Trackers whose messages are passed over (the broker may still deliver them).
    revoked: Arc<super::revoked::Revoked>,
    filters: Vec<String>,
    /// The broker's client events (presence); empty when not wanted.
    presence_filters: Vec<String>,
    /// The SUBSCRIBEs sent on this connection whose SUBACK has not come, in order (SUBACKs
    /// come in the order of their SUBSCRIBEs): `true` for the presence one.
    subscribing: VecDeque<bool>,
    /// Counts connections: a PUBACK belongs to the connection its message came on.
    generation: u64,
    /// QoS 1 messages in the pipeline, in arrival order.
    waiting: VecDeque<InFlight>,
    /// Stored, in arrival order, their PUBACK not yet taken by rumqttc.
    ready: VecDeque<rumqttc::Publish>,
    /// Taking nothing new; finishing what was taken.
    shutting_down: bool,
    /// Between hand-ins of a message neither the database nor the spool took: the spool's own
    /// retries wait by theirs, this one keeps a full disk from turning into a busy loop.
    resubmit: Backoff,
}

impl Worker {
    async fn run(mut self, mut events: mpsc::Receiver<ConnectionEvent>, mut shutdown: Shutdown) {
        loop {
            self.flush_acks();
            if self.shutting_down && self.waiting.is_empty() && self.ready.is_empty() {
                return;
            }
            let taking = self.shutting_down || self.waiting.len() < MAX_WAITING;
            tokio::select! {
                biased;
                () = shutdown.recv(), if !self.shutting_down => {
                    self.shutting_down = true;
                    // Out of the shared subscriptions first: while this instance is away (a
                    // restart, a scale-down) the broker gives the other instances its share
                    // instead of queueing it in this session. The session keeps what it had.
                    for filter in self.filters.iter().chain(&self.presence_filters) {
                        if let Err(err) = self.client.try_unsubscribe(filter.clone()) {
                            tracing::warn!(%err, %filter, "could not leave a shared subscription; the broker keeps routing its share here until the session expires");
                        }
                    }
                    tracing::info!(waiting = self.waiting.len(), "external broker: left the shared subscriptions; taking no more messages; acknowledging those stored");
                }
                stored = front_stored(&mut self.waiting), if !self.waiting.is_empty() => {
                    self.stored(stored).await;
                }
                event = events.recv(), if taking => match event {
                    Some(event) => self.event(event).await,
                    // The connection's loop ended: nothing more can be acknowledged.
                    None => return,
                },
                () = tokio::time::sleep(ACK_RETRY), if !self.ready.is_empty() => {}
            }
        }
    }

    async fn event(&mut self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Connected => {
                self.subscribed.store(false, Ordering::Release);
                self.generation = self.generation.wrapping_add(1);
                self.ready.clear();
                // A persistent session keeps its subscriptions, but one the broker lost (or a
                // first connection) needs them; subscribing again is harmless.
                self.subscribing.clear();
                let filters = self
                    .filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                match self.client.try_subscribe_many(filters) {
                    Ok(()) => self.subscribing.push_back(false),
                    Err(err) => tracing::error!(%err, "cannot subscribe at the external broker"),
                }
                // Apart, so that a broker refusing its client events (or having none) does
                // not refuse the uplink subscriptions with them.
                if !self.presence_filters.is_empty() {
                    let filters = self
                        .presence_filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if self.client.try_subscribe_many(filters).is_ok() {
                        self.subscribing.push_back(true);
                    }
                }
            }
            ConnectionEvent::Lost => {
                self.subscribed.store(false, Ordering::Release);
                self.subscribing.clear();
                // What is in rumqttc's queue is dropped with the connection; what is stored
                // from now on is not acknowledged: the broker sends it again.
                self.generation = self.generation.wrapping_add(1);
                self.ready.clear();
            }
            ConnectionEvent::SubAck(ack) => {
                use rumqttc::SubscribeReasonCode;
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure));
                if self.subscribing.pop_front() == Some(true) {
                    if refused {
                        tracing::warn!(filters = ?self.presence_filters, "the external broker refused its client events: presence comes from the collars' own online messages, their Last Will and the silence timeout only (set external_broker.presence_events = false to stop asking)");
                    } else {
                        tracing::info!(filters = ?self.presence_filters, "subscribed to the broker's client events");
                    }
                } else if refused {
                    tracing::error!(filters = ?self.filters, "the external broker refused a subscription: check that its ACL lets pettracker's user subscribe to them");
                } else {
                    self.subscribed.store(true, Ordering::Release);
                    tracing::info!(filters = ?self.filters, "subscribed at the external broker");
                }
            }
            ConnectionEvent::Publish(publish) => self.take(publish).await,
        }
    }

    /// Hands one message to the pipeline.
    async fn take(&mut self, publish: rumqttc::Publish) {
        if self.shutting_down {
            // Not acknowledged: the broker keeps it for this session.
            return;
        }
        let topic = publish.topic.clone();
        if super::presence::is_event_topic(&topic) {
            return self.take_client_event(publish).await;
        }
        let tracker = match DeviceTopic::parse(&topic) {
            Ok(t) if t.kind.direction() == Direction::Uplink => t.tracker,
            other => {
                // Not ingestible (a tracker id the protocol refuses): the broker should have
                // refused it; acknowledged, so it does not come back for ever.
                let why = other.map_or_else(|e| e.to_string(), |_| "a downlink topic".to_owned());
                tracing::warn!(%topic, why, "message from the external broker is not a device uplink; dropped");
                metrics::counter!(METRIC_DROPPED).increment(1);
                self.ready.push_back(publish);
                return;
            }
        };
        let device = DevicePublish {
            tracker,
            topic,
            payload: publish.payload.clone(),
            qos: match publish.qos {
                QoS::AtMostOnce => 0,
                _ => 1,
            },
            received_at: Utc::now(),
            last_will: false,
        };
        self.submit(publish, device).await;
    }

    /// A broker client event: a collar's connect or disconnect goes into the pipeline as its
    /// `online` message would; others' events are acknowledged and passed over.
    async fn take_client_event(&mut self, publish: rumqttc::Publish) {
        let qos = match publish.qos {
            QoS::AtMostOnce => 0,
            _ => 1,
        };
        let device = match super::presence::device_publish(
            &publish.topic,
            &publish.payload,
            qos,
            Utc::now(),
        ) {
            Ok(Some(device)) => device,
            Ok(None) => {
                self.ready.push_back(publish);
                return;
            }
            Err(why) => {
                tracing::warn!(topic = %publish.topic, why, "unreadable client event from the external broker; dropped");
                metrics::counter!(METRIC_DROPPED).increment(1);
                self.ready.push_back(publish);
                return;
            }
        };
        self.submit(publish, device).await;
    }

    /// Hands a message to the pipeline; a QoS 1 one waits in order for its PUBACK.
    async fn submit(&mut self, publish: rumqttc::Publish, device: DevicePublish) {
        if self.revoked.contains(device.tracker.as_str()) {
            tracing::debug!(tracker = %device.tracker, "message of a revoked tracker; dropped");
            metrics::counter!(METRIC_REVOKED).increment(1);
            self.ready.push_back(publish);
            return;
        }
        let qos0 = device.qos == 0;
        match self.ingest.submit(device.clone()).await {
            Ok(_) if qos0 => {}
            Ok(pending) => self.waiting.push_back(InFlight {
                publish,
                device,
                pending,
                generation: self.generation,
            }),
            Err(refused) => {
                tracing::warn!(%refused, "message not taken; the broker sends it again")
            }
        }
    }

    /// The front message is stored (or could not be).
    async fn stored(&mut self, result: Result<(), Refused>) {
        let Some(mut front) = self.waiting.pop_front() else {
            return;
        };
        match result {
            Ok(()) if front.generation == self.generation => {
                self.resubmit.reset();
                self.ready.push_back(front.publish);
            }
            Ok(()) => self.resubmit.reset(),
            Err(refused) => {
                // Neither the database nor the disk took it: hand it in again, keeping its
                // place (the spool's retry has its own backoff; this one just does not spin).
                tracing::warn!(%refused, "stored neither in the database nor in the spool; trying again");
                self.resubmit.wait().await;
                match self.ingest.submit(front.device.clone()).await {
                    Ok(pending) => {
                        front.pending = pending;
                        self.waiting.push_front(front);
                    }
                    Err(refused) => {
                        tracing::warn!(%refused, "message not taken; the broker sends it again")
                    }
                }
            }
        }
    }

    /// Hands stored messages' PUBACKs to rumqttc, in order, as far as its queue takes them.
    fn flush_acks(&mut self) {
        while let Some(publish) = self.ready.front() {
            if self.client.try_ack(publish).is_err() {
                return;
            }
            self.ready.pop_front();
        }
    }
}

async fn front_stored(waiting: &mut VecDeque<InFlight>) -> Result<(), Refused> {
    match waiting.front_mut() {
        Some(front) => front.pending.stored().await,
        None => std::future::pending().await,
    }
}

/// Messages from the external broker that were not device uplinks.
pub const METRIC_DROPPED: &str = "pettracker_external_dropped_total";
/// Messages of revoked trackers the external broker still delivered.
pub const METRIC_REVOKED: &str = "pettracker_external_revoked_dropped_total";

#[cfg(test)]
mod tests {
    #[test]
    fn an_ingest_instance_subscribes_shared_to_every_uplink_topic_and_no_downlink_one() {
        assert_eq!(
            super::filters("ingest"),
            [
                "$share/ingest/trackers/+/telemetry",
                "$share/ingest/trackers/+/status",
                "$share/ingest/trackers/+/online",
                "$share/ingest/trackers/+/command-results",
            ]
        );
    }
}
