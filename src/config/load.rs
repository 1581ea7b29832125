//! Loading: the file, then the environment, then flags, merged as one TOML table, deserialized and validated, with the origin of every value kept for errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Config;
use super::keys::{Kind, keys, kind};

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

/// Builds the configuration from its layers.
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
            for key in keys() {
                loader
                    .origins
                    .insert(key.name.clone(), format!("config file {}", path.display()));
            }
        }
        Ok(loader)
    }

    /// Applies `PETTRACKER_*` variables, and `DATABASE_URL` which most PostgreSQL tools already use.
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if let Some(url) = lookup("DATABASE_URL").filter(|u| !u.is_empty()) {
            self.set("database.url", &url, "environment variable DATABASE_URL")?;
        }
        for key in keys() {
            let name = key.env();
            if let Some(value) = lookup(&name) {
                self.set(&key.name, &value, &format!("environment variable {name}"))?;
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
        let kind = kind(key).unwrap_or(Kind::Str);
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
            Kind::Float => toml::Value::Float(
                raw.trim()
                    .parse()
                    .map_err(|_| invalid(format!("{raw:?} is not a number")))?,
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
        // Settings of the whole process (`role`) sit at the top of the file, outside sections.
        let (sections, field) = match key.rsplit_once('.') {
            Some((sections, field)) => (Some(sections), field),
            None if super::keys::kind(key).is_some() => (None, key),
            None => return Err(invalid("not a known setting".to_owned())),
        };
        let mut table = &mut self.table;
        for section in sections.into_iter().flat_map(|s| s.split('.')) {
            let entry = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(invalid(format!("`{section}` must be a table"))),
            };
        }
        table.insert(field.to_owned(), value);
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
                let secret = kind(&key) == Some(Kind::Secret);
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
}
