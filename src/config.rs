//! Configuration: a TOML file, then `PETTRACKER_*` environment variables, then command-line flags, validated once at start.
//!
//! Every setting has one dotted key (`http.addr`). Its environment variable is derived from the key
//! (`PETTRACKER_HTTP_ADDR`), so the table in [`KEYS`] is both the parser's list and the documentation's.
//! Errors always name the key, where its value came from, and the value (never for secrets).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gateway::storage::TimescalePreference;
use secrecy::SecretString;
use serde::Deserialize;

mod map;
pub use map::MapSettings;

/// The whole configuration of a pettracker process.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub ingest: IngestSettings,
    pub auth: AuthConfig,
    pub commands: CommandsConfig,
    pub log: LogConfig,
    pub live: LiveSettings,
    pub alerts: AlertSettings,
    pub map: MapSettings,
}

/// Alert rules (see docs/live.md, *Alerts*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// A battery at or below this percent raises one alert per crossing.
    pub battery_low_percent: u64,
    /// A claimed tracker silent for longer than this raises an offline alert.
    pub offline_after_secs: u64,
    /// A zone exit or entry counts only after this long on the new side...
    pub geofence_dwell_secs: u64,
    /// ...and this many fixes there.
    pub geofence_dwell_fixes: u64,
    /// A fix outside a zone by less than its accuracy, and at least this, decides nothing.
    pub geofence_margin_m: u64,
    /// Fixes older than this when they arrive raise no alert (buffered uploads).
    pub max_fix_age_secs: u64,
    /// First wait before a failed webhook delivery is retried; doubles per attempt, jittered.
    pub webhook_retry_base_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            battery_low_percent: 20,
            offline_after_secs: 900,
            geofence_dwell_secs: 60,
            geofence_dwell_fixes: 2,
            geofence_margin_m: 15,
            max_fix_age_secs: 300,
            webhook_retry_base_ms: 1_000,
        }
    }
}

/// The WebSocket live feed (`GET /api/v1/live`); see docs/live.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// Events waiting to be sent to one connection; beyond it the connection is told it overflowed.
    pub queue_capacity: usize,
    /// Events the in-process bus keeps for a subscriber that is behind.
    pub bus_capacity: usize,
    /// How often the server pings each connection.
    pub ping_interval_secs: u64,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout_secs: u64,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            bus_capacity: 8192,
            ping_interval_secs: 20,
            idle_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the REST API, WebSocket feed, `/metrics` and health checks listen.
    pub addr: SocketAddr,
    /// Requests per second each credential (a user's access tokens together, or one API key)
    /// may make on average; beyond it the API answers 429 with `Retry-After`.
    pub rate_limit_per_second: u32,
    /// Requests a credential may make at once after being idle: a page load fires several.
    pub rate_limit_burst: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate_limit_per_second: 50,
            rate_limit_burst: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Plain MQTT listener for collars.
    pub addr: SocketAddr,
    /// Accept any client without credentials or topic checks. For trying the broker by hand only:
    /// it is logged loudly at start.
    pub open: bool,
    /// MQTT over TLS; needs `tls_cert` and `tls_key`. Unset: no TLS listener.
    pub tls_addr: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    pub tls_key: Option<PathBuf>,
    /// MQTT over WebSocket (path `/mqtt`). Unset: no WebSocket listener.
    pub ws_addr: Option<SocketAddr>,
    /// Most simultaneous device connections.
    pub max_connections: usize,
    /// Largest MQTT packet; larger ones close the connection.
    pub max_packet_size: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 1883)),
            open: false,
            tls_addr: None,
            tls_cert: None,
            tls_key: None,
            ws_addr: None,
            max_connections: 200_000,
            max_packet_size: 512 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Rows per database transaction at most.
    pub batch_size: usize,
    /// A batch is written at the latest this long after its first row arrived.
    pub batch_timeout_ms: u64,
    /// Messages waiting for decoding; when full, publishers wait (backpressure).
    pub queue_capacity: usize,
    /// How long a QoS 1 publish may wait to be stored before the collar is told to resend.
    pub accept_timeout_ms: u64,
    /// Where batches wait on disk while the database is unreachable.
    pub spool_dir: PathBuf,
    /// A tracker that says nothing for this long is marked offline.
    pub silence_timeout_secs: u64,
    /// Fixes dated further than this in the future are refused (broken device clock).
    pub max_future_skew_secs: u64,
    /// Batches written in parallel, each for its own shard of the trackers. More than the
    /// database's cores gains nothing; each takes one connection from `database.pool_size`.
    pub writers: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            batch_timeout_ms: 20,
            queue_capacity: 10_000,
            accept_timeout_ms: 5_000,
            spool_dir: PathBuf::from("data/spool"),
            silence_timeout_secs: 600,
            max_future_skew_secs: 300,
            writers: 2,
        }
    }
}

