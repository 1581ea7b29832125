//! Every uplink decoder (JSON and CBOR), validation of what decodes, and topic parsing on
//! arbitrary bytes: no panic.
#![no_main]

use chrono::DateTime;
use gateway::protocol::{
    DeviceTopic, ValidationLimits, decode_ack, decode_command, decode_command_result,
    decode_online, decode_status, decode_telemetry, detect_encoding,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = DateTime::from_timestamp(1_795_521_900, 0).unwrap_or_default();
    let limits = ValidationLimits::default();
    if let Ok(fixes) = decode_telemetry(data) {
        for fix in fixes {
            let _ = fix.validate(now, &limits);
        }
    }
    if let Ok(status) = decode_status(data) {
        let _ = status.validate(now, &limits);
    }
    let _ = decode_online(data);
    let _ = decode_command_result(data);
    let _ = decode_ack(data);
    let _ = decode_command(data);
    let _ = detect_encoding(data);
    if let Ok(topic) = std::str::from_utf8(data) {
        let _ = DeviceTopic::parse(topic);
    }
});
