//! The front door: our own accept loops in front of rmqtt, which hold the connection cap, close sockets that have not sent a complete CONNECT in time, and drop a malformed CONNECT header, before rmqtt sees a byte.
//!
//! Why a hop at all: rmqtt 0.24 reads a connection's first bytes (the protocol version) with no
//! deadline and counts no connections (`max_connections` only sizes a handshake queue), and its
//! accept loop and per-connection processing are private, so a socket can reach rmqtt only through
//! rmqtt's own listener. So collars connect here; once a complete CONNECT has arrived, the bytes
//! are passed on to rmqtt's listener on loopback and relayed both ways until either side closes.
//! The cost is two more file descriptors per connection (this side of the hop and rmqtt's) and a
//! copy; see docs/decisions/0002-mqtt-front-door.md.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// Sockets the front door closed before they reached the broker, by reason (`max_connections`,
/// `handshakes_per_ip`, `handshake_timeout`, `bad_connect`, `handshake_failed`).
pub const METRIC_SOCKETS_CLOSED: &str = "pettracker_mqtt_sockets_closed_total";

/// Bytes read or written in one go on each side of the hop. A collar's message is a few hundred
/// bytes; a 256 KiB backlog upload simply takes more rounds. Small buffers keep the per-connection
/// memory low, which matters at tens of thousands of collars.
const RELAY_BUFFER: usize = 4 * 1024;

/// After a collar has closed its side, how long rmqtt may take to finish (it closes on EOF).
pub(super) const LINGER: Duration = Duration::from_secs(5);

/// Connections waiting for `accept` in the kernel: a fleet reconnecting at once after an outage
/// arrives in a burst (Linux caps it at `net.core.somaxconn`, 4,096 by default).
pub(super) const BACKLOG: u32 = 4096;

/// What the accept loops and connection tasks share.
pub(super) struct Door {
    /// rmqtt's listener on loopback.
    pub upstream: SocketAddr,
    /// One permit per open socket, from accept to close: the connection cap.
    pub slots: Arc<Semaphore>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub max_packet_size: u32,
    /// Sockets one address may have between accept and a complete CONNECT: one host cannot hold
    /// the whole connection cap with sockets that never finish.
    pub max_handshakes_per_ip: usize,
    handshakes: Mutex<HashMap<IpAddr, usize>>,
    pub shutdown: Shutdown,
    /// When a limit was last logged (ms since start), so a flood logs once every few seconds.
    last_warning: AtomicI64,
    started: Instant,
    /// Which loopback address the next hop connection comes from.
    next_source: AtomicU32,
    /// Where collars' own uplink publishes go straight from here ([`super::uplink`]); `None` in
    /// open mode, where rmqtt routes everything to whoever subscribed.
    pub uplink: Option<Arc<dyn super::DeviceHooks>>,
}

/// One socket's place among its address's handshakes; dropping it (CONNECT complete, or the
/// socket closed) gives the place back.
pub(super) struct Handshake {
    door: Arc<Door>,
    ip: IpAddr,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if let Ok(mut handshakes) = self.door.handshakes.lock()
            && let Some(count) = handshakes.get_mut(&self.ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                handshakes.remove(&self.ip);
            }
        }
    }
}

impl Door {
    pub fn new(
        upstream: SocketAddr,
        config: &super::BrokerConfig,
        uplink: Option<Arc<dyn super::DeviceHooks>>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            upstream,
            slots: Arc::new(Semaphore::new(
                config.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            max_connections: config.max_connections,
            // An hour is far beyond any sensible setting, and keeps `now + timeout` from overflowing.
            handshake_timeout: config.handshake_timeout.min(Duration::from_secs(3600)),
            max_packet_size: config.max_packet_size,
            // A quarter of the cap unless configured: one host then never holds more than that
            // with idle sockets, while collars behind one carrier NAT, which all reconnect at
            // once after an outage, are rarely refused (and retry with backoff when they are).
            max_handshakes_per_ip: config
                .max_handshakes_per_ip
                .unwrap_or(config.max_connections / 4)
                .max(1),
            handshakes: Mutex::new(HashMap::new()),
            shutdown,
            last_warning: AtomicI64::new(i64::MIN),
            started: Instant::now(),
            next_source: AtomicU32::new(0),
            uplink,
        }
    }

    /// A place among the handshakes of `ip`'s host (its /64 for IPv6: a host can take any
    /// address in it), or `None` if it has its fill.
    fn begin_handshake(self: &Arc<Self>, ip: IpAddr) -> Option<Handshake> {
        let ip = crate::peer::address_key(ip);
        let mut handshakes = self.handshakes.lock().ok()?;
        let count = handshakes.entry(ip).or_insert(0);
        if *count >= self.max_handshakes_per_ip {
            return None;
        }
        *count += 1;
        Some(Handshake {
            door: self.clone(),
            ip,
        })
    }

    /// Sockets open right now, handshaking or connected.
    pub fn open_sockets(&self) -> usize {
        self.max_connections
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.slots.available_permits())
    }

