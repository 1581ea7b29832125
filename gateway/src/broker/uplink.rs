//! A collar's own telemetry, status and command results taken at the front door straight into the ingest pipeline, several messages in flight per connection, each PUBACK sent in order once its message is stored.
//!
//! rmqtt runs a connection's publish hooks one at a time, inside the loop that also reads the
//! connection's next packet and delivers to it: with a hook that returns only after the commit, a
//! collar had one message in the pipeline however many it sent, and its acks and commands waited
//! behind it (issue 17). The front door already reads every byte, so once rmqtt has accepted a
//! collar's CONNECT it takes the collar's QoS 0 and 1 PUBLISHes on its own uplink topics itself:
//! each is handed to [`DeviceHooks::submit_publish`] in arrival order, and its PUBACK goes back
//! when it is stored, in the order the PUBLISHes came ([MQTT-4.6.0-2]). Everything else (SUBSCRIBE,
//! PINGREQ, DISCONNECT, QoS 2, a topic that is not the collar's, MQTT 5 topic aliases) still goes
//! to rmqtt, which applies its rules as before. A message that cannot be taken closes the
//! connection without its PUBACK, as the hook did, so the collar sends it again.
//!
//! rmqtt no longer sees the publishes it is spared, so its keep-alive would expire for a collar
//! that only publishes: a PINGREQ goes up on the collar's behalf when rmqtt has heard nothing for
//! half the keep-alive, and its PINGRESP is kept from the collar.
//!
//! See docs/decisions/0005-publishes-at-the-front-door.md.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::access::{self, Action};
use super::{Accepting, DeviceHooks, DevicePublish};
use crate::protocol::TrackerId;

/// Messages of one connection on their way into the pipeline at once. Beyond it the front door
/// reads no more from the collar until the oldest is stored: TCP then slows the collar down.
pub const MAX_IN_FLIGHT: usize = 64;

const PUBLISH: u8 = 3;
const PINGREQ: [u8; 2] = [0xc0, 0x00];
const PINGRESP: u8 = 13;

/// Why a relayed connection ended.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("packet larger than mqtt.max_packet_size")]
    TooLarge,
    #[error("{0}")]
    Refused(String),
}

/// What the front door learned from a CONNECT.
#[derive(Debug, Clone)]
pub struct Connect {
    /// 4 (MQTT 3.1.1) or 5.
    pub level: u8,
    pub client_id: String,
    pub keep_alive: Duration,
}

impl Connect {
    /// Reads a complete CONNECT packet (fixed header included); `None` if it is not one this
    /// module can read, in which case the connection is relayed untouched.
    pub fn parse(packet: &[u8]) -> Option<Connect> {
        let (body, _) = split_fixed_header(packet)?;
        let mut r = Reader(body);
        let name = r.string()?;
        let level = r.u8()?;
        if !matches!((name, level), ("MQTT", 4) | ("MQTT", 5)) {
            return None;
        }
        let _flags = r.u8()?;
        let keep_alive = Duration::from_secs(u64::from(r.u16()?));
        if level == 5 {
            let len = r.varint()?;
            r.skip(len)?;
        }
        let client_id = r.string()?.to_owned();
        Some(Connect {
            level,
            client_id,
            keep_alive,
        })
    }
}

/// Whether a CONNACK accepts the connection (return code / reason code 0).
pub fn connack_accepts(packet: &[u8]) -> bool {
    packet.first() == Some(&0x20)
        && split_fixed_header(packet).is_some_and(|(body, _)| body.get(1) == Some(&0))
}

/// The body of a packet and the length of its fixed header, if the packet is whole.
fn split_fixed_header(packet: &[u8]) -> Option<(&[u8], usize)> {
    let mut remaining: usize = 0;
    let mut i = 1;
    loop {
        let byte = *packet.get(i)?;
        remaining |= usize::from(byte & 0x7f) << (7 * (i - 1));
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return None;
        }
    }
    let end = i.checked_add(remaining)?;
    Some((packet.get(i..end)?, i))
}

