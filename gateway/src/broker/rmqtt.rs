//! The rmqtt embedding: listeners, and the hooks that route authentication, topic checks and publishes to [`DeviceHooks`].
//!
//! Everything rmqtt-specific lives in this file. The facts it relies on were checked in rmqtt
//! 0.24.0's source (see docs/decisions/0001-embedded-broker.md):
//! - `MessagePublishCheckAcl` runs for every client publish before routing and before PUBACK, so
//!   ingest happens there and a PUBACK means "accepted".
//! - A Last Will skips that hook and arrives only through `MessagePublish` (as `FromType::LastWill`),
//!   so its topic is checked at CONNECT time instead.
//! - Superuser sessions skip both ACL hooks: nobody is ever made a superuser.
//! - `allow_anonymous` defaults to true, and anonymous clients skip the authentication hook.
//! - `MqttServer::start` calls `process::exit` on failure; `run` is used instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use rmqtt::codec::v5::{PublishAckReason, PublishProperties, SubscribeAckReason};
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::session::{Session, SessionState};
use rmqtt::types::{
    AuthResult, ClientId, CodecPublish, ConnectInfo, From, FromType, Id, LastWill, Publish,
    PublishAclResult, PublishResult, QoS, SubscribeAclResult,
};
use rmqtt::utils::timestamp_millis;
use tokio::task::JoinHandle;

use tokio_rustls::TlsAcceptor;

use super::access::{self, Action, IdentityError};
use super::front::{self, Transport};
use super::{
    Authentication, BrokerConfig, BrokerError, DeviceHooks, DevicePublish, METRIC_ACL_DENIED,
    METRIC_AUTH_FAILED, METRIC_CONNECTED, TlsListener,
};
use crate::protocol::{DeviceTopic, TrackerId};

/// The client id the broker itself publishes as (acks, commands).
const SYSTEM_CLIENT_ID: &str = "pettracker";