    /// Whether to log a refusal now: at most once every 10 s, whatever the flood.
    fn may_warn(&self) -> bool {
        let now = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let last = self.last_warning.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 10_000
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// How a listener's clients speak MQTT.
#[derive(Clone)]
pub(super) enum Transport {
    Tcp,
    Tls(TlsAcceptor),
    Ws,
}

/// Binds a listening socket. SO_REUSEADDR: without it a restart fails while the old process's
/// connections sit in TIME_WAIT.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts until shutdown. A socket past the cap is closed at once, so the process never runs
/// out of file descriptors because of MQTT clients (HTTP and the database need some too).
pub(super) async fn accept_loop(listener: TcpListener, transport: Transport, door: Arc<Door>) {
    let mut shutdown = door.shutdown.clone();
    // Short and capped low: descriptors free up as sockets close, and accepting should resume
    // soon after.
    let mut failing = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.recv() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    failing.reset();
                    accepted
                }
                Err(err) => {
                    // Out of file descriptors (the cap is above what the limit allows) or a
                    // connection reset while queued: wait instead of spinning.
                    if door.may_warn() {
                        tracing::warn!(%err, "MQTT accept failed (logged at most every 10 s)");
                    }
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        () = failing.wait() => continue,
                    }
                }
            },
        };
        let Ok(slot) = door.slots.clone().try_acquire_owned() else {
            metrics::counter!(METRIC_SOCKETS_CLOSED, "reason" => "max_connections").increment(1);
            if door.may_warn() {
                tracing::warn!(%peer, max_connections = door.max_connections, "MQTT connection refused: mqtt.max_connections sockets are open (logged at most every 10 s; counted in pettracker_mqtt_sockets_closed_total)");
            }
            continue;
        };
        let Some(handshake) = door.begin_handshake(peer.ip()) else {
            metrics::counter!(METRIC_SOCKETS_CLOSED, "reason" => "handshakes_per_ip").increment(1);
            if door.may_warn() {
                tracing::warn!(%peer, max_handshakes_per_ip = door.max_handshakes_per_ip, "MQTT connection refused: this address has mqtt.max_handshakes_per_ip sockets without a complete CONNECT (logged at most every 10 s; counted in pettracker_mqtt_sockets_closed_total)");
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(connection(
            door.clone(),
            socket,
            peer,
            transport.clone(),
            (slot, handshake),
        ));
    }
}

/// Why a socket was closed before or while it was relayed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("no complete CONNECT within the handshake timeout")]
    Timeout,
    #[error("{0}")]
    BadConnect(&'static str),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("closed by the client before CONNECT")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Uplink(#[from] super::uplink::Ended),
}

async fn connection(
    door: Arc<Door>,
    socket: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    (_slot, handshake): (OwnedSemaphorePermit, Handshake),
) {
    let mut shutdown = door.shutdown.clone();
    let deadline = Instant::now() + door.handshake_timeout;
    let outcome = tokio::select! {
        _ = shutdown.recv() => return,
        outcome = serve(&door, socket, transport, deadline, handshake) => outcome,
    };
    let reason = match &outcome {
        Ok(()) | Err(Closed::Io(_)) | Err(Closed::Eof) | Err(Closed::Uplink(_)) => None,
        Err(Closed::Timeout) => Some("handshake_timeout"),
        Err(Closed::BadConnect(_)) => Some("bad_connect"),
        Err(Closed::Handshake(_)) => Some("handshake_failed"),
    };
    if let Some(reason) = reason {
        metrics::counter!(METRIC_SOCKETS_CLOSED, "reason" => reason).increment(1);
    }
    if let Err(err) = outcome {
        tracing::debug!(%peer, %err, "MQTT socket closed");
    }
}