/// Reads one whole packet (fixed header and body) into a buffer of its own.
pub async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_packet_size: u32,
) -> Result<Option<Bytes>, Ended> {
    let first = match reader.read_u8().await {
        Ok(byte) => byte,
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let mut header = [first, 0, 0, 0, 0];
    let mut remaining: u32 = 0;
    let mut len = 1;
    loop {
        let byte = reader.read_u8().await?;
        header[len] = byte;
        remaining |= u32::from(byte & 0x7f) << (7 * (len - 1));
        len += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if len > 4 {
            return Err(Ended::Malformed("remaining length longer than four bytes"));
        }
    }
    if remaining > max_packet_size {
        return Err(Ended::TooLarge);
    }
    let body = remaining as usize;
    let mut packet = BytesMut::with_capacity(len + body);
    packet.extend_from_slice(&header[..len]);
    packet.resize(len + body, 0);
    reader.read_exact(&mut packet[len..]).await?;
    Ok(Some(packet.freeze()))
}

/// A PUBLISH this module takes.
struct Publish {
    topic: String,
    qos: u8,
    packet_id: Option<u16>,
    payload: Bytes,
}

/// The PUBLISH in `packet` if it is one the front door takes: QoS 0 or 1, a topic of its own
/// (no MQTT 5 topic alias, which rmqtt keeps track of). `None` sends the packet on to rmqtt.
fn takeable_publish(packet: &Bytes, level: u8) -> Option<Publish> {
    let first = *packet.first()?;
    if first >> 4 != PUBLISH {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    if qos > 1 {
        return None;
    }
    let (body, header_len) = split_fixed_header(packet)?;
    let mut r = Reader(body);
    let topic = r.string()?;
    if topic.is_empty() || topic.contains(['+', '#']) {
        return None;
    }
    let packet_id = if qos == 1 { Some(r.u16()?) } else { None };
    if level == 5 {
        let len = r.varint()?;
        let mut props = Reader(r.take(len)?);
        while !props.0.is_empty() {
            // Topic alias (0x23): rmqtt maps aliases, so a publish with one stays with it.
            let id = props.varint()?;
            match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x29 | 0x2a => props.skip(1)?,
                0x13 | 0x21 | 0x22 => props.skip(2)?,
                0x23 => return None,
                0x02 | 0x11 | 0x18 | 0x27 => props.skip(4)?,
                0x0b => {
                    props.varint()?;
                }
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => {
                    let n = props.u16()?;
                    props.skip(usize::from(n))?;
                }
                0x26 => {
                    for _ in 0..2 {
                        let n = props.u16()?;
                        props.skip(usize::from(n))?;
                    }
                }
                _ => return None,
            }
        }
    }
    let payload_start = header_len + (body.len() - r.0.len());
    Some(Publish {
        topic: topic.to_owned(),
        qos,
        packet_id,
        payload: packet.slice(payload_start..),
    })
}

/// A cursor over a packet's bytes; every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn varint(&mut self) -> Option<usize> {
        let mut value: usize = 0;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    fn string(&mut self) -> Option<&'a str> {
        let n = self.u16()?;
        std::str::from_utf8(self.take(usize::from(n))?).ok()
    }
}

/// One message on its way, and the PUBACK it is owed (none for QoS 0).
struct InFlight {
    packet_id: Option<u16>,
    accepting: Accepting,
}

