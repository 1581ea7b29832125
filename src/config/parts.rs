//! What each part of the server takes, built from the sections: the gateway's ingest pipeline and broker, and the live feed.

use super::Config;

impl Config {
    /// The pipeline settings the gateway takes.
    pub fn ingest_config(&self) -> gateway::ingest::IngestConfig {
        let i = &self.ingest;
        gateway::ingest::IngestConfig {
            batch_size: i.batch_size,
            batch_timeout: std::time::Duration::from_millis(i.batch_timeout_ms),
            batch_linger: std::time::Duration::from_millis(i.batch_linger_ms),
            queue_capacity: i.queue_capacity,
            accept_timeout: std::time::Duration::from_millis(i.accept_timeout_ms),
            spool_dir: i.spool_dir.clone(),
            silence_timeout: std::time::Duration::from_secs(i.silence_timeout_secs),
            limits: gateway::protocol::ValidationLimits {
                max_future_skew: chrono::TimeDelta::seconds(i.max_future_skew_secs as i64),
                max_age: chrono::TimeDelta::days(i64::from(self.storage.retention_days)),
            },
            clock: gateway::ingest::Clock::System,
            writers: i.writers,
            // The server plugs its live bus, its command reports, its alert engine and its
            // database readiness in (src/app.rs).
            live: gateway::live::LivePublisher::default(),
            commands: None,
            committed: None,
            database: gateway::storage::Ready::now(),
        }
    }

    /// The listener settings the broker takes.
    pub fn broker_config(&self) -> gateway::broker::BrokerConfig {
        let m = &self.mqtt;
        gateway::broker::BrokerConfig {
            tcp: Some(m.addr),
            tls: match (m.tls_addr, &m.tls_cert, &m.tls_key) {
                (Some(addr), Some(cert), Some(key)) => Some(gateway::broker::TlsListener {
                    addr,
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            ws: m.ws_addr,
            open: m.open,
            max_packet_size: m.max_packet_size,
            max_connections: m.max_connections,
            handshake_timeout: std::time::Duration::from_millis(m.handshake_timeout_ms),
            max_handshakes_per_ip: (m.max_handshakes_per_ip > 0).then_some(m.max_handshakes_per_ip),
        }
    }

    /// The external broker's connection settings, or `None` for the embedded broker. An empty
    /// client id becomes `pettracker-` and the host name: a pod's name in Kubernetes, stable for
    /// a StatefulSet's pods.
    pub fn external_broker(&self) -> Option<gateway::external::ExternalConfig> {
        let e = &self.external_broker;
        // Validation has parsed it; a URL that does not parse means no external broker.
        let url = gateway::external::BrokerUrl::parse(e.url.as_deref()?).ok()?;
        let client_id = if e.client_id.is_empty() {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".to_owned());
            format!("pettracker-{host}")
        } else {
            e.client_id.clone()
        };
        Some(gateway::external::ExternalConfig {
            url,
            client_id,
            group: e.group.clone(),
            username: e.username.clone(),
            password: e.password.clone(),
            ca_file: e.ca_file.clone(),
            keep_alive: std::time::Duration::from_secs(e.keep_alive_secs),
            max_packet_size: self.mqtt.max_packet_size as usize,
            presence_events: e.presence_events,
        })
    }
}