async fn serve(
    door: &Door,
    socket: TcpStream,
    transport: Transport,
    deadline: Instant,
    handshake: Handshake,
) -> Result<(), Closed> {
    match transport {
        Transport::Tcp => relay(door, socket, deadline, handshake).await,
        Transport::Tls(acceptor) => {
            let tls = timeout_at(deadline, acceptor.accept(socket))
                .await
                .map_err(|_| Closed::Timeout)?
                .map_err(|e| Closed::Handshake(e.to_string()))?;
            relay(door, tls, deadline, handshake).await
        }
        Transport::Ws => {
            let ws = timeout_at(
                deadline,
                tokio_tungstenite::accept_hdr_async(socket, choose_mqtt_subprotocol),
            )
            .await
            .map_err(|_| Closed::Timeout)?
            .map_err(|e| Closed::Handshake(e.to_string()))?;
            relay_ws(door, ws, deadline, handshake).await
        }
    }
}

/// MQTT over WebSocket needs the `mqtt` subprotocol ([MQTT-6.0.0-3]); `mqttv3.1` is what older
/// clients offer. Anything else is refused, as rmqtt's own WebSocket listener did.
#[allow(clippy::result_large_err)] // the signature tungstenite's callback has
fn choose_mqtt_subprotocol(
    req: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| *p == "mqtt" || *p == "mqttv3.1");
    match offered {
        Some(protocol) => {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(if protocol == "mqtt" {
                    "mqtt"
                } else {
                    "mqttv3.1"
                }),
            );
            Ok(response)
        }
        None => {
            let mut refusal = ErrorResponse::new(Some(
                "MQTT over WebSocket needs the subprotocol `mqtt` (Sec-WebSocket-Protocol)".into(),
            ));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            Err(refusal)
        }
    }
}

/// Reads until `first` holds a complete CONNECT (and maybe more), before the deadline.
async fn read_connect<S: AsyncRead + Unpin>(
    client: &mut S,
    first: &mut BytesMut,
    max_packet_size: u32,
    deadline: Instant,
) -> Result<(), Closed> {
    while check_connect(first, max_packet_size)?.is_none() {
        first.reserve(512);
        let read = timeout_at(deadline, client.read_buf(first))
            .await
            .map_err(|_| Closed::Timeout)??;
        if read == 0 {
            return Err(Closed::Eof);
        }
    }
    Ok(())
}

/// Loopback addresses the hop's connections come from, in turn. Connections from one address to
/// rmqtt's one port can use each ephemeral port once, which would cap the relayed connections
/// at the ephemeral range (28,232 by Linux's default); Linux answers on all of 127.0.0.0/8.
const HOP_SOURCES: u8 = 16;

async fn connect_upstream(door: &Door, deadline: Instant) -> Result<TcpStream, Closed> {
    let turn = door.next_source.fetch_add(1, Ordering::Relaxed) % u32::from(HOP_SOURCES);
    let source = SocketAddr::from(([127, 0, 0, 1 + turn as u8], 0));
    let socket = TcpSocket::new_v4()?;
    // Where only 127.0.0.1 exists (not Linux), the kernel picks the source.
    let socket = match socket.bind(source) {
        Ok(()) => socket,
        Err(_) => TcpSocket::new_v4()?,
    };
    let upstream = timeout_at(deadline, socket.connect(door.upstream))
        .await
        .map_err(|_| Closed::Timeout)??;
    upstream.set_nodelay(true)?;
    Ok(upstream)
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    door: &Door,
    mut client: S,
    deadline: Instant,
    handshake: Handshake,
) -> Result<(), Closed> {
    let mut first = BytesMut::with_capacity(512);
    read_connect(&mut client, &mut first, door.max_packet_size, deadline).await?;
    drop(handshake);
    let mut upstream = connect_upstream(door, deadline).await?;
    // A collar speaking for a tracker: its own publishes are taken here once rmqtt accepts it.
    let taken = door.uplink.clone().and_then(|hooks| {
        let len = check_connect(&first, door.max_packet_size).ok().flatten()?;
        let connect = super::uplink::Connect::parse(&first[..len])?;
        let tracker = crate::protocol::TrackerId::parse(&connect.client_id).ok()?;
        Some((hooks, tracker, connect, len))
    });
    if let Some((hooks, tracker, connect, len)) = taken {
        let connect_packet = first.split_to(len);
        upstream.write_all(&connect_packet).await?;
        return take_uplink(door, client, first, upstream, hooks, tracker, connect).await;
    }
    upstream.write_all(&first).await?;
    drop(first);

    let (client_rx, client_tx) = tokio::io::split(client);
    let (upstream_rx, upstream_tx) = upstream.into_split();
    copy_both_ways(
        BufReader::with_capacity(RELAY_BUFFER, client_rx),
        client_tx,
        BufReader::with_capacity(RELAY_BUFFER, upstream_rx),
        upstream_tx,
    )
    .await
}

