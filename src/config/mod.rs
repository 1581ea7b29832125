//! Configuration: a TOML file, then `PETTRACKER_*` environment variables, then command-line flags, validated once at start.
//!
//! Every setting has one dotted key (`http.addr`) and an environment variable derived from it
//! (`PETTRACKER_HTTP_ADDR`). The sections ([`sections`]) are the only list of settings: the table
//! of keys ([`keys`]) is derived from them. Errors always name the key, where its value came from,
//! and the value (never for secrets).

mod keys;
mod load;
mod map;
mod parts;
mod sections;
mod validate;

pub use keys::{Key, Kind, env_name, keys};
pub use load::{ConfigError, Loader};
pub use map::MapSettings;
pub use sections::{
    AlertSettings, AuthConfig, BrokerAuthConfig, CommandsConfig, Config, DatabaseConfig,
    ExternalBrokerConfig, HttpConfig, IngestSettings, LiveSettings, LogConfig, LogFormat,
    MqttConfig, Role, StorageConfig,
};
pub use validate::MIN_TOKEN_SECRET_BYTES;

#[cfg(test)]
mod tests;