impl Config {
    /// The pipeline settings the gateway takes.
    pub fn ingest_config(&self) -> gateway::ingest::IngestConfig {
        let i = &self.ingest;
        gateway::ingest::IngestConfig {
            batch_size: i.batch_size,
            batch_timeout: std::time::Duration::from_millis(i.batch_timeout_ms),
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
            // The server plugs its live bus in (src/app.rs).
            live: gateway::live::LivePublisher::default(),
        }
    }

    /// The live feed's session settings.
    pub fn live_options(&self) -> crate::live::LiveOptions {
        crate::live::LiveOptions {
            queue_capacity: self.live.queue_capacity,
            ping_interval: std::time::Duration::from_secs(self.live.ping_interval_secs),
            // Never shorter than two ping intervals, or a healthy client could time out between pings.
            idle_timeout: std::time::Duration::from_secs(
                self.live
                    .idle_timeout_secs
                    .max(2 * self.live.ping_interval_secs),
            ),
        }
    }

    /// The alert engine's rules.
    pub fn alert_settings(&self) -> crate::alerts::AlertSettings {
        let a = &self.alerts;
        crate::alerts::AlertSettings {
            battery_low_percent: a.battery_low_percent.min(99) as i16,
            offline_after: std::time::Duration::from_secs(a.offline_after_secs),
            dwell: std::time::Duration::from_secs(a.geofence_dwell_secs),
            dwell_fixes: a.geofence_dwell_fixes.min(1_000) as u32,
            margin_m: a.geofence_margin_m as f64,
            max_fix_age: std::time::Duration::from_secs(a.max_fix_age_secs),
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
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. Unset: pettracker runs a private cluster under `data_dir`.
    pub url: Option<SecretString>,
    /// Where the private cluster lives when `url` is unset.
    pub data_dir: PathBuf,
    /// Connections in the pool shared by ingest and the API.
    pub pool_size: usize,
    /// `auto` uses TimescaleDB when the server has it; `required` refuses to start without it; `off` never uses it.
    pub timescaledb: TimescalePreference,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            data_dir: PathBuf::from("data/postgres"),
            pool_size: 16,
            timescaledb: TimescalePreference::Auto,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Fixes older than this are deleted, and older fixes arriving late are rejected.
    pub retention_days: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC-SHA256 key signing access tokens, at least 32 bytes. Unset: a random key per start,
    /// so every access token dies with the process (refresh tokens, stored in the database, do not).
    pub token_secret: Option<SecretString>,
    /// Lifetime of an access token. Short, because an access token cannot be revoked.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token; each use replaces it with a new one.
    pub refresh_token_ttl_days: u32,
    /// Users registering with one of these emails (compared case-insensitively) become admins.
    pub admin_emails: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_secret: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_days: 30,
            admin_emails: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// A command the collar has not answered is published again after this long, doubling
    /// (with jitter) for each further send: a collar that missed it while reconnecting gets it.
    pub resend_after_ms: u64,
    /// Publishes of one attempt before it is `failed` with "no answer".
    pub max_sends: u32,
    /// How long a command may wait (offline collar included) before it expires, unless the
    /// request says otherwise.
    pub default_ttl_secs: u32,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            resend_after_ms: 10_000,
            max_sends: 5,
            default_ttl_secs: 3_600,
        }
    }
}

