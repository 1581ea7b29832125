//! Starts the brokers the MQTT conformance suite compares, in one process: pettracker's broker in
//! open mode and with credentials (our hooks and front door, an ingest that takes every message)
//! and the bare rmqtt library with no pettracker code at all. Prints one JSON line with their ports, then runs until
//! its standard input closes. Used by `gateway/tests/conformance/run.sh`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::broker::{self, Authentication, BrokerConfig, DeviceHooks, DevicePublish, Refused};
use gateway::protocol::TrackerId;
use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use tokio::io::AsyncReadExt;

/// The password every tracker has on the broker with credentials (`--credentials` in run.sh).
const SECRET: &[u8] = b"conformance-secret";

/// Takes every message at once, as an ingest pipeline with room to spare would. Telling it that
/// a collar went offline takes a moment, as the real pipeline's database round trip does.
struct TakeAll;

#[async_trait::async_trait]
impl DeviceHooks for TakeAll {
    async fn authenticate(&self, _tracker: &TrackerId, secret: &[u8]) -> Authentication {
        if secret == SECRET {
            Authentication::Accepted
        } else {
            Authentication::Refused
        }
    }
    async fn accept_publish(&self, _publish: DevicePublish) -> Result<(), Refused> {
        Ok(())
    }
    async fn connected(&self, _tracker: &TrackerId) {}
    async fn disconnected(&self, _tracker: &TrackerId) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The connection cap every broker in the run is given (`CAP` in conformance.py).
const MAX_CONNECTIONS: usize = 30;

/// rmqtt as its own documentation starts it: defaults everywhere, except the busy check (which
/// refuses clients on a loaded machine and would make the comparison depend on the load) and the
/// same `max_connections` as the others.
async fn bare_rmqtt() -> anyhow::Result<SocketAddr> {
    let scx = ServerContext::new().busy_check_enable(false).build().await;
    let listener = Builder::new()
        .name("bare")
        .laddr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .max_connections(MAX_CONNECTIONS)
        .bind()?;
    let addr = listener.local_addr()?;
    let server = MqttServer::new(scx)
        .listener_by_id(listener.tcp()?, 1)
        .build();
    tokio::spawn(server.run());
    Ok(addr)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pettracker = |open| {
        broker::start(
            BrokerConfig {
                tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                open,
                max_connections: MAX_CONNECTIONS,
                // Short, so the idle-socket check does not wait the default 10 s.
                handshake_timeout: Duration::from_secs(2),
                ..BrokerConfig::default()
            },
            Arc::new(TakeAll),
        )
    };
    let open = pettracker(true).await?;
    let with_credentials = pettracker(false).await?;
    let bare = bare_rmqtt().await?;
    let port = |a: Option<SocketAddr>| a.map(|a| a.port()).unwrap_or_default();
    println!(
        "{{\"pettracker\": {}, \"pettracker_auth\": {}, \"rmqtt\": {}}}",
        port(open.tcp_addr()),
        port(with_credentials.tcp_addr()),
        bare.port()
    );
    // Run until whoever started us closes our stdin (or exits).
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    open.shutdown().await;
    with_credentials.shutdown().await;
    Ok(())
}
