//! The sections of the configuration: one struct per `[section]` of the file, its defaults, and what each field is for.
//!
//! The structs are the single source of the settings: the table of keys and environment variables
//! ([`super::keys`]) is derived from them by serializing the defaults. They serialize only for that
//! reason; secrets serialize as a fixed marker, never their value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gateway::storage::TimescalePreference;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::keys::serialize_secret;

/// The whole configuration of a pettracker process.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which parts this process runs: `all` (one process, the default), `ingest` or `api`
    /// (scale-out behind an external broker; docs/operations.md).
    pub role: Role,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    /// An MQTT broker (cluster) the collars connect to instead of the embedded one.
    pub external_broker: ExternalBrokerConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub ingest: IngestSettings,
    pub auth: AuthConfig,
    pub broker_auth: BrokerAuthConfig,
    pub commands: CommandsConfig,
    pub log: LogConfig,
    pub live: LiveSettings,
    pub alerts: AlertSettings,
    /// The web app's basemap.
    pub map: super::MapSettings,
}

/// Alert rules (see docs/live.md, *Alerts*): the `[alerts]` section, which the alert engine takes as it is.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
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
    /// Committed fixes, status reports and connections waiting for the engine. A batch that
    /// does not fit is not lost: the engine reads its trackers' news back from the database.
    pub queue_capacity: usize,
    /// How long one webhook delivery attempt may take; a claimed delivery is leased for twice this.
    pub webhook_timeout_ms: u64,
    /// Webhook deliveries one process sends at once.
    pub webhook_concurrency: usize,
    /// Lets webhooks point at loopback addresses (127.0.0.0/8, ::1, localhost), for development
    /// and tests. Off: users could otherwise make the server call services only it can reach.
    /// Private, link-local and other internal addresses are refused either way.
    pub webhook_allow_loopback: bool,
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
            queue_capacity: 50_000,
            webhook_timeout_ms: 10_000,
            webhook_concurrency: 16,
            webhook_allow_loopback: false,
        }
    }
}

/// The rules in the units the alert engine works in. Validation keeps every field in range; the
/// clamps only make the conversions total.
impl AlertSettings {
    pub fn battery_low(&self) -> i16 {
        self.battery_low_percent.min(99) as i16
    }

    pub fn offline_after(&self) -> Duration {
        Duration::from_secs(self.offline_after_secs)
    }

    pub fn dwell(&self) -> Duration {
        Duration::from_secs(self.geofence_dwell_secs)
    }

    pub fn dwell_fixes(&self) -> u32 {
        self.geofence_dwell_fixes.min(1_000) as u32
    }

    pub fn margin_m(&self) -> f64 {
        self.geofence_margin_m as f64
    }

    pub fn max_fix_age(&self) -> Duration {
        Duration::from_secs(self.max_fix_age_secs)
    }

    pub fn webhook_retry_base(&self) -> Duration {
        Duration::from_millis(self.webhook_retry_base_ms)
    }
}

/// The WebSocket live feed (`GET /api/v1/live`); see docs/live.md.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the REST API, WebSocket feed, `/metrics` and health checks listen.
    pub addr: SocketAddr,
    /// Requests per second each credential (a user's access tokens together, or one API key)
    /// may make on average; beyond it the API answers 429 with `Retry-After`.
    pub rate_limit_per_second: u32,
    /// Requests a credential may make at once after being idle: a page load fires several.
    pub rate_limit_burst: u32,
    /// Reverse proxies (addresses or CIDR blocks, such as the Ingress controller's pod network)
    /// whose `X-Forwarded-For` names the client for the per-address sign-in limits. Empty: the
    /// header is ignored, since any client could write it.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate_limit_per_second: 50,
            rate_limit_burst: 200,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// From TCP accept to a complete CONNECT; sockets that take longer are closed, so silent
    /// sockets cannot hold the connection slots and file descriptors collars need.
    pub handshake_timeout_ms: u64,
    /// Sockets one address may have before their CONNECT is complete; 0: a quarter of
    /// `max_connections` (a whole fleet behind one carrier NAT may reconnect at once).
    pub max_handshakes_per_ip: usize,
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
            handshake_timeout_ms: 10_000,
            max_handshakes_per_ip: 0,
        }
    }
}