/// The smallest accepted `auth.token_secret`: HS256 keys shorter than the hash output are weak.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `pettracker=debug,gateway=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The type of a setting, used to turn an environment variable or flag into a TOML value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Str,
    Int,
    Bool,
    Secret,
    /// Comma-separated in the environment and flags, a TOML array in the file.
    List,
}

/// Every setting: dotted key, type, and what it is for (shown in docs/operations.md).
#[rustfmt::skip]
pub const KEYS: &[(&str, Kind, &str)] = &[
    ("http.addr", Kind::Str, "HTTP listen address"),
    ("http.rate_limit_per_second", Kind::Int, "API requests per second per credential (429 beyond)"),
    ("http.rate_limit_burst", Kind::Int, "API requests a credential may make at once"),
    ("mqtt.addr", Kind::Str, "MQTT/TCP listen address"),
    ("mqtt.open", Kind::Bool, "accept any MQTT client (development only)"),
    ("mqtt.tls_addr", Kind::Str, "MQTT/TLS listen address (unset: off)"),
    ("mqtt.tls_cert", Kind::Str, "PEM certificate chain for MQTT/TLS"),
    ("mqtt.tls_key", Kind::Str, "PEM private key for MQTT/TLS"),
    ("mqtt.ws_addr", Kind::Str, "MQTT over WebSocket listen address (unset: off)"),
    ("mqtt.max_connections", Kind::Int, "most simultaneous device connections"),
    ("mqtt.max_packet_size", Kind::Int, "largest MQTT packet in bytes"),
    ("database.url", Kind::Secret, "PostgreSQL URL; unset runs a private cluster"),
    ("database.data_dir", Kind::Str, "directory of the private cluster"),
    ("database.pool_size", Kind::Int, "database connections"),
    ("database.timescaledb", Kind::Str, "auto, required or off"),
    ("storage.retention_days", Kind::Int, "days of history kept"),
    ("ingest.batch_size", Kind::Int, "rows per database transaction at most"),
    ("ingest.batch_timeout_ms", Kind::Int, "longest wait before a partial batch is written"),
    ("ingest.queue_capacity", Kind::Int, "messages waiting for decoding before publishers wait"),
    ("ingest.accept_timeout_ms", Kind::Int, "longest wait for a QoS 1 publish to be stored"),
    ("ingest.spool_dir", Kind::Str, "directory for batches while the database is down"),
    ("ingest.silence_timeout_secs", Kind::Int, "silence after which a tracker is offline"),
    ("ingest.max_future_skew_secs", Kind::Int, "how far in the future a fix may be dated"),
    ("ingest.writers", Kind::Int, "batches written in parallel (shards of the trackers)"),
    ("auth.token_secret", Kind::Secret, "key signing access tokens, at least 32 bytes (unset: random per start)"),
    ("auth.access_token_ttl_secs", Kind::Int, "lifetime of an access token"),
    ("auth.refresh_token_ttl_days", Kind::Int, "lifetime of a refresh token"),
    ("auth.admin_emails", Kind::List, "emails that become admins when they register (comma-separated)"),
    ("commands.resend_after_ms", Kind::Int, "first wait before an unanswered command is sent again"),
    ("commands.max_sends", Kind::Int, "sends of a command before it fails with no answer"),
    ("commands.default_ttl_secs", Kind::Int, "how long a command may wait before it expires"),
    ("live.queue_capacity", Kind::Int, "events queued per live-feed connection before it overflows"),
    ("live.bus_capacity", Kind::Int, "events the in-process live bus keeps for a subscriber that is behind"),
    ("live.ping_interval_secs", Kind::Int, "how often the server pings each live-feed connection"),
    ("live.idle_timeout_secs", Kind::Int, "silence (not even a pong) after which a live-feed connection is closed (at least two ping intervals)"),
    ("alerts.battery_low_percent", Kind::Int, "battery percent at or below which one alert is raised per crossing"),
    ("alerts.offline_after_secs", Kind::Int, "silence after which a claimed tracker raises an offline alert"),
    ("alerts.geofence_dwell_secs", Kind::Int, "time on the other side of a zone before an exit or entry alert"),
    ("alerts.geofence_dwell_fixes", Kind::Int, "fixes on the other side of a zone before an exit or entry alert"),
    ("alerts.geofence_margin_m", Kind::Int, "least GPS accuracy margin: a fix outside by less decides nothing"),
    ("alerts.max_fix_age_secs", Kind::Int, "fixes older than this on arrival raise no alert"),
    ("alerts.webhook_retry_base_ms", Kind::Int, "first wait before a failed webhook delivery is retried (doubles, jittered)"),
    ("map.tile_url", Kind::Str, "the web app's basemap tile URL template ({z}/{x}/{y}); empty: no basemap"),
    ("map.tile_attribution", Kind::Str, "credit shown on the web app's map for the tiles (HTML)"),
    ("map.max_zoom", Kind::Int, "deepest zoom of the tile server (1-24)"),
    ("log.format", Kind::Str, "text or json"),
    ("log.level", Kind::Str, "tracing filter, e.g. info"),
];

