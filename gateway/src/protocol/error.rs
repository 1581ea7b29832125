//! Why a device payload could not be decoded: the reasons that go to the dead-letter table.

use super::values::ValueError;

/// A payload that is structurally broken: wrong encoding, wrong shape, wrong types or missing
/// fields. The whole message is dead-lettered with [`DecodeError::to_string`] as the reason.
///
/// `path` values name the field the way `jq` would: `lat` in a single object, `[3].lat` for the
/// fourth fix of a batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is {size} bytes, more than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error(
        "payload is neither JSON (an object or array, starting with '{{' or '[') nor CBOR (a map or array); it starts with byte 0x{first:02x}"
    )]
    UnknownEncoding { first: u8 },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("malformed CBOR: {0}")]
    MalformedCbor(String),
    #[error("expected {expected}, found {found}")]
    WrongShape {
        expected: &'static str,
        found: String,
    },
    #[error("telemetry array is empty; a batch needs at least one fix")]
    EmptyBatch,
    #[error("{count} fixes in one message, more than the limit of {max}")]
    TooManyFixes { count: usize, max: usize },
    #[error("{path}: required field is missing")]
    MissingField { path: String },
    #[error("{path}: field appears more than once")]
    DuplicateField { path: String },
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: {problem}")]
    InvalidValue { path: String, problem: ValueError },
    #[error("status reports none of bat, chg, fw, rssi")]
    EmptyStatus,
    #[error("expected `online` or `offline`, found {found}")]
    UnknownPresence { found: String },
}

impl DecodeError {
    /// A stable, low-cardinality label for metrics and for grouping dead letters.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::UnknownEncoding { .. } => "unknown_encoding",
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::MalformedCbor(_) => "malformed_cbor",
            DecodeError::WrongShape { .. } => "wrong_shape",
            DecodeError::EmptyBatch => "empty_batch",
            DecodeError::TooManyFixes { .. } => "too_many_fixes",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::DuplicateField { .. } => "duplicate_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::InvalidValue { .. } => "invalid_value",
            DecodeError::EmptyStatus => "empty_status",
            DecodeError::UnknownPresence { .. } => "unknown_presence",
        }
    }
}
