//! The device protocol: what collars and the server say to each other over MQTT, decoded into
//! values that cannot be invalid. The contract itself is written up in `docs/protocol.md`.
//!
//! Decoding happens in two steps so that one bad fix never costs a whole batch:
//! `decode_*` refuses structurally broken payloads (the whole message is dead-lettered with a
//! [`DecodeError`]), then `validate` checks each value against its range and the server clock
//! (only that fix or report is dead-lettered, with a [`Rejection`]).
//!
//! The other direction is here too, for the firmware simulator and tests: `encode_*` write each
//! uplink message as a collar would, in JSON or CBOR, `decode_ack`/`decode_command` read the
//! downlink, and [`topics`] names every topic. The test vectors (`vectors`) are test support,
//! built only with the `testing` feature.

mod ack;
mod cbor;
mod command_kind;
mod commands;
mod encode;
mod error;
mod node;
mod presence;
mod status;
mod telemetry;
mod topic;
mod validate;
mod values;
#[cfg(any(test, feature = "testing"))]
pub mod vectors;

pub use ack::{Ack, decode_ack, encode_ack};
pub use command_kind::CommandKind;
pub use commands::{
    Command, CommandResult, CommandResultStatus, MAX_REASON_CHARS, decode_command,
    decode_command_result, encode_command, encode_command_result, encode_command_result_with,
};
pub use error::DecodeError;
pub use node::{Encoding, MAX_PAYLOAD_BYTES, check_payload_size, detect_encoding};
pub use presence::{Presence, decode_online, encode_online};
pub use status::{RawStatus, Status, decode_status, encode_status};
pub use telemetry::{Fix, MAX_FIXES_PER_MESSAGE, RawFix, decode_telemetry, encode_telemetry};
pub use topic::{
    DeviceTopic, Direction, TOPIC_ROOT, TopicError, TopicKind, device_may_publish,
    device_may_subscribe, topics,
};
pub use validate::{RejectReason, Rejection, ValidationLimits};
pub use values::{
    Accuracy, Altitude, Battery, CommandId, CommandType, FirmwareVersion, Heading, Latitude,
    Longitude, MAX_COMMAND_ID_CHARS, MAX_COMMAND_TYPE_CHARS, MAX_FIRMWARE_VERSION_CHARS,
    MAX_TRACKER_ID_CHARS, Rssi, Satellites, Seq, Speed, TrackerId, ValueError,
};
#[cfg(any(test, feature = "testing"))]
pub use vectors::{TestVector, test_vectors};

#[cfg(test)]
mod robustness_tests;