/// Relays an accepted connection of `tracker`, taking its uplink publishes. `client` is the
/// collar's side (already past CONNECT and CONNACK), `upstream` rmqtt's.
#[allow(clippy::too_many_arguments)]
pub async fn relay<CR, CW, UR, UW>(
    hooks: Arc<dyn DeviceHooks>,
    tracker: TrackerId,
    connect: Connect,
    max_packet_size: u32,
    mut client_rx: CR,
    mut client_tx: CW,
    mut upstream_rx: UR,
    mut upstream_tx: UW,
) -> Result<(), Ended>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let (in_flight_tx, mut in_flight_rx) = mpsc::channel::<InFlight>(MAX_IN_FLIGHT);
    // PINGREQs sent up on the collar's behalf whose PINGRESP has not come back yet.
    let pings = AtomicU32::new(0);

    // Collar → pipeline or rmqtt.
    let from_client = async {
        // rmqtt expires a session after 1.5 keep-alives without a packet from it.
        let ping_every = (connect.keep_alive > Duration::ZERO).then(|| connect.keep_alive / 2);
        let mut heard_upstream = Instant::now();
        let result = loop {
            let packet = match read_packet(&mut client_rx, max_packet_size).await {
                Ok(Some(packet)) => packet,
                Ok(None) => break Ok(()),
                Err(err) => break Err(err),
            };
            let publish = takeable_publish(&packet, connect.level)
                .filter(|p| access::device_may(&tracker, Action::Publish, &p.topic));
            let Some(publish) = publish else {
                if let Err(err) = upstream_tx.write_all(&packet).await {
                    break Err(err.into());
                }
                heard_upstream = Instant::now();
                continue;
            };
            let device = DevicePublish {
                tracker: tracker.clone(),
                topic: publish.topic,
                payload: publish.payload,
                qos: publish.qos,
                received_at: Utc::now(),
                last_will: false,
            };
            let accepting = match hooks.submit_publish(device).await {
                Ok(accepting) => accepting,
                Err(refused) => break Err(Ended::Refused(refused.0)),
            };
            let entry = InFlight {
                packet_id: publish.packet_id,
                accepting,
            };
            if in_flight_tx.send(entry).await.is_err() {
                break Ok(());
            }
            if let Some(every) = ping_every
                && heard_upstream.elapsed() >= every
            {
                pings.fetch_add(1, Ordering::Relaxed);
                if let Err(err) = upstream_tx.write_all(&PINGREQ).await {
                    break Err(err.into());
                }
                heard_upstream = Instant::now();
            }
        };
        drop(in_flight_tx);
        let _ = upstream_tx.shutdown().await;
        result
    };

    // rmqtt's packets and the PUBACKs → collar, whole packets only.
    let to_client = async {
        let (packets_tx, mut packets_rx) = mpsc::channel::<Bytes>(16);
        let from_upstream = async {
            loop {
                match read_packet(&mut upstream_rx, u32::MAX).await {
                    Ok(Some(packet)) => {
                        if packets_tx.send(packet).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(err) => return Err(err),
                }
            }
        };
        let write = async {
            let mut waiting: VecDeque<InFlight> = VecDeque::new();
            let mut taking = true;
            let mut acks: Vec<u8> = Vec::new();
            loop {
                tokio::select! {
                    // rmqtt first: a kick or a refusal ends the connection before anything else.
                    biased;
                    packet = packets_rx.recv() => {
                        let Some(packet) = packet else { return Ok(()) };
                        if packet.first().map(|b| b >> 4) == Some(PINGRESP)
                            && pings
                                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                                .is_ok()
                        {
                            continue;
                        }
                        client_tx.write_all(&packet).await?;
                    }
                    stored = front(&mut waiting), if !waiting.is_empty() => {
                        let done = waiting.pop_front();
                        if let Err(refused) = stored {
                            return Err(Ended::Refused(refused.0));
                        }
                        // A commit usually stores several of this collar's messages at once:
                        // their PUBACKs go out in one write, not one send (and one wake-up of
                        // the collar) each. Still in order, and none before its own commit.
                        while waiting.len() < MAX_IN_FLIGHT {
                            match in_flight_rx.try_recv() {
                                Ok(entry) => waiting.push_back(entry),
                                Err(_) => break,
                            }
                        }
                        acks.clear();
                        push_puback(&mut acks, done.and_then(|d| d.packet_id));
                        let mut refused = None;
                        while let Some(next) = waiting.front_mut() {
                            match next.accepting.as_mut().now_or_never() {
                                Some(Ok(())) => {
                                    let next = waiting.pop_front();
                                    push_puback(&mut acks, next.and_then(|d| d.packet_id));
                                }
                                Some(Err(err)) => {
                                    refused = Some(err);
                                    break;
                                }
                                None => break,
                            }
                        }
                        if !acks.is_empty() {
                            client_tx.write_all(&acks).await?;
                        }
                        if let Some(refused) = refused {
                            return Err(Ended::Refused(refused.0));
                        }
                    }
                    entry = in_flight_rx.recv(), if taking && waiting.len() < MAX_IN_FLIGHT => match entry {
                        Some(entry) => waiting.push_back(entry),
                        None => taking = false,
                    },
                }
            }
        };
        let result: Result<(), Ended> = tokio::select! {
            done = from_upstream => done,
            done = write => done,
        };
        let _ = client_tx.shutdown().await;
        result
    };

    // As in the plain relay: when rmqtt closes, the collar is dropped; when the collar closes,
    // rmqtt gets the EOF and a moment to finish.
    tokio::pin!(from_client, to_client);
    tokio::select! {
        done = &mut to_client => done,
        done = &mut from_client => {
            let _ = tokio::time::timeout(super::front::LINGER, &mut to_client).await;
            done
        }
    }
}

/// Appends the PUBACK a QoS 1 message is owed (QoS 0 is owed none).
fn push_puback(acks: &mut Vec<u8>, packet_id: Option<u16>) {
    if let Some(id) = packet_id {
        let [hi, lo] = id.to_be_bytes();
        acks.extend_from_slice(&[0x40, 0x02, hi, lo]);
    }
}