/// Which parts of the server a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process: broker (or the external broker's ingest session), ingest,
    /// HTTP API, live feed, alerts, commands and retention.
    #[default]
    All,
    /// The broker side and the pipeline, with HTTP only for `/healthz`, `/readyz` and `/metrics`.
    Ingest,
    /// HTTP API, live feed, alerts, commands and retention; no broker and no pipeline (commands
    /// go out through the external broker).
    Api,
}

impl Role {
    /// Whether this process stores what collars send.
    pub fn ingests(self) -> bool {
        self != Role::Api
    }

    /// Whether this process serves owners (the API, the live feed) and runs the jobs behind them.
    pub fn serves_api(self) -> bool {
        self != Role::Ingest
    }
}

/// The external MQTT broker (`[external_broker]`); see docs/operations.md, *Scale-out*.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalBrokerConfig {
    /// `mqtt://host:port` or `mqtts://host:port`. Set: the embedded broker does not run, ingest
    /// takes the collars' messages from this broker's shared subscriptions and acks and
    /// commands are published there. Unset: the embedded broker.
    pub url: Option<String>,
    /// This instance's MQTT client id, stable across its restarts (a StatefulSet pod's name):
    /// its persistent session keeps what it had not acknowledged when it died. Empty:
    /// `pettracker-` and the host name. Two running instances must never share one.
    pub client_id: String,
    /// The shared-subscription group of the ingest instances (`$share/{group}/...`).
    pub group: String,
    /// pettracker's user at the broker (it must be allowed to subscribe to the collars' uplink
    /// topics and publish on their downlink topics).
    pub username: Option<String>,
    #[serde(serialize_with = "serialize_secret")]
    pub password: Option<SecretString>,
    /// PEM certificates the broker's certificate must chain to; required for `mqtts://` (the
    /// system's bundle, e.g. /etc/ssl/certs/ca-certificates.crt, for a public CA).
    pub ca_file: Option<PathBuf>,
    /// MQTT keep-alive of pettracker's connections to the broker.
    pub keep_alive_secs: u64,
    /// Take collars' connects and disconnects from the broker's client events
    /// (`$SYS/brokers/+/clients/+/connected|disconnected`, EMQX and rmqtt), beside their own
    /// `online` messages and the silence timeout. A broker that has no such events (Mosquitto)
    /// or refuses the subscription costs nothing but a warning.
    pub presence_events: bool,
}

impl Default for ExternalBrokerConfig {
    fn default() -> Self {
        Self {
            url: None,
            client_id: String::new(),
            group: "pettracker".to_owned(),
            username: None,
            password: None,
            ca_file: None,
            keep_alive_secs: 60,
            presence_events: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Rows per database transaction at most.
    pub batch_size: usize,
    /// While its writer is busy, a batch closes (and queues) this long after its first row arrived;
    /// a free writer takes it at once. Longer than a write under load: closing early only queues
    /// small batches that each pay a statement and a COMMIT.
    pub batch_timeout_ms: u64,
    /// A free writer takes a batch once its first row is this old (0: at once). At a fleet's
    /// rates each message would otherwise pay a transaction of its own; under load a write
    /// takes longer than this and nothing waits.
    pub batch_linger_ms: u64,
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
    /// database's cores gains nothing; each takes one connection from `database.ingest_pool_size`.
    pub writers: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            batch_size: 4000,
            batch_timeout_ms: 1000,
            batch_linger_ms: gateway::ingest::DEFAULT_LINGER_MS,
            queue_capacity: 10_000,
            accept_timeout_ms: 5_000,
            spool_dir: PathBuf::from("data/spool"),
            silence_timeout_secs: 600,
            max_future_skew_secs: 300,
            writers: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. Unset: pettracker runs a private cluster under `data_dir`.
    #[serde(serialize_with = "serialize_secret")]
    pub url: Option<SecretString>,
    /// Where the private cluster lives when `url` is unset.
    pub data_dir: PathBuf,
    /// Connections of the HTTP API and the background jobs (alerts, webhooks, commands,
    /// retention). An export holds one for its whole download.
    pub api_pool_size: usize,
    /// Connections of ingest alone (its writers, the spool's replay, device authentication), so
    /// that no amount of API traffic delays a collar's acknowledgement. At least
    /// `ingest.writers` + 1.
    pub ingest_pool_size: usize,
    /// `auto` uses TimescaleDB when the server has it; `required` refuses to start without it; `off` never uses it.
    #[serde(serialize_with = "serialize_timescale")]
    pub timescaledb: TimescalePreference,
}

/// `auto`, `required` or `off`, as the file spells it.
fn serialize_timescale<S: serde::Serializer>(
    preference: &TimescalePreference,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{preference:?}").to_lowercase())
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            data_dir: PathBuf::from("data/postgres"),
            api_pool_size: 16,
            ingest_pool_size: 8,
            timescaledb: TimescalePreference::Auto,
        }
    }
}