/// The environment variable for a key: `http.addr` -> `PETTRACKER_HTTP_ADDR`.
pub fn env_name(key: &str) -> String {
    format!("PETTRACKER_{}", key.replace('.', "_").to_uppercase())
}

/// A configuration error that names the key, where its value came from, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

/// Builds the configuration from its layers. `overrides` are flags, as (key, value) pairs.
pub struct Loader {
    table: toml::Table,
    origins: BTreeMap<String, String>,
}

impl Loader {
    /// Starts from a config file, or from defaults when `path` is `None`.
    pub fn new(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut loader = Loader {
            table: toml::Table::new(),
            origins: BTreeMap::new(),
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            loader.table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
            for key in KEYS.iter().map(|k| k.0) {
                loader
                    .origins
                    .insert(key.to_owned(), format!("config file {}", path.display()));
            }
        }
        Ok(loader)
    }

    /// Applies `PETTRACKER_*` variables, and `DATABASE_URL` which most PostgreSQL tools already use.
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if let Some(url) = lookup("DATABASE_URL").filter(|u| !u.is_empty()) {
            self.set("database.url", &url, "environment variable DATABASE_URL")?;
        }
        for (key, _, _) in KEYS {
            let name = env_name(key);
            if let Some(value) = lookup(&name) {
                self.set(key, &value, &format!("environment variable {name}"))?;
            }
        }
        Ok(self)
    }

    /// Applies one command-line flag.
    pub fn flag(
        mut self,
        key: &str,
        value: Option<String>,
        flag: &str,
    ) -> Result<Self, ConfigError> {
        if let Some(value) = value {
            self.set(key, &value, &format!("flag {flag}"))?;
        }
        Ok(self)
    }

    fn set(&mut self, key: &str, raw: &str, origin: &str) -> Result<(), ConfigError> {
        let kind = KEYS
            .iter()
            .find(|k| k.0 == key)
            .map(|k| k.1)
            .unwrap_or(Kind::Str);
        let invalid = |message: String| ConfigError::Invalid {
            key: key.to_owned(),
            origin: origin.to_owned(),
            message,
        };
        let value = match kind {
            Kind::Str | Kind::Secret => toml::Value::String(raw.to_owned()),
            Kind::Int => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|_| invalid(format!("{raw:?} is not a whole number")))?,
            ),
            Kind::List => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_owned()))
                    .collect(),
            ),
            Kind::Bool => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => return Err(invalid(format!("{raw:?} is not true or false"))),
            }),
        };
        let mut parts = key.split('.');
        let (Some(section), Some(field)) = (parts.next(), parts.next()) else {
            return Err(invalid("not a known setting".to_owned()));
        };
        let entry = self
            .table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(field.to_owned(), value);
            }
            _ => return Err(invalid(format!("`{section}` must be a table"))),
        }
        self.origins.insert(key.to_owned(), origin.to_owned());
        Ok(())
    }

    /// Deserializes and validates the merged layers.
    pub fn load(self) -> Result<Config, ConfigError> {
        let origins = self.origins;
        let origin_of = |key: &str| {
            origins
                .get(key)
                .cloned()
                .unwrap_or_else(|| "config file".to_owned())
        };
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(self.table))
            .map_err(|e| {
                let key = e.path().to_string();
                let message = e.inner().message().to_owned();
                // Secrets never appear in errors: serde messages may quote the value.
                let secret = KEYS
                    .iter()
                    .any(|k| k.0 == key && matches!(k.1, Kind::Secret));
                let message = if secret {
                    "invalid value".to_owned()
                } else {
                    message
                };
                ConfigError::Invalid {
                    origin: origin_of(&key),
                    key,
                    message,
                }
            })?;
        config.validate(&origin_of)?;
        Ok(config)
    }
}

