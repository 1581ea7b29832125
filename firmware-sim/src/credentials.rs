//! Collar credentials and broker addresses: read from files and flags.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A collar's MQTT identity: its tracker id (client id and username) and device secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub tracker_id: String,
    pub secret: String,
}

/// Reads a JSON array of {"tracker_id", "secret"} objects, or one such object per line (the
/// output of `pettracker tracker provision <prefix> --count N --json`).
pub fn load_credentials(path: &Path) -> anyhow::Result<Vec<Credential>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(list) = serde_json::from_str::<Vec<Credential>>(&text) {
        return Ok(list);
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
        let tracker_id = format!("{prefix}-{i:05}");
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
