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
