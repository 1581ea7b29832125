//! Reads a JSON or CBOR payload into one neutral tree, so every message type is decoded by the same
//! rules and reports the same errors whichever encoding the collar chose.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::DecodeError;
use super::values::ValueError;

/// Largest payload the gateway decodes, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// CBOR's "self-described CBOR" tag (RFC 8949 §3.4.6); it carries no meaning beyond "this is CBOR".
const SELF_DESCRIBED_TAG: u64 = 55799;

/// Deeper than any message of this protocol nests; keeps hostile input from costing stack.
const CBOR_RECURSION_LIMIT: usize = 32;

/// How a payload is encoded, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Json,
    Cbor,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Json => "json",
            Encoding::Cbor => "cbor",
        })
    }
}

/// Refuses payloads larger than [`MAX_PAYLOAD_BYTES`] before any parsing work is spent on them.
pub fn check_payload_size(payload: &[u8]) -> Result<(), DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge {
            size: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

/// Tells JSON from CBOR without a separate topic.
///
/// JSON messages are objects or arrays, so after optional whitespace they start with `{` (0x7b) or
/// `[` (0x5b). CBOR messages are maps (major type 5, 0xa0..=0xbf) or arrays (major type 4,
/// 0x80..=0x9f), optionally behind the self-described CBOR tag `d9 d9 f7`. The JSON bytes are CBOR
/// text- and byte-string headers and JSON whitespace bytes are CBOR small integers, so neither
/// can be mistaken for the other.
pub fn detect_encoding(payload: &[u8]) -> Result<Encoding, DecodeError> {
    let Some(&first) = payload.first() else {
        return Err(DecodeError::Empty);
    };
    if (0x80..=0xbf).contains(&first) || payload.starts_with(&[0xd9, 0xd9, 0xf7]) {
        return Ok(Encoding::Cbor);
    }
    match payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        Some(b'{' | b'[') => Ok(Encoding::Json),
        _ => Err(DecodeError::UnknownEncoding { first }),
    }
}

/// One decoded value, with just enough detail for this protocol's messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    /// Only the length is kept: no field of this protocol is a byte string.
    Bytes(usize),
    Array(Vec<Node>),
    /// Keys that are not text (CBOR allows any) are kept as `None` so they can be ignored like
    /// any other unknown field.
    Map(Vec<(Option<String>, Node)>),
    Tag(u64, Box<Node>),
    /// A CBOR value `ciborium` may add in future; no field accepts it.
    Unsupported,
}

/// Parses a whole payload: size check, encoding detection, then the encoding's parser.
pub(crate) fn parse(payload: &[u8]) -> Result<(Encoding, Node), DecodeError> {
    check_payload_size(payload)?;
    let encoding = detect_encoding(payload)?;
    let node = match encoding {
        Encoding::Json => serde_json::from_slice::<Node>(payload)
            .map_err(|e| DecodeError::MalformedJson(e.to_string()))?,
        Encoding::Cbor => parse_cbor(payload)?,
    };
    Ok((encoding, node))
}

fn parse_cbor(payload: &[u8]) -> Result<Node, DecodeError> {
    let mut rest = payload;
    let value: ciborium::Value =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, CBOR_RECURSION_LIMIT)
            .map_err(|e| DecodeError::MalformedCbor(describe_cbor_error(e, payload.len())))?;
    if !rest.is_empty() {
        // A second item would be silently ignored otherwise, hiding an encoder bug on the collar.
        return Err(DecodeError::MalformedCbor(format!(
            "{} unexpected byte(s) after the end of the first CBOR item",
            rest.len()
        )));
    }
    Ok(Node::from_cbor(value))
}

fn describe_cbor_error(error: ciborium::de::Error<std::io::Error>, len: usize) -> String {
    use ciborium::de::Error;
    match error {
        Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated: the {len}-byte payload ends inside a CBOR item")
        }
        Error::Io(e) => format!("read error: {e}"),
        Error::Syntax(offset) => format!("invalid CBOR syntax at byte {offset}"),
        Error::Semantic(Some(offset), msg) => format!("{msg} at byte {offset}"),
        Error::Semantic(None, msg) => msg,
        Error::RecursionLimitExceeded => {
            format!("nested more than {CBOR_RECURSION_LIMIT} levels deep")
        }
    }
}

