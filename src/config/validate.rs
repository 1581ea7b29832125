//! Validation of a loaded configuration: ranges and combinations serde cannot check, each error naming its key.

use super::{Config, ConfigError};

/// The smallest accepted `auth.token_secret`: HS256 keys shorter than the hash output are weak.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

impl Config {
    pub(super) fn validate(&self, origin_of: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
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
