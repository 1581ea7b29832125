//! An external MQTT broker (an EMQX, VerneMQ, Mosquitto or rmqtt cluster) in place of the embedded one: the connections pettracker keeps to it, and the downlink through it.
//!
//! Two connections, so that neither can hold the other up:
//! - the *ingest session* (instances that ingest): client id `client_id`, a persistent session
//!   (clean session off) subscribed with `$share/{group}/trackers/+/{kind}` to every uplink topic,
//!   acknowledging each message to the broker only once it is stored ([`source`]). Instances of
//!   one group share the collars' messages; one that dies gets its unacknowledged messages again
//!   when it comes back with the same client id.
//! - the *downlink*: client id `{client_id}-downlink`, a clean session that only publishes acks
//!   and commands ([`Downlink`]). Its outgoing publishes never queue in front of the ingest
//!   session's PUBACKs.
//!
//! Instances that ingest also publish what they validate and commit on the live relay, and
//! instances that serve owners subscribe to it ([`relay`]), each on connections of their own.
//!
//! The broker authenticates the collars and enforces their topics (pettracker's auth endpoints
//! back it), so the tracker a message is for is taken from its topic.

pub mod presence;
pub mod relay;
pub mod revoked;
pub mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::broker::{BrokerError, Downlink};
use crate::ingest::Ingest;
use crate::shutdown::Shutdown;

/// Where the broker is and who pettracker is to it.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    pub url: BrokerUrl,
    /// This instance's MQTT client id: stable across restarts (a StatefulSet pod's name), so a
    /// restarted instance resumes its persistent session and gets what it had not acknowledged.
    pub client_id: String,
    /// The shared-subscription group the ingest instances form.
    pub group: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// PEM certificates the broker's TLS certificate must chain to (`mqtts://` only).
    pub ca_file: Option<PathBuf>,
    pub keep_alive: Duration,
    /// Largest MQTT packet, both ways.
    pub max_packet_size: usize,
    /// Subscribe (shared) to the broker's client connected/disconnected events for presence.
    pub presence_events: bool,
}

/// `mqtt://host:port` or `mqtts://host:port`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses the URL; the error says what is wrong with it (the caller names the key).
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!(
                "{url:?} must start with mqtt:// or mqtts:// (e.g. mqtt://emqx:1883)"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "{url:?}: only a host and a port (credentials go in their own keys)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal without a port: `[::1]`.
            Some((host, _)) if rest.ends_with(']') && host.starts_with('[') => (rest, None),
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: {port:?} is not a port"))?,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// Why the connections cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("cannot read the CA file {path} (external_broker.ca_file): {reason}")]
    Ca { path: PathBuf, reason: String },
}

/// The connections to the external broker.
pub struct ExternalBroker {
    downlink: Connection,
    source: Option<source::Source>,
    relay: relay::Relay,
}

/// The live relay's ends in this instance: whether it publishes (it ingests) and who hears what
/// the others publish (it serves owners).
pub struct RelayEnds {
    pub publish: bool,
    pub consumer: Option<Arc<dyn relay::RelayConsumer>>,
}

/// Starts the live relay's connections; the publisher goes into the ingest pipeline (before
/// [`start`], which needs the pipeline).
pub fn start_relay(
    config: &ExternalConfig,
    ends: RelayEnds,
    shutdown: Shutdown,
) -> Result<(relay::Relay, Option<Arc<relay::RelayPublisher>>), ExternalError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = transport(config)?;
    Ok(relay::Relay::start(
        |suffix| {
            options(
                config,
                format!("{}-{suffix}", config.client_id),
                transport.clone(),
            )
        },
        &config.client_id,
        ends.publish,
        ends.consumer,
        shutdown,
    ))
}

/// Connects to the broker (in the background: a broker that is away at start is retried with
/// backoff, and readiness says so). With `ingest`, the ingest session subscribes and feeds it,
/// passing over the messages of `revoked` trackers. `relay` (from [`start_relay`]) is kept with
/// the other connections.
pub fn start(
    config: &ExternalConfig,
    ingest: Option<(Arc<Ingest>, Arc<revoked::Revoked>)>,
    relay: relay::Relay,
    shutdown: Shutdown,
) -> Result<ExternalBroker, ExternalError> {
    // The TLS client uses ring explicitly, as the embedded broker's listener does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = transport(config)?;
    let mut downlink_options = options(
        config,
        format!("{}-downlink", config.client_id),
        transport.clone(),
    );
    downlink_options.set_clean_session(true);
    let (client, events) = AsyncClient::new(downlink_options, DOWNLINK_QUEUE);
    let downlink = Connection::spawn(client, events, "downlink", None);
    let source = ingest.map(|(ingest, revoked)| {
        let mut options = options(config, config.client_id.clone(), transport);
        options.set_clean_session(false);
        options.set_manual_acks(true);
        source::Source::start(
            options,
            &config.group,
            config.presence_events,
            ingest,
            revoked,
            shutdown,
        )
    });
    tracing::info!(host = %config.url.host, port = config.url.port, tls = config.url.tls, client_id = %config.client_id, group = %config.group, ingest = source.is_some(), "using the external MQTT broker");
    Ok(ExternalBroker {
        downlink,
        source,
        relay,
    })
}