impl Node {
    fn from_cbor(value: ciborium::Value) -> Node {
        use ciborium::Value;
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Integer(i) => Node::Int(i128::from(i)),
            Value::Float(f) => Node::Float(f),
            Value::Text(s) => Node::Text(s),
            Value::Bytes(b) => Node::Bytes(b.len()),
            Value::Array(items) => Node::Array(items.into_iter().map(Node::from_cbor).collect()),
            Value::Map(entries) => Node::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::Text(s) => Some(s),
                            _ => None,
                        };
                        (key, Node::from_cbor(v))
                    })
                    .collect(),
            ),
            Value::Tag(SELF_DESCRIBED_TAG, inner) => Node::from_cbor(*inner),
            Value::Tag(tag, inner) => Node::Tag(tag, Box::new(Node::from_cbor(*inner))),
            // `ciborium::Value` is non-exhaustive; anything new is just "not what we expected".
            _ => Node::Unsupported,
        }
    }

    /// How the value reads in an error message, e.g. `the string "52.5"`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Node::Null => "null".to_owned(),
            Node::Bool(b) => format!("the boolean {b}"),
            Node::Int(i) => format!("the integer {i}"),
            Node::Float(f) => format!("the number {f:?}"),
            Node::Text(s) => format!("the string {}", preview(s)),
            Node::Bytes(n) => format!("a byte string of {n} byte{}", plural(*n)),
            Node::Array(items) => {
                format!("an array of {} item{}", items.len(), plural(items.len()))
            }
            Node::Map(_) => "an object".to_owned(),
            Node::Tag(tag, _) => format!("a value with CBOR tag {tag}"),
            Node::Unsupported => "an unsupported CBOR value".to_owned(),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Quotes `s` for an error message, cut short so one hostile string cannot bloat a dead letter.
pub(crate) fn preview(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() <= MAX_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Builds a [`Node`] from JSON; hand-written rather than `serde_json::Value` so that duplicate
/// keys survive until the field reader can refuse them.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Text(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            entries.push((Some(key), value));
        }
        Ok(Node::Map(entries))
    }
}

/// Where a field sits in a message, for error messages: `lat`, or `[3].lat` inside a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Location {
    pub index: Option<usize>,
}

impl Location {
    pub const TOP: Location = Location { index: None };

    pub fn path(self, field: &str) -> String {
        match self.index {
            Some(i) => format!("[{i}].{field}"),
            None => field.to_owned(),
        }
    }
}

/// Picks the named fields out of a map, in the order given.
///
/// Unknown keys are ignored so newer collars can add fields without breaking older servers. A
/// known key that appears twice is an error: which copy wins differs between parsers, and the
/// collar and the server must not disagree about a position. Explicit `null` counts as absent,
/// because many JSON encoders write it for unset optional values.
pub(crate) fn pick<'a, const N: usize>(
    entries: &'a [(Option<String>, Node)],
    names: [&'static str; N],
    at: Location,
) -> Result<[Option<&'a Node>; N], DecodeError> {
    let mut found: [Option<&Node>; N] = [None; N];
    let mut seen = [false; N];
    for (key, value) in entries {
        let Some(key) = key else { continue };
        let Some(i) = names.iter().position(|n| n == key) else {
            continue;
        };
        if seen[i] {
            return Err(DecodeError::DuplicateField {
                path: at.path(names[i]),
            });
        }
        seen[i] = true;
        if *value != Node::Null {
            found[i] = Some(value);
        }
    }
    Ok(found)
}

pub(crate) fn required<'a>(
    node: Option<&'a Node>,
    field: &str,
    at: Location,
) -> Result<&'a Node, DecodeError> {
    node.ok_or_else(|| DecodeError::MissingField {
        path: at.path(field),
    })
}

fn wrong_type(node: &Node, field: &str, at: Location, expected: &'static str) -> DecodeError {
    DecodeError::WrongType {
        path: at.path(field),
        expected,
        found: node.describe(),
    }
}

/// Any number, integer or floating point.
pub(crate) fn number(node: &Node, field: &str, at: Location) -> Result<f64, DecodeError> {
    match node {
        // Large integers lose precision as f64, but no float field of this protocol is that large.
        Node::Int(i) => Ok(*i as f64),
        Node::Float(f) => Ok(*f),
        other => Err(wrong_type(other, field, at, "a number")),
    }
}

/// An integer that must fit `i64`; range checks happen later, in validation.
///
/// `9.0` is refused: integer fields are integers on the wire, and accepting floats would invite
/// precision loss where it matters (`seq`).
pub(crate) fn integer(node: &Node, field: &str, at: Location) -> Result<i64, DecodeError> {
    match node {
        Node::Int(i) => i64::try_from(*i).map_err(|_| DecodeError::InvalidValue {
            path: at.path(field),
            problem: ValueError::OutOfRange {
                value: i.to_string(),
                range: "of a signed 64-bit integer",
            },
        }),
        other => Err(wrong_type(other, field, at, "an integer")),
    }
}

