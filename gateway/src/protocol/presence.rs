//! Presence: the collar's `online` announcement and the `offline` Last Will the broker publishes
//! for it when the connection drops.

use serde::{Deserialize, Serialize};

use super::error::DecodeError;
use super::node::preview;

/// Whether a collar is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
        }
    }
}

/// Decodes `online` / `offline`, as plain text or as a JSON string.
///
/// Surrounding whitespace is ignored because hand-typed test publishes (`mosquitto_pub -m`) and
/// some firmware add a newline; case is not, so there is exactly one spelling per state.
pub fn decode_online(payload: &[u8]) -> Result<Presence, DecodeError> {
    super::node::check_payload_size(payload)?;
    let text = String::from_utf8_lossy(payload);
    let trimmed = text.trim();
    let word = trimmed
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(trimmed);
    match word {
        "online" => Ok(Presence::Online),
        "offline" => Ok(Presence::Offline),
        _ if payload.is_empty() => Err(DecodeError::Empty),
        _ => Err(DecodeError::UnknownPresence {
            found: preview(&text),
        }),
    }
}

/// The payload for `trackers/{id}/online`; also the Last Will a collar registers.
pub fn encode_online(presence: Presence) -> &'static [u8] {
    presence.as_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_online_and_offline_are_understood() {
        assert_eq!(decode_online(b"online"), Ok(Presence::Online));
        assert_eq!(decode_online(b"offline"), Ok(Presence::Offline));
    }

    #[test]
    fn a_json_string_is_understood_too() {
        assert_eq!(decode_online(b"\"online\""), Ok(Presence::Online));
        assert_eq!(decode_online(b" \"offline\"\n"), Ok(Presence::Offline));
    }

    #[test]
    fn a_trailing_newline_is_ignored() {
        assert_eq!(decode_online(b"online\n"), Ok(Presence::Online));
    }

    #[test]
    fn anything_else_is_a_decode_error() {
        assert_eq!(
            decode_online(b"ONLINE").unwrap_err().to_string(),
            r#"expected `online` or `offline`, found "ONLINE""#
        );
        assert_eq!(decode_online(b""), Err(DecodeError::Empty));
        assert!(decode_online(b"\"online").is_err());
        assert!(decode_online(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn encoding_presence_gives_the_plain_word() {
        assert_eq!(encode_online(Presence::Offline), b"offline");
        assert_eq!(
            decode_online(encode_online(Presence::Online)),
            Ok(Presence::Online)
        );
    }
}
