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

use super::{
    Authentication, BrokerConfig, BrokerError, DeviceHooks, DevicePublish, METRIC_ACL_DENIED,
    METRIC_AUTH_FAILED, METRIC_CONNECTED,
};
use crate::protocol::{DeviceTopic, TrackerId, device_may_publish, device_may_subscribe};

/// The client id the broker itself publishes as (acks, commands).
const SYSTEM_CLIENT_ID: &str = "pettracker";

/// How long a client may take from TCP accept to CONNECT; rmqtt's default (30 s) lets idle
/// sockets hold handshake slots for too long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the listeners and returns once they are bound: a port in use is an error here, not a
/// log line later.
pub async fn start(
    config: BrokerConfig,
    device: Arc<dyn DeviceHooks>,
) -> Result<BrokerHandle, BrokerError> {
    // rmqtt's TLS listener builds a rustls ServerConfig from the process default provider; with
    // both ring and aws-lc compiled in, there is no default and rustls panics. Ours is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // busy_check off: otherwise rmqtt refuses CONNECTs while the machine's load average is high,
    // which on a 2-core box running the database too would refuse collars under load.
    let scx = ServerContext::new().busy_check_enable(false).build().await;
    let state = Arc::new(State {
        device,
        open: config.open,
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

    let mut server = MqttServer::new(scx.clone());
    let (mut tcp_addr, mut tls_addr, mut ws_addr) = (None, None, None);
    let base = |name: &str, addr: SocketAddr| {
        Builder::new()
            .name(name)
            .laddr(addr)
            .allow_anonymous(config.open)
            // Without SO_REUSEADDR a restart fails while old connections sit in TIME_WAIT.
            .reuseaddr(Some(true))
            .nodelay(true)
            .max_connections(config.max_connections)
            .max_packet_size(config.max_packet_size)
            .handshake_timeout(HANDSHAKE_TIMEOUT)
            .max_inflight(NonZeroU16::new(16).unwrap_or(NonZeroU16::MIN))
            // QoS 2 is not part of the device contract; granting 1 keeps the ack path uniform.
            .max_qos_allowed(QoS::AtLeastOnce)
    };
    // Listener ids must be unique; rmqtt would use the port, and port 0 twice collides.
    let mut next_id = 1u16;
    if let Some(addr) = config.tcp {
        let listener = base("tcp", addr)
            .bind()
            .map_err(|e| listen_error("MQTT", addr, "mqtt.addr", e))?;
        tcp_addr = Some(local_addr(&listener, addr));
        let listener = listener
            .tcp()
            .map_err(|e| listen_error("MQTT", addr, "mqtt.addr", e))?;
        server = server.listener_by_id(listener, next_id);
        next_id += 1;
    }
    if let Some(tls) = &config.tls {
        let listener = base("tls", tls.addr)
            .tls_cert(Some(tls.cert.display().to_string()))
            .tls_key(Some(tls.key.display().to_string()))
            .bind()
            .map_err(|e| listen_error("MQTT over TLS", tls.addr, "mqtt.tls_addr", e))?;
        tls_addr = Some(local_addr(&listener, tls.addr));
        let listener = listener.tls().map_err(|e| BrokerError::Listen {
            listener: "MQTT over TLS",
            addr: tls.addr,
            setting: "mqtt.tls_cert / mqtt.tls_key",
            reason: format!("{e:#}"),
        })?;
        server = server.listener_by_id(listener, next_id);
        next_id += 1;
    }
    if let Some(addr) = config.ws {
        let listener = base("ws", addr)
            .bind()
            .map_err(|e| listen_error("MQTT over WebSocket", addr, "mqtt.ws_addr", e))?;
        ws_addr = Some(local_addr(&listener, addr));
        let listener = listener
            .ws()
            .map_err(|e| listen_error("MQTT over WebSocket", addr, "mqtt.ws_addr", e))?;
        server = server.listener_by_id(listener, next_id);
    }
    let server = server.build();
    let task = tokio::spawn(async move {
        if let Err(err) = server.run().await {
            tracing::error!(err = %format!("{err:#}"), "the MQTT broker stopped");
        }
    });
    tracing::info!(tcp = ?tcp_addr, tls = ?tls_addr, ws = ?ws_addr, open = config.open, "MQTT broker listening");
    Ok(BrokerHandle {
        scx,
        state,
        task,
        tcp_addr,
        tls_addr,
        ws_addr,
    })
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
    task: JoinHandle<()>,
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
        !self.task.is_finished()
    }

    /// Collars connected right now.
    pub fn connected_count(&self) -> usize {
        self.state.connected.load(Ordering::Relaxed).max(0) as usize
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

    /// Stops accepting and disconnects every client. rmqtt 0.24 has no stop: the accept loops are
    /// aborted (closing the listening sockets) and each session is kicked, since connection tasks
    /// are detached.
    pub async fn shutdown(self) {
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

struct State {
    device: Arc<dyn DeviceHooks>,
    open: bool,
    /// Creation time of each client id's current session. A collar that reconnects takes over
    /// its old session, and the old one's disconnect event can arrive after the new one's
    /// connect: only the current session may mark the tracker offline.
    sessions: Mutex<HashMap<String, i64>>,
    connected: AtomicI64,
}

impl State {
    /// The tracker a session speaks for. In open mode the client id is anything, so none.
    fn tracker_of(&self, s: &Session) -> Option<TrackerId> {
        if self.open {
            return None;
        }
        TrackerId::parse(&s.id.client_id).ok()
    }

    async fn authenticate(&self, ci: &ConnectInfo) -> Result<(), (&'static str, Authentication)> {
        match self.check_credentials(ci).await {
            Ok(Authentication::Accepted) => Ok(()),
            Ok(other) => Err((
                "credentials not checked: the database is unavailable",
                other,
            )),
            Err(why) => Err((why, Authentication::Refused)),
        }
    }

    async fn check_credentials(&self, ci: &ConnectInfo) -> Result<Authentication, &'static str> {
        if self.open {
            return Ok(Authentication::Accepted);
        }
        let tracker =
            TrackerId::parse(ci.client_id()).map_err(|_| "client id is not a tracker id")?;
        let username = ci.username().ok_or("no username")?;
        if &**username != tracker.as_str() {
            return Err("username differs from client id");
        }
        let password = ci.password().ok_or("no password")?;
        if let Some(will) = ci.last_will() {
            let topic = match will {
                LastWill::V3(w) => w.topic.clone(),
                LastWill::V5(w) => w.topic.clone(),
            };
            // The will is published without passing the publish ACL: check it now.
            if !device_may_publish(&tracker, &topic) {
                return Err("last will topic is not the tracker's own");
            }
        }
        match self.device.authenticate(&tracker, password).await {
            Authentication::Refused => Err("wrong, unknown or revoked credentials"),
            checked => Ok(checked),
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
            Ok(tracker) if device_may_publish(&tracker, topic) => Ok(Some(tracker)),
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
                // rmqtt's authentication hook cannot answer CONNACK 3 "server unavailable"
                // (it sends that only for its own faults, and its CONNACK hook is not called on
                // a refusal): "not authorized" (5; MQTT 5: 0x87) tells it apart from wrong
                // credentials (4), and collars retry it.
                Err((why, Authentication::Unavailable)) => {
                    tracing::info!(client_id = %ci.client_id(), why, "MQTT connection refused");
                    (
                        false,
                        Some(HookResult::AuthResult(AuthResult::NotAuthorized)),
                    )
                }
                Err((why, _)) => {
                    metrics::counter!(METRIC_AUTH_FAILED).increment(1);
                    tracing::info!(client_id = %ci.client_id(), why, "MQTT connection refused");
                    (
                        false,
                        Some(HookResult::AuthResult(AuthResult::BadUsernameOrPassword)),
                    )
                }
            },
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                let allowed = st.open
                    || TrackerId::parse(&s.id.client_id)
                        .is_ok_and(|t| device_may_subscribe(&t, &sub.topic_filter));
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
                        sessions.insert(tracker.to_string(), s.id.create_time);
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
                        let current = sessions.get(tracker.as_str()) == Some(&s.id.create_time);
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