pub(crate) fn unsigned(node: &Node, field: &str, at: Location) -> Result<u64, DecodeError> {
    match node {
        Node::Int(i) => u64::try_from(*i).map_err(|_| DecodeError::InvalidValue {
            path: at.path(field),
            problem: ValueError::OutOfRange {
                value: i.to_string(),
                range: "0..=18446744073709551615",
            },
        }),
        other => Err(wrong_type(other, field, at, "an unsigned integer")),
    }
}

pub(crate) fn text<'a>(node: &'a Node, field: &str, at: Location) -> Result<&'a str, DecodeError> {
    match node {
        Node::Text(s) => Ok(s),
        other => Err(wrong_type(other, field, at, "a string")),
    }
}

pub(crate) fn boolean(node: &Node, field: &str, at: Location) -> Result<bool, DecodeError> {
    match node {
        Node::Bool(b) => Ok(*b),
        other => Err(wrong_type(other, field, at, "true or false")),
    }
}

const TIME_EXPECTED: &str =
    "an RFC 3339 time such as \"2026-11-24T12:00:00Z\" or integer epoch milliseconds";

/// A point in time: RFC 3339 text or integer epoch milliseconds, and in CBOR also tag 0 (RFC 3339
/// text) or tag 1 (epoch seconds, integer or float).
///
/// Precision is cut to whole milliseconds: it is the integer form's unit, and it makes the JSON
/// and CBOR forms of one fix identical, which the once-per-device-time storage relies on.
pub(crate) fn timestamp(
    node: &Node,
    field: &str,
    at: Location,
) -> Result<DateTime<Utc>, DecodeError> {
    let unrepresentable = |value: String| DecodeError::InvalidValue {
        path: at.path(field),
        problem: ValueError::OutOfRange {
            value,
            range: "of representable times",
        },
    };
    let millis = match node {
        Node::Text(s) => {
            return rfc3339(s).ok_or_else(|| wrong_type(node, field, at, TIME_EXPECTED));
        }
        Node::Tag(0, inner) => match inner.as_ref() {
            Node::Text(s) => {
                return rfc3339(s).ok_or_else(|| wrong_type(node, field, at, TIME_EXPECTED));
            }
            _ => return Err(wrong_type(node, field, at, TIME_EXPECTED)),
        },
        Node::Int(ms) => i64::try_from(*ms).map_err(|_| unrepresentable(format!("{ms} ms")))?,
        Node::Tag(1, inner) => match inner.as_ref() {
            Node::Int(s) => i64::try_from(*s)
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .ok_or_else(|| unrepresentable(format!("{s} s")))?,
            Node::Float(s) => {
                let ms = (s * 1000.0).round();
                // i64 spans ±9.2e18; the float-to-int cast below would saturate silently.
                if !ms.is_finite() || ms.abs() >= 9.0e18 {
                    return Err(unrepresentable(format!("{s:?} s")));
                }
                ms as i64
            }
            _ => return Err(wrong_type(node, field, at, TIME_EXPECTED)),
        },
        other => return Err(wrong_type(other, field, at, TIME_EXPECTED)),
    };
    DateTime::from_timestamp_millis(millis).ok_or_else(|| unrepresentable(format!("{millis} ms")))
}