/// How long each kind of history is kept (docs/storage.md, *Retention*). Every window is in days
/// of age; 0 keeps that kind forever (except fixes, which always have a window).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Fixes older than this are deleted, and older fixes arriving late are rejected.
    pub retention_days: u32,
    /// The last fix of each 5-minute interval (`positions_5m`, long ranges of bucketed history);
    /// may outlive the fixes themselves.
    pub positions_5m_retention_days: u32,
    /// Dead letters, by when they arrived.
    pub dead_letter_retention_days: u32,
    /// Finished commands with their event history, by when they finished; open ones stay.
    pub command_retention_days: u32,
    /// Alerts, by when they were raised (their webhook deliveries go with them).
    pub alert_retention_days: u32,
    /// Finished webhook deliveries (delivered or failed), by when they were created.
    pub webhook_delivery_retention_days: u32,
    /// How often the retention job runs (it also runs at start).
    pub retention_interval_secs: u64,
    /// How often the kept daily summaries are settled (plain PostgreSQL: src/days.rs), and how
    /// far behind the clock the pass stops: a fix arriving later than that after its device
    /// time leaves a note for the next pass. Readers stay exact in between.
    pub days_settle_interval_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
            positions_5m_retention_days: 365,
            dead_letter_retention_days: 30,
            command_retention_days: 90,
            alert_retention_days: 365,
            webhook_delivery_retention_days: 30,
            retention_interval_secs: 3_600,
            days_settle_interval_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC-SHA256 key signing access tokens, at least 32 bytes. Unset: a random key per start,
    /// so every access token dies with the process (refresh tokens, stored in the database, do not).
    #[serde(serialize_with = "serialize_secret")]
    pub token_secret: Option<SecretString>,
    /// Lifetime of an access token. Short, because an access token cannot be revoked.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token; each use replaces it with a new one.
    pub refresh_token_ttl_days: u32,
    /// Users registering with one of these emails (compared case-insensitively) become admins.
    pub admin_emails: Vec<String>,
    /// Password hashes (argon2, 19 MiB each) computed at once; 0: one per core. Bounds the
    /// memory and blocking threads a flood of registrations or logins can take.
    pub hash_concurrency: usize,
    /// How long a registration or login waits for a free hashing slot before it is answered 503.
    pub hash_wait_ms: u64,
    /// Registrations and logins one client address (an IPv6 /64) may make per minute, whatever
    /// the email; beyond it they are answered 429. Behind a reverse proxy every client shares
    /// the proxy's address: raise it there.
    pub address_attempts_per_minute: u32,
    /// Registrations and logins one address may make at once after being idle.
    pub address_attempts_burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_secret: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_days: 30,
            admin_emails: Vec::new(),
            hash_concurrency: 0,
            hash_wait_ms: 2_000,
            address_attempts_per_minute: 30,
            address_attempts_burst: 30,
        }
    }
}

/// The endpoints an external broker calls to authenticate and authorize its clients (EMQX's
/// HTTP authenticator and authorizer, rmqtt's auth-http plugin; broker-config/).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerAuthConfig {
    /// Shared between the broker and pettracker; the broker sends it as `Authorization: Bearer`.
    /// Unset: the endpoints do not exist (404), as a server with the embedded broker needs none.
    #[serde(serialize_with = "serialize_secret")]
    pub secret: Option<SecretString>,
    /// The MQTT username of pettracker's own clients on the broker (ingest and API
    /// instances). Not a valid tracker id, so no collar can ever be mistaken for the service.
    pub service_username: String,
    /// Their password. Unset: no client signs in as the service.
    #[serde(serialize_with = "serialize_secret")]
    pub service_password: Option<SecretString>,
}

impl Default for BrokerAuthConfig {
    fn default() -> Self {
        Self {
            secret: None,
            service_username: "pettracker.server".to_owned(),
            service_password: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
