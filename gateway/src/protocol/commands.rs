//! Commands to collars and the results they report back.

use serde::{Deserialize, Serialize};

use super::encode::encode;
use super::error::DecodeError;
use super::node::{self, Encoding, Location, Node, preview};
use super::values::{CommandId, CommandType};

/// Longest `reason` a command result may carry, in characters: enough for a sentence from the
/// firmware, too little to smuggle a crash dump into the database.
pub const MAX_REASON_CHARS: usize = 256;

/// How far the collar got with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandResultStatus {
    /// Received and about to be carried out.
    Accepted,
    Done,
    Failed,
}

impl CommandResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandResultStatus::Accepted => "accepted",
            CommandResultStatus::Done => "done",
            CommandResultStatus::Failed => "failed",
        }
    }
}

/// What a collar reports on `trackers/{id}/command-results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    #[serde(rename = "id")]
    pub command_id: CommandId,
    pub status: CommandResultStatus,
    /// Free text from the firmware, at most [`MAX_REASON_CHARS`] characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Decodes a command result (a JSON object or CBOR map).
pub fn decode_command_result(payload: &[u8]) -> Result<CommandResult, DecodeError> {
    let (_, root) = node::parse(payload)?;
    let Node::Map(entries) = root else {
        return Err(DecodeError::WrongShape {
            expected: "a command result object",
            found: root.describe(),
        });
    };
    let at = Location::TOP;
    let [id, status, reason] = node::pick(&entries, ["id", "status", "reason"], at)?;
    let id = node::text(node::required(id, "id", at)?, "id", at)?;
    let command_id = CommandId::parse(id).map_err(|problem| DecodeError::InvalidValue {
        path: "id".into(),
        problem,
    })?;
    let status_node = node::required(status, "status", at)?;
    let status = match node::text(status_node, "status", at)? {
        "accepted" => CommandResultStatus::Accepted,
        "done" => CommandResultStatus::Done,
        "failed" => CommandResultStatus::Failed,
        other => {
            return Err(DecodeError::WrongType {
                path: "status".into(),
                expected: r#"one of "accepted", "done", "failed""#,
                found: format!("the string {}", preview(other)),
            });
        }
    };
    let reason = reason
        .map(|n| node::text(n, "reason", at))
        .transpose()?
        .map(|r| {
            let len = r.chars().count();
            if len > MAX_REASON_CHARS {
                Err(DecodeError::InvalidValue {
                    path: "reason".into(),
                    problem: super::values::ValueError::TooLong {
                        len,
                        max: MAX_REASON_CHARS,
                    },
                })
            } else {
                Ok(r.to_owned())
            }
        })
        .transpose()?;
    Ok(CommandResult {
        command_id,
        status,
        reason,
    })
}

/// Encodes a command result the way a collar would publish it (for the simulator and tests).
pub fn encode_command_result(result: &CommandResult, encoding: Encoding) -> Vec<u8> {
    encode_command_result_with(result, &[], encoding)
}

/// Encodes a command result with fields of the collar's own after the contract's (for example
/// the simulator's firmware-download `progress`). The server ignores unknown fields, so newer
/// firmware may add them; an extra named like a contract field is left out, since a field sent
/// twice is an error.
pub fn encode_command_result_with(
    result: &CommandResult,
    extra: &[(&str, serde_json::Value)],
    encoding: Encoding,
) -> Vec<u8> {
    let extra: Vec<_> = extra
        .iter()
        .filter(|(name, _)| !["id", "status", "reason"].contains(name))
        .collect();
    encode(encoding, |w| {
        w.map(2 + usize::from(result.reason.is_some()) + extra.len());
        w.key("id");
        w.text(result.command_id.as_str());
        w.key("status");
        w.text(result.status.as_str());
        if let Some(reason) = &result.reason {
            w.key("reason");
            w.text(reason);
        }
        for (name, value) in extra {
            w.key(name);
            w.value(value);
        }
    })
}

/// A command for `trackers/{id}/commands`. `params` is always a JSON object; what goes in it is
/// up to each command type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    pub id: CommandId,
    #[serde(rename = "type")]
    pub kind: CommandType,
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// The downlink payload for a command: compact JSON, `{"id":…,"type":…,"params":{…}}`.
pub fn encode_command(command: &Command) -> Vec<u8> {
    // Built as a `Value` because its `Display` cannot fail, unlike `serde_json::to_vec`.
    serde_json::json!({
        "id": command.id.as_str(),
        "type": command.kind.as_str(),
        "params": command.params,
    })
    .to_string()
    .into_bytes()
}

