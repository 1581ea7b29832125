//! The embedded MQTT broker behind a small interface of our own, so the rest of the gateway never sees rmqtt's types.
//!
//! The broker authenticates collars, enforces per-tracker topic rules, and hands every authorized
//! publish to [`DeviceHooks::accept_publish`] *before* it acknowledges it: a QoS 1 PUBACK therefore
//! means the gateway has durably accepted the message. See docs/decisions/0001-embedded-broker.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::protocol::TrackerId;

/// What the gateway does with what collars say; implemented by the ingest pipeline.
#[async_trait::async_trait]
pub trait DeviceHooks: Send + Sync + 'static {
    /// Whether `secret` is the current secret of a tracker that is not revoked.
    async fn authenticate(&self, tracker: &TrackerId, secret: &[u8]) -> Authentication;
    /// Called for every authorized publish, before PUBACK. `Ok` means durably accepted (for QoS 1)
    /// or queued (QoS 0). `Err` makes the broker drop the connection without PUBACK, so the
    /// collar sends the message again later.
    async fn accept_publish(&self, publish: DevicePublish) -> Result<(), Refused>;
    /// [`DeviceHooks::accept_publish`] in two steps, so that one connection can have several
    /// messages on their way: this returns once the message has its place in line (messages are
    /// ingested in the order of these calls), and the [`Accepting`] it gives completes as
    /// `accept_publish` would have. The default takes the message whole, one at a time.
    async fn submit_publish(&self, publish: DevicePublish) -> Result<Accepting, Refused> {
        let accepted = self.accept_publish(publish).await;
        Ok(Box::pin(std::future::ready(accepted)))
    }
    /// A collar finished connecting.
    async fn connected(&self, tracker: &TrackerId);
    /// A collar's connection ended (any reason, including a kick or a keep-alive timeout).
    async fn disconnected(&self, tracker: &TrackerId);
}

/// Where the server's messages to collars (acks, commands) go: the embedded broker, or the
/// external one ([`crate::external`]). Whoever sends downlink takes this, not a broker type, so
/// the same code runs in front of either.
#[async_trait::async_trait]
pub trait Downlink: Send + Sync + 'static {
    /// Publishes to whoever subscribed to `topic`; `Err` when the message could not be handed
    /// to the broker (the callers retry: commands are re-sent, acks are cumulative).
    async fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), BrokerError>;
}

/// The rest of a publish handed in by [`DeviceHooks::submit_publish`]: `Ok` once it is durably
/// accepted (QoS 1) or queued (QoS 0).
pub type Accepting =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refused>> + Send>>;

/// What the gateway says of a collar's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication {
    Accepted,
    /// Wrong, unknown or revoked: CONNACK "bad user name or password".
    Refused,
    /// They cannot be checked now (the database is away or not migrated yet): CONNACK "server
    /// unavailable", so the collar retries later instead of taking its secret for wrong.
    Unavailable,
}

/// One message a collar published, after authentication and topic checks.
#[derive(Debug, Clone)]
pub struct DevicePublish {
    /// The authenticated publisher (client id = username = tracker id).
    pub tracker: TrackerId,
    pub topic: String,
    pub payload: Bytes,
    /// 0 or 1 (QoS 2 is not part of the device contract, and is handled as 1).
    pub qos: u8,
    pub received_at: DateTime<Utc>,
    /// Published by the broker on the collar's behalf (its Last Will), not by the collar.
    pub last_will: bool,
}

/// Why the gateway could not take a publish now.
#[derive(Debug, Clone, thiserror::Error)]
#[error("message not accepted: {0}")]
pub struct Refused(pub String);

