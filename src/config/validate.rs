//! Validation of a loaded configuration: ranges and combinations serde cannot check, each error naming its key.

use std::ops::RangeInclusive;

use super::{Config, ConfigError};

/// The smallest accepted `auth.token_secret`: HS256 keys shorter than the hash output are weak.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

/// No upper bound: a range ending here reads "must be at least ...".
const UNBOUNDED: u64 = u64::MAX;

/// A numeric setting's key, value, accepted range, and why the bound is there when that is not
/// obvious (it follows the error message).
type Bound = (&'static str, u64, RangeInclusive<u64>, &'static str);

impl Config {
    pub(super) fn validate(&self, origin_of: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            origin: origin_of(key),
            message,
        };
        for (key, value, range, why) in self.bounds() {
            if !range.contains(&value) {
                let message = match *range.end() {
                    UNBOUNDED => format!("must be at least {}", range.start()),
                    end => format!("{value} is outside {}..={end}{why}", range.start()),
                };
                return Err(fail(key, message));
            }
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
        self.validate_external_broker(&fail)?;
        if let Some(url) = &self.database.url {
            gateway::storage::describe_url(url).map_err(|e| fail("database.url", e.to_string()))?;
        }
        // Keys (HMAC, the broker's Bearer token) shorter than a hash output are guessable.
        for (key, secret) in [
            ("auth.token_secret", &self.auth.token_secret),
            ("broker_auth.secret", &self.broker_auth.secret),
        ] {
            let len = secret.as_ref().map_or(MIN_TOKEN_SECRET_BYTES, |s| {
                secrecy::ExposeSecret::expose_secret(s).len()
            });
            if len < MIN_TOKEN_SECRET_BYTES {
                return Err(fail(
                    key,
                    format!(
                        "is {len} bytes; it must be at least {MIN_TOKEN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
                    ),
                ));
            }
        }
        if gateway::protocol::TrackerId::parse(&self.broker_auth.service_username).is_ok() {
            return Err(fail(
                "broker_auth.service_username",
                "is a valid tracker id, so a collar could take it; use a name with a character \
                 tracker ids cannot hold, such as '.' (default pettracker.server)"
                    .to_owned(),
            ));
        }
        if let Err(message) = gateway::peer::TrustedProxies::parse(&self.http.trusted_proxies) {
            return Err(fail("http.trusted_proxies", message));
        }
        if let Some(bad) = self.auth.admin_emails.iter().find(|e| !e.contains('@')) {
            return Err(fail(
                "auth.admin_emails",
                format!("{bad:?} is not an email address"),
            ));
        }
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

    /// The external broker's settings, and the roles that need one.
    fn validate_external_broker(
        &self,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let e = &self.external_broker;
        let Some(url) = &e.url else {
            if self.role == super::Role::Api {
                return Err(fail(
                    "role",
                    "an `api` instance publishes commands through the external broker: set \
                     external_broker.url (--external-broker)"
                        .to_owned(),
                ));
            }
            return Ok(());
        };
        let url = gateway::external::BrokerUrl::parse(url)
            .map_err(|message| fail("external_broker.url", message))?;
        if url.tls && e.ca_file.is_none() {
            return Err(fail(
                "external_broker.ca_file",
                "mqtts:// needs the CA the broker's certificate chains to (for a public CA, the \
                 system's bundle, e.g. /etc/ssl/certs/ca-certificates.crt)"
                    .to_owned(),
            ));
        }
        // One topic level of a shared subscription; MQTT forbids these in it.
        if e.group.is_empty() || e.group.contains(['/', '+', '#']) {
            return Err(fail(
                "external_broker.group",
                format!("{:?} must be a non-empty name without /, + or #", e.group),
            ));
        }
        if e.client_id.len() > 128 || e.client_id.chars().any(|c| c.is_control()) {
            return Err(fail(
                "external_broker.client_id",
                "must be at most 128 characters, none of them control characters".to_owned(),
            ));
        }
        if e.password.is_some() && e.username.is_none() {
            return Err(fail(
                "external_broker.password",
                "a password needs external_broker.username".to_owned(),
            ));
        }
        Ok(())
    }

    /// Every numeric setting with a bound.
    #[rustfmt::skip]
    fn bounds(&self) -> Vec<Bound> {
        let (http, commands, ingest, live, alerts) =
            (&self.http, &self.commands, &self.ingest, &self.live, &self.alerts);
        vec![
            ("database.api_pool_size", self.database.api_pool_size as u64, 1..=1000, ""),
            ("database.ingest_pool_size", self.database.ingest_pool_size as u64,
             (self.ingest.writers as u64).saturating_add(1)..=1000,
             ": each of the ingest.writers takes one, and the spool's replay and device authentication need one more"),
            ("storage.retention_days", u64::from(self.storage.retention_days), 1..=UNBOUNDED, ""),
            ("storage.retention_interval_secs", self.storage.retention_interval_secs, 1..=86_400, ""),
            ("storage.days_settle_interval_secs", self.storage.days_settle_interval_secs, 1..=3_600, ""),
            ("http.rate_limit_per_second", u64::from(http.rate_limit_per_second), 1..=UNBOUNDED, ""),
            ("http.rate_limit_burst", u64::from(http.rate_limit_burst), 1..=UNBOUNDED, ""),
            ("commands.resend_after_ms", commands.resend_after_ms, 1..=UNBOUNDED, ""),
            ("commands.max_sends", u64::from(commands.max_sends), 1..=UNBOUNDED, ""),
            ("commands.default_ttl_secs", u64::from(commands.default_ttl_secs), 1..=UNBOUNDED, ""),
            ("ingest.batch_size", ingest.batch_size as u64, 1..=UNBOUNDED, ""),
            ("ingest.queue_capacity", ingest.queue_capacity as u64, 1..=UNBOUNDED, ""),
            ("ingest.batch_timeout_ms", ingest.batch_timeout_ms, 1..=60_000,
             ": a publish may wait this long for its batch to close"),
            ("ingest.batch_linger_ms", ingest.batch_linger_ms, 0..=1_000,
             ": every publish that finds its writer free waits this long for its acknowledgement"),
            ("ingest.writers", ingest.writers as u64, 1..=UNBOUNDED, ""),
            ("mqtt.max_connections", self.mqtt.max_connections as u64, 1..=UNBOUNDED, ""),
            ("mqtt.handshake_timeout_ms", self.mqtt.handshake_timeout_ms, 1..=600_000,
             ": a socket holds a connection slot until its CONNECT is complete"),
            ("ingest.accept_timeout_ms", ingest.accept_timeout_ms, 1..=30_000,
             ": a publish hook blocks its connection, so it must stay below the collars' keep-alive"),
            ("auth.access_token_ttl_secs", self.auth.access_token_ttl_secs, 1..=86_400,
             ": access tokens cannot be revoked, so they must stay short-lived"),
            ("auth.refresh_token_ttl_days", u64::from(self.auth.refresh_token_ttl_days), 1..=365, ""),
            ("auth.hash_concurrency", self.auth.hash_concurrency as u64, 0..=1024, ""),
            ("auth.hash_wait_ms", self.auth.hash_wait_ms, 1..=60_000, ""),
            ("auth.address_attempts_per_minute", u64::from(self.auth.address_attempts_per_minute), 1..=UNBOUNDED, ""),
            ("auth.address_attempts_burst", u64::from(self.auth.address_attempts_burst), 1..=UNBOUNDED, ""),
            ("live.queue_capacity", live.queue_capacity as u64, 1..=100_000, ""),
            ("live.bus_capacity", live.bus_capacity as u64, 1..=1_000_000, ""),
            ("live.ping_interval_secs", live.ping_interval_secs, 1..=3_600, ""),
            ("live.idle_timeout_secs", live.idle_timeout_secs, 1..=7_200, ""),
            ("alerts.battery_low_percent", alerts.battery_low_percent, 1..=99, ""),
            ("alerts.offline_after_secs", alerts.offline_after_secs, 1..=604_800, ""),
            ("alerts.geofence_dwell_secs", alerts.geofence_dwell_secs, 0..=86_400, ""),
            ("alerts.geofence_dwell_fixes", alerts.geofence_dwell_fixes, 1..=1_000, ""),
            ("alerts.geofence_margin_m", alerts.geofence_margin_m, 0..=10_000, ""),
            ("alerts.max_fix_age_secs", alerts.max_fix_age_secs, 1..=604_800, ""),
            ("alerts.webhook_retry_base_ms", alerts.webhook_retry_base_ms, 1..=3_600_000, ""),
            ("alerts.queue_capacity", alerts.queue_capacity as u64, 1..=10_000_000, ""),
            ("alerts.webhook_timeout_ms", alerts.webhook_timeout_ms, 1..=60_000, ""),
            ("alerts.webhook_concurrency", alerts.webhook_concurrency as u64, 1..=1_000, ""),
            ("external_broker.keep_alive_secs", self.external_broker.keep_alive_secs, 1..=3_600, ""),
        ]
    }
}