/// Starts the listeners and returns once they are bound: a port in use is an error here, not a
/// log line later.
pub async fn start(
    config: BrokerConfig,
    device: Arc<dyn DeviceHooks>,
) -> Result<BrokerHandle, BrokerError> {
    // Our TLS listener uses ring explicitly; other code in the process (a rumqttc TLS client in
    // tests) builds from the process default, which must then be set.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // Collars connect to our own listeners (the front door); bind them first, so a port in use or
    // a bad certificate fails the start with the setting to change.
    let tcp = match config.tcp {
        Some(addr) => {
            Some(front::bind(addr).map_err(|e| listen_error("MQTT", addr, "mqtt.addr", e))?)
        }
        None => None,
    };
    let tls = match &config.tls {
        Some(tls) => {
            let acceptor = tls_acceptor(tls).map_err(|reason| BrokerError::Listen {
                listener: "MQTT over TLS",
                addr: tls.addr,
                setting: "mqtt.tls_cert / mqtt.tls_key",
                reason,
            })?;
            let listener = front::bind(tls.addr)
                .map_err(|e| listen_error("MQTT over TLS", tls.addr, "mqtt.tls_addr", e))?;
            Some((listener, acceptor))
        }
        None => None,
    };
    let ws = match config.ws {
        Some(addr) => Some(
            front::bind(addr)
                .map_err(|e| listen_error("MQTT over WebSocket", addr, "mqtt.ws_addr", e))?,
        ),
        None => None,
    };

    // busy_check off: otherwise rmqtt refuses CONNECTs while the machine's load average is high,
    // which on a 2-core box running the database too would refuse collars under load.
    let scx = ServerContext::new().busy_check_enable(false).build().await;
    let state = Arc::new(State {
        device,
        open: config.open,
        scx: scx.clone(),
        // Short of rmqtt's own check after the first hook (handshake time > handshake_timeout).
        takeover_wait: (config.handshake_timeout / 2).min(Duration::from_secs(3)),
        sessions: Mutex::new(HashMap::new()),
        connected: AtomicI64::new(0),
    });
    let register = scx.extends.hook_mgr().register();
    for typ in [
        Type::ClientAuthenticate,
        Type::ClientSubscribeCheckAcl,
        Type::MessagePublishCheckAcl,
        Type::MessagePublish,
        Type::ClientConnected,
        Type::ClientDisconnected,
    ] {
        register
            .add(typ, Box::new(Hooks(state.clone())) as Box<dyn Handler>)
            .await;
    }
    register.start().await;

    // rmqtt itself listens on loopback only; the front door relays complete CONNECTs to it.
    let internal = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = Builder::new()
        .name("pettracker")
        .laddr(internal)
        // Never anonymous, also in open mode: rmqtt would then skip our authentication hook for
        // clients without a username, and with it the will checks and the takeover wait.
        .allow_anonymous(false)
        .reuseaddr(Some(true))
        .backlog(front::BACKLOG as i32)
        .nodelay(true)
        .max_connections(config.max_connections)
        .max_packet_size(config.max_packet_size)
        .handshake_timeout(config.handshake_timeout)
        .max_inflight(NonZeroU16::new(16).unwrap_or(NonZeroU16::MIN))
        // QoS 2 is not part of the device contract; granting 1 keeps the ack path uniform.
        .max_qos_allowed(QoS::AtLeastOnce)
        .bind()
        .map_err(|e| {
            listen_error(
                "MQTT (loopback, behind the front door)",
                internal,
                "mqtt.addr",
                e,
            )
        })?;
    let upstream = local_addr(&listener, internal);
    let listener = listener.tcp().map_err(|e| {
        listen_error(
            "MQTT (loopback, behind the front door)",
            internal,
            "mqtt.addr",
            e,
        )
    })?;
    // Listener ids must be unique; rmqtt would use the port, and port 0 twice collides.
    let server = MqttServer::new(scx.clone())
        .listener_by_id(listener, 1)
        .build();
    let task = tokio::spawn(async move {
        if let Err(err) = server.run().await {
            tracing::error!(err = %format!("{err:#}"), "the MQTT broker stopped");
        }
    });

    let (stop, stopped) = crate::shutdown::channel();
    let uplink = (!config.open).then(|| state.device.clone());
    let door = Arc::new(front::Door::new(upstream, &config, uplink, stopped));
    let mut accept_tasks = Vec::new();
    let addr_of =
        |l: &tokio::net::TcpListener, configured: SocketAddr| l.local_addr().unwrap_or(configured);
    let (mut tcp_addr, mut tls_addr, mut ws_addr) = (None, None, None);
    if let (Some(listener), Some(configured)) = (tcp, config.tcp) {
        tcp_addr = Some(addr_of(&listener, configured));
        accept_tasks.push(tokio::spawn(front::accept_loop(
            listener,
            Transport::Tcp,
            door.clone(),
        )));
    }
    if let (Some((listener, acceptor)), Some(configured)) = (tls, &config.tls) {
        tls_addr = Some(addr_of(&listener, configured.addr));
        accept_tasks.push(tokio::spawn(front::accept_loop(
            listener,
            Transport::Tls(acceptor),
            door.clone(),
        )));
    }
    if let (Some(listener), Some(configured)) = (ws, config.ws) {
        ws_addr = Some(addr_of(&listener, configured));
        accept_tasks.push(tokio::spawn(front::accept_loop(
            listener,
            Transport::Ws,
            door.clone(),
        )));
    }
    tracing::info!(tcp = ?tcp_addr, tls = ?tls_addr, ws = ?ws_addr, open = config.open, max_connections = config.max_connections, max_handshakes_per_ip = door.max_handshakes_per_ip, handshake_timeout = ?config.handshake_timeout, "MQTT broker listening");
    Ok(BrokerHandle {
        scx,
        state,
        task,
        stop,
        door,
        accept_tasks,
        tcp_addr,
        tls_addr,
        ws_addr,
    })
}