/// Completes when the oldest message in flight does.
async fn front(waiting: &mut VecDeque<InFlight>) -> Result<(), super::Refused> {
    match waiting.front_mut() {
        Some(oldest) => oldest.accepting.as_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, body: &[u8]) -> Bytes {
        let mut p = vec![first];
        let mut n = body.len();
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            p.push(byte);
            if n == 0 {
                break;
            }
        }
        p.extend_from_slice(body);
        Bytes::from(p)
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn a_connect_gives_its_level_client_id_and_keep_alive() {
        let mut body = string("MQTT");
        body.extend_from_slice(&[5, 0b1100_0010, 0, 30, 0]);
        body.extend(string("rex"));
        let c = Connect::parse(&packet(0x10, &body)).unwrap();
        assert_eq!((c.level, c.client_id.as_str()), (5, "rex"));
        assert_eq!(c.keep_alive, Duration::from_secs(30));
        let mut old = string("MQIsdp");
        old.extend_from_slice(&[3, 2, 0, 30]);
        old.extend(string("rex"));
        assert!(Connect::parse(&packet(0x10, &old)).is_none());
    }

    #[test]
    fn only_an_accepting_connack_accepts() {
        assert!(connack_accepts(&[0x20, 0x02, 0x00, 0x00]));
        assert!(!connack_accepts(&[0x20, 0x02, 0x00, 0x05]));
        assert!(connack_accepts(&[0x20, 0x03, 0x00, 0x00, 0x00]));
        assert!(!connack_accepts(&[0x20, 0x03, 0x00, 0x87, 0x00]));
    }

    #[test]
    fn qos_0_and_1_publishes_are_taken_and_qos_2_and_topic_aliases_are_not() {
        let mut body = string("trackers/rex/telemetry");
        body.extend_from_slice(&[0x12, 0x34]);
        body.extend_from_slice(b"{}");
        let p = takeable_publish(&packet(0x32, &body), 4).unwrap();
        assert_eq!((p.qos, p.packet_id), (1, Some(0x1234)));
        assert_eq!(&p.payload[..], b"{}");
        assert!(takeable_publish(&packet(0x34, &body), 4).is_none(), "QoS 2");

        // MQTT 5: properties before the payload; a payload format indicator is fine...
        let mut v5 = string("trackers/rex/telemetry");
        v5.extend_from_slice(&[0x00, 0x07, 0x02, 0x01, 0x01]);
        v5.extend_from_slice(b"{}");
        let p = takeable_publish(&packet(0x32, &v5), 5).unwrap();
        assert_eq!(&p.payload[..], b"{}");
        // ...a topic alias is rmqtt's.
        let mut alias = string("trackers/rex/telemetry");
        alias.extend_from_slice(&[0x00, 0x07, 0x03, 0x23, 0x00, 0x01]);
        alias.extend_from_slice(b"{}");
        assert!(takeable_publish(&packet(0x32, &alias), 5).is_none());

        let mut qos0 = string("trackers/rex/status");
        qos0.extend_from_slice(b"{}");
        let p = takeable_publish(&packet(0x30, &qos0), 4).unwrap();
        assert_eq!((p.qos, p.packet_id), (0, None));
    }

    #[test]
    fn truncated_or_lying_packets_are_left_to_rmqtt() {
        let mut body = string("trackers/rex/telemetry");
        body.truncate(5);
        assert!(takeable_publish(&packet(0x32, &body), 4).is_none());
        assert!(takeable_publish(&Bytes::from_static(&[0x32, 0x7f, 0x00]), 4).is_none());
        let mut v5 = string("t");
        v5.extend_from_slice(&[0x00, 0x01, 0x09, 0xff]);
        assert!(takeable_publish(&packet(0x32, &v5), 5).is_none());
    }

    #[tokio::test]
    async fn packets_are_read_whole_and_an_oversized_one_is_refused() {
        let mut bytes: &[u8] = &[0xc0, 0x00, 0x30, 0x03, 0x00, 0x01, b't'];
        assert_eq!(
            read_packet(&mut bytes, 100).await.unwrap().unwrap()[..],
            [0xc0, 0x00]
        );
        assert_eq!(
            read_packet(&mut bytes, 100).await.unwrap().unwrap().len(),
            5
        );
        assert!(read_packet(&mut bytes, 100).await.unwrap().is_none());
        let mut big: &[u8] = &[0x30, 0xff, 0x7f];
        assert!(matches!(
            read_packet(&mut big, 100).await,
            Err(Ended::TooLarge)
        ));
    }
}