/// Decodes a command as a collar receives it (for the simulator and tests). `params` may be
/// absent, meaning no parameters.
pub fn decode_command(payload: &[u8]) -> Result<Command, DecodeError> {
    node::check_payload_size(payload)?;
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::MalformedJson(e.to_string()))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(DecodeError::WrongShape {
            expected: "a command object",
            found: "another JSON value".into(),
        });
    };
    let text = |map: &mut serde_json::Map<String, serde_json::Value>, field: &str| match map
        .remove(field)
    {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(DecodeError::WrongType {
            path: field.into(),
            expected: "a string",
            found: preview(&other.to_string()),
        }),
        None => Err(DecodeError::MissingField { path: field.into() }),
    };
    let id = CommandId::try_from(text(&mut map, "id")?).map_err(|problem| {
        DecodeError::InvalidValue {
            path: "id".into(),
            problem,
        }
    })?;
    let kind = CommandType::try_from(text(&mut map, "type")?).map_err(|problem| {
        DecodeError::InvalidValue {
            path: "type".into(),
            problem,
        }
    })?;
    let params = match map.remove("params") {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(params)) => params,
        Some(other) => {
            return Err(DecodeError::WrongType {
                path: "params".into(),
                expected: "an object",
                found: preview(&other.to_string()),
            });
        }
    };
    Ok(Command { id, kind, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(payload: &str) -> Result<CommandResult, String> {
        decode_command_result(payload.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_done_result_decodes() {
        let r = result(r#"{"id":"cmd-42","status":"done"}"#).unwrap();
        assert_eq!(r.command_id.as_str(), "cmd-42");
        assert_eq!(r.status, CommandResultStatus::Done);
        assert_eq!(r.reason, None);
    }

    #[test]
    fn a_failed_result_carries_its_reason() {
        let r = result(r#"{"id":"cmd-42","status":"failed","reason":"buzzer busy"}"#).unwrap();
        assert_eq!(r.status, CommandResultStatus::Failed);
        assert_eq!(r.reason.as_deref(), Some("buzzer busy"));
    }

    #[test]
    fn an_unknown_status_is_a_decode_error() {
        assert_eq!(
            result(r#"{"id":"cmd-42","status":"exploded"}"#).unwrap_err(),
            r#"status: expected one of "accepted", "done", "failed", found the string "exploded""#
        );
    }

    #[test]
    fn a_result_without_an_id_is_a_decode_error() {
        assert_eq!(
            result(r#"{"status":"done"}"#).unwrap_err(),
            "id: required field is missing"
        );
    }

    #[test]
    fn a_command_id_longer_than_64_characters_is_a_decode_error() {
        let payload = format!(r#"{{"id":"{}","status":"done"}}"#, "x".repeat(65));
        assert_eq!(
            result(&payload).unwrap_err(),
            "id: must be at most 64 characters, found 65"
        );
    }

    #[test]
    fn a_reason_longer_than_256_characters_is_a_decode_error() {
        let payload = format!(
            r#"{{"id":"c","status":"failed","reason":"{}"}}"#,
            "x".repeat(257)
        );
        assert_eq!(
            result(&payload).unwrap_err(),
            "reason: must be at most 256 characters, found 257"
        );
    }

    #[test]
    fn command_results_round_trip_in_both_encodings() {
        let r = result(r#"{"id":"cmd-42","status":"failed","reason":"low battery"}"#).unwrap();
        for encoding in [Encoding::Json, Encoding::Cbor] {
            assert_eq!(
                decode_command_result(&encode_command_result(&r, encoding)).unwrap(),
                r
            );
        }
    }

    #[test]
    fn extra_fields_are_written_after_the_contract_and_ignored_by_the_decoder() {
        let r = result(r#"{"id":"fw-1","status":"accepted","reason":"downloading 25%"}"#).unwrap();
        let extra = [
            ("progress", serde_json::json!(25)),
            ("status", serde_json::json!("done")),
        ];
        assert_eq!(
            String::from_utf8(encode_command_result_with(&r, &extra, Encoding::Json)).unwrap(),
            r#"{"id":"fw-1","status":"accepted","reason":"downloading 25%","progress":25}"#
        );
        for encoding in [Encoding::Json, Encoding::Cbor] {
            assert_eq!(
                decode_command_result(&encode_command_result_with(&r, &extra, encoding)).unwrap(),
                r
            );
        }
    }

    fn buzzer() -> Command {
        let serde_json::Value::Object(params) = serde_json::json!({"seconds": 3}) else {
            unreachable!()
        };
        Command {
            id: CommandId::parse("cmd-42").unwrap(),
            kind: CommandType::parse("buzzer").unwrap(),
            params,
        }
    }

    #[test]
    fn a_command_encodes_as_compact_json() {
        assert_eq!(
            String::from_utf8(encode_command(&buzzer())).unwrap(),
            r#"{"id":"cmd-42","params":{"seconds":3},"type":"buzzer"}"#
        );
    }

    #[test]
    fn an_encoded_command_decodes_to_the_same_command() {
        assert_eq!(
            decode_command(&encode_command(&buzzer())).unwrap(),
            buzzer()
        );
    }

    #[test]
    fn a_command_without_params_has_empty_params() {
        let c = decode_command(br#"{"id":"c1","type":"locate"}"#).unwrap();
        assert!(c.params.is_empty());
    }
}