/// The TLS side of the front door, from the PEM files.
fn tls_acceptor(tls: &TlsListener) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the certificate chain {}: {e}",
                tls.cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("cannot read the private key {}: {e}", tls.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn listen_error(
    listener: &'static str,
    addr: SocketAddr,
    setting: &'static str,
    err: impl std::fmt::Display,
) -> BrokerError {
    BrokerError::Listen {
        listener,
        addr,
        setting,
        reason: err.to_string(),
    }
}

fn local_addr(listener: &rmqtt::net::Listener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

/// The running broker. Dropping it without [`BrokerHandle::shutdown`] leaves connections open.
pub struct BrokerHandle {
    scx: ServerContext,
    state: Arc<State>,
    /// rmqtt's accept loop on loopback.
    task: JoinHandle<()>,
    /// Stops the front door: its accept loops and every relayed connection.
    stop: crate::shutdown::ShutdownTrigger,
    door: Arc<front::Door>,
    accept_tasks: Vec<JoinHandle<()>>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
}

impl BrokerHandle {
    /// Where MQTT over TCP listens (the real port when configured with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// Whether the accept loops are still running (for readiness).
    pub fn is_listening(&self) -> bool {
        !self.task.is_finished() && self.accept_tasks.iter().all(|t| !t.is_finished())
    }

    /// Collars connected right now.
    pub fn connected_count(&self) -> usize {
        self.state.connected.load(Ordering::Relaxed).max(0) as usize
    }

    /// Client sockets open right now, connected or still handshaking: what `max_connections`
    /// caps.
    pub fn open_sockets(&self) -> usize {
        self.door.open_sockets()
    }

    /// Publishes from the server to whoever subscribed to `topic` (a collar's downlink topics).
    /// A collar that is not subscribed right now does not get it; persistent sessions queue it.
    pub async fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), BrokerError> {
        let qos = if qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let from = From::from_system(Id::new(
            self.scx.node.id(),
            0,
            None,
            None,
            ClientId::from(SYSTEM_CLIENT_ID),
            None,
        ));
        let publish = CodecPublish {
            dup: false,
            retain: false,
            qos,
            topic: topic.into(),
            packet_id: None,
            payload,
            properties: Some(PublishProperties::default()),
        };
        let publish = Publish::from(publish).create_time(timestamp_millis());
        SessionState::forwards(&self.scx, from, publish, false, None)
            .await
            .map_err(|e| BrokerError::Publish {
                topic: topic.to_string(),
                reason: format!("{e:#}"),
            })
    }

    /// Disconnects the tracker's collar, if connected, and drops its session.
    pub async fn kick(&self, tracker: &TrackerId) {
        let id = Id::from(self.scx.node.id(), ClientId::from(tracker.as_str()));
        let mut entry = self.scx.extends.shared().await.entry(id);
        if entry.session().is_none() {
            return;
        }
        if let Err(err) = entry.kick(true, true, true).await {
            tracing::warn!(err = %format!("{err:#}"), %tracker, "could not disconnect collar");
        }
    }

    /// Stops accepting and disconnects every client: the front door closes its listeners and
    /// every relayed connection; rmqtt 0.24 has no stop, so its accept loop is aborted and each
    /// session is kicked, since its connection tasks are detached.
    pub async fn shutdown(self) {
        self.stop.trigger();
        for task in self.accept_tasks {
            let _ = task.await;
        }
        self.task.abort();
        let _ = self.task.await;
        // Collect first: kick() removes entries from the map being iterated.
        let ids: Vec<Id> = self
            .scx
            .extends
            .shared()
            .await
            .iter()
            .map(|e| e.id())
            .collect();
        for id in ids {
            let mut entry = self.scx.extends.shared().await.entry(id);
            let _ = entry.kick(true, true, true).await;
        }
        tracing::info!("MQTT broker stopped");
    }
}

#[async_trait]
impl super::Downlink for BrokerHandle {
    async fn publish(&self, topic: &str, payload: Bytes, qos: u8) -> Result<(), BrokerError> {
        BrokerHandle::publish(self, topic, payload, qos).await
    }
}

struct State {
    device: Arc<dyn DeviceHooks>,
    open: bool,
    /// For looking up a client id's current session (a reconnect waits for the old one to end).
    scx: ServerContext,
    /// How long a CONNECT waits for an ending session of its client id.
    takeover_wait: Duration,
    /// Each client id's current session. A collar that reconnects takes over its old session,
    /// and the old one's disconnect event can arrive after the new one's connect: only the
    /// current session may mark the tracker offline.
    sessions: Mutex<HashMap<String, SessionKey>>,
    connected: AtomicI64,
}

/// Tells one connection's session from the next of the same client id: the creation time alone
/// is in milliseconds, and a reconnect can come within the same one; the connection's address
/// (its end of the loopback hop) differs between two connections that overlap.
type SessionKey = (i64, Option<SocketAddr>);

fn session_key(s: &Session) -> SessionKey {
    (s.id.create_time, s.id.remote_addr)
}

/// Why a CONNECT is refused, and the CONNACK code that says so.
enum Refusal {
    /// CONNACK 4 (MQTT 3.1.1) / 0x86 (MQTT 5).
    BadCredentials(&'static str),
    /// CONNACK 5 / 0x87.
    NotAuthorized(&'static str),
}

/// How long a CONNECT waits for a connected session of its client id to show the DISCONNECT that
/// may be on its way to it: a reconnect right after a DISCONNECT must not find the old session
/// ending mid-kick. A real takeover (the old connection still alive) is delayed by this much.
const DISCONNECT_IN_FLIGHT: Duration = Duration::from_millis(50);

/// Whether a session that is not connected goes away when its teardown ends (clean session, or
/// MQTT 5 session expiry 0), rather than staying as an offline persistent session.
async fn ends_with_removal(session: &Session) -> bool {
    match session.connect_info().await.as_deref() {
        Ok(ConnectInfo::V3(_, connect)) => connect.clean_session,
        Ok(ConnectInfo::V5(..)) => {
            let disconnect = session.disconnect().await.ok().flatten();
            session
                .fitter
                .session_expiry_interval(disconnect.as_ref())
                .is_zero()
        }
        Err(_) => true,
    }
}

impl State {
    /// The tracker a session speaks for. In open mode the client id is anything, so none.
    fn tracker_of(&self, s: &Session) -> Option<TrackerId> {
        if self.open {
            return None;
        }
        TrackerId::parse(&s.id.client_id).ok()
    }

    /// Decides a CONNECT. Runs for every client, anonymous ones in open mode included
    /// (`allow_anonymous` is off, so rmqtt always asks).
    async fn authenticate(&self, ci: &ConnectInfo) -> Result<(), Refusal> {
        if let Some(will) = ci.last_will() {
            // The broker keeps no retained messages. MQTT 5 CONNACK says so (Retain Available 0)
            // and rmqtt refuses a retained will there before this hook; MQTT 3.1.1 has no way to
            // say it, and a will it cannot publish as asked is refused the same way.
            if will.retain() {
                return Err(Refusal::NotAuthorized(
                    "retained last will (this broker keeps no retained messages)",
                ));
            }
            // CONNACK announces Maximum QoS 1 on MQTT 5 [MQTT-3.2.2-12].
            if let (LastWill::V5(w), ConnectInfo::V5(..)) = (&will, ci)
                && w.qos == QoS::ExactlyOnce
            {
                return Err(Refusal::NotAuthorized(
                    "last will at QoS 2 (this broker's Maximum QoS is 1)",
                ));
            }
        }
        if !self.open {
            self.check_credentials(ci).await?;
        }
        self.wait_for_ending_session(ci.client_id()).await;
        Ok(())
    }

    async fn check_credentials(&self, ci: &ConnectInfo) -> Result<(), Refusal> {
        let bad = Refusal::BadCredentials;
        let tracker = access::device_identity(ci.client_id(), ci.username().map(|u| &**u))
            .map_err(|e| match e {
                IdentityError::ClientIdNotATracker => bad("client id is not a tracker id"),
                IdentityError::NoUsername => bad("no username"),
                IdentityError::UsernameDiffers => bad("username differs from client id"),
            })?;
        let password = ci.password().ok_or(bad("no password"))?;
        if let Some(will) = ci.last_will() {
            let topic = match will {
                LastWill::V3(w) => w.topic.clone(),
                LastWill::V5(w) => w.topic.clone(),
            };
            // The will is published without passing the publish ACL: check it now.
            if !access::device_may(&tracker, Action::Publish, &topic) {
                return Err(bad("last will topic is not the tracker's own"));
            }
        }
        match self.device.authenticate(&tracker, password).await {
            Authentication::Accepted => Ok(()),
            Authentication::Refused => Err(bad("wrong, unknown or revoked credentials")),
            // rmqtt's authentication hook cannot answer CONNACK 3 "server unavailable" (it sends
            // that only for its own faults, and its CONNACK hook is not called on a refusal):
            // "not authorized" (5; MQTT 5: 0x87) tells it apart from wrong credentials (4), and
            // collars retry it.
            Authentication::Unavailable => Err(Refusal::NotAuthorized(
                "credentials not checked: the database is unavailable",
            )),
        }
    }

    /// rmqtt takes a client id over from its current session by sending that session a kick and
    /// waiting for the answer. A session whose connection has just ended (its DISCONNECT read, its
    /// last hooks running: ours tell the gateway the collar went offline) no longer reads kicks,
    /// and once it is gone the kick fails and the new CONNECT is refused with "server
    /// unavailable" — a collar reconnecting right after a blip would be turned away. So a CONNECT
    /// first waits until such an ending session has gone. An online session answers kicks, and a
    /// persistent one that stays (offline) answers them from its offline loop: neither is waited
    /// for.
    async fn wait_for_ending_session(&self, client_id: &str) {
        let id = Id::from(self.scx.node.id(), ClientId::from(client_id));
        let started = tokio::time::Instant::now();
        let give_up = started + self.takeover_wait;
        loop {
            let old = self.scx.extends.shared().await.entry(id.clone()).session();
            let Some(old) = old else { return };
            let connected = old.connected().await.unwrap_or(false);
            // A session that has read its client's DISCONNECT still counts as connected for a
            // moment while it winds down, and answers no kick by then either: it is ending too.
            let said_goodbye = old.disconnect().await.ok().flatten().is_some();
            if connected && !said_goodbye {
                // The old connection's DISCONNECT may still be on its way through the front
                // door's hop while this CONNECT has already arrived: give it a moment to show
                // before taking the session over (a live session then answers the kick).
                if started.elapsed() >= DISCONNECT_IN_FLIGHT {
                    return;
                }
            } else if !ends_with_removal(&old).await {
                return;
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::warn!(%client_id, "the previous session of this client id is still ending; taking it over anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The tracker a publish is ingested for, or `Err` if the topic is not the publisher's.
    fn publish_target(&self, s: &Session, topic: &str) -> Result<Option<TrackerId>, ()> {
        if self.open {
            // Anything goes; device uplink topics are still ingested, for trying things out.
            return Ok(DeviceTopic::parse(topic)
                .ok()
                .filter(|t| t.kind.direction() == crate::protocol::Direction::Uplink)
                .map(|t| t.tracker));
        }
        match TrackerId::parse(&s.id.client_id) {
            Ok(tracker) if access::device_may(&tracker, Action::Publish, topic) => {
                Ok(Some(tracker))
            }
            _ => Err(()),
        }
    }
}

#[derive(Clone)]
struct Hooks(Arc<State>);

fn refuse_publish(reason: PublishAckReason, why: &str) -> ReturnType {
    // disconnect = true: MQTT 3.1.1 has no negative PUBACK, and a PUBACK would tell the collar
    // the message was taken. Closing the connection makes it keep and re-send the message.
    let result = PublishResult::reason_code(reason, Some(why.to_string().into()), true);
    (
        false,
        Some(HookResult::PublishAclResult(PublishAclResult(result))),
    )
}

#[async_trait]
impl Handler for Hooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let st = &self.0;
        match param {
            Parameter::ClientAuthenticate(ci) => match st.authenticate(ci).await {
                // superuser = false, always: superusers skip the topic checks.
                Ok(()) => (
                    false,
                    Some(HookResult::AuthResult(AuthResult::Allow(false, None))),
                ),
                Err(refusal) => {
                    let (result, why) = match refusal {
                        Refusal::BadCredentials(why) => {
                            metrics::counter!(METRIC_AUTH_FAILED).increment(1);
                            (AuthResult::BadUsernameOrPassword, why)
                        }
                        Refusal::NotAuthorized(why) => (AuthResult::NotAuthorized, why),
                    };
                    tracing::info!(client_id = %ci.client_id(), why, "MQTT connection refused");
                    (false, Some(HookResult::AuthResult(result)))
                }
            },
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                let allowed = st.open
                    || TrackerId::parse(&s.id.client_id).is_ok_and(|t| {
                        access::device_may(&t, Action::Subscribe, &sub.topic_filter)
                    });
                let result = if allowed {
                    SubscribeAclResult::new_success(sub.opts.qos(), None)
                } else {
                    metrics::counter!(METRIC_ACL_DENIED, "action" => "subscribe").increment(1);
                    tracing::warn!(client_id = %s.id.client_id, filter = %sub.topic_filter, "subscription refused: not the collar's own downlink topic");
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            Parameter::MessagePublishCheckAcl(s, p) => {
                // CONNACK announced Maximum QoS 1 to MQTT 5 clients; a QoS 2 PUBLISH is then a
                // protocol error that closes the connection [MQTT-3.2.2-11]. (MQTT 3.1.1 has no
                // such announcement: there QoS 2 is taken, and handled as QoS 1.)
                if p.qos == QoS::ExactlyOnce && s.protocol().await.unwrap_or_default() == 5 {
                    tracing::info!(client_id = %s.id.client_id, topic = %p.topic, "QoS 2 publish above the announced Maximum QoS 1; disconnecting");
                    return refuse_publish(
                        PublishAckReason::UnspecifiedError,
                        "QoS 2 is above the Maximum QoS 1 in CONNACK",
                    );
                }
                let tracker = match st.publish_target(s, &p.topic) {
                    Ok(Some(tracker)) => tracker,
                    Ok(None) => {
                        return (
                            false,
                            Some(HookResult::PublishAclResult(PublishAclResult::allow())),
                        );
                    }
                    Err(()) => {
                        metrics::counter!(METRIC_ACL_DENIED, "action" => "publish").increment(1);
                        tracing::warn!(client_id = %s.id.client_id, topic = %p.topic, "publish refused: not the collar's own topic; disconnecting it");
                        return refuse_publish(
                            PublishAckReason::NotAuthorized,
                            "not this tracker's topic",
                        );
                    }
                };
                let publish = DevicePublish {
                    tracker,
                    topic: p.topic.to_string(),
                    payload: p.payload.clone(),
                    qos: p.qos.value().min(1),
                    received_at: Utc::now(),
                    last_will: false,
                };
                match st.device.accept_publish(publish).await {
                    // In open mode anyone may subscribe to uplink topics (handy with
                    // mosquitto_sub), so route the message on. Otherwise no client may subscribe
                    // to them and the gateway already has the message: routing it would only
                    // cost CPU. "No matching subscribers" (0x10) is a success code: MQTT 3.1.1
                    // collars get a plain PUBACK, MQTT 5 ones a PUBACK that says exactly that.
                    Ok(()) if st.open => (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::allow())),
                    ),
                    Ok(()) => (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult(
                            PublishResult::reason_code(
                                PublishAckReason::NoMatchingSubscribers,
                                None,
                                false,
                            ),
                        ))),
                    ),
                    Err(refused) => {
                        tracing::warn!(client_id = %s.id.client_id, %refused, "publish not taken; disconnecting so the collar re-sends");
                        refuse_publish(PublishAckReason::ImplementationSpecificError, &refused.0)
                    }
                }
            }
            Parameter::MessagePublish(_, from, p) if matches!(from.typ(), FromType::LastWill) => {
                let tracker = if st.open {
                    DeviceTopic::parse(&p.topic).ok().map(|t| t.tracker)
                } else {
                    TrackerId::parse(&from.id.client_id).ok()
                };
                if let Some(tracker) = tracker {
                    let publish = DevicePublish {
                        tracker,
                        topic: p.topic.to_string(),
                        payload: p.payload.clone(),
                        qos: p.qos.value().min(1),
                        received_at: Utc::now(),
                        last_will: true,
                    };
                    if let Err(refused) = st.device.accept_publish(publish).await {
                        tracing::warn!(client_id = %from.id.client_id, %refused, "last will not taken");
                    }
                }
                (true, acc)
            }
            Parameter::ClientConnected(s) => {
                st.connected.fetch_add(1, Ordering::Relaxed);
                metrics::gauge!(METRIC_CONNECTED).increment(1.0);
                if let Some(tracker) = st.tracker_of(s) {
                    if let Ok(mut sessions) = st.sessions.lock() {
                        sessions.insert(tracker.to_string(), session_key(s));
                    }
                    st.device.connected(&tracker).await;
                }
                (true, acc)
            }
            Parameter::ClientDisconnected(s, reason) => {
                st.connected.fetch_sub(1, Ordering::Relaxed);
                metrics::gauge!(METRIC_CONNECTED).decrement(1.0);
                if let Some(tracker) = st.tracker_of(s) {
                    let current = st.sessions.lock().is_ok_and(|mut sessions| {
                        let current = sessions.get(tracker.as_str()) == Some(&session_key(s));
                        if current {
                            sessions.remove(tracker.as_str());
                        }
                        current
                    });
                    tracing::debug!(%tracker, ?reason, current, "collar disconnected");
                    if current {
                        st.device.disconnected(&tracker).await;
                    }
                }
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}