/// Listener settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// MQTT over TCP. Port 0 picks a free port ([`BrokerHandle::tcp_addr`] tells which).
    pub tcp: Option<SocketAddr>,
    /// MQTT over TLS (rustls).
    pub tls: Option<TlsListener>,
    /// MQTT over WebSocket.
    pub ws: Option<SocketAddr>,
    /// Development only: any client id, no password, no topic rules.
    pub open: bool,
    /// Largest MQTT packet accepted; larger ones close the connection.
    pub max_packet_size: u32,
    /// Most simultaneous connections, counted from TCP accept (a socket still handshaking holds a
    /// slot and a file descriptor just like a connected collar); past it a socket is closed at once.
    pub max_connections: usize,
    /// How long a client has from TCP accept to a complete CONNECT (TLS and WebSocket handshakes
    /// included). A socket that sends nothing, or only part of a CONNECT, is closed after it.
    pub handshake_timeout: Duration,
    /// Sockets one client address may have open before their CONNECT is complete; more are
    /// closed at once, so one host cannot fill `max_connections` with idle sockets. `None`: a
    /// quarter of `max_connections`.
    pub max_handshakes_per_ip: Option<usize>,
}

impl Default for BrokerConfig {
    /// No listeners, credentials required; the limits are the server's defaults.
    fn default() -> Self {
        Self {
            tcp: None,
            tls: None,
            ws: None,
            open: false,
            max_packet_size: 512 * 1024,
            max_connections: 200_000,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes_per_ip: None,
        }
    }
}

/// From TCP accept to a complete CONNECT. A collar on a slow cellular link needs a few seconds
/// for TCP, TLS and CONNECT together; much longer only lets idle sockets hold slots.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub addr: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Errors starting or talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen for {listener} on {addr} ({setting}): {reason}")]
    Listen {
        listener: &'static str,
        addr: SocketAddr,
        /// The config key to change, e.g. `mqtt.addr`.
        setting: &'static str,
        reason: String,
    },
    #[error("cannot publish to {topic}: {reason}")]
    Publish { topic: String, reason: String },
}

/// Counters the broker keeps for `/metrics` and tests.
pub const METRIC_ACL_DENIED: &str = "pettracker_acl_denied_total";
pub const METRIC_AUTH_FAILED: &str = "pettracker_auth_failures_total";
pub const METRIC_CONNECTED: &str = "pettracker_devices_connected";

/// How long a publish hook may take before the broker gives up on it; must stay well below
/// the collars' keep-alive, because a connection reads nothing while its hook runs.
pub const DEFAULT_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors kept for everything but device connections: the database pool, HTTP and
/// WebSocket clients, the spool, logs.
const RESERVED_FDS: u64 = 512;

/// File descriptors one connected collar takes: its socket, and both ends of the loopback hop from
/// the front door to rmqtt (see broker/front.rs).
pub const FDS_PER_CONNECTION: u64 = 3;

/// Raises the process's soft open-file limit to its hard limit (a service manager's soft limit is
/// often 1,024, and every collar holds sockets) and returns how many device connections fit under
/// it. Without this cap, connections past the limit fail in `accept` with EMFILE (and so does
/// everything else that opens a file, the HTTP server included); with it, the broker turns them
/// away at once.
pub fn fit_connections_to_open_file_limit(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let hard = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard
                && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            {
                tracing::warn!(%err, soft, hard, "cannot raise the open-file limit");
                soft
            } else {
                hard
            }
        }
        Err(err) => {
            tracing::warn!(%err, "cannot read the open-file limit");
            return wanted;
        }
    };
    let fits = usize::try_from(hard.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION)
        .unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            open_file_limit = hard,
            device_connections = fits,
            "mqtt.max_connections is {wanted}, but the process may open only {hard} files (three per collar): at \
             most {fits} collars can connect. Raise the limit (LimitNOFILE= in systemd, ulimit -n, \
             the container's nofile ulimit)."
        );
    }
    fits.min(wanted)
}

pub mod access;
mod front;
mod rmqtt;
mod uplink;

pub use self::front::METRIC_SOCKETS_CLOSED;

pub use self::rmqtt::{BrokerHandle, start};
