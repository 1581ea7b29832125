//! Collar credentials and broker addresses, read from files and flags, and the MQTT options a
//! collar connects with.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use gateway::protocol::{Presence, TrackerId, encode_online, topics};
use rumqttc::{LastWill, MqttOptions, QoS, Transport};
use serde::{Deserialize, Serialize};

/// A collar's MQTT identity: its tracker id (client id and username) and device secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Checked when the credentials are read: an id the protocol refuses could never connect.
    pub tracker_id: TrackerId,
    pub secret: String,
}

/// How a collar connects (docs/protocol.md, *Connecting*): client id = username = tracker id,
/// password = device secret, and a Last Will saying `offline` on its `online` topic; over TLS when
/// the broker has a CA certificate.
pub fn mqtt_options(credential: &Credential, broker: &Broker, keep_alive: Duration) -> MqttOptions {
    let id = credential.tracker_id.as_str();
    let mut o = MqttOptions::new(id, &broker.host, broker.port);
    o.set_credentials(id, &credential.secret);
    o.set_keep_alive(keep_alive);
    o.set_last_will(LastWill::new(
        topics::online(&credential.tracker_id),
        encode_online(Presence::Offline),
        QoS::AtLeastOnce,
        false,
    ));
    if let Some(ca) = &broker.tls_ca {
        o.set_transport(Transport::tls(ca.clone(), None, None));
    }
    o
}

/// Reads a JSON array of {"tracker_id", "secret"} objects, or one such object per line (the
/// output of `pettracker tracker provision <prefix> --count N --json`).
pub fn load_credentials(path: &Path) -> anyhow::Result<Vec<Credential>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: bad credentials array", path.display()));
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad credentials line: {l}")))
        .collect()
}

/// Provisions `count` new collars `<prefix>-00001`, ... through the server's admin API
/// (`POST {api}/admin/trackers`, `api` like `http://127.0.0.1:8080/api/v1`) with an admin's
/// access token or API key. Each secret is shown once by the server, so keep the result
/// (`--save`) to run the same collars again.
pub async fn provision_via_api(
    api: &str,
    admin_token: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Credential>> {
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(count);
    for i in 1..=count {
        let tracker_id = TrackerId::parse(&format!("{prefix}-{i:05}"))
            .map_err(|e| anyhow::anyhow!("--prefix {prefix:?} makes an invalid tracker id: {e}"))?;
        let response = http
            .post(format!("{}/admin/trackers", api.trim_end_matches('/')))
            .bearer_auth(admin_token)
            .json(&serde_json::json!({ "tracker_id": tracker_id }))
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {api}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!(
                "provisioning {tracker_id}: {status}: {} (an existing tracker's secret cannot be \
                 shown again: choose another --prefix, or run from the --save file)",
                body["message"].as_str().unwrap_or("no message")
            );
        }
        out.push(Credential {
            tracker_id,
            secret: body["secret"]
                .as_str()
                .context("the admin API answered without a secret")?
                .to_owned(),
        });
    }
    Ok(out)
}

/// Where the broker listens, and how to reach it.
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// PEM CA certificate(s) to verify the broker with: set, the collar speaks MQTT over TLS.
    pub tls_ca: Option<Vec<u8>>,
}

impl Broker {
    pub fn plain(host: impl Into<String>, port: u16) -> Broker {
        Broker {
            host: host.into(),
            port,
            tls_ca: None,
        }
    }

    /// `host:port`.
    pub fn parse(s: &str) -> anyhow::Result<Broker> {
        let (host, port) = s
            .rsplit_once(':')
            .with_context(|| format!("broker {s:?} must be host:port"))?;
        Ok(Broker::plain(
            host,
            port.parse()
                .with_context(|| format!("broker {s:?}: bad port"))?,
        ))
    }
}