/// Downlink publishes waiting for the connection; beyond it they fail (and are retried by their
/// callers) rather than wait.
const DOWNLINK_QUEUE: usize = 4096;

impl ExternalBroker {
    /// Whether every connection this instance needs is up (for readiness).
    pub fn is_connected(&self) -> bool {
        self.downlink.is_connected()
            && self.source.as_ref().is_none_or(|s| s.is_connected())
            && self.relay.is_connected()
    }

    /// Stops taking messages, waits until those taken are stored and acknowledged to the
    /// broker, and disconnects. The ingest pipeline must still run until this returns.
    pub async fn shutdown(self) {
        if let Some(source) = self.source {
            source.shutdown().await;
        }
        self.relay.disconnect().await;
        self.downlink.disconnect().await;
        tracing::info!("disconnected from the external MQTT broker");
    }
}

#[async_trait::async_trait]
impl Downlink for ExternalBroker {
    async fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), BrokerError> {
        let fail = |reason: &str| BrokerError::Publish {
            topic: topic.to_owned(),
            reason: reason.to_owned(),
        };
        if !self.downlink.is_connected() {
            return Err(fail("not connected to the external broker"));
        }
        let qos = if qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        // Never waits: a full queue means the broker is not keeping up, and the callers retry.
        self.downlink
            .client
            .try_publish(topic, qos, false, payload.to_vec())
            .map_err(|e| fail(&e.to_string()))
    }
}

fn transport(config: &ExternalConfig) -> Result<Transport, ExternalError> {
    if !config.url.tls {
        return Ok(Transport::Tcp);
    }
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = config.ca_file.clone().unwrap_or_default();
    let ca = |reason: String| ExternalError::Ca {
        path: path.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ca(e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ca("no certificate in it".to_owned()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ca(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )))
}

fn options(config: &ExternalConfig, client_id: String, transport: Transport) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, config.url.host.clone(), config.url.port);
    options.set_keep_alive(config.keep_alive);
    options.set_max_packet_size(config.max_packet_size, config.max_packet_size);
    options.set_transport(transport);
    if let Some(user) = &config.username {
        let password = config
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    options
}

/// One MQTT connection kept up by its own task: polled without pause, reconnected with backoff.
struct Connection {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    /// Set before the DISCONNECT, so the loop ends instead of reconnecting.
    closing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Connection {
    /// Starts polling. With `events_to`, connection changes and incoming messages go there, in
    /// order; while its receiver is full the loop waits (that is the backpressure on the
    /// broker), so the receiver must never wait for this connection.
    fn spawn(
        client: AsyncClient,
        mut events: EventLoop,
        name: &'static str,
        events_to: Option<mpsc::Sender<ConnectionEvent>>,
    ) -> Connection {
        let connected = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let (up, stop) = (connected.clone(), closing.clone());
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            let tell = |event| async {
                if let Some(to) = &events_to {
                    let _ = to.send(event).await;
                }
            };
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        backoff.reset();
                        up.store(true, Ordering::Release);
                        tracing::info!(
                            connection = name,
                            session_present = ack.session_present,
                            "connected to the external MQTT broker"
                        );
                        tell(ConnectionEvent::Connected).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        tell(ConnectionEvent::Publish(publish)).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        tell(ConnectionEvent::SubAck(ack)).await;
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                        up.store(false, Ordering::Release);
                        return;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        up.store(false, Ordering::Release);
                        tell(ConnectionEvent::Lost).await;
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        let wait = backoff.next_delay();
                        tracing::warn!(connection = name, %err, retry_in = ?wait, "no connection to the external MQTT broker");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        });
        Connection {
            client,
            connected,
            closing,
            task,
        }
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Sends DISCONNECT after what is queued, and waits (briefly) for the loop to end; a
    /// connection that is down is just dropped.
    async fn disconnect(self) {
        self.closing.store(true, Ordering::Release);
        let mut task = self.task;
        if !self.connected.load(Ordering::Acquire) || self.client.try_disconnect().is_err() {
            task.abort();
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// What a connection's loop hands to its owner.
enum ConnectionEvent {
    Connected,
    Lost,
    Publish(rumqttc::Publish),
    SubAck(rumqttc::SubAck),
}

#[cfg(test)]
mod tests {
    use super::BrokerUrl;

    #[test]
    fn broker_urls_take_a_scheme_a_host_and_a_port_or_its_default() {
        let url = |s| BrokerUrl::parse(s).unwrap();
        assert_eq!(
            url("mqtt://emqx:1884"),
            BrokerUrl {
                host: "emqx".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(url("mqtts://emqx.example.org/").port, 8883);
        assert_eq!(url("mqtt://[::1]:1999").host, "::1");
        assert_eq!(url("mqtt://[::1]").port, 1883);
        for bad in [
            "emqx:1883",
            "http://emqx:1883",
            "mqtt://",
            "mqtt://emqx:0",
            "mqtt://emqx:port",
            "mqtt://user:pw@emqx:1883",
            "mqtt://emqx:1883/topic",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
