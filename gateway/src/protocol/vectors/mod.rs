//! Test vectors: sample payloads with the outcome the contract demands, shared by the unit tests,
//! the integration tests that publish them over real MQTT, and `docs/protocol.md`.
//!
//! They live in `vectors.json` beside this file so that firmware authors can use them without
//! reading Rust. Every outcome assumes the server clock reads [`TestVector::now`] and the
//! default [`ValidationLimits`]; a server under test must be given that clock, or the time-window
//! vectors will disagree.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::commands::decode_command_result;
use super::presence::{Presence, decode_online};
use super::status::decode_status;
use super::telemetry::decode_telemetry;
use super::topic::{DeviceTopic, TopicKind};
use super::validate::ValidationLimits;

const VECTORS_JSON: &str = include_str!("vectors.json");

/// One sample message and what the server must make of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestVector {
    /// Unique, kebab-case, stable: integration tests and the docs refer to vectors by name.
    pub name: String,
    pub description: String,
    /// Where to publish it, e.g. `trackers/vector-collar-1/telemetry`.
    pub topic: String,
    /// The exact bytes to publish.
    pub payload: Vec<u8>,
    /// How the vector file spells the payload: `Text` for JSON and plain text, `Hex` for CBOR.
    pub form: PayloadForm,
    /// For CBOR vectors, the payload in CBOR diagnostic notation (RFC 8949 §8), for humans.
    pub cbor_diagnostic: Option<String>,
    /// The server clock the expected outcome assumes.
    pub now: DateTime<Utc>,
    pub expect: Expectation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadForm {
    Text,
    Hex,
}

/// What the server does with a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// A telemetry message that decoded: one outcome per fix, in message order.
    Fixes(Vec<FixOutcome>),
    /// A status report, in the canonical JSON form of [`super::Status`].
    Status(serde_json::Value),
    Presence(Presence),
    /// A command result, in the canonical JSON form of [`super::CommandResult`].
    CommandResult(serde_json::Value),
    /// The whole message is dead-lettered with this reason.
    DeadLetter(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixOutcome {
    /// Stored; the canonical JSON form of the [`super::Fix`].
    Accepted(serde_json::Value),
    /// Dead-lettered on its own, with this reason; the batch's other fixes are unaffected.
    Rejected(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    now: DateTime<Utc>,
    vectors: Vec<VectorEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorEntry {
    name: String,
    description: String,
    topic: String,
    #[serde(default)]
    payload_text: Option<String>,
    #[serde(default)]
    payload_hex: Option<String>,
    #[serde(default)]
    cbor_diagnostic: Option<String>,
    expect: Expectation,
}

/// All test vectors, in file order.
pub fn test_vectors() -> Vec<TestVector> {
    // The file is compiled in and a unit test parses it, so failure here means a broken build
    // rather than bad input.
    try_test_vectors().expect("vectors.json is checked by the protocol unit tests")
}

/// All test vectors, or why `vectors.json` is unreadable.
pub fn try_test_vectors() -> Result<Vec<TestVector>, String> {
    let file: VectorFile =
        serde_json::from_str(VECTORS_JSON).map_err(|e| format!("vectors.json: {e}"))?;
    file.vectors
        .into_iter()
        .map(|entry| {
            let (payload, form) = match (entry.payload_text, entry.payload_hex) {
                (Some(text), None) => (text.into_bytes(), PayloadForm::Text),
                (None, Some(hex)) => (
                    decode_hex(&hex)
                        .ok_or_else(|| format!("{}: invalid payload_hex", entry.name))?,
                    PayloadForm::Hex,
                ),
                _ => {
                    return Err(format!(
                        "{}: needs exactly one of payload_text and payload_hex",
                        entry.name
                    ));
                }
            };
            Ok(TestVector {
                name: entry.name,
                description: entry.description,
                topic: entry.topic,
                payload,
                form,
                cbor_diagnostic: entry.cbor_diagnostic,
                now: file.now,
                expect: entry.expect,
            })
        })
        .collect()
}

/// Hex digits, optionally separated by whitespace for readability.
fn decode_hex(spaced: &str) -> Option<Vec<u8>> {
    let digits: String = spaced.split_ascii_whitespace().collect();
    hex::decode(digits).ok()
}

impl TestVector {
    /// The payload as the vector file spells it: text, or spaced hex for CBOR.
    pub fn payload_display(&self) -> String {
        match self.form {
            PayloadForm::Text => String::from_utf8_lossy(&self.payload).into_owned(),
            PayloadForm::Hex => self
                .payload
                .chunks(1)
                .map(hex::encode)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// What this library makes of the vector, at [`TestVector::now`] with default limits.
    pub fn outcome(&self) -> Result<Expectation, String> {
        let topic = DeviceTopic::parse(&self.topic).map_err(|e| e.to_string())?;
        let now = self.now;
        let limits = ValidationLimits::default();
        Ok(match topic.kind {
            TopicKind::Telemetry => match decode_telemetry(&self.payload) {
                Ok(fixes) => Expectation::Fixes(
                    fixes
                        .into_iter()
                        .map(|raw| match raw.validate(now, &limits) {
                            Ok(fix) => FixOutcome::Accepted(to_json(&fix)),
                            Err(rejection) => FixOutcome::Rejected(rejection.to_string()),
                        })
                        .collect(),
                ),
                Err(e) => Expectation::DeadLetter(e.to_string()),
            },
            TopicKind::Status => match decode_status(&self.payload) {
                Ok(raw) => match raw.validate(now, &limits) {
                    Ok(status) => Expectation::Status(to_json(&status)),
                    Err(rejection) => Expectation::DeadLetter(rejection.to_string()),
                },
                Err(e) => Expectation::DeadLetter(e.to_string()),
            },
            TopicKind::Online => match decode_online(&self.payload) {
                Ok(presence) => Expectation::Presence(presence),
                Err(e) => Expectation::DeadLetter(e.to_string()),
            },
            TopicKind::CommandResults => match decode_command_result(&self.payload) {
                Ok(result) => Expectation::CommandResult(to_json(&result)),
                Err(e) => Expectation::DeadLetter(e.to_string()),
            },
            TopicKind::Ack | TopicKind::Commands => {
                return Err(format!(
                    "{}: devices do not publish on {}",
                    self.name, topic.kind
                ));
            }
        })
    }

    /// Checks that this library produces the expected outcome; the error shows both sides.
    pub fn verify(&self) -> Result<(), String> {
        let actual = self.outcome()?;
        if actual == self.expect {
            return Ok(());
        }
        let show = |e: &Expectation| serde_json::to_string(e).unwrap_or_else(|e| e.to_string());
        Err(format!(
            "vector {}:\n  expected {}\n  actual   {}",
            self.name,
            show(&self.expect),
            show(&actual)
        ))
    }
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    // The canonical forms hold only strings, finite numbers and times, which always serialize.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests;
