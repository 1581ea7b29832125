//! Checks the vector file against the decoders, and keeps the copy in docs/protocol.md in step.

use std::collections::HashSet;

use super::*;
use crate::protocol::{MAX_PAYLOAD_BYTES, TopicKind, device_may_publish};

#[test]
fn the_vector_file_parses() {
    let vectors = try_test_vectors().unwrap();
    assert!(vectors.len() >= 50, "only {} vectors", vectors.len());
}

#[test]
fn every_vector_produces_its_expected_outcome() {
    let failures: Vec<String> = test_vectors()
        .iter()
        .filter_map(|v| v.verify().err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vector_names_are_unique_kebab_case() {
    let mut seen = HashSet::new();
    for v in test_vectors() {
        assert!(
            v.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{}",
            v.name
        );
        assert!(seen.insert(v.name.clone()), "duplicate name {}", v.name);
    }
}

#[test]
fn every_vector_is_published_by_the_vector_collar_on_an_uplink_topic() {
    let collar = crate::protocol::TrackerId::parse("vector-collar-1").unwrap();
    for v in test_vectors() {
        assert!(
            device_may_publish(&collar, &v.topic),
            "{}: {}",
            v.name,
            v.topic
        );
        assert!(v.payload.len() <= MAX_PAYLOAD_BYTES);
    }
}

#[test]
fn the_vectors_cover_every_uplink_topic_and_both_encodings() {
    let vectors = test_vectors();
    for kind in [
        TopicKind::Telemetry,
        TopicKind::Status,
        TopicKind::Online,
        TopicKind::CommandResults,
    ] {
        assert!(
            vectors
                .iter()
                .any(|v| DeviceTopic::parse(&v.topic).map(|t| t.kind) == Ok(kind)),
            "no vector for {kind}"
        );
    }
    assert!(vectors.iter().any(|v| v.form == PayloadForm::Hex));
    assert!(
        vectors
            .iter()
            .any(|v| matches!(v.expect, Expectation::DeadLetter(_)))
    );
    assert!(vectors.iter().any(|v| match &v.expect {
        Expectation::Fixes(f) => f.iter().any(|o| matches!(o, FixOutcome::Rejected(_))),
        _ => false,
    }));
}

#[test]
fn hex_payloads_may_be_spaced_but_must_be_whole_bytes() {
    assert_eq!(decode_hex("a1 62\n74"), Some(vec![0xa1, 0x62, 0x74]));
    assert_eq!(decode_hex("a1 6"), None);
    assert_eq!(decode_hex("zz"), None);
}

/// Renders CBOR in diagnostic notation, without the float-width suffixes that `ciborium` cannot
/// see; the vector file's `_1`/`_2`/`_3` suffixes are stripped before comparing.
fn diagnostic(value: &ciborium::Value) -> String {
    use ciborium::Value;
    match value {
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Float(f) if f.is_nan() => "NaN".into(),
        Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
        }
        Value::Float(f) => format!("{f:?}"),
        Value::Text(s) => serde_json::to_string(s).unwrap(),
        Value::Bytes(b) => format!("h'{}'", hex::encode(b)),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Tag(t, v) => format!("{t}({})", diagnostic(v)),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(diagnostic).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", diagnostic(k), diagnostic(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => panic!("unexpected CBOR value {other:?}"),
    }
}

fn strip_float_widths(diag: &str) -> String {
    let chars: Vec<char> = diag.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let is_suffix = chars[i] == '_'
            && i > 0
            && (chars[i - 1].is_ascii_digit() || chars[i - 1] == 'N' || chars[i - 1] == 'y')
            && matches!(chars.get(i + 1), Some('1' | '2' | '3'))
            && matches!(chars.get(i + 2), None | Some(',' | '}' | ']' | ')' | ' '));
        if is_suffix {
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn every_cbor_vector_shows_its_diagnostic_notation() {
    for v in test_vectors() {
        match v.form {
            PayloadForm::Hex => assert!(v.cbor_diagnostic.is_some(), "{}", v.name),
            PayloadForm::Text => assert!(v.cbor_diagnostic.is_none(), "{}", v.name),
        }
    }
}

#[test]
fn cbor_diagnostics_match_their_bytes() {
    for v in test_vectors() {
        let Some(expected) = &v.cbor_diagnostic else {
            continue;
        };
        // A truncated payload has no complete item to render; its description says what it lacks.
        if matches!(&v.expect, Expectation::DeadLetter(r) if r.contains("truncated")) {
            continue;
        }
        let mut rest = v.payload.as_slice();
        let mut items = Vec::new();
        while !rest.is_empty() {
            let value: ciborium::Value = ciborium::from_reader(&mut rest).unwrap();
            items.push(diagnostic(&value));
        }
        assert_eq!(
            items.join(", "),
            strip_float_widths(expected),
            "vector {}",
            v.name
        );
    }
}

#[test]
fn float_width_suffixes_are_stripped_only_after_numbers() {
    assert_eq!(
        strip_float_widths(r#"{"a_1": 1.5_2, "b": [NaN_1, 2.0_3]}"#),
        r#"{"a_1": 1.5, "b": [NaN, 2.0]}"#
    );
}

// ---- the vectors section of docs/protocol.md ----

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
const BEGIN: &str = "<!-- test-vectors:begin (generated from gateway/src/protocol/vectors/vectors.json; do not edit) -->";
const END: &str = "<!-- test-vectors:end -->";

fn code(s: &str) -> String {
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// Compact JSON with keys in wire order rather than `serde_json::Map`'s alphabetical order.
fn compact(value: &serde_json::Value) -> String {
    const ORDER: [&str; 16] = [
        "ts", "lat", "lon", "alt", "acc", "spd", "hdg", "sat", "bat", "chg", "fw", "rssi", "seq",
        "id", "status", "reason",
    ];
    let serde_json::Value::Object(map) = value else {
        return serde_json::to_string(value).unwrap();
    };
    let rank = |k: &str| ORDER.iter().position(|o| *o == k).unwrap_or(ORDER.len());
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by_key(|(k, _)| (rank(k), k.to_string()));
    let fields: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), compact(v)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn render_vector(v: &TestVector) -> String {
    let mut out = format!("#### `{}`\n\n{}\n\n", v.name, v.description);
    out += &format!("- Topic: `{}`\n", v.topic);
    match v.form {
        PayloadForm::Hex => {
            out += &format!("- Payload (CBOR, {} bytes):\n\n", v.payload.len());
            out += &format!("  ```text\n  {}\n  ```\n\n", v.payload_display());
            if let Some(diag) = &v.cbor_diagnostic {
                out += &format!("  Diagnostic notation: {}\n", code(diag));
            }
        }
        PayloadForm::Text => {
            let text = v.payload_display();
            let plain =
                !text.is_empty() && text.trim() == text && !text.contains(['\n', '\r', '\t']);
            if plain {
                let lang = if matches!(text.as_bytes().first(), Some(b'{' | b'[')) {
                    "json"
                } else {
                    "text"
                };
                out += &format!("- Payload ({} bytes):\n\n", v.payload.len());
                out += &format!("  ```{lang}\n  {text}\n  ```\n\n");
            } else {
                out += &format!(
                    "- Payload ({} bytes, written as a JSON string literal to show its whitespace): {}\n",
                    v.payload.len(),
                    code(&serde_json::to_string(&text).unwrap())
                );
            }
        }
    }
    out += &match &v.expect {
        Expectation::Fixes(fixes) => {
            let mut s = "- Outcome:\n".to_owned();
            for (i, fix) in fixes.iter().enumerate() {
                s += &match fix {
                    FixOutcome::Accepted(f) => {
                        format!("  - fix {i}: stored as {}\n", code(&compact(f)))
                    }
                    FixOutcome::Rejected(r) => format!("  - fix {i}: rejected, {}\n", code(r)),
                };
            }
            s
        }
        Expectation::Status(s) => format!("- Outcome: status stored as {}\n", code(&compact(s))),
        Expectation::Presence(p) => format!("- Outcome: presence {}\n", code(p.as_str())),
        Expectation::CommandResult(r) => {
            format!(
                "- Outcome: command result stored as {}\n",
                code(&compact(r))
            )
        }
        Expectation::DeadLetter(r) => {
            format!("- Outcome: whole message dead-lettered, {}\n", code(r))
        }
    };
    out
}

/// A heading in the doc and which vectors go under it.
type Group = (&'static str, fn(&TestVector) -> bool);

fn render_section(vectors: &[TestVector]) -> String {
    let mut out = format!("{BEGIN}\n\n");
    let groups: [Group; 5] = [
        ("Telemetry, JSON", |v| {
            v.topic.ends_with("/telemetry") && v.form == PayloadForm::Text
        }),
        ("Telemetry, CBOR", |v| {
            v.topic.ends_with("/telemetry") && v.form == PayloadForm::Hex
        }),
        ("Status", |v| v.topic.ends_with("/status")),
        ("Online", |v| v.topic.ends_with("/online")),
        ("Command results", |v| v.topic.ends_with("/command-results")),
    ];
    for (title, belongs) in groups {
        out += &format!("### Vectors: {title}\n\n");
        for v in vectors.iter().filter(|v| belongs(v)) {
            out += &render_vector(v);
            out += "\n";
        }
    }
    out += END;
    out
}

#[test]
fn the_protocol_doc_shows_every_vector_as_in_the_vector_file() {
    let vectors = test_vectors();
    let section = render_section(&vectors);
    for v in &vectors {
        assert!(
            section.contains(&format!("#### `{}`", v.name)),
            "{} is in no group",
            v.name
        );
    }
    let doc = std::fs::read_to_string(DOC_PATH).unwrap();
    let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("{DOC_PATH} lacks the test-vector markers");
    };
    let current = &doc[begin..end + END.len()];
    if current == section {
        return;
    }
    if std::env::var_os("PETTRACKER_BLESS_DOCS").is_some() {
        let updated = format!("{}{section}{}", &doc[..begin], &doc[end + END.len()..]);
        std::fs::write(DOC_PATH, updated).unwrap();
        return;
    }
    panic!(
        "the test-vector section of docs/protocol.md is out of date with vectors.json; \
         rerun with PETTRACKER_BLESS_DOCS=1 to regenerate it"
    );
}

/// The encoders the simulator uses write these vectors byte for byte: what a simulated collar
/// sends is the contract's own canonical form, not an approximation of it.
#[test]
fn the_encoders_reproduce_the_vectors_in_canonical_form() {
    use crate::protocol::{
        Encoding, decode_command_result, decode_online, decode_status, decode_telemetry,
        detect_encoding, encode_command_result, encode_online, encode_status, encode_telemetry,
    };
    let canonical = [
        "telemetry-json-epoch-millis",
        "telemetry-cbor-full-fix",
        "telemetry-cbor-minimal-fix",
        "telemetry-cbor-batch",
        "status-json-without-time",
        "status-json-firmware-only",
        "status-cbor",
        "online-plain",
        "offline-plain",
        "command-result-done",
        "command-result-failed-with-reason",
        "command-result-cbor-accepted",
    ];
    let vectors = test_vectors();
    for name in canonical {
        let v = vectors.iter().find(|v| v.name == name).unwrap();
        let kind = DeviceTopic::parse(&v.topic).unwrap().kind;
        let encoding = detect_encoding(&v.payload).unwrap_or(Encoding::Json);
        let encoded = match kind {
            TopicKind::Telemetry => {
                encode_telemetry(&decode_telemetry(&v.payload).unwrap(), encoding)
            }
            TopicKind::Status => encode_status(&decode_status(&v.payload).unwrap(), encoding),
            TopicKind::Online => encode_online(decode_online(&v.payload).unwrap()).to_vec(),
            TopicKind::CommandResults => {
                encode_command_result(&decode_command_result(&v.payload).unwrap(), encoding)
            }
            other => panic!("{name}: no uplink encoder for {other}"),
        };
        assert_eq!(
            encoded,
            v.payload,
            "{name}: encoded {:?}",
            String::from_utf8_lossy(&encoded)
        );
    }
}