impl Config {
    /// Loads file, then the process environment, with no flags.
    pub fn from_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        Loader::new(path)?.env(|k| std::env::var(k).ok())?.load()
    }

    fn validate(&self, origin_of: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            origin: origin_of(key),
            message,
        };
        if self.database.pool_size == 0 || self.database.pool_size > 1000 {
            return Err(fail(
                "database.pool_size",
                format!("{} is outside 1..=1000", self.database.pool_size),
            ));
        }
        if self.storage.retention_days == 0 {
            return Err(fail(
                "storage.retention_days",
                "must be at least 1".to_owned(),
            ));
        }
        if self.mqtt.tls_addr.is_some()
            && (self.mqtt.tls_cert.is_none() || self.mqtt.tls_key.is_none())
        {
            return Err(fail(
                "mqtt.tls_addr",
                "a TLS listener needs mqtt.tls_cert and mqtt.tls_key (see broker-config/README.md)"
                    .to_owned(),
            ));
        }
        for (key, value) in [
            (
                "http.rate_limit_per_second",
                self.http.rate_limit_per_second as usize,
            ),
            ("http.rate_limit_burst", self.http.rate_limit_burst as usize),
            (
                "commands.resend_after_ms",
                self.commands.resend_after_ms as usize,
            ),
            ("commands.max_sends", self.commands.max_sends as usize),
            (
                "commands.default_ttl_secs",
                self.commands.default_ttl_secs as usize,
            ),
            ("ingest.batch_size", self.ingest.batch_size),
            ("ingest.queue_capacity", self.ingest.queue_capacity),
            ("ingest.writers", self.ingest.writers),
            ("mqtt.max_connections", self.mqtt.max_connections),
        ] {
            if value == 0 {
                return Err(fail(key, "must be at least 1".to_owned()));
            }
        }
        if self.ingest.accept_timeout_ms == 0 || self.ingest.accept_timeout_ms > 30_000 {
            return Err(fail(
                "ingest.accept_timeout_ms",
                format!(
                    "{} is outside 1..=30000: a publish hook blocks its connection, so it must stay below the collars' keep-alive",
                    self.ingest.accept_timeout_ms
                ),
            ));
        }
        if let Some(url) = &self.database.url {
            gateway::storage::describe_url(url).map_err(|e| fail("database.url", e.to_string()))?;
        }
        if let Some(secret) = &self.auth.token_secret {
            let len = secrecy::ExposeSecret::expose_secret(secret).len();
            if len < MIN_TOKEN_SECRET_BYTES {
                return Err(fail(
                    "auth.token_secret",
                    format!(
                        "is {len} bytes; it must be at least {MIN_TOKEN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
                    ),
                ));
            }
        }
        if self.auth.access_token_ttl_secs == 0 || self.auth.access_token_ttl_secs > 86_400 {
            return Err(fail(
                "auth.access_token_ttl_secs",
                format!(
                    "{} is outside 1..=86400: access tokens cannot be revoked, so they must stay short-lived",
                    self.auth.access_token_ttl_secs
                ),
            ));
        }
        if self.auth.refresh_token_ttl_days == 0 || self.auth.refresh_token_ttl_days > 365 {
            return Err(fail(
                "auth.refresh_token_ttl_days",
                format!("{} is outside 1..=365", self.auth.refresh_token_ttl_days),
            ));
        }
        if let Some(bad) = self.auth.admin_emails.iter().find(|e| !e.contains('@')) {
            return Err(fail(
                "auth.admin_emails",
                format!("{bad:?} is not an email address"),
            ));
        }
        self.validate_live(&fail)?;
        self.map
            .validate()
            .map_err(|(key, message)| fail(key, message))?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(fail(
                "log.level",
                format!(
                    "{:?} is not a tracing filter (try `info` or `gateway=debug`)",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_live(&self, fail: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let live = &self.live;
        for (key, value, range) in [
            (
                "live.queue_capacity",
                live.queue_capacity as u64,
                1..=100_000,
            ),
            ("live.bus_capacity", live.bus_capacity as u64, 1..=1_000_000),
            (
                "live.ping_interval_secs",
                live.ping_interval_secs,
                1..=3_600,
            ),
            ("live.idle_timeout_secs", live.idle_timeout_secs, 1..=7_200),
        ] {
            if !range.contains(&value) {
                return Err(fail(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        let alerts = &self.alerts;
        for (key, value, range) in [
            (
                "alerts.battery_low_percent",
                alerts.battery_low_percent,
                1..=99,
            ),
            (
                "alerts.offline_after_secs",
                alerts.offline_after_secs,
                1..=604_800,
            ),
            (
                "alerts.geofence_dwell_secs",
                alerts.geofence_dwell_secs,
                0..=86_400,
            ),
            (
                "alerts.geofence_dwell_fixes",
                alerts.geofence_dwell_fixes,
                1..=1_000,
            ),
            (
                "alerts.geofence_margin_m",
                alerts.geofence_margin_m,
                0..=10_000,
            ),
            (
                "alerts.max_fix_age_secs",
                alerts.max_fix_age_secs,
                1..=604_800,
            ),
            (
                "alerts.webhook_retry_base_ms",
                alerts.webhook_retry_base_ms,
                1..=3_600_000,
            ),
        ] {
            if !range.contains(&value) {
                return Err(fail(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("pettracker-config-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pettracker.toml");
        std::fs::write(&path, file).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let result = Loader::new(Some(&path))
            .and_then(|l| l.env(|k| env.iter().find(|e| e.0 == k).map(|e| e.1.clone())))
            .and_then(Loader::load);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    fn rand_suffix() -> String {
        format!("{:?}-{}", std::thread::current().id(), std::process::id()).replace(['(', ')'], "")
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.http.addr.port(), 8080);
        assert_eq!(config.storage.retention_days, 365);
        assert!(config.database.url.is_none());
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_the_environment() {
        let config = load(
            "[http]\naddr = \"127.0.0.1:1\"\n",
            &[("PETTRACKER_HTTP_ADDR", "127.0.0.1:2")],
        )
        .unwrap();
        assert_eq!(config.http.addr.port(), 2);
        let config = Loader::new(None)
            .unwrap()
            .env(|k| (k == "PETTRACKER_HTTP_ADDR").then(|| "127.0.0.1:2".to_owned()))
            .unwrap()
            .flag("http.addr", Some("127.0.0.1:3".to_owned()), "--http-addr")
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(config.http.addr.port(), 3);
    }

    #[test]
    fn a_bad_address_names_the_key_and_the_variable() {
        let err = load("", &[("PETTRACKER_MQTT_ADDR", "not-an-address")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.addr"), "{err}");
        assert!(err.contains("PETTRACKER_MQTT_ADDR"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let err = load("[http]\nadress = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("adress"), "{err}");
    }

    #[test]
    fn a_non_numeric_pool_size_is_refused_with_its_value() {
        let err = load("", &[("PETTRACKER_DATABASE_POOL_SIZE", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.pool_size") && err.contains("many"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_database_url_is_refused_without_echoing_it() {
        let err = load(
            "",
            &[("DATABASE_URL", "postgres://u:hunter2@host:notaport/db")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_database_url_is_redacted_in_debug_output() {
        let config = load("", &[("DATABASE_URL", "postgres://u:hunter2@localhost/db")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_short_token_secret_is_refused_without_echoing_it() {
        let err = load("", &[("PETTRACKER_AUTH_TOKEN_SECRET", "hunter2-too-short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.token_secret"), "{err}");
        assert!(err.contains("32"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn admin_emails_are_a_comma_separated_list_in_the_environment() {
        let config = load(
            "",
            &[(
                "PETTRACKER_AUTH_ADMIN_EMAILS",
                " ada@example.com,,bob@example.com ",
            )],
        )
        .unwrap();
        assert_eq!(
            config.auth.admin_emails,
            ["ada@example.com", "bob@example.com"]
        );
        let config = load("[auth]\nadmin_emails = [\"ada@example.com\"]\n", &[]).unwrap();
        assert_eq!(config.auth.admin_emails, ["ada@example.com"]);
    }

    #[test]
    fn operations_guide_lists_every_setting_and_its_variable() {
        let doc = include_str!("../docs/operations.md");
        for (key, _, _) in KEYS {
            assert!(
                doc.contains(&format!("`{key}`")),
                "docs/operations.md misses {key}"
            );
            assert!(
                doc.contains(&env_name(key)),
                "docs/operations.md misses {}",
                env_name(key)
            );
        }
    }

    #[test]
    fn a_bad_live_or_alerts_setting_is_refused_naming_its_key() {
        for (name, value, key) in [
            ("PETTRACKER_LIVE_QUEUE_CAPACITY", "0", "live.queue_capacity"),
            (
                "PETTRACKER_ALERTS_BATTERY_LOW_PERCENT",
                "100",
                "alerts.battery_low_percent",
            ),
        ] {
            let err = Loader::new(None)
                .unwrap()
                .env(|k| (k == name).then(|| value.to_owned()))
                .unwrap()
                .load()
                .unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn every_documented_key_is_a_real_setting() {
        for (key, kind, _) in KEYS {
            let sample = match kind {
                Kind::Int => "3",
                Kind::Bool => "true",
                Kind::Secret if key.starts_with("auth.") => "0123456789abcdef0123456789abcdef",
                Kind::Secret => "postgres://localhost/x",
                Kind::List => "ada@example.com, bob@example.com",
                Kind::Str if key.ends_with("addr") => "127.0.0.1:9",
                Kind::Str if key.ends_with("tile_url") => "https://t.example.org/{z}/{x}/{y}.png",
                Kind::Str if key.ends_with("timescaledb") => "auto",
                Kind::Str if key.ends_with("format") => "json",
                Kind::Str if key.ends_with("_addr") => "127.0.0.1:9",
                Kind::Str if key.contains("tls_") || key.ends_with("_dir") => "/tmp/x",
                Kind::Str => "info",
            };
            let name = env_name(key);
            // The TLS listener's keys are only valid together.
            let tls = [
                ("PETTRACKER_MQTT_TLS_ADDR", "127.0.0.1:9"),
                ("PETTRACKER_MQTT_TLS_CERT", "/tmp/x"),
                ("PETTRACKER_MQTT_TLS_KEY", "/tmp/x"),
            ];
            let result = Loader::new(None)
                .unwrap()
                .env(|k| {
                    if k == name {
                        return Some(sample.to_owned());
                    }
                    let companion = tls.iter().find(|(env, _)| *env == k);
                    companion
                        .filter(|_| key.starts_with("mqtt.tls_"))
                        .map(|(_, v)| v.to_string())
                })
                .unwrap()
                .load();
            assert!(result.is_ok(), "{key}: {:?}", result.err());
        }
    }
}