/// Copies bytes each way until the connection is over ([`both_ways`]).
async fn copy_both_ways(
    mut client_rx: impl AsyncBufRead + Unpin,
    mut client_tx: impl AsyncWrite + Unpin,
    mut upstream_rx: impl AsyncBufRead + Unpin,
    mut upstream_tx: impl AsyncWrite + Unpin,
) -> Result<(), Closed> {
    let to_broker = async {
        let copied = tokio::io::copy_buf(&mut client_rx, &mut upstream_tx).await;
        let _ = upstream_tx.shutdown().await;
        copied.map(drop)
    };
    let to_client = async {
        let copied = tokio::io::copy_buf(&mut upstream_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
        copied.map(drop)
    };
    both_ways(to_broker, to_client).await
}

/// After CONNECT: passes rmqtt's CONNACK on and, if it accepts the collar, relays the rest
/// through [`super::uplink`]; otherwise as bytes (rmqtt closes a refused connection).
async fn take_uplink<S: AsyncRead + AsyncWrite + Unpin>(
    door: &Door,
    client: S,
    after_connect: BytesMut,
    upstream: TcpStream,
    hooks: Arc<dyn super::DeviceHooks>,
    tracker: crate::protocol::TrackerId,
    connect: super::uplink::Connect,
) -> Result<(), Closed> {
    let (client_rx, mut client_tx) = tokio::io::split(client);
    let (upstream_rx, upstream_tx) = upstream.into_split();
    let mut upstream_rx = BufReader::with_capacity(RELAY_BUFFER, upstream_rx);
    // rmqtt answers once the credentials are checked (a database round trip, or a wait for an
    // ending session of the same client id); nothing more is read from the collar meanwhile.
    let connack = timeout(
        CONNACK_WAIT,
        super::uplink::read_packet(&mut upstream_rx, door.max_packet_size),
    )
    .await
    .map_err(|_| Closed::Timeout)??;
    let Some(connack) = connack else {
        return Ok(());
    };
    client_tx.write_all(&connack).await?;
    let client_rx = BufReader::with_capacity(
        RELAY_BUFFER,
        std::io::Cursor::new(after_connect).chain(client_rx),
    );
    if !super::uplink::connack_accepts(&connack) {
        return copy_both_ways(client_rx, client_tx, upstream_rx, upstream_tx).await;
    }
    super::uplink::relay(
        hooks,
        tracker,
        connect,
        door.max_packet_size,
        client_rx,
        client_tx,
        upstream_rx,
        upstream_tx,
    )
    .await?;
    Ok(())
}

/// How long rmqtt may take to answer a CONNECT: beyond its own authentication timeout.
const CONNACK_WAIT: Duration = Duration::from_secs(60);

/// Relays until the connection is over. When the broker closes (DISCONNECT, kick, refused
/// CONNACK), it is: the client's side is dropped too, so a client that ignores the close cannot
/// keep the socket. When the client closes first, the broker gets the EOF and a moment to finish.
async fn both_ways(
    to_broker: impl Future<Output = std::io::Result<()>>,
    to_client: impl Future<Output = std::io::Result<()>>,
) -> Result<(), Closed> {
    tokio::pin!(to_broker, to_client);
    tokio::select! {
        done = &mut to_client => done?,
        done = &mut to_broker => {
            let _ = timeout(LINGER, &mut to_client).await;
            done?
        }
    }
    Ok(())
}

async fn relay_ws<S: AsyncRead + AsyncWrite + Unpin>(
    door: &Door,
    ws: WebSocketStream<S>,
    deadline: Instant,
    handshake: Handshake,
) -> Result<(), Closed> {
    let (mut ws_tx, mut ws_rx) = ws.split();
    let mut first = BytesMut::with_capacity(512);
    while check_connect(&first, door.max_packet_size)?.is_none() {
        let message = timeout_at(deadline, ws_rx.next())
            .await
            .map_err(|_| Closed::Timeout)?
            .ok_or(Closed::Eof)?
            .map_err(|e| Closed::Handshake(e.to_string()))?;
        match message {
            Message::Binary(bytes) => first.extend_from_slice(&bytes),
            Message::Close(_) => return Err(Closed::Eof),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Text(_) => {
                return Err(Closed::BadConnect(
                    "MQTT over WebSocket must use binary frames",
                ));
            }
        }
    }
    drop(handshake);
    let upstream = connect_upstream(door, deadline).await?;
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    upstream_tx.write_all(&first).await?;
    drop(first);

    let to_broker = async {
        while let Some(message) = ws_rx.next().await {
            match message.map_err(std::io::Error::other)? {
                Message::Binary(bytes) => upstream_tx.write_all(&bytes).await?,
                Message::Close(_) | Message::Text(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        let _ = upstream_tx.shutdown().await;
        Ok::<(), std::io::Error>(())
    };
    let to_client = async {
        let mut buf = vec![0u8; RELAY_BUFFER];
        loop {
            let read = upstream_rx.read(&mut buf).await?;
            if read == 0 {
                break;
            }
            ws_tx
                .send(Message::binary(buf[..read].to_vec()))
                .await
                .map_err(std::io::Error::other)?;
        }
        let _ = ws_tx.close().await;
        Ok::<(), std::io::Error>(())
    };
    both_ways(to_broker, to_client).await
}

/// Whether `buf` starts with a complete CONNECT: its length if so, `None` if more bytes are
/// needed, an error as soon as the bytes so far cannot start a valid one.
fn check_connect(buf: &[u8], max_packet_size: u32) -> Result<Option<usize>, Closed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // CONNECT is packet type 1 with all four flag bits zero [MQTT-2.2.2-1].
    if first != 0x10 {
        return Err(Closed::BadConnect("the first packet is not a CONNECT"));
    }
    // Remaining length: one to four bytes, seven bits each, least significant first.
    let mut remaining: usize = 0;
    let mut header = 1;
    loop {
        let Some(&byte) = buf.get(header) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(Closed::BadConnect("malformed remaining length"));
        }
    }
    if remaining > max_packet_size as usize {
        return Err(Closed::BadConnect(
            "CONNECT larger than mqtt.max_packet_size",
        ));
    }
    // Variable header: protocol name (length-prefixed), protocol level, connect flags.
    let variable = &buf[header..];
    if let (Some(&hi), Some(&lo)) = (variable.first(), variable.get(1)) {
        let name_len = usize::from(u16::from_be_bytes([hi, lo]));
        if name_len > 6 {
            return Err(Closed::BadConnect("unknown protocol name"));
        }
        if let Some(&flags) = variable.get(2 + name_len + 1) {
            // [MQTT-3.1.2-3] The reserved flag must be zero, or the server disconnects.
            if flags & 0x01 != 0 {
                return Err(Closed::BadConnect("CONNECT reserved flag set"));
            }
        }
    }
    let total = header + remaining;
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal MQTT 3.1.1 CONNECT with client id "c".
    fn connect(flags: u8) -> Vec<u8> {
        vec![
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 1, b'c',
        ]
    }

    #[test]
    fn a_complete_connect_is_recognised_only_once_all_its_bytes_are_there() {
        let packet = connect(0x02);
        for cut in 0..packet.len() {
            assert!(
                check_connect(&packet[..cut], 1024).unwrap().is_none(),
                "complete after {cut} bytes"
            );
        }
        assert_eq!(check_connect(&packet, 1024).unwrap(), Some(packet.len()));
        let mut pipelined = packet.clone();
        pipelined.extend_from_slice(&[0xc0, 0]);
        assert_eq!(check_connect(&pipelined, 1024).unwrap(), Some(packet.len()));
    }

    #[test]
    fn a_connect_with_its_reserved_flag_set_is_refused_before_it_is_complete() {
        let packet = connect(0x03);
        assert!(matches!(
            check_connect(&packet[..10], 1024),
            Err(Closed::BadConnect(_))
        ));
    }

    #[test]
    fn anything_but_a_connect_first_or_an_oversized_one_is_refused() {
        assert!(check_connect(&[0x30, 0], 1024).is_err());
        assert!(check_connect(&[0x11, 0], 1024).is_err());
        assert!(check_connect(&[0x10, 0xff, 0xff, 0xff, 0xff], 1024).is_err());
        assert!(check_connect(&[0x10, 0x80, 0x08], 1023).is_err());
    }
}