fn rfc3339(s: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_and_arrays_are_detected_even_after_whitespace() {
        assert_eq!(detect_encoding(b"{}"), Ok(Encoding::Json));
        assert_eq!(detect_encoding(b" \r\n\t[1]"), Ok(Encoding::Json));
    }

    #[test]
    fn cbor_maps_and_arrays_are_detected_by_their_major_type() {
        for first in 0x80..=0xbf_u8 {
            assert_eq!(detect_encoding(&[first]), Ok(Encoding::Cbor), "{first:#x}");
        }
        assert_eq!(
            detect_encoding(&[0xd9, 0xd9, 0xf7, 0xa0]),
            Ok(Encoding::Cbor)
        );
    }

    #[test]
    fn anything_else_is_an_unknown_encoding() {
        assert_eq!(detect_encoding(b""), Err(DecodeError::Empty));
        assert_eq!(
            detect_encoding(b"online"),
            Err(DecodeError::UnknownEncoding { first: b'o' })
        );
        // A CBOR text string is not a message, even though it is valid CBOR.
        assert!(detect_encoding(&[0x62, b'h', b'i']).is_err());
        assert!(detect_encoding(b"   ").is_err());
    }

    #[test]
    fn payloads_over_256_kib_are_too_large() {
        assert!(check_payload_size(&vec![b' '; MAX_PAYLOAD_BYTES]).is_ok());
        assert_eq!(
            check_payload_size(&vec![b' '; MAX_PAYLOAD_BYTES + 1]),
            Err(DecodeError::TooLarge {
                size: MAX_PAYLOAD_BYTES + 1,
                max: MAX_PAYLOAD_BYTES
            })
        );
    }

    #[test]
    fn json_with_duplicate_keys_keeps_both_entries_for_the_field_reader() {
        let (_, node) = parse(br#"{"a":1,"a":2}"#).unwrap();
        let Node::Map(entries) = node else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 2);
        assert!(matches!(
            pick(&entries, ["a"], Location::TOP),
            Err(DecodeError::DuplicateField { .. })
        ));
    }

    #[test]
    fn cbor_followed_by_extra_bytes_is_malformed() {
        let err = parse(&[0xa0, 0xa0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed CBOR: 1 unexpected byte(s) after the end of the first CBOR item"
        );
    }

    #[test]
    fn truncated_cbor_is_reported_as_truncated() {
        // A map announcing one entry, then nothing.
        let err = parse(&[0xa1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed CBOR: truncated: the 1-byte payload ends inside a CBOR item"
        );
    }

    #[test]
    fn deeply_nested_cbor_is_refused_without_exhausting_the_stack() {
        let payload = vec![0x81; 10_000];
        assert!(matches!(
            parse(&payload),
            Err(DecodeError::MalformedCbor(_))
        ));
    }

    #[test]
    fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
        let payload = "[".repeat(10_000);
        assert!(matches!(
            parse(payload.as_bytes()),
            Err(DecodeError::MalformedJson(_))
        ));
    }

    #[test]
    fn the_self_described_cbor_tag_is_transparent() {
        let (encoding, node) = parse(&[0xd9, 0xd9, 0xf7, 0xa0]).unwrap();
        assert_eq!(encoding, Encoding::Cbor);
        assert_eq!(node, Node::Map(vec![]));
    }

    #[test]
    fn long_strings_are_cut_short_in_error_messages() {
        let s = "x".repeat(1000);
        assert_eq!(preview(&s).chars().count(), 40 + 3);
    }

    fn ts(node: Node) -> Result<DateTime<Utc>, DecodeError> {
        timestamp(&node, "ts", Location::TOP)
    }

    #[test]
    fn times_may_be_rfc3339_or_epoch_milliseconds_or_cbor_tags_0_and_1() {
        let expected = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ms = expected.timestamp_millis();
        assert_eq!(ts(Node::Text("2026-11-24T12:00:00Z".into())), Ok(expected));
        assert_eq!(
            ts(Node::Text("2026-11-24T13:00:00+01:00".into())),
            Ok(expected)
        );
        assert_eq!(ts(Node::Int(ms.into())), Ok(expected));
        assert_eq!(
            ts(Node::Tag(
                0,
                Box::new(Node::Text("2026-11-24T12:00:00Z".into()))
            )),
            Ok(expected)
        );
        assert_eq!(
            ts(Node::Tag(1, Box::new(Node::Int((ms / 1000).into())))),
            Ok(expected)
        );
        assert_eq!(
            ts(Node::Tag(1, Box::new(Node::Float((ms / 1000) as f64)))),
            Ok(expected)
        );
    }

    #[test]
    fn times_are_cut_to_whole_milliseconds() {
        let t = ts(Node::Text("2026-11-24T12:00:00.123456789Z".into())).unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 123_000_000);
    }

    #[test]
    fn a_float_or_unparsable_time_is_the_wrong_type() {
        for node in [
            Node::Float(1.0e12),
            Node::Text("yesterday".into()),
            Node::Bool(true),
            Node::Tag(1, Box::new(Node::Text("x".into()))),
        ] {
            assert!(matches!(ts(node), Err(DecodeError::WrongType { .. })));
        }
    }

    #[test]
    fn times_beyond_chronos_range_are_refused_not_wrapped() {
        for node in [
            Node::Int(i128::from(i64::MAX)),
            Node::Int(i128::MAX),
            Node::Tag(1, Box::new(Node::Int(i128::from(i64::MAX)))),
            Node::Tag(1, Box::new(Node::Float(f64::INFINITY))),
            Node::Tag(1, Box::new(Node::Float(f64::NAN))),
        ] {
            assert!(
                matches!(ts(node.clone()), Err(DecodeError::InvalidValue { .. })),
                "{node:?}"
            );
        }
    }
}
