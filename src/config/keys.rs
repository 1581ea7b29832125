//! The table of settings, derived from the sections: every leaf of the serialized default configuration is a dotted key with its kind and its environment variable.
//!
//! Nothing here lists settings by hand: a field added to a section is a key at once, settable
//! from the file, the environment (`PETTRACKER_` + the key in capitals, dots as underscores) and
//! flags. A test holds docs/operations.md to this table.

use std::sync::OnceLock;

use secrecy::SecretString;
use serde::Serializer;
use serde_json::Value;

use super::Config;

/// How a setting written as text (environment variable, flag) becomes the TOML value the file
/// would hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Taken as it is. Settings that are unset by default (addresses, paths) are text too: their
    /// default says nothing of their type.
    Str,
    Int,
    Float,
    Bool,
    /// Text, which errors never repeat.
    Secret,
    /// Comma-separated in the environment and flags, a TOML array in the file.
    List,
}

/// One setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Dotted, as in the file: `http.addr`.
    pub name: String,
    pub kind: Kind,
}

impl Key {
    /// Its environment variable.
    pub fn env(&self) -> String {
        env_name(&self.name)
    }
}

/// What a secret serializes as, set or not: the table marks its key without seeing its value.
const SECRET: &str = "<secret>";

/// Serializes an optional secret as [`SECRET`], whatever it holds.
pub(super) fn serialize_secret<S: Serializer>(
    _: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(SECRET)
}

/// Every setting, from the serialized defaults.
pub fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        // Plain data always serializes into a JSON value; an empty table would fail every
        // config test at once.
        if let Ok(defaults) = serde_json::to_value(Config::default()) {
            walk("", &defaults, &mut keys);
        }
        keys
    })
}

/// The kind of a setting; `None` for a key that is not one.
pub fn kind(key: &str) -> Option<Kind> {
    keys().iter().find(|k| k.name == key).map(|k| k.kind)
}

/// The environment variable for a key: `http.addr` -> `PETTRACKER_HTTP_ADDR`.
pub fn env_name(key: &str) -> String {
    format!("PETTRACKER_{}", key.replace('.', "_").to_uppercase())
}

fn walk(prefix: &str, value: &Value, out: &mut Vec<Key>) {
    match value {
        Value::Object(fields) => {
            for (name, value) in fields {
                let key = match prefix {
                    "" => name.clone(),
                    _ => format!("{prefix}.{name}"),
                };
                walk(&key, value, out);
            }
        }
        leaf => out.push(Key {
            name: prefix.to_owned(),
            kind: kind_of(leaf),
        }),
    }
}

fn kind_of(default: &Value) -> Kind {
    match default {
        Value::String(s) if s == SECRET => Kind::Secret,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_f64() => Kind::Float,
        Value::Number(_) => Kind::Int,
        Value::Array(_) => Kind::List,
        Value::String(_) | Value::Null | Value::Object(_) => Kind::Str,
    }
}
